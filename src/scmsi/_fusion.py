"""Fusion of the modalities' self-expressive coefficients into one cell-anchor affinity.

The fusion rules (:data:`FUSIONS`, typed :data:`Fusion`), their per-cell modality weights
(cross-rebuild ``"adaptive"``, inverse-variance ``"precision"``) and the sparse top-k
truncation of coefficient matrices. Pure numpy/torch on arrays: the model
(:meth:`scmsi.SCMSI.iter_coefficients`) computes the inputs, ``tl`` and ``spatial`` call it.
"""

from __future__ import annotations

from typing import Literal, get_args

import numpy as np
import torch
from scipy import sparse

from ._objective import FUSIONS, Fusion

# Posterior draws per cell for the precision fusion's variances (sd of a variance estimate
# from 25 draws: about 30 %, small next to the spread of the variances between modalities).
N_WEIGHT_DRAWS = 25


def check_fusion(fusion, allow_none: bool = False) -> None:
    """Raise a ValueError that names the valid fusions."""
    if fusion not in FUSIONS and not (allow_none and fusion is None):
        raise ValueError(f"fusion must be one of {FUSIONS}, got {fusion!r}.")


WeightMethod = Literal["reliability", "adaptive", "precision"]
"""The fusions whose per-cell modality weights :meth:`scmsi.SCMSI.get_modality_weights` gives."""
WEIGHTED_FUSIONS: tuple[str, ...] = get_args(WeightMethod)


def check_weight_method(method) -> None:
    """Raise a ValueError that names the fusions with per-cell weights."""
    if method not in get_args(WeightMethod):
        raise ValueError(f"method must be one of {WEIGHTED_FUSIONS}, got {method!r}.")


def fusion_scale(
    model,
    data,
    fusion: Fusion | None,
    indices=None,
    batch_size: int | None = None,
    scale: np.ndarray | None = None,
) -> np.ndarray | None:
    """The ``scale`` the fusion's weights need before any minibatch is fused, or None.

    Adaptive weights divide each modality's rebuild errors by their median over *all* cells
    (:func:`error_scale`), so that statistic takes one pass over ``data`` first; every later
    pass then fuses batch by batch. A ``scale`` given (e.g. the reference's, for new cells)
    is returned as it is; other fusions, and a one-modality model, need none.
    """
    if scale is not None or fusion != "adaptive" or len(model.modality_names) < 2:
        return scale
    return model.get_modality_weights(data, indices, batch_size, method="adaptive").attrs["scale"]


def fuse_coefficients(
    coefs: list[np.ndarray],
    observed: list[np.ndarray] | None = None,
    weights: np.ndarray | None = None,
) -> np.ndarray:
    """Weighted mean of row-normalised coefficient matrices, shape ``(N, A)``; rows sum to 1.

    ``observed``: one bool ``(N,)`` per matrix; each cell averages only the modalities it has.
    ``weights``: ``(N, M)`` per-cell modality weights; None weighs modalities equally.
    """
    n, n_mod = coefs[0].shape[0], len(coefs)
    w = np.ones((n, n_mod), np.float32) if weights is None else np.asarray(weights, np.float32)
    if observed is not None:
        w = w * np.stack([np.asarray(o, np.float32) for o in observed], 1)
    w = w / np.maximum(w.sum(1, keepdims=True), 1e-12)
    fused = np.zeros_like(coefs[0], dtype=np.float32)
    for i, c in enumerate(coefs):
        fused += w[:, i : i + 1] * c / np.maximum(c.sum(1, keepdims=True), 1e-12)
    return fused


