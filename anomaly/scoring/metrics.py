"""The detection metrics the field reports: AUROC, average precision, F1, AUPRO."""

from __future__ import annotations

import copy
import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from scipy.stats import rankdata


def by_class(metrics: Mapping[str, float]) -> dict[str, dict[str, float]]:
    """Group metric names by defect class.

    ``metric`` goes to ``"all"``, ``metric/<class>`` to ``<class>``.

    Returns:
        ``{class: {metric: value}}`` in the order the classes first appear.
    """
    rows: dict[str, dict[str, float]] = {}
    for name, value in metrics.items():
        metric, _, cls = name.partition("/")
        rows.setdefault(cls or "all", {})[metric] = value
    return rows


def _check(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    labels = np.asarray(labels).ravel().astype(bool)
    scores = np.asarray(scores, dtype=np.float64).ravel()
    if labels.shape != scores.shape:
        raise ValueError(f"labels {labels.shape} and scores {scores.shape} differ in size")
    if labels.all() or not labels.any():
        raise ValueError("this metric needs both defect-free and defective examples")
    return labels, scores


def auroc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve (the Mann-Whitney U statistic, ties counted half).

    Args:
        labels: Binary labels (1 = defective), any shape.
        scores: Scores of the same shape; larger means more likely defective.

    Returns:
        AUROC in ``[0, 1]``.

    Raises:
        ValueError: Shapes differ, or only one class is present.
    """
    labels, scores = _check(labels, scores)
    n_pos = int(labels.sum())
    n_neg = labels.size - n_pos
    ranks = rankdata(scores)
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


@dataclass(frozen=True)
class Curve:
    """Points of a curve, one per distinct threshold, from the highest threshold down."""

    x: np.ndarray
    y: np.ndarray
    thresholds: np.ndarray


def _descending_runs(scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The order sorting ``scores`` high to low, and the end of each run of equal scores.

    The run ends (indices into the sorted scores) give one curve point per distinct score,
    so ties move together.
    """
    order = np.argsort(-scores, kind="mergesort")
    return order, _run_ends(scores[order])


def _run_ends(ordered: np.ndarray) -> np.ndarray:
    """The index of the last element of each run of equal values in sorted scores."""
    return np.r_[np.nonzero(np.diff(ordered))[0], ordered.size - 1]


def _cumulative_counts(labels: np.ndarray, scores: np.ndarray):
    order, last = _descending_runs(scores)
    scores, labels = scores[order], labels[order]
    tp = np.cumsum(labels)[last]
    fp = (last + 1) - tp
    return tp, fp, scores[last]


def roc_curve(labels: np.ndarray, scores: np.ndarray) -> Curve:
    """ROC curve: false-positive rate (x) against true-positive rate (y), from (0, 0)."""
    labels, scores = _check(labels, scores)
    tp, fp, thresholds = _cumulative_counts(labels, scores)
    return Curve(
        x=np.r_[0.0, fp / (~labels).sum()],
        y=np.r_[0.0, tp / labels.sum()],
        thresholds=np.r_[np.inf, thresholds],
    )


def pr_curve(labels: np.ndarray, scores: np.ndarray) -> Curve:
    """Precision-recall curve: recall (x) against precision (y)."""
    labels, scores = _check(labels, scores)
    tp, fp, thresholds = _cumulative_counts(labels, scores)
    return Curve(x=tp / labels.sum(), y=tp / (tp + fp), thresholds=thresholds)


def average_precision(labels: np.ndarray, scores: np.ndarray) -> float:
    """Average precision: sum over thresholds of (recall increase) x precision.

    The step-wise definition (no interpolation), as in scikit-learn.
    """
    curve = pr_curve(labels, scores)
    return float(np.sum(np.diff(np.r_[0.0, curve.x]) * curve.y))


def f1_at(labels: np.ndarray, scores: np.ndarray, threshold: float) -> float:
    """F1 of the verdict ``score > threshold`` against binary labels."""
    labels = np.asarray(labels).ravel().astype(bool)
    predicted = np.asarray(scores).ravel() > threshold
    tp = int((predicted & labels).sum())
    fp = int((predicted & ~labels).sum())
    fn = int((~predicted & labels).sum())
    return 2 * tp / (2 * tp + fp + fn) if tp else 0.0


def best_f1(labels: np.ndarray, scores: np.ndarray) -> tuple[float, float]:
    """The best F1 over all thresholds and the threshold reaching it.

    Returns:
        ``(f1, threshold)`` where the verdict is ``score >= threshold``.
    """
    labels, scores = _check(labels, scores)
    tp, fp, thresholds = _cumulative_counts(labels, scores)
    # From counts, not from precision and recall: where the top scores are all defect-free,
    # both are 0 and their harmonic mean would divide 0 by 0.
    fn = labels.sum() - tp
    f1 = 2 * tp / (2 * tp + fp + fn)
    best = int(np.argmax(f1))
    return float(f1[best]), float(thresholds[best])


class RankedPixels:
    """The pixels of many maps, sorted once, for pixel AUROC and AUPRO of any set of images.

    Sorting is what pixel metrics cost: tens of millions of pixels at the photos' native
    size. Per-class metrics use the images of one class and the defect-free ones; their
    pixels keep the order of all pixels, so :meth:`select` serves every such subset from
    the one sort.

    Args:
        masks: Ground truth: ``(N, H, W)`` booleans, or a list of ``(H_i, W_i)`` masks.
        maps: Anomaly maps of the same shapes (float32 stays float32).

    Raises:
        ValueError: Shapes differ.
    """

    def __init__(
        self,
        masks: Sequence[np.ndarray] | np.ndarray,
        maps: Sequence[np.ndarray] | np.ndarray,
    ) -> None:
        masks = [np.asarray(m, dtype=bool) for m in masks]
        maps = [np.asarray(m) for m in maps]
        if (
            not masks
            or len(masks) != len(maps)
            or any(a.shape != b.shape or a.ndim != 2 for a, b in zip(masks, maps, strict=False))
        ):
            raise ValueError("masks and maps must be equally many 2-D arrays of equal shapes")
        self._sizes = np.array([m.size for m in masks], dtype=np.int64)
        self._defects = np.array([m.sum() for m in masks], dtype=np.int64)
        self._labels = np.concatenate([m.ravel() for m in masks])
        # Each defective pixel carries 1 / (size of its connected region), so that summed
        # over a region's pixels above a threshold it gives that region's overlap.
        inverse, self._regions = [], np.zeros(len(masks), dtype=np.int64)
        for k, mask in enumerate(masks):
            regions, self._regions[k] = ndimage.label(mask)
            size = np.bincount(regions.ravel()).astype(np.float32)
            inverse.append(np.where(regions > 0, 1.0 / size[regions], 0.0).astype(np.float32))
        self._inverse_size = np.concatenate([a.ravel() for a in inverse])
        scores = np.concatenate([m.ravel() for m in maps])
        if not np.issubdtype(scores.dtype, np.floating):
            scores = scores.astype(np.float64)
        # Ties need no stable sort: every curve point is taken at the end of a run of equal
        # scores. int32 indices halve the memory of the order below 2**31 pixels.
        order = np.argsort(-scores)
        self._order = order.astype(np.int32) if scores.size < 2**31 else order
        self._sorted = scores[self._order]

    def select(self, images: np.ndarray) -> RankedPixels:
        """The pixels of some of the images, in the same order, without sorting again.

        Args:
            images: Booleans, one per image.
        """
        pick = np.asarray(images, dtype=bool)
        if pick.all():
            return self
        keep = np.repeat(pick, self._sizes)[self._order]
        subset = copy.copy(self)
        subset._order, subset._sorted = self._order[keep], self._sorted[keep]
        subset._sizes, subset._defects = self._sizes[pick], self._defects[pick]
        subset._regions = self._regions[pick]
        subset.__dict__.pop("_runs", None)
        return subset

    @property
    def has_both(self) -> bool:
        """Whether there are defective and defect-free pixels (both metrics need them)."""
        return 0 < int(self._defects.sum()) < int(self._sizes.sum())

    @functools.cached_property
    def _runs(self) -> tuple[np.ndarray, np.ndarray]:
        """The end of each run of equal scores and the defective pixels up to it."""
        last = _run_ends(self._sorted)
        return last, np.cumsum(self._labels[self._order], dtype=np.int64)[last]

    def auroc(self) -> float:
        """Pixel AUROC, ties counted half.

        Raises:
            ValueError: Only one class of pixels.
        """
        if not self.has_both:
            raise ValueError("this metric needs both defect-free and defective examples")
        last, tp = self._runs
        tp, fp = np.r_[0, tp], np.r_[0, last + 1 - tp]
        # The trapezoid over a run of ties is its half-counted pairs (Mann-Whitney).
        return float(np.trapezoid(tp / tp[-1], fp / fp[-1]))

    def aupro(self, *, fpr_limit: float = 0.3) -> float:
        """AUPRO up to ``fpr_limit``; see :func:`aupro`.

        Raises:
            ValueError: ``fpr_limit`` out of range, or no region or no defect-free pixel.
        """
        if not 0 < fpr_limit <= 1:
            raise ValueError(f"fpr_limit must be in (0, 1], got {fpr_limit!r}")
        n_regions = int(self._regions.sum())
        n_ok = int(self._sizes.sum() - self._defects.sum())
        if n_regions == 0 or n_ok == 0:
            raise ValueError("AUPRO needs at least one defect region and one defect-free pixel")
        last, tp = self._runs
        fpr = (last + 1 - tp) / n_ok
        pro = np.cumsum(self._inverse_size[self._order], dtype=np.float64)[last] / n_regions
        fpr = np.minimum(np.r_[0.0, fpr], 1.0)
        pro = np.minimum(np.r_[0.0, pro], 1.0)
        inside = fpr <= fpr_limit
        x, y = fpr[inside], pro[inside]
        if x[-1] < fpr_limit:
            j = int(np.searchsorted(fpr, fpr_limit))
            if j < fpr.size:
                t = (fpr_limit - fpr[j - 1]) / (fpr[j] - fpr[j - 1])
                x = np.r_[x, fpr_limit]
                y = np.r_[y, pro[j - 1] + t * (pro[j] - pro[j - 1])]
        return float(np.trapezoid(y, x) / fpr_limit)


def aupro(
    masks: Sequence[np.ndarray] | np.ndarray,
    maps: Sequence[np.ndarray] | np.ndarray,
    *,
    fpr_limit: float = 0.3,
) -> float:
    """Normalised area under the per-region-overlap curve up to a false-positive rate.

    As defined with the MVTec AD benchmark (Bergmann et al., IJCV 2021): every connected
    ground-truth region counts equally whatever its size. For each threshold, PRO is the
    mean over regions of the fraction of the region's pixels above the threshold, and FPR is
    the fraction of all defect-free pixels above it. The PRO-over-FPR curve is integrated
    from 0 to ``fpr_limit`` (trapezoids, interpolated at the limit) and divided by
    ``fpr_limit``, so a perfect detector scores 1.

    Args:
        masks: Ground truth: ``(N, H, W)`` booleans, or a list of ``(H_i, W_i)`` masks.
        maps: Anomaly maps of the same shapes.
        fpr_limit: Upper end of the integration, in ``(0, 1]``.

    Returns:
        AUPRO in ``[0, 1]``.

    Raises:
        ValueError: Shapes differ, no defect region, or no defect-free pixel.
    """
    return RankedPixels(masks, maps).aupro(fpr_limit=fpr_limit)
