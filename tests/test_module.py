"""scmsi._module: the pure-torch model (inference, generative, loss) on tiny tensors."""

import numpy as np
import torch
from scvi import REGISTRY_KEYS

from scmsi._module import ModalitySpec, SCMSIModule
from scmsi._objective import resolve

N_ANCHORS, N_GENES, N_PROT = 12, 20, 5


def _cells(n: int, seed: int) -> dict[str, np.ndarray]:
    """RNA counts (no empty cell) and protein counts of ``n`` cells."""
    rng = np.random.default_rng(seed)
    return {
        "rna": rng.poisson(3.0, (n, N_GENES)).astype(np.float32) + 1,
        "prot": rng.poisson(20.0, (n, N_PROT)).astype(np.float32),
    }


def _module(**kwargs):
    specs = [
        ModalitySpec("rna", "counts", N_GENES, "x_rna"),
        ModalitySpec("prot", "protein", N_PROT, "x_prot"),
    ]
    anchors = _cells(N_ANCHORS, seed=0)
    torch.manual_seed(0)
    # the ReLU network with the best-anchor ceiling and locality-weighted L1
    objective = resolve("paper_local", n_embed=8, **{"lambda_cross": 0.0, **kwargs})
    module = SCMSIModule(specs, anchors, np.zeros(N_ANCHORS, int), objective, n_latent=4,
                         n_hidden=16)  # fmt: skip
    return module, anchors


def _tensors(xs, mask=None):
    n = len(next(iter(xs.values())))
    t = {f"x_{m}": torch.as_tensor(x) for m, x in xs.items()}
    t[REGISTRY_KEYS.BATCH_KEY] = torch.zeros(n, 1)
    if mask is not None:
        t["scmsi_mask_prot"] = torch.as_tensor(mask, dtype=torch.float32)[:, None]
    return t


def test_shapes_and_rebuilt_latent():
    module, anchors = _module()
    xs = _cells(7, seed=1)
    module.eval()
    inf, gen = module.forward(_tensors(xs), compute_loss=False)
    for m in ("rna", "prot"):
        assert inf["coef"][m].shape == (7, N_ANCHORS)
        assert (inf["coef"][m] >= 0).all()
        assert inf["z_hat"][m].shape == (7, 4)
        torch.testing.assert_close(inf["z_hat"][m], inf["coef"][m] @ inf["z_anchor"][m])
        assert inf["observed"][m].all()
    assert set(gen["params"]) == {"rna", "prot"}


def test_an_anchor_does_not_express_itself():
    module, anchors = _module()
    module.eval()
    inf, _ = module.forward(_tensors(anchors), compute_loss=False)
    for m in ("rna", "prot"):
        diag = torch.diagonal(inf["coef"][m])
        assert torch.all(diag == 0), m


def test_a_missing_modality_is_rebuilt_and_costs_nothing():
    module, _ = _module()
    xs = _cells(6, seed=2)
    has = np.array([1, 1, 1, 0, 0, 0])
    module.eval()
    inf, _, loss = module.forward(_tensors(xs, has))
    lacks = torch.as_tensor(has == 0)
    # a cell without protein: its protein coefficients are its RNA ones, z^prot = z_hat^prot
    torch.testing.assert_close(inf["coef"]["prot"][lacks], inf["coef"]["rna"][lacks])
    torch.testing.assert_close(inf["z"]["prot"][lacks], inf["z_hat"]["prot"][lacks])
    assert (loss.reconstruction_loss["reconstruction_prot"][lacks] == 0).all()
    assert (loss.reconstruction_loss["reconstruction_prot"][~lacks] > 0).all()
    assert torch.isfinite(loss.loss)


def test_the_loss_trains_every_modality():
    module, anchors = _module(lambda_cross=0.5)
    module.train()
    _, _, loss = module.forward(_tensors(anchors))
    loss.loss.backward()
    for m in ("rna", "prot"):
        grads = [p.grad for p in module.encoders[m].parameters() if p.requires_grad]
        assert any(g is not None and g.abs().sum() > 0 for g in grads), m
        grads = [p.grad for p in module.senets[m].parameters() if p.requires_grad]
        assert any(g is not None and g.abs().sum() > 0 for g in grads), m
    assert "cross_expression" in loss.extra_metrics
