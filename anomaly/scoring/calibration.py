"""Thresholds from defect-free validation images, kept in a human-editable JSON file.

``calibration.json`` lives beside the model weights. It can be edited by hand (say, to
lower a threshold after a missed defect) or re-fitted without retraining, and
``anomaly score`` always reads it.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from anomaly.errors import ModelFolderError
from anomaly.io import write_json_atomic
from anomaly.scoring.features import ScoreFusion

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
        method: How the thresholds were fitted (``image:quantile,pixel:quantile``).
        params: The methods' parameters, ``{"image": {...}, "pixel": {...}}``.
        n_images: Number of validation images.
        fingerprint: Fingerprint of the validation files.
        model_id: Identifier of the model the thresholds belong to.
        validation_scores: Sorted image scores of the validation images.
        fusion: How map and feature scores combine into the image score
            (:class:`~anomaly.scoring.features.ScoreFusion` as a dict); empty when the image
            score is the map's alone.
        patch_scale: Weight of the patch map added to the model's map
            (:mod:`anomaly.scoring.patches`); 0 when the map is the model's alone. Every
            threshold here was fitted on the map with it.
        positions: Whether the map's image score was taken on the map standardised per
            position (:mod:`anomaly.scoring.positions`, ``positions.npz``); the image
            threshold and the fusion were fitted on that score.
        position_pixels: With ``positions``: whether the pixel map is standardised per
            position too (``scoring.position_score.pixels``), so that the pixel threshold
            was fitted on, and the regions are cut from, the standardised map.
        standouts: Validation photos whose scores stand far above the others'
            (:func:`standouts`), as ``{"path": ..., "score": ...}``: a defective photo
            among the defect-free ones raises the image threshold, so they are named for
            a person to look at.
        schema_version: Version of this file's layout.
    """

    image_threshold: float
    pixel_threshold: float
    method: str = "manual"
    params: dict[str, Any] = field(default_factory=dict)
    n_images: int = 0
    fingerprint: str = ""
    model_id: str = ""
    validation_scores: list[float] = field(default_factory=list)
    fusion: dict[str, float] = field(default_factory=dict)
    patch_scale: float = 0.0
    positions: bool = False
    position_pixels: bool = False
    standouts: list[dict[str, Any]] = field(default_factory=list)
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
        scores = raw.get("validation_scores", [])
        if not isinstance(scores, list) or not all(
            isinstance(v, int | float) and not isinstance(v, bool) for v in scores
        ):
            raise ModelFolderError(
                f"{path}: validation_scores must be a list of numbers; restore it or re-fit "
                "it with `anomaly calibrate`"
            )
        if raw.get("fusion"):
            ScoreFusion.from_dict(raw["fusion"], str(path))
        scale = raw.get("patch_scale", 0.0)
        if (
            isinstance(scale, bool)
            or not isinstance(scale, (int, float))
            or not math.isfinite(scale)
            or scale < 0
        ):
            raise ModelFolderError(
                f"{path}: patch_scale must be a finite number >= 0 (0: no patch map), got "
                f"{scale!r}; fix it or re-fit it with `anomaly calibrate`"
            )
        for key in ("positions", "position_pixels"):
            if not isinstance(raw.get(key, False), bool):
                raise ModelFolderError(
                    f"{path}: {key} must be true or false, got {raw[key]!r}; fix it or "
                    "re-fit it with `anomaly calibrate`"
                )
        marked = raw.get("standouts", [])
        if not isinstance(marked, list) or not all(
            isinstance(m, dict) and isinstance(m.get("path"), str) for m in marked
        ):
            raise ModelFolderError(
                f"{path}: standouts must be a list of {{path, score}} entries; fix it or "
                "re-fit it with `anomaly calibrate`"
            )
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in raw.items() if k in known})


METHODS = ("quantile", "mean_std", "far")
# The one parameter each method reads; calibration.json records only that one.
PARAMETER = {"quantile": "q", "mean_std": "k", "far": "far"}
DEFAULT_IMAGE = {"method": "quantile", "q": 0.99}
DEFAULT_PIXEL = {"method": "quantile", "q": 0.999}


