"""Re-fit a model's thresholds on defect-free images without retraining."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from anomaly.data.folder import fingerprint, scan_dataset, split_validation
from anomaly.errors import ModelFolderError
from anomaly.jobs.checks import check_config
from anomaly.jobs.results import CalibrateResult
from anomaly.model_folder import CONFIG_FILE, load_detector
from anomaly.scoring.addons import ADDONS
from anomaly.scoring.calibration import CALIBRATION_FILE
from anomaly.scoring.evaluation import evaluate
from anomaly.scoring.fitting import fit_and_calibrate
from anomaly.scoring.patches import DEFAULT_WEIGHT
from anomaly.settings import (
    addons_and_framing,
    calibration_spec,
    loading,
    recalibrated_map_weight,
)
from anomaly.tracking.lineage import file_set, log_file_sets
from anomaly.tracking.mlflow_logger import base_tags, resolve_tracking_uri, start_run

log = logging.getLogger(__name__)


def recalibrate(cfg: DictConfig) -> CalibrateResult:
    """Fit ``calibration.json`` of a local model folder anew (``anomaly calibrate``).

    The validation split is carved from ``data.root``'s defect-free training images with
    the training's seed and fraction unless overridden, so on the training data the same
    images are used. A model without ``features.npz`` gets one, fitted on the training
    part of that split, unless ``scoring.feature_score.enabled=false`` (which leaves
    the image score to the map); likewise a model without ``patches.npz`` gets the patch
    map's memory unless ``scoring.patch_map.enabled=false`` (which leaves the map to the
    model). When the root has a labelled test split, the false-alarm
    rate on its defect-free images and the image F1 at the new threshold are reported too.

    Returns:
        The new calibration, the thresholds before (or None) and the metrics.
    """
    check_config(cfg)
    folder = Path(str(cfg.model_uri))
    if not folder.is_dir():
        raise ModelFolderError(
            f"model={folder} is not a local model folder; `anomaly calibrate` rewrites "
            "calibration.json in place, so give the folder (download an MLflow model first)"
        )
    detector = load_detector(folder, calibrated=False)
    previous = _previous_thresholds(folder)
    trained = OmegaConf.load(folder / CONFIG_FILE) if (folder / CONFIG_FILE).is_file() else None

    def setting(value: Any, key: str, default: Any) -> Any:
        if value is not None:
            return value
        return OmegaConf.select(trained, key, default=default) if trained else default

    fraction = float(setting(cfg.data.val_fraction, "data.val_fraction", 0.1))
    seed = int(setting(cfg.seed, "seed", 0))
    suffix = str(setting(cfg.data.mask_suffix, "data.mask_suffix", "_mask"))
    splits = scan_dataset(cfg.data.root, mask_suffix=suffix)
    # A model trained before data.min_val_images existed was split by the fraction alone.
    min_images = int(setting(cfg.data.get("min_val_images"), "data.min_val_images", 0))
    training, validation = split_validation(
        splits.train, fraction=fraction, seed=seed, min_images=min_images
    )
    feed = loading(cfg)
    # The training's, as saved, unless given (it may be the model's own, model.patch_weight).
    cfg.scoring.patch_map.weight = float(
        setting(cfg.scoring.patch_map.weight, "scoring.patch_map.weight", DEFAULT_WEIGHT)
    )
    # All the defect-free training photos, validation part included, as the training saw.
    wanted = addons_and_framing(
        cfg, detector.model, detector.preprocess, [s.path for s in splits.train]
    )
    cfg.scoring.feature_score.map_weight = recalibrated_map_weight(
        cfg.scoring.feature_score.map_weight,
        trained,
        pixels=cfg.scoring.position_score.pixels,
    )
    for addon in ADDONS:
        if addon not in wanted:
            # A file in the folder stays there, unused: calibration.json decides.
            setattr(detector, addon.attribute, None)
    # A model trained before an add-on existed (or with it off) gets it here, fitted on
    # the training part of the same split.
    missing = {a: s for a, s in wanted.items() if getattr(detector, a.attribute) is None}
    calibration = fit_and_calibrate(
        detector,
        training,
        validation,
        missing,
        calibration_spec(cfg),
        loading=feed,
        fingerprint=fingerprint([s.path for s in validation]),
        seed=seed,
    )
    metrics = {
        "calibration/image_threshold": calibration.image_threshold,
        "calibration/pixel_threshold": calibration.pixel_threshold,
        "calibration/n_images": float(calibration.n_images),
    }
    if splits.test:
        evaluation = evaluate(
            detector,
            splits.test,
            pixel_metrics_at=None,
            batch_size=feed.batch_size,
            num_workers=feed.num_workers,
        )
        good = np.array([s.label == 0 for s in evaluation.samples])
        if good.any():
            flagged = evaluation.scores[good] > calibration.image_threshold
            metrics["test_false_alarm_rate"] = float(np.mean(flagged))
        if "image_f1" in evaluation.metrics:
            metrics["image_f1"] = evaluation.metrics["image_f1"]
    for addon in missing:
        addon.save(getattr(detector, addon.attribute), folder)
    calibration.save(folder / CALIBRATION_FILE)
    uri = resolve_tracking_uri(cfg.tracking.uri)
    tags = base_tags(kind="calibrate") | {"model.id": detector.model_id}
    with start_run(
        uri=uri,
        experiment=str(cfg.tracking.experiment),
        run_name="calibrate",
        tags=tags,
        required=bool(cfg.tracking.required),
    ) as run:
        run.params(
            {
                "model": str(folder.resolve()),
                "data.root": str(cfg.data.root),
                "method": calibration.method,
                "data.val_fraction": fraction,
                "seed": seed,
            }
        )
        run.metrics(metrics)
        if run.enabled:
            log_file_sets(run, [file_set(validation, root=splits.root, context="validation")])
        run.artifact(folder / CALIBRATION_FILE)
        for addon in missing:
            run.artifact(folder / addon.file)
    log.info(
        "wrote %s: image threshold %.6g, pixel threshold %.6g",
        folder / CALIBRATION_FILE,
        calibration.image_threshold,
        calibration.pixel_threshold,
    )
    return CalibrateResult(
        calibration=calibration,
        previous=previous,
        metrics=metrics,
        run_id=run.run_id,
        tracking_uri=uri,
        path=str(folder / CALIBRATION_FILE),
        not_uploaded=list(run.failed),
        unreadable=len(validation) - calibration.n_images,
    )


def _previous_thresholds(folder: Path) -> dict[str, float] | None:
    from anomaly.scoring.calibration import Calibration

    try:
        old = Calibration.load(folder / CALIBRATION_FILE)
    except ModelFolderError:
        return None
    return {"image": old.image_threshold, "pixel": old.pixel_threshold}
