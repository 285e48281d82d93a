r"""A from-scratch numpy MLP with hand-written backprop: the chain rule, one layer at a time.

The chapter "Vanishing gradients" opens the black box of autograd. With layers
:math:`\ell = 1..L`, :math:`h_0 = x` and

.. math::

    z_\ell = W_\ell h_{\ell-1} + b_\ell,\qquad h_\ell = f(z_\ell)\ (\ell < L),
    \qquad \hat y = z_L \ (\text{the last layer is linear}),

backpropagation is three equations (:math:`\delta_\ell = \partial L/\partial z_\ell`):

.. math::

    \delta_L = \frac{\partial L}{\partial \hat y},\qquad
    \delta_\ell = \left(W_{\ell+1}^\top \delta_{\ell+1}\right) \odot f'(z_\ell),\qquad
    \frac{\partial L}{\partial W_\ell} = \delta_\ell\, h_{\ell-1}^\top,\quad
    \frac{\partial L}{\partial b_\ell} = \delta_\ell .

Unrolled, the Jacobian of the output with respect to the input is a product of one
factor per layer, :math:`\partial\hat y/\partial x = W_L \, J_{L-1} \cdots J_1` with
:math:`J_\ell = \operatorname{diag}(f'(z_\ell))\, W_\ell`; if every factor has norm below 1
the product -- and with it the gradient reaching early layers -- shrinks geometrically.
:meth:`ScratchMLP.chain_factors` returns those factors so the book can print their sizes.

Code works on a batch of row vectors, so the equations appear transposed:
``delta[l] = (delta[l+1] @ W[l+1]) * f'(z[l])`` and ``dW[l] = delta[l].T @ h[l-1]``.

Example::

    import numpy as np
    from companion.scratch import ScratchMLP
    net = ScratchMLP([4, 8, 8, 1], activation="sigmoid", seed=0)
    y_hat = net.forward(np.ones((5, 4)))            # (5, 1)
    grads = net.backward(y_hat - 1.0)                # dL/dy_hat of L = 1/2 sum (y_hat - 1)^2
    [d.shape for d in grads.dW]                      # [(8, 4), (8, 8), (1, 8)]
    net.factor_norms(np.ones((1, 4)))                # ||J_l||_2 per layer, input side first
"""
from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from . import _check
from . import activations

__all__ = ["ScratchMLP", "Gradients"]


@dataclass(frozen=True)
class Gradients:
    """What :meth:`ScratchMLP.backward` returns; every list is input side first.

    ``dW[l]``: (fan_out, fan_in) like ``W[l]``; ``db[l]``: (fan_out,);
    ``delta[l]``: (B, fan_out), :math:`\\partial L/\\partial z_{l+1}` per example
    (``delta[-1]`` is ``grad_output``); ``dx``: (B, in), :math:`\\partial L/\\partial x`.
    """

    dW: list[np.ndarray]
    db: list[np.ndarray]
    delta: list[np.ndarray]
    dx: np.ndarray


def _check_sizes(sizes: object) -> list[int]:
    items = _check.sequence("sizes", sizes, what="a list of ints [in, ..., out]")
    if len(items) < 2:
        raise ValueError(f"sizes must have at least 2 entries [in, ..., out], got {items}")
    return [_check.integer(f"sizes[{i}]", s, minimum=1) for i, s in enumerate(items)]


def _check_real_array(name: str, x: object) -> np.ndarray:
    """A numpy array of a real dtype (float, or int promoted), as float64."""
    if not isinstance(x, np.ndarray):
        hint = " (ScratchMLP is numpy: pass x.numpy())" if hasattr(x, "numpy") else ""
        raise TypeError(f"{name} must be a numpy array, got {_check.show(x)} "
                        f"({type(x).__name__}){hint}")
    if x.dtype.kind not in "iuf":
        raise TypeError(f"{name} must have a real (float or int) dtype, got {_check.show(x)}")
    return np.asarray(x, dtype=np.float64)


