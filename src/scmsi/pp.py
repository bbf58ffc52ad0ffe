"""Preprocessing for scMSI: mosaic data (the spatial readers and features are in
:mod:`scmsi.spatial`).

===========================  =================================================================
:func:`pad_modalities`       a copy of a mosaic MuData in which every modality holds every cell,
                             with ``obs["scmsi_has_<m>"]`` flagging the cells that have ``m``
===========================  =================================================================
"""

from ._mosaic import pad_modalities

# Former paths of the spatial tools, kept for one release with a FutureWarning: their one
# public path is scmsi.spatial.
_SPATIAL = {
    "color_texture_features": "image",
    "crop_tiles": "image",
    "image_features": "image",
    "niche_features": "input",
    "read_st": "io",
    "read_visium": "io",
    "spatial_graph": "graph",
    "spatial_neighbors": "graph",
    "to_mudata": "input",
}


def __getattr__(name: str):
    import warnings
    from importlib import import_module

    if name not in _SPATIAL:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    warnings.warn(
        f"scmsi.pp.{name} will be removed from scmsi.pp in the next release: use "
        f"scmsi.spatial.{name}.",
        FutureWarning,
        stacklevel=2,
    )
    # from the spatial module itself, not the package: one floor lower
    return getattr(import_module(f".spatial.{_SPATIAL[name]}", __package__), name)


__all__ = ["pad_modalities"]
