"""Matrices that may live on disk: AnnData/MuData backed mode (h5py or anndata datasets).

Backed matrices are read a block of rows at a time; fancy row indexing on them needs sorted
indices (HDF5), which :func:`read_rows` takes care of.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pandas as pd
from scipy import sparse

ROW_BLOCK_ENTRIES = 1 << 24  # rows x features read at a time from a backed matrix


def in_memory(x) -> bool:
    """Whether ``x`` is an in-memory matrix (NumPy, SciPy sparse, DataFrame), not backed."""
    return sparse.issparse(x) or isinstance(x, np.ndarray | pd.DataFrame)


def row_blocks(x, entries: int = ROW_BLOCK_ENTRIES) -> Iterator[tuple[int, object]]:
    """``(start, rows)`` blocks of about ``entries`` rows x features, read into memory."""
    step = max(1, entries // max(1, x.shape[1]))
    for start in range(0, x.shape[0], step):
        yield start, x[start : start + step]


def dense(x, dtype=None) -> np.ndarray:
    """``x`` (NumPy, SciPy sparse or a block read from disk) as a dense array of ``dtype``."""
    return np.asarray(x.toarray() if sparse.issparse(x) else x, dtype=dtype)


def read_rows(x, rows: np.ndarray):
    """``x[rows]`` in the order of ``rows``, also for a backed matrix (read in sorted order)."""
    rows = np.asarray(rows)
    if in_memory(x):
        return x[rows]
    order = np.argsort(rows)
    block = x[rows[order]]
    return block[np.argsort(order)]
