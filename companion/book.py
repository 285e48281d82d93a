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
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
from torch import Tensor

from . import _check, _requirements

__all__ = ["glue", "setup_cell_source", "sync_setup_cells", "read_repository"]

SETUP_MARKER = "# Setup: make `companion` importable"
_SCHEMES = ("https://", "http://", "ssh://", "git://", "file://")


def _has_any(text: str, characters: str) -> bool:
    return any(c in text for c in characters)


def _check_path(name: str, value: Any) -> Path:
    """A filesystem path given as a non-empty str or an ``os.PathLike``."""
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
        if isinstance(value, bytes):
            value = os.fsdecode(value)
    if not isinstance(value, str):
        raise _check._type_error(name, "a path (a str or pathlib.Path)", value)
    if not value.strip():
        raise ValueError(f"{name} must be a non-empty path, got {value!r}")
    return Path(value)


def _check_existing(name: str, path: Path, *, directory: bool) -> Path:
    """``path`` if it exists as a file (or a directory); FileNotFoundError naming it if it
    does not exist, ValueError if it is the wrong kind."""
    if not path.exists():
        raise FileNotFoundError(f"{name} must name an existing "
                                f"{'directory' if directory else 'file'}, got {str(path)!r} "
                                f"(no such {'directory' if directory else 'file'})")
    if directory and not path.is_dir():
        raise ValueError(f"{name} must be a directory, got the file {str(path)!r}")
    if not directory and not path.is_file():
        raise ValueError(f"{name} must be a file, got the directory {str(path)!r}")
    return path


def glue(name: str, value: Any, *, display: bool = False) -> None:
    """``myst_nb.glue(name, value, display=display)`` where myst-nb is installed, else nothing.

    A numpy scalar is glued as the Python number it holds (``value.item()``, the same
    number): under numpy 2 it would show as ``np.float64(0.5)``, which the prose's
    ``{glue:text}`` cannot format, and the build fails.

    Raises:
        TypeError: ``name`` not a str, ``value`` a torch tensor (glue ``t.item()`` or
            ``float(t)``: a tensor shows as ``tensor(0.5000)``), ``display`` not True/False.
        ValueError: an empty ``name``.
    """
    _check.string("name", name, nonempty=True)
    if isinstance(value, Tensor):
        raise TypeError(f"value must be a number, a str or a displayable object, got "
                        f"{_check.show(value)}: glue value.item() or float(value)")
    if isinstance(value, np.generic) or (isinstance(value, np.ndarray) and value.ndim == 0):
        value = value.item()
    display = _check.flag("display", display)
    try:
        from myst_nb import glue as _glue
    except ImportError:
        return
    _glue(name, value, display=display)


def setup_cell_source(repository_url: str, branch: str = "main") -> str:
    """The source of every chapter's first code cell.

    It makes the companion importable, then imports it: ``import companion`` checks the
    installed torch, numpy and matplotlib against :data:`companion._requirements.MINIMUMS`
    (named in the cell's comment) and stops the chapter, before it runs, with one line
    saying what to upgrade.

    Raises:
        TypeError: ``repository_url`` or ``branch`` not a str.
        ValueError: a ``repository_url`` that is not a URL pip can install from
            (``https://``, ``http://``, ``ssh://``, ``git://`` or ``file://``) or holds
            spaces or quotes, an empty ``branch`` or one with spaces, quotes or characters
            git refuses in a branch name.
    """
    _check.string("repository_url", repository_url, nonempty=True)
    if not repository_url.startswith(_SCHEMES) or _has_any(repository_url, " \t\n\r\"'"):
        raise ValueError(f"repository_url must be a URL such as 'https://github.com/owner/repo' "
                         f"(no spaces or quotes), got {repository_url!r}")
    _check.string("branch", branch, nonempty=True)
    if _has_any(branch, " \t\n\r\"'#~^:?*[\\@"):
        raise ValueError(f"branch must be a git branch name (no spaces, quotes or any of "
                         f"#~^:?*[\\@), got {branch!r}")
    spec = f"deepnets-companion @ git+{repository_url.rstrip('/')}@{branch}"
    return (
        f"{SETUP_MARKER} (does nothing when it already is).\n"
        "# On Colab it installs the companion from the book's repository with --no-deps,\n"
        "# so Colab's own numpy, torch, matplotlib and ipywidgets stay as they are.\n"
        "import importlib.util, os, sys\n"
        "if importlib.util.find_spec(\"companion\") is None:\n"
        "    if \"google.colab\" in sys.modules:\n"
        f"        %pip install -q --no-deps \"{spec}\"\n"
        "        importlib.invalidate_caches()\n"
        "    elif os.path.isdir(os.path.join(\"..\", \"companion\")):\n"
        "        sys.path.insert(0, os.path.abspath(\"..\"))  # a checkout of the repository\n"
        f"{_version_comment()}\n"
        "import companion"
    )


