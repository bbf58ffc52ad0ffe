"""Spatial: Visium/ST reading, tiles and image features, spatial graph, smoothing, domains."""

import json

import h5py
import numpy as np
import pandas as pd
import pytest
import scanpy as sc
from scipy import sparse
from sklearn.metrics import adjusted_rand_score

import scmsi
from scmsi import spatial as sp
from tests._synthetic import synthetic_visium

# 256 spots: batches of 64 give 4 steps an epoch
FAST = {"max_epochs": 80, "batch_size": 64, "enable_progress_bar": False, "early_stopping": False}


# ------------------------------------------------------------------------ tiles and features
def _squares_image(scale, spot_diameter, centres_full, colours, size=(400, 500)):
    """White image with one coloured square (the spot's footprint) per spot."""
    img = np.full((*size, 3), 255, np.uint8)
    half = int(round(spot_diameter * scale / 2))
    for (x, y), c in zip(centres_full, colours, strict=True):
        cx, cy = int(round(x * scale)), int(round(y * scale))
        img[cy - half : cy + half + 1, cx - half : cx + half + 1] = c
    return img


@pytest.mark.parametrize("scale", [1.0, 0.25, 0.08])
def test_crop_tiles_returns_the_colour_at_each_spot(scale):
    rng = np.random.default_rng(0)
    spot_diameter = 120.0
    centres = np.array([[400.0, 300.0], [1200.0, 900.0], [3000.0, 2400.0], [5600.0, 4400.0]])
    colours = rng.integers(0, 200, (4, 3)).astype(np.uint8)
    shape = (int(4800 * scale) + 20, int(6000 * scale) + 20)
    img = _squares_image(scale, spot_diameter, centres, colours, shape)
    size = max(int(round(spot_diameter * scale * 0.6)), 1)  # inside the square
    tiles = sp.crop_tiles(img, centres * scale, size)
    assert tiles.shape == (4, size, size, 3)
    for t, c in zip(tiles, colours, strict=True):
        assert (t.reshape(-1, 3) == c).all()


def test_crop_tiles_at_the_border_pads_with_edge_pixels():
    img = np.zeros((10, 10, 3), np.uint8)
    img[:, 0] = 50
    tiles = sp.crop_tiles(img, np.array([[0.0, 5.0], [-30.0, -30.0]]), 5)
    assert tiles.shape == (2, 5, 5, 3)
    assert (tiles[0][:, :3] == 50).all()  # left of the image: copies of column 0
    tiles = sp.crop_tiles(img, np.array([[0.0, 5.0]]), 5, fill=255)
    assert (tiles[0][:, :2] == 255).all()


def test_image_features_use_scale_factors_and_separate_colours():
    ad_ = synthetic_visium(n_rows=12, n_cols=12, n_domains=2, seed=1)
    feats = sp.image_features(ad_)
    names = ad_.uns["X_image_features"]
    assert feats.shape == (ad_.n_obs, 2 * 28) and len(names) == feats.shape[1]
    assert np.isfinite(feats).all()
    red = feats[:, names.index("ctx1_R_mean")]
    dom = ad_.obs["domain"].to_numpy()
    # the two bands have different colours: the spot tiles (context 1) tell them apart
    assert abs(red[dom == "D0"].mean() - red[dom == "D1"].mean()) > 0.2
    assert red[dom == "D0"].std() < 0.05


def test_image_features_with_custom_extractor_and_explicit_image():
    ad_ = synthetic_visium(n_rows=6, n_cols=6)
    img, scale, diam = sp.get_image(ad_)
    feats = sp.image_features(
        ad_,
        image=img,
        scale=scale,
        spot_diameter=diam,
        contexts=(1.0,),
        extractor=lambda t: t.mean(axis=(1, 2)),
        key_added="X_rgb",
    )
    assert feats.shape == (36, 3) and "X_rgb" in ad_.obsm
    with pytest.raises(ValueError, match="scale"):
        sp.image_features(ad_, image=img)


