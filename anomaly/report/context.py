"""What a report's header says that the tables do not, as a job records it."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from anomaly.report.content import far_bound
from anomaly.scoring.detector import Detector


def report_context(
    detector: Detector,
    *,
    kind: str,
    model: str,
    version_tags: dict[str, str] | None = None,
    input_dir: str | Path | None = None,
    image_threshold: float | None = None,
    pixel_threshold: float | None = None,
    **files: str,
) -> dict[str, Any]:
    """What the report's header says that the tables do not: model, thresholds, promise.

    Args:
        detector: The calibrated model that judged the images.
        kind: ``score``, ``evaluation`` or ``score_batch``.
        model: The folder or URI the model was loaded from.
        version_tags: Registry tags of ``model`` (``model.name``, ``model.version``).
        input_dir: The folder the table's relative paths start from (None: absolute).
        image_threshold: The threshold in use, when overridden on the command line.
        pixel_threshold: Likewise for pixels.
        **files: ``scores_file``, ``regions_file``, ``errors_file``, ``pictures_dir``
            relative to the results folder, where they differ from the defaults.
    """
    tags = version_tags or {}
    cal = detector.calibration
    t_image = image_threshold if image_threshold is not None else cal.image_threshold
    t_pixel = pixel_threshold if pixel_threshold is not None else cal.pixel_threshold
    return {
        "kind": kind,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "model": {
            "uri": str(model),
            "id": detector.model_id,
            "name": tags.get("model.name", ""),
            "version": tags.get("model.version", ""),
        },
        "input_dir": str(Path(input_dir).resolve()) if input_dir else "",
        "image_threshold": float(t_image),
        "pixel_threshold": float(t_pixel),
        "image_threshold_overridden": image_threshold is not None,
        "pixel_threshold_overridden": pixel_threshold is not None,
        "calibration": {
            "method": cal.method,
            "params": cal.params,
            "n_images": cal.n_images,
            "far_bound": far_bound(float(t_image), cal.validation_scores),
            "min_p_value": 1.0 / (len(cal.validation_scores) + 1),
            "position_pixels": bool(cal.positions and cal.position_pixels),
            "standouts": list(cal.standouts),
        },
        **files,
    }
