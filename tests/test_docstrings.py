"""Docstring examples run: every ``>>>`` doctest and every ``Example::`` / ``Examples::``
literal block in every module of ``companion/`` is executed here, so an example cannot
rot unnoticed (STYLE.md, point 13).

* ``>>>`` examples run with :mod:`doctest` in the module's namespace, outputs compared
  (``ELLIPSIS | NORMALIZE_WHITESPACE``), one test per docstring (its examples share state).
* ``Example::`` blocks run as code in a fresh namespace (so they must import what they
  use, as a reader copying them would), with matplotlib's Agg backend, in a temporary
  directory, one test per block.

The modules are found by walking the package, so new modules are covered without edits
here. Ids read ``module:object#n``, ``n`` counting the runnable blocks of that docstring
(the doctest first). The reference is the examples' own claims: doctest compares each
printed value with the output written in the docstring, and an ``Example::`` block must
run to its end without an exception.
"""
from __future__ import annotations

import doctest
import importlib
import inspect
import pkgutil
import random
import re
import textwrap
from dataclasses import dataclass
from typing import Optional

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

import companion  # noqa: E402

#: a line that opens an example literal block: ``Example::``, ``Examples::``, also after
#: text on the same line and with a parenthesised remark (``Example (NFNets ...)::``)
EXAMPLE_MARKER = re.compile(r"(?:^|\s)Examples?(?:\s*\([^)]*\))?::\s*$")

OPTIONFLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE

#: blocks that fail in modules this test's author does not own, by id -> the owner; the
#: owner fixes the example and removes its entry (the mark is not strict, so a fixed
#: block passes meanwhile)
OWNED_ELSEWHERE: dict[str, str] = {}


@dataclass
class Block:
    id: str
    module: str
    kind: str                      # "doctest" or "example"
    doctest: Optional[doctest.DocTest] = None
    code: str = ""


def companion_modules() -> list[str]:
    """Every module of the package, private ones included, in a stable order."""
    names = [companion.__name__]
    names += [info.name for info in pkgutil.walk_packages(companion.__path__, "companion.")]
    return sorted(names)


def example_blocks(docstring: str) -> list[str]:
    """The code of each ``Example::`` literal block of ``docstring``: the lines after the
    marker that are indented deeper than the marker's line, dedented. A block written as
    a doctest (``>>>`` lines) is left to doctest, which runs it and checks its outputs."""
    lines = inspect.cleandoc(docstring).expandtabs().splitlines()
    blocks = []
    for i, line in enumerate(lines):
        if not EXAMPLE_MARKER.search(line):
            continue
        indent = len(line) - len(line.lstrip())
        body = []
        for following in lines[i + 1:]:
            if following.strip() and len(following) - len(following.lstrip()) <= indent:
                break
            body.append(following)
        code = textwrap.dedent("\n".join(body)).strip("\n")
        assert code, f"an empty Example:: block after line {i} of {docstring[:60]!r}"
        if not code.lstrip().startswith(">>>"):
            blocks.append(code + "\n")
    return blocks


def collect() -> list[Block]:
    """One :class:`Block` per doctest docstring and per Example:: block, all modules."""
    finder = doctest.DocTestFinder(exclude_empty=False)
    blocks: list[Block] = []
    for name in companion_modules():
        module = importlib.import_module(name)
        for test in sorted(finder.find(module), key=lambda t: t.name):
            where = test.name[len(name):].lstrip(".") or "<module>"
            n = 0
            if test.examples:
                blocks.append(Block(f"{name}:{where}#{n}", name, "doctest", doctest=test))
                n += 1
            for code in example_blocks(test.docstring or ""):
                blocks.append(Block(f"{name}:{where}#{n}", name, "example", code=code))
                n += 1
    return blocks


def _param(block: Block):
    marks = []
    if block.id in OWNED_ELSEWHERE:
        marks.append(pytest.mark.xfail(strict=False,
                                       reason=f"owned by {OWNED_ELSEWHERE[block.id]}"))
    return pytest.param(block, id=block.id, marks=marks)


BLOCKS = collect()


@pytest.fixture
def fresh_state(tmp_path, monkeypatch):
    """Seeded RNGs, a temporary working directory, one torch thread (the examples' models
    are small), torch's defaults and no open figures, before and after."""
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    np.random.seed(0)
    random.seed(0)
    threads, dtype = torch.get_num_threads(), torch.get_default_dtype()
    torch.set_num_threads(1)
    yield
    plt.close("all")
    torch.set_num_threads(threads)
    torch.set_default_dtype(dtype)


def run_doctest(test: doctest.DocTest) -> None:
    runner = doctest.DocTestRunner(optionflags=OPTIONFLAGS)
    report: list[str] = []
    test.globs = dict(test.globs)          # the module's globals, copied: runs stay apart
    runner.run(test, out=report.append, clear_globs=True)
    assert runner.failures == 0, "".join(report)


def run_example(code: str, name: str) -> None:
    namespace = {"__name__": "__example__"}
    exec(compile(code, f"<{name}>", "exec"), namespace)


@pytest.mark.parametrize("block", [_param(b) for b in BLOCKS])
def test_docstring_example_runs(block, fresh_state):
    if block.kind == "doctest":
        run_doctest(block.doctest)
    else:
        run_example(block.code, block.id)


def test_the_walk_finds_both_kinds():
    """The collection itself: both kinds of block are found, in more than one module, and
    the marker parser reads the forms the package uses."""
    kinds = {b.kind for b in BLOCKS}
    assert kinds == {"doctest", "example"}, kinds
    assert len({b.module for b in BLOCKS}) > 5
    doc = """Intro. Example::

        a = 1
        b = a + 1

    After.

    Example (two lines)::

        c = 3

    Example::

        >>> 1 + 1
        2
    """
    assert example_blocks(doc) == ["a = 1\nb = a + 1\n", "c = 3\n"]


def test_a_broken_example_fails():
    """The runners report failures: a wrong doctest output and a raising Example:: block."""
    parser = doctest.DocTestParser()
    wrong = parser.get_doctest(">>> 1 + 1\n3\n", {}, "wrong", None, 0)
    with pytest.raises(AssertionError, match="Expected:"):
        run_doctest(wrong)
    with pytest.raises(NameError):
        run_example("model(x)\n", "broken")
