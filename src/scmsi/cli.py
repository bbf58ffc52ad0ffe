"""Command line: ``scmsi fit`` on a .h5mu, .h5ad or Cell Ranger file, ``scmsi domains`` on a
Space Ranger folder, ``scmsi demo`` on the in-house PBMC data.

Every argument and the input are checked before training. Errors are one line on stderr,
``scmsi: error: ...``, with exit status 2 (``--debug`` shows the traceback); Ctrl-C exits
with status 130. Outputs are written to temporary files next to their targets and renamed
into place together at the end, so a failure or an interruption leaves no partial output and
no temporary file. Heavy imports (torch, scvi-tools, scanpy, mudata) wait until after the
arguments are parsed, so ``--help`` answers at once.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path

from ._constants import MODALITY_TYPES_KEY, declared_modality_types
from ._objective import FUSIONS, PRESET_NAMES

_INPUT_SUFFIXES = (".h5mu", ".h5ad", ".h5")


class CLIError(Exception):
    """An input error, reported as one line with exit status 2."""


def _pairs(text: str | None, option: str) -> dict[str, str | None]:
    """Parse ``"rna=counts,prot=protein"``; an empty value means None."""
    if not text:
        return {}
    out = {}
    for item in text.split(","):
        if "=" not in item:
            raise CLIError(f"{option}: expected NAME=VALUE[,NAME=VALUE...], got {item!r}")
        k, v = item.split("=", 1)
        out[k.strip()] = v.strip() or None
    return out


# ------------------------------------------------------------------------------ outputs
class _Outputs:
    """Outputs written to temporary paths in their target folders, renamed into place by
    :meth:`commit`; whatever is not committed is removed on exit (error or Ctrl-C)."""

    def __init__(self):
        self._staged: list[tuple[str, Path]] = []  # (temporary path, target)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        for tmp, _ in self._staged:
            _remove(tmp)
        self._staged.clear()

    def file(self, path: Path, write) -> None:
        """Stage a file: ``write(temporary path)`` writes it."""
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=path.suffix)
        os.close(fd)
        self._staged.append((tmp, path))
        write(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the usual permissions

    def folder(self, path: Path, write) -> None:
        """Stage a folder: ``write(temporary folder)`` fills it."""
        tmp = tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.")
        self._staged.append((tmp, path))
        write(tmp)

    def commit(self) -> list[Path]:
        done = []
        while self._staged:
            tmp, path = self._staged[0]
            if os.path.isdir(tmp) and path.exists():
                # a folder cannot replace a folder atomically: move the old one aside first
                old = tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.old.")
                os.rmdir(old)
                os.replace(path, old)
                try:
                    os.replace(tmp, path)
                except BaseException:
                    os.replace(old, path)
                    raise
                _remove(old)
            else:
                os.replace(tmp, path)
            self._staged.pop(0)
            done.append(path)
        return done


def _remove(path: str) -> None:
    if os.path.isdir(path):
        shutil.rmtree(path, ignore_errors=True)
    elif os.path.exists(path):
        os.remove(path)


def _check_writable(path: Path, option: str) -> None:
    """Raise unless ``path`` can be created (or replaced) by this user."""
    if path.exists() and path.is_dir() and option != "--save-model":
        raise CLIError(f"{option} {path} is a folder; give a file name")
    parent = path.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise CLIError(f"{option} {path}: cannot write in {parent}, a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise CLIError(f"{option} {path}: cannot write in {parent} (permission denied)")
    if path.exists() and not os.access(path, os.W_OK):
        raise CLIError(f"{option} {path} exists and is not writable")


def _figure_format(path: Path) -> str:
    from matplotlib.figure import Figure

    fmt = path.suffix.lower().lstrip(".")
    supported = Figure().canvas.get_supported_filetypes()
    if fmt not in supported:
        raise CLIError(
            f"--figure {path}: unknown image format {path.suffix!r}; use one of "
            + ", ".join(f".{s}" for s in sorted(supported))
        )
    return fmt


# ------------------------------------------------------------------------------ checks
def _check_args(args, figure_suffix: str = ".umap.png") -> None:
    """Everything that needs no data: paths, formats, numbers."""
    out = Path(args.output)
    if out.suffix != ".h5mu":
        raise CLIError(f"--output {out}: the results are a MuData; name the file *.h5mu")
    _check_writable(out, "--output")
    args.figure = Path(args.figure) if args.figure else out.with_suffix(figure_suffix)
    _check_writable(args.figure, "--figure")
    args.figure_format = _figure_format(args.figure)
    if args.save_model:
        _check_writable(Path(args.save_model), "--save-model")
    for option, value, low in [
        ("--max-epochs", args.max_epochs, 1),
        ("--n-anchors", args.n_anchors, 2),
        ("--n-clusters", getattr(args, "n_clusters", None), 2),
        ("--n-domains", getattr(args, "n_domains", None), 2),
    ]:
        if value is not None and value < low:
            raise CLIError(f"{option} must be at least {low}, got {value}")


def _read_input(args):
    """The input as a MuData (an .h5ad becomes RNA + protein from .obsm, as totalVI)."""
    path = Path(args.input)
    if not path.exists():
        raise CLIError(f"input {path} does not exist")
    if path.is_dir() or path.suffix == ".h5":
        return _read_cellranger(path, args)
    if not path.is_file() or not os.access(path, os.R_OK):
        raise CLIError(f"input {path} is not a readable file")
    if path.suffix not in _INPUT_SUFFIXES:
        raise CLIError(
            f"input {path}: expected a MuData (.h5mu), an AnnData (.h5ad) or a Cell Ranger "
            f"matrix (.h5, or its outs/ folder), got {path.suffix!r}"
        )
    if path.suffix == ".h5ad" and args.modalities:
        raise CLIError("--modalities applies to a .h5mu input; an .h5ad gives rna and prot")
    if path.suffix == ".h5mu":
        import mudata

        try:
            return mudata.read_h5mu(path)
        except Exception as e:
            raise CLIError(f"cannot read {path} as MuData (.h5mu): {_one_line(e)}") from e
    import anndata

    try:
        adata = anndata.read_h5ad(path)
    except Exception as e:
        raise CLIError(f"cannot read {path} as AnnData (.h5ad): {_one_line(e)}") from e
    return _anndata_to_mudata(adata, args.protein_obsm_key, path)


def _read_cellranger(path: Path, args: argparse.Namespace):
    """A Cell Ranger ``.h5`` or ``outs/`` folder (:func:`scmsi.io.read_10x_h5`): the
    modalities and their types are the file's feature types, so no --modalities is needed."""
    from .io import read_10x_h5

    if args.protein_obsm_key:
        raise CLIError("--protein-obsm-key applies to an .h5ad input, not a Cell Ranger matrix")
    if not os.access(path, os.R_OK):
        raise CLIError(f"input {path} is not readable (permission denied)")
    try:
        mdata = read_10x_h5(path)
    except (FileNotFoundError, ValueError) as e:
        raise CLIError(_one_line(e)) from e
    kinds = mdata.uns["modality_types"]
    print(
        f"{path}: {mdata.n_obs} cells; "
        + ", ".join(f"{m} ({kinds[m]}, {mdata[m].n_vars} features)" for m in mdata.mod)
    )
    return mdata


