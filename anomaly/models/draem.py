"""DRAEM's inference networks: one model, and an ensemble of them at several resolutions.

Pure ``nn.Module``s (no training code, no Lightning): what a trained DRAEM is when it
scores. The Lightning modules that train them are in :mod:`anomaly.training.draem` and
:mod:`anomaly.training.ensemble`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from anomaly.data.transforms import standardize_batch
from anomaly.models.inspection import (
    IMAGE_FEATURES,
    MAP,
    PATCH_FEATURES,
    RECONSTRUCTION,
    Inspection,
    Wants,
    pool_features,
)
from anomaly.models.unet import UNet
from anomaly.similarity.gms import msgms_map
from anomaly.similarity.ssim import gaussian_filter

# Member input sides are rounded to a multiple of this (the 2**depth of the default
# U-Nets and the stated constraint of data.image_size).
SIDE_MULTIPLE = 16


class DraemNetwork(nn.Module):
    """Reconstruct, then segment where image and reconstruction disagree.

    Args:
        reconstructive: Gives the clean image back; a :class:`UNet` also gives its
            bottleneck as features (one encoder pass for map and features).
        discriminative: Takes image and reconstruction side by side, gives one logit
            channel.
        recon_map_weight: Weight of the blurred reconstruction error (1 - MSGMS) added to
            the segmenter's probability in the map; 0 for DRAEM's map.
        recon_map_sigma: Blur (pixels) of that error; 0 for none.
        input_normalize: ``mean_std`` brings each image to a fixed mean and spread first.
    """

    def __init__(
        self,
        reconstructive: nn.Module,
        discriminative: nn.Module,
        *,
        recon_map_weight: float = 0.0,
        recon_map_sigma: float = 8.0,
        input_normalize: str = "none",
    ) -> None:
        super().__init__()
        self.reconstructive = reconstructive
        self.discriminative = discriminative
        self.recon_map_weight = float(recon_map_weight)
        self.recon_map_sigma = float(recon_map_sigma)
        self.input_normalize = input_normalize
        features = {IMAGE_FEATURES, PATCH_FEATURES} if isinstance(reconstructive, UNet) else set()
        self.gives = frozenset({MAP, RECONSTRUCTION, *features})

    def prepared(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` as the networks see it (normalised with ``input_normalize=mean_std``)."""
        return standardize_batch(x) if self.input_normalize == "mean_std" else x

    def segment(self, x: torch.Tensor, recon: torch.Tensor) -> torch.Tensor:
        """Anomaly logits ``(N, 1, H, W)`` of (prepared) inputs and their reconstructions."""
        return self.discriminative(torch.cat([x, recon], dim=1))

    def anomaly_map(self, x: torch.Tensor, recon: torch.Tensor) -> torch.Tensor:
        """The map of prepared inputs and their reconstructions, ``(N, 1, H, W)``.

        The segmenter's probability (``[0, 1]``), plus ``recon_map_weight`` times the
        blurred reconstruction error (``[0, 1 + recon_map_weight]`` then).
        """
        probability = torch.sigmoid(self.segment(x, recon))
        if self.recon_map_weight == 0:
            return probability
        error = 1.0 - msgms_map(x, recon).mean(dim=1, keepdim=True)
        if self.recon_map_sigma > 0:
            error = gaussian_filter(error, self.recon_map_sigma)
        return probability + self.recon_map_weight * error

    def inspect(self, x: torch.Tensor, wants: Wants) -> Inspection:
        """Map, reconstruction and bottleneck features of ``x`` from one encoder pass."""
        x = self.prepared(x)
        out = Inspection()
        need_recon = wants.map or wants.reconstruction
        if IMAGE_FEATURES in self.gives:
            levels = self.reconstructive.levels(x)
            recon = self.reconstructive.decode(levels) if need_recon else None
            if wants.image_features:
                out.image_features = pool_features(levels[-1])
            if wants.patch_features:
                out.patch_features = levels[-1]
        else:
            recon = self.reconstructive(x) if need_recon else None
        if recon is not None:
            out.reconstructions = [(1.0, recon)]
            if wants.map:
                out.map = self.anomaly_map(x, recon)
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The anomaly map of ``x``, ``(N, 1, H, W)``."""
        return self.inspect(x, Wants()).map


def member_size(size: Sequence[int], scale: float) -> tuple[int, int]:
    """The input size ``(h, w)`` of a member that sees ``size`` scaled by ``scale``.

    Each side is rounded to the nearest multiple of 16 (at least 16), so a U-Net of depth
    4 can take it.
    """
    h, w = (max(SIDE_MULTIPLE, round(s * scale / SIDE_MULTIPLE) * SIDE_MULTIPLE) for s in size)
    return h, w


def resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``x`` resized to ``size`` (itself when it has that size)."""
    if tuple(x.shape[-2:]) == size:
        return x
    # antialias: a member at a lower resolution should see the image, not its aliasing.
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)


class EnsembleNetwork(nn.Module):
    """Members that make their own maps, each at its resolution; the map is their mean.

    Args:
        members: Inspectable models that give :data:`MAP` (DRAEM networks).
        scales: Each member's resolution relative to the input.
    """

    def __init__(self, members: Sequence[nn.Module], scales: Sequence[float]) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)
        self.scales = [float(s) for s in scales]
        self.gives = frozenset.intersection(*(frozenset(m.gives) for m in members))

    def inspect(self, x: torch.Tensor, wants: Wants) -> Inspection:
        """The members' mean map, the first's reconstruction and their features side by side.

        Image features are concatenated, so one Gaussian over all sees how the members'
        views vary together. Feature maps of a member at another resolution are resized
        to the first member's grid, so each position describes the same part of the image.
        """
        size = tuple(x.shape[-2:])
        parts = [
            m.inspect(resize(x, member_size(size, s)), wants)
            for m, s in zip(self.members, self.scales, strict=True)
        ]
        out = Inspection()
        if wants.map:
            out.map = torch.stack([resize(p.map, size) for p in parts]).mean(dim=0)
        if parts[0].reconstructions:
            out.reconstructions = [(1.0, resize(parts[0].reconstructions[0][1], size))]
        if wants.image_features:
            out.image_features = torch.cat([p.image_features for p in parts], dim=1)
        if wants.patch_features:
            grid = tuple(parts[0].patch_features.shape[-2:])
            maps = [p.patch_features for p in parts]
            out.patch_features = torch.cat(
                [h if tuple(h.shape[-2:]) == grid else F.interpolate(h, size=grid, mode="bilinear")
                 for h in maps],
                dim=1,
            )  # fmt: skip
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The mean anomaly map of ``x``, ``(N, 1, H, W)``."""
        return self.inspect(x, Wants()).map
