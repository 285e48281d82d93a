"""The declared minimum versions are true, agree everywhere, and are checked.

* ``companion/_requirements.py`` (``MINIMUMS``), ``pyproject.toml`` and
  ``requirements.txt`` declare the same minimums.
* No torch API newer than the declared torch minimum is used where it can be seen: the
  table :data:`FEATURES` lists each version-gated torch feature the book may use, the
  release that introduced it (with where that was looked up) and a regex that finds a
  use of it in the companion's code and the chapters' code cells (docstrings and
  comments dropped, the code normalised by :func:`ast.unparse`). The detector is tested
  on a snippet that uses each feature and on a near miss that does not, and on the real
  sources for the features the book is known to use, so it cannot pass by finding
  nothing. The torch minimum must also be no older than needed: it equals the newest
  feature used.
* The version parser agrees with ``packaging``'s release segment (an independent
  implementation of PEP 440), and the error names the package, both versions and the
  pip command, in one line -- also in a real IPython kernel running the setup cell.
"""
from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import NamedTuple

import pytest
from hypothesis import given, strategies as st

from companion import _requirements as req
from companion.book import read_repository, setup_cell_source

ROOT = Path(__file__).resolve().parents[1]


class Feature(NamedTuple):
    name: str
    version: str          # the torch release that introduced it
    pattern: str          # a regex over normalised code (ast.unparse: 'single quotes', kw=value)
    source: str           # where the version was looked up
    example: str          # code that uses it (the detector must find it)
    near_miss: str        # similar code that does not (the detector must not find it)


#: Version-gated torch features, newest first. A feature used in a way the regex cannot
#: see (a dtype held in a variable) is not found; the examples say what is.
FEATURES = [
    Feature("torch.nn.utils.get_total_norm / clip_grads_with_norm_", "2.6",
            r"\btorch\.nn\.utils\.(?:get_total_norm|clip_grads_with_norm_)\b"
            r"|\bfrom torch\.nn\.utils import [^\n]*\b(?:get_total_norm|clip_grads_with_norm_)\b",
            "pytorch/pytorch PR #139662 'Add APIs to separate norm calculation and gradient "
            "scaling in nn.utils.clip_grad_norm_', merged 2024-11-07, after 2.5 (2024-10)",
            "total = torch.nn.utils.get_total_norm([p.grad for p in model.parameters()])",
            "total = cc.get_total_norm([p.grad for p in model.parameters()])"),
    Feature("float16 autocast on the CPU", "2.5",
            r"\bautocast\('cpu',(?:[^()\n]|\([^()\n]*\))*\bfloat16\b",
            "docs 2.2 (amp.html): 'For CPU, only ... torch.bfloat16 is supported'; PR #112484 "
            "'Add Half support for CPU autocast'; its docs reached release/2.5 (PR #136082): "
            "2.5 at the latest",
            "with torch.autocast('cpu', dtype=torch.float16):\n    y = model(x)",
            "with torch.autocast('cpu', dtype=torch.bfloat16):\n    y = model(x)"),
    Feature("torch.nn.RMSNorm / rms_norm", "2.4",
            r"\b(?:torch\.)?nn\.(?:RMSNorm|functional\.rms_norm)\b|\bF\.rms_norm\b",
            "pytorch/pytorch PR #121364 'Add RMSNorm module', merged 2024-03-29 (its author: "
            "'will be available in 2.4')",
            "norm = torch.nn.RMSNorm(16)",
            "norm = companion.norm.RMSNorm(16)"),
    Feature("Adam/AdamW(fused=True) on the CPU", "2.4",
            r"\b(?:Adam|AdamW)\((?:[^()\n]|\([^()\n]*\))*\bfused=True",
            "CPU kernels of _fused_adam_ written for 2.4 (Intel's benchmark gist of "
            "2024-04-01, zhuhaozhe/ef9a290a), after 2.3's branch cut; fused was CUDA-only "
            "before (PR #90865)",
            "opt = torch.optim.Adam(model.parameters(), lr=0.001, fused=True)",
            "opt = torch.optim.Adam(model.parameters(), lr=0.001, foreach=True)"),
    Feature("torch.get_autocast_dtype / torch.is_autocast_enabled(device_type)", "2.4",
            r"\btorch\.get_autocast_dtype\(|\btorch\.is_autocast_enabled\([^)]",
            "pytorch/pytorch PR #124359 'Refactor autocast C++ APIs to be device-agnostic' "
            "(2024-04; the device-generic Python API, deprecating the per-device ones in 2.5)",
            "dtype = torch.get_autocast_dtype('cpu')",
            "enabled = torch.is_autocast_enabled()"),
    Feature("torch.amp.GradScaler on the CPU", "2.3",
            r"\bamp\.GradScaler\((?:device=)?'cpu'",
            "RFC pytorch/pytorch#111559 'Add GradScaler on CPU' (torch.amp.GradScaler('cpu')) "
            "and PR #109993, for 2.3",
            "scaler = torch.amp.GradScaler('cpu')",
            "scaler = companion.precision.GradScaler('cpu')"),
    Feature("torch.nn.utils.parametrizations.weight_norm", "2.1",
            r"\bparametrizations\.weight_norm\b",
            "pytorch/pytorch PR #103001 (2023-06); torch.nn.utils.weight_norm deprecated in "
            "its favour since 2.1",
            "layer = torch.nn.utils.parametrizations.weight_norm(torch.nn.Linear(4, 3))",
            "layer = torch.nn.utils.weight_norm(torch.nn.Linear(4, 3))"),
    Feature("torch.func (vmap, grad, functional_call)", "2.0",
            r"\btorch\.func\b",
            "docs, 'Migrating from functorch to torch.func': the torch.func APIs 'as of "
            "PyTorch 2.0'",
            "from torch.func import functional_call, grad, vmap",
            "from functorch import vmap"),
    Feature("torch.nn.functional.scaled_dot_product_attention", "2.0",
            r"\bscaled_dot_product_attention\(",
            "PyTorch 2.0 release notes: scaled_dot_product_attention, part of "
            "torch.nn.functional in 2.0",
            "out = F.scaled_dot_product_attention(q, k, v)",
            "out = attention(q, k, v)"),
    Feature("Optimizer.register_step_post_hook", "2.0",
            r"\.register_step_post_hook\(",
            "pytorch/pytorch PR #89176 'Implement post and pre hooks for optimizer' "
            "(2022-11, RFC #88446)",
            "handle = opt.register_step_post_hook(lambda *_: None)",
            "handle = model.register_forward_hook(lambda *_: None)"),
    Feature("torch.nn.utils.clip_grad_norm_(foreach=...)", "2.0",
            r"\bclip_grad_norm_\((?:[^()\n]|\([^()\n]*\))*\bforeach=",
            "pytorch/pytorch PR #91846 'Foreach gradient clipping' (2023-01)",
            "torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0, foreach=True)",
            "torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)"),
    Feature("torch.nextafter", "1.7",
            r"\btorch\.nextafter\(",
            "pytorch/pytorch PR #42580 'Implement torch.nextafter' (2020-08)",
            "up = torch.nextafter(x, torch.tensor(float('inf')))",
            "up = np.nextafter(x, np.inf)"),
]

