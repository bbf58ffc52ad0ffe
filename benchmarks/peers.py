"""Peer (comparison) methods for CITE-seq benchmarks.

Every method takes a preprocessed :class:`mudata.MuData` with modalities ``"rna"`` and ``"prot"``
(raw counts in ``.layers["counts"]`` of each) and a ``seed``, works on a copy, and returns::

    {"embedding": np.ndarray (cells x d) | None,
     "graph": scipy.sparse.csr_matrix (cells x cells) | None,
     "notes": str}

Run one method per fresh process (see ``shared/docs/PEERS.md``: a second scvi-tools model
trained in the same process ran several times slower)::

    python -m benchmarks.peers METHOD DATA.h5mu SEED OUT.npz

The npz holds ``embedding`` (if any), ``graph_data``/``graph_indices``/``graph_indptr``/
``graph_shape`` (if any), ``time_s`` (wall-clock of the method call, excluding reading the
file), ``peak_rss_mib`` (peak resident memory of the process), ``threads``, ``obs_names``,
``method``, ``seed``, ``notes`` and, for scMSI, ``extra_*`` arrays (denoised protein and
foreground probability).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from typing import Any

import anndata as ad
import mudata as md
import numpy as np
import scanpy as sc
from scipy import sparse

__all__ = ["METHODS", "mofa", "protein_clr_pca", "rna_pca", "totalvi", "wnn"]

PeerResult = dict[str, Any]

N_PCS_RNA = 30  # RNA PCs (scanpy's usual choice for PBMC-sized data)
N_SPECTRAL = 10  # components of the spectral embedding of the WNN graph


def _counts(adata: ad.AnnData) -> ad.AnnData:
    """Copy of ``adata`` with raw counts (``layers["counts"]``) as float32 ``.X``, nothing else."""
    x = adata.layers.get("counts", adata.X)
    x = x.astype(np.float32, copy=True)
    return ad.AnnData(x, obs=adata.obs[[]].copy(), var=adata.var[[]].copy())


def _rna_lognorm_pca(mdata: md.MuData, seed: int) -> ad.AnnData:
    """RNA: normalize_total(1e4) + log1p; unscaled PCA (``N_PCS_RNA`` comps) in ``X_pca``."""
    rna = _counts(mdata["rna"])
    sc.pp.normalize_total(rna, target_sum=1e4)
    sc.pp.log1p(rna)
    sc.pp.pca(rna, n_comps=N_PCS_RNA, random_state=seed)
    return rna


def _prot_clr_pca(mdata: md.MuData, seed: int) -> ad.AnnData:
    """Protein: per-cell CLR (muon, Seurat flavour); unscaled PCA (n_proteins - 1 comps).

    The PCs are in ``.obsm["X_pca"]`` of the returned copy.
    """
    import muon as mu

    prot = _counts(mdata["prot"])
    prot.X = prot.X.toarray() if sparse.issparse(prot.X) else np.asarray(prot.X)
    mu.prot.pp.clr(prot, axis=1)  # axis=1: centre log-counts within each cell
    sc.pp.pca(prot, n_comps=prot.n_vars - 1, random_state=seed)
    return prot


def rna_pca(mdata: md.MuData, seed: int) -> PeerResult:
    """RNA-only baseline: log-normalised expression, PCA.

    Parameters
    ----------
    mdata
        Preprocessed MuData (``"rna"`` counts in ``.layers["counts"]``, HVGs already selected).
    seed
        Random seed passed to PCA.

    Returns
    -------
    dict
        ``embedding`` = the ``N_PCS_RNA`` PCs; ``graph`` = None; ``notes``.
    """
    rna = _rna_lognorm_pca(mdata, seed)
    notes = (
        f"scanpy normalize_total(target_sum=1e4) + log1p on all {rna.n_vars} genes of the input; "
        f"PCA {N_PCS_RNA} comps, zero-centred, genes NOT scaled to unit variance."
    )
    return {"embedding": np.asarray(rna.obsm["X_pca"]), "graph": None, "notes": notes}


def protein_clr_pca(mdata: md.MuData, seed: int) -> PeerResult:
    """Protein-only baseline: per-cell CLR, PCA without per-protein scaling.

    Parameters
    ----------
    mdata
        Preprocessed MuData (``"prot"`` counts in ``.layers["counts"]``).
    seed
        Random seed passed to PCA.

    Returns
    -------
    dict
        ``embedding`` = ``n_proteins - 1`` PCs; ``graph`` = None; ``notes``.
    """
    prot = _prot_clr_pca(mdata, seed)
    notes = (
        "muon.prot.pp.clr(axis=1, flavor='seurat'): per-cell CLR, "
        "log1p(x / exp(mean_j log1p(x_j))); "
        f"PCA {prot.n_vars - 1} comps of {prot.n_vars} proteins, zero-centred, proteins NOT scaled."
    )
    return {"embedding": np.asarray(prot.obsm["X_pca"]), "graph": None, "notes": notes}


def totalvi(mdata: md.MuData, seed: int) -> PeerResult:
    """totalVI (scvi-tools) with its default model and training settings.

    Parameters
    ----------
    mdata
        Preprocessed MuData (raw counts in ``.layers["counts"]`` of ``"rna"`` and ``"prot"``).
    seed
        Sets ``scvi.settings.seed`` before the model is built.

    Returns
    -------
    dict
        ``embedding`` = ``get_latent_representation()`` (posterior mean); ``graph`` = None;
        ``notes``.
    """
    import scvi

    scvi.settings.seed = seed
    with md.set_options(pull_on_update=False):
        m = md.MuData({"rna": _counts(mdata["rna"]), "prot": _counts(mdata["prot"])})
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


def wnn(mdata: md.MuData, seed: int) -> PeerResult:
    """Weighted nearest neighbours (muon) on RNA and protein PCAs.

    Parameters
    ----------
    mdata
        Preprocessed MuData (raw counts in ``.layers["counts"]`` of ``"rna"`` and ``"prot"``).
    seed
        Random seed for PCA, neighbour search and the spectral embedding.

    Returns
    -------
    dict
        ``graph`` = multimodal connectivities; ``embedding`` = ``N_SPECTRAL``-dimensional spectral
        embedding of that graph (so that k-means can be run); ``notes``.
    """
    import muon as mu
    from sklearn.manifold import SpectralEmbedding

    rna, prot = _rna_lognorm_pca(mdata, seed), _prot_clr_pca(mdata, seed)
    for a in (rna, prot):
        # scanpy defaults: 15 neighbours, euclidean
        sc.pp.neighbors(a, use_rep="X_pca", random_state=seed)
    with md.set_options(pull_on_update=False):
        m = md.MuData({"rna": rna, "prot": prot})
    # muon defaults (n_neighbors = mean of the per-modality values = 15)
    mu.pp.neighbors(m, random_state=seed)
    graph = sparse.csr_matrix(m.obsp["connectivities"])
    emb = SpectralEmbedding(
        n_components=N_SPECTRAL, affinity="precomputed", random_state=seed
    ).fit_transform(graph)
    notes = (
        f"muon.pp.neighbors (defaults) on RNA log-norm PCA ({N_PCS_RNA} PCs, unscaled) and "
        f"protein per-cell CLR PCA ({prot.n_vars - 1} PCs, unscaled), per-modality scanpy "
        "neighbours k=15. WNN gives a graph, not an embedding: embedding = sklearn "
        f"SpectralEmbedding(n_components={N_SPECTRAL}, affinity='precomputed') of the WNN "
        "connectivities, for k-means; cluster the graph itself with Leiden."
    )
    return {"embedding": emb, "graph": graph, "notes": notes}


def mofa(mdata: md.MuData, seed: int) -> PeerResult:
    """MOFA+ (``muon.tl.mofa``, mofapy2) on log-normalised RNA and per-cell CLR protein.

    Parameters
    ----------
    mdata
        Preprocessed MuData (raw counts in ``.layers["counts"]`` of ``"rna"`` and ``"prot"``).
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

    rna = _counts(mdata["rna"])
    sc.pp.normalize_total(rna, target_sum=1e4)
    sc.pp.log1p(rna)
    prot = _counts(mdata["prot"])
    prot.X = prot.X.toarray()
    mu.prot.pp.clr(prot, axis=1)
    with md.set_options(pull_on_update=False):
        m = md.MuData({"rna": rna, "prot": prot})
    # muon/mofapy2 defaults kept (n_factors=10, convergence_mode="fast", likelihoods guessed
    # from the data, no view scaling), passed explicitly so the notes state them; use_var=None
    # because all input genes are already HVGs. Private outfile: the default /tmp name only has
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
        f"likelihoods {liks}, scale_views=False, seed={seed}; inputs: RNA "
        f"normalize_total(1e4)+log1p ({rna.n_vars} genes), protein per-cell CLR (muon, seurat "
        "flavour), no scaling."
    )
    return {"embedding": np.asarray(m.obsm["X_mofa"]), "graph": None, "notes": notes}


