"""Scoring a folder into a results folder: scores.csv, regions.csv, pictures, summary.json."""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from anomaly.data.folder import Sample, describe_others, list_files
from anomaly.data.images import IMAGE_EXTENSIONS
from anomaly.errors import DataError, OutputError
from anomaly.io import atomic_open, remove_leftover_temporaries, write_json_atomic
from anomaly.scoring.detector import Detector
from anomaly.scoring.judging import Judging, judge_batches
from anomaly.scoring.regions import REGION_COLUMNS, RegionSettings, region_table
from anomaly.scoring.stream import Progress
from anomaly.scoring.verdict import ImageResult
from anomaly.scoring.writer import CsvAppender, OutputSettings

log = logging.getLogger(__name__)


SCORES_COLUMNS = (
    "path",
    "score",
    "p_value",
    "threshold",
    "is_defective",
    "n_regions",
    "largest_region_area",
    "defect_area_px",
    "model_id",
)


@dataclass
class ScoreSummary:
    """What ``score_folder`` did; also written to ``summary.json``.

    ``min_p_value`` is ``1 / (validation images + 1)``: no p-value can be smaller, so
    flagging at an ``alpha`` below it flags nothing (calibrate on more images).
    ``status`` is ``"complete"``, or ``"stopped"`` when writing failed part-way (``error``
    says why; every row in ``scores.csv`` is still complete).
    """

    n_images: int
    n_scored: int
    n_defective: int
    n_errors: int
    image_threshold: float
    pixel_threshold: float
    model_id: str
    model_uri: str
    seconds: float
    min_p_value: float = 1.0
    timings: dict[str, float] = field(default_factory=dict)
    n_converted: int = 0
    status: str = "complete"
    error: str = ""

    @property
    def defect_rate(self) -> float:
        """Share of scored images judged defective."""
        return self.n_defective / self.n_scored if self.n_scored else 0.0

    @property
    def images_per_second(self) -> float:
        """Images judged per second, end to end."""
        return self.n_scored / self.seconds if self.seconds else 0.0

    def to_dict(self) -> dict[str, Any]:
        """Plain form for JSON."""
        return {
            **self.__dict__,
            "defect_rate": self.defect_rate,
            "images_per_second": self.images_per_second,
        }


