"""Running score-batch.

The lock, the MLflow run, and the batch loop that writes each batch's pictures before
committing its records to the manifest.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from anomaly.data.folder import Sample
from anomaly.errors import ConfigError, DataError, OutputError
from anomaly.io import write_json_atomic
from anomaly.jobs.report import write_report
from anomaly.jobs.score import output_settings, region_settings
from anomaly.pipelines import lock as locking
from anomaly.pipelines.manifest import ERROR, OK, Manifest
from anomaly.pipelines.score_batch.files import (
    claim_output,
    manifest_record,
    move_all,
    remove_orphans,
    scored_record,
    tables_stale,
    write_run_tables,
    write_tables,
)
from anomaly.pipelines.score_batch.plan import (
    LOCK_FILE,
    MANIFEST_FILE,
    BatchPlan,
    BatchResult,
    Item,
    Plan,
    Settings,
    dry_run,
    plan_run,
    settings_from,
)
from anomaly.report.context import report_context
from anomaly.scoring.detector import Detector
from anomaly.scoring.judging import Judging, judge_batches
from anomaly.scoring.stream import Progress
from anomaly.tracking.lineage import file_set, log_file_sets
from anomaly.tracking.mlflow_logger import base_tags, resolve_tracking_uri, start_run
from anomaly.tracking.model import load_model, model_version_tags

log = logging.getLogger(__name__)


PAUSE_PHASES = ("after_pictures", "mid_commit", "after_commit")


# A long run rewrites the tables this often, so they never lag far behind the manifest.
_TABLES_EVERY_S = 60.0


def score_batch(cfg: DictConfig, *, progress: Progress | None = None) -> BatchResult | BatchPlan:
    """Score the new and changed images of ``cfg.inbox`` (``score_batch.yaml``).

    Args:
        cfg: The composed ``score_batch`` config.
        progress: Called with ``(finished, total)`` image counts after each batch.

    Returns:
        With ``dry_run``, what a run would do (:class:`BatchPlan`); otherwise what this
        one did (:class:`BatchResult`, also written to ``summary.json``).

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


