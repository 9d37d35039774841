"""``score_batch``: score every new image of an inbox folder with the champion model.

Meant to be started by a scheduler (cron, systemd timer) as often as wanted. Each run:

1. takes the inbox's lock (``<inbox>/.score_batch/lock``; a live holder: exit 6);
2. lists the inbox and hashes each image (sha256 of its bytes). An image is identified by
   its path and hash: a path never seen is *new*, a path seen with another hash is
   *changed* (scored again, a new row), the same content under a new path is new too;
3. resolves the model once (``models:/<name>@champion`` by default) and scores the new and
   changed images batch by batch. For each batch the PNGs are written first (atomically),
   then the batch's records are appended to the manifest
   (``<inbox>/.score_batch/manifest.jsonl``): from that moment an image is *committed*;
4. with ``processed=move``, moves committed images to the done folder;
5. rebuilds ``scores.csv``, ``regions.csv`` and ``errors.csv`` of the results folder from
   the manifest (atomically) and logs one MLflow run.

The manifest is the single source of truth, so a run killed at any moment loses nothing
and counts nothing twice: its uncommitted images are simply scored by the next run, which
also finishes what the killed one left (tables not yet rebuilt, committed images not yet
moved, temporary files of writes it cut short).

Test hook: ``ANOMALY_TEST_PAUSE_AT=<phase>:<n>[:<seconds>]`` makes the run stop (sleep for
an hour, or ``seconds``, to be killed by the test or to let it act) at the ``n``-th batch
(1-based) at one of the phases ``after_pictures`` (PNGs written, records not yet
committed), ``mid_commit`` (the batch's manifest lines written and synced up to the middle
of the last one) or ``after_commit`` (committed, not yet moved), after logging
``test hook: paused at <phase>:<n>``. It is read when a run starts and does nothing when
unset.
"""

from __future__ import annotations

import csv
import errno
import io
import json
import logging
import os
import shutil
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from anomaly.data.folder import Sample, list_files
from anomaly.errors import ConfigError, DataError, OutputError
from anomaly.io import atomic_open, remove_leftover_temporaries, sha256_file, write_json_atomic
from anomaly.jobs.checks import check_config
from anomaly.jobs.score import output_settings, region_settings
from anomaly.pipelines import lock as locking
from anomaly.pipelines.manifest import ERROR, OK, Key, Manifest
from anomaly.scoring.detector import Detector
from anomaly.scoring.regions import REGION_COLUMNS, region_table
from anomaly.scoring.results import SCORES_COLUMNS as SCORE_COLUMNS
from anomaly.scoring.stream import Progress, iterate_maps
from anomaly.scoring.verdict import analyse
from anomaly.scoring.writer import write_pictures
from anomaly.tracking.lineage import file_set, log_file_sets
from anomaly.tracking.mlflow_logger import base_tags, resolve_tracking_uri, start_run
from anomaly.tracking.model import load_model, model_version_tags

log = logging.getLogger(__name__)

#: Default state folder in the inbox, for the lock and the manifest (hidden: never scored).
STATE_DIR = ".score_batch"
LOCK_FILE = "lock"
MANIFEST_FILE = "manifest.jsonl"
#: Written into the results folder: the inbox whose results it holds.
OWNER_FILE = ".score_batch_inbox"
PAUSE_ENV = "ANOMALY_TEST_PAUSE_AT"
PAUSE_PHASES = ("after_pictures", "mid_commit", "after_commit")

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
# A long run rewrites the tables this often, so they never lag far behind the manifest.
_TABLES_EVERY_S = 60.0


@dataclass(frozen=True)
class Settings:
    """The validated paths and options of one run (from ``score_batch.yaml``)."""

    inbox: Path
    output: Path
    done: Path
    move: bool
    model_uri: str
    state: Path


@dataclass(frozen=True)
class Item:
    """One image file of the inbox."""

    rel: str
    sha256: str
    path: Path
    size: int
    mtime_ns: int


@dataclass
class Plan:
    """What a run has to do, from the inbox listing and the manifest."""

    new: list[Item] = field(default_factory=list)
    changed: list[Item] = field(default_factory=list)
    done: list[Item] = field(default_factory=list)
    known_errors: list[Item] = field(default_factory=list)
    to_move: list[Item] = field(default_factory=list)

    @property
    def to_score(self) -> list[Item]:
        """New and changed images, in path order."""
        return sorted(self.new + self.changed, key=lambda it: it.rel)


def _path(value: Any) -> Path:
    # Lexical normalisation: "<inbox>/../results" must not depend on symlinks in <inbox>.
    return Path(os.path.abspath(os.path.expanduser(str(value))))


