r"""Reduced precision: the formats, what they lose, and the remedies (the precision chapter).

A binary floating-point format with :math:`e` exponent bits and :math:`m` mantissa bits
stores :math:`x = \pm 1.f \times 2^{E}` with :math:`E` between :math:`1 - b` and
:math:`b`, where :math:`b = 2^{e-1} - 1` is the exponent bias, and below :math:`2^{1-b}`
the *subnormal* numbers :math:`\pm 0.f \times 2^{1-b}`. Everything about its range and
spacing follows from :math:`(e, m)`:

.. math::

    \epsilon = 2^{-m}, \qquad x_{\min,\text{sub}} = 2^{1-b-m}, \qquad
    x_{\min} = 2^{1-b}, \qquad x_{\max} = (2 - 2^{-m})\, 2^{b},

and the spacing of the numbers next to :math:`|x|` is :math:`2^{\lfloor\log_2|x|\rfloor - m}`
(:math:`2^{1-b-m}` in the subnormal range). Rounding to the nearest number (ties to the
even one) then loses a value in three ways, the book's two problems one level down:

* **underflow** -- :math:`|x| \le x_{\min,\text{sub}}/2` becomes 0 (a vanishing gradient,
  literally); :func:`lost_fraction`. Just above, a *subnormal* keeps fewer significant
  bits; :func:`subnormal_fraction`.
* **overflow** -- :math:`|x| \ge 2^{b}(2 - 2^{-m-1})`, half a spacing above
  :math:`x_{\max}`, becomes :math:`\pm\infty` (an exploding activation, literally);
  :func:`overflow_fraction`.
* **rounding away** -- an update :math:`u` added to a weight :math:`w` is lost when
  :math:`\mathrm{fl}(w + u) = w`: when :math:`|u|` is below half the spacing at :math:`w`;
  :func:`rounded_away_fraction`.

The remedies, each a small class with torch's interface:

* :class:`GradScaler` -- dynamic loss scaling, written from scratch with
  ``torch.amp.GradScaler``'s arguments and methods, and the same decisions step for step;
* :class:`MasterWeights` -- float32 copies of a low-precision model's weights, stepped by
  the optimizer and rounded back after each step;
* :func:`stochastic_round` and :class:`StochasticRounding` -- no float32 copy kept: round
  each updated weight up or down at random, with the probabilities that make the expected
  value exact.

Example::

    import torch
    from companion import precision
    precision.format_facts(torch.float16).largest          # 65504.0
    g = torch.full((1000,), 1e-8)                          # small gradients
    precision.lost_fraction(g, torch.float16)              # 1.0: all flushed to zero
    precision.lost_fraction(g, torch.float16, scale=2.0 ** 16)   # 0.0 with a loss scale
"""
from __future__ import annotations

import math
import weakref
from typing import Any, Iterable, NamedTuple, Optional, Union

import numpy as np
import torch
from torch import Tensor

from . import _check

__all__ = ["FORMATS", "Format", "format_facts", "spacing", "lost_fraction",
           "subnormal_fraction", "overflow_fraction", "rounded_away_fraction", "GradScaler",
           "MasterWeights", "stochastic_round", "StochasticRounding"]

#: the formats of the chapter, widest first
FORMATS = ("float32", "float16", "bfloat16")

#: (exponent bits, mantissa bits) of each format: the definition of the format (IEEE 754
#: binary64, binary32, binary16; bfloat16 is binary32 with its mantissa cut to 7 bits)
_BITS = {"float64": (11, 52), "float32": (8, 23), "float16": (5, 10), "bfloat16": (8, 7)}
_DTYPES = {"float64": torch.float64, "float32": torch.float32, "float16": torch.float16,
           "bfloat16": torch.bfloat16}
_NAMES = {d: n for n, d in _DTYPES.items()}
_LOW = (torch.float16, torch.bfloat16)


class Format(NamedTuple):
    """The facts of one floating-point format, computed from its bits by
    :func:`format_facts`."""

    name: str
    bits: int
    exponent_bits: int
    mantissa_bits: int
    bias: int
    smallest_subnormal: float
    smallest_normal: float
    largest: float
    eps: float               # the spacing of the numbers just above 1


