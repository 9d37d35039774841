"""Scoring images with a trained model: anomaly maps, verdicts and the files written.

Works on any ``nn.Module`` that reconstructs images; modules with several reconstructions
expose ``reconstructions(x) -> [(weight, recon), ...]``.
"""

from __future__ import annotations

import csv
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader

from anomaly.data.dataset import ImageDataset, collate
from anomaly.data.folder import Sample, list_images
from anomaly.data.transforms import Preprocess, resize_map
from anomaly.errors import DataError
from anomaly.io import atomic_open, write_json_atomic
from anomaly.scoring.calibration import Calibration
from anomaly.scoring.maps import MapSettings, anomaly_map, image_scores
from anomaly.scoring.metrics import auroc, f1_at

log = logging.getLogger(__name__)

SCORES_COLUMNS = ("path", "score", "threshold", "is_defective", "defect_area_px", "model_id")
# Progress callback: (files finished so far, total files).
Progress = Callable[[int, int], None]


@dataclass
class Detector:
    """A trained model with everything needed to turn images into verdicts.

    Attributes:
        model: Reconstructs ``(N, C, h, w)`` inputs; put in eval mode by the detector.
        preprocess: Model input size and channels.
        maps: How errors become maps and scores.
        calibration: Thresholds (None before calibration).
        model_id: Identifier written into every result row.
    """

    model: nn.Module
    preprocess: Preprocess
    maps: MapSettings
    calibration: Calibration | None = None
    model_id: str = ""

    def __post_init__(self) -> None:
        self.model.eval()

    @torch.inference_mode()
    def anomaly_maps(self, images: torch.Tensor) -> torch.Tensor:
        """Anomaly maps ``(N, 1, h, w)`` at model resolution of inputs ``(N, C, h, w)``."""
        fn = getattr(self.model, "reconstructions", None)
        recons = fn(images) if fn is not None else [(1.0, self.model(images))]
        return anomaly_map(images, recons, self.maps)

    def scores(self, maps: torch.Tensor) -> torch.Tensor:
        """Image scores ``(N,)`` of anomaly maps."""
        return image_scores(maps, method=self.maps.score)


def iterate_maps(
    detector: Detector,
    samples: Sequence[Sample],
    *,
    batch_size: int = 32,
    num_workers: int = 0,
    with_masks: bool = False,
    skip_errors: bool = False,
) -> Iterator[tuple[dict[str, Any], torch.Tensor, torch.Tensor]]:
    """Stream ``(batch, maps, scores)`` over samples; decoding happens in loader workers.

    Batches whose every file failed yield empty ``maps``/``scores`` so callers still see
    their ``errors``.
    """
    dataset = ImageDataset(
        samples, detector.preprocess, with_masks=with_masks, skip_errors=skip_errors
    )
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=num_workers, collate_fn=collate)
    for batch in loader:
        if "image" not in batch:
            yield batch, torch.empty(0), torch.empty(0)
            continue
        maps = detector.anomaly_maps(batch["image"])
        yield batch, maps, detector.scores(maps)


