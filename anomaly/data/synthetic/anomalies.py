"""Synthetic anomalies for DRAEM's discriminative training (and ``noise=perlin``).

Textures, other images of the batch or a change of shade, pasted through a Perlin, region
or line mask.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from anomaly.data.synthetic.perlin import (
    check_perlin_params,
    perlin_fields,
    perlin_masks,
)
from anomaly.errors import ConfigError

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


SOURCES = ("textures", "batch", "both", "shade", "all")


# Outlines of a synthetic anomaly: DRAEM's Perlin blobs, a large region cut off by a
# wavy line (a surface that changes from one side to the other), a thin curve (a crack or
# scratch).
SHAPES = ("perlin", "region", "line")


# Share of the image a `region` covers, and width in pixels and length (share of the
# longer side) of a `line`.
_REGION_AREA = (0.05, 0.5)


_LINE_WIDTH = (1, 3)


_LINE_LENGTH = (0.15, 0.8)


# Limits of the anomalies' own numeric parameters (the mask's are in perlin.py).
ANOMALY_RANGES = {"max_opacity": (0.0, 1.0)}
# Brightness change of a `shade` anomaly, as a share of the intensity range (either sign).
_SHADE = (0.1, 0.3)


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
    check_anomaly_params("perlin_texture", params)
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
        masks[perlin] = perlin_masks(
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
    wobble = perlin_fields(h, w, np.array([[2.0, 2.0]]), np.array([angle]), None)[0]
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


def check_anomaly_params(key: str, params: Mapping[str, Any]) -> None:
    """Refuse what would fail late or silently in the Perlin anomalies, naming ``key``.

    Raises:
        ConfigError: A parameter out of range, a scale that is not a power of two, an
            unknown source, shape or texture.
    """
    check_perlin_params(key, params)
    for param, (low, high) in ANOMALY_RANGES.items():
        value = params.get(param)
        if isinstance(value, (int, float)) and not low <= value <= high:
            raise ConfigError(f"{key}.{param} must be in [{low}, {high}], got {value!r}")
    if "source" in params and params["source"] not in SOURCES:
        raise ConfigError(
            f"{key}.source={params['source']!r} is unknown; use one of {list(SOURCES)}"
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
