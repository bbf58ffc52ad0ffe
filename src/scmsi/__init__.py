"""scMSI: contrastive, generative, self-expressive integration of single-cell multimodal data."""

import os
import sys

# OpenMP threads that spin at barriers turn a busy machine into a 7-30x slowdown (torch and
# another process fight for the cores). The wait policy is read once, when the OpenMP runtime
# loads with torch, so it can only be set here, before torch is imported; a user's own
# setting wins.
if "torch" not in sys.modules:
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    os.environ.setdefault("KMP_BLOCKTIME", "0")  # the same for Intel's OpenMP runtime

from importlib.metadata import PackageNotFoundError, version  # noqa: E402

from . import datasets, pl, pp, spatial, tl  # noqa: E402
from ._model import FUSIONS, SCMSI  # noqa: E402
from ._settings import settings  # noqa: E402

try:
    __version__ = version("scmsi")
except PackageNotFoundError:  # running from a source tree
    __version__ = "0.0.0"

__all__ = ["FUSIONS", "SCMSI", "datasets", "pl", "pp", "settings", "spatial", "tl", "__version__"]
