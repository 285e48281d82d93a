r"""Diagnose a network that does not train: one call, findings with numbers, the chapter to read.

* :func:`diagnose` runs one forward and one backward pass of *your* model on *your*
  batch and measures, layer by layer (any ``nn.Module``: MLPs, CNNs, ``nn.LSTM``,
  ``nn.TransformerEncoder``, the companion's models):

  - the **backward signal** :math:`s_\ell = \lVert \partial L/\partial z^{(\ell)}\rVert_2`
    at each layer's output, and its ratio :math:`s_\ell / s_\text{out}` to the
    output layer's;
  - the weight-gradient norm :math:`\lVert \nabla W^{(\ell)} \rVert`, the weight norm
    :math:`\lVert W^{(\ell)}\rVert` and, given an optimizer, the update-to-weight ratio
    :math:`\lVert \Delta W\rVert / \lVert W\rVert` of one step taken on a copy;
  - after every activation function: mean, std, the saturated fraction (sigmoid,
    tanh) and the fraction of dead units (ReLU family);
  - whether the output, the loss, a layer's output, a gradient or a parameter is not
    finite, and the loss against what the output layer should give (:math:`\log C`
    for :math:`C` classes).

* :func:`watch` takes the same measurements inside your own training loop every
  ``every`` steps, and its :meth:`Watcher.report` adds what only time shows: a loss
  that diverged (and when), a loss stuck where it started, dead units that grew,
  update ratios out of range over many steps.

Both return a :class:`Report`: ``report.findings`` is a list of :class:`Finding`
(symptom, severity, layers, evidence, remedy, chapter), ``str(report)`` a text report,
in a notebook an HTML table, ``report.plot()`` a one-page figure and ``report.rows``
the table as plain dicts.

Example::

    from companion.diagnose import diagnose
    report = diagnose(model, x, y)              # the loss: cross-entropy for integer y
    print(report)                                # or just `report` in a notebook
    [f.symptom for f in report.findings]         # e.g. ['vanishing']

The thresholds are the named constants below, each with where it comes from; they are
set so that healthy models (He-initialized ReLU MLPs, residual networks with
normalization, pre-LN transformers, a small CNN, an LSTM) give no finding, which
``tests/test_diagnose.py`` checks. The table :data:`SYMPTOMS` (symptom -> cause,
remedy, chapter) is the one the book's closing map is drawn from; it, :class:`Finding`
and :class:`Report` are defined in :mod:`companion.report` and importable from here.

References: Glorot & Bengio (2010) and Hochreiter (1991) (vanishing signal);
Karpathy, *A Recipe for Training Neural Networks* (2019) (initial loss, update ratio
about 1e-3); Lu et al. (2020) (dying ReLU); fastai's ``ActivationStats``.
"""
from __future__ import annotations

import copy
import math
import numbers
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import _check
from . import diagnostics as _dg
from .train import LOSSES as _LOSS_NAMES, History, _check_class_labels
from .report import SYMPTOMS, Finding, Report, Symptom, _finding, _short_list

__all__ = ["diagnose", "watch", "Report", "Finding", "Symptom", "Watcher", "ForwardError",
           "SYMPTOMS", "VANISHING_RATIO", "EXPLODING_RATIO", "DEAD_FRACTION",
           "SATURATION_FRACTION", "INITIAL_LOSS_FACTOR", "INITIAL_MSE_FACTOR", "UPDATE_RATIO_LOW",
           "UPDATE_RATIO_HIGH", "DIVERGED_FACTOR", "PLATEAU_DROP", "PLATEAU_MIN_STEPS",
           "DEAD_GROWTH"]

