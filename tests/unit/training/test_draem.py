"""DRAEM: the focal loss, the two networks' shapes and the learned map."""

from __future__ import annotations

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from scipy import ndimage
from torch.utils.data import DataLoader

from anomaly.data.transforms import Preprocess, standardize
from anomaly.errors import ConfigError
from anomaly.models.unet import UNet
from anomaly.scoring.detector import Detector
from anomaly.scoring.maps import MapSettings
from anomaly.scoring.metrics import auroc
from anomaly.similarity.gms import msgms_map
from anomaly.training.draem import DraemModule, focal_loss
from tests.conftest import make_trainer

RECON = {"_target_": "anomaly.models.unet.UNet", "channels": 1, "base": 4, "depth": 2,
         "skip": False}  # fmt: skip
DISC = {"_target_": "anomaly.models.unet.UNet", "out_channels": 1, "base": 4, "depth": 2,
        "sigmoid": False}  # fmt: skip


def test_focal_loss_is_cross_entropy_at_gamma_0_and_down_weights_easy_pixels():
    logits = torch.tensor([[[[4.0, -4.0, 0.5]]]])
    target = torch.tensor([[[[1.0, 0.0, 0.0]]]])
    bce = F.binary_cross_entropy_with_logits(logits, target)
    assert focal_loss(logits, target, gamma=0.0) == pytest.approx(float(bce))
    # By hand: the hard pixel (0.5 for a 0) keeps most of its weight, easy ones almost none.
    p = torch.sigmoid(torch.tensor(0.5))
    hard = p**2 * -torch.log(1 - p)
    easy = (1 - torch.sigmoid(torch.tensor(4.0))) ** 2 * -torch.log(
        torch.sigmoid(torch.tensor(4.0))
    )
    assert focal_loss(logits, target, gamma=2.0) == pytest.approx(float((hard + 2 * easy) / 3))


def test_unet_without_skips_or_sigmoid():
    plain = UNet(channels=1, base=4, depth=2, skip=False)
    logits = UNet(channels=2, base=4, depth=2, out_channels=1, sigmoid=False)
    x = torch.rand(2, 1, 16, 16)
    assert plain(x).shape == x.shape
    out = logits(torch.cat([x, x], 1))
    assert out.shape == (2, 1, 16, 16) and (out.min() < 0 or out.max() > 1)
    assert sum(p.numel() for p in plain.parameters()) < sum(
        p.numel() for p in UNet(channels=1, base=4, depth=2).parameters()
    )


def test_segmenter_learns_to_find_pasted_anomalies_and_is_the_map():
    pl.seed_everything(0)
    module = DraemModule(RECON, DISC, optimizer={"_target_": "torch.optim.Adam",
                         "_partial_": True, "lr": 3e-3}, lr_schedule="constant",
                         perlin={"max_scale": 4, "max_opacity": 0.0})  # fmt: skip
    rows = torch.linspace(0.2, 0.8, 32).view(1, 1, 32, 1).expand(8, 1, 32, 32).contiguous()
    make_trainer(150).fit(module, DataLoader([{"image": rows}] * 150, batch_size=None))
    module.eval()
    torch.manual_seed(1)
    from anomaly.data.synthetic.anomalies import perlin_texture_with_mask

    pasted, mask = perlin_texture_with_mask(rows, max_scale=4, max_opacity=0.0)
    with torch.no_grad():
        prob = module(pasted)
    # Ranked by the map, pasted pixels come first (0.95-0.96 with 1 or 2 threads).
    assert auroc(mask.flatten().numpy(), prob.flatten().numpy()) > 0.9
    assert prob[mask].mean() > prob[~mask].mean() + 0.2
    # The scoring stage takes the module's own map, not a reconstruction error.
    detector = Detector(module, Preprocess.create(image_size=32, channels=1),
                        MapSettings(kind="l2", smoothing_sigma=0))  # fmt: skip
    maps = detector.anomaly_maps(pasted)
    assert torch.allclose(torch.stack(maps), prob, atol=1e-6)


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [({"anomaly_p": 0.0}, "anomaly_p"), ({"focal_gamma": -1.0}, "focal_gamma"),
     ({"lr_schedule": "step"}, "lr_schedule"), ({"perlin": {"threshold": 3.0}}, "threshold"),
     ({"recon_map_weight": -0.1}, "recon_map_weight"),
     ({"recon_map_sigma": float("nan")}, "recon_map_sigma"),
     ({"segmenter_prior": 1.0}, "segmenter_prior"), ({"segmenter_prior": 0.0}, "segmenter_prior"),
     ({"input_normalize": "clahe"}, "input_normalize")],
)  # fmt: skip
def test_bad_settings_are_named(kwargs, key):
    with pytest.raises(ConfigError, match=key):
        DraemModule(RECON, DISC, **kwargs)


