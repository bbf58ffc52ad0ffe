"""Time ``scmsi demo``: the newcomer's first result, end to end.

    python -m benchmarks.demo [--runs 1] [--max-epochs N] [--work-dir <dir>]

Runs ``python -m scmsi.cli demo -o <work_dir>/demo.h5mu`` in a fresh process (through
:func:`benchmarks._common.run_worker`) and records its wall time, its CPU time (user + system,
``resource.getrusage`` of the child), the training time it prints, the scores it prints and the
machine's 1-minute load average before and after. numba's on-disk cache (pynndescent,
compiled on the first import after installation) is warm after the first run; the first run
of a fresh installation pays ~45 s more (measured on this machine: `umap`/`pynndescent` import
45 s under load with an empty cache, 1.6 s with it).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import sys
import time
from pathlib import Path

import pandas as pd

from benchmarks._common import (
    RESULTS,
    atomic_text,
    command_line,
    machine_line,
    publish,
    run_worker,
    work_folder,
)


def timed_demo(out: Path, extra: list[str]) -> None:
    """Run the demo as a child process and write its measurements to ``out``."""
    import subprocess

    load0 = os.getloadavg()[0]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "scmsi.cli", "demo", "-o", str(out.with_suffix(".h5mu")), *extra],
        capture_output=True, text=True,
    )  # fmt: skip
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(proc.stderr[-3000:])
    text = proc.stdout
    trained = re.search(r"trained in ([\d.]+) s", text)
    res = {
        "wall_s": wall,
        "cpu_s": (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime),
        "train_s": float(trained.group(1)) if trained else float("nan"),
        "scores": " / ".join(re.findall(r"^(scmsi_\w+: ARI [\d.]+)", text, re.M)),
        "load_before": load0,
        "load_after": os.getloadavg()[0],
    }
    atomic_text(out, json.dumps(res))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=1)
    p.add_argument("--max-epochs", type=int, help="passed to the demo (default: the package's)")
    p.add_argument("--work-dir")
    p.add_argument("--out", default=str(RESULTS / "demo.md"))
    p.add_argument("--note", default="", help="a sentence added to the report")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    extra = [] if args.max_epochs is None else ["--max-epochs", str(args.max_epochs)]
    if args.worker:
        timed_demo(Path(args.worker), extra)
        return 0
    work = work_folder(args.work_dir, "scmsi_demo_")
    rows = []
    for i in range(args.runs):
        out = work / f"demo_{i}.json"
        cmd = [sys.executable, "-m", "benchmarks.demo", *extra, "--worker", str(out)]
        run_worker(cmd, out, f"demo run {i}", env=os.environ | {"PYTHONWARNINGS": "ignore"})
        rows.append({"run": i + 1, **json.loads(out.read_text())})
    table = pd.DataFrame(rows)
    non_training = table["wall_s"] - table["train_s"]
    text = (
        "# `scmsi demo`: wall time to the first result\n\n"
        f"Command: `{command_line('benchmarks.demo')}`\n\n"
        + __doc__.split("\n\n", 2)[2]
        + "\n"
        + table.to_markdown(index=False, floatfmt=".2f")
        + f"\n\nOutside training (wall - train): {', '.join(f'{v:.1f}' for v in non_training)} s. "
        "Threads: the package's default (`scmsi.settings.num_threads` unset). Target (issue "
        "28): ≤ 45 s wall on an idle 2-core machine.\n\n"
        + (f"{args.note}\n\n" if args.note else "")
        + machine_line(shared=True)
        + "\n"
    )
    return publish(args.out, text)


if __name__ == "__main__":
    raise SystemExit(main())
