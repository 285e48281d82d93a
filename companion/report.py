"""What a diagnosis says and how it is shown: findings, the symptom table, the report.

* :data:`SYMPTOMS` -- symptom -> :class:`Symptom` (its usual causes, the remedy to try
  first, the chapter that explains it): the table the book's closing map is drawn
  from, so that the book and :mod:`companion.diagnose` cannot disagree.
* :class:`Finding` -- one diagnosis: symptom, severity, layers, evidence, remedy, chapter.
* :class:`Report` -- what :func:`companion.diagnose.diagnose` and
  :meth:`companion.diagnose.Watcher.report` return: the findings and the per-layer
  table, as text (``str``), HTML (in a notebook), a figure (:meth:`Report.plot`) and
  plain rows (:attr:`Report.rows`).

The thresholds and the rules that raise findings live in :mod:`companion.diagnose`.
"""
from __future__ import annotations

import html
import math
import numbers
import textwrap
from collections import OrderedDict
from typing import Any, NamedTuple, Optional, Sequence

import numpy as np

from . import _check

__all__ = ["Symptom", "SYMPTOMS", "Finding", "Report"]


# --------------------------------------------------------------------- symptoms
class Symptom(NamedTuple):
    """One row of the book's map: what the symptom is, its usual causes, the remedy
    to try first and the chapter that explains it; ``remedies`` maps a cause that
    :mod:`companion.diagnose` can tell apart to (its remedy, its chapter), and
    ``severity`` is ``"info"`` for the notes (designs that look like a problem and are
    not), else None (a warning or an error, by the numbers)."""

    name: str
    title: str
    cause: str
    remedy: str
    chapter: str
    remedies: dict = {}
    severity: Optional[str] = None


