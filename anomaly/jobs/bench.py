"""The benchmark: quality and speed of each model, measured the same way every time.

For each configured model at a fixed budget: train, calibrate, evaluate, and score the
test set end to end (decode, preprocess, maps, regions, writing outputs), timing each
stage. Then the scoring speed of the convolutional AE at each ``speed_sizes`` input size,
its forward pass in GFLOP/s against this machine's fp32 matmul peak (measured in the same
run), and the peak resident memory.
"""

from __future__ import annotations

import logging
import resource
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig
from PIL import Image
from torch.utils.flop_counter import FlopCounterMode

from anomaly.data.folder import Sample, check_data_root, scan_dataset
from anomaly.data.transforms import Preprocess
from anomaly.errors import ConfigError, DataError
from anomaly.io import write_json_atomic, write_text_atomic
from anomaly.jobs.score import run_scoring
from anomaly.jobs.train import train
from anomaly.model_folder import load_detector
from anomaly.models.conv_ae import ConvAutoencoder
from anomaly.models.inspection import Wants
from anomaly.scoring.calibration import Calibration
from anomaly.scoring.detector import Detector
from anomaly.scoring.maps import MapSettings
from anomaly.scoring.results import score_folder
from anomaly.scoring.writer import OutputSettings
from anomaly.tracking.lineage import file_set, log_file_sets
from anomaly.tracking.mlflow_logger import base_tags, flatten, resolve_tracking_uri, start_run

log = logging.getLogger(__name__)


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def matmul_peak_gflops(size: int = 1024, seconds: float = 1.0) -> float:
    """Sustained fp32 matmul throughput of this machine (all threads torch uses)."""
    a, b = torch.rand(size, size), torch.rand(size, size)
    torch.mm(a, b)
    n, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        torch.mm(a, b)
        n += 1
    return 2 * size**3 * n / (time.perf_counter() - started) / 1e9


def _calls_per_second(call: Callable[[], object], seconds: float) -> float:
    """How often ``call`` runs per second, after one warm-up call, over ``seconds``."""
    call()
    n, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        call()
        n += 1
    return n / (time.perf_counter() - started)


@torch.inference_mode()
def forward_speed(
    model: torch.nn.Module, batch: torch.Tensor, *, seconds: float = 1.5
) -> dict[str, float]:
    """Images/s and effective GFLOP/s of ``model``'s forward pass on ``batch``."""
    model.eval()
    with FlopCounterMode(display=False) as counter:
        model(batch)
    flops = counter.get_total_flops()
    rate = _calls_per_second(lambda: model(batch), seconds)
    return {
        "forward_images_per_second": rate * batch.shape[0],
        "forward_gflops": flops * rate / 1e9,
        "flops_per_image": flops / batch.shape[0],
    }


@torch.inference_mode()
def network_speed(detector: Detector, batch_size: int, *, seconds: float = 1.5) -> float:
    """Images/s of the trained networks' anomaly maps alone, on batches of model inputs.

    The model's forward pass as the detector runs it when scoring (passes of as many photos
    as with its add-ons), unsmoothed; no decoding, feature score, patch map, regions or
    writing: the ceiling that end-to-end scoring (``score img/s``) is measured against.
    """
    h, w = detector.preprocess.image_size
    batch = torch.rand(batch_size, detector.preprocess.channels, h, w)
    # The maps alone: the model's own, or its reconstructions' error maps.
    maps_only = Detector(detector.model, detector.preprocess, detector.maps)
    size = detector.pass_size(detector.scoring_wants())

    def passes() -> None:
        for i in range(0, batch_size, size):
            maps_only._pass(batch[i : i + size], Wants())

    return _calls_per_second(passes, seconds) * batch_size


