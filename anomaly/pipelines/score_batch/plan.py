"""What a score-batch run has to do.

Its settings, the inbox listing, and the plan (new, changed, done, known errors) drawn
from the listing and the manifest.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from anomaly.data.folder import list_files
from anomaly.errors import ConfigError
from anomaly.io import sha256_file
from anomaly.jobs.checks import check_config
from anomaly.jobs.results import JobResult
from anomaly.pipelines import lock as locking
from anomaly.pipelines.manifest import ERROR, Key, Manifest

log = logging.getLogger(__name__)


#: Default state folder in the inbox, for the lock and the manifest (hidden: never scored).
STATE_DIR = ".score_batch"


LOCK_FILE = "lock"


MANIFEST_FILE = "manifest.jsonl"


#: Written into the results folder: the inbox whose results it holds.
OWNER_FILE = ".score_batch_inbox"


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


@dataclass(kw_only=True)
class BatchPlan(JobResult):
    """What a run would do (``dry_run=true``): relative paths of the inbox's images."""

    dry_run: bool = True
    inbox: str
    output: str
    done_folder: str
    new: list[str]
    changed: list[str]
    to_score: list[str]
    to_move: list[str]
    done: list[str]
    known_errors: list[str]
    locked_by: str | None = None


@dataclass(kw_only=True)
class BatchResult(JobResult):
    """What a run did; also its ``summary.json``.

    Counts: ``n_new`` and ``n_changed`` images found, ``n_scored``, ``n_defective``,
    ``n_errors`` (no verdict this run), ``n_already_done``, ``n_known_errors`` (unreadable
    before, unchanged, not retried) and ``n_moved``; the model (``model_uri``,
    ``model_version``, ``model_id``), the folders, the run's name and folder.
    """

    dry_run: bool = False
    inbox: str
    output: str
    done_folder: str | None
    manifest: str
    log_file: str
    n_listed: int
    n_new: int
    n_changed: int
    n_scored: int = 0
    n_defective: int = 0
    n_errors: int = 0
    n_already_done: int
    n_known_errors: int
    n_moved: int
    model_uri: str
    model_version: str = ""
    model_id: str = ""
    run: str = ""
    run_dir: str = ""
    seconds: float = 0.0
    images_per_second: float = 0.0

    @property
    def n_skipped(self) -> int:
        """Images that got no verdict this run."""
        return self.n_errors


def dry_run(settings: Settings) -> BatchPlan:
    """What a run would do, changing nothing (no lock, no MLflow, no model download)."""
    manifest = Manifest.load(settings.state / MANIFEST_FILE)
    plan = plan_run(settings, manifest)
    holder = locking.holder(settings.state / LOCK_FILE)
    return BatchPlan(
        inbox=str(settings.inbox),
        output=str(settings.output),
        done_folder=str(settings.done),
        new=[it.rel for it in plan.new],
        changed=[it.rel for it in plan.changed],
        to_score=[it.rel for it in plan.to_score],
        to_move=[it.rel for it in (plan.to_move + plan.to_score if settings.move else [])],
        done=[it.rel for it in plan.done],
        known_errors=[it.rel for it in plan.known_errors],
        locked_by=holder.describe() if holder else None,
    )
