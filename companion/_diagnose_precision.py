"""The reduced-precision part of :mod:`companion.diagnose`: when a pass runs in float16
or bfloat16, what the format loses.

* :func:`_pass_dtype` -- whether a pass is in half precision (the parameters, the batch,
  or an enclosing ``torch.autocast``);
* :func:`_peak_hooks` -- the largest |value| of every module's half-precision inputs and
  outputs (near overflow);
* :func:`_float32_pass` -- the same pass on a float32 copy: the activation gradients the
  format would flush to zero at the loss scale (underflow), and the float32 values where
  the half-precision pass overflowed;
* :func:`_rounded_fractions` -- one step of a float32 twin of the optimizer: the updates
  that round away in the weights' format;
* :func:`_precision_findings`, :func:`_scaler_findings` -- the ``precision`` findings read
  from those, for :func:`~companion.diagnose.diagnose` and
  :class:`~companion.diagnose.Watcher`.

The thresholds are in :mod:`companion.symptoms`; the equations in :mod:`companion.precision`.
"""
from __future__ import annotations

import copy
import math
from typing import Any, Callable, Optional

import numpy as np
import torch
from torch import Tensor, nn

from . import _check
from . import diagnostics as _dg
from . import precision as _pr
from .diagnostics import ForwardError
from .symptoms import (PRECISION_LOST_FRACTION, PRECISION_OVERFLOW_FACTOR,
                       PRECISION_ROUNDED_FRACTION, SCALER_MIN_SKIPS, SCALER_SKIP_FRACTION,
                       Finding, _finding, _Measurement, _short_list)

_LOW = (torch.float16, torch.bfloat16)


def _name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


def _check_scaler(scaler: object) -> Any:
    """None or a GradScaler instance: torch's (``torch.amp``, ``torch.cuda.amp``) or the
    companion's (a class, a common slip, refused by name)."""
    kinds = (torch.amp.GradScaler, _pr.GradScaler)
    what = "None or a GradScaler (torch.amp.GradScaler or companion.precision.GradScaler)"
    if isinstance(scaler, type):
        raise TypeError(f"scaler must be {what}, got the class {scaler.__name__} (build "
                        f"one, e.g. {scaler.__name__}(\"cpu\"))")
    if scaler is not None:
        _check.instance("scaler", scaler, kinds, what)
    return scaler


def _scale_of(scaler: Any) -> float:
    """The loss scale a GradScaler applies now (1 without one, or when disabled)."""
    return float(scaler.get_scale()) if scaler is not None and scaler.is_enabled() else 1.0


def _floating(x: Any) -> list[Tensor]:
    """The floating tensors of a batch: a tensor, a tuple or list, or a dict's values."""
    items = [x] if isinstance(x, Tensor) else list(x.values()) if isinstance(x, dict) else \
        list(x) if isinstance(x, (tuple, list)) else []
    return [t for t in items if isinstance(t, Tensor) and t.is_floating_point()]


def _pass_dtype(params: list[Tensor], x: Any, device: torch.device) -> Optional[torch.dtype]:
    """float16 or bfloat16 when the pass runs in it (the parameters, the batch, or an
    enclosing ``torch.autocast``; float16 first if both), else None."""
    found = {p.dtype for p in params} | {t.dtype for t in _floating(x)}
    if torch.is_autocast_enabled(device.type):
        found.add(torch.get_autocast_dtype(device.type))
    return next((d for d in _LOW if d in found), None)


def _to_float32(x: Any) -> Any:
    """The batch with its float16 and bfloat16 tensors in float32."""
    def f(t):
        return t.float() if isinstance(t, Tensor) and t.dtype in _LOW else t
    if isinstance(x, dict):
        return {k: f(v) for k, v in x.items()}
    if isinstance(x, (tuple, list)):
        return type(x)(f(t) for t in x)
    return f(x)


