"""Tools on a trained model: embedding of the fused affinity, k-NN graph, clusters, UMAP.

Everything is written where scanpy and muon look for it, on the MuData (or AnnData) itself:

========================  ==============================================================
``obsm["X_scmsi"]``       PCA of the fused coefficients (the default embedding)
``uns["scmsi_pca"]``      that PCA (``components``, ``mean``, ``anchors``): :func:`map_query`
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
    fusion: Literal["mean", "adaptive"] = "mean",
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
    fusion
        How modalities' coefficients are fused (:meth:`scmsi.SCMSI.get_coefficients`);
        ``"adaptive"`` also writes the per-cell weights to ``obsm["scmsi_modality_weights"]``.
    seed
        Random seed of PCA, Leiden, k-means and UMAP.
    """
    coefs = model.get_coefficients(data, return_all=True, fusion=fusion)
    latents = model.get_latent_representation(data)
    emb, pca = coefficient_pca(coefs["fused"], n_comps or model.module.n_latent, seed)
    pca["anchors"] = np.asarray(model.anchor_names_, dtype=str)

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
    data.uns[f"{KEY}_pca"] = pca
    data.obsm[f"{KEY}_coef"] = coefs["fused"]
    if fusion == "adaptive":
        data.obsm[f"{KEY}_modality_weights"] = model.get_modality_weights(data).to_numpy()
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


# ---------------------------------------------------------------------------- new cells
def coefficient_pca(coef: np.ndarray, n_comps: int = 10, seed: int = 0) -> tuple[np.ndarray, dict]:
    """PCA of the fused coefficients and the fitted projection, for mapping new cells.

    Returns the embedding ``(N, n_comps)`` and ``{"components": (n_comps, A), "mean": (A,)}``;
    the embedding is ``(coef - mean) @ components.T``, the projection :func:`map_query`
    applies to new cells, so reference and query share one space.
    """
    n_comps = int(min(n_comps, coef.shape[1] - 1, coef.shape[0] - 1))
    fit = PCA(n_comps, random_state=seed).fit(coef)
    pca = {
        "components": fit.components_.astype(np.float32),
        "mean": fit.mean_.astype(np.float32),
    }
    return project_coefficients(coef, pca), pca


def project_coefficients(coef: np.ndarray, pca: dict) -> np.ndarray:
    """Project fused coefficients with a stored PCA (``uns["scmsi_pca"]``)."""
    coef = np.asarray(coef, dtype=np.float32)
    return ((coef - pca["mean"]) @ np.asarray(pca["components"]).T).astype(np.float32)


def map_query(
    query: MuData | AnnData,
    model,
    reference: MuData | AnnData,
    label_key: str | None = None,
    n_neighbors: int = 15,
    batch_size: int | None = None,
) -> None:
    """Place new cells in the reference's embedding, with no retraining.

    The query cells are expressed over the trained anchors (:meth:`scmsi.SCMSI.get_coefficients`;
    features are matched by name, modalities may be missing), and their fused coefficients are
    projected with the PCA that :func:`embed_and_cluster` fitted on the reference, so
    ``reference.obsm["X_scmsi"]`` and ``query.obsm["X_scmsi"]`` can be plotted and clustered
    together. With ``label_key``, labels are transferred by k-NN (:func:`transfer_labels`).

    Writes to ``query``: ``obsm["X_scmsi"]``, ``obsm["scmsi_coef"]``, ``obsm["X_scmsi_<m>"]`` and,
    with ``label_key``, ``obs[f"{label_key}_pred"]`` and ``obs[f"{label_key}_confidence"]``.

    Parameters
    ----------
    query
        New cells (their data are not modified; results are added to ``obsm``/``obs``).
    model
        The trained :class:`scmsi.SCMSI` (or a query model from ``load_query_data``).
    reference
        The reference data after :func:`embed_and_cluster` with the same model's anchors.
    label_key
        Column of ``reference.obs`` to transfer.
    n_neighbors
        Neighbours of the label transfer.
    batch_size
        Minibatch size of the model's forward passes.
    """
    pca = reference.uns.get(f"{KEY}_pca")
    if pca is None:
        raise KeyError(
            "reference.uns['scmsi_pca'] is missing: run `scmsi.tl.embed_and_cluster(reference, "
            "model)` on the reference first; its PCA is what new cells are projected with."
        )
    anchors = np.asarray(pca.get("anchors", []), dtype=str)
    if not np.array_equal(anchors, np.asarray(model.anchor_names_, dtype=str)):
        raise ValueError(
            "The reference embedding was computed with another model (different anchor cells): "
            "run `scmsi.tl.embed_and_cluster(reference, model)` with this model first."
        )
    coefs = model.get_coefficients(query, return_all=True, batch_size=batch_size)
    latents = model.get_latent_representation(query, batch_size=batch_size)
    query.obsm["X_scmsi"] = project_coefficients(coefs["fused"], pca)
    query.obsm[f"{KEY}_coef"] = coefs["fused"]
    for m, z in latents.items():
        query.obsm[f"X_scmsi_{m}"] = z
    if label_key is not None:
        transfer_labels(reference, query, label_key, n_neighbors=n_neighbors)


