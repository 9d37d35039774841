"""Array/tensor conversions and resizing, shared by training and scoring."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F

from anomaly.errors import ConfigError


@dataclass(frozen=True)
class Preprocess:
    """How an image file becomes a model input; stored with every model.

    Attributes:
        image_size: Model input ``(height, width)`` in pixels.
        channels: 1 (gray) or 3 (RGB).
    """

    image_size: tuple[int, int]
    channels: int

    @classmethod
    def create(cls, *, image_size: int | Sequence[int], channels: int) -> Preprocess:
        """Build from config values, validating them.

        Args:
            image_size: An int for a square input or ``[height, width]``.
            channels: 1 or 3.

        Raises:
            ConfigError: A value is out of range (names ``data.image_size``/``data.channels``).
        """
        size = (int(image_size), int(image_size)) if _is_int(image_size) else tuple(image_size)
        if len(size) != 2 or not all(_is_int(s) and int(s) > 0 for s in size):
            raise ConfigError(
                f"data.image_size must be a positive int or [height, width], got {image_size!r}"
            )
        if channels not in (1, 3):
            raise ConfigError(f"data.channels must be 1 (gray) or 3 (RGB), got {channels!r}")
        return cls(image_size=(int(size[0]), int(size[1])), channels=int(channels))

    def to_dict(self) -> dict[str, object]:
        """Plain, JSON-serialisable form."""
        data = asdict(self)
        data["image_size"] = list(self.image_size)
        return data

    def __call__(self, image: np.ndarray) -> torch.Tensor:
        """Turn an ``(H, W, C)`` float array into a model input ``(C, h, w)``."""
        return resize_image(to_tensor(image), self.image_size)


def _is_int(value: object) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def to_tensor(image: np.ndarray) -> torch.Tensor:
    """Convert an ``(H, W, C)`` array to a float32 ``(C, H, W)`` tensor (no copy of values)."""
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1), dtype=np.float32))


def resize_image(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resize an image with antialiased bilinear interpolation.

    Args:
        image: ``(C, H, W)`` or ``(N, C, H, W)`` float tensor in ``[0, 1]``.
        size: Target ``(height, width)``.

    Returns:
        Tensor of the same rank at the target size, values clamped to ``[0, 1]``.
    """
    if tuple(image.shape[-2:]) == tuple(size):
        return image
    batched = image if image.dim() == 4 else image[None]
    out = F.interpolate(batched, size=size, mode="bilinear", antialias=True, align_corners=False)
    out = out.clamp_(0.0, 1.0)
    return out if image.dim() == 4 else out[0]


def resize_mask(mask: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resize a binary mask with nearest-neighbour interpolation.

    Args:
        mask: ``(1, H, W)`` or ``(N, 1, H, W)`` tensor of 0/1 values.
        size: Target ``(height, width)``.
    """
    if tuple(mask.shape[-2:]) == tuple(size):
        return mask
    batched = mask if mask.dim() == 4 else mask[None]
    out = F.interpolate(batched.float(), size=size, mode="nearest")
    return out if mask.dim() == 4 else out[0]


def resize_map(score_map: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resize an anomaly map back to an original image size (bilinear, no antialias).

    Args:
        score_map: ``(1, h, w)`` or ``(N, 1, h, w)`` float tensor.
        size: Target ``(height, width)``.
    """
    if tuple(score_map.shape[-2:]) == tuple(size):
        return score_map
    batched = score_map if score_map.dim() == 4 else score_map[None]
    out = F.interpolate(batched, size=size, mode="bilinear", align_corners=False)
    return out if score_map.dim() == 4 else out[0]
