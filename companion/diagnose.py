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
    finite, and the loss against the best constant prediction's (the entropy of the
    label frequencies, :math:`\log C` for :math:`C` balanced classes; Var(y) for MSE);
  - which trainable parameters got no gradient (a cut graph, or a module not called),
    which are frozen, and which are missing from the optimizer;
  - in float16 or bfloat16 (the model, the batch, or ``torch.autocast``), on a float32
    copy of the pass: the fraction of each layer's activation gradients that the
    format flushes to zero at your loss scale (``scaler=``), the activations near its
    largest finite value, and the updates below half the weights' spacing.

  A *layer* is a module that owns parameters and applies them (see
  :mod:`companion.diagnostics`); parameters a container or the root owns directly (a
  cls token, a position embedding, a layer scale) are rows of their own, by name. The
  signal ratios are taken against the layer nearest the prediction in the autograd
  graph. Vanishing is judged where it hurts: at the input side. Small signals inside
  branches, behind a gate that starts at or near zero by design (a zero-initialized
  head, a zero batch-norm gamma, a layer scale, LoRA's B), are a *note*, not a finding.

* :func:`watch` takes the same measurements inside your own training loop every
  ``every`` steps, and its :meth:`Watcher.report` adds what only time shows: a loss
  that diverged (and when), a loss stuck where it started, dead units that grew,
  update ratios out of range over many steps, float16 or bfloat16 weights whose updates
  mostly round away, and (``scaler=``) a GradScaler whose scale keeps collapsing.

Both return a :class:`Report`: ``report.findings`` is a list of :class:`Finding`
(symptom, severity, layers, evidence, remedy, chapter, cause) -- what will hurt
training -- and ``report.notes`` the designs that only look like a problem (severity
"info"); ``str(report)`` a text report,
in a notebook an HTML table, ``report.plot()`` a one-page figure and ``report.rows``
the table as plain dicts.

Example::

    from companion import data, nets
    from companion.diagnose import diagnose

    x, y = data.teacher_regression(256, 16, seed=0)
    model = nets.mlp(16, 1, width=32, depth=20, activation="sigmoid", seed=0)
    report = diagnose(model, x, y)     # the loss: MSE for floating y, cross-entropy for labels
    print(report)                      # or just `report` in a notebook
    [f.symptom for f in report.findings]          # ['vanishing']

The thresholds are named constants (``VANISHING_RATIO`` ... ``SCALER_MIN_SKIPS``), each
documented with where it comes from in :mod:`companion.symptoms` and importable from
here; they are set so that healthy models (He-initialized ReLU MLPs, residual networks with
normalization, pre-LN transformers, a small CNN, an LSTM) give no finding, which
``tests/test_diagnose.py`` checks, and ``tests/test_zoo.py`` on models no one here wrote
(Hugging Face GPT-2, BERT, Llama, ViT, ConvNeXt, ResNet; LoRA, zero-gamma residual
blocks, frozen backbones, mixtures of experts, half precision), each judged against
whether it trains; ``tests/test_diagnose_precision.py`` does the same for float16 and
bfloat16 (broken and healthy mixed precision). The table :data:`SYMPTOMS` (symptom -> cause,
remedy, chapter) is the one the book's closing map is drawn from; it and :class:`Finding`
are defined in :mod:`companion.symptoms`, :class:`Report` in :mod:`companion.report`,
:class:`ForwardError` in :mod:`companion.diagnostics` (beside the hooks that call the
model); all are importable from here, the same objects. What a float16 or bfloat16 pass
loses is measured in :mod:`companion._diagnose_precision`.

References: Glorot & Bengio (2010) and Hochreiter (1991) (vanishing signal);
Karpathy, *A Recipe for Training Neural Networks* (2019) (initial loss, update ratio
about 1e-3); Lu et al. (2020) (dying ReLU); fastai's ``ActivationStats``;
Micikevicius et al. (2018) (loss scaling, float32 master weights); Zamirai et al. (2020)
(updates that bfloat16 rounds away).
"""
from __future__ import annotations

import copy
import math
from collections import OrderedDict
from typing import Any, NamedTuple, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import _check
from . import diagnostics as _dg
from ._diagnose_precision import (_LOW, _check_scaler, _float32_pass, _name, _pass_dtype,
                                  _peak_hooks, _precision_findings, _rounded_fractions,
                                  _scale_of, _scaler_findings, _to_float32, _unmoved_findings,
                                  _unmoved_fraction)
from .diagnostics import ForwardError, _call
from .report import Report
from .symptoms import (DEAD_FRACTION, DEAD_GROWTH, DIVERGED_FACTOR, EXPLODING_RATIO, GATE_SCALE,
                       INITIAL_LOSS_FACTOR, INITIAL_LOSS_MIN_EXCESS, INITIAL_MSE_FACTOR,
                       MIN_EXAMPLES, PLATEAU_DROP, PLATEAU_MIN_STEPS, PRECISION_LOST_FRACTION,
                       PRECISION_OVERFLOW_FACTOR, PRECISION_ROUNDED_FRACTION,
                       SATURATION_FRACTION, SCALER_MIN_SKIPS, SCALER_SKIP_FRACTION,
                       SYMPTOMS, UPDATE_RATIO_HIGH, UPDATE_RATIO_LOW, VANISHING_RATIO, Finding,
                       Symptom, _finding, _Measurement, _short_list, _signal_ratios)
from .train import LOSSES as _LOSS_NAMES, History, _check_class_labels

__all__ = ["diagnose", "watch", "Report", "Finding", "Symptom", "Watcher", "ForwardError",
           "SYMPTOMS", "VANISHING_RATIO", "EXPLODING_RATIO", "DEAD_FRACTION",
           "SATURATION_FRACTION", "INITIAL_LOSS_FACTOR", "INITIAL_LOSS_MIN_EXCESS",
           "INITIAL_MSE_FACTOR", "UPDATE_RATIO_LOW", "MIN_EXAMPLES", "GATE_SCALE",
           "UPDATE_RATIO_HIGH", "DIVERGED_FACTOR", "PLATEAU_DROP", "PLATEAU_MIN_STEPS",
           "DEAD_GROWTH", "PRECISION_LOST_FRACTION", "PRECISION_OVERFLOW_FACTOR",
           "PRECISION_ROUNDED_FRACTION", "SCALER_SKIP_FRACTION", "SCALER_MIN_SKIPS"]

# ------------------------------------------------------------------ measurements
def _measure(rec: _dg.Recorder, step: Optional[int], model: nn.Module,
             weight_norm: Optional[dict[str, float]] = None,
             gates_among: Optional[set[str]] = None) -> _Measurement:
    """The measurement of the pass ``rec`` recorded; the weight norms are read from the
    layers unless given (``watch`` gives those of the weights before the step)."""
    layers = OrderedDict((n, m) for n, m in rec._layer_modules.items())
    if weight_norm is None:
        weight_norm = _norms({n: w for n, w in ((n, _dg._weight(m)) for n, m in layers.items())
                              if w is not None})
    else:
        weight_norm = {n: v for n, v in weight_norm.items() if n in layers}
    loose = _dg._loose_parameters(model)
    norms = _norm_list([p for _, p in loose] + [p.grad for _, p in loose if p.grad is not None])
    grads = iter(norms[len(loose):])
    params = {n: (next(grads) if p.grad is not None else math.nan, v)
              for (n, p), v in zip(loose, norms)}
    gates, frozen_zeros = _gates(model, gates_among)
    return _Measurement(step, {n: type(m).__name__ for n, m in layers.items()},
                        rec.output_grad_norms, rec.weight_grad_norms, weight_norm, {},
                        rec.activation_stats, rec.dead_fractions, reference=rec.reference_layers,
                        dead_examples=rec.dead_examples, params=params, gates=gates,
                        frozen_zeros=frozen_zeros, has_batch_norm=any(
                            isinstance(m, nn.modules.batchnorm._BatchNorm) for m in layers.values()))


def _gates(model: nn.Module, among: Optional[set[str]] = None
           ) -> tuple[dict[str, float], list[str]]:
    """(trainable gates by design -> their largest |value|, frozen parameters that are
    exactly zero). A gate (see GATE_SCALE) is not a bias: exactly zero, or a scale (at
    most one dimension above 1) below GATE_SCALE. ``among``: look only at these
    parameters (``watch`` looks again, each measured step, at those that were gates or
    frozen zeros at its start: a weight that starts away from zero does not become a gate)."""
    named = [(n, p) for n, p in model.named_parameters()
             if not n.rsplit(".", 1)[-1].startswith("bias") and p.numel()
             and (among is None or n in among)]
    if not named:
        return {}, []
    top = _norm_list([p for _, p in named], math.inf)          # max |value|, fused
    gates, frozen = {}, []
    for (n, p), m in zip(named, top):
        scale = sum(d > 1 for d in p.shape) <= 1
        if m == 0 or (scale and m < GATE_SCALE):
            if p.requires_grad:
                gates[n] = m
            elif m == 0:
                frozen.append(n)
    return gates, frozen


def _norm_list(tensors: Sequence[Tensor], ord: float = 2) -> list[float]:
    """Norms of many tensors (one fused call per device and dtype, one synchronisation);
    half precision in float32 and sparse gradients by their values
    (:func:`companion.diagnostics._dense`)."""
    if not tensors:
        return []
    norms = torch._foreach_norm([_dg._dense(t) for t in tensors], ord)
    return torch.stack([n.double().cpu() for n in norms]).tolist()


def _norms(tensors: dict[str, Tensor]) -> dict[str, float]:
    """name -> 2-norm."""
    return dict(zip(tensors, _norm_list(list(tensors.values()))))


def _nonfinite_params(model: nn.Module) -> list[tuple[str, Optional[str]]]:
    """Parameters and gradients with a value that is not finite. A norm is not finite
    exactly when an element is not, or (float32) when elements exceed ~1e19; half
    precision is normed in float32, where its largest value cannot overflow."""
    owner = {id(p): n for n, m in _dg._layers(model) for p in m.parameters(recurse=False)}
    named = list(model.named_parameters())
    tensors = [(f"parameter {n}", p, owner.get(id(p), n)) for n, p in named]
    tensors += [(f"gradient of {n}", p.grad, owner.get(id(p), n)) for n, p in named
                if p.grad is not None]
    norms = _norm_list([t for _, t, _ in tensors])
    return [(what, where) for (what, _, where), v in zip(tensors, norms) if not math.isfinite(v)]


def _static_findings(m: _Measurement, moved: Optional[dict[str, bool]] = None,
                     adam: bool = False) -> list[Finding]:
    """Findings that one pass shows: non-finite values, vanishing or exploding signal,
    saturation and dead units; and the notes that explain what looks like one of them
    but is a design (gates, branches, a batch too small to judge). ``moved``: for each
    gate, whether one step of the user's optimizer moved it (diagnose with an optimizer)."""
    out = []
    if m.nonfinite:
        layers = list(dict.fromkeys(n for _, n in m.nonfinite if n is not None))
        out.append(_finding("nonfinite", "not finite: " + _short_list(
            [what for what, _ in m.nonfinite], 3), layers, severe=True))
    ref, ratios = _signal_ratios(m)
    if len(ratios) >= 2 and not m.nonfinite:
        out += _signal_findings(m, ref, ratios, moved, adam)
    sat = {k: v.saturated_fraction for k, v in m.act_stats.items()
           if v.saturated_fraction > SATURATION_FRACTION}
    if sat:
        worst = max(sat, key=sat.get)
        out.append(_finding("saturation", f"{sat[worst]:.0%} of the outputs of {worst} "
                            f"are in a flat tail (threshold {SATURATION_FRACTION:.0%}); "
                            f"{len(sat)} of {len(m.act_stats)} activations are above it",
                            list(sat)))
    judged = {k: v for k, v in m.dead.items() if m.dead_examples.get(k, MIN_EXAMPLES) >= MIN_EXAMPLES}
    dead = {k: v for k, v in judged.items() if v > DEAD_FRACTION}
    if dead:
        worst = max(dead, key=dead.get)
        out.append(_finding("dead_units", f"{dead[worst]:.0%} of the units of {worst} "
                            f"never fire on this batch (threshold {DEAD_FRACTION:.0%}); "
                            f"{len(dead)} of {len(judged)} ReLU layers are above it",
                            list(dead), severe=dead[worst] == 1.0))
    if len(judged) < len(m.dead):
        few = min(m.dead_examples.values())
        out.append(_finding("small_batch", f"dead units are not judged: each unit was seen "
                            f"on {few} example{'s' * (few != 1)} of this batch, fewer than "
                            f"{MIN_EXAMPLES} (a healthy ReLU unit is off for one example in "
                            f"two)", [k for k in m.dead if k not in judged], info=True))
    return out


def _signal_findings(m: _Measurement, ref: str, ratios: dict[str, float],
                     moved: Optional[dict[str, bool]], adam: bool) -> list[Finding]:
    """Vanishing and exploding, judged where they hurt: vanishing when the input side
    (the first layer that received a signal) is below the threshold; small or zero
    signals explained by a gate or confined to branches become notes."""
    out = []
    out_name = f"the output layer {ref}'s"
    first = next(iter(ratios))
    low = [n for n, r in ratios.items() if r < VANISHING_RATIO]
    if low:
        worst = min(low, key=ratios.get)
        what = (f"the backward signal at {worst} is {ratios[worst]:.1e} of {out_name} "
                f"(threshold {VANISHING_RATIO:g}); {len(low)} of {len(ratios)} layers are below it")
        zero = [n for n in low if ratios[n] == 0]
        zero_gates = [g for g, v in m.gates.items() if v == 0]
        stuck = [g for g in zero_gates if moved is not None and not moved.get(g, True)]
        adam_note = ("; Adam rescales each step to about the learning rate, so a small "
                     "gradient there still trains" if adam else "")
        if ratios[first] >= VANISHING_RATIO:
            gates = _short_list([f"{g} (max |value| {v:.0e})" for g, v in m.gates.items()], 3)
            why = (f"they sit behind gates that start small or at zero by design ({gates}), "
                   f"which grow in training" if m.gates else "they sit in branches, such as "
                   "attention scores at initialization")
            out.append(_finding("gated", f"{what}, but the input-side layer {first} receives "
                                f"{ratios[first]:.2g} of it: the small signals are not on the "
                                f"path the gradient must travel; {why}{adam_note}",
                                low, info=True))
        elif zero and len(zero) == len(low) and zero_gates and not stuck:
            step = (" (one step of your optimizer moves them)" if moved is not None else
                    ": they get a gradient and move at the first step")
            out.append(_finding("gated", f"{what}: exactly 0, because "
                                f"{_short_list(zero_gates, 3)} start{'s' * (len(zero_gates) == 1)} "
                                f"at exactly zero by design (a zero-initialized head, gate, "
                                f"gamma or LoRA B){step}. Not a vanishing gradient", low,
                                info=True))
        elif zero and len(zero) == len(low) and (m.frozen_zeros or stuck):
            blockers = m.frozen_zeros or stuck
            state = "frozen (requires_grad=False)" if m.frozen_zeros else \
                "not moved by one step of your optimizer (its gradient is zero too)"
            out.append(_finding("vanishing", f"{what}: exactly 0, because "
                                f"{_short_list(blockers, 3)} is exactly zero and {state}, so "
                                f"nothing behind it ever gets a gradient", low, severe=True,
                                cause="frozen_zero"))
        else:
            out.append(_finding("vanishing", what, low,
                                severe=ratios[worst] < VANISHING_RATIO ** 2))
    high = [n for n, r in ratios.items() if r > EXPLODING_RATIO]
    if high:
        worst = max(high, key=ratios.get)
        out.append(_finding(
            "exploding", f"the backward signal at {worst} is {ratios[worst]:.1e} times "
            f"{out_name} (threshold {EXPLODING_RATIO:g}); {len(high)} of {len(ratios)} layers "
            f"are above it", high, severe=ratios[worst] > EXPLODING_RATIO ** 2,
            cause="batch_norm" if m.has_batch_norm else ""))
    return out


def _ratio_findings(ratios: dict[str, float], what: str,
                    trend: Optional[dict[str, str]] = None) -> list[Finding]:
    """Update ratios outside the band; ``trend`` (watch) adds how the worst layer's
    ratio moved between the first and the last measured step. Only weights that are
    trained and got a nonzero gradient are given here (frozen ones, those not in the
    optimizer, without a gradient or behind a zero gate have findings of their own, and
    so do half-precision weights whose updates round away: ``precision``)."""
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
                severe=not bound / 1000 <= finite[worst] <= bound * 1000, cause=word))
    return out


