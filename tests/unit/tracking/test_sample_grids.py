"""How often training draws its sample grid."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from PIL import Image
from torch import nn

from anomaly.tracking.mlflow_logger import SampleGridCallback


class _Recorder:
    enabled = True

    def __init__(self) -> None:
        self.steps: list[int] = []

    def image(self, image: Image.Image, *, key: str, step: int) -> None:
        self.steps.append(step)


def _drawn(max_epochs: int, every: int) -> list[int]:
    recorder = _Recorder()
    callback = SampleGridCallback(recorder, lambda m: Image.new("L", (4, 4)), every)
    for epoch in range(max_epochs):
        trainer = SimpleNamespace(current_epoch=epoch, max_epochs=max_epochs)
        callback.on_train_epoch_end(trainer, nn.Linear(1, 1))
    return recorder.steps


@pytest.mark.parametrize(
    ("max_epochs", "every", "expected"),
    [
        (10, 1, list(range(10))),  # every epoch of a short training
        (10, 3, [2, 5, 8, 9]),  # the period, and always the last epoch
        (100, 1, list(range(4, 100, 5))),  # a long one: at most 20 pictures
        (5, 0, []),  # off
    ],
)
def test_grids_follow_the_period_but_never_more_than_twenty(max_epochs, every, expected):
    assert _drawn(max_epochs, every) == expected
