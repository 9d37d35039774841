"""Input corruptions for the denoising autoencoder (training inputs only).

The target stays the clean image, so the network learns to *remove* what the corruption
adds. Every corruption takes and returns a batch ``(N, C, H, W)`` in ``[0, 1]``.
Randomness comes from torch's generator, which ``seed_everything`` seeds.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from anomaly.data.synthetic.anomalies import (
    ANOMALY_RANGES,
    check_anomaly_params,
    perlin_texture,
)
from anomaly.data.synthetic.perlin import PERLIN_RANGES
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
    **PERLIN_RANGES,
    **ANOMALY_RANGES,
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


# Checks that involve more than one parameter or a non-number, by corruption name.
_CHECKS: dict[str, Callable[[str, Mapping[str, Any]], None]] = {
    "perlin_texture": check_anomaly_params,
}


def _bind(fn: Callable[..., torch.Tensor], params: dict[str, Any]) -> Corrupt:
    return lambda x: fn(x, **params)
