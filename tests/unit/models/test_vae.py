import torch

from anomaly.models.vae import ConvVAE


def test_scoring_uses_the_latent_mean():
    torch.manual_seed(0)
    model = ConvVAE(32, 1, latent_dim=8).eval()
    x = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), model(x))  # deterministic
        mu, _ = model.encode(x)
        assert torch.allclose(model(x), model.decoder(mu))


def test_training_samples_and_adds_a_nonnegative_kl():
    torch.manual_seed(0)
    model = ConvVAE(32, 1, latent_dim=8, kl_weight=1.0)
    x = torch.rand(2, 1, 32, 32)
    recon_a, kl = model.forward_train(x)
    recon_b, _ = model.forward_train(x)
    assert kl.item() >= 0 and recon_a.shape == x.shape
    assert not torch.equal(recon_a, recon_b)  # a new sample each time
    assert ConvVAE(32, 1, latent_dim=8, kl_weight=0.0).forward_train(x)[1].item() == 0.0
