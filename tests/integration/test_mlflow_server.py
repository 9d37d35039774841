"""Train, promote and score against a real MLflow tracking server over HTTP."""

from __future__ import annotations

import csv
import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from PIL import Image

from tests.conftest import make_tiny_mvtec
from tests.integration.conftest import free_port, list_artifacts

pytestmark = pytest.mark.integration
MODEL_NAME = "tiny-part"


@pytest.fixture(scope="module")
def server(shared_mlflow_server):
    """A real `mlflow server` on a free loopback port (the session's shared one)."""
    return shared_mlflow_server


@pytest.fixture(scope="module")
def trained(server, tmp_path_factory):
    from tests.integration.conftest import run_cli, spawn_cli

    work = tmp_path_factory.mktemp("work")
    root = make_tiny_mvtec(work / "data", test_size=48)
    common = [f"tracking.uri={server}", "tracking.experiment=server-e2e"]
    result = run_cli(
        "train",
        f"data.root={root}",
        "data.image_size=32",
        "data.val_fraction=0.25",
        "trainer.max_epochs=3",
        "trainer.progress_bar=false",
        f"tracking.registered_model={MODEL_NAME}",
        f"output_dir={work / 'train'}",
        *common,
        cwd=work,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    # The subprocess smoke test of `anomaly promote`.
    promoted = spawn_cli("promote", f"name={MODEL_NAME}", "version=1", *common[:1], cwd=work)
    assert promoted.returncode == 0, promoted.stdout + promoted.stderr
    scored = run_cli(
        "score",
        f"model=models:/{MODEL_NAME}@champion",
        f"input={root / 'test'}",
        f"output={work / 'scored'}",
        *common,
        cwd=work,
    )
    assert scored.returncode == 0, scored.stdout + scored.stderr
    return {"uri": server, "work": work, "root": root}


def test_training_run_over_http(trained):
    client = MlflowClient(trained["uri"])
    experiment = client.get_experiment_by_name("server-e2e")
    (run,) = client.search_runs([experiment.experiment_id], "tags.`anomaly.kind` = 'train'")
    assert run.data.params["data.root"] == str(trained["root"])
    assert run.data.params["model.name"] == "feature_ae"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "train/loss")] == [0, 1, 2]
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val/loss")] == [0, 1, 2]
    for name in (
        "image_auroc",
        "pixel_auroc",
        "pixel_aupro",
        "image_f1",
        "image_auroc/spot",
        "pixel_aupro/spot",
    ):
        assert name in run.data.metrics, name
    artifacts = list_artifacts(client, run.info.run_id)
    for name in (
        "config.yaml",
        "calibration.json",
        "evaluation/samples.png",
        "evaluation/curves.png",
        "evaluation/score_histogram.png",
        "evaluation/scores_table.json",
        "evaluation/metrics_per_class.json",
    ):
        assert artifacts.get(name, 0) > 0, name
    # One sample grid per epoch for the UI's image slider.
    assert len([a for a in artifacts if a.startswith("images/") and a.endswith(".png")]) >= 3
    # The tests run from a git checkout of the package: the run names its commit.
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"],
        capture_output=True,
        text=True,
        cwd=Path(__file__).parent,
        check=True,
    ).stdout.strip()
    assert run.data.tags["git.commit"] == head
    assert run.data.tags["data.fingerprint"] and run.data.tags["host"]


def test_registry_versions_and_aliases(trained):
    client = MlflowClient(trained["uri"])
    model = client.get_registered_model(MODEL_NAME)
    assert model.aliases == {"candidate": "1", "champion": "1"}
    version = client.get_model_version(MODEL_NAME, "1")
    experiment = client.get_experiment_by_name("server-e2e")
    (run,) = client.search_runs([experiment.experiment_id], "tags.`anomaly.kind` = 'train'")
    assert version.run_id == run.info.run_id


def test_scoring_run_is_tagged_with_the_model_version(trained):
    client = MlflowClient(trained["uri"])
    experiment = client.get_experiment_by_name("server-e2e")
    (run,) = client.search_runs([experiment.experiment_id], "tags.`anomaly.kind` = 'score'")
    assert run.data.tags["model.name"] == MODEL_NAME and run.data.tags["model.version"] == "1"
    assert run.data.metrics["images_scored"] == 6
    for name in ("score_p50", "score_p95", "score_p99", "defect_rate"):
        assert name in run.data.metrics
    artifacts = list_artifacts(client, run.info.run_id)
    assert artifacts.get("scores.csv", 0) > 0 and artifacts.get("summary.json", 0) > 0
    assert any(a.startswith("overlays_top_scores/") for a in artifacts)


