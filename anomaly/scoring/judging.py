"""Verdicts with their pictures on disk, batch by batch: what both scoring commands commit.

``anomaly score`` (:func:`~anomaly.scoring.results.score_folder`) and the score-batch
pipeline differ only in what they do with a finished batch (table rows, or manifest
records); everything before that is here. A batch is handed over only once every
picture of it is on disk, so whatever the caller then records as done is complete.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from anomaly.data.folder import Sample
from anomaly.scoring.detector import Detector
from anomaly.scoring.regions import RegionSettings
from anomaly.scoring.stream import inspect_batches
from anomaly.scoring.verdict import ImageResult, analyse
from anomaly.scoring.writer import OutputSettings, write_pictures

log = logging.getLogger(__name__)


@dataclass
class Judged:
    """One batch's answers, its pictures written.

    Attributes:
        scored: ``(sample index, verdict)`` of each judged image.
        errors: ``(sample index, reason)`` of each image that got no verdict (unreadable,
            unsupported, or a score that is not finite).
        notes: ``(sample index, note)`` of images converted to the model's channels.
    """

    scored: list[tuple[int, ImageResult]] = field(default_factory=list)
    errors: list[tuple[int, str]] = field(default_factory=list)
    notes: list[tuple[int, str]] = field(default_factory=list)


@dataclass(frozen=True)
class Judging:
    """How images are judged and what is written for each.

    Attributes:
        image_threshold: Above it an image is defective.
        pixel_threshold: Above it a pixel is; also the heatmaps' mid-scale.
        regions: How defect regions are cleaned.
        outputs: Which pictures are written.
        output_dir: Where the pictures go (``masks/``, ``heatmaps/``, ``overlays/``).
    """

    image_threshold: float
    pixel_threshold: float
    regions: RegionSettings
    outputs: OutputSettings
    output_dir: Path


def judge_batches(
    detector: Detector,
    samples: Sequence[Sample],
    names: Sequence[str],
    judging: Judging,
    *,
    batch_size: int = 32,
    num_workers: int = 0,
    write_threads: int = 2,
    timings: dict[str, float] | None = None,
) -> Iterator[Judged]:
    """Judge ``samples`` batch by batch and write their pictures; yield each finished batch.

    A batch's pictures are written in ``write_threads`` threads while the next batch is
    decoded and inspected, and the batch is yielded once they are all on disk: at most two
    batches are in flight (flat memory), and a write error (a full disk) is raised before
    more work is done.

    Args:
        detector: A calibrated detector.
        samples: The images.
        names: Each sample's relative path (posix), for logs and picture names.
        judging: Thresholds, regions and pictures.
        batch_size: Images per batch.
        num_workers: Loader workers.
        write_threads: Threads writing pictures.
        timings: Seconds per stage (``decode``, ``model``, ``postprocess``, ``write``)
            are added to it.

    Raises:
        OSError: A picture could not be written.
    """
    timings = timings if timings is not None else {}
    for stage in ("decode", "model", "postprocess", "write"):
        timings.setdefault(stage, 0.0)
    outputs = judging.outputs
    with ThreadPoolExecutor(max_workers=max(1, write_threads)) as pool:
        previous: tuple[Judged, list[Future[None]]] | None = None
        for batch, inspected in inspect_batches(
            detector,
            samples,
            batch_size=batch_size,
            num_workers=num_workers,
            skip_errors=True,
            keep_original=outputs.overlays,
            timings=timings,
        ):
            t0 = time.perf_counter()
            judged = Judged(errors=list(batch["errors"]), notes=list(batch["notes"]))
            results = analyse(
                detector,
                inspected,
                batch["original_size"],
                image_threshold=judging.image_threshold,
                pixel_threshold=judging.pixel_threshold,
                regions=judging.regions,
            )
            pictures = []
            for i, result in zip(batch["index"], results, strict=True):
                if result.error:
                    judged.errors.append((i, result.error))
                    continue
                judged.scored.append((i, result))
            for i, reason in judged.errors:
                log.warning("skipped %s: %s", names[i], reason)
            for i, note in judged.notes:
                log.warning("%s: %s", names[i], note)
            timings["postprocess"] += time.perf_counter() - t0
            if previous is not None:
                timings["write"] += _drain(previous[1])
            t1 = time.perf_counter()
            originals = dict(zip(batch["index"], batch.get("original", []), strict=False))
            for i, result in judged.scored:
                name = Path(names[i]).with_suffix(".png")
                pictures.append(
                    pool.submit(
                        write_pictures,
                        judging.output_dir,
                        name,
                        result,
                        originals.get(i) if outputs.overlays else None,
                        judging.pixel_threshold,
                        outputs,
                    )
                )
            timings["write"] += time.perf_counter() - t1
            if previous is not None:
                yield previous[0]
            previous = (judged, pictures)
        if previous is not None:
            timings["write"] += _drain(previous[1])
            yield previous[0]


def _drain(pending: list[Future[None]]) -> float:
    """Wait for pending writes (re-raising their errors); return the seconds waited."""
    started = time.perf_counter()
    for future in pending:
        future.result()
    return time.perf_counter() - started
