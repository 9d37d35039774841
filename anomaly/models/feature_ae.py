"""An autoencoder in a pretrained network's feature space (DFR, Shi, Yang & Qi 2021).

A frozen backbone (:mod:`anomaly.models.backbones`) turns the image into multi-scale
feature maps; they are brought to the finest stage's grid, concatenated, locally
averaged and standardised per channel. A small convolutional autoencoder with a narrow
bottleneck learns to reproduce the feature maps of defect-free images, and the anomaly
map is the per-position error of that reproduction, upsampled to the image. The same
features serve the feature score and the patch map (nearest training position), so one
forward pass gives all three.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from anomaly.models.backbones import Backbone
from anomaly.models.inspection import (
    IMAGE_FEATURES,
    MAP,
    PATCH_FEATURES,
    Inspection,
    Wants,
    pool_features,
)


class FeatureAutoencoder(nn.Module):
    """1×1 and 3×3 convolutions from ``channels`` down to ``bottleneck`` and back.

    DFR's design: the positions are reconstructed from their own and their neighbours'
    features through a code narrower than the features, so what is common in normal
    images passes and what is new does not.

    Args:
        channels: Feature channels in and out.
        bottleneck: Code channels.
        hidden: Channels of the layers on either side of the code; the mean of the two
            when None.
    """

    def __init__(self, channels: int, bottleneck: int = 32, hidden: int | None = None) -> None:
        super().__init__()
        if not 0 < bottleneck < channels:
            raise ValueError(f"bottleneck must be in (0, {channels}), got {bottleneck}")
        hidden = hidden or (channels + bottleneck) // 2

        def block(c_in: int, c_out: int, k: int) -> list[nn.Module]:
            return [nn.Conv2d(c_in, c_out, k, padding=k // 2), nn.BatchNorm2d(c_out), nn.ReLU()]

        self.encoder = nn.Sequential(
            *block(channels, hidden, 1), *block(hidden, hidden, 3), nn.Conv2d(hidden, bottleneck, 1)
        )
        self.decoder = nn.Sequential(
            *block(bottleneck, hidden, 1), *block(hidden, hidden, 3), nn.Conv2d(hidden, channels, 1)
        )

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        """Reconstruct feature maps ``(N, channels, h, w)``."""
        return self.decoder(self.encoder(f))


class FeatureAENetwork(nn.Module):
    """Backbone features, their autoencoder, and the map of its error.

    Args:
        backbone: Keyword arguments of :class:`~anomaly.models.backbones.Backbone`.
        bottleneck: Code channels of the autoencoder.
        hidden: Its hidden channels (None: between features and code).
        smoothing: Side of the local average over feature positions (PatchCore's
            neighbourhood aggregation; 1 for none).
    """

    gives = frozenset({MAP, IMAGE_FEATURES, PATCH_FEATURES})

    def __init__(
        self,
        backbone: dict[str, Any] | None = None,
        bottleneck: int = 32,
        hidden: int | None = None,
        smoothing: int = 3,
    ) -> None:
        super().__init__()
        if smoothing < 1 or smoothing % 2 == 0:
            raise ValueError(f"smoothing must be an odd side >= 1, got {smoothing}")
        self.backbone = Backbone(**(backbone or {}))
        self.smoothing = int(smoothing)
        channels = sum(self.backbone.channels)
        # Per-channel statistics of the training features, cumulated over all batches
        # (momentum None): the stages' scales differ by an order of magnitude.
        self.norm = nn.BatchNorm2d(channels, affine=False, momentum=None)
        self.autoencoder = FeatureAutoencoder(channels, bottleneck, hidden)

    @property
    def stride(self) -> int:
        """Input pixels per feature position."""
        return self.backbone.strides[0]

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Standardised feature maps ``(N, C, H / stride, W / stride)`` of inputs ``x``.

        The first call in train mode updates the channel statistics.
        """
        with torch.no_grad():
            # Channels-last throughout (cat keeps it): resampling and the local average run
            # about 10x faster on CPU in that layout.
            maps = [m.contiguous(memory_format=torch.channels_last) for m in self.backbone(x)]
            size = maps[0].shape[-2:]
            maps = [maps[0]] + [
                F.interpolate(m, size=size, mode="bilinear", align_corners=False) for m in maps[1:]
            ]
            f = torch.cat(maps, dim=1)
            if self.smoothing > 1:
                pad = self.smoothing // 2
                f = F.avg_pool2d(F.pad(f, (pad,) * 4, mode="replicate"), self.smoothing, stride=1)
            return self.norm(f)

    def error(self, f: torch.Tensor) -> torch.Tensor:
        """Per-position squared reconstruction error ``(N, 1, h, w)``, mean over channels."""
        return (self.autoencoder(f) - f).pow(2).mean(dim=1, keepdim=True)

    def inspect(self, x: torch.Tensor, wants: Wants) -> Inspection:
        """The error map at the input's size, and the features, from one backbone pass."""
        f = self.features(x)
        out = Inspection()
        if wants.map:
            out.map = F.interpolate(
                self.error(f), size=x.shape[-2:], mode="bilinear", align_corners=False
            )
        if wants.image_features:
            out.image_features = pool_features(f)
        if wants.patch_features:
            out.patch_features = f
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The anomaly map ``(N, 1, H, W)``."""
        return self.inspect(x, Wants()).map
