"""`anomaly score-batch` end to end: a real MLflow server, a registered champion model,
reruns, kills at chosen points, lock contention, bad files, moves and dry runs."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from PIL import Image

from tests.conftest import make_tiny_mvtec, stripes, write_png
from tests.integration.conftest import list_artifacts, mlflow_server, run_cli, stop_server

pytestmark = pytest.mark.integration
MODEL_NAME = "batch-part"
EXPERIMENT = "score-batch"


@pytest.fixture(scope="module")
def champion(tmp_path_factory, shared_mlflow_server):
    """A tiny model trained for one epoch, registered and promoted to champion."""
    uri = shared_mlflow_server
    work = tmp_path_factory.mktemp("work")
    root = make_tiny_mvtec(work / "data")
    trained = run_cli(
        "train", f"data.root={root}", "data.image_size=32", "data.val_fraction=0.25",
        "trainer.max_epochs=1", "trainer.progress_bar=false",
        f"tracking.registered_model={MODEL_NAME}", f"output_dir={work / 'train'}",
        f"tracking.uri={uri}", cwd=work,
    )  # fmt: skip
    assert trained.returncode == 0, trained.stdout + trained.stderr
    promoted = run_cli("promote", f"name={MODEL_NAME}", "version=1", f"tracking.uri={uri}",
                       cwd=work)  # fmt: skip
    assert promoted.returncode == 0, promoted.stdout + promoted.stderr
    return {"uri": uri, "work": work}


def _args(champion, inbox: Path, *extra: str) -> list[str]:
    return [
        "score-batch",
        f"inbox={inbox}",
        f"model=models:/{MODEL_NAME}@champion",
        f"tracking.uri={champion['uri']}",
        f"tracking.experiment={EXPERIMENT}",
        "scoring.batch_size=2",
        *extra,
    ]


def _batch(champion, inbox: Path, *extra: str) -> subprocess.CompletedProcess:
    result = run_cli(*_args(champion, inbox, *extra), cwd=champion["work"])
    assert "Traceback" not in result.stdout + result.stderr, result.stdout + result.stderr
    return result


def _fill(inbox: Path, names: list[str], seed: int) -> None:
    """32x32 stripe images; every third one has a bright square 'defect'."""
    rng = np.random.default_rng(seed)
    for k, name in enumerate(names):
        image = stripes(32, rng)
        if k % 3 == 2:
            image[10:18, 10:18] = 1.0
        write_png(inbox / name, image)


def _rows(output: Path) -> list[dict[str, str]]:
    with open(output / "scores.csv", newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _runs(champion) -> list:
    client = MlflowClient(champion["uri"])
    experiment = client.get_experiment_by_name(EXPERIMENT)
    if experiment is None:
        return []
    return client.search_runs(
        [experiment.experiment_id], "tags.`anomaly.kind` = 'score_batch'", max_results=1000
    )


def _same_results(got: list[dict[str, str]], expected: list[dict[str, str]]) -> None:
    """Same rows (path, hash, verdict; scores within 1e-6), none twice."""
    keys = [(r["path"], r["sha256"]) for r in got]
    assert len(keys) == len(set(keys)), "an image was counted twice"
    by_key = {(r["path"], r["sha256"]): r for r in got}
    assert set(by_key) == {(r["path"], r["sha256"]) for r in expected}, "an image was lost"
    for row in expected:
        mine = by_key[(row["path"], row["sha256"])]
        assert float(mine["score"]) == pytest.approx(float(row["score"]), rel=1e-6, abs=1e-9)
        assert mine["is_defective"] == row["is_defective"]
        assert mine["n_regions"] == row["n_regions"]


def _pictures_complete(output: Path, rows: list[dict[str, str]]) -> None:
    for row in rows:
        for kind in ("masks", "heatmaps", "overlays"):
            with Image.open(output / kind / Path(row["path"]).with_suffix(".png")) as picture:
                picture.load()
    assert not list(output.rglob("*.tmp"))


def _env() -> dict[str, str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    return env


def _start(champion, inbox: Path, log: Path, *extra: str, pause: str | None = None):
    handle = open(log, "w")  # noqa: SIM115 - closed by _kill
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "anomaly",
            *_args(champion, inbox, *extra),
            *([f"debug.pause_at={pause}"] if pause else []),
        ],
        cwd=champion["work"],
        stdout=handle,
        stderr=subprocess.STDOUT,
        env=_env(),
    )
    process.log_handle = handle
    return process


def _wait_for(process, log: Path, condition, what: str) -> None:
    deadline = time.monotonic() + 180
    while not condition():
        assert process.poll() is None, f"ended before {what}:\n" + log.read_text()[-3000:]
        assert time.monotonic() < deadline, f"no {what}:\n" + log.read_text()[-3000:]
        time.sleep(0.05)


def _kill(process) -> None:
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)
    process.log_handle.close()


def _manifest_lines(inbox: Path) -> int:
    path = inbox / ".score_batch" / "manifest.jsonl"
    return path.read_bytes().count(b"\n") if path.exists() else 0


def test_reruns_score_only_new_and_changed_images(champion, tmp_path):
    inbox, output = tmp_path / "inbox", tmp_path / "results"
    _fill(inbox, [f"{i:02d}.png" for i in range(5)], seed=1)
    first = _batch(champion, inbox)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "scored 5 new image(s)" in first.stdout
    rows = _rows(output)
    assert sorted(r["path"] for r in rows) == [f"{i:02d}.png" for i in range(5)]
    assert {r["model_version"] for r in rows} == {"1"} and all(r["sha256"] for r in rows)
    assert {r["threshold"] for r in rows} and all(r["scored_at"] for r in rows)
    _pictures_complete(output, rows)
    assert "score_batch: 5 new" in (output / "logs" / "score_batch.log").read_text()
    before = (output / "scores.csv").read_bytes()

    second = _batch(champion, inbox)
    assert second.returncode == 0 and "scored 0 new image(s)" in second.stdout
    assert "5 already done" in second.stdout
    assert (output / "scores.csv").read_bytes() == before

    # A stale lock (its run was SIGKILLed) does not block the next run.
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lock = inbox / ".score_batch" / "lock"
    lock.write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname(),
                                "started_at": "2026-01-01T00:00:00+00:00"}))  # fmt: skip
    _fill(inbox, ["05.png"], seed=2)
    third = _batch(champion, inbox)
    assert third.returncode == 0, third.stdout + third.stderr
    assert "scored 1 new image(s)" in third.stdout and "cleared the stale lock" in third.stdout
    assert not lock.exists()
    rows = _rows(output)
    assert len(rows) == 6 and rows[-1]["path"] == "05.png"

    # A changed image is scored again: a second row for its path, with the new hash.
    _fill(inbox, ["01.png"], seed=3)
    fourth = _batch(champion, inbox)
    assert fourth.returncode == 0 and "scored 1 new image(s) (1 changed)" in fourth.stdout
    rows = _rows(output)
    assert len(rows) == 7 and [r["path"] for r in rows].count("01.png") == 2
    assert len({r["sha256"] for r in rows if r["path"] == "01.png"}) == 2

    # The idle second run logged no MLflow run (log_idle_runs=false): no empty runs.
    runs = sorted(_runs(champion), key=lambda r: r.info.start_time)[-3:]
    assert [int(r.data.metrics["images_scored"]) for r in runs] == [5, 1, 1]
    assert runs[0].data.tags["model.version"] == "1"
    assert runs[0].data.params["inbox"] == str(inbox)
    assert "images_per_second" in runs[0].data.metrics and "seconds" in runs[0].data.metrics
    artifacts = list_artifacts(MlflowClient(champion["uri"]), runs[0].info.run_id)
    assert artifacts.get("new_scores.csv", 0) > 0
    # The run's report: its 5 images (not the later runs'), pictures linked from two up.
    assert artifacts.get("report.html", 0) > 0
    reports = [p.read_text(encoding="utf-8") for p in (output / "runs").glob("*/report.html")]
    assert len(reports) == 3  # a folder of its own for each run that scored, even within a second
    (report,) = [page for page in reports if "5 files: 5 judged" in page]
    assert "../../overlays/" in report
    assert "report:" in first.stdout
    # Each run's batch is its input: the files it scored, with a digest of their contents.
    batches = [r.inputs.dataset_inputs for r in runs]
    assert [len(b) for b in batches] == [1, 1, 1]
    (first_batch,), (_,), (changed,) = batches
    assert first_batch.dataset.name == "inbox/scoring"
    assert {t.key: t.value for t in first_batch.tags} == {
        "mlflow.data.context": "scoring",
        "files": "5",
    }
    assert artifacts.get("datasets/scoring.csv", 0) > 0
    assert changed.dataset.digest != first_batch.dataset.digest


def test_killed_runs_resume_without_losing_or_repeating_an_image(champion, tmp_path):
    names = [f"{i:02d}.png" for i in range(10)]
    reference, inbox = tmp_path / "reference" / "inbox", tmp_path / "killed" / "inbox"
    _fill(reference, names, seed=4)
    shutil.copytree(reference, inbox)
    done = _batch(champion, reference)
    assert done.returncode == 0, done.stdout + done.stderr
    expected = _rows(reference.parent / "results")
    assert len(expected) == 10

    log = tmp_path / "run.log"
    runs_before = len(_runs(champion))
    # 1: stopped after writing the second batch's pictures, before committing them.
    process = _start(champion, inbox, log, pause="after_pictures:2")
    _wait_for(process, log, lambda: "paused at after_pictures:2" in log.read_text(), "pause")
    # Meanwhile the lock keeps a second run out: exit 6, naming the lock, doing nothing.
    lines = _manifest_lines(inbox)
    blocked = _batch(champion, inbox)
    assert blocked.returncode == 6, blocked.stdout + blocked.stderr
    lock = inbox / ".score_batch" / "lock"
    assert str(lock) in blocked.stdout and f"pid {process.pid}" in blocked.stdout
    assert _manifest_lines(inbox) == lines == 2
    _kill(process)
    assert lock.exists()  # left behind by the killed run: stale from now on
    assert len(_runs(champion)) == runs_before + 1  # only the killed run's, none for the blocked

    # 2: in the middle of writing the manifest lines of a batch.
    process = _start(champion, inbox, log, pause="mid_commit:1")
    _wait_for(process, log, lambda: "paused at mid_commit:1" in log.read_text(), "pause")
    _kill(process)
    assert not (inbox / ".score_batch" / "manifest.jsonl").read_bytes().endswith(b"\n")
    # 3: after a commit, before anything else.
    process = _start(champion, inbox, log, pause="after_commit:1")
    _wait_for(process, log, lambda: "paused at after_commit:1" in log.read_text(), "pause")
    _kill(process)
    # 4: at an arbitrary moment: as soon as two more images are committed.
    lines = _manifest_lines(inbox)
    assert 2 < lines < 8
    process = _start(champion, inbox, log)
    _wait_for(process, log, lambda: _manifest_lines(inbox) >= lines + 2, "commit")
    _kill(process)

    final = _batch(champion, inbox)
    assert final.returncode == 0, final.stdout + final.stderr
    output = inbox.parent / "results"
    rows = _rows(output)
    _same_results(rows, expected)
    _pictures_complete(output, rows)
    # Each image was committed exactly once across all the runs.
    records = [
        json.loads(line)
        for line in (inbox / ".score_batch" / "manifest.jsonl").read_text().splitlines()
    ]
    assert sorted(r["path"] for r in records) == names
    again = _batch(champion, inbox)
    assert again.returncode == 0 and "scored 0 new image(s)" in again.stdout


def test_a_bad_image_is_listed_and_the_rest_scored(champion, tmp_path):
    inbox, output = tmp_path / "inbox", tmp_path / "results"
    _fill(inbox, ["a.png", "b.png", "c.png"], seed=5)
    (inbox / "broken.png").write_bytes(b"not a picture")
    result = _batch(champion, inbox)
    assert result.returncode == 5, result.stdout + result.stderr
    assert "1 skipped (unreadable)" in result.stdout and "errors.csv" in result.stdout
    assert sorted(r["path"] for r in _rows(output)) == ["a.png", "b.png", "c.png"]
    with open(output / "errors.csv", newline="", encoding="utf-8") as handle:
        errors = list(csv.DictReader(handle))
    assert [e["path"] for e in errors] == ["broken.png"]
    assert "not a readable image" in errors[0]["reason"]
    # Unchanged, it is not retried (exit 0); once replaced by a real image, it is scored.
    again = _batch(champion, inbox)
    assert again.returncode == 0 and "scored 0 new image(s)" in again.stdout
    _fill(inbox, ["broken.png"], seed=6)
    fixed = _batch(champion, inbox)
    assert fixed.returncode == 0 and "scored 1 new image(s) (1 changed)" in fixed.stdout
    assert "broken.png" in [r["path"] for r in _rows(output)]


def test_processed_move_moves_committed_images_even_after_a_kill(champion, tmp_path):
    inbox, done, output = tmp_path / "inbox", tmp_path / "archive", tmp_path / "out"
    _fill(inbox, ["a.png", "sub/b.png", "sub/c.png", "d.png"], seed=7)
    (inbox / "broken.png").write_bytes(b"")
    extra = ("processed=move", f"done={done}", f"output={output}")
    log = tmp_path / "run.log"
    process = _start(champion, inbox, log, *extra, pause="after_commit:1")
    _wait_for(process, log, lambda: "paused at after_commit:1" in log.read_text(), "pause")
    _kill(process)
    # Committed but not moved yet: the dry run says it would move them.
    dry = _batch(champion, inbox, *extra, "--dry-run")
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert f"would move to {done}: 4" in dry.stdout  # a.png committed + 3 still to score
    result = _batch(champion, inbox, *extra)
    assert result.returncode == 0, result.stdout + result.stderr
    assert sorted(p.relative_to(done).as_posix() for p in done.rglob("*.png")) == [
        "a.png", "d.png", "sub/b.png", "sub/c.png",
    ]  # fmt: skip
    assert sorted(p.name for p in inbox.rglob("*.png")) == ["broken.png"]  # the bad one stays
    assert len(_rows(output)) == 4
    # The reports say where the photos went, so a review applied later finds them.
    pages = "".join(p.read_text(encoding="utf-8") for p in output.glob("runs/*/report.html"))
    assert json.dumps(str(done / "sub" / "b.png"))[1:-1] in pages
    again = _batch(champion, inbox, *extra)
    assert again.returncode == 0 and "scored 0 new image(s)" in again.stdout
    assert "; moved" not in again.stdout and len(_rows(output)) == 4


def test_dry_run_lists_and_changes_nothing(champion, tmp_path):
    inbox, output = tmp_path / "inbox", tmp_path / "results"
    _fill(inbox, ["a.png", "b.png"], seed=8)
    runs_before = len(_runs(champion))
    result = _batch(champion, inbox, "--dry-run")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "would score (new): 2" in result.stdout and "a.png" in result.stdout
    assert "already done: 0" in result.stdout
    assert sorted(p.name for p in inbox.iterdir()) == ["a.png", "b.png"]  # no state folder
    assert not (output / "scores.csv").exists() and len(_runs(champion)) == runs_before


def test_a_missing_inbox_is_a_config_error(champion, tmp_path):
    result = _batch(champion, tmp_path / "no-such-inbox")
    assert result.returncode == 2
    assert f"inbox={tmp_path / 'no-such-inbox'} does not exist" in result.stdout
    assert not (tmp_path / "no-such-inbox").exists() and not (tmp_path / "results").exists()


def test_the_wrapper_script_runs_the_pipeline(champion, tmp_path):
    script = Path(__file__).resolve().parents[2] / "pipelines" / "score_batch"
    assert os.access(script, os.X_OK)
    # The wrapper uses <repo>/.venv when present, else `anomaly` on PATH.
    bin_dir = Path(sys.executable).parent
    env = {**_env(), "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    result = subprocess.run(
        [str(script), "--help"], capture_output=True, text=True, env=env, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "anomaly score-batch inbox=FOLDER" in result.stdout


def test_mlflow_going_away_mid_run_keeps_the_local_results(champion, tmp_path):
    inbox, output = tmp_path / "inbox", tmp_path / "results"
    _fill(inbox, [f"{i}.png" for i in range(4)], seed=9)
    model = champion["work"] / "train" / "model"  # a model folder: no registry needed
    server_root = tmp_path / "server"
    server_root.mkdir()
    log = tmp_path / "run.log"
    with mlflow_server(server_root) as uri:
        handle = open(log, "w")  # noqa: SIM115 - closed below
        # The server crashes during the 2 s pause after the first batch's commit.
        process = subprocess.Popen(
            [sys.executable, "-m", "anomaly", "score-batch", f"inbox={inbox}", f"model={model}",
             f"tracking.uri={uri}", "scoring.batch_size=2", "debug.pause_at=after_commit:1:2"],
            cwd=champion["work"], stdout=handle, stderr=subprocess.STDOUT,
            env={**_env(), "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
                 "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "0"},
        )  # fmt: skip
        _wait_for(process, log, lambda: "paused at after_commit:1" in log.read_text(), "pause")
        stop_server(uri, crash=True)
        process.wait(timeout=300)
        handle.close()
    text = log.read_text()
    assert process.returncode == 4, text
    assert "MLflow upload incomplete" in text and "Traceback" not in text
    assert sorted(r["path"] for r in _rows(output)) == [f"{i}.png" for i in range(4)]
    assert (output / "summary.json").is_file()


def test_no_inbox_is_a_config_error(tmp_path):
    result = run_cli("score-batch", cwd=tmp_path)
    assert result.returncode == 2 and "inbox= is required" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr
