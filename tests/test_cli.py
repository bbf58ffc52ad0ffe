from pathlib import Path

import mudata
import numpy as np
import pytest

import scmsi
from scmsi.cli import main
from tests._synthetic import synthetic_cite, synthetic_visium
from tests._tenx import write_10x_h5, write_visium


@pytest.mark.slow
def test_fit_writes_results_and_figure(tmp_path: Path, capsys):
    md = synthetic_cite(n_cells=200, n_genes=60, n_proteins=6, n_types=3, seed=0)
    src = tmp_path / "in.h5mu"
    md.write_h5mu(src)
    out = tmp_path / "out" / "res.h5mu"
    rc = main(
        [
            "fit",
            str(src),
            "-o",
            str(out),
            "--layers",
            "rna=counts,prot=counts",
            "--n-anchors",
            "30",
            "--max-epochs",
            "5",
            "--label-key",
            "cell_type",
            "--n-clusters",
            "3",
            "--fusion",
            "precision",
        ]
    )
    assert rc == 0
    res = mudata.read_h5mu(out)
    assert "X_scmsi" in res.obsm and "scmsi_leiden" in res.obs and "scmsi_kmeans" in res.obs
    assert res.obsm["scmsi_modality_weights"].shape == (md.n_obs, 2)
    assert res.uns["scmsi_embedding"]["fusion"] == "precision"
    png = out.with_suffix(".umap.png")
    assert png.stat().st_size > 10_000
    assert "scmsi_kmeans: ARI" in capsys.readouterr().out
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no temp left


# ------------------------------------------------------------------ 10x inputs and `domains`
def _run(argv, capsys):
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def _no_training(monkeypatch):
    def refuse(*a, **k):
        raise AssertionError("trained before the checks")

    monkeypatch.setattr(scmsi.SCMSI, "train", refuse)


def _section(tmp_path, n_rows=8, n_cols=8):
    """A Space Ranger folder of a synthetic section, with a metadata.tsv holding its bands."""
    syn = synthetic_visium(n_rows=n_rows, n_cols=n_cols, n_genes=40)
    folder = write_visium(tmp_path / "section" / "outs", syn)
    syn.obs[["domain"]].to_csv(folder / "metadata.tsv", sep="\t")
    return folder


def test_modalities_example_uses_the_types_the_names_suggest(tmp_path, capsys):
    md = synthetic_cite(n_cells=40, n_genes=30, n_proteins=4, n_types=2, seed=0)
    del md.uns["modality_types"]
    md.write_h5mu(tmp_path / "in.h5mu")
    rc, _, err = _run(["fit", tmp_path / "in.h5mu", "-o", tmp_path / "o.h5mu"], capsys)
    assert rc == 2 and "--modalities rna=counts,prot=protein " in err


def test_domains_errors_are_one_line_before_training(tmp_path, capsys, monkeypatch):
    _no_training(monkeypatch)
    folder = _section(tmp_path)
    bare = tmp_path / "bare"
    bare.mkdir()
    matrix = write_10x_h5(bare / "m.h5", [(np.ones((3, 2)), ["a", "b"], "Gene Expression")], "xyz")
    nan_folder = _section(tmp_path / "nan")
    pos = nan_folder / "spatial" / "tissue_positions_list.csv"
    lines = pos.read_text().splitlines()
    pos.write_text("\n".join([lines[0].rsplit(",", 1)[0] + ",nan", *lines[1:]]) + "\n")
    no_sf = _section(tmp_path / "nosf")
    (no_sf / "spatial" / "scalefactors_json.json").unlink()
    out = tmp_path / "o" / "d.h5mu"
    cases = {
        "is a count matrix without spatial data": [matrix],
        "is not a Space Ranger output folder": [bare],
        "lacks scalefactors_json.json": [no_sf],
        "NaN or infinite coordinates for 1 spots": [nan_folder],
        "--n-domains must be at least 2": [folder, "--n-domains", 1],
        "unknown image format": [folder, "--figure", tmp_path / "f.xyz"],
        "--label-key 'nope' is not a column of": [folder, "--label-key", "nope"],
        "pass --metadata TABLE": [folder, "--label-key", "x", "--metadata", tmp_path / "no.tsv"],
        "--epochs must be": [folder, "--epochs", 0],
    }
    for message, (src, *options) in cases.items():
        option = "--max-epochs" if message == "--epochs must be" else None
        rc, _, err = _run(["domains", src, "-o", out, *options], capsys)
        assert rc == 2, (message, err)
        assert err.startswith("scmsi: error: ") and err.count("\n") == 1, err
        assert (option or message) in err and "Traceback" not in err, (message, err)
    assert not (tmp_path / "o").exists()


def test_fit_on_a_file_that_is_no_10x_matrix_is_one_line(tmp_path, capsys, monkeypatch):
    _no_training(monkeypatch)
    (tmp_path / "x.h5").write_text("not hdf5")
    rc, _, err = _run(["fit", tmp_path / "x.h5", "-o", tmp_path / "o.h5mu"], capsys)
    assert rc == 2 and "as a 10x HDF5 matrix" in err and err.count("\n") == 1
    rc, _, err = _run(["fit", tmp_path, "-o", tmp_path / "o.h5mu"], capsys)
    assert rc == 2 and "holds no Cell Ranger matrix" in err