def test_evaluate_names_the_registered_version(trained, tmp_path):
    from tests.integration.conftest import run_cli

    result = run_cli(
        "evaluate",
        f"model=models:/{MODEL_NAME}@champion",
        f"data.root={trained['root']}",
        f"output={tmp_path / 'evaluated'}",
        f"tracking.uri={trained['uri']}",
        "tracking.experiment=server-e2e",
        cwd=trained["work"],
    )
    assert result.returncode == 0, result.stdout + result.stderr
    client = MlflowClient(trained["uri"])
    experiment = client.get_experiment_by_name("server-e2e")
    (run,) = client.search_runs([experiment.experiment_id], "tags.`anomaly.kind` = 'evaluate'")
    assert run.data.tags["model.name"] == MODEL_NAME and run.data.tags["model.version"] == "1"
    (train_run,) = client.search_runs([experiment.experiment_id], "tags.`anomaly.kind` = 'train'")
    assert run.data.metrics["image_auroc"] == train_run.data.metrics["image_auroc"]
    assert list_artifacts(client, run.info.run_id).get("evaluation/scores.csv", 0) > 0
    # The same test photos as the training's evaluation: the same dataset.
    assert _datasets(run) == {"test": _datasets(train_run)["test"]}


def _datasets(run) -> dict[str, tuple[str, str]]:
    """context -> (name, digest) of a run's dataset inputs."""
    found = {}
    for entry in run.inputs.dataset_inputs:
        context = next(t.value for t in entry.tags if t.key == "mlflow.data.context")
        found[context] = (entry.dataset.name, entry.dataset.digest)
    return found


def _digest(rows: list[tuple[str, str, str]]) -> str:
    """The documented digest, computed here from the files themselves."""
    text = "".join(f"{path}\0{sha}\0{label}\n" for path, sha, label in sorted(rows))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _file_rows(root: Path, paths) -> list[tuple[str, str, str]]:
    rows = []
    for rel in paths:
        label = "good" if Path(rel).parts[-2] == "good" else "defect"
        rows.append((rel, hashlib.sha256((root / rel).read_bytes()).hexdigest(), label))
    return rows


def _train_run(client):
    experiment = client.get_experiment_by_name("server-e2e")
    (run,) = client.search_runs([experiment.experiment_id], "tags.`anomaly.kind` = 'train'")
    return run


def test_training_logs_its_three_splits_as_datasets(trained, tmp_path):
    client = MlflowClient(trained["uri"])
    run = _train_run(client)
    root = trained["root"]
    datasets = _datasets(run)
    assert set(datasets) == {"training", "validation", "test"}
    assert datasets["test"][0] == f"{root.name}/test"
    test_files = sorted(p.relative_to(root).as_posix() for p in (root / "test").rglob("*.png"))
    assert datasets["test"][1] == _digest(_file_rows(root, test_files))
    # Training and validation: a random split of train/good, each listed in an artifact.
    listed = {}
    for context in ("training", "validation"):
        local = client.download_artifacts(run.info.run_id, f"datasets/{context}.csv", tmp_path)
        with open(local, newline="", encoding="utf-8") as handle:
            listed[context] = [r["path"] for r in csv.DictReader(handle)]
        assert datasets[context][1] == _digest(_file_rows(root, listed[context]))
    assert not set(listed["training"]) & set(listed["validation"])
    good = sorted(p.relative_to(root).as_posix() for p in (root / "train").rglob("*.png"))
    assert sorted(listed["training"] + listed["validation"]) == good


def test_same_photos_same_digest_and_one_changed_photo_changes_it(trained, tmp_path):
    from tests.integration.conftest import run_cli

    photos = tmp_path / "photos"
    shutil.copytree(trained["root"] / "test" / "good", photos)
    digests = []
    for attempt in range(3):
        if attempt == 2:
            first = sorted(photos.glob("*.png"))[0]
            pixels = np.asarray(Image.open(first)).copy()
            pixels[0, 0] ^= 1
            Image.fromarray(pixels).save(first)
        result = run_cli(
            "score", f"model={trained['work'] / 'train' / 'model'}", f"input={photos}",
            f"output={tmp_path / f'out{attempt}'}", f"tracking.uri={trained['uri']}",
            "tracking.experiment=lineage", cwd=trained["work"],
        )  # fmt: skip
        assert result.returncode == 0, result.stdout + result.stderr
        client = MlflowClient(trained["uri"])
        experiment = client.get_experiment_by_name("lineage")
        newest = client.search_runs([experiment.experiment_id], order_by=["start_time DESC"])[0]
        digests.append(_datasets(newest)["scoring"])
    assert digests[0] == digests[1]
    assert digests[2][0] == digests[0][0] and digests[2][1] != digests[0][1]


