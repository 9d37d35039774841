"""Structural similarity (SSIM) in torch, batched, numerically matching scikit-image.

The one SSIM implementation of the package: the training loss and the error maps both use
it. It reproduces ``skimage.metrics.structural_similarity(im1, im2, data_range=...,
gaussian_weights=True, sigma=1.5, use_sample_covariance=False, full=True)``: a normalised
gaussian window truncated at 3.5 sigma (11 taps for sigma 1.5), applied separably with
scipy's ``reflect`` boundary (the edge pixel repeated: ``d c b a | a b c d``), and the
population covariance of Wang et al. 2004.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

_TRUNCATE = 3.5


def gaussian_kernel1d(
    sigma: float, *, truncate: float = _TRUNCATE, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """Normalised 1-D gaussian of radius ``int(truncate * sigma + 0.5)`` (as scipy.ndimage)."""
    if not sigma > 0:
        raise ValueError(f"sigma must be positive, got {sigma!r}")
    radius = int(truncate * sigma + 0.5)
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    kernel = torch.exp(-0.5 * (x / sigma) ** 2)
    return (kernel / kernel.sum()).to(dtype)


def _filter_matrix(
    length: int, kernel: torch.Tensor, *, valid: bool, device: torch.device
) -> torch.Tensor:
    """Banded matrix ``M`` with ``M @ signal`` = the 1-D filtered signal.

    ``valid`` keeps only outputs whose window lies inside the signal (``length - 2r`` rows);
    otherwise the ``length`` rows fold scipy's ``reflect`` boundary (``d c b a | a b c d``)
    into the weights, valid for any radius, also one larger than the signal.
    """
    radius = kernel.numel() // 2
    offsets = torch.arange(-radius, radius + 1, device=device)
    if valid:
        rows = torch.arange(length - 2 * radius, device=device)
        cols = rows[:, None] + offsets[None, :] + radius
    else:
        rows = torch.arange(length, device=device)
        cols = (rows[:, None] + offsets[None, :]) % (2 * length)
        cols = torch.where(cols < length, cols, 2 * length - 1 - cols)
    matrix = torch.zeros(rows.numel(), length, dtype=kernel.dtype, device=device)
    weights = kernel.to(device).expand(rows.numel(), -1)
    return matrix.index_put_((rows[:, None].expand_as(cols), cols), weights, accumulate=True)


def _separable(images: torch.Tensor, sigma: float, *, truncate: float, valid: bool) -> torch.Tensor:
    # Two small matrix products instead of two single-channel convolutions: on CPU the
    # 11-tap conv2d with one channel runs an order of magnitude slower than this matmul.
    kernel = gaussian_kernel1d(sigma, truncate=truncate, dtype=images.dtype)
    h, w = images.shape[-2:]
    rows = _filter_matrix(h, kernel, valid=valid, device=images.device)
    cols = _filter_matrix(w, kernel, valid=valid, device=images.device)
    return rows @ images @ cols.T


def gaussian_filter(
    images: torch.Tensor, sigma: float, *, truncate: float = _TRUNCATE
) -> torch.Tensor:
    """Separable gaussian blur of every channel, scipy ``reflect`` boundary.

    Args:
        images: ``(N, C, H, W)`` float tensor.
        sigma: Standard deviation in pixels (> 0).
        truncate: Kernel radius in units of sigma.

    Returns:
        Blurred tensor of the same shape.
    """
    return _separable(images, sigma, truncate=truncate, valid=False)


def ssim(
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    data_range: float,
    sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
    full: bool = False,
) -> torch.Tensor:
    """Structural similarity of two image batches.

    Args:
        x: ``(N, C, H, W)`` float tensor.
        y: Same shape as ``x``.
        data_range: Value range of the images (1.0 for ``[0, 1]``); required, never guessed.
        sigma: Gaussian window standard deviation (window of 11 taps for 1.5).
        k1: Luminance stabiliser constant.
        k2: Contrast stabiliser constant.
        full: Also return the per-pixel SSIM map.

    Returns:
        Mean SSIM per image, ``(N,)`` (averaged over channels and over the map with a border
        of the window radius cropped, as scikit-image does); with ``full=True`` a tuple
        ``(mean, map)`` where ``map`` is ``(N, C, H, W)``, uncropped.

    Raises:
        ValueError: Shapes differ, are not 4-D, or the images are smaller than the window.
    """
    if x.shape != y.shape or x.dim() != 4:
        raise ValueError(
            f"ssim needs two (N, C, H, W) tensors of the same shape, got {tuple(x.shape)} "
            f"and {tuple(y.shape)}"
        )
    if not data_range > 0:
        raise ValueError(f"data_range must be positive, got {data_range!r}")
    win = ssim_window_size(sigma)
    radius = win // 2
    if min(x.shape[-2:]) < win:
        raise ValueError(
            f"images of {tuple(x.shape[-2:])} pixels are smaller than the {win}x{win} SSIM "
            "window; use larger images or a smaller sigma"
        )
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    dtype = x.dtype
    if full:
        # Variances are differences of nearly equal numbers (E[x^2] - E[x]^2); on flat,
        # bright regions float32 loses up to ~5e-4 of the per-pixel map to cancellation.
        # The map is computed once per scored image, so float64 costs little there; the
        # mean (the training loss) is accurate to ~1e-7 in float32 and stays fast.
        x, y = x.double(), y.double()
    moments, mx, my = _centred_moments(x, y)
    if full:
        # One padded filter call over the five stacked moments instead of five calls.
        s_map = _ssim_map(gaussian_filter(moments, sigma), mx, my, c1, c2)
        cropped = s_map[..., radius : s_map.shape[-2] - radius, radius : s_map.shape[-1] - radius]
        return cropped.mean(dim=(1, 2, 3)).to(dtype), s_map.to(dtype)
    # The cropped mean only sees pixels whose window lies inside the image, so an unpadded
    # ("valid") filter gives exactly the same values with less work, which matters for the
    # training loss.
    valid = _separable(moments, sigma, truncate=_TRUNCATE, valid=True)
    return _ssim_map(valid, mx, my, c1, c2).mean(dim=(1, 2, 3))


def _centred_moments(
    x: torch.Tensor, y: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The five stacked moments of the mean-centred images, and the removed means.

    Shifting each image by a constant leaves (co)variances unchanged: centring on the image
    means shrinks the float cancellation in E[x^2] - E[x]^2, and the means are added back
    for the luminance term. One filter call then serves all five moments.
    """
    mx = x.mean(dim=(2, 3), keepdim=True)
    my = y.mean(dim=(2, 3), keepdim=True)
    xc, yc = x - mx, y - my
    return torch.cat([xc, yc, xc * xc, yc * yc, xc * yc], dim=1), mx, my


