import numpy as np
import pytest
import scanpy as sc

import scmsi


@pytest.mark.slow
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


@pytest.mark.slow
def test_umap_only_when_asked(trained):
    """umap=False writes no UMAP and the same clusters; pl.umap computes it on demand."""
    model, md = trained
    without, with_umap = md.copy(), md.copy()
    scmsi.tl.embed_and_cluster(without, model, n_clusters=3, seed=1)
    scmsi.tl.embed_and_cluster(with_umap, model, n_clusters=3, seed=1, umap=True)
    assert "X_umap" not in without.obsm and with_umap.obsm["X_umap"].shape == (md.n_obs, 2)
    for key in ("scmsi_leiden", "scmsi_kmeans"):
        assert (without.obs[key] == with_umap.obs[key]).all(), key
    for key in ("scmsi_connectivities", "scmsi_distances"):
        assert (without.obsp[key] != with_umap.obsp[key]).nnz == 0, key
    assert without.uns["scmsi"]["params"]["n_neighbors"] == 15
    scmsi.pl.umap(without)  # computed with the run's seed: the same layout
    np.testing.assert_allclose(without.obsm["X_umap"], with_umap.obsm["X_umap"], atol=1e-5)
    # scanpy's own UMAP runs on the graph as written
    sc.tl.umap(_graph_only(without), neighbors_key="scmsi")


def _graph_only(md):
    ad = md["rna"].copy()
    for k in ("scmsi_connectivities", "scmsi_distances"):
        ad.obsp[k] = md.obsp[k]
    ad.obsm["X_scmsi"] = md.obsm["X_scmsi"]
    ad.uns["scmsi"] = md.uns["scmsi"]
    return ad


def test_umap_needs_a_graph():
    ad = sc.AnnData(np.zeros((5, 2), dtype=np.float32))
    with pytest.raises(KeyError, match="embed_and_cluster"):
        scmsi.tl.umap(ad)
    with pytest.raises(KeyError, match="embed_and_cluster"):
        scmsi.pl.umap(ad)


@pytest.mark.slow
def test_spectral_clustering_on_graph(trained):
    model, md = trained
    scmsi.tl.embed_and_cluster(md, model, n_clusters=3, cluster_method="spectral", umap=False)
    assert md.obs["scmsi_spectral"].nunique() == 3


@pytest.mark.slow
def test_adaptive_fusion_maps_a_cell_the_same_whatever_the_query(trained):
    """New cells are weighed on the reference's error scale, not their own query's."""
    model, md = trained
    ref = md.copy()
    scmsi.tl.embed_and_cluster(ref, model, umap=False, fusion="adaptive")
    assert ref.uns["scmsi_embedding"]["fusion"] == "adaptive"
    w = ref.obsm["scmsi_modality_weights"]
    assert w.shape == (md.n_obs, 2) and np.allclose(w.sum(1), 1.0, atol=1e-5)
    scale = ref.uns["scmsi_embedding"]["fusion_scale"]
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


@pytest.mark.slow
def test_precision_fusion_maps_new_cells_as_the_reference(trained):
    """map_query fuses new cells with the reference's fusion; weights need no reference scale."""
    model, md = trained
    ref = md.copy()
    scmsi.tl.embed_and_cluster(ref, model, umap=False, fusion="precision")
    assert ref.uns["scmsi_embedding"]["fusion"] == "precision"
    assert "fusion_scale" not in ref.uns["scmsi_embedding"]
    w = ref.obsm["scmsi_modality_weights"]
    assert w.shape == (md.n_obs, 2) and np.allclose(w.sum(1), 1.0, atol=1e-5)
    query = md.copy()
    scmsi.tl.map_query(query, model, ref)
    # The same cells in the same order: the same seeded draws, the same embedding.
    np.testing.assert_allclose(query.obsm["X_scmsi"], ref.obsm["X_scmsi"], atol=1e-4)


@pytest.mark.slow
def test_key_added_keeps_the_first_run(trained):
    model, md = trained
    md = md.copy()
    scmsi.tl.embed_and_cluster(md, model, n_clusters=3, umap=True)
    first = {k: np.array(md.obsm[k]) for k in ("X_scmsi", "X_umap")}
    leiden = md.obs["scmsi_leiden"].copy()
    scmsi.tl.embed_and_cluster(
        md, model, fusion="adaptive", n_clusters=2, key_added="foo", umap=True
    )
    for k, v in first.items():
        np.testing.assert_array_equal(md.obsm[k], v)  # the first run is left as it was
    assert (md.obs["scmsi_leiden"] == leiden).all()
    assert md.obs["scmsi_kmeans"].nunique() == 3 and md.obs["foo_kmeans"].nunique() == 2
    for k in ("X_foo", "foo_coef", "foo_modality_weights", "X_foo_rna", "X_foo_prot", "X_foo_umap"):
        assert md.obsm[k].shape[0] == md.n_obs, k
    assert md.obsm["foo_modality_weights"].shape == (md.n_obs, 2)
    assert md.obsm["scmsi_modality_weights"].shape == (md.n_obs, 2)  # the reliability fusion's
    for k in ("foo_connectivities", "foo_distances"):
        assert md.obsp[k].shape == (md.n_obs, md.n_obs)
    assert md.uns["foo_embedding"]["fusion"] == "adaptive"
    assert md.uns["scmsi_embedding"]["fusion"] == "reliability"  # the default preset's
    assert md.uns["scmsi_embedding"]["weights"].shape == (2,)  # the joint latent's weights
    assert "weights" not in md.uns["foo_embedding"]  # only the reliability fusion weighs the latent
    assert md.uns["foo"]["connectivities_key"] == "foo_connectivities"
    assert "foo_leiden" in md.obs and "resolution" in md.uns["foo_leiden"]["params"]
    # a query is placed in the embedding of the run it names
    q = md[:30].copy()
    scmsi.tl.map_query(q, model, md, key_added="foo")
    np.testing.assert_allclose(q.obsm["X_foo"], md.obsm["X_foo"][:30], atol=1e-4)
    np.testing.assert_allclose(q.obsm["foo_coef"], md.obsm["foo_coef"][:30], atol=1e-5)
