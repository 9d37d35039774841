"""The report's header in words: model, thresholds, the false-alarm promise, the review."""

from __future__ import annotations

from typing import Any

import numpy as np

from anomaly.report.content import ReportContent

_METHODS = {
    "quantile": "the {q:g} quantile of the defect-free validation scores",
    "mean_std": "the validation scores' mean + {k:g} standard deviations",
    "far": "a target false-alarm rate of {far:g} (split conformal)",
    "manual": "set by hand",
}


def model_words(context: dict[str, Any]) -> str:
    """``registry name version N`` when registered, else the folder or URI."""
    model = context.get("model") or {}
    if model.get("name") and model.get("version"):
        return f"{model['name']} version {model['version']} ({model.get('uri', '')})"
    return str(model.get("uri") or "unknown model")


def method_words(context: dict[str, Any], which: str) -> str:
    """How the ``which`` ("image" or "pixel") threshold was fitted, in words."""
    if context.get(f"{which}_threshold_overridden"):
        return "set on the command line (overrides the calibration)"
    cal = context.get("calibration") or {}
    methods = dict(
        part.split(":", 1) for part in str(cal.get("method", "")).split(",") if ":" in part
    )
    method = methods.get(which) or ("manual" if cal.get("method") == "manual" else "")
    if not method:
        return "from the model's calibration"
    params = (cal.get("params") or {}).get(which) or {}
    try:
        text = _METHODS.get(method, method).format(**params)
    except (KeyError, ValueError):
        text = method
    n = cal.get("n_images")
    text += f", on {n} validation images" if n else ""
    if which == "pixel" and cal.get("position_pixels"):
        # The heat maps and regions then show how unusual a spot is, not the raw error.
        text += (
            "; the map is standardised per position (how far each spot lies above the "
            "training photos' mean there, in their spreads)"
        )
    return text


def promise_words(context: dict[str, Any]) -> str:
    """The false-alarm guarantee the p-values give, in one or two sentences."""
    cal = context.get("calibration") or {}
    bound, smallest = cal.get("far_bound"), cal.get("min_p_value")
    parts = []
    if bound is not None:
        parts.append(
            f"A defect-free photo like the {cal.get('n_images', 'validation')} validation "
            f"photos is flagged at this threshold with probability at most {bound:.1%} "
            "(split-conformal bound)."
        )
    if smallest:
        parts.append(
            "Flagging photos with p-value below α instead keeps that probability at most α, "
            f"for any α above {smallest:.3g} (the smallest p-value possible here)."
        )
    return " ".join(parts) or "No validation scores were recorded: no false-alarm guarantee."


def standout_words(context: dict[str, Any]) -> str | None:
    """The validation photos that stood out of the calibration, or None."""
    marked = (context.get("calibration") or {}).get("standouts") or []
    if not marked:
        return None
    named = ", ".join(
        f"{m.get('path')} ({float(m.get('score', float('nan'))):.3g})" for m in marked
    )
    return (
        f"{named}: defect-free validation photo(s) scoring far above the others. If one is "
        "defective, the image threshold rests on it and hides defects: move it out of the "
        "training photos and train again."
    )


def confusion(content: ReportContent) -> dict[str, int] | None:
    """True/false positives and negatives at the report's threshold, with labels."""
    labelled = [r for r in content.rows if r.label is not None]
    if not labelled:
        return None
    counts = {"tp": 0, "fp": 0, "tn": 0, "fn": 0}
    for r in labelled:
        key = ("t" if bool(r.label) == r.defective else "f") + ("p" if r.defective else "n")
        counts[key] += 1
    return counts


def roc_points(content: ReportContent) -> tuple[np.ndarray, np.ndarray, tuple[float, float]] | None:
    """ROC curve of the labelled rows and the threshold's point on it."""
    from anomaly.scoring.metrics import roc_curve

    labelled = [r for r in content.rows if r.label is not None]
    labels = np.array([r.label for r in labelled])
    if not {0, 1} <= set(labels.tolist()):
        return None
    scores = np.array([r.score for r in labelled])
    curve = roc_curve(labels, scores)
    counts = confusion(content) or {}
    fpr = counts["fp"] / max(1, counts["fp"] + counts["tn"])
    tpr = counts["tp"] / max(1, counts["tp"] + counts["fn"])
    return curve.x, curve.y, (fpr, tpr)
