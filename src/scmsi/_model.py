"""The user-facing scMSI model: data registration, anchors, training and outputs."""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from typing import Literal

import numpy as np
import pandas as pd
import scvi
import torch
from anndata import AnnData
from lightning.pytorch.callbacks import Callback
from mudata import MuData
from scipy import sparse
from scvi import REGISTRY_KEYS
from scvi.data import AnnDataManager, fields
from scvi.model._utils import get_max_epochs_heuristic
from scvi.model.base import BaseModelClass, UnsupervisedTrainingMixin

from . import _validation as val
from ._anchors import default_n_anchors, select_anchors
from ._likelihoods import HEADS, protein_background_prior
from ._module import ModalitySpec, SCMSIModule

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


def _registry_key(name: str) -> str:
    return f"scmsi_{name}"


class SCMSI(UnsupervisedTrainingMixin, BaseModelClass):
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
    n_embed
        Query/key dimension of the self-expressive networks.
    gene_likelihood
        ``"nb"`` (default) or ``"zinb"`` for ``counts`` modalities.
    accessibility_likelihood
        ``"bernoulli"`` (default; peaks binarised, as PeakVI/MultiVI) or ``"poisson"``
        (integer fragment counts) for ``accessibility`` modalities.
    lambda_se, lambda_contrast
        Weights of the self-expressive and contrastive losses.
    gamma, lam
        Elastic-net weight and L1 share of the coefficient regulariser.
    seed
        Sets ``scvi.settings.seed`` before anchor selection, initialisation and training, so the
        same seed gives the same result on the same machine.

    Examples
    --------
    >>> scmsi.SCMSI.setup_mudata(mdata, modalities={"rna": "counts", "prot": "protein"},
    ...                          layers={"rna": "counts", "prot": None})
    >>> model = scmsi.SCMSI(mdata)
    >>> model.train()
    >>> scmsi.tl.embed_and_cluster(mdata, model)
    """

    _module_cls = SCMSIModule

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
        n_embed: int = 64,
        gene_likelihood: str = "nb",
        accessibility_likelihood: str = "bernoulli",
        lambda_se: float = 1.0,
        lambda_contrast: float = 0.1,
        gamma: float = 1.0,
        lam: float = 0.9,
        seed: int = 0,
    ):
        super().__init__(adata)
        self.init_params_ = self._get_init_params(locals())
        self.seed = seed
        scvi.settings.seed = seed
        specs = self._modality_specs()
        data = {s.name: self._registered(s.registry_key) for s in specs}
        batch = (
            np.asarray(self.adata_manager.get_from_registry(REGISTRY_KEYS.BATCH_KEY))
            .ravel()
            .astype(int)
        )
        n_batch = self.summary_stats.n_batch
        n_cells = self.adata.n_obs

        if anchors is None:
            n_anchors = default_n_anchors(n_cells) if n_anchors is None else int(n_anchors)
            val.check_n_anchors(n_anchors, n_cells)
            kinds = {s.name: s.kind for s in specs}
            preference = ("counts", "continuous", "accessibility", "protein")
            anchor_mod = anchor_modality or min(kinds, key=lambda m: preference.index(kinds[m]))
            if anchor_mod not in data:
                raise ValueError(f"anchor_modality {anchor_mod!r} is not one of {list(data)}.")
            anchor_idx = select_anchors(
                data[anchor_mod], n_anchors, kind=kinds[anchor_mod], seed=seed
            )
        else:
            anchor_idx = self._anchor_positions(anchors)
            val.check_n_anchors(len(anchor_idx), n_cells)
        self.anchor_indices_ = anchor_idx
        self.anchor_names_ = np.asarray(self.adata.obs_names[anchor_idx])
        # `load` re-runs __init__: store the chosen anchors so it needs no second K-means.
        self.init_params_["non_kwargs"]["anchors"] = self.anchor_names_.tolist()

        if accessibility_likelihood == "poisson":
            for s in specs:
                if s.kind == "accessibility":
                    val.check_counts(data[s.name], f"modality '{s.name}' (Poisson accessibility)")
        priors = {
            s.name: protein_background_prior(_dense(data[s.name]), batch, n_batch, seed=seed)
            for s in specs
            if s.kind == "protein"
        }
        self.module = self._module_cls(
            modalities=specs,
            anchor_data={s.name: _dense(data[s.name][anchor_idx]) for s in specs},
            anchor_batch=batch[anchor_idx],
            n_batch=n_batch,
            n_latent=n_latent,
            n_hidden=n_hidden,
            n_layers=n_layers,
            dropout_rate=dropout_rate,
            n_embed=n_embed,
            gene_likelihood=gene_likelihood,
            accessibility_likelihood=accessibility_likelihood,
            lambda_se=lambda_se,
            lambda_contrast=lambda_contrast,
            gamma=gamma,
            lam=lam,
            protein_priors=priors,
        )
        mods = ", ".join(f"{s.name} ({s.kind}, {s.n_features})" for s in specs)
        self._model_summary_string = (
            f"SCMSI: modalities {mods}; "
            f"{len(anchor_idx)} anchors, n_latent={n_latent}, n_batch={n_batch}"
        )

    # ------------------------------------------------------------------ registration
    @classmethod
    def setup_mudata(
        cls,
        mdata: MuData,
        modalities: dict[str, str] | None = None,
        layers: dict[str, str | None] | None = None,
        batch_key: str | None = None,
        batch_mod: str | None = None,
        **kwargs,
    ):
        """Register a MuData for scMSI.

        Parameters
        ----------
        mdata
            MuData whose modalities hold the same cells in the same order.
        modalities
            ``{modality name: type}`` with type one of ``"counts"`` (NB/ZINB), ``"protein"``
            (NB mixture with background), ``"accessibility"`` (peaks: Bernoulli on binarised
            values or Poisson on fragments) or ``"continuous"`` (Gaussian: processed features,
            normalised matrices). Any number of modalities. Default: every modality named like
            ``rna``/``gex`` -> counts, ``prot``/``adt`` -> protein, ``atac``/``peaks`` ->
            accessibility. Sparse matrices stay sparse; minibatches are densified one at a time.
        layers
            ``{modality name: layer}``; a missing entry or None uses ``.X``.
        batch_key
            Categorical batch column, in ``mdata.obs`` or in ``mdata[batch_mod].obs``.
        batch_mod
            Modality whose ``.obs`` holds ``batch_key``; None reads ``mdata.obs``.
        """
        setup_method_args = cls._get_setup_method_args(**locals())
        if modalities is None:
            modalities = {
                m: _KIND_BY_NAME[m.lower()] for m in mdata.mod if m.lower() in _KIND_BY_NAME
            }
            if not modalities:
                raise ValueError(
                    f"Could not infer modality types from names {list(mdata.mod)}; pass "
                    "`modalities={'rna': 'counts', 'prot': 'protein'}`."
                )
            setup_method_args["setup_args"]["modalities"] = modalities
        layers = dict(layers or {})
        for name, kind in modalities.items():
            if name not in mdata.mod:
                raise KeyError(f"Modality {name!r} is not in the MuData (has {list(mdata.mod)}).")
            if kind not in HEADS:
                raise ValueError(
                    f"Unknown type {kind!r} for modality {name!r}; choose from {list(HEADS)}."
                )
            if not re.fullmatch(r"[A-Za-z0-9_\-]+", name):
                raise ValueError(f"Modality name {name!r}: use letters, digits, '_' or '-'.")
        val.check_cell_names(mdata, list(modalities))
        if batch_mod is not None and batch_mod not in mdata.mod:
            raise KeyError(f"batch_mod {batch_mod!r} is not in the MuData (has {list(mdata.mod)}).")
        val.check_obs_key(
            mdata.obs if batch_mod is None else mdata.mod[batch_mod].obs,
            batch_key,
            "mdata" if batch_mod is None else f"mdata['{batch_mod}']",
        )
        for name, kind in modalities.items():
            ad = mdata.mod[name]
            layer = layers.get(name)
            if layer is not None and layer not in ad.layers:
                raise KeyError(
                    f"Layer {layer!r} not in mdata['{name}'].layers (has {list(ad.layers)})."
                )
            _check_modality(ad.X if layer is None else ad.layers[layer], name, kind, ad.obs_names)

        mudata_fields = [
            fields.MuDataCategoricalObsField(REGISTRY_KEYS.BATCH_KEY, batch_key, mod_key=batch_mod)
        ]
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
        adata_manager = AnnDataManager(fields=mudata_fields, setup_method_args=setup_method_args)
        adata_manager.register_fields(mdata, **kwargs)
        cls.register_manager(adata_manager)

    @classmethod
    def setup_anndata(
        cls,
        adata: AnnData,
        layer: str | None = None,
        protein_expression_obsm_key: str | None = None,
        batch_key: str | None = None,
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
        """
        setup_method_args = cls._get_setup_method_args(**locals())
        if not adata.obs_names.is_unique:
            raise ValueError("Cell names are not unique; call `adata.obs_names_make_unique()`.")
        val.check_obs_key(adata.obs, batch_key, "adata")
        if layer is not None and layer not in adata.layers:
            raise KeyError(f"Layer {layer!r} not in adata.layers (has {list(adata.layers)}).")
        _check_modality(
            adata.X if layer is None else adata.layers[layer], "RNA", "counts", adata.obs_names
        )
        anndata_fields = [
            fields.CategoricalObsField(REGISTRY_KEYS.BATCH_KEY, batch_key),
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
        adata_manager = AnnDataManager(fields=anndata_fields, setup_method_args=setup_method_args)
        adata_manager.register_fields(adata, **kwargs)
        cls.register_manager(adata_manager)

    # ------------------------------------------------------------------ helpers
    def _modality_specs(self, adata_manager: AnnDataManager | None = None) -> list[ModalitySpec]:
        manager = adata_manager or self.adata_manager
        args = manager.registry["setup_args"]
        if "modalities" in args:
            kinds = dict(args["modalities"])
        else:
            kinds = {_ANNDATA_RNA: "counts"}
            if args.get("protein_expression_obsm_key") is not None:
                kinds[_ANNDATA_PROT] = "protein"
        specs = []
        for name, kind in kinds.items():
            key = _registry_key(name)
            n_features = len(self._feature_names(key, manager))
            specs.append(ModalitySpec(name, kind, n_features, key))
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

    def _outputs(self, adata, indices, batch_size, transform_batch=None):
        """Yield (inference outputs, generative outputs) per minibatch, eval mode, means.

        ``adata`` may be unvalidated (None = training data); validation is idempotent.
        """
        adata = self._validate_anndata(adata)
        loader = self._make_data_loader(adata=adata, indices=indices, batch_size=batch_size)
        self.module.eval()
        with torch.inference_mode():
            for tensors in loader:
                if transform_batch is not None:
                    tensors = dict(tensors)
                    b = tensors[REGISTRY_KEYS.BATCH_KEY]
                    tensors[REGISTRY_KEYS.BATCH_KEY] = torch.full_like(b, transform_batch)
                inf_in = self.module._get_inference_input(tensors)
                inf = self.module.inference(**inf_in, use_mean=True)
                gen = self.module.generative(**self.module._get_generative_input(tensors, inf))
                yield inf, gen

    # ------------------------------------------------------------------ training
    def train(
        self,
        max_epochs: int | None = None,
        batch_size: int = 256,
        early_stopping: bool = True,
        pretrain_fraction: float = 0.25,
        plan_kwargs: dict | None = None,
        **kwargs,
    ):
        """Train with scvi-tools' Lightning loop (progress bar, early stopping).

        Parameters
        ----------
        max_epochs
            Default: scvi-tools' heuristic ``min(400, round(20000 / N * 400))``.
        batch_size
            Minibatch size.
        early_stopping
            Stop when the validation ELBO has not improved for 45 epochs (counted from the end
            of pre-training).
        pretrain_fraction
            Share of ``max_epochs`` during which decoders read ``z`` while the self-expressive
            networks learn to rebuild it (as deep subspace clustering pre-trains its
            autoencoder); afterwards decoders read ``z_hat = C z_anchor``.
        plan_kwargs
            Passed to :class:`scvi.train.TrainingPlan` (``lr``, ``n_epochs_kl_warmup``...).
        **kwargs
            Passed to :meth:`scvi.model.base.UnsupervisedTrainingMixin.train`.
        """
        scvi.settings.seed = self.seed
        if max_epochs is None:
            max_epochs = get_max_epochs_heuristic(self.adata.n_obs)
        n_pre = int(round(pretrain_fraction * max_epochs))
        callbacks = list(kwargs.pop("callbacks", None) or []) + [_DecodeRebuiltAfter(n_pre)]
        if early_stopping:
            kwargs.setdefault("early_stopping_warmup_epochs", n_pre)
        return super().train(
            max_epochs=max_epochs,
            batch_size=batch_size,
            early_stopping=early_stopping,
            plan_kwargs=plan_kwargs,
            callbacks=callbacks,
            **kwargs,
        )

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

        Parameters
        ----------
        adata
            Data to encode (default: the training data). New cells are encoded with no
            retraining.
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
        for inf, _ in self._outputs(adata, indices, batch_size):
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
        fusion: Literal["mean", "adaptive"] = "mean",
    ) -> np.ndarray | dict[str, np.ndarray]:
        """Self-expressive coefficients of cells over the anchors, shape ``(N, A)``.

        The fused affinity is a weighted mean over modalities of each modality's coefficients
        normalised to sum to one per cell, so no modality counts more for the scale of its
        coefficients. ``fusion="mean"`` weighs modalities equally; ``"adaptive"`` uses the
        per-cell weights of :meth:`get_modality_weights`.

        Parameters
        ----------
        adata
            Data (default: the training data); new cells are expressed over the trained anchors.
        modality
            A modality's raw coefficients ``C^m``; None returns the fused affinity.
        indices
            Cells to use.
        batch_size
            Minibatch size.
        return_all
            Return ``{"fused": ..., name: C^m, ...}``.
        fusion
            ``"mean"`` or ``"adaptive"`` (see above).
        """
        if modality is not None:
            self._check_modality_name(modality)
        if fusion not in ("mean", "adaptive"):
            raise ValueError(f"fusion must be 'mean' or 'adaptive', got {fusion!r}.")
        names = self.modality_names
        parts = {m: [] for m in names}
        errors = []
        for inf, _ in self._outputs(adata, indices, batch_size):
            for m in parts:
                parts[m].append(inf["coef"][m].cpu().numpy())
            if fusion == "adaptive":
                errors.append(_cross_rebuild_errors(inf, names))
        coefs = {m: np.concatenate(v) for m, v in parts.items()}
        if modality is not None and not return_all:
            return coefs[modality]
        weights = modality_weights(np.concatenate(errors)) if fusion == "adaptive" else None
        fused = fuse_coefficients([coefs[m] for m in names], weights)
        return {"fused": fused, **coefs} if return_all else fused

    def get_modality_weights(
        self,
        adata: MuData | AnnData | None = None,
        indices: Sequence[int] | None = None,
        batch_size: int | None = None,
    ) -> pd.DataFrame:
        """Per-cell modality weights of the adaptive fusion, cells x modalities (rows sum to 1).

        Like WNN's weights, but read from the coefficients: modality m's coefficients of cell
        n (normalised to sum to 1) rebuild the cell's latent in *every* modality m' from the
        anchors' latents, ``z^m'_n ~ c^m_n Z^m'_anchor``. The squared errors, each divided by
        the median error of modality m' rebuilt by its own coefficients, are averaged over m'
        into a score ``s_nm``; the weights are ``softmax_m(-s_nm)``. A modality whose
        neighbours explain the cell in all modalities gets more weight; one whose neighbours
        mix cell types (noisy or uninformative data) gets less. Cost O(N * A * n_latent * M^2).
        """
        names = self.modality_names
        errors = [
            _cross_rebuild_errors(inf, names)
            for inf, _ in self._outputs(adata, indices, batch_size)
        ]
        adata_v = self._validate_anndata(adata)
        cells = adata_v.obs_names if indices is None else adata_v.obs_names[np.asarray(indices)]
        return pd.DataFrame(modality_weights(np.concatenate(errors)), index=cells, columns=names)

    def get_normalized_expression(
        self,
        adata: MuData | AnnData | None = None,
        modality: str | None = None,
        indices: Sequence[int] | None = None,
        transform_batch: str | int | None = None,
        library_size: float | None = None,
        batch_size: int | None = None,
    ) -> pd.DataFrame | dict[str, pd.DataFrame]:
        """Denoised expression decoded from the rebuilt latents.

        ``counts`` modalities: expression frequencies (times ``library_size`` if given);
        ``protein``: foreground rate times foreground probability (background removed, as
        totalVI); ``continuous``: the decoded mean.

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
        """
        if modality is not None:
            self._check_modality_name(modality)
        adata_v = self._validate_anndata(adata)
        b = self._batch_code(transform_batch, adata_v)
        parts = {m: [] for m in self.modality_names}
        for _, gen in self._outputs(adata_v, indices, batch_size, transform_batch=b):
            for m in parts:
                parts[m].append(self.module.heads[m].normalized(gen["params"][m]).cpu().numpy())
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
        adata_v = self._validate_anndata(adata)
        b = self._batch_code(transform_batch, adata_v)
        parts = {modality: []}
        head = self.module.heads[modality]
        for _, gen in self._outputs(adata_v, indices, batch_size, transform_batch=b):
            parts[modality].append(
                head.foreground_probability(gen["params"][modality]).cpu().numpy()
            )
        return self._as_frames(parts, adata_v, indices, modality, None)

    def _batch_code(self, transform_batch, adata) -> int | None:
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
        manager = self.get_anndata_manager(adata, required=True)
        cells = adata.obs_names if indices is None else adata.obs_names[np.asarray(indices)]
        kinds = {s.name: s.kind for s in self.module.modalities}
        frames = {}
        for m, v in parts.items():
            arr = np.concatenate(v)
            if library_size is not None and kinds[m] == "counts":
                arr = arr * library_size
            cols = self._feature_names(_registry_key(m), manager)
            frames[m] = pd.DataFrame(arr, index=cells, columns=cols)
        return frames[modality] if modality is not None else frames


