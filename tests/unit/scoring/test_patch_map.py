"""The patch map inside the detector: fitted on training images, scaled at calibration,
added to every map the detector makes, and kept in the model folder."""

from __future__ import annotations

import json

import numpy as np
import pytest
import pytorch_lightning as pl
import torch

from anomaly.data.folder import Sample
from anomaly.data.transforms import Preprocess
from anomaly.errors import ConfigError, DataError, ModelFolderError
from anomaly.model_folder import load_detector, save_model_folder
from anomaly.models.inspection import Wants
from anomaly.scoring.addons import PATCH_MAP
from anomaly.scoring.calibration import CALIBRATION_FILE, Calibration
from anomaly.scoring.detector import Detector
from anomaly.scoring.evaluation import evaluate
from anomaly.scoring.fitting import calibrate, fit_patches
from anomaly.scoring.maps import MapSettings
from anomaly.scoring.patches import PATCHES_FILE, PatchMemory, patch_scale
from anomaly.scoring.stream import inspect_batches
from anomaly.training.draem import DraemModule
from anomaly.training.ensemble import EnsembleModule
from tests.conftest import TINY_DRAEM, stripes_and_noise, tiny_draem_detector

MEMBER = {k: v for k, v in TINY_DRAEM.items() if k != "_target_"}


_detector = tiny_draem_detector


@pytest.fixture
def data(tmp_path):
    """Stripes for training and validation; stripes and noise images for the test."""
    return stripes_and_noise(tmp_path, train=16, val=6, test=3)


def _maps(detector, samples):
    out, images = [], []
    for batch, inspected in inspect_batches(detector, samples, batch_size=4):
        out += inspected.maps
        images.append(batch["image"])
    return out, torch.cat(images)


def test_calibration_scales_the_patch_map_and_every_map_then_includes_it(data):
    detector = _detector()
    own, _ = _maps(detector, data["val"])
    memory = fit_patches(detector, data["train"], batch_size=4, coreset=0.5)
    # The tiny U-Net's bottleneck: 16 channels on an 8x8 grid, 64 positions per image.
    assert memory.bank.shape == (512, 16) and memory.n_positions == 1024
    assert detector.calibration is None
    # Fitted, not yet calibrated: the maps are still the model's own.
    unscaled, images = _maps(detector, data["val"])
    for a, b in zip(own, unscaled, strict=True):
        torch.testing.assert_close(a, b)

    calibration = calibrate(detector, data["val"], batch_size=4, patch_weight=0.5)
    patch = detector.patch_maps(images)
    expected = patch_scale(torch.stack(own).numpy(), torch.stack(patch).numpy(), weight=0.5)
    assert calibration.patch_scale == pytest.approx(expected, rel=1e-6)
    assert calibration.patch_scale > 0
    combined, _ = _maps(detector, data["val"])
    for mine, base, extra in zip(combined, own, patch, strict=True):
        torch.testing.assert_close(mine, base + calibration.patch_scale * extra)
    # The pixel threshold belongs to the map with the patch map in it.
    values = torch.stack(combined).numpy().ravel()
    assert calibration.pixel_threshold == pytest.approx(np.quantile(values, 0.999), rel=1e-5)

    # Calibrating again does not count the patch map twice.
    again = calibrate(detector, data["val"], batch_size=4, patch_weight=0.5)
    assert again.patch_scale == pytest.approx(calibration.patch_scale, rel=1e-9)
    # The noise images lie far from the stripes' positions: the patch map ranks them first.
    noise = detector.patch_maps(_maps(detector, data["test"])[1])
    assert min(m.max() for m in noise[3:]) > max(m.max() for m in noise[:3])
    evaluation = evaluate(detector, data["test"], batch_size=4, pixel_metrics_at=None)
    assert evaluation.metrics["image_auroc"] == 1.0


def test_a_calibration_without_patch_scale_leaves_the_map_to_the_model(data):
    detector = _detector()
    fit_patches(detector, data["train"], batch_size=4)
    calibrate(detector, data["val"], batch_size=4)
    x = torch.rand(2, 1, 32, 32)
    with_patches = detector.anomaly_maps(x)
    detector.calibration.patch_scale = 0.0
    plain = detector.anomaly_maps(x)
    detector.patches = None
    torch.testing.assert_close(plain, detector.anomaly_maps(x))
    assert not all(torch.equal(a, b) for a, b in zip(with_patches, plain, strict=True))


