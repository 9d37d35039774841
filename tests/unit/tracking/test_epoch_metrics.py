"""Epoch metrics reach the run once per epoch, also across an interrupt and a resume."""

import pytest
import pytorch_lightning as pl
import torch
from mlflow import MlflowClient
from torch.utils.data import DataLoader

from anomaly.tracking.mlflow_logger import EpochMetricsCallback, start_run
from anomaly.training.autoencoder import AutoencoderModule
from anomaly.training.checkpoints import ResumableCheckpoint
from tests.conftest import make_trainer

NET = {
    "_target_": "anomaly.models.conv_ae.ConvAutoencoder",
    "image_size": [16, 16],
    "channels": 1,
    "latent_dim": 8,
}


class CtrlCAtEpochEnd(pl.Callback):
    """Ctrl-C at the end of one epoch: after Lightning counted it done."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.current_epoch == self.epoch:
            raise KeyboardInterrupt


def _fit(
    callbacks: list[pl.Callback], epochs: int, ckpt: str | None = None, val: bool = False
) -> None:
    module = AutoencoderModule(
        NET,
        loss={"name": "l2"},
        optimizer={"_target_": "torch.optim.Adam", "_partial_": True, "lr": 1e-3},
    )
    images = [{"image": torch.rand(4, 1, 16, 16)} for _ in range(2)]
    trainer = make_trainer(-1, max_epochs=epochs, callbacks=callbacks)  # -1: epochs decide
    loader = DataLoader(images, batch_size=None)
    trainer.fit(module, loader, loader if val else None, ckpt_path=ckpt)


@pytest.mark.parametrize("before_upload", [True, False], ids=["before", "after"])
def test_an_interrupt_at_epoch_end_leaves_no_hole_and_no_repeat(tmp_path, before_upload):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    checkpoints = ResumableCheckpoint(tmp_path / "checkpoints")
    with pytest.raises(SystemExit), start_run(uri=uri, experiment="e") as run:
        run_id = run.run_id
        metrics = EpochMetricsCallback(run)
        stop = CtrlCAtEpochEnd(epoch=1)
        order = [stop, metrics] if before_upload else [metrics, stop]
        _fit([*order, checkpoints], epochs=10)
    assert checkpoints.saved_on_interrupt
    with start_run(uri=uri, experiment="e", run_id=run_id) as run:
        _fit([EpochMetricsCallback(run), checkpoints], epochs=4, ckpt=str(checkpoints.path))
    history = MlflowClient(uri).get_metric_history(run_id, "train/loss")
    # The checkpoint counts epoch 1 as done, so the resumed run starts at epoch 2.
    assert sorted(m.step for m in history) == [0, 1, 2, 3]


class CtrlCInValidation(pl.Callback):
    """Ctrl-C in the end-of-epoch validation: every training batch of the epoch is done."""

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.current_epoch == 1:
            raise KeyboardInterrupt


def test_an_interrupt_in_the_end_of_epoch_validation_redoes_that_epoch(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    checkpoints = ResumableCheckpoint(tmp_path / "checkpoints")
    with pytest.raises(SystemExit), start_run(uri=uri, experiment="e") as run:
        run_id = run.run_id
        _fit([CtrlCInValidation(), EpochMetricsCallback(run), checkpoints], epochs=10, val=True)
    assert checkpoints.saved_on_interrupt
    with start_run(uri=uri, experiment="e", run_id=run_id) as run:
        _fit([EpochMetricsCallback(run), checkpoints], epochs=4, ckpt=str(checkpoints.path),
             val=True)  # fmt: skip
    client = MlflowClient(uri)
    for key in ("train/loss", "val/loss"):
        assert sorted(m.step for m in client.get_metric_history(run_id, key)) == [0, 1, 2, 3]