def _ssim_map(
    filtered: torch.Tensor,
    mx: torch.Tensor,
    my: torch.Tensor,
    c1: float,
    c2: float,
    *,
    with_cs: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """SSIM map from filtered moments of mean-centred images and the removed means.

    With ``with_cs`` also the contrast-structure map (SSIM without the luminance term),
    which MS-SSIM uses at every scale but the coarsest.
    """
    ucx, ucy, uxx, uyy, uxy = filtered.chunk(5, dim=1)
    vx, vy, vxy = uxx - ucx * ucx, uyy - ucy * ucy, uxy - ucx * ucy
    ux, uy = ucx + mx, ucy + my
    cs = (2 * vxy + c2) / (vx + vy + c2)
    s_map = (2 * ux * uy + c1) / (ux * ux + uy * uy + c1) * cs
    return (s_map, cs) if with_cs else s_map


# Weights of the five scales of Wang, Simoncelli & Bovik (2003).
MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


def ms_ssim(
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    data_range: float,
    sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
) -> torch.Tensor:
    """Multi-scale SSIM (Wang et al. 2003), per image.

    Uses as many of the five standard scales as the image allows (the coarsest must still
    hold one SSIM window), with the standard weights renormalised over those scales.
    Negative contrast-structure values are clipped to 0 before the fractional powers.

    Args:
        x: ``(N, C, H, W)`` float tensor.
        y: Same shape.
        data_range: Value range of the images.
        sigma: Gaussian window standard deviation.
        k1: Luminance stabiliser constant.
        k2: Contrast stabiliser constant.

    Returns:
        ``(N,)`` MS-SSIM in ``[0, 1]``.

    Raises:
        ValueError: Images too small for even one scale, or bad shapes.
    """
    win = ssim_window_size(sigma)
    scales = 0
    while scales < len(MS_SSIM_WEIGHTS) and min(x.shape[-2:]) // 2**scales >= win:
        scales += 1
    if scales == 0:
        raise ValueError(
            f"images of {tuple(x.shape[-2:])} pixels are smaller than the {win}x{win} SSIM "
            "window; MS-SSIM needs larger images"
        )
    weights = torch.tensor(MS_SSIM_WEIGHTS[:scales], dtype=x.dtype, device=x.device)
    weights = weights / weights.sum()
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    values = []
    for scale in range(scales):
        if scale:
            x, y = F.avg_pool2d(x, 2), F.avg_pool2d(y, 2)
        if x.shape != y.shape or x.dim() != 4:
            raise ValueError(
                f"ms_ssim needs two equal (N, C, H, W) tensors, got {tuple(x.shape)}"
                f" and {tuple(y.shape)}"
            )
        moments, mx, my = _centred_moments(x, y)
        filtered = _separable(moments, sigma, truncate=_TRUNCATE, valid=True)
        s_map, cs = _ssim_map(filtered, mx, my, c1, c2, with_cs=True)
        term = s_map if scale == scales - 1 else cs
        values.append(term.mean(dim=(1, 2, 3)).clamp(min=0.0))
    stacked = torch.stack(values, dim=1)
    return torch.prod(stacked**weights, dim=1)


def ssim_window_size(sigma: float) -> int:
    """Side of the square SSIM window for ``sigma`` (11 for the default 1.5)."""
    return 2 * int(_TRUNCATE * sigma + 0.5) + 1


__all__ = ["gaussian_filter", "gaussian_kernel1d", "ms_ssim", "ssim", "ssim_window_size"]
