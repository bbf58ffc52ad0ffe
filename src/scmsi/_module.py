"""The scMSI module: per-modality encoders, self-expression over anchors, contrastive fusion."""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations

import numpy as np
import torch
from scvi import REGISTRY_KEYS
from scvi.module.base import BaseModuleClass, LossOutput, auto_move_data
from torch import nn
from torch.distributions import Normal
from torch.distributions import kl_divergence as kl

from ._encoders import make_encoder
from ._likelihoods import HEADS
from ._selfexpression import SelfExpressiveNetwork, elastic_net

_N_FINGERPRINTS = 3


@dataclass(frozen=True)
class ModalitySpec:
    """One modality: its name, type (a key of ``HEADS``), width and registry key."""

    name: str
    kind: str
    n_features: int
    registry_key: str


class SCMSIModule(BaseModuleClass):
    """Contrastive, generative, self-expressive model for M modalities.

    For each modality m: ``z^m ~ q(z | x^m, s)``; coefficients ``C^m = f_s^m(z^m, z^m_anchor)``
    over A anchor cells; rebuilt latent ``z_hat^m = C^m z^m_anchor``; ``x^m ~ p(x | z_hat^m, s)``.
    Anchor latents are re-encoded from their stored data every step, so a step costs
    O((B + A) * F) and never touches an N x N matrix.

    Parameters
    ----------
    modalities
        One :class:`ModalitySpec` per modality; the first is the reference for fingerprints.
    anchor_data
        Raw data of the anchor cells per modality name, shape ``(A, F_m)``.
    anchor_batch
        Batch index of each anchor, shape ``(A,)``.
    n_batch
        Number of batches.
    n_latent
        Latent dimension per modality.
    n_hidden, n_layers, dropout_rate
        Encoder/decoder widths, depth and encoder dropout.
    n_embed
        Query/key embedding dimension of the self-expressive networks.
    gene_likelihood
        ``"nb"`` or ``"zinb"`` for ``counts`` modalities.
    accessibility_likelihood
        ``"bernoulli"`` (binarised peaks) or ``"poisson"`` for ``accessibility`` modalities.
    lambda_se, lambda_contrast
        Weights of the self-expressive and contrastive terms (paper code: 1 and 0.1).
    gamma, lam
        Elastic-net weight and L1 share (paper: 1 and 0.9).
    protein_priors
        ``{name: (mean, scale)}``, each ``(P, n_batch)``, for ``protein`` modalities.
    """

    def __init__(
        self,
        modalities: list[ModalitySpec],
        anchor_data: dict[str, np.ndarray],
        anchor_batch: np.ndarray,
        n_batch: int = 1,
        n_latent: int = 10,
        n_hidden: int = 128,
        n_layers: int = 1,
        dropout_rate: float = 0.1,
        n_embed: int = 64,
        gene_likelihood: str = "nb",
        accessibility_likelihood: str = "bernoulli",
        lambda_se: float = 1.0,
        lambda_contrast: float = 0.1,
        gamma: float = 1.0,
        lam: float = 0.9,
        protein_priors: dict[str, tuple[np.ndarray, np.ndarray]] | None = None,
    ):
        super().__init__()
        self.modalities = list(modalities)
        self.n_batch = n_batch
        self.n_latent = n_latent
        self.lambda_se, self.lambda_contrast = lambda_se, lambda_contrast
        self.gamma, self.lam = gamma, lam
        protein_priors = protein_priors or {}

        self.encoders = nn.ModuleDict()
        self.senets = nn.ModuleDict()
        self.heads = nn.ModuleDict()
        gen = torch.Generator().manual_seed(0)
        for spec in self.modalities:
            sparse_input = spec.kind == "accessibility"
            self.encoders[spec.name] = make_encoder(
                spec.n_features, n_latent, n_batch, n_hidden, n_layers, dropout_rate, sparse_input
            )
            self.senets[spec.name] = SelfExpressiveNetwork(n_latent, n_hidden, n_embed)
            kwargs = {"n_hidden": n_hidden, "n_layers": n_layers}
            if spec.kind == "counts":
                kwargs["likelihood"] = gene_likelihood
            if spec.kind == "accessibility":
                kwargs["likelihood"] = accessibility_likelihood
            if spec.kind == "protein" and spec.name in protein_priors:
                kwargs["prior_mean"], kwargs["prior_scale"] = protein_priors[spec.name]
            self.heads[spec.name] = HEADS[spec.kind](spec.n_features, n_latent, n_batch, **kwargs)
            xa = torch.as_tensor(np.asarray(anchor_data[spec.name]), dtype=torch.float32)
            self.register_buffer(f"anchor_x_{spec.name}", xa)
            # The anchors' encoder input never changes: transform it once (sparse for peaks).
            xin = self.heads[spec.name].encoder_input(xa)
            self.register_buffer(
                f"anchor_in_{spec.name}",
                xin.to_sparse_csr() if sparse_input else xin,
                persistent=False,
            )
            self.register_buffer(
                f"fingerprint_{spec.name}",
                torch.randn(spec.n_features, _N_FINGERPRINTS, generator=gen),
            )
        self.register_buffer(
            "anchor_batch", torch.as_tensor(np.asarray(anchor_batch), dtype=torch.long)[:, None]
        )
        # Anchor data never change: fingerprint them once, not at every step.
        anchors = {s.name: self.anchor_x(s.name) for s in self.modalities}
        self.register_buffer("anchor_fingerprint", self._fingerprint(anchors), persistent=False)
        # Decoders read z during pre-training, then z_hat (see `SCMSI.train`). Starting on z_hat
        # falls into a degenerate optimum: coefficients ~0, z_hat ~0, decoders ignore it.
        self.register_buffer("decode_rebuilt", torch.tensor(True))

    @property
    def n_anchors(self) -> int:
        return int(self.anchor_batch.shape[0])

    def anchor_x(self, name: str) -> torch.Tensor:
        return getattr(self, f"anchor_x_{name}")

    def _fingerprint(self, xs: dict[str, torch.Tensor]) -> torch.Tensor:
        """Random projections of all modalities, ``(B, 3)``: equal rows = the same cell."""
        return sum(xs[s.name] @ getattr(self, f"fingerprint_{s.name}") for s in self.modalities)

    def self_mask(self, xs: dict[str, torch.Tensor]) -> torch.Tensor:
        """True where a cell is an anchor (or an exact duplicate of one), ``(B, A)``.

        Matching data rather than cell indices keeps the user's ``obs`` untouched and also
        works for out-of-sample cells.
        """
        fp = self._fingerprint(xs)
        fa = self.anchor_fingerprint
        tol = 1e-4 * (fa.abs() + 1.0)
        return ((fp[:, None, :] - fa[None, :, :]).abs() <= tol[None]).all(-1)

    def _get_inference_input(self, tensors: dict[str, torch.Tensor]) -> dict:
        return {
            "xs": {s.name: tensors[s.registry_key] for s in self.modalities},
            "batch_index": tensors[REGISTRY_KEYS.BATCH_KEY],
        }

    def _get_generative_input(self, tensors, inference_outputs) -> dict:
        key = "z_hat" if bool(self.decode_rebuilt) else "z"
        return {
            "z_hat": inference_outputs[key],
            "xs": {s.name: tensors[s.registry_key] for s in self.modalities},
            "batch_index": tensors[REGISTRY_KEYS.BATCH_KEY],
        }

    @auto_move_data
    def inference(
        self,
        xs: dict[str, torch.Tensor],
        batch_index: torch.Tensor,
        use_mean: bool = False,
    ) -> dict:
        """Encode every modality and self-express it over the anchors.

        Returns
        -------
        dict with, per modality name: ``qz`` (Normal, ``(B, n_latent)``), ``z`` (``(B, n_latent)``),
        ``z_anchor`` (``(A, n_latent)``), ``coef`` (``(B, A)``) and ``z_hat`` (``(B, n_latent)``).
        """
        mask = self.self_mask(xs)
        out: dict[str, dict] = {k: {} for k in ("qz", "z", "z_anchor", "coef", "z_hat")}
        for spec in self.modalities:
            name, head, enc = spec.name, self.heads[spec.name], self.encoders[spec.name]
            qz_m, qz_v, z = enc(head.encoder_input(xs[name]), batch_index)
            if use_mean:
                z = qz_m
            za_mean, _, za = enc(getattr(self, f"anchor_in_{name}"), self.anchor_batch)
            if use_mean:  # outputs must not depend on a draw of the anchors' latents
                za = za_mean
            coef = self.senets[name](z, za, mask)
            out["qz"][name] = Normal(qz_m, qz_v.sqrt())
            out["z"][name], out["z_anchor"][name] = z, za
            out["coef"][name], out["z_hat"][name] = coef, coef @ za
        return out

    @auto_move_data
    def generative(self, z_hat: dict, xs: dict, batch_index: torch.Tensor) -> dict:
        """Decode each modality from its rebuilt latent; returns ``{"params": {name: dict}}``."""
        return {
            "params": {
                s.name: self.heads[s.name].decode(z_hat[s.name], xs[s.name], batch_index)
                for s in self.modalities
            }
        }

    def contrastive_loss(self, coefs: dict[str, torch.Tensor]) -> torch.Tensor:
        """Per-cell ``sum_{m<m'} ||c^m - c^m'||^2 / (M-1)``, shape ``(B,)``.

        For M = 2 this is the paper's ``sum_i (c^2_i - c^1_i)^2``; for M > 2 every pair is pulled
        together with the same total weight instead of privileging one reference modality.
        """
        names = list(coefs)
        first = coefs[names[0]]
        if len(names) < 2:
            return torch.zeros(first.shape[0], device=first.device)
        total = sum((coefs[a] - coefs[b]).pow(2).sum(-1) for a, b in combinations(names, 2))
        return total / (len(names) - 1)

    def loss(
        self, tensors, inference_outputs, generative_outputs, kl_weight: float = 1.0
    ) -> LossOutput:
        """ELBO of every modality + lambda_se * self-expression + lambda_contrast * contrast."""
        batch_index = tensors[REGISTRY_KEYS.BATCH_KEY]
        rec, kl_local, se_total = {}, {}, 0.0
        for spec in self.modalities:
            name, head = spec.name, self.heads[spec.name]
            x = tensors[spec.registry_key]
            params = generative_outputs["params"][name]
            qz = inference_outputs["qz"][name]
            rec[f"reconstruction_{name}"] = head.reconstruction_loss(x, params)
            prior = Normal(torch.zeros_like(qz.loc), torch.ones_like(qz.scale))
            kl_local[f"kl_z_{name}"] = kl(qz, prior).sum(-1)
            kl_local[f"kl_extra_{name}"] = head.kl(params, batch_index)
            z, z_hat = inference_outputs["z"][name], inference_outputs["z_hat"][name]
            coef = inference_outputs["coef"][name]
            se_total = (
                se_total + (z - z_hat).pow(2).sum(-1) + self.gamma * elastic_net(coef, self.lam)
            )
        contrast = self.contrastive_loss(inference_outputs["coef"])
        per_cell = (
            sum(rec.values())
            + kl_weight * sum(kl_local.values())
            + self.lambda_se * se_total
            + self.lambda_contrast * contrast
        )
        return LossOutput(
            loss=per_cell.mean(),
            reconstruction_loss=rec,
            kl_local=kl_local,
            extra_metrics={
                "self_expression": se_total.mean().detach(),
                "contrastive": contrast.mean().detach(),
            },
        )