def _side_parameters(raw: Any, used: tuple) -> set[int]:
    """ids of the parameters behind the model's other outputs -- those it returns besides
    the prediction and its loss (an auxiliary head, attention maps) -- found by walking
    their autograd graphs to the leaves."""
    skip = {id(t) for t in used if t is not None}
    stack, seen, found = [], set(), set()

    def collect(o: Any, depth: int = 0) -> None:
        if isinstance(o, Tensor):
            if id(o) not in skip and o.grad_fn is not None:
                stack.append(o.grad_fn)
        elif depth < 4 and isinstance(o, (tuple, list)):
            for item in o:
                collect(item, depth + 1)
        elif depth < 4 and (isinstance(o, dict) or hasattr(o, "logits")):
            for _, v in _dg._fields(o):
                collect(v, depth + 1)

    collect(raw)
    while stack and len(seen) < 100000:
        node = stack.pop()
        if node in seen:
            continue
        seen.add(node)
        var = getattr(node, "variable", None)
        if isinstance(var, Tensor):
            found.add(id(var))
        stack.extend(c for c, _ in getattr(node, "next_functions", ()) if c is not None)
    return found


def _parameter_findings(model: nn.Module, ran: set[int],
                        optimizer: Optional[torch.optim.Optimizer],
                        side: set[int] = frozenset()) -> list[Finding]:
    """Frozen parameters (a note), trainable ones that got no gradient (a cut graph, a
    module not called on this batch, or one that only feeds an output the loss does not
    use), trainable ones missing from the optimizer, and tied weights (a note)."""
    out = []
    owners = {}
    for name, m in model.named_modules():
        for pname, p in m.named_parameters(recurse=False):
            owners.setdefault(id(p), (m, f"{name}.{pname}" if name else pname))
    named = list(model.named_parameters())
    frozen = [n for n, p in named if not p.requires_grad]
    in_opt = set() if optimizer is None else _optimized_ids(optimizer)
    if frozen:
        values = sum(p.numel() for _, p in named if not p.requires_grad)
        kept = sum(id(p) in in_opt for _, p in named if not p.requires_grad)
        extra = (f"; {kept} of them are in the optimizer, which skips them (they have no "
                 f"gradient)" if kept else "")
        out.append(_finding("frozen", f"{len(frozen)} of {len(named)} parameter tensors "
                            f"({values:,} values) are frozen (requires_grad=False): "
                            f"{_short_list(frozen, 3)}; they are left out of the update "
                            f"ratios{extra}", [], info=True))
    trainable = [(n, p) for n, p in named if p.requires_grad]
    no_grad = [(n, p) for n, p in trainable if p.grad is None]
    cut = [n for n, p in no_grad if id(owners[id(p)][0]) in ran and id(p) not in side]
    aside = [n for n, p in no_grad if id(owners[id(p)][0]) in ran and id(p) in side]
    idle = [n for n, p in no_grad if id(owners[id(p)][0]) not in ran]
    if aside:
        out.append(_finding("unused_output", f"{len(aside)} trainable parameter tensors only "
                            f"feed outputs the model returns besides its prediction, which "
                            f"this loss does not use: {_short_list(aside, 3)}; they get no "
                            f"gradient here (to include them, pass loss= a function of the "
                            f"prediction, or diagnose a wrapper that returns your full "
                            f"loss)", aside, info=True))
    if cut:
        out.append(_finding("no_gradient", f"{len(cut)} trainable parameter tensors took part "
                            f"in the forward pass but got no gradient: {_short_list(cut, 3)}. "
                            f"The graph between them and the loss is cut (.detach(), "
                            f"torch.no_grad(), .item(), a cast to an integer) or their output "
                            f"does not reach the loss", cut, cause="cut_graph"))
    if idle:
        out.append(_finding("not_called", f"{len(idle)} trainable parameter tensors belong to "
                            f"modules that were not called on this batch (an expert the router "
                            f"did not pick, a head this forward pass does not use): "
                            f"{_short_list(idle, 3)}; they get no gradient from it", idle,
                            info=True))
    if optimizer is not None:
        missing = [n for n, p in trainable if id(p) not in in_opt]
        if missing:
            out.append(_finding("not_in_optimizer", f"{len(missing)} of {len(trainable)} "
                                f"trainable parameter tensors are not in the optimizer: "
                                f"{_short_list(missing, 3)}; they get gradients and never "
                                f"move", missing))
    shared: dict[int, list[str]] = {}
    for name, w in _dg._layer_weights(model).items():
        shared.setdefault(id(w), []).append(name)
    tied = [names for names in shared.values() if len(names) > 1]
    if tied:
        out.append(_finding("tied", "; ".join(" and ".join(t) + " share one weight (tied)"
                                              for t in tied), [n for t in tied for n in t],
                            info=True))
    return out


