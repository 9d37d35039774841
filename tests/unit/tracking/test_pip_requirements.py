"""What a serving environment is told to install for a logged model."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from anomaly.tracking.model import pip_requirements

GOLDEN = Path(__file__).resolve().parents[2] / "fixtures" / "golden"


def test_a_pretrained_model_names_its_architectures_package_only_when_it_needs_it(tmp_path):
    plain = pip_requirements(GOLDEN / "cae")
    assert plain[0].startswith("anomaly==") and "torch" in plain
    assert not any(r.startswith("efficientnet") for r in plain)
    folder = tmp_path / "feature_ae"
    shutil.copytree(GOLDEN / "cae", folder)
    meta = json.loads((folder / "model.json").read_text())
    meta["module_class"] = "anomaly.training.feature_ae.FeatureAEModule"
    (folder / "model.json").write_text(json.dumps(meta))
    # The architecture, pinned; not the weights, which travel inside the checkpoint.
    assert pip_requirements(folder) == [*plain, "efficientnet-lite-pytorch==0.1.0"]
