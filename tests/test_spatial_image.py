"""scmsi.spatial.image: tiles around spots and their colour/texture features."""

import numpy as np
import pytest

from scmsi import spatial as sp
from tests._synthetic import synthetic_visium


def _squares_image(scale, spot_diameter, centres_full, colours, size=(400, 500)):
    """White image with one coloured square (the spot's footprint) per spot."""
    img = np.full((*size, 3), 255, np.uint8)
    half = int(round(spot_diameter * scale / 2))
    for (x, y), c in zip(centres_full, colours, strict=True):
        cx, cy = int(round(x * scale)), int(round(y * scale))
        img[cy - half : cy + half + 1, cx - half : cx + half + 1] = c
    return img


@pytest.mark.parametrize("scale", [1.0, 0.25, 0.08])
def test_crop_tiles_returns_the_colour_at_each_spot(scale):
    rng = np.random.default_rng(0)
    spot_diameter = 120.0
    centres = np.array([[400.0, 300.0], [1200.0, 900.0], [3000.0, 2400.0], [5600.0, 4400.0]])
    colours = rng.integers(0, 200, (4, 3)).astype(np.uint8)
    shape = (int(4800 * scale) + 20, int(6000 * scale) + 20)
    img = _squares_image(scale, spot_diameter, centres, colours, shape)
    size = max(int(round(spot_diameter * scale * 0.6)), 1)  # inside the square
    tiles = sp.crop_tiles(img, centres * scale, size)
    assert tiles.shape == (4, size, size, 3)
    for t, c in zip(tiles, colours, strict=True):
        assert (t.reshape(-1, 3) == c).all()


def test_crop_tiles_at_the_border_pads_with_edge_pixels():
    img = np.zeros((10, 10, 3), np.uint8)
    img[:, 0] = 50
    tiles = sp.crop_tiles(img, np.array([[0.0, 5.0], [-30.0, -30.0]]), 5)
    assert tiles.shape == (2, 5, 5, 3)
    assert (tiles[0][:, :3] == 50).all()  # left of the image: copies of column 0
    tiles = sp.crop_tiles(img, np.array([[0.0, 5.0]]), 5, fill=255)
    assert (tiles[0][:, :2] == 255).all()


def test_image_features_use_scale_factors_and_separate_colours():
    ad_ = synthetic_visium(n_rows=12, n_cols=12, n_domains=2, seed=1)
    feats = sp.image_features(ad_)
    names = ad_.uns["X_image_features"]
    assert feats.shape == (ad_.n_obs, 2 * 28) and len(names) == feats.shape[1]
    assert np.isfinite(feats).all()
    red = feats[:, names.index("ctx1_R_mean")]
    dom = ad_.obs["domain"].to_numpy()
    # the two bands have different colours: the spot tiles (context 1) tell them apart
    assert abs(red[dom == "D0"].mean() - red[dom == "D1"].mean()) > 0.2
    assert red[dom == "D0"].std() < 0.05


def test_image_features_with_custom_extractor_and_explicit_image():
    ad_ = synthetic_visium(n_rows=6, n_cols=6)
    img, scale, diam = sp.get_image(ad_)
    feats = sp.image_features(
        ad_,
        image=img,
        scale=scale,
        spot_diameter=diam,
        contexts=(1.0,),
        extractor=lambda t: t.mean(axis=(1, 2)),
        key_added="X_rgb",
    )
    assert feats.shape == (36, 3) and "X_rgb" in ad_.obsm
    with pytest.raises(ValueError, match="scale"):
        sp.image_features(ad_, image=img)
