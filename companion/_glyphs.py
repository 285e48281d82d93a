"""A renderer that keeps the glyphs of text it has drawn (an optional speed-up of
:mod:`companion._raster`).

matplotlib's Agg renderer asks FreeType to shape and rasterize every string of every
frame; in an experiment's frames the tick labels, titles and legends are mostly the
same strings from frame to frame, and their glyphs are about half of a cold frame's
drawing time. :func:`renderer_class` returns a ``RendererAgg`` subclass that keeps
each shaped string and each glyph bitmap (per font, size, dpi, rotation and position
*within* a pixel) and draws exactly the pixels matplotlib's own loop draws.

It overrides private parts of matplotlib's text drawing (``RendererAgg.draw_text``'s
glyph loop ``_draw_text_glyphs_and_boxes``, ``FT2Font._layout``,
``_get_font_height_metrics``), so it is used only on the matplotlib versions it has
been tested on (:data:`TESTED`; tests/test_explore.py compares its PNG bytes with a
plain canvas's), and only when :data:`companion._raster.GLYPH_CACHE` is on. Anywhere
else the book draws with matplotlib's own ``RendererAgg``: the same pixels, slower.
"""
from __future__ import annotations

import math

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import RendererAgg

#: The matplotlib versions (major, minor) the glyph cache is tested on.
TESTED = ((3, 11),)

_GLYPHS: dict[tuple, tuple] = {}
_GLYPHS_MAX = 20_000          # ~a few MB of small bitmaps; emptied when full
_RUNS_OF_GLYPHS: dict[tuple, list] = {}
_FONT_HEIGHTS: dict[tuple, tuple] = {}
_CLASS: type | None = None


def supported() -> bool:
    """True on a tested matplotlib version that has the methods the cache overrides."""
    version = tuple(int(part) for part in matplotlib.__version__.split(".")[:2] if part.isdigit())
    return version in TESTED and hasattr(RendererAgg, "_draw_text_glyphs_and_boxes")


def renderer_class(enabled: bool = True) -> type:
    """The glyph-caching ``RendererAgg`` subclass when ``enabled`` and :func:`supported`,
    else matplotlib's ``RendererAgg``."""
    global _CLASS
    if not (enabled and supported()):
        return RendererAgg
    if _CLASS is None:
        _CLASS = _make_renderer_class()
    return _CLASS


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


def _make_renderer_class() -> type:
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