def _anndata_to_mudata(adata, key: str | None, path: Path):
    import anndata
    import mudata
    import pandas as pd

    if key is None:
        raise CLIError(
            f"input {path} is an AnnData, one modality; scMSI integrates several. For CITE-seq "
            "stored as totalVI does, name the .obsm entry with the protein counts: "
            f"--protein-obsm-key KEY (obsm has {list(adata.obsm)}); otherwise build a .h5mu, "
            "e.g. mudata.MuData({'rna': rna, 'prot': prot}).write('data.h5mu')"
        )
    if key not in adata.obsm:
        raise CLIError(f"--protein-obsm-key {key!r} is not in .obsm (has {list(adata.obsm)})")
    prot = adata.obsm[key]
    names = prot.columns.astype(str) if isinstance(prot, pd.DataFrame) else None
    values = prot.to_numpy() if isinstance(prot, pd.DataFrame) else prot
    if names is None:
        names = pd.Index([f"protein_{i}" for i in range(values.shape[1])])
    rna = anndata.AnnData(
        X=adata.X,
        obs=pd.DataFrame(index=adata.obs_names),
        var=adata.var.copy(),
        layers=dict(adata.layers),
    )
    prot_ad = anndata.AnnData(
        X=values, obs=pd.DataFrame(index=adata.obs_names), var=pd.DataFrame(index=names)
    )
    mdata = mudata.MuData({"rna": rna, "prot": prot_ad})
    mdata.obs = adata.obs.copy()
    mdata.uns[MODALITY_TYPES_KEY] = {"rna": "counts", "prot": "protein"}
    return mdata


