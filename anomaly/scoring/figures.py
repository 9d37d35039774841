"""Pictures: sample grids, heatmaps, overlays, ROC/PR curves and score histograms."""

from __future__ import annotations

import io
import os
import zlib
from collections.abc import Sequence

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure
from PIL import Image
from scipy import ndimage
from skimage import segmentation

from anomaly.io import atomic_open
from anomaly.scoring.metrics import auroc, average_precision, pr_curve, roc_curve


def sample_grid(
    images: Sequence[np.ndarray],
    recons: Sequence[np.ndarray],
    maps: Sequence[np.ndarray],
    *,
    pixel_threshold: float | None,
    titles: list[str] | None = None,
    true_masks: Sequence[np.ndarray] | None = None,
) -> Figure:
    """One row per image: input, reconstruction, error map, predicted defects overlaid.

    A model without reconstructions (``recons`` empty: it compares in feature space)
    gets no reconstruction column.

    Args:
        images: ``(C, H, W)`` arrays in ``[0, 1]`` (sizes may differ between rows).
        recons: Reconstructions, same shapes; empty for none.
        maps: Anomaly maps ``(H, W)``.
        pixel_threshold: Map values above it are drawn as defect (red); None (during
            training, before calibration) draws no predicted defects.
        titles: One label per row (e.g. defect class and score).
        true_masks: Ground truth ``(H, W)``; drawn as a green contour when given.

    Returns:
        The figure.
    """
    n = max(1, len(images))
    # Figure() without pyplot: no global backend or figure registry to manage.
    fig = Figure(figsize=(8, 2.1 * n))
    columns = 4 if len(recons) else 3
    axes = fig.subplots(n, columns, squeeze=False)
    vmax = max([float(m.max()) for m in maps] + [pixel_threshold or 0.0]) or 1.0
    for i in range(len(images)):
        image = _display(images[i])
        predicted = maps[i] > pixel_threshold if pixel_threshold is not None else maps[i] < 0
        overlay = np.repeat(image[..., None], 3, axis=-1) if image.ndim == 2 else image.copy()
        overlay[predicted] = 0.5 * overlay[predicted] + 0.5 * np.array([1.0, 0.0, 0.0])
        panels = [
            (image, "input", "gray"),
            *([(_display(recons[i]), "reconstruction", "gray")] if len(recons) else []),
            (maps[i], "error map", "inferno"),
            (overlay, "defects", None),
        ]
        for ax, (panel, name, cmap) in zip(axes[i], panels, strict=True):
            kwargs = {"vmin": 0.0, "vmax": vmax} if name == "error map" else {"vmin": 0, "vmax": 1}
            ax.imshow(panel, cmap=cmap, **kwargs)
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(name, fontsize=9)
        if true_masks is not None and true_masks[i].any():
            axes[i][-1].contour(true_masks[i], levels=[0.5], colors="lime", linewidths=0.8)
        if titles:
            axes[i][0].set_ylabel(titles[i], fontsize=7)
    fig.tight_layout()
    return fig


def _display(image: np.ndarray) -> np.ndarray:
    """``(C, H, W)`` to something imshow draws: ``(H, W)`` gray or ``(H, W, 3)``."""
    return image[0] if image.shape[0] == 1 else np.transpose(image, (1, 2, 0))


def save_figure(fig: Figure, path: str | os.PathLike[str]) -> None:
    """Save a figure as PNG, atomically."""
    with atomic_open(path, "wb") as handle:
        fig.savefig(handle, format="png", dpi=90)


_INFERNO = colormaps["inferno"](np.arange(256), bytes=True)[:, :3]


def heatmap_png(score_map: np.ndarray, pixel_threshold: float) -> bytes:
    """A colour-mapped error map as PNG bytes.

    The colour scale runs from 0 to twice the pixel threshold (the threshold sits at the
    middle of the ``inferno`` map), so heatmaps of different images compare by colour.

    Args:
        score_map: ``(H, W)`` anomaly map.
        pixel_threshold: The calibrated pixel threshold.
    """
    scale = 2.0 * pixel_threshold if pixel_threshold > 0 else float(score_map.max() or 1.0)
    # The colour map's own 256 colours as a palette, indexed as matplotlib indexes them:
    # the same pixels as colormap(x) in RGB, a third of the bytes to compress (4x faster).
    values = np.clip(score_map / scale, 0.0, 1.0)
    index = np.minimum((values * _INFERNO.shape[0]).astype(np.int32), _INFERNO.shape[0] - 1)
    image = Image.fromarray(index.astype(np.uint8), mode="L").convert("P")
    image.putpalette(_INFERNO.tobytes())
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


# The palette of outlined gray overlays: gray levels 0-254, then red.
_RED = 255
_GRAY_AND_RED = bytes(v for g in range(_RED) for v in (g, g, g)) + bytes((255, 0, 0))


