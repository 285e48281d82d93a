r"""Gradient clipping, twice: pure functions over a list of gradients and torch's in-place API.

Clipping bounds the step an optimizer takes when a gradient is (locally) huge -- the cliffs
of a recurrent net's loss surface (Pascanu, Mikolov & Bengio, 2013) -- without changing
its direction (norm clipping) or coordinate by coordinate (value clipping). With the global
norm :math:`N = \lVert (\lVert g_1\rVert_p, \dots, \lVert g_k\rVert_p) \rVert_p` of the
gradients :math:`g_1..g_k` of all parameters,

.. math::

    \text{value:}\quad g \leftarrow \operatorname{clip}(g, -c, c),\qquad
    \text{norm:}\quad g_i \leftarrow g_i \cdot \min\!\Big(1, \frac{\tau}{N + 10^{-6}}\Big).

Zhang, He, Sra & Jadbabaie (2020) show that clipped gradient descent converges faster than
any fixed step size when the smoothness grows with the gradient norm, as it does in
language models. Adaptive clipping (AGC; Brock, De, Smith & Simonyan, 2021) bounds each
output unit's gradient relative to that unit's weights instead (:func:`adaptive_clip`).

* Pure functions (numpy arrays or torch tensors in, new arrays out; bodies are the
  equations): :func:`clip_by_value`, :func:`global_norm`, :func:`clip_by_global_norm`,
  :func:`unitwise_norm`, :func:`adaptive_clip`; and :func:`descent_steps`, (clipped)
  gradient descent on a function of a few variables (Zhang et al.'s experiment).
* In place on ``p.grad``, with torch's names, signatures, return values and numbers
  (tests/test_clip.py holds them to :mod:`torch.nn.utils`): :func:`clip_grad_value_`,
  :func:`clip_grad_norm_` = :func:`get_total_norm` then :func:`clip_grads_with_norm_`;
  and :func:`adaptive_clip_grad_` (as timm's ``timm/utils/agc.py``).

**Differences from torch:** ``max_norm``, ``clip_value`` <= 0 or non-finite raise
``ValueError`` here; torch accepts them (``max_norm=0`` silently zeroes every gradient, a
negative one flips them). Arguments that are not numbers or tensors raise ``TypeError``,
and so do an ``error_if_nonfinite`` that is not a bool and a ``foreach`` that is not
None or a bool (torch takes any truthy value), and integer tensors (torch: a
RuntimeError). ``norm_type`` takes numbers, one-element tensors and the string ``"inf"``,
as torch's ``float(norm_type)``, but no other string (torch would read ``"2"``). Where
torch raises a clear error of its own (``max_norm=None``, ``norm_type="two"``,
``parameters=None``), the same type is raised here, naming the argument.
``clip_grad_value_([])`` returns None (torch raises an internal RuntimeError).

Example::

    import torch, companion.clip as cc
    model = torch.nn.Linear(3, 1)
    model(torch.randn(8, 3)).pow(2).mean().backward()
    total = cc.clip_grad_norm_(model.parameters(), max_norm=1.0)   # norm before clipping

References: Pascanu, Mikolov & Bengio (2013), On the difficulty of training recurrent
neural networks, ICML. Zhang, He, Sra & Jadbabaie (2020), Why gradient clipping
accelerates training, ICLR. Brock, De, Smith & Simonyan (2021), High-performance
large-scale image recognition without normalization, ICML.
"""
from __future__ import annotations

import math
import types
import warnings
from collections import defaultdict
from collections.abc import Iterator, Mapping
from typing import Any, Iterable, Optional, Sequence, Union

import numpy as np
import torch
from torch import Tensor, nn

from . import _check

__all__ = ["clip_by_value", "global_norm", "clip_by_global_norm", "unitwise_norm",
           "adaptive_clip", "clip_grad_value_", "clip_grad_norm_", "get_total_norm",
           "clip_grads_with_norm_", "adaptive_clip_grad_", "descent_steps"]

Array = Union[np.ndarray, Tensor]
TensorOrTensors = Union[Tensor, Iterable[Tensor]]

#: the ``1e-6`` of torch's coefficient ``max_norm / (total_norm + 1e-6)``
NORM_EPS = 1e-6


