"""Synthetic CITE-seq-like data with known cell types and batch effects."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
from mudata import MuData
from scipy import sparse


def synthetic_cite(
    n_cells: int = 600,
    n_genes: int = 300,
    n_proteins: int = 12,
    n_types: int = 4,
    n_batches: int = 1,
    batch_effect: float = 0.5,
    seed: int = 0,
) -> MuData:
    """RNA (NB counts) + protein (background/foreground NB) for ``n_types`` cell types.

    Each type over-expresses its own gene program (20% of genes) and a subset of proteins;
    each batch scales genes by log-normal factors of sd ``batch_effect``. Labels in
    ``obs["cell_type"]``, batches in ``obs["batch"]``; counts in ``.X`` and ``layers["counts"]``.
    """
    rng = np.random.default_rng(seed)
    types = rng.integers(n_types, size=n_cells)
    batches = rng.integers(n_batches, size=n_cells)

    base = rng.normal(-1.0, 1.0, n_genes)
    program = rng.random((n_types, n_genes)) < 0.2
    log_mu = base[None, :] + 2.0 * program[types]
    log_mu += rng.normal(0, batch_effect, (n_batches, n_genes))[batches]
    library = rng.lognormal(np.log(2000), 0.3, n_cells)
    mu = np.exp(log_mu)
    mu = mu / mu.sum(1, keepdims=True) * library[:, None]
    rna = rng.negative_binomial(5, 5 / (5 + mu)).astype(np.float32)

    fore = rng.random((n_types, n_proteins)) < 0.4
    back = rng.lognormal(np.log(20), 0.3, n_proteins)
    prot_mu = back[None, :] * np.where(fore[types], rng.lognormal(np.log(15), 0.3), 1.0)
    prot = rng.negative_binomial(10, 10 / (10 + prot_mu)).astype(np.float32)

    obs = pd.DataFrame(
        {
            "cell_type": pd.Categorical([f"type{t}" for t in types]),
            "batch": pd.Categorical([f"batch{b}" for b in batches]),
        },
        index=[f"cell{i}" for i in range(n_cells)],
    )
    mods = {}
    for name, x, prefix in (("rna", rna, "gene"), ("prot", prot, "protein")):
        a = ad.AnnData(
            sparse.csr_matrix(x) if name == "rna" else x,
            obs=obs.copy(),
            var=pd.DataFrame(index=[f"{prefix}{j}" for j in range(x.shape[1])]),
        )
        a.layers["counts"] = a.X.copy()
        mods[name] = a
    mdata = MuData(mods)
    mdata.obs = obs.copy()
    return mdata