# ----------------------------------------------------------------------------- the formats
def _dtype(name: str, dtype: Any) -> torch.dtype:
    """A torch dtype among the formats, given as a dtype or its name."""
    if isinstance(dtype, str) and dtype.removeprefix("torch.") in _DTYPES:
        return _DTYPES[dtype.removeprefix("torch.")]
    if isinstance(dtype, torch.dtype) and dtype in _NAMES:
        return dtype
    raise (ValueError if isinstance(dtype, (str, torch.dtype)) else TypeError)(
        f"{name} must be one of torch.float64, torch.float32, torch.float16, "
        f"torch.bfloat16 (or its name), got {_check.show(dtype)}")


def format_facts(dtype: Any) -> Format:
    r"""The range and spacing of a format, computed from its exponent and mantissa bits.

    With :math:`e` exponent bits, :math:`m` mantissa bits and bias :math:`b = 2^{e-1}-1`:
    smallest subnormal :math:`2^{1-b-m}`, smallest normal :math:`2^{1-b}`, largest finite
    :math:`(2 - 2^{-m})\,2^{b}`, spacing at 1 :math:`\epsilon = 2^{-m}`.

    Args:
        dtype: ``torch.float64``, ``torch.float32``, ``torch.float16`` or
            ``torch.bfloat16``, or its name (``"bfloat16"``).

    >>> format_facts("float16").largest, format_facts("bfloat16").eps
    (65504.0, 0.0078125)

    Raises:
        TypeError: ``dtype`` neither a torch dtype nor a string.
        ValueError: another dtype or name.
    """
    dtype = _dtype("dtype", dtype)
    name = _NAMES[dtype]
    e, m = _BITS[name]
    bias = 2 ** (e - 1) - 1
    return Format(name=name, bits=1 + e + m, exponent_bits=e, mantissa_bits=m, bias=bias,
                  smallest_subnormal=2.0 ** (1 - bias - m), smallest_normal=2.0 ** (1 - bias),
                  largest=(2 - 2.0 ** -m) * 2.0 ** bias, eps=2.0 ** -m)


def _values(name: str, x: Any) -> Tensor:
    """``x`` (a float tensor or array, possibly empty) as a float64 tensor."""
    x = _check.array(name, x, nonempty=False)
    return torch.as_tensor(x).detach().to(torch.float64)


def spacing(x: Any, dtype: Any) -> Tensor:
    r"""The gap between :math:`|x|`, rounded to ``dtype``, and the next number of the format
    away from zero: :math:`2^{\lfloor\log_2|x|\rfloor - m}` for a normal number,
    :math:`2^{1-b-m}` in the subnormal range (and at 0). A float64 tensor of ``x``'s shape;
    NaN where ``x`` is infinite or NaN or rounds to infinity (as ``numpy.spacing``). At the
    largest finite number it is the spacing of the top binade, :math:`2^{b-m}`.

    >>> spacing(torch.tensor([1.0, 1000.0]), torch.float16).tolist()
    [0.0009765625, 0.5]

    Raises:
        TypeError: ``x`` not a real floating tensor or array; ``dtype`` as :func:`format_facts`.
        ValueError: ``dtype`` another format.
    """
    f = format_facts(dtype)
    a = _values("x", x).abs().to(_DTYPES[f.name]).to(torch.float64)   # |x| in the format
    exponent = torch.frexp(a).exponent.to(torch.float64) - 1          # floor(log2 |x|)
    exponent = torch.where(a < f.smallest_normal, 1.0 - f.bias, exponent)   # subnormals, 0
    gap = torch.exp2(exponent - f.mantissa_bits)
    return torch.where(torch.isfinite(a), gap, math.nan)          # as numpy.spacing(inf)


def _fraction(hits: Tensor, among: Tensor) -> float:
    """The fraction of the values ``among`` that are ``hits`` (0.0 when there are none)."""
    n = int(among.sum())
    return int((hits & among).sum()) / n if n else 0.0


