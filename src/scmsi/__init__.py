"""scMSI: contrastive, generative, self-expressive integration of single-cell multimodal data.

Submodules and the model are imported on first access (module ``__getattr__``), so that
``import scmsi`` and ``scmsi --help`` do not pay for torch, scvi-tools and scanpy.
"""

import os
import sys
from importlib import import_module
from importlib.metadata import PackageNotFoundError, version

from ._settings import settings

# OpenMP threads that spin at barriers turn a busy machine into a 7-30x slowdown (torch and
# another process fight for the cores). The wait policy is read once, when the OpenMP runtime
# loads with torch, so it can only be set before torch is imported; a user's own setting wins.
if "torch" not in sys.modules:
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    os.environ.setdefault("KMP_BLOCKTIME", "0")  # the same for Intel's OpenMP runtime

try:
    __version__ = version("scmsi")
except PackageNotFoundError:  # running from a source tree
    __version__ = "0.0.0"

_SUBMODULES = ("datasets", "io", "pl", "pp", "spatial", "tl")
_HOMES = {
    "FUSIONS": "._objective",
    "Objective": "._objective",
    "PRESETS": "._objective",
    "ReluOptions": "._objective",
    "SoftmaxOptions": "._objective",
    "SCMSI": "._model",
}

__all__ = [*_HOMES, *_SUBMODULES, "settings", "__version__"]


def __getattr__(name: str):
    if name in _SUBMODULES:
        value = import_module(f".{name}", __name__)
    elif name in _HOMES:
        value = getattr(import_module(_HOMES[name], __name__), name)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value  # later accesses skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
