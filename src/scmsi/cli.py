"""Command line: ``scmsi fit`` on a .h5mu file, ``scmsi demo`` on the in-house PBMC data."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def _pairs(text: str | None) -> dict[str, str | None]:
    """Parse ``"rna=counts,prot=protein"``; an empty value means None."""
    if not text:
        return {}
    out = {}
    for item in text.split(","):
        if "=" not in item:
            raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {item!r}")
        k, v = item.split("=", 1)
        out[k.strip()] = v.strip() or None
    return out


def _atomic_write(path: Path, write) -> None:
    """Write through a temporary file in the same folder, then rename: never a half file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=path.suffix)
    os.close(fd)
    try:
        write(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the usual permissions
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def fit(args: argparse.Namespace) -> int:
    import mudata

    mdata = mudata.read_h5mu(args.input)
    return _fit_and_write(mdata, args)


def _fit_and_write(mdata, args) -> int:
    import scmsi

    scmsi.SCMSI.setup_mudata(
        mdata,
        modalities=_pairs(args.modalities) or None,
        layers=_pairs(args.layers),
        batch_key=args.batch_key,
    )
    model = scmsi.SCMSI(mdata, n_anchors=args.n_anchors, seed=args.seed)
    print(model)
    t0 = time.perf_counter()
    model.train(max_epochs=args.max_epochs)
    print(f"trained in {time.perf_counter() - t0:.1f} s")
    scmsi.tl.embed_and_cluster(
        mdata, model, n_clusters=args.n_clusters, fusion=args.fusion, seed=args.seed
    )
    colors = ["scmsi_leiden"] + (["scmsi_kmeans"] if args.n_clusters else [])
    if args.label_key:
        if args.label_key not in mdata.obs:
            raise SystemExit(f"--label-key {args.label_key!r} is not a column of mdata.obs")
        colors.append(args.label_key)
        _print_scores(mdata, args.label_key, colors[:-1])
    out = Path(args.output)
    _atomic_write(out, lambda p: mdata.write_h5mu(p))
    print(f"wrote {out}")
    figure = Path(args.figure) if args.figure else out.with_suffix(".umap.png")
    fig = scmsi.pl.umap(mdata, color=colors)
    _atomic_write(figure, lambda p: fig.savefig(p, dpi=150, format="png"))
    print(f"wrote {figure}")
    if args.save_model:
        model.save(args.save_model, overwrite=True)
        print(f"saved model to {args.save_model}")
    return 0


def _print_scores(mdata, label_key: str, cluster_keys) -> None:
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    y = mdata.obs[label_key].astype(str).to_numpy()
    for key in cluster_keys:
        pred = mdata.obs[key].astype(str).to_numpy()
        print(
            f"{key}: ARI {adjusted_rand_score(y, pred):.3f}  "
            f"NMI {normalized_mutual_info_score(y, pred):.3f}  ({len(np.unique(pred))} clusters)"
        )


def demo(args: argparse.Namespace) -> int:
    import scmsi

    mdata = scmsi.datasets.inhouse_pbmc()
    print(
        f"in-house PBMC: {mdata.n_obs} cells, {mdata['rna'].n_vars} genes, "
        f"{mdata['prot'].n_vars} proteins"
    )
    args.modalities, args.layers = "rna=counts,prot=protein", "rna=counts,prot=counts"
    args.batch_key, args.label_key = None, "cell_type"
    args.n_clusters = int(mdata.obs["cell_type"].nunique())
    return _fit_and_write(mdata, args)


def main(argv: list[str] | None = None) -> int:
    from ._fusion import FUSIONS

    parser = argparse.ArgumentParser(prog="scmsi", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p):
        p.add_argument("-o", "--output", required=True, help="output .h5mu with the results")
        p.add_argument("--figure", help="UMAP figure (default: OUTPUT with .umap.png)")
        p.add_argument("--n-anchors", type=int, default=None)
        p.add_argument("--max-epochs", type=int, default=None)
        p.add_argument("--seed", type=int, default=0)
        p.add_argument(
            "--fusion",
            choices=FUSIONS,
            default="mean",
            help="how the modalities' coefficients are fused (see README, 'Fused affinity')",
        )
        p.add_argument("--save-model", help="folder to save the trained model in")

    p_fit = sub.add_parser("fit", help="train scMSI on a .h5mu file and write the results")
    p_fit.add_argument("input", help="input .h5mu (raw counts)")
    common(p_fit)
    p_fit.add_argument("--modalities", help="types, e.g. rna=counts,prot=protein")
    p_fit.add_argument("--layers", help="layers holding raw counts, e.g. rna=counts")
    p_fit.add_argument("--batch-key", help="batch column of mdata.obs")
    p_fit.add_argument("--label-key", help="known labels in mdata.obs: colour and score")
    p_fit.add_argument("--n-clusters", type=int, default=None, help="also run k-means")
    p_fit.set_defaults(func=fit)

    p_demo = sub.add_parser("demo", help="fit the in-house PBMC CITE-seq data, print ARI/NMI")
    common(p_demo)
    p_demo.set_defaults(func=demo)

    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
