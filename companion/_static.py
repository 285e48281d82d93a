"""An experiment's static form: the built book's HTML, with every frame precomputed.

Every point of the control grid is drawn once at build time and shipped as an image
(identical frames once) inside the page, with native ``<input type=range>`` /
``<select>`` controls and a few lines of inline script: moving a control swaps the
image with no kernel and no network. The images have 1.4 times the pixels of the size
they are shown at (``width``/``height`` of the ``<img>``: ``figsize`` x ``dpi``), so
they stay sharp on screens with two device pixels per CSS pixel and in print.
"""
from __future__ import annotations

import base64
import hashlib
import html
import itertools
import json

import numpy as np

from ._controls import Slider, marks_html
from ._raster import STATIC_MIME

def static_html(exp) -> str:
    """The whole experiment as self-contained HTML: one image per grid point (each
    drawn once, by ``exp.render(index, compact=True)``; identical frames stored
    once) shown at ``exp.figsize`` x ``exp.dpi`` CSS pixels, native
    ``<input type=range>`` / ``<select>`` controls, and a few lines of inline script
    that swap the image when a control moves."""
    images: list[str] = []
    seen: dict[str, int] = {}
    frames: list[int] = []
    for index in itertools.product(*(range(n) for n in exp.shape)):
        encoded = base64.b64encode(exp.render(index, compact=True)).decode("ascii")
        digest = hashlib.sha1(encoded.encode()).hexdigest()
        if digest not in seen:
            seen[digest] = len(images)
            images.append(encoded)
        frames.append(seen[digest])
    strides = [int(np.prod(exp.shape[i + 1:])) for i in range(len(exp.shape))]
    uid = "cx-" + hashlib.sha1(f"{exp.name}|{exp.shape}".encode()).hexdigest()[:10]
    data = {"names": exp.names, "labels": [[lab for lab, _ in o] for o in exp.options],
            "strides": strides, "frames": frames, "images": images}
    payload = json.dumps(data, separators=(",", ":")).replace("</", "<\\/")
    rows = []
    for i, name in enumerate(exp.names):
        control = exp.controls[name]
        label = html.escape(control.label or name)
        if isinstance(control, Slider):
            widget = (f'<input type="range" min="0" max="{exp.shape[i] - 1}" step="1" '
                      f'value="{exp.default[i]}" data-cx-control="{i}" aria-label="{label}">'
                      f'<output data-cx-output="{i}">{html.escape(exp.options[i][exp.default[i]][0])}</output>')
            widget += marks_html(control)
        else:
            opts = "".join(f'<option value="{j}"{" selected" if j == exp.default[i] else ""}>'
                           f'{html.escape(lab)}</option>' for j, (lab, _) in enumerate(exp.options[i]))
            widget = f'<select data-cx-control="{i}" aria-label="{label}">{opts}</select>'
        rows.append(f'<label class="cx-row"><span class="cx-label">{label}</span>{widget}</label>')
    first = images[frames[int(np.ravel_multi_index(exp.default, exp.shape))]]
    width, height = (round(inches * exp.dpi) for inches in exp.figsize)
    title = f'<div class="cx-title">{html.escape(exp.title)}</div>' if exp.title else ""
    note = (f'<div class="cx-note">{html.escape(exp.caption) + " " if exp.caption else ""}'
            f'Precomputed for {exp.grid_size} settings; run the notebook to change it live.</div>')
    return (f'<div class="cx-explore" id="{uid}" data-cx-name="{html.escape(exp.name)}">{_STYLE}{title}'
            f'<div class="cx-controls">{"".join(rows)}</div>'
            f'<img class="cx-frame" alt="{html.escape(exp.title or exp.name)}" '
            f'width="{width}" height="{height}" src="data:{STATIC_MIME};base64,{first}">{note}'
            f'<script type="application/json" class="cx-data">{payload}</script>'
            f'<script>{_SCRIPT.replace("__UID__", uid).replace("__MIME__", STATIC_MIME)}</script></div>')


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
img.src="data:__MIME__;base64,"+d.images[d.frames[k]];img.alt=alt.join(", ");r.setAttribute("data-cx-frame",k);}
for(var i=0;i<c.length;i++){c[i].addEventListener("input",show);c[i].addEventListener("change",show);}})();"""
