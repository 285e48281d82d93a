"""The companion's argument checks, shared by every module.

Each public function checks its arguments where they enter, with these validators, so that
a mistake ends in one sentence naming the argument, the value received and what was
expected -- ``TypeError`` for a wrong type, ``ValueError`` for a wrong value -- instead of a
traceback from deep inside torch, numpy or matplotlib, or a silently wrong number::

    >>> integer("depth", 0, minimum=1)
    Traceback (most recent call last):
    ...
    ValueError: depth must be an int >= 1, got 0

Every validator returns the value it accepted, normalised (``float`` for reals, ``int`` for
ints), so a call site reads ``lr = real("lr", lr, low=0)``. They are private to the package:
readers meet their messages, not their names.
"""
from __future__ import annotations

import math
import numbers
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence, Union

import numpy as np
import torch
from torch import Tensor, nn

Array = Union[np.ndarray, Tensor]

#: the largest seed torch's generators and numpy's SeedSequence both take
MAX_SEED = 2 ** 64 - 1


# ------------------------------------------------------------------------ describing values
def show(value: Any) -> str:
    """A short description of ``value`` for a message: arrays by dtype and shape (not their
    numbers), everything else by a ``repr`` cut at 60 characters."""
    if isinstance(value, Tensor):
        return f"a {str(value.dtype).replace('torch.', '')} tensor of shape {tuple(value.shape)}"
    if isinstance(value, np.ndarray):
        return f"a {value.dtype} array of shape {value.shape}"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _type_error(name: str, expected: str, value: Any) -> TypeError:
    shown = show(value)
    kind = type(value).__name__
    suffix = "" if shown.startswith("a ") or kind in ("str", "NoneType") else f" ({kind})"
    return TypeError(f"{name} must be {expected}, got {shown}{suffix}")


def is_int(value: Any) -> bool:
    """Whether ``value`` is an integer (a Python or numpy int), not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


_is_int = is_int  # the older name


def is_real(value: Any) -> bool:
    """Whether ``value`` is a real number: an int, float or numpy scalar, not a bool (``True``
    for a learning rate is a slip, not 1.0). Arrays and tensors are not numbers here."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


_is_real = is_real  # the older name, still used by some modules


def array_namespace(x: Any):
    """The module whose functions take ``x``: ``torch`` for a tensor, ``numpy`` otherwise,
    so one formula (``xp.sqrt(v)``, ``xp.zeros_like(p)``) serves both kinds of array."""
    return torch if isinstance(x, Tensor) else np


# -------------------------------------------------------------------------------- scalars
def integer(name: str, value: Any, *, minimum: Optional[int] = None,
            maximum: Optional[int] = None) -> int:
    """``int(value)`` for an int (not a bool) in ``[minimum, maximum]``."""
    if not is_int(value):
        raise _type_error(name, "an int", value)
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        if maximum is None:
            bound = f">= {minimum}"
        elif minimum is None:
            bound = f"<= {maximum}"
        else:
            bound = f"in [{minimum}, {maximum}]"
        raise ValueError(f"{name} must be an int {bound}, got {value!r}")
    return int(value)


def optional_integer(name: str, value: Any, **bounds: Any) -> Optional[int]:
    """``None`` or :func:`integer`."""
    return None if value is None else integer(name, value, **bounds)


def real(name: str, value: Any, *, low: Optional[float] = None, high: Optional[float] = None,
         low_open: bool = False, high_open: bool = False, finite: bool = True,
         scalar_tensor: bool = False) -> float:
    """``float(value)`` for a real number (not a bool) in the interval ``low .. high``
    (closed unless ``low_open``/``high_open``); NaN is always refused, infinity unless
    ``finite=False``. ``scalar_tensor=True`` also takes a one-element tensor."""
    if scalar_tensor and isinstance(value, Tensor) and value.numel() == 1 \
            and not value.is_complex() and value.dtype != torch.bool:
        value = value.item()
    if not is_real(value):
        raise _type_error(name, "a real number", value)
    value = float(value)
    ok = not math.isnan(value) and (not finite or math.isfinite(value))
    if low is not None:
        ok = ok and (value > low if low_open else value >= low)
    if high is not None:
        ok = ok and (value < high if high_open else value <= high)
    if not ok:
        raise ValueError(f"{name} must be {_interval(low, high, low_open, high_open, finite)}, "
                         f"got {value!r}")
    return value


def _interval(low, high, low_open, high_open, finite) -> str:
    fin = "a finite number" if finite else "a number"
    if low is None and high is None:
        return fin
    if high is None:
        if low == 0:
            return f"{fin} > 0" if low_open else f"{fin} >= 0"
        return f"{fin} {'>' if low_open else '>='} {low:g}"
    if low is None:
        return f"{fin} {'<' if high_open else '<='} {high:g}"
    return f"{fin} in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"


def positive(name: str, value: Any, **kw: Any) -> float:
    """A finite real number > 0."""
    return real(name, value, low=0.0, low_open=True, **kw)


def nonnegative(name: str, value: Any, **kw: Any) -> float:
    """A finite real number >= 0."""
    return real(name, value, low=0.0, **kw)


