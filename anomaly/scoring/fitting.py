"""Fitting a detector on defect-free images: thresholds, the feature Gaussian, the patch memory."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from anomaly.data.folder import Sample
from anomaly.errors import ConfigError, DataError
from anomaly.models.inspection import IMAGE_FEATURES, MAP, PATCH_FEATURES
from anomaly.scoring.addons import FEATURE_SCORE, PATCH_MAP, AddOn
from anomaly.scoring.calibration import Calibration, fit_calibration, fit_pixel_threshold
from anomaly.scoring.detector import Detector, Inspected
from anomaly.scoring.features import DEFAULT_MAP_WEIGHT, FeatureGaussian, ScoreFusion
from anomaly.scoring.patches import (
    DEFAULT_CORESET,
    DEFAULT_MAX_PATCHES,
    DEFAULT_WEIGHT,
    PatchMemory,
    patch_scale,
)
from anomaly.scoring.stream import Loading, Progress, inspect_batches

log = logging.getLogger(__name__)


# Validation pixels kept per image for the pixel threshold: bounds memory on large sets.
_PIXELS_PER_IMAGE = 200_000


@dataclass(frozen=True)
class CalibrationSpec:
    """How thresholds are fitted and the add-ons weighed (``scoring.calibration`` etc.).

    Attributes:
        image: The image threshold's method and its parameters (None: the default).
        pixel: The pixel threshold's.
        map_weight: The map's share of the fused image score (with the feature score).
        patch_weight: The patch map's share of the map (with the patch map).
        position_pixels: With the position score, standardise the pixel map per position
            too (``scoring.position_score.pixels``, resolved to true or false).
    """

    image: Mapping[str, Any] | None = None
    pixel: Mapping[str, Any] | None = None
    map_weight: float = DEFAULT_MAP_WEIGHT
    patch_weight: float = DEFAULT_WEIGHT
    position_pixels: bool = False


def fit_and_calibrate(
    detector: Detector,
    training: Sequence[Sample],
    validation: Sequence[Sample],
    addons: Mapping[AddOn, Mapping[str, Any]],
    spec: CalibrationSpec,
    *,
    loading: Loading,
    fingerprint: str = "",
    seed: int = 0,
) -> Calibration:
    """Fit ``addons`` on ``training`` (one pass), then the thresholds on ``validation``.

    Raises:
        ConfigError: A calibration setting that these images cannot satisfy.
        DataError: Too few readable images.
    """
    loader = {"batch_size": loading.batch_size, "num_workers": loading.num_workers}
    fit_addons(detector, training, addons, **loader)
    try:
        return calibrate(
            detector,
            validation,
            image=dict(spec.image) if spec.image is not None else None,
            pixel=dict(spec.pixel) if spec.pixel is not None else None,
            map_weight=spec.map_weight,
            patch_weight=spec.patch_weight,
            position_pixels=spec.position_pixels,
            fingerprint=fingerprint,
            seed=seed,
            **loader,
        )
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc


def calibrate(
    detector: Detector,
    samples: Sequence[Sample],
    *,
    image: dict[str, Any] | None = None,
    pixel: dict[str, Any] | None = None,
    fingerprint: str = "",
    batch_size: int = 32,
    num_workers: int = 0,
    seed: int = 0,
    map_weight: float = DEFAULT_MAP_WEIGHT,
    patch_weight: float = DEFAULT_WEIGHT,
    position_pixels: bool = False,
) -> Calibration:
    """Fit thresholds on defect-free validation images and attach them to the detector.

    With a patch memory (``detector.patches``) the map becomes the model's map plus the
    patch map, their scales matched on these images (``patch_weight``: the patch map's
    share; ``patch_scale`` in the calibration), and everything below is fitted on that.
    The pixel threshold is fitted first, since the ``area`` image score depends on it.
    With a feature model (``detector.features``), or a model that gives its own image
    score, the image score becomes the fusion of that score and the map's, standardised
    on these images (``map_weight``: the map's share), and the image threshold is fitted
    on that. With the position score (``detector.positions``) the map's image score is
    taken on the map standardised per position; with ``position_pixels`` the map itself
    is, and the pixel threshold is fitted on that.

    Unreadable images are skipped with a warning that names them.

    Raises:
        DataError: No validation image could be read.
    """
    # The maps below must be the model's own: an earlier calibration's patch scale
    # would count the patch map twice.
    detector.calibration = None
    maps: list[torch.Tensor] = []
    patch_maps: list[torch.Tensor] = []
    picks: list[np.ndarray | None] = []
    distances: list[np.ndarray] = []
    paths: list[str] = []
    rng = np.random.default_rng(seed)
    for batch, inspected in inspect_batches(
        detector, samples, batch_size=batch_size, num_workers=num_workers, skip_errors=True
    ):
        # As for the training images: one unreadable photo costs itself, not the run.
        for i, reason in batch["errors"]:
            log.warning(
                "skipped validation image %s for the calibration: %s", samples[i].path, reason
            )
        paths.extend(str(samples[i].path) for i in batch["index"])
        if inspected.distances is not None:
            distances.append(inspected.distances)
        if inspected.patch_maps is not None:
            patch_maps.extend(inspected.patch_maps)
        for m in inspected.maps:
            size = m.numel()
            picks.append(
                rng.choice(size, _PIXELS_PER_IMAGE, replace=False)
                if size > _PIXELS_PER_IMAGE
                else None
            )
            maps.append(m)
    if not maps:
        raise DataError("no validation image could be read; calibration is impossible")

    def sampled(images: list[torch.Tensor]) -> np.ndarray:
        flat = [m.numpy().ravel() for m in images]
        return np.concatenate([v if p is None else v[p] for v, p in zip(flat, picks, strict=True)])

    scale = 0.0
    if detector.patches is not None:
        scale = patch_scale(sampled(maps), sampled(patch_maps), weight=patch_weight)
        maps = [m + scale * p for m, p in zip(maps, patch_maps, strict=True)]
    positions = detector.positions is not None
    if positions and position_pixels:
        log.info("the pixel map is standardised per position (scoring.position_score.pixels)")
        maps = [detector.positions.standardised(m) for m in maps]
    values = sampled(maps)
    # The pixel threshold first: the "area" image score counts pixels above it.
    t_pixel = fit_pixel_threshold(values, pixel, seed=seed)
    image_scores_ = detector.map_scores(
        maps, pixel_threshold=t_pixel, per_position=positions and not position_pixels
    )
    fusion = None
    if distances:
        feature_scores = np.concatenate(distances)
        fusion = ScoreFusion.fit(image_scores_, feature_scores, map_weight=map_weight)
        image_scores_ = fusion(image_scores_, feature_scores)
    detector.calibration = fit_calibration(
        image_scores_,
        values,
        image=image,
        pixel=pixel,
        fingerprint=fingerprint,
        model_id=detector.model_id,
        seed=seed,
        pixel_threshold=t_pixel,
        fusion=fusion,
        patch_scale=scale,
        positions=positions,
        position_pixels=position_pixels,
        paths=paths,
    )
    for standout in detector.calibration.standouts:
        log.warning(
            "validation photo %s scores %.2f, far above the other defect-free validation "
            "photos (upper quartile %.2f; image threshold %.2f): look at it. A defective "
            "photo among the defect-free ones raises the threshold and hides defects; if it "
            "is one, move it out of the training photos and train again",
            standout["path"],
            standout["score"],
            float(np.quantile(image_scores_, 0.75)),
            detector.calibration.image_threshold,
        )
    return detector.calibration


def fit_addons(
    detector: Detector,
    samples: Sequence[Sample],
    addons: Mapping[AddOn, Mapping[str, Any]],
    *,
    batch_size: int = 32,
    num_workers: int = 0,
    progress: Progress | None = None,
) -> None:
    """Fit add-ons on defect-free (training) images, in one pass, and attach them.

    Each image goes through the model once for all add-ons. The detector's calibration is
    dropped: its thresholds belong to another map or score, so :func:`calibrate` must
    follow.

    Args:
        detector: The detector; its model must give what each add-on needs.
        samples: Defect-free training images; unreadable ones are skipped with a warning.
        addons: Each add-on with its fitting arguments (:attr:`AddOn.settings`).
        batch_size: Images per batch.
        num_workers: Loader workers.
        progress: Called with ``(images done, total)``.

    Raises:
        ConfigError: The model does not give what an add-on needs.
        DataError: Fewer than two images could be read.
    """
    if not addons:
        return
    needs = {addon.needs for addon in addons}
    for addon in addons:
        detector.check(addon)
    names = " and ".join(addon.name.replace("_", " ") for addon in addons)
    outputs = _training_outputs(
        detector,
        samples,
        image_features=IMAGE_FEATURES in needs,
        patch_features=PATCH_FEATURES in needs,
        fitting_maps=MAP in needs,
        purpose=names,
        key=next(iter(addons)).key,
        batch_size=batch_size,
        num_workers=num_workers,
        progress=progress,
    )
    for addon, settings in addons.items():
        started = time.perf_counter()
        part = addon.fit([getattr(o, addon.fitted_on) for o in outputs], **settings)
        setattr(detector, addon.attribute, part)
        log.info("%s (%.0f s)", addon.describe(part), time.perf_counter() - started)
    detector.calibration = None


def fit_features(
    detector: Detector,
    samples: Sequence[Sample],
    *,
    batch_size: int = 32,
    num_workers: int = 0,
    progress: Progress | None = None,
) -> FeatureGaussian:
    """Fit the feature score's Gaussian alone (:func:`fit_addons`) and return it.

    Raises:
        ConfigError: The model gives no image features.
        DataError: Fewer than two images could be read.
    """
    fit_addons(
        detector,
        samples,
        {FEATURE_SCORE: {}},
        batch_size=batch_size,
        num_workers=num_workers,
        progress=progress,
    )
    return detector.features


def fit_patches(
    detector: Detector,
    samples: Sequence[Sample],
    *,
    coreset: float = DEFAULT_CORESET,
    max_patches: int = DEFAULT_MAX_PATCHES,
    seed: int = 0,
    batch_size: int = 32,
    num_workers: int = 0,
    progress: Progress | None = None,
) -> PatchMemory:
    """Fit the patch map's memory alone (:func:`fit_addons`) and return it.

    Args:
        detector: A detector whose model gives feature maps (:meth:`Detector.check`).
        samples: Defect-free training images; unreadable ones are skipped with a warning.
        coreset: Share of all their bottleneck positions kept in the memory.
        max_patches: The most positions kept.
        seed: Seed of the coreset's random projection.
        batch_size: Images per forward pass.
        num_workers: Loader workers.
        progress: Called with ``(images done, total)``.

    Raises:
        ConfigError: The model gives no feature maps.
        DataError: Fewer than two images could be read.
    """
    settings = {"coreset": coreset, "max_patches": max_patches, "seed": seed}
    fit_addons(
        detector,
        samples,
        {PATCH_MAP: settings},
        batch_size=batch_size,
        num_workers=num_workers,
        progress=progress,
    )
    return detector.patches


def _training_outputs(
    detector: Detector,
    samples: Sequence[Sample],
    *,
    image_features: bool,
    patch_features: bool,
    fitting_maps: bool,
    purpose: str,
    key: str,
    batch_size: int,
    num_workers: int,
    progress: Progress | None,
) -> list[Inspected]:
    """Every readable training image's features, batch by batch.

    Unreadable images are skipped with a warning that names them and ``purpose``.

    Raises:
        DataError: Fewer than two images could be read (the message names ``key``).
    """
    outputs: list[Inspected] = []
    done = read = 0
    for batch, inspected in inspect_batches(
        detector,
        samples,
        batch_size=batch_size,
        num_workers=num_workers,
        skip_errors=True,
        image_features=image_features,
        patch_features=patch_features,
        fitting_maps=fitting_maps,
    ):
        for i, reason in batch["errors"]:
            log.warning(
                "skipped training image %s for the %s: %s", samples[i].path, purpose, reason
            )
        if "image" in batch:
            outputs.append(inspected)
            read += len(batch["index"])
        done += len(batch["index"]) + len(batch["errors"])
        if progress is not None:
            progress(done, len(samples))
    if read < 2:
        raise DataError(
            f"the {purpose} needs at least two readable training images, got {read}; add "
            f"images or set {key}.enabled=false"
        )
    return outputs
