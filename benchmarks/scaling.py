"""Scaling benchmark: scMSI and totalVI on synthetic CITE-seq data of growing size.

    python -m benchmarks.scaling --sizes 10000 50000 200000 1000000

For each size N, data from :func:`scmsi.datasets.synthetic_citeseq` (4,000 genes, 100
proteins, 12 types, 4 batches) are written once to an h5mu file, and every measurement runs in
a fresh process that reads it (``python -m benchmarks.scaling worker ...``), so that peak RSS
(``VmHWM``) belongs to one job. Per size, in this order, so that scMSI and totalVI run side by
side under the same machine load:

1. ``scmsi_train``: setup (input checks), model construction (anchor selection timed on its
   own), then ``--steps`` training minibatches of 256 cells and ``--val-steps`` validation
   minibatches of one epoch (Lightning ``limit_train_batches``/``limit_val_batches``). The
   time per epoch is the mean time of a training step (the first ``WARMUP`` steps excluded)
   times the training minibatches of a full epoch, plus the same for validation: an
   extrapolation from the timed steps, labelled as such, unless the epoch has no more steps
   than were timed. The total at the default ``max_epochs`` is extrapolated from it.
2. ``totalvi_train``: the same for scvi-tools' TOTALVI with its defaults, on the same data.
3. ``scmsi_infer``: the model saved by step 1 (trained for those steps only: the timing of
   inference does not depend on the weights) is loaded onto the data and
   :func:`scmsi.tl.embed_and_cluster` runs with its defaults except ``umap=False``:
   coefficients (sparse top-k above 50M cells x anchors, exact streamed PCA), k-NN graph,
   Leiden at the resolution of highest silhouette.

``os.getloadavg()`` is recorded before and after every process: other jobs share the CPU.
Results go to ``benchmarks/results/scaling.{csv,md,png}`` (written atomically after every
size).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks._common import (
    RESULTS,
    atomic_text,
    atomic_write,
    command_line,
    machine_line,
    measured,
    peak_rss_mib,
    run_worker,
    worker_env,
)

WARMUP = 5  # training steps excluded from the step time (allocator and loader warm-up)
BATCH_SIZE = 256  # the training minibatch of both methods' defaults
DATA = {"n_genes": 4000, "n_proteins": 100, "n_types": 12, "n_batches": 4, "seed": 0}


# ------------------------------------------------------------------------------ measuring
class _Clock:
    """Wall time of named phases, with the peak RSS reached by the end of each."""

    def __init__(self):
        self.times: dict[str, float] = {}
        self.rss: dict[str, float] = {}

    def __call__(self, name: str):
        clock = self

        class _Phase:
            def __enter__(self):
                self.t0 = time.perf_counter()

            def __exit__(self, *exc):
                clock.times[name] = clock.times.get(name, 0.0) + time.perf_counter() - self.t0
                clock.rss[name] = peak_rss_mib()

        return _Phase()

    def wrap(self, module, name: str, label: str) -> None:
        """Time every call of ``module.name`` under ``label``."""
        fn = getattr(module, name)

        def timed(*args, **kwargs):
            with self(label):
                return fn(*args, **kwargs)

        setattr(module, name, timed)


def _step_timer():
    """A Lightning callback recording the wall time of each training and validation step."""
    from lightning.pytorch.callbacks import Callback

    class StepTimer(Callback):
        def __init__(self):
            self.train, self.train_cpu, self.val = [], [], []

        def on_train_batch_start(self, *args):
            self._t, self._c = time.perf_counter(), time.process_time()

        def on_train_batch_end(self, *args):
            self.train.append(time.perf_counter() - self._t)
            self.train_cpu.append(time.process_time() - self._c)

        def on_validation_batch_start(self, *args):
            self._v = time.perf_counter()

        def on_validation_batch_end(self, *args):
            self.val.append(time.perf_counter() - self._v)

    return StepTimer()


def _epoch_estimate(model, timer, default_epochs: int) -> dict:
    """Time per epoch and total at the default epochs, from the timed steps."""
    n_train = math.ceil(len(model.train_indices) / BATCH_SIZE)
    n_val = math.ceil(len(model.validation_indices) / BATCH_SIZE)
    skip = WARMUP if len(timer.train) > 2 * WARMUP else 0
    train = np.asarray(timer.train[skip:])
    val = np.asarray(timer.val) if timer.val else np.zeros(1)
    epoch = float(train.mean() * n_train + val.mean() * n_val)
    return {
        "step_s": float(train.mean()),
        # CPU time of the process per step: less sensitive than wall time to other jobs
        "step_cpu_s": float(np.mean(timer.train_cpu[skip:])),
        "val_step_s": float(val.mean()),
        "timed_steps": len(timer.train),
        "steps_per_epoch": n_train,
        "val_steps_per_epoch": n_val,
        "epoch_s": epoch,
        "epoch_extrapolated": len(timer.train) < n_train,
        "default_epochs": default_epochs,
        "total_s": epoch * default_epochs,
    }


# ------------------------------------------------------------------------------ workers
def _read(path: str, clock: _Clock):
    import mudata as md

    with clock("read"), md.set_options(pull_on_update=False):
        return md.read_h5mu(path)


def _train_kwargs(args, timer) -> dict:
    return {
        "max_epochs": 1,
        "batch_size": BATCH_SIZE,
        "limit_train_batches": args.steps,
        "limit_val_batches": args.val_steps,
        "callbacks": [timer],
        "enable_progress_bar": False,
    }


def work_generate(args) -> dict:
    """Generate the data of one size and write it to an uncompressed h5mu file."""
    import scmsi

    clock = _Clock()
    with clock("generate"):
        mdata = scmsi.datasets.synthetic_citeseq(args.n, **DATA)
    with clock("write"):
        tmp = f"{args.h5mu}.tmp"
        mdata.write_h5mu(tmp)
        os.replace(tmp, args.h5mu)
    rna = mdata["rna"].X
    return {"times": clock.times, "nnz_per_cell": rna.nnz / rna.shape[0]}


def work_scmsi_train(args) -> dict:
    import scmsi
    from scmsi import _model

    clock = _Clock()
    mdata = _read(args.h5mu, clock)
    clock.wrap(_model, "select_anchors", "anchor_selection")
    with clock("setup"):
        scmsi.SCMSI.setup_mudata(mdata, batch_key="batch")
    with clock("model_init"):
        model = scmsi.SCMSI(mdata, seed=0)
    timer = _step_timer()
    with clock("train_timed_steps"):
        model.train(**_train_kwargs(args, timer))
    est = _epoch_estimate(model, timer, _model.default_max_epochs(mdata.n_obs))
    model.save(args.model_dir, overwrite=True, save_anndata=False)
    return {"times": clock.times, "rss": clock.rss, "n_anchors": model.module.n_anchors, **est}


def _totalvi_max_epochs(n_obs: int) -> int:
    """totalVI's default ``max_epochs``: scvi-tools' heuristic (a private function there,
    ``get_max_epochs_heuristic``): 400 up to 20,000 cells, then ``20000 / N * 400``, at least 1.
    """
    return max(1, min(round(20_000 / n_obs * 400), 400))


def work_totalvi_train(args) -> dict:
    import scvi

    clock = _Clock()
    mdata = _read(args.h5mu, clock)
    scvi.settings.seed = 0
    with clock("setup"):
        scvi.model.TOTALVI.setup_mudata(
            mdata,
            rna_layer=None,
            protein_layer=None,
            batch_key="batch",
            modalities={"rna_layer": "rna", "protein_layer": "prot"},
        )
    with clock("model_init"):
        model = scvi.model.TOTALVI(mdata)
    timer = _step_timer()
    with clock("train_timed_steps"):
        model.train(**_train_kwargs(args, timer))
    est = _epoch_estimate(model, timer, _totalvi_max_epochs(mdata.n_obs))
    return {"times": clock.times, "rss": clock.rss, **est}


def work_scmsi_infer(args) -> dict:
    import scanpy as sc

    import scmsi

    clock = _Clock()
    mdata = _read(args.h5mu, clock)
    with clock("load_model"):  # registers the data again: the input checks run here
        model = scmsi.SCMSI.load(args.model_dir, adata=mdata)
    # inference (coefficients, latents) + PCA: dense path or streamed path
    for name in ("get_coefficients", "get_latent_representation"):
        clock.wrap(scmsi.SCMSI, name, "coefficients_pca")
    clock.wrap(scmsi.tl, "streamed_coefficient_pca", "coefficients_pca")
    clock.wrap(scmsi.tl, "coefficient_pca", "coefficients_pca")
    clock.wrap(sc.pp, "neighbors", "knn_graph")
    clock.wrap(scmsi.tl, "leiden_auto", "leiden_auto")
    with clock("embed_and_cluster"):
        scmsi.tl.embed_and_cluster(mdata, model, umap=False)
    coef = mdata.obsm["scmsi_coef"]
    from sklearn.metrics import adjusted_rand_score

    return {
        "times": clock.times,
        "rss": clock.rss,
        "coef_storage": type(coef).__name__,
        "n_clusters": int(mdata.obs["scmsi_leiden"].nunique()),
        "leiden_resolution": mdata.uns["scmsi_leiden"]["params"]["resolution"],
        "ari_after_timed_steps": float(
            adjusted_rand_score(mdata.obs["cell_type"], mdata.obs["scmsi_leiden"])
        ),
    }


WORKERS = {
    "generate": work_generate,
    "scmsi_train": work_scmsi_train,
    "totalvi_train": work_totalvi_train,
    "scmsi_infer": work_scmsi_infer,
}


def _worker_main(argv: list[str]) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.scaling worker")
    p.add_argument("job", choices=sorted(WORKERS))
    p.add_argument("n", type=int)
    p.add_argument("h5mu")
    p.add_argument("model_dir")
    p.add_argument("out_json")
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--val-steps", type=int, default=20)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    import torch

    import scmsi

    torch.set_num_threads(args.threads)
    scmsi.settings.num_threads = args.threads  # scmsi's training would apply its own default
    load0 = os.getloadavg()
    with measured(args.threads) as cost:
        res = WORKERS[args.job](args)
    res.update(
        job=args.job,
        n_cells=args.n,
        wall_s=cost["time_s"],
        cpu_s=cost["cpu_s"],
        peak_rss_mib=cost["peak_rss_mib"],
        loadavg_start=load0[0],
        loadavg_end=os.getloadavg()[0],
        threads=args.threads,
    )
    atomic_text(Path(args.out_json), json.dumps(res, indent=1))


# ------------------------------------------------------------------------------ driver
def _run(job: str, n: int, workdir: Path, args) -> dict:
    h5mu = workdir / f"synthetic_citeseq_{n}.h5mu"
    out = workdir / f"{job}_{n}.json"
    cmd = [
        sys.executable,
        "-m",
        "benchmarks.scaling",
        "worker",
        job,
        str(n),
        str(h5mu),
        str(workdir / f"model_{n}"),
        str(out),
        f"--steps={args.steps}",
        f"--val-steps={args.val_steps}",
        f"--threads={args.threads}",
    ]
    print(f"[{time.strftime('%H:%M:%S')}] {job} N={n}", flush=True)
    # a failed size is recorded in the report, and the next sizes still run
    error = run_worker(
        cmd, out, f"{job} N={n}", worker_env(args.threads, PYTHONWARNINGS=""),
        check=False, reuse=False, timeout=args.timeout,
    )  # fmt: skip
    if error is not None:
        return {"job": job, "n_cells": n, "error": error}
    res = json.loads(out.read_text())
    print(
        f"    {res['wall_s']:.0f} s, peak RSS {res['peak_rss_mib']:.0f} MiB, "
        f"load {res['loadavg_start']:.2f}->{res['loadavg_end']:.2f}",
        flush=True,
    )
    return res


def _table(rows: list[dict]) -> pd.DataFrame:
    """One row per (size, job) with flattened phase times and RSS."""
    flat = []
    for r in rows:
        f = {k: v for k, v in r.items() if k not in ("times", "rss")}
        f.update({f"time_{k}_s": v for k, v in r.get("times", {}).items()})
        f.update({f"rss_after_{k}_mib": v for k, v in r.get("rss", {}).items()})
        flat.append(f)
    return pd.DataFrame(flat)


def _summary(df: pd.DataFrame) -> pd.DataFrame:
    """One row per size: the figures the targets are about."""
    out = []
    for n, g in df.groupby("n_cells", sort=True):
        by = {r["job"]: r for _, r in g.iterrows()}
        s, t, i, gen = (by.get(k, {}) for k in WORKERS_ORDER)

        def get(d, k, default=np.nan):
            v = d.get(k, default) if len(d) else default
            return default if v is None or (isinstance(v, float) and np.isnan(v)) else v

        row = {
            "cells": int(n),
            "RNA nnz/cell": get(gen, "nnz_per_cell"),
            "scMSI s/step": get(s, "step_s"),
            "totalVI s/step": get(t, "step_s"),
            "scMSI CPU s/step": get(s, "step_cpu_s"),
            "totalVI CPU s/step": get(t, "step_cpu_s"),
            "ratio CPU/step": get(s, "step_cpu_s") / get(t, "step_cpu_s"),
            "scMSI s/epoch": get(s, "epoch_s"),
            "totalVI s/epoch": get(t, "epoch_s"),
            "ratio s/epoch": get(s, "epoch_s") / get(t, "epoch_s"),
            "epoch extrapolated": bool(get(s, "epoch_extrapolated", False)),
            "scMSI default epochs": get(s, "default_epochs"),
            "totalVI default epochs": get(t, "default_epochs"),
            "scMSI total h (extrap.)": get(s, "total_s") / 3600,
            "totalVI total h (extrap.)": get(t, "total_s") / 3600,
            "scMSI train peak RSS GiB": get(s, "peak_rss_mib") / 1024,
            "totalVI train peak RSS GiB": get(t, "peak_rss_mib") / 1024,
            "anchor selection s": get(s, "time_anchor_selection_s"),
            "scMSI model init s": get(s, "time_model_init_s"),
            "embed_and_cluster s": get(i, "time_embed_and_cluster_s"),
            "  inference+PCA s": get(i, "time_coefficients_pca_s"),
            "  kNN s": get(i, "time_knn_graph_s"),
            "  leiden_auto s": get(i, "time_leiden_auto_s"),
            "inference peak RSS GiB": get(i, "peak_rss_mib") / 1024,
            "load (1 min) min-max": _load_range(g),
        }
        out.append(row)
    return pd.DataFrame(out)


WORKERS_ORDER = ("scmsi_train", "totalvi_train", "scmsi_infer", "generate")


def _load_range(g: pd.DataFrame) -> str:
    loads = pd.concat([g.get("loadavg_start", pd.Series()), g.get("loadavg_end", pd.Series())])
    loads = loads.dropna()
    return f"{loads.min():.2f}-{loads.max():.2f}" if len(loads) else ""


def _fmt(v) -> str:
    """Three significant digits for floats (the table is transposed: columns mix types)."""
    if isinstance(v, float | np.floating) and not isinstance(v, bool | np.bool_):
        return f"{v:.3g}" if np.isfinite(v) else ""
    return str(v)


def _plot(summary: pd.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    n = summary["cells"]
    for col, label in (("scMSI s/epoch", "scMSI"), ("totalVI s/epoch", "totalVI")):
        axes[0].loglog(n, summary[col], "o-", label=label)
    axes[0].set(xlabel="cells", ylabel="s / epoch (1 thread)", title="time per epoch")
    for col, label in (
        ("scMSI train peak RSS GiB", "scMSI training"),
        ("totalVI train peak RSS GiB", "totalVI training"),
        ("inference peak RSS GiB", "scMSI inference + clustering"),
    ):
        axes[1].loglog(n, summary[col], "o-", label=label)
    axes[1].axhline(8, color="grey", ls=":", label="8 GiB (target at 200k)")
    axes[1].set(xlabel="cells", ylabel="peak RSS (GiB)", title="peak memory")
    for ax in axes:
        ax.legend(fontsize=8)
        ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    os.replace(tmp, path)


def _write(rows: list[dict], args, started: float) -> None:
    df = _table(rows)
    summary = _summary(df)
    RESULTS.mkdir(exist_ok=True)
    stem = RESULTS / args.name
    atomic_write(stem.with_suffix(".csv"), lambda p: df.to_csv(p, index=False))
    _plot(summary, stem.with_suffix(".png"))
    cmd = command_line("benchmarks.scaling")  # the note is printed below, not in the command
    run = [r for r in rows if not r.get("cached") and r.get("job") != "generate"]
    wall = f" ({(time.time() - started) / 60:.0f} min wall)" if run else ""
    errors = [f"- {r['job']} N={r['n_cells']}: {r['error']}" for r in rows if "error" in r]
    lines = [
        "# Scaling: scMSI vs totalVI on synthetic CITE-seq data",
        "",
        f"Command: `{cmd}`{wall}.",
        "",
        f"{machine_line(threads=args.threads, versions=True)} "
        "Other jobs shared the CPU: the 1-minute load average before/after each process is in "
        "the last column (2 cores: a load above 2 slows every job).",
        "",
        "Data: `scmsi.datasets.synthetic_citeseq(N, "
        + ", ".join(f"{k}={v}" for k, v in DATA.items())
        + ")`, CSR float32 RNA counts, dense protein counts.",
        "",
        "How: every measurement is a fresh process reading the h5mu file; peak RSS is its "
        "`VmHWM` (includes reading the data). Time per epoch = mean time of the timed training "
        f"steps (minibatch {BATCH_SIZE}, first {WARMUP} excluded) x training steps per epoch + "
        "mean validation step x validation steps per epoch; **extrapolated** from "
        f"{args.steps} training steps where an epoch has more (`epoch extrapolated`). "
        "`CPU s/step` is the process's CPU time per training step, which other jobs on the "
        "machine barely change (they stretch wall time): its ratio is the fairer comparison "
        "when the load is above the core count. Totals "
        "are that times each method's default `max_epochs` (scMSI: `default_max_epochs`, "
        "totalVI: scvi-tools' heuristic), also extrapolated; early stopping could end either "
        "sooner. Inference + clustering (`embed_and_cluster`, `umap=False`) uses a model "
        f"trained for those {args.steps} steps only: its cost does not depend on the weights, "
        "but its clusters are meaningless (no ARI is reported). No GPU was available: every "
        "figure is single-thread CPU.",
        "",
        summary.set_index("cells").map(_fmt).T.to_markdown(),
        "",
        f"Per-process details (phase times, RSS after each phase): `{args.name}.csv`. "
        f"Plot: `{args.name}.png`.",
    ]
    cached = sorted({f"{r['job']} N={r['n_cells']}" for r in rows if r.get("cached")})
    if cached:
        lines += ["", "Read from an earlier run's files (`--cached`): " + ", ".join(cached) + "."]
    if args.note:
        lines += ["", args.note]
    if errors:
        lines += ["", "Failed processes:", "", *errors]
    atomic_text(stem.with_suffix(".md"), "\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "worker":
        _worker_main(argv[1:])
        return
    p = argparse.ArgumentParser(prog="python -m benchmarks.scaling", description=__doc__)
    p.add_argument("--sizes", type=int, nargs="+", default=[10_000, 50_000, 200_000, 1_000_000])
    p.add_argument("--steps", type=int, default=60, help="timed training steps per method")
    p.add_argument("--val-steps", type=int, default=20, help="timed validation steps")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--data-dir", default=os.path.join(tempfile.gettempdir(), "scmsi_scaling"))
    p.add_argument("--name", default="scaling", help="results file stem")
    p.add_argument("--jobs", nargs="+", default=["scmsi_train", "totalvi_train", "scmsi_infer"])
    p.add_argument("--timeout", type=int, default=3600, help="seconds per process")
    p.add_argument("--note", default="", help="a sentence added to the results file")
    p.add_argument(
        "--cached",
        nargs="*",
        default=[],
        choices=sorted(WORKERS),
        help="jobs whose results are read from an earlier run's files in --data-dir",
    )
    args = p.parse_args(argv)
    workdir = Path(args.data_dir)
    workdir.mkdir(parents=True, exist_ok=True)
    started, rows = time.time(), []
    for n in args.sizes:
        gen = workdir / f"generate_{n}.json"
        if (workdir / f"synthetic_citeseq_{n}.h5mu").exists() and gen.exists():
            rows.append(json.loads(gen.read_text()))  # cached data: generation not re-timed
        else:
            rows.append(_run("generate", n, workdir, args))
        for job in args.jobs:
            cached = workdir / f"{job}_{n}.json"
            if job in args.cached and cached.exists():
                rows.append({**json.loads(cached.read_text()), "cached": True})
            else:
                rows.append(_run(job, n, workdir, args))
        _write(rows, args, started)


if __name__ == "__main__":
    main()
