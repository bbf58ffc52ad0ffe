"""Tools on a trained model: embedding of the fused affinity, k-NN graph, clusters, UMAP.

Everything is written where scanpy and muon look for it, on the MuData (or AnnData) itself:

========================  ==============================================================
``obsm["X_scmsi"]``       PCA of the fused coefficients (the default embedding)
``obsm["scmsi_coef"]``    fused coefficients, cells x anchors (rows sum to 1)
``obsm["X_scmsi_<m>"]``   latent of modality ``m``
``obsp["scmsi_connectivities"]``, ``obsp["scmsi_distances"]``, ``uns["scmsi"]``: k-NN graph
``obs["scmsi_leiden"]``   Leiden clusters on that graph (``uns["scmsi_leiden"]``: resolution)
``obs["scmsi_kmeans"]``   k-means clusters (when ``n_clusters`` is given)
``obsm["X_umap"]``        UMAP of the graph
========================  ==============================================================
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd
import scanpy as sc
from anndata import AnnData
from mudata import MuData
from sklearn.cluster import KMeans, SpectralClustering
from sklearn.decomposition import PCA
from sklearn.metrics import silhouette_score

KEY = "scmsi"
RESOLUTIONS = tuple(np.round(np.arange(0.1, 2.01, 0.1), 2))


def coefficient_embedding(coef: np.ndarray, n_comps: int = 10, seed: int = 0) -> np.ndarray:
    """PCA of the fused coefficients, shape ``(N, n_comps)``.

    Cost O(N * A * n_comps): the affinity is never expanded to N x N. ``n_comps`` defaults to
    the latent size, the dimension every modality's view was compressed to.
    """
    n_comps = int(min(n_comps, coef.shape[1] - 1, coef.shape[0] - 1))
    return PCA(n_comps, random_state=seed).fit_transform(coef).astype(np.float32)


def embed_and_cluster(
    data: MuData | AnnData,
    model,
    n_comps: int | None = None,
    n_neighbors: int = 15,
    resolution: float | Literal["auto"] = "auto",
    n_clusters: int | None = None,
    cluster_method: Literal["kmeans", "spectral"] = "kmeans",
    umap: bool = True,
    seed: int = 0,
) -> None:
    """Fused affinity -> embedding -> k-NN graph -> Leiden (and k-means/spectral) -> UMAP.

    Parameters
    ----------
    data
        The MuData/AnnData the model was set up with (or new cells of the same layout).
    model
        A trained :class:`scmsi.SCMSI`.
    n_comps
        PCA components of the fused coefficients; default the model's latent size.
    n_neighbors
        Neighbours of the k-NN graph.
    resolution
        Leiden resolution, or ``"auto"``: the resolution whose clusters have the highest
        silhouette on the embedding (:func:`leiden_auto`; no labels are used).
    n_clusters
        Also cluster into exactly this many groups with ``cluster_method``.
    cluster_method
        ``"kmeans"`` on the embedding (n_init=10) or ``"spectral"`` on the k-NN graph.
    umap
        Compute a UMAP of the graph into ``obsm["X_umap"]``.
    seed
        Random seed of PCA, Leiden, k-means and UMAP.
    """
    coefs = model.get_coefficients(data, return_all=True)
    latents = model.get_latent_representation(data)
    emb = coefficient_embedding(coefs["fused"], n_comps or model.module.n_latent, seed)

    tmp = AnnData(obs=pd.DataFrame(index=data.obs_names.copy()))
    tmp.obsm["X_scmsi"] = emb
    sc.pp.neighbors(
        tmp, n_neighbors=n_neighbors, use_rep="X_scmsi", key_added=KEY, random_state=seed
    )
    graph = tmp.obsp[f"{KEY}_connectivities"]
    if resolution == "auto":
        labels, info = leiden_auto(graph, emb, seed=seed)
    else:
        labels = leiden(graph, float(resolution), seed)
        info = {"resolution": float(resolution)}
    if umap:
        sc.tl.umap(tmp, neighbors_key=KEY, random_state=seed)

    data.obsm["X_scmsi"] = emb
    data.obsm[f"{KEY}_coef"] = coefs["fused"]
    for m, z in latents.items():
        data.obsm[f"X_scmsi_{m}"] = z
    data.obsp[f"{KEY}_connectivities"] = tmp.obsp[f"{KEY}_connectivities"]
    data.obsp[f"{KEY}_distances"] = tmp.obsp[f"{KEY}_distances"]
    data.uns[KEY] = tmp.uns[KEY]
    data.obs[f"{KEY}_leiden"] = labels
    data.uns[f"{KEY}_leiden"] = {"params": info}
    if umap:
        data.obsm["X_umap"] = tmp.obsm["X_umap"]
    if n_clusters is not None:
        data.obs[f"{KEY}_{cluster_method}"] = cluster(
            emb if cluster_method == "kmeans" else tmp.obsp[f"{KEY}_connectivities"],
            n_clusters,
            cluster_method,
            seed,
        )


def leiden(graph, resolution: float = 1.0, seed: int = 0) -> pd.Categorical:
    """Leiden (igraph flavour, 2 iterations) on a symmetric sparse affinity graph."""
    tmp = AnnData(obs=pd.DataFrame(index=[str(i) for i in range(graph.shape[0])]))
    sc.tl.leiden(
        tmp,
        adjacency=graph,
        resolution=resolution,
        random_state=seed,
        flavor="igraph",
        n_iterations=2,
        directed=False,
    )
    return pd.Categorical(tmp.obs["leiden"].to_numpy())


def leiden_auto(
    graph,
    embedding: np.ndarray,
    resolutions: tuple[float, ...] = RESOLUTIONS,
    max_cells: int = 5000,
    seed: int = 0,
) -> tuple[pd.Categorical, dict]:
    """Leiden at the resolution whose clusters have the highest silhouette on ``embedding``.

    A label-free choice: modularity alone always prefers more clusters as the resolution
    rises, whereas the silhouette asks whether the clusters are separated in the space the
    graph was built from. Resolutions giving a single cluster are skipped. The silhouette is
    computed on at most ``max_cells`` cells (a fixed random subset), so the cost stays O(N).

    Parameters
    ----------
    graph
        Sparse symmetric affinity, shape ``(N, N)`` (e.g. k-NN connectivities).
    embedding
        Coordinates the graph was built from, shape ``(N, d)``.
    resolutions
        Candidate resolutions (default 0.1, 0.2, ..., 2.0).
    max_cells
        Cells used to compute the silhouette.
    seed
        Seed of Leiden and of the subsample.

    Returns
    -------
    labels, info
        Clusters at the chosen resolution; ``info`` has ``resolution`` and ``silhouette``
        (one value per candidate, NaN where a single cluster was found).
    """
    n = graph.shape[0]
    rng = np.random.default_rng(seed)
    sub = np.sort(rng.choice(n, max_cells, replace=False)) if n > max_cells else np.arange(n)
    best, scores = None, []
    for r in resolutions:
        labels = leiden(graph, r, seed)
        k = len(np.unique(np.asarray(labels)[sub]))
        score = (
            silhouette_score(embedding[sub], np.asarray(labels)[sub])
            if 1 < k < len(sub)
            else np.nan
        )
        scores.append(float(score))
        if not np.isnan(score) and (best is None or score > best[0]):
            best = (score, r, labels)
    if best is None:  # every resolution gave one cluster
        return labels, {"resolution": float(resolutions[-1]), "silhouette": scores}
    info = {
        "resolution": float(best[1]),
        "resolutions": [float(r) for r in resolutions],
        "silhouette": scores,
    }
    return best[2], info


def cluster(
    x, n_clusters: int, method: Literal["kmeans", "spectral"] = "kmeans", seed: int = 0
) -> pd.Categorical:
    """Cluster an embedding (k-means, n_init=10) or a sparse affinity graph (spectral)."""
    if method == "kmeans":
        labels = KMeans(n_clusters, n_init=10, random_state=seed).fit_predict(x)
    elif method == "spectral":
        labels = SpectralClustering(
            n_clusters, affinity="precomputed", random_state=seed, assign_labels="cluster_qr"
        ).fit_predict(x)
    else:
        raise ValueError(f"cluster method must be 'kmeans' or 'spectral', got {method!r}.")
    return pd.Categorical(labels.astype(str))


# Spatial domains (see scmsi.spatial): re-exported here so that `scmsi.tl` has every tool.
from .spatial import refine_domains, smooth, spatial_domains  # noqa: E402

__all__ = [
    "cluster",
    "coefficient_embedding",
    "embed_and_cluster",
    "leiden",
    "leiden_auto",
    "refine_domains",
    "smooth",
    "spatial_domains",
]
