"""Up-front checks of numeric settings, so a typo fails in one line before any work starts.

Hydra already refuses unknown groups (``model=foo``) and bad override syntax; what it cannot
know is that a learning rate must be positive or a quantile below 1. The rules below are
matched against the dotted key of every number in the config, so they also cover settings
added later under the same names (``*.lr`` anywhere, ``*.p`` of every corruption).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from fnmatch import fnmatchcase
from typing import Any

from omegaconf import DictConfig, OmegaConf

from anomaly.errors import ConfigError

Check = Callable[[float], bool]


def _positive(v: float) -> bool:
    return v > 0


def _non_negative(v: float) -> bool:
    return v >= 0


def _unit_open(v: float) -> bool:
    return 0 < v < 1


def _unit_closed(v: float) -> bool:
    return 0 <= v <= 1


def _at_least_one(v: float) -> bool:
    return v >= 1


def _steps(v: float) -> bool:
    return v == -1 or v >= 1


# (key pattern, check, what is valid). The first matching pattern decides.
RULES: tuple[tuple[str, Check, str], ...] = (
    ("data.image_size*", _at_least_one, "a positive number of pixels"),
    ("data.short_side", lambda v: v >= 16, "16 pixels or more"),
    ("data.max_aspect", lambda v: v >= 1, "1 or more (longest side over shortest)"),
    ("data.channels", lambda v: v in (1, 3), "1 (gray) or 3 (RGB)"),
    ("data.val_fraction", _unit_open, "a share between 0 and 1 (e.g. 0.1)"),
    ("data.min_val_images", _non_negative, "0 or more images"),
    ("data.scale", _positive, "a positive factor (1.0 = native size)"),
    ("data.tile_stride", _at_least_one, "a positive number of pixels, or null"),
    ("data.min_size", _at_least_one, "a positive number of pixels"),
    ("*batch_size", _at_least_one, "a positive whole number"),
    ("*num_workers", _non_negative, "0 or more worker processes"),
    ("*patches_per_image", _at_least_one, "a positive whole number"),
    ("trainer.max_epochs", _at_least_one, "a positive whole number"),
    ("trainer.min_steps", _non_negative, "0 (off) or a positive whole number"),
    ("trainer.max_steps", _steps, "-1 (no limit) or a positive whole number"),
    ("trainer.budget_minutes", _non_negative, "minutes of training (0 or null: no limit)"),
    ("*.lr", _positive, "a positive learning rate (e.g. 2e-4)"),
    ("*.weight_decay", _non_negative, "0 or more"),
    ("*.momentum", _unit_closed, "between 0 and 1"),
    ("*latent_dim", _at_least_one, "a positive whole number"),
    ("*.base", _at_least_one, "a positive number of channels"),
    ("*.depth", _at_least_one, "a positive number of down-samplings"),
    ("model.module.n_masks", lambda v: v >= 2, "2 or more masks"),
    ("model.module.cell_sizes*", _at_least_one, "positive cell sizes in pixels"),
    ("model.module.anomaly_p", lambda v: 0 < v <= 1, "a share in (0, 1]"),
    ("model.ensemble.members", _at_least_one, "a positive whole number of models"),
    ("model.ensemble.scales*", lambda v: 0 < v <= 4, "a resolution factor in (0, 4] per member"),
    ("*focal_gamma", _non_negative, "0 or more"),
    ("*perlin.threshold", lambda v: -1 <= v <= 1, "a Perlin level between -1 and 1"),
    ("*max_opacity", _unit_closed, "between 0 and 1"),
    ("*.width", _positive, "a positive width multiplier"),
    ("*hidden*", _at_least_one, "positive layer sizes"),
    ("scoring.calibration.*.q", _unit_open, "a quantile between 0 and 1 (e.g. 0.99)"),
    ("scoring.calibration.*.far", _unit_open, "a false-alarm rate between 0 and 1"),
    ("scoring.calibration.*.k", _non_negative, "0 or more standard deviations"),
    ("*ssim_weight", _unit_closed, "between 0 and 1"),
    ("*sigma", _non_negative, "0 or more"),
    ("*smoothing_sigma", _non_negative, "0 or more model pixels"),
    ("scoring.topk", _at_least_one, "a positive number of pixels"),
    ("scoring.feature_score.map_weight", _non_negative, "0 or more (0: the feature score alone)"),
    ("scoring.patch_map.weight", _positive, "a positive weight (off: enabled=false)"),
    ("scoring.patch_map.coreset", lambda v: 0 < v <= 1, "a share of positions in (0, 1]"),
    ("scoring.patch_map.max_patches", _at_least_one, "a positive number of positions"),
    ("scoring.aupro_fpr_limit", lambda v: 0 < v <= 1, "a false-positive rate in (0, 1]"),
    ("scoring.*radius", _non_negative, "0 or more pixels"),
    ("scoring.min_region_area", _non_negative, "0 or more pixels"),
    ("noise.*.p", _unit_closed, "a probability between 0 and 1"),
    ("noise.*fraction", _unit_closed, "a share between 0 and 1"),
    ("noise.*amount", _unit_closed, "a share between 0 and 1"),
    ("noise.*size", _unit_closed, "a share of the image side between 0 and 1"),
    ("noise.*max_defects", _at_least_one, "a positive whole number"),
    ("*alpha", _non_negative, "0 or more"),
    ("*beta", _non_negative, "0 or more"),
    ("*.seed", _non_negative, "0 or more"),
    ("seed", _non_negative, "0 or more"),
)

# Keys whose numbers are not hyper-parameters (Hydra's own, MLflow settings).
_IGNORED_PREFIXES = ("hydra.", "tracking.")


def check_config(cfg: DictConfig | Mapping[str, Any]) -> None:
    """Refuse NaN, infinite and out-of-range numbers anywhere in a config.

    Args:
        cfg: A composed config (any command's).

    Raises:
        ConfigError: Naming the first offending key, its value and what is valid.
    """
    container = (
        OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)
    )
    for key, value in _numbers(container):
        if key.startswith(_IGNORED_PREFIXES):
            continue
        if math.isnan(value) or math.isinf(value):
            raise ConfigError(f"{key}={value} is not a finite number; set a real value")
        for pattern, check, valid in RULES:
            if fnmatchcase(key, pattern):
                if not check(value):
                    raise ConfigError(f"{key}={value:g} is out of range: it must be {valid}")
                break


def _numbers(node: Any, prefix: str = "") -> Iterator[tuple[str, float]]:
    """Every int/float leaf with its dotted key (list items as ``key.0``, ``key.1``...)."""
    if isinstance(node, Mapping):
        items: Any = node.items()
    elif isinstance(node, list | tuple):
        items = enumerate(node)
    else:
        # bool is an int subclass, but no rule is about booleans.
        if isinstance(node, int | float) and not isinstance(node, bool):
            yield prefix, float(node)
        return
    for key, child in items:
        # Corruption lists are matched by name, not position: noise.synthetic_defect.p.
        name = child.get("name") if isinstance(child, Mapping) and isinstance(key, int) else None
        yield from _numbers(child, f"{prefix}.{name if name else key}" if prefix else str(key))
