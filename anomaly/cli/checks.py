"""Checks before a command composes its config or imports its job: one clear line, fast."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

import anomaly
from anomaly.errors import ConfigError

# Commands whose data root must be a folder, and the key that names it: checked before
# their job is imported. (The demo creates its data.)
DATA_ROOT_KEY = {
    "train": "data.root",
    "train-and-promote": "data.root",
    "calibrate": "data.root",
    "evaluate": "data.root",
    "bench": "data_root",
}


def require_data_root(cfg: DictConfig, key: str) -> None:
    """Raise unless the data root at ``key`` is a folder (an unset one is the job's to report).

    Raises:
        ConfigError: It does not exist or is not a folder.
    """
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


def rewrite_argv(command: str, overrides: list[str]) -> list[str]:
    """The overrides as Hydra takes them: ``model=`` as ``model_uri=``, flags as keys."""
    if command in ("score", "calibrate", "evaluate", "score-batch"):
        # `model` is a config group of `train` (the architecture); for `score`, `evaluate`
        # and `calibrate` it names a trained model, stored as `model_uri` so Hydra does not
        # look for a group option.
        overrides = [f"model_uri={o[6:]}" if o.startswith("model=") else o for o in overrides]
    if command == "demo":
        overrides = ["experiment=demo", "hydra.job.name=demo", *overrides]
    flags = _FLAGS.get(command, {})
    return [flags.get(o, o) for o in overrides]


def unwritable_output(overrides: list[str]) -> str:
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


def missing_inbox(command: str, overrides: list[str]) -> str:
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


def config_dir() -> Path:
    """The Hydra config folder: packaged inside the wheel, or the source tree's ``conf/``."""
    package = Path(anomaly.__file__).resolve().parent
    packaged = package / "conf"
    if packaged.is_dir():
        return packaged
    source = package.parent / "conf"
    if source.is_dir():
        return source
    raise ConfigError(f"configuration folder not found (looked in {packaged} and {source})")
