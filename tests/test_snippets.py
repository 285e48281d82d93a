"""Every Python snippet in the README and the book's introduction runs as shown.

A reader copies a code block from the README or the introduction into an empty
notebook and expects it to run. Reference: the text itself. Each ```python block is
executed on its own, in a fresh namespace and a temporary directory, with
matplotlib's non-interactive backend. README.md's diagnose example is also checked
for what its comments promise in tests/test_readme.py; the introduction's here.
The code inside the chapters' prose (exercise solutions) uses the chapter's names
and is often a fragment of a loop shown in the text; the chapters themselves execute
the code behind every number it quotes (tests/test_notebooks.py and the build).
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import matplotlib
import pytest

matplotlib.use("Agg")

ROOT = Path(__file__).resolve().parents[1]
_BLOCK = re.compile(r"^(`{3,})python[ \t]*\n(.*?)^\1[ \t]*$", re.S | re.M)


def python_blocks(text: str) -> list[str]:
    """The bodies of the ```python fenced blocks of a markdown text."""
    return [m.group(2) for m in _BLOCK.finditer(text)]


def _snippets() -> list[tuple[str, str]]:
    found = []
    for path in (ROOT / "README.md", ROOT / "book" / "intro.md"):
        for i, code in enumerate(python_blocks(path.read_text())):
            found.append((f"{path.relative_to(ROOT)}#{i + 1}", code))
    return found


SNIPPETS = _snippets()


def test_the_prose_has_snippets():
    """The collector finds the blocks it is meant to find (it cannot pass on nothing)."""
    names = [name for name, _ in SNIPPETS]
    assert any(n.startswith("README.md#") for n in names)
    assert any(n.startswith("book/intro.md#") for n in names)


@pytest.mark.parametrize("name,code", SNIPPETS, ids=[n for n, _ in SNIPPETS])
def test_snippet_runs_as_shown(name, code, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COMPANION_EXPLORE_MODE", "static")
    namespace: dict = {"__name__": "__snippet__"}
    try:
        exec(compile(code, name, "exec"), namespace)
    finally:
        import matplotlib.pyplot as plt
        plt.close("all")


def test_intro_snippet_shows_the_vanishing_signal():
    """The introduction's comment: output_grad_norms is the backward signal, input
    side first; in 30 sigmoid layers it is far smaller at the input side (the
    vanishing chapter's claim, in its own terms)."""
    code = next(c for n, c in SNIPPETS if n == "book/intro.md#1")
    namespace: dict = {}
    exec(compile(code, "intro", "exec"), namespace)
    norms = list(namespace["rec"].output_grad_norms.values()) \
        if hasattr(namespace["rec"].output_grad_norms, "values") else list(namespace["rec"].output_grad_norms)
    assert len(norms) >= 30
    assert norms[0] < 1e-3 * norms[-1]
