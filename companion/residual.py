r"""Residual networks: the block :math:`x + \alpha F(x)`, its plain twin, and Fixup.

* :class:`ResidualMLP` -- a stem, ``depth`` residual blocks and a head:

  .. math::

      x_0 = W_{\text{in}}\,u,\qquad
      x_{\ell} = x_{\ell-1} + \alpha\,F_\ell(x_{\ell-1})\ \ (\ell = 1..L),\qquad
      y = W_{\text{out}}\,\phi\big(N(x_L)\big),

  with the *pre-activation* branch of He et al. (2016b),
  :math:`F(x) = W_2\,\phi(N_2(W_1\,\phi(N_1(x))))`: the identity path carries
  :math:`x` untouched, and every normalization and activation sits inside the branch.
  ``skip=False`` builds the *same* network without the identity,
  :math:`x_\ell = \alpha F_\ell(x_{\ell-1})` (the same modules, and for the same seed the
  same parameters), so a comparison of the two differs by the skip alone.
* :func:`fixup_init_` -- Fixup (Zhang, Dauphin & Ma, 2019): every branch's last layer
  and the classifier set to zero, the other branch layers scaled by
  :math:`L^{-1/(2m-2)}`, so that a network without normalization starts as the identity
  map and each block's update stays :math:`O(1/L)`.
* :func:`train_stacked` -- many independent :class:`ResidualMLP` of one architecture
  trained at once (parameters stacked, each layer one batched matrix product), with
  torch's SGD, momentum-SGD or Adam rule per model: a grid of seeds and learning rates
  for the cost of a few runs.
* :func:`stochastic_depth` -- Huang et al.'s (2016) random branch dropping, with
  ``torchvision.ops.stochastic_depth``'s arguments and rule.

Why the block helps, in one line: the Jacobian of a block is
:math:`I + \alpha\,\partial F/\partial x`, so :math:`\partial x_L / \partial x_\ell` is
the identity plus products of branch Jacobians and cannot vanish the way a product of
:math:`L` layer Jacobians does. Why the branch scale matters: with He-initialised ReLU
branches :math:`E[F(x)^2] = E[x^2]`, so without normalization the forward second
moment doubles in every block (:math:`E[x_\ell^2] \approx 2^\ell E[x_0^2]`); with
batch norm at the branch's entry :math:`E[F^2] \approx 1` and it grows like
:math:`E[x_0^2] + \ell`; a branch scale :math:`\alpha` gives
:math:`(1 + \alpha^2)^\ell`; :math:`\alpha = 0` (SkipInit, ReZero) keeps it at
:math:`E[x_0^2]` (Hanin & Rolnick, 2018; De & Smith, 2020).

Example::

    from companion.residual import ResidualMLP
    net = ResidualMLP(2, 3, width=32, depth=8, norm="batch", seed=0)
    [n for n, _ in net.named_children()][:3]     # ['inp', 'block1', 'block2']
    plain = ResidualMLP(2, 3, width=32, depth=8, norm="batch", seed=0, skip=False)
"""
from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import _check
from .init import INITIALIZERS
from .nets import _GAIN_NAMES, _activation, _check_norm, _linear
from .train import DIVERGENCE_FACTOR

__all__ = ["ResidualMLP", "ResidualBlock", "Gate", "fixup_init_", "path_gradients",
           "TokenTransformer", "BRANCH_SCALES", "train_stacked", "StackedRun",
           "stochastic_depth"]

#: The names ``branch_scale`` accepts besides a number.
BRANCH_SCALES = ("rezero", "skipinit")


class Gate(nn.Module):
    r"""A learnable scalar :math:`\alpha`, initialised at 0, that multiplies a branch.

    ReZero (Bachlechner et al., 2020) and SkipInit (De & Smith, 2020) propose the same
    parametrisation, :math:`x + \alpha F(x)` with a learnable :math:`\alpha = 0` at
    initialisation, independently: ReZero for transformers, SkipInit for ResNets
    without batch norm. At :math:`\alpha = 0` every block is the identity map, and the
    first gradient step sets :math:`\alpha` from :math:`\langle F(x), \partial L/\partial x\rangle`.
    """

    def __init__(self) -> None:
        super().__init__()
        self.alpha = nn.Parameter(torch.zeros(()))

    def forward(self, f: Tensor) -> Tensor:
        """:math:`\alpha f` for a branch's output ``f``.

        Raises:
            TypeError: ``f`` not a floating torch tensor, or not of ``alpha``'s dtype.
            ValueError: ``f`` empty.
        """
        f = _check_tensor_like("f", f, self.alpha)
        return self.alpha * f