# ------------------------------------------------------------------------ checks
def _check_model(model: object) -> nn.Module:
    """An ``nn.Module`` with at least one parameter (there is nothing to diagnose else)."""
    model = _check.module("model", model)
    if next(model.parameters(), None) is None:
        raise ValueError(f"model has no parameters; nothing to diagnose "
                         f"({type(model).__name__})")
    return model


def _check_optimizer(optimizer: object) -> Optional[torch.optim.Optimizer]:
    """None or an optimizer instance (a class, a common slip, refused by name)."""
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


class _Baseline(NamedTuple):
    """The loss of the best constant prediction, what it is, and how many examples it
    was estimated from (too few: ``value`` is None)."""

    value: Optional[float]
    what: str
    n: int
    balanced: bool = True


def _label_entropy(labels: Tensor, classes: int) -> _Baseline:
    """H(p) of the label frequencies p (labels -100, cross-entropy's ignore_index, left
    out); called log C when every class is exactly as frequent."""
    labels = labels.detach().flatten()
    labels = labels[(labels >= 0) & (labels < classes)]
    n = labels.numel()
    if n < MIN_EXAMPLES:
        return _Baseline(None, "the entropy of the label frequencies", n)
    p = torch.bincount(labels.cpu(), minlength=classes).double() / n
    h = float(-(p[p > 0] * p[p > 0].log()).sum())
    balanced = h >= math.log(classes) - 1e-9
    what = ("log C" if balanced else "the entropy of the label frequencies H(p)")
    return _Baseline(h, what, n, balanced)


