"""Batch and extra categorical covariates: every encoder and decoder, transform_batch, queries."""

import anndata as ad
import mudata as md
import numpy as np
import pandas as pd
import pytest
import torch
from scipy import sparse
from scvi import REGISTRY_KEYS
from scvi.nn import FCLayers

import scmsi
from tests._synthetic import synthetic_cite

from .conftest import FAST

KINDS = {"rna": "counts", "prot": "protein", "atac": "accessibility", "img": "continuous"}


def _four_kinds(n_cells=160, seed=0) -> md.MuData:
    """Synthetic CITE-seq + peaks + continuous features; 2 batches, a 3-level ``donor``."""
    cite = synthetic_cite(
        n_cells=n_cells,
        n_genes=40,
        n_proteins=6,
        n_types=3,
        n_batches=2,
        batch_effect=1.0,
        seed=seed,
    )
    rng = np.random.default_rng(seed)
    types = cite.obs["cell_type"].cat.codes.to_numpy()
    peaks = sparse.csr_matrix(rng.random((n_cells, 50)) < 0.1 + 0.3 * (types[:, None] == 0))
    peaks[:, 0] = 1.0
    img = (rng.normal(size=(n_cells, 5)) + types[:, None]).astype(np.float32)
    obs = cite.obs.copy()
    obs["donor"] = pd.Categorical([f"donor{d}" for d in rng.integers(3, size=n_cells)])
    mods = {
        "rna": cite["rna"].copy(),
        "prot": cite["prot"].copy(),
        "atac": ad.AnnData(peaks.astype(np.float32)),
        "img": ad.AnnData(img),
    }
    for a in mods.values():
        a.obs_names = obs.index
    with md.set_options(pull_on_update=False):
        m = md.MuData(mods)
    m.obs = obs
    return m


@pytest.fixture(scope="module")
def model_and_data():
    m = _four_kinds()
    scmsi.SCMSI.setup_mudata(
        m,
        modalities=KINDS,
        layers={"rna": "counts", "prot": "counts"},
        batch_key="batch",
        categorical_covariate_keys=["donor"],
    )
    model = scmsi.SCMSI(m, n_anchors=30, seed=0)
    model.train(**FAST)
    return model, m


def _first_layers(module):
    return {
        name: mod
        for name, mod in module.named_modules()
        if isinstance(mod, FCLayers) and sum(mod.n_cat_list) > 0
    }


@pytest.mark.slow
def test_batch_and_covariate_enter_every_encoder_and_decoder(model_and_data):
    model, _ = model_and_data
    assert model.module.n_cats_per_cov == [3]
    layers = _first_layers(model.module)
    for m in KINDS:
        # encoder (the sparse one's inner Encoder for peaks) and decoder head of each modality
        enc = [n for n in layers if n.startswith(f"encoders.{m}.")]
        dec = [n for n in layers if n.startswith(f"heads.{m}.")]
        assert len(enc) == 1 and len(dec) == 1, (m, list(layers))
        for name in enc + dec:
            assert list(layers[name].n_cat_list) == [2, 3], name
    assert model.module.anchor_cat_covs.shape == (30, 1)
    codes = model.adata_manager.get_from_registry(REGISTRY_KEYS.CAT_COVS_KEY).to_numpy()
    np.testing.assert_array_equal(
        model.module.anchor_cat_covs.numpy().ravel(), codes[model.anchor_indices_].ravel()
    )


@pytest.mark.slow
def test_covariate_changes_the_outputs(model_and_data):
    model, m = model_and_data
    other = _four_kinds()  # the same cells, not registered yet; each donor renamed
    shift = {f"donor{i}": f"donor{(i + 1) % 3}" for i in range(3)}
    other.obs["donor"] = pd.Categorical(other.obs["donor"].astype(str).map(shift))
    z, z_other = model.get_latent_representation(m), model.get_latent_representation(other)
    for k in KINDS:
        assert not np.allclose(z[k], z_other[k]), k


@pytest.mark.slow
def test_transform_batch_every_modality(model_and_data):
    model, m = model_and_data
    own = model.get_normalized_expression()
    b0 = model.get_normalized_expression(transform_batch="batch0")
    b1 = model.get_normalized_expression(transform_batch=1)
    in_b0 = (m.obs["batch"] == "batch0").to_numpy()
    for k in KINDS:
        n_features = m[k].n_vars
        assert b0[k].shape == b1[k].shape == (m.n_obs, n_features), k
        assert np.isfinite(b0[k].to_numpy()).all()
        # cells are encoded with their own batch: decoding them as their batch changes nothing
        np.testing.assert_allclose(b0[k].to_numpy()[in_b0], own[k].to_numpy()[in_b0], rtol=1e-5)
        np.testing.assert_allclose(b1[k].to_numpy()[~in_b0], own[k].to_numpy()[~in_b0], rtol=1e-5)
        # and as the other batch, it does
        assert np.abs(b0[k].to_numpy() - b1[k].to_numpy()).max() > 1e-4, k
    with pytest.raises(ValueError, match="transform_batch 'nope'"):
        model.get_normalized_expression(transform_batch="nope")


