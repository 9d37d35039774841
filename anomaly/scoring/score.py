"""Scoring images with a trained model: anomaly maps, verdicts and the files written.

Works on any ``nn.Module`` that reconstructs images; modules with several reconstructions
expose ``reconstructions(x) -> [(weight, recon), ...]``.
"""

from __future__ import annotations

import contextlib
import csv
import io
import logging
import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader

from anomaly.data.dataset import ImageDataset, collate
from anomaly.data.folder import Sample, describe_others, list_files
from anomaly.data.images import IMAGE_EXTENSIONS, read_mask
from anomaly.data.transforms import Preprocess, resize_map
from anomaly.errors import ConfigError, DataError, OutputError
from anomaly.io import atomic_open, remove_leftover_temporaries, write_json_atomic
from anomaly.scoring.calibration import (
    Calibration,
    fit_calibration,
    fit_pixel_threshold,
    p_values,
)
from anomaly.scoring.features import DEFAULT_MAP_WEIGHT, FeatureGaussian, ScoreFusion
from anomaly.scoring.figures import heatmap_png, overlay_png, png_bytes
from anomaly.scoring.maps import MapSettings, image_scores, raw_map, smooth
from anomaly.scoring.metrics import RankedPixels, auroc, average_precision, best_f1, f1_at
from anomaly.scoring.patches import (
    DEFAULT_CORESET,
    DEFAULT_MAX_PATCHES,
    DEFAULT_WEIGHT,
    PatchMemory,
    patch_scale,
)
from anomaly.scoring.regions import REGION_COLUMNS, RegionSettings, defect_regions, region_table
from anomaly.scoring.tiling import tiled_map

log = logging.getLogger(__name__)

SCORES_COLUMNS = (
    "path",
    "score",
    "p_value",
    "threshold",
    "is_defective",
    "n_regions",
    "largest_region_area",
    "defect_area_px",
    "model_id",
)
# Progress callback: (files finished so far, total files).
Progress = Callable[[int, int], None]
# Where evaluate() compares maps with masks (None: no pixel metrics).
PIXEL_METRICS_AT = ("native", "model", None)
# Native-size pixel metrics up to this many pixels in all (Magnetic Tile's test set: 63 M).
NATIVE_PIXEL_LIMIT = 100_000_000
# Validation pixels kept per image for the pixel threshold: bounds memory on large sets.
_PIXELS_PER_IMAGE = 200_000


def gives_features(model: nn.Module, preprocess: Preprocess) -> bool:
    """Whether ``model`` gives image features for the feature score under ``preprocess``.

    A window of tile mode is not an image, so tile mode never does.
    """
    return hasattr(model, "image_features") and not preprocess.tile


def gives_patches(model: nn.Module, preprocess: Preprocess) -> bool:
    """Whether ``model`` gives feature maps for the patch map under ``preprocess``.

    Tile mode never does: a memory of whole-image positions does not describe windows.
    """
    return hasattr(model, "patch_features") and not preprocess.tile