class ResidualBlock(nn.Module):
    r"""One block :math:`x \mapsto x + \alpha F(x)` (or :math:`\alpha F(x)` without the skip).

    Children, in the order they run: ``norm1`` (if any), ``act1``, ``fc1``, ``norm2``
    (if any), ``act2``, ``fc2`` and, for a learnable scale, ``gate``. A numeric
    :math:`\alpha` is the float attribute ``alpha``. Built by :class:`ResidualMLP`.

    Args:
        width: the stream's width (an int >= 1).
        make_act: ``make_act()`` -> an activation module (called twice).
        make_norm: ``None`` or ``make_norm(width)`` -> a norm module (called twice).
        make_linear: ``make_linear()`` -> a ``width x width`` ``nn.Linear`` (called twice).
        branch_scale, skip: as in :class:`ResidualMLP`.

    Raises:
        TypeError: ``width`` not an int; a factory that is not callable (a module class
            such as ``nn.ReLU`` is a fine factory) or that does not return a module
            (``make_linear``: an ``nn.Linear``); ``branch_scale`` neither a number nor a
            name; ``skip`` not a bool.
        ValueError: ``width`` < 1; a Linear layer that is not ``width x width``; a
            negative or non-finite ``branch_scale`` or an unknown name; a learnable gate
            with ``skip=False``.
    """

    def __init__(self, width: int, *, make_act: Callable[[], nn.Module],
                 make_norm: Callable[[int], nn.Module] | None,
                 make_linear: Callable[[], nn.Linear], branch_scale: float | str,
                 skip: bool) -> None:
        super().__init__()
        self.width = width = _check.integer("width", width, minimum=1)
        _check_factory("make_act", make_act, "a callable make_act() -> nn.Module")
        if make_norm is not None:
            _check_factory("make_norm", make_norm,
                           "None or a callable make_norm(width) -> nn.Module")
        _check_factory("make_linear", make_linear, "a callable make_linear() -> nn.Linear")
        branch_scale = _check_branch_scale(branch_scale)
        self.skip = skip = _check.flag("skip", skip)
        _check_gate_needs_skip(branch_scale, skip)
        if make_norm is not None:
            self.norm1 = _check_made("make_norm", make_norm(width))
        self.act1 = _check_made("make_act", make_act())
        self.fc1 = _check_made_linear(make_linear(), width)
        if make_norm is not None:
            self.norm2 = _check_made("make_norm", make_norm(width))
        self.act2 = _check_made("make_act", make_act())
        self.fc2 = _check_made_linear(make_linear(), width)
        if isinstance(branch_scale, str):
            self.gate = Gate()
            self.alpha = None
        else:
            self.alpha = float(branch_scale)

    def _input(self, x: object) -> Tensor:
        return _check_batch("x", x, self.width, self.fc1.weight.dtype)

    def branch(self, x: Tensor) -> Tensor:
        """:math:`F(x) = W_2\\,\\phi(N_2(W_1\\,\\phi(N_1(x))))`, without the scale.

        Raises:
            TypeError: ``x`` not a floating torch tensor, or not of the block's dtype.
            ValueError: ``x`` not of shape ``(B, width)`` with ``B >= 1``.
        """
        return self._branch(self._input(x))

    def _branch(self, x: Tensor) -> Tensor:
        h = self.norm1(x) if hasattr(self, "norm1") else x
        h = self.fc1(self.act1(h))
        h = self.norm2(h) if hasattr(self, "norm2") else h
        return self.fc2(self.act2(h))

    def scaled_branch(self, x: Tensor) -> Tensor:
        r""":math:`\alpha F(x)`: what the block adds to the stream.

        Raises:
            TypeError, ValueError: as :meth:`branch`.
        """
        return self._scaled_branch(self._input(x))

    def _scaled_branch(self, x: Tensor) -> Tensor:
        f = self._branch(x)
        if self.alpha is None:
            return self.gate(f)
        # 1.0 * f is f exactly, forward and backward: skip the multiplication (and its node)
        return f if self.alpha == 1.0 else self.alpha * f

    def forward(self, x: Tensor) -> Tensor:
        r""":math:`x + \alpha F(x)` (:math:`\alpha F(x)` without the skip).

        Raises:
            TypeError, ValueError: as :meth:`branch`.
        """
        x = self._input(x)
        f = self._scaled_branch(x)
        return x + f if self.skip else f

    def extra_repr(self) -> str:
        scale = "learnable, init 0" if self.alpha is None else f"{self.alpha:g}"
        return f"alpha={scale}, skip={self.skip}"


