"""Dataset registry: loaders that return ready-to-use :class:`mudata.MuData` objects.

Local copies under :func:`data_dir` are used when present; otherwise files are
downloaded with :mod:`pooch` from pinned public URLs and verified by sha256.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import anndata as ad
import mudata as md
import numpy as np
import pandas as pd
import pooch
import scanpy as sc
from scipy import sparse

__all__ = ["DATASETS", "data_dir", "inhouse_pbmc", "load"]

_ENV_VAR = "SCMSI_DATA_DIR"

# In-house PBMC CITE-seq (GSM4476363 RNA / GSM4476364 ADT), as used by the scMSI authors.
_INHOUSE_PBMC_URL = (
    "https://raw.githubusercontent.com/ChengmingZhang-CAS/scMSI-master/"
    "dffcbb26b280e345ca43df18606c765e1ab51058/In-house_PBMC/"
)
_INHOUSE_PBMC_FILES = {
    "GSM4476363_RNA_raw.csv.gz": "987a263b53d9289a174284e159aa1038be695e12e7e2c90640e3b1b57f489a52",
    "GSM4476364_ADT_raw.csv": "de352bc3e00cfc60931314a8594ab0cb8edf17a48e7c837a5bbfa6811bf8731a",
    "truth_InHouse.csv": "a12825dc73ba9dbd11bc5a347feb97ebf9ad0179c0299de3c3ca4f90acbd3616",
}


def data_dir() -> Path:
    """Return the directory that holds (or caches) the datasets.

    Returns
    -------
    pathlib.Path
        ``$SCMSI_DATA_DIR`` if that variable is set; otherwise ``<repo root>/../shared/data``
        if it exists (source checkouts); otherwise the per-user pooch cache
        ``pooch.os_cache("scmsi")``.
    """
    env = os.environ.get(_ENV_VAR)
    if env:
        return Path(env).expanduser()
    shared = Path(__file__).resolve().parents[2].parent / "shared" / "data"
    if shared.is_dir():
        return shared
    return Path(pooch.os_cache("scmsi"))


def _is_writable(path: Path) -> bool:
    """Whether ``path`` is writable, or could be created (nearest existing ancestor writable)."""
    for p in (path, *path.parents):
        if p.exists():
            return os.access(p, os.W_OK)
    return False


def _fetch(subdir: str, url_prefix: str, files: dict[str, str]) -> dict[str, Path]:
    """Return local paths for ``files``, downloading (and checksum-verifying) missing ones."""
    folder = data_dir() / subdir
    # Download next to the local copies if that location is writable, else into the pooch cache.
    target = folder if _is_writable(folder) else Path(pooch.os_cache("scmsi")) / subdir
    paths = {}
    for name, sha in files.items():
        local = folder / name
        if local.is_file():
            if pooch.file_hash(str(local)) != sha:
                raise ValueError(f"sha256 mismatch for {local}; delete it to re-download.")
            paths[name] = local
            continue
        fetched = pooch.retrieve(
            url=url_prefix + name,
            known_hash=f"sha256:{sha}",
            fname=name,
            path=target,
            progressbar=False,
        )
        paths[name] = Path(fetched)
    return paths


def _read_counts_csv(path: Path) -> tuple[sparse.csr_matrix, pd.Index, pd.Index]:
    """Read a features x cells count CSV.

    Returns (cells x features float32 CSR, cell names, feature names).
    """
    df = pd.read_csv(path, index_col=0)
    x = sparse.csr_matrix(df.to_numpy(dtype=np.float32).T)
    return x, pd.Index(df.columns.astype(str)), pd.Index(df.index.astype(str))


def inhouse_pbmc(preprocess: bool = True, n_top_genes: int = 2000) -> md.MuData:
    """In-house human PBMC CITE-seq data (10 surface proteins) used in the scMSI paper.

    Parameters
    ----------
    preprocess
        If ``True``, apply the paper's protocol: keep cells in the truth file; keep cells with
        ``2000 < nCount_ADT < 25000``, ``1000 < nCount_RNA < 9000`` and mitochondrial (``MT-``)
        percentage ``< 10``; drop cells labelled ``unknown``; then keep ``n_top_genes`` highly
        variable genes (scanpy ``flavor="seurat_v3"`` on raw counts). This gives 1,071 cells.
        If ``False``, return all cells measured in both modalities and all genes
        (``cell_type`` is missing for cells absent from the truth file).
    n_top_genes
        Number of highly variable genes kept when ``preprocess=True``.

    Returns
    -------
    mudata.MuData
        Modalities ``"rna"`` (cells x genes) and ``"prot"`` (cells x 10 proteins), each with raw
        counts (float32 CSR, integer-valued) in ``.X`` and ``.layers["counts"]``. Cell labels are in
        ``mdata.obs["cell_type"]`` and ``mdata["rna"].obs["cell_type"]`` (categorical).

    Notes
    -----
    Source: GEO GSM4476363 (RNA) / GSM4476364 (ADT), copied from the scMSI authors' repository.
    """
    paths = _fetch("inhouse_pbmc", _INHOUSE_PBMC_URL, _INHOUSE_PBMC_FILES)
    x_rna, cells_rna, genes = _read_counts_csv(paths["GSM4476363_RNA_raw.csv.gz"])
    x_adt, cells_adt, proteins = _read_counts_csv(paths["GSM4476364_ADT_raw.csv"])
    truth = pd.read_csv(paths["truth_InHouse.csv"], index_col="Barcode")["trueType"].astype(str)

    # Some gene symbols are duplicated: make them unique as AnnData.var_names_make_unique does
    # (suffixes "-1", "-2", ...).
    genes = ad.utils.make_index_unique(genes)
    rna = ad.AnnData(x_rna, obs=pd.DataFrame(index=cells_rna), var=pd.DataFrame(index=genes))
    prot = ad.AnnData(x_adt, obs=pd.DataFrame(index=cells_adt), var=pd.DataFrame(index=proteins))

    cells = cells_rna.intersection(cells_adt, sort=False)
    if preprocess:
        cells = cells.intersection(truth.index, sort=False)
    rna, prot = rna[cells].copy(), prot[cells].copy()

    if preprocess:
        n_rna = np.asarray(rna.X.sum(axis=1)).ravel()
        n_adt = np.asarray(prot.X.sum(axis=1)).ravel()
        is_mt = rna.var_names.str.startswith("MT-")
        pct_mt = 100 * np.asarray(rna.X[:, is_mt].sum(axis=1)).ravel() / np.maximum(n_rna, 1)
        labels = truth.reindex(rna.obs_names).to_numpy()
        keep = (
            (n_adt > 2000)
            & (n_adt < 25000)
            & (n_rna > 1000)
            & (n_rna < 9000)
            & (pct_mt < 10)
            & (labels != "unknown")
        )
        rna, prot = rna[keep].copy(), prot[keep].copy()
        # HVGs chosen after QC and after dropping `unknown`, on raw counts.
        hvg = sc.pp.highly_variable_genes(
            rna, n_top_genes=n_top_genes, flavor="seurat_v3", inplace=False
        )
        rna = rna[:, hvg["highly_variable"].to_numpy()].copy()

    for a in (rna, prot):
        a.X = sparse.csr_matrix(a.X, dtype=np.float32)
        a.layers["counts"] = a.X.copy()

    cell_type = pd.Categorical(truth.reindex(rna.obs_names).to_numpy())
    rna.obs["cell_type"] = cell_type
    # Do not pull modality columns into mdata.obs (legacy mudata behaviour); set the global
    # label explicitly.
    with md.set_options(pull_on_update=False):
        mdata = md.MuData({"rna": rna, "prot": prot})
    mdata.obs["cell_type"] = pd.Categorical(cell_type)
    return mdata


DATASETS: dict[str, Callable[..., md.MuData]] = {"inhouse_pbmc": inhouse_pbmc}


def load(name: str, **kwargs) -> md.MuData:
    """Load a registered dataset by name.

    Parameters
    ----------
    name
        Key in :data:`DATASETS` (e.g. ``"inhouse_pbmc"``).
    **kwargs
        Passed to the dataset's loader.

    Returns
    -------
    mudata.MuData
        The loaded dataset.
    """
    try:
        loader = DATASETS[name]
    except KeyError:
        raise KeyError(f"Unknown dataset {name!r}; available: {sorted(DATASETS)}") from None
    return loader(**kwargs)
