"""scmsi._objective: the typed objective, its presets, overrides and checks (no model)."""

import dataclasses
import pickle
import subprocess
import sys
import warnings

import pytest

from scmsi._objective import (
    OPTION_NAMES,
    PRESET_NAMES,
    PRESETS,
    Objective,
    ReluOptions,
    SoftmaxOptions,
    resolve,
)


def test_presets_are_typed_frozen_objectives():
    assert set(PRESETS) == {"default", "paper", "paper_local"}
    for name, obj in PRESETS.items():
        assert isinstance(obj, Objective), name
        with pytest.raises(dataclasses.FrozenInstanceError):
            obj.fusion = "mean"  # type: ignore[misc]
    assert PRESETS["default"] == Objective()
    assert isinstance(PRESETS["default"].options, SoftmaxOptions)
    paper, local = PRESETS["paper"], PRESETS["paper_local"]
    assert paper.options == ReluOptions() and not paper.scale_free
    assert local.options == ReluOptions(locality=True, ceiling=True) and local.scale_free
    assert dataclasses.replace(local, scale_free=False, options=ReluOptions()) == paper


def test_the_former_values_of_the_presets():
    """The presets' values (the default's agreement and fusion are this round's)."""
    expected = {
        "default": dict(coefficients="softmax", agreement="directed", lambda_contrast=1.0,
                        scale_free=True, anchor_grad=True, fusion="reliability",
                        embedding="latent", epoch_budget=200),
        "paper_local": dict(coefficients="relu", agreement="squared", lambda_contrast=0.1,
                            locality=True, ceiling=True, scale_free=True, anchor_grad=True,
                            fusion="mean", embedding="pca", epoch_budget=400),
        "paper": dict(coefficients="relu", agreement="squared", lambda_contrast=0.1,
                      locality=False, ceiling=False, scale_free=False, anchor_grad=True,
                      fusion="mean", embedding="pca", epoch_budget=400),
    }  # fmt: skip
    for name, values in expected.items():
        flat = PRESETS[name].to_dict()
        assert {k: flat[k] for k in values} == values, name
        assert flat["lambda_se"] == 1.0 and flat["lambda_cross"] is None
    for name in ("paper", "paper_local"):
        flat = PRESETS[name].to_dict()
        assert (flat["gamma"], flat["lam"], flat["n_embed"]) == (1.0, 0.9, 64)
    assert PRESETS["default"].perplexity == 10.0


def test_overrides_replace_the_presets_values():
    obj = resolve("paper", fusion="product", lambda_contrast=0.0, gamma=2.0)
    assert (obj.fusion, obj.lambda_contrast, obj.gamma) == ("product", 0.0, 2.0)
    assert obj.coefficients == "relu" and obj.lam == 0.9
    assert resolve("default", lambda_contrast=None) == PRESETS["default"]  # None keeps
    assert resolve(PRESETS["paper"]) == PRESETS["paper"]
    switched = resolve("default", coefficients="relu", agreement="squared", locality=True)
    assert switched.options == ReluOptions(locality=True)
    assert resolve("paper", coefficients="softmax", perplexity=5.0).options == SoftmaxOptions(5.0)


def test_an_objective_round_trips_as_a_dict():
    obj = resolve("paper_local", lambda_cross=1.0, n_embed=8)
    assert resolve(obj.to_dict()) == obj
    assert resolve({"preset": "paper", **obj.to_dict()}) == obj
    assert pickle.loads(pickle.dumps(obj)) == obj
    assert set(obj.to_dict()) == set(OPTION_NAMES) - {"perplexity"}


@pytest.mark.parametrize("option", ["gamma", "lam", "locality", "ceiling", "n_embed"])
def test_an_option_the_coefficients_ignore_cannot_be_set(option):
    value = 64 if option == "n_embed" else True if option in ("locality", "ceiling") else 1.0
    with pytest.raises(ValueError, match=f"'{option}' is an option of coefficients='relu'"):
        resolve("default", **{option: value})
    with pytest.raises(ValueError, match="'perplexity' is an option of coefficients='softmax'"):
        resolve("paper", perplexity=5.0)
    with pytest.raises(ValueError, match="options: ReluOptions"):
        Objective(options=ReluOptions())
    with pytest.raises(AttributeError, match=f"'{option}' is an option"):
        getattr(PRESETS["default"], option)


def test_errors_name_the_option():
    cases = {
        "fusion": dict(fusion="sum"),
        "embedding": dict(embedding="umap"),
        "coefficients": dict(coefficients="sigmoid"),
        "agreement": dict(agreement="cosine"),
        "lambda_contrast": dict(lambda_contrast=-1.0),
        "epoch_budget": dict(epoch_budget=0),
    }
    for option, kwargs in cases.items():
        with pytest.raises(ValueError, match=option):
            resolve("default", **kwargs)
    with pytest.raises(ValueError, match="agreement='directed'"):
        resolve("default", coefficients="relu")
    with pytest.raises(ValueError, match="agreement='kl'"):
        resolve("default", agreement="kl", coefficients="relu")
    with pytest.raises(TypeError, match="lambda_contrastt"):
        resolve("default", lambda_contrastt=1.0)
    with pytest.raises(ValueError, match="papr"):
        resolve("papr")


def test_the_former_preset_name_warns_once_and_resolves():
    with pytest.warns(FutureWarning, match="paper_local") as record:
        obj = resolve("v0.1")
    assert len(record) == 1 and obj == PRESETS["paper_local"]
    assert "v0.1" in PRESET_NAMES
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        resolve("paper_local")


def test_the_objective_module_is_light():
    """The CLI imports its names for --help: no torch, scvi-tools or numpy behind them."""
    code = (
        "import sys, scmsi._objective; print(sorted({'torch', 'scvi', 'numpy'} & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
