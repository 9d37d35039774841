import hashlib

import numpy as np

from anomaly.data.demo import DEFECT_CLASSES, make_demo_dataset
from anomaly.data.folder import scan_dataset
from anomaly.data.images import read_image, read_mask


def _digest(root):
    h = hashlib.sha256()
    for path in sorted(root.rglob("*.png")):
        h.update(path.relative_to(root).as_posix().encode() + path.read_bytes())
    return h.hexdigest()


def test_demo_layout_and_determinism(tmp_path):
    kwargs = {"size": 64, "n_train": 6, "n_test_good": 2, "n_test_per_class": 2, "seed": 1}
    a = make_demo_dataset(tmp_path / "a", **kwargs)
    b = make_demo_dataset(tmp_path / "b", **kwargs)
    assert _digest(a) == _digest(b)
    splits = scan_dataset(a)
    assert len(splits.train) == 6
    assert splits.defect_classes == sorted(DEFECT_CLASSES)
    for sample in splits.test:
        if sample.label == 1:
            mask = read_mask(sample.mask_path)
            assert mask.shape == (64, 64) and mask.any()


def test_masks_mark_the_changed_pixels(tmp_path):
    root = make_demo_dataset(tmp_path, size=64, n_train=1, n_test_good=1, n_test_per_class=3)
    for sample in scan_dataset(root).test:
        if sample.label == 1 and sample.defect_class in ("scratch", "blob", "crack"):
            image = read_image(sample.path, channels=1)[..., 0]
            mask = read_mask(sample.mask_path)
            # Drawn defects are far from the texture's local mean inside the mask.
            assert np.abs(image[mask] - np.median(image)).mean() > 0.1


def test_second_call_reuses_existing_data(tmp_path):
    root = make_demo_dataset(tmp_path, size=32, n_train=2, n_test_good=1, n_test_per_class=1)
    stamp = (root / "train" / "good" / "000.png").stat().st_mtime_ns
    make_demo_dataset(tmp_path, size=32, n_train=2, n_test_good=1, n_test_per_class=1)
    assert (root / "train" / "good" / "000.png").stat().st_mtime_ns == stamp
