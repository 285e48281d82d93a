r"""Normalization layers from scratch: batch, layer, RMS and group norm.

Each norm is a *pure function* whose body is the chapter's equations, for NumPy arrays
and torch tensors alike, plus a thin ``nn.Module`` with torch's name, arguments,
defaults and ``state_dict`` keys (so ``load_state_dict`` works both ways with
``torch.nn.BatchNorm1d`` and friends). Batch norm in training mode, per channel
:math:`c` over the :math:`n` values of the batch (and of the spatial positions):

.. math::

    \mu_c = \tfrac1n\textstyle\sum_i x_{ic},\qquad
    \sigma_c^2 = \tfrac1n\textstyle\sum_i (x_{ic}-\mu_c)^2 \ \text{(biased)},\qquad
    \hat x_{ic} = \frac{x_{ic}-\mu_c}{\sqrt{\sigma_c^2+\epsilon}},\qquad
    y_{ic} = \gamma_c\,\hat x_{ic} + \beta_c ,

and the running estimates used in inference mode are updated as torch does,

.. math::

    \bar\mu \leftarrow (1-m)\,\bar\mu + m\,\mu,\qquad
    \bar\sigma^2 \leftarrow (1-m)\,\bar\sigma^2 + m\,\tfrac{n}{n-1}\,\sigma^2
    \ \text{(unbiased)},

with momentum :math:`m = 0.1` (Keras' ``momentum=0.99`` weights the *old* value: the
same rule with :math:`m = 0.01`); ``momentum=None`` is the cumulative average,
:math:`m = 1/t` at the :math:`t`-th batch. Layer, RMS and group norm normalize each
example over its features instead, so they have no running statistics and behave the
same in training and inference.

* :func:`batch_norm_train`, :func:`batch_norm_eval`, :func:`layer_norm`,
  :func:`rms_norm`, :func:`group_norm` -- the forward passes; the running statistics
  come back as a new :class:`RunningStats`, never mutated in place.
* :func:`batch_norm_backward`, :func:`layer_norm_backward` -- the hand-written
  backward pass, :math:`\partial L/\partial x = \frac{\gamma}{\sqrt{\sigma^2+\epsilon}}
  \big(g - \overline{g} - \hat x\,\overline{g\hat x}\big)` with :math:`g = \partial
  L/\partial y` and bars the means over the normalized values.
* :class:`BatchNorm1d`, :class:`BatchNorm2d`, :class:`LayerNorm`, :class:`RMSNorm`,
  :class:`GroupNorm` -- drop-in modules.
* :func:`fold_batch_norm` -- batch norm in eval mode folded into the layer before it.

Example::

    >>> import torch
    >>> from companion.norm import BatchNorm1d
    >>> ours, theirs = BatchNorm1d(3), torch.nn.BatchNorm1d(3)
    >>> x = torch.randn(8, 3)
    >>> bool(torch.allclose(ours(x), theirs(x), atol=1e-6))
    True
    >>> _ = theirs.load_state_dict(ours.state_dict())        # and back

References: Ioffe & Szegedy (2015); Ba, Kiros & Hinton (2016); Zhang & Sennrich
(2019); Wu & He (2018); PyTorch's ``torch/nn/modules/batchnorm.py``.
"""
from __future__ import annotations

import contextlib
import copy
import math
from typing import Any, NamedTuple, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from . import _check

__all__ = ["RunningStats", "batch_norm_train", "batch_norm_eval", "layer_norm", "rms_norm",
           "group_norm", "batch_norm_backward", "layer_norm_backward", "BatchNorm1d",
           "BatchNorm2d", "LayerNorm", "RMSNorm", "GroupNorm", "fold_batch_norm", "TRANSFORMATIONS",
           "invariances"]

Array = Any  # a numpy.ndarray or a torch.Tensor: every body below works for both


class RunningStats(NamedTuple):
    """Batch norm's running estimates: per-channel ``mean`` and ``var``, and ``count``,
    the number of batches seen (torch's ``num_batches_tracked``)."""

    mean: Array
    var: Array
    count: int = 0


# ----------------------------------------------------------------------------- checks
def _check_array_input(name: str, x: object, min_ndim: int = 1) -> Array:
    """A pure function's ``x`` (or ``grad_y``): a floating numpy array or torch tensor with
    at least ``min_ndim`` dimensions. Empty is legal, as in torch (the last shard of a
    dataset on one process can be empty): the output is empty too. No NaN scan: a
    diverging network's activations are normalized (to NaN) and passed on, as torch's
    layers do."""
    return _check.array(name, x, min_ndim=min_ndim, nonempty=False)


def _empty(x: Array) -> bool:
    return (x.numel() if isinstance(x, Tensor) else x.size) == 0


def _check_training_eps(eps: object) -> float:
    """``eps`` of a batch-norm *module* using batch statistics: > 0, as torch's modules
    require (with eps = 0 a channel whose values are all equal divides 0 by 0)."""
    eps = _check_eps(eps)
    if eps <= 0:
        raise ValueError(f"batch_norm eps must be positive during training, but got {eps!r} "
                         f"(torch refuses it too: a constant channel would divide 0 by 0)")
    return eps


def _check_eps(eps: object, *, optional: bool = False) -> float | None:
    """``eps``: a finite number >= 0 (or ``None`` where the dtype's epsilon is the default)."""
    if eps is None and optional:
        return None
    return _check.nonnegative("eps", eps)


