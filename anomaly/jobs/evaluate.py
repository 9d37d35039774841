"""Measure a trained model on a labelled test split and log it to MLflow.

``anomaly evaluate`` re-measures a saved or registered model (after a change of protocol,
on a new test set); ``anomaly train`` and the champion's evaluation in
``train-and-promote`` write the same files through :func:`log_evaluation`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from omegaconf import DictConfig

from anomaly.data.dataset import ImageDataset, collate
from anomaly.data.folder import Sample, scan_dataset
from anomaly.errors import DataError
from anomaly.io import atomic_open, write_errors_csv, write_json_atomic
from anomaly.jobs.checks import check_config
from anomaly.jobs.report import write_report
from anomaly.jobs.results import EvaluateResult
from anomaly.report.context import report_context
from anomaly.scoring.calibration import p_values
from anomaly.scoring.detector import Detector
from anomaly.scoring.evaluation import Evaluation, check_pixel_metrics_at, evaluate
from anomaly.scoring.figures import curves_figure, histogram_figure, sample_grid, save_figure
from anomaly.scoring.metrics import by_class
from anomaly.scoring.stream import Progress
from anomaly.tracking.lineage import file_set, log_file_sets
from anomaly.tracking.mlflow_logger import RunLogger, base_tags, resolve_tracking_uri, start_run
from anomaly.tracking.model import load_model, model_run_tags

log = logging.getLogger(__name__)


def evaluation_options(cfg: DictConfig) -> dict[str, Any]:
    """``fpr_limit=`` and ``pixel_metrics_at=`` arguments of ``evaluate`` from ``scoring``.

    Raises:
        ConfigError: ``scoring.pixel_metrics_at`` is unknown.
    """
    return {
        "fpr_limit": float(cfg.scoring.aupro_fpr_limit),
        "pixel_metrics_at": check_pixel_metrics_at(cfg.scoring.pixel_metrics_at),
    }


def evaluate_model(cfg: DictConfig, *, progress: Progress | None = None) -> EvaluateResult:
    """Evaluate ``cfg.model_uri`` on the test split of ``cfg.data.root`` (``anomaly evaluate``).

    The model's own preprocessing, map settings and calibration are used; only how the
    metrics are taken (``scoring.pixel_metrics_at``, ``scoring.aupro_fpr_limit``) comes
    from the config. Writes ``scores.csv``, ``metrics.json``, the curves, the score
    histogram, the sample grid and (when images were unreadable) ``errors.csv`` to
    ``cfg.output``, and logs them with the metrics to an MLflow run of kind ``evaluate``.

    Args:
        cfg: The composed ``evaluate.yaml``.
        progress: Called with ``(finished, total)`` image counts.

    Returns:
        ``metrics``, ``pixel_metrics_at``, ``n_images``, ``skipped`` (``(path, reason)``
        of unreadable images), ``output_dir``, ``run_id``, ``tracking_uri`` and ``model``.

    Raises:
        ConfigError: A ``scoring`` setting is invalid.
        ModelFolderError: The model cannot be loaded.
        DataError: ``data.root`` has no labelled test split.
    """
    check_config(cfg)
    options = evaluation_options(cfg)
    model = str(cfg.model_uri)
    splits = scan_dataset(cfg.data.root, mask_suffix=str(cfg.data.mask_suffix))
    if not splits.test:
        raise DataError(
            f"data.root={cfg.data.root} has no labelled test images: evaluation needs "
            "test/good/ and test/<defect class>/ folders (masks in ground_truth/<defect "
            f"class>/<name>{cfg.data.mask_suffix}.png, optional); to score unlabelled images "
            "use `anomaly score`"
        )
    uri = resolve_tracking_uri(cfg.tracking.uri)
    detector = load_model(model, tracking_uri=uri)
    output_dir = Path(str(cfg.output)).resolve()
    tags = base_tags(kind="evaluate") | model_run_tags(
        str(model), model_id=detector.model_id, tracking_uri=uri
    )
    with start_run(
        uri=uri,
        experiment=str(cfg.tracking.experiment),
        run_name="evaluate",
        tags=tags,
        required=bool(cfg.tracking.required),
    ) as run:
        run.params(
            {
                "model": model,
                "data.root": str(Path(str(cfg.data.root)).resolve()),
                "data.n_test": len(splits.test),
                "scoring.aupro_fpr_limit": options["fpr_limit"],
                "output": str(output_dir),
            }
        )
        if run.enabled:
            log_file_sets(run, [file_set(splits.test, root=splits.root, context="test")])
        evaluation = evaluate(
            detector,
            splits.test,
            batch_size=int(cfg.scoring.batch_size),
            num_workers=int(cfg.scoring.num_workers),
            progress=progress,
            **options,
        )
        report = log_evaluation(
            run,
            evaluation,
            detector,
            output_dir,
            model=model,
            version_tags=tags,  # the run's: the registry was asked once
        )
        write_json_atomic(
            output_dir / "metrics.json",
            {
                "model": model,
                "data_root": str(cfg.data.root),
                "pixel_metrics_at": evaluation.pixel_metrics_at,
                "metrics": evaluation.metrics,
            },
        )
        run.artifact(output_dir / "metrics.json", "evaluation")
        write_sample_grid(output_dir / "samples.png", detector, showcase(splits.test))
        run.artifact(output_dir / "samples.png", "evaluation")
    for name, value in sorted(evaluation.metrics.items()):
        log.info("%s = %.4f", name, value)
    return EvaluateResult(
        metrics=evaluation.metrics,
        pixel_metrics_at=evaluation.pixel_metrics_at,
        n_images=len(splits.test),
        skipped=[(str(p), reason) for p, reason in evaluation.errors],
        output_dir=str(output_dir),
        run_id=run.run_id,
        tracking_uri=uri,
        model=model,
        not_uploaded=list(run.failed),
        report=report,
    )


def log_evaluation(
    run: RunLogger,
    evaluation: Evaluation,
    detector: Detector,
    folder: Path,
    *,
    model: str,
    version_tags: dict[str, str] | None = None,
) -> str:
    """Write an evaluation's files to ``folder`` and log them with its metrics.

    ``scores.csv`` (one row per scored image, with the verdict at the calibrated
    threshold), ``errors.csv`` (unreadable images, when any), the ROC/PR curves and the
    score histogram; the run gets the metrics, the parameter
    ``evaluation.pixel_metrics_at`` and the tables ``scores_table.json`` and
    ``metrics_per_class.json`` (comparable across runs in the MLflow UI), and
    ``report.html``, the page a reviewer reads (:mod:`anomaly.report`).

    Args:
        run: The run to log to.
        evaluation: What :func:`evaluate` measured.
        detector: The model that was measured.
        folder: Where the files go.
        model: The folder or URI the model came from, for the report's header.
        version_tags: Tags holding its registry name and version (``model.name``,
            ``model.version``), when registered.

    Returns:
        The report's path ("" when it could not be written).
    """
    # What was used, which differs from the config when the photos were too large.
    run.params({"evaluation.pixel_metrics_at": evaluation.pixel_metrics_at})
    table = write_test_scores(folder / "scores.csv", evaluation, detector)
    run.artifact(folder / "scores.csv", "evaluation")
    if evaluation.errors:
        write_errors_csv(folder / "errors.csv", evaluation.errors)
        run.artifact(folder / "errors.csv", "evaluation")
    run.metrics(evaluation.metrics)
    run.table(table, "evaluation/scores_table.json")
    per_class = [{"class": cls, **values} for cls, values in by_class(evaluation.metrics).items()]
    run.table(pd.DataFrame(per_class), "evaluation/metrics_per_class.json")
    for name, figure in _evaluation_figures(evaluation, detector).items():
        save_figure(figure, folder / name)
        run.artifact(folder / name, "evaluation")
    context = report_context(
        detector,
        kind="evaluation",
        model=model,
        version_tags=version_tags,
        # scores.csv names the test images as the data root was given: from here.
        input_dir=Path.cwd(),
    ) | {"metrics": evaluation.metrics}
    report = write_report(folder, context, run, artifact_path="evaluation")
    return report.path if report else ""


def write_test_scores(path: Path, evaluation: Evaluation, detector: Detector) -> pd.DataFrame:
    """``scores.csv`` of the scored test images: path, class, label, score and verdict."""
    scored = ~np.isnan(evaluation.scores)
    threshold = detector.calibration.image_threshold
    samples = [s for s, ok in zip(evaluation.samples, scored, strict=True) if ok]
    scores = evaluation.scores[scored]
    table = pd.DataFrame(
        {
            "path": [str(s.path) for s in samples],
            "defect_class": [s.defect_class for s in samples],
            "label": [s.label for s in samples],
            "score": scores,
            "p_value": p_values(scores, np.asarray(detector.calibration.validation_scores))
            if detector.calibration.validation_scores
            else np.nan,
            "threshold": threshold,
            "is_defective": (scores > threshold).astype(int),
        }
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(path, "w", newline="", encoding="utf-8") as handle:
        table.to_csv(handle, index=False, float_format="%.6g")
    return table


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


def showcase(samples: list[Sample], per_class: int = 1, n_good: int = 2) -> list[Sample]:
    """A few test images for the sample grid: some defect-free, one of each defect class."""
    chosen = [s for s in samples if s.label == 0][:n_good]
    for cls in sorted({s.defect_class for s in samples if s.label == 1}):
        chosen += [s for s in samples if s.defect_class == cls][:per_class]
    return chosen[:8]


def detector_sample_grid(
    detector: Detector, samples: list[Sample], *, pixel_threshold: float | None
) -> Figure:
    """Images, reconstructions and maps of ``samples`` (true masks outlined) as one figure.

    Unreadable samples are left out.
    """
    dataset = ImageDataset(samples, detector.preprocess, with_masks=True, skip_errors=True)
    batch = collate([dataset[i] for i in range(len(dataset))])
    images = list(batch.get("image", []))
    inspected = detector.inspect(images, reconstructions=True)
    recons, maps = inspected.reconstructions or [], inspected.maps
    scores = detector.image_scores(inspected) if maps else []
    titles = [
        f"{samples[i].defect_class or samples[i].path.name}\n{float(s):.3g}"
        for i, s in zip(batch["index"], scores, strict=True)
    ]
    return sample_grid(
        [im.numpy() for im in images],
        [r.numpy() for r in recons],
        [m[0].numpy() for m in maps],
        pixel_threshold=pixel_threshold,
        titles=titles,
        true_masks=[m[0].numpy() > 0.5 for m in batch.get("mask", [])],
    )


def write_sample_grid(path: Path, detector: Detector, samples: list[Sample]) -> None:
    """:func:`detector_sample_grid` at the calibrated pixel threshold, saved as a PNG."""
    fig = detector_sample_grid(
        detector, samples, pixel_threshold=detector.calibration.pixel_threshold
    )
    save_figure(fig, path)
