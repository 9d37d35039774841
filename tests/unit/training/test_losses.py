import pytest
import torch

from anomaly.errors import ConfigError
from anomaly.scoring.ssim import ssim
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
