r"""Small matplotlib helpers for the book's recurring figures.

Each takes ``ax=None`` (a new 8x4-inch figure is made) or an existing Axes, draws on it
and returns it; none calls ``plt.show`` or changes rcParams. Each is built never to
leave an empty axis: diverged runs, zeros on a log axis and NaN/inf values are drawn
with a marker and a text saying what happened, rather than silently dropped.

* :func:`loss_curves` -- loss against step for several :class:`companion.train.History`.
* :func:`layer_profile` -- a per-layer quantity (gradient norm, activation std) against
  layer index, input side first.
* :func:`histograms` -- per-layer activation histograms as a ridge plot (one axis) or as
  small multiples (an array of axes).
* :func:`trajectory_2d` -- optimizer paths over the contours of a 2-D loss, like d2l's
  ``show_trace_2d``.

Example::

    from companion import data, nets, plots, train
    x, y = data.teacher_regression(256, 8)
    runs = {f"lr={lr}": train.train(nets.mlp(8, 1, 32, 2, seed=0), x, y, steps=100, lr=lr)
            for lr in (0.01, 0.1, 30.0)}
    ax = plots.loss_curves(runs)           # lr=30.0 is marked "diverged at step N"
"""
from __future__ import annotations

from typing import Any, Callable, Mapping, Optional, Sequence, Union

import numpy as np

__all__ = ["loss_curves", "layer_profile", "histograms", "trajectory_2d"]

_FIGSIZE = (8, 4)


def _axes(ax):
    if ax is None:
        import matplotlib.pyplot as plt  # pyplot only to make a figure that notebooks show

        _, ax = plt.subplots(figsize=_FIGSIZE)
    return ax


def _nonempty(mapping: object, name: str) -> Mapping:
    if not isinstance(mapping, Mapping):
        raise TypeError(f"{name} must be a dict of label -> values, got {type(mapping).__name__}")
    if not mapping:
        raise ValueError(f"{name} must not be empty")
    return mapping


def _mark_diverged(ax, x: float, y: float, label: str, step: int, color) -> None:
    """An x marker at (x, y) and the text 'label: diverged at step N' next to it."""
    ax.scatter([x], [y], marker="x", s=80, color=color, zorder=5)
    ax.annotate(f"{label}: diverged at step {step}", (x, y), xytext=(5, 5),
                textcoords="offset points", color=color, fontsize="small")


# ---------------------------------------------------------------------- loss curves
def _losses(h: Any) -> tuple[np.ndarray, Optional[int]]:
    """(losses, diverged_at) of a History or of a plain array (diverged = first non-finite)."""
    if hasattr(h, "losses"):
        return np.asarray(h.losses, dtype=np.float64), getattr(h, "diverged_at", None)
    losses = np.asarray(h, dtype=np.float64).ravel()
    bad = np.flatnonzero(~np.isfinite(losses))
    return losses, (int(bad[0]) if bad.size else None)


def loss_curves(histories: Mapping[str, Any], ax=None, *, logy: bool = True):
    """One line per run: loss against step.

    ``histories`` maps a label to a :class:`companion.train.History` (or a 1-D array of
    losses, which counts as diverged at its first non-finite entry). A diverged run's line
    stops at its last finite loss, an x marks step ``diverged_at`` (at the height of the
    last finite loss; at the top of the other runs' data if it has none) and the text
    "label: diverged at step N" sits beside it and in the legend. Log y unless ``logy=False``
    or some finite loss is <= 0. Returns ``ax``.
    """
    histories = _nonempty(histories, "histories")
    ax = _axes(ax)
    runs = {label: _losses(h) for label, h in histories.items()}
    finite = np.concatenate([l[np.isfinite(l)] for l, _ in runs.values()] + [np.empty(0)])
    top = float(finite.max()) if finite.size else 1.0
    for label, (losses, d) in runs.items():
        end = len(losses) if d is None else min(d, len(losses))
        steps = np.arange(end)
        text = str(label) if d is None else f"{label}: diverged at step {d}"
        (line,) = ax.plot(steps, losses[:end], label=text)
        if d is not None:
            before = losses[:end][np.isfinite(losses[:end])]
            _mark_diverged(ax, d, float(before[-1]) if before.size else top, str(label), d,
                           line.get_color())
    if logy and finite.size and finite.min() > 0:
        ax.set_yscale("log")
    if not finite.size:
        ax.set_ylim(0.0, 2.0 * top)
        ax.text(0.5, 0.5, "no finite loss", transform=ax.transAxes, ha="center")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.legend(fontsize="small")
    return ax


