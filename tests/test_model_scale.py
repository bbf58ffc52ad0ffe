"""Large-data paths: the synthetic generator, sparse top-k coefficients, streamed PCA,
subsampled anchor PCA, chunked validation, default epochs and Trainer keyword arguments."""

import numpy as np
import pytest
import scanpy as sc
from scipy import sparse
from sklearn.metrics import adjusted_rand_score

import scmsi
from scmsi import _anchors, _validation
from scmsi._fusion import top_k_sparse
from scmsi._likelihoods import protein_background_prior
from scmsi._model import default_max_epochs
from tests._synthetic import synthetic_cite


@pytest.mark.slow
def test_get_coefficients_top_k_equals_dense(trained):
    model, md = trained
    for fusion in ("mean", "adaptive", "reliability"):
        dense = model.get_coefficients(md, return_all=True, fusion=fusion)
        top = model.get_coefficients(md, return_all=True, fusion=fusion, top_k=7)
        full = model.get_coefficients(md, return_all=True, fusion=fusion, top_k=40)
        for key in ("fused", "rna", "prot"):
            assert sparse.isspmatrix_csr(top[key])
            assert np.allclose(full[key].toarray(), dense[key], atol=1e-7)
            assert np.allclose(top[key].toarray(), top_k_sparse(dense[key], 7).toarray())
            assert (top[key].getnnz(1) <= 7).all()
    assert sparse.isspmatrix_csr(model.get_coefficients(md, modality="rna", top_k=3))
    with pytest.raises(ValueError, match="top_k"):
        model.get_coefficients(md, top_k=0)


@pytest.mark.slow
def test_iter_coefficients_matches_get_coefficients(trained):
    model, md = trained
    dense = model.get_coefficients(md, return_all=True)
    latents = model.get_latent_representation(md)
    parts = list(model.iter_coefficients(md, batch_size=64, latent=True))
    assert len(parts) == 4
    assert np.allclose(np.concatenate([p["fused"] for p in parts]), dense["fused"], atol=1e-6)
    assert np.allclose(np.concatenate([p["latent"]["rna"] for p in parts]), latents["rna"])


@pytest.mark.slow
def test_streamed_embedding_equals_dense_path(trained, monkeypatch):
    """Large-data path (exact streamed PCA, top-k storage) agrees with the dense path."""
    model, md = trained
    dense = md.copy()
    scmsi.tl.embed_and_cluster(dense, model, umap=False, resolution=0.5, top_k=None)
    monkeypatch.setattr(scmsi._cluster, "DENSE_MAX_ENTRIES", 0)  # as if the data were large
    streamed = md.copy()
    scmsi.tl.embed_and_cluster(streamed, model, umap=False, resolution=0.5)
    assert sparse.isspmatrix_csr(streamed.obsm["scmsi_coef"])
    assert streamed.obsm["scmsi_coef"].getnnz(1).max() <= min(scmsi._cluster.AUTO_TOP_K, 40)
    a, b = dense.obsm["X_scmsi"], streamed.obsm["X_scmsi"]
    scale = np.abs(a).max()
    assert np.allclose(a, b, atol=2e-3 * scale)
    assert adjusted_rand_score(dense.obs["scmsi_leiden"], streamed.obs["scmsi_leiden"]) > 0.95
    # new cells are projected the same way, whichever path the query takes
    q = md[:60].copy()
    scmsi.tl.map_query(q, model, streamed, top_k=5)
    assert np.allclose(q.obsm["X_scmsi"], b[:60], atol=2e-3 * scale)
    assert q.obsm["scmsi_coef"].getnnz(1).max() <= 5


@pytest.mark.parametrize("kind", ["counts", "accessibility"])
def test_subsampled_anchor_pca(kind):
    """Fitted on every cell, the chunked projection is the PCA itself."""
    md = synthetic_cite(n_cells=500, n_genes=120, n_proteins=4, n_types=3, seed=0)
    x = md["rna"].X
    if kind == "accessibility":
        x = (x > 2).astype(np.float32)
    full = sc.pp.pca(_anchors.anchor_features(x, kind), n_comps=8, random_state=0)
    chunked = _anchors._subsampled_pca(x, kind, 8, n_fit=500, seed=0, chunk=77)
    corr = np.abs((full * chunked).sum(0)) / (
        np.linalg.norm(full, axis=0) * np.linalg.norm(chunked, axis=0)
    )
    assert corr.min() > 0.999
    anchors = _anchors.select_anchors(x, 30, kind=kind, max_pca_cells=200)
    assert len(np.unique(anchors)) == 30 and anchors.max() < 500


