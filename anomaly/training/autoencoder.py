"""The LightningModule that trains a reconstruction autoencoder on defect-free images.

One module serves the convolutional AE, the denoising AE (with ``noise``), the linear and
dense baselines and the VAE (whose net adds a KL term through ``forward_train``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate

from anomaly.errors import ConfigError
from anomaly.models.inspection import RECONSTRUCTION, Inspection, Wants
from anomaly.training.corruptions import build_corruption
from anomaly.training.losses import build_loss

LR_SCHEDULES = ("constant", "cosine")
DEFAULT_OPTIMIZER = {
    "_target_": "torch.optim.Adam",
    "_partial_": True,
    "lr": 2e-4,
    "weight_decay": 1e-5,
}


class AutoencoderModule(pl.LightningModule):
    """Trains ``net`` to reconstruct its (optionally corrupted) input with the loss.

    Every argument is a plain value (dicts with Hydra ``_target_`` keys), stored with
    ``save_hyperparameters()``, so a checkpoint reloads with
    ``AutoencoderModule.load_from_checkpoint(path)`` and nothing else.

    Args:
        net: Hydra config of the ``nn.Module`` (e.g. ``ConvAutoencoder``). A net with
            ``forward_train(x) -> (reconstruction, extra_loss)`` (the VAE) is trained
            through it.
        loss: ``{"name": ..., ...}`` keyword arguments of ``build_loss``.
        optimizer: Hydra config of a partial optimiser (``_partial_: true``); Adam with the
            paper's lr 2e-4 and weight decay 1e-5 when omitted.
        noise: Corruptions of the training inputs (``noise.corruptions``): the denoising
            autoencoder. Validation and scoring inputs are never corrupted.
        lr_schedule: ``constant``, or ``cosine``: the learning rate decays from its
            configured value to 0 along a cosine over the whole training, step by step
            (longer trainings settle into a sharper minimum).
    """

    def __init__(
        self,
        net: dict[str, Any],
        loss: dict[str, Any] | None = None,
        optimizer: dict[str, Any] | None = None,
        noise: list[dict[str, Any]] | None = None,
        lr_schedule: str = "constant",
    ) -> None:
        super().__init__()
        check_lr_schedule(lr_schedule)
        self.save_hyperparameters()
        self.net = instantiate(net, _convert_="all")
        self.loss_fn = build_loss(**(loss or {"name": "l2"}))
        self.corrupt = build_corruption(noise)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Reconstruct images ``(N, C, H, W)``."""
        return self.net(x)

    gives = frozenset({RECONSTRUCTION})

    def inspect(self, x: torch.Tensor, wants: Wants) -> Inspection:
        """The reconstructions, whose error maps the detector turns into the map."""
        return Inspection(reconstructions=self.reconstructions(x))

    def reconstructions(self, x: torch.Tensor) -> list[tuple[float, torch.Tensor]]:
        """``(weight, reconstruction)`` pairs whose weighted error maps form the anomaly map."""
        return [(1.0, self.net(x))]

    def _loss(self, x: torch.Tensor, *, train: bool) -> torch.Tensor:
        inputs = self.corrupt(x) if train and self.corrupt is not None else x
        train_fn = getattr(self.net, "forward_train", None)
        if train_fn is not None:
            recon, extra = train_fn(inputs)
            # Kept for the log: how much of the loss the penalty (KL, sparsity, Jacobian) is.
            self._penalty = extra.detach()
            return self.loss_fn(recon, x) + extra
        return self.loss_fn(self.net(inputs), x)

    def _logged_loss(self, batch: dict[str, Any], stage: str) -> torch.Tensor:
        self._penalty: torch.Tensor | None = None
        loss = self._loss(batch["image"], train=stage == "train")
        if self._penalty is not None:
            self.log(
                f"{stage}/penalty",
                self._penalty,
                on_step=False,
                on_epoch=True,
                sync_dist=True,
                batch_size=batch["image"].shape[0],
            )
        self.log(
            f"{stage}/loss",
            loss,
            on_step=False,
            on_epoch=True,
            prog_bar=True,
            # Under DDP: the mean over all ranks, not rank 0's share.
            sync_dist=True,
            batch_size=batch["image"].shape[0],
        )
        return loss

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        """One optimisation step on a batch of (corrupted) defect-free images."""
        return self._logged_loss(batch, "train")

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        """Reconstruction loss on held-out, uncorrupted defect-free images."""
        return self._logged_loss(batch, "val")

    def configure_optimizers(self) -> Any:
        """Build the optimiser from its partial config, with the learning-rate schedule."""
        return configure_optimizer(self)


def check_lr_schedule(lr_schedule: str) -> None:
    """Reject an unknown ``model.module.lr_schedule`` when the module is built.

    Raises:
        ConfigError: Not one of :data:`LR_SCHEDULES`.
    """
    if lr_schedule not in LR_SCHEDULES:
        raise ConfigError(
            f"model.module.lr_schedule={lr_schedule!r} is unknown; choose one of {LR_SCHEDULES}"
        )


def configure_optimizer(
    module: pl.LightningModule, *, settings: Mapping[str, Any] | None = None
) -> Any:
    """Lightning's ``configure_optimizers`` result for a module's hyper-parameters.

    ``optimizer`` (a partial optimiser config, Adam by default) over all parameters, and
    with ``lr_schedule: cosine`` a step-wise cosine decay to 0 over the whole training.

    Args:
        module: The module whose parameters are optimised.
        settings: Where ``optimizer`` and ``lr_schedule`` are read; the module's
            hyper-parameters when None (an ensemble passes its members' settings).
    """
    settings = module.hparams if settings is None else settings
    factory = instantiate(settings.get("optimizer") or DEFAULT_OPTIMIZER)
    optimizer = factory(params=module.parameters())
    if settings.get("lr_schedule", "constant") == "constant":
        return optimizer
    scheduler = cosine_scheduler(optimizer, module.trainer)
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def cosine_scheduler(
    optimizer: torch.optim.Optimizer, trainer: pl.Trainer, *, steps_per_batch: int = 1
) -> torch.optim.lr_scheduler.CosineAnnealingLR:
    """A cosine decay of ``optimizer``'s learning rate to 0, stepped once per batch.

    Args:
        optimizer: The optimiser whose learning rate decays.
        trainer: The trainer whose epochs (or ``max_steps``) fix the number of batches.
        steps_per_batch: Optimiser steps the module takes per batch (USAD's two phases
            take 2); Lightning counts ``max_steps`` in those steps, not in batches.

    Raises:
        ConfigError: The training has no end (``max_epochs=-1`` without ``max_steps``), so
            the decay has no length.
    """
    batches = trainer.estimated_stepping_batches
    if trainer.max_steps != -1:
        batches = min(batches, math.ceil(trainer.max_steps / steps_per_batch))
    if not math.isfinite(batches):
        raise ConfigError(
            "model.module.lr_schedule=cosine decays over the whole training, but "
            "trainer.max_epochs=-1 sets no end; give trainer.max_epochs (or "
            "trainer.max_steps), or use lr_schedule=constant"
        )
    return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, int(batches)))
