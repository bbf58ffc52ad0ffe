"""Anchor cells: the shared dictionary over which every cell is self-expressed.

Cost is O(N * n_anchors) for K-means and O(N * n_pcs * features) for PCA, so anchors never
need an N x N matrix. Above ``minibatch_threshold`` cells, mini-batch K-means keeps this near
linear in N; above ``max_pca_cells`` the PCA is fitted on a random subset and every cell is
projected a chunk at a time, so no transformed copy of the whole matrix is ever held.
"""

from __future__ import annotations

import numpy as np
import scanpy as sc
from scipy import sparse
from sklearn.cluster import KMeans, MiniBatchKMeans

from ._backed import in_memory, row_blocks


def default_n_anchors(n_cells: int) -> int:
    """Default anchor count: ``8 * sqrt(N)`` clipped to [50, 512] (and below N).

    Rare cell types need anchors of their own, which asks for many anchors on small data;
    per-step cost grows with the anchor count (their latents are encoded every step), which
    caps it on large data. 1,000 cells -> 253 anchors, 4,096 cells and above -> 512.
    """
    n = int(np.clip(round(8 * np.sqrt(n_cells)), 50, 512))
    return int(min(n, max(2, n_cells // 2)))


def lognormalize(x, target_sum: float = 1e4):
    """Library-size normalise and log1p, without touching ``x``."""
    x = sparse.csr_matrix(x, dtype=np.float32) if sparse.issparse(x) else np.asarray(x, np.float32)
    totals = np.asarray(x.sum(axis=1)).ravel()
    scale = target_sum / np.maximum(totals, 1e-12)
    if sparse.issparse(x):
        x = sparse.diags(scale.astype(np.float32)) @ x
        x.data = np.log1p(x.data)
        return x
    return np.log1p(x * scale[:, None])


def _idf(x) -> np.ndarray:
    """Inverse document frequency of binarised peaks, ``log1p(N / cells open per peak)``."""
    n_open = np.zeros(x.shape[1])
    for _, block in [(0, x)] if in_memory(x) else row_blocks(x):
        if sparse.issparse(block):
            block = sparse.csr_matrix(block)
            n_open += np.bincount(block.indices[block.data > 0], minlength=x.shape[1])
        else:
            n_open += (np.asarray(block) > 0).sum(axis=0)
    return np.log1p(x.shape[0] / np.maximum(n_open, 1.0))


def anchor_features(x, kind: str = "counts", idf: np.ndarray | None = None):
    """The matrix whose PCA anchors are chosen from, by modality type.

    counts/protein: log-normalised; accessibility: TF-IDF of binarised peaks (as LSI), log1p,
    with ``idf`` from the whole data when ``x`` is a block of its rows; continuous: as given
    (PCA centres it).
    """
    if kind in ("counts", "protein"):
        return lognormalize(x)
    if kind == "accessibility":
        b = sparse.csr_matrix(x, dtype=np.float32, copy=True)
        b.data = (b.data > 0).astype(np.float32)
        b.eliminate_zeros()
        idf = _idf(b) if idf is None else idf
        tf = sparse.diags(1.0 / np.maximum(np.asarray(b.sum(axis=1)).ravel(), 1.0)) @ b
        tfidf = sparse.csr_matrix(tf @ sparse.diags(idf.astype(np.float32)))
        tfidf.data = np.log1p(tfidf.data * 1e4)
        return tfidf
    if kind == "continuous":
        return (
            sparse.csr_matrix(x, dtype=np.float32)
            if sparse.issparse(x)
            else np.asarray(x, np.float32)
        )
    raise ValueError(f"Unknown modality type {kind!r}.")


def select_anchors(
    x,
    n_anchors: int,
    kind: str = "counts",
    n_pcs: int = 50,
    seed: int = 0,
    minibatch_threshold: int = 50_000,
    max_pca_cells: int = 100_000,
) -> np.ndarray:
    """Choose anchor cells: PCA of (log-normalised) data, K-means, nearest cell per centre.

    Parameters
    ----------
    x
        Data of one modality, shape ``(n_cells, n_features)``, dense or sparse.
    n_anchors
        Number of anchors ``A``.
    kind
        Modality type, which sets the transform before PCA (:func:`anchor_features`).
    n_pcs
        Principal components used for K-means.
    seed
        Random seed of PCA and K-means.
    minibatch_threshold
        Use mini-batch K-means above this many cells.
    max_pca_cells
        Above this many cells, or when ``x`` is backed (on disk), fit the PCA on at most this
        many random cells and project every cell a chunk at a time.

    Returns
    -------
    Sorted, unique cell indices, shape ``(A,)``.
    """
    n_cells = x.shape[0]
    n_comps = int(min(n_pcs, n_cells - 1, x.shape[1] - 1))
    if n_cells > max_pca_cells or not in_memory(x):  # backed data: read in chunks
        pcs = _subsampled_pca(x, kind, n_comps, min(max_pca_cells, n_cells), seed)
    else:
        pcs = sc.pp.pca(anchor_features(x, kind), n_comps=n_comps, random_state=seed)
    if n_cells > minibatch_threshold:
        km = MiniBatchKMeans(n_anchors, random_state=seed, n_init=3, batch_size=4096)
    else:
        km = KMeans(n_anchors, random_state=seed, n_init=1)
    labels = km.fit_predict(pcs)
    dist = np.linalg.norm(pcs - km.cluster_centers_[labels], axis=1)
    # Clusters are disjoint, so the closest member of each one is a distinct cell.
    order = np.lexsort((dist, labels))
    first = np.r_[True, labels[order][1:] != labels[order][:-1]]
    return np.sort(order[first])


def _subsampled_pca(
    x, kind: str, n_comps: int, n_fit: int, seed: int, chunk: int = 50_000
) -> np.ndarray:
    """PCs of all cells from a PCA fitted on ``n_fit`` random cells, shape ``(N, n_comps)``.

    Memory: the transformed subset plus one transformed chunk, instead of a transformed copy
    of all N cells (6 GB for 1M cells of sparse RNA).
    """
    rng = np.random.default_rng(seed)
    sub = np.sort(rng.choice(x.shape[0], n_fit, replace=False))
    idf = _idf(x) if kind == "accessibility" else None
    fit = anchor_features(x[sub], kind, idf)
    _, components, _, _ = sc.pp.pca(fit, n_comps=n_comps, random_state=seed, return_info=True)
    components = np.asarray(components, np.float32)
    offset = np.asarray(fit.mean(axis=0), np.float32).ravel() @ components.T
    del fit
    pcs = np.empty((x.shape[0], n_comps), np.float32)
    for start in range(0, x.shape[0], chunk):
        block = anchor_features(x[start : start + chunk], kind, idf)
        pcs[start : start + chunk] = np.asarray(block @ components.T) - offset
    return pcs
