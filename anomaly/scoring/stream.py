"""The streaming loop: images decoded in loader workers, inspected batch by batch."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from torch.utils.data import DataLoader

from anomaly.data.dataset import ImageDataset, collate
from anomaly.data.folder import Sample
from anomaly.scoring.detector import Detector, Inspected

# Progress callback: (files finished so far, total files).
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class Loading:
    """How images are fed to the model: photos per batch and loader worker processes."""

    batch_size: int = 32
    num_workers: int = 0


def inspect_batches(
    detector: Detector,
    samples: Sequence[Sample],
    *,
    batch_size: int = 32,
    num_workers: int = 0,
    with_masks: bool = False,
    skip_errors: bool = False,
    keep_original: bool = False,
    timings: dict[str, float] | None = None,
    image_features: bool = False,
    patch_features: bool = False,
    fitting_maps: bool = False,
) -> Iterator[tuple[dict[str, Any], Inspected]]:
    """Stream ``(batch, inspected)`` over samples; decoding happens in loader workers.

    ``inspected`` (:meth:`Detector.inspect`) holds the batch's maps and, with the feature
    score, their feature scores. Batches whose every file failed yield no maps, so callers
    still see their ``errors``.
    With ``timings``, seconds spent waiting for decoded images (``decode``) and computing
    maps (``model``) are added to it. With ``image_features`` or ``patch_features``, the
    batches are inspected for fitting the add-ons instead (features, no maps); with
    ``fitting_maps`` too, or alone, their maps pooled for fitting the position score.
    """
    dataset = ImageDataset(
        samples,
        detector.preprocess,
        with_masks=with_masks,
        skip_errors=skip_errors,
        keep_original=keep_original,
    )
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=num_workers, collate_fn=collate)
    batches = iter(loader)
    while True:
        started = time.perf_counter()
        batch = next(batches, None)
        decoded = time.perf_counter()
        if batch is None:
            return
        inspected = (
            detector.inspect(
                batch["image"],
                image_features=image_features,
                patch_features=patch_features,
                fitting_maps=fitting_maps,
            )
            if "image" in batch
            else Inspected(maps=[])
        )
        if timings is not None:
            timings["decode"] = timings.get("decode", 0.0) + decoded - started
            timings["model"] = timings.get("model", 0.0) + time.perf_counter() - decoded
        yield batch, inspected
