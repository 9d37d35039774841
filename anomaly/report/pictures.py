"""The report's pictures: inline thumbnails, and the score histogram and ROC curve as SVG."""

from __future__ import annotations

import base64
import hashlib
import io
from dataclasses import dataclass
from html import escape
from pathlib import Path

import numpy as np
from PIL import Image

from anomaly.data.images import read_native
from anomaly.errors import ImageReadError

# Longest side of a thumbnail, in pixels; JPEG at this quality is 2-5 KB.
THUMB_SIDE = 160
THUMB_QUALITY = 70


@dataclass(frozen=True)
class Picture:
    """What the report needs of one image file: thumbnail, size and fingerprint."""

    thumbnail: str = ""  # a data: URI, or "" when the file could not be read
    width: int = 0
    height: int = 0
    sha256: str = ""


def thumbnail_uri(array: np.ndarray, *, side: int = THUMB_SIDE) -> str:
    """A small JPEG of ``array`` (``(H, W)`` or ``(H, W, C)``, uint8 or floats in [0, 1]).

    Returns:
        A ``data:image/jpeg;base64,...`` URI.
    """
    if array.dtype != np.uint8:
        array = (np.clip(array, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[..., 0]
    if array.ndim == 3 and array.shape[2] == 4:
        array = array[..., :3]
    image = Image.fromarray(array)
    image.thumbnail((side, side), Image.Resampling.BILINEAR)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=THUMB_QUALITY, optimize=True)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def picture(
    *, shown: Path | None, original: Path | None, thumbnail: bool, sha256: str = ""
) -> Picture:
    """Thumbnail of ``shown`` (an overlay, else the original), size and sha256 of ``original``.

    Files that are missing or unreadable give empty fields: a report is still written.

    Args:
        shown: The picture to make the thumbnail of (None: the original).
        original: The scored image (None when it is not on this machine).
        thumbnail: Make the thumbnail at all (a 10 000-image report makes a limited number).
        sha256: The original's sha256 when already known (not recomputed).
    """
    width = height = 0
    content = None
    if original is not None:
        try:
            content = original.read_bytes()
        except OSError:
            content = None
    if content is not None:
        sha256 = sha256 or hashlib.sha256(content).hexdigest()
        try:
            with Image.open(io.BytesIO(content)) as im:  # the header only
                width, height = im.size
        except (OSError, ValueError, Image.DecompressionBombError):
            content = None
    uri = ""
    if thumbnail:
        uri = _thumbnail_of(shown) if shown is not None else ""
        if not uri and content is not None and original is not None:
            try:
                uri = thumbnail_uri(read_native(original, content=content))
            except ImageReadError:
                uri = ""
    return Picture(thumbnail=uri, width=width, height=height, sha256=sha256)


def _thumbnail_of(path: Path) -> str:
    try:
        with Image.open(path) as im:
            im.draft("RGB", (THUMB_SIDE * 2, THUMB_SIDE * 2))
            return thumbnail_uri(np.asarray(im.convert("RGB")))
    except (OSError, ValueError):
        return ""


def histogram_svg(
    scores: np.ndarray,
    *,
    threshold: float | None,
    labels: np.ndarray | None = None,
    bins: int = 40,
    width: int = 640,
    height: int = 220,
) -> str:
    """The score histogram with the image threshold drawn in, as inline SVG.

    With ``labels`` (0 defect-free, 1 defective) the two groups are stacked in two colours.
    """
    pad_l, pad_r, pad_t, pad_b = 44, 12, 12, 34
    plot_w, plot_h = width - pad_l - pad_r, height - pad_t - pad_b
    parts = [
        f'<svg class="hist" role="img" viewBox="0 0 {width} {height}" width="{width}" '
        f'height="{height}" xmlns="http://www.w3.org/2000/svg">',
        "<title>Distribution of the image scores</title>",
    ]
    scores = np.asarray(scores, dtype=float)
    if scores.size == 0:
        parts.append(f'<text x="{width / 2}" y="{height / 2}">no scores</text>')
        return "".join(parts) + "</svg>"
    lo, hi = float(scores.min()), float(scores.max())
    if threshold is not None and np.isfinite(threshold):
        lo, hi = min(lo, threshold), max(hi, threshold)
    if hi <= lo:
        hi = lo + 1.0
    edges = np.linspace(lo, hi, bins + 1)
    groups = [("all", scores, "bar")]
    if labels is not None and set(np.unique(labels).tolist()) <= {0, 1}:
        labels = np.asarray(labels)
        groups = [
            ("defect-free", scores[labels == 0], "bar good"),
            ("defective", scores[labels == 1], "bar bad"),
        ]
    counts = [np.histogram(values, bins=edges)[0] for _, values, _ in groups]
    top = max(1, int(np.sum(counts, axis=0).max()))

    def x(value: float) -> float:
        return pad_l + (value - lo) / (hi - lo) * plot_w

    def y(count: float) -> float:
        return pad_t + plot_h - count / top * plot_h

    base = np.zeros(bins)
    for (name, _, css), count in zip(groups, counts, strict=True):
        for i in np.nonzero(count)[0]:
            x0, x1 = x(edges[i]), x(edges[i + 1])
            y0, y1 = y(base[i] + count[i]), y(base[i])
            parts.append(
                f'<rect class="{css}" x="{x0:.1f}" y="{y0:.1f}" width="{max(x1 - x0 - 1, 1):.1f}" '
                f'height="{y1 - y0:.1f}"><title>{escape(name)}: {int(count[i])} with score '
                f"{edges[i]:.4g} to {edges[i + 1]:.4g}</title></rect>"
            )
        base = base + count
    axis_y = pad_t + plot_h
    right = pad_l + plot_w
    parts.append(f'<line class="axis" x1="{pad_l}" y1="{axis_y}" x2="{right}" y2="{axis_y}"/>')
    for value in np.linspace(lo, hi, 5):
        parts.append(
            f'<text class="tick" x="{x(value):.1f}" y="{axis_y + 14}" text-anchor="middle">'
            f"{value:.3g}</text>"
        )
    for count, at in ((top, pad_t + 10), (0, axis_y)):
        x_at = pad_l - 6
        parts.append(f'<text class="tick" x="{x_at}" y="{at}" text-anchor="end">{count}</text>')
    parts.append(
        f'<text class="label" x="{pad_l + plot_w / 2}" y="{height - 4}" text-anchor="middle">'
        "image score</text>"
    )
    if threshold is not None and np.isfinite(threshold):
        tx = x(threshold)
        parts.append(
            f'<line class="threshold" x1="{tx:.1f}" y1="{pad_t}" x2="{tx:.1f}" y2="{axis_y}"/>'
            f'<text class="threshold-label" x="{tx + 4:.1f}" y="{pad_t + 10}">threshold '
            f"{threshold:.4g}</text>"
        )
    if len(groups) == 2:
        parts.append(
            f'<rect class="bar good" x="{width - 150}" y="{pad_t}" width="10" height="10"/>'
            f'<text class="tick" x="{width - 136}" y="{pad_t + 9}">defect-free</text>'
            f'<rect class="bar bad" x="{width - 150}" y="{pad_t + 16}" width="10" height="10"/>'
            f'<text class="tick" x="{width - 136}" y="{pad_t + 25}">defective</text>'
        )
    return "".join(parts) + "</svg>"


def roc_svg(
    fpr: np.ndarray, tpr: np.ndarray, point: tuple[float, float], *, side: int = 220
) -> str:
    """The ROC curve with the operating point of the threshold, as inline SVG."""
    pad = 30
    plot = side - 2 * pad

    def xy(f: float, t: float) -> str:
        return f"{pad + f * plot:.1f},{pad + (1 - t) * plot:.1f}"

    points = " ".join(xy(float(f), float(t)) for f, t in zip(fpr, tpr, strict=True))
    px, py = xy(*point).split(",")
    return (
        f'<svg class="roc" role="img" viewBox="0 0 {side} {side}" width="{side}" height="{side}" '
        'xmlns="http://www.w3.org/2000/svg"><title>ROC curve and the threshold</title>'
        f'<rect class="frame" x="{pad}" y="{pad}" width="{plot}" height="{plot}"/>'
        f'<line class="chance" x1="{pad}" y1="{pad + plot}" x2="{pad + plot}" y2="{pad}"/>'
        f'<polyline class="curve" points="{points}"/>'
        f'<circle class="point" cx="{px}" cy="{py}" r="5"><title>threshold: false-positive '
        f"rate {point[0]:.3f}, true-positive rate {point[1]:.3f}</title></circle>"
        f'<text class="tick" x="{pad + plot / 2}" y="{side - 6}" text-anchor="middle">'
        "false-positive rate</text>"
        f'<text class="tick" x="10" y="{pad + plot / 2}" text-anchor="middle" '
        f'transform="rotate(-90 10 {pad + plot / 2})">true-positive rate</text></svg>'
    )
