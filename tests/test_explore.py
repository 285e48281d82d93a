"""companion.explore: one experiment, live (ipywidgets) and static (precomputed HTML).

References: each frame is checked against a drawing whose colour encodes its
parameters (so the right frame for a setting is known independently of explore's
own bookkeeping), and the inline script is run in Chromium over every setting.
"""
from __future__ import annotations

import base64
import io
import itertools
import json
import re
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from companion.explore import MAX_FRAMES, Choice, Slider, explore, resolve_mode

DEPTHS = [1, 2, 3, 4]
KINDS = ["red", "green", "blue"]


def colour_of(depth, kind):
    """The colour a setting is drawn in: a known, distinct colour per grid point."""
    base = {"red": np.array([1.0, 0, 0]), "green": np.array([0, 1.0, 0]), "blue": np.array([0, 0, 1.0])}[kind]
    return base * (0.4 + 0.15 * depth)


def draw_colour(fig, depth, kind):
    ax = fig.add_axes([0, 0, 1, 1])
    ax.set_axis_off()
    ax.add_patch(__import__("matplotlib").patches.Rectangle((0, 0), 1, 1, color=colour_of(depth, kind)))


def centre_pixel(b64png: str) -> np.ndarray:
    image = Image.open(io.BytesIO(base64.b64decode(b64png))).convert("RGB")
    w, h = image.size
    return np.asarray(image)[h // 2, w // 2] / 255.0


def wait_for_run(view, seconds=10.0):
    """Block until ``view``'s Run is done (a test without an event loop: the worker
    thread updates the widgets itself), at most ``seconds``."""
    deadline = time.time() + seconds
    while view.running and time.time() < deadline:
        time.sleep(0.02)


async def settle(view, until=lambda: True, seconds=10.0):
    """Let the event loop turn until ``view``'s Run is done and ``until()`` holds, at
    most ``seconds``."""
    import asyncio

    deadline = time.monotonic() + seconds
    while (view.running or not until()) and time.monotonic() < deadline:
        await asyncio.sleep(0.02)


def make():
    return explore(draw_colour, {"depth": Slider(DEPTHS, value=3), "kind": Choice(KINDS)},
                   name="colours", figsize=(2, 1), dpi=40)


def static_data(html: str) -> dict:
    match = re.search(r'<script type="application/json" class="cx-data">(.*?)</script>', html, re.S)
    assert match, "static HTML carries no frame data"
    return json.loads(match.group(1))


def test_static_html_holds_one_frame_per_grid_point_in_the_right_order():
    data = static_data(make().static_html())
    assert len(data["frames"]) == len(DEPTHS) * len(KINDS)
    assert data["strides"] == [len(KINDS), 1]
    for (i, depth), (j, kind) in itertools.product(enumerate(DEPTHS), enumerate(KINDS)):
        k = i * data["strides"][0] + j * data["strides"][1]
        got = centre_pixel(data["images"][data["frames"][k]])
        np.testing.assert_allclose(got, colour_of(depth, kind), atol=3 / 255 + 0.02,
                                   err_msg=f"frame for depth={depth}, kind={kind}")
    assert data["labels"] == [[str(d) for d in DEPTHS], KINDS]


def test_identical_frames_are_stored_once():
    def draw(fig, a, b):  # b does not matter: 2 distinct images for 6 settings
        draw_colour(fig, a, "red")

    data = static_data(explore(draw, {"a": Slider([1, 2]), "b": Choice(["x", "y", "z"])},
                               figsize=(1, 1), dpi=20).static_html())
    assert len(data["frames"]) == 6 and len(data["images"]) == 2


def test_static_html_starts_at_the_default_and_sets_controls_to_it():
    html = make().static_html()
    data = static_data(html)
    first = re.search(r'<img class="cx-frame"[^>]*src="data:image/[a-z]+;base64,([^"]+)"', html).group(1)
    np.testing.assert_allclose(centre_pixel(first), colour_of(3, "red"), atol=0.03)
    assert 'value="2" data-cx-control="0"' in html  # index of depth=3
    assert len(data["images"]) == len(DEPTHS) * len(KINDS)


def test_inline_script_maps_every_setting_to_its_frame(tmp_path):
    """Run the page's own script in Chromium for every combination of control values."""
    sync_api = pytest.importorskip("playwright.sync_api")
    if not Path("/usr/bin/chromium").exists():
        pytest.fail("/usr/bin/chromium is missing: apt-get install chromium")
    page_file = tmp_path / "x.html"
    page_file.write_text(f"<!doctype html><html><body>{make().static_html()}</body></html>")
    data = static_data(page_file.read_text())
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
        tab = browser.new_page()
        errors = []
        tab.on("pageerror", lambda e: errors.append(str(e)))
        tab.goto(page_file.as_uri())
        slider, select = tab.locator('[data-cx-control="0"]'), tab.locator('[data-cx-control="1"]')
        for i, j in itertools.product(range(len(DEPTHS)), range(len(KINDS))):
            select.select_option(str(j))
            slider.evaluate("(el, v) => { el.value = v; el.dispatchEvent(new Event('input')); }", str(i))
            src = tab.locator("img.cx-frame").get_attribute("src")
            np.testing.assert_allclose(centre_pixel(src.split(",", 1)[1]), colour_of(DEPTHS[i], KINDS[j]),
                                       atol=0.03)
            assert tab.locator('[data-cx-output="0"]').text_content() == str(DEPTHS[i])
        browser.close()
    assert errors == []
    assert len(data["frames"]) == 12


def test_live_control_change_redraws_the_image():
    exp = make()
    view = exp.live()
    assert view.widget is not None
    before = view.image.value
    np.testing.assert_allclose(centre_pixel(base64.b64encode(before).decode()), colour_of(3, "red"), atol=0.03)
    view.inputs[1].value = 2  # kind -> blue
    after = view.image.value
    assert after != before
    np.testing.assert_allclose(centre_pixel(base64.b64encode(after).decode()), colour_of(3, "blue"), atol=0.03)


def test_live_prefetches_the_neighbours_so_one_step_only_swaps_an_image():
    # Reference: a counter of draw() calls. After the first frame, the settings one
    # control step away are drawn in the background; stepping to one draws nothing new,
    # and the image shown is that setting's colour.
    calls = []

    def draw(fig, depth, kind):
        calls.append((depth, kind))
        draw_colour(fig, depth, kind)

    exp = explore(draw, {"depth": Slider(DEPTHS, value=3), "kind": Choice(KINDS)}, name="pf")
    view = exp.live()                            # default (depth 3, red) = index (2, 0)
    view.prefetch_idle()
    assert set(exp.neighbours((2, 0))) == {(3, 0), (1, 0), (2, 1)}
    assert {(4, "red"), (2, "red"), (3, "green")} <= set(calls)
    view.inputs[0].value = 3                     # depth 3 -> 4: prefetched, not drawn again
    assert calls.count((4, "red")) == 1
    np.testing.assert_allclose(centre_pixel(base64.b64encode(view.image.value).decode()),
                               colour_of(4, "red"), atol=0.03)


def test_live_expensive_runs_in_background_with_progress():
    seen = []

    def slow(fig, n, progress):
        for k in range(5):
            time.sleep(0.01)
            progress((k + 1) / 5)
            seen.append(k)
        draw_colour(fig, n, "green")

    exp = explore(slow, {"n": Slider([1, 2])}, expensive=True, figsize=(1, 1), dpi=20)
    view = exp.live()  # the first setting starts computing at once, without blocking
    wait_for_run(view)
    assert view.progress.value == 1.0 and view.image.value
    view.inputs[0].value = 0  # not computed yet: asks for Run rather than freezing
    assert "Run" in view.status.value
    view.button.click()
    wait_for_run(view)
    np.testing.assert_allclose(centre_pixel(base64.b64encode(view.image.value).decode()), colour_of(1, "green"),
                               atol=0.03)


def test_live_error_is_shown_not_raised():
    def broken(fig, a):
        if a == 2:
            raise ValueError("lr must be positive, got -1")
        draw_colour(fig, a, "red")

    exp = explore(broken, {"a": Slider([1, 2], value=1)}, figsize=(1, 1), dpi=20)
    view = exp.live()
    view.inputs[0].value = 1
    assert "lr must be positive" in view.status.value


def test_empty_figure_is_refused():
    exp = explore(lambda fig, a: None, {"a": Slider([1, 2])}, name="blank")
    with pytest.raises(RuntimeError, match="blank"):
        exp.static_html()


def test_grid_too_large_names_experiment_and_size():
    with pytest.raises(ValueError, match=r"'huge'.*201 points"):
        explore(draw_colour, {"depth": Slider(list(range(67))), "kind": Choice(KINDS)}, name="huge")
    assert MAX_FRAMES == 200


@pytest.mark.parametrize("controls, message", [
    # the controls refuse their own arguments where they are made (a lambda, so that
    # building them happens inside pytest.raises)
    (lambda: {"kind": Choice([])}, r"options must not be empty"),
    (lambda: {"depth": Slider([])}, r"values must not be empty"),
    (lambda: {"depth": Slider([1, 2], value=5)}, r"value must be one of \[1, 2\], got 5"),
    (lambda: {"depth": Slider([1, float("nan")])}, r"values\[1\] must be a finite number"),
    (lambda: {}, r"controls must not be empty"),
])
def test_bad_controls_are_refused_with_their_name(controls, message):
    with pytest.raises(ValueError, match=message):
        explore(draw_colour, controls())


def test_a_str_is_not_a_list_of_options():
    with pytest.raises(TypeError, match=r"options must be a list or tuple of options.*'relu'"):
        Choice("relu")
    with pytest.raises(ValueError, match=r"options must not repeat an entry, got 'relu' twice"):
        Choice(["relu", "relu"])
    with pytest.raises(TypeError, match=r"label must be a str or None, got 3"):
        Slider([1, 2], label=3)
    with pytest.raises(TypeError, match=r"title must be a str or None, got 3"):
        explore(draw_colour, {"depth": Slider(DEPTHS), "kind": Choice(KINDS)}, title=3)


def test_draw_must_take_exactly_the_controls_names():
    controls = {"depth": Slider(DEPTHS), "colour": Choice(KINDS)}
    with pytest.raises(ValueError, match=r"draw must take .*takes \['depth', 'kind'\], the controls "
                                         r"are \['depth', 'colour'\].*\['colour'\].*\['kind'\]"):
        explore(draw_colour, controls)

    def extra_optional(fig, depth, kind, alpha=0.5):       # an optional extra parameter is fine
        draw_colour(fig, depth, kind)

    def any_names(fig, **params):                          # **params takes any control
        draw_colour(fig, params["depth"], params["kind"])

    for draw in (extra_optional, any_names):
        explore(draw, {"depth": Slider(DEPTHS), "kind": Choice(KINDS)}, figsize=(1, 1), dpi=20)


def test_index_is_checked_per_frame():
    exp = make()
    with pytest.raises(ValueError, match=r"index\[0\] \(control 'depth'\) must be an int in \[0, 3\], got 4"):
        exp.render((4, 0))
    with pytest.raises(ValueError, match=r"index must have one option index per control"):
        exp.params((1,))
    with pytest.raises(TypeError, match=r"index must be a tuple"):
        exp.figure("10")
    assert exp.params(np.array([1, 2])) == {"depth": 2, "kind": "blue"}


def test_mode_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("COMPANION_EXPLORE_MODE", "static")
    assert resolve_mode() == "static"
    monkeypatch.setenv("COMPANION_EXPLORE_MODE", "live")
    assert resolve_mode() == "live"
    monkeypatch.delenv("COMPANION_EXPLORE_MODE")
    assert resolve_mode() == "static"  # not inside a kernel
    with pytest.raises(ValueError, match="mode must be 'static' or 'live', got 'html'"):
        resolve_mode("html")


# -- the live experience while a Run computes, and the cost of a cold frame ----------
def draw_text_heavy(fig, depth, kind):
    """Ticks, a log axis, mathtext, a legend and a title that changes per setting: the
    text that the shared renderer's caches hold."""
    import matplotlib

    ax1, ax2 = fig.subplots(1, 2)
    x = np.arange(1, 11)
    ax1.semilogy(x, 10.0 ** (-depth * x / 10), color=colour_of(depth, kind), label=r"$\|J_\ell\|_2$")
    ax1.set(xlabel=r"layer $\ell$", ylabel="norm", title=f"{kind}: depth {depth}")
    ax1.legend(fontsize=7)
    ax2.plot(x, np.sin(x * depth), label=r"$\sin(\ell d)$")
    ax2.set_title(rf"$d = {depth}$, {kind}")
    matplotlib.patches  # noqa: B018 (the module is imported for draw_colour too)


def fresh_png(exp, index, compact=False):
    """The reference: the frame rasterized on a brand-new Agg canvas (a new renderer);
    with ``compact`` at the static book's larger dpi and in its encoding."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from companion._raster import encode, encode_static

    from companion.explore import _STATIC_SCALE

    fig = exp.figure(index)
    if compact:
        fig.set_dpi(_STATIC_SCALE * exp.dpi)
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    rgba = np.asarray(canvas.buffer_rgba())
    return encode_static(rgba) if compact else encode(rgba, compact=False)


def test_the_shared_renderer_gives_the_same_png_bytes_as_a_fresh_canvas():
    # Reference: each frame drawn on a fresh FigureCanvasAgg (what explore did before it
    # kept one renderer per frame size). Two sizes interleaved, live and compact (book).
    big = explore(draw_text_heavy, {"depth": Slider(DEPTHS, value=3), "kind": Choice(KINDS)},
                  name="text-big", figsize=(5, 2), dpi=50)
    small = explore(draw_text_heavy, {"depth": Slider(DEPTHS, value=3), "kind": Choice(KINDS)},
                    name="text-small", figsize=(3, 2), dpi=40)
    for index in [(0, 0), (3, 2), (0, 0)]:
        for exp in (big, small):
            exp.frames.clear()
            assert exp.render(index) == fresh_png(exp, index), (exp.name, index)
            assert exp.render(index, compact=True) == fresh_png(exp, index, compact=True), (exp.name, index)


def test_cold_renders_leak_no_figures_and_keep_one_renderer_per_size():
    # Reference: weak references to every figure draw() was handed (all must be freed
    # after a collection), pyplot's figure list, and the renderer table's size.
    import gc
    import weakref

    import matplotlib.pyplot as plt

    from companion import _raster

    figures = []

    def draw(fig, depth, kind):
        figures.append(weakref.ref(fig))
        draw_text_heavy(fig, depth, kind)

    exp = explore(draw, {"depth": Slider(DEPTHS, value=3), "kind": Choice(KINDS)},
                  name="leak", figsize=(2.5, 1.5), dpi=30)
    pyplot_before = plt.get_fignums()
    for index in itertools.product(range(2), range(len(KINDS))):
        exp.render(index, compact=True)
    gc.collect()
    assert len(figures) == 2 * len(KINDS)
    assert all(ref() is None for ref in figures), "a drawn figure is still alive"
    assert plt.get_fignums() == pyplot_before
    w, h = int(2.5 * 42), int(1.5 * 42)    # the book's frames: 1.4 x the pixels
    assert sum(1 for key in _raster._RENDERERS if key[:2] == (w, h)) == 1
    assert len(_raster._RENDERERS) <= 8


def draw_grid_layout(fig, depth, kind):
    """A gridspec laid out by hand, a log axis, tick_params, a legend: what the
    chapters' busiest frames do. Depth 4 lays its axes out differently (one panel)."""
    x = np.arange(1, 11)
    if depth == 4:
        ax = fig.subplots()
        ax.plot(x, x * 0.5, color=colour_of(depth, kind))
        ax.set_title("one panel")
        return
    grid = fig.add_gridspec(2, 3, width_ratios=[2, 1, 1])
    top = fig.add_subplot(grid[0, :])
    top.semilogy(x, 10.0 ** (-depth * x / 5), color=colour_of(depth, kind), label="norm")
    top.legend(loc="best", fontsize=6)
    top.tick_params(labelsize=6, direction="in")
    left, right = fig.add_subplot(grid[1, 0]), fig.add_subplot(grid[1, 1:], sharey=None)
    left.bar(x, x * depth)
    right.plot(x, np.cos(x * depth), label=kind)
    right.set(xlabel="layer", ylim=(-1.5, 1.5 + depth))


def draw_text_everywhere(fig, depth, kind):
    """The same strings at many sub-pixel and whole-pixel offsets, rotated, in two
    sizes, without antialiasing, with mathtext and a box: where cached glyph bitmaps
    and shaped runs could differ from text rendered afresh."""
    for k in range(24):
        x = 0.02 + 0.037 * k + 0.0013 * depth * k
        fig.text(x, 0.1 + 0.03 * (k % 5), f"{k % 10}.5e-{depth}", fontsize=6 + (k % 2) * 2.5,
                 rotation=(0, 90, 33)[k % 3], antialiased=k % 4 != 3)
    fig.text(0.1, 0.8, rf"$\|J\|_2 = \frac{{{depth}}}{{2}}$ {kind}", fontsize=9)
    fig.text(0.6, 0.8, f"{kind} {depth}", fontsize=8, bbox={"facecolor": "w"})


def test_cached_glyphs_give_the_pixels_of_text_rendered_afresh():
    # Reference: each frame on a fresh FigureCanvasAgg (matplotlib's own text drawing,
    # nothing kept). The shared renderer keeps glyph bitmaps per sub-pixel position and
    # shaped runs per string; drawing text at offsets, rotations, sizes, without
    # antialiasing and with the "none" hinting must give the same PNG bytes.
    import matplotlib

    from companion import _glyphs, _raster

    exp = explore(draw_text_everywhere, {"depth": Slider(DEPTHS, value=1), "kind": Choice(KINDS)},
                  name="glyphs", figsize=(4, 2), dpi=150)   # its two sizes stay above the floor
    for hinting in ("default", "none"):
        with matplotlib.rc_context({"text.hinting": hinting}):
            for index in [(0, 0), (1, 1), (3, 2), (0, 0), (2, 1)]:
                exp.frames.clear()
                assert exp.render(index) == fresh_png(exp, index), (hinting, index)
    if _glyphs.supported():
        assert _glyphs.renderer_class().__name__ == "_GlyphCachingRenderer"
        assert _glyphs._GLYPHS and _glyphs._RUNS_OF_GLYPHS, "nothing was kept: the cache is not in use"
    assert _raster.GLYPH_CACHE


def test_the_glyph_cache_switch_falls_back_to_matplotlibs_own_renderer(monkeypatch):
    # Reference: a fresh FigureCanvasAgg, as above; with the switch off (or on a
    # matplotlib version the cache is not tested on) the shared renderers are plain
    # RendererAgg objects and the bytes are the same.
    from matplotlib.backends.backend_agg import RendererAgg

    from companion import _glyphs, _raster

    exp = explore(draw_text_everywhere, {"depth": Slider(DEPTHS, value=1), "kind": Choice(KINDS)},
                  name="no-glyphs", figsize=(3, 2), dpi=50)
    monkeypatch.setattr(_raster, "GLYPH_CACHE", False)
    for index in [(0, 0), (2, 1)]:
        exp.frames.clear()
        assert exp.render(index) == fresh_png(exp, index), index
    assert any(type(r) is RendererAgg for r in _raster._RENDERERS.values())
    monkeypatch.setattr(_raster, "GLYPH_CACHE", True)
    monkeypatch.setattr(_glyphs.matplotlib, "__version__", "9.0.0")   # an untested version
    assert not _glyphs.supported() and _glyphs.renderer_class() is RendererAgg


def test_the_garbage_collector_is_paused_during_a_frame_and_restored_after():
    # Reference: gc.isenabled() seen from inside draw(), and after render(); a collector
    # the reader switched off stays off.
    import gc

    seen = []

    def draw(fig, depth, kind):
        seen.append(gc.isenabled())
        draw_colour(fig, depth, kind)

    exp = explore(draw, {"depth": Slider(DEPTHS, value=1), "kind": Choice(KINDS)},
                  name="gc", figsize=(1, 1), dpi=20)
    assert gc.isenabled()
    exp.render((0, 0))
    assert seen == [False] and gc.isenabled()
    gc.disable()
    try:
        exp.render((1, 0))
        assert seen == [False, False] and not gc.isenabled()
    finally:
        gc.enable()

    def broken(fig, depth, kind):
        raise ValueError("depth is bad")

    bad = explore(broken, {"depth": Slider(DEPTHS, value=1), "kind": Choice(KINDS)},
                  name="gc-bad", figsize=(1, 1), dpi=20)
    with pytest.raises(ValueError, match="depth is bad"):
        bad.render((0, 0))
    assert gc.isenabled(), "an error in draw() left the collector off"


def test_prefetch_waits_while_any_run_computes_and_resumes_after():
    # Reference: the draw() calls of a cheap experiment, counted, and a Run of another
    # experiment held open by an Event: while it is in flight the reader's own frame is
    # drawn at once, its neighbours are not; once the Run is done, they are.
    import asyncio
    import threading

    from companion import _live

    gate = threading.Event()
    calls = []

    def slow(fig, n, progress):
        gate.wait(10)
        draw_colour(fig, n, "green")

    def cheap(fig, depth, kind):
        calls.append((depth, kind))
        draw_colour(fig, depth, kind)

    async def scenario():
        run = explore(slow, {"n": Slider([1, 2])}, expensive=True, figsize=(1, 1), dpi=20)
        other = explore(cheap, {"depth": Slider(DEPTHS, value=3), "kind": Choice(KINDS)},
                        name="cheap", figsize=(1, 1), dpi=20)
        run = run.live()                  # its first setting starts computing at once
        assert _live._RUNS.busy()
        other = other.live()              # the reader's frame: drawn now
        assert calls == [(3, "red")]
        await asyncio.sleep(0.4)          # several prefetch turns of the loop
        assert calls == [(3, "red")], "prefetched while a Run computed"
        other.inputs[1].value = 1        # the reader moves: drawn at once, still no prefetch
        assert calls == [(3, "red"), (3, "green")]
        await asyncio.sleep(0.2)
        assert len(calls) == 2
        gate.set()
        await settle(run, until=lambda: len(calls) >= 5)
        assert not _live._RUNS.busy()
        assert "done in" in run.status.value
        # the neighbours of (depth 3, green) = index (2, 1); (3, red) was drawn first
        assert {(4, "green"), (2, "green"), (3, "red"), (3, "blue")} <= set(calls)

    asyncio.run(scenario())


def test_runs_of_two_experiments_compute_one_at_a_time():
    # Reference: a count of draw() calls inside the worker at the same moment (never
    # above 1), and both images arrive with their own colour.
    import threading

    from companion import _live

    lock, active, most = threading.Lock(), [0], [0]

    def slow(fig, n, progress):
        with lock:
            active[0] += 1
            most[0] = max(most[0], active[0])
        time.sleep(0.1)
        with lock:
            active[0] -= 1
        draw_colour(fig, n, "blue")

    a = explore(slow, {"n": Slider([1, 2])}, name="run-a", expensive=True, figsize=(1, 1), dpi=20)
    b = explore(slow, {"n": Slider([3, 4])}, name="run-b", expensive=True, figsize=(1, 1), dpi=20)
    a, b = a.live(), b.live()
    assert "queued behind" in b.status.value
    wait_for_run(a)
    wait_for_run(b)
    assert most[0] == 1
    assert not _live._RUNS.busy()
    np.testing.assert_allclose(centre_pixel(base64.b64encode(a.image.value).decode()), colour_of(2, "blue"),
                               atol=0.03)
    np.testing.assert_allclose(centre_pixel(base64.b64encode(b.image.value).decode()), colour_of(4, "blue"),
                               atol=0.03)


def test_a_run_starts_only_once_the_kernels_main_thread_is_idle():
    # Reference: clocks. Right after the Run is queued, the main thread blocks its event
    # loop for 0.5 s (as a running cell does; time.sleep frees the GIL, so only the wait
    # for quiet can hold the Run back); draw() must begin after the block ended.
    import asyncio

    started = []

    def slow(fig, n, progress):
        started.append(time.monotonic())
        draw_colour(fig, n, "red")

    async def scenario():
        run = explore(slow, {"n": Slider([1, 2])}, name="quiet", expensive=True, figsize=(1, 1), dpi=20)
        run = run.live()
        time.sleep(0.5)
        unblocked = time.monotonic()
        await settle(run)
        assert started and started[0] >= unblocked
        assert "done in" in run.status.value

    asyncio.run(scenario())


def test_a_run_computes_with_fewer_torch_threads_than_cores_and_leaves_the_main_threads():
    # Reference: torch.get_num_threads() read inside draw() (the worker thread) and in the
    # test's own thread before and after; OpenMP's thread count is per thread.
    import os

    import torch

    seen = []

    def slow(fig, n, progress):
        seen.append(torch.get_num_threads())
        draw_colour(fig, n, "red")

    main = torch.get_num_threads()
    run = explore(slow, {"n": Slider([1, 2])}, name="threads", expensive=True, figsize=(1, 1), dpi=20)
    run = run.live()
    wait_for_run(run)
    assert seen and 1 <= seen[0] <= max(1, (os.cpu_count() or 2) - 1)
    assert torch.get_num_threads() == main


def test_after_a_pause_the_whole_grid_is_prefetched_nearest_first(monkeypatch):
    # Reference: the draw() calls, counted in order. After the reader's move only the
    # next setting in the direction of travel is drawn at once; the other settings one
    # step away follow after PAUSE; once the reader has left the controls alone for
    # FILL_AFTER seconds the rest of the grid follows, each next frame at least as many
    # control steps from the shown setting as the one before, until every setting is
    # cached (a far jump then only swaps an image). Another experiment the reader has
    # not touched draws only its neighbours.
    import asyncio

    from companion import _live

    monkeypatch.setattr(_live.LiveView, "PAUSE", 0.25)
    monkeypatch.setattr(_live.LiveView, "FILL_AFTER", 0.5)
    calls, others = [], []

    def cheap(fig, depth, kind):
        calls.append((depth, kind))
        draw_colour(fig, depth, kind)

    def other(fig, depth, kind):
        others.append((depth, kind))
        draw_colour(fig, depth, kind)

    async def scenario():
        exp = explore(cheap, {"depth": Slider(DEPTHS, value=DEPTHS[0]), "kind": Choice(KINDS)},
                      name="fill", figsize=(1, 1), dpi=20)
        untouched = explore(other, {"depth": Slider(DEPTHS, value=DEPTHS[1]), "kind": Choice(KINDS)},
                            name="untouched", figsize=(1, 1), dpi=20).live()
        view = exp.live()
        view.inputs[0].value = 1                  # the reader moves: depth 1 -> 2
        start = view.current()
        del calls[:2]                             # the first frame and the one moved to
        await asyncio.sleep(0.15)                 # within the pause: the next one only
        assert calls == [(3, "red")]
        for _ in range(300):
            await asyncio.sleep(0.02)
            if len(exp.frames) == exp.grid_size:
                break
        assert len(exp.frames) == exp.grid_size == len(DEPTHS) * len(KINDS)
        index = {(d, k): (DEPTHS.index(d), KINDS.index(k)) for d in DEPTHS for k in KINDS}
        steps = [sum(abs(a - b) for a, b in zip(index[c], start)) for c in calls]
        assert steps[0] == 1 and steps == sorted(steps)
        assert len(calls) == len(set(calls)), "a setting was drawn twice"
        drawn = {index[c] for c in others}
        assert drawn == {untouched.current()} | set(untouched.experiment.neighbours(untouched.current()))

    asyncio.run(scenario())


def test_drawing_ahead_follows_the_direction_of_travel():
    # Reference: the settings queued after each move, worked out by hand. Before any
    # move, one step up each control comes first; after a move, one more step the same
    # way; the other settings one step away wait for the reader's pause.
    exp = make()                                   # depth 3 (index 2) of 4, kind red of 3
    view = exp.live()
    assert view._ahead == [(3, 0), (2, 1)] and view._around == [(1, 0)]
    view.inputs[0].value = 1                       # depth 3 -> 2: moving down
    assert view._ahead == [(0, 0)] and view._around == [(1, 1)]
    view.inputs[1].value = 2                       # kind red -> blue: a jump of two, rightwards
    assert view._ahead == [] and set(view._around) == {(2, 2), (0, 2), (1, 1)} - set(exp.frames)


# -- what a frame does not do: global state, shared controls --------------------------
def draw_ticks_on_top(fig, depth, kind):
    """Tick labels above the axes, where matplotlib would lift an automatic title."""
    ax = fig.subplots()
    ax.plot(np.arange(5), np.arange(5) * depth, color=colour_of(depth, kind))
    ax.xaxis.tick_top()
    ax.set_title(f"{kind} {depth}")


@pytest.mark.parametrize("drawing", [draw_text_heavy, draw_grid_layout, draw_ticks_on_top])
def test_titles_stay_where_rcparams_titley_would_put_them(drawing):
    # Reference: the frame drawn the rcParams way, under
    # matplotlib.rc_context({"axes.titley": 1.0}) on a fresh figure and canvas (what
    # explore did before it stopped touching the global rcParams); same PNG bytes.
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from companion import explore as ex
    from companion._raster import encode

    exp = explore(drawing, {"depth": Slider(DEPTHS, value=1), "kind": Choice(KINDS)},
                  name=f"titles-{drawing.__name__}", figsize=(4, 2.5), dpi=50)
    before = dict(matplotlib.rcParams)
    for index in [(0, 0), (3, 2)]:
        with matplotlib.rc_context({"axes.titley": 1.0}):
            fig = Figure(figsize=exp.figsize, dpi=exp.dpi, subplotpars=ex._MARGINS)
            drawing(fig, **exp.params(index))
        ex._plain_log_ticks(fig)
        ex._raise_small_text(fig, ex._min_text_points(exp.figsize, exp.dpi))
        canvas = FigureCanvasAgg(fig)
        canvas.draw()
        assert exp.render(index) == encode(np.asarray(canvas.buffer_rgba()), compact=False), index
    assert dict(matplotlib.rcParams) == before


def test_a_run_leaves_the_global_rcparams_alone():
    # Reference: matplotlib.rcParams read on the main thread while a Run's draw() is
    # computing in the worker thread, and a style change the reader makes during the
    # Run, read after it: neither is touched by the Run.
    import threading

    import matplotlib

    gate, inside = threading.Event(), threading.Event()

    def slow(fig, n, progress):
        inside.set()
        gate.wait(10)
        draw_colour(fig, n, "red")

    view = explore(slow, {"n": Slider([1, 2])}, name="rc-run", expensive=True,
                   figsize=(1, 1), dpi=20).live()
    assert inside.wait(10)
    titley = matplotlib.rcParams["axes.titley"]
    width = matplotlib.rcParams["lines.linewidth"]
    try:
        matplotlib.rcParams["lines.linewidth"] = width + 1.5       # the reader's own style
        gate.set()
        wait_for_run(view)
        assert "done in" in view.status.value
        assert titley is None, "a Run changed the global rcParams while it computed"
        assert matplotlib.rcParams["lines.linewidth"] == width + 1.5, "a Run undid the reader's style"
    finally:
        matplotlib.rcParams["lines.linewidth"] = width


def test_two_displays_of_one_experiment_have_their_own_controls():
    # Reference: the centre colour of each display's image. Moving the first display's
    # control redraws the first image only; the second keeps its own setting.
    exp = make()
    first, second = exp.live(), exp.live()
    first.inputs[1].value = 2                                      # kind -> blue
    np.testing.assert_allclose(centre_pixel(base64.b64encode(first.image.value).decode()),
                               colour_of(3, "blue"), atol=0.03)
    np.testing.assert_allclose(centre_pixel(base64.b64encode(second.image.value).decode()),
                               colour_of(3, "red"), atol=0.03)
    second.inputs[0].value = 0                                     # depth -> 1
    assert first.current() == (2, 2) and second.current() == (0, 0)


def test_displaying_again_during_a_run_leaves_no_run_in_flight_after():
    # Reference: the run queue's count of Runs in flight (0 once both displays' Runs are
    # done; before each display had its own state, the second display's Run left
    # prefetching paused for good), and both displays' status lines.
    import threading

    from companion import _live

    gate = threading.Event()

    def slow(fig, n, progress):
        gate.wait(10)
        draw_colour(fig, n, "green")

    exp = explore(slow, {"n": Slider([1, 2])}, name="again", expensive=True, figsize=(1, 1), dpi=20)
    first = exp.live()                  # starts computing its first setting
    second = exp.live()                 # displayed again while the Run is in flight
    assert _live._RUNS.busy()
    gate.set()
    wait_for_run(first)
    wait_for_run(second)
    assert not _live._RUNS.busy()
    assert "done in" in first.status.value and "done in" in second.status.value
    assert first.image.value and second.image.value


def test_a_run_waits_for_quiet_with_a_bound():
    # Reference: clocks. A closed loop ends the wait at once; a loop that never answers
    # (not running) ends it after MAX_WAIT instead of hanging the worker.
    import asyncio

    from companion import _live

    queue = _live._RunQueue()
    closed = asyncio.new_event_loop()
    closed.close()
    t0 = time.monotonic()
    queue._wait_until_quiet(closed)
    assert time.monotonic() - t0 < 0.5
    silent = asyncio.new_event_loop()
    try:
        queue.MAX_WAIT = 0.3
        t0 = time.monotonic()
        queue._wait_until_quiet(silent)
        assert 0.3 <= time.monotonic() - t0 < 3.0
    finally:
        silent.close()


def test_a_clicked_run_starts_without_waiting_for_a_long_quiet():
    # Reference: clocks. A Run displayed by a cell waits for QUIET seconds of an idle
    # main thread (Run All may still be running cells); a click reaches the kernel
    # between cells, so its Run waits only CLICKED seconds, well under QUIET.
    import asyncio

    from companion import _live

    started = []

    def slow(fig, n, progress):
        started.append(time.monotonic())
        draw_colour(fig, n, "red")

    async def scenario():
        view = explore(slow, {"n": Slider([1, 2])}, name="clicked", expensive=True,
                       figsize=(1, 1), dpi=20).live()
        await settle(view)
        view.inputs[0].value = 0
        clicked = time.monotonic()
        view.button.click()
        await settle(view)
        assert len(started) == 2 and "done in" in view.status.value
        assert started[1] - clicked < _live._RunQueue.QUIET, started[1] - clicked

    asyncio.run(scenario())


def test_static_frames_have_more_pixels_than_the_size_they_are_shown_at():
    # Reference: figsize x dpi (closed form) against the <img>'s width/height, the same
    # times 1.4 against the decoded image's size, and the data URL's type against the
    # format Pillow finds in the bytes.
    from companion._raster import STATIC_MIME
    from companion.explore import _STATIC_SCALE

    assert _STATIC_SCALE == 1.4
    exp = explore(draw_colour, {"depth": Slider(DEPTHS, value=3), "kind": Choice(KINDS)},
                  name="sizes", figsize=(2.5, 1.5), dpi=40)
    html = exp.static_html()
    img = re.search(r'<img class="cx-frame"[^>]*>', html).group(0)
    assert 'width="100" height="60"' in img
    for encoded in static_data(html)["images"]:
        image = Image.open(io.BytesIO(base64.b64decode(encoded)))
        assert image.size == (140, 84)
        assert Image.MIME[image.format] == STATIC_MIME
    assert f'src="data:{STATIC_MIME};base64,' in img
    assert f"data:{STATIC_MIME};base64," in html.split("<script>", 1)[1]    # the script's swaps


def draw_small_text(fig, depth, kind):
    """Text of every kind at 4-5 points (below any floor), one title at 30 points."""
    ax, ax2 = fig.subplots(1, 2)
    ax.plot(np.arange(1, 40), 1e-5 * np.arange(1, 40) * depth, label=kind)
    ax.set_xscale("log")
    ax.tick_params(labelsize=4)
    ax.set_xlabel("layer", fontsize=5)
    ax.legend(fontsize=4, title="kind", title_fontsize=5)
    ax.annotate("here", (3, 3e-5), fontsize=4, arrowprops={"arrowstyle": "->"})
    ax.set_title("big", fontsize=30)
    image = ax2.imshow(np.arange(12.0).reshape(3, 4))
    colorbar = fig.colorbar(image, ax=ax2)
    colorbar.ax.tick_params(labelsize=4)
    colorbar.set_label("value", fontsize=5)
    for label in ax2.get_yticklabels():
        label.set_fontsize(4)
    fig.suptitle(f"depth {depth}", fontsize=5)
    fig.text(0.01, 0.01, "note", fontsize=4)


def drawn_text_sizes(fig):
    """(string, size in pixels) of every text a fresh Agg canvas draws for ``fig``."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg, RendererAgg

    drawn = []

    class Recording(RendererAgg):
        def draw_text(self, gc, x, y, s, prop, angle, ismath=False, mtext=None):
            drawn.append((s, prop.get_size_in_points() * self.dpi / 72))
            return super().draw_text(gc, x, y, s, prop, angle, ismath, mtext)

    canvas = FigureCanvasAgg(fig)
    width, height = canvas.get_width_height(physical=True)
    canvas.renderer = Recording(width, height, fig.dpi)
    canvas.get_renderer = lambda: canvas.renderer
    fig.draw(canvas.renderer)
    return drawn


@pytest.mark.parametrize("figsize, dpi, shown_width", [((4, 2), 60, 240), ((12, 3), 80, 666)])
def test_no_text_is_drawn_smaller_than_11_css_pixels(figsize, dpi, shown_width):
    # Reference: the size of every string matplotlib's own RendererAgg is asked to draw
    # (a fresh canvas), times the width the page shows the frame at over its pixel
    # width: a frame is shown figsize x dpi CSS px wide, or shrunk to the 666 px column
    # of a 1280 px window (measured in Chromium). Live and static frames alike.
    exp = explore(draw_small_text, {"depth": Slider(DEPTHS, value=3), "kind": Choice(KINDS)},
                  name="small-text", figsize=figsize, dpi=dpi)
    drawn = drawn_text_sizes(exp.figure())
    css_per_pixel = shown_width / (figsize[0] * dpi)
    strings = {s for s, _ in drawn}
    assert {"layer", "kind", "here", "note", "value", "depth 3", "big"} <= strings
    assert sum(s.isdigit() for s in strings) >= 3, "the tick labels were not drawn"
    small = [(s, round(px * css_per_pixel, 2)) for s, px in drawn if px * css_per_pixel < 11 - 1e-6]
    assert small == [], f"text under 11 CSS px: {small}"
    assert max(px for s, px in drawn if s == "big") == pytest.approx(30 * dpi / 72), "larger text changed"


def test_the_text_walk_finds_every_text_but_the_tick_labels():
    # Reference: matplotlib's own Figure.findobj(Text), less the ticks' labels.
    from matplotlib.figure import Figure
    from matplotlib.text import Text

    from companion import explore as ex

    fig = Figure(figsize=(5, 2), dpi=50)
    draw_small_text(fig, 2, "red")
    fig.canvas.draw()
    every = {id(t) for t in fig.findobj(Text)}     # first: it makes ticks as it goes
    ticks = [tick for ax in fig.axes for axis in (ax.xaxis, ax.yaxis)
             for tick in axis.majorTicks + axis.minorTicks]
    expected = every - {id(t) for tick in ticks for t in (tick.label1, tick.label2)}
    assert {id(t) for t in ex._texts_but_tick_labels(fig)} == expected


def _drawn_on_a_fresh_canvas(draw, name):
    """The default frame of a one-control experiment (6 x 2 in at 80 dpi), drawn on a
    fresh Agg canvas, and that canvas's renderer (to measure what was drawn)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    fig = explore(draw, {"n": Slider([1, 2], value=1)}, name=name, figsize=(6, 2), dpi=80).figure()
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return fig, canvas.get_renderer()


def test_a_long_title_grows_only_as_far_as_its_axes_width():
    # Reference: the title's and its axes' extents on a fresh Agg canvas; a short title
    # reaches the floor, a long one stops where it is as wide as its axes.
    def draw(fig, n):
        left, right = fig.subplots(1, 2)
        left.set_title("a title far too long for half of a small figure " * n, fontsize=4)
        right.set_title("short", fontsize=4)

    fig, renderer = _drawn_on_a_fresh_canvas(draw, "titles")
    left, right = fig.axes
    assert right.title.get_fontsize() == pytest.approx(11 * 72 / 80)
    assert 4 < left.title.get_fontsize() < 11 * 72 / 80
    assert left.title.get_window_extent(renderer).width <= left.bbox.width + 1


def test_a_paragraph_grows_only_as_far_as_the_figure_edge():
    # Reference: the text's extent on a fresh Agg canvas against the figure's. A wrapped
    # paragraph starting mid-figure stops where its longest line reaches the edge; a
    # short text with room reaches the floor.
    words = "a paragraph wrapped for a small font, one line of it quite long indeed\nand more"

    def draw(fig, n):
        ax = fig.subplots()
        ax.axis("off")
        fig.text(0.55, 0.8, words, fontsize=4, ha="left")
        fig.text(0.02, 0.3, "short", fontsize=4, ha="left")

    fig, renderer = _drawn_on_a_fresh_canvas(draw, "paragraph")
    paragraph, short = fig.texts
    assert short.get_fontsize() == pytest.approx(11 * 72 / 80)
    assert 4 < paragraph.get_fontsize() < 11 * 72 / 80
    assert paragraph.get_window_extent(renderer).x1 <= fig.bbox.x1 + 1


def test_text_in_subfigures_is_raised_too():
    # Reference: the sizes matplotlib's own RendererAgg draws (a fresh canvas), as in
    # test_no_text_is_drawn_smaller_than_11_css_pixels, for axes inside subfigures.
    def draw(fig, n):
        top, bottom = fig.subfigures(2, 1)
        for sub in (top, bottom):
            left, right = sub.subplots(1, 2)
            left.set_title("a long title that must fit in half of the frame " * n, fontsize=4)
            right.plot([1, 2], [n, 1])
            right.tick_params(labelsize=4)
            sub.suptitle("part", fontsize=4)

    exp = explore(draw, {"n": Slider([1, 2], value=1)}, name="subfigures", figsize=(6, 4), dpi=80)
    fig = exp.figure()
    drawn = drawn_text_sizes(fig)
    titles = {ax.title.get_text() for ax in fig.axes}
    assert min(px for s, px in drawn if s not in titles) == pytest.approx(11)
    assert all(ax.title.get_fontsize() > 4 for ax in fig.axes if ax.title.get_text())


def test_a_legend_grows_only_as_far_as_its_axes_leave_room():
    # Reference: the legends' and axes' extents on a fresh Agg canvas: a long legend
    # stays within its axes' width and half its height (it is not cut off by the
    # figure's edge, nor hides the curves); a short one reaches the 11 CSS px floor.
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    def draw(fig, n):
        crowded, roomy = fig.subplots(1, 2)
        for k in range(6):
            crowded.plot(np.arange(10) * k * n, label=f"optimizer {k}: f = 1.7e-4{k}")
        crowded.legend(fontsize=5, ncols=2, loc="lower right")
        roomy.plot([1, 2], label="short")
        roomy.legend(fontsize=5)

    exp = explore(draw, {"n": Slider([10, 20])}, name="legends", figsize=(9.5, 3.4), dpi=80)
    fig = exp.figure()
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    crowded, roomy = fig.axes
    box = crowded.get_legend().get_window_extent(renderer)
    assert box.width <= crowded.bbox.width and box.height <= 0.5 * crowded.bbox.height + 1
    assert min(t.get_fontsize() for t in crowded.get_legend().texts) > 5
    assert roomy.get_legend().texts[0].get_fontsize() == pytest.approx(11 * 72 / (666 / 9.5))  # column-wide
