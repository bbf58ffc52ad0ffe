"""Clustering and embedding of the fused affinity: the steps under :mod:`scmsi.tl`.

Embeddings of the cells x anchors coefficients (PCA, exact streamed PCA, landmark spectral),
the k-NN search, Leiden (seeded as scanpy's) with its label-free resolution choice, and
k-means/spectral clustering. Every function takes arrays (or a model to stream from) and
writes nothing on the user's data; :func:`scmsi.tl.embed_and_cluster` does the writing.
"""

from __future__ import annotations

import random
from contextlib import contextmanager
from typing import Literal

import numpy as np
import pandas as pd
import scanpy as sc
from anndata import AnnData
from mudata import MuData
from scipy import sparse
from sklearn.cluster import KMeans, SpectralClustering
from sklearn.decomposition import PCA
from sklearn.metrics import silhouette_score

from ._fusion import Fusion, top_k_sparse

RESOLUTIONS = tuple(np.round(np.arange(0.1, 2.01, 0.1), 2))
# top_k="auto": above this many cells x anchors (200 MB as float32), coefficients are kept
# sparse, with this many per cell.
DENSE_MAX_ENTRIES = 50_000_000
AUTO_TOP_K = 64


class _IgraphRNG:
    """igraph's random number generator drawn from a seeded numpy ``RandomState``.

    The draws scanpy's Leiden makes for a ``random_state``, so our labels equal scanpy's; the
    global :mod:`random` state is left alone. See :func:`igraph.set_random_number_generator`.
    """

    def __init__(self, seed: int):
        self._rng = np.random.RandomState(seed)

    def getrandbits(self, k: int) -> int:
        return self._rng.tomaxint() & ((1 << k) - 1)

    def randint(self, a: int, b: int) -> int:
        return self._rng.randint(a, b + 1)

    def __getattr__(self, attr: str):
        return getattr(self._rng, "normal" if attr == "gauss" else attr)


@contextmanager
def _igraph_seeded(seed: int):
    """Seed igraph's RNG for the block, then give it back Python's :mod:`random`."""
    import igraph

    igraph.set_random_number_generator(_IgraphRNG(seed))
    try:
        yield
    finally:
        igraph.set_random_number_generator(random)


def auto_top_k(n_cells: int, n_anchors: int, top_k: int | None | Literal["auto"]) -> int | None:
    """Resolve ``top_k="auto"``: None (dense) up to :data:`DENSE_MAX_ENTRIES` cells x anchors,
    else :data:`AUTO_TOP_K`; an integer or None is returned as it is."""
    if top_k != "auto":
        return top_k
    return None if n_cells * n_anchors <= DENSE_MAX_ENTRIES else AUTO_TOP_K


def _anchor_latent_stats(model) -> tuple[dict, dict, dict]:
    """The anchors' posterior mean latents, and their mean and sd per dimension, by modality."""
    import torch

    model.module.eval()
    with torch.inference_mode():
        za = model.module.anchor_latents()
    za = {m: za[m].cpu().numpy().astype(np.float64) for m in model.modality_names}
    mean = {m: y.mean(0) for m, y in za.items()}
    sd = {m: np.maximum(y.std(0), 1e-12) for m, y in za.items()}
    return za, mean, sd


def latent_standardisation(model) -> dict:
    """Centre and scale of :func:`joint_latent`: each modality's latent dimensions over the
    anchors, concatenated in ``model.modality_names`` order (``mean``, ``scale``: ``(M L,)``)."""
    _, mean, sd = _anchor_latent_stats(model)
    names = list(model.modality_names)
    return {
        "modalities": np.asarray(names, dtype=str),
        "mean": np.concatenate([mean[m] for m in names]).astype(np.float32),
        "scale": np.concatenate([sd[m] for m in names]).astype(np.float32),
    }


