"""The ``anomaly`` command: ``train``, ``score``, ``evaluate``... as Hydra applications.

Each command is a thin ``@hydra.main`` wrapper around a plain function in
:mod:`anomaly.jobs`. The CLI owns the console: progress bars and result tables are printed
here, errors a user can fix become one line and an exit code instead of a traceback.

Exit codes: 0 success, 1 unexpected failure, 2 configuration or model-file error,
3 input data error, 4 tracking store unavailable, 5 completed with skipped inputs, 6 locked
by another run, 7 results cannot be written.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import warnings
from datetime import datetime
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException
from rich.console import Console

import anomaly
from anomaly.cli.checks import (
    DATA_ROOT_KEY,
    config_dir,
    missing_inbox,
    require_data_root,
    rewrite_argv,
    unwritable_output,
)
from anomaly.cli.commands import COMMANDS
from anomaly.cli.plain import PLAIN_COMMANDS, run_plain
from anomaly.cli.printers import comparison_table, completion_code, swept_keys, ui_command
from anomaly.errors import (
    AnomalyError,
    ConfigError,
    OutputError,
)
from anomaly.io import write_json_atomic
from anomaly.jobs.checks import check_config
from anomaly.jobs.results import TrainResult

log = logging.getLogger("anomaly")


USAGE = """\
usage: anomaly COMMAND [OVERRIDES...]

commands:
  train   train on defect-free images, calibrate, evaluate, log to MLflow
          e.g. anomaly train data.root=path/to/images model=cae trainer.max_epochs=30
  score   score every image in a folder with a trained model
          e.g. anomaly score model=outputs/train/<run>/model input=path/to/images output=results
  evaluate  measure a trained model on a labelled test set (AUROC, AUPRO, F1 per class)
          e.g. anomaly evaluate model=models:/part@champion data.root=path/to/images
  calibrate  re-fit a model's thresholds on defect-free images, without retraining
          e.g. anomaly calibrate model=outputs/train/<run>/model data.root=path/to/images
  train-and-promote  nightly retraining: train, evaluate, compare with the champion,
          register, promote when the gate allows (--dry-run: say what it would do)
          e.g. anomaly train-and-promote data.root=path/to/images tracking.uri=http://mlflow:5000
  score-batch  score the new images of an inbox folder with the champion model (for cron)
          e.g. anomaly score-batch inbox=/data/inbox [processed=move] [--dry-run]
  promote move a registry alias to a model version (default alias: champion)
          e.g. anomaly promote name=anomaly version=3
  bench   quality and speed of each model on an MVTec-style root (--quick: a smoke run)
          e.g. anomaly bench data_root=../shared/data/magnetic_tile
  demo    generate the embedded demo data set, train on it, score its test images
  report  rebuild a results folder's report.html from its files (no model needed)
          e.g. anomaly report outputs/score/<date_time>
  review  apply a report's exported review.csv to a part's data, or its statistics
          e.g. anomaly review apply review=review.csv data.root=path/to/images

Each command takes Hydra overrides; add --help for the options of one command and
--cfg job to print its resolved configuration.
"""


class _DropLightningTips(logging.Filter):
    """Drop Lightning's advertising tip; keep every other message."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "litlogger" not in record.getMessage()


def _quiet_third_party_noise() -> None:
    # The console belongs to the quality engineer: no advertising, and no deprecation
    # notices about library internals they cannot act on.
    logging.getLogger("pytorch_lightning.utilities.rank_zero").addFilter(_DropLightningTips())
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")
    warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=r".*Add type hints to the `predict` method.*")
    # feature_ae's frozen backbone stays in eval mode on purpose.
    warnings.filterwarnings(
        "ignore", message=r".*module\(s\) in eval mode at the start of training.*"
    )