@dataclass
class Detector:
    """A trained model with everything needed to turn images into verdicts.

    Attributes:
        model: Reconstructs ``(N, C, h, w)`` inputs; put in eval mode by the detector.
        preprocess: Model input size, channels and resize/tile mode.
        maps: How errors become maps and scores.
        calibration: Thresholds (None before calibration).
        model_id: Identifier written into every result row.
        features: Gaussian over the training images' features, for the image-level
            feature score (None: the image score is the map's alone). It counts once the
            calibration holds the fusion of both scores.
        patches: Memory of the training images' bottleneck positions, for the patch map
            (None: the map is the model's alone). It counts once the calibration holds
            its ``patch_scale``.
    """

    model: nn.Module
    preprocess: Preprocess
    maps: MapSettings
    calibration: Calibration | None = None
    model_id: str = ""
    features: FeatureGaussian | None = None
    patches: PatchMemory | None = None

    def __post_init__(self) -> None:
        self.model.eval()

    def _reconstructions(self, windows: torch.Tensor) -> list[tuple[float, torch.Tensor]]:
        fn = getattr(self.model, "reconstructions", None)
        return fn(windows) if fn is not None else [(1.0, self.model(windows))]

    def _raw(self, windows: torch.Tensor) -> torch.Tensor:
        # A model that learned its own comparison (DRAEM) gives the map itself.
        own = getattr(self.model, "anomaly_map", None)
        if own is not None:
            return own(windows)
        return raw_map(windows, self._reconstructions(windows), self.maps)

    def _per_image(
        self,
        images: torch.Tensor | Sequence[torch.Tensor],
        fn: Callable[[torch.Tensor], torch.Tensor],
    ) -> list[torch.Tensor]:
        """``fn`` applied to each image, one result tensor per image.

        Resize mode: on the batch of model inputs. Tile mode: window by window on each
        image, the windows stitched by averaging.
        """
        if not self.preprocess.tile:
            batch = images if isinstance(images, torch.Tensor) else torch.stack(list(images))
            return list(fn(batch).unbind(0))
        return [
            tiled_map(image, fn, window=self.preprocess.image_size, stride=self.preprocess.stride)
            for image in images
        ]

    @torch.inference_mode()
    def anomaly_maps(self, images: torch.Tensor | Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Smoothed anomaly maps, one ``(1, h, w)`` tensor per image.

        Args:
            images: ``(N, C, h, w)`` model inputs (resize mode), or images of any size at
                working scale (tile mode: inspected in overlapping windows, stitched, then
                smoothed, so window borders leave no seams).
        """
        maps = self._smoothed(self._per_image(images, self._raw))
        scale = self.patch_scale
        if not scale:
            return maps
        # Smoothing is linear, so the parts may be smoothed apart (calibration needs them).
        return [m + scale * p for m, p in zip(maps, self.patch_maps(images), strict=True)]

    def _smoothed(self, raw: list[torch.Tensor]) -> list[torch.Tensor]:
        if all(m.shape == raw[0].shape for m in raw):
            # One smoothing call for the batch (the usual resize-mode case).
            return list(smooth(torch.stack(raw), self.maps).unbind(0))
        return [smooth(m[None], self.maps)[0] for m in raw]

    @property
    def patch_scale(self) -> float:
        """Weight of the patch map in :meth:`anomaly_maps`; 0 when it does not count."""
        if self.patches is None or self.calibration is None:
            return 0.0
        return float(self.calibration.patch_scale)

    def supports_patches(self) -> bool:
        """Whether the model gives feature maps for the patch map (DRAEM, resize mode)."""
        return gives_patches(self.model, self.preprocess)

    def check_patches(self) -> None:
        """Raise unless the model gives feature maps for the patch map.

        Raises:
            ConfigError: The model gives none, or works in tiles.
        """
        if not self.supports_patches():
            raise ConfigError(
                f"{type(self.model).__name__} in {'tile' if self.preprocess.tile else 'resize'}"
                " mode gives no feature maps for the patch map; set "
                "scoring.patch_map.enabled=false"
            )

    @torch.inference_mode()
    def patch_features(self, images: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
        """Feature maps ``(N, D, h, w)`` of ``(N, C, H, W)`` model inputs.

        Raises:
            ConfigError: The model gives none (see :meth:`check_patches`).
        """
        self.check_patches()
        # One image at a time, as for image_features: a nearest-neighbour distance that is
        # small beside the features' size magnifies the ~1e-7 rounding of batched float32
        # convolutions, and a resumed or distributed run must map an image as the first.
        return torch.cat([self.model.patch_features(image[None]) for image in images])

    @torch.inference_mode()
    def patch_maps(self, images: torch.Tensor | Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Smoothed patch maps (distance to the training memory), one ``(1, H, W)`` each.

        Unweighted: :meth:`anomaly_maps` adds them times :attr:`patch_scale`.

        Raises:
            ValueError: The detector has no patch memory.
        """
        if self.patches is None:
            raise ValueError("this detector has no patch memory; fit one with fit_patches")
        if len(images) == 0:
            return []
        size = tuple(images[0].shape[-2:])
        raw = self.patches.patch_map(self.patch_features(images), size)
        return self._smoothed(list(raw.unbind(0)))

    @torch.inference_mode()
    def reconstruct(self, images: torch.Tensor | Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """The first reconstruction of each image (stitched from windows in tile mode)."""
        return self._per_image(images, lambda windows: self._reconstructions(windows)[0][1])

    def supports_features(self) -> bool:
        """Whether the model gives image features (DRAEM and its ensembles, resize mode)."""
        return gives_features(self.model, self.preprocess)

    def check_features(self) -> None:
        """Raise unless the model gives image features.

        Raises:
            ConfigError: The model gives none, or works in tiles (a window is not an image).
        """
        if not self.supports_features():
            raise ConfigError(
                f"{type(self.model).__name__} in {'tile' if self.preprocess.tile else 'resize'}"
                " mode gives no image features; set scoring.feature_score.enabled=false"
            )

    @torch.inference_mode()
    def image_features(self, images: torch.Tensor | Sequence[torch.Tensor]) -> np.ndarray:
        """Pooled features ``(N, D)`` of ``(N, C, h, w)`` model inputs.

        Raises:
            ConfigError: The model gives none, or works in tiles (a window is not an image).
        """
        self.check_features()
        # One image at a time: float32 convolutions round differently in batches of
        # different sizes (~1e-7), and the Mahalanobis distance magnifies that about a
        # thousandfold. Alone, an image gets the same feature score in any batch, so a
        # resumed or distributed run scores it as the first run did.
        features = [self.model.image_features(image[None]) for image in images]
        if not features:
            return np.zeros((0, 0))
        return torch.cat(features).double().numpy()

    def feature_distances(self, images: torch.Tensor | Sequence[torch.Tensor]) -> np.ndarray | None:
        """Feature scores ``(N,)`` of model inputs; None without a feature model.

        Squared Mahalanobis distances to the training images' Gaussian.
        """
        if self.features is None or len(images) == 0:
            return None
        return self.features.distances(self.image_features(images))

    @property
    def fusion(self) -> ScoreFusion | None:
        """How image scores combine map and features; None when they are the map's."""
        if self.features is None or self.calibration is None or not self.calibration.fusion:
            return None
        return ScoreFusion.from_dict(self.calibration.fusion, "calibration")

    def scores(
        self,
        maps: Sequence[torch.Tensor],
        *,
        pixel_threshold: float | None = None,
        distances: np.ndarray | None = None,
    ) -> np.ndarray:
        """Image scores ``(N,)`` of ``(1, h, w)`` maps.

        Args:
            maps: The maps.
            pixel_threshold: For the ``area`` score; the calibrated one when None.
            distances: The images' feature scores (:meth:`feature_distances`), needed when
                the calibration fuses them with the map's.

        Raises:
            ValueError: The calibration fuses feature scores and ``distances`` is None.
        """
        map_scores = self.map_scores(maps, pixel_threshold=pixel_threshold)
        fusion = self.fusion
        if fusion is None:
            return map_scores
        if distances is None:
            raise ValueError(
                "this detector's image score includes the feature score; pass "
                "distances=detector.feature_distances(images)"
            )
        return fusion(map_scores, distances)

    def map_scores(
        self, maps: Sequence[torch.Tensor], *, pixel_threshold: float | None = None
    ) -> np.ndarray:
        """Image scores ``(N,)`` from the maps alone (``scoring.score``)."""
        pixel = pixel_threshold
        if pixel is None and self.calibration is not None:
            pixel = self.calibration.pixel_threshold
        return np.array(
            [
                float(
                    image_scores(
                        m[None], method=self.maps.score, topk=self.maps.topk, pixel_threshold=pixel
                    )[0]
                )
                for m in maps
            ]
        )


def iterate_maps(
    detector: Detector,
    samples: Sequence[Sample],
    *,
    batch_size: int = 32,
    num_workers: int = 0,
    with_masks: bool = False,
    skip_errors: bool = False,
    keep_original: bool = False,
    timings: dict[str, float] | None = None,
) -> Iterator[tuple[dict[str, Any], list[torch.Tensor]]]:
    """Stream ``(batch, maps)`` over samples; decoding happens in loader workers.

    With a feature model, ``batch["distances"]`` holds the images' feature scores.

    Batches whose every file failed yield no maps, so callers still see their ``errors``.
    With ``timings``, seconds spent waiting for decoded images (``decode``) and computing
    maps (``model``) are added to it.
    """
    dataset = ImageDataset(
        samples,
        detector.preprocess,
        with_masks=with_masks,
        skip_errors=skip_errors,
        keep_original=keep_original,
    )
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=num_workers, collate_fn=collate)
    batches = iter(loader)
    while True:
        started = time.perf_counter()
        batch = next(batches, None)
        decoded = time.perf_counter()
        if batch is None:
            return
        maps = detector.anomaly_maps(batch["image"]) if "image" in batch else []
        if maps and detector.features is not None:
            batch["distances"] = detector.feature_distances(batch["image"])
        if timings is not None:
            timings["decode"] = timings.get("decode", 0.0) + decoded - started
            timings["model"] = timings.get("model", 0.0) + time.perf_counter() - decoded
        yield batch, maps


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
) -> Calibration:
    """Fit thresholds on defect-free validation images and attach them to the detector.

    With a patch memory (``detector.patches``) the map becomes the model's map plus the
    patch map, their scales matched on these images (``patch_weight``: the patch map's
    share; ``patch_scale`` in the calibration), and everything below is fitted on that.
    The pixel threshold is fitted first, since the ``area`` image score depends on it.
    With a feature model (``detector.features``) the image score becomes the fusion of
    feature and map scores, standardised on these images (``map_weight``: the map's
    share), and the image threshold is fitted on that.

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
    rng = np.random.default_rng(seed)
    for batch, batch_maps in iterate_maps(
        detector, samples, batch_size=batch_size, num_workers=num_workers, skip_errors=True
    ):
        # As for the training images: one unreadable photo costs itself, not the run.
        for i, reason in batch["errors"]:
            log.warning(
                "skipped validation image %s for the calibration: %s", samples[i].path, reason
            )
        if "distances" in batch:
            distances.append(batch["distances"])
        if batch_maps and detector.patches is not None:
            patch_maps.extend(detector.patch_maps(batch["image"]))
        for m in batch_maps:
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
    values = sampled(maps)
    # The pixel threshold first: the "area" image score counts pixels above it.
    t_pixel = fit_pixel_threshold(values, pixel, seed=seed)
    image_scores_ = detector.map_scores(maps, pixel_threshold=t_pixel)
    fusion = None
    if detector.features is not None:
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
    )
    return detector.calibration


def fit_features(
    detector: Detector,
    samples: Sequence[Sample],
    *,
    batch_size: int = 32,
    num_workers: int = 0,
    progress: Progress | None = None,
) -> FeatureGaussian:
    """Fit the feature score's Gaussian on defect-free (training) images and attach it.

    The detector's calibration is dropped: its image threshold belongs to another score,
    so :func:`calibrate` must follow.

    Raises:
        ConfigError: The model gives no image features.
        DataError: Fewer than two images could be read.
    """
    detector.check_features()
    features = _training_features(
        samples,
        detector.preprocess,
        detector.image_features,
        purpose="feature score",
        key="scoring.feature_score",
        batch_size=batch_size,
        num_workers=num_workers,
        progress=progress,
    )
    detector.features = FeatureGaussian.fit(np.concatenate(features))
    detector.calibration = None
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
    """Fit the patch map's memory on defect-free (training) images and attach it.

    The detector's calibration is dropped: its thresholds belong to another map, so
    :func:`calibrate` must follow (it fits the patch map's scale).

    Args:
        detector: A detector whose model gives feature maps (:meth:`Detector.check_patches`).
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
    detector.check_patches()
    chunks = _training_features(
        samples,
        detector.preprocess,
        detector.patch_features,
        purpose="patch map",
        key="scoring.patch_map",
        batch_size=batch_size,
        num_workers=num_workers,
        progress=progress,
    )
    started = time.perf_counter()
    detector.patches = PatchMemory.fit(
        torch.cat(chunks), coreset=coreset, max_patches=max_patches, seed=seed
    )
    log.info(
        "patch map: %d of %d bottleneck positions of %d training images kept (%.0f s)",
        detector.patches.bank.shape[0],
        detector.patches.n_positions,
        detector.patches.n_images,
        time.perf_counter() - started,
    )
    detector.calibration = None
    return detector.patches


def _training_features(
    samples: Sequence[Sample],
    preprocess: Preprocess,
    extract: Callable[[torch.Tensor], Any],
    *,
    purpose: str,
    key: str,
    batch_size: int,
    num_workers: int,
    progress: Progress | None,
) -> list[Any]:
    """``extract`` of every readable training image, batch by batch.

    Unreadable images are skipped with a warning that names them and ``purpose``.

    Raises:
        DataError: Fewer than two images could be read (the message names ``key``).
    """
    dataset = ImageDataset(samples, preprocess, skip_errors=True)
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=num_workers, collate_fn=collate)
    chunks: list[Any] = []
    done = read = 0
    for batch in loader:
        for i, reason in batch["errors"]:
            log.warning(
                "skipped training image %s for the %s: %s", samples[i].path, purpose, reason
            )
        if "image" in batch:
            chunks.append(extract(batch["image"]))
            read += len(batch["index"])
        done += len(batch["index"]) + len(batch["errors"])
        if progress is not None:
            progress(done, len(samples))
    if read < 2:
        raise DataError(
            f"the {purpose} needs at least two readable training images, got {read}; add "
            f"images or set {key}.enabled=false"
        )
    return chunks


