"""Building blocks shared by the optimizers: EMAs, bias correction, decoupled decay, checks.

The checks (``check_*``) are the optimizers' own, used by :mod:`._functional` and
:mod:`._classes`; the generic ones (a real number, an array, a flag) are
:mod:`companion._check`'s.
"""
from __future__ import annotations

import math
from typing import Any, Optional, Union

import numpy as np
import torch

from .. import _check

__all__ = ["ema", "bias_corrected", "decoupled_weight_decay"]

Array = Union[np.ndarray, torch.Tensor]


#: the array namespace of ``x`` (``torch`` or ``numpy``), short for the update formulas
xp = _check.array_namespace


# ------------------------------------------------------------------------ the building blocks
def ema(prev: Array, x: Array, beta: float) -> Array:
    r"""Exponential moving average: :math:`\beta\,\text{prev} + (1-\beta)\,x`.

    Started from ``prev = 0`` it is biased towards 0 by the factor :math:`1-\beta^t` after
    t updates (see :func:`bias_corrected`); ``1 / (1 - beta)`` is its effective window.
    ``prev`` and ``x`` are real numbers or floating arrays (numpy or torch, not mixed, of
    the same shape when both are arrays); NaN is not refused (a diverging run averages it).
    ``beta`` is in [0, 1): at ``beta = 1`` the average never moves from ``prev`` (from 0,
    the usual start, it stays 0 and :func:`bias_corrected` would divide by zero).

    >>> avg = 0.0
    >>> for x in [1.0, 1.0, 1.0]:
    ...     avg = ema(avg, x, 0.9)
    >>> round(avg, 3), round(bias_corrected(avg, 0.9, 3), 3)
    (0.271, 1.0)

    Raises:
        TypeError: ``prev`` or ``x`` neither a real number nor a floating array, a numpy
            array mixed with a torch tensor, a non-real ``beta``.
        ValueError: arrays of different shapes (no silent broadcasting), ``beta`` outside
            [0, 1).
    """
    prev = check_value_or_array("prev", prev)
    x = check_value_or_array("x", x)
    if not _check.is_real(prev) and not _check.is_real(x):
        _check.same_kind("x", x, "prev", prev)
        _check.same_shape("x", x, "prev", prev)
    check_beta("beta", beta)
    return _ema(prev, x, beta)


def _ema(prev: Array, x: Array, beta: float) -> Array:
    """:func:`ema` unchecked: the optimizers' inner loops call this."""
    return beta * prev + (1 - beta) * x


def bias_corrected(avg: Array, beta: float, t: int) -> Array:
    r"""Undo the zero start of an EMA after ``t`` >= 1 updates: :math:`\text{avg} / (1-\beta^t)`.

    For a constant input x, ``ema`` started at 0 equals :math:`(1-\beta^t)\,x`; dividing
    gives x back exactly (Kingma & Ba, 2015, section 3).

    Raises:
        TypeError: ``avg`` neither a real number nor a floating array, a non-real ``beta``,
            a ``t`` that is not an int.
        ValueError: ``beta`` outside [0, 1) (beta = 1 would divide by zero), ``t`` < 1.
    """
    avg = check_value_or_array("avg", avg)
    check_beta("beta", beta)
    _check.integer("t", t, minimum=1)
    return _bias_corrected(avg, beta, t)


def _bias_corrected(avg: Array, beta: float, t: int) -> Array:
    return avg / (1 - beta ** t)


