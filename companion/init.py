r"""Weight initializers with torch.nn.init's names, arguments and draws.

The scale of each scheme is one small formula function whose body is the book's
equation (:func:`xavier_std`, :func:`kaiming_std`, :func:`lecun_std`,
:func:`uniform_bound`); the in-place ``*_`` functions compute that scale and then draw
exactly as ``torch.nn.init`` does, so with the same seed they return the *same*
tensor, bit for bit. Each also fills a float numpy array in place, drawing from a
``numpy.random.Generator`` (``generator=``, default ``np.random.default_rng()``).

Fans follow torch: a weight of shape ``(out, in, *kernel)`` has
:math:`n_\text{in} = \text{in}\cdot\prod\text{kernel}` and
:math:`n_\text{out} = \text{out}\cdot\prod\text{kernel}`.

Differences from torch: a negative ``gain`` or ``std`` raises ``ValueError`` (torch
errors for some and silently flips signs for others; a gain of 0 is allowed and gives
zeros), as do a bad ``mode`` or ``nonlinearity`` even for an empty tensor (torch skips
its checks there). Every argument is checked where it enters, in the order of the
signature: ``TypeError`` for a wrong type, ``ValueError`` for a wrong value.

Example::

    import torch
    from companion import init
    w = torch.empty(256, 784)
    init.kaiming_normal_(w, nonlinearity="relu")       # std = sqrt(2 / 784)
    init.get_initializer("kaiming_normal")(w)          # the same: He init for ReLU
"""
from __future__ import annotations

import functools
import math
from types import MappingProxyType
from typing import Any, Callable

import numpy as np
import torch

from . import _check

__all__ = [
    "calculate_gain", "calculate_fan_in_and_fan_out", "xavier_std", "kaiming_std",
    "lecun_std", "uniform_bound", "xavier_uniform_", "xavier_normal_", "kaiming_uniform_",
    "kaiming_normal_", "lecun_normal_", "orthogonal_", "normal_", "zeros_", "constant_",
    "get_initializer", "INITIALIZERS",
]

Array = Any  # a torch.Tensor or a float np.ndarray, filled in place and returned
Generator = Any  # torch.Generator for tensors, numpy.random.Generator for arrays

_LINEAR_NAMES = ("linear", "conv1d", "conv2d", "conv3d", "conv_transpose1d",
                 "conv_transpose2d", "conv_transpose3d")
NONLINEARITIES = _LINEAR_NAMES + ("sigmoid", "tanh", "relu", "leaky_relu", "selu")
MODES = ("fan_in", "fan_out")


# ------------------------------------------------------------------------------ checks
def _check_weight(tensor: object) -> tuple[int, int]:
    """The weight an in-place initializer fills: a numpy array or torch tensor of a real
    floating dtype (empty included: torch leaves an empty tensor alone) with at least 2
    dimensions; its ``(fan_in, fan_out)``."""
    return _fans(_check.array("tensor", tensor, nonempty=False))


def _check_generator(tensor: Array, generator: object) -> None:
    """``generator`` matches the kind of ``tensor``: a torch.Generator for a tensor, a
    numpy.random.Generator for an array, or None (the global RNG / a fresh default_rng)."""
    if generator is None:
        return
    if isinstance(tensor, torch.Tensor):
        _check.instance("generator", generator, torch.Generator,
                        "a torch.Generator (or None) for a torch tensor")
    else:
        _check.instance("generator", generator, np.random.Generator,
                        "a numpy.random.Generator (or None) for a numpy array")


def _numpy_rng(generator: np.random.Generator | None) -> np.random.Generator:
    return np.random.default_rng() if generator is None else generator


# ------------------------------------------------------- drawing, exactly as torch does
def _fill_uniform(tensor: Array, bound: float, generator: Generator) -> Array:
    """Fill with :math:`U(-\\text{bound}, \\text{bound})`."""
    if isinstance(tensor, torch.Tensor):
        with torch.no_grad():
            return tensor.uniform_(-bound, bound, generator=generator)
    tensor[...] = _numpy_rng(generator).uniform(-bound, bound, size=tensor.shape)
    return tensor


