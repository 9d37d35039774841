import itertools

import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from anomaly.errors import ConfigError
from anomaly.training.autoencoder import AutoencoderModule
from tests.conftest import make_trainer

NET = {
    "_target_": "anomaly.models.conv_ae.ConvAutoencoder",
    "image_size": [32, 32],
    "channels": 1,
    "latent_dim": 32,
}


def _batches(n: int = 8) -> list[dict]:
    torch.manual_seed(0)
    rows = torch.linspace(0, 1, 32).view(1, 1, 32, 1).expand(n, 1, 32, 32)
    return [{"image": (rows + 0.1 * torch.rand(n, 1, 1, 1)).clamp(0, 1)}]


def test_overfits_one_batch():
    pl.seed_everything(0)
    module = AutoencoderModule(
        NET,
        loss={"name": "l2"},
        optimizer={"_target_": "torch.optim.Adam", "_partial_": True, "lr": 1e-3},
    )
    batch = _batches()[0]
    with torch.no_grad():
        before = module.loss_fn(module(batch["image"]), batch["image"]).item()
    make_trainer(40).fit(module, DataLoader(_batches() * 40, batch_size=None))
    with torch.no_grad():
        after = module.loss_fn(module(batch["image"]), batch["image"]).item()
    assert after < 0.5 * before


def test_ssim_loss_trains():
    pl.seed_everything(0)
    module = AutoencoderModule(NET, loss={"name": "ssim", "ssim_sigma": 1.5})
    loss = module.training_step(_batches()[0], 0)
    loss.backward()
    assert 0 < loss.item() <= 2
    assert all(p.grad is not None for p in module.net.parameters())


def test_checkpoint_reloads_without_arguments_and_scores_identically(tmp_path):
    module = AutoencoderModule(NET, loss={"name": "l2"})
    trainer = make_trainer(2)
    trainer.fit(module, DataLoader(_batches() * 2, batch_size=None))
    path = tmp_path / "m.ckpt"
    trainer.save_checkpoint(path, weights_only=True)
    reloaded = AutoencoderModule.load_from_checkpoint(path)
    x = _batches()[0]["image"]
    module.eval()
    reloaded.eval()
    with torch.no_grad():
        assert torch.equal(module(x), reloaded(x))
    assert reloaded.hparams.net == NET


def test_reconstructions_interface():
    module = AutoencoderModule(NET)
    x = torch.rand(2, 1, 32, 32)
    ((weight, recon),) = module.reconstructions(x)
    assert weight == 1.0 and recon.shape == x.shape


def test_cosine_schedule_decays_the_learning_rate_to_zero_over_the_training():
    pl.seed_everything(0)
    optimizer = {"_target_": "torch.optim.Adam", "_partial_": True, "lr": 1e-3}
    module = AutoencoderModule(NET, optimizer=optimizer, lr_schedule="cosine")
    seen: list[float] = []

    class Record(pl.Callback):
        def on_train_batch_start(self, trainer, *args: object) -> None:
            seen.append(trainer.optimizers[0].param_groups[0]["lr"])

    trainer = make_trainer(20, max_epochs=2, callbacks=[Record()])
    trainer.fit(module, DataLoader(_batches() * 10, batch_size=None))
    assert seen[0] == 1e-3
    assert seen[10] < 0.6e-3 and seen[-1] < 0.02e-3  # half way: cos(pi/2) -> lr/2
    assert all(a >= b for a, b in itertools.pairwise(seen))


def test_cosine_schedule_without_an_end_of_training_names_the_keys():
    module = AutoencoderModule(NET, lr_schedule="cosine")
    trainer = make_trainer(-1, max_epochs=-1)
    with pytest.raises(ConfigError, match=r"lr_schedule=cosine.*trainer\.max_epochs"):
        trainer.fit(module, DataLoader(_batches(), batch_size=None))
