"""Model input from a spatial AnnData: expression, image features and the niche."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
from scipy import sparse

from .._constants import CONTEXT_LAYER, CONTEXT_LAYERS_KEY, MODALITY_TYPES_KEY, SPATIAL_KEY
from .graph import _row_normalise, spatial_graph
from .image import image_features


def _standardise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    sd = x.std(0)
    return ((x - x.mean(0)) / np.where(sd > 1e-8, sd, 1.0)).astype(np.float32)


def _continuous(x: np.ndarray, obs_names, prefix: str) -> ad.AnnData:
    """A continuous modality with feature names of its own (``image_0``, ``niche_0``...), so
    that the MuData's variables stay unique."""
    var = pd.DataFrame(index=[f"{prefix}_{j}" for j in range(x.shape[1])])
    return ad.AnnData(x, obs=pd.DataFrame(index=obs_names), var=var)


def niche_features(
    adata, graph=None, n_comps: int = 30, n_neighs: int = 6, layer: str | None = None, seed: int = 0
) -> np.ndarray:
    """PCs of the mean log-normalised expression over each spot's spatial neighbours (not itself).

    ``graph`` defaults to :func:`spatial_graph` on ``obsm["spatial"]``. O(N k G) + a PCA.
    """
    from .._anchors import lognormalize

    x = adata.X if layer is None else adata.layers[layer]
    g = spatial_graph(adata.obsm[SPATIAL_KEY], n_neighs) if graph is None else graph
    return _neighbourhood_pcs(lognormalize(x), g, n_comps, seed)


def _neighbourhood_pcs(x, graph, n_comps: int, seed: int = 0) -> np.ndarray:
    """PCs of the neighbour mean ``W x`` (``W`` row-normalised ``graph``)."""
    from sklearn.decomposition import TruncatedSVD

    nb = _row_normalise(graph) @ x
    nb = np.asarray(nb.toarray() if sparse.issparse(nb) else nb, dtype=np.float32)
    nb -= nb.mean(0)
    n_comps = int(min(n_comps, nb.shape[1] - 1, nb.shape[0] - 1))
    return TruncatedSVD(n_comps, random_state=seed).fit_transform(nb).astype(np.float32)


def neighbour_mean(x, graph):
    """Mean of each spot's spatial neighbours (not itself), ``(N, F)`` as ``x`` (CSR stays
    CSR); a spot without neighbours keeps its own values. O(N k F), never N x N."""
    nb = _row_normalise(graph) @ x
    isolated = np.flatnonzero(np.asarray(graph.sum(1)).ravel() == 0)
    if len(isolated):
        if sparse.issparse(nb):
            nb = sparse.lil_matrix(nb)
            nb[isolated] = x[isolated]
            nb = nb.tocsr()
        else:
            nb[isolated] = x[isolated]
    return sparse.csr_matrix(nb, dtype=np.float32) if sparse.issparse(nb) else nb.astype(np.float32)


