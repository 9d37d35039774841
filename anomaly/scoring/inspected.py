"""What the detector gives for a batch (:class:`Inspected`), and which add-ons a model can take."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from anomaly.data.transforms import Preprocess
from anomaly.models.inspection import inspectable
from anomaly.scoring.addons import AddOn

Images = torch.Tensor | Sequence[torch.Tensor]


def gives(model: nn.Module, preprocess: Preprocess, addon: AddOn) -> bool:
    """Whether ``model`` gives what ``addon`` needs under ``preprocess``.

    Tile mode never does: a window is not an image, and a memory of whole-image
    positions does not describe windows.
    """
    return addon.needs in inspectable(model).gives and not preprocess.tile


@dataclass
class Inspected:
    """A batch of images as the detector sees them (:meth:`Detector.inspect`).

    Attributes:
        maps: Smoothed anomaly maps, one ``(1, h, w)`` per image: the model's map plus,
            once calibrated, the weighted patch map.
        distances: The images' second image score ``(N,)``, fused with the map's: the
            feature score, or the model's own (GANomaly's latent distance); None without.
        model_maps: The model's smoothed maps alone (``maps`` without the patch map).
        patch_maps: Smoothed, unweighted patch maps (None without the patch map).
        reconstructions: The first reconstruction of each image, when asked for.
        image_features: ``(N, D)`` float64 features, when asked for.
        patch_features: ``(N, D, h, w)`` feature maps, when asked for.
    """

    maps: list[torch.Tensor]
    distances: np.ndarray | None = None
    model_maps: list[torch.Tensor] | None = None
    patch_maps: list[torch.Tensor] | None = None
    reconstructions: list[torch.Tensor] | None = None
    image_features: np.ndarray | None = None
    patch_features: torch.Tensor | None = None
