"""The adversarial autoencoder's and GANomaly's phases, losses and scores."""

from __future__ import annotations

import math

import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from anomaly.errors import ConfigError
from anomaly.models.aae import gaussian_nll
from anomaly.models.ganomaly import GANomalyNet, latent_score
from anomaly.models.inspection import Wants
from anomaly.training.aae import AAEModule, discriminator_loss, generator_loss
from anomaly.training.ganomaly import GANomalyModule, generator_losses
from tests.conftest import make_trainer

AAE_NET = {
    "_target_": "anomaly.models.aae.AAENet",
    "image_size": 32,
    "channels": 1,
    "latent_dim": 2,
    "width": 0.25,
    "discriminator_hidden": [64, 64],
}
GANOMALY_NET = {
    "_target_": "anomaly.models.ganomaly.GANomalyNet",
    "image_size": 32,
    "channels": 1,
    "latent_dim": 8,
    "base": 4,
}


def _params(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.net.named_parameters()}


def _moved(before: dict, after: dict, prefix: str) -> bool:
    return any(not torch.equal(before[k], after[k]) for k in before if k.startswith(prefix))


class StepWatcher(pl.Callback):
    """Parameters before each optimiser step and after the batch."""

    def __init__(self) -> None:
        self.snapshots: list[dict[str, torch.Tensor]] = []

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        self.snapshots.append(_params(pl_module))

    def on_train_batch_end(self, trainer, pl_module, *args) -> None:
        self.snapshots.append(_params(pl_module))


def _ramps(n: int = 64, side: int = 32, seed: int = 0) -> torch.Tensor:
    """Images of two factors: a vertical ramp's slope and an offset."""
    g = torch.Generator().manual_seed(seed)
    rows = torch.linspace(0.1, 0.9, side).view(1, 1, side, 1)
    a = torch.rand(n, 1, 1, 1, generator=g)
    b = torch.rand(n, 1, 1, 1, generator=g)
    return (a * rows + 0.5 * b * (1 - rows)).clamp(0, 1).expand(n, 1, side, side).contiguous()


def _one_batch_phases(module: pl.LightningModule) -> list[dict[str, torch.Tensor]]:
    pl.seed_everything(0)
    watcher = StepWatcher()
    trainer = make_trainer(-1, max_epochs=1, callbacks=[watcher])
    trainer.fit(module, DataLoader([{"image": _ramps(4)}], batch_size=None))
    return watcher.snapshots


def test_aae_each_phase_moves_only_its_own_parameters():
    before_rec, before_disc, before_gen, after = _one_batch_phases(AAEModule(AAE_NET))
    # Reconstruction: encoder and decoder.
    assert _moved(before_rec, before_disc, "encoder") and _moved(before_rec, before_disc, "decoder")
    assert not _moved(before_rec, before_disc, "discriminator")
    # Discriminator: itself only.
    assert _moved(before_disc, before_gen, "discriminator")
    assert not _moved(before_disc, before_gen, "encoder")
    assert not _moved(before_disc, before_gen, "decoder")
    # Generator: the encoder only.
    assert _moved(before_gen, after, "encoder")
    assert not _moved(before_gen, after, "decoder")
    assert not _moved(before_gen, after, "discriminator")


def test_aae_losses_and_prior_likelihood_by_hand():
    # Logit 0 is a probability of one half: each cross-entropy is log 2.
    zero = torch.zeros(3, 1)
    assert discriminator_loss(zero, zero).item() == pytest.approx(math.log(2))
    assert generator_loss(zero).item() == pytest.approx(math.log(2))
    # A confident, right discriminator has a small loss; a fooled one a large one.
    big = torch.full((3, 1), 10.0)
    assert discriminator_loss(big, -big).item() < 1e-4
    assert generator_loss(-big).item() == pytest.approx(10.0, abs=1e-3)
    z = torch.tensor([[0.0, 0.0], [1.0, 2.0]])
    by_hand = [math.log(2 * math.pi), 0.5 * 5 + math.log(2 * math.pi)]
    assert gaussian_nll(z).tolist() == pytest.approx(by_hand)
    assert gaussian_nll(z, 2.0)[1].item() == pytest.approx(0.5 * 5 / 4 + math.log(8 * math.pi))


def _fit(module: pl.LightningModule, images: torch.Tensor, epochs: int) -> pl.LightningModule:
    pl.seed_everything(0)
    batches = [{"image": b} for b in images.split(64)]
    make_trainer(-1, max_epochs=epochs).fit(module, DataLoader(batches, batch_size=None))
    return module.eval()


