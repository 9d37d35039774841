"""score_folder (scoring/results.py): tables, pictures, errors and a killed run's leftovers."""

import csv
import json

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from anomaly.data.transforms import Preprocess
from anomaly.errors import DataError
from anomaly.scoring.calibration import Calibration
from anomaly.scoring.detector import Detector
from anomaly.scoring.maps import MapSettings
from anomaly.scoring.regions import RegionSettings
from anomaly.scoring.results import score_folder
from tests.conftest import killed_atomic_write, write_png


class Gray(nn.Module):
    """'Reconstructs' every image as flat 0.5 gray: the L2 map is (x - 0.5)^2."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.full_like(x, 0.5)


def _detector(image_threshold=0.1, pixel_threshold=0.2, **preprocess) -> Detector:
    return Detector(
        model=Gray(),
        preprocess=Preprocess.create(image_size=16, channels=1, **preprocess),
        maps=MapSettings(kind="l2", smoothing_sigma=0),
        calibration=Calibration(
            image_threshold=image_threshold,
            pixel_threshold=pixel_threshold,
            validation_scores=[0.0, 0.01, 0.02, 0.3],
        ),
        model_id="m1",
    )


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "in"
    write_png(root / "flat.png", np.full((16, 16), 0.5))  # score 0
    spot = np.full((20, 30), 0.5)
    spot[5:15, 10:20] = 1.0  # (1 - 0.5)^2 = 0.25 > both thresholds
    write_png(root / "sub dir" / "spot.png", spot)
    (root / "broken.png").write_bytes(b"not an image")
    return root


def _rows(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_scores_verdicts_masks_and_errors(folder, tmp_path):
    out = tmp_path / "out"
    summary = score_folder(_detector(), folder, out)
    rows = {r["path"]: r for r in _rows(out / "scores.csv")}
    assert set(rows) == {"flat.png", "sub dir/spot.png"}
    assert float(rows["flat.png"]["score"]) == pytest.approx(0.0, abs=1e-4)
    assert rows["flat.png"]["is_defective"] == "0"
    assert float(rows["sub dir/spot.png"]["score"]) == pytest.approx(0.25, abs=0.01)
    assert rows["sub dir/spot.png"]["is_defective"] == "1"
    assert rows["sub dir/spot.png"]["model_id"] == "m1"
    # The mask is at the original 30x20 size and covers the bright square.
    mask = np.asarray(Image.open(out / "masks" / "sub dir" / "spot.png"))
    assert mask.shape == (20, 30)
    assert mask[10, 15] == 255 and mask[0, 0] == 0
    assert int(rows["sub dir/spot.png"]["defect_area_px"]) == int((mask > 0).sum())
    ys, xs = np.nonzero(mask)
    # Resampling softens the square's edges, so the mask lies within it (1 px slack).
    assert ys.min() >= 4 and ys.max() <= 15 and xs.min() >= 9 and xs.max() <= 20
    errors = _rows(out / "errors.csv")
    assert [e["path"] for e in errors] == ["broken.png"]
    assert "not a readable image" in errors[0]["reason"]
    assert summary.n_images == 3 and summary.n_scored == 2 and summary.n_errors == 1
    saved = json.loads((out / "summary.json").read_text())
    assert saved["n_defective"] == 1 and saved["defect_rate"] == 0.5


def test_p_values_regions_parquet_heatmaps_and_overlays(folder, tmp_path):
    import pandas as pd

    out = tmp_path / "out"
    score_folder(_detector(), folder, out, regions=RegionSettings(0, 0, 1))
    rows = {r["path"]: r for r in _rows(out / "scores.csv")}
    # p = (1 + #{validation >= score}) / 5 with validation scores 0, .01, .02, .3
    # flat.png is 128/255 gray: score ~4e-6, above the validation score 0.0 -> p = 4/5.
    assert float(rows["flat.png"]["p_value"]) == pytest.approx(4 / 5)
    assert float(rows["sub dir/spot.png"]["p_value"]) == pytest.approx(2 / 5)
    assert rows["sub dir/spot.png"]["n_regions"] == "1"
    regions = _rows(out / "regions.csv")
    assert [r["image"] for r in regions] == ["sub dir/spot.png"]
    assert int(regions[0]["area_px"]) == int(rows["sub dir/spot.png"]["largest_region_area"])
    parquet = pd.read_parquet(out / "scores.parquet")
    assert parquet["path"].tolist() == ["flat.png", "sub dir/spot.png"]
    with Image.open(out / "heatmaps" / "sub dir" / "spot.png") as heat:
        # The colour map's 256 colours as a palette; the white square is the hottest.
        assert heat.size == (30, 20) and heat.mode == "P"
        colours = np.asarray(heat.convert("RGB"))
    assert tuple(colours[10, 15]) != tuple(colours[0, 0])
    with Image.open(out / "overlays" / "sub dir" / "spot.png") as over:
        pixels = np.asarray(over.convert("RGB"))
    assert pixels.shape == (20, 30, 3)
    with Image.open(out / "overlays" / "flat.png") as plain:
        assert plain.mode == "L"  # a gray photo with nothing to outline stays gray
    red = (pixels[..., 0] == 255) & (pixels[..., 1] == 0)
    assert red.any() and not red[10, 15]  # outline around the defect, not over it
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["timings"]) == {"decode", "model", "postprocess", "write"}


def test_tile_mode_inspects_at_native_resolution(tmp_path):
    big = np.full((40, 72), 0.5)
    big[20:22, 50:52] = 1.0  # a 2x2 defect, lost if the image were squashed to 16x16
    write_png(tmp_path / "in" / "big.png", big)
    out = tmp_path / "out"
    score_folder(
        _detector(tile=True, tile_stride=8), tmp_path / "in", out, regions=RegionSettings(0, 0, 1)
    )
    (row,) = _rows(out / "scores.csv")
    assert float(row["score"]) == pytest.approx(0.25, abs=1e-3)
    mask = np.asarray(Image.open(out / "masks" / "big.png")) > 0
    assert mask.shape == (40, 72) and mask[20:22, 50:52].all() and mask.sum() == 4


def test_threshold_override_changes_verdicts(folder, tmp_path):
    score_folder(_detector(), folder, tmp_path / "o", image_threshold=0.3)
    assert all(r["is_defective"] == "0" for r in _rows(tmp_path / "o" / "scores.csv"))


def test_progress_reports_every_file(folder, tmp_path):
    calls = []
    score_folder(
        _detector(),
        folder,
        tmp_path / "o",
        batch_size=1,
        progress=lambda done, total: calls.append((done, total)),
    )
    assert calls[0] == (0, 3) and calls[-1] == (3, 3)


def test_empty_folder_is_a_clear_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no image files"):
        score_folder(_detector(), tmp_path / "empty", tmp_path / "o")


def test_a_killed_runs_temporary_files_are_removed_and_the_results_kept(folder, tmp_path):
    out = tmp_path / "out"
    killed = [out / "scores.csv", out / "masks" / "sub dir" / "spot.png", out / "summary.json"]
    for path in killed:
        killed_atomic_write(path)
    (out / "notes.tmp").write_text("not ours")
    assert len(list(out.rglob(".*.tmp"))) == len(killed)
    summary = score_folder(_detector(), folder, out)
    assert summary.n_scored == 2
    assert not list(out.rglob(".*.tmp"))
    assert (out / "notes.tmp").read_text() == "not ours"
    assert (out / "masks" / "sub dir" / "spot.png").is_file()
    assert {r["path"] for r in _rows(out / "scores.csv")} == {"flat.png", "sub dir/spot.png"}
