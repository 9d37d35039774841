"""The inference form of a frozen EfficientNet-Lite trunk: fewer passes over memory.

The trunk is frozen and always in eval mode, so each batch norm is a fixed per-channel
affine map and folds into the convolution before it (``w' = w * s``, ``b' = beta - mean *
s`` with ``s = gamma / sqrt(var + eps)``); TensorFlow's "same" padding, which the
reference code applies with a separate ``F.pad`` before every convolution, becomes the
convolution's own padding (where it is asymmetric, in the stride-2 convolutions, through
zero taps added to the kernel); and ReLU6 is applied in place. The results are those of
the modules, up to float rounding (tested), at about two thirds of the time on a CPU:
batch norm, padding and the activation's copies were a third of the trunk's time at
560x224.

The modules keep the weights (the state dict is unchanged); the folded tensors are made
from them when first needed and again after the weights change. Only what the shipped
architecture builds is folded: ReLU6, no squeeze-and-excitation, and the padding fixed
when the modules were built (:func:`fold_trunk` says None otherwise, and the modules run).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class FoldedConv:
    """A convolution with its batch norm folded in, and its own symmetric padding.

    ``padding`` is ``(top/bottom, left/right)``. An asymmetric padding of the module
    (fixed when it was built for an image size: the reference code fixes it for 224x224
    inputs, whatever the input, and the trained models learned with that) is turned into
    a symmetric one by :func:`fold`.
    """

    weight: torch.Tensor
    bias: torch.Tensor
    stride: tuple[int, int]
    groups: int
    relu6: bool
    padding: tuple[int, int]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """``relu6(bn(conv(pad(x))))``, or without the ReLU6."""
        y = F.conv2d(x, self.weight, self.bias, self.stride, self.padding, 1, self.groups)
        return y.clamp_(0.0, 6.0) if self.relu6 else y


def fold(conv: nn.Conv2d, bn: nn.BatchNorm2d, *, relu6: bool) -> FoldedConv:
    """``bn(conv(x))`` (then ReLU6) as one convolution with a bias."""
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    weight = conv.weight * scale[:, None, None, None]
    bias = bn.bias - bn.running_mean * scale
    if conv.bias is not None:
        bias = bias + conv.bias * scale
    stride = tuple(conv.stride) if len(conv.stride) == 2 else (conv.stride[0],) * 2
    weight, padding = symmetric_padding(weight, _padding(conv))
    return FoldedConv(
        weight.detach().contiguous(memory_format=torch.channels_last),
        bias.detach(),
        stride,
        conv.groups,
        relu6,
        padding,
    )


def symmetric_padding(
    weight: torch.Tensor, padding: tuple[int, int, int, int]
) -> tuple[torch.Tensor, tuple[int, int]]:
    """A kernel and symmetric padding that give what ``(l, r, t, b)`` padding gives.

    Output ``j`` of a convolution of stride ``s`` sees the padded input from ``s*j``, that
    is the input from ``s*j - l``. Padding ``max(l, r)`` on both sides instead, with
    ``r - l`` zero taps before the kernel (or ``l - r`` after it), sees the same inputs
    through the same weights and gives as many outputs, whatever the stride or size. A
    separate pad copied the whole input first: at 560x224 the stride-2 depthwise
    convolutions took 3-5 times as long with it.

    Args:
        weight: ``(out, in, kh, kw)``.
        padding: ``(left, right, top, bottom)``.

    Returns:
        The kernel (the same one where the padding was symmetric) and ``(ph, pw)``.
    """
    left, right, top, bottom = padding
    grown = F.pad(
        weight,
        [max(right - left, 0), max(left - right, 0), max(bottom - top, 0), max(top - bottom, 0)],
    )
    return grown, (max(top, bottom), max(left, right))


def _padding(conv: nn.Conv2d) -> tuple[int, int, int, int]:
    """The fixed padding of a static-same-padding convolution, ``(l, r, t, b)``."""
    static = conv.static_padding
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


def _static(conv: nn.Module) -> bool:
    return hasattr(conv, "static_padding")


def _foldable(block: nn.Module) -> bool:
    """An MBConv block of ReLU6, no squeeze, and convolutions with fixed padding."""
    if not hasattr(block, "_block_args") or getattr(block, "has_se", True):
        return False
    convs = [block._depthwise_conv, block._project_conv]
    if block._block_args.expand_ratio != 1:
        convs.append(block._expand_conv)
    return isinstance(getattr(block, "_swish", None), nn.ReLU6) and all(map(_static, convs))


def fold_trunk(
    stem: Sequence[nn.Module], blocks: Sequence[nn.Module]
) -> list[Callable[[torch.Tensor], torch.Tensor]] | None:
    """The stem ``(conv, bn, ReLU6)`` and the blocks, folded; None when they cannot be."""
    conv, bn, act = stem
    if not (isinstance(act, nn.ReLU6) and _static(conv) and all(map(_foldable, blocks))):
        return None
    return [fold(conv, bn, relu6=True), *(FoldedBlock(b) for b in blocks)]
