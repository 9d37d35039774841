"""Measuring a detector on a labelled test split: image and pixel metrics, overall and per class."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from anomaly.data.folder import Sample
from anomaly.data.images import read_mask
from anomaly.errors import ConfigError
from anomaly.scoring.detector import Detector
from anomaly.scoring.metrics import RankedPixels, auroc, average_precision, best_f1, f1_at
from anomaly.scoring.stream import Progress, inspect_batches
from anomaly.scoring.verdict import unjudgeable

log = logging.getLogger(__name__)


# Where evaluate() compares maps with masks (None: no pixel metrics).
PIXEL_METRICS_AT = ("native", "model", None)


# Native-size pixel metrics up to this many pixels in all (Magnetic Tile's test set: 63 M).
NATIVE_PIXEL_LIMIT = 100_000_000


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
    for batch, inspected in inspect_batches(
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
        batch_maps = inspected.maps
        if not batch_maps:
            continue
        batch_scores = detector.image_scores(inspected)
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
            native[i] = (mask, detector.preprocess.to_photo(score_map, size)[0].numpy())
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