@dataclass
class Evaluation:
    """Scores and metrics of a labelled test split.

    Attributes:
        samples: The evaluated samples, aligned with ``scores``.
        scores: Image scores.
        metrics: ``image_auroc``, ``image_ap``, ``image_f1`` (at the calibrated threshold),
            ``image_best_f1``, ``pixel_auroc``, ``pixel_aupro`` and the same per defect
            class as ``<metric>/<class>`` (that class against the defect-free images).
        pixel_metrics_at: Where the pixel metrics were taken: ``native``, ``model`` (also
            when native size would have held too many pixels) or None.
        errors: ``(path, reason)`` of each image that could not be read or judged (its
            score is NaN and the metrics are those of the other images) and of each
            unusable mask (its image counts in the image metrics only).
    """

    samples: list[Sample]
    scores: np.ndarray
    metrics: dict[str, float] = field(default_factory=dict)
    pixel_metrics_at: str | None = None
    errors: list[tuple[Path, str]] = field(default_factory=list)


def check_pixel_metrics_at(value: str | None) -> str | None:
    """``value`` if it is one of :data:`PIXEL_METRICS_AT`.

    Raises:
        ConfigError: Naming ``scoring.pixel_metrics_at`` and its choices.
    """
    if value not in PIXEL_METRICS_AT:
        raise ConfigError(
            f"scoring.pixel_metrics_at={value!r} is unknown; choose one of "
            f"{[v for v in PIXEL_METRICS_AT if v]} (or null for image metrics only)"
        )
    return value


