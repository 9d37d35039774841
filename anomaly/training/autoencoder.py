"""The LightningModule that trains a reconstruction autoencoder on defect-free images."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate

from anomaly.training.losses import build_loss

_DEFAULT_OPTIMIZER = {
    "_target_": "torch.optim.Adam",
    "_partial_": True,
    "lr": 2e-4,
    "weight_decay": 1e-5,
}


class AutoencoderModule(pl.LightningModule):
    """Trains ``net`` to reconstruct its input with the configured loss.

    Every argument is a plain value (dicts with Hydra ``_target_`` keys), stored with
    ``save_hyperparameters()``, so a checkpoint reloads with
    ``AutoencoderModule.load_from_checkpoint(path)`` and nothing else.

    Args:
        net: Hydra config of the ``nn.Module`` (e.g. ``ConvAutoencoder``).
        loss: ``{"name": "l2" | "ssim", ...}`` keyword arguments of ``build_loss``.
        optimizer: Hydra config of a partial optimiser (``_partial_: true``); Adam with the
            paper's lr 2e-4 and weight decay 1e-5 when omitted.
    """

    def __init__(
        self,
        net: dict[str, Any],
        loss: dict[str, Any] | None = None,
        optimizer: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = instantiate(net, _convert_="all")
        self.loss_fn = build_loss(**(loss or {"name": "l2"}))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Reconstruct images ``(N, C, H, W)`` in ``[0, 1]``."""
        return self.net(x)

    def reconstructions(self, x: torch.Tensor) -> list[tuple[float, torch.Tensor]]:
        """``(weight, reconstruction)`` pairs whose weighted error maps form the anomaly map."""
        return [(1.0, self.net(x))]

    def _step(self, batch: dict[str, Any], stage: str) -> torch.Tensor:
        x = batch["image"]
        loss = self.loss_fn(self.net(x), x)
        self.log(
            f"{stage}/loss",
            loss,
            on_step=False,
            on_epoch=True,
            prog_bar=True,
            batch_size=x.shape[0],
        )
        return loss

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        """One optimisation step on a batch of defect-free images."""
        return self._step(batch, "train")

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        """Reconstruction loss on held-out defect-free images."""
        return self._step(batch, "val")

    def configure_optimizers(self) -> torch.optim.Optimizer:
        """Build the optimiser from its partial config."""
        factory = instantiate(self.hparams.optimizer or _DEFAULT_OPTIMIZER)
        return factory(params=self.parameters())