def _fill_normal(tensor: Array, mean: float, std: float, generator: Generator) -> Array:
    """Fill with :math:`\\mathcal N(\\text{mean}, \\text{std}^2)`."""
    if isinstance(tensor, torch.Tensor):
        with torch.no_grad():
            return tensor.normal_(mean, std, generator=generator)
    tensor[...] = _numpy_rng(generator).normal(mean, std, size=tensor.shape)
    return tensor


# ------------------------------------------------------------------- fans and the gain
def calculate_fan_in_and_fan_out(tensor: Array) -> tuple[int, int]:
    r"""``(fan_in, fan_out)`` of a weight of shape ``(out, in, *kernel)``.

    :math:`n_\text{in} = \text{in}\cdot r`, :math:`n_\text{out} = \text{out}\cdot r`
    with receptive field :math:`r = \prod \text{kernel}` (1 for a Linear weight).

    Raises:
        TypeError: ``tensor`` is not a numpy array or torch tensor of a numeric dtype.
        ValueError: ``tensor`` has fewer than 2 dimensions (as torch).
    """
    _check.array("tensor", tensor, floating=False, nonempty=False)
    return _fans(tensor)


def _fans(tensor: Array) -> tuple[int, int]:
    shape = tuple(tensor.shape)
    if len(shape) < 2:
        raise ValueError(f"tensor must have at least 2 dimensions to compute fan_in and "
                         f"fan_out, got shape {shape}")
    receptive_field = math.prod(shape[2:])
    return shape[1] * receptive_field, shape[0] * receptive_field


def calculate_gain(nonlinearity: str, param: float | None = None) -> float:
    r"""The gain :math:`g` that keeps the forward variance for this nonlinearity.

    linear / conv*: 1, sigmoid: 1, tanh: 5/3, relu: :math:`\sqrt2`,
    leaky_relu: :math:`\sqrt{2/(1+a^2)}` with slope ``param`` (default 0.01),
    selu: 3/4 -- the values of ``torch.nn.init.calculate_gain``. For ReLU,
    :math:`\mathbb E[\text{relu}(z)^2] = \tfrac12\mathbb E[z^2]`, hence :math:`g^2 = 2`.
    ``param`` is used by leaky_relu only (as in torch), but checked for every name.

    Raises:
        TypeError: ``nonlinearity`` is not a str; ``param`` is neither None nor a real
            number.
        ValueError: ``nonlinearity`` is not one of ``NONLINEARITIES``; ``param`` is NaN
            or infinite.
    """
    _check.choice("nonlinearity", nonlinearity, NONLINEARITIES)
    param = _check.optional_real("param (negative_slope)", param)
    return _gain_of(nonlinearity, param)


def _gain_of(nonlinearity: str, param: float | None) -> float:
    if nonlinearity in _LINEAR_NAMES or nonlinearity == "sigmoid":
        return 1.0
    if nonlinearity == "tanh":
        return 5.0 / 3
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "leaky_relu":
        a = 0.01 if param is None else param
        return math.sqrt(2.0 / (1 + a**2))
    return 3.0 / 4  # selu: found empirically (pytorch/pytorch#50664)


# --------------------------------------------------------- the book's scale formulas
def xavier_std(fan_in: int, fan_out: int, gain: float = 1.0) -> float:
    r"""Glorot & Bengio (2010): :math:`\sigma = g\sqrt{2/(n_\text{in}+n_\text{out})}`.

    Raises:
        TypeError: a fan that is not an int, a gain that is not a real number.
        ValueError: a fan < 1, a negative, NaN or infinite gain.
    """
    fan_in = _check.integer("fan_in", fan_in, minimum=1)
    fan_out = _check.integer("fan_out", fan_out, minimum=1)
    gain = _check.nonnegative("gain", gain)
    return gain * math.sqrt(2.0 / float(fan_in + fan_out))


def kaiming_std(fan: int, gain: float) -> float:
    r"""He et al. (2015): :math:`\sigma = g/\sqrt{n}`, :math:`n` = fan_in or fan_out.

    Raises:
        TypeError: ``fan`` is not an int, ``gain`` not a real number.
        ValueError: ``fan < 1``; ``gain`` negative, NaN or infinite.
    """
    fan = _check.integer("fan", fan, minimum=1)
    gain = _check.nonnegative("gain", gain)
    return gain / math.sqrt(fan)


