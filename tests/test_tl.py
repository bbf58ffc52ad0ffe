import numpy as np
import scanpy as sc

import scmsi


def test_embed_and_cluster_writes_scanpy_keys(trained):
    model, md = trained
    scmsi.tl.embed_and_cluster(md, model, n_clusters=3)
    # default embedding: both modalities' latents (10 each), standardised, concatenated
    assert md.obsm["X_scmsi"].shape == (md.n_obs, 20)
    info = md.uns["scmsi_leiden"]
    assert info["n_clusters"] == md.obs["scmsi_leiden"].nunique()
    assert len(info["n_clusters_evidence"]["stability"]) == len(
        info["n_clusters_evidence"]["resolutions"]
    )
    # a second run under another key leaves the first clusters alone
    first = md.obs["scmsi_leiden"].copy()
    scmsi.tl.embed_and_cluster(md, model, resolution=2.0, umap=False, key_added="fine")
    assert (md.obs["scmsi_leiden"] == first).all() and "fine" in md.uns
    assert md.obsm["scmsi_coef"].shape == (md.n_obs, 40)
    assert md.obsm["X_scmsi_rna"].shape == (md.n_obs, 10)
    assert md.obsp["scmsi_connectivities"].shape == (md.n_obs, md.n_obs)
    assert md.obs["scmsi_kmeans"].nunique() == 3
    assert md.obs["scmsi_leiden"].nunique() >= 2
    # scanpy reads the graph directly
    ad = md["rna"].copy()
    ad.obsp["scmsi_connectivities"] = md.obsp["scmsi_connectivities"]
    ad.obsp["scmsi_distances"] = md.obsp["scmsi_distances"]
    ad.uns["scmsi"] = md.uns["scmsi"]
    sc.tl.leiden(ad, neighbors_key="scmsi", flavor="igraph", n_iterations=2, directed=False)
    assert ad.obs["leiden"].nunique() >= 2


def test_spectral_clustering_on_graph(trained):
    model, md = trained
    scmsi.tl.embed_and_cluster(md, model, n_clusters=3, cluster_method="spectral", umap=False)
    assert md.obs["scmsi_spectral"].nunique() == 3


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


def test_adaptive_fusion_maps_a_cell_the_same_whatever_the_query(trained):
    """New cells are weighed on the reference's error scale, not their own query's."""
    model, md = trained
    ref = md.copy()
    scmsi.tl.embed_and_cluster(ref, model, umap=False, fusion="adaptive")
    assert ref.uns["scmsi_pca"]["fusion"] == "adaptive"
    w = ref.obsm["scmsi_modality_weights"]
    assert w.shape == (md.n_obs, 2) and np.allclose(w.sum(1), 1.0, atol=1e-5)
    scale = ref.uns["scmsi_pca"]["fusion_scale"]
    part = md[:30].copy()
    own = model.get_modality_weights(part).to_numpy()
    fixed = model.get_modality_weights(part, scale=scale).to_numpy()
    np.testing.assert_allclose(fixed, w[:30], atol=1e-6)
    assert np.abs(own - w[:30]).max() > 1e-5  # the query's own scale would differ
    whole = md.copy()
    scmsi.tl.map_query(whole, model, ref)
    scmsi.tl.map_query(part, model, ref)
    np.testing.assert_allclose(part.obsm["X_scmsi"], whole.obsm["X_scmsi"][:30], atol=1e-6)
    np.testing.assert_allclose(whole.obsm["X_scmsi"], ref.obsm["X_scmsi"], atol=1e-4)


def test_precision_fusion_maps_new_cells_as_the_reference(trained):
    """map_query fuses new cells with the reference's fusion; weights need no reference scale."""
    model, md = trained
    ref = md.copy()
    scmsi.tl.embed_and_cluster(ref, model, umap=False, fusion="precision")
    assert ref.uns["scmsi_pca"]["fusion"] == "precision"
    assert "fusion_scale" not in ref.uns["scmsi_pca"]
    w = ref.obsm["scmsi_modality_weights"]
    assert w.shape == (md.n_obs, 2) and np.allclose(w.sum(1), 1.0, atol=1e-5)
    query = md.copy()
    scmsi.tl.map_query(query, model, ref)
    # The same cells in the same order: the same seeded draws, the same embedding.
    np.testing.assert_allclose(query.obsm["X_scmsi"], ref.obsm["X_scmsi"], atol=1e-4)
