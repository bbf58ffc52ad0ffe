"""Where a default training step's time goes, at 1k and 10k cells.

    python -m benchmarks.step_profile --sizes 1000 10000 [--steps 20] [--threads 1]

For each size, in a fresh worker (:func:`benchmarks._common.run_worker`), scMSI with its
defaults is built on the synthetic CITE-seq data of ``benchmarks.scaling`` (the same h5mu
files) and trains ``--warmup`` + ``--steps`` minibatches of 256 cells. Over the timed steps:

- **parts**: the CPU time inside the module's forward pieces (each modality's encoder on the
  minibatch and on the anchors, self-expression, decoders, likelihoods, the cross-modal
  reconstruction), found by wrapping those methods; what is left of the step is the backward
  pass, the optimiser and Lightning;
- **ops**: ``torch.profiler``'s operators by self CPU time (the top ``--top``).

One thread by default (``scmsi.settings.num_threads``), as the CPU-time comparison with
totalVI. Writes ``benchmarks/results/step_profile.md``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import defaultdict
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


def _wrap(obj, name: str, label: str, acc: dict, on: list[bool]) -> None:
    """Accumulate the CPU seconds of every call of ``obj.name`` under ``label`` while on."""
    fn = getattr(obj, name)

    def timed(*args, **kwargs):
        if not on[0]:
            return fn(*args, **kwargs)
        c0 = time.process_time()
        try:
            return fn(*args, **kwargs)
        finally:
            acc[label] += time.process_time() - c0

    setattr(obj, name, timed)


def _instrument(module, acc: dict, on: list[bool]) -> None:
    """Wrap the forward pieces of an :class:`scmsi._module.SCMSIModule` (nested: an outer
    label's time includes its inner labels')."""
    for name in ("inference", "generative", "loss", "cross_expression_loss"):
        _wrap(module, name, f"module.{name}", acc, on)
    for m, enc in module.encoders.items():
        _wrap(enc, "forward", f"encoder[{m}] (cells + anchors)", acc, on)
    for m, se in module.senets.items():
        for name in ("forward", "logits"):
            if hasattr(se, name):
                _wrap(se, name, f"self-expression[{m}]", acc, on)
    for m, head in module.heads.items():
        _wrap(head, "decode", f"decoder[{m}]", acc, on)
        _wrap(head, "reconstruction_loss", f"likelihood[{m}]", acc, on)


def worker(h5mu: str, out: str, warmup: int, steps: int, threads: int, top: int) -> None:
    import mudata as md
    import torch
    from lightning.pytorch.callbacks import Callback
    from torch.profiler import ProfilerActivity, profile

    import scmsi

    scmsi.settings.num_threads = threads
    with md.set_options(pull_on_update=False):
        mdata = md.read_h5mu(h5mu)
    scmsi.SCMSI.setup_mudata(mdata, batch_key="batch")
    model = scmsi.SCMSI(mdata, seed=0)
    acc: dict = defaultdict(float)
    on = [False]
    _instrument(model.module, acc, on)
    prof = profile(activities=[ProfilerActivity.CPU])
    step = {"cpu": 0.0, "wall": 0.0, "seen": 0}

    class Window(Callback):
        """Time steps ``warmup`` to ``warmup + steps`` (over several epochs on small data);
        the profiler runs from the first of them to the end of training."""

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            on[0] = warmup <= step["seen"] < warmup + steps
            if step["seen"] == warmup:
                prof.__enter__()
            self._c, self._t = time.process_time(), time.perf_counter()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            if on[0]:
                step["cpu"] += time.process_time() - self._c
                step["wall"] += time.perf_counter() - self._t
            step["seen"] += 1
            on[0] = False

    # scvi-tools trains on 90% of the cells; enough epochs for warmup + steps minibatches
    per_epoch = -(-int(0.9 * mdata.n_obs) // scaling.BATCH_SIZE)
    model.train(
        max_epochs=-(-(warmup + steps) // per_epoch), batch_size=scaling.BATCH_SIZE,
        limit_train_batches=min(per_epoch, warmup + steps), limit_val_batches=0,
        early_stopping=False, callbacks=[Window()], enable_progress_bar=False,
    )  # fmt: skip
    prof.__exit__(None, None, None)
    steps = min(steps, step["seen"] - warmup)
    ops = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)[:top]
    res = {
        "n_anchors": model.module.n_anchors,
        "step_cpu_s": step["cpu"] / steps,
        "step_wall_s": step["wall"] / steps,
        "parts": {k: v / steps for k, v in acc.items()},
        "ops": [(e.key, e.self_cpu_time_total / 1e6 / steps, e.count // steps) for e in ops],
        "threads": torch.get_num_threads(),
    }
    atomic_text(Path(out), json.dumps(res, indent=1))


def _report(n: int, r: dict) -> str:
    parts = pd.DataFrame(
        [(k, v, v / r["step_cpu_s"]) for k, v in sorted(r["parts"].items(), key=lambda x: -x[1])],
        columns=["part (nested)", "CPU s/step", "share of step"],
    )
    ops = pd.DataFrame(r["ops"], columns=["op", "self CPU s/step", "calls/step"])
    ops["share of step"] = ops["self CPU s/step"] / r["step_cpu_s"]
    return (
        f"## {n:,} cells ({r['n_anchors']} anchors)\n\n"
        f"Step: {r['step_cpu_s']:.4f} CPU s, {r['step_wall_s']:.4f} wall s "
        f"({r['threads']} thread).\n\n"
        + parts.to_markdown(index=False, floatfmt=".4f")
        + "\n\n"
        + ops.to_markdown(index=False, floatfmt=".4f")
        + "\n"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[1_000, 10_000])
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--top", type=int, default=15)
    p.add_argument("--data-dir", default=str(Path(tempfile.gettempdir()) / "scmsi_scaling"))
    p.add_argument("--out", default=str(RESULTS / "step_profile.md"))
    p.add_argument("--note", default="", help="a sentence added to the report")
    p.add_argument("--worker", nargs=2, metavar=("H5MU", "OUT"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        worker(*args.worker, args.warmup, args.steps, args.threads, args.top)
        return 0
    work = Path(args.data_dir)
    work.mkdir(parents=True, exist_ok=True)
    sections = []
    for n in args.sizes:
        h5mu = work / f"synthetic_citeseq_{n}.h5mu"
        if not h5mu.exists():
            gen = argparse.Namespace(steps=1, val_steps=1, threads=1, timeout=3600)
            scaling._run("generate", n, work, gen)
        out = work / f"step_profile_{n}.json"
        cmd = [sys.executable, "-m", "benchmarks.step_profile", "--steps", str(args.steps)]
        cmd += ["--warmup", str(args.warmup), "--threads", str(args.threads)]
        cmd += ["--top", str(args.top), "--worker", str(h5mu), str(out)]
        run_worker(cmd, out, f"N={n}", worker_env(args.threads), reuse=False)
        sections.append(_report(n, json.loads(out.read_text())))
    text = (
        "# Cost of a training step\n\n"
        f"Command: `{command_line('benchmarks.step_profile')}`\n\n"
        + __doc__.split("\n\n", 2)[2]
        + "\n"
        + "\n".join(sections)
        + (f"\n{args.note}\n" if args.note else "")
        + "\n"
        + machine_line(shared=True, threads=args.threads)
        + "\n"
    )
    return publish(args.out, text)


if __name__ == "__main__":
    raise SystemExit(main())