def test_aae_codes_follow_the_prior():
    images = _ramps(512)
    optimizer = {"_target_": "torch.optim.Adam", "_partial_": True, "lr": 1e-3}
    aae = _fit(AAEModule(AAE_NET, optimizer=optimizer, lr_schedule="cosine"), images, 60)
    with torch.no_grad():
        z = aae.net.encode(_ramps(1024, seed=1))
    # Mean and spread near the prior's (0 and 1 in each unit), the two units not one
    # collapsed direction. The covariance's off-diagonal varies from run to run on so
    # short a training (|correlation| 0.03-0.95 seen; docs/quality.md), so only a code
    # squeezed onto a line fails here.
    assert z.mean(0).abs().max() < 0.3, z.mean(0)
    assert ((z.std(0) - 1).abs() < 0.2).all(), z.std(0)
    assert torch.corrcoef(z.T)[0, 1].abs().item() < 0.99


def test_aae_image_score_is_the_codes_prior_nll():
    module = AAEModule(AAE_NET, prior={"name": "gaussian", "std": 2.0}, prior_score=True).eval()
    x = _ramps(3)
    out = module.inspect(x, Wants(image_score=True))
    with torch.no_grad():
        expected = gaussian_nll(module.net.encode(x), 2.0)
    assert torch.allclose(out.image_score, expected)
    off = AAEModule(AAE_NET, prior_score=False)
    assert off.inspect(x, Wants(image_score=True)).image_score is None
    with pytest.raises(ConfigError, match="prior.name"):
        AAEModule(AAE_NET, prior={"name": "cauchy"})
    with pytest.raises(ConfigError, match="adversarial_lr"):
        AAEModule(AAE_NET, adversarial_lr=0)


def test_ganomaly_each_phase_moves_only_its_own_parameters():
    before_gen, before_disc, after = _one_batch_phases(GANomalyModule(GANOMALY_NET))
    for part in ("encoder1", "decoder", "encoder2"):
        assert _moved(before_gen, before_disc, part), part
        assert not _moved(before_disc, after, part), part
    assert not _moved(before_gen, before_disc, "discriminator")
    assert _moved(before_disc, after, "discriminator")


def test_ganomaly_losses_by_hand():
    torch.manual_seed(0)
    net = GANomalyNet(32, 1, latent_dim=8, base=4).eval()
    x = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        losses = generator_losses(net, x)
        z = net.encoder1(x).flatten(1)
        x_hat = net.decoder(net.encoder1(x))
        z_hat = net.encoder2(x_hat).flatten(1)
        fx, fx_hat = net.discriminator.features(x), net.discriminator.features(x_hat)
    assert losses["contextual"].item() == pytest.approx((x - x_hat).abs().mean().item(), rel=1e-5)
    assert losses["latent"].item() == pytest.approx((z - z_hat).pow(2).mean().item(), rel=1e-5)
    assert losses["adversarial"].item() == pytest.approx(
        (fx - fx_hat).pow(2).mean().item(), rel=1e-5
    )
    assert latent_score(z, z_hat).tolist() == pytest.approx((z - z_hat).pow(2).mean(1).tolist())
    # The weighted sum the generator phase minimises, with the paper's weights.
    module = GANomalyModule(GANOMALY_NET)
    module.net.load_state_dict(net.state_dict())
    module.eval()
    parts: dict = {}
    with torch.no_grad():
        total = module._generator_loss(x, parts)
    expected = parts["adversarial"] + 50 * parts["contextual"] + parts["latent"]
    assert total.item() == pytest.approx(expected.item())
    with pytest.raises(ConfigError, match="weights"):
        GANomalyModule(GANOMALY_NET, weights={"perceptual": 1.0})


def test_ganomaly_discriminator_that_wins_outright_is_reinitialised():
    module = GANomalyModule(GANOMALY_NET, reinit_below=10.0)
    head = module.net.discriminator.head.weight.detach().clone()
    _one_batch_phases(module)
    # Any loss is below 10: re-initialised after its step, so neither the old weights
    # nor their one-step update remain.
    assert not torch.allclose(module.net.discriminator.head.weight, head, atol=1e-3)


def test_trained_ganomaly_scores_an_obvious_outlier_above_normals():
    images = _ramps(256)
    optimizer = {
        "_target_": "torch.optim.Adam",
        "_partial_": True,
        "lr": 2e-3,
        "betas": [0.5, 0.999],
    }
    module = _fit(GANomalyModule(GANOMALY_NET, optimizer=optimizer), images, 30)
    normals = _ramps(32, seed=2)
    outlier = normals[:4].clone()
    outlier[:, :, 8:24, 8:24] = 1.0 - outlier[:, :, 8:24, 8:24]
    with torch.no_grad():
        s_normal = module.inspect(normals, Wants(image_score=True)).image_score
        s_outlier = module.inspect(outlier, Wants(image_score=True)).image_score
        recon = module.inspect(outlier, Wants()).reconstructions[0][1]
    # Every outlier above the typical normal, and on average far above.
    assert s_outlier.min() > s_normal.median(), (s_outlier, s_normal)
    assert s_outlier.mean() > 2 * s_normal.mean(), (s_outlier, s_normal)
    # The map's error is largest where the outlier differs.
    err = F.mse_loss(recon, outlier, reduction="none")
    assert err[:, :, 8:24, 8:24].mean() > 3 * err[:, :, :8].mean()