# ------------------------------------------------------------------------------ checks
def _check_scalar(name: str, value: Any, *, zero_ok: bool = False) -> float:
    """``max_norm``, ``clip_value``, ``clip_factor``, ``eps``, ``lr``, ``tol``: a finite
    number > 0 (>= 0 with ``zero_ok``); a one-element tensor is read as its number, as
    torch's ``float(max_norm)`` does (a longer one is a ValueError, as in torch)."""
    if isinstance(value, Tensor) and value.numel() != 1:
        raise ValueError(f"{name} must be a number or a one-element tensor, got "
                         f"{_check.show(value)}")
    check = _check.nonnegative if zero_ok else _check.positive
    return check(name, value, scalar_tensor=True)


def _check_norm_type(norm_type: Any) -> float:
    """A p > 0 or inf, as a float. Like torch's ``float(norm_type)``: the string ``"inf"``
    (any spelling ``float`` reads as +inf) and one-element tensors are taken; other
    strings are refused (torch would take ``"2"`` too)."""
    if isinstance(norm_type, str):
        try:
            p = float(norm_type)
        except ValueError:
            p = math.nan
        if p != math.inf:
            raise ValueError(f"norm_type must be a number > 0 or inf (or the string 'inf'), "
                             f"got {norm_type!r}")
        return p
    if isinstance(norm_type, Tensor) and norm_type.numel() != 1:
        raise ValueError(f"norm_type must be a number or a one-element tensor, got "
                         f"{_check.show(norm_type)}")
    p = norm_type
    if isinstance(p, Tensor) and not p.is_complex() and p.dtype != torch.bool:
        p = p.item()
    if not _check.is_real(p):
        _check.real("norm_type", p)                    # raises the TypeError
    p = float(p)
    if not p > 0:                                      # NaN too
        raise ValueError(f"norm_type must be a number > 0 or inf, got {p!r}")
    return p


def _check_tensors(values: Any, name: str) -> list[Tensor]:
    """A single tensor -> [it]; an iterable of tensors (a list, a tuple, a generator such
    as ``model.parameters()``) -> a list, every item checked to be a tensor."""
    if isinstance(values, Tensor):
        return [values]
    if isinstance(values, nn.Module):
        raise TypeError(f"{name} must be a tensor or an iterable of tensors (e.g. "
                        f"model.parameters()), got the module {type(values).__name__}")
    if (isinstance(values, (str, bytes, Mapping, np.ndarray, type))
            or not isinstance(values, Iterable)):
        raise TypeError(f"{name} must be a tensor or an iterable of tensors, got "
                        f"{_check.show(values)} ({type(values).__name__})")
    out = list(values)
    for i, t in enumerate(out):
        _check.instance(f"{name}[{i}]", t, Tensor, "a torch tensor")
    return out


def _check_params(parameters: Any) -> list[Tensor]:
    """torch's handling: a tensor or an iterable; warn if an empty generator was given."""
    out = _check_tensors(parameters, "parameters")
    if not out and isinstance(parameters, types.GeneratorType):
        warnings.warn("`parameters` is an empty generator, no gradient clipping will occur.",
                      stacklevel=3)
    return out


def _check_total_norm(total_norm: Any) -> Tensor:
    """``total_norm`` of :func:`clip_grads_with_norm_`: a real one-element tensor (its value
    not read: no sync) or a number >= 0, inf included (the norm of an infinite gradient)."""
    if isinstance(total_norm, Tensor):
        if total_norm.is_complex() or total_norm.dtype == torch.bool:
            raise TypeError(f"total_norm must be a real tensor or a number, got "
                            f"{_check.show(total_norm)}")
        if total_norm.numel() != 1:
            raise ValueError(f"total_norm must be a one-element tensor (the total norm), got "
                             f"{_check.show(total_norm)}")
        return total_norm
    if not _check.is_real(total_norm):
        raise TypeError(f"total_norm must be a tensor or a number, got "
                        f"{_check.show(total_norm)} ({type(total_norm).__name__})")
    return torch.tensor(_check.nonnegative("total_norm", total_norm, finite=False))


