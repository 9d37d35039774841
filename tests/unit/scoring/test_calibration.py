import json

import numpy as np
import pytest

from anomaly.errors import ModelFolderError
from anomaly.scoring.calibration import Calibration, fit_quantile


def test_quantile_thresholds():
    scores = np.arange(1, 101, dtype=float)  # 1..100
    pixels = np.linspace(0, 1, 1001)
    cal = fit_quantile(scores, pixels, image_q=0.9, pixel_q=0.5, model_id="m")
    assert cal.image_threshold == pytest.approx(np.quantile(scores, 0.9))
    assert cal.pixel_threshold == pytest.approx(0.5)
    assert cal.n_images == 100
    assert cal.validation_scores == sorted(scores.tolist())
    assert cal.params == {"image_q": 0.9, "pixel_q": 0.5}


def test_rejects_bad_quantile():
    with pytest.raises(ValueError, match="image_q"):
        fit_quantile(np.ones(3), np.ones(3), image_q=1.5)


def test_roundtrip_and_human_readable(tmp_path):
    cal = fit_quantile(np.array([0.1, 0.2, 0.3]), np.array([0.0, 0.5]), fingerprint="abc")
    path = tmp_path / "calibration.json"
    cal.save(path)
    text = path.read_text()
    assert text.index("image_threshold") < text.index("validation_scores")  # thresholds first
    assert Calibration.load(path) == cal


def test_hand_edited_threshold_is_used(tmp_path):
    path = tmp_path / "calibration.json"
    fit_quantile(np.array([0.1, 0.2]), np.array([0.1])).save(path)
    raw = json.loads(path.read_text())
    raw["image_threshold"] = 0.05
    path.write_text(json.dumps(raw))
    assert Calibration.load(path).image_threshold == 0.05


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "not valid JSON"),
        ('{"image_threshold": "high", "pixel_threshold": 0.1}', "image_threshold must be a number"),
        ('{"image_threshold": 0.1}', "pixel_threshold must be a number"),
        ("[1, 2]", "JSON object"),
    ],
)
def test_invalid_files_name_the_file_and_key(tmp_path, content, message):
    path = tmp_path / "calibration.json"
    path.write_text(content)
    with pytest.raises(ModelFolderError, match=message) as info:
        Calibration.load(path)
    assert str(path) in str(info.value)


def test_missing_file(tmp_path):
    with pytest.raises(ModelFolderError, match="missing"):
        Calibration.load(tmp_path / "calibration.json")
