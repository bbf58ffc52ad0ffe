"""scmsi.spatial.graph: the spot graph, smoothing over it (and the refinement that uses it)."""

import numpy as np
import pytest
from scipy import sparse

from scmsi import spatial as sp
from tests._synthetic import synthetic_visium


def test_hexagonal_grid_interior_spots_have_six_neighbours():
    ad_ = synthetic_visium(n_rows=10, n_cols=10)
    g = sp.spatial_neighbors(ad_, n_neighs=6)
    assert g.shape == (100, 100) and (g != g.T).nnz == 0 and g.diagonal().sum() == 0
    deg = np.asarray(g.sum(1)).ravel()
    r, c = ad_.obs["array_row"].to_numpy(), ad_.obs["array_col"].to_numpy()
    interior = (r > 0) & (r < 9) & (c > 0) & (c < 9)
    assert (deg[interior] == 6).all()
    # radius cut: only the ring at one spacing (100) survives
    g2 = sp.spatial_graph(ad_.obsm["spatial"], n_neighs=12, radius=101.0)
    assert (np.asarray(sp.spatial_graph(ad_.obsm["spatial"], 6, radius=None).sum(1)) >= 6).all()
    assert (np.asarray(g2.sum(1)).ravel()[interior] == 6).all()
    assert "spatial_connectivities" in ad_.obsp


def test_graph_is_sparse_with_nk_entries():
    xy = np.random.default_rng(0).random((3000, 2))
    g = sp.spatial_graph(xy, n_neighs=8)
    assert sparse.issparse(g) and g.nnz <= 2 * 8 * 3000


def test_smooth_and_refine():
    g = sp.spatial_graph(np.c_[np.arange(5.0), np.zeros(5)], n_neighs=2)
    x = np.eye(5, dtype=np.float32)[:, :1] * 10  # a spike at spot 0
    assert np.array_equal(sp.smooth(x, g, alpha=0.0), x)
    s = sp.smooth(x, g, alpha=0.5, n_rounds=1)
    assert s[0, 0] < 10 and s[1, 0] > 0 and np.isclose(s.sum(), x.sum(), rtol=0.3)
    with pytest.raises(ValueError):
        sp.smooth(x, g, alpha=1.5)
    labels = np.array(["a", "a", "b", "a", "a"])
    ring = sp.spatial_graph(np.c_[np.cos(np.arange(5)), np.sin(np.arange(5))], n_neighs=2)
    assert ring.nnz > 0
    line = sp.spatial_graph(np.c_[np.arange(5.0), np.zeros(5)], n_neighs=2)
    assert list(sp.refine_domains(labels, line)) == ["a"] * 5
