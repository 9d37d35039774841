"""DRAEM (Zavrtanik, Kristan and Skočaj, ICCV 2021): reconstruct, then compare.

Two networks trained together on defect-free images with synthetic anomalies pasted in
(Perlin-noise shapes filled with foreign texture, :func:`perlin_texture_with_mask`):

- the *reconstructive* network (an encoder-decoder without skip connections) learns to
  give back the clean image: a denoising autoencoder whose noise looks like defects;
- the *discriminative* network (a U-Net) sees the input and that reconstruction side by
  side and learns to segment where the two disagree in a way that matters, supervised by
  the synthetic masks (focal loss).

The anomaly map is the discriminative network's probability, so the scoring stage uses
it directly instead of a reconstruction error: the comparison of image and
reconstruction is learned rather than fixed to L2 or SSIM, which is what lets it ignore
the normal texture that no autoencoder reproduces exactly. Optionally
(``recon_map_weight``) a blurred gradient-similarity error of the reconstruction is added:
the segmenter learns the small pasted shapes and tends to mark only the *edge* of a large
region whose surface changed, which the reconstructive network still fails to give back
over its whole area.
"""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from hydra.utils import instantiate

from anomaly.data.synthetic.anomalies import perlin_texture_with_mask
from anomaly.data.transforms import check_normalize
from anomaly.errors import ConfigError
from anomaly.models.draem import DraemNetwork
from anomaly.models.inspection import Inspection, Wants
from anomaly.training.autoencoder import check_lr_schedule, configure_optimizer
from anomaly.training.losses import build_loss


def focal_loss(logits: torch.Tensor, target: torch.Tensor, gamma: float = 2.0) -> torch.Tensor:
    """Binary focal loss (Lin et al. 2017), mean over pixels.

    Down-weights the many easy pixels (normal surface far from any anomaly), so the few
    anomalous ones are not drowned out.

    Args:
        logits: ``(N, 1, H, W)`` raw scores.
        target: Same shape, 0/1.
        gamma: Focusing exponent; 0 gives plain binary cross-entropy.
    """
    ce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    p_true = torch.exp(-ce)
    return ((1.0 - p_true) ** gamma * ce).mean()


def _start_at(network: torch.nn.Module, prior: float) -> None:
    """Set the bias of the network's last convolution so every pixel starts at ``prior``.

    The prior-probability initialisation of Lin et al. 2017: with a zero bias the focal
    loss starts at one half everywhere and the many normal pixels dominate the first
    epochs, which some initialisations take most of a short training to leave.
    """
    last = [m for m in network.modules() if isinstance(m, torch.nn.Conv2d)]
    if not last or last[-1].bias is None or last[-1].out_channels != 1:
        raise ConfigError(
            "model.module.segmenter_prior needs a discriminative network whose last layer "
            "is a Conv2d with one output channel and a bias; set it to null for this one"
        )
    with torch.no_grad():
        last[-1].bias.fill_(float(torch.logit(torch.tensor(prior))))


def log_losses(
    module: pl.LightningModule, losses: dict[str, torch.Tensor], stage: str, *, batch_size: int
) -> torch.Tensor:
    """Log each loss as ``<stage>/<name>`` and their sum as ``<stage>/loss``; return the sum."""
    opts = {"on_step": False, "on_epoch": True, "sync_dist": True, "batch_size": batch_size}
    for name, value in losses.items():
        module.log(f"{stage}/{name}", value, **opts)
    total = torch.stack(list(losses.values())).sum()
    module.log(f"{stage}/loss", total, prog_bar=True, **opts)
    return total


def _moved_into_network(
    module: torch.nn.Module, state_dict: dict[str, Any], prefix: str, *args: Any
) -> None:
    """Load checkpoints written when the two networks were attributes of the module.

    Until the inference network became its own module they were saved as
    ``reconstructive.*`` and ``discriminative.*``; they are ``network.*`` now.
    """
    for key in list(state_dict):
        for name in ("reconstructive.", "discriminative."):
            if key.startswith(prefix + name):
                state_dict[prefix + "network." + key[len(prefix) :]] = state_dict.pop(key)


