"""Config to settings.

The one place where the ``data`` and ``scoring`` config groups become the settings
objects and arguments that the rest of the package takes (training, calibration, the
model folder), and where the feature score and the patch map are switched on or off.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from anomaly.data.colour import resolve_channels
from anomaly.data.geometry import (
    Photos,
    resolve_image_size,
    resolve_position_pixels,
    resolve_upright,
    training_photos,
)
from anomaly.data.transforms import Preprocess
from anomaly.errors import ConfigError
from anomaly.models.inspection import inspectable
from anomaly.scoring.addons import ADDONS, PATCH_MAP, POSITION_SCORE, AddOn
from anomaly.scoring.detector import gives
from anomaly.scoring.features import DEFAULT_MAP_WEIGHT
from anomaly.scoring.fitting import CalibrationSpec
from anomaly.scoring.maps import MapSettings
from anomaly.scoring.stream import Loading

log = logging.getLogger(__name__)


def map_settings(cfg: DictConfig) -> MapSettings:
    """Map settings from the ``scoring`` config group."""
    s = cfg.scoring
    return MapSettings(
        kind=s.map,
        smoothing_sigma=float(s.smoothing_sigma),
        ssim_sigma=float(s.ssim_sigma),
        ssim_weight=float(s.ssim_weight),
        score=s.score,
        topk=int(s.topk),
    )


def preprocess_settings(data: DictConfig) -> Preprocess:
    """Preprocessing from the ``data`` config group."""
    d = OmegaConf.to_container(data, resolve=True)
    return Preprocess.create(
        image_size=d["image_size"],
        channels=d["channels"],
        tile=bool(d["tile"]),
        scale=float(d["scale"]),
        tile_stride=d["tile_stride"],
        normalize=d.get("normalize", "none"),
        upright=d.get("upright", False),
    )


def calibration_spec(cfg: DictConfig) -> CalibrationSpec:
    """How to calibrate.

    From ``scoring.calibration``, ``scoring.feature_score.map_weight``,
    ``scoring.patch_map.weight`` and ``scoring.position_score.pixels`` (resolved from
    ``auto`` by the job, which knows the training photos: ``auto`` here counts as false).
    """
    c = OmegaConf.to_container(cfg.scoring.calibration, resolve=True)
    return CalibrationSpec(
        image=c["image"],
        pixel=c["pixel"],
        map_weight=float(cfg.scoring.feature_score.map_weight),
        patch_weight=float(cfg.scoring.patch_map.weight),
        position_pixels=cfg.scoring.position_score.get("pixels", False) is True,
    )


def resolve_geometry(cfg: DictConfig, photos: Photos) -> None:
    """Make ``data.channels``, ``data.image_size`` and ``data.upright`` concrete.

    ``auto`` is decided from ``photos``.

    Raises:
        ConfigError: A value that is neither auto nor a valid setting (names the key).
    """
    # One reading of the sizes for every auto setting below.
    photos = training_photos(photos)
    cfg.data.channels = resolve_channels(cfg.data.get("channels", 1), photos.paths)
    cfg.data.image_size = size = resolve_image_size(
        OmegaConf.to_container(cfg.data, resolve=True)["image_size"],
        photos,
        short_side=int(cfg.data.get("short_side", 128)),
        max_aspect=float(cfg.data.get("max_aspect", 4.0)),
        tile=bool(cfg.data.tile),
    )
    cfg.data.upright = resolve_upright(
        cfg.data.get("upright", False),
        photos,
        [size, size] if isinstance(size, int) else size,
        tile=bool(cfg.data.tile),
    )


def addons_and_framing(
    cfg: DictConfig, model: torch.nn.Module, preprocess: Preprocess, photos: Photos
) -> dict[AddOn, dict[str, Any]]:
    """The add-ons in use, with ``scoring.position_score.pixels`` made concrete.

    The two decide each other: whether the photos share one framing (the pixel map then
    standardised per position) decides a model's ``auto_off_framed`` add-ons, as their
    number decides its ``auto_min_images``; and the position score, which gives way to
    the patch map, must be in use for the pixel map to be standardised. The map is then
    weighed for the framing (:func:`weigh_map_for_framing`).

    Args:
        cfg: The config (changed in place).
        model: The model.
        preprocess: How images reach it.
        photos: All the defect-free training photos, validation part included (their
            sizes are read for ``auto``, their number decides ``auto_min_images``).

    Raises:
        ConfigError: As :func:`enabled_addons`, or ``pixels`` other than auto, true or false.
    """
    framed = resolve_position_pixels(
        cfg.scoring.position_score.get("pixels", "auto"), photos, tile=preprocess.tile
    )
    addons = enabled_addons(cfg, model, preprocess, framed=framed, n_images=len(photos))
    cfg.scoring.position_score.pixels = framed and POSITION_SCORE in addons
    weigh_map_for_framing(cfg)
    return addons


def framing_map_weight(cfg: DictConfig, *, pixels: bool) -> float | None:
    """The map's weight that the framing picks for the model of ``cfg``.

    ``model.map_weight_framed`` for photos of one framing (``pixels``), ``model.map_weight``
    otherwise; None for a model without a framed weight (its weight does not follow the
    framing).
    """
    framed = OmegaConf.select(cfg, "model.map_weight_framed", default=None)
    plain = OmegaConf.select(cfg, "model.map_weight", default=None)
    if framed is None or plain is None:
        return None
    return float(framed if pixels else plain)


def weigh_map_for_framing(cfg: DictConfig) -> None:
    """Give the map the model's ``map_weight_framed`` where the pixel map is standardised.

    With ``scoring.position_score.pixels`` resolved true (photos of one framing), the
    map's image score is its maximum standardised per position, as strong as the feature
    score there; a model that states ``model.map_weight_framed`` (feature_ae) has it
    replace ``model.map_weight`` in the fusion (:func:`framing_map_weight`). A
    ``scoring.feature_score.map_weight`` given on the command line (no longer the config's
    reference to the model's) wins.
    """
    pixels = cfg.scoring.position_score.get("pixels", False) is True
    weight = framing_map_weight(cfg, pixels=pixels)
    if (
        weight is None
        or not pixels
        or not OmegaConf.is_interpolation(cfg.scoring.feature_score, "map_weight")
    ):
        return
    cfg.scoring.feature_score.map_weight = weight
    log.info(
        "the photos share one framing: the map counts %g beside the feature score "
        "(model.map_weight_framed; scoring.feature_score.map_weight to choose)",
        weight,
    )


def recalibrated_map_weight(given: Any, trained: DictConfig | None, *, pixels: bool) -> float:
    """The map's weight in the fusion for ``anomaly calibrate``.

    The one given on the command line; else the training's (its saved config), except
    where the training took it from the framing (:func:`weigh_map_for_framing`): then it
    follows the framing as resolved now, so ``scoring.position_score.pixels=false`` on a
    framed model brings back ``model.map_weight`` too.

    Args:
        given: ``scoring.feature_score.map_weight`` of the calibrate command (None: not given).
        trained: The model folder's saved training config, if any.
        pixels: ``scoring.position_score.pixels`` as resolved for this calibration.
    """
    if given is not None:
        return float(given)
    if trained is None:
        return DEFAULT_MAP_WEIGHT
    weight = float(
        OmegaConf.select(trained, "scoring.feature_score.map_weight", default=DEFAULT_MAP_WEIGHT)
    )
    was_framed = OmegaConf.select(trained, "scoring.position_score.pixels", default=False) is True
    chosen = framing_map_weight(trained, pixels=was_framed)
    if chosen is None or weight != chosen:
        return weight  # not the framing's choice (given at training, or a model without one)
    return framing_map_weight(trained, pixels=pixels)


def loading(cfg: DictConfig) -> Loading:
    """How scoring feeds images to the model (``scoring.batch_size``, ``num_workers``)."""
    return Loading(int(cfg.scoring.batch_size), int(cfg.scoring.num_workers))


ENABLED_CHOICES = ("auto", True, False)


def use_addon(
    cfg: DictConfig,
    addon: AddOn,
    model: torch.nn.Module,
    preprocess: Preprocess,
    *,
    framed: bool = False,
    n_images: int | None = None,
) -> bool:
    """Whether ``scoring.<addon>.enabled`` (auto, true or false) asks for ``addon``.

    Args:
        cfg: The config.
        addon: The add-on.
        model: The model it would serve.
        preprocess: How images reach the model.
        framed: Whether the pixel map is standardised per position (photos of one
            framing): a model's ``auto_off_framed`` add-ons are left off then.
        n_images: How many training images the add-ons are fitted on (None: not known):
            with fewer than a model's ``auto_min_images`` for the add-on, ``auto`` leaves
            it off.

    Raises:
        ConfigError: An unknown value, or ``true`` for a model that does not give what the
            add-on needs.
    """
    group = cfg.scoring[addon.name]
    enabled = group.enabled
    if enabled not in ENABLED_CHOICES:
        raise ConfigError(f"{addon.key}.enabled={enabled!r} is unknown; choose auto, true or false")
    supported = gives(model, preprocess, addon)
    inner = inspectable(model)
    off = set(getattr(inner, "auto_off", ())) | set(
        getattr(inner, "auto_off_framed", ()) if framed else ()
    )
    if enabled == "auto" and addon.name in off:
        # The model says the add-on repeats what its map already measures.
        return False
    least = getattr(inner, "auto_min_images", {}).get(addon.name, 0)
    if enabled == "auto" and supported and n_images is not None and n_images < least:
        log.info(
            "%s stays off (auto): %d training images, fewer than the %d it needs to cover "
            "the normal surface; %s.enabled=true adds it",
            addon.key,
            n_images,
            least,
            addon.key,
        )
        return False
    if enabled is True and not supported:
        raise ConfigError(
            f"{addon.key}.enabled=true, but {type(model).__name__} gives no {addon.what} in "
            "this mode (draem and its ensembles in resize mode do); set it to auto or false"
        )
    return enabled is not False and supported


def addon_settings(cfg: DictConfig, addon: AddOn) -> dict[str, Any]:
    """``addon``'s fitting arguments from its ``scoring.<name>`` group (checked).

    Raises:
        ConfigError: A value out of range (names the key).
    """
    return addon.settings(OmegaConf.to_container(cfg.scoring[addon.name], resolve=True))


def enabled_addons(
    cfg: DictConfig,
    model: torch.nn.Module,
    preprocess: Preprocess,
    *,
    framed: bool = False,
    n_images: int | None = None,
) -> dict[AddOn, dict[str, Any]]:
    """The add-ons the config asks for on ``model``, each with its (checked) fitting arguments.

    ``framed`` and ``n_images``: whether the pixel map is to be standardised per position,
    and how many training images there are (see :func:`use_addon`).

    Raises:
        ConfigError: As :func:`use_addon`, a setting of an add-on in use out of range, or
            the position score asked for beside the patch map or the ``area`` score (with
            ``auto`` it gives way to them; a patch map there by ``auto`` gives way to a
            position score asked for).
    """
    chosen = {
        addon: addon_settings(cfg, addon)
        for addon in ADDONS
        if use_addon(cfg, addon, model, preprocess, framed=framed, n_images=n_images)
    }
    if (
        PATCH_MAP in chosen
        and cfg.scoring.patch_map.enabled == "auto"
        and cfg.scoring.position_score.enabled is True
        and POSITION_SCORE in chosen
    ):
        # What was asked for by name wins over what auto would add.
        del chosen[PATCH_MAP]
    clash = (
        "the patch map (scoring.patch_map), whose share of the map is fitted after it"
        if PATCH_MAP in chosen
        else "scoring.score=area, which counts pixels over the model map's own threshold"
        if cfg.scoring.score == "area"
        else ""
    )
    if POSITION_SCORE in chosen and clash:
        if cfg.scoring.position_score.enabled is True:
            raise ConfigError(
                f"{POSITION_SCORE.key}.enabled=true cannot go with {clash}; set one of them "
                "off (the position score standardises the model's map alone)"
            )
        del chosen[POSITION_SCORE]
    return chosen
