"""Synthetic CITE-seq-like and Visium-like test data with known cell types (tests only: the
user-facing generator is :func:`scmsi.datasets.synthetic_citeseq`)."""

from __future__ import annotations

import anndata as ad
import mudata
import numpy as np
import pandas as pd
from mudata import MuData
from scipy import sparse


def synthetic_cite(
    n_cells: int = 600,
    n_genes: int = 300,
    n_proteins: int = 12,
    n_types: int = 4,
    n_batches: int = 1,
    batch_effect: float = 0.5,
    seed: int = 0,
) -> MuData:
    """RNA (NB counts) + protein (background/foreground NB) for ``n_types`` cell types.

    Each type over-expresses its own gene program (20% of genes) and a subset of proteins;
    each batch scales genes by log-normal factors of sd ``batch_effect``. Labels in
    ``obs["cell_type"]``, batches in ``obs["batch"]``; counts in ``.X`` and ``layers["counts"]``.
    """
    rng = np.random.default_rng(seed)
    types = rng.integers(n_types, size=n_cells)
    batches = rng.integers(n_batches, size=n_cells)

    base = rng.normal(-1.0, 1.0, n_genes)
    program = rng.random((n_types, n_genes)) < 0.2
    log_mu = base[None, :] + 2.0 * program[types]
    log_mu += rng.normal(0, batch_effect, (n_batches, n_genes))[batches]
    library = rng.lognormal(np.log(2000), 0.3, n_cells)
    mu = np.exp(log_mu)
    mu = mu / mu.sum(1, keepdims=True) * library[:, None]
    rna = rng.negative_binomial(5, 5 / (5 + mu)).astype(np.float32)

    fore = rng.random((n_types, n_proteins)) < 0.4
    back = rng.lognormal(np.log(20), 0.3, n_proteins)
    prot_mu = back[None, :] * np.where(fore[types], rng.lognormal(np.log(15), 0.3), 1.0)
    prot = rng.negative_binomial(10, 10 / (10 + prot_mu)).astype(np.float32)

    obs = pd.DataFrame(
        {
            "cell_type": pd.Categorical([f"type{t}" for t in types]),
            "batch": pd.Categorical([f"batch{b}" for b in batches]),
        },
        index=[f"cell{i}" for i in range(n_cells)],
    )
    mods = {}
    for name, x, prefix in (("rna", rna, "gene"), ("prot", prot, "protein")):
        a = ad.AnnData(
            sparse.csr_matrix(x) if name == "rna" else x,
            obs=obs.copy(),
            var=pd.DataFrame(index=[f"{prefix}{j}" for j in range(x.shape[1])]),
        )
        a.layers["counts"] = a.X.copy()
        mods[name] = a
    with mudata.set_options(pull_on_update=False):  # obs is set below, not pulled from mods
        mdata = MuData(mods)
    mdata.obs = obs.copy()
    mdata.uns["modality_types"] = {"rna": "counts", "prot": "protein"}
    return mdata


def synthetic_visium(
    n_rows: int = 20,
    n_cols: int = 20,
    n_genes: int = 60,
    n_domains: int = 3,
    spacing: float = 100.0,
    spot_diameter: float = 55.0,
    scale: float = 0.2,
    noise: float = 0.6,
    seed: int = 0,
):
    """A Visium-like section: hexagonal grid, ``n_domains`` horizontal bands (layers).

    Each band over-expresses its own genes (weakly, so single spots are noisy) and has its own
    colour in a synthetic H&E image at ``scale`` of full resolution. Returns an AnnData laid out
    as :func:`scmsi.spatial.read_visium` returns it, with the band in ``obs["domain"]``.
    """
    rng = np.random.default_rng(seed)
    rows, cols = np.meshgrid(np.arange(n_rows), np.arange(n_cols), indexing="ij")
    rows, cols = rows.ravel(), cols.ravel()
    x = (cols + 0.5 * (rows % 2)) * spacing + spacing
    y = rows * spacing * np.sqrt(3) / 2 + spacing
    domain = np.minimum((rows * n_domains) // n_rows, n_domains - 1)
    n = len(x)
    program = rng.random((n_domains, n_genes)) < 0.3
    log_mu = rng.normal(-1.0, 1.0, n_genes)[None, :] + 1.0 * program[domain]
    log_mu += rng.normal(0, noise, (n, n_genes))
    mu = np.exp(log_mu)
    mu = mu / mu.sum(1, keepdims=True) * rng.lognormal(np.log(1500), 0.3, n)[:, None]
    counts = rng.negative_binomial(5, 5 / (5 + mu)).astype(np.float32)

    h = int((y.max() + spacing) * scale) + 1
    w = int((x.max() + spacing) * scale) + 1
    palette = np.array(
        [[230, 180, 210], [150, 90, 170], [240, 220, 230], [90, 60, 140], [200, 120, 150]],
        dtype=np.uint8,
    )
    image = np.full((h, w, 3), 255, dtype=np.uint8)
    band_edges = [y[domain == d].min() for d in range(n_domains)] + [y.max() + spacing]
    for d in range(n_domains):
        r0 = int((band_edges[d] - spacing * 0.43) * scale)
        r1 = int((band_edges[d + 1] - spacing * 0.43) * scale)
        image[max(r0, 0) : r1] = palette[d % len(palette)]
    image = np.clip(image + rng.normal(0, 8, image.shape), 0, 255).astype(np.uint8)

    obs = pd.DataFrame(
        {
            "array_row": rows,
            "array_col": cols,
            "domain": pd.Categorical([f"D{d}" for d in domain]),
        },
        index=[f"spot{i}" for i in range(n)],
    )
    adata = ad.AnnData(
        sparse.csr_matrix(counts),
        obs=obs,
        var=pd.DataFrame(index=[f"g{j}" for j in range(n_genes)]),
    )
    adata.obsm["spatial"] = np.c_[x, y]
    adata.uns["spatial"] = {
        "synthetic": {
            "images": {"hires": image},
            "scalefactors": {"tissue_hires_scalef": scale, "spot_diameter_fullres": spot_diameter},
        }
    }
    return adata