def _inside_visible(child: Path, parent: Path) -> bool:
    """``child`` is ``parent`` or under it, in a folder the inbox listing would enter."""
    try:
        rel = child.relative_to(parent)
    except ValueError:
        return False
    return not any(part.startswith(".") for part in rel.parts)


def settings_from(cfg: DictConfig) -> Settings:
    """Validate the paths and options of ``cfg`` (see ``conf/score_batch.yaml``).

    Raises:
        ConfigError: ``inbox`` is not a folder, ``processed`` is not keep/move, or the
            results or done folder lies inside the inbox (its files would be scored).
    """
    check_config(cfg)
    inbox = _path(cfg.inbox)
    if not inbox.is_dir():
        what = "is not a folder" if inbox.exists() else "does not exist"
        raise ConfigError(f"inbox={cfg.inbox} {what}; point inbox= at the folder of new images")
    processed = str(cfg.processed)
    if processed not in ("keep", "move"):
        raise ConfigError(
            f"processed={processed} is not valid; use processed=keep (leave scored images "
            "in the inbox) or processed=move (move them to done=FOLDER)"
        )
    output, done = _path(cfg.output), _path(cfg.done)
    for key, folder in (("output", output), ("done", done)):
        if _inside_visible(folder, inbox):
            raise ConfigError(
                f"{key}={cfg[key]} lies inside inbox={cfg.inbox}, so its files would be "
                f"scored as new images; choose a {key} folder outside the inbox"
            )
    return Settings(
        inbox=inbox,
        output=output,
        done=done,
        move=processed == "move",
        model_uri=str(cfg.model_uri),
        state=_path(cfg.get("state") or inbox / STATE_DIR),
    )


def inbox_files(settings: Settings) -> list[Path]:
    """Every file of the inbox a run answers for, sorted.

    Images and any other visible file: a file the reader does not take (GIF, WebP, a
    text file) is scored like the rest, so that it is refused with its reason and listed
    in ``errors.csv`` instead of lying in the inbox unnoticed. Hidden files and folders
    are left out, and so is the state folder even when configured to a visible one.
    """
    images, others = list_files(settings.inbox)
    return sorted(
        p for p in images + others if p != settings.state and settings.state not in p.parents
    )


def plan_run(settings: Settings, manifest: Manifest) -> Plan:
    """Sort the inbox's files into new, changed, done and known errors.

    A file whose size and modification time match its last record is not read again: its
    recorded hash is used (a rerun over a large inbox kept in place stays fast).
    """
    last: dict[str, dict[str, Any]] = {}
    for record in manifest.records:
        last[record["path"]] = record
    plan = Plan()
    for path in inbox_files(settings):
        rel = path.relative_to(settings.inbox).as_posix()
        try:
            stat = path.stat()
            previous = last.get(rel)
            if previous and (previous.get("size"), previous.get("mtime_ns")) == (
                stat.st_size,
                stat.st_mtime_ns,
            ):
                sha = str(previous["sha256"])
            else:
                sha = sha256_file(path)
        except OSError as exc:
            # Vanished between listing and reading (moved away by a person): next run.
            log.warning("%s cannot be read now (%s); left for the next run", path, exc.strerror)
            continue
        item = Item(rel, sha, path, stat.st_size, stat.st_mtime_ns)
        record = manifest.get(Key(rel, sha))
        if record is None:
            (plan.changed if rel in last else plan.new).append(item)
        elif record.get("status") == ERROR:
            plan.known_errors.append(item)
        else:
            plan.done.append(item)
            if settings.move:
                plan.to_move.append(item)
    return plan


def score_batch(cfg: DictConfig, *, progress: Progress | None = None) -> dict[str, Any]:
    """Score the new and changed images of ``cfg.inbox`` (``score_batch.yaml``).

    Args:
        cfg: The composed ``score_batch`` config.
        progress: Called with ``(finished, total)`` image counts after each batch.

    Returns:
        With ``dry_run``: ``to_score``, ``to_move``, ``done``, ``known_errors`` (relative
        paths) and ``locked_by``. Otherwise counts (``n_new``, ``n_changed``, ``n_scored``,
        ``n_defective``, ``n_errors`` (unreadable this run), ``n_already_done``,
        ``n_known_errors``, ``n_moved``), ``seconds``, ``images_per_second``, the model
        (``model_uri``, ``model_version``, ``model_id``), the folders, ``run_id`` and
        ``not_uploaded``.

    Raises:
        ConfigError: A bad inbox, output, done or processed value.
        LockedError: Another live run holds the inbox's lock.
        TrackingError: The model cannot be downloaded, or MLflow is unreachable with
            ``tracking.required=true`` (nothing was scored).
        OutputError: Results, manifest or moves cannot be written; what was committed
            before is intact.
    """
    settings = settings_from(cfg)
    if bool(cfg.dry_run):
        return dry_run(settings)
    with locking.locked(settings.state / LOCK_FILE):
        return _run(cfg, settings, progress)