#: symptom -> :class:`Symptom`, in the order of the book's chapters; the notes last.
SYMPTOMS: "OrderedDict[str, Symptom]" = OrderedDict((s.name, s) for s in (
    Symptom("vanishing", "vanishing gradients",
            "a product of layer Jacobians smaller than 1: saturating activations, "
            "weights too small, too many layers",
            "He/Xavier initialization, ReLU-family activations, normalization, "
            "skip connections", "vanishing",
            {"frozen_zero": ("unfreeze that parameter or start it away from zero (a "
                             "frozen zero, or one whose gradient is zero too, blocks every "
                             "gradient behind it for good)", "initialization")}),
    Symptom("exploding", "exploding gradients",
            "a product of layer Jacobians larger than 1: weights too large, batch norm "
            "in a deep plain network, a recurrent matrix with radius > 1",
            "variance-preserving initialization, skip connections; per-layer adaptive "
            "clipping (AGC) rather than global clipping, which scales every layer by the "
            "same factor and leaves the imbalance between layers as it is", "exploding",
            {"batch_norm": ("skip connections: batch norm in a deep plain network "
                            "multiplies the gradient at every layer whatever the "
                            "initialization (no initialization fixes it)",
                            "skip_connections")}),
    Symptom("initial_loss", "loss far above the baseline",
            "an output layer too large at the start, or far from the labels' prior",
            "scale the output layer down (or zero it) and check the loss at "
            "initialization against the best constant prediction", "initialization",
            {"logits": ("scale the output layer down (or zero its weight) so that the "
                        "first predictions are close to uniform", "initialization"),
             "prior": ("set the output layer's bias to the log of the class "
                       "frequencies (the log prior) and scale its weight down", "initialization"),
             "offset": ("set the output layer's bias to mean(y), or standardize y",
                        "initialization"),
             "scale": ("scale the output layer down, or standardize y", "initialization")}),
    Symptom("saturation", "saturated activations",
            "pre-activations too large for a sigmoid or tanh: inputs not standardized, "
            "weights too large",
            "standardize the inputs, Xavier initialization, normalization before the "
            "activation, or a non-saturating activation", "activations"),
    Symptom("dead_units", "dead ReLUs",
            "units pushed to negative pre-activations for every input, by a large "
            "step or a negative bias",
            "a smaller learning rate, zero biases, leaky ReLU or GELU, normalization",
            "activations"),
    Symptom("nonfinite", "non-finite values",
            "an overflow: exploding activations or gradients, a step too large",
            "find the first layer that overflows; lower the learning rate, clip, "
            "normalize", "exploding"),
    Symptom("diverged", "the loss diverged",
            "steps too large for the curvature: learning rate, exploding gradients",
            "a smaller learning rate, gradient clipping, warm-up", "clipping"),
    Symptom("plateau", "the loss does not fall",
            "no useful gradient reaches the weights, or the steps are too small or "
            "too large for the optimizer",
            "the remedies for vanishing gradients, skip connections, warm-up, "
            "an adaptive optimizer and a tuned learning rate", "skip_connections"),
    Symptom("update_ratio", "update-to-weight ratio out of range",
            "a learning rate too small or too large for this layer's scale",
            "tune the learning rate (about 1e-3 of the weights per step), or an "
            "adaptive optimizer", "optimizers",
            {"large": ("a smaller learning rate, or warm-up", "optimizers"),
             "small": ("a larger learning rate, or an adaptive optimizer; if the gradient "
                       "there is vanishing, its remedies first", "optimizers"),
             "rounding": ("keep float32 master weights (train in float32 under autocast) "
                          "or a larger learning rate for these parameters", "optimizers")}),
    Symptom("no_gradient", "parameters without a gradient",
            "the graph between them and the loss is cut (.detach(), torch.no_grad(), "
            ".item(), an integer cast) or their output is not used",
            "find where the graph is cut: keep the computation from those parameters to "
            "the loss in autograd, or freeze them on purpose (requires_grad_(False))",
            "diagnose"),
    Symptom("not_in_optimizer", "trainable parameters not in the optimizer",
            "the optimizer was built from a subset of the parameters (or before a layer "
            "was added)",
            "build the optimizer from model.parameters(), or freeze those parameters on "
            "purpose", "optimizers"),
    Symptom("gated", "a small signal behind a gate, by design",
            "a zero-initialized head, LoRA B or batch-norm gamma, a ReZero/SkipInit "
            "alpha or a small layer scale, or a branch off the gradient's main path",
            "nothing: it grows in training (check again after a few steps)",
            "skip_connections", severity="info"),
    Symptom("frozen", "frozen parameters", "requires_grad=False, on purpose",
            "nothing, if they are meant to be frozen", "diagnose", severity="info"),
    Symptom("not_called", "modules not called on this batch",
            "an expert the router did not pick, a head this pass does not use",
            "nothing, if that is how the model routes", "diagnose", severity="info"),
    Symptom("unused_output", "outputs the loss does not use",
            "an auxiliary head or a second output of the model, left out of the loss "
            "diagnose computed (it takes the first output, or .logits, as the prediction)",
            "nothing, if your training loss leaves them out too", "diagnose",
            severity="info"),
    Symptom("tied", "tied weights", "one weight shared by two layers (input and output "
            "embedding)", "nothing", "diagnose", severity="info"),
    Symptom("small_batch", "a batch too small to judge",
            "too few examples per unit or per class to call a unit dead or estimate "
            "the baseline loss", "diagnose a larger batch (at least 16 examples)",
            "diagnose", severity="info"),
))


class Finding(NamedTuple):
    """One diagnosis: the symptom, how bad, where, the numbers, what to do, where to read.

    ``severity`` is ``"error"`` (training cannot work as it is: non-finite values, a
    divergence, or a threshold missed by more than a factor of 1000), ``"warning"``,
    or ``"info"`` for a note (a design that looks like a problem and is not).
    ``layers`` are module names (as in ``named_modules()``), parameter names or
    activation labels. ``cause`` is the key of the cause that was told apart (in
    ``SYMPTOMS[symptom].remedies``), or ``""``.
    """

    symptom: str
    severity: str
    layers: tuple[str, ...]
    evidence: str
    remedy: str
    chapter: str
    cause: str = ""

    def __str__(self) -> str:
        where = f" in {_short_list(self.layers)}" if self.layers else ""
        if self.severity == "info":
            return f"[info] {SYMPTOMS[self.symptom].title}{where}: {self.evidence}."
        return (f"[{self.severity}] {SYMPTOMS[self.symptom].title}{where}: {self.evidence}. "
                f"Try: {self.remedy} (chapter '{self.chapter}').")


