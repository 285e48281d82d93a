"""Small networks whose training the book takes apart: a plain MLP and an Elman RNN.

* :func:`mlp` -- ``depth`` hidden layers of ``width`` units, every weight drawn from
  :math:`\\mathcal N(0, \\sigma_w^2 / n_{\\text{in}})` (``weight_scale`` is
  :math:`\\sigma_w`) unless a named initializer is asked for. Modules carry stable
  names ``fc1, act1, ..., fc{depth}, act{depth}, out`` so diagnostics can label them.
* :class:`SimpleRNN` and :func:`rnn_gradient_norms` -- the smallest network in which
  gradients explode or vanish *through time*: the backward signal reaching
  :math:`h_t` passes :math:`T - t` times through :math:`W_{hh}^\\top`, so it scales
  roughly as :math:`\\rho(W_{hh})^{T-t}`.

Example::

    from companion.nets import mlp
    net = mlp(784, 10, width=256, depth=10, activation="tanh", weight_scale=1.0, seed=0)
    [name for name, _ in net.named_children()][:3]   # ['fc1', 'act1', 'fc2']
"""
from __future__ import annotations

import contextlib
import math
from collections import OrderedDict
from typing import Callable

import numpy as np
import torch
from torch import Tensor, nn

from . import _check
from . import activations
from . import norm as norms
from .init import INITIALIZERS, get_initializer

__all__ = ["mlp", "SimpleRNN", "BatchFirst", "rnn_gradient_norms", "NORMS"]

#: Activation names that :func:`torch.nn.init.calculate_gain` knows; any other
#: activation gets ``nonlinearity="relu"`` when a kaiming initializer is asked for.
_GAIN_NAMES = ("relu", "leaky_relu", "tanh", "sigmoid", "selu", "linear")
_RECURRENT_INITS = ("gaussian", "orthogonal")


# ----------------------------------------------------------------------------- checks
def _generator(seed: object, name: str = "seed") -> torch.Generator | None:
    """A private generator seeded with ``seed`` (``None`` -> use torch's global RNG)."""
    seed = _check.optional_seed(seed, name)
    return None if seed is None else torch.Generator().manual_seed(seed)


def _activation(name: object):

    return activations.get(name)  # raises TypeError / ValueError listing the valid names


# -------------------------------------------------------------------------------- MLP
def _init_weight(
    weight: Tensor,
    *,
    weight_scale: float,
    init: str | Callable[[Tensor], object] | None,
    nonlinearity: str,
    generator: torch.Generator | None,
) -> None:
    """Fill one Linear weight in place (see :func:`mlp` for the rules)."""
    with torch.no_grad():
        if init is None:
            fan_in = weight.shape[1]
            weight.normal_(0.0, weight_scale / math.sqrt(fan_in), generator=generator)
        elif isinstance(init, str):

            fn = get_initializer(init)  # raises ValueError listing the valid names
            kwargs: dict = {}
            if init.startswith("kaiming"):
                kwargs["nonlinearity"] = nonlinearity
            if generator is not None:
                kwargs["generator"] = generator
            fn(weight, **kwargs)
        else:
            init(weight)  # draws from the global RNG (forked by mlp when seeded)


