import json

import numpy as np
import pytest

from anomaly.errors import ModelFolderError
from anomaly.scoring.calibration import (
    Calibration,
    fit_calibration,
    p_values,
    standouts,
    threshold_from,
)


def test_quantile_and_mean_std_thresholds():
    values = np.arange(1, 101, dtype=float)  # 1..100
    assert threshold_from(values, method="quantile", q=0.9) == pytest.approx(
        np.quantile(values, 0.9)
    )
    assert threshold_from(values, method="mean_std", k=2.0) == pytest.approx(
        values.mean() + 2 * values.std()
    )


def test_far_threshold_is_the_conformal_quantile():
    values = np.arange(1.0, 20.0)  # 19 values: (19 + 1) * (1 - 0.1) = 18th smallest
    assert threshold_from(values, method="far", far=0.1) == 18.0
    with pytest.raises(ValueError, match="needs at least 19"):
        threshold_from(np.arange(5.0), method="far", far=0.05)


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"method": "quantile", "q": 1.5}, "q"),
        ({"method": "far", "far": 0.0}, "far"),
        ({"method": "mean_std", "k": float("nan")}, "k"),
        ({"method": "median"}, "method"),
    ],
)
def test_bad_parameters_name_the_key(kwargs, key):
    with pytest.raises(ValueError, match=f"scoring.calibration.{key}"):
        threshold_from(np.ones(3), **kwargs)


def test_p_values_hand_computed():
    validation = np.array([1.0, 2.0, 3.0, 4.0])
    # p = (1 + #{v >= s}) / (n + 1)
    assert p_values(np.array([0.5, 2.0, 2.5, 9.0]), validation).tolist() == pytest.approx(
        [5 / 5, 4 / 5, 3 / 5, 1 / 5]
    )


@pytest.mark.parametrize("alpha", [0.01, 0.05])
def test_conformal_false_alarm_rate_holds_on_held_out_defect_free_scores(alpha):
    # Defect-free scores from a skewed distribution: the guarantee needs no assumption on
    # its shape, only that validation and new defect-free images are exchangeable.
    rng = np.random.default_rng(7)
    rates = []
    for _ in range(200):
        validation = rng.gamma(2.0, 1.0, size=199)
        held_out = rng.gamma(2.0, 1.0, size=500)
        rates.append(np.mean(p_values(held_out, validation) < alpha))
    # E[rate] <= alpha; the mean over 200 repetitions is within a few standard errors.
    assert np.mean(rates) <= alpha + 3 * np.std(rates) / np.sqrt(len(rates))
    # And not absurdly conservative: the rate is close to alpha, not zero.
    assert np.mean(rates) > 0.5 * alpha


def test_fit_calibration_records_only_the_used_parameter():
    cal = fit_calibration(
        np.arange(10.0),
        np.linspace(0, 1, 1001),
        image={"method": "mean_std", "q": 0.5, "k": 1.0, "far": 0.1},
        pixel={"method": "quantile", "q": 0.5, "k": 1.0, "far": 0.1},
        model_id="m",
        fingerprint="f",
    )
    assert cal.params == {
        "image": {"method": "mean_std", "k": 1.0},
        "pixel": {"method": "quantile", "q": 0.5},
    }
    assert cal.pixel_threshold == pytest.approx(0.5)
    assert cal.validation_scores == list(np.arange(10.0)) and cal.n_images == 10


def test_roundtrip_and_human_readable(tmp_path):
    cal = fit_calibration(np.array([0.1, 0.2, 0.3]), np.array([0.0, 0.5]), fingerprint="abc")
    path = tmp_path / "calibration.json"
    cal.save(path)
    text = path.read_text()
    assert text.index("image_threshold") < text.index("validation_scores")  # thresholds first
    assert Calibration.load(path) == cal


def test_hand_edited_threshold_is_used(tmp_path):
    path = tmp_path / "calibration.json"
    fit_calibration(np.array([0.1, 0.2]), np.array([0.1])).save(path)
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
        ('{"image_threshold": NaN, "pixel_threshold": 0.1}', "finite"),
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


def test_standouts_are_tukeys_far_out_values_highest_first():
    scores = np.array([1.0, 2, 3, 4, 5, 6, 7, 8, 30, 25])
    paths = [f"p{i}.png" for i in range(10)]
    # Quartiles of the ten by linear interpolation: 3.25 and 7.75; far out above
    # 7.75 + 3 * 4.5 = 21.25.
    assert standouts(scores, paths) == [
        {"path": "p8.png", "score": 30.0},
        {"path": "p9.png", "score": 25.0},
    ]
    q1, q3 = np.percentile(scores, [25, 75])
    assert (q1, q3) == (3.25, 7.75)
    # An ordinary tail, and too few photos for quartiles: nothing.
    # (quartiles 3 and 7: far out above 19)
    assert standouts(np.array([1.0, 2, 3, 4, 5, 6, 7, 8, 15]), paths[:9]) == []
    assert standouts(np.array([1.0, 1, 1, 1, 1, 1, 100]), paths[:7]) == []
    with pytest.raises(ValueError, match="3 scores for 2 paths"):
        standouts(np.zeros(3), paths[:2])


def test_standouts_are_kept_in_the_file_and_checked(tmp_path):
    scores = np.array([1.0, 2, 3, 4, 5, 6, 7, 8, 30])
    cal = fit_calibration(scores, np.array([0.1]), paths=[f"p{i}.png" for i in range(9)])
    assert cal.standouts == [{"path": "p8.png", "score": 30.0}]
    path = tmp_path / "calibration.json"
    cal.save(path)
    assert Calibration.load(path) == cal
    # Files written before the field: none.
    raw = json.loads(path.read_text())
    del raw["standouts"]
    path.write_text(json.dumps(raw))
    assert Calibration.load(path).standouts == []
    raw["standouts"] = ["p8.png"]
    path.write_text(json.dumps(raw))
    with pytest.raises(ModelFolderError, match="standouts must be a list of"):
        Calibration.load(path)
