"""One experiment, two lives: live ipywidgets in a notebook, precomputed frames in the book.

An experiment is a drawing function of named parameters plus a description of its
controls. :func:`explore` turns the pair into

* **live** controls (ipywidgets) in Jupyter, JupyterLab, VS Code and Colab
  (:mod:`companion._live`): the figure redraws in place, and the settings one step
  away are drawn ahead while the kernel is idle; an ``expensive=True`` experiment
  runs on a button in a background thread with a progress bar, so the notebook
  never freezes;
* a **static** experiment in the built HTML (:mod:`companion._static`): every point
  of the control grid is drawn once at build time and shipped as images (WebP, 1.4x
  the pixels they are shown at) with native controls; moving a control swaps the
  image with no kernel and no network.

The book's build sets ``COMPANION_EXPLORE_MODE=static`` (``book/_ext/offline_book.py``),
so a plain ``jupyter-book build .`` produces the static form and nobody sets a flag.

Example::

    import numpy as np
    from companion.explore import explore, Slider, Choice

    def draw(fig, depth, activation):
        ax = fig.subplots()
        x = np.linspace(-3, 3, 61)
        y = np.tanh(x) if activation == "tanh" else 1 / (1 + np.exp(-x))
        ax.plot(x, y ** depth)
        ax.set_title(f"{activation} to the power {depth}")

    experiment = explore(draw, {"depth": Slider([1, 2, 5, 10], value=2),
                                "activation": Choice(["sigmoid", "tanh"])},
                         name="powers")
    png = experiment.render((3, 1))      # one frame: depth 10, tanh

Controls are *discrete* in both modes (a slider walks a list of values), so the live
reader and the static reader see exactly the same frames.

**Writing a draw function.** The rules are few:

* ``draw(fig, **params)`` is called exactly once per frame, on a fresh
  ``matplotlib.figure.Figure``, and draws into it only (``fig.subplots(...)``,
  ``fig.add_gridspec(...)``; no ``pyplot``). Each setting is drawn once and its PNG
  kept, so ``draw`` must be a function of its parameters: seed any randomness
  inside it (or in what it calls).
* Expensive pieces that several frames share (a training run per learning rate, a
  profile per depth) go in a function decorated with
  ``@functools.lru_cache(maxsize=None)`` whose arguments are control values
  (numbers, strings, tuples); the chapters use that one style, never a module-level
  dict.
* An ``expensive=True`` draw runs, in live mode, in a background thread, and the
  figure it fills is turned into pixels on the kernel's main thread: it must not
  change global state (``matplotlib.rcParams``, ``torch.set_num_threads``, the global
  random generators) — nothing in this module does either.
* After ``draw`` returns, three things are fixed on the figure. For speed, each axes'
  title stays at its default height (matplotlib would otherwise measure every tick
  label to lift it above tick labels on top, as if ``rcParams["axes.titley"] = 1.0``;
  pass ``pad=`` or ``y=`` to ``set_title`` where that matters), and log axes with
  matplotlib's default formatter are labelled ``10⁻⁵`` in plain text (over more than
  six decades without minor ticks). For the reader, text smaller than 11 CSS px where
  the page shows the frame (9.9 pt in an 8-inch frame at 80 dpi, more in a frame
  wider than the column) is raised to that size; a title only as far as it still
  fits the width of its axes.
* A cheap ``draw`` runs with Python's cyclic garbage collector paused
  (:func:`companion._raster.young_garbage`).
"""
from __future__ import annotations

import os
import weakref
from typing import Any, Callable, Mapping, Sequence

import numpy as np
from matplotlib.artist import Artist
from matplotlib.axis import Axis
from matplotlib.backends.backend_agg import RendererAgg
from matplotlib.cbook import is_math_text
from matplotlib.figure import Figure, SubplotParams
from matplotlib.legend import Legend
from matplotlib.text import Annotation, Text
from matplotlib.textpath import TextToPath
from matplotlib.ticker import FuncFormatter, LogFormatterSciNotation, NullFormatter, NullLocator
from matplotlib.transforms import Bbox

from . import _check, _live, _static
from ._controls import Choice, Slider, check_controls, check_draw, optional_text
from ._raster import rasterize, young_garbage

__all__ = ["Slider", "Choice", "Experiment", "explore", "MAX_FRAMES", "MODE_VARIABLE"]

