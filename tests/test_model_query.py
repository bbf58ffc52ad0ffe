"""New cells: feature layout, validation, and scArches-style query models (load_query_data)."""

import mudata as mu
import numpy as np
import pytest
import torch

import scmsi
from tests._synthetic import synthetic_cite

LAYERS = {"rna": "counts", "prot": "counts"}


def _cells(n=50):
    return synthetic_cite(n_cells=240, n_genes=80, n_proteins=8, n_types=3, n_batches=2, seed=0)[
        :n
    ].copy()


def _reorder(md, rna_order, prot_order):
    return mu.MuData(
        {"rna": md["rna"][:, rna_order].copy(), "prot": md["prot"][:, prot_order].copy()}
    )


@pytest.mark.slow
def test_query_features_in_another_order_are_reordered(trained):
    model, _ = trained
    query = _cells()
    query.obs["batch"] = _cells().obs["batch"]
    expected = model.get_coefficients(query)
    shuffled = _reorder(query, np.arange(80)[::-1], np.roll(np.arange(8), 3))
    shuffled.obs["batch"] = query.obs["batch"].to_numpy()
    genes_before = shuffled["rna"].var_names.copy()
    np.testing.assert_allclose(model.get_coefficients(shuffled), expected, atol=1e-6)
    expr = model.get_normalized_expression(shuffled, modality="prot")
    assert list(expr.columns) == [f"protein{j}" for j in range(8)]  # the reference order
    assert shuffled["rna"].var_names.equals(genes_before)  # the user's query is untouched
    assert not any(c.startswith("_scvi") for c in shuffled.obs.columns)


@pytest.mark.slow
def test_query_missing_features_are_named(trained):
    model, _ = trained
    query = _reorder(_cells(), np.arange(2, 80), np.arange(8))
    query.obs["batch"] = _cells().obs["batch"].to_numpy()
    with pytest.raises(ValueError, match=r"lacks 2 of the 80 features.*'gene0', 'gene1'"):
        model.get_coefficients(query)


@pytest.mark.slow
def test_query_extra_features_are_dropped_with_a_warning(trained):
    model, _ = trained
    query = _cells()
    expected = model.get_coefficients(query)
    prot = query["prot"].copy()
    extra = prot[:, :1].copy()
    extra.var_names = ["CD999"]
    import anndata as ad

    wide = ad.concat([prot, extra], axis=1, merge="first")
    wide.layers["counts"] = np.asarray(wide.X)
    q = mu.MuData({"rna": query["rna"].copy(), "prot": wide})
    q.obs["batch"] = query.obs["batch"].to_numpy()
    with pytest.warns(UserWarning, match="ignoring 1 features.*CD999"):
        got = model.get_coefficients(q)
    np.testing.assert_allclose(got, expected, atol=1e-6)


@pytest.mark.slow
def test_query_cell_without_any_modality(trained):
    model, _ = trained
    query = _cells()
    query.obs["scmsi_has_rna"] = np.arange(50) != 3
    query.obs["scmsi_has_prot"] = np.arange(50) != 3
    with pytest.raises(
        ValueError, match="1 query cells have none of the model's modalities.*cell3"
    ):
        model.get_coefficients(query)


@pytest.mark.slow
def test_query_as_anndata_for_a_mudata_model(trained):
    model, _ = trained
    with pytest.raises(TypeError, match="pass the query as a MuData"):
        model.get_coefficients(_cells()["rna"].copy())


@pytest.mark.slow
def test_query_with_an_unknown_batch(trained):
    model, _ = trained
    query = _cells()
    query.obs["batch"] = "new_site"
    with pytest.raises(ValueError, match="batches the model was not trained on.*load_query_data"):
        model.get_coefficients(query)
    query.obs = query.obs.drop(columns="batch")
    with pytest.raises(KeyError, match="batch_key 'batch'"):
        model.get_coefficients(query)


