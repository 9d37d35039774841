"""model=feature_ae's module: its config, its add-ons and its training length."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from anomaly.data.transforms import Preprocess
from anomaly.errors import ConfigError
from anomaly.jobs.train import epochs_for
from anomaly.settings import enabled_addons
from anomaly.training.factory import build_module

CONF = Path(__file__).resolve().parents[3] / "conf"


def _cfg(*overrides: str):
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        return compose(
            "config",
            overrides=[
                "model=feature_ae",
                "data.root=unused",
                "model.module.backbone.weights=none",
                *overrides,
            ],
        )


def test_its_config_states_its_side_and_training_length():
    cfg = _cfg()
    assert cfg.data.short_side == 224 and cfg.data.image_size == "auto"
    assert cfg.trainer.max_epochs == 10 and cfg.trainer.min_steps == 100
    # Another model keeps the from-scratch side and length.
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        other = compose("config", overrides=["model=cae", "data.root=unused"])
    assert other.data.short_side == 128 and other.trainer.max_epochs == 30
    assert other.trainer.min_steps == 0


def test_the_config_weighs_the_fine_stage_and_an_old_checkpoint_keeps_its_map():
    module = build_module(_cfg())
    assert module.network.fine_weight == 0.25
    assert build_module(_cfg("model.module.fine_weight=null")).network.fine_weight is None
    # A checkpoint saved before the setting existed has no such hyperparameter: it loads
    # with the map it was calibrated with (the mean over all channels).
    hparams = dict(module.hparams)
    del hparams["fine_weight"]
    assert type(module)(**hparams).network.fine_weight is None
    with pytest.raises(ConfigError, match="fine_weight"):
        build_module(_cfg("model.module.fine_weight=2"))


def test_the_config_pools_logs_and_an_old_checkpoint_keeps_its_features():

    from anomaly.models.inspection import Wants, pool_features

    module = build_module(_cfg()).eval()
    assert module.network.pooling == "log"
    x = torch.rand(2, 1, 64, 64)
    with torch.no_grad():
        f = module.network.features(x)
        got = module.network.inspect(x, Wants(map=False, image_features=True)).image_features
    torch.testing.assert_close(got, pool_features(f, "log"))
    # A checkpoint saved before the setting existed has no such hyperparameter: its
    # features.npz was fitted on the raw statistics, and it keeps them.
    hparams = dict(module.hparams)
    del hparams["pooling"]
    assert type(module)(**hparams).network.pooling == "raw"
    with pytest.raises(ConfigError, match="pooling"):
        build_module(_cfg("model.module.pooling=median"))


def test_auto_adds_the_patch_map_where_the_photos_are_not_framed_alike():
    preprocess = Preprocess.create(image_size=64, channels=1)
    cfg = _cfg()
    module = build_module(cfg)
    names = {a.name for a in enabled_addons(cfg, module, preprocess, framed=True)}
    assert names == {"feature_score", "position_score"}
    names = {a.name for a in enabled_addons(cfg, module, preprocess, framed=False)}
    assert names == {"feature_score", "patch_map"}
    # A memory of normal positions needs photos: below 200, auto leaves it off.
    for n, added in ((199, False), (200, True)):
        names = {a.name for a in enabled_addons(cfg, module, preprocess, n_images=n)}
        assert ("patch_map" in names) is added and ("position_score" in names) is not added
    forced = _cfg("scoring.patch_map.enabled=true")
    assert "patch_map" in {a.name for a in enabled_addons(forced, module, preprocess, n_images=5)}
    cfg = _cfg("scoring.patch_map.enabled=true")
    names = {a.name for a in enabled_addons(cfg, module, preprocess, framed=True)}
    assert names == {"feature_score", "patch_map"}
    # Its share of the map is the model's own, unless given.
    assert cfg.scoring.patch_map.weight == 1.0
    assert _cfg("scoring.patch_map.weight=0.3").scoring.patch_map.weight == 0.3
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        draem = compose("config", overrides=["model=draem", "data.root=unused"])
    assert draem.scoring.patch_map.weight == 0.5


def test_the_patch_map_compares_the_coarse_stages_at_their_own_grid():
    from anomaly.models.inspection import Wants

    module = build_module(_cfg()).eval()
    network = module.network
    assert network.patch_grid == "coarse" and network.coarse_step == 4
    x = torch.rand(2, 1, 64, 96)
    with torch.no_grad():
        f = network.features(x)
        got = network.inspect(x, Wants(map=False, patch_features=True)).patch_features
    assert f.shape == (2, 40 + 192 + 320, 8, 12)
    # The middle of each stride-32 cell, the 512 coarse channels only.
    assert got.shape == (2, 512, 2, 3)
    torch.testing.assert_close(got[:, :, 1, 2], f[:, 40:, 1 * 4 + 2, 2 * 4 + 2])
    # A checkpoint saved before the setting compared every position of every channel.
    hparams = dict(module.hparams)
    del hparams["patch_grid"]
    old = type(module)(**hparams).eval()
    assert old.network.patch_grid == "fine" and old.auto_off == frozenset({"patch_map"})
    with torch.no_grad():
        torch.testing.assert_close(
            old.network.inspect(x, Wants(map=False, patch_features=True)).patch_features,
            old.network.features(x),
        )
    with pytest.raises(ConfigError, match="patch_grid"):
        build_module(_cfg("model.module.patch_grid=medium"))


def test_min_steps_adds_epochs_for_small_data_only():
    assert epochs_for(10, 100, 2) == 50  # 30 photos in batches of 16
    assert epochs_for(10, 100, 43) == 10  # 685 photos: 430 batches already
    assert epochs_for(10, 100, 9) == 12  # ceil(100 / 9)
    assert epochs_for(10, 0, 1) == 10