# -------------------------------------------------------------------- layer profile
def layer_profile(values: Union[Mapping[str, float], Sequence[float], np.ndarray], ax=None, *,
                  logy: bool = True, label: Optional[str] = None,
                  reference: Union[float, Sequence[float], None] = None):
    """Per-layer values (e.g. gradient norms) against layer index 1..L, input side first.

    ``values``: a dict (its keys become the x tick labels) or a sequence. On a log axis
    values <= 0 are clipped to a floor (a tenth of the smallest positive value) and drawn
    with a down-triangle; NaN and inf are drawn as a red X at the top of the data. Either
    case adds a text naming the layers. ``reference``: a number (horizontal dashed line)
    or one value per layer (dashed line), e.g. a theoretical prediction. Returns ``ax``.
    """
    if isinstance(values, Mapping):
        names = [str(k) for k in values]
        v = np.array([float(x) for x in values.values()], dtype=np.float64)
    else:
        v = np.asarray(values, dtype=np.float64).ravel()
        names = None
    if v.size == 0:
        raise ValueError("values must not be empty")
    ax = _axes(ax)
    idx = np.arange(1, v.size + 1)
    finite = np.isfinite(v)
    positive = v[finite & (v > 0)]
    use_log = bool(logy)
    floor = float(positive.min()) / 10 if positive.size else 1e-12
    clipped = finite & (v <= 0) if use_log else np.zeros_like(finite)
    shown = np.where(finite, v, np.nan)
    shown[clipped] = floor
    top = float(np.nanmax(shown)) if finite.any() else 1.0
    (line,) = ax.plot(idx, shown, marker="o", label=label)
    notes = []
    if clipped.any():
        ax.scatter(idx[clipped], shown[clipped], marker="v", s=60, color=line.get_color(), zorder=5)
        notes.append("<= 0 (clipped): " + ", ".join(_names(names, idx, clipped)))
    if (~finite).any():
        ax.scatter(idx[~finite], np.full((~finite).sum(), top), marker="X", s=80, color="red",
                   zorder=5)
        notes.append("non-finite: " + ", ".join(
            f"{n}={x}" for n, x in zip(_names(names, idx, ~finite), v[~finite])))
    if notes:
        ax.text(0.01, 0.02, "\n".join(notes), transform=ax.transAxes, fontsize="small",
                va="bottom", color="red")
    if reference is not None:
        ref = np.asarray(reference, dtype=np.float64)
        if ref.ndim == 0:
            ax.axhline(float(ref), linestyle="--", color="gray")
        elif ref.shape == v.shape:
            ax.plot(idx, ref, linestyle="--", color="gray")
        else:
            raise ValueError(f"reference must be a number or one value per layer "
                             f"({v.size}), got shape {ref.shape}")
    if use_log:
        ax.set_yscale("log")
    ax.set_xticks(idx, names if names is not None else [str(i) for i in idx])
    ax.set_xlabel("layer (input side first)")
    if label is not None:
        ax.legend(fontsize="small")
    return ax


def _names(names, idx, mask) -> list[str]:
    return [names[i - 1] if names is not None else f"layer {i}" for i in idx[mask]]


