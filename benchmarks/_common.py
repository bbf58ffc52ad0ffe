"""Helpers shared by the benchmark scripts."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd


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
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
