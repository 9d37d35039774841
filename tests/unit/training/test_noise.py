import pytest
import torch
from torch import nn

from anomaly.errors import ConfigError
from anomaly.training.autoencoder import AutoencoderModule
from anomaly.training.corruptions import (
    build_corruption,
    gaussian,
    salt_and_pepper,
    synthetic_defect,
    zero_mask,
)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def test_gaussian_noise_level_and_range():
    x = torch.full((4, 1, 64, 64), 0.5)
    out = gaussian(x, sigma=0.1)
    assert out.std().item() == pytest.approx(0.1, rel=0.05)
    assert gaussian(torch.ones(2, 1, 8, 8), sigma=0.5).max() <= 1.0  # clipped


def test_salt_and_pepper_share_and_channels_agree():
    out = salt_and_pepper(torch.full((8, 3, 64, 64), 0.5), amount=0.1)
    changed = (out != 0.5).any(dim=1)
    assert changed.float().mean().item() == pytest.approx(0.1, abs=0.01)
    assert torch.equal(out[:, 0], out[:, 1])  # the same pixels in every channel
    assert set(out.unique().tolist()) == {0.0, 0.5, 1.0}


def test_zero_mask_fraction():
    out = zero_mask(torch.ones(8, 1, 64, 64), fraction=0.25)
    assert (out == 0).float().mean().item() == pytest.approx(0.25, abs=0.01)


def test_synthetic_defects_change_a_region_and_stay_in_range():
    x = torch.full((6, 1, 48, 48), 0.5)
    x[3:] = torch.rand(3, 1, 48, 48)  # patches are cut from other images of the batch
    for kind in ("patch", "stroke", "blob"):
        out = synthetic_defect(x, kinds=(kind,), min_size=0.2, max_size=0.4)
        changed = (out != x).float().mean(dim=(1, 2, 3))
        assert (changed > 0).sum() >= 4, kind
        assert (changed < 0.6).all() and out.min() >= 0 and out.max() <= 1


def test_composition_follows_probabilities():
    x = torch.ones(400, 1, 8, 8)
    never = build_corruption([{"name": "zero_mask", "p": 0.0, "fraction": 1.0}])
    always = build_corruption([{"name": "zero_mask", "p": 1.0, "fraction": 1.0}])
    half = build_corruption([{"name": "zero_mask", "p": 0.5, "fraction": 1.0}])
    assert torch.equal(never(x), x) and (always(x) == 0).all()
    hit = (half(x) == 0).flatten(1).all(dim=1).float().mean().item()
    assert hit == pytest.approx(0.5, abs=0.08)
    assert build_corruption([]) is None


@pytest.mark.parametrize(
    ("spec", "key"),
    [
        ({"name": "blur"}, "noise.corruptions[0].name"),
        ({"name": "gaussian", "p": 1.5}, "noise.corruptions[0].p"),
        ({"name": "gaussian", "sigma": -0.1}, "noise.corruptions[0].sigma"),
        ({"name": "zero_mask", "fraction": float("nan")}, "noise.corruptions[0].fraction"),
        ({"name": "gaussian", "amount": 0.1}, "noise.corruptions[0]"),
    ],
)
def test_bad_specs_name_the_key(spec, key):
    with pytest.raises(ConfigError, match=key.replace("[", r"\[").replace("]", r"\]")):
        build_corruption([spec])


class Recorder(nn.Module):
    """Reconstructs by a learnable scale and remembers what it was given."""

    def __init__(self, **_: object) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))
        self.seen: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(x.detach().clone())
        return x * self.scale


def test_denoising_corrupts_training_inputs_only_and_targets_stay_clean():
    module = AutoencoderModule(
        {"_target_": "tests.unit.training.test_noise.Recorder"},
        noise=[{"name": "zero_mask", "p": 1.0, "fraction": 0.5}],
    )
    x = torch.rand(4, 1, 16, 16) + 0.1
    loss = module._loss(x, train=True)
    corrupted = module.net.seen[-1]
    assert (corrupted == 0).float().mean() == pytest.approx(0.5, abs=0.1)
    # The target is the clean image: the loss is the error of the corrupted reconstruction.
    assert loss.item() == pytest.approx(torch.mean((corrupted - x) ** 2).item(), rel=1e-5)
    module._loss(x, train=False)
    assert torch.equal(module.net.seen[-1], x)  # validation: never corrupted
    module.eval()
    module.reconstructions(x)
    assert torch.equal(module.net.seen[-1], x)  # scoring: never corrupted