def _scaled(x: Any, scale: Any) -> Tensor:
    scale = _check.positive("scale", scale)
    return _values("x", x) * scale


def lost_fraction(x: Any, dtype: Any, *, scale: float = 1.0) -> float:
    r"""The fraction of the nonzero finite values of ``scale * x`` that round to 0 in
    ``dtype`` (underflow): :math:`|s x| \le x_{\min,\text{sub}}/2`.

    Args:
        x: a floating tensor or numpy array (gradients, activations), any shape, possibly
            empty (the fraction of nothing is 0.0).
        dtype: the format, as :func:`format_facts`.
        scale: the loss scale :math:`s > 0` the values are multiplied by first.

    >>> lost_fraction(torch.tensor([1e-8, 1e-3, 0.0]), torch.float16)   # the 0 not counted
    0.5

    Raises:
        TypeError: ``x`` not a real floating tensor or array; ``scale`` not a real number;
            ``dtype`` as :func:`format_facts`.
        ValueError: ``scale`` not positive and finite; ``dtype`` another format.
    """
    f = format_facts(dtype)
    v = _scaled(x, scale)
    among = torch.isfinite(v) & (v != 0)
    return _fraction(v.abs() <= f.smallest_subnormal / 2, among)


def subnormal_fraction(x: Any, dtype: Any, *, scale: float = 1.0) -> float:
    r"""The fraction of the nonzero finite values of ``scale * x`` that round to a nonzero
    subnormal number of ``dtype`` (fewer significant bits than the format's ``m + 1``):
    :math:`x_{\min,\text{sub}}/2 < |s x| < x_{\min} - x_{\min,\text{sub}}/2`.

    Arguments and errors as :func:`lost_fraction`.

    >>> subnormal_fraction(torch.tensor([1e-6, 1.0]), torch.float16)
    0.5
    """
    f = format_facts(dtype)
    v = _scaled(x, scale).abs()
    among = torch.isfinite(v) & (v != 0)
    hits = (v > f.smallest_subnormal / 2) & (v < f.smallest_normal - f.smallest_subnormal / 2)
    return _fraction(hits, among)


def overflow_fraction(x: Any, dtype: Any, *, scale: float = 1.0) -> float:
    r"""The fraction of the nonzero finite values of ``scale * x`` that round to :math:`\pm\infty`
    in ``dtype`` (overflow): :math:`|s x| \ge 2^{b}(2 - 2^{-m-1})`, half a spacing above
    the largest finite number (the tie rounds to the even neighbour, infinity).

    Arguments and errors as :func:`lost_fraction`; values of ``x`` that are already
    infinite or NaN are not counted.

    >>> overflow_fraction(torch.tensor([7e4, 6e4]), torch.float16)
    0.5
    """
    f = format_facts(dtype)
    x = _values("x", x)
    v = _scaled(x, scale).abs()
    among = torch.isfinite(x) & (x != 0)
    return _fraction(v >= 2.0 ** f.bias * (2 - 2.0 ** -(f.mantissa_bits + 1)), among)