def _check_norm_inputs(tensors: list[Tensor], name: str) -> list[Tensor]:
    """The tensors of a norm: floating or complex (as ``torch.linalg.vector_norm``)."""
    for i, t in enumerate(tensors):
        if not (t.is_floating_point() or t.is_complex()):
            raise TypeError(f"{name}[{i}] must have a floating-point (or complex) dtype, "
                            f"got {_check.show(t)}")
    return tensors


def _check_arrays(grads: Any, name: str = "grads") -> list[Array]:
    """A single array -> [it]; a list, tuple or iterator of arrays -> a list. Every item a
    real floating numpy array or torch tensor, all of the first one's kind. Empty arrays
    and NaN are fine (a diverging run's gradients)."""
    if isinstance(grads, (np.ndarray, Tensor)):
        items = [grads]
        names = [name]
    else:
        if isinstance(grads, (str, bytes, Mapping)) or not isinstance(
                grads, (list, tuple, Iterator)):
            raise TypeError(f"{name} must be an array or a list of arrays, got "
                            f"{_check.show(grads)} ({type(grads).__name__})")
        items = list(grads)
        names = [f"{name}[{i}]" for i in range(len(items))]
    for n, g in zip(names, items):
        _check.array(n, g, nonempty=False)
        _check.same_kind(n, g, names[0], items[0])
    return items


# ---------------------------------------------------------------------- pure functions
def _pnorm(x: Array, p: float, dims: Optional[tuple[int, ...]] = None) -> Array:
    r""":math:`(\sum_j |x_j|^p)^{1/p}` (``p = inf``: :math:`\max_j |x_j|`) over ``dims``
    (kept, size 1) or over everything; an empty vector has norm 0."""
    a = abs(x)
    if dims is None and (a.numel() if isinstance(a, Tensor) else np.size(a)) == 0:
        return a.sum()
    kw = {} if dims is None else dict(axis=dims, keepdims=True)
    xp = _check.array_namespace(a)
    if p == math.inf:
        return xp.amax(a, **kw)
    return xp.sum(a ** p, **kw) ** (1 / p)


def clip_by_value(grads: Sequence[Array], clip_value: float) -> list[Array]:
    r"""Each coordinate clipped into :math:`[-c, c]`: :math:`g \leftarrow \min(\max(g, -c), c)`.

    Changes the direction of g (large coordinates are cut, small ones kept). Returns new
    arrays; ``grads`` is not modified.

    Raises:
        TypeError: ``grads`` not an array or a list of real floating arrays of one kind
            (numpy or torch); ``clip_value`` not a number.
        ValueError: ``clip_value`` not > 0 and finite.

    >>> clip_by_value([np.array([-3.0, 0.5, 2.0])], 1.0)[0]
    array([-1. ,  0.5,  1. ])
    """
    grads = _check_arrays(grads)
    c = _check_scalar("clip_value", clip_value)
    return [_check.array_namespace(g).clip(g, -c, c) for g in grads]


def global_norm(grads: Sequence[Array], norm_type: float = 2.0) -> Array:
    r"""The p-norm of the per-tensor p-norms: :math:`N = \lVert(\lVert g_1\rVert_p, \dots,
    \lVert g_k\rVert_p)\rVert_p`, which equals the p-norm of all gradients concatenated.

    ``norm_type = inf`` gives :math:`\max_i \max_j |g_{ij}|`. An empty list has norm 0.
    Returns a numpy scalar or a 0-d tensor (of the first gradient's kind).

    Raises:
        TypeError: ``grads`` not an array or a list of real floating arrays of one kind
            (numpy or torch); ``norm_type`` not a number.
        ValueError: ``norm_type`` not > 0 (inf and the string ``"inf"`` are fine).

    >>> float(global_norm([np.array([3.0]), np.array([4.0])]))
    5.0
    """
    grads = _check_arrays(grads)
    p = _check_norm_type(norm_type)
    if not grads:
        return np.float64(0.0)
    per_tensor = [_pnorm(g, p) for g in grads]                        # ||g_i||_p
    stacked = torch.stack(per_tensor) if isinstance(grads[0], Tensor) else np.stack(per_tensor)
    return _pnorm(stacked, p)