def dry_run(settings: Settings) -> dict[str, Any]:
    """What a run would do, changing nothing (no lock, no MLflow, no model download)."""
    manifest = Manifest.load(settings.state / MANIFEST_FILE)
    plan = plan_run(settings, manifest)
    holder = locking.holder(settings.state / LOCK_FILE)
    return {
        "dry_run": True,
        "inbox": str(settings.inbox),
        "output": str(settings.output),
        "done_folder": str(settings.done),
        "new": [it.rel for it in plan.new],
        "changed": [it.rel for it in plan.changed],
        "to_score": [it.rel for it in plan.to_score],
        "to_move": [it.rel for it in (plan.to_move + plan.to_score if settings.move else [])],
        "done": [it.rel for it in plan.done],
        "known_errors": [it.rel for it in plan.known_errors],
        "locked_by": holder.describe() if holder else None,
    }


class _Pause:
    """The ``ANOMALY_TEST_PAUSE_AT`` test hook (see the module docstring)."""

    def __init__(self, spec: str | None) -> None:
        self.phase, self.at, self.seconds = "", 0, 3600.0
        self.counts: dict[str, int] = {}
        if spec:
            phase, n, *seconds = spec.split(":")
            if phase not in PAUSE_PHASES or not n.isdigit() or len(seconds) > 1:
                raise ConfigError(
                    f"{PAUSE_ENV}={spec} is not <phase>:<n>[:<seconds>] with a phase of "
                    f"{PAUSE_PHASES}"
                )
            self.phase, self.at = phase, int(n)
            if seconds:
                self.seconds = float(seconds[0])

    def due(self, phase: str) -> bool:
        """Count one occurrence of ``phase``; True when the run is to stop here."""
        self.counts[phase] = self.counts.get(phase, 0) + 1
        return phase == self.phase and self.counts[phase] == self.at

    def stop(self, phase: str) -> None:
        """Log and sleep, for the test to kill the process (or to act meanwhile)."""
        log.warning("test hook: paused at %s:%d", phase, self.at)
        for handler in logging.getLogger().handlers:
            handler.flush()
        time.sleep(self.seconds)

    def check(self, phase: str) -> None:
        """Stop here when due."""
        if self.due(phase):
            self.stop(phase)


def _claim_output(settings: Settings) -> None:
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


def _tables_stale(manifest_file: Path, tables: Path) -> bool:
    if not tables.exists():
        return True
    return manifest_file.exists() and manifest_file.stat().st_mtime_ns > tables.stat().st_mtime_ns


def _run(cfg: DictConfig, settings: Settings, progress: Progress | None) -> dict[str, Any]:
    started = time.perf_counter()
    pause = _Pause(os.environ.get(PAUSE_ENV))
    log.info(
        "score_batch: inbox %s, model %s, results %s",
        settings.inbox,
        settings.model_uri,
        settings.output,
    )
    _claim_output(settings)
    manifest = Manifest.open(settings.state / MANIFEST_FILE)
    try:
        tables = settings.output / "scores.csv"
        if manifest.dropped or _tables_stale(settings.state / MANIFEST_FILE, tables):
            # A run was killed after committing images but before rebuilding the tables.
            write_tables(manifest.records, settings.output)
        remove_orphans(settings)
        plan = plan_run(settings, manifest)
        moved = _move_all(plan.to_move, settings)
        if moved:
            log.info("moved %d image(s) scored earlier to %s", moved, settings.done)
        result = _score_plan(cfg, settings, manifest, plan, pause, progress, moved=moved)
    finally:
        manifest.close()
    result["seconds"] = round(time.perf_counter() - started, 3)
    result["images_per_second"] = (
        result["n_scored"] / result["seconds"] if result["seconds"] and result["n_scored"] else 0.0
    )
    try:
        write_json_atomic(settings.output / "summary.json", result)
        if result["run_dir"]:
            write_json_atomic(Path(result["run_dir"]) / "summary.json", result)
    except OSError as exc:
        raise OutputError(
            f"cannot write summary.json in {settings.output}: {exc.strerror}; every result is "
            "committed (scores.csv is complete)"
        ) from exc
    log.info(
        "score_batch: %d new, %d changed, %d defective, %d unreadable, %d already done, "
        "%d moved; results in %s",
        result["n_new"],
        result["n_changed"],
        result["n_defective"],
        result["n_errors"],
        result["n_already_done"],
        result["n_moved"],
        settings.output,
    )
    return result