# ------------------------------------------------------------------- thresholds
#: A layer whose backward signal is below this fraction of the output layer's is
#: *vanishing*. Healthy networks stay well inside [1e-3, 1e3] (measured at
#: initialization: a 20-layer He ReLU MLP 0.6 to 1.2; a 16-block residual MLP with
#: batch norm 0.2 to 63, growing towards the input; the 3-convolution CNN of
#: ``companion.gallery`` 0.014 at its first convolution), while a 10-layer sigmoid MLP
#: is at 6e-7 and a 20-layer one at 2e-13.
VANISHING_RATIO = 1e-3
#: ... above this multiple, *exploding* (the mirror image of VANISHING_RATIO).
EXPLODING_RATIO = 1e3
#: An activation with more than this fraction of dead units is flagged. A unit is dead
#: when it is off for every example of the batch (:func:`companion.diagnostics.dead_units`).
#: Deep He-initialized ReLU MLPs already have some at initialization, because their
#: representations are correlated (Lu et al. 2020): up to 47 % in the last layers of a
#: 20-layer MLP of width 32, none in the first. A large step or a negative bias kills
#: 90-100 %.
DEAD_FRACTION = 0.6
#: An activation with more than this fraction of its outputs in a flat tail (|tanh| >
#: 0.98, sigmoid < 0.02 or > 0.98, where the derivative is < 0.04) is *saturated*.
#: With unit-variance inputs tanh has 2 % there; a tanh MLP with 3x the Xavier scale
#: has more than half.
SATURATION_FRACTION = 0.3
#: A cross-entropy loss more than this multiple of log C, the loss of the uniform
#: prediction over C classes, is flagged: the output layer is too confident at the start
#: (Karpathy 2019: "verify loss @ init"). Logits of unit variance give about 1.4 log C.
INITIAL_LOSS_FACTOR = 3.0
#: The same for MSE against Var(y), the loss of predicting the mean. The loss at
#: initialization is about Var(y) + E[f(x)^2], and variance-preserving networks put
#: E[f(x)^2] near the input's scale, up to 6 Var(y) on this book's regression data.
INITIAL_MSE_FACTOR = 10.0
#: Update-to-weight ratios per step outside [UPDATE_RATIO_LOW, UPDATE_RATIO_HIGH] are
#: flagged. The rule of thumb is about 1e-3 (Karpathy, CS231n); the band is wide
#: because healthy steps range widely: Adam at 1e-3 on small weights gives 1e-2, and
#: SGD's first steps on a regression output layer 0.3. A step that moves a layer by
#: half its norm is too large by any rule; one below 1e-6 does not train it.
UPDATE_RATIO_LOW = 1e-6
UPDATE_RATIO_HIGH = 0.5
#: :func:`watch`: a loss that is not finite, or that rose above this multiple of the
#: first logged loss and stayed above it to the end, has *diverged* (the training loop
#: of :mod:`companion.train` stops at 1e6). A spike that comes back down has not.
DIVERGED_FACTOR = 10.0
#: :func:`watch`: after at least PLATEAU_MIN_STEPS steps, a loss whose mean over the
#: last quarter of the steps is above (1 - PLATEAU_DROP) x the mean of the first ten
#: has not learned: a *plateau*.
PLATEAU_DROP = 0.1
PLATEAU_MIN_STEPS = 50
#: :func:`watch`: dead units that grew by more than this fraction of a layer between
#: the first and the last measurement are reported even below DEAD_FRACTION.
DEAD_GROWTH = 0.2


class ForwardError(RuntimeError):
    """``model(x)`` failed; ``layer`` is the innermost module that was running."""

    def __init__(self, message: str, layer: str):
        super().__init__(message)
        self.layer = layer


# ------------------------------------------------------------------ measurements
@dataclass
class _Measurement:
    """What one recorded forward and backward pass gave (all dicts in forward order)."""

    step: Optional[int]
    layer_types: dict[str, str]
    signal: dict[str, float]
    grad_norm: dict[str, float]
    weight_norm: dict[str, float]
    update_ratio: dict[str, float]
    act_stats: dict[str, _dg.ActivationStats]
    dead: dict[str, float]
    nonfinite: list[tuple[str, Optional[str]]] = field(default_factory=list)
    # (what is not finite, the module it belongs to or None)


def _measure(rec: _dg.Recorder, step: Optional[int],
             weight_norm: Optional[dict[str, float]] = None) -> _Measurement:
    """The measurement of the pass ``rec`` recorded; the weight norms are read from the
    layers unless given (``watch`` gives those of the weights before the step)."""
    layers = OrderedDict((n, m) for n, m in rec._layer_modules.items())
    if weight_norm is None:
        weight_norm = _norms({n: w for n, w in ((n, _dg._weight(m)) for n, m in layers.items())
                              if w is not None})
    else:
        weight_norm = {n: v for n, v in weight_norm.items() if n in layers}
    return _Measurement(step, {n: type(m).__name__ for n, m in layers.items()},
                        rec.output_grad_norms, rec.weight_grad_norms, weight_norm, {},
                        rec.activation_stats, rec.dead_fractions)


def _norm_list(tensors: Sequence[Tensor]) -> list[float]:
    """2-norms of many tensors (one fused call per device, one synchronisation)."""
    if not tensors:
        return []
    norms = torch._foreach_norm([t.detach() for t in tensors])
    return torch.stack([n.double().cpu() for n in norms]).tolist()


def _norms(tensors: dict[str, Tensor]) -> dict[str, float]:
    """name -> 2-norm."""
    return dict(zip(tensors, _norm_list(list(tensors.values()))))


def _ratios(before: dict[str, Tensor], weights: dict[str, Tensor],
            before_norms: dict[str, float]) -> dict[str, float]:
    """|W_now - W_before| / |W_before| for every weight in ``before``."""
    names = [n for n in before if n in weights]
    if not names:
        return {}
    diffs = torch._foreach_sub([weights[n].detach() for n in names], [before[n] for n in names])
    return {n: a / before_norms[n] if before_norms[n] > 0 else math.inf
            for n, a in zip(names, _norm_list(diffs))}


