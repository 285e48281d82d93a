r"""Activation functions with their closed-form derivatives, for numpy and torch.

Each activation :math:`f` comes with its derivative :math:`f'` written out by hand
(no autograd), because the book multiplies :math:`f'(z_\ell)` over layers to show
gradients vanish or explode. Both take a numpy array *or* a torch tensor and return
the same kind and dtype; ``.module()`` gives the matching fresh ``torch.nn`` module.

At :math:`x = 0` the piecewise activations take the left branch's derivative --
:math:`f'(0) = 0` for relu, 0.01 for leaky_relu -- as torch's autograd returns. Relu,
leaky_relu, prelu and selu have a kink there (:math:`f'` jumps); elu, with
:math:`\alpha = 1`, does not: both branches give :math:`f'(0) = 1`, so :math:`f'` is
continuous and only :math:`f''` jumps (from 1 to 0). An ELU with :math:`\alpha \ne 1`
(selu is one, times :math:`\lambda`) has a kink.

Example::

    import numpy as np
    from companion import activations
    f = activations.get("sigmoid")
    f.derivative(np.array([0.0]))              # array([0.25])
    activations.derivative_bound("sigmoid")    # 0.25
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from . import _check

__all__ = ["Activation", "get", "names", "derivative_bound"]

Array = Any  # np.ndarray or torch.Tensor: every function returns the kind it was given

#: torch.nn.SELU's constants (Klambauer et al., 2017).
SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946
LEAKY_SLOPE = 0.01  # torch.nn.LeakyReLU default
PRELU_INIT = 0.25   # torch.nn.PReLU default initial slope

_SQRT1_2 = 1.0 / math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)

# The few array operations the formulas need, once for numpy and once for torch, so
# every formula below is written a single time. math.erfc is exact in float64;
# np.frompyfunc applies it elementwise (numpy has no erf of its own).
_np_erfc = np.frompyfunc(math.erfc, 1, 1)
_NUMPY = SimpleNamespace(
    exp=np.exp, expm1=np.expm1, log1p=np.log1p, tanh=np.tanh, abs=np.abs,
    where=np.where, ones=np.ones_like,
    neg_part=lambda x: np.minimum(x, 0), pos_part=lambda x: np.maximum(x, 0),
    step=lambda x: (x > 0).astype(x.dtype),
    erfc=lambda x: np.asarray(_np_erfc(x), dtype=x.dtype),
)
_TORCH = SimpleNamespace(
    exp=torch.exp, expm1=torch.expm1, log1p=torch.log1p, tanh=torch.tanh, abs=torch.abs,
    where=torch.where, ones=torch.ones_like,
    neg_part=lambda x: torch.clamp(x, max=0), pos_part=lambda x: torch.clamp(x, min=0),
    step=lambda x: (x > 0).to(x.dtype),
    erfc=torch.special.erfc,
)


# ------------------------------------------------------------------ formulas: f and f'
def _sigmoid(x, xp):
    # \sigma(x) = 1/(1+e^{-x}), evaluated with e^{-|x|} <= 1 so nothing overflows
    e = xp.exp(-xp.abs(x))
    return xp.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def _sigmoid_d(x, xp):
    s = _sigmoid(x, xp)
    return s * (1.0 - s)  # \sigma' = \sigma(1 - \sigma)


def _tanh(x, xp):
    return xp.tanh(x)


def _tanh_d(x, xp):
    t = xp.tanh(x)
    return 1.0 - t * t  # \tanh' = 1 - \tanh^2


def _relu(x, xp):
    return xp.pos_part(x)  # \max(x, 0)


def _relu_d(x, xp):
    return xp.step(x)  # 1[x > 0]


def _leaky(slope: float):
    def f(x, xp):
        return xp.where(x > 0, x, slope * x)

    def d(x, xp):
        return xp.where(x > 0, 1.0, slope * xp.ones(x))  # slope kept in x's dtype
    return f, d


def _elu(x, xp, alpha=1.0):
    # \alpha(e^x - 1) on x <= 0 with expm1 of min(x, 0): accurate near 0, no overflow
    return xp.where(x > 0, x, alpha * xp.expm1(xp.neg_part(x)))


def _elu_d(x, xp, alpha=1.0):
    return xp.where(x > 0, 1.0, alpha * xp.exp(xp.neg_part(x)))


def _selu(x, xp):
    return SELU_SCALE * _elu(x, xp, SELU_ALPHA)


def _selu_d(x, xp):
    return SELU_SCALE * _elu_d(x, xp, SELU_ALPHA)


def _Phi(x, xp):
    # \Phi(x) = \tfrac12\operatorname{erfc}(-x/\sqrt2): accurate in the far left tail too
    return 0.5 * xp.erfc(-x * _SQRT1_2)


def _gelu(x, xp):
    return x * _Phi(x, xp)


def _gelu_d(x, xp):
    return _Phi(x, xp) + x * _INV_SQRT_2PI * xp.exp(-0.5 * x * x)  # \Phi + x\varphi


def _silu(x, xp):
    return x * _sigmoid(x, xp)


def _silu_d(x, xp):
    s = _sigmoid(x, xp)
    return s * (1.0 + x * (1.0 - s))


def _softplus(x, xp):
    # \log(1+e^x) = \max(x,0) + \log(1+e^{-|x|}): stable for large |x|
    return xp.pos_part(x) + xp.log1p(xp.exp(-xp.abs(x)))


def _linear(x, xp):
    return x + 0.0  # a new array, like every other activation


def _linear_d(x, xp):
    return xp.ones(x)


# sup GELU': f'' = (2 - x^2)\varphi(x) = 0 at x = \sqrt2, so
# sup f' = \Phi(\sqrt2) + \sqrt2\varphi(\sqrt2), with \Phi(\sqrt2) = \tfrac12\operatorname{erfc}(-1)
_GELU_D_MAX = 0.5 * math.erfc(-1.0) + math.sqrt(2.0) * _INV_SQRT_2PI * math.exp(-1.0)


def _silu_derivative_max() -> float:
    r"""sup SiLU': f'' = 0 where :math:`x\tanh(x/2) = 2`; solve by fixed point."""
    x = 2.4  # the map x -> 2/tanh(x/2) contracts here (|slope| = 1/sinh^2(x/2) < 0.5)
    for _ in range(100):
        x = 2.0 / math.tanh(x / 2.0)
    s = 1.0 / (1.0 + math.exp(-x))
    return s * (1.0 + x * (1.0 - s))