@pytest.fixture(scope="module")
def reference_and_query():
    md = synthetic_cite(n_cells=300, n_genes=60, n_proteins=6, n_types=3, n_batches=3, seed=1)
    b = md.obs["batch"].to_numpy()
    ref, query = md[b != "batch2"].copy(), md[b == "batch2"].copy()
    ref.obs["batch"] = ref.obs["batch"].cat.remove_unused_categories()
    query.obs["batch"] = query.obs["batch"].cat.remove_unused_categories()
    scmsi.SCMSI.setup_mudata(ref, layers=LAYERS, batch_key="batch")
    model = scmsi.SCMSI(ref, n_anchors=30, seed=0)
    model.train(max_epochs=15, enable_progress_bar=False, early_stopping=False)
    return model, ref, query


@pytest.mark.slow
def test_load_query_data_trains_only_the_new_batch(reference_and_query, tmp_path):
    model, ref, query = reference_and_query
    ref_coef = model.get_coefficients(ref)
    # from a model or from its folder
    model.save(tmp_path / "ref", overwrite=True)
    for source in (model, str(tmp_path / "ref")):
        qmodel = scmsi.SCMSI.load_query_data(query, source)
        assert qmodel.summary_stats.n_batch == 3 and qmodel.anchor_indices_ is None
        np.testing.assert_array_equal(qmodel.anchor_names_, model.anchor_names_)
    before = {k: v.clone() for k, v in qmodel.module.state_dict().items()}
    qmodel.train(max_epochs=5, enable_progress_bar=False)
    after = qmodel.module.state_dict()
    for k, v in before.items():
        if k.startswith("anchor_") or "senets" in k or "mean_encoder" in k:
            assert torch.equal(v, after[k]), k
        if "fc_layers.Layer 0.0.weight" in k:
            changed = (v != after[k]).any(0).nonzero().ravel().tolist()
            assert changed == [v.shape[1] - 1], (k, changed)  # the new batch's column only
    assert not torch.equal(
        before["encoders.rna.encoder.fc_layers.Layer 0.0.weight"],
        after["encoders.rna.encoder.fc_layers.Layer 0.0.weight"],
    )
    # the reference cells are expressed exactly as before, the query over the same anchors
    np.testing.assert_array_equal(qmodel.get_coefficients(ref), ref_coef)
    assert qmodel.get_coefficients().shape == (query.n_obs, 30)


@pytest.mark.slow
def test_load_query_data_from_a_one_batch_reference():
    md = synthetic_cite(n_cells=200, n_genes=50, n_proteins=5, n_types=2, n_batches=2, seed=3)
    b = md.obs["batch"].to_numpy()
    ref, query = md[b == "batch0"].copy(), md[b == "batch1"].copy()
    ref.obs["batch"] = ref.obs["batch"].cat.remove_unused_categories()
    scmsi.SCMSI.setup_mudata(ref, layers=LAYERS, batch_key="batch")
    model = scmsi.SCMSI(ref, n_anchors=20, seed=0)
    model.train(max_epochs=5, enable_progress_bar=False, early_stopping=False)
    qmodel = scmsi.SCMSI.load_query_data(query, model)
    # scvi-tools drops the batch column of a one-batch model; the padded one must add nothing
    np.testing.assert_allclose(qmodel.get_coefficients(ref), model.get_coefficients(ref), atol=1e-7)


@pytest.mark.slow
def test_load_query_data_with_an_rna_only_query(reference_and_query):
    model, _, query = reference_and_query
    rna_only = mu.MuData({"rna": query["rna"].copy()})
    rna_only.obs["batch"] = query.obs["batch"].to_numpy()
    qmodel = scmsi.SCMSI.load_query_data(rna_only, model)
    assert not qmodel._observed_cells()["prot"].any()
    qmodel.train(max_epochs=2, enable_progress_bar=False)
    assert qmodel.get_coefficients().shape == (query.n_obs, 30)
    mean, sd = qmodel.impute(modality="prot", n_samples=3)
    assert mean.shape == (query.n_obs, 6) and np.isfinite(sd.to_numpy()).all()
