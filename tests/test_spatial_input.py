"""scmsi.spatial.input: the model input (expression, image, niche, neighbourhood layers)."""

import numpy as np
import pytest
import scanpy as sc
from scipy import sparse

import scmsi
from scmsi import spatial as sp
from tests._synthetic import synthetic_visium


def test_to_mudata_modalities():
    syn = synthetic_visium(n_rows=8, n_cols=8)
    mdata, kinds = sp.to_mudata(syn, n_top_genes=None)
    assert kinds == {"rna": "counts", "image": "continuous", "niche": "continuous"}
    assert mdata["image"].n_vars == 56 and "spatial_connectivities" in mdata.obsp
    del syn.uns["spatial"]
    mdata, kinds = sp.to_mudata(syn, niche=False, n_top_genes=None)
    assert kinds == {"rna": "counts"}  # expression + coordinates only
    with pytest.raises(ValueError, match="image"):
        sp.to_mudata(syn, image=True)


def test_to_mudata_keeps_spots_with_no_counts_in_the_hvgs():
    syn = synthetic_visium(n_rows=8, n_cols=8)
    syn.X = sparse.csr_matrix(syn.X)
    n_top = 10
    hvg = sc.pp.highly_variable_genes(syn, n_top_genes=n_top, flavor="seurat_v3", inplace=False)
    others = np.flatnonzero(~hvg["highly_variable"].to_numpy())
    x = syn.X.toarray()
    x[0] = 0
    x[0, others[0]] = 1  # a near-empty spot whose only count is outside the HVGs
    syn.X = sparse.csr_matrix(x)
    mdata, _ = sp.to_mudata(syn, n_top_genes=n_top, image=False, niche=False)
    assert mdata.n_obs == syn.n_obs
    assert mdata["rna"].X[0].sum() == 1
    scmsi.SCMSI.setup_mudata(mdata, modalities={"rna": "counts"})  # passes validation


def test_graph_encoder_layers_hold_the_neighbour_mean():
    syn = synthetic_visium(n_rows=8, n_cols=8)
    mdata, _ = sp.to_mudata(syn, n_top_genes=None, graph_encoder=True)
    assert mdata.uns["scmsi_context_layers"] == {
        "rna": "scmsi_neighbours",
        "image": "scmsi_neighbours",
    }
    g = mdata.obsp["spatial_connectivities"]
    x = mdata["rna"].X.toarray()
    nb = mdata["rna"].layers["scmsi_neighbours"]
    assert sparse.issparse(nb) and nb.shape == x.shape
    for i in (0, 27, 63):  # a corner, an interior spot, the last spot
        idx = g[i].indices
        assert i not in idx and len(idx) > 0
        assert np.allclose(nb[i].toarray().ravel(), x[idx].mean(0), rtol=1e-5)
    img = mdata["image"]
    assert np.allclose(img.layers["scmsi_neighbours"][27], img.X[g[27].indices].mean(0), atol=1e-5)
    off, _ = sp.to_mudata(syn, n_top_genes=None)  # the default: off
    assert off.uns["scmsi_context_layers"] == {} and "scmsi_neighbours" not in off["rna"].layers


def test_isolated_spot_keeps_its_own_values_as_neighbourhood():
    from scmsi.spatial.input import neighbour_mean

    g = sparse.csr_matrix(np.array([[0, 1, 0], [1, 0, 0], [0, 0, 0]], dtype=np.float32))
    x = np.arange(6, dtype=np.float32).reshape(3, 2)
    out = neighbour_mean(x, g)
    assert np.array_equal(out, [[2, 3], [0, 1], [4, 5]])
    assert np.array_equal(neighbour_mean(sparse.csr_matrix(x), g).toarray(), out)