def threshold_from(
    values: np.ndarray,
    *,
    method: str,
    q: float = 0.99,
    k: float = 3.0,
    far: float = 0.01,
    key: str = "scoring.calibration",
) -> float:
    """One threshold from defect-free values.

    Args:
        values: Scores (or map pixels) of defect-free validation images.
        method: ``quantile`` (the ``q`` quantile), ``mean_std`` (mean + ``k`` standard
            deviations), or ``far`` (target false-alarm rate: the split-conformal quantile,
            so that a new defect-free value exceeds the threshold with probability at most
            ``far``).
        q: Quantile in ``(0, 1]`` for ``quantile``.
        k: Number of standard deviations for ``mean_std``.
        far: Target false-alarm rate in ``(0, 1)`` for ``far``.
        key: Config key named in error messages.

    Raises:
        ValueError: Unknown method, a parameter out of range, or, for ``far``, too few
            values to guarantee the rate (at least ``1/far - 1`` are needed).
    """
    values = np.asarray(values, dtype=np.float64).ravel()
    if values.size == 0:
        raise ValueError("calibration needs at least one validation image")
    if method == "quantile":
        if not 0.0 < q <= 1.0:
            raise ValueError(f"{key}.q must be in (0, 1], got {q!r}")
        return float(np.quantile(values, q))
    if method == "mean_std":
        if not np.isfinite(k):
            raise ValueError(f"{key}.k must be a finite number, got {k!r}")
        return float(values.mean() + k * values.std())
    if method == "far":
        if not 0.0 < far < 1.0:
            raise ValueError(f"{key}.far must be in (0, 1), got {far!r}")
        n = values.size
        rank = int(np.ceil((n + 1) * (1.0 - far)))
        if rank > n:
            raise ValueError(
                f"{key}.far={far} needs at least {int(np.ceil(1 / far)) - 1} validation "
                f"values, got {n}; raise far or add defect-free validation images"
            )
        return float(np.sort(values)[rank - 1])
    raise ValueError(f"{key}.method={method!r} is unknown; choose one of {METHODS}")


def p_values(scores: np.ndarray, validation_scores: np.ndarray) -> np.ndarray:
    """Split-conformal p-values of image scores against defect-free validation scores.

    ``p = (1 + #{validation >= score}) / (n + 1)``. For a defect-free image exchangeable
    with the validation images, ``P(p <= alpha) <= alpha``: flagging ``p < alpha`` keeps the
    false-alarm rate at most ``alpha``.

    Args:
        scores: Image scores, any shape.
        validation_scores: Scores of the defect-free validation images.

    Returns:
        P-values in ``(0, 1]``, the shape of ``scores``.
    """
    reference = np.sort(np.asarray(validation_scores, dtype=np.float64).ravel())
    scores = np.asarray(scores, dtype=np.float64)
    at_least = reference.size - np.searchsorted(reference, scores, side="left")
    return (1.0 + at_least) / (reference.size + 1.0)


def subsample_pixels(pixels: np.ndarray, *, seed: int = 0) -> np.ndarray:
    """At most ``MAX_PIXELS`` of the values, a seeded uniform sample beyond that."""
    pixels = np.asarray(pixels, dtype=np.float32).ravel()
    if pixels.size > MAX_PIXELS:
        pixels = np.random.default_rng(seed).choice(pixels, MAX_PIXELS, replace=False)
    return pixels


def fit_pixel_threshold(
    pixel_values: np.ndarray, pixel: dict[str, Any] | None = None, *, seed: int = 0
) -> float:
    """The pixel threshold alone (fitted first: the ``area`` image score depends on it).

    Args:
        pixel_values: Map values of defect-free validation images (subsampled beyond
            ``MAX_PIXELS``).
        pixel: ``{"method": ..., "q"|"k"|"far": ...}``; the 0.999 quantile when None.
        seed: Seed of the subsample.
    """
    spec = _used(pixel or DEFAULT_PIXEL, "pixel")
    return threshold_from(
        subsample_pixels(pixel_values, seed=seed), key="scoring.calibration.pixel", **spec
    )