def _finding(symptom: str, evidence: str, layers: Sequence[str] = (), *,
             severe: bool = False, info: bool = False, cause: str = "") -> Finding:
    s = SYMPTOMS[symptom]
    remedy, chapter = s.remedies.get(cause, (s.remedy, s.chapter))
    severity = "info" if info else "error" if severe else "warning"
    return Finding(symptom, severity, tuple(layers), evidence, remedy, chapter, cause)


def _short_list(names: Sequence[str], k: int = 4) -> str:
    names = list(names)
    return ", ".join(names) if len(names) <= k else ", ".join(names[:k]) + f" and {len(names) - k} more"


# ------------------------------------------------------------------------ report
class Report:
    """What :func:`diagnose` and :meth:`Watcher.report` return.

    Attributes:
        findings: list of :class:`Finding` (errors, then warnings): what will hurt
            training; empty for a healthy model.
        notes: list of :class:`Finding` of severity ``"info"``: designs that look like
            a problem and are not (a zero-initialized gate, frozen parameters, a module
            not called, tied weights, a batch too small to judge), each saying what it is.
        loss: the loss of the pass (``None`` without ``y`` and ``loss``).
        baseline: the loss of the best constant prediction, when known.
        rows: the per-layer and per-activation table as a list of dicts (keys
            ``name, kind, type, signal, signal_ratio, grad_norm, weight_norm,
            update_ratio`` for layers and ``name, kind, type, mean, std, saturated,
            dead`` for activations; NaN where a value does not apply), in forward order.
        losses: (watch) the logged losses; ``None`` for :func:`diagnose`.
        steps: (watch) the steps that were measured.
    """

    def __init__(self, measurement: Any, findings: list[Finding], *,
                 loss: Optional[float] = None, baseline: Optional[float] = None,
                 losses: Optional[np.ndarray] = None, steps: Sequence[int] = ()):
        """Built by :func:`~companion.diagnose.diagnose` and
        :meth:`~companion.diagnose.Watcher.report` from their measurement.

        Raises:
            TypeError: ``measurement`` not a measurement of :mod:`companion.diagnose`;
                ``findings`` not a list of :class:`Finding`; ``loss`` or ``baseline``
                not a number; ``losses`` not a numpy array; ``steps`` not a list of ints.
            ValueError: a finding of unknown severity; ``baseline`` negative or not
                finite; ``losses`` not 1-dimensional; a negative step.
        """
        from .diagnose import _Measurement          # (diagnose imports this module)
        _check.instance("measurement", measurement, _Measurement,
                        "the measurement of a companion.diagnose pass")
        findings = _check.sequence("findings", findings, nonempty=False,
                                   what="a list of Finding")
        for i, f in enumerate(findings):
            _check.instance(f"findings[{i}]", f, Finding, "a Finding")
            if f.severity not in ("error", "warning", "info"):
                raise ValueError(f"findings[{i}] must have severity 'error', 'warning' or "
                                 f"'info', got {f.severity!r}")
        loss = None if loss is None else _number("loss", loss)   # NaN: a diverged run
        baseline = _check.optional_real("baseline", baseline, low=0.0)
        if losses is not None:
            _check.instance("losses", losses, np.ndarray, "None or a numpy array")
            _check.array("losses", losses, ndim=1, nonempty=False)
        steps = [_check.integer(f"steps[{i}]", t, minimum=0) for i, t in
                 enumerate(_check.sequence("steps", steps, nonempty=False,
                                           what="a list of step numbers"))]
        order = {"error": 0, "warning": 1}
        self.findings = sorted((f for f in findings if f.severity != "info"),
                               key=lambda f: order[f.severity])
        self.notes = [f for f in findings if f.severity == "info"]
        self.loss, self.baseline = loss, baseline
        self.losses, self.steps = losses, list(steps)
        self._m = measurement

    @property
    def symptoms(self) -> list[str]:
        return [f.symptom for f in self.findings]

    @property
    def ok(self) -> bool:
        """True when there is no finding (notes do not count)."""
        return not self.findings

    @property
    def rows(self) -> list[dict[str, Any]]:
        m, nan = self._m, math.nan
        from .diagnose import _signal_ratios          # (diagnose imports this module)
        _, ratios = _signal_ratios(m)
        rows = [{"name": n, "kind": "layer", "type": t, "signal": m.signal.get(n, nan),
                 "signal_ratio": ratios.get(n, nan),
                 "grad_norm": m.grad_norm.get(n, nan), "weight_norm": m.weight_norm.get(n, nan),
                 "update_ratio": m.update_ratio.get(n, nan)}
                for n, t in m.layer_types.items()]
        rows += [{"name": n, "kind": "parameter", "type": "parameter", "signal": nan,
                  "signal_ratio": nan, "grad_norm": g, "weight_norm": w,
                  "update_ratio": m.update_ratio.get(n, nan)}
                 for n, (g, w) in m.params.items()]
        rows += [{"name": label, "kind": "activation", "type": label.split("after ")[-1][:-1],
                  "mean": s.mean, "std": s.std, "saturated": s.saturated_fraction,
                  "dead": m.dead.get(label, nan)} for label, s in m.act_stats.items()]
        return rows

    # -- text -----------------------------------------------------------------------
    def _summary(self) -> str:
        parts = []
        if self.loss is not None:
            base = f" (best constant prediction: {self.baseline:.4g})" if self.baseline else ""
            parts.append(f"loss {self.loss:.4g}{base}")
        if self.steps:
            parts.append(f"{len(self.steps)} measured steps, last {self.steps[-1]}")
        return "; ".join(parts)

    def __str__(self) -> str:
        lines = ["Diagnosis: " + (self._summary() or "one pass")]
        fmt = "{:<28} {:<18} {:>10} {:>10} {:>10} {:>10} {:>10}"
        lines.append(fmt.format("layer", "type", "signal", "vs out", "|grad W|", "|W|", "update"))
        for r in self.rows:
            if r["kind"] != "activation":
                lines.append(fmt.format(r["name"][:28], r["type"][:18], *(
                    _num(r[k]) for k in ("signal", "signal_ratio", "grad_norm",
                                         "weight_norm", "update_ratio"))))
        acts = [r for r in self.rows if r["kind"] == "activation"]
        if acts:
            fmt2 = "{:<47} {:>10} {:>10} {:>10} {:>10}"
            lines.append(fmt2.format("activation", "mean", "std", "saturated", "dead"))
            for r in acts:
                lines.append(fmt2.format(r["name"][:47], *(_num(r[k]) for k in
                                                         ("mean", "std", "saturated", "dead"))))
        lines.append("Findings:" if self.findings else "No findings: nothing in this pass "
                     "is outside the thresholds.")
        lines += [f"- {f}" for f in self.findings]
        if self.notes:
            lines.append("Notes (by design, not problems):")
            lines += [f"- {f}" for f in self.notes]
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"<Report: {', '.join(self.symptoms) or 'no findings'}>"

    def _repr_html_(self) -> str:
        flagged = {n for f in self.findings for n in f.layers}
        num = "padding:1px 8px;text-align:right;font-variant-numeric:tabular-nums"
        txt = "padding:1px 8px;text-align:left"

        def table(header: Sequence[str], keys: Sequence[str], rows: list[dict]) -> str:
            head = "".join(f"<th style='{num if i > 1 else txt}'>{h}</th>"
                           for i, h in enumerate(header))
            body = []
            for r in rows:
                red = " style='color:#b00'" if r["name"] in flagged else ""
                cells = [html.escape(r["name"]), html.escape(r["type"])] + [
                    _num(r[k]) for k in keys]
                body.append(f"<tr{red}>" + "".join(
                    f"<td style='{num if i > 1 else txt}'>{c}</td>"
                    for i, c in enumerate(cells)) + "</tr>")
            return (f"<table style='border-collapse:collapse;font-size:0.8em;margin:0.4em 0'>"
                    f"<tr>{head}</tr>{''.join(body)}</table>")

        layers = [r for r in self.rows if r["kind"] != "activation"]
        acts = [r for r in self.rows if r["kind"] == "activation"]
        notes = "".join(f"<li>note: {html.escape(SYMPTOMS[f.symptom].title)}: "
                        f"{html.escape(f.evidence)}.</li>" for f in self.notes)
        items = "".join(f"<li><b>{f.severity}: {html.escape(SYMPTOMS[f.symptom].title)}</b>"
                        f"{' in ' + html.escape(_short_list(f.layers)) if f.layers else ''}: "
                        f"{html.escape(f.evidence)}. <i>Try:</i> {html.escape(f.remedy)} "
                        f"(chapter <code>{f.chapter}</code>).</li>" for f in self.findings)
        verdict = f"<ul>{items}</ul>" if items else "<p>No findings.</p>"
        if notes:
            verdict += f"<ul style='color:#555'>{notes}</ul>"
        out = [f"<div><p><b>Diagnosis</b>: {html.escape(self._summary() or 'one pass')}</p>",
               verdict, table(("layer", "type", "signal", "vs out", "|grad W|", "|W|",
                               "update ratio"),
                              ("signal", "signal_ratio", "grad_norm", "weight_norm",
                               "update_ratio"), layers)]
        if acts:
            out.append(table(("activation", "type", "mean", "std", "saturated", "dead"),
                             ("mean", "std", "saturated", "dead"), acts))
        return "".join(out) + "</div>"

    # -- figure ---------------------------------------------------------------------
    def plot(self, fig=None):
        """A one-page figure: the backward signal and the update-to-weight ratio per
        layer, the saturated and dead fractions per activation (each panel only when it
        has data), the thresholds dotted, flagged layers in red, and the findings listed
        underneath. ``fig`` may be a matplotlib Figure or SubFigure (a new pyplot Figure
        when ``None``); returns it.

        Raises:
            TypeError: ``fig`` is neither None nor a matplotlib Figure or SubFigure (an
                Axes, say: pass ``ax.figure``, or a SubFigure).
        """
        if fig is not None:
            from matplotlib.figure import Figure, SubFigure
            _check.instance("fig", fig, (Figure, SubFigure),
                            "None or a matplotlib Figure or SubFigure")
        from .diagnose import (DEAD_FRACTION, EXPLODING_RATIO, SATURATION_FRACTION,
                               UPDATE_RATIO_HIGH, UPDATE_RATIO_LOW, VANISHING_RATIO)
        if fig is None:
            import matplotlib.pyplot as plt
            fig = plt.figure(figsize=(9, 4.2))
        flagged = {n for f in self.findings for n in f.layers}
        layers = [r for r in self.rows if r["kind"] == "layer"]
        acts = [r for r in self.rows if r["kind"] == "activation"]
        sig = np.array([r["signal_ratio"] for r in layers], float)
        upd = np.array([r["update_ratio"] for r in layers], float)
        panels = ["signal"] + (["update"] if np.isfinite(upd).any() else []) + (
            ["acts"] if acts else [])
        grid = fig.add_gridspec(2, len(panels), height_ratios=(3, 1.3), hspace=0.5,
                                wspace=0.42, left=0.1, right=0.97, top=0.87, bottom=0.03)
        red = np.array([r["name"] in flagged for r in layers], dtype=bool)
        for i, panel in enumerate(panels):
            ax = fig.add_subplot(grid[0, i])
            if panel == "signal":
                _log_points(ax, sig, red, (VANISHING_RATIO, EXPLODING_RATIO))
                ax.set(xlabel="layer (input side first)", ylabel="signal / output layer's")
                ax.set_title("backward signal", fontsize=9)
            elif panel == "update":
                _log_points(ax, upd, red & np.isfinite(upd), (UPDATE_RATIO_LOW, UPDATE_RATIO_HIGH))
                ax.set(xlabel="layer", ylabel="|ΔW| / |W|, one step")
                ax.set_title("update-to-weight ratio", fontsize=9)
            else:
                k = np.arange(len(acts))
                sat = np.nan_to_num(np.array([r["saturated"] for r in acts], float))
                dead = np.nan_to_num(np.array([r["dead"] for r in acts], float))
                ax.bar(k - 0.2, sat, 0.4, color="C1", label="saturated")
                ax.bar(k + 0.2, dead, 0.4, color="C4", label="dead units")
                ax.axhline(SATURATION_FRACTION, color="C1", ls=":", lw=0.8)
                ax.axhline(DEAD_FRACTION, color="C4", ls=":", lw=0.8)
                ax.set(xlabel="activation", ylabel="fraction", ylim=(0, 1.05))
                if max(sat.max(), dead.max()) < 0.01:      # bars too short to see
                    ax.text(0.5, 0.5, "all below 1 %", ha="center",
                            fontsize=8, color="0.4", transform=ax.transAxes)
                ax.legend(fontsize=6.5, loc="upper left")
                ax.set_title("activations", fontsize=9)
        text = fig.add_subplot(grid[1, :])
        text.axis("off")
        lines = [f"{f.severity}: {SYMPTOMS[f.symptom].title}. {f.evidence[0].upper()}"
                 f"{f.evidence[1:]}." for f in self.findings[:3]]
        if len(self.findings) > 3:
            lines.append(f"... and {len(self.findings) - 3} more findings")
        width = 44 * len(panels)
        text.text(0, 1, "\n".join(textwrap.fill(s, width, subsequent_indent="   ")
                                  for s in lines) or "No findings.", va="top", fontsize=8,
                  color="#b00" if self.findings else "0.2", transform=text.transAxes)
        return fig


