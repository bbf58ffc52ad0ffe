"""Spatial-domain benchmark: scMSI, SpaGCN and baselines on the same sections, several seeds.

    python -m benchmarks.spatial dlpfc --seeds 5                      # 151674, 151675, 151510
    python -m benchmarks.spatial her2st --seeds 5 --sections A1,B1
    python -m benchmarks.spatial breast_cancer_visium --seeds 5        # image only (no counts)

Each (section, method, seed) runs in a fresh process and writes an npz in the work folder
(``--work-dir`` reuses finished runs). Every method clusters into k = the number of labelled
domains; ARI/NMI on labelled spots. Methods:

- ``scmsi``: ``scmsi.spatial.to_mudata`` (RNA counts, 3,000 HVGs; image features where there is
  an image; niche modality), ``SCMSI`` trained ``--epochs`` epochs (default: the package's),
  then ``scmsi.tl.spatial_domains(n_domains=k, refine=True)`` with the package defaults.
  Also reported: the label-free domains (``n_domains=None``) as ``auto_ari``/``auto_n``, and
  ablations of the same models (no retraining): ``scmsi (embedding=pca)`` (PCA of the
  smoothed coefficients instead of their spectral embedding, the default before 2026-11-30)
  and ``scmsi (fusion=adaptive)`` (per-spot modality weights).
- ``spagcn``: SpaGCN 1.2.7 in its own environment (``--spagcn-python``), with histology where
  the section has an image; refined.
- ``pca``: non-spatial baseline: log-normalised 3,000 HVGs, 30 PCs, k-means.
- ``pca_smooth``: the same PCs smoothed over the spatial graph (``scmsi.spatial.smooth``, the
  package's ``spatial_weight``/``n_rounds`` defaults), k-means, refined.
- image-only data: ``scmsi`` on the image (+ niche of image) modality, ``image_kmeans``
  (k-means on standardised image features), ``image_smooth`` (smoothed, refined).
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
DEFAULT_METHODS = {
    "dlpfc": ["scmsi", "spagcn", "pca", "pca_smooth"],
    "her2st": ["scmsi", "spagcn", "pca", "pca_smooth"],
    "breast_cancer_visium": ["scmsi", "image_kmeans", "image_smooth"],
}
DEFAULT_SPAGCN_PYTHON = os.environ.get(
    "SCMSI_SPAGCN_PYTHON", str(ROOT.parent / "venv_spagcn" / "bin" / "python")
)


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
def _worker(args: argparse.Namespace) -> None:
    """One (section, method, seed): read the section, cluster, save labels as npz."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(1)
    import scmsi
    from scmsi import spatial as sp

    adata = load_section(args.dataset, args.section)
    lab, ok = _labels(adata)
    k = len(np.unique(lab[ok]))
    has_genes = adata.n_vars > 0
    shape_n = 4 if args.dataset == "her2st" else 6
    out: dict = {}
    t0 = time.perf_counter()
    with threadpool_limits(limits=1):
        if args.method == "scmsi":
            mdata, kinds = sp.to_mudata(adata, n_neighs=shape_n)
            scmsi.SCMSI.setup_mudata(mdata, modalities=kinds)
            model = scmsi.SCMSI(mdata, seed=args.seed)
            model.train(max_epochs=args.epochs, enable_progress_bar=False)
            n_epochs = len(model.history["elbo_train"])
            labels = scmsi.tl.spatial_domains(
                mdata, model, n_domains=k, refine=True, seed=args.seed
            )
            auto = scmsi.tl.spatial_domains(
                mdata, model, refine=True, seed=args.seed, key_added="auto"
            )
            out["labels_auto"] = np.asarray(auto).astype(str)
            out["embedding"] = mdata.obsm["X_scmsi_spatial"]
            notes = (
                f"modalities {kinds}; {model.module.n_anchors} anchors; {n_epochs} epochs; "
                f"spatial_domains defaults ({mdata.uns['scmsi_domain']['params']})"
            )
            # ablations: the same model, one spatial_domains option changed
            ablations = {"embedding=pca": {"embedding": "pca"}}
            if len(model.modality_names) > 1:
                ablations["fusion=adaptive"] = {"fusion": "adaptive"}
            for i, kw in enumerate(ablations.values()):
                abl = scmsi.tl.spatial_domains(
                    mdata, model, n_domains=k, refine=True, seed=args.seed, key_added="abl", **kw
                )
                out[f"ablation_{i}"] = np.asarray(abl).astype(str)
                if "fusion" in kw:
                    w = mdata.obsm["scmsi_modality_weights"].mean(0)
                    used = mdata.uns["abl"]["params"]["modalities"]
                    w = {m: round(float(v), 2) for m, v in zip(used, w, strict=True)}
                    notes += f"; mean {kw['fusion']}-fusion weights {w}"
            out["ablation_names"] = np.asarray(list(ablations), dtype=str)
        elif args.method in ("pca", "pca_smooth", "image_kmeans", "image_smooth"):
            from sklearn.decomposition import PCA

            graph = sp.spatial_graph(adata.obsm["spatial"], shape_n)
            if args.method.startswith("pca"):
                import scanpy as sc

                from scmsi._anchors import lognormalize

                mdata, _ = sp.to_mudata(adata, image=False, niche=False)
                x = lognormalize(mdata["rna"].X)
                emb = sc.pp.pca(x, n_comps=30, random_state=args.seed)
            else:
                emb = sp._standardise(sp.image_features(adata))
                emb = PCA(min(30, emb.shape[1]), random_state=args.seed).fit_transform(emb)
            smooth = args.method.endswith("smooth")
            if smooth:
                emb = sp.smooth(emb, graph)  # package defaults
            labels = np.asarray(scmsi.tl.cluster(emb, k, "kmeans", args.seed))
            if smooth:
                labels = sp.refine_domains(labels, graph)
            out["embedding"] = emb
            notes = f"{'smoothed + refined, ' if smooth else ''}k-means (k={k})"
        else:
            raise SystemExit(f"unknown method {args.method!r}")
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

    dataset = args.dataset
    sections = args.sections.split(",") if args.sections else SECTIONS[dataset]
    methods = args.methods.split(",") if args.methods else DEFAULT_METHODS[dataset]
    work = work_folder(args.work_dir, f"scmsi-spatial-{dataset}-")
    env = worker_env(1)
    rows, examples = [], {}
    for section in sections:
        adata = load_section(dataset, section)
        lab, ok = _labels(adata)
        k = len(np.unique(lab[ok]))
        for method in methods:
            for seed in range(args.seeds):
                out = work / f"{section}_{method}_{seed}.npz"
                if method == "spagcn":
                    h5ad, has_image = _spagcn_input(adata, k, dataset, work, section)
                    cmd = [args.spagcn_python, str(ROOT / "benchmarks" / "spatial_spagcn.py")]
                    cmd += [str(h5ad), str(seed), str(out)]
                    cmd += ["--histology"] if has_image and not args.no_histology else []
                else:
                    cmd = [sys.executable, "-m", "benchmarks.spatial", "_worker", dataset]
                    cmd += [section, method, str(seed), str(out)]
                    cmd += ["--epochs", str(args.epochs)] if args.epochs else []
                t0 = time.perf_counter()
                if run_worker(cmd, out, "", env, check=False) is not None:
                    print(f"FAILED {section} {method} seed {seed}", flush=True)
                    continue
                res = dict(np.load(out, allow_pickle=False))
                pred = res["labels"]
                row = {
                    "section": section,
                    "method": method,
                    "seed": seed,
                    "ari": adjusted_rand_score(lab[ok], pred[ok]),
                    "nmi": normalized_mutual_info_score(lab[ok], pred[ok]),
                    "n_domains": len(np.unique(pred)),
                    "time_s": float(res["time_s"]),
                    "notes": str(res["notes"]),
                }
                if "labels_auto" in res:
                    row["auto_ari"] = adjusted_rand_score(lab[ok], res["labels_auto"][ok])
                    row["auto_n"] = len(np.unique(res["labels_auto"]))
                rows.append(row)
                for i, name in enumerate(res.get("ablation_names", [])):
                    eq = res[f"ablation_{i}"]
                    rows.append(
                        {
                            **row,
                            "method": f"{method} ({name})",
                            "ari": adjusted_rand_score(lab[ok], eq[ok]),
                            "nmi": normalized_mutual_info_score(lab[ok], eq[ok]),
                            "n_domains": len(np.unique(eq)),
                            "notes": f"the {method} models above, spatial_domains({name})",
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
    p.add_argument("--no-histology", action="store_true", help="SpaGCN without the image")
    p.add_argument("--out", help="results folder (default benchmarks/results)")
    p.add_argument("--name", help="report name (default: the dataset)")
    p.add_argument("--work-dir", help="folder for per-run files; reuses runs already there")
    return run(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