#: The features the chapters and the companion are known to use (so the detector must
#: find each of them in the real sources).
KNOWN_USED = {"torch.nn.utils.get_total_norm / clip_grads_with_norm_",
              "float16 autocast on the CPU", "torch.nn.RMSNorm / rms_norm",
              "Adam/AdamW(fused=True) on the CPU", "torch.amp.GradScaler on the CPU",
              "torch.func (vmap, grad, functional_call)",
              "torch.nn.functional.scaled_dot_product_attention"}


# ----------------------------------------------------------------- reading the sources
class _DropDocstrings(ast.NodeTransformer):
    """Removes docstrings (a string standing alone as a statement), so a docstring that
    *mentions* an API is not a use of it."""

    def generic_visit(self, node):
        super().generic_visit(node)
        body = getattr(node, "body", None)
        if isinstance(body, list):
            kept = [s for s in body if not (isinstance(s, ast.Expr)
                                            and isinstance(s.value, ast.Constant)
                                            and isinstance(s.value.value, str))]
            node.body = kept or [ast.Pass()]
        return node


def normalised(code: str) -> str:
    """``code`` without comments and docstrings, as :func:`ast.unparse` writes it (one
    call per line, ``kw=value``, single quotes). IPython syntax (``%pip``) is first
    turned into Python by IPython's own input transformer."""
    from IPython.core.inputtransformer2 import TransformerManager

    tree = ast.parse(TransformerManager().transform_cell(code))
    return ast.unparse(_DropDocstrings().visit(tree))


def sources() -> dict[str, str]:
    """``{where: normalised code}`` for every ``companion/**/*.py`` and every code cell
    of ``book/*.ipynb``."""
    found = {}
    for path in sorted((ROOT / "companion").rglob("*.py")):
        found[str(path.relative_to(ROOT))] = normalised(path.read_text())
    for path in sorted((ROOT / "book").glob("*.ipynb")):
        cells = json.loads(path.read_text())["cells"]
        for i, cell in enumerate(cells):
            if cell["cell_type"] == "code":
                found[f"{path.relative_to(ROOT)}#cell{i}"] = normalised("".join(cell["source"]))
    return found