def _peak_hooks(model: nn.Module, peaks: dict, low_layers: set[str],
                dtypes: tuple = _LOW) -> list:
    """Forward hooks on every module recording the largest |value| of its inputs and
    outputs in ``dtypes`` (``peaks[(name, "input" or "output")]``; a softmax's input is
    the attention logits), and which layers return half precision (``low_layers``)."""
    layers = {n for n, _ in _dg._layers(model)}

    def hook(name):
        def record(module, inputs, output):
            for where, value in (("input", inputs), ("output", output)):
                for t in _dg._tensors(module, value):
                    if t.dtype in dtypes and t.numel():
                        peak = float(t.detach().abs().max())
                        key = (name or "the model", where)
                        peaks[key] = max(peaks.get(key, 0.0), peak)
                        if where == "output" and name in layers and t.dtype in _LOW:
                            low_layers.add(name)
        return record

    named = [(n if n else "model", m) for n, m in model.named_modules()]
    return [m.register_forward_hook(hook(n)) for n, m in named]


def _float32_pass(model: nn.Module, forward_loss: Callable[[nn.Module], Tensor],
                  rng: Tensor, dtype: torch.dtype, scale: float, layers: set[str]
                  ) -> tuple[dict[str, float], dict[tuple[str, str], float]]:
    """The pass again on a float32 copy of the model, autocast off: ``forward_loss(copy)``
    runs the batch (in float32) and returns the loss, with the same dropout masks
    (``rng``). Returns (layer -> the fraction of the nonzero gradients at its
    output, times ``scale``, that ``dtype`` flushes to zero, for the ``layers`` whose
    output was in half precision; (module, "input" or "output") -> the largest |value|,
    as :func:`_peak_hooks`). Empty when the copy cannot run the batch."""
    counts: dict[str, list[float]] = {}
    peaks: dict[tuple[str, str], float] = {}
    try:
        ref = copy.deepcopy(model).float()
    except (RuntimeError, TypeError):
        return {}, {}                  # (a model that cannot be copied)
    for p in ref.parameters():
        p.grad = None

    def count(name):
        def on_grad(grad):
            n = int(torch.count_nonzero(grad))
            c = counts.setdefault(name, [0.0, 0])
            c[0] += _pr.lost_fraction(grad, dtype, scale=scale) * n if n else 0.0
            c[1] += n
        return on_grad

    def hook(name):
        def f(module, _inputs, output):
            for t in _dg._tensors(module, output):
                if t.is_floating_point() and t.requires_grad:
                    t.register_hook(count(name))
        return f

    handles = [m.register_forward_hook(hook(n)) for n, m in _dg._layers(ref) if n in layers]
    handles += _peak_hooks(ref, peaks, set(), (torch.float32,))
    try:
        torch.random.set_rng_state(rng)
        with torch.autocast(next(iter(model.parameters())).device.type, enabled=False):
            value = forward_loss(ref)
            if value.requires_grad and math.isfinite(value.item()):
                value.backward()
    except (ForwardError, RuntimeError, TypeError, ValueError):
        return {}, {}                  # (a model that runs in half precision only)
    finally:
        for h in handles:
            h.remove()
    return {n: c[0] / c[1] for n, c in counts.items() if c[1]}, peaks


