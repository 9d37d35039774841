"""anomaly review apply / stats: filing reviewed images into a part's data folder."""

import csv
import hashlib

import numpy as np
import pandas as pd
import pytest

from anomaly.data.folder import scan_dataset
from anomaly.errors import DataError
from anomaly.review.apply import apply_review, flat_name
from anomaly.review.stats import review_stats, stats_by_model
from tests.conftest import make_tiny_mvtec, write_png

COLUMNS = ["path", "source", "moved_to", "sha256", "model_verdict", "score", "p_value", "decision",
           "defect_class", "note", "reviewed_at", "model", "model_id", "report_images"]  # fmt: skip


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _write_review(path, rows):
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, COLUMNS)
        writer.writeheader()
        for row in rows:
            writer.writerow({c: row.get(c, "") for c in COLUMNS})
    return path


@pytest.fixture
def batch(tmp_path):
    """A scored batch: a false alarm, a confirmed crack, one without class, one unsure."""
    rng = np.random.default_rng(0)
    images = {}
    for name in ("line1/a.png", "line2/a.png", "line1/c.png", "line1/d.png"):
        images[name] = write_png(tmp_path / "batch" / name, rng.uniform(0, 1, (32, 32)))
    decisions = [
        ("line1/a.png", "false_alarm", ""),
        ("line2/a.png", "defect_confirmed", "crack"),
        ("line1/c.png", "defect_confirmed", ""),
        ("line1/d.png", "unsure", ""),
    ]
    rows = [
        {"path": p, "source": str(images[p]), "sha256": _sha(images[p]), "decision": d,
         "defect_class": c, "model_verdict": "defect", "model": "part v1", "report_images": 10}
        for p, d, c in decisions
    ]  # fmt: skip
    return images, _write_review(tmp_path / "review.csv", rows)


def test_apply_files_false_alarms_into_training_and_defects_into_test(tmp_path, batch):
    images, review = batch
    root = make_tiny_mvtec(tmp_path / "part")
    before = scan_dataset(root)
    done = apply_review(review, root)
    assert len(done.to_train) == 1 and len(done.to_test) == 2 and done.unsure == 1
    false_alarm = root / "train" / "good" / "reviewed" / "line1__a.png"
    crack = root / "test" / "crack" / "reviewed" / "line2__a.png"
    unclassed = root / "test" / "reviewed" / "line1__c.png"
    for target, source in ((false_alarm, "line1/a.png"), (crack, "line2/a.png"),
                           (unclassed, "line1/c.png")):  # fmt: skip
        assert target.read_bytes() == images[source].read_bytes()
        assert images[source].is_file()  # copied, not moved
    after = scan_dataset(root)
    assert len(after.train) == len(before.train) + 1
    assert false_alarm in [s.path for s in after.train]
    tests = {s.path: s for s in after.test}
    assert tests[crack].label == 1 and tests[crack].defect_class == "crack"
    assert tests[unclassed].label == 1 and tests[unclassed].defect_class == "reviewed"


