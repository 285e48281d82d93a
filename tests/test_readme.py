"""README.md's "Diagnose your own model" example runs as written and says what its
comments say. Reference: the README text itself, and the chapter on vanishing
gradients (12 sigmoid layers of PyTorch's default initialization lose the signal)."""
from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _examples() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = re.search(r"## Diagnose your own model(.*?)\n## ", text, re.S)
    assert section, "README.md has no section '## Diagnose your own model'"
    blocks = re.findall(r"```python\n(.*?)```", section.group(1), re.S)
    assert len(blocks) == 2, "expected the plain example and the Hugging Face one"
    return blocks


def _example() -> str:
    return _examples()[0]


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


def test_readme_hugging_face_example_runs_and_finds_what_it_says(capsys, monkeypatch):
    """The second example: a Hugging Face GPT-2 built from its config (offline), its own
    loss, no finding, and the tied embeddings as a note."""
    import pytest
    pytest.importorskip("transformers")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    namespace: dict = {}
    exec(compile(_examples()[1], "README.md", "exec"), namespace)
    report = namespace["report"]
    assert report.findings == [], [str(f) for f in report.findings]
    assert [n.symptom for n in report.notes] == ["tied"]
    assert report.loss is not None and report.baseline is not None
    assert capsys.readouterr().out.startswith("[]\n")
