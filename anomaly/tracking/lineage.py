"""Which photos a run saw: MLflow datasets (the run page's *Datasets* panel).

Every training logs its training, validation and test splits, and every scoring run its
batch, as a dataset input of the run: a name (``<folder>/<split>``), the folder as source,
and a digest of the files' contents, relative paths and labels. Two runs on the same files
show the same digest; one changed image changes it, whatever the files' dates. MLflow keeps
only the dataset's name, digest, schema and size; the file list itself (relative path,
sha256, label, defect class, split) is one CSV artifact per dataset under ``datasets/``,
so a split of a hundred thousand photos costs one file, not a hundred thousand entries.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import mlflow
import pandas as pd

from anomaly.data.folder import Sample
from anomaly.io import sha256_file

if TYPE_CHECKING:
    from anomaly.tracking.mlflow_logger import RunLogger

#: A split's name in MLflow's dataset contexts.
CONTEXTS = ("training", "validation", "test", "scoring")
_LABELS = {0: "good", 1: "defect", -1: ""}


@dataclass(frozen=True)
class FileSet:
    """The files of one dataset input.

    Attributes:
        name: ``<folder>/<context>``, as the UI lists it.
        context: One of :data:`CONTEXTS`.
        source: The folder the relative paths start from.
        frame: One row per file: ``path``, ``sha256``, ``label``, ``defect_class``,
            ``split``.
        digest: 16 hex digits of sha256 over the sorted (path, sha256, label) rows.
    """

    name: str
    context: str
    source: Path
    frame: pd.DataFrame
    digest: str

    @property
    def n_files(self) -> int:
        """Number of files."""
        return len(self.frame)


def _relative(path: Path, root: Path) -> str:
    try:
        return path.resolve().relative_to(root).as_posix()
    except ValueError:
        return str(path)


def _sha256(path: Path) -> str:
    try:
        return sha256_file(path)
    except OSError:
        # Gone or unreadable meanwhile: the run lists it as skipped; here it counts by name.
        return ""


def file_set(
    samples: Sequence[Sample],
    *,
    root: str | os.PathLike[str],
    context: str,
    hashes: Iterable[str] | None = None,
) -> FileSet:
    """Describe ``samples`` as one dataset.

    Args:
        samples: The files, with their labels.
        root: The folder their paths are given relative to (the data root, the inbox).
        context: One of :data:`CONTEXTS`.
        hashes: The files' sha256 when already known (score-batch's manifest); else each
            file is read once.

    Raises:
        ValueError: An unknown ``context``.
    """
    if context not in CONTEXTS:
        raise ValueError(f"context must be one of {CONTEXTS}, got {context!r}")
    root = Path(root).resolve()
    shas = list(hashes) if hashes is not None else [_sha256(s.path) for s in samples]
    frame = pd.DataFrame(
        {
            "path": [_relative(s.path, root) for s in samples],
            "sha256": shas,
            "label": [_LABELS.get(s.label, "") for s in samples],
            "defect_class": [s.defect_class for s in samples],
            "split": context,
        }
    ).sort_values("path", ignore_index=True)
    digest = hashlib.sha256()
    for path, sha, label in zip(frame["path"], frame["sha256"], frame["label"], strict=True):
        digest.update(f"{path}\0{sha}\0{label}\n".encode())
    return FileSet(f"{root.name}/{context}", context, root, frame, digest.hexdigest()[:16])


def log_file_sets(run: RunLogger, file_sets: Iterable[FileSet]) -> None:
    """Log each file set as an input of the run, and its file list as an artifact.

    Args:
        run: The run (a failed upload is recorded there, never raised).
        file_sets: The datasets; empty ones are left out.
    """
    for files in file_sets:
        if not files.n_files:
            continue
        run.call(f"the {files.context} dataset", _log_input, files)
        run.text(files.frame.to_csv(index=False), f"datasets/{files.context}.csv")


def _log_input(files: FileSet) -> None:
    with warnings.catch_warnings():
        # MLflow registers its local-file source twice and warns that the folder "can be
        # interpreted in multiple ways", both of them the same.
        warnings.simplefilter("ignore", UserWarning)
        dataset = mlflow.data.from_pandas(
            files.frame, source=str(files.source), name=files.name, digest=files.digest
        )
    tags = {"files": str(files.n_files)}
    try:
        mlflow.log_input(dataset, context=files.context, tags=tags)
    except mlflow.exceptions.MlflowException:
        # Two runs of one experiment (a parallel sweep) logging the same photos at the
        # same moment both insert the dataset, and the store refuses the second (UNIQUE
        # constraint). Once the first has landed, linking to it works: try once more.
        mlflow.log_input(dataset, context=files.context, tags=tags)
