"""Tools on a trained model: embedding of the fused affinity, k-NN graph, clusters, UMAP.

Everything is written where scanpy and muon look for it, on the MuData (or AnnData) itself:

==================================  ====================================================
``obsm["X_scmsi"]``                 the embedding (``embedding=``: joint latent, latents
                                    rebuilt by the fused affinity, or PCA of it)
``uns["scmsi_embedding"]``          its map (``components``/``mean`` or latent
                                    ``mean``/``scale``; ``anchors``, ``embedding``,
                                    ``fusion``): :func:`map_query`
``obsm["scmsi_coef"]``              fused coefficients, cells x anchors (rows sum to 1;
                                    sparse top-k on large data, see ``top_k``)
``obsm["scmsi_modality_weights"]``  per-cell modality weights of the fusion
                                    (cells x modalities)
``obsm["X_scmsi_<m>"]``             latent of modality ``m``
``obsp["scmsi_connectivities"]``    k-NN graph (also ``obsp["scmsi_distances"]``,
                                    ``uns["scmsi"]``)
``obs["scmsi_leiden"]``             Leiden clusters on that graph (``uns["scmsi_leiden"]``:
                                    resolution, number of clusters, evidence)
``obs["scmsi_kmeans"]``             k-means clusters (when ``n_clusters`` is given)
``obsm["X_umap"]``                  UMAP of the graph (``umap=True``, :func:`umap`, or on
                                    first use by :func:`scmsi.pl.umap`)
==================================  ====================================================
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd
import scanpy as sc
from anndata import AnnData
from mudata import MuData

from . import _cluster
from ._cluster import (
    anchor_spectral_embedding,
    cluster,
    coefficient_embedding,
    knn_graph,
    leiden,
    leiden_auto,
)
from ._constants import KEY, X_KEY, OutputKeys
from ._fusion import Fusion, check_fusion, fusion_scale
from ._objective import EMBEDDINGS, Embedding


def embed_and_cluster(
    data: MuData | AnnData,
    model,
    n_comps: int | None = None,
    n_neighbors: int = 15,
    resolution: float | Literal["auto", "silhouette"] = "auto",
    n_clusters: int | None = None,
    cluster_method: Literal["kmeans", "spectral"] = "kmeans",
    umap: bool = False,
    fusion: Fusion | None = None,
    embedding: Embedding | None = None,
    top_k: int | None | Literal["auto"] = "auto",
    batch_size: int | None = None,
    seed: int = 0,
    key_added: str = KEY,
) -> None:
    """Fused affinity -> embedding -> k-NN graph -> Leiden (and k-means/spectral) [-> UMAP].

    Every step is linear in N: coefficients are cells x anchors (sparse top-k on large data),
    their PCA never forms an N x N matrix, the k-NN graph is approximate above 8,192 cells
    (:func:`knn_graph`: scanpy's graph, built without numba compilation below that) and the
    silhouette that picks the Leiden resolution is computed on a subsample.

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
        Leiden resolution, or ``"auto"``: the resolution whose clusters are the most stable
        when cells are left out (:func:`~scmsi._cluster.leiden_stable`; no labels are used), or
        ``"silhouette"``: the one whose clusters have the highest silhouette on the embedding
        (:func:`leiden_auto`). The chosen resolution, the number of clusters and the evidence
        (stability/silhouette per candidate) are written to ``uns["<key_added>_leiden"]``.
    n_clusters
        Also cluster into exactly this many groups with ``cluster_method``.
    cluster_method
        ``"kmeans"`` on the embedding (n_init=10) or ``"spectral"`` on the k-NN graph.
    umap
        Also compute a UMAP of the graph into ``obsm["X_umap"]`` (:func:`umap`). Off by
        default, as in scanpy, where ``pp.neighbors`` and ``tl.umap`` are separate steps: UMAP
        is the slowest step on large data and its first call in a process compiles numba code
        (5-10 s). :func:`scmsi.pl.umap` computes it on first use when it is missing.
    fusion
        How modalities' coefficients are fused (:meth:`scmsi.SCMSI.get_coefficients`); None
        (default): the model's (``model.fusion``, set by its objective). ``"product"`` (product
        of the modalities' anchor distributions), ``"mean"`` (equal weights), ``"precision"``
        (per-cell inverse posterior-variance weights) or ``"adaptive"`` (per-cell
        cross-rebuild weights); the per-cell weights are also written to
        ``obsm["scmsi_modality_weights"]``.
    embedding
        ``"latent"``: every modality's latent, standardised over the anchors and concatenated
        (:func:`~scmsi._cluster.joint_latent`; with the default objective the latents are trained so
        that their anchor neighbourhoods agree across modalities); ``"rebuilt"``: each cell's
        latents rebuilt by the fused affinity, ``sum_i c_{n,i} z^m_i`` over the anchors,
        standardised and concatenated (:func:`~scmsi._cluster.rebuilt_projection`); ``"pca"``: PCA
        of the fused coefficients (``n_comps``). None (default): the model's (``model.embedding``,
        set by its objective). The map is stored in ``uns["scmsi_embedding"]`` and applied to new
        cells by :func:`map_query`.
    top_k
        None: hold the fused coefficients dense (N x A) and write them to ``obsm["scmsi_coef"]``. An
        integer: never hold them dense; the PCA is computed exactly in two streamed passes
        (:func:`~scmsi._cluster.streamed_coefficient_pca`) and ``obsm["scmsi_coef"]`` gets each
        cell's ``top_k`` largest coefficients (sparse CSR). ``"auto"``: dense up to 50M cells x
        anchors (e.g. 97,000 cells with 512 anchors), else the top 64.
    batch_size
        Minibatch size of the model's forward passes.
    seed
        Random seed of PCA, Leiden, k-means and UMAP.
    key_added
        Prefix of the keys written (table in the module docstring; :mod:`scmsi._constants`).
        The default ``"scmsi"`` writes ``obsm["X_scmsi"]``, ``obsp["scmsi_connectivities"]``,
        ``obs["scmsi_leiden"]``, ... and ``obsm["X_umap"]``; ``key_added="foo"`` writes
        ``obsm["X_foo"]``, ``uns["foo_pca"]``, ``obsm["foo_coef"]``,
        ``obsm["foo_modality_weights"]``, ``obsm["X_foo_<m>"]``, ``obsp["foo_connectivities"]``,
        ``obsp["foo_distances"]``, ``uns["foo"]``, ``obs["foo_leiden"]``,
        ``obs["foo_<cluster_method>"]`` and ``obsm["X_foo_umap"]``, so a second run (another
        fusion, say) leaves the first one's results in place. ``uns["scmsi"]`` holds the
        graph's parameters as :func:`scanpy.pp.neighbors` writes them, so scanpy's tools run
        on it with ``neighbors_key="scmsi"``.
    """
    keys = OutputKeys(key_added)
    k = _cluster.auto_top_k(data.n_obs, model.module.n_anchors, top_k)
    n_comps = n_comps or model.module.n_latent
    fusion = getattr(model, "fusion", "mean") if fusion is None else fusion
    check_fusion(fusion)
    # Precision weights need no pass before; adaptive ones need their scale over all cells.
    scale = fusion_scale(model, data, fusion, batch_size=batch_size)
    embedding = getattr(model, "embedding", "pca") if embedding is None else embedding
    if embedding not in EMBEDDINGS:
        raise ValueError(f"embedding must be one of {EMBEDDINGS}, got {embedding!r}.")
    emb, pca, fused, latents, weights = _embed(
        data, model, embedding, k, n_comps, fusion, batch_size, scale, seed
    )
    distances, graph = knn_graph(emb, n_neighbors, seed)
    neighbors = {
        "connectivities_key": keys.connectivities,
        "distances_key": keys.distances,
        "params": {  # scanpy's NeighborsParams, for sc.tl.umap(..., neighbors_key=key)
            "n_neighbors": int(distances.indptr[1]) + 1,  # the cell itself counts, as in scanpy
            "method": "umap",
            "random_state": seed,
            "metric": "euclidean",
            "use_rep": keys.embedding,
        },
    }
    labels, info = _leiden_clusters(graph, emb, resolution, seed)
    if umap:  # computed before anything is written: no partial output if it fails
        xy = _umap_layout(data.obs_names, emb, distances, graph, neighbors, keys, seed)

    data.obsm[keys.embedding] = emb
    data.uns[keys.embedding_map] = pca
    data.obsm[keys.coef] = fused
    if weights is not None:
        data.obsm[keys.weights] = weights
    for m, z in latents.items():
        data.obsm[keys.latent(m)] = z
    data.obsp[keys.connectivities] = graph
    data.obsp[keys.distances] = distances
    data.uns[keys.key] = neighbors
    data.obs[keys.leiden] = labels
    evidence = {k: v for k, v in info.items() if k not in ("resolution", "n_clusters")}
    data.uns[keys.leiden] = {
        "params": {"resolution": info["resolution"]},
        "n_clusters": int(len(labels.categories)),
        "n_clusters_evidence": evidence,
    }
    if umap:
        data.obsm[keys.umap] = xy
    if n_clusters is not None:
        data.obs[keys.clusters(cluster_method)] = cluster(
            emb if cluster_method == "kmeans" else graph, n_clusters, cluster_method, seed
        )


def _embed(data, model, embedding, k, n_comps, fusion, batch_size, scale, seed) -> tuple:
    """``(embedding, its map, fused coefficients, latents, weights)`` of
    :func:`embed_and_cluster` (the map is what :func:`map_query` applies to new cells)."""
    if embedding == "latent":
        _, fused, latents, weights = _cluster.project_batches(
            data, model, None, k, fusion, batch_size, scale
        )
        pca = _cluster.latent_standardisation(model)
        if fusion == "reliability" and len(model.modality_names) > 1:
            pca["weights"] = model.input_reliability()
        emb = _cluster.joint_latent(latents, pca)
    elif embedding == "rebuilt":
        # A linear map of the coefficients, like the PCA: one pass, dense or top-k.
        pca = _cluster.rebuilt_projection(model)
        emb, fused, latents, weights = _cluster.project_batches(
            data, model, pca, k, fusion, batch_size, scale
        )
    elif k is None:
        # One pass: coefficients, latents and weights together.
        _, fused, latents, weights = _cluster.project_batches(
            data, model, None, None, fusion, batch_size, scale
        )
        emb, pca = _cluster.coefficient_pca(fused, n_comps, seed)
    else:
        emb, pca, fused, latents, weights = _cluster.streamed_coefficient_pca(
            data, model, n_comps, k, fusion, batch_size, scale
        )
    pca["anchors"] = np.asarray(model.anchor_names_, dtype=str)
    pca["embedding"] = embedding
    pca["fusion"] = fusion  # map_query fuses new cells the same way
    if scale is not None:
        pca["fusion_scale"] = scale  # new cells are weighed on the reference's scale

    return emb, pca, fused, latents, weights


def _leiden_clusters(graph, emb, resolution, seed) -> tuple[pd.Categorical, dict]:
    """Leiden clusters at ``resolution`` (a number, or a label-free rule) and its evidence."""
    if resolution == "auto":
        return _cluster.leiden_stable(graph, emb, seed=seed)
    if resolution == "silhouette":
        return leiden_auto(graph, emb, seed=seed)
    return leiden(graph, float(resolution), seed), {"resolution": float(resolution)}


def _umap_layout(obs_names, embedding, distances, graph, neighbors, keys: OutputKeys, seed):
    """:func:`scanpy.tl.umap` of a k-NN graph, shape ``(N, 2)``; nothing is written."""
    tmp = AnnData(obs=pd.DataFrame(index=pd.Index(obs_names).copy()))
    tmp.obsm[keys.embedding] = np.asarray(embedding)
    tmp.obsp[keys.connectivities] = graph.copy()  # UMAP zeroes its weakest edges in place
    if distances is not None:
        tmp.obsp[keys.distances] = distances
    tmp.uns[keys.key] = neighbors
    sc.tl.umap(tmp, neighbors_key=keys.key, random_state=seed)
    return tmp.obsm["X_umap"]


def umap(data: MuData | AnnData, key_added: str = KEY, seed: int | None = None) -> None:
    """UMAP of the k-NN graph of :func:`embed_and_cluster` into ``obsm["X_umap"]``.

    :func:`scanpy.tl.umap` on ``obsp["scmsi_connectivities"]``; ``key_added``: that of the
    :func:`embed_and_cluster` run (another prefix writes ``obsm["X_<key>_umap"]``).
    ``seed``: default the seed of that run. :func:`scmsi.pl.umap` calls this when the UMAP is
    missing; call it yourself (or ``embed_and_cluster(..., umap=True)``) to choose the seed.
    """
    keys = OutputKeys(key_added)
    needed = {"obsm": keys.embedding, "obsp": keys.connectivities, "uns": keys.key}
    missing = [f"{a}[{k!r}]" for a, k in needed.items() if k not in getattr(data, a)]
    if missing:
        raise KeyError(
            f"{', '.join(missing)} not found: run `scmsi.tl.embed_and_cluster(data, model"
            + ("" if key_added == KEY else f", key_added={key_added!r}")
            + ")` first; the UMAP is drawn from its k-NN graph."
        )
    neighbors = data.uns[keys.key]
    if seed is None:
        seed = int(neighbors.get("params", {}).get("random_state", 0))
    distances = data.obsp[keys.distances] if keys.distances in data.obsp else None
    data.obsm[keys.umap] = _umap_layout(
        data.obs_names,
        data.obsm[keys.embedding],
        distances,
        data.obsp[keys.connectivities],
        neighbors,
        keys,
        seed,
    )


def map_query(
    query: MuData | AnnData,
    model,
    reference: MuData | AnnData,
    label_key: str | None = None,
    n_neighbors: int = 15,
    batch_size: int | None = None,
    top_k: int | None | Literal["auto"] = "auto",
    key_added: str = KEY,
) -> None:
    """Place new cells in the reference's embedding, with no retraining.

    The query cells are expressed over the trained anchors (:meth:`scmsi.SCMSI.get_coefficients`;
    features are matched by name, modalities may be missing), and their fused coefficients are
    projected with the PCA that :func:`embed_and_cluster` fitted on the reference (and fused
    as there: ``uns["scmsi_embedding"]["fusion"]``), so
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
    top_k
        Sparse top-k coefficients for large queries, as in :func:`embed_and_cluster`.
    key_added
        The ``key_added`` of the reference's :func:`embed_and_cluster`; the query's keys are
        named the same way.
    """
    keys = OutputKeys(key_added)
    pca = reference.uns.get(keys.embedding_map)
    if pca is None:  # written before the key's rename
        pca = reference.uns.get(f"{key_added}_pca")
    if pca is None:
        raise KeyError(
            f"reference.uns['{keys.embedding_map}'] is missing: run "
            "`scmsi.tl.embed_and_cluster(reference, model)` on the reference first; its map is "
            "what new cells are projected with."
        )
    anchors = np.asarray(pca.get("anchors", []), dtype=str)
    if not np.array_equal(anchors, np.asarray(model.anchor_names_, dtype=str)):
        raise ValueError(
            "The reference embedding was computed with another model (different anchor cells): "
            "run `scmsi.tl.embed_and_cluster(reference, model)` with this model first."
        )
    k = _cluster.auto_top_k(query.n_obs, model.module.n_anchors, top_k)
    # References embedded before the fusion was recorded used equal weights.
    fusion = str(pca.get("fusion", "mean"))
    latent = pca.get("embedding") == "latent"
    emb, coef, latents, _ = _cluster.project_batches(
        query, model, None if latent else pca, k, fusion, batch_size, pca.get("fusion_scale")
    )
    if latent:
        emb = _cluster.joint_latent(latents, pca)
    query.obsm[keys.embedding] = emb
    query.obsm[keys.coef] = coef
    for m, z in latents.items():
        query.obsm[keys.latent(m)] = z
    if label_key is not None:
        transfer_labels(reference, query, label_key, n_neighbors, keys.embedding)


def transfer_labels(
    reference: MuData | AnnData,
    query: MuData | AnnData,
    label_key: str,
    n_neighbors: int = 15,
    use_rep: str = X_KEY,
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


# Former paths, kept for one release with a FutureWarning: the spatial tools' one public path
# is scmsi.spatial; the building blocks of embed_and_cluster are internal (scmsi._cluster).
_SPATIAL = ("refine_domains", "smooth", "spatial_domains")
_INTERNAL = (
    "AUTO_TOP_K",
    "DENSE_MAX_ENTRIES",
    "RESOLUTIONS",
    "auto_top_k",
    "coefficient_pca",
    "fuzzy_connectivities",
    "igraph_from_adjacency",
    "joint_latent",
    "knn",
    "latent_standardisation",
    "leiden_stable",
    "project_batches",
    "project_coefficients",
    "rebuilt_projection",
    "streamed_coefficient_pca",
)


def __getattr__(name: str):
    import warnings
    from importlib import import_module

    if name in _SPATIAL:
        home, why = "scmsi.spatial", f"use scmsi.spatial.{name}"
    elif name in _INTERNAL:
        home, why = "scmsi._cluster", "it is internal to embed_and_cluster"
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    warnings.warn(
        f"scmsi.tl.{name} will be removed from scmsi.tl in the next release: {why}.",
        FutureWarning,
        stacklevel=2,
    )
    return getattr(import_module(home), name)


__all__ = [
    "anchor_spectral_embedding",
    "cluster",
    "coefficient_embedding",
    "embed_and_cluster",
    "knn_graph",
    "leiden",
    "leiden_auto",
    "map_query",
    "transfer_labels",
    "umap",
]
