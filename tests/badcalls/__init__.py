"""The table behind tests/test_bad_input.py: one known-good call per public callable of the
companion, and, for each argument, the bad values that must be refused.

A :class:`Row` names its callable (``target``), says how to call it (``call(**kwargs)``,
by default the target itself) and gives the keyword arguments of a call that works
(``good``). The test replaces one argument at a time by each of its ``bad`` values and
asserts that the call raises ``TypeError`` or ``ValueError`` *from a companion file* (the
innermost frame of the traceback) with a message naming the argument. Values that are
right to accept go in ``accepted`` with the reason; a callable whose arguments are not
checked on purpose (a record type) has a row with ``reason`` and no ``bad``.

The value families below are functions, so that every row gets fresh objects. Each
``cases_*.py`` module of this package holds the rows of some companion modules in a list
``ROWS``; :data:`ROWS` gathers them.
"""
from __future__ import annotations

import importlib
import inspect
import math
import pkgutil
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import numpy as np
import torch


@dataclass
class Row:
    target: Any                       # the public callable: function, class or method
    good: dict = field(default_factory=dict)
    bad: dict = field(default_factory=dict)       # argument -> list of bad values
    call: Optional[Callable[..., Any]] = None     # call(**kwargs); default: target(**kwargs)
    accepted: dict = field(default_factory=dict)  # argument -> (values, reason)
    reason: str = ""                  # why a row has no bad values (record types)
    run_good: bool = True             # False where the good call is slow (trains, spawns)
    mention: dict = field(default_factory=dict)   # argument -> word the message must name
    errors: tuple = (TypeError, ValueError)

    @property
    def key(self) -> str:
        return qualname(self.target)

    def invoke(self, **kwargs: Any) -> Any:
        return (self.call or self.target)(**kwargs)


def qualname(obj: Any) -> str:
    return f"{obj.__module__}.{obj.__qualname__}"


# ------------------------------------------------------------------- the public callables
def public_callables() -> dict[str, Any]:
    """Every callable in a public companion module's ``__all__``, and every public method
    with arguments of those that are classes (including methods inherited from the
    companion's own private bases), keyed by ``module.qualname`` (re-exports once)."""
    import companion

    found: dict[str, Any] = {}
    for info in pkgutil.walk_packages(companion.__path__, "companion."):
        if any(part.startswith("_") for part in info.name.split(".")[1:]):
            continue
        mod = importlib.import_module(info.name)
        for name in getattr(mod, "__all__", []):
            obj = getattr(mod, name)
            if callable(obj) and getattr(obj, "__module__", "").startswith("companion"):
                found.setdefault(qualname(obj), obj)
    for obj in list(found.values()):
        if not isinstance(obj, type):
            continue
        for cls in obj.__mro__:
            if not cls.__module__.startswith("companion"):
                continue
            for name, member in vars(cls).items():
                if name.startswith("_") or not inspect.isfunction(member):
                    continue
                params = [p for p in inspect.signature(member).parameters if p != "self"]
                if params:
                    found.setdefault(qualname(member), member)
    return found


# ------------------------------------------------------------------------- value families
def not_int() -> list:
    return [None, "3", 2.5, True, math.nan, [3]]


def positive_int() -> list:
    return not_int() + [0, -1]


def nonnegative_int() -> list:
    return not_int() + [-1]


def not_real() -> list:
    return [None, "0.1", True, [0.1], math.nan]


def positive_real() -> list:
    return not_real() + [0.0, -1.0, math.inf]


def nonnegative_real() -> list:
    return not_real() + [-1.0, math.inf]


def finite_real() -> list:
    return not_real() + [math.inf, -math.inf]


def unit_interval_open() -> list:
    """For a coefficient in [0, 1): a beta, a momentum."""
    return not_real() + [-0.1, 1.0, 1.5]


def not_bool() -> list:
    return [None, "yes", 1, 0.0]


def not_str() -> list:
    return [None, 3, True, ["relu"]]


def bad_choice(*extra: str) -> list:
    return not_str() + ["no such name", "", *extra]


def bad_seed() -> list:
    return [-1, 2 ** 64, 2.5, "0", True, math.nan]


def not_callable() -> list:
    return [None, 3, "f"]


def not_module() -> list:
    return [None, "net", torch.ones(2, 2), torch.nn.Linear]


def not_array() -> list:
    """Things that are not arrays at all."""
    return [None, "x", 3.0, [1.0, 2.0]]


def bad_array(good: Any, *, torch_only: bool = False, nan: bool = True,
              empty: bool = True, ndim: bool = True, integer: bool = True,
              complex_: bool = True) -> list:
    """Bad versions of the array ``good``: not an array, integer and complex dtypes, NaN,
    empty, one dimension more; a numpy array for a tensor (``torch_only``)."""
    t = torch.as_tensor(good) if not isinstance(good, np.ndarray) else good
    lib = torch if isinstance(t, torch.Tensor) else np
    out = not_array()
    if integer:
        out.append(lib.ones(tuple(t.shape), dtype=lib.int64))
    if complex_:
        out.append(lib.ones(tuple(t.shape), dtype=lib.complex64))
    if nan:
        v = t.clone() if lib is torch else t.copy()
        v.reshape(-1)[0] = math.nan
        out.append(v)
    if empty:
        out.append(lib.ones((0,) + tuple(t.shape[1:]), dtype=t.dtype))
    if ndim:
        out.append(lib.ones(tuple(t.shape) + (2,), dtype=t.dtype))
    if torch_only:
        out.append(np.ones(tuple(t.shape)))
    return out


# ---------------------------------------------------------------------------- the table
def load_rows() -> list[Row]:
    rows: list[Row] = []
    for info in pkgutil.iter_modules(__path__):
        if info.name.startswith("cases_"):
            rows.extend(importlib.import_module(f"{__name__}.{info.name}").ROWS)
    return rows


# ----------------------------------------------------------------------------- probing
def _origin(exc: BaseException) -> str:
    """The file of the innermost frame of ``exc``'s traceback."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return tb.tb_frame.f_code.co_filename if tb is not None else "?"


def _in_companion(filename: str) -> bool:
    import companion

    root = str(importlib.import_module("companion").__path__[0])
    return filename.startswith(root)


def probe(row: Row, arg: str, value: Any) -> tuple[str, str]:
    """Call ``row`` with ``arg=value``; classify what happened:

    ``named``: a TypeError/ValueError (or the row's ``errors``) raised in a companion file
    whose message names the argument; ``unnamed``: the same, but the message does not name
    it; ``foreign``: any exception raised elsewhere (torch, numpy, the standard library) or
    of another type; ``returned``: no exception at all (a silent result).
    """
    import re
    import warnings

    kwargs = {**row.good, arg: value}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            row.invoke(**kwargs)
    except Exception as exc:  # noqa: BLE001 -- classifying is the point
        where = _origin(exc)
        text = f"{type(exc).__name__}: {exc}"
        if not isinstance(exc, row.errors) or not _in_companion(where):
            return "foreign", f"{text} [raised in {where}]"
        word = row.mention.get(arg, arg)
        if not re.search(rf"(?<![A-Za-z0-9_]){re.escape(word)}(?![A-Za-z0-9_])", str(exc)):
            return "unnamed", text
        return "named", text
    finally:
        import matplotlib.pyplot as plt
        plt.close("all")
    return "returned", ""
