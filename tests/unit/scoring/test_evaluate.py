import numpy as np
import pytest

from anomaly.data.folder import Sample
from anomaly.errors import ConfigError
from anomaly.scoring.evaluation import evaluate
from tests.conftest import write_png
from tests.unit.scoring.test_results import _detector


@pytest.fixture
def thin_line(tmp_path):
    """32x32 photos for a 16x16 model: two defect-free, two with a crack one pixel wide.

    The cracks lie on odd columns, which nearest-neighbour resizing to 16x16 skips: at the
    model's size their masks are empty.
    """
    samples = []
    for k in range(2):
        good = np.full((32, 32), 0.5)
        good[k, :] = 0.45  # slightly different photos, so image scores differ
        samples.append(Sample(write_png(tmp_path / f"good{k}.png", good), 0, "good"))
    for column in (9, 21):
        image, mask = np.full((32, 32), 0.5), np.zeros((32, 32))
        image[4:28, column] = 1.0
        mask[4:28, column] = 1.0
        path = write_png(tmp_path / f"crack{column}.png", image)
        samples.append(
            Sample(path, 1, "crack", write_png(tmp_path / f"crack{column}_mask.png", mask))
        )
    return samples


def test_native_pixel_metrics_keep_a_crack_that_the_models_size_loses(thin_line):
    at_model = evaluate(_detector(), thin_line, pixel_metrics_at="model").metrics
    native = evaluate(_detector(), thin_line, pixel_metrics_at="native").metrics
    # The same image scores either way: they come from the model-size maps.
    assert at_model["image_auroc"] == native["image_auroc"] == 1.0
    assert "pixel_auroc" not in at_model  # no defective pixel left at 16x16
    assert native["pixel_auroc"] > 0.95
    assert native["pixel_aupro"] > 0.5
    assert native["pixel_auroc/crack"] == native["pixel_auroc"]


def test_pixel_metrics_can_be_left_out(thin_line):
    metrics = evaluate(_detector(), thin_line, pixel_metrics_at=None).metrics
    assert metrics["image_auroc"] == 1.0
    assert not [name for name in metrics if name.startswith("pixel_")]


def test_an_unknown_place_for_pixel_metrics_names_the_config_key(thin_line):
    with pytest.raises(ConfigError, match="scoring.pixel_metrics_at"):
        evaluate(_detector(), thin_line, pixel_metrics_at="photo")


def test_too_many_native_pixels_fall_back_to_the_models_size(tmp_path, caplog):
    samples = [Sample(write_png(tmp_path / "good.png", np.full((40, 48), 0.5)), 0, "good")]
    image, mask = np.full((40, 48), 0.5), np.zeros((40, 48))
    image[10:22, 12:30], mask[10:22, 12:30] = 0.9, 1.0
    path, mask_path = tmp_path / "spot.png", tmp_path / "spot_mask.png"
    samples.append(Sample(write_png(path, image), 1, "spot", write_png(mask_path, mask)))
    at_model = evaluate(_detector(), samples, pixel_metrics_at="model")
    native = evaluate(_detector(), samples, pixel_metrics_at="native")
    limited = evaluate(_detector(), samples, pixel_metrics_at="native", native_pixel_limit=3000)
    assert native.pixel_metrics_at == "native" and at_model.pixel_metrics_at == "model"
    assert native.metrics["pixel_aupro"] != at_model.metrics["pixel_aupro"]
    # Two 40x48 photos are 3840 pixels: over the limit, so measured as at the model's size.
    assert limited.pixel_metrics_at == "model"
    assert limited.metrics == at_model.metrics
    assert "more than 3000 pixels" in caplog.text


def test_an_unreadable_test_image_is_skipped_and_the_others_measured(thin_line, tmp_path):
    broken = Sample(tmp_path / "broken.png", 1, "crack", None)
    broken.path.write_bytes(b"not an image")
    calls = []
    with_broken = evaluate(
        _detector(),
        [*thin_line[:3], broken, thin_line[3]],
        batch_size=2,
        progress=lambda done, total: calls.append((done, total)),
    )
    alone = evaluate(_detector(), thin_line)
    assert with_broken.errors == [(broken.path, with_broken.errors[0][1])]
    assert "broken.png" in str(with_broken.errors[0][0]) and with_broken.errors[0][1]
    assert np.isnan(with_broken.scores[3]) and np.isnan(with_broken.scores).sum() == 1
    assert with_broken.metrics == alone.metrics
    assert alone.errors == []
    # One call per batch, the last one with every image accounted for.
    assert calls == [(2, 5), (4, 5), (5, 5)]


@pytest.mark.parametrize("problem", ["size", "unreadable"])
def test_a_bad_mask_costs_its_image_only_the_pixel_metrics(thin_line, tmp_path, problem):
    image = np.full((32, 32), 0.5)
    image[8:20, 8:20] = 1.0
    mask_path = tmp_path / "spot_mask.png"
    if problem == "size":
        write_png(mask_path, np.ones((16, 16)))
    else:
        mask_path.write_bytes(b"not a mask")
    spot = Sample(write_png(tmp_path / "spot.png", image), 1, "spot", mask_path)
    with_spot = evaluate(_detector(), [*thin_line, spot], pixel_metrics_at="native")
    without = evaluate(_detector(), thin_line, pixel_metrics_at="native")
    # Scored, and counted as a defect in the image metrics of its class...
    assert not np.isnan(with_spot.scores[-1])
    assert with_spot.metrics["image_auroc/spot"] == 1.0
    # ...while its pixels, with no trustworthy mask, are not measured.
    assert with_spot.metrics["pixel_auroc"] == without.metrics["pixel_auroc"]
    assert "pixel_auroc/spot" not in with_spot.metrics
    ((path, reason),) = with_spot.errors
    assert path == mask_path and reason.endswith("(image metrics only)")
