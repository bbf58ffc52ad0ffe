"""Large synthetic CITE-seq data: a parametric negative binomial generator, built in chunks."""

from __future__ import annotations

import anndata as ad
import mudata as md
import numpy as np
import pandas as pd
from scipy import sparse

from ._constants import MODALITY_TYPES_KEY

_CHUNK = 10_000  # cells sampled at once; fixed, so the data depend on the seed alone


def synthetic_citeseq(
    n_cells: int,
    n_genes: int = 4000,
    n_proteins: int = 100,
    n_types: int = 12,
    n_batches: int = 4,
    batch_effect: float = 0.3,
    median_umis: float = 1500.0,
    seed: int = 0,
) -> md.MuData:
    """CITE-seq-like counts with nested cell types, batch effects and protein background.

    RNA counts are negative binomial (a Poisson-gamma mixture with one dispersion per gene)
    around ``library * softmax(log mean)``, where the log mean adds: a gene baseline; a
    lineage programme (8% of genes up, 3% down); a subtype programme (3% of genes up); a
    gene-wise batch shift of sd ``batch_effect``. Cell types are nested in
    ``max(2, round(sqrt(n_types)))`` lineages, so subtypes of a lineage are closer to each other
    than to other lineages; their frequencies fall geometrically (ratio 0.7), giving rare types
    (< 1% of cells at 12 types). Library sizes are log-normal (median ``median_umis``, sd 0.35)
    with a shift per batch.

    Proteins follow totalVI's picture: every protein has a background rate per batch (ambient
    antibody), and the cells of the types that carry it add a foreground ``fold`` times the
    background (log-normal fold, median 10); 30% of the proteins mark a lineage, 40% mark one
    to three types, the rest are never foreground (isotype-like controls). Protein counts are
    negative binomial with dispersion 8.

    Cells are sampled in chunks of 10,000 into a CSR matrix, so memory holds the sparse result
    and one dense chunk, never a dense ``n_cells x n_genes`` matrix: 1M cells x 4,000 genes
    take about 6 GB (float32 values, int32 indices) at the default depth.

    Parameters
    ----------
    n_cells
        Number of cells.
    n_genes, n_proteins
        Features of the ``rna`` and ``prot`` modalities.
    n_types
        Number of cell types (``obs["cell_type"]``), nested in lineages (``obs["lineage"]``).
    n_batches
        Number of batches (``obs["batch"]``), assigned uniformly at random.
    batch_effect
        Standard deviation of the gene-wise log-scale shift of each batch.
    median_umis
        Median RNA counts per cell.
    seed
        The same seed gives the same data.

    Returns
    -------
    MuData with ``rna`` (CSR float32 integer counts in ``.X``) and ``prot`` (dense float32
    counts in ``.X``); labels in ``obs``; ``uns["modality_types"]`` names their types.
    """
    if n_cells < 1 or n_types < 1 or n_batches < 1:
        raise ValueError("n_cells, n_types and n_batches must be positive.")
    rng = np.random.default_rng(seed)
    n_lineages = min(n_types, max(2, round(np.sqrt(n_types))))
    lineage_of = np.arange(n_types) % n_lineages
    freq = rng.permutation(0.7 ** np.arange(n_types))
    freq /= freq.sum()

    rna_model = _rna_model(rng, lineage_of, n_genes, n_batches, batch_effect)
    prot_model = _protein_model(rng, lineage_of, n_proteins, n_batches)
    types = rng.choice(n_types, n_cells, p=freq)
    batches = rng.integers(n_batches, size=n_cells)
    rna, prot = _sample_cells(types, batches, rna_model, prot_model, median_umis, seed)
    return _as_mudata(rna, prot, types, batches, lineage_of, n_batches)


def _rna_model(rng, lineage_of, n_genes: int, n_batches: int, batch_effect: float) -> dict:
    """Gene frequencies per (type, batch), gene dispersions and batch depth shifts."""
    n_types, n_lineages = len(lineage_of), int(lineage_of.max()) + 1
    # log mean per (type, batch), normalised into frequencies over genes
    base = rng.normal(0.0, 1.2, n_genes)
    lineage_prog = (rng.random((n_lineages, n_genes)) < 0.08) * rng.normal(1.5, 0.5, (1, n_genes))
    lineage_prog -= (rng.random((n_lineages, n_genes)) < 0.03) * 1.5
    type_prog = (rng.random((n_types, n_genes)) < 0.03) * rng.normal(1.0, 0.4, (n_types, n_genes))
    batch_shift = rng.normal(0.0, batch_effect, (n_batches, n_genes))
    log_mu = (base + lineage_prog[lineage_of] + type_prog)[:, None, :] + batch_shift[None]
    freq_genes = np.exp(log_mu - log_mu.max(-1, keepdims=True))
    freq_genes /= freq_genes.sum(-1, keepdims=True)  # (types, batches, genes)
    theta = rng.lognormal(np.log(3.0), 0.5, n_genes).astype(np.float32)
    depth_batch = rng.normal(0.0, 0.2, n_batches)
    return {"freq": freq_genes, "theta": theta, "depth_batch": depth_batch}


