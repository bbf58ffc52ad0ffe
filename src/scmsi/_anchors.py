"""Anchor cells: the shared dictionary over which every cell is self-expressed.

Cost is O(N * n_anchors) for K-means and O(N * n_pcs * features) for PCA, so anchors never
need an N x N matrix. Above ``minibatch_threshold`` cells, mini-batch K-means keeps this near
linear in N.
"""

from __future__ import annotations

import numpy as np
import scanpy as sc
from scipy import sparse
from sklearn.cluster import KMeans, MiniBatchKMeans


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


def anchor_features(x, kind: str = "counts"):
    """The matrix whose PCA anchors are chosen from, by modality type.

    counts/protein: log-normalised; accessibility: TF-IDF of binarised peaks (as LSI), log1p;
    continuous: as given (PCA centres it).
    """
    if kind in ("counts", "protein"):
        return lognormalize(x)
    if kind == "accessibility":
        b = sparse.csr_matrix(x, dtype=np.float32, copy=True)
        b.data = (b.data > 0).astype(np.float32)
        b.eliminate_zeros()
        idf = np.log1p(b.shape[0] / np.maximum(np.asarray(b.sum(axis=0)).ravel(), 1.0))
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

    Returns
    -------
    Sorted, unique cell indices, shape ``(A,)``.
    """
    n_cells = x.shape[0]
    logx = anchor_features(x, kind)
    n_comps = int(min(n_pcs, n_cells - 1, x.shape[1] - 1))
    pcs = sc.pp.pca(logx, n_comps=n_comps, random_state=seed)
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
