"""More than RNA + protein: accessibility, continuous features, three modalities, sparse peaks."""

import tracemalloc

import anndata as ad
import mudata as md
import numpy as np
import pytest
import scvi
from scipy import sparse

import scmsi
from scmsi._anchors import select_anchors

from .conftest import FAST


def _rna_atac(n_cells=200, n_genes=60, n_peaks=300, n_types=3, seed=0, density=0.15):
    """Paired RNA counts + sparse binary peaks with shared cell types."""
    rng = np.random.default_rng(seed)
    types = rng.integers(0, n_types, n_cells)
    gene_prog = rng.gamma(1.0, 1.0, (n_types, n_genes))
    rna = rng.poisson(gene_prog[types] * 3).astype(np.float32)
    rna[:, 0] += 1  # no empty cells
    peak_p = np.clip(rng.beta(0.5, 3.0, (n_types, n_peaks)) * density / 0.14, 0, 0.9)
    atac = sparse.csr_matrix((rng.random((n_cells, n_peaks)) < peak_p[types]).astype(np.float32))
    atac[:, 0] = 1.0
    obs = {"cell_type": types.astype(str)}
    names = [f"c{i}" for i in range(n_cells)]
    mods = {
        "rna": ad.AnnData(rna, obs=dict(obs)),
        "atac": ad.AnnData(sparse.csr_matrix(atac), obs=dict(obs)),
    }
    for a in mods.values():
        a.obs_names = names
    with md.set_options(pull_on_update=False):
        return md.MuData(mods)


@pytest.mark.slow
def test_rna_atac_trains_and_separates_types():
    m = _rna_atac()
    scmsi.SCMSI.setup_mudata(m, modalities={"rna": "counts", "atac": "accessibility"})
    model = scmsi.SCMSI(m, n_anchors=40, seed=0)
    model.train(max_epochs=300, enable_progress_bar=False, early_stopping=False)
    h = model.history["reconstruction_loss_train"]["reconstruction_loss_train"]
    assert h.iloc[-1] < h.iloc[0]
    scmsi.tl.embed_and_cluster(m, model, n_clusters=3, umap=False)
    from sklearn.metrics import adjusted_rand_score

    assert adjusted_rand_score(m["rna"].obs["cell_type"], m.obs["scmsi_kmeans"]) > 0.5
    acc = model.get_normalized_expression(m, modality="atac")
    assert acc.shape == (m.n_obs, m["atac"].n_vars)
    assert ((acc.to_numpy() >= 0) & (acc.to_numpy() <= 1)).all()
    assert sparse.issparse(m["atac"].X)  # the user's matrix is not densified


@pytest.mark.slow
def test_trimodal_synthetic_iid():
    m = scvi.data.synthetic_iid(return_mudata=True)
    types = {"rna": "counts", "accessibility": "accessibility", "protein_expression": "protein"}
    scmsi.SCMSI.setup_mudata(m, modalities=types, batch_key="batch")
    model = scmsi.SCMSI(m, n_anchors=40, seed=0)
    model.train(**FAST)
    coefs = model.get_coefficients(return_all=True)
    assert set(coefs) == {"fused", "observed", "weights", *types}  # reliability weights
    np.testing.assert_allclose(coefs["fused"].sum(1), 1.0, rtol=1e-4)
    assert set(model.get_latent_representation()) == set(types)
    assert np.isfinite(model.history["elbo_train"].to_numpy(dtype=float)).all()


@pytest.mark.slow
def test_rna_plus_continuous_features():
    m = _rna_atac()
    rng = np.random.default_rng(1)
    # e.g. image features or topics: centred, with negative values
    feats = rng.normal(size=(m.n_obs, 8)).astype(np.float32)
    feats[:, 0] += m["rna"].obs["cell_type"].astype(int).to_numpy()
    with md.set_options(pull_on_update=False):
        m2 = md.MuData({"rna": m["rna"].copy(), "img": ad.AnnData(feats, obs=m["rna"].obs)})
    scmsi.SCMSI.setup_mudata(m2, modalities={"rna": "counts", "img": "continuous"})
    model = scmsi.SCMSI(m2, n_anchors=40, seed=0)
    model.train(**FAST)
    assert model.get_normalized_expression(m2, modality="img").shape == (m2.n_obs, 8)


@pytest.mark.slow
def test_poisson_accessibility_on_fragment_counts():
    m = _rna_atac()
    frag = m["atac"].X.copy()
    frag.data = frag.data * 2  # integer fragment counts
    m["atac"].layers["fragments"] = frag
    scmsi.SCMSI.setup_mudata(
        m, modalities={"rna": "counts", "atac": "accessibility"}, layers={"atac": "fragments"}
    )
    model = scmsi.SCMSI(m, n_anchors=40, accessibility_likelihood="poisson", seed=0)
    model.train(**FAST)
    share = model.get_normalized_expression(m, modality="atac").to_numpy()
    np.testing.assert_allclose(share.sum(1), 1.0, rtol=1e-4)


@pytest.mark.slow
def test_large_sparse_peak_set_is_never_densified():
    """60k peaks x 600 cells: a dense float32 copy would take 144 MB; numpy never holds one."""
    m = _rna_atac(n_cells=600, n_genes=40, n_peaks=60_000, density=0.02)
    dense_bytes = m.n_obs * m["atac"].n_vars * 4
    tracemalloc.start()
    scmsi.SCMSI.setup_mudata(m, modalities={"rna": "counts", "atac": "accessibility"})
    model = scmsi.SCMSI(m, n_anchors=30, seed=0)
    model.train(max_epochs=1, batch_size=128, enable_progress_bar=False, early_stopping=False)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < dense_bytes / 2, f"peak numpy memory {peak / 2**20:.0f} MiB"
    assert sparse.issparse(m["atac"].X)


