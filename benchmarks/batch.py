"""Batch-correction benchmark: scMSI next to scVI, totalVI, Harmony and uncorrected PCA.

    python -m benchmarks.batch dlpfc_pair --seeds 3    # DLPFC 151674 + 151675, layers as labels
    python -m benchmarks.batch eccite --seeds 3        # ECCITE-seq PBMC, 4 hashtags, no labels
    python -m benchmarks.batch eccite --smoke          # CI: few cells/epochs, 1 seed

Data (built once per run, written to the work folder as ``data.h5mu``):

- ``dlpfc_pair``: the two DLPFC sections as two batches, on the genes they share (the Banksy
  authors kept 5,000 genes per section; they share 2,273); at most 3,000 HVGs (seurat_v3,
  ``batch_key``), so all 2,273 here; labels = the
  annotated layers (unlabelled spots are modelled but not scored). Modalities for scMSI: RNA
  counts + ``niche`` (continuous): mean log-normalised expression of each spot's 6 spatial
  neighbours *within its own section*, PCA (30) fitted on both sections jointly so the two
  sections share one niche space. There is no usable H&E image for these two sections.
- ``eccite``: ECCITE-seq PBMC (500 cells of one donor), batch = the 4 hashtags (aliquots);
  RNA 2,000 HVGs (seurat_v3, ``batch_key``) + 49 antibodies. No labels: batch metrics only.

Methods (one fresh process per (method, seed); wall time, CPU time and peak RSS recorded):

- ``pca``: uncorrected RNA (log-normalised, 30 PCs); also scib's pre-integration embedding.
- ``harmony``: harmonypy on that PCA. ``harmony_multi``: harmonypy on the RNA PCA concatenated
  with the second modality (niche PCs / protein CLR PCA), each block scaled to unit total
  variance, so Harmony sees what scMSI sees.
- ``scvi``: scVI on RNA counts with ``batch_key``, scvi-tools defaults (n_latent 10).
- ``totalvi`` (ECCITE only): totalVI on RNA + protein with ``batch_key``, defaults.
- ``scmsi``: ``SCMSI`` with package defaults and ``batch_key``; embedding = PCA of the fused
  coefficients (``obsm["X_scmsi"]`` of :func:`scmsi.tl.embed_and_cluster`); also scored:
  ``scmsi_latent`` = the RNA latent ``z^rna`` of the same run.

Scores: scib-metrics ``Benchmarker`` per seed on every embedding (pre-integration: ``pca``),
defaults: bio conservation = isolated labels, k-means NMI/ARI, silhouette label, cLISI; batch
correction = BRAS (scib-metrics' batch ASW), iLISI, kBET per label, graph connectivity, PCR
comparison; aggregates as scib (Total = 0.6 bio + 0.4 batch; ECCITE: batch only, one
pseudo-label for all cells, no graph connectivity). Also reported outside the aggregate: the
classic batch ASW (``silhouette_batch``). Mean ± sd over seeds.
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
    atomic_write,
    command_line,
    load_npz,
    machine_line,
    mean_sd,
    measured,
    run_worker,
    save_npz,
    work_folder,
    worker_env,
)
from scmsi._constants import MODALITY_TYPES_KEY

DATASETS = ("dlpfc_pair", "eccite")
BATCH, LABEL = "batch", "label"
N_PCS = 30
METHODS = {
    "dlpfc_pair": ["pca", "harmony", "harmony_multi", "scvi", "scmsi"],
    "eccite": ["pca", "harmony", "harmony_multi", "scvi", "totalvi", "scmsi"],
}
# scMSI epochs on DLPFC: the package heuristic gives 400 for 7k spots (~30 min per seed on the
# shared 2-core machine here, 40 epochs took 165 s); 40 fit the time this benchmark had.
DEFAULT_EPOCHS = {"dlpfc_pair": 40, "eccite": None}
SMOKE_EPOCHS = 10
AGGREGATES = ("Bio conservation", "Batch correction", "Total")


# ------------------------------------------------------------------------------ data
def _mudata(mods: dict, obs: pd.DataFrame, types: dict[str, str]):
    """MuData of ``mods`` with the global ``obs`` given (not pulled from the modalities)."""
    import mudata as md

    with md.set_options(pull_on_update=False):
        mdata = md.MuData(mods)
    mdata.obs = obs
    mdata.uns[MODALITY_TYPES_KEY] = types
    return mdata


def build_dlpfc_pair(sections: tuple[str, str] = ("151674", "151675"), n_top_genes: int = 3000):
    """Two DLPFC sections as one MuData: ``rna`` (counts) + ``niche`` (continuous)."""
    import anndata as ad
    import scanpy as sc
    from scipy import sparse

    import scmsi
    from scmsi import spatial as sp
    from scmsi._anchors import lognormalize
    from scmsi.spatial.input import _neighbourhood_pcs, _standardise

    parts = [scmsi.datasets.dlpfc(s) for s in sections]
    genes = parts[0].var_names.intersection(parts[1].var_names, sort=False)
    rna = ad.concat([p[:, genes] for p in parts], axis=0, merge="same")
    rna.obs_names = [f"{s}_{c}" for s, c in zip(rna.obs["section"], rna.obs_names, strict=True)]
    rna.X = sparse.csr_matrix(rna.X, dtype=np.float32)
    hvg = sc.pp.highly_variable_genes(
        rna, n_top_genes=n_top_genes, flavor="seurat_v3", batch_key="section", inplace=False
    )
    rna = rna[:, hvg["highly_variable"].to_numpy()].copy()
    # each section's own spatial graph; no edges between sections
    graph = sparse.block_diag([sp.spatial_graph(p.obsm["spatial"], 6) for p in parts]).tocsr()
    niche = _standardise(_neighbourhood_pcs(lognormalize(rna.X), graph, N_PCS))
    obs = pd.DataFrame(
        {
            BATCH: pd.Categorical(rna.obs["section"].astype(str)),
            LABEL: rna.obs["domain"].astype(object).to_numpy(),
        },
        index=rna.obs_names,
    )
    rna = ad.AnnData(rna.X, obs=obs.copy(), var=pd.DataFrame(index=rna.var_names))
    rna.layers["counts"] = rna.X.copy()
    nic = ad.AnnData(
        niche,
        obs=obs.copy(),
        var=pd.DataFrame(index=[f"niche_pc{i + 1}" for i in range(niche.shape[1])]),
    )
    mdata = _mudata({"rna": rna, "niche": nic}, obs, {"rna": "counts", "niche": "continuous"})
    mdata.uns["description"] = (
        f"DLPFC {' + '.join(sections)} (batches); {len(genes)} shared genes -> "
        f"{rna.n_vars} HVGs (seurat_v3, per-section batch_key); niche = {N_PCS} PCs of the "
        "mean log-normalised expression of each spot's 6 spatial neighbours in its own "
        "section, PCA fitted on both sections, standardised"
    )
    return mdata


def build_eccite(n_top_genes: int = 2000):
    """ECCITE-seq PBMC: ``rna`` (HVG counts) + ``prot``; batch = hashtag; no labels."""
    import scanpy as sc

    import scmsi

    src = scmsi.datasets.eccite_pbmc()
    rna = src["rna"].copy()
    rna.obs[BATCH] = src.obs["hashtag"].to_numpy()
    # seurat_v3's per-batch loess fails on genes (almost) absent from a batch
    b = rna.obs[BATCH].to_numpy()
    x = rna.layers["counts"]
    detected = np.min([(x[b == v] > 0).sum(0).A1 for v in np.unique(b)], axis=0)
    rna = rna[:, detected >= 3].copy()
    hvg = sc.pp.highly_variable_genes(
        rna,
        n_top_genes=n_top_genes,
        flavor="seurat_v3",
        batch_key=BATCH,
        layer="counts",
        inplace=False,
    )
    rna = rna[:, hvg["highly_variable"].to_numpy()].copy()
    prot = src["prot"].copy()
    obs = pd.DataFrame({BATCH: pd.Categorical(src.obs["hashtag"].astype(str))}, index=src.obs_names)
    for a in (rna, prot):
        a.obs = obs.copy()
    mdata = _mudata({"rna": rna, "prot": prot}, obs, {"rna": "counts", "prot": "protein"})
    mdata.uns["description"] = (
        f"ECCITE-seq PBMC control, {mdata.n_obs} cells, batch = hashtag (4); RNA "
        f"{rna.n_vars} HVGs (seurat_v3, batch_key; of the genes in >= 3 cells of every batch), "
        f"{prot.n_vars} antibodies (isotype controls included); no labels"
    )
    return mdata


def build(dataset: str, smoke: bool = False, seed: int = 0):
    """The benchmark's MuData; ``smoke`` keeps 100 random cells per batch."""
    mdata = build_dlpfc_pair() if dataset == "dlpfc_pair" else build_eccite()
    if smoke:
        rng = np.random.default_rng(seed)
        keep = np.concatenate(
            [
                rng.choice(idx, min(100, len(idx)), replace=False)
                for idx in (
                    np.flatnonzero(mdata.obs[BATCH] == b) for b in mdata.obs[BATCH].cat.categories
                )
            ]
        )
        mdata = mdata[np.sort(keep)].copy()
    return mdata


