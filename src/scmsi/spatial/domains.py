"""Spatial domains: clustering of scMSI's coefficients smoothed over the spatial graph."""

from __future__ import annotations

import logging
from typing import Literal

import anndata as ad
import numpy as np
import pandas as pd
from scipy import sparse

from ._constants import DOMAIN_KEY
from .graph import _graph_of, smooth

logger = logging.getLogger(__name__)


def refine_domains(labels, graph) -> np.ndarray:
    """Majority vote over spatial neighbours: a spot takes the label that more than half of its
    neighbours share when its own label differs (SpaGCN's refinement). One pass, O(N k)."""
    labels = np.asarray(labels).astype(str)
    g = sparse.csr_matrix(graph)
    out = labels.copy()
    for n in range(g.shape[0]):
        nb = g.indices[g.indptr[n] : g.indptr[n + 1]]
        if len(nb) == 0:
            continue
        vals, counts = np.unique(labels[nb], return_counts=True)
        j = counts.argmax()
        if counts[j] > len(nb) / 2 and vals[j] != labels[n]:
            out[n] = vals[j]
    return out


def informative_modalities(
    coefs: dict[str, np.ndarray], min_anchors: float = 2.0, min_distinct: float = 0.05
) -> tuple[list[str], list[str]]:
    """Split modalities into those whose coefficients carry an affinity and degenerate ones.

    A modality is degenerate when its self-expression fell into the dead-ReLU corner: each
    spot keeps fewer than ``min_anchors`` anchors on average *and* the best anchor is one of
    fewer than ``min_distinct`` x A distinct anchors over all spots (a "hub" anchor expresses
    everyone). Averaging such rows into the fused affinity only adds a near-constant one-hot
    column. Label-free; if every modality is degenerate, all are kept.
    """
    names = [m for m in coefs if m not in ("fused", "observed")]
    bad = []
    for m in names:
        c = np.asarray(coefs[m])
        nnz = float((c > 0).sum(1).mean())
        distinct = len(np.unique(c.argmax(1))) / c.shape[1]
        if nnz < min_anchors and distinct < min_distinct:
            bad.append(m)
    good = [m for m in names if m not in bad]
    return (good, bad) if good else (names, [])


