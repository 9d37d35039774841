"""The Lightning data module: defect-free training images and a seeded validation split."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import pytorch_lightning as pl
from torch.utils.data import DataLoader

from anomaly.data.dataset import (
    ImageDataset,
    PatchDataset,
    RandomFlips,
    check_images,
    collate,
    flip_names,
)
from anomaly.data.folder import DatasetSplits, Sample, scan_dataset, split_validation
from anomaly.data.transforms import Preprocess
from anomaly.errors import DataError

log = logging.getLogger(__name__)


class AnomalyDataModule(pl.LightningDataModule):
    """Training and validation loaders over the defect-free images of a data root.

    The validation split is carved from the *training* images (never from the test split):
    it drives the validation loss and, after training, the threshold calibration. In tile
    mode both loaders give random model-sized patches of the scaled images (seeded, hence
    fixed, for validation).

    Args:
        root: Data root (``data.root``).
        preprocess: Model input size and channels.
        val_fraction: Share of the training images held out for validation.
        min_val_images: At least this many held out, while three quarters stay for training.
        batch_size: Images per step.
        num_workers: DataLoader worker processes (0 decodes in the main process).
        mask_suffix: Suffix of mask files in ``ground_truth/``.
        patches_per_image: Tile mode: patches drawn per image and epoch.
        flips: Training images (or patches) are mirrored at random: ``horizontal``,
            ``vertical`` (a list, or one name), each with probability one half.
            Validation images never are.
        seed: Seed of the validation split.
        splits: The root already scanned (by a caller that needed its file list first);
            None scans it in :meth:`setup`.

    Raises:
        ConfigError: An unknown name in ``flips``.
    """

    def __init__(
        self,
        root: str,
        *,
        preprocess: Preprocess,
        val_fraction: float = 0.1,
        min_val_images: int = 0,
        batch_size: int = 16,
        num_workers: int = 0,
        mask_suffix: str = "_mask",
        patches_per_image: int = 1,
        flips: str | Sequence[str] = (),
        seed: int = 0,
        splits: DatasetSplits | None = None,
    ) -> None:
        super().__init__()
        self.root = root
        self._scanned = splits
        self.preprocess = preprocess
        self.val_fraction = val_fraction
        self.min_val_images = min_val_images
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.mask_suffix = mask_suffix
        self.patches_per_image = patches_per_image
        # Checked now, so that a bad name fails before any image is read.
        self.flips = flip_names(flips)
        self.seed = seed
        self.splits: DatasetSplits | None = None
        self.train_samples: list[Sample] = []
        self.val_samples: list[Sample] = []
        self.skipped: list[tuple[Path, str]] = []

    def setup(self, stage: str | None = None) -> None:
        """Scan the root and split it (idempotent)."""
        if self.splits is not None:
            return
        splits = self._scanned if self._scanned is not None else scan_dataset(
            self.root, mask_suffix=self.mask_suffix
        )
        # Every training image is decoded once here: a bad file is skipped with a warning
        # now rather than stopping the run in the middle of an epoch.
        readable, self.skipped = check_images(splits.train, channels=self.preprocess.channels)
        for path, reason in self.skipped:
            log.warning("skipped training image %s: %s", path, reason)
        if len(readable) < 2:
            raise DataError(
                f"{len(readable)} readable training image(s) in {splits.root} "
                f"({len(self.skipped)} unreadable, see the warnings): at least 2 are needed, "
                "one to train on and one to calibrate the thresholds on; add defect-free "
                "images"
            )
        splits.train = readable
        self.splits = splits
        self.train_samples, self.val_samples = split_validation(
            readable, fraction=self.val_fraction, seed=self.seed, min_images=self.min_val_images
        )

    def _loader(self, samples: list[Sample], *, shuffle: bool) -> DataLoader:
        if self.preprocess.tile:
            dataset = PatchDataset(samples, self.preprocess,
                                   patches_per_image=self.patches_per_image,
                                   seed=None if shuffle else self.seed)
        else:
            dataset = ImageDataset(samples, self.preprocess)
        if shuffle and self.flips:
            dataset = RandomFlips(dataset, self.flips)
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=shuffle,
            drop_last=shuffle and len(dataset) > self.batch_size,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            collate_fn=collate,
        )

    def train_dataloader(self) -> DataLoader:
        """Shuffled defect-free training images."""
        return self._loader(self.train_samples, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        """The held-out defect-free validation images."""
        return self._loader(self.val_samples, shuffle=False)
