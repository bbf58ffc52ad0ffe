"""Train a small synthetic model: under ``torchrun`` with DDP (gloo, CPU), else in one process.

Used by ``test_distributed.py``; writes each rank's weights and rank 0's coefficients to the
folder given as the first argument.
"""

import os
import sys
from pathlib import Path

import numpy as np

import scmsi

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root
from tests._synthetic import synthetic_cite  # noqa: E402

out = sys.argv[1]
world = int(os.environ.get("WORLD_SIZE", "1"))
rank = int(os.environ.get("RANK", "0"))
scmsi.settings.num_threads = 1
md = synthetic_cite(n_cells=400, n_genes=60, n_proteins=6, n_types=3, seed=0)
scmsi.SCMSI.setup_mudata(md, layers={"rna": "counts", "prot": "counts"})
model = scmsi.SCMSI(md, n_anchors=30, seed=0)
common = {"max_epochs": 30, "early_stopping": False, "enable_progress_bar": False}
if world > 1:
    # Each rank sees 64 cells a step and gradients are averaged: one step covers 128 cells.
    model.train(
        accelerator="cpu",
        devices=world,
        strategy="ddp_find_unused_parameters_true",
        batch_size=64,
        **common,
    )
else:
    model.train(accelerator="cpu", devices=1, batch_size=128, **common)
state = {k: v.detach().cpu().numpy() for k, v in model.module.state_dict().items()}
np.savez(f"{out}/weights_rank{rank}_of{world}.npz", **state)
if rank == 0:
    np.save(f"{out}/coef_{world}.npy", model.get_coefficients())
