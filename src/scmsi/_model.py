"""The user-facing scMSI model: data registration, anchors, training and outputs.

Kept whole (over the 900-line limit of tests/test_architecture.py) because it is one class,
:class:`SCMSI`, as scvi-tools' models are: its methods share the registry, the anchors and
the minibatch loop (``_outputs``), and splitting a class across modules by mixins would hide
where a method comes from. What is not the class lives elsewhere: the objective's options in
``_objective``, the fusion rules in ``_fusion``, clustering in ``_cluster``, mosaic fields in
``_mosaic``, input checks in ``_validation``.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import logging
import os
import re
import signal
import threading
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import replace

import numpy as np
import pandas as pd
import scvi
import torch
from anndata import AnnData
from lightning.pytorch.callbacks import Callback
from mudata import MuData
from scipy import sparse
from scvi import REGISTRY_KEYS
from scvi.data import AnnDataManager, AnnDataManagerValidationCheck, fields
from scvi.model.base import ArchesMixin, BaseModelClass, UnsupervisedTrainingMixin
from scvi.train import TrainingPlan

from . import _validation as val
from ._anchors import anchor_features, default_n_anchors, select_anchors
from ._backed import dense, read_rows
from ._constants import CONTEXT_LAYERS_KEY, MODALITY_TYPES_KEY, declared_modality_types
from ._fusion import (
    INPUT_RELIABILITY_CELLS,
    N_WEIGHT_DRAWS,
    Fusion,
    WeightMethod,
    _cross_rebuild_errors,
    check_fusion,
    check_weight_method,
    error_scale,
    fuse,
    fusion_scale,
    input_reliability,
    modality_weights,
    precision_weights,
    reliability_weights,
    top_k_sparse,
)
from ._likelihoods import HEADS, protein_background_prior
from ._module import ModalitySpec, SCMSIModule, expression
from ._mosaic import (
    MuDataObservedField,
    _ObservedField,
    has_key,
    mask_registry_key,
    observed_mask,
    prepare_query,
)
from ._objective import PRESET_ALIASES, PRESETS, Objective, ReluOptions, SoftmaxOptions, resolve
from ._quiet import log_every_n_steps, quiet_lightning
from ._selfexpression import neighbourhood_capture
from ._settings import settings

logger = logging.getLogger(__name__)

_KIND_BY_NAME = {
    "rna": "counts",
    "gex": "counts",
    "gene": "counts",
    "genes": "counts",
    "prot": "protein",
    "protein": "protein",
    "adt": "protein",
    "proteins": "protein",
    "atac": "accessibility",
    "peaks": "accessibility",
    "accessibility": "accessibility",
}
_ANNDATA_RNA, _ANNDATA_PROT = "rna", "prot"
_MIN_EPOCHS = 10
# True while `load`/`load_query_data` build a model whose anchors come from a saved state.
_FROM_STATE = contextvars.ContextVar("scmsi_from_state", default=False)


def _registry_key(name: str) -> str:
    return f"scmsi_{name}"


def _context_registry_key(name: str) -> str:
    return f"scmsi_context_{name}"


_VALIDATION = AnnDataManagerValidationCheck(check_fully_paired_mudata=False)


class _TrainingPlan(TrainingPlan):
    """scvi-tools' plan, with the module's extra metrics logged outside inference mode.

    scvi-tools logs them inside ``torch.inference_mode()``; under DDP Lightning then averages
    them across processes in place, which inference tensors forbid, and training fails at the
    first epoch end.
    """

    def compute_and_log_metrics(self, loss_output, metrics, mode):
        extra = loss_output.extra_metrics
        object.__setattr__(loss_output, "extra_metrics", {})  # LossOutput is frozen-like
        try:
            super().compute_and_log_metrics(loss_output, metrics, mode)
        finally:
            object.__setattr__(loss_output, "extra_metrics", extra)
        for key, value in extra.items():
            self.log(
                f"{key}_{mode}",
                value,
                on_step=self.on_step,
                on_epoch=self.on_epoch,
                batch_size=loss_output.n_obs_minibatch,
                sync_dist=self.use_sync_dist,
            )


class SCMSI(ArchesMixin, UnsupervisedTrainingMixin, BaseModelClass):
    """scMSI: one cell-cell affinity that every modality agrees on.

    Each modality has its own encoder, latent space and decoder; each cell's latent is rebuilt
    from a fixed set of anchor cells by a self-expressive network, and a contrastive term pulls
    the modalities' coefficients (cells x anchors) together. The fused coefficients are the
    affinity used for clustering and embedding (:func:`scmsi.tl.embed_and_cluster`).

    Parameters
    ----------
    adata
        MuData registered with :meth:`setup_mudata`, or AnnData registered with
        :meth:`setup_anndata`.
    n_latent
        Latent dimension per modality (10 in every experiment of the paper).
    n_anchors
        Number of anchor cells; default :func:`scmsi._anchors.default_n_anchors` (8 sqrt(N),
        clipped to [50, 512]). Ignored when ``anchors`` is given.
    anchors
        Anchor cells as integer positions or cell names; chosen by PCA + K-means when None.
    anchor_modality
        Modality whose PCA is clustered to choose anchors; default the first modality of
        type ``counts``, else ``continuous``, ``accessibility``, ``protein``.
    n_hidden, n_layers, dropout_rate
        Network widths, depth and encoder dropout.
    gene_likelihood
        ``"nb"`` (default) or ``"zinb"`` for ``counts`` modalities.
    accessibility_likelihood
        ``"bernoulli"`` (default; peaks binarised, as PeakVI/MultiVI) or ``"poisson"``
        (integer fragment counts) for ``accessibility`` modalities.
    objective
        The training objective, with the fusion and embedding that go with it: a name of
        :data:`~scmsi._objective.PRESETS` (``"default"``: softmax coefficients, KL agreement,
        product fusion, joint-latent embedding; ``"paper"``: the published objective;
        ``"paper_local"``: the paper plus a best-anchor ceiling, locality-weighted L1 and a
        scale-free error) or an :class:`~scmsi._objective.Objective`. Stored, resolved, as
        ``model.objective``. ``preset=`` is a deprecated name of this argument, and
        ``"v0.1"`` of ``"paper_local"``.
    seed
        Sets ``scvi.settings.seed`` before anchor selection, initialisation and training, so the
        same seed gives the same result on the same machine.
    **overrides
        Options of the objective that differ from the preset's, e.g. ``lambda_contrast=0.5``
        or ``fusion="mean"``; every option is documented in :class:`~scmsi._objective.Objective`
        (``lambda_cross`` None: 1 when some cells lack a modality, else 0). An option that the
        objective's coefficient type ignores (``gamma`` under softmax coefficients) raises a
        ValueError naming it.

    Examples
    --------
    >>> scmsi.SCMSI.setup_mudata(mdata, modalities={"rna": "counts", "prot": "protein"},
    ...                          layers={"rna": "counts", "prot": None})
    >>> model = scmsi.SCMSI(mdata)
    >>> model.train()
    >>> scmsi.tl.embed_and_cluster(mdata, model)
    """

    _module_cls = SCMSIModule
    _training_plan_cls = _TrainingPlan

    def __init__(
        self,
        adata: MuData | AnnData,
        n_latent: int = 10,
        n_anchors: int | None = None,
        anchors: Sequence[int] | Sequence[str] | None = None,
        anchor_modality: str | None = None,
        n_hidden: int = 128,
        n_layers: int = 1,
        dropout_rate: float = 0.1,
        gene_likelihood: str = "nb",
        accessibility_likelihood: str = "bernoulli",
        *,
        objective: str | Objective = "default",
        seed: int = 0,
        **overrides,
    ):
        super().__init__(adata)
        self.init_params_ = self._get_init_params(locals())
        objective, self.preset = _objective_of(objective, overrides)
        self.seed = seed
        with quiet_lightning():  # no "Seed set to" line: the seed is the user's
            scvi.settings.seed = seed
        specs = self._modality_specs()
        data = {s.name: self._registered(s.registry_key) for s in specs}
        batch = (
            np.asarray(self.adata_manager.get_from_registry(REGISTRY_KEYS.BATCH_KEY))
            .ravel()
            .astype(int)
        )
        n_batch = self.summary_stats.n_batch
        n_cats_per_cov, cat_covs = self._categorical_covariates()
        observed = self._observed_cells()
        complete = np.logical_and.reduce(list(observed.values()))
        anchor_idx = self._choose_anchors(
            specs, data, complete, anchors, n_anchors, anchor_modality, seed
        )
        anchor = self._anchor_inputs(specs, data, anchor_idx, anchors, batch, cat_covs)
        if accessibility_likelihood == "poisson":
            for s in specs:
                if s.kind == "accessibility":
                    val.check_counts(data[s.name], f"modality '{s.name}' (Poisson accessibility)")
        if objective.lambda_cross is None:  # imputation is a training goal when cells lack one
            objective = replace(objective, lambda_cross=0.0 if complete.all() else 1.0)
        self.objective = objective
        # `load` re-runs __init__ with what is stored here: the resolved objective (a dict:
        # the saved file needs no class of this package) and the chosen anchors (no second
        # K-means).
        self.init_params_["non_kwargs"]["objective"] = {
            "preset": self.preset,
            **objective.to_dict(),
        }
        self.init_params_["kwargs"] = {"overrides": {}}
        self.init_params_["non_kwargs"]["anchors"] = self.anchor_names_.tolist()
        self.module = self._module_cls(
            modalities=specs,
            anchor_data=anchor["data"],
            anchor_batch=anchor["batch"],
            objective=objective,
            n_batch=n_batch,
            n_cats_per_cov=n_cats_per_cov,
            anchor_cat_covs=anchor["cat_covs"],
            n_latent=n_latent,
            n_hidden=n_hidden,
            n_layers=n_layers,
            dropout_rate=dropout_rate,
            gene_likelihood=gene_likelihood,
            accessibility_likelihood=accessibility_likelihood,
            protein_priors=_protein_priors(specs, data, observed, batch, n_batch, seed),
            anchor_context=anchor["context"],
        )
        self._model_summary_string = self._summary(
            specs, n_latent, n_batch, n_cats_per_cov, observed
        )

    @property
    def fusion(self) -> str:
        """The objective's default fusion (``model.objective.fusion``)."""
        return self.objective.fusion

    @property
    def embedding(self) -> str:
        """The objective's default embedding (``model.objective.embedding``)."""
        return self.objective.embedding

    @property
    def epoch_budget(self) -> int:
        """The objective's epoch budget (``model.objective.epoch_budget``)."""
        return self.objective.epoch_budget

    def _choose_anchors(
        self, specs, data, complete, anchors, n_anchors, anchor_modality, seed
    ) -> np.ndarray | None:
        """Positions of the anchor cells; None when a saved state holds anchors of other cells."""
        if anchors is None:
            # Anchors are drawn from the cells that have every modality.
            candidates = np.flatnonzero(complete)
            n_anchors = default_n_anchors(len(candidates)) if n_anchors is None else int(n_anchors)
            val.check_n_anchors(
                n_anchors,
                len(candidates),
                "cells" if complete.all() else "cells with every modality",
            )
            kinds = {s.name: s.kind for s in specs}
            preference = ("counts", "continuous", "accessibility", "protein")
            anchor_mod = anchor_modality or min(kinds, key=lambda m: preference.index(kinds[m]))
            if anchor_mod not in data:
                raise ValueError(f"anchor_modality {anchor_mod!r} is not one of {list(data)}.")
            x_anchor = (
                data[anchor_mod] if complete.all() else read_rows(data[anchor_mod], candidates)
            )
            return candidates[
                select_anchors(x_anchor, n_anchors, kind=kinds[anchor_mod], seed=seed)
            ]
        if _FROM_STATE.get() and not self._has_cells(anchors):
            # `load`/`load_query_data` on other cells: the anchors' data come from the state.
            return None
        anchor_idx = self._anchor_positions(anchors)
        val.check_n_anchors(len(anchor_idx), self.adata.n_obs)
        if not complete[anchor_idx].all():
            bad = self.adata.obs_names[anchor_idx[~complete[anchor_idx]]][:5].tolist()
            raise ValueError(
                f"Anchors must have every modality; these lack one: {bad}. Choose anchors "
                "among the cells that have every modality."
            )
        return anchor_idx

    def _anchor_inputs(self, specs, data, anchor_idx, anchors, batch, cat_covs) -> dict:
        """The anchors' data, neighbourhood inputs, batches and covariate codes (placeholders
        when a saved state holds them); sets ``anchor_indices_`` and ``anchor_names_``."""
        if anchor_idx is None:
            n_a = len(anchors)
            anchor_names = np.asarray(anchors, dtype=str)
            anchor_data = {s.name: np.zeros((n_a, s.n_features), np.float32) for s in specs}
            out = {
                "data": anchor_data,
                "context": {s.name: anchor_data[s.name] for s in specs if s.context_key},
                "batch": np.zeros(n_a, dtype=int),
                "cat_covs": None,  # from the saved state
            }
        else:
            anchor_names = np.asarray(self.adata.obs_names[anchor_idx])
            out = {
                "data": {
                    s.name: dense(read_rows(data[s.name], anchor_idx), np.float32) for s in specs
                },
                "context": {
                    s.name: dense(
                        read_rows(self._registered(s.context_key), anchor_idx), np.float32
                    )
                    for s in specs
                    if s.context_key
                },
                "batch": batch[anchor_idx],
                "cat_covs": None if cat_covs is None else cat_covs[anchor_idx],
            }
        self.anchor_indices_ = anchor_idx
        self.anchor_names_ = anchor_names
        return out

    def _summary(self, specs, n_latent, n_batch, n_cats_per_cov, observed) -> str:
        mods = ", ".join(f"{s.name} ({s.kind}, {s.n_features})" for s in specs)
        out = (
            f"SCMSI: modalities {mods}; "
            f"{len(self.anchor_names_)} anchors, n_latent={n_latent}, n_batch={n_batch}, "
            f"objective={self.preset or 'custom'!r}"
        )
        changed = _changed_options(self.preset, self.objective)
        if changed:
            out += " with " + ", ".join(f"{k}={v!r}" for k, v in changed.items())
        if n_cats_per_cov:
            out += f", categorical covariates {n_cats_per_cov}"
        n_missing = {m: int((~v).sum()) for m, v in observed.items() if not v.all()}
        if n_missing:
            out += "; cells lacking a modality: " + ", ".join(
                f"{m} {k}" for m, k in n_missing.items()
            )
        return out

    # ------------------------------------------------------------------ registration
    @classmethod
    def setup_mudata(
        cls,
        mdata: MuData,
        modalities: dict[str, str] | None = None,
        layers: dict[str, str | None] | None = None,
        batch_key: str | None = None,
        batch_mod: str | None = None,
        observed_keys: dict[str, str] | None = None,
        categorical_covariate_keys: list[str] | None = None,
        context_layers: dict[str, str] | None = None,
        **kwargs,
    ):
        """Register a MuData for scMSI.

        Parameters
        ----------
        mdata
            MuData whose modalities hold the same cells in the same order. For mosaic data
            (some cells lack a modality) pass the output of :func:`scmsi.pp.pad_modalities`.
        modalities
            ``{modality name: type}`` with type one of ``"counts"`` (NB/ZINB), ``"protein"``
            (NB mixture with background), ``"accessibility"`` (peaks: Bernoulli on binarised
            values or Poisson on fragments) or ``"continuous"`` (Gaussian: processed features,
            normalised matrices). Any number of modalities. Default:
            ``mdata.uns["modality_types"]`` (written by :mod:`scmsi.datasets` and
            :func:`scmsi.spatial.to_mudata`), else a guess from the names (``rna``/``gex`` ->
            counts, ``prot``/``adt`` -> protein, ``atac``/``peaks`` -> accessibility) with a
            warning (see :func:`modality_kinds`). A modality of the MuData left out is named in
            a warning. Sparse matrices stay sparse; minibatches are densified one at a time.
        layers
            ``{modality name: layer}``; a missing entry or None uses ``.X``. A key that is not
            a modality, or a layer the modality lacks, raises a KeyError.
        batch_key
            Categorical batch column, in ``mdata.obs`` or in ``mdata[batch_mod].obs``. The batch
            enters every modality's encoder and decoder (and the protein background prior);
            :meth:`get_normalized_expression` with ``transform_batch`` decodes all cells as one
            batch.
        batch_mod
            Modality whose ``.obs`` holds ``batch_key`` and ``categorical_covariate_keys``;
            None reads ``mdata.obs``.
        observed_keys
            ``{modality: boolean column of mdata.obs}``, True where the cell has that modality
            (its row in the modality is ignored otherwise). Default: the columns
            ``scmsi_has_<modality>`` written by :func:`scmsi.pp.pad_modalities` where present;
            a modality without a column is taken as measured in every cell.
        categorical_covariate_keys
            Further categorical columns (donor, protocol...) that, like the batch, enter every
            encoder and decoder one-hot (scvi-tools' ``categorical_covariate_keys``).
        context_layers
            ``{modality: layer}``: a layer of ``mdata[modality]`` (same shape) holding each
            cell's neighbourhood (e.g. the mean of its spatial neighbours); that modality's
            encoder then reads ``[own input, neighbourhood input]`` (a graph-aware encoder
            that keeps minibatches independent). Default: ``mdata.uns["scmsi_context_layers"]``
            where present (written by :func:`scmsi.spatial.to_mudata`), for the modalities
            modelled, else none; ``{}`` switches it off.
        """
        from_uns = context_layers is None
        setup_method_args = cls._get_setup_method_args(**locals())
        if modalities is None:
            modalities = modality_kinds(mdata)
            setup_method_args["setup_args"]["modalities"] = modalities
        if from_uns:  # the data's own record, for the modalities modelled
            declared = mdata.uns.get(CONTEXT_LAYERS_KEY, {})
            context_layers = {m: declared[m] for m in declared if m in modalities}
            setup_method_args["setup_args"]["context_layers"] = context_layers
        layers = dict(layers or {})
        observed_keys = dict(observed_keys or {})
        _check_setup_keys(mdata, modalities, layers, context_layers, observed_keys)
        masks = {m: observed_mask(mdata.obs, m, observed_keys.get(m), "mdata") for m in modalities}
        val.check_some_modality(
            masks, mdata.obs_names, [observed_keys.get(m, has_key(m)) for m in modalities]
        )
        if batch_mod is not None and batch_mod not in mdata.mod:
            raise KeyError(f"batch_mod {batch_mod!r} is not in the MuData (has {list(mdata.mod)}).")
        obs_of_batch = mdata.obs if batch_mod is None else mdata.mod[batch_mod].obs
        where = "mdata" if batch_mod is None else f"mdata['{batch_mod}']"
        for key, what in [(batch_key, "batch_key")] + [
            (k, "categorical_covariate_keys") for k in categorical_covariate_keys or []
        ]:
            val.check_obs_key(obs_of_batch, key, where, what)
        for name, kind in modalities.items():
            ad = mdata.mod[name]
            layer = layers.get(name)
            if layer is not None and layer not in ad.layers:
                raise KeyError(
                    f"Layer {layer!r} not in mdata['{name}'].layers (has {list(ad.layers)})."
                )
            x = ad.X if layer is None else ad.layers[layer]
            rows = masks[name]
            if not rows.all():  # only the cells that have the modality are checked
                x, names = read_rows(x, np.flatnonzero(rows)), ad.obs_names[rows]
            else:
                names = ad.obs_names
            _check_modality(x, name, kind, names)
        mudata_fields = [
            fields.MuDataCategoricalObsField(REGISTRY_KEYS.BATCH_KEY, batch_key, mod_key=batch_mod),
            fields.MuDataCategoricalJointObsField(
                REGISTRY_KEYS.CAT_COVS_KEY, categorical_covariate_keys, mod_key=batch_mod
            ),
            *_modality_fields(modalities, layers, observed_keys, context_layers),
        ]
        adata_manager = AnnDataManager(
            fields=mudata_fields,
            setup_method_args=setup_method_args,
            # unpaired cells are padded (`pad_modalities`) and masked; checked above
            validation_checks=_VALIDATION,
        )
        adata_manager.register_fields(mdata, **kwargs)
        cls.register_manager(adata_manager)

    @classmethod
    def setup_anndata(
        cls,
        adata: AnnData,
        layer: str | None = None,
        protein_expression_obsm_key: str | None = None,
        batch_key: str | None = None,
        categorical_covariate_keys: list[str] | None = None,
        **kwargs,
    ):
        """Register an AnnData: RNA counts in ``.X``/``layer``, protein counts in ``.obsm``.

        Parameters
        ----------
        adata
            Cells x genes AnnData.
        layer
            Layer with raw RNA counts; None uses ``.X``.
        protein_expression_obsm_key
            ``.obsm`` key of the protein counts (cells x proteins), as in totalVI. Without it
            the model is RNA-only (no contrastive term).
        batch_key
            Categorical batch column in ``adata.obs``.
        categorical_covariate_keys
            Further categorical columns of ``adata.obs`` that enter every encoder and decoder.
        """
        setup_method_args = cls._get_setup_method_args(**locals())
        if not adata.obs_names.is_unique:
            raise ValueError("Cell names are not unique; call `adata.obs_names_make_unique()`.")
        for key, what in [(batch_key, "batch_key")] + [
            (k, "categorical_covariate_keys") for k in categorical_covariate_keys or []
        ]:
            val.check_obs_key(adata.obs, key, "adata", what)
        if layer is not None and layer not in adata.layers:
            raise KeyError(f"Layer {layer!r} not in adata.layers (has {list(adata.layers)}).")
        _check_modality(
            adata.X if layer is None else adata.layers[layer], "RNA", "counts", adata.obs_names
        )
        anndata_fields = [
            fields.CategoricalObsField(REGISTRY_KEYS.BATCH_KEY, batch_key),
            fields.CategoricalJointObsField(REGISTRY_KEYS.CAT_COVS_KEY, categorical_covariate_keys),
            fields.LayerField(_registry_key(_ANNDATA_RNA), layer, is_count_data=True),
        ]
        if protein_expression_obsm_key is not None:
            if protein_expression_obsm_key not in adata.obsm:
                raise KeyError(
                    f"{protein_expression_obsm_key!r} not in adata.obsm (has {list(adata.obsm)})."
                )
            prot = adata.obsm[protein_expression_obsm_key]
            _check_modality(np.asarray(prot), "protein", "protein", adata.obs_names)
            anndata_fields.append(
                fields.ObsmField(
                    _registry_key(_ANNDATA_PROT), protein_expression_obsm_key, is_count_data=True
                )
            )
        for name in (_ANNDATA_RNA, _ANNDATA_PROT)[: 1 + (protein_expression_obsm_key is not None)]:
            # optional obs["scmsi_has_rna"/"scmsi_has_prot"] flags cells lacking a modality
            anndata_fields.append(_ObservedField(mask_registry_key(name), name))
        adata_manager = AnnDataManager(fields=anndata_fields, setup_method_args=setup_method_args)
        adata_manager.register_fields(adata, **kwargs)
        cls.register_manager(adata_manager)

    # ------------------------------------------------------------------ helpers
    def _modality_specs(self, adata_manager: AnnDataManager | None = None) -> list[ModalitySpec]:
        manager = adata_manager or self.adata_manager
        kinds = _registered_kinds(manager.registry["setup_args"])
        specs = []
        for name, kind in kinds.items():
            key = _registry_key(name)
            n_features = len(self._feature_names(key, manager))
            ctx = _context_registry_key(name)
            ctx = ctx if ctx in manager.data_registry else None
            specs.append(ModalitySpec(name, kind, n_features, key, ctx))
        return specs

    @staticmethod
    def _feature_names(key: str, manager: AnnDataManager) -> np.ndarray:
        state = manager.get_state_registry(key)
        return np.asarray(state.get("column_names", state.get("columns", [])))

    def _registered(self, key: str, adata_manager: AnnDataManager | None = None):
        x = (adata_manager or self.adata_manager).get_from_registry(key)
        return x.to_numpy() if isinstance(x, pd.DataFrame) else x

    def _anchor_positions(self, anchors) -> np.ndarray:
        anchors = np.asarray(anchors)
        if anchors.dtype.kind in "iu":
            idx = anchors.astype(int)
            if idx.min() < 0 or idx.max() >= self.adata.n_obs:
                raise IndexError(f"Anchor positions must lie in [0, {self.adata.n_obs}).")
        else:
            pos = pd.Index(self.adata.obs_names).get_indexer(anchors.astype(str))
            if (pos < 0).any():
                missing = anchors[pos < 0][:5].tolist()
                raise KeyError(f"Anchor cells not found in the data: {missing}.")
            idx = pos
        if len(np.unique(idx)) != len(idx):
            raise ValueError("Anchors contain duplicates.")
        return np.sort(idx)

    def _categorical_covariates(self) -> tuple[list[int], np.ndarray | None]:
        """Categories per covariate and the cells' codes ``(N, n_cov)`` (None without any)."""
        if REGISTRY_KEYS.CAT_COVS_KEY not in self.adata_manager.data_registry:
            return [], None
        state = self.adata_manager.get_state_registry(REGISTRY_KEYS.CAT_COVS_KEY)
        codes = self._registered(REGISTRY_KEYS.CAT_COVS_KEY)
        return [int(n) for n in state.n_cats_per_key], np.asarray(codes, dtype=np.int64)

    def _observed_cells(self, adata_manager: AnnDataManager | None = None) -> dict[str, np.ndarray]:
        """``{modality: bool (N,)}``: which registered cells have each modality."""
        manager = adata_manager or self.adata_manager
        out = {}
        for s in self._modality_specs(manager):
            key = mask_registry_key(s.name)
            if key in manager.data_registry:
                out[s.name] = np.asarray(self._registered(key, manager)).ravel() > 0.5
            else:  # registered before masks existed
                out[s.name] = np.ones(manager.adata.n_obs, dtype=bool)
        return out

    def _has_cells(self, names) -> bool:
        names = np.asarray(names)
        if names.dtype.kind in "iu":
            return True
        return bool(pd.Index(self.adata.obs_names).get_indexer(names.astype(str)).min() >= 0)

    def _refresh_anchor_indices(self) -> None:
        """Anchor positions in ``self.adata``, or None when the anchors are other cells."""
        names = np.asarray(self.anchor_names_, dtype=str)
        pos = pd.Index(self.adata.obs_names).get_indexer(names) if self.adata is not None else [-1]
        self.anchor_indices_ = np.asarray(pos) if np.min(pos) >= 0 else None

    def _registry_dict(self) -> dict:
        return self.adata_manager.registry if self.adata_manager is not None else self.registry_

    def _reference_features(self) -> dict[str, np.ndarray]:
        return _features_from_registry(self._registry_dict())

    def _validate_anndata(self, adata=None, copy_if_view: bool = True):
        """As scvi-tools, after laying new cells out as the reference (see ``prepare_query``).

        New cells whose features are in another order, with extra features, or lacking a
        modality (or some cells of one) are copied into the reference layout first; the copy
        is what gets registered, the user's object is not modified.
        """
        if self._is_new(adata):
            registry = self._registry_dict()
            adata = prepare_query(adata, registry["setup_args"], self._reference_features())
            if self.get_anndata_manager(adata) is None:
                self._check_query_batches(adata, registry)
        return super()._validate_anndata(adata, copy_if_view=copy_if_view)

    def _is_new(self, adata) -> bool:
        """Data that are neither the training data nor registered with this model yet."""
        if adata is None or adata is self.adata:
            return False
        return self.get_anndata_manager(adata) is None

    def _check_query_batches(self, adata, registry: dict) -> None:
        state = registry["field_registries"][REGISTRY_KEYS.BATCH_KEY]["state_registry"]
        key = state.get("original_key")
        args = registry["setup_args"]
        if key is None or args.get("batch_key") is None:
            return
        batch_mod = args.get("batch_mod")
        obs = adata.obs if batch_mod is None else adata.mod[batch_mod].obs
        where = "query" if batch_mod is None else f"query['{batch_mod}']"
        if key not in obs.columns:
            raise KeyError(
                f"The model was trained with batch_key '{key}' but {where}.obs has no such "
                f"column. Add it: a reference batch ({list(state['categorical_mapping'])[:5]}) "
                "to map the cells as that batch, or new batch names together with "
                "`SCMSI.load_query_data(query, model)` to learn them."
            )
        new = pd.Index(pd.unique(obs[key].astype(str))).difference(
            pd.Index(state["categorical_mapping"]).astype(str)
        )
        if len(new):
            raise ValueError(
                f"The query has batches the model was not trained on: {new[:5].tolist()}. "
                "Learn them with `query_model = scmsi.SCMSI.load_query_data(query, model); "
                "query_model.train()` (scArches: only the batch-specific weights are trained), "
                "or relabel the cells with a reference batch."
            )

    @contextlib.contextmanager
    def _registered_data(self, adata):
        """Validate ``adata`` (None = training data); forget a temporary query copy afterwards."""
        fresh = self._is_new(adata)
        adata_v = self._validate_anndata(adata)
        try:
            yield adata_v
        finally:
            if fresh and adata_v is not adata:
                uuid = self.get_anndata_manager(adata_v).adata_uuid
                self._per_instance_manager_store.get(self.id, {}).pop(uuid, None)

    def _outputs(self, adata, indices, batch_size, transform_batch=None, generative=True):
        """Yield (tensors, inference outputs, generative outputs) per minibatch, eval mode, means.

        ``adata`` must be registered (see :meth:`_registered_data`). The anchors are encoded
        once per call; ``generative=False`` skips the decoders (generative outputs are None).
        """
        settings.apply_threads(adata.n_obs)
        loader = self._make_data_loader(adata=adata, indices=indices, batch_size=batch_size)
        self.module.eval()
        with torch.inference_mode():
            z_anchor = self.module.anchor_latents()
            for tensors in loader:
                inf_in = self.module._get_inference_input(tensors)
                inf = self.module.inference(**inf_in, use_mean=True, z_anchor=z_anchor)
                # cells are encoded with their own batch and decoded as `transform_batch`
                gen = (
                    self.module.generative(
                        **self.module._get_generative_input(tensors, inf),
                        transform_batch=transform_batch,
                    )
                    if generative
                    else None
                )
                yield tensors, inf, gen

    # ------------------------------------------------------------------ training
    @quiet_lightning()
    def train(
        self,
        max_epochs: int | None = None,
        batch_size: int = 256,
        early_stopping: bool = True,
        pretrain_fraction: float | None = None,
        plan_kwargs: dict | None = None,
        **kwargs,
    ):
        """Train with scvi-tools' Lightning loop (progress bar, early stopping).

        Parameters
        ----------
        max_epochs
            Default :func:`default_max_epochs` with the preset's epoch budget B (200 for
            ``"default"``, 400 for ``"paper"``): B up to 20,000 cells, then
            ``round(20000 / N * B)`` (scvi-tools' heuristic for B = 400), never below 10.
        batch_size
            Minibatch size.
        early_stopping
            Stop each phase when the validation ELBO has converged, i.e. improved by less
            than 0.1% over the last 20 epochs (:func:`_plateaued`): pre-training ends there (at
            the latest after ``pretrain_fraction * max_epochs``), and training stops there
            after it (:class:`_Converged`), or when the ELBO has not improved for 45 epochs
            since the end of pre-training (scvi-tools' rule). Without it, pre-training and
            training run their full length.
        pretrain_fraction
            Share of ``max_epochs`` during which decoders read ``z`` while the self-expressive
            networks learn to rebuild it (as deep subspace clustering pre-trains its
            autoencoder); afterwards decoders read ``z_hat = C z_anchor``. Default 0.25, and 0
            for a query model from :meth:`load_query_data` (already trained on ``z_hat``).
        plan_kwargs
            Passed to :class:`scvi.train.TrainingPlan` (``lr``, ``n_epochs_kl_warmup``...).
            Query models default to ``weight_decay=0``, so frozen weights stay put.
        **kwargs
            Passed to :meth:`scvi.model.base.UnsupervisedTrainingMixin.train` and from there to
            the Lightning ``Trainer``: e.g. ``accelerator="gpu", devices=4,
            strategy="ddp_find_unused_parameters_true"`` for multi-GPU training (scvi-tools then
            shards the minibatches with a distributed sampler and turns early stopping off), or
            ``limit_train_batches`` to time a fraction of an epoch.

        Notes
        -----
        Ctrl-C (SIGINT) stops training at the end of the current minibatch; the model then
        holds the weights of the last completed epoch, says so in one warning, and ``get_*``
        work on it (``model.training_interrupted_`` is True; ``is_trained_`` is True when at
        least one epoch was completed). A second Ctrl-C raises ``KeyboardInterrupt`` at once.
        A loss that becomes NaN or infinite stops training with a ``FloatingPointError``
        naming the likely cause; the model keeps the last epoch with a finite loss.
        """
        scvi.settings.seed = self.seed
        settings.apply_threads(self.adata.n_obs)  # after numba reset the pool (preprocessing)
        if max_epochs is None:
            max_epochs = default_max_epochs(self.adata.n_obs, getattr(self, "epoch_budget", 400))
        val.check_training(
            max_epochs,
            kwargs.get("train_size"),
            batch_size,
            self.adata.n_obs,
            early_stopping,
            kwargs.get("validation_size"),
        )
        self.module.train()  # `load`/`load_query_data` leave it in eval mode (no dropout)
        if pretrain_fraction is None:
            pretrain_fraction = 0.0 if getattr(self, "is_query_model_", False) else 0.25
        n_pre = int(round(pretrain_fraction * max_epochs))
        if getattr(self, "is_query_model_", False):
            # Adam's weight decay would move the frozen weights (scvi-tools' scArches advice).
            plan_kwargs = {"weight_decay": 0.0, **(plan_kwargs or {})}
        guard = _TrainingGuard()
        switch = _DecodeRebuiltAfter(n_pre, early=early_stopping)
        callbacks = list(kwargs.pop("callbacks", None) or []) + [switch, guard]
        if early_stopping:
            kwargs.setdefault("early_stopping_warmup_epochs", n_pre)
            callbacks.append(_Converged(switch))
        kwargs.setdefault(
            "log_every_n_steps",
            log_every_n_steps(self.adata.n_obs, batch_size, kwargs.get("train_size")),
        )
        self.training_interrupted_ = False
        with guard.catch_sigint():
            try:
                out = super().train(
                    max_epochs=max_epochs,
                    batch_size=batch_size,
                    early_stopping=early_stopping,
                    plan_kwargs=plan_kwargs,
                    callbacks=callbacks,
                    **kwargs,
                )
            except ValueError as e:
                # NaN weights make torch.distributions refuse their parameters before any
                # loss is NaN: name the divergence rather than the distribution.
                if all(bool(torch.isfinite(p).all()) for p in self.module.parameters()):
                    raise
                guard.restore(self.module)
                self.is_trained_ = guard.n_completed > 0
                raise FloatingPointError(guard.divergence("weights became NaN")) from e
            except SystemExit:
                # Lightning turns a KeyboardInterrupt it catches into sys.exit(1) (and scvi's
                # TrainRunner prints it as "Exception raised during training. <class
                # 'NameError'> 1"); a Ctrl-C outside our SIGINT handler ends up here.
                if not guard.interrupted:
                    raise
                out = None
        if guard.diverged is not None:
            guard.restore(self.module)
            self.is_trained_ = guard.n_completed > 0
            raise FloatingPointError(guard.diverged)
        if guard.interrupted:
            guard.restore(self.module)
            self.training_interrupted_ = True
            self.is_trained_ = guard.n_completed > 0
            warnings.warn(
                f"Training interrupted: the model keeps the weights of the last completed "
                f"epoch ({guard.n_completed} of {max_epochs}).",
                UserWarning,
                stacklevel=2,
            )
        return out

    # ------------------------------------------------------------------ outputs
    @property
    def modality_names(self) -> list[str]:
        return [s.name for s in self.module.modalities]

    def _check_modality_name(self, modality: str) -> None:
        if modality not in self.modality_names:
            raise ValueError(f"Unknown modality {modality!r}; choose from {self.modality_names}.")

    def get_latent_representation(
        self,
        adata: MuData | AnnData | None = None,
        modality: str | None = None,
        indices: Sequence[int] | None = None,
        batch_size: int | None = None,
        rebuilt: bool = False,
    ) -> np.ndarray | dict[str, np.ndarray]:
        """Posterior mean latent ``z^m`` of each cell, shape ``(N, n_latent)``.

        A cell that lacks modality ``m`` gets its rebuilt latent instead: the anchors' latents
        in ``m`` weighted by the coefficients of the modalities it has.

        Parameters
        ----------
        adata
            Data to encode (default: the training data). New cells are encoded with no
            retraining; their features are matched to the reference by name.
        modality
            One modality's latent; None returns ``{name: array}`` for all.
        indices
            Cells to use.
        batch_size
            Minibatch size.
        rebuilt
            Return the rebuilt latent ``z_hat^m = C^m z^m_anchor`` instead of ``z^m``.
        """
        if modality is not None:
            self._check_modality_name(modality)
        key = "z_hat" if rebuilt else "z"
        parts = {m: [] for m in self.modality_names}
        with self._registered_data(adata) as adata_v:
            for _, inf, _ in self._outputs(adata_v, indices, batch_size, generative=False):
                for m in parts:
                    parts[m].append(inf[key][m].cpu().numpy())
        out = {m: np.concatenate(v) for m, v in parts.items()}
        return out[modality] if modality is not None else out

    def get_coefficients(
        self,
        adata: MuData | AnnData | None = None,
        modality: str | None = None,
        indices: Sequence[int] | None = None,
        batch_size: int | None = None,
        return_all: bool = False,
        fusion: Fusion | None = None,
        top_k: int | None = None,
        weight_scale: np.ndarray | None = None,
    ) -> np.ndarray | sparse.csr_matrix | dict:
        """Self-expressive coefficients of cells over the anchors, shape ``(N, A)``.

        ``fusion="product"`` (the default preset's) multiplies the modalities' anchor
        distributions (a product of experts: an anchor counts for a cell if every modality
        puts it near the cell). The other fusions are a weighted mean over modalities of each
        modality's coefficients normalised to sum to one per cell, so no modality counts more
        for the scale of its coefficients. ``fusion="mean"`` weighs modalities equally;
        ``"precision"`` weighs each cell's modalities by the inverse posterior variance of
        their coefficients (:meth:`get_modality_weights`); ``"adaptive"``
        uses the cross-rebuild weights of :meth:`get_modality_weights` (an option: in our
        benchmarks it helped on SNARE-seq and hurt on PBMC CITE-seq and sci-CAR, see the
        README). A cell that lacks a modality is fused over the modalities it has, and its
        coefficients in the missing modality are the mean of those (what rebuilds its latent
        there).

        Parameters
        ----------
        adata
            Data (default: the training data); new cells are expressed over the trained
            anchors, with no retraining. Features are matched to the reference by name (any
            order); a modality may be absent for some or all query cells.
        modality
            A modality's raw coefficients ``C^m``; None returns the fused affinity.
        indices
            Cells to use.
        batch_size
            Minibatch size.
        return_all
            Return ``{"fused": ..., name: C^m, ..., "observed": {name: bool (N,)}}``, plus
            ``"weights"`` (N, M) with a per-cell weighted fusion.
        fusion
            ``"product"``, ``"mean"``, ``"precision"`` or ``"adaptive"`` (see above); None:
            the model's (``model.fusion``, set by its objective).
        top_k
            Keep only the ``top_k`` largest coefficients of each cell, in every returned
            matrix, as a :class:`scipy.sparse.csr_matrix` (float32; exact zeros are not stored).
            The kept values are those of the dense matrix, not renormalised. Memory is then
            O(N * top_k) instead of N x A dense (2 GB per matrix for 1M cells and 512 anchors):
            each minibatch is fused and truncated as it is computed (:meth:`iter_coefficients`).
        weight_scale
            As in :meth:`iter_coefficients`.
        """
        if modality is not None:
            self._check_modality_name(modality)
        if top_k is not None and int(top_k) < 1:
            raise ValueError(f"top_k must be a positive integer or None, got {top_k!r}.")
        fusion = self.fusion if fusion is None else fusion
        names = self.modality_names
        need_fused = modality is None or return_all
        keep = (names + ["fused"]) if need_fused else [modality]
        parts = {m: [] for m in keep}
        masks = {m: [] for m in names}
        weights = []
        batches = self.iter_coefficients(
            adata,
            indices,
            batch_size,
            fusion=fusion,
            weight_scale=weight_scale,
            fused=need_fused,
        )
        for out in batches:
            for m in keep:
                c = out[m]
                parts[m].append(c if top_k is None else top_k_sparse(c, top_k))
            for m in names:
                masks[m].append(out["observed"][m])
            if "weights" in out:
                weights.append(out["weights"])
        if top_k is None:
            coefs = {m: np.concatenate(v) for m, v in parts.items()}
        else:
            coefs = {m: sparse.csr_matrix(sparse.vstack(v)) for m, v in parts.items()}
        if not need_fused:
            return coefs[modality]
        observed = {m: np.concatenate(v) for m, v in masks.items()}
        fused = coefs.pop("fused")
        if not return_all:
            return fused
        out = {"fused": fused, **coefs, "observed": observed}
        if weights:
            out["weights"] = np.concatenate(weights)
        return out

    def iter_coefficients(
        self,
        adata: MuData | AnnData | None = None,
        indices: Sequence[int] | None = None,
        batch_size: int | None = None,
        fusion: Fusion | None = None,
        latent: bool = False,
        weight_scale: np.ndarray | None = None,
        fused: bool = True,
    ) -> Iterator[dict]:
        """Coefficients one minibatch at a time, for data whose N x A matrix is too large.

        Yields, in cell order, ``{name: C^m (B, A), "fused": (B, A), "observed": {name: bool
        (B,)}}`` as dense float32 arrays, plus ``"latent": {name: z^m (B, n_latent)}`` with
        ``latent=True`` and ``"weights"`` (B, M) with a per-cell weighted fusion. The values
        are those of :meth:`get_coefficients` (``fused=False`` skips the fused matrix;
        ``"adaptive"`` first takes a pass over the data for the modality weights, whose
        normalisation is over all cells). Memory is O(batch x A);
        :func:`scmsi.tl.embed_and_cluster` uses it for the exact PCA of large data.

        Parameters
        ----------
        adata, indices, batch_size
            As in :meth:`get_coefficients`.
        fusion
            As in :meth:`get_coefficients`; None: the model's (``model.fusion``).
        latent
            Also yield the posterior mean latents.
        weight_scale
            ``scale`` of :meth:`get_modality_weights` for ``fusion="adaptive"``; given, the
            weights are computed minibatch by minibatch, with no pass before.
        fused
            False: only the modalities' coefficients (no fused matrix, no weights).
        """
        check_fusion(fusion, allow_none=True)
        fusion = (self.fusion if fusion is None else fusion) if fused else None
        names = self.modality_names
        with self._registered_data(adata) as adata_v:
            scale = fusion_scale(self, adata_v, fusion, indices, batch_size, weight_scale)
            gen = self._draw_generator()
            batches = self._outputs(adata_v, indices, batch_size, generative=False)
            for tensors, inf, _ in batches:
                out = {m: inf["coef"][m].cpu().numpy() for m in names}
                out["observed"] = {m: inf["observed"][m].cpu().numpy() for m in names}
                if fusion is not None:
                    w = self._batch_weights(fusion, tensors, inf, scale, gen)
                    out["fused"] = fuse(
                        fusion, [out[m] for m in names], [out["observed"][m] for m in names], w
                    )
                    if w is not None:
                        out["weights"] = w
                if latent:
                    out["latent"] = {m: inf["z"][m].cpu().numpy() for m in names}
                yield out

    def get_modality_weights(
        self,
        adata: MuData | AnnData | None = None,
        indices: Sequence[int] | None = None,
        batch_size: int | None = None,
        scale: np.ndarray | None = None,
        method: WeightMethod = "adaptive",
    ) -> pd.DataFrame:
        """Per-cell modality weights of a fusion, cells x modalities (rows sum to 1).

        ``method="reliability"`` (the default objective's fusion): how well each modality's
        anchors find the cell's neighbours in the other modalities
        (:func:`~scmsi._selfexpression.neighbourhood_capture`, the rule that also decides
        which modality teaches which in training), ``softmax`` over modalities at temperature
        :data:`~scmsi._fusion.RELIABILITY_TEMPERATURE`. Cost O(N * A * (n_latent + log A) * M^2).

        ``method="precision"``: inverse-variance weights. ``q(z^m | x^m)`` is sampled
        (:data:`N_WEIGHT_DRAWS` draws, seeded by the model's seed) and modality m's normalised
        coefficients are recomputed for each draw; their variance, summed over anchors, is how
        uncertain m is about the cell's neighbours, in the same units (anchor mass) for every
        modality. The weights ``w_nm ∝ 1 / var_nm`` give the minimum-variance combination of
        the modalities' estimates of one neighbour distribution: a modality whose data pin a
        cell down (many counts, a clear profile) counts more for that cell, a noisy or
        ambiguous one less. Certainty is not accuracy: a modality with many features has a
        tight posterior even where its neighbours mix cell types (see the README's benchmarks).
        No statistic over other cells is used; the draws are seeded once per call, so the same
        data give the same weights, and a cell's weights vary only by the Monte-Carlo noise of
        its draws with its position in the data. Cost O(draws * N * A).

        ``method="adaptive"``: like WNN's weights, but read from the coefficients: modality m's
        coefficients of cell n (normalised to sum to 1) rebuild the cell's latent in *every*
        modality m' from the anchors' latents, ``z^m'_n ~ c^m_n Z^m'_anchor``. The squared
        errors, each divided by the median error of modality m' rebuilt by its own
        coefficients, are averaged over m' into a score ``s_nm``; the weights are
        ``softmax_m(-s_nm)``. Cost O(N * A * n_latent * M^2). ``scale``: the M median
        own-rebuild errors to divide by; default those of these cells. Pass the reference's
        (``df.attrs["scale"]`` of its weights) for new cells, so that a cell's weights do not
        depend on which other cells are in the query.
        """
        check_weight_method(method)
        names = self.modality_names
        gen = self._draw_generator()
        with self._registered_data(adata) as adata_v:
            parts = [
                _cross_rebuild_errors(inf, names)
                if method == "adaptive"
                else self._batch_weights(method, tensors, inf, None, gen)
                for tensors, inf, _ in self._outputs(adata_v, indices, batch_size, generative=False)
            ]
            obs = adata_v.obs_names
        cells = obs if indices is None else obs[np.asarray(indices)]
        if method != "adaptive":
            if len(names) < 2:
                return pd.DataFrame(1.0, index=cells, columns=names, dtype=np.float32)
            return pd.DataFrame(np.concatenate(parts), index=cells, columns=names)
        errors = np.concatenate(parts)
        scale = error_scale(errors) if scale is None else np.asarray(scale, dtype=np.float64)
        out = pd.DataFrame(modality_weights(errors, scale), index=cells, columns=names)
        out.attrs["scale"] = scale
        return out

    def input_reliability(self) -> np.ndarray:
        """Modality weights of the joint latent, ``(M,)`` in ``modality_names`` order.

        Read off the registered data (:func:`~scmsi._fusion.input_reliability`): each
        modality's input, transformed by its type (:func:`~scmsi._anchors.anchor_features`),
        to ``n_latent`` PCs over at most :data:`~scmsi._fusion.INPUT_RELIABILITY_CELLS` random
        cells that have every modality (seeded by the model's seed); cached on the model.
        """
        if getattr(self, "input_reliability_", None) is not None:
            return self.input_reliability_
        import scanpy as sc

        observed = self._observed_cells()
        complete = np.flatnonzero(np.logical_and.reduce(list(observed.values())))
        rng = np.random.default_rng(self.seed)
        size = min(INPUT_RELIABILITY_CELLS, len(complete))
        rows = np.sort(rng.choice(complete, size, replace=False))
        pcs = {}
        for s in self._modality_specs():
            x = anchor_features(read_rows(self._registered(s.registry_key), rows), s.kind)
            n_comps = int(min(self.module.n_latent, x.shape[1] - 1, size - 1))
            pcs[s.name] = sc.pp.pca(x, n_comps=n_comps, random_state=self.seed)
        self.input_reliability_ = input_reliability(pcs, self.seed)
        return self.input_reliability_

    def _batch_weights(self, fusion, tensors, inf, scale, gen) -> np.ndarray | None:
        """Per-cell modality weights ``(B, M)`` of one minibatch for ``fusion``, or None for
        a fusion without weights (or a one-modality model)."""
        names = self.modality_names
        if len(names) < 2:
            return None
        if fusion == "reliability":
            kappa = neighbourhood_capture(inf["z"], inf["z_anchor"], inf["coef"])
            return reliability_weights(kappa, names, inf["observed"])
        if fusion == "adaptive":
            return modality_weights(_cross_rebuild_errors(inf, names), scale)
        if fusion == "precision":
            return self._precision_weights(tensors, inf, gen)
        return None

    def _draw_generator(self) -> torch.Generator:
        """A generator seeded by the model's seed: the same weights on every call."""
        return torch.Generator(device=self.module.device).manual_seed(int(self.seed))

    def _precision_weights(self, tensors: dict, inf: dict, gen: torch.Generator) -> np.ndarray:
        """Inverse-variance modality weights ``(B, M)`` of one minibatch (see
        :meth:`get_modality_weights`)."""
        xs = self.module._get_inference_input(tensors)["xs"]
        xs = {k: v.to(self.module.device) for k, v in xs.items()}
        var = self.module.coefficient_variance(xs, inf, N_WEIGHT_DRAWS, gen)
        var = torch.stack([var[m] for m in self.modality_names], -1).cpu().numpy()
        return precision_weights(var)

    def get_normalized_expression(
        self,
        adata: MuData | AnnData | None = None,
        modality: str | None = None,
        indices: Sequence[int] | None = None,
        transform_batch: str | int | None = None,
        library_size: float | None = None,
        batch_size: int | None = None,
        include_protein_background: bool = False,
    ) -> pd.DataFrame | dict[str, pd.DataFrame]:
        """Denoised expression decoded from the rebuilt latents.

        ``counts`` modalities: expression frequencies (times ``library_size`` if given);
        ``protein``: foreground rate times foreground probability (background removed, as
        totalVI); ``continuous``: the decoded mean. Where a cell lacks a modality the values
        are imputed from the modalities it has (as :meth:`impute`, without the spread).

        Parameters
        ----------
        adata, indices, batch_size
            As in :meth:`get_latent_representation`.
        modality
            One modality; None returns ``{name: DataFrame}``.
        transform_batch
            Decode every cell as if it came from this batch (batch-corrected values).
        library_size
            Scale ``counts`` frequencies to this total per cell.
        include_protein_background
            Protein: the expected counts (background + foreground mixture mean) instead of the
            denoised foreground.
        """
        if modality is not None:
            self._check_modality_name(modality)
        parts = {m: [] for m in self.modality_names}
        with self._registered_data(adata) as adata_v:
            b = self._batch_code(transform_batch)
            for _, _, gen in self._outputs(adata_v, indices, batch_size, transform_batch=b):
                for m in parts:
                    head, params = self.module.heads[m], gen["params"][m]
                    parts[m].append(
                        expression(head, params, include_protein_background).cpu().numpy()
                    )
            return self._as_frames(parts, adata_v, indices, modality, library_size)

    def get_protein_foreground_probability(
        self,
        adata: MuData | AnnData | None = None,
        modality: str | None = None,
        indices: Sequence[int] | None = None,
        transform_batch: str | int | None = None,
        batch_size: int | None = None,
    ) -> pd.DataFrame:
        """Probability that each protein count is foreground (above background), cells x proteins.

        Parameters
        ----------
        modality
            The protein modality (default: the first of type ``protein``).
        """
        prot = [s.name for s in self.module.modalities if s.kind == "protein"]
        if not prot:
            raise ValueError("The model has no 'protein' modality.")
        modality = modality or prot[0]
        if modality not in prot:
            raise ValueError(f"{modality!r} is not a protein modality; choose from {prot}.")
        parts = {modality: []}
        head = self.module.heads[modality]
        with self._registered_data(adata) as adata_v:
            b = self._batch_code(transform_batch)
            for _, _, gen in self._outputs(adata_v, indices, batch_size, transform_batch=b):
                parts[modality].append(
                    head.foreground_probability(gen["params"][modality]).cpu().numpy()
                )
            return self._as_frames(parts, adata_v, indices, modality, None)

    def impute(
        self,
        adata: MuData | AnnData | None = None,
        modality: str | None = None,
        indices: Sequence[int] | None = None,
        from_modalities: Sequence[str] | None = None,
        n_samples: int = 25,
        transform_batch: str | int | None = None,
        library_size: float | None = None,
        batch_size: int | None = None,
        include_protein_background: bool = False,
        return_sd: bool = True,
        seed: int = 0,
    ) -> pd.DataFrame | tuple[pd.DataFrame, pd.DataFrame]:
        """Cross-modal imputation: ``modality`` predicted from each cell's other modalities.

        For each cell, the coefficients of the modalities it has (among ``from_modalities``)
        are averaged; its latent in ``modality`` is rebuilt as those coefficients times the
        anchors' latents in ``modality`` and decoded (METHOD: "Missing modalities"). The
        prediction never reads the cell's own ``modality`` data, so for cells that have it,
        it can be compared with the measurement.

        Uncertainty: the latents of the source modalities are drawn ``n_samples`` times from
        their posteriors ``q(z | x)``, each draw giving coefficients and a decoded profile; the
        standard deviation over draws is returned next to the prediction from the posterior
        means.

        Parameters
        ----------
        adata, indices, batch_size
            As in :meth:`get_latent_representation` (new cells are fine).
        modality
            Modality to impute; default the only modality that some cells lack.
        from_modalities
            Modalities to impute from; default all others.
        n_samples
            Posterior draws for the standard deviation (0: no spread, sd is None).
        transform_batch
            Decode as if every cell came from this batch.
        library_size
            Scale ``counts`` frequencies to this total per cell.
        include_protein_background
            Protein: expected counts (background + foreground) instead of the denoised
            foreground, as :meth:`get_normalized_expression`.
        return_sd
            Also return the standard deviation over draws.
        seed
            Seed of the posterior draws (the global torch RNG is left untouched).

        Returns
        -------
        ``mean`` (cells x features DataFrame, same units as :meth:`get_normalized_expression`)
        and, with ``return_sd``, ``sd`` of the same shape.
        """
        names = self.modality_names
        with self._registered_data(adata) as adata_v:
            manager = self.get_anndata_manager(adata_v, required=True)
            if modality is None:
                obs = self._observed_cells(manager)
                lacking = [m for m in names if not obs[m].all()]
                if len(lacking) != 1:
                    raise ValueError(
                        f"Name the modality to impute, one of {names} (cells lack {lacking})."
                    )
                modality = lacking[0]
            self._check_modality_name(modality)
            sources = [m for m in (from_modalities or names) if m != modality]
            for m in sources:
                self._check_modality_name(m)
            if not sources:
                raise ValueError("Imputation needs at least one other modality to impute from.")
            b = self._batch_code(transform_batch)
            settings.apply_threads()
            loader = self._make_data_loader(adata=adata_v, indices=indices, batch_size=batch_size)
            self.module.eval()
            means, sds = [], []
            with torch.inference_mode(), torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                for tensors in loader:
                    inf_in = self.module._get_inference_input(tensors)
                    decode_batch = None if b is None else torch.full_like(inf_in["batch_index"], b)
                    kw = {
                        "target": modality,
                        "sources": sources,
                        "decode_batch": decode_batch,
                        "include_protein_background": include_protein_background,
                    }
                    mean, has_source = self.module.cross_modal(**inf_in, **kw)
                    if not bool(has_source.all()):
                        cells = np.flatnonzero(~has_source.cpu().numpy())[:5]
                        raise ValueError(
                            f"Some cells have none of {sources} to impute '{modality}' from "
                            f"(minibatch rows {cells.tolist()})."
                        )
                    means.append(mean.cpu().numpy())
                    if n_samples > 0:
                        draws = torch.stack(
                            [
                                self.module.cross_modal(**inf_in, **kw, sample=True)[0]
                                for _ in range(n_samples)
                            ]
                        )
                        sds.append(draws.std(0).cpu().numpy())
            mean_df = self._as_frames({modality: means}, adata_v, indices, modality, library_size)
            if not return_sd:
                return mean_df
            sd_df = (
                self._as_frames({modality: sds}, adata_v, indices, modality, library_size)
                if sds
                else None
            )
            return mean_df, sd_df

    def _batch_code(self, transform_batch) -> int | None:
        if transform_batch is None:
            return None
        mapping = list(
            self.adata_manager.get_state_registry(REGISTRY_KEYS.BATCH_KEY).categorical_mapping
        )
        if isinstance(transform_batch, (int, np.integer)) and 0 <= transform_batch < len(mapping):
            return int(transform_batch)
        if transform_batch not in mapping:
            raise ValueError(f"transform_batch {transform_batch!r} is not one of {mapping}.")
        return mapping.index(transform_batch)

    def _as_frames(self, parts, adata, indices, modality, library_size):
        cells = adata.obs_names if indices is None else adata.obs_names[np.asarray(indices)]
        kinds = {s.name: s.kind for s in self.module.modalities}
        features = self._reference_features()
        frames = {}
        for m, v in parts.items():
            arr = np.concatenate(v)
            if library_size is not None and kinds[m] == "counts":
                arr = arr * library_size
            frames[m] = pd.DataFrame(arr, index=cells, columns=features[m])
        return frames[modality] if modality is not None else frames

    # ------------------------------------------------------------------ save / load, queries
    @classmethod
    def load(cls, dir_path: str, adata: MuData | AnnData | None = None, **kwargs):
        """Load a saved model (see :meth:`scvi.model.base.BaseModelClass.load`).

        ``adata`` may be the training data or other cells with the same features; the anchors'
        data are part of the saved state either way. The feature names of every modality and
        the modality types are saved with the model (its registry): features in another order
        are reordered to the saved order, with a warning naming the modalities; missing
        features raise a ValueError listing the first missing names; an AnnData for a model
        set up with a MuData (or the reverse) raises a TypeError. ``adata`` is not modified:
        when its layout differs a copy is registered (``model.adata``).
        """
        if adata is not None and adata is not False:
            registry = BaseModelClass.load_registry(os.fspath(dir_path), kwargs.get("prefix"))
            adata = _reference_layout(adata, registry)
        token = _FROM_STATE.set(True)
        try:
            model = super().load(dir_path, adata=adata, **kwargs)
        finally:
            _FROM_STATE.reset(token)
        model._refresh_anchor_indices()
        return model

    @classmethod
    def load_query_data(
        cls,
        adata: MuData | AnnData,
        reference_model,
        freeze_batchnorm_decoder: bool = True,
        **kwargs,
    ):
        """A copy of the reference model for query cells with new batches (scArches).

        Only the weights of the new batches are trained afterwards (``query_model.train()``):
        the batch columns of each first layer of the encoders and decoders (scvi-tools'
        :class:`~scvi.model.base.ArchesMixin`), plus the protein background priors. Everything
        else stays the reference's: the weights of the reference batches, the self-expressive
        networks and the anchors (their data are stored in the model), so query cells are
        expressed over the reference anchors and the reference cells' outputs are unchanged.

        Parameters
        ----------
        adata
            Query cells (MuData for a MuData model). Features are matched to the reference by
            name (features in another order are reordered, with a warning naming the
            modalities; missing ones raise a ValueError listing them), and modalities may be
            absent (see :meth:`get_coefficients`). Not modified:
            when its layout differs from the reference a copy is registered (``model.adata``).
        reference_model
            A trained :class:`SCMSI` or the folder it was saved to.
        freeze_batchnorm_decoder
            Keep the decoders' normalisation layers fixed (scvi-tools' default trains them).
        **kwargs
            Passed to :meth:`scvi.model.base.ArchesMixin.load_query_data`.
        """
        registry = (
            reference_model.registry
            if isinstance(reference_model, BaseModelClass)
            else BaseModelClass.load_registry(str(reference_model))
        )
        prepared = _reference_layout(adata, registry)
        n_ref_batch = len(
            registry["field_registries"][REGISTRY_KEYS.BATCH_KEY]["state_registry"][
                "categorical_mapping"
            ]
        )
        cov_state = registry["field_registries"].get(REGISTRY_KEYS.CAT_COVS_KEY, {})
        n_ref_cats = [n_ref_batch, *cov_state.get("state_registry", {}).get("n_cats_per_key", [])]
        token = _FROM_STATE.set(True)
        try:
            model = super().load_query_data(
                prepared,
                reference_model,
                freeze_batchnorm_decoder=freeze_batchnorm_decoder,
                **kwargs,
            )
        finally:
            _FROM_STATE.reset(token)
        model.is_query_model_ = True
        model.n_reference_batches_ = n_ref_batch
        model._freeze_reference_categories(n_ref_cats)
        model._refresh_anchor_indices()
        return model

    def _freeze_reference_categories(self, n_ref_cats: list[int]) -> None:
        """Lay out and freeze the one-hot columns of the reference categories in every FCLayers.

        ``n_ref_cats``: the reference's number of batches, then of each covariate's categories.
        scvi-tools pads a weight that grew at its end, but the query's one-hot columns are
        ``[batch | covariate 1 | ...]`` with new categories at the end of *each* block: the
        columns are moved to their blocks here. Then the reference categories' columns get no
        gradient (scvi-tools' hooks keep every category trainable): the anchors are encoded
        with reference categories at every step, so training those columns would move them.
        """
        from scvi.nn import FCLayers

        def effective(n: int) -> int:  # scvi-tools drops the column of a one-category variable
            return n if n > 1 else 0

        def hook(grad, frozen):
            grad = grad.clone()
            grad[:, frozen] = 0
            return grad

        for mod in self.module.modules():
            if not isinstance(mod, FCLayers) or sum(mod.n_cat_list) == 0:
                continue
            n_query = list(mod.n_cat_list)
            n_ref = [effective(n) for n in n_ref_cats]
            for i, layers in enumerate(mod.fc_layers):
                if not mod.inject_into_layer(i):
                    continue
                lin = next(layer for layer in layers if isinstance(layer, torch.nn.Linear))
                start = lin.weight.shape[1] - sum(n_query)
                frozen = []
                with torch.no_grad():
                    w = lin.weight[:, start:].clone()
                    ref_blocks = torch.split(w[:, : sum(n_ref)], n_ref, dim=1)
                    pad = w[:, sum(n_ref) :]
                    blocks, used, offset = [], 0, start
                    for k, (ref_block, nq) in enumerate(zip(ref_blocks, n_query, strict=True)):
                        extra = nq - ref_block.shape[1]
                        block = torch.cat([ref_block, pad[:, used : used + extra]], dim=1)
                        used += extra
                        if nq and not n_ref[k]:
                            # a one-category reference variable had no column: its category's
                            # padded column must add nothing, as in the reference
                            block[:, 0] = 0.0
                        blocks.append(block)
                        frozen += range(offset, offset + min(n_ref_cats[k], nq))
                        offset += nq
                    lin.weight[:, start:] = torch.cat(blocks, dim=1)
                if lin.weight.requires_grad and frozen:
                    idx = torch.tensor(frozen)
                    lin.weight.register_hook(lambda g, f=idx: hook(g, f))


