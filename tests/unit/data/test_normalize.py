"""Per-image intensity normalisation (data.normalize)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from anomaly.data.transforms import Preprocess, standardize, standardize_batch
from anomaly.errors import ConfigError


def test_exposure_differences_disappear():
    rng = np.random.default_rng(0)
    surface = rng.uniform(0.3, 0.5, (40, 30, 1))
    dark, bright = surface * 0.5, surface * 1.4 + 0.1
    pre = Preprocess.create(image_size=[40, 30], channels=1, normalize="mean_std")
    a, b = pre(dark), pre(bright)
    assert torch.allclose(a, b, atol=1e-5)
    assert float(a.mean()) == pytest.approx(0.5, abs=1e-4)
    assert float(a.std()) == pytest.approx(0.15, abs=1e-3)
    # Without normalisation the two exposures differ.
    plain = Preprocess.create(image_size=[40, 30], channels=1)
    assert (plain(bright) - plain(dark)).abs().mean() > 0.1


def test_flat_image_only_moves_its_mean():
    out = standardize(torch.full((1, 8, 8), 0.9))
    assert torch.allclose(out, torch.full((1, 8, 8), 0.5))


def test_setting_is_stored_and_checked():
    pre = Preprocess.create(image_size=32, channels=1, normalize="mean_std")
    assert Preprocess.create(**pre.to_dict()) == pre
    assert Preprocess.create(image_size=32, channels=1).normalize == "none"
    with pytest.raises(ConfigError, match="data.normalize"):
        Preprocess.create(image_size=32, channels=1, normalize="clahe")


def test_a_batch_is_standardised_image_by_image():
    torch.manual_seed(0)
    batch = torch.rand(3, 2, 8, 6) * torch.tensor([0.2, 1.0, 3.0]).view(3, 1, 1, 1)
    batch[2] = 0.7  # a flat image in the batch keeps only its mean moved
    out = standardize_batch(batch)
    for image, got in zip(batch, out, strict=True):
        # Reference by hand: unbiased spread over all pixels and channels of that image.
        values = image.double().flatten()
        std = values.std()
        expected = (values - values.mean()) * (0.15 / std if std > 1e-6 else 1.0) + 0.5
        torch.testing.assert_close(got.flatten().double(), expected.clamp(0, 1), atol=1e-5, rtol=0)
    torch.testing.assert_close(out[0], standardize(batch[0]))
