"""The position score: the training maps' statistics per position, and the image score on
the map they standardise."""

from __future__ import annotations

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from hydra import compose, initialize_config_dir
from PIL import Image

from anomaly.data.folder import Sample
from anomaly.data.geometry import resolve_position_pixels
from anomaly.data.transforms import Preprocess
from anomaly.errors import ConfigError, ModelFolderError
from anomaly.model_folder import load_detector, save_model_folder
from anomaly.scoring.addons import POSITION_SCORE
from anomaly.scoring.calibration import Calibration
from anomaly.scoring.detector import Detector
from anomaly.scoring.fitting import calibrate, fit_addons
from anomaly.scoring.maps import MapSettings
from anomaly.scoring.positions import FLOOR, POOL, PositionStats, pooled
from anomaly.scoring.regions import RegionSettings, defect_regions
from anomaly.settings import enabled_addons, recalibrated_map_weight, weigh_map_for_framing
from anomaly.training.factory import build_module
from tests.conftest import ImageIsTheMap, stripes_and_noise, tiny_draem_detector, write_png
from tests.unit.training.test_feature_ae_module import CONF


def test_pooling_averages_cells_of_the_map():
    m = torch.rand(1, 8, 12)
    by_hand = m[0].numpy().reshape(2, POOL, 3, POOL).mean(axis=(1, 3))
    np.testing.assert_allclose(pooled([m])[0][0].numpy(), by_hand, rtol=1e-6)
    # A side that is not a multiple keeps its last, partial cell.
    assert pooled([torch.rand(1, 9, 13)])[0].shape == (1, 3, 4)


