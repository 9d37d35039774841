from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from anomaly.io import sha256_file
from anomaly.pipelines.manifest import Key, Manifest


def _rec(path: str, sha: str, **extra) -> dict:
    return {"path": path, "sha256": sha, "status": "ok", **extra}


def test_records_survive_a_reopen_in_commit_order(tmp_path):
    path = tmp_path / "m.jsonl"
    manifest = Manifest.open(path)
    manifest.append([_rec("a.png", "1", score=0.5), _rec("b.png", "2", score=float("nan"))])
    manifest.append([_rec("c.png", "3")])
    manifest.close()
    again = Manifest.load(path)
    assert [r["path"] for r in again.records] == ["a.png", "b.png", "c.png"]
    assert again.get(Key("a.png", "1"))["score"] == 0.5
    assert again.get(Key("a.png", "2")) is None
    assert again.paths() == {"a.png", "b.png", "c.png"}
    assert path.read_bytes().count(b"\n") == 3


def test_a_torn_last_line_is_dropped_and_cut_off_before_the_next_append(tmp_path, caplog):
    path = tmp_path / "m.jsonl"
    manifest = Manifest.open(path)
    manifest.append([_rec("a.png", "1")])
    manifest.close()
    whole = path.read_bytes()
    line = (json.dumps(_rec("b.png", "2"), separators=(",", ":")) + "\n").encode()
    path.write_bytes(whole + line[: len(line) // 2])
    with caplog.at_level("WARNING"):
        loaded = Manifest.load(path)
    assert [r["path"] for r in loaded.records] == ["a.png"] and loaded.dropped > 0
    assert "torn line" in caplog.text
    assert path.read_bytes() != whole  # load alone changes nothing
    manifest = Manifest.open(path)
    manifest.append([_rec("b.png", "2")])
    manifest.close()
    assert [r["path"] for r in Manifest.load(path).records] == ["a.png", "b.png"]
    assert path.read_bytes() == whole + line


def test_a_kill_in_the_middle_of_a_line_leaves_only_whole_records(tmp_path):
    path = tmp_path / "m.jsonl"
    script = f"""
import os, signal
from anomaly.pipelines.manifest import Manifest
m = Manifest.open({str(path)!r})
m.append([{{"path": "a.png", "sha256": "1", "status": "ok"}}])
m.append([{{"path": "b.png", "sha256": "2", "status": "ok"}},
          {{"path": "c.png", "sha256": "3", "status": "ok", "note": "x" * 200}}],
         _split=lambda rest: os.kill(os.getpid(), signal.SIGKILL))
"""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    result = subprocess.run([sys.executable, "-c", script], env=env, timeout=120)
    assert result.returncode == -9
    assert not path.read_bytes().endswith(b"\n")
    records = Manifest.load(path).records
    # b.png's line is whole, c.png's is torn.
    assert [r["path"] for r in records] == ["a.png", "b.png"]


def test_a_garbled_whole_line_is_skipped_with_its_line_number(tmp_path, caplog):
    path = tmp_path / "m.jsonl"
    path.write_text('{"path": "a.png", "sha256": "1", "status": "ok"}\nnot json\n[1]\n')
    with caplog.at_level("WARNING"):
        assert [r["path"] for r in Manifest.load(path).records] == ["a.png"]
    assert "line 2" in caplog.text and "line 3" in caplog.text


def test_append_needs_open(tmp_path):
    with pytest.raises(RuntimeError):
        Manifest.load(tmp_path / "m.jsonl").append([_rec("a", "1")])


def test_sha256_of_bytes(tmp_path):
    (tmp_path / "x").write_bytes(b"abc")
    assert sha256_file(tmp_path / "x") == (
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    )