class ResidualMLP(nn.Module):
    r"""A residual MLP: stem ``inp``, blocks ``block1..block{depth}``, head ``norm``/``act``/``out``.

    See the module docstring for the equations. Module names are stable
    (``net.block3.fc2``), so :func:`companion.diagnostics.record` labels every layer by
    its block: ``inp``, ``block1.norm1``, ``block1.fc1``, ..., ``norm``, ``out``.

    After each forward pass, ``self.stream`` holds the residual stream
    ``[x_0, x_1, ..., x_L]`` (each ``(B, width)``); when they require grad,
    ``retain_grad()`` was called on them, so after ``loss.backward()`` ``x.grad`` is
    :math:`\partial L/\partial x_\ell`, the backward signal reaching block
    :math:`\ell + 1`'s input.

    Args:
        in_features, out_features, width, depth: positive ints (``depth`` blocks, each with
            two ``width x width`` Linear layers).
        activation: a :func:`companion.activations.get` name, used in every branch and
            before the head.
        norm: as in :func:`companion.nets.mlp`: ``None``, ``"batch"``, ``"layer"``,
            ``"rms"``, ``"group"`` or a callable ``f(width)``. Two norm layers per branch
            (``norm1`` at its entry, ``norm2`` between the two Linear layers) and one
            before the head, as in the pre-activation ResNet.
        branch_scale: :math:`\alpha`: a finite number :math:`\ge 0` (e.g.
            ``1 / math.sqrt(depth)``), or ``"rezero"`` / ``"skipinit"``: a learnable
            :class:`Gate` initialised at 0 in each block (the two names build the same
            thing; see :class:`Gate`).
        skip: ``False`` drops the identity: :math:`x_\ell = \alpha F_\ell(x_{\ell-1})`.
            A learnable gate needs ``skip=True`` (without the identity a zero gate makes
            the network's output constant and its gradient zero).
        init: how the branch layers' weights are drawn: the name of a
            :mod:`companion.init` initializer (default ``"kaiming_normal"``, He et al.
            2015, with ``nonlinearity=`` the activation when
            :func:`torch.nn.init.calculate_gain` knows it, else ``"relu"``) or a callable
            ``f(weight)``. The stem and the head are linear maps and are always drawn
            :math:`\mathcal N(0, 1/n_{\text{in}})`, which preserves the second moment.
            Every bias starts at 0.
        seed: when given, every draw comes from a private ``torch.Generator`` seeded
            with it: the same seed gives the same parameters with and without
            ``skip`` and for every ``branch_scale`` and ``norm``, and torch's global RNG
            is untouched. ``None`` draws from the global RNG.

    Raises:
        TypeError: a size that is not an int, an ``activation`` that is not a name, a
            ``norm`` that is neither a name nor callable, a ``branch_scale`` that is
            neither a number nor a name, a non-bool ``skip``, an ``init`` that is neither
            a name nor a function (a class included), a ``seed`` that is not an int.
        ValueError: a size < 1, a negative or non-finite ``branch_scale``, an unknown
            name, a learnable gate with ``skip=False``, a ``seed`` outside
            [0, 2**64 - 1].

    References:
        He, Zhang, Ren & Sun, *Deep Residual Learning* (2016) and *Identity Mappings in
        Deep Residual Networks* (2016b); Bachlechner et al., *ReZero* (2020); De & Smith,
        *Batch Normalization Biases Residual Blocks Towards the Identity Function* (2020).

    Example::

        >>> net = ResidualMLP(2, 1, width=8, depth=3, branch_scale="rezero", seed=0)
        >>> u = torch.randn(4, 2)
        >>> torch.equal(net.stream_at(u, 3), net.inp(u))   # every block is the identity
        True
    """

    def __init__(self, in_features: int, out_features: int, width: int, depth: int, *,
                 activation: str = "relu",
                 norm: str | Callable[[int], nn.Module] | None = None,
                 branch_scale: float | str = 1.0, skip: bool = True,
                 init: str | Callable[[Tensor], object] = "kaiming_normal",
                 seed: int | None = None) -> None:
        super().__init__()
        self.in_features = _check.integer("in_features", in_features, minimum=1)
        self.out_features = _check.integer("out_features", out_features, minimum=1)
        self.width = _check.integer("width", width, minimum=1)
        self.depth = _check.integer("depth", depth, minimum=1)
        act = _activation(activation)
        make_norm = _check_norm(norm)
        self.branch_scale = _check_branch_scale(branch_scale)
        skip = _check.flag("skip", skip)
        _check_gate_needs_skip(self.branch_scale, skip)
        _check_init(init)
        seed = _check.optional_seed(seed)
        self.skip = skip
        nonlinearity = act.name if act.name in _GAIN_NAMES else "relu"
        generator = None if seed is None else torch.Generator().manual_seed(seed)
        # a callable init draws from the global RNG: seed a fork of it (restored after)
        seeded_callable = seed is not None and callable(init)
        with torch.random.fork_rng(devices=[], enabled=seeded_callable):
            if seeded_callable:
                torch.manual_seed(seed)
            self._build(act, make_norm, init, nonlinearity, generator)
        self.stream: list[Tensor] = []

    def _build(self, act, make_norm, init, nonlinearity, generator) -> None:
        def linear(n_in: int, n_out: int, how) -> nn.Linear:
            return _linear(n_in, n_out, bias=True, bias_std=0.0, weight_scale=1.0, init=how,
                           nonlinearity=nonlinearity, generator=generator)

        w = self.width
        self.inp = linear(self.in_features, w, None)        # None: N(0, 1/fan_in)
        for l in range(1, self.depth + 1):
            self.add_module(f"block{l}", ResidualBlock(
                w, make_act=act.module, make_norm=make_norm,
                make_linear=lambda: linear(w, w, init),
                branch_scale=self.branch_scale, skip=self.skip))
        if make_norm is not None:
            self.norm = make_norm(w)
        self.act = act.module()
        self.out = linear(w, self.out_features, None)

    @property
    def blocks(self) -> list[ResidualBlock]:
        """``[block1, ..., block{depth}]``."""
        return [getattr(self, f"block{l}") for l in range(1, self.depth + 1)]

    def _dtype(self) -> torch.dtype:
        return self.inp.weight.dtype

    def forward(self, x: Tensor, *, drop: Collection[int] = ()) -> Tensor:
        """``x``: ``(B, in_features)`` -> ``(B, out_features)``.

        ``drop``: block numbers (1..depth) to delete at test time: a deleted block passes
        its input on unchanged, :math:`x_\\ell = x_{\\ell-1}` (Veit et al., 2016), in the
        plain network too.

        Raises:
            TypeError: ``x`` not a floating torch tensor or not of the model's dtype;
                ``drop`` not a collection (a str or a number).
            ValueError: ``x`` not of shape ``(B, in_features)`` with ``B >= 1``; a
                ``drop`` item that is not a block number in ``[1, depth]``.
        """
        x = _check_batch("x", x, self.in_features, self._dtype())
        drop = _check_drop(drop, self.depth)
        h = self.inp(x)                                   # x_0: (B, width)
        self.stream = [h]
        for l, block in enumerate(self.blocks, start=1):
            if l not in drop:
                h = block(h)                              # x_l: (B, width)
            self.stream.append(h)
        for h_l in self.stream:
            if h_l.requires_grad:
                h_l.retain_grad()
        return self._head(h)

    def head(self, x_L: Tensor) -> Tensor:
        """The output from the last stream tensor: ``out(act(norm(x_L)))``.

        Raises:
            TypeError: ``x_L`` not a floating torch tensor or not of the model's dtype.
            ValueError: ``x_L`` not of shape ``(B, width)`` with ``B >= 1``.
        """
        x_L = _check_batch("x_L", x_L, self.width, self._dtype())
        return self._head(x_L)

    def _head(self, x_L: Tensor) -> Tensor:
        h = self.norm(x_L) if hasattr(self, "norm") else x_L
        return self.out(self.act(h))

    def stream_at(self, x: Tensor, l: int) -> Tensor:
        """:math:`x_\\ell`, the stream after block ``l`` (0: the stem's output), for input ``x``.

        Raises:
            TypeError: ``x`` as in :meth:`forward`; ``l`` not an int.
            ValueError: ``x`` as in :meth:`forward`; ``l`` outside ``[0, depth]``.
        """
        x = _check_batch("x", x, self.in_features, self._dtype())
        l = _check.integer("l", l, minimum=0, maximum=self.depth)
        h = self.inp(x)
        for block in self.blocks[:l]:
            h = block(h)
        return h

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"width={self.width}, depth={self.depth}, skip={self.skip}")

    def __getstate__(self) -> dict:
        # the stream holds non-leaf tensors of the last pass, which deepcopy refuses
        state = self.__dict__.copy()
        state["stream"] = []
        return state


