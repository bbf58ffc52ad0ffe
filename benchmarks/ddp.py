"""Does data-parallel training pay on CPU? 2 processes x 1 thread against 1 process x 1 thread.

    python -m benchmarks.ddp --cells 100000 --epochs 2 [--data-dir <dir>]

The synthetic CITE-seq data of ``benchmarks.scaling`` (N cells, 4,000 genes, 100 proteins, 12
types, 4 batches; the same h5mu file) are trained with scMSI's defaults for ``--epochs`` epochs
(no early stopping: scvi-tools turns it off under DDP) twice, each in fresh processes started
through :func:`benchmarks._common.run_worker`:

- **1 process**: ``python -m benchmarks.ddp --worker ...``, 1 thread;
- **2 processes**: the same worker under ``torchrun --standalone --nproc_per_node=2`` (gloo,
  ``accelerator="cpu", devices=2, strategy="ddp_find_unused_parameters_true"``), 1 thread
  each. Each rank reads the whole file, builds the same anchors from the same seed, and trains
  on its half of every epoch (scvi-tools' distributed sampler): an epoch has half the steps,
  each of ``batch_size`` cells per rank, and gradients are all-reduced after every step.

Rank 0 records the wall time of every epoch (training and validation) and the process's CPU
time, then clusters the cells (:func:`scmsi.tl.embed_and_cluster`, ``umap=False``) for the ARI
of the label-free Leiden clusters against the simulated types. Writes
``benchmarks/results/ddp.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from benchmarks import scaling
from benchmarks._common import (
    RESULTS,
    atomic_text,
    command_line,
    machine_line,
    publish,
    run_worker,
    worker_env,
)


def worker(h5mu: str, out: str, epochs: int, root: str) -> None:
    import mudata as md
    from lightning.pytorch.callbacks import Callback
    from sklearn.metrics import adjusted_rand_score

    import scmsi

    scmsi.settings.num_threads = 1
    world, rank = int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("RANK", "0"))
    load0, c0 = os.getloadavg()[0], time.process_time()
    with md.set_options(pull_on_update=False):
        mdata = md.read_h5mu(h5mu)
    scmsi.SCMSI.setup_mudata(mdata, batch_key="batch")
    model = scmsi.SCMSI(mdata, seed=0)
    epoch_s: list[float] = []

    class EpochTimer(Callback):
        def on_train_epoch_start(self, trainer, pl_module) -> None:
            self._t = time.perf_counter()

        def on_train_epoch_end(self, trainer, pl_module) -> None:  # after validation
            epoch_s.append(time.perf_counter() - self._t)

    kwargs = {"accelerator": "cpu", "devices": world, "default_root_dir": root}
    if world > 1:
        kwargs["strategy"] = "ddp_find_unused_parameters_true"
    c1 = time.process_time()
    model.train(
        max_epochs=epochs, early_stopping=False, enable_progress_bar=False,
        callbacks=[EpochTimer()], **kwargs,
    )  # fmt: skip
    train_cpu = time.process_time() - c1
    if rank != 0:
        return
    res = {"processes": world, "epoch_s": epoch_s, "train_cpu_s_rank0": train_cpu}
    res |= {"load_before": load0, "load_after_training": os.getloadavg()[0]}
    scmsi.tl.embed_and_cluster(mdata, model, umap=False)
    res["ari"] = float(adjusted_rand_score(mdata.obs["cell_type"], mdata.obs["scmsi_leiden"]))
    res["n_clusters"] = int(mdata.obs["scmsi_leiden"].nunique())
    res["cpu_s_rank0"] = time.process_time() - c0
    atomic_text(Path(out), json.dumps(res, indent=1))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cells", type=int, default=100_000)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--data-dir", default=str(Path(tempfile.gettempdir()) / "scmsi_scaling"))
    p.add_argument("--out", default=str(RESULTS / "ddp.md"))
    p.add_argument("--note", default="", help="a sentence added to the report")
    p.add_argument("--worker", nargs=2, metavar=("H5MU", "OUT"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    work = Path(args.data_dir)
    if args.worker:
        worker(*args.worker, args.epochs, str(work))
        return 0
    work.mkdir(parents=True, exist_ok=True)
    n = args.cells
    h5mu = work / f"synthetic_citeseq_{n}.h5mu"
    if not h5mu.exists():
        gen = argparse.Namespace(steps=1, val_steps=1, threads=1, timeout=3600)
        scaling._run("generate", n, work, gen)
    rows = []
    for procs in (1, 2):
        out = work / f"ddp_{n}_{procs}.json"
        cmd = [sys.executable, "-m", "benchmarks.ddp", "--epochs", str(args.epochs)]
        cmd += ["--data-dir", str(work), "--worker", str(h5mu), str(out)]
        if procs > 1:
            launch = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
            cmd = launch + [f"--nproc_per_node={procs}", "-m", *cmd[2:]]
        print(f"[{time.strftime('%H:%M:%S')}] {procs} process(es)", flush=True)
        run_worker(cmd, out, f"{procs} processes", worker_env(1), reuse=False)
        r = json.loads(out.read_text())
        rows.append({
            "processes x threads": f"{procs} x 1", "epochs": len(r["epoch_s"]),
            "s/epoch (mean)": sum(r["epoch_s"]) / len(r["epoch_s"]),
            "s per epoch, each": " ".join(f"{t:.0f}" for t in r["epoch_s"]),
            "rank-0 training CPU s": r["train_cpu_s_rank0"], "ARI": r["ari"],
            "clusters": r["n_clusters"], "load before": r["load_before"],
            "load after training": r["load_after_training"],
        })  # fmt: skip
    table = pd.DataFrame(rows)
    ratio = table["s/epoch (mean)"].iloc[1] / table["s/epoch (mean)"].iloc[0]
    text = (
        f"# Data-parallel training on CPU: {n:,} cells\n\n"
        f"Command: `{command_line('benchmarks.ddp')}`\n\n"
        + __doc__.split("\n\n", 2)[2]
        + "\n"
        + table.to_markdown(index=False, floatfmt=".3f")
        + f"\n\n2 processes ÷ 1 process, time per epoch: **{ratio:.2f}** (speed-up "
        f"{1 / ratio:.2f}x; target ≤ 0.62).\n\n"
        + (f"{args.note}\n\n" if args.note else "")
        + machine_line(shared=True, threads=1)
        + "\n"
    )
    return publish(args.out, text)


if __name__ == "__main__":
    raise SystemExit(main())