def tables_only_speed(detector: Detector, images: Path, out: Path, batch_size: int) -> float:
    """Images/s of scoring ``images`` end to end without writing the per-image pictures.

    Beside the full ``score img/s`` it shows what masks, heatmaps and overlays cost: PNG
    encoding that shares the cores with the networks.
    """
    pictures_off = OutputSettings(masks=False, heatmaps=False, overlays=False, parquet=False)
    summary = score_folder(detector, images, out, batch_size=batch_size, outputs=pictures_off)
    return summary.images_per_second


def _train_config(
    bench: DictConfig, conf_dir: Path, name: str, overrides: list[str], out: Path
) -> DictConfig:
    if bench.quick:
        budget = list(bench.quick_budget)
    else:
        budget = [] if name in (bench.get("as_a_user") or ()) else list(bench.budget)
    fixed = [
        f"data.root={bench.data_root}",
        f"seed={bench.seed}",
        "trainer.progress_bar=false",
        f"output_dir={out / 'runs' / name}",
        "tracking.experiment=bench",
        "tracking.registered_model=null",
        "tracking.samples_every_n_epochs=0",
        f"tracking.required={bool(bench.tracking.required)}",
    ]
    if bench.tracking.uri:
        fixed.append(f"tracking.uri={bench.tracking.uri}")
    # An entry's own budget beats the common one; in quick mode the quick budget beats both
    # (quick only checks that every model runs).
    overrides = [*overrides, *budget] if bench.quick else [*budget, *overrides]
    overrides = [*overrides, *fixed]
    # Under `anomaly bench` Hydra is initialised on the same config folder already.
    if GlobalHydra.instance().is_initialized():
        return compose("config", overrides=overrides)
    with initialize_config_dir(version_base="1.3", config_dir=str(conf_dir)):
        return compose("config", overrides=overrides)


def run_bench(cfg: DictConfig, *, conf_dir: Path) -> dict[str, Any]:
    """Run the benchmark described by ``bench.yaml``.

    Returns:
        The results (also written to ``<output>/results.json`` and ``results.md``).
    """
    root = check_data_root(cfg.data_root, key="data_root")
    splits = scan_dataset(root)
    if not splits.test:
        raise DataError(f"{root} has no test/ split: the benchmark needs labelled test images")
    out = Path(cfg.output).resolve()
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    results: dict[str, Any] = {
        "data_root": str(root.resolve()),
        "quick": bool(cfg.quick),
        "budget": list(cfg.quick_budget if cfg.quick else cfg.budget),
        "threads": torch.get_num_threads(),
        "matmul_peak_gflops": matmul_peak_gflops(),
        "models": {},
        "speed": {},
    }
    log.info("fp32 matmul peak: %.1f GFLOP/s", results["matmul_peak_gflops"])
    chosen = list(cfg.only) if cfg.only else list(cfg.models)
    unknown = sorted(set(chosen) - set(cfg.models))
    if unknown:
        raise ConfigError(
            f"only={unknown} names no model of bench.yaml; choose from {list(cfg.models)}"
        )
    for name in chosen:
        overrides = cfg.models[name]
        log.info("benchmarking %s", name)
        train_cfg = _train_config(cfg, conf_dir, name, list(overrides), out)
        trained = train(train_cfg)
        scored = run_scoring(
            model=trained.model_dir,
            input_dir=root / "test",
            output_dir=out / "runs" / name / "score",
            tracking_uri=trained.tracking_uri,
            experiment="bench",
            batch_size=int(cfg.batch_size),
        )
        metrics = trained.metrics
        detector = load_detector(trained.model_dir)
        results["models"][name] = {
            "overrides": list(overrides),
            "quality": metrics,
            "train_seconds": trained.train_seconds,
            "train_images_per_second": trained.train_images_per_second,
            "score_images_per_second": scored.summary.images_per_second,
            # What the networks alone manage: the ceiling of end-to-end scoring.
            "network_images_per_second": network_speed(detector, int(cfg.batch_size)),
            # The same scoring without the per-image pictures: what writing them costs.
            "score_tables_only_images_per_second": tables_only_speed(
                detector, root / "test", out / "runs" / name / "score-tables", int(cfg.batch_size)
            ),
            "score_stage_seconds": scored.summary.timings,
            "score_seconds": scored.summary.seconds,
            "peak_rss_mb": peak_rss_mb(),
        }
    for size in cfg.speed_sizes:
        results["speed"][str(size)] = _speed_at(
            int(size), root, out, cfg, results["matmul_peak_gflops"]
        )
    n_lineage = int(cfg.lineage_images) // (10 if cfg.quick else 1)
    if n_lineage:
        results["lineage"] = lineage_overhead(n_lineage, out / "lineage")
    results["peak_rss_mb"] = peak_rss_mb()
    results["seconds"] = time.perf_counter() - started
    write_json_atomic(out / "results.json", results)
    table = markdown(results)
    write_text_atomic(out / "results.md", table)
    uri = resolve_tracking_uri(cfg.tracking.uri)
    with start_run(
        uri=uri,
        experiment="bench",
        run_name="bench",
        tags=base_tags(kind="bench"),
        required=bool(cfg.tracking.required),
    ) as run:
        run.params(
            {
                "data_root": results["data_root"],
                "quick": results["quick"],
                "budget": " ".join(results["budget"]),
            }
        )
        run.metrics(
            {
                name: float(value)
                for name, value in flatten(results, sep="/").items()
                if isinstance(value, (int, float)) and not isinstance(value, bool)
            }
        )
        run.artifact(out / "results.json")
        run.artifact(out / "results.md")
        results["run_id"] = run.run_id
    return results


