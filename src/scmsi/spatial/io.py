"""Reading spatial data: 10x Visium folders, legacy ST (her2st layout), stored images, spot
annotation tables."""

from __future__ import annotations

import json
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
from scipy import sparse

from .._constants import SPATIAL_KEY


def _read_image(path: Path) -> np.ndarray:
    from PIL import Image

    Image.MAX_IMAGE_PIXELS = None
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


POSITION_FILES = ("tissue_positions_list.csv", "tissue_positions.csv")  # Space Ranger 1, 2
SCALEFACTORS_FILE = "scalefactors_json.json"


def find_visium(path: str | Path) -> tuple[Path, str]:
    """The Space Ranger folder and its count matrix's file name, from what a user points at.

    Parameters
    ----------
    path
        The Space Ranger ``outs/`` folder, the run folder holding ``outs/``, or the ``.h5``
        count matrix inside ``outs/`` (next to ``spatial/``).

    Returns
    -------
    ``(folder, counts_file)`` to pass to :func:`read_visium`.

    Raises
    ------
    FileNotFoundError
        When ``path`` does not exist, is a matrix without spatial data (no ``spatial/`` next to
        it), or the folder lacks ``spatial/``'s positions or scale factors.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist.")
    if path.is_file():
        folder, counts_file = path.parent, path.name
    else:
        outs = path / "outs"
        folder = outs if not (path / "spatial").is_dir() and (outs / "spatial").is_dir() else path
        counts_file = "filtered_feature_bc_matrix.h5"
    _check_spaceranger(folder, path)
    return folder, counts_file


def _check_spaceranger(folder: Path, given: Path) -> None:
    """Raise, naming the missing piece and the fix, unless ``folder`` has Space Ranger's
    ``spatial/`` (positions and scale factors)."""
    spatial_dir = folder / "spatial"
    if not spatial_dir.is_dir():
        if given.is_file():
            raise FileNotFoundError(
                f"{given} is a count matrix without spatial data (no spatial/ folder next to "
                "it): pass the Space Ranger outs/ folder, which holds the matrix and spatial/ "
                f"(spot positions, scale factors, H&E). Single-cell data: `scmsi fit {given}`."
            )
        raise FileNotFoundError(
            f"{folder} is not a Space Ranger output folder (no spatial/ in it or in outs/): "
            "pass the folder holding filtered_feature_bc_matrix.h5 and spatial/. A legacy ST "
            "section (counts table, spot file, image) is read in Python with "
            "scmsi.spatial.read_st."
        )
    missing = [
        name
        for name, present in [
            (" or ".join(POSITION_FILES), any((spatial_dir / f).is_file() for f in POSITION_FILES)),
            (SCALEFACTORS_FILE, (spatial_dir / SCALEFACTORS_FILE).is_file()),
        ]
        if not present
    ]
    if missing:
        raise FileNotFoundError(
            f"{spatial_dir} lacks {' and '.join(missing)}: copy the whole spatial/ folder that "
            "Space Ranger wrote."
        )


def read_spot_table(path: str | Path, obs_names: pd.Index) -> pd.DataFrame:
    """A table of spot annotations (e.g. layer labels) aligned to a section's spots.

    Parameters
    ----------
    path
        Tab-separated (``.tsv``, ``.txt``) or comma-separated (``.csv``) table, the spot
        barcodes in its first column (as ``metadata.tsv`` of spatialLIBD/DeepST).
    obs_names
        The section's spot barcodes, ``(N,)``.

    Returns
    -------
    DataFrame ``(N, columns)`` in ``obs_names``' order; spots absent from the table hold NaN.

    Raises
    ------
    ValueError
        When no row of the table names a spot of the section.
    """
    path = Path(path)
    table = pd.read_csv(path, sep="," if path.suffix == ".csv" else "\t", index_col=0)
    table.index = table.index.astype(str)
    if not obs_names.isin(table.index).any():
        raise ValueError(
            f"{path}: none of its {len(table)} rows names a spot of the section (rows e.g. "
            f"{table.index[:3].tolist()}, spots e.g. {obs_names[:3].tolist()}); its first "
            "column must hold the spot barcodes."
        )
    return table.reindex(obs_names)


def read_visium(
    path: str | Path,
    counts_file: str = "filtered_feature_bc_matrix.h5",
    library_id: str | None = None,
    load_images: bool = True,
) -> ad.AnnData:
    """Read a 10x Visium Space Ranger output folder (as ``scanpy.read_visium`` does).

    Parameters
    ----------
    path
        Folder with ``counts_file`` and ``spatial/`` (``tissue_positions_list.csv`` or
        ``tissue_positions.csv``, ``scalefactors_json.json``, ``tissue_{hires,lowres}_image.png``).
    counts_file
        10x HDF5 matrix inside ``path``. If it is missing, an AnnData with the in-tissue spots and
        no genes is returned (image-only analysis).
    library_id
        Key under ``uns["spatial"]``; default the folder name.
    load_images
        Read the hires/lowres PNGs present.

    Returns
    -------
    AnnData with raw counts in ``.X`` (CSR float32), ``obs`` ``in_tissue``, ``array_row``,
    ``array_col``, ``obsm["spatial"]`` (full-res pixels, x = column, y = row) and
    ``uns["spatial"][library_id]``.
    """
    import scanpy as sc

    path = Path(path)
    _check_spaceranger(path, path)
    library_id = library_id or path.name
    spatial_dir = path / "spatial"
    pos_file = spatial_dir / POSITION_FILES[0]
    if pos_file.is_file():
        pos = pd.read_csv(pos_file, header=None, index_col=0)
    else:
        pos = pd.read_csv(spatial_dir / POSITION_FILES[1], index_col=0)
    pos.columns = ["in_tissue", "array_row", "array_col", "pxl_row", "pxl_col"]
    pos.index = pos.index.astype(str)

    if (path / counts_file).is_file():
        adata = sc.read_10x_h5(path / counts_file)
        adata.var_names_make_unique()
        adata.X = sparse.csr_matrix(adata.X, dtype=np.float32)
    else:
        cells = pos.index[pos["in_tissue"] == 1]
        adata = ad.AnnData(
            sparse.csr_matrix((len(cells), 0), dtype=np.float32),
            obs=pd.DataFrame(index=cells),
        )
    missing = adata.obs_names.difference(pos.index)
    if len(missing):
        raise ValueError(f"{len(missing)} barcodes have no position, e.g. {list(missing[:3])}.")
    pos = pos.loc[adata.obs_names]
    adata.obs[["in_tissue", "array_row", "array_col"]] = pos[
        ["in_tissue", "array_row", "array_col"]
    ].to_numpy()
    adata.obsm[SPATIAL_KEY] = pos[["pxl_col", "pxl_row"]].to_numpy(dtype=np.float64)

    with open(spatial_dir / SCALEFACTORS_FILE) as f:
        scalefactors = json.load(f)
    images = {}
    if load_images:
        for res in ("hires", "lowres"):
            f = spatial_dir / f"tissue_{res}_image.png"
            if f.is_file():
                images[res] = _read_image(f)
    adata.uns[SPATIAL_KEY] = {library_id: {"images": images, "scalefactors": scalefactors}}
    return adata


def read_st(
    counts: str | Path | pd.DataFrame,
    spots: str | Path | pd.DataFrame,
    image: str | Path | np.ndarray | None = None,
    image_scale: float = 1.0,
    spot_diameter: float | None = None,
    library_id: str = "st",
) -> ad.AnnData:
    """Adapter for legacy Spatial Transcriptomics (ST; her2st layout).

    Parameters
    ----------
    counts
        Spots x genes counts (TSV, index ``"{x}x{y}"`` array coordinates), or a DataFrame.
    spots
        Spot detection file (``x, y, pixel_x, pixel_y``; ``*_selection.tsv`` of the ST detector),
        pixel coordinates in the original image.
    image
        H&E image (path or array), optional. ``image_scale``: its size / the original image's.
    spot_diameter
        Spot diameter in original-image pixels; default half the median distance between
        neighbouring spots (ST spots are 100 um wide on a 200 um grid).
    library_id
        Key under ``uns["spatial"]``.

    Returns
    -------
    AnnData laid out as :func:`read_visium` returns it (image under ``images["hires"]`` with
    ``tissue_hires_scalef = image_scale``).
    """
    df = counts if isinstance(counts, pd.DataFrame) else pd.read_csv(counts, sep="\t", index_col=0)
    sp = spots if isinstance(spots, pd.DataFrame) else pd.read_csv(spots, sep="\t")
    sp = sp.copy()
    sp.index = [f"{int(round(x))}x{int(round(y))}" for x, y in zip(sp["x"], sp["y"], strict=True)]
    sp = sp[~sp.index.duplicated()]
    keep = df.index.astype(str).intersection(sp.index, sort=False)
    df = df.loc[keep]
    adata = ad.AnnData(
        sparse.csr_matrix(df.to_numpy(dtype=np.float32)),
        obs=pd.DataFrame(index=keep.astype(str)),
        var=pd.DataFrame(index=ad.utils.make_index_unique(pd.Index(df.columns.astype(str)))),
    )
    sp = sp.loc[keep]
    adata.obs["array_col"] = sp["x"].round().astype(int).to_numpy()
    adata.obs["array_row"] = sp["y"].round().astype(int).to_numpy()
    xy = sp[["pixel_x", "pixel_y"]].to_numpy(dtype=np.float64)
    adata.obsm[SPATIAL_KEY] = xy
    if spot_diameter is None:
        from sklearn.neighbors import NearestNeighbors

        d, _ = NearestNeighbors(n_neighbors=2).fit(xy).kneighbors(xy)
        spot_diameter = 0.5 * float(np.median(d[:, 1]))
    images = {}
    if image is not None:
        images["hires"] = _read_image(Path(image)) if not isinstance(image, np.ndarray) else image
    adata.uns[SPATIAL_KEY] = {
        library_id: {
            "images": images,
            "scalefactors": {
                "tissue_hires_scalef": float(image_scale),
                "spot_diameter_fullres": float(spot_diameter),
            },
        }
    }
    return adata


def _library(adata, library_id: str | None) -> tuple[str, dict]:
    libs = adata.uns.get(SPATIAL_KEY, {})
    if not libs:
        raise KeyError("uns['spatial'] is empty: pass `image`, `scale` and `spot_diameter`.")
    library_id = library_id or next(iter(libs))
    return library_id, libs[library_id]


def get_image(
    adata, library_id: str | None = None, img_key: str | None = None
) -> tuple[np.ndarray, float, float]:
    """``(image, scale, spot_diameter_fullres)`` of a stored image (``hires`` preferred)."""
    _, lib = _library(adata, library_id)
    images, sf = lib.get("images", {}), lib.get("scalefactors", {})
    if img_key is None:
        img_key = next((k for k in ("fullres", "hires", "lowres") if k in images), None)
    if img_key is None or img_key not in images:
        raise KeyError(f"No image {img_key!r} in uns['spatial'] (has {list(images)}).")
    scale = 1.0 if img_key == "fullres" else float(sf[f"tissue_{img_key}_scalef"])
    return images[img_key], scale, float(sf.get("spot_diameter_fullres", np.nan))
