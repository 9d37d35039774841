"""The model card's Markdown and tags, from hand-made facts."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from anomaly.scoring.calibration import Calibration
from anomaly.tracking.card import card_tags, gate_section, training_card
from anomaly.tracking.lineage import FileSet

CALIBRATION = Calibration(
    image_threshold=4.8912,
    pixel_threshold=0.42591,
    method="image:quantile,pixel:mad",
    params={"image": {"method": "quantile", "q": 0.99}, "pixel": {"method": "mad", "k": 4.0}},
    n_images=20,
)
FILES = [
    FileSet("parts/training", "training", Path("/data/parts"), pd.DataFrame({"path": ["a"]}), "d1"),
    FileSet("parts/test", "test", Path("/data/parts"), pd.DataFrame({"path": ["b", "c"]}), "d2"),
]


def test_the_card_states_data_thresholds_and_metrics_overall_and_per_class():
    metrics = {
        "image_auroc": 0.98765,
        "pixel_aupro": 0.5,
        "image_auroc/crack": 1.0,
        "pixel_aupro/stain": 0.25,
    }
    card = training_card(
        title="draem on parts",
        model={"model": "draem (loss l2_ssim)", "epochs": 30},
        file_sets=FILES,
        metrics=metrics,
        calibration=CALIBRATION,
    )
    lines = card.splitlines()
    assert lines[0] == "### draem on parts"
    assert "| epochs | 30 |" in lines
    assert "| training data | 1 photos from `/data/parts`, digest `d1` |" in lines
    assert "| test data | 2 photos from `/data/parts`, digest `d2` |" in lines
    assert "| image threshold | 4.891 (quantile q=0.99) |" in lines
    assert "| pixel threshold | 0.4259 (mad k=4.0) |" in lines
    assert "| fitted on | 20 validation photos (no defects) |" in lines
    assert "| **image AUROC** | **0.9877** |" in lines
    # Per class: only the columns some class has, a dash where one lacks it.
    assert "| class | image AUROC | AUPRO |" in lines
    assert "| crack | 1 | – |" in lines and "| stain | – | 0.25 |" in lines


def test_without_test_photos_the_card_says_there_are_no_metrics():
    card = training_card(
        title="cae on parts", model={}, file_sets=FILES[:1], metrics={}, calibration=CALIBRATION
    )
    assert "No labelled test photos: no detection metrics." in card
    assert "image AUROC" not in card


def test_tags_carry_digests_headline_metrics_and_thresholds():
    tags = card_tags(FILES, {"image_auroc": 0.98765, "image_auroc/crack": 1.0}, CALIBRATION)
    assert tags == {
        "data.digest.training": "d1",
        "data.digest.test": "d2",
        "metric.image_auroc": "0.9877",
        "threshold.image": "4.891",
        "threshold.pixel": "0.4259",
        "threshold.method": "image:quantile,pixel:mad",
    }


def test_the_gate_section_compares_with_the_champion():
    section = gate_section(
        decision="held",
        reason="0.91 does not beat 0.95 by 0.01",
        metric="image_auroc",
        candidate=0.91,
        champion=0.95,
        champion_version="3",
        margin=0.01,
    )
    assert "#### Gate: held" in section
    assert "| image_auroc | this version | version 3 | margin |" in section
    assert "| | 0.91 | 0.95 | 0.01 |" in section
    assert section.rstrip().endswith("0.91 does not beat 0.95 by 0.01")


def test_a_validation_photo_that_stands_out_is_named_on_the_card_and_in_the_cli():
    from dataclasses import replace

    from rich.console import Console

    from anomaly.cli.printers import look_at

    cal = replace(CALIBRATION, standouts=[{"path": "/data/parts/train/good/17.png", "score": 7.26}])
    card = training_card(title="t", model={}, file_sets=FILES, metrics={}, calibration=cal)
    assert (
        "| look at | `17.png`: a validation photo scoring 7.26, far above the others; if it "
        "is defective, the threshold rests on it |"
    ) in card.splitlines()
    assert card_tags(FILES, {}, cal)["threshold.standouts"] == "17.png"
    assert "threshold.standouts" not in card_tags(FILES, {}, CALIBRATION)
    assert "look at" not in training_card(
        title="t", model={}, file_sets=FILES, metrics={}, calibration=CALIBRATION
    )
    console = Console(record=True, width=300)
    look_at(console, cal, label="look at: ")
    look_at(console, None, label="look at: ")
    assert console.export_text().splitlines() == [
        "look at: /data/parts/train/good/17.png: a defect-free validation photo scoring 7.26, "
        "far above the others; if it is defective, the threshold rests on it: move it out of "
        "the training photos and train again"
    ]