def lecun_std(fan_in: int) -> float:
    r"""LeCun et al. (1998): :math:`\sigma = 1/\sqrt{n_\text{in}}` (He with :math:`g=1`).

    Raises:
        TypeError: ``fan_in`` is not an int.
        ValueError: ``fan_in < 1``.
    """
    fan_in = _check.integer("fan_in", fan_in, minimum=1)
    return 1 / math.sqrt(fan_in)


def uniform_bound(std: float) -> float:
    r""":math:`U(-b, b)` has variance :math:`b^2/3`, so :math:`b = \sqrt3\,\sigma`.

    Raises:
        TypeError: ``std`` is not a real number.
        ValueError: ``std`` is negative, NaN or infinite.
    """
    std = _check.nonnegative("std", std)
    return math.sqrt(3.0) * std


# --------------------------------------------------------------------- the initializers
def xavier_uniform_(tensor: Array, gain: float = 1.0,
                    generator: Generator = None) -> Array:
    r"""Fill with :math:`U(-b, b)`, :math:`b = g\sqrt{6/(n_\text{in}+n_\text{out})}`.

    Raises:
        TypeError: ``tensor`` is not a numpy array or torch tensor with a real floating
            dtype; ``gain`` is not a real number; a ``generator`` of the wrong kind for
            ``tensor`` (a ``torch.Generator`` for a tensor, a ``numpy.random.Generator``
            for an array).
        ValueError: ``tensor`` has fewer than 2 dimensions; ``gain`` is negative, NaN or
            infinite.
    """
    fan_in, fan_out = _check_weight(tensor)
    gain = _check.nonnegative("gain", gain)
    _check_generator(tensor, generator)
    if math.prod(tensor.shape) == 0:
        return tensor  # an empty tensor: nothing to draw
    return _fill_uniform(tensor, uniform_bound(xavier_std(fan_in, fan_out, gain)), generator)


def xavier_normal_(tensor: Array, gain: float = 1.0,
                   generator: Generator = None) -> Array:
    r"""Fill with :math:`\mathcal N(0, \sigma^2)`,
    :math:`\sigma = g\sqrt{2/(n_\text{in}+n_\text{out})}`.

    Raises:
        TypeError: ``tensor`` is not a numpy array or torch tensor with a real floating
            dtype; ``gain`` is not a real number; a ``generator`` of the wrong kind for
            ``tensor`` (a ``torch.Generator`` for a tensor, a ``numpy.random.Generator``
            for an array).
        ValueError: ``tensor`` has fewer than 2 dimensions; ``gain`` is negative, NaN or
            infinite.
    """
    fan_in, fan_out = _check_weight(tensor)
    gain = _check.nonnegative("gain", gain)
    _check_generator(tensor, generator)
    if math.prod(tensor.shape) == 0:
        return tensor  # an empty tensor: nothing to draw
    return _fill_normal(tensor, 0.0, xavier_std(fan_in, fan_out, gain), generator)


def _kaiming_args(tensor: Array, a: float, mode: str, nonlinearity: str,
                  generator: Generator) -> float | None:
    """Validate; return :math:`\\sigma = g/\\sqrt{n}`, or None for an empty tensor."""
    fan_in, fan_out = _check_weight(tensor)  # rejects 1-d tensors, empty or not
    a = _check.real("a", a)
    _check.choice("mode", mode, MODES)
    _check.choice("nonlinearity", nonlinearity, NONLINEARITIES)
    _check_generator(tensor, generator)
    gain = _gain_of(nonlinearity, a)
    fan = fan_in if mode == "fan_in" else fan_out
    if 0 in tuple(tensor.shape):
        return None  # torch: "Initializing zero-element tensors is a no-op"
    return kaiming_std(fan, gain)


