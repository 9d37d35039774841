"""What each job returns: typed results that the CLI prints and the pipelines read.

Every result is a :class:`JobResult`, so the exit code (inputs skipped, uploads missing)
and the sweep summary are read the same way from any command.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    # Only for the annotations: the CLI imports this module before deciding to load torch.
    from anomaly.scoring.calibration import Calibration
    from anomaly.scoring.results import ScoreSummary

# (path, reason) of an input that was skipped.
Skipped = list[tuple[str, str]]


@dataclass(kw_only=True)
class JobResult:
    """What every command's job reports.

    Attributes:
        tracking_uri: The MLflow store the job logged to ("" when it logged nothing).
        run_id: Its MLflow run (None when it made none).
        not_uploaded: What could not be logged to MLflow (local outputs are complete).
        report: The ``report.html`` the job wrote ("" when none).
    """

    tracking_uri: str = ""
    run_id: str | None = None
    not_uploaded: list[str] = field(default_factory=list)
    report: str = ""

    @property
    def n_skipped(self) -> int:
        """Inputs the job could not use (the exit code says so)."""
        return 0

    def to_dict(self) -> dict[str, Any]:
        """Plain form for JSON."""
        return asdict(self)


@dataclass(kw_only=True)
class Registered:
    """A registered model version."""

    name: str
    version: str
    uri: str


@dataclass(kw_only=True)
class TrainResult(JobResult):
    """What ``anomaly train`` did.

    Attributes:
        rank_zero: False on the other ranks of a distributed training (only rank 0 reports).
        model_dir: The model folder.
        output_dir: The run's output folder.
        experiment: The MLflow experiment.
        metrics: Test-set metrics (empty without a test split).
        calibration: The fitted thresholds.
        registered: The registered version (None when not registered).
        skipped: Unreadable training images.
        skipped_test: Unreadable test images or masks.
        train_seconds: Seconds of training.
        train_images_per_second: Training throughput.
        overrides: The command line's overrides (set by the CLI, for sweeps).
    """

    rank_zero: bool = True
    model_dir: str = ""
    output_dir: str = ""
    experiment: str = ""
    metrics: dict[str, float] = field(default_factory=dict)
    calibration: Calibration | None = None
    registered: Registered | None = None
    skipped: Skipped = field(default_factory=list)
    skipped_test: Skipped = field(default_factory=list)
    train_seconds: float = 0.0
    train_images_per_second: float = 0.0
    overrides: list[str] = field(default_factory=list)

    @property
    def n_skipped(self) -> int:
        """Unreadable training and test images."""
        return len(self.skipped) + len(self.skipped_test)


@dataclass(kw_only=True)
class ScoreResult(JobResult):
    """What ``anomaly score`` did: the folder's summary and where it is.

    Attributes:
        summary: The scored folder's counts, thresholds, seconds and timings.
        output_dir: The results folder.
        score_percentiles: Percentiles of the image scores.
    """

    summary: ScoreSummary
    output_dir: str = ""
    score_percentiles: dict[str, float] = field(default_factory=dict)

    @property
    def n_skipped(self) -> int:
        """Files that got no verdict."""
        return self.summary.n_errors


@dataclass(kw_only=True)
class EvaluateResult(JobResult):
    """What ``anomaly evaluate`` did."""

    model: str = ""
    metrics: dict[str, float] = field(default_factory=dict)
    pixel_metrics_at: str | None = None
    n_images: int = 0
    skipped: Skipped = field(default_factory=list)
    output_dir: str = ""

    @property
    def n_skipped(self) -> int:
        """Unreadable test images or masks."""
        return len(self.skipped)


@dataclass(kw_only=True)
class CalibrateResult(JobResult):
    """What ``anomaly calibrate`` did: the new thresholds beside the old."""

    calibration: Calibration
    previous: dict[str, float] | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    path: str = ""
    unreadable: int = 0

    @property
    def n_skipped(self) -> int:
        """Validation images that could not be read (named in the log)."""
        return self.unreadable


@dataclass(kw_only=True)
class PromoteResult(JobResult):
    """What ``anomaly promote`` did."""

    name: str
    alias: str
    version: str
    previous: str | None = None


@dataclass(kw_only=True)
class DemoResult(JobResult):
    """What ``make demo`` did: its training and its scoring of the test images."""

    train: TrainResult
    score: ScoreResult
