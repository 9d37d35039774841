"""Torch datasets over image samples (no Lightning: the scoring stage uses them too)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import logging
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from anomaly.data.folder import Sample
from anomaly.data.images import is_colour, match_channels, read_image, read_mask, read_native
from anomaly.data.transforms import Preprocess, resize_mask
from anomaly.errors import ConfigError, ImageReadError

log = logging.getLogger(__name__)

#: Images smaller than this many pixels on a side are refused by default: at that size a
#: file is an icon or a stray thumbnail, not an inspection photo.
MIN_IMAGE_SIDE = 8


def load_checked(path: Path, *, channels: int, min_side: int = MIN_IMAGE_SIDE) -> tuple[np.ndarray, str]:
    """Read an image for the model, refusing tiny ones and noting a channel-mode mismatch.

    A colour photo for a gray model is converted with luma weights, a gray one for an RGB
    model replicated; both still score, but the note says so, because a camera in the wrong
    mode is worth knowing about.

    Args:
        path: The image file.
        channels: Channels the model expects (1 or 3).
        min_side: Smallest accepted height and width, in pixels.

    Returns:
        ``(H, W, channels)`` float32 in [0, 1], and a note (``""`` when nothing was
        converted).

    Raises:
        ImageReadError: Unreadable, or smaller than ``min_side``.
    """
    native = read_native(path)
    height, width = native.shape[:2]
    if min(height, width) < min_side:
        raise ImageReadError(
            path,
            f"image is {width}x{height} pixels, below the {min_side}-pixel minimum "
            "(min_image_size); a thumbnail or icon in the folder?",
        )
    note = ""
    if channels == 1 and is_colour(native):
        note = "colour image converted to gray (the model was trained on gray images)"
    elif channels == 3 and native.shape[-1] == 1:
        note = "gray image replicated to RGB (the model was trained on colour images)"
    return match_channels(native, channels), note


def check_images(
    samples: Sequence[Sample], *, channels: int, min_side: int = MIN_IMAGE_SIDE
) -> tuple[list[Sample], list[tuple[Path, str]]]:
    """Split samples into readable ones and ``(path, reason)`` for those that are not.

    Training decodes every file once up front with this, so that one bad file is skipped
    with a warning instead of stopping the run an hour in.
    """
    good: list[Sample] = []
    bad: list[tuple[Path, str]] = []
    for sample in samples:
        try:
            load_checked(sample.path, channels=channels, min_side=min_side)
        except ImageReadError as exc:
            bad.append((sample.path, exc.reason))
        else:
            good.append(sample)
    return good, bad


class ImageDataset(Dataset):
    """Whole images (and optionally masks) at the size the model inspects them.

    Each item is a dict with ``index``, ``image`` ``(C, h, w)`` float32 in [0, 1] (the
    model input size in resize mode, the scaled image in tile mode), ``label``,
    ``original_size`` ``(H, W)``; with masks also ``mask`` ``(1, h, w)`` in {0, 1} and
    ``has_mask`` (False for a defective image whose mask file is missing or unusable,
    ``mask_error`` then saying why when it is unusable); with
    ``keep_original`` also ``original``, the decoded ``(H, W, C)`` uint8 image. An
    unreadable file gives ``{"index": i, "error": reason}`` instead when ``skip_errors`` is
    set, so one bad file never stops a batch.

    Args:
        samples: The files.
        preprocess: Size, channels and mode of the model input.
        with_masks: Also load ground-truth masks (defect-free images get an empty mask).
        skip_errors: Return an error record for unreadable files instead of raising.
        keep_original: Also return the decoded image at its original size (for overlays).
        min_side: Images smaller than this on a side are unreadable (see
            :func:`load_checked`).
    """

    def __init__(
        self,
        samples: Sequence[Sample],
        preprocess: Preprocess,
        *,
        with_masks: bool = False,
        skip_errors: bool = False,
        keep_original: bool = False,
        min_side: int = MIN_IMAGE_SIDE,
    ) -> None:
        self.samples = list(samples)
        self.preprocess = preprocess
        self.with_masks = with_masks
        self.skip_errors = skip_errors
        self.keep_original = keep_original
        self.min_side = min_side

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict[str, Any]:
        sample = self.samples[index]
        try:
            array, note = load_checked(
                sample.path, channels=self.preprocess.channels, min_side=self.min_side
            )
            item: dict[str, Any] = {
                "index": index,
                "image": self.preprocess(array),
                "label": sample.label,
                "original_size": tuple(array.shape[:2]),
                "note": note,
            }
            if self.with_masks:
                size = tuple(item["image"].shape[-2:])
                item["mask"], item["has_mask"], item["mask_error"] = _mask(
                    sample, array.shape[:2], size, turn=self.preprocess.turns(*array.shape[:2])
                )
        except ImageReadError as exc:
            if not self.skip_errors:
                raise
            return {"index": index, "error": exc.reason}
        if self.keep_original:
            item["original"] = np.round(array * 255).astype(np.uint8)
        return item


def _mask(
    sample: Sample, shape: tuple[int, ...], size: tuple[int, ...], *, turn: bool = False
) -> tuple[torch.Tensor, bool, str]:
    """The mask at the model's size, whether pixel metrics may use it, and why not.

    ``turn``: the image was transposed before it was resized (``data.upright``).
    """
    if sample.mask_path is None:
        # A defect-free image has an empty mask; a defective one without a mask file is
        # marked so that pixel metrics leave it out instead of counting it as all-good.
        return torch.zeros(1, *size), sample.label != 1, ""
    # A bad mask costs only the pixel metrics: the image's label comes from its folder,
    # so its score still counts.
    try:
        mask = read_mask(sample.mask_path)
    except ImageReadError as exc:
        return torch.zeros(1, *size), False, exc.reason
    if mask.shape != tuple(shape):
        reason = (
            f"mask is {mask.shape[1]}x{mask.shape[0]} pixels but its image "
            f"{sample.path.name} is {shape[1]}x{shape[0]}; masks must match their image"
        )
        return torch.zeros(1, *size), False, reason
    if turn:
        mask = np.ascontiguousarray(mask.T)
    return resize_mask(torch.from_numpy(mask)[None], size), True, ""


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


#: Training flips (``data.flips``) and the image dimension each one reverses.
FLIPS = {"horizontal": -1, "vertical": -2}


def flip_names(flips: str | Sequence[str]) -> list[str]:
    """The checked names of ``data.flips``, each once; one name on its own is a list of one.

    Raises:
        ConfigError: An unknown name (names ``data.flips`` and the choices).
    """
    names = [flips] if isinstance(flips, str) else list(flips)
    unknown = [f for f in names if f not in FLIPS]
    if unknown:
        raise ConfigError(
            f"data.flips={names!r}: {unknown[0]!r} is unknown; use a list of "
            f"{sorted(FLIPS)} (or [] for none)"
        )
    return list(dict.fromkeys(names))


class RandomFlips(Dataset):
    """Another dataset's images, each flip applied with probability one half.

    For training only: mirrored copies of the defect-free images widen what the model
    learns as normal (DRAEM's authors rotate theirs). Validation and scoring images are
    never flipped, so calibration sees the photos as the line takes them.

    Args:
        dataset: Gives items with an ``image`` ``(C, H, W)``.
        flips: Names from :data:`FLIPS` (see :func:`flip_names`); empty passes the items
            through.

    Raises:
        ConfigError: An unknown flip name (names ``data.flips``).
    """

    def __init__(self, dataset: Dataset, flips: str | Sequence[str]) -> None:
        self.dataset = dataset
        self.dims = [FLIPS[f] for f in flip_names(flips)]

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = self.dataset[index]
        if "image" in item:
            # torch's generator: seeded by seed_everything, per worker too.
            dims = [d for d in self.dims if float(torch.rand(())) < 0.5]
            if dims:
                item = {**item, "image": item["image"].flip(dims)}
        return item


def collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Batch readable items and set unreadable ones aside.

    Returns:
        ``index`` (list), ``image`` (an ``(N, C, h, w)`` tensor when all images have one
        size, else a list of ``(C, h, w)`` tensors; absent when every item failed),
        ``label`` ``(N,)``, ``original_size`` (list), optional ``mask`` (like ``image``),
        ``has_mask`` and ``original`` (list), ``errors``: a list of ``(index, reason)``,
        ``notes``: ``(index, note)`` of images that were converted to the model's mode, and
        ``mask_errors``: ``(index, reason)`` of readable images whose mask is unusable (their
        ``has_mask`` is False).
    """
    good = [it for it in items if "error" not in it]
    batch: dict[str, Any] = {
        "errors": [(it["index"], it["error"]) for it in items if "error" in it],
        "index": [it["index"] for it in good],
        "original_size": [it.get("original_size") for it in good],
        "notes": [(it["index"], it["note"]) for it in good if it.get("note")],
        "mask_errors": [(it["index"], it["mask_error"]) for it in good if it.get("mask_error")],
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
