"""Plots a biologist would rather look at than read: UMAPs, protein denoising, coefficients."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg", force=False)
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402


def umap(
    data,
    color: Sequence[str] = ("scmsi_leiden",),
    basis: str = "X_umap",
    ax_size: float = 4.0,
    point_size: float | None = None,
) -> plt.Figure:
    """UMAP coloured by one or more ``obs`` columns (clusters, labels), one panel each.

    Parameters
    ----------
    data
        MuData/AnnData with ``obsm[basis]`` (see :func:`scmsi.tl.embed_and_cluster`).
    color
        ``obs`` columns, one panel each.
    basis
        ``obsm`` key of the 2-D coordinates.
    """
    if basis not in data.obsm:
        raise KeyError(f"obsm[{basis!r}] not found; run scmsi.tl.embed_and_cluster first.")
    xy = np.asarray(data.obsm[basis])
    color = [c for c in color if c is not None]
    fig, axes = plt.subplots(
        1, len(color), figsize=(ax_size * len(color) + 1.5, ax_size), squeeze=False
    )
    size = point_size or max(2.0, 120000 / max(len(xy), 1) ** 1.3)
    for ax, key in zip(axes[0], color, strict=True):
        if key not in data.obs:
            raise KeyError(f"obs[{key!r}] not found (available: {list(data.obs.columns)}).")
        values = data.obs[key].astype(str)
        order = sorted(
            values.unique(), key=lambda v: (not v.isdigit(), int(v) if v.isdigit() else 0, v)
        )
        cats = pd.Categorical(values, categories=order)
        cmap = plt.get_cmap("tab20" if len(cats.categories) > 10 else "tab10")
        for i, cat in enumerate(cats.categories):
            sel = cats == cat
            ax.scatter(
                xy[sel, 0],
                xy[sel, 1],
                s=size,
                color=cmap(i % cmap.N),
                label=cat,
                linewidths=0,
                rasterized=True,
            )
        ax.set_title(key)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_xlabel("UMAP1")
        ax.set_ylabel("UMAP2")
        ax.legend(
            loc="center left", bbox_to_anchor=(1, 0.5), frameon=False, fontsize=7, markerscale=2
        )
    fig.tight_layout()
    return fig


def protein_denoising(
    data,
    model,
    proteins: Sequence[str],
    modality: str | None = None,
    basis: str = "X_umap",
) -> plt.Figure:
    """Raw (log1p), denoised and foreground probability of proteins on the UMAP.

    One row per protein: how the background/foreground mixture separates signal from
    ambient antibody (the paper's Figure 3F for CD3, CD4, CD8).
    """
    prot = modality or next(s.name for s in model.module.modalities if s.kind == "protein")
    denoised = model.get_normalized_expression(data, modality=prot)
    fg = model.get_protein_foreground_probability(data, modality=prot)
    raw = data.mod[prot] if hasattr(data, "mod") else None
    raw_df = (
        pd.DataFrame(_dense(raw.X), index=raw.obs_names, columns=raw.var_names)
        if raw is not None
        else denoised * np.nan
    )
    missing = [p for p in proteins if p not in denoised.columns]
    if missing:
        raise KeyError(f"Proteins {missing} not in modality {prot!r}.")
    xy = np.asarray(data.obsm[basis])
    fig, axes = plt.subplots(len(proteins), 3, figsize=(11, 3.2 * len(proteins)), squeeze=False)
    for row, p in zip(axes, proteins, strict=True):
        panels = (
            (np.log1p(raw_df[p].to_numpy()), f"{p} raw (log1p)", "viridis"),
            (np.log1p(denoised[p].to_numpy()), f"{p} denoised (log1p)", "viridis"),
            (fg[p].to_numpy(), f"{p} P(foreground)", "coolwarm"),
        )
        for ax, (v, title, cmap) in zip(row, panels, strict=True):
            sc = ax.scatter(xy[:, 0], xy[:, 1], c=v, s=3, cmap=cmap, linewidths=0, rasterized=True)
            ax.set_title(title)
            ax.set_xticks([])
            ax.set_yticks([])
            fig.colorbar(sc, ax=ax, shrink=0.8)
    fig.tight_layout()
    return fig


def _dense(x) -> np.ndarray:
    return np.asarray(x.toarray() if hasattr(x, "toarray") else x)
