"""Cells that lack a modality (mosaic data) and new cells (queries).

scvi-tools' data loaders read row ``i`` of every modality for cell ``i``, so every modality must
hold every cell. A cell that lacks a modality is therefore stored as a zero row and flagged in a
boolean column ``obs["scmsi_has_<modality>"]``. :func:`pad_modalities` builds this layout from
MuData's natural one (a cell absent from ``mdata[m].obs_names``); the model registers one mask per
modality from these columns, and its losses use each modality only where the mask is True.

New cells go through :func:`prepare_query`: features are put in the reference order (extra
features are dropped with a warning, missing ones are an error), absent modalities and cells are
padded and flagged, and the result is a new object; the user's data are never modified.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence

import anndata as ad
import numpy as np
import pandas as pd
from anndata import AnnData
from mudata import MuData
from scipy import sparse
from scvi.data import fields

from ._constants import HAS_PREFIX, MASK_PREFIX


def has_key(modality: str) -> str:
    """Default ``obs`` column flagging the cells that have ``modality``."""
    return f"{HAS_PREFIX}{modality}"


def mask_registry_key(modality: str) -> str:
    """Registry key (and, prefixed with ``_scvi_``, the private ``obs`` column) of a mask."""
    return f"{MASK_PREFIX}{modality}"


def _as_mask(values, column: str, where: str) -> np.ndarray:
    s = pd.Series(np.asarray(values).ravel())
    if s.isna().any():
        raise ValueError(
            f"{where}.obs['{column}'] has {int(s.isna().sum())} missing values; it must be "
            "True/False (or 1/0) for every cell."
        )
    if s.dtype == bool:
        return s.to_numpy()
    uniq = {float(v) for v in pd.unique(s) if isinstance(v, (bool, int, float, np.number))}
    if len(uniq) != len(pd.unique(s)) or not uniq <= {0.0, 1.0}:
        raise ValueError(
            f"{where}.obs['{column}'] must be boolean (True where the cell has the modality); "
            f"found values {sorted(map(str, pd.unique(s)))[:5]}."
        )
    return s.to_numpy().astype(bool)


def observed_mask(obs: pd.DataFrame, modality: str, column: str | None, where: str) -> np.ndarray:
    """Cells that have ``modality``: ``obs[column]`` (default ``scmsi_has_<m>``), else all.

    An explicitly named column must exist; the default one is optional.
    """
    key = column or has_key(modality)
    if key in obs.columns:
        return _as_mask(obs[key].to_numpy(), key, where)
    if column is not None:
        raise KeyError(
            f"observed_keys['{modality}'] = '{column}' is not a column of {where}.obs. Pass a "
            "boolean column that is True where the cell has this modality."
        )
    return np.ones(len(obs), dtype=bool)


class _ObservedField(fields.NumericalObsField):
    """Per-cell 0/1 mask of one modality, stored in the private column ``_scvi_<registry key>``.

    The mask is read from a boolean ``obs`` column (``source_key``, default ``scmsi_has_<m>``)
    when the data have it, and is all ones otherwise, so fully paired data need no column.
    """

    def __init__(self, registry_key: str, modality: str, source_key: str | None = None):
        super().__init__(registry_key, f"_scvi_{registry_key}")
        self.modality = modality
        self.source_key = source_key

    def validate_field(self, adata) -> None:
        pass  # the column is written by register_field

    def register_field(self, adata) -> dict:
        mask = observed_mask(adata.obs, self.modality, self.source_key, "data")
        adata.obs[self.attr_key] = mask.astype(np.float32)
        return {}

    def transfer_field(self, state_registry: dict, adata_target, **kwargs) -> dict:
        return self.register_field(adata_target)


MuDataObservedField = fields.MuDataWrapper(_ObservedField)


# ---------------------------------------------------------------------------- padding
def _pad_rows(x, pos: np.ndarray):
    """Rows ``pos`` of ``x`` (``-1`` = a zero row), keeping dense/sparse and dtype."""
    present = pos >= 0
    n = len(pos)
    if sparse.issparse(x):
        sel = sparse.csr_matrix(
            (np.ones(int(present.sum()), dtype=x.dtype), (np.flatnonzero(present), pos[present])),
            shape=(n, x.shape[0]),
        )
        return sparse.csr_matrix(sel @ x)
    x = np.asarray(x)
    out = np.zeros((n, x.shape[1]), dtype=x.dtype)
    out[present] = x[pos[present]]
    return out


def _take_cols(x, cols: np.ndarray):
    if not (sparse.issparse(x) or isinstance(x, np.ndarray)):
        x = np.asarray(x)
    return x[:, cols]


def pad_modalities(mdata: MuData, modalities: Sequence[str] | None = None) -> MuData:
    """A copy of a mosaic MuData in which every modality holds every cell.

    A cell that is absent from a modality's AnnData (MuData's natural way to say "not measured")
    gets a zero row there, and ``obs["scmsi_has_<m>"]`` records which cells have modality ``m``.
    :meth:`scmsi.SCMSI.setup_mudata` reads these columns, so the model ignores the zero rows:
    each modality's likelihood, KL, self-expression and contrastive terms use only the cells
    that have it, and the fused coefficients average only those modalities.

    Parameters
    ----------
    mdata
        MuData whose modalities may hold different subsets of cells (``mdata.obs_names`` is the
        union). Not modified.
    modalities
        Modalities to keep (default: all).

    Returns
    -------
    New MuData with the cells of ``mdata`` in every modality; per modality ``.X``, ``.layers``,
    ``.var`` and ``.obs`` are kept (``obsm``/``obsp`` of the modalities are dropped); the global
    ``.obs`` and ``.uns`` are copied.

    Examples
    --------
    >>> mosaic = scmsi.pp.pad_modalities(mdata)   # e.g. protein measured for part of the cells
    >>> mosaic.obs["scmsi_has_prot"].mean()
    >>> scmsi.SCMSI.setup_mudata(mosaic, modalities={"rna": "counts", "prot": "protein"})
    """
    names = list(modalities or mdata.mod)
    cells = pd.Index(mdata.obs_names)
    if not cells.is_unique:
        raise ValueError("Cell names are not unique; call `mdata.obs_names_make_unique()`.")
    mods, has = {}, {}
    for m in names:
        if m not in mdata.mod:
            raise KeyError(f"Modality {m!r} is not in the MuData (has {list(mdata.mod)}).")
        a = mdata.mod[m]
        if not a.obs_names.is_unique:
            raise ValueError(f"Cell names of modality '{m}' are not unique.")
        extra = pd.Index(a.obs_names).difference(cells)
        if len(extra):
            raise ValueError(
                f"Modality '{m}' has cells missing from mdata.obs_names (e.g. "
                f"{extra[:3].tolist()}); call `mdata.update()` first."
            )
        pos = pd.Index(a.obs_names).get_indexer(cells)
        has[m] = pos >= 0
        mods[m] = AnnData(
            X=None if a.X is None else _pad_rows(a.X, pos),
            obs=a.obs.reindex(cells),
            var=a.var.copy(),
            layers={k: _pad_rows(v, pos) for k, v in a.layers.items()},
        )
    out = _new_mudata(mods, mdata.obs, mdata.uns)
    for m in names:
        out.obs[has_key(m)] = has[m]
    return out


def _new_mudata(mods: dict[str, AnnData], obs: pd.DataFrame, uns: Mapping) -> MuData:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = MuData(mods)
    global_obs = obs.copy()
    for col in out.obs.columns:  # per-modality columns ("rna:cell_type") MuData pulled up
        if col not in global_obs.columns:
            global_obs[col] = out.obs[col].to_numpy()
    out.obs = global_obs
    out.uns.update({k: v for k, v in uns.items() if not str(k).startswith("_scvi")})
    return out


# ---------------------------------------------------------------------------- queries
def _feature_order(query_names, ref_names, label: str) -> np.ndarray | None:
    """Positions of the reference features in the query (None = already in order)."""
    query_names = pd.Index(query_names)
    ref_names = pd.Index(ref_names)
    if query_names.equals(ref_names):
        return None
    if not query_names.is_unique:
        dup = query_names[query_names.duplicated()][:5].tolist()
        raise ValueError(f"{label}: feature names are not unique (e.g. {dup}).")
    missing = ref_names.difference(query_names, sort=False)
    extra = query_names.difference(ref_names, sort=False)
    if len(missing):
        raise ValueError(
            f"{label}: the query lacks {len(missing)} of the {len(ref_names)} features the model "
            f"was trained on: {missing[:10].tolist()}"
            + (" ..." if len(missing) > 10 else "")
            + (f" (and has {len(extra)} extra: {extra[:10].tolist()})" if len(extra) else "")
            + ". Give the query the reference's features (a feature measured as zero can be "
            "added as a zero column), or drop the whole modality from the query: its cells are "
            "then mapped from their other modalities and the missing one is imputed."
        )
    if len(extra):
        warnings.warn(
            f"{label}: ignoring {len(extra)} features the model was not trained on: "
            f"{extra[:10].tolist()}" + (" ..." if len(extra) > 10 else "") + ".",
            UserWarning,
            stacklevel=4,
        )
    return query_names.get_indexer(ref_names)


def _matrix(a: AnnData, layer: str | None, label: str):
    if layer is None:
        if a.X is None:
            raise ValueError(f"{label}: .X is empty; the model reads this modality from .X.")
        return a.X
    if layer not in a.layers:
        raise KeyError(
            f"{label}: layer '{layer}' (used in training) is not in the query's layers "
            f"(has {list(a.layers)}). Store the raw counts in layers['{layer}']."
        )
    return a.layers[layer]


def prepare_query(
    data: MuData | AnnData,
    setup_args: dict,
    feature_names: dict[str, np.ndarray],
) -> MuData | AnnData:
    """Lay out new cells as the reference was: same features, same order, every modality.

    Parameters
    ----------
    data
        Query cells (not modified).
    setup_args
        The reference's setup arguments (``model.adata_manager.registry["setup_args"]``).
    feature_names
        ``{modality: reference feature names}``.

    Returns
    -------
    ``data`` itself when it already has the reference layout, else a new object.
    """
    if "modalities" not in setup_args:
        return _prepare_anndata_query(data, setup_args, feature_names)
    if not isinstance(data, MuData):
        raise TypeError(
            "The model was set up with a MuData; pass the query as a MuData too, e.g. "
            "`mudata.MuData({'rna': adata})` for RNA-only cells (missing modalities are imputed)."
        )
    modalities = dict(setup_args["modalities"])
    layers = dict(setup_args.get("layers") or {})
    observed_keys = dict(setup_args.get("observed_keys") or {})
    cells = pd.Index(data.obs_names)
    if not cells.is_unique:
        dup = cells[cells.duplicated()][:5].tolist()
        raise ValueError(f"Query cell names are not unique (e.g. {dup}).")
    unknown = [m for m in data.mod if m not in modalities]
    if unknown:
        warnings.warn(
            f"Ignoring query modalities the model was not trained on: {unknown}.",
            UserWarning,
            stacklevel=3,
        )
    changed = bool(unknown)
    mods, has = {}, {}
    for m in modalities:
        label = f"query modality '{m}'"
        layer = layers.get(m)
        if m not in data.mod:
            mods[m] = _empty_modality(cells, feature_names[m], layer)
            has[m] = np.zeros(len(cells), dtype=bool)
            changed = True
            continue
        a = data.mod[m]
        x = _matrix(a, layer, label)
        cols = _feature_order(a.var_names, feature_names[m], label)
        pos = pd.Index(a.obs_names).get_indexer(cells)
        in_mod = pos >= 0
        if len(pd.Index(a.obs_names).difference(cells)):
            raise ValueError(f"{label} has cells missing from the MuData; call `mdata.update()`.")
        same_rows = in_mod.all() and pd.Index(a.obs_names).equals(cells)
        own = observed_mask(data.obs, m, observed_keys.get(m), "query")
        has[m] = in_mod & own
        if cols is None and same_rows:
            mods[m] = a
            continue
        changed = True
        if cols is not None:
            x = _take_cols(x, cols)
        x = x if same_rows else _pad_rows(x, pos)
        var = a.var.iloc[cols] if cols is not None else a.var
        obs = a.obs if same_rows else a.obs.reindex(cells)
        new = AnnData(X=x, obs=obs.copy(), var=var.copy())
        if layer is not None:
            new.layers[layer] = x
        mods[m] = new
    none = ~np.any(np.stack(list(has.values())), axis=0)
    if none.any():
        raise ValueError(
            f"{int(none.sum())} query cells have none of the model's modalities "
            f"{list(modalities)} (e.g. {cells[none][:5].tolist()}); a cell needs at least one "
            "measured modality to be mapped. Remove these cells."
        )
    has_changed = any(
        not np.array_equal(has[m], observed_mask(data.obs, m, observed_keys.get(m), "query"))
        for m in modalities
    )
    if not changed and not has_changed:
        return data
    out = _new_mudata({m: mods[m] for m in modalities}, data.obs, data.uns)
    for m in modalities:
        out.obs[observed_keys.get(m) or has_key(m)] = has[m]
    return out


def _empty_modality(cells: pd.Index, features, layer: str | None) -> AnnData:
    """A modality no query cell has: all-zero sparse rows with the reference features."""
    x = sparse.csr_matrix((len(cells), len(features)), dtype=np.float32)
    out = AnnData(X=x, obs=pd.DataFrame(index=cells), var=pd.DataFrame(index=features))
    if layer is not None:
        out.layers[layer] = x
    return out


def _prepare_anndata_query(adata, setup_args: dict, feature_names: dict) -> AnnData:
    if not isinstance(adata, AnnData):
        raise TypeError(
            "The model was set up with an AnnData (`setup_anndata`); pass the query as an "
            "AnnData with the same layout."
        )
    layer = setup_args.get("layer")
    cols = _feature_order(adata.var_names, feature_names["rna"], "query genes")
    prot_key = setup_args.get("protein_expression_obsm_key")
    prot_cols = None
    if prot_key is not None:
        if prot_key not in adata.obsm:
            raise KeyError(
                f"The query lacks obsm['{prot_key}'] (protein counts). For RNA-only cells add a "
                f"zero matrix there and set obs['{has_key('prot')}'] = False."
            )
        prot = adata.obsm[prot_key]
        if isinstance(prot, pd.DataFrame):
            prot_cols = _feature_order(prot.columns, feature_names["prot"], "query proteins")
        elif prot.shape[1] != len(feature_names["prot"]):
            raise ValueError(
                f"obsm['{prot_key}'] has {prot.shape[1]} proteins, the model "
                f"{len(feature_names['prot'])}."
            )
    if cols is None and prot_cols is None:
        return adata
    x = _matrix(adata, layer, "query")
    new = ad.AnnData(
        X=_take_cols(x, cols) if cols is not None else x,
        obs=adata.obs.copy(),
        var=adata.var.iloc[cols].copy() if cols is not None else adata.var.copy(),
    )
    if layer is not None:
        new.layers[layer] = new.X
    if prot_key is not None:
        prot = adata.obsm[prot_key]
        new.obsm[prot_key] = prot.iloc[:, prot_cols] if prot_cols is not None else prot.copy()
    return new
