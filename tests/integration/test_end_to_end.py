"""`anomaly train` then `anomaly score` on tiny generated data, checked through MLflow."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from PIL import Image

from anomaly.scoring.calibration import Calibration
from anomaly.scoring.results import SCORES_COLUMNS
from tests.integration.conftest import list_artifacts, spawn_cli

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from tests.conftest import make_tiny_mvtec

    work = tmp_path_factory.mktemp("e2e")
    # Test images are 48x48, larger than the 32x32 model input: masks must come back at 48.
    root = make_tiny_mvtec(work / "data", test_size=48)
    uri = f"sqlite:///{work / 'store' / 'mlflow.db'}"
    (work / "store").mkdir()
    # The subprocess smoke test of `anomaly train` (exit 0); the other commands of this file
    # run in-process, through the same main(argv), except one smoke test each.
    result = spawn_cli(
        "train",
        f"data.root={root}",
        # The from-scratch model: its patch map and feature score are what this file's
        # calibration tests are about (the default, feature_ae, goes through score-batch,
        # Spark and the MLflow server tests).
        "model=draem",
        "data.image_size=32",
        "data.val_fraction=0.25",
        "trainer.max_epochs=2",
        "trainer.progress_bar=false",
        f"tracking.uri={uri}",
        f"output_dir={work / 'train'}",
        "tracking.experiment=e2e",
        cwd=work,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return {"work": work, "root": root, "uri": uri, "stdout": result.stdout}


def test_train_run_carries_params_metrics_and_artifacts(trained):
    client = MlflowClient(trained["uri"])
    experiment = client.get_experiment_by_name("e2e")
    (run,) = client.search_runs([experiment.experiment_id], "tags.`anomaly.kind` = 'train'")
    assert run.info.status == "FINISHED"
    assert run.info.run_id in trained["stdout"]  # the CLI prints the run id
    params = run.data.params
    assert params["data.root"] == str(trained["root"])
    assert params["model.name"] == "draem" and params["data.image_size"] == "32"
    assert params["data.n_train"] == "9" and params["data.n_val"] == "3"
    metrics = run.data.metrics
    for name in (
        "image_auroc",
        "pixel_auroc",
        "train/loss",
        "val/loss",
        "calibration/image_threshold",
    ):
        assert name in metrics, name
    assert 0.0 <= metrics["image_auroc"] <= 1.0 and 0.0 <= metrics["pixel_auroc"] <= 1.0
    history = client.get_metric_history(run.info.run_id, "train/loss")
    assert [m.step for m in history] == [0, 1]  # one point per epoch
    assert run.data.tags["model.name"] == "draem" and run.data.tags["data.fingerprint"]
    artifacts = list_artifacts(client, run.info.run_id)
    for name in (
        "evaluation/curves.png",
        "evaluation/score_histogram.png",
        "config.yaml",
        "calibration.json",
        "evaluation/samples.png",
        "evaluation/scores.csv",
        "evaluation/report.html",
    ):
        assert artifacts.get(name, 0) > 0, name


def _score(trained, cli, model, out, *extra):
    result = cli(
        "score",
        f"model={model}",
        f"input={trained['root'] / 'test'}",
        f"output={out}",
        f"tracking.uri={trained['uri']}",
        "tracking.experiment=e2e",
        *extra,
        cwd=trained["work"],
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def test_model_folder_is_complete(trained):
    model = trained["work"] / "train" / "model"
    cal = Calibration.load(model / "calibration.json")
    assert cal.n_images == 3 and cal.image_threshold > 0 and cal.pixel_threshold > 0
    meta = json.loads((model / "model.json").read_text())
    assert meta["preprocess"] == {
        "image_size": [32, 32],
        "channels": 1,
        "tile": False,
        "scale": 1.0,
        "tile_stride": None,
        "normalize": "none",
        # A square input: nothing to turn upright (data.upright=auto).
        "upright": False,
    }
    with Image.open(trained["work"] / "train" / "evaluation" / "samples.png") as grid:
        assert grid.format == "PNG" and grid.size[0] > 300


@pytest.mark.parametrize("source", ["folder", "run_uri"])
def test_score_writes_results_and_its_own_run(trained, cli, source):
    work = trained["work"]
    client = MlflowClient(trained["uri"])
    experiment = client.get_experiment_by_name("e2e")
    (train_run,) = client.search_runs([experiment.experiment_id], "tags.`anomaly.kind` = 'train'")
    model = (
        str(work / "train" / "model")
        if source == "folder"
        else f"runs:/{train_run.info.run_id}/model"
    )
    out = work / f"scored-{source}"
    # Scoring a folder is the subprocess smoke test of `anomaly score`.
    _score(trained, spawn_cli if source == "folder" else cli, model, out)

    with open(out / "scores.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 6
    assert tuple(rows[0]) == SCORES_COLUMNS
    assert {r["model_id"] for r in rows} == {train_run.info.run_id}
    for row in rows:
        name = Path(row["path"]).with_suffix(".png")
        with Image.open(out / "masks" / name) as mask:
            assert mask.size == (48, 48)  # the original size, not the model's 32x32
            pixels = np.asarray(mask)
        assert set(np.unique(pixels).tolist()) <= {0, 255}
        assert int(row["defect_area_px"]) == int((pixels > 0).sum())
        assert 0 < float(row["p_value"]) <= 1
        for folder in ("heatmaps", "overlays"):
            with Image.open(out / folder / name) as picture:
                # Heat maps are palette PNGs of the colour map; overlays RGB, or gray
                # when there is nothing to outline on a gray photo.
                assert picture.size == (48, 48) and picture.mode in ("P", "RGB", "L")
    assert (out / "scores.parquet").stat().st_size > 0
    assert (out / "regions.csv").read_text().startswith("image,region_id,")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_scored"] == 6 and summary["n_errors"] == 0

    runs = client.search_runs([experiment.experiment_id], f"params.output = '{out.resolve()}'")
    (score_run,) = runs
    assert score_run.data.tags["anomaly.kind"] == "score"
    assert score_run.data.metrics["images_scored"] == 6
    assert "score_p95" in score_run.data.metrics
    artifacts = list_artifacts(client, score_run.info.run_id)
    assert artifacts.get("scores.csv", 0) > 0
    # The page a reviewer reads, in the run and in the folder, naming the model's run.
    assert artifacts.get("report.html", 0) == (out / "report.html").stat().st_size
    page = (out / "report.html").read_text(encoding="utf-8")
    assert train_run.info.run_id in page and "6 files: 6 judged, 0 skipped" in page


def test_editing_the_threshold_changes_verdicts_without_retraining(trained, cli):
    work = trained["work"]
    model = work / "edited-model"
    shutil.copytree(work / "train" / "model", model)
    path = model / "calibration.json"
    raw = json.loads(path.read_text())
    raw["image_threshold"] = -1.0  # everything above it: every image defective
    path.write_text(json.dumps(raw))
    out = work / "edited-out"
    _score(trained, cli, model, out)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_defective"] == 6 and summary["image_threshold"] == -1.0


def test_user_errors_get_one_line_and_an_exit_code(trained, cli):
    work = trained["work"]
    # A real process: the smoke test of the configuration-error family (exit 2).
    missing = spawn_cli(
        "train", f"data.root={work / 'nope'}", f"tracking.uri={trained['uri']}", cwd=work
    )
    # A data.root that does not exist is a configuration mistake (issue 9): exit 2.
    assert missing.returncode == 2
    assert "data.root" in missing.stdout and "Traceback" not in missing.stdout + missing.stderr
    unset = cli("train", f"tracking.uri={trained['uri']}", cwd=work)
    assert unset.returncode == 2 and "data.root" in unset.stdout
    bad_model = cli(
        "score",
        f"model={work / 'nope'}",
        f"input={work}",
        f"tracking.uri={trained['uri']}",
        cwd=work,
    )
    assert bad_model.returncode == 2 and "model=" in bad_model.stdout
    unknown = cli("train", "model=nosuch", cwd=work)
    assert unknown.returncode == 2


def test_calibrate_refits_without_retraining(trained, cli):
    work = trained["work"]
    model = work / "recalibrated-model"
    shutil.copytree(work / "train" / "model", model)
    (model / "calibration.json").write_text("{ broken by a hand edit")
    weights = (model / "model.ckpt").read_bytes()
    result = spawn_cli(  # the subprocess smoke test of `anomaly calibrate`
        "calibrate",
        f"model={model}",
        f"data.root={trained['root']}",
        "scoring.calibration.image.method=mean_std",
        "scoring.calibration.image.k=2",
        f"tracking.uri={trained['uri']}",
        "tracking.experiment=e2e",
        cwd=work,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    cal = Calibration.load(model / "calibration.json")
    assert cal.params["image"] == {"method": "mean_std", "k": 2.0}
    assert cal.n_images == 3  # the training's validation split: same seed and fraction
    scores = np.array(cal.validation_scores)
    assert cal.image_threshold == pytest.approx(scores.mean() + 2 * scores.std())
    assert (model / "model.ckpt").read_bytes() == weights
    assert "test_false_alarm_rate" in result.stdout

    too_few = cli(
        "calibrate",
        f"model={model}",
        f"data.root={trained['root']}",
        "scoring.calibration.image.method=far",
        "scoring.calibration.image.far=0.01",
        f"tracking.uri={trained['uri']}",
        cwd=work,
    )
    assert too_few.returncode == 2 and "far" in too_few.stdout


def test_calibrate_with_an_unreadable_validation_image_exits_5_and_names_it(trained, cli, tmp_path):
    from omegaconf import OmegaConf

    from anomaly.data.folder import scan_dataset, split_validation

    root = tmp_path / "data"
    shutil.copytree(trained["root"], root)
    model = tmp_path / "model"
    shutil.copytree(trained["work"] / "train" / "model", model)
    # The training's split, which calibrate carves again: break one of its validation images.
    config = OmegaConf.load(model / "config.yaml")
    _, validation = split_validation(
        scan_dataset(root).train, fraction=config.data.val_fraction, seed=config.seed
    )
    broken = validation[0].path
    broken.write_bytes(b"not a png")
    result = cli(
        "calibrate",
        f"model={model}",
        f"data.root={root}",
        f"tracking.uri={trained['uri']}",
        cwd=trained["work"],
    )
    assert result.returncode == 5, result.stdout + result.stderr
    assert "1 unreadable validation image" in result.stdout
    assert broken.name in result.stdout + result.stderr
    assert Calibration.load(model / "calibration.json").n_images == len(validation) - 1


def test_calibrate_sets_or_drops_the_feature_score(trained, cli):
    from anomaly.model_folder import load_detector

    work = trained["work"]
    model = work / "feature-score-model"
    shutil.copytree(work / "train" / "model", model)
    assert Calibration.load(model / "calibration.json").fusion["map_weight"] == 0.5
    common = [f"model={model}", f"data.root={trained['root']}", f"tracking.uri={trained['uri']}"]
    weighted = cli("calibrate", *common, "scoring.feature_score.map_weight=2", cwd=work)
    assert weighted.returncode == 0, weighted.stdout + weighted.stderr
    assert Calibration.load(model / "calibration.json").fusion["map_weight"] == 2.0

    off = cli("calibrate", *common, "scoring.feature_score.enabled=false", cwd=work)
    assert off.returncode == 0, off.stdout + off.stderr
    cal = Calibration.load(model / "calibration.json")
    assert cal.fusion == {} and (model / "features.npz").is_file()
    # The Gaussian stays in the folder unused: the scores are the maps' again.
    detector = load_detector(model)
    assert detector.fusion is None

    # A model folder without the Gaussian (trained before it existed) gets one fitted on
    # the training part of the split.
    (model / "features.npz").unlink()
    again = cli("calibrate", *common, cwd=work)
    assert again.returncode == 0, again.stdout + again.stderr
    detector = load_detector(model)
    assert detector.features.n_images == 9 and detector.fusion is not None
    # Without map_weight= the model keeps its own weight (its training's), not the last.
    assert detector.fusion.map_weight == 0.5


def test_calibrate_sets_or_drops_the_patch_map(trained, cli):
    from anomaly.model_folder import load_detector

    work = trained["work"]
    model = work / "patch-map-model"
    shutil.copytree(work / "train" / "model", model)
    trained_scale = Calibration.load(model / "calibration.json").patch_scale
    assert trained_scale > 0
    common = [f"model={model}", f"data.root={trained['root']}", f"tracking.uri={trained['uri']}"]
    off = cli("calibrate", *common, "scoring.patch_map.enabled=false", cwd=work)
    assert off.returncode == 0, off.stdout + off.stderr
    # The memory stays in the folder unused: the maps are the model's again.
    assert Calibration.load(model / "calibration.json").patch_scale == 0
    assert (model / "patches.npz").is_file() and load_detector(model).patch_scale == 0

    # A model folder without the memory (trained before it existed) gets one fitted on
    # the training part of the split, and the weight scales the patch map.
    (model / "patches.npz").unlink()
    again = cli("calibrate", *common, "scoring.patch_map.weight=1.0", cwd=work)
    assert again.returncode == 0, again.stdout + again.stderr
    detector = load_detector(model)
    assert detector.patches.n_images == 9
    assert detector.patch_scale == pytest.approx(2 * trained_scale, rel=1e-3)


def test_calibrate_fits_the_position_score_and_says_where_it_applies(trained, cli):
    from anomaly.model_folder import load_detector

    work = trained["work"]
    model = work / "position-model"
    shutil.copytree(work / "train" / "model", model)
    common = [
        f"model={model}",
        f"data.root={trained['root']}",
        f"tracking.uri={trained['uri']}",
        "scoring.patch_map.enabled=false",
        "scoring.position_score.enabled=true",
    ]
    # The tiny photos all share one size: auto standardises the pixel map too.
    on = cli("calibrate", *common, cwd=work)
    assert on.returncode == 0, on.stdout + on.stderr
    cal = Calibration.load(model / "calibration.json")
    assert cal.positions and cal.position_pixels and (model / "positions.npz").is_file()
    stats = (model / "positions.npz").stat().st_mtime_ns
    detector = load_detector(model)
    assert detector.standardises_pixels
    # Switched off for the pixels without refitting the statistics.
    off = cli("calibrate", *common, "scoring.position_score.pixels=false", cwd=work)
    assert off.returncode == 0, off.stdout + off.stderr
    cal = Calibration.load(model / "calibration.json")
    assert cal.positions and not cal.position_pixels
    assert (model / "positions.npz").stat().st_mtime_ns == stats
    assert not load_detector(model).standardises_pixels
    bad = cli("calibrate", *common, "scoring.position_score.pixels=sometimes", cwd=work)
    assert bad.returncode != 0
    assert "scoring.position_score.pixels='sometimes'" in bad.stdout + bad.stderr


def test_evaluate_remeasures_a_saved_model_and_survives_a_bad_image(trained, cli):
    work, client = trained["work"], MlflowClient(trained["uri"])
    common = (f"tracking.uri={trained['uri']}", "tracking.experiment=e2e")
    result = cli(
        "evaluate",
        f"model={work / 'train' / 'model'}",
        f"data.root={trained['root']}",
        f"output={work / 'evaluated'}",
        *common,
        cwd=work,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    experiment = client.get_experiment_by_name("e2e")
    (train_run,) = client.search_runs([experiment.experiment_id], "tags.`anomaly.kind` = 'train'")
    (run,) = client.search_runs([experiment.experiment_id], "tags.`anomaly.kind` = 'evaluate'")
    # The same model under the same protocol: the training's own numbers, to the last digit.
    for name in ("image_auroc", "image_f1", "pixel_auroc", "pixel_aupro", "pixel_auroc/spot"):
        assert run.data.metrics[name] == train_run.data.metrics[name], name
    assert run.data.tags["model.id"] == train_run.info.run_id
    assert run.data.params["evaluation.pixel_metrics_at"] == "native"
    saved = json.loads((work / "evaluated" / "metrics.json").read_text())
    assert saved["metrics"]["image_auroc"] == run.data.metrics["image_auroc"]
    with open(work / "evaluated" / "scores.csv", newline="") as handle:
        assert len(list(csv.DictReader(handle))) == 6
    artifacts = list_artifacts(client, run.info.run_id)
    for name in ("scores.csv", "curves.png", "score_histogram.png", "samples.png", "report.html"):
        assert artifacts.get(f"evaluation/{name}", 0) > 0, name
    assert "defects caught" in (work / "evaluated" / "report.html").read_text(encoding="utf-8")

    # One unreadable test photo: skipped and listed, the others measured, exit code 5.
    root = work / "data-with-a-bad-photo"
    shutil.copytree(trained["root"], root)
    bad = sorted((root / "test" / "good").glob("*.png"))[0]
    bad.write_bytes(b"not a png")
    skipped = spawn_cli(  # the subprocess smoke test of `anomaly evaluate` and of exit 5
        "evaluate",
        f"model={work / 'train' / 'model'}",
        f"data.root={root}",
        f"output={work / 'evaluated-bad'}",
        "scoring.pixel_metrics_at=model",
        *common,
        cwd=work,
    )
    assert skipped.returncode == 5, skipped.stdout + skipped.stderr
    assert "1 unreadable test image" in skipped.stdout
    assert str(bad) in (work / "evaluated-bad" / "errors.csv").read_text()
    with open(work / "evaluated-bad" / "scores.csv", newline="") as handle:
        assert len(list(csv.DictReader(handle))) == 5
    assert json.loads((work / "evaluated-bad" / "metrics.json").read_text())["metrics"]

    no_test = spawn_cli(  # the subprocess smoke test of the input-data family (exit 3)
        "evaluate",
        f"model={work / 'train' / 'model'}",
        f"data.root={root / 'train'}",
        *common,
        cwd=work,
    )
    assert no_test.returncode == 3 and "no labelled test images" in no_test.stdout


def _gray(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image, dtype=np.float32) / 255.0


def _unjudgeable_folder(folder: Path, good: list[Path]) -> dict[str, str]:
    """Good photos beside every kind of file that cannot be judged; returns each refused
    file's expected reason (its start)."""
    folder.mkdir(parents=True)
    for path in good:
        shutil.copy(path, folder / path.name)
    stripes = _gray(good[0])  # 48x48
    Image.fromarray(stripes > 0.5).save(folder / "bits.png")  # mode "1": read
    Image.fromarray(np.round(stripes * 65535).astype(np.uint16)).save(folder / "deep.png")
    for name, bad in (("nan.tif", np.nan), ("inf.tif", np.inf)):
        values = stripes.copy()
        values[5:7, 5:8] = bad
        Image.fromarray(values).save(folder / name)  # mode "F"
    frames = [Image.fromarray(np.uint8(stripes * 255)), Image.fromarray(np.uint8(stripes * 99))]
    frames[0].save(folder / "anim.gif", save_all=True, append_images=frames[1:])
    frames[0].save(folder / "photo.webp")
    frames[0].save(folder / "pages.tif", save_all=True, append_images=frames[1:])
    (folder / ".notes.txt").write_text("hidden: ignored\n")
    (folder / ".cache").mkdir()
    shutil.copy(good[0], folder / ".cache" / "thumb.png")
    return {
        "nan.tif": "6 of 2304 pixels are not finite (NaN or infinity)",
        "inf.tif": "6 of 2304 pixels are not finite (NaN or infinity)",
        "anim.gif": "unsupported file type '.gif'",
        "photo.webp": "unsupported file type '.webp'",
        "pages.tif": "has 2 frames/pages",
    }


