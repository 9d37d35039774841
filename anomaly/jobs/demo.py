"""The demo: make the embedded data set, train, score its test images."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from anomaly.data.demo import make_demo_dataset
from anomaly.jobs.results import DemoResult
from anomaly.jobs.score import run_scoring
from anomaly.jobs.train import train
from anomaly.scoring.stream import Progress


def demo(cfg: DictConfig, *, progress: Progress | None = None) -> DemoResult:
    """Run the whole product once on generated data (``anomaly demo``).

    Returns:
        The training's result and the scoring's.
    """
    demo_cfg = OmegaConf.to_container(cfg.demo, resolve=True)
    root = make_demo_dataset(cfg.data.root, **demo_cfg)
    trained = train(cfg)
    scored = run_scoring(
        model=trained.model_dir,
        input_dir=Path(root) / "test",
        output_dir=Path(trained.output_dir) / "score",
        tracking_uri=trained.tracking_uri,
        experiment=str(cfg.tracking.experiment),
        batch_size=int(cfg.scoring.batch_size),
        num_workers=int(cfg.scoring.num_workers),
        progress=progress,
    )
    return DemoResult(train=trained, score=scored)
