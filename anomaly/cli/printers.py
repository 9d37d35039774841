"""What the commands print: progress bars, result tables, the sweep comparison, exit codes."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from anomaly.errors import (
    EXIT_COMPLETED_WITH_SKIPS,
    TrackingError,
)
from anomaly.jobs.results import JobResult

if TYPE_CHECKING:
    from anomaly.scoring.calibration import Calibration


def with_progress(console: Console, job: Callable[..., JobResult], cfg: DictConfig) -> JobResult:
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


def ui_command(uri: str) -> str:
    """How to open the MLflow UI on a tracking store."""
    if uri.startswith(("http://", "https://")):
        return f"open {uri} in a browser"
    return f"mlflow ui --backend-store-uri {uri} --port 5000"


def test_skips(skipped: list[tuple[str, str]]) -> str:
    """How many test files an evaluation could not use, in words."""
    # An unreadable image is left out of every metric, a bad mask only of the pixel ones.
    return f"{len(skipped)} unreadable test image(s) or mask(s)"


def look_at(console: Console, calibration: Calibration | None, *, label: str) -> None:
    """One line for each validation photo that stands out of the calibration's scores."""
    for standout in calibration.standouts if calibration is not None else []:
        console.print(
            f"[bold yellow]{label}[/]{standout['path']}: a defect-free validation photo "
            f"scoring {standout['score']:.2f}, far above the others; if it is defective, "
            "the threshold rests on it: move it out of the training photos and train again"
        )


def metrics_table(metrics: dict[str, float], title: str) -> Table:
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


def listing(console: Console, title: str, paths: list[str], limit: int = 20) -> None:
    """Print ``title: <count>`` and the first ``limit`` paths."""
    console.print(f"{title}: {len(paths)}", highlight=False)
    for path in paths[:limit]:
        console.print(f"  {path}", highlight=False)
    if len(paths) > limit:
        console.print(f"  ... and {len(paths) - limit} more", highlight=False)


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


def swept_keys(overrides: list[str]) -> list[str]:
    """Keys a multirun varies: ``model=cae,dae`` varies ``model``."""
    keys = []
    for override in overrides:
        key, _, value = override.partition("=")
        if value and ("," in value or value.startswith(("range(", "choice("))):
            keys.append(key.lstrip("+~"))
    return keys


def completion_code(result: Any, console: Console) -> int:
    """Exit code of a command that finished: 0, or why a scheduler should look closer."""
    if not isinstance(result, JobResult):
        return 0
    code = EXIT_COMPLETED_WITH_SKIPS if result.n_skipped else 0
    if result.not_uploaded:
        console.print(
            "[bold red]MLflow upload incomplete[/] (local outputs are complete); not "
            "uploaded:\n  " + "\n  ".join(result.not_uploaded),
            highlight=False,
        )
        code = TrackingError.exit_code
    return code
