"""Thresholds from defect-free validation images, kept in a human-editable JSON file.

``calibration.json`` lives beside the model weights. It can be edited by hand (say, to
lower a threshold after a missed defect) or re-fitted without retraining, and
``anomaly score`` always reads it.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from anomaly.errors import ModelFolderError
from anomaly.io import write_json_atomic

SCHEMA_VERSION = 1
CALIBRATION_FILE = "calibration.json"
# Cap on the validation pixels kept for the pixel quantile, so memory stays bounded for
# large validation sets; a seeded subsample estimates a 0.999 quantile well at this size.
MAX_PIXELS = 5_000_000


@dataclass
class Calibration:
    """Image and pixel thresholds and where they came from.

    Attributes:
        image_threshold: An image whose score exceeds it is defective.
        pixel_threshold: A pixel whose map value exceeds it belongs to a defect.
        method: How the thresholds were fitted (``quantile``).
        params: The method's parameters (e.g. ``{"image_q": 0.99, "pixel_q": 0.999}``).
        n_images: Number of validation images.
        fingerprint: Fingerprint of the validation files.
        model_id: Identifier of the model the thresholds belong to.
        validation_scores: Sorted image scores of the validation images.
        schema_version: Version of this file's layout.
    """

    image_threshold: float
    pixel_threshold: float
    method: str = "quantile"
    params: dict[str, Any] = field(default_factory=dict)
    n_images: int = 0
    fingerprint: str = ""
    model_id: str = ""
    validation_scores: list[float] = field(default_factory=list)
    schema_version: int = SCHEMA_VERSION

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the calibration as readable JSON, atomically."""
        write_json_atomic(path, asdict(self))

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Calibration:
        """Read and validate a calibration file.

        Raises:
            ModelFolderError: Missing file, invalid JSON, a missing key or a wrong type,
                with the file and key named.
        """
        path = Path(path)
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise ModelFolderError(
                f"{path} is missing; run `anomaly calibrate` or retrain the model"
            ) from exc
        except json.JSONDecodeError as exc:
            raise ModelFolderError(
                f"{path} is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg}); "
                "fix the edit or re-fit it with `anomaly calibrate`"
            ) from exc
        if not isinstance(raw, dict):
            raise ModelFolderError(f"{path} must hold a JSON object, got {type(raw).__name__}")
        version = raw.get("schema_version", SCHEMA_VERSION)
        if version != SCHEMA_VERSION:
            raise ModelFolderError(
                f"{path}: schema_version {version!r} is not supported (expected {SCHEMA_VERSION})"
            )
        for key in ("image_threshold", "pixel_threshold"):
            value = raw.get(key)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ModelFolderError(
                    f"{path}: {key} must be a number, got {value!r}; fix it or re-fit it with "
                    "`anomaly calibrate`"
                )
            if not math.isfinite(value):
                raise ModelFolderError(f"{path}: {key} must be finite, got {value!r}")
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in raw.items() if k in known})


def fit_quantile(
    image_scores: np.ndarray,
    pixel_values: np.ndarray,
    *,
    image_q: float = 0.99,
    pixel_q: float = 0.999,
    fingerprint: str = "",
    model_id: str = "",
    seed: int = 0,
) -> Calibration:
    """Thresholds at high quantiles of defect-free validation scores and map pixels.

    Args:
        image_scores: ``(n_images,)`` scores of defect-free validation images.
        pixel_values: Map values of the same images, any shape.
        image_q: Quantile of the image scores, in ``(0, 1]``.
        pixel_q: Quantile of the pixel values, in ``(0, 1]``.
        fingerprint: Fingerprint of the validation files.
        model_id: The model the thresholds belong to.
        seed: Seed of the pixel subsample (used beyond ``MAX_PIXELS`` pixels).

    Returns:
        The calibration.

    Raises:
        ValueError: No scores, or a quantile outside ``(0, 1]``.
    """
    scores = np.asarray(image_scores, dtype=np.float64).ravel()
    pixels = np.asarray(pixel_values, dtype=np.float32).ravel()
    if scores.size == 0 or pixels.size == 0:
        raise ValueError("calibration needs at least one validation image")
    for name, q in (("image_q", image_q), ("pixel_q", pixel_q)):
        if not 0.0 < q <= 1.0:
            raise ValueError(f"scoring.calibration.{name} must be in (0, 1], got {q!r}")
    if pixels.size > MAX_PIXELS:
        pixels = np.random.default_rng(seed).choice(pixels, MAX_PIXELS, replace=False)
    return Calibration(
        image_threshold=float(np.quantile(scores, image_q)),
        pixel_threshold=float(np.quantile(pixels, pixel_q)),
        method="quantile",
        params={"image_q": image_q, "pixel_q": pixel_q},
        n_images=int(scores.size),
        fingerprint=fingerprint,
        model_id=model_id,
        validation_scores=sorted(float(s) for s in scores),
    )
