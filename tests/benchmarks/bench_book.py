"""Budgets of the book, printed as a markdown table (not a test: timings live here).

    python tests/benchmarks/bench_book.py            # all chapters
    python tests/benchmarks/bench_book.py vanishing  # one

For each chapter: the time to execute it top to bottom in a fresh kernel, as the
book's build does (static mode: every grid point of every experiment drawn once);
the median time of a cheap live update (one redraw of a setting not seen before,
over up to 12 settings of each non-expensive experiment); and the size of the
built HTML page (after `bash .ci/build`). Budgets: <= 60 s, <= 100 ms, <= 5 MB.
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
import json, random, time
from companion import explore as _x
_rows = []
for _e in list(_x._CREATED):
    if _e.expensive:
        continue
    _points = [tuple(random.Random(k).randrange(n) for n in _e.shape) for k in range(12)]
    _times = []
    for _p in dict.fromkeys(_points):
        _e._cache.clear()
        _t = time.perf_counter(); _e.render(_p); _times.append(time.perf_counter() - _t)
    _rows.append((_e.name, sorted(_times)[len(_times) // 2]))
print("BENCH" + json.dumps(_rows))
'''


def run(chapter: Path) -> dict:
    os.environ["COMPANION_EXPLORE_MODE"] = "static"
    notebook = nbformat.read(chapter, as_version=4)
    client = nbclient.NotebookClient(notebook, timeout=600, kernel_name="python3",
                                     resources={"metadata": {"path": str(chapter.parent)}})
    started = time.perf_counter()
    client.execute()
    elapsed = time.perf_counter() - started
    notebook.cells.append(nbformat.v4.new_code_cell(PROBE))
    client = nbclient.NotebookClient(notebook, timeout=600, kernel_name="python3",
                                     resources={"metadata": {"path": str(chapter.parent)}})
    client.execute()  # again, to time redraws in a warm kernel that made every experiment
    out = "".join(o.get("text", "") for o in notebook.cells[-1].outputs)
    redraws = json.loads(out.split("BENCH", 1)[1]) if "BENCH" in out else []
    page = ROOT / "_build" / "html" / "book" / f"{chapter.stem}.html"
    return {"chapter": chapter.stem, "execute_s": elapsed, "redraws": redraws,
            "page_mb": page.stat().st_size / 1e6 if page.exists() else float("nan")}


def main(names: list[str]) -> None:
    chapters = sorted((ROOT / "book").glob("*.ipynb"))
    if names:
        chapters = [c for c in chapters if c.stem in names]
    print(f"cores: {os.cpu_count()}")
    print("| chapter | execute (s) ≤ 60 | cheap redraw median (ms) ≤ 100, per experiment | page (MB) ≤ 5 |")
    print("|---|---|---|---|")
    for chapter in chapters:
        r = run(chapter)
        redraws = ", ".join(f"{n} {1e3 * t:.0f}" for n, t in r["redraws"]) or "(none)"
        print(f"| {r['chapter']} | {r['execute_s']:.1f} | {redraws} | {r['page_mb']:.2f} |", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
