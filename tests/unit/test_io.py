"""errors.csv: what one run writes, a resumed run reads back."""

from __future__ import annotations

from anomaly.io import read_errors_csv, write_errors_csv


def test_errors_csv_round_trips_awkward_paths_and_reasons(tmp_path):
    errors = [
        (tmp_path / "a, b" / "photo 1.png", "cannot identify image file"),
        (tmp_path / "c.png", 'truncated: "image file is truncated"\nsecond line'),
    ]
    path = tmp_path / "errors.csv"
    write_errors_csv(path, errors)
    assert read_errors_csv(path) == [(str(p), reason) for p, reason in errors]


def test_a_missing_errors_csv_means_nothing_was_skipped(tmp_path):
    assert read_errors_csv(tmp_path / "errors.csv") == []
    write_errors_csv(tmp_path / "empty.csv", [])
    assert read_errors_csv(tmp_path / "empty.csv") == []
