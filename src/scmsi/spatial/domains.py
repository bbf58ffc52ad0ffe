"""Spatial domains: clustering of scMSI's coefficients smoothed over the spatial graph."""

from __future__ import annotations

import logging
from typing import Literal

import numpy as np
import pandas as pd
from scipy import sparse

from .._constants import DOMAIN_KEY
from .._objective import SPATIAL_EMBEDDINGS, Fusion, SpatialEmbedding
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


METHODS = ("gmm", "kmeans")
GMM_N_INIT = 5


def tied_gmm(x: np.ndarray, n_clusters: int, seed: int = 0, n_init: int = GMM_N_INIT):
    """Gaussian mixture with one covariance shared by all components (mclust's ``EEE``, the
    clustering GraphST and STAGATE report with), on scikit-learn; best of ``n_init`` k-means++
    starts, seeded. Returns ``(labels (N,) int, fitted GaussianMixture)``.

    A shared covariance suits domains that are shifts of one another along a few axes (layers,
    tumour regions) better than k-means' spheres; one matrix is also stable with few spots
    per domain. O(N d^2 k) per EM step.
    """
    from sklearn.mixture import GaussianMixture

    gm = GaussianMixture(
        int(n_clusters),
        covariance_type="tied",
        n_init=int(n_init),
        reg_covar=1e-4,
        random_state=seed,
    )
    return gm.fit_predict(np.asarray(x, dtype=np.float64)), gm


N_DOMAINS_RANGE = (3, 15)
SILHOUETTE_SPOTS = 3000


def choose_n_domains(
    emb: np.ndarray,
    n_range: tuple[int, int] = N_DOMAINS_RANGE,
    method: Literal["gmm", "kmeans"] = "gmm",
    seed: int = 0,
) -> tuple[int, dict]:
    """Number of domains chosen without labels: the count in ``n_range`` (inclusive) whose
    clustering of ``emb`` (``method``, one start) has the best silhouette, on a seeded sample
    of at most 3,000 spots (O(3000^2 d) per count).

    Why not BIC: on real sections the mixture's BIC keeps falling up to any count tried (the
    domains are not Gaussian), so it chose the largest count on DLPFC (15 for 7 layers); the
    silhouette peaks near the layer count there (docs/spatial.md).

    Returns ``(n, {"criterion", "n_range", "scores"})``; ``scores`` is keyed by the count
    as a string, so that ``uns`` holding it can be written to .h5ad/.h5mu.
    """
    from sklearn.cluster import KMeans
    from sklearn.metrics import silhouette_score

    x = np.asarray(emb, dtype=np.float64)
    lo, hi = int(n_range[0]), int(min(n_range[1], x.shape[0] - 1))
    if hi < lo:
        raise ValueError(f"n_range {n_range} is empty for {x.shape[0]} spots.")
    rng = np.random.default_rng(seed)
    sample = rng.choice(x.shape[0], min(SILHOUETTE_SPOTS, x.shape[0]), replace=False)
    scores = {}
    for k in range(lo, hi + 1):
        if method == "gmm":
            labels = tied_gmm(x, k, seed, n_init=1)[0]
        else:
            labels = KMeans(k, n_init=1, random_state=seed).fit_predict(x)
        ok = len(np.unique(labels[sample])) > 1
        scores[k] = float(silhouette_score(x[sample], labels[sample])) if ok else -1.0
    best = max(scores, key=scores.get)
    scores = {str(k): s for k, s in scores.items()}  # HDF5 (uns) keys are strings
    return best, {"criterion": "silhouette", "n_range": [lo, hi], "scores": scores}


def _check_options(method, embedding, fusion, model, use_rep, n_domains, spatial_weight):
    """Every option of :func:`spatial_domains` checked before any work (one place)."""
    from .._fusion import check_fusion

    check_fusion(fusion)
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}.")
    if embedding is None:
        embedding = "pca" if use_rep is not None or model is None else "spectral"
    if embedding not in SPATIAL_EMBEDDINGS:
        raise ValueError(
            f"embedding must be one of {SPATIAL_EMBEDDINGS} or None, got {embedding!r}."
        )
    if embedding == "spectral" and (model is None or use_rep is not None):
        raise ValueError(
            "embedding='spectral' embeds the model's coefficients (a spot-anchor graph); "
            "with use_rep, use embedding='pca'."
        )
    if model is None and use_rep is None:
        raise ValueError("Pass a trained `model` or `use_rep`.")
    if n_domains is not None and int(n_domains) < 1:
        raise ValueError(f"n_domains must be a positive integer or None, got {n_domains!r}.")
    if not 0 <= spatial_weight <= 1:
        raise ValueError(f"spatial_weight must lie in [0, 1], got {spatial_weight}.")
    return embedding


def _fused_coefficients(data, model, fusion: str, key_added: str) -> tuple[np.ndarray, list]:
    """The model's coefficients fused over its informative modalities, ``(N, A)``."""
    from .._fusion import WEIGHTED_FUSIONS, fuse

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
    weights = None
    if fusion in WEIGHTED_FUSIONS:  # a one-modality model has no weights: 1, written all the same
        w = coefs.get("weights", np.ones((data.n_obs, len(names)), np.float32))
        weights = w[:, [names.index(m) for m in used]]
        weights /= np.maximum(weights.sum(1, keepdims=True), 1e-12)
        data.obsm[f"{key_added}_modality_weights"] = weights
    return fuse(fusion, [coefs[m] for m in used], weights=weights), used


