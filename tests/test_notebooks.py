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


@pytest.mark.notebook
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_executes_in_a_fresh_kernel(path, monkeypatch):
    import nbclient
    import nbformat

    monkeypatch.setenv("COMPANION_EXPLORE_MODE", "static")  # as in the book's build
    notebook = nbformat.read(path, as_version=4)
    started = time.perf_counter()
    nbclient.NotebookClient(notebook, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}}).execute()
    elapsed = time.perf_counter() - started
    errors = [o for c in notebook.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if o.get("output_type") == "error"]
    assert errors == []
    # the budget itself (about a minute on 2 cores) is measured by tests/benchmarks/bench_book.py
    assert elapsed < 300