def kaiming_uniform_(tensor: Array, a: float = 0, mode: str = "fan_in",
                     nonlinearity: str = "leaky_relu", generator: Generator = None) -> Array:
    r"""Fill with :math:`U(-b, b)`, :math:`b = g\sqrt{3/n}` (He uniform).

    ``a`` is the leaky_relu slope for the gain; ``mode`` picks :math:`n`: ``"fan_in"``
    keeps the forward variance, ``"fan_out"`` the backward one. torch's default
    ``nonlinearity="leaky_relu"`` with ``a=0`` gives the ReLU gain :math:`\sqrt2`.

    Raises:
        TypeError: ``tensor`` is not a numpy array or torch tensor with a real floating
            dtype; ``a`` is not a real number; ``mode`` or ``nonlinearity`` is not a str;
            a ``generator`` of the wrong kind for ``tensor``.
        ValueError: ``tensor`` has fewer than 2 dimensions; ``a`` is NaN or infinite;
            ``mode`` is not ``"fan_in"``/``"fan_out"``; an unknown ``nonlinearity``.
    """
    std = _kaiming_args(tensor, a, mode, nonlinearity, generator)
    return tensor if std is None else _fill_uniform(tensor, uniform_bound(std), generator)


def kaiming_normal_(tensor: Array, a: float = 0, mode: str = "fan_in",
                    nonlinearity: str = "leaky_relu", generator: Generator = None) -> Array:
    r"""Fill with :math:`\mathcal N(0, \sigma^2)`, :math:`\sigma = g/\sqrt{n}` (He normal).

    Arguments and errors as in :func:`kaiming_uniform_`.
    """
    std = _kaiming_args(tensor, a, mode, nonlinearity, generator)
    return tensor if std is None else _fill_normal(tensor, 0.0, std, generator)


def lecun_normal_(tensor: Array, generator: Generator = None) -> Array:
    r"""Fill with :math:`\mathcal N(0, 1/n_\text{in})` (LeCun; the init SELU assumes).

    Not in torch; it draws exactly what ``torch.nn.init.kaiming_normal_(tensor,
    nonlinearity="linear")`` draws.

    Raises:
        TypeError: ``tensor`` is not a numpy array or torch tensor with a real floating
            dtype; a ``generator`` of the wrong kind for ``tensor`` (a
            ``torch.Generator`` for a tensor, a ``numpy.random.Generator`` for an array).
        ValueError: ``tensor`` has fewer than 2 dimensions.
    """
    fan_in, _ = _check_weight(tensor)
    _check_generator(tensor, generator)
    if math.prod(tensor.shape) == 0:
        return tensor
    return _fill_normal(tensor, 0.0, lecun_std(fan_in), generator)


def orthogonal_(tensor: Array, gain: float = 1, generator: Generator = None) -> Array:
    r"""Fill with a (semi-)orthogonal matrix times ``gain`` (Saxe et al., 2013).

    With :math:`A` of shape ``(rows, cols)`` (trailing dims flattened) and i.i.d.
    :math:`\mathcal N(0,1)` entries, :math:`A = QR` (of :math:`A^\top` if wide) and
    :math:`W = g\,Q\operatorname{diag}(\operatorname{sign} R_{ii})`; the sign fix makes
    :math:`Q` Haar-distributed (Mezzadri, 2007). Then :math:`W W^\top = g^2 I` (wide)
    or :math:`W^\top W = g^2 I` (tall).

    Raises:
        TypeError: ``tensor`` is not a numpy array or torch tensor with a real floating
            dtype; ``gain`` is not a real number; a ``generator`` of the wrong kind for
            ``tensor`` (a ``torch.Generator`` for a tensor, a ``numpy.random.Generator``
            for an array).
        ValueError: ``tensor`` has fewer than 2 dimensions; ``gain`` is negative, NaN or
            infinite.
    """
    _check.array("tensor", tensor, nonempty=False)
    if tensor.ndim < 2:
        raise ValueError(f"tensor must have at least 2 dimensions, got shape "
                         f"{tuple(tensor.shape)}")
    gain = _check.nonnegative("gain", gain)
    _check_generator(tensor, generator)
    rows = tensor.shape[0]
    if rows == 0 or math.prod(tensor.shape) == 0:
        return tensor
    cols = math.prod(tensor.shape) // rows
    if isinstance(tensor, torch.Tensor):
        # 1. draw, as torch: a (rows, cols) standard normal matrix, transposed if wide
        flattened = tensor.new_empty((rows, cols)).normal_(0, 1, generator=generator)
        if rows < cols:
            flattened.t_()
        # 2. QR and sign correction, 3. undo the transpose, scale and copy in
        q, r = torch.linalg.qr(flattened)
        q *= torch.diag(r, 0).sign()
        if rows < cols:
            q.t_()
        with torch.no_grad():
            tensor.copy_(q.reshape(tensor.shape))
            tensor.mul_(gain)
        return tensor
    flattened = _numpy_rng(generator).standard_normal((rows, cols))
    if rows < cols:
        flattened = flattened.T
    q, r = np.linalg.qr(flattened)
    q = q * np.sign(np.diag(r))
    if rows < cols:
        q = q.T
    tensor[...] = gain * q.reshape(tensor.shape)
    return tensor


