"""The Lightning data module: defect-free training images and a seeded validation split."""

from __future__ import annotations

import pytorch_lightning as pl
from torch.utils.data import DataLoader

from anomaly.data.dataset import ImageDataset, PatchDataset, collate
from anomaly.data.folder import DatasetSplits, Sample, scan_dataset, split_validation
from anomaly.data.transforms import Preprocess


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
        batch_size: Images per step.
        num_workers: DataLoader worker processes (0 decodes in the main process).
        mask_suffix: Suffix of mask files in ``ground_truth/``.
        patches_per_image: Tile mode: patches drawn per image and epoch.
        seed: Seed of the validation split.
    """

    def __init__(
        self,
        root: str,
        *,
        preprocess: Preprocess,
        val_fraction: float = 0.1,
        batch_size: int = 16,
        num_workers: int = 0,
        mask_suffix: str = "_mask",
        patches_per_image: int = 1,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.root = root
        self.preprocess = preprocess
        self.val_fraction = val_fraction
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.mask_suffix = mask_suffix
        self.patches_per_image = patches_per_image
        self.seed = seed
        self.splits: DatasetSplits | None = None
        self.train_samples: list[Sample] = []
        self.val_samples: list[Sample] = []

    def setup(self, stage: str | None = None) -> None:
        """Scan the root and split it (idempotent)."""
        if self.splits is not None:
            return
        self.splits = scan_dataset(self.root, mask_suffix=self.mask_suffix)
        self.train_samples, self.val_samples = split_validation(
            self.splits.train, fraction=self.val_fraction, seed=self.seed
        )

    def _loader(self, samples: list[Sample], *, shuffle: bool) -> DataLoader:
        if self.preprocess.tile:
            dataset = PatchDataset(samples, self.preprocess,
                                   patches_per_image=self.patches_per_image,
                                   seed=None if shuffle else self.seed)
        else:
            dataset = ImageDataset(samples, self.preprocess)
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
