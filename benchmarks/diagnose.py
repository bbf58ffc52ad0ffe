"""Where does the cell-type structure go? One trained model, every representation scored alike.

    python -m benchmarks.diagnose inhouse_pbmc [--seed 0] [--epochs N] [--preset default]

For each modality's coefficients ``C^m``, the fused affinity, each modality's latent ``z^m``
and each modality's own input (its PCA, as the harness's ``only_<m>`` baselines) it reports:

- effective anchors per cell: ``exp(entropy)`` of the row normalised to sum to 1 (median);
- hub share: the share of cells whose top anchor is the most used top anchor;
- k-means ARI (k = number of labels) and label-free ARI (clusters) with the harness's
  scoring (:func:`benchmarks.__main__._score`: the same rule for every representation);
- agreement: mean overlap of each cell's top-10 anchors between modalities.

Coefficient matrices are embedded as :func:`scmsi.tl.embed_and_cluster` embeds the fused
affinity (PCA, ``n_latent`` components). Writes ``benchmarks/results/diagnose_<dataset>.md``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from itertools import combinations
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks import peers
from benchmarks.__main__ import LABEL_KEY, RESULTS, _load, _score
from benchmarks._common import atomic_text, command_line

TOP = 10


def effective_anchors(coef: np.ndarray) -> float:
    """Median over cells of ``exp(entropy)`` of the row normalised to sum to 1."""
    p = coef / np.maximum(coef.sum(1, keepdims=True), 1e-12)
    ent = -(p * np.log(np.where(p > 0, p, 1.0))).sum(1)
    return float(np.median(np.exp(ent)))


def hub_share(coef: np.ndarray) -> float:
    """Share of cells whose top anchor is the most used top anchor."""
    top = coef.argmax(1)
    return float(np.bincount(top).max() / len(top))


def top_overlap(a: np.ndarray, b: np.ndarray, k: int = TOP) -> float:
    """Mean share of each cell's top-``k`` anchors that two coefficient matrices share."""
    ta = np.argpartition(-a, k - 1, axis=1)[:, :k]
    tb = np.argpartition(-b, k - 1, axis=1)[:, :k]
    return float(np.mean([len(np.intersect1d(x, y)) / k for x, y in zip(ta, tb, strict=True)]))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.diagnose", description=__doc__)
    parser.add_argument("dataset")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, help="max_epochs (default: the package's)")
    parser.add_argument("--preset", help="SCMSI objective preset (default: the package's)")
    parser.add_argument("--out", help="results folder (default benchmarks/results)")
    parser.add_argument("--save", help="also save every representation to this .npz")
    parser.add_argument("--model-dir", help="load the model from here if saved, else save it")
    parser.add_argument(
        "--set", nargs="*", default=[], help="SCMSI options key=value (an ablation)"
    )
    parser.add_argument("--train", nargs="*", default=[], help="train() options key=value")
    return parser


def _trained_model(m, args):
    """The model of ``args`` (loaded from ``--model-dir`` when saved there), and its training
    wall and CPU seconds."""
    import scmsi

    kwargs = {} if args.preset is None else {"objective": args.preset}
    kwargs |= {k: peers._option(v) for k, v in (kv.split("=", 1) for kv in args.set)}
    train_kwargs = {k: peers._option(v) for k, v in (kv.split("=", 1) for kv in args.train)}
    t0, c0 = time.perf_counter(), time.process_time()
    if args.model_dir and Path(args.model_dir).exists():
        model = scmsi.SCMSI.load(args.model_dir, adata=m)
    else:
        model = scmsi.SCMSI(m, seed=args.seed, **kwargs)
        model.train(max_epochs=args.epochs, enable_progress_bar=False, **train_kwargs)
        if args.model_dir:
            model.save(args.model_dir)
    return model, time.perf_counter() - t0, time.process_time() - c0


