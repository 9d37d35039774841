"""The detector: a trained model with its preprocessing, map settings, calibration and add-ons.

Works on any ``nn.Module`` that reconstructs images; modules with several reconstructions
expose ``reconstructions(x) -> [(weight, recon), ...]``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from anomaly.data.transforms import Preprocess
from anomaly.errors import ConfigError
from anomaly.scoring.calibration import Calibration
from anomaly.scoring.features import FeatureGaussian, ScoreFusion
from anomaly.scoring.maps import MapSettings, image_scores, raw_map, smooth
from anomaly.scoring.patches import PatchMemory
from anomaly.scoring.tiling import tiled_map


def gives_features(model: nn.Module, preprocess: Preprocess) -> bool:
    """Whether ``model`` gives image features for the feature score under ``preprocess``.

    A window of tile mode is not an image, so tile mode never does.
    """
    return hasattr(model, "image_features") and not preprocess.tile


def gives_patches(model: nn.Module, preprocess: Preprocess) -> bool:
    """Whether ``model`` gives feature maps for the patch map under ``preprocess``.

    Tile mode never does: a memory of whole-image positions does not describe windows.
    """
    return hasattr(model, "patch_features") and not preprocess.tile


@dataclass
class Detector:
    """A trained model with everything needed to turn images into verdicts.

    Attributes:
        model: Reconstructs ``(N, C, h, w)`` inputs; put in eval mode by the detector.
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
    """

    model: nn.Module
    preprocess: Preprocess
    maps: MapSettings
    calibration: Calibration | None = None
    model_id: str = ""
    features: FeatureGaussian | None = None
    patches: PatchMemory | None = None

    def __post_init__(self) -> None:
        self.model.eval()

    def _reconstructions(self, windows: torch.Tensor) -> list[tuple[float, torch.Tensor]]:
        fn = getattr(self.model, "reconstructions", None)
        return fn(windows) if fn is not None else [(1.0, self.model(windows))]

    def _raw(self, windows: torch.Tensor) -> torch.Tensor:
        # A model that learned its own comparison (DRAEM) gives the map itself.
        own = getattr(self.model, "anomaly_map", None)
        if own is not None:
            return own(windows)
        return raw_map(windows, self._reconstructions(windows), self.maps)

    def _per_image(
        self,
        images: torch.Tensor | Sequence[torch.Tensor],
        fn: Callable[[torch.Tensor], torch.Tensor],
    ) -> list[torch.Tensor]:
        """``fn`` applied to each image, one result tensor per image.

        Resize mode: on the batch of model inputs. Tile mode: window by window on each
        image, the windows stitched by averaging.
        """
        if not self.preprocess.tile:
            batch = images if isinstance(images, torch.Tensor) else torch.stack(list(images))
            return list(fn(batch).unbind(0))
        return [
            tiled_map(image, fn, window=self.preprocess.image_size, stride=self.preprocess.stride)
            for image in images
        ]

    @torch.inference_mode()
    def anomaly_maps(self, images: torch.Tensor | Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Smoothed anomaly maps, one ``(1, h, w)`` tensor per image.

        Args:
            images: ``(N, C, h, w)`` model inputs (resize mode), or images of any size at
                working scale (tile mode: inspected in overlapping windows, stitched, then
                smoothed, so window borders leave no seams).
        """
        maps = self._smoothed(self._per_image(images, self._raw))
        scale = self.patch_scale
        if not scale:
            return maps
        # Smoothing is linear, so the parts may be smoothed apart (calibration needs them).
        return [m + scale * p for m, p in zip(maps, self.patch_maps(images), strict=True)]

    def _smoothed(self, raw: list[torch.Tensor]) -> list[torch.Tensor]:
        if all(m.shape == raw[0].shape for m in raw):
            # One smoothing call for the batch (the usual resize-mode case).
            return list(smooth(torch.stack(raw), self.maps).unbind(0))
        return [smooth(m[None], self.maps)[0] for m in raw]

    @property
    def patch_scale(self) -> float:
        """Weight of the patch map in :meth:`anomaly_maps`; 0 when it does not count."""
        if self.patches is None or self.calibration is None:
            return 0.0
        return float(self.calibration.patch_scale)

    def supports_patches(self) -> bool:
        """Whether the model gives feature maps for the patch map (DRAEM, resize mode)."""
        return gives_patches(self.model, self.preprocess)

    def check_patches(self) -> None:
        """Raise unless the model gives feature maps for the patch map.

        Raises:
            ConfigError: The model gives none, or works in tiles.
        """
        if not self.supports_patches():
            raise ConfigError(
                f"{type(self.model).__name__} in {'tile' if self.preprocess.tile else 'resize'}"
                " mode gives no feature maps for the patch map; set "
                "scoring.patch_map.enabled=false"
            )

    @torch.inference_mode()
    def patch_features(self, images: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
        """Feature maps ``(N, D, h, w)`` of ``(N, C, H, W)`` model inputs.

        Raises:
            ConfigError: The model gives none (see :meth:`check_patches`).
        """
        self.check_patches()
        # One image at a time, as for image_features: a nearest-neighbour distance that is
        # small beside the features' size magnifies the ~1e-7 rounding of batched float32
        # convolutions, and a resumed or distributed run must map an image as the first.
        return torch.cat([self.model.patch_features(image[None]) for image in images])

    @torch.inference_mode()
    def patch_maps(self, images: torch.Tensor | Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Smoothed patch maps (distance to the training memory), one ``(1, H, W)`` each.

        Unweighted: :meth:`anomaly_maps` adds them times :attr:`patch_scale`.

        Raises:
            ValueError: The detector has no patch memory.
        """
        if self.patches is None:
            raise ValueError("this detector has no patch memory; fit one with fit_patches")
        if len(images) == 0:
            return []
        size = tuple(images[0].shape[-2:])
        raw = self.patches.patch_map(self.patch_features(images), size)
        return self._smoothed(list(raw.unbind(0)))

    @torch.inference_mode()
    def reconstruct(self, images: torch.Tensor | Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """The first reconstruction of each image (stitched from windows in tile mode)."""
        return self._per_image(images, lambda windows: self._reconstructions(windows)[0][1])

    def supports_features(self) -> bool:
        """Whether the model gives image features (DRAEM and its ensembles, resize mode)."""
        return gives_features(self.model, self.preprocess)

    def check_features(self) -> None:
        """Raise unless the model gives image features.

        Raises:
            ConfigError: The model gives none, or works in tiles (a window is not an image).
        """
        if not self.supports_features():
            raise ConfigError(
                f"{type(self.model).__name__} in {'tile' if self.preprocess.tile else 'resize'}"
                " mode gives no image features; set scoring.feature_score.enabled=false"
            )

    @torch.inference_mode()
    def image_features(self, images: torch.Tensor | Sequence[torch.Tensor]) -> np.ndarray:
        """Pooled features ``(N, D)`` of ``(N, C, h, w)`` model inputs.

        Raises:
            ConfigError: The model gives none, or works in tiles (a window is not an image).
        """
        self.check_features()
        # One image at a time: float32 convolutions round differently in batches of
        # different sizes (~1e-7), and the Mahalanobis distance magnifies that about a
        # thousandfold. Alone, an image gets the same feature score in any batch, so a
        # resumed or distributed run scores it as the first run did.
        features = [self.model.image_features(image[None]) for image in images]
        if not features:
            return np.zeros((0, 0))
        return torch.cat(features).double().numpy()

    def feature_distances(self, images: torch.Tensor | Sequence[torch.Tensor]) -> np.ndarray | None:
        """Feature scores ``(N,)`` of model inputs; None without a feature model.

        Squared Mahalanobis distances to the training images' Gaussian.
        """
        if self.features is None or len(images) == 0:
            return None
        return self.features.distances(self.image_features(images))

    @property
    def fusion(self) -> ScoreFusion | None:
        """How image scores combine map and features; None when they are the map's."""
        if self.features is None or self.calibration is None or not self.calibration.fusion:
            return None
        return ScoreFusion.from_dict(self.calibration.fusion, "calibration")

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
        self, maps: Sequence[torch.Tensor], *, pixel_threshold: float | None = None
    ) -> np.ndarray:
        """Image scores ``(N,)`` from the maps alone (``scoring.score``)."""
        pixel = pixel_threshold
        if pixel is None and self.calibration is not None:
            pixel = self.calibration.pixel_threshold
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
