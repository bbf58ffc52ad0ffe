"""One spatial model, its domains and each modality's smoothed latent, with objective overrides.

    python -m benchmarks.spatial_ablation 151674 --seed 0 [--set agreement=kl fusion=product]

Reads a DLPFC section, builds the default spatial input (``scmsi.spatial.to_mudata``), trains
``SCMSI`` with the package defaults plus the ``--set`` overrides, and prints as one JSON line:
the ARI of ``scmsi.spatial.spatial_domains`` at k = layers, and of each modality's latent
smoothed over the spot graph and clustered as the harness clusters every embedding
(:func:`benchmarks.spatial.cluster_embedding`). The guard's Visium check
(``tests/test_guard_realdata.py``) is the same model with no overrides.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.spatial_ablation")
    parser.add_argument("section")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--set", nargs="*", default=[], help="SCMSI options key=value")
    args = parser.parse_args(argv)

    from sklearn.metrics import adjusted_rand_score

    import scmsi
    from benchmarks import peers
    from benchmarks.spatial import cluster_embedding
    from scmsi import spatial as sp

    overrides = {k: peers._option(v) for k, v in (kv.split("=", 1) for kv in args.set)}
    adata = scmsi.datasets.dlpfc(args.section)
    truth = adata.obs["domain"].astype(object).to_numpy()
    ok = np.asarray([isinstance(t, str) for t in truth])
    k = len(np.unique(truth[ok]))
    mdata, kinds = sp.to_mudata(adata)
    scmsi.SCMSI.setup_mudata(mdata, modalities=kinds)
    t0 = time.perf_counter()
    model = scmsi.SCMSI(mdata, seed=args.seed, **overrides)
    model.train(enable_progress_bar=False)
    out = {
        "section": args.section,
        "seed": args.seed,
        "overrides": args.set,
        "epochs": len(model.history["elbo_train"]),
        "train_s": round(time.perf_counter() - t0, 1),
    }
    domains = np.asarray(sp.spatial_domains(mdata, model, n_domains=k, seed=args.seed))
    out["domains_ari"] = adjusted_rand_score(truth[ok], domains[ok])
    graph = mdata.obsp["spatial_connectivities"]
    latents = model.get_latent_representation(mdata)
    for mod in model.modality_names:
        labels = cluster_embedding(sp.smooth(latents[mod], graph), k, graph, args.seed)
        out[f"{mod}_latent_smoothed_ari"] = adjusted_rand_score(truth[ok], labels[ok])
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
