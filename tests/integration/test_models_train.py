"""`anomaly train model=<m>` works end to end for every model of the family."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig

from anomaly.errors import ConfigError, ModelFolderError
from anomaly.jobs.train import train
from anomaly.model_folder import load_detector
from anomaly.scoring.results import score_folder

pytestmark = pytest.mark.integration
CONF = Path(__file__).resolve().parents[2] / "conf"


def _config(root: Path, tmp_path: Path, *overrides: str) -> tuple[DictConfig, str]:
    """The training config for ``root``, outputs and a SQLite store in ``tmp_path``."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        cfg = compose(
            "config",
            overrides=[
                f"data.root={root}",
                "trainer.progress_bar=false",
                f"output_dir={tmp_path / 'out'}",
                f"tracking.uri={uri}",
                *overrides,
            ],
        )
    return cfg, uri


def _train(tiny_mvtec: Path, tmp_path: Path, *overrides: str) -> tuple[dict, str]:
    cfg, uri = _config(
        tiny_mvtec,
        tmp_path,
        "data.image_size=32",
        "data.val_fraction=0.25",
        "trainer.max_epochs=2",
        *overrides,
    )
    return train(cfg), uri


@pytest.mark.parametrize("model", ["dae", "usad", "linear_ae", "dense_ae", "vae", "feature_ae"])
def test_train_calibrate_evaluate_and_score(model, tiny_mvtec, tmp_path):
    result, uri = _train(tiny_mvtec, tmp_path, f"model={model}")
    for name in ("image_auroc", "image_ap", "pixel_auroc", "pixel_aupro"):
        assert 0.0 <= result.metrics[name] <= 1.0, name
    run = MlflowClient(uri).get_run(result.run_id)
    assert run.data.tags["model.name"] == model
    assert run.data.params["evaluation.pixel_metrics_at"] == "native"
    assert "train/loss" in run.data.metrics and run.data.metrics["train_images_per_second"] > 0
    detector = load_detector(result.model_dir)
    summary = score_folder(detector, tiny_mvtec / "test", tmp_path / "scored")
    assert summary.n_scored == 6 and summary.n_errors == 0


def test_an_ensemble_trains_saves_and_scores_as_one_model(tiny_mvtec, tmp_path):
    result, uri = _train(
        tiny_mvtec,
        tmp_path,
        "model=draem",
        "model.ensemble.members=2",
        "model.ensemble.scales=[1.0,0.5]",
        "model.ensemble.overrides=[{},{perlin:{shapes:[perlin,region]}}]",
        "data.flips=[horizontal,vertical]",
    )
    assert 0.0 <= result.metrics["pixel_auroc"] <= 1.0
    run = MlflowClient(uri).get_run(result.run_id)
    assert run.data.params["model.ensemble.members"] == "2"
    flips = {k: v for k, v in run.data.params.items() if k.startswith("data.flips")}
    assert "horizontal" in str(flips) and "vertical" in str(flips), flips
    assert "train/segmentation_loss" in run.data.metrics
    detector = load_detector(result.model_dir)
    assert type(detector.model).__name__ == "EnsembleModule"
    assert [m.discriminative.out.in_channels for m in detector.model.members] == [8, 8]
    assert detector.model.scales == [1.0, 0.5]
    shapes = [m.perlin["shapes"] for m in detector.model.members]
    assert shapes == [["perlin"], ["perlin", "region"]]
    summary = score_folder(detector, tiny_mvtec / "test", tmp_path / "scored")
    assert summary.n_scored == 6 and summary.n_errors == 0
    # The feature score (on by default for draem): a Gaussian over both members' pooled
    # bottlenecks (256 channels x mean, max, spread each), fused at calibration.
    model_dir = Path(result.model_dir)
    assert detector.features.mean.shape == (1536,) and detector.features.n_images == 9
    assert set(detector.calibration.fusion) >= {"map_weight", "feature_std", "map_std"}
    # The patch map (on by default for draem): both members' bottlenecks side by side
    # (the second's 1x1 resized to the first's 2x2 grid), a quarter of 9 x 4 positions.
    assert detector.patches.bank.shape == (9, 512) and detector.patches.n_images == 9
    assert detector.calibration.patch_scale > 0
    (model_dir / "features.npz").unlink()
    with pytest.raises(ModelFolderError, match=r"features\.npz is missing.*anomaly calibrate"):
        load_detector(model_dir)


