import numpy as np
import pytest
import torch
from scipy import ndimage
from skimage import data as skdata
from skimage.metrics import structural_similarity

from anomaly.scoring.ssim import gaussian_filter, ssim


def _reference(a: np.ndarray, b: np.ndarray) -> tuple[float, np.ndarray]:
    # float64: skimage's own float32 path is off by ~2.5e-4 on smooth real images.
    return structural_similarity(
        a.astype(np.float64),
        b.astype(np.float64),
        gaussian_weights=True,
        sigma=1.5,
        use_sample_covariance=False,
        data_range=1.0,
        full=True,
    )


def _t(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(a.astype(np.float32))[None, None]


@pytest.mark.parametrize("shape", [(32, 32), (11, 11), (40, 64), (97, 53)])
def test_matches_skimage_on_random_images(shape):
    rng = np.random.default_rng(sum(shape))
    a = rng.random(shape).astype(np.float32)
    b = np.clip(a + rng.normal(0, 0.15, shape), 0, 1).astype(np.float32)
    ref_mean, ref_map = _reference(a, b)
    mean, s_map = ssim(_t(a), _t(b), data_range=1.0, full=True)
    assert abs(mean.item() - ref_mean) < 1e-4
    assert np.abs(s_map[0, 0].numpy() - ref_map).max() < 1e-4
    assert abs(ssim(_t(a), _t(b), data_range=1.0).item() - ref_mean) < 1e-4


@pytest.mark.parametrize("name", ["camera", "brick"])
def test_matches_skimage_on_real_images(name):
    image = getattr(skdata, name)()[:160, :200].astype(np.float32) / 255.0
    distorted = np.clip(ndimage.gaussian_filter(image, 2.0) + 0.05, 0, 1).astype(np.float32)
    ref_mean, ref_map = _reference(image, distorted)
    mean, s_map = ssim(_t(image), _t(distorted), data_range=1.0, full=True)
    assert abs(mean.item() - ref_mean) < 1e-4
    assert np.abs(s_map[0, 0].numpy() - ref_map).max() < 1e-4


def test_multichannel_is_mean_over_channels():
    rng = np.random.default_rng(1)
    a = rng.random((3, 24, 24)).astype(np.float32)
    b = np.clip(a + rng.normal(0, 0.1, a.shape), 0, 1).astype(np.float32)
    ref = structural_similarity(
        a,
        b,
        gaussian_weights=True,
        sigma=1.5,
        use_sample_covariance=False,
        data_range=1.0,
        channel_axis=0,
    )
    assert (
        abs(ssim(torch.from_numpy(a)[None], torch.from_numpy(b)[None], data_range=1.0).item() - ref)
        < 1e-4
    )


def test_batched_equals_one_by_one():
    x, y = torch.rand(4, 1, 20, 20), torch.rand(4, 1, 20, 20)
    batched = ssim(x, y, data_range=1.0)
    single = torch.stack([ssim(x[i : i + 1], y[i : i + 1], data_range=1.0)[0] for i in range(4)])
    assert torch.allclose(batched, single, atol=1e-6)


def test_identical_images_have_ssim_one():
    x = torch.rand(2, 1, 16, 16)
    assert torch.allclose(ssim(x, x, data_range=1.0), torch.ones(2), atol=1e-6)


@pytest.mark.parametrize("shape", [(5, 7), (30, 12)])
def test_gaussian_filter_matches_scipy_reflect(shape):
    a = np.random.default_rng(3).random(shape).astype(np.float32)
    for sigma in (1.5, 3.0):
        ref = ndimage.gaussian_filter(a, sigma, truncate=3.5, mode="reflect")
        assert np.abs(gaussian_filter(_t(a), sigma)[0, 0].numpy() - ref).max() < 1e-5


def test_rejects_bad_input():
    with pytest.raises(ValueError, match="same shape"):
        ssim(torch.rand(1, 1, 16, 16), torch.rand(1, 1, 16, 15), data_range=1.0)
    with pytest.raises(ValueError, match="smaller than"):
        ssim(torch.rand(1, 1, 8, 8), torch.rand(1, 1, 8, 8), data_range=1.0)
    with pytest.raises(ValueError, match="data_range"):
        ssim(torch.rand(1, 1, 16, 16), torch.rand(1, 1, 16, 16), data_range=0)