#: The largest control grid an experiment may have. The static book ships one image
#: per grid point (about 10-30 kB each), and a page must stay under ~5 MB.
MAX_FRAMES = 200
#: Environment variable that selects the mode: "static" or "live".
MODE_VARIABLE = "COMPANION_EXPLORE_MODE"
#: Static frames are drawn at this many times the pixels of ``figsize`` x ``dpi`` and
#: shown at ``figsize`` x ``dpi`` CSS pixels: nearly sharp where a CSS pixel is 2 device
#: pixels (laptops, phones) and in print. 2 would be sharp, but the optimizers chapter's
#: 167 frames would make its page ~6 MB (budget: 5 MB; 5.1 MB at 1.5).
_STATIC_SCALE = 1.4
#: The smallest figure text, in CSS pixels, where the book shows a frame (body text: 20 px).
_MIN_TEXT_PX = 11.0
#: The widest a frame is shown in the book (CSS px): the article column of a 1280 px
#: window (752 px) less the experiment box's border and padding. Wider frames are shrunk.
_COLUMN_PX = 666.0
# every experiment made (weakly): tests/benchmarks/bench_book.py times each of a chapter
_CREATED: "weakref.WeakSet[Experiment]" = weakref.WeakSet()


class Experiment:
    """A drawing function with its controls, turned into cached PNG frames; see
    :func:`explore` (whose arguments these are, with ``name`` a non-empty str and
    ``title``, ``expensive``, ``figsize``, ``dpi`` and ``caption`` required).

    ``frames`` maps a grid point (a tuple of option indices, one per control) to the
    PNG drawn for it; the live views of the experiment share it.

    Raises:
        TypeError: as :func:`explore`.
        ValueError: as :func:`explore`.
    """

    def __init__(self, draw: Callable[..., Any], controls: Mapping[str, Slider | Choice], *,
                 name: str, title: str | None, expensive: bool, figsize: tuple[float, float],
                 dpi: int, caption: str | None, constrained: bool = False):
        _check.function("draw", draw, "a callable draw(fig, **params)")
        controls = check_controls(controls)
        accepts_progress = check_draw(draw, list(controls))
        _check.string("name", name, nonempty=True)
        optional_text("title", title)
        _check.flag("expensive", expensive)
        figsize = _check.pair("figsize", figsize, _check.positive)
        dpi = _check.integer("dpi", dpi, minimum=1)
        optional_text("caption", caption)
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
        self.frames: dict[tuple[int, ...], bytes] = {}
        self._accepts_progress = accepts_progress
        _CREATED.add(self)

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

    def params(self, index: Sequence[int]) -> dict[str, Any]:
        """The keyword arguments for one grid point (a tuple of option indices).

        Raises:
            TypeError: ``index`` not a tuple/list of ints.
            ValueError: not one index per control, or an index out of its control's range.
        """
        index = self._index(index)
        return {n: opts[i][1] for n, opts, i in zip(self.names, self.options, index)}

    def figure(self, index: Sequence[int] | None = None,
               progress: Callable[[float], None] | None = None) -> Figure:
        """Draw one grid point into a new Figure (no pyplot, so nothing is shown by itself).

        ``index``: option indices, one per control (default: the initial setting);
        ``progress``: None or a callable taking a fraction, handed to a ``draw`` that takes
        ``progress``. Text smaller than ``_min_text_points(figsize, dpi)`` is raised to it.

        Raises:
            TypeError: ``index`` not a tuple/list of ints, ``progress`` not callable.
            ValueError: a bad ``index`` (see :meth:`params`).
            RuntimeError: ``draw`` left the figure empty.
        """
        return self._figure(index, progress, scale=1)

    def _figure(self, index, progress, *, scale: float) -> Figure:
        """:meth:`figure` at ``scale`` times the dpi (the static book's frames are drawn
        at ``_STATIC_SCALE`` times, for screens with two device pixels per CSS pixel)."""
        index = self.default if index is None else self._index(index)
        if progress is not None:
            _check.function("progress", progress, "a callable progress(fraction) or None")
        kwargs = self.params(index)
        if self._accepts_progress:
            kwargs["progress"] = progress or (lambda fraction: None)
        fig = Figure(figsize=self.figsize, dpi=self.dpi * scale,
                     layout="constrained" if self.constrained else None,
                     subplotpars=None if self.constrained else _MARGINS)
        self.draw(fig, **kwargs)
        _fixed_title_height(fig)
        _plain_log_ticks(fig)
        _raise_small_text(fig, _min_text_points(self.figsize, self.dpi))
        if not fig.axes and not fig.texts and not fig.images:
            raise RuntimeError(f"experiment {self.name!r}: draw() left the figure empty for {kwargs}")
        return fig

    def render(self, index: Sequence[int] | None = None, *, progress=None, compact: bool = False) -> bytes:
        """PNG bytes for one grid point (kept in :attr:`frames`); with ``compact``, the
        static book's frame instead (not kept): drawn at ``_STATIC_SCALE`` times the
        pixels and encoded by :func:`companion._raster.encode_static` (WebP).

        Raises:
            TypeError: as :meth:`figure`, or ``compact`` not True/False.
            ValueError: as :meth:`figure`.
        """
        index = self.default if index is None else self._index(index)
        if progress is not None:
            _check.function("progress", progress, "a callable progress(fraction) or None")
        compact = _check.flag("compact", compact)
        if index in self.frames and not compact:
            return self.frames[index]
        scale = _STATIC_SCALE if compact else 1
        if self.expensive:   # it trains for seconds; pausing the collector buys nothing
            return self.keep(index, self._figure(index, progress, scale=scale), compact=compact)
        with young_garbage():
            return self.keep(index, self._figure(index, progress, scale=scale), compact=compact)

    def keep(self, index: Sequence[int], fig: Figure, *, compact: bool = False) -> bytes:
        """PNG bytes of ``fig``, a frame :meth:`figure` drew for ``index``, kept in
        :attr:`frames` unless ``compact`` (then the static book's encoding, at the
        figure's own dpi); the live view's Run draws in a background thread and
        rasterizes here, on the kernel's main thread.

        Raises:
            TypeError: a bad ``index`` (see :meth:`params`), ``fig`` not a Figure,
                ``compact`` not True/False.
            ValueError: a bad ``index``.
        """
        index = self._index(index)
        if not isinstance(fig, Figure):
            raise _check._type_error("fig", "a matplotlib Figure drawn by Experiment.figure", fig)
        compact = _check.flag("compact", compact)
        png = rasterize(fig, compact=compact)
        if not compact:
            self.frames[index] = png
        return png

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

    def static_html(self) -> str:
        """The whole experiment as self-contained HTML: one image per grid point."""
        return _static.static_html(self)

    def live(self) -> "_live.LiveView":
        """A new live view: ipywidgets controls and an image that redraws in place (each
        call makes its own, so two displays of one experiment never share controls)."""
        return _live.LiveView(self)

    def _ipython_display_(self) -> None:
        from IPython.display import display

        if resolve_mode() == "static":
            display({"text/html": self.static_html(),
                     "text/plain": f"<experiment {self.name!r}: {self.grid_size} precomputed frames>"}, raw=True)
        else:
            display(self.live())

    def __repr__(self) -> str:
        return f"Experiment({self.name!r}, controls={self.names}, grid={self.grid_size})"


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


