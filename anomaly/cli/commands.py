"""Each command of the CLI: run its job (:mod:`anomaly.jobs`) and print what it did."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig
from rich.console import Console
from rich.markdown import Markdown
from rich.table import Table

from anomaly.cli.checks import config_dir
from anomaly.cli.printers import (
    listing,
    look_at,
    metrics_table,
    test_skips,
    ui_command,
    with_progress,
)
from anomaly.jobs.results import JobResult

# What a command's job returns: a typed result (the benchmark: its results.json as a dict).
CommandResult = JobResult | dict[str, Any]


def _run_train(cfg: DictConfig, console: Console) -> CommandResult:
    from anomaly.jobs.train import train

    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode == RunMode.MULTIRUN:
        # Jobs of a sweep start within the same second: a timestamped output_dir would be
        # shared, so each job writes into its own sweep subfolder instead.
        cfg.output_dir = hydra_cfg.runtime.output_dir
        console.rule(f"job {hydra_cfg.job.num}: {' '.join(hydra_cfg.overrides.task)}")
    result = train(cfg)
    if not result.rank_zero:
        return result  # a distributed training's other ranks: rank 0 reports
    result.overrides = list(hydra_cfg.overrides.task)
    if result.metrics:
        console.print(metrics_table(result.metrics, "test-set metrics"))
    console.print(f"run id:       {result.run_id}")
    console.print(f"model folder: {result.model_dir}")
    if result.registered:
        reg = result.registered
        console.print(
            f"registered:   {reg.name} version {reg.version} (alias candidate); "
            f"promote with: anomaly promote name={reg.name} version={reg.version}"
        )
    console.print(f"results:      {result.output_dir}")
    if result.report:
        console.print(f"report:       {result.report}")
    look_at(console, result.calibration, label="look at:      ")
    if result.skipped:
        console.print(
            f"skipped:      {len(result.skipped)} unreadable training image(s), listed in "
            f"{Path(result.output_dir) / 'errors.csv'}"
        )
    if result.skipped_test:
        console.print(
            f"skipped:      {test_skips(result.skipped_test)}, listed in "
            f"{Path(result.output_dir) / 'evaluation' / 'errors.csv'}"
        )
    console.print(f"MLflow UI:    {ui_command(result.tracking_uri)}")
    return result


def _run_train_and_promote(cfg: DictConfig, console: Console) -> CommandResult:
    from anomaly.pipelines.train_and_promote import train_and_promote

    result = train_and_promote(cfg, dry_run=bool(cfg.pipeline.dry_run))
    if result.action != "done":
        title = "dry run: would" if result.action == "dry_run" else "up to date"
        console.print(f"[bold]{title}[/]", highlight=False)
        for line in result.plan:
            console.print(f"  - {line}", highlight=False)
        return result
    trained = result.train
    if trained and trained.metrics:
        console.print(metrics_table(trained.metrics, "candidate test-set metrics"))
    if result.skipped_test:
        console.print(
            f"skipped:   {test_skips(result.skipped_test)} (for both models), listed in "
            f"{result.test_errors_csv}"
        )
    d = result.decision
    table = Table(title=f"gate: {d.metric}, margin {d.margin}")
    for column in ("candidate", "champion", "decision"):
        table.add_column(column, justify="right")
    table.add_row(
        f"v{result.version} " + ("-" if d.candidate is None else f"{d.candidate:.4f}"),
        (f"v{result.champion_before} " if result.champion_before else "none ")
        + ("-" if d.champion is None else f"{d.champion:.4f}"),
        d.word,
    )
    console.print(table)
    console.print(f"why:       {d.reason}", highlight=False)
    look_at(console, trained.calibration if trained else None, label="look at:   ")
    alias = f"{result.name}@{result.alias}"
    console.print(f"{alias} -> version {result.champion_after or 'none'}")
    console.print(f"run id:    {result.run_id} (child runs: train, evaluate-champion, gate)")
    console.print(f"MLflow UI: {ui_command(result.tracking_uri)}")
    return result


def _run_score(cfg: DictConfig, console: Console) -> CommandResult:
    from anomaly.jobs.score import score

    result = with_progress(console, score, cfg)
    s = result.summary
    console.print(
        f"scored {s.n_scored} of {s.n_images} images: {s.n_defective} defective "
        f"({s.defect_rate:.1%}), {s.n_errors} skipped (see errors.csv)"
        if s.n_errors
        else f"scored {s.n_scored} images: {s.n_defective} defective ({s.defect_rate:.1%})"
    )
    console.print(
        f"results:   {result.output_dir} (scores.csv, regions.csv, masks/, heatmaps/, "
        "overlays/, summary.json)"
    )
    if result.report:
        console.print(f"report:    {result.report}")
    console.print(
        f"p-values:  smallest possible {s.min_p_value:.3g} (from the number of "
        "validation images); flag with p_value < alpha only for alpha above it"
    )
    console.print(f"run id:    {result.run_id}")
    console.print(f"MLflow UI: {ui_command(result.tracking_uri)}")
    return result


def _run_score_batch(cfg: DictConfig, console: Console) -> CommandResult:
    from anomaly.pipelines.score_batch import score_batch

    if cfg.dry_run:
        result = score_batch(cfg)
        console.print(f"dry run of {result.inbox}: nothing was changed")
        listing(console, "would score (new)", result.new)
        listing(console, "would score (changed since scored)", result.changed)
        listing(console, "already done", result.done)
        listing(console, f"would move to {result.done_folder}", result.to_move)
        listing(console, "unreadable before, unchanged (not retried)", result.known_errors)
        if result.locked_by:
            console.print(f"note: a run is in progress ({result.locked_by})")
        return result
    result = with_progress(console, score_batch, cfg)
    changed = f" ({result.n_changed} changed)" if result.n_changed else ""
    console.print(
        f"scored {result.n_scored} new image(s){changed}: {result.n_defective} defective; "
        f"{result.n_already_done} already done; {result.n_errors} skipped (unreadable)"
        + (f"; moved {result.n_moved} to {result.done_folder}" if result.n_moved else "")
    )
    if result.n_errors:
        console.print(f"skipped:  see {Path(result.output) / 'errors.csv'}")
    if result.model_version or result.model_id:
        console.print(f"model:    {result.model_uri} (version {result.model_version or '-'})")
    console.print(
        f"results:  {result.output} (scores.csv, regions.csv, errors.csv, masks/, "
        "heatmaps/, overlays/)"
    )
    if result.report:
        console.print(f"report:   {result.report}")
    console.print(f"log:      {result.log_file}")
    if result.run_id:
        console.print(f"run id:   {result.run_id}")
        console.print(f"MLflow UI: {ui_command(result.tracking_uri)}")
    return result


def _run_evaluate(cfg: DictConfig, console: Console) -> CommandResult:
    from anomaly.jobs.evaluate import evaluate_model

    result = with_progress(console, evaluate_model, cfg)
    title = (
        f"{result.model} on {result.n_images} test images "
        f"(pixel metrics at {result.pixel_metrics_at or '-'} size)"
    )
    if result.metrics:
        console.print(metrics_table(result.metrics, title))
    else:
        console.print(f"{title}: no metric (the test set needs defect-free and defective images)")
    if result.skipped:
        console.print(
            f"skipped:   {test_skips(result.skipped)}, listed in "
            f"{Path(result.output_dir) / 'errors.csv'}"
        )
    console.print(
        f"results:   {result.output_dir} (scores.csv, metrics.json, curves.png, "
        "score_histogram.png, samples.png)"
    )
    if result.report:
        console.print(f"report:    {result.report}")
    console.print(f"run id:    {result.run_id}")
    console.print(f"MLflow UI: {ui_command(result.tracking_uri)}")
    return result


def _run_calibrate(cfg: DictConfig, console: Console) -> CommandResult:
    from anomaly.jobs.calibrate import recalibrate

    result = recalibrate(cfg)
    cal, old = result.calibration, result.previous
    table = Table(title=f"calibration ({cal.method}, {cal.n_images} validation images)")
    table.add_column("threshold")
    table.add_column("before", justify="right")
    table.add_column("after", justify="right")
    for name, value in (("image", cal.image_threshold), ("pixel", cal.pixel_threshold)):
        table.add_row(name, f"{old[name]:.6g}" if old else "-", f"{value:.6g}")
    console.print(table)
    for name, value in sorted(result.metrics.items()):
        if not name.startswith("calibration/"):
            console.print(f"{name}: {value:.4f}")
    console.print(f"written:   {result.path}")
    look_at(console, cal, label="look at:   ")
    if result.unreadable:
        console.print(
            f"skipped:   {result.unreadable} unreadable validation image(s), named in the log"
        )
    console.print(f"MLflow UI: {ui_command(result.tracking_uri)}")
    return result


def _run_promote(cfg: DictConfig, console: Console) -> CommandResult:
    from anomaly.jobs.promote import promote

    result = promote(cfg)
    before = f" (was version {result.previous})" if result.previous else ""
    console.print(
        f"{result.name}@{result.alias} -> version {result.version}{before}; "
        f"score with model=models:/{result.name}@{result.alias}"
    )
    return result


def _run_bench(cfg: DictConfig, console: Console) -> CommandResult:
    from anomaly.jobs.bench import run_bench

    result = run_bench(cfg, conf_dir=config_dir())
    console.print(Markdown(Path(cfg.output, "results.md").read_text(encoding="utf-8")))
    console.print(f"results: {Path(cfg.output).resolve() / 'results.json'} (and results.md)")
    return result


def _run_demo(cfg: DictConfig, console: Console) -> CommandResult:
    from anomaly.jobs.demo import demo

    result = with_progress(console, demo, cfg)
    trained, scored = result.train, result.score
    console.print(metrics_table(trained.metrics, "demo test-set metrics"))
    console.print(
        f"scored {scored.summary.n_scored} test images: "
        f"{scored.summary.n_defective} flagged defective"
    )
    console.print(f"results:      {trained.output_dir}")
    console.print(f"  samples:    {Path(trained.output_dir) / 'evaluation' / 'samples.png'}")
    console.print(f"  scores:     {Path(scored.output_dir) / 'scores.csv'}")
    if scored.report:
        console.print(f"  report:     {scored.report}  (open it in a browser)")
    console.print(f"model folder: {trained.model_dir}")
    if trained.registered:
        reg = trained.registered
        console.print(f"registered:   {reg.name} version {reg.version} (alias candidate)")
    console.print(f"MLflow UI:    {ui_command(trained.tracking_uri)}")
    return result


COMMANDS: dict[str, tuple[str, Callable[[DictConfig, Console], CommandResult]]] = {
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
