"""How a diagnosis is shown: the report.

* :class:`Report` -- what :func:`companion.diagnose.diagnose` and
  :meth:`companion.diagnose.Watcher.report` return: the findings and the per-layer
  table, as text (``str``), HTML (in a notebook), a figure (:meth:`Report.plot`) and
  plain rows (:attr:`Report.rows`).

The symptom table :data:`SYMPTOMS`, :class:`Symptom` and :class:`Finding` are defined
in :mod:`companion.symptoms` (with the thresholds) and importable from here, the same
objects; the rules that raise findings live in :mod:`companion.diagnose`.
"""
from __future__ import annotations

import html
import math
import textwrap
from typing import Any, Optional, Sequence

import numpy as np

from . import _check
from .symptoms import (DEAD_FRACTION, EXPLODING_RATIO, PRECISION_LOST_FRACTION,
                       PRECISION_ROUNDED_FRACTION, SATURATION_FRACTION, SYMPTOMS,
                       UPDATE_RATIO_HIGH, UPDATE_RATIO_LOW, VANISHING_RATIO, Finding, Symptom,
                       _Measurement, _short_list, _signal_ratios)

__all__ = ["Symptom", "SYMPTOMS", "Finding", "Report"]


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
            A float16 or bfloat16 pass adds ``lost`` (the fraction of the layer's
            activation gradients the format flushes to zero) and ``rounded`` (the
            fraction of its weight's updates that round away) to the layer rows.
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
        _check.instance("measurement", measurement, _Measurement,
                        "the measurement of a companion.diagnose pass")
        findings = _check.sequence("findings", findings, nonempty=False,
                                   what="a list of Finding")
        for i, f in enumerate(findings):
            _check.instance(f"findings[{i}]", f, Finding, "a Finding")
            if f.severity not in ("error", "warning", "info"):
                raise ValueError(f"findings[{i}] must have severity 'error', 'warning' or "
                                 f"'info', got {f.severity!r}")
        loss = None if loss is None else _check_number("loss", loss)   # NaN: a diverged run
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
        _, ratios = _signal_ratios(m)
        rows = [{"name": n, "kind": "layer", "type": t, "signal": m.signal.get(n, nan),
                 "signal_ratio": ratios.get(n, nan),
                 "grad_norm": m.grad_norm.get(n, nan), "weight_norm": m.weight_norm.get(n, nan),
                 "update_ratio": m.update_ratio.get(n, nan)}
                for n, t in m.layer_types.items()]
        if m.low_dtype is not None:
            for r in rows:
                r.update(lost=m.lost.get(r["name"], nan), rounded=m.rounded.get(r["name"], nan))
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
        if self._m.low_dtype is not None:
            parts.append(f"a {self._m.low_dtype} pass, measured again in float32")
        return "; ".join(parts)

    def _precision_keys(self) -> list[str]:
        """The precision columns (row key = header) this report has data for."""
        return [k for k in ("lost", "rounded") if getattr(self._m, k)]

    def __str__(self) -> str:
        lines = ["Diagnosis: " + (self._summary() or "one pass")]
        extra = self._precision_keys()
        fmt = "{:<28} {:<18}" + " {:>10}" * (5 + len(extra))
        lines.append(fmt.format("layer", "type", "signal", "vs out", "|grad W|", "|W|", "update",
                                *extra))
        for r in self.rows:
            if r["kind"] != "activation":
                lines.append(fmt.format(r["name"][:28], r["type"][:18], *(
                    _num(r.get(k, math.nan)) for k in ("signal", "signal_ratio", "grad_norm",
                                                       "weight_norm", "update_ratio",
                                                       *extra))))
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
                    _num(r.get(k, math.nan)) for k in keys]
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
                               "update ratio", *self._precision_keys()),
                              ("signal", "signal_ratio", "grad_norm", "weight_norm",
                               "update_ratio", *self._precision_keys()),
                              layers)]
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
        if fig is None:
            import matplotlib.pyplot as plt
            fig = plt.figure(figsize=(9, 4.2))
        flagged = {n for f in self.findings for n in f.layers}
        layers = [r for r in self.rows if r["kind"] == "layer"]
        acts = [r for r in self.rows if r["kind"] == "activation"]
        sig = np.array([r["signal_ratio"] for r in layers], float)
        upd = np.array([r["update_ratio"] for r in layers], float)
        panels = ["signal"] + (["update"] if np.isfinite(upd).any() else []) + (
            ["acts"] if acts else []) + (["precision"] if self._precision_keys() else [])
        grid = fig.add_gridspec(2, len(panels), height_ratios=(3, 1.3), hspace=0.5,
                                wspace=0.42, left=0.1, right=0.97, top=0.87, bottom=0.03)
        red = np.array([r["name"] in flagged for r in layers], dtype=bool)
        for i, panel in enumerate(panels):
            ax = fig.add_subplot(grid[0, i])
            if panel == "signal":
                _log_points(ax, sig, red, (VANISHING_RATIO, EXPLODING_RATIO))
                ax.set(xlabel="layer (input side first)", ylabel="signal / output layer's")
                ax.set_title("backward signal", fontsize=9)
            elif panel == "precision":
                _precision_bars(ax, layers, self._m.low_dtype)
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
        width = min(44 * len(panels), 132)          # the figure's width: 3 panels
        text.text(0, 1, "\n".join(textwrap.fill(s, width, subsequent_indent="   ")
                                  for s in lines) or "No findings.", va="top", fontsize=8,
                  color="#b00" if self.findings else "0.2", transform=text.transAxes)
        return fig


def _check_number(name: str, value: Any) -> float:
    """``float(value)`` for a real number (not a bool), NaN and infinity included (the
    loss of a diverged run)."""
    if not _check.is_real(value):
        raise _check._type_error(name, "a real number", value)
    return float(value)


def _precision_bars(ax, layers: list[dict], dtype: str) -> None:
    """Per layer: the fraction of activation gradients lost to underflow and of updates
    rounded away, with their thresholds dotted."""
    k = np.arange(len(layers))
    for key, dx, color, bound, label in (
            ("lost", -0.2, "C3", PRECISION_LOST_FRACTION, "gradients lost"),
            ("rounded", 0.2, "C5", PRECISION_ROUNDED_FRACTION, "updates rounded away")):
        values = np.nan_to_num(np.array([r.get(key, math.nan) for r in layers], float))
        ax.bar(k + dx, values, 0.4, color=color, label=label)
        ax.axhline(bound, color=color, ls=":", lw=0.8)
    ax.set(xlabel="layer", ylabel="fraction", ylim=(0, 1.05))
    ax.legend(fontsize=6.5, loc="upper left")
    ax.set_title(f"{dtype}: values lost", fontsize=9)


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
