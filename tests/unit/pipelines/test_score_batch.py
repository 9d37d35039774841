"""The planning half of score_batch (no model): what is new, changed, done; moving files."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest
from omegaconf import OmegaConf

from anomaly.errors import ConfigError
from anomaly.io import sha256_file
from anomaly.pipelines.manifest import Manifest
from anomaly.pipelines.score_batch import (
    DONE_ORPHAN_AGE_S,
    move_file,
    plan_run,
    remove_orphans,
    settings_from,
)
from tests.conftest import killed_atomic_write, write_png


def _cfg(inbox_dir, **overrides):
    base = {
        "model_uri": "models:/anomaly@champion",
        "inbox": str(inbox_dir),
        "output": "${inbox}/../results",
        "state": "${inbox}/.score_batch",
        "processed": "keep",
        "done": "${inbox}/../done",
        "dry_run": False,
        "log_idle_runs": True,
        "scoring": {"batch_size": 4, "num_workers": 0},
    }
    return OmegaConf.create({**base, **overrides})


def _image(path, value):
    return write_png(path, np.full((16, 16), value, np.uint8))


def test_settings_resolve_the_default_folders_beside_the_inbox(tmp_path):
    (tmp_path / "inbox").mkdir()
    settings = settings_from(_cfg(tmp_path / "inbox"))
    assert settings.output == tmp_path / "results" and settings.done == tmp_path / "done"
    assert settings.state == tmp_path / "inbox" / ".score_batch" and not settings.move


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"inbox": "/no/such/inbox"}, "inbox=/no/such/inbox does not exist"),
        ({"processed": "delete"}, "processed=delete is not valid"),
        ({"output": "${inbox}/results"}, "lies inside inbox="),
        ({"processed": "move", "done": "${inbox}/done"}, "choose a done folder outside"),
    ],
)
def test_bad_settings_are_config_errors_naming_the_key(tmp_path, overrides, expected):
    (tmp_path / "inbox").mkdir()
    with pytest.raises(ConfigError, match=expected):
        settings_from(_cfg(tmp_path / "inbox", **overrides))


def test_plan_new_changed_done_and_known_errors(tmp_path):
    inbox = tmp_path / "inbox"
    a, b = _image(inbox / "a.png", 10), _image(inbox / "sub" / "b.png", 20)
    bad = inbox / "bad.png"
    bad.write_bytes(b"junk")
    settings = settings_from(_cfg(inbox, processed="move"))
    manifest = Manifest.open(settings.state / "manifest.jsonl")
    manifest.append(
        [
            {"path": "a.png", "sha256": sha256_file(a), "status": "ok"},
            {"path": "sub/b.png", "sha256": "old", "status": "ok"},
            {"path": "bad.png", "sha256": sha256_file(bad), "status": "error"},
        ]
    )
    _image(inbox / "c.png", 30)
    plan = plan_run(settings, manifest)
    assert [i.rel for i in plan.new] == ["c.png"]
    assert [i.rel for i in plan.changed] == ["sub/b.png"]
    assert [i.rel for i in plan.done] == ["a.png"] == [i.rel for i in plan.to_move]
    assert [i.rel for i in plan.known_errors] == ["bad.png"]
    assert [i.rel for i in plan.to_score] == ["c.png", "sub/b.png"]
    # A fixed file (new content) is retried.
    _image(bad, 40)
    assert "bad.png" in [i.rel for i in plan_run(settings, manifest).changed]
    assert b.exists()


def test_move_file_never_overwrites(tmp_path):
    src = _image(tmp_path / "in" / "a.png", 1)
    sha = sha256_file(src)
    dest = move_file(src, tmp_path / "done" / "a.png", sha256=sha)
    assert dest == tmp_path / "done" / "a.png" and not src.exists()
    # Same name, other content: kept beside it under its hash.
    other = _image(tmp_path / "in" / "a.png", 2)
    sha2 = sha256_file(other)
    dest2 = move_file(other, tmp_path / "done" / "a.png", sha256=sha2)
    assert dest2.name == f"a.{sha2[:12]}.png" and sha256_file(dest) == sha
    # Same content already there (an interrupted move): the source just goes.
    again = _image(tmp_path / "in" / "a.png", 1)
    assert move_file(again, tmp_path / "done" / "a.png", sha256=sha) == dest
    assert not again.exists() and len(os.listdir(tmp_path / "done")) == 2


def test_orphans_of_killed_writes_are_removed_and_nothing_else(tmp_path):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    settings = settings_from(_cfg(inbox, processed="move"))
    killed = [
        settings.output / "scores.csv",
        settings.output / "runs" / "2026-11-26T10-54-53Z_10618" / "new_scores.csv",
        settings.output / "masks" / "sub" / "a.png",
        settings.done / "a.png",
    ]
    for path in killed:
        killed_atomic_write(path)
    orphans = sorted(p for f in (settings.output, settings.done) for p in f.rglob("*.tmp"))
    assert len(orphans) == len(killed)
    # The done folder may be shared with another inbox's run: only old orphans go there.
    old = time.time() - DONE_ORPHAN_AGE_S - 60
    for orphan in settings.done.rglob("*.tmp"):
        os.utime(orphan, (old, old))
    killed_atomic_write(settings.done / "b.png")
    in_flight = next(settings.done.glob(".b.png.*.tmp"))
    theirs = [settings.output / "notes.tmp", settings.done / ".keep.tmp", inbox / ".x.abcdefgh.tmp"]
    for path in theirs:
        path.write_text("not ours")
        os.utime(path, (old, old))

    remove_orphans(settings)

    assert not any(p.exists() for p in orphans)
    assert in_flight.exists()
    assert all(p.read_text() == "not ours" for p in theirs)


def test_without_move_the_done_folder_is_not_touched(tmp_path):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    settings = settings_from(_cfg(inbox))
    killed_atomic_write(settings.done / "a.png")
    (orphan,) = settings.done.glob(".a.png.*.tmp")
    old = time.time() - DONE_ORPHAN_AGE_S - 60
    os.utime(orphan, (old, old))
    remove_orphans(settings)
    assert orphan.exists()


def test_plan_answers_for_every_visible_file_but_not_the_state_folder(tmp_path):
    inbox = tmp_path / "inbox"
    _image(inbox / "a.png", 10)
    (inbox / "clip.gif").write_bytes(b"GIF89a")
    (inbox / "sub").mkdir()
    (inbox / "sub" / "notes.txt").write_text("not a photo\n")
    (inbox / ".DS_Store").write_bytes(b"\x00")
    # A visible state folder inside the inbox (state= set by hand): its lock and
    # manifest are not inbox files.
    settings = settings_from(_cfg(inbox, state="${inbox}/state"))
    manifest = Manifest.open(settings.state / "manifest.jsonl")
    (settings.state / "lock").write_text("1234\n")
    gif = inbox / "clip.gif"
    assert [i.rel for i in plan_run(settings, manifest).new] == [
        "a.png", "clip.gif", "sub/notes.txt"
    ]  # fmt: skip
    # Refused once (an error record), a file is known and not retried until it changes.
    manifest.append([{"path": "clip.gif", "sha256": sha256_file(gif), "status": "error"}])
    plan = plan_run(settings, manifest)
    assert [i.rel for i in plan.known_errors] == ["clip.gif"]
    gif.write_bytes(b"GIF89a, another export")
    assert [i.rel for i in plan_run(settings, manifest).changed] == ["clip.gif"]
    manifest.close()
