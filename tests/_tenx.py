"""Write a feature-barcode matrix in Cell Ranger's own HDF5 layout (tests only).

The layout of Cell Ranger >= 3 (as ``scanpy.read_10x_h5`` reads it): group ``matrix`` with
``barcodes``, ``data`` (int32), ``indices``, ``indptr``, ``shape`` = (features, barcodes), the
features x barcodes matrix stored by column (CSC, i.e. the CSR of barcodes x features), and
``features/{id,name,feature_type,genome,_all_tag_keys}``; strings as fixed-length bytes.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
from scipy import sparse


def write_10x_h5(path: Path, blocks: list[tuple], barcodes, genome: str = "GRCh38") -> Path:
    """Write cells x features ``blocks`` side by side as one Cell Ranger matrix.

    ``blocks``: ``(matrix (cells, features_b) of integer counts, feature names, feature_type)``,
    the same cells in every block, in ``barcodes`` order.
    """
    x = sparse.hstack([sparse.csr_matrix(b[0]) for b in blocks]).tocsr()
    x.sort_indices()
    names = np.concatenate([np.asarray(b[1], dtype=str) for b in blocks])
    types = np.concatenate([np.repeat(b[2], len(b[1])) for b in blocks])
    ids = np.array([f"ID{i:06d}" for i in range(len(names))])
    with h5py.File(path, "w") as f:
        f.attrs["filetype"] = "matrix"
        f.attrs["version"] = 2
        m = f.create_group("matrix")
        m["barcodes"] = np.asarray(barcodes, dtype="S")
        m["data"] = np.round(x.data).astype(np.int32)
        m["indices"] = x.indices.astype(np.int64)
        m["indptr"] = x.indptr.astype(np.int64)
        m["shape"] = np.array([x.shape[1], x.shape[0]], dtype=np.int32)
        feats = m.create_group("features")
        feats["id"] = ids.astype("S")
        feats["name"] = names.astype("S")
        feats["feature_type"] = types.astype("S")
        feats["genome"] = np.repeat(genome, len(names)).astype("S")
        feats["_all_tag_keys"] = np.array([b"genome"])
    return path
