"""Spot tiles of the H&E image and their colour/texture features (no weights needed)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .._constants import SPATIAL_KEY
from .io import get_image

# Ruifrok & Johnston (2001) stain vectors (rows: haematoxylin, eosin, DAB), as in skimage.rgb2hed.
_HED_FROM_RGB = np.linalg.inv(
    np.array([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]], dtype=np.float64)
)


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
