"""Input corruptions for the denoising autoencoder (training inputs only).

The target stays the clean image, so the network learns to *remove* what the corruption
adds. Every corruption takes and returns a batch ``(N, C, H, W)`` in ``[0, 1]``.
Randomness comes from torch's generator, which ``seed_everything`` seeds.
"""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from anomaly.errors import ConfigError

Corrupt = Callable[[torch.Tensor], torch.Tensor]


def gaussian(x: torch.Tensor, *, sigma: float = 0.1) -> torch.Tensor:
    """Add gaussian noise of standard deviation ``sigma``, then clip to ``[0, 1]``.

    The textbook 0.5 (MNIST digits) would bury the fine texture that inspection relies
    on; 0.1 (about 25 grey levels) is well above sensor noise and keeps the structure.
    """
    return (x + sigma * torch.randn_like(x)).clamp_(0.0, 1.0)


def salt_and_pepper(x: torch.Tensor, *, amount: float = 0.02) -> torch.Tensor:
    """Set a share ``amount`` of pixels (all channels) to black or white, half each."""
    r = torch.rand(x.shape[0], 1, *x.shape[2:], device=x.device).expand_as(x)
    out = x.clone()
    out[r < amount / 2] = 0.0
    out[r > 1 - amount / 2] = 1.0
    return out


def zero_mask(x: torch.Tensor, *, fraction: float = 0.25) -> torch.Tensor:
    """Masking noise: set a share ``fraction`` of pixels (all channels) to 0.

    About 25% is the best value reported for masking noise (Vincent et al., JMLR 2010).
    """
    keep = torch.rand(x.shape[0], 1, *x.shape[2:], device=x.device) >= fraction
    return x * keep


def synthetic_defect(
    x: torch.Tensor,
    *,
    max_defects: int = 3,
    min_size: float = 0.05,
    max_size: float = 0.3,
    kinds: Sequence[str] = ("patch", "stroke", "blob"),
) -> torch.Tensor:
    """Paste defect-like structure: patches cut from other images, strokes and blobs.

    Args:
        x: Batch of clean images.
        max_defects: Up to this many defects per image (at least one).
        min_size: Smallest defect extent, as a share of the image side.
        max_size: Largest defect extent, as a share of the image side.
        kinds: ``patch`` (a rectangle copied from another image of the batch at another
            place), ``stroke`` (a line 1-3 px wide, dark or bright), ``blob`` (a filled
            ellipse of random grey level and texture).
    """
    out = x.clone()
    n, c, h, w = x.shape
    yy = torch.arange(h, dtype=x.dtype, device=x.device).view(h, 1)
    xx = torch.arange(w, dtype=x.dtype, device=x.device).view(1, w)
    side = min(h, w)
    for i in range(n):
        for _ in range(int(torch.randint(1, max_defects + 1, ()))):
            kind = kinds[int(torch.randint(len(kinds), ()))]
            extent = max(2, int(side * (min_size + (max_size - min_size) * float(torch.rand(())))))
            cy, cx = float(torch.rand(())) * h, float(torch.rand(())) * w
            if kind == "patch":
                src = int(torch.randint(n, ()))
                ph, pw = min(extent, h), min(extent, w)
                sy, sx = int(torch.randint(h - ph + 1, ())), int(torch.randint(w - pw + 1, ()))
                ty, tx = int(torch.randint(h - ph + 1, ())), int(torch.randint(w - pw + 1, ()))
                out[i, :, ty : ty + ph, tx : tx + pw] = x[src, :, sy : sy + ph, sx : sx + pw]
                continue
            if kind == "stroke":
                angle = float(torch.rand(())) * math.pi
                dy, dx = math.sin(angle), math.cos(angle)
                # Distance to the line through (cy, cx), limited to the stroke's length.
                along = (yy - cy) * dy + (xx - cx) * dx
                across = ((yy - cy) * dx - (xx - cx) * dy).abs()
                width = 0.5 + float(torch.randint(3, ()))
                mask = (across <= width / 2) & (along.abs() <= extent / 2)
            elif kind == "blob":
                ry = extent / 2
                rx = ry * (0.4 + 0.6 * float(torch.rand(())))
                mask = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0
            else:
                raise ConfigError(
                    f"synthetic_defect kind {kind!r} is unknown; use patch, stroke or blob"
                )
            level = float(torch.rand(()))
            texture = (level + 0.1 * torch.randn(c, h, w, device=x.device)).clamp(0.0, 1.0)
            out[i] = torch.where(mask, texture, out[i])
    return out


