"""The files of a score-batch run.

The results folder's owner, the tables rebuilt from the manifest, moves into the done
folder, and the leftovers of killed runs.
"""

from __future__ import annotations

import csv
import errno
import io
import json
import logging
import os
import shutil
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from anomaly.errors import ConfigError, OutputError
from anomaly.io import atomic_open, remove_leftover_temporaries, sha256_file
from anomaly.pipelines.manifest import ERROR, OK
from anomaly.pipelines.score_batch.plan import (
    OWNER_FILE,
    Item,
    Settings,
)
from anomaly.scoring.regions import REGION_COLUMNS, region_table
from anomaly.scoring.results import SCORES_COLUMNS as SCORE_COLUMNS

log = logging.getLogger(__name__)


# The columns of `anomaly score`, plus what tells versions and runs apart.
SCORES_COLUMNS = (
    "path",
    "sha256",
    *SCORE_COLUMNS[1:],
    "model_version",
    "model_uri",
    "scored_at",
    "run",
    "mlflow_run_id",
)


ERRORS_COLUMNS = ("path", "sha256", "reason", "scored_at", "run")


def claim_output(settings: Settings) -> None:
    """Refuse a results folder that holds another inbox's results (they would be mixed)."""
    owner = settings.output / OWNER_FILE
    try:
        recorded = owner.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        recorded = ""
    except OSError as exc:
        raise OutputError(f"cannot read {owner}: {exc.strerror}") from exc
    if recorded and recorded != str(settings.inbox):
        raise ConfigError(
            f"output={settings.output} holds the results of inbox={recorded}; give each "
            "inbox its own output= folder"
        )
    if not recorded:
        try:
            with atomic_open(owner, "w", encoding="utf-8") as handle:
                handle.write(str(settings.inbox) + "\n")
        except OSError as exc:
            raise OutputError(
                f"cannot write to the output folder {settings.output}: {exc.strerror}"
            ) from exc


#: A copy in flight into the done folder is written continuously, so a temporary file
#: this old there is an orphan even if another inbox's run shares the folder.
DONE_ORPHAN_AGE_S = 3600.0


def remove_orphans(settings: Settings) -> None:
    """Remove the temporary files of atomic writes a killed run left behind.

    Any write can be cut by SIGKILL between creating its temporary file and renaming it:
    the pictures, the tables (also in ``runs/<run>/``), ``summary.json`` and, with
    ``processed=move`` across file systems, the copy into the done folder. None of them
    is ever a complete result. The results folder belongs to this inbox, whose lock we
    hold, so nothing there is being written; the done folder may be shared with other
    inboxes, so only temporary files untouched for :data:`DONE_ORPHAN_AGE_S` go there.
    """
    remove_leftover_temporaries(settings.output)
    if settings.move:
        remove_leftover_temporaries(settings.done, untouched_for_s=DONE_ORPHAN_AGE_S)


def tables_stale(manifest_file: Path, tables: Path) -> bool:
    """True when the tables are missing or older than the manifest (a killed run's)."""
    if not tables.exists():
        return True
    return manifest_file.exists() and manifest_file.stat().st_mtime_ns > tables.stat().st_mtime_ns


def move_all(items: Iterable[Item], settings: Settings) -> int:
    """Move committed images to the done folder; return how many were moved."""
    count = 0
    for item in items:
        try:
            move_file(item.path, settings.done / item.rel, sha256=item.sha256)
        except FileNotFoundError:
            continue  # already gone (moved by a person)
        except OSError as exc:
            raise OutputError(
                f"cannot move {item.path} to the done folder {settings.done}: {exc.strerror}; "
                "its result is committed; fix the folder (done=) and rerun to move it"
            ) from exc
        count += 1
    return count


