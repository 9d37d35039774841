"""Training in phases: one optimiser per phase, each updating only its own parameters.

The adversarial models (USAD, the adversarial autoencoder, GANomaly) take several
optimiser steps per batch with Lightning's manual optimisation; these helpers build
their optimisers, run one phase, step the schedulers and log the losses, so that each
model states only its phases.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate

from anomaly.training.autoencoder import DEFAULT_OPTIMIZER, cosine_scheduler


def phase_optimizers(
    module: pl.LightningModule,
    groups: Sequence[Sequence[torch.nn.Parameter]],
    overrides: Sequence[Mapping[str, Any]] | None = None,
) -> Any:
    """``configure_optimizers``' result: one optimiser per parameter group.

    Args:
        module: The module; its hyper-parameters give ``optimizer`` (a partial optimiser
            config, Adam by default) and ``lr_schedule``.
        groups: Each phase's parameters.
        overrides: Per phase, settings that replace those of ``optimizer`` (e.g.
            ``{"lr": 1e-4}``); none when omitted.
    """
    default = module.hparams.get("optimizer") or DEFAULT_OPTIMIZER
    changes = list(overrides or [{}] * len(groups))
    built = [
        instantiate({**default, **change})(params=list(params))
        for params, change in zip(groups, changes, strict=True)
    ]
    if module.hparams.get("lr_schedule", "constant") == "constant":
        return built
    # Stepped once per batch (step_schedulers), after all phases' optimiser steps.
    schedulers = [
        cosine_scheduler(opt, module.trainer, steps_per_batch=len(built)) for opt in built
    ]
    return built, schedulers


def run_phase(
    module: pl.LightningModule,
    optimizer: torch.optim.Optimizer,
    loss: Callable[[], torch.Tensor],
) -> torch.Tensor:
    """One optimiser step on ``loss()``, with every parameter it does not own frozen.

    ``toggle_optimizer`` turns off the gradients of the parameters the other optimisers
    own, so a phase changes nothing but its own parameters and leaks no gradient into
    the others. Returns the loss, detached.
    """
    module.toggle_optimizer(optimizer)
    try:
        optimizer.zero_grad()
        value = loss()
        module.manual_backward(value)
        optimizer.step()
    finally:
        module.untoggle_optimizer(optimizer)
    return value.detach()


def step_schedulers(module: pl.LightningModule) -> None:
    """Step every learning-rate scheduler once (manual optimisation leaves it to us)."""
    schedulers = module.lr_schedulers()
    if schedulers is None:
        return
    for scheduler in schedulers if isinstance(schedulers, list) else [schedulers]:
        scheduler.step()


def log_losses(
    module: pl.LightningModule,
    losses: Mapping[str, torch.Tensor],
    batch_size: int,
    *,
    stage: str = "train",
    progress: Collection[str] = (),
) -> None:
    """Log ``<stage>/<name>`` per epoch for each loss; ``progress`` names go on the bar."""
    for name, value in losses.items():
        module.log(
            f"{stage}/{name}",
            value,
            on_step=False,
            on_epoch=True,
            prog_bar=name in progress,
            batch_size=batch_size,
            # Under DDP: the mean over all ranks, not rank 0's share.
            sync_dist=True,
        )


def log_reconstruction_loss(module: pl.LightningModule, batch: dict[str, Any]) -> None:
    """``val/loss``: the module's reconstruction loss on held-out defect-free images."""
    x = batch["image"]
    log_losses(module, {"loss": module.loss_fn(module.net(x), x)}, x.shape[0], stage="val")