def _rounded_fractions(model: nn.Module, optimizer: torch.optim.Optimizer,
                       judged: dict[str, float]) -> dict[str, float]:
    """For each judged layer with a float16 or bfloat16 weight: the fraction of its
    nonzero updates that round away (:func:`companion.precision.rounded_away_fraction`),
    the updates taken by one step of a float32 copy of ``optimizer`` (its parameters
    and state in float32, the gradients of this pass): the step the format loses.
    Only the elements with a nonzero gradient are judged: weight decay alone (AdamW's
    lr x decay x w on the rows of an embedding the batch does not use) also rounds
    away in bfloat16, and that does not stop the weight from learning."""
    modules = dict(model.named_modules())
    weights = {n: _dg._weight(modules[n if n != "model" else ""]) for n in judged}
    weights = {n: w for n, w in weights.items() if w is not None and w.dtype in _LOW}
    if not weights:
        return {}
    originals = [p for g in optimizer.param_groups for p in g["params"]]
    twin = copy.deepcopy(optimizer)
    for hooks in ("_optimizer_step_pre_hooks", "_optimizer_step_post_hooks"):
        getattr(twin, hooks, {}).clear()
    copies = [p for g in twin.param_groups for p in g["params"]]
    with torch.no_grad():
        for p, q in zip(originals, copies):
            q.data = q.data.float()
            q.grad = None if p.grad is None else p.grad.detach().float()
        for state in twin.state.values():
            for k, v in state.items():
                if isinstance(v, Tensor) and v.dtype in _LOW:
                    state[k] = v.float()
    before = [q.detach().clone() for q in copies]
    twin.step()
    update = {id(p): q.detach() - b for p, q, b in zip(originals, copies, before)}
    out = {}
    for n, w in weights.items():
        if id(w) in update and w.grad is not None:
            g = w.grad.to_dense() if w.grad.is_sparse else w.grad
            got = g != 0                              # the elements this batch trains
            out[n] = _pr.rounded_away_fraction(update[id(w)][got], w.detach()[got], w.dtype)
    return out


def _precision_findings(m: _Measurement, dtype: torch.dtype, scale: float,
                        peaks: dict[tuple[str, str], float], first_bad: list[str],
                        peaks32: dict[tuple[str, str], float],
                        gated: set[str] = frozenset()) -> list[Finding]:
    """``precision`` findings of a half-precision pass: underflow (the measured lost
    fractions), overflow (the forward pass overflowed where float32 did not, or an
    activation near the largest finite value) and rounding (updates that round away).
    Underflow in the ``gated`` layers (behind a gate that starts near zero by design:
    a layer scale of 1e-6 scales their gradients by 1e-6) is a note: it ends as the
    gate grows."""
    fmt, name, out = _pr.format_facts(dtype), _name(dtype), []
    lost = {n: m.lost[n] for n in m.layer_types
            if m.lost.get(n, 0.0) > PRECISION_LOST_FRACTION}          # forward order
    under = {n: v for n, v in lost.items() if n not in gated}
    behind = {n: v for n, v in lost.items() if n in gated}
    if behind:
        worst = max(behind, key=behind.get)
        out.append(_finding(
            "gated", f"{name} flushes to zero {behind[worst]:.0%} of the nonzero gradients "
            f"at the output of {worst}, which sits behind a gate that starts near zero by "
            f"design; as the gate grows, so do these gradients", list(behind), info=True))
    if under:
        worst = max(under, key=under.get)
        at = f"times the loss scale {scale:g}" if scale != 1 else "without loss scaling"
        out.append(_finding(
            "precision", f"{name} flushes to zero {under[worst]:.0%} of the nonzero "
            f"gradients at the output of {worst} (those of a float32 copy of this pass, "
            f"{at}, below half its smallest subnormal {fmt.smallest_subnormal:.2g}); "
            f"{len(under)} of {len(m.lost)} layers lose more than "
            f"{PRECISION_LOST_FRACTION:.0%}", list(under), severe=under[worst] >= 0.99,
            cause="underflow"))
    limit = fmt.largest / PRECISION_OVERFLOW_FACTOR
    inf = [k for k, v in peaks.items() if not math.isfinite(v)]     # the first to finish
    if inf or first_bad:
        (layer, where) = key = inf[0] if inf else (first_bad[0], "output")
        v32 = peaks32.get(key, math.nan)
        if math.isfinite(v32):
            inside = ("" if v32 > fmt.largest else ": a value inside it overflowed, such "
                      "as attention logits or a sum of squares")
            out.append(_finding(
                "precision", f"{name} overflowed: the {where} of {layer} is not finite in "
                f"{name} but finite in float32, where its largest |value| is {v32:.3g} "
                f"(the largest finite {name} is {fmt.largest:.6g}){inside}", [layer],
                severe=True, cause="overflow"))
    else:
        near = {k: v for k, v in peaks.items() if v > limit}
        if near:
            (layer, where) = worst = max(near, key=near.get)
            out.append(_finding(
                "precision", f"the largest |value| of the {where} of {layer} is "
                f"{near[worst]:.3g} in {name}, within a factor {PRECISION_OVERFLOW_FACTOR:g} "
                f"of the largest finite {name} {fmt.largest:.6g} (threshold {limit:.4g}); "
                f"above it: " + _short_list([f"the {w} of {n}" for n, w in near], 3),
                list(dict.fromkeys(k[0] for k in near)), cause="overflow"))
    stuck = {n: v for n, v in m.rounded.items() if v > PRECISION_ROUNDED_FRACTION}
    if stuck:
        worst = max(stuck, key=stuck.get)
        out.append(_finding(
            "precision", f"{stuck[worst]:.0%} of the updates of {worst}'s {name} weight "
            f"are below half its spacing and round away (one step of your optimizer, "
            f"computed in float32; threshold {PRECISION_ROUNDED_FRACTION:.0%}); "
            f"{len(stuck)} of {len(m.rounded)} {name} weights are above it", list(stuck),
            severe=stuck[worst] >= 0.99, cause="rounding"))
    return out