def uses(feature: Feature, code: str) -> bool:
    return re.search(feature.pattern, code) is not None


@pytest.fixture(scope="module")
def used() -> dict[str, list[str]]:
    """``{feature name: [where it is used]}`` over the real sources."""
    code = sources()
    return {f.name: [where for where, text in code.items() if uses(f, text)] for f in FEATURES}


# ------------------------------------------------------------------- declared minimums
def _pyproject_minimums() -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    specs = list(project["dependencies"])
    for extra in project.get("optional-dependencies", {}).values():
        specs += extra
    return _minimums(specs)


def _requirements_minimums() -> dict[str, str]:
    lines = (ROOT / "requirements.txt").read_text().splitlines()
    return _minimums([line.split("#")[0].strip() for line in lines if line.strip()])


def _minimums(specs: list[str]) -> dict[str, str]:
    """``{name: version}`` of each ``name>=version`` among ``specs`` (names lowercased)."""
    found = {}
    for spec in specs:
        match = re.match(r"([A-Za-z0-9_.-]+)\s*>=\s*([0-9][0-9.]*)", spec)
        if match:
            found[match.group(1).lower()] = match.group(2)
    return found


@pytest.mark.parametrize("where", ["pyproject.toml", "requirements.txt"])
def test_the_files_declare_the_same_minimums_as_the_module(where):
    """Reference: the files themselves, parsed (pyproject with tomllib)."""
    declared = _pyproject_minimums() if where == "pyproject.toml" else _requirements_minimums()
    assert {p: declared.get(p) for p in req.MINIMUMS} == req.MINIMUMS


def test_the_setup_cell_names_the_checked_minimums_and_imports_the_companion():
    cell = setup_cell_source(*read_repository(ROOT / "_config.yml"))
    for package in req.CHECKED:
        assert f"{package} >= {req.MINIMUMS[package]}" in cell
    assert cell.rstrip().splitlines()[-1] == "import companion"


# ------------------------------------------------------------- the torch feature table
@pytest.mark.parametrize("feature", FEATURES, ids=lambda f: f.name)
def test_the_detector_finds_the_feature_and_not_its_near_miss(feature):
    """Reference: a hand-written use and a hand-written near miss of each feature, put
    through the same normalisation as the real sources."""
    assert uses(feature, normalised(feature.example)), feature.example
    assert not uses(feature, normalised(feature.near_miss)), feature.near_miss


def test_the_detector_ignores_docstrings_and_comments():
    code = normalised('def f():\n    """Like torch.nn.utils.get_total_norm."""\n'
                      '    return 1  # torch.nn.RMSNorm would do\n')
    assert not any(uses(f, code) for f in FEATURES)


def test_features_the_book_is_known_to_use_are_found(used):
    missing = sorted(name for name in KNOWN_USED if not used[name])
    assert missing == [], f"the detector finds no use of {missing}: a pattern is broken"


def test_no_torch_feature_newer_than_the_declared_minimum_is_used(used):
    minimum = req.MINIMUMS["torch"]
    newer = {f.name: (f.version, used[f.name][:3]) for f in FEATURES
             if used[f.name] and not req.at_least(minimum, f.version)}
    assert newer == {}, f"used, but newer than torch>={minimum}: {newer}"


def test_the_torch_minimum_is_the_newest_feature_used(used):
    """Not declared higher than the sources need (the bound is true both ways)."""
    newest = max((f.version for f in FEATURES if used[f.name]), key=req.parse_version)
    assert req.parse_version(req.MINIMUMS["torch"]) == req.parse_version(newest)


def test_the_table_is_newest_first_with_parseable_versions():
    versions = [req.parse_version(f.version) for f in FEATURES]
    assert versions == sorted(versions, reverse=True)


# --------------------------------------------------------------------- version parsing
@pytest.mark.parametrize("text, expected", [
    ("2.13.0+cpu", (2, 13, 0)), ("2.5.0a0", (2, 5, 0)), ("2.6.0.dev20241201", (2, 6, 0)),
    ("1.24", (1, 24)), ("3.9.1.post1", (3, 9, 1)), ("8.1.9", (8, 1, 9)), ("2.4.0rc1", (2, 4, 0)),
])
def test_parse_version_takes_the_leading_numbers(text, expected):
    """Reference: packaging's release segment for the same strings."""
    from packaging.version import Version

    assert req.parse_version(text) == expected == Version(text).release


@pytest.mark.parametrize("bad, error", [("", ValueError), ("cpu", ValueError),
                                        ("+2.0", ValueError), (2.6, TypeError),
                                        (None, TypeError)])
def test_parse_version_refuses_what_is_not_a_version(bad, error):
    with pytest.raises(error, match="version"):
        req.parse_version(bad)


