"""The model's objective in one typed home: the loss, the fusion and the embedding.

:class:`Objective` holds every option of the training objective and of the outputs that
depend on it (fusion of the modalities' coefficients, embedding of the fused affinity).
:data:`PRESETS` names the objectives the package documents, :func:`resolve` turns a preset
name (or an :class:`Objective`) plus keyword overrides into one checked :class:`Objective`.
Every option check lives here, once: the model, the module, the CLI, ``tl``, ``spatial``
and the benchmarks take the resolved object or the names defined below.

Options that only one coefficient type reads are grouped (:class:`ReluOptions`,
:class:`SoftmaxOptions`), so that an option the chosen coefficients ignore cannot be set.

Standard library only: the CLI imports the names here without paying for torch.

Adding an option: one field in :class:`Objective` (or in the options group of the
coefficient type that reads it) with its default; a ``Literal`` field is checked against its
choices automatically, any other constraint is one line in :func:`_check`. Presets that
should differ from the default name the field.
"""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass, field, fields, replace
from typing import Any, Literal, get_args, get_origin, get_type_hints

Coefficients = Literal["softmax", "relu"]
"""``"softmax"``: each cell's coefficients are a distribution over the anchors (a kernel on
the latent distance); ``"relu"``: the paper's self-expressive network with a threshold."""
Agreement = Literal["directed", "kl", "squared"]
"""Contrastive term: ``"directed"``, each modality learns a cell's anchor distribution from
the modalities that know the cell better (:func:`~scmsi._selfexpression.teaching_gate`), never
the reverse; ``"kl"``, the symmetric KL between every pair of anchor distributions; or the
paper's squared difference of coefficients."""
Fusion = Literal["reliability", "product", "mean", "precision", "adaptive"]
"""How the modalities' coefficients are fused: multiplied (product of experts), each raised
to its per-cell reliability weight (``"reliability"``) or not (``"product"``); or averaged
with equal, precision or cross-rebuild weights."""
Embedding = Literal["latent", "rebuilt", "pca"]
"""How :func:`scmsi.tl.embed_and_cluster` embeds the cells: every modality's latent
(standardised, concatenated), those latents rebuilt by the fused affinity, or the PCA of the
fused coefficients."""

SpatialEmbedding = Literal["spectral", "pca"]
""":func:`scmsi.spatial.spatial_domains`' embeddings of the spatially smoothed affinity: the
spectral embedding of the spot-anchor graph, or (as in :data:`Embedding`) the PCA of the
fused coefficients. One vocabulary: a word means the same wherever an ``embedding=`` takes it."""

COEFFICIENTS: tuple[str, ...] = get_args(Coefficients)
AGREEMENTS: tuple[str, ...] = get_args(Agreement)
FUSIONS: tuple[str, ...] = get_args(Fusion)
EMBEDDINGS: tuple[str, ...] = get_args(Embedding)
SPATIAL_EMBEDDINGS: tuple[str, ...] = get_args(SpatialEmbedding)


@dataclass(frozen=True)
class ReluOptions:
    """Options of ``coefficients="relu"`` (the paper's self-expressive network).

    Defaults are the paper's: plain elastic net, plain threshold.
    """

    gamma: float = 1.0
    """Weight of the elastic-net regulariser of the coefficients."""
    lam: float = 0.9
    """L1 share of the elastic net."""
    locality: bool = False
    """Weigh each coefficient's L1 penalty by the latent distance between the cell and the
    anchor (after SMCE, Elhamifar & Vidal 2011), so that cells are expressed over nearby
    anchors; False is the paper's plain elastic net."""
    ceiling: bool = False
    """The learned threshold never cuts a cell's best anchor (False: the paper's threshold,
    which can zero a whole row)."""
    n_embed: int = 64
    """Query/key dimension of the self-expressive network."""


@dataclass(frozen=True)
class SoftmaxOptions:
    """Options of ``coefficients="softmax"`` (a kernel over the anchors)."""

    perplexity: float = 10.0
    """Effective number of anchors per cell (``exp(entropy)`` of a row), as in t-SNE."""


# The options group each coefficient type reads.
_GROUPS: dict[str, type] = {"relu": ReluOptions, "softmax": SoftmaxOptions}