def overlay_png(image: np.ndarray, labels: np.ndarray) -> bytes:
    """The image with the outline of each defect region drawn in red, as PNG bytes.

    Args:
        image: ``(H, W, C)`` uint8 original image (C = 1 or 3).
        labels: ``(H, W)`` region labels (0 = background), same size.
    """
    outlined = labels.any()
    gray = image.shape[-1] == 1
    if not outlined and gray:
        return png_bytes(image[..., 0], photo=True)  # nothing to draw: the gray photo
    # A gray photo is drawn on in a palette of its own gray levels and red: a third of the
    # bytes of RGB to compress (a 1012x398 photo 17 -> 5 ms). Its white (255) turns 254,
    # which frees the last palette entry for the outlines.
    rgb = np.minimum(image[..., 0], _RED - 1) if gray else image.copy()
    if outlined:
        # Thicker outlines on large photos, so they stay visible when viewed scaled down.
        width = max(1, round(max(labels.shape) / 400))
        # Only around the regions: the outlines are the same, at a fraction of the cost.
        rows, cols = np.nonzero(labels.any(axis=1))[0], np.nonzero(labels.any(axis=0))[0]
        margin = width + 1
        r0, r1 = max(rows[0] - margin, 0), min(rows[-1] + margin + 1, labels.shape[0])
        c0, c1 = max(cols[0] - margin, 0), min(cols[-1] + margin + 1, labels.shape[1])
        edges = segmentation.find_boundaries(labels[r0:r1, c0:c1], mode="outer")
        if width > 1:
            edges = ndimage.binary_dilation(edges, iterations=width - 1)
        rgb[r0:r1, c0:c1][edges] = _RED if gray else (255, 0, 0)
    if not gray:
        return png_bytes(rgb)
    indexed = Image.fromarray(rgb, mode="L").convert("P")
    indexed.putpalette(_GRAY_AND_RED)
    buffer = io.BytesIO()
    indexed.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def png_bytes(array: np.ndarray, *, photo: bool = False) -> bytes:
    """Encode a uint8 ``(H, W)`` or ``(H, W, 3)`` array as PNG.

    Compression level 1: several times faster than Pillow's default 6, and the files stay
    small because masks, heatmaps and overlays have large flat areas. ``photo``: a gray
    photo, whose noise leaves the compressor few repeats to find, so it only Huffman-codes
    (KolektorSDD's 1012x398 photos: 9.0 -> 7.0 ms and 197 -> 172 KiB; colour photos lose
    the repeats of their equal channels that way, so it is for gray ones).
    """
    buffer = io.BytesIO()
    # Pillow passes ``compress_type`` on to zlib as its strategy.
    options = {"compress_type": zlib.Z_HUFFMAN_ONLY} if photo and array.ndim == 2 else {}
    Image.fromarray(array).save(buffer, format="PNG", compress_level=1, **options)
    return buffer.getvalue()


def curves_figure(labels: np.ndarray, scores: np.ndarray, *, threshold: float | None) -> Figure:
    """ROC and precision-recall curves of image scores, with the operating point marked.

    Args:
        labels: 1 = defective.
        scores: Image scores.
        threshold: The calibrated image threshold (marked on both curves), or None.
    """
    roc, pr = roc_curve(labels, scores), pr_curve(labels, scores)
    fig = Figure(figsize=(9, 4))
    ax_roc, ax_pr = fig.subplots(1, 2)
    ax_roc.plot(roc.x, roc.y, color="C0")
    ax_roc.plot([0, 1], [0, 1], color="0.7", linestyle="--", linewidth=0.8)
    ax_roc.set(
        xlabel="false-positive rate",
        ylabel="true-positive rate",
        title=f"ROC (AUROC {auroc(labels, scores):.3f})",
        xlim=(0, 1),
        ylim=(0, 1.02),
    )
    ax_pr.plot(pr.x, pr.y, color="C1")
    ax_pr.set(
        xlabel="recall",
        ylabel="precision",
        title=f"precision-recall (AP {average_precision(labels, scores):.3f})",
        xlim=(0, 1),
        ylim=(0, 1.02),
    )
    if threshold is not None:
        labels_b = np.asarray(labels, bool)
        flagged = np.asarray(scores) > threshold
        tpr = (flagged & labels_b).sum() / labels_b.sum()
        fpr = (flagged & ~labels_b).sum() / (~labels_b).sum()
        precision = (flagged & labels_b).sum() / max(1, flagged.sum())
        ax_roc.plot(fpr, tpr, "o", color="C3", label="calibrated threshold")
        ax_pr.plot(tpr, precision, "o", color="C3", label="calibrated threshold")
        ax_roc.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return fig


def histogram_figure(labels: np.ndarray, scores: np.ndarray, *, threshold: float | None) -> Figure:
    """Histogram of defect-free and defective image scores with the threshold line."""
    labels = np.asarray(labels, bool)
    scores = np.asarray(scores, dtype=float)
    fig = Figure(figsize=(6, 3.5))
    ax = fig.subplots()
    bins = np.histogram_bin_edges(scores, bins=40)
    ax.hist(scores[~labels], bins=bins, alpha=0.6, color="C0", label="defect-free")
    ax.hist(scores[labels], bins=bins, alpha=0.6, color="C3", label="defective")
    if threshold is not None:
        ax.axvline(
            threshold, color="k", linestyle="--", linewidth=1, label=f"threshold {threshold:.4g}"
        )
    ax.set(xlabel="image score", ylabel="images", title="image scores")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