def _check_momentum(momentum: object) -> float | None:
    """``momentum``: ``None`` (the cumulative average) or a number in [0, 1]."""
    return None if momentum is None else _check.real("momentum", momentum, low=0.0, high=1.0)


def _check_normalized_shape(normalized_shape: object) -> tuple[int, ...]:
    """``normalized_shape``: an int or a non-empty sequence of ints >= 1."""
    if _check.is_int(normalized_shape):
        return (_check.integer("normalized_shape", normalized_shape, minimum=1),)
    items = _check.sequence("normalized_shape", normalized_shape,
                            what="an int or a sequence of ints")
    return tuple(_check.integer(f"normalized_shape[{i}]", n, minimum=1)
                 for i, n in enumerate(items))


def _check_param(name: str, p: object, shape: tuple[int, ...], x: Array, *,
           required: bool = False) -> Array | None:
    """``None`` (unless ``required``) or an array of the kind of ``x`` (numpy with numpy,
    torch with torch) and of exactly ``shape`` (no broadcasting)."""
    if p is None and not required:
        return None
    p = _check.array(name, p, nonempty=False)
    _check.same_kind(name, p, "x", x)
    if tuple(p.shape) != shape:
        raise ValueError(f"{name} must have shape {shape}, got {tuple(p.shape)}")
    return p


def _check_running(running: object, C: int, x: Array) -> RunningStats | None:
    """``None`` or a :class:`RunningStats` whose ``mean`` and ``var`` are ``(C,)`` arrays
    of ``x``'s kind and whose ``count`` is an int >= 0."""
    if running is None:
        return None
    _check.instance("running", running, RunningStats, "a RunningStats or None")
    _check_param("running.mean", running.mean, (C,), x, required=True)
    _check_param("running.var", running.var, (C,), x, required=True)
    _check.integer("running.count", running.count, minimum=0)
    return running


def _check_factory(device: object, dtype: object) -> dict:
    """The ``device``/``dtype`` of a module's constructor (torch's factory arguments):
    ``dtype`` None or a floating torch.dtype, ``device`` None, a str, an int or a
    torch.device that torch can parse."""
    if dtype is not None:
        _check.instance("dtype", dtype, torch.dtype, "None or a torch.dtype")
        if not dtype.is_floating_point:
            raise TypeError(f"dtype must be a floating-point torch.dtype (parameters need "
                            f"gradients), got {dtype}")
    if device is not None:
        if isinstance(device, bool) or not isinstance(device, (str, int, torch.device)):
            raise TypeError(f"device must be None, a str or a torch.device, got "
                            f"{_check.show(device)} ({type(device).__name__})")
        try:
            torch.device(device)
        except (RuntimeError, ValueError) as exc:
            raise ValueError(f"device must name a torch device (e.g. 'cpu'), got "
                             f"{device!r}") from None
    return {"device": device, "dtype": dtype}


def _check_module_input(module: nn.Module, x: object, ref: Tensor | None) -> Tensor:
    """A module's input: a floating tensor (empty is legal, as in torch) with the dtype of
    ``ref`` (the module's weight or running mean; torch refuses mixed dtypes too)."""
    x = _check.tensor("x", x, nonempty=False)
    if ref is not None:
        _check.same_dtype("x", x, ref.dtype, "the module")
    return x


def _channel_axes(x: Array) -> tuple[int, ...]:
    """Every axis but the channel axis 1: (0,) for (N, C), (0, 2, 3) for (N, C, H, W)."""
    return (0,) + tuple(range(2, x.ndim))


def _per_channel(v: Array, ndim: int) -> Array:
    """(C,) -> (1, C, 1, ...) so it broadcasts against an (N, C, ...) input."""
    return v.reshape((1, -1) + (1,) * (ndim - 2))


def _values_per_channel(x: Array) -> int:
    return math.prod(x.shape[a] for a in _channel_axes(x))


def _finfo_eps(x: Array) -> float:
    return float(torch.finfo(x.dtype).eps if isinstance(x, Tensor) else np.finfo(x.dtype).eps)