_release = st.lists(st.integers(0, 30), min_size=1, max_size=4)
_suffix = st.sampled_from(["", "+cpu", "+cu121", "a0", "rc1", ".post1", ".dev3"])


@given(_release, _suffix, _release, _suffix)
def test_at_least_compares_release_segments_as_packaging_does(a, sa, b, sb):
    """Reference: ``packaging.version.Version(...).release``, padded with zeros, compared
    as tuples (PEP 440's release-segment order; pre-releases count as their release)."""
    from packaging.version import Version

    have, need = ".".join(map(str, a)) + sa, ".".join(map(str, b)) + sb
    ra, rb = Version(have).release, Version(need).release
    width = max(len(ra), len(rb))
    expected = ra + (0,) * (width - len(ra)) >= rb + (0,) * (width - len(rb))
    assert req.at_least(have, need) == expected


# ------------------------------------------------------------------ the one-line error
def _fake(**installed):
    """Installed versions: torch, numpy and matplotlib at their minimums, unless given."""
    versions = {p: req.MINIMUMS[p] for p in req.CHECKED}
    versions.update(installed)
    return versions


def test_check_accepts_the_minimums_and_newer():
    req.check(versions=_fake())
    req.check(versions=_fake(torch="2.13.0+cpu", numpy="2.4.6", matplotlib="3.11.2"))
    req.check()   # this machine's own versions


def test_check_names_the_package_both_versions_and_the_pip_command(monkeypatch):
    monkeypatch.setattr(req, "installed_version",
                        lambda p: {"torch": "2.3.1+cu121"}.get(p, "99.0"))
    with pytest.raises(ImportError) as raised:
        req.check()
    text = str(raised.value)
    assert "\n" not in text
    torch = req.MINIMUMS["torch"]
    assert f"torch >= {torch}" in text and "torch 2.3.1+cu121" in text
    assert f'pip install -U "torch>={torch}"' in text
    assert "numpy" not in text and "matplotlib" not in text


def test_check_names_every_package_that_is_too_old_or_missing():
    with pytest.raises(ImportError) as raised:
        req.check(versions=_fake(numpy="1.19.5", matplotlib=None))
    text = str(raised.value)
    numpy, matplotlib = req.MINIMUMS["numpy"], req.MINIMUMS["matplotlib"]
    assert "\n" not in text
    assert f"numpy >= {numpy}" in text and f"matplotlib >= {matplotlib}" in text
    assert "numpy 1.19.5" in text and "no matplotlib" in text
    assert f'pip install -U "numpy>={numpy}" "matplotlib>={matplotlib}"' in text


def test_a_version_that_is_not_a_number_is_not_judged():
    req.check(versions=_fake(torch="unknown"))


def test_import_companion_checks(tmp_path):
    """``import companion`` in a fresh interpreter whose metadata reports torch 2.3.1."""
    script = ("import importlib.metadata as m\n"
              "real = m.version\n"
              "m.version = lambda name: '2.3.1' if name == 'torch' else real(name)\n"
              "try:\n"
              "    import companion\n"
              "except ImportError as error:\n"
              "    print(type(error).__name__, '|', error)\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         cwd=ROOT, timeout=120).stdout.strip()
    torch = req.MINIMUMS["torch"]
    assert out.startswith(f"VersionError | companion needs torch >= {torch}"), out
    assert "torch 2.3.1" in out and f'pip install -U "torch>={torch}"' in out


def test_in_a_kernel_the_setup_cell_stops_the_chapter_with_one_line():
    """The generated setup cell in a real IPython kernel (nbclient, as Jupyter runs it),
    with torch reported as 2.3.1: the cell's error output is the one line and nothing
    else (no traceback), and the next cell never runs."""
    import nbclient
    import nbformat

    fake = ("import importlib.metadata as _m\n_real = _m.version\n"
            "_m.version = lambda name: '2.3.1' if name == 'torch' else _real(name)")
    setup = setup_cell_source(*read_repository(ROOT / "_config.yml"))
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(fake),
                                               nbformat.v4.new_code_cell(setup),
                                               nbformat.v4.new_code_cell("print('ran')")])
    client = nbclient.NotebookClient(notebook, timeout=120, kernel_name="python3",
                                     resources={"metadata": {"path": str(ROOT / "book")}})
    with pytest.raises(nbclient.exceptions.CellExecutionError):
        client.execute()
    errors = [o for o in notebook.cells[1].outputs if o["output_type"] == "error"]
    assert len(errors) == 1 and errors[0]["ename"] == "VersionError"
    assert errors[0]["traceback"] == [req.message({"torch": "2.3.1"})]
    assert notebook.cells[2].outputs == []
