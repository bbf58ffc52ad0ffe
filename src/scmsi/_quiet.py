"""Quiet training: Lightning's messages that are not about the user's data, off.

A normal ``train`` then prints the progress bar and the warnings that concern the data.
What is dropped, only while scmsi trains (the user's own Lightning runs are left alone):
Lightning's hardware lines ("GPU available ...") and product tips, the seed line (the seed is
the model's, set by the user), and the deprecation warning that Lightning raises on itself
with recent torch (``LeafSpec``), which no user of scmsi can act on.
"""

from __future__ import annotations

import logging
import warnings
from contextlib import contextmanager

# Loggers Lightning writes its rank-zero messages and its seed line to.
_LOGGERS = (
    "lightning.pytorch.utilities.rank_zero",
    "lightning.fabric.utilities.rank_zero",
    "lightning.fabric.utilities.seed",
)
_DROPPED = ("💡 Tip", "GPU available", "TPU available", "HPU available", "Seed set to")


class _DropNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.getMessage()).lstrip().startswith(_DROPPED)


@contextmanager
def quiet_lightning():
    """Within the block (or a function it decorates), drop Lightning's noise (see above)."""
    noise = _DropNoise()
    loggers = [logging.getLogger(name) for name in _LOGGERS]
    for log in loggers:
        log.addFilter(noise)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings(
                "ignore", message=r".*isinstance\(treespec, LeafSpec\)", category=FutureWarning
            )
            yield
    finally:
        for log in loggers:
            log.removeFilter(noise)


def log_every_n_steps(n_cells: int, batch_size: int, train_size: float | None) -> int:
    """Lightning's logging interval (default 10), at most the training minibatches per epoch,
    so that small data do not trigger its "fewer batches than the logging interval" warning.
    """
    n_batches = int(n_cells * (0.9 if train_size is None else train_size)) // max(batch_size, 1)
    return max(1, min(10, n_batches))
