"""New cells and missing modalities on real data: query mapping and protein imputation.

    python -m benchmarks.mapping inhouse_pbmc --seeds 3 --ablation      # both tasks
    python -m benchmarks.mapping inhouse_pbmc --seeds 1 --smoke         # quick check

1. **Mapping.** For each seed, a random 70 % of the cells is the reference and the other 30 %
   the query. scMSI is trained on the reference only (package defaults), the reference is
   embedded (:func:`scmsi.tl.embed_and_cluster`) and the query is mapped with no retraining
   (:func:`scmsi.tl.map_query`): label transfer (15-NN on the embedding of the fused
   coefficients) gives accuracy, macro-F1 and a per-cell confidence; k-means (k = number of
   labelled types) on the query's embedding gives the ARI of query clusters. Baselines on the
   same split, no training: 15-NN label transfer on the RNA PCA (fitted on the reference,
   query projected) and on the protein CLR.
2. **Imputation.** For each seed and hidden fraction (30 %, 50 %), the protein of a random
   subset of cells is removed (the cells are absent from the protein AnnData: MuData's natural
   mosaic layout). scMSI is trained on the mosaic data (:func:`scmsi.pp.pad_modalities`,
   package defaults) and imputes the hidden protein from RNA (:meth:`scmsi.SCMSI.impute`).
   Compared in the same run: totalVI (hidden cells form a second batch whose protein counts
   are all zero, which totalVI masks with its ``protein_batch_mask`` and imputes, as in the
   scvi-tools CITE-seq + scRNA-seq tutorial; decoded with ``transform_batch`` = the measured
   batch), and k-NN on RNA (mean CLR protein of the 15 nearest measured cells in the RNA PCA).
   Truth: per-cell CLR of the hidden counts (muon, Seurat flavour). scMSI's and totalVI's
   denoised protein go through the same per-cell CLR; per protein, Pearson and Spearman over
   the hidden cells, then the mean over proteins.

Every training runs in a fresh process (``_worker``) with 1 thread. Results:
``benchmarks/results/<dataset>_mapping.md`` and ``<dataset>_imputation.md`` (+ ``.csv``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks import _common as common

LABEL_KEY = "cell_type"
QUERY_FRACTION = 0.3
HIDDEN_FRACTIONS = (0.3, 0.5)
N_NEIGHBORS = 15
N_PCS_RNA = 30


# ---------------------------------------------------------------------------- shared helpers
def _splits(n: int, seed: int, fraction: float) -> np.ndarray:
    """Boolean mask of ``round(fraction * n)`` random cells (the query / the hidden cells)."""
    rng = np.random.default_rng(seed)
    mask = np.zeros(n, dtype=bool)
    mask[rng.choice(n, size=int(round(fraction * n)), replace=False)] = True
    return mask


def _counts(a) -> np.ndarray:
    return common.dense(a.layers["counts"] if "counts" in a.layers else a.X, np.float64)


def clr(x: np.ndarray) -> np.ndarray:
    """Per-cell CLR as ``muon.prot.pp.clr(axis=1)``: ``log1p(x / exp(mean_j log1p(x_j)))``."""
    x = np.asarray(x, dtype=np.float64)
    return np.log1p(x / np.exp(np.log1p(x).mean(1, keepdims=True)))


def _lognorm(x: np.ndarray) -> np.ndarray:
    return np.log1p(x / np.maximum(x.sum(1, keepdims=True), 1) * 1e4)


def _rna_pca(x_fit: np.ndarray, x_all: np.ndarray, seed: int) -> np.ndarray:
    from sklearn.decomposition import PCA

    pca = PCA(N_PCS_RNA, random_state=seed).fit(_lognorm(x_fit))
    return pca.transform(_lognorm(x_all))


# ---------------------------------------------------------------------------- workers
def _train_scmsi(mdata, seed: int, max_epochs: int | None, **kwargs):
    import scmsi

    model = scmsi.SCMSI(mdata, seed=seed, **kwargs)
    model.train(max_epochs=max_epochs, enable_progress_bar=False)
    return model


def _job_mapping_scmsi(mdata, job: dict) -> dict:
    import scmsi

    query_mask = _splits(mdata.n_obs, job["seed"], QUERY_FRACTION)
    ref = mdata[~query_mask].copy()
    query = mdata[query_mask].copy()
    query_labels = query.obs[LABEL_KEY].astype(str).to_numpy()
    query.obs = query.obs.drop(columns=[LABEL_KEY])  # the query's labels are never seen
    scmsi.SCMSI.setup_mudata(
        ref,
        modalities={"rna": "counts", "prot": "protein"},
        layers={"rna": "counts", "prot": "counts"},
    )
    t0 = time.perf_counter()
    model = _train_scmsi(ref, job["seed"], job.get("max_epochs"))
    train_s = time.perf_counter() - t0
    k = ref.obs[LABEL_KEY].nunique()
    scmsi.tl.embed_and_cluster(ref, model, n_clusters=k, umap=False, seed=job["seed"])
    t0 = time.perf_counter()
    scmsi.tl.map_query(query, model, ref, label_key=LABEL_KEY)
    map_s = time.perf_counter() - t0
    return {
        "query_mask": query_mask,
        "query_labels": query_labels,
        "pred": query.obs[f"{LABEL_KEY}_pred"].astype(str).to_numpy(),
        "confidence": query.obs[f"{LABEL_KEY}_confidence"].to_numpy(),
        "query_emb": query.obsm["X_scmsi"],
        "ref_emb": ref.obsm["X_scmsi"],
        "ref_kmeans": ref.obs["scmsi_kmeans"].astype(str).to_numpy(),
        "train_s": train_s,
        "map_s": map_s,
        "n_epochs": len(model.history["elbo_train"]),
        "n_anchors": model.module.n_anchors,
    }


def _job_imputation_scmsi(mdata, job: dict) -> dict:
    import mudata as md

    import scmsi

    hidden = _splits(mdata.n_obs, job["seed"], job["fraction"])
    with md.set_options(pull_on_update=False):
        natural = md.MuData({"rna": mdata["rna"].copy(), "prot": mdata["prot"][~hidden].copy()})
    mosaic = scmsi.pp.pad_modalities(natural)
    assert np.array_equal(mosaic.obs_names, mdata.obs_names)
    scmsi.SCMSI.setup_mudata(
        mosaic,
        modalities={"rna": "counts", "prot": "protein"},
        layers={"rna": "counts", "prot": "counts"},
    )
    t0 = time.perf_counter()
    kwargs = {"lambda_cross": 0.0} if job["method"] == "scmsi_nocross" else {}
    model = _train_scmsi(mosaic, job["seed"], job.get("max_epochs"), **kwargs)
    train_s = time.perf_counter() - t0
    idx = np.flatnonzero(hidden)
    mean, sd = model.impute(modality="prot", indices=idx, n_samples=25, seed=job["seed"])
    with_bg = model.impute(
        modality="prot", indices=idx, include_protein_background=True, return_sd=False
    )
    return {
        "hidden": hidden,
        "pred": mean.to_numpy(),
        "pred_background": with_bg.to_numpy(),
        "sd": sd.to_numpy(),
        "train_s": train_s,
        "n_epochs": len(model.history["elbo_train"]),
        "n_anchors": model.module.n_anchors,
    }


def _job_imputation_totalvi(mdata, job: dict) -> dict:
    import anndata as ad
    import mudata as md
    import scvi

    hidden = _splits(mdata.n_obs, job["seed"], job["fraction"])
    scvi.settings.seed = job["seed"]
    rna = ad.AnnData(_counts(mdata["rna"]).astype(np.float32), obs=mdata["rna"].obs[[]].copy())
    prot_x = _counts(mdata["prot"]).astype(np.float32)
    prot_x[hidden] = 0.0
    prot = ad.AnnData(prot_x, obs=mdata["prot"].obs[[]].copy())
    prot.var_names = mdata["prot"].var_names
    rna.obs["pseudo_batch"] = np.where(hidden, "hidden", "measured")
    for a in (rna, prot):
        a.layers["counts"] = a.X.copy()
    with md.set_options(pull_on_update=False):
        m = md.MuData({"rna": rna, "prot": prot})
    scvi.model.TOTALVI.setup_mudata(
        m,
        rna_layer="counts",
        protein_layer="counts",
        batch_key="pseudo_batch",
        modalities={"rna_layer": "rna", "protein_layer": "prot", "batch_key": "rna"},
    )
    model = scvi.model.TOTALVI(m)
    t0 = time.perf_counter()
    max_epochs = job.get("max_epochs")
    model.train(**({"max_epochs": max_epochs} if max_epochs else {}))
    train_s = time.perf_counter() - t0
    idx = np.flatnonzero(hidden)
    preds = {}
    for background in (False, True):
        _, pro = model.get_normalized_expression(
            indices=idx,
            transform_batch="measured",
            n_samples=25,
            return_mean=True,
            include_protein_background=background,
        )
        preds[background] = np.asarray(pro)
    return {
        "hidden": hidden,
        "pred": preds[False],
        "pred_background": preds[True],
        "train_s": train_s,
        "n_epochs": len(model.history["elbo_train"]),
        # batches whose protein is masked (all False = excluded from the protein likelihood)
        "protein_batch_mask": json.dumps(
            {
                str(k): bool(np.asarray(v).any())
                for k, v in (model.protein_state_registry.protein_batch_mask or {}).items()
            }
        ),
    }


JOBS = {
    ("mapping", "scmsi"): _job_mapping_scmsi,
    ("imputation", "scmsi"): _job_imputation_scmsi,
    ("imputation", "scmsi_nocross"): _job_imputation_scmsi,
    ("imputation", "totalvi"): _job_imputation_totalvi,
}


def _worker(job_json: str, h5mu: str, out: str, threads: int) -> None:
    import warnings

    import mudata as md
    import scvi
    import torch
    from threadpoolctl import threadpool_limits

    warnings.filterwarnings("ignore")
    scvi.settings.verbosity = 30
    torch.set_num_threads(threads)
    job = json.loads(job_json)
    mdata = md.read_h5mu(h5mu)
    with threadpool_limits(limits=threads):
        t0 = time.perf_counter()
        res = JOBS[(job["task"], job["method"])](mdata, job)
        res["time_s"] = time.perf_counter() - t0
    arrays = {k: np.asarray(v) for k, v in res.items()}
    arrays = {k: v.astype(str) if v.dtype == object else v for k, v in arrays.items()}
    common.save_npz(out, **arrays)


# ---------------------------------------------------------------------------- scoring
def _knn_transfer(x_ref, y_ref, x_query, k: int = N_NEIGHBORS) -> np.ndarray:
    from sklearn.neighbors import KNeighborsClassifier

    return KNeighborsClassifier(k).fit(x_ref, y_ref).predict(x_query)


def _mapping_scores(y_true, y_pred, emb, k: int, seed: int) -> dict:
    from sklearn.cluster import KMeans
    from sklearn.metrics import accuracy_score, adjusted_rand_score, f1_score

    clusters = KMeans(k, n_init=10, random_state=seed).fit_predict(emb)
    return {
        "accuracy": accuracy_score(y_true, y_pred),
        "macro_f1": f1_score(y_true, y_pred, average="macro"),
        "query_kmeans_ari": adjusted_rand_score(y_true, clusters),
        "pred_label_ari": adjusted_rand_score(y_true, y_pred),
    }


def _mapping_rows(mdata, res: dict, seed: int) -> list[dict]:
    from sklearn.metrics import adjusted_rand_score

    labels = mdata.obs[LABEL_KEY].astype(str).to_numpy()
    q = res["query_mask"]
    y_ref, y_q = labels[~q], labels[q]
    assert np.array_equal(y_q, res["query_labels"])
    k = len(np.unique(labels))
    conf = res["confidence"]
    hi = conf >= 0.9
    rows = [
        {
            "method": "scMSI (map_query, no retraining)",
            "seed": seed,
            **_mapping_scores(y_q, res["pred"], res["query_emb"], k, seed),
            "ref_kmeans_ari": adjusted_rand_score(y_ref, res["ref_kmeans"]),
            "share_conf_ge_0.9": hi.mean(),
            "accuracy_conf_ge_0.9": (res["pred"][hi] == y_q[hi]).mean() if hi.any() else np.nan,
            "accuracy_conf_lt_0.9": (res["pred"][~hi] == y_q[~hi]).mean()
            if (~hi).any()
            else np.nan,
            "train_s": float(res["train_s"]),
            "map_s": float(res["map_s"]),
        }
    ]
    # baselines on the same split, no training
    rna = _counts(mdata["rna"])
    pcs = _rna_pca(rna[~q], rna, seed)
    rows.append(
        {
            "method": "RNA PCA + 15-NN (baseline)",
            "seed": seed,
            **_mapping_scores(y_q, _knn_transfer(pcs[~q], y_ref, pcs[q]), pcs[q], k, seed),
        }
    )
    prot = clr(_counts(mdata["prot"]))
    rows.append(
        {
            "method": "protein CLR + 15-NN (baseline)",
            "seed": seed,
            **_mapping_scores(y_q, _knn_transfer(prot[~q], y_ref, prot[q]), prot[q], k, seed),
        }
    )
    return rows


def _correlations(pred: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    from scipy.stats import pearsonr, spearmanr

    p = np.array([pearsonr(pred[:, j], truth[:, j]).statistic for j in range(truth.shape[1])])
    s = np.array([spearmanr(pred[:, j], truth[:, j]).statistic for j in range(truth.shape[1])])
    return p, s


def _knn_rna_imputation(mdata, hidden: np.ndarray, seed: int) -> np.ndarray:
    from sklearn.neighbors import NearestNeighbors

    rna = _counts(mdata["rna"])
    pcs = _rna_pca(rna, rna, seed)  # RNA is measured in every cell
    prot_clr = clr(_counts(mdata["prot"]))
    nn = NearestNeighbors(n_neighbors=N_NEIGHBORS).fit(pcs[~hidden])
    _, idx = nn.kneighbors(pcs[hidden])
    return prot_clr[~hidden][idx].mean(1)


def _imputation_rows(mdata, results: dict, fraction: float, seed: int):
    from scipy.stats import spearmanr

    hidden = results["scmsi"]["hidden"]
    assert np.array_equal(hidden, results["totalvi"]["hidden"])
    truth = clr(_counts(mdata["prot"])[hidden])
    proteins = list(mdata["prot"].var_names)
    preds = {
        "scMSI, denoised": clr(results["scmsi"]["pred"]),
        "scMSI, with background": clr(results["scmsi"]["pred_background"]),
        "totalVI, denoised": clr(results["totalvi"]["pred"]),
        "totalVI, with background": clr(results["totalvi"]["pred_background"]),
        "k-NN on RNA": _knn_rna_imputation(mdata, hidden, seed),
    }
    if "scmsi_nocross" in results:  # ablation: the paper's objective, no cross-modal term
        preds["scMSI without cross term, denoised"] = clr(results["scmsi_nocross"]["pred"])
        preds["scMSI without cross term, with background"] = clr(
            results["scmsi_nocross"]["pred_background"]
        )
    rows, per_protein = [], []
    for method, pred in preds.items():
        p, s = _correlations(pred, truth)
        row = {
            "method": method,
            "hidden_fraction": fraction,
            "seed": seed,
            "pearson": float(np.nanmean(p)),
            "spearman": float(np.nanmean(s)),
        }
        if method == "scMSI, denoised":
            err = np.abs(pred - truth)
            sd = results["scmsi"]["sd"]
            row["spearman_sd_vs_abs_error"] = float(spearmanr(sd.ravel(), err.ravel()).statistic)
            row["train_s"] = float(results["scmsi"]["train_s"])
        if method.startswith("totalVI"):
            row["train_s"] = float(results["totalvi"]["train_s"])
        rows.append(row)
        for j, prot in enumerate(proteins):
            per_protein.append(
                {
                    "method": method,
                    "hidden_fraction": fraction,
                    "seed": seed,
                    "protein": prot,
                    "pearson": p[j],
                    "spearman": s[j],
                }
            )
    return rows, per_protein


# ---------------------------------------------------------------------------- orchestration
def _run_job(job: dict, h5mu: Path, work: Path, threads: int) -> dict:
    name = "_".join(str(job[k]) for k in ("task", "method", "fraction", "seed") if k in job)
    out = work / f"{name}.npz"
    cmd = [
        sys.executable,
        "-m",
        "benchmarks.mapping",
        "_worker",
        json.dumps(job),
        str(h5mu),
        str(out),
        "--threads",
        str(threads),
    ]
    t0 = time.perf_counter()
    if not out.exists():
        common.run_worker(cmd, out, name, common.worker_env(threads))
        print(f"{name}: {time.perf_counter() - t0:.0f} s", flush=True)
    return common.load_npz(out)


def _summary(table: pd.DataFrame, by: list[str], cols: list[str]) -> pd.DataFrame:
    out = []
    for key, g in table.groupby(by, sort=False):
        key = key if isinstance(key, tuple) else (key,)
        out.append(
            {
                **dict(zip(by, key, strict=True)),
                **{c: common.mean_sd(g[c], "n/a") for c in cols if c in g},
            }
        )
    return pd.DataFrame(out)


def _footer(args, n_cells: int) -> list[str]:
    return [
        "",
        f"Cells: {n_cells}; seeds: {list(range(args.seeds))}; one process per training, "
        f"{args.threads} thread(s).",
        "",
        common.machine_line(),
    ]


def _write(path: Path, lines: list[str]) -> None:
    common.atomic_text(path, "\n".join(lines) + "\n")
    print("\n".join(lines))


def run(args: argparse.Namespace) -> int:
    import scmsi

    mdata = scmsi.datasets.load(args.dataset)
    if args.smoke:
        rng = np.random.default_rng(0)
        keep = np.sort(rng.choice(mdata.n_obs, size=min(400, mdata.n_obs), replace=False))
        mdata = mdata[keep].copy()
    work = common.work_folder(args.work_dir, "scmsi-map-")
    h5mu = work / "data.h5mu"
    if not h5mu.exists():
        mdata.write_h5mu(h5mu)
    max_epochs = 20 if args.smoke else None
    tasks = args.tasks.split(",")
    name = f"{args.dataset}{'_smoke' if args.smoke else ''}"
    out_dir = Path(args.out) if args.out else common.RESULTS
    cmd = common.command_line("benchmarks.mapping")

    ctx = {
        "args": args,
        "mdata": mdata,
        "h5mu": h5mu,
        "work": work,
        "max_epochs": max_epochs,
        "name": name,
        "out_dir": out_dir,
        "cmd": cmd,
    }
    if "mapping" in tasks:
        _mapping_task(**ctx)
    if "imputation" in tasks:
        _imputation_task(**ctx)
    return 0


def _mapping_task(args, mdata, h5mu, work, max_epochs, name, out_dir, cmd) -> None:
    """Label transfer to held-out query cells: runs the seeds, writes the report and CSV."""
    rows = []
    for seed in range(args.seeds):
        job = {"task": "mapping", "method": "scmsi", "seed": seed, "max_epochs": max_epochs}
        res = _run_job(job, h5mu, work, args.threads)
        rows += _mapping_rows(mdata, res, seed)
        n_epochs, n_anchors = int(res["n_epochs"]), int(res["n_anchors"])
    table = pd.DataFrame(rows)
    cols = [
        "accuracy",
        "macro_f1",
        "query_kmeans_ari",
        "pred_label_ari",
        "ref_kmeans_ari",
        "share_conf_ge_0.9",
        "accuracy_conf_ge_0.9",
        "accuracy_conf_lt_0.9",
        "train_s",
        "map_s",
    ]
    summary = _summary(table, ["method"], cols)
    lines = [
        f"# Query mapping: {name}",
        "",
        f"Command: `{cmd}`",
        "",
        f"Reference: a random {1 - QUERY_FRACTION:.0%} of the cells (per seed); query: the "
        f"other {QUERY_FRACTION:.0%}, mapped with no retraining. Mean ± sd over seeds.",
        "",
        summary.to_markdown(index=False),
        "",
        "- **accuracy / macro_f1**: label transfer, 15-NN with Gaussian weights "
        "(`scmsi.tl.transfer_labels`) for scMSI, plain 15-NN for the baselines.",
        "- **query_kmeans_ari**: k-means (k = number of labelled types, n_init=10) on the "
        "query cells' embedding alone (scMSI: the reference PCA of fused coefficients, "
        "projected); **pred_label_ari**: ARI of the transferred labels.",
        "- **ref_kmeans_ari**: k-means ARI on the reference cells (the model's own "
        "training cells), for comparison.",
        "- **share/accuracy conf ≥ 0.9**: the per-cell confidence "
        "(`obs['cell_type_confidence']`) separates reliable from doubtful transfers.",
        f"- scMSI: package defaults ({n_anchors} anchors, early stopping; last run "
        f"{n_epochs} epochs); times in seconds (1 thread).",
        "- Baselines: RNA = `normalize_total(1e4)` + log1p, PCA "
        f"({N_PCS_RNA} comps) fitted on the reference, query projected; protein = per-cell "
        "CLR.",
    ]
    lines += _footer(args, mdata.n_obs)
    lines += ["", f"Per-seed results: `{name}_mapping.csv`."]
    _write(out_dir / f"{name}_mapping.md", lines)
    table.to_csv(out_dir / f"{name}_mapping.csv", index=False)


def _imputation_task(args, mdata, h5mu, work, max_epochs, name, out_dir, cmd) -> None:
    """Protein imputation of hidden cells: runs fractions x seeds x methods, writes reports."""
    rows, per_protein = [], []
    for fraction in HIDDEN_FRACTIONS:
        for seed in range(args.seeds):
            results = {}
            methods = ["scmsi", "totalvi"]
            if args.ablation and fraction == HIDDEN_FRACTIONS[0]:
                methods.append("scmsi_nocross")
            for method in methods:
                job = {
                    "task": "imputation",
                    "method": method,
                    "fraction": fraction,
                    "seed": seed,
                    "max_epochs": max_epochs,
                }
                results[method] = _run_job(job, h5mu, work, args.threads)
            r, p = _imputation_rows(mdata, results, fraction, seed)
            rows += r
            per_protein += p
    table = pd.DataFrame(rows)
    summary = _summary(
        table,
        ["hidden_fraction", "method"],
        ["pearson", "spearman", "spearman_sd_vs_abs_error", "train_s"],
    )
    pp = pd.DataFrame(per_protein)
    by_protein = (
        pp.groupby(["hidden_fraction", "method", "protein"], sort=False)[["pearson", "spearman"]]
        .mean()
        .round(3)
        .reset_index()
    )
    wide = by_protein.pivot_table(
        index=["protein"], columns=["hidden_fraction", "method"], values="pearson"
    ).round(3)
    lines = [
        f"# Protein imputation: {name}",
        "",
        f"Command: `{cmd}`",
        "",
        "The protein of a random subset of cells (hidden fraction) is removed before "
        "training; each method predicts it, and the prediction is compared with the hidden "
        "per-cell CLR values. Correlations per protein over the hidden cells, then averaged "
        "over the proteins; mean ± sd over seeds.",
        "",
        summary.to_markdown(index=False),
        "",
        "- **scMSI**: cells absent from the protein AnnData, `scmsi.pp.pad_modalities`, "
        "package defaults (for mosaic data these include the cross-modal reconstruction "
        "term, `lambda_cross=1`), then `model.impute(modality='prot')`: protein latent "
        "rebuilt over the anchors with the RNA coefficients, decoded. *denoised* = "
        "foreground only (default output); *with background* = "
        "`include_protein_background=True` (expected counts of the mixture).",
        "- **totalVI**: scvi-tools TOTALVI defaults on all cells; the hidden cells' protein "
        "counts are zero and they form their own batch (`pseudo_batch`), which totalVI's "
        "`protein_batch_mask` excludes from the protein likelihood; prediction = "
        "`get_normalized_expression(transform_batch='measured', n_samples=25, "
        "include_protein_background=False/True)` protein. totalVI has no other way to "
        "leave out the protein of a random subset of cells.",
        "- **k-NN on RNA**: RNA `normalize_total(1e4)` + log1p, PCA "
        f"({N_PCS_RNA} comps) on all cells; mean CLR protein of the {N_NEIGHBORS} nearest "
        "measured cells.",
        "- scMSI's and totalVI's predictions are put through the same per-cell CLR as the "
        "truth before correlating. *scMSI without cross term* (with `--ablation`, first "
        "hidden fraction only): `lambda_cross=0`, the paper's objective alone. "
        "**spearman_sd_vs_abs_error**: rank correlation between "
        "scMSI's imputation sd (25 posterior draws, denoised output) and its absolute error "
        "(CLR), over all hidden cells and proteins: > 0 means the sd flags the worse "
        "imputations.",
        "",
        "Per-protein Pearson (mean over seeds):",
        "",
        wide.to_markdown(),
    ]
    lines += _footer(args, mdata.n_obs)
    lines += ["", f"Per-seed results: `{name}_imputation.csv`."]
    _write(out_dir / f"{name}_imputation.md", lines)
    table.to_csv(out_dir / f"{name}_imputation.csv", index=False)
    pp.to_csv(out_dir / f"{name}_imputation_per_protein.csv", index=False)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "_worker":
        p = argparse.ArgumentParser(prog="python -m benchmarks.mapping _worker")
        p.add_argument("job")
        p.add_argument("h5mu")
        p.add_argument("out")
        p.add_argument("--threads", type=int, default=1)
        a = p.parse_args(argv[1:])
        _worker(a.job, a.h5mu, a.out, a.threads)
        return 0
    parser = argparse.ArgumentParser(prog="python -m benchmarks.mapping", description=__doc__)
    parser.add_argument("dataset", help="a name of scmsi.datasets.DATASETS (e.g. inhouse_pbmc)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--tasks", default="mapping,imputation")
    parser.add_argument("--threads", type=int, default=1, help="threads per training process")
    parser.add_argument("--smoke", action="store_true", help="400 cells, 20 epochs")
    parser.add_argument(
        "--ablation",
        action="store_true",
        help="imputation: also scMSI with lambda_cross=0 (first hidden fraction only)",
    )
    parser.add_argument("--out", help="results folder (default benchmarks/results)")
    parser.add_argument("--work-dir", help="folder for per-run files; reuses runs already there")
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