def _baseline(kind: Optional[str], out: Tensor, y: Optional[Tensor],
              class_dim: int) -> Optional[_Baseline]:
    """The loss of the best constant prediction: the entropy of the label frequencies
    for cross-entropy, the variance of y around its mean (per output) for MSE."""
    if y is None:
        return None
    if kind == "cross_entropy" and out.dim() >= 2 and not y.is_floating_point():
        return _label_entropy(y, out.shape[class_dim])
    if kind == "mse" and y.is_floating_point() and y.dim() >= 1:
        n = y.shape[0]
        if n < MIN_EXAMPLES:
            return _Baseline(None, "Var(y)", n)
        return _Baseline(y.detach().double().var(dim=0, unbiased=False).mean().item(),
                         "Var(y)", n)
    return None


def _output(out: Any) -> tuple[Tensor, Optional[Tensor]]:
    """(prediction, the model's own loss or None): see
    :func:`companion.diagnostics._prediction`."""
    try:
        return _dg._prediction(out)
    except TypeError:
        raise TypeError(
            f"model(x) must return a tensor, a tuple starting with one, a dict, or an "
            f"object with .logits or .loss (a Hugging Face ModelOutput); got "
            f"{type(out).__name__}. Wrap the model in an nn.Module whose forward returns "
            f"the prediction tensor") from None