def _scaler_findings(scales: list[float], skipped: list[bool]) -> list[Finding]:
    """``precision`` (cause ``scaler``): after the start-up (the steps skipped before
    the first one taken), more than SCALER_SKIP_FRACTION of the steps skipped (at least
    SCALER_MIN_SKIPS), or a scale that fell below 1."""
    if not skipped:
        return []
    start = next((t for t, s in enumerate(skipped) if not s), len(skipped))
    later = skipped[start:]
    n = sum(later)
    low = min(scales)
    if n >= SCALER_MIN_SKIPS and n > SCALER_SKIP_FRACTION * len(later):
        what = (f"{n} of the {len(later)} steps after the first step taken (step {start}) "
                f"were skipped (threshold {SCALER_SKIP_FRACTION:.0%})")
    elif low < 1:
        what = (f"the scale fell to {low:.3g}, below 1: the gradients overflow even "
                f"unscaled ({sum(skipped)} of {len(skipped)} steps skipped)")
    else:
        return []
    return [_finding("precision", f"the GradScaler keeps collapsing: {what}; its scale went "
                     f"from {scales[0]:.3g} after step 0 to {scales[-1]:.3g} after step "
                     f"{len(scales) - 1} (lowest {low:.3g})", severe=low < 1,
                     cause="scaler")]


def _unmoved_fraction(before: Tensor, after: Tensor) -> float:
    """The fraction of a half-precision weight's elements with a nonzero gradient that
    one step left exactly where they were (their update rounded away), NaN if none."""
    got = _dg._dense(after.grad) != 0
    n = int(got.sum())
    return int(((after.detach() == before) & got).sum()) / n if n else math.nan


def _unmoved_findings(measurements: list[_Measurement]) -> list[Finding]:
    """``precision`` (cause ``rounding``) from :class:`~companion.diagnose.Watcher`'s
    measured steps: half-precision weights stepped by the optimizer itself (no float32
    master weights) of which, in the median measured step, more than
    PRECISION_ROUNDED_FRACTION of the elements with a gradient did not move."""
    names = dict.fromkeys(n for m in measurements for n in m.rounded)
    median = {}
    for n in names:
        values = [m.rounded[n] for m in measurements if math.isfinite(m.rounded.get(n, math.nan))]
        if values:
            median[n] = float(np.median(values))
    stuck = {n: v for n, v in median.items() if v > PRECISION_ROUNDED_FRACTION}
    if not stuck:
        return []
    worst = max(stuck, key=stuck.get)
    return [_finding(
        "precision", f"in the median of {len(measurements)} measured steps, {stuck[worst]:.0%} "
        f"of the elements of {worst}'s weight that had a gradient did not move: their "
        f"updates are below half the spacing of its format and round away (threshold "
        f"{PRECISION_ROUNDED_FRACTION:.0%}); {len(stuck)} of {len(median)} half-precision "
        f"weights are above it", list(stuck), severe=stuck[worst] >= 0.99, cause="rounding")]

