"""Spatial-domain benchmark: scMSI, its ablations, peers and baselines on the same sections.

    python -m benchmarks.spatial dlpfc --seeds 5                      # 151674, 151675, 151510
    python -m benchmarks.spatial her2st --seeds 3                     # 8 sections
    python -m benchmarks.spatial breast_cancer_visium --seeds 5        # image only (no counts)

Each (section, method, seed) runs in a fresh process and writes an npz in the work folder
(``--work-dir`` reuses finished runs). Every method is asked for k = the number of labelled
domains; ARI/NMI on labelled spots. **One clustering for every embedding**
(:func:`cluster_embedding`): PCA to at most 20 dimensions, a Gaussian mixture with one shared
covariance (``scmsi.spatial.tied_gmm``, mclust's EEE on scikit-learn, 5 starts, seeded), then
the majority-vote refinement over the spatial graph. SpaGCN clusters itself (its own
resolution search and refinement). Methods:

- ``scmsi``: ``scmsi.spatial.to_mudata`` defaults (RNA counts, 3,000 HVGs; image features where
  there is an image; niche modality; graph-aware encoder on RNA and image), ``SCMSI`` trained
  ``--epochs`` epochs (default: the package's), ``scmsi.spatial.spatial_domains(n_domains=k)`` with
  the package defaults (its own tied mixture on the spectral embedding of the smoothed
  coefficients, refined). Label-free domains (``n_domains=None``) as ``auto ARI (n)``.
  ``scmsi [k-means]``: the same models clustered by k-means (the clustering before this
  change).
- variants, each its own training: ``scmsi_graph_encoder`` (``graph_encoder=True``: the
  encoders read each spot's neighbour mean too); ``scmsi [k-means]`` is the v0.1 spatial
  pipeline (no graph encoder, k-means), ``scmsi_no_image`` (sections with an
  image only), ``scmsi_no_niche``, ``scmsi_paper`` (``SCMSI(objective="paper")``).
- ``spagcn``: SpaGCN 1.2.7 in its own environment (``--spagcn-python``), with histology where
  the section has an image; refined.
- ``banksy``, ``graphst``, ``stagate``: ``benchmarks/spatial_peers.py`` in their own
  environment (``--peers-python``); their embeddings clustered as above. Settings in that
  file; ``--peer-epochs`` shortens GraphST/STAGATE training (recorded in the notes).
- ``pca``: log-normalised 3,000 HVGs, 30 PCs; ``pca_smooth``: the same PCs smoothed over the
  spatial graph (``scmsi.spatial.smooth`` defaults); both clustered as above.
- image-only data: ``scmsi`` on the image (+ niche of image) modality, ``image_pca``
  (standardised image features, 30 PCs), ``image_smooth`` (smoothed).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks._common import (
    atomic_text,
    command_line,
    machine_line,
    mean_sd,
    run_worker,
    save_npz,
    work_folder,
    worker_env,
)

RESULTS = Path(__file__).resolve().parent / "results"
ROOT = Path(__file__).resolve().parents[1]
SECTIONS = {
    "dlpfc": ["151674", "151675", "151510"],
    "her2st": ["A1", "B1", "C1", "D1", "E1", "F1", "G2", "H1"],
    "breast_cancer_visium": ["A1"],
}
_PEERS = ["spagcn", "banksy", "stagate", "graphst", "pca", "pca_smooth"]
DEFAULT_METHODS = {
    "dlpfc": ["scmsi", "scmsi_graph_encoder", "scmsi_no_image", *_PEERS],
    "her2st": ["scmsi", "scmsi_graph_encoder", "scmsi_no_image", "scmsi_no_niche", *_PEERS],
    "breast_cancer_visium": ["scmsi", "scmsi_graph_encoder", "image_pca", "image_smooth"],
}
# SpaGCN and the other peers pin packages that clash with ours: each has its own environment
DEFAULT_SPAGCN_PYTHON = os.environ.get(
    "SCMSI_SPAGCN_PYTHON", str(ROOT.parent / "venv-spagcn" / "bin" / "python")
)
DEFAULT_PEERS_PYTHON = os.environ.get(
    "SCMSI_PEERS_PYTHON", str(ROOT.parent / "venv-peers" / "bin" / "python")
)
PEERS = ("banksy", "graphst", "stagate")


# ------------------------------------------------------------------------------ data
def load_section(dataset: str, section: str):
    import scmsi

    if dataset == "dlpfc":
        return scmsi.datasets.dlpfc(section)
    if dataset == "her2st":
        return scmsi.datasets.her2st(section)
    if dataset == "breast_cancer_visium":
        return scmsi.datasets.breast_cancer_visium()
    raise ValueError(f"unknown spatial dataset {dataset!r}")


def _labels(adata) -> tuple[np.ndarray, np.ndarray]:
    lab = adata.obs["domain"].astype(object).to_numpy()
    ok = pd.notna(lab) & (lab != "undetermined")
    return lab, ok


def _save_paletted(fig, path: Path, dpi: int = 100) -> None:
    """Save ``fig`` as a 256-colour PNG: with the H&E behind the spots a full-colour one
    weighs over 1 MB."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    buf.seek(0)
    img = Image.open(buf).convert("RGB").quantize(256)
    img.save(path, optimize=True)


