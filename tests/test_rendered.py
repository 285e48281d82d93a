"""What a reader sees on the built pages (after `bash .ci/book`): numbers formatted
for a reader, and exercises numbered from 1 in every chapter.

Reference: the rendered HTML text itself (tags, scripts and styles stripped), and
the order of the exercises in each chapter's source.
"""
from __future__ import annotations

import html
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HTML = ROOT / "_build" / "html"
pytestmark = pytest.mark.browser   # needs the built book, like the browser test

_LONG_NUMBER = re.compile(r"(?<![\w.])-?\d+\.\d{9,}")


def _chapters() -> list[Path]:
    return sorted((ROOT / "book").glob("*.ipynb"))


def _text(page: Path) -> str:
    raw = page.read_text(encoding="utf-8")
    raw = raw[raw.find("<main"):]
    raw = re.sub(r"<(script|style)\b.*?</\1>", " ", raw, flags=re.S | re.I)
    raw = re.sub(r'<img\b[^>]*>', " ", raw)          # data: URIs of the experiment frames
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", raw)))


@pytest.fixture(scope="module")
def built():
    assert (HTML / "index.html").exists(), f"build the book first: {HTML} is missing (see README)"
    return HTML


@pytest.mark.parametrize("chapter", _chapters(), ids=lambda p: p.stem)
def test_no_unformatted_numbers_on_the_page(chapter, built):
    text = _text(built / "book" / f"{chapter.stem}.html")
    long = [text[max(0, m.start() - 40):m.end() + 10] for m in _LONG_NUMBER.finditer(text)]
    assert long == [], f"{chapter.stem}: numbers with 9+ decimals on the page: {long[:5]}"


@pytest.mark.parametrize("chapter", _chapters(), ids=lambda p: p.stem)
def test_exercises_are_numbered_from_one_in_each_chapter(chapter, built):
    source = "".join("".join(c["source"]) for c in json.loads(chapter.read_text())["cells"]
                     if c["cell_type"] == "markdown")
    count = len(re.findall(r"^(?:`{3,}|:{3,})\{exercise\}", source, re.M))
    page = (built / "book" / f"{chapter.stem}.html").read_text(encoding="utf-8")
    # the exercises' own titles (sphinx-exercise: a caption number in the admonition title)
    numbers = [int(n) for n in re.findall(
        r'class="admonition-title"><span class="caption-number">Exercise (\d+)', page)]
    assert numbers == list(range(1, count + 1)), (
        f"{chapter.stem}: {count} exercises in the source, numbered {numbers} on the page")
