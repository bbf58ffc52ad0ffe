from pathlib import Path

import mudata
import pytest

from scmsi.cli import main
from tests._synthetic import synthetic_cite


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