def test_domains_ctrl_c_exits_130_and_writes_nothing(tmp_path, capsys, monkeypatch):
    def interrupted(self, *a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(scmsi.SCMSI, "train", interrupted)
    out = tmp_path / "o" / "d.h5mu"
    rc, _, err = _run(["domains", _section(tmp_path), "-o", out, "--epochs", 1], capsys)
    assert rc == 130 and err.count("\n") == 1
    assert not out.parent.exists() or not list(out.parent.iterdir())


@pytest.mark.slow
def test_domains_on_a_space_ranger_folder(tmp_path, capsys):
    folder = _section(tmp_path)
    out, fig = tmp_path / "res" / "d.h5mu", tmp_path / "res" / "d.svg"
    argv = ["domains", folder.parent, "-o", out, "--figure", fig, "--epochs", 3]
    rc, stdout, err = _run([*argv, "--n-domains", 3, "--label-key", "domain"], capsys)
    assert rc == 0, err
    assert "rna (counts), image (continuous), niche (continuous)" in stdout
    assert "3 domains (as asked)" in stdout and "scmsi_domain: ARI" in stdout
    res = mudata.read_h5mu(out)
    assert res.obs["scmsi_domain"].nunique() == 3 and "domain" in res.obs
    assert fig.read_bytes()[:5] in (b"<?xml", b"<svg ")
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no temp left


@pytest.mark.slow
def test_fit_on_a_multiome_outs_folder_needs_no_flags(tmp_path, capsys):
    md = synthetic_cite(n_cells=150, n_genes=60, n_proteins=4, n_types=3, seed=1)
    rng = np.random.default_rng(1)
    types = md.obs["cell_type"].cat.codes.to_numpy()
    open_by_type = rng.random((3, 200)) < 0.3  # each type opens its own peaks
    peaks = rng.poisson(np.where(open_by_type[types], 1.5, 0.05)).astype(np.float32)
    names = [f"chr1:{i * 2000}-{i * 2000 + 600}" for i in range(200)]
    outs = tmp_path / "run" / "outs"
    outs.mkdir(parents=True)
    blocks = [(md["rna"].X, md["rna"].var_names, "Gene Expression"), (peaks, names, "Peaks")]
    write_10x_h5(outs / "filtered_feature_bc_matrix.h5", blocks, md.obs_names)
    out = tmp_path / "res.h5mu"
    rc, stdout, err = _run(["fit", tmp_path / "run", "-o", out, "--max-epochs", 3], capsys)
    assert rc == 0, err
    assert "rna (counts, 60 features), atac (accessibility, 200 features)" in stdout
    res = mudata.read_h5mu(out)
    assert set(res.mod) == {"rna", "atac"} and "scmsi_leiden" in res.obs


def _need(folder: Path) -> None:
    """Skip when a real-data folder is absent, and only then."""
    if not folder.is_dir():
        pytest.skip(f"data folder {folder} is absent")


@pytest.mark.slow
@pytest.mark.realdata
def test_fit_on_a_cellranger_cite_seq_h5_needs_no_flags(tmp_path, capsys):
    _need(scmsi.datasets.data_dir() / "inhouse_pbmc")
    md = scmsi.datasets.inhouse_pbmc()
    rna, prot = md["rna"], md["prot"]
    blocks = [
        (rna.X, rna.var_names, "Gene Expression"),
        (prot.X, prot.var_names, "Antibody Capture"),
    ]
    h5 = write_10x_h5(tmp_path / "filtered_feature_bc_matrix.h5", blocks, md.obs_names)
    out = tmp_path / "res.h5mu"
    rc, stdout, err = _run(["fit", h5, "-o", out, "--max-epochs", 3], capsys)
    assert rc == 0, err
    assert f"{md.n_obs} cells; rna (counts, 2000 features), prot (protein, 10 features)" in stdout
    res = mudata.read_h5mu(out)
    assert res.uns["modality_types"] == {"rna": "counts", "prot": "protein"}
    assert "X_scmsi" in res.obsm and out.with_suffix(".umap.png").is_file()


@pytest.mark.slow
@pytest.mark.realdata
def test_domains_on_the_dlpfc_151510_space_ranger_folder(tmp_path, capsys):
    folder = scmsi.datasets.data_dir() / "dlpfc" / "151510"
    _need(folder)
    out = tmp_path / "dlpfc.h5mu"
    argv = ["domains", folder, "-o", out, "--epochs", 3, "--label-key", "layer_guess_reordered"]
    rc, stdout, err = _run(argv, capsys)
    assert rc == 0, err
    assert "4634 spots, 500 genes, image: lowres" in stdout
    assert "chosen without labels" in stdout and "scmsi_domain: ARI" in stdout
    assert "39 of 4634 cells have no 'layer_guess_reordered'" in stdout
    res = mudata.read_h5mu(out)
    assert res.n_obs == 4634 and res.obs["scmsi_domain"].nunique() >= 3
    assert out.with_suffix(".domains.png").stat().st_size > 10_000
