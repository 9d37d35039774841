"""The detector: a trained model with its preprocessing, map settings, calibration and add-ons.

:meth:`Detector.inspect` is the one way images become maps and scores: one forward pass
of the model (:mod:`anomaly.models.inspection`) gives the map or reconstructions and the
features that the feature score and the patch map need, for a whole batch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import nn

from anomaly.data.transforms import Preprocess
from anomaly.errors import ConfigError
from anomaly.models.inspection import (
    IMAGE_SCORE,
    RECONSTRUCTION,
    InspectableModel,
    Inspection,
    Wants,
    inspectable,
)
from anomaly.scoring.addons import FEATURE_SCORE, PATCH_MAP, AddOn
from anomaly.scoring.calibration import Calibration
from anomaly.scoring.features import FeatureGaussian, ScoreFusion
from anomaly.scoring.inspected import Images, Inspected, gives
from anomaly.scoring.maps import MapSettings, image_scores, raw_map, smooth
from anomaly.scoring.passes import parallel_passes
from anomaly.scoring.patches import PatchMemory
from anomaly.scoring.positions import PositionStats, pooled
from anomaly.scoring.tiling import tiled_map

# Images per forward pass. Small passes keep the activations in cache: on two cores four
# photos per pass score the default DRAEM at 128x128 at ~1.3x, and the CAE at ~1.5x, the
# photos/s of passes of 32. When the features for the feature score or the patch map are
# taken, one photo per pass: a photo's result must not depend on its batch (a resumed or
# distributed run scores it as the first run did), and float32 convolutions round
# differently (~1e-8) in passes of different sizes, which the feature score's Mahalanobis
# distance magnifies about ten-thousandfold; features fitted one photo at a time must
# also be scored that way. (Channels-last passes ran faster still but move feature scores
# by ~3e-4 relative, so saved models would no longer score as saved.)
PASS_SIZE = 4
FEATURE_PASS_SIZE = 1


@dataclass
class Detector:
    """A trained model with everything needed to turn images into verdicts.

    Attributes:
        model: The trained model: an :class:`~anomaly.models.inspection.InspectableModel`
            (DRAEM, every module of the family) or any ``nn.Module`` that reconstructs;
            put in eval mode by the detector.
        preprocess: Model input size, channels and resize/tile mode.
        maps: How errors become maps and scores.
        calibration: Thresholds (None before calibration).
        model_id: Identifier written into every result row.
        features: Gaussian over the training images' features, for the image-level
            feature score (None: the image score is the map's alone). It counts once the
            calibration holds the fusion of both scores.
        patches: Memory of the training images' bottleneck positions, for the patch map
            (None: the map is the model's alone). It counts once the calibration holds
            its ``patch_scale``.
        positions: The training maps' mean and spread per position, for the position
            score; it counts once the calibration says it was fitted with it, on the
            image score alone or, where the calibration says so, on the maps themselves.
    """

    model: nn.Module
    preprocess: Preprocess
    maps: MapSettings
    calibration: Calibration | None = None
    model_id: str = ""
    features: FeatureGaussian | None = None
    patches: PatchMemory | None = None
    positions: PositionStats | None = None

    def __post_init__(self) -> None:
        self.model.eval()
        self.network: InspectableModel = inspectable(self.model)

    @torch.inference_mode()
    def inspect(
        self,
        images: Images,
        *,
        reconstructions: bool = False,
        image_features: bool = False,
        patch_features: bool = False,
        fitting_maps: bool = False,
    ) -> Inspected:
        """Maps, feature scores and patch maps of a batch, from one forward pass per image.

        Args:
            images: ``(N, C, h, w)`` model inputs (resize mode), or images of any size at
                working scale (tile mode: inspected in overlapping windows, stitched, then
                smoothed, so window borders leave no seams).
            reconstructions: Also return the first reconstruction of each image (none
                from a model that compares in feature space, such as feature_ae).
            image_features: Only the features for fitting the feature score (no maps).
            patch_features: Only the feature maps for fitting the patch map (no maps).
            fitting_maps: With either (or alone), the model's maps too, pooled
                (:func:`~anomaly.scoring.positions.pooled`), for fitting the position score.
        """
        if len(images) == 0:
            return Inspected(maps=[], model_maps=[])
        # Always in eval mode, also for the sample grids drawn between training epochs:
        # batch statistics would change a photo's map with its batch, and update the
        # running statistics the training is still fitting.
        was_training = self.model.training
        self.model.eval()
        reconstructions = reconstructions and RECONSTRUCTION in self.network.gives
        try:
            return self._inspect(
                images, reconstructions, image_features, patch_features, fitting_maps
            )
        finally:
            self.model.train(was_training)

    def _inspect(
        self,
        images: Images,
        reconstructions: bool,
        image_features: bool,
        patch_features: bool,
        fitting_maps: bool = False,
    ) -> Inspected:
        if self.preprocess.tile:
            return self._inspect_tiles(images, reconstructions)
        fitting = image_features or patch_features or fitting_maps
        wants = replace(
            Wants(map=fitting_maps, image_features=image_features, patch_features=patch_features)
            if fitting
            else self.scoring_wants(),
            reconstruction=reconstructions,
        )
        for addon, wanted in (
            (FEATURE_SCORE, wants.image_features),
            (PATCH_MAP, wants.patch_features),
        ):
            if wanted:
                self.check(addon)
        batch = images if isinstance(images, torch.Tensor) else torch.stack(list(images))
        out = self._forward(batch, wants)
        features = None if out.image_features is None else out.image_features.double().numpy()
        if fitting:
            maps = pooled(self._smoothed(list(out.map.unbind(0)))) if fitting_maps else []
            return Inspected(maps=maps, image_features=features, patch_features=out.patch_features)
        model_maps = self._smoothed(list(out.map.unbind(0)))
        result = Inspected(maps=model_maps, model_maps=model_maps)
        if wants.reconstruction:
            result.reconstructions = list(out.reconstructions[0][1].unbind(0))
        if self.features is not None:
            result.distances = self.features.distances(features)
        elif out.image_score is not None:
            result.distances = out.image_score.double().numpy()
        if self.patches is not None:
            raw = self.patches.patch_map(out.patch_features, tuple(batch.shape[-2:]))
            result.patch_maps = self._smoothed(list(raw.unbind(0)))
            scale = self.patch_scale
            if scale:
                # Smoothing is linear, so the parts may be smoothed apart.
                result.maps = [
                    m + scale * p for m, p in zip(model_maps, result.patch_maps, strict=True)
                ]
        if self.standardises_pixels:
            result.maps = [self.positions.standardised(m) for m in result.maps]
        return result

    def _forward(self, batch: torch.Tensor, wants: Wants) -> Inspection:
        """The model's outputs for a batch, in passes of :meth:`pass_size` images.

        The map is the model's own or computed from its reconstructions.
        """
        size = self.pass_size(wants)
        chunks = [batch[i : i + size] for i in range(0, batch.shape[0], size)]
        parts = parallel_passes(lambda x: self._pass(x, wants), chunks)

        def joined(name: str) -> torch.Tensor | None:
            values = [getattr(p, name) for p in parts]
            return None if values[0] is None else torch.cat(values)

        recons = (
            [(1.0, torch.cat([p.reconstructions[0][1] for p in parts]))]
            if wants.reconstruction
            else []
        )
        return Inspection(
            map=joined("map"),
            reconstructions=recons,
            image_features=joined("image_features"),
            patch_features=joined("patch_features"),
            image_score=joined("image_score"),
        )

    @staticmethod
    def pass_size(wants: Wants) -> int:
        """Photos per forward pass: :data:`FEATURE_PASS_SIZE` when features are wanted."""
        return FEATURE_PASS_SIZE if wants.image_features or wants.patch_features else PASS_SIZE

    def scoring_wants(self) -> Wants:
        """The map, the add-ons' features, the model's own score in the feature score's place."""
        return Wants(
            image_features=self.features is not None,
            patch_features=self.patches is not None,
            image_score=self.features is None and IMAGE_SCORE in self.network.gives,
        )

    def _pass(self, x: torch.Tensor, wants: Wants) -> Inspection:
        out = self.network.inspect(x, wants)
        if wants.map and out.map is None:
            out.map = raw_map(x, out.reconstructions, self.maps)
        return out

    def _inspect_tiles(self, images: Images, reconstructions: bool) -> Inspected:
        maps = self._smoothed(self._tiled(images, lambda w: self._pass(w, Wants()).map))
        result = Inspected(maps=maps, model_maps=maps)
        if reconstructions:
            only = Wants(map=False, reconstruction=True)
            result.reconstructions = self._tiled(
                images, lambda w: self.network.inspect(w, only).reconstructions[0][1]
            )
        return result

    def _tiled(
        self, images: Images, fn: Callable[[torch.Tensor], torch.Tensor]
    ) -> list[torch.Tensor]:
        return [
            tiled_map(image, fn, window=self.preprocess.image_size, stride=self.preprocess.stride)
            for image in images
        ]

    def _smoothed(self, raw: list[torch.Tensor]) -> list[torch.Tensor]:
        if all(m.shape == raw[0].shape for m in raw):
            # One smoothing call for the batch (the usual resize-mode case).
            return list(smooth(torch.stack(raw), self.maps).unbind(0))
        return [smooth(m[None], self.maps)[0] for m in raw]

    def anomaly_maps(self, images: Images) -> list[torch.Tensor]:
        """Smoothed anomaly maps, one ``(1, h, w)`` tensor per image (see :meth:`inspect`)."""
        return self.inspect(images).maps

    @property
    def positions_in_use(self) -> bool:
        """Whether the position statistics count: fitted, and in the calibration if one is there."""
        return self.positions is not None and (
            self.calibration is None or self.calibration.positions
        )

    @property
    def standardises_pixels(self) -> bool:
        """Whether the maps themselves are standardised per position (the calibration says so)."""
        return (
            self.positions_in_use
            and self.calibration is not None
            and self.calibration.position_pixels
        )

    @property
    def patch_scale(self) -> float:
        """Weight of the patch map in the maps; 0 when it does not count."""
        if self.patches is None or self.calibration is None:
            return 0.0
        return float(self.calibration.patch_scale)

    def supports(self, addon: AddOn) -> bool:
        """Whether the model gives what ``addon`` needs (DRAEM and its ensembles, resize mode)."""
        return gives(self.model, self.preprocess, addon)

    def check(self, addon: AddOn) -> None:
        """Raise unless the model gives what ``addon`` needs.

        Raises:
            ConfigError: The model gives none, or works in tiles (names the config key).
        """
        if not self.supports(addon):
            raise ConfigError(
                f"{type(self.model).__name__} in {'tile' if self.preprocess.tile else 'resize'}"
                f" mode gives no {addon.what} for the {addon.name.replace('_', ' ')}; set "
                f"{addon.key}.enabled=false"
            )

    def patch_maps(self, images: Images) -> list[torch.Tensor]:
        """Smoothed patch maps (distance to the training memory), one ``(1, H, W)`` each.

        Unweighted: the maps of :meth:`inspect` add them times :attr:`patch_scale`.

        Raises:
            ValueError: The detector has no patch memory.
        """
        if self.patches is None:
            raise ValueError("this detector has no patch memory; fit one with fit_patches")
        return self.inspect(images).patch_maps or []

    def feature_distances(self, images: Images) -> np.ndarray | None:
        """Feature scores ``(N,)`` of model inputs; None without a feature model.

        Squared Mahalanobis distances to the training images' Gaussian.
        """
        if self.features is None or len(images) == 0:
            return None
        return self.inspect(images).distances

    @property
    def fusion(self) -> ScoreFusion | None:
        """How image scores combine the map's with the second score; None when the map's alone."""
        if self.calibration is None or not self.calibration.fusion:
            return None
        return ScoreFusion.from_dict(self.calibration.fusion, "calibration")

    def image_scores(
        self, inspected: Inspected, *, pixel_threshold: float | None = None
    ) -> np.ndarray:
        """Image scores ``(N,)`` of an inspected batch (fused with the feature score if so).

        Args:
            inspected: What :meth:`inspect` gave.
            pixel_threshold: For the ``area`` score; the calibrated one when None.
        """
        return self.scores(
            inspected.maps, pixel_threshold=pixel_threshold, distances=inspected.distances
        )

    def scores(
        self,
        maps: Sequence[torch.Tensor],
        *,
        pixel_threshold: float | None = None,
        distances: np.ndarray | None = None,
    ) -> np.ndarray:
        """Image scores ``(N,)`` of ``(1, h, w)`` maps.

        Args:
            maps: The maps.
            pixel_threshold: For the ``area`` score; the calibrated one when None.
            distances: The images' feature scores (:meth:`feature_distances`), needed when
                the calibration fuses them with the map's.

        Raises:
            ValueError: The calibration fuses feature scores and ``distances`` is None.
        """
        map_scores = self.map_scores(maps, pixel_threshold=pixel_threshold)
        fusion = self.fusion
        if fusion is None:
            return map_scores
        if distances is None:
            raise ValueError(
                "this detector's image score includes the feature score; pass "
                "distances=detector.feature_distances(images)"
            )
        return fusion(map_scores, distances)

    def map_scores(
        self,
        maps: Sequence[torch.Tensor],
        *,
        pixel_threshold: float | None = None,
        per_position: bool | None = None,
    ) -> np.ndarray:
        """Image scores ``(N,)`` from the maps alone (``scoring.score``).

        Args:
            maps: The maps, as :meth:`inspect` gives them.
            pixel_threshold: For the ``area`` score; the calibrated one when None.
            per_position: Standardise the maps per position first. None: with the position
                score in use, unless the maps are standardised already
                (:attr:`standardises_pixels`).
        """
        pixel = pixel_threshold
        if pixel is None and self.calibration is not None:
            pixel = self.calibration.pixel_threshold
        if per_position is None:
            per_position = self.positions_in_use and not self.standardises_pixels
        if per_position and self.positions is not None:
            maps = [self.positions.standardised(m) for m in maps]
        return np.array(
            [
                float(
                    image_scores(
                        m[None], method=self.maps.score, topk=self.maps.topk, pixel_threshold=pixel
                    )[0]
                )
                for m in maps
            ]
        )
