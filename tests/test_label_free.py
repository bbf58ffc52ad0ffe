"""Label-free number of clusters: stability of Leiden under subsampling."""

import anndata as ad
import numpy as np
import pandas as pd
import scanpy as sc

from scmsi._cluster import leiden_stable


def _graph(x):
    a = ad.AnnData(obs=pd.DataFrame(index=[str(i) for i in range(len(x))]))
    a.obsm["X"] = x
    sc.pp.neighbors(a, n_neighbors=15, use_rep="X", random_state=0)
    return a.obsp["connectivities"]


def test_three_separated_clusters_give_three():
    rng = np.random.default_rng(0)
    centres = 8.0 * np.eye(3, 5)
    x = np.concatenate([c + rng.normal(size=(100, 5)) for c in centres]).astype(np.float32)
    truth = np.repeat(np.arange(3), 100)
    labels, info = leiden_stable(_graph(x), x, seed=0)
    assert info["n_clusters"] == 3
    codes = pd.Categorical(labels).codes
    # the clusters are the three groups
    assert all(len(np.unique(codes[truth == t])) == 1 for t in range(3))
    evidence = info["stability"]
    assert len(evidence) == len(info["resolutions"]) == len(info["n_clusters_per_resolution"])
    best = info["resolutions"].index(info["resolution"])
    assert evidence[best] == np.nanmax(evidence)


def test_large_data_select_on_a_subsample():
    rng = np.random.default_rng(1)
    centres = 8.0 * np.eye(4, 5)
    x = np.concatenate([c + rng.normal(size=(150, 5)) for c in centres]).astype(np.float32)
    labels, info = leiden_stable(_graph(x), x, max_cells=300, seed=0)
    assert info["cells_used"] == 300
    assert len(labels) == 600 and info["n_clusters"] == 4