def run_command(command: str, overrides: list[str]) -> int:
    """Run one command with Hydra overrides; return its exit code."""
    _quiet_third_party_noise()
    # The log file lives in the output folder: when that disk is full, a failed log write
    # must not print a traceback over the one clear error line.
    logging.raiseExceptions = False
    # MLflow's own download bars would interleave with ours.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    config_name, runner = COMMANDS[command]
    # soft_wrap: paths and commands stay on one line, so they can be copied.
    console = Console(soft_wrap=True)
    outcome = {"code": 0}
    multirun = bool({"-m", "--multirun"} & set(overrides))
    if multirun and not any(o.startswith("hydra.sweep.dir=") for o in overrides):
        # Fixed here, not by ${now:} in each job: the summary below reads the jobs' results
        # from it, whichever launcher ran them (in this process or in workers).
        stamp = datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
        overrides = [*overrides, f"hydra.sweep.dir=outputs/multirun/{stamp}"]
    sweep_dir = next(
        (Path(o.split("=", 1)[1]) for o in overrides if o.startswith("hydra.sweep.dir=")), None
    )

    # Self-contained (no console or state from this frame): a sweep launcher may pickle it
    # and run it in worker processes.
    @hydra.main(version_base="1.3", config_path=str(config_dir()), config_name=config_name)
    def app(cfg: DictConfig) -> Any:
        job_console = Console(soft_wrap=True)
        code, result = 0, None
        try:
            # Before the runner imports its job (torch, Lightning, MLflow: seconds): a
            # mistyped number fails at once.
            check_config(cfg)
            if command in DATA_ROOT_KEY:
                require_data_root(cfg, DATA_ROOT_KEY[command])
            result = runner(cfg, job_console)
            code = completion_code(result, job_console)
        except AnomalyError as exc:
            log.debug("error detail", exc_info=True)
            job_console.print(f"[bold red]error:[/] {exc}", highlight=False)
            code = exc.exit_code
        except OmegaConfBaseException as exc:
            # e.g. a mandatory value (data.root=???) left unset.
            key = getattr(exc, "full_key", None) or ""
            message = getattr(exc, "msg", None) or str(exc)
            job_console.print(f"[bold red]configuration error:[/] {key} {message}", highlight=False)
            code = ConfigError.exit_code
        if HydraConfig.get().mode == RunMode.MULTIRUN:
            _write_job_summary(code, result)
        outcome["code"] = max(outcome["code"], code)
        return result

    problem = missing_inbox(command, overrides)
    if problem:
        console.print(f"[bold red]configuration error:[/] {problem}", highlight=False)
        return ConfigError.exit_code
    problem = unwritable_output(overrides)
    if problem:
        console.print(f"[bold red]error:[/] {problem}", highlight=False)
        return OutputError.exit_code
    saved = sys.argv
    # argv[0] stays the real program: Lightning's DDP launcher restarts it for each rank.
    sys.argv = [saved[0], *rewrite_argv(command, overrides)]
    try:
        app()
    except SystemExit as exc:
        # Hydra exits with 1 on errors in composing the config (unknown group option,
        # bad override syntax): those are configuration errors.
        code = exc.code if isinstance(exc.code, int) else 1
        return ConfigError.exit_code if code == 1 else code
    finally:
        sys.argv = saved
    if multirun and sweep_dir is not None:
        jobs = _job_summaries(sweep_dir)
        outcome["code"] = max([outcome["code"], *(j["code"] for j in jobs)])
        results = [j for j in jobs if j.get("metrics") is not None]
        if command == "train" and results:
            # Wider than a terminal if need be: a row cut in two is harder to read.
            wide = Console(width=max(console.width, 160), file=console.file, soft_wrap=True)
            wide.print(comparison_table(results, swept_keys(overrides)))
            console.print(f"MLflow UI: {ui_command(results[0]['tracking_uri'])}")
    return outcome["code"]


_JOB_SUMMARY = "job_result.json"


def _write_job_summary(code: int, result: Any) -> None:
    """What the sweep summary needs of one job, in the job's folder."""
    hydra_cfg = HydraConfig.get()
    summary: dict[str, Any] = {
        "num": hydra_cfg.job.num,
        "code": code,
        "overrides": list(hydra_cfg.overrides.task),
    }
    if isinstance(result, TrainResult) and result.rank_zero:
        summary |= {
            "metrics": result.metrics,
            "run_id": result.run_id,
            "train_seconds": result.train_seconds,
            "tracking_uri": result.tracking_uri,
        }
    write_json_atomic(Path(hydra_cfg.runtime.output_dir) / _JOB_SUMMARY, summary)


def _job_summaries(sweep_dir: Path) -> list[dict[str, Any]]:
    """The jobs' summaries of a sweep, in job order."""
    found = []
    for path in sweep_dir.glob(f"*/{_JOB_SUMMARY}"):
        with contextlib.suppress(OSError, ValueError):
            found.append(json.loads(path.read_text(encoding="utf-8")))
    return sorted(found, key=lambda j: j.get("num", 0))


def _ddp_child_args(args: list[str]) -> list[str]:
    """The command line of a process Lightning's DDP launcher started for a rank above 0.

    The launcher restarts this program with the Hydra overrides only (no command) and
    ``hydra.run.dir`` set to rank 0's folder; only ``train`` runs distributed. Without an
    explicit ``output_dir`` the timestamp would differ between the ranks, so it is pinned
    to that folder too.
    """
    run_dir = next((a.split("=", 1)[1] for a in args if a.startswith("hydra.run.dir=")), None)
    extra = []
    if run_dir and not any(a.startswith("output_dir=") for a in args):
        extra = [f"output_dir={run_dir.strip(chr(34))}"]
    return ["train", *args, *extra]


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``anomaly`` console script."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0 if args else 2
    if args[0] == "--version":
        print(f"anomaly {anomaly.__version__}")
        return 0
    if args[0] not in COMMANDS and "LOCAL_RANK" in os.environ:
        args = _ddp_child_args(args)
    command, overrides = args[0], args[1:]
    if command in PLAIN_COMMANDS:
        return run_plain(command, overrides)
    if command not in COMMANDS:
        print(f"anomaly: unknown command {command!r}\n\n{USAGE}", file=sys.stderr)
        return 2
    return run_command(command, overrides)
