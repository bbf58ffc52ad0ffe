"""BANKSY, GraphST and STAGATE workers for ``python -m benchmarks.spatial`` (their own environment).

    <peers-python> benchmarks/spatial_peers.py METHOD INPUT.h5ad SEED OUT.npz [--epochs N]

METHOD is ``banksy`` (``pybanksy``), ``graphst`` (``graphst-modern``) or ``stagate``
(``stagate-modern``). They pin packages (torch-geometric, igraph) apart from ours, so they run
in a separate virtual environment and import nothing from scmsi. INPUT.h5ad is the file the
SpaGCN worker reads (raw counts in ``.X``, ``obsm["spatial"]`` in full-res pixels). Each writes
its spot **embedding**; the harness clusters every embedding the same way (PCA to 20
dimensions, tied Gaussian mixture = mclust EEE, majority-vote refinement), so that the methods
differ only in their representation. R's mclust (GraphST's and STAGATE's own clustering) is
not available here; the tied mixture is its model EEE on scikit-learn.

Settings (each method's tutorial for DLPFC):

- banksy: log-normalised counts (normalize_total, log1p), 2,000 HVGs (seurat_v3 on counts),
  18 neighbours, scaled-Gaussian weights, max_m = 1 (azimuthal Gabor term), lambda = 0.8
  (domain segmentation). No training: the seed only changes the harness's clustering.
- graphst: ``GraphST.GraphST(adata, device="cpu", random_seed=SEED, epochs=N)`` (600 by
  default), embedding ``obsm["emb"]``.
- stagate: 3,000 HVGs (seurat_v3), normalize_total(1e4), log1p, ``Cal_Spatial_Net`` with
  radius 150 full-res pixels on Visium (the DLPFC tutorial's) or the 4 nearest spots on ST,
  ``train_STAGATE(n_epochs=N, random_seed=SEED)`` (1,000 by default), embedding
  ``obsm["STAGATE"]``.
"""

from __future__ import annotations

import os
import sys
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")


def _banksy(adata, seed: int, epochs: int | None):
    import contextlib
    import io

    import scanpy as sc
    from banksy.embed_banksy import generate_banksy_matrix
    from banksy.initialize_banksy import initialize_banksy

    sc.pp.highly_variable_genes(adata, n_top_genes=2000, flavor="seurat_v3")
    sc.pp.normalize_total(adata)
    sc.pp.log1p(adata)
    adata = adata[:, adata.var["highly_variable"].to_numpy()].copy()
    with contextlib.redirect_stdout(io.StringIO()):  # it prints every step
        banksy_dict = initialize_banksy(
            adata,
            ("x", "y", "spatial"),
            num_neighbours=18,
            nbr_weight_decay="scaled_gaussian",
            max_m=1,
            plt_edge_hist=False,
            plt_nbr_weights=False,
            plt_agf_angles=False,
            plt_theta=False,
        )
        _, matrix = generate_banksy_matrix(adata, banksy_dict, [0.8], max_m=1, verbose=False)
    x = matrix.X
    emb = x.toarray() if hasattr(x, "toarray") else x
    return emb, "pybanksy 1.3.5: 2,000 HVGs, k_geom 18, scaled Gaussian, max_m 1, lambda 0.8"


def _graphst(adata, seed: int, epochs: int | None):
    import torch
    from GraphST import GraphST

    epochs = epochs or 600
    model = GraphST.GraphST(adata, device=torch.device("cpu"), random_seed=seed, epochs=epochs)
    out = model.train()
    return out.obsm["emb"], f"graphst-modern 1.1.1: defaults, {epochs} epochs, seed {seed}"


def _stagate(adata, seed: int, epochs: int | None):
    import scanpy as sc
    import STAGATE_pyG as stagate
    import torch

    epochs = epochs or 1000
    sc.pp.highly_variable_genes(adata, n_top_genes=3000, flavor="seurat_v3")
    sc.pp.normalize_total(adata, target_sum=1e4)
    sc.pp.log1p(adata)
    adata = adata[:, adata.var["highly_variable"].to_numpy()].copy()
    square = str(adata.uns.get("shape", "hexagon")) == "square"
    if square:
        stagate.Cal_Spatial_Net(adata, k_cutoff=4, model="KNN", verbose=False)
    else:
        stagate.Cal_Spatial_Net(adata, rad_cutoff=150, verbose=False)
    adata = stagate.train_STAGATE(
        adata, n_epochs=epochs, random_seed=seed, verbose=False, device=torch.device("cpu")
    )
    graph = "4 nearest spots" if square else "radius 150"
    return adata.obsm["STAGATE"], f"stagate-modern 1.0.0: {graph}, {epochs} epochs, seed {seed}"


def main(argv: list[str]) -> None:
    import anndata as ad
    import numpy as np
    import torch

    torch.set_num_threads(1)
    method, path, seed, out = argv[0], argv[1], int(argv[2]), argv[3]
    epochs = int(argv[argv.index("--epochs") + 1]) if "--epochs" in argv else None
    adata = ad.read_h5ad(path)
    adata.var_names_make_unique()
    t0 = time.perf_counter()
    emb, notes = {"banksy": _banksy, "graphst": _graphst, "stagate": _stagate}[method](
        adata, seed, epochs
    )
    np.savez(
        out,
        embedding=np.asarray(emb, dtype=np.float32),
        time_s=time.perf_counter() - t0,
        notes=notes + "; embedding clustered by the harness (PCA 20, tied GMM, refined)",
    )


if __name__ == "__main__":
    main(sys.argv[1:])
