"""Building blocks shared by the optimizers: EMAs, bias correction, decoupled decay, checks."""
from __future__ import annotations

import numbers
from typing import Any, Union

import numpy as np
import torch

__all__ = ["ema", "bias_corrected", "decoupled_weight_decay"]

Array = Union[np.ndarray, torch.Tensor]


def xp(x: Any):
    """The array namespace of ``x``: ``torch`` for tensors, ``numpy`` otherwise."""
    return torch if isinstance(x, torch.Tensor) else np


def ema(prev: Array, x: Array, beta: float) -> Array:
    r"""Exponential moving average: :math:`\beta\,\text{prev} + (1-\beta)\,x`.

    Started from ``prev = 0`` it is biased towards 0 by the factor :math:`1-\beta^t` after
    t updates (see :func:`bias_corrected`); ``1 / (1 - beta)`` is its effective window.

    >>> avg = 0.0
    >>> for x in [1.0, 1.0, 1.0]:
    ...     avg = ema(avg, x, 0.9)
    >>> round(avg, 3), round(bias_corrected(avg, 0.9, 3), 3)
    (0.271, 1.0)
    """
    return beta * prev + (1 - beta) * x


def bias_corrected(avg: Array, beta: float, t: int) -> Array:
    r"""Undo the zero start of an EMA after ``t`` >= 1 updates: :math:`\text{avg} / (1-\beta^t)`.

    For a constant input x, ``ema`` started at 0 equals :math:`(1-\beta^t)\,x`; dividing
    gives x back exactly (Kingma & Ba, 2015, section 3).
    """
    if isinstance(t, bool) or not isinstance(t, numbers.Integral) or t < 1:
        raise ValueError(f"t must be an int >= 1 (the number of EMA updates), got {t!r}")
    return avg / (1 - beta ** t)


def decoupled_weight_decay(p: Array, *, lr: float, weight_decay: float) -> Array:
    r"""Shrink the weights directly, outside the gradient: :math:`(1 - \eta\lambda)\,p`.

    Loshchilov & Hutter (2019): for adaptive methods this is not the same as adding
    :math:`\lambda p` to g, whose effect Adam would divide by :math:`\sqrt{\hat v}`.
    """
    return p * (1 - lr * weight_decay) if weight_decay != 0 else p


# ------------------------------------------------------------------------------ checks
_NON_NEGATIVE = ("lr", "eps", "weight_decay", "momentum", "lr_decay",
                 "initial_accumulator_value", "momentum_decay")
_UNIT = ("alpha",)
_FLAGS = ("nesterov", "amsgrad", "centered", "maximize", "bias_correction",
          "decoupled_weight_decay")


def _real(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {value!r} ({type(value).__name__})")
    return value


def check_hyper(**hyper: Any) -> None:
    """Raise ValueError/TypeError naming the first invalid hyperparameter and its value.

    Rules (torch.optim's, with messages that name the argument): lr, eps, weight_decay,
    momentum, lr_decay, initial_accumulator_value, momentum_decay >= 0 (lr = 0 allowed);
    alpha and each of betas in [0, 1); flags are bools; nesterov needs momentum > 0 and
    dampening = 0.
    """
    for name, value in hyper.items():
        if name == "betas":
            if not isinstance(value, (tuple, list)) or len(value) != 2:
                raise TypeError(f"betas must be a pair (beta1, beta2), got {value!r}")
            for i, beta in enumerate(value):
                if not 0.0 <= _real(f"betas[{i}]", beta) < 1.0:
                    raise ValueError(f"betas[{i}] must be in [0, 1), got {beta}")
        elif name in _FLAGS:
            if not isinstance(value, bool):
                raise TypeError(f"{name} must be True or False, got {value!r}")
        elif name in _UNIT:
            if not 0.0 <= _real(name, value) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {value}")
        elif name in _NON_NEGATIVE:
            if not _real(name, value) >= 0.0:  # also rejects NaN
                raise ValueError(f"{name} must be non-negative, got {value}")
        else:
            _real(name, value)
    if hyper.get("nesterov") and (hyper.get("momentum", 0) <= 0 or hyper.get("dampening", 0) != 0):
        raise ValueError("Nesterov momentum requires a momentum and zero dampening: nesterov=True "
                         f"needs momentum > 0 and dampening = 0, got momentum="
                         f"{hyper.get('momentum', 0)}, dampening={hyper.get('dampening', 0)}")
