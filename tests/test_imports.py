"""The companion's modules import each other without a cycle, and never lazily.

The walker reads every ``.py`` file under ``companion/`` with :mod:`ast` (it imports
nothing), resolves each ``import companion.x``, ``from companion import x``,
``from . import x``, ``from .x import y`` and ``from .. import x`` to a module name, and
builds the graph of companion-internal imports. A ``from P import name`` is an edge to
the module ``P.name`` when there is such a file (a submodule), else to ``P`` itself; an
import of ``P.Q.R`` also runs the ``__init__`` of every package on the way (``P.Q``),
unless the importer lives inside it (a package's own modules are imported while its
``__init__`` runs, which is how packages work, not a cycle).

The tests that the walker can fail run it on small packages written to a temporary
directory, with a cycle and a lazy import planted in them.
"""
from __future__ import annotations

import ast
from pathlib import Path
from typing import NamedTuple, Optional

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "companion"

#: Companion-internal imports allowed inside a function, each with the reason it needs
#: to be lazy: (importing module, imported module) -> why. Optional third-party
#: dependencies (matplotlib, ipywidgets, IPython, PIL, scipy) are not companion modules
#: and are not listed. Every entry is checked to still exist, so the list cannot go stale.
LAZY_ALLOWED: dict[tuple[str, str], str] = {}


class Edge(NamedTuple):
    source: str          # the importing module
    target: str          # the imported module
    line: int
    lazy: bool           # inside a function body


def module_names(root: Path, package: str) -> dict[str, Path]:
    """module name -> file, for every ``.py`` file of the package (``__init__.py`` is
    the package itself)."""
    names = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        names[".".join(parts)] = path
    return names


def _resolve(module: str, is_package: bool, level: int, name: Optional[str]) -> str:
    """The absolute module of ``from <level dots><name> import ...`` inside ``module``."""
    if level == 0:
        return name or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[:len(base) - (level - 1)]
    return ".".join(base + ([name] if name else []))


class _Collector(ast.NodeVisitor):
    """The imports of one file, each with whether it sits inside a function."""

    def __init__(self) -> None:
        self.found: list[tuple[int, int, Optional[str], list[str], bool]] = []
        self.depth = 0                               # functions entered

    def _function(self, node: ast.AST) -> None:
        self.depth += 1
        self.generic_visit(node)
        self.depth -= 1

    visit_FunctionDef = visit_AsyncFunctionDef = visit_Lambda = _function

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self.found.append((node.lineno, 0, alias.name, [], self.depth > 0))

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        self.found.append((node.lineno, node.level, node.module,
                           [a.name for a in node.names], self.depth > 0))


def import_edges(root: Path, package: str) -> list[Edge]:
    """Every companion-internal import of every module of ``package`` under ``root``."""
    modules = module_names(root, package)
    edges = []
    for source, path in modules.items():
        collector = _Collector()
        collector.visit(ast.parse(path.read_text(), filename=str(path)))
        is_package = path.name == "__init__.py"
        for line, level, name, imported, lazy in collector.found:
            base = _resolve(source, is_package, level, name)
            if base != package and not base.startswith(package + "."):
                continue                             # numpy, torch, matplotlib, ...
            # from P import x: the submodule P.x if there is one, else P (x is a name in it)
            targets = [f"{base}.{n}" if f"{base}.{n}" in modules else base
                       for n in imported] or [base]
            for target in dict.fromkeys(targets):
                for t in _with_parents(target, source, package):
                    if t != source and t in modules:
                        edges.append(Edge(source, t, line, lazy))
    return edges


def _with_parents(target: str, source: str, package: str) -> list[str]:
    """``target`` and the packages whose ``__init__`` importing it runs: its parents below
    the root package that do not contain ``source``."""
    parts = target.split(".")
    parents = [".".join(parts[:k]) for k in range(2, len(parts))]
    return [p for p in parents if not (source + ".").startswith(p + ".")] + [target]


