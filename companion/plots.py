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
import torch
from torch import Tensor

from . import _check

__all__ = ["loss_curves", "layer_profile", "histograms", "trajectory_2d"]

_FIGSIZE = (8, 4)


def _check_ax(ax: Any) -> Any:
    """``None`` or a matplotlib Axes (checked before anything is drawn)."""
    if ax is not None:
        from matplotlib.axes import Axes

        if not isinstance(ax, Axes):
            raise _check._type_error("ax", "a matplotlib Axes or None", ax)
    return ax


def _axes(ax):
    if ax is None:
        import matplotlib.pyplot as plt  # pyplot only to make a figure that notebooks show

        _, ax = plt.subplots(figsize=_FIGSIZE)
    return ax


def _check_reals(name: str, x: Any, *, ndim: Optional[int] = 1, nonempty: bool = True,
           what: str = "a sequence or array of real numbers") -> np.ndarray:
    """``x`` (a list, tuple, numpy array or torch tensor of real numbers) as a float64
    array; NaN and infinity are kept (the plots mark them). ``ndim=None``: any shape."""
    given = x
    if isinstance(x, Tensor):
        if x.is_complex() or x.dtype == torch.bool:
            raise TypeError(f"{name} must hold real numbers, got {_check.show(x)}")
        x = x.detach().cpu().double().numpy()
    elif not isinstance(x, (list, tuple, range, np.ndarray)):
        raise _check._type_error(name, what, x)
    try:
        a = np.asarray(x)
    except ValueError:  # ragged nested lists
        raise ValueError(f"{name} must be {what}, got the ragged {_check.show(x)}") from None
    except (TypeError, RuntimeError) as error:  # e.g. a list of tensors that require grad
        raise TypeError(f"{name} must be {what}, got {_check.show(x)} that numpy cannot "
                        f"convert ({error})") from None
    if a.dtype.kind not in "iuf":
        raise TypeError(f"{name} must hold real numbers, got {_check.show(given)}"
                        + ("" if isinstance(given, np.ndarray) else f" (dtype {a.dtype})"))
    if ndim is not None and a.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimension{'s' if ndim != 1 else ''} "
                         f"({what}), got {_check.show(given)}")
    if nonempty and a.size == 0:
        raise ValueError(f"{name} must not be empty, got {_check.show(given)}")
    return np.asarray(a, dtype=np.float64)


def _check_real_or_nonfinite(name: str, x: Any) -> float:
    """A real number, NaN and infinity allowed (a one-element array or tensor too)."""
    if isinstance(x, (np.ndarray, Tensor)):
        if _check._numel(x) != 1:
            raise ValueError(f"{name} must be a number, got {_check.show(x)}")
        x = x.item()
    if not _check.is_real(x):
        raise _check._type_error(name, "a real number", x)
    return float(x)


def _check_limits(name: str, value: Any) -> tuple[float, float]:
    """A pair (low, high) of finite numbers with low < high."""
    lo, hi = _check.pair(name, value, _check.real)
    if not lo < hi:
        raise ValueError(f"{name} must be a pair (low, high) with low < high, got {value!r}")
    return lo, hi


def _mark_diverged(ax, x: float, y: float, label: str, step: int, color) -> None:
    """An x marker at (x, y) and the text 'label: diverged at step N' next to it."""
    ax.scatter([x], [y], marker="x", s=80, color=color, zorder=5)
    ax.annotate(f"{label}: diverged at step {step}", (x, y), xytext=(5, 5),
                textcoords="offset points", color=color, fontsize="small")


# ---------------------------------------------------------------------- loss curves
_HISTORY = "a History or a sequence or 1-D array of losses"