class ScoredByNetwork:
    """For a training module whose ``network`` attribute is what scoring uses.

    The module is then an :class:`~anomaly.models.inspection.InspectableModel` that
    hands every question to its network, and its forward pass is the network's map.
    """

    network: torch.nn.Module

    @property
    def gives(self) -> frozenset[str]:
        """What :meth:`inspect` gives: what the network gives."""
        return self.network.gives

    def inspect(self, x: torch.Tensor, wants: Wants) -> Inspection:
        """The network's outputs for scoring, from one forward pass."""
        return self.network.inspect(x, wants)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The anomaly map of ``x``, ``(N, 1, H, W)``."""
        return self.network(x)


class DraemModule(ScoredByNetwork, pl.LightningModule):
    """Trains DRAEM's reconstructive and discriminative networks together.

    Args:
        reconstructive: Hydra config of the reconstruction network (channels in and out).
        discriminative: Hydra config of the segmentation network, one logit channel out;
            its input channels are set here to twice the reconstruction's (image and
            reconstruction side by side).
        loss: Reconstruction loss (``build_loss`` arguments); DRAEM's is L2 + SSIM.
        optimizer: Hydra config of a partial optimiser over both networks.
        lr_schedule: ``constant`` or ``cosine`` (as in ``AutoencoderModule``).
        anomaly_p: Share of training images that get a synthetic anomaly (DRAEM: 0.5); the
            rest teach the segmenter that a normal image has none.
        perlin: Keyword arguments of :func:`perlin_texture_with_mask`.
        focal_gamma: Focusing exponent of the segmentation loss.
        recon_map_weight: Weight of the reconstruction error (1 - MSGMS, averaged over
            channels) added to the segmenter's probability in the anomaly map; 0 keeps
            DRAEM's map. Scoring only: training is the same.
        recon_map_sigma: Gaussian blur (pixels) of that error before it is added; 0 for
            none.
        segmenter_prior: Probability the untrained segmenter gives every pixel (its last
            bias set to the logit of it, as RetinaNet's); None keeps PyTorch's
            initialisation (one half).
        input_normalize: ``none``, or ``mean_std``: each image this model sees (in
            training, before the synthetic anomaly, and in scoring) is brought to a fixed
            mean and spread first, as ``data.normalize`` does for every model. Set on one
            member of an ensemble, it lets that member see normalised photos and the
            others plain ones.

    Raises:
        ConfigError: A value out of range (names the ``model.module.*`` key).
    """

    # scoring.position_score=auto leaves it off: measured on feature_ae's maps only, and
    # beside the patch map (on by default here) it cannot be used.
    auto_off = frozenset({"position_score"})

    def __init__(
        self,
        reconstructive: dict[str, Any],
        discriminative: dict[str, Any],
        loss: dict[str, Any] | None = None,
        optimizer: dict[str, Any] | None = None,
        lr_schedule: str = "cosine",
        anomaly_p: float = 0.5,
        perlin: dict[str, Any] | None = None,
        focal_gamma: float = 2.0,
        recon_map_weight: float = 0.0,
        recon_map_sigma: float = 8.0,
        segmenter_prior: float | None = None,
        input_normalize: str = "none",
    ) -> None:
        super().__init__()
        check_lr_schedule(lr_schedule)
        if not 0.0 < anomaly_p <= 1.0:
            raise ConfigError(f"model.module.anomaly_p must be in (0, 1], got {anomaly_p!r}")
        if not focal_gamma >= 0:
            raise ConfigError(f"model.module.focal_gamma must be >= 0, got {focal_gamma!r}")
        for key, value in (
            ("recon_map_weight", recon_map_weight),
            ("recon_map_sigma", recon_map_sigma),
        ):
            if not value >= 0:
                raise ConfigError(f"model.module.{key} must be >= 0, got {value!r}")
        if segmenter_prior is not None and not 0.0 < segmenter_prior < 1.0:
            raise ConfigError(
                f"model.module.segmenter_prior must be in (0, 1) or null, got {segmenter_prior!r}"
            )
        check_normalize(input_normalize, "model.module.input_normalize")
        self.save_hyperparameters()
        reconstructive_net = instantiate(reconstructive, _convert_="all")
        channels = 2 * int(reconstructive_net.channels)
        self.network = DraemNetwork(
            reconstructive_net,
            instantiate(discriminative, channels=channels, _convert_="all"),
            recon_map_weight=recon_map_weight,
            recon_map_sigma=recon_map_sigma,
            input_normalize=input_normalize,
        )
        if segmenter_prior is not None:
            _start_at(self.network.discriminative, segmenter_prior)
        self.loss_fn = build_loss(**(loss or {"name": "l2_ssim"}))
        self.perlin = dict(perlin or {})
        # Fail at construction, not at the first training step, on a bad perlin setting.
        perlin_texture_with_mask(torch.zeros(1, 1, 16, 16), **self.perlin)
        self.register_load_state_dict_pre_hook(_moved_into_network)

    @property
    def reconstructive(self) -> torch.nn.Module:
        """The reconstructive network."""
        return self.network.reconstructive

    @property
    def discriminative(self) -> torch.nn.Module:
        """The discriminative (segmentation) network."""
        return self.network.discriminative

    def training_losses(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """DRAEM's two losses on ``x`` with synthetic anomalies pasted into some images.

        Args:
            x: ``(N, C, H, W)`` defect-free images in ``[0, 1]``.

        Returns:
            ``reconstruction_loss`` and ``segmentation_loss`` (scalars); the training
            minimises their sum.
        """
        x = self.network.prepared(x)
        pasted, mask = perlin_texture_with_mask(x, **self.perlin)
        chosen = (torch.rand(x.shape[0], device=x.device) < self.hparams.anomaly_p).view(
            -1, 1, 1, 1
        )
        inputs = torch.where(chosen, pasted, x)
        target = (mask & chosen).float()
        recon = self.network.reconstructive(inputs)
        logits = self.network.segment(inputs, recon)
        return {
            "reconstruction_loss": self.loss_fn(recon, x),
            "segmentation_loss": focal_loss(logits, target, self.hparams.focal_gamma),
        }

    def _step(self, batch: dict[str, Any], stage: str) -> torch.Tensor:
        losses = self.training_losses(batch["image"])
        return log_losses(self, losses, stage, batch_size=batch["image"].shape[0])

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        """Reconstruction plus segmentation loss on a batch with synthetic anomalies."""
        return self._step(batch, "train")

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        """The same losses on held-out images (their anomalies drawn anew each time)."""
        return self._step(batch, "val")

    def configure_optimizers(self) -> Any:
        """One optimiser over both networks, with the learning-rate schedule."""
        return configure_optimizer(self)
