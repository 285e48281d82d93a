"""The PDF edition (``_build/pdf/book.pdf``, printed by ``.ci/pdf`` after the HTML build).

References, all independent of the script that prints it: the book's table of contents
(``_toc.yml``) and each chapter's source for the titles and their order; the built web
pages (``_build/html``) for the experiments that must be printed and the anchors the
PDF links to; the chapters' code cells for the ``$`` signs that belong to code. The PDF
is read with poppler's ``pdftotext`` and ``pdfimages`` (installed with Debian's
chromium's dependencies; ``poppler-utils``), and its link annotations from its bytes.
"""
from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
PDF = ROOT / "_build" / "pdf" / "book.pdf"
HTML = ROOT / "_build" / "html"
pytestmark = pytest.mark.browser   # needs the built book, like the browser test

# What a widget or an object with no printable form looks like when only its repr is
# printed (an ipywidgets tree, the experiment's text form, IPython's and matplotlib's).
_RAW_REPRS = re.compile(r"(?:VBox|HBox|Box|interactive|Tab|Accordion)\(children=|"
                        r"(?:IntSlider|FloatSlider|SelectionSlider|Dropdown|Button|Output|Layout)\(|"
                        r"<ipywidgets\.|<experiment '|<IPython\.core\.display\.\w+ object>|"
                        r"<Figure size \d+x\d+ with \d+ Axes>")
# Inline math that MathJax did not typeset: a $...$ holding TeX, or \( ... \).
_UNRENDERED = re.compile(r"\$[^$]{0,160}?(?:\\[A-Za-z]+|[\^_])[^$]{0,160}?\$|\\\([^\n]{0,160}?\\\)")


def _toc_files() -> tuple[list[str], list[str]]:
    """(numbered chapters, back matter) from ``_toc.yml``, in order."""
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    numbered, back = [], []
    for part in toc["parts"]:
        files = [c["file"] for c in part["chapters"]]
        (back if part["caption"].lower() == "back matter" else numbered).extend(files)
    return numbered, back


def _title(doc: str) -> str:
    """A document's title: its first level-1 heading (notebook or markdown source)."""
    path = ROOT / f"{doc}.ipynb"
    if path.exists():
        lines = [line for cell in json.loads(path.read_text())["cells"]
                 if cell["cell_type"] == "markdown" for line in "".join(cell["source"]).splitlines()]
    else:
        lines = (ROOT / f"{doc}.md").read_text().splitlines()
    return next(line[2:].strip() for line in lines if line.startswith("# "))


def _squash(text: str) -> str:
    return re.sub(r"\s+", "", text)


@pytest.fixture(scope="module")
def pages() -> list[str]:
    """The PDF's text, one string per page."""
    assert PDF.exists(), f"build the book first: {PDF} is missing (bash .ci/book)"
    assert shutil.which("pdftotext"), "pdftotext is missing (Debian: poppler-utils)"
    text = subprocess.run(["pdftotext", "-enc", "UTF-8", str(PDF), "-"], capture_output=True,
                          text=True, check=True).stdout
    return text.split("\f")[:-1] if text.endswith("\f") else text.split("\f")


@pytest.fixture(scope="module")
def image_pages() -> list[int]:
    """The 1-based page of every image in the PDF (``pdfimages -list``)."""
    out = subprocess.run(["pdfimages", "-list", str(PDF)], capture_output=True, text=True,
                         check=True).stdout.splitlines()[2:]
    return [int(line.split()[0]) for line in out if line.strip()]


def test_every_chapter_is_in_the_pdf_in_order_with_its_number(pages):
    numbered, back = _toc_files()
    squashed = [_squash(p) for p in pages]
    starts = []
    for n, doc in enumerate(numbered, start=1):
        label = f"CHAPTER{n}"
        hits = [i for i, p in enumerate(squashed) if label + _squash(_title(doc)) in p]
        assert hits, f"{doc}: no page starts 'Chapter {n}' with the title {_title(doc)!r}"
        starts.append(hits[0])
    assert starts == sorted(starts), f"the chapters are not in the book's order: pages {starts}"
    everything = "".join(squashed)
    for doc in back:
        assert _squash(_title(doc)) in everything, f"{doc}: {_title(doc)!r} is not in the PDF"
    # the intro and the references are there with their content, not only their titles
    assert _squash("Who it is for") in everything
    assert "Glorot" in pages[-1] + "".join(pages[starts[-1]:]), "the references are missing"


