"""The detection metrics the field reports: AUROC, average precision, F1, AUPRO."""

from __future__ import annotations

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
    ordered = scores[order]
    return order, np.r_[np.nonzero(np.diff(ordered))[0], ordered.size - 1]


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
    if not 0 < fpr_limit <= 1:
        raise ValueError(f"fpr_limit must be in (0, 1], got {fpr_limit!r}")
    masks = [np.asarray(m, dtype=bool) for m in masks]
    maps = [np.asarray(m, dtype=np.float64) for m in maps]
    if len(masks) != len(maps) or any(
        a.shape != b.shape or a.ndim != 2 for a, b in zip(masks, maps, strict=False)
    ):
        raise ValueError("masks and maps must be equally many 2-D arrays of equal shapes")
    labelled = [ndimage.label(m) for m in masks]
    n_regions = sum(count for _, count in labelled)
    flat_masks = np.concatenate([m.ravel() for m in masks])
    n_ok = int((~flat_masks).sum())
    if n_regions == 0 or n_ok == 0:
        raise ValueError("AUPRO needs at least one defect region and one defect-free pixel")
    # Per pixel: how much it raises the FPR (defect-free pixels) and the PRO (region pixels,
    # weighted by 1 / (regions x region size)) once the threshold drops below its score.
    pro_step = []
    for regions, _ in labelled:
        sizes = np.bincount(regions.ravel())
        weights = 1.0 / (n_regions * sizes[regions].astype(np.float64))
        pro_step.append(np.where(regions > 0, weights, 0.0).ravel())
    fpr_step = np.where(flat_masks, 0.0, 1.0 / n_ok)
    order, last = _descending_runs(np.concatenate([m.ravel() for m in maps]))
    fpr = np.cumsum(fpr_step[order])
    pro = np.cumsum(np.concatenate(pro_step)[order])
    fpr = np.minimum(np.r_[0.0, fpr[last]], 1.0)
    pro = np.minimum(np.r_[0.0, pro[last]], 1.0)
    inside = fpr <= fpr_limit
    x, y = fpr[inside], pro[inside]
    if x[-1] < fpr_limit:
        j = int(np.searchsorted(fpr, fpr_limit))
        if j < fpr.size:
            t = (fpr_limit - fpr[j - 1]) / (fpr[j] - fpr[j - 1])
            x = np.r_[x, fpr_limit]
            y = np.r_[y, pro[j - 1] + t * (pro[j] - pro[j - 1])]
    return float(np.trapezoid(y, x) / fpr_limit)
