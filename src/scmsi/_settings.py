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


class Settings:
    """scmsi's global settings (``scmsi.settings``).

    Attributes
    ----------
    num_threads
        torch intra-op threads for training and inference. ``None`` (default): the cores this
        process may use (:func:`available_cores`).
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

    def apply_threads(self) -> int:
        """Set torch's intra-op threads to :attr:`num_threads` (or the available cores)."""
        import torch

        n = self._num_threads or available_cores()
        if torch.get_num_threads() != n:
            torch.set_num_threads(n)
        return n


settings = Settings()
