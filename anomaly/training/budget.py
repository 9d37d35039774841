"""Training by time: stop when the next epoch would overrun ``trainer.budget_minutes``.

A scheduled retraining must end, whatever the size of tonight's data; a training of a
few photos must still get its epochs (``trainer.min_steps``). The budget caps the
epochs: after each epoch the next one's time is estimated from the epochs so far, and the
training ends there when it would finish past the budget (a single epoch longer than the
whole budget stops at the budget, mid-epoch). Ensembles train their members together,
so they share the one budget.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import pytorch_lightning as pl

log = logging.getLogger(__name__)


class TimeBudget(pl.Callback):
    """Stop training before it takes longer than ``minutes``.

    Args:
        minutes: The budget; None or 0 for none.
        clock: Seconds since an arbitrary start (tests pass a fake one).
    """

    def __init__(self, minutes: float | None, *, clock: Any = time.monotonic) -> None:
        self.seconds = float(minutes) * 60.0 if minutes else 0.0
        self.clock = clock
        self.started = 0.0
        self.epochs = 0
        self.stopped_early = False

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Start the clock (a resumed training gets the whole budget again)."""
        self.started = self.clock()
        self.epochs = 0

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Stop here when one more epoch of the average length would pass the budget."""
        if not self.seconds:
            return
        self.epochs += 1
        elapsed = self.clock() - self.started
        per_epoch = elapsed / self.epochs
        last = trainer.current_epoch + 1 >= trainer.max_epochs
        if not last and elapsed + per_epoch > self.seconds:
            self._stop(trainer, f"after {trainer.current_epoch + 1} of {trainer.max_epochs} epochs")

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        """Stop mid-epoch only when the budget is already spent."""
        if self.seconds and self.clock() - self.started > self.seconds:
            self._stop(trainer, f"in epoch {trainer.current_epoch + 1} of {trainer.max_epochs}")

    def _stop(self, trainer: pl.Trainer, where: str) -> None:
        if not self.stopped_early:
            log.warning(
                "training stopped %s: the budget of %.3g minutes (trainer.budget_minutes) "
                "would be exceeded; raise it for a longer training",
                where,
                self.seconds / 60.0,
            )
        self.stopped_early = True
        trainer.should_stop = True