# -------------------------------------------------------------------------- the object
@dataclass(frozen=True)
class Activation:
    r"""One activation: ``forward`` is :math:`f`, ``derivative`` is :math:`f'`.

    ``derivative_bound`` is :math:`\sup_x |f'(x)|` and ``saturates`` says where
    :math:`f' \to 0` (``"both"``, ``"left"`` or ``"none"``).
    """

    name: str
    formula: str
    description: str
    saturates: str
    derivative_bound: float
    _f: Callable = field(repr=False)
    _d: Callable = field(repr=False)
    _module: Callable[[], nn.Module] = field(repr=False)

    def forward(self, x: Array) -> Array:
        """:math:`f(x)` elementwise; numpy in, numpy out; tensor in, tensor out.

        ``x``: a numpy array or torch tensor of any shape (a number or a list of numbers
        is taken as a numpy array); an integer one is promoted to float (float64 for
        numpy, torch's default dtype for a tensor). NaN in gives NaN out, as in torch.

        Raises:
            TypeError: ``x`` is not numeric (None, a str, an object array), or is complex
                or boolean.
        """
        return _apply(self._f, x)

    def derivative(self, x: Array) -> Array:
        """:math:`f'(x)` elementwise, in closed form (no autograd); ``x`` and errors as in
        :meth:`forward`."""
        return _apply(self._d, x)

    __call__ = forward

    def module(self) -> nn.Module:
        """A fresh ``torch.nn`` module computing the same function."""
        return self._module()


