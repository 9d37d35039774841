"""A photo that cannot be judged is never passed as good.

Whatever makes a verdict impossible (a file the reader refuses, or a model that answers
NaN), every path that turns images into rows (``score_folder``, ``evaluate`` and the
pyfunc model's ``predict_images``) reports the image as an error with the reason, and no
NaN reaches a score or p-value column.
"""

from __future__ import annotations

import csv
import io
import math

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from anomaly.data.folder import Sample
from anomaly.data.transforms import Preprocess
from anomaly.errors import DataError
from anomaly.scoring.calibration import Calibration
from anomaly.scoring.detector import Detector
from anomaly.scoring.evaluation import evaluate
from anomaly.scoring.maps import MapSettings
from anomaly.scoring.regions import RegionSettings
from anomaly.scoring.results import score_folder
from anomaly.scoring.verdict import analyse, unjudgeable
from tests.conftest import write_png

NON_FINITE = "the model produced a non-finite score (nan)"


class DivergesOnBright(nn.Module):
    """'Reconstructs' every image as flat 0.5 gray, except that images brighter than 0.9
    on average get NaN, as from a network whose activations overflowed on them."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bright = x.mean(dim=(1, 2, 3), keepdim=True) > 0.9
        return torch.where(bright, torch.full_like(x, math.nan), torch.full_like(x, 0.5))


def _detector(validation_scores: list[float] | None = None) -> Detector:
    return Detector(
        model=DivergesOnBright(),
        preprocess=Preprocess.create(image_size=16, channels=1),
        maps=MapSettings(kind="l2", smoothing_sigma=0),
        calibration=Calibration(
            image_threshold=0.1,
            pixel_threshold=0.2,
            validation_scores=[0.0, 0.01, 0.02, 0.3]
            if validation_scores is None
            else validation_scores,
        ),
        model_id="m1",
    )


def _nan_tiff_bytes() -> bytes:
    values = np.full((16, 16), 0.5, dtype=np.float32)
    values[3, 4] = np.nan
    buffer = io.BytesIO()
    Image.fromarray(values).save(buffer, format="TIFF")
    return buffer.getvalue()


def _rows(path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "in"
    write_png(root / "flat.png", np.full((16, 16), 0.5))  # score ~0: good
    spot = np.full((16, 16), 0.5)
    spot[4:10, 4:10] = 1.0
    write_png(root / "spot.png", spot)  # (1 - 0.5)^2 = 0.25: defective
    write_png(root / "sub" / "white.png", np.ones((16, 16)))  # the model answers NaN
    (root / "nan.tif").write_bytes(_nan_tiff_bytes())
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(root / "anim.gif")
    (root / "notes.txt").write_text("shift 3\n")
    (root / ".DS_Store").write_bytes(b"\x00")  # hidden: ignored
    return root


def test_unjudgeable_names_the_score_or_the_map():
    assert unjudgeable(0.3, np.zeros((4, 4))) == ""
    assert unjudgeable(math.nan, np.zeros((4, 4))).startswith(NON_FINITE)
    assert "non-finite score (inf)" in unjudgeable(math.inf, np.zeros((4, 4)))
    # A finite score (an area score counts pixels, and NaN > t is false) over a NaN map.
    bad_map = np.zeros((4, 4))
    bad_map[0, :2] = np.nan
    assert "non-finite anomaly map (2 of 16 values NaN or infinite)" in unjudgeable(0.0, bad_map)
    assert "score the image again" in unjudgeable(math.nan, bad_map)


def test_every_file_is_scored_or_listed_and_no_nan_is_written(folder, tmp_path):
    out = tmp_path / "out"
    summary = score_folder(_detector(), folder, out)
    scores = {r["path"]: r for r in _rows(out / "scores.csv")}
    errors = {r["path"]: r["reason"] for r in _rows(out / "errors.csv")}
    assert set(scores) == {"flat.png", "spot.png"}
    assert set(errors) == {"sub/white.png", "nan.tif", "anim.gif", "notes.txt"}
    assert errors["sub/white.png"].startswith(NON_FINITE)
    assert errors["nan.tif"].startswith("1 of 256 pixels are not finite")
    assert errors["anim.gif"].startswith("unsupported file type '.gif'")
    assert errors["notes.txt"].startswith("unsupported file type '.txt'")
    for row in scores.values():
        assert math.isfinite(float(row["score"])) and math.isfinite(float(row["p_value"]))
    assert scores["spot.png"]["is_defective"] == "1" and scores["flat.png"]["is_defective"] == "0"
    # No pictures for an image without a verdict.
    assert not (out / "masks" / "sub" / "white.png").exists()
    assert (out / "masks" / "spot.png").is_file()
    assert (summary.n_images, summary.n_scored, summary.n_errors) == (6, 2, 4)


def test_the_p_value_is_absent_not_nan_without_validation_scores(folder, tmp_path):
    score_folder(_detector(validation_scores=[]), folder, tmp_path / "out")
    rows = _rows(tmp_path / "out" / "scores.csv")
    assert [r["p_value"] for r in rows] == ["", ""]
    assert all(math.isfinite(float(r["score"])) for r in rows)


def test_analyse_gives_an_error_instead_of_a_verdict():
    detector = _detector()
    images = torch.stack([torch.full((1, 16, 16), 0.5), torch.ones(1, 16, 16)])
    good, bad = analyse(
        detector,
        detector.inspect(images),
        [(16, 16), (20, 24)],
        image_threshold=0.1,
        pixel_threshold=0.2,
        regions=RegionSettings(),
    )
    assert good.error == "" and good.p_value == pytest.approx(1.0)  # score 0: all 4 >= it
    assert bad.error.startswith(NON_FINITE)
    assert bad.p_value is None and bad.n_regions == 0
    assert bad.is_defective  # fail-safe: a caller that ignored the error would stop the part


def test_a_folder_without_image_files_names_what_it_holds(tmp_path):
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(tmp_path / "only.gif")
    with pytest.raises(DataError, match=r"no image files found .* \(only 1 file\(s\), e\.g\. "
                       r"only\.gif\); nothing to score \(supported: \.bmp"):  # fmt: skip
        score_folder(_detector(), tmp_path, tmp_path / "out")


def test_evaluate_lists_an_unjudged_image_and_measures_the_others(folder):
    samples = [
        Sample(folder / "flat.png", 0, "good"),
        Sample(folder / "spot.png", 1, "spot"),
        Sample(folder / "sub" / "white.png", 1, "spot"),
        Sample(folder / "nan.tif", 0, "good"),
    ]
    evaluation = evaluate(_detector(), samples, pixel_metrics_at=None)
    reasons = {path.name: reason for path, reason in evaluation.errors}
    assert set(reasons) == {"white.png", "nan.tif"}
    assert reasons["white.png"].startswith(NON_FINITE)
    assert reasons["nan.tif"].startswith("1 of 256 pixels are not finite")
    assert np.isnan(evaluation.scores[2:]).all() and np.isfinite(evaluation.scores[:2]).all()
    assert evaluation.metrics["image_auroc"] == 1.0  # from flat.png and spot.png alone


def test_the_pyfunc_model_reports_errors_not_nan_verdicts(folder):
    from anomaly.tracking.model import predict_images

    nan_array = np.full((16, 16), 0.5)
    nan_array[0, 0] = np.nan
    frame = predict_images(
        _detector(),
        [
            nan_array,
            np.full((16, 16), 0.5),
            ("camera-7.tif", _nan_tiff_bytes()),
            np.ones((16, 16)),
            str(folder / "anim.gif"),
        ],
    )
    errors = frame["error"].tolist()
    assert errors[0].startswith("1 of 256 values of the image array are not finite")
    assert errors[1] == ""
    assert errors[2].startswith("1 of 256 pixels are not finite")
    assert errors[3].startswith(NON_FINITE)
    assert errors[4].startswith("unsupported file type '.gif'")
    judged = frame[frame["error"] == ""]
    assert len(judged) == 1 and np.isfinite(judged[["score", "p_value"]].to_numpy(float)).all()
    # The others carry no verdict at all (missing, as for an unreadable file).
    unjudged = frame[frame["error"] != ""]
    assert unjudged[["score", "p_value", "is_defective"]].isna().all().all()
