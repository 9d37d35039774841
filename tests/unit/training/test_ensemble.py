"""Ensembles: the mean of the members' maps, members at their own resolution, one training."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from anomaly.data.synthetic.anomalies import perlin_texture_with_mask
from anomaly.data.transforms import Preprocess, standardize_batch
from anomaly.errors import ConfigError
from anomaly.models.inspection import Wants
from anomaly.scoring.detector import Detector
from anomaly.scoring.maps import MapSettings
from anomaly.scoring.metrics import auroc
from anomaly.training.draem import DraemModule
from anomaly.training.ensemble import EnsembleModule, member_size, merge_settings
from tests.conftest import TINY_DRAEM, make_trainer

DRAEM = TINY_DRAEM


def test_member_sizes_are_scaled_and_rounded_to_multiples_of_16():
    assert member_size((128, 112), 1.0) == (128, 112)
    # 192 x 2/3 = 128 exactly; 160 x 0.67 = 107.2, nearest multiple of 16: 112.
    assert member_size((192, 160), 0.67) == (128, 112)
    assert member_size((32, 32), 0.5) == (16, 16)
    assert member_size((32, 32), 0.1) == (16, 16)  # never below 16


def _recon(module, x):
    return module.inspect(x, Wants(map=False, reconstruction=True)).reconstructions[0][1]


def test_map_is_the_mean_of_the_members_maps_at_their_own_resolution():
    torch.manual_seed(0)
    ensemble = EnsembleModule(DRAEM, members=2, scales=[1.0, 0.5]).eval()
    assert all(isinstance(m, DraemModule) for m in ensemble.members)
    # Each member starts from its own initialisation.
    first, second = (m.discriminative.out.weight for m in ensemble.members)
    assert not torch.equal(first, second)
    x = torch.rand(3, 1, 32, 48)
    with torch.no_grad():
        full = ensemble.members[0](x)
        half_input = F.interpolate(x, size=(16, 32), mode="bilinear", antialias=True)
        half = ensemble.members[1](half_input)
        expected = (full + F.interpolate(half, size=(32, 48), mode="bilinear")) / 2
        got = ensemble(x)
        assert got.shape == (3, 1, 32, 48)
        torch.testing.assert_close(got, expected)
        # Pictures: the first member's reconstruction at the input's size.
        recon = _recon(ensemble, x)
        assert recon.shape == x.shape
        torch.testing.assert_close(recon, _recon(ensemble.members[0], x))


def test_overrides_give_each_member_its_own_settings(tmp_path):
    member = dict(DRAEM, perlin={"max_scale": 4, "source": "textures", "shapes": ["perlin"]})
    overrides = [{}, {"segmenter_prior": 0.5, "perlin": {"shapes": ["perlin", "region"]}}]
    ensemble = EnsembleModule(member, members=2, overrides=overrides)
    first, second = ensemble.members
    assert first.perlin == {"max_scale": 4, "source": "textures", "shapes": ["perlin"]}
    # Nested settings are merged, not replaced: max_scale and source stay.
    assert second.perlin == {"max_scale": 4, "source": "textures", "shapes": ["perlin", "region"]}
    # The segmenter's last bias is the logit of its starting probability: 0.01 and 0.5.
    assert first.discriminative.out.bias.item() == pytest.approx(-4.59512, abs=1e-4)
    assert second.discriminative.out.bias.item() == 0.0
    # The settings travel with the checkpoint.
    ckpt = tmp_path / "ensemble.ckpt"
    torch.save({"state_dict": ensemble.state_dict(), "hyper_parameters": dict(ensemble.hparams),
                "pytorch-lightning_version": pl.__version__}, ckpt)  # fmt: skip
    loaded = EnsembleModule.load_from_checkpoint(ckpt)
    assert [m.perlin["shapes"] for m in loaded.members] == [["perlin"], ["perlin", "region"]]
    assert [m.hparams.segmenter_prior for m in loaded.members] == [0.01, 0.5]


def test_members_can_see_the_photos_normalised_or_plain():
    torch.manual_seed(0)
    member = dict(DRAEM, input_normalize="none")  # as conf/model/draem.yaml has it
    ensemble = EnsembleModule(member, members=2, overrides=[{"input_normalize": "mean_std"}, {}])
    ensemble.eval()
    x = torch.rand(2, 1, 32, 32) * 0.3 + 0.2
    with torch.no_grad():
        first, second = ensemble.members
        expected = (first(x) + second(x)) / 2
        torch.testing.assert_close(ensemble(x), expected)
        # The first member sees each image standardised, the second the image as it is.
        second_copy = DraemModule(**{k: v for k, v in DRAEM.items() if k != "_target_"})
        second_copy.load_state_dict(first.state_dict())
        torch.testing.assert_close(first(x), second_copy.eval()(
            standardize_batch(x)))  # fmt: skip
    assert [m.hparams.input_normalize for m in ensemble.members] == ["mean_std", "none"]


def test_merge_settings_keeps_the_base_and_names_unknown_keys():
    base = {"lr": 1.0, "perlin": {"shapes": ["perlin"], "threshold": 0.5}}
    merged = merge_settings(base, {"perlin": {"threshold": 0.2}}, "here")
    assert merged == {"lr": 1.0, "perlin": {"shapes": ["perlin"], "threshold": 0.2}}
    assert base["perlin"]["threshold"] == 0.5  # the common settings are not changed
    # A dict replaces a non-dict value whole, and a list is a value.
    assert merge_settings(base, {"lr": {"a": 1}}, "here")["lr"] == {"a": 1}
    with pytest.raises(ConfigError, match=r"here\.perlin\.shape is not a setting"):
        merge_settings(base, {"perlin": {"shape": ["region"]}}, "here")


def test_members_train_together_and_the_ensemble_finds_pasted_anomalies(tmp_path):
    pl.seed_everything(0)
    member = dict(DRAEM, optimizer={"_target_": "torch.optim.Adam", "_partial_": True,
                  "lr": 3e-3}, lr_schedule="constant",
                  perlin={"max_scale": 4, "max_opacity": 0.0})  # fmt: skip
    ensemble = EnsembleModule(member, members=2, scales=[1.0, 0.5])
    before = [m.discriminative.out.weight.clone() for m in ensemble.members]
    rows = torch.linspace(0.2, 0.8, 32).view(1, 1, 32, 1).expand(8, 1, 32, 32).contiguous()
    trainer = make_trainer(120)
    trainer.fit(ensemble, DataLoader([{"image": rows}] * 120, batch_size=None))
    # One optimiser trained every member.
    for m, start in zip(ensemble.members, before, strict=True):
        assert not torch.equal(m.discriminative.out.weight, start)
    ensemble.eval()
    torch.manual_seed(1)
    pasted, mask = perlin_texture_with_mask(rows, max_scale=4, max_opacity=0.0)
    detector = Detector(ensemble, Preprocess.create(image_size=32, channels=1),
                        MapSettings(kind="l2", smoothing_sigma=0))  # fmt: skip
    maps = torch.stack(detector.anomaly_maps(pasted))
    assert auroc(mask.flatten().numpy(), maps.flatten().numpy()) > 0.85
    # A checkpoint reloads with no extra arguments and gives the same map.
    ckpt = tmp_path / "ensemble.ckpt"
    trainer.save_checkpoint(ckpt, weights_only=True)
    loaded = EnsembleModule.load_from_checkpoint(ckpt).eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(pasted), ensemble(pasted))


def test_the_summed_loss_gives_each_member_its_own_gradient():
    torch.manual_seed(0)
    ensemble = EnsembleModule(DRAEM, members=2)
    x = torch.rand(2, 1, 32, 32)
    torch.manual_seed(3)
    ensemble._step({"image": x}, "train").backward()
    together = [p.grad.clone() for p in ensemble.members[1].parameters()]
    ensemble.zero_grad()
    # The same random draws, member by member: member 0 first, then member 1 alone.
    torch.manual_seed(3)
    ensemble.members[0].training_losses(x)
    alone = ensemble.members[1].training_losses(x)
    sum(alone.values()).backward()
    for a, b in zip(together, (p.grad for p in ensemble.members[1].parameters()), strict=True):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"members": 0}, "model.ensemble.members"),
        ({"members": 2, "scales": [1.0]}, "model.ensemble.scales"),
        ({"members": 2, "scales": [1.0, 0.0]}, "model.ensemble.scales"),
        ({"members": 2, "overrides": [{}]}, "model.ensemble.overrides has 1 entries"),
        # Named as check_config names it: overrides.1, like scales.1.
        ({"members": 2, "overrides": [{}, {"prior": 0.5}]},
         r"model\.ensemble\.overrides\.1\.prior is not a setting"),
        ({"member": {"_target_": "anomaly.nowhere.Module"}}, "model.module._target_"),
        (
            {"member": {"_target_": "anomaly.training.autoencoder.AutoencoderModule",
                        "net": {"_target_": "anomaly.models.conv_ae.ConvAutoencoder"}}},
            "model.ensemble.members=1",
        ),
    ],
)  # fmt: skip
def test_bad_settings_are_named(kwargs, key):
    with pytest.raises(ConfigError, match=key):
        EnsembleModule(**{"member": DRAEM, **kwargs})