# ---------------------------------------------------------------------- diagnose
def diagnose(model: nn.Module, x: Any, y: Any = None, *, loss: Any = None,
             optimizer: Optional[torch.optim.Optimizer] = None, seed: int = 0,
             scaler: Any = None) -> Report:
    r"""Diagnose ``model`` on the batch ``(x, y)``: one forward and backward pass.

    The model runs in the mode it is in (``train()`` for a fresh module: what training
    sees, batch statistics and dropout included). Afterwards its mode, parameters,
    gradients, buffers (batch norm's running statistics) and torch's RNG state are as
    they were: gradients are stashed and put back, buffers copied back, the RNG forked.

    Args:
        model: any ``nn.Module`` with parameters. It may return a tensor, a tuple (its
            first tensor is the prediction), a dict or a Hugging Face ``ModelOutput``
            (``.logits`` is the prediction; ``.loss``, when the model computed one, is
            the loss).
        x: its input: a tensor, a tuple (``model(*x)``) or a dict (``model(**x)``, e.g.
            ``{"input_ids": ids, "attention_mask": mask, "labels": ids}``).
        y: the targets, or ``None``. Without ``y`` and ``loss``, the model's own loss is
            used when it returns one (labels passed in ``x``); otherwise the backward
            pass starts from a fixed random direction :math:`r` (``seed``), the loss
            :math:`\langle f(x), r\rangle / B`, which probes the Jacobians alone.
        loss: ``"mse"``, ``"cross_entropy"``, or a callable ``f(prediction, y)`` (or
            ``f(prediction)`` when ``y`` is ``None``) returning a scalar tensor, such as
            ``nn.CrossEntropyLoss(reduction="sum")``. Default: cross-entropy for integer
            ``y`` (classes in dimension 1, or last for a (B, T, C) prediction with
            (B, T) labels), MSE for floating ``y``.
        optimizer: the optimizer you train with. If given, one step is taken by a deep
            copy of it on copies of the parameters, to measure the update-to-weight
            ratio; your optimizer and model do not move.
        seed: seeds the random direction used without ``y``.
        scaler: the ``GradScaler`` you train with (``torch.amp.GradScaler`` or
            :class:`companion.precision.GradScaler`), or ``None``: its current scale
            (``get_scale()``; 1 when disabled) is the loss scale the underflow is judged
            at. The pass itself is not scaled. A static loss scale is part of the
            loss: pass ``loss=lambda p, t: F.mse_loss(p, t) * 1024``.

    In float16 or bfloat16 -- the model's parameters or the batch, or a call inside
    ``torch.autocast`` -- the pass is repeated on a float32 copy of the model (autocast
    off, the same batch, loss and dropout), and ``precision`` findings say which
    layers' activation gradients the format flushes to zero (at the scaler's scale),
    which activations come near its largest finite value (or overflowed, with the
    float32 copy's value), and, given an optimizer, which weights' updates are below
    half their spacing and round away. A float32 pass is not repeated.

    Example (pure bfloat16 weights under Adam at a small learning rate)::

        import torch
        from companion import data, nets
        from companion.diagnose import diagnose

        x, y = data.teacher_regression(256, 16, seed=0)
        model = nets.mlp(16, 1, width=64, depth=4, seed=0).to(torch.bfloat16)
        opt = torch.optim.Adam(model.parameters(), lr=1e-5)
        report = diagnose(model, x.bfloat16(), y.bfloat16(), optimizer=opt)
        assert [(f.symptom, f.cause) for f in report.findings] == [("precision", "rounding")]
        # the same model in float32 under bfloat16 autocast (float32 master weights): none
        model = nets.mlp(16, 1, width=64, depth=4, seed=0)
        opt = torch.optim.Adam(model.parameters(), lr=1e-5)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert diagnose(model, x, y, optimizer=opt).findings == []

    Returns:
        A :class:`Report`: ``findings`` (warnings and errors: what will hurt training)
        and ``notes`` (designs that look like a problem and are not: zero-initialized
        gates, frozen parameters, modules not called, tied weights, a batch too small
        to judge).

    Raises:
        TypeError: ``model`` not an ``nn.Module``; ``x`` not a tensor, tuple or dict,
            or a complex tensor; ``y`` not a tensor or numpy array, or complex;
            ``loss`` neither None, a name nor a callable (a class refused);
            ``optimizer`` not an optimizer (a class refused); ``seed`` not an int;
            ``scaler`` not a GradScaler (a class refused);
            ``y`` not floating for ``"mse"`` or not integer labels for
            ``"cross_entropy"``; an output with no tensor in it; a loss that returns
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
    scale = _scale_of(_check_scaler(scaler))
    dtype = _pass_dtype(params, x, device)
    saved_grads = [p.grad for p in params]
    saved_buffers = [(b, b.detach().clone()) for b in model.buffers()]
    devices = [device.index or 0] if device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=devices):
            for p in params:
                p.grad = None
            return _diagnose_pass(model, x, y, loss, optimizer, seed, dtype, scale)
    finally:
        with torch.no_grad():
            for b, value in saved_buffers:
                b.copy_(value)
        for p, g in zip(params, saved_grads):
            p.grad = g


def _diagnose_pass(model, x, y, loss, optimizer, seed, dtype=None, scale=1.0) -> Report:
    first_bad: list[str] = []
    ran: set[int] = set()                  # modules owning parameters that were called
    peaks: dict[tuple[str, str], float] = {}   # low precision: (module, "input"/"output") -> max
    low_layers: set[str] = set()               # layers whose output was in low precision
    rng = torch.random.get_rng_state() if dtype is not None else None   # same dropout masks

    def check_output(name):
        def hook(module, _inputs, output):
            if not first_bad:
                for t in _dg._tensors(module, output):
                    if t.is_floating_point() and not torch.isfinite(t.detach()).all():
                        first_bad.append(name)
                        return
        return hook

    def called(module, _inputs, _output):
        ran.add(id(module))

    handles = [m.register_forward_hook(check_output(n)) for n, m in _dg._layers(model)]
    handles += [m.register_forward_hook(called) for m in model.modules()
                if _dg._owns_parameters(m)]
    if dtype is not None:
        handles += _peak_hooks(model, peaks, low_layers)
    try:
        with _dg.record(model) as rec:
            raw = _call(model, x)
            out, own_loss = _output(raw)
            side = _side_parameters(raw, (out, own_loss))
            value, kind, base, per, class_dim = _loss_value(out, own_loss, x, y, loss, seed)
            if value.requires_grad:
                value.backward()
    finally:
        for h in handles:
            h.remove()
    m = _measure(rec, None, model)
    lv = value.item()
    if first_bad:
        m.nonfinite.append((f"the forward pass, first at layer {first_bad[0]}", first_bad[0]))
    if not math.isfinite(lv):
        m.nonfinite.append(("the loss", None))
    m.nonfinite += _nonfinite_params(model)
    moved = None
    if optimizer is not None and not m.nonfinite:
        m.update_ratio, moved, judged = _copy_step_ratios(model, optimizer, m)
    adam = optimizer is not None and "betas" in optimizer.defaults
    findings = _static_findings(m, moved, adam) + _parameter_findings(model, ran, optimizer,
                                                                      side)
    findings += _initial_loss_findings(model, kind, base, lv / per, per, out, y, class_dim)
    if dtype is not None:
        m.low_dtype = _name(dtype)
        y32 = y.float() if y is not None and y.dtype in _LOW else y

        def forward_loss(ref: nn.Module) -> Tensor:       # this pass, on a float32 copy
            out32, own32 = _output(_call(ref, _to_float32(x)))
            return _loss_value(out32, own32, x, y32, loss, seed)[0]

        m.lost, peaks32 = _float32_pass(model, forward_loss, rng, dtype, scale, low_layers)
        if optimizer is not None and not m.nonfinite:
            m.rounded = _rounded_fractions(model, optimizer, judged)
        gated = {n for f in findings if f.symptom == "gated" for n in f.layers}
        findings += _precision_findings(m, dtype, scale, peaks, first_bad[:1], peaks32, gated)
    if optimizer is not None and not m.nonfinite:
        # a weight whose updates round away has its finding (precision): not twice
        rounded = {n for f in findings if f.cause == "rounding" for n in f.layers}
        findings += _ratio_findings({n: r for n, r in judged.items() if n not in rounded},
                                    "one step's update ratio")
    return Report(m, findings, loss=lv if y is not None or loss is not None
                  or own_loss is not None else None,
                  baseline=base.value if base is not None else None)


def _initial_loss_findings(model, kind, base: Optional[_Baseline], lv: float, per: float,
                           out: Tensor, y: Optional[Tensor], class_dim: int) -> list[Finding]:
    """The loss (per element, ``lv``) against the best constant prediction's."""
    if base is None:
        return []
    if base.value is None:
        return [_finding("small_batch", f"the loss is not compared with {base.what}: it was "
                         f"estimated from {base.n} example{'s' * (base.n != 1)}, fewer than "
                         f"{MIN_EXAMPLES}", info=True)]
    b = base.value
    summed = (f" (reduction='sum': {lv * per:.3g} over {per:.0f} elements, {lv:.3g} per "
              f"element)" if per != 1 else "")
    head = [n for n, _ in _dg._layers(model)][-1:] or []
    if not math.isfinite(lv):
        return []
    if kind == "cross_entropy":
        if lv > INITIAL_LOSS_FACTOR * b and lv - b > INITIAL_LOSS_MIN_EXCESS:
            # one distribution for every input (an output bias fixes it), or logits
            # that vary too much (the output layer's scale)
            cause = "prior" if _logit_spread(out, class_dim) < 1.0 else "logits"
            return [_finding("initial_loss", f"the loss is {lv:.3g}{summed}, "
                             f"{lv / b if b else math.inf:.1f} times {base.what} = {b:.3g} "
                             f"of the best constant prediction, {lv - b:.2g} nats above it "
                             f"(threshold {INITIAL_LOSS_FACTOR:g}x and "
                             f"{INITIAL_LOSS_MIN_EXCESS:g} nats)", head,
                             severe=lv - b > 1000 * INITIAL_LOSS_FACTOR * max(b, 1e-3),
                             cause=cause)]
        return []
    if b > 0 and lv > INITIAL_MSE_FACTOR * b:
        cause = "offset" if _offset_share(out, y) > 0.5 else "scale"
        return [_finding("initial_loss", f"the loss is {lv:.3g}{summed}, {lv / b:.1f} times "
                         f"Var(y) = {b:.3g} of predicting the mean (threshold "
                         f"{INITIAL_MSE_FACTOR:g}x)", head,
                         severe=lv > 1000 * INITIAL_MSE_FACTOR * b, cause=cause)]
    return []


