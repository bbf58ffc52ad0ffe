import torch

from scmsi._selfexpression import (
    SelfExpressiveNetwork,
    elastic_net,
    locality_weights,
    self_expression_error,
)


def test_coefficients_nonnegative_masked_and_never_empty():
    torch.manual_seed(0)
    net = SelfExpressiveNetwork(n_latent=10, n_hidden=16, n_embed=8)
    with torch.no_grad():
        net.threshold.fill_(100.0)  # a threshold above every score
    z, za = torch.randn(32, 10), torch.randn(12, 10)
    mask = torch.zeros(32, 12, dtype=torch.bool)
    mask[0, 3] = True
    c = net(z, za, mask)
    assert c.shape == (32, 12)
    assert (c >= 0).all()
    assert c[0, 3] == 0
    assert ((c > 0).sum(1) >= 1).all()  # the best anchor always survives


def test_elastic_net():
    c = torch.tensor([[0.5, 0.0, 0.2]])
    expected = 0.9 * 0.7 + 0.05 * (0.25 + 0.04)
    assert torch.allclose(elastic_net(c, 0.9), torch.tensor([expected]))


def test_locality_weights_penalise_far_anchors():
    z = torch.zeros(2, 3)
    za = torch.tensor([[0.1, 0.0, 0.0], [3.0, 0.0, 0.0], [0.0, 3.0, 0.0]])
    w = locality_weights(z, za)
    assert w.shape == (2, 3)
    assert torch.allclose(w.mean(-1), torch.ones(2))
    near, far = torch.tensor([[1.0, 0.0, 0.0]]), torch.tensor([[0.0, 1.0, 0.0]])
    assert elastic_net(near, 0.9, w[:1]) < elastic_net(far, 0.9, w[:1])
    # Unweighted, the two cost the same: the paper's plain elastic net.
    assert torch.allclose(elastic_net(near, 0.9), elastic_net(far, 0.9))
    zq = torch.randn(4, 3, requires_grad=True)
    assert not locality_weights(zq, za).requires_grad  # the encoder cannot shrink distances


def test_self_expression_error_is_scale_free():
    torch.manual_seed(0)
    z, za = torch.randn(16, 10), torch.randn(50, 10)
    c = torch.rand(16, 50) / 50
    err = self_expression_error(z, c @ za, za)
    assert err.shape == (16,)
    # Shrinking every latent towards a point must not lower the error (the trivial minimum).
    shrunk = self_expression_error(0.01 * z, c @ (0.01 * za), 0.01 * za)
    assert torch.allclose(shrunk, err, rtol=1e-4)
    # For anchors with unit variance per dimension it is the plain squared error.
    za1 = (za - za.mean(0)) / za.std(0)
    plain = (z - c @ za1).pow(2).sum(-1)
    assert torch.allclose(self_expression_error(z, c @ za1, za1), plain, rtol=1e-4)
