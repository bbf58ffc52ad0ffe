"""scmsi._encoders: the dense (scvi-tools) and sparse-input encoders."""

import torch
from scvi.nn import Encoder

from scmsi._encoders import SparseInputEncoder, make_encoder


def _batch(n=6, f=30, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(n, f, generator=g) < 0.2).float()
    return x, torch.zeros(n, 1, dtype=torch.long)


def test_make_encoder_picks_the_sparse_encoder_for_peaks():
    assert isinstance(make_encoder(30, 4, 1, 16, 1, 0.0), Encoder)
    assert isinstance(make_encoder(30, 4, 1, 16, 1, 0.0, sparse_input=True), SparseInputEncoder)


def test_sparse_input_equals_dense_input():
    torch.manual_seed(0)
    enc = make_encoder(30, 4, 2, 16, 1, 0.0, sparse_input=True).eval()
    x, b = _batch()
    q_dense, v_dense, _ = enc(x, b)
    q_sparse, v_sparse, _ = enc(x.to_sparse_csr(), b)
    assert q_dense.shape == (6, 4) and (v_dense > 0).all()
    torch.testing.assert_close(q_dense, q_sparse)
    torch.testing.assert_close(v_dense, v_sparse)


def test_the_batch_enters_the_encoder():
    torch.manual_seed(0)
    for sparse_input in (False, True):
        enc = make_encoder(30, 4, 2, 16, 1, 0.0, sparse_input).eval()
        x, b = _batch()
        q0 = enc(x, b)[0]
        q1 = enc(x, b + 1)[0]
        assert not torch.allclose(q0, q1), sparse_input


def test_covariates_enter_the_encoder():
    torch.manual_seed(0)
    enc = make_encoder(30, 4, 1, 16, 1, 0.0, n_cats_per_cov=(3,)).eval()
    x, b = _batch()
    assert not torch.allclose(enc(x, b, b)[0], enc(x, b, b + 2)[0])
