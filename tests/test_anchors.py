import numpy as np

from scmsi._anchors import default_n_anchors, lognormalize, select_anchors
from tests._synthetic import synthetic_cite


def test_default_n_anchors_scales_and_caps():
    assert default_n_anchors(1000) == 253
    assert default_n_anchors(10**6) == 512
    assert default_n_anchors(60) == 30  # never more than half the cells


def test_select_anchors_unique_and_cover_types():
    md = synthetic_cite(n_cells=300, n_genes=100, n_types=3, seed=1)
    x = md["rna"].layers["counts"]
    idx = select_anchors(x, 30, seed=0)
    assert len(idx) == 30 and len(np.unique(idx)) == 30
    assert set(md.obs["cell_type"].iloc[idx]) == set(md.obs["cell_type"])
    np.testing.assert_array_equal(idx, select_anchors(x, 30, seed=0))


def test_lognormalize_does_not_modify_input():
    md = synthetic_cite(n_cells=50, n_genes=20, seed=2)
    x = md["rna"].layers["counts"]
    before = x.copy()
    y = lognormalize(x)
    assert (x != before).nnz == 0
    np.testing.assert_allclose(np.expm1(y.toarray()).sum(1), 1e4, rtol=1e-4)