# ------------------------------------------------------------------ pure functions
def batch_norm_train(x: Array, gamma: Array | None = None, beta: Array | None = None,
                     running: RunningStats | None = None, *, momentum: float | None = 0.1,
                     eps: float = 1e-5) -> tuple[Array, RunningStats | None]:
    r"""Batch norm in training mode: normalize with the batch's own statistics.

    Args:
        x: ``(N, C)``, ``(N, C, L)`` or ``(N, C, H, W)``; statistics per channel over all
            other axes (:math:`n` values).
        gamma, beta: ``(C,)`` scale and shift, or ``None`` (1 and 0).
        running: the current running estimates, or ``None`` to skip the update.
        momentum: :math:`m` in [0, 1], or ``None`` for the cumulative average (:math:`m = 1/t`).
        eps: :math:`\epsilon \ge 0`, added to the variance (0 gives the equation exactly;
            the modules, like torch's, refuse it in training).

    Returns:
        ``(y, new_running)``: ``y`` like ``x``; ``new_running`` a new
        :class:`RunningStats` (``count + 1``; the variance estimate unbiased), or
        ``None`` when ``running`` is ``None``. An empty batch (as torch): ``y`` empty,
        the running estimates unchanged, ``count + 1``.

    Raises:
        TypeError: ``x`` not a floating numpy array or torch tensor; ``gamma``, ``beta``,
            ``running.mean``/``running.var`` not arrays of ``x``'s kind (numpy with numpy,
            torch with torch); ``running`` not a :class:`RunningStats`; ``eps`` or
            ``momentum`` not a number.
        ValueError: ``x`` with fewer than 2 dimensions, or a single value per channel
            (the variance is undefined); ``gamma``, ``beta`` or the running statistics
            not of shape ``(C,)``; ``running.count`` < 0; ``eps`` < 0 or not finite;
            ``momentum`` outside [0, 1].
    """
    x = _check_array_input("x", x, min_ndim=2)
    axes = _channel_axes(x)
    C = x.shape[1]
    gamma, beta = _check_param("gamma", gamma, (C,), x), _check_param("beta", beta, (C,), x)
    running = _check_running(running, C, x)
    momentum, eps = _check_momentum(momentum), _check_eps(eps)
    n = _values_per_channel(x)
    if n == 1:
        raise ValueError(f"Expected more than 1 value per channel when training, got input "
                         f"x of shape {tuple(x.shape)}")
    if n == 0:          # an empty batch: nothing to normalize, nothing to learn from
        mu = x.sum(axis=axes, keepdims=True)                 # zeros, (1, C, 1..)
        var = mu + 1
    else:
        mu = x.mean(axis=axes, keepdims=True)                # (1) batch mean, (1, C, 1..)
        var = ((x - mu) ** 2).mean(axis=axes, keepdims=True)  # (2) biased batch variance
    x_hat = (x - mu) / (var + eps) ** 0.5                    # (3) normalize
    y = x_hat                                                # (4) scale and shift
    if gamma is not None:
        y = _per_channel(gamma, x.ndim) * y
    if beta is not None:
        y = y + _per_channel(beta, x.ndim)
    if running is None:
        return y, None
    count = int(running.count) + 1
    if n == 0:          # torch counts the batch but leaves the estimates as they were
        return y, RunningStats(mean=running.mean * 1, var=running.var * 1, count=count)
    m = 1.0 / count if momentum is None else momentum
    # the running estimates are state, not part of the graph (as torch's): no autograd
    with torch.no_grad() if isinstance(x, Tensor) else contextlib.nullcontext():
        mu, var = mu.reshape(-1), var.reshape(-1)
        new = RunningStats(mean=(1 - m) * running.mean + m * mu,
                           var=(1 - m) * running.var + m * var * (n / (n - 1)),   # unbiased
                           count=count)
    return y, new


def batch_norm_eval(x: Array, running_mean: Array, running_var: Array,
                    gamma: Array | None = None, beta: Array | None = None, *,
                    eps: float = 1e-5) -> Array:
    r"""Batch norm in inference mode: :math:`y = \gamma\,(x-\bar\mu)/\sqrt{\bar\sigma^2+\epsilon}
    + \beta` with the running estimates, the same for every example (a batch of one is fine).

    Raises:
        TypeError: ``x`` not a floating numpy array or torch tensor; ``running_mean``,
            ``running_var`` (required), ``gamma`` or ``beta`` not arrays of ``x``'s kind;
            ``eps`` not a number.
        ValueError: ``x`` with fewer than 2 dimensions; ``running_mean``,
            ``running_var``, ``gamma`` or ``beta`` not of shape ``(C,)``; ``eps`` < 0 or
            not finite.
    """
    x = _check_array_input("x", x, min_ndim=2)
    C = x.shape[1]
    running_mean = _check_param("running_mean", running_mean, (C,), x, required=True)
    running_var = _check_param("running_var", running_var, (C,), x, required=True)
    gamma, beta = _check_param("gamma", gamma, (C,), x), _check_param("beta", beta, (C,), x)
    eps = _check_eps(eps)
    mu, var = _per_channel(running_mean, x.ndim), _per_channel(running_var, x.ndim)
    y = (x - mu) / (var + eps) ** 0.5
    if gamma is not None:
        y = _per_channel(gamma, x.ndim) * y
    if beta is not None:
        y = y + _per_channel(beta, x.ndim)
    return y


def _trailing(x: Array, shape: tuple[int, ...]) -> tuple[int, ...]:
    """The axes of ``x`` that ``shape`` names: the last ``len(shape)``."""
    k = len(shape)
    if x.ndim < k or tuple(x.shape[-k:]) != shape:
        raise ValueError(f"x must end with normalized_shape {shape}, got shape {tuple(x.shape)}")
    return tuple(range(x.ndim - k, x.ndim))


def layer_norm(x: Array, normalized_shape: int | Sequence[int], gamma: Array | None = None,
               beta: Array | None = None, *, eps: float = 1e-5) -> Array:
    r"""Layer norm: each example normalized over its last ``len(normalized_shape)`` axes,

    .. math:: y = \gamma\,\frac{x-\mu}{\sqrt{\sigma^2+\epsilon}} + \beta,\qquad
              \mu, \sigma^2 \text{ (biased) over those axes.}

    Raises:
        TypeError: ``x`` not a floating numpy array or torch tensor; ``normalized_shape``
            neither an int nor a sequence of ints; ``gamma``/``beta`` not arrays of
            ``x``'s kind; ``eps`` not a number.
        ValueError: ``x`` not ending with ``normalized_shape``; a size < 1;
            ``gamma``/``beta`` not of shape ``normalized_shape``; ``eps`` < 0 or not finite.
    """
    x = _check_array_input("x", x)
    shape = _check_normalized_shape(normalized_shape)
    axes = _trailing(x, shape)
    gamma, beta = _check_param("gamma", gamma, shape, x), _check_param("beta", beta, shape, x)
    eps = _check_eps(eps)
    mu = x.mean(axis=axes, keepdims=True)
    var = ((x - mu) ** 2).mean(axis=axes, keepdims=True)
    y = (x - mu) / (var + eps) ** 0.5
    if gamma is not None:
        y = gamma * y
    if beta is not None:
        y = y + beta
    return y


