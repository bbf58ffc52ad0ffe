"""Why scMSI's spatial domains trail on DLPFC: the clustering step and the RNA coefficients.

    python -m benchmarks.spatial_diagnosis [--sections 151674,151675,151510] [--seeds 3]

Two measurements per section, written to ``benchmarks/results/dlpfc_diagnosis.md``:

1. **Clustering step, on a fixed representation.** The smoothed-PCA baseline of
   ``benchmarks.spatial`` (30 PCs of log-normalised HVG counts, ``scmsi.spatial.smooth`` with
   its defaults) clustered into the annotated number of layers by k-means (the harness's
   choice) and by a Gaussian mixture with one covariance shared by all components
   (``covariance_type="tied"``: mclust's EEE model, the clustering of STAGATE, GraphST and
   SEDR), each followed by ``refine_domains``. This says how much of the gap to published
   DLPFC ARIs is the clustering step rather than the representation.
2. **scMSI's coefficients by training length.** The default spatial model (``to_mudata``:
   RNA counts + niche (+ image)) trained for 60 epochs (the spatial harness's DLPFC runs) and
   for the package's default (400, early stopping on), seed 0: per modality, the mean number
   of anchors with a non-zero coefficient per spot and whether
   ``scmsi.spatial.informative_modalities`` keeps it, then ``tl.spatial_domains`` ARI.
3. **Where the information goes** (the 60-epoch models of 2.): per modality, k-means +
   refinement on its input features (RNA: 30 PCs of log-normalised counts), on its latent
   ``z`` and on the spectral embedding of its own coefficients, none smoothed.

Labels are used only to score. Nothing here changes a default.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd

RESULTS = Path(__file__).resolve().parent / "results"
SECTIONS = ("151674", "151675", "151510")


def _clustering_step(adata, k: int, seeds: int) -> list[dict]:
    import scanpy as sc
    from sklearn.metrics import adjusted_rand_score
    from sklearn.mixture import GaussianMixture

    import scmsi
    from scmsi import spatial as sp
    from scmsi._anchors import lognormalize

    lab = adata.obs["domain"].astype(str).to_numpy()
    ok = lab != "nan"
    mdata, _ = sp.to_mudata(adata, image=False, niche=False)
    graph = sp.spatial_graph(adata.obsm["spatial"], 6)
    rows = []
    x = lognormalize(mdata["rna"].X)
    for seed in range(seeds):
        emb = sp.smooth(sc.pp.pca(x, n_comps=30, random_state=seed), graph)
        fits = {
            "k-means": np.asarray(scmsi.tl.cluster(emb, k, "kmeans", seed)),
            "tied GMM (mclust EEE)": GaussianMixture(
                k, covariance_type="tied", reg_covar=1e-4, n_init=5, random_state=seed
            )
            .fit_predict(emb)
            .astype(str),
        }
        for name, labels in fits.items():
            labels = sp.refine_domains(labels, graph)
            ari = adjusted_rand_score(lab[ok], labels[ok])
            rows.append({"clustering": name, "seed": seed, "ari": ari})
    return rows


def _views(mdata, model, kinds, coefs, graph, k: int, lab, ok) -> list[dict]:
    """ARI of each modality's input, latent and coefficients (k-means + refinement, no
    smoothing): where along the model a modality's layer information is lost."""
    import scanpy as sc
    from sklearn.metrics import adjusted_rand_score

    import scmsi
    from scmsi import spatial as sp
    from scmsi._anchors import lognormalize

    latents = model.get_latent_representation(mdata)
    rows = []
    for m in model.modality_names:
        x = mdata[m].X
        if kinds[m] == "counts":  # 30 PCs of log-normalised counts
            x = sc.pp.pca(lognormalize(x), n_comps=30, random_state=0)
        views = {
            "input": np.asarray(x),
            "latent z": latents[m],
            "coefficients (spectral)": scmsi.tl.anchor_spectral_embedding(
                coefs[m], model.module.n_latent
            ),
        }
        row = {"modality": m, "input dim": views["input"].shape[1]}
        for name, emb in views.items():
            labels = sp.refine_domains(np.asarray(scmsi.tl.cluster(emb, k, "kmeans", 0)), graph)
            row[name] = adjusted_rand_score(lab[ok], labels[ok])
        rows.append(row)
    return rows


