"""Mosaic data (cells lacking a modality), imputation and query mapping on synthetic data."""

import mudata as mu
import numpy as np
import pandas as pd
import pytest
import torch
from scipy.stats import spearmanr

import scmsi
from tests._synthetic import synthetic_cite

N_REF, N_QUERY = 300, 100
LAYERS = {"rna": "counts", "prot": "counts"}


def _natural_mosaic(md, hidden):
    """MuData's own layout: hidden cells are absent from the protein AnnData."""
    return mu.MuData({"rna": md["rna"].copy(), "prot": md["prot"][~hidden].copy()})


@pytest.fixture(scope="module")
def cells():
    md = synthetic_cite(n_cells=N_REF + N_QUERY, n_genes=100, n_proteins=8, n_types=3, seed=2)
    hidden = np.random.default_rng(0).random(N_REF) < 0.3
    return md, hidden


@pytest.fixture(scope="module")
def mosaic(cells):
    """A model trained on 300 cells, 30% of which lack protein (~15 s)."""
    md, hidden = cells
    ref = scmsi.pp.pad_modalities(_natural_mosaic(md[:N_REF].copy(), hidden))
    ref.obs["cell_type"] = md.obs["cell_type"].to_numpy()[:N_REF]
    scmsi.SCMSI.setup_mudata(ref, layers=LAYERS)
    model = scmsi.SCMSI(ref, n_anchors=40, seed=0)
    model.train(
        max_epochs=300,
        enable_progress_bar=False,
        early_stopping=False,
        plan_kwargs={"lr": 3e-3},  # converges in 300 epochs (600 at the default 1e-3)
    )
    return model, ref


def test_pad_modalities_layout_and_user_data_untouched(cells):
    md, hidden = cells
    nat = _natural_mosaic(md[:N_REF].copy(), hidden)
    before = nat["prot"].layers["counts"].copy()
    padded = scmsi.pp.pad_modalities(nat)
    assert padded["prot"].n_obs == N_REF and nat["prot"].n_obs == (~hidden).sum()
    np.testing.assert_array_equal(padded.obs["scmsi_has_prot"], ~hidden)
    assert padded.obs["scmsi_has_rna"].all()
    x = padded["prot"].layers["counts"]
    assert (x[hidden] == 0).all()
    np.testing.assert_array_equal(x[~hidden], before)
    np.testing.assert_array_equal(nat["prot"].layers["counts"], before)
    assert "scmsi_has_prot" not in nat.obs.columns


def test_unpadded_mosaic_names_the_fix(cells):
    md, hidden = cells
    nat = _natural_mosaic(md[:N_REF].copy(), hidden)
    with pytest.raises(ValueError, match=r"holds 2\d\d of the 300 cells.*pad_modalities"):
        scmsi.SCMSI.setup_mudata(nat, layers=LAYERS)


def test_cell_with_no_modality_is_a_clear_error(cells):
    md, _ = cells
    padded = scmsi.pp.pad_modalities(md[:60].copy())
    padded.obs.loc[padded.obs_names[:2], ["scmsi_has_rna", "scmsi_has_prot"]] = False
    with pytest.raises(ValueError, match="2 cells have none of the modalities.*cell0"):
        scmsi.SCMSI.setup_mudata(padded, layers=LAYERS)


def test_explicit_observed_column(cells):
    md, _ = cells
    d = md[:80].copy()
    d.obs["measured"] = np.arange(80) % 4 != 0
    with pytest.raises(KeyError, match="observed_keys\\['prot'\\] = 'nope'"):
        scmsi.SCMSI.setup_mudata(d, layers=LAYERS, observed_keys={"prot": "nope"})
    d.obs["bad"] = 2
    with pytest.raises(ValueError, match="must be boolean"):
        scmsi.SCMSI.setup_mudata(d, layers=LAYERS, observed_keys={"prot": "bad"})
    scmsi.SCMSI.setup_mudata(d, layers=LAYERS, observed_keys={"prot": "measured"})
    model = scmsi.SCMSI(d, n_anchors=10)
    assert model._observed_cells()["prot"].sum() == 60
    assert d.obs["measured"].to_numpy()[model.anchor_indices_].all()


@pytest.mark.slow
def test_mosaic_trains_with_anchors_from_complete_cells(mosaic, cells):
    model, ref = mosaic
    _, hidden = cells
    assert not hidden[model.anchor_indices_].any()
    elbo = model.history["elbo_train"].to_numpy().ravel().astype(float)
    assert np.isfinite(elbo).all() and elbo[-1] < elbo[0]
    c = model.get_coefficients(return_all=True)
    np.testing.assert_array_equal(c["observed"]["prot"], ~hidden)
    np.testing.assert_allclose(c["fused"].sum(1), 1.0, rtol=1e-5)
    # a cell without protein is fused over RNA only
    rna = c["rna"][hidden]
    np.testing.assert_allclose(c["fused"][hidden], rna / rna.sum(1, keepdims=True), rtol=1e-5)
    w = model.get_modality_weights()
    np.testing.assert_array_equal(w.loc[hidden, "prot"], 0.0)
    assert (w.loc[~hidden, "prot"] > 0).all()


