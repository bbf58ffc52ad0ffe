import numpy as np
import pytest

import scmsi
from tests._synthetic import synthetic_cite

from .conftest import FAST


@pytest.mark.slow
def test_outputs_have_expected_shapes(trained):
    model, md = trained
    n, a = md.n_obs, 40
    z = model.get_latent_representation()
    assert set(z) == {"rna", "prot"} and z["rna"].shape == (n, 10)
    coefs = model.get_coefficients(return_all=True)
    assert coefs["fused"].shape == (n, a) and coefs["rna"].shape == (n, a)
    assert (coefs["rna"] >= 0).all()
    np.testing.assert_allclose(coefs["fused"].sum(1), 1.0, rtol=1e-5)
    # anchors are never expressed by themselves
    rows = model.anchor_indices_
    assert np.all(coefs["rna"][rows, np.arange(a)] == 0)
    expr = model.get_normalized_expression()
    assert expr["rna"].shape == (n, 80) and list(expr["prot"].columns) == list(md["prot"].var_names)
    np.testing.assert_allclose(expr["rna"].sum(1), 1.0, rtol=1e-4)
    fg = model.get_protein_foreground_probability()
    assert fg.shape == (n, 8) and ((fg.values >= 0) & (fg.values <= 1)).all()
    corrected = model.get_normalized_expression(modality="rna", transform_batch="batch0")
    assert corrected.shape == (n, 80)


@pytest.mark.slow
def test_loss_decreases(trained):
    model, _ = trained
    elbo = model.history["elbo_train"].to_numpy().ravel()
    assert elbo[-1] < 0.7 * elbo[0]


@pytest.mark.slow
def test_same_seed_same_coefficients(mdata):
    def run():
        md = synthetic_cite(n_cells=240, n_genes=80, n_proteins=8, n_types=3, n_batches=2)
        scmsi.SCMSI.setup_mudata(md, layers={"rna": "counts", "prot": "counts"}, batch_key="batch")
        m = scmsi.SCMSI(md, n_anchors=40, seed=3)
        m.train(max_epochs=5, enable_progress_bar=False, early_stopping=False)
        return m.get_coefficients()

    np.testing.assert_array_equal(run(), run())


@pytest.mark.slow
def test_save_load_round_trip(trained, tmp_path):
    model, md = trained
    model.save(tmp_path / "m", overwrite=True)
    loaded = scmsi.SCMSI.load(tmp_path / "m", adata=md)
    np.testing.assert_array_equal(loaded.anchor_indices_, model.anchor_indices_)
    np.testing.assert_allclose(loaded.get_coefficients(), model.get_coefficients(), atol=1e-6)
    a = model.get_normalized_expression(modality="prot").to_numpy()
    b = loaded.get_normalized_expression(modality="prot").to_numpy()
    np.testing.assert_allclose(a, b, rtol=1e-5)


@pytest.mark.slow
def test_out_of_sample_cells_use_trained_anchors(trained):
    model, md = trained
    new = synthetic_cite(n_cells=240, n_genes=80, n_proteins=8, n_types=3, n_batches=2, seed=0)
    new = new[:50].copy()
    c_new = model.get_coefficients(new)
    np.testing.assert_allclose(c_new, model.get_coefficients(indices=np.arange(50)), atol=1e-6)


@pytest.mark.slow
def test_user_anchors_and_anndata_setup():
    md = synthetic_cite(n_cells=200, n_genes=60, n_proteins=6, n_types=3, seed=4)
    adata = md["rna"].copy()
    adata.obsm["protein"] = md["prot"].X.copy()
    scmsi.SCMSI.setup_anndata(adata, layer="counts", protein_expression_obsm_key="protein")
    model = scmsi.SCMSI(adata, anchors=adata.obs_names[:25])
    np.testing.assert_array_equal(model.anchor_indices_, np.arange(25))
    model.train(**FAST)
    assert model.get_coefficients().shape == (200, 25)
    assert set(model.get_normalized_expression()) == {"rna", "prot"}


@pytest.mark.slow
def test_training_changes_coefficients_to_separate_types():
    """Within-type affinity exceeds between-type affinity after training."""
    md = synthetic_cite(n_cells=300, n_genes=100, n_proteins=10, n_types=3, seed=5)
    scmsi.SCMSI.setup_mudata(md, layers={"rna": "counts", "prot": "counts"})
    model = scmsi.SCMSI(md, n_anchors=40, seed=0)
    model.train(max_epochs=300, enable_progress_bar=False, early_stopping=False)
    c = model.get_coefficients()
    types = md.obs["cell_type"].to_numpy()
    anchor_types = types[model.anchor_indices_]
    same = c[types[:, None] == anchor_types[None, :]].mean()
    diff = c[types[:, None] != anchor_types[None, :]].mean()
    assert same > 2 * diff


@pytest.mark.slow
@pytest.mark.parametrize("bad", ["nope", "prot2"])
def test_unknown_modality_names(trained, bad):
    model, _ = trained
    with pytest.raises(ValueError, match="Unknown modality"):
        model.get_latent_representation(modality=bad)


class _FakeTrainer:
    def __init__(self):
        self.current_epoch, self.callback_metrics, self.should_stop = 0, {}, False


class _FakeModule:
    def __init__(self):
        import torch

        self.module = type("M", (), {"decode_rebuilt": torch.tensor(False)})()


def _train(values, n_pre=0, early=True, key="elbo_validation"):
    """Feed an ELBO curve to the phase switch and the stopping rule as Lightning would."""
    from scmsi._model import _Converged, _DecodeRebuiltAfter

    switch = _DecodeRebuiltAfter(n_pre, early=early)
    rule, trainer, pl = _Converged(switch), _FakeTrainer(), _FakeModule()
    for epoch, v in enumerate(values):
        trainer.current_epoch = epoch
        switch.on_train_epoch_start(trainer, pl)
        trainer.callback_metrics = {key: v}
        switch.on_train_epoch_end(trainer, pl)
        rule.on_train_epoch_end(trainer, pl)
        if trainer.should_stop:
            return switch.switched_at, epoch
    return switch.switched_at, None


def test_training_stops_on_a_plateau_only():
    """The ELBO's relative improvement over 20 epochs decides; pre-training is not counted."""
    from scmsi._model import STOP_REL_TOL, _plateaued

    decay = 1000 + 500 * np.exp(-np.arange(400) / 30.0)  # within 1% over 20 epochs at ~118
    _, stop = _train(decay)
    assert stop is not None and 100 < stop < 140
    tol = STOP_REL_TOL
    assert _plateaued(decay[: stop + 1], rel_tol=tol) and not _plateaued(decay[:stop], rel_tol=tol)
    assert _train(1000 - np.arange(400.0))[1] is None  # steady progress: runs on
    assert _train(decay, key="elbo_train")[1] == stop  # no validation set: training ELBO


def test_pre_training_ends_when_it_has_converged():
    decay = 1000 + 500 * np.exp(-np.arange(400) / 30.0)
    switched, stop = _train(np.concatenate([decay[:300], 2 * decay]), n_pre=300)
    assert 120 < switched < 200  # pre-training converged long before its 300 epochs
    assert stop >= switched + 24  # the stopping rule counts from the switch only
    switched, _ = _train(1000 - np.arange(400.0), n_pre=100)
    assert switched == 100  # never converged: at most n_pre epochs
    switched, stop = _train(decay, n_pre=100, early=False)
    assert switched == 100  # early_stopping=False: the full pre-training