def _check_float_dtype(name: str, dtype: object):
    """A real floating ``torch.dtype`` (``torch.float64``, ``torch.float32``, ...)."""
    import torch

    if not isinstance(dtype, torch.dtype):
        raise TypeError(f"{name} must be None or a torch floating dtype such as torch.float64, "
                        f"got {_check.show(dtype)} ({type(dtype).__name__})")
    if not dtype.is_floating_point:
        raise ValueError(f"{name} must be a torch floating dtype such as torch.float64, "
                         f"got {dtype}")
    return dtype


class ScratchMLP:
    r"""An MLP in float64 numpy whose backward pass is written out by hand.

    Args:
        sizes: ``[in, n_1, ..., n_{L-1}, out]``; ``L = len(sizes) - 1`` linear layers,
            ``L - 1`` hidden activations.
        activation: a :func:`companion.activations.get` name; its closed-form ``derivative``
            is the :math:`f'` of the backward pass.
        weight_scale: :math:`\sigma_w > 0`; :math:`W_\ell \sim \mathcal N(0,
            \sigma_w^2/n_{\ell-1})`, shaped (fan_out, fan_in) like ``nn.Linear.weight``,
            the same law as :func:`companion.nets.mlp`. Biases start at zero.
        seed: seeds a private ``np.random.default_rng``: an int in ``[0, 2**64 - 1]``.

    Raises:
        TypeError: ``sizes`` is not a list or tuple of ints, ``activation`` not a str,
            ``weight_scale`` not a real number, ``seed`` not an int.
        ValueError: fewer than 2 sizes or a size < 1, an unknown activation,
            ``weight_scale`` <= 0 (or NaN, infinite), ``seed`` outside ``[0, 2**64 - 1]``.

    Attributes:
        W, b: lists of the weights (fan_out, fan_in) and biases (fan_out,).
        z, h: after :meth:`forward`, the pre-activations ``z[l]`` (B, n_{l+1}) for every
            layer and the activations ``h[l]`` (B, n_l) with ``h[0] = x``.
    """

    def __init__(self, sizes: Sequence[int], activation: str = "sigmoid",
                 weight_scale: float = 1.0, *, seed: int = 0) -> None:

        self.sizes = _check_sizes(sizes)
        self.f = activations.get(activation)  # raises TypeError/ValueError listing names
        self.activation = activation
        weight_scale = _check.positive("weight_scale", weight_scale)
        seed = _check.seed(seed)
        rng = np.random.default_rng(int(seed))
        self.W = [rng.standard_normal((n_out, n_in)) * (weight_scale / math.sqrt(n_in))
                  for n_in, n_out in zip(self.sizes[:-1], self.sizes[1:])]
        self.b = [np.zeros(n_out) for n_out in self.sizes[1:]]
        self.z: list[np.ndarray] = []
        self.h: list[np.ndarray] = []

    @property
    def num_layers(self) -> int:
        """:math:`L`, the number of linear layers."""
        return len(self.W)

    # ---------------------------------------------------------------------- forward
    def _input(self, x: object) -> np.ndarray:
        x = _check_real_array("x", x)
        if x.ndim != 2 or x.shape[1] != self.sizes[0]:
            raise ValueError(f"x must have shape (batch, {self.sizes[0]}), got {x.shape}")
        if x.shape[0] == 0:
            raise ValueError(f"x must have at least one row (example), got shape {x.shape}")
        return _check.finite_values("x", x)

    def forward(self, x: np.ndarray) -> np.ndarray:
        """:math:`\\hat y` for a batch ``x`` of shape (B, in); caches ``z`` and ``h``.

        Raises:
            TypeError: ``x`` is not a numpy array of a real (float or int) dtype.
            ValueError: ``x`` is not (B, in) with B >= 1, or holds NaN or infinite values.
        """
        h = self._input(x)                        # h_0 = x: (B, n_0)
        self.z, self.h = [], [h]
        for l, (W, b) in enumerate(zip(self.W, self.b)):
            z = h @ W.T + b                       # z_l = W_l h_{l-1} + b_l: (B, n_l)
            self.z.append(z)
            if l == self.num_layers - 1:
                return z                          # y_hat = z_L: (B, n_L), no activation
            h = self.f.forward(z)                 # h_l = f(z_l): (B, n_l)
            self.h.append(h)
        raise AssertionError("unreachable: sizes has at least 2 entries")

    __call__ = forward

    # --------------------------------------------------------------------- backward
    def backward(self, grad_output: np.ndarray) -> Gradients:
        r"""Backpropagate :math:`\partial L/\partial\hat y` (B, out) through the last forward.

        Returns :class:`Gradients` with ``dW``, ``db`` (summed over the batch, i.e. for
        :math:`L = \sum_{\text{examples}}`), the per-example ``delta`` and ``dx``.

        ``grad_output`` may hold NaN or infinity (a diverging run); they propagate.

        Raises:
            RuntimeError: :meth:`forward` was not called first.
            TypeError: ``grad_output`` is not a numpy array of a real dtype.
            ValueError: ``grad_output`` does not have the output's shape.
        """
        if not self.z:
            raise RuntimeError("backward(grad_output) needs the cache of a forward pass: "
                               "call net.forward(x) first, then net.backward(grad_output)")
        delta = _check_real_array("grad_output", grad_output)
        if delta.shape != self.z[-1].shape:
            raise ValueError(f"grad_output must have the output's shape {self.z[-1].shape}, "
                             f"got {delta.shape}")
        L = self.num_layers
        deltas: list[np.ndarray] = [np.empty(0)] * L
        dW: list[np.ndarray] = [np.empty(0)] * L
        db: list[np.ndarray] = [np.empty(0)] * L
        deltas[L - 1] = delta                                 # 1. delta_L = dL/dy_hat: (B, n_L)
        for l in range(L - 1, -1, -1):                        # layers L..1 (0-based l)
            dW[l] = deltas[l].T @ self.h[l]                   # 2. dL/dW_l = delta_l^T h_{l-1}
            db[l] = deltas[l].sum(axis=0)                     #    dL/db_l = sum_batch delta_l
            back = deltas[l] @ self.W[l]                      # 3. W_l^T delta_l: (B, n_{l-1})
            if l > 0:
                deltas[l - 1] = back * self.f.derivative(self.z[l - 1])  # (.) * f'(z_{l-1})
        return Gradients(dW=dW, db=db, delta=deltas, dx=back)  # dx = W_1^T delta_1: (B, n_0)

    # ---------------------------------------------------------------- chain factors
    def chain_factors(self, x: np.ndarray) -> list[np.ndarray]:
        r"""The per-example factors of :math:`\partial\hat y/\partial x = W_L J_{L-1}\cdots J_1`.

        Entry ``l`` (input side first) is :math:`J_{l+1} = \operatorname{diag}(f'(z_{l+1}))
        W_{l+1}`, shape (B, n_{l+1}, n_l), one matrix per example of ``x`` (B, in); the
        last entry is the output layer's :math:`W_L` (linear, :math:`f' = 1`), repeated
        over the batch. :meth:`input_jacobian` multiplies them. Runs :meth:`forward`.

        Raises:
            TypeError, ValueError: a bad ``x``, as in :meth:`forward`.
        """
        self.forward(x)
        B = self.z[0].shape[0]
        factors = [self.f.derivative(z)[:, :, None] * W[None]   # diag(f'(z_l)) W_l: (B, n_l, n_{l-1})
                   for z, W in zip(self.z[:-1], self.W[:-1])]
        factors.append(np.broadcast_to(self.W[-1], (B,) + self.W[-1].shape).copy())
        return factors

    def input_jacobian(self, x: np.ndarray) -> np.ndarray:
        r""":math:`\partial\hat y/\partial x` per example, (B, out, in): the product of
        :meth:`chain_factors`, output side on the left.

        Raises:
            TypeError, ValueError: a bad ``x``, as in :meth:`forward`.
        """
        factors = self.chain_factors(x)
        J = factors[0]                                  # (B, n_1, n_0)
        for F in factors[1:]:
            J = F @ J                                   # (B, n_l, n_{l-1}) @ (B, n_{l-1}, n_0)
        return J

    def factor_norms(self, x: np.ndarray, *, ord: int | str = 2) -> np.ndarray:
        r"""Norm of each chain factor per example, (B, L), input side first.

        ``ord=2`` (spectral norm, the most one factor can stretch a vector) or ``"fro"``.
        By submultiplicativity :math:`\lVert\partial\hat y/\partial x\rVert_2 \le
        \prod_\ell \lVert J_\ell\rVert_2`.

        Raises:
            TypeError: a bad ``x`` (as in :meth:`forward`); ``ord`` neither a number nor
                a str.
            ValueError: a bad ``x``; ``ord`` not 2 or ``"fro"``.
        """
        self._input(x)
        if isinstance(ord, bool) or not isinstance(ord, (str, int, float, np.integer,
                                                         np.floating)):
            raise TypeError(f"ord must be 2 or 'fro', got {_check.show(ord)} "
                            f"({type(ord).__name__})")
        if ord not in (2, "fro"):
            raise ValueError(f"ord must be one of [2, 'fro'], got {ord!r}")
        return np.stack([np.linalg.norm(F, ord=ord, axis=(1, 2))
                         for F in self.chain_factors(x)], axis=1)

    # ------------------------------------------------------------------------ torch
    def load_from_torch(self, sequential) -> "ScratchMLP":
        """Copy the weights and biases of ``sequential``'s ``nn.Linear`` layers, in order.

        ``sequential`` is e.g. a :func:`companion.nets.mlp` with the same sizes (its
        activations are not checked). A Linear without bias leaves ``b`` at zero.
        Returns ``self``.

        Raises:
            TypeError: ``sequential`` is not a ``torch.nn.Module`` instance.
            ValueError: the number of Linear layers or a weight shape differs; a weight
                or bias holds NaN or infinity (nothing is copied then).
        """
        from torch import nn

        _check.module("sequential", sequential)
        named = [(n, m) for n, m in sequential.named_modules() if isinstance(m, nn.Linear)]
        if len(named) != self.num_layers:
            raise ValueError(f"sequential must have {self.num_layers} Linear layers, "
                             f"got {len(named)}")
        for l, (name, lin) in enumerate(named):
            layer = f"sequential's Linear layer {l + 1} ({name!r})"
            if tuple(lin.weight.shape) != self.W[l].shape:
                raise ValueError(f"{layer} has weight shape "
                                 f"{tuple(lin.weight.shape)}, expected {self.W[l].shape}")
            for kind, t in (("weight", lin.weight), ("bias", lin.bias)):
                if t is not None:
                    _check.finite_values(f"{layer} {kind}", t.detach())
        linears = [lin for _, lin in named]
        for l, lin in enumerate(linears):
            self.W[l] = lin.weight.detach().cpu().double().numpy().copy()
            self.b[l] = (np.zeros(self.W[l].shape[0]) if lin.bias is None
                         else lin.bias.detach().cpu().double().numpy().copy())
        return self

    def to_torch(self, dtype=None):
        """An ``nn.Sequential`` with :func:`companion.nets.mlp`'s module names
        (``fc1, act1, ..., out``) holding copies of ``W`` and ``b`` (float64 by default).

        Raises:
            TypeError: ``dtype`` is neither None nor a ``torch.dtype``.
            ValueError: ``dtype`` is not a floating dtype (``torch.int64``, ...).
        """
        import torch
        from torch import nn

        dtype = torch.float64 if dtype is None else _check_float_dtype("dtype", dtype)
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        for l, (W, b) in enumerate(zip(self.W, self.b)):
            last = l == self.num_layers - 1
            # skip_init: no default draw, so torch's global RNG is left untouched
            lin = torch.nn.utils.skip_init(nn.Linear, W.shape[1], W.shape[0], dtype=dtype)
            with torch.no_grad():
                lin.weight.copy_(torch.from_numpy(W))
                lin.bias.copy_(torch.from_numpy(b))
            layers["out" if last else f"fc{l + 1}"] = lin
            if not last:
                layers[f"act{l + 1}"] = self.f.module()
        return nn.Sequential(layers)

    def __repr__(self) -> str:
        return f"ScratchMLP(sizes={self.sizes}, activation={self.activation!r})"