def rms_norm(x: Array, normalized_shape: int | Sequence[int], gamma: Array | None = None, *,
             eps: float | None = None) -> Array:
    r"""RMS norm (Zhang & Sennrich, 2019): no centring, no shift,

    .. math:: y = \gamma\,\frac{x}{\sqrt{\operatorname{mean}(x^2)+\epsilon}} ,

    the mean over the last ``len(normalized_shape)`` axes. ``eps=None`` is the dtype's
    machine epsilon, as in ``torch.nn.RMSNorm``.

    Raises:
        TypeError, ValueError: as :func:`layer_norm` (``eps`` may also be ``None``).
    """
    x = _check_array_input("x", x)
    shape = _check_normalized_shape(normalized_shape)
    axes = _trailing(x, shape)
    gamma = _check_param("gamma", gamma, shape, x)
    eps = _check_eps(eps, optional=True)
    if eps is None:
        eps = _finfo_eps(x)
    y = x / ((x ** 2).mean(axis=axes, keepdims=True) + eps) ** 0.5
    return y if gamma is None else gamma * y


def group_norm(x: Array, num_groups: int, gamma: Array | None = None, beta: Array | None = None,
               *, eps: float = 1e-5) -> Array:
    r"""Group norm (Wu & He, 2018): the ``C`` channels of each example split into
    ``num_groups`` groups of ``C / num_groups``; each group normalized over its channels
    and positions (biased variance); then a per-*channel* :math:`\gamma, \beta`.

    ``num_groups = 1`` is layer norm over (C, positions); ``num_groups = C`` is
    instance norm.

    Raises:
        TypeError: ``x`` not a floating numpy array or torch tensor; ``num_groups`` not an
            int; ``gamma``/``beta`` not arrays of ``x``'s kind; ``eps`` not a number.
        ValueError: ``x`` with fewer than 2 dimensions; ``num_groups`` < 1 or not
            dividing ``C``; ``gamma``/``beta`` not of shape ``(C,)``; ``eps`` < 0 or not
            finite.
    """
    x = _check_array_input("x", x, min_ndim=2)
    G = _check.integer("num_groups", num_groups, minimum=1)
    N, C = x.shape[0], x.shape[1]
    if C % G:
        raise ValueError(f"num_channels ({C}) of x must be divisible by num_groups ({G})")
    gamma, beta = _check_param("gamma", gamma, (C,), x), _check_param("beta", beta, (C,), x)
    eps = _check_eps(eps)
    xg = x.reshape((N, G, math.prod(x.shape[1:]) // G))   # (N, G, C/G * positions)
    if _empty(x):       # no example, or no position: an empty output, as torch's
        mu = xg.sum(axis=(2,), keepdims=True)
        var = mu + 1
    else:
        mu = xg.mean(axis=(2,), keepdims=True)
        var = ((xg - mu) ** 2).mean(axis=(2,), keepdims=True)
    y = ((xg - mu) / (var + eps) ** 0.5).reshape(tuple(x.shape))
    if gamma is not None:
        y = _per_channel(gamma, x.ndim) * y
    if beta is not None:
        y = y + _per_channel(beta, x.ndim)
    return y


# ------------------------------------------------------------------ backward passes
def _normalize_backward(g_hat: Array, x_hat: Array, sigma: Array, axes: tuple[int, ...]) -> Array:
    r""":math:`\partial L/\partial x = \frac1\sigma\big(\hat g - \overline{\hat g} -
    \hat x\,\overline{\hat g\hat x}\big)`: the gradient through :math:`\hat x = (x-\mu)/\sigma`,
    with :math:`\hat g = \partial L/\partial \hat x` and bars the means over ``axes``.
    The two subtracted terms project out the directions of the mean and of :math:`\hat x`."""
    return (g_hat - g_hat.mean(axis=axes, keepdims=True)
            - x_hat * (g_hat * x_hat).mean(axis=axes, keepdims=True)) / sigma


def batch_norm_backward(grad_y: Array, x: Array, gamma: Array | None = None, *,
                        eps: float = 1e-5) -> tuple[Array, Array, Array]:
    r"""The backward pass of :func:`batch_norm_train` (batch statistics), by hand.

    Returns:
        ``(grad_x, grad_gamma, grad_beta)`` with
        :math:`\partial L/\partial\beta_c = \sum_i g_{ic}`,
        :math:`\partial L/\partial\gamma_c = \sum_i g_{ic}\hat x_{ic}`, and
        ``grad_x`` from :math:`\hat g = \gamma g` by the three-term formula.

    Raises:
        TypeError: ``grad_y`` or ``x`` not a floating numpy array or torch tensor, or not
            of the same kind; ``gamma`` not an array of ``x``'s kind; ``eps`` not a number.
        ValueError: ``grad_y`` not of ``x``'s shape; ``x`` with fewer than 2
            dimensions; ``gamma`` not of shape ``(C,)``; ``eps`` < 0 or not finite.
    """
    grad_y = _check_array_input("grad_y", grad_y, min_ndim=2)
    x = _check_array_input("x", x, min_ndim=2)
    _check.same_kind("grad_y", grad_y, "x", x)
    _check.same_shape("grad_y", grad_y, "x", x)
    axes = _channel_axes(x)
    gamma = _check_param("gamma", gamma, (x.shape[1],), x)
    eps = _check_eps(eps)
    if _empty(x):       # an empty batch: no gradient to pass on, zero for gamma and beta
        zeros = x.sum(axis=axes)
        return grad_y * 1, zeros, zeros * 1
    mu = x.mean(axis=axes, keepdims=True)
    sigma = (((x - mu) ** 2).mean(axis=axes, keepdims=True) + eps) ** 0.5
    x_hat = (x - mu) / sigma
    grad_beta = grad_y.sum(axis=axes)
    grad_gamma = (grad_y * x_hat).sum(axis=axes)
    g_hat = grad_y if gamma is None else grad_y * _per_channel(gamma, x.ndim)
    return _normalize_backward(g_hat, x_hat, sigma, axes), grad_gamma, grad_beta


def layer_norm_backward(grad_y: Array, x: Array, normalized_shape: int | Sequence[int],
                        gamma: Array | None = None, *, eps: float = 1e-5
                        ) -> tuple[Array, Array, Array]:
    r"""The backward pass of :func:`layer_norm`: the same three-term formula, the means
    over each example's normalized axes; ``grad_gamma``/``grad_beta`` summed over the
    leading (batch) axes.

    Returns:
        ``(grad_x, grad_gamma, grad_beta)``.

    Raises:
        TypeError: ``grad_y`` or ``x`` not a floating numpy array or torch tensor, or not
            of the same kind; as :func:`layer_norm` for the others.
        ValueError: ``grad_y`` not of ``x``'s shape; as :func:`layer_norm`.
    """
    grad_y = _check_array_input("grad_y", grad_y)
    x = _check_array_input("x", x)
    _check.same_kind("grad_y", grad_y, "x", x)
    _check.same_shape("grad_y", grad_y, "x", x)
    shape = _check_normalized_shape(normalized_shape)
    axes = _trailing(x, shape)
    gamma = _check_param("gamma", gamma, shape, x)
    eps = _check_eps(eps)
    mu = x.mean(axis=axes, keepdims=True)
    sigma = (((x - mu) ** 2).mean(axis=axes, keepdims=True) + eps) ** 0.5
    x_hat = (x - mu) / sigma
    lead = tuple(range(x.ndim - len(shape)))
    grad_beta = grad_y.sum(axis=lead) if lead else grad_y
    grad_gamma = (grad_y * x_hat).sum(axis=lead) if lead else grad_y * x_hat
    g_hat = grad_y if gamma is None else grad_y * gamma
    return _normalize_backward(g_hat, x_hat, sigma, axes), grad_gamma, grad_beta


# --------------------------------------------------------------------------- modules
def _register_affine(module: nn.Module, channels: int, affine: bool, kw: dict,
                     bias: bool = True) -> None:
    """Per-channel ``weight`` (gamma = 1) and ``bias`` (beta = 0; only with ``bias``), or
    both registered as None."""
    if affine:
        module.weight = nn.Parameter(torch.ones(channels, **kw))
    else:
        module.register_parameter("weight", None)
    if affine and bias:
        module.bias = nn.Parameter(torch.zeros(channels, **kw))
    else:
        module.register_parameter("bias", None)


class _BatchNorm(nn.Module):
    """Owns the parameters and running buffers (torch's names, so ``state_dict`` keys
    match); subclasses only check the input's dimensions."""

    _version = 2          # as torch's _NormBase: state dicts without num_batches_tracked load
    _dims: tuple[int, ...] = ()

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1,
                 affine: bool = True, track_running_stats: bool = True, device=None,
                 dtype=None, *, bias: bool = True) -> None:
        super().__init__()
        num_features = _check.integer("num_features", num_features, minimum=1)
        self.num_features = num_features
        self.eps = _check_eps(eps)
        self.momentum = _check_momentum(momentum)
        self.affine = affine = _check.flag("affine", affine)
        self.track_running_stats = track_running_stats = _check.flag(
            "track_running_stats", track_running_stats)
        kw = _check_factory(device, dtype)
        _register_affine(self, num_features, affine, kw, _check.flag("bias", bias))
        if track_running_stats:
            self.register_buffer("running_mean", torch.zeros(num_features, **kw))
            self.register_buffer("running_var", torch.ones(num_features, **kw))
            self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long, device=device))
        else:
            self.register_buffer("running_mean", None)
            self.register_buffer("running_var", None)
            self.register_buffer("num_batches_tracked", None)

    def reset_running_stats(self) -> None:
        if self.track_running_stats:
            self.running_mean.zero_()
            self.running_var.fill_(1)
            self.num_batches_tracked.zero_()

    def reset_parameters(self) -> None:
        self.reset_running_stats()
        if self.weight is not None:
            nn.init.ones_(self.weight)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def _check_input(self, x: object) -> Tensor:
        ref = self.weight if self.weight is not None else self.running_mean
        x = _check_module_input(self, x, ref)
        if x.dim() not in self._dims:
            raise ValueError(f"{type(self).__name__} expects a {' or '.join(f'{d}D' for d in self._dims)} "
                             f"input x, got shape {tuple(x.shape)}")
        if x.shape[1] != self.num_features:
            raise ValueError(f"{type(self).__name__}({self.num_features}) expects {self.num_features} "
                             f"channels at dim 1, got input x of shape {tuple(x.shape)}")
        return x

    def forward(self, x: Tensor) -> Tensor:
        """Normalize ``x`` (see the class docstring for the two modes).

        Raises:
            TypeError: ``x`` not a floating torch tensor, or not of the module's dtype.
            ValueError: ``x`` of the wrong number of dimensions (2 or 3 for
                :class:`BatchNorm1d`, 4 for :class:`BatchNorm2d`) or channels; one value
                per channel in training mode; ``eps`` = 0 with batch statistics (torch
                raises the same). An empty ``x`` gives an empty output, as torch's.
        """
        x = self._check_input(x)
        # Batch statistics in training mode, and in eval mode when nothing is tracked.
        use_batch = self.training or self.running_mean is None
        if use_batch:
            _check_training_eps(self.eps)
        if not use_batch:
            return batch_norm_eval(x, self.running_mean, self.running_var, self.weight,
                                   self.bias, eps=self.eps)
        update = self.training and self.track_running_stats
        running = None
        if update:
            running = RunningStats(self.running_mean, self.running_var,
                                   int(self.num_batches_tracked))
        y, new = batch_norm_train(x, self.weight, self.bias, running, momentum=self.momentum,
                                  eps=self.eps)
        if new is not None:
            with torch.no_grad():                 # buffers are state, not part of the graph
                self.running_mean.copy_(new.mean)
                self.running_var.copy_(new.var)
                self.num_batches_tracked.add_(1)
        return y

    def extra_repr(self) -> str:
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, "
                f"affine={self.affine}, bias={self.bias is not None}, "
                f"track_running_stats={self.track_running_stats}")

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs) -> None:
        version = local_metadata.get("version", None)
        key = prefix + "num_batches_tracked"
        if (version is None or version < 2) and self.track_running_stats and key not in state_dict:
            state_dict[key] = torch.tensor(0, dtype=torch.long)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)