# ------------------------------------------------------------------------------ methods
def _block_scale(x: np.ndarray) -> np.ndarray:
    """Centre and scale a block to unit total variance, so blocks weigh alike."""
    x = np.asarray(x, np.float64)
    x = x - x.mean(0)
    return (x / np.sqrt(max(float((x**2).sum(1).mean()), 1e-12))).astype(np.float32)


def _harmony(x: np.ndarray, batch: np.ndarray, seed: int) -> np.ndarray:
    import harmonypy

    meta = pd.DataFrame({BATCH: np.asarray(batch).astype(str)})
    ho = harmonypy.run_harmony(x, meta, [BATCH], random_state=seed, verbose=False)
    z = np.asarray(ho.Z_corr)
    return (z.T if z.shape[0] != x.shape[0] else z).astype(np.float32)


def run_method(method: str, mdata, seed: int, epochs: int | None) -> dict:
    """Embeddings ``{name: (cells x d)}`` and ``notes`` of one method on ``mdata``."""
    from benchmarks import peers

    types = peers.modality_types(mdata)
    batch = mdata.obs[BATCH].astype(str).to_numpy()
    (second,) = [m for m in types if m != "rna"]
    if method in ("pca", "harmony", "harmony_multi"):
        _, pcs, note = peers.process_modality(mdata, "rna", "counts", seed)
        if method == "pca":
            return {"embeddings": {"pca": pcs}, "notes": note + "; no batch correction"}
        if method == "harmony":
            return {
                "embeddings": {"harmony": _harmony(pcs, batch, seed)},
                "notes": f"harmonypy defaults (random_state=seed) on {note}",
            }
        _, red, note2 = peers.process_modality(mdata, second, types[second], seed)
        x = np.concatenate([_block_scale(pcs), _block_scale(red)], 1)
        return {
            "embeddings": {"harmony_multi": _harmony(x, batch, seed)},
            "notes": f"harmonypy defaults on [{note}] + [{note2}], each block centred and "
            "scaled to unit total variance",
        }
    if method in ("scvi", "totalvi"):
        import scvi

        scvi.settings.seed = seed
        kw = {"enable_progress_bar": False}
        if epochs is not None:
            kw["max_epochs"] = epochs
        if method == "scvi":
            a = peers._counts(mdata["rna"])
            a.obs[BATCH] = batch
            a.layers["counts"] = a.X.copy()
            scvi.model.SCVI.setup_anndata(a, layer="counts", batch_key=BATCH)
            model = scvi.model.SCVI(a)
        else:
            import mudata as md

            with md.set_options(pull_on_update=False):
                m = md.MuData(
                    {"rna": peers._counts(mdata["rna"]), "prot": peers._counts(mdata[second])}
                )
            # dense protein: totalVI 1.4.2 cannot index a sparse one when it masks proteins
            # that are all zero in a batch
            m["prot"].X = peers._dense(m["prot"].X)
            for a in (m["rna"], m["prot"]):
                a.layers["counts"] = a.X.copy()
            m["rna"].obs[BATCH] = batch
            scvi.model.TOTALVI.setup_mudata(
                m,
                rna_layer="counts",
                protein_layer="counts",
                batch_key=BATCH,
                modalities={"rna_layer": "rna", "protein_layer": "prot", "batch_key": "rna"},
            )
            model = scvi.model.TOTALVI(m)
        model.train(**kw)
        n_epochs = len(model.history["elbo_train"])
        return {
            "embeddings": {method: np.asarray(model.get_latent_representation())},
            "notes": f"scvi-tools {scvi.__version__} {type(model).__name__} defaults "
            f"(n_latent={model.module.n_latent}) with batch_key; train() defaults"
            f"{'' if epochs is None else f' but max_epochs={epochs}'}; {n_epochs} epochs; "
            "embedding = get_latent_representation()",
        }
    if method == "scmsi":
        import scmsi
        from scmsi import _cluster

        m = mdata.copy()
        layers = {k: "counts" if t in ("counts", "protein") else None for k, t in types.items()}
        scmsi.SCMSI.setup_mudata(m, modalities=types, layers=layers, batch_key=BATCH)
        model = scmsi.SCMSI(m, seed=seed)
        model.train(max_epochs=epochs, enable_progress_bar=False)
        # the embedding scmsi.tl.embed_and_cluster writes to obsm["X_scmsi"]
        emb, _ = _cluster.coefficient_pca(model.get_coefficients(), model.module.n_latent, seed)
        z = model.get_latent_representation(modality="rna")
        n_epochs = len(model.history["elbo_train"])
        return {
            "embeddings": {"scmsi": emb, "scmsi_latent": z},
            "notes": f"scmsi {scmsi.__version__} defaults with batch_key, modalities {types}; "
            f"{model.module.n_anchors} anchors; {n_epochs} epochs"
            f"{' (package heuristic)' if epochs is None else f' (max_epochs={epochs})'}, "
            "early stopping on; scmsi = PCA of the fused coefficients (X_scmsi), "
            "scmsi_latent = RNA latent z^rna",
        }
    raise ValueError(f"unknown method {method!r}")


