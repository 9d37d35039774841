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
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException
from rich.console import Console
from rich.markdown import Markdown
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

import anomaly
from anomaly.errors import (
    EXIT_COMPLETED_WITH_SKIPS,
    AnomalyError,
    ConfigError,
    OutputError,
    TrackingError,
)
from anomaly.io import write_json_atomic
from anomaly.jobs.checks import check_config

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

Each command takes Hydra overrides; add --help for the options of one command and
--cfg job to print its resolved configuration.
"""


def config_dir() -> Path:
    """The Hydra config folder: packaged inside the wheel, or the source tree's ``conf/``."""
    packaged = Path(__file__).resolve().parent / "conf"
    if packaged.is_dir():
        return packaged
    source = Path(__file__).resolve().parent.parent / "conf"
    if source.is_dir():
        return source
    raise ConfigError(f"configuration folder not found (looked in {packaged} and {source})")


def _with_progress(
    console: Console, job: Callable[..., dict[str, Any]], cfg: DictConfig
) -> dict[str, Any]:
    """Run ``job(cfg, progress=...)`` under a scoring progress bar."""
    bar = Progress(
        TextColumn("scoring"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    )
    task = bar.add_task("scoring", total=None)

    def update(done: int, total: int) -> None:
        bar.update(task, completed=done, total=total)

    with bar:
        return job(cfg, progress=update)


_METRIC_COLUMNS = {
    "image_auroc": "img AUROC",
    "image_ap": "img AP",
    "image_f1": "F1",
    "image_best_f1": "best F1",
    "pixel_auroc": "px AUROC",
    "pixel_aupro": "AUPRO",
}
_METRIC_CAPTION = (
    "F1 at the calibrated threshold; AUPRO up to a false-positive rate of 0.3. "
    "Per class: that class against the defect-free images."
)


def _ui_command(uri: str) -> str:
    """How to open the MLflow UI on a tracking store."""
    if uri.startswith(("http://", "https://")):
        return f"open {uri} in a browser"
    return f"mlflow ui --backend-store-uri {uri} --port 5000"


def _test_skips(skipped: list[tuple[str, str]]) -> str:
    """How many test files an evaluation could not use, in words."""
    # An unreadable image is left out of every metric, a bad mask only of the pixel ones.
    return f"{len(skipped)} unreadable test image(s) or mask(s)"


def _metrics_table(metrics: dict[str, float], title: str) -> Table:
    """One row per defect class ("all" first), one column per metric."""
    from anomaly.scoring.metrics import by_class

    shown = {
        cls: {m: v for m, v in values.items() if m in _METRIC_COLUMNS}
        for cls, values in by_class(metrics).items()
    }
    rows = {cls: values for cls, values in shown.items() if values}
    columns = [m for m in _METRIC_COLUMNS if any(m in r for r in rows.values())]
    table = Table(title=title, caption=_METRIC_CAPTION)
    table.add_column("class")
    for metric in columns:
        table.add_column(_METRIC_COLUMNS[metric], justify="right")
    for cls in sorted(rows, key=lambda c: (c != "all", c)):
        table.add_row(cls, *(f"{rows[cls][m]:.3f}" if m in rows[cls] else "-" for m in columns))
    return table


def _run_train(cfg: DictConfig, console: Console) -> dict[str, Any]:
    from anomaly.jobs.train import train

    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode == RunMode.MULTIRUN:
        # Jobs of a sweep start within the same second: a timestamped output_dir would be
        # shared, so each job writes into its own sweep subfolder instead.
        cfg.output_dir = hydra_cfg.runtime.output_dir
        console.rule(f"job {hydra_cfg.job.num}: {' '.join(hydra_cfg.overrides.task)}")
    result = train(cfg)
    if not result.get("rank_zero", True):
        return result  # a distributed training's other ranks: rank 0 reports
    result["overrides"] = list(hydra_cfg.overrides.task)
    if result["metrics"]:
        console.print(_metrics_table(result["metrics"], "test-set metrics"))
    console.print(f"run id:       {result['run_id']}")
    console.print(f"model folder: {result['model_dir']}")
    if result["registered"]:
        reg = result["registered"]
        console.print(
            f"registered:   {reg['name']} version {reg['version']} (alias candidate); "
            f"promote with: anomaly promote name={reg['name']} version={reg['version']}"
        )
    console.print(f"results:      {result['output_dir']}")
    if result["skipped"]:
        console.print(
            f"skipped:      {len(result['skipped'])} unreadable training image(s), listed in "
            f"{Path(result['output_dir']) / 'errors.csv'}"
        )
    if result.get("skipped_test"):
        console.print(
            f"skipped:      {_test_skips(result['skipped_test'])}, listed in "
            f"{Path(result['output_dir']) / 'evaluation' / 'errors.csv'}"
        )
    console.print(f"MLflow UI:    {_ui_command(result['tracking_uri'])}")
    return result


def _run_train_and_promote(cfg: DictConfig, console: Console) -> dict[str, Any]:
    from anomaly.pipelines.train_and_promote import train_and_promote

    result = train_and_promote(cfg, dry_run=bool(cfg.pipeline.dry_run))
    if result["action"] != "done":
        title = "dry run: would" if result["action"] == "dry_run" else "up to date"
        console.print(f"[bold]{title}[/]", highlight=False)
        for line in result["plan"]:
            console.print(f"  - {line}", highlight=False)
        return result
    trained = result["train"]
    if trained and trained["metrics"]:
        console.print(_metrics_table(trained["metrics"], "candidate test-set metrics"))
    if result["skipped_test"]:
        console.print(
            f"skipped:   {_test_skips(result['skipped_test'])} (for both models), listed in "
            f"{result['test_errors_csv']}"
        )
    d = result["decision"]
    table = Table(title=f"gate: {d['metric']}, margin {d['margin']}")
    for column in ("candidate", "champion", "decision"):
        table.add_column(column, justify="right")
    table.add_row(
        f"v{result['version']} " + ("-" if d["candidate"] is None else f"{d['candidate']:.4f}"),
        (f"v{result['champion_before']} " if result["champion_before"] else "none ")
        + ("-" if d["champion"] is None else f"{d['champion']:.4f}"),
        d["word"],
    )
    console.print(table)
    console.print(f"why:       {d['reason']}", highlight=False)
    alias = f"{result['name']}@{result['alias']}"
    console.print(f"{alias} -> version {result['champion_after'] or 'none'}")
    console.print(f"run id:    {result['run_id']} (child runs: train, evaluate-champion, gate)")
    console.print(f"MLflow UI: {_ui_command(result['tracking_uri'])}")
    return result


def _run_score(cfg: DictConfig, console: Console) -> dict[str, Any]:
    from anomaly.jobs.score import score

    result = _with_progress(console, score, cfg)
    console.print(
        f"scored {result['n_scored']} of {result['n_images']} images: "
        f"{result['n_defective']} defective ({result['defect_rate']:.1%}), "
        f"{result['n_errors']} skipped (see errors.csv)"
        if result["n_errors"]
        else f"scored {result['n_scored']} images: {result['n_defective']} defective "
        f"({result['defect_rate']:.1%})"
    )
    console.print(
        f"results:   {result['output_dir']} (scores.csv, regions.csv, masks/, heatmaps/, "
        "overlays/, summary.json)"
    )
    console.print(
        f"p-values:  smallest possible {result['min_p_value']:.3g} (from the number of "
        "validation images); flag with p_value < alpha only for alpha above it"
    )
    console.print(f"run id:    {result['run_id']}")
    console.print(f"MLflow UI: {_ui_command(result['tracking_uri'])}")
    return result


def _listing(console: Console, title: str, paths: list[str], limit: int = 20) -> None:
    console.print(f"{title}: {len(paths)}", highlight=False)
    for path in paths[:limit]:
        console.print(f"  {path}", highlight=False)
    if len(paths) > limit:
        console.print(f"  ... and {len(paths) - limit} more", highlight=False)


def _run_score_batch(cfg: DictConfig, console: Console) -> dict[str, Any]:
    from anomaly.pipelines.score_batch import score_batch

    if cfg.dry_run:
        result = score_batch(cfg)
        console.print(f"dry run of {result['inbox']}: nothing was changed")
        _listing(console, "would score (new)", result["new"])
        _listing(console, "would score (changed since scored)", result["changed"])
        _listing(console, "already done", result["done"])
        _listing(console, f"would move to {result['done_folder']}", result["to_move"])
        _listing(console, "unreadable before, unchanged (not retried)", result["known_errors"])
        if result["locked_by"]:
            console.print(f"note: a run is in progress ({result['locked_by']})")
        return result
    result = _with_progress(console, score_batch, cfg)
    changed = f" ({result['n_changed']} changed)" if result["n_changed"] else ""
    console.print(
        f"scored {result['n_scored']} new image(s){changed}: {result['n_defective']} defective; "
        f"{result['n_already_done']} already done; {result['n_errors']} skipped (unreadable)"
        + (f"; moved {result['n_moved']} to {result['done_folder']}" if result["n_moved"] else "")
    )
    if result["n_errors"]:
        console.print(f"skipped:  see {Path(result['output']) / 'errors.csv'}")
    if result["model_version"] or result["model_id"]:
        console.print(f"model:    {result['model_uri']} (version {result['model_version'] or '-'})")
    console.print(
        f"results:  {result['output']} (scores.csv, regions.csv, errors.csv, masks/, "
        "heatmaps/, overlays/)"
    )
    console.print(f"log:      {result['log_file']}")
    if result["run_id"]:
        console.print(f"run id:   {result['run_id']}")
        console.print(f"MLflow UI: {_ui_command(result['tracking_uri'])}")
    return result


def _run_evaluate(cfg: DictConfig, console: Console) -> dict[str, Any]:
    from anomaly.jobs.evaluate import evaluate_model

    result = _with_progress(console, evaluate_model, cfg)
    title = (
        f"{result['model']} on {result['n_images']} test images "
        f"(pixel metrics at {result['pixel_metrics_at'] or '-'} size)"
    )
    if result["metrics"]:
        console.print(_metrics_table(result["metrics"], title))
    else:
        console.print(f"{title}: no metric (the test set needs defect-free and defective images)")
    if result["skipped"]:
        console.print(
            f"skipped:   {_test_skips(result['skipped'])}, listed in "
            f"{Path(result['output_dir']) / 'errors.csv'}"
        )
    console.print(
        f"results:   {result['output_dir']} (scores.csv, metrics.json, curves.png, "
        "score_histogram.png, samples.png)"
    )
    console.print(f"run id:    {result['run_id']}")
    console.print(f"MLflow UI: {_ui_command(result['tracking_uri'])}")
    return result


def _run_calibrate(cfg: DictConfig, console: Console) -> dict[str, Any]:
    from anomaly.jobs.calibrate import recalibrate

    result = recalibrate(cfg)
    cal, old = result["calibration"], result["previous"]
    table = Table(title=f"calibration ({cal.method}, {cal.n_images} validation images)")
    table.add_column("threshold")
    table.add_column("before", justify="right")
    table.add_column("after", justify="right")
    for name, value in (("image", cal.image_threshold), ("pixel", cal.pixel_threshold)):
        table.add_row(name, f"{old[name]:.6g}" if old else "-", f"{value:.6g}")
    console.print(table)
    for name, value in sorted(result["metrics"].items()):
        if not name.startswith("calibration/"):
            console.print(f"{name}: {value:.4f}")
    console.print(f"written:   {result['path']}")
    console.print(f"MLflow UI: {_ui_command(result['tracking_uri'])}")
    return result


def _run_promote(cfg: DictConfig, console: Console) -> dict[str, Any]:
    from anomaly.jobs.promote import promote

    result = promote(cfg)
    before = f" (was version {result['previous']})" if result["previous"] else ""
    console.print(
        f"{result['name']}@{result['alias']} -> version {result['version']}{before}; "
        f"score with model=models:/{result['name']}@{result['alias']}"
    )
    return result


def _run_bench(cfg: DictConfig, console: Console) -> dict[str, Any]:
    from anomaly.jobs.bench import run_bench

    result = run_bench(cfg, conf_dir=config_dir())
    console.print(Markdown(Path(cfg.output, "results.md").read_text(encoding="utf-8")))
    console.print(f"results: {Path(cfg.output).resolve() / 'results.json'} (and results.md)")
    return result


def _run_demo(cfg: DictConfig, console: Console) -> dict[str, Any]:
    from anomaly.jobs.demo import demo

    result = _with_progress(console, demo, cfg)
    trained, scored = result["train"], result["score"]
    console.print(_metrics_table(trained["metrics"], "demo test-set metrics"))
    console.print(
        f"scored {scored['n_scored']} test images: {scored['n_defective']} flagged defective"
    )
    console.print(f"results:      {trained['output_dir']}")
    console.print(f"  samples:    {Path(trained['output_dir']) / 'evaluation' / 'samples.png'}")
    console.print(f"  scores:     {Path(scored['output_dir']) / 'scores.csv'}")
    console.print(f"model folder: {trained['model_dir']}")
    if trained["registered"]:
        reg = trained["registered"]
        console.print(f"registered:   {reg['name']} version {reg['version']} (alias candidate)")
    console.print(f"MLflow UI:    {_ui_command(trained['tracking_uri'])}")
    return result


_COMMANDS: dict[str, tuple[str, Callable[[DictConfig, Console], dict[str, Any]]]] = {
    "train": ("config", _run_train),
    "score": ("score", _run_score),
    "score-batch": ("score_batch", _run_score_batch),
    "calibrate": ("calibrate", _run_calibrate),
    "evaluate": ("evaluate", _run_evaluate),
    "train-and-promote": ("train_and_promote", _run_train_and_promote),
    "promote": ("promote", _run_promote),
    "bench": ("bench", _run_bench),
    "demo": ("config", _run_demo),
}


# Commands whose data root must be a folder, and the key that names it: checked before
# their job is imported. (The demo creates its data.)
_DATA_ROOT_KEY = {
    "train": "data.root",
    "train-and-promote": "data.root",
    "calibrate": "data.root",
    "evaluate": "data.root",
    "bench": "data_root",
}


def _check_data_root(cfg: DictConfig, key: str) -> None:
    from anomaly.data.folder import check_data_root

    root = OmegaConf.select(cfg, key, throw_on_missing=False)
    if root is not None:  # unset (???) is the job's to report, with what to set
        check_data_root(str(root), key=key)


# Command-line flags that stand for a config override, per command.
_FLAGS: dict[str, dict[str, str]] = {
    "bench": {"--quick": "quick=true"},
    "score-batch": {"--dry-run": "dry_run=true"},
    "train-and-promote": {"--dry-run": "pipeline.dry_run=true"},
}


def _rewrite(command: str, overrides: list[str]) -> list[str]:
    if command in ("score", "calibrate", "evaluate", "score-batch"):
        # `model` is a config group of `train` (the architecture); for `score`, `evaluate`
        # and `calibrate` it names a trained model, stored as `model_uri` so Hydra does not
        # look for a group option.
        overrides = [f"model_uri={o[6:]}" if o.startswith("model=") else o for o in overrides]
    if command == "demo":
        overrides = ["experiment=demo", "hydra.job.name=demo", *overrides]
    flags = _FLAGS.get(command, {})
    return [flags.get(o, o) for o in overrides]


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


def comparison_table(results: list[dict[str, Any]], swept: list[str]) -> Table:
    """One row per training of a sweep: the swept values, test metrics and run id.

    Args:
        results: The training results, each with its ``overrides``.
        swept: The keys the sweep varies (one column each).
    """
    shown = [m for m in _METRIC_COLUMNS if any(m in r.get("metrics", {}) for r in results)]
    table = Table(title=f"sweep: {len(results)} trainings", caption=_METRIC_CAPTION)
    for key in swept:
        table.add_column(key, no_wrap=True)
    for metric in shown:
        table.add_column(_METRIC_COLUMNS[metric], justify="right", no_wrap=True)
    table.add_column("train s", justify="right", no_wrap=True)
    table.add_column("run id", no_wrap=True)
    best = {m: max(r["metrics"].get(m, float("-inf")) for r in results) for m in shown}
    for r in results:
        given = dict(o.split("=", 1) for o in r.get("overrides", []) if "=" in o)
        cells = [given.get(key, "-") for key in swept]
        for metric in shown:
            value = r["metrics"].get(metric)
            text = "-" if value is None else f"{value:.3f}"
            cells.append(
                f"[bold]{text}[/]" if value is not None and value == best[metric] else text
            )
        table.add_row(*cells, f"{r.get('train_seconds', 0.0):.0f}", str(r.get("run_id") or "-"))
    return table


def _swept_keys(overrides: list[str]) -> list[str]:
    """Keys a multirun varies: ``model=cae,dae`` varies ``model``."""
    keys = []
    for override in overrides:
        key, _, value = override.partition("=")
        if value and ("," in value or value.startswith(("range(", "choice("))):
            keys.append(key.lstrip("+~"))
    return keys


def _completion_code(result: Any, console: Console) -> int:
    """Exit code of a command that finished: 0, or why a scheduler should look closer."""
    if not isinstance(result, dict):
        return 0
    code = 0
    skipped = (
        result.get("n_errors")
        or len(result.get("skipped") or [])
        or len(result.get("skipped_test") or [])
    )
    if skipped:
        code = EXIT_COMPLETED_WITH_SKIPS
    not_uploaded = result.get("not_uploaded") or []
    if not_uploaded:
        console.print(
            "[bold red]MLflow upload incomplete[/] (local outputs are complete); not "
            "uploaded:\n  " + "\n  ".join(not_uploaded),
            highlight=False,
        )
        code = TrackingError.exit_code
    return code


def _unwritable_output(overrides: list[str]) -> str:
    """Why the output folder an override names cannot be created ("" when it can).

    Hydra creates that folder (for its log file) before any of our code runs, and would
    answer a read-only or full disk with a traceback.
    """
    for override in overrides:
        key, _, value = override.partition("=")
        if key in ("output", "output_dir") and value and "$" not in value:
            try:
                Path(value).mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                return f"cannot write to the output folder {value}: {exc.strerror}"
    return ""


def _missing_inbox(command: str, overrides: list[str]) -> str:
    """Why the ``inbox=`` of ``score-batch`` is unusable ("" when it is fine).

    Checked before Hydra runs: Hydra would create the log folder beside it, and creating a
    missing inbox's parents would turn a typo into an empty inbox that scores nothing.
    """
    if command != "score-batch":
        return ""
    if not any(o.startswith("inbox=") for o in overrides):
        if any(o.startswith("-") and o != "--dry-run" for o in overrides):
            return ""  # --help, --cfg job: Hydra's own
        return "inbox= is required: anomaly score-batch inbox=FOLDER (the folder of new images)"
    for override in overrides:
        key, _, value = override.partition("=")
        if key == "inbox" and value and "$" not in value and not Path(value).is_dir():
            what = "is not a folder" if Path(value).exists() else "does not exist"
            return f"inbox={value} {what}; point inbox= at the folder of new images"
    return ""


def run_command(command: str, overrides: list[str]) -> int:
    """Run one command with Hydra overrides; return its exit code."""
    _quiet_third_party_noise()
    # The log file lives in the output folder: when that disk is full, a failed log write
    # must not print a traceback over the one clear error line.
    logging.raiseExceptions = False
    # MLflow's own download bars would interleave with ours.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    config_name, runner = _COMMANDS[command]
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
            if command in _DATA_ROOT_KEY:
                _check_data_root(cfg, _DATA_ROOT_KEY[command])
            result = runner(cfg, job_console)
            code = _completion_code(result, job_console)
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

    problem = _missing_inbox(command, overrides)
    if problem:
        console.print(f"[bold red]configuration error:[/] {problem}", highlight=False)
        return ConfigError.exit_code
    problem = _unwritable_output(overrides)
    if problem:
        console.print(f"[bold red]error:[/] {problem}", highlight=False)
        return OutputError.exit_code
    saved = sys.argv
    # argv[0] stays the real program: Lightning's DDP launcher restarts it for each rank.
    sys.argv = [saved[0], *_rewrite(command, overrides)]
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
            wide.print(comparison_table(results, _swept_keys(overrides)))
            console.print(f"MLflow UI: {_ui_command(results[0]['tracking_uri'])}")
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
    if isinstance(result, dict) and result.get("metrics") is not None:
        summary |= {
            "metrics": result["metrics"],
            "run_id": result.get("run_id"),
            "train_seconds": result.get("train_seconds", 0.0),
            "tracking_uri": result.get("tracking_uri"),
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
    if args[0] not in _COMMANDS and "LOCAL_RANK" in os.environ:
        args = _ddp_child_args(args)
    command, overrides = args[0], args[1:]
    if command not in _COMMANDS:
        print(f"anomaly: unknown command {command!r}\n\n{USAGE}", file=sys.stderr)
        return 2
    return run_command(command, overrides)


if __name__ == "__main__":
    sys.exit(main())
