"""data.image_size=auto: the input keeps the training photos' aspect."""

from __future__ import annotations

import numpy as np
import pytest

from anomaly.data.geometry import auto_size, photo_sizes, resolve_image_size
from anomaly.errors import ConfigError
from tests.conftest import write_png


def test_a_tall_photo_stays_tall_at_the_short_side():
    # KolektorSDD: 398 wide, about 1000 tall; aspect 2.51 -> 224 x 562 -> 560.
    assert auto_size([(1006, 398), (1000, 398), (999, 398)], short_side=224) == (560, 224)


def test_a_wide_photo_and_a_square():
    assert auto_size([(300, 450)], short_side=128) == (128, 192)
    assert auto_size([(500, 500), (510, 490)], short_side=128) == (128, 128)


def test_the_median_decides_and_the_aspect_is_capped():
    sizes = [(100, 100), (120, 100), (130, 100), (1000, 100), (2000, 100)]
    assert auto_size(sizes, short_side=128) == (160, 128)  # median 1.3 -> 166 -> 160
    assert auto_size([(100, 1000)], short_side=64, max_aspect=4.0) == (64, 256)


def test_bad_settings_name_their_key():
    with pytest.raises(ConfigError, match="data.short_side"):
        auto_size([(10, 10)], short_side=8)
    with pytest.raises(ConfigError, match="data.max_aspect"):
        auto_size([(10, 10)], short_side=64, max_aspect=0.5)
    with pytest.raises(ConfigError, match="data.image_size=auto: no readable"):
        auto_size([], short_side=64)
    with pytest.raises(ConfigError, match="data.image_size='big'"):
        resolve_image_size("big", [], short_side=64, max_aspect=4, tile=False)


def test_sizes_come_from_the_files_and_unreadable_ones_are_passed_over(tmp_path):
    tall = write_png(tmp_path / "tall.png", np.zeros((90, 30), np.uint8))
    wide = write_png(tmp_path / "wide.png", np.zeros((20, 50), np.uint8))
    (tmp_path / "broken.png").write_bytes(b"not a png")
    assert photo_sizes([tall, tmp_path / "broken.png", wide]) == [(90, 30), (20, 50)]
    size = resolve_image_size("auto", [tall, tall, wide], short_side=32, max_aspect=4, tile=False)
    assert size == [96, 32]


def test_explicit_sizes_and_tile_mode_pass_through():
    assert resolve_image_size(64, [], short_side=128, max_aspect=4, tile=False) == 64
    assert resolve_image_size([32, 48], [], short_side=128, max_aspect=4, tile=False) == [32, 48]
    # Tile windows are squares of the short side; the photo keeps its shape around them.
    assert resolve_image_size("auto", [], short_side=100, max_aspect=4, tile=True) == [96, 96]


def test_training_photos_are_read_once_and_only_when_asked(tmp_path, monkeypatch):
    from anomaly.data import geometry

    tall = write_png(tmp_path / "tall.png", np.zeros((90, 30), np.uint8))
    reads = []
    real = geometry.photo_sizes
    monkeypatch.setattr(geometry, "photo_sizes", lambda paths: reads.append(1) or real(paths))
    photos = geometry.TrainingPhotos([tall, tall])
    assert resolve_image_size(64, photos, short_side=32, max_aspect=4, tile=False) == 64
    assert reads == []  # every setting given: no header read
    assert resolve_image_size("auto", photos, short_side=32, max_aspect=4, tile=False) == [96, 32]
    assert not geometry.resolve_upright("auto", photos, [96, 32], tile=False)
    assert geometry.resolve_position_pixels("auto", photos, tile=False)
    assert reads == [1]
