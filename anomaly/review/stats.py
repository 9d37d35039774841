"""``anomaly review stats``: does the promised false-alarm rate hold in practice?"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pandas as pd

from anomaly.errors import DataError
from anomaly.review.reading import read_review


def review_stats(reviews: pd.DataFrame, *, n_scored: int | None = None) -> dict[str, Any]:
    """What reviewers said about the model's verdicts.

    Args:
        reviews: Rows of ``review.csv`` (``decision`` and ``model_verdict`` columns).
        n_scored: Images scored in the batch the review covers (for the observed
            false-alarm rate); None when unknown.

    Returns:
        ``reviewed``, ``confirmed``, ``false_alarms``, ``unsure``, ``precision`` (confirmed
        share of the reviewed flags; None without any) and ``false_alarm_rate`` (false
        alarms among the images not confirmed defective; None without ``n_scored``).
    """
    decision = reviews.get("decision", pd.Series(dtype=str)).astype(str)
    flagged = reviews.get("model_verdict", pd.Series(dtype=str)).astype(str) == "defect"
    confirmed = int((decision == "defect_confirmed").sum())
    false_alarms = int(((decision == "false_alarm") & flagged).sum())
    confirmed_flags = int(((decision == "defect_confirmed") & flagged).sum())
    judged_flags = confirmed_flags + false_alarms
    good = None if n_scored is None else n_scored - confirmed
    return {
        "reviewed": int(decision.isin(["defect_confirmed", "false_alarm", "unsure"]).sum()),
        "confirmed": confirmed,
        "false_alarms": false_alarms,
        "unsure": int((decision == "unsure").sum()),
        "precision": confirmed_flags / judged_flags if judged_flags else None,
        "false_alarm_rate": false_alarms / good if good else None,
        "missed": int(((decision == "defect_confirmed") & ~flagged).sum()),
    }


def find_reviews(paths: list[str | os.PathLike[str]]) -> list[Path]:
    """The ``review.csv`` files named, or found under the folders named.

    Raises:
        DataError: A path does not exist, or none holds a review.
    """
    found: list[Path] = []
    for item in map(Path, paths):
        if item.is_file():
            found.append(item)
        elif item.is_dir():
            found += sorted(item.rglob("review.csv"))
        else:
            raise DataError(f"{item} does not exist; name review.csv files or their folders")
    if not found:
        raise DataError(
            f"no review.csv under {', '.join(map(str, paths))}; export one from a report.html "
            "(button 'export review.csv') and save it beside the report"
        )
    return found


def stats_by_model(paths: list[str | os.PathLike[str]]) -> pd.DataFrame:
    """Review statistics per model version over every review found under ``paths``.

    Each review counts against the number of images in its report (``report_images``),
    so the false-alarm rate is over the images scored, not only those reviewed.

    Returns:
        One row per model: ``model``, ``reviews``, ``images``, and the fields of
        :func:`review_stats` over all its reviews.
    """
    frames = []
    for number, path in enumerate(find_reviews(paths)):
        frame = read_review(path)
        frame["review_file"] = number
        frames.append(frame)
    reviews = pd.concat(frames, ignore_index=True)
    rows = []
    for model, group in reviews.groupby(reviews["model"].where(reviews["model"] != "", "unknown")):
        sizes = pd.to_numeric(
            group.groupby("review_file")["report_images"].first()
            if "report_images" in group
            else pd.Series(dtype=float),
            errors="coerce",
        )
        n_scored = int(sizes.sum()) if len(sizes) and sizes.notna().all() else None
        rows.append(
            {
                "model": model,
                "reviews": int(group["review_file"].nunique()),
                "images": n_scored,
                **review_stats(group, n_scored=n_scored),
            }
        )
    return pd.DataFrame(rows)
