"""scmsi._simulate: the public synthetic CITE-seq generator (scmsi.datasets.synthetic_citeseq)."""

import numpy as np
import pytest
import scanpy as sc
from scipy import sparse
from sklearn.model_selection import cross_val_score
from sklearn.neighbors import KNeighborsClassifier

import scmsi
from scmsi import _anchors


@pytest.fixture(scope="module")
def big():
    return scmsi.datasets.synthetic_citeseq(
        3000, n_genes=400, n_proteins=20, n_types=6, n_batches=2, seed=1
    )


def _knn_accuracy(x, labels) -> float:
    return cross_val_score(KNeighborsClassifier(10), x, labels, cv=3).mean()


def test_synthetic_citeseq_layout(big):
    rna, prot = big["rna"].X, big["prot"].X
    assert big.shape == (3000, 420) and rna.shape == (3000, 400) and prot.shape == (3000, 20)
    assert sparse.isspmatrix_csr(rna) and rna.dtype == np.float32
    assert np.array_equal(rna.data, np.round(rna.data)) and rna.data.min() > 0
    assert isinstance(prot, np.ndarray) and np.array_equal(prot, np.round(prot))
    assert (np.asarray(rna.sum(1)).ravel() > 0).all()
    assert set(big.obs.columns) == {"cell_type", "lineage", "batch"}
    assert big.obs["cell_type"].nunique() == 6 and big.obs["batch"].nunique() == 2
    assert big.uns["modality_types"] == {"rna": "counts", "prot": "protein"}


def test_synthetic_citeseq_is_reproducible():
    a = scmsi.datasets.synthetic_citeseq(1200, n_genes=100, n_proteins=5, seed=3)
    b = scmsi.datasets.synthetic_citeseq(1200, n_genes=100, n_proteins=5, seed=3)
    c = scmsi.datasets.synthetic_citeseq(1200, n_genes=100, n_proteins=5, seed=4)
    assert (a["rna"].X != b["rna"].X).nnz == 0 and np.array_equal(a["prot"].X, b["prot"].X)
    assert a.obs.equals(b.obs)
    assert (a["rna"].X != c["rna"].X).nnz > 0


def test_synthetic_citeseq_structure(big):
    """Types are recoverable from RNA and protein; batches shift RNA."""
    pcs = sc.pp.pca(_anchors.lognormalize(big["rna"].X), n_comps=20, random_state=0)
    types, batches = big.obs["cell_type"].to_numpy(), big.obs["batch"].to_numpy()
    assert _knn_accuracy(pcs, types) > 0.85
    assert _knn_accuracy(np.log1p(big["prot"].X), big.obs["lineage"].to_numpy()) > 0.95
    assert _knn_accuracy(pcs, batches) > 0.7  # chance is 0.5
