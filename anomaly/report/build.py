"""Building ``report.html`` from a results folder."""

from __future__ import annotations

import hashlib
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from anomaly.io import write_text_atomic
from anomaly.report.content import REPORT_FILE, load_content
from anomaly.report.page import render
from anomaly.report.pictures import picture

log = logging.getLogger(__name__)

# Thumbnails are made for this many images, highest scores first; the others show their
# row without one (a 10 000-image report would otherwise weigh 30 MB).
MAX_THUMBNAILS = 2000


@dataclass(frozen=True)
class ReportInfo:
    """Where the report is and what it cost."""

    path: str
    n_images: int
    n_thumbnails: int
    bytes: int
    seconds: float


def build_report(
    folder: str | os.PathLike[str],
    *,
    scores_file: str | None = None,
    output: str | os.PathLike[str] | None = None,
    max_thumbnails: int = MAX_THUMBNAILS,
    threads: int = 2,
) -> ReportInfo:
    """Write ``report.html`` for a results folder, from its files alone (no model).

    Args:
        folder: The results folder (``scores.csv``, ``summary.json``, ``overlays/``...).
        scores_file: Its table of judged images, relative to ``folder`` (default: the one
            ``report_context.json`` names, else ``scores.csv``).
        output: Where to write the page (default: ``folder/report.html``).
        max_thumbnails: Inline thumbnails for at most this many images, highest scores
            first.
        threads: Threads that read the images and make the thumbnails.

    Returns:
        The page's path, size and build time.

    Raises:
        DataError: The folder holds no scores table.
        OSError: The page cannot be written.
    """
    started = time.perf_counter()
    content = load_content(folder, scores_file=scores_file)

    def one(k: int):
        row = content.rows[k]
        return picture(
            shown=row.overlay,
            original=row.source,
            thumbnail=k < max_thumbnails,
            sha256=row.sha256,
        )

    with ThreadPoolExecutor(max(1, threads)) as pool:
        pictures = list(pool.map(one, range(len(content.rows))))
    # Stable per results folder and table: a rebuilt page keeps the browser's review.
    report_id = hashlib.sha256(
        f"{content.folder}|{content.context.get('created', '')}".encode()
    ).hexdigest()[:16]
    page = render(content, pictures, report_id=report_id)
    path = Path(output) if output else content.folder / REPORT_FILE
    write_text_atomic(path, page)
    info = ReportInfo(
        path=str(path),
        n_images=len(content.rows),
        n_thumbnails=sum(bool(p.thumbnail) for p in pictures),
        bytes=len(page.encode("utf-8")),
        seconds=round(time.perf_counter() - started, 3),
    )
    log.info(
        "report of %d images (%.1f MB) written to %s in %.1f s",
        info.n_images,
        info.bytes / 1e6,
        path,
        info.seconds,
    )
    return info
