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

from ._constants import MODALITY_TYPES_KEY
from ._simulate import synthetic_citeseq

__all__ = [
    "DATASETS",
    "data_dir",
    "eccite_pbmc",
    "inhouse_pbmc",
    "load",
    "scicar_a549",
    "snare_seq",
    "synthetic_citeseq",
]

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

# SNARE-seq cell-line mixture (Chen, Lake & Zhang 2019; GEO GSE126074): RNA counts (GEO file),
# 19 chromatin (cisTopic) features from SCOT, cell-line names from DCCA (SCOT's names are permuted).
_SNARE_RNA_URL = (
    "https://raw.githubusercontent.com/rsinghlab/scMultiOmics_Datasets/"
    "4c53bbdab4bd3e8b524044795a823bd838189121/"
)
_SNARE_RNA_FILES = {
    "GSE126074_CellLineMixture_SNAREseq_cDNA_counts.tsv.gz": (
        "1109350aa55683e5054f6a304592a8ad767dc9a713b995c10c639dddbc1579fd"
    ),
}
_SNARE_SCOT_URL = (
    "https://raw.githubusercontent.com/rsinghlab/SCOT/"
    "14649be6e14017dcfe7ba619091b33d1df55f6a9/data/SNARE/"
)
_SNARE_SCOT_FILES = {
    "SNAREseq_atac_feat.npy": "80d685b6517c100a7fd612846ad38209b64ed9caf095d1630af5a1d7797bd79c",
    "SNAREseq_metadata.txt": "4bfd15c9205ff47e4d37bb0f9d7a9efbe9131b6f660a80f8ad22fccb61c87562",
}
_SNARE_DCCA_URL = (
    "https://raw.githubusercontent.com/cmzuo11/DCCA/"
    "e9c7b2efb6481a202195488981334a87add52cfb/Example_test/"
)
_SNARE_DCCA_FILES = {
    "cell_metadata.txt": "0db5bc07758cffdfb6cd8281235bc34df7e130543f69c914b065f0156f97b71d",
}

# sci-CAR A549 dexamethasone time course (Cao et al. 2018; GEO GSE117089), the scAI authors' subset.
_SCICAR_URL = (
    "https://raw.githubusercontent.com/sqjin/scAI/9bd4bdbe9daa15399d2b49eb376cabaf40aa07ca/data/"
)
_SCICAR_RDA = {"data_A549.rda": "b5cceb564496c92bf037d01ff15cbde56beecf702e3370189f26603be33197f6"}
# The same data converted to h5mu (values unchanged), as kept in the shared data folder.
_SCICAR_H5MU = (
    "scicar_a549.h5mu",
    "d0b9abe77f9c315fde0db7ae821350c89f52bab467c8d4a262461b6a448bdca0",
)


# ECCITE-seq PBMC control sample (Mimitou et al. 2019), the CiteFuse authors' 500-cell subset.
_ECCITE_URL = (
    "https://raw.githubusercontent.com/SydneyBioX/CiteFuse/"
    "b6075864d8930967946022fdfbbf57a6a120061f/data/"
)
_ECCITE_RDA = {
    "CITEseq_example.rda": "ff1063648dcef1220bfc0575dd107892e3d1af5017d441f2e5dcfb7dc7693ee6"
}
# The same data converted to h5mu (values unchanged), as kept in the shared data folder.
_ECCITE_H5MU = (
    "eccite_pbmc.h5mu",
    "bd417de1e5c1593a11a2cb608284f157344495e54a7d2ddc40555c1111985528",
)


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


