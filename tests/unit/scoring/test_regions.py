import numpy as np
import pytest

from anomaly.errors import ConfigError
from anomaly.scoring.regions import REGION_COLUMNS, RegionSettings, defect_regions, region_table


def test_small_regions_are_dropped_and_ids_are_consecutive():
    score = np.zeros((20, 20))
    score[2:8, 2:8] = 1.0  # 36 px
    score[15, 15] = 1.0  # 1 px
    score[12:14, 12:14] = 0.8  # 4 px
    labels, count = defect_regions(score, 0.5, RegionSettings(0, 0, min_region_area=4))
    assert count == 2 and set(np.unique(labels)) == {0, 1, 2}
    assert not labels[15, 15]


def test_opening_removes_specks_and_closing_fills_gaps():
    score = np.zeros((30, 30))
    score[5:15, 5:15] = 1.0
    score[9, 5:15] = 0.0  # a one-pixel crack through the region
    score[25, 25] = 1.0  # a speck
    labels, count = defect_regions(score, 0.5, RegionSettings(1, 2, min_region_area=1))
    assert count == 1 and labels[9, 10] and not labels[25, 25]


def test_region_table_values():
    score = np.zeros((10, 12))
    score[2:4, 3:7] = 0.5
    score[3, 6] = 0.9
    labels, _ = defect_regions(score, 0.1, RegionSettings(0, 0, 1))
    table = region_table(labels, score, image="a/b.png")
    assert tuple(table.columns) == REGION_COLUMNS
    row = table.iloc[0]
    assert (row.bbox_min_row, row.bbox_min_col, row.bbox_max_row, row.bbox_max_col) == (2, 3, 4, 7)
    assert row.area_px == 8 and row.centroid_row == 2.5 and row.centroid_col == 4.5
    assert row.max_score == pytest.approx(0.9)
    assert row.mean_score == pytest.approx((7 * 0.5 + 0.9) / 8)
    assert row.image == "a/b.png"


def test_empty_table_keeps_columns():
    table = region_table(np.zeros((4, 4), np.int32), np.zeros((4, 4)), image="x")
    assert tuple(table.columns) == REGION_COLUMNS and table.empty


def test_settings_are_validated():
    with pytest.raises(ConfigError, match="scoring.min_region_area"):
        RegionSettings(min_region_area=-1)


@pytest.mark.parametrize("seed", range(6))
def test_cropped_cleaning_equals_whole_image_cleaning(seed):
    from skimage import measure, morphology

    rng = np.random.default_rng(seed)
    score = np.zeros((120, 90))
    for _ in range(int(rng.integers(1, 5))):  # a few blobs and specks, some at the borders
        y, x = rng.integers(0, 120), rng.integers(0, 90)
        h, w = rng.integers(1, 12, size=2)
        score[y : y + h, x : x + w] = rng.uniform(0.5, 1.0)
    score += (rng.random(score.shape) > 0.995) * 0.9
    settings = RegionSettings(
        opening_radius=int(rng.integers(0, 3)),
        closing_radius=int(rng.integers(0, 4)),
        min_region_area=1,
    )
    labels, count = defect_regions(score, 0.4, settings)
    whole = score > 0.4
    if settings.opening_radius:
        whole = morphology.opening(whole, morphology.disk(settings.opening_radius))
    if settings.closing_radius:
        whole = morphology.closing(whole, morphology.disk(settings.closing_radius))
    reference = measure.label(whole, connectivity=2)
    assert count == reference.max()
    assert np.array_equal(labels > 0, reference > 0)
    assert np.array_equal(measure.label(labels > 0, connectivity=2), reference)