def joint_latent(latents: dict[str, np.ndarray], stats: dict) -> np.ndarray:
    """Every modality's latent, standardised (:func:`latent_standardisation`) and concatenated,
    ``(N, M * n_latent)``; with ``stats["weights"]`` (``(M,)``,
    :meth:`scmsi.SCMSI.input_reliability`) modality m's block is scaled by ``sqrt(M w_m)``, so
    that it holds the share ``w_m`` of the squared distances: one weight per modality, not per
    cell, since scaling a cell's blocks by its own weights moves it away from cells of its type
    whose weights differ. A cell lacking a modality has its rebuilt latent there (the
    anchors' latents weighted by the coefficients of the modalities it has)."""
    z = np.concatenate([latents[str(m)] for m in stats["modalities"]], 1)
    z = (z - stats["mean"]) / stats["scale"]
    if "weights" in stats:  # each modality's block scaled to its share of the distances
        n_mod = len(stats["modalities"])
        block = np.repeat(np.sqrt(n_mod * np.asarray(stats["weights"])), z.shape[1] // n_mod)
        z = z * block
    return z.astype(np.float32)


def rebuilt_projection(model) -> dict:
    """The affinity's embedding as a linear map of the coefficients: ``C @ Y``, ``(A,) -> (d,)``.

    ``Y`` (``A x (M * n_latent)``): the anchors' posterior mean latents in every modality, each
    dimension centred and scaled to unit variance over the anchors, concatenated. A cell's
    embedding ``sum_i c_{n,i} Y_i`` is its joint latent as the fused affinity rebuilds it from
    its neighbours (the self-expression ``z_hat = C z_anchor`` with the fused coefficients), so
    a modality's latent counts only through the neighbours the affinity picks. Returned in
    the layout of :func:`coefficient_pca` (``components`` ``(d, A)``, ``mean`` zeros), which
    :func:`project_coefficients` and :func:`map_query` apply.
    """
    za, mean, sd = _anchor_latent_stats(model)
    y = np.concatenate([(za[m] - mean[m]) / sd[m] for m in model.modality_names], 1)
    return {
        "components": y.T.astype(np.float32),
        "mean": np.zeros(y.shape[0], dtype=np.float32),
    }


def coefficient_embedding(coef, n_comps: int = 10, seed: int = 0) -> np.ndarray:
    """PCA of the fused coefficients, shape ``(N, n_comps)``.

    Cost O(N * A * n_comps): the affinity is never expanded to N x N. ``n_comps`` defaults to
    the latent size, the dimension every modality's view was compressed to.
    """
    n_comps = int(min(n_comps, coef.shape[1] - 1, coef.shape[0] - 1))
    return PCA(n_comps, random_state=seed).fit_transform(coef).astype(np.float32)


def anchor_spectral_embedding(coef, n_comps: int = 10) -> np.ndarray:
    """Spectral embedding of the bipartite cell-anchor graph ``coef``, shape ``(N, n_comps)``.

    Landmark spectral clustering (Chen & Cai 2011): ``Z = D^-1 C Lambda^-1/2`` with ``D`` the
    cells' and ``Lambda`` the anchors' total weight; the leading non-trivial left singular
    vectors of ``Z``, scaled by their singular values and normalised per cell (Ng, Jordan &
    Weiss). They are the eigenvectors of the cell-cell affinity ``Z Z^T`` that the
    coefficients define, computed from the A x A matrix ``Z^T Z``: O(N A^2), never N x N.
    Unlike PCA it weighs an anchor by how many cells use it, so a few hub anchors do not
    dominate. ``coef``: dense ``(N, A)``, non-negative.
    """
    c = np.asarray(coef, dtype=np.float64)
    z = c / np.maximum(c.sum(1, keepdims=True), 1e-12)
    z = z / np.sqrt(np.maximum(z.sum(0, keepdims=True), 1e-12))
    n_comps = int(min(n_comps, z.shape[1] - 1, z.shape[0] - 1))
    evals, evecs = np.linalg.eigh(z.T @ z)  # ascending
    v = evecs[:, ::-1][:, 1 : n_comps + 1]  # the leading vector is the trivial one
    emb = z @ v  # = U S
    emb /= np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
    return emb.astype(np.float32)


EXACT_KNN_MAX = 8192
"""Below this many cells the k-NN search is exact (brute force), above it approximate."""


def knn(
    embedding: np.ndarray, n_neighbors: int = 15, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Each cell's ``n_neighbors`` nearest cells (itself first), Euclidean.

    Exact brute force (scikit-learn) below :data:`EXACT_KNN_MAX` cells, as scanpy's default;
    above, approximate nearest neighbours with pynndescent and UMAP's settings, O(N log N),
    the same search :func:`scanpy.pp.neighbors` runs there. The exact search compiles nothing,
    so a first call in a fresh process costs no numba compilation.

    Returns
    -------
    indices, distances
        Shape ``(N, n_neighbors)``, sorted by distance; column 0 is the cell itself (distance
        0), also when other cells are exact duplicates of it.
    """
    x = np.ascontiguousarray(embedding, dtype=np.float32)
    n = len(x)
    if n < EXACT_KNN_MAX:
        from sklearn.neighbors import NearestNeighbors

        nn = NearestNeighbors(n_neighbors=n_neighbors, algorithm="brute", n_jobs=sc.settings.n_jobs)
        dist, idx = nn.fit(x).kneighbors(x)
    else:
        from pynndescent import NNDescent

        index = NNDescent(  # one more: pynndescent counts the cell itself, as sklearn does not
            x,
            n_neighbors=n_neighbors + 1,
            random_state=seed,
            n_jobs=sc.settings.n_jobs,
            n_trees=min(64, 5 + round(n**0.5 / 20.0)),
            n_iters=max(5, round(np.log2(n))),
            compressed=False,
        )
        idx, dist = (a[:, :n_neighbors] for a in index.neighbor_graph)
    # With duplicates the cell itself may not come first (or at all): put it there.
    rows = np.arange(n)[:, None]
    others = idx != rows
    order = np.argsort(~others, axis=1, kind="stable")[:, : n_neighbors - 1]  # others first
    idx = np.hstack([rows, np.take_along_axis(idx, order, 1)])
    dist = np.hstack([np.zeros((n, 1)), np.take_along_axis(dist, order, 1)])
    return idx.astype(np.int64), dist.astype(np.float32)


def fuzzy_connectivities(indices: np.ndarray, distances: np.ndarray) -> sparse.csr_matrix:
    """UMAP's fuzzy simplicial set of a k-NN graph: scanpy's ``connectivities``, in numpy.

    What :func:`scanpy.pp.neighbors` computes with ``umap.fuzzy_simplicial_set`` (McInnes et
    al. 2018): for each cell, ``rho`` is the distance to its nearest other cell and ``sigma``
    solves ``sum_j exp(-(d_j - rho) / sigma) = log2(k)`` by bisection (64 steps, tolerance
    1e-5, floored at 1e-3 times the mean distance); edge weights ``exp(-(d - rho) / sigma)``
    are then symmetrised by the fuzzy union ``w + w^T - w * w^T``. The same float32 arithmetic,
    vectorised over cells instead of compiled with numba (several seconds on a first call).

    ``indices``, ``distances``: :func:`knn`'s output, shape ``(N, k)``, the cell itself first.
    """
    d = np.ascontiguousarray(distances, dtype=np.float32)
    n, k = d.shape
    positive = d > 0
    first = positive.argmax(1)
    rho = np.where(positive.any(1), d[np.arange(n), first], 0).astype(np.float32)
    target = np.float64(np.log2(k))
    shifted = d - rho[:, None]
    with np.errstate(over="ignore"):  # exp of the skipped (d <= rho) terms; lo + hi at max
        sigma = _bisect_sigma(shifted, target, n, k)
    floor = np.where(rho > 0, d.mean(1), d.mean()).astype(np.float32) * np.float32(1e-3)
    sigma = np.maximum(sigma, floor)
    with np.errstate(over="ignore"):
        w = np.exp(-(shifted / sigma[:, None]))
    w = np.where((shifted <= 0) | (sigma[:, None] == 0), np.float32(1.0), w).astype(np.float32)
    w[indices == np.arange(n)[:, None]] = 0  # no self-loops
    graph = sparse.coo_matrix((w.ravel(), (np.repeat(np.arange(n), k), indices.ravel())), (n, n))
    graph.eliminate_zeros()
    graph = graph.tocsr()
    t = graph.T.tocsr()
    graph = graph + t - graph.multiply(t)
    graph.eliminate_zeros()
    return sparse.csr_matrix(graph, dtype=np.float32)


def _bisect_sigma(shifted: np.ndarray, target: float, n: int, k: int) -> np.ndarray:
    """UMAP's bisection for each cell's sigma, all cells at once (float32 as UMAP)."""
    fmax = np.float32(np.finfo(np.float32).max)
    lo = np.zeros(n, np.float32)
    hi = np.full(n, fmax, np.float32)
    mid = np.ones(n, np.float32)
    todo = np.ones(n, bool)
    for _ in range(64):
        psum = np.zeros(n, np.float32)
        for j in range(1, k):  # summed in UMAP's order, in float32
            dj = shifted[:, j]
            psum += np.where(dj > 0, np.exp(-(dj / mid)), np.float32(1.0))
        todo &= np.abs(psum.astype(np.float64) - target) >= 1e-5
        if not todo.any():
            break
        above = todo & (psum > target)
        below = todo & ~(psum > target)
        hi = np.where(above, mid, hi)
        lo = np.where(below, mid, lo)
        half = (lo + hi) / np.float32(2.0)
        mid = np.where(above | (below & (hi < fmax)), half, np.where(below, mid * 2, mid))
    return mid


def knn_graph(
    embedding: np.ndarray, n_neighbors: int = 15, seed: int = 0
) -> tuple[sparse.csr_matrix, sparse.csr_matrix]:
    """The k-NN graph of :func:`scanpy.pp.neighbors` (UMAP connectivities) without numba.

    Returns ``distances`` (each cell's ``n_neighbors - 1`` nearest other cells) and
    ``connectivities`` (:func:`fuzzy_connectivities`), both ``(N, N)`` CSR, as scanpy writes
    them to ``obsp``. Very small data use ``1 + N // 2`` neighbours, as scanpy does.
    """
    n = len(embedding)
    if n_neighbors > n:
        n_neighbors = 1 + n // 2
    idx, dist = knn(embedding, n_neighbors, seed)
    indptr = np.arange(0, n * (n_neighbors - 1) + 1, n_neighbors - 1)
    distances = sparse.csr_matrix((dist[:, 1:].ravel(), idx[:, 1:].ravel(), indptr), (n, n))
    return distances, fuzzy_connectivities(idx, dist)


def igraph_from_adjacency(graph):
    """Undirected weighted :class:`igraph.Graph` of a symmetric sparse affinity.

    The graph scanpy's Leiden builds (same edges, order and weights) but from arrays: scanpy's
    goes through a Python list of edge tuples, several GB and seconds per call at 1M cells,
    and :func:`leiden_auto` reuses this one for every resolution.
    """
    import igraph

    coo = sparse.coo_matrix(graph)
    keep = coo.data != 0
    g = igraph.Graph(
        n=graph.shape[0], edges=np.column_stack([coo.row[keep], coo.col[keep]]), directed=False
    )
    g.es["weight"] = coo.data[keep]
    return g


def leiden(graph, resolution: float = 1.0, seed: int = 0) -> pd.Categorical:
    """Leiden (igraph flavour, 2 iterations) on a symmetric sparse affinity graph.

    The same as :func:`scanpy.tl.leiden` with ``flavor="igraph", n_iterations=2,
    directed=False`` (same random state, same labels). ``graph`` may also be an
    :class:`igraph.Graph` from :func:`igraph_from_adjacency`, to reuse across calls.
    """
    import igraph

    g = graph if isinstance(graph, igraph.Graph) else igraph_from_adjacency(graph)
    with _igraph_seeded(seed):
        part = g.community_leiden(
            objective_function="modularity",
            weights="weight",
            resolution=resolution,
            n_iterations=2,
        )
    return pd.Categorical(np.asarray(part.membership).astype(str))


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
    g = igraph_from_adjacency(graph)  # built once for all resolutions
    for r in resolutions:
        labels = leiden(g, r, seed)
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


def _adjusted_rand_index(a: np.ndarray, b: np.ndarray) -> float:
    """Adjusted Rand index of two labelings given as non-negative integers.

    sklearn's ``adjusted_rand_score`` with the same formula (pair counts from the contingency
    table) but without its input validation and label encoding, which cost ~10 ms a call:
    :func:`leiden_stable` makes 120 calls, a third of its time on 1,000 cells.
    """
    a, b = np.asarray(a, dtype=np.int64), np.asarray(b, dtype=np.int64)
    n = a.size
    if n < 2:
        return 1.0
    table = np.bincount(a * (int(b.max()) + 1) + b).astype(np.float64)
    pairs = lambda c: float((c * (c - 1)).sum() / 2)  # noqa: E731
    both = pairs(table)
    rows = pairs(np.bincount(a).astype(np.float64))
    cols = pairs(np.bincount(b).astype(np.float64))
    total = n * (n - 1) / 2
    expected = rows * cols / total
    top = (rows + cols) / 2
    if top == expected:  # one cluster each, or every cell alone: sklearn returns 1
        return 1.0
    return (both - expected) / (top - expected)


def _knn_overlap(a: np.ndarray, b: np.ndarray, k: int = 15) -> float:
    """Mean share of each cell's ``k`` nearest neighbours (Euclidean) in ``a`` kept in ``b``.

    ``a`` and ``b``: the same cells, in the same order, in two embeddings (e.g. the joint
    latent at two epochs). 1 when every neighbourhood is unchanged; exact (brute force), so
    meant for a few thousand cells.
    """

    def neighbours(x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        sq = (x * x).sum(1)
        d = sq[:, None] + sq[None, :] - 2 * x @ x.T
        np.fill_diagonal(d, np.inf)  # a cell is not its own neighbour
        return np.sort(np.argpartition(d, k - 1, axis=1)[:, :k], axis=1)

    na, nb = neighbours(a), neighbours(b)
    kept = [np.intersect1d(x, y, assume_unique=True).size for x, y in zip(na, nb, strict=True)]
    return float(np.mean(kept) / k)


STABLE_RESOLUTIONS = tuple(np.round(np.geomspace(0.05, 2.0, 12), 3))


def leiden_stable(
    graph,
    embedding: np.ndarray,
    resolutions: tuple[float, ...] = STABLE_RESOLUTIONS,
    n_subsamples: int = 5,
    fraction: float = 0.8,
    max_cells: int = 10_000,
    seed: int = 0,
) -> tuple[pd.Categorical, dict]:
    """Leiden at the resolution whose clusters are the most stable under subsampling.

    For each resolution, Leiden is run on ``n_subsamples`` random subgraphs, each keeping a
    ``fraction`` of the cells (a different seed each), and the partitions are compared
    pairwise on the cells they share (adjusted Rand index). Clusters that reflect the data
    come back whatever cells are left out; clusters cut through a continuum move. The
    resolution with the highest mean ARI wins (ties, within 0.01: the higher silhouette on
    ``embedding``, then the lower resolution); resolutions that give one cluster are skipped.
    The same idea as CellCharter's ``ClusterAutoK`` (stability over repeated clusterings),
    with Leiden resolutions for the number of clusters; no labels are used.

    Above ``max_cells`` cells the selection runs on a 15-NN graph of a random ``max_cells``
    subsample of ``embedding`` (cost independent of N), and the chosen resolution is then
    applied to the whole ``graph``.

    Parameters
    ----------
    graph, embedding
        As in :func:`leiden_auto`: the ``(N, N)`` graph and the ``(N, d)`` coordinates it was
        built from.
    resolutions
        Candidate resolutions (default 12 values, geometric from 0.05 to 2).
    n_subsamples, fraction
        Subsampled clusterings per resolution and the share of cells each keeps.
    max_cells
        Cells the selection runs on.
    seed
        Seed of the subsamples and of Leiden.

    Returns
    -------
    labels, info
        Clusters at the chosen resolution (whole graph); ``info``: ``resolution``,
        ``n_clusters``, and the evidence per candidate: ``resolutions``, ``stability`` (mean
        pairwise ARI), ``n_clusters_per_resolution`` and ``silhouette``.
    """
    n = graph.shape[0]
    rng = np.random.default_rng(seed)
    sel_graph, sel_emb = graph, embedding
    if n > max_cells:
        keep = np.sort(rng.choice(n, max_cells, replace=False))
        sel_emb = np.asarray(embedding)[keep]
        tmp = AnnData(obs=pd.DataFrame(index=[str(i) for i in range(max_cells)]))
        tmp.obsm["X"] = sel_emb
        sc.pp.neighbors(tmp, n_neighbors=15, use_rep="X", random_state=seed)
        sel_graph = tmp.obsp["connectivities"]
    m = sel_graph.shape[0]
    g = igraph_from_adjacency(sel_graph)
    subs = [
        np.sort(rng.choice(m, max(2, int(fraction * m)), replace=False)).tolist()
        for _ in range(n_subsamples)
    ]
    subgraphs = [g.induced_subgraph(sub) for sub in subs]
    stability, n_found, sil = [], [], []
    for r in resolutions:
        parts = []
        for i, (sub, sg) in enumerate(zip(subs, subgraphs, strict=True)):
            lab = np.full(m, -1)
            lab[sub] = np.asarray(leiden(sg, r, seed + i)).astype(int)
            parts.append(lab)
        aris = []
        for a in range(n_subsamples):
            for b in range(a + 1, n_subsamples):
                both = (parts[a] >= 0) & (parts[b] >= 0)
                aris.append(_adjusted_rand_index(parts[a][both], parts[b][both]))
        full = np.asarray(leiden(g, r, seed))
        k = len(np.unique(full))
        n_found.append(k)
        stability.append(float(np.mean(aris)) if k > 1 else float("nan"))
        sil.append(float(silhouette_score(sel_emb, full)) if 1 < k < m else float("nan"))
    order = [
        i for i in range(len(resolutions)) if not np.isnan(stability[i])
    ]  # candidates with more than one cluster
    if not order:
        best = len(resolutions) - 1
    else:
        top = max(stability[i] for i in order)
        tied = [i for i in order if stability[i] >= top - 0.01]
        best = max(tied, key=lambda i: (np.nan_to_num(sil[i], nan=-1.0), -resolutions[i]))
    labels = leiden(graph, float(resolutions[best]), seed)
    info = {
        "method": "stability",
        "resolution": float(resolutions[best]),
        "n_clusters": int(len(labels.categories)),
        "resolutions": [float(r) for r in resolutions],
        "stability": stability,
        "n_clusters_per_resolution": n_found,
        "silhouette": sil,
        "n_subsamples": int(n_subsamples),
        "fraction": float(fraction),
        "cells_used": int(m),
    }
    return labels, info


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


def coefficient_pca(coef, n_comps: int = 10, seed: int = 0) -> tuple[np.ndarray, dict]:
    """PCA of the fused coefficients and the fitted projection, for mapping new cells.

    Returns the embedding ``(N, n_comps)`` and ``{"components": (n_comps, A), "mean": (A,)}``;
    the embedding is ``(coef - mean) @ components.T``, the projection :func:`map_query`
    applies to new cells, so reference and query share one space. ``coef`` may be dense or
    sparse (top-k): with N >= 10 A scikit-learn solves it from the A x A covariance, O(N A^2)
    dense or O(N k^2) sparse, without centring (densifying) a sparse matrix.
    """
    n_comps = int(min(n_comps, coef.shape[1] - 1, coef.shape[0] - 1))
    fit = PCA(n_comps, random_state=seed).fit(coef)
    pca = {
        "components": fit.components_.astype(np.float32),
        "mean": fit.mean_.astype(np.float32),
    }
    return project_coefficients(coef, pca), pca


def streamed_coefficient_pca(
    data: MuData | AnnData,
    model,
    n_comps: int = 10,
    top_k: int = AUTO_TOP_K,
    fusion: Fusion = "mean",
    batch_size: int | None = None,
    weight_scale: np.ndarray | None = None,
) -> tuple[np.ndarray, dict, sparse.csr_matrix, dict[str, np.ndarray], np.ndarray | None]:
    """Exact PCA of the fused coefficients of ``data`` without holding them as N x A.

    First pass (:meth:`scmsi.SCMSI.iter_coefficients`): the mean and the A x A second moment
    of the dense fused coefficients (float64 sums). The components are the leading
    eigenvectors of the covariance (signs as scikit-learn's: largest loading positive).
    Second pass (:func:`project_batches`): each minibatch is projected, and each cell's
    ``top_k`` largest coefficients and its latents are kept. The embedding equals
    :func:`coefficient_pca` of the dense matrix (to float precision); memory is
    O(N * (top_k + n_comps) + A^2), time two forward passes plus O(N A^2).

    Returns
    -------
    embedding ``(N, n_comps)``, the PCA (as :func:`coefficient_pca`), the top-k fused
    coefficients (CSR), ``{modality: latent (N, n_latent)}`` and the per-cell modality weights
    ``(N, M)`` of a weighted fusion (None for ``"mean"``).
    """
    n, total, gram, shift = 0, 0.0, 0.0, None
    for out in model.iter_coefficients(
        data, batch_size=batch_size, fusion=fusion, weight_scale=weight_scale
    ):
        # Moments about the first minibatch's mean, in float64: E[ff] - mean^2 would cancel.
        f = out["fused"].astype(np.float64)
        shift = f.mean(0) if shift is None else shift
        f -= shift
        n += len(f)
        total = total + f.sum(0)
        gram = gram + f.T @ f
    mean = total / n
    n_comps = int(min(n_comps, len(mean) - 1, n - 1))
    _, vecs = np.linalg.eigh(gram / n - np.outer(mean, mean))
    mean += shift
    components = vecs[:, ::-1][:, :n_comps].T
    top = np.abs(components).argmax(1)
    components *= np.sign(components[np.arange(n_comps), top])[:, None]
    pca = {"components": components.astype(np.float32), "mean": mean.astype(np.float32)}
    emb, coef, latents, weights = project_batches(
        data, model, pca, top_k, fusion, batch_size, weight_scale
    )
    return emb, pca, coef, latents, weights


def project_batches(
    data: MuData | AnnData,
    model,
    pca: dict | None,
    top_k: int | None = None,
    fusion: Fusion = "mean",
    batch_size: int | None = None,
    weight_scale: np.ndarray | None = None,
) -> tuple[
    np.ndarray | None, np.ndarray | sparse.csr_matrix, dict[str, np.ndarray], np.ndarray | None
]:
    """One pass over ``data``: projected fused coefficients, the coefficients, latents, weights.

    Returns the embedding ``(N, n_comps)`` (:func:`project_coefficients`; None when ``pca`` is
    None), the fused coefficients (dense, or each cell's ``top_k`` largest as CSR),
    ``{modality: latent (N, n_latent)}`` and the per-cell modality weights ``(N, M)`` of a
    weighted fusion (None for ``"mean"``). ``weight_scale``: as in
    :meth:`scmsi.SCMSI.iter_coefficients`.
    """
    emb, kept, weights = [], [], []
    latents = {m: [] for m in model.modality_names}
    for out in model.iter_coefficients(
        data, batch_size=batch_size, fusion=fusion, latent=True, weight_scale=weight_scale
    ):
        if pca is not None:
            emb.append(project_coefficients(out["fused"], pca))
        kept.append(out["fused"] if top_k is None else top_k_sparse(out["fused"], top_k))
        if "weights" in out:
            weights.append(out["weights"])
        for m, z in out["latent"].items():
            latents[m].append(z)
    coef = np.concatenate(kept) if top_k is None else sparse.csr_matrix(sparse.vstack(kept))
    return (
        np.concatenate(emb) if emb else None,
        coef,
        {m: np.concatenate(v) for m, v in latents.items()},
        np.concatenate(weights) if weights else None,
    )


def project_coefficients(coef, pca: dict) -> np.ndarray:
    """Project fused coefficients (dense or sparse) with a stored PCA
    (``uns["scmsi_embedding"]``)."""
    components = np.asarray(pca["components"], dtype=np.float32).T
    mean = np.asarray(pca["mean"], dtype=np.float32)
    if sparse.issparse(coef):  # (C - mean) W = C W - mean W: C stays sparse
        return (np.asarray(coef @ components) - mean @ components).astype(np.float32)
    coef = np.asarray(coef, dtype=np.float32)
    return ((coef - mean) @ components).astype(np.float32)
