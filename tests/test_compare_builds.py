"""tests/benchmarks/compare_builds.py, the before/after check of a build, can fail.

Reference: two hand-made builds that differ in exactly one frame, one glued value and
one timing; the comparison must name the first two, forgive the third, and find two
identical builds identical.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "benchmarks"))
import compare_builds  # noqa: E402


def _build(root: Path, frame: str, value: str, timing: str) -> Path:
    book = root / "_build" / "jupyter_execute" / "book"
    book.mkdir(parents=True)
    data = {"names": ["depth"], "labels": [["1", "2"]], "strides": [1], "frames": [0, 1],
            "images": ["AAAA", frame]}
    html = ('<div class="cx-explore" data-cx-name="profile">'
            f'<script type="application/json" class="cx-data">{json.dumps(data)}</script></div>')
    notebook = {"metadata": {"machine_dependent_glue": ["step_us"]},
                "cells": [{"cell_type": "code", "outputs": [{"data": {"text/html": html}}]}]}
    (book / "chapter.ipynb").write_text(json.dumps(notebook))
    glue = {name: {"data": {"text/plain": v}} for name, v in (("gain", value), ("step_us", timing))}
    (book / "chapter.glue.json").write_text(json.dumps(glue))
    return root / "_build"


def test_a_changed_frame_and_value_are_found_and_a_timing_is_not_counted(tmp_path, capsys):
    before = compare_builds.contents(_build(tmp_path / "a", "BBBB", "0.95", "12.0"))
    same = compare_builds.contents(_build(tmp_path / "b", "BBBB", "0.95", "13.5"))
    after = compare_builds.contents(_build(tmp_path / "c", "CCCC", "0.951", "12.0"))
    assert compare_builds.compare(before, same) == 0
    assert compare_builds.compare(before, after) == 2
    out = capsys.readouterr().out
    assert "'profile': 1 of 2 frames differ (settings [1])" in out
    assert "glue 'gain' differs" in out and "'step_us' (a timing)" in out
