"""Numeric config checks: every shipped config passes, every bad number is named."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
from hydra import compose, initialize_config_dir

from anomaly.cli import config_dir
from anomaly.errors import ConfigError
from anomaly.jobs.checks import check_config

GROUPS = {
    group: sorted(p.stem for p in (config_dir() / group).glob("*.yaml"))
    for group in ("model", "noise", "loss")
}


def _compose(config: str = "config", overrides: tuple[str, ...] = ()) -> object:
    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        root = ["data.root=/x"] if config == "config" else []
        return compose(config, overrides=[*root, *overrides])


@pytest.mark.parametrize("model", GROUPS["model"])
def test_every_shipped_model_noise_and_loss_passes(model):
    for noise in GROUPS["noise"]:
        check_config(_compose(overrides=(f"model={model}", f"noise={noise}")))
    for loss in GROUPS["loss"]:
        check_config(_compose(overrides=(f"model={model}", f"loss={loss}")))


def test_every_shipped_command_config_and_experiment_passes():
    check_config(_compose("score", ("model_uri=m", "input=i")))
    check_config(_compose("calibrate", ("model_uri=m", "data.root=r")))
    check_config(_compose("evaluate", ("model_uri=m", "data.root=r")))
    check_config(_compose(overrides=("experiment=demo",)))


@pytest.mark.parametrize(
    ("override", "key", "valid"),
    [
        ("model.module.optimizer.lr=-0.001", "model.module.optimizer.lr", "positive"),
        ("model.module.optimizer.lr=nan", "model.module.optimizer.lr", "finite"),
        ("trainer.max_epochs=0", "trainer.max_epochs", "positive whole"),
        ("data.val_fraction=1.5", "data.val_fraction", "between 0 and 1"),
        ("data.batch_size=-4", "data.batch_size", "positive whole"),
        ("data.channels=2", "data.channels", "1 (gray) or 3"),
        ("scoring.calibration.image.q=1.0", "scoring.calibration.image.q", "quantile"),
        ("scoring.smoothing_sigma=-1", "scoring.smoothing_sigma", "0 or more"),
        ("model.module.reconstructive.base=0", "model.module.reconstructive.base", "positive"),
        ("model.module.anomaly_p=1.5", "model.module.anomaly_p", "(0, 1]"),
        ("model.module.perlin.threshold=2", "model.module.perlin.threshold", "Perlin level"),
        ("model.ensemble.members=0", "model.ensemble.members", "positive whole"),
        ("data.short_side=8", "data.short_side", "16 pixels or more"),
        ("data.max_aspect=0.5", "data.max_aspect", "1 or more"),
        ("trainer.min_steps=-1", "trainer.min_steps", "0 (off)"),
        ("model.ensemble.scales=[1.0,0]", "model.ensemble.scales.1", "(0, 4]"),
        # A member's own settings are checked by the rules of the common ones.
        (
            "model.ensemble.overrides=[{},{perlin:{threshold:2}}]",
            "model.ensemble.overrides.1.perlin.threshold",
            "Perlin level",
        ),
        ("seed=-1", "seed", "0 or more"),
    ],
)
def test_bad_numbers_are_named_with_what_is_valid(override, key, valid):
    with pytest.raises(ConfigError, match=rf"^{key}=") as info:
        # The model whose settings most rules are about (the default is feature_ae).
        check_config(_compose(overrides=("model=draem", override)))
    assert valid in str(info.value)


def test_corruption_lists_are_named_by_corruption():
    cfg = _compose(overrides=("model=dae", "noise=mixed", "noise.corruptions.1.p=2"))
    with pytest.raises(ConfigError, match=r"noise.corruptions.gaussian.p=2 .*probability"):
        check_config(cfg)


def test_plain_mappings_and_infinities():
    with pytest.raises(ConfigError, match="data.scale=inf is not a finite number"):
        check_config({"data": {"scale": math.inf}})
    check_config({"tracking": {"port": -1}, "hydra": {"x": -5}})  # not hyper-parameters


@pytest.mark.parametrize(
    ("command", "overrides", "expected"),
    [
        ("train", ["data.root=.", "trainer.max_epochs=-1"], "trainer.max_epochs=-1 is out"),
        ("train", ["data.root=/no/such"], "data.root=/no/such does not exist"),
        ("evaluate", ["model_uri=m", "data.root=/no/such"], "data.root=/no/such does not exist"),
        ("bench", ["data_root=/no/such"], "data_root=/no/such does not exist"),
    ],
)
def test_the_command_rejects_bad_settings_before_loading_torch(
    tmp_path, command, overrides, expected
):
    # The point of checking in the CLI: a typo costs a second, not the imports of a job.
    output = "output" if command in ("evaluate", "bench") else "output_dir"
    args = [command, *overrides, f"{output}={tmp_path / 'out'}"]
    probe = (
        "import sys\n"
        "from anomaly.cli import main\n"
        f"code = main({args!r})\n"
        "print('exit', code, 'torch' in sys.modules, 'lightning' in sys.modules)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    out = result.stdout + result.stderr
    assert expected in out, out
    assert "exit 2 False False" in result.stdout, out
