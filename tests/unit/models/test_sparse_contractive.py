"""The sparse and contractive autoencoders' penalties, against closed forms and autograd."""

from __future__ import annotations

import math

import pytest
import pytorch_lightning as pl
import torch
from torch.autograd.functional import jacobian
from torch.utils.data import DataLoader

from anomaly.models.contractive_ae import (
    ContractiveAutoencoder,
    autograd_jacobian_norm,
    sigmoid_jacobian_norm,
)
from anomaly.models.sparse_ae import SparseAutoencoder, kl_sparsity, sparsity_penalty
from anomaly.training.autoencoder import AutoencoderModule
from tests.conftest import make_trainer


def _images(n: int = 32, side: int = 16, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    rows = torch.linspace(0.1, 0.9, side).view(1, 1, side, 1)
    a = torch.rand(n, 1, 1, 1, generator=g)
    return (a * rows + 0.3 * (1 - a)).expand(n, 1, side, side).contiguous()


def test_kl_sparsity_is_the_bernoulli_divergence_by_hand():
    codes = torch.tensor([[0.1, 0.5], [0.3, 0.7]])
    rho = 0.2
    expected = 0.0
    for rho_hat in (0.2, 0.6):  # the two units' mean activations
        expected += rho * math.log(rho / rho_hat) + (1 - rho) * math.log((1 - rho) / (1 - rho_hat))
    assert kl_sparsity(codes, rho).item() == pytest.approx(expected)
    # Zero when every unit's mean activation is the target.
    assert kl_sparsity(torch.full((4, 3), 0.2), 0.2).item() == pytest.approx(0.0, abs=1e-7)
    assert sparsity_penalty(codes, "l1", rho).item() == pytest.approx(0.4)


def test_sparse_autoencoder_rejects_bad_settings():
    for bad in ({"sparsity": "l2"}, {"target": 1.0}, {"weight": -1}, {"variant": "rnn"}):
        with pytest.raises(ValueError):
            SparseAutoencoder(16, 1, 8, **bad)


def _train(net: dict, x: torch.Tensor, batches: int, lr: float = 2e-3) -> AutoencoderModule:
    pl.seed_everything(0)
    module = AutoencoderModule(
        net, optimizer={"_target_": "torch.optim.Adam", "_partial_": True, "lr": lr}
    )
    make_trainer(batches).fit(module, DataLoader([{"image": x}] * batches, batch_size=None))
    return module.eval()


@pytest.mark.parametrize("variant", ["conv", "dense"])
def test_the_kl_penalty_drives_mean_activations_to_the_target(variant):
    x = _images()
    net = {
        "_target_": "anomaly.models.sparse_ae.SparseAutoencoder",
        "image_size": 16,
        "channels": 1,
        "latent_dim": 16,
        "variant": variant,
        "hidden": [32],
        "target": 0.1,
    }
    before = SparseAutoencoder(16, 1, 16, variant=variant, hidden=[32]).encode(x).mean().item()
    sparse = _train({**net, "weight": 0.1}, x, 150)
    with torch.no_grad():
        rho_hat = sparse.net.encode(x).mean(dim=0)
    # From about 0.5 at the start to near the target, unit by unit.
    assert abs(before - 0.5) < 0.1
    assert abs(rho_hat.mean().item() - 0.1) < 0.03, rho_hat
    assert (rho_hat - 0.1).abs().max().item() < 0.1, rho_hat


def test_dense_closed_form_equals_autograd_jacobian():
    torch.manual_seed(0)
    model = ContractiveAutoencoder(6, 1, 5, variant="dense")
    x = torch.rand(3, 1, 6, 6)
    exact = torch.stack(
        [jacobian(lambda a: model.encode(a[None])[0], x[i]).pow(2).sum() for i in range(3)]
    )
    assert torch.allclose(model.jacobian_norm(x), exact, rtol=1e-5)
    h = model.encode(x)
    assert torch.allclose(sigmoid_jacobian_norm(h, model.encoder.weight), exact, rtol=1e-5)


def test_conv_autograd_norm_equals_jacobian_and_hutchinson_estimates_it():
    torch.manual_seed(0)
    model = ContractiveAutoencoder(16, 1, 4, variant="conv", probes=None)
    x = torch.rand(3, 1, 16, 16)
    exact = torch.stack(
        [jacobian(lambda a: model.encode(a[None])[0], x[i]).pow(2).sum() for i in range(3)]
    )
    assert torch.allclose(model.jacobian_norm(x), exact, rtol=1e-4)
    # Hutchinson's estimate is unbiased: many probes come close.
    torch.manual_seed(1)
    xr = x.clone().requires_grad_(True)
    estimate = autograd_jacobian_norm(model.encode(xr), xr, probes=4000, create_graph=False)
    assert torch.allclose(estimate, exact, rtol=0.1)


@pytest.mark.parametrize("variant", ["conv", "dense"])
def test_the_contractive_penalty_lowers_the_jacobian_norm(variant):
    x = _images()
    net = {
        "_target_": "anomaly.models.contractive_ae.ContractiveAutoencoder",
        "image_size": 16,
        "channels": 1,
        "latent_dim": 8,
        "variant": variant,
    }
    plain = _train({**net, "weight": 0.0}, x, 80)
    contractive = _train({**net, "weight": 1.0}, x, 80)
    norm_plain = plain.net.jacobian_norm(x).mean().item()
    norm_contractive = contractive.net.jacobian_norm(x).mean().item()
    assert norm_contractive < 0.5 * norm_plain, (norm_plain, norm_contractive)


def test_conv_validation_loss_needs_no_gradients():
    model = ContractiveAutoencoder(16, 1, 4)
    with torch.no_grad():
        recon, penalty = model.forward_train(torch.rand(2, 1, 16, 16))
    assert recon.shape == (2, 1, 16, 16) and penalty.item() == 0.0
