"""Config to settings.

The one place where the ``data`` and ``scoring`` config groups become the settings
objects and arguments that the rest of the package takes (training, calibration, the
model folder), and where the feature score and the patch map are switched on or off.
"""

from __future__ import annotations

from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from anomaly.data.transforms import Preprocess
from anomaly.errors import ConfigError
from anomaly.scoring.detector import gives_features, gives_patches
from anomaly.scoring.features import DEFAULT_MAP_WEIGHT
from anomaly.scoring.maps import MapSettings
from anomaly.scoring.patches import DEFAULT_CORESET, DEFAULT_MAX_PATCHES, check_patch_settings
from anomaly.scoring.patches import DEFAULT_WEIGHT as DEFAULT_PATCH_WEIGHT


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
    )


def calibration_specs(cfg: DictConfig) -> dict[str, Any]:
    """``image=``, ``pixel=``, ``map_weight=`` and ``patch_weight=`` arguments of ``calibrate``.

    From ``scoring.calibration``, ``scoring.feature_score`` and ``scoring.patch_map``.
    """
    c = OmegaConf.to_container(cfg.scoring.calibration, resolve=True)
    weight = OmegaConf.select(cfg, "scoring.feature_score.map_weight", default=DEFAULT_MAP_WEIGHT)
    patch = OmegaConf.select(cfg, "scoring.patch_map.weight", default=DEFAULT_PATCH_WEIGHT)
    return {
        "image": c["image"],
        "pixel": c["pixel"],
        "map_weight": float(weight),
        "patch_weight": float(patch),
    }


FEATURE_SCORE_CHOICES = ("auto", True, False)


def _enabled(cfg: DictConfig, key: str, supported: bool, model: torch.nn.Module, what: str) -> bool:
    """Whether ``<key>.enabled`` (auto, true or false) asks for a part ``model`` may lack."""
    enabled = OmegaConf.select(cfg, f"{key}.enabled", default="auto")
    if enabled not in FEATURE_SCORE_CHOICES:
        raise ConfigError(f"{key}.enabled={enabled!r} is unknown; choose auto, true or false")
    if enabled is True and not supported:
        raise ConfigError(
            f"{key}.enabled=true, but {type(model).__name__} gives no {what} in this mode "
            "(draem and its ensembles in resize mode do); set it to auto or false"
        )
    return enabled is not False and supported


def use_feature_score(cfg: DictConfig, model: torch.nn.Module, preprocess: Preprocess) -> bool:
    """Whether ``scoring.feature_score.enabled`` asks for the feature score of ``model``.

    Raises:
        ConfigError: An unknown value, or ``true`` for a model that gives no features.
    """
    supported = gives_features(model, preprocess)
    return _enabled(cfg, "scoring.feature_score", supported, model, "image features")


def use_patch_map(cfg: DictConfig, model: torch.nn.Module, preprocess: Preprocess) -> bool:
    """Whether ``scoring.patch_map.enabled`` asks for the patch map of ``model``.

    Raises:
        ConfigError: An unknown value or setting, or ``true`` for a model that gives no
            feature maps.
    """
    use = _enabled(
        cfg, "scoring.patch_map", gives_patches(model, preprocess), model, "feature maps"
    )
    if use:
        check_patch_settings(weight=calibration_specs(cfg)["patch_weight"], **patch_settings(cfg))
    return use


def patch_settings(cfg: DictConfig) -> dict[str, Any]:
    """``coreset=`` and ``max_patches=`` arguments of ``fit_patches`` (``scoring.patch_map``)."""
    return {
        "coreset": OmegaConf.select(cfg, "scoring.patch_map.coreset", default=DEFAULT_CORESET),
        "max_patches": OmegaConf.select(
            cfg, "scoring.patch_map.max_patches", default=DEFAULT_MAX_PATCHES
        ),
    }