def test_an_images_patch_map_does_not_depend_on_its_batch(data):
    detector = _detector()
    fit_patches(detector, data["train"], batch_size=4)
    # Defect-free images lie close to the memory: small distances beside the features'
    # size, where float32 rounding of batched products used to pick another neighbour.
    _, x = _maps(detector, [*data["val"], *data["test"]])
    together = torch.stack(detector.patch_maps(x))
    alone = torch.stack([detector.patch_maps(x[i : i + 1])[0] for i in range(len(x))])
    torch.testing.assert_close(together, alone, rtol=0, atol=0)
    torch.testing.assert_close(
        torch.stack(detector.patch_maps(x[3:])), together[3:], rtol=0, atol=0
    )


def test_fitting_skips_unreadable_images_and_needs_two(data, tmp_path, caplog):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    detector = _detector()
    fit_patches(detector, [*data["train"][:3], Sample(broken, 0, "good")])
    assert detector.patches.n_images == 3 and "broken.png" in caplog.text
    with pytest.raises(DataError, match="at least two readable training images, got 1"):
        fit_patches(_detector(), [data["train"][0], Sample(broken, 0, "good")])


def test_an_ensembles_patch_features_are_its_members_side_by_side():
    torch.manual_seed(0)
    ensemble = EnsembleModule(member=TINY_DRAEM, members=2, scales=[1.0, 0.5])
    x = torch.rand(2, 1, 32, 32)
    features = ensemble.inspect(x, Wants(map=False, patch_features=True)).patch_features
    # The second member sees 16x16 and has a 4x4 bottleneck, resized to the first's 8x8.
    assert features.shape == (2, 32, 8, 8)
    first = ensemble.members[0].reconstructive.encode(x)
    torch.testing.assert_close(features[:, :16], first)


def test_models_without_feature_maps_are_refused_with_the_key():
    class Flat(torch.nn.Module):
        def forward(self, x):
            return x

    detector = Detector(Flat(), Preprocess.create(image_size=16, channels=1), MapSettings())
    assert not detector.supports(PATCH_MAP)
    with pytest.raises(ConfigError, match="scoring.patch_map.enabled=false"):
        fit_patches(detector, [])
    tiled = Detector(
        DraemModule(**MEMBER), Preprocess.create(image_size=16, channels=1, tile=True),
        MapSettings(),
    )  # fmt: skip
    assert not tiled.supports(PATCH_MAP)


def _folder(tmp_path, detector):
    trainer = pl.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False)
    trainer.strategy.connect(detector.model)
    return save_model_folder(
        tmp_path / "model",
        trainer=trainer,
        detector=detector,
        config_yaml="{}",
        model_name="draem",
    )


def test_the_model_folder_keeps_the_memory_and_says_what_is_missing(data, tmp_path):
    detector = _detector()
    fit_patches(detector, data["train"], batch_size=4)
    calibrate(detector, data["val"], batch_size=4)
    folder = _folder(tmp_path, detector)
    loaded = load_detector(folder)
    x = torch.rand(2, 1, 32, 32)
    for a, b in zip(detector.anomaly_maps(x), loaded.anomaly_maps(x), strict=True):
        torch.testing.assert_close(a, b)

    # A memory of another network's features fails at load, naming the file.
    PatchMemory(bank=np.zeros((4, 3), np.float32)).save(folder / PATCHES_FILE)
    with pytest.raises(ModelFolderError, match=r"patches\.npz does not fit"):
        load_detector(folder)
    (folder / PATCHES_FILE).unlink()
    with pytest.raises(ModelFolderError, match=r"patches\.npz is missing.*anomaly calibrate"):
        load_detector(folder)
    # Without its patch map the thresholds of the model's map alone load fine.
    raw = json.loads((folder / CALIBRATION_FILE).read_text())
    raw["patch_scale"] = 0
    (folder / CALIBRATION_FILE).write_text(json.dumps(raw))
    assert load_detector(folder).patch_scale == 0.0
    raw["patch_scale"] = -1
    (folder / CALIBRATION_FILE).write_text(json.dumps(raw))
    with pytest.raises(ModelFolderError, match="patch_scale must be a finite number >= 0"):
        Calibration.load(folder / CALIBRATION_FILE)