def test_setup_reads_the_neighbourhood_and_the_encoder_sees_it():
    syn = synthetic_visium(n_rows=8, n_cols=8, n_genes=30)
    mdata, kinds = sp.to_mudata(syn, n_top_genes=None, niche=False, graph_encoder=True)
    scmsi.SCMSI.setup_mudata(mdata, modalities=kinds)
    model = scmsi.SCMSI(mdata, n_anchors=16, seed=0)
    mod = model.module
    n_rna, n_img = mdata["rna"].n_vars, mdata["image"].n_vars
    assert mod.anchor_ctx_rna.shape == (16, n_rna) and mod.anchor_ctx_image.shape == (16, n_img)
    assert mod.anchor_in_rna.shape == (16, 2 * n_rna)  # [spot, neighbourhood]
    x = model.get_latent_representation(mdata)
    assert x["rna"].shape == (64, model.module.n_latent)
    # the neighbourhood changes the latent: the encoder reads it
    other = mdata.copy()
    other["rna"].layers["scmsi_neighbours"] = other["rna"].layers["scmsi_neighbours"] * 3
    assert not np.allclose(model.get_latent_representation(other)["rna"], x["rna"])
    plain, _ = sp.to_mudata(syn, n_top_genes=None, niche=False, graph_encoder=True)
    scmsi.SCMSI.setup_mudata(plain, modalities=kinds, context_layers={})  # switched off
    assert "anchor_ctx_rna" not in dict(scmsi.SCMSI(plain, n_anchors=16).module.named_buffers())
    with pytest.raises(KeyError, match="Context layer"):
        scmsi.SCMSI.setup_mudata(plain, modalities=kinds, context_layers={"rna": "nope"})


# ------------------------------------------------------------------ named errors on bad spots
def _unchanged(before, after) -> bool:
    return (
        np.array_equal(before.obsm["spatial"], after.obsm["spatial"], equal_nan=True)
        and before.obs_names.equals(after.obs_names)
        and before.uns["spatial"]["synthetic"]["scalefactors"]
        == after.uns["spatial"]["synthetic"]["scalefactors"]
    )


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nan_or_infinite_coordinates_are_named(bad):
    syn = synthetic_visium(n_rows=6, n_cols=6)
    syn.obsm["spatial"][3, 1] = bad
    before = syn.copy()
    with pytest.raises(ValueError, match=r"NaN or infinite coordinates for 1 spots.*spot3"):
        sp.to_mudata(syn)
    assert _unchanged(before, syn)


def test_duplicated_barcodes_are_named():
    syn = synthetic_visium(n_rows=6, n_cols=6)
    syn.obs_names = ["spot0"] * 2 + list(syn.obs_names[2:])
    with pytest.raises(ValueError, match=r"barcodes occur more than once.*obs_names_make_unique"):
        sp.to_mudata(syn)


def test_duplicated_coordinates_are_named():
    syn = synthetic_visium(n_rows=6, n_cols=6)
    syn.obsm["spatial"][5] = syn.obsm["spatial"][4]
    with pytest.raises(ValueError, match=r"1 spots share their position.*spot4"):
        sp.to_mudata(syn)


def test_image_whose_scale_factor_does_not_match_is_named():
    syn = synthetic_visium(n_rows=6, n_cols=6)  # the image is at 0.2 of full resolution
    syn.uns["spatial"]["synthetic"]["scalefactors"]["tissue_hires_scalef"] = 1.0
    before = syn.copy()
    with pytest.raises(ValueError, match=r"'hires' image .* does not match the coordinates"):
        sp.to_mudata(syn)
    assert _unchanged(before, syn)
    sp.to_mudata(syn, image=False, n_top_genes=None)  # the fix the message names
    del syn.uns["spatial"]["synthetic"]["scalefactors"]["tissue_hires_scalef"]
    with pytest.raises(ValueError, match="no scalefactors\\['tissue_hires_scalef'\\]"):
        sp.to_mudata(syn)


def test_section_with_fewer_spots_than_neighbours_is_named():
    syn = synthetic_visium(n_rows=3, n_cols=2, n_domains=3)  # 6 spots
    with pytest.raises(ValueError, match="6 spots, but each spot needs 6 spatial neighbours"):
        sp.to_mudata(syn)
    sp.to_mudata(syn, n_neighs=3, image=False, n_top_genes=None)