def _nonfinite_params(model: nn.Module) -> list[tuple[str, Optional[str]]]:
    """Parameters and gradients with a value that is not finite. A norm is not finite
    exactly when an element is not, or (float32) when elements exceed ~1e19."""
    named = list(model.named_parameters())
    grads = [(n, p.grad) for n, p in named if p.grad is not None]
    norms = _norm_list([p for _, p in named] + [g for _, g in grads])
    k = len(named)
    def owner(name: str) -> str:
        return name.rsplit(".", 1)[0] if "." in name else "model"

    return ([(f"parameter {n}", owner(n)) for (n, _), v in zip(named, norms[:k])
             if not math.isfinite(v)]
            + [(f"gradient of {n}", owner(n)) for (n, _), v in zip(grads, norms[k:])
               if not math.isfinite(v)])


def _static_findings(m: _Measurement) -> list[Finding]:
    """Findings that one pass shows: non-finite values, vanishing or exploding signal,
    saturation and dead units."""
    out = []
    if m.nonfinite:
        layers = list(dict.fromkeys(n for _, n in m.nonfinite if n is not None))
        out.append(_finding("nonfinite", "not finite: " + _short_list(
            [what for what, _ in m.nonfinite], 3), layers, severe=True))
    signal = {n: s for n, s in m.signal.items() if math.isfinite(s)}
    if len(signal) >= 2 and not m.nonfinite:
        last = list(signal)[-1]
        ref = signal[last]
        out_name = "the model's output" if last == "model" else f"the output layer {last}'s"
        ratios = {n: s / ref for n, s in signal.items()} if ref > 0 else {}
        for symptom, bound, of, side in (("vanishing", VANISHING_RATIO, "of", "below"),
                                         ("exploding", EXPLODING_RATIO, "times", "above")):
            beyond = (lambda r: r < bound) if side == "below" else (lambda r: r > bound)
            names = [n for n, r in ratios.items() if beyond(r)]
            if names:
                worst = (min if side == "below" else max)(names, key=ratios.get)
                out.append(_finding(
                    symptom, f"the backward signal at {worst} is {ratios[worst]:.1e} "
                    f"{of} {out_name} (threshold {bound:g}); {len(names)} of "
                    f"{len(ratios)} layers are {side} it", names,
                    severe=beyond(ratios[worst] / bound)))     # missed by the factor again
    sat = {k: v.saturated_fraction for k, v in m.act_stats.items()
           if v.saturated_fraction > SATURATION_FRACTION}
    if sat:
        worst = max(sat, key=sat.get)
        out.append(_finding("saturation", f"{sat[worst]:.0%} of the outputs of {worst} "
                            f"are in a flat tail (threshold {SATURATION_FRACTION:.0%}); "
                            f"{len(sat)} of {len(m.act_stats)} activations are above it",
                            list(sat)))
    dead = {k: v for k, v in m.dead.items() if v > DEAD_FRACTION}
    if dead:
        worst = max(dead, key=dead.get)
        out.append(_finding("dead_units", f"{dead[worst]:.0%} of the units of {worst} "
                            f"never fire on this batch (threshold {DEAD_FRACTION:.0%}); "
                            f"{len(dead)} of {len(m.dead)} ReLU layers are above it",
                            list(dead), severe=dead[worst] == 1.0))
    return out


def _ratio_findings(ratios: dict[str, float], what: str,
                    trend: Optional[dict[str, str]] = None) -> list[Finding]:
    """Update ratios outside the band; ``trend`` (watch) adds how the worst layer's
    ratio moved between the first and the last measured step."""
    finite = {n: r for n, r in ratios.items() if math.isfinite(r)}
    low = [n for n, r in finite.items() if r < UPDATE_RATIO_LOW]
    high = [n for n, r in finite.items() if r > UPDATE_RATIO_HIGH]
    out = []
    for names, word, pick, bound in ((high, "large", max, UPDATE_RATIO_HIGH),
                                     (low, "small", min, UPDATE_RATIO_LOW)):
        if names:
            worst = pick(names, key=finite.get)
            moved = f", {trend[worst]}" if trend and worst in trend else ""
            out.append(_finding(
                "update_ratio", f"{what} at {worst} is {finite[worst]:.1e}, too {word}"
                f"{moved} (band [{UPDATE_RATIO_LOW:g}, {UPDATE_RATIO_HIGH:g}], rule of "
                f"thumb 1e-3)", names,
                severe=not bound / 1000 <= finite[worst] <= bound * 1000))
    return out


