"""The batch-correction benchmark's scoring (scib-metrics) on synthetic embeddings."""

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("scib_metrics")
batch_bench = pytest.importorskip("benchmarks.batch")
# scib-metrics compiles its metrics with jax on first use: minutes on 2 loaded cores.
pytestmark = pytest.mark.slow


def _embeddings(n=240, seed=0):
    """Two labels x two batches: a batch-free, a batch-split and an uncorrected embedding."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(["a", "b"], n // 2)
    batch = np.tile(["b0", "b1"], n // 2)
    bio = (labels == "b")[:, None] * 4.0
    shift = (batch == "b1")[:, None] * 4.0
    noise = lambda: rng.normal(size=(n, 5))  # noqa: E731
    return (
        {
            "pca": noise() + bio + shift,
            "mixed": noise() + bio,
            "split": noise() + bio + 2 * shift,
        },
        batch,
        labels,
    )


def test_score_ranks_batch_removal():
    emb, batch, labels = _embeddings()
    res = batch_bench.score(emb, batch, labels)
    groups = batch_bench.metric_groups(res.columns)
    assert groups["Bio conservation"] and groups["Batch correction"]
    assert {"Total", "Batch ASW (classic)"} <= set(res.columns)
    assert res.loc["mixed", "Batch correction"] > res.loc["split", "Batch correction"]
    assert res.loc["mixed", "iLISI"] > res.loc["pca", "iLISI"]
    np.testing.assert_allclose(
        res["Total"], 0.6 * res["Bio conservation"] + 0.4 * res["Batch correction"], rtol=1e-6
    )


def test_score_without_labels_and_heat_table(tmp_path):
    emb, batch, _ = _embeddings()
    res = batch_bench.score(emb, batch, None)
    assert "Bio conservation" not in res.columns and "Graph connectivity" not in res.columns
    np.testing.assert_allclose(res["Total"], res["Batch correction"])
    table = pd.concat(
        [res.assign(seed=s).rename_axis("embedding").reset_index() for s in (0, 1)],
        ignore_index=True,
    )
    summary = batch_bench.summarise(table)
    assert summary["embedding"].iloc[0] == "mixed"  # best Total first
    batch_bench.heat_table(table, tmp_path / "t.png", "synthetic")
    assert (tmp_path / "t.png").stat().st_size > 1000