def _number(name: str, value: Any) -> float:
    """``float(value)`` for a real number (not a bool), NaN and infinity included."""
    if isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isnan(value):
        return float(value)
    return _check.real(name, value, finite=False)


def _log_points(ax, values: np.ndarray, red: np.ndarray, bounds: tuple[float, float]) -> None:
    """Per-layer values on a log axis: positive ones as dots (red where flagged), zeros
    as triangles on the bottom edge, the two thresholds dotted."""
    idx = np.arange(values.size)
    pos = np.isfinite(values) & (values > 0)
    zero = values == 0
    if pos.any():
        ax.semilogy(idx[pos], values[pos], "-", color="0.7", lw=0.8)
    for mask, color in ((pos & ~red, "C0"), (pos & red, "#b00")):
        ax.scatter(idx[mask], values[mask], s=12, color=color, zorder=3)
    ax.set_yscale("log")
    for bound in bounds:
        ax.axhline(bound, color="#b00", ls=":", lw=0.8)
    if zero.any():
        ax.scatter(idx[zero], np.full(zero.sum(), 0.03), marker="v", s=16, color="#b00",
                   transform=ax.get_xaxis_transform(), clip_on=False, zorder=3)
        ax.scatter([], [], marker="v", s=16, color="#b00", label="exactly 0")
        ax.legend(fontsize=6.5, loc="upper left")
    if not pos.any() and not zero.any():
        ax.text(0.5, 0.5, "no data", ha="center", transform=ax.transAxes)
    ax.set_xlim(-0.5, max(values.size - 0.5, 0.5))


def _num(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{v:.3g}" if abs(v) >= 1e-2 or v == 0 else f"{v:.2e}"