def optional_real(name: str, value: Any, **bounds: Any) -> Optional[float]:
    """``None`` or :func:`real`."""
    return None if value is None else real(name, value, **bounds)


def flag(name: str, value: Any) -> bool:
    """``True`` or ``False`` (numpy's ``bool_`` too), nothing else."""
    if isinstance(value, np.bool_):
        return bool(value)
    if not isinstance(value, bool):
        raise _type_error(name, "True or False", value)
    return value


def optional_flag(name: str, value: Any) -> Optional[bool]:
    """``None``, ``True`` or ``False`` (a ``foreach`` switch: None lets the code choose).

    numpy's ``bool_`` is read as the bool it is (torch.optim and torch.nn.utils take
    ``np.True_`` as true too); ints, strings and other truthy values are refused, where
    torch would take any of them."""
    if value is None:
        return None
    if isinstance(value, np.bool_):
        return bool(value)
    if not isinstance(value, bool):
        raise _type_error(name, "None, True or False", value)
    return value


def string(name: str, value: Any, *, nonempty: bool = False) -> str:
    """A ``str`` (non-empty with ``nonempty=True``)."""
    if not isinstance(value, str):
        raise _type_error(name, "a str", value)
    if nonempty and not value.strip():
        raise ValueError(f"{name} must be a non-empty str, got {value!r}")
    return value


def choice(name: str, value: Any, valid: Iterable[str]) -> str:
    """One of the names in ``valid`` (the message lists them)."""
    valid = list(valid)
    if not isinstance(value, str):
        raise _type_error(name, f"one of {valid}", value)
    if value not in valid:
        raise ValueError(f"{name} must be one of {valid}, got {value!r}")
    return value


def seed(value: Any, name: str = "seed") -> int:
    """An int in ``[0, 2**64 - 1]``: what both torch's and numpy's generators take."""
    return integer(name, value, minimum=0, maximum=MAX_SEED)


def optional_seed(value: Any, name: str = "seed") -> Optional[int]:
    """``None`` (use the global RNG) or :func:`seed`."""
    return None if value is None else seed(value, name)


def function(name: str, value: Any, what: str = "a callable") -> Callable:
    """A callable that is not a class (a class passed for a function is a common slip:
    ``update=optim.Adam`` instead of ``optim.adam_update``)."""
    if isinstance(value, type):
        raise TypeError(f"{name} must be {what}, got the class {value.__name__} "
                        f"(pass a function, or an instance)")
    if not callable(value):
        raise _type_error(name, what, value)
    return value


def instance(name: str, value: Any, kind: Union[type, tuple], what: str) -> Any:
    """``value`` if ``isinstance(value, kind)``, else a TypeError saying ``what`` it must be."""
    if not isinstance(value, kind):
        raise _type_error(name, what, value)
    return value


def module(name: str, value: Any) -> nn.Module:
    """A ``torch.nn.Module`` instance (a class or a function is refused by name)."""
    if isinstance(value, type) and issubclass(value, nn.Module):
        raise TypeError(f"{name} must be a torch.nn.Module instance, got the class "
                        f"{value.__name__} (call it to build one)")
    return instance(name, value, nn.Module, "a torch.nn.Module")


def mapping(name: str, value: Any, *, nonempty: bool = True) -> Mapping:
    """A dict-like mapping (non-empty unless ``nonempty=False``)."""
    if not isinstance(value, Mapping):
        raise _type_error(name, "a dict", value)
    if nonempty and not value:
        raise ValueError(f"{name} must not be empty, got {value!r}")
    return value


def sequence(name: str, value: Any, *, nonempty: bool = True, length: Optional[int] = None,
             what: str = "a list or tuple") -> list:
    """A list or tuple (not a str, not a mapping) as a list, non-empty unless told."""
    if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, (list, tuple, range)):
        raise _type_error(name, what, value)
    out = list(value)
    if length is not None and len(out) != length:
        raise ValueError(f"{name} must have {length} items, got {len(out)}: {show(value)}")
    if nonempty and not out:
        raise ValueError(f"{name} must not be empty, got {value!r}")
    return out


def pair(name: str, value: Any, check: Callable[[str, Any], Any]) -> tuple:
    """A pair ``(a, b)``, each item checked by ``check(f"{name}[i]", item)``."""
    items = sequence(name, value, length=2, what="a pair (tuple of 2)")
    return tuple(check(f"{name}[{i}]", v) for i, v in enumerate(items))


# --------------------------------------------------------------------------------- arrays
def _dtype_ok(x: Array, floating: bool, integral: bool) -> bool:
    if isinstance(x, Tensor):
        if floating:
            return x.is_floating_point()
        if integral:
            return not x.is_floating_point() and not x.is_complex() and x.dtype != torch.bool
        return True
    kind = x.dtype.kind
    if floating:
        return kind == "f"
    if integral:
        return kind in "iu"
    return kind in "biufc"


