import warnings

import numpy as np
import pytest
from sklearn.metrics import f1_score, roc_auc_score

from anomaly.scoring.metrics import (
    RankedPixels,
    aupro,
    auroc,
    average_precision,
    best_f1,
    f1_at,
    roc_curve,
)


def test_auroc_hand_worked():
    # Positives 0.8 and 0.4, negatives 0.5 and 0.1: pairs won 3 of 4 -> 0.75.
    assert auroc(np.array([1, 1, 0, 0]), np.array([0.8, 0.4, 0.5, 0.1])) == 0.75


def test_auroc_ties_count_half():
    assert auroc(np.array([1, 0]), np.array([0.5, 0.5])) == 0.5


def test_auroc_matches_sklearn_with_ties():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 5000)
    scores = np.round(rng.normal(labels * 0.7, 1.0), 1)  # rounding makes many ties
    assert auroc(labels, scores) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)


def test_auroc_needs_both_classes():
    with pytest.raises(ValueError, match="both"):
        auroc(np.zeros(4), np.arange(4.0))


def test_f1_matches_sklearn():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, 200)
    scores = rng.random(200) + labels * 0.3
    assert f1_at(labels, scores, 0.6) == pytest.approx(f1_score(labels, scores > 0.6))


def test_average_precision_and_best_f1_match_sklearn():
    from sklearn.metrics import average_precision_score, precision_recall_curve

    rng = np.random.default_rng(2)
    labels = rng.integers(0, 2, 800)
    scores = np.round(rng.normal(labels * 0.8, 1.0), 1)
    assert average_precision(labels, scores) == pytest.approx(
        average_precision_score(labels, scores), abs=1e-12
    )
    precision, recall, _ = precision_recall_curve(labels, scores)
    f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0)
    best, threshold = best_f1(labels, scores)
    assert best == pytest.approx(f1.max())
    assert f1_at(labels, scores, np.nextafter(threshold, -np.inf)) == pytest.approx(best)


def test_best_f1_hand_worked_when_a_defect_free_image_scores_highest():
    # Thresholds 0.9 / 0.8 / 0.7 / 0.1 give F1 0 / 2/4 / 4/5 / 4/6: the best is 0.8 at 0.7.
    # At 0.9 precision and recall are both 0; that must not warn (0/0) in evaluation logs.
    labels = np.array([0, 1, 1, 0])
    scores = np.array([0.9, 0.8, 0.7, 0.1])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        best, threshold = best_f1(labels, scores)
    assert best == pytest.approx(0.8)
    assert threshold == 0.7


def test_roc_curve_matches_sklearn():
    from sklearn.metrics import roc_curve as sk_roc

    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2, 300)
    scores = np.round(rng.random(300) + labels * 0.3, 2)
    fpr, tpr, _ = sk_roc(labels, scores, drop_intermediate=False)
    ours = roc_curve(labels, scores)
    assert np.allclose(ours.x, fpr) and np.allclose(ours.y, tpr)


def test_aupro_hand_worked():
    # One 2-pixel region; scores 0.9 and 0.1 inside it, 0.5 on one of 8 good pixels.
    # Curve: (0,0) (0,.5) (.125,.5) (.125,1) (1,1). Area to 0.3: .125*.5 + .175*1 = .2375.
    masks = np.zeros((1, 2, 5), bool)
    masks[0, 0, :2] = True
    maps = np.zeros((1, 2, 5))
    maps[0, 0, :3] = [0.9, 0.1, 0.5]
    assert aupro(masks, maps) == pytest.approx(0.2375 / 0.3)


def test_aupro_counts_every_region_equally():
    # A big region found and a small one missed: PRO is 0.5 whatever the sizes.
    masks = np.zeros((1, 10, 10), bool)
    masks[0, :4, :4] = True  # 16 px, found
    masks[0, 8, 8] = True  # 1 px, missed
    maps = np.where(masks, 0.0, 0.1)
    maps[0, :4, :4] = 1.0
    # At 1.0: FPR 0, PRO 0.5. At 0.1 every good pixel: FPR 1, PRO still 0.5 (the small
    # region scores 0). So PRO is 0.5 over the whole integration range.
    assert aupro(masks, maps) == pytest.approx(0.5)