def _worker(args: argparse.Namespace) -> None:
    """One (method, seed) in this process: embeddings + time, CPU time, peak RSS -> npz."""
    import mudata as md

    if args.method in ("scvi", "totalvi", "scmsi"):
        import torch

        torch.set_num_threads(1)
    mdata = md.read_h5mu(args.h5mu)
    with measured(1) as cost:
        res = run_method(args.method, mdata, args.seed, args.epochs)
    out = {f"emb_{k}": np.asarray(v, np.float32) for k, v in res["embeddings"].items()}
    out.update(cost, notes=res["notes"], obs_names=np.asarray(mdata.obs_names, dtype=str))
    save_npz(args.out, **out)


# ------------------------------------------------------------------------------ scoring
def score(
    embeddings: dict[str, np.ndarray],
    batch: np.ndarray,
    labels: np.ndarray | None,
    pre: str = "pca",
) -> pd.DataFrame:
    """scib-metrics scores, one row per embedding (columns: metrics + aggregates).

    Parameters
    ----------
    embeddings
        ``{name: cells x d}``; ``pre`` names the uncorrected one (PCR comparison's reference).
    batch
        Batch of each cell.
    labels
        Label of each cell, or None: batch metrics only, every cell in one pseudo-label
        (per-label batch metrics then score the whole data set), without graph connectivity.
    """
    import anndata as ad
    from scib_metrics import silhouette_batch
    from scib_metrics.benchmark import BatchCorrection, Benchmarker, BioConservation

    n = len(batch)
    obs = pd.DataFrame(
        {
            BATCH: pd.Categorical(np.asarray(batch).astype(str)),
            LABEL: pd.Categorical(np.full(n, "all") if labels is None else np.asarray(labels)),
        },
        index=[str(i) for i in range(n)],
    )
    adata = ad.AnnData(obs=obs)
    for k, v in embeddings.items():
        adata.obsm[k] = np.asarray(v, np.float32)
    bm = Benchmarker(
        adata,
        batch_key=BATCH,
        label_key=LABEL,
        embedding_obsm_keys=list(embeddings),
        pre_integrated_embedding_obsm_key=pre,
        bio_conservation_metrics=None if labels is None else BioConservation(),
        # with one pseudo-label, graph connectivity asks whether the whole kNN graph is one
        # component: it scores merged cell types, not mixed batches
        batch_correction_metrics=BatchCorrection(graph_connectivity=labels is not None),
        progress_bar=False,
    )
    bm.benchmark()
    res = bm.get_results(min_max_scale=False)
    res = res.loc[res.index != "Metric Type"].astype(float)
    res["Batch ASW (classic)"] = [
        silhouette_batch(adata.obsm[k], obs[LABEL].to_numpy(), obs[BATCH].to_numpy())
        for k in res.index
    ]
    if labels is None:  # the "Total" of a batch-only run is its batch score
        res["Total"] = res["Batch correction"]
    return res


