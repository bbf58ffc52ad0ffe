"""scmsi.spatial.domains: modality screening, clustering, label-free count, end to end."""

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import adjusted_rand_score

import scmsi
from scmsi import spatial as sp
from tests._synthetic import synthetic_visium

# 256 spots: batches of 64 give 4 steps an epoch
FAST = {"max_epochs": 80, "batch_size": 64, "enable_progress_bar": False, "early_stopping": False}


def test_degenerate_modalities_are_left_out_of_the_fusion():
    rng = np.random.default_rng(0)
    good = rng.random((50, 40)) * (rng.random((50, 40)) < 0.3)
    hub = np.zeros((50, 40))
    hub[:, 3] = 1e-4
    used, dropped = sp.informative_modalities({"fused": good, "rna": hub, "niche": good})
    assert used == ["niche"] and dropped == ["rna"]
    assert sp.informative_modalities({"rna": hub}) == (["rna"], [])


@pytest.mark.slow
def test_end_to_end_spatial_domains(tmp_path):
    syn = synthetic_visium(n_rows=16, n_cols=16, n_genes=60, n_domains=3, noise=0.8, seed=0)
    mdata, kinds = sp.to_mudata(syn, n_top_genes=None)
    scmsi.SCMSI.setup_mudata(mdata, modalities=kinds)
    model = scmsi.SCMSI(mdata, n_anchors=40, seed=0)
    model.train(**FAST)
    truth = syn.obs["domain"].to_numpy()
    lab = scmsi.spatial.spatial_domains(mdata, model, n_domains=3, refine=True)
    assert mdata.obs["scmsi_domain"].nunique() <= 3
    assert mdata.obsm["scmsi_domain_coef_smoothed"].shape == (256, 40)
    assert adjusted_rand_score(truth, lab) > 0.5
    assert mdata.uns["scmsi_domain"]["params"]["modalities"] == ["rna", "image", "niche"]
    off = scmsi.spatial.spatial_domains(
        mdata, model, n_domains=3, spatial_weight=0.0, key_added="off"
    )
    assert adjusted_rand_score(truth, lab) >= adjusted_rand_score(truth, off)  # space helps
    auto = scmsi.spatial.spatial_domains(mdata, model, spatial_weight=0.0, key_added="auto")
    assert len(auto.categories) >= 2 and "auto" in mdata.obs
    prec = scmsi.spatial.spatial_domains(
        mdata, model, n_domains=3, fusion="precision", key_added="p"
    )
    w = mdata.obsm["p_modality_weights"]
    assert w.shape == (256, 3) and np.allclose(w.sum(1), 1.0, atol=1e-5)
    assert adjusted_rand_score(truth, prec) > 0.5
    assert mdata.uns["scmsi_domain"]["params"]["embedding"] == "spectral"  # the default
    pca = scmsi.spatial.spatial_domains(mdata, model, n_domains=3, embedding="pca", key_added="pca")
    assert mdata.uns["pca"]["params"]["embedding"] == "pca"
    assert mdata.obsm["X_pca"].shape == (256, model.module.n_latent)
    assert adjusted_rand_score(truth, pca) > 0.5
    with pytest.raises(ValueError, match="use_rep"):
        scmsi.spatial.spatial_domains(mdata, use_rep="X_pca", embedding="spectral")
    fig = scmsi.pl.spatial_domains(mdata, color=["scmsi_domain", "domain"])
    fig.savefig(tmp_path / "domains.png")
    rna = syn.copy()
    rna.obs["scmsi_domain"] = mdata.obs["scmsi_domain"].to_numpy()
    fig = scmsi.pl.domain_markers(rna, n_genes=2)
    fig.savefig(tmp_path / "markers.png")
    assert (tmp_path / "markers.png").stat().st_size > 0


def _blobs(n_per=80, k=4, seed=0):
    """k Gaussian blobs sharing one elongated covariance (mclust EEE's model)."""
    rng = np.random.default_rng(seed)
    cov = np.array([[3.0, 1.2, 0.0], [1.2, 1.0, 0.0], [0.0, 0.0, 0.5]])
    centres = np.array([[0, 0, 0], [8, 0, 0], [0, 8, 0], [8, 8, 4]], dtype=float)[:k]
    x = np.concatenate([rng.multivariate_normal(c, cov, n_per) for c in centres])
    return x.astype(np.float32), np.repeat(np.arange(k), n_per)


def test_tied_gmm_is_seeded_and_recovers_shared_covariance_blobs():
    x, truth = _blobs()
    a, gm = sp.tied_gmm(x, 4, seed=3)
    b, _ = sp.tied_gmm(x, 4, seed=3)
    assert np.array_equal(a, b) and gm.covariance_type == "tied"
    assert adjusted_rand_score(truth, a) > 0.95


def test_choose_n_domains_without_labels():
    x, _ = _blobs()
    n, info = sp.choose_n_domains(x, n_range=(2, 8), seed=0)
    assert n == 4 and info["n_range"] == [2, 8] and len(info["scores"]) == 7
    assert set(info["scores"]) == {str(k) for k in range(2, 9)}  # writable to .h5ad
    assert sp.choose_n_domains(x, n_range=(2, 8), method="kmeans")[0] == 4


def test_key_added_keeps_runs_apart_and_options_fail_early():
    syn = synthetic_visium(n_rows=10, n_cols=10, n_domains=2)
    syn.obsm["rep"], _ = _blobs(n_per=50, k=2)
    first = sp.spatial_domains(syn, use_rep="rep", n_domains=2, key_added="one")
    sp.spatial_domains(syn, use_rep="rep", n_domains=3, method="kmeans", key_added="two")
    assert syn.obs["one"].equals(pd.Series(first, index=syn.obs_names))
    assert syn.obs["two"].nunique() <= 3 and syn.uns["two"]["params"]["method"] == "kmeans"
    assert syn.uns["one"]["params"]["method"] == "gmm" and syn.uns["one"]["params"]["refine"]
    assert {"X_one", "X_two"} <= set(syn.obsm) and "scmsi_coef" not in syn.obsm
    auto = sp.spatial_domains(syn, use_rep="rep", key_added="auto")
    assert syn.uns["auto"]["params"]["label_free"]["criterion"] == "silhouette"
    assert 3 <= syn.uns["auto"]["params"]["n_domains"] <= 15 and len(auto) == syn.n_obs
    for bad in ({"method": "mclust"}, {"n_domains": 0}, {"spatial_weight": 2.0}):
        with pytest.raises(ValueError):
            sp.spatial_domains(syn, use_rep="rep", **{"n_domains": 2, **bad})
