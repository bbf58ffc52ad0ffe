"""scmsi._quiet: a normal run prints no warning that is not about the user's data."""

import logging
import warnings

import scmsi
from scmsi._quiet import log_every_n_steps, quiet_lightning
from tests._synthetic import synthetic_cite


def test_a_short_run_emits_no_warning(capfd):
    # catch_warnings + "always" overrides pyproject's filters, which hide Deprecation- and
    # FutureWarnings: every warning raised in the block is recorded.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        md = synthetic_cite(n_cells=120, n_genes=40, n_proteins=5, n_types=2, seed=0)
        scmsi.SCMSI.setup_mudata(md, layers={"rna": "counts", "prot": "counts"})
        model = scmsi.SCMSI(md, n_anchors=20, seed=0)
        model.train(max_epochs=2)
        scmsi.tl.embed_and_cluster(md, model)
    assert [f"{w.category.__name__}: {w.message}" for w in caught] == []
    out = capfd.readouterr()
    for noise in ("litlogger", "GPU available", "Seed set to", "log_every_n_steps"):
        assert noise not in out.out + out.err, noise


def test_quiet_lightning_is_narrow():
    """The filters are removed after the block: the user's own Lightning logs stay."""
    log = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    before = list(log.filters)
    with quiet_lightning():
        assert len(log.filters) == len(before) + 1
    assert log.filters == before
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with quiet_lightning():
            warnings.warn("about your data", UserWarning, stacklevel=1)
    assert [str(w.message) for w in caught] == ["about your data"]


def test_log_interval_fits_small_data():
    assert log_every_n_steps(120, 256, None) == 1
    assert log_every_n_steps(100_000, 256, None) == 10
    assert log_every_n_steps(1000, 256, 0.9) == 3
