"""Small bridges between the companion and the book's build.

* :func:`glue` stores a value for the prose (myst-nb's ``glue``) and quietly does
  nothing where myst-nb is not installed (Colab, a bare Jupyter).
* :func:`setup_cell_source` is the first code cell of every chapter: it makes the
  companion importable on Colab without touching Colab's numpy, torch or matplotlib.
  ``python -m companion.book sync`` writes it, with the repository URL from
  ``_config.yml``, into every notebook (a test checks that they agree).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

__all__ = ["glue", "setup_cell_source", "sync_setup_cells", "read_repository"]

SETUP_MARKER = "# Setup: make `companion` importable"


def glue(name: str, value: Any, *, display: bool = False) -> None:
    """``myst_nb.glue(name, value, display=display)`` where myst-nb is installed, else nothing."""
    try:
        from myst_nb import glue as _glue
    except ImportError:
        return
    _glue(name, value, display=display)


def setup_cell_source(repository_url: str, branch: str = "main") -> str:
    """The source of every chapter's first code cell."""
    spec = f"deepnets-companion @ git+{repository_url.rstrip('/')}@{branch}"
    return (
        f"{SETUP_MARKER} (does nothing when it already is).\n"
        "# On Colab it installs the companion from the book's repository with --no-deps,\n"
        "# so Colab's own numpy, torch, matplotlib and ipywidgets stay as they are.\n"
        "import importlib.util, os, sys\n"
        "if importlib.util.find_spec(\"companion\") is None:\n"
        "    if \"google.colab\" in sys.modules:\n"
        f"        %pip install -q --no-deps \"{spec}\"\n"
        "    elif os.path.isdir(os.path.join(\"..\", \"companion\")):\n"
        "        sys.path.insert(0, os.path.abspath(\"..\"))  # a checkout of the repository"
    )


def read_repository(config_path: str | Path = "_config.yml") -> tuple[str, str]:
    """(url, branch) from the book's ``_config.yml``."""
    import yaml  # installed with jupyter-book; only the build tools need it

    config = yaml.safe_load(Path(config_path).read_text())
    repository = config.get("repository") or {}
    if not repository.get("url"):
        raise ValueError(f"{config_path}: repository.url is not set")
    return repository["url"], repository.get("branch", "main")


def sync_setup_cells(book_dir: str | Path = "book", config_path: str | Path = "_config.yml") -> list[Path]:
    """Write the setup cell into the first code cell of every notebook; returns those changed."""
    source = setup_cell_source(*read_repository(config_path))
    changed = []
    for path in sorted(Path(book_dir).glob("*.ipynb")):
        notebook = json.loads(path.read_text())
        code = [c for c in notebook["cells"] if c["cell_type"] == "code"]
        if code and "".join(code[0]["source"]).startswith(SETUP_MARKER):
            cell = code[0]
        else:
            cell = {"cell_type": "code", "execution_count": None, "id": "colab-setup",
                    "metadata": {"tags": ["remove-cell"]}, "outputs": [], "source": []}
            first_code = notebook["cells"].index(code[0]) if code else len(notebook["cells"])
            notebook["cells"].insert(first_code, cell)
        lines = source.splitlines(keepends=True)
        if cell["source"] != lines:
            cell["source"] = lines
            path.write_text(json.dumps(notebook, indent=1, ensure_ascii=False) + "\n")
            changed.append(path)
    return changed


if __name__ == "__main__":
    if sys.argv[1:] != ["sync"]:
        sys.exit("usage: python -m companion.book sync")
    for p in sync_setup_cells():
        print(f"updated {p}")
