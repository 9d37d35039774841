import os
import signal

import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from anomaly.training.autoencoder import AutoencoderModule
from anomaly.training.checkpoints import ResumableCheckpoint
from tests.conftest import make_trainer

NET = {
    "_target_": "anomaly.models.conv_ae.ConvAutoencoder",
    "image_size": 16,
    "channels": 1,
    "latent_dim": 4,
}
BATCHES = 3


@pytest.fixture
def python_ctrl_c():
    """Python's own Ctrl-C handler, as in a training started from a terminal.

    An earlier test's interrupt leaves SIGINT ignored in this process (Lightning does that
    for its shutdown); the handler of the test session comes back afterwards.
    """
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, before)


class _SignalInFinaliser:
    def __del__(self) -> None:
        os.kill(os.getpid(), signal.SIGINT)
        # Python runs the handler at its next check, still inside this finaliser, where the
        # KeyboardInterrupt it raises is printed as "Exception ignored" and dropped.
        for _ in range(10_000):
            pass


class LostCtrlC(pl.Callback):
    """Ctrl-C pressed while a finaliser runs, in the second epoch."""

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.current_epoch == 1:
            _SignalInFinaliser()


def _fit(tmp_path, callbacks: list[pl.Callback], epochs: int = 6) -> pl.Trainer:
    module = AutoencoderModule(NET, loss={"name": "l2"})
    images = [{"image": torch.rand(2, 1, 16, 16)} for _ in range(BATCHES)]
    trainer = make_trainer(-1, max_epochs=epochs, callbacks=callbacks)  # -1: epochs decide
    trainer.fit(module, DataLoader(images, batch_size=None))
    return trainer


# The dropped KeyboardInterrupt is what this test is about; pytest reports it as well.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_ctrl_c_lost_in_a_finaliser_still_stops_the_training(tmp_path, python_ctrl_c):
    checkpoints = ResumableCheckpoint(tmp_path / "checkpoints")
    lost = LostCtrlC()
    with pytest.raises(SystemExit):  # Lightning's answer to KeyboardInterrupt
        _fit(tmp_path, [lost, checkpoints])
    assert checkpoints.saved_on_interrupt and checkpoints.path.is_file()
    state = torch.load(checkpoints.path, weights_only=False)
    # Stopped at the first batch of the second epoch, not after six epochs.
    assert state["global_step"] <= BATCHES + 1


def test_the_ctrl_c_handler_is_given_back_after_the_fit(tmp_path, python_ctrl_c):
    checkpoints = ResumableCheckpoint(tmp_path / "checkpoints")
    _fit(tmp_path, [checkpoints], epochs=1)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    assert not checkpoints.saved_on_interrupt


def test_an_ignored_ctrl_c_stays_ignored(tmp_path, python_ctrl_c):
    # A training started in the background (`cmd &`) inherits SIGINT ignored.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _fit(tmp_path, [LostCtrlC(), ResumableCheckpoint(tmp_path / "checkpoints")], epochs=2)
    assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