def _labelled_mudata(mods: dict, labels: pd.Series, types: dict[str, str]) -> md.MuData:
    """MuData of ``mods`` with ``obs["cell_type"]`` (``labels`` by RNA cell name, also on the
    RNA modality) and ``uns["modality_types"]``."""
    cell_type = pd.Categorical(labels.reindex(mods["rna"].obs_names).to_numpy())
    mods["rna"].obs["cell_type"] = cell_type
    # Do not pull modality columns into mdata.obs (legacy mudata behaviour); set the global
    # label explicitly.
    with md.set_options(pull_on_update=False):
        mdata = md.MuData(mods)
    mdata.obs["cell_type"] = pd.Categorical(cell_type)
    mdata.uns[MODALITY_TYPES_KEY] = types
    return mdata


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

    return _labelled_mudata({"rna": rna, "prot": prot}, truth, {"rna": "counts", "prot": "protein"})


def _hvg_counts(rna: ad.AnnData, n_top_genes: int | None) -> ad.AnnData:
    """Keep ``n_top_genes`` HVGs (scanpy ``flavor="seurat_v3"`` on raw counts); None keeps all."""
    if n_top_genes is None or n_top_genes >= rna.n_vars:
        return rna
    hvg = sc.pp.highly_variable_genes(
        rna, n_top_genes=n_top_genes, flavor="seurat_v3", inplace=False
    )
    return rna[:, hvg["highly_variable"].to_numpy()].copy()


def snare_seq(n_top_genes: int | None = 2000, min_cells: int = 3) -> md.MuData:
    """SNARE-seq cell-line mixture (BJ, GM12878, H1, K562): RNA counts + 19 chromatin features.

    Parameters
    ----------
    n_top_genes
        Number of highly variable genes kept (scanpy ``flavor="seurat_v3"`` on raw counts, as
        :func:`inhouse_pbmc`); None keeps every gene that passes ``min_cells``.
    min_cells
        Genes detected in fewer cells are dropped before HVG selection (Seurat's
        ``CreateSeuratObject(min.cells=3)``). On all 18,666 genes the seurat_v3 loess fit fails
        here (near-singular: thousands of genes seen in a single cell).

    Returns
    -------
    mudata.MuData
        1,047 cells. ``"rna"``: raw counts (float32 CSR, integer-valued) in ``.X`` and
        ``.layers["counts"]``. ``"atac"``: the 19 chromatin features of SCOT (Demetci et al.),
        which are cisTopic LDA topics (integer topic assignments per cell, 35,000-2,000,000 per
        cell): ``.X`` holds their per-cell centred log-ratio, ``log(x) - mean(log(x))``
        (float32, dense), and ``.layers["topics"]`` the values as published. Labels (cell
        line: ``BJ``, ``GM``, ``H1``, ``K562``) in ``mdata.obs["cell_type"]``;
        ``mdata.uns["modality_types"] = {"rna": "counts", "atac": "continuous"}``.

    Notes
    -----
    Sources (all pinned): RNA counts, the GEO supplementary file GSE126074 as stored in
    rsinghlab/scMultiOmics_Datasets; chromatin features and their barcodes,
    rsinghlab/SCOT ``data/SNARE``; cell-line names, cmzuo11/DCCA ``Example_test/cell_metadata.txt``
    (the names in SCOT's label files are permuted: its "GM" cells express fibroblast genes).
    Modalities and labels are matched by barcode.

    The raw ATAC peak counts are not available (see the data folder's SOURCE.md), so the
    chromatin side is the published topic matrix. The per-cell log-ratio removes the cell's
    depth (per-cell totals vary 56-fold and dominate the raw values) and suits a Gaussian
    likelihood; the raw values are kept in ``.layers["topics"]``.
    """
    rna_path = _fetch("snare_seq", _SNARE_RNA_URL, _SNARE_RNA_FILES)[
        "GSE126074_CellLineMixture_SNAREseq_cDNA_counts.tsv.gz"
    ]
    scot = _fetch("snare_seq/SCOT", _SNARE_SCOT_URL, _SNARE_SCOT_FILES)
    dcca = _fetch("snare_seq/DCCA", _SNARE_DCCA_URL, _SNARE_DCCA_FILES)["cell_metadata.txt"]

    df = pd.read_csv(rna_path, sep="\t", index_col=0)
    rna = ad.AnnData(
        sparse.csr_matrix(df.to_numpy(dtype=np.float32).T),
        obs=pd.DataFrame(index=pd.Index(df.columns.astype(str))),
        var=pd.DataFrame(index=ad.utils.make_index_unique(pd.Index(df.index.astype(str)))),
    )
    del df

    topics = np.load(scot["SNAREseq_atac_feat.npy"])
    barcodes = pd.read_csv(scot["SNAREseq_metadata.txt"], sep="\t")["Barcode"].astype(str)
    if len(barcodes) != topics.shape[0]:
        raise ValueError("SCOT features and metadata differ in length.")
    atac = ad.AnnData(
        np.log(topics) - np.log(topics).mean(axis=1, keepdims=True),
        obs=pd.DataFrame(index=pd.Index(barcodes)),
        var=pd.DataFrame(index=[f"topic_{i + 1}" for i in range(topics.shape[1])]),
    )
    atac.X = atac.X.astype(np.float32)
    atac.layers["topics"] = topics.astype(np.float32)

    labels = pd.read_csv(dcca, sep="\t", index_col="cell")["cell_line"].astype(str)
    cells = rna.obs_names
    for what, names in (("chromatin features", atac.obs_names), ("labels", labels.index)):
        if not (names.is_unique and cells.isin(names).all() and len(names) == len(cells)):
            raise ValueError(f"SNARE-seq: RNA barcodes and {what} barcodes do not match.")
    atac = atac[cells].copy()

    rna.X.eliminate_zeros()
    n_cells = np.asarray((rna.X > 0).sum(axis=0)).ravel()
    rna = _hvg_counts(rna[:, n_cells >= min_cells].copy(), n_top_genes)
    # Cells with no counts left on the kept genes cannot be modelled with a library size.
    keep = np.asarray(rna.X.sum(axis=1)).ravel() > 0
    if not keep.all():
        rna, atac = rna[keep].copy(), atac[keep].copy()  # none on the published data
    rna.layers["counts"] = rna.X.copy()

    return _labelled_mudata(
        {"rna": rna, "atac": atac}, labels, {"rna": "counts", "atac": "continuous"}
    )