# ----------------------------------------------------------------------- histograms
def histograms(activations: Mapping[str, Any], ax=None, *, bins: int = 50,
               range: Optional[tuple[float, float]] = None):
    """Per-layer histograms of activations on a shared x range.

    ``ax`` an Axes (or ``None``): a ridge plot, one row per layer, first layer on top,
    each histogram scaled to its own peak. ``ax`` an array or list of Axes (at least one
    per layer): small multiples, one layer per axis. ``range`` defaults to the min and max
    of all finite values; non-finite values are left out and counted in the row's text.
    Tensors are accepted (detached, moved to CPU). Returns ``ax``.
    """
    activations = _nonempty(activations, "activations")
    data = {str(k): _as_array(a) for k, a in activations.items()}
    finite = {k: a[np.isfinite(a)] for k, a in data.items()}
    if range is None:
        every = np.concatenate(list(finite.values()) + [np.empty(0)])
        lo, hi = (float(every.min()), float(every.max())) if every.size else (-1.0, 1.0)
        range = (lo - 0.5, hi + 0.5) if lo == hi else (lo, hi)
    multiples = ax is not None and not hasattr(ax, "plot")
    axes = list(np.ravel(ax)) if multiples else [_axes(ax)] * len(data)
    if len(axes) < len(data):
        raise ValueError(f"ax must hold at least one Axes per layer ({len(data)}), got {len(axes)}")
    n = len(data)
    for i, (name, a) in enumerate(data.items()):
        counts, edges = np.histogram(finite[name], bins=bins, range=range)
        bad = a.size - finite[name].size
        note = f" ({bad} non-finite)" if bad else " (empty)" if a.size == 0 else ""
        if multiples:
            axes[i].stairs(counts, edges, fill=True, alpha=0.7)
            axes[i].set_title(name + note, fontsize="small")
        else:
            base = n - 1 - i                           # first layer on top
            peak = counts.max() if counts.size and counts.max() > 0 else 1
            axes[i].stairs(base + 0.9 * counts / peak, edges, baseline=base, fill=True, alpha=0.7)
            if note:
                axes[i].text(edges[-1], base + 0.3, note.strip(), ha="right", fontsize="small")
    if not multiples:
        axes[0].set_yticks(np.arange(n), list(data)[::-1])
        axes[0].set_ylim(-0.1, n)
        axes[0].set_xlabel("activation")
        return axes[0]
    return ax


def _as_array(a: Any) -> np.ndarray:
    if hasattr(a, "detach"):
        a = a.detach().cpu().double().numpy()
    return np.asarray(a, dtype=np.float64).ravel()


# -------------------------------------------------------------------- trajectories
def trajectory_2d(f: Callable[[np.ndarray, np.ndarray], np.ndarray],
                  paths: Mapping[str, Any], ax=None, *, xlim: tuple[float, float],
                  ylim: tuple[float, float], levels: Union[int, Sequence[float]] = 30,
                  resolution: int = 200):
    """Contours of ``f(x1, x2)`` over ``xlim`` x ``ylim`` with optimizer paths on top.

    ``f`` is vectorised over numpy grids (e.g. ``companion.surfaces.get("ravine").f``).
    ``paths`` maps a label to an (n, 2) array of points p_0..p_{n-1} (or anything with
    ``.points``, such as a :class:`companion.surfaces.Trajectory`). A path is cut before
    its first non-finite point N, and an x with "label: diverged at step N" marks its last
    finite point (moved onto the frame if it lies outside the limits). ``levels``: a number of contour levels (log-spaced when f > 0 spans more
    than 3 decades on the grid) or explicit levels. Returns ``ax``.
    """
    if not callable(f):
        raise TypeError(f"f must be callable f(x1, x2), got {f!r}")
    if not isinstance(paths, Mapping):
        raise TypeError(f"paths must be a dict of label -> (n, 2) array, got {type(paths).__name__}")
    ax = _axes(ax)
    x1, x2 = np.meshgrid(np.linspace(*xlim, resolution), np.linspace(*ylim, resolution))
    z = np.asarray(f(x1, x2), dtype=np.float64)
    z = np.ma.masked_invalid(np.broadcast_to(z, x1.shape))
    if isinstance(levels, (int, np.integer)) and z.count() and z.min() > 0 \
            and z.max() / z.min() > 1e3:
        levels = np.geomspace(z.min(), z.max(), int(levels))
    if z.count():
        ax.contour(x1, x2, z, levels=levels, cmap="viridis", linewidths=0.8)
    for label, path in paths.items():
        p = np.asarray(getattr(path, "points", path), dtype=np.float64).reshape(-1, 2)
        bad = np.flatnonzero(~np.isfinite(p).all(axis=1))
        end = int(bad[0]) if bad.size else len(p)
        (line,) = ax.plot(p[:end, 0], p[:end, 1], marker="o", markersize=3, label=str(label))
        if bad.size:
            x, y = p[end - 1] if end > 0 else (np.mean(xlim), np.mean(ylim))
            x, y = np.clip(x, *sorted(xlim)), np.clip(y, *sorted(ylim))  # keep the x in view
            _mark_diverged(ax, x, y, str(label), end, line.get_color())
    ax.set_xlim(*xlim)
    ax.set_ylim(*ylim)
    ax.set_xlabel("$x_1$")
    ax.set_ylabel("$x_2$")
    if paths:
        ax.legend(fontsize="small")
    return ax
