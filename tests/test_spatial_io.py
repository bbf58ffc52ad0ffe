"""scmsi.spatial.io: Visium folders and the ST adapter."""

import numpy as np
import pandas as pd

from scmsi import spatial as sp
from tests._synthetic import synthetic_visium
from tests._tenx import write_visium


def test_read_visium_folder_roundtrip(tmp_path):
    syn = synthetic_visium(n_rows=8, n_cols=8, n_genes=20)
    write_visium(tmp_path / "sec", syn)
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
