"""scmsi.spatial.io: Visium folders and the ST adapter."""

import numpy as np
import pandas as pd
import pytest

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


def test_find_visium_takes_the_folder_its_outs_or_the_matrix_in_it(tmp_path):
    syn = synthetic_visium(n_rows=4, n_cols=4, n_genes=5)
    outs = write_visium(tmp_path / "run" / "outs", syn)
    h5 = outs / "filtered_feature_bc_matrix.h5"
    for given in (tmp_path / "run", outs, h5):
        assert sp.find_visium(given) == (outs, "filtered_feature_bc_matrix.h5")
    lone = tmp_path / "lone.h5"
    lone.write_bytes(h5.read_bytes())
    with pytest.raises(FileNotFoundError, match="count matrix without spatial data"):
        sp.find_visium(lone)
    with pytest.raises(FileNotFoundError, match="not a Space Ranger output folder"):
        sp.read_visium(tmp_path)


def test_read_spot_table_aligns_to_the_spots_and_names_a_mismatch(tmp_path):
    names = pd.Index(["s1", "s2", "s3"])
    table = tmp_path / "meta.tsv"
    pd.DataFrame({"layer": ["L1", "L2"]}, index=["s3", "s1"]).to_csv(table, sep="\t")
    out = sp.read_spot_table(table, names)
    assert out["layer"].tolist()[::2] == ["L2", "L1"] and out["layer"].isna().tolist()[1]
    with pytest.raises(ValueError, match="none of its 2 rows names a spot"):
        sp.read_spot_table(table, pd.Index(["x", "y"]))