def graph(edges: list[Edge]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for e in edges:
        out.setdefault(e.source, set()).add(e.target)
    return out


def find_cycle(adjacency: dict[str, set[str]]) -> Optional[list[str]]:
    """A cycle ``[a, b, ..., a]`` of the directed graph, or None (depth-first search)."""
    state: dict[str, int] = {}                       # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> Optional[list[str]]:
        state[node] = 1
        path.append(node)
        for nxt in sorted(adjacency.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(adjacency):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


# ---------------------------------------------------------------- the companion itself
EDGES = import_edges(ROOT, PACKAGE)


def test_no_import_cycle():
    cycle = find_cycle(graph(EDGES))
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_no_lazy_companion_import():
    lazy = {(e.source, e.target): e.line for e in EDGES if e.lazy}
    unexpected = [f"{s} imports {t} inside a function (line {line})"
                  for (s, t), line in sorted(lazy.items()) if (s, t) not in LAZY_ALLOWED]
    assert not unexpected, "\n".join(unexpected)
    stale = [pair for pair in LAZY_ALLOWED if pair not in lazy]
    assert not stale, f"LAZY_ALLOWED lists imports that are no longer lazy: {stale}"


def test_walker_sees_the_known_edges():
    """Edges read off the files by hand: module-level absolute-in-package imports, a
    package __init__ importing its submodules, and ``from .. import`` in a subpackage."""
    edges = {(e.source, e.target) for e in EDGES}
    for known in [("companion.diagnose", "companion.diagnostics"),
                  ("companion.diagnose", "companion.report"),
                  ("companion.report", "companion.symptoms"),
                  ("companion.gallery", "companion.diagnose"),
                  ("companion.optim", "companion.optim._classes"),
                  ("companion.optim._classes", "companion._check")]:
        assert known in edges, known
    assert len(module_names(ROOT, PACKAGE)) >= 20      # it walked the whole package


def test_diagnose_reexports_are_the_same_objects():
    """``companion.diagnose`` re-exports what moved out of it (``except
    companion.diagnose.ForwardError`` keeps working): the same objects, not copies."""
    from companion import diagnose, diagnostics, report, symptoms

    assert diagnose.ForwardError is diagnostics.ForwardError
    assert diagnose._call is diagnostics._call
    for name in symptoms.__all__:
        assert getattr(diagnose, name) is getattr(symptoms, name), name
    for name in report.__all__:
        assert getattr(diagnose, name) is getattr(report, name), name
    assert diagnose._Measurement is report._Measurement is symptoms._Measurement


# ---------------------------------------------------------------- the walker can fail
def _write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_walker_finds_a_planted_cycle(tmp_path):
    """pkg.a -> pkg.b (relative), pkg.b -> pkg.sub.c (absolute), pkg.sub.c -> pkg.a
    (``from .. import a``): a three-module cycle through a subpackage."""
    _write(tmp_path, {"pkg/__init__.py": "", "pkg/a.py": "from . import b\n",
                      "pkg/b.py": "import pkg.sub.c\n", "pkg/sub/__init__.py": "",
                      "pkg/sub/c.py": "import math\nfrom .. import a\n"})
    edges = import_edges(tmp_path, "pkg")
    assert {(e.source, e.target) for e in edges} == {
        ("pkg.a", "pkg.b"), ("pkg.b", "pkg.sub"), ("pkg.b", "pkg.sub.c"), ("pkg.sub.c", "pkg.a")}
    cycle = find_cycle(graph(edges))
    assert cycle is not None and set(cycle) == {"pkg.a", "pkg.b", "pkg.sub.c"}
    assert cycle[0] == cycle[-1]


def test_walker_finds_a_planted_lazy_import(tmp_path):
    """A ``from .b import x`` inside a method is lazy; the same import at module level,
    in a class body, or of a third-party module is not reported as lazy-internal."""
    _write(tmp_path, {"pkg/__init__.py": "from . import a, b\n",
                      "pkg/a.py": ("import numpy\n\nclass K:\n    from . import b\n\n"
                                   "    def f(self):\n        import json\n"
                                   "        from .b import x\n        return x\n"),
                      "pkg/b.py": "x = 1\n"})
    edges = import_edges(tmp_path, "pkg")
    lazy = {(e.source, e.target, e.line) for e in edges if e.lazy}
    assert lazy == {("pkg.a", "pkg.b", 8)}
    assert ("pkg", "pkg.a") in {(e.source, e.target) for e in edges}   # __init__'s submodules
    assert find_cycle(graph(edges)) is None


@pytest.mark.parametrize("module, is_package, level, name, expected", [
    ("p.a", False, 1, None, "p"),
    ("p.a", False, 1, "b", "p.b"),
    ("p.q.a", False, 2, None, "p"),
    ("p.q", True, 1, "r", "p.q.r"),
    ("p.q", True, 2, None, "p"),
    ("p.a", False, 0, "p.b", "p.b"),
])
def test_relative_imports_resolve_like_python(module, is_package, level, name, expected):
    """Against the rule of ``importlib.util.resolve_name`` (the reference)."""
    import importlib.util

    anchor = module if is_package else module.rsplit(".", 1)[0]
    reference = importlib.util.resolve_name("." * level + (name or ""), anchor) if level \
        else name
    assert _resolve(module, is_package, level, name) == expected == reference