class BatchNorm1d(_BatchNorm):
    r"""Batch norm over a 2D ``(N, C)`` or 3D ``(N, C, L)`` input; a drop-in for
    ``torch.nn.BatchNorm1d`` (same arguments, defaults, buffers and ``state_dict`` keys:
    ``weight, bias, running_mean, running_var, num_batches_tracked``; the keyword-only
    ``bias=False`` of torch 2.13 keeps gamma and drops beta).

    Training mode normalizes with the batch statistics (biased variance) and updates the
    running estimates (unbiased variance, momentum ``m``: see the module docstring);
    ``model.eval()`` switches to the running estimates. The mode is ``self.training``,
    never whether gradients are enabled.

    Raises:
        TypeError: ``num_features`` not an int; ``eps``/``momentum`` not numbers;
            ``affine``/``track_running_stats``/``bias`` not bools; ``dtype`` not a floating
            torch.dtype; ``device`` not a device.
        ValueError: ``num_features`` < 1, ``eps`` < 0 or not finite, ``momentum``
            outside [0, 1], an unknown ``device``. (``forward``: see its docstring.)
    """

    _dims = (2, 3)


class BatchNorm2d(_BatchNorm):
    r"""Batch norm over a 4D ``(N, C, H, W)`` input, statistics over ``N·H·W`` values per
    channel; a drop-in for ``torch.nn.BatchNorm2d`` (see :class:`BatchNorm1d`).

    Raises:
        TypeError, ValueError: as :class:`BatchNorm1d`.
    """

    _dims = (4,)


