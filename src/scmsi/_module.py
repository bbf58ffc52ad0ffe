"""The scMSI module: per-modality encoders, self-expression over anchors, contrastive fusion."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import combinations, permutations

import numpy as np
import torch
from scvi import REGISTRY_KEYS
from scvi.module.base import BaseModuleClass, LossOutput, auto_move_data
from torch import nn
from torch.distributions import Normal
from torch.distributions import kl_divergence as kl

from ._encoders import make_encoder
from ._likelihoods import HEADS
from ._mosaic import mask_registry_key
from ._objective import Objective, ReluOptions
from ._selfexpression import (
    SelfExpressiveNetwork,
    SoftmaxSelfExpression,
    directed_kl,
    elastic_net,
    locality_weights,
    neighbourhood_capture,
    self_expression_error,
    symmetric_kl,
    teaching_gate,
)

_N_FINGERPRINTS = 3


@dataclass(frozen=True)
class ModalitySpec:
    """One modality: its name, type (a key of ``HEADS``), width and registry key.

    ``context_key``: registry key of the modality's neighbourhood input (e.g. the mean of a
    spot's spatial neighbours, :func:`scmsi.spatial.to_mudata`), ``(N, n_features)``; the
    encoder then reads ``[own input, neighbourhood input]``. None: the encoder reads the cell.
    """

    name: str
    kind: str
    n_features: int
    registry_key: str
    context_key: str | None = None


class SCMSIModule(BaseModuleClass):
    """Contrastive, generative, self-expressive model for M modalities.

    For each modality m: ``z^m ~ q(z | x^m, s)``; coefficients ``C^m = f_s^m(z^m, z^m_anchor)``
    over A anchor cells; rebuilt latent ``z_hat^m = C^m z^m_anchor``; ``x^m ~ p(x | z_hat^m, s)``.
    Anchor latents are re-encoded from their stored data every step, so a step costs
    O((B + A) * F) and never touches an N x N matrix.

    Mosaic data: a per-cell mask per modality (``tensors["scmsi_mask_<m>"]``, all ones when
    absent) says which cells have it. A cell's terms of modality m (likelihood, KL,
    self-expression, contrast with another modality) count only where it has m; where it lacks
    m, its coefficients there are the mean of its other modalities' coefficients, which
    rebuild (impute) its latent ``z_hat^m`` over the anchors.

    Parameters
    ----------
    modalities
        One :class:`ModalitySpec` per modality; the first is the reference for fingerprints.
    anchor_data
        Raw data of the anchor cells per modality name, shape ``(A, F_m)``.
    anchor_batch
        Batch index of each anchor, shape ``(A,)``.
    objective
        The resolved :class:`~scmsi._objective.Objective` (loss weights, coefficient type and
        its options, agreement, error, anchor gradients), with ``lambda_cross`` a number. The
        module has no loss options of its own: they are documented there.
    n_batch
        Number of batches.
    n_cats_per_cov
        Number of categories of each extra categorical covariate; like the batch, they enter
        every encoder and decoder one-hot.
    anchor_cat_covs
        Category codes of the anchors, shape ``(A, len(n_cats_per_cov))``.
    n_latent
        Latent dimension per modality.
    n_hidden, n_layers, dropout_rate
        Encoder/decoder widths, depth and encoder dropout.
    gene_likelihood
        ``"nb"`` or ``"zinb"`` for ``counts`` modalities.
    accessibility_likelihood
        ``"bernoulli"`` (binarised peaks) or ``"poisson"`` for ``accessibility`` modalities.
    protein_priors
        ``{name: (mean, scale)}``, each ``(P, n_batch)``, for ``protein`` modalities.
    anchor_context
        Neighbourhood input of the anchors, ``{name: (A, F_m)}``, for the modalities with a
        ``context_key``.
    """

    def __init__(
        self,
        modalities: list[ModalitySpec],
        anchor_data: dict[str, np.ndarray],
        anchor_batch: np.ndarray,
        objective: Objective,
        n_batch: int = 1,
        n_cats_per_cov: Sequence[int] = (),
        anchor_cat_covs: np.ndarray | None = None,
        n_latent: int = 10,
        n_hidden: int = 128,
        n_layers: int = 1,
        dropout_rate: float = 0.1,
        gene_likelihood: str = "nb",
        accessibility_likelihood: str = "bernoulli",
        protein_priors: dict[str, tuple[np.ndarray, np.ndarray]] | None = None,
        anchor_context: dict[str, np.ndarray] | None = None,
    ):
        super().__init__()
        if objective.lambda_cross is None:
            raise ValueError("The module needs a number for lambda_cross (the model sets it).")
        self.objective = objective
        self.modalities = list(modalities)
        self.n_batch = n_batch
        self.n_cats_per_cov = [int(n) for n in n_cats_per_cov]
        self.n_latent = n_latent
        protein_priors = protein_priors or {}

        self.encoders = nn.ModuleDict()
        self.senets = nn.ModuleDict()
        self.heads = nn.ModuleDict()
        gen = torch.Generator().manual_seed(0)
        arch = {"n_hidden": n_hidden, "n_layers": n_layers, "dropout_rate": dropout_rate}
        likelihoods = {"counts": gene_likelihood, "accessibility": accessibility_likelihood}
        for spec in self.modalities:
            self._add_modality(
                spec,
                arch,
                likelihoods.get(spec.kind),
                protein_priors.get(spec.name),
                anchor_data[spec.name],
                (anchor_context or {}).get(spec.name),
                gen,
            )
        self.register_buffer(
            "anchor_batch", torch.as_tensor(np.asarray(anchor_batch), dtype=torch.long)[:, None]
        )
        if self.n_cats_per_cov:  # only then: models saved without covariates load as before
            covs = np.zeros((self.n_anchors, len(self.n_cats_per_cov)), dtype=np.int64)
            if anchor_cat_covs is not None:
                covs = np.asarray(anchor_cat_covs, dtype=np.int64).reshape(covs.shape)
            self.register_buffer("anchor_cat_covs", torch.as_tensor(covs))
        self.register_buffer("anchor_fingerprint", None, persistent=False)
        self._cache_anchor_inputs()
        # `load`/`load_query_data` replace the anchors' data: derive the caches again.
        self.register_load_state_dict_post_hook(_refresh_anchor_caches)
        # Decoders read z during pre-training, then z_hat (see `SCMSI.train`). Starting on z_hat
        # falls into a degenerate optimum: coefficients ~0, z_hat ~0, decoders ignore it.
        self.register_buffer("decode_rebuilt", torch.tensor(True))

    def _add_modality(
        self, spec: ModalitySpec, arch: dict, likelihood, prior, anchor_x, anchor_ctx, gen
    ) -> None:
        """Encoder, self-expressive network, likelihood head and anchor buffers of one
        modality (built in this order: the initial weights depend on it)."""
        sparse_input = spec.kind == "accessibility"
        if spec.context_key is not None and sparse_input:
            raise ValueError("A neighbourhood input is not supported for accessibility.")
        self.encoders[spec.name] = make_encoder(
            spec.n_features * (2 if spec.context_key is not None else 1),
            self.n_latent,
            self.n_batch,
            arch["n_hidden"],
            arch["n_layers"],
            arch["dropout_rate"],
            sparse_input,
            self.n_cats_per_cov,
        )
        self.senets[spec.name] = _self_expression(self.objective, self.n_latent, arch["n_hidden"])
        kwargs = {
            "n_hidden": arch["n_hidden"],
            "n_layers": arch["n_layers"],
            "n_cats_per_cov": self.n_cats_per_cov,
        }
        if likelihood is not None:
            kwargs["likelihood"] = likelihood
        if spec.kind == "protein" and prior is not None:
            kwargs["prior_mean"], kwargs["prior_scale"] = prior
        self.heads[spec.name] = HEADS[spec.kind](
            spec.n_features, self.n_latent, self.n_batch, **kwargs
        )
        xa = torch.as_tensor(np.asarray(anchor_x), dtype=torch.float32)
        self.register_buffer(f"anchor_x_{spec.name}", xa)
        if spec.context_key is not None:
            xc = torch.as_tensor(np.asarray(anchor_ctx), dtype=torch.float32)
            self.register_buffer(f"anchor_ctx_{spec.name}", xc)
        self.register_buffer(f"anchor_in_{spec.name}", None, persistent=False)
        self.register_buffer(
            f"fingerprint_{spec.name}",
            torch.randn(spec.n_features, _N_FINGERPRINTS, generator=gen),
        )

    @property
    def n_anchors(self) -> int:
        return int(self.anchor_batch.shape[0])

    def anchor_x(self, name: str) -> torch.Tensor:
        return getattr(self, f"anchor_x_{name}")

    def _cats(self, cat_covs: torch.Tensor | None) -> list[torch.Tensor]:
        """``(B, n_cov)`` covariate codes -> one ``(B, 1)`` tensor per covariate (scvi-tools)."""
        if not self.n_cats_per_cov:
            return []
        if cat_covs is None:
            raise ValueError("The model has categorical covariates; the data must have them.")
        return list(torch.split(cat_covs, 1, dim=1))

    def _anchor_cats(self) -> list[torch.Tensor]:
        return self._cats(self.anchor_cat_covs) if self.n_cats_per_cov else []

    @torch.no_grad()
    def _cache_anchor_inputs(self) -> None:
        """Anchor data never change: fingerprint them and transform their encoder input once
        (sparse for peaks), not at every step."""
        anchors = {s.name: self.anchor_x(s.name) for s in self.modalities}
        self.anchor_fingerprint = self._fingerprint(anchors)
        for s in self.modalities:
            ctx = getattr(self, f"anchor_ctx_{s.name}", None)
            xin = self.encoder_input(s.name, anchors[s.name], ctx)
            setattr(
                self,
                f"anchor_in_{s.name}",
                xin.to_sparse_csr() if s.kind == "accessibility" else xin,
            )

    def encoder_input(
        self, name: str, x: torch.Tensor, context: torch.Tensor | None = None
    ) -> torch.Tensor:
        """What modality ``name``'s encoder reads: its head's transform of ``x`` ``(B, F)``,
        followed, for a modality with a neighbourhood input, by the same transform of
        ``context`` ``(B, F)`` -> ``(B, 2F)``. Minibatches stay independent: the neighbourhood
        is an input column block, precomputed once (O(N k F)), not a graph in the batch."""
        head = self.heads[name]
        xin = head.encoder_input(x)
        if self._context_keys.get(name) is None:
            return xin
        if context is None:
            raise ValueError(f"Modality {name!r} needs its neighbourhood input.")
        return torch.cat([xin, head.encoder_input(context)], -1)

    @property
    def _context_keys(self) -> dict[str, str | None]:
        return {s.name: s.context_key for s in self.modalities}

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
            "cat_covs": tensors.get(REGISTRY_KEYS.CAT_COVS_KEY),
            "contexts": {s.name: tensors[s.context_key] for s in self.modalities if s.context_key},
            "observed": {
                s.name: tensors[mask_registry_key(s.name)]
                for s in self.modalities
                if mask_registry_key(s.name) in tensors
            },
        }

    def _get_generative_input(self, tensors, inference_outputs) -> dict:
        key = "z_hat" if bool(self.decode_rebuilt) else "z"
        return {
            "z_hat": inference_outputs[key],
            "xs": {s.name: tensors[s.registry_key] for s in self.modalities},
            "batch_index": tensors[REGISTRY_KEYS.BATCH_KEY],
            "cat_covs": tensors.get(REGISTRY_KEYS.CAT_COVS_KEY),
        }

    def _observed(self, xs: dict, observed: dict | None) -> dict[str, torch.Tensor]:
        """Boolean ``(B,)`` per modality; modalities without a mask are observed everywhere."""
        observed = observed or {}
        out = {}
        for s in self.modalities:
            x = xs[s.name]
            m = observed.get(s.name)
            out[s.name] = (
                torch.ones(x.shape[0], dtype=torch.bool, device=x.device)
                if m is None
                else m.reshape(-1).to(x.device) > 0.5
            )
        return out

    @staticmethod
    def _mean_over(coefs: list[torch.Tensor], weights: list[torch.Tensor]):
        """Mean of coefficient matrices ``(B, A)`` over the rows' observed modalities."""
        total = sum(c * w.float()[:, None] for c, w in zip(coefs, weights, strict=True))
        count = sum(w.float() for w in weights)
        return total / count.clamp(min=1.0)[:, None], count > 0

    def anchor_latents(self) -> dict[str, torch.Tensor]:
        """Posterior means of the anchors' latents, ``{name: (A, n_latent)}``.

        In eval mode they are the same for every minibatch: encoding them once per pass over
        the data, rather than once per minibatch, is what keeps inference on N cells at the cost
        of encoding N cells (:meth:`inference`'s ``z_anchor``).
        """
        return {s.name: self.encode_anchors(s.name)[0] for s in self.modalities}

    def encode_anchors(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior mean and a draw of the anchors' latents of modality ``name``, each
        ``(A, n_latent)``, from their cached encoder input."""
        mean, _, draw = self.encoders[name](
            getattr(self, f"anchor_in_{name}"), self.anchor_batch, *self._anchor_cats()
        )
        return mean, draw

    @auto_move_data
    def inference(
        self,
        xs: dict[str, torch.Tensor],
        batch_index: torch.Tensor,
        observed: dict[str, torch.Tensor] | None = None,
        cat_covs: torch.Tensor | None = None,
        use_mean: bool = False,
        z_anchor: dict[str, torch.Tensor] | None = None,
        contexts: dict[str, torch.Tensor] | None = None,
    ) -> dict:
        """Encode every modality and self-express it over the anchors.

        ``z_anchor``: the anchors' latents from :meth:`anchor_latents`, reused across the
        minibatches of an evaluation pass (with ``use_mean``); None encodes them here.
        ``contexts``: neighbourhood inputs ``{name: (B, F)}`` of the modalities that have one.

        Returns
        -------
        dict with, per modality name: ``qz`` (Normal, ``(B, n_latent)``), ``z`` (``(B, n_latent)``),
        ``z_anchor`` (``(A, n_latent)``), ``coef`` (``(B, A)``), ``z_hat`` (``(B, n_latent)``) and
        ``observed`` (bool ``(B,)``), plus ``logit`` (``(B, A)``, the modality's own, also where
        the cell lacks it) with softmax coefficients. Where a cell lacks modality m, ``coef``
        is the mean of its observed modalities' coefficients and ``z`` equals ``z_hat``.
        """
        mask = self.self_mask(xs)
        obs = self._observed(xs, observed)
        cats = self._cats(cat_covs)
        out: dict[str, dict] = {k: {} for k in ("qz", "z", "z_anchor", "coef", "z_hat", "logit")}
        for spec in self.modalities:
            name, enc = spec.name, self.encoders[spec.name]
            xin = self.encoder_input(name, xs[name], (contexts or {}).get(name))
            qz_m, qz_v, z = enc(xin, batch_index, *cats)
            if use_mean:
                z = qz_m
            if z_anchor is not None:
                za = z_anchor[name]
            else:
                with torch.set_grad_enabled(self.objective.anchor_grad and torch.is_grad_enabled()):
                    za_mean, za = self.encode_anchors(name)
                if use_mean or not self.objective.anchor_grad:  # no draw: targets, not samples
                    za = za_mean
            out["qz"][name] = Normal(qz_m, qz_v.sqrt())
            out["z"][name], out["z_anchor"][name] = z, za
            senet = self.senets[name]
            if isinstance(senet, SoftmaxSelfExpression):
                out["logit"][name] = senet.logits(z, za, mask)
                out["coef"][name] = torch.softmax(out["logit"][name], -1)
            else:
                out["coef"][name] = senet(z, za, mask)
        names = [s.name for s in self.modalities]
        if not all(bool(obs[n].all()) for n in names):
            imputed, _ = self._mean_over([out["coef"][n] for n in names], [obs[n] for n in names])
            for n in names:
                out["coef"][n] = torch.where(obs[n][:, None], out["coef"][n], imputed)
        for n in names:
            out["z_hat"][n] = out["coef"][n] @ out["z_anchor"][n]
            out["z"][n] = torch.where(obs[n][:, None], out["z"][n], out["z_hat"][n])
        out["observed"] = obs
        return out

    @torch.inference_mode()
    def cross_modal(
        self,
        xs: dict[str, torch.Tensor],
        batch_index: torch.Tensor,
        target: str,
        sources: list[str],
        observed: dict[str, torch.Tensor] | None = None,
        cat_covs: torch.Tensor | None = None,
        decode_batch: torch.Tensor | None = None,
        sample: bool = False,
        include_protein_background: bool = False,
        contexts: dict[str, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Decode ``target`` from the mean coefficients of the observed ``sources``.

        ``sample`` draws the sources' latents from ``q(z | x)`` (posterior means otherwise).
        Returns the normalised profile ``(B, F_target)`` (see :func:`expression`) and whether
        each row had a source.
        """
        xs = {k: v.to(self.device) for k, v in xs.items()}
        batch_index = batch_index.to(self.device)
        observed = {k: v.to(self.device) for k, v in (observed or {}).items()}
        cats = self._cats(None if cat_covs is None else cat_covs.to(self.device))
        mask = self.self_mask(xs)
        obs = self._observed(xs, observed)
        coefs = []
        contexts = {k: v.to(self.device) for k, v in (contexts or {}).items()}
        for m in sources:
            enc = self.encoders[m]
            qz_m, _, z = enc(self.encoder_input(m, xs[m], contexts.get(m)), batch_index, *cats)
            za = self.encode_anchors(m)[0]
            coefs.append(self.senets[m](z if sample else qz_m, za, mask))
        coef, has_source = self._mean_over(coefs, [obs[m] for m in sources])
        head = self.heads[target]
        za_t = self.encode_anchors(target)[0]
        b = batch_index if decode_batch is None else decode_batch.to(self.device)
        params = head.decode(coef @ za_t, xs[target], b, *cats)
        return expression(head, params, include_protein_background), has_source

    @torch.inference_mode()
    def coefficient_variance(
        self,
        xs: dict[str, torch.Tensor],
        inference_outputs: dict,
        n_draws: int = 25,
        generator: torch.Generator | None = None,
    ) -> dict[str, torch.Tensor]:
        """Posterior variance of each modality's normalised coefficients, ``{name: (B,)}``.

        ``z^m ~ q(z^m | x^m)`` is drawn ``n_draws`` times (anchors at their posterior means, as
        in ``inference_outputs``); each draw's coefficients are normalised to sum to 1 and their
        variance is summed over anchors: how uncertain modality m is about the cell's
        neighbours, in the same units (anchor mass) for every modality. ``inf`` where the cell
        lacks m. ``generator`` seeds the draws (reproducible weights).
        """
        mask = self.self_mask(xs)
        out = {}
        for name, qz in inference_outputs["qz"].items():
            za = inference_outputs["z_anchor"][name]
            draws = []
            for _ in range(n_draws):
                eps = torch.randn(qz.loc.shape, generator=generator, device=qz.loc.device)
                c = self.senets[name](qz.loc + qz.scale * eps, za, mask)
                draws.append(c / c.sum(-1, keepdim=True).clamp_min(1e-12))
            var = torch.stack(draws).var(0).sum(-1)
            has = inference_outputs["observed"][name]
            out[name] = torch.where(has, var, torch.full_like(var, float("inf")))
        return out

    @auto_move_data
    def generative(
        self,
        z_hat: dict,
        xs: dict,
        batch_index: torch.Tensor,
        cat_covs: torch.Tensor | None = None,
        transform_batch: int | None = None,
    ) -> dict:
        """Decode each modality from its rebuilt latent; returns ``{"params": {name: dict}}``.

        ``transform_batch``: decode every cell as this batch (encoding used the cell's own).
        """
        if transform_batch is not None:
            batch_index = torch.full_like(batch_index, transform_batch)
        cats = self._cats(cat_covs)
        return {
            "params": {
                s.name: self.heads[s.name].decode(z_hat[s.name], xs[s.name], batch_index, *cats)
                for s in self.modalities
            }
        }

    def contrastive_loss(
        self, coefs: dict[str, torch.Tensor], observed: dict[str, torch.Tensor] | None = None
    ) -> torch.Tensor:
        """Per-cell ``sum_{m<m'} ||c^m - c^m'||^2 / (M-1)``, shape ``(B,)``.

        For M = 2 this is the paper's ``sum_i (c^2_i - c^1_i)^2``; for M > 2 every pair is pulled
        together with the same total weight instead of privileging one reference modality. A
        pair counts only for cells that have both modalities (``observed``).
        """
        return _over_pairs(coefs, observed, lambda a, b: (a - b).pow(2).sum(-1))

    def agreement_loss(
        self, logits: dict[str, torch.Tensor], observed: dict[str, torch.Tensor] | None = None
    ) -> torch.Tensor:
        """Per-cell ``sum_{m<m'} KL(c^m || c^m') + KL(c^m' || c^m)`` over ``M - 1``, ``(B,)``.

        :func:`~scmsi._selfexpression.symmetric_kl` of every pair of modalities' anchor
        distributions, counted where the cell has both (``observed``).
        """
        return _over_pairs(logits, observed, symmetric_kl)

    def directed_agreement_loss(self, inf: dict, observed: dict) -> torch.Tensor:
        """Per-cell ``sum_{s != t} g_st KL(p^s || p^t)`` over ``M - 1``, ``(B,)``.

        Modality t learns the cell's anchor distribution ``p^s`` of modality s with the weight
        ``g_st`` of :func:`~scmsi._selfexpression.teaching_gate` (0 unless s's anchors find
        t's neighbours better than the reverse), and ``p^s`` is not differentiated: a view
        that knows a cell better pulls the other one towards it and is never pulled back.
        The symmetric KL (``agreement="kl"``) pulls both ways, and dragged a strong view
        (SNARE-seq RNA) towards a weak one. Counted where the cell has both modalities.
        """
        names = list(inf["logit"])
        first = inf["logit"][names[0]]
        total = torch.zeros(first.shape[0], device=first.device)
        if len(names) < 2:
            return total
        kappa = neighbourhood_capture(inf["z"], inf["z_anchor"], inf["coef"])
        for s, t in permutations(names, 2):
            d = teaching_gate(kappa, s, t) * directed_kl(inf["logit"][s], inf["logit"][t])
            total = total + torch.where(observed[s] & observed[t], d, torch.zeros_like(d))
        return total / (len(names) - 1)

    def cross_expression_loss(
        self, tensors: dict, inference_outputs: dict, observed: dict
    ) -> torch.Tensor:
        """Per-cell cross-modal reconstruction, shape ``(B,)``.

        For every ordered pair of modalities (m', m), modality m is decoded from its latent
        rebuilt with the coefficients of m', ``C^m' z^m_anchor``, and scored by m's likelihood;
        summed over pairs, divided by ``M - 1``, counted only where the cell has both. This is
        how a missing modality is imputed, trained on the cells that have both.
        """
        coef, za = inference_outputs["coef"], inference_outputs["z_anchor"]
        names = list(coef)
        first = coef[names[0]]
        total = torch.zeros(first.shape[0], device=first.device)
        if len(names) < 2:
            return total
        batch_index = tensors[REGISTRY_KEYS.BATCH_KEY]
        cats = self._cats(tensors.get(REGISTRY_KEYS.CAT_COVS_KEY))
        spec = {s.name: s for s in self.modalities}
        for m in names:
            x = tensors[spec[m].registry_key]
            for src in names:
                if src == m:
                    continue
                params = self.heads[m].decode(coef[src] @ za[m], x, batch_index, *cats)
                nll = self.heads[m].reconstruction_loss(x, params)
                both = observed[m] & observed[src]
                total = total + torch.where(both, nll, torch.zeros_like(nll))
        return total / (len(names) - 1)

    def loss(
        self, tensors, inference_outputs, generative_outputs, kl_weight: float = 1.0
    ) -> LossOutput:
        """ELBO of every modality + lambda_se * self-expression + lambda_contrast * contrast.

        Each modality's terms count only for the cells that have it.
        """
        batch_index = tensors[REGISTRY_KEYS.BATCH_KEY]
        obs = inference_outputs.get("observed") or self._observed(
            {s.name: tensors[s.registry_key] for s in self.modalities}, None
        )
        rec, kl_local, se_total = {}, {}, 0.0
        for spec in self.modalities:
            name, head = spec.name, self.heads[spec.name]
            x = tensors[spec.registry_key]
            params = generative_outputs["params"][name]
            qz = inference_outputs["qz"][name]
            has = obs[name]

            def keep(v, has=has):
                return torch.where(has, v, torch.zeros_like(v))

            rec[f"reconstruction_{name}"] = keep(head.reconstruction_loss(x, params))
            prior = Normal(torch.zeros_like(qz.loc), torch.ones_like(qz.scale))
            kl_local[f"kl_z_{name}"] = keep(kl(qz, prior).sum(-1))
            kl_local[f"kl_extra_{name}"] = keep(head.kl(params, batch_index))
            z, z_hat = inference_outputs["z"][name], inference_outputs["z_hat"][name]
            coef = inference_outputs["coef"][name]
            za = inference_outputs["z_anchor"][name]
            se_err = self_expression_error(z, z_hat, za, self.objective.scale_free)
            opts = self.objective.options
            if isinstance(opts, ReluOptions):
                w = locality_weights(z, za) if opts.locality else None
                se_err = se_err + opts.gamma * elastic_net(coef, opts.lam, w)
            se_total = se_total + keep(se_err)
        if self.objective.agreement == "directed":
            contrast = self.directed_agreement_loss(inference_outputs, obs)
        elif self.objective.agreement == "kl":
            contrast = self.agreement_loss(inference_outputs["logit"], obs)
        else:
            contrast = self.contrastive_loss(inference_outputs["coef"], obs)
        per_cell = (
            sum(rec.values())
            + kl_weight * sum(kl_local.values())
            + self.objective.lambda_se * se_total
            + self.objective.lambda_contrast * contrast
        )
        extra = {}
        if self.objective.lambda_cross > 0:
            cross = self.cross_expression_loss(tensors, inference_outputs, obs)
            per_cell = per_cell + self.objective.lambda_cross * cross
            extra["cross_expression"] = cross.mean().detach()
        return LossOutput(
            loss=per_cell.mean(),
            reconstruction_loss=rec,
            kl_local=kl_local,
            extra_metrics={
                "self_expression": se_total.mean().detach(),
                "contrastive": contrast.mean().detach(),
                **extra,
            },
        )


def _over_pairs(
    values: dict[str, torch.Tensor],
    observed: dict[str, torch.Tensor] | None,
    term: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
) -> torch.Tensor:
    """Per-cell ``sum_{m<m'} term(v^m, v^m')`` over ``M - 1``, ``(B,)``: every pair of
    modalities with the same total weight, counted where the cell has both (``observed``)."""
    names = list(values)
    first = values[names[0]]
    total = torch.zeros(first.shape[0], device=first.device)
    for a, b in combinations(names, 2):
        d = term(values[a], values[b])
        if observed is not None:
            d = torch.where(observed[a] & observed[b], d, torch.zeros_like(d))
        total = total + d
    return total / max(len(names) - 1, 1)


def _self_expression(objective: Objective, n_latent: int, n_hidden: int) -> nn.Module:
    """The self-expressive network of the objective's coefficient type."""
    opts = objective.options
    if isinstance(opts, ReluOptions):
        return SelfExpressiveNetwork(n_latent, n_hidden, opts.n_embed, opts.ceiling)
    return SoftmaxSelfExpression(n_latent, opts.perplexity)


def expression(head, params: dict, include_protein_background: bool = False) -> torch.Tensor:
    """Decoded profile: ``head.normalized`` (denoised), or for protein with background the
    mean of the background/foreground mixture (expected counts, as totalVI's
    ``include_protein_background``)."""
    if include_protein_background and "rate_back" in params:
        fg = head.foreground_probability(params)
        return (1 - fg) * params["rate_back"] + fg * params["rate_fore"]
    return head.normalized(params)


def _refresh_anchor_caches(module: SCMSIModule, incompatible_keys) -> None:
    module._cache_anchor_inputs()
