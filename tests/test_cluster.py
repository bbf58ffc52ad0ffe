"""scmsi._cluster: embeddings, k-NN, Leiden and its label-free resolution, clustering."""

import numpy as np
import pytest
import scanpy as sc
from scipy import sparse

import scmsi
from scmsi import _cluster


def test_former_paths_warn_and_still_work():
    """One release of grace for the spatial tools' and building blocks' former paths (the
    export list itself: tests/test_architecture.py)."""
    for name in scmsi.tl.__all__:
        assert callable(getattr(scmsi.tl, name)), name
    with pytest.warns(FutureWarning, match="scmsi.spatial.spatial_domains"):
        assert scmsi.tl.spatial_domains is scmsi.spatial.spatial_domains
    with pytest.warns(FutureWarning, match="internal"):
        assert scmsi.tl.coefficient_pca is _cluster.coefficient_pca
    with pytest.warns(FutureWarning, match="scmsi.spatial.read_visium"):
        assert scmsi.pp.read_visium is scmsi.spatial.read_visium
    with pytest.raises(AttributeError, match="no attribute"):
        scmsi.tl.not_a_tool  # noqa: B018


def test_auto_top_k():
    assert _cluster.auto_top_k(1000, 100, "auto") is None
    assert _cluster.auto_top_k(10**6, 512, "auto") == _cluster.AUTO_TOP_K
    assert _cluster.auto_top_k(10**6, 512, 7) == 7
    assert _cluster.auto_top_k(10, 5, None) is None


def test_leiden_is_seeded_and_leaves_the_global_rng_alone():
    import random

    import igraph

    rng = np.random.default_rng(0)
    x = np.vstack([c + rng.normal(size=(40, 2)) for c in ([0, 0], [8, 0], [0, 8])])
    a = sc.AnnData(obsm={"e": x.astype(np.float32)}, shape=(len(x), 0))
    sc.pp.neighbors(a, use_rep="e", random_state=0)
    g = a.obsp["connectivities"]
    random.seed(5)
    before = random.random()
    random.seed(5)
    first = _cluster.leiden(g, 1.0, seed=3)
    assert random.random() == before  # the global RNG was not drawn from
    np.testing.assert_array_equal(first, _cluster.leiden(g, 1.0, seed=3))
    truth = np.repeat([0, 1, 2], 40)
    for c in first.categories:  # no cluster mixes the three separated groups
        assert len(np.unique(truth[np.asarray(first) == c])) == 1
    # igraph is given Python's RNG back afterwards
    igraph.Graph.Erdos_Renyi(5, 0.5)


def test_cluster_rejects_an_unknown_method():
    with pytest.raises(ValueError, match="kmeans.*spectral"):
        _cluster.cluster(np.zeros((4, 2)), 2, "dbscan")


def test_project_coefficients_dense_equals_sparse():
    rng = np.random.default_rng(1)
    c = (rng.random((50, 12)) * (rng.random((50, 12)) < 0.4)).astype(np.float32)
    pca = {"components": rng.normal(size=(3, 12)), "mean": c.mean(0)}
    np.testing.assert_allclose(
        _cluster.project_coefficients(c, pca),
        _cluster.project_coefficients(sparse.csr_matrix(c), pca),
        atol=1e-5,
    )


def test_coefficient_embedding_is_linear_cost_shape():
    c = np.random.default_rng(0).random((500, 30))
    emb = scmsi.tl.coefficient_embedding(c, n_comps=5)
    assert emb.shape == (500, 5)


def test_anchor_spectral_embedding_is_the_affinity_eigenbasis():
    rng = np.random.default_rng(0)
    # two groups of cells that use disjoint halves of the anchors, plus noise
    coef = rng.random((60, 20)) * 0.05
    coef[:30, :10] += rng.random((30, 10))
    coef[30:, 10:] += rng.random((30, 10))
    emb = scmsi.tl.anchor_spectral_embedding(coef, n_comps=3)
    assert emb.shape == (60, 3)
    assert np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    assert np.all(np.sign(emb[:30, 0]) == -np.sign(emb[30:, 0]))  # first axis splits them
    # the same as the leading non-trivial eigenvectors of the N x N affinity Z Z^T
    z = coef / coef.sum(1, keepdims=True)
    z = z / np.sqrt(z.sum(0, keepdims=True))
    evals, evecs = np.linalg.eigh(z @ z.T)
    ref = evecs[:, ::-1][:, 1:4] * np.sqrt(evals[::-1][1:4])
    ref /= np.linalg.norm(ref, axis=1, keepdims=True)
    ref *= np.sign((emb * ref).sum(0))  # eigenvectors are defined up to sign
    assert np.allclose(emb, ref, atol=1e-4)


def test_leiden_auto_finds_separated_groups_without_labels():
    from anndata import AnnData

    from scmsi.tl import leiden_auto

    rng = np.random.default_rng(0)
    centres = np.array([[0, 0], [10, 0], [0, 10], [10, 10]], dtype=float)
    x = np.vstack([c + rng.normal(size=(80, 2)) for c in centres]).astype(np.float32)
    ad = AnnData(obsm={"X": x}, obs=None, shape=(len(x), 0))
    sc.pp.neighbors(ad, use_rep="X", n_neighbors=15, random_state=0)
    labels, info = leiden_auto(ad.obsp["connectivities"], x, seed=0)
    assert len(labels.categories) == 4
    assert len(info["silhouette"]) == len(info["resolutions"])


