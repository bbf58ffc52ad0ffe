"""Input checks that fail early with a message naming the problem and the fix.

scvi-tools only samples 20 rows and warns; users then hit NaN losses far from the cause.
These checks read every stored value (O(nnz)), once, before training.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import sparse

from ._backed import in_memory, row_blocks
from ._constants import SPATIAL_KEY

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
            "first, e.g. `sc.pp.filter_cells(adata, min_counts=1)` on that modality, then keep "
            "the cells every modality still has (`mdata = mdata[mask].copy()`, see "
            "`scmsi.pp.pad_modalities` for data where some cells lack a modality)."
        )


def keep_common_cells(modalities: Sequence[str]) -> str:
    """A command (as text) that keeps the cells every one of ``modalities`` holds; mudata 0.3
    has no ``MuData.intersect_obs`` (that is ``muon.pp.intersect_obs``)."""
    masks = " & ".join(f"mdata.obs_names.isin(mdata['{m}'].obs_names)" for m in modalities)
    return f"mdata = mdata[{masks}].copy()"


def check_cell_names(mdata, modalities: Sequence[str]) -> None:
    """Raise if modalities do not hold the same cells in the same order as ``mdata``."""
    if not mdata.obs_names.is_unique:
        dup = mdata.obs_names[mdata.obs_names.duplicated()][:5].tolist()
        raise ValueError(
            f"Cell names are not unique (e.g. {dup}); call `mdata.obs_names_make_unique()`."
        )
    check_barcode_overlap(mdata, modalities)
    for mod in modalities:
        names = mdata.mod[mod].obs_names
        if len(names) != mdata.n_obs or not names.equals(mdata.obs_names):
            missing = mdata.obs_names.difference(names)[:3].tolist()
            extra = names.difference(mdata.obs_names)[:3].tolist()
            if not extra and not missing:
                raise ValueError(
                    f"Modality '{mod}' holds the MuData's cells in another order. "
                    "`mdata = scmsi.pp.pad_modalities(mdata)` returns a copy with every modality "
                    "in the MuData's cell order."
                )
            if not extra:
                raise ValueError(
                    f"Modality '{mod}' holds {len(names)} of the {mdata.n_obs} cells (mosaic "
                    f"data; missing e.g. {missing}) or holds them in another order. scMSI "
                    "trains on such data once every modality holds every cell: "
                    "`mdata = scmsi.pp.pad_modalities(mdata)` returns a copy with zero rows for "
                    "the absent cells, flagged in obs['scmsi_has_<modality>'] so that the model "
                    f"ignores them (or keep only the cells every modality has: "
                    f"`{keep_common_cells(modalities)}`)."
                )
            raise ValueError(
                f"Modality '{mod}' does not hold the same cells as the MuData "
                f"({len(names)} vs {mdata.n_obs} cells; missing e.g. {missing}, "
                f"extra e.g. {extra}). Make the cell names match across modalities and call "
                "`mdata.update()` before setup."
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
    check_categories(df[key], f"{where}.obs['{key}']", what)


def check_categories(col: pd.Series, label: str, what: str = "batch_key") -> None:
    """Raise unless ``col`` holds integer or string categories, fewer than one per cell.

    A float column (0.0/1.0 read from a CSV, or a continuous value) and a column mixing
    numbers and strings are refused with the command that converts them, rather than
    converted here: registration reads the user's column, and the user's data are never
    modified.
    """
    values = col.cat.categories if isinstance(col.dtype, pd.CategoricalDtype) else col
    fix = f"`{label} = {label}.astype(int).astype(str)`"
    if pd.api.types.is_float_dtype(values.dtype):
        v = np.asarray(values, dtype=float)
        if np.all(v == np.round(v)):
            raise TypeError(
                f"{what}: {label} holds floats (e.g. {sorted(set(v[:1000]))[:3]}), as read from "
                f"a CSV; categories must be integers or strings. Convert it first: {fix}."
            )
        raise TypeError(
            f"{what}: {label} holds non-integer floats ({len(pd.unique(v))} distinct values), "
            "a continuous value, not categories; each distinct value would become a batch. "
            "Pass a categorical column (integers or strings)."
        )
    if values.dtype == object:
        kinds = {
            "string" if isinstance(x, str) else "number"
            for x in pd.unique(np.asarray(values, dtype=object))
        }
        if len(kinds) > 1:
            raise TypeError(
                f"{what}: {label} mixes numbers and strings; categories must be one type. "
                f"Convert it first: `{label} = {label}.astype(str)`."
            )
    n_cat = col.nunique()
    if len(col) > 2 and n_cat == len(col):
        raise ValueError(
            f"{what}: {label} has a different value in every cell ({n_cat} values): it looks "
            "like a cell identifier, not a batch. Pass the column naming each cell's batch "
            "(sample, donor, run...)."
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


def warn_reordered_features(data, setup_args: dict, features: dict) -> None:
    """Warn, naming the modalities, when ``data`` holds the saved features in another order.

    ``features``: ``{modality: feature names the model was trained on}``. The data are then
    laid out in the saved order (:func:`scmsi._mosaic.prepare_query`); a different feature set
    is refused there, with the first missing names.
    """
    if "modalities" in setup_args:
        if not hasattr(data, "mod"):
            return  # prepare_query raises the error naming the expected MuData
        current = {m: data.mod[m].var_names for m in features if m in data.mod}
    else:
        current = {"rna": getattr(data, "var_names", pd.Index([]))}
        prot = getattr(data, "obsm", {}).get(setup_args.get("protein_expression_obsm_key") or "")
        if isinstance(prot, pd.DataFrame) and "prot" in features:
            current["prot"] = prot.columns
    moved = []
    for m, names in current.items():
        names, ref = pd.Index(names), pd.Index(features[m])
        if (
            not names.equals(ref)
            and len(names) == len(ref)
            and names.sort_values().equals(ref.sort_values())
        ):
            moved.append(m)
    if moved:
        warnings.warn(
            f"The features of {', '.join(repr(m) for m in moved)} are the model's in another "
            "order; they are reordered to the saved order (your data are not modified).",
            UserWarning,
            stacklevel=3,
        )


MIN_CELLS = 20  # fewest cells `SCMSI.train` accepts


def check_training(
    max_epochs,
    train_size: float | None,
    batch_size: int,
    n_cells: int,
    early_stopping: bool,
    validation_size: float | None = None,
) -> None:
    """Raise, before any training, on settings that cannot train (or train on nothing)."""
    if isinstance(max_epochs, bool) or not isinstance(max_epochs, (int, np.integer)):
        raise TypeError(f"max_epochs must be a positive integer, got {max_epochs!r}.")
    if max_epochs < 1:
        raise ValueError(f"max_epochs must be at least 1, got {max_epochs}.")
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)):
        raise TypeError(f"batch_size must be a positive integer, got {batch_size!r}.")
    if batch_size < 2:
        raise ValueError(
            f"batch_size must be at least 2 (batch normalisation needs 2 cells), got {batch_size}."
        )
    if train_size is not None and not 0 < train_size <= 1:
        raise ValueError(f"train_size must lie in (0, 1], got {train_size}.")
    share = 0.9 if train_size is None else float(train_size)
    n_train = int(np.ceil(share * n_cells))
    if n_cells < MIN_CELLS:
        raise ValueError(
            f"Only {n_cells} cells: too few to train on (the anchors, a validation share and "
            f"minibatches need at least {MIN_CELLS}). Pass more cells."
        )
    if n_train < 2:
        raise ValueError(
            f"Only {n_train} training cells ({n_cells} cells, train_size={share}); at least 2 "
            "are needed. Pass more cells or a larger train_size."
        )
    no_validation = share >= 1 and not validation_size
    if early_stopping and no_validation:
        raise ValueError(
            "train_size=1 leaves no validation cells, and early stopping watches the "
            "validation loss. Pass `early_stopping=False` with train_size=1, or a train_size "
            "below 1 (default 0.9)."
        )


# Below this share of the smaller modality's cells in common, two modalities are taken as
# naming the same cells differently (a barcode suffix, a sample prefix), not as mosaic data.
_MIN_SHARED = 0.1


def check_barcode_overlap(mdata, modalities: Sequence[str]) -> None:
    """Raise when two modalities share (almost) no cell names: differing barcodes, not mosaic
    data. The message shows the counts, the overlap and examples of each side's names."""
    names = {m: pd.Index(mdata.mod[m].obs_names) for m in modalities}
    mods = list(names)
    for i, a in enumerate(mods):
        for b in mods[i + 1 :]:
            na, nb = names[a], names[b]
            shared = len(na.intersection(nb))
            if shared >= _MIN_SHARED * min(len(na), len(nb)):
                continue
            keep = (
                f" To keep only the {shared} cells in both: `{keep_common_cells([a, b])}`."
                if shared
                else ""
            )
            raise ValueError(
                f"Cell barcodes differ between modalities '{a}' ({len(na)} cells, e.g. "
                f"{na[:3].tolist()}) and '{b}' ({len(nb)} cells, e.g. {nb[:3].tolist()}): only "
                f"{shared} names in common. This is not mosaic data (cells measured in one "
                "modality only) but the same cells named differently. Make the names match, "
                f"e.g. `mdata.mod['{b}'].obs_names = [...]` with the names of '{a}' (strip a "
                "suffix such as '-1' with `.str.replace(r'-1$', '', regex=True)`), then "
                f"`mdata.update()`.{keep}"
            )


