"""When has training converged? The ELBO, the joint latent's neighbourhoods and ARI per epoch.

    python -m benchmarks.convergence inhouse_pbmc snare_seq --seeds 0 1 [--work-dir <dir>]

Each (dataset, seed) trains scMSI with the package's defaults in a fresh worker
(:func:`benchmarks._common.run_worker`), with the stopping rule switched off so that every
epoch up to ``max_epochs`` is seen (pre-training still ends as the package ends it). After the
switch to the rebuilt latents it records, every epoch, the validation ELBO, and every
``--every`` epochs the joint latent of a fixed subset of cells and the label-free Leiden ARI
of :func:`scmsi.tl.embed_and_cluster` (the clusters ``scmsi demo`` prints). The checks run in
eval mode and restore torch's random state, so the recorded run is the run a stopping rule
would have cut short: the ARI at epoch ``e`` is the ARI of stopping at ``e``.

The report gives, per run, the epoch at which each rule fires and the ARI there: the
ELBO at 0.1% over 20 epochs (the rule before), at 1% (:class:`scmsi._model._Converged` now),
and a rule tried and rejected: the ELBO at 0.5% and a settled k-NN graph of the joint latent
(90% of each sampled cell's 15 neighbours kept over 10 epochs), which never fired (the
neighbourhoods inside clusters keep changing: overlap 0.6 on in-house PBMC, 0.2 on SNARE-seq).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks._common import (
    RESULTS,
    command_line,
    load_npz,
    machine_line,
    publish,
    run_worker,
    save_npz,
    work_folder,
    worker_env,
)

SETTLE_CELLS = 2000  # cells whose joint latent is compared between checks (fixed sample)
ELBO_REL_TOL = {"elbo": 1e-3, "stop": 1e-2}  # before / now (scmsi._model.STOP_REL_TOL)
SETTLED = 0.9  # k-NN overlap of the "settled latent" rule tried and rejected (see report)


def settle_subset(n_obs: int, seed: int) -> np.ndarray:
    """A fixed random sample of the cells (its own generator: training's is untouched)."""
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n_obs, min(n_obs, SETTLE_CELLS), replace=False))


def joint_latent_sample(model, subset: np.ndarray) -> np.ndarray:
    """Every modality's posterior mean latent of ``subset``, each dimension standardised over
    the subset, concatenated (as :func:`scmsi._cluster.joint_latent`)."""
    z = model.get_latent_representation(indices=subset)
    x = np.concatenate([z[m] for m in model.modality_names], 1)
    return (x - x.mean(0)) / np.maximum(x.std(0), 1e-8)


def outside_training(module, fn, *args, **kwargs):
    """``fn(*args)`` between two training epochs: every submodule's train/eval mode and
    torch's random state are restored afterwards, so the recorded run is the unchecked run."""
    import torch

    modes = [(m, m.training) for m in module.modules()]
    state = torch.random.get_rng_state()
    try:
        return fn(*args, **kwargs)
    finally:
        torch.random.set_rng_state(state)
        for m, training in modes:
            m.training = training


def worker(dataset: str, seed: int, every: int, out: Path) -> None:
    """Train with a recorder in place of the stopping rule; save the traces to ``out``."""
    from lightning.pytorch.callbacks import Callback
    from sklearn.metrics import adjusted_rand_score

    import scmsi
    from benchmarks import peers
    from benchmarks.__main__ import LABEL_KEY, _load
    from scmsi import _model

    mdata = _load(dataset, smoke=False)
    labels = mdata.obs[LABEL_KEY].astype(str).to_numpy()
    m, _, _ = peers.scmsi_setup(mdata)
    model = scmsi.SCMSI(m, seed=seed)
    trace: dict[str, list] = {"elbo_epoch": [], "elbo": [], "check_epoch": [], "ari": []}
    trace["regular"] = []  # a check every `every` epochs (else: where the ELBO rule fired)
    latents: list[np.ndarray] = []
    subset = settle_subset(m.n_obs, seed)

    class Recorder(Callback):
        def __init__(self, switch):
            self.switch, self.elbo_fired = switch, False

        def on_train_epoch_end(self, trainer, pl_module) -> None:
            start, epoch = self.switch.switched_at, trainer.current_epoch
            if start is None or epoch < start or (value := _model._elbo(trainer)) is None:
                return
            trace["elbo_epoch"].append(epoch + 1)
            trace["elbo"].append(value)
            regular = len(trace["elbo"]) % every == 0
            tol = ELBO_REL_TOL["elbo"]
            first = not self.elbo_fired and _model._plateaued(trace["elbo"], rel_tol=tol)
            self.elbo_fired |= first
            if not (regular or first or epoch + 1 == trainer.max_epochs):
                return
            outside = outside_training  # eval mode and RNG as training left them
            latents.append(outside(pl_module.module, joint_latent_sample, model, subset))
            outside(pl_module.module, scmsi.tl.embed_and_cluster, m, model, seed=seed)
            pred = m.obs["scmsi_leiden"].astype(str).to_numpy()
            trace["check_epoch"].append(epoch + 1)
            trace["regular"].append(regular)
            trace["ari"].append(adjusted_rand_score(labels, pred))
            print(epoch + 1, value, trace["ari"][-1], flush=True)

    _model._Converged = lambda switch, *a, **k: Recorder(switch)  # record, never stop
    model.train(enable_progress_bar=False)
    save_npz(out, latents=np.stack(latents), **{k: np.asarray(v) for k, v in trace.items()})


