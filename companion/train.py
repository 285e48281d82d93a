r"""A small training loop that records what the book plots and never crashes on divergence.

:func:`train` runs ``steps`` updates of plain gradient-based training,

.. math::

    \ell_t = L\big(f_{\theta_t}(x_{B_t}),\, y_{B_t}\big),\qquad
    \theta_{t+1} = \theta_t + \Delta\theta_t \quad(\Delta\theta_t \text{ from the optimizer}),

and returns a :class:`History`: the loss :math:`\ell_t` of every step (measured *before*
step ``t``'s update), the global gradient norm :math:`\lVert\nabla\ell_t\rVert_2` of every
step (before any clipping), the step at which the run diverged, if it did, and optionally
each layer's update-to-weight ratio :math:`\lVert\Delta W_t\rVert / \lVert W_t\rVert` (a
ratio near ``1e-3`` per step is the usual rule of thumb; Karpathy, *CS231n* notes).

``clip=`` clips the gradients between ``backward()`` and ``opt.step()``: a number is the
``max_norm`` of :func:`companion.clip.clip_grad_norm_`, a callable ``f(params)`` does
anything else (``functools.partial(companion.clip.adaptive_clip_grad_, clip_factor=0.01)``).

A run *diverges* at the first step ``t`` whose loss is not finite or exceeds
``DIVERGENCE_FACTOR`` (1e6) times the initial loss :math:`\ell_0` (the second test only when
:math:`\ell_0 > 0`). Training then stops -- nothing is raised -- and ``losses[t:]`` are NaN,
so a sweep over learning rates always finishes and a plot can say "diverged at step t".
The model keeps the weights it had at step ``t`` (possibly huge or NaN).

Example::

    from companion import data, nets, train
    x, y = data.teacher_regression(256, 8)
    hist = train.train(nets.mlp(8, 1, width=32, depth=2, seed=0), x, y, steps=200, lr=0.1)
    hist.final_loss < hist.losses[0], hist.diverged_at        # (True, None)
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any, Callable, Optional, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import clip as _clip

__all__ = ["History", "train", "OPTIMIZERS", "LOSSES", "DIVERGENCE_FACTOR"]

#: A loss larger than this times the initial loss counts as divergence.
DIVERGENCE_FACTOR = 1e6

#: optimizer name -> ``f(params, lr, **optimizer_kwargs)``. "momentum" is torch's heavy
#: ball SGD (``v = mu v + g; p -= lr v``) with ``momentum=0.9`` unless given.
OPTIMIZERS: dict[str, Callable[..., torch.optim.Optimizer]] = {
    "sgd": lambda params, lr, **kw: torch.optim.SGD(params, lr=lr, **kw),
    "momentum": lambda params, lr, **kw: torch.optim.SGD(params, lr=lr, **{"momentum": 0.9, **kw}),
    "adam": lambda params, lr, **kw: torch.optim.Adam(params, lr=lr, **kw),
}

#: loss name -> ``f(prediction, target)`` (both mean-reduced over the batch).
LOSSES: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "mse": F.mse_loss,
    "cross_entropy": F.cross_entropy,
}


@dataclass(frozen=True)
class History:
    """What :func:`train` returns.

    Attributes:
        losses: float64 array of length ``steps``; ``losses[t]`` is the (mini)batch loss
            before step ``t``'s update; NaN from ``diverged_at`` (or an early stop) on.
        diverged_at: first step whose loss was non-finite or above
            ``DIVERGENCE_FACTOR`` x ``losses[0]``; ``None`` if the run never diverged.
        update_ratios: with ``track_update_ratios=True``, for each weight matrix (key: the
            layer's name, e.g. ``"fc1"``, or the parameter's name when it is not a
            ``.weight``) an array of shape (steps,) of
            :math:`\\lVert W_{t+1} - W_t\\rVert_F / \\lVert W_t\\rVert_F`, NaN for steps
            not run; else ``None``.
        steps_run: number of updates made (``steps`` unless diverged or stopped early).
        grad_norms: float64 array (steps,): the global 2-norm of all gradients after
            ``backward()`` and *before* clipping, :math:`\\lVert(\\lVert g_1\\rVert_2, \\dots,
            \\lVert g_k\\rVert_2)\\rVert_2`; NaN for steps not run. Always recorded by
            :func:`train` (``None`` only for a History built by hand).
        clipped: bool array (steps,), True where the clip changed the gradient: for
            ``clip=max_norm``, where the coefficient :math:`\\tau / (N + 10^{-6})` was < 1;
            for a callable, where the global norm after the call differs from before.
            False for steps not run; ``None`` when ``clip`` is None.
    """

    losses: np.ndarray
    diverged_at: Optional[int] = None
    update_ratios: Optional[dict[str, np.ndarray]] = None
    steps_run: int = 0
    grad_norms: Optional[np.ndarray] = None
    clipped: Optional[np.ndarray] = None

    @property
    def diverged(self) -> bool:
        return self.diverged_at is not None

    @property
    def final_loss(self) -> float:
        """The last finite loss (NaN if there is none)."""
        finite = self.losses[np.isfinite(self.losses)]
        return float(finite[-1]) if finite.size else math.nan


# ---------------------------------------------------------------------------- checks
def _choice(name: str, value: Any, table: dict, what: str) -> Callable:
    if callable(value):
        return value
    if isinstance(value, str) and value in table:
        return table[value]
    raise ValueError(f"{name} must be one of {list(table)} or a callable {what}, got {value!r}")


def _make_batches(n: int, batch_size: Optional[int], seed: int):
    """Yield index tensors: ``None`` for full batch, else seeded shuffled epochs (drop last)."""
    if batch_size is None:
        while True:
            yield None
    gen = torch.Generator().manual_seed(seed)
    while True:
        perm = torch.randperm(n, generator=gen)
        for start in range(0, n - batch_size + 1, batch_size):
            yield perm[start:start + batch_size]


def _check_clip(clip: Any) -> Union[None, float, Callable]:
    """None, a positive finite max_norm (as float), or a callable f(params)."""
    if clip is None or callable(clip):
        return clip
    if isinstance(clip, bool) or not isinstance(clip, numbers.Real):
        raise TypeError(f"clip must be None, a positive max_norm or a callable f(params), "
                        f"got {clip!r} ({type(clip).__name__})")
    if not 0 < clip < math.inf:
        raise ValueError(f"clip (the max_norm) must be positive and finite, got {clip!r}")
    return float(clip)


def _tracked_weights(model: nn.Module) -> dict[str, Tensor]:
    """Every parameter with >= 2 dims, keyed by layer name (``fc1.weight`` -> ``fc1``)."""
    out = {}
    for name, p in model.named_parameters():
        if p.dim() >= 2:
            out[name[: -len(".weight")] if name.endswith(".weight") else name] = p
    return out


# ----------------------------------------------------------------------------- train
def train(
    model: nn.Module,
    x: Any,
    y: Any,
    *,
    steps: int,
    lr: float,
    optimizer: Union[str, Callable[..., torch.optim.Optimizer]] = "sgd",
    loss: Union[str, Callable[[Tensor, Tensor], Tensor]] = "mse",
    batch_size: Optional[int] = None,
    seed: int = 0,
    track_update_ratios: bool = False,
    optimizer_kwargs: Optional[dict[str, Any]] = None,
    callback: Optional[Callable[[int, float], Optional[bool]]] = None,
    clip: Union[None, float, Callable[[list[nn.Parameter]], Any]] = None,
    schedule: Optional[Callable[[int], float]] = None,
) -> History:
    """Train ``model`` in place on ``(x, y)`` for ``steps`` steps; see the module docstring.

    Args:
        model: any ``nn.Module`` mapping ``x`` to predictions.
        x, y: tensors (or arrays) with the same first dimension. Floating ``x`` and ``y``
            are cast to the model's dtype; integer ``y`` (class labels) is kept.
        steps: number of steps, >= 1.
        lr: learning rate, > 0.
        optimizer: ``"sgd"``, ``"momentum"`` (SGD, momentum 0.9), ``"adam"``, or a callable
            ``f(params, lr, **optimizer_kwargs)`` returning a ``torch.optim.Optimizer`` --
            e.g. ``torch.optim.RMSprop`` or ``companion.optim.Adam`` themselves.
        loss: ``"mse"``, ``"cross_entropy"`` or a callable ``f(prediction, y)`` returning a
            scalar tensor. With ``"mse"``, ``y`` must have the model output's shape.
        batch_size: ``None`` for full batch; else minibatches from shuffled epochs (a
            ``torch.Generator`` seeded with ``seed``; an incomplete last batch is dropped).
        seed: seeds the minibatch order (nothing else: dropout, say, uses torch's RNG).
        track_update_ratios: record :attr:`History.update_ratios`.
        optimizer_kwargs: extra keyword arguments for the optimizer (``momentum=0.5``...).
        callback: ``callback(step, loss)`` after each completed step; returning ``False``
            stops training (the remaining losses are NaN, ``diverged_at`` stays ``None``).
        clip: ``None`` (no clipping); a number ``max_norm`` > 0: after ``backward()``,
            :func:`companion.clip.clip_grad_norm_` (global 2-norm, as torch's); or a
            callable called as ``clip(params)`` (the list of parameters that require grad)
            after ``backward()`` and before ``opt.step()``, modifying ``p.grad`` in place.
        schedule: ``None`` (a constant learning rate) or ``f(t)``, the factor by which
            step ``t`` (0, 1, ...) multiplies ``lr``, applied with
            ``torch.optim.lr_scheduler.LambdaLR``: a linear warm-up over ``k`` steps is
            ``lambda t: min(1.0, (t + 1) / k)``.

    Returns:
        A :class:`History`.

    Raises:
        TypeError: ``model`` is not an ``nn.Module``; ``callback`` not callable;
            ``optimizer_kwargs`` not a dict; ``clip`` neither a number nor a callable;
            ``schedule`` not callable.
        ValueError: ``steps < 1``, ``lr <= 0``, an unknown optimizer or loss name, a bad
            ``batch_size``, ``x``/``y`` of different lengths, (``"mse"``) ``y`` not
            shaped like the model's output, or ``clip`` a number <= 0 or not finite.
    """
    # 1. check the arguments at the boundary
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch nn.Module, got {type(model).__name__}")
    if isinstance(steps, bool) or not isinstance(steps, numbers.Integral) or steps < 1:
        raise ValueError(f"steps must be an int >= 1, got {steps!r}")
    if isinstance(lr, bool) or not isinstance(lr, numbers.Real) or not (0 < lr < math.inf):
        raise ValueError(f"lr must be positive and finite, got {lr!r}")
    make_opt = _choice("optimizer", optimizer, OPTIMIZERS, "f(params, lr)")
    loss_fn = _choice("loss", loss, LOSSES, "f(prediction, target)")
    if optimizer_kwargs is not None and not isinstance(optimizer_kwargs, dict):
        raise TypeError(f"optimizer_kwargs must be a dict or None, got {optimizer_kwargs!r}")
    if callback is not None and not callable(callback):
        raise TypeError(f"callback must be callable or None, got {callback!r}")
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ValueError(f"seed must be an int >= 0, got {seed!r}")
    clip = _check_clip(clip)
    if schedule is not None and not callable(schedule):
        raise TypeError(f"schedule must be a callable f(step) -> factor or None, got {schedule!r}")
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("model has no parameters that require grad")
    dtype = params[0].dtype
    x, y = torch.as_tensor(x), torch.as_tensor(y)
    x = x.to(device=params[0].device, dtype=dtype if x.is_floating_point() else x.dtype)
    y = y.to(device=params[0].device, dtype=dtype if y.is_floating_point() else y.dtype)
    n = x.shape[0] if x.dim() else 0
    if n < 1 or y.dim() == 0 or y.shape[0] != n:
        raise ValueError(f"x and y must have the same nonzero first dimension, "
                         f"got x {tuple(x.shape)} and y {tuple(y.shape)}")
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(
            batch_size, numbers.Integral) or not 1 <= batch_size <= n):
        raise ValueError(f"batch_size must be None or an int in [1, {n}], got {batch_size!r}")

    # 2. set up: optimizer, batch order, preallocated records
    opt = make_opt(params, lr, **(optimizer_kwargs or {}))
    scheduler = None if schedule is None else torch.optim.lr_scheduler.LambdaLR(opt, schedule)
    batches = _make_batches(n, batch_size, int(seed))
    losses = np.full(steps, np.nan)
    tracked = _tracked_weights(model) if track_update_ratios else {}
    ratios = np.full((len(tracked), steps), np.nan)
    weights = list(tracked.values())
    # norms and flags stay on the device until the end: no host sync per step
    grad_norms = torch.full((steps,), math.nan, dtype=torch.float64, device=params[0].device)
    clipped = torch.zeros(steps, dtype=torch.bool, device=params[0].device)
    diverged_at: Optional[int] = None
    threshold = math.inf
    t_done = 0

    # 3. the loop: loss, divergence check, backward, step, record
    for t in range(steps):
        idx = next(batches)
        xb, yb = (x, y) if idx is None else (x[idx], y[idx])
        pred = model(xb)
        if t == 0 and loss == "mse" and pred.shape != yb.shape:
            raise ValueError(f"y must have the model output's shape for loss='mse': output "
                             f"{tuple(pred.shape[1:])} per example, y {tuple(yb.shape[1:])}")
        value = loss_fn(pred, yb)
        lv = value.item()
        if t == 0 and lv > 0:
            threshold = DIVERGENCE_FACTOR * lv
        if not math.isfinite(lv) or lv > threshold:
            diverged_at = t
            break
        losses[t] = lv
        opt.zero_grad(set_to_none=True)
        value.backward()
        grad_norms[t], clipped[t] = _clip_step(params, clip)
        if weights:
            before = [w.detach().clone() for w in weights]
        opt.step()
        if scheduler is not None:
            scheduler.step()
        if weights:
            with torch.no_grad():
                r = torch.stack([torch.linalg.vector_norm(w - w0) / torch.linalg.vector_norm(w0)
                                 for w, w0 in zip(weights, before)])
            ratios[:, t] = r.double().cpu().numpy()
        t_done = t + 1
        if callback is not None and callback(t, lv) is False:
            break

    update_ratios = dict(zip(tracked, ratios)) if track_update_ratios else None
    return History(losses=losses, diverged_at=diverged_at, update_ratios=update_ratios,
                   steps_run=t_done, grad_norms=grad_norms.cpu().numpy(),
                   clipped=None if clip is None else clipped.cpu().numpy())


def _clip_step(params: list[Tensor], clip: Union[None, float, Callable]) -> tuple[Tensor, Tensor]:
    """Clip the gradients as ``clip`` says; return (global 2-norm before, whether changed)."""
    if isinstance(clip, float):
        norm = _clip.clip_grad_norm_(params, clip)
        return norm, clip / (norm + _clip.NORM_EPS) < 1.0       # torch's coefficient < 1
    norm = _clip.get_total_norm([p.grad for p in params if p.grad is not None])
    if clip is None:
        return norm, torch.tensor(False)
    clip(params)
    after = _clip.get_total_norm([p.grad for p in params if p.grad is not None])
    return norm, after.to(norm.device) != norm
