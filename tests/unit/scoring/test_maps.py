import pytest
import torch

from anomaly.errors import ConfigError
from anomaly.scoring.maps import MapSettings, anomaly_map, error_map, image_scores


def test_l2_map_hand_computed():
    x = torch.zeros(1, 2, 2, 2)
    r = torch.zeros(1, 2, 2, 2)
    r[0, 0, 0, 0] = 0.5  # channel 0 differs by 0.5 at one pixel
    m = error_map(x, r, kind="l2")
    assert m.shape == (1, 1, 2, 2)
    assert m[0, 0, 0, 0].item() == pytest.approx(0.25 / 2)  # mean over 2 channels
    assert m.sum().item() == pytest.approx(0.125)


def test_ssim_map_is_zero_for_perfect_reconstruction():
    x = torch.rand(2, 1, 16, 16)
    assert error_map(x, x, kind="ssim").abs().max().item() < 1e-5


def test_weighted_reconstructions_and_smoothing():
    x = torch.zeros(1, 1, 16, 16)
    r1, r2 = torch.full_like(x, 0.2), torch.full_like(x, 0.4)
    settings = MapSettings(kind="l2", smoothing_sigma=1.0)
    m = anomaly_map(x, [(0.5, r1), (0.5, r2)], settings)
    # Smoothing a constant map leaves it constant.
    assert torch.allclose(m, torch.full_like(m, 0.5 * 0.04 + 0.5 * 0.16), atol=1e-6)


def test_image_score_is_max():
    maps = torch.zeros(2, 1, 4, 4)
    maps[1, 0, 2, 3] = 0.7
    assert image_scores(maps).tolist() == pytest.approx([0.0, 0.7])


def test_settings_validate_with_key_names():
    with pytest.raises(ConfigError, match="scoring.map"):
        MapSettings(kind="l3")
    with pytest.raises(ConfigError, match="scoring.smoothing_sigma"):
        MapSettings(smoothing_sigma=float("nan"))


def test_mix_is_the_weighted_sum():
    x, r = torch.rand(2, 1, 16, 16), torch.rand(2, 1, 16, 16)
    mix = error_map(x, r, kind="mix", ssim_weight=0.25)
    expected = 0.75 * error_map(x, r, kind="l2") + 0.25 * error_map(x, r, kind="ssim")
    assert torch.allclose(mix, expected)


def test_topk_and_area_scores():
    maps = torch.zeros(1, 1, 10, 10)
    maps[0, 0, 0, :4] = torch.tensor([1.0, 0.8, 0.6, 0.4])
    assert image_scores(maps, method="topk", topk=2).item() == pytest.approx(0.9)
    assert image_scores(maps, method="area", pixel_threshold=0.5).item() == pytest.approx(0.03)
    with pytest.raises(ValueError, match="pixel threshold"):
        image_scores(maps, method="area")
