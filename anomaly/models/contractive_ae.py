"""The contractive autoencoder (Rifai, Vincent, Muller, Glorot & Bengio, ICML 2011).

Training adds ``weight`` times the squared Frobenius norm of the encoder's Jacobian,
``||dh/dx||_F^2``, averaged over the batch: the code is made insensitive to small moves
of the input in every direction the reconstruction does not need, so it follows only the
variations of normal images and a defect's pixels are not carried into the code.

- ``dense``: Rifai's model, one sigmoid layer ``h = sigmoid(W x + b)`` and a decoder of
  the same shape (tied weights by default). Its norm has a closed form:
  ``sum_j (h_j (1 - h_j))^2 sum_i W_ji^2``.
- ``conv``: Bergmann's convolutional encoder and decoder, whose Jacobian has no such form.
  The norm is found with autograd, exactly (one backward pass per code unit) or as
  Hutchinson's estimate ``E_v ||J^T v||^2`` over Gaussian probes ``v`` (one backward pass
  per probe; unbiased, since ``E[v v^T] = I``).

Gradients of gradients are needed to train through the norm, so each step of the
``conv`` variant costs about two more passes through the encoder. Without gradients (the
validation loss) the ``conv`` variant reports the reconstruction loss alone.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from anomaly.models.conv_ae import ConvAutoencoder
from anomaly.models.dense_ae import _size

VARIANTS = ("conv", "dense")


def sigmoid_jacobian_norm(h: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``||dh/dx||_F^2`` per sample of ``h = sigmoid(weight @ x + b)``: ``(N,)``.

    Args:
        h: The layer's outputs ``(N, K)``.
        weight: Its weight ``(K, D)``.
    """
    return (h * (1 - h)).pow(2) @ weight.pow(2).sum(dim=1)


def autograd_jacobian_norm(
    h: torch.Tensor, x: torch.Tensor, *, probes: int | None = None, create_graph: bool = True
) -> torch.Tensor:
    """``||dh/dx||_F^2`` per sample by autograd: ``(N,)``.

    Samples must not interact in the computation of ``h`` (no batch statistics), so the
    gradient of a sum over the batch gives each sample's own row.

    Args:
        h: Codes ``(N, K)`` computed from ``x``.
        x: The inputs ``(N, ...)``, with ``requires_grad``.
        probes: None for the exact norm (``K`` backward passes); else the number of
            Gaussian probes of Hutchinson's estimate.
        create_graph: Keep the graph, so that the norm can be trained through.
    """
    if probes is None:
        vectors = [F.one_hot(torch.full((1,), j), h.shape[1]).to(h) for j in range(h.shape[1])]
    else:
        vectors = [torch.randn_like(h) for _ in range(probes)]
    total = x.new_zeros(x.shape[0])
    for i, v in enumerate(vectors):
        (g,) = torch.autograd.grad(
            h,
            x,
            grad_outputs=v.expand_as(h),
            create_graph=create_graph,
            retain_graph=create_graph or i < len(vectors) - 1,
        )
        total = total + g.flatten(1).pow(2).sum(dim=1)
    return total if probes is None else total / probes


class ContractiveAutoencoder(nn.Module):
    """An autoencoder trained with a penalty on its encoder's Jacobian (see module).

    Args:
        image_size: Input ``(height, width)`` or one int (``conv``: each divisible by 16).
        channels: Input channels.
        latent_dim: Code units.
        variant: ``conv`` or ``dense`` (see module).
        width: Channel multiplier of the ``conv`` variant.
        tied: The ``dense`` decoder reuses the encoder's transposed weight (Rifai's).
        weight: ``lambda``, the penalty's weight beside the per-pixel reconstruction loss.
        probes: ``conv``: Gaussian probes of Hutchinson's estimate, or None for the exact
            norm (one backward pass per code unit).

    Raises:
        ValueError: An unknown variant, a negative weight or fewer than one probe.
    """

    def __init__(
        self,
        image_size: int | Sequence[int] = 128,
        channels: int = 1,
        latent_dim: int = 100,
        variant: str = "conv",
        width: float = 1.0,
        tied: bool = True,
        weight: float = 1e-4,
        probes: int | None = 1,
    ) -> None:
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
        if not weight >= 0:
            raise ValueError(f"weight (lambda) must be >= 0, got {weight!r}")
        if probes is not None and probes < 1:
            raise ValueError(f"probes must be >= 1 (or null for the exact norm), got {probes!r}")
        self.variant = variant
        self.weight = float(weight)
        self.probes = probes
        self.tied = tied
        if variant == "conv":
            self.inner = ConvAutoencoder(image_size, channels, latent_dim, width)
        else:
            self.shape = (channels, *_size(image_size))
            features = channels * self.shape[1] * self.shape[2]
            self.encoder = nn.Linear(features, latent_dim)
            self.decoder_bias = nn.Parameter(torch.zeros(features))
            if not tied:
                self.decoder = nn.Linear(latent_dim, features, bias=False)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Codes ``(N, latent_dim)`` of images ``(N, C, H, W)``."""
        if self.variant == "conv":
            return self.inner.encode(x).flatten(1)
        return torch.sigmoid(self.encoder(x.flatten(1)))

    def decode(self, h: torch.Tensor) -> torch.Tensor:
        """Images ``(N, C, H, W)`` in ``[0, 1]`` from codes ``(N, latent_dim)``."""
        if self.variant == "conv":
            return self.inner.decode(h[:, :, None, None])
        out = (
            F.linear(h, self.encoder.weight.t(), self.decoder_bias)
            if self.tied
            else self.decoder(h) + self.decoder_bias
        )
        return torch.sigmoid(out).view(h.shape[0], *self.shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Reconstruct images ``(N, C, H, W)``."""
        return self.decode(self.encode(x))

    def _code_and_norm(
        self, x: torch.Tensor, *, create_graph: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Codes ``(N, latent_dim)`` and their Jacobian norms ``(N,)`` from one encoder pass."""
        if self.variant == "dense":
            h = self.encode(x)
            return h, sigmoid_jacobian_norm(h, self.encoder.weight)
        x = x.detach().requires_grad_(True)
        h = self.encode(x)
        return h, autograd_jacobian_norm(h, x, probes=self.probes, create_graph=create_graph)

    def jacobian_norm(self, x: torch.Tensor) -> torch.Tensor:
        """``||dh/dx||_F^2`` per image ``(N,)``: closed form (``dense``) or autograd (``conv``)."""
        with torch.enable_grad():
            return self._code_and_norm(x, create_graph=False)[1]

    def forward_train(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The reconstruction and the weighted mean Jacobian norm of the batch."""
        if self.variant == "conv" and not torch.is_grad_enabled():
            return self.forward(x), x.new_zeros(())
        h, norm = self._code_and_norm(x, create_graph=True)
        return self.decode(h), self.weight * norm.mean()
