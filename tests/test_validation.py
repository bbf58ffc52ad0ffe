import numpy as np
import pytest
from scipy import sparse

import scmsi


def setup(md, **kw):
    kw.setdefault("layers", {"rna": "counts", "prot": "counts"})
    scmsi.SCMSI.setup_mudata(md, **kw)


def test_non_integer_counts_named(mdata):
    mdata["rna"].layers["counts"] = mdata["rna"].layers["counts"] * 0.5
    with pytest.raises(ValueError, match="non-integer"):
        setup(mdata)


def test_log_normalised_hint(mdata):
    x = mdata["rna"].layers["counts"].copy()
    x.data = np.log1p(x.data)
    mdata["rna"].layers["counts"] = x
    with pytest.raises(ValueError, match="log-normalised"):
        setup(mdata)


def test_negative_counts(mdata):
    x = mdata["prot"].layers["counts"].copy()
    x[0, 0] = -1
    mdata["prot"].layers["counts"] = x
    with pytest.raises(ValueError, match="negative"):
        setup(mdata)


def test_nan(mdata):
    x = mdata["prot"].layers["counts"].copy()
    x[3, 1] = np.nan
    mdata["prot"].layers["counts"] = x
    with pytest.raises(ValueError, match="NaN"):
        setup(mdata)


def test_empty_cells(mdata):
    x = mdata["rna"].layers["counts"].tolil()
    x[5, :] = 0
    mdata["rna"].layers["counts"] = sparse.csr_matrix(x)
    with pytest.raises(ValueError, match="no counts at all.*cell5"):
        setup(mdata)


def test_cell_names_differ(mdata):
    mdata["prot"].obs_names = [f"x{i}" for i in range(mdata.n_obs)]
    with pytest.raises(ValueError, match="same cells"):
        setup(mdata)


def test_unknown_batch_key(mdata):
    with pytest.raises(KeyError, match="batch_key 'donor'.*available"):
        setup(mdata, batch_key="donor")


def test_unknown_layer_and_type(mdata):
    with pytest.raises(KeyError, match="Layer 'raw'"):
        setup(mdata, layers={"rna": "raw"})
    with pytest.raises(ValueError, match="Unknown type 'rnaseq'"):
        setup(mdata, modalities={"rna": "rnaseq"})


def test_too_many_anchors(mdata):
    setup(mdata)
    with pytest.raises(ValueError, match="only 240 cells"):
        scmsi.SCMSI(mdata, n_anchors=500)


def test_user_data_untouched(mdata):
    before = mdata["rna"].layers["counts"].copy()
    obs_cols = list(mdata.obs.columns)
    setup(mdata)
    scmsi.SCMSI(mdata, n_anchors=30)
    assert (mdata["rna"].layers["counts"] != before).nnz == 0
    # scvi-tools adds only its private `_scvi_*` columns
    assert [c for c in mdata.obs.columns if not c.startswith("_scvi")] == obs_cols