_REAL = "a real (float or int) numpy array or torch tensor"


def _apply(fn: Callable, x: Array) -> Array:
    """Run one formula with the numpy or torch operations; keep the input's dtype."""
    if isinstance(x, torch.Tensor):
        if x.is_complex() or x.dtype == torch.bool:
            raise TypeError(f"x must be {_REAL}, got {_check.show(x)}")
        if not (x.is_floating_point()):
            x = x.to(torch.get_default_dtype())
        return fn(x, _TORCH).to(x.dtype)
    if x is None or isinstance(x, (str, bytes, bool, np.bool_)):
        raise TypeError(f"x must be {_REAL}, got {_check.show(x)} ({type(x).__name__})")
    try:
        a = np.asarray(x)
    except (ValueError, TypeError) as exc:  # a ragged list, a mix of arrays and numbers
        raise TypeError(f"x must be {_REAL}, got {_check.show(x)} "
                        f"({type(x).__name__}, not an array: {exc})") from None
    if a.dtype.kind in "iu":
        a = a.astype(np.float64)
    elif a.dtype.kind != "f":
        raise TypeError(f"x must be {_REAL}, got {_check.show(x)}"
                        + ("" if isinstance(x, np.ndarray) else f" ({type(x).__name__})"))
    return np.asarray(fn(a, _NUMPY), dtype=a.dtype)


_leaky_f, _leaky_d = _leaky(LEAKY_SLOPE)
_prelu_f, _prelu_d = _leaky(PRELU_INIT)

_ACTIVATIONS: dict[str, Activation] = {a.name: a for a in (
    Activation("sigmoid", r"\sigma(x) = 1/(1+e^{-x}),\quad \sigma' = \sigma(1-\sigma)",
               "saturates at both ends; f' <= 1/4, so deep stacks vanish", "both", 0.25,
               _sigmoid, _sigmoid_d, nn.Sigmoid),
    Activation("tanh", r"\tanh x,\quad \tanh' = 1-\tanh^2",
               "zero-centred, saturates at both ends; f'(0) = 1", "both", 1.0,
               _tanh, _tanh_d, nn.Tanh),
    Activation("relu", r"\max(x,0),\quad f' = \mathbb 1[x>0]",
               "no saturation for x > 0; f' = 0 for x < 0, so a unit whose input "
               "is always negative is dead",
               "left", 1.0, _relu, _relu_d, nn.ReLU),
    Activation("leaky_relu", r"x\ (x>0),\ 0.01x\ (x\le0);\quad f' = 1\ \text{or}\ 0.01",
               "relu with a small slope 0.01 for x < 0, so no unit is fully dead",
               "none", 1.0, _leaky_f, _leaky_d, lambda: nn.LeakyReLU(LEAKY_SLOPE)),
    Activation("prelu", r"x\ (x>0),\ a x\ (x\le0),\ a_0 = 0.25;\quad f' = 1\ \text{or}\ a",
               "leaky relu with a learnable slope a (forward/derivative use a = 0.25, "
               "the module's initial value)", "none", 1.0, _prelu_f, _prelu_d, nn.PReLU),
    Activation("elu", r"x\ (x>0),\ e^x-1\ (x\le0);\quad f' = 1\ \text{or}\ e^x",
               "smooth for x < 0, saturates to -1 on the left; no kink at 0 (alpha = 1: "
               "f' is continuous, f'' jumps from 1 to 0)", "left", 1.0,
               _elu, _elu_d, nn.ELU),
    Activation("selu", r"\lambda x\ (x>0),\ \lambda\alpha(e^x-1)\ (x\le0)",
               "scaled elu, self-normalising with lecun_normal init; f' up to "
               "lambda*alpha ~ 1.758 just left of 0", "left", SELU_SCALE * SELU_ALPHA,
               _selu, _selu_d, nn.SELU),
    Activation("gelu", r"x\Phi(x),\quad f' = \Phi(x) + x\varphi(x)",
               "smooth relu (exact erf form); f' peaks at 1.129 at x = sqrt 2",
               "left", _GELU_D_MAX, _gelu, _gelu_d, nn.GELU),
    Activation("silu", r"x\sigma(x),\quad f' = \sigma(x)\,(1 + x(1-\sigma(x)))",
               "smooth relu (swish); f' peaks at 1.0998 at x = 2.3994", "left",
               _silu_derivative_max(), _silu, _silu_d, nn.SiLU),
    Activation("softplus", r"\log(1+e^x),\quad f' = \sigma(x)",
               "smooth relu, saturates on the left; f' < 1 everywhere", "left", 1.0,
               _softplus, _sigmoid, nn.Softplus),
    Activation("linear", r"x,\quad f' = 1",
               "identity, for deep linear nets: the depth problem without saturation",
               "none", 1.0, _linear, _linear_d, nn.Identity),
)}