def _every_file_once(scores_csv: Path, errors_csv: Path, expected: dict[str, str], names):
    with open(scores_csv, newline="") as handle:
        scored = list(csv.DictReader(handle))
    with open(errors_csv, newline="") as handle:
        errors = {r["path"]: r["reason"] for r in csv.DictReader(handle)}
    listed = [r["path"] for r in scored] + list(errors)
    assert sorted(listed) == sorted(names), "a file is missing or listed twice"
    assert set(errors) == set(expected)
    for name, reason in expected.items():
        assert errors[name].startswith(reason), (name, errors[name])
    for row in scored:  # finite, never NaN: a NaN score would pass the part
        assert np.isfinite(float(row["score"])) and 0 < float(row["p_value"]) <= 1, row
    return scored


def test_photos_that_cannot_be_judged_are_listed_never_passed(trained, cli, tmp_path):
    """`anomaly score`, `anomaly score-batch` and the pyfunc model on NaN, infinite,
    multi-page and unsupported files beside good, 1-bit and 16-bit photos."""
    from anomaly.model_folder import load_detector
    from anomaly.tracking.model import predict_images

    work, model = trained["work"], trained["work"] / "train" / "model"
    good = sorted((trained["root"] / "test" / "good").glob("*.png"))
    expected = _unjudgeable_folder(tmp_path / "in", good)
    names = sorted(p.name for p in (tmp_path / "in").iterdir() if not p.name.startswith("."))
    assert len(names) == len(good) + 2 + len(expected)
    track = (f"tracking.uri={trained['uri']}", "tracking.experiment=e2e-unjudgeable")

    scored = cli("score", f"model={model}", f"input={tmp_path / 'in'}",
                 f"output={tmp_path / 'out'}", *track, cwd=work)  # fmt: skip
    assert scored.returncode == 5, scored.stdout + scored.stderr  # some files skipped
    assert f"{len(expected)} skipped (see errors.csv)" in scored.stdout
    rows = _every_file_once(
        tmp_path / "out" / "scores.csv", tmp_path / "out" / "errors.csv", expected, names
    )
    assert {"bits.png", "deep.png"} <= {r["path"] for r in rows}

    inbox = tmp_path / "batch" / "inbox"
    shutil.copytree(tmp_path / "in", inbox)
    batch = ("score-batch", f"inbox={inbox}", f"model={model}", "scoring.batch_size=4", *track)
    first = cli(*batch, cwd=work)
    assert first.returncode == 5, first.stdout + first.stderr
    assert f"{len(expected)} skipped (unreadable)" in first.stdout
    results = tmp_path / "batch" / "results"
    _every_file_once(results / "scores.csv", results / "errors.csv", expected, names)
    # Known errors are not retried while unchanged; a fixed file is scored.
    again = cli(*batch, cwd=work)
    assert again.returncode == 0 and "scored 0 new image(s)" in again.stdout, again.stdout
    fixed = _gray(good[0])
    Image.fromarray(fixed).save(inbox / "nan.tif")
    third = cli(*batch, cwd=work)
    assert third.returncode == 0, third.stdout + third.stderr
    assert "scored 1 new image(s) (1 changed)" in third.stdout
    with open(results / "scores.csv", newline="") as handle:
        assert "nan.tif" in {r["path"] for r in csv.DictReader(handle)}

    # The pyfunc model (what MLflow and Spark call): an error per refused input, no verdict.
    nan_array = fixed.copy()
    nan_array[0, 0] = np.nan
    frame = predict_images(
        load_detector(model),
        [nan_array, ("nan.tif", (tmp_path / "in" / "nan.tif").read_bytes()), fixed],
    )
    assert "values of the image array are not finite" in frame["error"][0]
    assert frame["error"][1].startswith(expected["nan.tif"])
    assert frame["error"][2] == "" and np.isfinite(frame["score"][2])
    assert frame.loc[:1, ["score", "p_value", "is_defective"]].isna().all().all()


def test_the_demo_makes_its_data_trains_scores_and_says_where_to_look(cli, tmp_path):
    # The README's first command, on a small copy of its data and a few training steps.
    result = cli(
        "demo",
        f"data.root={tmp_path / 'demo-data'}",
        "demo.size=32",
        "demo.n_train=12",
        "demo.n_test_good=4",
        "demo.n_test_per_class=1",
        "data.image_size=32",
        "data.val_fraction=0.25",
        "trainer.max_steps=2",
        "trainer.progress_bar=false",
        f"output_dir={tmp_path / 'out'}",
        f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = tmp_path / "out"
    assert "demo test-set metrics" in result.stdout
    assert "scored 8 test images" in result.stdout  # 4 good, one of each of 4 defect classes
    assert "samples:" in result.stdout and "scores:" in result.stdout
    assert (out / "evaluation" / "samples.png").is_file()
    assert (out / "score" / "scores.csv").is_file()
    # It ends by saying where the report is.
    assert f"report:     {out / 'score' / 'report.html'}" in result.stdout
    assert (out / "score" / "report.html").is_file()
    assert "registered:   anomaly-demo version 1" in result.stdout