def rounded_away_fraction(update: Any, weight: Any, dtype: Any) -> float:
    r"""The fraction of the nonzero finite entries of ``update`` that are lost when added to
    ``weight`` in ``dtype``: :math:`\mathrm{fl}(w + u) = w`, which happens when :math:`|u|`
    is below half the gap between :math:`w` and its neighbour on :math:`u`'s side (at
    exactly half, ties go to the even neighbour: lost when :math:`w`'s last bit is even).

    Args:
        update: the step :math:`u` (e.g. ``w_after - w_before`` computed in float32, or
            ``-lr * g``), a floating tensor or array.
        weight: the weights :math:`w` it is added to, broadcastable to ``update``'s
            shape; rounded to ``dtype`` first.
        dtype: the format the weights are stored in, as :func:`format_facts`.

    >>> w = torch.ones(2)
    >>> rounded_away_fraction(torch.tensor([1e-3, 1e-2]), w, torch.bfloat16)   # 2^-8 ~ 0.0039
    0.5

    Raises:
        TypeError: ``update`` or ``weight`` not a real floating tensor or array; ``dtype``
            as :func:`format_facts`.
        ValueError: shapes that do not broadcast; ``dtype`` another format.
    """
    low = _dtype("dtype", dtype)
    u, w = _values("update", update), _values("weight", weight)
    try:
        w = w.expand(u.shape)
    except RuntimeError:
        raise ValueError(f"weight of shape {tuple(w.shape)} does not broadcast to update's "
                         f"shape {tuple(u.shape)}") from None
    w_low = w.to(low)
    toward = torch.where(u > 0, math.inf, -math.inf).to(low)
    gap = (torch.nextafter(w_low, toward).to(torch.float64) - w_low.to(torch.float64)).abs()
    bits = {torch.float64: torch.int64, torch.float32: torch.int32}.get(low, torch.int16)
    even = (w_low.contiguous().view(bits) & 1) == 0
    lost = (u.abs() < gap / 2) | ((u.abs() == gap / 2) & even)
    return _fraction(lost, torch.isfinite(u) & (u != 0) & torch.isfinite(w))


# ----------------------------------------------------------------------- dynamic scaling
def _float32(value: float) -> float:
    """``value`` rounded to float32, as a Python float (torch keeps the scale in float32);
    ``inf`` past float32's range."""
    with np.errstate(over="ignore"):
        return float(np.float32(value))