# ------------------------------------------------------------------------ public lookup
def names() -> list[str]:
    """All valid activation names, in the book's order."""
    return list(_ACTIVATIONS)


def get(name: str) -> Activation:
    r"""The :class:`Activation` called ``name``. Each entry: :math:`f`, :math:`f'`;
    :math:`\sup_x|f'(x)|`.

    * ``sigmoid``: :math:`\sigma(x)=1/(1+e^{-x})`, :math:`\sigma'=\sigma(1-\sigma)`;
      :math:`\sup|f'| = 1/4`
    * ``tanh``: :math:`\tanh x`, :math:`1-\tanh^2 x`; 1
    * ``relu``: :math:`\max(x,0)`, :math:`\mathbb 1[x>0]`; 1
    * ``leaky_relu``: :math:`\max(x, 0.01x)`, 1 or 0.01; 1
    * ``prelu``: :math:`\max(x, ax)`, 1 or :math:`a` (:math:`a_0=0.25`, learnable); 1
    * ``elu``: :math:`x` or :math:`e^x-1`, 1 or :math:`e^x`; 1
    * ``selu``: :math:`\lambda x` or :math:`\lambda\alpha(e^x-1)`, :math:`\lambda` or
      :math:`\lambda\alpha e^x`; :math:`\lambda\alpha \approx 1.758`
    * ``gelu``: :math:`x\Phi(x)`, :math:`\Phi(x)+x\varphi(x)`; 1.1289 at :math:`\sqrt2`
    * ``silu``: :math:`x\sigma(x)`, :math:`\sigma(x)(1+x(1-\sigma(x)))`; 1.0998
    * ``softplus``: :math:`\log(1+e^x)`, :math:`\sigma(x)`; 1
    * ``linear``: :math:`x`, 1; 1

    Note: softplus is evaluated exactly, while ``nn.Softplus`` returns :math:`x` for
    :math:`x > 20`; the two differ by less than :math:`e^{-20} \approx 2\times10^{-9}`.

    Raises:
        TypeError: ``name`` is not a str.
        ValueError: ``name`` is not one of :func:`names` (the message lists them).
    """
    _check.string("activation name", name)
    return _ACTIVATIONS[_check.choice("activation name", name, _ACTIVATIONS)]


def derivative_bound(name: str) -> float:
    r""":math:`\sup_x |f'(x)|`, the largest factor one layer's :math:`f'` can contribute.

    Over :math:`L` layers the product :math:`\prod_\ell |f'(z_\ell)|` is at most
    ``derivative_bound(name) ** L`` -- for sigmoid :math:`4^{-L}`. For prelu the value
    is for the initial slope 0.25; for softplus and selu it is a supremum approached
    (as :math:`x\to\infty`, :math:`x\to0^-`) rather than attained.

    Raises:
        TypeError: ``name`` is not a str.
        ValueError: ``name`` is not one of :func:`names`.
    """
    return get(name).derivative_bound