#: scikit-image's bundled images (no download) that ``perlin_texture`` pastes by default:
#: surfaces and tissue rather than objects, the closest offline stand-in for the DTD
#: textures DRAEM draws from.
TEXTURES = (
    "brick",
    "grass",
    "gravel",
    "moon",
    "cell",
    "coffee",
    "immunohistochemistry",
    "hubble_deep_field",
)
# Images that ship inside the scikit-image wheel (others need pooch and a download).
_BUNDLED = (*TEXTURES, "camera", "astronaut", "coins", "text", "checkerboard", "chelsea", "rocket")
_SOURCES = ("textures", "batch", "both", "shade", "all")
# Outlines of a synthetic anomaly: DRAEM's Perlin blobs, a large region cut off by a
# wavy line (a surface that changes from one side to the other), a thin curve (a crack or
# scratch).
SHAPES = ("perlin", "region", "line")
# Share of the image a `region` covers, and width in pixels and length (share of the
# longer side) of a `line`.
_REGION_AREA = (0.05, 0.5)
_LINE_WIDTH = (1, 3)
_LINE_LENGTH = (0.15, 0.8)
# Brightness change of a `shade` anomaly, as a share of the intensity range (either sign).
_SHADE = (0.1, 0.3)
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
    noise = _perlin(h, w, np.array([scale], dtype=np.float64), np.array([angle]), generator)
    return torch.from_numpy(noise[0]).to(device)