def normal_(tensor: Array, mean: float = 0.0, std: float = 1.0,
            generator: Generator = None) -> Array:
    r"""Fill with :math:`\mathcal N(\text{mean}, \text{std}^2)` (any shape).

    Raises:
        TypeError: ``tensor`` is not a numpy array or torch tensor with a real floating
            dtype; ``mean`` or ``std`` is not a real number; a ``generator`` of the
            wrong kind for ``tensor``.
        ValueError: ``mean`` is NaN or infinite; ``std`` is negative, NaN or infinite.
    """
    _check.array("tensor", tensor, nonempty=False)
    mean = _check.real("mean", mean)
    std = _check.nonnegative("std", std)
    _check_generator(tensor, generator)
    return _fill_normal(tensor, mean, std, generator)


def constant_(tensor: Array, val: float) -> Array:
    """Fill with ``val`` (any shape and numeric dtype).

    Raises:
        TypeError: ``tensor`` is not a numpy array or torch tensor of a numeric dtype;
            ``val`` is not a real number.
        ValueError: ``val`` is NaN or infinite.
    """
    _check.array("tensor", tensor, floating=False, nonempty=False)
    _check.real("val", val)  # the original val is filled: ints stay exact
    if isinstance(tensor, torch.Tensor):
        with torch.no_grad():
            return tensor.fill_(val)
    tensor[...] = val
    return tensor


def zeros_(tensor: Array) -> Array:
    """Fill with zeros (any shape and numeric dtype).

    Raises:
        TypeError: ``tensor`` is not a numpy array or torch tensor of a numeric dtype.
    """
    _check.array("tensor", tensor, floating=False, nonempty=False)
    if isinstance(tensor, torch.Tensor):
        with torch.no_grad():
            return tensor.zero_()
    tensor[...] = 0
    return tensor


# ----------------------------------------------------------------------------- registry
def _zeros_ignoring_generator(tensor: Array, generator: Generator = None) -> Array:
    """:func:`zeros_` with the ``generator=`` keyword every registry entry accepts."""
    return zeros_(tensor)


#: name -> in-place initializer ``f(weight, ..., generator=None)``. The kaiming entries
#: default to ``nonlinearity="relu"`` (He init), so ``f(w)`` is He init for ReLU and
#: ``f(w, nonlinearity="tanh")`` overrides it.
INITIALIZERS: MappingProxyType[str, Callable[..., Array]] = MappingProxyType({
    "xavier_normal": xavier_normal_,
    "xavier_uniform": xavier_uniform_,
    "kaiming_normal": functools.partial(kaiming_normal_, nonlinearity="relu"),
    "kaiming_uniform": functools.partial(kaiming_uniform_, nonlinearity="relu"),
    "lecun_normal": lecun_normal_,
    "orthogonal": orthogonal_,
    "zeros": _zeros_ignoring_generator,
})


def get_initializer(name: str) -> Callable[..., Array]:
    """The in-place initializer called ``name`` (see :data:`INITIALIZERS`).

    Every entry takes ``(tensor, ..., generator=None)``; the kaiming ones also take
    ``nonlinearity=`` (default ``"relu"``), ``a=`` and ``mode=``. Example::

        import torch
        from companion.init import get_initializer
        w = torch.empty(64, 32)
        get_initializer("kaiming_normal")(w)                       # He, ReLU
        get_initializer("kaiming_normal")(w, nonlinearity="tanh")  # gain 5/3

    Raises:
        TypeError: ``name`` is not a str.
        ValueError: ``name`` is not a key of :data:`INITIALIZERS` (the message lists them).
    """
    _check.string("initializer name", name)
    return INITIALIZERS[_check.choice("initializer name", name, tuple(INITIALIZERS))]