def test_the_page_count_is_plausible(pages):
    """A few pages per chapter at the very least, and ordinary pages: neither a few
    words (a blank page per element) nor thousands (text printed in a tiny font)."""
    numbered, _ = _toc_files()
    words = [len(p.split()) for p in pages]
    assert len(pages) >= 8 * len(numbered), f"{len(pages)} pages for {len(numbered)} chapters"
    median = sorted(words)[len(words) // 2]
    assert 150 <= median <= 900, f"median {median} words per page"
    blank = [i + 1 for i, w in enumerate(words) if w < 5]
    assert len(blank) <= 2, f"blank pages: {blank}"


def _experiments_of_the_web_edition() -> dict[str, list[str]]:
    """{chapter page name: the ids of its experiments}, from the built web pages."""
    out = {}
    for page in sorted((HTML / "book").glob("*.html")):
        ids = re.findall(r'<div class="cx-explore" id="([^"]+)"', page.read_text(encoding="utf-8"))
        if ids:
            out[page.stem] = ids
    return out


def test_each_experiment_is_printed_as_an_image_with_a_caption_linking_to_it(pages, image_pages):
    """Every experiment of the web edition: a caption on some page names its settings and
    links (visibly) to it in the web edition, whose page holds that anchor; the same
    page holds an image (the frame and its caption are kept together)."""
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    base = config["html"]["baseurl"].rstrip("/") + "/"
    experiments = _experiments_of_the_web_edition()
    assert len(experiments) >= 5, f"experiments found on only {sorted(experiments)}"
    squashed = [_squash(p) for p in pages]
    with_images = set(image_pages)
    missing, imageless = [], []
    for chapter, ids in experiments.items():
        for uid in ids:
            url = f"{base}book/{chapter}.html#{uid}"
            hits = [i + 1 for i, p in enumerate(squashed) if url in p]
            if not hits:
                missing.append(url)
            elif hits[0] not in with_images:
                imageless.append((url, hits[0]))
            assert f'id="{uid}"' in (HTML / "book" / f"{chapter}.html").read_text(encoding="utf-8")
    assert missing == [], f"experiments the PDF does not print: {missing}"
    assert imageless == [], f"captions on pages without an image: {imageless}"
    assert all("Printed at" in p for p in pages if "web edition: http" in p)
    assert len(image_pages) >= sum(map(len, experiments.values()))


def test_links_point_into_the_pdf_or_to_the_web_edition():
    """No link to the server the book was printed from (a link the reader cannot follow)."""
    uris = re.findall(rb"/URI \(([^)]*)\)", PDF.read_bytes())
    assert uris, "the PDF has no links at all"
    local = sorted({u.decode() for u in uris if re.match(rb"https?://(127\.|localhost)", u)})
    assert local == [], f"links to the printing machine: {local[:5]}"
    assert all(re.match(rb"(https?|mailto):", u) for u in uris), "relative links in the PDF"


def _code_text() -> str:
    """Every code cell's source and text output in the chapters, whitespace squashed:
    a ``$`` found there is code (a matplotlib label), not prose."""
    out = []
    for path in (ROOT / "book").glob("*.ipynb"):
        for cell in json.loads(path.read_text())["cells"]:
            if cell["cell_type"] == "code":
                out.append("".join(cell["source"]))
    return _squash("\n".join(out))


def test_no_unrendered_math_and_no_raw_widget_repr(pages):
    code = _code_text()
    unrendered, raw = [], []
    for number, page in enumerate(pages, start=1):
        for match in _UNRENDERED.finditer(page):
            if _squash(match.group(0)) not in code:
                unrendered.append((number, match.group(0)[:80]))
        raw += [(number, m.group(0)) for m in _RAW_REPRS.finditer(page)]
    assert unrendered == [], f"math MathJax did not typeset: {unrendered[:8]}"
    assert raw == [], f"raw reprs printed instead of content: {raw[:8]}"


def test_the_detectors_catch_what_they_look_for():
    """The two patterns above match what they are meant to (so the test can fail)."""
    assert _UNRENDERED.search(r"gives $\lVert W\rVert^2$ once")
    assert _UNRENDERED.search(r"rate $O(1/k^2)$.")
    assert _UNRENDERED.search("gives $\\lVert\nW\\rVert^2 +\n\\eta\\lambda$ once")
    assert _UNRENDERED.search(r"so \(\sigma'(0)\) is")
    assert not _UNRENDERED.search("costs $5 and $6")
    assert _RAW_REPRS.search("VBox(children=(IntSlider(value=3),))")
    assert _RAW_REPRS.search("<experiment 'vanishing-chain': 42 precomputed frames>")
    assert _RAW_REPRS.search("<Figure size 640x480 with 2 Axes>")


def test_the_web_pages_link_the_pdf():
    """The intro links the PDF, every page's header has the button, and the file is
    where they point (the web build's root)."""
    intro = (HTML / "book" / "intro.html").read_text(encoding="utf-8")
    assert re.search(r'href="\.\./book\.pdf"[^>]*>Download the book \(PDF\)<', intro)
    for page in (HTML / "book").glob("*.html"):
        text = page.read_text(encoding="utf-8")
        assert 'href="../book.pdf"' in text and "Download the book (PDF)" in text, page.name
    assert (HTML / "book.pdf").read_bytes() == PDF.read_bytes()