def test_statistics_are_each_positions_mean_and_spread_plus_a_floor():
    rng = np.random.default_rng(0)
    maps = rng.random((7, 3, 5)) * np.linspace(0.1, 2, 5)
    stats = PositionStats.fit([torch.from_numpy(m)[None] for m in maps])
    std = maps.std(axis=0, ddof=1)
    np.testing.assert_allclose(stats.mean, maps.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(stats.spread, std + FLOOR * std.mean(), rtol=1e-12)
    assert stats.n_images == 7


def test_a_map_is_standardised_by_hand_at_the_grid_and_at_full_size():
    mean = np.array([[1.0, 2.0], [3.0, 4.0]])
    spread = np.array([[0.5, 1.0], [2.0, 4.0]])
    stats = PositionStats(mean, spread, n_images=5)
    m = torch.tensor([[[2.0, 2.0], [2.0, 2.0]]])
    np.testing.assert_allclose(stats.standardised(m)[0].numpy(), (2.0 - mean) / spread)
    # Constant statistics resize to themselves: (m - 1) / 2 at any size.
    flat = PositionStats(np.ones((2, 3)), np.full((2, 3), 2.0), n_images=5)
    big = torch.rand(1, 8, 12)
    torch.testing.assert_close(flat.standardised(big), (big - 1) / 2)


def test_fitting_needs_two_maps_of_one_size():
    with pytest.raises(ValueError, match="two or more maps of one size"):
        PositionStats.fit([torch.rand(1, 2, 2)])
    with pytest.raises(ValueError, match="of one size"):
        PositionStats.fit([torch.rand(1, 2, 2), torch.rand(1, 2, 3)])


def test_save_and_load_round_trip_and_broken_files_name_the_file(tmp_path):
    stats = PositionStats.fit([torch.rand(1, 3, 4) for _ in range(4)])
    path = tmp_path / "positions.npz"
    stats.save(path)
    again = PositionStats.load(path)
    np.testing.assert_array_equal(again.mean, stats.mean)
    np.testing.assert_array_equal(again.spread, stats.spread)
    assert again.n_images == 4
    np.savez(path, mean=stats.mean, spread=-stats.spread, n_images=4)
    with pytest.raises(ModelFolderError, match="positions.npz.*positive spread"):
        PositionStats.load(path)
    path.write_bytes(b"not a zip")
    with pytest.raises(ModelFolderError, match="positions.npz cannot be read"):
        PositionStats.load(path)


def _read(detector: Detector, path) -> torch.Tensor:
    return detector.preprocess(np.asarray(Image.open(path), dtype=np.float32)[..., None] / 255)


def _photo(path, value_at, border: float, rng) -> Sample:
    """A 32x32 gray photo: noise, a bright border of ``border``, ``value_at`` cells set."""
    a = rng.uniform(0.1, 0.2, (32, 32))
    a[:, :4] = a[:, -4:] = border + rng.uniform(-0.05, 0.05)
    for (y, x), v in value_at.items():
        a[y - 2 : y + 2, x - 2 : x + 2] = v
    Image.fromarray((a * 255).astype(np.uint8)).save(path)
    return Sample(path)


def test_a_defect_fainter_than_the_border_outranks_good_photos_only_when_standardised(
    tmp_path,
):
    """Good photos' maps are highest at their (varying) border; a defect in the middle is
    fainter than the border but unusual where it is."""
    rng = np.random.default_rng(0)
    train = [_photo(tmp_path / f"t{i}.png", {}, rng.uniform(0.6, 0.9), rng) for i in range(20)]
    val = [_photo(tmp_path / f"v{i}.png", {}, rng.uniform(0.6, 0.9), rng) for i in range(8)]
    good = [_photo(tmp_path / f"g{i}.png", {}, rng.uniform(0.6, 0.9), rng) for i in range(6)]
    bad = [_photo(tmp_path / f"b{i}.png", {(16, 16): 0.5}, 0.6, rng) for i in range(3)]
    detector = Detector(
        ImageIsTheMap(),
        Preprocess.create(image_size=32, channels=1),
        MapSettings(smoothing_sigma=0.0),
    )

    def scores(samples):
        images = torch.stack([_read(detector, s.path) for s in samples])
        return detector.scores(detector.inspect(images).maps)

    calibrate(detector, val)
    assert scores(bad).max() < scores(good).min()  # the raw maximum is the border's
    fit_addons(detector, train, {POSITION_SCORE: {}})
    assert detector.positions.n_images == 20
    calibration = calibrate(detector, val)
    assert calibration.positions
    assert scores(bad).min() > scores(good).max()
    # The pixel map is the model's own: standardising is for the image score only.
    images = torch.stack([_read(detector, bad[0].path)])
    torch.testing.assert_close(detector.inspect(images).maps[0], images[0])


def test_with_pixels_the_map_itself_is_standardised_and_its_regions_find_the_defect(tmp_path):
    """The raw map's brightest pixels are a good photo's border; standardised, only the
    defect passes the pixel threshold, and the image score is the same as before."""
    rng = np.random.default_rng(1)
    train = [_photo(tmp_path / f"t{i}.png", {}, rng.uniform(0.6, 0.9), rng) for i in range(20)]
    val = [_photo(tmp_path / f"v{i}.png", {}, rng.uniform(0.6, 0.9), rng) for i in range(8)]
    bad = _photo(tmp_path / "bad.png", {(16, 16): 0.5}, 0.6, rng)
    detector = Detector(
        ImageIsTheMap(),
        Preprocess.create(image_size=32, channels=1),
        MapSettings(smoothing_sigma=0.0),
    )
    fit_addons(detector, train, {POSITION_SCORE: {}})
    images = torch.stack([_read(detector, s.path) for s in [bad, *val]])
    on_score = calibrate(detector, val)
    score_only = detector.scores(detector.inspect(images).maps)
    raw_maps = detector.inspect(images).maps
    calibration = calibrate(detector, val, position_pixels=True)
    assert calibration.positions and calibration.position_pixels
    assert not on_score.position_pixels
    assert detector.standardises_pixels
    maps = detector.inspect(images).maps
    for raw, m in zip(raw_maps, maps, strict=True):
        torch.testing.assert_close(m, detector.positions.standardised(raw))
    # Not standardised twice: the image scores are those of the image-score-only mode.
    np.testing.assert_allclose(detector.scores(maps), score_only, rtol=1e-6)
    # The pixel threshold belongs to the standardised maps: above it, the defect alone.
    standardised_val = np.concatenate([m.numpy().ravel() for m in maps[1:]])
    assert calibration.pixel_threshold == pytest.approx(
        np.quantile(standardised_val, 0.999), rel=0.05
    )
    settings = RegionSettings(opening_radius=0, closing_radius=0, min_region_area=1)
    labels, count = defect_regions(maps[0][0].numpy(), calibration.pixel_threshold, settings)
    assert count == 1 and labels[16, 16] > 0 and not labels[:, :4].any()
    raw_labels, _ = defect_regions(raw_maps[0][0].numpy(), on_score.pixel_threshold, settings)
    # On the raw map the threshold must clear the good photos' borders, so it misses it.
    assert not raw_labels[16, 16]


def test_pixels_auto_asks_whether_the_photos_share_one_framing(tmp_path):
    one = write_png(tmp_path / "one.png", np.zeros((100, 40), np.uint8))
    near = write_png(tmp_path / "near.png", np.zeros((108, 40), np.uint8))
    other = write_png(tmp_path / "other.png", np.zeros((60, 90), np.uint8))
    assert resolve_position_pixels("auto", [one] * 5 + [near] * 5, tile=False)
    assert resolve_position_pixels("auto", [one] * 9 + [other], tile=False)
    assert not resolve_position_pixels("auto", [one] * 8 + [other] * 2, tile=False)
    assert not resolve_position_pixels("auto", [one] * 10, tile=True)
    assert not resolve_position_pixels("auto", [one] * 10, tile=False, used=False)
    assert resolve_position_pixels(True, [], tile=False) is True
    assert resolve_position_pixels(False, [one] * 10, tile=False) is False
    with pytest.raises(ConfigError, match="scoring.position_score.pixels='always'"):
        resolve_position_pixels("always", [one], tile=False, used=False)


def test_a_folder_keeps_the_statistics_and_refuses_to_score_without_them(tmp_path):
    data = stripes_and_noise(tmp_path, train=8, val=4, test=2)
    detector = tiny_draem_detector()
    fit_addons(detector, data["train"], {POSITION_SCORE: {}}, batch_size=4)
    calibrate(detector, data["val"], batch_size=4)
    trainer = pl.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False)
    trainer.strategy.connect(detector.model)
    folder = save_model_folder(
        tmp_path / "model", trainer=trainer, detector=detector, config_yaml="{}", model_name="draem"
    )
    again = load_detector(folder)
    assert again.calibration.positions
    np.testing.assert_array_equal(again.positions.mean, detector.positions.mean)
    x = torch.rand(2, 1, 32, 32)
    np.testing.assert_allclose(
        again.scores(again.inspect(x).maps), detector.scores(detector.inspect(x).maps), rtol=1e-6
    )
    (folder / "positions.npz").unlink()
    with pytest.raises(ModelFolderError, match="standardised per position.*positions.npz"):
        load_detector(folder)


