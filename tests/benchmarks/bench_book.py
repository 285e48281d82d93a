"""Budgets of the book, printed as a markdown table (not a test: timings live here).

    python tests/benchmarks/bench_book.py            # all chapters
    python tests/benchmarks/bench_book.py vanishing  # one

For each chapter: the time to execute it top to bottom in a fresh kernel, as the
book's build does (static mode: every grid point of every experiment drawn once);
for each cheap (non-expensive) experiment, the median time of a live update when a
control moves one step (the live widget prefetches the neighbouring settings in the
background, so this is mostly an image swap) and of a cold redraw (a setting never
drawn, as after a far jump: one matplotlib frame); and the size of the built HTML
page (after `bash .ci/build`). Budgets: <= 60 s, <= 100 ms, <= 5 MB. The reader-facing
latency in a real JupyterLab is tests/benchmarks/bench_jupyterlab.py's.
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import nbclient
import nbformat

ROOT = Path(__file__).resolve().parents[2]

PROBE = r'''
import json, random, statistics, time
from companion import explore as _x
_rows = []
for _e in list(_x._CREATED):
    if _e.expensive:
        continue
    # cold: a setting never drawn before (what a far jump of a control costs)
    _points = [tuple(random.Random(k).randrange(n) for n in _e.shape) for k in range(12)]
    _cold = []
    for _p in dict.fromkeys(_points):
        _e.frames.clear()
        _t = time.perf_counter(); _e.render(_p); _cold.append(time.perf_counter() - _t)
    # step: a live view, one control moved by one step after the neighbours were
    # drawn ahead (what dragging a slider costs the reader)
    _e.frames.clear()
    _v = _e.live()
    _steps, _rng = [], random.Random(0)
    for _k in range(8):
        _v.prefetch_idle()
        _i = _rng.randrange(len(_e.shape))
        _w, _n = _v.inputs[_i], _e.shape[_i]
        if _n < 2:
            continue
        _target = _w.value + 1 if _w.value + 1 < _n else _w.value - 1
        _t = time.perf_counter(); _w.value = _target; _steps.append(time.perf_counter() - _t)
    _rows.append((_e.name, statistics.median(_cold), statistics.median(_steps) if _steps else float("nan")))
print("BENCH" + json.dumps(_rows))
'''


def run(chapter: Path) -> dict:
    os.environ["COMPANION_EXPLORE_MODE"] = "static"
    notebook = nbformat.read(chapter, as_version=4)
    client = nbclient.NotebookClient(notebook, timeout=600, kernel_name="python3",
                                     resources={"metadata": {"path": str(chapter.parent)}})
    with client.setup_kernel():
        started = time.perf_counter()
        for i, cell in enumerate(notebook.cells):
            client.execute_cell(cell, i)
        elapsed = time.perf_counter() - started
        probe = nbformat.v4.new_code_cell(PROBE)   # same warm kernel, every experiment made
        notebook.cells.append(probe)
        client.execute_cell(probe, len(notebook.cells) - 1)
    out = "".join(o.get("text", "") for o in probe.outputs)
    redraws = json.loads(out.split("BENCH", 1)[1]) if "BENCH" in out else []
    page = ROOT / "_build" / "html" / "book" / f"{chapter.stem}.html"
    return {"chapter": chapter.stem, "execute_s": elapsed, "redraws": redraws,
            "page_mb": page.stat().st_size / 1e6 if page.exists() else float("nan")}


def main(names: list[str]) -> None:
    chapters = sorted((ROOT / "book").glob("*.ipynb"))
    if names:
        chapters = [c for c in chapters if c.stem in names]
    print(f"cores: {os.cpu_count()}")
    print("| chapter | execute (s) ≤ 60 | live update: one step / cold redraw, median ms (≤ 100), per experiment | page (MB) ≤ 5 |")
    print("|---|---|---|---|")
    for chapter in chapters:
        r = run(chapter)
        redraws = ", ".join(f"{n} {1e3 * step:.0f} / {1e3 * cold:.0f}"
                            for n, cold, step in r["redraws"]) or "(none)"
        print(f"| {r['chapter']} | {r['execute_s']:.1f} | {redraws} | {r['page_mb']:.2f} |", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
