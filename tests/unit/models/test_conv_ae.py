import pytest
import torch

from anomaly.models.conv_ae import ConvAutoencoder


@pytest.mark.parametrize(("size", "channels"), [(32, 1), (128, 1), ((48, 96), 3)])
def test_reconstruction_shape_and_range(size, channels):
    model = ConvAutoencoder(size, channels, latent_dim=16)
    h, w = (size, size) if isinstance(size, int) else size
    x = torch.rand(2, channels, h, w)
    out = model(x)
    assert out.shape == x.shape
    assert out.min() >= 0 and out.max() <= 1  # sigmoid output


def test_latent_code_is_a_vector_of_configured_size():
    model = ConvAutoencoder(128, 1, latent_dim=100)
    assert model.encode(torch.rand(1, 1, 128, 128)).shape == (1, 100, 1, 1)
    # The paper's encoder: 8x8 feature maps before the latent convolution at 128x128.
    assert model.encoder[-1].kernel_size == (8, 8)


def test_width_scales_hidden_channels():
    narrow = sum(p.numel() for p in ConvAutoencoder(32, 1, width=0.5).parameters())
    wide = sum(p.numel() for p in ConvAutoencoder(32, 1, width=1.0).parameters())
    assert narrow < wide


@pytest.mark.parametrize("size", [30, (32, 40), 0])
def test_rejects_sizes_not_divisible_by_16(size):
    with pytest.raises(ValueError, match="divisible by 16"):
        ConvAutoencoder(size, 1)
