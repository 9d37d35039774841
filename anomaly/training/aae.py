"""Training the adversarial autoencoder (Makhzani et al. 2015) in three phases per batch.

1. Reconstruction: encoder and decoder minimise the reconstruction loss.
2. Discriminator: the latent discriminator learns to tell samples of the prior
   (label 1) from the encoder's codes (label 0).
3. Generator: the encoder, as the generator of codes, learns to make the discriminator
   call its codes samples of the prior.

Each phase has its own optimiser over its own parameters (Lightning manual optimisation,
as USAD), so a phase never moves another's parameters. The map is the reconstruction
error; with ``prior_score`` the code's negative log-likelihood under the prior is the
model's own image score, which calibration fuses with the map's as it fuses the feature
score.
"""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from hydra.utils import instantiate

from anomaly.errors import ConfigError
from anomaly.models.aae import gaussian_nll
from anomaly.models.inspection import IMAGE_SCORE, RECONSTRUCTION, Inspection, Wants
from anomaly.training.autoencoder import check_lr_schedule
from anomaly.training.losses import build_loss
from anomaly.training.phases import (
    log_losses,
    log_reconstruction_loss,
    phase_optimizers,
    run_phase,
    step_schedulers,
)

PRIORS = ("gaussian",)


def discriminator_loss(prior_logits: torch.Tensor, code_logits: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy of prior samples as 1 and codes as 0, the mean of the two."""
    real = F.binary_cross_entropy_with_logits(prior_logits, torch.ones_like(prior_logits))
    fake = F.binary_cross_entropy_with_logits(code_logits, torch.zeros_like(code_logits))
    return 0.5 * (real + fake)


def generator_loss(code_logits: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy of codes as 1: the encoder fooling the discriminator."""
    return F.binary_cross_entropy_with_logits(code_logits, torch.ones_like(code_logits))


class AAEModule(pl.LightningModule):
    """Three-phase training of :class:`~anomaly.models.aae.AAENet` (see module).

    Args:
        net: Hydra config of the network (``AAENet``).
        loss: Reconstruction loss (``build_loss`` arguments); l2 when None.
        optimizer: Partial optimiser config of all three phases (Adam by default).
        prior: ``{"name": "gaussian", "std": 1.0}``: the distribution codes are pushed to.
        adversarial_lr: Learning rate of the discriminator and generator phases (None:
            the optimiser's). It, not a weight, sets how hard the prior pulls: each
            phase has its own Adam, whose steps do not scale with the loss.
        prior_score: The model gives the code's negative log-likelihood under the prior as
            its own image score.
        lr_schedule: ``constant`` or ``cosine`` (all three optimisers).

    Raises:
        ConfigError: An unknown prior, or a spread or learning rate not above 0.
    """

    def __init__(
        self,
        net: dict[str, Any],
        loss: dict[str, Any] | None = None,
        optimizer: dict[str, Any] | None = None,
        prior: dict[str, Any] | None = None,
        adversarial_lr: float | None = None,
        prior_score: bool = False,
        lr_schedule: str = "constant",
    ) -> None:
        super().__init__()
        check_lr_schedule(lr_schedule)
        prior = dict(prior or {"name": "gaussian", "std": 1.0})
        if prior.get("name") not in PRIORS:
            raise ConfigError(
                f"model.module.prior.name={prior.get('name')!r} is unknown; choose one of {PRIORS}"
            )
        std = float(prior.get("std", 1.0))
        if not std > 0:
            raise ConfigError(f"model.module.prior.std must be > 0, got {prior.get('std')!r}")
        if adversarial_lr is not None and not adversarial_lr > 0:
            raise ConfigError(f"model.module.adversarial_lr must be > 0, got {adversarial_lr!r}")
        self.save_hyperparameters()
        self.automatic_optimization = False
        self.net = instantiate(net, _convert_="all")
        self.loss_fn = build_loss(**(loss or {"name": "l2"}))
        self.prior_std = std
        self.gives = frozenset({RECONSTRUCTION} | ({IMAGE_SCORE} if prior_score else set()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Reconstruct images ``(N, C, H, W)``."""
        return self.net(x)

    def inspect(self, x: torch.Tensor, wants: Wants) -> Inspection:
        """The reconstruction, and the code's prior negative log-likelihood when wanted."""
        z = self.net.encode(x)
        out = Inspection(reconstructions=[(1.0, self.net.decode(z))])
        if wants.image_score and IMAGE_SCORE in self.gives:
            out.image_score = gaussian_nll(z, self.prior_std)
        return out

    def sample_prior(self, like: torch.Tensor) -> torch.Tensor:
        """Samples of the prior shaped as the codes ``like``."""
        return torch.randn_like(like) * self.prior_std

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        """Reconstruction, discriminator and generator phases, one optimiser step each."""
        x = batch["image"]
        net = self.net
        opt_ae, opt_disc, opt_gen = self.optimizers()
        losses = {
            "reconstruction": run_phase(self, opt_ae, lambda: self.loss_fn(net(x), x)),
        }

        def disc() -> torch.Tensor:
            with torch.no_grad():
                z = net.encode(x)
            return discriminator_loss(net.discriminator(self.sample_prior(z)), net.discriminator(z))

        losses["discriminator"] = run_phase(self, opt_disc, disc)
        losses["generator"] = run_phase(
            self, opt_gen, lambda: generator_loss(net.discriminator(net.encode(x)))
        )
        step_schedulers(self)
        progress = tuple(losses)
        losses["loss"] = losses["reconstruction"]
        log_losses(self, losses, x.shape[0], progress=progress)

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        """Reconstruction loss on held-out defect-free images."""
        log_reconstruction_loss(self, batch)

    def configure_optimizers(self) -> Any:
        """One optimiser each for (encoder, decoder), the discriminator and the encoder."""
        net = self.net
        encoder = list(net.encoder.parameters()) + list(net.code_norm.parameters())
        lr = self.hparams.adversarial_lr
        adversarial = {} if lr is None else {"lr": float(lr)}
        return phase_optimizers(
            self,
            [encoder + list(net.decoder.parameters()), net.discriminator.parameters(), encoder],
            [{}, adversarial, adversarial],
        )