class GradScaler:
    r"""Dynamic loss scaling (Micikevicius et al. 2018), written from scratch with
    ``torch.amp.GradScaler``'s arguments, defaults and methods, and its decisions.

    Each iteration: ``scale(loss)`` multiplies the loss by :math:`S` before ``backward()``,
    so gradients that would underflow float16 are :math:`S` times larger;
    ``unscale_(optimizer)`` divides the gradients by :math:`S` and records whether any is
    inf or NaN; ``step(optimizer)`` unscales (if you have not) and calls
    ``optimizer.step()`` only if none was; ``update()`` sets the next scale:

    .. math::

        S \leftarrow \begin{cases} \beta_{\downarrow} S & \text{after a step with inf/NaN
        (skipped)} \\ \beta_{\uparrow} S & \text{after } N \text{ good steps in a row}
        \\ S & \text{otherwise} \end{cases}

    with :math:`\beta_{\downarrow}` = ``backoff_factor``, :math:`\beta_{\uparrow}` =
    ``growth_factor``, :math:`N` = ``growth_interval``. The scale is a float32 number, as
    in torch, and a growth that would overflow float32 is not made.

    To clip, call ``unscale_(optimizer)`` first, then clip ``p.grad`` (which then holds
    the true gradient), then ``step``: clipping before ``unscale_`` compares the threshold
    with :math:`S` times the norm.

    Args:
        device: accepted for torch's signature (``"cpu"``, ``"cuda"``); the scale lives
            on the device of the first tensor passed to :meth:`scale`.
        init_scale: the first scale, :math:`2^{16}`.
        growth_factor: :math:`\beta_{\uparrow} > 1`.
        backoff_factor: :math:`0 < \beta_{\downarrow} < 1`.
        growth_interval: :math:`N \ge 1`.
        enabled: ``False`` makes every method a pass-through (``get_scale()`` is 1.0).

    Attributes:
        found_inf: whether the gradients of the current (or, after :meth:`update`, the
            last) iteration held an inf or NaN, so that its step was skipped.

    Differences from torch: bad constructor arguments raise ``TypeError``/``ValueError``
    naming the argument (torch asserts); ``unscale_`` twice, ``unscale_`` after ``step``,
    ``step`` twice and a closure raise ``RuntimeError`` with torch's messages, and
    ``update`` with no step, or any call before :meth:`scale`, raise ``RuntimeError``
    where torch raises ``AssertionError``; an optimizer's own amp-aware ``step`` (fused
    optimizers) is not special-cased: its gradients are unscaled here like any other;
    :meth:`scale` takes a tensor or (nested) lists and tuples of tensors, not other
    iterables.

    Raises:
        TypeError: ``init_scale``, ``growth_factor``, ``backoff_factor`` not real numbers;
            ``growth_interval`` not an int; ``enabled`` not a bool; ``device`` not a str
            or torch.device.
        ValueError: ``init_scale`` not positive and finite; ``growth_factor <= 1``;
            ``backoff_factor`` outside (0, 1); ``growth_interval < 1``.
    """

    def __init__(self, device: Union[str, torch.device] = "cpu", init_scale: float = 2.0 ** 16,
                 growth_factor: float = 2.0, backoff_factor: float = 0.5,
                 growth_interval: int = 2000, enabled: bool = True) -> None:
        _check.instance("device", device, (str, torch.device), "a str or torch.device")
        self._enabled = _check.flag("enabled", enabled)
        self._init_scale = _check.positive("init_scale", init_scale)
        self._growth_factor = _check.real("growth_factor", growth_factor, low=1.0, low_open=True)
        self._backoff_factor = _check.real("backoff_factor", backoff_factor, low=0.0, high=1.0,
                                           low_open=True, high_open=True)
        self._growth_interval = _check.integer("growth_interval", growth_interval, minimum=1)
        self._scale: Optional[float] = None       # set at the first scale(), as in torch
        self._tracker = 0                         # good steps in a row since the last change
        self._optimizers: dict[int, dict] = {}    # id -> {"stage": ..., "found_inf": bool}
        self.found_inf = False

    # -- the iteration --------------------------------------------------------------------
    def scale(self, outputs: Any) -> Any:
        """``outputs * S``: a tensor, or a list or tuple of tensors (nested), each times the
        scale (a float32 number, so a float16 output stays float16).

        Raises:
            TypeError: ``outputs`` neither a tensor nor a list or tuple of them.
        """
        if not self._enabled:
            return outputs
        if isinstance(outputs, Tensor):
            if self._scale is None:
                self._scale = _float32(self._init_scale)
            return outputs * torch.tensor(self._scale, dtype=torch.float32, device=outputs.device)
        if isinstance(outputs, (list, tuple)):
            return type(outputs)(self.scale(o) for o in outputs)
        raise _check._type_error("outputs", "a tensor or a list or tuple of tensors", outputs)

    def _state(self, optimizer: Any) -> dict:
        _check.instance("optimizer", optimizer, torch.optim.Optimizer, "a torch.optim optimizer")
        return self._optimizers.setdefault(id(optimizer), {"stage": "ready", "found_inf": False})

    def _started(self, what: str) -> None:
        if self._scale is None:
            raise RuntimeError(f"{what} before scale(): call scaler.scale(loss).backward() "
                               f"first in each iteration")

    def unscale_(self, optimizer: torch.optim.Optimizer) -> None:
        r"""Divide ``optimizer``'s gradients by the scale, in place (multiply by
        :math:`1/S` rounded to float32, as torch does), and record whether any is inf or NaN.

        At most once per optimizer and iteration; :meth:`step` calls it if you did not.
        Gradients in float16 are refused, as torch refuses them: keep float32 master
        weights (:class:`MasterWeights`) or train a float32 model under autocast.

        Raises:
            TypeError: ``optimizer`` not a ``torch.optim.Optimizer``.
            ValueError: a float16 gradient.
            RuntimeError: called twice in one iteration, after :meth:`step`, or before
                :meth:`scale`.
        """
        if not self._enabled:
            return
        state = self._state(optimizer)
        self._started("unscale_()")
        if state["stage"] == "unscaled":
            raise RuntimeError("unscale_() has already been called on this optimizer since "
                               "the last update().")
        if state["stage"] == "stepped":
            raise RuntimeError("unscale_() is being called after step().")
        inv_scale = _float32(1.0 / self._scale)
        found = False
        with torch.no_grad():
            for group in optimizer.param_groups:
                for p in group["params"]:
                    if p.grad is None:
                        continue
                    if p.grad.dtype == torch.float16:
                        raise ValueError("Attempting to unscale FP16 gradients: keep float32 "
                                         "master weights (companion.precision.MasterWeights) "
                                         "and step those, or train a float32 model under "
                                         "torch.autocast")
                    values = p.grad._values() if p.grad.is_sparse else p.grad
                    found = found or not bool(torch.isfinite(values).all())
                    if inv_scale != 1.0:
                        values.mul_(inv_scale)
        state["found_inf"] = found
        state["stage"] = "unscaled"

    def step(self, optimizer: torch.optim.Optimizer, *args: Any, **kwargs: Any) -> Any:
        """Unscale ``optimizer``'s gradients (unless :meth:`unscale_` did) and call
        ``optimizer.step(*args, **kwargs)`` unless they hold an inf or NaN; returns what it
        returns, or ``None`` for a skipped step.

        Raises:
            TypeError: ``optimizer`` not a ``torch.optim.Optimizer``.
            RuntimeError: a ``closure`` (not supported, as in torch); called twice in one
                iteration; before :meth:`scale`.
        """
        if not self._enabled:
            return optimizer.step(*args, **kwargs)
        if "closure" in kwargs:
            raise RuntimeError("Closure use is not currently supported if GradScaler is "
                               "enabled.")
        state = self._state(optimizer)
        self._started("step()")
        if state["stage"] == "stepped":
            raise RuntimeError("step() has already been called since the last update().")
        if state["stage"] == "ready":
            self.unscale_(optimizer)
        result = None if state["found_inf"] else optimizer.step(*args, **kwargs)
        state["stage"] = "stepped"
        self.found_inf = any(s["found_inf"] for s in self._optimizers.values())
        return result

    def update(self, new_scale: Any = None) -> None:
        """Set the next iteration's scale: ``backoff_factor`` times it if any optimizer's
        step was skipped this iteration, ``growth_factor`` times it after
        ``growth_interval`` good iterations in a row (if that stays finite in float32), or
        ``new_scale`` when given (a number or a one-element tensor).

        Raises:
            TypeError: ``new_scale`` neither None, a real number nor a one-element tensor.
            ValueError: ``new_scale`` not positive and finite.
            RuntimeError: before :meth:`scale`, or with no :meth:`unscale_`/:meth:`step`
                this iteration.
        """
        if not self._enabled:
            return
        if new_scale is not None:
            new_scale = _check.positive("new_scale", new_scale, scalar_tensor=True)
        self._started("update()")
        if new_scale is not None:
            self._scale = _float32(new_scale)
        else:
            checked = [s for s in self._optimizers.values() if s["stage"] != "ready"]
            if not checked:
                raise RuntimeError("No inf checks were recorded prior to update(): call "
                                   "scaler.step(optimizer) (or unscale_) first")
            self.found_inf = any(s["found_inf"] for s in checked)
            if self.found_inf:
                self._scale = _float32(self._scale * self._backoff_factor)
                self._tracker = 0
            elif self._tracker + 1 == self._growth_interval:
                grown = _float32(self._scale * self._growth_factor)
                if math.isfinite(grown):
                    self._scale = grown
                self._tracker = 0
            else:
                self._tracker += 1
        self._optimizers = {}

    # -- reading and saving -------------------------------------------------------------
    def get_scale(self) -> float:
        """The current scale (``init_scale`` before the first :meth:`scale`; 1.0 when
        disabled)."""
        if not self._enabled:
            return 1.0
        return self._init_scale if self._scale is None else self._scale

    def is_enabled(self) -> bool:
        """Whether scaling is on."""
        return self._enabled

    def state_dict(self) -> dict:
        """torch's keys: ``scale``, ``growth_factor``, ``backoff_factor``,
        ``growth_interval``, ``_growth_tracker`` (empty when disabled)."""
        if not self._enabled:
            return {}
        return {"scale": self.get_scale(), "growth_factor": self._growth_factor,
                "backoff_factor": self._backoff_factor,
                "growth_interval": self._growth_interval, "_growth_tracker": self._tracker}

    def load_state_dict(self, state_dict: dict) -> None:
        """Continue from a :meth:`state_dict` (this class's or ``torch.amp.GradScaler``'s).

        Raises:
            TypeError: ``state_dict`` not a dict, or a value of the wrong type.
            ValueError: a key missing, or a value out of range.
            RuntimeError: an empty dict (saved from a disabled scaler), as torch.
        """
        if not self._enabled:
            return
        _check.mapping("state_dict", state_dict, nonempty=False)
        if not state_dict:
            raise RuntimeError("The source state dict is empty, possibly because it was "
                               "saved from a disabled instance of GradScaler.")
        keys = ("scale", "growth_factor", "backoff_factor", "growth_interval", "_growth_tracker")
        missing = [k for k in keys if k not in state_dict]
        if missing:
            raise ValueError(f"state_dict must have the keys {list(keys)}, missing {missing}")
        scale = _check.positive("state_dict['scale']", state_dict["scale"])
        self._growth_factor = _check.real("state_dict['growth_factor']",
                                          state_dict["growth_factor"], low=1.0, low_open=True)
        self._backoff_factor = _check.real("state_dict['backoff_factor']",
                                           state_dict["backoff_factor"], low=0.0, high=1.0,
                                           low_open=True, high_open=True)
        self._growth_interval = _check.integer("state_dict['growth_interval']",
                                               state_dict["growth_interval"], minimum=1)
        self._tracker = _check.integer("state_dict['_growth_tracker']",
                                       state_dict["_growth_tracker"], minimum=0)
        self._init_scale = scale
        if self._scale is not None:
            self._scale = _float32(scale)