def default_max_epochs(n_cells: int, budget: int = 400) -> int:
    """Default ``max_epochs`` of :meth:`SCMSI.train` for ``n_cells`` cells.

    ``budget`` (the objective's ``epoch_budget``: 200 for ``"default"``, whose softmax
    coefficients converge in half the epochs on our benchmarks;
    400 for ``"paper"``/``"paper_local"``) scales the heuristic below:
    ``min(budget, round(20000 / N * budget))``.

    scvi-tools' heuristic, ``min(400, round(20000 / N * 400))``: 400 epochs up to 20,000
    cells, then a fixed budget of 8M cell-passes (28,000 minibatches of 256 after the 10%
    validation split). A step costs the same whatever N (a minibatch plus the fixed anchors),
    so total training time is flat above 20,000 cells, and large data sets, being redundant,
    need fewer passes each.
    The floor of 10 epochs keeps whole epochs on both sides of the pre-training switch
    (``pretrain_fraction`` 0.25) and a validation curve with some points: it first applies
    above 800,000 cells (1M cells -> 10 instead of 8).
    """
    # Not scvi's function itself: it warns at 1 epoch, which the floor never gives.
    return max(_MIN_EPOCHS, min(budget, round(20_000 / max(n_cells, 1) * budget)))


def _elbo(trainer) -> float | None:
    """This epoch's validation ELBO, or the training ELBO without a validation set."""
    metrics = trainer.callback_metrics
    value = metrics.get("elbo_validation", metrics.get("elbo_train"))
    return None if value is None else float(value)