def test_chunked_validation_finds_bad_values(monkeypatch):
    monkeypatch.setattr(_validation, "_CHUNK", 7)
    x = sparse.random(40, 30, density=0.3, format="csr", random_state=0) * 10
    x.data = np.round(x.data) + 1
    _validation.check_counts(x, "m")
    _validation.check_counts(x.astype(np.int64), "m")  # integer matrices too
    _validation.check_nonempty_cells(x, "m", [str(i) for i in range(40)])
    bad = x.copy()
    bad.data[-1] = 2.5
    with pytest.raises(ValueError, match="1 non-integer"):
        _validation.check_counts(bad, "m")
    bad.data[-1] = np.nan
    with pytest.raises(ValueError, match="1 NaN"):
        _validation.check_counts(bad, "m")
    bad.data[-1] = -1
    with pytest.raises(ValueError, match="negative"):
        _validation.check_nonnegative(bad, "m", "accessibility")
    empty = x.tolil()
    empty[33] = 0
    with pytest.raises(ValueError, match="1 cells have no counts"):
        _validation.check_nonempty_cells(sparse.csr_matrix(empty), "m", list("x" * 40))


def test_protein_prior_reads_sparse_like_dense():
    md = synthetic_cite(n_cells=300, n_genes=20, n_proteins=6, n_batches=2, seed=0)
    x, batch = md["prot"].X, md.obs["batch"].cat.codes.to_numpy()
    dense = protein_background_prior(x, batch, 2, n_cells=100)
    sp = protein_background_prior(sparse.csr_matrix(x), batch, 2, n_cells=100)
    assert np.allclose(dense[0], sp[0]) and np.allclose(dense[1], sp[1])


def test_default_max_epochs():
    assert default_max_epochs(1_000) == 400
    assert default_max_epochs(20_000) == 400
    assert default_max_epochs(200_000) == 40
    assert default_max_epochs(1_000_000) == 10
    assert default_max_epochs(10_000_000) == 10
    assert default_max_epochs(1_000, budget=200) == 200
    assert default_max_epochs(40_000, budget=200) == 100


@pytest.mark.slow
def test_trainer_kwargs_reach_lightning(mdata):
    """accelerator / devices / strategy (multi-GPU settings) are Lightning Trainer arguments."""
    from lightning.pytorch.strategies import SingleDeviceStrategy

    scmsi.SCMSI.setup_mudata(mdata, layers={"rna": "counts", "prot": "counts"})
    model = scmsi.SCMSI(mdata, n_anchors=30)
    strategy = SingleDeviceStrategy(device="cpu")
    model.train(
        max_epochs=1,
        accelerator="cpu",
        devices=1,
        strategy=strategy,
        batch_size=32,
        limit_train_batches=2,
        enable_progress_bar=False,
    )
    assert model.trainer.strategy is strategy
    assert model.trainer.num_devices == 1
    assert model.trainer.num_training_batches == 2


@pytest.mark.slow
def test_backed_mudata_worked_example(tmp_path):
    """docs/scaling.md: train on a backed h5mu; or train on a subsample and map chunks."""
    import mudata as md

    path = tmp_path / "cells.h5mu"
    scmsi.datasets.synthetic_citeseq(
        1500, n_genes=120, n_proteins=8, n_types=4, n_batches=2, seed=0
    ).write_h5mu(path)

    # 1. backed: data stay on disk, minibatches are read from the file
    mdata = md.read_h5mu(path, backed=True)
    assert not scmsi._backed.in_memory(mdata["rna"].X)
    scmsi.SCMSI.setup_mudata(mdata, batch_key="batch")
    model = scmsi.SCMSI(mdata, n_anchors=40, seed=0)
    model.train(max_epochs=2, enable_progress_bar=False)
    scmsi.tl.embed_and_cluster(mdata, model, umap=False, top_k=8)
    n_latent = model.module.n_latent * len(model.modality_names)  # the default: joint latent
    assert mdata.obsm["X_scmsi"].shape == (1500, n_latent)
    assert mdata.obsm["scmsi_coef"].getnnz(1).max() <= 8
    assert mdata.obs["scmsi_leiden"].notna().all()

    # 2. train on an in-memory subsample, map every cell a chunk at a time
    full = md.read_h5mu(path, backed=True)

    def load(rows):
        view = full[rows]
        chunk = md.MuData({m: view[m].to_memory() for m in view.mod})
        chunk.obs = view.obs.copy()
        return chunk

    rng = np.random.default_rng(0)
    ref = load(np.sort(rng.choice(full.n_obs, 600, replace=False)))
    scmsi.SCMSI.setup_mudata(ref, batch_key="batch")
    model = scmsi.SCMSI(ref, n_anchors=40, seed=0)
    model.train(max_epochs=2, enable_progress_bar=False)
    scmsi.tl.embed_and_cluster(ref, model, umap=False)
    emb = []
    for start in range(0, full.n_obs, 500):
        chunk = load(slice(start, start + 500))
        scmsi.tl.map_query(chunk, model, ref)
        emb.append(chunk.obsm["X_scmsi"])
    emb = np.concatenate(emb)
    whole = md.read_h5mu(path)
    scmsi.tl.map_query(whole, model, ref)
    assert np.allclose(emb, whole.obsm["X_scmsi"], atol=1e-5)
