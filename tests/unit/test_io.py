"""errors.csv: what one run writes, a resumed run reads back."""

from __future__ import annotations

import os
import stat

import pytest

from anomaly.io import (
    atomic_open,
    process_umask,
    read_errors_csv,
    write_errors_csv,
    write_json_atomic,
)


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


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_atomic_files_get_the_mode_open_would_give(tmp_path, umask):
    old = os.umask(umask)
    try:
        assert process_umask() == umask
        with open(tmp_path / "plain.txt", "w") as handle:
            handle.write("x")
        with atomic_open(tmp_path / "atomic.bin", "wb") as handle:
            handle.write(b"x")
        write_json_atomic(tmp_path / "atomic.json", {"a": 1})
    finally:
        os.umask(old)
    expected = 0o666 & ~umask
    for name in ("plain.txt", "atomic.bin", "atomic.json"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == expected, name
