"""Finding a model: a local model folder or an MLflow model URI."""

from __future__ import annotations

import os
from pathlib import Path

import mlflow

from anomaly.errors import ModelFolderError, TrackingError

_URI_PREFIXES = (
    "runs:/",
    "models:/",
    "mlflow-artifacts:/",
    "file:/",
    "http://",
    "https://",
    "s3://",
    "gs://",
    "wasbs://",
    "dbfs:/",
)


def resolve_model(model: str, *, tracking_uri: str, download_to: str | os.PathLike[str]) -> Path:
    """A local model folder for ``model``, downloading it when it is an MLflow URI.

    Args:
        model: A model folder (``<output_dir>/model`` of a training) or an MLflow URI such
            as ``runs:/<run id>/model`` or ``models:/<name>@<alias>``.
        tracking_uri: Store that resolves ``runs:/`` and ``models:/`` URIs.
        download_to: Folder to download into.

    Returns:
        The local model folder.

    Raises:
        ModelFolderError: ``model`` is neither an existing folder nor a URI.
        TrackingError: The URI cannot be downloaded.
    """
    path = Path(model)
    if path.is_dir():
        return path
    if not model.startswith(_URI_PREFIXES):
        raise ModelFolderError(
            f"model={model!r} is neither an existing model folder nor an MLflow URI; give "
            "the model folder a training wrote (<output_dir>/model) or e.g. runs:/<run id>/model"
        )
    mlflow.set_tracking_uri(tracking_uri)
    try:
        local = mlflow.artifacts.download_artifacts(artifact_uri=model, dst_path=str(download_to))
    except Exception as exc:
        raise TrackingError(
            f"model={model!r} cannot be downloaded from {tracking_uri}: {exc}"
        ) from exc
    return Path(local)