def _plateaued(
    values: Sequence[float], window: int = 20, smooth: int = 5, rel_tol: float = 1e-3
) -> bool:
    """Has the ELBO improved by less than ``rel_tol`` (relative) over ``window`` epochs?

    The mean of the last ``smooth`` epochs against the mean ``window`` epochs earlier: a
    label-free rule, the same for every data set, that works on the (unweighted) ELBO from the
    first epoch. scvi-tools' patience rule alone (no improvement for 45 epochs) almost never
    fires on a slowly improving ELBO, so training ran the full ``max_epochs``.
    """
    if len(values) < window + smooth:
        return False
    now, before = np.mean(values[-smooth:]), np.mean(values[-window - smooth : -window])
    return bool(before - now < rel_tol * abs(now))


class _DecodeRebuiltAfter(Callback):
    """Switch decoders from ``z`` to ``z_hat`` once ``n_epochs`` pre-training epochs are done,
    or (``early``) as soon as the pre-training ELBO has converged (:func:`_plateaued`)."""

    def __init__(self, n_epochs: int, early: bool = False):
        self.n_epochs, self.early = n_epochs, early
        self.switched_at: int | None = 0 if n_epochs == 0 else None
        self._values: list[float] = []

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if self.switched_at is None and trainer.current_epoch >= self.n_epochs:
            self.switched_at = trainer.current_epoch
        pl_module.module.decode_rebuilt.fill_(self.switched_at is not None)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if self.switched_at is not None or not self.early or (value := _elbo(trainer)) is None:
            return
        self._values.append(value)
        if _plateaued(self._values):
            self.switched_at = trainer.current_epoch + 1

    def on_train_end(self, trainer, pl_module) -> None:
        pl_module.module.decode_rebuilt.fill_(True)