def _check_losses(label: Any, h: Any) -> tuple[np.ndarray, Optional[int]]:
    """(losses, diverged_at) of a History or of a plain array (diverged = first non-finite)."""
    name = f"histories[{label!r}]"
    if hasattr(h, "losses"):
        diverged_at = getattr(h, "diverged_at", None)
        if diverged_at is not None and not _check.is_int(diverged_at):
            raise TypeError(f"{name}.diverged_at must be an int or None, got {diverged_at!r}")
        return _check_reals(f"{name}.losses", h.losses, what="a 1-D array of losses"), diverged_at
    losses = _check_reals(name, h, what=_HISTORY)
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

    Raises:
        TypeError: ``histories`` not a dict, a history that is neither a History nor a
            sequence/array of real numbers (None included), ``ax`` not an Axes,
            ``logy`` not True/False.
        ValueError: no histories, an empty history or one that is not 1-D.
    """
    histories = _check.mapping("histories", histories)
    runs = {label: _check_losses(label, h) for label, h in histories.items()}
    _check_ax(ax)
    logy = _check.flag("logy", logy)
    ax = _axes(ax)
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

    Raises:
        TypeError: ``values`` neither a dict name -> number nor a sequence/array of real
            numbers, ``ax`` not an Axes, ``logy`` not True/False, ``label`` neither None nor
            a str, ``reference`` neither None, a number nor a sequence of numbers.
        ValueError: no values, ``values`` not 1-D, a ``reference`` that is not finite or
            not one value per layer.
    """
    if isinstance(values, Mapping):
        names = [str(k) for k in values]
        v = np.array([_check_real_or_nonfinite(f"values[{k!r}]", x) for k, x in values.items()],
                     dtype=np.float64)
        if v.size == 0:
            raise ValueError("values must not be empty, got {}")
    else:
        v = _check_reals("values", values, what="a dict name -> number, or a sequence or 1-D array "
                                          "of real numbers")
        names = None
    _check_ax(ax)
    logy = _check.flag("logy", logy)
    if label is not None and not isinstance(label, str):
        raise _check._type_error("label", "a str or None", label)
    ref = None
    if reference is not None:
        if _check.is_real(reference) or (isinstance(reference, (np.ndarray, Tensor))
                                          and reference.ndim == 0):
            ref = _check_real_or_nonfinite("reference", reference)
            ref = np.float64(_check.real("reference", ref))
        else:
            ref = _check_reals("reference", reference, what="a number or one number per layer")
            if ref.shape != v.shape:
                raise ValueError(f"reference must be a number or one value per layer "
                                 f"({v.size}), got shape {ref.shape}")
            _check.finite_values("reference", ref)
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
    if ref is not None:
        if ref.ndim == 0:
            ax.axhline(float(ref), linestyle="--", color="gray")
        else:
            ax.plot(idx, ref, linestyle="--", color="gray")
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

    Raises:
        TypeError: ``activations`` not a dict, an entry that is not an array, tensor or
            sequence of real numbers, ``ax`` neither None, an Axes nor a list/array of
            Axes, ``bins`` not an int, ``range`` not a pair of numbers.
        ValueError: no activations, ``bins`` < 1, ``range`` not finite with low < high,
            fewer Axes than layers.
    """
    activations = _check.mapping("activations", activations)
    data = {str(k): _check_reals(f"activations[{k!r}]", a, ndim=None, nonempty=False,
                           what="an array or tensor of activations").ravel()
            for k, a in activations.items()}
    multiples = ax is not None and not hasattr(ax, "plot")
    if multiples:
        _check_axes_array(ax)
    else:
        _check_ax(ax)
    bins = _check.integer("bins", bins, minimum=1)
    if range is not None:
        range = _check_limits("range", range)
    finite = {k: a[np.isfinite(a)] for k, a in data.items()}
    if range is None:
        every = np.concatenate(list(finite.values()) + [np.empty(0)])
        lo, hi = (float(every.min()), float(every.max())) if every.size else (-1.0, 1.0)
        range = (lo - 0.5, hi + 0.5) if lo == hi else (lo, hi)
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


def _check_axes_array(ax: Any) -> None:
    """A list, tuple or array of matplotlib Axes (small multiples)."""
    from matplotlib.axes import Axes

    what = "a matplotlib Axes, a list or array of Axes, or None"
    if not isinstance(ax, (list, tuple, np.ndarray)):
        raise _check._type_error("ax", what, ax)
    for a in np.ravel(np.asarray(ax, dtype=object)):
        if not isinstance(a, Axes):
            raise _check._type_error("ax", what + " (every item an Axes)", a)


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
    than 3 decades on the grid) or explicit levels (increasing). ``resolution``: grid
    points per axis. Returns ``ax``.

    Raises:
        TypeError: ``f`` not callable (or a class), ``paths`` not a dict, a path that is
            not an array of numbers, ``ax`` not an Axes, limits not pairs of numbers,
            ``levels`` neither an int nor a sequence of numbers, ``resolution`` not an
            int, ``f`` returning something that is not real numbers.
        ValueError: a path not of shape (k, 2) with k >= 1, limits not finite with
            low < high, ``levels`` < 1 or not finite and increasing, ``resolution`` < 2,
            ``f`` returning an array that does not fit the grid.
    """
    _check.function("f", f, "a callable f(x1, x2)")
    paths = _check.mapping("paths", paths, nonempty=False)
    points = {label: _check_path(label, path) for label, path in paths.items()}
    _check_ax(ax)
    xlim = _check_limits("xlim", xlim)
    ylim = _check_limits("ylim", ylim)
    if _check.is_int(levels):
        _check.integer("levels", levels, minimum=1)
    else:
        explicit = _check_reals("levels", levels,
                                what="an int or an increasing sequence of numbers")
        _check.finite_values("levels", explicit)
        if explicit.size > 1 and not (np.diff(explicit) > 0).all():
            raise ValueError(f"levels must be increasing, got {_check.show(levels)}")
    resolution = _check.integer("resolution", resolution, minimum=2)
    ax = _axes(ax)
    x1, x2 = np.meshgrid(np.linspace(*xlim, resolution), np.linspace(*ylim, resolution))
    z = f(x1, x2)
    if isinstance(z, Tensor):
        z = z.detach().cpu().numpy()
    z = np.asarray(z)
    if z.dtype.kind not in "iuf":
        raise TypeError(f"f must return real numbers on the grid (numpy arrays x1, x2 of "
                        f"shape {x1.shape}), got {_check.show(z)}")
    try:
        z = np.broadcast_to(np.asarray(z, dtype=np.float64), x1.shape)
    except ValueError:
        raise ValueError(f"f must return an array of the grid's shape {x1.shape} (it is "
                         f"called on numpy grids x1, x2), got shape {z.shape}") from None
    z = np.ma.masked_invalid(z)
    if _check.is_int(levels) and z.count() and z.min() > 0 \
            and z.max() / z.min() > 1e3:
        levels = np.geomspace(z.min(), z.max(), int(levels))
    if z.count():
        ax.contour(x1, x2, z, levels=levels, cmap="viridis", linewidths=0.8)
    for label, p in points.items():
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


def _check_path(label: Any, path: Any) -> np.ndarray:
    """A path (an (n, 2) array of points, or anything with ``.points``) as float64."""
    name = f"paths[{label!r}]"
    if hasattr(path, "points"):
        name, path = name + ".points", path.points
    p = _check_reals(name, path, ndim=None, what="an (n, 2) array of points")
    if p.ndim != 2 or p.shape[1] != 2 or p.shape[0] < 1:
        raise ValueError(f"{name} must be an (n, 2) array of points with n >= 1, "
                         f"got {_check.show(p)}")
    return p