def score_folder(
    detector: Detector,
    input_dir: str | Path,
    output_dir: str | Path,
    *,
    image_threshold: float | None = None,
    pixel_threshold: float | None = None,
    regions: RegionSettings | None = None,
    outputs: OutputSettings | None = None,
    batch_size: int = 32,
    num_workers: int = 0,
    model_uri: str = "",
    write_threads: int = 2,
    progress: Progress | None = None,
) -> ScoreSummary:
    """Score every file under ``input_dir`` (recursively) and write the results.

    Every file but hidden ones (and those in hidden folders) ends up in exactly one table:
    ``scores.csv`` with a verdict, or ``errors.csv`` with the reason it got none (unreadable,
    an unsupported type, pixels or a model score that are not finite).

    Writes, in ``output_dir``: ``scores.csv`` and ``scores.parquet`` (one row per judged
    image), ``regions.csv`` (one row per defect region), ``errors.csv`` (one row per
    other file, only when there are some), ``masks/``, ``heatmaps/`` and ``overlays/``
    (one PNG per image at its original size, under its relative path) and
    ``summary.json``. Images are streamed, so memory does not grow with their number.

    What is on disk is always consistent, even when the run dies: each PNG is written
    atomically, and an image's rows reach ``scores.csv`` and ``regions.csv`` only after its
    PNGs are in place, in whole rows. ``summary.json`` is written last; results left from an
    earlier run in the same folder are removed first, so they cannot pass for this one's,
    and so are the temporary files of writes that a killed run cut short (the folder is
    this run's while it scores).

    Args:
        detector: A calibrated detector.
        input_dir: Folder of images.
        output_dir: Results folder (created).
        image_threshold: Overrides the calibrated image threshold.
        pixel_threshold: Overrides the calibrated pixel threshold.
        regions: Cleaning of the defect masks.
        outputs: Which per-image files to write.
        batch_size: Images per forward pass.
        num_workers: Loader worker processes that decode images.
        model_uri: Where the model came from, recorded in ``summary.json``.
        write_threads: Threads that encode and write the per-image PNGs (PNG compression
            releases the GIL, so they overlap with the next batch's work).
        progress: Called with ``(finished, total)`` file counts after each batch.

    Returns:
        The summary.

    Raises:
        DataError: ``input_dir`` does not exist or holds no image file (the message names
            the other files it holds, if any), or the detector
            has no calibration (p-values need its validation scores even when both
            thresholds are overridden).
        OutputError: ``output_dir`` cannot be written (full disk, read-only); the results
            of the images finished before that are complete on disk.
    """
    started = time.perf_counter()
    input_dir, output_dir = Path(input_dir), Path(output_dir)
    regions = regions or RegionSettings()
    outputs = outputs or OutputSettings()
    images, others = list_files(input_dir)
    if not images:
        found = f" (only {describe_others(others, input_dir)})" if others else ""
        raise DataError(
            f"no image files found in {input_dir}{found}; nothing to score (supported: "
            f"{', '.join(sorted(IMAGE_EXTENSIONS))})"
        )
    # Every other file too: the reader refuses it with the reason, so it is named in
    # errors.csv instead of vanishing from the results without a word.
    paths = sorted(images + others)
    cal = detector.calibration
    if cal is None:
        raise DataError("the model has no calibration.json; run `anomaly calibrate`")
    t_image = float(image_threshold if image_threshold is not None else cal.image_threshold)
    t_pixel = float(pixel_threshold if pixel_threshold is not None else cal.pixel_threshold)
    samples = [Sample(p) for p in paths]
    rel = [p.relative_to(input_dir) for p in paths]
    timings: dict[str, float] = {"decode": 0.0, "model": 0.0, "postprocess": 0.0, "write": 0.0}
    summary = ScoreSummary(
        n_images=len(paths),
        n_scored=0,
        n_defective=0,
        n_errors=0,
        image_threshold=t_image,
        pixel_threshold=t_pixel,
        model_id=detector.model_id,
        model_uri=model_uri,
        seconds=0.0,
        min_p_value=1.0 / (len(cal.validation_scores) + 1),
        timings=timings,
    )
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        for stale in ("summary.json", "errors.csv", "scores.parquet"):
            (output_dir / stale).unlink(missing_ok=True)
        remove_leftover_temporaries(output_dir)
    except OSError as exc:
        raise OutputError(
            f"cannot write to the output folder {output_dir}: {exc.strerror}"
        ) from exc
    if progress is not None:
        progress(0, len(paths))
    tables: list[CsvAppender] = []
    try:
        scores_csv = CsvAppender(output_dir / "scores.csv", SCORES_COLUMNS)
        tables.append(scores_csv)
        regions_csv = CsvAppender(output_dir / "regions.csv", REGION_COLUMNS)
        tables.append(regions_csv)
        errors_csv = CsvAppender(output_dir / "errors.csv", ("path", "reason"), lazy=True)
        tables.append(errors_csv)
        judging = Judging(t_image, t_pixel, regions, outputs, output_dir)
        names = [r.as_posix() for r in rel]
        for judged in judge_batches(
            detector,
            samples,
            names,
            judging,
            batch_size=batch_size,
            num_workers=num_workers,
            write_threads=write_threads,
            timings=timings,
        ):
            t1 = time.perf_counter()
            errors_csv.append([(names[i], reason) for i, reason in judged.errors])
            summary.n_errors += len(judged.errors)
            summary.n_converted += len(judged.notes)
            rows = _Rows()
            for i, result in judged.scored:
                rows.add(names[i], result, t_image, detector.model_id)
            # The batch's pictures are on disk: its rows may say so.
            rows.commit(scores_csv, regions_csv, summary)
            timings["write"] += time.perf_counter() - t1
            if progress is not None:
                progress(summary.n_scored + summary.n_errors, len(paths))
    except OSError as exc:
        summary.status, summary.error = "stopped", f"{exc.strerror or exc} ({exc.filename or ''})"
        _finish(summary, output_dir, started, tables)
        raise OutputError(
            f"cannot write results to {output_dir}: {exc.strerror or exc}. Stopped after "
            f"{summary.n_scored} of {len(paths)} images; their rows in scores.csv and their "
            "pictures are complete. Free space or make the folder writable, then rerun."
        ) from exc
    for table in tables:
        table.close()
    t_tables = time.perf_counter()
    if outputs.parquet:
        frame = pd.read_csv(output_dir / "scores.csv", dtype={"path": str, "model_id": str})
        try:
            with atomic_open(output_dir / "scores.parquet", "wb") as handle:
                frame.to_parquet(handle, index=False)
        except OSError as exc:
            summary.status, summary.error = "stopped", f"scores.parquet: {exc.strerror}"
            _finish(summary, output_dir, started, tables)
            raise OutputError(
                f"cannot write {output_dir / 'scores.parquet'}: {exc.strerror}; scores.csv "
                "holds every result"
            ) from exc
    if summary.n_converted:
        log.warning(
            "%d image(s) were not in the channel mode the model was trained on and were "
            "converted (see the warnings above); is a camera set to the wrong mode?",
            summary.n_converted,
        )
    timings["write"] += time.perf_counter() - t_tables
    _finish(summary, output_dir, started, tables)
    return summary


class _Rows:
    """The table rows of one batch, written once its pictures are on disk."""

    def __init__(self) -> None:
        self.scores: list[list[Any]] = []
        self.regions: list[pd.DataFrame] = []
        self.defective = 0

    def add(self, path: str, result: ImageResult, threshold: float, model_id: str) -> None:
        self.scores.append(
            [
                path,
                f"{result.score:.6g}",
                "" if result.p_value is None else f"{result.p_value:.6g}",
                f"{threshold:.6g}",
                int(result.is_defective),
                result.n_regions,
                result.largest_region_area,
                result.defect_area,
                model_id,
            ]
        )
        self.defective += int(result.is_defective)
        if result.n_regions:
            self.regions.append(region_table(result.labels, result.score_map, image=path))

    def commit(self, scores: CsvAppender, regions: CsvAppender, summary: ScoreSummary) -> None:
        # Regions first: a row in scores.csv promises that everything of its image is there.
        if self.regions:
            regions.append(list(pd.concat(self.regions).itertuples(index=False, name=None)))
        scores.append(self.scores)
        summary.n_scored += len(self.scores)
        summary.n_defective += self.defective


def _finish(
    summary: ScoreSummary, output_dir: Path, started: float, tables: list[CsvAppender]
) -> None:
    """Close the tables and write ``summary.json`` (best effort when the disk is full)."""
    for table in tables:
        with contextlib.suppress(OSError):
            table.close()
    summary.seconds = round(time.perf_counter() - started, 3)
    summary.timings = {k: round(v, 3) for k, v in summary.timings.items()}
    try:
        write_json_atomic(output_dir / "summary.json", summary.to_dict())
    except OSError:
        if summary.status == "complete":
            raise
        log.error("could not write %s either", output_dir / "summary.json")