def _resolve_modalities(mdata, args) -> dict[str, str]:
    """Modality types: --modalities, else uns['modality_types']; none is left out silently."""
    from ._likelihoods import HEADS

    given = _pairs(args.modalities, "--modalities")
    if given:
        kinds = given
        source = "--modalities"
    elif (declared := declared_modality_types(mdata)) is not None:
        kinds = declared
        source = f"uns[{MODALITY_TYPES_KEY!r}]"
    else:
        raise CLIError(
            f"{args.input} does not say its modalities' types (no uns[{MODALITY_TYPES_KEY!r}]); "
            f"pass --modalities, e.g. --modalities "
            f"{','.join(f'{m}={_suggested_type(m)}' for m in mdata.mod)} "
            "(types: " + ", ".join(HEADS) + ")"
        )
    for m, kind in kinds.items():
        if m not in mdata.mod:
            raise CLIError(
                f"{source} names modality {m!r}, not in the input (has {list(mdata.mod)})"
            )
        if kind not in HEADS:
            raise CLIError(f"{source}: unknown type {kind!r} of {m!r}; use one of {list(HEADS)}")
    left_out = [m for m in mdata.mod if m not in kinds]
    if left_out and not given:
        raise CLIError(
            f"modalities {left_out} of the input have no type in uns[{MODALITY_TYPES_KEY!r}] and "
            "would be left out; pass --modalities with every modality to fit"
        )
    return kinds


def _suggested_type(modality: str) -> str:
    """The type a modality's usual name suggests (``prot`` -> protein, ``atac`` ->
    accessibility; else counts), for the example in an error message only."""
    from .io import FEATURE_TYPES  # the names the Cell Ranger reader gives, with their types

    return dict(FEATURE_TYPES.values()).get(str(modality).lower(), "counts")


def _check_data_keys(mdata, args, kinds) -> dict[str, str | None]:
    layers = _pairs(args.layers, "--layers")
    for m, layer in layers.items():
        if m not in kinds:
            raise CLIError(f"--layers names {m!r}, not a fitted modality ({list(kinds)})")
        if layer is not None and layer not in mdata.mod[m].layers:
            raise CLIError(
                f"--layers: {m!r} has no layer {layer!r} (has {list(mdata.mod[m].layers)}; "
                "leave it out to use .X)"
            )
    for option, key in [("--batch-key", args.batch_key), ("--label-key", args.label_key)]:
        if key is not None and key not in mdata.obs:
            raise CLIError(
                f"{option} {key!r} is not a column of the input's obs (has "
                f"{list(mdata.obs.columns)[:20]})"
            )
    return layers


