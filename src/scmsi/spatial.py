"""Spatial transcriptomics: Visium/ST reading, spot tiles and image features, spatial graph,
spatial smoothing of the fused coefficients, spatial domains.

Conventions (the same as scanpy and squidpy):

- ``obsm["spatial"]``: spot centres ``(x, y)`` = (column, row) in **full-resolution** image pixels.
- ``uns["spatial"][library_id]``: ``{"images": {"hires"|"lowres"|...: array (H, W, 3)},
  "scalefactors": {"tissue_hires_scalef", "tissue_lowres_scalef", "spot_diameter_fullres"}}``.
  A pixel of image ``img_key`` is at ``obsm["spatial"] * scalefactors[f"tissue_{img_key}_scalef"]``.

How space enters scMSI (the choice, and why)
--------------------------------------------
Two mechanisms, each a parameter that can be switched off:

1. ``niche`` modality (:func:`to_mudata`, ``niche=True``): the mean log-expression of a spot's
   spatial neighbours (PCs), registered as a ``continuous`` modality with its own encoder and
   self-expressive network. The contrastive term then asks a spot's coefficients over the anchors
   to agree with the coefficients its *neighbourhood* gets: anchors are chosen for both the spot
   and its surroundings, which is what a tissue domain (a cortical layer, a tumour region) is.
   This keeps the model's structure (one affinity every view agrees on) and costs O(N k) once.
2. Smoothing of the fused coefficients over the spatial graph (:func:`smooth`, used by
   :func:`spatial_domains` with ``spatial_weight``): ``C <- (1 - a) C + a W C`` for a few rounds,
   ``W`` the row-normalised k-nearest-spot graph. Coefficients are non-negative weights over
   the same anchors, so averaging them is averaging "who are my anchors" votes: a spot that is
   an outlier of its layer is pulled to its neighbours' anchors, a real boundary is kept because
   the two sides vote for different anchors. O(N k A) per round; never N x N.

With neither (``niche=False``, ``spatial_weight=0``) domains are plain scMSI clusters.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import anndata as ad
import numpy as np
import pandas as pd
from scipy import sparse

logger = logging.getLogger(__name__)

SPATIAL_KEY = "spatial"
DOMAIN_KEY = "scmsi_domain"

# Ruifrok & Johnston (2001) stain vectors (rows: haematoxylin, eosin, DAB), as in skimage.rgb2hed.
_HED_FROM_RGB = np.linalg.inv(
    np.array([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]], dtype=np.float64)
)


# ---------------------------------------------------------------------------------- reading
def _read_image(path: Path) -> np.ndarray:
    from PIL import Image

    Image.MAX_IMAGE_PIXELS = None
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


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
    library_id = library_id or path.name
    spatial_dir = path / "spatial"
    pos_file = spatial_dir / "tissue_positions_list.csv"
    if pos_file.is_file():
        pos = pd.read_csv(pos_file, header=None, index_col=0)
    else:
        pos = pd.read_csv(spatial_dir / "tissue_positions.csv", index_col=0)
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

    with open(spatial_dir / "scalefactors_json.json") as f:
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


# ---------------------------------------------------------------------------------- graph
def spatial_graph(
    coords: np.ndarray, n_neighs: int = 6, radius: float | Literal["auto"] | None = "auto"
):
    """Symmetric binary spatial graph of the ``n_neighs`` nearest spots, CSR ``(N, N)``.

    ``radius`` (in the units of ``coords``) drops neighbours further than it, so that spots at
    the tissue edge are not linked to the second ring. ``"auto"``: 1.3 x the median distance
    between nearest spots, which keeps exactly the first ring of a Visium hexagonal grid
    (neighbours at 1 spacing, next ring at 1.73) or of an ST square grid (1 vs 1.41); each
    spot keeps at least its nearest neighbour. None: plain k nearest neighbours.
    KD-tree: O(N k log N) time, O(N k) memory.
    """
    from sklearn.neighbors import NearestNeighbors

    coords = np.asarray(coords, dtype=np.float64)
    n = coords.shape[0]
    k = int(min(n_neighs, n - 1))
    if k < 1:
        return sparse.csr_matrix((n, n), dtype=np.float32)
    dist, idx = NearestNeighbors(n_neighbors=k + 1).fit(coords).kneighbors(coords)
    rows = np.repeat(np.arange(n), k)
    cols, d = idx[:, 1:].ravel(), dist[:, 1:].ravel()
    keep = cols != rows
    if radius == "auto":
        radius = 1.3 * float(np.median(dist[:, 1]))
    if radius is not None:
        keep &= (d <= float(radius)) | (np.tile(np.arange(k), n) == 0)
    g = sparse.csr_matrix((np.ones(keep.sum(), np.float32), (rows[keep], cols[keep])), shape=(n, n))
    g = g.maximum(g.T).tocsr()
    g.setdiag(0)
    g.eliminate_zeros()
    return g


def spatial_neighbors(
    adata,
    n_neighs: int = 6,
    radius: float | Literal["auto"] | None = "auto",
    spatial_key: str = SPATIAL_KEY,
    key_added: str = SPATIAL_KEY,
):
    """k-nearest-spot graph into ``obsp[f"{key_added}_connectivities"]`` (as squidpy names it).

    Parameters
    ----------
    adata
        AnnData/MuData with ``obsm[spatial_key]``.
    n_neighs
        Neighbours per spot (6 = the hexagonal ring of Visium; 4 for the square ST grid).
    radius
        Distance cut-off in coordinate units (see :func:`spatial_graph`).
    """
    g = spatial_graph(np.asarray(adata.obsm[spatial_key]), n_neighs, radius)
    adata.obsp[f"{key_added}_connectivities"] = g
    adata.uns[f"{key_added}_neighbors"] = {"params": {"n_neighs": n_neighs, "radius": radius}}
    return g


def _row_normalise(g) -> sparse.csr_matrix:
    g = sparse.csr_matrix(g, dtype=np.float32)
    deg = np.asarray(g.sum(1)).ravel()
    return sparse.diags((1.0 / np.maximum(deg, 1e-12)).astype(np.float32)) @ g


def smooth(x: np.ndarray, graph, alpha: float = 0.5, n_rounds: int = 3) -> np.ndarray:
    """Spatial smoothing ``x <- (1 - alpha) x + alpha * W x``, ``n_rounds`` times.

    ``W`` is the row-normalised ``graph``; spots without neighbours keep their values.
    ``alpha = 0`` or ``n_rounds = 0`` returns ``x`` unchanged. O(N k d) per round.
    """
    x = np.asarray(x, dtype=np.float32)
    if alpha <= 0 or n_rounds <= 0:
        return x
    if not 0 <= alpha <= 1:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}.")
    w = _row_normalise(graph)
    isolated = np.asarray(graph.sum(1)).ravel() == 0
    for _ in range(int(n_rounds)):
        nb = w @ x
        nb[isolated] = x[isolated]
        x = (1 - alpha) * x + alpha * nb
    return x.astype(np.float32)


# ---------------------------------------------------------------------------------- image
def crop_tiles(
    image: np.ndarray, centres_px: np.ndarray, size: int, fill: float | None = None
) -> np.ndarray:
    """Square tiles of ``size`` pixels centred on ``centres_px`` (x = column, y = row).

    Parameters
    ----------
    image
        ``(H, W)`` or ``(H, W, C)`` array.
    centres_px
        ``(N, 2)`` spot centres in this image's pixels.
    size
        Tile side in pixels (>= 1).
    fill
        Value outside the image; default edge padding (the nearest image pixel).

    Returns
    -------
    ``(N, size, size, C)`` array of ``image``'s dtype.
    """
    img = np.asarray(image)
    if img.ndim == 2:
        img = img[..., None]
    size = max(int(size), 1)
    half = size // 2
    pad = size + 1
    widths = ((pad, pad), (pad, pad), (0, 0))
    padded = (
        np.pad(img, widths, mode="edge")
        if fill is None
        else np.pad(img, widths, mode="constant", constant_values=fill)
    )
    c = np.rint(np.asarray(centres_px, dtype=np.float64)).astype(np.int64)
    h, w = img.shape[:2]
    c[:, 0] = np.clip(c[:, 0], -pad + half, w + pad - size + half - 1)
    c[:, 1] = np.clip(c[:, 1], -pad + half, h + pad - size + half - 1)
    out = np.empty((len(c), size, size, img.shape[2]), dtype=img.dtype)
    for n, (x, y) in enumerate(c):
        r0, c0 = y - half + pad, x - half + pad
        out[n] = padded[r0 : r0 + size, c0 : c0 + size]
    return out


def color_texture_features(tiles: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """Colour and texture statistics of RGB tiles; needs no weights.

    Per tile (values in [0, 1]): mean, sd and 10/50/90th percentiles of R, G, B; mean and sd of
    hue (as cos/sin), saturation and value; mean and sd of haematoxylin and eosin optical density
    (Ruifrok colour deconvolution); the share of bright unstained pixels (background, fat); mean
    gradient magnitude and mean ``|Laplacian|`` of the grey image (texture: nuclei density, fibres).

    Returns
    -------
    ``(N, 28)`` float32 features and their names.
    """
    t = np.asarray(tiles, dtype=np.float32)
    if t.max(initial=0) > 1.5:
        t = t / 255.0
    if t.shape[-1] == 1:
        t = np.repeat(t, 3, -1)
    t = t[..., :3]
    n = t.shape[0]
    flat = t.reshape(n, -1, 3)
    feats, names = [], []

    def add(v, name):
        feats.append(np.asarray(v, np.float32).reshape(n))
        names.append(name)

    for j, ch in enumerate("RGB"):
        add(flat[..., j].mean(1), f"{ch}_mean")
        add(flat[..., j].std(1), f"{ch}_sd")
        for q, v in zip(
            (10, 50, 90), np.percentile(flat[..., j], (10, 50, 90), axis=1), strict=True
        ):
            add(v, f"{ch}_p{q}")
    mx, mn = flat.max(-1), flat.min(-1)
    sat = np.where(mx > 0, (mx - mn) / np.maximum(mx, 1e-6), 0.0)
    r, g, b = flat[..., 0], flat[..., 1], flat[..., 2]
    hue = np.arctan2(np.sqrt(3.0) * (g - b), 2 * r - g - b)
    add(np.cos(hue).mean(1), "hue_cos")
    add(np.sin(hue).mean(1), "hue_sin")
    add(sat.mean(1), "sat_mean")
    add(sat.std(1), "sat_sd")
    add(mx.mean(1), "val_mean")
    add(mx.std(1), "val_sd")
    od = -np.log(np.clip(flat, 1 / 255.0, 1.0))
    hed = od @ _HED_FROM_RGB.astype(np.float32)
    add(hed[..., 0].mean(1), "haem_mean")
    add(hed[..., 0].std(1), "haem_sd")
    add(hed[..., 1].mean(1), "eosin_mean")
    add(hed[..., 1].std(1), "eosin_sd")
    add(((mx > 0.85) & (sat < 0.15)).mean(1), "background_frac")
    grey = t.mean(-1)
    if grey.shape[1] > 2 and grey.shape[2] > 2:
        gy, gx = np.gradient(grey, axis=(1, 2))
        lap = (
            grey[:, 1:-1, 2:] + grey[:, 1:-1, :-2] + grey[:, 2:, 1:-1] + grey[:, :-2, 1:-1]
        ) - 4 * grey[:, 1:-1, 1:-1]
        add(np.sqrt(gx**2 + gy**2).reshape(n, -1).mean(1), "gradient_mean")
        add(np.abs(lap).reshape(n, -1).mean(1), "laplacian_mean")
    else:
        add(np.zeros(n), "gradient_mean")
        add(np.zeros(n), "laplacian_mean")
    return np.stack(feats, 1), names


def image_features(
    adata,
    image: np.ndarray | None = None,
    scale: float | None = None,
    spot_diameter: float | None = None,
    library_id: str | None = None,
    img_key: str | None = None,
    contexts: tuple[float, ...] = (1.0, 3.0),
    min_tile: int = 3,
    extractor: Callable[[np.ndarray], np.ndarray] | None = None,
    spatial_key: str = SPATIAL_KEY,
    key_added: str = "X_image",
) -> np.ndarray:
    """Features of the H&E around each spot, into ``obsm[key_added]`` (spots x features).

    A tile is cropped around each spot from the image at ``obsm[spatial_key] * scale``; its side is
    ``spot_diameter * scale * context`` pixels (at least ``min_tile``), for each context (1 = the
    spot itself, 3 = the spot and its surroundings, useful on low-resolution images where a spot
    is a few pixels wide). The features of all contexts are concatenated.

    Parameters
    ----------
    adata
        AnnData/MuData with ``obsm[spatial_key]`` in full-resolution pixels.
    image, scale, spot_diameter
        Image array, its scale relative to full resolution and the spot diameter in full-res
        pixels. Default: read from ``uns["spatial"][library_id]`` (image ``img_key``: ``hires``
        if present, else ``lowres``).
    contexts
        Tile sizes in spot diameters.
    min_tile
        Smallest tile side in pixels.
    extractor
        Callable ``tiles (n, h, w, 3) float32 in [0, 1] -> (n, d)``, e.g. a pretrained CNN;
        default :func:`color_texture_features` (offline, no weights).
    """
    if image is None:
        image, s, d = get_image(adata, library_id, img_key)
        scale = s if scale is None else scale
        spot_diameter = d if spot_diameter is None else spot_diameter
    if scale is None or spot_diameter is None or not np.isfinite(spot_diameter):
        raise ValueError("Pass `scale` and `spot_diameter` with an explicit `image`.")
    centres = np.asarray(adata.obsm[spatial_key], dtype=np.float64) * float(scale)
    blocks, names = [], []
    for ctx in contexts:
        size = max(int(round(spot_diameter * scale * ctx)), int(min_tile))
        tiles = crop_tiles(image, centres, size).astype(np.float32)
        if tiles.max(initial=0) > 1.5:
            tiles /= 255.0
        if extractor is None:
            f, nm = color_texture_features(tiles)
        else:
            f = np.asarray(extractor(tiles), dtype=np.float32).reshape(len(tiles), -1)
            nm = [f"f{j}" for j in range(f.shape[1])]
        blocks.append(f)
        names += [f"ctx{ctx:g}_{x}" for x in nm]
    feats = np.concatenate(blocks, 1).astype(np.float32)
    adata.obsm[key_added] = feats
    adata.uns[f"{key_added}_features"] = names
    return feats


# ---------------------------------------------------------------------------------- model input
def _standardise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    sd = x.std(0)
    return ((x - x.mean(0)) / np.where(sd > 1e-8, sd, 1.0)).astype(np.float32)


def niche_features(
    adata, graph=None, n_comps: int = 30, n_neighs: int = 6, layer: str | None = None, seed: int = 0
) -> np.ndarray:
    """PCs of the mean log-normalised expression over each spot's spatial neighbours (not itself).

    ``graph`` defaults to :func:`spatial_graph` on ``obsm["spatial"]``. O(N k G) + a PCA.
    """
    from ._anchors import lognormalize

    x = adata.X if layer is None else adata.layers[layer]
    g = spatial_graph(adata.obsm[SPATIAL_KEY], n_neighs) if graph is None else graph
    return _neighbourhood_pcs(lognormalize(x), g, n_comps, seed)


def _neighbourhood_pcs(x, graph, n_comps: int, seed: int = 0) -> np.ndarray:
    """PCs of the neighbour mean ``W x`` (``W`` row-normalised ``graph``)."""
    from sklearn.decomposition import TruncatedSVD

    nb = _row_normalise(graph) @ x
    nb = np.asarray(nb.toarray() if sparse.issparse(nb) else nb, dtype=np.float32)
    nb -= nb.mean(0)
    n_comps = int(min(n_comps, nb.shape[1] - 1, nb.shape[0] - 1))
    return TruncatedSVD(n_comps, random_state=seed).fit_transform(nb).astype(np.float32)


def to_mudata(
    adata: ad.AnnData,
    image: bool | str = "auto",
    niche: bool = True,
    n_top_genes: int | None = 3000,
    n_neighs: int = 6,
    n_niche_comps: int = 30,
    image_key: str = "X_image",
    layer: str | None = None,
):
    """Build the scMSI input from a spatial AnnData: expression + image + niche.

    Parameters
    ----------
    adata
        Spots x genes raw counts (``.X`` or ``layer``), ``obsm["spatial"]``, optionally an image
        in ``uns["spatial"]`` or features in ``obsm[image_key]``.
    image
        Add an ``image`` modality (standardised ``obsm[image_key]``; computed with
        :func:`image_features` when absent and an image is stored). ``"auto"``: when available.
    niche
        Add the ``niche`` modality (:func:`niche_features`; with no genes, the PCs of the
        neighbours' mean image features).
    n_top_genes
        Keep this many highly variable genes (seurat_v3 on counts), plus the expressed genes
        of any spot that would have no counts in them (so no spot is lost); None keeps all.
    n_neighs
        Spatial neighbours (6: Visium hexagonal ring).

    Returns
    -------
    mdata, modalities
        MuData with ``rna`` (counts; absent when ``adata`` has no genes) and optionally
        ``image``/``niche`` (continuous), and the
        ``modalities`` dict to pass to :meth:`scmsi.SCMSI.setup_mudata`. ``mdata.obsm["spatial"]``,
        ``mdata.obsp["spatial_connectivities"]`` and ``mdata.uns["spatial"]`` are set.
    """
    import mudata as md
    import scanpy as sc

    if SPATIAL_KEY not in adata.obsm:
        raise KeyError("adata.obsm['spatial'] (spot coordinates) is required.")
    rna = ad.AnnData(
        sparse.csr_matrix(adata.X if layer is None else adata.layers[layer], dtype=np.float32),
        obs=adata.obs.copy(),
        var=pd.DataFrame(index=adata.var_names.copy()),
    )
    if n_top_genes is not None and rna.n_vars > n_top_genes:
        hvg = sc.pp.highly_variable_genes(
            rna, n_top_genes=n_top_genes, flavor="seurat_v3", inplace=False
        )
        keep = hvg["highly_variable"].to_numpy()
        # A near-empty spot (1-2 counts, e.g. at a tissue edge) can have none in the HVGs and
        # could not be modelled; adding its few expressed genes keeps every spot, so the
        # result stays aligned with the user's AnnData.
        empty = np.asarray(rna.X[:, keep].sum(1)).ravel() == 0
        if empty.any():
            keep = keep | (np.asarray(rna.X[empty].sum(0)).ravel() > 0)
        rna = rna[:, keep].copy()
    graph = spatial_graph(adata.obsm[SPATIAL_KEY], n_neighs)
    has_genes = rna.n_vars > 0  # image-only data (e.g. no count matrix) have no genes
    mods, kinds = ({"rna": rna}, {"rna": "counts"}) if has_genes else ({}, {})

    has_image = image_key in adata.obsm or bool(
        adata.uns.get(SPATIAL_KEY, {})
        and any(lib.get("images") for lib in adata.uns[SPATIAL_KEY].values())
    )
    if image is True and not has_image:
        raise ValueError(f"image=True but there is no obsm[{image_key!r}] and no stored image.")
    if image is True or (image == "auto" and has_image):
        if image_key in adata.obsm:
            feats = adata.obsm[image_key]
        else:  # on a light copy: the user's AnnData is left untouched
            view = ad.AnnData(obs=pd.DataFrame(index=adata.obs_names.copy()))
            view.obsm[SPATIAL_KEY] = np.asarray(adata.obsm[SPATIAL_KEY])
            view.uns[SPATIAL_KEY] = adata.uns[SPATIAL_KEY]
            feats = image_features(view)
        mods["image"] = ad.AnnData(_standardise(feats), obs=pd.DataFrame(index=rna.obs_names))
        kinds["image"] = "continuous"
    if not mods:
        raise ValueError("No genes and no image features: nothing to model.")
    if niche:
        if has_genes:
            z = niche_features(rna, graph, n_comps=n_niche_comps)
        else:  # image only: the niche is the neighbourhood's image
            z = _neighbourhood_pcs(mods["image"].X, graph, n_niche_comps)
        mods["niche"] = ad.AnnData(_standardise(z), obs=pd.DataFrame(index=rna.obs_names))
        kinds["niche"] = "continuous"
    with md.set_options(pull_on_update=False):
        mdata = md.MuData(mods)
    mdata.obs = adata.obs.copy()
    mdata.obsm[SPATIAL_KEY] = np.asarray(adata.obsm[SPATIAL_KEY])
    mdata.obsp[f"{SPATIAL_KEY}_connectivities"] = graph
    if SPATIAL_KEY in adata.uns:
        mdata.uns[SPATIAL_KEY] = adata.uns[SPATIAL_KEY]
    mdata.uns["modality_types"] = kinds
    return mdata, kinds


# ---------------------------------------------------------------------------------- domains
def refine_domains(labels, graph) -> np.ndarray:
    """Majority vote over spatial neighbours: a spot takes the label that more than half of its
    neighbours share when its own label differs (SpaGCN's refinement). One pass, O(N k)."""
    labels = np.asarray(labels).astype(str)
    g = sparse.csr_matrix(graph)
    out = labels.copy()
    for n in range(g.shape[0]):
        nb = g.indices[g.indptr[n] : g.indptr[n + 1]]
        if len(nb) == 0:
            continue
        vals, counts = np.unique(labels[nb], return_counts=True)
        j = counts.argmax()
        if counts[j] > len(nb) / 2 and vals[j] != labels[n]:
            out[n] = vals[j]
    return out


def _graph_of(data, n_neighs: int) -> sparse.csr_matrix:
    key = f"{SPATIAL_KEY}_connectivities"
    if key in data.obsp:
        return sparse.csr_matrix(data.obsp[key])
    if SPATIAL_KEY not in data.obsm:
        raise KeyError("Need obsm['spatial'] (or obsp['spatial_connectivities']).")
    return spatial_graph(np.asarray(data.obsm[SPATIAL_KEY]), n_neighs)


def informative_modalities(
    coefs: dict[str, np.ndarray], min_anchors: float = 2.0, min_distinct: float = 0.05
) -> tuple[list[str], list[str]]:
    """Split modalities into those whose coefficients carry an affinity and degenerate ones.

    A modality is degenerate when its self-expression fell into the dead-ReLU corner: each
    spot keeps fewer than ``min_anchors`` anchors on average *and* the best anchor is one of
    fewer than ``min_distinct`` x A distinct anchors over all spots (a "hub" anchor expresses
    everyone). Averaging such rows into the fused affinity only adds a near-constant one-hot
    column. Label-free; if every modality is degenerate, all are kept.
    """
    names = [m for m in coefs if m not in ("fused", "observed")]
    bad = []
    for m in names:
        c = np.asarray(coefs[m])
        nnz = float((c > 0).sum(1).mean())
        distinct = len(np.unique(c.argmax(1))) / c.shape[1]
        if nnz < min_anchors and distinct < min_distinct:
            bad.append(m)
    good = [m for m in names if m not in bad]
    return (good, bad) if good else (names, [])


def spatial_domains(
    data,
    model=None,
    n_domains: int | None = None,
    spatial_weight: float = 0.5,
    n_rounds: int = 3,
    n_neighs: int = 6,
    refine: bool = False,
    use_rep: str | None = None,
    n_comps: int | None = None,
    method: Literal["kmeans", "gmm"] = "kmeans",
    fusion: Literal["mean", "precision", "adaptive"] = "mean",
    embedding: Literal["spectral", "pca"] | None = None,
    seed: int = 0,
    key_added: str = DOMAIN_KEY,
) -> pd.Categorical:
    """Spatial domains from scMSI's fused coefficients smoothed over the spatial graph.

    Modalities whose coefficients are degenerate (:func:`informative_modalities`) are left out
    of the fusion, with a warning; ``uns[key_added]["params"]["modalities"]`` lists those used.

    Coefficients (cells x anchors) -> :func:`smooth` (``spatial_weight``, ``n_rounds``) -> PCA
    or spectral embedding (``embedding``; ``n_comps``, default the model's latent size) ->
    ``n_domains`` clusters (Gaussian mixture or k-means), or, with ``n_domains=None``, Leiden
    on a 15-NN graph of the embedding at the resolution with the best silhouette
    (:func:`scmsi.tl.leiden_auto`, label-free) -> optional majority-vote refinement over
    spatial neighbours.

    Parameters
    ----------
    data
        MuData/AnnData the model was set up with, with ``obsm["spatial"]``.
    model
        Trained :class:`scmsi.SCMSI`; or None with ``use_rep``.
    n_domains
        Number of domains; None = label-free choice.
    spatial_weight
        ``alpha`` of :func:`smooth`; 0 switches spatial smoothing off.
    n_rounds
        Smoothing rounds.
    n_neighs
        Spatial neighbours when ``obsp["spatial_connectivities"]`` is absent.
    refine
        Majority vote over spatial neighbours (:func:`refine_domains`).
    use_rep
        Cluster ``obsm[use_rep]`` (smoothed the same way) instead of the model's coefficients.
    method
        ``"kmeans"`` (n_init=10; stable over seeds) or ``"gmm"`` (full-covariance Gaussian
        mixture, as mclust in STAGATE/GraphST; more variable over seeds here); used only with
        ``n_domains``.
    fusion
        ``"mean"`` (equal weights), ``"precision"`` or ``"adaptive"`` (per-spot modality
        weights, :meth:`scmsi.SCMSI.get_modality_weights`, renormalised over the modalities
        used).
    embedding
        ``"spectral"``: the spectral embedding of the spot-anchor graph that the smoothed
        coefficients define (:func:`scmsi.tl.anchor_spectral_embedding`, O(N A^2)); it weighs
        an anchor by how many spots use it, so a few hub anchors do not dominate as they do a
        PCA. ``"pca"``: PCA of the smoothed coefficients (or of ``obsm[use_rep]``). None:
        ``"spectral"`` for a model's coefficients, ``"pca"`` with ``use_rep``.

    Notes
    -----
    Writes ``obs[key_added]``, ``obsm["X_scmsi_spatial"]`` (embedding) and, with a model,
    ``obsm["scmsi_coef"]`` / ``obsm["scmsi_coef_smoothed"]`` (and, with per-spot
    weights, ``obsm["scmsi_modality_weights"]``: spots x modalities used).
    """
    from sklearn.decomposition import PCA

    from ._cluster import anchor_spectral_embedding, cluster, leiden_auto
    from ._fusion import check_fusion

    check_fusion(fusion)
    if embedding is None:
        embedding = "pca" if use_rep is not None or model is None else "spectral"
    if embedding not in ("pca", "spectral"):
        raise ValueError(f"embedding must be 'spectral', 'pca' or None, got {embedding!r}.")
    if embedding == "spectral" and (model is None or use_rep is not None):
        raise ValueError(
            "embedding='spectral' embeds the model's coefficients (a spot-anchor graph); "
            "with use_rep, use embedding='pca'."
        )
    graph = _graph_of(data, n_neighs)
    if use_rep is not None:
        x = np.asarray(data.obsm[use_rep], dtype=np.float32)
        n_default = min(x.shape[1], 30)
    elif model is not None:
        # one pass: a weighted fusion's per-spot weights come with the coefficients
        coefs = model.get_coefficients(data, return_all=True, fusion=fusion)
        names = model.modality_names
        used, dropped = informative_modalities({m: coefs[m] for m in names})
        if dropped:
            logger.warning(
                "Coefficients of %s are degenerate (each spot expressed by about one anchor, "
                "the same for most spots): domains use %s only.",
                dropped,
                used,
            )
        from ._fusion import fuse_coefficients

        weights = None
        if fusion != "mean":  # a one-modality model has no weights: 1, written all the same
            w = coefs.get("weights", np.ones((data.n_obs, len(names)), np.float32))
            weights = w[:, [names.index(m) for m in used]]
            weights /= np.maximum(weights.sum(1, keepdims=True), 1e-12)
            data.obsm["scmsi_modality_weights"] = weights
        x = fuse_coefficients([coefs[m] for m in used], weights=weights)
        data.obsm["scmsi_coef"] = x
        n_default = model.module.n_latent
    else:
        raise ValueError("Pass a trained `model` or `use_rep`.")
    xs = smooth(x, graph, spatial_weight, n_rounds)
    if model is not None and use_rep is None:
        data.obsm["scmsi_coef_smoothed"] = xs
    k = int(min(n_comps or n_default, xs.shape[1] - 1, xs.shape[0] - 1))
    if k < 1:
        emb = xs
    elif embedding == "spectral":
        emb = anchor_spectral_embedding(xs, k)
    else:
        emb = PCA(k, random_state=seed).fit_transform(xs).astype(np.float32)
    data.obsm["X_scmsi_spatial"] = emb
    info: dict = {
        "spatial_weight": spatial_weight,
        "n_rounds": n_rounds,
        "refine": refine,
        "embedding": embedding,
    }
    if model is not None and use_rep is None:
        info.update(modalities=used, fusion=fusion)
    if n_domains is not None:
        if method == "gmm":
            from sklearn.mixture import GaussianMixture

            labels = GaussianMixture(
                int(n_domains), covariance_type="full", random_state=seed, reg_covar=1e-4
            ).fit_predict(emb)
            labels = labels.astype(str)
        else:
            labels = np.asarray(cluster(emb, int(n_domains), "kmeans", seed))
        info["method"] = method
    else:
        import scanpy as sc

        tmp = ad.AnnData(obs=pd.DataFrame(index=[str(i) for i in range(emb.shape[0])]))
        tmp.obsm["X"] = emb
        sc.pp.neighbors(tmp, n_neighbors=15, use_rep="X", random_state=seed)
        labels, lei = leiden_auto(tmp.obsp["connectivities"], emb, seed=seed)
        labels = np.asarray(labels).astype(str)
        info.update(method="leiden_auto", resolution=lei["resolution"])
    if refine:
        labels = refine_domains(labels, graph)
    cats = sorted(np.unique(labels), key=lambda v: (len(v), v))
    out = pd.Categorical(labels, categories=cats)
    data.obs[key_added] = out
    data.uns[key_added] = {"params": info}
    return out
