"""Cold start of ``scmsi.tl.embed_and_cluster``: its first call in a fresh process.

    python -m benchmarks.cold_start              # writes benchmarks/results/cold_start.md

Two data sets: in-house PBMC (1,071 cells) and 100,000 synthetic CITE-seq cells
(:func:`scmsi._simulate.synthetic_citeseq`, seed 0). A model is trained first (PBMC: 20 epochs;
synthetic: 3 epochs on the first 10,000 cells, which are then embedded with the other 90,000
as new cells of the same layout); its quality does not matter here, only the time of the
steps after it. Each timed call runs in a new process, 1 thread, with the defaults of
``embed_and_cluster`` (no UMAP) and, for PBMC, also with ``umap=True``. The report gives the
time of the call and of its steps, the process's import and loading time (not part of the
call), and the load average of the machine before and after each call (other jobs sharing it
slow it down). ``--pythonpath`` runs the same workers against another checkout's ``src`` (say,
the version before a change) for a side-by-side figure.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import pandas as pd

from benchmarks._common import (
    RESULTS,
    command_line,
    machine_line,
    publish,
    run_worker,
    work_folder,
    worker_env,
)

DATASETS = {"inhouse_pbmc": 1_071, "synthetic_100k": 100_000}
STEPS = ("project_batches", "streamed_coefficient_pca", "coefficient_pca", "knn_graph")
STEPS += ("leiden_auto", "_umap_layout")


def _data(name: str):
    import mudata as md

    import scmsi

    md.set_options(pull_on_update=False)
    kinds = {"rna": "counts", "prot": "protein"}
    if name == "inhouse_pbmc":
        return scmsi.datasets.inhouse_pbmc(), kinds, {"rna": "counts"}
    return scmsi.datasets.synthetic_citeseq(DATASETS[name], seed=0), kinds, None


def train(name: str, model_dir: str) -> None:
    """Train the model whose embedding is clustered (not timed)."""
    import scmsi

    scmsi.settings.num_threads = 1
    mdata, kinds, layers = _data(name)
    if mdata.n_obs > 10_000:
        mdata = mdata[:10_000].copy()
    scmsi.SCMSI.setup_mudata(mdata, modalities=kinds, layers=layers)
    model = scmsi.SCMSI(mdata, seed=0)
    epochs = 20 if mdata.n_obs < 5_000 else 3
    model.train(max_epochs=epochs, early_stopping=False, enable_progress_bar=False)
    model.save(model_dir, overwrite=True)


def worker(name: str, model_dir: str, umap: bool, out: str) -> None:
    """One fresh process: load, then time ``embed_and_cluster`` and its steps."""
    t0 = time.perf_counter()
    load_before = os.getloadavg()[0]
    import scmsi
    import scmsi.tl

    scmsi.settings.num_threads = 1
    mdata, kinds, layers = _data(name)
    fit = mdata[:10_000].copy() if mdata.n_obs > 10_000 else mdata
    scmsi.SCMSI.setup_mudata(fit, modalities=kinds, layers=layers)
    model = scmsi.SCMSI.load(model_dir, fit)
    setup_s = time.perf_counter() - t0
    steps: dict[str, float] = {}
    for step in STEPS:  # embed_and_cluster looks these up in scmsi.tl when it runs
        if hasattr(scmsi.tl, step):
            setattr(scmsi.tl, step, _timed(getattr(scmsi.tl, step), step, steps))
    t1 = time.perf_counter()
    kwargs = {"umap": True} if umap else {}
    scmsi.tl.embed_and_cluster(mdata, model, **kwargs)
    call_s = time.perf_counter() - t1
    res = {
        "data": name,
        "cells": mdata.n_obs,
        "umap": umap,
        "embed_and_cluster s": call_s,
        **{f"{k} s": v for k, v in steps.items()},
        "imports + loading s": setup_s,
        "leiden clusters": int(mdata.obs["scmsi_leiden"].nunique()),
        "load avg before": load_before,
        "load avg after": os.getloadavg()[0],
    }
    Path(out).write_text(json.dumps(res))


def _timed(fn, name: str, record: dict):
    def wrapper(*args, **kwargs):
        t = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            record[name] = record.get(name, 0.0) + time.perf_counter() - t

    return wrapper


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--datasets", default=",".join(DATASETS))
    p.add_argument("--work-dir", default=None, help="models and results (reused when there)")
    p.add_argument("--pythonpath", default=None, help="src folder of another checkout to time")
    p.add_argument("--out", default=str(RESULTS / "cold_start.md"))
    p.add_argument("--worker", nargs=4, help=argparse.SUPPRESS)
    p.add_argument("--train", nargs=2, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.train:
        train(*args.train)
        return 0
    if args.worker:
        name, model_dir, umap, out = args.worker
        worker(name, model_dir, umap == "1", out)
        return 0
    work = work_folder(args.work_dir, "scmsi_cold_")
    env = worker_env(1, NUMBA_NUM_THREADS="1")
    if args.pythonpath:
        env["PYTHONPATH"] = os.pathsep.join([args.pythonpath, env.get("PYTHONPATH", "")])
    rows = []
    for name in args.datasets.split(","):
        model_dir = work / f"{name}_model"
        run_worker(
            [sys.executable, "-m", "benchmarks.cold_start", "--train", name, str(model_dir)],
            model_dir / "model.pt",
            f"training on {name}",
        )
        for umap in (False, True) if DATASETS[name] < 10_000 else (False,):
            out = work / f"{name}_umap{int(umap)}.json"
            cmd = ["--worker", name, str(model_dir), str(int(umap)), str(out)]
            run_worker([sys.executable, "-m", "benchmarks.cold_start", *cmd], out, name, env)
            rows.append(json.loads(out.read_text()))
            print(rows[-1], flush=True)
    table = pd.DataFrame(rows)
    text = (
        "# Cold start of `scmsi.tl.embed_and_cluster`\n\n"
        f"Command: `{command_line('benchmarks.cold_start', argv)}`\n\n"
        "First call in a fresh process, 1 thread, defaults (no UMAP) unless `umap` is True; "
        "step times are inside the call (`_umap_layout`: the UMAP); imports and loading of "
        "the data and model come before it and are not part of it. Load average: the "
        "machine's (2 cores) 1-minute load, before and after the call.\n\n"
        + table.to_markdown(index=False, floatfmt=".2f")
        + "\n\nTargets (issue 18): 1,000 cells ≤ 5 s on an idle machine; 100k cells ≤ 3 min.\n\n"
        + machine_line(shared=True, threads=1)
        + "\n"
    )
    return publish(args.out, text)


if __name__ == "__main__":
    raise SystemExit(main())
