"""Array/tensor conversions and resizing, shared by training and scoring."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from anomaly.errors import ConfigError

# Per-image intensity normalisation (data.normalize).
NORMALIZE = ("none", "mean_std")
# mean_std maps each image to this mean and spread: +-3.3 standard deviations stay inside
# [0, 1], where the sigmoid decoders can reproduce them.
_TARGET_MEAN, _TARGET_STD = 0.5, 0.15


def check_normalize(value: str, key: str) -> None:
    """Raise a :class:`ConfigError` naming ``key`` when ``value`` is not in :data:`NORMALIZE`."""
    if value not in NORMALIZE:
        raise ConfigError(f"{key}={value!r} is unknown; choose one of {NORMALIZE}")


def _is_int(value: object) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _pair(value: int | Sequence[int], key: str) -> tuple[int, int]:
    size = (value, value) if _is_int(value) else tuple(value)
    if len(size) != 2 or not all(_is_int(s) and int(s) > 0 for s in size):
        raise ConfigError(f"{key} must be a positive int or [height, width], got {value!r}")
    return int(size[0]), int(size[1])


@dataclass(frozen=True)
class Preprocess:
    """How an image file becomes model input; stored with every model.

    Two modes:

    - resize (default): the whole image is resized to ``image_size`` (aspect ratio is not
      kept); maps are resized back to the original size.
    - tile: the image is scaled by ``scale`` (aspect ratio kept) and inspected in
      overlapping ``image_size`` windows ``tile_stride`` apart, whose maps are stitched by
      averaging, so a large photo is inspected at full detail instead of being shrunk.

    Attributes:
        image_size: Model input ``(height, width)`` in pixels (the window in tile mode).
        channels: 1 (gray) or 3 (RGB).
        tile: Tile mode instead of resize mode.
        scale: Tile mode: factor applied to the original image first (1.0 = native).
        tile_stride: Tile mode: ``(row, col)`` step between windows; half a window when None.
        normalize: ``none``, or ``mean_std``: every image is shifted and stretched to the
            same mean and standard deviation, so that exposure and lamp drift between
            photos are not reported as defects (the model never sees them either).
        upright: Resize mode: a photo whose orientation (wider than tall, or taller than
            wide) is the opposite of the input's is transposed first, so it is not
            squeezed into the input; its maps are transposed back (:meth:`to_photo`).
    """

    image_size: tuple[int, int]
    channels: int
    tile: bool = False
    scale: float = 1.0
    tile_stride: tuple[int, int] | None = None
    normalize: str = "none"
    upright: bool = False

    @classmethod
    def create(
        cls,
        *,
        image_size: int | Sequence[int],
        channels: int,
        tile: bool = False,
        scale: float = 1.0,
        tile_stride: int | Sequence[int] | None = None,
        normalize: str = "none",
        upright: bool = False,
    ) -> Preprocess:
        """Build from config values, validating them.

        Raises:
            ConfigError: A value is out of range (names the ``data.*`` key).
        """
        size = _pair(image_size, "data.image_size")
        if channels not in (1, 3):
            raise ConfigError(f"data.channels must be 1 (gray) or 3 (RGB), got {channels!r}")
        if not (isinstance(scale, (int, float)) and 0 < scale <= 8):
            raise ConfigError(f"data.scale must be in (0, 8], got {scale!r}")
        stride = None if tile_stride is None else _pair(tile_stride, "data.tile_stride")
        if stride is not None and (stride[0] > size[0] or stride[1] > size[1]):
            raise ConfigError(
                f"data.tile_stride {stride} is larger than the window {size}: parts of the "
                "image would never be inspected"
            )
        check_normalize(normalize, "data.normalize")
        if upright not in (True, False):
            raise ConfigError(f"data.upright must be true or false here, got {upright!r}")
        if upright and tile:
            raise ConfigError(
                "data.upright applies to resize mode only (tiles keep the photo's shape); "
                "set data.upright=false or data.tile=false"
            )
        return cls(size, int(channels), bool(tile), float(scale), stride, normalize, upright)

    def turns(self, height: int, width: int) -> bool:
        """Whether a photo of ``(height, width)`` is transposed before it is resized."""
        h, w = self.image_size
        return self.upright and height != width and h != w and (width > height) != (w > h)

    def to_photo(self, score_map: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """A ``(1, h, w)`` map at the model's size, as the photo of ``size`` lies, resized."""
        if self.turns(*size):
            score_map = score_map.transpose(-1, -2)
        return resize_map(score_map, size)

    @property
    def stride(self) -> tuple[int, int]:
        """Step between tiles (half a window by default)."""
        if self.tile_stride is not None:
            return self.tile_stride
        return max(1, self.image_size[0] // 2), max(1, self.image_size[1] // 2)

    def working_size(self, height: int, width: int) -> tuple[int, int]:
        """Size at which an image of ``(height, width)`` is inspected."""
        if not self.tile:
            return self.image_size
        return max(1, round(height * self.scale)), max(1, round(width * self.scale))

    def to_dict(self) -> dict[str, object]:
        """Plain, JSON-serialisable form."""
        return {
            "image_size": list(self.image_size),
            "channels": self.channels,
            "tile": self.tile,
            "scale": self.scale,
            "tile_stride": None if self.tile_stride is None else list(self.tile_stride),
            "normalize": self.normalize,
            "upright": self.upright,
        }

    def __call__(self, image: np.ndarray) -> torch.Tensor:
        """Turn an ``(H, W, C)`` float array into a ``(C, h, w)`` tensor at working size."""
        if self.turns(*image.shape[:2]):
            image = np.swapaxes(image, 0, 1)
        out = resize_image(to_tensor(image), self.working_size(*image.shape[:2]))
        return standardize(out) if self.normalize == "mean_std" else out


def standardize(image: torch.Tensor) -> torch.Tensor:
    """Shift and stretch a ``(C, H, W)`` image to a fixed mean and standard deviation.

    Statistics are over all pixels and channels, so colour balance is kept; a flat image
    only gets its mean moved. Values are clipped to ``[0, 1]``.
    """
    return standardize_batch(image.unsqueeze(0)).squeeze(0)


def standardize_batch(images: torch.Tensor) -> torch.Tensor:
    """:func:`standardize` applied to each image of an ``(N, C, H, W)`` batch on its own."""
    flat = images.flatten(1)
    mean = flat.mean(dim=1).view(-1, 1, 1, 1)
    if flat.shape[1] > 1:
        std = flat.std(dim=1).view(-1, 1, 1, 1)
    else:
        std = torch.zeros_like(mean)
    scale = torch.where(std > 1e-6, _TARGET_STD / std.clamp_min(1e-6), torch.ones_like(std))
    return ((images - mean) * scale + _TARGET_MEAN).clamp_(0.0, 1.0)


def to_tensor(image: np.ndarray) -> torch.Tensor:
    """Convert an ``(H, W, C)`` array to a float32 ``(C, H, W)`` tensor."""
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
        return mask.float()
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