def _coefficients_by_epochs(adata, k: int) -> tuple[list[dict], list[dict]]:
    from sklearn.metrics import adjusted_rand_score

    import scmsi
    from scmsi import spatial as sp

    lab = adata.obs["domain"].astype(str).to_numpy()
    ok = lab != "nan"
    rows, views = [], []
    for epochs in (60, None):
        mdata, kinds = sp.to_mudata(adata, n_neighs=6)
        scmsi.SCMSI.setup_mudata(mdata, modalities=kinds)
        model = scmsi.SCMSI(mdata, seed=0)
        t0 = time.perf_counter()
        model.train(max_epochs=epochs, enable_progress_bar=False)
        coefs = model.get_coefficients(mdata, return_all=True)
        used, _ = sp.informative_modalities({m: coefs[m] for m in model.modality_names})
        labels = scmsi.spatial.spatial_domains(mdata, model, n_domains=k, refine=True, seed=0)
        row = {
            "epochs run": len(model.history["elbo_train"]),
            "ARI": adjusted_rand_score(lab[ok], np.asarray(labels)[ok]),
            "time (s)": time.perf_counter() - t0,
        }
        for m in model.modality_names:
            kept = "" if m in used else " (left out)"
            row[f"anchors/spot {m}"] = f"{(coefs[m] > 0).sum(1).mean():.1f}{kept}"
        rows.append(row)
        if epochs == 60:
            graph = mdata.obsp["spatial_connectivities"]
            views = _views(mdata, model, kinds, coefs, graph, k, lab, ok)
    return rows, views


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.spatial_diagnosis", description=__doc__)
    p.add_argument("--sections", default=",".join(SECTIONS))
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--out", default=str(RESULTS / "dlpfc_diagnosis.md"))
    args = p.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch
    from threadpoolctl import threadpool_limits

    import scmsi
    from benchmarks._common import atomic_text, mean_sd

    torch.set_num_threads(1)
    clus, coef, views = [], [], []
    with threadpool_limits(limits=1):
        for section in args.sections.split(","):
            adata = scmsi.datasets.dlpfc(section)
            k = adata.obs["domain"].dropna().nunique()
            clus += [{"section": section, **r} for r in _clustering_step(adata, k, args.seeds)]
            rows, view_rows = _coefficients_by_epochs(adata, k)
            coef += [{"section": section, **r} for r in rows]
            views += [{"section": section, **r} for r in view_rows]
            print(f"{section}: done", flush=True)
    clus = pd.DataFrame(clus)
    table = (
        clus.groupby(["section", "clustering"], sort=False)["ari"]
        .agg(mean_sd)
        .unstack("clustering")
        .reset_index()
    )
    means = clus.groupby("clustering", sort=False)["ari"].mean()
    table.loc[len(table)] = {"section": "**mean**", **{c: f"{v:.3f}" for c, v in means.items()}}
    coef = pd.DataFrame(coef)
    coef["ARI"] = coef["ARI"].map("{:.3f}".format)
    coef["time (s)"] = coef["time (s)"].map("{:.0f}".format)
    text = "\n".join(
        [
            "# DLPFC diagnosis: clustering step and scMSI's representation",
            "",
            f"Command: `python -m benchmarks.spatial_diagnosis --sections {args.sections} "
            f"--seeds {args.seeds}` (see the script's docstring for what is measured).",
            "",
            "## 1. Smoothed-PCA baseline, clustered two ways (+ refinement), ARI mean ± sd over "
            "seeds",
            "",
            table.to_markdown(index=False),
            "",
            "## 2. scMSI (default spatial model, seed 0) by training length",
            "",
            coef.fillna("").to_markdown(index=False),
            "",
            "## 3. Where the information goes (60-epoch models of 2., seed 0)",
            "",
            "ARI of k-means (k = layers) + refinement on each modality's input features, its "
            "latent and the spectral embedding of its own coefficients, none smoothed:",
            "",
            pd.DataFrame(views).to_markdown(index=False, floatfmt=".3f"),
            "",
        ]
    )
    atomic_text(Path(args.out), text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
