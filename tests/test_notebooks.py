"""The chapters: committed clean, Colab-ready, listed in the table of contents, and
each one executes top to bottom in a fresh kernel.

References: the notebook files themselves, ``_config.yml`` (the one place the
repository URL lives) and ``_toc.yml``.
"""
from __future__ import annotations

import json
import os
import re
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
from companion import _live as _lv
_live = list(_lv._VIEWS)          # every display of an experiment in this kernel
_deadline = time.time() + 240
while any(v.running for v in _live) and time.time() < _deadline:
    await asyncio.sleep(0.1)   # yields to the kernel's loop, which finishes background runs
_failed = {v.experiment.name: v.status.value for v in _live if "#b00" in v.status.value or not v.image.value}
assert _live and not _failed, _failed
_unchanged = []
for v in _live:
    if v.experiment.expensive:
        continue
    before, w = v.image.value, v.inputs[0]
    w.value = (w.value + 1) % len(v.experiment.options[0])      # the next option of the first control
    if v.image.value == before or "#b00" in v.status.value:
        _unchanged.append((v.experiment.name, v.status.value))
assert not _unchanged, _unchanged
print(len(_live), "live experiments checked")
"""


GLUE_PREFIX = "application/papermill.record/"
# a float printed by repr: 9 or more digits after the point (numpy prints 8 at most)
_LONG_NUMBER = re.compile(r"(?<![\w.])-?\d+\.\d{9,}")


def glue_values(notebook) -> dict[str, str]:
    """The text/plain form of every value a notebook glued, by name."""
    values = {}
    for cell in notebook["cells"]:
        for output in cell.get("outputs", []):
            meta = output.get("metadata", {}).get("scrapbook")
            if meta:
                data = output.get("data", {})
                values[meta["name"]] = data.get(meta.get("mime_prefix", "") + "text/plain",
                                                data.get("text/plain"))
    return values


def _assert_no_long_numbers(name: str, notebook) -> None:
    """What a reader sees printed: no float with 16 digits (format it for a reader)."""
    long = []
    for i, cell in enumerate(notebook.cells):
        for output in cell.get("outputs", []) if cell.cell_type == "code" else []:
            shown = output.get("text", "") + output.get("data", {}).get("text/plain", "")
            long += [(i, m.group(0)) for m in _LONG_NUMBER.finditer(shown)]
    assert long == [], f"{name}: cells print unformatted numbers (cell, number): {long[:10]}"


def _shown(value: str) -> str:
    """A glued value as far as a reader can see it: floats to 6 significant digits
    (the prose prints at most 4; float sums may differ in the last bits between two
    processes), everything else exactly."""
    try:
        return f"{float(value):.6g}"
    except (TypeError, ValueError):
        return value


def _assert_same_glue_as_the_build(path: Path, notebook, n_code: int) -> None:
    """Every glued number is the same in this execution and in the book's build.

    Two executions of one chapter: the build's (static experiments, in
    ``_build/jupyter_execute``; CI builds before it tests) and this test's (live
    experiments, a fresh kernel). Seeded code gives identical values; the only
    exceptions are the names the notebook lists in its metadata
    ``machine_dependent_glue`` (timings, which the prose marks as measured on the
    machine that built the page). Floats are compared to 6 significant digits.
    """
    built = ROOT / "_build" / "jupyter_execute" / "book" / path.name
    glued = built.with_suffix(".glue.json")     # myst-nb keeps the build's glue here
    if not (built.exists() and glued.exists()):
        return   # no build to compare with (a test run before `bash .ci/book`)
    import nbformat

    build = nbformat.read(built, as_version=4)
    code = [c.source for c in notebook.cells if c.cell_type == "code"][:n_code]
    if [c.source for c in build.cells if c.cell_type == "code"] != code:
        return   # the build is older than the notebook: nothing to compare
    exempt = set(notebook.metadata.get("machine_dependent_glue", []))
    ours = glue_values(notebook)
    theirs = {name: out["data"].get("text/plain")
              for name, out in json.loads(glued.read_text()).items()}
    assert set(ours) == set(theirs), f"{path.name}: glued names differ: {set(ours) ^ set(theirs)}"
    differ = {k: (theirs[k], ours[k]) for k in ours
              if k not in exempt and _shown(ours[k]) != _shown(theirs[k])}
    assert differ == {}, f"{path.name}: glued values differ between the build and this run: {differ}"


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
    n_code = sum(c.cell_type == "code" for c in notebook.cells)
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
    _assert_no_long_numbers(path.name, notebook)
    _assert_same_glue_as_the_build(path, notebook, n_code)
    # the budget itself (about a minute on 2 cores) is measured by tests/benchmarks/bench_book.py
    assert elapsed < 300


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_every_cell_has_its_own_id(path):
    """nbformat 4.5 requires a unique id per cell (and will refuse a notebook without)."""
    ids = [c.get("id") for c in json.loads(path.read_text())["cells"]]
    assert None not in ids, f"{path.name}: cells {[i for i, x in enumerate(ids) if x is None]} have no id"
    assert len(set(ids)) == len(ids), f"{path.name}: repeated cell ids"
