"""Distributed data-parallel training for real: 2 CPU processes, gloo backend.

Selected with ``-m distributed``; part of the default suite as well.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

from tests.conftest import make_tiny_mvtec
from tests.integration.conftest import run_cli

pytestmark = [pytest.mark.integration, pytest.mark.distributed]

TINY = (
    "model=cae",  # deterministic given the seed: the weight comparison means something
    "data.image_size=32",
    "data.val_fraction=0.25",
    "trainer.progress_bar=false",
    "trainer.max_epochs=3",
    "tracking.samples_every_n_epochs=0",
    "tracking.system_metrics=false",
)


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    for var in ("MLFLOW_TRACKING_URI", "RANK", "LOCAL_RANK", "WORLD_SIZE", "NODE_RANK"):
        env.pop(var, None)
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )


def _calibration(out: Path) -> dict:
    return json.loads((out / "model" / "calibration.json").read_text())


def _weights(out: Path) -> torch.Tensor:
    state = torch.load(out / "model" / "model.ckpt", map_location="cpu", weights_only=False)
    return torch.cat([v.flatten().float() for v in state["state_dict"].values()])


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The same training three ways: one process, torchrun x2, Lightning's launcher x2."""
    work = tmp_path_factory.mktemp("ddp")
    root = make_tiny_mvtec(work / "data", n_train=16)
    uri = f"sqlite:///{work / 'mlflow.db'}"
    common = [f"data.root={root}", f"tracking.uri={uri}", *TINY]
    # The reference needs no process of its own: the command's main(argv) in this one.
    single = run_cli("train", *common, "data.batch_size=8", "tracking.experiment=single",
                     f"output_dir={work / 'single'}", cwd=work)  # fmt: skip
    assert single.returncode == 0, single.stdout + single.stderr
    # Two ranks of 4 images per step: the same 8 images per optimiser step as above.
    torchrun = _run(["-m", "torch.distributed.run", "--nproc_per_node=2", "-m", "anomaly",
                     "train", *common, "trainer=ddp", "data.batch_size=4",
                     "tracking.experiment=torchrun", f"output_dir={work / 'torchrun'}"],
                    work)  # fmt: skip
    assert torchrun.returncode == 0, torchrun.stdout + torchrun.stderr
    launcher = _run(["-m", "anomaly", "train", *common, "trainer=ddp", "data.batch_size=4",
                     "tracking.experiment=launcher"], work)  # fmt: skip
    assert launcher.returncode == 0, launcher.stdout + launcher.stderr
    return {"work": work, "uri": uri, "launcher": launcher}


def test_ddp_model_and_calibration_match_one_process(trained):
    work = trained["work"]
    one, two = _calibration(work / "single"), _calibration(work / "torchrun")
    # Calibration ran once, on rank 0, over every held-out image.
    assert two["n_images"] == one["n_images"] == 4
    for key in ("image_threshold", "pixel_threshold"):
        assert two[key] == pytest.approx(one[key], rel=0.01), key
    a, b = _weights(work / "single"), _weights(work / "torchrun")
    # Same initialisation and the same images per step, in another order: close, not equal
    # (measured: 0.1% of the weight norm, thresholds within 0.02%).
    assert float((a - b).norm() / a.norm()) < 0.02


def test_only_rank_zero_logs_one_run_with_reduced_metrics(trained):
    client = MlflowClient(trained["uri"])
    for name in ("torchrun", "launcher"):
        experiment = client.get_experiment_by_name(name)
        runs = client.search_runs([experiment.experiment_id])
        assert len(runs) == 1, name
        history = client.get_metric_history(runs[0].info.run_id, "train/loss")
        # One value per epoch (reduced over both ranks), not one per rank.
        assert [m.step for m in history] == [0, 1, 2], name
        assert "image_auroc" in runs[0].data.metrics


def test_lightning_launcher_ranks_share_one_output_folder(trained):
    work = trained["work"]
    folders = [p for p in (work / "outputs" / "train").iterdir() if p.is_dir()]
    assert len(folders) == 1, folders
    assert (folders[0] / "model" / "model.ckpt").is_file()
    assert (folders[0] / "checkpoints" / "last.ckpt").is_file()
    # Rank 1 logs into the same folder, under its own name.
    assert (folders[0] / "train_ddp_process_1.log").is_file()
