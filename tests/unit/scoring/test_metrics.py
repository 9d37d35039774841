import numpy as np
import pytest
from sklearn.metrics import f1_score, roc_auc_score

from anomaly.scoring.metrics import auroc, f1_at


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