def test_coefficient_pca_sparse_input():
    rng = np.random.default_rng(0)
    dense = (rng.random((600, 40)) * (rng.random((600, 40)) < 0.3)).astype(np.float32)
    emb_d, pca_d = _cluster.coefficient_pca(dense, 5)
    emb_s, pca_s = _cluster.coefficient_pca(sparse.csr_matrix(dense), 5)
    assert np.allclose(np.abs(emb_d), np.abs(emb_s), atol=1e-4)
    proj = _cluster.project_coefficients(sparse.csr_matrix(dense), pca_s)
    assert np.allclose(proj, emb_s, atol=1e-4)


def _blobs(n: int, dim: int = 5, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(4, dim)) * 4
    return (centres[rng.integers(0, 4, n)] + rng.normal(size=(n, dim))).astype(np.float32)


def test_knn_graph_is_scanpys_graph():
    """Exact k-NN and UMAP connectivities as scanpy's, with the same Leiden labels."""
    import anndata as ad
    import pandas as pd

    x = _blobs(600)
    a = ad.AnnData(obs=pd.DataFrame(index=[str(i) for i in range(len(x))]))
    a.obsm["e"] = x
    sc.pp.neighbors(a, use_rep="e", random_state=0)
    dist, conn = _cluster.knn_graph(x, 15)
    assert (conn != conn.T).nnz == 0 and conn.diagonal().max() == 0
    assert (conn != 0).nnz == (a.obsp["connectivities"] != 0).nnz
    # float32 exp of numpy vs numba's: a few ulps apart
    assert abs(conn - a.obsp["connectivities"]).max() < 1e-5
    np.testing.assert_allclose(dist.toarray(), a.obsp["distances"].toarray(), atol=1e-5)
    for r in (0.5, 1.0):
        assert (_cluster.leiden(conn, r) == _cluster.leiden(a.obsp["connectivities"], r)).all()


def test_knn_puts_each_cell_first_despite_duplicates():
    x = _blobs(100)
    x[50:60] = x[50]  # ten identical cells
    idx, dist = _cluster.knn(x, 15)
    assert (idx[:, 0] == np.arange(100)).all() and (dist[:, 0] == 0).all()
    assert all(len(set(row)) == 15 for row in idx)
    assert (np.diff(dist[:, 1:], axis=1) >= 0).all()
    _, conn = _cluster.knn_graph(x, 15)
    assert conn.diagonal().max() == 0 and conn[50, 51] == 1.0  # duplicates: fully connected


def test_knn_graph_tiny_data():
    dist, conn = _cluster.knn_graph(_blobs(10), 15)  # scanpy's rule: 1 + N // 2 neighbours
    assert (dist.getnnz(1) == 5).all() and conn.shape == (10, 10)


def test_knn_graph_compiles_nothing():
    """No numba on the exact path: a first call in a fresh process stays fast."""
    import subprocess
    import sys

    code = (
        "import sys, numpy as np; from scmsi import _cluster; "
        "_cluster.knn_graph(np.random.default_rng(0).normal(size=(300, 4)), 15); "
        "print(sorted(m for m in ('umap', 'pynndescent') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.slow
def test_knn_graph_large_data():
    """Approximate k-NN above EXACT_KNN_MAX cells: high recall, scanpy's connectivities."""
    from sklearn.neighbors import NearestNeighbors

    x = np.random.default_rng(0).normal(size=(_cluster.EXACT_KNN_MAX + 800, 5))
    idx, dist = _cluster.knn(x, 10)
    assert (idx[:, 0] == np.arange(len(x))).all()
    exact = NearestNeighbors(n_neighbors=10).fit(x).kneighbors(x[:300])[1][:, 1:]
    recall = np.mean([len(set(exact[i]) & set(idx[i, 1:])) / 9 for i in range(300)])
    assert recall > 0.95


def test_leiden_matches_scanpy(mdata):
    """The igraph graph built once from arrays gives scanpy's Leiden labels exactly."""
    import anndata as ad
    import pandas as pd

    md = mdata
    a = ad.AnnData(obs=pd.DataFrame(index=md.obs_names.copy()))
    a.obsm["e"] = np.log1p(md["prot"].X)
    sc.pp.neighbors(a, use_rep="e", random_state=0)
    graph = a.obsp["connectivities"]
    for r in (0.3, 1.0):
        sc.tl.leiden(a, adjacency=graph, resolution=r, random_state=0, flavor="igraph",
                     n_iterations=2, directed=False)  # fmt: skip
        ours = scmsi.tl.leiden(graph, r, seed=0)
        assert np.array_equal(np.asarray(ours), a.obs["leiden"].to_numpy())


def test_adjusted_rand_index_equals_sklearns():
    from sklearn.metrics import adjusted_rand_score

    rng = np.random.default_rng(0)
    for n, ka, kb in [(500, 3, 5), (1000, 12, 12), (50, 1, 4), (200, 200, 3)]:
        a, b = rng.integers(0, ka, n), rng.integers(0, kb, n)
        assert _cluster._adjusted_rand_index(a, b) == pytest.approx(
            adjusted_rand_score(a, b), abs=1e-12
        )
        assert _cluster._adjusted_rand_index(a, a) == pytest.approx(1.0, abs=1e-12)
    one = np.zeros(10, dtype=int)
    assert _cluster._adjusted_rand_index(one, one) == adjusted_rand_score(one, one)
    alone = np.arange(10)
    assert _cluster._adjusted_rand_index(alone, alone) == adjusted_rand_score(alone, alone)


def test_knn_overlap():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 5))
    assert _cluster._knn_overlap(x, x) == 1.0
    assert _cluster._knn_overlap(x, 3 * x + 1) == pytest.approx(1.0)  # neighbours unchanged
    assert _cluster._knn_overlap(x, x + 0.01 * rng.normal(size=x.shape)) > 0.9
    assert _cluster._knn_overlap(x, rng.normal(size=x.shape)) < 0.2  # unrelated embeddings