def test_reconstruction_error_added_to_the_map_is_the_blurred_msgms_error():
    torch.manual_seed(0)
    plain = DraemModule(RECON, DISC).eval()
    mixed = DraemModule(RECON, DISC, recon_map_weight=0.25, recon_map_sigma=3.0).eval()
    mixed.load_state_dict(plain.state_dict())
    x = torch.rand(2, 1, 32, 32)
    x[:, :, 8:24, 8:24] = 0.9  # a bright square the untrained network does not give back
    with torch.no_grad():
        recon = plain.reconstructive(x)
        probability = plain(x)
        both = mixed(x)
    assert torch.equal(probability, torch.sigmoid(plain.network.segment(x, recon)))
    # Reference blur: scipy's gaussian filter with the same reflect boundary and radius.
    error = 1.0 - msgms_map(x, recon).mean(dim=1).numpy()
    blurred = np.stack([ndimage.gaussian_filter(e, 3.0, mode="reflect", truncate=3.5)
                        for e in error])  # fmt: skip
    np.testing.assert_allclose((both - probability)[:, 0].numpy(), 0.25 * blurred, atol=1e-5)
    assert (both >= probability).all() and (both - probability).max() > 0.01


def test_a_checkpoint_saved_before_the_reconstruction_term_keeps_its_map(tmp_path):
    module = DraemModule(RECON, DISC)
    trainer = make_trainer(1)
    trainer.fit(module, DataLoader([{"image": torch.rand(2, 1, 32, 32)}], batch_size=None))
    ckpt = tmp_path / "old.ckpt"
    trainer.save_checkpoint(ckpt, weights_only=True)
    old = torch.load(ckpt, weights_only=False)
    for key in ("recon_map_weight", "recon_map_sigma"):  # what an older version wrote
        del old["hyper_parameters"][key]
    torch.save(old, ckpt)
    loaded = DraemModule.load_from_checkpoint(ckpt).eval()
    x = torch.rand(1, 1, 32, 32)
    with torch.no_grad():
        expected = torch.sigmoid(module.eval().network.segment(x, module.reconstructive(x)))
        assert torch.allclose(loaded(x), expected, atol=1e-6)


def test_segmenter_prior_starts_every_pixel_near_it_and_training_moves_it():
    torch.manual_seed(0)
    default = DraemModule(RECON, DISC)
    torch.manual_seed(0)
    module = DraemModule(RECON, DISC, segmenter_prior=0.01)
    x = torch.rand(4, 1, 32, 32)
    with torch.no_grad():
        start = torch.sigmoid(module.network.segment(x, module.reconstructive(x)))
        half = torch.sigmoid(default.network.segment(x, default.reconstructive(x)))
    # logit(0.01) = ln(0.01 / 0.99), by hand
    assert module.discriminative.out.bias.item() == pytest.approx(-4.59512, abs=1e-4)
    assert 0.005 < start.mean().item() < 0.02
    assert 0.3 < half.mean().item() < 0.7
    # Only the start: the other weights are PyTorch's, the same under the same seed.
    assert torch.equal(module.discriminative.out.weight, default.discriminative.out.weight)
    before = module.discriminative.out.bias.clone()
    make_trainer(2).fit(module, DataLoader([{"image": x}], batch_size=None))
    assert not torch.equal(module.discriminative.out.bias, before)


def test_segmenter_prior_needs_a_one_channel_convolution_at_the_end():
    wide = dict(DISC, out_channels=2)
    with pytest.raises(ConfigError, match="segmenter_prior"):
        DraemModule(RECON, wide, segmenter_prior=0.01)


def test_input_normalize_makes_the_map_blind_to_exposure_and_trains_on_normalised_images():
    torch.manual_seed(0)
    plain = DraemModule(RECON, DISC).eval()
    normalised = DraemModule(RECON, DISC, input_normalize="mean_std").eval()
    normalised.load_state_dict(plain.state_dict())
    x = torch.rand(2, 1, 32, 32) * 0.4 + 0.3
    brighter = x * 1.5 + 0.05  # the same surface under another exposure
    with torch.no_grad():
        same = normalised(x)
        torch.testing.assert_close(normalised(brighter), same, atol=1e-5, rtol=0)
        # It is the plain model's map of each image standardised on its own.
        reference = torch.stack([standardize(image) for image in x])
        torch.testing.assert_close(same, plain(reference), atol=1e-6, rtol=0)
        # Without it the (untrained, so barely reacting) map moves ten times the tolerance.
        assert (plain(brighter) - plain(x)).abs().max() > 1e-4
        torch.testing.assert_close(normalised(brighter), plain(reference), atol=1e-5, rtol=0)
    # Training: the reconstruction target is the normalised image, whatever the exposure.
    torch.manual_seed(1)
    dark = normalised.training_losses(x * 0.5)
    torch.manual_seed(1)
    bright = normalised.training_losses(x * 0.5 + 0.4)
    for key in dark:
        assert float(dark[key]) == pytest.approx(float(bright[key]), abs=1e-5)