class _Pause:
    """The ``debug.pause_at`` fault-injection option (see the package docstring)."""

    def __init__(self, spec: str | None) -> None:
        self.phase, self.at, self.seconds = "", 0, 3600.0
        self.counts: dict[str, int] = {}
        if spec:
            phase, n, *seconds = spec.split(":")
            if phase not in PAUSE_PHASES or not n.isdigit() or len(seconds) > 1:
                raise ConfigError(
                    f"debug.pause_at={spec} is not <phase>:<n>[:<seconds>] with a phase of "
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
        log.warning("debug: paused at %s:%d", phase, self.at)
        for handler in logging.getLogger().handlers:
            handler.flush()
        time.sleep(self.seconds)

    def check(self, phase: str) -> None:
        """Stop here when due."""
        if self.due(phase):
            self.stop(phase)


def _run(cfg: DictConfig, settings: Settings, progress: Progress | None) -> BatchResult:
    started = time.perf_counter()
    pause = _Pause(OmegaConf.select(cfg, "debug.pause_at", default=None))
    log.info(
        "score_batch: inbox %s, model %s, results %s",
        settings.inbox,
        settings.model_uri,
        settings.output,
    )
    claim_output(settings)
    manifest = Manifest.open(settings.state / MANIFEST_FILE)
    try:
        tables = settings.output / "scores.csv"
        if manifest.dropped or tables_stale(settings.state / MANIFEST_FILE, tables):
            # A run was killed after committing images but before rebuilding the tables.
            write_tables(manifest.records, settings.output)
        remove_orphans(settings)
        plan = plan_run(settings, manifest)
        moved = move_all(plan.to_move, settings)
        if moved:
            log.info("moved %d image(s) scored earlier to %s", moved, settings.done)
        result = _score_plan(cfg, settings, manifest, plan, pause, progress, moved=moved)
    finally:
        manifest.close()
    result.seconds = round(time.perf_counter() - started, 3)
    result.images_per_second = (
        result.n_scored / result.seconds if result.seconds and result.n_scored else 0.0
    )
    try:
        write_json_atomic(settings.output / "summary.json", result.to_dict())
        if result.run_dir:
            write_json_atomic(Path(result.run_dir) / "summary.json", result.to_dict())
    except OSError as exc:
        raise OutputError(
            f"cannot write summary.json in {settings.output}: {exc.strerror}; every result is "
            "committed (scores.csv is complete)"
        ) from exc
    log.info(
        "score_batch: %d new, %d changed, %d defective, %d unreadable, %d already done, "
        "%d moved; results in %s",
        result.n_new,
        result.n_changed,
        result.n_defective,
        result.n_errors,
        result.n_already_done,
        result.n_moved,
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
) -> BatchResult:
    started = time.perf_counter()
    to_score = plan.to_score
    # Microseconds: two runs of one process within a second (an in-process scheduler, the
    # tests) must not share a run folder, or the second's tables and report replace the
    # first's.
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H-%M-%S.%fZ")
    run_name = f"{stamp}_{os.getpid()}"
    result = BatchResult(
        inbox=str(settings.inbox),
        output=str(settings.output),
        done_folder=str(settings.done) if settings.move else None,
        manifest=str(settings.state / MANIFEST_FILE),
        log_file=str(settings.output / "logs" / "score_batch.log"),
        n_listed=len(to_score) + len(plan.done) + len(plan.known_errors),
        n_new=len(plan.new),
        n_changed=len(plan.changed),
        n_already_done=len(plan.done),
        n_known_errors=len(plan.known_errors),
        n_moved=moved,
        model_uri=settings.model_uri,
        run=run_name if to_score else "",
    )
    if not to_score and not bool(cfg.log_idle_runs):
        return result
    uri = resolve_tracking_uri(cfg.tracking.uri)
    result.tracking_uri = uri
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
        result.model_version = version_tags.get("model.version", "")
        result.model_id = detector.model_id
    with start_run(
        uri=uri,
        experiment=str(cfg.tracking.experiment),
        run_name="score_batch",
        tags=tags,
        required=bool(cfg.tracking.required),
        # A timer's run scores whatever the store's state; the store can catch up later.
        local_when_unusable=True,
    ) as run:
        result.run_id = run.run_id
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
            result.run_dir = str(run_dir)
            new_records = _score_items(
                cfg, settings, manifest, detector, to_score, result, pause, progress
            )
            write_tables(manifest.records, settings.output)
            write_run_tables(run_dir, new_records)
            for name in ("new_scores.csv", "new_errors.csv"):
                if (run_dir / name).is_file():
                    run.artifact(run_dir / name)
            # This run's images (last night's lot), pictures and regions from the
            # results folder two levels up.
            context = report_context(
                detector,
                kind="score_batch",
                model=settings.model_uri,
                version_tags=version_tags,
                input_dir=settings.inbox,
                image_threshold=cfg.scoring.threshold,
                pixel_threshold=cfg.scoring.pixel_threshold,
                scores_file="new_scores.csv",
                errors_file="new_errors.csv",
                regions_file="../../regions.csv",
                pictures_dir="../..",
                # processed=move takes the photos there after this run: a review applied
                # later finds them by that path.
                moved_to=str(settings.done) if settings.move else "",
            )
            report = write_report(run_dir, context, run)
            result.report = report.path if report else ""
        run.metrics(
            {
                "images_new": result.n_new,
                "images_changed": result.n_changed,
                "images_scored": result.n_scored,
                "images_defective": result.n_defective,
                "images_skipped": result.n_errors,
                "images_already_done": result.n_already_done,
                "images_known_errors": result.n_known_errors,
                "images_moved": result.n_moved,
                "seconds": time.perf_counter() - started,
                "images_per_second": result.n_scored / (time.perf_counter() - started),
            }
        )
        result.not_uploaded = run.failed
    return result


def _score_items(
    cfg: DictConfig,
    settings: Settings,
    manifest: Manifest,
    detector: Detector,
    items: Sequence[Item],
    result: BatchResult,
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
        "model_version": result.model_version,
        "model_uri": settings.model_uri,
        "run": result.run,
        "mlflow_run_id": result.run_id or "",
    }
    last_tables = time.perf_counter()
    by_rel = {it.rel: it for it in items}
    done = 0
    new_records: list[dict[str, Any]] = []
    if progress is not None:
        progress(0, len(items))
    judging = Judging(t_image, t_pixel, regions, outputs, settings.output)
    judged_batches = judge_batches(
        detector,
        [Sample(it.path) for it in items],
        [it.rel for it in items],
        judging,
        batch_size=int(s.batch_size),
        num_workers=int(s.num_workers),
    )
    while True:
        try:
            judged = next(judged_batches, None)
        except OSError as exc:
            raise OutputError(
                f"cannot write pictures to {settings.output}: {exc.strerror or exc}; the "
                f"{result['n_scored']} image(s) committed before are complete. Free space "
                "or make the folder writable, then rerun"
            ) from exc
        if judged is None:
            break
        now = datetime.now(timezone.utc).isoformat(timespec="seconds")
        records = [
            manifest_record(items[i], ERROR, now, reason=reason, run=result.run)
            for i, reason in judged.errors
        ]
        records += [scored_record(items[i], verdict, now, common) for i, verdict in judged.scored]
        pause.check("after_pictures")
        split = None
        if pause.due("mid_commit"):

            def split(rest: bytes) -> None:
                pause.stop("mid_commit")

        # The commit: from here these images count as done.
        manifest.append(records, _split=split)
        pause.check("after_commit")
        ok = [r for r in records if r["status"] == OK]
        result.n_scored += len(ok)
        result.n_defective += sum(int(r["is_defective"]) for r in ok)
        result.n_errors += len(records) - len(ok)
        new_records.extend(records)
        if settings.move:
            result.n_moved += move_all([by_rel[r["path"]] for r in ok], settings)
        done += len(records)
        if progress is not None:
            progress(done, len(items))
        if time.perf_counter() - last_tables > _TABLES_EVERY_S:
            write_tables(manifest.records, settings.output)
            last_tables = time.perf_counter()
    return new_records
