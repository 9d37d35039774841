"""Move a registry alias (``champion`` by default) to a model version."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig

from anomaly.tracking.mlflow_logger import check_reachable, resolve_tracking_uri
from anomaly.tracking.model import set_alias


def promote(cfg: DictConfig) -> dict[str, Any]:
    """Point ``cfg.alias`` of registered model ``cfg.name`` at version ``cfg.version``.

    Returns:
        ``name``, ``alias``, ``version``, ``previous`` (the version it pointed at before, or
        None) and ``tracking_uri``.
    """
    uri = resolve_tracking_uri(cfg.tracking.uri)
    check_reachable(uri)
    previous = set_alias(uri, str(cfg.name), str(cfg.alias), str(cfg.version))
    return {
        "name": str(cfg.name),
        "alias": str(cfg.alias),
        "version": str(cfg.version),
        "previous": previous,
        "tracking_uri": uri,
    }
