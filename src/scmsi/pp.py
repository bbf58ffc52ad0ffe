"""Preprocessing for scMSI: mosaic data and spatial data, named as in scanpy/squidpy.

===========================  =================================================================
:func:`pad_modalities`       a copy of a mosaic MuData in which every modality holds every cell,
                             with ``obs["scmsi_has_<m>"]`` flagging the cells that have ``m``
spatial readers, graph,      thin re-exports of :mod:`scmsi.spatial`
image and niche features
===========================  =================================================================
"""

from ._mosaic import pad_modalities
from .spatial import (
    color_texture_features,
    crop_tiles,
    image_features,
    niche_features,
    read_st,
    read_visium,
    spatial_graph,
    spatial_neighbors,
    to_mudata,
)

__all__ = [
    "color_texture_features",
    "crop_tiles",
    "image_features",
    "niche_features",
    "pad_modalities",
    "read_st",
    "read_visium",
    "spatial_graph",
    "spatial_neighbors",
    "to_mudata",
]
