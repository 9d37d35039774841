import numpy as np
import pytest

from anomaly.data.folder import fingerprint, list_images, scan_dataset, split_validation
from anomaly.errors import ConfigError, DataError
from tests.conftest import write_png


def test_scan_mvtec_tree(tiny_mvtec):
    splits = scan_dataset(tiny_mvtec)
    assert len(splits.train) == 12 and all(s.label == 0 for s in splits.train)
    assert len(splits.test) == 6
    assert splits.has_labels and splits.defect_classes == ["spot"]
    defective = [s for s in splits.test if s.label == 1]
    assert all(s.mask_path is not None and s.mask_path.name == f"{s.path.stem}_mask.png"
               for s in defective)
    assert all(s.mask_path is None for s in splits.test if s.label == 0)


def test_masks_named_like_their_images(tmp_path):
    root = tmp_path / "r"
    image = np.zeros((4, 4))
    write_png(root / "train" / "good" / "a.png", image)
    write_png(root / "test" / "dent" / "x.png", image)
    write_png(root / "ground_truth" / "dent" / "x.png", image)
    assert scan_dataset(root, mask_suffix="").test[0].mask_path.name == "x.png"
    assert scan_dataset(root).test[0].mask_path is None  # default suffix _mask not found


def test_plain_folder_is_all_training_images(tmp_path):
    for name in ("a.png", "sub/b.PNG", ".hidden.png", "notes.txt"):
        path = tmp_path / name
        if name.endswith("txt"):
            path.write_text("x")
        else:
            write_png(path, np.zeros((4, 4)))
    splits = scan_dataset(tmp_path)
    assert [s.path.name for s in splits.train] == ["a.png", "b.PNG"]
    assert splits.test == []


def test_missing_root_names_the_key(tmp_path):
    with pytest.raises(ConfigError, match="data.root"):
        scan_dataset(tmp_path / "nope")


def test_empty_folder(tmp_path):
    with pytest.raises(DataError, match="no training images"):
        scan_dataset(tmp_path)
    assert list_images(tmp_path) == []


def test_validation_split_is_seeded_disjoint_and_complete(tiny_mvtec):
    samples = scan_dataset(tiny_mvtec).train
    train, val = split_validation(samples, fraction=0.25, seed=3)
    again_train, again_val = split_validation(samples, fraction=0.25, seed=3)
    assert val == again_val and train == again_train
    assert len(val) == 3 and not set(train) & set(val)
    assert sorted(train + val, key=lambda s: s.path) == samples
    _, other = split_validation(samples, fraction=0.25, seed=4)
    assert other != val


@pytest.mark.parametrize(
    ("n", "expected"),
    [(35, 8), (33, 8), (167, 17), (761, 76), (12, 3), (200, 20), (60, 10), (3, 1)],
)
def test_few_photos_still_hold_out_enough_to_calibrate(tmp_path, n, expected):
    from anomaly.data.folder import Sample

    samples = [Sample(tmp_path / f"{i:04d}.png") for i in range(n)]
    train, val = split_validation(samples, fraction=0.1, seed=0, min_images=10)
    # max(10% of n, min(10, a quarter of n)), and at least one image each side.
    assert len(val) == expected and len(train) == n - expected
    assert len(split_validation(samples, fraction=0.1, seed=0)[1]) == max(1, round(0.1 * n))


def test_split_needs_two_images(tiny_mvtec):
    one = scan_dataset(tiny_mvtec).train[:1]
    with pytest.raises(DataError, match="at least 2"):
        split_validation(one, fraction=0.1, seed=0)


def test_fingerprint_changes_with_files(tiny_mvtec):
    paths = [s.path for s in scan_dataset(tiny_mvtec).train]
    assert fingerprint(paths) == fingerprint(list(reversed(paths)))
    assert fingerprint(paths) != fingerprint(paths[1:])