def evaluate(
    detector: Detector,
    samples: Sequence[Sample],
    *,
    batch_size: int = 32,
    num_workers: int = 0,
    fpr_limit: float = 0.3,
    pixel_metrics_at: str | None = "native",
    native_pixel_limit: int = NATIVE_PIXEL_LIMIT,
    progress: Progress | None = None,
) -> Evaluation:
    """Score a labelled test split and compute the image and pixel metrics.

    Pixel metrics use the images whose masks exist. Metrics that need both classes are
    left out when one is missing. An unreadable image is skipped with a warning and listed
    in ``errors``; the metrics are those of the others. An unreadable mask, or one of
    another size than its image, is listed too, but only the pixel metrics leave its image
    out: the image's label comes from its folder.

    Args:
        detector: The calibrated (or not) model.
        samples: The labelled test images.
        batch_size: Images per model call.
        num_workers: Loader processes decoding images.
        fpr_limit: Upper false-positive rate of AUPRO.
        pixel_metrics_at: ``native``: at each photo's own size, the map resized to it as
            ``anomaly score`` writes it and the mask as drawn (thin cracks keep every
            pixel); ``model``: at the model's input size, the mask resized with nearest
            neighbour (cheaper, but a crack one pixel wide can vanish); None: image
            metrics only.
        native_pixel_limit: Past this many pixels in all, native size falls back to the
            model's size with a warning: the metrics hold every pixel in memory, about
            50 bytes each while they sort.
        progress: Called with ``(finished, total)`` image counts after each batch.

    Raises:
        ConfigError: ``pixel_metrics_at`` is none of these.
    """
    check_pixel_metrics_at(pixel_metrics_at)
    samples = list(samples)
    scores = np.full(len(samples), np.nan)
    errors: list[tuple[Path, str]] = []
    done = 0
    # Model-size pairs are kept even for native metrics (a few kB per image): they are the
    # fallback when the photos turn out too large.
    small: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    native: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    native_pixels = 0
    for batch, batch_maps in iterate_maps(
        detector,
        samples,
        batch_size=batch_size,
        num_workers=num_workers,
        with_masks=True,
        skip_errors=True,
    ):
        for i, reason in batch["errors"]:
            log.warning("skipped test image %s: %s", samples[i].path, reason)
            errors.append((samples[i].path, reason))
        for i, reason in batch["mask_errors"]:
            log.warning(
                "mask %s left out of the pixel metrics (its image still counts): %s",
                samples[i].mask_path,
                reason,
            )
            errors.append((samples[i].mask_path, f"{reason} (image metrics only)"))
        done += len(batch["index"]) + len(batch["errors"])
        if progress is not None:
            progress(done, len(samples))
        if not batch_maps:
            continue
        batch_scores = detector.scores(batch_maps, distances=batch.get("distances"))
        judged: set[int] = set()
        for i, score, score_map in zip(batch["index"], batch_scores, batch_maps, strict=True):
            reason = unjudgeable(float(score), score_map)
            if reason:
                # Left out like an unreadable image: NaN is how scores marks "not scored".
                log.warning("skipped test image %s: %s", samples[i].path, reason)
                errors.append((samples[i].path, reason))
                score = np.nan
            else:
                judged.add(i)
            scores[i] = score
        if pixel_metrics_at is None:
            continue
        for j, i in enumerate(batch["index"]):
            if i not in judged or not bool(batch["has_mask"][j]):
                continue
            # float32: half precision would tie the tiny values of probability maps
            # (DRAEM's normal surface) at 0 and flatten the pixel ROC.
            score_map = batch_maps[j].float()
            small[i] = (batch["mask"][j][0].numpy() > 0.5, score_map[0].numpy())
            if pixel_metrics_at != "native":
                continue
            size = tuple(batch["original_size"][j])
            native_pixels += size[0] * size[1]
            if native_pixels > native_pixel_limit:
                log.warning(
                    "the test images hold more than %d pixels at their native size: pixel "
                    "metrics are taken at the model's size instead (as with "
                    "scoring.pixel_metrics_at=model)",
                    native_pixel_limit,
                )
                pixel_metrics_at = "model"
                native.clear()
                continue
            path = samples[i].mask_path
            mask = read_mask(path) if path is not None else np.zeros(size, dtype=bool)
            native[i] = (mask, resize_map(score_map, size)[0].numpy())
    labels = np.array([s.label for s in samples])
    metrics: dict[str, float] = {}
    threshold = detector.calibration.image_threshold if detector.calibration else None
    groups = {"": np.ones(len(samples), dtype=bool)}
    for cls in sorted({s.defect_class for s in samples if s.label == 1}):
        groups[f"/{cls}"] = np.array([s.label == 0 or s.defect_class == cls for s in samples])
    pairs = native if pixel_metrics_at == "native" else small
    with_mask = sorted(pairs)
    ranked = None
    if with_mask:
        # Popped: at native size the per-image arrays are hundreds of MB, freed as soon as
        # RankedPixels holds their concatenation.
        masks, maps = zip(*(pairs.pop(i) for i in with_mask), strict=True)
        ranked = RankedPixels(masks, maps)
        del masks, maps
    for suffix, pick in groups.items():
        metrics.update(_image_metrics(labels[pick], scores[pick], threshold, suffix))
        pixels = ranked.select(pick[with_mask]) if ranked is not None else None
        if pixels is not None and pixels.has_both:
            metrics[f"pixel_auroc{suffix}"] = pixels.auroc()
            metrics[f"pixel_aupro{suffix}"] = pixels.aupro(fpr_limit=fpr_limit)
    return Evaluation(
        samples=samples,
        scores=scores,
        metrics=metrics,
        pixel_metrics_at=pixel_metrics_at,
        errors=errors,
    )


