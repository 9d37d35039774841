"""data.channels=auto: colour input where most training photos have colour."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from anomaly.data import colour
from anomaly.data.colour import colour_count, resolve_channels
from anomaly.errors import ConfigError
from tests.conftest import write_png


def _photos(tmp_path, n_colour: int, n_gray: int, *, gray_as_rgb: bool = False) -> list:
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n_colour + n_gray):
        base = rng.random((12, 10))
        if i < n_colour:
            image = np.stack([base, base * 0.5, 1 - base], axis=-1)  # real hue
        elif gray_as_rgb:
            image = np.repeat(base[..., None], 3, axis=-1)  # a gray scene in an RGB file
        else:
            image = base
        paths.append(write_png(tmp_path / f"{i:02d}.png", image))
    return paths


def test_gray_photos_give_a_gray_model_even_saved_as_rgb(tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="anomaly.data.colour"):
        assert resolve_channels("auto", _photos(tmp_path / "l", 0, 5)) == 1
        assert resolve_channels("auto", _photos(tmp_path / "rgb", 0, 5, gray_as_rgb=True)) == 1
    assert "data.channels=auto: gray (1), 0 of 5 sampled training photos in colour" in caplog.text
    assert "override with data.channels=3" in caplog.text


def test_colour_photos_give_a_colour_model(tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="anomaly.data.colour"):
        assert resolve_channels("auto", _photos(tmp_path, 5, 0)) == 3
    assert "RGB (3), 5 of 5 sampled" in caplog.text
    assert "override with data.channels=1" in caplog.text


@pytest.mark.parametrize(("n_colour", "n_gray", "expected"), [(3, 3, 3), (2, 4, 1), (4, 2, 3)])
def test_most_photos_decide(tmp_path, n_colour, n_gray, expected):
    assert resolve_channels("auto", _photos(tmp_path, n_colour, n_gray)) == expected


def test_a_few_photos_spread_over_the_list_are_decoded(tmp_path, monkeypatch):
    paths = _photos(tmp_path, 20, 20)  # the first half in colour
    read = []
    real = colour.read_native
    monkeypatch.setattr(colour, "read_native", lambda p: read.append(p) or real(p))
    assert colour_count(paths) == (colour.SAMPLE // 2, colour.SAMPLE)
    assert len(read) == colour.SAMPLE and (read[0], read[-1]) == (paths[0], paths[-1])


def test_unreadable_files_are_passed_over(tmp_path):
    paths = _photos(tmp_path, 2, 0)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    assert colour_count([broken, *paths]) == (2, 2)
    # Nothing readable: gray, and the data module reports the files.
    assert resolve_channels("auto", [broken]) == 1


@pytest.mark.parametrize("given", [1, 3])
def test_a_given_number_stands_without_reading(given):
    assert resolve_channels(given, ["/no/such/photo.png"]) == given


@pytest.mark.parametrize("bad", ["rgb", 2, True, None])
def test_anything_else_names_the_key(bad):
    with pytest.raises(ConfigError, match=r"data\.channels=.*auto.*1 \(gray\).*3 \(RGB\)"):
        resolve_channels(bad, [])
