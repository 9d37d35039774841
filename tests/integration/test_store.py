"""The embedded MLflow store: kills while it is being created, half-made stores, two first
runs at once, and a store that cannot be used while a scheduled `score-batch` runs."""

from __future__ import annotations

import contextlib
import csv
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from mlflow.store.db.utils import _get_latest_schema_revision
from mlflow.tracking import MlflowClient

from tests.conftest import make_tiny_mvtec, stripes, write_png
from tests.integration.conftest import run_cli

pytestmark = pytest.mark.integration
HEAD = _get_latest_schema_revision()


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory) -> Path:
    """A tiny trained model folder (its training logs to a store of its own)."""
    work = tmp_path_factory.mktemp("store-model")
    root = make_tiny_mvtec(work / "data")
    trained = run_cli(
        "train", f"data.root={root}", "data.image_size=32", "data.val_fraction=0.25",
        "trainer.max_epochs=1", "trainer.progress_bar=false", f"output_dir={work / 'train'}",
        cwd=work,
    )  # fmt: skip
    assert trained.returncode == 0, trained.stdout + trained.stderr
    return work / "train" / "model"


def _inbox(folder: Path, n: int = 3) -> Path:
    rng = np.random.default_rng(n)
    for i in range(n):
        write_png(folder / f"{i}.png", stripes(32, rng))
    return folder


def _env() -> dict[str, str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    return env


def _batch_command(model: Path, inbox: Path, db: Path) -> list[str]:
    return [sys.executable, "-m", "anomaly", "score-batch", f"inbox={inbox}", f"model={model}",
            f"tracking.uri=sqlite:///{db}"]  # fmt: skip


def _revision(db: Path) -> str | None:
    try:
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as con:
            row = con.execute("SELECT version_num FROM alembic_version").fetchone()
    except sqlite3.Error:
        return None
    return row[0] if row else None


def _temporaries(db: Path) -> list[Path]:
    return list(db.parent.glob(f".{db.name}.*.tmp"))


def _kill_when(process: subprocess.Popen, ready, *, timeout: float = 120) -> bool:
    """SIGKILL ``process`` as soon as ``ready()``; False when it ended first."""
    deadline = time.monotonic() + timeout
    while process.poll() is None:
        if ready():
            process.send_signal(signal.SIGKILL)
            process.wait()
            return True
        assert time.monotonic() < deadline, "the moment to kill never came"
        time.sleep(0.005)
    return False


def _size(paths: list[Path]) -> int:
    total = 0
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            total += path.stat().st_size
    return total


def _score_batch_runs(db: Path) -> list:
    client = MlflowClient(f"sqlite:///{db}")
    experiments = client.search_experiments()
    return client.search_runs(
        [e.experiment_id for e in experiments], "tags.`anomaly.kind` = 'score_batch'"
    )


def test_kills_during_store_creation_never_leave_a_broken_store(model_folder, tmp_path):
    db = tmp_path / "mlruns" / "mlflow.db"
    create = [sys.executable, "-c",
              "import sys; from anomaly.tracking.store import ensure_store; "
              "ensure_store(sys.argv[1])", f"sqlite:///{db}"]  # fmt: skip
    # Found by polling the file being built: as it appears, with the first tables, and
    # deep into the schema migrations (the complete store is about 900 KB).
    for at_least in (0, 250_000, 600_000):
        process = subprocess.Popen(create, env=_env())
        killed = _kill_when(process, lambda n=at_least: _size(_temporaries(db)) > n)
        assert killed, f"store creation ended before {at_least} bytes were written"
        assert not db.exists(), "a killed creation left a store in place"
    # The command a timer runs, killed while it creates the store.
    inbox = _inbox(tmp_path / "inbox")
    process = subprocess.Popen(
        _batch_command(model_folder, inbox, db), cwd=tmp_path, env=_env(),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    assert _kill_when(process, lambda: bool(_temporaries(db)))
    assert not db.exists()

    result = run_cli(*_batch_command(model_folder, inbox, db)[3:], cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert _revision(db) == HEAD
    assert not _temporaries(db), "the killed runs' temporary stores were not cleaned up"
    assert not list(db.parent.glob("mlflow.db.incomplete-*")), "nothing was half-made"
    assert len(_score_batch_runs(db)) == 1


def test_a_store_half_made_the_old_way_is_set_aside_and_replaced(model_folder, tmp_path):
    """MLflow building the store in place (what earlier versions let it do), killed."""
    db = tmp_path / "mlruns" / "mlflow.db"
    db.parent.mkdir()
    mlflow_itself = [sys.executable, "-c",
                     "import sys, mlflow; mlflow.MlflowClient(sys.argv[1]).search_experiments()",
                     f"sqlite:///{db}"]  # fmt: skip
    for at_least in (300_000, 100_000, 0):
        process = subprocess.Popen(mlflow_itself, env=_env())
        if _kill_when(process, lambda n=at_least: _size([db]) > n) and _revision(db) != HEAD:
            break
        db.unlink(missing_ok=True)
    else:
        pytest.fail("MLflow always finished the store before it could be killed")
    inbox = _inbox(tmp_path / "inbox")

    result = run_cli(*_batch_command(model_folder, inbox, db)[3:], cwd=tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "half-made" in output and "moved to" in output, output
    # The half-made file, with the journal its killed writer left when there was one.
    (aside,) = (p for p in db.parent.glob("mlflow.db.incomplete-*") if "-journal" not in p.name)
    assert aside.stat().st_size > 0
    assert _revision(db) == HEAD and len(_score_batch_runs(db)) == 1


def test_two_first_runs_at_once_share_one_new_store(model_folder, tmp_path):
    db = tmp_path / "mlruns" / "mlflow.db"
    processes = []
    for line in ("line-1", "line-2"):  # each inbox with its own results beside it
        command = _batch_command(model_folder, _inbox(tmp_path / line / "inbox"), db)
        processes.append(
            subprocess.Popen(
                command,
                cwd=tmp_path,
                env=_env(),
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
    outputs = [p.communicate(timeout=300)[0] for p in processes]
    for process, output in zip(processes, outputs, strict=True):
        assert process.returncode == 0, output
    assert _revision(db) == HEAD
    assert len(_score_batch_runs(db)) == 2


def test_score_batch_scores_while_the_store_is_unusable_and_logs_once_it_works(
    model_folder, tmp_path
):
    blocker = tmp_path / "mlruns"
    blocker.write_text("a file where the store's folder should be")
    db = blocker / "mlflow.db"
    inbox = _inbox(tmp_path / "inbox", n=4)
    args = _batch_command(model_folder, inbox, db)[3:]

    result = run_cli(*args, cwd=tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == 4, output
    assert "MLflow upload incomplete" in output and str(db) in output, output
    assert "Traceback" not in output
    with open(tmp_path / "results" / "scores.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert sorted(r["path"] for r in rows) == [f"{i}.png" for i in range(4)]

    blocker.unlink()  # the store works again: the next run logs (and has nothing new)
    write_png(inbox / "new.png", stripes(32, np.random.default_rng(7)))
    result = run_cli(*args, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    runs = _score_batch_runs(db)
    assert len(runs) == 1 and runs[0].data.metrics["images_scored"] == 1