def array(name: str, x: Any, *, torch_only: bool = False, floating: bool = True,
          integral: bool = False, ndim: Union[int, Sequence[int], None] = None,
          min_ndim: Optional[int] = None, nonempty: bool = True,
          finite: bool = False) -> Array:
    """A numpy array or torch tensor (only a tensor with ``torch_only=True``).

    ``floating``: a real floating dtype (complex and int refused); ``integral``: an integer
    dtype (labels); ``ndim``: the number of dimensions (an int or the allowed ints);
    ``min_ndim``: at least that many; ``nonempty``: at least one element; ``finite``: no NaN
    or infinity (refused as bad data).
    """
    kinds = (Tensor,) if torch_only else (Tensor, np.ndarray)
    if not isinstance(x, kinds):
        raise _type_error(name, "a torch tensor" if torch_only
                          else "a numpy array or a torch tensor", x)
    if not _dtype_ok(x, floating, integral):
        want = "a real floating-point" if floating else "an integer" if integral else "a numeric"
        raise TypeError(f"{name} must have {want} dtype, got {show(x)}")
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if x.ndim not in allowed:
            want = " or ".join(str(d) for d in allowed)
            raise ValueError(f"{name} must have {want} dimensions, got {show(x)}")
    if min_ndim is not None and x.ndim < min_ndim:
        raise ValueError(f"{name} must have at least {min_ndim} dimensions, got {show(x)}")
    if nonempty and _numel(x) == 0:
        raise ValueError(f"{name} must not be empty, got {show(x)}")
    if finite:
        finite_values(name, x)
    return x


def tensor(name: str, x: Any, **kw: Any) -> Tensor:
    """:func:`array` restricted to torch tensors."""
    return array(name, x, torch_only=True, **kw)


def _numel(x: Array) -> int:
    return x.numel() if isinstance(x, Tensor) else x.size


def finite_values(name: str, x: Array) -> Array:
    """Refuse NaN or infinite entries in input data, saying how many and where the first is."""
    bad = ~torch.isfinite(x) if isinstance(x, Tensor) else ~np.isfinite(x)
    count = int(bad.sum())
    if count:
        first = tuple(int(i) for i in (bad.nonzero()[0] if isinstance(x, Tensor)
                                        else np.argwhere(bad)[0]))
        raise ValueError(f"{name} must be finite data, got {count} NaN or infinite "
                         f"value{'s' if count > 1 else ''} (the first at index {first})")
    return x


def same_shape(name: str, x: Array, other_name: str, other: Array) -> None:
    """Refuse ``x`` unless its shape equals ``other``'s (no silent broadcasting)."""
    if tuple(x.shape) != tuple(other.shape):
        raise ValueError(f"{name} must have the shape of {other_name}, "
                         f"{tuple(other.shape)}, got {tuple(x.shape)}")


def same_kind(name: str, x: Array, other_name: str, other: Array) -> None:
    """Refuse mixing numpy arrays and torch tensors."""
    if isinstance(x, Tensor) != isinstance(other, Tensor):
        kind = "a torch tensor" if isinstance(other, Tensor) else "a numpy array"
        raise TypeError(f"{name} must be {kind} like {other_name}, got {show(x)}")


def same_dtype(name: str, x: Tensor, dtype: torch.dtype, owner: str = "the model") -> Tensor:
    """Refuse ``x`` unless its dtype is ``dtype``, the dtype of ``owner``'s parameters
    (torch's layers refuse a float64 input to float32 weights deep inside a matmul)."""
    if x.dtype != dtype:
        want = str(dtype).replace("torch.", "")
        raise TypeError(f"{name} must have {owner}'s dtype {want}, got {show(x)} "
                        f"(convert it with .to({dtype}))")
    return x


def batch(name: str, x: Any, *, features: Optional[int] = None,
          dtype: Optional[torch.dtype] = None) -> Tensor:
    """A 2-D (batch, features) floating tensor of finite values, with ``features`` columns
    when given; ``dtype`` (a model's parameter dtype) must match."""
    x = tensor(name, x, ndim=2, finite=True)
    if features is not None and x.shape[1] != features:
        raise ValueError(f"{name} must have {features} features (columns), got {show(x)}")
    if dtype is not None:
        same_dtype(name, x, dtype)
    return x


def labels(name: str, y: Any, *, n: int, classes: int) -> Tensor:
    """Class labels for cross-entropy: an integer tensor of shape (n,) with values in
    ``[0, classes)``."""
    y = tensor(name, y, floating=False, integral=True, ndim=1)
    if y.shape[0] != n:
        raise ValueError(f"{name} must have one label per example ({n}), got {show(y)}")
    lo, hi = int(y.min()), int(y.max())
    if lo < 0 or hi >= classes:
        raise ValueError(f"{name} must hold class indices in [0, {classes - 1}] (the output "
                         f"has {classes} classes), got values from {lo} to {hi}")
    return y


def scalar_loss(name: str, value: Any) -> Tensor:
    """A loss function's result: a tensor with one element (forgetting ``.mean()`` gives a
    tensor per example)."""
    if not isinstance(value, Tensor):
        raise _type_error(name, "a function returning a scalar tensor", value)
    if value.numel() != 1:
        raise ValueError(f"{name} must return a scalar (one-element) tensor, got {show(value)}"
                         f" (reduce it, e.g. with .mean())")
    return value
