"""Benchmark harness: every method on the same preprocessed data, several seeds, one run.

    python -m benchmarks run inhouse_pbmc --seeds 5            # full run
    python -m benchmarks run inhouse_pbmc --smoke              # CI: subsample, 1 seed, 2 methods

Each (method, seed) runs in a fresh process (``python -m benchmarks.peers``) that reports its
wall-clock time and peak RSS. Scores: ARI/NMI of k-means (k = number of labelled types,
n_init=10) on each embedding, and of Leiden (resolution 1.0, scanpy's default, fixed for every
method and never chosen with labels) on a 15-NN graph of the embedding, or on the method's
own graph where it has one (WNN).
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

RESULTS = Path(__file__).resolve().parent / "results"
DEFAULT_METHODS = ["scmsi", "totalvi", "wnn", "mofa", "rna_pca", "protein_clr_pca"]
LABEL_KEY = "cell_type"


def _load(dataset: str, smoke: bool, seed: int = 0):
    import scmsi

    mdata = scmsi.datasets.load(dataset)
    if smoke:
        rng = np.random.default_rng(seed)
        keep = np.sort(rng.choice(mdata.n_obs, size=min(400, mdata.n_obs), replace=False))
        mdata = mdata[keep].copy()
    return mdata


def _score(npz: dict, labels: np.ndarray, seed: int) -> dict:
    import anndata as ad
    import scanpy as sc
    from scipy import sparse
    from sklearn.cluster import KMeans
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    k = len(np.unique(labels))
    out = {}
    emb = npz.get("embedding")
    if emb is not None:
        km = KMeans(k, n_init=10, random_state=seed).fit_predict(emb)
        out["kmeans_ari"] = adjusted_rand_score(labels, km)
        out["kmeans_nmi"] = normalized_mutual_info_score(labels, km)
    tmp = ad.AnnData(obs=pd.DataFrame(index=[str(i) for i in range(len(labels))]))
    if "graph_data" in npz:
        g = sparse.csr_matrix(
            (npz["graph_data"], npz["graph_indices"], npz["graph_indptr"]),
            shape=tuple(npz["graph_shape"]),
        )
        sc.tl.leiden(
            tmp,
            adjacency=g,
            resolution=1.0,
            random_state=seed,
            flavor="igraph",
            n_iterations=2,
            directed=False,
        )
    else:
        tmp.obsm["X"] = emb
        sc.pp.neighbors(tmp, n_neighbors=15, use_rep="X", random_state=seed)
        sc.tl.leiden(
            tmp, resolution=1.0, random_state=seed, flavor="igraph", n_iterations=2, directed=False
        )
    lei = tmp.obs["leiden"].to_numpy()
    out["leiden_ari"] = adjusted_rand_score(labels, lei)
    out["leiden_nmi"] = normalized_mutual_info_score(labels, lei)
    out["leiden_n"] = len(np.unique(lei))
    return out


def run(args: argparse.Namespace) -> int:
    methods = args.methods.split(",") if args.methods else DEFAULT_METHODS
    seeds = list(range(1 if args.smoke else args.seeds))
    mdata = _load(args.dataset, args.smoke)
    labels = mdata.obs[LABEL_KEY].astype(str).to_numpy()
    if args.work_dir:  # resume: finished (method, seed) runs in this folder are reused
        work = Path(args.work_dir)
        work.mkdir(parents=True, exist_ok=True)
    else:
        work = Path(tempfile.mkdtemp(prefix=f"scmsi-bench-{args.dataset}-"))
    print(f"work folder: {work}", flush=True)
    h5mu = work / "data.h5mu"
    if not h5mu.exists():
        mdata.write_h5mu(h5mu)
    rows, embeddings = [], {}
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    root = Path(__file__).resolve().parents[1]
    for method in methods:
        for seed in seeds:
            out = work / f"{method}_{seed}.npz"
            cmd = [
                sys.executable,
                "-m",
                "benchmarks.peers",
                method,
                str(h5mu),
                str(seed),
                str(out),
                "--threads",
                str(args.threads),
            ]
            if args.smoke and method == "scmsi":
                env["SCMSI_BENCH_MAX_EPOCHS"] = "20"
            t0 = time.perf_counter()
            if out.exists():
                proc = subprocess.CompletedProcess(cmd, 0)
            else:
                proc = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True)
            if proc.returncode != 0:
                print(proc.stdout[-2000:], proc.stderr[-4000:], file=sys.stderr)
                raise SystemExit(f"{method} seed {seed} failed (exit {proc.returncode})")
            res = dict(np.load(out, allow_pickle=False))
            scores = _score(res, labels, seed)
            rows.append(
                {
                    "method": method,
                    "seed": seed,
                    "time_s": float(res["time_s"]),
                    "peak_rss_mib": float(res["peak_rss_mib"]),
                    "notes": str(res["notes"]),
                    **scores,
                }
            )
            if seed == 0 and res.get("embedding") is not None:
                embeddings[method] = res["embedding"]
            print(
                f"{method:16s} seed {seed}: "
                + "  ".join(f"{k} {v:.3f}" for k, v in scores.items() if isinstance(v, float))
                + f"  ({time.perf_counter() - t0:.0f} s)",
                flush=True,
            )
    table = pd.DataFrame(rows)
    name = f"{args.dataset}{'_smoke' if args.smoke else ''}"
    out_dir = Path(args.out) if args.out else RESULTS
    _write_report(table, name, args, out_dir, len(labels))
    _figures(table, embeddings, labels, name, out_dir, args.seeds if not args.smoke else 1)
    return 0


def _mean_sd(s: pd.Series) -> str:
    return f"{s.mean():.3f} ± {s.std(ddof=1):.3f}" if len(s) > 1 else f"{s.mean():.3f}"


def summarise(table: pd.DataFrame) -> pd.DataFrame:
    """One row per method: mean ± sd over seeds."""
    agg = []
    for method, g in table.groupby("method", sort=False):
        agg.append(
            {
                "method": method,
                "k-means ARI": _mean_sd(g["kmeans_ari"]) if "kmeans_ari" in g else "n/a",
                "k-means NMI": _mean_sd(g["kmeans_nmi"]) if "kmeans_nmi" in g else "n/a",
                "Leiden ARI": _mean_sd(g["leiden_ari"]),
                "Leiden NMI": _mean_sd(g["leiden_nmi"]),
                "Leiden clusters": f"{g['leiden_n'].mean():.1f}",
                "time (s)": _mean_sd(g["time_s"]),
                "peak RSS (MiB)": f"{g['peak_rss_mib'].max():.0f}",
            }
        )
    return pd.DataFrame(agg)


def _write_report(table, name, args, out_dir: Path, n_cells: int) -> None:
    import scvi
    import torch

    import scmsi

    summary = summarise(table)
    lines = [f"# Benchmark: {name}", ""]
    cmd = "python -m benchmarks run " + " ".join(sys.argv[2:])
    lines += [
        f"Command: `{cmd}`",
        "",
        f"Cells: {n_cells}; seeds: {sorted(table['seed'].unique().tolist())}; one process "
        f"per (method, seed), {args.threads} thread(s) each.",
        "",
    ]
    lines.append(summary.to_markdown(index=False))
    if {"scmsi", "totalvi"} <= set(table["method"]):
        ratio = (
            table.loc[table.method == "scmsi", "time_s"].mean()
            / table.loc[table.method == "totalvi", "time_s"].mean()
        )
        lines += ["", f"scMSI / totalVI training time: {ratio:.2f}"]
    lines += ["", "Method settings (from each run):", ""]
    for method, g in table.groupby("method", sort=False):
        lines.append(f"- **{method}**: {g['notes'].iloc[0]}")
    lines += [
        "",
        f"Machine: {platform.platform()}, {os.cpu_count()} CPUs; python "
        f"{platform.python_version()}, scmsi {scmsi.__version__}, scvi-tools "
        f"{scvi.__version__}, torch {torch.__version__}.",
        "",
        "Per-seed results: `" + f"{name}.csv" + "`.",
    ]
    out_dir.mkdir(parents=True, exist_ok=True)
    _atomic_text(out_dir / f"{name}.md", "\n".join(lines) + "\n")
    _atomic_text(out_dir / f"{name}.csv", table.to_csv(index=False))
    print("\n".join(lines))


def _atomic_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _figures(table, embeddings, labels, name, out_dir: Path, n_seeds: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import umap as umap_learn

    # ARI / NMI bars with sd error bars (the paper's Figure 2A/B)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    g = table.groupby("method", sort=False)
    for ax, metric in zip(axes, ["kmeans_ari", "kmeans_nmi"], strict=True):
        if metric not in table:
            continue
        mean, sd = g[metric].mean(), g[metric].std(ddof=1).fillna(0)
        ax.bar(mean.index, mean.values, yerr=sd.values, capsize=3, color="tab:blue")
        ax.set_title(f"{metric.replace('_', ' ').upper()} (mean ± sd, {n_seeds} seeds)")
        ax.set_ylim(0, 1)
        ax.tick_params(axis="x", rotation=45)
    fig.tight_layout()
    fig.savefig(out_dir / f"{name}_scores.png", dpi=120)
    plt.close(fig)

    # UMAP grid coloured by the true label (Figure 2C/D)
    cats = pd.Categorical(labels)
    n = len(embeddings)
    fig, axes = plt.subplots(1, n, figsize=(3.6 * n + 2, 3.6), squeeze=False)
    cmap = plt.get_cmap("tab10")
    for ax, (method, emb) in zip(axes[0], embeddings.items(), strict=True):
        xy = umap_learn.UMAP(random_state=0).fit_transform(emb)
        for i, cat in enumerate(cats.categories):
            sel = cats == cat
            ax.scatter(xy[sel, 0], xy[sel, 1], s=3, color=cmap(i % 10), label=cat)
        ax.set_title(method)
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0][-1].legend(loc="center left", bbox_to_anchor=(1, 0.5), frameon=False, markerscale=3)
    fig.tight_layout()
    fig.savefig(out_dir / f"{name}_umaps.png", dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("run", help="run methods on a dataset and write benchmarks/results/")
    p.add_argument("dataset", help="a name of scmsi.datasets.DATASETS (e.g. inhouse_pbmc)")
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--methods", help=f"comma-separated (default: {','.join(DEFAULT_METHODS)})")
    p.add_argument("--threads", type=int, default=1, help="threads per method process")
    p.add_argument("--smoke", action="store_true", help="400 cells, 1 seed, few epochs")
    p.add_argument("--out", help="results folder (default benchmarks/results)")
    p.add_argument("--work-dir", help="folder for per-run files; reuses runs already there")
    args = parser.parse_args(argv)
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