def check_informative(x, name: str) -> None:
    """Raise if a modality is all zeros, or if none of its features varies across cells:
    it carries no information about the cells, and the fused affinity would average in a
    modality whose coefficients are noise (a silently worse result)."""
    n, total, sq, mean_sq = 0, None, None, None
    for _, block in row_blocks(x, _CHUNK):
        b = block if sparse.issparse(block) else np.asarray(block, dtype=np.float64)
        s1 = np.asarray(b.sum(axis=0), dtype=np.float64).ravel()
        s2 = np.asarray(
            (b.multiply(b) if sparse.issparse(b) else b * b).sum(axis=0), dtype=np.float64
        ).ravel()
        total = s1 if total is None else total + s1
        sq = s2 if sq is None else sq + s2
        n += block.shape[0]
    if total is None or n == 0:
        return
    if not np.any(total) and not np.any(sq):
        raise ValueError(
            f"{name} is all zeros: it carries no information about the cells. Pass the layer "
            "that holds its data (`layers=`), or leave the modality out of `modalities=`."
        )
    mean_sq = (total / n) ** 2
    var = sq / n - mean_sq
    if n > 1 and np.all(var <= 1e-12 * np.maximum(mean_sq, 1.0)):
        raise ValueError(
            f"{name}: no feature varies across cells (every column is constant), so it carries "
            "no information about the cells. Pass the right layer, or leave the modality out "
            "of `modalities=`."
        )