@dataclass(frozen=True)
class Objective:
    """Every option of scMSI's objective, its fusion and its embedding; frozen and checked.

    Build one with :func:`resolve` (a preset plus overrides) or directly; an invalid
    combination raises a ValueError that names the option.
    """

    coefficients: Coefficients = "softmax"
    """Coefficient type (:data:`Coefficients`)."""
    options: ReluOptions | SoftmaxOptions = field(default_factory=SoftmaxOptions)
    """The options of that coefficient type only (:class:`ReluOptions` or
    :class:`SoftmaxOptions`)."""
    agreement: Agreement = "directed"
    """Contrastive term (:data:`Agreement`); ``"directed"`` and ``"kl"`` need softmax
    coefficients."""
    lambda_se: float = 1.0
    """Weight of the self-expressive loss."""
    lambda_contrast: float = 1.0
    """Weight of the contrastive loss."""
    lambda_cross: float | None = None
    """Weight of the cross-modal reconstruction (modality m decoded from its latent rebuilt
    with the coefficients of m', scored by its likelihood), which imputing a missing modality
    relies on. None: 1 when some cells lack a modality, else 0 (the paper's objective); the
    model stores the number it used."""
    scale_free: bool = True
    """Divide the self-expression error by the anchors' latent variance (False: the paper's
    plain error, which has a trivial minimum where every latent shrinks to one point)."""
    anchor_grad: bool = True
    """Backpropagate through the anchors' encoding at every step; False encodes them without
    gradient (a third less encoder work per step)."""
    fusion: Fusion = "reliability"
    """Default fusion of the modalities' coefficients (:data:`Fusion`). With
    ``"reliability"`` the joint-latent embedding weighs each modality by the mean of the same
    per-cell weights."""
    embedding: Embedding = "latent"
    """Default embedding of :func:`scmsi.tl.embed_and_cluster` (:data:`Embedding`)."""
    epoch_budget: int = 200
    """Epoch budget ``B`` of the default number of epochs
    (:func:`scmsi._model.default_max_epochs`)."""

    def __post_init__(self) -> None:
        _check(self)

    def to_dict(self) -> dict[str, Any]:
        """Flat ``{option: value}`` (the group's options inline): what :func:`resolve` takes
        as overrides, and what a saved model stores."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "options"}
        out.update(dataclasses.asdict(self.options))
        return out

    def __getattr__(self, name: str):
        # The group's options read as attributes of the objective (objective.gamma), and an
        # option of another coefficient type says why it is absent.
        if name.startswith("__") or name == "options":
            raise AttributeError(name)
        options = object.__getattribute__(self, "options")
        if name in _field_names(type(options)):
            return getattr(options, name)
        owner = _GROUP_OF.get(name)
        if owner is not None:
            raise AttributeError(_ignored_message(name, owner, self.coefficients))
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")


def _field_names(cls: type) -> tuple[str, ...]:
    return tuple(f.name for f in fields(cls))


# option name -> the coefficient type whose group holds it
_GROUP_OF: dict[str, str] = {n: c for c, g in _GROUPS.items() for n in _field_names(g)}
OPTION_NAMES: tuple[str, ...] = (
    *(n for n in _field_names(Objective) if n != "options"),
    *_GROUP_OF,
)
"""Every option :func:`resolve` accepts as a keyword."""


def _ignored_message(name: str, owner: str, coefficients: str) -> str:
    return (
        f"{name!r} is an option of coefficients={owner!r}; this objective uses "
        f"coefficients={coefficients!r}, which ignores it. Set coefficients={owner!r} to use "
        f"it, or leave {name!r} out."
    )


def _literal_choices(cls: type) -> dict[str, tuple]:
    hints = get_type_hints(cls)
    return {
        f.name: get_args(hints[f.name]) for f in fields(cls) if get_origin(hints[f.name]) is Literal
    }


def _check(obj: Objective) -> None:
    """Every check of an objective's options, with a ValueError that names the option."""
    for name, choices in _literal_choices(Objective).items():
        value = getattr(obj, name)
        if value not in choices:
            raise ValueError(f"{name} must be one of {choices}, got {value!r}.")
    group = _GROUPS[obj.coefficients]
    if not isinstance(obj.options, group):
        other = next(c for c, g in _GROUPS.items() if isinstance(obj.options, g))
        raise ValueError(
            f"options: {type(obj.options).__name__} holds the options of coefficients="
            f"{other!r}; this objective uses coefficients={obj.coefficients!r}, which ignores "
            f"them. Pass {group.__name__}(...) or leave options out."
        )
    if obj.agreement in ("directed", "kl") and obj.coefficients != "softmax":
        raise ValueError(
            f"agreement={obj.agreement!r} compares distributions: use coefficients='softmax'."
        )
    for name in ("lambda_se", "lambda_contrast", "lambda_cross"):
        value = getattr(obj, name)
        if value is not None and not value >= 0:
            raise ValueError(f"{name} must be a number >= 0, got {value!r}.")
    if obj.epoch_budget < 1:
        raise ValueError(f"epoch_budget must be a positive integer, got {obj.epoch_budget!r}.")
    if isinstance(obj.options, ReluOptions):
        for name in ("gamma", "lam"):
            value = getattr(obj.options, name)
            if not value >= 0:
                raise ValueError(f"{name} must be a number >= 0, got {value!r}.")
        if obj.options.n_embed < 1:
            raise ValueError(f"n_embed must be a positive integer, got {obj.options.n_embed!r}.")
    elif not obj.options.perplexity > 0:
        raise ValueError(f"perplexity must be a number > 0, got {obj.options.perplexity!r}.")