def _logit_spread(out: Tensor, class_dim: int) -> float:
    """How much the prediction varies between examples: the root mean over classes of
    the variance over examples of the log-probabilities (log-softmax, so that a shift
    of one example's logits, which changes nothing, counts for nothing). Near 0 the
    model predicts one distribution for every input, and an output bias alone (the log
    prior) removes its excess loss; large, the logits themselves are too large."""
    if out.dim() < 2:
        return 0.0
    log_q = torch.log_softmax(out.detach().double().movedim(class_dim, -1), dim=-1)
    log_q = log_q.reshape(-1, log_q.shape[-1])
    if log_q.shape[0] < 2:
        return 0.0
    return float(log_q.var(dim=0, unbiased=False).mean().sqrt())


def _offset_share(out: Tensor, y: Optional[Tensor]) -> float:
    """The share of the MSE that is the gap between the mean prediction and the mean
    target (per output): large when y is offset (a mean far from 0) and the output
    layer's bias is not."""
    if y is None or y.shape != out.shape:
        return 0.0
    f, t = out.detach().double(), y.detach().double()
    total = ((f - t) ** 2).mean()
    gap = ((f.mean(dim=0) - t.mean(dim=0)) ** 2).mean()
    return float(gap / total) if total > 0 else 0.0


def _loss_value(out: Tensor, own_loss: Optional[Tensor], x: Any, y: Optional[Tensor],
                loss: Any, seed: int):
    """(the loss, its kind, the baseline, the number of elements it sums over: 1 for a
    mean, the class dimension of the output). The model's own loss is used when it returned one and neither ``y`` nor
    ``loss`` is given; its baseline comes from integer ``labels`` in ``x``."""
    if loss is None and y is None and own_loss is not None:
        value = _check.scalar_loss("the model's own loss", own_loss).reshape(())
        labels = x.get("labels") if isinstance(x, dict) else None
        base = None
        if (isinstance(labels, Tensor) and not labels.is_floating_point()
                and out.dim() >= 2 and labels.numel()):
            base = _label_entropy(labels, out.shape[-1])
        return value, ("cross_entropy" if base is not None else None), base, 1.0, out.dim() - 1
    kind = _loss_kind(loss, y)
    if y is not None and out.dim() >= 1 and y.dim() >= 1 and y.shape[0] != out.shape[0]:
        raise ValueError(f"y must have the output's first dimension {out.shape[0]}, "
                         f"got y of shape {tuple(y.shape)}")
    class_dim = 1
    if loss is None and y is None:
        gen = torch.Generator(device="cpu").manual_seed(seed)
        r = torch.randn(out.shape, generator=gen, dtype=torch.float64).to(out.device, out.dtype)
        value = (out * r).sum() / max(1, out.shape[0] if out.dim() else 1)
    else:
        fn = _LOSS_NAMES[kind] if (loss is None or isinstance(loss, str)) else loss
        pred = out
        if (kind == "cross_entropy" and y is not None and out.dim() >= 3
                and not y.is_floating_point() and tuple(y.shape) == tuple(out.shape[:-1])):
            pred, class_dim = out.movedim(-1, 1), out.dim() - 1   # (B, T, C): classes last
        if y is not None and (loss is None or isinstance(loss, str)):   # torch's own
            y = _check_targets(kind, pred, y)
        value = fn(pred) if y is None else fn(pred, y)
    value = _check.scalar_loss("loss", value).reshape(())
    per = 1.0
    if getattr(loss, "reduction", "mean") == "sum" and y is not None:
        per = float(y.numel() if kind == "cross_entropy" else out.numel())
    base = _baseline(kind, out, y, class_dim)
    return value, kind, base, per, class_dim


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


def _model_param(p: Tensor) -> Optional[Tensor]:
    """The model parameter a float32 master weight (:class:`companion.precision.MasterWeights`)
    is rounded into, or None for any other tensor."""
    ref = getattr(p, "_model_param", None)
    return ref() if ref is not None else None


def _optimized_ids(optimizer: torch.optim.Optimizer) -> set[int]:
    """The ids of the tensors ``optimizer`` moves: its parameters, and the model
    parameters of its float32 master weights."""
    ps = [p for g in optimizer.param_groups for p in g["params"]]
    return {id(p) for p in ps} | {id(m) for m in map(_model_param, ps) if m is not None}


