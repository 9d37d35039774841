"""Commands that read files and need no config tree: ``report`` and ``review``.

They take their arguments as ``key=value`` (like the Hydra commands) or, for the one
folder ``report`` needs, positionally; an unknown key is refused with the known ones.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from rich.console import Console
from rich.table import Table

from anomaly.errors import AnomalyError, ConfigError

log = logging.getLogger("anomaly")

REPORT_USAGE = """\
usage: anomaly report FOLDER [max_thumbnails=2000]

Rebuilds FOLDER/report.html from the files a scoring or evaluation run left there
(scores.csv, summary.json, overlays/, ...), without the model. A review.csv saved in
FOLDER adds the review's statistics to the header."""

REVIEW_USAGE = """\
usage: anomaly review apply review=REVIEW.csv data.root=PART_FOLDER [dry_run=true]
       anomaly review stats reviews=FILE_OR_FOLDER[,...]

apply  copies the report's false alarms into PART_FOLDER/train/good/reviewed/ and its
       confirmed defects into PART_FOLDER/test/<class>/reviewed/ (test/reviewed/ without
       a class); refuses images that changed since the review; a rerun copies nothing.
stats  per model version: images reviewed, defects confirmed, false alarms, precision of
       the flags and the observed false-alarm rate of the images scored."""


def _arguments(args: list[str], known: dict[str, str], usage: str) -> dict[str, str]:
    values: dict[str, str] = {}
    for arg in args:
        key, sep, value = arg.partition("=")
        if not sep or key not in known:
            raise ConfigError(
                f"unknown argument {arg!r}; expected {', '.join(k + '=' for k in known)}\n{usage}"
            )
        values[key] = value
    missing = [k for k, v in known.items() if v == "???" and k not in values]
    if missing:
        raise ConfigError(f"{', '.join(k + '=' for k in missing)} is required\n{usage}")
    return {k: values.get(k, v) for k, v in known.items()}


def _flag(value: str, key: str) -> bool:
    if value.lower() in ("true", "1", "yes"):
        return True
    if value.lower() in ("false", "0", "no"):
        return False
    raise ConfigError(f"{key}={value} is not true or false")


def run_report(args: list[str], console: Console) -> int:
    """``anomaly report FOLDER``: rebuild a results folder's ``report.html``."""
    from anomaly.report import build_report

    if args and "=" not in args[0] and not args[0].startswith("-"):
        args = [f"folder={args[0]}", *args[1:]]
    values = _arguments(args, {"folder": "???", "max_thumbnails": "2000"}, REPORT_USAGE)
    try:
        limit = int(values["max_thumbnails"])
    except ValueError as exc:
        raise ConfigError(f"max_thumbnails={values['max_thumbnails']} is not a number") from exc
    info = build_report(values["folder"], max_thumbnails=limit)
    console.print(
        f"report of {info.n_images} images ({info.bytes / 1e6:.1f} MB, built in "
        f"{info.seconds:.1f} s): {info.path}",
        highlight=False,
    )
    return 0


def run_review(args: list[str], console: Console) -> int:
    """``anomaly review apply|stats``."""
    action, rest = (args[0], args[1:]) if args else ("", [])
    if action == "apply":
        return _apply(rest, console)
    if action == "stats":
        return _stats(rest, console)
    raise ConfigError(f"anomaly review needs apply or stats, not {action!r}\n{REVIEW_USAGE}")


def _apply(args: list[str], console: Console) -> int:
    from anomaly.review.apply import apply_review

    values = _arguments(
        args, {"review": "???", "data.root": "???", "dry_run": "false"}, REVIEW_USAGE
    )
    dry = _flag(values["dry_run"], "dry_run")
    done = apply_review(values["review"], values["data.root"], dry_run=dry)
    verb = "would copy" if dry else "copied"
    console.print(
        f"{verb} {len(done.to_train)} false alarm(s) into training and "
        f"{len(done.to_test)} confirmed defect(s) into the test split; "
        f"{len(done.already)} already there; {done.unsure} marked unsure left alone",
        highlight=False,
    )
    for source, target in done.to_train + done.to_test:
        console.print(f"  {source} -> {target}", highlight=False, soft_wrap=True)
    if done.unchecked:
        console.print(
            f"note: {len(done.unchecked)} image(s) had no sha256 in the review (the report "
            "could not read them), so they could not be checked for changes",
            highlight=False,
        )
    if done.to_train or done.to_test:
        console.print(
            "next: anomaly train (or train-and-promote) "
            f"data.root={values['data.root']} learns the false alarms as normal",
            highlight=False,
        )
    return 0


def _stats(args: list[str], console: Console) -> int:
    from anomaly.review.stats import stats_by_model

    values = _arguments(args, {"reviews": "???"}, REVIEW_USAGE)
    frame = stats_by_model([p for p in values["reviews"].split(",") if p])
    table = Table(title="reviews per model")
    columns = ("model", "reviews", "images", "reviewed", "confirmed", "false_alarms")
    for name in (*columns, "precision", "false_alarm_rate"):
        table.add_column(name.replace("_", " "), justify="left" if name == "model" else "right")
    for row in frame.to_dict("records"):
        cells = ["-" if row[c] is None else str(row[c]) for c in columns]
        cells.append("-" if row["precision"] is None else f"{row['precision']:.1%}")
        rate = row["false_alarm_rate"]
        cells.append("-" if rate is None else f"{rate:.2%}")
        table.add_row(*cells)
    console.print(table)
    return 0


PLAIN_COMMANDS: dict[str, tuple[Callable[[list[str], Console], int], str]] = {
    "report": (run_report, REPORT_USAGE),
    "review": (run_review, REVIEW_USAGE),
}


def run_plain(command: str, args: list[str]) -> int:
    """Run a plain command; errors a user can fix become one line and an exit code."""
    runner, usage = PLAIN_COMMANDS[command]
    console = Console(soft_wrap=True)
    if any(a in ("-h", "--help") for a in args):
        print(usage)
        return 0
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return runner(args, console)
    except AnomalyError as exc:
        log.debug("error detail", exc_info=True)
        console.print(f"[bold red]error:[/] {exc}", highlight=False)
        return exc.exit_code
