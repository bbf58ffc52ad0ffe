"""Epoch time alone and next to busy processes: does scmsi keep its share of the CPU?

    python -m benchmarks.threads                 # writes benchmarks/results/threads.md

Each condition trains in-house PBMC for a few epochs in a fresh process, with the threads left
as a user leaves them (``scmsi.settings.num_threads`` unset: all available cores), while 0, 1
or 2 CPU-bound processes (``while True: pass``) run beside it. ``OMP_WAIT_POLICY=ACTIVE``
reproduces scmsi before the thread fix (OpenMP threads spin at barriers); the default is what
``import scmsi`` sets (PASSIVE). The figure of merit is epoch time under load / epoch time alone:
on 2 cores with one busy neighbour, the fair share is 2x.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks._common import publish

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
            [sys.executable, "-m", "benchmarks.threads", "--worker", "--epochs", str(epochs)],
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


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--out", default=str(RESULTS / "threads.md"))
    args = p.parse_args(argv)
    if args.worker:
        worker(args.epochs)
        return 0
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
        f"Command: `python -m benchmarks.threads --epochs {args.epochs}`\n\n"
        f"In-house PBMC (1,071 cells), median epoch time over epochs 2-{args.epochs}; "
        f"{os.cpu_count()} cores; torch threads as scmsi sets them (`threads`).\n\n"
        + table.to_markdown(index=False, floatfmt=".2f")
        + "\n\nTarget (issue 18): one busy neighbour ÷ alone ≤ 2.2 (fair share on 2 cores: 2).\n"
    )
    return publish(args.out, text)


if __name__ == "__main__":
    raise SystemExit(main())