_TEXT_TO_PATH = TextToPath()
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
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            if axis.get_scale() == "log" and isinstance(axis.get_major_formatter(), LogFormatterSciNotation):
                axis.set_major_formatter(FuncFormatter(_log_tick))
                axis.set_minor_formatter(NullFormatter())
                lo, hi = sorted(abs(v) for v in axis.get_view_interval())
                if lo > 0 and np.log10(hi) - np.log10(lo) > 6:
                    # over many decades, 8 unlabelled minor ticks per decade are only clutter
                    axis.set_minor_locator(NullLocator())


def _min_text_points(figsize: tuple[float, float], dpi: int) -> float:
    """The smallest font size (points) that shows at ``_MIN_TEXT_PX`` CSS pixels in a
    frame of ``figsize`` inches at ``dpi``: shown ``figsize[0] * dpi`` CSS px wide, or
    shrunk to the column (``_COLUMN_PX``) when wider. 8 inches at 80 dpi: 9.9 pt."""
    css_px_per_inch = min(dpi, _COLUMN_PX / figsize[0])
    return _MIN_TEXT_PX * 72 / css_px_per_inch


def _raise_small_text(fig: Figure, points: float) -> None:
    """Raise every text of ``fig`` smaller than ``points`` to ``points`` (larger text is
    left alone), so that a reader can read tick labels, legends and annotations without
    the chapters choosing sizes for one page width. An axes title is raised only as far
    as it still fits the width of its axes (a long title at the full size would run into
    the next panel's), an axes' legend only as far as it fits its axes' width and half
    its height (:func:`_raise_legend`).

    Tick labels are raised through ``tick_params``, not label by label: the ticks a
    draw creates copy it, and matplotlib's default locators then place fewer ticks,
    as many as the larger labels leave room for."""
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            for which, ticks in (("major", axis.majorTicks), ("minor", axis.minorTicks)):
                if ticks[0].label1.get_fontsize() < points:
                    axis.set_tick_params(which=which, labelsize=points)
    done = set()
    for ax in fig.axes:
        if ax.get_legend() is not None:
            done |= _raise_legend(ax.get_legend(), ax.bbox, points)
    titles = {id(t) for ax in fig.axes for t in (ax.title, ax._left_title, ax._right_title)}
    for text in _texts_but_tick_labels(fig):
        size = text.get_fontsize()
        if size >= points or id(text) in done:
            continue
        if id(text) in titles:    # a title wider than its axes would run into its neighbour's
            text.set_fontsize(max(size, min(points, size * _fitting_scale(text))))
        else:                     # other text only as far as it stays inside the figure
            text.set_fontsize(max(size, _figure_fitting_size(text, points)))


