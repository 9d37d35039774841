"""`anomaly bench` measures quality and speed and writes its results."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

from anomaly.jobs.bench import run_bench
from tests.conftest import make_tiny_mvtec

pytestmark = pytest.mark.integration
CONF = Path(__file__).resolve().parents[2] / "conf"


def test_quick_bench_on_tiny_data(tmp_path):
    root = make_tiny_mvtec(tmp_path / "data", test_size=48)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        cfg = compose(
            "bench",
            overrides=[
                "quick=true",
                f"data_root={root}",
                f"output={tmp_path / 'bench'}",
                "only=[cae-l2,usad]",
                "speed_sizes=[32]",
                f"tracking.uri={uri}",
                'quick_budget=["data.image_size=32","trainer.max_steps=3","trainer.max_epochs=1",'
                '"data.val_fraction=0.25"]',
            ],
        )
    results = run_bench(cfg, conf_dir=CONF)
    saved = json.loads((tmp_path / "bench" / "results.json").read_text())
    assert saved["models"].keys() == {"cae-l2", "usad"}
    for model in saved["models"].values():
        assert 0 <= model["quality"]["image_auroc"] <= 1
        assert model["train_images_per_second"] > 0 and model["score_images_per_second"] > 0
        # The networks alone are the ceiling of scoring, which decodes and writes besides.
        assert model["network_images_per_second"] > model["score_images_per_second"]
        # Scoring without the per-image pictures is measured beside it.
        assert model["score_tables_only_images_per_second"] > 0
        assert set(model["score_stage_seconds"]) == {"decode", "model", "postprocess", "write"}
    speed = saved["speed"]["32"]
    assert speed["images"] == 6 and speed["forward_gflops"] > 0
    assert speed["forward_fraction_of_peak"] > 0 and saved["matmul_peak_gflops"] > 0
    assert speed["flops_per_image"] > 1e6  # the CAE at 32x32 is tens of MFLOPs
    table = (tmp_path / "bench" / "results.md").read_text()
    assert "| cae-l2 |" in table and "| usad |" in table and "32x32" in table
    assert "| score / networks | without pictures |" in table
    # Data lineage, at a tenth of lineage_images in quick mode.
    assert saved["lineage"]["images"] == 500 and saved["lineage"]["hash_seconds"] > 0
    assert "Data lineage: describing 500 photos" in table
    run = MlflowClient(uri).get_run(results["run_id"])
    assert run.data.tags["anomaly.kind"] == "bench"
    assert "models/cae-l2/quality/image_auroc" in run.data.metrics


@pytest.mark.parametrize("quick", [False, True])
def test_an_entry_budget_beats_the_common_one_but_not_quick_mode(tmp_path, quick):
    # The default recipe states its own input size (the Magnetic Tile overlay's, so that
    # `make bench` measures what `experiment=magnetic_tile` trains); quick mode must
    # still be quick.
    from anomaly.jobs.bench import _train_config

    recipe = OmegaConf.load(CONF / "experiment" / "magnetic_tile.yaml")
    size = 32 if quick else list(recipe.data.image_size)
    assert size != 128  # the common budget's size: the entry's own must win
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        bench = compose(
            "bench",
            overrides=[f"quick={str(quick).lower()}", 'quick_budget=["data.image_size=32"]'],
        )
        cfg = _train_config(bench, CONF, "draem", list(bench.models.draem), tmp_path / "bench")
    assert cfg.data.image_size == size
    if not quick:
        assert cfg.trainer.max_epochs == recipe.trainer.max_epochs
    assert cfg.model.ensemble.members == recipe.model.ensemble.members
    assert cfg.data.normalize == recipe.data.normalize == "mean_std"
    assert cfg.model.name == "draem"


def test_the_default_entry_trains_as_a_user_would(tmp_path):
    from anomaly.jobs.bench import _train_config

    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        bench = compose("bench")
        cfg = _train_config(bench, CONF, "default", list(bench.models.default), tmp_path)
        cae = _train_config(bench, CONF, "cae-l2", list(bench.models["cae-l2"]), tmp_path)
    # No budget: the model's own size rule and length, as `anomaly train data.root=...`.
    assert cfg.model.name == "feature_ae" and cfg.data.image_size == "auto"
    assert OmegaConf.is_interpolation(cfg.trainer, "max_epochs") and cfg.trainer.max_epochs == 10
    assert cae.data.image_size == 128 and cae.trainer.max_epochs == 10
