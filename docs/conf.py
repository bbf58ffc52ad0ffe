"""Sphinx configuration for the scmsi documentation.

Build: ``sphinx-build -W --keep-going -b html docs docs/_build/html`` (CI does this, warnings as
errors). The tutorials are executed at build time, so their figures are the ones they make.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import sys
import warnings
from datetime import datetime
from importlib.metadata import version as _version
from pathlib import Path

# sphinx-autodoc-typehints calls an API that Sphinx 10 removes; not ours to fix.
warnings.filterwarnings("ignore", message=".*set_application.*")

HERE = Path(__file__).resolve().parent
# A source checkout documents itself, also when the installed package points elsewhere.
sys.path.insert(0, str(HERE.parent / "src"))
# Tutorials train small models on 2 shared CPU cores: keep every library to one thread.
for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(var, "1")
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ["COLUMNS"] = "100"  # argparse wraps the CLI help to this width

project = "scmsi"
author = "scmsi developers"
copyright = f"{datetime.now():%Y}, {author}"
try:
    release = _version("scmsi")
except Exception:  # docs of an uninstalled checkout still build
    release = "0.0.0"
version = release

extensions = [
    "myst_nb",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "sphinx_autodoc_typehints",
    "sphinx_copybutton",
]

source_suffix = {".rst": "restructuredtext", ".md": "myst-nb", ".ipynb": "myst-nb"}
master_doc = "index"
templates_path = ["_templates"]
exclude_patterns = ["_build", "notes", "Thumbs.db", ".DS_Store", "**.ipynb_checkpoints"]

# -- API reference --------------------------------------------------------------------------
autosummary_generate = True
autodoc_member_order = "bysource"
autodoc_default_options = {"members": False}
napoleon_google_docstring = False
napoleon_numpy_docstring = True
napoleon_use_rtype = True
napoleon_use_param = True
typehints_defaults = "braces"
always_document_param_types = False
# Annotations name classes of other packages that are not all in the intersphinx inventories;
# an unresolved type is not an error in our docstrings.
nitpicky = False
suppress_warnings = ["config.cache"]

# -- MyST / notebooks -----------------------------------------------------------------------
myst_enable_extensions = ["dollarmath", "colon_fence", "deflist"]
myst_heading_anchors = 3
# "cache": a notebook runs again when its code changes (a fresh clone, e.g. CI, runs them all).
nb_execution_mode = os.environ.get("SCMSI_DOCS_EXECUTE", "cache")
nb_execution_cache_path = str(HERE / "_build" / ".jupyter_cache")
nb_execution_raise_on_error = True
nb_execution_timeout = 900
nb_execution_show_tb = True
# Library chatter (Lightning's tips, deprecation notices) goes to stderr; the pages show what
# the code prints and draws. Run a tutorial yourself to see every warning.
nb_merge_streams = False
nb_output_stderr = "remove"

# -- HTML -----------------------------------------------------------------------------------
html_theme = "furo"
html_title = f"scmsi {release}"
html_static_path: list[str] = []


# -- Links from a page to files of the repository outside docs/ --------------------------------
# The pages are also read on the code host, where `[text](../benchmarks/results/x.md)` works;
# Sphinx cannot resolve a page outside its source folder, so such links become downloads.
_REPO_LINK = re.compile(r"(?<!!)\[([^\]]+)\]\((\.\./(?:benchmarks|src|tests)/[^)#\s]+)\)")


def _repo_links(app, docname, source) -> None:
    source[0] = _REPO_LINK.sub(r"{download}`\1 <\2>`", source[0])


def setup(app) -> None:
    app.connect("source-read", _repo_links)


# -- CLI reference: generated from the argparse parser at build time ------------------------
def _cli_help() -> None:
    from scmsi.cli import main

    out = HERE / "generated"
    out.mkdir(exist_ok=True)
    for name, argv in {"scmsi": [], "fit": ["fit"], "domains": ["domains"], "demo": ["demo"]}.items():
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf), contextlib.suppress(SystemExit):
            main([*argv, "--help"])
        text = buf.getvalue()
        target = out / f"cli_{name}.txt"
        if not target.exists() or target.read_text() != text:
            target.write_text(text)


_cli_help()
