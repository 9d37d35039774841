"""User errors and faults through the real `anomaly` command: clear words, nothing lost."""

from __future__ import annotations

import csv
import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from PIL import Image

from tests.conftest import make_tiny_mvtec, stripes, write_png
from tests.integration.conftest import mlflow_server, run_cli, stop_server

pytestmark = pytest.mark.integration

# The fast reference model: these tests are about faults, not about what a model learns.
TRAIN = ("model=cae", "data.image_size=32", "data.val_fraction=0.25", "trainer.progress_bar=false")


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """A tiny trained model folder (local store), and its work folder."""
    work = tmp_path_factory.mktemp("faults")
    root = make_tiny_mvtec(work / "data")
    result = run_cli(
        "train",
        f"data.root={root}",
        *TRAIN,
        "trainer.max_epochs=1",
        f"tracking.uri=sqlite:///{work / 'mlflow.db'}",
        f"output_dir={work / 'train'}",
        cwd=work,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return {"work": work, "root": root, "folder": work / "train" / "model"}


def _no_traceback(result: subprocess.CompletedProcess) -> str:
    out = result.stdout + result.stderr
    assert "Traceback" not in out, out
    return out


def _local(work: Path) -> list[str]:
    return [f"tracking.uri=sqlite:///{work / 'mlflow.db'}"]


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("model=resnet", "Could not find 'model/resnet'"),
        ("loss=huber", "Could not find 'loss/huber'"),
        ("model.module.optimizer.lr=-0.01", "model.module.optimizer.lr=-0.01 is out of range"),
        ("trainer.max_epochs=nan", "trainer.max_epochs=nan is not a finite number"),
        ("data.root=/no/such/folder", "data.root=/no/such/folder does not exist"),
    ],
)
def test_training_config_errors_exit_2_in_one_line(model, override, expected):
    args = [f"data.root={model['root']}", *TRAIN, override, *_local(model["work"])]
    result = run_cli("train", *args, f"output_dir={model['work'] / 'bad'}", cwd=model["work"])
    assert result.returncode == 2
    assert expected in _no_traceback(result)


def _broken_copy(model, tmp_path, name: str) -> Path:
    folder = tmp_path / name
    shutil.copytree(model["folder"], folder)
    return folder


def test_model_file_errors_exit_2_naming_the_file(model, tmp_path):
    work = model["work"]
    cases = {}
    folder = _broken_copy(model, tmp_path, "bad_json")
    cal = folder / "calibration.json"
    cal.write_text(cal.read_text().replace('"image_threshold":', '"image_threshold" '))
    cases[folder] = "calibration.json is not valid JSON (line"
    folder = _broken_copy(model, tmp_path, "bad_type")
    payload = json.loads((folder / "calibration.json").read_text())
    payload["pixel_threshold"] = "high"
    (folder / "calibration.json").write_text(json.dumps(payload))
    cases[folder] = "pixel_threshold must be a number, got 'high'"
    folder = _broken_copy(model, tmp_path, "other_architecture")
    meta = json.loads((folder / "model.json").read_text())
    meta["module_class"] = "anomaly.training.adversarial.USADModule"
    (folder / "model.json").write_text(json.dumps(meta))
    cases[folder] = "was the checkpoint copied from a model folder of another architecture"
    for folder, expected in cases.items():
        result = run_cli(
            "score",
            f"model={folder}",
            f"input={model['root'] / 'test'}",
            f"output={tmp_path / 'out'}",
            *_local(work),
            cwd=work,
        )
        assert result.returncode == 2, folder
        assert expected in _no_traceback(result) and str(folder) in result.stdout