def _brute_force_aupro(masks, maps, limit=0.3):
    from scipy import ndimage

    regions = []
    for m in masks:
        labelled, count = ndimage.label(m)
        regions.append([labelled == k for k in range(1, count + 1)])
    thresholds = np.unique(np.concatenate([m.ravel() for m in maps]))[::-1]
    good = np.concatenate([~m.ravel() for m in masks])
    fprs, pros = [0.0], [0.0]
    for t in thresholds:
        above = [m >= t for m in maps]
        fprs.append(np.concatenate([a.ravel() for a in above])[good].mean())
        overlaps = [above[i][r].mean() for i, rs in enumerate(regions) for r in rs]
        pros.append(np.mean(overlaps))
    fprs, pros = np.array(fprs), np.array(pros)
    grid = np.linspace(0, limit, 20001)
    return np.trapezoid(np.interp(grid, fprs, pros), grid) / limit


def test_aupro_matches_a_brute_force_reference():
    rng = np.random.default_rng(4)
    masks = np.zeros((3, 12, 12), bool)
    masks[0, 2:5, 2:6] = True
    masks[1, 7:11, 1:3] = True
    masks[1, 0:2, 9:12] = True
    maps = np.round(rng.random(masks.shape) + masks * 0.4, 2)
    assert aupro(masks, maps) == pytest.approx(_brute_force_aupro(masks, maps), abs=2e-4)
    assert aupro(masks, masks.astype(float)) == pytest.approx(1.0)


def test_ranked_pixels_give_every_subsets_metrics_from_one_sort():
    rng = np.random.default_rng(7)
    shapes = [(12, 12), (9, 15), (14, 10), (12, 12), (10, 11)]
    masks = [np.zeros(shape, bool) for shape in shapes]
    masks[0][2:5, 2:6] = True
    masks[2][7:11, 1:3] = True
    masks[2][0:2, 6:10] = True
    masks[4][3:6, 4:9] = True  # masks 1 and 3 are defect-free images
    # float32 with rounding: many ties, as in real probability maps.
    maps = [np.round(rng.random(m.shape) + m * 0.3, 1).astype(np.float32) for m in masks]
    ranked = RankedPixels(masks, maps)
    for pick in ([1, 1, 1, 1, 1], [1, 1, 0, 1, 0], [0, 1, 1, 1, 0], [0, 0, 0, 1, 1]):
        chosen = [i for i, p in enumerate(pick) if p]
        labels = np.concatenate([masks[i].ravel() for i in chosen])
        scores = np.concatenate([maps[i].ravel() for i in chosen])
        pixels = ranked.select(np.array(pick, bool))
        assert pixels.auroc() == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
        expected = _brute_force_aupro([masks[i] for i in chosen], [maps[i] for i in chosen])
        assert pixels.aupro() == pytest.approx(expected, abs=2e-4)
    assert ranked.auroc() == pytest.approx(
        auroc(np.concatenate([m.ravel() for m in masks]), np.concatenate([m.ravel() for m in maps]))
    )


def test_ranked_pixels_say_when_a_subset_has_one_class_only():
    masks = [np.zeros((4, 4), bool), np.ones((4, 4), bool), np.zeros((4, 4), bool)]
    masks[2][1, 1] = True
    ranked = RankedPixels(masks, [np.zeros((4, 4))] * 3)
    assert ranked.has_both
    assert not ranked.select(np.array([True, False, False])).has_both
    assert not ranked.select(np.array([False, True, False])).has_both
    with pytest.raises(ValueError, match="both"):
        ranked.select(np.array([True, False, False])).auroc()
    with pytest.raises(ValueError, match="masks and maps"):
        RankedPixels(masks, [np.zeros((4, 5))] * 3)


def test_by_class_groups_metric_names():
    from anomaly.scoring.metrics import by_class

    grouped = by_class({"image_auroc": 0.9, "image_auroc/crack": 0.8, "pixel_aupro/crack": 0.5})
    assert grouped == {
        "all": {"image_auroc": 0.9},
        "crack": {"image_auroc": 0.8, "pixel_aupro": 0.5},
    }
