"""Peer (comparison) methods for multimodal benchmarks.

Every method takes a preprocessed :class:`mudata.MuData` and a ``seed``, works on a copy, and
returns::

    {"embedding": np.ndarray (cells x d) | None,
     "graph": scipy.sparse.csr_matrix (cells x cells) | None,
     "notes": str}

Modality types come from ``mdata.uns["modality_types"]`` (``{modality: type}``, as the loaders in
:mod:`scmsi.datasets` set it; a MuData without them is an error). Each modality
is preprocessed by its type, the same way for every method (:func:`process_modality`):

- ``counts`` (RNA): ``normalize_total(1e4)`` + ``log1p``; PCA, 30 comps, genes not scaled.
- ``protein``: per-cell CLR (muon, Seurat flavour); PCA, ``P - 1`` comps, proteins not scaled.
- ``accessibility`` (peaks): TF-IDF (muon defaults) + LSI (muon, 31 comps, each scaled to unit
  variance); the first component is dropped because it tracks sequencing depth (Signac/ArchR
  practice), leaving 30.
- ``continuous``: at most 50 features (already reduced, e.g. topic proportions) are used as
  they are, neither centred nor scaled; more features: scaled to zero mean and unit variance
  per feature, then PCA, 30 comps.

Single-modality baselines are named ``only_<modality>`` (e.g. ``only_rna``). totalVI needs RNA
counts + protein; MultiVI needs RNA counts + integer (or binary) peaks; :func:`applicable`
says why a method does not apply to a dataset, and the harness skips it with that reason.

Run one method per fresh process (see ``shared/docs/PEERS.md``: a second scvi-tools model
trained in the same process ran several times slower)::

    python -m benchmarks.peers METHOD DATA.h5mu SEED OUT.npz

The npz holds ``embedding`` (if any), ``graph_data``/``graph_indices``/``graph_indptr``/
``graph_shape`` (if any), ``cpu_s`` (CPU time of the process during the call: unlike wall-clock
time, barely affected by other jobs on the machine), ``time_s`` (wall-clock of the method
call, excluding reading the file), ``peak_rss_mib`` (peak resident memory of the process),
``threads``, ``obs_names``, ``method``, ``seed``, ``notes`` and, for scMSI with a protein
modality, ``extra_*`` arrays (denoised protein and foreground probability).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from typing import Any

import anndata as ad
import mudata as md
import numpy as np
import pandas as pd
import scanpy as sc
from scipy import sparse

from benchmarks._common import dense, measured, save_npz
from scmsi._constants import MODALITY_TYPES_KEY, declared_modality_types

__all__ = [
    "METHODS",
    "applicable",
    "default_methods",
    "get_method",
    "modality_types",
    "mofa",
    "multivi",
    "only_modality",
    "process_modality",
    "totalvi",
    "wnn",
]

PeerResult = dict[str, Any]

N_PCS = 30  # PCs of RNA counts and of wide continuous matrices (scanpy's usual choice)
N_LSI = 30  # LSI components kept for peaks (after dropping the first)
MAX_RAW_CONTINUOUS = 50  # continuous modalities up to this width are used as they are
N_SPECTRAL = 10  # components of the spectral embedding of the WNN graph


def modality_types(mdata: md.MuData) -> dict[str, str]:
    """``{modality: type}`` as the data declare them (``uns[MODALITY_TYPES_KEY]``, written by
    every loader); a MuData that does not declare them is an error, not a guess."""
    types = declared_modality_types(mdata)
    if types is None:
        raise ValueError(
            f"The MuData does not declare its modality types (uns[{MODALITY_TYPES_KEY!r}]); "
            "load it with scmsi.datasets or set them."
        )
    return types


def _of_type(types: dict[str, str], kind: str) -> list[str]:
    return [m for m, t in types.items() if t == kind]


def _counts(adata: ad.AnnData) -> ad.AnnData:
    """Copy of ``adata`` with raw counts (``layers["counts"]``) as float32 ``.X``, nothing else."""
    x = adata.layers.get("counts", adata.X)
    x = x.astype(np.float32, copy=True)
    return ad.AnnData(x, obs=adata.obs[[]].copy(), var=adata.var[[]].copy())


def _is_integer(x) -> bool:
    v = np.asarray(x.data if sparse.issparse(x) else x)
    return bool(v.size == 0 or ((v >= 0).all() and np.array_equal(v, np.round(v))))


def _pca(a: ad.AnnData, n_comps: int, seed: int) -> np.ndarray:
    n = min(n_comps, a.n_vars - 1, a.n_obs - 1)
    sc.pp.pca(a, n_comps=n, random_state=seed)
    return np.asarray(a.obsm["X_pca"])


def process_modality(
    mdata: md.MuData, mod: str, kind: str, seed: int
) -> tuple[ad.AnnData, np.ndarray, str]:
    """Preprocess one modality by its type (see the module docstring).

    Parameters
    ----------
    mdata
        The benchmark's MuData.
    mod
        Modality name.
    kind
        Its type: ``counts``, ``protein``, ``accessibility`` or ``continuous``.
    seed
        Random seed for PCA / the LSI's sparse SVD.

    Returns
    -------
    tuple
        ``(processed, reduced, notes)``: an AnnData whose ``.X`` is the processed matrix (MOFA+'s
        input for this modality), the reduced representation (cells x d: single-modality
        baseline and WNN input), and a sentence saying what was done.
    """
    if kind == "counts":
        a = _counts(mdata[mod])
        sc.pp.normalize_total(a, target_sum=1e4)
        sc.pp.log1p(a)
        red = _pca(a, N_PCS, seed)
        notes = (
            f"{mod} (counts): scanpy normalize_total(target_sum=1e4) + log1p on all {a.n_vars} "
            f"features of the input; PCA {red.shape[1]} comps, zero-centred, NOT scaled"
        )
    elif kind == "protein":
        import muon as mu

        a = _counts(mdata[mod])
        a.X = dense(a.X)
        mu.prot.pp.clr(a, axis=1)  # axis=1: centre log-counts within each cell
        red = _pca(a, a.n_vars - 1, seed)
        notes = (
            f"{mod} (protein): muon.prot.pp.clr(axis=1, flavor='seurat'), per-cell CLR "
            f"log1p(x / exp(mean_j log1p(x_j))); PCA {red.shape[1]} comps of {a.n_vars} "
            "proteins, zero-centred, NOT scaled"
        )
    elif kind == "accessibility":
        import muon as mu

        a = _counts(mdata[mod])
        a.X = sparse.csr_matrix(a.X)
        depth = np.log1p(np.asarray((a.X > 0).sum(axis=1)).ravel())
        mu.atac.pp.tfidf(a)  # defaults: log(1 + 1e4 * TF) * log(1 + IDF)
        # scipy svds (inside muon lsi) draws its start vector from the global generator
        np.random.seed(seed)  # noqa: NPY002
        mu.atac.tl.lsi(a, n_comps=N_LSI + 1)  # default scale_embeddings=True
        lsi = np.asarray(a.obsm["X_lsi"])
        r = np.corrcoef(lsi[:, 0], depth)[0, 1]
        red = lsi[:, 1:]
        binary = (
            _is_integer(mdata[mod].layers.get("counts", mdata[mod].X))
            and float(mdata[mod].X.max()) <= 1
        )
        notes = (
            f"{mod} (accessibility, {a.n_vars} peaks{', binary' if binary else ''}): "
            "muon.atac.pp.tfidf (defaults: log1p(1e4 * TF) * log1p(IDF)), muon.atac.tl.lsi "
            f"({N_LSI + 1} comps, scaled to unit variance); first component dropped (depth: "
            f"r = {r:+.2f} with log number of open peaks), {red.shape[1]} kept"
        )
        a = ad.AnnData(
            red.astype(np.float32),
            obs=a.obs[[]].copy(),
            var=pd.DataFrame(index=[f"lsi_{i + 2}" for i in range(red.shape[1])]),
        )
    elif kind == "continuous":
        x = dense(mdata[mod].X, np.float32)
        a = ad.AnnData(x, obs=mdata[mod].obs[[]].copy(), var=mdata[mod].var[[]].copy())
        if a.n_vars <= MAX_RAW_CONTINUOUS:
            red = x.copy()
            notes = (
                f"{mod} (continuous, {a.n_vars} features <= {MAX_RAW_CONTINUOUS}): used as they "
                "are (.X), not centred or scaled"
            )
        else:
            scaled = a.copy()
            sc.pp.scale(scaled)
            red = _pca(scaled, N_PCS, seed)
            notes = (
                f"{mod} (continuous, {a.n_vars} features): .X scaled to zero mean and unit "
                f"variance per feature (scanpy scale), PCA {red.shape[1]} comps"
            )
    else:
        raise ValueError(f"Unknown modality type {kind!r} for {mod!r}.")
    return a, red, notes


def applicable(method: str, mdata: md.MuData) -> str | None:
    """None if ``method`` can run on ``mdata``; otherwise the reason it cannot."""
    types = modality_types(mdata)
    desc = ", ".join(f"{m}: {t}" for m, t in types.items())
    if method.startswith("only_"):
        mod = method[len("only_") :]
        return None if mod in types else f"no modality {mod!r} (modalities: {desc})"
    if method in ("wnn", "mofa") and len(types) < 2:
        return f"needs two or more modalities ({desc})"
    if method == "totalvi":
        if sorted(types.values()) != ["counts", "protein"]:
            return f"totalVI needs exactly RNA counts + protein counts ({desc})"
    if method == "multivi":
        rna, atac = _of_type(types, "counts"), _of_type(types, "accessibility")
        if len(types) != 2 or len(rna) != 1 or len(atac) != 1:
            return (
                "MultiVI needs RNA as integer counts and peaks as integer or binary "
                f"accessibility ({desc})"
            )
        for mod in (*rna, *atac):
            if not _is_integer(mdata[mod].layers.get("counts", mdata[mod].X)):
                return f"MultiVI needs integer values; {mod!r} is not ({desc})"
    if method.startswith("scmsi:"):
        return None
    if method not in METHODS and not method.startswith("only_"):
        return f"unknown method {method!r}"
    return None


def default_methods(mdata: md.MuData) -> list[str]:
    """scMSI, totalVI, MultiVI, WNN, MOFA+ and one ``only_<modality>`` per modality.

    Methods that do not apply to the data are in the list too: the harness skips them and
    writes why in the results file.
    """
    return ["scmsi", "totalvi", "multivi", "wnn", "mofa"] + [
        f"only_{m}" for m in modality_types(mdata)
    ]


def only_modality(mod: str) -> Callable[[md.MuData, int], PeerResult]:
    """Single-modality baseline for ``mod``: its reduced representation by type."""

    def baseline(mdata: md.MuData, seed: int) -> PeerResult:
        kind = modality_types(mdata)[mod]
        _, red, notes = process_modality(mdata, mod, kind, seed)
        return {"embedding": red, "graph": None, "notes": notes + "; embedding = that."}

    baseline.__name__ = f"only_{mod}"
    return baseline


def totalvi(mdata: md.MuData, seed: int) -> PeerResult:
    """totalVI (scvi-tools) with its default model and training settings.

    Parameters
    ----------
    mdata
        Preprocessed MuData with one ``counts`` and one ``protein`` modality (raw counts in
        ``.layers["counts"]`` or ``.X``).
    seed
        Sets ``scvi.settings.seed`` before the model is built.

    Returns
    -------
    dict
        ``embedding`` = ``get_latent_representation()`` (posterior mean); ``graph`` = None;
        ``notes``.
    """
    import scvi

    types = modality_types(mdata)
    (rna,), (prot,) = _of_type(types, "counts"), _of_type(types, "protein")
    scvi.settings.seed = seed
    with md.set_options(pull_on_update=False):
        m = md.MuData({"rna": _counts(mdata[rna]), "prot": _counts(mdata[prot])})
    for a in (m["rna"], m["prot"]):
        a.layers["counts"] = a.X.copy()
    scvi.model.TOTALVI.setup_mudata(
        m,
        rna_layer="counts",
        protein_layer="counts",
        modalities={"rna_layer": "rna", "protein_layer": "prot"},
    )
    model = scvi.model.TOTALVI(m)
    # All defaults: max_epochs heuristic (<= 400), early_stopping=True, lr 4e-3,
    # batch 256, 90/10 train/validation split.
    model.train()
    emb = model.get_latent_representation()
    n_epochs = len(model.history["elbo_train"])
    notes = (
        f"scvi-tools {scvi.__version__} TOTALVI defaults (n_latent={model.module.n_latent}); "
        f"train() with default arguments (early_stopping=True); trained {n_epochs} epochs "
        f"(max_epochs={model.trainer.max_epochs if hasattr(model, 'trainer') else 'n/a'}); "
        "embedding = get_latent_representation()."
    )
    return {"embedding": np.asarray(emb), "graph": None, "notes": notes}


def multivi(mdata: md.MuData, seed: int) -> PeerResult:
    """MultiVI (scvi-tools) with its default model and training settings.

    Parameters
    ----------
    mdata
        Preprocessed MuData with one ``counts`` (RNA) and one ``accessibility`` (peaks)
        modality, both integer-valued (``.layers["counts"]`` or ``.X``).
    seed
        Sets ``scvi.settings.seed`` before the model is built.

    Returns
    -------
    dict
        ``embedding`` = ``get_latent_representation()``; ``graph`` = None; ``notes``.
    """
    import scvi

    types = modality_types(mdata)
    (rna,), (atac,) = _of_type(types, "counts"), _of_type(types, "accessibility")
    scvi.settings.seed = seed
    with md.set_options(pull_on_update=False):
        m = md.MuData({"rna": _counts(mdata[rna]), "atac": _counts(mdata[atac])})
    for a in (m["rna"], m["atac"]):
        a.X = sparse.csr_matrix(a.X)
        a.layers["counts"] = a.X.copy()
    scvi.model.MULTIVI.setup_mudata(
        m,
        rna_layer="counts",
        atac_layer="counts",
        modalities={"rna_layer": "rna", "atac_layer": "atac"},
    )
    model = scvi.model.MULTIVI(m)  # n_genes / n_regions read from the MuData
    model.train()  # defaults: max_epochs 500, early stopping, lr 1e-4, batch 128
    emb = model.get_latent_representation()
    n_epochs = len(model.history["elbo_train"])
    notes = (
        f"scvi-tools {scvi.__version__} MULTIVI defaults (n_latent={model.module.n_latent}); "
        f"train() with default arguments; trained {n_epochs} epochs; embedding = "
        "get_latent_representation()."
    )
    return {"embedding": np.asarray(emb), "graph": None, "notes": notes}


def wnn(mdata: md.MuData, seed: int) -> PeerResult:
    """Weighted nearest neighbours (muon) on every modality's reduced representation.

    Parameters
    ----------
    mdata
        Preprocessed MuData (two or more modalities; types in ``uns["modality_types"]``).
    seed
        Random seed for PCA/LSI, neighbour search and the spectral embedding.

    Returns
    -------
    dict
        ``graph`` = multimodal connectivities; ``embedding`` = ``N_SPECTRAL``-dimensional spectral
        embedding of that graph (so that k-means can be run); ``notes``.
    """
    import muon as mu
    from sklearn.manifold import SpectralEmbedding

    mods, parts = {}, []
    for mod, kind in modality_types(mdata).items():
        a, red, note = process_modality(mdata, mod, kind, seed)
        r = ad.AnnData(obs=a.obs[[]].copy())
        r.obsm["X_red"] = red
        # scanpy defaults: 15 neighbours, euclidean
        sc.pp.neighbors(r, use_rep="X_red", random_state=seed)
        mods[mod] = r
        parts.append(note)
    with md.set_options(pull_on_update=False):
        m = md.MuData(mods)
    # muon defaults (n_neighbors = mean of the per-modality values = 15)
    mu.pp.neighbors(m, random_state=seed)
    graph = sparse.csr_matrix(m.obsp["connectivities"])
    emb = SpectralEmbedding(
        n_components=N_SPECTRAL, affinity="precomputed", random_state=seed
    ).fit_transform(graph)
    notes = (
        "muon.pp.neighbors (defaults) on " + "; ".join(parts) + "; per-modality scanpy "
        "neighbours k=15. WNN gives a graph, not an embedding: embedding = sklearn "
        f"SpectralEmbedding(n_components={N_SPECTRAL}, affinity='precomputed') of the WNN "
        "connectivities, for k-means; cluster the graph itself with Leiden."
    )
    return {"embedding": emb, "graph": graph, "notes": notes}


def mofa(mdata: md.MuData, seed: int) -> PeerResult:
    """MOFA+ (``muon.tl.mofa``, mofapy2) on every modality's processed matrix.

    Inputs per type: counts -> log-normalised; protein -> per-cell CLR; accessibility -> the
    30 LSI components (52,761 dense peaks do not fit here); continuous -> ``.X`` as it is.

    Parameters
    ----------
    mdata
        Preprocessed MuData (two or more modalities; types in ``uns["modality_types"]``).
    seed
        Passed to ``muon.tl.mofa(seed=...)``.

    Returns
    -------
    dict
        ``embedding`` = ``obsm["X_mofa"]`` (factors); ``graph`` = None; ``notes``.

    Notes
    -----
    Tested with mofapy2==0.7.5 (``pip install mofapy2==0.7.5``).
    """
    from importlib.metadata import version

    import h5py
    import muon as mu

    mods, parts = {}, []
    for mod, kind in modality_types(mdata).items():
        a, _, note = process_modality(mdata, mod, kind, seed)
        mods[mod] = ad.AnnData(a.X, obs=a.obs[[]].copy(), var=a.var[[]].copy())
        what = {
            "counts": "normalize_total(1e4) + log1p, no scaling",
            "protein": "per-cell CLR (muon, seurat flavour), no scaling",
            "accessibility": f"the LSI components, not the {mdata[mod].n_vars} peaks [{note}]",
            "continuous": ".X as it is, no scaling",
        }[kind]
        parts.append(f"{mod} ({kind}, {mods[mod].n_vars} features): {what}")
    with md.set_options(pull_on_update=False):
        m = md.MuData(mods)
    # muon/mofapy2 defaults kept (n_factors=10, convergence_mode="fast", likelihoods guessed
    # from the data, no view scaling), passed explicitly so the notes state them; use_var=None
    # because the inputs are already selected. Private outfile: the default /tmp name only has
    # one-second resolution.
    n_factors, convergence_mode = 10, "fast"
    with tempfile.TemporaryDirectory() as tmp:
        outfile = os.path.join(tmp, "mofa.hdf5")
        mu.tl.mofa(
            m,
            use_var=None,
            n_factors=n_factors,
            convergence_mode=convergence_mode,
            seed=seed,
            outfile=outfile,
        )
        with h5py.File(outfile, "r") as f:
            n_iter = len(f["training_stats/time"]) - 1  # entry 0 is the initialisation
            liks = [
                x.decode() if isinstance(x, bytes) else str(x)
                for x in f["model_options/likelihoods"][:]
            ]
    notes = (
        f"muon.tl.mofa (mofapy2 {version('mofapy2')}) defaults: n_factors={n_factors}, "
        f"convergence_mode='{convergence_mode}' (stopped after {n_iter} iterations, max 1000), "
        f"likelihoods {liks}, scale_views=False, seed={seed}; inputs: " + "; ".join(parts) + "."
    )
    return {"embedding": np.asarray(m.obsm["X_mofa"]), "graph": None, "notes": notes}


def scmsi_setup(mdata: md.MuData) -> tuple[md.MuData, dict[str, str], dict[str, str | None]]:
    """A copy of ``mdata`` registered for scMSI, its modality types and the layers used.

    ``counts``/``protein`` modalities read ``.layers["counts"]`` (when present), the others
    ``.X`` (layer None).
    """
    import scmsi

    types = modality_types(mdata)
    m = mdata.copy()
    layers = {
        mod: "counts" if kind in ("counts", "protein") and "counts" in m[mod].layers else None
        for mod, kind in types.items()
    }
    scmsi.SCMSI.setup_mudata(m, modalities=types, layers=layers)
    return m, types, layers


def scmsi_default(mdata: md.MuData, seed: int, preset: dict | None = None) -> PeerResult:
    """scMSI with the package defaults; embedding = the objective's (the joint latent by default).

    Modality types from ``uns["modality_types"]``; ``counts``/``protein`` modalities read
    ``.layers["counts"]`` (when present), the others ``.X``. With a protein modality, also
    returns its denoised expression and foreground probability (``extras``: the paper's
    Figure 3F). With several modalities, ``extras["embedding_fusion_<other>"]`` is the same
    model's embedding with each other fusion (``scmsi.FUSIONS``): an ablation with no
    retraining, since the fusion only reads the trained coefficients.
    """
    import scmsi
    from scmsi import _cluster
    from scmsi._fusion import fusion_scale

    m, types, layers = scmsi_setup(mdata)
    options = dict(preset or {})
    if "preset" in options:  # `scmsi:preset=paper`, the method name of earlier results
        options["objective"] = options.pop("preset")
    model = scmsi.SCMSI(m, seed=seed, **options)
    # Smoke runs (CI) shorten training; full runs use the package default.
    max_epochs = os.environ.get("SCMSI_BENCH_MAX_EPOCHS")
    model.train(max_epochs=int(max_epochs) if max_epochs else None, enable_progress_bar=False)
    scmsi.tl.embed_and_cluster(m, model, umap=False, seed=seed)
    n_epochs = len(model.history["elbo_train"])
    inputs = ", ".join(f"{mod}: {kind} ({layers[mod] or '.X'})" for mod, kind in types.items())
    fusion = m.uns["scmsi_embedding"]["fusion"]
    embedding = m.uns["scmsi_embedding"]["embedding"]
    what = {
        "latent": "joint latent (every modality's latent, standardised, concatenated)",
        "rebuilt": "latents rebuilt by the fused coefficients",
        "pca": "PCA of the fused coefficients",
    }[embedding]
    notes = (
        f"scmsi {scmsi.__version__} preset={model.preset!r}"
        + "".join(f", {k}={v!r}" for k, v in options.items() if k != "objective")
        + f": {model.module.n_anchors} anchors, {n_epochs} epochs (early stopping on), "
        f"embedding = {what} (fusion={fusion!r}); modalities {inputs}."
    )
    extras = {}
    if embedding != "pca":
        proj = _cluster.rebuilt_projection(model)

        def embed(coef):
            return _cluster.project_coefficients(coef, proj)

        # Ablations, no retraining: the same fused coefficients, embedded otherwise.
        fused_coef = m.obsm["scmsi_coef"]
        extras["embedding_embedding_pca"] = _cluster.coefficient_pca(
            fused_coef, model.module.n_latent, seed
        )[0]
        if embedding == "latent":
            # the fusion only matters to the affinity's embeddings: ablate it there
            extras["embedding_embedding_rebuilt"] = embed(fused_coef)
            mean_coef = _cluster.project_batches(m, model, None, None, "mean")[1]
            extras["embedding_embedding_rebuilt-fusion-mean"] = embed(mean_coef)
        else:
            latents = {mod: m.obsm[f"X_scmsi_{mod}"] for mod in model.modality_names}
            stats = _cluster.latent_standardisation(model)
            extras["embedding_embedding_latent"] = _cluster.joint_latent(latents, stats)
    else:

        def embed(coef):
            return _cluster.coefficient_pca(coef, model.module.n_latent, seed)[0]

    if len(types) > 1 and embedding != "latent":
        # Ablation, no retraining: the same coefficients under the other fusions.
        for other in (f for f in scmsi.FUSIONS if f != fusion):
            scale = fusion_scale(model, m, other)
            # one pass: fused coefficients and the weights they were fused with
            _, coef, _, weights = _cluster.project_batches(m, model, None, None, other, None, scale)
            if weights is not None:
                w = dict(zip(model.modality_names, weights.mean(0).round(2).tolist(), strict=True))
                notes += f" Mean {other}-fusion weights: {w}."
            extras[f"embedding_fusion_{other}"] = embed(coef)
    prots = _of_type(types, "protein")
    if prots:
        denoised = model.get_normalized_expression(m, modality=prots[0])
        fg = model.get_protein_foreground_probability(m, modality=prots[0])
        extras |= {
            "prot_names": np.asarray(denoised.columns, dtype=str),
            "prot_denoised": denoised.to_numpy(np.float32),
            "prot_foreground": fg.to_numpy(np.float32),
        }
    return {"embedding": m.obsm["X_scmsi"], "graph": None, "notes": notes, "extras": extras}


METHODS: dict[str, Callable[[md.MuData, int], PeerResult]] = {
    "scmsi": scmsi_default,
    "totalvi": totalvi,
    "multivi": multivi,
    "wnn": wnn,
    "mofa": mofa,
}


def _option(value: str):
    for cast in (int, float):
        try:
            return cast(value)
        except ValueError:
            pass
    return {"True": True, "False": False}.get(value, value)


def get_method(name: str) -> Callable[[md.MuData, int], PeerResult]:
    """The method called ``name``: a key of :data:`METHODS`, ``only_<modality>``, or
    ``scmsi:key=value,...`` (scMSI with those :class:`scmsi.SCMSI` options, e.g.
    ``scmsi:preset=paper``: an ablation trained in the same run)."""
    if name in METHODS:
        return METHODS[name]
    if name.startswith("scmsi:"):
        opts = dict(kv.split("=", 1) for kv in name[len("scmsi:") :].split(","))
        opts = {k: _option(v) for k, v in opts.items()}

        def variant(mdata: md.MuData, seed: int) -> PeerResult:
            return scmsi_default(mdata, seed, opts)

        return variant
    if name.startswith("only_") and len(name) > len("only_"):
        return only_modality(name[len("only_") :])
    raise KeyError(f"Unknown method {name!r}; use one of {sorted(METHODS)} or only_<modality>.")


def _main(argv: list[str] | None = None) -> None:
    """Run one peer method on an h5mu file and save the result as npz (see module docstring)."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.peers", description=__doc__.splitlines()[0]
    )
    parser.add_argument("method", help=f"one of {sorted(METHODS)} or only_<modality>")
    parser.add_argument("h5mu")
    parser.add_argument("seed", type=int)
    parser.add_argument("out_npz")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="BLAS/OpenMP and torch threads (default 1)",
    )
    args = parser.parse_args(argv)
    method = get_method(args.method)

    if args.method in ("totalvi", "multivi", "scmsi") or args.method.startswith("scmsi:"):
        # import torch only where needed: it inflates RSS
        import torch

        torch.set_num_threads(args.threads)
    mdata = md.read_h5mu(args.h5mu)
    with measured(args.threads) as cost:
        res = method(mdata, args.seed)

    out: dict[str, Any] = {
        "method": args.method,
        "seed": args.seed,
        **cost,
        "threads": args.threads,
        "notes": res["notes"],
        "obs_names": np.asarray(mdata.obs_names, dtype=str),
    }
    if res["embedding"] is not None:
        out["embedding"] = np.asarray(res["embedding"], dtype=np.float32)
    if res["graph"] is not None:
        g = sparse.csr_matrix(res["graph"])
        out.update(
            graph_data=g.data,
            graph_indices=g.indices,
            graph_indptr=g.indptr,
            graph_shape=np.array(g.shape),
        )
    for key, value in res.get("extras", {}).items():
        out[f"extra_{key}"] = value
    save_npz(args.out_npz, **out)
    print(
        f"{args.method} seed={args.seed}: {cost['time_s']:.1f} s, "
        f"peak RSS {cost['peak_rss_mib']:.0f} MiB -> {args.out_npz}"
    )


if __name__ == "__main__":
    _main()
