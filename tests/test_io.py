"""scmsi.io: Cell Ranger matrices (.h5 in 10x's own layout, outs/ folders) as a MuData."""

import warnings

import h5py
import numpy as np
import pytest
from scipy import sparse

from scmsi.io import find_10x_h5, read_10x_h5
from tests._synthetic import synthetic_cite
from tests._tenx import write_cite_seq


def _cite_h5(path, extra: list | None = None):
    md = synthetic_cite(n_cells=50, n_genes=30, n_proteins=4, n_types=2, seed=0)
    write_cite_seq(path, md, extra)
    return md


def test_cite_h5_gives_rna_and_protein_with_their_types(tmp_path):
    md = _cite_h5(tmp_path / "filtered_feature_bc_matrix.h5")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # quiet: nothing about names it resolves itself
        out = read_10x_h5(tmp_path / "filtered_feature_bc_matrix.h5")
    assert out.uns["modality_types"] == {"rna": "counts", "prot": "protein"}
    assert list(out.obs_names) == list(md.obs_names)
    for m in ("rna", "prot"):
        assert sparse.issparse(out[m].X) and out[m].X.dtype == np.float32
        np.testing.assert_array_equal(out[m].X.toarray(), sparse.csr_matrix(md[m].X).toarray())
        assert list(out[m].var_names) == list(md[m].var_names)
    assert set(out["prot"].var["feature_types"]) == {"Antibody Capture"}


def test_peaks_are_accessibility_and_other_types_are_left_out_with_a_warning(tmp_path):
    rng = np.random.default_rng(0)
    peaks = (rng.random((50, 40)) < 0.2).astype(np.float32)
    guides = rng.poisson(1.0, (50, 3)).astype(np.float32)
    extra = [
        (peaks, [f"chr1:{i * 1000}-{i * 1000 + 500}" for i in range(40)], "Peaks"),
        (guides, ["g1", "g2", "g3"], "CRISPR Guide Capture"),
    ]
    _cite_h5(tmp_path / "m.h5", extra)
    with pytest.warns(UserWarning, match=r"'CRISPR Guide Capture': 3\} are left out"):
        out = read_10x_h5(tmp_path / "m.h5")
    assert out.uns["modality_types"] == {
        "rna": "counts",
        "prot": "protein",
        "atac": "accessibility",
    }
    assert out["atac"].shape == (50, 40)


def test_outs_folder_is_searched_and_bad_inputs_are_named(tmp_path):
    outs = tmp_path / "run" / "outs"
    outs.mkdir(parents=True)
    _cite_h5(outs / "filtered_feature_bc_matrix.h5")
    assert find_10x_h5(tmp_path / "run") == outs / "filtered_feature_bc_matrix.h5"
    assert read_10x_h5(outs).n_obs == 50
    with pytest.raises(FileNotFoundError, match="holds no Cell Ranger matrix"):
        find_10x_h5(tmp_path)
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f["x"] = np.zeros(3)
    with pytest.raises(ValueError, match="not a Cell Ranger feature-barcode matrix"):
        read_10x_h5(tmp_path / "other.h5")
    (tmp_path / "text.h5").write_text("not hdf5")
    with pytest.raises(ValueError, match="cannot read .* as a 10x HDF5 matrix"):
        read_10x_h5(tmp_path / "text.h5")