# ------------------------------------------------------------------------------ checks
def _check_branch_scale(value: object) -> float | str:
    """``branch_scale``: a finite number >= 0, or one of :data:`BRANCH_SCALES`."""
    if isinstance(value, str):
        if value not in BRANCH_SCALES:
            raise ValueError(f"branch_scale must be a number >= 0 or one of {BRANCH_SCALES}, "
                             f"got {value!r}")
        return value
    if not _check.is_real(value):
        raise TypeError(f"branch_scale must be a number >= 0 or one of {BRANCH_SCALES}, "
                        f"got {_check.show(value)} ({type(value).__name__})")
    return _check.nonnegative("branch_scale", value)


def _check_gate_needs_skip(branch_scale: float | str, skip: bool) -> None:
    if isinstance(branch_scale, str) and not skip:
        raise ValueError(f"branch_scale={branch_scale!r} needs skip=True: without the "
                         f"identity a gate at 0 makes every block output 0")


def _check_init(init: object) -> None:
    """``init``: the name of a :mod:`companion.init` initializer or a function ``f(weight)``."""
    if isinstance(init, str):

        _check.choice("init", init, INITIALIZERS)
        return
    _check.function("init", init, "an initializer name or a callable f(weight)")


def _check_tensor_like(name: str, x: object, ref: Tensor) -> Tensor:
    """A non-empty floating tensor with ``ref``'s dtype (torch's layers refuse a mix)."""
    return _check.same_dtype(name, _check.tensor(name, x), ref.dtype)


def _check_batch(name: str, x: object, features: int, dtype: torch.dtype) -> Tensor:
    """A ``(B, features)`` floating tensor, B >= 1, of the model's ``dtype``. No NaN scan:
    a forward pass runs every step (the measuring functions scan their data)."""
    x = _check.tensor(name, x)
    if x.ndim != 2 or x.shape[1] != features:
        raise ValueError(f"{name} must have shape (B, {features}), got {tuple(x.shape)}")
    return _check.same_dtype(name, x, dtype)


def _check_factory(name: str, value: object, what: str) -> Callable:
    """A factory: anything callable, classes included (``nn.ReLU`` builds a ReLU); what it
    builds is checked by :func:`_check_made`."""
    if not callable(value):
        raise TypeError(f"{name} must be {what}, got {_check.show(value)} "
                        f"({type(value).__name__})")
    return value


def _check_made(factory: str, module: object) -> nn.Module:
    if not isinstance(module, nn.Module):
        raise TypeError(f"{factory} must return an nn.Module, got {_check.show(module)} "
                        f"({type(module).__name__})")
    return module


def _check_made_linear(linear: object, width: int) -> nn.Linear:
    if not isinstance(linear, nn.Linear):
        raise TypeError(f"make_linear must return an nn.Linear, got {_check.show(linear)} "
                        f"({type(linear).__name__})")
    if (linear.in_features, linear.out_features) != (width, width):
        raise ValueError(f"make_linear must return a {width} x {width} nn.Linear "
                         f"(width={width}), got {linear}")
    return linear


def _check_drop(drop: object, depth: int) -> frozenset[int]:
    if isinstance(drop, (str, bytes)) or not isinstance(drop, Collection):
        raise TypeError(f"drop must be a collection of block numbers, got {drop!r}")
    for l in drop:
        if not _check.is_int(l) or not 1 <= l <= depth:
            raise ValueError(f"drop must hold block numbers in [1, {depth}], got {l!r}")
    return frozenset(int(l) for l in drop)


