"""MLflow runs for training and scoring.

The default store is embedded and needs no server: a SQLite database and an artifact
folder under ``./mlruns`` of the working directory. ``tracking.uri`` (or the
``MLFLOW_TRACKING_URI`` environment variable) points it anywhere else.
"""

from __future__ import annotations

import contextlib
import logging
import os
import platform
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import mlflow
import pytorch_lightning as pl
from mlflow.entities import Run

import anomaly
from anomaly.errors import TrackingError

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


def ui_command(uri: str) -> str:
    """The shell command that opens the MLflow UI on a tracking store."""
    if uri.startswith(("http://", "https://")):
        return f"open {uri} in a browser"
    return f"mlflow ui --backend-store-uri {uri} --port 5000"


def _artifact_location(uri: str) -> str | None:
    # With a SQLite store, keep artifacts beside the database instead of MLflow's default
    # ./mlartifacts relative to wherever the first run happened to start.
    if uri.startswith("sqlite:///"):
        return (Path(uri.removeprefix("sqlite:///")).parent / "artifacts").resolve().as_uri()
    return None


def get_experiment_id(uri: str, name: str) -> str:
    """Id of the experiment ``name`` in the store at ``uri``, created if missing.

    Raises:
        TrackingError: The store cannot be reached.
    """
    mlflow.set_tracking_uri(uri)
    try:
        experiment = mlflow.get_experiment_by_name(name)
        if experiment is not None:
            return experiment.experiment_id
        return mlflow.create_experiment(name, artifact_location=_artifact_location(uri))
    except Exception as exc:
        raise TrackingError(
            f"MLflow tracking store {uri} is not usable ({type(exc).__name__}: {exc}); "
            "check tracking.uri / MLFLOW_TRACKING_URI or start the server"
        ) from exc


@contextlib.contextmanager
def start_run(
    *,
    uri: str,
    experiment: str,
    run_name: str | None = None,
    tags: Mapping[str, str] | None = None,
) -> Iterator[Run]:
    """Start an MLflow run in ``experiment`` and end it (FAILED on an exception).

    Yields:
        The active run.
    """
    experiment_id = get_experiment_id(uri, experiment)
    with mlflow.start_run(
        experiment_id=experiment_id, run_name=run_name, tags=dict(tags or {})
    ) as run:
        yield run


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Flatten a nested mapping into ``a.b.c -> str(value)`` pairs for MLflow params."""
    flat: dict[str, str] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        else:
            # MLflow caps a param value at 6000 characters; configs stay far below it.
            flat[name] = str(value)[:6000]
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
    """The commit of the working directory's git checkout, or None outside one."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


class EpochMetricsCallback(pl.Callback):
    """Log Lightning's epoch metrics (``train/loss``, ``val/loss``) to the active run."""

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Log every scalar metric with the epoch as step."""
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
        if metrics and mlflow.active_run() is not None:
            mlflow.log_metrics(metrics, step=trainer.current_epoch)