def _copy_step_ratios(model: nn.Module, optimizer: torch.optim.Optimizer, m: _Measurement
                      ) -> tuple[dict[str, float], dict[str, bool], dict[str, float]]:
    """One step of a deep copy of ``optimizer`` on copies of its parameters (with the
    gradients of this pass). Returns (the update ratio of every layer's weight and loose
    parameter, whether each gate moved, the ratios to judge: trainable weights in the
    optimizer with a nonzero gradient)."""
    originals = [p for g in optimizer.param_groups for p in g["params"]]
    twin = copy.deepcopy(optimizer)
    for hooks in ("_optimizer_step_pre_hooks", "_optimizer_step_post_hooks"):
        getattr(twin, hooks, {}).clear()       # a watch() on the original must not see it
    copies = [p for g in twin.param_groups for p in g["params"]]
    stands_for = [p if _model_param(p) is None else _model_param(p)   # a master: the
                  for p in originals]                                # model's weight
    for w, q in zip(stands_for, copies):
        q.grad = None if w.grad is None else w.grad.detach().to(q.dtype).clone()
    twin.step()
    after = {id(w): q.detach().to(w.dtype) for w, q in zip(stands_for, copies)}
    modules = dict(model.named_modules())
    named = dict(model.named_parameters())
    gate_ids = {id(named[g]) for g in m.gates if g in named}   # near zero by design:
    weights = {}                                             # their ratio means nothing
    for name in m.layer_types:
        w = _dg._weight(modules[name if name != "model" else ""])
        if w is not None and id(w) in after:
            weights[name] = w
    weights.update((name, named[name]) for name in m.params
                   if name in named and id(named[name]) in after)
    values = _dg._update_ratios([w.detach().double() for w in weights.values()],
                                [after[id(w)].double() for w in weights.values()]).tolist()
    ratios = dict(zip(weights, values))
    judged = {name: ratios[name] for name, w in weights.items()
              if name in m.layer_types and w.requires_grad and w.grad is not None
              and id(w) not in gate_ids and bool(_dg._dense(w.grad).abs().max() > 0)}
    moved = {g: id(named[g]) in after and not torch.equal(after[id(named[g])], named[g].detach())
             for g in m.gates if g in named}
    return ratios, moved, judged


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
    (CPU, 2 threads, SGD, every=10): x1.45 on the 1.6 ms step of a 20-layer MLP of width
    32, x1.06 on an 8-layer MLP of width 512, x1.08 on a 6-layer TokenTransformer, x1.03
    on a 4-layer Hugging Face GPT-2 (the version before the notes and causes, in the same
    session: x1.35, x1.06, x1.04).

    Only the weights a step trained are compared: frozen ones, those outside the
    optimizer, those without a gradient (an expert the router did not pick) and those
    whose gradient is exactly zero are left out of the update ratios.

    With a ``scaler`` (see :func:`watch`) steps end at :meth:`log` instead, and
    ``scales`` and ``skipped`` record the scaler's scale and skipped steps.

    Build it with :func:`watch` (same arguments, ``every`` required here).

    Raises:
        as :func:`watch`.
    """

    def __init__(self, model: nn.Module, optimizer: Optional[torch.optim.Optimizer], every: int,
                 *, scaler: Any = None):
        self.model = _check_model(model)
        self.optimizer = _check_optimizer(optimizer)
        self.every = _check.integer("every", every, minimum=1)
        self.scaler = _check_scaler(scaler)
        if self.scaler is not None and self.optimizer is None:
            raise ValueError("scaler needs the optimizer it steps: watch(model, optimizer, "
                             "scaler=scaler)")
        self.scales: list[float] = []       # with a scaler: its scale after each step
        self.skipped: list[bool] = []       # ... and whether the step was skipped
        self._stepped = False
        self.step = 0
        self.losses: list[float] = []
        self.measurements: list[_Measurement] = []
        self._rec = _dg.record(self.model)
        self._armed = False
        # the trained weights: frozen ones never move, and the update ratio of a gate
        # that starts at or near zero by design means nothing (GATE_SCALE)
        gates, frozen_zeros = _gates(self.model)
        self._gate_names = set(gates) | set(frozen_zeros)
        gate_ids = {id(p) for n, p in self.model.named_parameters() if n in gates}
        self._weights = {n: w for n, w in _dg._layer_weights(self.model).items()
                         if w.requires_grad and id(w) not in gate_ids}
        self._in_optimizer = None if self.optimizer is None else _optimized_ids(self.optimizer)
        self._direct = None if self.optimizer is None else {
            id(p) for g in self.optimizer.param_groups for p in g["params"]}
        # float32 master weights: the model's weights move at master_to_model(), after
        # optimizer.step(), so the step ends at log() as with a scaler
        self._end_at_log = self.scaler is not None or self.optimizer is not None and any(
            _model_param(p) is not None for g in self.optimizer.param_groups
            for p in g["params"])
        self.lrs: list[float] = []
        self._open = False
        self._before: dict[str, Tensor] = {}
        self._hook = None

    # -- the loop ----------------------------------------------------------------
    def __enter__(self) -> "Watcher":
        if self._open:
            raise RuntimeError("this watch is already open; make a new one with watch()")
        self._open = True
        if self._end_at_log:                 # a skipped step never calls optimizer.step()
            self._hook = self.optimizer.register_step_post_hook(lambda *_: self._took_step())
            self._scale = _scale_of(self.scaler)
        elif self.optimizer is not None:
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
        With a ``scaler``, this ends the step: call it after ``scaler.update()``.

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
        elif _check.is_real(loss):
            self.losses.append(float(loss))
        else:
            if not (isinstance(loss, np.ndarray) and loss.size == 1 and loss.dtype.kind in "fiu"):
                raise _log_error(loss)
            self.losses.append(float(loss.reshape(())))
        if self._end_at_log:
            self._end_step()

    def _took_step(self) -> None:
        self._stepped = True

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
        if self.optimizer is not None:
            self.lrs.append(float(self.optimizer.param_groups[0].get("lr", math.nan)))
        scale = self._scale if self.scaler is not None else 1.0    # the backward's scale
        stepped, self._stepped = self._stepped, False
        if self.scaler is not None:
            self.skipped.append(not stepped)
            self._scale = _scale_of(self.scaler)
            self.scales.append(self._scale)
            if self.skipped[-1]:       # nothing moved: measure the next step instead
                self.step += 1
                self._arm()
                return
        if self._armed:
            self._disarm()
            before_norms = _norms(self._before)      # the weights the pass saw
            m = _measure(self._rec, self.step, self.model, before_norms, self._gate_names)
            m.signal = {n: v / scale for n, v in m.signal.items()}   # of the scaled loss
            # only weights this step trained: with a gradient (an expert the router did
            # not pick has none), in the optimizer; a zero gradient (behind a zero gate)
            # leaves a weight where it was for a reason of its own
            trained = {n: w for n, w in self._weights.items() if w.grad is not None and (
                self._in_optimizer is None or id(w) in self._in_optimizer)}
            names = [n for n in self._before if n in trained]
            ratios = _dg._update_ratios([self._before[n] for n in names],
                                        [trained[n] for n in names]).tolist()
            m.update_ratio = {n: r for n, r in zip(names, ratios)
                              if r != 0 or bool(_dg._dense(trained[n].grad).abs().max() > 0)}
            # half-precision weights the optimizer steps itself (not through float32
            # master weights): the share of their trained elements that did not move
            m.rounded = {n: _unmoved_fraction(self._before[n], trained[n]) for n in names
                         if trained[n].dtype in _LOW and (self._direct is None
                                                          or id(trained[n]) in self._direct)}
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
        if not self.measurements and not self.skipped:
            raise ValueError("nothing measured yet: run at least one training step "
                             "inside the watch")
        if not self.measurements:              # every step skipped by the scaler
            losses = np.array(self.losses, float)
            return Report(_Measurement(None, {}, {}, {}, {}, {}, {}, {}),
                          _scaler_findings(self.scales, self.skipped)
                          + (_loss_curve_findings(losses, self.lrs) if losses.size else []),
                          loss=float(losses[-1]) if losses.size else None, losses=losses)
        last, first = self.measurements[-1], self.measurements[0]
        adam = self.optimizer is not None and "betas" in self.optimizer.defaults
        findings = _static_findings(last, adam=adam) + _scaler_findings(self.scales,
                                                                        self.skipped)
        symptoms = {f.symptom for f in findings}
        losses = np.array(self.losses, float)
        stopped = getattr(history, "diverged_at", None)
        if stopped is not None:
            findings.append(_finding(
                "diverged", f"training stopped at step {stopped}: the loss was not finite "
                f"or above 1e6 times the first loss {losses[0] if losses.size else math.nan:.3g}",
                severe=True))
        elif losses.size:
            findings += _loss_curve_findings(losses, self.lrs)
        if "dead_units" not in symptoms:
            grown = {k: v for k, v in last.dead.items()
                     if v - first.dead.get(k, 0.0) > DEAD_GROWTH
                     and last.dead_examples.get(k, MIN_EXAMPLES) >= MIN_EXAMPLES}
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
            stuck = _unmoved_findings(self.measurements)
            findings += stuck
            rounded = {n for f in stuck for n in f.layers}     # reported once, as precision
            findings += _ratio_findings({n: r for n, r in median.items() if n not in rounded},
                                        f"the median update ratio over "
                                        f"{len(self.measurements)} measured steps", trend)
        if self.optimizer is not None:
            missing = [n for n, p in self.model.named_parameters()
                       if p.requires_grad and id(p) not in self._in_optimizer]
            if missing:
                findings.append(_finding(
                    "not_in_optimizer", f"{len(missing)} trainable parameter tensors are not "
                    f"in the optimizer: {_short_list(missing, 3)}; they get gradients and "
                    f"never move", missing))
        return Report(last, findings, loss=float(losses[-1]) if losses.size else None,
                      losses=losses, steps=[m.step for m in self.measurements])


def _loss_curve_findings(losses: np.ndarray, lrs: list[float]) -> list[Finding]:
    """``diverged`` and ``plateau`` from the logged losses (and the learning rates, when
    an optimizer was watched: a warm-up is not a plateau)."""
    nonfinite = np.flatnonzero(~np.isfinite(losses))
    if nonfinite.size:
        t = int(nonfinite[0])
        return [_finding("diverged", f"the loss went from {losses[0]:.3g} at step 0 to "
                         f"{losses[t]:.3g} at step {t}", severe=True)]
    head = max(1, min(10, losses.size // 4))
    start = float(np.median(losses[:head]))
    tail = max(3, losses.size // 10)
    if start > 0 and losses.size > tail:
        end = float(np.median(losses[-tail:]))
        if end > DIVERGED_FACTOR * start:
            below = np.flatnonzero(losses <= DIVERGED_FACTOR * start)
            t = int(below[-1]) + 1 if below.size else 0       # the final stretch above
            return [_finding("diverged", f"the loss went from {start:.3g} (median of the first "
                             f"{head} steps) to {losses[t]:.3g} at step {t} and stayed above "
                             f"{DIVERGED_FACTOR:g}x that: median {end:.3g} over the last "
                             f"{tail} steps", severe=True)]
    # a warm-up is not a plateau: judge the steps from the first at >= 90 % of the peak lr
    n = min(losses.size, len(lrs)) if lrs else losses.size
    begin = 0
    if lrs and n and max(lrs[:n]) > 0:
        begin = int(np.argmax(np.asarray(lrs[:n]) >= 0.9 * max(lrs[:n])))
    window = losses[begin:]
    if window.size < PLATEAU_MIN_STEPS:
        return []
    first, end = window[:10].mean(), window[-(window.size // 4):].mean()
    if end <= first - PLATEAU_DROP * abs(first):           # fell by 10 % or more
        return []
    half = window[-(window.size // 4):]
    k = np.arange(half.size, dtype=float)
    k -= k.mean()
    slope = float((k * (half - half.mean())).sum() / (k * k).sum())
    resid = half - half.mean() - slope * k
    se = math.sqrt(float((resid ** 2).sum()) / max(half.size - 2, 1) / float((k * k).sum()))
    if slope < 0 and (se == 0 or slope / se < -4):        # still falling steadily
        return []
    fall = (first - end) / abs(first) if first else 0.0
    warm = f" after a warm-up of {begin} steps" if begin else ""
    return [_finding("plateau", f"the mean loss of the last {window.size // 4} steps is "
                     f"{end:.3g}, {fall:.1%} below the first ten steps' {first:.3g}{warm} "
                     f"(at least {PLATEAU_DROP:.0%} expected after {window.size} steps), and "
                     f"it is not falling over the last {half.size}. (A run resumed from a "
                     f"trained checkpoint may simply have converged: compare the loss with "
                     f"a constant prediction's.)")]


def _log_error(loss: Any) -> Exception:
    """Watcher.log's refusal: ValueError for a loss of several elements, else TypeError."""
    if isinstance(loss, (Tensor, np.ndarray)) and (
            loss.numel() if isinstance(loss, Tensor) else loss.size) != 1:
        return ValueError(f"loss must be a number or a one-element tensor, got "
                          f"{_check.show(loss)} (a loss per example? reduce it, e.g. .mean())")
    return _check._type_error("loss", "a real number or a one-element real tensor", loss)