# ------------------------------------------------------------------------------ workers
# scMSI runs: the package defaults, and ablations that each train their own model.
# {method: (to_mudata options, SCMSI options)}
SCMSI_VARIANTS: dict[str, tuple[dict, dict]] = {
    "scmsi": ({}, {}),
    "scmsi_graph_encoder": ({"graph_encoder": True}, {}),
    "scmsi_no_image": ({"image": False}, {}),
    "scmsi_no_niche": ({"niche": False}, {}),
    "scmsi_paper": ({}, {"objective": "paper"}),
}
PCA_DIMS = 20  # every embedding -> at most this many PCs -> the same tied mixture


def cluster_embedding(emb: np.ndarray, k: int, graph, seed: int) -> np.ndarray:
    """The one clustering every embedding gets here: PCA to at most 20 dimensions, the tied
    Gaussian mixture (``scmsi.spatial.tied_gmm``, mclust EEE) into k domains, majority-vote
    refinement over the spatial graph (``scmsi.spatial.refine_domains``)."""
    from sklearn.decomposition import PCA

    from scmsi import spatial as sp

    emb = np.asarray(emb, dtype=np.float32)
    if emb.shape[1] > PCA_DIMS:
        emb = PCA(PCA_DIMS, random_state=seed).fit_transform(emb)
    return sp.refine_domains(sp.tied_gmm(emb, k, seed)[0].astype(str), graph)


def _scmsi(args, adata, k: int, shape_n: int, out: dict) -> tuple[np.ndarray, str]:
    import scmsi

    data_kw, model_kw = SCMSI_VARIANTS[args.method]
    mdata, kinds = scmsi.spatial.to_mudata(adata, n_neighs=shape_n, **data_kw)
    scmsi.SCMSI.setup_mudata(mdata, modalities=kinds)
    model = scmsi.SCMSI(mdata, seed=args.seed, **model_kw)
    model.train(max_epochs=args.epochs, enable_progress_bar=False)
    n_epochs = len(model.history["elbo_train"])
    out["train_s"] = time.perf_counter() - out["t0"]
    labels = scmsi.spatial.spatial_domains(mdata, model, n_domains=k, seed=args.seed)
    params = mdata.uns["scmsi_domain"]["params"]
    out["embedding"] = mdata.obsm["X_scmsi_domain"]
    out["modalities_used"] = np.asarray(params["modalities"], dtype=str)
    auto = scmsi.spatial.spatial_domains(mdata, model, seed=args.seed, key_added="auto")
    out["labels_auto"] = np.asarray(auto).astype(str)
    # the same model clustered as before this harness's tied mixture (k-means): without the
    # graph encoder, that is the v0.1 spatial pipeline
    km = scmsi.spatial.spatial_domains(
        mdata, model, n_domains=k, seed=args.seed, method="kmeans", key_added="km"
    )
    out["extra_labels_k-means"] = np.asarray(km).astype(str)
    # other representations of the same model, scored offline with the same clustering
    out["extra_coef_smoothed"] = mdata.obsm["scmsi_domain_coef_smoothed"]
    graph = mdata.obsp["spatial_connectivities"]
    for name, rebuilt in (("latent", False), ("rebuilt", True)):
        z = model.get_latent_representation(mdata, rebuilt=rebuilt)
        z = np.concatenate([z[m] for m in model.modality_names], 1)
        out[f"extra_{name}_smoothed"] = scmsi.spatial.smooth(z, graph)
    context = mdata.uns.get("scmsi_context_layers", {})
    notes = (
        f"to_mudata({data_kw}), SCMSI({model_kw}): modalities {kinds}, graph-aware encoder "
        f"on {list(context)}; {model.module.n_anchors} anchors; {n_epochs} epochs; "
        f"spatial_domains defaults ({params})"
    )
    return labels, notes