def clip_by_global_norm(grads: Sequence[Array], max_norm: float,
                        norm_type: float = 2.0) -> tuple[list[Array], Array]:
    r"""Rescale all gradients together so that their global norm is at most ``max_norm``:

    .. math::

        N = \texttt{global\_norm}(g),\qquad
        g_i \leftarrow g_i \cdot \min\!\Big(1, \frac{\tau}{N + 10^{-6}}\Big).

    The direction of the full gradient is kept. Like torch, the coefficient is applied
    always (it is 1 when :math:`N \le \tau - 10^{-6}`); an infinite N gives coefficient 0
    and NaN where a gradient was infinite.

    Returns:
        ``(clipped, N)``: new arrays, and the global norm *before* clipping.

    Raises:
        TypeError: as :func:`global_norm`; ``max_norm`` not a number.
        ValueError: as :func:`global_norm`; ``max_norm`` not > 0 and finite.

    >>> g, n = clip_by_global_norm([np.array([3.0, 4.0])], 1.0)
    >>> float(n), g[0].round(4)
    (5.0, array([0.6, 0.8]))
    """
    grads = _check_arrays(grads)
    tau = _check_scalar("max_norm", max_norm)
    _check_norm_type(norm_type)
    total = global_norm(grads, norm_type)
    coef = (tau / (total + NORM_EPS)).clip(max=1.0)                    # min(1, tau/(N+1e-6))
    return [g * coef for g in grads], total


def unitwise_norm(x: Array, norm_type: float = 2.0) -> Array:
    r"""Norm per output unit: over every dim but the first, dims kept (shape (out, 1, ...)).

    For a Linear weight (out, in) the norm of each row; for a conv weight (out, in, kh, kw)
    that of each filter; a tensor with <= 1 dim (a bias, a gain) is one unit: its whole norm.

    Raises:
        TypeError: ``x`` not a real floating numpy array or torch tensor; ``norm_type``
            not a number.
        ValueError: ``x`` empty; ``norm_type`` not > 0.
    """
    x = _check.array("x", x)
    p = _check_norm_type(norm_type)
    return _pnorm(x, p) if x.ndim <= 1 else _pnorm(x, p, tuple(range(1, x.ndim)))


def adaptive_clip(grads: Sequence[Array], params: Sequence[Array], clip_factor: float = 0.01,
                  eps: float = 1e-3) -> list[Array]:
    r"""Adaptive gradient clipping (AGC; Brock et al., 2021), unit by unit:

    .. math::

        m = \lambda \max(\lVert W\rVert_{\text{unit}}, \epsilon),\qquad
        G \leftarrow \begin{cases} G \cdot m / \max(\lVert G\rVert_{\text{unit}}, 10^{-6})
        & \lVert G\rVert_{\text{unit}} > m \\ G & \text{otherwise,}\end{cases}

    with :math:`\lambda` = ``clip_factor`` and the norms of :func:`unitwise_norm` (2-norm).
    A unit's step is thus bounded relative to its weights, :math:`\lVert\Delta W\rVert /
    \lVert W\rVert \lesssim \eta\lambda`; ``eps`` keeps zero-initialized weights movable.
    Brock et al. do not clip the final linear layer: pass only the others.

    Returns new arrays.

    Raises:
        TypeError: ``grads`` or ``params`` not an array or a list of real floating arrays
            of one kind (numpy or torch); ``clip_factor`` or ``eps`` not a number.
        ValueError: ``grads`` and ``params`` of different lengths, a gradient not of its
            parameter's shape (no broadcasting) or empty; ``clip_factor`` not > 0 and
            finite; ``eps`` < 0 or not finite.

    >>> w, g = np.array([[3.0, 4.0], [0.0, 0.0]]), np.array([[0.3, 0.4], [1.0, 0.0]])
    >>> adaptive_clip([g], [w], clip_factor=0.01)[0]   # row limits 0.05 and 1e-5
    array([[3.e-02, 4.e-02],
           [1.e-05, 0.e+00]])
    """
    grads, params = _check_arrays(grads, "grads"), _check_arrays(params, "params")
    if len(grads) != len(params):
        raise ValueError(f"grads and params must have the same length, got {len(grads)} and "
                         f"{len(params)}")
    for i, (g, w) in enumerate(zip(grads, params)):
        _check.same_kind(f"grads[{i}]", g, f"params[{i}]", w)
        _check.same_shape(f"grads[{i}]", g, f"params[{i}]", w)
        _check.array(f"params[{i}]", w)                              # not empty
    lam = _check_scalar("clip_factor", clip_factor)
    eps = _check_scalar("eps", eps, zero_ok=True)
    out = []
    for g, w in zip(grads, params):
        m = lam * unitwise_norm(w).clip(min=eps)                      # lambda max(||W||, eps)
        g_norm = unitwise_norm(g)
        xp = _check.array_namespace(g)
        out.append(xp.where(g_norm > m, g * m / g_norm.clip(min=1e-6), g))
    return out