def watch(model: nn.Module, optimizer: Optional[torch.optim.Optimizer] = None, *,
          every: int = 10, scaler: Any = None) -> Watcher:
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
        scaler: the ``GradScaler`` of a mixed-precision loop (``torch.amp.GradScaler``
            or :class:`companion.precision.GradScaler`), or ``None``. With one, each
            step ends at :meth:`Watcher.log` (a step the scaler skips never calls
            ``optimizer.step()``): call it after ``scaler.update()``. The watcher keeps
            the scale after each step (``.scales``) and whether the step was skipped
            (``.skipped``), reports a scale that keeps collapsing (``precision``,
            cause ``scaler``), measures the next step taken when a measured one is
            skipped, and divides the backward signal by the scale. With an optimizer
            built on float32 master weights (:class:`companion.precision.MasterWeights`)
            steps end at :meth:`Watcher.log` too: call it after ``master_to_model()``::

                scaler = torch.amp.GradScaler("cpu")
                with watch(model, opt, every=10, scaler=scaler) as w:
                    for xb, yb in batches:
                        with torch.autocast("cpu", dtype=torch.float16):
                            loss = loss_fn(model(xb), yb)
                        opt.zero_grad(); scaler.scale(loss).backward()
                        scaler.step(opt); scaler.update()
                        w.log(loss)

    Returns:
        A :class:`Watcher`; ``.report()`` gives a :class:`Report`.

    Raises:
        TypeError: ``model`` not an ``nn.Module``; ``optimizer`` neither None nor an
            optimizer; ``every`` not an int; ``scaler`` not a GradScaler.
        ValueError: a model without parameters; ``every < 1``; a ``scaler`` without
            an ``optimizer``.
    """
    return Watcher(model, optimizer, every, scaler=scaler)
