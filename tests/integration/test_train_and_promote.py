"""The nightly train-and-promote pipeline and training sweeps, against a real MLflow server."""

from __future__ import annotations

import json
import socket
import subprocess

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import make_tiny_mvtec
from tests.integration.conftest import list_artifacts, run_cli, spawn_cli

pytestmark = pytest.mark.integration

TINY = (
    "data.image_size=32",
    "data.val_fraction=0.25",
    "trainer.progress_bar=false",
    "trainer.max_epochs=2",
    "tracking.samples_every_n_epochs=0",
)


@pytest.fixture(scope="module")
def server(shared_mlflow_server):
    return shared_mlflow_server


def _runs(client: MlflowClient, experiment: str) -> list:
    found = client.get_experiment_by_name(experiment)
    return client.search_runs([found.experiment_id]) if found else []


def test_pipeline_promotes_holds_and_reruns_without_work(server, tmp_path):
    root = make_tiny_mvtec(tmp_path / "data", n_train=16)
    work = tmp_path / "work"
    work.mkdir()
    common = (f"data.root={root}", f"tracking.uri={server}", "tracking.experiment=nightly",
              "tracking.registered_model=part42", *TINY, "model=cae")  # fmt: skip
    client = MlflowClient(server)

    # The subprocess smoke test of `anomaly train-and-promote`.
    first = spawn_cli("train-and-promote", *common, cwd=work)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "promoted" in first.stdout and "no champion yet" in first.stdout
    champion = client.get_model_version_by_alias("part42", "champion")
    assert champion.version == "1"
    assert champion.tags["gate.decision"] == "promoted"
    runs = _runs(client, "nightly")
    parents = [r for r in runs if r.data.tags.get("anomaly.kind") == "pipeline"]
    assert len(parents) == 1
    children = {
        r.info.run_name
        for r in runs
        if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id
    }
    # No champion yet: nothing to evaluate beside the candidate.
    assert children == {"train-cae-l2", "gate"}
    assert parents[0].data.metrics["promoted"] == 1.0
    # One log file per run, beside the work folders.
    logs = list((work / "outputs/pipelines/train_and_promote/logs").glob("*/*.log"))
    assert logs and "promoted" in logs[0].read_text()

    # Same data, same config: nothing new to learn, no new run, no new version.
    again = run_cli("train-and-promote", *common, cwd=work)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "nothing to do" in again.stdout and "version 1" in again.stdout
    assert len(_runs(client, "nightly")) == len(runs)
    assert len(client.search_model_versions("name = 'part42'")) == 1

    # A dry run of a new config says what it would do and does nothing.
    weak = (*common, "trainer.max_steps=1")
    dry = run_cli("train-and-promote", *weak, "--dry-run", cwd=work)
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert "would" in dry.stdout and "compare with part42@champion (version 1)" in dry.stdout
    assert len(_runs(client, "nightly")) == len(runs)

    # A deliberately weakened model (one optimiser step) is registered, not promoted.
    held = run_cli("train-and-promote", *weak, "pipeline.gate.margin=0.01", cwd=work)
    assert held.returncode == 0, held.stdout + held.stderr
    assert "held" in held.stdout
    version = client.get_model_version("part42", "2")
    assert version.tags["gate.decision"] == "held"
    assert "does not beat" in version.tags["gate.reason"]
    # The registry page alone says why: the card, then the gate's comparison.
    assert version.tags["gate.metric"] == "image_auroc"
    assert version.tags["gate.champion_version"] == "1"
    assert version.tags["gate.margin"] == "0.01"
    assert float(version.tags["gate.candidate"]) == pytest.approx(
        float(version.tags["metric.image_auroc"]), abs=1e-3
    )
    assert version.description.startswith("### cae on data")
    assert "#### Gate: held" in version.description and "| version 1 |" in version.description
    assert version.tags["gate.reason"] in version.description
    champion = client.get_model_version("part42", "1")
    assert "#### Gate: promoted" in champion.description and "| no champion |" in (
        champion.description
    )
    assert client.get_model_version_by_alias("part42", "candidate").version == "2"
    assert client.get_model_version_by_alias("part42", "champion").version == "1"
    runs = _runs(client, "nightly")
    second = next(
        r
        for r in runs
        if r.data.tags.get("anomaly.kind") == "pipeline" and r.info.run_id != parents[0].info.run_id
    )
    children = {
        r.info.run_name: r
        for r in runs
        if r.data.tags.get("mlflow.parentRunId") == second.info.run_id
    }
    assert set(children) == {"train-cae-l2", "evaluate-champion", "gate"}
    # The champion was scored now, on the same test split as the candidate.
    champion_run = children["evaluate-champion"]
    assert "image_auroc" in champion_run.data.metrics
    # Reviewers get the champion's scores and curves beside the candidate's.
    artifacts = list_artifacts(client, champion_run.info.run_id)
    assert artifacts.get("evaluation/scores.csv", 0) > 0
    assert artifacts.get("evaluation/curves.png", 0) > 0
    metrics = second.data.metrics
    assert metrics["promoted"] == 0.0
    assert metrics["candidate/image_auroc"] <= metrics["champion/image_auroc"] + 0.01


def test_gate_metric_must_be_one_the_evaluation_reports(server, tmp_path):
    root = make_tiny_mvtec(tmp_path / "data")
    result = run_cli("train-and-promote", f"data.root={root}", f"tracking.uri={server}",
                     "pipeline.gate.metric=accuracy", *TINY, "model=cae", cwd=tmp_path)  # fmt: skip
    assert result.returncode == 2
    assert "pipeline.gate.metric=accuracy" in result.stdout and "image_auroc" in result.stdout


