"""The textbook family's last four (sparse, contractive, AAE, GANomaly) through the CLI and
the pyfunc model: train, calibrate, evaluate, score, predict."""

from __future__ import annotations

import csv
import json

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from anomaly.scoring.calibration import Calibration

pytestmark = pytest.mark.integration

# Those whose image score fuses their own score with the map's (the AAE's prior NLL,
# GANomaly's latent distance).
OWN_SCORE = {"aae", "ganomaly"}


@pytest.mark.parametrize(
    ("model", "extra"),
    [
        ("sparse_ae", ()),
        ("contractive_ae", ()),
        # The prior's likelihood in the image score is optional (off by default).
        ("aae", ("model.module.prior_score=true",)),
        ("ganomaly", ()),
    ],
)
def test_trains_calibrates_evaluates_scores_and_predicts(model, extra, cli, tmp_path):
    from tests.conftest import make_tiny_mvtec

    root = make_tiny_mvtec(tmp_path / "data")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    common = (f"tracking.uri={uri}", "tracking.experiment=family")
    trained = cli(
        "train",
        f"data.root={root}",
        f"model={model}",
        "data.image_size=32",
        "data.val_fraction=0.25",
        "trainer.max_epochs=2",
        "trainer.progress_bar=false",
        f"output_dir={tmp_path / 'train'}",
        *extra,
        *common,
        cwd=tmp_path,
    )
    assert trained.returncode == 0, trained.stdout + trained.stderr
    folder = tmp_path / "train" / "model"
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("family")
    (train_run,) = client.search_runs([experiment.experiment_id], "tags.`anomaly.kind` = 'train'")
    assert train_run.data.tags["model.name"] == model
    assert 0.0 <= train_run.data.metrics["image_auroc"] <= 1.0
    assert "train/loss" in train_run.data.metrics
    calibration = Calibration.load(folder / "calibration.json")
    assert bool(calibration.fusion) == (model in OWN_SCORE)
    if model == "ganomaly":
        assert calibration.fusion["map_weight"] == 0.0  # the paper's score alone
    if model in ("sparse_ae", "contractive_ae"):
        assert "train/penalty" in train_run.data.metrics

    scored = cli(
        "score",
        f"model={folder}",
        f"input={root / 'test'}",
        f"output={tmp_path / 'scored'}",
        *common,
        cwd=tmp_path,
    )
    assert scored.returncode == 0, scored.stdout + scored.stderr
    with open(tmp_path / "scored" / "scores.csv", newline="") as handle:
        scores = {r["path"]: float(r["score"]) for r in csv.DictReader(handle)}
    assert len(scores) == 6 and all(np.isfinite(v) for v in scores.values())

    # The logged pyfunc model (what MLflow serving and Spark call) gives the same scores.
    mlflow.set_tracking_uri(uri)
    try:
        pyfunc = mlflow.pyfunc.load_model(f"runs:/{train_run.info.run_id}/model")
    finally:
        mlflow.set_tracking_uri(None)
    paths = sorted((root / "test").rglob("*.png"))
    frame = pyfunc.predict(pd.DataFrame({"path": [str(p) for p in paths]}))
    assert (frame["error"] == "").all()
    for path, score in zip(paths, frame["score"], strict=True):
        name = str(path.relative_to(root / "test"))
        assert score == pytest.approx(scores[name], rel=1e-5), name

    recalibrated = cli(
        "calibrate",
        f"model={folder}",
        f"data.root={root}",
        "scoring.feature_score.map_weight=1.0",
        *common,
        cwd=tmp_path,
    )
    assert recalibrated.returncode == 0, recalibrated.stdout + recalibrated.stderr
    again = Calibration.load(folder / "calibration.json")
    assert again.n_images == calibration.n_images
    if model in OWN_SCORE:
        assert again.fusion["map_weight"] == 1.0

    evaluated = cli(
        "evaluate",
        f"model={folder}",
        f"data.root={root}",
        f"output={tmp_path / 'evaluated'}",
        *common,
        cwd=tmp_path,
    )
    assert evaluated.returncode == 0, evaluated.stdout + evaluated.stderr
    metrics = json.loads((tmp_path / "evaluated" / "metrics.json").read_text())["metrics"]
    assert 0.0 <= metrics["image_auroc"] <= 1.0 and 0.0 <= metrics["pixel_aupro"] <= 1.0
