"""scmsi._cluster: embeddings, k-NN, Leiden and its label-free resolution, clustering."""

import numpy as np
import pytest
import scanpy as sc
from scipy import sparse

import scmsi
from scmsi import _cluster


def test_tl_keeps_the_public_names():
    for name in _cluster.__dict__:
        if not name.startswith("_") and callable(getattr(_cluster, name)):
            if getattr(_cluster, name).__module__ == "scmsi._cluster":
                assert getattr(scmsi.tl, name) is getattr(_cluster, name), name
    assert scmsi.tl.spatial_domains is scmsi.spatial.spatial_domains
    assert {"spatial_domains", "smooth", "refine_domains", "leiden"} <= set(dir(scmsi.tl))
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
    emb_d, pca_d = scmsi.tl.coefficient_pca(dense, 5)
    emb_s, pca_s = scmsi.tl.coefficient_pca(sparse.csr_matrix(dense), 5)
    assert np.allclose(np.abs(emb_d), np.abs(emb_s), atol=1e-4)
    proj = scmsi.tl.project_coefficients(sparse.csr_matrix(dense), pca_s)
    assert np.allclose(proj, emb_s, atol=1e-4)


@pytest.mark.slow
def test_knn_transformer_large_data():
    """Approximate k-NN above 8,192 cells (scanpy's default fails there with pynndescent 0.7)."""
    import anndata as ad
    import pandas as pd
    from sklearn.neighbors import NearestNeighbors

    assert scmsi.tl.knn_transformer(8000) is None
    x = np.random.default_rng(0).normal(size=(9000, 5)).astype(np.float32)
    a = ad.AnnData(obs=pd.DataFrame(index=[str(i) for i in range(len(x))]))
    a.obsm["e"] = x
    sc.pp.neighbors(a, n_neighbors=10, use_rep="e", transformer=scmsi.tl.knn_transformer(9000))
    exact = NearestNeighbors(n_neighbors=10).fit(x).kneighbors(x[:300])[1][:, 1:]
    found = a.obsp["distances"][:300]
    recall = np.mean([len(set(exact[i]) & set(found[i].indices)) / 9 for i in range(300)])
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