def mlp(
    in_features: int,
    out_features: int,
    width: int,
    depth: int,
    activation: str = "tanh",
    weight_scale: float = 1.0,
    *,
    init: str | Callable[[Tensor], object] | None = None,
    bias: bool = True,
    bias_std: float = 0.0,
    norm: str | Callable[[int], nn.Module] | None = None,
    seed: int | None = None,
) -> nn.Sequential:
    r"""A fully connected network with ``depth`` hidden layers of ``width`` units.

    .. math::

        h^{(0)} = x,\qquad h^{(\ell)} = \phi\!\left(W^{(\ell)} h^{(\ell-1)} + b^{(\ell)}\right)
        \ (\ell = 1..L),\qquad y = W^{\text{out}} h^{(L)} + b^{\text{out}},

    with, by default, :math:`W_{ij} \sim \mathcal N(0, \sigma_w^2 / n_{\text{in}})`
    for every Linear layer (``out`` included) and :math:`b = 0`. ``weight_scale``
    :math:`= \sigma_w = 1` keeps the forward variance constant for a linear network;
    the book varies it to show signals vanish (:math:`\sigma_w < 1`) or explode.

    Modules are named ``fc1, act1, fc2, act2, ..., fc{depth}, act{depth}, out``
    (``fc1``: in -> width, ``fc2..``: width -> width, ``out``: width -> out, no
    activation after ``out``), so ``net.fc3`` and diagnostics labels are stable. With
    ``norm``, a normalization layer ``norm{l}`` sits between each hidden ``fc{l}`` and
    ``act{l}`` (Ioffe & Szegedy's placement): ``fc1, norm1, act1, ...``.

    Args:
        in_features, out_features, width, depth: positive ints.
        activation: a name known to :func:`companion.activations.get`; each ``act``
            module is a fresh ``.module()`` (so PReLU layers do not share a slope).
        weight_scale: :math:`\sigma_w > 0`; ignored when ``init`` is given.
        init: ``None`` (the Gaussian above), the name of a :mod:`companion.init`
            initializer (``"xavier_normal"``, ``"kaiming_uniform"``, ...), or a
            callable ``f(weight)`` that fills a weight in place. Kaiming initializers get
            ``nonlinearity=`` the activation's name when
            :func:`torch.nn.init.calculate_gain` knows it (relu, leaky_relu, tanh,
            sigmoid, selu, linear), else ``"relu"``; the ``out`` layer gets the same.
        bias: ``False`` builds every Linear without a bias.
        bias_std: biases are :math:`\mathcal N(0, \text{bias\_std}^2)` when positive,
            else zero. Must be 0 when ``bias=False``.
        norm: ``None`` (no normalization), ``"batch"``
            (:class:`companion.norm.BatchNorm1d`), ``"layer"`` (``LayerNorm``), ``"rms"``
            (``RMSNorm``), ``"group"`` (``GroupNorm`` with ``gcd(width, 8)`` groups), or a
            callable ``f(width)`` returning a module (e.g. ``torch.nn.BatchNorm1d``).
            Norm layers start at :math:`\gamma = 1, \beta = 0` and draw nothing.
        seed: when given, every draw (weights and biases) comes from a private
            ``torch.Generator().manual_seed(seed)``: the same seed gives the same net,
            and torch's global RNG is left exactly as it was. (A callable ``init`` draws
            from a forked, seeded copy of the global RNG instead, with the same two
            guarantees.) ``None`` draws from the global RNG like ``nn.Linear`` does.

    Returns:
        ``nn.Sequential`` of float32 modules (call ``.double()`` for float64).

    Raises:
        TypeError: a size that is not an int (bools and floats included), an
            ``activation`` that is not a str, a non-numeric scale, an ``init`` or
            ``norm`` that is neither None, a name nor a callable (a class for ``init``),
            a ``bias`` that is not True/False, a ``seed`` that is not an int.
        ValueError: a size < 1, ``weight_scale <= 0``, ``bias_std < 0`` (or > 0 with
            ``bias=False``), NaN or infinite scales, an unknown activation, initializer
            or norm name, a ``seed`` outside ``[0, 2**64 - 1]``.

    References:
        LeCun et al., *Efficient BackProp* (1998); Glorot & Bengio (2010);
        He et al. (2015).

    Example::

        >>> net = mlp(2, 1, width=8, depth=3, activation="relu", seed=0)
        >>> [n for n, _ in net.named_children()]
        ['fc1', 'act1', 'fc2', 'act2', 'fc3', 'act3', 'out']
    """
    in_features = _check.integer("in_features", in_features, minimum=1)
    out_features = _check.integer("out_features", out_features, minimum=1)
    width = _check.integer("width", width, minimum=1)
    depth = _check.integer("depth", depth, minimum=1)
    act = _activation(activation)
    weight_scale = _check.positive("weight_scale", weight_scale)
    _check_init(init)
    bias = _check.flag("bias", bias)
    bias_std = _check.nonnegative("bias_std", bias_std)
    if not bias and bias_std > 0:
        raise ValueError(f"bias_std must be 0 when bias=False, got {bias_std}")
    make_norm = _check_norm(norm)
    generator = _generator(seed)
    nonlinearity = act.name if act.name in _GAIN_NAMES else "relu"

    sizes = [in_features] + [width] * depth + [out_features]
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    with contextlib.ExitStack() as stack:
        if seed is not None and callable(init):
            # A user callable draws from torch's global RNG: fork it (restored on exit)
            # and seed the fork, so the net is reproducible and the caller's RNG untouched.
            stack.enter_context(torch.random.fork_rng(devices=[]))
            torch.manual_seed(seed)
        for i in range(depth + 1):
            name = f"fc{i + 1}" if i < depth else "out"
            layers[name] = _linear(sizes[i], sizes[i + 1], bias=bias, bias_std=bias_std,
                                   weight_scale=weight_scale, init=init,
                                   nonlinearity=nonlinearity, generator=generator)
            if i < depth:
                if make_norm is not None:
                    layers[f"norm{i + 1}"] = make_norm(width)
                layers[f"act{i + 1}"] = act.module()
    return nn.Sequential(layers)