def metric_groups(columns) -> dict[str, list[str]]:
    """Metric columns by scib group (aggregates and extras apart)."""
    bio = ["Isolated labels", "KMeans NMI", "KMeans ARI", "Silhouette label", "cLISI"]
    batch = ["BRAS", "iLISI", "KBET", "Graph connectivity", "PCR comparison"]
    cols = list(columns)
    return {
        "Bio conservation": [c for c in bio if c in cols],
        "Batch correction": [c for c in batch if c in cols],
        "Aggregate score": [c for c in AGGREGATES if c in cols],
        "Not aggregated": [c for c in cols if c == "Batch ASW (classic)"],
    }


# ------------------------------------------------------------------------------ harness
def run(args: argparse.Namespace) -> int:
    seeds = list(range(1 if args.smoke else args.seeds))
    methods = args.methods.split(",") if args.methods else METHODS[args.dataset]
    epochs = SMOKE_EPOCHS if args.smoke else args.epochs
    if epochs is None:
        epochs = DEFAULT_EPOCHS[args.dataset]
    work = work_folder(args.work_dir, f"scmsi-batch-{args.dataset}-")
    h5mu = work / "data.h5mu"
    if not h5mu.exists():
        mdata = build(args.dataset, args.smoke)
        mdata.write_h5mu(h5mu)
    import mudata as md

    mdata = md.read_h5mu(h5mu)
    batch = mdata.obs[BATCH].astype(str).to_numpy()
    labels = mdata.obs[LABEL].to_numpy() if LABEL in mdata.obs else None
    scored = np.ones(mdata.n_obs, bool) if labels is None else pd.notna(labels)
    env = worker_env(1)
    runs, tables = [], []
    for seed in seeds:
        embeddings = {}
        for method in methods:
            out = work / f"{method}_{seed}.npz"
            cmd = [sys.executable, "-m", "benchmarks.batch", "_worker", method, str(h5mu)]
            cmd += [str(seed), str(out)]
            # scMSI gets the benchmark's epoch budget; peers their defaults (smoke: all short)
            ep = epochs if (method == "scmsi" or args.smoke) else None
            cmd += ["--epochs", str(ep)] if ep is not None else []
            t0 = time.perf_counter()
            run_worker(cmd, out, f"{method} seed {seed}", env)
            res = load_npz(out)
            for key in (k for k in res if k.startswith("emb_")):
                embeddings[key[4:]] = res[key][scored]
            runs.append(
                {
                    "method": method,
                    "seed": seed,
                    "time_s": float(res["time_s"]),
                    "cpu_s": float(res["cpu_s"]),
                    "peak_rss_mib": float(res["peak_rss_mib"]),
                    "notes": str(res["notes"]),
                }
            )
            print(f"{method:14s} seed {seed}: {time.perf_counter() - t0:.0f} s", flush=True)
        t0 = time.perf_counter()
        tab = score(embeddings, batch[scored], None if labels is None else labels[scored])
        tab.insert(0, "seed", seed)
        tables.append(tab.rename_axis("embedding").reset_index())
        print(f"scored seed {seed} in {time.perf_counter() - t0:.0f} s", flush=True)
        # report after every seed: a long run that is stopped still leaves its tables
        table = pd.concat(tables, ignore_index=True)
        name = f"batch_{args.dataset}{'_smoke' if args.smoke else ''}"
        out_dir = Path(args.out) if args.out else RESULTS
        out_dir.mkdir(parents=True, exist_ok=True)
        report(table, pd.DataFrame(runs), name, out_dir, mdata, int(scored.sum()), args)
    return 0