def descent_steps(grad: Any, x0: Any, lr: float, *, max_norm: Optional[float] = None,
                  tol: float = 1e-6, max_steps: int = 10**6) -> Optional[int]:
    r"""Steps of (clipped) gradient descent from ``x0`` until :math:`\lVert\nabla f\rVert
    \le` ``tol``:

    .. math::

        x_{t+1} = x_t - \eta\,\min\!\Big(1, \frac{\tau}{\lVert\nabla f(x_t)\rVert}
        \Big)\,\nabla f(x_t)\qquad(\tau = \text{max\_norm};\ \tau=\infty
        \text{: plain gradient descent}).

    On :math:`f(x) = x^2 + x^4`, the book's example of an :math:`(L_0, L_1)`-smooth
    function (Zhang, He, Sra & Jadbabaie, 2020): with a fixed step that is stable from
    :math:`x_0` (at most :math:`1/(1 + 2x_0^2)`, e.g. :math:`1/f''(x_0)`), plain descent
    needs :math:`\Theta(x_0^2)` steps; clipped descent with a fixed :math:`\eta` needs
    :math:`\Theta(x_0)` (tests/test_clip.py fits both slopes).

    Args:
        grad: ``grad(x)`` -> the gradient at ``x`` (a float for a float ``x``, else an
            array of ``x``'s shape).
        x0: the start, a number or a 1-D numpy array.
        lr: :math:`\eta > 0`.
        max_norm: :math:`\tau > 0`, or ``None`` for no clipping.
        tol: stop at the first :math:`t` with :math:`\lVert\nabla f(x_t)\rVert \le`
            ``tol`` (> 0).
        max_steps: give up after this many steps (an int >= 1).

    Returns:
        That :math:`t` (0 if ``x0`` already qualifies), or ``None`` if it took more than
        ``max_steps`` steps or the iterates stopped being finite (diverged).

    Raises:
        TypeError: ``grad`` not a function (a class included), or ``grad(x0)`` not a
            number (for a number ``x0``) or not a numpy array (for an array); ``x0``
            neither a real number nor a numpy array of real numbers; ``lr``, ``max_norm``,
            ``tol`` not numbers; ``max_steps`` not an int.
        ValueError: ``x0`` not finite or not 1-D (or empty); ``grad(x0)`` not of
            ``x0``'s shape; ``lr``, ``max_norm``, ``tol`` not > 0 and finite;
            ``max_steps`` < 1.

    >>> descent_steps(lambda x: 2 * x, 1.0, lr=0.25, tol=1e-3)   # x halves: 2 * 0.5**t
    11
    """
    _check.function("grad", grad, "a callable grad(x)")
    scalar = _check.is_real(x0)
    if scalar:
        x = _check.real("x0", x0)
    else:
        if not isinstance(x0, np.ndarray) or x0.dtype.kind not in "iuf":
            raise TypeError(f"x0 must be a real number or a numpy array of real numbers, "
                            f"got {_check.show(x0)} ({type(x0).__name__})")
        if x0.ndim != 1:
            raise ValueError(f"x0 must be a number or a 1-D array, got shape {x0.shape}")
        x = _check.array("x0", np.array(x0, dtype=float), ndim=1, finite=True)
    eta = _check_scalar("lr", lr)
    tau = math.inf if max_norm is None else _check_scalar("max_norm", max_norm)
    tol = _check_scalar("tol", tol)
    max_steps = _check.integer("max_steps", max_steps, minimum=1)
    for t in range(max_steps + 1):
        g = grad(x)
        if t == 0:
            _check_gradient(g, x, scalar)
        n = abs(g) if scalar else float(np.linalg.norm(g))
        if not math.isfinite(n):
            return None
        if n <= tol:
            return t
        x = x - eta * min(1.0, tau / n) * g
    return None