def test_the_run_and_its_version_describe_themselves(trained):
    client = MlflowClient(trained["uri"])
    run = _train_run(client)
    card = run.data.tags["mlflow.note.content"]
    calibration = json.loads((trained["work"] / "train/model/calibration.json").read_text())
    assert card.startswith(f"### feature_ae on {trained['root'].name}")
    assert f"| **image AUROC** | **{run.data.metrics['image_auroc']:.4g}** |" in card
    assert f"| image threshold | {calibration['image_threshold']:.4g} (" in card
    assert f"| pixel threshold | {calibration['pixel_threshold']:.4g} (" in card
    assert "| spot |" in card  # the per-class table
    for context, (_, digest) in _datasets(run).items():
        assert f"| {context} data |" in card and f"`{digest}`" in card
    version = client.get_model_version(MODEL_NAME, "1")
    assert version.description == card
    assert version.tags["data.digest.training"] == _datasets(run)["training"][1]
    assert float(version.tags["metric.image_auroc"]) == pytest.approx(
        run.data.metrics["image_auroc"], abs=1e-3
    )
    assert float(version.tags["threshold.image"]) == pytest.approx(
        calibration["image_threshold"], rel=1e-3
    )
    assert version.tags["threshold.method"] == calibration["method"]


def test_pyfunc_in_a_fresh_process_matches_anomaly_score(trained, tmp_path):
    images = sorted(str(p) for p in (trained["root"] / "test").rglob("*.png"))
    script = f"""
import json, mlflow, numpy as np, pandas as pd
from PIL import Image
mlflow.set_tracking_uri({trained["uri"]!r})
model = mlflow.pyfunc.load_model("models:/{MODEL_NAME}@champion")
by_path = model.predict(pd.DataFrame({{"path": {images!r}}}))
arrays = [np.asarray(Image.open(p)) for p in {images!r}]
by_array = model.predict(pd.DataFrame({{"image": arrays}}))
encoded = [open(p, "rb").read() for p in {images!r}]
by_bytes = model.predict(pd.DataFrame({{"content": encoded}}))
out = []
for (_, a), (_, b), (_, c) in zip(by_path.iterrows(), by_array.iterrows(), by_bytes.iterrows()):
    out.append({{"score": a.score, "array_score": b.score, "bytes_score": c.score, "p": a.p_value,
                 "defective": bool(a.is_defective), "regions": int(a.n_regions),
                 "mask_sum": int(np.asarray(a["mask"]).sum() // 255),
                 "same_mask": bool(np.array_equal(a["mask"], b["mask"]))}})
print(json.dumps(out))
"""
    # A fresh process in an empty folder: no config files, only the registry.
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    predictions = json.loads(result.stdout.strip().splitlines()[-1])
    with open(trained["work"] / "scored" / "scores.csv", newline="") as handle:
        rows = {r["path"]: r for r in csv.DictReader(handle)}
    for path, pred in zip(images, predictions, strict=True):
        row = rows[Path(path).relative_to(trained["root"] / "test").as_posix()]
        assert pred["score"] == pytest.approx(float(row["score"]), rel=1e-5)
        assert pred["array_score"] == pytest.approx(pred["score"], rel=1e-6)
        assert pred["bytes_score"] == pytest.approx(pred["score"], rel=1e-6)
        assert pred["p"] == pytest.approx(float(row["p_value"]), rel=1e-5)
        assert pred["defective"] == (row["is_defective"] == "1")
        assert pred["regions"] == int(row["n_regions"])
        assert pred["same_mask"]
        mask = np.asarray(
            Image.open(trained["work"] / "scored" / "masks" / Path(row["path"]).with_suffix(".png"))
        )
        assert pred["mask_sum"] == int((mask > 0).sum())


def test_unreachable_server_fails_fast_or_trains_locally(tmp_path):
    from tests.integration.conftest import run_cli, spawn_cli

    root = make_tiny_mvtec(tmp_path / "data")
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    args = [
        f"data.root={root}",
        "data.image_size=32",
        "data.val_fraction=0.25",
        "trainer.max_epochs=1",
        "trainer.progress_bar=false",
        f"tracking.uri={dead}",
    ]
    # A real process: the smoke test of the tracking-store family (exit 4).
    failed = spawn_cli("train", *args, f"output_dir={tmp_path / 'a'}", cwd=tmp_path)
    assert failed.returncode == 4
    assert "unreachable" in failed.stdout and "tracking.required=false" in failed.stdout
    assert not (tmp_path / "a" / "model").exists()  # failed before training
    local = run_cli(
        "train", *args, "tracking.required=false", f"output_dir={tmp_path / 'b'}", cwd=tmp_path
    )
    assert local.returncode == 0, local.stdout + local.stderr
    assert (tmp_path / "b" / "model" / "model.ckpt").is_file()
    assert "continuing without MLflow" in local.stdout + local.stderr
