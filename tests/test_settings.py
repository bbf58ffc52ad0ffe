import pytest
import torch
from lightning.pytorch.callbacks import Callback

import scmsi
from scmsi import _settings
from scmsi._settings import Settings, available_cores, default_threads
from tests._synthetic import synthetic_cite

from .conftest import FAST


class _RecordThreads(Callback):
    def __init__(self):
        self.seen: list[int] = []

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.seen.append(torch.get_num_threads())


@pytest.fixture
def restore_threads():
    before, n = scmsi.settings.num_threads, torch.get_num_threads()
    yield
    scmsi.settings.num_threads = before
    torch.set_num_threads(n)


def _train_threads(md, **kwargs) -> list[int]:
    scmsi.SCMSI.setup_mudata(md, layers={"rna": "counts", "prot": "counts"})
    model = scmsi.SCMSI(md, n_anchors=30, seed=0)
    rec = _RecordThreads()
    model.train(**{**FAST, "max_epochs": 2}, callbacks=[rec], **kwargs)
    return rec.seen


def test_num_threads_validated():
    s = Settings()
    for bad in (0, -1, 1.5, True, "2"):
        with pytest.raises(ValueError, match="num_threads"):
            s.num_threads = bad
    s.num_threads = 1
    assert s.num_threads == 1


def test_available_cores_bounded():
    assert 1 <= available_cores() <= (torch.get_num_threads() + 64)


def test_training_uses_configured_threads_whatever_was_set_before(restore_threads):
    md = synthetic_cite(n_cells=120, n_genes=40, n_proteins=5, n_types=3, seed=0)
    scmsi.settings.num_threads = 1
    torch.set_num_threads(2)  # what numba leaves behind after preprocessing
    assert _train_threads(md) == [1, 1]
    scmsi.settings.num_threads = None
    torch.set_num_threads(2)
    assert set(_train_threads(md)) == {default_threads(md.n_obs)} == {1}  # small data: 1


def test_default_threads_by_size(monkeypatch):
    monkeypatch.setattr(_settings, "available_cores", lambda: 8)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    small, large = 1_000, _settings.MIN_CELLS_PER_EXTRA_THREAD
    assert default_threads(small) == 1 and default_threads(large) == default_threads() == 8
    monkeypatch.setenv("OMP_NUM_THREADS", "3")  # a scheduler's limit is kept
    assert default_threads(large) == 3 and default_threads(small) == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "not a number")
    assert default_threads(large) == 8


def test_inference_resets_threads(restore_threads, trained):
    model, _ = trained
    scmsi.settings.num_threads = 1
    torch.set_num_threads(2)
    model.get_latent_representation()
    assert torch.get_num_threads() == 1


@pytest.mark.realdata
def test_threads_after_real_preprocessing(restore_threads):
    """numba (seurat_v3 HVG selection in the loader) resets the OpenMP pool; training resets it."""
    scmsi.settings.num_threads = 1
    torch.set_num_threads(1)
    md = scmsi.datasets.inhouse_pbmc()
    sub = md[:300].copy()
    layers = {"rna": "counts", "prot": "counts"}
    scmsi.SCMSI.setup_mudata(sub, modalities={"rna": "counts", "prot": "protein"}, layers=layers)
    model = scmsi.SCMSI(sub, n_anchors=30, seed=0)
    rec = _RecordThreads()
    model.train(max_epochs=1, enable_progress_bar=False, early_stopping=False, callbacks=[rec])
    assert rec.seen == [1]