def decoupled_weight_decay(p: Array, *, lr: float, weight_decay: float) -> Array:
    r"""Shrink the weights directly, outside the gradient: :math:`(1 - \eta\lambda)\,p`.

    Loshchilov & Hutter (2019): for adaptive methods this is not the same as adding
    :math:`\lambda p` to g, whose effect Adam would divide by :math:`\sqrt{\hat v}`.

    :math:`\eta\lambda > 1` is refused: the factor :math:`1 - \eta\lambda` would be
    negative and flip every weight's sign at each step. torch.optim.AdamW does not refuse
    it (it flips the signs silently); the companion's AdamW, Lion, NAdam
    (``decoupled_weight_decay=True``) and their pure functions refuse it too, and agree
    with torch everywhere else.

    >>> decoupled_weight_decay(np.array([1.0, -2.0]), lr=0.1, weight_decay=0.5)
    array([ 0.95, -1.9 ])

    Raises:
        TypeError: ``p`` not a numpy array or torch tensor of a floating dtype, a
            non-real ``lr`` or ``weight_decay``.
        ValueError: ``lr`` or ``weight_decay`` negative or not finite, ``lr *
            weight_decay`` > 1.
    """
    p = _check.array("p", p, nonempty=False)
    _check.nonnegative("lr", lr)
    _check.nonnegative("weight_decay", weight_decay)
    check_decay(lr, weight_decay)
    return _decoupled_weight_decay(p, lr=lr, weight_decay=weight_decay)


def _decoupled_weight_decay(p: Array, *, lr: float, weight_decay: float) -> Array:
    return p * (1 - lr * weight_decay) if weight_decay != 0 else p


# ------------------------------------------------------------------------------ checks
_NON_NEGATIVE = ("lr", "eps", "weight_decay", "momentum", "lr_decay",
                 "initial_accumulator_value", "momentum_decay")
_UNIT = ("alpha",)
_FLAGS = ("nesterov", "amsgrad", "centered", "maximize", "bias_correction",
          "decoupled_weight_decay")


def check_value_or_array(name: str, value: Any) -> Any:
    """A real number (not a bool) or a floating numpy array / torch tensor (NaN allowed)."""
    if _check.is_real(value):
        return value
    _check.instance(name, value, (np.ndarray, torch.Tensor),
                    "a real number or a floating numpy array / torch tensor")
    return _check.array(name, value, nonempty=False)


def check_beta(name: str, value: Any) -> float:
    """A decay rate of an average (a beta, alpha, a momentum in [0, 1))."""
    return _check.real(name, value, low=0.0, high=1.0, high_open=True)


def check_decay(lr: float, weight_decay: float) -> None:
    """Refuse a decoupled decay factor ``1 - lr * weight_decay`` below 0 (both already
    checked to be finite and >= 0): it would flip the sign of every weight."""
    if lr * weight_decay > 1:
        raise ValueError(f"lr * weight_decay must be <= 1 for decoupled weight decay (the "
                         f"weights are multiplied by 1 - lr * weight_decay, which would flip "
                         f"their sign), got lr={lr!r}, weight_decay={weight_decay!r} (product "
                         f"{lr * weight_decay:g})")


def check_hyper(**hyper: Any) -> None:
    """Raise ValueError/TypeError naming the first invalid hyperparameter and its value.

    Rules (torch.optim's, with messages that name the argument): lr, eps, weight_decay,
    momentum, lr_decay, initial_accumulator_value, momentum_decay finite and >= 0 (lr = 0
    allowed); alpha and each of betas in [0, 1); flags are bools; anything else a finite
    real; nesterov needs momentum > 0 and dampening = 0. Plain floats, ints and bools in
    range take a fast path (the pure functions run this on every call); anything else
    goes to the shared validators, which accept or raise.
    """
    for name, value in hyper.items():
        kind = type(value)
        if name == "betas":
            if not (kind is tuple and len(value) == 2
                    and all(type(b) is float and 0.0 <= b < 1.0 for b in value)):
                _check.pair("betas", value, check_beta)
        elif name in _FLAGS:
            if value is not True and value is not False:
                _check.flag(name, value)
        elif kind is not float and kind is not int:
            if name in _UNIT:
                check_beta(name, value)
            elif name in _NON_NEGATIVE:
                _check.nonnegative(name, value)
            else:
                _check.real(name, value)
        elif name in _UNIT:
            if not 0.0 <= value < 1.0:
                check_beta(name, value)
        elif name in _NON_NEGATIVE:
            if not 0.0 <= value < math.inf:
                _check.nonnegative(name, value)
        elif not -math.inf < value < math.inf:
            _check.real(name, value)
    if hyper.get("nesterov") and (hyper.get("momentum", 0) <= 0 or hyper.get("dampening", 0) != 0):
        raise ValueError("Nesterov momentum requires a momentum and zero dampening: nesterov=True "
                         f"needs momentum > 0 and dampening = 0, got momentum="
                         f"{hyper.get('momentum', 0)}, dampening={hyper.get('dampening', 0)}")


