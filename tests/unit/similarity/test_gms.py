import numpy as np
import pytest
import torch
from scipy import ndimage

from anomaly.errors import ConfigError
from anomaly.scoring.maps import MAP_KINDS, MapSettings, anomaly_map, error_map
from anomaly.similarity.gms import GMS_C, gms_map, msgms_map


def _t(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))[None, None]


def _reference_gms(a: np.ndarray, b: np.ndarray, c: float) -> np.ndarray:
    """GMS from scipy's Prewitt filters (unnormalised, hence the / 3), float64."""

    def magnitude(img: np.ndarray) -> np.ndarray:
        gx = ndimage.prewitt(img, axis=1, mode="reflect") / 3.0
        gy = ndimage.prewitt(img, axis=0, mode="reflect") / 3.0
        return np.hypot(gx, gy)

    ga, gb = magnitude(a.astype(np.float64)), magnitude(b.astype(np.float64))
    return (2 * ga * gb + c) / (ga**2 + gb**2 + c)


def test_identical_images_give_exactly_one():
    x = torch.rand(2, 3, 32, 24)
    assert torch.equal(gms_map(x, x), torch.ones_like(x))
    assert torch.equal(msgms_map(x, x), torch.ones_like(x))
    m = error_map(x, x, kind="msgms")
    assert m.shape == (2, 1, 32, 24)
    assert torch.equal(m, torch.zeros_like(m))


def test_step_edge_matches_hand_computed_prewitt():
    # A vertical step edge: columns 0-1 dark, 2-4 bright; the reconstruction has a weaker
    # step.
    a = np.zeros((5, 5))
    a[:, 2:] = 0.8
    a[:, :2] = 0.2
    b = np.full((5, 5), 0.2)
    b[:, 2:] = 0.5
    ours = gms_map(_t(a), _t(b)).double().numpy()[0, 0]
    # By hand: Prewitt / 3 sums (right - left column) over the 3 rows and divides by 3, so
    # with constant columns |g| = right - left: 0.6 for a at columns 1 and 2 (they see the
    # step), 0.3 for b, 0 elsewhere; the vertical gradient is 0.
    ga = np.zeros((5, 5))
    ga[:, 1:3] = 0.6
    gb = np.zeros((5, 5))
    gb[:, 1:3] = 0.3
    hand = (2 * ga * gb + GMS_C) / (ga**2 + gb**2 + GMS_C)
    np.testing.assert_allclose(ours[1:-1, 1:-1], hand[1:-1, 1:-1], atol=1e-6)
    # scipy's Prewitt with the same (edge-repeating) border agrees everywhere, border too.
    np.testing.assert_allclose(ours, _reference_gms(a, b, GMS_C), atol=1e-6)
    assert ours[2, 2] == pytest.approx((2 * 0.18 + GMS_C) / (0.36 + 0.09 + GMS_C), abs=1e-6)


def test_random_images_match_scipy_reference():
    rng = np.random.default_rng(0)
    a, b = rng.random((9, 13)), rng.random((9, 13))
    ours = gms_map(_t(a), _t(b)).double().numpy()[0, 0]
    np.testing.assert_allclose(ours, _reference_gms(a, b, GMS_C), atol=1e-5)


def test_msgms_is_the_mean_of_the_upsampled_scales():
    x, r = torch.rand(1, 1, 32, 32), torch.rand(1, 1, 32, 32)
    expected = torch.zeros_like(x)
    xs, rs = x, r
    for scale in range(4):
        if scale:
            xs, rs = torch.nn.functional.avg_pool2d(xs, 2), torch.nn.functional.avg_pool2d(rs, 2)
        expected += torch.nn.functional.interpolate(
            gms_map(xs, rs), size=(32, 32), mode="bilinear", align_corners=False
        )
    assert torch.allclose(msgms_map(x, r), expected / 4, atol=1e-6)
    assert torch.allclose(msgms_map(x, r, scales=1), gms_map(x, r))


