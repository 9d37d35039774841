"""Train on defect-free images, calibrate on the validation split, evaluate, log to MLflow."""

from __future__ import annotations

import csv
import inspect
import logging
import time
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pytorch_lightning as pl
from hydra.utils import get_class
from matplotlib.figure import Figure
from omegaconf import DictConfig, OmegaConf

from anomaly.data.datamodule import AnomalyDataModule
from anomaly.data.dataset import ImageDataset, collate
from anomaly.data.folder import Sample, fingerprint
from anomaly.data.transforms import Preprocess
from anomaly.errors import ConfigError
from anomaly.io import atomic_open
from anomaly.model_folder import save_model_folder
from anomaly.scoring.figures import curves_figure, histogram_figure, sample_grid, save_figure
from anomaly.scoring.maps import MapSettings
from anomaly.scoring.score import Detector, Evaluation, calibrate, evaluate
from anomaly.tracking.mlflow_logger import (
    EpochMetricsCallback,
    base_tags,
    flatten,
    resolve_tracking_uri,
    start_run,
)

log = logging.getLogger(__name__)


def map_settings(cfg: DictConfig) -> MapSettings:
    """Map settings from the ``scoring`` config group."""
    s = cfg.scoring
    return MapSettings(
        kind=s.map,
        smoothing_sigma=float(s.smoothing_sigma),
        ssim_sigma=float(s.ssim_sigma),
        ssim_weight=float(s.ssim_weight),
        score=s.score,
        topk=int(s.topk),
    )


def preprocess_settings(data: DictConfig) -> Preprocess:
    """Preprocessing from the ``data`` config group."""
    return Preprocess.create(
        image_size=OmegaConf.to_object(data.image_size)
        if OmegaConf.is_config(data.image_size)
        else data.image_size,
        channels=data.channels,
        tile=bool(data.tile),
        scale=float(data.scale),
        tile_stride=OmegaConf.to_object(data.tile_stride)
        if OmegaConf.is_config(data.tile_stride)
        else data.tile_stride,
    )


def calibration_specs(cfg: DictConfig) -> dict[str, dict[str, Any]]:
    """``image=`` and ``pixel=`` arguments of ``calibrate`` from ``scoring.calibration``."""
    c = OmegaConf.to_container(cfg.scoring.calibration, resolve=True)
    return {"image": c["image"], "pixel": c["pixel"]}


