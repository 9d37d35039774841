"""Tags that tie a run to its model, without contacting a store for non-registry URIs."""

from __future__ import annotations

from anomaly.tracking.model import model_run_tags


def test_a_folder_is_tagged_by_its_path_and_id_only(tmp_path):
    # An unreachable store: a folder must not need it.
    tags = model_run_tags(str(tmp_path), model_id="abc", tracking_uri="http://127.0.0.1:9")
    assert tags == {"model.uri": str(tmp_path), "model.id": "abc"}


def test_a_run_uri_names_its_run():
    tags = model_run_tags("runs:/r123/model", model_id="abc", tracking_uri="http://127.0.0.1:9")
    assert tags == {"model.uri": "runs:/r123/model", "model.id": "abc", "model.run_id": "r123"}


def test_a_registry_uri_that_the_store_cannot_resolve_keeps_the_uri(tmp_path):
    uri = f"sqlite:///{tmp_path / 'empty.db'}"
    tags = model_run_tags("models:/part@champion", model_id="abc", tracking_uri=uri)
    assert tags == {"model.uri": "models:/part@champion", "model.id": "abc"}
