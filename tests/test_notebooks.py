"""The chapters: committed clean, Colab-ready, listed in the table of contents, and
each one executes top to bottom in a fresh kernel.

References: the notebook files themselves, ``_config.yml`` (the one place the
repository URL lives) and ``_toc.yml``.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
import yaml

from companion.book import read_repository, setup_cell_source

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "book").glob("*.ipynb"))


def _toc_files() -> set[str]:
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = {toc["root"]}
    for part in toc.get("parts", []):
        files |= {c["file"] for c in part.get("chapters", [])}
    return files


def test_there_are_chapters():
    assert len(NOTEBOOKS) >= 2


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_without_outputs(path):
    notebook = json.loads(path.read_text())
    dirty = [i for i, c in enumerate(notebook["cells"])
             if c["cell_type"] == "code" and (c.get("outputs") or c.get("execution_count"))]
    assert dirty == [], f"{path.name}: cells {dirty} have outputs; strip them (the build executes the notebook)"
    assert "widgets" not in notebook.get("metadata", {}), f"{path.name}: saved widget state"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_first_code_cell_is_the_colab_setup_with_the_configured_url(path):
    notebook = json.loads(path.read_text())
    first = next(c for c in notebook["cells"] if c["cell_type"] == "code")
    expected = setup_cell_source(*read_repository(ROOT / "_config.yml"))
    assert "".join(first["source"]) == expected, (
        f"{path.name}: run `python -m companion.book sync` to write the setup cell from _config.yml")
    # never pin or replace Colab's own scientific stack
    install = [line for line in expected.splitlines() if "pip install" in line]
    assert len(install) == 1 and "--no-deps" in install[0]
    for package in ("numpy", "torch", "matplotlib", "ipywidgets"):
        assert package not in install[0]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_listed_in_the_table_of_contents(path):
    assert f"book/{path.stem}" in _toc_files()


# Appended to each chapter by the test below: every live experiment drew its default
# setting without an error, and moving one control of each cheap one redraws it.
_LIVE_CHECK = """
import asyncio, time
from companion import explore as _explore
_live = [e for e in _explore._CREATED if hasattr(e, "_status")]
_deadline = time.time() + 240
while any(e.expensive and e._lock.locked() for e in _live) and time.time() < _deadline:
    await asyncio.sleep(0.1)   # yields to the kernel's loop, which finishes background runs
_failed = {e.name: e._status.value for e in _live if "#b00" in e._status.value or not e._image.value}
assert _live and not _failed, _failed
_unchanged = []
for e in _live:
    if e.expensive:
        continue
    before, w = e._image.value, e._inputs[0]
    w.value = (w.value + 1) % len(e.options[0])      # the next option of the first control
    if e._image.value == before or "#b00" in e._status.value:
        _unchanged.append((e.name, e._status.value))
assert not _unchanged, _unchanged
print(len(_live), "live experiments checked")
"""


@pytest.mark.notebook
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_executes_in_a_fresh_kernel_with_live_experiments(path, monkeypatch):
    """Top to bottom in a fresh kernel, experiments in their live (ipywidgets) form.

    The book's build executes the same notebooks with static experiments (every frame of
    every grid) and fails on any error, so the two modes are both covered.
    """
    import nbclient
    import nbformat

    monkeypatch.setenv("COMPANION_EXPLORE_MODE", "live")
    notebook = nbformat.read(path, as_version=4)
    notebook.cells.append(nbformat.v4.new_code_cell(_LIVE_CHECK))
    started = time.perf_counter()
    nbclient.NotebookClient(notebook, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}}).execute()
    elapsed = time.perf_counter() - started
    errors = [o for c in notebook.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if o.get("output_type") == "error"]
    assert errors == []
    printed = "".join(o.get("text", "") for o in notebook.cells[-1].outputs)
    assert "live experiments checked" in printed
    # the budget itself (about a minute on 2 cores) is measured by tests/benchmarks/bench_book.py
    assert elapsed < 300
