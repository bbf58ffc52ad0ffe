import numpy as np
import scanpy as sc

import scmsi


def test_embed_and_cluster_writes_scanpy_keys(trained):
    model, md = trained
    scmsi.tl.embed_and_cluster(md, model, n_clusters=3)
    assert md.obsm["X_scmsi"].shape == (md.n_obs, 10)
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
