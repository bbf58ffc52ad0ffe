"""Package settings: how many CPU threads torch may use.

numba (scanpy's ``seurat_v3`` gene selection, UMAP, pynndescent) resets the OpenMP pool that
torch shares, so a thread count set once by the user does not survive preprocessing. scmsi sets
torch's intra-op threads itself at the start of every training run and inference pass.
"""

from __future__ import annotations

import os
from pathlib import Path


def available_cores() -> int:
    """CPU cores this process may use: its affinity mask, capped by a cgroup v2 CPU quota."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            cores = min(cores, max(1, int(int(quota) // int(period))))
    except (OSError, ValueError):
        pass
    return max(1, cores)


# Below this many cells, training uses one thread by default: a step's matrices (a 256-cell
# minibatch against the anchors, which grow with N) are too small for a second thread to pay
# for its synchronisation (benchmarks/results/threads.md).
MIN_CELLS_PER_EXTRA_THREAD = 20_000


def default_threads(n_cells: int | None = None) -> int:
    """The threads used when :attr:`Settings.num_threads` is None.

    The available cores (:func:`available_cores`), at most ``OMP_NUM_THREADS`` when it is set
    (a scheduler's or a benchmark's limit), and one thread below
    :data:`MIN_CELLS_PER_EXTRA_THREAD` cells (``n_cells``: the data trained on or encoded).
    """
    n = available_cores()
    try:
        n = min(n, max(1, int(os.environ["OMP_NUM_THREADS"])))
    except (KeyError, ValueError):
        pass
    if n_cells is not None and n_cells < MIN_CELLS_PER_EXTRA_THREAD:
        return 1
    return n


class Settings:
    """scmsi's global settings (``scmsi.settings``).

    Attributes
    ----------
    num_threads
        torch intra-op threads for training and inference. ``None`` (default): one thread on
        small data, else the cores this process may use (:func:`default_threads`).
    """

    def __init__(self) -> None:
        self._num_threads: int | None = None

    @property
    def num_threads(self) -> int | None:
        return self._num_threads

    @num_threads.setter
    def num_threads(self, value: int | None) -> None:
        bad = isinstance(value, bool) or not isinstance(value, int) or value < 1
        if value is not None and bad:
            raise ValueError(
                f"scmsi.settings.num_threads must be a positive int or None, got {value!r}."
            )
        self._num_threads = value

    def apply_threads(self, n_cells: int | None = None) -> int:
        """Set torch's intra-op threads to :attr:`num_threads` (or :func:`default_threads` for
        ``n_cells`` cells)."""
        import torch

        n = self._num_threads or default_threads(n_cells)
        if torch.get_num_threads() != n:
            torch.set_num_threads(n)
        return n


settings = Settings()
