"""The report of a job's results folder: the page, and its upload to MLflow.

A report is a reading aid: when it cannot be written, the job's results (already on
disk) stand, and the failure is a warning, never a failed scoring run.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from anomaly.report import ReportInfo, build_report
from anomaly.report.content import write_context
from anomaly.tracking.mlflow_logger import RunLogger

log = logging.getLogger(__name__)


def write_report(
    folder: str | Path,
    context: dict[str, Any],
    run: RunLogger | None = None,
    *,
    artifact_path: str | None = None,
) -> ReportInfo | None:
    """Write ``report_context.json`` and ``report.html`` into ``folder``; log the page.

    Returns:
        The report, or None when it could not be written (logged as a warning).
    """
    try:
        write_context(folder, context)
        info = build_report(folder)
    except Exception as exc:  # a reading aid: never fails the job whose results stand
        log.warning("could not write the report in %s: %s", folder, exc, exc_info=True)
        return None
    if run is not None:
        run.artifact(Path(info.path), artifact_path)
    return info
