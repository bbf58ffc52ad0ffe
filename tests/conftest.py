import os

import pytest
import scvi
import torch

from tests._synthetic import synthetic_cite

scvi.settings.verbosity = 30
_THREADS = int(os.environ.get("SCMSI_TEST_THREADS", "2"))
torch.set_num_threads(_THREADS)

FAST = {"max_epochs": 15, "enable_progress_bar": False, "early_stopping": False}


@pytest.fixture(autouse=True)
def _scmsi_threads():
    """scmsi sets torch's threads at each training/inference pass: pin them for the tests."""
    import scmsi

    scmsi.settings.num_threads = _THREADS


@pytest.fixture
def mdata():
    return synthetic_cite(n_cells=240, n_genes=80, n_proteins=8, n_types=3, n_batches=2, seed=0)


@pytest.fixture(scope="module")
def trained():
    """A small model trained once per test module, with its data."""
    import scmsi

    md = synthetic_cite(n_cells=240, n_genes=80, n_proteins=8, n_types=3, n_batches=2, seed=0)
    scmsi.SCMSI.setup_mudata(md, layers={"rna": "counts", "prot": "counts"}, batch_key="batch")
    model = scmsi.SCMSI(md, n_anchors=40, seed=0)
    model.train(**FAST)
    return model, md
