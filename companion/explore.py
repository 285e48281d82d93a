"""One experiment, two lives: live ipywidgets in a notebook, precomputed frames in the book.

An experiment is a drawing function of named parameters plus a description of its
controls. :func:`explore` turns the pair into

* **live** controls (ipywidgets) in Jupyter, JupyterLab, VS Code and Colab: the figure
  redraws in place, and the settings one step away are drawn ahead while the kernel
  is idle; an ``expensive=True`` experiment runs on a button in a background thread
  with a progress bar, so the notebook never freezes (Runs go one at a time, start
  when the kernel's cells are done, and pause the drawing ahead while they compute);
* a **static** experiment in the built HTML: every point of the control grid is drawn
  once at build time and shipped as images with native ``<input type=range>`` /
  ``<select>`` controls and a few lines of inline script; moving a control swaps the
  image with no kernel and no network.

The book's build sets ``COMPANION_EXPLORE_MODE=static`` (``book/_ext/offline_book.py``),
so a plain ``jupyter-book build .`` produces the static form and nobody sets a flag.

Example::

    from companion.explore import explore, Slider, Choice

    def draw(fig, depth, activation):
        ax = fig.subplots()
        ax.plot(...)

    explore(draw, {"depth": Slider([2, 5, 10, 20], value=10),
                   "activation": Choice(["sigmoid", "tanh"])},
            name="backward-signal")

Controls are *discrete* in both modes (a slider walks a list of values), so the live
reader and the static reader see exactly the same frames.
"""
from __future__ import annotations

import base64
import contextlib
import gc
import hashlib
import html
import inspect
import io
import itertools
import json
import os
import queue
import sys
import threading
import time
import weakref
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg, RendererAgg
from matplotlib.figure import Figure, SubplotParams

from . import _check

__all__ = ["Slider", "Choice", "Experiment", "explore", "MAX_FRAMES", "MODE_VARIABLE"]

#: The largest control grid an experiment may have. The static book ships one image
#: per grid point (about 10-30 kB each), and a page must stay under ~5 MB.
MAX_FRAMES = 200
_CREATED: "weakref.WeakSet[Experiment]" = weakref.WeakSet()
#: Environment variable that selects the mode: "static" or "live".
MODE_VARIABLE = "COMPANION_EXPLORE_MODE"


def _fmt(value: Any) -> str:
    if isinstance(value, (float, np.floating)):
        return f"{float(value):.4g}"
    return str(value)


