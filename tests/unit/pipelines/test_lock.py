from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest

from anomaly.errors import LockedError
from anomaly.pipelines import lock


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def _write(path, pid: int, host: str | None = None) -> None:
    path.write_text(
        json.dumps(
            {"pid": pid, "host": host or socket.gethostname(), "started_at": "2026-01-01T02:00:00"}
        )
    )


def test_acquire_writes_holder_and_release_removes_it(tmp_path):
    path = tmp_path / "state" / "lock"
    info = lock.acquire(path)
    assert info.pid == os.getpid()
    assert lock.read_lock(path) == info
    assert lock.holder(path) == info
    lock.release(path, info)
    assert not path.exists()
    with lock.locked(path):
        assert path.exists()
    assert not path.exists()


def test_a_live_holder_refuses_the_lock_naming_file_pid_and_fix(tmp_path):
    path = tmp_path / "lock"
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        _write(path, sleeper.pid)
        before = path.read_text()
        with pytest.raises(LockedError) as caught:
            lock.acquire(path)
        message = str(caught.value)
        assert str(path) in message and f"pid {sleeper.pid}" in message
        assert "2026-01-01T02:00:00" in message and f"delete {path}" in message
        assert caught.value.exit_code == 6
        assert path.read_text() == before  # untouched
    finally:
        sleeper.kill()
        sleeper.wait()


def test_a_stale_lock_of_a_dead_pid_is_cleared_and_logged(tmp_path, caplog):
    path = tmp_path / "lock"
    dead = _dead_pid()
    _write(path, dead)
    assert lock.holder(path) is None
    with caplog.at_level("WARNING"):
        info = lock.acquire(path)
    assert info.pid == os.getpid() and lock.read_lock(path) == info
    assert f"pid {dead}" in caplog.text and "stale lock" in caplog.text
    assert not list(tmp_path.glob("lock.stale.*"))


def test_a_reused_pid_does_not_keep_a_lock_alive(tmp_path):
    path = tmp_path / "lock"
    mine = lock._process_start(os.getpid())
    if mine is None:
        pytest.skip("no /proc on this system")
    payload = {"pid": os.getpid(), "host": socket.gethostname(), "started_at": "x",
               "process_start": mine - 1}  # fmt: skip
    path.write_text(json.dumps(payload))
    assert lock.holder(path) is None


def test_a_lock_of_another_host_counts_as_live(tmp_path):
    path = tmp_path / "lock"
    _write(path, _dead_pid(), host="some-other-host")
    with pytest.raises(LockedError, match="some-other-host"):
        lock.acquire(path)


def test_release_never_removes_another_runs_lock(tmp_path):
    path = tmp_path / "lock"
    info = lock.acquire(path)
    _write(path, _dead_pid())  # e.g. cleared as stale and retaken by another run
    lock.release(path, info)
    assert path.exists()


def test_an_empty_lock_file_is_live_briefly_then_stale(tmp_path):
    path = tmp_path / "lock"
    path.touch()
    with pytest.raises(LockedError):
        lock.acquire(path)
    os.utime(path, (0, 0))  # long ago: the run died between creating and writing it
    assert lock.acquire(path).pid == os.getpid()