# ------------------------------------------------------------------------ checks
def _check_model(model: object) -> nn.Module:
    model = _dg._check_model(model)
    if next(model.parameters(), None) is None:
        raise ValueError(f"model has no parameters; nothing to diagnose "
                         f"({type(model).__name__})")
    return model


def _check_optimizer(optimizer: object) -> Optional[torch.optim.Optimizer]:
    if isinstance(optimizer, type):
        raise TypeError(f"optimizer must be a torch.optim.Optimizer or None, got the class "
                        f"{optimizer.__name__} (build one, e.g. "
                        f"{optimizer.__name__}(model.parameters(), lr=0.1))")
    if optimizer is not None:
        _check.instance("optimizer", optimizer, torch.optim.Optimizer,
                        "a torch.optim.Optimizer or None")
    return optimizer


def _check_x(x: Any) -> Any:
    """The model's input: a tensor (``model(x)``), a tuple or list (``model(*x)``) or a
    dict (``model(**x)``); its floating tensors of finite values (bad data otherwise)."""
    if isinstance(x, Tensor):
        return _dg._check_batch("x", x)
    if isinstance(x, (tuple, list)):
        items = enumerate(x)
    elif isinstance(x, dict):
        items = x.items()
    else:
        raise _check._type_error("x", "a torch tensor, a tuple (for model(*x)) or a dict "
                                 "(for model(**x))", x)
    for key, item in items:
        if isinstance(item, Tensor) and item.is_floating_point():
            _check.finite_values(f"x[{key!r}]", item)
    return x


def _check_y(y: Any, device: torch.device, dtype: torch.dtype) -> Optional[Tensor]:
    """None, or targets: a nonempty tensor or numpy array, real and finite, as a tensor on
    the model's device (floating ones in the model's dtype)."""
    if y is None:
        return None
    y = _check.array("y", y, floating=False)
    y = torch.as_tensor(y, device=device)
    if y.is_complex():
        raise TypeError(f"y must have a real dtype, got {_check.show(y)}")
    if y.is_floating_point():
        _check.finite_values("y", y)
        y = y.to(dtype)
    return y


def _check_loss(loss: Any) -> Any:
    """None, a name of companion.train.LOSSES or a callable (not a class)."""
    what = f"None, one of {list(_LOSS_NAMES)} or a callable"
    if isinstance(loss, str) and loss not in _LOSS_NAMES:
        raise ValueError(f"loss must be {what}, got {loss!r}")
    if loss is None or isinstance(loss, str):
        return loss
    return _check.function("loss", loss, what)


def _loss_kind(loss: Any, y: Optional[Tensor]) -> Optional[str]:
    """'mse' or 'cross_entropy' when the loss is one of these (so a baseline is known)."""
    if loss is None and y is not None:
        return "cross_entropy" if not y.is_floating_point() else "mse"
    if isinstance(loss, str):
        return loss
    if loss is F.mse_loss or isinstance(loss, nn.MSELoss):
        return "mse"
    if loss is F.cross_entropy or isinstance(loss, nn.CrossEntropyLoss):
        return "cross_entropy"
    return None


def _baseline(kind: Optional[str], out: Tensor, y: Tensor) -> Optional[float]:
    """The loss of the best constant prediction: log C, or the mean variance of y."""
    if kind == "cross_entropy" and out.dim() >= 2:
        return math.log(out.shape[1])
    if kind == "mse" and y.is_floating_point() and y.dim() >= 1 and y.shape[0] > 1:
        return y.detach().double().var(dim=0, unbiased=False).mean().item()
    return None


def _call(model: nn.Module, x: Any) -> Any:
    """``model(x)`` (``model(*x)`` for a tuple, ``model(**x)`` for a dict); an error is
    re-raised as :class:`ForwardError` naming the innermost module that was running."""
    names = {m: (n or "model") for n, m in model.named_modules()}
    running: list[nn.Module] = []          # the modules entered and not yet left

    def enter(module: nn.Module, _inputs: Any) -> None:
        running.append(module)

    def leave(module: nn.Module, _inputs: Any, _output: Any) -> None:
        running.pop()                       # (a hook that returned it would replace the output)

    handles = [m.register_forward_pre_hook(enter) for m in names]
    handles += [m.register_forward_hook(leave) for m in names]
    try:
        if isinstance(x, dict):
            return model(**x)
        if isinstance(x, (tuple, list)):
            return model(*x)
        return model(x)
    except Exception as err:
        module = running[-1] if running else model
        where = names.get(module, type(module).__name__)
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ForwardError(f"model(x) failed in {where} ({type(module).__name__}) for x of "
                           f"shape {shape}: {type(err).__name__}: {err}", where) from err
    finally:
        for h in handles:
            h.remove()


