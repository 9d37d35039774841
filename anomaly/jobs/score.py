"""Score a folder of images with a trained model and log the run to MLflow."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
from omegaconf import DictConfig

from anomaly.data.folder import Sample, list_images
from anomaly.errors import ConfigError
from anomaly.jobs.checks import check_config
from anomaly.jobs.report import write_report
from anomaly.jobs.results import ScoreResult
from anomaly.report.context import report_context
from anomaly.scoring.regions import RegionSettings
from anomaly.scoring.results import score_folder
from anomaly.scoring.stream import Progress
from anomaly.scoring.writer import OutputSettings
from anomaly.tracking.lineage import file_set, log_file_sets
from anomaly.tracking.mlflow_logger import base_tags, resolve_tracking_uri, start_run
from anomaly.tracking.model import load_model, model_run_tags

log = logging.getLogger(__name__)

# Overlays of this many highest-scoring images are uploaded with a scoring run.
OVERLAY_SAMPLE = 8


def run_scoring(
    *,
    model: str,
    input_dir: str | Path,
    output_dir: str | Path,
    tracking_uri: str | None,
    experiment: str,
    required: bool = True,
    image_threshold: float | None = None,
    pixel_threshold: float | None = None,
    regions: RegionSettings | None = None,
    outputs: OutputSettings | None = None,
    batch_size: int = 32,
    num_workers: int = 0,
    progress: Progress | None = None,
) -> ScoreResult:
    """Score ``input_dir`` with ``model`` into ``output_dir`` inside an MLflow run.

    Returns:
        The folder's summary, where it is and the MLflow run.
    """
    uri = resolve_tracking_uri(tracking_uri)
    output_dir = Path(output_dir).resolve()
    detector = load_model(model, tracking_uri=uri)
    tags = base_tags(kind="score") | model_run_tags(
        str(model), model_id=detector.model_id, tracking_uri=uri
    )
    with start_run(
        uri=uri, experiment=experiment, run_name="score", tags=tags, required=required
    ) as run:
        run.params(
            {
                "model": str(model),
                "input": str(Path(input_dir).resolve()),
                "output": str(output_dir),
            }
        )
        if run.enabled and Path(input_dir).is_dir():
            inputs = [Sample(path) for path in list_images(input_dir)]
            log_file_sets(run, [file_set(inputs, root=input_dir, context="scoring")])
        summary = score_folder(
            detector,
            input_dir,
            output_dir,
            image_threshold=image_threshold,
            pixel_threshold=pixel_threshold,
            regions=regions,
            outputs=outputs,
            batch_size=batch_size,
            num_workers=num_workers,
            model_uri=str(model),
            progress=progress,
        )
        frame = pd.read_csv(output_dir / "scores.csv", dtype={"path": str})
        scores = frame["score"].to_numpy()
        percentiles = (
            {f"score_p{q}": float(np.percentile(scores, q)) for q in (50, 95, 99)}
            if scores.size
            else {}
        )
        run.metrics(
            {
                **{f"seconds/{k}": v for k, v in summary.timings.items()},
                "images_total": summary.n_images,
                "images_scored": summary.n_scored,
                "images_defective": summary.n_defective,
                "images_skipped": summary.n_errors,
                "defect_rate": summary.defect_rate,
                "images_per_second": summary.images_per_second,
                "seconds": summary.seconds,
                **percentiles,
            }
        )
        for name in ("scores.csv", "regions.csv", "summary.json", "errors.csv"):
            if (output_dir / name).is_file():
                run.artifact(output_dir / name)
        context = report_context(
            detector,
            kind="score",
            model=str(model),
            version_tags=tags,  # the run's: the registry was asked once
            input_dir=input_dir,
            image_threshold=image_threshold,
            pixel_threshold=pixel_threshold,
        )
        report = write_report(output_dir, context, run)
        # A sample for reviewers: the overlays of the highest-scoring images.
        for path in frame.nlargest(OVERLAY_SAMPLE, "score")["path"]:
            overlay = output_dir / "overlays" / Path(path).with_suffix(".png")
            if overlay.is_file():
                run.artifact(overlay, "overlays_top_scores")
    log.info(
        "scored %d images (%d defective, %d skipped) into %s",
        summary.n_scored,
        summary.n_defective,
        summary.n_errors,
        output_dir,
    )
    return ScoreResult(
        summary=summary,
        run_id=run.run_id,
        output_dir=str(output_dir),
        tracking_uri=uri,
        score_percentiles=percentiles,
        not_uploaded=list(run.failed),
        report=report.path if report else "",
    )


def region_settings(s: DictConfig) -> RegionSettings:
    """Mask cleaning from a ``scoring`` config section (``opening_radius`` etc.)."""
    return RegionSettings(
        opening_radius=s.opening_radius,
        closing_radius=s.closing_radius,
        min_region_area=s.min_region_area,
    )


def output_settings(s: DictConfig, *, parquet: bool) -> OutputSettings:
    """Which per-image pictures a ``scoring`` config section asks for."""
    return OutputSettings(
        masks=bool(s.write_masks),
        heatmaps=bool(s.write_heatmaps),
        overlays=bool(s.write_overlays),
        parquet=parquet,
    )


def score(cfg: DictConfig, *, progress: Progress | None = None) -> ScoreResult:
    """Score ``cfg.input`` with ``cfg.model_uri`` into ``cfg.output`` (``score.yaml``)."""
    check_config(cfg)
    if not Path(str(cfg.input)).is_dir():
        what = "is not a folder" if Path(str(cfg.input)).exists() else "does not exist"
        raise ConfigError(f"input={cfg.input} {what}; point input= at a folder of images")
    s = cfg.scoring
    return run_scoring(
        model=str(cfg.model_uri),
        input_dir=str(cfg.input),
        output_dir=str(cfg.output),
        tracking_uri=cfg.tracking.uri,
        experiment=str(cfg.tracking.experiment),
        required=bool(cfg.tracking.required),
        image_threshold=s.threshold,
        pixel_threshold=s.pixel_threshold,
        regions=region_settings(s),
        outputs=output_settings(s, parquet=bool(s.write_parquet)),
        batch_size=int(s.batch_size),
        num_workers=int(s.num_workers),
        progress=progress,
    )
