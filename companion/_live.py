"""An experiment's live form: ipywidgets controls and an image that redraws in place.

Every display of an experiment is its own :class:`LiveView` (its widgets, the frames
it draws ahead, its Run button); the frames themselves are the experiment's
(:attr:`companion.explore.Experiment.frames`), shared by all its views.

* **Drawing ahead.** After each frame, the settings the reader may ask for next are
  drawn on the kernel's event loop while it is idle, one frame per turn, so that the
  next slider step only swaps a cached image (a fresh matplotlib frame costs
  0.1-0.3 s; a cached one a millisecond). A frame drawn ahead holds the loop, and a
  step that arrives meanwhile waits for it, so they come in order of need: at once
  the next setting in the direction the reader is moving (before the first move, one
  step up each control); the other settings one step away once the reader pauses for
  :attr:`LiveView.PAUSE` seconds; and, for the experiment the reader touched last,
  the rest of the grid, nearest first, after :attr:`LiveView.FILL_AFTER` seconds.
  This happens on the kernel's main thread, because matplotlib is not thread-safe.
* **Runs.** An ``expensive=True`` experiment computes on a *Run* button. Runs of every
  experiment of the kernel go, one at a time, to one worker thread
  (:class:`_RunQueue`), which starts a Run once the notebook's cells are done; the
  worker only calls ``draw``, the figure is rasterized on the main thread. While any
  Run is queued or computing, drawing ahead pauses in every view: a prefetched frame
  holds Python's GIL for ~0.1 s, and a training loop of small torch ops, which hands
  the GIL back after every op, then crawls (tests/benchmarks/bench_jupyterlab.py).
"""
from __future__ import annotations

import asyncio
import html
import itertools
import os
import queue
import sys
import threading
import time
import weakref
from typing import Any, Callable

from ._controls import Slider, marks_html

# every view displayed (weakly; a view lives as long as its widgets): tests look at them
_VIEWS: "weakref.WeakSet[LiveView]" = weakref.WeakSet()
# the view whose control the reader changed last (a weak reference), or None
_TOUCHED: "weakref.ref[LiveView] | None" = None


