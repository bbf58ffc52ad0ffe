"""Dataset registry: loaders read the shared data folder ($SCMSI_DATA_DIR) or download + verify."""

import shutil
from pathlib import Path

import numpy as np
import pooch
import pytest
from scipy import sparse

import scmsi
from scmsi import datasets

SHARED = Path(datasets.__file__).resolve().parents[2].parent / "shared" / "data"


def _need(*subdirs: str) -> None:
    for sub in subdirs:
        if not (SHARED / sub).is_dir():
            pytest.skip(f"data folder {SHARED / sub} is absent")


def _no_download(*args, **kwargs):
    raise AssertionError("a local copy exists; nothing should be downloaded")


@pytest.fixture(scope="module")
def local():
    """Load each dataset from the shared folder through $SCMSI_DATA_DIR, with downloads off."""
    loaded = {}

    def get(name: str):
        if name not in loaded:
            with pytest.MonkeyPatch.context() as mp:
                mp.setenv("SCMSI_DATA_DIR", str(SHARED))
                mp.setattr(pooch, "retrieve", _no_download)
                loaded[name] = scmsi.datasets.load(name)
        return loaded[name]

    return get


def test_data_dir_follows_env(monkeypatch, tmp_path):
    monkeypatch.setenv("SCMSI_DATA_DIR", str(tmp_path))
    assert datasets.data_dir() == tmp_path


def test_registry_and_unknown_name():
    assert {"inhouse_pbmc", "snare_seq", "scicar_a549"} <= set(datasets.DATASETS)
    with pytest.raises(KeyError, match="available"):
        datasets.load("nope")


@pytest.mark.slow
@pytest.mark.realdata
def test_snare_seq(local):
    _need("snare_seq")
    m = local("snare_seq")
    assert m.uns["modality_types"] == {"rna": "counts", "atac": "continuous"}
    assert m.n_obs == 1047 and m["rna"].shape == (1047, 2000) and m["atac"].shape == (1047, 19)
    assert m.obs["cell_type"].value_counts().to_dict() == {
        "H1": 385,
        "BJ": 328,
        "K562": 195,
        "GM": 139,
    }
    rna = m["rna"]
    assert sparse.issparse(rna.X) and rna.X.dtype == np.float32
    assert (
        np.array_equal(rna.X.data, np.round(rna.X.data))
        and (rna.X != rna.layers["counts"]).nnz == 0
    )
    assert np.asarray(rna.X.sum(axis=1)).min() > 0
    atac = m["atac"]
    assert atac.X.dtype == np.float32
    np.testing.assert_allclose(atac.X.sum(axis=1), 0, atol=1e-3)  # per-cell log-ratio
    topics = atac.layers["topics"]
    np.testing.assert_allclose(
        atac.X, np.log(topics) - np.log(topics).mean(1, keepdims=True), rtol=1e-4, atol=1e-4
    )
    # Barcode matching, not order: the first cell of the GEO file is a BJ fibroblast.
    assert m.obs_names[0] == "ACTTTCTAATCA" and m.obs["cell_type"].iloc[0] == "BJ"
    # The DCCA names are the right ones: fibroblast (BJ) cells express collagen, GM12878 (B)
    # cells HLA class II.
    counts = rna.to_df()
    ct = m.obs["cell_type"].to_numpy()
    for gene, line in (("COL1A2", "BJ"), ("HLA-DRA", "GM")):
        means = counts[gene].groupby(ct).mean()
        assert means.idxmax() == line, (gene, means.to_dict())


@pytest.mark.slow
@pytest.mark.realdata
def test_scicar_a549(local):
    _need("scicar_a549")
    m = local("scicar_a549")
    assert m.uns["modality_types"] == {"rna": "continuous", "atac": "accessibility"}
    assert m["rna"].shape == (2641, 1185) and m["atac"].shape == (2641, 11567)
    assert m.obs["cell_type"].value_counts().to_dict() == {"3h": 1075, "1h": 983, "0h": 583}
    assert list(m.obs["cell_type"].cat.categories) == ["0h", "1h", "3h"]
    assert sorted(set(m.obs["time"].tolist())) == [0, 1, 3]
    atac = m["atac"]
    assert isinstance(atac.X, sparse.csr_matrix) and atac.X.dtype == np.float32
    assert set(np.unique(atac.X.data).tolist()) == {1.0}
    norm = atac.layers["normalised"]
    assert sparse.issparse(norm) and norm.nnz == atac.X.nnz and norm.data.max() > 1
    rna = m["rna"]
    assert sparse.issparse(rna.X) and not np.array_equal(rna.X.data, np.round(rna.X.data))


