"""An autoencoder in a pretrained network's feature space (DFR, Shi, Yang & Qi 2021).

A frozen backbone (:mod:`anomaly.models.backbones`) turns the image into multi-scale
feature maps; they are brought to the finest stage's grid, concatenated, locally
averaged and standardised per channel. A small convolutional autoencoder with a narrow
bottleneck learns to reproduce the feature maps of defect-free images, and the anomaly
map is the per-position error of that reproduction, upsampled to the image: by default a
weighted geometric mean of the finest stage's error (where) and the coarser stages'
(what), so the coarse stages' wide receptive fields do not blur the outline. The same
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
    check_pooling,
    pool_features,
)

PATCH_GRIDS = ("fine", "coarse")


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
        fine_weight: Share of the finest stage's error in the map, which is
            ``fine ** w * coarse ** (1 - w)`` of the mean squared errors of the finest
            stride's channels and of the others'. None: the mean over all channels
            (DFR's map), also when every stage has the finest stride.
        pooling: How the feature score's statistics are pooled
            (:func:`~anomaly.models.inspection.pool_features`); ``raw`` for models trained
            before it was a setting.
        patch_grid: The positions the patch map remembers: ``fine``, every position of
            all the features (as models trained before it was a setting); ``coarse``,
            the coarse stages' channels at their own stride (the middle of every cell of
            ``coarse_step`` fine positions), where one position describes a patch of
            texture.
    """

    gives = frozenset({MAP, IMAGE_FEATURES, PATCH_FEATURES})

    def __init__(
        self,
        backbone: dict[str, Any] | None = None,
        bottleneck: int = 32,
        hidden: int | None = None,
        smoothing: int = 3,
        fine_weight: float | None = None,
        pooling: str = "raw",
        patch_grid: str = "fine",
    ) -> None:
        super().__init__()
        check_pooling(pooling)
        if patch_grid not in PATCH_GRIDS:
            raise ValueError(f"patch_grid must be one of {PATCH_GRIDS}, got {patch_grid!r}")
        if smoothing < 1 or smoothing % 2 == 0:
            raise ValueError(f"smoothing must be an odd side >= 1, got {smoothing}")
        if fine_weight is not None and not 0.0 <= fine_weight <= 1.0:
            raise ValueError(f"fine_weight must be in [0, 1] or null, got {fine_weight}")
        self.backbone = Backbone(**(backbone or {}))
        self.smoothing = int(smoothing)
        self.pooling = pooling
        self.fine_weight = None if fine_weight is None else float(fine_weight)
        strides, widths = self.backbone.strides, self.backbone.channels
        # Stages come shallow first, so the finest stride's channels lead the features.
        self.fine_channels = sum(c for c, s in zip(widths, strides, strict=True) if s == strides[0])
        # Where every stage is as fine, there is no coarse grid: the fine one serves.
        self.patch_grid = patch_grid if self.fine_channels < sum(widths) else "fine"
        self.coarse_step = strides[-1] // strides[0]
        channels = sum(widths)
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

    def difference(self, f: torch.Tensor) -> torch.Tensor:
        """Reconstruction minus features, per channel and position ``(N, C, h, w)``."""
        reconstruction = self.autoencoder(f)
        # In place where nothing is trained through it: one (N, C, h, w) tensor less.
        return reconstruction.sub_(f) if not torch.is_grad_enabled() else reconstruction - f

    def error(self, f: torch.Tensor) -> torch.Tensor:
        """Per-position squared reconstruction error ``(N, 1, h, w)``, mean over channels."""
        return _mean_square(self.difference(f))

    def score_map(self, f: torch.Tensor) -> torch.Tensor:
        """Per-position anomaly score ``(N, 1, h, w)`` at the feature grid (see ``fine_weight``)."""
        difference = self.difference(f)
        w, n = self.fine_weight, self.fine_channels
        if w is None or n == difference.shape[1]:
            return _mean_square(difference)
        # The coarse stages' error spreads over their whole receptive field around a
        # defect (a halo that outscores faint defects elsewhere: the demo's pooled pixel
        # AUROC 0.970 against 0.999 with defect-free photos' pixels alone); the finest
        # stage's error outlines it. A product keeps what both see.
        fine = _mean_square(difference[:, :n])
        coarse = _mean_square(difference[:, n:])
        return fine.pow(w) * coarse.pow(1.0 - w)

    def inspect(self, x: torch.Tensor, wants: Wants) -> Inspection:
        """The error map at the input's size, and the features, from one backbone pass."""
        f = self.features(x)
        out = Inspection()
        if wants.map:
            out.map = F.interpolate(
                self.score_map(f), size=x.shape[-2:], mode="bilinear", align_corners=False
            )
        if wants.image_features:
            out.image_features = pool_features(f, self.pooling)
        if wants.patch_features:
            out.patch_features = self.patch_features(f)
        return out

    def patch_features(self, f: torch.Tensor) -> torch.Tensor:
        """The positions the patch map compares, from :meth:`features` ``f``.

        On the coarse grid, the coarse stages' channels at the middle of each of their
        cells: the fine stage's channels there would only add noise to the distance.
        """
        if self.patch_grid == "fine":
            return f
        step = self.coarse_step
        return f[:, self.fine_channels :, step // 2 :: step, step // 2 :: step]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The anomaly map ``(N, 1, H, W)``."""
        return self.inspect(x, Wants()).map


def _mean_square(d: torch.Tensor) -> torch.Tensor:
    """Mean of the squares over the channels, ``(N, 1, h, w)``.

    As a squared norm: one pass over ``d`` instead of a squared copy and its mean, which
    made up a fifth of feature_ae's head at 560x224 (the same to float rounding). Plain
    squares where the loss is trained through it: the norm's gradient is 0/0 at zero.
    """
    if torch.is_grad_enabled():
        return d.square().mean(dim=1, keepdim=True)
    return torch.linalg.vector_norm(d, dim=1, keepdim=True).square() / d.shape[1]
