"""Real spatial data from ../shared/data ($SCMSI_DATA_DIR); skipped where absent. Each < 1 min."""

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

import scmsi
from scmsi import spatial as sp
from scmsi.spatial.input import _standardise as standardise


def _load(fn, *args):
    try:
        return fn(*args)
    except (FileNotFoundError, OSError) as err:
        pytest.skip(f"data unavailable: {err}")


@pytest.mark.slow
@pytest.mark.realdata
def test_dlpfc_sections_load_with_layers_and_a_hexagonal_graph():
    a = _load(scmsi.datasets.dlpfc, "151510")
    assert a.shape == (4634, 500) and a.obs["domain"].nunique() == 7
    assert a.obs["domain"].isna().sum() == 39
    img, scale, diam = sp.get_image(a)
    assert img.shape == (600, 600, 3) and np.isclose(scale, 0.045004502)
    deg = np.asarray(sp.spatial_graph(a.obsm["spatial"]).sum(1)).ravel()
    assert np.mean(deg == 6) > 0.9 and deg.max() == 6  # the first hexagonal ring
    b = _load(scmsi.datasets.dlpfc, "151674")
    assert b.shape == (3673, 5000) and b.obs["domain"].notna().sum() == 3635


@pytest.mark.slow
@pytest.mark.realdata
def test_her2st_a1_image_features_follow_the_tissue():
    a = _load(scmsi.datasets.her2st, "A1")
    assert a.n_obs == 346 and a.obs["domain"].nunique() == 6
    f = sp.image_features(a)
    names = a.uns["X_image_features"]
    assert f.shape == (346, 56)
    d = a.obs["domain"].astype(str).to_numpy()
    haem = f[:, names.index("ctx1_haem_mean")]
    bright = f[:, names.index("ctx1_background_frac")]
    # fat is bright and unstained; tumour nuclei take up haematoxylin
    assert bright[d == "adipose tissue"].mean() > bright[d == "invasive cancer"].mean()
    assert haem[d == "cancer in situ"].mean() > haem[d == "adipose tissue"].mean()


@pytest.mark.slow
@pytest.mark.realdata
def test_breast_cancer_image_only_domains_beat_random():
    a = _load(scmsi.datasets.breast_cancer_visium)
    assert a.shape == (3798, 0) and a.obs["domain"].nunique() == 20
    sp.image_features(a)
    a.obsm["X_image_std"] = standardise(a.obsm["X_image"])
    labels = scmsi.spatial.spatial_domains(a, use_rep="X_image_std", n_domains=20, refine=True)
    truth = a.obs["domain"].to_numpy()
    ari = adjusted_rand_score(truth, labels)
    rng = np.random.default_rng(0)
    null = max(adjusted_rand_score(truth, rng.permutation(labels)) for _ in range(5))
    assert ari > 0.1 and ari > null + 0.08, (ari, null)


@pytest.mark.slow
@pytest.mark.realdata
def test_dlpfc_section_domains_with_the_graph_encoder():
    """The spatial model with the graph-aware encoder on a real section, briefly trained: the
    encoder reads the neighbourhood and the domains follow the layers."""
    a = _load(scmsi.datasets.dlpfc, "151674")
    mdata, kinds = sp.to_mudata(a, graph_encoder=True)
    assert mdata.uns["scmsi_context_layers"] == {"rna": "scmsi_neighbours"}
    scmsi.SCMSI.setup_mudata(mdata, modalities=kinds)
    model = scmsi.SCMSI(mdata, seed=0)
    model.train(max_epochs=10, enable_progress_bar=False, early_stopping=False)
    labels = scmsi.spatial.spatial_domains(mdata, model, n_domains=7, seed=0)
    assert model.module.anchor_in_rna.shape[1] == 2 * mdata["rna"].n_vars
    truth = a.obs["domain"].astype(str).to_numpy()
    ok = truth != "nan"
    assert adjusted_rand_score(truth[ok], np.asarray(labels)[ok]) > 0.2