# Zhang et al. 2023 as published: ReLU-threshold self-expressive network, plain elastic net
# and error, squared-difference contrast at 0.1, mean fusion, PCA embedding.
_PAPER = Objective(
    coefficients="relu",
    options=ReluOptions(),
    agreement="squared",
    lambda_contrast=0.1,
    scale_free=False,
    fusion="mean",
    embedding="pca",
    epoch_budget=400,
)
PRESETS: dict[str, Objective] = {
    # Softmax (kernel) coefficients, symmetric-KL agreement, product-of-experts fusion,
    # joint-latent embedding, a 200-epoch budget (docs/model.md says where and why it departs
    # from the paper).
    "default": Objective(),
    "paper": _PAPER,
    # The paper plus a threshold that keeps each cell's best anchor, locality-weighted L1
    # and a scale-free error.
    "paper_local": replace(
        _PAPER, options=ReluOptions(locality=True, ceiling=True), scale_free=True
    ),
}
# Former preset names, accepted with a FutureWarning for one release.
PRESET_ALIASES: dict[str, str] = {"v0.1": "paper_local"}
PRESET_NAMES: tuple[str, ...] = (*PRESETS, *PRESET_ALIASES)
"""Every name :func:`resolve` accepts (the CLI's ``--preset`` choices)."""


def preset(name: str) -> Objective:
    """The preset named ``name``; a former name warns and gives its new one."""
    if name in PRESET_ALIASES:
        new = PRESET_ALIASES[name]
        warnings.warn(
            f"The preset {name!r} is now called {new!r}; the old name will be removed in the "
            "next release.",
            FutureWarning,
            stacklevel=3,
        )
        name = new
    if name not in PRESETS:
        raise ValueError(f"objective (preset) must be one of {list(PRESETS)}, got {name!r}.")
    return PRESETS[name]


def resolve(objective: str | Objective | dict = "default", **overrides) -> Objective:
    """One checked :class:`Objective` from a preset name (or an objective) and overrides.

    Parameters
    ----------
    objective
        A name of :data:`PRESETS`, an :class:`Objective`, or a dict as
        :meth:`Objective.to_dict` writes it, optionally with the ``"preset"`` it starts from
        (a saved model's).
    **overrides
        Options of :data:`OPTION_NAMES`; a value of None keeps the preset's. Changing
        ``coefficients`` starts the coefficient options from that type's defaults. An option
        of a coefficient type the objective does not use raises a ValueError naming it.
    """
    if isinstance(objective, dict):
        flat = {**objective, **overrides}
        return resolve(flat.pop("preset", None) or "default", **flat)
    base = preset(objective) if isinstance(objective, str) else objective
    if not isinstance(base, Objective):
        raise TypeError(f"objective must be a preset name or an Objective, got {base!r}.")
    given = {k: v for k, v in overrides.items() if v is not None}
    unknown = [k for k in given if k not in (*OPTION_NAMES, "options")]
    if unknown:
        raise TypeError(
            f"Unknown objective option(s) {unknown}; the options are {list(OPTION_NAMES)}."
        )
    top = {k: v for k, v in given.items() if k not in _GROUP_OF}
    coefficients = top.get("coefficients", base.coefficients)
    if coefficients not in _GROUPS:
        raise ValueError(f"coefficients must be one of {COEFFICIENTS}, got {coefficients!r}.")
    options = base.options if coefficients == base.coefficients else _GROUPS[coefficients]()
    if "options" in top:
        options = top.pop("options")
    grouped = {k: v for k, v in given.items() if k in _GROUP_OF}
    for name in grouped:
        if _GROUP_OF[name] != coefficients:
            raise ValueError(_ignored_message(name, _GROUP_OF[name], coefficients))
    if grouped and isinstance(options, _GROUPS[coefficients]):
        options = replace(options, **grouped)
    return replace(base, **top, options=options)


__all__ = [
    "AGREEMENTS",
    "COEFFICIENTS",
    "EMBEDDINGS",
    "FUSIONS",
    "OPTION_NAMES",
    "PRESETS",
    "PRESET_ALIASES",
    "PRESET_NAMES",
    "Agreement",
    "Coefficients",
    "Embedding",
    "Fusion",
    "Objective",
    "ReluOptions",
    "SPATIAL_EMBEDDINGS",
    "SoftmaxOptions",
    "SpatialEmbedding",
    "preset",
    "resolve",
]