def _output_tensor(out: Any) -> Tensor:
    """The prediction: a tensor, or the first tensor of a tuple (nn.LSTM's output)."""
    while isinstance(out, (tuple, list)) and out:
        out = out[0]
    if not isinstance(out, Tensor):
        raise TypeError(f"model(x) must return a tensor (or a tuple starting with one), "
                        f"got {type(out).__name__}")
    return out


# ---------------------------------------------------------------------- diagnose
def diagnose(model: nn.Module, x: Any, y: Any = None, *, loss: Any = None,
             optimizer: Optional[torch.optim.Optimizer] = None, seed: int = 0) -> Report:
    r"""Diagnose ``model`` on the batch ``(x, y)``: one forward and backward pass.

    The model runs in the mode it is in (``train()`` for a fresh module: what training
    sees, batch statistics and dropout included). Afterwards its mode, parameters,
    gradients, buffers (batch norm's running statistics) and torch's RNG state are as
    they were: gradients are stashed and put back, buffers copied back, the RNG forked.

    Args:
        model: any ``nn.Module`` with parameters.
        x: its input: a tensor, a tuple (``model(*x)``) or a dict (``model(**x)``).
        y: the targets, or ``None``. Without ``y`` (and without ``loss``) the backward
            pass starts from a fixed random direction :math:`r` (``seed``), the loss
            :math:`\langle f(x), r\rangle / B`, which probes the Jacobians alone.
        loss: ``"mse"``, ``"cross_entropy"``, or a callable ``f(prediction, y)`` (or
            ``f(prediction)`` when ``y`` is ``None``) returning a scalar tensor. Default:
            cross-entropy for integer ``y``, MSE for floating ``y``.
        optimizer: the optimizer you train with. If given, one step is taken by a deep
            copy of it on copies of the parameters, to measure the update-to-weight
            ratio; your optimizer and model do not move.
        seed: seeds the random direction used without ``y``.

    Returns:
        A :class:`Report`; see the module docstring for the findings it can hold.

    Raises:
        TypeError: ``model`` not an ``nn.Module``; ``x`` not a tensor, tuple or dict,
            or a complex tensor; ``y`` not a tensor or numpy array, or complex;
            ``loss`` neither None, a name nor a callable (a class refused);
            ``optimizer`` not an optimizer (a class refused); ``seed`` not an int;
            ``y`` not floating for ``"mse"`` or not integer labels for
            ``"cross_entropy"``; the model's output not a tensor; a loss that returns
            no tensor.
        ValueError: a model without parameters; ``x`` (or a tensor in it) or ``y``
            with NaN or infinite values (bad data), an empty ``x`` or ``y``; an unknown
            loss name; ``seed`` outside ``[0, 2**64 - 1]``; ``y`` whose first dimension
            differs from the output's; for torch's MSE, ``y`` not of the output's shape
            (no broadcasting); for torch's cross-entropy, labels not shaped like the
            output without its class dimension or outside ``[0, C)``; a loss that is
            not a scalar.
        ForwardError: the model could not take ``x`` (the model's own error, chained,
            with the name of the module that raised it).
    """
    model = _check_model(model)
    x = _check_x(x)
    params = [p for p in model.parameters()]
    device = params[0].device
    y = _check_y(y, device, params[0].dtype)
    loss = _check_loss(loss)
    optimizer = _check_optimizer(optimizer)
    seed = _check.seed(seed)
    saved_grads = [p.grad for p in params]
    saved_buffers = [(b, b.detach().clone()) for b in model.buffers()]
    devices = [device.index or 0] if device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=devices):
            for p in params:
                p.grad = None
            return _diagnose_pass(model, x, y, loss, optimizer, seed)
    finally:
        with torch.no_grad():
            for b, value in saved_buffers:
                b.copy_(value)
        for p, g in zip(params, saved_grads):
            p.grad = g


