import numpy as np
import pytest
import torch
from scipy.linalg import subspace_angles

from anomaly.models.dense_ae import DenseAutoencoder, LinearAutoencoder


def test_linear_autoencoder_learns_the_pca_subspace():
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    basis = np.linalg.qr(rng.normal(size=(64, 3)))[0]  # a 3-D subspace of 8x8 images
    codes = rng.normal(size=(512, 3)) * np.array([3.0, 2.0, 1.0])
    data = 0.5 + codes @ basis.T + 0.01 * rng.normal(size=(512, 64))
    x = torch.tensor(data, dtype=torch.float32).view(512, 1, 8, 8)
    model = LinearAutoencoder(8, 1, latent_dim=3)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(1500):  # ~1000 steps reach a 1.6 degree angle; 1500 leave a margin
        opt.zero_grad()
        loss = torch.mean((model(x) - x) ** 2)
        loss.backward()
        opt.step()
    centred = data - data.mean(axis=0)
    pca = np.linalg.svd(centred, full_matrices=False)[2][:3].T  # top-3 components
    learned = model.decoder.weight.detach().numpy()  # (64, 3): spans the decoder's output
    angles = np.degrees(subspace_angles(learned, pca))
    assert angles.max() < 2.0


@pytest.mark.parametrize("tied", [False, True])
@pytest.mark.parametrize("activation", ["selu", "relu"])
def test_dense_autoencoder_shapes(tied, activation):
    model = DenseAutoencoder(
        (8, 12), 3, hidden=[64, 16], latent_dim=4, activation=activation, tied=tied
    )
    out = model(torch.rand(2, 3, 8, 12))
    assert out.shape == (2, 3, 8, 12) and out.min() >= 0 and out.max() <= 1


def test_tied_weights_halve_the_weight_matrices():
    untied = DenseAutoencoder(16, 1, hidden=[64], latent_dim=8, tied=False)
    tied = DenseAutoencoder(16, 1, hidden=[64], latent_dim=8, tied=True)
    n_untied = sum(p.numel() for p in untied.parameters())
    n_tied = sum(p.numel() for p in tied.parameters())
    assert n_tied < 0.6 * n_untied


def test_invalid_settings():
    with pytest.raises(ValueError, match="activation"):
        DenseAutoencoder(8, 1, activation="tanh")
    with pytest.raises(ValueError, match="latent_dim"):
        LinearAutoencoder(4, 1, latent_dim=16)
