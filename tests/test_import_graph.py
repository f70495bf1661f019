"""The modules of pm_ws import one another without a cycle.

The graph is read from the source, not from a running interpreter: every import statement counts,
also those inside functions (the CLI imports its commands lazily) and under ``TYPE_CHECKING``.
The compiled core's Python-level imports are read from its ``.pyx`` and the files it includes.
"""

from __future__ import annotations

import ast
import re
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

import pm_ws

PACKAGE_DIR = Path(pm_ws.__file__).parent
ROOT = PACKAGE_DIR.parent
CYTHON_IMPORT = re.compile(
    r"^[ \t]*(?:from[ \t]+(\.*[\w.]*)[ \t]+import[ \t]+\(?([\w, \t]*)|import[ \t]+([\w., \t]+))", re.M
)
CYTHON_INCLUDE = re.compile(r"^[ \t]*include[ \t]+[\"']([^\"']+)[\"']", re.M)


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_of(path: Path) -> str:
    return module_name(path) if path.stem == "__init__" else module_name(path).rpartition(".")[0]


def resolve(path: Path, level: int, module: str, names: list[str], modules: set[str]) -> set[str]:
    """The pm_ws modules ``from <level dots><module> import <names>`` in ``path`` loads."""
    if level:
        base = package_of(path).split(".")
        base = base[: len(base) - level + 1]
        module = ".".join(base + ([module] if module else []))
    submodules = {f"{module}.{name}" for name in names} & modules  # `from . import recording`
    return (submodules or {module}) & modules


def python_imports(path: Path, modules: set[str]) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            found |= resolve(path, node.level, node.module or "", [alias.name for alias in node.names], modules)
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names} & modules
    return found


def cython_imports(path: Path, modules: set[str]) -> set[str]:
    # Cython is not Python: a line scan for (relative or absolute) imports, following `include` files
    text = path.read_text(encoding="utf-8")
    found: set[str] = set()
    for match in CYTHON_IMPORT.finditer(text):
        source, names, plain = match.groups()
        if plain is not None:
            found |= {name.strip() for name in plain.split(",")} & modules
        else:
            level = len(source) - len(source.lstrip("."))
            found |= resolve(path, level, source.lstrip("."), [n.strip() for n in names.split(",")], modules)
    for included in CYTHON_INCLUDE.findall(text):
        found |= cython_imports(path.parent / included, modules)
    return found


def import_graph() -> dict[str, set[str]]:
    """Each pm_ws module (``pm_ws`` for the package itself) with the pm_ws modules it imports."""
    sources = [*PACKAGE_DIR.rglob("*.py"), *PACKAGE_DIR.rglob("*.pyx")]
    modules = {module_name(path) for path in sources}
    graph: dict[str, set[str]] = {}
    for path in sources:
        read = python_imports if path.suffix == ".py" else cython_imports
        graph.setdefault(module_name(path), set()).update(read(path, modules) - {module_name(path)})
    return graph


def test_import_graph_of_the_package_has_no_cycle() -> None:
    graph = import_graph()

    try:
        TopologicalSorter(graph).prepare()
    except CycleError as exc:
        raise AssertionError(f"import cycle: {' -> '.join(exc.args[1])}") from None


def test_import_graph_commands_sit_above_their_helpers() -> None:
    graph = import_graph()

    def importers(module: str) -> set[str]:
        return {name for name, imported in graph.items() if module in imported}

    assert importers("pm_ws.cli") == {"pm_ws.__main__"}
    assert importers("pm_ws.testing") == {"pm_ws._demo"}  # watch and record do not load the fake server
    assert "pm_ws._core_c" in importers("pm_ws.row")  # the .pyx is read too