def test_a_batch_with_bad_files_scores_the_rest_and_exits_5(model, tmp_path):
    inbox = tmp_path / "inbox"
    rng = np.random.default_rng(1)
    for i in range(4):
        write_png(inbox / f"good {i} – ü.png", stripes(32, rng))
    (inbox / "empty.png").touch()
    (inbox / "notes.JPG").write_text("not an image")
    write_png(inbox / "thumb.png", np.zeros((4, 4), np.uint8))
    truncated = write_png(inbox / "cut.png", rng.integers(0, 255, (64, 64), dtype=np.uint8))
    truncated.write_bytes(truncated.read_bytes()[:300])
    colour = np.zeros((32, 32, 3), np.uint8)
    colour[..., 0] = 200
    write_png(inbox / "colour.png", colour)
    out = tmp_path / "out"
    result = run_cli(
        "score", f"model={model['folder']}", f"input={inbox}", f"output={out}",
        *_local(model["work"]), cwd=model["work"],
    )  # fmt: skip
    text = _no_traceback(result)
    assert result.returncode == 5, text
    assert "scored 5 of 9 images" in text and "4 skipped (see errors.csv)" in text
    with open(out / "errors.csv", newline="", encoding="utf-8") as handle:
        errors = {row["path"]: row["reason"] for row in csv.DictReader(handle)}
    assert set(errors) == {"empty.png", "notes.JPG", "thumb.png", "cut.png"}
    assert "empty" in errors["empty.png"] and "not a readable image" in errors["notes.JPG"]
    assert "4x4 pixels" in errors["thumb.png"] and "truncated" in errors["cut.png"]
    with open(out / "scores.csv", newline="", encoding="utf-8") as handle:
        scored = sorted(row["path"] for row in csv.DictReader(handle))
    assert scored == ["colour.png", *(f"good {i} – ü.png" for i in range(4))]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_errors"] == 4 and summary["n_scored"] == 5
    assert summary["n_converted"] == 1 and summary["status"] == "complete"
    assert "colour image converted to gray" in text

    # A clean rerun into the same folder leaves no stale errors.csv behind.
    clean = tmp_path / "clean"
    for path in inbox.glob("good*"):
        write_png(clean / path.name, np.asarray(Image.open(path)))
    again = run_cli(
        "score", f"model={model['folder']}", f"input={clean}", f"output={out}",
        *_local(model["work"]), cwd=model["work"],
    )  # fmt: skip
    assert again.returncode == 0, again.stdout + again.stderr
    assert not (out / "errors.csv").exists()


def _can_mount_tmpfs() -> bool:
    probe = subprocess.run(
        ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c",
         "d=$(mktemp -d) && mount -t tmpfs -o size=64k tmpfs $d && umount $d"],
        capture_output=True,
    )  # fmt: skip
    return shutil.which("unshare") is not None and probe.returncode == 0


# A small file system of our own (a tmpfs in a user namespace, no root needed): a real
# "No space left on device" and a real read-only file system, not a simulated one.
needs_tmpfs = pytest.mark.skipif(
    not _can_mount_tmpfs(), reason="this kernel does not allow user-namespace tmpfs mounts"
)


def _score_on_tmpfs(model, tmp_path, *, size_kb: int, read_only: bool = False):
    inbox = tmp_path / "inbox"
    rng = np.random.default_rng(2)
    for i in range(60):
        write_png(inbox / f"{i:03d}.png", rng.uniform(0, 1, (96, 96)))  # incompressible
    mnt, kept = tmp_path / "mnt", tmp_path / "kept"
    mnt.mkdir()
    remount = f"mount -o remount,ro {mnt} && " if read_only else ""
    command = " ".join(
        [sys.executable, "-m", "anomaly", "score", f"model={model['folder']}",
         f"input={inbox}", f"output={mnt / 'out'}", *_local(model["work"])]
    )  # fmt: skip
    script = (
        f"mount -t tmpfs -o size={size_kb}k tmpfs {mnt} && {remount}"
        f"{command} > {tmp_path / 'log.txt'} 2>&1; rc=$?; cp -a {mnt}/. {kept}/ 2>/dev/null; "
        "exit $rc"
    )
    kept.mkdir()
    result = subprocess.run(
        ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", script],
        cwd=model["work"],
        timeout=300,
    )
    return result.returncode, (tmp_path / "log.txt").read_text(), kept / "out"


