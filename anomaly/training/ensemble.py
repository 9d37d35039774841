"""Several models of one kind trained side by side, scored by the mean of their maps.

A deep ensemble (Lakshminarayanan et al. 2017) applied to anomaly maps: members differ in
their initialisation, in the synthetic anomalies each draws for every batch, with
``scales`` in the resolution they see and with ``overrides`` in any setting of their own
(one member taught other anomaly outlines than the rest, say). Where one member's map
lights up on normal texture by chance, the others rarely do at the same place, so the mean
map ranks defects above normal surface more reliably than any one of them; members at two
resolutions see small and large defects differently (docs/quality.md measures both).

The members train in one Lightning run with one optimiser: the loss is the sum of theirs,
and since no parameter is shared, each member's gradient is the one it would get alone.
Training and scoring time grow with the number of members (and with their resolution).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.utils import get_class
from torch import nn

from anomaly.errors import ConfigError
from anomaly.models.draem import EnsembleNetwork, member_size, resize
from anomaly.models.inspection import MAP
from anomaly.training.autoencoder import configure_optimizer
from anomaly.training.draem import ScoredByNetwork, log_losses


def merge_settings(
    base: Mapping[str, Any], override: Mapping[str, Any], where: str
) -> dict[str, Any]:
    """``base`` with ``override``'s values, nested dicts merged key by key.

    Only settings that ``base`` has can be overridden, so a misspelt key fails here instead
    of being passed to a module that ignores it or fails far from the config.

    Args:
        base: One member's settings (``model.module`` without ``_target_``).
        override: The values to change, nested like ``base``.
        where: The config key of ``override``, for error messages.

    Raises:
        ConfigError: A key of ``override`` that ``base`` does not have (named in full).
    """
    merged = dict(base)
    for key, value in override.items():
        if key not in base:
            raise ConfigError(
                f"{where}.{key} is not a setting of model.module (it has "
                f"{', '.join(sorted(base))}); check the spelling, or add the setting to "
                "model.module first"
            )
        if isinstance(value, Mapping) and isinstance(base[key], Mapping):
            merged[key] = merge_settings(base[key], value, f"{where}.{key}")
        else:
            merged[key] = value
    return merged


class EnsembleModule(ScoredByNetwork, pl.LightningModule):
    """Trains ``members`` copies of one model together; the map is the mean of theirs.

    Args:
        member: Plain config of one member's LightningModule, with its ``_target_`` (what
            ``model.module`` holds for a single model). The class must have
            ``anomaly_map(x)`` and ``training_losses(x) -> dict`` (DRAEM has both).
        members: How many members (at least 1).
        scales: Resolution of each member relative to the model input, one per member
            (``[1.0, 0.67]``: the second sees the image at two thirds of the size; sides
            rounded to multiples of 16); None: all at 1.
        overrides: Settings of each member that differ from ``member``, one dict per
            member, nested like ``member`` and merged into it (``[{}, {"perlin":
            {"shapes": ["perlin", "region"]}}]``: the second member also learns region
            anomalies); None: all members alike. The first member's optimiser settings
            train all.

    Raises:
        ConfigError: A bad count, scales or member class (names the ``model.ensemble.*``
            or ``model.module._target_`` key).
    """

    # scoring.position_score=auto leaves it off: measured on feature_ae's maps only, and
    # beside the patch map (on by default here) it cannot be used.
    auto_off = frozenset({"position_score"})

    def __init__(
        self,
        member: dict[str, Any],
        members: int = 2,
        scales: list[float] | None = None,
        overrides: list[dict[str, Any] | None] | None = None,
    ) -> None:
        super().__init__()
        if isinstance(members, bool) or not isinstance(members, int) or members < 1:
            raise ConfigError(f"model.ensemble.members must be an integer >= 1, got {members!r}")
        if scales is not None:
            if len(scales) != members:
                raise ConfigError(
                    f"model.ensemble.scales has {len(scales)} values for {members} members; "
                    "give one scale per member (or null for all at 1)"
                )
            bad = [s for s in scales if not 0.0 < float(s) <= 4.0]
            if bad:
                raise ConfigError(f"model.ensemble.scales must lie in (0, 4], got {bad}")
        if overrides is not None and len(overrides) != members:
            raise ConfigError(
                f"model.ensemble.overrides has {len(overrides)} entries for {members} "
                "members; give one per member ({} for a member with the common settings), "
                "or null for all alike"
            )
        self.save_hyperparameters()
        spec = dict(member)
        target = spec.pop("_target_", None)
        try:
            member_class = get_class(target)
        except Exception as exc:
            raise ConfigError(
                f"model.module._target_={target!r} cannot be imported as an ensemble member: {exc}"
            ) from exc
        missing = [
            name for name in ("inspect", "training_losses") if not hasattr(member_class, name)
        ]
        if missing:
            raise ConfigError(
                f"model.ensemble.members={members}: only a model that makes its own anomaly "
                f"map (model=draem) can be an ensemble, and {target} lacks "
                f"{', '.join(missing)}; add model.ensemble.members=1 (an experiment overlay "
                "may have set it for draem)"
            )
        specs = [
            merge_settings(spec, override or {}, f"model.ensemble.overrides.{i}")
            for i, override in enumerate(overrides or [None] * members)
        ]
        self.members = nn.ModuleList(member_class(**s) for s in specs)
        if MAP not in self.members[0].gives:
            raise ConfigError(
                f"model.ensemble.members={members}: only a model that makes its own anomaly "
                f"map (model=draem) can be an ensemble, and {target} does not; add "
                "model.ensemble.members=1"
            )
        self.scales = [float(s) for s in scales] if scales is not None else [1.0] * members

    @property
    def network(self) -> EnsembleNetwork:
        """The members' inference networks as one (sharing their weights)."""
        # Built on demand and not registered, so the weights are saved once, under members.
        return EnsembleNetwork([m.network for m in self.members], self.scales)

    def _inputs(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [resize(x, member_size(x.shape[-2:], s)) for s in self.scales]

    def _step(self, batch: dict[str, Any], stage: str) -> torch.Tensor:
        per_member = [
            m.training_losses(xi)
            for m, xi in zip(self.members, self._inputs(batch["image"]), strict=True)
        ]
        n = batch["image"].shape[0]
        # Logged as the members' mean, so the curves read like a single model's.
        mean = {k: torch.stack([losses[k] for losses in per_member]).mean() for k in per_member[0]}
        log_losses(self, mean, stage, batch_size=n)
        # The sum, not the mean, so each member's gradient is exactly its own.
        return torch.stack(
            [torch.stack(list(losses.values())).sum() for losses in per_member]
        ).sum()

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        """Every member's losses on the batch (each draws its own synthetic anomalies)."""
        return self._step(batch, "train")

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        """The same losses on held-out images."""
        return self._step(batch, "val")

    def configure_optimizers(self) -> Any:
        """One optimiser over all members, with the first member's optimiser and schedule."""
        return configure_optimizer(self, settings=self.members[0].hparams)
