"""Spatial transcriptomics: Visium/ST reading, spot tiles and image features, spatial graph,
spatial smoothing of the fused coefficients, spatial domains.

Conventions (the same as scanpy and squidpy):

- ``obsm["spatial"]``: spot centres ``(x, y)`` = (column, row) in **full-resolution** image pixels.
- ``uns["spatial"][library_id]``: ``{"images": {"hires"|"lowres"|...: array (H, W, 3)},
  "scalefactors": {"tissue_hires_scalef", "tissue_lowres_scalef", "spot_diameter_fullres"}}``.
  A pixel of image ``img_key`` is at ``obsm["spatial"] * scalefactors[f"tissue_{img_key}_scalef"]``.

How space enters scMSI (the choice, and why)
--------------------------------------------
Two mechanisms, each a parameter that can be switched off:

1. ``niche`` modality (:func:`to_mudata`, ``niche=True``): the mean log-expression of a spot's
   spatial neighbours (PCs), registered as a ``continuous`` modality with its own encoder and
   self-expressive network. The contrastive term then asks a spot's coefficients over the anchors
   to agree with the coefficients its *neighbourhood* gets: anchors are chosen for both the spot
   and its surroundings, which is what a tissue domain (a cortical layer, a tumour region) is.
   This keeps the model's structure (one affinity every view agrees on) and costs O(N k) once.
2. Smoothing of the fused coefficients over the spatial graph (:func:`smooth`, used by
   :func:`spatial_domains` with ``spatial_weight``): ``C <- (1 - a) C + a W C`` for a few rounds,
   ``W`` the row-normalised k-nearest-spot graph. Coefficients are non-negative weights over
   the same anchors, so averaging them is averaging "who are my anchors" votes: a spot that is
   an outlier of its layer is pulled to its neighbours' anchors, a real boundary is kept because
   the two sides vote for different anchors. O(N k A) per round; never N x N.

With neither (``niche=False``, ``spatial_weight=0``) domains are plain scMSI clusters.

Modules: :mod:`~scmsi.spatial.io` (reading), :mod:`~scmsi.spatial.graph` (spot graph,
smoothing), :mod:`~scmsi.spatial.image` (H&E tile features), :mod:`~scmsi.spatial.input` (model
input) and :mod:`~scmsi.spatial.domains` (domains). Every public name is importable from
``scmsi.spatial``.
"""

from .._constants import DOMAIN_KEY, SPATIAL_KEY
from .domains import (
    choose_n_domains,
    informative_modalities,
    refine_domains,
    spatial_domains,
    tied_gmm,
)
from .graph import smooth, spatial_graph, spatial_neighbors
from .image import color_texture_features, crop_tiles, image_features
from .input import neighbour_mean, niche_features, to_mudata
from .io import find_visium, get_image, read_spot_table, read_st, read_visium

__all__ = [
    "DOMAIN_KEY",
    "SPATIAL_KEY",
    "choose_n_domains",
    "color_texture_features",
    "crop_tiles",
    "find_visium",
    "get_image",
    "image_features",
    "informative_modalities",
    "neighbour_mean",
    "niche_features",
    "read_spot_table",
    "read_st",
    "read_visium",
    "refine_domains",
    "smooth",
    "spatial_domains",
    "spatial_graph",
    "spatial_neighbors",
    "tied_gmm",
    "to_mudata",
]