@pytest.mark.slow
@pytest.mark.realdata
def test_inhouse_pbmc_types(local):
    _need("inhouse_pbmc")
    assert local("inhouse_pbmc").uns["modality_types"] == {"rna": "counts", "prot": "protein"}


@pytest.mark.slow
@pytest.mark.realdata
def test_scicar_rda_matches_h5mu():
    """The download route (.rda, converted with `rdata`) gives the values of the local h5mu."""
    pytest.importorskip("rdata")
    _need("scicar_a549")
    a = datasets._scicar_from_rda(SHARED / "scicar_a549" / "original" / "data_A549.rda")
    b = datasets._scicar_from_h5mu(SHARED / "scicar_a549" / "scicar_a549.h5mu")
    for x, y in zip(a[:2], b[:2], strict=True):
        assert x.obs_names.equals(y.obs_names) and x.var_names.equals(y.var_names)
        assert abs(x.X - y.X).max() < 1e-6
    assert a[2].reindex(b[2].index).tolist() == b[2].tolist()


@pytest.mark.slow
@pytest.mark.realdata
def test_download_route_verifies_and_uses_pinned_urls(monkeypatch, tmp_path):
    """Without local copies the loaders fetch pinned raw GitHub URLs with sha256 checks.

    The "download" is simulated by copying the shared folder's file of the same name.
    """
    _need("snare_seq", "scicar_a549")
    sources = {p.name: p for p in SHARED.rglob("*") if p.is_file()}
    urls = []

    def fake_retrieve(url, known_hash, fname, path, progressbar=False):
        assert url.startswith("https://raw.githubusercontent.com/") and url.endswith(fname)
        target = Path(path) / fname
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(sources[fname], target)
        assert known_hash == f"sha256:{pooch.file_hash(str(target))}"
        urls.append(url)
        return str(target)

    monkeypatch.setenv("SCMSI_DATA_DIR", str(tmp_path))
    monkeypatch.setattr(pooch, "retrieve", fake_retrieve)
    snare = datasets.snare_seq()
    assert snare.shape[0] == 1047 and len(urls) == 4
    pytest.importorskip("rdata")
    sci = datasets.scicar_a549(min_peak_fraction=0)
    assert sci["atac"].shape == (2641, 52761)
    assert urls[-1].endswith(
        "sqjin/scAI/9bd4bdbe9daa15399d2b49eb376cabaf40aa07ca/data/data_A549.rda"
    )


@pytest.mark.slow
@pytest.mark.realdata
def test_eccite_pbmc(local):
    _need("eccite_pbmc")
    m = local("eccite_pbmc")
    assert {k: a.shape for k, a in m.mod.items()} == {
        "rna": (500, 19521),
        "prot": (500, 49),
        "hto": (500, 4),
    }
    assert m.obs["hashtag"].value_counts().to_dict() == {
        "HTO44_5P": 137,
        "HTO28_5P": 136,
        "HTO29_5P": 127,
        "HTO30_5P": 100,
    }
    assert not m["rna"].var_names.str.startswith("hg19_").any()
    x = m["rna"].layers["counts"]
    assert sparse.issparse(x) and np.array_equal(x.data, np.round(x.data))


@pytest.mark.slow
@pytest.mark.realdata
def test_eccite_download_route_matches_h5mu(monkeypatch, tmp_path):
    """Without the h5mu the pinned .rda is fetched (simulated: copied) and gives the same data."""
    pytest.importorskip("rdata")
    _need("eccite_pbmc")
    rda = SHARED / "eccite_pbmc" / "original" / "CITEseq_example.rda"
    urls = []

    def fake_retrieve(url, known_hash, fname, path, progressbar=False):
        target = Path(path) / fname
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(rda, target)
        assert known_hash == f"sha256:{pooch.file_hash(str(target))}"
        urls.append(url)
        return str(target)

    monkeypatch.setenv("SCMSI_DATA_DIR", str(tmp_path))
    monkeypatch.setattr(pooch, "retrieve", fake_retrieve)
    got = datasets.eccite_pbmc()
    assert urls == [
        "https://raw.githubusercontent.com/SydneyBioX/CiteFuse/"
        "b6075864d8930967946022fdfbbf57a6a120061f/data/CITEseq_example.rda"
    ]
    monkeypatch.setenv("SCMSI_DATA_DIR", str(SHARED))
    ref = datasets.eccite_pbmc()
    for k in ("rna", "prot", "hto"):
        assert got[k].var_names.equals(ref[k].var_names)
        assert abs(got[k].X - ref[k].X).max() == 0
    assert (got.obs["hashtag"] == ref.obs["hashtag"]).all()