def test_removed_line_stands_out():
    x = torch.full((1, 1, 64, 64), 0.3)
    x[..., 30:33, 8:56] = 0.9  # a horizontal line
    recon = torch.full_like(x, 0.3)  # the reconstruction lost it
    m = anomaly_map(x, [(1.0, recon)], MapSettings(kind="msgms"))
    on_line = m[..., 31, 16:48].min()
    far_away = torch.cat([m[..., :12, :].flatten(), m[..., 52:, :].flatten()]).max()
    assert on_line > 0.3
    assert far_away < 0.1 * on_line


def test_brightness_offset_matters_much_less_than_for_l2():
    rng = np.random.default_rng(1)
    x = _t(ndimage.gaussian_filter(rng.random((48, 48)), 2.0) * 0.6 + 0.1)
    shifted = x + 0.2  # same structure, brighter
    msgms = error_map(x, shifted, kind="msgms")
    l2 = error_map(x, shifted, kind="l2")
    assert l2.min().item() == pytest.approx(0.04, rel=1e-4)
    assert msgms.abs().max().item() < 1e-5
    # For contrast: the same amount of L2 error made of noise is not ignored.
    noisy = (x + 0.2 * torch.sign(torch.randn_like(x))).clamp(0, 1)
    assert error_map(x, noisy, kind="msgms").mean() > 100 * msgms.abs().max()


@pytest.mark.parametrize(
    ("shape", "scales_used"),
    [((2, 1, 16, 16), 3), ((1, 3, 20, 36), 3), ((1, 1, 24, 48), 4), ((1, 2, 5, 7), 1)],
)
def test_shapes_and_early_stop_on_small_images(shape, scales_used):
    torch.manual_seed(0)
    x, r = torch.rand(shape), torch.rand(shape)
    m = msgms_map(x, r)
    assert m.shape == shape
    assert ((m > 0) & (m <= 1)).all()
    assert torch.allclose(m, msgms_map(x, r, scales=scales_used))
    assert error_map(x, r, kind="msgms").shape == (shape[0], 1, *shape[2:])


def test_per_channel_maps():
    x = torch.rand(1, 2, 16, 16)
    r = x.clone()
    r[:, 1] = torch.rand(16, 16)  # only channel 1 differs
    m = msgms_map(x, r)
    assert torch.equal(m[:, 0], torch.ones_like(m[:, 0]))
    assert (m[:, 1] < 1).any()
    assert torch.allclose(error_map(x, r, kind="msgms"), (1 - m).mean(dim=1, keepdim=True))


def test_gradients_flow_and_half_precision_is_safe():
    x = torch.rand(1, 1, 16, 16)
    recon = torch.rand(1, 1, 16, 16, requires_grad=True)
    (1 - msgms_map(x, recon)).mean().backward()
    assert torch.isfinite(recon.grad).all() and recon.grad.abs().sum() > 0
    # A flat reconstruction sits on the kink of |gradient| at 0: zero, not NaN, gradients.
    flat = torch.full((1, 1, 16, 16), 0.5, requires_grad=True)
    (1 - msgms_map(x, flat)).mean().backward()
    assert torch.isfinite(flat.grad).all()
    half = msgms_map(x.half(), x.half())
    assert half.dtype == torch.float32 and torch.equal(half, torch.ones_like(half))


def test_bad_inputs_raise_value_errors():
    with pytest.raises(ValueError, match=r"\(1, 1, 8, 8\) and \(1, 1, 8, 9\)"):
        gms_map(torch.rand(1, 1, 8, 8), torch.rand(1, 1, 8, 9))
    with pytest.raises(ValueError, match="3x3"):
        msgms_map(torch.rand(1, 1, 2, 8), torch.rand(1, 1, 2, 8))
    with pytest.raises(ValueError, match="scales"):
        msgms_map(torch.rand(1, 1, 8, 8), torch.rand(1, 1, 8, 8), scales=0)
    with pytest.raises(ValueError, match="c must be positive"):
        gms_map(torch.rand(1, 1, 8, 8), torch.rand(1, 1, 8, 8), c=0.0)


def test_msgms_is_a_valid_map_kind():
    assert "msgms" in MAP_KINDS
    assert MapSettings(kind="msgms").kind == "msgms"
    with pytest.raises(ConfigError, match="msgms"):
        MapSettings(kind="gms")
