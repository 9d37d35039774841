"""The one place where maps become verdicts: scores, p-values, defect regions."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from anomaly.scoring.calibration import p_values
from anomaly.scoring.detector import Detector, Inspected
from anomaly.scoring.regions import RegionSettings, defect_regions


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
    inspected: Inspected,
    original_sizes: Sequence[tuple[int, int]],
    *,
    image_threshold: float,
    pixel_threshold: float,
    regions: RegionSettings,
) -> list[ImageResult]:
    """Scores, p-values, verdicts and cleaned defect regions of a batch of maps.

    The one place where maps become verdicts: ``anomaly score``, ``score-batch`` and the
    MLflow pyfunc model all call it, so they agree on every image. ``inspected``: the
    batch as :meth:`Detector.inspect` gave it. An image whose score or map is not finite gets
    no verdict but an ``error`` (see :func:`unjudgeable`), which callers report instead.
    """
    maps = inspected.maps
    if not maps:
        return []
    scores = detector.image_scores(inspected, pixel_threshold=pixel_threshold)
    reference = detector.calibration.validation_scores if detector.calibration else []
    # Without validation scores there is no p-value: absent (None), not NaN.
    pvals = p_values(scores, reference).tolist() if reference else [None] * len(scores)
    results = []
    for m, size, score, pval in zip(maps, original_sizes, scores, pvals, strict=True):
        full = detector.preprocess.to_photo(m, tuple(size))[0].numpy()
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
