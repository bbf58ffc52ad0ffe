"""Plots a biologist would rather look at than read: UMAPs, protein denoising, coefficients."""

from __future__ import annotations

from collections.abc import Sequence

# No backend is set here: a library must not switch a notebook away from inline plots, and
# matplotlib itself falls back to a non-interactive backend on a machine without a display.
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from ._backed import dense
from ._constants import DOMAIN_KEY, KEY, LEIDEN_KEY, UMAP_KEY


def umap(
    data,
    color: Sequence[str] = (LEIDEN_KEY,),
    basis: str = UMAP_KEY,
    ax_size: float = 4.0,
    point_size: float | None = None,
) -> plt.Figure:
    """UMAP coloured by one or more ``obs`` columns (clusters, labels), one panel each.

    Parameters
    ----------
    data
        MuData/AnnData after :func:`scmsi.tl.embed_and_cluster`.
    color
        ``obs`` columns, one panel each.
    basis
        ``obsm`` key of the 2-D coordinates. When the UMAP of an
        :func:`~scmsi.tl.embed_and_cluster` run (``"X_umap"``, or ``"X_<key>_umap"`` for
        ``key_added="<key>"``) is missing, it is computed first (:func:`scmsi.tl.umap`, with
        that run's seed) and stored in ``obsm[basis]``.
    """
    if basis not in data.obsm:
        _compute_umap(data, basis)
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


def _compute_umap(data, basis: str) -> None:
    """Compute the missing UMAP ``basis`` of an embed_and_cluster run, or name what is missing."""
    key = KEY if basis == UMAP_KEY else basis[2:-5]
    is_ours = basis == UMAP_KEY or (basis.startswith("X_") and basis.endswith("_umap"))
    if not (is_ours and key in data.uns):
        raise KeyError(f"obsm[{basis!r}] not found; run scmsi.tl.embed_and_cluster first.")
    from .tl import umap as compute_umap

    compute_umap(data, key_added=key)


def protein_denoising(
    data,
    model,
    proteins: Sequence[str],
    modality: str | None = None,
    basis: str = UMAP_KEY,
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
        pd.DataFrame(dense(raw.X), index=raw.obs_names, columns=raw.var_names)
        if raw is not None
        else denoised * np.nan
    )
    missing = [p for p in proteins if p not in denoised.columns]
    if missing:
        raise KeyError(f"Proteins {missing} not in modality {prot!r}.")
    if basis not in data.obsm:
        _compute_umap(data, basis)
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


# ------------------------------------------------------------------------------- spatial
def spatial_domains(
    data,
    color: Sequence[str] = (DOMAIN_KEY,),
    library_id: str | None = None,
    img_key: str | None = None,
    image: bool = True,
    ax_size: float = 5.0,
    point_size: float | None = None,
    alpha: float = 0.85,
) -> plt.Figure:
    """Domains (or any ``obs`` column) drawn on the tissue, spots over the H&E where there is one.

    Parameters
    ----------
    data
        AnnData/MuData with ``obsm["spatial"]`` (full-res pixels) and, optionally, an image in
        ``uns["spatial"][library_id]``.
    color
        ``obs`` columns, one panel each (categorical: one colour per value).
    img_key
        ``"hires"``/``"lowres"``/``"fullres"``; default the best stored.
    image
        Draw the H&E under the spots when there is one.
    """
    from .spatial.io import get_image

    xy = np.asarray(data.obsm["spatial"], dtype=float)
    img, scale = None, 1.0
    if image:
        try:
            img, scale, _ = get_image(data, library_id, img_key)
        except KeyError:
            img = None
    xy = xy * scale
    color = [c for c in color if c is not None]
    fig, axes = plt.subplots(
        1, len(color), figsize=(ax_size * len(color) + 1.5, ax_size), squeeze=False
    )
    span = np.ptp(xy, axis=0).max() if len(xy) else 1.0
    n = max(len(xy), 1)
    size = point_size or float(np.clip(0.6 * (ax_size * 72 * 1.0 / np.sqrt(n)) ** 2, 1, 200))
    for ax, key in zip(axes[0], color, strict=True):
        if key not in data.obs:
            raise KeyError(f"obs[{key!r}] not found (available: {list(data.obs.columns)}).")
        if img is not None:
            ax.imshow(img)
        values = data.obs[key]
        if pd.api.types.is_numeric_dtype(values) and not isinstance(
            values.dtype, pd.CategoricalDtype
        ):
            sca = ax.scatter(xy[:, 0], xy[:, 1], c=values, s=size, cmap="viridis", linewidths=0)
            fig.colorbar(sca, ax=ax, shrink=0.6)
        else:
            values = values.astype(str)
            cats = sorted(values.unique())
            cmap = plt.get_cmap("tab20" if len(cats) > 10 else "tab10")
            for i, cat in enumerate(cats):
                sel = (values == cat).to_numpy()
                ax.scatter(
                    xy[sel, 0],
                    xy[sel, 1],
                    s=size,
                    color="lightgrey" if cat == "nan" else cmap(i % cmap.N),
                    label=cat,
                    linewidths=0,
                    alpha=alpha,
                    rasterized=True,
                )
            ax.legend(
                loc="center left",
                bbox_to_anchor=(1, 0.5),
                frameon=False,
                fontsize=7,
                markerscale=1.5,
            )
        if img is None:
            ax.invert_yaxis()  # image convention: y grows downwards
            ax.set_aspect("equal")
        pad = 0.03 * span * scale if img is None else 0
        ax.set_xlim(xy[:, 0].min() - pad - 20 * scale, xy[:, 0].max() + pad + 20 * scale)
        ax.set_ylim(xy[:, 1].max() + pad + 20 * scale, xy[:, 1].min() - pad - 20 * scale)
        ax.set_title(key)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    return fig