def _check_gradient(g: Any, x: Any, scalar: bool) -> None:
    """``grad(x0)``: a real number for a number ``x0`` (a 0-d array too), else a numpy
    array of ``x0``'s shape (no broadcasting)."""
    if scalar:
        if not (_check.is_real(g) or (isinstance(g, np.ndarray) and g.shape == ()
                                       and g.dtype.kind in "iuf")):
            raise TypeError(f"grad must return a real number for a number x0, got "
                            f"{_check.show(g)} ({type(g).__name__})")
        return
    if not isinstance(g, np.ndarray) or g.dtype.kind not in "iuf":
        raise TypeError(f"grad must return a numpy array of real numbers for an array x0, "
                        f"got {_check.show(g)} ({type(g).__name__})")
    if g.shape != x.shape:
        raise ValueError(f"grad must return an array of x0's shape {x.shape}, got "
                         f"shape {g.shape}")


# ------------------------------------------------------------------- in place (torch API)
try:  # torch's own grouping: the same groups in the same order, hence the same rounding
    from torch.utils._foreach_utils import _group_tensors_by_device_and_dtype as _torch_group
except ImportError:  # pragma: no cover
    _torch_group = None

_FOREACH_DEVICES = ("cpu", "cuda", "xpu", "mtia")


def _by_device_and_dtype(tensors: list[Tensor]) -> dict[tuple, list[Tensor]]:
    """``{(device, dtype): [tensors]}``, each foreach call needs one device and one dtype."""
    if _torch_group is not None:
        return {key: lists[0] for key, (lists, _) in _torch_group([tensors]).items()}
    groups: dict[tuple, list[Tensor]] = defaultdict(list)
    for t in tensors:
        groups[(t.device, t.dtype)].append(t)
    return dict(groups)


def _use_foreach(tensors: list[Tensor], device: torch.device, foreach: Optional[bool]) -> bool:
    """torch's rule: ``None`` -> foreach on CPU/CUDA for plain tensors (not subclasses);
    ``True`` on a device without foreach kernels -> RuntimeError. (``foreach`` was
    checked where it entered, by :func:`_check.optional_flag`.)"""
    supported = device.type in _FOREACH_DEVICES
    if foreach is None:
        return supported and all(type(t) is Tensor for t in tensors)
    if foreach and not supported:
        raise RuntimeError(f"foreach=True was passed, but can't use the foreach API on "
                           f"{device.type} tensors")
    return foreach


@torch.no_grad()
def get_total_norm(tensors: TensorOrTensors, norm_type: float = 2.0,
                   error_if_nonfinite: bool = False, foreach: Optional[bool] = None) -> Tensor:
    r"""The global norm :math:`\lVert(\lVert t_1\rVert_p, \dots, \lVert t_k\rVert_p)\rVert_p`
    of ``tensors`` (e.g. the gradients), as :func:`torch.nn.utils.get_total_norm`.

    Per-tensor norms come from one ``torch._foreach_norm`` per (device, dtype) group (or
    ``torch.linalg.vector_norm`` each, with ``foreach=False``); the result is on the first
    tensor's device. An empty list gives ``tensor(0.)``.

    Raises:
        TypeError: ``tensors`` neither a tensor nor an iterable of tensors, or one of
            an integer or bool dtype (torch raises RuntimeError for these); ``norm_type``
            not a number; ``error_if_nonfinite`` not a bool; ``foreach`` not None or a
            bool (torch takes any truthy value for these two).
        ValueError: ``norm_type`` not > 0 (inf and the string ``"inf"`` are fine).
        RuntimeError: ``error_if_nonfinite=True`` and the norm is inf or NaN;
            ``foreach=True`` on a device without foreach kernels.
    """
    tensors = _check_norm_inputs(_check_tensors(tensors, "tensors"), "tensors")
    p = _check_norm_type(norm_type)
    error_if_nonfinite = _check.flag("error_if_nonfinite", error_if_nonfinite)
    foreach = _check.optional_flag("foreach", foreach)
    if not tensors:
        return torch.tensor(0.0)
    norms: list[Tensor] = []
    for (device, _), group in _by_device_and_dtype(tensors).items():
        if _use_foreach(group, device, foreach):
            norms.extend(torch._foreach_norm(group, p))
        else:
            norms.extend(torch.linalg.vector_norm(t, p) for t in group)
    first = tensors[0].device
    total = torch.linalg.vector_norm(torch.stack([n.to(first) for n in norms]), p)
    if error_if_nonfinite and not bool(torch.isfinite(total)):
        raise RuntimeError(f"the total norm of order {p} of the gradients is {total.item()}, "
                           f"which cannot be clipped (error_if_nonfinite=True; pass False to "
                           f"scale the gradients by the non-finite norm anyway)")
    return total