# ------------------------------------------------------------------------------ spatial
# Checks of a spatial AnnData (spots, coordinates, image), run once by
# scmsi.spatial.to_mudata, the model input's builder, before any work. Each error names the
# problem and the command that fixes it; the data are never modified.
IMAGE_MARGIN = 0.05  # share of an image's size a spot centre may lie beyond its edge


def check_coordinates(coords, obs_names: Sequence[str] | None = None) -> None:
    """Raise unless ``coords`` ``(N, 2)`` are finite and no two spots share a position."""
    xy = np.asarray(coords)
    if xy.ndim != 2 or xy.shape[1] < 2 or not np.issubdtype(xy.dtype, np.number):
        raise ValueError(
            f"obsm['spatial'] must be a numeric (spots, 2) array of x, y positions, got shape "
            f"{xy.shape} and dtype {xy.dtype}."
        )
    names = np.asarray(obs_names if obs_names is not None else np.arange(len(xy)))
    bad = ~np.isfinite(xy).all(axis=1)
    if bad.any():
        raise ValueError(
            f"obsm['spatial'] has NaN or infinite coordinates for {int(bad.sum())} spots (e.g. "
            f"{names[bad][:3].tolist()}): every spot needs a position. Drop those spots first: "
            "`adata = adata[np.isfinite(adata.obsm['spatial']).all(axis=1)].copy()`."
        )
    _, first, counts = np.unique(xy, axis=0, return_index=True, return_counts=True)
    if (counts > 1).any():
        shared = first[counts > 1]
        raise ValueError(
            f"{int((counts[counts > 1] - 1).sum())} spots share their position with another "
            f"spot (e.g. {names[shared][:3].tolist()} at {xy[shared][:1].tolist()}): two spots "
            "cannot sit at one place. Several sections in one AnnData: analyse each apart, or "
            "offset each section's coordinates; repeated rows: keep one of each, "
            "`adata = adata[~pd.DataFrame(adata.obsm['spatial']).duplicated().to_numpy()]"
            ".copy()`."
        )


