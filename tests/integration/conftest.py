from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def run_cli(*args: str, cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    """Run the real `anomaly` command in a subprocess."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    return subprocess.run(
        [sys.executable, "-m", "anomaly", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture
def cli():
    return run_cli


def list_artifacts(client, run_id: str, path: str = "") -> dict[str, int]:
    """Every artifact file of a run (recursively) with its size in bytes."""
    found = {}
    for item in client.list_artifacts(run_id, path):
        if item.is_dir:
            found.update(list_artifacts(client, run_id, item.path))
        else:
            found[item.path] = item.file_size
    return found
