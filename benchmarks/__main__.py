"""Benchmark harness: every method on the same preprocessed data, several seeds, one run.

    python -m benchmarks run inhouse_pbmc --seeds 5            # full run
    python -m benchmarks run inhouse_pbmc --smoke              # CI: subsample, 1 seed, 2 methods
    python -m benchmarks run snare_seq --seeds 5               # any registered dataset

Methods follow the dataset's modality types (``mdata.uns["modality_types"]``): scMSI, totalVI
(RNA counts + protein), MultiVI (RNA counts + integer peaks), WNN, MOFA+ and one single-modality
baseline ``only_<modality>`` per modality. A method that does not apply to the data is skipped,
and the results file says why (``benchmarks.peers.applicable``).

Each (method, seed) runs in a fresh process (``python -m benchmarks.peers``) that reports its
wall-clock time and peak RSS. Scores: ARI/NMI of k-means (k = number of labelled types,
n_init=10) on each embedding, and of Leiden on a 15-NN graph of the embedding, or on the
method's own graph where it has one (WNN), at the resolution (0.1-2.0) whose clusters have the
highest silhouette on the embedding (``scmsi.tl.leiden_auto``: the same rule for every method,
no labels used), and "stable Leiden": on the same graph, the resolution whose clusters are the
most stable under subsampling (``scmsi._cluster.leiden_stable``, the package's label-free default;
again the same rule for every method). Ablations: ``--methods scmsi:preset=paper`` trains
scMSI with those options in the same run.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks._common import (
    RESULTS,
    ROOT,
    atomic_text,
    command_line,
    dense,
    load_npz,
    machine_line,
    mean_sd,
    run_worker,
    work_folder,
    worker_env,
)

NOTES = Path(__file__).resolve().parent / "notes"
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

    from scmsi._cluster import leiden_auto, leiden_stable

    k = len(np.unique(labels))
    out = {}
    emb = npz.get("embedding")
    if emb is not None:
        km = KMeans(k, n_init=10, random_state=seed).fit_predict(emb)
        out["kmeans_ari"] = adjusted_rand_score(labels, km)
        out["kmeans_nmi"] = normalized_mutual_info_score(labels, km)
    if "graph_data" in npz:
        g = sparse.csr_matrix(
            (npz["graph_data"], npz["graph_indices"], npz["graph_indptr"]),
            shape=tuple(npz["graph_shape"]),
        )
    else:
        tmp = ad.AnnData(obs=pd.DataFrame(index=[str(i) for i in range(len(labels))]))
        tmp.obsm["X"] = emb
        sc.pp.neighbors(tmp, n_neighbors=15, use_rep="X", random_state=seed)
        g = tmp.obsp["connectivities"]
    lei, info = leiden_auto(g, emb, seed=seed)
    lei = np.asarray(lei)
    out["leiden_resolution"] = info["resolution"]
    out["leiden_ari"] = adjusted_rand_score(labels, lei)
    out["leiden_nmi"] = normalized_mutual_info_score(labels, lei)
    out["leiden_n"] = len(np.unique(lei))
    # The package's label-free default (tl.embed_and_cluster): the most stable resolution.
    stable, _ = leiden_stable(g, emb, seed=seed)
    stable = np.asarray(stable)
    out["stable_ari"] = adjusted_rand_score(labels, stable)
    out["stable_nmi"] = normalized_mutual_info_score(labels, stable)
    out["stable_n"] = len(np.unique(stable))
    return out


def run(args: argparse.Namespace) -> int:
    from benchmarks import peers

    seeds = list(range(1 if args.smoke else args.seeds))
    mdata = _load(args.dataset, args.smoke)
    types = peers.modality_types(mdata)
    requested = args.methods.split(",") if args.methods else peers.default_methods(mdata)
    methods, skipped = [], {}
    for method in requested:
        peers.get_method(method)  # unknown names fail here, before anything runs
        reason = peers.applicable(method, mdata)
        if reason is None:
            methods.append(method)
        else:
            skipped[method] = reason
            print(f"{method}: skipped, {reason}", flush=True)
    labels = mdata.obs[LABEL_KEY].astype(str).to_numpy()
    # resume: finished (method, seed) runs in --work-dir are reused
    work = work_folder(args.work_dir, f"scmsi-bench-{args.dataset}-")
    h5mu = work / "data.h5mu"
    if not h5mu.exists():
        mdata.write_h5mu(h5mu)
    rows, embeddings, scmsi_extras = [], {}, {}
    env = worker_env(args.threads)
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
            run_worker(cmd, out, f"{method} seed {seed}", env)
            res = load_npz(out)
            scores = _score(res, labels, seed)
            rows.append(
                {
                    "method": method,
                    "seed": seed,
                    "time_s": float(res["time_s"]),
                    "cpu_s": float(res["cpu_s"]) if "cpu_s" in res else np.nan,
                    "peak_rss_mib": float(res["peak_rss_mib"]),
                    "notes": str(res["notes"]),
                    **scores,
                }
            )
            base = rows[-1]
            for key in [k for k in res if k.startswith("extra_embedding_")]:
                # The same trained models fused or embedded another way: an ablation row, no
                # retraining. Key "extra_embedding_<option>_<value>".
                option, value = key[len("extra_embedding_") :].split("_", 1)
                rows.append(
                    {
                        **base,
                        "method": f"{method} ({option}={value})",
                        "notes": f"the {method} models above, with {option}={value!r}",
                        **_score({"embedding": res[key]}, labels, seed),
                    }
                )
            if seed == 0 and res.get("embedding") is not None:
                embeddings[method] = res["embedding"]
            if seed == 0 and method == "scmsi":
                scmsi_extras = {k[6:]: v for k, v in res.items() if k.startswith("extra_")}
            print(
                f"{method:16s} seed {seed}: "
                + "  ".join(f"{k} {v:.3f}" for k, v in scores.items() if isinstance(v, float))
                + f"  ({time.perf_counter() - t0:.0f} s)",
                flush=True,
            )
    table = pd.DataFrame(rows)
    name = f"{args.dataset}{'_smoke' if args.smoke else ''}"
    out_dir = Path(args.out) if args.out else RESULTS
    _write_report(table, name, args, out_dir, len(labels), mdata, skipped)
    xy = _figures(table, embeddings, labels, name, out_dir, args.seeds if not args.smoke else 1)
    if "scmsi" in embeddings and types.get("rna") == "counts" and types.get("prot") == "protein":
        _marker_heatmap(mdata, embeddings["scmsi"], labels, out_dir / f"{name}_markers.png")
        if scmsi_extras:
            _protein_panel(mdata, xy["scmsi"], scmsi_extras, out_dir / f"{name}_denoising.png")
    if not args.smoke and not args.out:
        _update_readme(name, out_dir / f"{name}.md")
    return 0


def summarise(table: pd.DataFrame) -> pd.DataFrame:
    """One row per method: mean ± sd over seeds."""
    agg = []
    for method, g in table.groupby("method", sort=False):
        agg.append(
            {
                "method": method,
                "k-means ARI": mean_sd(g["kmeans_ari"]) if "kmeans_ari" in g else "n/a",
                "k-means NMI": mean_sd(g["kmeans_nmi"]) if "kmeans_nmi" in g else "n/a",
                "Leiden ARI": mean_sd(g["leiden_ari"]),
                "Leiden NMI": mean_sd(g["leiden_nmi"]),
                "Leiden clusters": f"{g['leiden_n'].mean():.1f}",
                "Leiden res.": f"{g['leiden_resolution'].median():.1f}",
                "stable Leiden ARI": mean_sd(g["stable_ari"]) if "stable_ari" in g else "n/a",
                "stable clusters": f"{g['stable_n'].mean():.1f}" if "stable_n" in g else "n/a",
                "time (s)": mean_sd(g["time_s"]),
                "CPU time (s)": mean_sd(g["cpu_s"]) if g["cpu_s"].notna().all() else "n/a",
                "peak RSS (MiB)": f"{g['peak_rss_mib'].max():.0f}",
            }
        )
    return pd.DataFrame(agg)


def _write_report(table, name, args, out_dir: Path, n_cells: int, mdata, skipped) -> None:

    from benchmarks import peers

    summary = summarise(table)
    types = peers.modality_types(mdata)
    mods = "; ".join(
        f"{m} ({t}, {mdata[m].n_vars} features)" for m, t in types.items() if m in mdata.mod
    )
    lines = [f"# Benchmark: {name}", ""]
    cmd = command_line("benchmarks", sys.argv[1:])
    lines += [
        f"Command: `{cmd}`",
        "",
        f"Cells: {n_cells}; seeds: {sorted(table['seed'].unique().tolist())}; one process "
        f"per (method, seed), {args.threads} thread(s) each.",
        "",
        f"Modalities: {mods}.",
        "",
    ]
    lines.append(summary.to_markdown(index=False))
    if skipped:
        lines += ["", "Not run (not applicable to these modality types):", ""]
        lines += [f"- **{m}**: {reason}." for m, reason in skipped.items()]
    if {"scmsi", "totalvi"} <= set(table["method"]):
        ratio = (
            table.loc[table.method == "scmsi", "time_s"].mean()
            / table.loc[table.method == "totalvi", "time_s"].mean()
        )
        lines += ["", f"scMSI / totalVI training time: {ratio:.2f} (wall-clock)"]
        cpu = table.groupby("method")["cpu_s"].mean()
        if np.isfinite(cpu[["scmsi", "totalvi"]]).all():
            lines[-1] += f", {cpu['scmsi'] / cpu['totalvi']:.2f} (CPU time)"
    lines += ["", "Method settings (from each run):", ""]
    for method, g in table.groupby("method", sort=False):
        lines.append(f"- **{method}**: {g['notes'].iloc[0]}")
    notes = NOTES / f"{name}.md"
    if notes.exists():  # hand-written reading of the figures, kept across re-runs
        lines += ["", notes.read_text().strip()]
    lines += [
        "",
        machine_line(),
        "",
        "Per-seed results: `" + f"{name}.csv" + "`.",
    ]
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_text(out_dir / f"{name}.md", "\n".join(lines) + "\n")
    atomic_text(out_dir / f"{name}.csv", table.to_csv(index=False))
    print("\n".join(lines))


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
    coords = {}
    for ax, (method, emb) in zip(axes[0], embeddings.items(), strict=True):
        xy = coords[method] = umap_learn.UMAP(random_state=0).fit_transform(emb)
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
    return coords


def _kmeans_named(embedding: np.ndarray, labels: np.ndarray, seed: int = 0) -> np.ndarray:
    """k-means clusters (k = number of labelled types) named ``"<id>: <majority label>"``.

    The labels only name the clusters for the reader; the clusters themselves are label-free.
    """
    from sklearn.cluster import KMeans

    km = KMeans(len(np.unique(labels)), n_init=10, random_state=seed).fit_predict(embedding)
    names = {c: f"{c}: {pd.Series(labels[km == c]).value_counts().index[0]}" for c in np.unique(km)}
    return np.array([names[c] for c in km])


def _marker_heatmap(mdata, embedding, labels, path: Path, n_genes: int = 3) -> None:
    """Marker genes and proteins per scMSI cluster (the paper's Figure 3D/E).

    Clusters: k-means on scMSI's seed-0 embedding. Genes: the top ``n_genes`` per cluster by
    Wilcoxon rank-sum (scanpy) on log-normalised RNA; proteins: all, per-cell CLR. Each
    feature's cluster means are scaled to [0, 1] across clusters.
    """
    import anndata as ad
    import matplotlib.pyplot as plt
    import muon as mu
    import scanpy as sc
    from scipy import sparse

    clusters = pd.Categorical(_kmeans_named(embedding, labels))
    rna = ad.AnnData(
        sparse.csr_matrix(mdata["rna"].layers["counts"], dtype=np.float32),
        var=mdata["rna"].var[[]],
    )
    sc.pp.normalize_total(rna, target_sum=1e4)
    sc.pp.log1p(rna)
    rna.obs["cluster"] = clusters
    sizes = rna.obs["cluster"].value_counts()
    testable = [c for c in clusters.categories if sizes[c] >= 2]  # scanpy needs 2+ cells
    sc.tl.rank_genes_groups(rna, "cluster", groups=testable, method="wilcoxon")
    genes = []
    for c in testable:
        top = [g for g in rna.uns["rank_genes_groups"]["names"][c] if g not in genes]
        genes += top[:n_genes]
    prot = ad.AnnData(
        dense(mdata["prot"].layers["counts"], np.float32),
        var=mdata["prot"].var[[]],
    )
    mu.prot.pp.clr(prot, axis=1)

    def cluster_means(x: np.ndarray, names) -> pd.DataFrame:
        df = pd.DataFrame(x, columns=names).groupby(np.asarray(clusters), observed=True).mean()
        span = (df.max() - df.min()).replace(0, 1)
        return (df - df.min()) / span

    panels = [
        (cluster_means(dense(rna[:, genes].X), genes), "marker genes (log-normalised)"),
        (cluster_means(prot.X, list(prot.var_names)), "proteins (CLR)"),
    ]
    widths = [len(genes), prot.n_vars]
    fig, axes = plt.subplots(
        1,
        2,
        figsize=(0.32 * sum(widths) + 4, 0.45 * len(clusters.categories) + 2),
        gridspec_kw={"width_ratios": widths},
    )
    for ax, (df, title) in zip(axes, panels, strict=True):
        im = ax.imshow(df.to_numpy(), aspect="auto", cmap="Reds", vmin=0, vmax=1)
        ax.set_xticks(range(df.shape[1]), df.columns, rotation=90, fontsize=8)
        ax.set_yticks(range(df.shape[0]), df.index if ax is axes[0] else [], fontsize=8)
        ax.set_title(title, fontsize=10)
    fig.colorbar(im, ax=axes, shrink=0.6, label="cluster mean, scaled")
    fig.suptitle("scMSI clusters (k-means, seed 0), named by their majority label")
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)


def _protein_panel(mdata, xy, extras: dict, path: Path) -> None:
    """Raw (CLR) / denoised / foreground probability of CD3, CD4, CD8 on scMSI's UMAP (Fig. 3F)."""
    import anndata as ad
    import matplotlib.pyplot as plt
    import muon as mu

    names = [str(n) for n in extras["prot_names"]]
    wanted = []
    for target in ("CD3", "CD4", "CD8"):
        hit = [
            n for n in names if n.upper().startswith(target) and not n[len(target) :][:1].isdigit()
        ]
        wanted += hit[:1]
    if not wanted:
        return
    prot = ad.AnnData(dense(mdata["prot"].layers["counts"], np.float32))
    prot.var_names = list(mdata["prot"].var_names)
    mu.prot.pp.clr(prot, axis=1)
    fig, axes = plt.subplots(len(wanted), 3, figsize=(11, 3.2 * len(wanted)), squeeze=False)
    for row, p in zip(axes, wanted, strict=True):
        j = names.index(p)
        panels = (
            (prot[:, p].X.ravel(), f"{p} raw (CLR)", "viridis"),
            (np.log1p(extras["prot_denoised"][:, j]), f"{p} denoised (log1p)", "viridis"),
            (extras["prot_foreground"][:, j], f"{p} P(foreground)", "coolwarm"),
        )
        for ax, (v, title, cmap) in zip(row, panels, strict=True):
            lim = (0, 1) if "foreground" in title else (None, None)
            sc_ = ax.scatter(
                xy[:, 0], xy[:, 1], c=v, s=3, cmap=cmap, vmin=lim[0], vmax=lim[1], linewidths=0
            )
            ax.set_title(title)
            ax.set_xticks([])
            ax.set_yticks([])
            fig.colorbar(sc_, ax=ax, shrink=0.8)
    fig.suptitle("scMSI protein denoising (seed 0), UMAP of the scMSI embedding")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


BENCH_PAGE = ROOT / "docs" / "benchmarks.md"


def _update_readme(name: str, results_md: Path) -> None:
    """Copy the results table into docs/benchmarks.md between ``<!-- bench:NAME -->`` markers."""
    if not BENCH_PAGE.exists():
        return
    text = BENCH_PAGE.read_text()
    start, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
    if start not in text or end not in text:
        return
    body = results_md.read_text()
    table = "\n".join(line for line in body.splitlines() if line.startswith("|"))
    command = next((line for line in body.splitlines() if line.startswith("Command:")), "")
    ratio = next((line for line in body.splitlines() if line.startswith("scMSI / totalVI")), "")
    lines = body.splitlines()
    not_run = ""
    if "Not run (not applicable to these modality types):" in lines:
        i = lines.index("Not run (not applicable to these modality types):")
        items = []
        for x in lines[i + 2 :]:
            if not x.startswith("- "):
                break
            items.append(x[2:].replace("**", ""))
        not_run = "Not run: " + " ".join(items) if items else ""
    block = "\n".join(
        x for x in (start, command, "", table, "", ratio, not_run, end) if x is not None
    )
    head, rest = text.split(start, 1)
    atomic_text(BENCH_PAGE, head + block + rest.split(end, 1)[1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("run", help="run methods on a dataset and write benchmarks/results/")
    p.add_argument("dataset", help="a name of scmsi.datasets.DATASETS (e.g. inhouse_pbmc)")
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument(
        "--methods",
        help="comma-separated (default: scmsi,totalvi,multivi,wnn,mofa and only_<modality> "
        "for each modality; those that do not apply to the data are skipped)",
    )
    p.add_argument("--threads", type=int, default=1, help="threads per method process")
    p.add_argument("--smoke", action="store_true", help="400 cells, 1 seed, few epochs")
    p.add_argument("--out", help="results folder (default benchmarks/results)")
    p.add_argument("--work-dir", help="folder for per-run files; reuses runs already there")
    args = parser.parse_args(argv)
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
