"""A torch ``Dataset`` over image samples (no Lightning: the scoring stage uses it too)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from anomaly.data.folder import Sample
from anomaly.data.images import read_image, read_mask
from anomaly.data.transforms import Preprocess, resize_mask
from anomaly.errors import ImageReadError


class ImageDataset(Dataset):
    """Images (and optionally masks) as model inputs.

    Each item is a dict with ``index``, ``image`` ``(C, h, w)`` float32 in [0, 1],
    ``label``, ``original_size`` ``(H, W)``; with masks also ``mask`` ``(1, h, w)`` in {0, 1}
    and ``has_mask`` (False for a defective image whose mask file is missing). An unreadable
    file gives ``{"index": i, "error": reason}`` instead when ``skip_errors`` is set, so one
    bad file never stops a batch.

    Args:
        samples: The files.
        preprocess: Size and channels of the model input.
        with_masks: Also load ground-truth masks (defect-free images get an empty mask).
        skip_errors: Return an error record for unreadable files instead of raising.
    """

    def __init__(
        self,
        samples: Sequence[Sample],
        preprocess: Preprocess,
        *,
        with_masks: bool = False,
        skip_errors: bool = False,
    ) -> None:
        self.samples = list(samples)
        self.preprocess = preprocess
        self.with_masks = with_masks
        self.skip_errors = skip_errors

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict[str, Any]:
        sample = self.samples[index]
        try:
            array = read_image(sample.path, channels=self.preprocess.channels)
        except ImageReadError as exc:
            if not self.skip_errors:
                raise
            return {"index": index, "error": exc.reason}
        item: dict[str, Any] = {
            "index": index,
            "image": self.preprocess(array),
            "label": sample.label,
            "original_size": tuple(array.shape[:2]),
        }
        if self.with_masks:
            item["mask"], item["has_mask"] = self._mask(sample, array.shape[:2])
        return item

    def _mask(self, sample: Sample, shape: tuple[int, ...]) -> tuple[torch.Tensor, bool]:
        size = self.preprocess.image_size
        if sample.mask_path is None:
            # A defect-free image has an empty mask; a defective one without a mask file is
            # marked so that pixel metrics leave it out instead of counting it as all-good.
            return torch.zeros(1, *size), sample.label != 1
        mask = read_mask(sample.mask_path)
        if mask.shape != tuple(shape):
            raise ImageReadError(
                sample.mask_path,
                f"mask is {mask.shape[1]}x{mask.shape[0]} pixels but its image "
                f"{sample.path.name} is {shape[1]}x{shape[0]}; masks must match their image",
            )
        tensor = torch.from_numpy(mask.astype(np.float32))[None]
        return resize_mask(tensor, size), True


def collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack readable items into a batch and set unreadable ones aside.

    Returns:
        ``index`` (list), ``image`` ``(N, C, h, w)`` (absent when every item failed),
        ``label`` ``(N,)``, ``original_size`` (list), optional ``mask``/``has_mask``, and
        ``errors``: a list of ``(index, reason)``.
    """
    good = [it for it in items if "error" not in it]
    batch: dict[str, Any] = {
        "errors": [(it["index"], it["error"]) for it in items if "error" in it],
        "index": [it["index"] for it in good],
        "original_size": [it["original_size"] for it in good],
    }
    if good:
        batch["image"] = torch.stack([it["image"] for it in good])
        batch["label"] = torch.tensor([it["label"] for it in good])
        if "mask" in good[0]:
            batch["mask"] = torch.stack([it["mask"] for it in good])
            batch["has_mask"] = torch.tensor([it["has_mask"] for it in good])
    return batch
