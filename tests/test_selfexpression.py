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


def _three_clusters(n_per: int = 30, dim: int = 10, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    centres = 6.0 * torch.eye(3, dim)
    z = torch.cat([c + 0.3 * torch.randn(n_per, dim, generator=g) for c in centres])
    labels = torch.arange(3).repeat_interleave(n_per)
    return z, labels


def test_softmax_coefficients_are_distributions_that_exclude_self():
    from scmsi._selfexpression import SoftmaxSelfExpression

    torch.manual_seed(0)
    net = SoftmaxSelfExpression(n_latent=10)
    z, za = torch.randn(32, 10), torch.randn(12, 10)
    mask = torch.zeros(32, 12, dtype=torch.bool)
    mask[0, 3] = mask[5, 0] = True
    za[3] = z[0]  # cell 0 *is* anchor 3: its nearest anchor, yet it must get weight 0
    c = net(z, za, mask)
    assert c.shape == (32, 12)
    assert (c >= 0).all()
    assert torch.allclose(c.sum(1), torch.ones(32), atol=1e-6)
    assert c[0, 3] == 0 and c[5, 0] == 0
    assert (c[1:4] > 0).all()  # no threshold: no anchor is ever cut (nothing can die)
    # the learned bandwidth gets a gradient from every coefficient
    c[:, 0].sum().backward()
    assert net.log_scale.grad is not None and net.log_scale.grad.abs().sum() > 0


def test_softmax_coefficients_are_local_and_hub_free_on_separable_data():
    """Each cell's weight sits on anchors of its own cluster, spread over them, no hub."""
    from scmsi._selfexpression import SoftmaxSelfExpression

    z, labels = _three_clusters(n_per=60)
    anchors = torch.arange(0, 180, 3)  # 20 anchors per cluster
    mask = torch.arange(180)[:, None] == anchors[None, :]
    c = SoftmaxSelfExpression(10)(z, z[anchors], mask)
    same = labels[:, None] == labels[anchors][None, :]
    assert (c * same).sum(1).min() > 0.99
    top = c.argmax(1)
    assert torch.bincount(top).max() / len(top) < 0.2  # the most used top anchor: < 20 %
    eff = torch.exp(-(c * torch.log(c.clamp_min(1e-30))).sum(1))
    assert eff.median() > 5.0  # rows are spread over several anchors, not one


def test_symmetric_kl_is_zero_only_for_equal_rows():
    from scmsi._selfexpression import symmetric_kl

    torch.manual_seed(0)
    a, b = torch.randn(5, 7), torch.randn(5, 7)
    assert torch.allclose(symmetric_kl(a, a + 3.0), torch.zeros(5), atol=1e-6)  # same softmax
    d = symmetric_kl(a, b)
    assert (d > 0).all()
    assert torch.allclose(d, symmetric_kl(b, a))
    # finite where both rows have a masked (zero-probability) anchor
    from scmsi._selfexpression import SoftmaxSelfExpression

    net = SoftmaxSelfExpression(3)
    z, za = torch.randn(4, 3), torch.randn(6, 3)
    mask = torch.zeros(4, 6, dtype=torch.bool)
    mask[:, 2] = True
    la, lb = net.logits(z, za, mask), net.logits(z + 0.1, za, mask)
    assert torch.isfinite(symmetric_kl(la, lb)).all()


def test_product_fusion_multiplies_the_anchor_distributions():
    import numpy as np

    from scmsi._fusion import product_fusion
    from scmsi._selfexpression import SoftmaxSelfExpression

    torch.manual_seed(0)
    z1, z2 = torch.randn(20, 4), torch.randn(20, 3)
    a1, a2 = torch.randn(9, 4), torch.randn(9, 3)
    n1, n2 = SoftmaxSelfExpression(4, perplexity=3), SoftmaxSelfExpression(3, perplexity=3)
    with torch.no_grad():
        l1, l2 = n1.logits(z1, a1), n2.logits(z2, a2)
    fused = product_fusion([torch.softmax(l1, -1).numpy(), torch.softmax(l2, -1).numpy()])
    # a kernel on both latents: the softmax of the summed log-coefficients
    np.testing.assert_allclose(fused, torch.softmax(l1 + l2, -1).numpy(), rtol=1e-4, atol=1e-6)
    c1 = torch.softmax(l1, -1).numpy()
    # an anchor both modalities put near the cell wins over one only a single modality does
    both = (c1 * torch.softmax(l2, -1).numpy()).argmax(1)
    assert (fused.argmax(1) == both).all()
    # a cell lacking modality 2 is fused over modality 1 alone
    obs = [np.ones(20, bool), np.arange(20) >= 5]
    part = product_fusion([c1, torch.softmax(l2, -1).numpy()], obs)
    np.testing.assert_allclose(part[:5], c1[:5], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(part.sum(1), 1.0, rtol=1e-5)


def test_bandwidth_gives_each_row_the_target_perplexity():
    from scmsi._selfexpression import SoftmaxSelfExpression

    torch.manual_seed(0)
    z, za = torch.randn(50, 6), torch.randn(80, 6)
    za[:40] *= 10.0  # anchors at very different densities
    mask = torch.zeros(50, 80, dtype=torch.bool)
    mask[:, 7] = True
    c = SoftmaxSelfExpression(6, perplexity=12)(z, za, mask).detach()
    eff = torch.exp(-(c * torch.log(c.clamp_min(1e-30))).sum(1))
    assert torch.allclose(eff, torch.full_like(eff, 12.0), rtol=1e-2)
    assert (c[:, 7] == 0).all()


def test_directed_kl_pulls_the_student_only():
    from scmsi._selfexpression import directed_kl

    teacher = torch.randn(4, 7, requires_grad=True)
    student = torch.randn(4, 7, requires_grad=True)
    directed_kl(teacher, student).sum().backward()
    assert teacher.grad is None  # the teacher is a target
    assert student.grad.abs().sum() > 0
    assert torch.allclose(directed_kl(teacher, teacher), torch.zeros(4), atol=1e-6)


def test_capture_finds_the_view_that_knows_the_neighbours():
    """Two views of 3 groups: view a separates them, view b is noise. a's anchors find b's
    neighbours no better than b's find a's except where a is informative, so a teaches b."""
    from scmsi._selfexpression import neighbourhood_capture, teaching_gate

    g = torch.Generator().manual_seed(0)
    groups = torch.arange(60) % 3
    za = torch.nn.functional.one_hot(groups, 3).float() * 5 + 0.1 * torch.randn(60, 3, generator=g)
    zb = za[:, :2] * 0.3 + torch.randn(60, 2, generator=g)  # weakly tied to a, mostly noise
    anchors = torch.arange(0, 60, 2)
    z = {"a": za, "b": zb}
    z_anchor = {m: v[anchors] for m, v in z.items()}
    coef = {m: torch.softmax(-torch.cdist(v, z_anchor[m]).pow(2), -1) for m, v in z.items()}
    kappa = neighbourhood_capture(z, z_anchor, coef)
    assert kappa["a", "b"].mean() > kappa["b", "a"].mean()
    gate_ab, gate_ba = teaching_gate(kappa, "a", "b"), teaching_gate(kappa, "b", "a")
    assert gate_ab.mean() > 0.5 and torch.all(gate_ab * gate_ba == 0)  # never both ways
