"""The spatial graph of spots and smoothing over it (O(N k), never N x N)."""

from __future__ import annotations

from typing import Literal

import numpy as np
from scipy import sparse

from .._constants import SPATIAL_KEY


def spatial_graph(
    coords: np.ndarray, n_neighs: int = 6, radius: float | Literal["auto"] | None = "auto"
):
    """Symmetric binary spatial graph of the ``n_neighs`` nearest spots, CSR ``(N, N)``.

    ``radius`` (in the units of ``coords``) drops neighbours further than it, so that spots at
    the tissue edge are not linked to the second ring. ``"auto"``: 1.3 x the median distance
    between nearest spots, which keeps exactly the first ring of a Visium hexagonal grid
    (neighbours at 1 spacing, next ring at 1.73) or of an ST square grid (1 vs 1.41); each
    spot keeps at least its nearest neighbour. None: plain k nearest neighbours.
    KD-tree: O(N k log N) time, O(N k) memory.
    """
    from sklearn.neighbors import NearestNeighbors

    coords = np.asarray(coords, dtype=np.float64)
    n = coords.shape[0]
    k = int(min(n_neighs, n - 1))
    if k < 1:
        return sparse.csr_matrix((n, n), dtype=np.float32)
    dist, idx = NearestNeighbors(n_neighbors=k + 1).fit(coords).kneighbors(coords)
    rows = np.repeat(np.arange(n), k)
    cols, d = idx[:, 1:].ravel(), dist[:, 1:].ravel()
    keep = cols != rows
    if radius == "auto":
        radius = 1.3 * float(np.median(dist[:, 1]))
    if radius is not None:
        keep &= (d <= float(radius)) | (np.tile(np.arange(k), n) == 0)
    g = sparse.csr_matrix((np.ones(keep.sum(), np.float32), (rows[keep], cols[keep])), shape=(n, n))
    g = g.maximum(g.T).tocsr()
    g.setdiag(0)
    g.eliminate_zeros()
    return g


def spatial_neighbors(
    adata,
    n_neighs: int = 6,
    radius: float | Literal["auto"] | None = "auto",
    spatial_key: str = SPATIAL_KEY,
    key_added: str = SPATIAL_KEY,
):
    """k-nearest-spot graph into ``obsp[f"{key_added}_connectivities"]`` (as squidpy names it).

    Parameters
    ----------
    adata
        AnnData/MuData with ``obsm[spatial_key]``.
    n_neighs
        Neighbours per spot (6 = the hexagonal ring of Visium; 4 for the square ST grid).
    radius
        Distance cut-off in coordinate units (see :func:`spatial_graph`).
    """
    g = spatial_graph(np.asarray(adata.obsm[spatial_key]), n_neighs, radius)
    adata.obsp[f"{key_added}_connectivities"] = g
    adata.uns[f"{key_added}_neighbors"] = {"params": {"n_neighs": n_neighs, "radius": radius}}
    return g


def _row_normalise(g) -> sparse.csr_matrix:
    g = sparse.csr_matrix(g, dtype=np.float32)
    deg = np.asarray(g.sum(1)).ravel()
    return sparse.diags((1.0 / np.maximum(deg, 1e-12)).astype(np.float32)) @ g


def smooth(x: np.ndarray, graph, alpha: float = 0.5, n_rounds: int = 3) -> np.ndarray:
    """Spatial smoothing ``x <- (1 - alpha) x + alpha * W x``, ``n_rounds`` times.

    ``W`` is the row-normalised ``graph``; spots without neighbours keep their values.
    ``alpha = 0`` or ``n_rounds = 0`` returns ``x`` unchanged. O(N k d) per round.
    """
    x = np.asarray(x, dtype=np.float32)
    if alpha <= 0 or n_rounds <= 0:
        return x
    if not 0 <= alpha <= 1:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}.")
    w = _row_normalise(graph)
    isolated = np.asarray(graph.sum(1)).ravel() == 0
    for _ in range(int(n_rounds)):
        nb = w @ x
        nb[isolated] = x[isolated]
        x = (1 - alpha) * x + alpha * nb
    return x.astype(np.float32)


def _graph_of(data, n_neighs: int) -> sparse.csr_matrix:
    key = f"{SPATIAL_KEY}_connectivities"
    if key in data.obsp:
        return sparse.csr_matrix(data.obsp[key])
    if SPATIAL_KEY not in data.obsm:
        raise KeyError("Need obsm['spatial'] (or obsp['spatial_connectivities']).")
    return spatial_graph(np.asarray(data.obsm[SPATIAL_KEY]), n_neighs)
