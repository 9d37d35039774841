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


def test_heatmap_palette_gives_the_colour_maps_colours():
    """The palette PNG decodes to exactly matplotlib's inferno colours of the same map."""
    import io

    from matplotlib import colormaps
    from PIL import Image

    from anomaly.scoring.figures import heatmap_png

    rng = np.random.default_rng(3)
    for dtype in (np.float32, np.float64):
        score_map = rng.gamma(2.0, 0.4, (37, 53)).astype(dtype)
        score_map[0, :3] = [0.0, 1.0, 2.0]  # the scale's ends, and past it
        expected = colormaps["inferno"](np.clip(score_map / 2.0, 0.0, 1.0), bytes=True)[..., :3]
        with Image.open(io.BytesIO(heatmap_png(score_map, 1.0))) as image:
            assert np.array_equal(np.asarray(image.convert("RGB")), expected)


def test_overlay_outlines_equal_the_whole_image_computation():
    """Outlines found around the regions only are those of the whole image."""
    import io

    from PIL import Image
    from scipy import ndimage
    from skimage import measure, segmentation

    from anomaly.scoring.figures import overlay_png

    rng = np.random.default_rng(4)
    for _ in range(40):
        h, w = rng.integers(5, 900), rng.integers(5, 700)
        image = rng.integers(0, 255, (h, w, int(rng.choice([1, 3]))), dtype=np.uint8)
        blobs = ndimage.gaussian_filter(rng.normal(size=(h, w)), 3) > rng.uniform(0.05, 0.3)
        blobs[: int(rng.integers(0, 3)), :] = True  # sometimes touching the border
        labels = measure.label(blobs)
        gray = image.shape[-1] == 1
        expected = np.repeat(image, 3, axis=-1) if gray else image.copy()
        if labels.any():
            if gray:  # white gives its palette entry to the outlines' red
                expected = np.minimum(expected, 254)
            edges = segmentation.find_boundaries(labels, mode="outer")
            width = max(1, round(max(h, w) / 400))
            if width > 1:
                edges = ndimage.binary_dilation(edges, iterations=width - 1)
            expected[edges] = (255, 0, 0)
        with Image.open(io.BytesIO(overlay_png(image, labels))) as got:
            assert got.mode == ("P" if gray and labels.any() else "L" if gray else "RGB")
            assert np.array_equal(np.asarray(got.convert("RGB")), expected)