@pytest.mark.parametrize("kind", ["accessibility", "continuous"])
def test_anchor_selection_per_type(kind):
    m = _rna_atac()
    x = m["atac"].X if kind == "accessibility" else np.asarray(m["atac"].X.toarray()) - 0.5
    idx = select_anchors(x, 20, kind=kind, seed=0)
    assert len(np.unique(idx)) == 20
    # Anchors cover every type.
    assert m["rna"].obs["cell_type"].iloc[idx].nunique() == 3


def test_binary_peaks_declared_as_counts_named():
    m = _rna_atac()
    with pytest.raises(ValueError, match="only 0/1.*'accessibility'"):
        scmsi.SCMSI.setup_mudata(m, modalities={"rna": "counts", "atac": "counts"})


def test_scaled_matrix_declared_as_accessibility_named():
    m = _rna_atac()
    x = m["atac"].X.toarray()
    m["atac"].X = x - x.mean(0)  # centred, as after sc.pp.scale
    with pytest.raises(ValueError, match="negative values.*'continuous'"):
        scmsi.SCMSI.setup_mudata(m, modalities={"rna": "counts", "atac": "accessibility"})


def test_nan_in_continuous_features_named():
    m = _rna_atac()
    x = m["atac"].X.toarray()
    x[2, 3] = np.nan
    m["atac"].X = x
    with pytest.raises(ValueError, match="modality 'atac' contains 1 NaN"):
        scmsi.SCMSI.setup_mudata(m, modalities={"rna": "counts", "atac": "continuous"})


def test_poisson_accessibility_needs_integer_counts():
    m = _rna_atac()
    m["atac"].X = m["atac"].X * 0.5
    scmsi.SCMSI.setup_mudata(m, modalities={"rna": "counts", "atac": "accessibility"})
    with pytest.raises(ValueError, match="Poisson accessibility.*non-integer"):
        scmsi.SCMSI(m, n_anchors=20, accessibility_likelihood="poisson")


@pytest.mark.slow
def test_adaptive_fusion_on_a_trained_model(trained):
    model, md = trained
    w = model.get_modality_weights()
    assert list(w.columns) == ["rna", "prot"] and w.shape == (md.n_obs, 2)
    np.testing.assert_allclose(w.to_numpy().sum(1), 1.0, rtol=1e-5)
    fused = model.get_coefficients(fusion="adaptive")
    np.testing.assert_allclose(fused.sum(1), 1.0, rtol=1e-4)
    # Eval-mode outputs do not depend on a random draw.
    np.testing.assert_array_equal(fused, model.get_coefficients(fusion="adaptive"))
    with pytest.raises(ValueError, match="fusion"):
        model.get_coefficients(fusion="max")


@pytest.mark.slow
def test_precision_fusion_on_a_trained_model(trained):
    model, md = trained
    w = model.get_modality_weights(method="precision")
    assert list(w.columns) == ["rna", "prot"] and w.shape == (md.n_obs, 2)
    np.testing.assert_allclose(w.to_numpy().sum(1), 1.0, rtol=1e-5)
    assert (w.to_numpy() > 0).all()
    # The posterior draws are seeded: the same weights and fused matrix on every call.
    np.testing.assert_array_equal(w.to_numpy(), model.get_modality_weights(method="precision"))
    fused = model.get_coefficients(fusion="precision")
    np.testing.assert_array_equal(fused, model.get_coefficients(fusion="precision"))
    np.testing.assert_allclose(fused.sum(1), 1.0, rtol=1e-4)
    # The fused rows are the weighted means of the normalised per-modality rows.
    from scmsi._fusion import fuse_coefficients

    coefs = model.get_coefficients(return_all=True)
    expected = fuse_coefficients([coefs["rna"], coefs["prot"]], weights=w.to_numpy())
    np.testing.assert_allclose(fused, expected, rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match="method"):
        model.get_modality_weights(method="max")


@pytest.mark.slow
def test_precision_weights_follow_the_data_of_each_cell():
    """A cell whose RNA is thinned to a few counts is less certain in RNA: its RNA weight drops."""
    from tests._synthetic import synthetic_cite

    data = synthetic_cite(n_cells=240, n_genes=80, n_proteins=8, n_types=3, seed=1)
    scmsi.SCMSI.setup_mudata(data, layers={"rna": "counts", "prot": "counts"})
    # The precision weights were designed on the thresholded (relu) coefficients of
    # "paper_local"; the default's softmax rows are calibrated per cell, which flattens their
    # variance.
    model = scmsi.SCMSI(data, n_anchors=40, seed=0, objective="paper_local")
    model.train(**FAST)
    w_full = model.get_modality_weights(method="precision")["rna"].to_numpy()
    thin = data.copy()
    rng = np.random.default_rng(0)
    x = np.asarray(
        thin["rna"].layers["counts"].todense()
        if sparse.issparse(thin["rna"].layers["counts"])
        else thin["rna"].layers["counts"]
    )
    thin["rna"].layers["counts"] = rng.binomial(x.astype(np.int64), 0.05).astype(np.float32)
    w_thin = model.get_modality_weights(thin, method="precision")["rna"].to_numpy()
    assert np.median(w_thin) < np.median(w_full)
    assert (w_thin < w_full).mean() > 0.8  # 0.95 here: most cells, not a shift on average