def test_a_calibration_says_whether_it_was_fitted_with_them(tmp_path):
    path = tmp_path / "calibration.json"
    Calibration(1.0, 2.0, positions=True).save(path)
    assert Calibration.load(path).positions is True
    path.write_text('{"image_threshold": 1, "pixel_threshold": 2, "positions": "yes"}')
    with pytest.raises(ModelFolderError, match="positions must be true or false"):
        Calibration.load(path)
    path.write_text('{"image_threshold": 1, "pixel_threshold": 2}')
    assert Calibration.load(path).positions is False  # written before it existed
    assert Calibration.load(path).position_pixels is False
    Calibration(1.0, 2.0, positions=True, position_pixels=True).save(path)
    assert Calibration.load(path).position_pixels is True
    path.write_text('{"image_threshold": 1, "pixel_threshold": 2, "position_pixels": 1}')
    with pytest.raises(ModelFolderError, match="position_pixels must be true or false"):
        Calibration.load(path)


def _cfg(*overrides: str):
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        cfg = compose(
            "config",
            overrides=["data.root=unused", "data.image_size=64", "data.channels=1", *overrides],
        )
    if cfg.model.name == "feature_ae":
        cfg.model.module.backbone.weights = "none"
    return cfg


def _names(*overrides: str, framed: bool = True) -> set[str]:
    cfg = _cfg(*overrides)
    module = build_module(cfg)
    preprocess = Preprocess.create(image_size=64, channels=1)
    return {a.name for a in enabled_addons(cfg, module, preprocess, framed=framed)}


