"""The promotion gate.

Compares a candidate with the champion on one metric, and records the decision where the
registry shows it: version tags, the version's card, a child run.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from omegaconf import DictConfig

from anomaly.tracking.card import gate_section
from anomaly.tracking.mlflow_logger import (
    base_tags,
    start_run,
)
from anomaly.tracking.model import set_alias
from anomaly.tracking.registry import (
    Version,
    describe_version,
    tag_version,
    version_description,
)

log = logging.getLogger(__name__)


DECISION_TAG = "gate.decision"


REASON_TAG = "gate.reason"


# Metrics the evaluation reports, all better when higher.
GATE_METRICS = (
    "image_auroc",
    "image_ap",
    "image_f1",
    "image_best_f1",
    "pixel_auroc",
    "pixel_aupro",
)


@dataclass(frozen=True)
class GateDecision:
    """Outcome of comparing a candidate with the champion on one metric."""

    promote: bool
    reason: str
    metric: str
    candidate: float | None
    champion: float | None
    margin: float

    @property
    def word(self) -> str:
        """``promoted`` or ``held``."""
        return "promoted" if self.promote else "held"


def gate(
    candidate: dict[str, float],
    champion: dict[str, float] | None,
    *,
    metric: str,
    margin: float,
    promote_without_test_set: bool = False,
) -> GateDecision:
    """Decide whether a candidate replaces the champion.

    Every metric the evaluation reports (AUROC, AP, F1, AUPRO) is better when higher; the
    candidate is promoted when it beats the champion by more than ``margin``.

    Args:
        candidate: The candidate's test-set metrics (empty without a labelled test split).
        champion: The champion's metrics on the same test split, or None without a champion.
        metric: Metric name compared, e.g. ``image_auroc``.
        margin: Improvement the candidate must exceed, in the metric's units.
        promote_without_test_set: Promote when there is nothing to compare on.

    Returns:
        The decision and a sentence that says why.
    """
    value = candidate.get(metric)
    if value is None:
        if candidate:
            reason = f"the test split gives no {metric} (pixel metrics need masks)"
        else:
            reason = "no labelled test split to compare on"
        if promote_without_test_set:
            reason += " and pipeline.gate.promote_without_test_set=true"
        else:
            reason += "; promote by hand with `anomaly promote` after a look"
        return GateDecision(promote_without_test_set, reason, metric, None, None, margin)
    if champion is None:
        return GateDecision(
            True, "no champion yet: the first model becomes champion", metric, value, None, margin
        )
    best = champion.get(metric)
    if best is None:
        return GateDecision(
            True, f"the champion has no {metric} on this test split", metric, value, None, margin
        )
    gain = value - best
    if gain > margin:
        reason = f"{metric} {value:.4f} beats the champion's {best:.4f} by {gain:+.4f} > {margin}"
    else:
        reason = (
            f"{metric} {value:.4f} vs the champion's {best:.4f} ({gain:+.4f}) does not beat it "
            f"by more than the margin {margin}"
        )
    return GateDecision(gain > margin, reason, metric, value, best, margin)


def record_gate(
    cfg: DictConfig,
    decision: GateDecision,
    name: str,
    alias: str,
    version: str,
    champion: Version | None,
    uri: str,
) -> str | None:
    """Record the decision (child run, version tags) and move the alias when promoted.

    Returns:
        The version the alias points at afterwards.
    """
    with start_run(
        uri=uri,
        experiment=str(cfg.tracking.experiment),
        run_name="gate",
        tags=base_tags(kind="gate") | {DECISION_TAG: decision.word},
    ) as run:
        run.params(
            {
                "metric": decision.metric,
                "margin": decision.margin,
                "candidate.version": version,
                "champion.version": champion.version if champion else "none",
            }
        )
        values = {"candidate": decision.candidate, "champion": decision.champion}
        run.metrics({k: v for k, v in values.items() if v is not None})
        run.text(decision.reason + "\n", "decision.txt")
        if decision.promote:
            set_alias(uri, name, alias, version)
            log.info("promoted %s version %s to @%s: %s", name, version, alias, decision.reason)
        else:
            log.warning("%s version %s stays candidate: %s", name, version, decision.reason)
        run.call("the gate on the card", _describe_gate, uri, name, version, decision, champion)
        # Last: the decision tag is what tells a rerun that this version is done.
        tag_version(uri, name, version, {REASON_TAG: decision.reason, DECISION_TAG: decision.word})
    return version if decision.promote else (champion.version if champion else None)


def _describe_gate(
    uri: str, name: str, version: str, decision: GateDecision, champion: Version | None
) -> None:
    """Append the gate's comparison to the version's card, and set it as tags."""
    section = gate_section(
        decision=decision.word,
        reason=decision.reason,
        metric=decision.metric,
        candidate=decision.candidate,
        champion=decision.champion,
        champion_version=champion.version if champion else None,
        margin=decision.margin,
    )
    tags = {
        "gate.metric": decision.metric,
        "gate.margin": str(decision.margin),
        "gate.champion_version": champion.version if champion else "none",
    }
    for key in ("candidate", "champion"):
        value = getattr(decision, key)
        if value is not None:
            tags[f"gate.{key}"] = f"{value:.4g}"
    card = version_description(uri, name, version)
    describe_version(uri, name, version, description=card + section, tags=tags)
