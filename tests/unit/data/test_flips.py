"""Random flips of the training images (data.flips)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from anomaly.data.datamodule import AnomalyDataModule
from anomaly.data.dataset import RandomFlips
from anomaly.data.transforms import Preprocess
from anomaly.errors import ConfigError
from tests.conftest import write_png


class _One(torch.utils.data.Dataset):
    """One item whose image has no symmetry, so every flip gives a different tensor."""

    def __init__(self) -> None:
        self.image = torch.arange(12.0).reshape(1, 3, 4)

    def __len__(self) -> int:
        return 1

    def __getitem__(self, index: int) -> dict[str, object]:
        return {"index": index, "image": self.image, "label": 0}


def _variants(flips: list[str], draws: int = 200) -> set[tuple[float, ...]]:
    torch.manual_seed(0)
    dataset = RandomFlips(_One(), flips)
    return {_key(dataset[0]["image"]) for _ in range(draws)}


def _key(image: torch.Tensor) -> tuple[float, ...]:
    return tuple(image.flatten().tolist())


def test_each_flip_is_drawn_and_nothing_else():
    image = _One().image
    both = {_key(image), _key(image.flip(-1)), _key(image.flip(-2)), _key(image.flip([-2, -1]))}
    assert _variants(["horizontal", "vertical"]) == both
    assert _variants(["horizontal"]) == {_key(image), _key(image.flip(-1))}
    assert _variants(["vertical"]) == {_key(image), _key(image.flip(-2))}
    assert _variants([]) == {_key(image)}


def test_the_source_image_is_not_changed_in_place():
    source = _One()
    before = source.image.clone()
    torch.manual_seed(0)
    dataset = RandomFlips(source, ["horizontal", "vertical"])
    for _ in range(20):
        dataset[0]
    assert torch.equal(source.image, before)


def test_unknown_flip_names_the_key_and_the_choices():
    with pytest.raises(ConfigError, match=r"data\.flips.*'diagonal'.*horizontal.*vertical"):
        RandomFlips(_One(), ["horizontal", "diagonal"])


def test_datamodule_flips_training_images_only(tmp_path: Path):
    # Left half dark, right half bright: a horizontal flip is visible in every image.
    ramp = np.tile(np.linspace(0.1, 0.9, 16), (16, 1))
    for i in range(8):
        write_png(tmp_path / "train" / "good" / f"{i:02d}.png", ramp)
    torch.manual_seed(0)
    module = AnomalyDataModule(
        str(tmp_path),
        preprocess=Preprocess.create(image_size=16, channels=1),
        val_fraction=0.25,
        batch_size=2,
        flips=["horizontal"],
    )
    module.setup()

    def left_darker(loader: torch.utils.data.DataLoader) -> list[bool]:
        return [
            bool(image[0, :, :8].mean() < image[0, :, 8:].mean())
            for batch in loader
            for image in batch["image"]
        ]

    train = [v for _ in range(10) for v in left_darker(module.train_dataloader())]
    assert True in train and False in train
    assert all(left_darker(module.val_dataloader()))


def test_datamodule_refuses_a_bad_name_before_reading_images(tmp_path: Path):
    with pytest.raises(ConfigError, match="data.flips"):
        AnomalyDataModule(
            str(tmp_path / "missing"),
            preprocess=Preprocess.create(image_size=16, channels=1),
            flips=["upside_down"],
        )


def test_one_name_on_its_own_is_a_list_of_one(tmp_path: Path):
    module = AnomalyDataModule(
        str(tmp_path), preprocess=Preprocess.create(image_size=16, channels=1), flips="vertical"
    )
    assert module.flips == ["vertical"]
