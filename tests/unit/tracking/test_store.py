"""The embedded store's preparation: fresh, older schema with runs, unrepairable, paths."""

from __future__ import annotations

import contextlib
import logging
import sqlite3
from pathlib import Path

import pytest
import sqlalchemy
from alembic import command
from mlflow.store.db.utils import _get_alembic_config, _get_latest_schema_revision
from mlflow.tracking import MlflowClient

from anomaly.errors import TrackingError
from anomaly.tracking.store import ensure_store, sqlite_path

HEAD = _get_latest_schema_revision()


def _revision(db: Path) -> str:
    with contextlib.closing(sqlite3.connect(db)) as con:
        return con.execute("SELECT version_num FROM alembic_version").fetchone()[0]


def _runs(db: Path) -> list[str]:
    # sqlite3, not MlflowClient: MLflow keeps its connections to the file it opened first.
    with contextlib.closing(sqlite3.connect(db)) as con:
        return [row[0] for row in con.execute("SELECT run_uuid FROM runs")]


def _store_with_a_run(db: Path) -> str:
    ensure_store(f"sqlite:///{db}")
    client = MlflowClient(f"sqlite:///{db}")
    experiment = client.create_experiment("part-7", artifact_location=db.parent.as_uri())
    return client.create_run(experiment).info.run_id


def test_sqlite_paths_absolute_relative_and_others():
    assert sqlite_path("sqlite:////srv/ml/mlflow.db") == Path("/srv/ml/mlflow.db")
    assert sqlite_path("sqlite:///mlruns/mlflow.db?timeout=5") == Path("mlruns/mlflow.db")
    assert sqlite_path("sqlite:///:memory:") is None
    assert sqlite_path("http://127.0.0.1:5000") is None
    assert sqlite_path("postgresql://db/mlflow") is None


def test_a_new_store_is_complete_and_nothing_temporary_is_left(tmp_path):
    db = tmp_path / "deep" / "mlflow.db"
    ensure_store(f"sqlite:///{db}")
    assert _revision(db) == HEAD
    assert sorted(p.name for p in db.parent.iterdir()) == [".mlflow.db.lock", "mlflow.db"]


def test_an_older_schema_with_runs_is_upgraded_and_the_original_kept(tmp_path, caplog):
    db = tmp_path / "mlflow.db"
    run_id = _store_with_a_run(db)
    # What an older MLflow left: the same store one migration behind.
    config = _get_alembic_config(f"sqlite:///{db}")
    engine = sqlalchemy.create_engine(f"sqlite:///{db}")
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, "-1")
    engine.dispose()
    older = _revision(db)
    assert older != HEAD

    with caplog.at_level(logging.WARNING, logger="anomaly.tracking.store"):
        ensure_store(f"sqlite:///{db}")
    assert _revision(db) == HEAD
    assert _runs(db) == [run_id]
    backup = tmp_path / f"mlflow.db.before-upgrade-{older}"
    assert _revision(backup) == older
    assert "upgraded" in caplog.text and str(backup) in caplog.text


def test_an_unrepairable_store_with_runs_is_set_aside_whole(tmp_path, caplog):
    db = tmp_path / "mlflow.db"
    _store_with_a_run(db)
    with contextlib.closing(sqlite3.connect(db)) as con:
        con.execute("UPDATE alembic_version SET version_num = 'f00dfeedf00d'")
        con.commit()

    with caplog.at_level(logging.WARNING, logger="anomaly.tracking.store"):
        ensure_store(f"sqlite:///{db}")
    assert _revision(db) == HEAD
    assert _runs(db) == []
    (aside,) = tmp_path.glob("mlflow.db.incomplete-*")
    assert len(_runs(aside)) == 1
    assert "could not be upgraded" in caplog.text and str(aside) in caplog.text


def test_a_file_that_is_not_a_database_is_set_aside(tmp_path, caplog):
    db = tmp_path / "mlflow.db"
    db.write_bytes(b"\x00garbage from a disk error" * 100)
    with caplog.at_level(logging.WARNING, logger="anomaly.tracking.store"):
        ensure_store(f"sqlite:///{db}")
    assert _revision(db) == HEAD
    (aside,) = tmp_path.glob("mlflow.db.incomplete-*")
    assert aside.read_bytes().startswith(b"\x00garbage")
    assert "moved to" in caplog.text


def test_a_store_that_cannot_be_created_names_the_file(tmp_path):
    blocker = tmp_path / "mlruns"
    blocker.write_text("not a folder")
    with pytest.raises(TrackingError, match=r"mlruns/mlflow\.db cannot be prepared"):
        ensure_store(f"sqlite:///{blocker / 'mlflow.db'}")
