"""The model as MLflow sees it: a pyfunc bundle of the model folder, and finding models.

``mlflow.pyfunc.load_model(uri).predict(...)`` needs nothing but the package installed:
weights, ``calibration.json`` and preprocessing travel inside the bundle.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from hydra.utils import get_class
from mlflow.models import ModelSignature
from mlflow.types.schema import Array, ColSpec, DataType, Schema

import anomaly
from anomaly.errors import ImageReadError, ModelFolderError, TrackingError
from anomaly.model_folder import read_meta
from anomaly.scoring.regions import RegionSettings
from anomaly.tracking.store import ensure_store

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
MODEL_DIR_KEY = "model_dir"
PREDICT_COLUMNS = (
    "score",
    "p_value",
    "is_defective",
    "n_regions",
    "defect_area_px",
    "mask",
    "error",
)

SIGNATURE = ModelSignature(
    inputs=Schema(
        [
            ColSpec(DataType.string, "path", required=False),
            ColSpec(Array(Array(DataType.double)), "image", required=False),
            # The encoded file (PNG, JPEG, ...), e.g. from Spark's binaryFile source.
            ColSpec(DataType.binary, "content", required=False),
        ]
    ),
    outputs=Schema(
        [
            ColSpec(DataType.double, "score"),
            ColSpec(DataType.double, "p_value"),
            ColSpec(DataType.boolean, "is_defective"),
            ColSpec(DataType.long, "n_regions"),
            ColSpec(DataType.long, "defect_area_px"),
            ColSpec(Array(Array(DataType.long)), "mask"),
            ColSpec(DataType.string, "error"),
        ]
    ),
)


def resolve_model(model: str, *, tracking_uri: str, download_to: str | os.PathLike[str]) -> Path:
    """A local model folder for ``model``, downloading it when it is an MLflow URI.

    Args:
        model: A model folder (``<output_dir>/model`` of a training) or an MLflow URI such
            as ``runs:/<run id>/model`` or ``models:/<name>@<alias>``.
        tracking_uri: Store that resolves ``runs:/`` and ``models:/`` URIs.
        download_to: Folder to download into.

    Returns:
        The local model folder (the one holding ``model.json``).

    Raises:
        ModelFolderError: ``model`` is neither an existing folder nor a URI, or the download
            holds no model folder.
        TrackingError: The URI cannot be downloaded.
    """
    path = Path(model)
    if path.is_dir():
        return path
    if not model.startswith(_URI_PREFIXES):
        raise ModelFolderError(
            f"model={model!r} is neither an existing model folder nor an MLflow URI; give "
            "the model folder a training wrote (<output_dir>/model), runs:/<run id>/model or "
            "models:/<name>@<alias>"
        )
    ensure_store(tracking_uri)
    mlflow.set_tracking_uri(tracking_uri)
    try:
        local = Path(
            mlflow.artifacts.download_artifacts(artifact_uri=model, dst_path=str(download_to))
        )
    except Exception as exc:
        raise TrackingError(
            f"model={model!r} cannot be downloaded from {tracking_uri}: {exc}"
        ) from exc
    if (local / "model.json").is_file():
        return local
    # A pyfunc bundle: the model folder sits under artifacts/.
    found = sorted(local.glob("artifacts/*/model.json"))
    if not found:
        raise ModelFolderError(f"{model} holds no anomaly model folder (no model.json)")
    return found[0].parent


def load_model(model: str, *, tracking_uri: str) -> Any:
    """The calibrated :class:`~anomaly.scoring.detector.Detector` of a model folder or URI.

    An MLflow URI is downloaded into a temporary folder, removed once the model is loaded.

    Raises:
        ModelFolderError: See :func:`resolve_model` and ``load_detector``.
        TrackingError: The URI cannot be downloaded.
    """
    import tempfile

    from anomaly.model_folder import load_detector

    with tempfile.TemporaryDirectory(prefix="anomaly-model-") as tmp:
        return load_detector(resolve_model(model, tracking_uri=tracking_uri, download_to=tmp))


def model_version_tags(model: str, *, tracking_uri: str) -> dict[str, str]:
    """Registry name and version behind a ``models:/`` URI, the run of a ``runs:/`` URI.

    Empty for anything else (a local folder), without contacting the store.
    """
    if not model.startswith("models:/"):
        return {"model.run_id": model.split("/")[1]} if model.startswith("runs:/") else {}
    ref = model.removeprefix("models:/")
    ensure_store(tracking_uri)
    client = mlflow.MlflowClient(tracking_uri)
    try:
        if "@" in ref:
            name, alias = ref.split("@", 1)
            version = client.get_model_version_by_alias(name, alias)
        else:
            name, number = ref.rsplit("/", 1)
            version = client.get_model_version(name, number)
    except Exception:
        return {}
    return {
        "model.name": version.name,
        "model.version": str(version.version),
        "model.run_id": version.run_id or "",
    }


def model_run_tags(model: str, *, model_id: str, tracking_uri: str) -> dict[str, str]:
    """Tags that tie a run to the model it used: URI, model id, registry version or run.

    Args:
        model: The URI or folder the run loaded.
        model_id: The loaded model's id (:attr:`Detector.model_id`).
        tracking_uri: The store that resolves ``models:/`` URIs.
    """
    return {"model.uri": str(model), "model.id": model_id} | model_version_tags(
        str(model), tracking_uri=tracking_uri
    )


def predict_images(
    detector: Any, model_input: Any, *, regions: RegionSettings | None = None
) -> pd.DataFrame:
    """Score images given as paths or arrays (what the pyfunc model's ``predict`` does).

    Args:
        detector: A calibrated :class:`~anomaly.scoring.detector.Detector`.
        model_input: A DataFrame with a ``path``, ``image`` and/or ``content`` (the encoded
            file's bytes; ``path`` then only names it) column; a list of paths
            and/or arrays; one path; or a numpy array: ``(H, W)`` or ``(H, W, C)`` one image,
            ``(N, H, W)`` or ``(N, H, W, C)`` a batch.
        regions: Cleaning of the defect masks (the score command's defaults when None).

    Returns:
        One row per input: ``score``, ``p_value``, ``is_defective``, ``n_regions``,
        ``defect_area_px``, ``mask`` (``(H, W)`` uint8 0/255 at the image's size) and
        ``error`` (empty, or why the image could not be read or judged, e.g. NaN pixels
        or a non-finite score; the other fields are then missing: no verdict).
    """
    from anomaly.data.images import array_to_image, read_image
    from anomaly.scoring.verdict import analyse

    channels = detector.preprocess.channels
    rows: list[dict[str, Any]] = []
    arrays, positions = [], []
    for k, item in enumerate(_items(model_input)):
        try:
            if isinstance(item, tuple):  # (name, encoded bytes)
                array = read_image(item[0], channels=channels, content=item[1])
            elif isinstance(item, (str, Path)):
                array = read_image(item, channels=channels)
            else:
                array = array_to_image(np.asarray(item), channels=channels)
        except (ImageReadError, ValueError) as exc:
            rows.append({"error": getattr(exc, "reason", str(exc))})
            continue
        rows.append({})
        arrays.append(array)
        positions.append(k)
    if arrays:
        inputs = [detector.preprocess(a) for a in arrays]
        cal = detector.calibration
        results = analyse(
            detector,
            detector.inspect(inputs),
            [a.shape[:2] for a in arrays],
            image_threshold=cal.image_threshold,
            pixel_threshold=cal.pixel_threshold,
            regions=regions or RegionSettings(),
        )
        for k, result in zip(positions, results, strict=True):
            if result.error:
                # A non-finite score or map: reported like an unreadable image, since
                # NaN > threshold would pass the part.
                rows[k] = {"error": result.error}
                continue
            rows[k] = {
                "score": result.score,
                "p_value": result.p_value,
                "is_defective": result.is_defective,
                "n_regions": result.n_regions,
                "defect_area_px": result.defect_area,
                "mask": result.mask,
                "error": "",
            }
    return pd.DataFrame(rows, columns=list(PREDICT_COLUMNS))


def _items(model_input: Any) -> Sequence[Any]:
    if isinstance(model_input, (str, Path)):
        return [model_input]
    if isinstance(model_input, pd.DataFrame):
        items = []
        for _, row in model_input.iterrows():
            path, content = row.get("path"), row.get("content")
            named = isinstance(path, str) and bool(path)
            if isinstance(content, (bytes, bytearray)):
                items.append((path if named else "<bytes>", bytes(content)))
            else:
                items.append(path if named else row.get("image"))
        return items
    if isinstance(model_input, np.ndarray):
        if model_input.ndim == 2 or (model_input.ndim == 3 and model_input.shape[-1] in (3, 4)):
            return [model_input]
        return list(model_input)
    return list(model_input)


# MLflow inspects predict's type hints when the class is created and, finding none, warns
# into every training log; they are left out on purpose (see predict). MLflow resets the
# warning filters around that check, so the warning is caught, not filtered, and any other
# passed on.
with warnings.catch_warnings(record=True) as _caught:

    class AnomalyPyfunc(mlflow.pyfunc.PythonModel):
        """An anomaly model folder behind MLflow's pyfunc interface."""

        def load_context(self, context: Any) -> None:
            """Load the bundled model folder."""
            from anomaly.model_folder import load_detector

            self.detector = load_detector(context.artifacts[MODEL_DIR_KEY])

        # model_input is left unannotated on purpose: MLflow reads predict's type hints and
        # would replace the explicit signature (paths and arrays) with one inferred from them.
        def predict(self, context, model_input, params=None):
            """Score paths or arrays; see :func:`predict_images`."""
            return predict_images(self.detector, model_input)


for _warning in _caught:
    if "type hints" not in str(_warning.message):
        warnings.warn_explicit(
            _warning.message, _warning.category, _warning.filename, _warning.lineno
        )


def log_pyfunc(model_dir: str | os.PathLike[str], *, registered_name: str | None = None) -> Any:
    """Log a model folder as the active run's pyfunc model ``model`` (and register it).

    Returns:
        MLflow's ``ModelInfo`` (``model_uri``, ``registered_model_version``).
    """
    return mlflow.pyfunc.log_model(
        name="model",
        python_model=AnomalyPyfunc(),
        artifacts={MODEL_DIR_KEY: str(model_dir)},
        signature=SIGNATURE,
        input_example=pd.DataFrame({"image": [np.full((32, 32), 0.5).tolist()]}),
        registered_model_name=registered_name,
        # Stated, not inferred: inference would re-import the model in a subprocess.
        pip_requirements=pip_requirements(model_dir),
    )


def pip_requirements(model_dir: str | os.PathLike[str]) -> list[str]:
    """What a serving environment must install to load the model folder.

    A module class may name more (``pip_requirements``): one on a pretrained backbone
    needs its architecture's package, not the weights, which travel in the checkpoint.
    """
    requirements = [
        f"anomaly=={anomaly.__version__}",
        "torch",
        "pytorch-lightning",
        "hydra-core",
        "mlflow",
        "scikit-image",
        "pandas",
        "pillow",
    ]
    module_class = get_class(read_meta(model_dir)["module_class"])
    return requirements + list(getattr(module_class, "pip_requirements", ()))


def set_alias(tracking_uri: str, name: str, alias: str, version: int | str) -> str | None:
    """Point ``alias`` of registered model ``name`` at ``version``.

    Returns:
        The version the alias pointed at before, or None.

    Raises:
        TrackingError: The model or version does not exist, or the store is unreachable.
    """
    ensure_store(tracking_uri)
    client = mlflow.MlflowClient(tracking_uri)
    try:
        client.get_model_version(name, str(version))
    except Exception as exc:
        raise TrackingError(
            f"registered model {name!r} has no version {version} in {tracking_uri} ({exc})"
        ) from exc
    try:
        previous = client.get_model_version_by_alias(name, alias).version
    except Exception:
        previous = None
    client.set_registered_model_alias(name, alias, str(version))
    return None if previous is None else str(previous)