def build_module(cfg: DictConfig) -> pl.LightningModule:
    """Instantiate the LightningModule of ``cfg.model.module`` with plain-value arguments.

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
    try:
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
        precision=t.precision,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=bool(t.progress_bar),
        enable_model_summary=False,
        num_sanity_val_steps=0,
        default_root_dir=str(output_dir),
        callbacks=callbacks,
    )


def train(cfg: DictConfig) -> dict[str, Any]:
    """Train, calibrate, evaluate and log one model.

    Args:
        cfg: The composed ``config.yaml``.

    Returns:
        ``run_id``, ``model_dir``, ``output_dir``, ``tracking_uri``, ``metrics`` (image and
        pixel AUROC etc. when the data has a labelled test split) and ``calibration``.
    """
    pl.seed_everything(int(cfg.seed), workers=True, verbose=False)
    preprocess = preprocess_settings(cfg.data)
    maps = map_settings(cfg)
    output_dir = Path(cfg.output_dir).resolve()
    output_dir.mkdir(parents=True, exist_ok=True)

    datamodule = AnomalyDataModule(
        str(cfg.data.root),
        preprocess=preprocess,
        val_fraction=float(cfg.data.val_fraction),
        batch_size=int(cfg.data.batch_size),
        num_workers=int(cfg.data.num_workers),
        mask_suffix=str(cfg.data.mask_suffix),
        patches_per_image=int(cfg.data.patches_per_image),
        seed=int(cfg.seed),
    )
    datamodule.setup()
    splits = datamodule.splits
    module = build_module(cfg)
    uri = resolve_tracking_uri(cfg.tracking.uri)
    tags = base_tags(kind="train") | {
        "model.name": str(cfg.model.name),
        "data.root": str(splits.root.resolve()),
        "data.fingerprint": fingerprint([s.path for s in splits.train]),
    }
    config_yaml = OmegaConf.to_yaml(cfg, resolve=True)
    run_name = f"train-{cfg.model.name}-{cfg.loss.name}"
    with start_run(
        uri=uri, experiment=cfg.tracking.experiment, run_name=run_name, tags=tags
    ) as run:
        run_id = run.info.run_id
        mlflow.log_params(flatten(OmegaConf.to_container(cfg, resolve=True)))
        mlflow.log_params(
            {
                "data.n_train": len(datamodule.train_samples),
                "data.n_val": len(datamodule.val_samples),
                "data.n_test": len(splits.test),
            }
        )
        mlflow.log_text(config_yaml, "config.yaml")
        log.info(
            "training %s on %d images (%d held out for calibration) from %s",
            cfg.model.name,
            len(datamodule.train_samples),
            len(datamodule.val_samples),
            splits.root,
        )

        trainer = build_trainer(cfg, output_dir, [EpochMetricsCallback()])
        started = time.perf_counter()
        trainer.fit(module, datamodule=datamodule)
        seconds = time.perf_counter() - started
        # Batches, not optimiser steps: the adversarial model steps twice per batch.
        batches = trainer.fit_loop.epoch_loop.batch_progress.total.completed
        seen = batches * int(cfg.data.batch_size)
        mlflow.log_metrics({"train_seconds": seconds, "train_images_per_second": seen / seconds})

        module.cpu()
        detector = Detector(module, preprocess, maps, model_id=run_id)
        batch = {
            "batch_size": int(cfg.scoring.batch_size),
            "num_workers": int(cfg.scoring.num_workers),
        }
        try:
            calibrate(
                detector,
                datamodule.val_samples,
                **calibration_specs(cfg),
                fingerprint=fingerprint([s.path for s in datamodule.val_samples]),
                seed=int(cfg.seed),
                **batch,
            )
        except ValueError as exc:
            raise ConfigError(str(exc)) from exc
        model_dir = save_model_folder(
            output_dir / "model",
            trainer=trainer,
            module=module,
            preprocess=preprocess,
            maps=maps,
            calibration=detector.calibration,
            config_yaml=config_yaml,
            model_name=str(cfg.model.name),
            model_id=run_id,
        )
        mlflow.log_metrics(
            {
                "calibration/image_threshold": detector.calibration.image_threshold,
                "calibration/pixel_threshold": detector.calibration.pixel_threshold,
            }
        )

        metrics: dict[str, float] = {}
        eval_dir = output_dir / "evaluation"
        if splits.test:
            evaluation = evaluate(
                detector, splits.test, fpr_limit=float(cfg.scoring.aupro_fpr_limit), **batch
            )
            metrics = evaluation.metrics
            _write_test_scores(eval_dir / "scores.csv", evaluation, detector)
            mlflow.log_artifact(str(eval_dir / "scores.csv"), "evaluation")
            mlflow.log_metrics(metrics)
            for name, figure in _evaluation_figures(evaluation, detector).items():
                save_figure(figure, eval_dir / name)
                mlflow.log_artifact(str(eval_dir / name), "evaluation")
            showcase = _showcase(evaluation.samples)
        else:
            showcase = datamodule.val_samples[:4]
        grid = eval_dir / "samples.png"
        _write_sample_grid(grid, detector, showcase)
        mlflow.log_artifact(str(grid), "evaluation")
        mlflow.log_artifacts(str(model_dir), "model")
        mlflow.log_artifact(str(model_dir / "calibration.json"))

    for name, value in sorted(metrics.items()):
        log.info("%s = %.4f", name, value)
    return {
        "run_id": run_id,
        "model_dir": str(model_dir),
        "output_dir": str(output_dir),
        "tracking_uri": uri,
        "experiment": str(cfg.tracking.experiment),
        "metrics": metrics,
        "calibration": detector.calibration,
    }


def _write_test_scores(path: Path, evaluation: Evaluation, detector: Detector) -> None:
    threshold = detector.calibration.image_threshold
    with atomic_open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(("path", "defect_class", "label", "score", "threshold", "is_defective"))
        for sample, score in zip(evaluation.samples, evaluation.scores, strict=True):
            writer.writerow(
                (
                    str(sample.path),
                    sample.defect_class,
                    sample.label,
                    f"{score:.6g}",
                    f"{threshold:.6g}",
                    int(score > threshold),
                )
            )


def _evaluation_figures(evaluation: Evaluation, detector: Detector) -> dict[str, Figure]:
    labels = np.array([s.label for s in evaluation.samples])
    ok = ~np.isnan(evaluation.scores)
    if not {0, 1} <= set(labels[ok].tolist()):
        return {}
    threshold = detector.calibration.image_threshold
    return {
        "curves.png": curves_figure(labels[ok], evaluation.scores[ok], threshold=threshold),
        "score_histogram.png": histogram_figure(
            labels[ok], evaluation.scores[ok], threshold=threshold
        ),
    }


def _showcase(samples: list[Sample], per_class: int = 1, n_good: int = 2) -> list[Sample]:
    """A few test images for the sample grid: some defect-free, one of each defect class."""
    chosen = [s for s in samples if s.label == 0][:n_good]
    for cls in sorted({s.defect_class for s in samples if s.label == 1}):
        chosen += [s for s in samples if s.defect_class == cls][:per_class]
    return chosen[:8]


def _write_sample_grid(path: Path, detector: Detector, samples: list[Sample]) -> None:
    dataset = ImageDataset(samples, detector.preprocess, with_masks=True, skip_errors=True)
    batch = collate([dataset[i] for i in range(len(dataset))])
    if "image" not in batch:
        return
    images = list(batch["image"])
    recons = detector.reconstruct(images)
    maps = detector.anomaly_maps(images)
    scores = detector.scores(maps)
    titles = [
        f"{samples[i].defect_class or samples[i].path.name}\n{float(s):.3g}"
        for i, s in zip(batch["index"], scores, strict=True)
    ]
    fig = sample_grid(
        [im.numpy() for im in images],
        [r.numpy() for r in recons],
        [m[0].numpy() for m in maps],
        pixel_threshold=detector.calibration.pixel_threshold,
        titles=titles,
        true_masks=[m[0].numpy() > 0.5 for m in batch["mask"]],
    )
    save_figure(fig, path)