def _speed_at(size: int, root: Path, out: Path, cfg: DictConfig, peak: float) -> dict[str, float]:
    """End-to-end and model-only scoring speed of the CAE at one input size.

    Speed does not depend on the weights, so an untrained network is timed; thresholds are
    set so that a typical share of pixels is flagged and region extraction does real work.
    """
    torch.manual_seed(0)
    net = ConvAutoencoder(size, 1)
    batch = torch.rand(int(cfg.batch_size), 1, size, size)
    speed = forward_speed(net, batch)
    speed["forward_fraction_of_peak"] = speed["forward_gflops"] / peak
    detector = Detector(
        net,
        Preprocess.create(image_size=size, channels=1),
        MapSettings(kind="l2"),
        Calibration(image_threshold=0.1, pixel_threshold=0.2),
    )
    started = time.perf_counter()
    maps = detector.anomaly_maps(batch)
    speed["maps_images_per_second"] = len(maps) / (time.perf_counter() - started)
    summary = score_folder(
        detector, root / "test", out / "speed" / str(size), batch_size=int(cfg.batch_size)
    )
    speed["end_to_end_images_per_second"] = summary.to_dict()["images_per_second"]
    speed["stage_seconds"] = summary.timings
    speed["images"] = summary.n_scored
    return speed


def lineage_overhead(n: int, folder: Path) -> dict[str, float]:
    """Seconds to describe ``n`` photos as a dataset (sha256 of each) and log it to a run.

    The photos are 128x128 gray PNGs of noise (about 16 KiB each, which compresses least);
    the run goes to a SQLite store of its own in ``folder``, removed afterwards.
    """
    rng = np.random.default_rng(0)
    photos = folder / "photos"
    photos.mkdir(parents=True, exist_ok=True)
    samples = []
    for i in range(n):
        path = photos / f"{i:05d}.png"
        Image.fromarray(rng.integers(0, 256, (128, 128), dtype=np.uint8)).save(path)
        samples.append(Sample(path, label=0, defect_class="good"))
    started = time.perf_counter()
    files = file_set(samples, root=photos, context="training")
    hashed = time.perf_counter() - started
    store = f"sqlite:///{folder / 'mlflow.db'}"
    with start_run(uri=store, experiment="lineage", run_name="lineage") as run:
        started = time.perf_counter()
        log_file_sets(run, [files])
        logged = time.perf_counter() - started
    megabytes = sum(s.path.stat().st_size for s in samples) / 2**20
    shutil.rmtree(folder, ignore_errors=True)
    return {
        "images": float(n),
        "megabytes": megabytes,
        "hash_seconds": hashed,
        "log_seconds": logged,
    }