def summarise(table: pd.DataFrame) -> pd.DataFrame:
    """Mean ± sd over seeds per embedding, best Total first."""
    groups = metric_groups(table.columns)
    cols = [c for g in groups.values() for c in g]
    order = table.groupby("embedding")["Total"].mean().sort_values(ascending=False).index
    rows = []
    for emb in order:
        g = table[table["embedding"] == emb]
        rows.append({"embedding": emb, **{c: mean_sd(g[c]) for c in cols}})
    return pd.DataFrame(rows)


def report(table, runs, name, out_dir: Path, mdata, n_scored, args) -> None:
    """Write ``<name>.md``, ``<name>.csv`` (per seed) and ``<name>.png`` (heat table)."""
    import scib_metrics

    summary = summarise(table)
    method_of = {e: e if e != "scmsi_latent" else "scmsi" for e in table["embedding"].unique()}
    cost = runs.groupby("method").agg(
        time_s=("time_s", "mean"), cpu_s=("cpu_s", "mean"), rss=("peak_rss_mib", "max")
    )
    summary["time (s)"] = [f"{cost.loc[method_of[e], 'time_s']:.0f}" for e in summary.embedding]
    summary["CPU (s)"] = [f"{cost.loc[method_of[e], 'cpu_s']:.0f}" for e in summary.embedding]
    summary["peak RSS (MiB)"] = [f"{cost.loc[method_of[e], 'rss']:.0f}" for e in summary.embedding]
    labelled = LABEL in mdata.obs
    lines = [f"# Batch correction: {args.dataset}", ""]
    lines += [f"Command: `{command_line('benchmarks.batch')}`", ""]
    lines += [
        f"Data: {mdata.uns['description']}. Cells scored: {n_scored} of {mdata.n_obs}"
        f"{' (spots with a layer label)' if labelled else ''}; batches: "
        + ", ".join(f"{k} ({v})" for k, v in mdata.obs[BATCH].value_counts().sort_index().items())
        + ".",
        "",
        f"Seeds: {sorted(table['seed'].unique().tolist())}; one process per (method, seed), "
        "one thread each. Scores: scib-metrics Benchmarker defaults, raw (not min-max "
        "scaled); mean ± sd over seeds; higher is better for every column. "
        + (
            "Total = 0.6 bio conservation + 0.4 batch correction."
            if labelled
            else "No labels: every cell in one pseudo-label, so per-label batch metrics score "
            "the whole data set, and graph connectivity is left out (with one label it "
            "measures whether the kNN graph is one component, i.e. penalises separated cell "
            "types); Total = batch correction. Batch metrics alone reward over-correction (an "
            "embedding without any structure mixes batches perfectly)."
        ),
        "",
        summary.to_markdown(index=False),
        "",
        "Time, CPU and RSS: per (method, seed) process, mean over seeds (RSS: max); "
        "`scmsi_latent` comes from the `scmsi` run.",
        "",
        "Method settings (from each run):",
        "",
    ]
    for method, g in runs.groupby("method", sort=False):
        lines.append(f"- **{method}**: {g['notes'].iloc[0]}")
    notes = ROOT / "benchmarks" / "notes" / f"{name}.md"
    if notes.exists():  # hand-written reading of the figures, kept across re-runs
        lines += ["", notes.read_text().strip()]
    lines += [
        "",
        machine_line(
            shared=True,
            extra=f", scib-metrics {scib_metrics.__version__}, harmonypy "
            f"{_version('harmonypy')}, jax {_version('jax')}",
        ),
        "",
        f"Per-seed scores: `{name}.csv`; heat table: `{name}.png`.",
    ]
    text = "\n".join(lines) + "\n"
    atomic_text(out_dir / f"{name}.md", text)
    atomic_write(out_dir / f"{name}.csv", lambda p: table.to_csv(p, index=False))
    atomic_write(out_dir / f"{name}.png", lambda p: heat_table(table, p, args.dataset))
    print(text)


