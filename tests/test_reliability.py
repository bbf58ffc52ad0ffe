"""Bad input, interruptions and reloads (issue 21): each case gets a named error or warning."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import anndata as ad
import mudata
import numpy as np
import pandas as pd
import pytest
import torch
from lightning.pytorch.callbacks import Callback
from mudata import MuData
from scipy import sparse

import scmsi
from scmsi.cli import main
from tests._synthetic import synthetic_cite, synthetic_visium

TINY = {"n_anchors": 12, "n_hidden": 16, "n_latent": 4}
QUICK = {"enable_progress_bar": False, "early_stopping": False}
LAYERS = {"rna": "counts", "prot": "counts"}
SRC = str(Path(scmsi.__file__).parents[1])


def _cite(n_cells=80, **kw):
    return synthetic_cite(n_cells=n_cells, n_genes=30, n_proteins=5, n_types=3, seed=0, **kw)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    md = _cite()
    scmsi.SCMSI.setup_mudata(md, layers=LAYERS)
    model = scmsi.SCMSI(md, **TINY)
    model.train(max_epochs=3, **QUICK)
    path = tmp_path_factory.mktemp("model") / "m"
    model.save(str(path), save_anndata=False)
    return str(path)


def _permuted_rna(md, seed=1):
    perm = np.random.default_rng(seed).permutation(md["rna"].n_vars)
    return MuData({"rna": md["rna"][:, perm].copy(), "prot": md["prot"].copy()})


# ------------------------------------------------------------------------------ loading
def test_load_reorders_features_says_so_and_gives_the_same_outputs(saved):
    md = _cite()
    ref = scmsi.SCMSI.load(saved, adata=md)
    z, c = ref.get_latent_representation(), ref.get_coefficients()
    shuffled = _permuted_rna(md)
    before = shuffled["rna"].var_names.copy()
    with pytest.warns(UserWarning, match="'rna'.*another order.*reordered"):
        model = scmsi.SCMSI.load(saved, adata=shuffled)
    assert shuffled["rna"].var_names.equals(before)  # the user's data are not modified
    for m in ("rna", "prot"):
        np.testing.assert_allclose(model.get_latent_representation()[m], z[m], atol=1e-5)
    np.testing.assert_allclose(model.get_coefficients(), c, atol=1e-5)


def test_load_query_data_says_features_were_reordered(saved):
    with pytest.warns(UserWarning, match="another order"):
        scmsi.SCMSI.load_query_data(_permuted_rna(_cite()), saved)


def test_load_refuses_other_features_naming_the_missing_ones(saved):
    md = _cite()
    rna = md["rna"].copy()
    rna.var_names = [f"x{i}" if i < 3 else n for i, n in enumerate(rna.var_names)]
    other = MuData({"rna": rna, "prot": md["prot"].copy()})
    with pytest.raises(ValueError, match=r"lacks 3 of the 30 features.*'gene0', 'gene1', 'gene2'"):
        scmsi.SCMSI.load(saved, adata=other)


def test_load_anndata_for_a_mudata_model_is_a_clear_error(saved):
    with pytest.raises(TypeError, match="set up with a MuData"):
        scmsi.SCMSI.load(saved, adata=_cite()["rna"].copy())


# ------------------------------------------------------------------------------ modality kinds
def _spatial_like(n=60, seed=0, declare=("rna", "image", "niche")):
    """A MuData laid out as `spatial.to_mudata` writes it: counts + two continuous blocks."""
    rng = np.random.default_rng(seed)
    cells = [f"spot{i}" for i in range(n)]
    domain = np.repeat(np.arange(3), n // 3)
    mu = np.exp(rng.normal(0, 1, (3, 25)))[domain] * 4
    mods = {
        "rna": ad.AnnData(
            sparse.csr_matrix(rng.poisson(mu).astype(np.float32)),
            obs=pd.DataFrame(index=cells),
            var=pd.DataFrame(index=[f"g{j}" for j in range(25)]),
        ),
        "image": ad.AnnData(
            (rng.normal(0, 1, (n, 6)) + domain[:, None]).astype(np.float32),
            obs=pd.DataFrame(index=cells),
            var=pd.DataFrame(index=[f"f{j}" for j in range(6)]),
        ),
        "niche": ad.AnnData(
            rng.normal(0, 1, (n, 4)).astype(np.float32),
            obs=pd.DataFrame(index=cells),
            var=pd.DataFrame(index=[f"n{j}" for j in range(4)]),
        ),
    }
    md = MuData(mods)
    md.obs["domain"] = pd.Categorical([f"D{d}" for d in domain])
    kinds = {"rna": "counts", "image": "continuous", "niche": "continuous"}
    md.uns["modality_types"] = {m: kinds[m] for m in declare}
    return md


def test_setup_reads_modality_types_from_uns():
    md = _spatial_like()
    scmsi.SCMSI.setup_mudata(md)
    model = scmsi.SCMSI(md, **TINY)
    assert model.modality_names == ["rna", "image", "niche"]


def test_setup_name_guess_and_left_out_modalities_are_named_in_warnings():
    md = _cite()
    del md.uns["modality_types"]
    with pytest.warns(UserWarning, match="guessed from their names"):
        scmsi.SCMSI.setup_mudata(md, layers=LAYERS)
    md = _spatial_like(declare=("rna", "image"))
    with pytest.warns(UserWarning, match=r"\['niche'\].*left out"):
        scmsi.SCMSI.setup_mudata(md)


def test_to_mudata_writes_modality_types():
    mdata, _ = scmsi.spatial.to_mudata(synthetic_visium(n_genes=30), n_top_genes=None)
    assert set(mdata.uns["modality_types"]) == set(mdata.mod) == {"rna", "image", "niche"}


# ------------------------------------------------------------------------------ CLI
def _run(argv, capsys):
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def test_cli_fit_uses_every_modality_and_writes_pdf_and_model_atomically(tmp_path, capsys):
    src = tmp_path / "spatial.h5mu"
    _spatial_like().write_h5mu(src)
    out = tmp_path / "res" / "out.h5mu"
    fig, model_dir = tmp_path / "res" / "umap.pdf", tmp_path / "res" / "model"
    argv = ["fit", src, "-o", out, "--figure", fig, "--save-model", model_dir]
    rc, stdout, err = _run([*argv, "--n-anchors", 10, "--max-epochs", 2], capsys)
    assert rc == 0, err
    for m in ("rna (counts", "image (continuous", "niche (continuous"):
        assert m in stdout
    assert mudata.read_h5mu(out).obsm["X_scmsi"].shape[0] == 60
    assert fig.read_bytes()[:4] == b"%PDF"
    assert (model_dir / "model.pt").exists()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no temp left


def _errors(tmp_path):
    src = tmp_path / "in.h5mu"
    md = _cite(n_cells=40)
    md.write_h5mu(src)
    undeclared = tmp_path / "undeclared.h5mu"
    _spatial_like(declare=("rna", "image")).write_h5mu(undeclared)
    h5ad = tmp_path / "in.h5ad"
    md["rna"].write_h5ad(h5ad)
    bad = tmp_path / "bad.h5mu"
    bad.write_bytes(b"not hdf5")
    out = tmp_path / "o" / "r.h5mu"
    return {
        "does not exist": ["fit", tmp_path / "nope.h5mu", "-o", out],
        "expected a MuData": ["fit", tmp_path / "x.csv", "-o", out],
        "cannot read": ["fit", bad, "-o", out],
        "--protein-obsm-key": ["fit", h5ad, "-o", out],
        "name the file": ["fit", src, "-o", tmp_path / "r.txt"],
        "cannot write in": ["fit", src, "-o", src / "r.h5mu"],  # a file as the folder
        "unknown image format": ["fit", src, "-o", out, "--figure", tmp_path / "f.xyz"],
        "--label-key 'nope'": ["fit", src, "-o", out, "--label-key", "nope"],
        "--batch-key 'nope'": ["fit", src, "-o", out, "--batch-key", "nope"],
        "no layer 'raw'": ["fit", src, "-o", out, "--layers", "rna=raw"],
        "unknown type 'rnaa'": ["fit", src, "-o", out, "--modalities", "rna=rnaa"],
        "would be left out": ["fit", undeclared, "-o", out],
        "--max-epochs must be": ["fit", src, "-o", out, "--max-epochs", 0],
    }


def test_cli_input_errors_are_one_line_before_training(tmp_path, capsys, monkeypatch):
    def no_training(*a, **k):
        raise AssertionError("trained before the checks")

    monkeypatch.setattr(scmsi.SCMSI, "train", no_training)
    for message, argv in _errors(tmp_path).items():
        if (tmp_path / "x.csv").exists() is False:
            (tmp_path / "x.csv").write_text("a,b\n")
        rc, _, err = _run(argv, capsys)
        assert rc == 2, (message, err)
        assert err.startswith("scmsi: error: ") and err.count("\n") == 1, err
        assert message in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()
    with pytest.raises(Exception, match="does not exist"):
        main(["fit", str(tmp_path / "nope.h5mu"), "-o", str(tmp_path / "o.h5mu"), "--debug"])


def test_cli_reads_an_anndata_with_protein_in_obsm_as_totalvi(tmp_path):
    import argparse

    from scmsi.cli import _read_input

    md = _cite(n_cells=40)
    adata = md["rna"].copy()
    adata.obsm["protein_expression"] = md["prot"].to_df(layer="counts")
    adata.obs["cell_type"] = md.obs["cell_type"].to_numpy()
    path = tmp_path / "cite.h5ad"
    adata.write_h5ad(path)
    args = argparse.Namespace(input=path, modalities=None, protein_obsm_key="protein_expression")
    out = _read_input(args)
    assert out.uns["modality_types"] == {"rna": "counts", "prot": "protein"}
    assert out["prot"].var_names.equals(md["prot"].var_names)
    np.testing.assert_array_equal(out["prot"].X, md["prot"].layers["counts"])
    assert "cell_type" in out.obs


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_cli_unwritable_output_fails_before_training(tmp_path, capsys):
    src = tmp_path / "in.h5mu"
    _cite(n_cells=40).write_h5mu(src)
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        t0 = time.perf_counter()
        rc, _, err = _run(["fit", src, "-o", locked / "r.h5mu"], capsys)
    finally:
        locked.chmod(0o700)
    assert rc == 2 and "permission denied" in err and time.perf_counter() - t0 < 5


def test_cli_ctrl_c_exits_130_and_writes_nothing(tmp_path, capsys, monkeypatch):
    src = tmp_path / "in.h5mu"
    _cite(n_cells=60).write_h5mu(src)
    out = tmp_path / "o" / "r.h5mu"
    argv = ["fit", src, "-o", out, "--layers", "rna=counts,prot=counts", "--n-anchors", 10]

    def interrupted(self, *a, **k):
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(scmsi.SCMSI, "train", interrupted)
        rc, _, err = _run([*argv, "--max-epochs", 1], capsys)
    assert rc == 130 and err.count("\n") == 1 and "Traceback" not in err
    assert not out.parent.exists() or not list(out.parent.iterdir())

    def half_written(self, path, *a, **k):  # Ctrl-C in the middle of writing the results
        Path(path).write_bytes(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(MuData, "write_h5mu", half_written)
    rc, _, err = _run([*argv, "--max-epochs", 1], capsys)
    assert rc == 130
    assert not list(out.parent.iterdir())  # neither the output nor a temporary file


def _timed(args):
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, *args],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": SRC},
        check=True,
    )
    return time.perf_counter() - t0, proc.stdout


def test_help_is_fast_and_imports_nothing_heavy():
    for args in (["--help"], ["fit", "--help"], ["demo", "--help"]):
        elapsed, out = _timed(["-m", "scmsi.cli", *args])
        assert "usage: scmsi" in out
        assert elapsed < 3, f"scmsi {' '.join(args)} took {elapsed:.2f} s"  # about 0.25 s
    code = (
        "import sys, scmsi, scmsi.cli; scmsi.cli._parser();"
        "print(sorted({'torch', 'scvi', 'scanpy', 'mudata'} & set(sys.modules)))"
    )
    assert _timed(["-c", code])[1].strip() == "[]"


def test_lazy_package_keeps_its_attributes():
    # this process imported scmsi through the lazy __init__ (a fresh one would take 30 s here)
    from scmsi import SCMSI

    assert scmsi.SCMSI is SCMSI
    assert {"tl", "pl", "pp", "datasets", "spatial", "SCMSI"} <= set(dir(scmsi))
    assert all(m.__name__.startswith("scmsi.") for m in (scmsi.tl, scmsi.pl, scmsi.pp))
    assert scmsi.datasets.load and scmsi.spatial.to_mudata and scmsi.__version__
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        scmsi.nope  # noqa: B018


# ------------------------------------------------------------------------------ data checks
def test_differing_barcodes_are_named_as_such_not_mosaic():
    md = _cite(n_cells=40)
    prot = md["prot"].copy()
    prot.obs_names = [f"{c}-1" for c in prot.obs_names]
    bad = MuData({"rna": md["rna"].copy(), "prot": prot})
    bad.uns["modality_types"] = md.uns["modality_types"]
    with pytest.raises(ValueError, match=r"barcodes differ.*40 cells.*only 0 names in common"):
        scmsi.SCMSI.setup_mudata(bad, layers=LAYERS)


def test_mosaic_advice_works_when_followed():
    md = _cite(n_cells=60)
    part = MuData({"rna": md["rna"].copy(), "prot": md["prot"][:45].copy()})
    part.uns["modality_types"] = md.uns["modality_types"]
    with pytest.raises(ValueError, match="pad_modalities") as e:
        scmsi.SCMSI.setup_mudata(part, layers=LAYERS)
    padded = scmsi.pp.pad_modalities(part)  # the advice, as printed
    scmsi.SCMSI.setup_mudata(padded, layers=LAYERS)
    keep = str(e.value).split("every modality has: `")[1].split("`")[0]
    scope = {"mdata": part}
    exec(keep, {}, scope)  # the other advice, as printed
    assert scope["mdata"].n_obs == 45
    scmsi.SCMSI.setup_mudata(scope["mdata"], layers=LAYERS)


def test_all_zero_or_constant_modality_is_refused():
    md = _cite(n_cells=40)
    md["prot"].layers["counts"] = np.zeros_like(md["prot"].layers["counts"])
    with pytest.raises(ValueError, match="'prot' is all zeros"):
        scmsi.SCMSI.setup_mudata(md, layers=LAYERS)
    md = _spatial_like()
    md["image"].X = np.ones_like(md["image"].X)
    with pytest.raises(ValueError, match="'image': no feature varies"):
        scmsi.SCMSI.setup_mudata(md)


def test_unknown_layers_key_is_an_error():
    with pytest.raises(KeyError, match=r"\['RNA'\].*not modalities of the MuData"):
        scmsi.SCMSI.setup_mudata(_cite(n_cells=40), layers={"RNA": "counts"})


def test_batch_column_types():
    md = _cite(n_cells=40)
    md.obs["b"] = np.tile([0.0, 1.0], 20)
    with pytest.raises(TypeError, match=r"floats.*astype\(int\)\.astype\(str\)"):
        scmsi.SCMSI.setup_mudata(md, layers=LAYERS, batch_key="b")
    md.obs["b"] = md.obs["b"].astype(int).astype(str)  # the advice, as printed
    scmsi.SCMSI.setup_mudata(md, layers=LAYERS, batch_key="b")
    md.obs["i"] = np.tile([3, 7], 20)  # integers are accepted
    scmsi.SCMSI.setup_mudata(md, layers=LAYERS, batch_key="i")
    md.obs["f"] = np.random.default_rng(0).normal(size=40)
    with pytest.raises(TypeError, match="non-integer floats"):
        scmsi.SCMSI.setup_mudata(md, layers=LAYERS, batch_key="f")
    md.obs["mixed"] = pd.Series([1, "a"] * 20, index=md.obs_names, dtype=object)
    with pytest.raises(TypeError, match="mixes numbers and strings"):
        scmsi.SCMSI.setup_mudata(md, layers=LAYERS, batch_key="mixed")
    md.obs["cell"] = md.obs_names.astype(str)
    with pytest.raises(ValueError, match="different value in every cell"):
        scmsi.SCMSI.setup_mudata(md, layers=LAYERS, batch_key="cell")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"max_epochs": 0}, "max_epochs must be at least 1"),
        ({"max_epochs": -1}, "max_epochs must be at least 1"),
        ({"max_epochs": 2, "train_size": 0.0}, r"train_size must lie in \(0, 1\]"),
        ({"max_epochs": 2, "train_size": 1.5}, r"train_size must lie in \(0, 1\]"),
        ({"max_epochs": 2, "train_size": 1.0, "early_stopping": True}, "no validation cells"),
        ({"max_epochs": 2, "batch_size": 1}, "batch_size must be at least 2"),
    ],
)
def test_degenerate_training_settings(kwargs, match):
    md = _cite(n_cells=40)
    scmsi.SCMSI.setup_mudata(md, layers=LAYERS)
    model = scmsi.SCMSI(md, **TINY)
    with pytest.raises(ValueError, match=match):
        model.train(**{"enable_progress_bar": False, **kwargs})
    assert not model.is_trained_


def test_five_cells_is_a_named_error():
    md = _cite(n_cells=5)
    scmsi.SCMSI.setup_mudata(md, layers=LAYERS)
    with pytest.raises(ValueError, match="n_anchors=12 but the data have only 5 cells"):
        scmsi.SCMSI(md, n_anchors=12)
    model = scmsi.SCMSI(md)  # default anchors fit, but 5 cells cannot train
    with pytest.raises(ValueError, match="Only 5 cells: too few"):
        model.train(max_epochs=2, **QUICK)


# ------------------------------------------------------------------------------ training faults
class _AtEpoch(Callback):
    def __init__(self, epoch, action):
        self.epoch, self.action, self.states = epoch, action, {}

    def on_train_epoch_end(self, trainer, pl_module):
        state = pl_module.module.state_dict()
        self.states[trainer.current_epoch] = {k: v.clone() for k, v in state.items()}

    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch == self.epoch:
            self.action(pl_module)


def _small_model():
    md = _cite(n_cells=60)
    scmsi.SCMSI.setup_mudata(md, layers=LAYERS)
    return scmsi.SCMSI(md, **TINY)


def _assert_state(model, state):
    for k, v in model.module.state_dict().items():
        if k != "decode_rebuilt":
            torch.testing.assert_close(v, state[k])


@pytest.mark.parametrize("how", ["sigint", "raise"])
def test_ctrl_c_keeps_the_last_completed_epoch(how):
    def stop(_):
        if how == "sigint":  # as Ctrl-C in a terminal
            os.kill(os.getpid(), signal.SIGINT)
        else:
            raise KeyboardInterrupt

    model = _small_model()
    cb = _AtEpoch(2, stop)
    handler = signal.getsignal(signal.SIGINT)
    with pytest.warns(UserWarning, match=r"interrupted.*last completed epoch \(2 of 6\)"):
        model.train(max_epochs=6, callbacks=[cb], **QUICK)
    assert model.training_interrupted_ and model.is_trained_
    assert signal.getsignal(signal.SIGINT) is handler
    _assert_state(model, cb.states[1])
    assert np.isfinite(model.get_latent_representation(modality="rna")).all()


def test_diverging_loss_stops_with_a_named_error():
    def poison(pl_module):
        with torch.no_grad():
            next(pl_module.module.parameters()).fill_(float("nan"))

    model = _small_model()
    cb = _AtEpoch(1, poison)
    with pytest.raises(FloatingPointError, match=r"diverged.*plan_kwargs=\{'lr'"):
        model.train(max_epochs=4, callbacks=[cb], **QUICK)
    _assert_state(model, cb.states[0])  # the last epoch with a finite loss
