"""Every file the package writes gets the mode open() gives under the process's umask."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from tests.conftest import make_tiny_mvtec
from tests.integration.conftest import run_cli

pytestmark = pytest.mark.integration


def _modes(folder: Path) -> dict[str, int]:
    """Every file below ``folder`` (none left out) with its permission bits."""
    found = {
        str(path.relative_to(folder)): stat.S_IMODE(path.stat().st_mode)
        for path in folder.rglob("*")
        if path.is_file()
    }
    assert found, f"nothing written in {folder}"
    return found


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_training_scoring_and_score_batch_files_follow_the_umask(tmp_path, umask):
    root = make_tiny_mvtec(tmp_path / "data", n_train=8, n_test=2)
    uri = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    (tmp_path / "store").mkdir()
    inbox = tmp_path / "batch" / "inbox"
    inbox.mkdir(parents=True)
    for path in sorted((root / "test").rglob("*.png")):
        (inbox / f"{path.parent.name}-{path.name}").write_bytes(path.read_bytes())
    track = [f"tracking.uri={uri}", "tracking.experiment=modes"]
    old = os.umask(umask)
    try:
        trained = run_cli(
            "train", f"data.root={root}", "data.image_size=32", "data.val_fraction=0.25",
            "trainer.max_epochs=1", "trainer.progress_bar=false",
            # Every file a model folder can hold, the patch memory included.
            "scoring.patch_map.enabled=true",
            f"output_dir={tmp_path / 'train'}", *track, cwd=tmp_path,
        )  # fmt: skip
        assert trained.returncode == 0, trained.stdout + trained.stderr
        model = tmp_path / "train" / "model"
        scored = run_cli(
            "score", f"model={model}", f"input={root / 'test'}",
            f"output={tmp_path / 'scored'}", *track, cwd=tmp_path,
        )  # fmt: skip
        assert scored.returncode == 0, scored.stdout + scored.stderr
        batch = run_cli("score-batch", f"inbox={inbox}", f"model={model}", *track, cwd=tmp_path)
        assert batch.returncode == 0, batch.stdout + batch.stderr
    finally:
        os.umask(old)
    expected = 0o666 & ~umask
    folders = {
        "training": tmp_path / "train",
        "model folder": model,
        "scoring": tmp_path / "scored",
        "score-batch state": inbox / ".score_batch",
        "score-batch results": tmp_path / "batch" / "results",
    }
    for what, folder in folders.items():
        wrong = {name: oct(mode) for name, mode in _modes(folder).items() if mode != expected}
        assert not wrong, f"{what}: expected {oct(expected)}, got {wrong}"
    # The folders named above hold what the issue lists (no folder silently empty).
    for name in ("calibration.json", "config.yaml", "features.npz", "patches.npz"):
        assert (model / name).is_file(), name
    assert (tmp_path / "scored" / "scores.parquet").is_file()
    assert (tmp_path / "scored" / "summary.json").is_file()