def _version(pkg: str) -> str:
    from importlib.metadata import version

    return version(pkg)


def heat_table(table: pd.DataFrame, path: Path, title: str) -> None:
    """scib-style table: mean per metric, coloured per column (min-max over embeddings)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = {k: v for k, v in metric_groups(table.columns).items() if v}
    cols = [c for g in groups.values() for c in g]
    mean = table.groupby("embedding")[cols].mean().sort_values("Total", ascending=False)
    sd = table.groupby("embedding")[cols].std(ddof=1).reindex(mean.index).fillna(0)
    span = (mean.max() - mean.min()).replace(0, 1)
    scaled = (mean - mean.min()) / span
    fig, ax = plt.subplots(figsize=(1.15 * len(cols) + 2.5, 0.55 * len(mean) + 1.8))
    cmaps = {"Bio conservation": "Greens", "Batch correction": "Blues"}
    x0 = 0
    for group, gcols in groups.items():
        cmap = plt.get_cmap(cmaps.get(group, "Oranges" if group == "Aggregate score" else "Greys"))
        for j, c in enumerate(gcols):
            for i, emb in enumerate(mean.index):
                ax.add_patch(
                    plt.Rectangle((x0 + j, i), 1, 1, color=cmap(0.15 + 0.7 * scaled.loc[emb, c]))
                )
                ax.text(
                    x0 + j + 0.5,
                    i + 0.5,
                    f"{mean.loc[emb, c]:.2f}\n±{sd.loc[emb, c]:.2f}",
                    ha="center",
                    va="center",
                    fontsize=7,
                )
        ax.text(
            x0 + len(gcols) / 2, -0.9, group, ha="center", va="bottom", fontsize=9, weight="bold"
        )
        x0 += len(gcols)
    ax.set_xlim(0, len(cols))
    ax.set_ylim(len(mean), -1.2)
    ax.set_xticks(np.arange(len(cols)) + 0.5, cols, rotation=40, ha="right", fontsize=8)
    ax.set_yticks(np.arange(len(mean)) + 0.5, mean.index, fontsize=9)
    ax.tick_params(length=0)
    for s in ax.spines.values():
        s.set_visible(False)
    n_seeds = table["seed"].nunique()
    ax.set_title(f"{title}: scib-metrics, mean ± sd over {n_seeds} seed(s)", fontsize=10, pad=22)
    fig.tight_layout()
    fig.savefig(path, dpi=130, format="png")
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "_worker":
        p = argparse.ArgumentParser(prog="python -m benchmarks.batch _worker")
        p.add_argument("method")
        p.add_argument("h5mu")
        p.add_argument("seed", type=int)
        p.add_argument("out")
        p.add_argument("--epochs", type=int)
        _worker(p.parse_args(argv[1:]))
        return 0
    p = argparse.ArgumentParser(prog="python -m benchmarks.batch", description=__doc__)
    p.add_argument("dataset", choices=DATASETS)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--methods", help="comma-separated (default: all that apply)")
    p.add_argument("--epochs", type=int, help="scMSI max_epochs (default: see DEFAULT_EPOCHS)")
    p.add_argument("--smoke", action="store_true", help="100 cells per batch, 1 seed, 10 epochs")
    p.add_argument("--out", help="results folder (default benchmarks/results)")
    p.add_argument("--work-dir", help="folder for per-run files; reuses runs already there")
    return run(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