def _image_metrics(
    labels: np.ndarray, scores: np.ndarray, threshold: float | None, suffix: str
) -> dict[str, float]:
    ok = ~np.isnan(scores)
    labels, scores = labels[ok], scores[ok]
    if not {0, 1} <= set(labels.tolist()):
        return {}
    out = {
        f"image_auroc{suffix}": auroc(labels, scores),
        f"image_ap{suffix}": average_precision(labels, scores),
        f"image_best_f1{suffix}": best_f1(labels, scores)[0],
    }
    if threshold is not None:
        out[f"image_f1{suffix}"] = f1_at(labels, scores, threshold)
    return out


@dataclass
class ImageResult:
    """The verdict on one image, at its original size.

    Attributes:
        score: Image score.
        p_value: Split-conformal p-value against the validation scores (None without
            them: absent, never NaN).
        is_defective: ``score > image threshold`` (True, fail-safe, when ``error`` is set).
        labels: ``(H, W)`` int32 defect regions (0 = background), after cleaning.
        n_regions: Number of regions.
        score_map: ``(H, W)`` anomaly map.
        error: Why the image got no verdict (see :func:`unjudgeable`); ``""`` when it has
            one. An image with an error must be reported as an error row: its score, map
            and regions mean nothing.
    """

    score: float
    p_value: float | None
    is_defective: bool
    labels: np.ndarray
    n_regions: int
    score_map: np.ndarray
    error: str = ""

    @property
    def mask(self) -> np.ndarray:
        """Binary defect mask ``(H, W)``, uint8 0/255."""
        return (self.labels > 0).astype(np.uint8) * 255

    @property
    def defect_area(self) -> int:
        """Pixels in defect regions."""
        return int((self.labels > 0).sum())

    @property
    def largest_region_area(self) -> int:
        """Pixels in the largest defect region (0 without regions)."""
        return int(np.bincount(self.labels.ravel())[1:].max()) if self.n_regions else 0


def unjudgeable(score: float, score_map: np.ndarray | torch.Tensor) -> str:
    """Why a score and map cannot be given out as a verdict; ``""`` when they can.

    ``NaN > threshold`` is false, so a NaN score would pass a part as good: every path
    that turns maps into per-image rows (:func:`analyse`, :func:`evaluate`) asks this
    first and reports the image as an error instead.

    Args:
        score: The image score.
        score_map: The image's anomaly map (any shape).

    Returns:
        The reason for ``errors.csv`` (or the pyfunc model's ``error``), or ``""``.
    """
    values = score_map.numpy() if isinstance(score_map, torch.Tensor) else np.asarray(score_map)
    bad = int(values.size - np.count_nonzero(np.isfinite(values)))
    if math.isfinite(score) and not bad:
        return ""
    what = (
        f"a non-finite score ({score})"
        if not math.isfinite(score)
        else f"a non-finite anomaly map ({bad} of {values.size} values NaN or infinite)"
    )
    return (
        f"the model produced {what}, so the image was not judged; check that the model "
        "folder is intact and its training did not diverge, then score the image again"
    )


