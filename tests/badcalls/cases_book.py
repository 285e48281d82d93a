"""Rows for companion.book: glue and the setup-cell tools. Files live in a temporary
directory made here (never in the repository's book/)."""
from __future__ import annotations

import atexit
import json
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from companion import book
from badcalls import Row, not_bool, not_str

_ROOT = Path(tempfile.mkdtemp(prefix="companion-book-rows-"))
atexit.register(shutil.rmtree, _ROOT, ignore_errors=True)


def _write(name: str, text: str) -> Path:
    path = _ROOT / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


_CONFIG = _write("_config.yml", "repository:\n  url: https://github.com/owner/repo\n  branch: main\n")
_NO_URL = _write("no_url.yml", "title: a book\n")
_BAD_URL = _write("bad_url.yml", "repository:\n  url: 3\n")
_NOT_YAML = _write("not_yaml.yml", "repository: [unclosed\n")
_A_LIST = _write("a_list.yml", "- 1\n- 2\n")
_MISSING = _ROOT / "missing.yml"
_BOOK = _ROOT / "book"
_write("book/chapter.ipynb", json.dumps({"cells": [{"cell_type": "code", "source": ["x = 1\n"],
                                                    "metadata": {}, "outputs": [],
                                                    "execution_count": None}],
                                         "metadata": {}, "nbformat": 4, "nbformat_minor": 5}))
_BROKEN_BOOK = _ROOT / "broken"
_write("broken/chapter.ipynb", "{not json")
_NO_CELLS_BOOK = _ROOT / "no_cells"
_write("no_cells/chapter.ipynb", json.dumps({"metadata": {}}))

_FOUND = (TypeError, ValueError, FileNotFoundError)


_ABSENT = object()


def _glue_without_myst_nb(**kw):
    """book.glue as on Colab (no myst-nb): the checks come first, and importing myst-nb
    (sphinx, ~4 s) would dwarf the whole table."""
    saved = sys.modules.get("myst_nb", _ABSENT)
    sys.modules["myst_nb"] = None             # makes `from myst_nb import glue` fail
    try:
        return book.glue(**kw)
    finally:
        if saved is _ABSENT:
            del sys.modules["myst_nb"]
        else:
            sys.modules["myst_nb"] = saved

ROWS = [
    Row(book.glue, call=_glue_without_myst_nb, good=dict(name="x", value=0.5, display=False),
        bad=dict(name=not_str() + ["", "  "], value=[torch.tensor(0.5), torch.ones(2)],
                 display=not_bool()),
        accepted=dict(value=([np.float64(0.5), np.int64(3), np.array(2.0), "text", 3, None,
                              [1, 2]],
                             "whatever myst-nb glues; numpy scalars become the Python number "
                             "they hold (their numpy 2 repr breaks {glue:text})"))),
    Row(book.setup_cell_source,
        good=dict(repository_url="https://github.com/owner/repo", branch="main"),
        bad=dict(repository_url=not_str() + ["", "github.com/owner/repo", "https://x y",
                                             'https://x"', "owner/repo"],
                 branch=not_str() + ["", "a b", 'a"b', "a@b", "a:b", "a#b"]),
        accepted=dict(repository_url=(["ssh://git@github.com/owner/repo", "file:///tmp/repo",
                                       "https://github.com/owner/repo/"],
                                      "any URL pip installs from; a trailing slash is dropped"),
                      branch=(["feature/x", "v1.0"], "branch names with / and ."))),
    Row(book.read_repository, good=dict(config_path=_CONFIG), errors=_FOUND,
        bad=dict(config_path=[None, 3, True, ["x"], "", _MISSING, str(_MISSING), _ROOT,
                              _NO_URL, _BAD_URL, _NOT_YAML, _A_LIST]),
        accepted=dict(config_path=([str(_CONFIG)], "a str path"))),
    Row(book.sync_setup_cells, good=dict(book_dir=_BOOK, config_path=_CONFIG), errors=_FOUND,
        bad=dict(book_dir=[None, 3, ["book"], "", _ROOT / "nowhere", _CONFIG, _BROKEN_BOOK,
                           _NO_CELLS_BOOK],
                 config_path=[None, 3, "", _MISSING, _ROOT, _NO_URL]),
        accepted=dict(book_dir=([str(_BOOK), _ROOT],
                                "a str path; a directory without notebooks (nothing to do)"))),
]
