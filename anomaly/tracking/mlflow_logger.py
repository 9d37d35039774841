"""MLflow runs for training, calibration and scoring.

The default store is embedded and needs no server: a SQLite database and an artifact
folder under ``./mlruns`` of the working directory. ``tracking.uri`` (or the
``MLFLOW_TRACKING_URI`` environment variable) points it anywhere else, e.g. at
``make mlflow-server``.

Every MLflow call goes through a :class:`RunLogger`. Local outputs are always written
first; an upload that fails mid-run is recorded and reported instead of losing them, and
with ``tracking.required=false`` an unreachable server only costs the upload.
"""

from __future__ import annotations

import contextlib
import logging
import os
import platform
import subprocess
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
import pytorch_lightning as pl
from mlflow import MlflowClient
from PIL import Image

import anomaly
from anomaly.errors import TrackingError
from anomaly.interrupts import deferred_ctrl_c
from anomaly.tracking.store import ensure_store

log = logging.getLogger(__name__)

DEFAULT_STORE = "mlruns"


def resolve_tracking_uri(uri: str | None) -> str:
    """The tracking URI to use.

    The configured one, else ``$MLFLOW_TRACKING_URI``, else the embedded SQLite store
    ``./mlruns/mlflow.db`` of the working directory (created).
    """
    if uri:
        return str(uri)
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    store = Path.cwd() / DEFAULT_STORE
    store.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{store / 'mlflow.db'}"


def check_reachable(uri: str, *, timeout: float = 5.0) -> None:
    """Fail fast when an HTTP tracking server does not answer (before any training).

    Raises:
        TrackingError: No answer from ``<uri>/health`` within ``timeout`` seconds.
    """
    if not uri.startswith(("http://", "https://")):
        return
    try:
        with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout) as reply:
            if reply.status == 200:
                return
            reason = f"HTTP {reply.status}"
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = str(getattr(exc, "reason", exc))
    raise TrackingError(
        f"MLflow tracking server {uri} is unreachable ({reason}); start it (make mlflow-server), "
        "fix tracking.uri, or set tracking.required=false to train with local outputs only"
    )


def _artifact_location(uri: str) -> str | None:
    # With a SQLite store, keep artifacts beside the database instead of MLflow's default
    # ./mlartifacts relative to wherever the first run happened to start.
    if uri.startswith("sqlite:///"):
        return (Path(uri.removeprefix("sqlite:///")).parent / "artifacts").resolve().as_uri()
    return None


def get_experiment_id(uri: str, name: str) -> str:
    """Id of the experiment ``name`` in the store at ``uri``, created if missing.

    Raises:
        TrackingError: The store cannot be used.
    """
    mlflow.set_tracking_uri(uri)
    try:
        ensure_store(uri)
        experiment = mlflow.get_experiment_by_name(name)
        if experiment is not None:
            return experiment.experiment_id
        try:
            return mlflow.create_experiment(name, artifact_location=_artifact_location(uri))
        except mlflow.exceptions.MlflowException as exc:
            # Parallel sweep jobs start together: another one created it a moment ago.
            created = mlflow.get_experiment_by_name(name)
            if exc.error_code != "RESOURCE_ALREADY_EXISTS" or created is None:
                raise
            return created.experiment_id
    except TrackingError:
        raise
    except Exception as exc:
        raise TrackingError(
            f"MLflow tracking store {uri} is not usable ({type(exc).__name__}: {exc}); "
            "check tracking.uri / MLFLOW_TRACKING_URI or start the server"
        ) from exc


