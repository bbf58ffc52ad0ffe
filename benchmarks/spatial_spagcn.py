"""SpaGCN worker for ``python -m benchmarks.spatial`` (runs in SpaGCN's own environment).

    <spagcn-python> benchmarks/spatial_spagcn.py INPUT.h5ad SEED OUT.npz [--histology]

Imports only SpaGCN, scanpy, anndata, numpy, torch: SpaGCN 1.2.7 needs pinned igraph/louvain
(see ../shared/docs/PEERS.md), so it lives in a separate virtual environment. The recipe is the
SpaGCN tutorial's: adjacency from pixel coordinates (and the H&E colour around each spot when
``--histology``, beta = 49 full-res pixels, alpha = 1), l for p = 0.5, resolution searched to
give n_clusters (= number of labelled domains), 200 epochs, then refinement over the hexagon
(Visium) or square (ST) neighbourhood. Input INPUT.h5ad: raw counts in .X, obsm["spatial"] (x, y
full-res pixels), obs array_row/array_col, uns n_clusters, shape, and with --histology an image
in obsm-adjacent file INPUT.image.npy at uns["image_scale"] of full resolution.
"""

from __future__ import annotations

import os
import random
import sys
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")


def main(argv: list[str]) -> None:
    import anndata as ad
    import numpy as np
    import scanpy as sc
    import SpaGCN as spg
    import torch
    from scipy import sparse

    torch.set_num_threads(1)
    path, seed, out = argv[0], int(argv[1]), argv[2]
    histology = "--histology" in argv
    adata = ad.read_h5ad(path)
    n_clusters = int(adata.uns["n_clusters"])
    shape = str(adata.uns.get("shape", "hexagon"))
    t0 = time.perf_counter()
    xy = np.asarray(adata.obsm["spatial"], dtype=float)
    x_pixel, y_pixel = xy[:, 1].astype(int), xy[:, 0].astype(int)  # SpaGCN: x = row, y = col
    if histology:
        img = np.load(path.replace(".h5ad", ".image.npy"))
        scale = float(adata.uns["image_scale"])
        # SpaGCN reads the image at (x_pixel, y_pixel): rescale the image to full resolution
        # lazily by scaling the coordinates and beta instead (same colours, same neighbourhood).
        adj = spg.calculate_adj_matrix(
            x=(x_pixel * scale).astype(int),
            y=(y_pixel * scale).astype(int),
            x_pixel=(x_pixel * scale).astype(int),
            y_pixel=(y_pixel * scale).astype(int),
            image=img,
            beta=max(int(round(49 * scale)), 1),
            alpha=1,
            histology=True,
        )
        # distances were computed in image pixels: bring them back to full-res units
        adj = adj / scale
    else:
        adj = spg.calculate_adj_matrix(x=x_pixel, y=y_pixel, histology=False)
    adata.var_names_make_unique()
    spg.prefilter_genes(adata, min_cells=3)
    spg.prefilter_specialgenes(adata)
    sc.pp.normalize_total(adata)
    sc.pp.log1p(adata)
    if sparse.issparse(adata.X):  # SpaGCN calls a sparse method SciPy 1.17 removed
        adata.X = np.asarray(adata.X.toarray(), dtype=np.float32)
    p = 0.5
    l_val = spg.search_l(p, adj, start=0.01, end=1000, tol=0.01, max_run=100)
    res = spg.search_res(
        adata,
        adj,
        l_val,
        n_clusters,
        start=0.7,
        step=0.1,
        tol=5e-3,
        lr=0.05,
        max_epochs=20,
        r_seed=seed,
        t_seed=seed,
        n_seed=seed,
    )
    clf = spg.SpaGCN()
    clf.set_l(l_val)
    random.seed(seed)
    torch.manual_seed(seed)
    np.random.seed(seed)  # noqa: NPY002 (SpaGCN draws from the global generator)
    clf.train(adata, adj, init_spa=True, init="louvain", res=res, tol=5e-3, lr=0.05, max_epochs=200)
    pred, _ = clf.predict()
    adj_2d = spg.calculate_adj_matrix(
        x=adata.obs["array_row"].to_numpy(), y=adata.obs["array_col"].to_numpy(), histology=False
    )
    refined = spg.refine(
        sample_id=adata.obs_names.tolist(), pred=list(pred), dis=adj_2d, shape=shape
    )
    np.savez(
        out,
        labels=np.asarray(refined).astype(str),
        labels_unrefined=np.asarray(pred).astype(str),
        time_s=time.perf_counter() - t0,
        notes=f"SpaGCN {getattr(spg, '__version__', '1.2.7')}, histology={histology}, p=0.5, "
        f"resolution searched for {n_clusters} clusters (res={res:.2f}), refined ({shape})",
    )


if __name__ == "__main__":
    main(sys.argv[1:])
