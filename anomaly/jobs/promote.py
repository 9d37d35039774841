"""Move a registry alias (``champion`` by default) to a model version."""

from __future__ import annotations

from omegaconf import DictConfig

from anomaly.jobs.results import PromoteResult
from anomaly.tracking.mlflow_logger import check_reachable, resolve_tracking_uri
from anomaly.tracking.model import set_alias


def promote(cfg: DictConfig) -> PromoteResult:
    """Point ``cfg.alias`` of registered model ``cfg.name`` at version ``cfg.version``.

    Returns:
        The alias, its new version and the one it pointed at before (or None).
    """
    uri = resolve_tracking_uri(cfg.tracking.uri)
    check_reachable(uri)
    previous = set_alias(uri, str(cfg.name), str(cfg.alias), str(cfg.version))
    return PromoteResult(
        name=str(cfg.name),
        alias=str(cfg.alias),
        version=str(cfg.version),
        previous=previous,
        tracking_uri=uri,
    )