def test_auto_turns_it_on_for_feature_ae_only_and_gives_way_to_the_patch_map_and_area():
    assert _names("model=feature_ae") == {"feature_score", "position_score"}
    assert "position_score" not in _names("model=draem")
    assert "position_score" not in _names("model=draem", "scoring.patch_map.enabled=false")
    assert "position_score" not in _names("model=cae")
    on = ("model=feature_ae", "scoring.position_score.enabled=true")
    assert _names("model=feature_ae", "scoring.patch_map.enabled=true") == {
        "feature_score",
        "patch_map",
    }
    assert "position_score" not in _names("model=feature_ae", "scoring.score=area")
    with pytest.raises(ConfigError, match="position_score.enabled=true cannot go with the patch"):
        _names(*on, "scoring.patch_map.enabled=true")
    with pytest.raises(ConfigError, match="cannot go with scoring.score=area"):
        _names(*on, "scoring.score=area")
    with pytest.raises(ConfigError, match="position_score.enabled=true, but"):
        _names("model=cae", "scoring.position_score.enabled=true")
    assert "position_score" in _names("model=draem", "scoring.patch_map.enabled=false", on[1])


def test_feature_aes_patch_map_joins_by_auto_where_the_photos_are_not_framed_alike():
    # Not one framing: the coarse patch map in the position score's place.
    assert _names("model=feature_ae", framed=False) == {"feature_score", "patch_map"}
    # A position score asked for by name wins over the patch map auto would add.
    on = "scoring.position_score.enabled=true"
    assert _names("model=feature_ae", on, framed=False) == {"feature_score", "position_score"}
    # The fine grid (models trained before patch_grid): auto leaves it off anyway.
    fine = "model.module.patch_grid=fine"
    assert _names("model=feature_ae", fine, framed=False) == {"feature_score", "position_score"}
    assert "patch_map" in _names("model=feature_ae", fine, "scoring.patch_map.enabled=true")
    assert "patch_map" not in _names(
        "model=feature_ae", "scoring.patch_map.enabled=false", framed=False
    )
    # draem's rules do not depend on the framing.
    assert _names("model=draem", framed=False) == _names("model=draem", framed=True)


def _weight(pixels: bool, *overrides: str) -> float:
    cfg = _cfg(*overrides)
    cfg.scoring.position_score.pixels = pixels  # as the training job resolves it
    weigh_map_for_framing(cfg)
    return float(cfg.scoring.feature_score.map_weight)


def test_photos_of_one_framing_give_the_map_the_models_framed_weight():
    assert _weight(True, "model=feature_ae") == 1.0
    assert _weight(False, "model=feature_ae") == 0.25
    # A weight given on the command line decides for every framing.
    assert _weight(True, "model=feature_ae", "scoring.feature_score.map_weight=0.5") == 0.5
    # A model without a framed weight keeps its own.
    assert _weight(True, "model=draem") == 0.5


def test_recalibrating_a_framed_model_follows_the_framing_unless_a_weight_was_given():
    from omegaconf import OmegaConf

    def trained(weight: float, pixels: bool):
        return OmegaConf.create(
            {
                "model": {"map_weight": 0.25, "map_weight_framed": 1.0},
                "scoring": {
                    "feature_score": {"map_weight": weight},
                    "position_score": {"pixels": pixels},
                },
            }
        )

    framed = trained(1.0, True)
    assert recalibrated_map_weight(None, framed, pixels=True) == 1.0
    assert recalibrated_map_weight(None, framed, pixels=False) == 0.25
    assert recalibrated_map_weight(None, trained(0.25, False), pixels=True) == 1.0
    assert recalibrated_map_weight(0.5, framed, pixels=False) == 0.5  # given now
    # Given at training (not the framing's choice): it stands.
    assert recalibrated_map_weight(None, trained(0.5, True), pixels=False) == 0.5
    # A model without a framed weight (draem) keeps its training's; no config: the default.
    draem = OmegaConf.create({"model": {}, "scoring": {"feature_score": {"map_weight": 0.5}}})
    assert recalibrated_map_weight(None, draem, pixels=True) == 0.5
    assert recalibrated_map_weight(None, None, pixels=False) == 0.5
