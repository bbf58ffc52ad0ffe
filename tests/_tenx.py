"""Write 10x Genomics outputs (tests only): a feature-barcode matrix in Cell Ranger's own
HDF5 layout, and a Space Ranger folder.

The layout of Cell Ranger >= 3 (as ``scanpy.read_10x_h5`` reads it): group ``matrix`` with
``barcodes``, ``data`` (int32), ``indices``, ``indptr``, ``shape`` = (features, barcodes), the
features x barcodes matrix stored by column (CSC, i.e. the CSR of barcodes x features), and
``features/{id,name,feature_type,genome,_all_tag_keys}``; strings as fixed-length bytes.
"""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
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


CITE_SEQ = {"rna": "Gene Expression", "prot": "Antibody Capture"}


def write_cite_seq(path: Path, mdata, extra: list[tuple] | None = None) -> Path:
    """Write the ``rna`` and ``prot`` counts (``.X``) of a CITE-seq MuData as Cell Ranger
    does, then the ``extra`` blocks (as :func:`write_10x_h5` takes them)."""
    blocks = [(mdata[m].X, mdata[m].var_names, kind) for m, kind in CITE_SEQ.items()]
    return write_10x_h5(path, blocks + (extra or []), mdata.obs_names)


def write_visium(folder: Path, adata) -> Path:
    """Write a section laid out as :func:`tests._synthetic.synthetic_visium` returns it as a
    Space Ranger folder: the matrix, ``spatial/tissue_positions_list.csv`` (pixels rounded),
    ``scalefactors_json.json`` and its image as ``tissue_lowres_image.png``."""
    from PIL import Image

    (folder / "spatial").mkdir(parents=True)
    blocks = [(adata.X, adata.var_names, "Gene Expression")]
    write_10x_h5(folder / "filtered_feature_bc_matrix.h5", blocks, adata.obs_names, genome="x")
    xy = adata.obsm["spatial"]
    pos = pd.DataFrame(
        {
            "in_tissue": 1,
            "array_row": adata.obs["array_row"],
            "array_col": adata.obs["array_col"],
            "pxl_row": xy[:, 1].round().astype(int),
            "pxl_col": xy[:, 0].round().astype(int),
        },
        index=adata.obs_names,
    )
    pos.to_csv(folder / "spatial" / "tissue_positions_list.csv", header=False)
    library = next(iter(adata.uns["spatial"].values()))
    sf = dict(library["scalefactors"])
    sf["tissue_lowres_scalef"] = sf.pop("tissue_hires_scalef")
    (folder / "spatial" / "scalefactors_json.json").write_text(json.dumps(sf))
    Image.fromarray(library["images"]["hires"]).save(folder / "spatial" / "tissue_lowres_image.png")
    return folder