def _worker(args: argparse.Namespace) -> None:
    """One (section, method, seed): read the section, cluster, save labels as npz."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(1)
    from scmsi import spatial as sp

    adata = load_section(args.dataset, args.section)
    lab, ok = _labels(adata)
    k = len(np.unique(lab[ok]))
    has_genes = adata.n_vars > 0
    shape_n = 4 if args.dataset == "her2st" else 6
    graph = sp.spatial_graph(adata.obsm["spatial"], shape_n)
    out: dict = {"t0": time.perf_counter()}
    with threadpool_limits(limits=1):
        if args.method in SCMSI_VARIANTS:
            labels, notes = _scmsi(args, adata, k, shape_n, out)
        elif args.method in ("pca", "pca_smooth", "image_pca", "image_smooth"):
            from sklearn.decomposition import PCA

            from scmsi.spatial.input import _standardise

            if args.method.startswith("pca"):
                import scanpy as sc

                from scmsi._anchors import lognormalize

                mdata, _ = sp.to_mudata(adata, image=False, niche=False, graph_encoder=False)
                x = lognormalize(mdata["rna"].X)
                emb = sc.pp.pca(x, n_comps=30, random_state=args.seed)
            else:
                emb = _standardise(sp.image_features(adata))
                emb = PCA(min(30, emb.shape[1]), random_state=args.seed).fit_transform(emb)
            smooth = args.method.endswith("smooth")
            if smooth:
                emb = sp.smooth(emb, graph)  # package defaults
            labels = cluster_embedding(emb, k, graph, args.seed)
            out["embedding"] = emb
            notes = f"30 PCs{', smoothed (alpha 0.5, 3 rounds)' if smooth else ''}"
        else:
            raise SystemExit(f"unknown method {args.method!r}")
    t0 = out.pop("t0")
    out.update(
        labels=np.asarray(labels).astype(str),
        time_s=time.perf_counter() - t0,
        notes=notes,
        has_genes=has_genes,
    )
    save_npz(args.out, **out)


def _spagcn_input(adata, k: int, dataset: str, work: Path, section: str) -> tuple[Path, bool]:
    """Write the section for the SpaGCN worker; returns (h5ad path, has image)."""
    import anndata as ad

    from scmsi import spatial as sp

    path = work / f"spagcn_{section}.h5ad"
    has_image = False
    try:
        img, scale, _ = sp.get_image(adata)
        has_image = True
    except KeyError:
        pass
    if not path.exists():
        a = ad.AnnData(adata.X.copy(), obs=adata.obs[[]].copy(), var=adata.var[[]].copy())
        a.obsm["spatial"] = np.asarray(adata.obsm["spatial"])
        if "array_row" in adata.obs:
            a.obs["array_row"] = adata.obs["array_row"].to_numpy()
            a.obs["array_col"] = adata.obs["array_col"].to_numpy()
        else:  # no array coordinates (Banksy's DLPFC files): use the spot coordinates
            a.obs["array_row"] = a.obsm["spatial"][:, 1]
            a.obs["array_col"] = a.obsm["spatial"][:, 0]
        a.uns["n_clusters"] = k
        a.uns["shape"] = "square" if dataset == "her2st" else "hexagon"
        if has_image:
            a.uns["image_scale"] = scale
            np.save(work / f"spagcn_{section}.image.npy", np.asarray(img)[..., :3])
        a.write_h5ad(path)
    return path, has_image


# ------------------------------------------------------------------------------ harness
def run(args: argparse.Namespace) -> int:
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    import scmsi

    dataset = args.dataset
    sections = args.sections.split(",") if args.sections else SECTIONS[dataset]
    methods = args.methods.split(",") if args.methods else DEFAULT_METHODS[dataset]
    work = work_folder(args.work_dir, f"scmsi-spatial-{dataset}-")
    env = worker_env(1)
    shape_n = 4 if dataset == "her2st" else 6
    rows, examples = [], {}
    for section in sections:
        adata = load_section(dataset, section)
        lab, ok = _labels(adata)
        k = len(np.unique(lab[ok]))
        has_image = bool(adata.uns.get("spatial")) and any(
            lib.get("images") for lib in adata.uns["spatial"].values()
        )
        for method in methods:
            if method == "scmsi_no_image" and not has_image:
                continue  # the same model as scmsi there
            n_seeds = args.seeds
            if method in ("graphst", "stagate") and args.peer_seeds is not None:
                n_seeds = min(n_seeds, args.peer_seeds)  # costly: fewer seeds, said in the table
            for seed in range(n_seeds):
                out = work / f"{section}_{method}_{seed}.npz"
                if method == "spagcn":
                    h5ad, has_image = _spagcn_input(adata, k, dataset, work, section)
                    cmd = [args.spagcn_python, str(ROOT / "benchmarks" / "spatial_spagcn.py")]
                    cmd += [str(h5ad), str(seed), str(out)]
                    cmd += ["--histology"] if has_image and not args.no_histology else []
                elif method in PEERS:
                    h5ad, _ = _spagcn_input(adata, k, dataset, work, section)
                    cmd = [args.peers_python, str(ROOT / "benchmarks" / "spatial_peers.py")]
                    cmd += [method, str(h5ad), str(seed), str(out)]
                    cmd += ["--epochs", str(args.peer_epochs)] if args.peer_epochs else []
                else:
                    cmd = [sys.executable, "-m", "benchmarks.spatial", "_worker", dataset]
                    cmd += [section, method, str(seed), str(out)]
                    cmd += ["--epochs", str(args.epochs)] if args.epochs else []
                t0 = time.perf_counter()
                if run_worker(cmd, out, "", env, check=False) is not None:
                    print(f"FAILED {section} {method} seed {seed}", flush=True)
                    continue
                res = dict(np.load(out, allow_pickle=False))
                if "labels" not in res:  # a peer's embedding: the harness's one clustering
                    graph = scmsi.spatial.spatial_graph(adata.obsm["spatial"], shape_n)
                    res["labels"] = cluster_embedding(res["embedding"], k, graph, seed)
                pred = res["labels"]
                row = {
                    "section": section,
                    "method": method,
                    "seed": seed,
                    "ari": adjusted_rand_score(lab[ok], pred[ok]),
                    "nmi": normalized_mutual_info_score(lab[ok], pred[ok]),
                    "n_domains": len(np.unique(pred)),
                    "time_s": float(res["time_s"]),
                    "train_s": float(res.get("train_s", np.nan)),
                    "notes": str(res["notes"]),
                }
                if "labels_auto" in res:
                    row["auto_ari"] = adjusted_rand_score(lab[ok], res["labels_auto"][ok])
                    row["auto_n"] = len(np.unique(res["labels_auto"]))
                rows.append(row)
                for key in (k_ for k_ in res if k_.startswith("extra_labels_")):
                    lab_x = res[key]
                    rows.append(
                        {
                            **row,
                            "method": f"{method} [{key.removeprefix('extra_labels_')}]",
                            "ari": adjusted_rand_score(lab[ok], lab_x[ok]),
                            "nmi": normalized_mutual_info_score(lab[ok], lab_x[ok]),
                            "n_domains": len(np.unique(lab_x)),
                            "notes": f"the {method} models, spatial_domains(method='kmeans')",
                            "auto_ari": np.nan,
                        }
                    )
                if seed == 0:
                    examples[(section, method)] = pred
                print(
                    f"{section} {method:12s} seed {seed}: ARI {row['ari']:.3f} NMI "
                    f"{row['nmi']:.3f} ({time.perf_counter() - t0:.0f} s)",
                    flush=True,
                )
        _figure(dataset, section, adata, examples, methods, args)
        # report after every section: a long run that is stopped still leaves its tables
        _report(pd.DataFrame(rows), dataset, args, sections)
    if not args.out and not args.name:
        from benchmarks.__main__ import _update_readme

        _update_readme(f"spatial_{dataset}", RESULTS / f"{dataset}.md")
    return 0


def _report(table: pd.DataFrame, dataset: str, args, sections) -> None:

    out_dir = Path(args.out) if args.out else RESULTS
    out_dir.mkdir(parents=True, exist_ok=True)
    name = args.name or dataset
    lines = [f"# Spatial domains: {dataset}", ""]
    lines += [f"Command: `{command_line('benchmarks.spatial')}`", ""]
    lines += [
        "ARI (mean ± sd over seeds) against the annotation, labelled spots only; every method "
        "asked for k = number of labelled domains. `auto`: scMSI's label-free domain count.",
        "",
    ]
    agg = []
    for (sec, method), g in table.groupby(["section", "method"], sort=False):
        row = {
            "section": sec,
            "method": method,
            "seeds": len(g),
            "ARI": mean_sd(g["ari"]),
            "NMI": mean_sd(g["nmi"]),
            "time (s)": f"{g['time_s'].mean():.0f}",
            "train (s)": f"{g['train_s'].mean():.0f}" if g["train_s"].notna().any() else "",
        }
        if "auto_ari" in g and g["auto_ari"].notna().any():
            row["auto ARI (n)"] = f"{mean_sd(g['auto_ari'])} ({g['auto_n'].mean():.1f})"
        agg.append(row)
    lines.append(pd.DataFrame(agg).fillna("").to_markdown(index=False))
    if len(sections) > 1:
        per = table.groupby(["method", "section"])["ari"].mean().unstack()
        lines += ["", "Mean ARI over sections (each section's mean over seeds):", ""]
        lines.append(per.mean(1).rename("mean ARI").to_frame().round(3).to_markdown())
    lines += ["", "Method settings:", ""]
    for method, g in table.groupby("method", sort=False):
        lines.append(f"- **{method}**: {g['notes'].iloc[0]}")
    lines += [
        "",
        machine_line(shared=True, threads=1),
        "",
        f"Per-seed results: `{name}.csv`; domains of seed 0: `{name}_<section>.png`.",
    ]
    text = "\n".join(lines) + "\n"
    atomic_text(out_dir / f"{name}.md", text)
    atomic_text(out_dir / f"{name}.csv", table.to_csv(index=False))
    print(text)


def _figure(dataset, section, adata, examples, methods, args) -> None:
    import scmsi

    out_dir = Path(args.out) if args.out else RESULTS
    out_dir.mkdir(parents=True, exist_ok=True)
    cols = ["domain"]
    for m in methods:
        if (section, m) in examples:
            adata.obs[m] = pd.Categorical(examples[(section, m)])
            cols.append(m)
    fig = scmsi.pl.spatial_domains(adata, color=cols, ax_size=4.0)
    _save_paletted(fig, out_dir / f"{args.name or dataset}_{section}.png")
    import matplotlib.pyplot as plt

    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "_worker":
        p = argparse.ArgumentParser(prog="python -m benchmarks.spatial _worker")
        for a in ("dataset", "section", "method"):
            p.add_argument(a)
        p.add_argument("seed", type=int)
        p.add_argument("out")
        p.add_argument("--epochs", type=int, default=None)
        _worker(p.parse_args(argv[1:]))
        return 0
    p = argparse.ArgumentParser(prog="python -m benchmarks.spatial", description=__doc__)
    p.add_argument("dataset", choices=sorted(SECTIONS))
    p.add_argument("--sections", help="comma-separated (default: all of the dataset)")
    p.add_argument("--methods", help="comma-separated (default depends on the dataset)")
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument(
        "--epochs",
        type=int,
        default=None,
        help="scMSI training epochs (default: the package's, 400 below 20,000 spots)",
    )
    p.add_argument("--spagcn-python", default=DEFAULT_SPAGCN_PYTHON)
    p.add_argument("--peers-python", default=DEFAULT_PEERS_PYTHON, help="BANKSY/GraphST/STAGATE")
    p.add_argument(
        "--peer-epochs", type=int, default=None, help="GraphST/STAGATE epochs (default: theirs)"
    )
    p.add_argument("--peer-seeds", type=int, default=None, help="GraphST/STAGATE seeds (cap)")
    p.add_argument("--no-histology", action="store_true", help="SpaGCN without the image")
    p.add_argument("--out", help="results folder (default benchmarks/results)")
    p.add_argument("--name", help="report name (default: the dataset)")
    p.add_argument("--work-dir", help="folder for per-run files; reuses runs already there")
    return run(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
