"""The feature score inside the detector: fitted on training images, fused at calibration,
used the same way by evaluation and by scoring a folder."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch

from anomaly.data.folder import Sample
from anomaly.data.transforms import Preprocess
from anomaly.errors import ConfigError, DataError
from anomaly.models.inspection import Wants
from anomaly.models.unet import UNet
from anomaly.scoring.addons import FEATURE_SCORE
from anomaly.scoring.detector import Detector
from anomaly.scoring.evaluation import evaluate
from anomaly.scoring.features import ScoreFusion, pool_features
from anomaly.scoring.fitting import calibrate, fit_features
from anomaly.scoring.maps import MapSettings
from anomaly.scoring.results import score_folder
from anomaly.scoring.stream import inspect_batches
from anomaly.training.draem import DraemModule
from anomaly.training.ensemble import EnsembleModule
from tests.conftest import TINY_DRAEM, stripes_and_noise, tiny_draem_detector


def _features(module, x):
    return module.inspect(x, Wants(map=False, image_features=True)).image_features


MEMBER = {k: v for k, v in TINY_DRAEM.items() if k != "_target_"}


_detector = tiny_draem_detector


@pytest.fixture
def data(tmp_path):
    """Stripes for training, validation and test; noise images as the test's defects."""
    return stripes_and_noise(tmp_path, train=24, val=8, test=4)


def test_unet_encode_is_the_deepest_level():
    net = UNet(channels=1, base=4, depth=2, skip=False)
    h = net.encode(torch.rand(2, 1, 16, 24))
    assert h.shape == (2, 16, 4, 6)


def test_draem_and_ensemble_features_are_the_pooled_bottlenecks():
    torch.manual_seed(0)
    x = torch.rand(3, 1, 32, 32)
    member = DraemModule(**MEMBER).eval()
    with torch.no_grad():
        expected = pool_features(member.reconstructive.encode(x))
        torch.testing.assert_close(_features(member, x), expected)
    ensemble = EnsembleModule(TINY_DRAEM, members=2, scales=[1.0, 0.5]).eval()
    with torch.no_grad():
        got = _features(ensemble, x)
        half = torch.nn.functional.interpolate(x, size=(16, 16), mode="bilinear", antialias=True)
        first = _features(ensemble.members[0], x)
        second = _features(ensemble.members[1], half)
    # 16 bottleneck channels x (mean, max, spread) per member, side by side.
    assert got.shape == (3, 96)
    torch.testing.assert_close(got, torch.cat([first, second], dim=1))


def test_far_images_get_high_feature_scores_and_the_fused_score_is_used_everywhere(data, tmp_path):
    detector = _detector()
    gaussian = fit_features(detector, data["train"], batch_size=8)
    assert detector.features is gaussian and gaussian.n_images == 24
    calibration = calibrate(detector, data["val"], batch_size=8, map_weight=0.5)
    fusion = ScoreFusion.from_dict(calibration.fusion, "calibration")
    assert fusion.map_weight == 0.5
    # The validation images' fused scores are standardised: they average to 0.
    assert np.mean(calibration.validation_scores) == pytest.approx(0.0, abs=1e-9)

    evaluation = evaluate(detector, data["test"], batch_size=8, pixel_metrics_at=None)
    maps, distances = [], []
    for _, inspected in inspect_batches(detector, data["test"], batch_size=8):
        maps += inspected.maps
        distances.append(inspected.distances)
    distances = np.concatenate(distances)
    # Noise is far from the stripes' features, farther than any held-out stripe image.
    assert distances[4:].min() > distances[:4].max()
    expected = fusion(detector.map_scores(maps), distances)
    np.testing.assert_allclose(evaluation.scores, expected, rtol=1e-6)
    assert evaluation.metrics["image_auroc"] == 1.0
    with pytest.raises(ValueError, match="distances=detector.feature_distances"):
        detector.scores(maps)

    # `anomaly score` gives each image the same score and verdict as the evaluation.
    score_folder(detector, data["test_dir"], tmp_path / "scored", batch_size=3)
    with open(tmp_path / "scored" / "scores.csv", newline="") as handle:
        rows = {r["path"]: float(r["score"]) for r in csv.DictReader(handle)}
    for sample, score in zip(data["test"], evaluation.scores, strict=True):
        assert rows[sample.path.name] == pytest.approx(score, rel=1e-5)


def test_an_images_feature_score_does_not_depend_on_its_batch(data):
    detector = _detector()
    fit_features(detector, data["train"], batch_size=8)
    x = torch.rand(5, 1, 32, 32)
    together = detector.feature_distances(x)
    alone = np.concatenate([detector.feature_distances(x[i : i + 1]) for i in range(5)])
    # Exactly: the distance magnifies rounding differences of the features.
    np.testing.assert_array_equal(together, alone)
    np.testing.assert_array_equal(detector.feature_distances(x[2:]), together[2:])


def test_without_the_fusion_in_the_calibration_the_score_is_the_maps(data):
    detector = _detector()
    calibrate(detector, data["val"], batch_size=8)
    assert detector.calibration.fusion == {}
    fit_features(detector, data["train"], batch_size=8)
    # Fitting the Gaussian drops the thresholds of the old score: calibrate must follow.
    assert detector.calibration is None
    calibrate(detector, data["val"], batch_size=8)
    detector.calibration.fusion = {}
    maps = detector.anomaly_maps(torch.rand(2, 1, 32, 32))
    np.testing.assert_allclose(detector.scores(maps), detector.map_scores(maps))


def test_fitting_skips_unreadable_images_and_needs_two(data, tmp_path, caplog):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    detector = _detector()
    fit_features(detector, [*data["train"][:3], Sample(broken, 0, "good")])
    assert detector.features.n_images == 3
    assert "broken.png" in caplog.text
    with pytest.raises(DataError, match="at least two readable training images, got 1"):
        fit_features(_detector(), [data["train"][0], Sample(broken, 0, "good")])


def test_models_without_features_are_refused_with_the_key():
    class Flat(torch.nn.Module):
        def forward(self, x):
            return x

    detector = Detector(Flat(), Preprocess.create(image_size=16, channels=1), MapSettings())
    assert not detector.supports(FEATURE_SCORE) and detector.feature_distances([]) is None
    with pytest.raises(ConfigError, match="scoring.feature_score.enabled=false"):
        fit_features(detector, [])
    tiled = Detector(
        DraemModule(**MEMBER), Preprocess.create(image_size=16, channels=1, tile=True),
        MapSettings(),
    )  # fmt: skip
    assert not tiled.supports(FEATURE_SCORE)


def test_a_defective_photo_among_the_validation_photos_is_named(data, caplog):
    """Its score sets the threshold: the calibration and the log name it."""
    detector = _detector()
    fit_features(detector, data["train"], batch_size=8)
    noise = next(s for s in data["test"] if s.label == 1)
    with caplog.at_level("WARNING", logger="anomaly.scoring.fitting"):
        cal = calibrate(detector, [*data["val"], noise], batch_size=4)
    assert [m["path"] for m in cal.standouts] == [str(noise.path)]
    assert cal.standouts[0]["score"] == pytest.approx(max(cal.validation_scores))
    assert f"validation photo {noise.path} scores" in caplog.text
    assert "move it out of the training photos and train again" in caplog.text
    # The defect-free photos alone: nothing stands out, nothing is logged.
    caplog.clear()
    assert calibrate(detector, data["val"], batch_size=4).standouts == []
    assert "far above" not in caplog.text