# ---------------------------------------------------------------------- master weights
def _low_precision_params(params: Any) -> list[Tensor]:
    """The floating tensors of ``params`` (an iterable of tensors, e.g. model.parameters())."""
    if isinstance(params, Tensor) or not isinstance(params, Iterable):
        raise _check._type_error("params", "an iterable of tensors (model.parameters())", params)
    params = list(params)
    if not params:
        raise ValueError("params must not be empty")
    for i, p in enumerate(params):
        if not isinstance(p, Tensor) or p.dtype not in (torch.float32, torch.float16,
                                                        torch.bfloat16):
            raise _check._type_error(f"params[{i}]", "a float16, bfloat16 or float32 tensor "
                                     "(float32 copies of float64 would lose its precision)", p)
    return params


class MasterWeights:
    r"""float32 master copies of a low-precision model's weights (Micikevicius et al. 2018).

    The model computes in float16 or bfloat16; the optimizer steps the float32 copies
    ``params``, where an update far below the low-precision spacing still adds up; after
    each step the copies are rounded to nearest into the model. Per iteration::

        loss.backward()             # gradients in the model's format
        mw.grads_to_master()        # ... copied to the float32 masters
        optimizer.step()            # an optimizer built on mw.params (or scaler.step)
        mw.master_to_model()        # the masters, rounded, back into the model

    Under ``torch.autocast`` a float32 model needs none of this: its parameters are the
    master weights, and autocast casts them to the low format for each operation.

    Args:
        params: the model's parameters (``model.parameters()``): float16, bfloat16 (or
            float32, copied as they are).

    Attributes:
        params: the float32 master copies, leaf tensors in the order of ``params``:
            build the optimizer on these. Each remembers (weakly, as ``_model_param``)
            the parameter it is rounded into, so that :func:`companion.diagnose.diagnose`
            and :func:`~companion.diagnose.watch`, given this optimizer, count the
            model's parameters as optimized.

    Raises:
        TypeError: ``params`` not an iterable of float16, bfloat16 or float32 tensors.
        ValueError: ``params`` empty.
    """

    def __init__(self, params: Iterable[Tensor]) -> None:
        self.model_params = _low_precision_params(params)
        self.params = [p.detach().to(torch.float32).clone().requires_grad_(p.requires_grad)
                       for p in self.model_params]
        for p, master in zip(self.model_params, self.params):
            master._model_param = weakref.ref(p)

    def grads_to_master(self) -> None:
        """Copy each model gradient, converted to float32 (exactly: float32 holds every
        float16 and bfloat16 number), into its master's ``.grad``; ``None`` stays ``None``."""
        for p, master in zip(self.model_params, self.params):
            master.grad = None if p.grad is None else p.grad.detach().to(torch.float32).clone()

    def master_to_model(self) -> None:
        """Round each master to the model's format (to nearest) and copy it in."""
        with torch.no_grad():
            for p, master in zip(self.model_params, self.params):
                p.copy_(master)


