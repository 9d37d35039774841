from __future__ import annotations

import contextlib
import io
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import traceback
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def spawn_cli(*args: str, cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    """Run the real `anomaly` command in a new Python process.

    For the smoke tests of each command and exit-code family, and for what needs a process
    of its own (signals, kills, resource limits); everything else calls :func:`run_cli`.
    """
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


def run_cli(*args: str, cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    """Run `anomaly` in this process through the console script's ``main(argv)``.

    The same entry point as the installed command, without a new interpreter importing
    torch, Lightning and MLflow from cold (about 6 s each time). The working folder, the
    environment and MLflow's tracking URI are restored afterwards, and the output is
    captured as a subprocess's would be. ``timeout`` is accepted for the same signature.
    """
    del timeout
    import mlflow

    from anomaly.cli import main

    saved_env, saved_cwd = dict(os.environ), Path.cwd()
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    stdout, stderr = io.StringIO(), io.StringIO()
    try:
        os.chdir(cwd)
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            try:
                code = main(list(args))
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 1
            except Exception:  # what an uncaught error does to the real command: exit 1
                traceback.print_exc()
                code = 1
    finally:
        while mlflow.active_run() is not None:
            mlflow.end_run("KILLED")
        mlflow.set_tracking_uri(None)
        os.chdir(saved_cwd)
        os.environ.clear()
        os.environ.update(saved_env)
        # Hydra's job logging points at this call's captured streams and log file.
        for handler in list(logging.getLogger().handlers):
            logging.getLogger().removeHandler(handler)
            handler.close()
    return subprocess.CompletedProcess(
        ["anomaly", *args], code, stdout.getvalue(), stderr.getvalue()
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


_SERVERS: dict[str, subprocess.Popen] = {}


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def mlflow_server(root: Path) -> Iterator[str]:
    """A real `mlflow server` on a free loopback port with its store under ``root``.

    Yields its URI; the server is stopped at the end in any case (also when a test already
    stopped it on purpose).
    """
    port = free_port()
    log_file = open(root / "server.log", "w")  # noqa: SIM115 - lives as long as the server
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
            "--backend-store-uri",
            f"sqlite:///{root / 'mlflow.db'}",
            "--artifacts-destination",
            str(root / "artifacts"),
        ],
        stdout=log_file,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        # Its job runner (GenAI jobs; nothing here uses them) starts seven more Python
        # processes importing MLflow: seconds of CPU taken from the tests at every start.
        env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
    )
    uri = f"http://127.0.0.1:{port}"
    _SERVERS[uri] = process
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{uri}/health", timeout=2) as reply:
                    if reply.status == 200:
                        break
            except OSError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    "mlflow server did not start:\n" + (root / "server.log").read_text()[-3000:]
                )
            time.sleep(0.5)
        yield uri
    finally:
        stop_server(uri)
        del _SERVERS[uri]
        log_file.close()


@pytest.fixture(scope="session")
def shared_mlflow_server(tmp_path_factory) -> Iterator[str]:
    """One real `mlflow server` for every test module that only talks to it.

    Started on first use and stopped at the end of the session (of each pytest-xdist
    worker); its users keep apart by experiment and registered-model names. Tests that stop
    a server on purpose start a private one with :func:`mlflow_server`.
    """
    with mlflow_server(tmp_path_factory.mktemp("shared-server")) as uri:
        yield uri


def stop_server(uri: str, *, crash: bool = False) -> None:
    """Stop a server started by :func:`mlflow_server` (and its workers), e.g. mid-run.

    Args:
        uri: The server.
        crash: Kill it at once (SIGKILL), as a crash or a power cut of its host would,
            instead of asking it to shut down.
    """
    process = _SERVERS[uri]
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL if crash else signal.SIGTERM)
    try:
        # Its graceful shutdown waits on the keep-alive connections of clients in the test
        # process; a server that is gone is all any test needs.
        process.wait(timeout=3)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