def _diagnose_pass(model, x, y, loss, optimizer, seed) -> Report:
    first_bad: list[str] = []

    def check_output(name):
        def hook(module, _inputs, output):
            if not first_bad:
                for t in _dg._tensors(module, output):
                    if t.is_floating_point() and not torch.isfinite(t.detach()).all():
                        first_bad.append(name)
                        return
        return hook

    handles = [m.register_forward_hook(check_output(n)) for n, m in _dg._layers(model)]
    try:
        with _dg.record(model) as rec:
            out = _output_tensor(_call(model, x))
            value, kind = _loss_value(out, y, loss, seed)
            if value.requires_grad:
                value.backward()
    finally:
        for h in handles:
            h.remove()
    m = _measure(rec, None)
    lv = value.item()
    if first_bad:
        m.nonfinite.append((f"the forward pass, first at layer {first_bad[0]}", first_bad[0]))
    if not math.isfinite(lv):
        m.nonfinite.append(("the loss", None))
    m.nonfinite += _nonfinite_params(model)
    findings = _static_findings(m)
    baseline = None
    if y is not None:
        baseline = _baseline(kind, out, y)
        factor = INITIAL_LOSS_FACTOR if kind == "cross_entropy" else INITIAL_MSE_FACTOR
        if baseline and math.isfinite(lv) and lv > factor * baseline:
            findings.append(_finding(
                "initial_loss", f"the loss is {lv:.3g}, {lv / baseline:.1f} times the "
                f"{'log C' if kind == 'cross_entropy' else 'Var(y)'} = {baseline:.3g} of "
                f"a constant prediction (threshold {factor:g}x)",
                [_dg._layers(model)[-1][0]], severe=lv > 1000 * factor * baseline))
    if optimizer is not None and not m.nonfinite:
        m.update_ratio = _copy_step_ratios(model, optimizer, list(m.layer_types))
        findings += _ratio_findings(m.update_ratio, "one step's update ratio")
    return Report(m, findings, loss=lv if y is not None or loss is not None else None,
                  baseline=baseline)


def _loss_value(out: Tensor, y: Optional[Tensor], loss: Any, seed: int):
    kind = _loss_kind(loss, y)
    if y is not None and out.dim() >= 1 and y.dim() >= 1 and y.shape[0] != out.shape[0]:
        raise ValueError(f"y must have the output's first dimension {out.shape[0]}, "
                         f"got y of shape {tuple(y.shape)}")
    if loss is None and y is None:
        gen = torch.Generator(device="cpu").manual_seed(seed)
        r = torch.randn(out.shape, generator=gen, dtype=torch.float64).to(out.device, out.dtype)
        value = (out * r).sum() / max(1, out.shape[0] if out.dim() else 1)
    else:
        fn = _LOSS_NAMES[kind] if (loss is None or isinstance(loss, str)) else loss
        if y is not None and (loss is None or isinstance(loss, str)):   # torch's own
            y = _check_targets(kind, out, y)
        value = fn(out) if y is None else fn(out, y)
    value = _check.scalar_loss("loss", value)
    return value.reshape(()), kind


def _check_targets(kind: str, out: Tensor, y: Tensor) -> Tensor:
    """``y`` for torch's MSE (floating, the output's shape: no broadcasting) or
    cross-entropy (class labels in ``[0, C)`` shaped like the output without its class
    dimension, as int64)."""
    if kind == "mse":
        if not y.is_floating_point():
            raise TypeError(f"y must be floating-point targets for loss='mse', got "
                            f"{_check.show(y)}")
        if y.shape != out.shape:
            raise ValueError(f"y must have the output's shape {tuple(out.shape)} for "
                             f"loss='mse' (no broadcasting), got y of shape {tuple(y.shape)}")
        return y
    return _check_class_labels("y", y, tuple(out.shape)).long()    # (int32 is refused)


def _copy_step_ratios(model: nn.Module, optimizer: torch.optim.Optimizer,
                      names: list[str]) -> dict[str, float]:
    """One step of a deep copy of ``optimizer`` on copies of its parameters (with the
    gradients of this pass); the update ratio of every layer's weight."""
    originals = [p for g in optimizer.param_groups for p in g["params"]]
    twin = copy.deepcopy(optimizer)
    for hooks in ("_optimizer_step_pre_hooks", "_optimizer_step_post_hooks"):
        getattr(twin, hooks, {}).clear()       # a watch() on the original must not see it
    copies = [p for g in twin.param_groups for p in g["params"]]
    for p, q in zip(originals, copies):
        q.grad = None if p.grad is None else p.grad.detach().clone()
    twin.step()
    after = {id(p): q.detach() for p, q in zip(originals, copies)}
    modules = dict(model.named_modules())
    ratios = {}
    for name in names:
        w = _dg._weight(modules[name if name != "model" else ""])
        if w is not None and id(w) in after:
            w0 = w.detach().double()
            ratios[name] = ((after[id(w)].double() - w0).norm() / w0.norm()).item()
    return ratios