def transfer_labels(
    reference: MuData | AnnData,
    query: MuData | AnnData,
    label_key: str,
    n_neighbors: int = 15,
    use_rep: str = "X_scmsi",
) -> None:
    """k-NN label transfer from reference to query cells, with a per-cell confidence.

    Each query cell takes the label with the largest weight among its ``n_neighbors`` nearest
    reference cells in ``use_rep`` (Gaussian weights, bandwidth = the cell's mean distance to
    those neighbours). The confidence is that label's share of the weight: 1 when all
    neighbours agree, near ``1 / n_labels`` when they are split.

    Writes ``query.obs[f"{label_key}_pred"]`` (categorical) and
    ``query.obs[f"{label_key}_confidence"]`` (in ``[0, 1]``). Reference cells with a missing
    label are ignored.
    """
    from sklearn.neighbors import NearestNeighbors

    for name, d in (("reference", reference), ("query", query)):
        if use_rep not in d.obsm:
            raise KeyError(
                f"{name}.obsm['{use_rep}'] is missing; run `scmsi.tl.embed_and_cluster` on the "
                "reference and `scmsi.tl.map_query` on the query first."
            )
    if label_key not in reference.obs.columns:
        raise KeyError(f"'{label_key}' is not a column of reference.obs.")
    labels = reference.obs[label_key]
    keep = labels.notna().to_numpy()
    cats = pd.Categorical(labels[keep].astype(str))
    k = int(min(n_neighbors, keep.sum()))
    nn = NearestNeighbors(n_neighbors=k).fit(np.asarray(reference.obsm[use_rep])[keep])
    dist, idx = nn.kneighbors(np.asarray(query.obsm[use_rep]))
    sigma = dist.mean(1, keepdims=True) + 1e-12
    w = np.exp(-((dist / sigma) ** 2))
    codes = cats.codes[idx]
    votes = np.zeros((len(dist), len(cats.categories)))
    np.add.at(votes, (np.repeat(np.arange(len(dist)), k), codes.ravel()), w.ravel())
    best = votes.argmax(1)
    query.obs[f"{label_key}_pred"] = pd.Categorical.from_codes(best, cats.categories)
    query.obs[f"{label_key}_confidence"] = (
        votes[np.arange(len(best)), best] / votes.sum(1)
    ).astype(np.float32)


# Spatial domains (see scmsi.spatial): re-exported here so that `scmsi.tl` has every tool.
from .spatial import refine_domains, smooth, spatial_domains  # noqa: E402

__all__ = [
    "cluster",
    "coefficient_embedding",
    "coefficient_pca",
    "embed_and_cluster",
    "leiden",
    "leiden_auto",
    "map_query",
    "project_coefficients",
    "refine_domains",
    "smooth",
    "spatial_domains",
    "transfer_labels",
]
