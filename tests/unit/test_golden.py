"""Model folders and a pyfunc model saved before the scoring core's redesign score as then.

The fixtures (``tests/fixtures/golden``, made by its ``make.py`` at the commit in its
``provenance.json``) stand for what users have on disk and in their registries: a DRAEM
ensemble with the feature score and the patch map, a convolutional AE, and the pyfunc
model MLflow unpickles by its class path.
"""

from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest

from anomaly.data.folder import Sample
from anomaly.model_folder import load_detector
from anomaly.scoring.stream import inspect_batches
from anomaly.tracking.model import predict_images

GOLDEN = Path(__file__).resolve().parents[1] / "fixtures" / "golden"
INPUTS = sorted((GOLDEN / "inputs").glob("*.png"))


def test_the_fixtures_are_there():
    assert len(INPUTS) == 6
    for name in ("draem_ensemble", "cae"):
        assert (GOLDEN / name / "model.json").is_file()
    assert (GOLDEN / "draem_ensemble" / "features.npz").is_file()
    assert (GOLDEN / "draem_ensemble" / "patches.npz").is_file()


@pytest.mark.parametrize("name", ["draem_ensemble", "cae"])
def test_a_saved_model_folder_scores_as_when_it_was_saved(name):
    want = np.load(GOLDEN / f"{name}_expected.npz")
    detector = load_detector(GOLDEN / name)
    maps = [
        m[0].numpy()
        for _, inspected in inspect_batches(detector, [Sample(p) for p in INPUTS], batch_size=2)
        for m in inspected.maps
    ]
    np.testing.assert_allclose(np.stack(maps), want["maps"], rtol=1e-5, atol=1e-6)
    rows = predict_images(detector, [str(p) for p in INPUTS])
    assert (rows["error"] == "").all()
    # The score sums standardised parts: this tiny fixture's map maxima spread by 0.005
    # and its feature distances are Mahalanobis distances in the thousands, so the float
    # rounding of another CPU's kernels (maps equal to 1e-6, as above) moves the score by
    # up to 1e-3 of itself (0.0008 measured on an AVX-512/AMX machine against the one
    # that saved it); verdicts, regions and p-values below must not move at all.
    np.testing.assert_allclose(rows["score"].to_numpy(float), want["scores"], rtol=2e-3)
    np.testing.assert_array_equal(rows["is_defective"].to_numpy(bool), want["verdicts"])
    np.testing.assert_array_equal(rows["n_regions"].to_numpy(int), want["n_regions"])
    np.testing.assert_array_equal(rows["p_value"].to_numpy(float), want["p_values"])


def test_a_pyfunc_model_saved_then_still_loads_and_predicts_the_same():
    model = mlflow.pyfunc.load_model(str(GOLDEN / "pyfunc_cae"))
    got = model.predict(pd.DataFrame({"path": [str(p) for p in INPUTS]}))
    want = pd.read_csv(GOLDEN / "pyfunc_expected.csv")
    np.testing.assert_allclose(got["score"].to_numpy(float), want["score"], rtol=1e-5)
    for column in ("p_value", "is_defective", "n_regions", "defect_area_px"):
        np.testing.assert_array_equal(got[column].to_numpy(), want[column].to_numpy(), column)