# ------------------------------------------------------------------------- watch
class Watcher:
    """What :func:`watch` returns: measures every ``every``-th step of a training loop.

    Steps end either at ``optimizer.step()`` (when an optimizer was given, through its
    step hooks) or when the watcher is called as ``watcher(step, loss)`` -- which is
    the ``callback=`` of :func:`companion.train.train`. Log the loss of your own loop
    with :meth:`log` (without losses there are no diverged or plateau findings).

    Only measured steps pay: before step ``t`` (``t % every == 0``) the weights are
    copied and :func:`companion.diagnostics.record`'s hooks installed; after it the
    measurements are read and the hooks removed. The other steps cost a hook call and
    a list append. A measured step costs about as much as one more training step, so
    ``every=10`` adds about a tenth. Measured with ``tests/benchmarks/bench_diagnose.py``
    (CPU, 2 threads, SGD, every=10): x1.34 on the 2 ms step of a 20-layer MLP of width
    32, x1.12 on an 8-layer MLP of width 512, x1.03 on a 6-layer TokenTransformer.

    Build it with :func:`watch` (same arguments, ``every`` required here).

    Raises:
        TypeError: ``model`` not an ``nn.Module``; ``optimizer`` neither None nor an
            optimizer; ``every`` not an int.
        ValueError: a model without parameters; ``every < 1``.
    """

    def __init__(self, model: nn.Module, optimizer: Optional[torch.optim.Optimizer], every: int):
        self.model = _check_model(model)
        self.optimizer = _check_optimizer(optimizer)
        self.every = _check.integer("every", every, minimum=1)
        self.step = 0
        self.losses: list[float] = []
        self.measurements: list[_Measurement] = []
        self._rec = _dg.record(self.model)
        self._armed = False
        self._weights = {n: w for n, m in _dg._layers(self.model)
                         if (w := _dg._weight(m)) is not None}
        self._open = False
        self._before: dict[str, Tensor] = {}
        self._hook = None

    # -- the loop ----------------------------------------------------------------
    def __enter__(self) -> "Watcher":
        if self._open:
            raise RuntimeError("this watch is already open; make a new one with watch()")
        self._open = True
        if self.optimizer is not None:
            self._hook = self.optimizer.register_step_post_hook(lambda *_: self._end_step())
        self._arm()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        """Remove every hook (done on leaving the ``with`` block)."""
        self._open = False
        if self._hook is not None:
            self._hook.remove()
            self._hook = None
        self._disarm()

    def log(self, loss: Any) -> None:
        """Log this step's loss: a real number or a one-element tensor (or array). NaN
        and infinity are logged as they are: a diverging run is what watch reports.

        Raises:
            TypeError: ``loss`` is not a real number or a one-element real tensor.
            ValueError: ``loss`` is a tensor or array of more than one element (a loss
                per example: reduce it first).
        """
        if type(loss) is float:                    # the common cases first: this runs
            self.losses.append(loss)               # every step
        elif isinstance(loss, Tensor):
            if loss.numel() != 1 or loss.is_complex() or loss.dtype == torch.bool:
                raise _log_error(loss)
            self.losses.append(float(loss.detach()))
        elif isinstance(loss, numbers.Real) and not isinstance(loss, bool):
            self.losses.append(float(loss))
        else:
            if not (isinstance(loss, np.ndarray) and loss.size == 1 and loss.dtype.kind in "fiu"):
                raise _log_error(loss)
            self.losses.append(float(loss.reshape(())))

    def __call__(self, step: int, loss: Any) -> None:
        """``callback=`` for :func:`companion.train.train`: log the loss and, without an
        optimizer, end the step."""
        self.log(loss)
        if self.optimizer is None:
            self._end_step()

    def _arm(self) -> None:
        if self.step % self.every == 0 and not self._armed:
            names = list(self._weights)
            copies = torch._foreach_mul([self._weights[n].detach() for n in names],
                                        1.0) if names else []
            self._before = dict(zip(names, copies))
            self._rec.__enter__()
            self._armed = True

    def _disarm(self) -> None:
        if self._armed:
            self._rec.__exit__(None, None, None)
            self._armed = False

    def _end_step(self) -> None:
        if not self._open:
            raise RuntimeError("use watch() as a context manager: `with watch(model, "
                               "optimizer) as w:` around the training loop")
        if self._armed:
            self._disarm()
            before_norms = _norms(self._before)      # the weights the pass saw
            m = _measure(self._rec, self.step, before_norms)
            m.update_ratio = _ratios(self._before, self._weights, before_norms)
            m.nonfinite = _nonfinite_params(self.model)
            self.measurements.append(m)
        self.step += 1
        self._arm()

    # -- the report ----------------------------------------------------------------
    def report(self, history: Any = None) -> Report:
        """Findings of the last measured step, and those that only time shows.

        ``history``: the :class:`companion.train.History` of the run, if it came from
        :func:`companion.train.train`, which stops at a divergence *before* calling the
        callback; with it the report says at which step training stopped.

        Raises:
            TypeError: ``history`` is neither None nor a :class:`companion.train.History`.
            ValueError: no step was measured yet.
        """
        if history is not None:
            _check.instance("history", history, History,
                            "None or the companion.train.History of the run")
        if not self.measurements:
            raise ValueError("nothing measured yet: run at least one training step "
                             "inside the watch")
        last, first = self.measurements[-1], self.measurements[0]
        findings = _static_findings(last)
        symptoms = {f.symptom for f in findings}
        losses = np.array(self.losses, float)
        stopped = getattr(history, "diverged_at", None)
        if stopped is not None:
            findings.append(_finding(
                "diverged", f"training stopped at step {stopped}: the loss was not finite "
                f"or above 1e6 times the first loss {losses[0] if losses.size else math.nan:.3g}",
                severe=True))
        elif losses.size:
            nonfinite = np.flatnonzero(~np.isfinite(losses))
            # the first non-finite loss, or the step after the last one below the bound
            # (which applies to a positive first loss only, as in companion.train)
            t = losses.size
            if nonfinite.size:
                t = int(nonfinite[0])
            elif losses[0] > 0:
                below = np.flatnonzero(losses <= DIVERGED_FACTOR * losses[0])
                t = int(below[-1]) + 1 if below.size else 0
            if t < losses.size:
                findings.append(_finding(
                    "diverged", f"the loss went from {losses[0]:.3g} at step 0 to "
                    f"{losses[t]:.3g} at step {t} (threshold {DIVERGED_FACTOR:g}x the "
                    f"first loss)", severe=True))
            elif losses.size >= PLATEAU_MIN_STEPS:
                start, end = losses[:10].mean(), losses[-(losses.size // 4):].mean()
                if end > start - PLATEAU_DROP * abs(start):      # fell by less than 10 %
                    fall = (start - end) / abs(start) if start else 0.0
                    findings.append(_finding(
                        "plateau", f"the mean loss of the last {losses.size // 4} steps is "
                        f"{end:.3g}, {fall:.1%} below the first ten steps' "
                        f"{start:.3g} (at least {PLATEAU_DROP:.0%} expected after "
                        f"{losses.size} steps)"))
        if "dead_units" not in symptoms:
            grown = {k: v for k, v in last.dead.items()
                     if v - first.dead.get(k, 0.0) > DEAD_GROWTH}
            if grown:
                worst = max(grown, key=grown.get)
                findings.append(_finding(
                    "dead_units", f"the dead units of {worst} grew from "
                    f"{first.dead.get(worst, 0.0):.0%} at step {first.step} to "
                    f"{grown[worst]:.0%} at step {last.step}", list(grown)))
        median, trend = OrderedDict(), {}
        for name in last.update_ratio:
            series = [(m.step, m.update_ratio[name]) for m in self.measurements
                      if math.isfinite(m.update_ratio.get(name, math.nan))]
            if series:
                median[name] = float(np.median([r for _, r in series]))
                (t0, r0), (t1, r1) = series[0], series[-1]
                trend[name] = f"from {r0:.1e} at step {t0} to {r1:.1e} at step {t1}"
        if not last.nonfinite:
            findings += _ratio_findings(median, f"the median update ratio over "
                                        f"{len(self.measurements)} measured steps", trend)
        return Report(last, findings, loss=float(losses[-1]) if losses.size else None,
                      losses=losses, steps=[m.step for m in self.measurements])


def _log_error(loss: Any) -> Exception:
    """Watcher.log's refusal: ValueError for a loss of several elements, else TypeError."""
    if isinstance(loss, (Tensor, np.ndarray)) and (
            loss.numel() if isinstance(loss, Tensor) else loss.size) != 1:
        return ValueError(f"loss must be a number or a one-element tensor, got "
                          f"{_check.show(loss)} (a loss per example? reduce it, e.g. .mean())")
    return _check._type_error("loss", "a real number or a one-element real tensor", loss)


def watch(model: nn.Module, optimizer: Optional[torch.optim.Optimizer] = None, *,
          every: int = 10) -> Watcher:
    """Measure ``model`` every ``every`` steps of your training loop.

    Use as a context manager around your loop, logging the loss::

        with watch(model, opt, every=10) as w:
            for xb, yb in batches:
                loss = loss_fn(model(xb), yb)
                opt.zero_grad(); loss.backward(); opt.step()
                w.log(loss)
        print(w.report())

    or as the callback of :func:`companion.train.train` (which makes its own
    optimizer, so pass ``None``)::

        w = watch(model, None, every=10)
        with w:
            train.train(model, x, y, steps=200, lr=0.1, callback=w)
        w.report()

    Args:
        model: the ``nn.Module`` being trained.
        optimizer: its optimizer (its step hooks mark the end of each step), or
            ``None`` when the watcher is called as ``watcher(step, loss)`` after each step.
        every: measure steps 0, every, 2 x every, ...

    Returns:
        A :class:`Watcher`; ``.report()`` gives a :class:`Report`.

    Raises:
        TypeError: ``model`` not an ``nn.Module``; ``optimizer`` neither None nor an
            optimizer; ``every`` not an int.
        ValueError: a model without parameters; ``every < 1``.
    """
    return Watcher(model, optimizer, every)
