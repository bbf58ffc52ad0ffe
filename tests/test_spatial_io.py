"""scmsi.spatial.io: Visium folders and the ST adapter."""

import json

import h5py
import numpy as np
import pandas as pd
from scipy import sparse

from scmsi import spatial as sp
from tests._synthetic import synthetic_visium


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