def _dgc_to_csr(m) -> tuple[sparse.csr_matrix, pd.Index, pd.Index]:
    """An R dgCMatrix (features x cells, as parsed by ``rdata``) -> (cells x features CSR, cells,
    features)."""
    n_features, n_cells = (int(d) for d in m.Dim)
    # Column-compressed features x cells is row-compressed cells x features.
    x = sparse.csr_matrix(
        (np.asarray(m.x, dtype=np.float32), np.asarray(m.i), np.asarray(m.p)),
        shape=(n_cells, n_features),
    )
    return (
        x,
        pd.Index(np.asarray(m.Dimnames[1], dtype=str)),
        pd.Index(np.asarray(m.Dimnames[0], dtype=str)),
    )


def _read_rda(path: Path, name: str):
    """The R object ``name`` of an ``.rda`` file, converted to Python (``rdata``)."""
    try:
        import rdata
    except ImportError as err:
        raise ImportError(
            f"Reading {Path(path).name} needs the `rdata` package: pip install 'scmsi[data]'."
        ) from err
    import warnings

    with warnings.catch_warnings():  # no constructor for dgCMatrix: the raw R object is fine
        warnings.simplefilter("ignore")
        return rdata.conversion.convert(rdata.parser.parse_file(str(path)))[name]


def _scicar_from_rda(path: Path) -> tuple[ad.AnnData, ad.AnnData, pd.Series]:
    """Read the scAI authors' ``data_A549.rda``: (rna, atac, time in hours)."""
    obj = _read_rda(path, "data_A549")
    mods = {}
    for key in ("RNA", "ATAC"):
        x, cells, features = _dgc_to_csr(obj["data"][key])
        mods[key] = ad.AnnData(x, obs=pd.DataFrame(index=cells), var=pd.DataFrame(index=features))
    time = obj["labels"]["Time"]
    time.index = time.index.astype(str)
    return mods["RNA"], mods["ATAC"], time.astype(int)


