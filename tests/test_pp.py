"""scmsi.pp: mosaic padding and the spatial preprocessing names."""

import anndata as ad
import mudata as md
import numpy as np
import pytest

import scmsi
from scmsi import _mosaic, spatial


def test_pp_names_are_the_implementations():
    for name in scmsi.pp.__all__:
        impl = _mosaic if name == "pad_modalities" else spatial
        assert getattr(scmsi.pp, name) is getattr(impl, name), name


def test_pad_modalities_flags_and_does_not_modify_input():
    rng = np.random.default_rng(0)
    rna = ad.AnnData(rng.poisson(2.0, (6, 4)).astype(np.float32))
    rna.obs_names = [f"c{i}" for i in range(6)]
    prot = ad.AnnData(rng.poisson(9.0, (3, 2)).astype(np.float32))
    prot.obs_names = ["c0", "c2", "c4"]
    with md.set_options(pull_on_update=False):
        mosaic = md.MuData({"rna": rna, "prot": prot})
    before = mosaic["prot"].X.copy()
    out = scmsi.pp.pad_modalities(mosaic)
    assert out is not mosaic and mosaic["prot"].n_obs == 3
    np.testing.assert_array_equal(mosaic["prot"].X, before)
    assert out["prot"].n_obs == out["rna"].n_obs == 6
    has = out.obs["scmsi_has_prot"].to_numpy()
    np.testing.assert_array_equal(has, [True, False, True, False, True, False])
    assert out.obs["scmsi_has_rna"].all()
    np.testing.assert_array_equal(np.asarray(out["prot"].X)[~has], 0)
    np.testing.assert_array_equal(np.asarray(out["prot"][["c0", "c2", "c4"]].X), before)


def test_pad_modalities_rejects_an_unknown_modality():
    rna = ad.AnnData(np.ones((2, 2), np.float32))
    with md.set_options(pull_on_update=False):
        m = md.MuData({"rna": rna})
    with pytest.raises((KeyError, ValueError)):
        scmsi.pp.pad_modalities(m, ["atac"])
