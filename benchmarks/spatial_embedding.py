"""DLPFC: PCA vs a spectral embedding of scMSI's smoothed fused coefficients (a lead).

    python -m benchmarks.spatial_embedding [--sections 151674,151675,151510] [--seeds 3]

For each (section, seed): the default spatial model (``to_mudata``: RNA counts + niche
(+ image)) trained for 60 epochs, as in the spatial harness's DLPFC runs, then
``tl.spatial_domains(n_domains=k, refine=True)`` with its defaults (smoothing -> PCA ->
k-means -> refinement). The same smoothed coefficients (``obsm["scmsi_coef_smoothed"]``) are
then embedded by the spectral embedding of the anchor graph instead of PCA (landmark spectral
clustering, Chen & Cai 2011: ``Z = D^-1 C Λ^-1/2`` with ``Λ`` the anchors' total weight, the
leading non-trivial left singular vectors of ``Z`` scaled by their singular values and
normalised per spot, as in Ng, Jordan & Weiss), and clustered and refined the same way.
O(N A k); no N x N matrix. Writes ``benchmarks/results/dlpfc_embedding.md``; labels only score.
"""

from __future__ import annotations

import argparse
import os
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import pandas as pd

RESULTS = Path(__file__).resolve().parent / "results"


def anchor_spectral_embedding(coef: np.ndarray, n_comps: int) -> np.ndarray:
    """Spectral embedding ``(N, n_comps)`` of the bipartite cell-anchor graph ``coef``."""
    z = coef / np.maximum(coef.sum(1, keepdims=True), 1e-12)
    z = z / np.sqrt(np.maximum(z.sum(0, keepdims=True), 1e-12))
    u, s, _ = np.linalg.svd(z, full_matrices=False)
    emb = u[:, 1 : n_comps + 1] * s[1 : n_comps + 1]  # the first vector is trivial
    return emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)


def _job(job: tuple[str, int]) -> dict:
    os.environ["OMP_NUM_THREADS"] = "1"
    import torch
    from sklearn.metrics import adjusted_rand_score
    from threadpoolctl import threadpool_limits

    import scmsi
    from scmsi import spatial as sp

    torch.set_num_threads(1)
    section, seed = job
    with threadpool_limits(limits=1):
        adata = scmsi.datasets.dlpfc(section)
        lab = adata.obs["domain"].astype(str).to_numpy()
        ok = lab != "nan"
        k = len(np.unique(lab[ok]))
        mdata, kinds = sp.to_mudata(adata, n_neighs=6)
        scmsi.SCMSI.setup_mudata(mdata, modalities=kinds)
        model = scmsi.SCMSI(mdata, seed=seed)
        model.train(max_epochs=60, enable_progress_bar=False)
        pca = np.asarray(
            scmsi.tl.spatial_domains(mdata, model, n_domains=k, refine=True, seed=seed)
        )
        emb = anchor_spectral_embedding(mdata.obsm["scmsi_coef_smoothed"], model.module.n_latent)
        graph = mdata.obsp["spatial_connectivities"]
        spectral = sp.refine_domains(np.asarray(scmsi.tl.cluster(emb, k, "kmeans", seed)), graph)
    return {
        "section": section,
        "seed": seed,
        "PCA (default)": adjusted_rand_score(lab[ok], pca[ok]),
        "spectral": adjusted_rand_score(lab[ok], spectral[ok]),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.spatial_embedding", description=__doc__)
    p.add_argument("--sections", default="151674,151675,151510")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--workers", type=int, default=2, help="processes, one thread each")
    p.add_argument("--out", default=str(RESULTS / "dlpfc_embedding.md"))
    args = p.parse_args(argv)
    from benchmarks._common import atomic_text, mean_sd

    jobs = [(s, seed) for s in args.sections.split(",") for seed in range(args.seeds)]
    with get_context("spawn").Pool(args.workers) as pool:
        rows = pd.DataFrame(pool.map(_job, jobs, chunksize=1))
    cols = ["PCA (default)", "spectral"]
    table = rows.groupby("section", sort=False)[cols].agg(mean_sd).reset_index()
    means = rows[cols].mean()
    table.loc[len(table)] = {"section": "**mean**", **{c: f"{means[c]:.3f}" for c in cols}}
    text = "\n".join(
        [
            "# DLPFC: embedding of scMSI's smoothed fused coefficients",
            "",
            f"Command: `python -m benchmarks.spatial_embedding --sections {args.sections} "
            f"--seeds {args.seeds}` (60 epochs; see the script's docstring).",
            "",
            "ARI, mean ± sd over seeds (k-means into the annotated number of layers, then "
            "refinement, after either embedding):",
            "",
            table.to_markdown(index=False),
            "",
            "Per run:",
            "",
            rows.round(3).to_markdown(index=False),
            "",
        ]
    )
    atomic_text(Path(args.out), text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
