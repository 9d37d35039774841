"""Train on defect-free images, calibrate on the validation split, evaluate, log to MLflow."""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from lightning_fabric.utilities.exceptions import MisconfigurationException
from matplotlib.backends.backend_agg import FigureCanvasAgg
from omegaconf import DictConfig, OmegaConf
from PIL import Image

from anomaly.data.datamodule import AnomalyDataModule
from anomaly.data.folder import Sample, fingerprint, scan_dataset
from anomaly.data.geometry import TrainingPhotos
from anomaly.errors import ConfigError, TrainingInterruptedError
from anomaly.io import write_errors_csv, write_text_atomic
from anomaly.jobs.checks import check_config
from anomaly.jobs.evaluate import (
    detector_sample_grid,
    evaluation_options,
    log_evaluation,
    write_sample_grid,
)
from anomaly.jobs.evaluate import showcase as showcase_of
from anomaly.jobs.results import Registered, TrainResult
from anomaly.model_folder import save_model_folder
from anomaly.scoring.detector import Detector
from anomaly.scoring.evaluation import evaluate
from anomaly.scoring.fitting import fit_and_calibrate
from anomaly.settings import (
    addons_and_framing,
    calibration_spec,
    loading,
    map_settings,
    preprocess_settings,
    resolve_geometry,
)
from anomaly.tracking.card import card_tags, log_training_card, training_card
from anomaly.tracking.lineage import file_set, log_file_sets
from anomaly.tracking.mlflow_logger import (
    EpochMetricsCallback,
    RunLogger,
    SampleGridCallback,
    base_tags,
    flatten,
    resolve_tracking_uri,
    start_run,
)
from anomaly.tracking.model import log_pyfunc, set_alias
from anomaly.training.budget import TimeBudget
from anomaly.training.checkpoints import ResumableCheckpoint, is_interruption
from anomaly.training.factory import build_module, build_trainer

log = logging.getLogger(__name__)