def _scicar_from_h5mu(path: Path) -> tuple[ad.AnnData, ad.AnnData, pd.Series]:
    """Read the converted ``scicar_a549.h5mu``: (rna, atac, time in hours)."""
    m = md.read_h5mu(path)
    strip = {}
    for key in ("rna", "atac"):
        a = m[key]
        strip[key] = ad.AnnData(
            sparse.csr_matrix(a.X, dtype=np.float32),
            obs=pd.DataFrame(index=a.obs_names.astype(str)),
            var=pd.DataFrame(index=a.var_names.astype(str)),
        )
    return strip["rna"], strip["atac"], m.obs["time"].astype(int)


def scicar_a549(min_peak_fraction: float = 0.01) -> md.MuData:
    """sci-CAR A549 co-assay (0, 1 and 3 h of dexamethasone): normalised RNA + ATAC peaks.

    Parameters
    ----------
    min_peak_fraction
        Keep peaks open in at least this fraction of cells (default 1 %, the filter of
        scvi-tools' PeakVI/MultiVI tutorials: 11,567 of the 52,761 peaks). 0 keeps all.

    Returns
    -------
    mudata.MuData
        2,641 cells. ``"rna"``: 1,185 genes, normalised values as published (float32 CSR;
        not counts). ``"atac"``: the peaks (52,761 before filtering), binarised
        (``value > 0`` -> 1.0, float32 CSR) in ``.X``; the published normalised values in
        ``.layers["normalised"]``. Labels:
        ``mdata.obs["cell_type"]`` = time point (``"0h"``, ``"1h"``, ``"3h"``; categorical) and
        ``mdata.obs["time"]`` in hours (int). ``mdata.uns["modality_types"] = {"rna":
        "continuous", "atac": "accessibility"}``.

    Notes
    -----
    Source: the scAI authors' processed subset (sqjin/scAI ``data/data_A549.rda``, pinned
    commit). The data folder's ``scicar_a549/scicar_a549.h5mu`` (the same values converted) is
    read when present; otherwise the ``.rda`` is downloaded and converted, which needs the
    ``rdata`` package (``pip install 'scmsi[data]'``). The labels are treatment times, not cell
    types; the 1 h and 3 h groups are known to be hard to separate.
    """
    name, sha = _SCICAR_H5MU
    local = data_dir() / "scicar_a549" / name
    if local.is_file():
        if pooch.file_hash(str(local)) != sha:
            raise ValueError(f"sha256 mismatch for {local}; delete it to use the .rda source.")
        rna, atac, time = _scicar_from_h5mu(local)
    else:
        rda = _fetch("scicar_a549/original", _SCICAR_URL, _SCICAR_RDA)["data_A549.rda"]
        rna, atac, time = _scicar_from_rda(rda)
    if not (rna.obs_names.equals(atac.obs_names) and rna.obs_names.isin(time.index).all()):
        raise ValueError("sci-CAR A549: RNA, ATAC and label cell names do not match.")

    atac.layers["normalised"] = atac.X.copy()
    atac.X = atac.X.copy()
    atac.X.eliminate_zeros()
    atac.X.data = (atac.X.data > 0).astype(np.float32)
    if min_peak_fraction > 0:
        frac = np.asarray(atac.X.getnnz(axis=0)).ravel() / atac.n_obs
        atac = atac[:, frac >= min_peak_fraction].copy()

    hours = time.reindex(rna.obs_names).to_numpy()
    levels = sorted(set(hours.tolist()))
    cell_type = pd.Categorical([f"{h}h" for h in hours], categories=[f"{h}h" for h in levels])
    for a in (rna, atac):
        a.obs["time"] = hours
    rna.obs["cell_type"] = cell_type
    with md.set_options(pull_on_update=False):
        mdata = md.MuData({"rna": rna, "atac": atac})
    mdata.obs["cell_type"] = pd.Categorical(cell_type)
    mdata.obs["time"] = hours
    mdata.uns[MODALITY_TYPES_KEY] = {"rna": "continuous", "atac": "accessibility"}
    return mdata


