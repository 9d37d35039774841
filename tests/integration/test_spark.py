"""The registered pyfunc model as a Spark UDF on a local Spark (``local[2]``).

Selected with ``-m spark``; part of the default suite as well (pyspark is a test
dependency, Java 17+ comes from the system: the Makefile installs it when missing).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pandas as pd
import pytest

from tests.conftest import make_tiny_mvtec
from tests.integration.conftest import REPO, run_cli

pytestmark = [pytest.mark.integration, pytest.mark.spark]


def test_spark_udf_scores_equal_anomaly_score(tmp_path):
    root = make_tiny_mvtec(tmp_path / "data")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    trained = run_cli("train", f"data.root={root}", "data.image_size=32", "data.val_fraction=0.25",
                      "trainer.max_epochs=1", "trainer.progress_bar=false", f"tracking.uri={uri}",
                      f"output_dir={tmp_path / 'train'}", cwd=tmp_path)  # fmt: skip
    assert trained.returncode == 0, trained.stdout + trained.stderr
    images = root / "test"
    (images / "broken.png").write_text("not an image")  # must not fail the Spark job
    (images / "notes.txt").write_text("line 3: camera refocused")  # listed, never skipped

    scored = run_cli("score", "model=models:/anomaly/1", f"input={images}",
                     f"output={tmp_path / 'score'}", f"tracking.uri={uri}",
                     cwd=tmp_path)  # fmt: skip
    assert scored.returncode == 5, scored.stdout + scored.stderr  # 5: files skipped
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable}
    env.pop("MLFLOW_TRACKING_URI", None)
    # One partition for bytes: the unreadable file shares a batch with readable ones.
    runs = [
        ["--model", "models:/anomaly/1", "--input", str(images),
         "--output", str(tmp_path / f"{mode}.parquet"), "--tracking-uri", uri,
         "--master", "local[2]", "--partitions", partitions,
         *(["--bytes"] if mode == "bytes" else [])]
        for mode, partitions in (("paths", "4"), ("bytes", "1"))
    ]  # fmt: skip
    # The script's own main() for both, in one driver process: one JVM start, not two
    # (each run stops its SparkContext; the next one starts on the same JVM).
    driver = (
        "import json, runpy, sys\n"
        "main = runpy.run_path(sys.argv[1])['main']\n"
        "for argv in json.loads(sys.argv[2]):\n"
        "    assert main(argv) == 0\n"
    )
    spark = subprocess.run(
        [sys.executable, "-c", driver, str(REPO / "pipelines" / "spark_score.py"),
         json.dumps(runs)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert spark.returncode == 0, spark.stdout + spark.stderr
    assert spark.stdout.count("scored 8 files") == 2, spark.stdout

    got = pd.read_parquet(tmp_path / "paths.parquet").set_index("path").sort_index()
    want = pd.read_csv(tmp_path / "score" / "scores.csv").set_index("path").sort_index()
    want.index = pd.Index([str((images / p).resolve()) for p in want.index], name="path")
    broken = got.loc[str((images / "broken.png").resolve())]
    assert "not a readable image" in broken["error"]
    assert broken[["score", "is_defective", "n_regions", "defect_area_px"]].isna().all()
    assert "unsupported file type '.txt'" in got.loc[str((images / "notes.txt").resolve()), "error"]
    good = got[got["error"] == ""]
    assert sorted(good.index) == sorted(want.index) and len(good) == 6
    # Spark's Python workers run torch on one thread, `anomaly score` on two: float32
    # convolutions round differently (~1e-7), and the feature score's Mahalanobis distance
    # magnifies that, so the scores agree to 1e-4 of their range, the verdicts exactly.
    scale = float(want["score"].abs().max())
    pd.testing.assert_series_equal(
        good["score"], want["score"], check_exact=False, rtol=1e-5, atol=1e-4 * scale
    )
    assert (good["is_defective"] == want["is_defective"].astype(bool)).all()
    assert (good["p_value"] - want["p_value"]).abs().max() < 1e-9
    assert (good["n_regions"] == want.loc[good.index, "n_regions"]).all()

    # The bytes travelled in the DataFrame (binaryFile): the same results, named by URI.
    shipped = pd.read_parquet(tmp_path / "bytes.parquet")
    shipped.index = pd.Index([p.removeprefix("file:") for p in shipped["path"]], name="path")
    shipped = shipped.drop(columns="path").sort_index()
    broken = shipped.loc[str((images / "broken.png").resolve())]
    assert "not a readable image" in broken["error"]
    assert shipped.loc[str((images / "notes.txt").resolve()), "error"]
    assert broken[["score", "is_defective", "n_regions", "defect_area_px"]].isna().all()
    pd.testing.assert_series_equal(
        shipped.loc[good.index, "score"], good["score"], check_exact=False, rtol=1e-6
    )
