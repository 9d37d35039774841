"""The inference form of a frozen EfficientNet-Lite trunk: fewer passes over memory.

The trunk is frozen and always in eval mode, so each batch norm is a fixed per-channel
affine map and folds into the convolution before it (``w' = w * s``, ``b' = beta - mean *
s`` with ``s = gamma / sqrt(var + eps)``); TensorFlow's "same" padding, which the
reference code applies with a separate ``F.pad`` before every convolution, becomes the
convolution's own padding wherever it is symmetric (every stride-1 convolution); and
ReLU6 is applied in place. The results are those of the modules, up to float rounding
(tested), at about two thirds of the time on a CPU: batch norm, padding and the
activation's copies were a third of the trunk's time at 560x224.

The modules keep the weights (the state dict is unchanged); the folded tensors are made
from them when first needed and again after the weights change.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class FoldedConv:
    """A convolution with its batch norm folded in, and its padding.

    ``padding`` is ``(left, right, top, bottom)`` as the module pads: fixed when the
    module was built for an image size (the reference code fixes it for 224x224 inputs,
    whatever the input, and the trained models learned with that), else None for
    TensorFlow's "same" padding computed from each input's size.
    """

    weight: torch.Tensor
    bias: torch.Tensor
    stride: tuple[int, int]
    groups: int
    relu6: bool
    padding: tuple[int, int, int, int] | None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """``relu6(bn(conv(pad(x))))``, or without the ReLU6."""
        left, right, top, bottom = self.padding or self._same(x)
        if left == right and top == bottom:
            y = F.conv2d(x, self.weight, self.bias, self.stride, (top, left), 1, self.groups)
        else:
            x = F.pad(x, [left, right, top, bottom])
            y = F.conv2d(x, self.weight, self.bias, self.stride, 0, 1, self.groups)
        return y.clamp_(0.0, 6.0) if self.relu6 else y

    def _same(self, x: torch.Tensor) -> tuple[int, int, int, int]:
        ih, iw = x.shape[-2:]
        kh, kw = self.weight.shape[-2:]
        sh, sw = self.stride
        pad_h = max((math.ceil(ih / sh) - 1) * sh + kh - ih, 0)
        pad_w = max((math.ceil(iw / sw) - 1) * sw + kw - iw, 0)
        return pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2


def fold(conv: nn.Conv2d, bn: nn.BatchNorm2d, *, relu6: bool) -> FoldedConv:
    """``bn(conv(x))`` (then ReLU6) as one convolution with a bias."""
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    weight = (conv.weight * scale[:, None, None, None]).contiguous(
        memory_format=torch.channels_last
    )
    bias = bn.bias - bn.running_mean * scale
    if conv.bias is not None:
        bias = bias + conv.bias * scale
    stride = tuple(conv.stride) if len(conv.stride) == 2 else (conv.stride[0],) * 2
    return FoldedConv(
        weight.detach(),
        bias.detach(),
        stride,
        conv.groups,
        relu6,
        _padding(conv),  # type: ignore[arg-type]
    )


def _padding(conv: nn.Conv2d) -> tuple[int, int, int, int] | None:
    """The fixed padding of a static-same-padding convolution (None: computed per input)."""
    static = getattr(conv, "static_padding", None)
    if static is None:
        return None
    if isinstance(static, nn.ZeroPad2d):
        return tuple(int(p) for p in static.padding)  # type: ignore[return-value]
    # An identity: no padding, plus the module's own (0 for these convolutions).
    ph, pw = conv.padding if isinstance(conv.padding, tuple) else (0, 0)
    return (int(pw), int(pw), int(ph), int(ph))


class FoldedBlock:
    """An MBConv block (expansion, depthwise, projection, skip) of folded convolutions."""

    def __init__(self, block: nn.Module) -> None:
        args = block._block_args
        self.expand = (
            fold(block._expand_conv, block._bn0, relu6=True) if args.expand_ratio != 1 else None
        )
        self.depthwise = fold(block._depthwise_conv, block._bn1, relu6=True)
        self.project = fold(block._project_conv, block._bn2, relu6=False)
        self.skip = bool(
            block.id_skip and args.stride == 1 and args.input_filters == args.output_filters
        )

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """The block's output for input ``x``."""
        h = self.expand(x) if self.expand is not None else x
        h = self.project(self.depthwise(h))
        return h.add_(x) if self.skip else h


def foldable(block: nn.Module) -> bool:
    """Whether ``block`` is an MBConv block this module can fold (ReLU6, no squeeze)."""
    return (
        hasattr(block, "_block_args")
        and not getattr(block, "has_se", True)
        and isinstance(getattr(block, "_swish", None), nn.ReLU6)
    )