@torch.no_grad()
def fixup_init_(model: ResidualMLP) -> ResidualMLP:
    r"""Fixup initialisation of a :class:`ResidualMLP`, in place (Zhang, Dauphin & Ma, 2019).

    With :math:`L` residual branches of :math:`m` layers each (here :math:`m = 2`):

    1. the last layer of every branch (``fc2``) and the classifier (``out``) are set to 0,
       so that every block is the identity at initialisation and the output is 0;
    2. the other branch layers (``fc1``) are multiplied by :math:`L^{-1/(2m-2)}`
       (:math:`= 1/\sqrt{L}` for :math:`m = 2`), assuming they were drawn with a standard
       (He) initialisation, :class:`ResidualMLP`'s default;
    3. every bias is set to 0.

    Fixup's scalar multipliers and scalar biases (step 3 of the paper) are not added:
    the bias of each Linear layer plays the second role. The paper's argument is that
    with this scaling an SGD step changes the output by :math:`\Theta(\eta)` whatever
    :math:`L` is, so no normalization is needed to train at depth.

    Returns:
        ``model``.

    Raises:
        TypeError: ``model`` is not a :class:`ResidualMLP`.
        ValueError: ``model`` has ``skip=False`` (without the identity, zero branches
            make the network constant) or a learnable gate (a gate at 0 in front of a
            zero layer gets no gradient, and neither does the layer).
    """
    _check.instance("model", model, ResidualMLP, "a ResidualMLP")
    if not model.skip:
        raise ValueError("fixup_init_ needs a network with skip=True (model has skip=False): "
                         "without the identity zero branches make the output constant")
    if isinstance(model.branch_scale, str):
        raise ValueError(f"fixup_init_ needs a numeric branch_scale, got "
                         f"{model.branch_scale!r} in model: a gate at 0 in front of a zero layer "
                         f"would never receive a gradient")
    L, m = model.depth, 2
    scale = L ** (-1.0 / (2 * m - 2))
    for block in model.blocks:
        block.fc1.weight.mul_(scale)
        block.fc2.weight.zero_()
        block.fc1.bias.zero_()
        block.fc2.bias.zero_()
    model.inp.bias.zero_()
    model.out.weight.zero_()
    model.out.bias.zero_()
    return model


def path_gradients(model: ResidualMLP, x: Tensor,
                   loss: Callable[[Tensor], Tensor] | None = None) -> Tensor:
    r"""The gradient at :math:`x_0` split by path length (Veit, Wilber & Belongie, 2016).

    Unrolled, :math:`\partial x_L/\partial x_0 = \prod_\ell (I + J_\ell)` with
    :math:`J_\ell = \alpha\,\partial F_\ell/\partial x`: a sum over the :math:`2^L`
    paths that pass through some subset of the branches and skip the others. Grouping
    the paths by how many branches :math:`k` they pass through,

    .. math::

        \frac{\partial \mathcal L}{\partial x_0} = \sum_{k=0}^{L} u_k,\qquad
        u_k = \sum_{\ell_1 < \dots < \ell_k}
              J_{\ell_1}^\top \cdots J_{\ell_k}^\top\, \frac{\partial \mathcal L}{\partial x_L}.

    All :math:`u_k` come from one backward sweep that carries :math:`L + 1` vectors,
    :math:`u_k \leftarrow u_k + J_\ell^\top u_{k-1}` at block :math:`\ell`, with batched
    vector-Jacobian products: :math:`L(L+1)` products in all instead of :math:`2^L`
    paths. Veit et al. estimated the same quantity by sampling paths.

    Args:
        model: a :class:`ResidualMLP` with ``skip=True``; put batch norm in ``eval()``
            mode for per-example Jacobians.
        x: an input batch ``(B, in_features)``.
        loss: ``f(output)`` returning a scalar (default: ``output.sum()``).

    Returns:
        ``(depth + 1, B, width)``: ``u[k]`` for each example, in the model's dtype.
        ``u.sum(0)`` is :math:`\partial\mathcal L/\partial x_0`.

    Raises:
        TypeError: ``model`` is not a :class:`ResidualMLP`; ``x`` not a floating tensor
            of the model's dtype; ``loss`` neither None nor a function (a class
            included), or returning something that is not a tensor.
        ValueError: ``model`` has ``skip=False`` (then there is one path, through every
            branch); ``x`` not of shape ``(B, in_features)`` with ``B >= 1``, or with NaN
            or infinite values; ``loss`` does not return a scalar.
    """
    _check.instance("model", model, ResidualMLP, "a ResidualMLP")
    if not model.skip:
        raise ValueError("path_gradients needs skip=True (model has skip=False): a plain "
                         "network has one path")
    x = _check_batch("x", x, model.in_features, model._dtype())
    _check.finite_values("x", x)
    if loss is not None:
        _check.function("loss", loss, "None or a callable loss(output)")
    with torch.enable_grad():
        h = model.inp(x).detach()
        steps = []                                     # (x_{l-1}, alpha F_l(x_{l-1}))
        for block in model.blocks:
            h_in = h.requires_grad_(True)
            f = block._scaled_branch(h_in)
            steps.append((h_in, f))
            h = (h_in + f).detach()
        top = h.requires_grad_(True)
        y = model._head(top)
        value = _check.scalar_loss("loss", y.sum() if loss is None else loss(y))
        (g,) = torch.autograd.grad(value, top)
        L = len(steps)
        u = torch.zeros((L + 1,) + tuple(g.shape), dtype=g.dtype, device=g.device)
        u[0] = g
        for h_in, f in reversed(steps):                # backward through block l
            (vjp,) = torch.autograd.grad(f, h_in, grad_outputs=u[:L], is_grads_batched=True)
            u = torch.cat([u[:1], u[1:] + vjp])        # u_k += J^T u_{k-1}
    return u.detach()