def _eccite_from_rda(path: Path) -> dict[str, ad.AnnData]:
    """Read CiteFuse's ``CITEseq_example.rda``: ``{"rna", "prot", "hto"}`` cells x features."""
    obj = _read_rda(path, "CITEseq_example")
    mods = {}
    for key, name in (("RNA", "rna"), ("ADT", "prot"), ("HTO", "hto")):
        x, cells, features = _dgc_to_csr(obj[key])
        mods[name] = ad.AnnData(x, obs=pd.DataFrame(index=cells), var=pd.DataFrame(index=features))
    return mods


def eccite_pbmc() -> md.MuData:
    """ECCITE-seq PBMC, control sample: RNA + 49 antibodies + 4 hashtags, 500 cells.

    Returns
    -------
    mudata.MuData
        Modalities ``"rna"`` (19,521 genes; the source's ``hg19_`` prefix removed), ``"prot"``
        (49 antibodies, isotype controls IgG1 and IgG2a included) and ``"hto"`` (4 hashtags),
        raw counts (float32 CSR, integer-valued) in ``.X`` and ``.layers["counts"]``.
        ``mdata.obs["hashtag"]`` (categorical) is the hashtag with the highest count: the
        aliquot of one donor's PBMC each cell came from, usable as a technical batch.
        ``mdata.uns["modality_types"] = {"rna": "counts", "prot": "protein"}``. No cell-type
        labels.

    Notes
    -----
    Source: Mimitou et al. 2019 (Nat Methods; GEO GSE126310) via the CiteFuse package data
    (SydneyBioX/CiteFuse ``data/CITEseq_example.rda``, pinned commit). The data folder's
    ``eccite_pbmc/eccite_pbmc.h5mu`` (the same values converted) is read when present;
    otherwise the ``.rda`` is downloaded and converted, which needs the ``rdata`` package
    (``pip install 'scmsi[data]'``).
    """
    name, sha = _ECCITE_H5MU
    local = data_dir() / "eccite_pbmc" / name
    if local.is_file():
        if pooch.file_hash(str(local)) != sha:
            raise ValueError(f"sha256 mismatch for {local}; delete it to use the .rda source.")
        m = md.read_h5mu(local)
        mods = {
            k: ad.AnnData(
                sparse.csr_matrix(m[k].X, dtype=np.float32),
                obs=pd.DataFrame(index=m[k].obs_names.astype(str)),
                var=pd.DataFrame(index=m[k].var_names.astype(str)),
            )
            for k in ("rna", "prot", "hto")
        }
    else:
        rda = _fetch("eccite_pbmc/original", _ECCITE_URL, _ECCITE_RDA)["CITEseq_example.rda"]
        mods = _eccite_from_rda(rda)
    cells = mods["rna"].obs_names
    if not all(a.obs_names.equals(cells) for a in mods.values()):
        raise ValueError("ECCITE-seq: RNA, ADT and HTO cell barcodes do not match.")
    rna_names = mods["rna"].var_names.str.replace(r"^hg19_", "", regex=True)
    mods["rna"].var_names = ad.utils.make_index_unique(pd.Index(rna_names))
    hto = mods["hto"]
    hashtag = pd.Categorical(
        np.asarray(hto.var_names)[np.asarray(hto.X.argmax(axis=1)).ravel()],
        categories=list(hto.var_names),
    )
    for a in mods.values():
        a.layers["counts"] = a.X.copy()
        a.obs["hashtag"] = hashtag
    with md.set_options(pull_on_update=False):
        mdata = md.MuData(mods)
    mdata.obs["hashtag"] = hashtag
    mdata.uns[MODALITY_TYPES_KEY] = {"rna": "counts", "prot": "protein"}
    return mdata