def analyse(
    detector: Detector,
    maps: Sequence[torch.Tensor],
    original_sizes: Sequence[tuple[int, int]],
    *,
    image_threshold: float,
    pixel_threshold: float,
    regions: RegionSettings,
    distances: np.ndarray | None = None,
) -> list[ImageResult]:
    """Scores, p-values, verdicts and cleaned defect regions of a batch of maps.

    The one place where maps become verdicts: ``anomaly score``, ``score-batch`` and the
    MLflow pyfunc model all call it, so they agree on every image. ``distances``: the
    images' feature scores, when the detector fuses them
    (:meth:`Detector.feature_distances`). An image whose score or map is not finite gets
    no verdict but an ``error`` (see :func:`unjudgeable`), which callers report instead.
    """
    if not maps:
        return []
    scores = detector.scores(maps, pixel_threshold=pixel_threshold, distances=distances)
    reference = detector.calibration.validation_scores if detector.calibration else []
    # Without validation scores there is no p-value: absent (None), not NaN.
    pvals = p_values(scores, reference).tolist() if reference else [None] * len(scores)
    results = []
    for m, size, score, pval in zip(maps, original_sizes, scores, pvals, strict=True):
        full = resize_map(m, tuple(size))[0].numpy()
        error = unjudgeable(float(score), full)
        if error:
            # Flagged, so that a caller that overlooked ``error`` would stop the part,
            # never pass it; the callers here report it as an error row instead.
            empty = np.zeros(full.shape, dtype=np.int32)
            results.append(ImageResult(float(score), None, True, empty, 0, full, error))
            continue
        labels, count = defect_regions(full, pixel_threshold, regions)
        results.append(
            ImageResult(float(score), pval, bool(score > image_threshold), labels, count, full)
        )
    return results


@dataclass
class ScoreSummary:
    """What ``score_folder`` did; also written to ``summary.json``.

    ``min_p_value`` is ``1 / (validation images + 1)``: no p-value can be smaller, so
    flagging at an ``alpha`` below it flags nothing (calibrate on more images).
    ``status`` is ``"complete"``, or ``"stopped"`` when writing failed part-way (``error``
    says why; every row in ``scores.csv`` is still complete).
    """

    n_images: int
    n_scored: int
    n_defective: int
    n_errors: int
    image_threshold: float
    pixel_threshold: float
    model_id: str
    model_uri: str
    seconds: float
    min_p_value: float = 1.0
    timings: dict[str, float] = field(default_factory=dict)
    n_converted: int = 0
    status: str = "complete"
    error: str = ""

    @property
    def defect_rate(self) -> float:
        """Share of scored images judged defective."""
        return self.n_defective / self.n_scored if self.n_scored else 0.0

    def to_dict(self) -> dict[str, Any]:
        """Plain form for JSON."""
        return {
            **self.__dict__,
            "defect_rate": self.defect_rate,
            "images_per_second": self.n_scored / self.seconds if self.seconds else 0.0,
        }


@dataclass(frozen=True)
class OutputSettings:
    """Which per-image files ``score_folder`` writes besides the tables."""

    masks: bool = True
    heatmaps: bool = True
    overlays: bool = True
    parquet: bool = True


class CsvAppender:
    """A CSV file that only ever holds whole rows, even when the disk fills up.

    Rows are written in blocks with unbuffered writes; when a write fails part-way (no
    space left, file system gone read-only) the file is cut back to the end of the last
    complete block, so a reader never sees a truncated row.

    Args:
        path: The file (replaced).
        header: Column names, written first.
        lazy: Create the file only when the first rows arrive (``errors.csv``).
    """

    def __init__(self, path: Path, header: Sequence[str], *, lazy: bool = False) -> None:
        self.path = path
        self.header = list(header)
        self.rows = 0
        self._file: Any = None
        self._good = 0
        if not lazy:
            self._open()

    def _open(self) -> None:
        self._file = open(self.path, "wb", buffering=0)  # noqa: SIM115 - closed in close()
        self._write([self.header])

    def append(self, rows: Sequence[Sequence[Any]]) -> None:
        """Append whole rows; on an ``OSError`` none of them is left in the file."""
        if not rows:
            return
        if self._file is None:
            self._open()
        self._write(rows)
        self.rows += len(rows)

    def _write(self, rows: Sequence[Sequence[Any]]) -> None:
        text = io.StringIO()
        csv.writer(text, lineterminator="\n").writerows(rows)
        data = memoryview(text.getvalue().encode("utf-8"))
        try:
            while data:
                data = data[self._file.write(data) :]
        except OSError:
            with contextlib.suppress(OSError):
                os.ftruncate(self._file.fileno(), self._good)
            raise
        self._good = self._file.tell()

    def close(self) -> None:
        """Close the file (if it was ever created)."""
        if self._file is not None:
            self._file.close()


