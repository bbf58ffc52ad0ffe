"""Helpers shared by the benchmark scripts."""

from __future__ import annotations

import pandas as pd


def mean_sd(s: pd.Series, empty: str = "") -> str:
    """``"mean ± sd"`` over the non-missing values (sd with ddof=1); one value alone; ``empty``
    when there is none."""
    s = s.dropna()
    if s.empty:
        return empty
    return f"{s.mean():.3f} ± {s.std(ddof=1):.3f}" if len(s) > 1 else f"{s.mean():.3f}"
