"""Torch datasets over image samples (no Lightning: the scoring stage uses them too)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from anomaly.data.folder import Sample
from anomaly.data.images import read_image, read_mask
from anomaly.data.transforms import Preprocess, resize_mask
from anomaly.errors import ImageReadError


class ImageDataset(Dataset):
    """Whole images (and optionally masks) at the size the model inspects them.

    Each item is a dict with ``index``, ``image`` ``(C, h, w)`` float32 in [0, 1] (the
    model input size in resize mode, the scaled image in tile mode), ``label``,
    ``original_size`` ``(H, W)``; with masks also ``mask`` ``(1, h, w)`` in {0, 1} and
    ``has_mask`` (False for a defective image whose mask file is missing); with
    ``keep_original`` also ``original``, the decoded ``(H, W, C)`` uint8 image. An
    unreadable file gives ``{"index": i, "error": reason}`` instead when ``skip_errors`` is
    set, so one bad file never stops a batch.

    Args:
        samples: The files.
        preprocess: Size, channels and mode of the model input.
        with_masks: Also load ground-truth masks (defect-free images get an empty mask).
        skip_errors: Return an error record for unreadable files instead of raising.
        keep_original: Also return the decoded image at its original size (for overlays).
    """

    def __init__(
        self,
        samples: Sequence[Sample],
        preprocess: Preprocess,
        *,
        with_masks: bool = False,
        skip_errors: bool = False,
        keep_original: bool = False,
    ) -> None:
        self.samples = list(samples)
        self.preprocess = preprocess
        self.with_masks = with_masks
        self.skip_errors = skip_errors
        self.keep_original = keep_original

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict[str, Any]:
        sample = self.samples[index]
        try:
            array = read_image(sample.path, channels=self.preprocess.channels)
            item: dict[str, Any] = {
                "index": index,
                "image": self.preprocess(array),
                "label": sample.label,
                "original_size": tuple(array.shape[:2]),
            }
            if self.with_masks:
                size = tuple(item["image"].shape[-2:])
                item["mask"], item["has_mask"] = _mask(sample, array.shape[:2], size)
        except ImageReadError as exc:
            if not self.skip_errors:
                raise
            return {"index": index, "error": exc.reason}
        if self.keep_original:
            item["original"] = np.round(array * 255).astype(np.uint8)
        return item


def _mask(
    sample: Sample, shape: tuple[int, ...], size: tuple[int, ...]
) -> tuple[torch.Tensor, bool]:
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
    return resize_mask(torch.from_numpy(mask)[None], size), True


class PatchDataset(Dataset):
    """Random model-sized patches of images at their working size (tile-mode training).

    Args:
        samples: The files (defect-free).
        preprocess: A tile-mode preprocessing; patches are ``image_size`` large.
        patches_per_image: Patches drawn from each image per epoch.
        seed: With a seed, patch ``i`` is always the same (for validation); without, patches
            are drawn afresh every time (for training).
    """

    def __init__(
        self,
        samples: Sequence[Sample],
        preprocess: Preprocess,
        *,
        patches_per_image: int = 1,
        seed: int | None = None,
    ) -> None:
        self.samples = list(samples)
        self.preprocess = preprocess
        self.patches_per_image = patches_per_image
        self.seed = seed

    def __len__(self) -> int:
        return len(self.samples) * self.patches_per_image

    def __getitem__(self, index: int) -> dict[str, Any]:
        sample = self.samples[index // self.patches_per_image]
        image = self.preprocess(read_image(sample.path, channels=self.preprocess.channels))
        h, w = self.preprocess.image_size
        pad_h, pad_w = max(0, h - image.shape[1]), max(0, w - image.shape[2])
        if pad_h or pad_w:
            image = F.pad(image[None], (0, pad_w, 0, pad_h), mode="replicate")[0]
        span_y, span_x = image.shape[1] - h + 1, image.shape[2] - w + 1
        if self.seed is None:
            # torch's generator: seeded by seed_everything, per worker too.
            y, x = int(torch.randint(span_y, ())), int(torch.randint(span_x, ()))
        else:
            rng = np.random.default_rng((self.seed, index))
            y, x = int(rng.integers(span_y)), int(rng.integers(span_x))
        return {"index": index, "image": image[:, y : y + h, x : x + w], "label": 0}


def collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Batch readable items and set unreadable ones aside.

    Returns:
        ``index`` (list), ``image`` (an ``(N, C, h, w)`` tensor when all images have one
        size, else a list of ``(C, h, w)`` tensors; absent when every item failed),
        ``label`` ``(N,)``, ``original_size`` (list), optional ``mask`` (like ``image``),
        ``has_mask`` and ``original`` (list), and ``errors``: a list of ``(index, reason)``.
    """
    good = [it for it in items if "error" not in it]
    batch: dict[str, Any] = {
        "errors": [(it["index"], it["error"]) for it in items if "error" in it],
        "index": [it["index"] for it in good],
        "original_size": [it.get("original_size") for it in good],
    }
    if good:
        batch["image"] = _stack([it["image"] for it in good])
        batch["label"] = torch.tensor([it["label"] for it in good])
        if "mask" in good[0]:
            batch["mask"] = _stack([it["mask"] for it in good])
            batch["has_mask"] = torch.tensor([it["has_mask"] for it in good])
        if "original" in good[0]:
            batch["original"] = [it["original"] for it in good]
    return batch


def _stack(tensors: list[torch.Tensor]) -> torch.Tensor | list[torch.Tensor]:
    if all(t.shape == tensors[0].shape for t in tensors):
        return torch.stack(tensors)
    return tensors
