"""Reconstruction by inpainting (RIAD; Zavrtanik, Kristan and Skočaj, Pattern Recognition 2021).

The image is cut into square cells of side ``k`` and the cells are dealt into ``n``
disjoint masks. Each mask's cells are hidden (set to 0) and reconstructed by the network
from the rest; putting the ``n`` inpainted parts together gives a reconstruction in which
every pixel was predicted without seeing itself. A defect cannot be predicted from the
normal surface around it, so it stands out in the error map, whereas a plain autoencoder
(or a U-Net that sees the pixel) tends to copy it. Scoring averages the error maps of the
reconstructions at several cell sizes, so small and large defects are both covered.

Zero-masking noise (the denoising autoencoder) is the random version of this; here the
masks are systematic, and every pixel is hidden exactly once.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from anomaly.errors import ConfigError
from anomaly.training.autoencoder import AutoencoderModule


def disjoint_masks(
    height: int, width: int, cell: int, n: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """``n`` disjoint masks of ``cell``-sized squares that together cover the image.

    Cells are dealt to the masks evenly in a random order, so every mask hides about
    ``1 / n`` of the image, scattered over it.

    Args:
        height: Image height.
        width: Image width.
        cell: Side of a square cell in pixels.
        n: Number of masks.
        generator: Random source (a seeded one makes the masks reproducible).

    Returns:
        ``(n, 1, height, width)`` float tensor of 0/1 whose sum over masks is 1 everywhere.
    """
    if cell < 1 or n < 2:
        raise ValueError(f"cell must be >= 1 and n >= 2, got cell={cell}, n={n}")
    rows, cols = math.ceil(height / cell), math.ceil(width / cell)
    order = torch.randperm(rows * cols, generator=generator)
    owner = (order % n).view(rows, cols)
    owner = owner.repeat_interleave(cell, 0).repeat_interleave(cell, 1)[:height, :width]
    return torch.stack([owner == i for i in range(n)]).unsqueeze(1).float()


class InpaintingModule(AutoencoderModule):
    """Trains ``net`` (a U-Net) to inpaint hidden cells of defect-free images.

    Args:
        net: Hydra config of the network (e.g. :class:`~anomaly.models.unet.UNet`).
        loss: As in :class:`~anomaly.training.autoencoder.AutoencoderModule`; RIAD's own
            is ``riad`` (L2 + SSIM + MSGMS).
        optimizer: As in ``AutoencoderModule``.
        noise: Optional corruptions applied before masking (e.g. ``perlin``: synthetic
            defects the network has to remove as well); the target stays clean.
        lr_schedule: As in ``AutoencoderModule``.
        cell_sizes: Cell sides in pixels. Training draws one per batch; scoring averages
            the error maps of all of them.
        n_masks: Disjoint masks per cell size (each hides ``1 / n_masks`` of the image).
        seed: Seed of the scoring masks, so that an image always gets the same score.

    Raises:
        ConfigError: Invalid ``cell_sizes`` or ``n_masks`` (names the key).
    """

    def __init__(
        self,
        net: dict[str, Any],
        loss: dict[str, Any] | None = None,
        optimizer: dict[str, Any] | None = None,
        noise: list[dict[str, Any]] | None = None,
        lr_schedule: str = "constant",
        cell_sizes: Sequence[int] = (2, 4, 8, 16),
        n_masks: int = 3,
        seed: int = 0,
    ) -> None:
        cells = [int(c) for c in cell_sizes]
        if not cells or any(c < 1 for c in cells):
            raise ConfigError(
                f"model.module.cell_sizes must be positive pixel sizes, got {cell_sizes!r}"
            )
        if isinstance(n_masks, bool) or int(n_masks) < 2:
            raise ConfigError(f"model.module.n_masks must be 2 or more, got {n_masks!r}")
        super().__init__(
            net=net, loss=loss, optimizer=optimizer, noise=noise, lr_schedule=lr_schedule
        )
        self.save_hyperparameters()
        self.cell_sizes = cells
        self.n_masks = int(n_masks)
        self.seed = int(seed)

    def inpaint(
        self, x: torch.Tensor, cell: int, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Reconstruction of ``x`` in which every pixel was predicted while hidden."""
        n, c, h, w = x.shape
        masks = disjoint_masks(h, w, cell, self.n_masks, generator).to(x)
        # All masked copies in one batch: (n_masks * N, C, H, W).
        hidden = (x.unsqueeze(0) * (1.0 - masks.unsqueeze(1))).reshape(-1, c, h, w)
        recon = self.net(hidden).reshape(self.n_masks, n, c, h, w)
        return (recon * masks.unsqueeze(1)).sum(dim=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Inpainted reconstruction at the middle cell size (for pictures and the pyfunc)."""
        return self.reconstructions(x)[len(self.cell_sizes) // 2][1]

    def reconstructions(self, x: torch.Tensor) -> list[tuple[float, torch.Tensor]]:
        """One inpainted reconstruction per cell size, weighted equally."""
        out = []
        for cell in self.cell_sizes:
            generator = torch.Generator().manual_seed(self.seed + cell)
            out.append((1.0 / len(self.cell_sizes), self.inpaint(x, cell, generator)))
        return out

    def _loss(self, x: torch.Tensor, *, train: bool) -> torch.Tensor:
        inputs = self.corrupt(x) if train and self.corrupt is not None else x
        cell = self.cell_sizes[int(torch.randint(len(self.cell_sizes), ()))]
        return self.loss_fn(self.inpaint(inputs, cell), x)
