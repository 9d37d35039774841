"""data.upright: photos lying the other way round from the input are turned, maps turned back."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from anomaly.data.dataset import ImageDataset
from anomaly.data.folder import Sample
from anomaly.data.geometry import resolve_upright
from anomaly.data.transforms import Preprocess, resize_image, resize_map, to_tensor
from anomaly.errors import ConfigError
from anomaly.models.inspection import MAP, Inspection, Wants
from anomaly.scoring.detector import Detector
from anomaly.scoring.evaluation import evaluate
from anomaly.scoring.maps import MapSettings
from anomaly.scoring.regions import RegionSettings
from anomaly.scoring.verdict import analyse
from tests.conftest import ImageIsTheMap, write_png

TALL = Preprocess.create(image_size=(32, 16), channels=1, upright=True)


def test_a_photo_lying_the_other_way_is_transposed_before_it_is_resized():
    wide = np.random.default_rng(0).random((20, 50, 1)).astype(np.float32)
    expected = resize_image(to_tensor(np.swapaxes(wide, 0, 1)), (32, 16))
    torch.testing.assert_close(TALL(wide), expected)
    # A photo already lying as the input does, a square one, or upright off: as before.
    tall = np.random.default_rng(1).random((50, 20, 1)).astype(np.float32)
    torch.testing.assert_close(TALL(tall), resize_image(to_tensor(tall), (32, 16)))
    assert not TALL.turns(30, 30)
    plain = Preprocess.create(image_size=(32, 16), channels=1)
    torch.testing.assert_close(plain(wide), resize_image(to_tensor(wide), (32, 16)))
    # A square input has no orientation to turn photos to.
    assert not Preprocess.create(image_size=32, channels=1, upright=True).turns(20, 50)


def test_a_map_goes_back_to_the_photos_orientation():
    m = torch.arange(32 * 16, dtype=torch.float32).reshape(1, 32, 16)
    torch.testing.assert_close(TALL.to_photo(m, (16, 32)), m.transpose(-1, -2))
    torch.testing.assert_close(TALL.to_photo(m, (64, 32)), resize_map(m, (64, 32)))


def test_settings_are_checked_and_stored():
    with pytest.raises(ConfigError, match="data.upright applies to resize mode"):
        Preprocess.create(image_size=32, channels=1, tile=True, upright=True)
    with pytest.raises(ConfigError, match="data.upright"):
        Preprocess.create(image_size=32, channels=1, upright="auto")
    assert Preprocess.create(**TALL.to_dict()) == TALL
    old = {k: v for k, v in TALL.to_dict().items() if k != "upright"}
    assert Preprocess.create(**old).upright is False  # a model folder saved before


def test_auto_turns_photos_when_a_tenth_or_more_lie_the_other_way(tmp_path):
    tall = write_png(tmp_path / "tall.png", np.zeros((90, 30), np.uint8))
    wide = write_png(tmp_path / "wide.png", np.zeros((20, 50), np.uint8))
    square = write_png(tmp_path / "square.png", np.zeros((40, 40), np.uint8))
    assert resolve_upright("auto", [tall] * 8 + [wide] * 2, [96, 32], tile=False)
    assert not resolve_upright("auto", [tall] * 19 + [wide], [96, 32], tile=False)
    assert not resolve_upright("auto", [tall] * 5 + [square] * 5, [96, 32], tile=False)
    # A wide input turns the tall photos.
    assert resolve_upright("auto", [wide] * 5 + [tall] * 5, [32, 96], tile=False)
    assert not resolve_upright("auto", [tall, wide], [64, 64], tile=False)
    assert not resolve_upright("auto", [tall, wide], [32, 96], tile=True)
    assert resolve_upright(True, [], [64, 64], tile=False) is True
    with pytest.raises(ConfigError, match="data.upright='sometimes'"):
        resolve_upright("sometimes", [], [64, 64], tile=False)


def test_a_wide_photos_map_and_mask_lie_where_its_defect_is(tmp_path):
    """The map of a turned photo, at the photo's size, is the photo's own (bright) spot."""
    photo = np.zeros((40, 80), np.uint8)
    photo[5:15, 50:70] = 255  # the "defect": near the top, right of the middle
    path = write_png(tmp_path / "wide.png", photo)
    mask_path = write_png(tmp_path / "wide_mask.png", photo)
    detector = Detector(
        ImageIsTheMap(),
        Preprocess.create(image_size=(64, 32), channels=1, upright=True),
        MapSettings(smoothing_sigma=0.0),
    )
    sample = Sample(path, 1, "spot", mask_path=mask_path)
    item = ImageDataset([sample], detector.preprocess, with_masks=True)[0]
    assert item["image"].shape == (1, 64, 32)
    # The model-size mask is turned with the image.
    torch.testing.assert_close(item["mask"], (item["image"] > 0.5).float())
    inspected = detector.inspect(item["image"][None])
    (result,) = analyse(
        detector,
        inspected,
        [(40, 80)],
        image_threshold=0.5,
        pixel_threshold=0.5,
        regions=RegionSettings(),
    )
    full = result.score_map
    assert full.shape == (40, 80)
    assert full[5:15, 50:70].mean() > 0.9 and full[photo == 0].mean() < 0.05
    # The one region found is the spot, where the photo has it.
    assert result.n_regions == 1
    ys, xs = np.nonzero(result.labels)
    assert ys.min() >= 3 and ys.max() <= 16 and xs.min() >= 48 and xs.max() <= 71
    good = Sample(write_png(tmp_path / "good.png", np.zeros((40, 80), np.uint8)), 0, "good")
    evaluation = evaluate(detector, [sample, good], batch_size=2)
    assert evaluation.metrics["pixel_auroc"] > 0.99
