"""Atomic file output: write to a temporary file in the same folder, then rename.

A crash (or a full disk) therefore never leaves a half-written CSV or PNG that looks
complete: readers see either the old file, no file, or the whole new file.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any


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
        The open temporary file. On an exception the temporary file is removed and the
        destination is left untouched.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open supports modes 'w' and 'wb', got {mode!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
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


def write_json_atomic(path: str | os.PathLike[str], payload: Any) -> None:
    """Write ``payload`` as indented JSON (keys in insertion order) to ``path`` atomically."""
    write_text_atomic(path, json.dumps(payload, indent=2) + "\n")