# ------------------------------------------------------------------------ graph and smoothing
def test_hexagonal_grid_interior_spots_have_six_neighbours():
    ad_ = synthetic_visium(n_rows=10, n_cols=10)
    g = sp.spatial_neighbors(ad_, n_neighs=6)
    assert g.shape == (100, 100) and (g != g.T).nnz == 0 and g.diagonal().sum() == 0
    deg = np.asarray(g.sum(1)).ravel()
    r, c = ad_.obs["array_row"].to_numpy(), ad_.obs["array_col"].to_numpy()
    interior = (r > 0) & (r < 9) & (c > 0) & (c < 9)
    assert (deg[interior] == 6).all()
    # radius cut: only the ring at one spacing (100) survives
    g2 = sp.spatial_graph(ad_.obsm["spatial"], n_neighs=12, radius=101.0)
    assert (np.asarray(sp.spatial_graph(ad_.obsm["spatial"], 6, radius=None).sum(1)) >= 6).all()
    assert (np.asarray(g2.sum(1)).ravel()[interior] == 6).all()
    assert "spatial_connectivities" in ad_.obsp


def test_graph_is_sparse_with_nk_entries():
    xy = np.random.default_rng(0).random((3000, 2))
    g = sp.spatial_graph(xy, n_neighs=8)
    assert sparse.issparse(g) and g.nnz <= 2 * 8 * 3000


def test_degenerate_modalities_are_left_out_of_the_fusion():
    rng = np.random.default_rng(0)
    good = rng.random((50, 40)) * (rng.random((50, 40)) < 0.3)
    hub = np.zeros((50, 40))
    hub[:, 3] = 1e-4
    used, dropped = sp.informative_modalities({"fused": good, "rna": hub, "niche": good})
    assert used == ["niche"] and dropped == ["rna"]
    assert sp.informative_modalities({"rna": hub}) == (["rna"], [])


def test_smooth_and_refine():
    g = sp.spatial_graph(np.c_[np.arange(5.0), np.zeros(5)], n_neighs=2)
    x = np.eye(5, dtype=np.float32)[:, :1] * 10  # a spike at spot 0
    assert np.array_equal(sp.smooth(x, g, alpha=0.0), x)
    s = sp.smooth(x, g, alpha=0.5, n_rounds=1)
    assert s[0, 0] < 10 and s[1, 0] > 0 and np.isclose(s.sum(), x.sum(), rtol=0.3)
    with pytest.raises(ValueError):
        sp.smooth(x, g, alpha=1.5)
    labels = np.array(["a", "a", "b", "a", "a"])
    ring = sp.spatial_graph(np.c_[np.cos(np.arange(5)), np.sin(np.arange(5))], n_neighs=2)
    assert ring.nnz > 0
    line = sp.spatial_graph(np.c_[np.arange(5.0), np.zeros(5)], n_neighs=2)
    assert list(sp.refine_domains(labels, line)) == ["a"] * 5


# ------------------------------------------------------------------------ reading
def _write_visium(folder, adata):
    (folder / "spatial").mkdir(parents=True)
    x = sparse.csc_matrix(adata.X.T.astype(np.int32))  # 10x layout: genes x barcodes
    with h5py.File(folder / "filtered_feature_bc_matrix.h5", "w") as f:
        m = f.create_group("matrix")
        m["barcodes"] = np.array(adata.obs_names, dtype="S")
        m["data"], m["indices"], m["indptr"] = x.data, x.indices, x.indptr
        m["shape"] = np.array(x.shape)
        ft = m.create_group("features")
        ft["id"] = ft["name"] = np.array(adata.var_names, dtype="S")
        ft["feature_type"] = np.array(["Gene Expression"] * adata.n_vars, dtype="S")
        ft["genome"] = np.array(["x"] * adata.n_vars, dtype="S")
    xy = adata.obsm["spatial"]
    pos = pd.DataFrame(
        {
            "in_tissue": 1,
            "array_row": adata.obs["array_row"],
            "array_col": adata.obs["array_col"],
            "pxl_row": xy[:, 1].round().astype(int),
            "pxl_col": xy[:, 0].round().astype(int),
        },
        index=adata.obs_names,
    )
    pos.to_csv(folder / "spatial" / "tissue_positions_list.csv", header=False)
    sf = dict(adata.uns["spatial"]["synthetic"]["scalefactors"])
    sf["tissue_lowres_scalef"] = sf.pop("tissue_hires_scalef")
    (folder / "spatial" / "scalefactors_json.json").write_text(json.dumps(sf))
    from PIL import Image

    Image.fromarray(adata.uns["spatial"]["synthetic"]["images"]["hires"]).save(
        folder / "spatial" / "tissue_lowres_image.png"
    )


