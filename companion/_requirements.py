"""The oldest numpy, torch, matplotlib, pillow and ipywidgets the companion and the
chapters run with, and the check that ``import companion`` makes.

:data:`MINIMUMS` is the one place these numbers live: ``pyproject.toml`` and
``requirements.txt`` repeat them and ``tests/test_versions.py`` asserts that the three
agree; the chapters' setup cell (:func:`companion.book.setup_cell_source`) names them and
imports the companion, whose ``__init__`` calls :func:`check`. How each was established:

* **torch 2.6**: the newest torch API the chapters call is
  ``torch.nn.utils.get_total_norm`` (the clipping chapter; added in torch 2.6). Before
  it come float16 autocast on the CPU (2.5 at the latest), ``nn.RMSNorm``, Adam's
  ``fused=True`` on the CPU and ``torch.get_autocast_dtype`` (2.4), and
  ``torch.amp.GradScaler("cpu")`` (2.3). ``tests/test_versions.py`` lists each feature
  with its version and where that was looked up, and fails when the sources use one
  newer than this minimum (an older torch could not be installed to try).
* **numpy 1.23.2, matplotlib 3.6**: measured. The companion's tests and three chapters
  (vanishing, precision, normalization) pass with numpy 1.23.2 and matplotlib 3.6.0
  beside torch 2.13, the oldest releases with wheels for Python 3.11; older ones could
  not be installed to try.
* **pillow 9.1**: ``Image.Quantize`` and ``Image.Dither`` (``_raster``) are new in
  Pillow 9.1.0 (its release notes); 9.0.1 fails there with ``AttributeError``. 9.1.0
  (built here from source, without WebP) quantizes as the tests expect; 9.2.0, the
  oldest wheel for Python 3.11, passes every test, WebP frames included.
* **ipywidgets 8.0**: the live views' tests pass with ipywidgets 8.0.0 (7.x, whose
  front-end packages conflict with JupyterLab 4's, was not tried).

The check reads installed versions from the package metadata (``importlib.metadata``),
so a numpy too old for the installed matplotlib is reported, not imported, and it
compares the leading numeric parts of a version without ``packaging`` (which a reader
may not have): ``2.13.0+cpu`` is 2.13.0 and ``2.6.0a0`` (a nightly) counts as 2.6.0.
"""
from __future__ import annotations

import importlib
import importlib.metadata
import re
from typing import Mapping, Optional

#: The oldest version of each package the companion and the chapters run with
#: (distribution names, as pip spells them).
MINIMUMS: dict[str, str] = {
    "torch": "2.6",
    "numpy": "1.23.2",
    "matplotlib": "3.6",
    "pillow": "9.1",
    "ipywidgets": "8.0",
}

#: The packages ``import companion`` checks: those the chapters and the companion cannot
#: do without (pillow comes with matplotlib; ipywidgets only draws the live views).
CHECKED: tuple[str, ...] = ("torch", "numpy", "matplotlib")

#: The module that holds each distribution's ``__version__``, when it has no metadata.
_MODULES = {"pillow": "PIL"}

_LEADING_NUMBERS = re.compile(r"\s*v?(\d+(?:\.\d+)*)")


class VersionError(ImportError):
    """An installed package is older than :data:`MINIMUMS` allows.

    In IPython (Jupyter, Colab) the error shows as its one-line message and no
    traceback: IPython asks an exception for ``_render_traceback_()`` before it formats
    one itself (``InteractiveShell.showtraceback``).
    """

    def _render_traceback_(self) -> list[str]:
        return [str(self)]


def parse_version(version: str) -> tuple[int, ...]:
    """The leading numeric parts of ``version``: ``"2.13.0+cpu"`` -> ``(2, 13, 0)``.

    A local label (``+cpu``) and a pre-, post- or dev-release suffix are dropped, so a
    nightly ``2.6.0a0`` compares as 2.6.0.

    Raises:
        TypeError: ``version`` not a str.
        ValueError: ``version`` does not start with a number.
    """
    if not isinstance(version, str):
        raise TypeError(f"version must be a str such as '2.6.0', got {version!r} "
                        f"({type(version).__name__})")
    match = _LEADING_NUMBERS.match(version)
    if match is None:
        raise ValueError(f"version must start with a number such as '2.6.0', got {version!r}")
    return tuple(int(part) for part in match.group(1).split("."))


def at_least(installed: str, minimum: str) -> bool:
    """Whether version ``installed`` is ``minimum`` or newer (missing parts count as 0)."""
    have, need = parse_version(installed), parse_version(minimum)
    width = max(len(have), len(need))
    return have + (0,) * (width - len(have)) >= need + (0,) * (width - len(need))


def installed_version(package: str) -> Optional[str]:
    """The installed version of the distribution ``package``, or None if it is not
    installed. Read from its metadata; a package on ``sys.path`` without metadata (a
    source checkout) is imported for its ``__version__``."""
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        pass
    try:
        module = importlib.import_module(_MODULES.get(package, package))
    except ImportError:
        return None
    version = getattr(module, "__version__", None)
    return version if isinstance(version, str) else None


def message(found: Mapping[str, Optional[str]]) -> str:
    """One line: what is too old (``{package: installed version or None}``), the
    minimums and the pip command that upgrades them."""
    needs = " and ".join(f"{p} >= {MINIMUMS[p]}" for p in found)
    have = " and ".join(f"{p} {v}" if v else f"no {p}" for p, v in found.items())
    command = " ".join(f'"{p}>={MINIMUMS[p]}"' for p in found)
    return (f"companion needs {needs}, this Python has {have}: "
            f"pip install -U {command}, then restart the kernel")


def too_old(packages: tuple[str, ...] = CHECKED,
            versions: Optional[Mapping[str, Optional[str]]] = None) -> dict[str, Optional[str]]:
    """``{package: installed version or None}`` for each of ``packages`` that is missing
    or older than its minimum. ``versions`` stands in for the installed versions
    (a test's); by default they are read with :func:`installed_version`."""
    found = {}
    for package in packages:
        version = versions[package] if versions is not None else installed_version(package)
        try:
            old = version is None or not at_least(version, MINIMUMS[package])
        except ValueError:      # a version that does not start with a number: not judged
            old = False
        if old:
            found[package] = version
    return found


def check(packages: tuple[str, ...] = CHECKED,
          versions: Optional[Mapping[str, Optional[str]]] = None) -> None:
    """Raise :class:`VersionError` (an ``ImportError``) with one line naming each of
    ``packages`` that is older than :data:`MINIMUMS` (or missing), the installed and the
    minimum version and the ``pip install -U`` command; else do nothing."""
    found = too_old(packages, versions)
    if found:
        raise VersionError(message(found))
