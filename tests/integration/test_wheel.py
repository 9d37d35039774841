"""The configs ship inside the wheel: a non-editable install finds them."""

from __future__ import annotations

import site
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.conftest import REPO

pytestmark = pytest.mark.integration


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    result = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def test_wheel_install_runs_train_cfg_job_from_elsewhere(tmp_path):
    dist = tmp_path / "dist"
    # No build isolation: hatchling comes with the test extras, so no download is needed.
    _run(
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "--no-deps",
        "--no-build-isolation",
        "--quiet",
        "-w",
        str(dist),
        str(REPO),
        cwd=tmp_path,
    )
    (wheel,) = dist.glob("anomaly-*.whl")
    venv = tmp_path / "venv"
    _run(sys.executable, "-m", "venv", str(venv), cwd=tmp_path)
    py = venv / "bin" / "python"
    # Reuse this environment's dependencies (torch and the rest) without reinstalling them:
    # a .pth line adds the directory only, so the editable install of anomaly found there
    # (a .pth of its own) is not activated.
    purelib = _run(
        str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])", cwd=tmp_path
    ).stdout.strip()
    Path(purelib, "deps.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    _run(
        str(py),
        "-m",
        "pip",
        "install",
        "--no-deps",
        "--no-index",
        "--quiet",
        str(wheel),
        cwd=tmp_path,
    )

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    where = _run(
        str(py),
        "-c",
        "import anomaly, pathlib; print(pathlib.Path(anomaly.__file__))",
        cwd=elsewhere,
    ).stdout.strip()
    assert where.startswith(purelib), f"imported {where}, not the installed wheel"
    assert Path(where).parent.joinpath("conf", "config.yaml").is_file()
    # The report's page parts are package files too.
    for name in ("report.js", "report.css", "controls.html", "detail.html"):
        assert Path(where).parent.joinpath("report", "static", name).is_file(), name

    out = _run(
        str(venv / "bin" / "anomaly"),
        "train",
        "--cfg",
        "job",
        "data.root=/some/images",
        "model=cae",
        "data.image_size=64",
        cwd=elsewhere,
    )
    assert "_target_: anomaly.models.conv_ae.ConvAutoencoder" in out.stdout
    assert "root: /some/images" in out.stdout and "image_size: 64" in out.stdout
    help_text = _run(str(venv / "bin" / "anomaly"), "train", "--help", cwd=elsewhere).stdout
    # The model group lists every packaged model config.
    models = next(line for line in help_text.splitlines() if line.startswith("model: "))
    assert "data.root" in help_text
    assert {"cae", "feature_ae", "ganomaly"} <= set(models.removeprefix("model: ").split(", "))
