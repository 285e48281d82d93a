"""Figures to PNG bytes, fast enough for a slider: :func:`rasterize`.

An experiment's frame is a fresh matplotlib ``Figure`` every time; turning it into
pixels is most of a cold frame's cost. Three things make it cheaper without changing
a pixel (tests/test_explore.py compares the bytes with a fresh ``FigureCanvasAgg``):

* **one long-lived renderer per frame size** (:class:`_SharedRendererCanvas`):
  matplotlib caches text metrics and parsed mathtext per renderer, so a fresh canvas
  per frame measures and parses every tick label, legend entry and ``$...$`` again;
* **the cyclic garbage collector kept out of a frame** (:func:`young_garbage`);
* on the matplotlib versions it is tested on, and while :data:`GLYPH_CACHE` is on,
  **a renderer that keeps glyph bitmaps** (:mod:`companion._glyphs`).
"""
from __future__ import annotations

import contextlib
import gc
import io
import threading

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg, RendererAgg
from matplotlib.figure import Figure

from . import _glyphs

#: Draw text with the glyph cache where it is supported (:func:`companion._glyphs.supported`).
#: Off: matplotlib's own ``RendererAgg`` draws every glyph afresh (same pixels, slower).
GLYPH_CACHE = True

_RENDERERS: dict[tuple, RendererAgg] = {}
_MAX_RENDERERS = 8            # a few frame sizes in a book; bound the memory anyway
_LOCK = threading.Lock()      # one shared renderer per size: one frame at a time
_GC_PAUSED = threading.local()


#: The static book's image format (its frames have more pixels than they are shown
#: at): see :func:`encode_static`.
STATIC_MIME = "image/webp"
#: Colours of the static book's frames (an adaptive palette per frame).
STATIC_COLORS = 96


def rasterize(fig: Figure, *, compact: bool = False) -> bytes:
    """Image bytes of ``fig``: a PNG with fast, light compression (live), or with
    ``compact`` the static book's encoding (:func:`encode_static`)."""
    with _LOCK, young_garbage():
        canvas = _SharedRendererCanvas(fig)
        canvas.draw()
        rgba = np.asarray(canvas.buffer_rgba())
        return encode_static(rgba) if compact else encode(rgba, compact=False)


def encode(rgba: np.ndarray, *, compact: bool, colors: int = 96) -> bytes:
    """PNG bytes of an RGBA array: fast, light compression, or with ``compact`` an
    adaptive palette of ``colors`` colours (about 3x smaller for line plots)."""
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


def encode_static(rgba: np.ndarray) -> bytes:
    """The static book's bytes for an RGBA array: lossless WebP of the frame reduced
    to an adaptive palette of :data:`STATIC_COLORS` colours (:data:`STATIC_MIME`).

    Measured on 55 frames of the optimizers chapter at 2x (mean bytes; encode time):
    PNG with 96 colours 31 kB, 11 ms; PNG with 32 colours 27 kB; lossless WebP in full
    colour 47 kB, 68 ms; lossless WebP with 96 / 48 / 32 colours 22 / 21 / 19 kB,
    25 ms; lossy WebP (quality 90) 48 kB, 82 ms, with smeared text. Frames are lines,
    text and flat fills: lossless coding of few colours suits them. Fewer than 96
    colours lose the pale bands of ``fill_between`` (48: wrong tints; 32: gone, and a
    pink background). WebP's ``method=2`` is as small as its default (4), and faster.
    """
    from PIL import Image

    image = Image.fromarray(rgba[..., :3])
    palette = image.quantize(colors=STATIC_COLORS, method=Image.Quantize.FASTOCTREE,
                             dither=Image.Dither.NONE)
    buffer = io.BytesIO()
    palette.convert("RGB").save(buffer, format="WEBP", lossless=True, quality=25, method=2)
    return buffer.getvalue()


class _SharedRendererCanvas(FigureCanvasAgg):
    """An Agg canvas that draws with one long-lived renderer per frame size (and text
    hinting, and glyph cache switch): matplotlib's text metrics cache lives on the
    renderer and does not know the hinting, so text measured one way is never drawn
    another. The figure is still fresh every frame."""

    def get_renderer(self):
        w, h = self.get_width_height(physical=True)
        cls = _glyphs.renderer_class(GLYPH_CACHE)
        key = (w, h, self.figure.dpi, str(matplotlib.rcParams["text.hinting"]),
               matplotlib.rcParams.get("text.hinting_factor"), cls)
        renderer = _RENDERERS.get(key)
        if renderer is None:
            if len(_RENDERERS) >= _MAX_RENDERERS:
                _RENDERERS.pop(next(iter(_RENDERERS)))
            renderer = _RENDERERS[key] = cls(w, h, self.figure.dpi)
        self.renderer = renderer
        return renderer


@contextlib.contextmanager
def young_garbage():
    """Keep Python's cyclic garbage collector out of one frame.

    A frame makes tens of thousands of short-lived objects that refer to each other
    (figure, axes, ticks, texts). With the collector running, the ones still alive at a
    collection are promoted to older generations, and a full collection follows every
    few frames: in a kernel holding half a million objects (torch, the chapter's data)
    it stops everything for 0.3-0.4 s (tests/benchmarks/bench_book.py saw it). With
    the collector paused until the frame is done and dropped, the whole frame is still
    young garbage, freed by the next cheap young-generation collection. Nested uses,
    uses from another thread while one is active, and a collector the reader switched
    off are left alone."""
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