def _representations(model, m, mdata, types, coefs, seed: int):
    """``(name, embedding, coefficients or None)`` of every representation scored."""
    import scmsi
    from scmsi import _cluster

    latents = model.get_latent_representation(m)
    n_comps = model.module.n_latent
    rebuilt = _cluster.rebuilt_projection(model)
    for mod in model.modality_names:
        pca = _cluster.coefficient_pca(coefs[mod], n_comps, seed)[0]
        yield f"C^{mod}, PCA", pca, coefs[mod]
        yield f"C^{mod}, rebuilt latents", _cluster.project_coefficients(coefs[mod], rebuilt), None
    fused = coefs["fused"]
    yield (
        f"fused ({model.fusion}), rebuilt latents",
        _cluster.project_coefficients(fused, rebuilt),
        None,
    )
    yield (
        f"fused ({model.fusion}), PCA",
        _cluster.coefficient_pca(fused, n_comps, seed)[0],
        fused,
    )
    yield (
        f"fused ({model.fusion}), anchor spectral",
        scmsi.tl.anchor_spectral_embedding(fused, n_comps),
        None,
    )
    for mod in model.modality_names:
        yield f"z^{mod}", latents[mod], None
    zs = [(z - z.mean(0)) / np.maximum(z.std(0), 1e-12) for z in latents.values()]
    yield "latents standardised, concatenated", np.concatenate(zs, 1), None
    for mod, kind in types.items():
        yield f"input {mod} ({kind}), PCA", peers.process_modality(mdata, mod, kind, seed)[1], None


def _score_row(name: str, emb, coef, labels, seed: int) -> dict:
    s = _score({"embedding": emb}, labels, seed)
    return {
        "representation": name,
        "eff. anchors": f"{effective_anchors(coef):.1f}" if coef is not None else "",
        "hub share": f"{hub_share(coef):.2f}" if coef is not None else "",
        "k-means ARI": f"{s['kmeans_ari']:.3f}",
        "label-free ARI (clusters)": f"{s['leiden_ari']:.3f} ({s['leiden_n']})",
    }


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)

    import torch

    torch.set_num_threads(1)
    mdata = _load(args.dataset, smoke=False)
    labels = mdata.obs[LABEL_KEY].astype(str).to_numpy()
    m, types, _ = peers.scmsi_setup(mdata)
    model, train_s, train_cpu = _trained_model(m, args)
    torch.set_num_threads(1)
    coefs = model.get_coefficients(m, return_all=True, fusion=model.fusion)

    rows, saved = [], {"labels": labels.astype(str)}
    for name, emb, coef in _representations(model, m, mdata, types, coefs, args.seed):
        saved[name] = emb
        rows.append(_score_row(name, emb, coef, labels, args.seed))

    agree = [
        f"{a}-{b}: {top_overlap(coefs[a], coefs[b]):.2f}"
        for a, b in combinations(model.modality_names, 2)
    ]
    notes = model.module.describe() if hasattr(model.module, "describe") else ""
    lines = [
        f"# Diagnosis: {args.dataset}",
        "",
        f"Command: `{command_line('benchmarks.diagnose', argv)}`",
        "",
        f"Model: preset={model.preset!r}, {model.module.n_anchors} anchors, "
        f"{len(model.history['elbo_train'])} epochs, seed {args.seed}; training {train_s:.0f} s "
        f"wall, {train_cpu:.0f} s CPU, 1 thread. {notes}",
        "",
        pd.DataFrame(rows).to_markdown(index=False),
        "",
        f"Agreement (mean overlap of each cell's top-{TOP} anchors): " + "; ".join(agree) + ".",
        "",
        "Effective anchors: median exp(entropy) of each cell's normalised coefficients; hub "
        "share: cells whose top anchor is the most used one; label-free: the harness's rule "
        "(`benchmarks.__main__._score`).",
    ]
    if args.save:
        np.savez_compressed(
            args.save, **saved, **{f"coef {k}": v for k, v in coefs.items() if k != "observed"}
        )
    out_dir = Path(args.out) if args.out else RESULTS
    out_dir.mkdir(parents=True, exist_ok=True)
    suffix = "" if args.preset in (None, "default") else f"_{args.preset}"
    atomic_text(out_dir / f"diagnose_{args.dataset}{suffix}.md", "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    sys.exit(main())
