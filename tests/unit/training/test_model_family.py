"""Every model in conf/model trains, overfits one batch and reloads from its checkpoint."""

from __future__ import annotations

from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from hydra import compose, initialize_config_dir
from torch.utils.data import DataLoader

from anomaly.data.transforms import Preprocess
from anomaly.model_folder import load_detector
from anomaly.models.inspection import RECONSTRUCTION, Wants, inspectable
from anomaly.scoring.calibration import Calibration
from anomaly.scoring.detector import Detector
from anomaly.settings import map_settings
from anomaly.training.factory import build_module
from tests.conftest import make_trainer

CONF = Path(__file__).resolve().parents[3] / "conf"
MODELS = sorted(p.stem for p in (CONF / "model").glob("*.yaml"))
PHASES = {"usad": 2, "ganomaly": 2, "aae": 3}


def _cfg(model: str, *overrides: str):
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        return compose(
            "config",
            overrides=[
                f"model={model}",
                "data.root=unused",
                "data.image_size=32",
                "data.channels=1",
                *overrides,
            ],
        )


def _batch() -> dict:
    rows = torch.linspace(0.1, 0.9, 32).view(1, 1, 32, 1).expand(8, 1, 32, 32)
    return {"image": (rows + 0.05 * torch.rand(8, 1, 1, 1)).clamp(0, 1).contiguous()}


def test_all_issue_models_are_configured():
    assert {"cae", "dae", "usad", "linear_ae", "dense_ae", "vae"} <= set(MODELS)
    assert {"sparse_ae", "contractive_ae", "aae", "ganomaly"} <= set(MODELS)


@pytest.mark.parametrize("model", MODELS)
def test_overfits_one_batch(model):
    pl.seed_everything(0)
    cfg = _cfg(model, "model.module.optimizer.lr=2e-3")
    module = build_module(cfg)
    batch = _batch()
    detector = Detector(module, Preprocess.create(image_size=32, channels=1), map_settings(cfg))

    def error() -> float:
        module.eval()
        with torch.no_grad():
            if RECONSTRUCTION not in inspectable(module).gives:
                # feature_ae reconstructs features: its map is that error.
                return float(module.inspect(batch["image"], Wants()).map.mean())
            wants = Wants(map=False, reconstruction=True)
            recons = module.inspect(batch["image"], wants).reconstructions
        module.train()
        return float(sum(w * torch.mean((r - batch["image"]) ** 2) for w, r in recons))

    before = error()
    # Lightning counts optimiser steps: USAD and GANomaly take two per batch, the AAE
    # three; 60 batches each, within USAD's first epoch so that n = 1 throughout.
    steps = 60 * PHASES.get(model, 1)
    make_trainer(steps).fit(module, DataLoader([batch] * steps, batch_size=None))
    after = error()
    assert after < 0.5 * before, (model, before, after)
    assert detector.anomaly_maps(batch["image"])[0].shape == (1, 32, 32)


@pytest.mark.parametrize("model", MODELS)
def test_checkpoint_reloads_alone_and_scores_identically(model, tmp_path):
    from anomaly.model_folder import save_model_folder

    pl.seed_everything(0)
    cfg = _cfg(model)
    module = build_module(cfg)
    trainer = make_trainer(2)
    trainer.fit(module, DataLoader([_batch()] * 2, batch_size=None))
    preprocess = Preprocess.create(image_size=32, channels=1)
    folder = save_model_folder(
        tmp_path / "model",
        trainer=trainer,
        detector=Detector(
            module,
            preprocess,
            map_settings(cfg),
            calibration=Calibration(image_threshold=1.0, pixel_threshold=1.0),
            model_id="m",
        ),
        config_yaml="",
        model_name=model,
    )
    reloaded = type(module).load_from_checkpoint(folder / "model.ckpt")
    assert type(reloaded) is type(module)
    x = _batch()["image"]
    original = Detector(module, preprocess, map_settings(cfg)).anomaly_maps(x)
    again = load_detector(folder).anomaly_maps(x)
    assert all(torch.equal(a, b) for a, b in zip(original, again, strict=True))
