"""The model folder: everything needed to score, in one directory.

::

    model/
      model.ckpt        Lightning checkpoint (weights + plain hyper-parameters)
      model.json        module class, preprocessing, map settings, provenance
      calibration.json  thresholds fitted on defect-free validation images (editable)
      features.npz      Gaussian over the training images' features (feature score; optional)
      patches.npz       memory of the training images' feature positions (patch map; optional)
      config.yaml       the resolved training config

It is written locally before anything is uploaded, so a failed upload never loses a
finished training, and the same folder is logged to MLflow as the run's ``model``.
"""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.utils import get_class

import anomaly
from anomaly.data.transforms import Preprocess
from anomaly.errors import ConfigError, ModelFolderError
from anomaly.io import default_file_mode, write_json_atomic, write_text_atomic
from anomaly.models.inspection import inspectable
from anomaly.scoring.addons import ADDONS
from anomaly.scoring.calibration import CALIBRATION_FILE, Calibration
from anomaly.scoring.detector import Detector
from anomaly.scoring.maps import MapSettings

CHECKPOINT_FILE = "model.ckpt"
META_FILE = "model.json"
CONFIG_FILE = "config.yaml"


def save_model_folder(
    folder: str | os.PathLike[str],
    *,
    trainer: pl.Trainer,
    detector: Detector,
    config_yaml: str,
    model_name: str,
) -> Path:
    """Write a complete model folder (checkpoint first, metadata last).

    Args:
        folder: The model folder (created if need be).
        trainer: The trainer whose checkpoint of ``detector.model`` is written.
        detector: The calibrated detector: its preprocessing, map settings, calibration,
            identifier and fitted add-ons (:data:`~anomaly.scoring.addons.ADDONS`). An
            add-on it lacks has a stale file from an earlier run into the folder removed.
        config_yaml: The resolved training config.
        model_name: The config's model name.

    Returns:
        The folder.

    Raises:
        ValueError: The detector is not calibrated.
    """
    if detector.calibration is None:
        raise ValueError("the detector is not calibrated; calibrate it before saving")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{CHECKPOINT_FILE}.tmp"
    trainer.save_checkpoint(tmp, weights_only=True)
    # Lightning's writer (fsspec) does not follow the umask; the folder's other files do.
    os.chmod(tmp, default_file_mode())
    os.replace(tmp, folder / CHECKPOINT_FILE)
    for addon in ADDONS:
        part = getattr(detector, addon.attribute)
        if part is not None:
            addon.save(part, folder)
        else:
            (folder / addon.file).unlink(missing_ok=True)
    detector.calibration.save(folder / CALIBRATION_FILE)
    write_text_atomic(folder / CONFIG_FILE, config_yaml)
    module = detector.model
    meta = {
        "module_class": f"{type(module).__module__}.{type(module).__qualname__}",
        "model_name": model_name,
        "model_id": detector.model_id,
        "preprocess": detector.preprocess.to_dict(),
        "maps": detector.maps.to_dict(),
        "package_version": anomaly.__version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    write_json_atomic(folder / META_FILE, meta)
    return folder


def read_meta(folder: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and check ``model.json``.

    Raises:
        ModelFolderError: The folder or file is missing or invalid.
    """
    folder = Path(folder)
    path = folder / META_FILE
    if not folder.is_dir():
        raise ModelFolderError(f"model folder {folder} does not exist")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ModelFolderError(
            f"{folder} is not a model folder: {META_FILE} is missing (a model folder is "
            "written by `anomaly train` as <output_dir>/model)"
        ) from exc
    except json.JSONDecodeError as exc:
        raise ModelFolderError(f"{path} is not valid JSON: {exc.msg} (line {exc.lineno})") from exc
    for key in ("module_class", "preprocess", "maps"):
        if key not in meta:
            raise ModelFolderError(f"{path} lacks the key {key!r}; retrain or restore the file")
    return meta


def load_detector(folder: str | os.PathLike[str], *, calibrated: bool = True) -> Detector:
    """Load a model folder into a ready-to-score :class:`Detector` on the CPU.

    Args:
        folder: The model folder.
        calibrated: Also load ``calibration.json`` (False to re-fit a broken one).

    Raises:
        ModelFolderError: Missing or invalid files, or a checkpoint that does not fit.
    """
    folder = Path(folder)
    meta = read_meta(folder)
    ckpt = folder / CHECKPOINT_FILE
    if not ckpt.is_file():
        raise ModelFolderError(f"{ckpt} is missing; the model folder is incomplete")
    try:
        module_class = get_class(meta["module_class"])
    except Exception as exc:
        raise ModelFolderError(
            f"{folder / META_FILE}: module_class {meta['module_class']!r} cannot be imported "
            f"({exc}); is the model from a newer version of anomaly?"
        ) from exc
    try:
        preprocess = Preprocess.create(**meta["preprocess"])
        maps = MapSettings(**meta["maps"])
    except (ConfigError, TypeError) as exc:
        raise ModelFolderError(f"{folder / META_FILE}: invalid settings: {exc}") from exc
    try:
        module = module_class.load_from_checkpoint(ckpt, map_location=torch.device("cpu"))
        # Hyper-parameters travel inside the checkpoint, so one of another architecture can
        # load without complaint and fail only on the first image: try one now.
        Detector(module, preprocess, maps).anomaly_maps(
            torch.zeros(1, preprocess.channels, *preprocess.image_size)
        )
    except Exception as exc:
        # A state-dict mismatch lists every tensor; its first line says enough.
        detail = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        raise ModelFolderError(
            f"{ckpt} does not fit {meta['module_class']} ({detail}); was the checkpoint "
            "copied from a model folder of another architecture? Keep model.ckpt and "
            "model.json of the same training together"
        ) from exc
    calibration = Calibration.load(folder / CALIBRATION_FILE) if calibrated else None
    gives = inspectable(module).gives
    parts: dict[str, Any] = {}
    for addon in ADDONS:
        path = folder / addon.file
        parts[addon.attribute] = addon.load(path) if path.is_file() else None
        use = addon.used_by(calibration) if calibration is not None else ""
        if use and parts[addon.attribute] is None and addon.stood_in_by not in gives:
            raise ModelFolderError(
                f"{folder / CALIBRATION_FILE} {use} but {path} is missing; restore it from "
                "the model's MLflow run, fit a new one with `anomaly calibrate`, or re-fit "
                f"the thresholds without it with `anomaly calibrate {addon.key}.enabled=false`"
            )
    detector = Detector(
        model=module,
        preprocess=preprocess,
        maps=maps,
        calibration=calibration,
        model_id=str(meta.get("model_id", "")),
        **parts,
    )
    loaded = [a for a in ADDONS if parts[a.attribute] is not None and detector.supports(a)]
    if loaded:
        # An add-on fitted on another network's features fails here, not on the first image.
        try:
            detector.inspect(torch.zeros(1, preprocess.channels, *preprocess.image_size))
        except ValueError as exc:
            files = " or ".join(str(folder / a.file) for a in loaded)
            raise ModelFolderError(
                f"{files} does not fit {ckpt} ({exc}); keep the files of one training "
                "together, or delete it and fit a new one with `anomaly calibrate`"
            ) from exc
    return detector
