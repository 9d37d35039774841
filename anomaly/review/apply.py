"""``anomaly review apply``: file reviewed images into a part's data folder.

False alarms (defect-free by a person's word) go where training finds them, confirmed
defects where the test split (and so the promotion gate) finds them:

- ``<root>/train/good/reviewed/`` and ``<root>/test/<class>/reviewed/`` (or
  ``<root>/test/reviewed/`` when no class was given) for an MVTec-style root;
- ``<root>/reviewed/`` for a plain folder of training images (it has no test split, so
  confirmed defects are refused there).

Images are copied, never moved; a review whose images changed since the report (sha256)
is refused before anything is copied; applying the same review twice copies nothing.
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from anomaly.data.folder import GOOD, check_data_root
from anomaly.errors import DataError
from anomaly.io import atomic_open, sha256_file
from anomaly.review.reading import read_review

REVIEWED = "reviewed"


@dataclass
class Applied:
    """What ``apply_review`` did, one ``(source, destination)`` per file."""

    to_train: list[tuple[str, str]] = field(default_factory=list)
    to_test: list[tuple[str, str]] = field(default_factory=list)
    already: list[str] = field(default_factory=list)
    unsure: int = 0
    unchecked: list[str] = field(default_factory=list)


def flat_name(path: str) -> str:
    """A file name that keeps the scored path's folders (``a/b/x.png`` -> ``a__b__x.png``)."""
    parts = [p for p in Path(path).parts if p not in ("/", "\\", "..", ".")]
    name = "__".join(parts) or "image"
    return re.sub(r"[^\w.\-]+", "_", name)


def apply_review(
    review: str | os.PathLike[str], data_root: str | os.PathLike[str], *, dry_run: bool = False
) -> Applied:
    """Copy a review's false alarms into training and its confirmed defects into test.

    Args:
        review: A ``review.csv`` exported from a report.
        data_root: The part's data folder (``data.root`` of its training).
        dry_run: Check everything and say what would be copied, copy nothing.

    Returns:
        The copies made (or due), the files already in place, and what was left alone.

    Raises:
        DataError: An image is missing or changed since it was reviewed, a destination
            holds another file of the same name, or a confirmed defect has no test split
            to go to; nothing is copied then.
    """
    root = check_data_root(data_root)
    rows = read_review(review)
    mvtec = (root / "train").is_dir()
    plan: list[tuple[Path, Path, str]] = []
    problems: list[str] = []
    result = Applied()
    for row in rows.to_dict("records"):
        decision = row["decision"]
        if decision == "unsure":
            result.unsure += 1
            continue
        source = Path(row["source"] or row["path"])
        if not source.is_file() and row["moved_to"] and Path(row["moved_to"]).is_file():
            source = Path(row["moved_to"])  # score-batch's processed=move took it there
        if not source.is_file():
            problems.append(f"{row['path']}: the image is not at {source}")
            continue
        digest = sha256_file(source)
        if row["sha256"] and digest != row["sha256"]:
            problems.append(f"{source}: changed since it was reviewed (sha256 differs)")
            continue
        if not row["sha256"]:
            result.unchecked.append(str(source))
        target = _destination(root, mvtec, decision, row["defect_class"], problems, row["path"])
        if target is None:
            continue
        target = target / flat_name(row["path"])
        if target.exists():
            if sha256_file(target) == digest:
                result.already.append(str(target))
                continue
            problems.append(f"{target} already holds another image; rename one of them")
            continue
        plan.append((source, target, decision))
    if problems:
        shown = "\n  ".join(problems[:20])
        more = f"\n  and {len(problems) - 20} more" if len(problems) > 20 else ""
        raise DataError(
            f"review {review} not applied, nothing was copied:\n  {shown}{more}\n"
            "Score the changed images again and review the new report."
        )
    for source, target, decision in plan:
        if not dry_run:
            _copy(source, target)
        pair = (str(source), str(target))
        (result.to_train if decision == "false_alarm" else result.to_test).append(pair)
    return result


def _destination(
    root: Path, mvtec: bool, decision: str, defect_class: str, problems: list[str], path: str
) -> Path | None:
    if decision == "false_alarm":
        return root / "train" / GOOD / REVIEWED if mvtec else root / REVIEWED
    if not mvtec:
        problems.append(
            f"{path}: a confirmed defect, but {root} is a plain folder of training images "
            "with no test split; lay it out as train/good/ and test/<class>/ first"
        )
        return None
    cls = re.sub(r"[^\w.\-]+", "_", defect_class.strip())
    if cls in ("", ".", "..", GOOD):
        return root / "test" / REVIEWED
    return root / "test" / cls / REVIEWED


def _copy(source: Path, target: Path) -> None:
    """Copy atomically: a kill mid-copy leaves no half image for training to read."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with source.open("rb") as src, atomic_open(target, "wb") as dst:
        shutil.copyfileobj(src, dst)
    shutil.copystat(source, target)