@torch.no_grad()
def clip_grads_with_norm_(parameters: TensorOrTensors, max_norm: float,
                          total_norm: Union[Tensor, float], foreach: Optional[bool] = None) -> None:
    r"""In place, every ``p.grad`` times :math:`\min(1, \tau / (N + 10^{-6}))` with the given
    N = ``total_norm``, as :func:`torch.nn.utils.clip_grads_with_norm_`.

    Always multiplies (no ``if N > tau`` branch, which would need a GPU -> CPU sync). Use
    it after reducing N across shards (sharded training: a per-shard N is too small).

    Raises:
        TypeError: ``parameters`` neither a tensor nor an iterable of tensors;
            ``max_norm`` not a number; ``total_norm`` neither a number nor a real tensor;
            ``foreach`` not None or a bool.
        ValueError: ``max_norm`` not > 0 and finite (torch takes it); ``total_norm`` a
            negative or NaN number (inf is fine: :func:`get_total_norm`'s answer for an
            infinite gradient), or a tensor with more than one element. A tensor's value
            is not read (that would be a GPU -> CPU sync).
        RuntimeError: ``foreach=True`` on a device without foreach kernels.
    """
    grads = [p.grad for p in _check_params(parameters) if p.grad is not None]
    tau = _check_scalar("max_norm", max_norm)
    total_norm = _check_total_norm(total_norm)
    foreach = _check.optional_flag("foreach", foreach)
    if not grads:
        return
    coef = torch.clamp(tau / (total_norm + NORM_EPS), max=1.0)        # a tensor: no sync
    for (device, _), group in _by_device_and_dtype(grads).items():
        if _use_foreach(group, device, foreach):
            torch._foreach_mul_(group, coef.to(device))
        else:
            c = coef.to(device)
            for g in group:
                g.mul_(c)


def clip_grad_norm_(parameters: TensorOrTensors, max_norm: float, norm_type: float = 2.0,
                    error_if_nonfinite: bool = False, foreach: Optional[bool] = None) -> Tensor:
    r"""Clip the global gradient norm in place, as :func:`torch.nn.utils.clip_grad_norm_`:

    .. math::

        N = \lVert(\lVert g_1\rVert_p, \dots, \lVert g_k\rVert_p)\rVert_p,\qquad
        g_i \leftarrow g_i \cdot \min\!\Big(1, \frac{\tau}{N + 10^{-6}}\Big).

    :func:`get_total_norm` of the gradients, then :func:`clip_grads_with_norm_`.
    Parameters whose ``.grad`` is None are skipped. An infinite gradient gives N = inf,
    coefficient 0, and gradients NaN where they were inf and 0 elsewhere (torch's result).

    Args:
        parameters: a tensor or an iterable of tensors (``model.parameters()``).
        max_norm: :math:`\tau > 0`, finite (torch also accepts <= 0; we refuse it).
        norm_type: p > 0 or ``inf``.
        error_if_nonfinite: raise instead of clipping when N is inf or NaN.
        foreach: ``None`` (foreach on CPU and CUDA, as torch), ``True`` or ``False``.

    Returns:
        N, the total norm *before* clipping, a 0-d tensor on the first gradient's device.

    Raises:
        TypeError: ``parameters`` neither a tensor nor an iterable of tensors (a module
            is named: pass ``model.parameters()``); ``max_norm`` or ``norm_type`` not a
            number; ``error_if_nonfinite`` not a bool; ``foreach`` not None or a bool
            (torch takes any truthy value for these two).
        ValueError: ``max_norm`` not > 0 and finite; ``norm_type`` not > 0.
        RuntimeError: ``error_if_nonfinite=True`` and N is not finite; ``foreach=True``
            on a device without foreach kernels.

    Example::

        import torch
        from companion.clip import clip_grad_norm_
        model = torch.nn.Linear(3, 1)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        loss = model(torch.randn(8, 3)).pow(2).mean()
        loss.backward()
        total = clip_grad_norm_(model.parameters(), max_norm=1.0)
        opt.step()
    """
    params = _check_params(parameters)
    _check_scalar("max_norm", max_norm)
    _check_norm_type(norm_type)
    _check.flag("error_if_nonfinite", error_if_nonfinite)
    _check.optional_flag("foreach", foreach)
    total = get_total_norm([p.grad for p in params if p.grad is not None], norm_type,
                           error_if_nonfinite, foreach)
    clip_grads_with_norm_(params, max_norm, total, foreach)
    return total


