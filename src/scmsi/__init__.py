"""scMSI: contrastive, generative, self-expressive integration of single-cell multimodal data."""

from importlib.metadata import PackageNotFoundError, version

from . import datasets, pl, pp, spatial, tl
from ._fusion import FUSIONS
from ._model import SCMSI

try:
    __version__ = version("scmsi")
except PackageNotFoundError:  # running from a source tree
    __version__ = "0.0.0"

__all__ = ["FUSIONS", "SCMSI", "datasets", "pl", "pp", "spatial", "tl", "__version__"]