def _protein_model(rng, lineage_of, n_proteins: int, n_batches: int) -> dict:
    """Background per batch and protein; which types carry each protein, and its fold."""
    n_types, n_lineages = len(lineage_of), int(lineage_of.max()) + 1
    kind = rng.choice(3, n_proteins, p=[0.3, 0.4, 0.3])  # lineage marker, type marker, control
    carried = np.zeros((n_types, n_proteins), bool)
    for p in range(n_proteins):
        if kind[p] == 0:
            carried[:, p] = lineage_of == rng.integers(n_lineages)
        elif kind[p] == 1:
            carried[rng.choice(n_types, rng.integers(1, min(3, n_types) + 1), replace=False), p] = 1
    background = rng.lognormal(np.log(30.0), 0.6, n_proteins)
    background = background * rng.lognormal(0.0, 0.15, (n_batches, n_proteins))
    fold = rng.lognormal(np.log(10.0), 0.6, n_proteins)
    return {"carried": carried, "background": background, "fold": fold}


def _sample_cells(types, batches, rna_model: dict, prot_model: dict, median_umis, seed):
    """RNA (CSR) and protein (dense) counts, sampled in chunks of ``_CHUNK`` cells."""
    freq_genes, theta = rna_model["freq"], rna_model["theta"]
    background, carried, fold = (prot_model[k] for k in ("background", "carried", "fold"))
    n_cells, n_genes = len(types), freq_genes.shape[-1]
    data, indices, indptr, prot = [], [], [np.zeros(1, np.int64)], []
    nnz = 0
    for i, start in enumerate(range(0, n_cells, _CHUNK)):
        crng = np.random.default_rng([seed, i])
        t, b = types[start : start + _CHUNK], batches[start : start + _CHUNK]
        n = len(t)
        library = crng.lognormal(np.log(median_umis) + rna_model["depth_batch"][b], 0.35)
        mu = (library[:, None] * freq_genes[t, b]).astype(np.float32)
        mu *= crng.standard_gamma(theta, (n, n_genes), dtype=np.float32) / theta
        x = sparse.csr_matrix(crng.poisson(mu).astype(np.float32))
        data.append(x.data)
        indices.append(x.indices.astype(np.int32, copy=False))
        indptr.append(x.indptr[1:].astype(np.int64) + nnz)
        nnz += x.nnz

        rate = background[b] * (1.0 + carried[t] * fold * crng.lognormal(0.0, 0.3, (n, 1)))
        rate *= crng.lognormal(0.0, 0.2, (n, 1))  # per-cell antibody capture
        prot.append(crng.poisson(rate * crng.gamma(8.0, 1 / 8.0, rate.shape)).astype(np.float32))
    del x, mu
    # Concatenate one array at a time so the peak is the result plus one array's chunks.
    rna = sparse.csr_matrix(
        (_concat(data), _concat(indices), _concat(indptr)), shape=(n_cells, n_genes)
    )
    return rna, _concat(prot)


def _as_mudata(rna, prot, types, batches, lineage_of, n_batches: int) -> md.MuData:
    """The counts as a MuData with labels in ``obs`` and the modality types declared."""
    n_cells, n_genes, n_proteins = rna.shape[0], rna.shape[1], prot.shape[1]
    n_types, n_lineages = len(lineage_of), int(lineage_of.max()) + 1
    n_digits = len(str(n_cells - 1))
    obs = pd.DataFrame(
        {
            "cell_type": pd.Categorical.from_codes(types, [f"type{k:02d}" for k in range(n_types)]),
            "lineage": pd.Categorical.from_codes(
                lineage_of[types], [f"lineage{k}" for k in range(n_lineages)]
            ),
            "batch": pd.Categorical.from_codes(batches, [f"batch{k}" for k in range(n_batches)]),
        },
        index=pd.Index([f"cell{i:0{n_digits}d}" for i in range(n_cells)]),
    )
    mods = {
        "rna": ad.AnnData(
            rna,
            obs=pd.DataFrame(index=obs.index),
            var=pd.DataFrame(index=[f"gene{j}" for j in range(n_genes)]),
        ),
        "prot": ad.AnnData(
            prot,
            obs=pd.DataFrame(index=obs.index),
            var=pd.DataFrame(index=[f"protein{j}" for j in range(n_proteins)]),
        ),
    }
    with md.set_options(pull_on_update=False):  # obs is set below, not pulled from mods
        mdata = md.MuData(mods)
    mdata.obs = obs
    mdata.uns[MODALITY_TYPES_KEY] = {"rna": "counts", "prot": "protein"}
    return mdata


def _concat(parts: list[np.ndarray]) -> np.ndarray:
    """Concatenate and empty ``parts`` (the chunks are freed as soon as they are copied)."""
    out = np.concatenate(parts)
    parts.clear()
    return out