def score_folder(
    detector: Detector,
    input_dir: str | Path,
    output_dir: str | Path,
    *,
    image_threshold: float | None = None,
    pixel_threshold: float | None = None,
    regions: RegionSettings | None = None,
    outputs: OutputSettings | None = None,
    batch_size: int = 32,
    num_workers: int = 0,
    model_uri: str = "",
    write_threads: int = 2,
    progress: Progress | None = None,
) -> ScoreSummary:
    """Score every file under ``input_dir`` (recursively) and write the results.

    Every file but hidden ones (and those in hidden folders) ends up in exactly one table:
    ``scores.csv`` with a verdict, or ``errors.csv`` with the reason it got none (unreadable,
    an unsupported type, pixels or a model score that are not finite).

    Writes, in ``output_dir``: ``scores.csv`` and ``scores.parquet`` (one row per judged
    image), ``regions.csv`` (one row per defect region), ``errors.csv`` (one row per
    other file, only when there are some), ``masks/``, ``heatmaps/`` and ``overlays/``
    (one PNG per image at its original size, under its relative path) and
    ``summary.json``. Images are streamed, so memory does not grow with their number.

    What is on disk is always consistent, even when the run dies: each PNG is written
    atomically, and an image's rows reach ``scores.csv`` and ``regions.csv`` only after its
    PNGs are in place, in whole rows. ``summary.json`` is written last; results left from an
    earlier run in the same folder are removed first, so they cannot pass for this one's,
    and so are the temporary files of writes that a killed run cut short (the folder is
    this run's while it scores).

    Args:
        detector: A calibrated detector.
        input_dir: Folder of images.
        output_dir: Results folder (created).
        image_threshold: Overrides the calibrated image threshold.
        pixel_threshold: Overrides the calibrated pixel threshold.
        regions: Cleaning of the defect masks.
        outputs: Which per-image files to write.
        batch_size: Images per forward pass.
        num_workers: Loader worker processes that decode images.
        model_uri: Where the model came from, recorded in ``summary.json``.
        write_threads: Threads that encode and write the per-image PNGs (PNG compression
            releases the GIL, so they overlap with the next batch's work).
        progress: Called with ``(finished, total)`` file counts after each batch.

    Returns:
        The summary.

    Raises:
        DataError: ``input_dir`` does not exist or holds no image file (the message names
            the other files it holds, if any), or the detector
            has no calibration (p-values need its validation scores even when both
            thresholds are overridden).
        OutputError: ``output_dir`` cannot be written (full disk, read-only); the results
            of the images finished before that are complete on disk.
    """
    started = time.perf_counter()
    input_dir, output_dir = Path(input_dir), Path(output_dir)
    regions = regions or RegionSettings()
    outputs = outputs or OutputSettings()
    images, others = list_files(input_dir)
    if not images:
        found = f" (only {describe_others(others, input_dir)})" if others else ""
        raise DataError(
            f"no image files found in {input_dir}{found}; nothing to score (supported: "
            f"{', '.join(sorted(IMAGE_EXTENSIONS))})"
        )
    # Every other file too: the reader refuses it with the reason, so it is named in
    # errors.csv instead of vanishing from the results without a word.
    paths = sorted(images + others)
    cal = detector.calibration
    if cal is None:
        raise DataError("the model has no calibration.json; run `anomaly calibrate`")
    t_image = float(image_threshold if image_threshold is not None else cal.image_threshold)
    t_pixel = float(pixel_threshold if pixel_threshold is not None else cal.pixel_threshold)
    samples = [Sample(p) for p in paths]
    rel = [p.relative_to(input_dir) for p in paths]
    timings: dict[str, float] = {"decode": 0.0, "model": 0.0, "postprocess": 0.0, "write": 0.0}
    summary = ScoreSummary(
        n_images=len(paths),
        n_scored=0,
        n_defective=0,
        n_errors=0,
        image_threshold=t_image,
        pixel_threshold=t_pixel,
        model_id=detector.model_id,
        model_uri=model_uri,
        seconds=0.0,
        min_p_value=1.0 / (len(cal.validation_scores) + 1),
        timings=timings,
    )
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        for stale in ("summary.json", "errors.csv", "scores.parquet"):
            (output_dir / stale).unlink(missing_ok=True)
        remove_leftover_temporaries(output_dir)
    except OSError as exc:
        raise OutputError(
            f"cannot write to the output folder {output_dir}: {exc.strerror}"
        ) from exc
    if progress is not None:
        progress(0, len(paths))
    tables: list[CsvAppender] = []
    try:
        scores_csv = CsvAppender(output_dir / "scores.csv", SCORES_COLUMNS)
        tables.append(scores_csv)
        regions_csv = CsvAppender(output_dir / "regions.csv", REGION_COLUMNS)
        tables.append(regions_csv)
        errors_csv = CsvAppender(output_dir / "errors.csv", ("path", "reason"), lazy=True)
        tables.append(errors_csv)
        with ThreadPoolExecutor(max_workers=max(1, write_threads)) as pool:
            # The batch whose pictures are being written, and its rows, held back until
            # those pictures are on disk.
            pending: list[Future[None]] = []
            held: _Rows = _Rows()
            for batch, maps in iterate_maps(
                detector,
                samples,
                batch_size=batch_size,
                num_workers=num_workers,
                skip_errors=True,
                keep_original=outputs.overlays,
                timings=timings,
            ):
                errors = [(rel[i].as_posix(), reason) for i, reason in batch["errors"]]
                errors_csv.append(errors)
                for path, reason in errors:
                    log.warning("skipped %s: %s", path, reason)
                for i, note in batch["notes"]:
                    log.warning("%s: %s", rel[i].as_posix(), note)
                summary.n_errors += len(errors)
                summary.n_converted += len(batch["notes"])
                t0 = time.perf_counter()
                results = analyse(
                    detector,
                    maps,
                    batch["original_size"],
                    image_threshold=t_image,
                    pixel_threshold=t_pixel,
                    regions=regions,
                    distances=batch.get("distances"),
                )
                unjudged = [
                    (rel[i].as_posix(), result.error)
                    for i, result in zip(batch["index"], results, strict=True)
                    if result.error
                ]
                errors_csv.append(unjudged)
                for path, reason in unjudged:
                    log.warning("skipped %s: %s", path, reason)
                summary.n_errors += len(unjudged)
                timings["postprocess"] += time.perf_counter() - t0
                # The previous batch's pictures were written while this one was decoded
                # and scored; wait for them now, so at most two batches are in flight (flat
                # memory) and a write error (disk full) surfaces before more work is done.
                timings["write"] += _drain(pending)
                t1 = time.perf_counter()
                held.commit(scores_csv, regions_csv, summary)
                for j, (i, result) in enumerate(zip(batch["index"], results, strict=True)):
                    if result.error:
                        continue
                    name = rel[i].with_suffix(".png")
                    original = batch["original"][j] if outputs.overlays else None
                    pending.append(
                        pool.submit(
                            write_pictures, output_dir, name, result, original, t_pixel, outputs
                        )
                    )
                    held.add(rel[i].as_posix(), result, t_image, detector.model_id)
                # Table rows and queueing the pictures: producing the outputs.
                timings["write"] += time.perf_counter() - t1
                if progress is not None:
                    progress(summary.n_scored + held.n + summary.n_errors, len(paths))
            timings["write"] += _drain(pending)
            held.commit(scores_csv, regions_csv, summary)
    except OSError as exc:
        summary.status, summary.error = "stopped", f"{exc.strerror or exc} ({exc.filename or ''})"
        _finish(summary, output_dir, started, tables)
        raise OutputError(
            f"cannot write results to {output_dir}: {exc.strerror or exc}. Stopped after "
            f"{summary.n_scored} of {len(paths)} images; their rows in scores.csv and their "
            "pictures are complete. Free space or make the folder writable, then rerun."
        ) from exc
    for table in tables:
        table.close()
    t_tables = time.perf_counter()
    if outputs.parquet:
        frame = pd.read_csv(output_dir / "scores.csv", dtype={"path": str, "model_id": str})
        try:
            with atomic_open(output_dir / "scores.parquet", "wb") as handle:
                frame.to_parquet(handle, index=False)
        except OSError as exc:
            summary.status, summary.error = "stopped", f"scores.parquet: {exc.strerror}"
            _finish(summary, output_dir, started, tables)
            raise OutputError(
                f"cannot write {output_dir / 'scores.parquet'}: {exc.strerror}; scores.csv "
                "holds every result"
            ) from exc
    if summary.n_converted:
        log.warning(
            "%d image(s) were not in the channel mode the model was trained on and were "
            "converted (see the warnings above); is a camera set to the wrong mode?",
            summary.n_converted,
        )
    timings["write"] += time.perf_counter() - t_tables
    _finish(summary, output_dir, started, tables)
    return summary


