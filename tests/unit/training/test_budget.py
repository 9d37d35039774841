"""trainer.budget_minutes: a real (tiny) Lightning training stopped by a fake clock."""

from __future__ import annotations

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

from anomaly.training.budget import TimeBudget
from tests.conftest import make_trainer


class _Tiny(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(4, 4)

    def training_step(self, batch, batch_idx):
        (x,) = batch
        return (self.layer(x) - x).pow(2).mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


class _Clock:
    """One second passes at every look (three batches and an epoch end: 4 s an epoch)."""

    def __init__(self) -> None:
        self.now = -1.0

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


def _train(budget: TimeBudget, max_epochs: int) -> pl.Trainer:
    data = DataLoader(TensorDataset(torch.randn(12, 4)), batch_size=4)
    trainer = make_trainer(-1, max_epochs=max_epochs, callbacks=[budget])
    trainer.fit(_Tiny(), data)
    return trainer


def test_stops_after_the_last_epoch_that_fits():
    # 15 s: after epoch 3 (12 s) a fourth (4 s more) would end at 16 s.
    budget = TimeBudget(0.25, clock=_Clock())
    trainer = _train(budget, max_epochs=10)
    assert trainer.current_epoch == 3 and budget.stopped_early


def test_a_budget_that_fits_changes_nothing():
    budget = TimeBudget(10, clock=_Clock())
    trainer = _train(budget, max_epochs=4)
    assert trainer.current_epoch == 4 and not budget.stopped_early
    assert _train(TimeBudget(None), max_epochs=2).current_epoch == 2  # no budget


def test_one_epoch_longer_than_the_budget_stops_mid_epoch():
    budget = TimeBudget(2 / 60, clock=_Clock())  # 2 s: passed at the third batch (3 s)
    trainer = _train(budget, max_epochs=5)
    assert budget.stopped_early
    assert trainer.global_step == 3  # the batch that went past the budget is the last
