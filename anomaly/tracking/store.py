"""The embedded MLflow store (a SQLite file): created whole or not at all.

MLflow builds a new SQLite store in place: it creates the tables, then runs some fifty
schema migrations, which takes seconds. A process killed in between (a timer's first run
stopped, a power cut, a Ctrl-C) leaves a file that every later run refuses as an
"out-of-date database schema", until someone runs ``mlflow db upgrade`` by hand.

So the store is built beside its target (``.mlflow.db.<pid>.tmp``) and renamed into place
once complete, under an exclusive lock (``.mlflow.db.lock``, released by the kernel even
when its holder is killed), so two first runs never race. A store found at another schema
version is handled under the same lock:

- one with runs, experiments or registered models (made by an older MLflow) is upgraded
  on a copy that replaces it once the upgrade succeeded; the original is kept beside it as
  ``mlflow.db.before-upgrade-<revision>``;
- one without anything in it (a creation cut short, by an older version of this package
  or by MLflow itself), or one whose upgrade fails, is set aside as
  ``mlflow.db.incomplete-<time>`` with a warning, and a new store takes its place.

Stores that are not SQLite files (a server, PostgreSQL) are left to their owners.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import logging
import os
import shutil
import sqlite3
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

from anomaly.errors import TrackingError

log = logging.getLogger(__name__)

_SQLITE_PREFIX = "sqlite:///"


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` tracking URI; None for any other store."""
    if not uri.startswith(_SQLITE_PREFIX):
        return None
    # sqlite:////abs/path.db is absolute, sqlite:///rel.db relative to the working folder.
    path = uri.removeprefix(_SQLITE_PREFIX).split("?", 1)[0]
    return None if path in ("", ":memory:") else Path(path)


def ensure_store(uri: str) -> None:
    """Make sure the SQLite store at ``uri`` exists, complete and at MLflow's schema.

    Does nothing for other stores, and only one read of about a millisecond when the
    store is ready.

    Raises:
        TrackingError: The store cannot be created, read or replaced (permissions, a full
            disk); the message names the file.
    """
    path = sqlite_path(uri)
    if path is None:
        return
    try:
        head = _head_revision()
        if _revision(path) != head:
            path.parent.mkdir(parents=True, exist_ok=True)
            with _locked(path):
                _prepare(path, head)
    except TrackingError:
        raise
    except (OSError, sqlite3.Error) as exc:
        raise TrackingError(
            f"MLflow store {path} cannot be prepared ({type(exc).__name__}: {exc}); check "
            "that its folder is writable and the disk has room, or set tracking.uri"
        ) from exc


def _prepare(path: Path, head: str) -> None:
    """Under the lock: create, upgrade or replace the store so that it is at ``head``."""
    _remove_leftovers(path)
    if not path.exists():
        _create(path)
        return
    revision = _revision(path, writable=True)
    if revision == head:
        return  # another process finished it while we waited for the lock
    if revision is not None and _holds_data(path):
        try:
            _upgrade(path, revision)
            return
        except Exception as exc:  # any failure: keep the data, start anew
            aside = _set_aside(path)
            log.warning(
                "MLflow store %s (schema %s) could not be upgraded (%s); it was moved to %s "
                "with its runs, and a new store was created. Upgrade the old one by hand "
                "with `mlflow db upgrade sqlite:///%s` to read it again.",
                path,
                revision,
                exc,
                aside,
                aside,
            )
    else:
        aside = _set_aside(path)
        log.warning(
            "MLflow store %s is half-made or unreadable (schema %s; no runs, experiments or "
            "models could be read from it), as a run stopped while creating it leaves it; "
            "it was moved to %s and a new store was created.",
            path,
            revision or "missing",
            aside,
        )
    _create(path)


@functools.cache
def _head_revision() -> str:
    from mlflow.store.db.utils import _get_latest_schema_revision

    return _get_latest_schema_revision()


def _revision(path: Path, *, writable: bool = False) -> str | None:
    """The schema revision stamped in the store; None when missing or unreadable.

    The quick check before the lock reads only. Under the lock, ``writable`` lets SQLite
    roll back the journal a killed writer left, so a store with runs is not mistaken for
    a broken one.
    """
    if not path.is_file():
        return None
    try:
        mode = "rw" if writable else "ro"
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode={mode}", uri=True)) as db:
            row = db.execute("SELECT version_num FROM alembic_version").fetchone()
    except sqlite3.Error:
        return None
    return row[0] if row else None


def _holds_data(path: Path) -> bool:
    """True when the store has anything a person made: runs, models, own experiments."""
    queries = (
        "SELECT 1 FROM runs LIMIT 1",
        "SELECT 1 FROM registered_models LIMIT 1",
        "SELECT 1 FROM experiments WHERE experiment_id != 0 LIMIT 1",
    )
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        for query in queries:
            try:
                if db.execute(query).fetchone():
                    return True
            except sqlite3.Error:
                continue  # the table was never created
    return False


def _temporary(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def _create(path: Path) -> None:
    """Build a complete store beside ``path`` and rename it into place."""
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    log.info("creating the MLflow store %s (first run here; a few seconds)", path)
    temporary = _temporary(path)
    artifacts = (path.parent / "artifacts").resolve().as_uri()
    store = SqlAlchemyStore(f"{_SQLITE_PREFIX}{temporary}", artifacts)
    store.engine.dispose()
    _commit(temporary, path)


def _upgrade(path: Path, revision: str) -> None:
    """Upgrade a copy of the store to MLflow's schema; it replaces the store once done."""
    import sqlalchemy
    from mlflow.store.db.utils import _upgrade_db, _verify_schema

    temporary = _temporary(path)
    shutil.copy2(path, temporary)
    engine = sqlalchemy.create_engine(f"{_SQLITE_PREFIX}{temporary}")
    try:
        _upgrade_db(engine)
        _verify_schema(engine)
    except BaseException:
        _remove_leftovers(path)
        raise
    finally:
        engine.dispose()
    backup = path.with_name(f"{path.name}.before-upgrade-{revision}")
    with contextlib.suppress(FileExistsError):
        os.link(path, backup)
    _commit(temporary, path)
    log.warning(
        "MLflow store %s was at schema %s and has been upgraded to this MLflow's schema; "
        "the original is kept as %s",
        path,
        revision,
        backup,
    )


def _commit(temporary: Path, path: Path) -> None:
    """Flush ``temporary`` to disk and rename it to ``path`` (atomic on one file system)."""
    _fsync(temporary)
    os.replace(temporary, path)
    _fsync(path.parent)  # the rename itself


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _set_aside(path: Path) -> Path:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    aside = path.with_name(f"{path.name}.incomplete-{stamp}")
    os.replace(path, aside)
    for suffix in ("-journal", "-wal", "-shm"):
        side = path.with_name(path.name + suffix)
        if side.exists():
            os.replace(side, aside.with_name(aside.name + suffix))
    return aside


def _remove_leftovers(path: Path) -> None:
    """Remove the temporary stores of creations that were killed (we hold the lock)."""
    for leftover in path.parent.glob(f".{path.name}.*.tmp*"):
        with contextlib.suppress(FileNotFoundError):
            leftover.unlink()


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold the store's creation lock (waits for another process creating it)."""
    lock = path.with_name(f".{path.name}.lock")
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
