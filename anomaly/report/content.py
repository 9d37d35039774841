"""What a report shows, read from the files of a results folder (never from the model).

A scoring, evaluation or score-batch run writes ``report_context.json`` beside its tables:
the model, the thresholds and how they were fitted, the input folder. ``anomaly report``
rebuilds the page from those files alone; without the context file it shows what the
tables and ``summary.json`` say.
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from anomaly.errors import DataError
from anomaly.io import read_errors_csv, write_json_atomic
from anomaly.review.reading import read_review

log = logging.getLogger(__name__)

CONTEXT_FILE = "report_context.json"
REPORT_FILE = "report.html"
REVIEW_FILE = "review.csv"
# Bounding boxes drawn per image in the detail view (the largest ones).
MAX_BOXES = 50


@dataclass
class Row:
    """One judged image as the report shows it."""

    path: str
    score: float
    p_value: float | None = None
    defective: bool = False
    n_regions: int | None = None
    largest_area: int | None = None
    true_class: str = ""
    label: int | None = None
    sha256: str = ""
    source: Path | None = None  # the original image on this machine, when known
    overlay: Path | None = None
    heatmap: Path | None = None
    boxes: list[list[int]] = field(default_factory=list)

    @property
    def folder(self) -> str:
        """The image's folder, relative to what was scored ("." at the top)."""
        parent = Path(self.path).parent.as_posix()
        return parent if parent else "."


@dataclass
class ReportContent:
    """Everything the page shows."""

    folder: Path
    rows: list[Row]
    errors: list[tuple[str, str]]
    context: dict[str, Any]
    metrics: dict[str, float] = field(default_factory=dict)
    reviews: pd.DataFrame | None = None

    @property
    def has_labels(self) -> bool:
        """The rows carry true labels (an evaluation)."""
        return any(r.label is not None for r in self.rows)

    @property
    def threshold(self) -> float | None:
        """The image threshold the verdicts were taken at."""
        value = self.context.get("image_threshold")
        return None if value is None else float(value)


def write_context(folder: str | os.PathLike[str], context: dict[str, Any]) -> None:
    """Write ``report_context.json`` (a job's record of what the report's header says)."""
    write_json_atomic(Path(folder) / CONTEXT_FILE, context)


def far_bound(threshold: float, validation_scores: list[float] | np.ndarray) -> float | None:
    """Split-conformal bound on the share of defect-free images flagged at ``threshold``.

    ``(1 + #{validation > threshold}) / (n + 1)``; None without validation scores.
    """
    scores = np.asarray(validation_scores, dtype=float)
    if scores.size == 0:
        return None
    return float((1 + np.sum(scores > threshold)) / (scores.size + 1))


def load_content(
    folder: str | os.PathLike[str], *, scores_file: str | None = None
) -> ReportContent:
    """Read a results folder for its report.

    Args:
        folder: A folder written by ``anomaly score``, ``anomaly evaluate``, training's
            evaluation or a score-batch run.
        scores_file: The table of judged images, relative to ``folder`` (default: the
            context's, else ``scores.csv``).

    Raises:
        DataError: The folder or its scores table is missing or unreadable.
    """
    folder = Path(folder).resolve()
    if not folder.is_dir():
        raise DataError(
            f"{folder} is not a results folder; point it at a folder `anomaly score` wrote"
        )
    context = _read_json(folder / CONTEXT_FILE)
    evaluation = _read_json(folder / "metrics.json")
    if not context:
        context = _context_from_summary(_read_json(folder / "summary.json"), evaluation)
    table = folder / (scores_file or context.get("scores_file") or "scores.csv")
    context.setdefault("created", _mtime(table))
    if not table.is_file():
        raise DataError(
            f"{table} is missing: {folder} holds no scored images to report on "
            "(run `anomaly score` or `anomaly evaluate` into it)"
        )
    try:
        frame = pd.read_csv(table, dtype={"path": str, "defect_class": str, "sha256": str})
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read {table}: {exc}") from exc
    if "path" not in frame or "score" not in frame:
        raise DataError(f"{table} has no path and score columns; is it a scores table?")
    if context.get("image_threshold") is None and "threshold" in frame and len(frame):
        context["image_threshold"] = float(frame["threshold"].iloc[0])
    pictures = folder / context.get("pictures_dir", ".")
    input_dir = Path(context["input_dir"]) if context.get("input_dir") else None
    boxes = _boxes(folder / context.get("regions_file", "regions.csv"))
    rows = [_row(record, pictures, input_dir, boxes) for record in frame.to_dict("records")]
    if context.get("kind") == "evaluation":
        context["input_dir"] = _shorten(rows) or context.get("input_dir", "")
    rows.sort(key=lambda r: -r.score if math.isfinite(r.score) else math.inf)
    errors = read_errors_csv(folder / context.get("errors_file", "errors.csv"))
    return ReportContent(
        folder=folder,
        rows=rows,
        errors=errors,
        context=context,
        metrics=dict(context.get("metrics") or evaluation.get("metrics") or {}),
        reviews=_reviews(folder / REVIEW_FILE),
    )