def product_fusion(
    coefs: list[np.ndarray],
    observed: list[np.ndarray] | None = None,
    weights: np.ndarray | None = None,
) -> np.ndarray:
    """Product of the modalities' anchor distributions, renormalised, shape ``(N, A)``.

    ``fused_n ∝ prod_m c^m_n`` over the modalities cell n has (``observed``), computed as a
    softmax of summed log-coefficients. For softmax coefficients ``c^m ∝ exp(-d_m)`` it is
    ``exp(-sum_m d_m)``: a kernel on the concatenated latents, in which a modality that does
    not tell two anchors apart leaves the other's preference intact instead of diluting it
    (as a mean does). ``weights`` (``(N, M)``) raise each distribution to that power; None
    gives each modality power 1. A cell with one modality gets that modality's row exactly.
    Where the modalities' supports do not overlap (ReLU coefficients with exact zeros), zeros
    count as 1e-30 so that the row is still a distribution.
    """
    n_mod = len(coefs)
    w = np.ones((coefs[0].shape[0], n_mod), np.float64)
    if weights is not None:
        w = w * np.asarray(weights, np.float64)
    if observed is not None:
        w = w * np.stack([np.asarray(o, np.float64) for o in observed], 1)

    def summed_log(floor: float) -> np.ndarray:
        total = np.zeros(np.shape(coefs[0]), np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            for i, c in enumerate(coefs):
                logc = np.log(np.maximum(np.asarray(c, np.float64), floor))
                total += np.where(w[:, i : i + 1] > 0, w[:, i : i + 1] * logc, 0.0)
        return total

    log = summed_log(0.0)
    dead = ~np.isfinite(log.max(1))
    if dead.any():
        log[dead] = summed_log(1e-30)[dead]
    log -= log.max(1, keepdims=True)
    fused = np.exp(log)
    return (fused / fused.sum(1, keepdims=True)).astype(np.float32)


def top_k_sparse(coef: np.ndarray, k: int) -> sparse.csr_matrix:
    """Each row's ``k`` largest entries of ``coef`` ``(N, A)`` as a float32 CSR matrix.

    Exact zeros are dropped (self-expressive coefficients are thresholded, so rows often have
    fewer than ``k`` non-zeros); ties at the k-th value are broken arbitrarily.
    """
    coef = np.asarray(coef, dtype=np.float32)
    n, a = coef.shape
    if k < a:
        cols = np.argpartition(-coef, k - 1, axis=1)[:, :k]
    else:
        cols = np.broadcast_to(np.arange(a), (n, a))
    vals = np.take_along_axis(coef, cols, axis=1)
    rows = np.broadcast_to(np.arange(n)[:, None], cols.shape)
    nz = vals != 0
    out = sparse.csr_matrix((vals[nz], (rows[nz], cols[nz])), shape=(n, a), dtype=np.float32)
    out.sort_indices()
    return out


def _cross_rebuild_errors(inf: dict, names: list[str]) -> np.ndarray:
    """``err[n, m, m'] = ||z^m'_n - c~^m_n Z^m'_anchor||^2`` for one minibatch, ``(B, M, M)``.

    NaN where cell n lacks modality m or m': its latent there is itself a rebuild, so the
    error would be zero by construction, not evidence.
    """
    out = []
    for m in names:
        c = inf["coef"][m]
        c = c / c.sum(-1, keepdim=True).clamp(min=1e-12)
        row = [(inf["z"][t] - c @ inf["z_anchor"][t]).pow(2).sum(-1) for t in names]
        out.append(torch.stack(row, -1))
    err = torch.stack(out, 1).cpu().numpy()
    obs = np.stack([inf["observed"][m].cpu().numpy() for m in names], 1)  # (B, M)
    err[~(obs[:, :, None] & obs[:, None, :])] = np.nan
    return err


def error_scale(errors: np.ndarray) -> np.ndarray:
    """Median own-rebuild error per modality ``(M,)`` over the cells that have it."""
    own = np.nanmedian(np.einsum("nmm->nm", errors), axis=0)
    return np.where(np.isfinite(own), np.maximum(own, 1e-12), 1.0)


def modality_weights(errors: np.ndarray, scale: np.ndarray | None = None) -> np.ndarray:
    """Per-cell modality weights ``(N, M)`` from cross-rebuild errors ``(N, M, M)``.

    Each target modality's errors are divided by ``scale`` (default :func:`error_scale`: the
    median error of its own rebuild), so modalities with large or small latent spreads are
    comparable; ``softmax(-mean score)``. NaN errors (missing modalities) are left out; a
    modality a cell lacks gets weight 0.
    """
    own = error_scale(errors) if scale is None else np.asarray(scale, dtype=np.float64)
    scaled = errors / own[None, None, :]
    known = np.isfinite(scaled)
    score = np.where(known, scaled, 0.0).sum(-1) / np.maximum(known.sum(-1), 1)  # (N, M)
    score = np.where(known.any(-1), score, np.inf)
    best = score.min(1, keepdims=True)
    w = np.exp(-(score - np.where(np.isfinite(best), best, 0.0)))
    w[~np.isfinite(best[:, 0])] = 1.0  # a cell with no modality: equal (unused) weights
    return (w / w.sum(1, keepdims=True)).astype(np.float32)


# Temperature of the reliability weights: a difference of 0.1 in neighbourhood capture (a tenth
# of the way from random anchors to the nearest ones) multiplies a modality's weight by e.
RELIABILITY_TEMPERATURE = 0.1


def reliability_weights(
    kappa: dict[tuple[str, str], torch.Tensor],
    names: list[str],
    observed: dict[str, torch.Tensor],
) -> np.ndarray:
    """Per-cell modality weights ``(B, M)`` from neighbourhood capture
    (:func:`~scmsi._selfexpression.neighbourhood_capture`): modality m's score is the mean of
    ``kappa[m, t]`` over the other modalities t the cell has, the weights
    ``softmax_m(score / RELIABILITY_TEMPERATURE)`` over the modalities it has. A cell with one
    modality gets weight 1 there; a one-modality model, weight 1.
    """
    obs = torch.stack([observed[m] for m in names], -1)  # (B, M)
    if len(names) < 2:
        return obs.float().cpu().numpy()
    scores = []
    for m in names:
        others = [kappa[m, t] * observed[t] for t in names if t != m]
        n_other = sum(observed[t].float() for t in names if t != m)
        scores.append(sum(others) / n_other.clamp_min(1.0))
    score = torch.stack(scores, -1) / RELIABILITY_TEMPERATURE
    score = score.masked_fill(~obs, float("-inf"))
    w = torch.softmax(score, -1)
    w = torch.where(obs.any(-1, keepdim=True), w, torch.full_like(w, 1.0 / len(names)))
    return torch.nan_to_num(w, nan=0.0).cpu().numpy().astype(np.float32)


# The joint latent's modality weights are read off each modality's own input: at most this many
# cells (a dataset-level mean, so a subsample answers it), ranked against this many of them.
INPUT_RELIABILITY_CELLS = 5000
INPUT_RELIABILITY_REFERENCE = 500
N_CAPTURE_NEIGHBOURS = 10


def input_reliability(pcs: dict[str, np.ndarray], seed: int = 0) -> np.ndarray:
    """Dataset-level modality weights ``(M,)`` from each modality's own input PCs.

    ``pcs``: ``{modality: (n, d)}`` for the same n cells. As
    :func:`~scmsi._selfexpression.neighbourhood_capture`, but on the data rather than the
    latents: ``kappa[s, t]`` = 1 - 2 x the mean rank, among ``INPUT_RELIABILITY_REFERENCE``
    reference cells ordered by distance in t's PCs, of the cell's
    ``N_CAPTURE_NEIGHBOURS`` nearest reference cells in s's PCs. The per-cell weights of
    :func:`reliability_weights`, averaged over cells. Read on the inputs because the directed
    agreement makes each student's latent neighbourhoods copy its teacher's: after training,
    capture between latents no longer says which view knew the cells better.
    """
    from scipy.spatial.distance import cdist

    names = list(pcs)
    n = len(next(iter(pcs.values())))
    rng = np.random.default_rng(seed)
    ref = rng.choice(n, min(INPUT_RELIABILITY_REFERENCE, n), replace=False)
    dist, rank = {}, {}
    for m, x in pcs.items():
        d = cdist(x, x[ref])
        d[ref, np.arange(len(ref))] = np.inf  # a cell is not its own neighbour
        dist[m] = d
        rank[m] = d.argsort(1).argsort(1) / max(len(ref) - 1, 1)
    k = min(N_CAPTURE_NEIGHBOURS, len(ref) - 1)
    kappa = {}
    for s in names:
        top = np.argpartition(dist[s], k - 1, axis=1)[:, :k]
        for t in names:
            if t != s:
                captured = 1.0 - 2.0 * np.take_along_axis(rank[t], top, 1).mean(1)
                kappa[s, t] = torch.as_tensor(captured)
    observed = {m: torch.ones(n, dtype=torch.bool) for m in names}
    w = reliability_weights(kappa, names, observed).mean(0)
    return (w / w.sum()).astype(np.float32)


def precision_weights(var: np.ndarray) -> np.ndarray:
    """Inverse-variance weights ``(N, M)`` from per-cell variances ``(N, M)``; ``inf`` (a
    modality the cell lacks) gets weight 0; a cell with no finite variance gets equal weights.
    """
    prec = np.where(np.isfinite(var), 1.0 / np.maximum(var, 1e-12), 0.0)
    total = prec.sum(1, keepdims=True)
    return np.where(total > 0, prec / np.where(total > 0, total, 1.0), 1.0 / var.shape[1]).astype(
        np.float32
    )


def fuse(
    fusion: Fusion,
    coefs: list[np.ndarray],
    observed: list[np.ndarray] | None = None,
    weights: np.ndarray | None = None,
) -> np.ndarray:
    """The fused affinity ``(N, A)`` of ``fusion``: :func:`product_fusion` for ``"product"``
    and ``"reliability"``, else :func:`fuse_coefficients` (``weights``: the per-cell modality
    weights of ``"reliability"``/``"precision"``/``"adaptive"``). The one dispatcher: the
    model and ``spatial`` call it."""
    check_fusion(fusion)
    rule = product_fusion if fusion in ("product", "reliability") else fuse_coefficients
    return rule(coefs, observed, weights)