class TokenTransformer(nn.Module):
    r"""A small transformer encoder over token sequences, built from torch's own layers.

    ``embed`` (``nn.Embedding``) plus a learned position embedding ``pos``, then
    ``num_layers`` ``nn.TransformerEncoderLayer`` in ``layers`` (ReLU, no dropout,
    batch first), a final ``nn.LayerNorm`` ``norm`` when ``norm_first`` (pre-LN needs
    one: its stream is never normalized otherwise), and a linear ``head`` to the
    vocabulary. ``norm_first=False`` is the original post-LN transformer,
    :math:`x \leftarrow \mathrm{LN}(x + F(x))`; ``True`` is pre-LN,
    :math:`x \leftarrow x + F(\mathrm{LN}(x))` (Xiong et al., 2020), which keeps an
    identity path from the input to the output.

    Args:
        vocab_size, seq_len, d_model, nhead, dim_feedforward, num_layers: positive ints
            (``d_model`` divisible by ``nhead``).
        norm_first: pre-LN (``True``) or post-LN (``False``).
        init: ``"xavier"`` (default) re-draws every Linear weight of the layers (the
            attention's output projection included) with ``xavier_uniform_``, as the
            original transformer and fairseq do and as Xiong et al. analyse;
            ``"torch"`` keeps ``nn.Linear``'s default (``kaiming_uniform_`` with
            :math:`a = \sqrt5`, a standard deviation of :math:`1/\sqrt{3 n_\text{in}}`),
            whose feed-forward branch starts about 8 times smaller in variance.
            Embeddings are :math:`\mathcal N(0, 1)`.
        seed: seeds torch's RNG in a fork (the global RNG is restored afterwards).

    Forward: ``(B, seq_len)`` int64 tokens -> ``(B, seq_len, vocab_size)`` logits.

    Raises:
        TypeError: a size that is not an int, ``norm_first`` not a bool, ``init`` not a
            str, ``seed`` not an int.
        ValueError: a size < 1, ``d_model`` not divisible by ``nhead``, an unknown
            ``init``, a ``seed`` outside [0, 2**64 - 1].
    """

    def __init__(self, vocab_size: int, seq_len: int, d_model: int = 32, nhead: int = 4,
                 dim_feedforward: int = 64, num_layers: int = 6, *, norm_first: bool = True,
                 init: str = "xavier", seed: int | None = None) -> None:
        super().__init__()
        self.vocab_size = _check.integer("vocab_size", vocab_size, minimum=1)
        self.seq_len = _check.integer("seq_len", seq_len, minimum=1)
        d_model = _check.integer("d_model", d_model, minimum=1)
        nhead = _check.integer("nhead", nhead, minimum=1)
        if d_model % nhead:
            raise ValueError(f"d_model must be divisible by nhead, got {d_model} and {nhead}")
        dim_feedforward = _check.integer("dim_feedforward", dim_feedforward, minimum=1)
        num_layers = _check.integer("num_layers", num_layers, minimum=1)
        norm_first = _check.flag("norm_first", norm_first)
        init = _check.choice("init", init, ("xavier", "torch"))
        seed = _check.optional_seed(seed)
        self.norm_first = norm_first
        with torch.random.fork_rng(devices=[], enabled=seed is not None):
            if seed is not None:
                torch.manual_seed(seed)
            self.embed = nn.Embedding(self.vocab_size, d_model)
            self.pos = nn.Parameter(torch.randn(self.seq_len, d_model))
            self.layers = nn.ModuleList(
                nn.TransformerEncoderLayer(d_model, nhead, dim_feedforward, dropout=0.0,
                                           batch_first=True, norm_first=norm_first)
                for _ in range(num_layers))
            if init == "xavier":
                for layer in self.layers:
                    for linear in (layer.linear1, layer.linear2, layer.self_attn.out_proj):
                        nn.init.xavier_uniform_(linear.weight)
            if norm_first:
                self.norm = nn.LayerNorm(d_model)
            self.head = nn.Linear(d_model, self.vocab_size)

    def forward(self, tokens: Tensor) -> Tensor:
        """``(B, seq_len)`` integer tokens -> ``(B, seq_len, vocab_size)`` logits.

        Raises:
            TypeError: ``tokens`` not a torch tensor of an integer dtype.
            ValueError: ``tokens`` not of shape ``(B, seq_len)`` with ``B >= 1``, or
                holding values outside ``[0, vocab_size)``.
        """
        tokens = _check.tensor("tokens", tokens, floating=False, integral=True)
        if tokens.dim() != 2 or tokens.shape[1] != self.seq_len:
            raise ValueError(f"tokens must be an integer tensor of shape (B, {self.seq_len}), "
                             f"got {_check.show(tokens)}")
        lo, hi = int(tokens.min()), int(tokens.max())
        if lo < 0 or hi >= self.vocab_size:
            raise ValueError(f"tokens must hold token ids in [0, {self.vocab_size - 1}] "
                             f"(vocab_size={self.vocab_size}), got values from {lo} to {hi}")
        h = self.embed(tokens) + self.pos                 # (B, T, d_model)
        for layer in self.layers:
            h = layer(h)
        if self.norm_first:
            h = self.norm(h)
        return self.head(h)                               # (B, T, vocab)


# ------------------------------------------------------------------ many models at once
@dataclass
class StackedRun:
    """What :func:`train_stacked` returns; one column per model.

    Attributes:
        losses: ``(steps, S)`` training losses before each step (NaN after a divergence).
        step_errors: ``(steps, S)`` training errors before each step, from the same
            forward pass (training mode).
        errors: ``(S,)`` training error after the last step, in training mode (batch
            norm with the statistics of the full training batch); NaN for a diverged model.
        diverged_at: ``(S,)`` the step at which each model's loss was non-finite or above
            ``DIVERGENCE_FACTOR`` times its first loss (as :func:`companion.train.train`),
            -1 where it never diverged.
    """
    losses: np.ndarray
    step_errors: np.ndarray
    errors: np.ndarray
    diverged_at: np.ndarray