def flatten(config: Mapping[str, Any], prefix: str = "", *, sep: str = ".") -> dict[str, Any]:
    """Flatten a nested mapping into ``a.b.c -> value`` pairs (for params and metrics)."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}{sep}", sep=sep))
        else:
            flat[name] = value
    return flat


def base_tags(*, kind: str) -> dict[str, str]:
    """Tags every run carries: what made it, where, from which commit."""
    tags = {
        "anomaly.kind": kind,
        "anomaly.version": anomaly.__version__,
        "host": platform.node(),
    }
    commit = git_commit()
    if commit:
        tags["git.commit"] = commit
    return tags


def git_commit() -> str | None:
    """The commit of the code that runs: the git checkout holding this package.

    None for an installed wheel (no checkout) or where git is missing.
    """
    package_dir = Path(anomaly.__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
            cwd=package_dir,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


class RunLogger:
    """The active MLflow run, or a stand-in that logs nothing when tracking is off.

    Every call is guarded: a failure (the server went away mid-run) is recorded in
    ``failed`` with what was not uploaded, and the run goes on with its local outputs.
    """

    def __init__(self, run_id: str | None, uri: str) -> None:
        self.run_id = run_id
        self.uri = uri
        self.failed: list[str] = []

    @property
    def enabled(self) -> bool:
        """True when a run is active."""
        return self.run_id is not None

    def _call(self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if not self.enabled:
            return None
        try:
            # Whole or not at all: a Ctrl-C inside a store transaction can keep the
            # store locked, and the run's final status is then lost (RUNNING forever).
            with deferred_ctrl_c():
                return fn(*args, **kwargs)
        except Exception as exc:
            log.warning("MLflow: %s was not uploaded (%s)", what, exc)
            self.failed.append(f"{what}: {exc}")
            return None

    def params(self, params: Mapping[str, Any]) -> None:
        """Log parameters (values as text, capped at MLflow's 6000 characters)."""
        self._call("parameters", mlflow.log_params, {k: str(v)[:6000] for k, v in params.items()})

    def metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Log metrics (at ``step``)."""
        self._call(
            "metrics", mlflow.log_metrics, {k: float(v) for k, v in metrics.items()}, step=step
        )

    def artifact(self, path: str | os.PathLike[str], folder: str | None = None) -> None:
        """Upload one file."""
        self._call(f"artifact {path}", mlflow.log_artifact, str(path), folder)

    def text(self, text: str, name: str) -> None:
        """Upload text as a file."""
        self._call(f"artifact {name}", mlflow.log_text, text, name)

    def image(self, image: Image.Image, *, key: str, step: int) -> None:
        """Log an image under ``key`` at ``step`` (the UI shows a slider over the steps)."""
        self._call(f"image {key} step {step}", mlflow.log_image, image, key=key, step=step)

    def table(self, frame: pd.DataFrame, name: str) -> None:
        """Log a table the UI renders (``mlflow.log_table``)."""
        self._call(f"table {name}", mlflow.log_table, data=frame, artifact_file=name)

    def call(self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Any other MLflow call, guarded the same way."""
        return self._call(what, fn, *args, **kwargs)

    def report(self) -> None:
        """Warn once about everything that was not uploaded."""
        if self.failed:
            log.error(
                "MLflow upload incomplete; local outputs are complete. Not uploaded:\n  %s",
                "\n  ".join(self.failed),
            )


@contextlib.contextmanager
def start_run(
    *,
    uri: str,
    experiment: str,
    run_name: str | None = None,
    tags: Mapping[str, str] | None = None,
    required: bool = True,
    local_when_unusable: bool = False,
    system_metrics: bool = False,
    run_id: str | None = None,
) -> Iterator[RunLogger]:
    """Start an MLflow run in ``experiment`` and end it (FAILED on an exception).

    Args:
        uri: Tracking URI.
        experiment: Experiment name (created if missing).
        run_name: Display name of the run.
        tags: Tags of the run.
        required: When False, an unreachable store gives one warning and a disabled logger
            instead of an error.
        local_when_unusable: With ``required``, an unusable store still yields a disabled
            logger, whose ``failed`` names the whole run as not logged (exit code 4 after
            the local work): for scheduled runs, whose local results matter most.
        system_metrics: Also sample CPU and memory use (MLflow's system metrics).
        run_id: Reopen this run instead of starting a new one (a resumed training).

    Yields:
        The run's logger.

    Raises:
        TrackingError: The store is unreachable and ``required`` is True.
    """
    try:
        check_reachable(uri)
        experiment_id = get_experiment_id(uri, experiment)
    except TrackingError as exc:
        if required and not local_when_unusable:
            raise
        log.warning("%s; continuing without MLflow: only local outputs are written", exc)
        logger = RunLogger(None, uri)
        if required:
            logger.failed.append(f"the whole MLflow run ({exc})")
        yield logger
        logger.report()
        return
    # Not mlflow.start_run's context manager: its end_run raises when the server went away
    # mid-run, and the local outputs would end in a traceback instead of a clear exit 4.
    run = None
    logger = RunLogger(None, uri)
    status = "FINISHED"
    try:
        # A Ctrl-C during the start is raised once the run exists, so that it ends KILLED.
        with deferred_ctrl_c():
            run = mlflow.start_run(
                run_id=run_id,
                experiment_id=None if run_id else experiment_id,
                run_name=None if run_id else run_name,
                tags=dict(tags or {}),
                log_system_metrics=system_metrics,
                # Inside a pipeline's parent run, each step is a child run.
                nested=mlflow.active_run() is not None,
            )
        logger.run_id = run.info.run_id
        yield logger
    except BaseException as exc:
        # Stopped on purpose (Ctrl-C, SIGTERM): KILLED, not FAILED, in the UI.
        stopped = isinstance(exc, KeyboardInterrupt) or getattr(exc, "exit_code", 0) == 130
        status = "KILLED" if stopped else "FAILED"
        raise
    finally:
        if run is not None:
            logger.call("the run status", mlflow.end_run, status)
            _stop_system_metrics(run.info.run_id)
            logger.report()


def _stop_system_metrics(run_id: str) -> None:
    """Stop the run's system-metrics thread, which end_run skips when it fails."""
    from mlflow.tracking.fluent import run_id_to_system_metrics_monitor

    monitor = run_id_to_system_metrics_monitor.pop(run_id, None)
    if monitor is not None:
        with contextlib.suppress(Exception):
            monitor.finish()


class EpochMetricsCallback(pl.Callback):
    """Log Lightning's epoch metrics (``train/loss``, ``val/loss``) to the run.

    Each epoch is logged once, with the epoch as step, also when a Ctrl-C lands after
    Lightning counted the epoch as done but before its metrics were uploaded: the checkpoint
    saved on that interrupt resumes at the next epoch, so the metrics are logged then or
    never (a hole in the curve).
    """

    def __init__(self, logger: RunLogger) -> None:
        self.logger = logger

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Log every scalar metric with the epoch as step."""
        self._log(trainer, trainer.current_epoch)

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        """Log the metrics of an epoch that finished but was interrupted before logging."""
        progress = trainer.fit_loop.epoch_progress.current
        # Processed but not completed: the interrupt hit the epoch's end hooks.
        if progress.processed > progress.completed:
            epoch = progress.completed
            if not self._in_run(trainer, epoch):
                self._log(trainer, epoch)

    def _log(self, trainer: pl.Trainer, epoch: int) -> None:
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
        if metrics:
            self.logger.metrics(metrics, step=epoch)

    def _in_run(self, trainer: pl.Trainer, epoch: int) -> bool:
        """True when the run has the epoch's metrics (the interrupt hit after the upload)."""
        if not self.logger.enabled or not trainer.callback_metrics:
            return False
        key = next(iter(trainer.callback_metrics))
        history = self.logger.call(
            f"metric history of {key}",
            lambda: MlflowClient(self.logger.uri).get_metric_history(self.logger.run_id, key),
        )
        return any(m.step == epoch for m in history or [])


class SampleGridCallback(pl.Callback):
    """Log a picture of the model's progress every few epochs (the UI's image slider).

    Args:
        logger: The run.
        render: Draws the current state of the module as an image.
        every_n_epochs: Period; 0 disables it. A long training of few photos (100 short
            epochs) is drawn at most :attr:`MAX_PICTURES` times, not at every epoch.
    """

    MAX_PICTURES = 20

    def __init__(
        self,
        logger: RunLogger,
        render: Callable[[pl.LightningModule], Image.Image],
        every_n_epochs: int = 1,
    ) -> None:
        self.logger = logger
        self.render = render
        self.every_n_epochs = every_n_epochs

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Render and log at the end of every ``every_n_epochs``-th epoch."""
        epoch = trainer.current_epoch
        last = epoch + 1 == trainer.max_epochs
        if not self.logger.enabled or self.every_n_epochs <= 0:
            return
        period = max(self.every_n_epochs, -(-int(trainer.max_epochs) // self.MAX_PICTURES))
        if (epoch + 1) % period and not last:
            return
        was_training = pl_module.training
        try:
            image = self.render(pl_module)
        finally:
            pl_module.train(was_training)
        self.logger.image(image, key="samples", step=epoch)