@needs_tmpfs
def test_disk_full_stops_with_complete_results(model, tmp_path):
    code, log, out = _score_on_tmpfs(model, tmp_path, size_kb=900)
    assert code == 7, log
    assert "No space left on device" in log and "Traceback" not in log
    with open(out / "scores.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert 0 < len(rows) < 60  # stopped part-way, with what came before kept
    for row in rows:  # every row whole, and every picture of a listed image complete
        assert None not in row.values() and float(row["score"]) >= 0
        for kind in ("masks", "heatmaps", "overlays"):
            with Image.open(out / kind / row["path"]) as picture:
                picture.load()
    for picture in out.rglob("*.png"):  # no half-written PNG anywhere
        with Image.open(picture) as image:
            image.load()
    assert not list(out.rglob("*.tmp"))


@needs_tmpfs
def test_read_only_output_folder_is_a_clear_error(model, tmp_path):
    code, log, _ = _score_on_tmpfs(model, tmp_path, size_kb=64, read_only=True)
    assert code == 7, log
    assert "cannot write to the output folder" in log and "Read-only file system" in log
    assert "Traceback" not in log


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _train_until_checkpoint(args: list[str], cwd: Path, out: Path, sig: int) -> tuple[int, str]:
    log = out.parent / "train.log"
    handle = open(log, "w")  # noqa: SIM115 - closed below
    process = subprocess.Popen(
        [sys.executable, "-m", "anomaly", "train", *args],
        cwd=cwd,
        stdout=handle,
        stderr=subprocess.STDOUT,
        env=_env(),
        # A suite started in the background (`make test &`) passes SIGINT on as ignored,
        # and Python then never turns it into KeyboardInterrupt: give the child Ctrl-C back.
        preexec_fn=_default_sigint,
    )
    deadline = time.monotonic() + 300
    checkpoint = out / "checkpoints" / "last.ckpt"
    start_mtime = checkpoint.stat().st_mtime if checkpoint.exists() else 0.0
    try:
        while not checkpoint.exists() or checkpoint.stat().st_mtime == start_mtime:
            assert process.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        process.send_signal(sig)
        process.wait(timeout=120)
    finally:
        # A failed wait must not leave a 500-epoch training behind on the machine.
        if process.poll() is None:
            process.kill()
            process.wait()
        handle.close()
    return process.returncode, log.read_text()


def test_interrupted_training_saves_a_checkpoint_and_resumes(model, tmp_path):
    work, out = model["work"], tmp_path / "train"
    root = make_tiny_mvtec(tmp_path / "data", n_train=24)
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    args = [f"data.root={root}", *TRAIN, f"tracking.uri={store}", f"output_dir={out}"]
    long_run = [*args, "trainer.max_epochs=500"]
    # Ctrl-C first, then SIGTERM (what schedulers send) on the resumed run.
    code, text = _train_until_checkpoint(long_run, work, out, signal.SIGINT)
    assert code == 130, text
    assert "trainer.resume=true" in text and f"output_dir={out}" in text
    client = MlflowClient(store)
    (run,) = client.search_runs([client.get_experiment_by_name("anomaly").experiment_id])
    assert run.info.status == "KILLED", text
    code, text = _train_until_checkpoint([*long_run, "trainer.resume=true"], work, out,
                                         signal.SIGTERM)  # fmt: skip
    assert code == 130, text
    interrupted_at = len(client.get_metric_history(run.info.run_id, "train/loss"))
    finish = run_cli("train", *args, "trainer.max_epochs=" + str(interrupted_at + 3),
                     "trainer.resume=true", cwd=work)  # fmt: skip
    assert finish.returncode == 0, finish.stdout + finish.stderr
    (run,) = client.search_runs([run.info.experiment_id])  # still one run: it was continued
    assert run.info.status == "FINISHED" and "image_auroc" in run.data.metrics
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "train/loss")]
    assert steps == list(range(interrupted_at + 3))  # each epoch once, none lost
    assert (out / "model" / "model.ckpt").is_file()

    missing = run_cli("train", *args, f"output_dir={tmp_path / 'nothing'}",
                      "trainer.resume=true", cwd=work)  # fmt: skip
    assert missing.returncode == 2 and "no checkpoint at" in _no_traceback(missing)


def test_mlflow_going_away_mid_run_keeps_local_outputs(model, tmp_path):
    root = make_tiny_mvtec(tmp_path / "data", n_train=24)
    out = tmp_path / "train"
    server_root = tmp_path / "server"
    server_root.mkdir()
    with mlflow_server(server_root) as uri:
        # The server crashes right after the first epoch's checkpoint; 8 epochs (about
        # 0.5 s each) are left: the run loses its store mid-training.
        process = subprocess.Popen(
            [sys.executable, "-m", "anomaly", "train", f"data.root={root}", *TRAIN,
             "trainer.max_epochs=8", f"tracking.uri={uri}", f"output_dir={out}"],
            cwd=model["work"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**_env(), "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
                 "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "0"},
        )  # fmt: skip
        deadline = time.monotonic() + 120
        while not (out / "checkpoints" / "last.ckpt").exists():
            assert process.poll() is None and time.monotonic() < deadline
            time.sleep(0.2)
        stop_server(uri, crash=True)
        text, _ = process.communicate(timeout=300)
    assert process.returncode == 4, text
    assert "Traceback" not in text
    assert "MLflow upload incomplete" in text and "metrics" in text
    assert (out / "model" / "model.ckpt").is_file() and (
        out / "model" / "calibration.json"
    ).is_file()
    assert (out / "evaluation" / "scores.csv").is_file()


def _env() -> dict[str, str]:
    import os

    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    return env
