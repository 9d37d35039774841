"""A lock file that lets one scheduled run at a time work on a folder.

The lock is a small JSON file (pid, host, start time) created with ``O_CREAT | O_EXCL``,
so exactly one process wins. A lock left by a run that was killed (its pid is dead on this
host, or the pid now belongs to another process) is logged and cleared; a live one makes
the next run stop with :class:`~anomaly.errors.LockedError` before it touches anything.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from anomaly.errors import LockedError, OutputError

log = logging.getLogger(__name__)

# A lock file without readable content is a run caught between creating and writing it
# (microseconds) or one killed right there; only after this long is it taken to be the latter.
_UNREADABLE_GRACE_S = 10.0


@dataclass(frozen=True)
class LockInfo:
    """Who holds a lock.

    Attributes:
        pid: Process id of the holder.
        host: Host name of the holder.
        started_at: When the holder took the lock (ISO 8601, UTC).
        process_start: The holder's start time in clock ticks since boot (Linux
            ``/proc/<pid>/stat``), to tell a reused pid from the holder; None elsewhere.
    """

    pid: int
    host: str
    started_at: str
    process_start: int | None = None

    def describe(self) -> str:
        """Words for messages: ``pid 123 on host build-1 since 2026-01-01T02:00:00Z``."""
        return f"pid {self.pid} on host {self.host} since {self.started_at}"


def _process_start(pid: int) -> int | None:
    """Start time of ``pid`` in clock ticks since boot, or None where /proc is missing."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after the last ")".
    return int(stat.rsplit(")", 1)[1].split()[19])


def _alive(info: LockInfo) -> bool:
    """Whether the holder of a lock on this host is still running."""
    try:
        os.kill(info.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # a process of another user: it exists
    if info.process_start is not None:
        start = _process_start(info.pid)
        if start is not None and start != info.process_start:
            return False  # the pid was reused by a process started later
    return True


def read_lock(path: str | os.PathLike[str]) -> LockInfo | None:
    """The holder recorded in a lock file, or None when it is missing or unreadable."""
    try:
        payload = json.loads(Path(path).read_text(encoding="utf-8"))
        return LockInfo(
            pid=int(payload["pid"]),
            host=str(payload["host"]),
            started_at=str(payload["started_at"]),
            process_start=payload.get("process_start"),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def holder(path: str | os.PathLike[str]) -> LockInfo | None:
    """The live holder of a lock, or None when the lock is free or stale (nothing is changed).

    A holder on another host cannot be checked and counts as live.
    """
    path = Path(path)
    if not path.exists():
        return None
    info = read_lock(path)
    if info is None:
        return _unreadable(path)
    if info.host == socket.gethostname() and not _alive(info):
        return None
    return info


def _unreadable(path: Path) -> LockInfo | None:
    """An unreadable lock file: live while it is younger than the grace period."""
    try:
        age = time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return None
    if age > _UNREADABLE_GRACE_S:
        return None
    return LockInfo(pid=-1, host="unknown", started_at="just now (lock file being written)")


def _locked_error(path: Path, info: LockInfo) -> LockedError:
    return LockedError(
        f"{path} is held by {info.describe()}: another run is working on this folder, so this "
        "run did nothing. Wait for it to finish; if you are sure no such run is alive (e.g. "
        f"it ran on another host that crashed), delete {path} and start again"
    )


def acquire(path: str | os.PathLike[str]) -> LockInfo:
    """Take the lock, clearing a stale one.

    Args:
        path: The lock file (its folder is created).

    Returns:
        This process's entry in the lock.

    Raises:
        LockedError: A live process holds the lock; names the file, holder and the fix.
        OutputError: The lock file cannot be created (read-only folder, full disk).
    """
    path = Path(path)
    mine = LockInfo(
        pid=os.getpid(),
        host=socket.gethostname(),
        started_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        process_start=_process_start(os.getpid()),
    )
    data = (json.dumps(mine.__dict__) + "\n").encode()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create the lock folder {path.parent}: {exc.strerror}") from exc
    # Two attempts: the second follows the clearing of a stale lock.
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            live = holder(path)
            if live is not None:
                raise _locked_error(path, live) from None
            _clear_stale(path)
            continue
        except OSError as exc:
            raise OutputError(f"cannot create the lock file {path}: {exc.strerror}") from exc
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        return mine
    live = holder(path) or read_lock(path)
    if live is None:
        raise LockedError(f"{path} could not be taken; another run is starting. Try again")
    raise _locked_error(path, live)


def _clear_stale(path: Path) -> None:
    """Remove a stale lock without removing a fresh one another run just created.

    The stale file is first renamed aside (atomic: of two runs clearing it at once, one
    wins). If what was renamed turns out to be a live lock, created between our check and the
    rename, it is linked back into place.
    """
    aside = path.with_name(f"{path.name}.stale.{os.getpid()}")
    stale = read_lock(path)
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return  # another run cleared it first
    moved = read_lock(aside)
    if moved != stale and moved is not None and holder(aside) is not None:
        with contextlib.suppress(FileExistsError):
            os.link(aside, path)
        aside.unlink(missing_ok=True)
        return
    aside.unlink(missing_ok=True)
    log.warning(
        "cleared the stale lock %s left by %s (that process is no longer running)",
        path,
        stale.describe() if stale else "a run that was killed while taking it",
    )


def release(path: str | os.PathLike[str], info: LockInfo) -> None:
    """Remove the lock if it is still ours (never another run's)."""
    path = Path(path)
    current = read_lock(path)
    if current is not None and (current.pid, current.host) == (info.pid, info.host):
        path.unlink(missing_ok=True)


@contextlib.contextmanager
def locked(path: str | os.PathLike[str]) -> Iterator[LockInfo]:
    """Hold the lock at ``path`` for the duration of the block (see :func:`acquire`)."""
    info = acquire(path)
    try:
        yield info
    finally:
        release(path, info)
