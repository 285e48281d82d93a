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
from dataclasses import dataclass
from typing import Any, Callable, Optional, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import _check
from . import clip as _clip
from . import diagnostics as _dg

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
        update_ratios: with ``track_update_ratios=True``, for each layer with a weight
            (key: the layer's name, e.g. ``"fc1"``; the weight by the rule of
            :func:`companion.diagnostics.snapshot_weights`: ``weight``, else
            ``in_proj_weight``, else the first matrix) an array of shape (steps,) of
            :math:`\\lVert W_{t+1} - W_t\\rVert_F / \\lVert W_t\\rVert_F` (the definition of
            :func:`companion.diagnostics.update_ratios`, in the weights' own precision),
            NaN for steps not run; else ``None``.
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
def _check_choice(name: str, value: Any, table: dict, what: str, *, classes: bool) -> Callable:
    """A name of ``table`` (its function) or a callable; ``classes``: a class counts as a
    callable (``torch.optim.SGD`` for an optimizer), else it is refused (``nn.MSELoss``
    for a loss must be called first)."""
    if isinstance(value, str):
        if value not in table:
            raise ValueError(f"{name} must be one of {list(table)} or a callable {what}, "
                             f"got {value!r}")
        return table[value]
    if classes and isinstance(value, type):
        return value
    return _check.function(name, value, f"one of {list(table)} or a callable {what}")


def _check_data(name: str, value: Any) -> Tensor:
    """A nonempty numpy array or tensor with at least one dimension, not complex, and
    finite when floating (NaN in the data is bad data, not a divergence); as a tensor."""
    value = _check.array(name, value, floating=False, min_ndim=1)
    value = torch.as_tensor(value)
    if value.is_complex():
        raise TypeError(f"{name} must have a real dtype, got {_check.show(value)}")
    if value.is_floating_point():
        _check.finite_values(name, value)
    return value


def _check_class_labels(name: str, y: Any, shape: tuple) -> Tensor:
    """``y`` as cross-entropy's class labels for logits of shape ``shape`` (classes in
    dimension 1): an integer tensor of that shape without its class dimension, with
    values in ``[0, C)``. (Soft labels and ignored indices: pass a loss function.)"""
    shape = tuple(shape)
    if len(shape) == 2:
        return _check.labels(name, y, n=shape[0], classes=shape[1])
    y = _check.tensor(name, y, floating=False, integral=True, nonempty=False)
    classes = shape[1] if len(shape) >= 2 else shape[0] if shape else 0
    want = (shape[0],) + shape[2:] if len(shape) >= 2 else ()
    if tuple(y.shape) != want:
        raise ValueError(f"{name} must have the shape {want} of the output {shape} without "
                         f"its class dimension 1, got {_check.show(y)}")
    if y.numel():
        lo, hi = (int(v) for v in torch.aminmax(y))
        if lo < 0 or hi >= classes:
            raise ValueError(f"{name} must hold class indices in [0, {classes - 1}] (the output "
                             f"has {classes} classes), got values from {lo} to {hi}")
    return y


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
    what = "None, a positive max_norm or a callable f(params)"
    if clip is None:
        return clip
    if callable(clip):
        return _check.function("clip", clip, what)
    if not _check.is_real(clip):
        raise TypeError(f"clip must be {what}, got {clip!r} ({type(clip).__name__})")
    return _check.positive("clip (the max_norm)", clip)


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
        x, y: tensors or numpy arrays with the same first dimension (one row per
            example), of finite values. Floating ``x`` and ``y`` are cast to the model's
            dtype; an integer ``x`` (token indices for an embedding) is kept as it is, and
            integer ``y`` (class labels) too (as int64 for ``"cross_entropy"``).
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
        TypeError: ``model`` not an ``nn.Module``; ``x`` or ``y`` not an array or
            tensor, or complex; ``x`` not floating and refused by the model's first
            forward pass; ``y`` not floating for ``"mse"``, not integer labels for
            ``"cross_entropy"``; a non-int ``steps``, ``batch_size`` or ``seed``, a
            non-number ``lr``; ``optimizer`` or ``loss`` neither a name nor a callable
            (a class for ``loss``); ``optimizer`` not returning an optimizer;
            ``optimizer_kwargs`` not a dict of names (or refused by the optimizer);
            ``track_update_ratios`` not a bool; ``callback`` or ``schedule`` not a
            function; ``clip`` neither a number nor a callable; a ``loss`` that does not
            return a tensor.
        ValueError: NaN or infinity in ``x`` or ``y`` (bad data, not a divergence);
            an empty or 0-dimensional ``x`` or ``y``; ``x``/``y`` of different lengths;
            ``steps < 1``; ``lr`` not finite and > 0; an unknown optimizer or loss name;
            ``batch_size`` outside ``[1, n]``; ``seed`` outside ``[0, 2**64 - 1]``;
            ``clip`` a number <= 0 or not finite; a model without trainable parameters;
            (``"mse"``) ``y`` not shaped like the model's output; (``"cross_entropy"``)
            labels not of shape (n,) or outside ``[0, C)``; a loss that is not a scalar
            or has no gradient; an optimizer refusing ``optimizer_kwargs``' values.
    """
    # 1. check the arguments at the boundary, in the order of the signature
    model = _check.module("model", model)
    x = _check_data("x", x)
    y = _check_data("y", y)
    steps = _check.integer("steps", steps, minimum=1)
    lr = _check.positive("lr", lr)
    make_opt = _check_choice("optimizer", optimizer, OPTIMIZERS, "f(params, lr)", classes=True)
    loss_fn = _check_choice("loss", loss, LOSSES, "f(prediction, target)", classes=False)
    kind = loss if isinstance(loss, str) else None   # a named loss: its targets are checked
    n = x.shape[0]
    if y.shape[0] != n:
        raise ValueError(f"x and y must have the same nonzero first dimension (one row per "
                         f"example), got x {tuple(x.shape)} and y {tuple(y.shape)}")
    if kind == "mse" and not y.is_floating_point():
        raise TypeError(f"y must be floating-point targets for loss='mse', got "
                        f"{_check.show(y)} (class labels go with loss='cross_entropy')")
    if kind == "cross_entropy" and not y.is_floating_point() and y.dtype != torch.bool:
        y = y.long()             # cross_entropy takes int64 labels (no copy when they are)
    batch_size = _check.optional_integer("batch_size", batch_size, minimum=1, maximum=n)
    seed = _check.seed(seed)
    track_update_ratios = _check.flag("track_update_ratios", track_update_ratios)
    if optimizer_kwargs is not None:
        _check.mapping("optimizer_kwargs", optimizer_kwargs, nonempty=False)
        for key in optimizer_kwargs:
            if not isinstance(key, str):
                raise TypeError(f"optimizer_kwargs must have str keys (argument names), "
                                f"got the key {key!r}")
    if callback is not None:
        _check.function("callback", callback, "None or a callable callback(step, loss)")
    clip = _check_clip(clip)
    if schedule is not None:
        _check.function("schedule", schedule, "a callable f(step) -> factor or None")
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("model has no parameters that require grad")
    dtype = params[0].dtype
    x = x.to(device=params[0].device, dtype=dtype if x.is_floating_point() else x.dtype)
    y = y.to(device=params[0].device, dtype=dtype if y.is_floating_point() else y.dtype)

    # 2. set up: optimizer, batch order, preallocated records
    opt = _make_optimizer(make_opt, params, lr, optimizer_kwargs)
    scheduler = None if schedule is None else _make_scheduler(opt, schedule)
    batches = _make_batches(n, batch_size, int(seed))
    losses = np.full(steps, np.nan)
    tracked = _dg._layer_weights(model) if track_update_ratios else {}
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
        if t == 0:       # the checks that need the model's output, before any update
            pred = _first_forward(model, xb)
            value = _first_loss(loss_fn, kind, pred, yb, y)
        else:
            pred = model(xb)
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
        if weights:          # the one definition, in the weights' own precision
            ratios[:, t] = _dg._update_ratios(before, weights).numpy()
        t_done = t + 1
        if callback is not None and callback(t, lv) is False:
            break

    update_ratios = dict(zip(tracked, ratios)) if track_update_ratios else None
    return History(losses=losses, diverged_at=diverged_at, update_ratios=update_ratios,
                   steps_run=t_done, grad_norms=grad_norms.cpu().numpy(),
                   clipped=None if clip is None else clipped.cpu().numpy())


def _make_optimizer(make_opt: Callable, params: list, lr: float,
                    optimizer_kwargs: Optional[dict]) -> torch.optim.Optimizer:
    """``make_opt(params, lr, **optimizer_kwargs)``; a refusal by the optimizer (an
    unknown keyword, a bad momentum) is re-raised naming the arguments that caused it."""
    kwargs = dict(optimizer_kwargs or {})
    try:
        opt = make_opt(params, lr, **kwargs)
    except (TypeError, ValueError) as err:
        kind = TypeError if isinstance(err, TypeError) else ValueError
        raise kind(f"optimizer could not be built as optimizer(params, lr={lr:g}, "
                   f"**optimizer_kwargs) with optimizer_kwargs={kwargs!r}: {err}") from err
    return _check.instance("optimizer", opt, torch.optim.Optimizer,
                           "a name or a callable returning a torch.optim.Optimizer")


def _make_scheduler(opt: torch.optim.Optimizer, schedule: Callable) -> Any:
    """LambdaLR(opt, schedule), after checking that ``schedule(0)`` is a number."""
    try:
        factor = schedule(0)
    except TypeError as err:
        raise TypeError(f"schedule must be a callable f(step) -> factor, but schedule(0) "
                        f"failed: {err}") from err
    _check.real("schedule(0)", factor, finite=True)
    return torch.optim.lr_scheduler.LambdaLR(opt, schedule)


def _first_forward(model: nn.Module, xb: Tensor) -> Any:
    """``model(xb)``; a non-floating ``x`` (kept as it is, for token models) that the
    model cannot take is refused naming ``x``, with the model's error chained."""
    if xb.is_floating_point():
        return model(xb)
    try:
        return model(xb)
    except (RuntimeError, TypeError, IndexError) as err:
        raise TypeError(f"x must be floating-point data for this model (or token indices "
                        f"it can take), got {_check.show(xb)}: an x that is not floating is "
                        f"passed as it is, and model(x) failed with {type(err).__name__}: "
                        f"{err} (for a model of floats, convert with x.float())") from err


def _first_loss(loss_fn: Callable, kind: Optional[str], pred: Any, yb: Tensor,
                y: Tensor) -> Tensor:
    """The first step's loss, after checking ``y`` against the output (all of ``y``, not
    only the first batch) and that the loss is a scalar tensor with a gradient."""
    if kind == "mse" and isinstance(pred, Tensor) and pred.shape != yb.shape:
        raise ValueError(f"y must have the model output's shape for loss='mse': output "
                         f"{tuple(pred.shape[1:])} per example, y {tuple(yb.shape[1:])}")
    if kind == "cross_entropy" and isinstance(pred, Tensor) and pred.dim() >= 2:
        if pred.shape[0] != yb.shape[0]:
            raise ValueError(f"y must have one label per example: the output has "
                             f"{pred.shape[0]} rows for a batch of {yb.shape[0]} labels")
        _check_class_labels("y", y, (y.shape[0],) + tuple(pred.shape[1:]))
    try:
        value = loss_fn(pred, yb)
    except TypeError as err:
        if kind is not None:
            raise
        raise TypeError(f"loss must be a callable f(prediction, target), but "
                        f"loss(prediction, y) failed: {err}") from err
    value = _check.scalar_loss("loss", value)
    if not value.requires_grad:
        raise ValueError("loss must return a tensor computed from the prediction, got one "
                         "without a gradient (built from .item() or numpy, or under "
                         "torch.no_grad()?)")
    return value


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