class LayerNorm(nn.Module):
    r"""Layer norm over the last ``len(normalized_shape)`` dimensions; a drop-in for
    ``torch.nn.LayerNorm(normalized_shape, eps=1e-5, elementwise_affine=True, bias=True)``
    (``state_dict`` keys ``weight``, ``bias``). See :func:`layer_norm`.

    Raises:
        TypeError: ``normalized_shape`` neither an int nor a sequence of ints; ``eps`` not
            a number; ``elementwise_affine``/``bias`` not bools; a bad ``dtype``/``device``.
        ValueError: a size < 1, ``eps`` < 0 or not finite, an unknown ``device``.
    """

    def __init__(self, normalized_shape: int | Sequence[int], eps: float = 1e-5,
                 elementwise_affine: bool = True, bias: bool = True, device=None, dtype=None) -> None:
        super().__init__()
        self.normalized_shape = _check_normalized_shape(normalized_shape)
        self.eps = _check_eps(eps)
        self.elementwise_affine = elementwise_affine = _check.flag("elementwise_affine",
                                                                   elementwise_affine)
        bias = _check.flag("bias", bias)
        kw = _check_factory(device, dtype)
        self.weight = nn.Parameter(torch.ones(self.normalized_shape, **kw)) if elementwise_affine else None
        self.bias = (nn.Parameter(torch.zeros(self.normalized_shape, **kw))
                     if elementwise_affine and bias else None)

    def forward(self, x: Tensor) -> Tensor:
        """Layer norm of ``x`` over its last ``len(normalized_shape)`` dimensions.

        Raises:
            TypeError: ``x`` not a floating torch tensor, or not of the module's dtype.
            ValueError: ``x`` not ending with ``normalized_shape``.
        """
        x = _check_module_input(self, x, self.weight)
        return layer_norm(x, self.normalized_shape, self.weight, self.bias, eps=self.eps)

    def extra_repr(self) -> str:
        return f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={self.elementwise_affine}"


