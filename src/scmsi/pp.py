"""Preprocessing of spatial data: reading, spatial graph, image features, model input.

Thin re-exports of :mod:`scmsi.spatial`, named as in scanpy/squidpy.
"""

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
    "read_st",
    "read_visium",
    "spatial_graph",
    "spatial_neighbors",
    "to_mudata",
]