#: The names ``mlp(norm=...)`` accepts.
NORMS = ("batch", "layer", "rms", "group")


def _check_init(init: object) -> None:
    """``init`` of :func:`mlp`: None, an initializer name or a function ``f(weight)``."""
    if init is None:
        return
    if isinstance(init, str):

        _check.choice("init", init, INITIALIZERS)
        return
    _check.function("init", init, "None, an initializer name or a callable f(weight)")


def _check_norm(norm: object) -> Callable[[int], nn.Module] | None:
    """``norm`` of :func:`mlp` -> ``f(width)`` building one norm layer (or None)."""
    if norm is None:
        return None
    if not isinstance(norm, str) and not callable(norm):
        raise TypeError(f"norm must be None, one of {NORMS} or a callable f(width), "
                        f"got {_check.show(norm)} ({type(norm).__name__})")
    if callable(norm):
        def make(width: int) -> nn.Module:
            module = norm(width)
            if not isinstance(module, nn.Module):
                raise TypeError(f"norm({width}) must return an nn.Module, got {type(module).__name__}")
            return module
        return make

    table = {"batch": norms.BatchNorm1d, "layer": norms.LayerNorm, "rms": norms.RMSNorm,
             "group": lambda width: norms.GroupNorm(math.gcd(width, 8), width)}
    if norm not in table:
        raise ValueError(f"norm must be None, one of {NORMS} or a callable f(width), got {norm!r}")
    return table[norm]


def _linear(n_in: int, n_out: int, *, bias: bool, bias_std: float, weight_scale: float,
            init, nonlinearity: str, generator: torch.Generator | None) -> nn.Linear:
    # skip_init: build without torch's default draw, which would consume the global RNG.
    linear = torch.nn.utils.skip_init(nn.Linear, n_in, n_out, bias=bias)
    _init_weight(linear.weight, weight_scale=weight_scale, init=init,
                 nonlinearity=nonlinearity, generator=generator)
    if linear.bias is not None:
        with torch.no_grad():
            if bias_std > 0:
                linear.bias.normal_(0.0, bias_std, generator=generator)
            else:
                linear.bias.zero_()
    return linear


