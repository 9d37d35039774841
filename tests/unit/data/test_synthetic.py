"""Synthetic anomalies (``anomaly/data/synthetic``) and the ``perlin_texture`` corruption built on them."""

from __future__ import annotations

import math

import pytest
import torch
from omegaconf import OmegaConf

from anomaly.cli import config_dir
from anomaly.errors import ConfigError
from anomaly.data.synthetic.anomalies import TEXTURES, perlin_texture, perlin_texture_with_mask
from anomaly.data.synthetic.perlin import perlin_mask, perlin_noise
from anomaly.training.corruptions import build_corruption

CONF = config_dir()


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("angle", [0.0, 0.7])
@pytest.mark.parametrize("scale", [(1, 1), (2, 8), (4, 4), (32, 32)])
def test_noise_is_bounded(scale, angle):
    noise = perlin_noise(48, 40, scale=scale, angle=angle, generator=_generator(1))
    assert noise.shape == (48, 40) and noise.dtype == torch.float32
    assert noise.abs().max() <= 1.0 + 1e-5


def test_noise_is_smooth_at_a_coarse_scale():
    noise = perlin_noise(64, 64, scale=(2, 2), angle=0.3, generator=_generator(2))
    steps = torch.cat([noise.diff(dim=0).flatten(), noise.diff(dim=1).flatten()]).abs()
    spread = noise.max() - noise.min()
    # 32 pixels per cell: one step moves a small part of the values' spread.
    assert spread > 0.5
    assert steps.max() < 0.1 * spread
    white = torch.rand(64, 64) * 2 - 1  # the same test fails for noise without structure
    assert white.diff(dim=0).abs().max() > 0.1 * (white.max() - white.min())


def test_noise_and_masks_follow_the_generator():
    a = perlin_noise(16, 16, scale=(4, 4), generator=_generator(5))
    b = perlin_noise(16, 16, scale=(4, 4), generator=_generator(5))
    c = perlin_noise(16, 16, scale=(4, 4), generator=_generator(6))
    assert torch.equal(a, b) and not torch.equal(a, c)
    m1 = perlin_mask(32, 32, threshold=0.2, generator=_generator(7))
    m2 = perlin_mask(32, 32, threshold=0.2, generator=_generator(7))
    assert torch.equal(m1, m2)


def test_mask_coverage_shrinks_as_the_threshold_rises():
    def coverage(threshold: float) -> float:
        masks = [perlin_mask(32, 32, threshold=threshold) for _ in range(40)]
        return torch.stack(masks).float().mean().item()

    low, high = coverage(0.2), coverage(0.5)
    assert 0.0 < high < low < 1.0
    mask = perlin_mask(20, 30, min_scale=2, max_scale=4, rotate=False)
    assert mask.shape == (20, 30) and mask.dtype == torch.bool


@pytest.mark.parametrize("source", ["textures", "batch", "both", "shade", "all"])
@pytest.mark.parametrize("channels", [1, 3])
def test_only_masked_pixels_change_and_range_is_kept(source, channels):
    # Not square: a quarter-turned texture crop must still fit the image.
    x = torch.rand(6, channels, 24, 32)
    out, mask = perlin_texture_with_mask(x, source=source, threshold=0.2)
    assert out.shape == x.shape and out.dtype == x.dtype and out.device == x.device
    assert out.min() >= 0 and out.max() <= 1
    assert mask.shape == (6, 1, 24, 32) and mask.dtype == torch.bool
    changed = (out != x).any(dim=1, keepdim=True)
    assert changed.any()
    assert not (changed & ~mask).any()


@pytest.mark.parametrize("shape", ["region", "line"])
def test_regions_and_lines_are_opaque_and_only_change_their_mask(shape):
    x = torch.full((8, 1, 40, 30), 0.5)
    out, mask = perlin_texture_with_mask(x, source="shade", shapes=[shape])
    assert mask.any(dim=(1, 2, 3)).all()  # every image got an anomaly
    changed = out != x
    assert not (changed & ~mask).any()
    # Pasted opaque: every masked pixel moved by the full shade step (at least 0.1).
    assert ((out - x).abs()[mask] >= 0.1 - 1e-6).all()


def test_a_region_is_one_side_of_a_line_and_a_line_is_thin():
    torch.manual_seed(0)
    x = torch.rand(16, 1, 64, 48)
    _, regions = perlin_texture_with_mask(x, shapes=["region"])
    _, lines = perlin_texture_with_mask(x, shapes=["line"])
    area = regions.float().mean(dim=(1, 2, 3))
    assert (area > 0.03).all() and (area < 0.55).all()
    # A region touches the border: it is cut off by a line across the whole image.
    border = regions[..., 0, :].any(-1) | regions[..., -1, :].any(-1)
    border |= regions[..., :, 0].any(-1) | regions[..., :, -1].any(-1)
    assert border.all()
    # A curve at most 3 px wide and at most 0.8 of the longer side long.
    assert (lines.float().sum(dim=(1, 2, 3)) <= 3 * 3 * 0.8 * 64).all()
    assert (lines.float().mean(dim=(1, 2, 3)) < 0.1).all()


