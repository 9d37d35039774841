"""Config to settings (anomaly/settings.py): what the shipped config turns into."""

from __future__ import annotations

import inspect

from hydra import compose, initialize_config_dir

from anomaly.cli import config_dir
from anomaly.scoring.addons import FEATURE_SCORE, PATCH_MAP
from anomaly.scoring.fitting import CalibrationSpec, calibrate, fit_patches
from anomaly.settings import addon_settings, calibration_spec, loading


def _cfg(*overrides: str):
    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        return compose("config", overrides=[*overrides, "data.root=."])


def test_the_shipped_scoring_config_becomes_typed_settings():
    cfg = _cfg("scoring.feature_score.map_weight=0.7", "scoring.batch_size=8")
    spec = calibration_spec(cfg)
    assert isinstance(spec, CalibrationSpec) and spec.map_weight == 0.7
    assert spec.image["method"] == cfg.scoring.calibration.image.method
    assert loading(cfg).batch_size == 8 and loading(cfg).num_workers == 0
    patch = addon_settings(cfg, PATCH_MAP)
    assert patch == {"coreset": 0.25, "max_patches": 20000}
    assert addon_settings(cfg, FEATURE_SCORE) == {}


def test_a_model_may_state_its_map_weight():
    assert calibration_spec(_cfg()).map_weight == 0.25  # feature_ae, the default
    assert calibration_spec(_cfg("model=draem")).map_weight == 0.5
    given = _cfg("scoring.feature_score.map_weight=0.7")
    assert calibration_spec(given).map_weight == 0.7


def test_the_librarys_own_defaults_are_the_shipped_configs():
    # The commands take every value from the config; the Python API's keyword defaults
    # must not tell another story (for a model that states no weight of its own).
    cfg = _cfg("model=draem").scoring
    spec = CalibrationSpec()
    assert (spec.map_weight, spec.patch_weight) == (
        cfg.feature_score.map_weight,
        cfg.patch_map.weight,
    )
    defaults = inspect.signature(calibrate).parameters
    assert defaults["map_weight"].default == cfg.feature_score.map_weight
    assert defaults["patch_weight"].default == cfg.patch_map.weight
    defaults = inspect.signature(fit_patches).parameters
    assert defaults["coreset"].default == cfg.patch_map.coreset
    assert defaults["max_patches"].default == cfg.patch_map.max_patches
