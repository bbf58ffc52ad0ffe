import numpy as np
import pytest
import torch

from scmsi._likelihoods import HEADS, protein_background_prior


@pytest.mark.parametrize("kind", list(HEADS))
def test_head_shapes_and_finite_loss(kind):
    torch.manual_seed(0)
    head = HEADS[kind](n_features=7, n_latent=4, n_batch=2)
    x = torch.poisson(torch.full((5, 7), 3.0)) + 1
    b = torch.tensor([[0], [1], [0], [1], [1]])
    params = head.decode(torch.randn(5, 4), x, b)
    rec = head.reconstruction_loss(x, params)
    assert rec.shape == (5,) and torch.isfinite(rec).all()
    assert head.kl(params, b).shape == (5,)
    assert head.normalized(params).shape == (5, 7)


def test_protein_foreground_probability_in_unit_interval():
    head = HEADS["protein"](n_features=3, n_latent=4, n_batch=1)
    params = head.decode(torch.randn(6, 4), torch.ones(6, 3), torch.zeros(6, 1, dtype=torch.long))
    p = head.foreground_probability(params)
    assert ((p >= 0) & (p <= 1)).all()


def test_background_prior_finds_lower_component():
    rng = np.random.default_rng(0)
    back = rng.poisson(5, (400, 1))
    fore = rng.poisson(200, (400, 1))
    x = np.vstack([back, fore]).astype(float)
    mean, scale = protein_background_prior(x, np.zeros(800, int), 1)
    assert mean.shape == (1, 1) and abs(mean[0, 0] - np.log1p(5)) < 0.3
    assert scale[0, 0] > 0
