"""USAD (Audibert et al., KDD 2020) for images: one encoder, two adversarial decoders.

With ``n`` the epoch counted from 1, ``w1 = D1(E(x))``, ``w2 = D2(E(x))`` and
``w3 = D2(E(w1))``::

    loss1 (E, D1) = 1/n * ||x - w1||^2 + (1 - 1/n) * ||x - w3||^2
    loss2 (E, D2) = 1/n * ||x - w2||^2 - (1 - 1/n) * ||x - w3||^2

Early on both decoders learn to reconstruct; as ``n`` grows the adversarial term
dominates: D1 learns to fool D2, and D2 learns to expose D1's reconstructions. Each phase
updates only its own optimiser's parameters (the encoder is in both, as in the paper).

With ``noise`` the model is a denoising USAD: ``w1``, ``w2`` and ``w3`` start from the
corrupted input and every error is measured against the clean one, as in the denoising
autoencoder.
"""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate

from anomaly.errors import ConfigError
from anomaly.models.inspection import RECONSTRUCTION, Inspection, Wants
from anomaly.training.autoencoder import check_lr_schedule
from anomaly.training.corruptions import build_corruption
from anomaly.training.losses import build_loss
from anomaly.training.phases import log_losses, phase_optimizers, run_phase, step_schedulers


def usad_losses(
    x: torch.Tensor,
    w1: torch.Tensor,
    w2: torch.Tensor,
    w3: torch.Tensor,
    n: int,
    loss_fn: Any = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The two USAD losses for epoch ``n`` (counted from 1).

    Args:
        x: Inputs.
        w1: ``D1(E(x))``.
        w2: ``D2(E(x))``.
        w3: ``D2(E(w1))``.
        n: Epoch number, from 1.
        loss_fn: Reconstruction error ``(recon, target) -> scalar``; mean squared error
            (the paper's) when None.

    Returns:
        ``(loss1, loss2)`` for the (E, D1) and (E, D2) phases.
    """
    if n < 1:
        raise ValueError(f"the epoch number n counts from 1, got {n}")
    err = loss_fn or torch.nn.functional.mse_loss
    adversarial = err(w3, x)
    loss1 = err(w1, x) / n + (1 - 1 / n) * adversarial
    loss2 = err(w2, x) / n - (1 - 1 / n) * adversarial
    return loss1, loss2


class USADModule(pl.LightningModule):
    """Two-phase adversarial training of :class:`~anomaly.models.usad.USADNet`.

    Args:
        net: Hydra config of the network (``USADNet``).
        loss: Reconstruction error inside both losses (``l2`` is the paper's).
        optimizer: Partial optimiser config, used for both phases (Adam by default).
        alpha: Weight of ``err(x, w1)`` in the anomaly map.
        beta: Weight of ``err(x, w3)`` in the anomaly map; ``alpha + beta`` must be 1.
        noise: Corruptions of the training inputs (``noise.corruptions``): the errors are
            measured against the clean images. Validation and scoring inputs are never
            corrupted.
        lr_schedule: ``constant``, or ``cosine``: both optimisers' learning rates decay
            to 0 over the whole training, step by step.
    """

    def __init__(
        self,
        net: dict[str, Any],
        loss: dict[str, Any] | None = None,
        optimizer: dict[str, Any] | None = None,
        alpha: float = 0.5,
        beta: float = 0.5,
        noise: list[dict[str, Any]] | None = None,
        lr_schedule: str = "constant",
    ) -> None:
        super().__init__()
        check_lr_schedule(lr_schedule)
        if not (alpha >= 0 and beta >= 0 and abs(alpha + beta - 1.0) < 1e-6):
            raise ConfigError(
                f"model.module.alpha + beta must be 1 with both >= 0, got {alpha} and {beta}"
            )
        self.save_hyperparameters()
        self.automatic_optimization = False
        self.net = instantiate(net, _convert_="all")
        self.loss_fn = build_loss(**(loss or {"name": "l2"}))
        self.corrupt = build_corruption(noise)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The first decoder's reconstruction ``D1(E(x))``."""
        return self.net.decoder1(self.net.encoder(x))

    gives = frozenset({RECONSTRUCTION})

    def inspect(self, x: torch.Tensor, wants: Wants) -> Inspection:
        """The reconstructions, whose error maps the detector turns into the map."""
        return Inspection(reconstructions=self.reconstructions(x))

    def reconstructions(self, x: torch.Tensor) -> list[tuple[float, torch.Tensor]]:
        """``[(alpha, D1(E(x))), (beta, D2(E(D1(E(x)))))]``: the two terms of the map."""
        w1, _, w3 = self.net(x)
        return [(self.hparams.alpha, w1), (self.hparams.beta, w3)]

    @property
    def epoch_n(self) -> int:
        """The paper's ``n``: the current epoch counted from 1."""
        return self.current_epoch + 1

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        """Phase 1 updates (E, D1) with loss1, then phase 2 updates (E, D2) with loss2."""
        x = batch["image"]
        # One corruption for both phases: they see the same batch, as without noise.
        inputs = self.corrupt(x) if self.corrupt is not None else x
        n = self.epoch_n
        for phase, opt in enumerate(self.optimizers()):
            value = run_phase(
                self, opt, lambda p=phase: usad_losses(x, *self.net(inputs), n, self.loss_fn)[p]
            )
            name = f"loss{phase + 1}"
            # Phase 1's loss1 is the model's training loss.
            losses = {name: value} | ({"loss": value} if phase == 0 else {})
            log_losses(self, losses, x.shape[0], progress=(name,))
        step_schedulers(self)

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        """Both losses on held-out defect-free images."""
        x = batch["image"]
        loss1, loss2 = usad_losses(x, *self.net(x), self.epoch_n, self.loss_fn)
        log_losses(self, {"loss": loss1, "loss2": loss2}, x.shape[0], stage="val")

    def configure_optimizers(self) -> Any:
        """Adam over (E, D1) and Adam over (E, D2), each with its cosine schedule if set."""
        enc = list(self.net.encoder.parameters())
        decoders = (self.net.decoder1, self.net.decoder2)
        return phase_optimizers(self, [enc + list(d.parameters()) for d in decoders])