def test_apply_twice_changes_nothing(tmp_path, batch):
    _, review = batch
    root = make_tiny_mvtec(tmp_path / "part")
    apply_review(review, root)
    listing = sorted((p, p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file())
    again = apply_review(review, root)
    assert again.to_train == [] and again.to_test == [] and len(again.already) == 3
    assert sorted((p, p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file()) == listing


def test_a_changed_image_refuses_the_whole_review(tmp_path, batch):
    images, review = batch
    root = make_tiny_mvtec(tmp_path / "part")
    write_png(images["line2/a.png"], np.zeros((32, 32)))  # edited after the review
    files = sorted(root.rglob("*"))
    with pytest.raises(DataError, match=r"line2/a.png: changed since it was reviewed"):
        apply_review(review, root)
    assert sorted(root.rglob("*")) == files  # nothing copied, not even the good rows


def test_missing_image_and_bad_decision_are_named(tmp_path, batch):
    images, review = batch
    root = make_tiny_mvtec(tmp_path / "part")
    images["line1/a.png"].unlink()
    with pytest.raises(DataError, match="line1/a.png: the image is not at"):
        apply_review(review, root)
    frame = pd.read_csv(review, dtype=str, keep_default_na=False)
    frame.loc[0, "decision"] = "maybe"
    frame.to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(DataError, match="row 2: decision 'maybe'"):
        apply_review(tmp_path / "bad.csv", root)


def test_plain_folder_takes_false_alarms_refuses_defects(tmp_path, batch):
    _, review = batch
    root = tmp_path / "plain"
    write_png(root / "x.png", np.zeros((32, 32)))
    with pytest.raises(DataError, match="plain folder of training images"):
        apply_review(review, root)
    frame = pd.read_csv(review, dtype=str, keep_default_na=False)
    frame[frame["decision"] == "false_alarm"].to_csv(tmp_path / "fa.csv", index=False)
    done = apply_review(tmp_path / "fa.csv", root)
    assert [t for _, t in done.to_train] == [str(root / "reviewed" / "line1__a.png")]
    assert len(scan_dataset(root).train) == 2  # still a plain folder: both are training


def test_dry_run_copies_nothing(tmp_path, batch):
    _, review = batch
    root = make_tiny_mvtec(tmp_path / "part")
    files = sorted(root.rglob("*"))
    done = apply_review(review, root, dry_run=True)
    assert len(done.to_test) == 2 and sorted(root.rglob("*")) == files


def test_flat_name_keeps_folders_and_is_safe():
    assert flat_name("line1/a.png") == "line1__a.png"
    assert flat_name("../../etc/x y.png") == "etc__x_y.png"


def test_review_stats_by_hand():
    confirmed, alarm = "defect_confirmed", "false_alarm"
    reviews = pd.DataFrame(
        {
            "decision": [confirmed, alarm, alarm, "unsure", confirmed],
            "model_verdict": ["defect", "defect", "defect", "defect", "good"],
        }
    )
    stats = review_stats(reviews, n_scored=100)
    assert stats["confirmed"] == 2 and stats["false_alarms"] == 2 and stats["unsure"] == 1
    assert stats["precision"] == pytest.approx(1 / 3)  # 1 confirmed of 3 judged flags
    assert stats["false_alarm_rate"] == pytest.approx(2 / 98)
    assert stats["missed"] == 1


def test_stats_by_model_over_several_reviews(tmp_path, batch):
    _, review = batch
    (tmp_path / "night2").mkdir()
    rows = [{"path": "z.png", "decision": "false_alarm", "model_verdict": "defect",
             "model": "part v2", "report_images": 50}]  # fmt: skip
    _write_review(tmp_path / "night2" / "review.csv", rows)
    frame = stats_by_model([review, tmp_path / "night2"]).set_index("model")
    assert frame.loc["part v1", "images"] == 10 and frame.loc["part v2", "images"] == 50
    assert frame.loc["part v2", "false_alarm_rate"] == pytest.approx(1 / 50)
    assert frame.loc["part v1", "precision"] == pytest.approx(2 / 3)
    with pytest.raises(DataError, match="no review.csv"):
        stats_by_model([tmp_path / "batch"])


def test_an_image_moved_by_score_batch_is_found_where_it_went(tmp_path, batch):
    images, review = batch
    done = tmp_path / "done"
    frame = pd.read_csv(review, dtype=str, keep_default_na=False)
    frame["moved_to"] = [str(done / p) for p in frame["path"]]
    for path in frame["path"]:  # processed=move, after the report was written
        target = done / path
        target.parent.mkdir(parents=True, exist_ok=True)
        images[path].rename(target)
    frame.to_csv(tmp_path / "moved.csv", index=False)
    root = make_tiny_mvtec(tmp_path / "part")
    applied = apply_review(tmp_path / "moved.csv", root)
    assert [s for s, _ in applied.to_train] == [str(done / "line1/a.png")]
    assert len(applied.to_test) == 2