def _version_comment() -> str:
    """The setup cell's comment naming the minimums that ``import companion`` checks
    (from :data:`companion._requirements.MINIMUMS`, the one place they live)."""
    needs = [f"{p} >= {_requirements.MINIMUMS[p]}" for p in _requirements.CHECKED]
    listed = ", ".join(needs[:-1]) + " and " + needs[-1] if len(needs) > 1 else needs[0]
    return (f"# The chapters need {listed}: importing the\n"
            "# companion checks them and, if one is too old, says in one line what to upgrade.")


def read_repository(config_path: str | Path = "_config.yml") -> tuple[str, str]:
    """(url, branch) from the book's ``_config.yml``.

    Raises:
        TypeError: ``config_path`` not a str or path.
        FileNotFoundError: no file at ``config_path`` (the message names it).
        ValueError: ``config_path`` a directory, not YAML, or without a str
            ``repository.url`` (or with a ``repository.branch`` that is not a str).
    """
    import yaml  # installed with jupyter-book; only the build tools need it

    path = _check_existing("config_path", _check_path("config_path", config_path), directory=False)
    try:
        config = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        first = (str(error).splitlines() or [type(error).__name__])[0]
        raise ValueError(f"config_path {str(path)!r} must be a YAML file, it does not parse: "
                         f"{first}") from None
    if not isinstance(config, dict):
        raise ValueError(f"config_path {str(path)!r} must hold a YAML mapping (the book's "
                         f"_config.yml), got {_check.show(config)}")
    repository = config.get("repository") or {}
    if not isinstance(repository, dict):
        raise ValueError(f"config_path {str(path)!r}: repository must be a mapping with a url, "
                         f"got {_check.show(repository)}")
    url, branch = repository.get("url"), repository.get("branch", "main")
    if not url:
        raise ValueError(f"config_path {str(path)!r}: repository.url is not set")
    if not isinstance(url, str) or not isinstance(branch, str):
        raise ValueError(f"config_path {str(path)!r}: repository.url and repository.branch "
                         f"must be strs, got {url!r} and {branch!r}")
    return url, branch


def sync_setup_cells(book_dir: str | Path = "book", config_path: str | Path = "_config.yml") -> list[Path]:
    """Write the setup cell into the first code cell of every notebook; returns those changed.

    Raises:
        TypeError: ``book_dir`` or ``config_path`` not a str or path.
        FileNotFoundError: no directory ``book_dir`` or no file ``config_path``.
        ValueError: ``book_dir`` a file, a notebook in it that is not notebook JSON, or a
            bad ``config_path`` (see :func:`read_repository`).
    """
    book = _check_existing("book_dir", _check_path("book_dir", book_dir), directory=True)
    source = setup_cell_source(*read_repository(config_path))
    changed = []
    for path in sorted(book.glob("*.ipynb")):
        try:
            notebook = json.loads(path.read_text())
        except (ValueError, UnicodeDecodeError) as error:
            raise ValueError(f"book_dir: {path.name} must be a notebook (JSON), it does not "
                             f"parse: {error}") from None
        cells = notebook.get("cells") if isinstance(notebook, dict) else None
        if not isinstance(cells, list) or not all(isinstance(c, dict) for c in cells):
            raise ValueError(f"book_dir: {path.name} must be a notebook with a list of cells")
        code = [c for c in cells if c.get("cell_type") == "code"]
        if code and "".join(code[0].get("source", [])).startswith(SETUP_MARKER):
            cell = code[0]
        else:
            cell = {"cell_type": "code", "execution_count": None, "id": "colab-setup",
                    "metadata": {"tags": ["remove-cell"]}, "outputs": [], "source": []}
            first_code = cells.index(code[0]) if code else len(cells)
            cells.insert(first_code, cell)
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
