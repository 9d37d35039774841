"""Training GANomaly (Akcay et al., ACCV 2018): a generator phase and a discriminator phase.

Generator phase (``GE``, ``GD``, ``E``), with ``x_hat = GD(GE(x))``, ``z = GE(x)`` and
``z_hat = E(x_hat)``::

    adversarial * ||f(x) - f(x_hat)||^2 + contextual * loss(x_hat, x) + latent * ||z - z_hat||^2

``f`` the discriminator's last features (feature matching), ``loss`` the ``loss`` group
(the paper's L1 by default), the norms means over their elements, the weights the
paper's 1, 50 and 1. Discriminator phase: binary cross-entropy of ``x`` as real and
``x_hat`` as fake; a discriminator whose loss falls below ``reinit_below`` has won too
clearly to teach the generator anything and is re-initialised, as in the paper's code.

The image score is ``||z - z_hat||^2`` (the model's own score, fused with the map's by
calibration at the map's weight ``model.map_weight``); the map is the reconstruction's
error.
"""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from torch import nn

from anomaly.errors import ConfigError
from anomaly.models.ganomaly import latent_score
from anomaly.models.inspection import IMAGE_SCORE, RECONSTRUCTION, Inspection, Wants
from anomaly.training.aae import discriminator_loss
from anomaly.training.autoencoder import check_lr_schedule
from anomaly.training.losses import build_loss
from anomaly.training.phases import (
    log_losses,
    log_reconstruction_loss,
    phase_optimizers,
    run_phase,
    step_schedulers,
)

DEFAULT_WEIGHTS = {"adversarial": 1.0, "contextual": 50.0, "latent": 1.0}


def generator_losses(
    net: nn.Module, x: torch.Tensor, contextual_loss: Any = None
) -> dict[str, torch.Tensor]:
    """The generator phase's three unweighted losses for a batch (see module).

    Args:
        net: A :class:`~anomaly.models.ganomaly.GANomalyNet`.
        x: The images.
        contextual_loss: ``(x_hat, x) -> scalar``; the mean absolute error when None.
    """
    x_hat, z, z_hat = net.generate(x)
    contextual = contextual_loss or F.l1_loss
    return {
        "adversarial": F.mse_loss(net.discriminator.features(x_hat), net.discriminator.features(x)),
        "contextual": contextual(x_hat, x),
        "latent": F.mse_loss(z_hat, z),
    }


def _reinitialise(module: nn.Module) -> None:
    for m in module.modules():
        if m is not module and hasattr(m, "reset_parameters"):
            m.reset_parameters()


class GANomalyModule(pl.LightningModule):
    """Two-phase training of :class:`~anomaly.models.ganomaly.GANomalyNet` (see module).

    Args:
        net: Hydra config of the network.
        loss: The contextual loss (``build_loss`` arguments); the paper's L1 when None.
        optimizer: Partial optimiser config of both phases (the paper's Adam, lr 2e-4,
            betas 0.5 and 0.999, in the model's config).
        weights: ``adversarial``, ``contextual`` and ``latent`` weights (paper: 1, 50, 1).
        reinit_below: Discriminator loss under which it is re-initialised (0: never).
        lr_schedule: ``constant`` or ``cosine`` (both optimisers).

    Raises:
        ConfigError: An unknown or negative weight.
    """

    def __init__(
        self,
        net: dict[str, Any],
        loss: dict[str, Any] | None = None,
        optimizer: dict[str, Any] | None = None,
        weights: dict[str, float] | None = None,
        reinit_below: float = 1e-5,
        lr_schedule: str = "constant",
    ) -> None:
        super().__init__()
        check_lr_schedule(lr_schedule)
        merged = {**DEFAULT_WEIGHTS, **(weights or {})}
        unknown = sorted(set(merged) - set(DEFAULT_WEIGHTS))
        if unknown:
            raise ConfigError(
                f"model.module.weights has unknown keys {unknown}; use {list(DEFAULT_WEIGHTS)}"
            )
        if any(not float(v) >= 0 for v in merged.values()):
            raise ConfigError(f"model.module.weights must be >= 0, got {merged}")
        self.save_hyperparameters()
        self.automatic_optimization = False
        self.weights = {k: float(v) for k, v in merged.items()}
        self.net = instantiate(net, _convert_="all")
        self.loss_fn = build_loss(**(loss or {"name": "l1"}))

    gives = frozenset({RECONSTRUCTION, IMAGE_SCORE})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Reconstruct images ``(N, C, H, W)``."""
        return self.net(x)

    def inspect(self, x: torch.Tensor, wants: Wants) -> Inspection:
        """The reconstruction, and ``||z - z_hat||^2`` when the image score is wanted."""
        if not wants.image_score:
            return Inspection(reconstructions=[(1.0, self.net(x))])
        x_hat, z, z_hat = self.net.generate(x)
        return Inspection(reconstructions=[(1.0, x_hat)], image_score=latent_score(z, z_hat))

    def _generator_loss(self, x: torch.Tensor, parts: dict[str, torch.Tensor]) -> torch.Tensor:
        parts.update(generator_losses(self.net, x, self.loss_fn))
        return sum(self.weights[k] * parts[k] for k in DEFAULT_WEIGHTS)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        """The generator phase, then the discriminator phase, one optimiser step each."""
        x = batch["image"]
        opt_gen, opt_disc = self.optimizers()
        parts: dict[str, torch.Tensor] = {}
        generator = run_phase(self, opt_gen, lambda: self._generator_loss(x, parts))

        def disc() -> torch.Tensor:
            with torch.no_grad():
                x_hat = self.net(x)
            return discriminator_loss(self.net.discriminator(x), self.net.discriminator(x_hat))

        d_loss = run_phase(self, opt_disc, disc)
        if d_loss.item() < self.hparams.reinit_below:
            _reinitialise(self.net.discriminator)
        step_schedulers(self)
        logged = {k: v.detach() for k, v in parts.items()}
        logged |= {"generator": generator, "discriminator": d_loss, "loss": parts["contextual"]}
        log_losses(self, logged, x.shape[0], progress=("generator", "discriminator"))

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        """The contextual (reconstruction) loss on held-out defect-free images."""
        log_reconstruction_loss(self, batch)

    def configure_optimizers(self) -> Any:
        """One optimiser over the generator (GE, GD, E), one over the discriminator."""
        return phase_optimizers(
            self, [self.net.generator_parameters(), list(self.net.discriminator.parameters())]
        )