def spatial_domains(
    data,
    model=None,
    n_domains: int | None = None,
    spatial_weight: float = 0.5,
    n_rounds: int = 3,
    n_neighs: int = 6,
    refine: bool = True,
    use_rep: str | None = None,
    n_comps: int | None = None,
    method: Literal["gmm", "kmeans"] = "gmm",
    fusion: Fusion = "mean",
    embedding: SpatialEmbedding | None = None,
    seed: int = 0,
    key_added: str = DOMAIN_KEY,
) -> pd.Categorical:
    """Spatial domains from scMSI's fused coefficients smoothed over the spatial graph.

    Modalities whose coefficients are degenerate (:func:`informative_modalities`) are left out
    of the fusion, with a warning; ``uns[key_added]["params"]["modalities"]`` lists those used.

    Coefficients (spots x anchors) -> :func:`smooth` (``spatial_weight``, ``n_rounds``) -> PCA
    or spectral embedding (``embedding``; ``n_comps``, default the model's latent size) ->
    ``n_domains`` clusters (tied Gaussian mixture or k-means), or, with ``n_domains=None``, a
    number of domains chosen without labels (:func:`choose_n_domains`) -> majority-vote
    refinement over spatial neighbours (``refine``).

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
    n_comps
        Embedding dimension (default: the model's ``n_latent``; 30 with ``use_rep``).
    method
        ``"gmm"``: :func:`tied_gmm` (one shared covariance, mclust EEE; 5 starts).
        ``"kmeans"``: k-means (10 starts).
    fusion
        A fusion of :data:`scmsi.FUSIONS`, computed by the model's own rule
        (:func:`scmsi._fusion.fuse`) over the modalities used: ``"mean"`` (equal weights),
        ``"product"``, ``"precision"`` or ``"adaptive"`` (per-spot modality weights,
        :meth:`scmsi.SCMSI.get_modality_weights`, renormalised over the modalities used).
        The default stays ``"mean"`` rather than the model's ``model.fusion``: the spatial
        benchmarks (docs/spatial.md) were measured with it.
    embedding
        ``"spectral"``: the spectral embedding of the spot-anchor graph that the smoothed
        coefficients define (:func:`scmsi.tl.anchor_spectral_embedding`, O(N A^2)); it weighs
        an anchor by how many spots use it, so a few hub anchors do not dominate as they do a
        PCA. ``"pca"``: PCA of the smoothed coefficients (or of ``obsm[use_rep]``). None:
        ``"spectral"`` for a model's coefficients, ``"pca"`` with ``use_rep``.
    seed
        Seed of the PCA and the clustering: the same seed gives the same domains.
    key_added
        Prefix of every key written.

    Returns
    -------
    The domains, a categorical of length N. Writes ``obs[key_added]`` (the same),
    ``uns[key_added]["params"]`` (settings, the modalities used, the label-free choice),
    ``obsm[f"X_{key_added}"]`` (the embedding clustered, ``(N, n_comps)``) and, with a model,
    ``obsm[f"{key_added}_coef"]`` / ``obsm[f"{key_added}_coef_smoothed"]`` (fused coefficients
    before/after smoothing, ``(N, A)``; kept apart from ``scmsi.tl``'s ``obsm["scmsi_coef"]``)
    and, with per-spot weights, ``obsm[f"{key_added}_modality_weights"]`` (spots x modalities
    used).
    """
    from sklearn.decomposition import PCA

    from .._cluster import anchor_spectral_embedding

    embedding = _check_options(method, embedding, fusion, model, use_rep, n_domains, spatial_weight)
    graph = _graph_of(data, n_neighs)
    info: dict = {
        "spatial_weight": spatial_weight,
        "n_rounds": n_rounds,
        "refine": refine,
        "embedding": embedding,
        "method": method,
    }
    if use_rep is not None:
        x = np.asarray(data.obsm[use_rep], dtype=np.float32)
        n_default = min(x.shape[1], 30)
    else:
        x, used = _fused_coefficients(data, model, fusion, key_added)
        data.obsm[f"{key_added}_coef"] = x
        n_default = model.module.n_latent
        info.update(modalities=used, fusion=fusion)
    xs = smooth(x, graph, spatial_weight, n_rounds)
    if use_rep is None:
        data.obsm[f"{key_added}_coef_smoothed"] = xs
    k = int(min(n_comps or n_default, xs.shape[1] - 1, xs.shape[0] - 1))
    if k < 1:
        emb = xs
    elif embedding == "spectral":
        emb = anchor_spectral_embedding(xs, k)
    else:
        emb = PCA(k, random_state=seed).fit_transform(xs).astype(np.float32)
    data.obsm[f"X_{key_added}"] = emb
    if n_domains is None:
        n_domains, choice = choose_n_domains(emb, method=method, seed=seed)
        info["label_free"] = choice
    info["n_domains"] = int(n_domains)
    if method == "gmm":
        labels = tied_gmm(emb, int(n_domains), seed)[0]
    else:
        from sklearn.cluster import KMeans

        labels = KMeans(int(n_domains), n_init=10, random_state=seed).fit_predict(emb)
    labels = labels.astype(str)
    if refine:
        labels = refine_domains(labels, graph)
    cats = sorted(np.unique(labels), key=lambda v: (len(v), v))
    out = pd.Categorical(labels, categories=cats)
    data.obs[key_added] = out
    data.uns[key_added] = {"params": info}
    return out
