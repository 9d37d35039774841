"""Reading a ``review.csv`` exported from a report."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from anomaly.errors import DataError

DECISIONS = ("defect_confirmed", "false_alarm", "unsure")
REQUIRED = ("path", "decision")


def read_review(path: str | os.PathLike[str]) -> pd.DataFrame:
    """The rows of a ``review.csv``, every column as text.

    Raises:
        DataError: The file is missing, unreadable, lacks a column or holds an unknown
            decision (the message names the file, the column or the row).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"review file {path} does not exist; export it from a report.html")
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read the review file {path}: {exc}") from exc
    missing = [c for c in REQUIRED if c not in frame.columns]
    if missing:
        raise DataError(
            f"{path} has no {', '.join(missing)} column(s); is it a review.csv exported from "
            "a report?"
        )
    bad = frame[~frame["decision"].isin(DECISIONS)]
    if len(bad):
        first = bad.index[0]
        raise DataError(
            f"{path} row {first + 2}: decision {bad['decision'].iloc[0]!r} is not one of "
            f"{', '.join(DECISIONS)}"
        )
    optional = ("source", "moved_to", "sha256", "defect_class", "model_verdict", "model")
    for column in (*optional, "model_id"):
        if column not in frame.columns:
            frame[column] = ""
    return frame