class LiveView:
    """One display of ``experiment``: build it with ``experiment.live()``; it displays
    itself as the last expression of a cell. Its widgets are attributes: ``inputs``
    (one per control), ``image``, ``status``, and for an expensive experiment
    ``button`` and ``progress``."""

    #: Seconds without a control change before the other settings one step away are
    #: drawn ahead (the next one in the direction of travel is drawn at once).
    PAUSE = 0.25
    #: Seconds without a control change before the rest of the grid is drawn ahead (only
    #: for the experiment the reader touched last).
    FILL_AFTER = 1.0

    def __init__(self, experiment) -> None:
        import ipywidgets as W  # only here: the static book and the tests need no widgets

        self.experiment = experiment
        self._ahead: list[tuple[int, ...]] = []    # drawn at once
        self._around: list[tuple[int, ...]] = []   # drawn once the reader pauses
        self._timer: asyncio.TimerHandle | None = None   # the next turn, when one is due
        self._moved_at = time.monotonic()
        self._shown: tuple[int, ...] | None = None
        self.running = False                 # a Run of this view is queued or computing
        rows = [self._control(W, i, name) for i, name in enumerate(experiment.names)]
        self.inputs = [w.children[0] if isinstance(w, W.VBox) else w for w in rows]
        for w in self.inputs:
            w.observe(self._on_change, names="value")
        self.image = W.Image(format="png", layout=W.Layout(max_width="100%"))
        self.status = W.HTML()
        parts: list[Any] = []
        if experiment.title:
            parts.append(W.HTML(f"<b>{html.escape(experiment.title)}</b>"))
        parts += rows
        if experiment.expensive:
            self.button = W.Button(description="Run", button_style="primary", icon="play")
            self.progress = W.FloatProgress(min=0.0, max=1.0, value=0.0, layout=W.Layout(width="200px"))
            self.button.on_click(lambda _: self.run())
            parts.append(W.HBox([self.button, self.progress, self.status]))
        else:
            parts.append(self.status)
        parts.append(self.image)
        self.widget = W.VBox(parts)
        _VIEWS.add(self)
        self._show(self.current(), first=True)

    def _control(self, W, i: int, name: str):
        exp = self.experiment
        control = exp.controls[name]
        options = [(lab, j) for j, (lab, _) in enumerate(exp.options[i])]
        description = control.label or name
        if isinstance(control, Slider):
            w = W.SelectionSlider(options=options, value=exp.default[i], description=description,
                                  continuous_update=not exp.expensive,
                                  style={"description_width": "initial"},
                                  layout=W.Layout(width="420px"))
            return W.VBox([w, W.HTML(marks_html(control))]) if control.marks else w
        if len(options) <= 5:
            return W.ToggleButtons(options=options, value=exp.default[i], description=description,
                                   style={"description_width": "initial", "button_width": "auto"})
        return W.Dropdown(options=options, value=exp.default[i], description=description,
                          style={"description_width": "initial"})

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)

    def current(self) -> tuple[int, ...]:
        """The grid point the controls are at."""
        return tuple(w.value for w in self.inputs)

    def _on_change(self, change) -> None:
        global _TOUCHED
        _TOUCHED = weakref.ref(self)
        self._show(self.current())

    def _show(self, index: tuple[int, ...], first: bool = False) -> None:
        exp = self.experiment
        if index in exp.frames:
            self.image.value = exp.frames[index]
            self.status.value = ""
        elif exp.expensive and not first:
            self.status.value = "press <b>Run</b> to compute this setting"
        elif exp.expensive:
            self.run(quiet=_RunQueue.QUIET)   # displayed by a cell: maybe during Run All
        else:
            try:
                started = time.perf_counter()
                self.image.value = exp.render(index)
                self.status.value = (f'<span style="color:#888">drawn in '
                                     f'{1e3 * (time.perf_counter() - started):.0f} ms</span>')
            except Exception as error:  # shown to the reader, never a crash of the notebook
                self.status.value = _error_html(error)
        if not exp.expensive:
            self._draw_ahead(index, self._shown)
        self._shown = index

    # -- drawing ahead ---------------------------------------------------------------
    def _draw_ahead(self, index: tuple[int, ...], previous: tuple[int, ...] | None) -> None:
        """Queue the settings one step away from ``index``, the one that continues the
        move from ``previous`` first, and schedule drawing them."""
        exp = self.experiment
        ahead = []
        for axis, n in enumerate(exp.shape):
            moved = 1 if previous is None else index[axis] - previous[axis]
            if moved:                 # one step further the same way
                j = index[axis] + (1 if moved > 0 else -1)
                if 0 <= j < n:
                    ahead.append(index[:axis] + (j,) + index[axis + 1:])
        self._ahead = [i for i in ahead if i not in exp.frames]
        around = [i for i in exp.neighbours(index) if i not in exp.frames and i not in ahead]
        self._around = sorted(around, key=lambda i: i < index)    # steps up first
        self._moved_at = time.monotonic()
        loop = _kernel_loop()
        if loop is not None and len(exp.frames) < exp.grid_size:
            self._schedule(loop, 0.01)

    def _schedule(self, loop, delay: float) -> None:
        """Draw ahead after ``delay`` seconds (or sooner, if a turn is already due
        sooner), unless a Run is queued or computing (then :meth:`_RunQueue.finished`
        resumes this view)."""
        if _RUNS.busy():
            _RUNS.defer(self)
            return
        due = loop.time() + delay
        if self._timer is not None:
            if self._timer.when() <= due:
                return
            self._timer.cancel()     # waiting for the reader's pause: a move comes first
        self._timer = loop.call_later(delay, self._step, loop)

    def _step(self, loop) -> None:
        """One turn of the event loop: at most one frame drawn ahead, then the next turn
        scheduled (at once, or when the reader's pause is long enough)."""
        self._timer = None
        if _RUNS.busy():          # a Run started since this step was scheduled
            _RUNS.defer(self)
            return
        if self._draw_one(self._ahead):
            self._schedule(loop, 0.01)
            return
        still = time.monotonic() - self._moved_at
        if self._around:
            if still < self.PAUSE:
                self._schedule(loop, self.PAUSE - still)
            else:
                self._draw_one(self._around)
                self._schedule(loop, 0.01)
            return
        if _TOUCHED is None or _TOUCHED() is not self:
            return                # the rest of the grid only for the one in use
        if still < self.FILL_AFTER:
            self._schedule(loop, self.FILL_AFTER - still)
            return
        nearest = self._nearest_missing()
        if nearest is not None:
            self._draw_one([nearest])
            self._schedule(loop, 0.01)

    def _draw_one(self, queue: list[tuple[int, ...]]) -> bool:
        """Draw the first setting of ``queue`` not drawn yet (taking it off the queue);
        False when there was none."""
        while queue:
            i = queue.pop(0)
            if i not in self.experiment.frames:
                try:
                    self.experiment.render(i)
                except Exception:  # _show reports it if the reader goes there
                    pass
                return True
        return False

    def _nearest_missing(self) -> tuple[int, ...] | None:
        """The setting fewest control steps from the current one that is not drawn yet
        (None when the whole grid is)."""
        here, exp = self.current(), self.experiment
        todo = [i for i in itertools.product(*(range(n) for n in exp.shape)) if i not in exp.frames]
        if not todo:
            return None
        return min(todo, key=lambda i: (sum(abs(a - b) for a, b in zip(i, here)), i))

    def prefetch_idle(self) -> None:
        """Draw every setting queued one step away now, as the kernel's idle time does
        (tests and benchmarks: a cell blocks the event loop)."""
        while self._draw_one(self._ahead) or self._draw_one(self._around):
            pass

    # -- Runs ----------------------------------------------------------------------
    def run(self, quiet: float | None = None) -> None:
        """Compute the current setting of an expensive experiment off the kernel's main
        thread (what the Run button does); nothing if this view's Run is in flight.
        ``quiet``: seconds the kernel's main thread must have been idle before it starts
        (default :attr:`_RunQueue.CLICKED`: a click reaches the kernel between cells)."""
        if self.running:
            return
        self.running = True
        exp, index, loop = self.experiment, self.current(), _kernel_loop()
        self.button.disabled = True
        self.progress.value = 0.0
        started = time.perf_counter()
        waited = [0.0]            # seconds queued (behind other Runs, or the notebook's cells)
        self.status.value = ("queued behind another Run…" if _RUNS.busy()
                             else "queued: starts when the kernel is idle…")
        _RUNS.started()

        def on_loop(function, *args) -> None:
            # widget updates and rasterizing belong to the kernel's main thread
            if loop is None:
                function(*args)
            else:
                loop.call_soon_threadsafe(function, *args)

        def progress(fraction: float) -> None:
            on_loop(setattr, self.progress, "value", float(min(max(fraction, 0.0), 1.0)))

        def done(status: str) -> None:
            self.status.value = status
            self.button.disabled = False
            self.running = False
            _RUNS.finished(loop)

        def finish(fig) -> None:
            try:
                png = exp.keep(index, fig)
            except Exception as error:
                done(_error_html(error))
                return
            if self.current() == index:
                self.image.value = png
            self.progress.value = 1.0
            total = time.perf_counter() - started
            done(f"done in {total:.1f} s" + (f" (of which {waited[0]:.1f} s waiting for the notebook's "
                                              f"cells or another Run)" if waited[0] >= 0.5 else ""))

        def work() -> None:
            waited[0] = time.perf_counter() - started
            on_loop(setattr, self.status, "value", "running…")
            try:  # the slow part: training, inside draw(); artists are only created here
                fig = exp.figure(index, progress)
            except Exception as error:
                on_loop(done, _error_html(error))
                return
            on_loop(finish, fig)

        _RUNS.submit(work, loop, _RunQueue.CLICKED if quiet is None else quiet)


