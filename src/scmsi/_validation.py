"""Input checks that fail early with a message naming the problem and the fix.

scvi-tools only samples 20 rows and warns; users then hit NaN losses far from the cause.
These checks read every stored value (O(nnz)), once, before training.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import sparse

from ._backed import in_memory, row_blocks

_CHUNK = 1 << 24  # values (or, for row sums, about that many entries) read at a time


def _values(x) -> np.ndarray:
    """The stored values of a dense or sparse matrix (zeros of a sparse matrix are implicit)."""
    if sparse.issparse(x):
        return np.asarray(x.data)
    return np.asarray(x)


def _chunks(x):
    """The stored values in flat chunks, so that checks of a 1M-cell matrix allocate no
    temporary as large as the matrix; a backed matrix is read a block of rows at a time."""
    if not in_memory(x):
        for _, block in row_blocks(x, _CHUNK):
            yield _values(block).reshape(-1)
        return
    v = _values(x).reshape(-1)
    for start in range(0, v.size, _CHUNK):
        yield v[start : start + _CHUNK]


def check_finite(x, name: str) -> None:
    """Raise if ``x`` holds NaN or infinite values."""
    dtype = x.dtype if hasattr(x, "dtype") else _values(x).dtype
    if not np.issubdtype(dtype, np.number):
        raise TypeError(f"{name}: expected a numeric matrix, got dtype {dtype}.")
    n_bad = sum(int((~np.isfinite(c)).sum()) for c in _chunks(x))
    if n_bad:
        raise ValueError(
            f"{name} contains {n_bad} NaN or infinite values. Fill or remove them "
            "before setting up the model (e.g. drop the affected cells or features)."
        )


def check_counts(x, name: str) -> None:
    """Raise unless ``x`` holds finite, non-negative integer counts."""
    check_finite(x, name)
    if any((c < 0).any() for c in _chunks(x)):
        raise ValueError(
            f"{name} contains negative values; raw counts are required. Pass the layer that "
            "holds the raw counts (e.g. `layers={'rna': 'counts'}`), not scaled or centred data."
        )
    n_frac, example, vmax = 0, None, -np.inf
    for c in _chunks(x):
        frac = c[c != np.round(c)]
        n_frac += frac.size
        if example is None and frac.size:
            example = float(frac[0])
        if c.size:
            vmax = max(vmax, float(c.max()))
    if n_frac:
        hint = " It looks log-normalised (all values below 20)." if vmax < 20 else ""
        raise ValueError(
            f"{name} contains {n_frac} non-integer values (e.g. {example:.4g}); raw "
            f"integer counts are required.{hint} Pass the raw counts layer, or declare this "
            "modality as 'continuous' if it is a processed matrix."
        )


def check_nonnegative(x, name: str, kind: str) -> None:
    """Raise if ``x`` holds negative values (a ``kind`` modality cannot)."""
    check_finite(x, name)
    vmin = min((float(c.min()) for c in _chunks(x) if c.size), default=0.0)
    if vmin < 0:
        raise ValueError(
            f"{name} contains negative values (min {vmin:.4g}), impossible for "
            f"'{kind}' data. Pass the raw (or binarised) matrix, or declare this modality "
            "'continuous' if it is a centred or scaled matrix."
        )


def check_not_binary(x, name: str) -> None:
    """Raise if count data hold only 0/1 (binarised peaks passed as gene counts)."""
    size, vmax = 0, 0.0
    for c in _chunks(x):
        size += c.size
        vmax = max(vmax, float(c.max(initial=0)))
    if size >= 1000 and vmax <= 1:
        raise ValueError(
            f"{name} holds only 0/1 values; a negative binomial needs counts. If these are "
            "binarised peaks, declare the modality as 'accessibility'; if they are gene counts, "
            "pass the layer with the raw counts."
        )


def check_nonempty_cells(x, name: str, obs_names: Sequence[str]) -> None:
    """Raise if some cells have zero total counts (their library size would be log(0))."""
    # |x| is taken a block of rows at a time (the only way to read a backed matrix, too)
    totals = np.concatenate(
        [np.asarray(abs(block).sum(axis=1)).ravel() for _, block in row_blocks(x, _CHUNK)]
    )
    empty = np.flatnonzero(totals <= 0)
    if empty.size:
        examples = ", ".join(map(str, np.asarray(obs_names)[empty[:5]]))
        raise ValueError(
            f"{name}: {empty.size} cells have no counts at all (e.g. {examples}). Remove them "
            "first, e.g. `sc.pp.filter_cells(adata, min_counts=1)` on that modality and "
            "`mdata.intersect_obs()`."
        )


def check_cell_names(mdata, modalities: Sequence[str]) -> None:
    """Raise if modalities do not hold the same cells in the same order as ``mdata``."""
    if not mdata.obs_names.is_unique:
        dup = mdata.obs_names[mdata.obs_names.duplicated()][:5].tolist()
        raise ValueError(
            f"Cell names are not unique (e.g. {dup}); call `mdata.obs_names_make_unique()`."
        )
    for mod in modalities:
        names = mdata.mod[mod].obs_names
        if len(names) != mdata.n_obs or not names.equals(mdata.obs_names):
            missing = mdata.obs_names.difference(names)[:3].tolist()
            extra = names.difference(mdata.obs_names)[:3].tolist()
            if not extra:
                raise ValueError(
                    f"Modality '{mod}' holds {len(names)} of the {mdata.n_obs} cells (mosaic "
                    f"data; missing e.g. {missing}) or holds them in another order. scMSI "
                    "trains on such data once every modality holds every cell: "
                    "`mdata = scmsi.pp.pad_modalities(mdata)` returns a copy with zero rows for "
                    "the absent cells, flagged in obs['scmsi_has_<modality>'] so that the model "
                    "ignores them (use `mdata.intersect_obs()` instead to keep only complete "
                    "cells)."
                )
            raise ValueError(
                f"Modality '{mod}' does not hold the same cells as the MuData "
                f"({len(names)} vs {mdata.n_obs} cells; missing e.g. {missing}, "
                f"extra e.g. {extra}). Make the cell names match across modalities and call "
                "`mdata.intersect_obs()` (or `mdata.update()`) before setup."
            )


def check_some_modality(masks: dict, obs_names: Sequence[str], columns: Sequence[str]) -> None:
    """Raise if a cell has none of the modalities (``masks``: modality -> bool per cell)."""
    none = ~np.any(np.stack(list(masks.values())), axis=0)
    if none.any():
        examples = np.asarray(obs_names)[none][:5].tolist()
        raise ValueError(
            f"{int(none.sum())} cells have none of the modalities {list(masks)} (e.g. "
            f"{examples}): every cell needs at least one measured modality. Remove them, e.g. "
            f"`mdata = mdata[mdata.obs[{list(columns)}].any(axis=1)].copy()`."
        )


def check_obs_key(df: pd.DataFrame, key: str | None, where: str, what: str = "batch_key") -> None:
    """Raise if ``key`` (the argument ``what``) is not a column of ``df`` or has missing values."""
    if key is None:
        return
    if key not in df.columns:
        cols = ", ".join(map(str, df.columns[:20]))
        raise KeyError(
            f"{what} '{key}' is not a column of {where}.obs (available: {cols}). Pass an "
            "existing column, or `batch_mod=` to read it from a modality's .obs."
        )
    if df[key].isna().any():
        raise ValueError(
            f"{where}.obs['{key}'] has {int(df[key].isna().sum())} missing values; assign every "
            "cell a category."
        )


def check_n_anchors(n_anchors: int, n_cells: int, what: str = "cells") -> None:
    """Raise if the anchor count is impossible for ``n_cells`` candidate cells."""
    if n_anchors < 2:
        raise ValueError(f"n_anchors must be at least 2, got {n_anchors}.")
    if n_anchors >= n_cells:
        raise ValueError(
            f"n_anchors={n_anchors} but the data have only {n_cells} {what}: self-expression "
            "needs fewer anchors than cells. Pass a smaller `n_anchors` (default scales as "
            "8*sqrt(N)) or more cells."
        )