def check_spot_names(obs_names: Sequence[str]) -> None:
    """Raise if spot barcodes repeat (the same barcodes recur on every Visium slide)."""
    names = pd.Index(obs_names)
    if not names.is_unique:
        dup = names[names.duplicated()].unique()
        raise ValueError(
            f"{len(dup)} spot barcodes occur more than once (e.g. {dup[:3].tolist()}), as when "
            "sections are concatenated: each Visium slide reuses the same barcodes. Give every "
            "spot its own name, e.g. `adata.obs_names = section + '_' + adata.obs_names`, or "
            "`adata.obs_names_make_unique()`."
        )


def check_enough_spots(n_spots: int, n_neighs: int) -> None:
    """Raise if a section has no more spots than the neighbours each spot needs."""
    if n_spots <= n_neighs:
        raise ValueError(
            f"The section has {n_spots} spots, but each spot needs {n_neighs} spatial "
            f"neighbours (n_neighs): pass a section with more than {n_neighs} spots, or a "
            "smaller `n_neighs`."
        )


def check_image_scale(coords, library: dict, library_id: str) -> None:
    """Raise if a stored image's scale factor puts spots outside that image.

    ``library``: ``uns["spatial"][library_id]``; the pixel of a spot in image ``key`` is
    ``coords * scalefactors[f"tissue_{key}_scalef"]`` (1 for ``fullres``). A spot centre may
    lie up to :data:`IMAGE_MARGIN` of the image beyond its edge (spots at the border).
    """
    xy = np.asarray(coords, dtype=np.float64)
    scalefactors = library.get("scalefactors", {})
    where = f"uns['spatial'][{library_id!r}]"
    for key, image in library.get("images", {}).items():
        name = f"tissue_{key}_scalef"
        if key != "fullres" and name not in scalefactors:
            raise ValueError(
                f"{where} has a {key!r} image but no scalefactors[{name!r}]: add it from Space "
                "Ranger's spatial/scalefactors_json.json, or remove the image."
            )
        scale = 1.0 if key == "fullres" else float(scalefactors[name])
        height, width = np.shape(image)[:2]
        px = xy * scale
        lo = -IMAGE_MARGIN * np.array([width, height])
        hi = (1 + IMAGE_MARGIN) * np.array([width, height])
        outside = ((px < lo) | (px > hi)).any(axis=1)
        if outside.any():
            raise ValueError(
                f"The {key!r} image ({width} x {height} px) does not match the coordinates: "
                f"with {name} = {scale:.4g}, {int(outside.sum())} of {len(xy)} spots fall "
                f"outside it (x up to {px[:, 0].max():.0f}, y up to {px[:, 1].max():.0f}). The "
                f"scale factor belongs to another image (hires vs lowres), or obsm['spatial'] "
                f"is not in full-resolution pixels: set {where}['scalefactors'] from Space "
                "Ranger's scalefactors_json.json, or build the input without it (`image=False`)."
            )


def check_spatial(adata, n_neighs: int, image: bool = True) -> None:
    """Every check of a spatial AnnData before the model input is built: positions, spot
    names, section size and, with ``image``, the stored images' scale factors."""
    if SPATIAL_KEY not in adata.obsm:
        raise KeyError(
            "adata.obsm['spatial'] (spot coordinates) is required: read the section with "
            "scmsi.spatial.read_visium (or read_st), which sets it."
        )
    check_spot_names(adata.obs_names)
    check_enough_spots(adata.n_obs, n_neighs)
    check_coordinates(adata.obsm[SPATIAL_KEY], adata.obs_names)
    libraries = adata.uns.get(SPATIAL_KEY) or {}
    if image and libraries:  # the first library's image is the one the input reads
        library_id = next(iter(libraries))
        check_image_scale(adata.obsm[SPATIAL_KEY], libraries[library_id], library_id)
