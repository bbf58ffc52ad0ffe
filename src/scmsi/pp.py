"""Preprocessing for scMSI: mosaic data (cells that lack a modality).

===========================  =================================================================
:func:`pad_modalities`       a copy of a mosaic MuData in which every modality holds every cell,
                             with ``obs["scmsi_has_<m>"]`` flagging the cells that have ``m``
===========================  =================================================================
"""

from ._mosaic import pad_modalities

__all__ = ["pad_modalities"]