@dataclass(frozen=True)
class Slider:
    """A numeric control that walks a list of values.

    Args:
        values: the values, in slider order (e.g. ``[1, 2, 5, 10, 20, 50]`` or
            ``np.geomspace(0.1, 10, 9)``): a non-empty list, tuple, range or 1-D array of
            finite real numbers, no value twice.
        value: the initial value; must be one of ``values`` (default: the middle one).
        label: text shown beside the control (default: the parameter's name).
        marks: ``{value: text}`` reference points named under the slider, e.g.
            ``{0.5: "2/λ_max"}`` (a value may lie outside the slider's range).

    Raises:
        TypeError: ``values`` not a list/tuple/range/1-D array (a str included), a value,
            ``value`` or mark that is not a real number, a ``label`` or mark text that is
            not a str, ``marks`` not a dict.
        ValueError: no values, a value twice, a NaN or infinite value or mark, ``value``
            not among ``values``.
    """

    values: Sequence[float]
    value: float | None = None
    label: str | None = None
    marks: Mapping[float, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        values = self.values
        if isinstance(values, np.ndarray):
            if values.ndim != 1:
                raise ValueError(f"values must be a 1-D array of numbers, got {_check.show(values)}")
            items = list(values)
            if not items:
                raise ValueError(f"values must not be empty, got {_check.show(values)}")
        else:
            items = _check.sequence("values", values,
                                    what="a list, tuple or 1-D array of numbers")
        numbers = [_check.real(f"values[{i}]", v) for i, v in enumerate(items)]
        _no_repeats("values", [repr(v) for v in numbers], items)
        if self.value is not None:
            _check.real("value", self.value)
            if _index_of(items, self.value) is None:
                raise ValueError(f"value must be one of {_shown(items)}, got {self.value!r}")
        _optional_text("label", self.label)
        _check.mapping("marks", self.marks, nonempty=False)
        for at, text in self.marks.items():
            _check.real("marks key", at)
            _check.string(f"marks[{at!r}]", text)

    def items(self) -> list[tuple[str, Any]]:
        return [(_fmt(v), v.item() if isinstance(v, np.generic) else v) for v in self.values]

    def default_index(self, name: str) -> int:
        """The index of the initial value among ``values``.

        Raises:
            TypeError: ``name`` (the control's name, for messages) not a str.
        """
        _check.string("name", name)
        return _default_index(name, self.values, self.value, len(self.values) // 2)


@dataclass(frozen=True)
class Choice:
    """A control that picks one of several options.

    Args:
        options: a non-empty list or tuple of values (shown with ``str``; no two with
            the same text), or a non-empty ``{label: value}`` dict with str labels.
        value: the initial value (default: the first option); must be one of the options'
            values.
        label: text shown beside the control (default: the parameter's name).

    Raises:
        TypeError: ``options`` neither a list/tuple nor a dict (a str included: it is
            not a list of its letters), a dict label or ``label`` that is not a str.
        ValueError: no options, two options shown the same, ``value`` not an option.
    """

    options: Sequence[Any] | Mapping[str, Any]
    value: Any = None
    label: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.options, Mapping):
            _check.mapping("options", self.options)
            for key in self.options:
                _check.string("options key", key)
        else:
            items = _check.sequence("options", self.options,
                                    what="a list or tuple of options, or a dict label -> value")
            _no_repeats("options", [str(v) for v in items], items)
        values = [v for _, v in self.items()]
        if self.value is not None and _index_of(values, self.value) is None:
            raise ValueError(f"value must be one of the options {_shown(values)}, got {self.value!r}")
        _optional_text("label", self.label)

    def items(self) -> list[tuple[str, Any]]:
        if isinstance(self.options, Mapping):
            return [(str(k), v) for k, v in self.options.items()]
        return [(str(v), v) for v in self.options]

    def default_index(self, name: str) -> int:
        """The index of the initial value among the options.

        Raises:
            TypeError: ``name`` (the control's name, for messages) not a str.
        """
        _check.string("name", name)
        return _default_index(name, [v for _, v in self.items()], self.value, 0)


def _optional_text(name: str, value: Any) -> None:
    if value is not None and not isinstance(value, str):
        raise _check._type_error(name, "a str or None", value)


def _shown(values: Sequence[Any]) -> str:
    return _check.show([v.item() if isinstance(v, np.generic) else v for v in values])


def _no_repeats(name: str, keys: list[str], items: list[Any]) -> None:
    """Refuse two entries with the same key (the reader could not tell them apart)."""
    seen: set[str] = set()
    for label, item in zip(keys, items):
        if label in seen:
            raise ValueError(f"{name} must not repeat an entry, got {item!r} twice")
        seen.add(label)


def _same(v: Any, value: Any) -> bool:
    if v is value:
        return True
    if _check._is_real(v) and _check._is_real(value):
        return bool(v == value) or bool(np.isclose(float(v), float(value)))
    try:
        return bool(v == value)
    except Exception:  # an array option compared element-wise: not the same object
        return False


def _index_of(values: Sequence[Any], value: Any) -> int | None:
    for i, v in enumerate(values):
        if _same(v, value):
            return i
    return None


def _default_index(name: str, values: Sequence[Any], value: Any, fallback: int) -> int:
    if value is None:
        return fallback
    i = _index_of(values, value)
    if i is None:
        raise ValueError(f"control {name!r}: value must be one of {list(values)}, got {value!r}")
    return i


def _check_controls(controls: Any) -> dict:
    controls = _check.mapping("controls", controls)
    for name, control in controls.items():
        _check.string("controls key", name, nonempty=True)
        if not isinstance(control, (Slider, Choice)):
            raise _check._type_error(f"controls[{name!r}]", "a Slider or a Choice", control)
        control.default_index(name)
    return dict(controls)


def _check_draw(draw: Callable[..., Any], names: list[str]) -> bool:
    """Refuse a ``draw`` that ``draw(fig, **params)`` cannot call with exactly the controls'
    names; True if it takes ``progress``. A callable without a signature is not checked."""
    try:
        signature = inspect.signature(draw)
    except (TypeError, ValueError):
        return False
    P = inspect.Parameter
    params = list(signature.parameters.values())
    positional = [p for p in params if p.kind in (P.POSITIONAL_ONLY, P.POSITIONAL_OR_KEYWORD,
                                                   P.VAR_POSITIONAL)]
    if not positional:
        raise ValueError(f"draw must take the figure as its first argument, "
                         f"draw{signature} takes none")
    accepts_progress = "progress" in signature.parameters
    if accepts_progress and "progress" in names:
        raise ValueError("controls must not have a control named 'progress': draw takes "
                         "progress as its progress callback")
    kwargs = dict.fromkeys(names)
    if accepts_progress:
        kwargs["progress"] = None
    try:
        signature.bind(None, **kwargs)
    except TypeError:
        rest = [p for p in params if p is not positional[0]]
        takes = [p.name for p in rest
                 if p.kind in (P.POSITIONAL_OR_KEYWORD, P.KEYWORD_ONLY) and p.name != "progress"]
        required = [p.name for p in rest if p.default is P.empty
                    and p.kind in (P.POSITIONAL_OR_KEYWORD, P.KEYWORD_ONLY, P.POSITIONAL_ONLY)
                    and p.name != "progress"]
        any_name = any(p.kind is P.VAR_KEYWORD for p in params)
        unknown = [] if any_name else [n for n in names if n not in takes]
        missing = [n for n in required if n not in names]
        detail = "; ".join(part for part in (
            f"controls draw does not take: {unknown}" if unknown else "",
            f"parameters of draw that no control sets: {missing}" if missing else "") if part)
        raise ValueError(f"draw must take the controls' names as keyword arguments, "
                         f"draw(fig, **params): draw{signature} takes {takes}, the controls "
                         f"are {names}"
                         + (f" ({detail})" if detail else "")) from None
    return accepts_progress


class Experiment:
    """A drawing function with its controls; see :func:`explore` (whose arguments these
    are, with ``name`` a non-empty str and ``title``, ``expensive``, ``figsize``, ``dpi``
    and ``caption`` required).

    Raises:
        TypeError: as :func:`explore`.
        ValueError: as :func:`explore`.
    """

    def __init__(self, draw: Callable[..., Any], controls: Mapping[str, Slider | Choice], *,
                 name: str, title: str | None, expensive: bool, figsize: tuple[float, float],
                 dpi: int, caption: str | None, constrained: bool = False):
        _check.function("draw", draw, "a callable draw(fig, **params)")
        controls = _check_controls(controls)
        accepts_progress = _check_draw(draw, list(controls))
        _check.string("name", name, nonempty=True)
        _optional_text("title", title)
        _check.flag("expensive", expensive)
        figsize = _check.pair("figsize", figsize, _check.positive)
        dpi = _check.integer("dpi", dpi, minimum=1)
        _optional_text("caption", caption)
        constrained = _check.flag("constrained", constrained)
        self.draw = draw
        self.controls = controls
        self.name = name
        self.title = title
        self.caption = caption
        self.expensive = bool(expensive)
        self.figsize = figsize
        self.dpi = dpi
        self.constrained = constrained
        self.names = list(self.controls)
        self.options = [self.controls[n].items() for n in self.names]
        self.shape = tuple(len(o) for o in self.options)
        self.grid_size = int(np.prod(self.shape))
        if self.grid_size > MAX_FRAMES:
            raise ValueError(
                f"controls of experiment {name!r} make a grid of {self.grid_size} points "
                f"({' x '.join(map(str, self.shape))} for {', '.join(self.names)}); the static book "
                f"precomputes at most MAX_FRAMES = {MAX_FRAMES}: use fewer values per control")
        self.default = tuple(self.controls[n].default_index(n) for n in self.names)
        self._accepts_progress = accepts_progress
        self._cache: dict[tuple[int, ...], bytes] = {}
        self._pending: list[tuple[int, ...]] = []
        self._prefetch_scheduled = False
        self._layout: tuple | None = None          # how the last frame laid out its axes
        self._ready: "_LayoutFigure | None" = None  # axes built ahead for the next frame
        # draw() may lay settings out in a few ways (a report with 2 or 3 panels): the
        # other layouts seen lately, by their first layout call, and axes built for them
        self._other_layouts: dict = {}
        self._other_ready: dict = {}
        _CREATED.add(self)  # lets tests/benchmarks/bench_book.py time every experiment of a chapter

    def _index(self, index: Any) -> tuple[int, ...]:
        """``index`` as a tuple of ints, one option index per control, each in range (a few
        microseconds: it runs on every frame)."""
        if isinstance(index, np.ndarray) and index.ndim == 1:
            index = index.tolist()
        if not isinstance(index, (tuple, list, range)):
            raise _check._type_error("index", f"a tuple of option indices, one per control "
                                              f"{self.names}", index)
        if len(index) != len(self.shape):
            raise ValueError(f"index must have one option index per control {self.names}, "
                             f"got {_check.show(index)}")
        return tuple(_check.integer(f"index[{axis}] (control {self.names[axis]!r})", i,
                                    minimum=0, maximum=n - 1)
                     for axis, (i, n) in enumerate(zip(index, self.shape)))

    # -- drawing -------------------------------------------------------------------
    def params(self, index: Sequence[int]) -> dict[str, Any]:
        """The keyword arguments for one grid point (a tuple of option indices).

        Raises:
            TypeError: ``index`` not a tuple/list of ints.
            ValueError: not one index per control, or an index out of its control's range.
        """
        index = self._index(index)
        return {n: opts[i][1] for n, opts, i in zip(self.names, self.options, index)}

    def figure(self, index: Sequence[int] | None = None, progress: Callable[[float], None] | None = None) -> Figure:
        """Draw one grid point into a new Figure (no pyplot, so nothing is shown by itself).

        ``index``: option indices, one per control (default: the initial setting);
        ``progress``: None or a callable taking a fraction, handed to a ``draw`` that takes
        ``progress``.

        Raises:
            TypeError: ``index`` not a tuple/list of ints, ``progress`` not callable.
            ValueError: a bad ``index`` (see :meth:`params`).
            RuntimeError: ``draw`` left the figure empty.
        """
        index = self.default if index is None else self._index(index)
        if progress is not None:
            _check.function("progress", progress, "a callable progress(fraction) or None")
        kwargs = self.params(index)
        if self._accepts_progress:
            kwargs["progress"] = progress or (lambda fraction: None)
        ready, self._ready = self._ready, None
        fig = None
        while ready is not None:
            try:
                fig = self._draw_into(ready, kwargs)
            except _LayoutDiverged as diverged:  # at draw()'s first layout call that differs
                # axes built for the layout that call starts, if it is one seen lately
                fig, ready = None, self._other_ready.pop(diverged.first, None)
                continue
            if not fig._replayed_all():
                fig = None
            break
        if fig is None:
            # draw() laid this setting out differently from the frame the axes were built
            # for (unused ready-made axes would show): draw it on a plain figure
            fig = self._draw_into(self._new_figure(), kwargs)
        if not fig.axes and not fig.texts and not fig.images:
            raise RuntimeError(f"experiment {self.name!r}: draw() left the figure empty for {kwargs}")
        return fig

    def _new_figure(self) -> "_LayoutFigure":
        return _LayoutFigure(figsize=self.figsize, dpi=self.dpi,
                             layout="constrained" if self.constrained else None,
                             subplotpars=None if self.constrained else _MARGINS)

    def _draw_into(self, fig: "_LayoutFigure", kwargs: dict) -> "_LayoutFigure":
        # A fixed title height: matplotlib otherwise measures every tick label of every axes
        # to place each title (~0.1 s of a busy frame); titles sit where they would anyway.
        with matplotlib.rc_context(_FRAME_RC):
            self.draw(fig, **kwargs)
        _plain_log_ticks(fig)
        return fig

    def _build_ready(self) -> bool:
        """Lay out, ahead of time, the axes of the next frame (and their tick marks),
        as the last frame's ``draw`` laid them out: creating axes and ticks is about a
        quarter of a cold frame and does not depend on the setting. Live mode does it in
        the kernel's idle time; :meth:`figure` takes the result, and falls back to a
        plain figure if ``draw`` lays the new setting out differently. One figure per
        call: first for the last frame's layout, then for each other layout of the last
        few (:meth:`_remember_layout`). False when there is nothing to build (no frame
        drawn yet, layouts that cannot be replayed, or every figure already waiting)."""
        if self._ready is None and self._layout is not None:
            with matplotlib.rc_context(_FRAME_RC):
                self._ready = self._new_figure()._replay(self._layout)
            return self._ready is not None
        for first, plan in self._other_layouts.items():   # then one other layout per call
            if first not in self._other_ready and first != _first_call(self._layout):
                with matplotlib.rc_context(_FRAME_RC):
                    ready = self._new_figure()._replay(plan)
                if ready is not None:
                    self._other_ready[first] = ready
                    return True
        return False

    def _remember_layout(self, plan: tuple | None) -> None:
        """``plan`` (this frame's layout) becomes the one the next frame is built for;
        the previous one is kept among the other layouts (at most 3, the latest)."""
        if plan is None:
            self._layout = None
            return
        first, old = _first_call(plan), self._layout
        if old is not None and _first_call(old) != first:
            self._other_layouts.pop(_first_call(old), None)
            self._other_layouts[_first_call(old)] = old
            old = self._other_layouts.pop(first, None)
            spare = self._other_ready.pop(first, None)
            if self._ready is None:         # built for this layout: the next frame's now
                self._ready = spare
            while len(self._other_layouts) > 3:
                self._other_ready.pop(next(iter(self._other_layouts)), None)
                self._other_layouts.pop(next(iter(self._other_layouts)))
        self._layout = _more_ticks(plan, old)

    def render(self, index: Sequence[int] | None = None, *, progress=None, compact: bool = False) -> bytes:
        """PNG bytes for one grid point; ``compact`` quantizes colours (for the static book).

        Raises:
            TypeError: as :meth:`figure`, or ``compact`` not True/False.
            ValueError: as :meth:`figure`.
        """
        index = self.default if index is None else self._index(index)
        if progress is not None:
            _check.function("progress", progress, "a callable progress(fraction) or None")
        compact = _check.flag("compact", compact)
        if index in self._cache and not compact:
            return self._cache[index]
        # (not around an expensive draw(): that trains for seconds; its raster is covered)
        with contextlib.nullcontext() if self.expensive else _young_garbage():
            return self._rasterize(index, self.figure(index, progress), compact=compact)

    def _rasterize(self, index: tuple[int, ...], fig: Figure, *, compact: bool = False) -> bytes:
        with _RASTER_LOCK, _young_garbage():  # one shared renderer per frame size: one at a time
            canvas = _SharedRendererCanvas(fig)
            canvas.draw()
            png = _encode(np.asarray(canvas.buffer_rgba()), compact=compact)
            if isinstance(fig, _LayoutFigure):   # drawn: its tick marks are counted now
                self._remember_layout(fig._layout_plan())
        if not compact:
            self._cache[index] = png
        return png

    # -- static form ---------------------------------------------------------------
    def static_html(self) -> str:
        """The whole experiment as self-contained HTML: one image per grid point."""
        images: list[str] = []
        seen: dict[str, int] = {}
        frames: list[int] = []
        for index in itertools.product(*(range(n) for n in self.shape)):
            encoded = base64.b64encode(self.render(index, compact=True)).decode("ascii")
            digest = hashlib.sha1(encoded.encode()).hexdigest()
            if digest not in seen:
                seen[digest] = len(images)
                images.append(encoded)
            frames.append(seen[digest])
        strides = [int(np.prod(self.shape[i + 1:])) for i in range(len(self.shape))]
        uid = "cx-" + hashlib.sha1(f"{self.name}|{self.shape}".encode()).hexdigest()[:10]
        data = {"names": self.names, "labels": [[lab for lab, _ in o] for o in self.options],
                "strides": strides, "frames": frames, "images": images}
        payload = json.dumps(data, separators=(",", ":")).replace("</", "<\\/")
        rows = []
        for i, name in enumerate(self.names):
            control = self.controls[name]
            label = html.escape(control.label or name)
            if isinstance(control, Slider):
                widget = (f'<input type="range" min="0" max="{self.shape[i] - 1}" step="1" '
                          f'value="{self.default[i]}" data-cx-control="{i}" aria-label="{label}">'
                          f'<output data-cx-output="{i}">{html.escape(self.options[i][self.default[i]][0])}</output>')
                widget += _marks_html(control)
            else:
                opts = "".join(f'<option value="{j}"{" selected" if j == self.default[i] else ""}>'
                               f'{html.escape(lab)}</option>' for j, (lab, _) in enumerate(self.options[i]))
                widget = f'<select data-cx-control="{i}" aria-label="{label}">{opts}</select>'
            rows.append(f'<label class="cx-row"><span class="cx-label">{label}</span>{widget}</label>')
        first = images[frames[self._flat(self.default)]]
        title = f'<div class="cx-title">{html.escape(self.title)}</div>' if self.title else ""
        note = (f'<div class="cx-note">{html.escape(self.caption) + " " if self.caption else ""}'
                f'Precomputed for {self.grid_size} settings; run the notebook to change it live.</div>')
        return (f'<div class="cx-explore" id="{uid}" data-cx-name="{html.escape(self.name)}">{_STYLE}{title}'
                f'<div class="cx-controls">{"".join(rows)}</div>'
                f'<img class="cx-frame" alt="{html.escape(self.title or self.name)}" '
                f'src="data:image/png;base64,{first}">{note}'
                f'<script type="application/json" class="cx-data">{payload}</script>'
                f'<script>{_SCRIPT.replace("__UID__", uid)}</script></div>')

    def _flat(self, index: Sequence[int]) -> int:
        return int(np.ravel_multi_index(tuple(index), self.shape))

    # -- live form -----------------------------------------------------------------
    def live(self):
        """ipywidgets controls and an image that redraws in place."""
        import ipywidgets as W  # lazily: the static book and the tests need no widgets

        widgets = []
        for i, name in enumerate(self.names):
            control = self.controls[name]
            options = [(lab, j) for j, (lab, _) in enumerate(self.options[i])]
            description = control.label or name
            if isinstance(control, Slider):
                w = W.SelectionSlider(options=options, value=self.default[i], description=description,
                                      continuous_update=not self.expensive,
                                      style={"description_width": "initial"},
                                      layout=W.Layout(width="420px"))
                if control.marks:
                    w = W.VBox([w, W.HTML(_marks_html(control))])
                    w.children[0].observe(self._on_change, names="value")
                else:
                    w.observe(self._on_change, names="value")
            elif len(options) <= 5:
                w = W.ToggleButtons(options=options, value=self.default[i], description=description,
                                    style={"description_width": "initial", "button_width": "auto"})
                w.observe(self._on_change, names="value")
            else:
                w = W.Dropdown(options=options, value=self.default[i], description=description,
                               style={"description_width": "initial"})
                w.observe(self._on_change, names="value")
            widgets.append(w)
        self._inputs = [w.children[0] if isinstance(w, W.VBox) else w for w in widgets]
        self._image = W.Image(format="png", layout=W.Layout(max_width="100%"))
        self._status = W.HTML()
        parts: list[Any] = []
        if self.title:
            parts.append(W.HTML(f"<b>{html.escape(self.title)}</b>"))
        parts += widgets
        if self.expensive:
            self._button = W.Button(description="Run", button_style="primary", icon="play")
            self._progress = W.FloatProgress(min=0.0, max=1.0, value=0.0, layout=W.Layout(width="200px"))
            self._button.on_click(lambda _: self._run_in_background())
            parts.append(W.HBox([self._button, self._progress, self._status]))
        else:
            parts.append(self._status)
        parts.append(self._image)
        self._lock = threading.Lock()
        self._show(self._current(), first=True)
        return W.VBox(parts)

    def _current(self) -> tuple[int, ...]:
        return tuple(w.value for w in self._inputs)

    def _on_change(self, change) -> None:
        self._show(self._current())

    def _show(self, index: tuple[int, ...], first: bool = False) -> None:
        if index in self._cache:
            self._image.value = self._cache[index]
            self._status.value = ""
        elif self.expensive and not first:
            self._status.value = "press <b>Run</b> to compute this setting"
        elif self.expensive:
            self._run_in_background()
        else:
            try:
                started = time.perf_counter()
                self._image.value = self.render(index)
                self._status.value = f'<span style="color:#888">drawn in {1e3 * (time.perf_counter() - started):.0f} ms</span>'
            except Exception as error:  # shown to the reader, never a crash of the notebook
                self._status.value = _error_html(error)
        if not self.expensive:
            self._prefetch_neighbours(index)

    def neighbours(self, index: Sequence[int]) -> list[tuple[int, ...]]:
        """The grid points one step away from ``index`` along one control.

        Raises:
            TypeError: ``index`` not a tuple/list of ints.
            ValueError: not one index per control, or an index out of its control's range.
        """
        index = self._index(index)
        out = []
        for axis, n in enumerate(self.shape):
            for step in (1, -1):
                j = index[axis] + step
                if 0 <= j < n:
                    out.append(tuple(index[:axis]) + (j,) + tuple(index[axis + 1:]))
        return out

    def _prefetch_neighbours(self, index: tuple[int, ...]) -> None:
        """Queue the settings one control step away, so that the next slider step only
        swaps a cached image (a fresh matplotlib frame costs 0.1-0.3 s; a cached one a
        millisecond). They are drawn on the kernel's event loop, one frame per turn, when
        the kernel is idle: in the main thread, because matplotlib (its mathtext parser,
        its fonts) is not thread-safe, and a background thread drawing while the reader's
        next cell draws can break that cell. Once they are drawn and the reader has left
        the controls alone for ``FILL_AFTER`` seconds, the rest of the grid follows,
        nearest settings first (see :meth:`_fill_next`), so that a far jump made after a
        pause finds its frame drawn too."""
        self._pending = [i for i in self.neighbours(index) if i not in self._cache]
        self._moved_at = time.monotonic()
        loop = _kernel_loop()
        if loop is not None and (self._pending or len(self._cache) < self.size):
            self._schedule_prefetch(loop, 0.05)

    #: Seconds without a control change before the rest of the grid is prefetched.
    FILL_AFTER = 1.0

    @property
    def size(self) -> int:
        """The number of settings of the control grid."""
        return int(np.prod(self.shape))

    def _fill_next(self) -> tuple[int, ...] | None:
        """The nearest setting (fewest control steps from the current one) not yet drawn,
        or None when the whole grid is cached. At most ``MAX_FRAMES`` frames of ~20-40 kB
        each: a few MB per experiment."""
        here = self._current()
        todo = [i for i in itertools.product(*(range(n) for n in self.shape)) if i not in self._cache]
        if not todo:
            return None
        return min(todo, key=lambda i: (sum(abs(a - b) for a, b in zip(i, here)), i))

    def _schedule_prefetch(self, loop, delay: float) -> None:
        """Draw the next pending setting after ``delay`` seconds, unless a Run is queued
        or computing (then ``_RUNS.finished`` resumes it).

        While any expensive Run of any experiment of the kernel is in flight, prefetching
        waits: a prefetched frame holds Python's GIL for ~0.1 s of pure-Python drawing, and
        the Run's training loop (many small torch ops, each of which hands the GIL back and
        waits ``sys.getswitchinterval()`` = 5 ms to get it again) then crawls, several
        times slower (tests/benchmarks/bench_jupyterlab.py measures it in JupyterLab).
        A frame the reader asks for is still drawn at once."""
        if self._prefetch_scheduled:
            return
        if _RUNS.busy():
            _RUNS.defer(self)
            return
        self._prefetch_scheduled = True
        loop.call_later(delay, self._prefetch_step, loop)

    def _prefetch_one(self) -> bool:
        """Draw one pending setting; False when nothing was left to draw."""
        while self._pending:
            i = self._pending.pop(0)
            if i not in self._cache:
                try:
                    self.render(i)
                except Exception:  # _show reports it if the reader goes there
                    pass
                return True
        return False

    def _prefetch_step(self, loop) -> None:
        self._prefetch_scheduled = False
        if _RUNS.busy():          # a Run started since this step was scheduled
            _RUNS.defer(self)
            return
        if self._build_ready():   # first the axes of the next cold frame (its first ~30 ms)
            self._schedule_prefetch(loop, 0.0)
            return
        if self._prefetch_one():  # one neighbour drawn; the loop turns before the next
            self._schedule_prefetch(loop, 0.01)
            return
        # the neighbours are drawn: fill the rest of the grid once the reader pauses
        wait = self.FILL_AFTER - (time.monotonic() - getattr(self, "_moved_at", 0.0))
        if wait > 0:
            self._schedule_prefetch(loop, wait)
            return
        nxt = self._fill_next()
        if nxt is not None:
            self._pending = [nxt]
            self._prefetch_one()
            self._schedule_prefetch(loop, 0.01)

    def prefetch_idle(self) -> None:
        """Draw every queued setting now, and lay out the axes of the next frame, as the
        kernel's idle time does (tests and benchmarks; a cell blocks the loop)."""
        self._build_ready()
        while self._prefetch_one():
            self._build_ready()

    def _run_in_background(self) -> None:
        """Compute the current setting of an expensive experiment off the kernel's main
        thread. Runs of every experiment of the kernel go, one at a time, to one worker
        thread (two trainings side by side on 2 cores only make both slow), and while
        any is queued or computing, prefetching of every experiment pauses (see
        :meth:`_schedule_prefetch`)."""
        if not self._lock.acquire(blocking=False):
            return
        index = self._current()
        self._button.disabled = True
        self._progress.value = 0.0
        loop = _kernel_loop()
        started = time.perf_counter()
        waited = [0.0]            # seconds queued (behind other Runs, or the notebook's cells)
        self._status.value = ("queued behind another Run…" if _RUNS.busy()
                              else "queued: starts when the kernel is idle…")
        _RUNS.started()

        def on_loop(function, *args) -> None:
            # widget updates and matplotlib rasterizing belong to the kernel's main thread
            if loop is None:
                function(*args)
            else:
                loop.call_soon_threadsafe(function, *args)

        def set_progress(fraction: float) -> None:
            self._progress.value = fraction

        def progress(fraction: float) -> None:
            on_loop(set_progress, float(min(max(fraction, 0.0), 1.0)))

        def done(status: str) -> None:
            self._status.value = status
            self._button.disabled = False
            self._lock.release()
            _RUNS.finished(loop)

        def finish(fig: Figure) -> None:
            # rasterizing (text layout, mathtext) happens here, on the kernel's main
            # thread when there is one: matplotlib is not thread-safe
            try:
                png = self._rasterize(index, fig)
            except Exception as error:
                done(_error_html(error))
                return
            if self._current() == index:
                self._image.value = png
            self._progress.value = 1.0
            total = time.perf_counter() - started
            done(f"done in {total:.1f} s" + (f" (of which {waited[0]:.1f} s waiting for the notebook's "
                                              f"cells or another Run)" if waited[0] >= 0.5 else ""))

        def work() -> None:
            waited[0] = time.perf_counter() - started
            on_loop(setattr, self._status, "value", "running…")
            try:  # the slow part: training, inside draw(); artists are only created here
                fig = self.figure(index, progress)
            except Exception as error:
                on_loop(done, _error_html(error))
                return
            on_loop(finish, fig)

        _RUNS.submit(work, loop)

    # -- display -------------------------------------------------------------------
    def _ipython_display_(self) -> None:
        from IPython.display import display

        if resolve_mode() == "static":
            display({"text/html": self.static_html(),
                     "text/plain": f"<experiment {self.name!r}: {self.grid_size} precomputed frames>"}, raw=True)
        else:
            display(self.live())

    def __repr__(self) -> str:
        return f"Experiment({self.name!r}, controls={self.names}, grid={self.grid_size})"


def _error_html(error: Exception) -> str:
    """An exception as the red status line a reader sees instead of a traceback."""
    return f'<span style="color:#b00">{html.escape(type(error).__name__)}: {html.escape(str(error))}</span>'


def _kernel_loop():
    """The running asyncio loop of the IPython kernel (its main thread), or None."""
    import asyncio

    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


class _RunQueue:
    """The kernel's expensive Runs: one worker thread computes them one at a time, and a
    count of Runs queued or computing pauses prefetching (experiments whose prefetch
    waited are resumed when the count returns to 0).

    Before each Run the worker waits until the kernel's main thread has been idle for
    ``QUIET`` seconds (its event loop answers every ping at once): a Run displayed during
    *Run All* then starts when the notebook's cells are done instead of crawling beside
    them, for a training loop of small torch ops gets Python's GIL only every 5 ms while
    the main thread computes. The worker also computes with fewer torch threads than
    cores (one on 2 cores; the setting is per thread), leaving a core to the reader's
    frames: small ops gain nothing from a second thread on a busy 2-core machine."""

    QUIET = 0.3          # seconds the main thread must be idle before a Run starts
    PING = 0.05          # seconds between pings of the kernel's event loop

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._in_flight = 0
        self._deferred: "weakref.WeakSet[Experiment]" = weakref.WeakSet()
        self._jobs: "queue.SimpleQueue[Callable[[], None]]" = queue.SimpleQueue()
        self._worker: threading.Thread | None = None

    def busy(self) -> bool:
        return self._in_flight > 0

    def started(self) -> None:
        with self._lock:
            self._in_flight += 1

    def defer(self, experiment: "Experiment") -> None:
        with self._lock:
            self._deferred.add(experiment)

    def finished(self, loop) -> None:
        with self._lock:
            self._in_flight = max(self._in_flight - 1, 0)
            resume = [] if self._in_flight else list(self._deferred)
            if not self._in_flight:
                self._deferred.clear()
        for experiment in resume:
            if experiment._pending or len(experiment._cache) < experiment.size:
                # on the kernel loop that the Run reported to; without one (no kernel),
                # nothing was scheduled in the first place
                if loop is not None:
                    experiment._schedule_prefetch(loop, 0.05)

    def submit(self, job: Callable[[], None], loop=None) -> None:
        """Queue ``job`` (a callable with no arguments) for the worker; ``loop``: the
        kernel's event loop whose quiet the worker waits for (None: start at once)."""
        with self._lock:
            self._jobs.put((job, loop))
            if self._worker is None or not self._worker.is_alive():
                self._worker = threading.Thread(target=self._work, name="companion-explore-runs",
                                                daemon=True)
                self._worker.start()

    def _work(self) -> None:
        while True:
            job, loop = self._jobs.get()
            try:
                if loop is not None:
                    self._wait_until_quiet(loop)
                torch = sys.modules.get("torch")   # only if the notebook uses torch at all
                if torch is not None:               # this thread's own setting (OpenMP)
                    torch.set_num_threads(max(1, min(torch.get_num_threads(), (os.cpu_count() or 2) - 1)))
                job()
            except Exception:  # each job reports its own errors; the worker lives on
                pass

    def _wait_until_quiet(self, loop) -> None:
        """Return once the loop has answered pings promptly for ``QUIET`` seconds in a row
        (a cell that runs blocks the loop, so its pings come back late)."""
        quiet_since = time.monotonic()
        while time.monotonic() - quiet_since < self.QUIET:
            answered = threading.Event()
            sent = time.monotonic()
            try:
                loop.call_soon_threadsafe(answered.set)
            except RuntimeError:      # the loop is closed: nothing to wait for
                return
            answered.wait()
            if time.monotonic() - sent > self.PING:
                quiet_since = time.monotonic()
            time.sleep(self.PING)


_RUNS = _RunQueue()


_FRAME_RC = {"axes.titley": 1.0}
_SPARE_TICKS = 2
_GC_PAUSED = threading.local()


@contextlib.contextmanager
def _young_garbage():
    """Keep Python's cyclic garbage collector out of one frame.

    A frame makes tens of thousands of short-lived objects that refer to each other
    (figure, axes, ticks, texts). With the collector running, the ones still alive at a
    collection are promoted to older generations, and a full collection follows every
    few frames: in a kernel holding half a million objects (torch, the chapter's data)
    it stops everything for 0.3-0.4 s (tests/benchmarks/bench_book.py saw it). With
    the collector paused until the frame is done and dropped, the whole frame is still
    young garbage, freed by the next cheap young-generation collection. Nested uses
    and a collector the reader switched off are left alone."""
    if getattr(_GC_PAUSED, "on", False) or not gc.isenabled():
        yield
        return
    _GC_PAUSED.on = True
    gc.disable()
    try:
        yield
    finally:
        _GC_PAUSED.on = False
        gc.enable()


def _plain(value: Any, gridspecs: list) -> Any:
    """``value`` (an argument of a layout call) as a comparable token, or raise
    ``_NotReplayable``: numbers, strings, None and lists/tuples/dicts of them; a
    ``SubplotSpec`` of a grid the same figure made with ``add_gridspec`` becomes
    ("cell", which grid, first cell, last cell)."""
    from matplotlib.gridspec import SubplotSpec

    if value is None or isinstance(value, (bool, int, float, str)):
        return (type(value).__name__, value)
    if isinstance(value, (list, tuple)):
        return (type(value).__name__, tuple(_plain(v, gridspecs) for v in value))
    if isinstance(value, dict):
        return ("dict", tuple((k, _plain(v, gridspecs)) for k, v in value.items()))
    if isinstance(value, SubplotSpec):
        grid = value.get_gridspec()
        for k, known in enumerate(gridspecs):
            if known is grid:
                return ("cell", k, value.num1, value.num2)
    raise _NotReplayable


class _NotReplayable(Exception):
    pass


class _LayoutDiverged(BaseException):
    """draw() asked a figure built ahead for a layout it was not built for. A
    BaseException, so that a draw() catching Exception does not swallow it. ``first``:
    the call, when it was draw()'s first layout call (None otherwise)."""

    def __init__(self, first):
        super().__init__(first)
        self.first = first


def _first_call(plan: tuple | None):
    """The first layout call of a plan: what tells draw()'s layouts apart."""
    return None if plan is None or not plan[0] else plan[0][0]


class _LayoutFigure(Figure):
    """A Figure that records how ``draw`` lays out its axes (``subplots``,
    ``add_gridspec``, ``add_subplot``), and that can be built ahead of time from such a
    record: :meth:`_replay` makes the axes and the tick marks the recorded frame used,
    and when ``draw`` then asks for the same layout it gets those axes back. The
    pixels are those of a figure made from scratch (tests/test_explore.py compares
    them); a draw that lays out a setting differently is noticed
    (:meth:`_replayed_all`) and drawn again from scratch."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._calls: list | None = []       # a token per top-level layout call
        self._gridspecs: list = []
        self._inside = 0                     # layout calls nest (subplots -> add_subplot)
        self._script: list | None = None     # ready-made results, when built ahead
        self._used = 0
        self._diverged = False
        self._layout_axes: list = []         # the axes the layout calls made
        self._spared: list | None = None     # the tick counts _replay made, less the spares

    def _layout_call(self, method: str, args: tuple, kwargs: dict):
        real = getattr(Figure, method)
        if self._inside:
            return real(self, *args, **kwargs)
        try:
            token = (method, _plain(args, self._gridspecs), _plain(kwargs, self._gridspecs))
        except _NotReplayable:
            token = None
        if self._script is not None:
            if (token is not None and self._used < len(self._script)
                    and self._script[self._used][0] == token and not self._diverged):
                result = _unpack(self._script[self._used][1])
                self._used += 1
                self._record(token, result, method)
                return result
            self._diverged = True
            # Experiment.figure draws this setting again, on axes built for the layout
            # this call starts if there are some (else afresh)
            raise _LayoutDiverged(token if self._used == 0 else None)
        self._inside += 1
        try:
            result = real(self, *args, **kwargs)
        finally:
            self._inside -= 1
        self._record(token, result, method)
        return result

    def _record(self, token, result, method: str) -> None:
        if method == "add_gridspec":
            self._gridspecs.append(result)
        if self._calls is not None:
            if token is None:
                self._calls = None           # this frame's layout cannot be replayed
            else:
                self._calls.append(token)
        self._layout_axes = list(self.axes)

    def subplots(self, *args, **kwargs):
        return self._layout_call("subplots", args, kwargs)

    def add_subplot(self, *args, **kwargs):
        return self._layout_call("add_subplot", args, kwargs)

    def add_gridspec(self, *args, **kwargs):
        return self._layout_call("add_gridspec", args, kwargs)

    def _replayed_all(self) -> bool:
        return self._script is None or (not self._diverged and self._used == len(self._script))

    def _layout_plan(self) -> tuple | None:
        """What :meth:`_replay` needs to lay out the next frame as this one: the layout
        calls with their arguments, and how many tick marks each axis of the axes they
        made has drawn."""
        if not self._calls:
            return None
        ticks = [tuple(len(axis.__dict__.get(kind, ())) for axis in (ax.xaxis, ax.yaxis)
                       for kind in ("majorTicks", "minorTicks"))
                 for ax in self._layout_axes]
        if self._spared is not None and len(self._spared) == len(ticks):
            # the spare ticks :meth:`_replay` added and this frame did not use don't count
            ticks = [tuple(b if b and n == b + _SPARE_TICKS else n for n, b in zip(counts, base))
                     for counts, base in zip(ticks, self._spared)]
        return tuple(self._calls), ticks

    def _replay(self, plan: tuple) -> "_LayoutFigure | None":
        calls, ticks = plan
        script = []
        self._inside += 1         # the calls' own nested layout calls are not recorded
        try:
            for token in calls:
                method, args, kwargs = token
                result = getattr(Figure, method)(self, *_unplain(args, self._gridspecs),
                                                 **_unplain(kwargs, self._gridspecs))
                if method == "add_gridspec":
                    self._gridspecs.append(result)
                script.append((token, _pack(result)))
        except Exception:       # the layout depended on something a token cannot carry
            return None
        finally:
            self._inside -= 1
        if len(self.axes) == len(ticks):      # else some were made between the calls: skip
            self._spared = ticks
            for ax, (x_major, x_minor, y_major, y_minor) in zip(self.axes, ticks):
                for axis, major, minor in ((ax.xaxis, x_major, x_minor), (ax.yaxis, y_major, y_minor)):
                    # a few more than the last frames drew: other settings' limits need
                    # more; unused ones are never drawn
                    if major:
                        axis.get_major_ticks(major + _SPARE_TICKS)
                    if minor:
                        axis.get_minor_ticks(minor + _SPARE_TICKS)
        self._script = script
        self._gridspecs = []    # draw() adds them again as it asks for them
        return self


def _pack(result: Any) -> Any:
    """A layout call's result, kept without numpy: ``subplots`` returns an object array
    of axes, and numpy's object arrays are invisible to the cyclic garbage collector,
    so a figure holding one of its own axes in an array would never be freed."""
    if isinstance(result, np.ndarray):
        return ("array", result.shape, list(result.flat))
    return ("value", result)


def _unpack(packed: Any) -> Any:
    if packed[0] == "array":
        _, shape, items = packed
        array = np.empty(len(items), dtype=object)
        array[:] = items
        return array.reshape(shape)
    return packed[1]


def _more_ticks(plan: tuple | None, old: tuple | None) -> tuple | None:
    """``plan``, with as many tick marks per axis as the most an earlier frame of the same
    layout drew (settings differ in how many they need)."""
    if plan is None or old is None or plan[0] != old[0] or len(plan[1]) != len(old[1]):
        return plan
    return plan[0], [tuple(map(max, a, b)) for a, b in zip(plan[1], old[1])]


def _unplain(token: Any, gridspecs: list) -> Any:
    kind = token[0]
    if kind == "cell":
        grid = gridspecs[token[1]]
        from matplotlib.gridspec import SubplotSpec
        return SubplotSpec(grid, token[2], token[3])
    if kind == "dict":
        return {k: _unplain(v, gridspecs) for k, v in token[1]}
    if kind in ("list", "tuple"):
        items = [_unplain(v, gridspecs) for v in token[1]]
        return items if kind == "list" else tuple(items)
    return token[1]


class _SharedRendererCanvas(FigureCanvasAgg):
    """An Agg canvas that draws with one long-lived renderer per frame size.

    matplotlib caches text metrics and parsed mathtext per *renderer*; a fresh canvas per
    frame starts with empty caches, so every tick label, legend entry and $...$ label is
    measured and parsed again (a third of a cold frame). The figure is still fresh every
    frame (``draw(fig, **params)`` gets a new one), and the pixels are the same."""

    def get_renderer(self):
        w, h = self.get_width_height(physical=True)
        # matplotlib's text metrics cache (per renderer) does not know the hinting: a
        # renderer per hinting setting, or text measured one way would be drawn another
        key = (w, h, self.figure.dpi, str(matplotlib.rcParams["text.hinting"]),
               matplotlib.rcParams.get("text.hinting_factor"))
        renderer = _RENDERERS.get(key)
        if renderer is None:
            if len(_RENDERERS) >= 8:      # a few sizes in a book; bound the memory anyway
                _RENDERERS.pop(next(iter(_RENDERERS)))
            renderer = _RENDERERS[key] = _renderer_class()(w, h, self.figure.dpi)
        self.renderer = renderer
        return renderer


_RENDERERS: dict[tuple, RendererAgg] = {}
_GLYPHS: dict[tuple, tuple] = {}
_GLYPHS_MAX = 20_000          # ~a few MB of small bitmaps; emptied when full
_RUNS_OF_GLYPHS: dict[tuple, list] = {}
_FONT_HEIGHTS: dict[tuple, tuple] = {}


def _font_height_metrics(font, fontsize: float, dpi: float) -> tuple:
    """(ascent, descent, line gap) in pixels, as ``matplotlib.text.Text._get_layout``
    reads them from the font's tables; (None, None, None) makes it measure instead."""
    for table_name, gap, ascent, descent in (("OS/2", "sTypoLineGap", "sTypoAscender", "sTypoDescender"),
                                             ("hhea", "lineGap", "ascent", "descent")):
        table = font.get_sfnt_table(table_name)
        if table is None:
            continue
        scale = 1 / font.get_sfnt_table("head")["unitsPerEm"] * fontsize * dpi / 72
        return table[ascent] * scale, -table[descent] * scale, table[gap] * scale
    return None, None, None


def _renderer_class() -> type:
    """``_GlyphCachingRenderer`` where this matplotlib draws text glyph by glyph through
    ``_draw_text_glyphs_and_boxes`` (3.11 and later, what the book builds with), else
    matplotlib's own ``RendererAgg``."""
    global _RENDERER_CLASS
    if _RENDERER_CLASS is None:
        from matplotlib.ft2font import FT2Font

        method = getattr(RendererAgg, "_draw_text_glyphs_and_boxes", None)
        from matplotlib.text import Text

        usable = (method is not None
                  and all(hasattr(FT2Font, name) for name in ("_render_glyph", "_set_transform", "_layout"))
                  and all(hasattr(Text, name) for name in ("get_fontfeatures", "get_language"))
                  and list(inspect.signature(method).parameters)
                  == ["self", "gc", "x", "y", "angle", "glyphs", "boxes"])
        _RENDERER_CLASS = _glyph_caching_renderer() if usable else RendererAgg
    return _RENDERER_CLASS


_RENDERER_CLASS: type | None = None


def _glyph_caching_renderer() -> type:
    import math

    from matplotlib.backends.backend_agg import get_hinting_flag
    from matplotlib.font_manager import fontManager as _fontManager
    from matplotlib.font_manager import get_font
    from matplotlib.ft2font import RenderMode

    class _GlyphCachingRenderer(RendererAgg):
        """RendererAgg that rasterizes each glyph once per sub-pixel position.

        matplotlib asks FreeType to rasterize every glyph of every text on every frame,
        about half of a cold frame's drawing time (the tick labels, titles and legends
        are mostly the same glyphs from frame to frame). FreeType places a glyph at a
        position in 1/64 pixel; moving it by whole pixels moves its bitmap by as many
        pixels and changes nothing else. So the bitmap is kept per font, size, dpi,
        glyph, rotation and position *within* a pixel, and drawn at the pixel offset:
        the same pixels as matplotlib's own loop (tests/test_explore.py compares PNG
        bytes with a fresh canvas), which this method mirrors; boxes (mathtext rules)
        are left to matplotlib."""

        def draw_text(self, gc, x, y, s, prop, angle, ismath=False, mtext=None):
            # matplotlib's own draw_text, with the shaped glyph run of each string kept:
            # shaping (font._layout) was the other large part of drawing text.
            if ismath:
                return super().draw_text(gc, x, y, s, prop, angle, ismath, mtext)
            fonts = _fontManager._find_fonts_by_props(prop)
            flags = get_hinting_flag()
            features = mtext.get_fontfeatures() if mtext is not None else None
            language = mtext.get_language() if mtext is not None else None
            size = prop.get_size_in_points()
            key = (s, tuple(fonts), size, self.dpi, flags, features, language)
            try:
                items = _RUNS_OF_GLYPHS.get(key)
            except TypeError:                 # unhashable features: shape it each time
                key, items = None, None
            if items is None:
                font = self._prepare_font(prop)
                items = [(item.ft_object, item.glyph_index, item.x, item.y)
                         for item in font._layout(s, flags=flags, features=features,
                                                  language=language)]
                if key is not None:
                    if len(_RUNS_OF_GLYPHS) >= _GLYPHS_MAX:
                        _RUNS_OF_GLYPHS.clear()
                    _RUNS_OF_GLYPHS[key] = items
            self._draw_text_glyphs_and_boxes(
                gc, x, y, angle, ((ft, size, index, 0, 1, dx, dy) for ft, index, dx, dy in items), [])

        def _get_font_height_metrics(self, prop):
            # Text._get_layout reads three numbers from the font's tables for every
            # text it lays out (when the renderer has no such method): kept per font.
            fonts = tuple(_fontManager._find_fonts_by_props(prop))
            key = (fonts, prop.get_size_in_points(), self.dpi)
            metrics = _FONT_HEIGHTS.get(key)
            if metrics is None:
                metrics = _FONT_HEIGHTS[key] = _font_height_metrics(get_font(list(fonts)), key[1], self.dpi)
            return metrics

        def _draw_text_glyphs_and_boxes(self, gc, x, y, angle, glyphs, boxes):
            cos = math.cos(math.radians(angle))
            sin = math.sin(math.radians(angle))
            load_flags = get_hinting_flag()
            mode = RenderMode.NORMAL if gc.get_antialiased() else RenderMode.MONO
            height = self.height
            for font, size, glyph_index, slant, extend, dx, dy in glyphs:  # dy is upwards.
                tx = round(0x40 * (x + dx * cos - dy * sin))
                ty = round(0x40 * (height - y + dx * sin + dy * cos))  # FreeType's y is upwards
                key = (font, size, self.dpi, glyph_index, cos, sin, slant, extend,
                       tx & 0x3F, ty & 0x3F, load_flags, mode)
                bitmap = _GLYPHS.get(key)
                if bitmap is None:
                    font.set_size(size, self.dpi)
                    font._set_transform(
                        (0x10000 * np.array([[cos, -sin], [sin, cos]])
                         @ [[extend, extend * slant], [0, 1]]).round().astype(int),
                        [tx & 0x3F, ty & 0x3F])
                    rendered = font._render_glyph(glyph_index, load_flags, mode)
                    buffer = np.array(rendered.buffer)
                    if mode is RenderMode.MONO:
                        buffer *= 0xff
                    if len(_GLYPHS) >= _GLYPHS_MAX:
                        _GLYPHS.clear()
                    bitmap = _GLYPHS[key] = (buffer, rendered.left, rendered.top)
                buffer, left, top = bitmap
                # draw_text_image's y is downwards & the bitmap's bottom side
                self._renderer.draw_text_image(
                    buffer, left + (tx >> 6), int(height) - (top + (ty >> 6)) + buffer.shape[0], 0, gc)
            super()._draw_text_glyphs_and_boxes(gc, x, y, angle, (), boxes)

    return _GlyphCachingRenderer
_RASTER_LOCK = threading.Lock()


def resolve_mode(mode: str | None = None) -> str:
    """``"static"`` or ``"live"``: the argument, else ``$COMPANION_EXPLORE_MODE``, else live
    inside a Jupyter kernel with ipywidgets, static elsewhere.

    Raises:
        TypeError: ``mode`` neither None nor a str.
        ValueError: ``mode`` (or the environment variable) neither ``"static"`` nor ``"live"``.
    """
    if mode is not None:
        if not isinstance(mode, str):
            raise _check._type_error("mode", "'static', 'live' or None", mode)
        if mode not in ("static", "live"):
            raise ValueError(f"mode must be 'static' or 'live', got {mode!r}")
        return mode
    mode = os.environ.get(MODE_VARIABLE)
    if mode is not None and mode not in ("static", "live"):
        raise ValueError(f"mode: the environment variable {MODE_VARIABLE} must be 'static' or "
                         f"'live', got {mode!r}")
    if mode is None:
        try:
            import ipywidgets  # noqa: F401
            from IPython import get_ipython

            shell = get_ipython()
            mode = "live" if shell is not None and hasattr(shell, "kernel") else "static"
        except ImportError:
            mode = "static"
    return mode


def explore(draw: Callable[..., Any], controls: Mapping[str, Slider | Choice], *,
            name: str | None = None, title: str | None = None, caption: str | None = None,
            expensive: bool = False, figsize: tuple[float, float] = (8.0, 3.4), dpi: int = 80,
            constrained: bool = False) -> Experiment:
    """Make an experiment from ``draw(fig, **params)`` and its controls.

    Args:
        draw: draws one setting into the ``matplotlib.figure.Figure`` it is given
            (``fig.subplots(...)``); it may accept ``progress``, a callable taking a
            fraction in [0, 1], to report progress of a long computation.
        controls: ``{parameter name: Slider(...) | Choice(...)}``, in display order.
        name: names the experiment in errors and in the page (default: ``draw.__name__``).
        title, caption: text shown above and below the figure.
        expensive: live mode computes on a *Run* button in a background thread
            (for training; one Run at a time in the kernel, started once its cells are
            done); static mode precomputes every setting either way.
        figsize, dpi: size of every frame.
        constrained: use matplotlib's constrained layout (neat, but ~2x slower per frame;
            the default is fixed, tight margins that suit one row of panels).

    Returns:
        An :class:`Experiment`; as the last expression of a cell it displays itself,
        live or static (see :func:`resolve_mode`).

    Raises:
        TypeError: ``draw`` not callable (or a class), ``controls`` not a dict of
            name -> Slider/Choice, ``name``, ``title`` or ``caption`` neither None nor a
            str, ``expensive``/``constrained`` not True/False, ``figsize`` not a pair of
            numbers, ``dpi`` not an int.
        ValueError: no controls, a ``draw`` whose parameters are not the controls' names
            (``draw(fig, **params)`` must take exactly them: the message lists both), an
            empty ``name``, a ``figsize`` entry <= 0, ``dpi`` < 1, or a grid of more than
            ``MAX_FRAMES`` points (naming the experiment). The controls check their own
            arguments (:class:`Slider`, :class:`Choice`).
    """
    if name is None:
        name = getattr(draw, "__name__", None)
        name = name if isinstance(name, str) and name else "experiment"
    return Experiment(draw, controls, name=name,
                      title=title, expensive=expensive, figsize=figsize, dpi=dpi, caption=caption,
                      constrained=constrained)


_MARGINS = SubplotParams(left=0.08, right=0.985, bottom=0.15, top=0.9, wspace=0.28, hspace=0.45)
_SUPERSCRIPT = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")


def _log_tick(value: float, _pos: Any = None) -> str:
    if value <= 0 or not np.isfinite(value):
        return ""
    exponent = np.log10(value)
    if abs(exponent - round(exponent)) > 1e-9:
        return ""
    return "10" + str(int(round(exponent))).translate(_SUPERSCRIPT)


def _plain_log_ticks(fig: Figure) -> None:
    """Label log axes 10⁻⁵ in plain text: matplotlib's mathtext labels cost ~50 ms a frame."""
    from matplotlib.ticker import FuncFormatter, LogFormatterSciNotation, NullFormatter, NullLocator

    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            if axis.get_scale() == "log" and isinstance(axis.get_major_formatter(), LogFormatterSciNotation):
                axis.set_major_formatter(FuncFormatter(_log_tick))
                axis.set_minor_formatter(NullFormatter())
                lo, hi = sorted(abs(v) for v in axis.get_view_interval())
                if lo > 0 and np.log10(hi) - np.log10(lo) > 6:
                    # over many decades, 8 unlabelled minor ticks per decade are only clutter
                    axis.set_minor_locator(NullLocator())


def _marks_html(control: Slider) -> str:
    if not control.marks:
        return ""
    lo, hi = float(min(control.values)), float(max(control.values))
    items = []
    for value, text in control.marks.items():
        where = "within" if lo <= value <= hi else "outside"
        items.append(f"{html.escape(text)} = {_fmt(value)} ({where} the slider's range)")
    return f'<span class="cx-marks">▲ {"; ".join(items)}</span>'


def _encode(rgba: np.ndarray, *, compact: bool, colors: int = 96) -> bytes:
    """PNG bytes of an RGBA frame. ``compact`` uses an adaptive palette (about 3x smaller
    for line plots, for the static book); otherwise fast, light compression (live)."""
    from PIL import Image

    image = Image.fromarray(rgba[..., :3])
    buffer = io.BytesIO()
    if compact:
        # FASTOCTREE without optimize: ~10x faster than MEDIANCUT + optimize, and as small
        image.quantize(colors=colors, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE).save(
            buffer, format="PNG")
    else:
        image.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


_STYLE = ("<style>.cx-explore{border:1px solid #ddd;border-radius:6px;padding:.6em;margin:.8em 0}"
          ".cx-controls{display:flex;flex-wrap:wrap;gap:.3em 1.5em;margin-bottom:.4em}"
          ".cx-row{display:flex;align-items:center;gap:.5em;margin:0;font-size:.9em;flex-wrap:wrap}"
          ".cx-label{font-weight:600}.cx-row input[type=range]{width:200px}"
          ".cx-row output{min-width:3.5em;font-variant-numeric:tabular-nums}"
          ".cx-marks{flex-basis:100%;font-size:.8em;color:#a33}"
          ".cx-frame{max-width:100%;height:auto;display:block}"
          ".cx-note,.cx-title{font-size:.8em;color:#666}.cx-title{font-size:.95em;color:inherit;font-weight:600}</style>")

# Maps the controls to a frame: flat index = sum(option index x stride).
_SCRIPT = """(function(){var r=document.getElementById("__UID__");if(!r)return;
var d=JSON.parse(r.querySelector("script.cx-data").textContent);
var c=r.querySelectorAll("[data-cx-control]"),img=r.querySelector("img.cx-frame");
function show(){var k=0,alt=[];for(var i=0;i<c.length;i++){var j=parseInt(c[i].value,10);k+=j*d.strides[i];
var o=r.querySelector('[data-cx-output="'+i+'"]');if(o)o.textContent=d.labels[i][j];alt.push(d.names[i]+"="+d.labels[i][j]);}
img.src="data:image/png;base64,"+d.images[d.frames[k]];img.alt=alt.join(", ");r.setAttribute("data-cx-frame",k);}
for(var i=0;i<c.length;i++){c[i].addEventListener("input",show);c[i].addEventListener("change",show);}})();"""