DATASETS: dict[str, Callable[..., md.MuData]] = {
    "inhouse_pbmc": inhouse_pbmc,
    "snare_seq": snare_seq,
    "scicar_a549": scicar_a549,
    "eccite_pbmc": eccite_pbmc,
    "synthetic_citeseq": synthetic_citeseq,
}


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


# ============================================================================ spatial datasets
# Kept in one block, apart from the single-cell loaders above. Spatial loaders return an
# AnnData (spots x genes raw counts, obsm["spatial"] in full-res pixels, uns["spatial"] with
# the image and scale factors where there is one); `scmsi.spatial.to_mudata` builds the model
# input. Labels: obs["domain"].

# 10x Genomics public Visium datasets (Space Ranger 1.1.0). 10x publishes no checksums: pooch
# logs the sha256 of what it downloaded (known_hash=None); pin it in your own registry.
_TENX_URL = "https://cf.10xgenomics.com/samples/spatial-exp/1.1.0/{name}/{name}_{file}"
_TENX_FILES = ("filtered_feature_bc_matrix.h5", "spatial.tar.gz")


def _visium_10x(name: str, subdir: str) -> ad.AnnData:
    """Download (once) and read a public 10x Visium dataset."""
    from .spatial.io import read_visium

    folder = data_dir() / subdir
    if not (folder / "filtered_feature_bc_matrix.h5").is_file():
        target = folder if _is_writable(folder) else Path(pooch.os_cache("scmsi")) / subdir
        for f in _TENX_FILES:
            pooch.retrieve(
                _TENX_URL.format(name=name, file=f),
                known_hash=None,
                fname=f,
                path=target,
                processor=pooch.Untar(extract_dir=".") if f.endswith(".tar.gz") else None,
                progressbar=False,
            )
        folder = target
    return read_visium(folder, library_id=name)


DLPFC_SECTIONS = ("151674", "151675", "151510")


def dlpfc(section: str = "151674") -> ad.AnnData:
    """DLPFC (Maynard et al. 2021, spatialLIBD) Visium section with its 7 layer labels.

    Parameters
    ----------
    section
        ``"151674"`` or ``"151675"`` (5,000 genes, no image; coordinates in the Banksy authors'
        units) or ``"151510"`` (500 genes only; Space Ranger folder with a 600x600 low-res H&E).

    Returns
    -------
    AnnData: raw counts in ``.X`` (CSR float32), ``obsm["spatial"]``, ``obs["domain"]`` (layer,
    NaN for unannotated spots), ``uns["spatial"]`` for 151510.
    """
    section = str(section)
    if section not in DLPFC_SECTIONS:
        raise ValueError(f"DLPFC section must be one of {DLPFC_SECTIONS}, got {section!r}.")
    folder = data_dir() / "dlpfc"
    if section == "151510":
        from .spatial.io import read_visium

        adata = read_visium(folder / "151510", library_id="151510")
        meta = pd.read_csv(folder / "151510" / "metadata.tsv", sep="\t", index_col=0)
        layer = meta["layer_guess_reordered"].reindex(adata.obs_names)
    else:
        f = folder / f"dlpfc_{section}.h5ad"
        if not f.is_file():
            raise FileNotFoundError(
                f"{f} not found: convert the Banksy authors' data/dlpfc{section}.rda "
                "(prabhakarlab/Banksy) as described in the data folder's SOURCE.md."
            )
        adata = ad.read_h5ad(f)
        adata.X = sparse.csr_matrix(adata.X, dtype=np.float32)
        layer = adata.obs["layer"]
    layer = layer.astype(object).where(layer.notna(), None)
    names = {f"Layer{i}": f"L{i}" for i in range(1, 7)}
    adata.obs["domain"] = pd.Categorical(
        [names.get(v, v) if v is not None else np.nan for v in layer]
    )
    adata.obs["section"] = section
    return adata


HER2ST_SECTIONS = ("A1", "B1", "C1", "D1", "E1", "F1", "G2", "H1")


