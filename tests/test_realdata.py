"""Real data: the in-house PBMC CITE-seq set (../shared/data, $SCMSI_DATA_DIR, or download)."""

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

import scmsi


@pytest.fixture(scope="module")
def pbmc():
    try:
        return scmsi.datasets.inhouse_pbmc()
    except Exception as err:  # no local copy and no network
        pytest.skip(f"in-house PBMC unavailable: {err}")


@pytest.mark.realdata
def test_inhouse_pbmc_preprocessing_matches_paper(pbmc):
    assert pbmc.n_obs == 1071
    assert pbmc["rna"].n_vars == 2000 and pbmc["prot"].n_vars == 10
    assert pbmc.obs["cell_type"].value_counts()["CD4+ T cells"] == 502


@pytest.mark.realdata
def test_inhouse_pbmc_default_training_clusters_cell_types(pbmc):
    md = pbmc.copy()
    scmsi.SCMSI.setup_mudata(md, layers={"rna": "counts", "prot": "counts"})
    model = scmsi.SCMSI(md, seed=0)
    model.train(enable_progress_bar=False)  # package defaults (~1-2 min here)
    scmsi.tl.embed_and_cluster(md, model, n_clusters=6, umap=False)
    ari = adjusted_rand_score(md.obs["cell_type"], md.obs["scmsi_kmeans"])
    assert ari > 0.8, ari
    fg = model.get_protein_foreground_probability()
    # CD3 is foreground on T cells and background on NK cells
    ct = md.obs["cell_type"].to_numpy()
    assert np.median(fg["CD3"][ct == "CD4+ T cells"]) > np.median(fg["CD3"][ct == "NK cells"]) + 0.3
