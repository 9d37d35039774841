"""The feature score: Ledoit-Wolf Gaussian, Mahalanobis distances, fusion with the map."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.covariance import LedoitWolf

from anomaly.errors import ModelFolderError
from anomaly.scoring.features import FeatureGaussian, ScoreFusion, ledoit_wolf, pool_features


@pytest.mark.parametrize(("n", "p"), [(60, 8), (20, 50)])
def test_ledoit_wolf_matches_scikit_learn(n, p):
    rng = np.random.default_rng(n)
    x = rng.normal(size=(n, p)) @ rng.normal(size=(p, p)) + rng.normal(size=p)
    cov, shrinkage = ledoit_wolf(x)
    reference = LedoitWolf().fit(x)
    assert shrinkage == pytest.approx(reference.shrinkage_, rel=1e-9)
    np.testing.assert_allclose(cov, reference.covariance_, rtol=1e-9, atol=1e-12)
    # Fewer images than features: the shrunk covariance is still invertible.
    assert np.linalg.matrix_rank(cov) == p


def test_distances_are_squared_mahalanobis_as_scikit_learn_computes_them():
    rng = np.random.default_rng(1)
    train = rng.normal(size=(40, 6)) * [1, 2, 3, 1, 1, 5]
    test = rng.normal(size=(7, 6)) * 3
    gaussian = FeatureGaussian.fit(train)
    np.testing.assert_allclose(
        gaussian.distances(test), LedoitWolf().fit(train).mahalanobis(test), rtol=1e-8
    )
    assert gaussian.n_images == 40 and 0 <= gaussian.shrinkage <= 1


def test_a_hand_computed_distance():
    gaussian = FeatureGaussian(mean=np.array([1.0, 2.0]), precision=np.diag([4.0, 1.0]))
    # (2 - 1)^2 * 4 + (4 - 2)^2 * 1 = 8; the mean itself is at 0.
    np.testing.assert_allclose(gaussian.distances(np.array([[2.0, 4.0], [1.0, 2.0]])), [8.0, 0.0])


def test_bad_features_are_refused_with_what_to_do():
    with pytest.raises(ValueError, match="at least two images.*feature_score.enabled=false"):
        FeatureGaussian.fit(np.zeros((1, 4)))
    with pytest.raises(ValueError, match="not all finite"):
        FeatureGaussian.fit(np.array([[0.0, np.nan], [1.0, 2.0]]))
    gaussian = FeatureGaussian.fit(np.random.default_rng(0).normal(size=(5, 3)))
    with pytest.raises(ValueError, match=r"shape \(2, 4\).*3 features"):
        gaussian.distances(np.zeros((2, 4)))


def test_constant_features_still_give_finite_distances():
    gaussian = FeatureGaussian.fit(np.ones((4, 3)))
    assert np.isfinite(gaussian.distances(np.zeros((1, 3)))).all()


def test_save_and_load_round_trip(tmp_path):
    rng = np.random.default_rng(2)
    gaussian = FeatureGaussian.fit(rng.normal(size=(30, 5)))
    path = tmp_path / "features.npz"
    gaussian.save(path)
    loaded = FeatureGaussian.load(path)
    x = rng.normal(size=(4, 5))
    # The precision is stored in float32: distances agree to its precision.
    np.testing.assert_allclose(loaded.distances(x), gaussian.distances(x), rtol=1e-5)
    assert loaded.n_images == 30 and loaded.shrinkage == pytest.approx(gaussian.shrinkage)
    assert not list(tmp_path.glob(".*tmp"))


def test_broken_files_name_the_file(tmp_path):
    path = tmp_path / "features.npz"
    path.write_bytes(b"not a zip")
    with pytest.raises(ModelFolderError, match=r"features\.npz cannot be read.*retrain"):
        FeatureGaussian.load(path)
    np.savez(path, mean=np.zeros(3), precision=np.eye(4), shrinkage=0.0, n_images=2)
    with pytest.raises(ModelFolderError, match=r"features\.npz: precision of shape \(4, 4\)"):
        FeatureGaussian.load(path)
    np.savez(path, mean=np.zeros(3))
    with pytest.raises(ModelFolderError, match="cannot be read"):
        FeatureGaussian.load(path)


def test_pooling_is_each_channels_mean_maximum_and_spread():
    h = torch.tensor([[[[1.0, 3.0], [5.0, 7.0]], [[0.0, 0.0], [0.0, 2.0]]]])
    pooled = pool_features(h)
    # Channel 0: mean 4, max 7, population spread sqrt(5); channel 1: 0.5, 2, sqrt(0.75).
    expected = torch.tensor([[4.0, 0.5, 7.0, 2.0, 5.0**0.5, 0.75**0.5]])
    torch.testing.assert_close(pooled, expected)


def test_log_pooling_takes_the_logs_of_the_heights_above_the_mean_and_of_the_spreads():
    h = torch.tensor([[[[1.0, 3.0], [5.0, 7.0]], [[0.0, 0.0], [0.0, 2.0]]]])
    pooled = pool_features(h, "log")
    # Heights of the maxima above the means: 7 - 4 and 2 - 0.5; spreads as above.
    floor = 1e-6
    expected = torch.tensor(
        [
            [
                4.0,
                0.5,
                np.log(3 + floor),
                np.log(1.5 + floor),
                np.log(5**0.5 + floor),
                np.log(0.75**0.5 + floor),
            ]
        ]
    )
    torch.testing.assert_close(pooled, expected.float())
    # The means are those of the raw form; the other two are its columns, transformed.
    raw = pool_features(h)
    torch.testing.assert_close(pooled[:, :2], raw[:, :2])


def test_log_pooling_of_a_constant_channel_is_finite_and_far_below_any_texture():
    h = torch.zeros(2, 3, 6, 6)
    h[1] = torch.randn(3, 6, 6)
    pooled = pool_features(h, "log")
    assert torch.isfinite(pooled).all()
    # A blank photo's heights and spreads sit at the floor: as far from a textured
    # photo's as a Gaussian over textured ones can tell.
    assert (pooled[0, 3:] < pooled[1, 3:] - 5).all()


def test_an_unknown_pooling_is_refused():
    with pytest.raises(ValueError, match="pooling must be one of"):
        pool_features(torch.zeros(1, 2, 3, 3), "median")


def test_fusion_standardises_both_scores_on_the_validation_images():
    maps = np.array([0.1, 0.2, 0.3, 0.4])
    features = np.array([10.0, 30.0, 20.0, 40.0])
    fusion = ScoreFusion.fit(maps, features, map_weight=0.5)
    fused = fusion(maps, features)
    z_map = (maps - maps.mean()) / maps.std()
    z_feature = (features - features.mean()) / features.std()
    np.testing.assert_allclose(fused, z_feature + 0.5 * z_map)
    assert fused.mean() == pytest.approx(0.0, abs=1e-12)
    # A test image far out in features is far out in the fused score, whatever its map.
    assert fusion(np.array([0.1]), np.array([100.0]))[0] > fused.max()


def test_fusion_without_spread_keeps_the_raw_scale():
    fusion = ScoreFusion.fit(np.full(3, 0.2), np.array([1.0, 2.0, 3.0]), map_weight=1.0)
    assert fusion.map_std == 1.0
    assert fusion(np.array([0.7]), np.array([2.0]))[0] == pytest.approx(0.5)


def test_fusion_round_trips_and_refuses_bad_values():
    fusion = ScoreFusion.fit(np.array([0.1, 0.3]), np.array([1.0, 5.0]), map_weight=0.25)
    assert ScoreFusion.from_dict(fusion.to_dict(), "x") == fusion
    broken = fusion.to_dict() | {"feature_std": 0.0}
    with pytest.raises(ModelFolderError, match=r"calibration\.json: fusion\.feature_std"):
        ScoreFusion.from_dict(broken, "calibration.json")
    missing = {k: v for k, v in fusion.to_dict().items() if k != "map_weight"}
    with pytest.raises(ModelFolderError, match=r"fusion\.map_weight must be a number"):
        ScoreFusion.from_dict(missing, "calibration.json")
    with pytest.raises(ModelFolderError, match="must be an object"):
        ScoreFusion.from_dict([1, 2], "calibration.json")