def _stacked_bn(z: Tensor, bn: nn.BatchNorm1d, w: Tensor, b: Tensor) -> Tensor:
    # training-mode batch norm of S stacked batches (S, B, C), per model and channel:
    # one F.batch_norm over (B, S*C), whose channels are the S models' C channels
    S, B, C = z.shape
    flat = z.transpose(0, 1).reshape(B, S * C)
    out = F.batch_norm(flat, None, None, w.reshape(-1), b.reshape(-1), training=True,
                       eps=bn.eps)
    return out.reshape(B, S, C).transpose(0, 1)


def _stacked_linear(z: Tensor, w: Tensor, b: Tensor) -> Tensor:
    return torch.baddbmm(b[:, None], z, w.transpose(1, 2))   # (S, B, out)


def _stacked_forward(model: ResidualMLP, P: dict, alphas: Tensor | None, x: Tensor) -> Tensor:
    """``model``'s forward pass for S parameter sets ``P[name]: (S, ...)`` at once, in
    training mode (batch norm normalizes with each model's own batch statistics)."""
    def norm(module_name: str, z: Tensor) -> Tensor:
        bn = model.get_submodule(module_name)
        return _stacked_bn(z, bn, P[module_name + ".weight"], P[module_name + ".bias"])

    S = P["inp.weight"].shape[0]
    h = _stacked_linear(x.expand(S, *x.shape), P["inp.weight"], P["inp.bias"])  # x_0
    for l, block in enumerate(model.blocks, start=1):
        name = f"block{l}"
        z = norm(name + ".norm1", h) if hasattr(block, "norm1") else h
        z = _stacked_linear(block.act1(z), P[name + ".fc1.weight"], P[name + ".fc1.bias"])
        z = norm(name + ".norm2", z) if hasattr(block, "norm2") else z
        f = _stacked_linear(block.act2(z), P[name + ".fc2.weight"], P[name + ".fc2.bias"])
        scale = P[name + ".gate.alpha"] if block.alpha is None else alphas
        f = f * scale[:, None, None]
        h = h + f if model.skip else f
    z = norm("norm", h) if hasattr(model, "norm") else h
    return _stacked_linear(model.act(z), P["out.weight"], P["out.bias"])


