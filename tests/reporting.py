"""Results folders for the report's tests: real images scored by a real (trivial) detector."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from anomaly.jobs.report import write_report
from anomaly.report.bench import flat_detector
from anomaly.report.context import report_context
from anomaly.scoring.detector import Detector
from anomaly.scoring.results import score_folder
from tests.conftest import write_png

HOSTILE = "<img src=x onerror=alert(1)>.png"


def gray_detector() -> Detector:
    """Scores an image by its brightest spot: flat 0.5 scores 0, a white square 0.25."""
    return flat_detector(
        validation_scores=[0.0, 0.0, 0.01, 0.01, 0.02, 0.02, 0.03, 0.05, 0.3], model_id="gray-1"
    )


def make_images(root: Path, *, n_good: int = 12, n_bad: int = 8, seed: int = 0) -> Path:
    """``good/`` flat images with faint noise, ``bad/`` with a white square of varying size,
    the hostile file name (defective) and one unreadable file."""
    rng = np.random.default_rng(seed)
    for i in range(n_good):
        write_png(root / "good" / f"g{i:02d}.png", 0.5 + rng.uniform(-0.05, 0.05, (24, 32)))
    for i in range(n_bad):
        image = np.full((24, 32), 0.5)
        side = 3 + i
        image[4 : 4 + side, 6 : 6 + side] = 1.0 - 0.02 * i
        write_png(root / "bad" / f"b{i:02d}.png", image)
    hostile = np.full((24, 32), 0.5)
    hostile[10:20, 10:20] = 1.0
    write_png(root / "bad" / HOSTILE, hostile)
    (root / "bad" / "broken.png").write_bytes(b"not an image")
    return root


def scored_folder(tmp: Path, **images: int) -> tuple[Path, Path]:
    """Score :func:`make_images` into a results folder with its report.

    Returns:
        ``(input folder, results folder)``.
    """
    source = make_images(tmp / "in", **images)
    out = tmp / "out"
    detector = gray_detector()
    score_folder(detector, source, out, model_uri="tiny-model")
    context = report_context(detector, kind="score", model="tiny-model", input_dir=source)
    assert write_report(out, context) is not None
    return source, out


def table_folder(folder: Path, n: int, *, labels: bool = False, seed: int = 0) -> Path:
    """A results folder of ``n`` synthetic rows (no pictures): the report's large cases."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    scores = rng.gamma(2.0, 0.02, n)
    frame = pd.DataFrame(
        {
            "path": [f"line{i % 7}/{i:05d}.png" for i in range(n)],
            "score": scores,
            "p_value": rng.uniform(0.001, 1, n),
            "threshold": 0.1,
            "is_defective": (scores > 0.1).astype(int),
        }
    )
    if labels:
        frame["label"] = (scores + rng.normal(0, 0.02, n) > 0.09).astype(int)
        frame["defect_class"] = np.where(frame["label"] == 1, "crack", "good")
    folder.mkdir(parents=True, exist_ok=True)
    frame.to_csv(folder / "scores.csv", index=False)
    return folder
