"""The report as one self-contained HTML file.

Readable with scripts off (the MLflow UI shows HTML artifacts in a sandboxed frame): the
header, the histogram and the first page of the table, highest scores first, are plain
HTML. Where scripts run, ``report.js`` takes the rows from the embedded JSON and adds
sorting, filters, paging, the detail view and the review. Every name from a file is
escaped: in HTML by :func:`html.escape`, in the JSON by :func:`json_for_script`, and the
script only ever sets text, never markup.
"""

from __future__ import annotations

import json
import os
from html import escape
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np

from anomaly.report.content import ReportContent, Row
from anomaly.report.pictures import Picture, histogram_svg, roc_svg
from anomaly.report.words import (
    confusion,
    method_words,
    model_words,
    promise_words,
    roc_points,
    standout_words,
)
from anomaly.review.stats import review_stats

# Rows per page, in the static first page and in the script's pages.
PAGE_ROWS = 100
# Skipped files named in the header (all of them are in errors.csv).
MAX_ERRORS_SHOWN = 200

COLUMNS = (
    ("thumb", "picture"),
    ("path", "path"),
    ("score", "score"),
    ("p_value", "p-value"),
    ("verdict", "verdict"),
    ("n_regions", "regions"),
    ("largest_area", "largest region (px)"),
)


def json_for_script(value: Any) -> str:
    """JSON that cannot end the ``<script>`` element it sits in, whatever the strings hold."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    for char, code in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026")):
        text = text.replace(char, code)
    return text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")


def link(target: Path | None, folder: Path) -> str:
    """A relative URL from the report's folder to ``target`` ("" when there is none)."""
    if target is None:
        return ""
    try:
        relative = os.path.relpath(target, folder)
    except ValueError:  # another drive on Windows
        return ""
    return quote(Path(relative).as_posix())


def render(content: ReportContent, pictures: list[Picture], *, report_id: str) -> str:
    """The whole page.

    Args:
        content: What the results folder holds.
        pictures: One per row of ``content.rows`` (thumbnail, size, sha256).
        report_id: Names this report's review in the browser's storage.
    """
    rows = [
        _row_data(r, p, content.folder, content.context)
        for r, p in zip(content.rows, pictures, strict=True)
    ]
    labelled = content.has_labels
    data = {
        "id": report_id,
        "pageRows": PAGE_ROWS,
        "labels": labelled,
        "model": model_words(content.context),
        "modelId": (content.context.get("model") or {}).get("id", ""),
        "rows": rows,
    }
    css = _asset("report.css")
    script = _asset("report.js")
    title = f"Inspection report: {_kind_words(content)}"
    return "".join(
        [
            "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
            "<meta name='viewport' content='width=device-width, initial-scale=1'>",
            "<link rel='icon' href='data:,'>",  # nothing to fetch, not even a favicon
            f"<title>{escape(title)}</title><style>{css}</style></head><body>",
            f"<header><h1>{escape(title)}</h1>{_facts(content)}</header>",
            _review_section(content),
            _errors_section(content),
            _charts(content),
            _table(content, rows, labelled),
            _detail(),
            f"<script type='application/json' id='report-data'>{json_for_script(data)}</script>",
            f"<script>{script}</script></body></html>",
        ]
    )


def _asset(name: str) -> str:
    return resources.files("anomaly.report").joinpath("static", name).read_text(encoding="utf-8")


def _kind_words(content: ReportContent) -> str:
    kind = content.context.get("kind", "score")
    return {
        "evaluation": "evaluation on a labelled test set",
        "score_batch": "scheduled batch",
    }.get(kind, "scored batch")


def _moved(row: Row, context: dict[str, Any]) -> str:
    """Where score-batch's processed=move takes the photo ("" when it stays)."""
    moved_to = context.get("moved_to")
    return str(Path(moved_to) / row.path) if moved_to else ""


def _row_data(row: Row, picture: Picture, folder: Path, context: dict[str, Any]) -> dict[str, Any]:
    return {
        "path": row.path,
        "folder": row.folder,
        "score": row.score,
        "p": row.p_value,
        "defect": int(row.defective),
        "nr": row.n_regions,
        "la": row.largest_area,
        "cls": row.true_class,
        "label": row.label,
        "sha": picture.sha256 or row.sha256,
        "src": str(row.source) if row.source else "",
        "moved": _moved(row, context),
        "orig": link(row.source, folder) if picture.width else "",
        "ov": link(row.overlay, folder),
        "hm": link(row.heatmap, folder),
        "w": picture.width,
        "h": picture.height,
        "boxes": row.boxes,
        "thumb": picture.thumbnail,
    }


def _fmt(value: float | None, spec: str = ".4g") -> str:
    return "–" if value is None else format(value, spec)