def move_file(src: Path, dest: Path, *, sha256: str) -> Path:
    """Move ``src`` to ``dest`` without overwriting another file; return where it went.

    An existing ``dest`` with the same content means an earlier move was interrupted
    after copying: ``src`` is just removed. With other content, the file goes to
    ``<stem>.<first 12 hex digits of its hash><suffix>`` beside it. Across file systems
    it is copied to a temporary file, synced and renamed, then ``src`` is removed.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.exists():
        if sha256_file(dest) != sha256:
            dest = dest.with_name(f"{dest.stem}.{sha256[:12]}{dest.suffix}")
        if dest.exists():
            src.unlink()
            return dest
    try:
        os.rename(src, dest)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        with atomic_open(dest, "wb") as handle, open(src, "rb") as source:
            shutil.copyfileobj(source, handle)
        src.unlink()
    return dest


def _csv_bytes(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return text.getvalue()


def _cell(value: Any) -> Any:
    # Full precision: a rerun's scores must compare equal to an uninterrupted run's.
    return repr(value) if isinstance(value, float) else value


def _write_csv(path: Path, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    with atomic_open(path, "w", encoding="utf-8", newline="") as handle:
        handle.write(_csv_bytes(header, rows))


def _score_rows(records: Iterable[dict[str, Any]]) -> list[list[Any]]:
    return [[_cell(r.get(c, "")) for c in SCORES_COLUMNS] for r in records if r["status"] == OK]


def _error_rows(records: Iterable[dict[str, Any]]) -> list[list[Any]]:
    return [[r.get(c, "") for c in ERRORS_COLUMNS] for r in records if r["status"] == ERROR]


def write_tables(records: Sequence[dict[str, Any]], output: Path) -> None:
    """Rewrite ``scores.csv``, ``regions.csv`` and ``errors.csv`` from manifest records.

    ``scores.csv`` holds one row per image version ever scored (a changed image has a row
    per version), in the order they were committed; ``errors.csv`` one row per unreadable
    image version (only written once there is one).

    Raises:
        OutputError: The folder cannot be written; the previous tables are intact.
    """
    regions = [
        [_cell(v) for v in row]
        for r in records
        if r["status"] == OK
        for row in r.get("regions") or []
    ]
    try:
        _write_csv(output / "scores.csv", SCORES_COLUMNS, _score_rows(records))
        _write_csv(output / "regions.csv", REGION_COLUMNS, regions)
        errors = _error_rows(records)
        if errors:
            _write_csv(output / "errors.csv", ERRORS_COLUMNS, errors)
    except OSError as exc:
        raise OutputError(
            f"cannot write the tables in {output}: {exc.strerror}; the manifest holds every "
            "result and the next run writes them again"
        ) from exc


def write_run_tables(run_dir: Path, records: Sequence[dict[str, Any]]) -> None:
    """This run's new rows (uploaded to MLflow with the run)."""
    errors = _error_rows(records)
    try:
        _write_csv(run_dir / "new_scores.csv", SCORES_COLUMNS, _score_rows(records))
        if errors:
            _write_csv(run_dir / "new_errors.csv", ERRORS_COLUMNS, errors)
    except OSError as exc:
        raise OutputError(
            f"cannot write this run's tables in {run_dir}: {exc.strerror}; every result is "
            "committed (scores.csv is complete)"
        ) from exc


def manifest_record(item: Item, status: str, now: str, **extra: Any) -> dict[str, Any]:
    """The manifest record of one file: its identity, status, time and ``extra`` fields."""
    return {
        "path": item.rel,
        "sha256": item.sha256,
        "size": item.size,
        "mtime_ns": item.mtime_ns,
        "status": status,
        "scored_at": now,
        **extra,
    }


def scored_record(item: Item, verdict: Any, now: str, common: dict[str, Any]) -> dict[str, Any]:
    """The manifest record of a scored file: its verdict, regions and the run's ``common``."""
    regions = region_table(verdict.labels, verdict.score_map, image=item.rel)
    return manifest_record(
        item,
        OK,
        now,
        score=verdict.score,
        p_value=verdict.p_value,
        is_defective=int(verdict.is_defective),
        n_regions=verdict.n_regions,
        largest_region_area=verdict.largest_region_area,
        defect_area_px=verdict.defect_area,
        **common,
        regions=json.loads(regions.to_json(orient="values")) if len(regions) else [],
    )
