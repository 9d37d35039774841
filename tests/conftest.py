"""Shared fixtures: small, real image files made on the fly."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from PIL import Image
from torch import nn

from anomaly.models.inspection import MAP, Inspection, Wants

if TYPE_CHECKING:
    from anomaly.scoring.detector import Detector

# A DRAEM member small enough for unit tests (a model.module config of conf/model/draem.yaml).
TINY_DRAEM = {
    "_target_": "anomaly.training.draem.DraemModule",
    "reconstructive": {"_target_": "anomaly.models.unet.UNet", "channels": 1, "base": 4,
                       "depth": 2, "skip": False},
    "discriminative": {"_target_": "anomaly.models.unet.UNet", "out_channels": 1, "base": 4,
                       "depth": 2, "sigmoid": False},
    "segmenter_prior": 0.01,
}  # fmt: skip


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist, one thread of arithmetic per worker process.

    ``make test`` runs one worker per core; torch's default of one thread per core in each
    of them (and in the commands they start, which inherit the environment) oversubscribes
    the cores, and a tiny training then ran up to 8x slower than alone.
    """
    import os

    if os.environ.get("PYTEST_XDIST_WORKER"):
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[var] = "1"
        import torch

        torch.set_num_threads(1)


def write_png(path: Path, array: np.ndarray) -> Path:
    """Write a float [0, 1] or uint8 array as an 8-bit PNG."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if array.dtype != np.uint8:
        array = np.round(np.clip(array, 0, 1) * 255).astype(np.uint8)
    Image.fromarray(array).save(path)
    return path


def killed_atomic_write(path: Path) -> None:
    """What SIGKILL during an atomic write leaves: the writer dies before its rename."""
    code = (
        "import os, sys\n"
        "from anomaly.io import atomic_open\n"
        "with atomic_open(sys.argv[1], 'w') as handle:\n"
        "    handle.write('half')\n"
        "    handle.flush()\n"
        "    os._exit(9)\n"
    )
    result = subprocess.run([sys.executable, "-c", code, str(path)], check=False)
    assert result.returncode == 9 and not path.exists()


def stripes(size: int, rng: np.random.Generator) -> np.ndarray:
    """A defect-free 'part': horizontal stripes with a random phase and mild noise."""
    phase = rng.uniform(0, 2 * np.pi)
    rows = 0.5 + 0.3 * np.sin(np.arange(size) / 3.0 + phase)
    image = np.repeat(rows[:, None], size, axis=1)
    return np.clip(image + rng.normal(0, 0.02, (size, size)), 0, 1)


def stripes_and_noise(root: Path, *, train: int, val: int, test: int) -> dict:
    """32x32 stripes for training and validation; ``test`` stripes and ``test`` noise
    images (class 'noise', the defects) in ``root/test``.

    Returns:
        ``train``, ``val`` and ``test`` lists of samples, and ``test_dir``.
    """
    from anomaly.data.folder import Sample

    rng = np.random.default_rng(0)
    stripe = {
        part: [write_png(root / part / f"{i}.png", stripes(32, rng)) for i in range(n)]
        for part, n in (("train", train), ("val", val))
    }
    good = [write_png(root / "test" / f"good{i}.png", stripes(32, rng)) for i in range(test)]
    bad = [
        write_png(root / "test" / f"noise{i}.png", rng.uniform(0, 1, (32, 32))) for i in range(test)
    ]
    return {
        "train": [Sample(p, 0, "good") for p in stripe["train"]],
        "val": [Sample(p, 0, "good") for p in stripe["val"]],
        "test": [Sample(p, 0, "good") for p in good] + [Sample(p, 1, "noise") for p in bad],
        "test_dir": root / "test",
    }


def tiny_draem_detector() -> Detector:
    """A freshly initialised (seed 0) tiny DRAEM detector for 32x32 grey images."""
    # Imported here so that conftest, loaded by every test, stays light.
    import torch

    from anomaly.data.transforms import Preprocess
    from anomaly.scoring.detector import Detector
    from anomaly.scoring.maps import MapSettings
    from anomaly.training.draem import DraemModule

    torch.manual_seed(0)
    member = {k: v for k, v in TINY_DRAEM.items() if k != "_target_"}
    return Detector(
        DraemModule(**member), Preprocess.create(image_size=32, channels=1), MapSettings()
    )


def make_tiny_mvtec(root: Path, *, test_size: int = 32, n_train: int = 12, n_test: int = 3) -> Path:
    """An MVTec-style tree of stripe images: 32x32 training images, square test images of
    ``test_size`` with a bright square defect in the 'spot' class, and its masks."""
    rng = np.random.default_rng(0)
    for i in range(n_train):
        write_png(root / "train" / "good" / f"{i:03d}.png", stripes(32, rng))
    lo, hi = test_size * 5 // 16, test_size * 9 // 16
    for i in range(n_test):
        write_png(root / "test" / "good" / f"{i:03d}.png", stripes(test_size, rng))
        image = stripes(test_size, rng)
        mask = np.zeros((test_size, test_size), dtype=bool)
        mask[lo:hi, lo:hi] = True
        image[mask] = 1.0
        write_png(root / "test" / "spot" / f"{i:03d}.png", image)
        write_png(root / "ground_truth" / "spot" / f"{i:03d}_mask.png", mask.astype(np.uint8) * 255)
    return root


@pytest.fixture
def tiny_mvtec(tmp_path: Path) -> Path:
    """A 32x32 MVTec-style tree: 12 good training images, 3 good and 3 defective tests."""
    return make_tiny_mvtec(tmp_path / "tiny")


def make_trainer(steps: int, **kwargs: object) -> pl.Trainer:
    """A quiet CPU trainer for a few steps: no logger, checkpoints or progress bars."""
    return pl.Trainer(
        max_steps=steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
        **kwargs,
    )


class ImageIsTheMap(nn.Module):
    """A stand-in model whose map is its input's first channel (so a test draws the maps)."""

    gives = frozenset({MAP})

    def __init__(self) -> None:
        super().__init__()
        self.unused = nn.Parameter(torch.zeros(1))

    def inspect(self, x: torch.Tensor, wants: Wants) -> Inspection:
        return Inspection(map=x[:, :1] if wants.map else None)