def her2st(section: str = "A1", image: bool = True) -> ad.AnnData:
    """HER2+ breast cancer legacy ST section (Andersson et al. 2021) with pathologist labels.

    Parameters
    ----------
    section
        One of :data:`HER2ST_SECTIONS` (the 8 annotated sections).
    image
        Attach the H&E (only A1 has one here: the repository's 2000-px display copy, scale
        2000/6954 of the original, spot coordinates in original pixels).

    Returns
    -------
    AnnData read with :func:`scmsi.spatial.read_st`; ``obs["domain"]`` = pathologist label.
    """
    from .spatial.io import read_st

    if section not in HER2ST_SECTIONS:
        raise ValueError(f"her2st section must be one of {HER2ST_SECTIONS}, got {section!r}.")
    folder = data_dir() / "her2st"
    img = folder / "images" / f"{section}_HE_image_dark.png"
    adata = read_st(
        folder / "ST-cnts" / f"{section}.tsv.gz",
        folder / "ST-spotfiles" / f"{section}_selection.tsv",
        image=img if image and img.is_file() else None,
        image_scale=2000 / 6954,
        library_id=section,
    )
    lbl = pd.read_csv(folder / "ST-pat-lbl" / f"{section}_labeled_coordinates.tsv", sep="\t")
    lbl = lbl.dropna(subset=["x", "y"])
    lbl.index = [
        f"{int(round(x))}x{int(round(y))}" for x, y in zip(lbl["x"], lbl["y"], strict=True)
    ]
    lbl = lbl[~lbl.index.duplicated()]
    adata.obs["domain"] = pd.Categorical(lbl["label"].reindex(adata.obs_names).to_numpy())
    adata.obs["section"] = section
    return adata


def breast_cancer_visium(with_expression: bool = False) -> ad.AnnData:
    """10x Visium human breast cancer, block A section 1, with SEDR's 20-region annotation.

    The shared data folder holds the Space Ranger ``spatial/`` folder (positions, scale
    factors, 600x600 low-res H&E) and the annotation, but **no count matrix**: the AnnData has
    the 3,798 in-tissue spots and no genes (for image-only analysis). ``with_expression=True``
    downloads the 10x matrix and ``spatial/`` (V1_Breast_Cancer_Block_A_Section_1).

    Returns
    -------
    AnnData with ``obsm["spatial"]``, ``uns["spatial"]`` (``lowres`` image), ``obs["domain"]``
    (``fine_annot_type``, 20 regions) and ``obs["annot_type"]`` (4 classes).
    """
    from .spatial.io import read_visium

    folder = data_dir() / "breast_cancer_visium"
    if with_expression:
        adata = _visium_10x("V1_Breast_Cancer_Block_A_Section_1", "breast_cancer_visium_10x")
    else:
        adata = read_visium(folder, library_id="V1_Breast_Cancer_Block_A_Section_1")
    meta = pd.read_csv(folder / "metadata_SEDR_analyses.tsv", sep="\t", index_col=0)
    meta = meta.reindex(adata.obs_names)
    adata.obs["domain"] = pd.Categorical(meta["fine_annot_type"].to_numpy())
    adata.obs["annot_type"] = pd.Categorical(meta["annot_type"].to_numpy())
    return adata


def mouse_brain_anterior() -> ad.AnnData:
    """10x Visium mouse brain, sagittal anterior section 1 (downloaded from 10x; no labels)."""
    return _visium_10x("V1_Mouse_Brain_Sagittal_Anterior", "mouse_brain_anterior")


SPATIAL_DATASETS: dict[str, Callable[..., ad.AnnData]] = {
    "dlpfc": dlpfc,
    "her2st": her2st,
    "breast_cancer_visium": breast_cancer_visium,
    "mouse_brain_anterior": mouse_brain_anterior,
}
DATASETS.update(SPATIAL_DATASETS)
__all__ += [*SPATIAL_DATASETS, "SPATIAL_DATASETS", "DLPFC_SECTIONS", "HER2ST_SECTIONS"]