def fired(run: dict, tol: float, settled: float | None) -> int:
    """Epoch (1-based) at which a rule stops the recorded run (the last epoch if never): the
    ELBO has improved by less than ``tol`` over 20 epochs (:func:`scmsi._model._plateaued`)
    and, unless ``settled`` is None, the k-NN overlap of the joint latent between this
    regular check and the previous one is at least ``settled`` (:class:`_Converged`)."""
    from scmsi import _model
    from scmsi._cluster import _knn_overlap

    elbo, epochs = list(run["elbo"]), list(run["elbo_epoch"])
    reg = [i for i, r in enumerate(run["regular"]) if r]  # regular checks' rows
    reg_epochs = [int(run["check_epoch"][i]) for i in reg]
    for i in range(len(elbo)):
        if not _model._plateaued(elbo[: i + 1], rel_tol=tol):
            continue
        if settled is None:
            return int(epochs[i])
        if epochs[i] in reg_epochs and (j := reg_epochs.index(epochs[i])) > 0:
            if _knn_overlap(run["latents"][reg[j - 1]], run["latents"][reg[j]]) >= settled:
                return int(epochs[i])
    return int(epochs[-1])


RULES = {  # name: (ELBO tolerance, k-NN overlap); None: the ELBO alone
    "ELBO 0.1% (before)": ("elbo", None),
    "ELBO 1% (now)": ("stop", None),
    "ELBO 0.5% + settled k-NN 0.9 (rejected)": (5e-3, SETTLED),
}
GRID_TOL = (1e-3, 2e-3, 5e-3, 1e-2, 2e-2)
GRID_SETTLED = (None, 0.8, 0.85, 0.9, 0.95)


def _ari_at(run: dict, epoch: int) -> float:
    checks = [int(c) for c in run["check_epoch"]]
    return float(run["ari"][checks.index(epoch)]) if epoch in checks else float("nan")


def summarise(run: dict, dataset: str, seed: int) -> dict:
    from scmsi._cluster import _knn_overlap

    row: dict = {"dataset": dataset, "seed": seed, "max epochs": int(run["check_epoch"][-1])}
    row["ARI at max"] = float(run["ari"][-1])
    lat = [run["latents"][i] for i, r in enumerate(run["regular"]) if r]
    overlaps = [_knn_overlap(a, b) for a, b in zip(lat[:-1], lat[1:], strict=True)]
    row["ARI per check (epoch: ARI)"] = " ".join(
        f"{int(e)}: {a:.3f}" for e, a in zip(run["check_epoch"], run["ari"], strict=True)
    )
    row["k-NN overlap per check"] = " ".join(f"{o:.2f}" for o in overlaps)
    for name, (tol, settled) in RULES.items():
        e = fired(run, ELBO_REL_TOL.get(tol, tol), settled)
        row[f"{name}: epochs"], row[f"{name}: ARI"] = e, _ari_at(run, e)
    return row


def grid(runs: dict) -> pd.DataFrame:
    """Epochs and ARI of every (tolerance, overlap) rule on every recorded run."""
    rows = []
    for tol in GRID_TOL:
        for settled in GRID_SETTLED:
            row = {"ELBO tol": tol, "k-NN overlap": "-" if settled is None else settled}
            for key, run in runs.items():
                e = fired(run, tol, settled)
                row[key] = f"{e} ({_ari_at(run, e):.3f})"
            rows.append(row)
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("datasets", nargs="+")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--every", type=int, default=10, help="epochs between latent checks")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--work-dir")
    p.add_argument("--out", default=str(RESULTS / "convergence.md"))
    p.add_argument("--worker", nargs=3, metavar=("DATASET", "SEED", "OUT"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        import scmsi

        scmsi.settings.num_threads = args.threads
        worker(args.worker[0], int(args.worker[1]), args.every, Path(args.worker[2]))
        return 0
    work = work_folder(args.work_dir, "scmsi_convergence_")
    rows, runs = [], {}
    for ds in args.datasets:
        for seed in args.seeds:
            out = work / f"{ds}_seed{seed}.npz"
            cmd = [sys.executable, "-m", "benchmarks.convergence", *args.datasets]
            cmd += ["--every", str(args.every), "--threads", str(args.threads)]
            run_worker(cmd + ["--worker", ds, str(seed), str(out)], out, f"{ds} seed {seed}",
                       env=worker_env(args.threads))  # fmt: skip
            runs[f"{ds} s{seed}"] = load_npz(out)
            rows.append(summarise(runs[f"{ds} s{seed}"], ds, seed))
    text = (
        "# Convergence: when to stop training\n\n"
        f"Command: `{command_line('benchmarks.convergence')}`\n\n"
        f"{__doc__.split(chr(10) + chr(10), 2)[2]}\n"
        f"ARI: label-free Leiden of `scmsi.tl.embed_and_cluster` against the labels, every "
        f"{args.every} epochs after pre-training and where the ELBO-only rule fires (NaN: no "
        "check there). k-NN overlap: mean share of each sampled cell's 15 nearest neighbours "
        "in the joint latent kept from one check to the next.\n\n"
        + pd.DataFrame(rows).to_markdown(index=False, floatfmt=".3f")
        + "\n\nEvery rule on every run: epochs at which it stops (ARI there).\n\n"
        + grid(runs).to_markdown(index=False)
        + "\n\n"
        + machine_line(shared=True, threads=args.threads)
        + "\n"
    )
    return publish(args.out, text)


if __name__ == "__main__":
    raise SystemExit(main())