def test_shapes_are_mixed_per_image():
    torch.manual_seed(1)
    x = torch.rand(32, 1, 32, 32)
    _, mask = perlin_texture_with_mask(x, threshold=0.2, shapes=["perlin", "region", "line"])
    area = mask.float().mean(dim=(1, 2, 3))
    assert (area < 0.02).any() and (area > 0.05).any()


def test_opaque_textures_cover_the_whole_mask():
    x = torch.full((4, 3, 32, 32), 0.5, dtype=torch.float64)
    out, mask = perlin_texture_with_mask(x, threshold=-1.0, max_opacity=0.0)
    assert mask.float().mean() > 0.99  # Perlin values lie in [-1, 1]
    assert out.dtype == torch.float64
    assert (out != 0.5).float().mean() > 0.5


def test_a_mask_that_stays_empty_is_accepted():
    x = torch.rand(3, 1, 32, 32)
    out, mask = perlin_texture_with_mask(x, threshold=1.0)  # no Perlin value exceeds 1
    assert not mask.any() and torch.equal(out, x)


def test_a_single_image_can_be_its_own_texture_source():
    x = torch.rand(1, 1, 32, 32)
    out = perlin_texture(x, source="batch", threshold=-1.0, max_opacity=0.0)
    assert out.shape == x.shape and not torch.equal(out, x)


@pytest.mark.parametrize("name", TEXTURES)
def test_every_default_texture_loads_offline(name):
    x = torch.zeros(2, 3, 32, 32)
    out = perlin_texture(x, textures=[name], threshold=-1.0, max_opacity=0.0)
    assert out.max() > 0 and out.max() <= 1


def test_same_seed_same_corruption():
    x = torch.rand(4, 3, 32, 32)
    torch.manual_seed(3)
    first = perlin_texture(x, source="both")
    torch.manual_seed(3)
    again = perlin_texture(x, source="both")
    torch.manual_seed(4)
    other = perlin_texture(x, source="both")
    assert torch.equal(first, again) and not torch.equal(first, other)


def test_shipped_config_builds_and_corrupts():
    cfg = OmegaConf.load(CONF / "noise" / "perlin.yaml")
    corrupt = build_corruption(OmegaConf.to_container(cfg.corruptions))
    x = torch.rand(2, 1, 32, 32)
    assert corrupt is not None and corrupt(x).shape == x.shape


def _key(text: str) -> str:
    return text.replace("[", r"\[").replace("]", r"\]")


@pytest.mark.parametrize(
    ("params", "key"),
    [
        ({"min_scale": 3}, "noise.corruptions[0].min_scale"),
        ({"max_scale": 0}, "noise.corruptions[0].max_scale"),
        ({"max_scale": 8.0}, "noise.corruptions[0].max_scale"),
        ({"min_scale": 8, "max_scale": 4}, "noise.corruptions[0].max_scale"),
        ({"min_scale": 64}, "noise.corruptions[0].max_scale"),  # above the default 32
        ({"threshold": 1.5}, "noise.corruptions[0].threshold"),
        ({"threshold": -2}, "noise.corruptions[0].threshold"),
        ({"threshold": math.nan}, "noise.corruptions[0].threshold"),
        ({"max_opacity": 1.2}, "noise.corruptions[0].max_opacity"),
        ({"rotate": "yes"}, "noise.corruptions[0].rotate"),
        ({"source": "dtd"}, "noise.corruptions[0].source"),
        ({"textures": ["eagle"]}, "noise.corruptions[0].textures"),
        ({"textures": "brick"}, "noise.corruptions[0].textures"),
        ({"textures": []}, "noise.corruptions[0].textures"),
        ({"shapes": ["crack"]}, "noise.corruptions[0].shapes"),
        ({"shapes": "line"}, "noise.corruptions[0].shapes"),
        ({"shapes": []}, "noise.corruptions[0].shapes"),
        ({"opacity": 0.5}, "noise.corruptions[0]"),
    ],
)
def test_bad_perlin_specs_name_the_key(params, key):
    with pytest.raises(ConfigError, match=_key(key)):
        build_corruption([{"name": "perlin_texture", "p": 1.0, **params}])


def test_direct_calls_are_checked_too():
    with pytest.raises(ConfigError, match="perlin_mask.min_scale"):
        perlin_mask(8, 8, min_scale=3)
    with pytest.raises(ConfigError, match="perlin_texture.source"):
        perlin_texture(torch.rand(1, 1, 8, 8), source="dtd")


def test_shade_moves_the_surface_level_by_one_step_inside_the_mask():
    torch.manual_seed(3)
    x = 0.3 + 0.4 * torch.rand(6, 1, 32, 32)  # away from 0 and 1: no clipping
    out, mask = perlin_texture_with_mask(x, source="shade", threshold=0.0)
    for i in range(6):
        if not mask[i].any():
            continue
        step = (out[i] - x[i])[mask[i]]
        # The surface keeps its texture: one constant step, of 0.1 to 0.3 either way.
        assert float(step.max() - step.min()) < 1e-5
        assert 0.1 - 1e-5 <= abs(float(step[0])) <= 0.3 + 1e-5
        assert torch.equal(out[i][~mask[i]], x[i][~mask[i]])