def domain_markers(
    adata,
    groupby: str = DOMAIN_KEY,
    n_genes: int = 3,
    layer: str | None = None,
    gene_symbols: str | None = None,
) -> plt.Figure:
    """Per-domain marker genes: z-scored mean log-expression of each domain's top genes.

    Markers: Wilcoxon test of each domain against the rest (``scanpy.tl.rank_genes_groups`` on
    log-normalised counts), ``n_genes`` per domain. ``adata`` holds raw counts (``.X`` or
    ``layer``) and ``obs[groupby]``; for a MuData pass its RNA modality with the domains copied
    to its ``obs``. The marker table is left in ``adata.uns["scmsi_domain_markers"]``.
    """
    import anndata as ad
    import scanpy as sc

    from ._anchors import lognormalize

    if groupby not in adata.obs:
        raise KeyError(f"obs[{groupby!r}] not found; run scmsi.spatial.spatial_domains first.")
    x = adata.X if layer is None else adata.layers[layer]
    tmp = ad.AnnData(lognormalize(x), obs=adata.obs[[groupby]].astype(str).astype("category"))
    names = adata.var[gene_symbols] if gene_symbols else adata.var_names
    tmp.var_names = pd.Index(np.asarray(names).astype(str))
    tmp.var_names_make_unique()
    sc.tl.rank_genes_groups(tmp, groupby, method="wilcoxon", n_genes=n_genes)
    table = sc.get.rank_genes_groups_df(tmp, group=None)
    adata.uns[f"{DOMAIN_KEY}_markers"] = table
    groups = list(tmp.obs[groupby].cat.categories)
    genes = list(
        dict.fromkeys(
            table.sort_values(["group", "scores"], ascending=[True, False])
            .groupby("group", observed=True)
            .head(n_genes)["names"]
        )
    )
    xm = dense(tmp[:, genes].X)
    means = pd.DataFrame(xm, columns=genes).groupby(tmp.obs[groupby].to_numpy()).mean()
    means = means.loc[groups]
    z = (means - means.mean()) / means.std().replace(0, 1)
    fig, ax = plt.subplots(figsize=(0.35 * len(genes) + 2.5, 0.35 * len(groups) + 1.8))
    im = ax.imshow(z.to_numpy(), aspect="auto", cmap="RdBu_r", vmin=-2, vmax=2)
    ax.set_xticks(range(len(genes)), genes, rotation=90, fontsize=7)
    ax.set_yticks(range(len(groups)), groups, fontsize=8)
    ax.set_xlabel("marker genes")
    ax.set_ylabel(groupby)
    fig.colorbar(im, ax=ax, shrink=0.6, label="z-scored mean log-expression")
    fig.tight_layout()
    return fig
