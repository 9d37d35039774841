"""Shared fixtures: small, real image files made on the fly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image


def write_png(path: Path, array: np.ndarray) -> Path:
    """Write a float [0, 1] or uint8 array as an 8-bit PNG."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if array.dtype != np.uint8:
        array = np.round(np.clip(array, 0, 1) * 255).astype(np.uint8)
    Image.fromarray(array).save(path)
    return path


def stripes(size: int, rng: np.random.Generator) -> np.ndarray:
    """A defect-free 'part': horizontal stripes with a random phase and mild noise."""
    phase = rng.uniform(0, 2 * np.pi)
    rows = 0.5 + 0.3 * np.sin(np.arange(size) / 3.0 + phase)
    image = np.repeat(rows[:, None], size, axis=1)
    return np.clip(image + rng.normal(0, 0.02, (size, size)), 0, 1)


@pytest.fixture
def tiny_mvtec(tmp_path: Path) -> Path:
    """A 32x32 MVTec-style tree: 12 good training images, 3 good and 3 defective tests."""
    rng = np.random.default_rng(0)
    root = tmp_path / "tiny"
    for i in range(12):
        write_png(root / "train" / "good" / f"{i:03d}.png", stripes(32, rng))
    for i in range(3):
        write_png(root / "test" / "good" / f"{i:03d}.png", stripes(32, rng))
        image = stripes(32, rng)
        mask = np.zeros((32, 32), dtype=bool)
        mask[10:18, 12:20] = True
        image[mask] = 1.0
        write_png(root / "test" / "spot" / f"{i:03d}.png", image)
        write_png(root / "ground_truth" / "spot" / f"{i:03d}_mask.png", mask.astype(np.uint8) * 255)
    return root
