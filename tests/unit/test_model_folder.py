import json

import pytest

from anomaly.errors import ModelFolderError
from anomaly.model_folder import load_detector, read_meta


def test_missing_folder_and_files(tmp_path):
    with pytest.raises(ModelFolderError, match="does not exist"):
        read_meta(tmp_path / "nope")
    with pytest.raises(ModelFolderError, match="model.json is missing"):
        read_meta(tmp_path)


def test_invalid_meta(tmp_path):
    (tmp_path / "model.json").write_text("{broken")
    with pytest.raises(ModelFolderError, match="not valid JSON"):
        read_meta(tmp_path)
    (tmp_path / "model.json").write_text(json.dumps({"module_class": "x"}))
    with pytest.raises(ModelFolderError, match="preprocess"):
        read_meta(tmp_path)


def test_missing_checkpoint(tmp_path):
    meta = {
        "module_class": "anomaly.training.autoencoder.AutoencoderModule",
        "preprocess": {"image_size": [32, 32], "channels": 1},
        "maps": {},
    }
    (tmp_path / "model.json").write_text(json.dumps(meta))
    with pytest.raises(ModelFolderError, match="model.ckpt is missing"):
        load_detector(tmp_path)
