"""Figures a reviewer looks at: input, reconstruction, error map, defect overlay."""

from __future__ import annotations

import os

import numpy as np
from matplotlib.figure import Figure

from anomaly.io import atomic_open


def sample_grid(
    images: np.ndarray,
    recons: np.ndarray,
    maps: np.ndarray,
    *,
    pixel_threshold: float,
    titles: list[str] | None = None,
    true_masks: np.ndarray | None = None,
) -> Figure:
    """One row per image: input, reconstruction, error map, predicted defects overlaid.

    Args:
        images: ``(N, C, H, W)`` in ``[0, 1]``.
        recons: Reconstructions, same shape.
        maps: Anomaly maps ``(N, H, W)``.
        pixel_threshold: Map values above it are drawn as defect (red).
        titles: One label per row (e.g. file name and score).
        true_masks: Ground truth ``(N, H, W)``; drawn as a green contour when given.

    Returns:
        The figure.
    """
    n = images.shape[0]
    # Figure() without pyplot: no global backend or figure registry to manage.
    fig = Figure(figsize=(8, 2.1 * n))
    axes = fig.subplots(n, 4, squeeze=False)
    vmax = max(float(maps.max()), pixel_threshold) if maps.size else 1.0
    for i in range(n):
        image = _display(images[i])
        predicted = maps[i] > pixel_threshold
        overlay = np.repeat(image[..., None], 3, axis=-1) if image.ndim == 2 else image.copy()
        overlay[predicted] = 0.5 * overlay[predicted] + 0.5 * np.array([1.0, 0.0, 0.0])
        panels = [
            (image, "input", "gray"),
            (_display(recons[i]), "reconstruction", "gray"),
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
            axes[i][3].contour(true_masks[i], levels=[0.5], colors="lime", linewidths=0.8)
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
