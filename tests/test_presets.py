"""Named objectives: the paper's as published, and the default's components."""

import warnings
from dataclasses import replace

import numpy as np
import pytest
import torch

import scmsi
from scmsi._objective import PRESETS
from scmsi._selfexpression import (
    SelfExpressiveNetwork,
    SoftmaxSelfExpression,
    directed_kl,
    neighbourhood_capture,
    teaching_gate,
)


def _model(mdata, **kwargs):
    scmsi.SCMSI.setup_mudata(mdata, layers={"rna": "counts", "prot": "counts"}, batch_key="batch")
    return scmsi.SCMSI(mdata, n_anchors=30, seed=0, **kwargs)


def _terms(model, mdata):
    mod = model.module
    mod.eval()
    tensors = next(iter(model._make_data_loader(adata=mdata, batch_size=64)))
    with torch.no_grad():
        inf = mod.inference(**mod._get_inference_input(tensors), use_mean=True)
        gen = mod.generative(**mod._get_generative_input(tensors, inf))
        out = mod.loss(tensors, inf, gen)
    return inf, out


def test_paper_preset_is_the_published_objective(mdata):
    model = _model(mdata, objective="paper")
    assert model.fusion == "mean"
    for senet in model.module.senets.values():
        assert isinstance(senet, SelfExpressiveNetwork) and not senet.ceiling
    inf, out = _terms(model, mdata)
    se = 0.0
    for m in ("rna", "prot"):
        c = inf["coef"][m]
        err = (inf["z"][m] - c @ inf["z_anchor"][m]).pow(2).sum(-1)  # plain error
        se = se + err + 0.9 * c.abs().sum(-1) + 0.05 * c.pow(2).sum(-1)  # plain elastic net
    contrast = (inf["coef"]["rna"] - inf["coef"]["prot"]).pow(2).sum(-1)
    assert torch.allclose(out.extra_metrics["self_expression"], se.mean(), rtol=1e-5)
    assert torch.allclose(out.extra_metrics["contrastive"], contrast.mean(), rtol=1e-5)
    rec = sum(v.mean() for v in out.reconstruction_loss.values())
    kl = sum(v.mean() for v in out.kl_local.values())
    expected = rec + kl + se.mean() + 0.1 * contrast.mean()
    assert torch.allclose(out.loss, expected, rtol=1e-5)


def test_default_preset_components(mdata):
    model = _model(mdata)
    assert model.preset == "default" and model.fusion == "reliability"
    assert model.objective == replace(PRESETS["default"], lambda_cross=0.0)
    assert all(isinstance(s, SoftmaxSelfExpression) for s in model.module.senets.values())
    assert model.module.objective.anchor_grad  # without it the latents fail on synthetic RNA + ATAC
    inf, out = _terms(model, mdata)
    kappa = neighbourhood_capture(inf["z"], inf["z_anchor"], inf["coef"])
    pairs = (("rna", "prot"), ("prot", "rna"))  # (teacher, student)
    expected = sum(
        teaching_gate(kappa, s, t) * directed_kl(inf["logit"][s], inf["logit"][t]) for s, t in pairs
    ).mean()
    assert torch.allclose(out.extra_metrics["contrastive"], expected, rtol=1e-5)
    # no elastic net on distributions: the self-expressive term is the error alone
    se = 0.0
    for m in ("rna", "prot"):
        za = inf["z_anchor"][m]
        se = se + (inf["z"][m] - inf["z_hat"][m]).pow(2).sum(-1) / za.var(0).mean()
    assert torch.allclose(out.extra_metrics["self_expression"], se.mean(), rtol=1e-5)


def test_anchors_can_be_encoded_without_gradient(mdata):
    model = _model(mdata, anchor_grad=False)
    mod = model.module
    mod.train()
    tensors = next(iter(model._make_data_loader(adata=mdata, batch_size=64)))
    inf = mod.inference(**mod._get_inference_input(tensors))
    assert not inf["z_anchor"]["rna"].requires_grad
    assert inf["z"]["rna"].requires_grad
    paper = _model(mdata.copy(), objective="paper")
    paper.module.train()
    inf = paper.module.inference(**paper.module._get_inference_input(tensors))
    assert inf["z_anchor"]["rna"].requires_grad


def test_preset_options_can_be_overridden_and_are_checked(mdata):
    model = _model(mdata, objective="paper", fusion="product", lambda_contrast=0.0)
    assert model.fusion == "product" and model.module.objective.lambda_contrast == 0.0
    with pytest.raises(ValueError, match="papr"):
        _model(mdata.copy(), objective="papr")
    with pytest.raises(ValueError, match="softmax"):
        _model(mdata.copy(), coefficients="relu", agreement="kl")
    with pytest.raises(ValueError, match="'gamma' is an option of coefficients='relu'"):
        _model(mdata.copy(), gamma=2.0)  # the default's softmax coefficients ignore it
    fused = model.get_coefficients()
    np.testing.assert_allclose(fused.sum(1), 1.0, rtol=1e-5)


def test_former_names_still_work_and_warn(mdata):
    with pytest.warns(FutureWarning, match="objective="):
        model = _model(mdata, preset="paper")
    assert model.preset == "paper" and model.objective.fusion == "mean"
    with pytest.warns(FutureWarning, match="paper_local"):
        model = _model(mdata.copy(), objective="v0.1")
    assert model.preset == "paper_local"
    assert model.objective.options == PRESETS["paper_local"].options


def test_the_objective_survives_save_and_load(mdata, tmp_path):
    model = _model(mdata, objective="paper", fusion="product", lambda_contrast=0.5)
    model.save(tmp_path / "m")
    loaded = scmsi.SCMSI.load(tmp_path / "m", adata=mdata)
    assert loaded.objective == model.objective and loaded.preset == "paper"
    assert loaded.module.objective == model.module.objective


def test_models_saved_before_the_objective_still_load(mdata):
    """Their init params name every former keyword, also the ignored ReLU defaults."""
    from scmsi._model import _FROM_STATE

    former = dict(preset="default", n_embed=64, lambda_se=1.0, lambda_contrast=None,
                  lambda_cross=0.0, gamma=1.0, lam=0.9, locality=None, coefficients=None,
                  ceiling=None, agreement=None, scale_free=None, anchor_grad=None,
                  fusion=None, embedding=None)  # fmt: skip
    token = _FROM_STATE.set(True)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", FutureWarning)
            model = _model(mdata, **former)
    finally:
        _FROM_STATE.reset(token)
    assert model.objective == replace(PRESETS["default"], lambda_cross=0.0)
