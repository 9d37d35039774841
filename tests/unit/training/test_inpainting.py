"""Reconstruction by inpainting: the masks, the no-peeking property and the U-Net."""

from __future__ import annotations

import pytest
import torch

from anomaly.errors import ConfigError
from anomaly.models.unet import UNet
from anomaly.training.inpainting import InpaintingModule, disjoint_masks

NET = {"_target_": "anomaly.models.unet.UNet", "channels": 1, "base": 4, "depth": 2}


@pytest.mark.parametrize(("h", "w", "cell", "n"), [(16, 16, 2, 3), (20, 12, 8, 3), (9, 7, 4, 2)])
def test_masks_are_disjoint_and_cover_every_pixel_once(h, w, cell, n):
    masks = disjoint_masks(h, w, cell, n, torch.Generator().manual_seed(0))
    assert masks.shape == (n, 1, h, w)
    assert torch.equal(masks.sum(0), torch.ones(1, h, w))
    # Whole cells: a cell's pixels all belong to the same mask.
    owner = masks.argmax(0)[0]
    assert torch.equal(owner[::cell, ::cell].repeat_interleave(cell, 0).repeat_interleave(
        cell, 1)[:h, :w], owner)  # fmt: skip


def test_cells_are_dealt_evenly():
    masks = disjoint_masks(64, 64, 4, 3, torch.Generator().manual_seed(1))
    cells_per_mask = masks.sum((1, 2, 3)) / 16
    assert cells_per_mask.max() - cells_per_mask.min() <= 1  # 256 cells dealt to 3 masks


def test_seeded_masks_repeat_and_unseeded_differ():
    a = disjoint_masks(32, 32, 4, 3, torch.Generator().manual_seed(5))
    b = disjoint_masks(32, 32, 4, 3, torch.Generator().manual_seed(5))
    c = disjoint_masks(32, 32, 4, 3, torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_every_pixel_is_predicted_without_seeing_itself():
    torch.manual_seed(0)
    module = InpaintingModule(net=NET, cell_sizes=[4], n_masks=3).eval()
    x = torch.rand(1, 1, 16, 16)
    changed = x.clone()
    changed[0, 0, 5, 9] = 1.0 - changed[0, 0, 5, 9]
    with torch.no_grad():
        ((_, before),) = module.reconstructions(x)
        ((_, after),) = module.reconstructions(changed)
    # The pixel's own prediction comes from the pass that hid it; its neighbours' do not.
    assert after[0, 0, 5, 9] == before[0, 0, 5, 9]
    assert not torch.equal(after, before)


def test_scoring_is_deterministic_and_averages_cell_sizes():
    torch.manual_seed(0)
    module = InpaintingModule(net=NET, cell_sizes=[2, 4, 8], n_masks=2).eval()
    x = torch.rand(2, 1, 16, 16)
    with torch.no_grad():
        first, second = module.reconstructions(x), module.reconstructions(x)
    assert [w for w, _ in first] == pytest.approx([1 / 3] * 3)
    assert all(torch.equal(a, b) for (_, a), (_, b) in zip(first, second, strict=True))
    assert first[0][1].shape == x.shape


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [({"cell_sizes": []}, "cell_sizes"), ({"cell_sizes": [0, 4]}, "cell_sizes"),
     ({"n_masks": 1}, "n_masks"), ({"lr_schedule": "linear"}, "lr_schedule")],
)  # fmt: skip
def test_bad_settings_name_the_key(kwargs, key):
    with pytest.raises(ConfigError, match=f"model.module.{key}"):
        InpaintingModule(net=NET, **kwargs)


def test_unet_shapes_range_and_size_check():
    net = UNet(channels=3, base=4, depth=3).eval()
    out = net(torch.rand(2, 3, 24, 40))
    assert out.shape == (2, 3, 24, 40) and out.min() >= 0 and out.max() <= 1
    with pytest.raises(ValueError, match="divisible by 8"):
        net(torch.rand(1, 3, 20, 40))