# ------------------------------------------------------------------ stochastic rounding
def stochastic_round(x: Tensor, dtype: Any, *, generator: Optional[torch.Generator] = None
                     ) -> Tensor:
    r"""Round each value of ``x`` to one of its two neighbours in ``dtype``, :math:`\ell \le
    x \le h`, at random: up with probability :math:`(x - \ell)/(h - \ell)`. The expected
    result is :math:`x` itself, so updates far below the spacing add up on average where
    rounding to nearest loses every one of them (Zamirai et al. 2020).

    Values the format holds exactly are returned unchanged; a value whose nearest
    neighbour is infinite (overflow), and NaN, round as ``.to(dtype)`` does.

    Args:
        x: a floating tensor (computed in a wider format, e.g. float32 weights after a step).
        dtype: the format to round to, as :func:`format_facts`.
        generator: a ``torch.Generator`` for reproducible draws, or ``None`` (torch's
            global one).

    >>> g = torch.Generator().manual_seed(0)
    >>> x = torch.full((10000,), 1.001)                    # between 1 and 1 + 2^-7
    >>> round(stochastic_round(x, torch.bfloat16, generator=g).double().mean().item(), 3)
    1.001

    Raises:
        TypeError: ``x`` not a real floating tensor; ``generator`` not a torch.Generator;
            ``dtype`` as :func:`format_facts`.
        ValueError: ``dtype`` another format.
    """
    x = _check.tensor("x", x, nonempty=False)
    low = _dtype("dtype", dtype)
    if generator is not None:
        _check.instance("generator", generator, torch.Generator, "None or a torch.Generator")
    wide = x.detach().to(torch.float64)
    near = wide.to(low)                                   # the nearest neighbour
    toward = torch.where(wide > near.to(torch.float64), math.inf, -math.inf).to(low)
    other = torch.nextafter(near, toward)                 # the neighbour on x's other side
    a, b = near.to(torch.float64), other.to(torch.float64)
    p_other = ((wide - a) / (b - a)).nan_to_num(0.0).clamp(0.0, 1.0)   # 0 where x == a
    u = torch.rand(x.shape, generator=generator, dtype=torch.float64, device=x.device)
    return torch.where(u < p_other, other, near)