def test_without_the_feature_score_the_model_folder_has_no_gaussian(tiny_mvtec, tmp_path):
    result, _ = _train(
        tiny_mvtec,
        tmp_path,
        "scoring.feature_score.enabled=false",
        "scoring.patch_map.enabled=false",
    )
    detector = load_detector(result.model_dir)
    assert detector.features is None and detector.calibration.fusion == {}
    assert detector.patches is None and detector.calibration.patch_scale == 0
    assert not (Path(result.model_dir) / "features.npz").exists()
    assert not (Path(result.model_dir) / "patches.npz").exists()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["model=cae", "scoring.feature_score.enabled=true"], "AutoencoderModule gives no image"),
        (["scoring.feature_score.enabled=maybe"], "enabled='maybe' is unknown"),
        (["model=cae", "scoring.patch_map.enabled=true"], "AutoencoderModule gives no feature"),
        (["scoring.patch_map.coreset=2"], r"scoring\.patch_map\.coreset"),
    ],
)
def test_a_feature_score_that_cannot_be_had_fails_before_training(
    tiny_mvtec, tmp_path, overrides, message
):
    with pytest.raises(ConfigError, match=message):
        _train(tiny_mvtec, tmp_path, *overrides)
    assert not (tmp_path / "out" / "model").exists()


def test_an_unknown_flip_fails_before_a_run_is_opened(tiny_mvtec, tmp_path):
    with pytest.raises(ConfigError, match=r"data\.flips.*'diagonal'"):
        _train(tiny_mvtec, tmp_path, "data.flips=[diagonal]")
    assert not (tmp_path / "out" / "model").exists()
    assert not (tmp_path / "mlflow.db").exists()


def test_an_unknown_place_for_pixel_metrics_fails_before_training(tiny_mvtec, tmp_path):
    with pytest.raises(ConfigError, match=r"scoring\.pixel_metrics_at='photo'"):
        _train(tiny_mvtec, tmp_path, "scoring.pixel_metrics_at=photo")
    assert not (tmp_path / "out" / "model").exists()
    assert not (tmp_path / "mlflow.db").exists()


def test_the_default_keeps_a_tall_parts_aspect_and_lengthens_a_short_training(tmp_path):
    """No size or length given: 96x32 photos train at 96x32-shaped input, >= min_steps."""
    import numpy as np

    from tests.conftest import write_png

    rng = np.random.default_rng(0)
    root = tmp_path / "tall"
    for i in range(10):
        rows = np.linspace(0.2, 0.8, 96)[:, None] * np.ones((1, 32))
        write_png(root / f"{i:02d}.png", (rows + 0.02 * rng.random((96, 32))).clip(0, 1))
    cfg, uri = _config(root, tmp_path, "data.short_side=32", "model.min_steps=12")
    result = train(cfg)
    detector = load_detector(result.model_dir)
    assert type(detector.model).__name__ == "FeatureAEModule"
    assert tuple(detector.preprocess.image_size) == (96, 32)
    run = MlflowClient(uri).get_run(result.run_id)
    # 9 training photos are one batch an epoch: 12 epochs to reach 12 batches, not 10.
    assert run.data.params["trainer.max_epochs"] == "12"
    assert run.data.params["data.image_size"] == "[96, 32]"
    # Gray photos: a gray model (data.channels=auto).
    assert run.data.params["data.channels"] == "1" and detector.preprocess.channels == 1
    # Photos of one size: the position score standardises the pixel map too.
    assert run.data.params["scoring.position_score.pixels"] == "True"
    assert detector.calibration.positions and detector.standardises_pixels
    assert detector.fusion.map_weight == 1.0  # model.map_weight_framed
    assert run.data.params["scoring.feature_score.map_weight"] == "1.0"
    # It has no pixel loss: the run's name and card do not claim one.
    assert run.info.run_name == "train-feature_ae"
    assert "| model | feature_ae |" in run.data.tags["mlflow.note.content"]


def test_colour_photos_train_a_colour_model_that_sees_a_change_of_hue(tmp_path):
    """No channels given: colour photos give an RGB model, whose map marks a patch of
    another hue but the same luma, which a gray model cannot see."""
    import numpy as np
    import pandas as pd

    from anomaly.data.images import read_image
    from tests.conftest import write_png

    rng = np.random.default_rng(0)
    root = tmp_path / "colour"

    red = np.array([0.7, 0.3, 0.3])
    # Green of the same luma (0.299 r + 0.587 g + 0.114 b) as the red part around it.
    green = np.array([0.3, 0.3 + 0.4 * 0.299 / 0.587, 0.3])

    def photo(spot: bool = False) -> np.ndarray:
        colours = np.broadcast_to(red, (64, 64, 3)).copy()
        if spot:
            colours[24:40, 24:40] = green
        return (colours + 0.03 * rng.standard_normal((64, 64, 1))).clip(0, 1)

    for i in range(12):
        write_png(root / "train" / "good" / f"{i:02d}.png", photo())
    write_png(root / "new" / "bad.png", photo(spot=True))
    write_png(root / "new" / "good.png", photo())
    cfg, uri = _config(root, tmp_path, "data.short_side=64", "model.min_steps=4")
    result = train(cfg)
    run = MlflowClient(uri).get_run(result.run_id)
    assert run.data.params["data.channels"] == "3"
    detector = load_detector(result.model_dir)
    assert detector.preprocess.channels == 3
    summary = score_folder(detector, root / "new", tmp_path / "scored")
    assert summary.n_scored == 2 and summary.n_converted == 0
    image = detector.preprocess(read_image(root / "new" / "bad.png", channels=3))
    (heat,) = detector.anomaly_maps(image[None])
    inside, outside = heat[..., 26:38, 26:38].mean(), heat[..., :16, :].mean()
    # A gray model of the same photos: 0.94 here, and a score of twice its threshold.
    assert inside > 1.5 * outside
    scores = pd.read_csv(tmp_path / "scored" / "scores.csv").set_index("path")
    assert scores.loc["bad.png", "score"] > 10 * scores.loc["bad.png", "threshold"]
    assert not scores.loc["good.png", "is_defective"]