class RMSNorm(nn.Module):
    r"""RMS norm over the last ``len(normalized_shape)`` dimensions; a drop-in for
    ``torch.nn.RMSNorm(normalized_shape, eps=None, elementwise_affine=True)`` (torch >=
    2.4; ``state_dict`` key ``weight``). ``eps=None``: the input dtype's machine epsilon.
    See :func:`rms_norm`.

    Raises:
        TypeError, ValueError: as :class:`LayerNorm` (``eps`` may also be ``None``).
    """

    def __init__(self, normalized_shape: int | Sequence[int], eps: float | None = None,
                 elementwise_affine: bool = True, device=None, dtype=None) -> None:
        super().__init__()
        self.normalized_shape = _check_normalized_shape(normalized_shape)
        self.eps = _check_eps(eps, optional=True)
        self.elementwise_affine = elementwise_affine = _check.flag("elementwise_affine",
                                                                   elementwise_affine)
        kw = _check_factory(device, dtype)
        if elementwise_affine:
            self.weight = nn.Parameter(torch.ones(self.normalized_shape, **kw))
        else:
            self.register_parameter("weight", None)

    def forward(self, x: Tensor) -> Tensor:
        """RMS norm of ``x`` over its last ``len(normalized_shape)`` dimensions.

        Raises:
            TypeError: ``x`` not a floating torch tensor, or not of the module's dtype
                (torch's ``RMSNorm`` promotes a mixed pair; we refuse it, as its
                ``LayerNorm`` does).
            ValueError: ``x`` not ending with ``normalized_shape``.
        """
        x = _check_module_input(self, x, self.weight)
        return rms_norm(x, self.normalized_shape, self.weight, eps=self.eps)

    def extra_repr(self) -> str:
        return f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={self.elementwise_affine}"


class GroupNorm(nn.Module):
    r"""Group norm; a drop-in for ``torch.nn.GroupNorm(num_groups, num_channels, eps=1e-5,
    affine=True, *, bias=True)`` on ``(N, C, *)`` inputs (``state_dict`` keys ``weight``,
    ``bias``).
    See :func:`group_norm`.

    Raises:
        TypeError: ``num_groups``/``num_channels`` not ints, ``eps`` not a number,
            ``affine``/``bias`` not bools, a bad ``dtype``/``device``.
        ValueError: a count < 1, ``num_channels`` not divisible by ``num_groups``,
            ``eps`` < 0 or not finite, an unknown ``device``.
    """

    def __init__(self, num_groups: int, num_channels: int, eps: float = 1e-5, affine: bool = True,
                 device=None, dtype=None, *, bias: bool = True) -> None:
        super().__init__()
        self.num_groups = num_groups = _check.integer("num_groups", num_groups, minimum=1)
        self.num_channels = num_channels = _check.integer("num_channels", num_channels, minimum=1)
        if num_channels % num_groups:
            raise ValueError(f"num_channels ({num_channels}) must be divisible by num_groups ({num_groups})")
        self.eps = _check_eps(eps)
        self.affine = affine = _check.flag("affine", affine)
        _register_affine(self, num_channels, affine, _check_factory(device, dtype),
                         _check.flag("bias", bias))

    def forward(self, x: Tensor) -> Tensor:
        """Group norm of an ``(N, num_channels, *)`` input ``x``.

        Raises:
            TypeError: ``x`` not a floating torch tensor, or not of the module's dtype.
            ValueError: ``x`` not of shape ``(N, num_channels, *)``.
        """
        x = _check_module_input(self, x, self.weight)
        if x.dim() < 2 or x.shape[1] != self.num_channels:
            raise ValueError(f"GroupNorm({self.num_groups}, {self.num_channels}) expects x of "
                             f"shape (N, {self.num_channels}, *), got {tuple(x.shape)}")
        return group_norm(x, self.num_groups, self.weight, self.bias, eps=self.eps)

    def extra_repr(self) -> str:
        return (f"{self.num_groups}, {self.num_channels}, eps={self.eps}, affine={self.affine}, "
                f"bias={self.bias is not None}")


