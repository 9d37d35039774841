import pytest
import torch

from anomaly.errors import ConfigError
from anomaly.similarity.ssim import ssim
from anomaly.training.losses import build_loss


def test_l2_is_mse():
    a, b = torch.zeros(1, 1, 4, 4), torch.full((1, 1, 4, 4), 0.5)
    assert build_loss("l2")(a, b).item() == pytest.approx(0.25)


def test_ssim_loss_is_one_minus_mean_ssim():
    a, b = torch.rand(3, 1, 16, 16), torch.rand(3, 1, 16, 16)
    expected = 1 - ssim(a, b, data_range=1.0).mean()
    assert build_loss("ssim")(a, b).item() == pytest.approx(expected.item())


def test_unknown_loss_names_the_key():
    with pytest.raises(ConfigError, match="loss.name"):
        build_loss("hinge")


def test_l1_and_weighted_l2_ssim():
    a, b = torch.rand(2, 1, 16, 16), torch.rand(2, 1, 16, 16)
    assert build_loss("l1")(a, b).item() == pytest.approx((a - b).abs().mean().item())
    mixed = build_loss("l2_ssim", ssim_weight=0.25)(a, b).item()
    expected = 0.75 * build_loss("l2")(a, b).item() + 0.25 * build_loss("ssim")(a, b).item()
    assert mixed == pytest.approx(expected, rel=1e-6)
    with pytest.raises(ConfigError, match="loss.ssim_weight"):
        build_loss("l2_ssim", ssim_weight=2.0)


def test_ms_ssim_loss_is_zero_for_identical_images():
    a = torch.rand(2, 1, 48, 48)
    assert build_loss("ms_ssim")(a, a).item() == pytest.approx(0.0, abs=1e-5)


def test_msgms_loss_is_mean_of_one_minus_msgms_and_zero_when_identical():
    from anomaly.similarity.gms import msgms_map

    a, b = torch.rand(2, 3, 16, 24), torch.rand(2, 3, 16, 24)
    loss = build_loss("msgms")
    assert loss(a, b).item() == pytest.approx((1 - msgms_map(a, b)).mean().item(), rel=1e-6)
    assert loss(a, a).item() == 0.0


def test_riad_loss_is_l2_plus_ssim_plus_msgms_and_backpropagates():
    a = torch.rand(2, 1, 16, 16)
    b = torch.rand(2, 1, 16, 16, requires_grad=True)
    riad = build_loss("riad", ssim_sigma=1.0)(b, a)
    parts = [build_loss(n, ssim_sigma=1.0)(b, a).item() for n in ("l2", "ssim", "msgms")]
    assert riad.item() == pytest.approx(sum(parts), rel=1e-6)
    riad.backward()
    assert torch.isfinite(b.grad).all() and b.grad.abs().sum() > 0
    assert build_loss("riad")(a, a).item() == pytest.approx(0.0, abs=1e-5)


def test_new_loss_configs_build():
    from pathlib import Path

    from omegaconf import OmegaConf

    conf = Path(__file__).resolve().parents[3] / "conf" / "loss"
    for name in ("msgms", "riad"):
        cfg = OmegaConf.to_container(OmegaConf.load(conf / f"{name}.yaml"))
        assert cfg["name"] == name
        assert callable(build_loss(**cfg))
