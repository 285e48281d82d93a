r"""The curvature of a loss: the largest eigenvalue of its Hessian, without forming it.

Gradient descent on a quadratic with Hessian :math:`H` multiplies the error along the
eigenvector :math:`u_i` of :math:`H` by :math:`1 - \eta\lambda_i` per step, so it is stable
only for :math:`\eta < 2/\lambda_{\max}` (the optimizers chapter derives it). Near a point
of a network's loss, :math:`\lambda_{\max}` of the Hessian plays the same part.

* :func:`hessian_vector_product` -- :math:`Hv` by double backward: the gradient of
  :math:`g\cdot v` with respect to the parameters, where :math:`g = \nabla\mathcal L`
  (Pearlmutter's trick; it costs about two backward passes and never stores :math:`H`).
* :func:`top_hessian_eigenvalue` -- :math:`\lambda_{\max}(H)` by power iteration on
  those products.

Example::

    import torch
    from companion import curvature, nets
    net = nets.mlp(4, 1, width=8, depth=2, activation="relu", seed=0)
    x, y = torch.randn(32, 4), torch.randn(32, 1)
    lam = curvature.top_hessian_eigenvalue(net, torch.nn.functional.mse_loss, x, y)
    2 / lam          # the largest learning rate that is stable near this point
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
from torch import Tensor, nn

from . import _check

__all__ = ["hessian_vector_product", "top_hessian_eigenvalue"]


# ------------------------------------------------------------------------------ checks
def _params(model: nn.Module) -> list[Tensor]:
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("model has no parameters that require grad")
    return params


def _loss(model: nn.Module, loss_fn: Callable, x: Tensor, y: Tensor) -> Tensor:
    """``loss_fn(model(x), y)``, checked to be a scalar that depends on the parameters."""
    with torch.enable_grad():
        loss = _check.scalar_loss("loss_fn", loss_fn(model(x), y)).reshape(())
    if not loss.requires_grad:
        raise ValueError("loss_fn must return a loss that depends on the model's parameters "
                         "(it has no gradient)")
    if not torch.isfinite(loss.detach()):
        raise ValueError(f"loss_fn must return a finite loss at this point, got {loss.item()}")
    return loss


def _check_inputs(model, loss_fn, x, y):
    model = _check.module("model", model)
    loss_fn = _check.function("loss_fn", loss_fn, "a callable loss_fn(prediction, y)")
    x = _check.tensor("x", x, finite=True)
    y = _check.tensor("y", y, floating=False, finite=True)
    return model, loss_fn, x, y


# ---------------------------------------------------------------------------- the math
def _hvp(grads: Sequence[Tensor], params: Sequence[Tensor], v: Sequence[Tensor]) -> list[Tensor]:
    """H v = d(g . v)/dtheta, with g = dL/dtheta built with create_graph=True."""
    hv = torch.autograd.grad(grads, params, grad_outputs=list(v), retain_graph=True,
                             allow_unused=True)
    return [torch.zeros_like(p) if h is None else h for p, h in zip(params, hv)]


def _dot(a: Sequence[Tensor], b: Sequence[Tensor]) -> float:
    return float(sum((ai.double() * bi.double()).sum() for ai, bi in zip(a, b)))


def hessian_vector_product(model: nn.Module, loss_fn: Callable[[Tensor, Tensor], Tensor],
                           x: Tensor, y: Tensor, v: Sequence[Tensor]) -> list[Tensor]:
    r"""The product :math:`Hv` of the loss's Hessian with respect to the parameters and ``v``.

    .. math::

        g = \nabla_\theta\,\mathcal L(\theta),\qquad
        Hv = \nabla_\theta\,\big(g(\theta)\cdot v\big)\quad(v \text{ held fixed}),

    with :math:`\mathcal L = ` ``loss_fn(model(x), y)`` and :math:`\theta` every parameter
    of ``model`` that requires grad, in ``model.parameters()`` order.

    Args:
        model: an ``nn.Module``; its parameters are not changed and no ``.grad`` is written.
        loss_fn: ``loss_fn(prediction, y)`` returning a scalar tensor
            (e.g. ``torch.nn.functional.mse_loss``).
        x: the model's input (a tensor of finite values).
        y: the targets passed to ``loss_fn`` (a tensor of finite values).
        v: one tensor per trainable parameter, each of that parameter's shape.

    Returns:
        A list of tensors shaped like the parameters: :math:`Hv`, block by block.

    Raises:
        TypeError: ``model`` not an ``nn.Module``; ``loss_fn`` not callable (or a class);
            ``x``/``y`` not tensors, ``x`` not floating-point; ``v`` not a list or tuple of
            floating-point tensors; ``loss_fn`` not returning a tensor.
        ValueError: NaN or infinity in ``x``, ``y`` or ``v``; a model without trainable
            parameters; ``v`` with the wrong number of tensors or a wrong shape; a loss
            that is not a scalar, has no gradient or is not finite.
    """
    model, loss_fn, x, y = _check_inputs(model, loss_fn, x, y)
    params = _params(model)
    v = _check.sequence("v", v, what="a list of tensors, one per trainable parameter")
    if len(v) != len(params):
        raise ValueError(f"v must have one tensor per trainable parameter ({len(params)}), "
                         f"got {len(v)}")
    for i, (vi, p) in enumerate(zip(v, params)):
        _check.tensor(f"v[{i}]", vi, finite=True, nonempty=False)
        _check.same_shape(f"v[{i}]", vi, f"parameter {i}", p)
    loss = _loss(model, loss_fn, x, y)
    grads = torch.autograd.grad(loss, params, create_graph=True)
    return [h.detach() for h in _hvp(grads, params, [vi.to(p) for vi, p in zip(v, params)])]


def top_hessian_eigenvalue(model: nn.Module, loss_fn: Callable[[Tensor, Tensor], Tensor],
                           x: Tensor, y: Tensor, *, iters: int = 20, seed: int = 0,
                           tol: float = 1e-4) -> float:
    r"""The largest eigenvalue :math:`\lambda_{\max}` of the loss's Hessian, by power iteration.

    Power iteration repeats :math:`v \leftarrow Hv/\lVert Hv\rVert` from a random unit
    :math:`v` and reads the Rayleigh quotient :math:`\lambda = v^\top H v`; it converges to
    the eigenvalue of largest *modulus*. If that one is negative (a saddle that curves down
    more than up), a second run on :math:`H - \lambda I`, whose eigenvalues are all
    :math:`\ge 0`, finds :math:`\lambda_{\max}`. Each step costs one Hessian-vector
    product (:func:`hessian_vector_product`).

    Args:
        model: an ``nn.Module``; the Hessian is taken with respect to all its parameters
            that require grad (weights and biases together). Nothing is changed on it.
        loss_fn: ``loss_fn(prediction, y)`` returning a scalar tensor.
        x: the model's input (a tensor of finite values).
        y: the targets passed to ``loss_fn`` (a tensor of finite values).
        iters: the most power-iteration steps per run (an int >= 1).
        seed: seeds the random start vector (a private generator; the global RNG is untouched).
        tol: stop when :math:`\lambda` changes by less than ``tol`` times :math:`|\lambda|`
            from one step to the next (a number >= 0; 0 runs all ``iters`` steps).

    Returns:
        :math:`\lambda_{\max}` as a Python float. Power iteration converges at the rate
        :math:`|\lambda_2/\lambda_1|` per step, so with few ``iters`` and a small gap the
        result is a lower bound that is close, not exact.

    Raises:
        TypeError: ``model`` not an ``nn.Module``; ``loss_fn`` not callable (or a class);
            ``x``/``y`` not tensors, ``x`` not floating-point; ``iters``/``seed`` not ints,
            ``tol`` not a number; ``loss_fn`` not returning a tensor.
        ValueError: NaN or infinity in ``x`` or ``y``; ``iters < 1``; ``seed`` outside
            ``[0, 2**64 - 1]``; ``tol`` negative or not finite; a model without trainable
            parameters; a loss that is not a scalar, has no gradient or is not finite.

    References:
        Pearlmutter, *Fast exact multiplication by the Hessian* (1994); LeCun, Simard &
        Pearlmutter (1993) used the same power iteration to set learning rates.
    """
    model, loss_fn, x, y = _check_inputs(model, loss_fn, x, y)
    iters = _check.integer("iters", iters, minimum=1)
    seed = _check.seed(seed)
    tol = _check.nonnegative("tol", tol)
    params = _params(model)

    # 1. the gradient, kept differentiable, so that each H v is one more backward pass
    loss = _loss(model, loss_fn, x, y)
    grads = torch.autograd.grad(loss, params, create_graph=True)
    gen = torch.Generator().manual_seed(seed)
    start = [torch.randn(p.shape, generator=gen, dtype=torch.float64).to(p) for p in params]

    def power(shift: float) -> float:
        # 2. power iteration on H - shift * I: v <- (H - shift I) v / |.|, lambda = v.(H v)
        norm = math.sqrt(_dot(start, start))
        v = [s / norm for s in start]
        lam = math.nan
        for _ in range(iters):
            hv = _hvp(grads, params, v)
            hv = [h - shift * vi for h, vi in zip(hv, v)]
            new = _dot(v, hv)                       # Rayleigh quotient of H - shift I
            size = math.sqrt(_dot(hv, hv))
            if size == 0.0:                         # v is in the null space: H - shift I = 0 on it
                return shift + new
            v = [h / size for h in hv]
            done = abs(new - lam) <= tol * abs(new)
            lam = new
            if done:
                break
        return shift + lam

    # 3. the dominant eigenvalue; if it is negative, the top one is found on H - lambda I
    lam = power(0.0)
    if lam < 0:
        lam = power(lam)
    return float(lam)