# ------------------------------------------------------------------------- folding
_FOLDABLE = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def fold_batch_norm(layer: nn.Module, bn: nn.Module) -> nn.Module:
    r"""A copy of ``layer`` that computes ``bn(layer(x))`` with ``bn`` in eval mode: batch
    norm with running statistics is an affine map per channel, so it folds into the
    layer before it. With :math:`s_c = \gamma_c / \sqrt{\bar\sigma_c^2 + \epsilon}`,

    .. math:: W'_{c\cdot} = s_c\,W_{c\cdot},\qquad b'_c = s_c\,(b_c - \bar\mu_c) + \beta_c

    (:math:`b = 0` for a layer without bias, :math:`\gamma = 1, \beta = 0` without affine
    parameters). Inference then costs one layer instead of two. Training cannot fold: there
    the statistics are the batch's own. The same rule as torch's
    ``torch.nn.utils.fusion.fuse_linear_bn_eval`` / ``fuse_conv_bn_eval``.

    Args:
        layer: an ``nn.Linear`` (on ``(N, F)`` inputs) or ``nn.Conv1d/2d/3d`` whose output
            channels ``bn`` normalizes. Not changed.
        bn: a batch-norm module (torch's or :class:`BatchNorm1d`/:class:`BatchNorm2d`) in
            eval mode with running statistics.

    Returns:
        A new module of ``layer``'s type, with a bias (added if ``layer`` had none).

    Raises:
        TypeError: ``layer`` not a Linear or (non-transposed) Conv; ``bn`` not a batch norm.
        ValueError: ``bn`` in training mode (call ``model.eval()`` first), without running
            statistics (``track_running_stats=False``), or normalizing a different number
            of channels than ``layer`` produces.
    """
    if not isinstance(layer, _FOLDABLE):
        raise TypeError(f"layer must be an nn.Linear or nn.Conv1d/2d/3d, got "
                        f"{type(layer).__name__}")
    if not isinstance(bn, (nn.modules.batchnorm._BatchNorm, _BatchNorm)):
        raise TypeError(f"bn must be a batch-norm module (nn.BatchNorm1d/2d/3d or "
                        f"companion.norm.BatchNorm1d/2d), got {type(bn).__name__}")
    if bn.training:
        raise ValueError("bn must be in eval mode (call model.eval() first): the folded layer "
                         "reproduces batch norm with running statistics, not with batch ones")
    if bn.running_mean is None:
        raise ValueError("bn must track running statistics (track_running_stats=True): "
                         "without them batch norm uses each batch's own, which cannot fold")
    channels = layer.out_features if isinstance(layer, nn.Linear) else layer.out_channels
    if bn.num_features != channels:
        raise ValueError(f"bn normalizes {bn.num_features} channels but layer produces "
                         f"{channels}")
    folded = copy.deepcopy(layer)
    W = layer.weight.detach()
    b = layer.bias.detach() if layer.bias is not None else torch.zeros_like(bn.running_mean)
    gamma = bn.weight.detach() if bn.weight is not None else torch.ones_like(bn.running_mean)
    beta = bn.bias.detach() if bn.bias is not None else torch.zeros_like(bn.running_mean)
    s = gamma / (bn.running_var + bn.eps).sqrt()                     # s_c, (C,)
    folded.weight = nn.Parameter(W * s.reshape((-1,) + (1,) * (W.dim() - 1)),
                                 layer.weight.requires_grad)
    folded.bias = nn.Parameter(s * (b - bn.running_mean) + beta,
                               layer.weight.requires_grad)
    return folded


# ------------------------------------------------------------------------ invariances
#: The transformations of Ba, Kiros & Hinton (2016, Table 1) of a bias-free layer
#: ``z = x W^T`` (x: (n, d), W: (k, d)) followed by a norm; each takes (W, x, rng).
TRANSFORMATIONS = {
    "weight matrix re-scaling": lambda W, x, r: (3.0 * W, x),
    "weight matrix re-centring": lambda W, x, r: (W + r.normal(size=(1, W.shape[1])), x),
    "weight vector re-scaling": lambda W, x, r: (W * r.uniform(0.5, 3.0, size=(W.shape[0], 1)), x),
    "dataset re-scaling": lambda W, x, r: (W, 3.0 * x),
    "dataset re-centring": lambda W, x, r: (W, x + r.normal(size=(1, x.shape[1]))),
    "single example re-scaling": lambda W, x, r: (W, np.concatenate([3.0 * x[:1], x[1:]])),
}


def invariances(*, n: int = 16, d: int = 6, k: int = 8, seed: int = 0) -> dict[str, dict[str, bool]]:
    """Which norm's output is unchanged by which transformation, computed, not asserted.

    For each norm (``"batch"``, ``"layer"``, ``"rms"``, ``"group"`` with 2 groups) and
    each of :data:`TRANSFORMATIONS`, compares ``norm(x W^T)`` before and after, with
    ``eps = 0``, in float64 on random data (``n`` examples, ``d`` inputs, ``k`` units).

    Returns:
        ``{norm: {transformation: invariant}}``.

    Raises:
        TypeError: ``n``, ``d``, ``k`` or ``seed`` not an int.
        ValueError: ``n`` < 3 (the "single example" transformation needs examples to
            spare), ``d`` < 1, ``k`` < 4 or odd (group norm with 2 groups of >= 2 units),
            ``seed`` outside [0, 2**64 - 1].
    """
    n = _check.integer("n", n, minimum=3)
    d = _check.integer("d", d, minimum=1)
    k = _check.integer("k", k, minimum=4)
    if k % 2:
        raise ValueError(f"k must be an even int >= 4 (group norm uses 2 groups), got {k}")
    seed = _check.seed(seed)
    norms = {"batch": lambda z: batch_norm_train(z, eps=0.0)[0], "layer": lambda z: layer_norm(z, k, eps=0.0),
             "rms": lambda z: rms_norm(z, k, eps=0.0), "group": lambda z: group_norm(z, 2, eps=0.0)}
    table: dict[str, dict[str, bool]] = {}
    for name, f in norms.items():
        table[name] = {}
        for what, transform in TRANSFORMATIONS.items():
            rng = np.random.default_rng(seed)
            W, x = rng.normal(size=(k, d)), rng.normal(size=(n, d))
            W2, x2 = transform(W, x, rng)
            table[name][what] = bool(np.allclose(f(x @ W.T), f(x2 @ W2.T), atol=1e-10))
    return table
