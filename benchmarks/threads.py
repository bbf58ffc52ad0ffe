"""Threads: how many pay at each data size, and does scmsi keep its share of a busy CPU?

    python -m benchmarks.threads --sizes 1000 10000 100000   # benchmarks/results/threads.md
    python -m benchmarks.threads --busy                      # benchmarks/results/threads_busy.md

By size (the default study): for each size N, synthetic CITE-seq data
(:func:`scmsi.datasets.synthetic_citeseq`, as ``benchmarks.scaling``) and, for 1 and 2 threads
(``scmsi.settings.num_threads``), a fresh worker (``benchmarks.scaling``'s ``scmsi_train``,
run through :func:`benchmarks._common.run_worker`) that builds the model and times ``--steps``
training minibatches of 256 cells: wall and CPU seconds per step, and the time per epoch
(steps per epoch x step time + validation). The conditions of one size run back to back, so
they share the machine's load; the CPU seconds barely depend on it, the wall seconds do.

Busy (``--busy``): each condition trains in-house PBMC for a few epochs in a fresh process, with
the threads left as a user leaves them, while 0, 1 or 2 CPU-bound processes (``while True:
pass``) run beside it. ``OMP_WAIT_POLICY=ACTIVE`` reproduces scmsi before the thread fix (OpenMP
threads spin at barriers); the default is what ``import scmsi`` sets (PASSIVE). The figure of
merit is epoch time under load / epoch time alone: on 2 cores with one busy neighbour, the fair
share is 2x.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks import scaling
from benchmarks._common import command_line, machine_line, publish, run_worker, worker_env

RESULTS = Path(__file__).resolve().parent / "results"
BUSY = "while True: pass"


def worker(epochs: int) -> None:
    from lightning.pytorch.callbacks import Callback

    import scmsi

    class Timer(Callback):
        def __init__(self):
            self.t: list[float] = []

        def on_train_epoch_start(self, trainer, pl_module):
            self._t0 = time.perf_counter()

        def on_train_epoch_end(self, trainer, pl_module):
            self.t.append(time.perf_counter() - self._t0)

    mdata = scmsi.datasets.inhouse_pbmc()  # runs numba (seurat_v3), which resets the pool
    scmsi.SCMSI.setup_mudata(
        mdata, modalities={"rna": "counts", "prot": "protein"}, layers={"rna": "counts"}
    )
    model = scmsi.SCMSI(mdata, seed=0)
    timer = Timer()
    model.train(
        max_epochs=epochs, early_stopping=False, enable_progress_bar=False, callbacks=[timer]
    )
    import torch

    epoch_s = float(np.median(timer.t[1:]))
    print(json.dumps({"epoch_s": epoch_s, "threads": torch.get_num_threads()}))


def run_condition(policy: str | None, n_busy: int, epochs: int) -> dict:
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    env.pop("OMP_NUM_THREADS", None)
    if policy is None:
        env.pop("OMP_WAIT_POLICY", None)
    else:
        env["OMP_WAIT_POLICY"] = policy
    busy = [subprocess.Popen([sys.executable, "-c", BUSY]) for _ in range(n_busy)]
    try:
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "benchmarks.threads",
                "--busy",
                "--worker",
                "--epochs",
                str(epochs),
            ],  # fmt: skip
            cwd=Path(__file__).resolve().parents[1],
            env=env,
            capture_output=True,
            text=True,
        )
    finally:
        for p in busy:
            p.kill()
            p.wait()
    if proc.returncode != 0:
        raise SystemExit(f"worker failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def by_size(args) -> str:
    """1 vs 2 threads per size (module docstring); the report's text."""
    work = Path(args.data_dir)
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    for n in args.sizes:
        args.threads, args.timeout, args.val_steps = 1, 3600, 5
        if not (work / f"synthetic_citeseq_{n}.h5mu").exists():
            scaling._run("generate", n, work, args)
        for t in (1, 2):
            out = work / f"threads_{n}_{t}.json"
            cmd = [sys.executable, "-m", "benchmarks.scaling", "worker", "scmsi_train", str(n)]
            cmd += [str(work / f"synthetic_citeseq_{n}.h5mu"), str(work / f"model_{n}_{t}")]
            cmd += [str(out), f"--steps={args.steps}", "--val-steps=5", f"--threads={t}"]
            print(f"[{time.strftime('%H:%M:%S')}] N={n} threads={t}", flush=True)
            run_worker(cmd, out, f"N={n} threads={t}", worker_env(t), reuse=False)
            r = json.loads(out.read_text())
            rows.append({
                "cells": n, "threads": t, "anchors": r["n_anchors"],
                "s/step": r["step_s"], "CPU s/step": r["step_cpu_s"],
                "s/epoch": r["epoch_s"], "load before": r["loadavg_start"],
                "load after": r["loadavg_end"],
            })  # fmt: skip
    table = pd.DataFrame(rows)
    one = table[table["threads"] == 1].set_index("cells")
    two = table[table["threads"] == 2].set_index("cells")
    ratio = pd.DataFrame({
        "speed-up, wall (1 thread ÷ 2)": one["s/step"] / two["s/step"],
        "CPU cost of 2 threads (÷ 1)": two["CPU s/step"] / one["CPU s/step"],
    }).reset_index()  # fmt: skip
    return (
        "# Threads by data size: 1 vs 2\n\n"
        f"Command: `{command_line('benchmarks.threads')}`\n\n"
        "Synthetic CITE-seq data (`scmsi.datasets.synthetic_citeseq(N, **benchmarks.scaling."
        f"DATA)`); per (N, threads) a fresh process times {args.steps} training minibatches of "
        "256 cells (the first 5 left out) with `scmsi.settings.num_threads` set; `s/epoch` is "
        "extrapolated from them. The load average (2 cores) is the machine's 1-minute load "
        "before and after each process: other jobs ran throughout, so the wall-clock speed-up "
        "of a second thread is understated wherever the load was above 1.\n\n"
        + table.to_markdown(index=False, floatfmt=".3f")
        + "\n\n"
        + ratio.to_markdown(index=False, floatfmt=".2f")
        + f"\n\n{args.note}\n\n"
        + machine_line(shared=True)
        + "\n"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[1_000, 10_000, 100_000])
    p.add_argument("--steps", type=int, default=30, help="timed training steps per condition")
    p.add_argument("--data-dir", default=str(Path(tempfile.gettempdir()) / "scmsi_scaling"))
    p.add_argument("--note", default="", help="a sentence added to the report")
    p.add_argument("--busy", action="store_true", help="the busy-neighbour study instead")
    p.add_argument("--epochs", type=int, default=6, help="--busy: epochs per condition")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--out", help="report (default results/threads.md, --busy: threads_busy.md)")
    args = p.parse_args(argv)
    if args.worker:
        worker(args.epochs)
        return 0
    if not args.busy:
        return publish(args.out or RESULTS / "threads.md", by_size(args))
    rows = []
    for label, policy in [("scmsi default (PASSIVE)", None), ("before the fix (ACTIVE)", "ACTIVE")]:
        for n_busy in (0, 1, 2):
            res = run_condition(policy, n_busy, args.epochs)
            rows.append({"OpenMP wait policy": label, "busy processes": n_busy, **res})
            print(rows[-1], flush=True)
    table = pd.DataFrame(rows)
    alone = table[table["busy processes"] == 0].set_index("OpenMP wait policy")["epoch_s"]
    table["÷ alone"] = table["epoch_s"] / table["OpenMP wait policy"].map(alone)
    text = (
        "# Threads: epoch time alone and beside busy processes\n\n"
        f"Command: `python -m benchmarks.threads --busy --epochs {args.epochs}`\n\n"
        f"In-house PBMC (1,071 cells), median epoch time over epochs 2-{args.epochs}; "
        f"{os.cpu_count()} cores; torch threads as scmsi sets them (`threads`).\n\n"
        + table.to_markdown(index=False, floatfmt=".2f")
        + "\n\nTarget (issue 18): one busy neighbour ÷ alone ≤ 2.2 (fair share on 2 cores: 2).\n"
    )
    return publish(args.out or RESULTS / "threads_busy.md", text)


if __name__ == "__main__":
    raise SystemExit(main())
