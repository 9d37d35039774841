"""The embedded demo data set: textures that ship inside scikit-image, with drawn defects.

Deterministic for a given seed and needs no download. Defect-free crops of a texture
(``brick`` by default, also ``grass`` and ``gravel``) form ``train/good`` and
``test/good``; test crops with drawn-in scratches, cracks, blobs and stains form the
defect classes, with exact masks, in the MVTec layout::

    root/train/good, root/test/{good,scratch,crack,blob,stain},
    root/ground_truth/<class>/<stem>_mask.png
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage
from skimage import data as skdata
from skimage import draw

from anomaly.errors import ConfigError
from anomaly.io import atomic_open, write_json_atomic

log = logging.getLogger(__name__)

TEXTURES = ("brick", "grass", "gravel")
DEFECT_CLASSES = ("scratch", "crack", "blob", "stain")
_MANIFEST = "demo.json"

Defect = Callable[[np.ndarray, np.random.Generator], tuple[np.ndarray, np.ndarray]]


def make_demo_dataset(
    root: str | os.PathLike[str],
    *,
    texture: str = "brick",
    size: int = 128,
    n_train: int = 200,
    n_test_good: int = 30,
    n_test_per_class: int = 15,
    seed: int = 0,
) -> Path:
    """Generate the demo data set under ``root`` unless an identical one is already there.

    Args:
        root: Output folder (created).
        texture: ``brick``, ``grass`` or ``gravel`` (scikit-image's bundled textures).
        size: Side of the square crops in pixels (at most 512).
        n_train: Defect-free training images.
        n_test_good: Defect-free test images.
        n_test_per_class: Defective test images per defect class.
        seed: Seed; the same arguments always give byte-identical files.

    Returns:
        The data root.

    Raises:
        ConfigError: Unknown texture or a size the texture cannot provide.
    """
    if texture not in TEXTURES:
        raise ConfigError(f"demo texture {texture!r} is unknown; choose one of {TEXTURES}")
    if not 16 <= size <= 512:
        raise ConfigError(f"demo size must be between 16 and 512 pixels, got {size}")
    root = Path(root)
    settings = {
        "texture": texture,
        "size": size,
        "n_train": n_train,
        "n_test_good": n_test_good,
        "n_test_per_class": n_test_per_class,
        "seed": seed,
        "version": 1,
    }
    manifest = root / _MANIFEST
    if _read_manifest(manifest) == settings:
        log.info("demo data already present in %s", root)
        return root

    source = getattr(skdata, texture)().astype(np.float32) / 255.0
    rng = np.random.default_rng(seed)
    for i in range(n_train):
        _save_png(root / "train" / "good" / f"{i:03d}.png", _crop(source, size, rng))
    for i in range(n_test_good):
        _save_png(root / "test" / "good" / f"{i:03d}.png", _crop(source, size, rng))
    for name in DEFECT_CLASSES:
        for i in range(n_test_per_class):
            image, mask = _DEFECTS[name](_crop(source, size, rng), rng)
            _save_png(root / "test" / name / f"{i:03d}.png", image)
            _save_png(root / "ground_truth" / name / f"{i:03d}_mask.png", mask.astype(np.float32))
    # The manifest is written last: its presence means the whole set is complete.
    write_json_atomic(manifest, settings)
    log.info("demo data written to %s", root)
    return root


def _read_manifest(path: Path) -> dict[str, object] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _crop(source: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    y, x = rng.integers(0, source.shape[0] - size + 1), rng.integers(0, source.shape[1] - size + 1)
    crop = source[y : y + size, x : x + size]
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    # Small global brightness jitter, as between photos of a real line.
    return np.clip(crop * rng.uniform(0.95, 1.05), 0.0, 1.0)


def _save_png(path: Path, image: np.ndarray) -> None:
    pixels = np.round(np.clip(image, 0.0, 1.0) * 255).astype(np.uint8)
    with atomic_open(path, "wb") as handle:
        Image.fromarray(pixels).save(handle, format="PNG")


def _thick(mask: np.ndarray, width: int) -> np.ndarray:
    return ndimage.binary_dilation(mask, iterations=max(0, width - 1)) if width > 1 else mask


def _scratch(image: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A straight bright scratch, 1-3 px wide, across a good part of the image."""
    n = image.shape[0]
    mask = np.zeros_like(image, dtype=bool)
    angle = rng.uniform(0, np.pi)
    length = rng.uniform(0.35, 0.7) * n
    cy, cx = rng.uniform(0.3, 0.7, size=2) * n
    dy, dx = np.sin(angle) * length / 2, np.cos(angle) * length / 2
    rr, cc = draw.line(int(cy - dy), int(cx - dx), int(cy + dy), int(cx + dx))
    keep = (rr >= 0) & (rr < n) & (cc >= 0) & (cc < n)
    mask[rr[keep], cc[keep]] = True
    mask = _thick(mask, int(rng.integers(2, 4)))
    out = image.copy()
    out[mask] = np.clip(out[mask] + rng.uniform(0.35, 0.5), 0.0, 1.0)
    return out, mask


def _crack(image: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A dark, jagged crack: a random walk drawn 2 px wide."""
    n = image.shape[0]
    mask = np.zeros_like(image, dtype=bool)
    y, x = rng.uniform(0.2, 0.8, size=2) * n
    heading = rng.uniform(0, 2 * np.pi)
    for _ in range(int(rng.integers(6, 10))):
        heading += rng.normal(0, 0.6)
        step = rng.uniform(0.05, 0.1) * n
        ny, nx = y + np.sin(heading) * step, x + np.cos(heading) * step
        rr, cc = draw.line(int(y), int(x), int(ny), int(nx))
        keep = (rr >= 0) & (rr < n) & (cc >= 0) & (cc < n)
        mask[rr[keep], cc[keep]] = True
        y, x = ny, nx
    mask = _thick(mask, 2)
    out = image.copy()
    out[mask] *= rng.uniform(0.15, 0.35)
    return out, mask


def _blob(image: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A filled ellipse of foreign material, darker or brighter than the surface."""
    n = image.shape[0]
    mask = np.zeros_like(image, dtype=bool)
    r_major, r_minor = rng.uniform(0.06, 0.14) * n, rng.uniform(0.03, 0.07) * n
    cy, cx = rng.uniform(0.2, 0.8, size=2) * n
    rr, cc = draw.ellipse(cy, cx, r_major, r_minor, shape=mask.shape,
                          rotation=rng.uniform(0, np.pi))
    mask[rr, cc] = True
    level = rng.choice([rng.uniform(0.0, 0.15), rng.uniform(0.8, 1.0)])
    out = image.copy()
    out[mask] = np.clip(level + rng.normal(0, 0.03, size=mask.sum()), 0.0, 1.0)
    return out, mask


def _stain(image: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A soft-edged discolouration; the mask is where it changes brightness by over half."""
    n = image.shape[0]
    yy, xx = np.mgrid[0:n, 0:n].astype(np.float32)
    cy, cx = rng.uniform(0.25, 0.75, size=2) * n
    sy, sx = rng.uniform(0.06, 0.12, size=2) * n
    weight = np.exp(-(((yy - cy) / sy) ** 2 + ((xx - cx) / sx) ** 2) / 2)
    amplitude = rng.choice([-1.0, 1.0]) * rng.uniform(0.3, 0.45)
    out = np.clip(image + amplitude * weight, 0.0, 1.0)
    return out, weight > 0.5


_DEFECTS: dict[str, Defect] = {
    "scratch": _scratch,
    "crack": _crack,
    "blob": _blob,
    "stain": _stain,
}