# -------------------------------------------------------------------------------- RNN
class SimpleRNN(nn.Module):
    r"""Elman RNN with a linear readout of the last hidden state.

    .. math::

        h_0 = 0,\qquad h_t = \phi\!\left(W_{hh} h_{t-1} + W_{xh} x_t + b\right)
        \ (t = 1..T),\qquad y = W_{hy} h_T .

    Backpropagating through time multiplies the signal by
    :math:`W_{hh}^\top \operatorname{diag}\phi'(\cdot)` once per step, so
    :math:`\lVert \partial L / \partial h_t \rVert` grows or shrinks geometrically in
    :math:`T - t` with the spectral radius :math:`\rho(W_{hh})` (exactly as
    :math:`\rho^{T-t}` for a linear :math:`\phi` and orthogonal-times-:math:`\rho`
    :math:`W_{hh}`).

    Args:
        input_size, hidden_size, output_size: positive ints.
        activation: a :func:`companion.activations.get` name (``"linear"`` for the
            closed-form case).
        spectral_radius: :math:`\rho > 0`, the largest :math:`|\lambda|` of
            :math:`W_{hh}` after initialization.
        recurrent_init: ``"gaussian"`` (default): :math:`W_{hh}` is drawn
            :math:`\mathcal N(0, 1/n_h)` and then rescaled by
            :math:`\rho / \max|\lambda|` so its spectral radius is exactly ``spectral_radius``
            (its singular values still spread); ``"orthogonal"``: a random orthogonal
            matrix (QR of a Gaussian, sign-corrected) times :math:`\rho`, so every
            eigenvalue *and* singular value has modulus :math:`\rho`.
        seed: when given, draws come from a private generator (global RNG untouched).

    Other weights: :math:`W_{xh} \sim \mathcal N(0, 1/n_x)`,
    :math:`W_{hy} \sim \mathcal N(0, 1/n_h)`, :math:`b = 0`.

    After each forward, ``self.hidden_states`` holds ``[h_1, ..., h_T]`` (each
    ``(B, hidden_size)``); when they require grad, ``retain_grad()`` was called on them,
    so after ``loss.backward()`` ``h.grad`` is :math:`\partial L/\partial h_t`.

    Raises:
        TypeError: a size or ``seed`` that is not an int, an ``activation`` or
            ``recurrent_init`` that is not a str, a non-numeric ``spectral_radius``.
        ValueError: a size < 1, ``spectral_radius`` <= 0 (or NaN, infinite), an unknown
            activation or ``recurrent_init``, a ``seed`` outside ``[0, 2**64 - 1]``.

    Example::

        >>> rnn = SimpleRNN(3, 16, spectral_radius=1.5, seed=0)
        >>> rnn(torch.randn(20, 4, 3)).shape      # x: (T, B, input_size)
        torch.Size([4, 1])
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        output_size: int = 1,
        *,
        activation: str = "tanh",
        spectral_radius: float = 1.0,
        recurrent_init: str = "gaussian",
        seed: int | None = None,
    ) -> None:
        super().__init__()
        self.input_size = _check.integer("input_size", input_size, minimum=1)
        self.hidden_size = _check.integer("hidden_size", hidden_size, minimum=1)
        self.output_size = _check.integer("output_size", output_size, minimum=1)
        act = _activation(activation)
        self.spectral_radius = _check.positive("spectral_radius", spectral_radius)
        self.recurrent_init = _check.choice("recurrent_init", recurrent_init, _RECURRENT_INITS)
        gen = _generator(seed)
        self.act = act.module()
        n_x, n_h = self.input_size, self.hidden_size

        self.W_xh = nn.Parameter(torch.randn(n_h, n_x, generator=gen) / math.sqrt(n_x))
        self.W_hh = nn.Parameter(_recurrent_matrix(n_h, self.spectral_radius, recurrent_init, gen))
        self.b = nn.Parameter(torch.zeros(n_h))
        self.W_hy = nn.Parameter(torch.randn(self.output_size, n_h, generator=gen) / math.sqrt(n_h))
        self.hidden_states: list[Tensor] = []

    def forward(self, x: Tensor) -> Tensor:
        """``x``: (T, B, input_size), time first. Returns ``y``: (B, output_size).

        Raises:
            TypeError: ``x`` is not a torch tensor, not floating, or not of the model's
                dtype (float32 unless the model was converted, e.g. by ``.double()``).
            ValueError: ``x`` is not 3-D with ``input_size`` features, is empty (T or
                B = 0), or holds NaN or infinite values.
        """
        _check_sequence_input("x", x, self.input_size, self.W_hh.dtype, "(T, B, {})", finite=True)
        T, B, _ = x.shape
        h = x.new_zeros(B, self.hidden_size)                        # h_0: (B, n_h)
        self.hidden_states = []
        for t in range(T):
            h = self.act(h @ self.W_hh.T + x[t] @ self.W_xh.T + self.b)  # h_t: (B, n_h)
            if h.requires_grad:
                h.retain_grad()
            self.hidden_states.append(h)
        return h @ self.W_hy.T                                      # y: (B, n_out)

    def __getstate__(self) -> dict:
        # the hidden states are non-leaf tensors of the last pass, which deepcopy refuses
        state = self.__dict__.copy()
        state["hidden_states"] = []
        return state

    def extra_repr(self) -> str:
        return (f"input_size={self.input_size}, hidden_size={self.hidden_size}, "
                f"output_size={self.output_size}, spectral_radius={self.spectral_radius}, "
                f"recurrent_init={self.recurrent_init!r}")


def _check_sequence_input(name: str, x: object, features: int | None, dtype: torch.dtype | None,
                    layout: str, *, finite: bool) -> Tensor:
    """A non-empty 3-D floating tensor with ``features`` in its last dim and the model's
    ``dtype`` (``layout`` names the dims for the message, ``{}`` the features)."""
    want = layout.format(features if features is not None else "features")
    x = _check.tensor(name, x, nonempty=False)  # a tensor, real floating
    if x.ndim != 3:
        raise ValueError(f"{name} must have shape {want}, got {_check.show(x)}")
    if features is not None and x.shape[2] != features:
        raise ValueError(f"{name} must have shape {want} ({features} features in the last "
                         f"dimension), got {_check.show(x)}")
    if x.numel() == 0:
        raise ValueError(f"{name} must not be empty, got {_check.show(x)}")
    if dtype is not None:
        _check.same_dtype(name, x, dtype)
    if finite:
        _check.finite_values(name, x)
    return x


class BatchFirst(nn.Module):
    """Wraps a time-first model such as :class:`SimpleRNN` for batch-first data:
    ``(B, T, features)`` -> ``(T, B, features)``, so that :func:`companion.train.train`
    (which slices minibatches along dim 0) can train it.

    Raises:
        TypeError: ``rnn`` is not a ``torch.nn.Module`` instance.
    """

    def __init__(self, rnn: nn.Module):
        super().__init__()
        self.rnn = _check.module("rnn", rnn)

    def forward(self, x: Tensor) -> Tensor:
        """``x``: (B, T, features), batch first; returns ``rnn(x.transpose(0, 1))``.

        Raises:
            TypeError: ``x`` is not a floating torch tensor of the wrapped model's dtype.
            ValueError: ``x`` is not 3-D, is empty, or (for a wrapped model with an
                ``input_size``) has the wrong number of features.
        """
        features = getattr(self.rnn, "input_size", None)
        features = features if isinstance(features, int) else None
        param = next(self.rnn.parameters(), None)
        _check_sequence_input("x", x, features, None if param is None else param.dtype,
                        "(B, T, {})", finite=False)
        return self.rnn(x.transpose(0, 1))


def _recurrent_matrix(n: int, rho: float, kind: str, gen: torch.Generator | None) -> Tensor:
    """An (n, n) float32 matrix with spectral radius ``rho`` (computed in float64)."""
    a = torch.randn(n, n, generator=gen, dtype=torch.float64)
    if kind == "orthogonal":
        q, r = torch.linalg.qr(a)
        w = q * torch.sign(torch.diagonal(r))      # sign fix: Haar-distributed Q
    else:
        w = a / math.sqrt(n)
    radius = torch.linalg.eigvals(w).abs().max()
    assert radius > 0, "a Gaussian matrix is singular with probability 0"
    return (w * (rho / radius)).float()


def rnn_gradient_norms(
    rnn: SimpleRNN, seq_len: int, *, batch: int = 8, seed: int = 0
) -> np.ndarray:
    r"""Norms of the backward signal :math:`\lVert \partial L/\partial h_t \rVert`, t = 1..T.

    Runs ``rnn`` on a standard-normal input of shape ``(seq_len, batch, input_size)``
    (drawn from a private generator seeded with ``seed``), takes
    :math:`L = \sum y`, and returns the Frobenius norm over the batch of
    :math:`\partial L/\partial h_t` for each step. Entry ``T - 1`` is the step next to
    the loss; entry 0 is the farthest back in time. Uses :func:`torch.autograd.grad`, so
    no ``.grad`` of the parameters is touched.

    Returns:
        float64 array of length ``seq_len``.

    ``seed=None`` draws the input from torch's global RNG instead.

    Raises:
        TypeError: ``rnn`` is not a :class:`SimpleRNN`; ``seq_len``, ``batch`` or
            ``seed`` is not an int.
        ValueError: ``seq_len`` or ``batch`` < 1; ``seed`` outside ``[0, 2**64 - 1]``.

    Example::

        >>> g = rnn_gradient_norms(SimpleRNN(1, 8, activation="linear",
        ...     spectral_radius=0.5, recurrent_init="orthogonal", seed=0), 10)
        >>> bool(np.allclose(g[:-1] / g[1:], 0.5))
        True
    """
    _check.instance("rnn", rnn, SimpleRNN, "a SimpleRNN (companion.nets)")
    seq_len = _check.integer("seq_len", seq_len, minimum=1)
    batch = _check.integer("batch", batch, minimum=1)
    gen = _generator(seed)
    x = torch.randn(seq_len, batch, rnn.input_size, generator=gen, dtype=rnn.W_hh.dtype)
    x.requires_grad_(True)          # keeps the graph alive even if the weights are frozen
    with torch.enable_grad():
        loss = rnn(x).sum()
        grads = torch.autograd.grad(loss, rnn.hidden_states)
    return np.array([g.norm().item() for g in grads], dtype=np.float64)
