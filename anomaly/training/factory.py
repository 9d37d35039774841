"""The LightningModule and the Trainer of a training, built from its config."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytorch_lightning as pl
from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf

from anomaly.errors import ConfigError
from anomaly.training.ensemble import EnsembleModule


def build_module(cfg: DictConfig) -> pl.LightningModule:
    """Instantiate the LightningModule of ``cfg.model.module`` with plain-value arguments.

    With ``model.ensemble.members`` above 1 (or ``scales`` or ``overrides`` set), an
    :class:`~anomaly.training.ensemble.EnsembleModule` of that many such modules.

    Raises:
        ConfigError: The module class cannot be imported or rejects its arguments.
    """
    spec = OmegaConf.to_container(cfg.model.module, resolve=True)
    target = spec.pop("_target_")
    try:
        module_class = get_class(target)
    except Exception as exc:
        raise ConfigError(f"model.module._target_={target!r} cannot be imported: {exc}") from exc
    spec["loss"] = OmegaConf.to_container(cfg.loss, resolve=True)
    noise = OmegaConf.to_container(cfg.noise.corruptions, resolve=True)
    if noise:
        if "noise" not in inspect.signature(module_class).parameters:
            raise ConfigError(
                f"model={cfg.model.name} does not train on corrupted inputs; drop noise=... "
                "or use model=dae"
            )
        spec["noise"] = noise
    ensemble = cfg.model.get("ensemble")
    ensemble = OmegaConf.to_container(ensemble, resolve=True) if ensemble is not None else {}
    try:
        if ensemble.get("members", 1) != 1 or any(
            ensemble.get(key) is not None for key in ("scales", "overrides")
        ):
            return EnsembleModule(member={"_target_": target, **spec}, **ensemble)
        return module_class(**spec)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"model={cfg.model.name}: invalid model settings: {exc}") from exc


def build_trainer(cfg: DictConfig, output_dir: Path, callbacks: list[pl.Callback]) -> pl.Trainer:
    """A Lightning trainer from the ``trainer`` config group.

    It has no Lightning logger: epoch metrics go to the active MLflow run through a
    callback, so a training never opens a second run.
    """
    t = cfg.trainer
    return pl.Trainer(
        max_epochs=int(t.max_epochs),
        max_steps=int(t.max_steps),
        accelerator=t.accelerator,
        devices=t.devices,
        num_nodes=int(t.get("num_nodes", 1)),
        strategy=t.get("strategy", "auto"),
        precision=t.precision,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=bool(t.progress_bar),
        enable_model_summary=False,
        num_sanity_val_steps=0,
        default_root_dir=str(output_dir),
        callbacks=callbacks,
    )