@torch.no_grad()
def clip_grad_value_(parameters: TensorOrTensors, clip_value: float,
                     foreach: Optional[bool] = None) -> None:
    r"""In place, every gradient coordinate clamped into :math:`[-c, c]`, as
    :func:`torch.nn.utils.clip_grad_value_` (NaN stays NaN). Returns None.

    >>> w = torch.zeros(3, requires_grad=True); w.grad = torch.tensor([-3.0, 0.5, 2.0])
    >>> clip_grad_value_(w, 1.0); w.grad
    tensor([-1.0000,  0.5000,  1.0000])

    Raises:
        TypeError: ``parameters`` neither a tensor nor an iterable of tensors;
            ``clip_value`` not a number; ``foreach`` not None or a bool.
        ValueError: ``clip_value`` not > 0 and finite (torch takes it).
        RuntimeError: ``foreach=True`` on a device without foreach kernels.
    """
    grads = [p.grad for p in _check_params(parameters) if p.grad is not None]
    c = _check_scalar("clip_value", clip_value)
    foreach = _check.optional_flag("foreach", foreach)
    if not grads:             # nothing to clip (torch raises an internal RuntimeError here)
        return
    for (device, _), group in _by_device_and_dtype(grads).items():
        if _use_foreach(group, device, foreach):
            torch._foreach_clamp_min_(group, -c)
            torch._foreach_clamp_max_(group, c)
        else:
            for g in group:
                g.clamp_(min=-c, max=c)


@torch.no_grad()
def adaptive_clip_grad_(parameters: TensorOrTensors, clip_factor: float = 0.01,
                        eps: float = 1e-3, norm_type: float = 2.0) -> None:
    r"""In place, AGC per output unit (:func:`adaptive_clip`), as timm's
    ``timm.utils.adaptive_clip_grad``; parameters without ``.grad`` are skipped.

    Example (NFNets: every layer but the classifier, here ``fc``)::

        import torch
        from companion.clip import adaptive_clip_grad_
        model = torch.nn.Sequential()
        model.add_module("body", torch.nn.Linear(3, 8))
        model.add_module("fc", torch.nn.Linear(8, 1))
        model(torch.randn(4, 3)).pow(2).mean().backward()
        adaptive_clip_grad_([p for n, p in model.named_parameters()
                             if not n.startswith("fc.")], clip_factor=0.01)

    Raises:
        TypeError: ``parameters`` neither a tensor nor an iterable of tensors;
            ``clip_factor``, ``eps`` or ``norm_type`` not a number.
        ValueError: ``clip_factor`` not > 0 and finite; ``eps`` < 0 or not finite;
            ``norm_type`` not > 0.
    """
    params = _check_params(parameters)
    lam = _check_scalar("clip_factor", clip_factor)
    eps = _check_scalar("eps", eps, zero_ok=True)
    p_ = _check_norm_type(norm_type)
    for w in params:
        if w.grad is None:
            continue
        dims = None if w.ndim <= 1 else tuple(range(1, w.ndim))
        keep = dims is not None
        m = torch.linalg.vector_norm(w, p_, dim=dims, keepdim=keep).clamp_(min=eps).mul_(lam)
        g = w.grad
        g_norm = torch.linalg.vector_norm(g, p_, dim=dims, keepdim=keep)
        clipped = g * (m / g_norm.clamp(min=1e-6))
        g.copy_(torch.where(g_norm < m, g, clipped))