def to_mudata(
    adata: ad.AnnData,
    image: bool | str = "auto",
    niche: bool = True,
    graph_encoder: bool = False,
    n_top_genes: int | None = 3000,
    n_neighs: int = 6,
    n_niche_comps: int = 30,
    image_key: str = "X_image",
    layer: str | None = None,
):
    """Build the scMSI input from a spatial AnnData: expression + image + niche.

    Parameters
    ----------
    adata
        Spots x genes raw counts (``.X`` or ``layer``), ``obsm["spatial"]``, optionally an image
        in ``uns["spatial"]`` or features in ``obsm[image_key]``.
    image
        Add an ``image`` modality (standardised ``obsm[image_key]``; computed with
        :func:`image_features` when absent and an image is stored). ``"auto"``: when available.
    niche
        Add the ``niche`` modality (:func:`niche_features`; with no genes, the PCs of the
        neighbours' mean image features).
    graph_encoder
        Give the ``rna`` and ``image`` modalities a graph-aware encoder: each spot's
        neighbour mean (:func:`neighbour_mean`) goes into ``layers["scmsi_neighbours"]`` and
        ``uns["scmsi_context_layers"]`` records it, so that :meth:`scmsi.SCMSI.setup_mudata`
        lets the encoder read ``[spot, neighbourhood]`` (BANKSY-style neighbour-augmented
        input); the decoder still rebuilds the spot's own data. Off by default: on DLPFC
        (2 seeds x 2 sections, 60 epochs) it did not raise the ARI (mean 0.476 either way),
        trained ~20 % slower and left RNA's coefficients degenerate in 2 of 6 runs (0 of 5
        without it).
    n_top_genes
        Keep this many highly variable genes (seurat_v3 on counts), plus the expressed genes
        of any spot that would have no counts in them (so no spot is lost); None keeps all.
    n_neighs
        Spatial neighbours (6: Visium hexagonal ring).

    Returns
    -------
    mdata, modalities
        MuData with ``rna`` (counts; absent when ``adata`` has no genes) and optionally
        ``image``/``niche`` (continuous; each with its neighbourhood layer, see
        ``graph_encoder``), and the
        ``modalities`` dict to pass to :meth:`scmsi.SCMSI.setup_mudata`. ``mdata.obsm["spatial"]``,
        ``mdata.obsp["spatial_connectivities"]`` and ``mdata.uns["spatial"]`` are set.

    Raises
    ------
    ValueError
        Before any work, naming the fix (:func:`scmsi._validation.check_spatial`): NaN or
        infinite coordinates, spots sharing a barcode or a position, no more spots than
        ``n_neighs``, a stored image whose scale factor puts the spots outside it.
    """
    import mudata as md
    import scanpy as sc

    from .._validation import check_spatial

    # before any work; a stored image is checked only when its features are computed here
    check_spatial(adata, n_neighs, image=image is not False and image_key not in adata.obsm)
    rna = ad.AnnData(
        sparse.csr_matrix(adata.X if layer is None else adata.layers[layer], dtype=np.float32),
        obs=adata.obs.copy(),
        var=pd.DataFrame(index=adata.var_names.copy()),
    )
    if n_top_genes is not None and rna.n_vars > n_top_genes:
        hvg = sc.pp.highly_variable_genes(
            rna, n_top_genes=n_top_genes, flavor="seurat_v3", inplace=False
        )
        keep = hvg["highly_variable"].to_numpy()
        # A near-empty spot (1-2 counts, e.g. at a tissue edge) can have none in the HVGs and
        # could not be modelled; adding its few expressed genes keeps every spot, so the
        # result stays aligned with the user's AnnData.
        empty = np.asarray(rna.X[:, keep].sum(1)).ravel() == 0
        if empty.any():
            keep = keep | (np.asarray(rna.X[empty].sum(0)).ravel() > 0)
        rna = rna[:, keep].copy()
    graph = spatial_graph(adata.obsm[SPATIAL_KEY], n_neighs)
    has_genes = rna.n_vars > 0  # image-only data (e.g. no count matrix) have no genes
    mods, kinds = ({"rna": rna}, {"rna": "counts"}) if has_genes else ({}, {})

    has_image = image_key in adata.obsm or bool(
        adata.uns.get(SPATIAL_KEY, {})
        and any(lib.get("images") for lib in adata.uns[SPATIAL_KEY].values())
    )
    if image is True and not has_image:
        raise ValueError(f"image=True but there is no obsm[{image_key!r}] and no stored image.")
    if image is True or (image == "auto" and has_image):
        if image_key in adata.obsm:
            feats = adata.obsm[image_key]
        else:  # on a light copy: the user's AnnData is left untouched
            view = ad.AnnData(obs=pd.DataFrame(index=adata.obs_names.copy()))
            view.obsm[SPATIAL_KEY] = np.asarray(adata.obsm[SPATIAL_KEY])
            view.uns[SPATIAL_KEY] = adata.uns[SPATIAL_KEY]
            feats = image_features(view)
        mods["image"] = _continuous(_standardise(feats), rna.obs_names, "image")
        kinds["image"] = "continuous"
    if not mods:
        raise ValueError("No genes and no image features: nothing to model.")
    if niche:
        if has_genes:
            z = niche_features(rna, graph, n_comps=n_niche_comps)
        else:  # image only: the niche is the neighbourhood's image
            z = _neighbourhood_pcs(mods["image"].X, graph, n_niche_comps)
        mods["niche"] = _continuous(_standardise(z), rna.obs_names, "niche")
        kinds["niche"] = "continuous"
    context = {}
    if graph_encoder:
        for m in ("rna", "image"):
            if m in mods:
                mods[m].layers[CONTEXT_LAYER] = neighbour_mean(mods[m].X, graph)
                context[m] = CONTEXT_LAYER
    with md.set_options(pull_on_update=False):
        mdata = md.MuData(mods)
    mdata.obs = adata.obs.copy()
    mdata.obsm[SPATIAL_KEY] = np.asarray(adata.obsm[SPATIAL_KEY])
    mdata.obsp[f"{SPATIAL_KEY}_connectivities"] = graph
    if SPATIAL_KEY in adata.uns:
        mdata.uns[SPATIAL_KEY] = adata.uns[SPATIAL_KEY]
    mdata.uns[MODALITY_TYPES_KEY] = kinds
    mdata.uns[CONTEXT_LAYERS_KEY] = context
    return mdata, kinds