def train(cfg: DictConfig) -> TrainResult:
    """Train, calibrate, evaluate and log one model.

    Args:
        cfg: The composed ``config.yaml``.

    Returns:
        The run, the model folder, test-set metrics (image and pixel AUROC etc. when the
        data has a labelled test split), the calibration and the registered version.
    """
    check_config(cfg)
    pl.seed_everything(int(cfg.seed), workers=True, verbose=False)
    # Scanned once: data.image_size=auto reads the photos' sizes, then the data module
    # splits the same list.
    scanned = scan_dataset(cfg.data.root, mask_suffix=str(cfg.data.mask_suffix))
    # Their sizes are read once, if an auto setting asks for them.
    photos = TrainingPhotos(s.path for s in scanned.train)
    # Concrete from here on: the model's config, the saved model and the run all see it.
    resolve_geometry(cfg, photos)
    preprocess = preprocess_settings(cfg.data)
    maps = map_settings(cfg)
    # Checked now, not when the evaluation comes after a long training.
    evaluation_kwargs = evaluation_options(cfg)
    output_dir = Path(cfg.output_dir).resolve()
    resume_from = _resume_checkpoint(cfg, output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)

    datamodule = AnomalyDataModule(
        str(cfg.data.root),
        preprocess=preprocess,
        val_fraction=float(cfg.data.val_fraction),
        min_val_images=int(cfg.data.get("min_val_images") or 0),
        batch_size=int(cfg.data.batch_size),
        num_workers=int(cfg.data.num_workers),
        mask_suffix=str(cfg.data.mask_suffix),
        patches_per_image=int(cfg.data.patches_per_image),
        flips=cfg.data.get("flips") or (),
        seed=int(cfg.seed),
        splits=scanned,
    )
    datamodule.setup()
    splits = datamodule.splits
    # trainer.min_steps lengthens the model's own number of epochs, never one given by hand.
    stated = not OmegaConf.is_interpolation(cfg.trainer, "max_epochs")
    cfg.trainer.max_epochs = epochs_for(
        int(cfg.trainer.max_epochs),
        0 if stated else int(cfg.trainer.get("min_steps") or 0),
        len(datamodule.train_dataloader()),
    )
    # Under DDP every process runs this function; only rank 0 talks to MLflow and writes.
    rank_zero = is_rank_zero()
    if datamodule.skipped and rank_zero:
        write_errors_csv(output_dir / "errors.csv", datamodule.skipped)
    module = build_module(cfg)
    # Checked now, not after the training.
    addons = addons_and_framing(cfg, module, preprocess, photos)
    uri = resolve_tracking_uri(cfg.tracking.uri)
    tags = base_tags(kind="train") | {
        "model.name": str(cfg.model.name),
        "data.root": str(splits.root.resolve()),
        "data.fingerprint": fingerprint([s.path for s in splits.train]),
    }
    config_yaml = OmegaConf.to_yaml(cfg, resolve=True)
    # A model that compares features, not pixels (feature_ae), has no loss= to name.
    uses_loss = getattr(module, "uses_loss", True)
    run_name = f"train-{cfg.model.name}" + (f"-{cfg.loss.name}" if uses_loss else "")
    t = cfg.tracking
    checkpoints = ResumableCheckpoint(output_dir / "checkpoints")
    run_file = checkpoints.folder / "mlflow_run_id"
    tracking = (
        start_run(
            uri=uri,
            experiment=t.experiment,
            run_name=run_name,
            tags=tags,
            required=bool(t.required),
            system_metrics=bool(t.system_metrics),
            # A resumed training continues its MLflow run: one run, one loss curve.
            run_id=run_file.read_text().strip() or None
            if resume_from and run_file.is_file()
            else None,
        )
        if rank_zero
        else contextlib.nullcontext(RunLogger(None, uri))
    )
    with tracking as run:
        run_id = run.run_id or f"local-{output_dir.name}"
        if run.run_id:
            write_text_atomic(run_file, run.run_id)
        # Parameters are immutable in MLflow: a resumed run already has them.
        if resume_from is None:
            run.params(flatten(OmegaConf.to_container(cfg, resolve=True)))
            run.params(
                {
                    "data.n_train": len(datamodule.train_samples),
                    "data.n_val": len(datamodule.val_samples),
                    "data.n_test": len(splits.test),
                    "data.n_skipped": len(datamodule.skipped),
                }
            )
        run.text(config_yaml, "config.yaml")
        file_sets = []
        if run.enabled:
            # Read once more for their sha256: a digest of contents, not of dates.
            file_sets = [
                file_set(samples, root=splits.root, context=context)
                for context, samples in (
                    ("training", datamodule.train_samples),
                    ("validation", datamodule.val_samples),
                    ("test", splits.test),
                )
            ]
            if resume_from is None:  # a resumed run has its inputs already
                log_file_sets(run, file_sets)
        log.info(
            "training %s on %d images (%d held out for calibration) from %s",
            cfg.model.name,
            len(datamodule.train_samples),
            len(datamodule.val_samples),
            splits.root,
        )

        showcase = showcase_of(splits.test) if splits.test else datamodule.val_samples[:4]
        maps_only = Detector(module, preprocess, maps)
        budget = TimeBudget(cfg.trainer.get("budget_minutes"))
        callbacks = [
            EpochMetricsCallback(run),
            SampleGridCallback(
                run, lambda m: _grid_image(maps_only, showcase), int(t.samples_every_n_epochs)
            ),
            checkpoints,
            budget,
        ]
        trainer = build_trainer(cfg, output_dir, callbacks)
        module.train()
        started = time.perf_counter()
        try:
            trainer.fit(module, datamodule=datamodule, ckpt_path=resume_from)
        except (SystemExit, Exception) as exc:
            if isinstance(exc, MisconfigurationException):
                # e.g. resuming a checkpoint past trainer.max_epochs.
                raise ConfigError(f"trainer: {exc}") from exc
            # Lightning turns Ctrl-C into SystemExit(1) after calling on_exception.
            if not checkpoints.saved_on_interrupt or not (
                isinstance(exc, SystemExit) or is_interruption(exc)
            ):
                raise
            raise TrainingInterruptedError(
                f"training interrupted (Ctrl-C or SIGTERM); its state is saved in "
                f"{checkpoints.path}. Continue with the same command plus "
                f"output_dir={output_dir} trainer.resume=true"
            ) from exc
        seconds = time.perf_counter() - started
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            # Training was the only distributed part. Rank 0 holds the same weights as every
            # other rank and calibrates, evaluates and saves alone, without barriers.
            torch.distributed.destroy_process_group()
        if not rank_zero:
            return TrainResult(rank_zero=False, output_dir=str(output_dir))
        # Batches, not optimiser steps: the adversarial model steps twice per batch.
        batches = trainer.fit_loop.epoch_loop.batch_progress.total.completed
        seen = batches * int(cfg.data.batch_size)
        speed = {"train_seconds": seconds, "train_images_per_second": seen / seconds}
        run.metrics(
            speed
            | {
                "train/epochs": trainer.current_epoch,
                "train/stopped_by_budget": int(budget.stopped_early),
            }
        )

        module.cpu()
        detector = Detector(module, preprocess, maps, model_id=run_id)
        feed = loading(cfg)
        # One pass over the training images fits every add-on, then the thresholds.
        fit_and_calibrate(
            detector,
            datamodule.train_samples,
            datamodule.val_samples,
            addons,
            calibration_spec(cfg),
            loading=feed,
            fingerprint=fingerprint([s.path for s in datamodule.val_samples]),
            seed=int(cfg.seed),
        )
        # The model folder is complete on disk before anything is uploaded.
        model_dir = save_model_folder(
            output_dir / "model",
            trainer=trainer,
            detector=detector,
            config_yaml=config_yaml,
            model_name=str(cfg.model.name),
        )
        run.metrics(
            {
                "calibration/image_threshold": detector.calibration.image_threshold,
                "calibration/pixel_threshold": detector.calibration.pixel_threshold,
            }
        )

        metrics: dict[str, float] = {}
        test_errors: list[tuple[Path, str]] = []
        eval_dir = output_dir / "evaluation"
        report = ""
        if splits.test:
            evaluation = evaluate(
                detector,
                splits.test,
                **evaluation_kwargs,
                batch_size=feed.batch_size,
                num_workers=feed.num_workers,
            )
            metrics, test_errors = evaluation.metrics, evaluation.errors
            report = log_evaluation(run, evaluation, detector, eval_dir, model=str(model_dir))
        grid = eval_dir / "samples.png"
        write_sample_grid(grid, detector, showcase)
        run.artifact(grid, "evaluation")
        run.artifact(model_dir / "calibration.json")
        registered = _log_model(run, model_dir, t)
        if run.enabled:
            model_facts = {
                "model": f"{cfg.model.name}" + (f" (loss {cfg.loss.name})" if uses_loss else ""),
                "epochs": trainer.current_epoch,
                "image size": "x".join(str(side) for side in preprocess.image_size),
                "run": run_name,
            }
            card = training_card(
                title=f"{cfg.model.name} on {splits.root.name}",
                model=model_facts,
                file_sets=file_sets,
                metrics=metrics,
                calibration=detector.calibration,
            )
            tags = card_tags(file_sets, metrics, detector.calibration)
            log_training_card(run, card, tags, registered and asdict(registered))

    for name, value in sorted(metrics.items()):
        log.info("%s = %.4f", name, value)
    return TrainResult(
        run_id=run.run_id,
        model_dir=str(model_dir),
        output_dir=str(output_dir),
        tracking_uri=uri,
        experiment=str(t.experiment),
        metrics=metrics,
        calibration=detector.calibration,
        registered=registered,
        not_uploaded=list(run.failed),
        skipped=[(str(p), reason) for p, reason in datamodule.skipped],
        skipped_test=[(str(p), reason) for p, reason in test_errors],
        report=report,
        **speed,
    )