def test_feature_ae_on_photos_of_every_size_adds_the_coarse_patch_map(
    tmp_path, monkeypatch, caplog
):
    """Photos of three shapes: no per-position map, so the patch map joins it (weight 1)."""
    import numpy as np

    from anomaly.jobs.calibrate import recalibrate
    from anomaly.scoring.calibration import Calibration
    from anomaly.training.feature_ae import FeatureAEModule
    from tests.conftest import write_png

    # Twelve photos stand for the 200 that a real part needs for the memory.
    monkeypatch.setattr(FeatureAEModule, "auto_min_images", {"patch_map": 12})

    rng = np.random.default_rng(0)
    root = tmp_path / "shapes"
    for i in range(12):
        h, w = [(64, 48), (40, 72), (56, 56)][i % 3]
        write_png(root / f"{i:02d}.png", (0.5 + 0.1 * rng.standard_normal((h, w))).clip(0, 1))
    cfg, uri = _config(root, tmp_path, "data.short_side=64", "model.min_steps=2")
    result = train(cfg)
    run = MlflowClient(uri).get_run(result.run_id)
    assert run.data.params["scoring.position_score.pixels"] == "False"
    assert run.data.params["scoring.patch_map.weight"] == "1.0"  # model.patch_weight
    detector = load_detector(result.model_dir)
    assert detector.patches is not None and detector.patches.dim == 192 + 320
    trained = Calibration.load(Path(result.model_dir) / "calibration.json")
    assert trained.patch_scale > 0 and not trained.positions

    def calibrate(*overrides: str) -> float:
        with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
            c = compose(
                "calibrate",
                overrides=[f"model_uri={result.model_dir}", f"data.root={root}",
                           f"tracking.uri={uri}", *overrides],
            )  # fmt: skip
        recalibrate(c)
        return Calibration.load(Path(result.model_dir) / "calibration.json").patch_scale

    # Recalibrated, the patch map keeps the training's weight unless one is given.
    assert calibrate() == pytest.approx(trained.patch_scale)
    assert calibrate("scoring.patch_map.weight=0.5") == pytest.approx(trained.patch_scale / 2)
    # Fewer photos than the model asks for: auto leaves it off and says why.
    monkeypatch.setattr(FeatureAEModule, "auto_min_images", {"patch_map": 13})
    with caplog.at_level("INFO", logger="anomaly.settings"):
        assert calibrate() == 0.0
    assert "scoring.patch_map stays off (auto): 12 training images" in caplog.text
    assert calibrate("scoring.patch_map.enabled=true") > 0


def test_a_defective_photo_in_the_validation_split_is_named_after_training(tmp_path, cli):
    """Five noise photos among forty stripes in train/good: the one held out is named."""
    import numpy as np

    from anomaly.scoring.calibration import Calibration
    from tests.conftest import stripes, write_png

    rng = np.random.default_rng(0)
    root = tmp_path / "part"
    noise = set()
    for i in range(45):
        path = root / "train" / "good" / f"{i:02d}.png"
        if i % 9 == 0:
            noise.add(str(path))
            write_png(path, rng.uniform(0, 1, (32, 32)))
        else:
            write_png(path, stripes(32, rng))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    done = cli("train", f"data.root={root}", "data.short_side=32", "model.min_steps=10",
               "trainer.progress_bar=false", f"output_dir={tmp_path / 'out'}",
               f"tracking.uri={uri}", cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    cal = Calibration.load(tmp_path / "out" / "model" / "calibration.json")
    named = [m["path"] for m in cal.standouts]
    assert named and set(named) <= noise
    assert f"look at:      {named[0]}: a defect-free validation photo scoring" in done.stdout
    client = MlflowClient(uri)
    (run,) = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert (
        f"| look at | `{Path(named[0]).name}`: a validation photo scoring"
        in (run.data.tags["mlflow.note.content"])
    )
