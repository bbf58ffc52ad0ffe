"""scmsi.pl: the figures draw what they are given and name what is missing."""

import anndata as ad
import numpy as np
import pandas as pd
import pytest

import scmsi


def _embedded(n=40):
    rng = np.random.default_rng(0)
    a = ad.AnnData(obs=pd.DataFrame(index=[f"c{i}" for i in range(n)]))
    a.obsm["X_umap"] = rng.normal(size=(n, 2)).astype(np.float32)
    a.obs["scmsi_leiden"] = pd.Categorical(rng.integers(0, 3, n).astype(str))
    a.obs["score"] = rng.random(n)
    return a


def test_umap_draws_one_panel_per_key():
    fig = scmsi.pl.umap(_embedded(), color=["scmsi_leiden", "score"])
    axes = [ax for ax in fig.axes if ax.collections]
    assert len(axes) == 2
    for ax in axes:  # every cell drawn once (a categorical key: one collection per category)
        assert sum(len(c.get_offsets()) for c in ax.collections) == 40
    assert [ax.get_title() for ax in axes] == ["scmsi_leiden", "score"]


def test_umap_names_what_is_missing():
    a = _embedded()
    with pytest.raises(KeyError, match="embed_and_cluster"):
        scmsi.pl.umap(a, basis="X_nothing")
    with pytest.raises(KeyError, match="not_a_column"):
        scmsi.pl.umap(a, color=["not_a_column"])


def test_spatial_domains_without_an_image():
    a = _embedded()
    a.obsm["spatial"] = np.random.default_rng(1).random((a.n_obs, 2)) * 100
    a.obs["scmsi_domain"] = a.obs["scmsi_leiden"]
    fig = scmsi.pl.spatial_domains(a, image=False)
    axes = [ax for ax in fig.axes if ax.collections]
    assert len(axes) == 1
    drawn = np.vstack([np.asarray(c.get_offsets()) for c in axes[0].collections])
    key = np.lexsort(drawn.T)
    want = a.obsm["spatial"][np.lexsort(a.obsm["spatial"].T)]
    np.testing.assert_allclose(drawn[key], want)  # at the spots' coordinates, each once
    with pytest.raises(KeyError, match="nope"):
        scmsi.pl.spatial_domains(a, color=["nope"], image=False)
