"""Checkpoints that make a long training survive Ctrl-C, SIGTERM and a crash.

``last.ckpt`` in ``<output_dir>/checkpoints/`` is rewritten after every epoch (a SIGKILL
costs at most one epoch) and once more when the run is interrupted (Ctrl-C or SIGTERM from
a scheduler), so ``trainer.resume=true`` continues where it stopped. An interrupt during
the end-of-epoch validation keeps the previous epoch's checkpoint instead: the resumed run
redoes that epoch, so its training loss is computed and logged.

Python turns Ctrl-C into a ``KeyboardInterrupt`` wherever the main thread happens to be,
and one raised inside a finaliser or a weak-reference callback (the garbage collector
runs them at any moment) is printed as "Exception ignored" and dropped: the training
would go on as if no one had pressed anything. During ``fit`` the callback therefore
remembers a Ctrl-C and raises it again at the next batch if the first one was lost.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from pathlib import Path
from types import FrameType

import pytorch_lightning as pl
from pytorch_lightning.utilities.exceptions import SIGTERMException

from anomaly.io import default_file_mode

log = logging.getLogger(__name__)

LAST = "last.ckpt"


def is_interruption(exc: BaseException) -> bool:
    """True for Ctrl-C and for Lightning's reaction to SIGTERM."""
    return isinstance(exc, KeyboardInterrupt | SIGTERMException)


class ResumableCheckpoint(pl.Callback):
    """Write ``<folder>/last.ckpt`` (full training state) after each epoch and on interrupt.

    Args:
        folder: Where the checkpoint goes (created).
    """

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder)
        # True once an interrupt left a checkpoint to resume from: saved then, or the end of
        # the previous epoch kept (an interrupt in the end-of-epoch validation).
        self.saved_on_interrupt = False
        self._ctrl_c = False

    @property
    def path(self) -> Path:
        """The checkpoint file."""
        return self.folder / LAST

    def _save(self, trainer: pl.Trainer) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        # Written beside and renamed: a kill during the write keeps the previous one.
        tmp = self.folder / f".{LAST}.tmp"
        # Every rank calls save_checkpoint (it synchronises them); only rank 0 writes a file.
        trainer.save_checkpoint(tmp, weights_only=False)
        if trainer.is_global_zero:
            # Lightning's writer (fsspec) does not follow the umask: the same mode as open().
            os.chmod(tmp, default_file_mode())
            os.replace(tmp, self.path)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Keep the state of the finished epoch."""
        self._save(trainer)

    def _on_ctrl_c(self, signum: int, frame: FrameType | None) -> None:
        self._ctrl_c = True
        raise KeyboardInterrupt

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Remember Ctrl-C during the fit (only where Python's own handler is in place)."""
        self._ctrl_c = False
        on_main = threading.current_thread() is threading.main_thread()
        if on_main and signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            signal.signal(signal.SIGINT, self._on_ctrl_c)

    def _restore_handler(self) -> None:
        # Only our own, installed in place of Python's: on Ctrl-C Lightning has already
        # set SIGINT to "ignore" for its shutdown, and that stays.
        if signal.getsignal(signal.SIGINT) == self._on_ctrl_c:
            signal.signal(signal.SIGINT, signal.default_int_handler)

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Give Ctrl-C back to the handler it had before the fit."""
        self._restore_handler()

    def _raise_lost_ctrl_c(self) -> None:
        if self._ctrl_c:
            raise KeyboardInterrupt

    def on_train_batch_start(self, trainer: pl.Trainer, *args: object) -> None:
        """Raise a Ctrl-C that was lost (see the module's docstring)."""
        self._raise_lost_ctrl_c()

    def on_train_batch_end(self, trainer: pl.Trainer, *args: object) -> None:
        """Raise a Ctrl-C that was lost."""
        self._raise_lost_ctrl_c()

    def on_validation_batch_end(self, trainer: pl.Trainer, *args: object) -> None:
        """Raise a Ctrl-C that was lost."""
        self._raise_lost_ctrl_c()

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        """Save the state reached so far when the run is interrupted (not on a crash).

        In the end-of-epoch validation the previous epoch's checkpoint is kept instead.
        """
        self._ctrl_c = False
        self._restore_handler()
        if not is_interruption(exception):
            return
        progress = trainer.fit_loop.epoch_progress.current
        after_last_batch = trainer.fit_loop.epoch_loop.batch_progress.is_last_batch
        if after_last_batch and progress.processed == progress.completed and self.path.is_file():
            # Stopped in the end-of-epoch validation: a checkpoint from here would resume
            # with no training batch left, and the epoch's train/loss is never computed.
            # The end of the previous epoch (already saved) redoes the whole epoch instead.
            log.warning("training interrupted; resuming redoes the epoch from %s", self.path)
        else:
            self._save(trainer)
            log.warning("training interrupted; state saved to %s", self.path)
        self.saved_on_interrupt = True