def scmsi_default(mdata: md.MuData, seed: int) -> PeerResult:
    """scMSI with the package defaults; embedding = PCA of the fused coefficients.

    Also returns, for each protein modality, the denoised expression and the foreground
    probability (``extras``: the paper's Figure 3F).
    """
    import scmsi

    m = mdata.copy()
    scmsi.SCMSI.setup_mudata(
        m,
        modalities={"rna": "counts", "prot": "protein"},
        layers={"rna": "counts", "prot": "counts"},
    )
    model = scmsi.SCMSI(m, seed=seed)
    # Smoke runs (CI) shorten training; full runs use the package default.
    max_epochs = os.environ.get("SCMSI_BENCH_MAX_EPOCHS")
    model.train(max_epochs=int(max_epochs) if max_epochs else None, enable_progress_bar=False)
    scmsi.tl.embed_and_cluster(m, model, umap=False, seed=seed)
    n_epochs = len(model.history["elbo_train"])
    notes = (
        f"scmsi {scmsi.__version__} defaults: {model.module.n_anchors} anchors, "
        f"{n_epochs} epochs (early stopping on), embedding = PCA of fused coefficients."
    )
    denoised = model.get_normalized_expression(m, modality="prot")
    extras = {
        "prot_names": np.asarray(denoised.columns, dtype=str),
        "prot_denoised": denoised.to_numpy(np.float32),
        "prot_foreground": model.get_protein_foreground_probability(m, modality="prot").to_numpy(
            np.float32
        ),
    }
    return {"embedding": m.obsm["X_scmsi"], "graph": None, "notes": notes, "extras": extras}