def markdown(results: dict[str, Any]) -> str:
    """The results as Markdown tables (quality and speed per model, scoring speed per size)."""
    lines = [
        f"# Benchmark on `{results['data_root']}`",
        "",
        f"Budget: `{' '.join(results['budget'])}`{' (quick mode)' if results['quick'] else ''}; "
        f"{results['threads']} torch threads; fp32 matmul peak "
        f"{results['matmul_peak_gflops']:.1f} GFLOP/s; peak RSS {results['peak_rss_mb']:.0f} MiB;"
        f" {results['seconds'] / 60:.1f} min in all.",
        "",
        "| model | img AUROC | img AP | F1 | px AUROC | AUPRO@0.3 | train s | train img/s | "
        "score img/s | networks img/s | score / networks | without pictures |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results["models"].items():
        q = r["quality"]
        lines.append(
            f"| {name} | {q.get('image_auroc', float('nan')):.3f} | "
            f"{q.get('image_ap', float('nan')):.3f} | {q.get('image_f1', float('nan')):.3f} | "
            f"{q.get('pixel_auroc', float('nan')):.3f} | {q.get('pixel_aupro', float('nan')):.3f}"
            f" | {r['train_seconds']:.0f} | {r['train_images_per_second']:.0f} | "
            f"{r['score_images_per_second']:.1f} | {r['network_images_per_second']:.1f} | "
            f"{r['score_images_per_second'] / r['network_images_per_second']:.0%} | "
            f"{r['score_tables_only_images_per_second'] / r['network_images_per_second']:.0%} |"
        )
    classes = sorted(
        {
            k.split("/", 1)[1]
            for r in results["models"].values()
            for k in r["quality"]
            if k.startswith("image_auroc/")
        }
    )
    if classes:
        lines += [
            "",
            "Image AUROC per defect class:",
            "",
            "| model | " + " | ".join(classes) + " |",
            "|---|" + "---|" * len(classes),
        ]
        for name, r in results["models"].items():
            lines.append(
                f"| {name} | "
                + " | ".join(
                    f"{r['quality'].get(f'image_auroc/{c}', float('nan')):.3f}" for c in classes
                )
                + " |"
            )
    if results["speed"]:
        lines += [
            "",
            "Scoring speed of the convolutional AE (end to end: decode, preprocess, "
            "maps, regions, writing masks/heatmaps/overlays):",
            "",
            "| input | end to end img/s | maps img/s | forward img/s | forward GFLOP/s | "
            "of matmul peak | decode s | model s | postprocess s | write s |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for size, s in results["speed"].items():
            st = s["stage_seconds"]
            lines.append(
                f"| {size}x{size} | {s['end_to_end_images_per_second']:.1f} | "
                f"{s['maps_images_per_second']:.0f} | {s['forward_images_per_second']:.0f} | "
                f"{s['forward_gflops']:.1f} | {s['forward_fraction_of_peak']:.0%} | "
                f"{st['decode']:.2f} | {st['model']:.2f} | {st['postprocess']:.2f} | "
                f"{st['write']:.2f} |"
            )
    if "lineage" in results:
        lin = results["lineage"]
        lines += [
            "",
            f"Data lineage: describing {lin['images']:.0f} photos ({lin['megabytes']:.0f} MiB) "
            f"as an MLflow dataset took {lin['hash_seconds']:.2f} s (sha256 of every file) "
            f"and logging it {lin['log_seconds']:.2f} s.",
        ]
    return "\n".join(lines) + "\n"
