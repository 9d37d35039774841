"""How big and how fast the report is: build time, file size, first page in a browser.

``python -m anomaly.report.bench [--folder RESULTS ...] [--synthetic 10000]
[--screenshot PATH] [--output bench/report]`` (``make bench`` runs it). Each results
folder's report is rebuilt and timed; ``--synthetic N`` makes N small real images, scores
them with a trivial detector and reports on them. The first page is timed in headless
Chromium (Debian's, driven by Playwright from the test extras) from navigation until the
script has drawn the table.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from anomaly.report.browser import chromium


def flat_detector(
    *, validation_scores: list[float], model_id: str, image_threshold: float = 0.1
) -> Any:
    """A detector that scores an image by its brightest spot: flat 0.5 gray scores 0.

    Its "reconstruction" is flat gray, so the L2 map is ``(x - 0.5)^2``: fast, exact, and
    enough to fill a report (also what the report's tests use).
    """
    import torch
    from torch import nn

    from anomaly.data.transforms import Preprocess
    from anomaly.scoring.calibration import Calibration
    from anomaly.scoring.detector import Detector
    from anomaly.scoring.maps import MapSettings

    class Gray(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.full_like(x, 0.5)

    return Detector(
        model=Gray(),
        preprocess=Preprocess.create(image_size=16, channels=1),
        maps=MapSettings(kind="l2", smoothing_sigma=0),
        calibration=Calibration(
            image_threshold=image_threshold,
            pixel_threshold=0.2,
            method="image:quantile,pixel:quantile",
            params={"image": {"q": 0.99}, "pixel": {"q": 0.999}},
            n_images=len(validation_scores),
            validation_scores=sorted(validation_scores),
        ),
        model_id=model_id,
    )


def synthetic_folder(root: Path, n: int, *, seed: int = 0) -> Path:
    """``n`` small PNGs (one in twenty with a bright square) scored into ``root/out``."""
    from PIL import Image

    from anomaly.report.content import write_context
    from anomaly.report.context import report_context
    from anomaly.scoring.results import score_folder

    rng = np.random.default_rng(seed)
    images = root / "in"
    for i in range(n):
        image = 0.5 + rng.uniform(-0.05, 0.05, (48, 64))
        if i % 20 == 0:
            side = int(rng.integers(3, 20))
            image[10 : 10 + side, 20 : 20 + side] = 1.0
        folder = images / f"line{i % 4}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray((image * 255).astype(np.uint8)).save(folder / f"{i:05d}.png")
    detector = flat_detector(validation_scores=list(np.linspace(0, 0.08, 99)), model_id="synthetic")
    out = root / "out"
    score_folder(detector, images, out, batch_size=64)
    write_context(out, report_context(detector, kind="score", model="synthetic", input_dir=images))
    return out


def first_page_seconds(report: Path, *, screenshot: Path | None = None) -> dict[str, Any]:
    """Open ``report`` in headless Chromium; seconds until the table's first page is drawn."""
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1400, "height": 1100})
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        started = time.perf_counter()
        page.goto(report.as_uri())
        page.wait_for_function("document.getElementById('page-info').textContent.length > 0")
        seconds = time.perf_counter() - started
        rows = page.locator("#rows tbody tr").count()
        if screenshot is not None:
            screenshot.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(screenshot))
    return {"first_page_seconds": round(seconds, 3), "rows_drawn": rows, "errors": errors}


def measure(folder: Path, *, screenshot: Path | None = None) -> dict[str, Any]:
    """Rebuild ``folder``'s report and open it: its size, build and first-page times."""
    from anomaly.report import build_report

    info = build_report(folder)
    return {
        "folder": str(folder),
        "images": info.n_images,
        "thumbnails": info.n_thumbnails,
        "megabytes": round(info.bytes / 1e6, 2),
        "build_seconds": info.seconds,
        **first_page_seconds(Path(info.path), screenshot=screenshot),
    }


def main(argv: list[str] | None = None) -> int:
    """Measure the reports named on the command line; write results.json and results.md."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--folder", action="append", default=[], help="a results folder")
    parser.add_argument("--synthetic", type=int, default=0, help="images of a synthetic batch")
    parser.add_argument("--screenshot", type=Path, help="screenshot of the first folder's page")
    parser.add_argument("--output", type=Path, default=Path("bench/report"))
    args = parser.parse_args(argv)
    args.output.mkdir(parents=True, exist_ok=True)
    folders = [Path(f) for f in args.folder]
    if args.synthetic:
        work = args.output / f"synthetic-{args.synthetic}"
        shutil.rmtree(work, ignore_errors=True)
        folders.append(synthetic_folder(work, args.synthetic))
    results = [
        measure(f, screenshot=args.screenshot if i == 0 else None) for i, f in enumerate(folders)
    ]
    (args.output / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    lines = [
        "| images | thumbnails | report MB | build s | first page in Chromium s | folder |",
        "|---:|---:|---:|---:|---:|---|",
    ]
    lines += [
        f"| {r['images']} | {r['thumbnails']} | {r['megabytes']} | {r['build_seconds']} | "
        f"{r['first_page_seconds']} | {r['folder']} |"
        for r in results
    ]
    (args.output / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