def _facts(content: ReportContent) -> str:
    ctx = content.context
    n_scored = len(content.rows)
    flagged = sum(r.defective for r in content.rows)
    n_files = n_scored + len(content.errors)
    model = ctx.get("model") or {}
    facts = [
        ("model", model_words(ctx)),
        ("model id", model.get("id") or "–"),
        ("when", str(ctx.get("created", "–"))),
        ("images", f"{n_files} files: {n_scored} judged, {len(content.errors)} skipped"),
        (
            "flagged",
            f"{flagged} of {n_scored} ({flagged / n_scored:.1%} defect rate)"
            if n_scored
            else "none (no image was judged)",
        ),
        (
            "image threshold",
            f"{_fmt(content.threshold)}: {method_words(ctx, 'image')}",
        ),
        (
            "pixel threshold",
            f"{_fmt(ctx.get('pixel_threshold'))}: {method_words(ctx, 'pixel')}",
        ),
        ("false alarms", promise_words(ctx)),
    ]
    look_at = standout_words(ctx)
    if look_at:
        facts.append(("look at", look_at))
    if ctx.get("input_dir"):
        facts.insert(3, ("images from", str(ctx["input_dir"])))
    for name, words in (
        ("image_auroc", "image AUROC"),
        ("pixel_auroc", "pixel AUROC"),
        ("pixel_aupro", "AUPRO"),
    ):
        if name in content.metrics:
            facts.append((words, f"{content.metrics[name]:.4f}"))
    counts = confusion(content)
    if counts:
        facts.append(
            (
                "at the threshold",
                f"{counts['tp']} defects caught, {counts['fn']} missed, "
                f"{counts['fp']} false alarms, {counts['tn']} defect-free passed",
            )
        )
    items = "".join(f"<dt>{escape(k)}</dt><dd>{escape(str(v))}</dd>" for k, v in facts)
    return f"<dl class='facts'>{items}</dl>"


def _review_section(content: ReportContent) -> str:
    if content.reviews is None or content.reviews.empty:
        return ""
    stats = review_stats(content.reviews, n_scored=len(content.rows))
    bound = (content.context.get("calibration") or {}).get("far_bound")
    lines = [
        f"{stats['reviewed']} images reviewed: {stats['confirmed']} defects confirmed, "
        f"{stats['false_alarms']} false alarms, {stats['unsure']} unsure.",
        f"Precision of the flags reviewed: {_fmt(stats['precision'], '.1%')}.",
        f"Observed false-alarm rate: {_fmt(stats['false_alarm_rate'], '.2%')} of the images "
        "not confirmed defective"
        + (f" (promised at most {bound:.1%})." if bound is not None else "."),
    ]
    if stats["missed"]:
        lines.append(f"{stats['missed']} confirmed defects had passed the model.")
    body = "".join(f"<p>{escape(line)}</p>" for line in lines)
    return f"<section class='review-stats'><h2>Review (from review.csv)</h2>{body}</section>"


def _errors_section(content: ReportContent) -> str:
    if not content.errors:
        return ""
    shown = content.errors[:MAX_ERRORS_SHOWN]
    items = "".join(
        f"<li><code>{escape(path)}</code>: {escape(reason)}</li>" for path, reason in shown
    )
    more = len(content.errors) - len(shown)
    tail = f"<p>and {more} more, in errors.csv</p>" if more > 0 else ""
    return (
        f"<section class='errors'><details {'open' if len(shown) <= 10 else ''}>"
        f"<summary>{len(content.errors)} files skipped (no verdict), with the reason</summary>"
        f"<ul>{items}</ul>{tail}</details></section>"
    )


def _charts(content: ReportContent) -> str:
    scores = np.array([r.score for r in content.rows], dtype=float)
    labels = np.array([r.label for r in content.rows]) if content.has_labels else None
    if labels is not None and any(r.label is None for r in content.rows):
        labels = None
    parts = [histogram_svg(scores, threshold=content.threshold, labels=labels)]
    roc = roc_points(content)
    if roc is not None:
        parts.append(roc_svg(*roc))
    charts = "".join(parts)
    return f"<section class=charts><h2>Scores</h2><div class='charts-row'>{charts}</div></section>"


def _table(content: ReportContent, rows: list[dict[str, Any]], labelled: bool) -> str:
    columns = list(COLUMNS) + ([("cls", "true class")] if labelled else [])
    head = "".join(f"<th data-key='{key}' scope='col'>{escape(name)}</th>" for key, name in columns)
    head += "<th data-key='review' scope='col' class='review-col' hidden>review</th>"
    body = "".join(_static_row(r, labelled) for r in rows[:PAGE_ROWS])
    total = len(rows)
    shown = min(total, PAGE_ROWS)
    more = " Open the file in a browser with scripts on to page, sort and filter."
    note = (
        f"The {shown} highest scores of {total} images." + (more if total > shown else "")
        if total
        else "No image was judged."
    )
    controls = _asset("controls.html")
    help_text = (
        "<p class='help' hidden>Click a row (or press Enter on it) for the detail view. "
        "Keys in the detail view: &larr;/&rarr; previous/next, d defect confirmed, f false alarm, "
        "u unsure, n note, Esc close. Reviews stay in this browser until exported.</p>"
    )
    return (
        f"<section class='images'><h2>Images</h2><p id='table-note'>{escape(note)}</p>{help_text}"
        f"{controls}<table id='rows'><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
        "</section>"
    )


def _static_row(r: dict[str, Any], labelled: bool) -> str:
    verdict = "defect" if r["defect"] else "good"
    thumb = f"<img src='{escape(r['thumb'])}' alt='' loading='lazy'>" if r["thumb"] else ""
    if thumb and (r["ov"] or r["orig"]):
        thumb = f"<a href='{escape(r['ov'] or r['orig'])}'>{thumb}</a>"
    cells = [
        thumb,
        f"<code>{escape(r['path'])}</code>",
        f"{r['score']:.4g}",
        _fmt(r["p"]),
        f"<span class='verdict {verdict}'>{verdict}</span>",
        "–" if r["nr"] is None else str(r["nr"]),
        "–" if r["la"] is None else str(r["la"]),
    ]
    if labelled:
        cells.append(escape(r["cls"]))
    return "<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>"


def _detail() -> str:
    return _asset("detail.html")
