"""Finding images on disk: any folder, or an MVTec AD-style tree with masks.

MVTec layout::

    root/train/good/*.png                      defect-free training images
    root/test/good/*.png                       defect-free test images
    root/test/<defect class>/*.png             defective test images
    root/ground_truth/<defect class>/<stem><mask_suffix>.png

``mask_suffix`` is ``"_mask"`` in MVTec AD; ``""`` means masks are named exactly like
their images. A root without ``train/`` is treated as a plain folder of normal images.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from anomaly.data.images import IMAGE_EXTENSIONS, is_image_file
from anomaly.errors import ConfigError, DataError

GOOD = "good"
#: How many ignored file names a warning quotes.
_EXAMPLES = 3

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Sample:
    """One image file and what is known about it.

    Attributes:
        path: The image file.
        label: 0 defect-free, 1 defective, -1 unknown (unlabelled folder).
        defect_class: ``"good"``, the defect class folder name, or ``""`` when unlabelled.
        mask_path: Ground-truth mask of a defective image, when one exists.
    """

    path: Path
    label: int = -1
    defect_class: str = ""
    mask_path: Path | None = None


@dataclass
class DatasetSplits:
    """The samples of a data root, split the way training needs them."""

    root: Path
    train: list[Sample]
    test: list[Sample] = field(default_factory=list)

    @property
    def has_labels(self) -> bool:
        """True when the test split holds both defect-free and defective images."""
        labels = {s.label for s in self.test}
        return 0 in labels and 1 in labels

    @property
    def defect_classes(self) -> list[str]:
        """Sorted names of the defect classes in the test split."""
        return sorted({s.defect_class for s in self.test if s.label == 1})


def list_files(
    folder: str | os.PathLike[str], *, recursive: bool = True
) -> tuple[list[Path], list[Path]]:
    """List a folder's files, split into images and the rest, skipping hidden ones.

    Scoring uses both lists, so that every file a person put in an input folder comes
    back either scored or named in ``errors.csv`` (the reader refuses the others with the
    reason); training and evaluation take the images and warn about the rest.

    Args:
        folder: Folder to search.
        recursive: Descend into sub-folders (symlinked folders are not followed, so a link
            cycle cannot make the listing endless; symlinked files are listed). Hidden
            files and folders (names starting with ``.``) are never listed.

    Returns:
        ``(images, others)``: paths with a supported extension (case-insensitive) and
        every other file, each sorted.

    Raises:
        DataError: ``folder`` does not exist or is not a folder.
    """
    folder = Path(folder)
    if not folder.is_dir():
        what = "is not a folder" if folder.exists() else "does not exist"
        raise DataError(f"image folder {folder} {what}; check the path")
    images: list[Path] = []
    others: list[Path] = []
    for current, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in files:
            if not name.startswith("."):
                (images if is_image_file(name) else others).append(Path(current) / name)
        if not recursive:
            break
    return sorted(images), sorted(others)


def list_images(folder: str | os.PathLike[str], *, recursive: bool = True) -> list[Path]:
    """List image files in a folder, sorted, skipping hidden files and folders.

    Args:
        folder: Folder to search.
        recursive: Descend into sub-folders (see :func:`list_files`).

    Returns:
        Image paths with a supported extension (case-insensitive), sorted.

    Raises:
        DataError: ``folder`` does not exist or is not a folder.
    """
    return list_files(folder, recursive=recursive)[0]


def describe_others(others: list[Path], folder: Path) -> str:
    """``"<n> file(s), e.g. a.gif, notes.txt"``: the non-image files of a listing, briefly."""
    names = ", ".join(_relative(p, folder) for p in sorted(others)[:_EXAMPLES])
    more = ", ..." if len(others) > _EXAMPLES else ""
    return f"{len(others)} file(s), e.g. {names}{more}"


def _relative(path: Path, folder: Path) -> str:
    try:
        return path.relative_to(folder).as_posix()
    except ValueError:
        return str(path)


def find_mask(
    root: Path, defect_class: str, image: Path, *, mask_suffix: str = "_mask"
) -> Path | None:
    """Find the ground-truth mask of a defective test image, or None when there is none."""
    folder = root / "ground_truth" / defect_class
    for ext in dict.fromkeys((".png", image.suffix, *sorted(IMAGE_EXTENSIONS))):
        candidate = folder / f"{image.stem}{mask_suffix}{ext}"
        if candidate.is_file():
            return candidate
    return None


def check_data_root(root: str | os.PathLike[str], *, key: str = "data.root") -> Path:
    """A data root as a path, once it is known to be a folder.

    Args:
        root: The data root.
        key: The config key it came from, named in the error.

    Raises:
        ConfigError: ``root`` does not exist or is not a folder.
    """
    root = Path(root)
    if not root.is_dir():
        raise ConfigError(
            f"{key}={root} does not exist or is not a folder; point {key} at a folder "
            "of defect-free images or an MVTec-style tree (train/good, test/<class>)"
        )
    return root


def scan_dataset(root: str | os.PathLike[str], *, mask_suffix: str = "_mask") -> DatasetSplits:
    """Scan a data root: MVTec layout when it has ``train/``, else a plain folder.

    Args:
        root: The data root (``data.root``).
        mask_suffix: Suffix of mask files before the extension (``data.mask_suffix``).

    Returns:
        The training samples (label 0) and, for an MVTec tree with ``test/``, the labelled
        test samples with their masks.

    Raises:
        ConfigError: ``root`` does not exist.
        DataError: ``root`` holds no training images.
    """
    root = check_data_root(root)
    train_dir = root / "train" / GOOD
    if not train_dir.is_dir():
        train_dir = root / "train" if (root / "train").is_dir() else root
    images, ignored = list_files(train_dir)
    train = [Sample(p, 0, GOOD) for p in images]
    if not train:
        raise DataError(
            f"no training images found in {train_dir} (looked for "
            f"{', '.join(sorted(IMAGE_EXTENSIONS))}); check data.root"
        )
    test: list[Sample] = []
    test_dir = root / "test"
    if train_dir != root and test_dir.is_dir():
        for class_dir in sorted(p for p in test_dir.iterdir() if p.is_dir()):
            if class_dir.name.startswith("."):
                continue
            is_good = class_dir.name == GOOD
            images, others = list_files(class_dir)
            ignored += others
            for image in images:
                mask = (
                    None
                    if is_good
                    else find_mask(root, class_dir.name, image, mask_suffix=mask_suffix)
                )
                test.append(Sample(image, 0 if is_good else 1, class_dir.name, mask))
    if ignored:
        # Not an error (notes and exports often sit beside the photos), but a photo saved
        # as GIF or WebP would otherwise be missing from training without a word.
        log.warning(
            "ignored %s in %s: not an image type the inspection reads (%s)",
            describe_others(ignored, root),
            root,
            ", ".join(sorted(IMAGE_EXTENSIONS)),
        )
    return DatasetSplits(root=root, train=train, test=test)


def split_validation(
    samples: list[Sample], *, fraction: float, seed: int, min_images: int = 0
) -> tuple[list[Sample], list[Sample]]:
    """Carve a seeded validation split out of the defect-free training images.

    Args:
        samples: Training samples.
        fraction: Share that goes to validation, in ``(0, 1)``; at least one image each side.
        seed: Seed of the shuffle; the same seed and files give the same split.
        min_images: At least this many validation images, as long as three quarters stay
            for training: a new part's 35 photos give 8 instead of 4, so its smallest
            p-value is 1/9 rather than 1/5 (0: the fraction alone).

    Returns:
        ``(train, validation)``, each in the original (sorted) order.

    Raises:
        DataError: Fewer than two images, so no split is possible.
    """
    if not 0.0 < fraction < 1.0:
        raise ConfigError(f"data.val_fraction must be between 0 and 1, got {fraction!r}")
    if len(samples) < 2:
        raise DataError(
            f"{len(samples)} training image(s): at least 2 are needed to carve a validation "
            "split for calibration; add defect-free images"
        )
    n_val = max(round(fraction * len(samples)), min(min_images, len(samples) // 4))
    n_val = min(len(samples) - 1, max(1, n_val))
    order = np.random.default_rng(seed).permutation(len(samples))
    val_idx = set(order[:n_val].tolist())
    train = [s for i, s in enumerate(samples) if i not in val_idx]
    val = [s for i, s in enumerate(samples) if i in val_idx]
    return train, val


def fingerprint(paths: list[Path]) -> str:
    """A short, stable fingerprint of a set of files (names, sizes, modification times).

    Cheap enough for thousands of files: contents are not read.
    """
    digest = hashlib.sha256()
    for path in sorted(paths):
        try:
            stat = path.stat()
        except OSError:
            # A file deleted meanwhile or a broken link still counts, by name.
            stat = os.stat_result((0,) * 10)
        digest.update(f"{path.name}\0{stat.st_size}\0{int(stat.st_mtime)}\n".encode())
    return digest.hexdigest()[:16]
