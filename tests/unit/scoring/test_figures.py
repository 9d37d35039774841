"""The sample grid drawn during training and evaluation."""

from __future__ import annotations

import numpy as np

from anomaly.scoring.figures import sample_grid


def _rows(n: int) -> tuple[list, list]:
    rng = np.random.default_rng(0)
    return [rng.random((1, 16, 24)) for _ in range(n)], [rng.random((16, 24)) for _ in range(n)]


def test_a_reconstruction_model_gets_four_columns():
    images, maps = _rows(2)
    fig = sample_grid(images, images, maps, pixel_threshold=0.5)
    titles = [ax.get_title() for ax in fig.axes[:4]]
    assert len(fig.axes) == 8 and titles == ["input", "reconstruction", "error map", "defects"]


def test_a_feature_model_gets_no_reconstruction_column_and_keeps_the_true_outline():
    images, maps = _rows(2)
    masks = [np.zeros((16, 24), bool), np.zeros((16, 24), bool)]
    masks[1][4:9, 5:12] = True
    fig = sample_grid(images, [], maps, pixel_threshold=0.5, true_masks=masks)
    assert len(fig.axes) == 6
    assert [ax.get_title() for ax in fig.axes[:3]] == ["input", "error map", "defects"]
    # The outline of the true defect is drawn on the last column of its row only.
    assert fig.axes[5].collections and not fig.axes[2].collections