# Relative ELBO improvement over 20 epochs below which training stops after pre-training.
# 0.1% (the pre-training switch's tolerance) never fired on in-house PBMC, whose validation
# ELBO still gains 0.3-1% per 20 epochs from epoch 140 to 200 as the KL weight keeps rising
# (scvi-tools' warm-up lasts 400 epochs), while its clusters were already final (ARI 0.996
# from epoch 60 on): benchmarks/results/convergence.md.
STOP_REL_TOL = 1e-2


class _Converged(Callback):
    """Stop training once the ELBO has levelled off after pre-training: less than
    ``STOP_REL_TOL`` relative improvement over 20 epochs (:func:`_plateaued`)."""

    def __init__(self, switch: _DecodeRebuiltAfter):
        self.switch = switch
        self.values: list[float] = []

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        start = self.switch.switched_at
        if start is None or trainer.current_epoch < start or (value := _elbo(trainer)) is None:
            return
        self.values.append(value)
        if _plateaued(self.values, rel_tol=STOP_REL_TOL):
            trainer.should_stop = True


class _TrainingGuard(Callback):
    """Ctrl-C stops after the current minibatch and a non-finite loss stops training; both
    leave the weights of the last completed epoch (copied at each epoch's end)."""

    def __init__(self):
        self.requested = False  # a Ctrl-C came during this epoch
        self.interrupted = False
        self.diverged: str | None = None
        self.n_completed = 0
        self._state: dict | None = None

    @contextlib.contextmanager
    def catch_sigint(self):
        """Handle SIGINT ourselves while training (main thread only; signals need it)."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = signal.getsignal(signal.SIGINT)

        def handler(signum, frame):
            if self.requested:  # a second Ctrl-C: stop now
                raise KeyboardInterrupt
            self.requested = self.interrupted = True

        signal.signal(signal.SIGINT, handler)
        try:
            yield
        finally:
            # Lightning leaves SIGINT ignored after a KeyboardInterrupt it caught
            signal.signal(signal.SIGINT, previous)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if loss is not None and not bool(torch.isfinite(loss.detach()).all()):
            self.diverged = self.divergence(
                f"the loss became {float(loss.detach())} at epoch {trainer.current_epoch}, "
                f"minibatch {batch_idx}"
            )
            trainer.should_stop = True
        elif self.requested:
            trainer.should_stop = True

    def divergence(self, what: str) -> str:
        return (
            f"Training diverged: {what}. Likely cause: a learning rate too high for these "
            "data, or extreme values in the input (a few cells or features with huge counts). "
            "Lower the learning rate, e.g. `model.train(plan_kwargs={'lr': 1e-4})`, or check "
            f"the input. The model keeps the weights of the last completed epoch "
            f"({self.n_completed})."
        )

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if self.requested or self.diverged is not None:
            return  # an unfinished epoch: keep the previous copy
        self.n_completed += 1
        self._state = {k: v.detach().clone() for k, v in pl_module.module.state_dict().items()}

    def on_exception(self, trainer, pl_module, exception) -> None:
        if isinstance(exception, KeyboardInterrupt):
            self.interrupted = True

    def restore(self, module) -> None:
        if self._state is not None:
            module.load_state_dict(self._state)
        module.decode_rebuilt.fill_(True)  # as after a full run (`_DecodeRebuiltAfter`)


def _check_setup_keys(mdata, modalities, layers, context_layers, observed_keys) -> None:
    """Every name :meth:`SCMSI.setup_mudata` is given exists and fits: modalities, their
    types and names, layers, neighbourhood layers, mask columns; cell names are unique."""
    left_out = [m for m in mdata.mod if m not in modalities]
    if left_out:
        warnings.warn(
            f"Modalities {left_out} of the MuData are left out of the model (not in "
            f"`modalities=` or uns[{MODALITY_TYPES_KEY!r}]); pass them in `modalities=` to use "
            "them.",
            UserWarning,
            stacklevel=3,
        )
    unknown_layers = [m for m in layers if m not in mdata.mod]
    if unknown_layers:
        raise KeyError(
            f"`layers=` names {unknown_layers}, which are not modalities of the MuData "
            f"{list(mdata.mod)}; its keys are modality names, e.g. "
            f"`layers={{'{next(iter(modalities), 'rna')}': 'counts'}}`."
        )
    for name, kind in modalities.items():
        if name not in mdata.mod:
            raise KeyError(f"Modality {name!r} is not in the MuData (has {list(mdata.mod)}).")
        if kind not in HEADS:
            raise ValueError(
                f"Unknown type {kind!r} for modality {name!r}; choose from {list(HEADS)}."
            )
        if not re.fullmatch(r"[A-Za-z0-9_\-]+", name):
            raise ValueError(f"Modality name {name!r}: use letters, digits, '_' or '-'.")
    for name, layer in context_layers.items():
        if name not in modalities:
            raise KeyError(f"context_layers names {name!r}, not a registered modality.")
        if layer not in mdata.mod[name].layers:
            raise KeyError(
                f"Context layer {layer!r} not in mdata['{name}'].layers "
                f"(has {list(mdata.mod[name].layers)}); pass context_layers={{}} to fit "
                "without it."
            )
        if modalities[name] == "accessibility":
            raise ValueError(f"context_layers: not supported for accessibility ({name!r}).")
    unknown = set(observed_keys) - set(modalities)
    if unknown:
        raise KeyError(f"observed_keys names unknown modalities {sorted(unknown)}.")
    val.check_cell_names(mdata, list(modalities))


def _modality_fields(modalities, layers, observed_keys, context_layers) -> list:
    """The registry fields of every modality: data, mask and neighbourhood input."""
    mudata_fields = []
    for name, kind in modalities.items():
        mudata_fields.append(
            fields.MuDataLayerField(
                _registry_key(name),
                layers.get(name),
                mod_key=name,
                is_count_data=HEADS[kind].requires_counts,
                mod_required=True,
            )
        )
        mudata_fields.append(
            MuDataObservedField(mask_registry_key(name), name, observed_keys.get(name))
        )
        if name in context_layers:
            mudata_fields.append(
                fields.MuDataLayerField(
                    _context_registry_key(name),
                    context_layers[name],
                    mod_key=name,
                    is_count_data=False,
                    mod_required=True,
                )
            )
    return mudata_fields


def _objective_of(objective, overrides: dict) -> tuple[Objective, str | None]:
    """The resolved objective of ``SCMSI(objective=..., **overrides)`` and the name of the
    preset it starts from (None for an :class:`Objective`)."""
    overrides = dict(overrides)
    legacy = "preset" in overrides  # the former name of `objective`
    if legacy:
        objective = overrides.pop("preset")
        if not _FROM_STATE.get():
            warnings.warn(
                "`SCMSI(preset=...)` is now `SCMSI(objective=...)`; `preset=` will be removed "
                "in the next release.",
                FutureWarning,
                stacklevel=3,
            )
    if isinstance(objective, dict):  # as `__init__` stores it for `load`
        overrides = {**objective, **overrides}
        objective = overrides.pop("preset", None) or "default"
    name = PRESET_ALIASES.get(objective, objective) if isinstance(objective, str) else None
    with warnings.catch_warnings():
        if _FROM_STATE.get():  # a saved model: its preset's former name is no news to the user
            warnings.simplefilter("ignore", FutureWarning)
        base = resolve(objective)
    if legacy:
        overrides = _without_stored_defaults(base, overrides)
    return resolve(base, **overrides), name


def _without_stored_defaults(base: Objective, overrides: dict) -> dict:
    """Models saved before :class:`Objective` stored every keyword, also the defaults of
    options their coefficient type ignores (``gamma=1.0`` under softmax): drop those."""
    group = SoftmaxOptions if isinstance(base.options, ReluOptions) else ReluOptions
    ignored = dataclasses.asdict(group())
    return {k: v for k, v in overrides.items() if not (k in ignored and v == ignored[k])}


def _changed_options(preset: str | None, objective: Objective) -> dict:
    """The options of ``objective`` that differ from its preset's (lambda_cross aside: the
    data set it)."""
    if preset is None:
        return {}
    ref = PRESETS[preset].to_dict()
    return {
        k: v for k, v in objective.to_dict().items() if k != "lambda_cross" and ref.get(k, v) != v
    }


def _protein_priors(specs, data, observed, batch, n_batch, seed) -> dict:
    """``{protein modality: (mean, scale)}`` of the background prior, from the cells that
    have the modality."""
    priors = {}
    for s in specs:
        if s.kind != "protein":
            continue
        rows = observed[s.name]
        x = data[s.name] if rows.all() else read_rows(data[s.name], np.flatnonzero(rows))
        priors[s.name] = protein_background_prior(x, batch[rows], n_batch, seed=seed)
    return priors


def modality_kinds(mdata: MuData) -> dict[str, str]:
    """``{modality: type}`` of a MuData for :meth:`SCMSI.setup_mudata` without ``modalities=``.

    One source: ``mdata.uns["modality_types"]``, written by every loader of
    :mod:`scmsi.datasets` and by :func:`scmsi.spatial.to_mudata`. Without it, types are guessed
    from the modality names (``rna``/``gex`` -> counts, ``prot``/``adt`` -> protein,
    ``atac``/``peaks`` -> accessibility), with a warning.
    """
    declared = declared_modality_types(mdata)
    if declared is not None:
        absent = [m for m in declared if m not in mdata.mod]
        if absent:
            raise KeyError(
                f"mdata.uns[{MODALITY_TYPES_KEY!r}] names modalities {absent} that the MuData does "
                f"not have (has {list(mdata.mod)}); fix it or pass `modalities=`."
            )
        return {m: declared[m] for m in mdata.mod if m in declared}  # .h5mu sorts uns keys
    kinds = {m: _KIND_BY_NAME[m.lower()] for m in mdata.mod if m.lower() in _KIND_BY_NAME}
    if not kinds:
        raise ValueError(
            f"No modality types: mdata.uns[{MODALITY_TYPES_KEY!r}] is not set and the names "
            f"{list(mdata.mod)} are not known ones. Pass `modalities=`, e.g. "
            "`modalities={'rna': 'counts', 'prot': 'protein'}` (types: counts, protein, "
            "accessibility, continuous)."
        )
    warnings.warn(
        f"Modality types guessed from their names: {kinds}. Pass `modalities=` or set "
        f"mdata.uns[{MODALITY_TYPES_KEY!r}] to say them.",
        UserWarning,
        stacklevel=3,
    )
    return kinds


def _registered_kinds(setup_args: dict) -> dict[str, str]:
    """``{modality: type}`` a registry holds (:func:`modality_kinds` reads the data's own)."""
    if "modalities" in setup_args:
        return dict(setup_args["modalities"])
    kinds = {_ANNDATA_RNA: "counts"}
    if setup_args.get("protein_expression_obsm_key") is not None:
        kinds[_ANNDATA_PROT] = "protein"
    return kinds


def _features_from_registry(registry: dict) -> dict[str, np.ndarray]:
    """``{modality: feature names}`` the model was trained on."""
    out = {}
    for m in _registered_kinds(registry["setup_args"]):
        state = registry["field_registries"][_registry_key(m)]["state_registry"]
        out[m] = np.asarray(state.get("column_names", state.get("columns", [])))
    return out


def _reference_layout(data, registry: dict):
    """``data`` laid out as the saved model's data (see ``prepare_query``), saying so when the
    features were reordered."""
    features = _features_from_registry(registry)
    val.warn_reordered_features(data, registry["setup_args"], features)
    return prepare_query(data, registry["setup_args"], features)


def _check_modality(x, name: str, kind: str, obs_names) -> None:
    label = f"modality '{name}'"
    val.check_informative(x, label)  # first: an all-zero counts matrix is no "empty cells"
    if HEADS[kind].requires_counts:
        val.check_counts(x, label)
    elif kind == "accessibility":
        val.check_nonnegative(x, label, kind)
    else:
        val.check_finite(x, label)
    if kind == "counts":
        val.check_not_binary(x, label)
    if kind in ("counts", "accessibility"):  # their likelihoods use the cell's depth
        val.check_nonempty_cells(x, label, obs_names)
