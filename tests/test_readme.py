"""README.md's "Diagnose your own model" example runs as written and says what its
comments say. Reference: the README text itself, and the chapter on vanishing
gradients (12 sigmoid layers of PyTorch's default initialization lose the signal)."""
from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _example() -> str:
    text = (ROOT / "README.md").read_text()
    match = re.search(r"## Diagnose your own model.*?```python\n(.*?)```", text, re.S)
    assert match, "README.md has no python example under '## Diagnose your own model'"
    return match.group(1)


def test_readme_diagnose_example_runs_and_finds_what_it_says(capsys):
    namespace: dict = {}
    exec(compile(_example(), "README.md", "exec"), namespace)
    report, watcher = namespace["report"], namespace["w"]
    # the comments promise a per-layer table, 'vanishing' first, and watch findings
    assert report.symptoms[0] == "vanishing"
    assert "plateau" in watcher.report().symptoms
    out = capsys.readouterr().out
    assert "Findings:" in out and "vanishing gradients" in out
    assert [m.step for m in watcher.measurements] == [0, 10, 20, 30, 40]   # every=10
