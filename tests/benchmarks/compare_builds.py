"""Two builds of the book, compared: every experiment's frames and every glued value.

    python tests/benchmarks/compare_builds.py BEFORE/_build AFTER/_build

For a change meant to preserve what readers see (a refactoring of the companion), build
the book before and after (``bash .ci/build`` in two checkouts) and compare. Reads each
chapter's executed notebook (``_build/jupyter_execute/book/*.ipynb``: the static HTML
of every experiment, its precomputed frames byte for byte and the frame each
setting shows) and the values it glued (``*.glue.json`` beside it: their full text,
every digit). Prints what differs and
exits 1 if anything does. Timings are reported but not counted: the glue names a
chapter lists in its notebook metadata ``machine_dependent_glue`` (as
tests/test_notebooks.py exempts them).
"""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

_DATA = re.compile(r'<script type="application/json" class="cx-data">(.*?)</script>', re.S)
_NAME = re.compile(r'data-cx-name="([^"]*)"')


def contents(build: Path) -> dict[str, dict]:
    """Per chapter: ``experiments`` {name: (frame per setting, control labels)},
    ``glue`` {name: its data, as JSON text} and ``timings`` (glue names exempt)."""
    out = {}
    for path in sorted((build / "jupyter_execute" / "book").glob("*.ipynb")):
        notebook = json.loads(path.read_text())
        experiments, glue = {}, {}
        timings = set(notebook.get("metadata", {}).get("machine_dependent_glue", []))
        for cell in notebook["cells"]:
            for output in cell.get("outputs", []):
                data = output.get("data", {})
                html = data.get("text/html", "")
                html = "".join(html) if isinstance(html, list) else html
                for name, payload in zip(_NAME.findall(html), _DATA.findall(html)):
                    d = json.loads(payload.replace("<\\/", "</"))
                    experiments[name] = ([d["images"][k] for k in d["frames"]], d["labels"])
        glued = path.with_suffix(".glue.json")
        if glued.exists():
            for name, output in json.loads(glued.read_text()).items():
                glue[name] = json.dumps(output.get("data", {}), sort_keys=True)
        out[path.stem] = {"experiments": experiments, "glue": glue, "timings": timings}
    return out


def compare(before: dict, after: dict) -> int:
    problems = 0
    for chapter in sorted(set(before) | set(after)):
        if chapter not in before or chapter not in after:
            print(f"{chapter}: only in {'after' if chapter in after else 'before'}")
            problems += 1
            continue
        b, a = before[chapter], after[chapter]
        frames = same_frames = 0
        for name in sorted(set(b["experiments"]) | set(a["experiments"])):
            if name not in b["experiments"] or name not in a["experiments"]:
                print(f"{chapter}: experiment {name!r} only in {'after' if name in a['experiments'] else 'before'}")
                problems += 1
                continue
            (fb, lb), (fa, la) = b["experiments"][name], a["experiments"][name]
            if lb != la or len(fb) != len(fa):
                print(f"{chapter}: experiment {name!r} has other controls")
                problems += 1
                continue
            differ = [k for k, (x, y) in enumerate(zip(fb, fa)) if x != y]
            frames += len(fb)
            same_frames += len(fb) - len(differ)
            if differ:
                print(f"{chapter}: experiment {name!r}: {len(differ)} of {len(fb)} frames differ "
                      f"(settings {differ[:5]}{'…' if len(differ) > 5 else ''})")
                problems += 1
        glued = same_glue = 0
        for name in sorted(set(b["glue"]) | set(a["glue"])):
            x, y = b["glue"].get(name), a["glue"].get(name)
            glued += 1
            if x == y:
                same_glue += 1
            elif name in a["timings"] | b["timings"]:
                print(f"{chapter}: glue {name!r} (a timing) {x!r} -> {y!r}")
            else:
                print(f"{chapter}: glue {name!r} differs: {x!r} -> {y!r}")
                problems += 1
        print(f"{chapter}: {len(a['experiments'])} experiments, {same_frames}/{frames} frames identical; "
              f"{same_glue}/{glued} glued values identical")
    return problems


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__)
        return 2
    before, after = (contents(Path(p)) for p in argv)
    problems = compare(before, after)
    print("identical" if not problems else f"{problems} differences")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
