"""Reading 10x Genomics Cell Ranger outputs into scMSI's input.

A Cell Ranger feature-barcode matrix (``filtered_feature_bc_matrix.h5``; Cell Ranger, Cell
Ranger ARC, Cell Ranger ATAC) holds every modality of a run in one matrix; its
``features/feature_type`` column says which rows are genes, antibodies or peaks. Those types
are facts of the file, so :func:`read_10x_h5` turns them into modalities with their scMSI
types (``uns["modality_types"]``), with no guess and no option to set.

=========================  ===========  =================
Cell Ranger feature type   modality     scMSI type
=========================  ===========  =================
``Gene Expression``        ``rna``      ``counts``
``Antibody Capture``       ``prot``     ``protein``
``Peaks``                  ``atac``     ``accessibility``
=========================  ===========  =================

Spatial (Space Ranger) folders are read by :func:`scmsi.spatial.read_visium`.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import mudata as md
import numpy as np
import pandas as pd
from scipy import sparse

from ._constants import MODALITY_TYPES_KEY

FEATURE_TYPES: dict[str, tuple[str, str]] = {
    "Gene Expression": ("rna", "counts"),
    "Antibody Capture": ("prot", "protein"),
    "Peaks": ("atac", "accessibility"),
}
"""Cell Ranger ``feature_type`` -> ``(modality name, scMSI type)``."""

# The filtered matrices, in the order looked for: Cell Ranger >= 3 and ARC, Cell Ranger ATAC,
# Cell Ranger 2. The raw matrices hold every barcode, empty droplets included: never taken.
MATRIX_NAMES = (
    "filtered_feature_bc_matrix.h5",
    "filtered_peak_bc_matrix.h5",
    "filtered_gene_bc_matrices_h5.h5",
)


def find_10x_h5(path: str | Path) -> Path:
    """The filtered feature-barcode matrix of a Cell Ranger run.

    Parameters
    ----------
    path
        The ``.h5`` itself, a Cell Ranger ``outs/`` folder, or the run folder holding ``outs/``.

    Returns
    -------
    The path of the ``.h5`` (one of :data:`MATRIX_NAMES` in a folder).

    Raises
    ------
    FileNotFoundError
        When ``path`` does not exist or the folder holds none of :data:`MATRIX_NAMES`.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist.")
    if path.is_file():
        return path
    for folder in (path, path / "outs"):
        for name in MATRIX_NAMES:
            if (folder / name).is_file():
                return folder / name
    raise FileNotFoundError(
        f"{path} holds no Cell Ranger matrix ({', '.join(MATRIX_NAMES)}, in the folder or in "
        "its outs/). Pass the Cell Ranger outs/ folder or the filtered .h5 itself."
    )


def _read_matrix(path: Path):
    """The whole matrix (every feature type) with scanpy's reader, errors as one ValueError."""
    import scanpy as sc

    try:
        with warnings.catch_warnings():
            # a gene and its antibody often share a name (CD4); the names are made unique
            # within each modality below, and modalities keep theirs apart
            warnings.filterwarnings("ignore", message="Variable names are not unique")
            return sc.read_10x_h5(path, gex_only=False)
    except OSError as e:  # h5py: not an HDF5 file at all
        raise ValueError(f"cannot read {path} as a 10x HDF5 matrix: {e}") from e
    except Exception as e:  # scanpy raises a bare Exception for a missing dataset
        raise ValueError(
            f"{path} is not a Cell Ranger feature-barcode matrix (.h5) that scanpy can read "
            f"({type(e).__name__}: {e}); pass Cell Ranger's filtered_feature_bc_matrix.h5."
        ) from e


def read_10x_h5(path: str | Path) -> md.MuData:
    """A Cell Ranger matrix as a MuData, one modality per feature type.

    Parameters
    ----------
    path
        A ``filtered_feature_bc_matrix.h5`` or the Cell Ranger folder holding it
        (:func:`find_10x_h5`). Read with :func:`scanpy.read_10x_h5` (``gex_only=False``).

    Returns
    -------
    MuData with a modality per feature type present (:data:`FEATURE_TYPES`): cells x features,
    raw counts in ``.X`` (CSR float32), ``var`` as Cell Ranger wrote it (``gene_ids``,
    ``feature_types``, ``genome``), names made unique within a modality; cells in the file's
    order; ``uns["modality_types"]`` = ``{modality: scMSI type}``. Features of another type
    (CRISPR guides, multiplexing tags...) are left out with a warning. A Cell Ranger 2 file,
    with no feature types, is all ``Gene Expression``.

    Raises
    ------
    ValueError
        When the file is not a 10x matrix, or holds none of the feature types above.
    """
    path = find_10x_h5(path)
    adata = _read_matrix(path)
    types = (
        adata.var["feature_types"].astype(str)
        if "feature_types" in adata.var
        else pd.Series("Gene Expression", index=adata.var_names)
    ).to_numpy()
    other = sorted(set(types) - set(FEATURE_TYPES))
    if other:
        counts = {t: int((types == t).sum()) for t in other}
        warnings.warn(
            f"{path}: features of type {counts} are left out; scMSI reads {list(FEATURE_TYPES)}.",
            UserWarning,
            stacklevel=2,
        )
    mods, kinds = {}, {}
    for feature_type, (name, kind) in FEATURE_TYPES.items():
        rows = types == feature_type
        if not rows.any():
            continue
        mod = adata[:, rows].copy()
        mod.X = sparse.csr_matrix(mod.X, dtype=np.float32)
        mod.var_names_make_unique()
        mods[name], kinds[name] = mod, kind
    if not mods:
        raise ValueError(
            f"{path} holds no features of type {list(FEATURE_TYPES)} (has {other}): nothing "
            "for scMSI to model."
        )
    with md.set_options(pull_on_update=False), warnings.catch_warnings():
        # obs holds the barcodes only: nothing to pull; the same name in two modalities (a
        # gene and its protein) is expected, each modality's own names are unique
        warnings.filterwarnings("ignore", message="var_names are not unique")
        mdata = md.MuData(mods)
    mdata.uns[MODALITY_TYPES_KEY] = kinds
    return mdata
