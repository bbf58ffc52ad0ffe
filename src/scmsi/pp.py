"""Preprocessing for scMSI: mosaic data and spatial data, named as in scanpy/squidpy.

===========================  =================================================================
:func:`pad_modalities`       a copy of a mosaic MuData in which every modality holds every cell,
                             with ``obs["scmsi_has_<m>"]`` flagging the cells that have ``m``
spatial readers, graph,      thin re-exports of :mod:`scmsi.spatial`
image and niche features
===========================  =================================================================
"""

from ._mosaic import pad_modalities

# from the spatial modules themselves, not the package: one floor lower
from .spatial.graph import spatial_graph, spatial_neighbors
from .spatial.image import color_texture_features, crop_tiles, image_features
from .spatial.input import niche_features, to_mudata
from .spatial.io import read_st, read_visium

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