def _reviews(path: Path) -> pd.DataFrame | None:
    """A ``review.csv`` beside the report, read as ``anomaly review`` reads it."""
    if not path.is_file():
        return None
    try:
        return read_review(path)
    except DataError as exc:  # the page is still worth having without the review
        log.warning("the report leaves out %s: %s", path, exc)
        return None


def _row(
    record: dict[str, Any], pictures: Path, input_dir: Path | None, boxes: dict[str, list]
) -> Row:
    path = str(record["path"])
    name = Path(path)
    source = name if name.is_absolute() else (input_dir / name if input_dir else None)
    # Pictures are named by the image's relative path; an evaluation's paths are absolute.
    picture_name = Path(*name.parts[1:]) if name.is_absolute() else name
    overlay = pictures / "overlays" / picture_name.with_suffix(".png")
    heatmap = pictures / "heatmaps" / picture_name.with_suffix(".png")
    label = _int(record.get("label"))
    return Row(
        path=path,
        score=float(record["score"]),
        p_value=_float(record.get("p_value")),
        defective=bool(_int(record.get("is_defective"))),
        n_regions=_int(record.get("n_regions")),
        largest_area=_int(record.get("largest_region_area")),
        true_class=_text(record.get("defect_class")),
        label=label,
        sha256=_text(record.get("sha256")),
        source=source,
        overlay=overlay if overlay.is_file() else None,
        heatmap=heatmap if heatmap.is_file() else None,
        boxes=boxes.get(path, []),
    )


def _shorten(rows: list[Row]) -> str:
    """Name an evaluation's images from the folder they share (``crack/001.png``).

    Returns:
        That folder ("" when the images are not all on this machine).
    """
    sources = [str(r.source.resolve()) for r in rows if r.source is not None]
    if len(sources) != len(rows) or not rows:
        return ""
    common = os.path.commonpath(sources)
    if len(rows) == 1:
        common = os.path.dirname(common)
    for row, source in zip(rows, sources, strict=True):
        row.path = Path(os.path.relpath(source, common)).as_posix()
    return common


def _boxes(path: Path) -> dict[str, list[list[int]]]:
    """``image -> [[min_row, min_col, max_row, max_col], ...]``, largest regions first."""
    if not path.is_file():
        return {}
    try:
        frame = pd.read_csv(path, dtype={"image": str})
    except (OSError, ValueError):
        return {}
    if frame.empty or "image" not in frame:
        return {}
    frame = frame.sort_values("area_px", ascending=False)
    cols = ["bbox_min_row", "bbox_min_col", "bbox_max_row", "bbox_max_col"]
    found: dict[str, list[list[int]]] = {}
    for image, group in frame.groupby("image", sort=False):
        found[str(image)] = group[cols].head(MAX_BOXES).astype(int).to_numpy().tolist()
    return found


def _context_from_summary(summary: dict[str, Any], evaluation: dict[str, Any]) -> dict[str, Any]:
    """The header's facts from ``summary.json``/``metrics.json`` of a folder with no context."""
    if evaluation:
        return {
            "kind": "evaluation",
            "model": {"uri": evaluation.get("model", "")},
            "input_dir": "",
        }
    return {
        "kind": "score",
        "model": {"uri": summary.get("model_uri", ""), "id": summary.get("model_id", "")},
        "image_threshold": summary.get("image_threshold"),
        "pixel_threshold": summary.get("pixel_threshold"),
        "calibration": {"min_p_value": summary.get("min_p_value")},
        "input_dir": summary.get("input_dir", ""),
    }


def _read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _mtime(path: Path) -> str:
    try:
        stamp = path.stat().st_mtime
    except OSError:
        stamp = datetime.now(timezone.utc).timestamp()
    return datetime.fromtimestamp(stamp, timezone.utc).isoformat(timespec="seconds")


def _float(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _int(value: Any) -> int | None:
    number = _float(value)
    return None if number is None else int(number)


def _text(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return str(value)