def fit_calibration(
    image_scores: np.ndarray,
    pixel_values: np.ndarray,
    *,
    image: dict[str, Any] | None = None,
    pixel: dict[str, Any] | None = None,
    fingerprint: str = "",
    model_id: str = "",
    seed: int = 0,
    pixel_threshold: float | None = None,
    fusion: ScoreFusion | None = None,
    patch_scale: float = 0.0,
    positions: bool = False,
    position_pixels: bool = False,
    paths: Sequence[str] | None = None,
) -> Calibration:
    """Fit image and pixel thresholds on defect-free validation images.

    Args:
        image_scores: ``(n_images,)`` scores of defect-free validation images.
        pixel_values: Their map values, any shape (subsampled beyond ``MAX_PIXELS``).
        image: ``{"method": ..., "q"|"k"|"far": ...}`` for the image threshold
            (default: the 0.99 quantile).
        pixel: The same for the pixel threshold (default: the 0.999 quantile).
        fingerprint: Fingerprint of the validation files.
        model_id: The model the thresholds belong to.
        seed: Seed of the pixel subsample.
        pixel_threshold: Already fitted from these values with ``fit_pixel_threshold``
            (the ``area`` image score needs it first); fitted here when None.
        fusion: How ``image_scores`` were combined from map and feature scores, when
            they were.
        patch_scale: The patch map's weight in the maps these were fitted on.
        positions: Whether the image scores took the map standardised per position.
        position_pixels: Whether the pixel values were of that standardised map too.
        paths: The images' files, in the order of ``image_scores``, to name the
            :func:`standouts`.

    Returns:
        The calibration, with the sorted validation scores for p-values.
    """
    image = _used(image or DEFAULT_IMAGE, "image")
    pixel = _used(pixel or DEFAULT_PIXEL, "pixel")
    if pixel_threshold is None:
        pixel_threshold = fit_pixel_threshold(pixel_values, pixel, seed=seed)
    scores = np.asarray(image_scores, dtype=np.float64).ravel()
    return Calibration(
        image_threshold=threshold_from(scores, key="scoring.calibration.image", **image),
        pixel_threshold=float(pixel_threshold),
        method=f"image:{image['method']},pixel:{pixel['method']}",
        params={"image": image, "pixel": pixel},
        n_images=int(scores.size),
        fingerprint=fingerprint,
        model_id=model_id,
        validation_scores=sorted(float(v) for v in scores),
        fusion=fusion.to_dict() if fusion is not None else {},
        patch_scale=float(patch_scale),
        positions=bool(positions),
        position_pixels=bool(positions and position_pixels),
        standouts=standouts(scores, paths) if paths is not None else [],
    )


# Tukey's "far out": above the upper quartile by this many interquartile ranges.
STANDOUT_IQRS = 3.0
# Fewer photos give no quartiles worth the name.
STANDOUT_MIN_IMAGES = 8


def standouts(scores: np.ndarray, paths: Sequence[str]) -> list[dict[str, Any]]:
    """Validation photos whose scores lie far above the others', highest first.

    The image threshold is a high quantile of a few dozen scores, so in effect their
    largest: one defective photo among the defect-free ones sets it (on Magnetic Tile a
    photo with a dark scratch scored 7.3 where the next was 2.9, and recall at the
    threshold fell from 0.84 to 0.48). Tukey's rule for far-out values, above the upper
    quartile by :data:`STANDOUT_IQRS` interquartile ranges, separates such a photo from
    the ordinary tail (the largest of 76 defect-free photos in the two other seeds' splits:
    1.6 and 1.7 ranges above).

    Args:
        scores: ``(n,)`` image scores of the validation photos.
        paths: Their files, in the same order.

    Returns:
        ``[{"path": ..., "score": ...}]``; empty below :data:`STANDOUT_MIN_IMAGES` photos.
    """
    scores = np.asarray(scores, dtype=np.float64).ravel()
    if scores.size != len(paths):
        raise ValueError(f"{scores.size} scores for {len(paths)} paths")
    if scores.size < STANDOUT_MIN_IMAGES:
        return []
    q1, q3 = np.quantile(scores, [0.25, 0.75])
    bound = q3 + STANDOUT_IQRS * (q3 - q1)
    far = [i for i in np.argsort(-scores) if scores[i] > bound]
    return [{"path": str(paths[i]), "score": float(scores[i])} for i in far]


def _used(spec: dict[str, Any], which: str) -> dict[str, Any]:
    method = spec.get("method")
    if method not in PARAMETER:
        raise ValueError(
            f"scoring.calibration.{which}.method={method!r} is unknown; choose one of {METHODS}"
        )
    name = PARAMETER[method]
    if name not in spec:
        raise ValueError(f"scoring.calibration.{which}.{name} is required by method {method}")
    return {"method": method, name: float(spec[name])}
