"""The package's error types.

Every error a user can cause (a bad file, a bad config value, an unreachable server) is an
``AnomalyError`` whose message names the file or config key and says what to do. The CLI
turns these into one clear line and an exit code instead of a traceback.
"""

from __future__ import annotations

#: Exit code of a run that finished but skipped some inputs (listed in ``errors.csv``):
#: distinct from success (0) so that a scheduler notices, and from failure (1-4).
EXIT_COMPLETED_WITH_SKIPS = 5


class AnomalyError(Exception):
    """Base class of every error this package raises on purpose."""

    exit_code: int = 1


class ConfigError(AnomalyError):
    """A configuration value is missing, of the wrong type, or out of range."""

    exit_code = 2


class DataError(AnomalyError):
    """A data folder or data set does not have the expected layout or content."""

    exit_code = 3


class ImageReadError(DataError):
    """One image file cannot be read as an image.

    Args:
        path: The file that failed.
        reason: Words a quality engineer understands (``"file is empty"``).
    """

    def __init__(self, path: object, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{path}: {reason}")


class ModelFolderError(AnomalyError):
    """A model folder, checkpoint or calibration file is missing or invalid."""

    exit_code = 2


class TrackingError(AnomalyError):
    """The MLflow tracking store cannot be reached or refuses a request."""

    exit_code = 4


class LockedError(AnomalyError):
    """Another run holds the lock on the same folder; this run did nothing."""

    exit_code = 6


class OutputError(AnomalyError):
    """Results cannot be written (disk full, folder read-only); what was written is intact."""

    exit_code = 7


class TrainingInterruptedError(AnomalyError):
    """Training was stopped by Ctrl-C or SIGTERM after saving a checkpoint to resume from."""

    exit_code = 130