class StochasticRounding(MasterWeights):
    r"""The interface of :class:`MasterWeights` for weights kept *only* in low precision:
    the float32 copies are refreshed from the model at every :meth:`grads_to_master`
    (nothing of the weights persists in float32; the optimizer's state, built on
    ``params``, does), and the stepped copies are rounded back stochastically
    (:func:`stochastic_round`).

    Args:
        params: the model's parameters (``model.parameters()``).
        generator: a ``torch.Generator`` for reproducible rounding, or ``None``.

    Raises:
        TypeError: ``params`` as :class:`MasterWeights`; ``generator`` not a torch.Generator.
        ValueError: ``params`` empty.
    """

    def __init__(self, params: Iterable[Tensor], *,
                 generator: Optional[torch.Generator] = None) -> None:
        super().__init__(params)
        if generator is not None:
            _check.instance("generator", generator, torch.Generator, "None or a torch.Generator")
        self.generator = generator

    def grads_to_master(self) -> None:
        """Refresh each float32 copy from the model's weight (exactly), then copy the
        gradients as :meth:`MasterWeights.grads_to_master`."""
        with torch.no_grad():
            for p, master in zip(self.model_params, self.params):
                master.copy_(p)
        super().grads_to_master()

    def master_to_model(self) -> None:
        """Round each float32 copy stochastically to the model's format and copy it in."""
        with torch.no_grad():
            for p, master in zip(self.model_params, self.params):
                p.copy_(stochastic_round(master, p.dtype, generator=self.generator))