def _perlin(
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
    _check_perlin("perlin_mask", {**params, "rotate": rotate})
    return _perlin_masks(1, h, w, **params, rotate=rotate, generator=generator, device=device)[0]


def _perlin_masks(
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
            masks[chunk] = _perlin(h, w, scales, angles, generator) > threshold
        todo = todo[~masks[todo].any(axis=(1, 2))]
        if not len(todo):
            break
    return torch.from_numpy(masks).to(device)


def perlin_texture(
    x: torch.Tensor,
    *,
    min_scale: int = 1,
    max_scale: int = 32,
    threshold: float = 0.5,
    rotate: bool = True,
    max_opacity: float = 0.8,
    source: str = "textures",
    textures: Sequence[str] = TEXTURES,
    shapes: Sequence[str] = ("perlin",),
) -> torch.Tensor:
    """DRAEM's synthetic anomalies: Perlin-noise blobs filled with a foreign texture.

    The generator of DRAEM's reconstructive network (Zavrtanik et al., ICCV 2021): for
    each image a :func:`perlin_mask`, whose pixels become ``beta * image + (1 - beta) *
    texture`` with ``beta`` uniform in ``[0, max_opacity]``. The texture is a random crop,
    turned by a multiple of 90 degrees and maybe mirrored, with random gamma
    (``[0.5, 2]``), contrast (``x0.7-1.3``) and brightness (``+-0.15``).

    Args:
        x: Batch of clean images ``(N, C, H, W)`` in ``[0, 1]``.
        min_scale: Fewest Perlin lattice cells per side, a power of two.
        max_scale: Most Perlin lattice cells per side, a power of two (DRAEM: 1 to 32).
        threshold: Perlin level in ``[-1, 1]`` above which a pixel is replaced; higher
            gives smaller anomalies.
        rotate: Turn each mask's pattern by a random angle.
        max_opacity: Upper bound of ``beta``, the weight the *original* image keeps in the
            masked pixels (DRAEM's code: 0.8). The texture's own weight ``1 - beta`` is
            therefore between ``1 - max_opacity`` and 1: 0 pastes opaque textures.
        source: Where textures come from: ``textures`` (scikit-image's bundled images,
            see ``textures``), ``batch`` (another image of the batch, shifted and
            mirrored: anomalies that look like the product, misplaced), ``both`` (each
            image picks one, half and half), ``shade`` (the image's own surface made
            brighter or darker by 0.1-0.3 inside the mask, with no blending: defects of
            level rather than texture, like uneven coating or stains) or ``all`` (each
            image picks one of textures, batch and shade).
        textures: Names of ``skimage.data`` images used when ``source`` is ``textures``
            or ``both``; all ship inside scikit-image. Drop any that looks like your
            product (``brick`` for the brick demo set).
        shapes: Outlines each image picks from, uniformly: ``perlin`` (DRAEM's blobs),
            ``region`` (5-50% of the image cut off by a wavy line across it: a surface
            that changes from one side to the other) or ``line`` (a thin curve 1-3 px
            wide: a crack or scratch). Regions and lines are pasted opaque: blended, a
            thin line would vanish while still counted as an anomaly.

    Returns:
        The corrupted batch: same shape, dtype and device, in ``[0, 1]``.

    Raises:
        ConfigError: An out-of-range or unknown parameter (see :func:`perlin_mask`), an
            unknown source or texture name.
    """
    out, _ = perlin_texture_with_mask(
        x,
        min_scale=min_scale,
        max_scale=max_scale,
        threshold=threshold,
        rotate=rotate,
        max_opacity=max_opacity,
        source=source,
        textures=textures,
        shapes=shapes,
    )
    return out


def perlin_texture_with_mask(
    x: torch.Tensor,
    *,
    min_scale: int = 1,
    max_scale: int = 32,
    threshold: float = 0.5,
    rotate: bool = True,
    max_opacity: float = 0.8,
    source: str = "textures",
    textures: Sequence[str] = TEXTURES,
    shapes: Sequence[str] = ("perlin",),
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`perlin_texture`, also returning where it pasted (DRAEM's training target).

    Args:
        x: Batch of clean images ``(N, C, H, W)`` in ``[0, 1]``.
        min_scale: See :func:`perlin_texture`.
        max_scale: See :func:`perlin_texture`.
        threshold: See :func:`perlin_texture`.
        rotate: See :func:`perlin_texture`.
        max_opacity: See :func:`perlin_texture`.
        source: See :func:`perlin_texture`.
        textures: See :func:`perlin_texture`.
        shapes: See :func:`perlin_texture`.

    Returns:
        The corrupted batch ``(N, C, H, W)`` in ``[0, 1]`` and the masks ``(N, 1, H, W)``,
        bool; pixels outside the mask are unchanged.

    Raises:
        ConfigError: As :func:`perlin_texture`.
    """
    params = {
        "min_scale": min_scale,
        "max_scale": max_scale,
        "threshold": threshold,
        "rotate": rotate,
        "max_opacity": max_opacity,
        "source": source,
        "textures": textures,
        "shapes": shapes,
    }
    _check_perlin("perlin_texture", params)
    n, c, h, w = x.shape
    # One shape draws nothing, so a default run keeps the random stream it had before
    # shapes existed (and its seeded results).
    if len(shapes) == 1:
        kinds = [shapes[0]] * n
    else:
        kinds = [shapes[int(k)] for k in torch.randint(len(shapes), (n,))]
    perlin = [i for i, kind in enumerate(kinds) if kind == "perlin"]
    masks = np.zeros((n, h, w), dtype=bool)
    if perlin:
        masks[perlin] = _perlin_masks(
            len(perlin),
            h,
            w,
            min_scale=min_scale,
            max_scale=max_scale,
            threshold=threshold,
            rotate=rotate,
        ).numpy()
    for i, kind in enumerate(kinds):
        if kind == "region":
            masks[i] = _region_mask(h, w)
        elif kind == "line":
            masks[i] = _line_mask(h, w)
    mask = torch.from_numpy(masks).to(x.device).unsqueeze(1)
    opaque = torch.tensor([kind != "perlin" for kind in kinds]).to(x.device).view(n, 1, 1, 1)
    picks = {"textures": 0, "batch": 1, "shade": 2}
    if source in picks:
        pick = torch.full((n,), picks[source])
    else:
        pick = torch.randint(2 if source == "both" else 3, (n,))
    pick = pick.to(x.device).view(n, 1, 1, 1)
    texture = torch.zeros_like(x)
    if (pick == 0).any():
        bundled = _bundled_textures(textures, n, c, h, w).to(x.device, x.dtype)
        texture = torch.where(pick == 0, bundled, texture)
    if (pick == 1).any():
        texture = torch.where(pick == 1, _batch_textures(x), texture)
    texture = _jitter(texture)
    beta = (torch.rand(n, 1, 1, 1) * max_opacity).to(x.device, x.dtype)
    beta = torch.where(opaque, torch.zeros_like(beta), beta)
    if (pick == 2).any():
        low, high = _SHADE
        size = low + (high - low) * torch.rand(n, 1, 1, 1)
        sign = torch.where(torch.rand(n, 1, 1, 1) < 0.5, -1.0, 1.0)
        shaded = (x + (sign * size).to(x.device, x.dtype)).clamp(0.0, 1.0)
        texture = torch.where(pick == 2, shaded, texture)
        # The shaded surface replaces the image outright: blending would halve the step.
        beta = torch.where(pick.view(n, 1, 1, 1) == 2, torch.zeros_like(beta), beta)
    out = torch.where(mask, beta * x + (1 - beta) * texture, x)
    return out, mask


def _region_mask(h: int, w: int) -> np.ndarray:
    """One side of a wavy line across the image, covering 5-50% of it, ``(H, W)`` bool."""
    angle = float(torch.rand(())) * math.pi
    y = np.arange(h).reshape(h, 1) - h / 2
    x = np.arange(w).reshape(1, w) - w / 2
    distance = y * math.cos(angle) + x * math.sin(angle)
    # A gentle waviness of the border, a few per cent of the image size.
    wobble = _perlin(h, w, np.array([[2.0, 2.0]]), np.array([angle]), None)[0]
    distance = distance + 0.05 * max(h, w) * wobble
    low, high = _REGION_AREA
    area = low + (high - low) * float(torch.rand(()))
    return distance > np.quantile(distance, 1.0 - area)


def _line_mask(h: int, w: int) -> np.ndarray:
    """A thin random curve ``(H, W)`` bool: a walk whose heading drifts smoothly."""
    low, high = _LINE_LENGTH
    steps = max(2, int(max(h, w) * (low + (high - low) * float(torch.rand(())))))
    draws = torch.rand(steps + 3, dtype=torch.float64).numpy()
    start_y, start_x, heading = draws[0] * h, draws[1] * w, draws[2] * 2 * math.pi
    # The turn per step is itself smoothed noise, so the curve bends without kinks.
    turns = np.convolve(draws[3:] - 0.5, np.ones(9) / 9, mode="same") * 0.6
    headings = heading + np.cumsum(turns)
    ys = np.rint(start_y + np.cumsum(np.cos(headings))).astype(np.intp)
    xs = np.rint(start_x + np.cumsum(np.sin(headings))).astype(np.intp)
    mask = np.zeros((h, w), dtype=bool)
    width = int(torch.randint(_LINE_WIDTH[0], _LINE_WIDTH[1] + 1, ()))
    for dy in range(width):
        for dx in range(width):
            yy, xx = ys + dy, xs + dx
            inside = (yy >= 0) & (yy < h) & (xx >= 0) & (xx < w)
            mask[yy[inside], xx[inside]] = True
    if not mask.any():
        # A walk that left the image at once: draw it through the centre instead.
        mask[h // 2, w // 2] = True
    return mask


def _bundled_textures(names: Sequence[str], n: int, c: int, h: int, w: int) -> torch.Tensor:
    """``n`` random crops ``(C, H, W)`` of the named textures, turned and mirrored, on CPU."""
    side = max(h, w)
    crops = []
    for _ in range(n):
        image = _texture(names[int(torch.randint(len(names), ()))], c, side)
        quarter_turns = int(torch.randint(4, ()))
        # An odd number of quarter turns swaps the sides: crop the transposed size.
        ch, cw = (w, h) if quarter_turns % 2 else (h, w)
        top = int(torch.randint(image.shape[1] - ch + 1, ()))
        left = int(torch.randint(image.shape[2] - cw + 1, ()))
        crop = torch.rot90(image[:, top : top + ch, left : left + cw], quarter_turns, (1, 2))
        # Quarter turns and one mirror together give all eight symmetries of the square.
        crops.append(crop.flip(2) if float(torch.rand(())) < 0.5 else crop)
    return torch.stack(crops)


def _batch_textures(x: torch.Tensor) -> torch.Tensor:
    """For each image, another image of the batch rolled by a random shift and mirrored."""
    n, _, h, w = x.shape
    out = []
    for i in range(n):
        # Never the image itself (unless it is alone): it would blend into its own copy.
        j = (i + int(torch.randint(1, n, ()))) % n if n > 1 else i
        shift = (int(torch.randint(h, ())), int(torch.randint(w, ())))
        dims = [d for d in (1, 2) if float(torch.rand(())) < 0.5]
        other = torch.roll(x[j], shift, (1, 2))
        out.append(other.flip(dims) if dims else other)
    return torch.stack(out)


def _jitter(texture: torch.Tensor) -> torch.Tensor:
    """Random gamma, contrast and brightness per image, so no texture looks the same twice.

    Works in place: ``texture`` is a fresh tensor, never the caller's batch.
    """
    n = texture.shape[0]
    draws = torch.rand(3, n, 1, 1, 1).to(texture.device, texture.dtype)
    gamma = torch.exp(math.log(0.5) + math.log(4.0) * draws[0])  # log-uniform in [0.5, 2]
    contrast = 0.7 + 0.6 * draws[1]
    brightness = 0.3 * draws[2] - 0.15
    texture = texture.clamp_(0.0, 1.0).pow_(gamma)
    mean = texture.mean(dim=(1, 2, 3), keepdim=True)
    return torch.addcmul(mean + brightness, texture - mean, contrast).clamp_(0.0, 1.0)


# Decoding and resizing an image takes milliseconds, a training step's budget: load each
# (texture, channels, size) once per process. lru_cache rather than a dict so the cache
# is bounded when sizes vary.
@functools.lru_cache(maxsize=64)
def _texture(name: str, channels: int, side: int) -> torch.Tensor:
    """A bundled image as float32 ``(C, H, W)`` in ``[0, 1]``, short side in ``[side, 2*side]``.

    Capping the short side at twice the image side keeps the texture's scale relative to
    the image close to DRAEM's (which resizes the whole texture to the image) while a crop
    still has room to move.
    """
    # Imported here: scikit-image's data module is only needed once textures are used.
    from skimage import data as skdata
    from skimage.util import img_as_float32

    try:
        array = img_as_float32(getattr(skdata, name)())
    except (AttributeError, OSError, ModuleNotFoundError) as exc:
        raise ConfigError(
            f"perlin_texture texture {name!r} cannot be loaded from scikit-image ({exc}); "
            f"drop it from textures or use source: batch"
        ) from exc
    image = torch.from_numpy(array)
    if image.ndim == 2:
        image = image.unsqueeze(0).expand(channels, -1, -1)
    else:
        rgb = image[..., :3].permute(2, 0, 1)
        if channels == 3:
            image = rgb
        else:
            # Luminance weights of skimage.color.rgb2gray (ITU-R BT.709).
            weights = torch.tensor([0.2125, 0.7154, 0.0721]).view(3, 1, 1)
            image = (rgb * weights).sum(0, keepdim=True).expand(channels, -1, -1)
    short = min(image.shape[1:])
    factor = min(max(1.0, side / short), 2 * side / short)
    if factor != 1.0:
        size = [max(side, math.ceil(s * factor)) for s in image.shape[1:]]
        image = F.interpolate(image[None], size=size, mode="bilinear", antialias=True)[0]
    return image.clamp(0.0, 1.0).contiguous()


CORRUPTIONS: dict[str, Callable[..., torch.Tensor]] = {
    "gaussian": gaussian,
    "salt_and_pepper": salt_and_pepper,
    "zero_mask": zero_mask,
    "synthetic_defect": synthetic_defect,
    "perlin_texture": perlin_texture,
}
_RANGES = {
    "sigma": (0.0, 1.0),
    "amount": (0.0, 1.0),
    "fraction": (0.0, 1.0),
    "min_size": (0.0, 1.0),
    "max_size": (0.0, 1.0),
    "threshold": (-1.0, 1.0),
    "max_opacity": (0.0, 1.0),
}


def build_corruption(specs: Sequence[Mapping[str, Any]] | None) -> Corrupt | None:
    """Compose corruptions from the ``noise.corruptions`` config list.

    Each spec is ``{"name": ..., "p": probability, **parameters}``; each corruption is
    applied to each image independently with its probability, in list order.

    Returns:
        The corruption, or None for an empty list (no corruption).

    Raises:
        ConfigError: Unknown name, probability outside ``[0, 1]`` or a parameter that is
            negative, NaN or out of range, naming the config key.
    """
    if not specs:
        return None
    steps: list[tuple[float, Callable[[torch.Tensor], torch.Tensor]]] = []
    for i, spec in enumerate(specs):
        spec = dict(spec)
        key = f"noise.corruptions[{i}]"
        name = spec.pop("name", None)
        if name not in CORRUPTIONS:
            raise ConfigError(f"{key}.name={name!r} is unknown; choose one of {list(CORRUPTIONS)}")
        p = float(spec.pop("p", 1.0))
        if not 0.0 <= p <= 1.0:
            raise ConfigError(f"{key}.p must be a probability in [0, 1], got {p!r}")
        for param, value in spec.items():
            _check_range(key, param, value)
        fn = CORRUPTIONS[name]
        try:
            bound = inspect.signature(fn).bind(None, **spec)
        except TypeError as exc:
            raise ConfigError(f"{key}: invalid parameters for {name}: {exc}") from exc
        if name in _CHECKS:
            # With the defaults filled in, so that limits between two parameters
            # (min_scale <= max_scale) hold whichever of them the config sets.
            bound.apply_defaults()
            _CHECKS[name](key, dict(list(bound.arguments.items())[1:]))
        steps.append((p, _bind(fn, spec)))

    def corrupt(x: torch.Tensor) -> torch.Tensor:
        for p, fn in steps:
            if p <= 0:
                continue
            chosen = torch.rand(x.shape[0], device=x.device) < p
            if chosen.any():
                x = torch.where(chosen.view(-1, 1, 1, 1), fn(x), x)
        return x

    return corrupt


def _check_range(key: str, param: str, value: Any) -> None:
    low, high = _RANGES.get(param, (0, math.inf))
    if isinstance(value, (int, float)) and not low <= value <= high:
        raise ConfigError(f"{key}.{param} must be in [{low}, {high}], got {value!r}")


def _check_perlin(key: str, params: Mapping[str, Any]) -> None:
    """Refuse what would fail late or silently in the Perlin corruption, naming ``key``."""
    for param in ("threshold", "max_opacity"):
        if param in params:
            _check_range(key, param, params[param])
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
    if "source" in params and params["source"] not in _SOURCES:
        raise ConfigError(
            f"{key}.source={params['source']!r} is unknown; use one of {list(_SOURCES)}"
        )
    if "shapes" in params:
        _check_names(key, "shapes", params["shapes"], SHAPES, "are unknown")
    if "textures" in params:
        _check_names(
            key,
            "textures",
            params["textures"],
            _BUNDLED,
            "are not images bundled with scikit-image",
        )


def _check_names(key: str, param: str, names: Any, known: Sequence[str], what: str) -> None:
    """Refuse anything but a non-empty list of names from ``known``, naming ``key.param``."""
    if isinstance(names, str) or not isinstance(names, Sequence) or not names:
        raise ConfigError(f"{key}.{param} must be a non-empty list of names, got {names!r}")
    unknown = [name for name in names if name not in known]
    if unknown:
        raise ConfigError(f"{key}.{param}: {unknown} {what}; use some of {list(known)}")


# Checks that involve more than one parameter or a non-number, by corruption name.
_CHECKS: dict[str, Callable[[str, Mapping[str, Any]], None]] = {
    "perlin_texture": _check_perlin,
}


def _bind(fn: Callable[..., torch.Tensor], params: dict[str, Any]) -> Corrupt:
    return lambda x: fn(x, **params)