def _is_complex(x: Array) -> bool:
    return x.is_complex() if isinstance(x, torch.Tensor) else x.dtype.kind == "c"


def check_param(p: Any, fname: str, *, complex_ok: bool = False) -> Array:
    """``p``: a floating numpy array or torch tensor (complex too where ``complex_ok``);
    complex refused by a message that names ``fname`` and says what torch.optim does."""
    if isinstance(p, (np.ndarray, torch.Tensor)) and _is_complex(p):
        if complex_ok:
            return p
        raise TypeError(f"p must be real: {fname} does not support complex parameters "
                        f"(torch.optim treats each entry as a pair of reals; pass the parts "
                        f"as a real array, e.g. torch.view_as_real(p) or p.view(np.float64), "
                        f"and g likewise), got {_check.show(p)}")
    return _check.array("p", p, nonempty=False)


def check_param_grad(p: Any, g: Any, fname: str, *, complex_ok: bool = False) -> None:
    """``p`` and ``g``: arrays of one kind (numpy or torch) and the same shape; floating
    (``complex_ok``: complex too, g complex only if p is). NaN is not looked for: a
    diverging run's gradients are legitimate."""
    check_param(p, fname, complex_ok=complex_ok)
    if isinstance(g, (np.ndarray, torch.Tensor)) and _is_complex(g):
        if not (complex_ok and _is_complex(p)):
            raise TypeError(f"g must be real like p: {fname} does not support complex "
                            f"gradients of a real parameter, got {_check.show(g)}")
    else:
        _check.array("g", g, nonempty=False)
    _check.same_kind("g", g, "p", p)
    _check.same_shape("g", g, "p", p)


def check_state(state: Any, State: type, p: Array, fname: str) -> Optional[tuple]:
    """``state``: None or a ``State`` NamedTuple whose arrays are of p's kind and shape."""
    if state is None:
        return None
    if not isinstance(state, State):
        hint = ""
        if isinstance(state, tuple) and len(state) == 2 and not hasattr(state, "_fields"):
            hint = (f" -- a (p, state) pair? {fname} returns one: write "
                    f"p, state = {fname}(p, g, state, ...)")
        raise TypeError(f"state must be None or the {State.__name__} that {fname} returns "
                        f"as the second item of (p, state), got {_check.show(state)}"
                        f"{'' if hint else ' (' + type(state).__name__ + ')'}{hint}")
    for field in State._fields:
        value = getattr(state, field)
        if field == "step":
            _check.integer("state.step", value, minimum=0)
        elif field == "mu_product":
            _check.real("state.mu_product", value)
        elif value is not None:
            name = f"state.{field}"
            _check.instance(name, value, (np.ndarray, torch.Tensor), "None or an array like p")
            _check.same_kind(name, value, "p", p)
            _check.same_shape(name, value, "p", p)
    return state


def check_field(state: Optional[tuple], field: str, why: str) -> None:
    """Refuse a state that lacks the buffer a hyperparameter needs (``why`` names it)."""
    if state is not None and getattr(state, field) is None:
        raise ValueError(f"state.{field} is None but {why} needs it: build the state with "
                         f"the same flags (or pass state=None)")