def test_read_visium_folder_roundtrip(tmp_path):
    syn = synthetic_visium(n_rows=8, n_cols=8, n_genes=20)
    _write_visium(tmp_path / "sec", syn)
    a = sp.read_visium(tmp_path / "sec")
    assert a.shape == syn.shape and list(a.obs_names) == list(syn.obs_names)
    np.testing.assert_allclose(a.obsm["spatial"], syn.obsm["spatial"].round())
    np.testing.assert_array_equal(a.X.toarray(), syn.X.toarray())
    img, scale, diam = sp.get_image(a)
    assert img.shape == syn.uns["spatial"]["synthetic"]["images"]["hires"].shape
    assert scale == 0.2 and diam == 55.0
    # image only: no counts file
    (tmp_path / "sec" / "filtered_feature_bc_matrix.h5").unlink()
    b = sp.read_visium(tmp_path / "sec")
    assert b.shape == (64, 0)


def test_read_st_adapter(tmp_path):
    counts = pd.DataFrame(
        np.arange(12).reshape(3, 4), index=["1x1", "2x1", "1x2"], columns=list("ABCD")
    )
    spots = pd.DataFrame(
        {
            "x": [1, 2, 1, 9],
            "y": [1, 1, 2, 9],
            "pixel_x": [100.0, 300, 100, 0],
            "pixel_y": [100.0, 100, 300, 0],
        }
    )
    a = sp.read_st(counts, spots, image=np.zeros((50, 50, 3), np.uint8), image_scale=0.1)
    assert a.shape == (3, 4) and a.obsm["spatial"][1].tolist() == [300.0, 100.0]
    assert sp.get_image(a)[1] == 0.1 and sp.get_image(a)[2] == 100.0


# ------------------------------------------------------------------------ end to end
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


@pytest.mark.slow
def test_end_to_end_spatial_domains(tmp_path):
    syn = synthetic_visium(n_rows=16, n_cols=16, n_genes=60, n_domains=3, noise=0.8, seed=0)
    mdata, kinds = sp.to_mudata(syn, n_top_genes=None)
    scmsi.SCMSI.setup_mudata(mdata, modalities=kinds)
    model = scmsi.SCMSI(mdata, n_anchors=40, seed=0)
    model.train(**FAST)
    truth = syn.obs["domain"].to_numpy()
    lab = scmsi.tl.spatial_domains(mdata, model, n_domains=3, refine=True)
    assert mdata.obs["scmsi_domain"].nunique() <= 3
    assert mdata.obsm["scmsi_coef_smoothed"].shape == (256, 40)
    assert adjusted_rand_score(truth, lab) > 0.5
    assert mdata.uns["scmsi_domain"]["params"]["modalities"] == ["rna", "image", "niche"]
    off = scmsi.tl.spatial_domains(mdata, model, n_domains=3, spatial_weight=0.0, key_added="off")
    assert adjusted_rand_score(truth, lab) > adjusted_rand_score(truth, off)  # space helps
    auto = scmsi.tl.spatial_domains(mdata, model, spatial_weight=0.0, key_added="auto")
    assert len(auto.categories) >= 2 and "auto" in mdata.obs
    prec = scmsi.tl.spatial_domains(mdata, model, n_domains=3, fusion="precision", key_added="p")
    w = mdata.obsm["scmsi_modality_weights"]
    assert w.shape == (256, 3) and np.allclose(w.sum(1), 1.0, atol=1e-5)
    assert adjusted_rand_score(truth, prec) > 0.5
    assert mdata.uns["scmsi_domain"]["params"]["embedding"] == "spectral"  # the default
    pca = scmsi.tl.spatial_domains(mdata, model, n_domains=3, embedding="pca", key_added="pca")
    assert mdata.uns["pca"]["params"]["embedding"] == "pca"
    assert mdata.obsm["X_scmsi_spatial"].shape == (256, model.module.n_latent)
    assert adjusted_rand_score(truth, pca) > 0.5
    with pytest.raises(ValueError, match="use_rep"):
        scmsi.tl.spatial_domains(mdata, use_rep="X_scmsi_spatial", embedding="spectral")
    fig = scmsi.pl.spatial_domains(mdata, color=["scmsi_domain", "domain"])
    fig.savefig(tmp_path / "domains.png")
    rna = syn.copy()
    rna.obs["scmsi_domain"] = mdata.obs["scmsi_domain"].to_numpy()
    fig = scmsi.pl.domain_markers(rna, n_genes=2)
    fig.savefig(tmp_path / "markers.png")
    assert (tmp_path / "markers.png").stat().st_size > 0
