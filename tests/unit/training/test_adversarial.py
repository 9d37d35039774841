import copy

import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from anomaly.errors import ConfigError
from anomaly.training.adversarial import USADModule, usad_losses
from tests.conftest import make_trainer

NET = {
    "_target_": "anomaly.models.usad.USADNet",
    "image_size": [32, 32],
    "channels": 1,
    "latent_dim": 16,
}


def _batches(n: int = 4) -> list[dict]:
    g = torch.Generator().manual_seed(0)
    return [{"image": torch.rand(n, 1, 32, 32, generator=g)}]


def _snapshot(module: USADModule) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.net.state_dict().items()}


def _changed(before: dict, after: dict, prefix: str) -> bool:
    return any(not torch.equal(before[k], after[k]) for k in before if k.startswith(prefix))


class PhaseWatcher(pl.Callback):
    """Snapshots the parameters before each optimiser step and after each batch."""

    def __init__(self) -> None:
        self.snapshots: list[dict[str, torch.Tensor]] = []

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        self.snapshots.append(_snapshot(pl_module))

    def on_train_batch_end(self, trainer, pl_module, *args) -> None:
        self.snapshots.append(_snapshot(pl_module))


def test_each_phase_updates_only_its_own_decoder():
    pl.seed_everything(0)
    module = USADModule(NET)
    watcher = PhaseWatcher()
    # No step limit (-1): the epochs decide.
    trainer = make_trainer(-1, max_epochs=1, callbacks=[watcher])
    trainer.fit(module, DataLoader(_batches(), batch_size=None))
    before_phase1, before_phase2, after_batch = watcher.snapshots[:3]
    # Phase 1 (E, D1): D2 untouched.
    assert _changed(before_phase1, before_phase2, "decoder1")
    assert _changed(before_phase1, before_phase2, "encoder")
    assert not _changed(before_phase1, before_phase2, "decoder2")
    # Phase 2 (E, D2): D1 untouched.
    assert _changed(before_phase2, after_batch, "decoder2")
    assert _changed(before_phase2, after_batch, "encoder")
    assert not _changed(before_phase2, after_batch, "decoder1")


def test_adversarial_term_has_opposite_signs_and_weights_follow_one_over_n():
    x = torch.zeros(1, 1, 4, 4)
    w1, w2, w3 = torch.full_like(x, 0.1), torch.full_like(x, 0.2), torch.full_like(x, 0.3)
    e1, e2, e3 = 0.01, 0.04, 0.09  # squared errors of w1, w2, w3 against x
    for n in (1, 2, 5):
        loss1, loss2 = usad_losses(x, w1, w2, w3, n)
        assert loss1.item() == pytest.approx(e1 / n + (1 - 1 / n) * e3)
        assert loss2.item() == pytest.approx(e2 / n - (1 - 1 / n) * e3)
    # Raising the adversarial error raises loss1 and lowers loss2.
    base1, base2 = usad_losses(x, w1, w2, w3, 3)
    more1, more2 = usad_losses(x, w1, w2, w3 + 0.1, 3)
    assert more1 > base1 and more2 < base2
    with pytest.raises(ValueError, match="from 1"):
        usad_losses(x, w1, w2, w3, 0)


class EpochN(pl.Callback):
    def __init__(self) -> None:
        self.seen: list[int] = []

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.seen.append(pl_module.epoch_n)


def test_n_counts_epochs_from_one():
    recorder = EpochN()
    # No step limit (-1): the epochs decide.
    trainer = make_trainer(-1, max_epochs=3, callbacks=[recorder])
    trainer.fit(USADModule(NET), DataLoader(_batches(), batch_size=None))
    assert recorder.seen == [1, 2, 3]


def test_map_terms_and_weights():
    module = USADModule(NET, alpha=0.3, beta=0.7).eval()
    x = torch.rand(2, 1, 32, 32)
    (a, w1), (b, w3) = module.reconstructions(x)
    assert (a, b) == (0.3, 0.7)
    with torch.no_grad():
        assert torch.allclose(w1, module.net.decoder1(module.net.encoder(x)))
        assert torch.allclose(w3, module.net.decoder2(module.net.encoder(w1)))
    with pytest.raises(ConfigError, match="alpha"):
        USADModule(NET, alpha=0.5, beta=0.6)


class FirstInput(pl.Callback):
    """Keeps a copy of the network before the first step and the encoder's first input."""

    def __init__(self) -> None:
        self.net: torch.nn.Module | None = None
        self.inputs: torch.Tensor | None = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self.net is None:
            self.net = copy.deepcopy(pl_module.net)
            pl_module.net.encoder.register_forward_pre_hook(self._keep)

    def _keep(self, module, args) -> None:
        if self.inputs is None:
            self.inputs = args[0].detach().clone()


def test_noise_corrupts_the_input_and_the_errors_use_the_clean_image():
    pl.seed_everything(0)
    noise = [{"name": "zero_mask", "p": 1.0, "fraction": 0.5}]
    watcher = FirstInput()
    batches = _batches()
    module = USADModule(NET, noise=noise)
    trainer = make_trainer(-1, max_epochs=1, callbacks=[watcher])
    trainer.fit(module, DataLoader(batches, batch_size=None))
    x = batches[0]["image"]
    # The network saw a corrupted batch: zeroed cells where the image is not zero.
    assert not torch.equal(watcher.inputs, x)
    assert (watcher.inputs == 0).float().mean() > 0.2
    # Phase 1's loss is the error of the untrained network's output from the corrupted
    # input, measured against the clean image (n = 1: loss1 = err(w1, x)).
    with torch.no_grad():
        w1, w2, w3 = watcher.net(watcher.inputs)
        clean1, _ = usad_losses(x, w1, w2, w3, 1)
        noisy1, _ = usad_losses(watcher.inputs, w1, w2, w3, 1)
    logged = trainer.callback_metrics["train/loss1"]
    assert logged.item() == pytest.approx(clean1.item(), rel=1e-5)
    assert logged.item() != pytest.approx(noisy1.item(), rel=1e-3)


@pytest.mark.parametrize(("schedule", "final"), [("cosine", 0.0), ("constant", 2e-4)])
def test_learning_rate_schedule_applies_to_both_phases(schedule, final):
    optimizer = {"_target_": "torch.optim.Adam", "_partial_": True, "lr": 2e-4}
    module = USADModule(NET, optimizer=optimizer, lr_schedule=schedule)
    trainer = make_trainer(-1, max_epochs=3)
    trainer.fit(module, DataLoader(_batches() * 2, batch_size=None))
    rates = [opt.param_groups[0]["lr"] for opt in trainer.optimizers]
    assert rates == pytest.approx([final, final], abs=1e-9)


def test_cosine_schedule_ends_at_zero_when_max_steps_ends_the_training():
    # Lightning counts both phases' optimiser steps: max_steps=4 is two batches of USAD.
    optimizer = {"_target_": "torch.optim.Adam", "_partial_": True, "lr": 2e-4}
    module = USADModule(NET, optimizer=optimizer, lr_schedule="cosine")
    trainer = make_trainer(4, max_epochs=10)
    trainer.fit(module, DataLoader(_batches() * 3, batch_size=None))
    assert trainer.global_step == 4
    rates = [opt.param_groups[0]["lr"] for opt in trainer.optimizers]
    assert rates == pytest.approx([0.0, 0.0], abs=1e-9)


def test_unknown_learning_rate_schedule_names_the_key():
    with pytest.raises(ConfigError, match="model.module.lr_schedule"):
        USADModule(NET, lr_schedule="linear")