class _Rows:
    """The table rows of one batch, written once its pictures are on disk."""

    def __init__(self) -> None:
        self.scores: list[list[Any]] = []
        self.regions: list[pd.DataFrame] = []
        self.defective = 0

    @property
    def n(self) -> int:
        return len(self.scores)

    def add(self, path: str, result: ImageResult, threshold: float, model_id: str) -> None:
        self.scores.append(
            [
                path,
                f"{result.score:.6g}",
                "" if result.p_value is None else f"{result.p_value:.6g}",
                f"{threshold:.6g}",
                int(result.is_defective),
                result.n_regions,
                result.largest_region_area,
                result.defect_area,
                model_id,
            ]
        )
        self.defective += int(result.is_defective)
        if result.n_regions:
            self.regions.append(region_table(result.labels, result.score_map, image=path))

    def commit(self, scores: CsvAppender, regions: CsvAppender, summary: ScoreSummary) -> None:
        # Regions first: a row in scores.csv promises that everything of its image is there.
        if self.regions:
            regions.append(list(pd.concat(self.regions).itertuples(index=False, name=None)))
        scores.append(self.scores)
        summary.n_scored += len(self.scores)
        summary.n_defective += self.defective
        self.__init__()


def _finish(
    summary: ScoreSummary, output_dir: Path, started: float, tables: list[CsvAppender]
) -> None:
    """Close the tables and write ``summary.json`` (best effort when the disk is full)."""
    for table in tables:
        with contextlib.suppress(OSError):
            table.close()
    summary.seconds = round(time.perf_counter() - started, 3)
    summary.timings = {k: round(v, 3) for k, v in summary.timings.items()}
    try:
        write_json_atomic(output_dir / "summary.json", summary.to_dict())
    except OSError:
        if summary.status == "complete":
            raise
        log.error("could not write %s either", output_dir / "summary.json")


def _drain(pending: list[Future[None]]) -> float:
    """Wait for pending writes (re-raising their errors); return the seconds waited."""
    started = time.perf_counter()
    for future in pending:
        future.result()
    pending.clear()
    return time.perf_counter() - started


def write_pictures(
    output_dir: Path,
    name: Path,
    result: ImageResult,
    original: np.ndarray | None,
    pixel_threshold: float,
    outputs: OutputSettings,
) -> None:
    """Write one image's mask, heatmap and overlay PNGs, each atomically.

    Args:
        output_dir: Results folder; the PNGs go to ``masks/``, ``heatmaps/`` and
            ``overlays/`` under it.
        name: Relative path of the PNGs (the image's relative path with ``.png``).
        result: The verdict on the image.
        original: The decoded ``(H, W, C)`` uint8 image, for the overlay (None: none).
        pixel_threshold: Where the heatmap's colour scale marks defects.
        outputs: Which of the three to write.
    """
    if outputs.masks:
        _write_bytes(output_dir / "masks" / name, png_bytes(result.mask))
    if outputs.heatmaps:
        _write_bytes(output_dir / "heatmaps" / name, heatmap_png(result.score_map, pixel_threshold))
    if outputs.overlays and original is not None:
        _write_bytes(output_dir / "overlays" / name, overlay_png(original, result.labels))


def _write_bytes(path: Path, data: bytes) -> None:
    with atomic_open(path, "wb", durable=False) as handle:
        handle.write(data)