def collect_maps(
    detector: Detector, samples: Sequence[Sample], *, batch_size: int = 32, num_workers: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Scores ``(N,)`` and maps ``(N, h, w)`` of readable samples (for calibration)."""
    scores, maps = [], []
    for _, batch_maps, batch_scores in iterate_maps(
        detector, samples, batch_size=batch_size, num_workers=num_workers
    ):
        scores.append(batch_scores.numpy())
        maps.append(batch_maps[:, 0].numpy())
    if not scores:
        raise DataError("no validation image could be read; calibration is impossible")
    return np.concatenate(scores), np.concatenate(maps)


@dataclass
class Evaluation:
    """Scores and metrics of a labelled test split.

    Attributes:
        samples: The evaluated samples, aligned with ``scores``.
        scores: Image scores.
        metrics: ``image_auroc``, ``pixel_auroc``, ``image_f1`` and per-class
            ``image_auroc/<class>`` (the class against the defect-free images).
        maps: Anomaly maps ``(N, h, w)`` at model resolution (float16 to save memory).
    """

    samples: list[Sample]
    scores: np.ndarray
    metrics: dict[str, float] = field(default_factory=dict)
    maps: np.ndarray | None = None


def evaluate(
    detector: Detector,
    samples: Sequence[Sample],
    *,
    batch_size: int = 32,
    num_workers: int = 0,
) -> Evaluation:
    """Score a labelled test split and compute image and pixel metrics.

    Pixel metrics use images whose masks exist, at model resolution (masks resized with
    nearest neighbour). Metrics that need both classes are left out when one is missing.
    """
    samples = list(samples)
    scores = np.zeros(len(samples), dtype=np.float64)
    maps: np.ndarray | None = None
    masks: np.ndarray | None = None
    has_mask = np.zeros(len(samples), dtype=bool)
    for batch, batch_maps, batch_scores in iterate_maps(
        detector, samples, batch_size=batch_size, num_workers=num_workers, with_masks=True
    ):
        idx = batch["index"]
        if maps is None:
            shape = (len(samples), *batch_maps.shape[-2:])
            maps = np.zeros(shape, dtype=np.float16)
            masks = np.zeros(shape, dtype=bool)
        scores[idx] = batch_scores.numpy()
        maps[idx] = batch_maps[:, 0].numpy()
        masks[idx] = batch["mask"][:, 0].numpy() > 0.5
        has_mask[idx] = batch["has_mask"].numpy()
    labels = np.array([s.label for s in samples])
    metrics: dict[str, float] = {}
    if {0, 1} <= set(labels.tolist()):
        metrics["image_auroc"] = auroc(labels, scores)
        if detector.calibration is not None:
            metrics["image_f1"] = f1_at(labels, scores, detector.calibration.image_threshold)
        for cls in sorted({s.defect_class for s in samples if s.label == 1}):
            pick = np.array([s.label == 0 or s.defect_class == cls for s in samples])
            metrics[f"image_auroc/{cls}"] = auroc(labels[pick], scores[pick])
    if maps is not None and masks[has_mask].any() and (~masks[has_mask]).any():
        metrics["pixel_auroc"] = auroc(masks[has_mask], maps[has_mask].astype(np.float32))
    return Evaluation(samples=samples, scores=scores, metrics=metrics, maps=maps)


@dataclass
class ScoreSummary:
    """What ``score_folder`` did; also written to ``summary.json``."""

    n_images: int
    n_scored: int
    n_defective: int
    n_errors: int
    image_threshold: float
    pixel_threshold: float
    model_id: str
    seconds: float

    @property
    def defect_rate(self) -> float:
        """Share of scored images judged defective."""
        return self.n_defective / self.n_scored if self.n_scored else 0.0

    def to_dict(self) -> dict[str, Any]:
        """Plain form for JSON."""
        return {**self.__dict__, "defect_rate": self.defect_rate}


def score_folder(
    detector: Detector,
    input_dir: str | Path,
    output_dir: str | Path,
    *,
    image_threshold: float | None = None,
    pixel_threshold: float | None = None,
    batch_size: int = 32,
    num_workers: int = 0,
    write_masks: bool = True,
    progress: Progress | None = None,
) -> ScoreSummary:
    """Score every image under ``input_dir`` (recursively) and write the results.

    Writes, in ``output_dir``: ``scores.csv`` (one row per readable image), ``errors.csv``
    (one row per unreadable file, only when there are some), ``masks/<relative path>.png``
    (binary defect masks at each image's original size) and ``summary.json``. Every file is
    written atomically and images are streamed, so memory does not grow with their number.

    Args:
        detector: A calibrated detector.
        input_dir: Folder of images.
        output_dir: Results folder (created).
        image_threshold: Overrides the calibrated image threshold.
        pixel_threshold: Overrides the calibrated pixel threshold.
        batch_size: Images per forward pass.
        num_workers: Loader worker processes that decode images.
        write_masks: Write one mask PNG per image.
        progress: Called with ``(finished, total)`` file counts after each batch.

    Returns:
        The summary.

    Raises:
        DataError: ``input_dir`` does not exist or holds no image files.
    """
    started = time.perf_counter()
    input_dir, output_dir = Path(input_dir), Path(output_dir)
    paths = list_images(input_dir)
    if not paths:
        raise DataError(f"no image files found in {input_dir}; nothing to score")
    if detector.calibration is None and (image_threshold is None or pixel_threshold is None):
        raise DataError("the model has no calibration; pass explicit thresholds")
    cal = detector.calibration
    t_image = float(image_threshold if image_threshold is not None else cal.image_threshold)
    t_pixel = float(pixel_threshold if pixel_threshold is not None else cal.pixel_threshold)
    samples = [Sample(p) for p in paths]
    rel = [p.relative_to(input_dir) for p in paths]

    errors: list[tuple[str, str]] = []
    n_scored = n_defective = 0
    if progress is not None:
        progress(0, len(paths))
    with atomic_open(output_dir / "scores.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(SCORES_COLUMNS)
        for batch, maps, scores in iterate_maps(
            detector, samples, batch_size=batch_size, num_workers=num_workers, skip_errors=True
        ):
            errors.extend((rel[i].as_posix(), reason) for i, reason in batch["errors"])
            for j, i in enumerate(batch["index"]):
                full = resize_map(maps[j], batch["original_size"][j])[0]
                mask = (full > t_pixel).numpy()
                score = float(scores[j])
                defective = score > t_image
                if write_masks:
                    _write_mask(output_dir / "masks" / rel[i].with_suffix(".png"), mask)
                writer.writerow(
                    [
                        rel[i].as_posix(),
                        f"{score:.6g}",
                        f"{t_image:.6g}",
                        int(defective),
                        int(mask.sum()),
                        detector.model_id,
                    ]
                )
                n_scored += 1
                n_defective += int(defective)
            if progress is not None:
                progress(n_scored + len(errors), len(paths))
    if errors:
        with atomic_open(output_dir / "errors.csv", "w", newline="", encoding="utf-8") as handle:
            err_writer = csv.writer(handle)
            err_writer.writerow(("path", "reason"))
            err_writer.writerows(errors)
        for path, reason in errors:
            log.warning("skipped %s: %s", path, reason)
    summary = ScoreSummary(
        n_images=len(paths),
        n_scored=n_scored,
        n_defective=n_defective,
        n_errors=len(errors),
        image_threshold=t_image,
        pixel_threshold=t_pixel,
        model_id=detector.model_id,
        seconds=round(time.perf_counter() - started, 3),
    )
    write_json_atomic(output_dir / "summary.json", summary.to_dict())
    return summary


def _write_mask(path: Path, mask: np.ndarray) -> None:
    with atomic_open(path, "wb") as handle:
        Image.fromarray(mask.astype(np.uint8) * 255).save(handle, format="PNG")
