"""Atomic file output: write to a temporary file in the same folder, then rename.

A crash (or a full disk) therefore never leaves a half-written CSV or PNG that looks
complete: readers see either the old file, no file, or the whole new file.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import os
import re
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any

import numpy as np

from anomaly.errors import ModelFolderError

_SUFFIX = ".tmp"
#: What :func:`atomic_open` names its temporary files: ``.<name>.`` plus ``mkstemp``'s
#: eight random characters, so a sweep never touches a file someone else put there.
_TEMPORARY_NAME = re.compile(r"\..+\.[a-z0-9_]{8}" + re.escape(_SUFFIX))


def process_umask() -> int:
    """The process's umask, read without changing it (Linux reports it in /proc).

    Elsewhere it is read by setting and restoring it, which is not safe against another
    thread creating a file in between; this package's writers run on Linux.
    """
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def default_file_mode() -> int:
    """The permissions :func:`open` gives a new file under the process's umask."""
    return 0o666 & ~process_umask()


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


@contextlib.contextmanager
def atomic_open(
    path: str | os.PathLike[str], mode: str = "w", *, durable: bool = True, **kwargs: Any
) -> Iterator[IO[Any]]:
    """Open a temporary sibling of ``path`` for writing and move it into place on success.

    Args:
        path: Final destination.
        mode: ``"w"`` (text) or ``"wb"`` (binary).
        durable: ``fsync`` before the rename, so the file also survives a power cut. The
            rename alone already protects against a crashed or killed process; per-image
            pictures skip the ``fsync``, which otherwise dominates scoring time.
        **kwargs: Passed to :func:`open` (e.g. ``newline=""`` for CSV).

    Yields:
        The open temporary file, with the permissions :func:`open` would give under the
        process's umask (0644 under 022). On an exception the temporary file is removed
        and the destination is left untouched.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open supports modes 'w' and 'wb', got {mode!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=_SUFFIX, dir=path.parent)
    try:
        # mkstemp makes 0600 whatever the umask: a results folder served to colleagues or a
        # model folder read by another service account needs what open() would give.
        os.fchmod(fd, default_file_mode())
        with os.fdopen(fd, mode, **kwargs) as handle:
            yield handle
            if durable:
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_text_atomic(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_open(path, "w", encoding="utf-8") as handle:
        handle.write(text)


def write_npz(path: str | os.PathLike[str], **arrays: Any) -> None:
    """Write arrays as an uncompressed ``.npz`` file, atomically (:func:`read_npz` reads it)."""
    with atomic_open(path, "wb") as handle:
        np.savez(handle, **arrays)


def write_json_atomic(path: str | os.PathLike[str], payload: Any) -> None:
    """Write ``payload`` as indented JSON (keys in insertion order) to ``path`` atomically."""
    write_text_atomic(path, json.dumps(payload, indent=2) + "\n")


def write_errors_csv(
    path: str | os.PathLike[str], errors: list[tuple[str | os.PathLike[str], str]]
) -> None:
    """``errors.csv``: one ``path,reason`` row per file that was skipped, written atomically."""
    with atomic_open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(("path", "reason"))
        writer.writerows((str(p), reason) for p, reason in errors)


def read_errors_csv(path: str | os.PathLike[str]) -> list[tuple[str, str]]:
    """The ``(path, reason)`` rows of an ``errors.csv``; none when the file does not exist."""
    path = Path(path)
    if not path.is_file():
        return []
    with path.open(newline="", encoding="utf-8") as handle:
        return [(row["path"], row["reason"]) for row in csv.DictReader(handle)]


def remove_leftover_temporaries(
    folder: str | os.PathLike[str], *, untouched_for_s: float | None = None
) -> None:
    """Remove the temporary files of :func:`atomic_open` writes a killed process left.

    A process killed between creating its temporary file and renaming it leaves the
    temporary file behind; it is never a complete result. Call this only where no live
    writer can be at work, or give ``untouched_for_s``.

    Args:
        folder: Searched with all its subfolders; a missing folder holds nothing.
        untouched_for_s: Only remove files not modified for this many seconds (a write in
            progress keeps its file fresh); ``None`` removes them whatever their age.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return
    cutoff = None if untouched_for_s is None else time.time() - untouched_for_s
    for leftover in folder.rglob(f".*{_SUFFIX}"):
        if not _TEMPORARY_NAME.fullmatch(leftover.name) or not leftover.is_file():
            continue
        with contextlib.suppress(FileNotFoundError):
            if cutoff is None or leftover.stat().st_mtime < cutoff:
                leftover.unlink()


def read_npz(
    path: str | os.PathLike[str],
    readers: Mapping[str, Callable[[np.ndarray], Any]],
    *,
    fix: str,
) -> dict[str, Any]:
    """The arrays of a model folder's ``.npz`` file, each passed through its reader.

    Args:
        path: The file.
        readers: For each array it must hold, what turns it into the value returned
            (``int``, ``float``, or a cast to a dtype).
        fix: What the error tells the user to do.

    Raises:
        ModelFolderError: Unreadable, an array missing, or one its reader refuses (names
            the file and ``fix``).
    """
    try:
        with np.load(path) as data:
            return {key: read(data[key]) for key, read in readers.items()}
    except (OSError, ValueError, KeyError, EOFError) as exc:
        raise ModelFolderError(f"{path} cannot be read ({exc}); {fix}") from exc
