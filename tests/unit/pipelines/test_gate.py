"""The promotion gate and the pipeline key: hand-computed cases."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from anomaly.pipelines.gate import gate
from anomaly.pipelines.train_and_promote import pipeline_key


def test_first_model_becomes_champion():
    decision = gate({"image_auroc": 0.7}, None, metric="image_auroc", margin=0.0)
    assert decision.promote and "no champion yet" in decision.reason


@pytest.mark.parametrize(
    ("candidate", "champion", "margin", "promote"),
    [
        (0.91, 0.90, 0.0, True),
        (0.90, 0.90, 0.0, False),  # a tie does not beat the champion
        (0.905, 0.90, 0.01, False),  # better, but by less than the margin
        (0.92, 0.90, 0.01, True),
        (0.80, 0.90, 0.0, False),
    ],
)
def test_candidate_must_beat_the_champion_by_more_than_the_margin(
    candidate, champion, margin, promote
):
    decision = gate(
        {"image_auroc": candidate}, {"image_auroc": champion}, metric="image_auroc", margin=margin
    )
    assert decision.promote is promote
    assert decision.candidate == candidate and decision.champion == champion
    assert f"{champion:.4f}" in decision.reason


def test_without_a_test_split_the_gate_holds_unless_told():
    held = gate({}, {"image_auroc": 0.9}, metric="image_auroc", margin=0.0)
    assert not held.promote and "no labelled test split" in held.reason
    forced = gate({}, None, metric="image_auroc", margin=0.0, promote_without_test_set=True)
    assert forced.promote


def test_missing_pixel_metric_is_named():
    decision = gate({"image_auroc": 0.9}, None, metric="pixel_aupro", margin=0.0)
    assert not decision.promote and "pixel_aupro" in decision.reason


def test_key_ignores_where_outputs_go_but_not_what_is_learned():
    base = OmegaConf.create(
        {"model": {"name": "cae"}, "trainer": {"max_epochs": 3, "resume": False},
         "output_dir": "a", "tracking": {"uri": "x"}, "seed": 0}
    )  # fmt: skip
    moved = OmegaConf.merge(base, {"output_dir": "b", "tracking": {"uri": "y"}})
    resumed = OmegaConf.merge(base, {"trainer": {"resume": True}})
    longer = OmegaConf.merge(base, {"trainer": {"max_epochs": 4}})
    key = pipeline_key(base, "data1")
    assert pipeline_key(moved, "data1") == key == pipeline_key(resumed, "data1")
    assert pipeline_key(longer, "data1") != key
    assert pipeline_key(base, "data2") != key
