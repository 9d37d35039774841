"""Model registry look-ups the pipelines need: versions by tag, the version behind an alias."""

from __future__ import annotations

from dataclasses import dataclass, field

import mlflow

from anomaly.errors import TrackingError
from anomaly.tracking.store import ensure_store


@dataclass(frozen=True)
class Version:
    """One registered model version, with its tags and the metrics of the run behind it."""

    name: str
    version: str
    run_id: str | None
    tags: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)

    @property
    def uri(self) -> str:
        """``models:/<name>/<version>``."""
        return f"models:/{self.name}/{self.version}"


# Error codes of "no such model / alias", as opposed to an unreachable store.
_MISSING = {"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"}


def _client(uri: str) -> mlflow.MlflowClient:
    ensure_store(uri)
    return mlflow.MlflowClient(uri)


def _version(client: mlflow.MlflowClient, mv: object) -> Version:
    run_id = getattr(mv, "run_id", None) or None
    metrics: dict[str, float] = {}
    if run_id:
        try:
            metrics = dict(client.get_run(run_id).data.metrics)
        except Exception:
            # A deleted run: the version still exists, its metrics do not.
            metrics = {}
    return Version(
        name=str(mv.name),  # type: ignore[attr-defined]
        version=str(mv.version),  # type: ignore[attr-defined]
        run_id=run_id,
        tags=dict(mv.tags or {}),  # type: ignore[attr-defined]
        metrics=metrics,
    )


def version_by_alias(uri: str, name: str, alias: str) -> Version | None:
    """The version ``alias`` points at, or None when the model or the alias does not exist.

    Raises:
        TrackingError: The store cannot be reached.
    """
    client = _client(uri)
    try:
        mv = client.get_model_version_by_alias(name, alias)
    except mlflow.exceptions.MlflowException as exc:
        if exc.error_code in _MISSING:
            return None
        raise TrackingError(f"cannot read alias {name}@{alias} from {uri}: {exc}") from exc
    return _version(client, mv)


def version_by_tag(uri: str, name: str, key: str, value: str) -> Version | None:
    """The newest version of ``name`` whose tag ``key`` equals ``value``, or None.

    Raises:
        TrackingError: The store cannot be reached.
    """
    client = _client(uri)
    try:
        found = client.search_model_versions(f"name = '{name}' and tags.`{key}` = '{value}'")
    except mlflow.exceptions.MlflowException as exc:
        raise TrackingError(f"cannot search versions of {name!r} in {uri}: {exc}") from exc
    if not found:
        return None
    newest = max(found, key=lambda mv: int(mv.version))
    return _version(client, newest)


def tag_version(uri: str, name: str, version: str, tags: dict[str, str]) -> None:
    """Set tags on a registered model version (shown in the registry UI).

    Raises:
        TrackingError: The store cannot be reached.
    """
    client = _client(uri)
    try:
        for key, value in tags.items():
            client.set_model_version_tag(name, version, key, value)
    except mlflow.exceptions.MlflowException as exc:
        raise TrackingError(f"cannot tag {name} version {version} in {uri}: {exc}") from exc


def describe_version(
    uri: str, name: str, version: str, *, description: str, tags: dict[str, str] | None = None
) -> None:
    """Set a registered model version's description (Markdown) and tags.

    Raises:
        TrackingError: The store cannot be reached.
    """
    client = _client(uri)
    try:
        client.update_model_version(name, version, description=description)
    except Exception as exc:
        raise TrackingError(f"cannot describe {name} version {version} in {uri}: {exc}") from exc
    if tags:
        tag_version(uri, name, version, tags)


def version_description(uri: str, name: str, version: str) -> str:
    """A registered model version's description ("" when it has none).

    Raises:
        TrackingError: The store cannot be reached or has no such version.
    """
    try:
        return _client(uri).get_model_version(name, version).description or ""
    except Exception as exc:
        raise TrackingError(f"cannot read {name} version {version} in {uri}: {exc}") from exc