@pytest.mark.slow
def test_save_load_keeps_covariates(model_and_data, tmp_path):
    model, m = model_and_data
    model.save(tmp_path / "m", overwrite=True)
    loaded = scmsi.SCMSI.load(tmp_path / "m", adata=m)
    assert loaded.module.n_cats_per_cov == [3]
    np.testing.assert_allclose(loaded.get_coefficients(), model.get_coefficients(), atol=1e-6)
    a = model.get_normalized_expression(transform_batch="batch1")
    b = loaded.get_normalized_expression(transform_batch="batch1")
    for k in KINDS:
        np.testing.assert_allclose(a[k].to_numpy(), b[k].to_numpy(), rtol=1e-5, atol=1e-7)


def test_missing_covariate_column_is_named():
    m = synthetic_cite(n_cells=60, n_genes=20, n_proteins=4, n_batches=2)
    with pytest.raises(KeyError, match="categorical_covariate_keys 'donor'"):
        scmsi.SCMSI.setup_mudata(m, batch_key="batch", categorical_covariate_keys=["donor"])


@pytest.mark.slow
def test_anndata_setup_with_covariates():
    m = synthetic_cite(n_cells=120, n_genes=30, n_proteins=4, n_batches=2, seed=2)
    adata = m["rna"].copy()
    adata.obs["donor"] = np.where(np.arange(120) % 2 == 0, "a", "b")
    adata.obsm["protein"] = m["prot"].X.copy()
    scmsi.SCMSI.setup_anndata(
        adata,
        layer="counts",
        protein_expression_obsm_key="protein",
        batch_key="batch",
        categorical_covariate_keys=["donor"],
    )
    model = scmsi.SCMSI(adata, n_anchors=20, seed=0)
    model.train(max_epochs=3, enable_progress_bar=False, early_stopping=False)
    assert model.module.n_cats_per_cov == [2]
    expr = model.get_normalized_expression(transform_batch="batch0")
    assert expr["rna"].shape == (120, 30) and expr["prot"].shape == (120, 4)


@pytest.mark.slow
@pytest.mark.parametrize("new_donor", [False, True])
def test_load_query_data_with_covariates(new_donor):
    """A new batch (and maybe a new donor): only their columns train, the reference is kept."""
    m = synthetic_cite(n_cells=240, n_genes=40, n_proteins=5, n_types=3, n_batches=3, seed=1)
    m.obs["donor"] = np.where(np.arange(240) % 2 == 0, "d0", "d1")
    b = m.obs["batch"].to_numpy()
    ref, query = m[b != "batch2"].copy(), m[b == "batch2"].copy()
    ref.obs["batch"] = ref.obs["batch"].cat.remove_unused_categories()
    query.obs["batch"] = query.obs["batch"].cat.remove_unused_categories()
    if new_donor:
        query.obs["donor"] = "d2"
    layers = {"rna": "counts", "prot": "counts"}
    scmsi.SCMSI.setup_mudata(
        ref, layers=layers, batch_key="batch", categorical_covariate_keys=["donor"]
    )
    model = scmsi.SCMSI(ref, n_anchors=25, seed=0)
    model.train(max_epochs=5, enable_progress_bar=False, early_stopping=False)
    ref_coef = model.get_coefficients(ref)
    ref_expr = model.get_normalized_expression(ref, modality="rna")

    qmodel = scmsi.SCMSI.load_query_data(query, model)
    assert qmodel.summary_stats.n_batch == 3
    assert qmodel.module.n_cats_per_cov == [3 if new_donor else 2]
    # moving the columns to their blocks keeps the reference cells' outputs exactly
    np.testing.assert_allclose(qmodel.get_coefficients(ref), ref_coef, atol=1e-6)
    before = {k: v.clone() for k, v in qmodel.module.state_dict().items()}
    qmodel.train(max_epochs=3, enable_progress_bar=False)
    after = qmodel.module.state_dict()
    trainable = [40 + 2] + ([40 + 3 + 2] if new_donor else [])  # new batch, new donor columns
    for k, v in before.items():
        if k.startswith("anchor_") or "senets" in k:
            assert torch.equal(v, after[k]), k
        if k == "encoders.rna.encoder.fc_layers.Layer 0.0.weight":
            changed = (v != after[k]).any(0).nonzero().ravel().tolist()
            assert changed == trainable, changed
    np.testing.assert_allclose(qmodel.get_coefficients(ref), ref_coef, atol=1e-6)
    np.testing.assert_allclose(
        qmodel.get_normalized_expression(ref, modality="rna").to_numpy(),
        ref_expr.to_numpy(),
        rtol=1e-5,
    )