METHODS: dict[str, Callable[[md.MuData, int], PeerResult]] = {
    "scmsi": scmsi_default,
    "rna_pca": rna_pca,
    "protein_clr_pca": protein_clr_pca,
    "totalvi": totalvi,
    "wnn": wnn,
    "mofa": mofa,
}


def _peak_rss_mib(resource) -> float:
    """This process's peak resident memory in MiB.

    Linux keeps ``ru_maxrss`` across ``exec``, so a child started by a large parent would report
    the parent's peak; ``VmHWM`` belongs to the process's own address space.
    """
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _main(argv: list[str] | None = None) -> None:
    """Run one peer method on an h5mu file and save the result as npz (see module docstring)."""
    import argparse
    import resource
    import time

    from threadpoolctl import threadpool_limits

    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.peers", description=__doc__.splitlines()[0]
    )
    parser.add_argument("method", choices=sorted(METHODS))
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

    if args.method in ("totalvi", "scmsi"):  # import torch only where needed: it inflates RSS
        import torch

        torch.set_num_threads(args.threads)
    mdata = md.read_h5mu(args.h5mu)
    with threadpool_limits(limits=args.threads):
        t0 = time.perf_counter()
        res = METHODS[args.method](mdata, args.seed)
        time_s = time.perf_counter() - t0
    peak_rss_mib = _peak_rss_mib(resource)

    out: dict[str, Any] = {
        "method": args.method,
        "seed": args.seed,
        "time_s": time_s,
        "peak_rss_mib": peak_rss_mib,
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
    tmp = f"{args.out_npz}.tmp.npz"  # atomic: a killed run leaves no npz that looks finished
    np.savez_compressed(tmp, **out)
    os.replace(tmp, args.out_npz)
    print(
        f"{args.method} seed={args.seed}: {time_s:.1f} s, "
        f"peak RSS {peak_rss_mib:.0f} MiB -> {args.out_npz}"
    )


if __name__ == "__main__":
    _main()