# ------------------------------------------------------------------------------ commands
def fit(args: argparse.Namespace) -> int:
    _check_args(args)
    mdata = _read_input(args)
    kinds = _resolve_modalities(mdata, args)
    layers = _check_data_keys(mdata, args, kinds)
    return _fit_and_write(mdata, args, kinds, layers)


def _fit_and_write(mdata, args, kinds, layers) -> int:
    import scmsi

    scmsi.SCMSI.setup_mudata(mdata, modalities=kinds, layers=layers, batch_key=args.batch_key)
    model = scmsi.SCMSI(mdata, n_anchors=args.n_anchors, seed=args.seed, objective=args.preset)
    print(model)
    _train(model, args.max_epochs)
    scmsi.tl.embed_and_cluster(
        mdata, model, n_clusters=args.n_clusters, fusion=args.fusion, seed=args.seed
    )
    colors = ["scmsi_leiden"] + (["scmsi_kmeans"] if args.n_clusters else [])
    if args.label_key:
        colors.append(args.label_key)
        _print_scores(mdata, args.label_key, colors[:-1])
    fig = scmsi.pl.umap(mdata, color=colors)
    _write_results(mdata, fig, model, args)
    return 0


def _train(model, max_epochs: int | None) -> None:
    """Train (``max_epochs`` None: the package default); Ctrl-C raises KeyboardInterrupt."""
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Training interrupted")  # one line: main's
        model.train(max_epochs=max_epochs)
    if getattr(model, "training_interrupted_", False):
        raise KeyboardInterrupt
    print(f"trained in {time.perf_counter() - t0:.1f} s")


def _write_results(mdata, fig, model, args) -> None:
    """The .h5mu, the figure and, with --save-model, the model, renamed into place together."""
    out = Path(args.output)
    with _Outputs() as outputs:
        for path in {out.parent, args.figure.parent}:
            path.mkdir(parents=True, exist_ok=True)
        outputs.file(out, lambda p: mdata.write_h5mu(p))
        outputs.file(args.figure, lambda p: fig.savefig(p, dpi=150, format=args.figure_format))
        if args.save_model:
            target = Path(args.save_model)
            target.parent.mkdir(parents=True, exist_ok=True)
            outputs.folder(target, lambda p: model.save(p, overwrite=True))
        for path in outputs.commit():
            print(f"wrote {path}")


def _print_scores(mdata, label_key: str, cluster_keys) -> None:
    import numpy as np
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    labels = mdata.obs[label_key]
    known = labels.notna().to_numpy()  # unlabelled cells (NaN) are left out of the scores
    if not known.all():
        print(f"{int((~known).sum())} of {len(known)} cells have no {label_key!r}: not scored")
    y = labels[known].astype(str).to_numpy()
    for key in cluster_keys:
        pred = mdata.obs[key][known].astype(str).to_numpy()
        print(
            f"{key}: ARI {adjusted_rand_score(y, pred):.3f}  "
            f"NMI {normalized_mutual_info_score(y, pred):.3f}  ({len(np.unique(pred))} clusters)"
        )


def demo(args: argparse.Namespace) -> int:
    args.batch_key, args.label_key, args.n_clusters = None, "cell_type", None
    _check_args(args)
    import scmsi

    mdata = scmsi.datasets.inhouse_pbmc()
    print(
        f"in-house PBMC: {mdata.n_obs} cells, {mdata['rna'].n_vars} genes, "
        f"{mdata['prot'].n_vars} proteins"
    )
    args.n_clusters = int(mdata.obs["cell_type"].nunique())
    kinds = {"rna": "counts", "prot": "protein"}
    return _fit_and_write(mdata, args, kinds, {"rna": "counts", "prot": "counts"})


