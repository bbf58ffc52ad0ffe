"""Helpers shared by the benchmark scripts: the worker loop, measurements, reports.

Every benchmark runs each (method, seed) in a fresh worker process (:func:`run_worker`),
which measures itself (:func:`measured`) and saves its result atomically (:func:`save_npz`);
a result file already in the work folder is reused, so a stopped run resumes. A failed worker
stops the benchmark with its output (fail loudly) unless the caller records the failure. The
reports end with :func:`machine_line` and name the command with :func:`command_line`, which
leaves out the paths of one machine (work folder, output folder).
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results"
# Options whose value is a path on the machine that ran the benchmark: not part of a result's
# provenance (a folder given to resume or to write elsewhere does not change the figures).
PATH_OPTIONS = ("--work-dir", "--out", "--save", "--spagcn-python", "--model-dir", "--data-dir")


def mean_sd(s: pd.Series, empty: str = "") -> str:
    """``"mean ± sd"`` over the non-missing values (sd with ddof=1); one value alone; ``empty``
    when there is none."""
    s = s.dropna()
    if s.empty:
        return empty
    return f"{s.mean():.3f} ± {s.std(ddof=1):.3f}" if len(s) > 1 else f"{s.mean():.3f}"


def atomic_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename: a killed run never
    leaves a half-written report."""
    atomic_write(path, lambda tmp: tmp.write_text(text))


def publish(path: str | Path, text: str) -> int:
    """Write a report atomically and print it; the exit status of a benchmark's ``main``."""
    atomic_text(Path(path), text)
    print(text)
    return 0


def atomic_write(path: Path, write) -> None:
    """``write(tmp)`` then rename ``tmp`` to ``path`` (same folder, same suffix)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    write(tmp)
    os.replace(tmp, path)


def save_npz(path: str | Path, **arrays) -> None:
    """Compressed npz, atomically: a killed worker leaves no file that looks finished."""
    atomic_write(Path(path), lambda tmp: np.savez_compressed(tmp, **arrays))


def dense(x, dtype=None) -> np.ndarray:
    """A dense array of ``x`` (scipy sparse, backed or dense), as ``dtype`` if given."""
    return np.asarray(x.toarray() if hasattr(x, "toarray") else x, dtype=dtype)


def peak_rss_mib(field: str = "VmHWM") -> float:
    """This process's peak (``VmHWM``) or current (``VmRSS``) resident memory in MiB.

    Linux keeps ``ru_maxrss`` across ``exec``, so a child started by a large parent would report
    the parent's peak; ``VmHWM`` belongs to the process's own address space.
    """
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(f"{field}:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    if field != "VmHWM":
        return float("nan")
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


@contextmanager
def measured(threads: int = 1) -> Iterator[dict]:
    """Limit BLAS/OpenMP to ``threads`` for the block; the dict it yields gets ``time_s``,
    ``cpu_s`` (this process) and ``peak_rss_mib`` when the block ends. Torch's threads are
    the caller's to set: importing torch here would inflate the RSS of methods without it."""
    from threadpoolctl import threadpool_limits

    out: dict = {}
    with threadpool_limits(limits=threads):
        t0, c0 = time.perf_counter(), time.process_time()
        yield out
        out.update(time_s=time.perf_counter() - t0, cpu_s=time.process_time() - c0)
    out["peak_rss_mib"] = peak_rss_mib()


def worker_env(threads: int = 1, **extra: str) -> dict[str, str]:
    """Environment of a worker process: ``threads`` BLAS/OpenMP threads, warnings off."""
    t = str(threads)
    env = dict(os.environ, PYTHONWARNINGS="ignore", OMP_NUM_THREADS=t, MKL_NUM_THREADS=t)
    env["OPENBLAS_NUM_THREADS"] = t
    env.update(extra)
    return env


def work_folder(work_dir: str | None, prefix: str) -> Path:
    """``work_dir`` (created; finished results in it are reused) or a new temporary folder."""
    import tempfile

    work = Path(work_dir) if work_dir else Path(tempfile.mkdtemp(prefix=prefix))
    work.mkdir(parents=True, exist_ok=True)
    print(f"work folder: {work}", flush=True)
    return work


def run_worker(
    cmd: Sequence[str],
    out: Path,
    label: str,
    env: dict[str, str] | None = None,
    check: bool = True,
    reuse: bool = True,
    timeout: float | None = None,
) -> str | None:
    """Run the worker ``cmd`` (from the repository root) that writes ``out``.

    With ``reuse``, an ``out`` already there is taken as it is (resume). A worker that exits
    non-zero, or writes no ``out``, prints the end of its output and stops the benchmark
    (``SystemExit`` naming ``label``); with ``check=False`` its last lines are returned
    instead, for the caller to record. None on success.
    """
    out = Path(out)
    if reuse and out.exists():
        return None
    proc = subprocess.run(
        list(cmd), cwd=ROOT, env=env or worker_env(), capture_output=True, text=True,
        timeout=timeout,
    )  # fmt: skip
    if proc.returncode == 0 and out.exists():
        return None
    print(proc.stdout[-2000:], proc.stderr[-4000:], file=sys.stderr, flush=True)
    if check:
        raise SystemExit(f"{label} failed (exit {proc.returncode})")
    return f"exit {proc.returncode}: {(proc.stdout + proc.stderr)[-300:]}"


def load_npz(path: Path) -> dict:
    """A worker's npz result as a dict of arrays."""
    return dict(np.load(path, allow_pickle=False))


def command_line(prog: str, argv: Sequence[str] | None = None) -> str:
    """``python -m <prog> <args>`` as run, with the values of :data:`PATH_OPTIONS` (and of
    ``--note``, printed in the report instead) replaced by placeholders."""
    argv = list(sys.argv[1:] if argv is None else argv)
    shown, skip = [], False
    for i, a in enumerate(argv):
        if skip:
            skip = False
            continue
        name, eq, _ = a.partition("=")
        if name in (*PATH_OPTIONS, "--note"):
            hidden = "..." if name == "--note" else f"<{name[2:].replace('-', '_')}>"
            shown.append(f"{name}={hidden}" if eq else f"{name} {hidden}")
            skip = not eq and i + 1 < len(argv)
        else:
            shown.append(a)
    return " ".join([f"python -m {prog}", *shown])


def machine() -> str:
    """CPU cores and model, RAM, GPU (none here) and OS of this machine."""
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next(line.split(":", 1)[1].strip() for line in fh if "model name" in line)
    except (OSError, StopIteration):
        pass
    return f"{os.cpu_count()} CPU cores ({cpu}), {mem:.0f} GiB RAM, no GPU; {platform.platform()}"


VERSIONS = ("scmsi", "scvi-tools", "torch", "scanpy")
ALL_VERSIONS = (*VERSIONS, "lightning", "anndata", "mudata", "scikit-learn", "pynndescent")
ALL_VERSIONS += ("igraph", "numpy", "scipy")


def machine_line(
    shared: bool = False, threads: int | None = None, extra: str = "", versions: bool = False
) -> str:
    """The footer of every report: the machine, threads per run, what else ran, and the
    versions of the packages measured (``versions=True``: also their dependencies)."""
    from importlib.metadata import version

    dists = ALL_VERSIONS if versions else VERSIONS
    line = f"Machine: {machine()}" + (" (shared with other jobs)" if shared else "")
    if threads is not None:
        line += f"; torch/BLAS threads per process: {threads}"
    line += f"; python {platform.python_version()}, "
    return line + ", ".join(f"{d} {version(d)}" for d in dists) + f"{extra}."