def test_sweep_logs_each_combination_and_prints_a_comparison(server, tmp_path):
    root = make_tiny_mvtec(tmp_path / "data")
    result = run_cli(
        "train", "-m", "model=cae,dae", "loss=l2,ssim", f"data.root={root}",
        f"tracking.uri={server}", "tracking.experiment=sweep", *TINY, "trainer.max_epochs=1",
        cwd=tmp_path, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    runs = _runs(MlflowClient(server), "sweep")
    assert sorted(r.info.run_name for r in runs) == [
        "train-cae-l2", "train-cae-ssim", "train-dae-l2", "train-dae-ssim",
    ]  # fmt: skip
    table = result.stdout[result.stdout.index("sweep: 4 trainings") :]
    for run in runs:
        assert run.info.run_id in table
    for run in runs:
        row = next(line for line in table.splitlines() if run.info.run_id in line)
        _, model, loss = run.info.run_name.split("-")
        assert f" {model} " in row and f" {loss} " in row
    # Each job wrote into its own sweep folder, not a shared timestamped one.
    models = sorted(tmp_path.glob("outputs/multirun/*/*/model/model.ckpt"))
    assert len(models) == 4


def test_a_second_concurrent_run_exits_6_and_does_nothing(server, tmp_path):
    root = make_tiny_mvtec(tmp_path / "data")
    lock = tmp_path / "outputs/pipelines/train_and_promote/locked-part.lock"
    lock.parent.mkdir(parents=True)
    holder = subprocess.Popen(["sleep", "120"])  # stands in for a run in progress
    try:
        lock.write_text(json.dumps({"pid": holder.pid, "host": socket.gethostname(),
                                    "started_at": "2026-11-25T02:00:00+00:00"}))  # fmt: skip
        # A real process: the smoke test of the locked family (exit 6).
        result = spawn_cli("train-and-promote", f"data.root={root}", f"tracking.uri={server}",
                         "tracking.registered_model=locked-part", "tracking.experiment=locked",
                         *TINY, "model=cae", cwd=tmp_path)  # fmt: skip
    finally:
        holder.kill()
        holder.wait()
    assert result.returncode == 6, result.stdout + result.stderr
    assert f"pid {holder.pid}" in result.stdout and str(lock) in result.stdout
    assert _runs(MlflowClient(server), "locked") == []
    assert not list(tmp_path.glob("outputs/pipelines/train_and_promote/*/checkpoints"))
    # Its holder gone, the lock is stale: the next run clears it and works.
    again = run_cli("train-and-promote", f"data.root={root}", f"tracking.uri={server}",
                    "tracking.registered_model=locked-part", "tracking.experiment=locked",
                    *TINY, "model=cae", cwd=tmp_path)  # fmt: skip
    assert again.returncode == 0, again.stdout + again.stderr
    assert "cleared the stale lock" in again.stdout + again.stderr and not lock.exists()


def test_sweep_jobs_run_in_parallel_workers_and_are_still_compared(server, tmp_path):
    root = make_tiny_mvtec(tmp_path / "data")
    result = run_cli(
        "train", "-m", "hydra/launcher=local_parallel", "model=cae,dae", f"data.root={root}",
        f"tracking.uri={server}", "tracking.experiment=parallel", *TINY,
        "trainer.max_epochs=1", cwd=tmp_path, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    runs = _runs(MlflowClient(server), "parallel")
    assert sorted(r.info.run_name for r in runs) == ["train-cae-l2", "train-dae-l2"]
    # The jobs ran in joblib's worker processes; the table is built from their summaries.
    table = result.stdout[result.stdout.index("sweep: 2 trainings") :]
    assert all(run.info.run_id in table for run in runs)


def test_an_unreadable_test_image_is_left_out_and_the_run_exits_5(server, tmp_path):
    root = make_tiny_mvtec(tmp_path / "data")
    broken = root / "test" / "spot" / "000.png"
    broken.write_bytes(broken.read_bytes()[:300])
    work = tmp_path / "work"
    work.mkdir()
    args = (f"data.root={root}", f"tracking.uri={server}", "tracking.experiment=skips",
            "tracking.registered_model=part-skips", *TINY, "model=cae")  # fmt: skip
    result = run_cli("train-and-promote", *args, cwd=work)
    out = result.stdout + result.stderr
    # A scheduler must notice, yet the gate still decided on the readable images.
    assert result.returncode == 5, out
    assert "promoted" in result.stdout and "1 unreadable test image(s)" in result.stdout, out
    errors = next(work.glob("**/evaluation/errors.csv"))
    assert "000.png" in errors.read_text()
    client = MlflowClient(server)
    champion = client.get_model_version_by_alias("part-skips", "champion")
    assert champion.tags["gate.decision"] == "promoted"

    # An attempt that died after registering, before its gate: the rerun goes straight to
    # the gate, and still tells the scheduler about the image the evaluation left out.
    client.delete_model_version_tag("part-skips", champion.version, "gate.decision")
    client.delete_registered_model_alias("part-skips", "champion")
    resumed = run_cli("train-and-promote", *args, cwd=work)
    out = resumed.stdout + resumed.stderr
    assert resumed.returncode == 5, out
    assert "resuming" in out and "1 unreadable test image(s)" in resumed.stdout, out
    assert str(errors) in resumed.stdout.replace("\n", ""), out
    again = client.get_model_version_by_alias("part-skips", "champion")
    assert again.version == champion.version and again.tags["gate.decision"] == "promoted"
