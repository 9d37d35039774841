"""Perlin noise and the binary masks thresholded from it (DRAEM's anomaly outlines)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from anomaly.errors import ConfigError

# A coarse lattice with a high threshold can leave no pixel above it; redraw a few times
# rather than loop until something shows, so a threshold near 1 cannot hang training.
_MASK_TRIES = 4


def perlin_noise(
    h: int,
    w: int,
    *,
    scale: tuple[float, float] = (4, 4),
    angle: float = 0.0,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """2-D gradient (Perlin) noise: smooth random values, one per pixel.

    Random unit gradients sit on a lattice; each pixel blends the four surrounding
    gradients' ramps with the quintic fade ``6t^5 - 15t^4 + 10t^3`` (Perlin 2002).

    Args:
        h: Height in pixels.
        w: Width in pixels.
        scale: Lattice cells along the height and the width of the image; need not divide
            the size. 1 gives one or two large blobs, ``h / 2`` pixel-sized speckle.
        angle: Rotation of the pattern about the image centre, in radians.
        generator: Source of the random gradients (torch's global generator when None).
        device: Where the result goes (it is computed on the CPU).

    Returns:
        Noise ``(H, W)``, float32, in ``[-1, 1]`` (0 at every lattice point).
    """
    noise = perlin_fields(h, w, np.array([scale], dtype=np.float64), np.array([angle]), generator)
    return torch.from_numpy(noise[0]).to(device)


def perlin_fields(
    h: int,
    w: int,
    scales: np.ndarray,
    angles: np.ndarray,
    generator: torch.Generator | None,
) -> np.ndarray:
    """Perlin noise ``(n, H, W)``, float32, for ``n`` (cells along H, W) ``scales`` and ``angles``.

    In numpy rather than torch: about thirty small operations per image, and on a busy
    CPU each multi-threaded torch operation can wait a scheduler tick for its threads
    (measured on a loaded two-core machine, 16 masks of 128x128: 5 ms in numpy, 10 ms in
    torch on one thread, over 1 s in torch on two). The random draws still come from
    torch, so ``torch.manual_seed`` fixes them.
    """
    n = len(angles)
    cos, sin = np.cos(angles).reshape(n, 1, 1), np.sin(angles).reshape(n, 1, 1)
    su, sv = (scales[:, 0] / h).reshape(n, 1, 1), (scales[:, 1] / w).reshape(n, 1, 1)
    # Half extents of the rotated image in lattice units: shifting by them makes every
    # coordinate positive, so that its cell indexes the lattice.
    half_u = (np.abs(cos) * h / 2 + np.abs(sin) * w / 2) * su
    half_v = (np.abs(sin) * h / 2 + np.abs(cos) * w / 2) * sv
    rows, cols = int(2 * half_u.max()) + 2, int(2 * half_v.max()) + 2
    theta = 2 * np.pi * torch.rand(n * rows * cols, generator=generator).numpy()
    grad_u, grad_v = np.cos(theta), np.sin(theta)

    # Pixel centres relative to the image centre, rotated, then in lattice units. The
    # pattern is rotated by evaluating it at rotated points, not by rotating an image:
    # no interpolation and no empty corners. Each coordinate is a row term plus a column
    # term, so only the final sums have the full (n, H, W) size.
    y = np.arange(h, dtype=np.float64).reshape(1, h, 1) + (0.5 - h / 2)
    x = np.arange(w, dtype=np.float64).reshape(1, 1, w) + (0.5 - w / 2)
    f32 = np.float32
    u = (y * cos * su + half_u).astype(f32) - (x * sin * su).astype(f32)
    v = (y * sin * sv + half_v).astype(f32) + (x * cos * sv).astype(f32)
    cell_u, cell_v = np.floor(u), np.floor(v)
    fu, fv = u - cell_u, v - cell_v
    first = np.arange(0, n * rows * cols, rows * cols).reshape(n, 1, 1)
    # Exact in float32: a lattice has far fewer than 2**24 points.
    k00 = (cell_u * cols + cell_v).astype(np.intp) + first
    k01, k10 = k00 + 1, k00 + cols
    k11 = k10 + 1
    fu1, fv1 = fu - 1, fv - 1
    n00 = grad_u.take(k00) * fu + grad_v.take(k00) * fv
    n01 = grad_u.take(k01) * fu + grad_v.take(k01) * fv1
    n10 = grad_u.take(k10) * fu1 + grad_v.take(k10) * fv
    n11 = grad_u.take(k11) * fu1 + grad_v.take(k11) * fv1
    tu = fu * fu * fu * (fu * (fu * 6 - 15) + 10)
    tv = fv * fv * fv * (fv * (fv * 6 - 15) + 10)
    near = n00 + tv * (n01 - n00)
    far = n10 + tv * (n11 - n10)
    # 2-D Perlin noise with unit gradients peaks at sqrt(2)/2: scale it to [-1, 1].
    noise = near + tu * (far - near)
    noise *= f32(math.sqrt(2))
    return noise


def perlin_mask(
    h: int,
    w: int,
    *,
    min_scale: int = 1,
    max_scale: int = 32,
    threshold: float = 0.5,
    rotate: bool = True,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """DRAEM's anomaly shape: where Perlin noise at a random scale exceeds ``threshold``.

    The number of lattice cells is drawn independently for the height and the width, as a
    power of two between ``min_scale`` and ``max_scale``, so blobs come round or elongated;
    ``rotate`` then turns the pattern by a random angle. A draw with no pixel above the
    threshold is redrawn a few times, then accepted empty.

    Args:
        h: Height in pixels.
        w: Width in pixels.
        min_scale: Fewest lattice cells per side, a power of two (1: a few large blobs).
        max_scale: Most lattice cells per side, a power of two, at least ``min_scale``.
        threshold: Noise level in ``[-1, 1]`` above which a pixel is in the mask; higher
            gives smaller masks (0.5 covers about 6% of the image on average with the
            default scales).
        rotate: Turn the pattern by an angle uniform in ``[0, pi)``.
        generator: Source of randomness (torch's global generator when None).
        device: Where the result goes (it is computed on the CPU).

    Returns:
        Mask ``(H, W)``, bool, possibly empty.

    Raises:
        ConfigError: A scale that is not a power of two or ``min_scale > max_scale``, or a
            threshold outside ``[-1, 1]``.
    """
    params = {"min_scale": min_scale, "max_scale": max_scale, "threshold": threshold}
    check_perlin_params("perlin_mask", {**params, "rotate": rotate})
    return perlin_masks(1, h, w, **params, rotate=rotate, generator=generator, device=device)[0]


def perlin_masks(
    n: int,
    h: int,
    w: int,
    *,
    min_scale: int,
    max_scale: int,
    threshold: float,
    rotate: bool,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """``n`` independent :func:`perlin_mask` draws ``(n, H, W)``, redrawing only the empty."""
    low, high = min_scale.bit_length() - 1, max_scale.bit_length() - 1
    # Images in chunks of about 16k pixels: small temporaries are much faster (measured:
    # 16 masks of 128x128 in 5 ms one by one, 16 ms all at once).
    per_chunk = max(1, 2**14 // (h * w))
    masks = np.zeros((n, h, w), dtype=bool)
    todo = np.arange(n)
    for _ in range(_MASK_TRIES):
        for start in range(0, len(todo), per_chunk):
            chunk = todo[start : start + per_chunk]
            k = len(chunk)
            scales = 2.0 ** torch.randint(low, high + 1, (k, 2), generator=generator).numpy()
            angles = torch.rand(k, generator=generator, dtype=torch.float64).numpy() * math.pi
            if not rotate:
                angles[:] = 0.0
            masks[chunk] = perlin_fields(h, w, scales, angles, generator) > threshold
        todo = todo[~masks[todo].any(axis=(1, 2))]
        if not len(todo):
            break
    return torch.from_numpy(masks).to(device)


#: Limits of the masks' numeric parameters.
PERLIN_RANGES = {"threshold": (-1.0, 1.0)}


def check_perlin_params(key: str, params: Mapping[str, Any]) -> None:
    """Refuse mask parameters that would fail late or silently, naming ``key``.

    Raises:
        ConfigError: A threshold out of range, a scale that is not a power of two or
            scales in the wrong order, a ``rotate`` that is not a boolean.
    """
    for param, (low, high) in PERLIN_RANGES.items():
        value = params.get(param)
        if isinstance(value, (int, float)) and not low <= value <= high:
            raise ConfigError(f"{key}.{param} must be in [{low}, {high}], got {value!r}")
    for param in ("min_scale", "max_scale"):
        value = params[param]
        # A power of two, as DRAEM draws it; bool is an int but never a scale.
        whole = isinstance(value, int) and not isinstance(value, bool)
        if not whole or value < 1 or value & (value - 1):
            raise ConfigError(f"{key}.{param} must be a power of two (1, 2, 4, ...), got {value!r}")
    if params["min_scale"] > params["max_scale"]:
        raise ConfigError(
            f"{key}.max_scale={params['max_scale']!r} is below "
            f"min_scale={params['min_scale']!r}; raise it or lower min_scale"
        )
    if not isinstance(params["rotate"], bool):
        raise ConfigError(f"{key}.rotate must be true or false, got {params['rotate']!r}")
