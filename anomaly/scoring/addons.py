"""The detector's add-ons, registered in one place: feature score, patch map, position score.

An add-on is fitted on what the model gives for the defect-free training images, saved
beside the checkpoint, loaded with it, and applied by :meth:`Detector.inspect` to the
same forward pass that gives the map. Training, ``anomaly calibrate`` and the model folder
loop over :data:`ADDONS` instead of naming them; a new add-on is one more entry here (and
its branch in ``Detector.inspect``, where it changes the map or the image score).

Each add-on's settings are its ``scoring.<name>`` config group; their defaults live in
``conf/scoring/default.yaml`` only.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from anomaly.models.inspection import IMAGE_FEATURES, IMAGE_SCORE, MAP, PATCH_FEATURES
from anomaly.scoring.calibration import Calibration
from anomaly.scoring.features import FEATURES_FILE, FeatureGaussian
from anomaly.scoring.patches import PATCHES_FILE, PatchMemory, check_patch_settings
from anomaly.scoring.positions import POSITIONS_FILE, PositionStats

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AddOn:
    """One add-on of the detector.

    Attributes:
        name: Its config group under ``scoring`` (``scoring.<name>.enabled`` etc.).
        attribute: The :class:`~anomaly.scoring.detector.Detector` attribute that holds
            it once fitted or loaded.
        file: Its file in the model folder.
        needs: The model output it is fitted on and applied to.
        fitted_on: The attribute of the fitting pass's
            :class:`~anomaly.scoring.inspected.Inspected` that holds that output (for
            ``map``: ``maps``, pooled by :func:`~anomaly.scoring.positions.pooled`).
        what: That output in words, for error messages.
        settings: Its fitting arguments from its config group (``enabled`` removed).
        fit: Fits it on the stacked outputs of the training images with those arguments.
        load: Reads its file.
        describe: One line about a fitted one, for the log.
        used_by: What in a calibration makes it count (in words), or "" when it does not.
        stood_in_by: A model output that plays its part in the calibration for a model
            that gives it (the model's own image score for the feature score), so that
            such a model's folder needs no file of it; "" for none.
    """

    name: str
    attribute: str
    file: str
    needs: str
    fitted_on: str
    what: str
    settings: Callable[[Mapping[str, Any]], dict[str, Any]]
    fit: Callable[..., Any]
    load: Callable[[str | os.PathLike[str]], Any]
    describe: Callable[[Any], str]
    used_by: Callable[[Calibration], str]
    stood_in_by: str = ""

    @property
    def key(self) -> str:
        """Its config group, ``scoring.<name>``."""
        return f"scoring.{self.name}"

    def save(self, part: Any, folder: Path) -> None:
        """Write a fitted one into the model folder."""
        part.save(folder / self.file)


def _gaussian(outputs: list[np.ndarray], **_: Any) -> FeatureGaussian:
    return FeatureGaussian.fit(np.concatenate(outputs))


def _memory(
    outputs: list[torch.Tensor], *, coreset: float, max_patches: int, seed: int = 0, **_: Any
) -> PatchMemory:
    return PatchMemory.fit(torch.cat(outputs), coreset=coreset, max_patches=max_patches, seed=seed)


def _patch_settings(group: Mapping[str, Any]) -> dict[str, Any]:
    settings = {"coreset": group["coreset"], "max_patches": group["max_patches"]}
    check_patch_settings(weight=group["weight"], **settings)
    return settings


FEATURE_SCORE = AddOn(
    name="feature_score",
    attribute="features",
    file=FEATURES_FILE,
    needs=IMAGE_FEATURES,
    fitted_on="image_features",
    what="image features",
    settings=lambda group: {},
    fit=_gaussian,
    load=FeatureGaussian.load,
    describe=lambda g: (
        f"feature score: Gaussian over {g.mean.size} features of {g.n_images} training "
        f"images (shrinkage {g.shrinkage:.3f})"
    ),
    used_by=lambda c: "combines the map with a feature score" if c.fusion else "",
    stood_in_by=IMAGE_SCORE,
)

PATCH_MAP = AddOn(
    name="patch_map",
    attribute="patches",
    file=PATCHES_FILE,
    needs=PATCH_FEATURES,
    fitted_on="patch_features",
    what="feature maps",
    settings=_patch_settings,
    fit=_memory,
    load=PatchMemory.load,
    describe=lambda m: (
        f"patch map: {m.bank.shape[0]} of {m.n_positions} feature positions of "
        f"{m.n_images} training images kept"
    ),
    used_by=lambda c: (
        f"adds a patch map (patch_scale {c.patch_scale:g})" if c.patch_scale > 0 else ""
    ),
)

POSITION_SCORE = AddOn(
    name="position_score",
    attribute="positions",
    file=POSITIONS_FILE,
    needs=MAP,
    fitted_on="maps",
    what="map of its own",
    settings=lambda group: {},
    fit=lambda outputs, **_: PositionStats.fit([m for maps in outputs for m in maps]),
    load=PositionStats.load,
    describe=lambda p: (
        f"position score: the map's mean and spread at {p.mean.size} positions over "
        f"{p.n_images} training images"
    ),
    used_by=lambda c: (
        (
            "standardises the map per position"
            if c.position_pixels
            else "takes the map's score standardised per position"
        )
        if c.positions
        else ""
    ),
)

ADDONS: tuple[AddOn, ...] = (FEATURE_SCORE, PATCH_MAP, POSITION_SCORE)
