"""Gradient-magnitude similarity (GMS) and its multi-scale form (MSGMS), in torch.

As used by RIAD (Zavrtanik, Kristan & Skočaj, "Reconstruction by inpainting for visual
anomaly detection", Pattern Recognition 2021), after GMSD (Xue et al. 2014): the gradient
magnitudes ``g_x`` and ``g_r`` of an image and its reconstruction come from 3x3 Prewitt
filters normalised by 1/3, and

    GMS = (2 g_x g_r + c) / (g_x^2 + g_r^2 + c),

1 where the local gradients agree and towards 0 where an edge is missing or added. Being
built on gradients, it ignores a constant brightness offset that the L2 error would flag.

Every channel is compared on its own (as the SSIM map is) and the maps keep the channel
axis; callers average over channels. The filter border repeats the edge pixel (scipy's
``reflect`` mode, ``replicate`` in torch), so a flat image has zero gradient everywhere,
its border included.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# RIAD's stabilising constant for images in [0, 1]: GMSD's c = 170 for [0, 255] images
# (170 / 255^2 = 0.0026), with the Prewitt filters normalised by 1/3.
GMS_C = 0.0026

# Below this many pixels per side a scale is skipped: the 3x3 filter needs a full window.
_MIN_SIDE = 3

# Added under the square root: keeps the gradient of the magnitude finite on flat regions
# (d sqrt(m)/dm is infinite at m = 0); negligible next to GMS_C.
_EPS = 1e-12


def _check_pair(name: str, x: torch.Tensor, r: torch.Tensor, c: float) -> None:
    if x.shape != r.shape or x.dim() != 4:
        raise ValueError(
            f"{name} needs two (N, C, H, W) tensors of the same shape, got {tuple(x.shape)} "
            f"and {tuple(r.shape)}"
        )
    if min(x.shape[-2:]) < _MIN_SIDE:
        raise ValueError(
            f"images of {tuple(x.shape[-2:])} pixels are smaller than the 3x3 Prewitt filter; "
            "use images of at least 3x3 pixels"
        )
    if not c > 0:
        raise ValueError(f"c must be positive, got {c!r}")


def _gradient_magnitude(images: torch.Tensor) -> torch.Tensor:
    """Prewitt gradient magnitude of every channel, ``(N, C, H, W)`` -> same shape.

    The Prewitt filters are separable (a central difference along one axis, a 3-tap mean
    along the other), so two slicings of the padded image replace two convolutions.
    """
    p = F.pad(images, (1, 1, 1, 1), mode="replicate")
    dx = p[..., :, 2:] - p[..., :, :-2]  # (H + 2, W)
    dy = p[..., 2:, :] - p[..., :-2, :]  # (H, W + 2)
    gx = (dx[..., :-2, :] + dx[..., 1:-1, :] + dx[..., 2:, :]) / 3.0
    gy = (dy[..., :, :-2] + dy[..., :, 1:-1] + dy[..., :, 2:]) / 3.0
    return torch.sqrt(gx * gx + gy * gy + _EPS)


def _at_least_float32(x: torch.Tensor, r: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    # Half precision (mixed-precision training) would flush _EPS to zero and give NaN
    # gradients on flat regions; float64 stays float64.
    dtype = torch.promote_types(torch.promote_types(x.dtype, r.dtype), torch.float32)
    return x.to(dtype), r.to(dtype)


def _gms(x: torch.Tensor, r: torch.Tensor, c: float) -> torch.Tensor:
    # One filter pass over both batches; identical inputs give bitwise identical
    # magnitudes, and the expression below is then exactly 1 (2ab = a*a + b*b in floats).
    g = _gradient_magnitude(torch.cat([x, r], dim=0))
    gx, gr = g.chunk(2, dim=0)
    return (2.0 * gx * gr + c) / (gx * gx + gr * gr + c)


def gms_map(x: torch.Tensor, r: torch.Tensor, *, c: float = GMS_C) -> torch.Tensor:
    """Per-pixel gradient-magnitude similarity at the full resolution.

    Args:
        x: Images ``(N, C, H, W)`` in ``[0, 1]``, at least 3x3 pixels.
        r: Reconstructions, same shape.
        c: Stabilising constant (> 0); :data:`GMS_C` (RIAD's 0.0026) suits ``[0, 1]`` images.

    Returns:
        ``(N, C, H, W)`` similarity in ``(0, 1]``, per channel; 1 where the gradients agree.
        Float32 (float64 for float64 inputs), also for half-precision inputs.

    Raises:
        ValueError: Shapes differ or are not 4-D, images smaller than 3x3, ``c`` not positive.
    """
    _check_pair("gms_map", x, r, c)
    return _gms(*_at_least_float32(x, r), c)


def msgms_map(
    x: torch.Tensor, r: torch.Tensor, *, scales: int = 4, c: float = GMS_C
) -> torch.Tensor:
    """Multi-scale gradient-magnitude similarity (RIAD's MSGMS), per pixel.

    Scale ``s`` compares the images average-pooled by 2 ``s`` times (1, 1/2, 1/4, 1/8 of the
    side for the default 4 scales); each scale's GMS map is resized back to ``H x W``
    (bilinear, ``align_corners=False``) and the maps are averaged. Scales whose pooled image
    would be smaller than 3 pixels on a side are dropped, and the mean runs over the scales
    used, so small images still give a map in the same range.

    Args:
        x: Images ``(N, C, H, W)`` in ``[0, 1]``, at least 3x3 pixels.
        r: Reconstructions, same shape.
        scales: Most scales to use (>= 1); RIAD uses 4.
        c: Stabilising constant of every scale (> 0).

    Returns:
        ``(N, C, H, W)`` similarity in ``(0, 1]``, per channel, float32 (float64 for float64
        inputs); ``1 - msgms_map`` is the anomaly map (RIAD averages it over channels and
        smooths it).

    Raises:
        ValueError: Shapes differ or are not 4-D, images smaller than 3x3, ``scales`` below 1
            or ``c`` not positive.
    """
    _check_pair("msgms_map", x, r, c)
    if isinstance(scales, bool) or not isinstance(scales, int) or scales < 1:
        raise ValueError(f"scales must be a positive integer, got {scales!r}")
    x, r = _at_least_float32(x, r)
    size = tuple(x.shape[-2:])
    # Accumulate the dissimilarity 1 - GMS: resizing an all-zero map gives exact zeros,
    # so identical images give exactly 1 (resizing all ones may round to 1 - 1 ulp).
    total = 1.0 - _gms(x, r, c)
    used = 1
    for _ in range(1, scales):
        if min(x.shape[-2:]) // 2 < _MIN_SIDE:
            break
        x, r = F.avg_pool2d(x, 2), F.avg_pool2d(r, 2)
        coarse = 1.0 - _gms(x, r, c)
        total = total + F.interpolate(coarse, size=size, mode="bilinear", align_corners=False)
        used += 1
    return 1.0 - total / used


__all__ = ["GMS_C", "gms_map", "msgms_map"]