@pytest.mark.slow
def test_terms_of_a_missing_modality_do_not_count(mosaic, cells):
    """The loss ignores whatever sits in the protein rows of cells that lack protein."""
    model, ref = mosaic
    _, hidden = cells
    module = model.module
    idx = np.arange(64)
    loader = model._make_data_loader(adata=ref, indices=idx, batch_size=64)
    tensors = dict(next(iter(loader)))
    noisy = dict(tensors)
    x = tensors["scmsi_prot"].clone()
    rows = torch.as_tensor(hidden[idx])
    x[rows] = torch.randint(0, 500, x[rows].shape).float()
    noisy["scmsi_prot"] = x
    module.eval()
    losses = []
    for t in (tensors, noisy):
        torch.manual_seed(0)
        _, _, out = module(t)
        losses.append(float(out.loss))
    assert losses[0] == pytest.approx(losses[1], rel=1e-6)


@pytest.mark.slow
def test_imputation_recovers_hidden_protein(mosaic, cells):
    model, ref = mosaic
    md, hidden = cells
    truth = md["prot"].layers["counts"][:N_REF][hidden]
    by_type = pd.DataFrame(truth).groupby(md.obs["cell_type"].to_numpy()[:N_REF][hidden]).mean()
    informative = (by_type.max() / by_type.min()).to_numpy() > 3  # foreground in some type
    mean, sd = model.impute(modality="prot", n_samples=10)
    assert mean.shape == sd.shape == (N_REF, 8) and (sd.to_numpy() >= 0).all()
    assert list(mean.columns) == list(md["prot"].var_names)
    pred = mean.to_numpy()[hidden]
    rho = [spearmanr(pred[:, j], truth[:, j]).statistic for j in np.flatnonzero(informative)]
    assert np.mean(rho) > 0.5 and np.min(rho) > 0.3, rho
    # get_normalized_expression returns the same imputed values for cells lacking protein
    ne = model.get_normalized_expression(modality="prot").to_numpy()
    np.testing.assert_allclose(ne[hidden], mean.to_numpy()[hidden], rtol=1e-5)
    # the default modality is the one some cells lack; reproducible draws
    _, sd2 = model.impute(n_samples=10)
    np.testing.assert_allclose(sd2.to_numpy(), sd.to_numpy())


@pytest.mark.slow
def test_rna_only_query_is_mapped_and_imputed(mosaic, cells):
    model, ref = mosaic
    md, _ = cells
    query = mu.MuData({"rna": md["rna"][N_REF:].copy()})
    coef = model.get_coefficients(query, return_all=True)
    assert coef["fused"].shape == (N_QUERY, 40) and not coef["observed"]["prot"].any()
    imputed = model.impute(query, modality="prot", return_sd=False)
    truth = md["prot"].layers["counts"][N_REF:]
    j = int(np.argmax(truth.std(0) / truth.mean(0)))
    assert spearmanr(imputed.to_numpy()[:, j], truth[:, j]).statistic > 0.5
    assert "_scvi_batch" not in query.obs.columns  # the user's query was not registered


@pytest.mark.slow
def test_map_query_label_transfer_and_save_load(mosaic, cells, tmp_path):
    model, ref = mosaic
    md, _ = cells
    scmsi.tl.embed_and_cluster(ref, model, n_clusters=3, umap=False)
    pca = ref.uns["scmsi_embedding"]
    # default embedding: both modalities' latents, standardised over the anchors
    assert pca["embedding"] == "latent" and pca["scale"].shape == (20,)
    query = md[N_REF:].copy()
    truth = query.obs.pop("cell_type").to_numpy()
    scmsi.tl.map_query(query, model, ref, label_key="cell_type")
    assert query.obsm["X_scmsi"].shape == (N_QUERY, 20)
    pred = query.obs["cell_type_pred"].to_numpy()
    conf = query.obs["cell_type_confidence"].to_numpy()
    assert (pred == truth).mean() > 0.9
    assert ((conf >= 0) & (conf <= 1)).all() and conf.mean() > 0.8
    # reference cells mapped as a query land where the reference embedding put them
    again = ref.copy()
    scmsi.tl.map_query(again, model, ref)
    np.testing.assert_allclose(again.obsm["X_scmsi"], ref.obsm["X_scmsi"], atol=1e-5)

    model.save(tmp_path / "m", overwrite=True)
    loaded = scmsi.SCMSI.load(tmp_path / "m", adata=ref)
    q2 = md[N_REF:].copy()
    scmsi.tl.map_query(q2, loaded, ref, label_key="cell_type")
    np.testing.assert_allclose(q2.obsm["X_scmsi"], query.obsm["X_scmsi"], atol=1e-6)
    np.testing.assert_array_equal(q2.obs["cell_type_pred"], query.obs["cell_type_pred"])
    # loading onto the query cells: the anchors come from the saved state
    q3 = md[N_REF:].copy()
    on_query = scmsi.SCMSI.load(tmp_path / "m", adata=q3)
    assert on_query.anchor_indices_ is None
    np.testing.assert_allclose(on_query.get_coefficients(), model.get_coefficients(q3), atol=1e-6)


@pytest.mark.slow
def test_map_query_needs_the_reference_pca(mosaic, cells):
    model, _ = mosaic
    md, _ = cells
    with pytest.raises(KeyError, match="embed_and_cluster"):
        scmsi.tl.map_query(md[N_REF:].copy(), model, md[:10].copy())


@pytest.mark.slow
def test_cross_modal_term_is_on_for_mosaic_data_only(mosaic, trained):
    model, _ = mosaic
    assert model.objective.lambda_cross == 1.0
    assert "cross_expression_train" in model.history
    assert trained[0].objective.lambda_cross == 0.0  # complete data: the paper's objective
    with_bg = model.impute(modality="prot", include_protein_background=True, return_sd=False)
    denoised = model.impute(modality="prot", return_sd=False)
    assert (with_bg.to_numpy() >= denoised.to_numpy() - 1e-4).all()