def _error_html(error: Exception) -> str:
    """An exception as the red status line a reader sees instead of a traceback."""
    return f'<span style="color:#b00">{html.escape(type(error).__name__)}: {html.escape(str(error))}</span>'


def _kernel_loop():
    """The running asyncio loop of the IPython kernel (its main thread), or None."""
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


class _RunQueue:
    """The kernel's expensive Runs: one worker thread computes them one at a time, and a
    count of Runs queued or computing pauses drawing ahead (views that waited are
    resumed when the count returns to 0).

    Before each Run the worker waits until the kernel's main thread has been idle for
    a while (its event loop answers every ping within ``PING`` seconds), at most
    ``MAX_WAIT`` seconds: ``QUIET`` seconds for a Run displayed by a cell, which then
    starts when the notebook's cells are done (during *Run All*) instead of crawling
    beside them; ``CLICKED`` for a Run the reader clicked (the click reaches the kernel
    between cells, so one prompt ping tells whether another cell started). The worker computes with
    fewer torch threads than cores (one on 2 cores; the setting is per thread, and put
    back after each Run), leaving a core to the reader's frames."""

    QUIET = 0.3          # seconds the main thread must be idle before a Run starts
    CLICKED = 0.05       # the same, for a Run the reader clicked
    PING = 0.05          # seconds between pings; a later answer means "busy"
    MAX_WAIT = 600.0     # seconds a Run waits for quiet before it starts anyway

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._in_flight = 0
        self._deferred: "weakref.WeakSet[LiveView]" = weakref.WeakSet()
        self._jobs: "queue.SimpleQueue[tuple[Callable[[], None], Any, float]]" = queue.SimpleQueue()
        self._worker: threading.Thread | None = None

    def busy(self) -> bool:
        return self._in_flight > 0

    def started(self) -> None:
        with self._lock:
            self._in_flight += 1

    def defer(self, view: LiveView) -> None:
        with self._lock:
            self._deferred.add(view)

    def finished(self, loop) -> None:
        with self._lock:
            self._in_flight = max(self._in_flight - 1, 0)
            resume = [] if self._in_flight else list(self._deferred)
            if not self._in_flight:
                self._deferred.clear()
        for view in resume:       # without a loop (no kernel) nothing was scheduled
            if loop is not None:
                view._schedule(loop, 0.05)

    def submit(self, job: Callable[[], None], loop=None, quiet: float = QUIET) -> None:
        """Queue ``job`` (a callable with no arguments) for the worker; ``loop``: the
        kernel's event loop that must have been idle for ``quiet`` seconds before the
        job starts (None: start at once)."""
        with self._lock:
            self._jobs.put((job, loop, quiet))
            if self._worker is None or not self._worker.is_alive():
                self._worker = threading.Thread(target=self._work, name="companion-explore-runs",
                                                daemon=True)
                self._worker.start()

    def _work(self) -> None:
        while True:
            job, loop, quiet = self._jobs.get()
            if loop is not None:
                self._wait_until_quiet(loop, quiet)
            torch = sys.modules.get("torch")   # only if the notebook uses torch at all
            threads = torch.get_num_threads() if torch is not None else None
            try:
                if torch is not None:
                    torch.set_num_threads(max(1, min(threads, (os.cpu_count() or 2) - 1)))
                job()
            except Exception:  # each job reports its own errors; the worker lives on
                pass
            finally:
                if torch is not None:
                    torch.set_num_threads(threads)

    def _wait_until_quiet(self, loop, quiet: float = QUIET) -> None:
        """Return once the loop has answered pings promptly for ``quiet`` seconds in a
        row (a running cell blocks the loop, so its pings come back late), once the loop
        is closed, or after ``MAX_WAIT`` seconds."""
        start = quiet_since = time.monotonic()
        while time.monotonic() - quiet_since < quiet:
            if time.monotonic() - start > self.MAX_WAIT or loop.is_closed():
                return
            answered = threading.Event()
            sent = time.monotonic()
            try:
                loop.call_soon_threadsafe(answered.set)
            except RuntimeError:      # the loop is closed: nothing to wait for
                return
            if not answered.wait(timeout=1.0) or time.monotonic() - sent > self.PING:
                quiet_since = time.monotonic()
            time.sleep(self.PING)


_RUNS = _RunQueue()
