"""The LightningModule that trains an autoencoder on a frozen backbone's features."""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any, ClassVar

import pytorch_lightning as pl
import torch

from anomaly.errors import ConfigError
from anomaly.models.feature_ae import FeatureAENetwork
from anomaly.training.autoencoder import check_lr_schedule, configure_optimizer
from anomaly.training.draem import ScoredByNetwork, log_losses

# True while a checkpoint is being loaded: the trained backbone's weights are in it, so
# the shipped or local weight file is not needed (nor present, on a scoring machine).
_RESTORING: ContextVar[bool] = ContextVar("restoring", default=False)


class FeatureAEModule(ScoredByNetwork, pl.LightningModule):
    """Trains :class:`~anomaly.models.feature_ae.FeatureAENetwork`'s autoencoder.

    Only the autoencoder learns; the backbone is frozen. The loss is the mean squared
    error of the standardised feature maps (``loss=`` does not apply: the comparison is in
    feature space).

    Args:
        backbone: :class:`~anomaly.models.backbones.Backbone` settings (``name``,
            ``weights``, ``stages``).
        bottleneck: Code channels.
        hidden: Hidden channels (None: between features and code).
        smoothing: Side of the local average over feature positions.
        fine_weight: Share of the finest stage's error in the map (None: the mean over
            all channels, as models trained before it was a setting).
        pooling: ``raw`` or ``log`` statistics for the feature score (``raw``, as models
            trained before it was a setting; the config's default is ``log``).
        patch_grid: Where the patch map compares positions, ``fine`` or ``coarse``
            (:class:`~anomaly.models.feature_ae.FeatureAENetwork`; ``fine``, as models
            trained before it was a setting; the config's default is ``coarse``).
        optimizer: Partial optimiser config (Adam by default).
        lr_schedule: ``constant`` or ``cosine``.
        loss: Accepted for the common config and ignored (see above).
    """

    # loss= does not apply (the run name and card then leave it out).
    uses_loss = False
    # A serving environment needs the architecture; the weights are in the checkpoint.
    pip_requirements = ("efficientnet-lite-pytorch==0.1.0",)
    # With scoring.patch_map.enabled=auto, the patch map joins only where the photos do not
    # share one framing (the position score gives the map its memory of each place where
    # they do: KolektorSDD unchanged with it, the demo's pixel AUROC 0.983 -> 0.981), and
    # only on the coarse grid: on the fine one (models trained before patch_grid) it cost
    # 7 minutes of fitting on Magnetic Tile and added nothing on KolektorSDD.
    auto_off_framed = frozenset({"patch_map"})
    # A memory of normal positions needs photos enough to hold the normal variety: from
    # few, every unseen normal spot is far from it. Magnetic Tile's random subsets of
    # 27 / 90 / 225 / 685 training photos, AUPRO with the patch map minus without:
    # -0.035 / -0.017 / -0.002 / +0.003 (pixel AUROC +0.004 / +0.015 / +0.029 / +0.040).
    auto_min_images: ClassVar[dict[str, int]] = {"patch_map": 200}

    @property
    def auto_off(self) -> frozenset[str]:
        """Add-ons that ``auto`` leaves off whatever the photos."""
        return frozenset() if self.network.patch_grid == "coarse" else frozenset({"patch_map"})

    def __init__(
        self,
        backbone: dict[str, Any] | None = None,
        bottleneck: int = 32,
        hidden: int | None = None,
        smoothing: int = 3,
        fine_weight: float | None = None,
        pooling: str = "raw",
        patch_grid: str = "fine",
        optimizer: dict[str, Any] | None = None,
        lr_schedule: str = "cosine",
        loss: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        check_lr_schedule(lr_schedule)
        self.save_hyperparameters()
        if _RESTORING.get():
            backbone = {**(backbone or {}), "weights": "none"}
        try:
            self.network = FeatureAENetwork(
                backbone=backbone,
                bottleneck=bottleneck,
                hidden=hidden,
                smoothing=smoothing,
                fine_weight=fine_weight,
                pooling=pooling,
                patch_grid=patch_grid,
            )
        except ValueError as exc:
            raise ConfigError(f"model=feature_ae: {exc}") from exc

    @classmethod
    def load_from_checkpoint(cls, *args: Any, **kwargs: Any) -> FeatureAEModule:  # type: ignore[override]
        """Lightning's loading, with the backbone built empty: its weights are in the file."""
        token = _RESTORING.set(True)
        try:
            return super().load_from_checkpoint(*args, **kwargs)
        finally:
            _RESTORING.reset(token)

    def _loss(self, x: torch.Tensor) -> torch.Tensor:
        return self.network.error(self.network.features(x)).mean()

    def _step(self, batch: dict[str, Any], stage: str) -> torch.Tensor:
        losses = {"feature_error": self._loss(batch["image"])}
        return log_losses(self, losses, stage, batch_size=batch["image"].shape[0])

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        """One step: the feature maps of defect-free images, reconstructed."""
        return self._step(batch, "train")

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        """The reconstruction error of held-out defect-free images' features."""
        return self._step(batch, "val")

    def configure_optimizers(self) -> Any:
        """The optimiser over the autoencoder only, with the learning-rate schedule."""
        return configure_optimizer(self)