# ------------------------------------------------------------------------------ spatial
def domains(args: argparse.Namespace) -> int:
    """``scmsi domains``: the steps of docs/tutorials/visium_dlpfc.md on a Space Ranger folder
    (read, model input with expression + image + niche, train, domains, figure)."""
    _check_args(args, figure_suffix=".domains.png")
    adata = _read_section(args)
    import scmsi

    from ._constants import DOMAIN_KEY

    mdata, kinds = scmsi.spatial.to_mudata(adata)  # checks the spots (ValueError: one line)
    print(f"model input: {mdata.n_obs} spots; " + ", ".join(f"{m} ({k})" for m, k in kinds.items()))
    scmsi.SCMSI.setup_mudata(mdata, modalities=kinds)
    model = scmsi.SCMSI(mdata, n_anchors=args.n_anchors, seed=args.seed)
    print(model)
    _train(model, args.max_epochs)
    found = scmsi.spatial.spatial_domains(
        mdata, model, n_domains=args.n_domains, refine=True, seed=args.seed
    )
    how = "as asked" if args.n_domains else "chosen without labels"
    print(f"{len(found.categories)} domains ({how}) in obs[{DOMAIN_KEY!r}]")
    colors = [DOMAIN_KEY]
    if args.label_key:
        colors.append(args.label_key)
        _print_scores(mdata, args.label_key, [DOMAIN_KEY])
    fig = scmsi.pl.spatial_domains(mdata, color=colors)
    _write_results(mdata, fig, model, args)
    return 0


def _read_section(args: argparse.Namespace):
    """The Space Ranger folder as an AnnData (:func:`scmsi.spatial.read_visium`), with the
    --label-key column from the spot table when the reader's obs lacks it."""
    from .spatial.io import find_visium, read_visium

    try:
        folder, counts_file = find_visium(args.input)
    except FileNotFoundError as e:
        raise CLIError(_one_line(e)) from e
    library_id = folder.parent.name if folder.name == "outs" else folder.name
    adata = read_visium(folder, counts_file=counts_file, library_id=library_id)
    images = list(adata.uns["spatial"][library_id]["images"])
    print(
        f"{folder}: {adata.n_obs} spots, {adata.n_vars} genes, "
        f"image: {', '.join(images) if images else 'none'}"
    )
    if args.label_key and args.label_key not in adata.obs:
        adata.obs[args.label_key] = _spot_labels(args, folder, adata.obs_names)
    return adata


def _spot_labels(args: argparse.Namespace, folder: Path, obs_names):
    """--label-key's column of --metadata (default the folder's metadata.tsv), as categories."""
    import pandas as pd

    from .spatial.io import read_spot_table

    table = Path(args.metadata) if args.metadata else folder / "metadata.tsv"
    if not table.is_file():
        raise CLIError(
            f"--label-key {args.label_key!r}: the spots' obs has no such column and "
            f"{table} does not exist; pass --metadata TABLE (spot barcodes in its first column)"
        )
    try:
        spots = read_spot_table(table, obs_names)
    except (OSError, ValueError) as e:
        raise CLIError(f"--metadata: {_one_line(e)}") from e
    if args.label_key not in spots:
        raise CLIError(
            f"--label-key {args.label_key!r} is not a column of {table} (has "
            f"{list(spots.columns)[:20]})"
        )
    return pd.Categorical(spots[args.label_key])


