"""The real-data guard: the package default never loses to its best single view.

One model per kind of data, trained with the package defaults (seed 0): CITE-seq (in-house
PBMC), RNA + chromatin (SNARE-seq) and a Visium section (DLPFC 151674). The joint
representation's k-means ARI (k = number of labels) must reach the best single view's
baseline minus ``TOLERANCE``: for cells, each modality's input PCA (the harness's
``only_<m>`` rows); for spots, the smoothed expression PCA clustered the same way (tied
Gaussian mixture + refinement). No default may change past this test (docs/contributing.md).
Skipped only where a dataset is absent (no local copy and no network).
"""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_rand_score

import scmsi

TOLERANCE = 0.02
SEED = 0


def _load(fn, *args):
    try:
        return fn(*args)
    except (FileNotFoundError, OSError, ConnectionError) as err:  # absent, not broken
        pytest.skip(f"dataset unavailable: {err}")


def _kmeans_ari(emb: np.ndarray, labels: np.ndarray) -> float:
    k = len(np.unique(labels))
    pred = KMeans(k, n_init=10, random_state=SEED).fit_predict(np.asarray(emb))
    return float(adjusted_rand_score(labels, pred))


@pytest.mark.slow
@pytest.mark.realdata
@pytest.mark.parametrize("dataset", ["inhouse_pbmc", "snare_seq"])
def test_joint_embedding_reaches_the_best_single_view(dataset):
    from benchmarks import peers

    mdata = _load(scmsi.datasets.load, dataset)
    labels = mdata.obs["cell_type"].astype(str).to_numpy()
    m, kinds, _ = peers.scmsi_setup(mdata)
    model = scmsi.SCMSI(m, seed=SEED)
    model.train(enable_progress_bar=False)
    scmsi.tl.embed_and_cluster(m, model, umap=False, seed=SEED)
    joint = _kmeans_ari(m.obsm["X_scmsi"], labels)
    views = {
        mod: _kmeans_ari(peers.process_modality(mdata, mod, kind, SEED)[1], labels)
        for mod, kind in kinds.items()
    }
    best = max(views.values())
    print(f"guard {dataset}: joint {joint:.3f}, views {views}")  # shown with -s / on failure
    assert joint >= best - TOLERANCE, (dataset, joint, views)


@pytest.mark.slow
@pytest.mark.realdata
@pytest.mark.xfail(
    strict=True,  # passing means the spot model is fixed: then remove this mark
    reason="issue 26, blocked: final default, seed 0: spatial domains ARI 0.299 against "
    "smoothed PCA 0.594 on DLPFC 151674 (the previous default, symmetric KL: 0.244). The "
    "spots' latents collapse (each modality's smoothed latent clusters at ARI 0.0); the "
    "domains come from the anchor coefficients alone.",
)
def test_spatial_domains_reach_smoothed_expression_pca():
    import scanpy as sc

    from benchmarks.spatial import cluster_embedding
    from scmsi import spatial as sp
    from scmsi._anchors import lognormalize

    adata = _load(scmsi.datasets.dlpfc, "151674")
    truth = adata.obs["domain"].astype(object).to_numpy()
    ok = np.asarray([isinstance(t, str) for t in truth])
    k = len(np.unique(truth[ok]))
    mdata, kinds = sp.to_mudata(adata)
    scmsi.SCMSI.setup_mudata(mdata, modalities=kinds)
    model = scmsi.SCMSI(mdata, seed=SEED)
    model.train(enable_progress_bar=False)
    domains = np.asarray(sp.spatial_domains(mdata, model, n_domains=k, seed=SEED))
    joint = adjusted_rand_score(truth[ok], domains[ok])

    graph = mdata.obsp["spatial_connectivities"]
    pcs = sc.pp.pca(lognormalize(mdata["rna"].X), n_comps=30, random_state=SEED)
    base = cluster_embedding(sp.smooth(pcs, graph), k, graph, SEED)  # the harness's pca_smooth
    baseline = adjusted_rand_score(truth[ok], base[ok])
    print(f"guard dlpfc 151674: domains {joint:.3f}, smoothed PCA {baseline:.3f}")
    assert joint >= baseline - TOLERANCE, (joint, baseline)
