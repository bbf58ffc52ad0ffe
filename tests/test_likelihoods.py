import numpy as np
import pytest
import torch

from scmsi._likelihoods import HEADS, protein_background_prior

VARIANTS = [
    ("counts", {"likelihood": "nb"}),
    ("counts", {"likelihood": "zinb"}),
    ("protein", {}),
    ("accessibility", {"likelihood": "bernoulli"}),
    ("accessibility", {"likelihood": "poisson"}),
    ("continuous", {}),
]


@pytest.mark.parametrize(("kind", "kwargs"), VARIANTS)
def test_head_shapes_and_finite_loss(kind, kwargs):
    torch.manual_seed(0)
    head = HEADS[kind](n_features=7, n_latent=4, n_batch=2, **kwargs)
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


@pytest.mark.parametrize(("kind", "kwargs"), VARIANTS)
def test_head_loss_decreases_when_fitting(kind, kwargs):
    """Each likelihood can be fitted: 60 Adam steps on fixed data lower its loss by 10 %+."""
    torch.manual_seed(0)
    n, f = 64, 12
    z = torch.randn(n, 4)
    b = torch.zeros(n, 1, dtype=torch.long)
    # Data that depend on z, in the value range of each type.
    signal = torch.sigmoid(z @ torch.randn(4, f))
    if kind == "continuous":
        x = 3 * signal + 0.1 * torch.randn(n, f)
    elif kind == "accessibility" and kwargs["likelihood"] == "bernoulli":
        x = torch.bernoulli(signal)
        x[:, 0] = 1.0  # no empty cells
    else:
        x = torch.poisson(20 * signal) + 1
    head = HEADS[kind](n_features=f, n_latent=4, n_batch=1, **kwargs)
    opt = torch.optim.Adam(head.parameters(), lr=1e-2)
    losses = []
    for _ in range(60):
        params = head.decode(z, x, b)
        loss = (head.reconstruction_loss(x, params) + head.kl(params, b)).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert np.isfinite(losses).all()
    assert losses[-1] < losses[0] - 0.1 * abs(losses[0])


def test_accessibility_binarises_counts():
    head = HEADS["accessibility"](n_features=5, n_latent=3, n_batch=1)
    x = torch.tensor([[0.0, 3.0, 1.0, 0.0, 7.0]])
    assert torch.equal(head.encoder_input(x), torch.tensor([[0.0, 1.0, 1.0, 0.0, 1.0]]))
    b = torch.zeros(1, 1, dtype=torch.long)
    params = head.decode(torch.randn(1, 3), x, b)
    # Same loss as the binarised input: values above 1 are "open", not counts.
    assert torch.allclose(
        head.reconstruction_loss(x, params), head.reconstruction_loss((x > 0).float(), params)
    )


def test_unknown_likelihoods_rejected():
    with pytest.raises(ValueError, match="bernoulli"):
        HEADS["accessibility"](n_features=5, n_latent=3, n_batch=1, likelihood="gaussian")


def test_nb_log_prob_sum_is_scvis_nb():
    """Value and gradients of scvi-tools' NegativeBinomial, the dispersion kept per gene."""
    from scvi.distributions import NegativeBinomial

    from scmsi._likelihoods import nb_log_prob_sum

    gen = torch.Generator().manual_seed(0)
    x = torch.poisson(torch.rand(32, 50, generator=gen) * 5)
    mu = (torch.rand(32, 50, generator=gen) * 5 + 0.01).requires_grad_()
    log_theta = torch.randn(50, generator=gen).requires_grad_()
    ours = nb_log_prob_sum(x, mu, log_theta.exp())
    theirs = NegativeBinomial(mu=mu, theta=log_theta.exp()).log_prob(x).sum(-1)
    assert ours.shape == (32,)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-3)
    g_ours = torch.autograd.grad(ours.sum(), [mu, log_theta])
    g_theirs = torch.autograd.grad(theirs.sum(), [mu, log_theta])
    for a, b in zip(g_ours, g_theirs, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
