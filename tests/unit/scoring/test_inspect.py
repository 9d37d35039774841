"""Detector.inspect: one forward pass per photo gives the map and what every add-on needs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from anomaly.data.transforms import Preprocess
from anomaly.models.inspection import RECONSTRUCTION, Reconstructor, Wants, inspectable
from anomaly.scoring.addons import ADDONS, FEATURE_SCORE, PATCH_MAP
from anomaly.scoring.detector import Detector
from anomaly.scoring.fitting import calibrate, fit_addons
from anomaly.scoring.maps import MapSettings
from tests.conftest import stripes_and_noise, tiny_draem_detector


@pytest.fixture
def data(tmp_path):
    return stripes_and_noise(tmp_path, train=12, val=6, test=3)


def _count_encoder_runs(detector: Detector) -> list[int]:
    """A list whose length is the number of photos the reconstructive encoder has seen."""
    seen: list[int] = []
    first_block = detector.model.network.reconstructive.down[0]
    first_block.register_forward_hook(lambda module, args, out: seen.append(args[0].shape[0]))
    return seen


def test_one_encoder_pass_per_photo_gives_map_feature_score_and_patch_map(data):
    detector = tiny_draem_detector()
    seen = _count_encoder_runs(detector)
    # Both add-ons are fitted in one pass over the training images.
    fit_addons(detector, data["train"], {FEATURE_SCORE: {}, PATCH_MAP: {"coreset": 0.5,
               "max_patches": 500}}, batch_size=5)  # fmt: skip
    assert sum(seen) == len(data["train"])
    assert detector.features.n_images == detector.patches.n_images == len(data["train"])
    calibrate(detector, data["val"], batch_size=4)
    seen.clear()
    x = torch.rand(5, 1, 32, 32)
    inspected = detector.inspect(x)
    assert sum(seen) == 5 and set(seen) == {1}  # once per photo, one photo per pass
    # The same as asking for each part on its own (which runs the encoder again).
    np.testing.assert_array_equal(inspected.distances, detector.feature_distances(x))
    for got, alone in zip(inspected.patch_maps, detector.patch_maps(x), strict=True):
        torch.testing.assert_close(got, alone, rtol=0, atol=0)
    scale = detector.calibration.patch_scale
    assert scale > 0
    for m, own, patch in zip(
        inspected.maps, inspected.model_maps, inspected.patch_maps, strict=True
    ):
        torch.testing.assert_close(m, own + scale * patch)
    np.testing.assert_array_equal(
        detector.image_scores(inspected),
        detector.scores(inspected.maps, distances=inspected.distances),
    )


def test_inspect_is_in_eval_mode_and_gives_back_the_training_mode():
    detector = tiny_draem_detector()
    detector.model.train()
    x = torch.rand(1, 1, 32, 32)
    # A single photo through batch statistics would fail in a 1x1 bottleneck or change
    # with its batch; in eval mode it is the same map as outside training.
    got = detector.inspect(x).maps[0]
    assert detector.model.training
    detector.model.eval()
    torch.testing.assert_close(got, detector.inspect(x).maps[0], rtol=0, atol=0)


def test_a_plain_reconstructing_module_is_inspectable_through_the_adapter():
    class Halve(torch.nn.Module):
        def forward(self, x):
            return x / 2

    model = inspectable(Halve())
    assert isinstance(model, Reconstructor) and model.gives == {RECONSTRUCTION}
    x = torch.rand(2, 1, 8, 8)
    ((weight, recon),) = model.inspect(x, Wants()).reconstructions
    assert weight == 1.0
    torch.testing.assert_close(recon, x / 2)
    settings = MapSettings(kind="l2", smoothing_sigma=0.0)
    detector = Detector(Halve(), Preprocess.create(image_size=8, channels=1), settings)
    assert not any(detector.supports(addon) for addon in ADDONS)
    # The detector computes the map from the reconstruction: here the squared error.
    for got, image in zip(detector.inspect(x).maps, x, strict=True):
        torch.testing.assert_close(got, (image - image / 2) ** 2)
