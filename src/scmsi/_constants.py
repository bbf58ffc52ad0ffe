"""Every key scmsi writes on a MuData/AnnData, in one place.

:func:`scmsi.tl.embed_and_cluster` and :func:`scmsi.tl.map_query` name their outputs from a
prefix, ``key_added`` (default ``"scmsi"``); :class:`OutputKeys` spells the scheme out, so a
second run with another prefix does not overwrite the first:

=====================================  ===========================================
``obsm["X_<key>"]``                    embedding (PCA of the fused coefficients)
``uns["<key>_pca"]``                   that PCA, for mapping new cells
``obsm["<key>_coef"]``                 fused coefficients, cells x anchors
``obsm["<key>_modality_weights"]``     per-cell modality weights of the fusion
``obsm["X_<key>_<modality>"]``         one modality's latent
``obsp["<key>_connectivities"]``,      the k-NN graph (``uns["<key>"]``: its parameters)
``obsp["<key>_distances"]``
``obs["<key>_leiden"]``                Leiden clusters (``uns["<key>_leiden"]``: resolution)
``obs["<key>_kmeans"]``, ``_spectral``  clusters of ``n_clusters``
``obsm["X_umap"]``                     UMAP (``obsm["X_<key>_umap"]`` for another prefix)
=====================================  ===========================================
"""

from __future__ import annotations

from dataclasses import dataclass, field

KEY = "scmsi"
"""Default prefix of the keys scmsi writes."""
X_KEY = f"X_{KEY}"
COEF_KEY = f"{KEY}_coef"
EMBEDDING_MAP_KEY = f"{KEY}_embedding"
"""``uns``: the map of :func:`scmsi.tl.embed_and_cluster`'s embedding (PCA components, or
the latents' standardisation), which :func:`scmsi.tl.map_query` applies to new cells."""
WEIGHTS_KEY = f"{KEY}_modality_weights"
LEIDEN_KEY = f"{KEY}_leiden"
KMEANS_KEY = f"{KEY}_kmeans"
DOMAIN_KEY = f"{KEY}_domain"
"""``obs`` key of :func:`scmsi.spatial.spatial_domains` (``uns[f"{DOMAIN_KEY}_markers"]``:
markers)."""
UMAP_KEY = "X_umap"  # scanpy's key, so scanpy's and muon's plots find it
HAS_PREFIX = f"{KEY}_has_"
"""``obs[f"{HAS_PREFIX}<m>"]``: which cells of a mosaic MuData have modality ``m``."""
MASK_PREFIX = f"{KEY}_mask_"
"""Registry key of a modality's per-cell mask (``tensors[f"{MASK_PREFIX}<m>"]``)."""
MODALITY_TYPES_KEY = "modality_types"
"""``uns["modality_types"]``: ``{modality: kind}`` as the loaders and ``to_mudata`` write it."""
SPATIAL_KEY = "spatial"
"""``obsm``: spot coordinates; ``uns``: images and scale factors; ``obsp["spatial_connectivities"]``
(squidpy's names)."""
CONTEXT_LAYERS_KEY = f"{KEY}_context_layers"
"""``uns``: ``{modality: layer}`` with each cell's neighbourhood, read by ``setup_mudata``
(graph-aware encoder; written by :func:`scmsi.spatial.to_mudata`)."""
CONTEXT_LAYER = f"{KEY}_neighbours"
"""The layer :func:`scmsi.spatial.to_mudata` writes: the mean of a spot's spatial neighbours."""


@dataclass(frozen=True)
class OutputKeys:
    """The keys of one :func:`scmsi.tl.embed_and_cluster` run with prefix ``key``."""

    key: str = KEY
    embedding: str = field(init=False)  # obsm
    embedding_map: str = field(init=False)  # uns
    coef: str = field(init=False)  # obsm
    weights: str = field(init=False)  # obsm
    connectivities: str = field(init=False)  # obsp
    distances: str = field(init=False)  # obsp
    leiden: str = field(init=False)  # obs and uns
    umap: str = field(init=False)  # obsm

    def __post_init__(self) -> None:
        k = self.key
        names = {
            "embedding": f"X_{k}",
            "embedding_map": f"{k}_embedding",
            "coef": f"{k}_coef",
            "weights": f"{k}_modality_weights",
            "connectivities": f"{k}_connectivities",
            "distances": f"{k}_distances",
            "leiden": f"{k}_leiden",
            "umap": UMAP_KEY if k == KEY else f"X_{k}_umap",
        }
        for name, value in names.items():
            object.__setattr__(self, name, value)  # frozen: set once, here

    def latent(self, modality: str) -> str:
        """obsm key of one modality's latent."""
        return f"X_{self.key}_{modality}"

    def clusters(self, method: str) -> str:
        """obs key of the ``n_clusters`` clusters of ``method`` (kmeans, spectral)."""
        return f"{self.key}_{method}"


def declared_modality_types(mdata) -> dict[str, str] | None:
    """``mdata.uns["modality_types"]`` as ``{modality: type}`` in the MuData's modality order
    (an .h5mu stores uns keys sorted), the modalities it names that the MuData lacks last;
    None when the MuData does not declare its types. The one reader of that key: the model,
    the CLI and the benchmarks decide what a missing or partial declaration means."""
    declared = mdata.uns.get(MODALITY_TYPES_KEY)
    if declared is None:
        return None
    declared = {str(m): str(k) for m, k in dict(declared).items()}
    order = [m for m in mdata.mod if m in declared]
    return {m: declared[m] for m in order + [m for m in declared if m not in order]}
