"""Nightly retraining: train, calibrate, evaluate, compare with the champion, promote or hold.

One MLflow parent run (``train_and_promote``) holds a child run per step: ``train-...``
(training, calibration on the held-out defect-free images and evaluation on the labelled
test split, as ``anomaly train`` does), ``evaluate-champion`` (the current champion scored
on the same test split, now) and ``gate`` (the decision and why).

A run is keyed by what it would learn from: the resolved training config and a
fingerprint of the data files. The key is stored as a tag of the registered version, so
a rerun with nothing new does no work, and a rerun after a crash picks up where the crash
left it (training resumes from its last checkpoint; a registered but undecided version
goes straight to the gate).
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import mlflow
from omegaconf import DictConfig, OmegaConf

from anomaly.data.folder import fingerprint, scan_dataset
from anomaly.errors import ConfigError
from anomaly.io import read_errors_csv
from anomaly.jobs.checks import check_config
from anomaly.jobs.results import JobResult, Skipped, TrainResult
from anomaly.pipelines.gate import (
    DECISION_TAG,
    GATE_METRICS,
    REASON_TAG,
    GateDecision,
    gate,
    record_gate,
)
from anomaly.pipelines.lock import locked
from anomaly.scoring.evaluation import evaluate
from anomaly.tracking.mlflow_logger import (
    base_tags,
    check_reachable,
    resolve_tracking_uri,
    start_run,
)
from anomaly.tracking.model import load_model
from anomaly.tracking.registry import (
    Version,
    tag_version,
    version_by_alias,
    version_by_tag,
)

log = logging.getLogger(__name__)

KEY_TAG = "pipeline.key"
# Config sections that do not change what is learned: where things go, how they are logged.
_NOT_IN_KEY = ("output_dir", "tracking", "pipeline", "hydra")


def pipeline_key(cfg: DictConfig, data_fingerprint: str) -> str:
    """Identity of a training: its resolved config (what is learned) and its data files."""
    container = cast(dict[str, Any], OmegaConf.to_container(cfg, resolve=False))
    learned = {k: v for k, v in container.items() if k not in _NOT_IN_KEY}
    # The trainer's resume switch says how, not what, to train.
    if isinstance(learned.get("trainer"), dict):
        learned["trainer"] = {k: v for k, v in learned["trainer"].items() if k != "resume"}
    text = json.dumps(learned, sort_keys=True, default=str) + data_fingerprint
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(kw_only=True)
class PipelineResult(JobResult):
    """What one run of the pipeline planned and, when it ran, decided.

    Attributes:
        key: The key of the data and the config (the registered version's tag).
        name: The registered model.
        alias: The champion alias.
        action: ``dry_run``, ``up_to_date`` or ``done``.
        plan: What it would do or did, in sentences.
        version: The candidate version (the existing one when up to date).
        decision: The gate's decision (``done`` only).
        champion_before: The champion's version before the gate, or None.
        champion_after: The champion's version after it, or None.
        train: The training's result (None when the version existed).
        model_dir: The candidate's model folder.
        skipped: Unreadable training images.
        skipped_test: Unreadable test images (the command exits 5).
        test_errors_csv: Where those are listed.
    """

    key: str
    name: str
    alias: str
    action: str
    plan: list[str] = field(default_factory=list)
    version: str | None = None
    decision: GateDecision | None = None
    champion_before: str | None = None
    champion_after: str | None = None
    train: TrainResult | None = None
    model_dir: str = ""
    skipped: Skipped = field(default_factory=list)
    skipped_test: Skipped = field(default_factory=list)
    test_errors_csv: str = ""

    @property
    def n_skipped(self) -> int:
        """Unreadable training and test images."""
        return len(self.skipped) + len(self.skipped_test)


def train_and_promote(cfg: DictConfig, *, dry_run: bool = False) -> PipelineResult:
    """Run the pipeline (``conf/train_and_promote.yaml``).

    Args:
        cfg: The training config plus a ``pipeline`` section (gate, work folder).
        dry_run: Only say what would be done.

    Returns:
        What was planned and, when it ran, decided (:class:`PipelineResult`). A run resumed
        at the gate reports what the attempt that trained the version could not read.

    Raises:
        LockedError: Another run of the pipeline works on the same registered model.
    """
    check_config(cfg)
    p = cfg.pipeline
    name = cfg.tracking.registered_model
    if not name:
        raise ConfigError(
            "tracking.registered_model is empty; the pipeline registers each model and moves "
            "the champion alias, so give it a registry name (default: anomaly)"
        )
    name, alias = str(name), str(p.alias)
    if str(p.gate.metric) not in GATE_METRICS:
        raise ConfigError(
            f"pipeline.gate.metric={p.gate.metric} is not a metric the evaluation reports; "
            f"use one of {', '.join(GATE_METRICS)}"
        )
    if dry_run:
        return _pipeline(cfg, name, alias, dry_run=True)
    # One run per registered name at a time: two would both find no version for the key and
    # train the same model twice.
    with locked(Path(str(p.work_dir)).resolve() / f"{name}.lock"):
        return _pipeline(cfg, name, alias, dry_run=False)


def _pipeline(cfg: DictConfig, name: str, alias: str, *, dry_run: bool) -> PipelineResult:
    p = cfg.pipeline
    splits = scan_dataset(cfg.data.root, mask_suffix=str(cfg.data.mask_suffix))
    data_fp = fingerprint([s.path for s in [*splits.train, *splits.test]])
    key = pipeline_key(cfg, data_fp)
    uri = resolve_tracking_uri(cfg.tracking.uri)
    check_reachable(uri)
    existing = version_by_tag(uri, name, KEY_TAG, key)
    champion = version_by_alias(uri, name, alias)
    work = Path(str(p.work_dir)).resolve() / key
    base = {"key": key, "tracking_uri": uri, "name": name, "alias": alias}

    if existing is not None and DECISION_TAG in existing.tags:
        sentence = (
            f"nothing to do: {name} version {existing.version} was trained from this data and "
            f"config (key {key}) and {existing.tags[DECISION_TAG]}: "
            f"{existing.tags.get(REASON_TAG, '')}"
        )
        log.info(sentence)
        return PipelineResult(
            **base, action="up_to_date", plan=[sentence], version=existing.version
        )

    plan = _plan(cfg, splits, existing, champion, work, name, alias)
    if dry_run:
        return PipelineResult(**base, action="dry_run", plan=plan)
    for line in plan:
        log.info("plan: %s", line)

    tags = base_tags(kind="pipeline") | {KEY_TAG: key, "pipeline.name": "train_and_promote"}
    with start_run(
        uri=uri,
        experiment=str(cfg.tracking.experiment),
        run_name="train_and_promote",
        tags=tags,
        required=True,
    ) as parent:
        parent.params(
            {
                "data.root": str(splits.root.resolve()),
                "data.fingerprint": data_fp,
                "model": str(cfg.model.name),
                "loss": str(cfg.loss.name),
                "gate.metric": str(p.gate.metric),
                "gate.margin": float(p.gate.margin),
                "key": key,
            }
        )
        trained: TrainResult | None = None
        test_errors_csv = work / "evaluation" / "errors.csv"
        if existing is None:
            trained = _train_step(cfg, work)
            reg = trained.registered
            if not reg:
                raise ConfigError(
                    "the trained model was not registered (see the warnings above); the gate "
                    "needs a registered version"
                )
            version = str(reg.version)
            tag_version(uri, name, version, {KEY_TAG: key})
            candidate_metrics = dict(trained.metrics)
            model_dir = Path(trained.model_dir)
            skipped = list(trained.skipped)
            skipped_test = list(trained.skipped_test)
        else:
            # Registered by a run that died before its gate: straight to the gate.
            version = existing.version
            candidate_metrics = _test_metrics(existing)
            model_dir = work / "model"
            # The attempt that registered it evaluated it and listed what it could not read;
            # without this a resumed run would exit 0 where that one would have exited 5.
            skipped = read_errors_csv(work / "errors.csv")
            skipped_test = read_errors_csv(test_errors_csv)
            log.info("resuming: %s version %s is registered, not yet gated", name, version)
        champion_metrics = (
            _evaluate_champion(cfg, champion, splits.test, uri, work / "evaluate-champion")
            if champion is not None and splits.test
            else None
        )
        decision = gate(
            candidate_metrics,
            champion_metrics,
            metric=str(p.gate.metric),
            margin=float(p.gate.margin),
            promote_without_test_set=bool(p.gate.promote_without_test_set),
        )
        champion_after = record_gate(cfg, decision, name, alias, version, champion, uri)
        parent.metrics(
            {f"candidate/{k}": v for k, v in candidate_metrics.items() if "/" not in k}
            | {f"champion/{k}": v for k, v in (champion_metrics or {}).items() if "/" not in k}
            | {"promoted": float(decision.promote)}
        )
        parent.call(
            "the decision tag",
            mlflow.set_tags,
            {
                DECISION_TAG: decision.word,
                REASON_TAG: decision.reason,
                "candidate.version": version,
            },
        )
    return PipelineResult(
        **base,
        action="done",
        plan=plan,
        version=version,
        decision=decision,
        champion_before=champion.version if champion else None,
        champion_after=champion_after,
        run_id=parent.run_id,
        train=trained,
        model_dir=str(model_dir),
        not_uploaded=list(parent.failed) + (trained.not_uploaded if trained else []),
        skipped=skipped,
        # The champion is evaluated on the same test split: the same images are skipped.
        skipped_test=skipped_test,
        test_errors_csv=str(test_errors_csv),
    )


def _plan(
    cfg: DictConfig,
    splits: Any,
    existing: Version | None,
    champion: Version | None,
    work: Path,
    name: str,
    alias: str,
) -> list[str]:
    """What a run would do, in sentences (``--dry-run`` prints them)."""
    p = cfg.pipeline
    lines = []
    if existing is None:
        resumes = (work / "checkpoints" / "last.ckpt").is_file()
        lines.append(
            f"{'resume' if resumes else 'train'} model={cfg.model.name} loss={cfg.loss.name} "
            f"for {cfg.trainer.max_epochs} epochs on {len(splits.train)} defect-free images "
            f"from {splits.root} (work folder {work})"
        )
        lines.append(f"register it as a new version of {name}")
    else:
        lines.append(f"{name} version {existing.version} is already trained: skip training")
    if splits.test:
        lines.append(f"evaluate on the {len(splits.test)} labelled test images")
    else:
        lines.append("no labelled test split: nothing to compare on")
    if champion is None:
        lines.append(f"no {name}@{alias} yet: the new version becomes {alias}")
    else:
        lines.append(
            f"compare with {name}@{alias} (version {champion.version}) on "
            f"{p.gate.metric}, promoting only when it gains more than {p.gate.margin}"
        )
    return lines


def _train_step(cfg: DictConfig, work: Path) -> TrainResult:
    """The training job as a child run, in a work folder fixed by the key (so it resumes)."""
    from anomaly.jobs.train import train

    run_cfg = OmegaConf.merge(cfg, {"output_dir": str(work)})
    if (work / "checkpoints" / "last.ckpt").is_file():
        log.info("a previous run was cut off: resuming from %s", work / "checkpoints")
        run_cfg.trainer.resume = True
    return train(run_cfg)


def _test_metrics(version: Version) -> dict[str, float]:
    """The test-set metrics the training run of ``version`` logged."""
    prefixes = ("calibration/", "train/", "val/", "system/", "seconds")
    return {
        k: v
        for k, v in version.metrics.items()
        if not k.startswith(prefixes) and not k.startswith("train_")
    }


def _evaluate_champion(
    cfg: DictConfig, champion: Version, test: list[Any], uri: str, folder: Path
) -> dict[str, float]:
    """Score the champion on the same test split the candidate was evaluated on.

    Its scores, curves and histogram go to ``folder`` and its run, as a training's do.
    """
    from anomaly.jobs.evaluate import evaluation_options, log_evaluation

    with start_run(
        uri=uri,
        experiment=str(cfg.tracking.experiment),
        run_name="evaluate-champion",
        tags=base_tags(kind="evaluate") | {"model.version": champion.version},
    ) as run:
        detector = load_model(champion.uri, tracking_uri=uri)
        evaluation = evaluate(
            detector,
            test,
            batch_size=int(cfg.scoring.batch_size),
            num_workers=int(cfg.scoring.num_workers),
            **evaluation_options(cfg),
        )
        run.params({"model": champion.uri, "n_test": len(test)})
        log_evaluation(
            run,
            evaluation,
            detector,
            folder,
            model=champion.uri,
            version_tags={"model.name": champion.name, "model.version": str(champion.version)},
        )
    log.info("champion version %s on this test split: %s", champion.version, evaluation.metrics)
    return dict(evaluation.metrics)