def epochs_for(max_epochs: int, min_steps: int, batches_per_epoch: int) -> int:
    """``max_epochs``, raised until the training takes ``min_steps`` batches (logged)."""
    if min_steps <= 0 or max_epochs * batches_per_epoch >= min_steps:
        return max_epochs
    epochs = math.ceil(min_steps / max(1, batches_per_epoch))
    log.info(
        "%d epochs instead of %d: %d batches an epoch, and trainer.min_steps=%d",
        epochs,
        max_epochs,
        batches_per_epoch,
        min_steps,
    )
    return epochs


def is_rank_zero() -> bool:
    """False in the processes of a distributed training other than global rank 0.

    torchrun sets ``RANK``, SLURM ``SLURM_PROCID``; Lightning's own launcher starts the
    other processes with ``LOCAL_RANK``/``NODE_RANK`` (the launching process is rank 0).
    """
    for var in ("RANK", "SLURM_PROCID"):
        if var in os.environ:
            return int(os.environ[var]) == 0
    return int(os.environ.get("LOCAL_RANK", 0)) == 0 and int(os.environ.get("NODE_RANK", 0)) == 0


def _resume_checkpoint(cfg: DictConfig, output_dir: Path) -> str | None:
    """The checkpoint ``trainer.resume`` names: ``true`` = this output_dir's last one."""
    resume = cfg.trainer.get("resume", False)
    if resume in (False, None, "", "false"):
        return None
    path = (
        output_dir / "checkpoints" / "last.ckpt"
        if resume in (True, "true", "last")
        else Path(str(resume))
    )
    if not path.is_file():
        raise ConfigError(
            f"trainer.resume={resume}: no checkpoint at {path}. Pass the output_dir of the "
            "interrupted run (its error message names it), or trainer.resume=PATH/last.ckpt"
        )
    log.info("resuming training from %s", path)
    return str(path)


def _log_model(run: RunLogger, model_dir: Path, t: DictConfig) -> Registered | None:
    """Log the pyfunc model; register it and point ``candidate`` at the new version."""
    name = t.registered_model or None
    info = run.call("the pyfunc model", log_pyfunc, model_dir, registered_name=name)
    if info is None or name is None or info.registered_model_version is None:
        return None
    version = str(info.registered_model_version)
    run.call("the candidate alias", set_alias, run.uri, name, "candidate", version)
    log.info("registered %s version %s (alias candidate)", name, version)
    return Registered(name=name, version=version, uri=f"models:/{name}/{version}")


def _grid_image(detector: Detector, samples: list[Sample]) -> Image.Image:
    """The sample grid as an image, without thresholds (during training there are none)."""
    fig = detector_sample_grid(detector, samples, pixel_threshold=None)
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return Image.fromarray(np.asarray(canvas.buffer_rgba())[..., :3])