def _score_plan(
    cfg: DictConfig,
    settings: Settings,
    manifest: Manifest,
    plan: Plan,
    pause: _Pause,
    progress: Progress | None,
    *,
    moved: int,
) -> dict[str, Any]:
    started = time.perf_counter()
    to_score = plan.to_score
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H-%M-%SZ")
    run_name = f"{stamp}_{os.getpid()}"
    result: dict[str, Any] = {
        "dry_run": False,
        "inbox": str(settings.inbox),
        "output": str(settings.output),
        "done_folder": str(settings.done) if settings.move else None,
        "manifest": str(settings.state / MANIFEST_FILE),
        "log_file": str(settings.output / "logs" / "score_batch.log"),
        "n_listed": len(to_score) + len(plan.done) + len(plan.known_errors),
        "n_new": len(plan.new),
        "n_changed": len(plan.changed),
        "n_scored": 0,
        "n_defective": 0,
        "n_errors": 0,
        "n_already_done": len(plan.done),
        "n_known_errors": len(plan.known_errors),
        "n_moved": moved,
        "model_uri": settings.model_uri,
        "model_version": "",
        "model_id": "",
        "run": run_name if to_score else "",
        "run_dir": "",
        "run_id": None,
        "tracking_uri": None,
        "not_uploaded": [],
    }
    if not to_score and not bool(cfg.log_idle_runs):
        return result
    uri = resolve_tracking_uri(cfg.tracking.uri)
    result["tracking_uri"] = uri
    tags = base_tags(kind="score_batch") | {"model.uri": settings.model_uri}
    detector = None
    if to_score:
        # Resolved once per run, alias to version first and then that version downloaded,
        # so a promotion during the run cannot make the rows name another version.
        version_tags = model_version_tags(settings.model_uri, tracking_uri=uri)
        source = settings.model_uri
        if source.startswith("models:/") and "@" in source and "model.version" in version_tags:
            source = f"models:/{version_tags['model.name']}/{version_tags['model.version']}"
        detector = load_model(source, tracking_uri=uri)
        tags |= version_tags | {"model.id": detector.model_id}
        result["model_version"] = version_tags.get("model.version", "")
        result["model_id"] = detector.model_id
    with start_run(
        uri=uri,
        experiment=str(cfg.tracking.experiment),
        run_name="score_batch",
        tags=tags,
        required=bool(cfg.tracking.required),
        # A timer's run scores whatever the store's state; the store can catch up later.
        local_when_unusable=True,
    ) as run:
        result["run_id"] = run.run_id
        run.params(
            {
                "inbox": str(settings.inbox),
                "output": str(settings.output),
                "model": settings.model_uri,
                "processed": "move" if settings.move else "keep",
                "done": str(settings.done) if settings.move else "",
            }
        )
        if run.enabled and to_score:
            batch = file_set(
                [Sample(it.path) for it in to_score],
                root=settings.inbox,
                context="scoring",
                hashes=[it.sha256 for it in to_score],
            )
            log_file_sets(run, [batch])
        new_records: list[dict[str, Any]] = []
        if detector is not None:
            run_dir = settings.output / "runs" / run_name
            result["run_dir"] = str(run_dir)
            new_records = _score_items(
                cfg, settings, manifest, detector, to_score, result, pause, progress
            )
            write_tables(manifest.records, settings.output)
            _write_run_tables(run_dir, new_records)
            for name in ("new_scores.csv", "new_errors.csv"):
                if (run_dir / name).is_file():
                    run.artifact(run_dir / name)
        run.metrics(
            {
                "images_new": result["n_new"],
                "images_changed": result["n_changed"],
                "images_scored": result["n_scored"],
                "images_defective": result["n_defective"],
                "images_skipped": result["n_errors"],
                "images_already_done": result["n_already_done"],
                "images_known_errors": result["n_known_errors"],
                "images_moved": result["n_moved"],
                "seconds": time.perf_counter() - started,
                "images_per_second": result["n_scored"] / (time.perf_counter() - started),
            }
        )
        result["not_uploaded"] = run.failed
    return result


