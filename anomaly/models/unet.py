"""A small U-Net: the reconstruction network of inpainting-based detection (RIAD).

Skip connections let a U-Net copy its input, so on its own it would reconstruct defects
as well as anything else. It is meant to be trained and used on *masked* inputs (see
:mod:`anomaly.training.inpainting`): a hidden region has to be inferred from its
surroundings, and what the surroundings of normal parts predict is a normal surface.
"""

from __future__ import annotations

import torch
from torch import nn


def _block(in_ch: int, out_ch: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, 3, padding=1),
        nn.BatchNorm2d(out_ch),
        nn.ReLU(inplace=True),
        nn.Conv2d(out_ch, out_ch, 3, padding=1),
        nn.BatchNorm2d(out_ch),
        nn.ReLU(inplace=True),
    )


class UNet(nn.Module):
    """Encoder-decoder with skip connections and a sigmoid output in ``[0, 1]``.

    Args:
        channels: Input channels (1 gray, 3 RGB; 2x that for a network that compares an
            image with its reconstruction).
        base: Channels of the first level; each deeper level doubles them.
        depth: Number of 2x down-samplings; height and width must be divisible by
            ``2 ** depth``.
        image_size: Unused by the network (it is fully convolutional); accepted so that the
            model configs of every architecture look alike.
        out_channels: Output channels; ``channels`` when None.
        skip: False drops the skip connections: a plain encoder-decoder whose only path
            runs through the ``2 ** depth`` times smaller bottleneck (it cannot copy its
            input, as a reconstruction network should not).
        sigmoid: Squash the output to ``[0, 1]`` (an image); False returns logits.

    Raises:
        ValueError: A non-positive parameter.
    """

    def __init__(
        self,
        channels: int = 1,
        base: int = 16,
        depth: int = 4,
        image_size: int | tuple[int, int] | list[int] | None = None,
        out_channels: int | None = None,
        skip: bool = True,
        sigmoid: bool = True,
    ) -> None:
        super().__init__()
        if channels <= 0 or base <= 0 or depth <= 0:
            raise ValueError(
                f"channels, base and depth must be positive, got {channels}, {base}, {depth}"
            )
        self.channels = channels
        self.depth = depth
        self.skip = skip
        self.sigmoid = sigmoid
        widths = [base * 2**i for i in range(depth + 1)]
        self.down = nn.ModuleList(
            [_block(channels, widths[0])] + [_block(widths[i], widths[i + 1]) for i in range(depth)]
        )
        self.up = nn.ModuleList(
            [nn.ConvTranspose2d(widths[i + 1], widths[i], 2, stride=2) for i in range(depth)]
        )
        merged = 2 if skip else 1
        self.merge = nn.ModuleList([_block(merged * widths[i], widths[i]) for i in range(depth)])
        self.out = nn.Conv2d(widths[0], out_channels or channels, 1)
        self.pool = nn.MaxPool2d(2)

    def levels(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The encoder's output at every level, finest first; the last is the bottleneck.

        :meth:`decode` of them is :meth:`forward`, so a caller that needs the bottleneck
        too (DRAEM's features) runs the encoder once.
        """
        factor = 2**self.depth
        if x.shape[-2] % factor or x.shape[-1] % factor:
            raise ValueError(
                f"UNet of depth {self.depth} needs height and width divisible by {factor}, "
                f"got {tuple(x.shape[-2:])}"
            )
        skips = []
        h = x
        for i, block in enumerate(self.down):
            h = block(h if i == 0 else self.pool(h))
            skips.append(h)
        return skips

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The bottleneck: the deepest level of the encoder.

        ``(N, C, H, W)`` inputs give ``(N, base * 2**depth, H / 2**depth, W / 2**depth)``.
        """
        return self.levels(x)[-1]

    def decode(self, levels: list[torch.Tensor]) -> torch.Tensor:
        """The output from the encoder's :meth:`levels` (only the last without skips)."""
        h = levels[-1]
        for i in reversed(range(self.depth)):
            up = self.up[i](h)
            h = self.merge[i](torch.cat([up, levels[i]], dim=1) if self.skip else up)
        out = self.out(h)
        return torch.sigmoid(out) if self.sigmoid else out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map ``(N, C, H, W)`` inputs (H and W divisible by ``2 ** depth``) to the output."""
        return self.decode(self.levels(x))