def _raise_legend(legend: Legend, room: Bbox, points: float) -> set[int]:
    """Raise the small text of an axes' ``legend`` towards ``points``, only as far as the
    legend stays within the width and half the height of its axes (``room``): larger,
    it would be cut off at the figure's edge or hide the curves it names. Returns the
    ids of the texts it handled."""
    texts = [t for t in [*legend.texts, legend.get_title()] if t.get_text()]
    small = [t for t in texts if t.get_fontsize() < points]
    if not small:
        return set()
    # measured in points (a renderer at 72 dpi, text metrics only), so that a frame's
    # legend is the same at any dpi: live, and the book's larger frames
    box = legend.get_window_extent(RendererAgg(1, 1, 72))
    to_points = 72 / legend.figure.dpi
    # the whole box is taken to grow with the text (its padding does not): a safe bound
    fits = min(0.95 * room.width * to_points / box.width, 0.5 * room.height * to_points / box.height)
    scale = max(1.0, min(fits, max(points / t.get_fontsize() for t in small)))
    for text in small:
        text.set_fontsize(min(points, text.get_fontsize() * scale))
    return {id(t) for t in texts}


def _fitting_scale(title: Text) -> float:
    """How many times larger ``title`` could be and still be no wider than its axes
    (text width grows in proportion to the font size)."""
    string = title.get_text()
    if not string.strip():
        return np.inf
    width, _, _ = _TEXT_TO_PATH.get_text_width_height_descent(
        string, title.get_fontproperties(), ismath=is_math_text(string))    # points
    axes_width = title.axes.bbox.width * 72 / title.axes.figure.dpi    # points; subfigures too
    # 5% to spare: drawn with hinting at a few pixels per point, text is a little wider
    return 0.95 * axes_width / width if width > 0 else np.inf


def _figure_fitting_size(text: Text, points: float) -> float:
    """The largest font size up to ``points`` (and no smaller than the text's own) at
    which horizontal ``text`` still ends inside its (sub)figure, given where it starts
    and how it is aligned: a paragraph the chapter wrapped for its size would otherwise
    run off the frame's edge. Rotated text (a y label) and annotations (placed relative
    to a point, often in offset points) are not limited here."""
    string, size = text.get_text(), text.get_fontsize()
    if not string.strip() or text.get_rotation() % 180 != 0 or isinstance(text, Annotation):
        return points
    x = text.get_transform().transform(text.get_unitless_position())[0]      # pixels
    box = text.figure.bbox
    left, right = x - box.x0, box.x1 - x
    room = {"left": right, "right": left, "center": 2 * min(left, right)}.get(
        text.get_horizontalalignment(), right)
    # measured as Agg draws it at the figure's dpi, in pixels: hinting makes small text
    # wider than its outline, and not in proportion to the size, so measure each try
    renderer = RendererAgg(1, 1, text.figure.dpi)
    props = text.get_fontproperties().copy()

    def width(at):
        props.set_size(at)
        return max(renderer.get_text_width_height_descent(line, props, ismath=is_math_text(line))[0]
                   for line in string.split("\n"))

    candidate = points
    for _ in range(20):                 # each try at least 2% smaller
        measured = width(candidate)
        if measured <= room or candidate <= size:
            return candidate
        candidate = max(size, 0.98 * candidate * min(1.0, room / measured))
    return size


def _texts_but_tick_labels(artist: Artist):
    """Every Text under ``artist`` except tick labels (a walk like ``findobj(Text)``
    that does not visit each tick's five artists: a few times faster)."""
    for child in artist.get_children():
        if isinstance(child, Axis):
            yield child.label
            yield child.offsetText
            continue
        if isinstance(child, Text):
            yield child
        yield from _texts_but_tick_labels(child)


def _fixed_title_height(fig: Figure) -> None:
    """Keep each axes' title at its default height, as ``rcParams["axes.titley"] = 1.0``
    would (without touching the global rcParams, which a Run's background thread must
    not): otherwise matplotlib measures every tick label of every axes at each draw to
    lift titles above tick labels on top (~0.1 s of a busy frame). A title placed with
    ``y=`` is already fixed; matplotlib keeps the switch in ``Axes._autotitlepos``
    (tests/test_explore.py checks the pixels against the rcParams way)."""
    for ax in fig.axes:
        if getattr(ax, "_autotitlepos", None):
            ax._autotitlepos = False