def _add_domains_parser(sub) -> None:
    p = sub.add_parser(
        "domains",
        help="spatial domains of a Space Ranger folder: .h5mu and a figure over the H&E",
        description="Spatial domains of a 10x Visium section: expression, H&E image features "
        "and each spot's neighbourhood, trained with the defaults, clustered label-free.",
    )
    p.add_argument(
        "input",
        metavar="SPACERANGER_DIR",
        help="Space Ranger outs/ folder (filtered_feature_bc_matrix.h5 and spatial/)",
    )
    p.add_argument("-o", "--output", required=True, help="output .h5mu with the domains")
    p.add_argument(
        "--figure",
        help="domains over the H&E; its suffix names the format (default OUTPUT.domains.png)",
    )
    p.add_argument("--n-domains", type=int, help="number of domains (default: label-free)")
    p.add_argument(
        "--label-key",
        help="known labels, scored (ARI/NMI) and drawn: a column of --metadata",
    )
    p.add_argument(
        "--metadata",
        help="spot table (.tsv/.csv, barcodes in the first column) holding --label-key "
        "(default SPACERANGER_DIR/metadata.tsv)",
    )
    p.add_argument(
        "--epochs",
        "--max-epochs",
        dest="max_epochs",
        type=int,
        help="training epochs (default: the package's, by the number of spots)",
    )
    p.add_argument("--n-anchors", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--save-model", help="folder to save the trained model in")
    p.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    p.set_defaults(func=domains)


# ------------------------------------------------------------------------------ entry point
def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="scmsi", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-o", "--output", required=True, help="output .h5mu with the results")
    common.add_argument(
        "--figure", help="UMAP figure; its suffix names the format (default OUTPUT.umap.png)"
    )
    common.add_argument("--n-anchors", type=int, default=None)
    common.add_argument("--max-epochs", type=int, default=None)
    common.add_argument("--seed", type=int, default=0)
    common.add_argument(
        "--preset",
        choices=PRESET_NAMES,
        default="default",
        help="the model's objective (a preset): 'paper' is the published one (docs/model.md)",
    )
    common.add_argument(
        "--fusion",
        choices=FUSIONS,
        default=None,
        help="how the modalities' coefficients are fused (default: the preset's; docs/model.md)",
    )
    common.add_argument("--save-model", help="folder to save the trained model in")
    common.add_argument("--debug", action="store_true", help="show tracebacks of errors")

    p_fit = sub.add_parser(
        "fit", parents=[common], help="train scMSI on a .h5mu/.h5ad file and write the results"
    )
    p_fit.add_argument("input", help="input .h5mu (raw counts), or .h5ad with --protein-obsm-key")
    p_fit.add_argument(
        "--modalities",
        help=f"types, e.g. rna=counts,prot=protein (default: the input's "
        f"uns[{MODALITY_TYPES_KEY!r}])",
    )
    p_fit.add_argument("--layers", help="layers holding raw counts, e.g. rna=counts")
    p_fit.add_argument("--batch-key", help="batch column of the input's obs")
    p_fit.add_argument("--label-key", help="known labels in the input's obs: colour and score")
    p_fit.add_argument("--n-clusters", type=int, default=None, help="also run k-means")
    p_fit.add_argument(
        "--protein-obsm-key", help=".h5ad input: .obsm entry with protein counts (as totalVI)"
    )
    p_fit.set_defaults(func=fit)

    p_demo = sub.add_parser(
        "demo", parents=[common], help="fit the in-house PBMC CITE-seq data, print ARI/NMI"
    )
    p_demo.set_defaults(func=demo)
    _add_domains_parser(sub)
    return parser


def _one_line(e) -> str:
    text = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
    return " ".join(str(text).split()) or type(e).__name__


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Warnings issued from scmsi (about the user's data) as one line; others' internal
    deprecation and logging notices are dropped (``--debug`` shows everything)."""
    if Path(filename).resolve().is_relative_to(Path(__file__).resolve().parent):
        print(f"scmsi: warning: {_one_line(message)}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        with warnings.catch_warnings():
            if not args.debug:  # warnings about the data as one line each, no source lines
                warnings.showwarning = _one_line_warning
            return args.func(args)
    except KeyboardInterrupt:
        if args.debug:
            raise
        print("scmsi: interrupted; no output was written", file=sys.stderr)
        return 130
    except (CLIError, ValueError, KeyError, TypeError, OSError, FloatingPointError) as e:
        if args.debug:
            raise
        print(f"scmsi: error: {_one_line(e)}", file=sys.stderr)
        return 2
    except Exception as e:
        if args.debug:
            raise
        print(
            f"scmsi: error: {type(e).__name__}: {_one_line(e)} (unexpected; rerun with --debug "
            "for the traceback)",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
