"""The model card: a few lines of Markdown on a run's page and on its registered version.

A reviewer opening a run, or the registry page of a version, reads what was trained on
which data, how well it did overall and per defect class, and where its thresholds come
from, without downloading anything. The same facts go into version tags, which the
registry lists and searches.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import mlflow

from anomaly.scoring.calibration import Calibration
from anomaly.tracking.lineage import FileSet
from anomaly.tracking.mlflow_logger import RunLogger
from anomaly.tracking.registry import describe_version

#: MLflow's tag for a run's description (the note at the top of the run page).
NOTE_TAG = "mlflow.note.content"
_HEADLINE = ("image_auroc", "image_ap", "image_f1", "pixel_auroc", "pixel_aupro")
_NAMES = {
    "image_auroc": "image AUROC",
    "image_ap": "image AP",
    "image_f1": "image F1 at the threshold",
    "image_best_f1": "best image F1",
    "pixel_auroc": "pixel AUROC",
    "pixel_aupro": "AUPRO",
}


def _fmt(value: float) -> str:
    return f"{value:.4g}"


def _threshold(which: str, value: float, calibration: Calibration) -> str:
    params = calibration.params.get(which) or {}
    # The params name the method; calibration.json files without params only the summary.
    how = str(params.get("method") or calibration.method)
    shown = {k: v for k, v in params.items() if k != "method"}  # the method leads already
    if shown:
        how += " " + ", ".join(f"{k}={v}" for k, v in sorted(shown.items()))
    return f"{_fmt(value)} ({how})"


def training_card(
    *,
    title: str,
    model: Mapping[str, Any],
    file_sets: Sequence[FileSet],
    metrics: Mapping[str, float],
    calibration: Calibration,
) -> str:
    """Markdown describing one trained model.

    Args:
        title: First line, e.g. ``draem on brick``.
        model: What was trained, as label -> value (model, loss, epochs, image size...).
        file_sets: The training, validation and test file sets.
        metrics: The evaluation's metrics (``image_auroc``, ``image_auroc/<class>``...).
        calibration: The fitted thresholds.
    """
    lines = [f"### {title}", "", "| | |", "|---|---|"]
    lines += [f"| {key} | {value} |" for key, value in model.items()]
    for files in file_sets:
        lines.append(
            f"| {files.context} data | {files.n_files} photos from `{files.source}`, "
            f"digest `{files.digest}` |"
        )
    lines.append(
        f"| image threshold | {_threshold('image', calibration.image_threshold, calibration)} |"
    )
    lines.append(
        f"| pixel threshold | {_threshold('pixel', calibration.pixel_threshold, calibration)} |"
    )
    lines.append(f"| fitted on | {calibration.n_images} validation photos (no defects) |")
    for standout in calibration.standouts:
        lines.append(
            f"| look at | `{Path(standout['path']).name}`: a validation photo scoring "
            f"{_fmt(standout['score'])}, far above the others; if it is defective, the "
            "threshold rests on it |"
        )
    overall = [(k, metrics[k]) for k in _HEADLINE if k in metrics]
    lines += [f"| **{_NAMES[k]}** | **{_fmt(v)}** |" for k, v in overall]
    classes = sorted({k.split("/", 1)[1] for k in metrics if "/" in k})
    if classes:
        columns = [k for k in _HEADLINE if any(f"{k}/{c}" in metrics for c in classes)]
        lines += ["", "Per defect class (each against the good test photos):", ""]
        lines.append("| class | " + " | ".join(_NAMES[k] for k in columns) + " |")
        lines.append("|---" * (len(columns) + 1) + "|")
        for c in classes:
            cells = [_fmt(metrics[f"{k}/{c}"]) if f"{k}/{c}" in metrics else "–" for k in columns]
            lines.append(f"| {c} | " + " | ".join(cells) + " |")
    if not metrics:
        lines += ["", "No labelled test photos: no detection metrics."]
    return "\n".join(lines) + "\n"


def card_tags(
    file_sets: Sequence[FileSet], metrics: Mapping[str, float], calibration: Calibration
) -> dict[str, str]:
    """The card's facts as version tags: digests, headline metrics, thresholds."""
    tags = {f"data.digest.{f.context}": f.digest for f in file_sets}
    tags |= {f"metric.{k}": _fmt(metrics[k]) for k in _HEADLINE if k in metrics}
    tags["threshold.image"] = _fmt(calibration.image_threshold)
    tags["threshold.pixel"] = _fmt(calibration.pixel_threshold)
    tags["threshold.method"] = calibration.method
    if calibration.standouts:
        tags["threshold.standouts"] = ", ".join(Path(m["path"]).name for m in calibration.standouts)
    return tags


def gate_section(
    *,
    decision: str,
    reason: str,
    metric: str,
    candidate: float | None,
    champion: float | None,
    champion_version: str | None,
    margin: float,
) -> str:
    """Markdown of a promotion gate's comparison, appended to the version's card."""
    against = f"version {champion_version}" if champion_version else "no champion"
    lines = [
        "",
        f"#### Gate: {decision}",
        "",
        f"| {metric} | this version | {against} | margin |",
        "|---|---|---|---|",
        f"| | {_fmt(candidate) if candidate is not None else '–'} | "
        f"{_fmt(champion) if champion is not None else '–'} | {margin} |",
        "",
        reason,
    ]
    return "\n".join(lines) + "\n"


def log_training_card(
    run: RunLogger,
    card: str,
    tags: Mapping[str, str],
    registered: Mapping[str, str] | None,
) -> None:
    """Put the card on the run's page and, when registered, on its model version.

    Args:
        run: The training's run (failures are recorded there, never raised).
        card: The Markdown of :func:`training_card`.
        tags: The tags of :func:`card_tags`, set on the version.
        registered: ``name`` and ``version`` of the registered model, or None.
    """
    run.call("the run description", mlflow.set_tag, NOTE_TAG, card)
    if registered:
        run.call(
            "the model version's description and tags",
            describe_version,
            run.uri,
            registered["name"],
            registered["version"],
            description=card,
            tags=tags,
        )
