"""The import structure of src/scmsi: no circle, few floors, no oversized file.

Every import counts, also those inside functions (a function-level import is still a
dependency; it only defers it). Imports under ``if TYPE_CHECKING:`` never run and are left
out. The package's ``__init__`` (the facade that imports the public modules) is not a floor.
"""

import ast
from functools import cache
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "scmsi"
MAX_FLOORS = 5
MAX_LINES = 900
# The model class is kept whole (see the comment at the top of _model.py).
LONG_FILES = {"_model.py"}


def _module_name(path: Path) -> str:
    rel = path.relative_to(SRC.parent).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


MODULES = {_module_name(p): p for p in SRC.rglob("*.py")}


def _is_type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (
        isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING"
    )


def _resolve(name: str) -> str | None:
    """The scmsi module ``name`` is, or is inside of (``scmsi.spatial.io.x`` -> a module)."""
    while name:
        if name in MODULES:
            return name
        name = name.rpartition(".")[0]
    return None


def _imports(module: str) -> set[str]:
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                root = ".".join(base + ([node.module] if node.module else []))
            else:
                root = node.module or ""
            # `from . import x` names modules x, not the package itself
            names = [root] if node.module else []
            names += [f"{root}.{a.name}" for a in node.names]
        else:
            names = []
        for n in names:
            target = _resolve(n)
            if target is not None and target != module:
                found.add(target)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text()))
    return found


GRAPH = {m: _imports(m) for m in MODULES}
FACADE = "scmsi"


def _without_facade() -> dict[str, set[str]]:
    return {m: deps - {FACADE} for m, deps in GRAPH.items() if m != FACADE}


def test_no_import_circle():
    graph = _without_facade()
    state: dict[str, int] = {}

    def walk(m: str, path: list[str]) -> None:
        state[m] = 1
        for d in sorted(graph[m]):
            if state.get(d) == 1:
                cycle = path[path.index(d) :] + [d] if d in path else [m, d]
                raise AssertionError("import circle: " + " -> ".join(cycle))
            if d not in state:
                walk(d, path + [d])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            walk(m, [m])


def test_at_most_five_floors():
    graph = _without_facade()

    @cache
    def floor(m: str) -> int:
        return 1 + max((floor(d) for d in graph[m]), default=0)

    floors = {m: floor(m) for m in graph}
    top = max(floors.values())
    assert top <= MAX_FLOORS, sorted(floors.items(), key=lambda kv: kv[1])


def test_the_facade_is_imported_only_by_the_cli():
    """Modules import each other, not the package: ``import scmsi`` inside the package
    would run every public module (the CLI's entry point may)."""
    users = sorted(m for m, deps in GRAPH.items() if FACADE in deps)
    assert set(users) <= {"scmsi.cli"}, users


def test_no_file_over_900_lines():
    long = {
        p.name: n
        for p in SRC.rglob("*.py")
        if (n := len(p.read_text().splitlines())) > MAX_LINES and p.name not in LONG_FILES
    }
    assert long == {}


def test_no_private_imports_from_other_packages():
    """``from scanpy._utils import ...``: private API changes without notice (src and
    benchmarks)."""
    ours = ("scmsi", "benchmarks", "tests")
    bad = []
    for path in [*SRC.rglob("*.py"), *(SRC.parents[1] / "benchmarks").glob("*.py")]:
        m = path.name
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and not node.level and node.module:
                parts = node.module.split(".")
                if parts[0] not in ours and any(p.startswith("_") for p in parts[1:]):
                    bad.append(f"{m}: from {node.module} import ...")
                if parts[0] not in ours:
                    bad += [
                        f"{m}: from {node.module} import {a.name}"
                        for a in node.names
                        if a.name.startswith("_") and not a.name.startswith("__")
                    ]
    assert bad == []


# ------------------------------------------------------------------ size of functions
ROOT = SRC.parents[1]
MAX_FUNCTION_LINES = {"src": 80, "benchmarks": 100}


def _function_lengths(path: Path) -> list[tuple[str, int]]:
    """``(name, lines)`` of every function and method, its docstring not counted."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            n = node.end_lineno - node.lineno + 1
            first = node.body[0]
            if (
                isinstance(first, ast.Expr)
                and isinstance(first.value, ast.Constant)
                and isinstance(first.value.value, str)
            ):
                n -= first.end_lineno - first.lineno + 1
            out.append((node.name, n))
    return out


def test_no_long_function():
    """A long function is a sequence of steps: each step gets a name."""
    long = [
        f"{path.relative_to(ROOT)}::{name} ({n} lines)"
        for folder, cap in MAX_FUNCTION_LINES.items()
        for path in sorted((ROOT / folder).rglob("*.py"))
        for name, n in _function_lengths(path)
        if n > cap
    ]
    assert long == []


# ------------------------------------------------------------------ public surface
def test_tl_exports_what_users_call():
    """scanpy's size (``scanpy.tl``: 17 names), each documented: the building blocks stay in
    ``_cluster``; the spatial tools have one public path, ``scmsi.spatial``."""
    import re

    import scmsi.tl

    documented = set(re.findall(r"^   tl\.(\w+)$", (ROOT / "docs/api/tl.rst").read_text(), re.M))
    assert set(scmsi.tl.__all__) == documented
    assert len(documented) <= 17


def test_no_option_the_objective_ignores_can_be_set():
    """Through the public entry (:func:`resolve`, which ``SCMSI`` calls): every option of a
    coefficient type is refused under the other, naming the option."""
    import dataclasses

    import pytest

    from scmsi._objective import _GROUPS, PRESETS, resolve

    for name, preset in PRESETS.items():
        for coefficients, group in _GROUPS.items():
            if coefficients == preset.coefficients:
                continue
            for option in dataclasses.fields(group):
                with pytest.raises(ValueError, match=f"'{option.name}' is an option"):
                    resolve(name, **{option.name: option.default})


def test_the_model_takes_the_objective_not_its_options():
    """``SCMSI`` has at most 12 named parameters besides ``**overrides``; the module has no
    loss option of its own."""
    import inspect

    from scmsi._model import SCMSI
    from scmsi._module import SCMSIModule
    from scmsi._objective import OPTION_NAMES

    params = inspect.signature(SCMSI.__init__).parameters
    named = [p for p in params.values() if p.kind != p.VAR_KEYWORD and p.name != "self"]
    assert len(named) <= 12 and "overrides" in params
    module_params = set(inspect.signature(SCMSIModule.__init__).parameters)
    assert module_params & set(OPTION_NAMES) == set()
    assert not set(p.name for p in named) & set(OPTION_NAMES)


# ------------------------------------------------------------------ machine paths
def test_no_machine_path_in_docs_or_results():
    """Reports and docs say ``<dir>``, not the folders of the machine that made them."""
    import re

    pattern = re.compile(r"/(root|work|tmp|home)/")  # as `git grep -E` finds them
    found = [
        f"{path.relative_to(ROOT)}:{i}"
        for folder in ("docs", "benchmarks/results")
        for path in sorted((ROOT / folder).rglob("*"))
        if path.is_file()
        and path.suffix in {".md", ".csv", ".rst", ".txt", ".py", ".json"}
        and "_build" not in path.parts
        for i, line in enumerate(path.read_text(errors="ignore").splitlines(), 1)
        if pattern.search(line)
    ]
    assert found == []