def train_stacked(models: list[ResidualMLP], x: Tensor, y: Tensor, *, steps: int,
                  lr: float | list[float], optimizer: str = "momentum",
                  normalize_grads: bool = False) -> StackedRun:
    r"""Train independent :class:`ResidualMLP` classifiers of one architecture together.

    The S models' parameters are stacked along a new first dimension and every layer
    runs as one batched matrix product (``torch.baddbmm``), so S small models cost
    little more than one. Each model is trained as
    ``companion.train.train(model, x, y, steps=steps, lr=lr_i, loss="cross_entropy",
    optimizer=optimizer)`` would train it (full batch, training mode), with torch's
    update rules written out per model:

    * ``"sgd"``: :math:`p \leftarrow p - \eta g`;
    * ``"momentum"``: torch's heavy ball, :math:`v \leftarrow 0.9 v + g,\ p \leftarrow p - \eta v`;
    * ``"adam"``: ``torch.optim.Adam``'s defaults (:math:`\beta = (0.9, 0.999)`,
      :math:`\epsilon = 10^{-8}`).

    ``normalize_grads=True`` replaces every parameter tensor's gradient by
    :math:`g/\lVert g\rVert` before the step (per model and per tensor), so every layer
    takes a step of the same size whatever the size of its gradient.

    Batch norm runs in training mode with each model's full-batch statistics; the
    running statistics are **not** updated. The trained parameters are copied back into
    ``models``; before evaluating a model in ``eval()`` mode, recompute its running
    statistics, e.g. ``torch.optim.swa_utils.update_bn([x], model)``.

    Args:
        models: a non-empty list of :class:`ResidualMLP` of the same architecture (sizes,
            ``skip``, norm, activation, kind of ``branch_scale``); norm ``None`` or
            ``nn.BatchNorm1d``.
        x: ``(B, in_features)`` inputs of the models' dtype; y: ``(B,)`` class labels.
        steps: number of full-batch steps, >= 1.
        lr: one learning rate, or one per model.
        optimizer: ``"sgd"``, ``"momentum"`` or ``"adam"``.
        normalize_grads: normalize each parameter tensor's gradient to norm 1.

    Returns:
        A :class:`StackedRun`.

    Raises:
        TypeError: ``models`` not a list of :class:`ResidualMLP`; ``x``/``y`` not tensors.
        ValueError: models of different architectures, a norm other than batch norm,
            a wrong number of learning rates or one that is not finite and > 0, an
            unknown ``optimizer``, ``steps < 1``, badly shaped ``x`` or ``y``.
    """

    if not isinstance(models, (list, tuple)) or not models:
        raise TypeError(f"models must be a non-empty list of ResidualMLP, got {_check.show(models)}")
    for m in models:
        _check.instance("models[i]", m, ResidualMLP, "a ResidualMLP")
    first = models[0]
    names = [n for n, _ in first.named_parameters()]
    for m in models[1:]:
        if ([n for n, _ in m.named_parameters()] != names or m.skip != first.skip
                or [type(k) for k in m.modules()] != [type(k) for k in first.modules()]
                or (m.blocks[0].alpha is None) != (first.blocks[0].alpha is None)
                or any(p.shape != q.shape for p, q in zip(m.parameters(), first.parameters()))):
            raise ValueError("models must all have the same architecture")
    for mod in first.modules():
        if mod is not first and any(True for _ in mod.parameters(recurse=False)) and \
                not isinstance(mod, (nn.Linear, nn.BatchNorm1d, Gate)):
            raise ValueError(f"models must have norm None or nn.BatchNorm1d (train_stacked "
                             f"writes out only those), got a {type(mod).__name__}")
    S = len(models)
    steps = _check.integer("steps", steps, minimum=1)
    if _check.is_real(lr):
        lrs = [_check.positive("lr", lr)] * S
    else:
        items = _check.sequence("lr", lr, what="a number or a list of numbers, one per model")
        if len(items) != S:
            raise ValueError(f"lr must be one number or one per model ({S}), got "
                             f"{len(items)}")
        lrs = [_check.positive(f"lr[{i}]", v) for i, v in enumerate(items)]
    optimizer = _check.choice("optimizer", optimizer, ("sgd", "momentum", "adam"))
    normalize_grads = _check.flag("normalize_grads", normalize_grads)
    dtype = first._dtype()
    x = _check_batch("x", x, first.in_features, dtype)
    y = _check.labels("y", y, n=x.shape[0], classes=first.out_features).long()

    P = {n: torch.stack([dict(m.named_parameters())[n].detach() for m in models]).clone()
         .requires_grad_(True) for n in names}
    alphas = None
    if first.blocks[0].alpha is not None:   # a fixed branch scale, one per model
        alphas = torch.tensor([float(m.blocks[0].alpha) for m in models], dtype=dtype)
    eta = torch.tensor(lrs, dtype=dtype)
    state = {n: (torch.zeros_like(p), torch.zeros_like(p)) for n, p in P.items()}
    alive = torch.ones(S, dtype=torch.bool)
    losses = np.full((steps, S), np.nan)
    step_errors = np.full((steps, S), np.nan)
    diverged_at = np.full(S, -1)
    threshold = None
    yy = y.repeat(S)

    def per_model(v: Tensor, like: Tensor) -> Tensor:
        return v.view(-1, *[1] * (like.dim() - 1))

    for t in range(steps):
        out = _stacked_forward(first, P, alphas, x)                       # (S, B, C)
        loss = F.cross_entropy(out.reshape(yy.shape[0], -1), yy,
                               reduction="none").view(S, -1).mean(1)       # (S,)
        value = loss.detach()
        if threshold is None:
            threshold = DIVERGENCE_FACTOR * value.clamp_min(0)
        bad = alive & (~torch.isfinite(value) | (value > threshold))
        diverged_at[bad.numpy()] = t
        alive &= ~bad
        losses[t] = torch.where(alive, value, torch.nan).numpy()
        wrong = (out.detach().argmax(-1) != y).to(torch.float64).mean(1)
        step_errors[t] = torch.where(alive, wrong, torch.nan).numpy()
        if not alive.any():
            break
        grads = torch.autograd.grad(torch.where(alive, loss, 0).sum(), list(P.values()))
        with torch.no_grad():
            for (n, p), g in zip(P.items(), grads):
                g = torch.where(per_model(alive, g), g, 0)
                if normalize_grads:
                    norms = torch.linalg.vector_norm(g.flatten(1), dim=1)
                    g = g / per_model(norms.clamp_min(1e-30), g)
                m, v = state[n]
                if optimizer == "sgd":
                    step = g
                elif optimizer == "momentum":
                    step = m.mul_(0.9).add_(g)
                else:
                    m.lerp_(g, 0.1)
                    v.mul_(0.999).addcmul_(g, g, value=0.001)
                    step = (m / (1 - 0.9 ** (t + 1))) / (
                        (v / (1 - 0.999 ** (t + 1))).sqrt() + 1e-8)
                p.sub_(per_model(eta, p) * torch.where(per_model(alive, p), step, 0))

    with torch.no_grad():
        out = _stacked_forward(first, P, alphas, x)
        errors = (out.argmax(-1) != y).to(torch.float64).mean(1)
        errors = torch.where(alive, errors, torch.nan).numpy()
        for i, m in enumerate(models):
            for n, p in m.named_parameters():
                p.copy_(P[n][i])
    return StackedRun(losses=losses, step_errors=step_errors, errors=errors,
                      diverged_at=diverged_at)


def stochastic_depth(input: Tensor, p: float, mode: str = "row", training: bool = True,
                     *, generator: torch.Generator | None = None) -> Tensor:
    r"""Stochastic depth (Huang et al., 2016): drop a residual branch at random while training.

    Each example's branch output (``mode="row"``) or the whole batch's (``"batch"``) is
    kept with probability :math:`1 - p` and divided by :math:`1 - p`, so that its
    expectation is unchanged: :math:`E[\text{out}] = \text{input}`. Use it on the
    branch, ``x + stochastic_depth(F(x), p, training=model.training)``; at evaluation
    (``training=False``) it returns ``input``. The same rule, with the same
    arguments, as ``torchvision.ops.stochastic_depth`` (Huang et al. instead scaled
    by :math:`1 - p` at test time, which is the same in expectation).

    Raises:
        TypeError: ``input`` not a floating tensor; ``training`` not a bool.
        ValueError: ``p`` outside [0, 1]; ``mode`` not ``"row"`` or ``"batch"``.
    """
    input = _check.tensor("input", input, nonempty=False)
    p = _check.real("p", p, low=0.0, high=1.0)
    mode = _check.choice("mode", mode, ("row", "batch"))
    training = _check.flag("training", training)
    if not training or p == 0.0:
        return input
    shape = (input.shape[0],) + (1,) * (input.dim() - 1) if mode == "row" else (1,) * input.dim()
    keep = torch.empty(shape, dtype=input.dtype, device=input.device)
    keep.bernoulli_(1.0 - p, generator=generator)
    if p < 1.0:
        keep.div_(1.0 - p)
    return input * keep