class _DecodeRebuiltAfter(Callback):
    """Switch decoders from ``z`` to ``z_hat`` once ``n_epochs`` pre-training epochs are done."""

    def __init__(self, n_epochs: int):
        self.n_epochs = n_epochs

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        pl_module.module.decode_rebuilt.fill_(trainer.current_epoch >= self.n_epochs)

    def on_train_end(self, trainer, pl_module) -> None:
        pl_module.module.decode_rebuilt.fill_(True)


def fuse_coefficients(coefs: list[np.ndarray], weights: np.ndarray | None = None) -> np.ndarray:
    """Weighted mean of row-normalised coefficient matrices, shape ``(N, A)``; rows sum to 1.

    ``weights``: ``(N, M)`` per-cell modality weights summing to 1 per row; None = equal.
    """
    fused = np.zeros_like(coefs[0], dtype=np.float32)
    for m, c in enumerate(coefs):
        w = 1.0 / len(coefs) if weights is None else weights[:, m : m + 1]
        fused += w * c / np.maximum(c.sum(1, keepdims=True), 1e-12)
    return fused


def _cross_rebuild_errors(inf: dict, names: list[str]) -> np.ndarray:
    """``err[n, m, m'] = ||z^m'_n - c~^m_n Z^m'_anchor||^2`` for one minibatch, ``(B, M, M)``."""
    out = []
    for m in names:
        c = inf["coef"][m]
        c = c / c.sum(-1, keepdim=True).clamp(min=1e-12)
        row = [(inf["z"][t] - c @ inf["z_anchor"][t]).pow(2).sum(-1) for t in names]
        out.append(torch.stack(row, -1))
    return torch.stack(out, 1).cpu().numpy()


def modality_weights(errors: np.ndarray) -> np.ndarray:
    """Per-cell modality weights ``(N, M)`` from cross-rebuild errors ``(N, M, M)``.

    Each target modality's errors are scaled by the median error of its own rebuild, so
    modalities with large or small latent spreads are comparable; ``softmax(-mean score)``.
    """
    own = np.median(np.einsum("nmm->nm", errors), axis=0)  # (M,)
    score = (errors / np.maximum(own, 1e-12)[None, None, :]).mean(-1)  # (N, M)
    score = score - score.min(1, keepdims=True)
    w = np.exp(-score)
    return (w / w.sum(1, keepdims=True)).astype(np.float32)


def _dense(x) -> np.ndarray:
    return np.asarray(x.toarray() if sparse.issparse(x) else x, dtype=np.float32)


def _check_modality(x, name: str, kind: str, obs_names) -> None:
    label = f"modality '{name}'"
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
