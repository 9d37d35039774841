"""The manifest of a scheduled scoring pipeline: what has been done, safe against SIGKILL.

One JSON object per line, appended and ``fsync``-ed, keyed by the image's path (relative to
the inbox) and the sha256 of its bytes. An image counts as done exactly when its line is in
the file, so the manifest is the single source of truth from which ``scores.csv`` and
``errors.csv`` are rebuilt.

Every append is one ``write`` of whole lines. A process killed during it leaves at most a
torn last line (no newline at its end); :meth:`Manifest.open` drops it (with a warning)
and cuts the file back to the last whole line, so the next append starts on a clean line.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from anomaly.errors import OutputError

log = logging.getLogger(__name__)

#: Status of a record: the image was scored, or it could not be read.
OK, ERROR = "ok", "error"


@dataclass(frozen=True)
class Key:
    """Identity of one image version: its path relative to the inbox and its content hash."""

    path: str
    sha256: str


def _key(record: Mapping[str, Any]) -> Key:
    return Key(str(record["path"]), str(record["sha256"]))


class Manifest:
    """Records of every image a pipeline has finished (scored, or found unreadable).

    Use :meth:`load` to read (no changes to the file) and :meth:`open` to read and append.

    Attributes:
        path: The JSON-lines file.
        records: Every record, in the order they were committed.
        dropped: Bytes of a torn last line that were dropped on loading.
    """

    def __init__(self, path: Path, records: list[dict[str, Any]], good_bytes: int, dropped: int):
        self.path = path
        self.records = records
        self.dropped = dropped
        self._good_bytes = good_bytes
        self._by_key = {_key(r): r for r in records}
        self._fd: int | None = None

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Manifest:
        """Read a manifest (an empty one when the file does not exist yet).

        A last line without its newline is a write that was cut short: it is left out. A
        whole line that is not a JSON object (edited by hand?) is left out with a warning
        naming its line number.
        """
        path = Path(path)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return cls(path, [], 0, 0)
        end = data.rfind(b"\n") + 1
        records = []
        for number, line in enumerate(data[:end].splitlines(), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                _key(record)
            except (ValueError, KeyError, TypeError):
                log.warning("%s line %d is not a manifest record; ignored", path, number)
                continue
            records.append(record)
        if end < len(data):
            log.warning(
                "%s ends in a torn line (%d bytes, a run was killed while writing it); dropped: "
                "its image is scored again",
                path,
                len(data) - end,
            )
        return cls(path, records, end, len(data) - end)

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> Manifest:
        """Load a manifest for appending, cutting a torn last line off the file first.

        Only the holder of the pipeline's lock may call this.

        Raises:
            OutputError: The file cannot be created or written.
        """
        manifest = cls.load(path)
        try:
            manifest.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(manifest.path, os.O_CREAT | os.O_WRONLY | os.O_APPEND, 0o644)
            if manifest.dropped:
                os.ftruncate(fd, manifest._good_bytes)
                os.fsync(fd)
        except OSError as exc:
            raise OutputError(f"cannot write the manifest {manifest.path}: {exc.strerror}") from exc
        manifest._fd = fd
        return manifest

    def get(self, key: Key) -> dict[str, Any] | None:
        """The record of one image version, or None when it was never finished."""
        return self._by_key.get(key)

    def paths(self) -> set[str]:
        """Every path that has at least one record."""
        return {k.path for k in self._by_key}

    def append(
        self,
        records: Iterable[Mapping[str, Any]],
        *,
        _split: Callable[[bytes], None] | None = None,
    ) -> None:
        """Commit records: one write of whole lines, then ``fsync``.

        Args:
            records: Each needs ``path`` and ``sha256``; everything else is free-form JSON.
            _split: Test hook: called with the rest of the bytes after everything up to the
                middle of the last line was written and synced, to stop a run there.

        Raises:
            OutputError: The write failed (disk full); the file is cut back to its last whole
                record, so none of these records counts as done.
        """
        if self._fd is None:
            raise RuntimeError("Manifest.append needs Manifest.open, not Manifest.load")
        records = [dict(r) for r in records]
        if not records:
            return
        data = "".join(json.dumps(r, separators=(",", ":")) + "\n" for r in records).encode()
        try:
            view = memoryview(data)
            if _split is not None:
                last = len(data) - data.rstrip(b"\n").rfind(b"\n") - 1
                half = len(data) - last // 2
                os.write(self._fd, view[:half])
                os.fsync(self._fd)
                _split(data[half:])
                view = view[half:]
            while view:
                view = view[os.write(self._fd, view) :]
            os.fsync(self._fd)
        except OSError as exc:
            # When even this fails, the loader drops the torn line on the next run.
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, self._good_bytes)
            raise OutputError(f"cannot write the manifest {self.path}: {exc.strerror}") from exc
        self._good_bytes += len(data)
        self.records.extend(records)
        for record in records:
            self._by_key[_key(record)] = record

    def close(self) -> None:
        """Close the file (appending is no longer possible)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