def spatial_domains(
    data,
    model=None,
    n_domains: int | None = None,
    spatial_weight: float = 0.5,
    n_rounds: int = 3,
    n_neighs: int = 6,
    refine: bool = False,
    use_rep: str | None = None,
    n_comps: int | None = None,
    method: Literal["kmeans", "gmm"] = "kmeans",
    fusion: Literal["mean", "precision", "adaptive"] = "mean",
    embedding: Literal["spectral", "pca"] | None = None,
    seed: int = 0,
    key_added: str = DOMAIN_KEY,
) -> pd.Categorical:
    """Spatial domains from scMSI's fused coefficients smoothed over the spatial graph.

    Modalities whose coefficients are degenerate (:func:`informative_modalities`) are left out
    of the fusion, with a warning; ``uns[key_added]["params"]["modalities"]`` lists those used.

    Coefficients (cells x anchors) -> :func:`smooth` (``spatial_weight``, ``n_rounds``) -> PCA
    or spectral embedding (``embedding``; ``n_comps``, default the model's latent size) ->
    ``n_domains`` clusters (Gaussian mixture or k-means), or, with ``n_domains=None``, Leiden
    on a 15-NN graph of the embedding at the resolution with the best silhouette
    (:func:`scmsi.tl.leiden_auto`, label-free) -> optional majority-vote refinement over
    spatial neighbours.

    Parameters
    ----------
    data
        MuData/AnnData the model was set up with, with ``obsm["spatial"]``.
    model
        Trained :class:`scmsi.SCMSI`; or None with ``use_rep``.
    n_domains
        Number of domains; None = label-free choice.
    spatial_weight
        ``alpha`` of :func:`smooth`; 0 switches spatial smoothing off.
    n_rounds
        Smoothing rounds.
    n_neighs
        Spatial neighbours when ``obsp["spatial_connectivities"]`` is absent.
    refine
        Majority vote over spatial neighbours (:func:`refine_domains`).
    use_rep
        Cluster ``obsm[use_rep]`` (smoothed the same way) instead of the model's coefficients.
    method
        ``"kmeans"`` (n_init=10; stable over seeds) or ``"gmm"`` (full-covariance Gaussian
        mixture, as mclust in STAGATE/GraphST; more variable over seeds here); used only with
        ``n_domains``.
    fusion
        ``"mean"`` (equal weights), ``"precision"`` or ``"adaptive"`` (per-spot modality
        weights, :meth:`scmsi.SCMSI.get_modality_weights`, renormalised over the modalities
        used).
    embedding
        ``"spectral"``: the spectral embedding of the spot-anchor graph that the smoothed
        coefficients define (:func:`scmsi.tl.anchor_spectral_embedding`, O(N A^2)); it weighs
        an anchor by how many spots use it, so a few hub anchors do not dominate as they do a
        PCA. ``"pca"``: PCA of the smoothed coefficients (or of ``obsm[use_rep]``). None:
        ``"spectral"`` for a model's coefficients, ``"pca"`` with ``use_rep``.

    Writes ``obs[key_added]``, ``obsm["X_scmsi_spatial"]`` (embedding) and, with a model,
    ``obsm["scmsi_coef"]`` / ``obsm["scmsi_coef_smoothed"]`` (and, with per-spot
    weights, ``obsm["scmsi_modality_weights"]``: spots x modalities used).
    """
    from sklearn.decomposition import PCA

    from .._model import check_fusion
    from ..tl import anchor_spectral_embedding, cluster, leiden_auto

    check_fusion(fusion)
    if embedding is None:
        embedding = "pca" if use_rep is not None or model is None else "spectral"
    if embedding not in ("pca", "spectral"):
        raise ValueError(f"embedding must be 'spectral', 'pca' or None, got {embedding!r}.")
    if embedding == "spectral" and (model is None or use_rep is not None):
        raise ValueError(
            "embedding='spectral' embeds the model's coefficients (a spot-anchor graph); "
            "with use_rep, use embedding='pca'."
        )
    graph = _graph_of(data, n_neighs)
    if use_rep is not None:
        x = np.asarray(data.obsm[use_rep], dtype=np.float32)
        n_default = min(x.shape[1], 30)
    elif model is not None:
        # one pass: a weighted fusion's per-spot weights come with the coefficients
        coefs = model.get_coefficients(data, return_all=True, fusion=fusion)
        names = model.modality_names
        used, dropped = informative_modalities({m: coefs[m] for m in names})
        if dropped:
            logger.warning(
                "Coefficients of %s are degenerate (each spot expressed by about one anchor, "
                "the same for most spots): domains use %s only.",
                dropped,
                used,
            )
        from .._model import fuse_coefficients

        weights = None
        if fusion != "mean":  # a one-modality model has no weights: 1, written all the same
            w = coefs.get("weights", np.ones((data.n_obs, len(names)), np.float32))
            weights = w[:, [names.index(m) for m in used]]
            weights /= np.maximum(weights.sum(1, keepdims=True), 1e-12)
            data.obsm["scmsi_modality_weights"] = weights
        x = fuse_coefficients([coefs[m] for m in used], weights=weights)
        data.obsm["scmsi_coef"] = x
        n_default = model.module.n_latent
    else:
        raise ValueError("Pass a trained `model` or `use_rep`.")
    xs = smooth(x, graph, spatial_weight, n_rounds)
    if model is not None and use_rep is None:
        data.obsm["scmsi_coef_smoothed"] = xs
    k = int(min(n_comps or n_default, xs.shape[1] - 1, xs.shape[0] - 1))
    if k < 1:
        emb = xs
    elif embedding == "spectral":
        emb = anchor_spectral_embedding(xs, k)
    else:
        emb = PCA(k, random_state=seed).fit_transform(xs).astype(np.float32)
    data.obsm["X_scmsi_spatial"] = emb
    info: dict = {
        "spatial_weight": spatial_weight,
        "n_rounds": n_rounds,
        "refine": refine,
        "embedding": embedding,
    }
    if model is not None and use_rep is None:
        info.update(modalities=used, fusion=fusion)
    if n_domains is not None:
        if method == "gmm":
            from sklearn.mixture import GaussianMixture

            labels = GaussianMixture(
                int(n_domains), covariance_type="full", random_state=seed, reg_covar=1e-4
            ).fit_predict(emb)
            labels = labels.astype(str)
        else:
            labels = np.asarray(cluster(emb, int(n_domains), "kmeans", seed))
        info["method"] = method
    else:
        import scanpy as sc

        tmp = ad.AnnData(obs=pd.DataFrame(index=[str(i) for i in range(emb.shape[0])]))
        tmp.obsm["X"] = emb
        sc.pp.neighbors(tmp, n_neighbors=15, use_rep="X", random_state=seed)
        labels, lei = leiden_auto(tmp.obsp["connectivities"], emb, seed=seed)
        labels = np.asarray(labels).astype(str)
        info.update(method="leiden_auto", resolution=lei["resolution"])
    if refine:
        labels = refine_domains(labels, graph)
    cats = sorted(np.unique(labels), key=lambda v: (len(v), v))
    out = pd.Categorical(labels, categories=cats)
    data.obs[key_added] = out
    data.uns[key_added] = {"params": info}
    return out
