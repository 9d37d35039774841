import numpy as np
import pytest
import torch
from scipy import ndimage
from skimage import data as skdata
from skimage.metrics import structural_similarity

from anomaly.similarity.ssim import gaussian_filter, ssim


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


def _reference_ms_ssim(a: np.ndarray, b: np.ndarray, scales: int) -> float:
    """Independent float64 MS-SSIM with scipy: cs at fine scales, full SSIM at the last."""
    weights = np.array([0.0448, 0.2856, 0.3001, 0.2363, 0.1333][:scales])
    weights = weights / weights.sum()
    c1, c2 = 0.01**2, 0.03**2
    values = []
    for s in range(scales):
        if s:
            a = a.reshape(a.shape[0] // 2, 2, a.shape[1] // 2, 2).mean(axis=(1, 3))
            b = b.reshape(b.shape[0] // 2, 2, b.shape[1] // 2, 2).mean(axis=(1, 3))
        f = lambda v: ndimage.gaussian_filter(v, 1.5, truncate=3.5)  # noqa: E731
        ua, ub = f(a), f(b)
        va, vb, cov = f(a * a) - ua**2, f(b * b) - ub**2, f(a * b) - ua * ub
        cs = (2 * cov + c2) / (va + vb + c2)
        full = (2 * ua * ub + c1) / (ua**2 + ub**2 + c1) * cs
        term = full if s == scales - 1 else cs
        values.append(max(term[5:-5, 5:-5].mean(), 0.0))
    return float(np.prod(np.array(values) ** weights))


@pytest.mark.parametrize(("size", "scales"), [(48, 3), (176, 5), (20, 1)])
def test_ms_ssim_matches_an_independent_reference(size, scales):
    from anomaly.similarity.ssim import ms_ssim

    rng = np.random.default_rng(size)
    a = ndimage.gaussian_filter(rng.random((size, size)), 1.0)
    b = np.clip(a + rng.normal(0, 0.05, a.shape), 0, 1)
    ours = ms_ssim(_t(a), _t(b), data_range=1.0).item()
    assert ours == pytest.approx(_reference_ms_ssim(a, b, scales), abs=1e-4)
    assert ms_ssim(_t(a), _t(a), data_range=1.0).item() == pytest.approx(1.0, abs=1e-5)