def _score_items(
    cfg: DictConfig,
    settings: Settings,
    manifest: Manifest,
    detector: Detector,
    items: Sequence[Item],
    result: dict[str, Any],
    pause: _Pause,
    progress: Progress | None,
) -> list[dict[str, Any]]:
    """Score ``items`` batch by batch, committing each batch after its PNGs; return records."""
    s = cfg.scoring
    cal = detector.calibration
    if cal is None:
        raise DataError(f"{settings.model_uri} has no calibration.json; run `anomaly calibrate`")
    t_image = float(s.threshold if s.threshold is not None else cal.image_threshold)
    t_pixel = float(s.pixel_threshold if s.pixel_threshold is not None else cal.pixel_threshold)
    regions = region_settings(s)
    outputs = output_settings(s, parquet=False)
    common = {
        "threshold": t_image,
        "model_id": detector.model_id,
        "model_version": result["model_version"],
        "model_uri": settings.model_uri,
        "run": result["run"],
        "mlflow_run_id": result["run_id"] or "",
    }
    last_tables = time.perf_counter()
    by_rel = {it.rel: it for it in items}
    done = 0
    new_records: list[dict[str, Any]] = []
    if progress is not None:
        progress(0, len(items))
    with ThreadPoolExecutor(max_workers=2) as pool:
        for batch, maps in iterate_maps(
            detector,
            [Sample(it.path) for it in items],
            batch_size=int(s.batch_size),
            num_workers=int(s.num_workers),
            skip_errors=True,
            keep_original=outputs.overlays,
        ):
            now = datetime.now(timezone.utc).isoformat(timespec="seconds")
            records = []
            for i, reason in batch["errors"]:
                log.warning("skipped %s: %s", items[i].rel, reason)
                records.append(_record(items[i], ERROR, now, reason=reason, run=result["run"]))
            for i, note in batch["notes"]:
                log.warning("%s: %s", items[i].rel, note)
            results = analyse(
                detector,
                maps,
                batch["original_size"],
                image_threshold=t_image,
                pixel_threshold=t_pixel,
                regions=regions,
                distances=batch.get("distances"),
            )
            writes = []
            for j, (i, verdict) in enumerate(zip(batch["index"], results, strict=True)):
                if verdict.error:
                    # No verdict (a non-finite score): an error record, as for a file that
                    # cannot be read.
                    log.warning("skipped %s: %s", items[i].rel, verdict.error)
                    records.append(
                        _record(items[i], ERROR, now, reason=verdict.error, run=result["run"])
                    )
                    continue
                original = batch["original"][j] if outputs.overlays else None
                name = Path(items[i].rel).with_suffix(".png")
                writes.append(
                    pool.submit(
                        write_pictures, settings.output, name, verdict, original, t_pixel, outputs
                    )
                )
                records.append(_scored(items[i], verdict, now, common))
            try:
                for future in writes:
                    future.result()
            except OSError as exc:
                raise OutputError(
                    f"cannot write pictures to {settings.output}: {exc.strerror or exc}; the "
                    f"{result['n_scored']} image(s) committed before are complete. Free space "
                    "or make the folder writable, then rerun"
                ) from exc
            pause.check("after_pictures")
            split = None
            if pause.due("mid_commit"):

                def split(rest: bytes) -> None:
                    pause.stop("mid_commit")

            # The commit: from here these images count as done.
            manifest.append(records, _split=split)
            pause.check("after_commit")
            ok = [r for r in records if r["status"] == OK]
            result["n_scored"] += len(ok)
            result["n_defective"] += sum(int(r["is_defective"]) for r in ok)
            result["n_errors"] += len(records) - len(ok)
            new_records.extend(records)
            if settings.move:
                result["n_moved"] += _move_all([by_rel[r["path"]] for r in ok], settings)
            done += len(records)
            if progress is not None:
                progress(done, len(items))
            if time.perf_counter() - last_tables > _TABLES_EVERY_S:
                write_tables(manifest.records, settings.output)
                last_tables = time.perf_counter()
    by_rel = {it.rel: it for it in items}
    return new_records


def _record(item: Item, status: str, now: str, **extra: Any) -> dict[str, Any]:
    return {
        "path": item.rel,
        "sha256": item.sha256,
        "size": item.size,
        "mtime_ns": item.mtime_ns,
        "status": status,
        "scored_at": now,
        **extra,
    }


def _scored(item: Item, verdict: Any, now: str, common: dict[str, Any]) -> dict[str, Any]:
    regions = region_table(verdict.labels, verdict.score_map, image=item.rel)
    return _record(
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


def _move_all(items: Iterable[Item], settings: Settings) -> int:
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


def _write_run_tables(run_dir: Path, records: Sequence[dict[str, Any]]) -> None:
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
