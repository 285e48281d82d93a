"""Local Sphinx extension: the book's PDF edition and its "How this book was built" page.

Loaded by ``_config.yml`` (``sphinx: local_extensions``). It does three things:

1. **A "Download the book (PDF)" button** in every web page's header, beside the
   download menu. The PDF itself is printed after the HTML build by ``.ci/pdf``
   (``_build/pdf/book.pdf``, copied to ``_build/html/book.pdf`` where the button
   points).
2. **The single-page build the PDF is printed from** (``--builder singlehtml``):
   myst-nb registers its folded-code node for the ``html`` builder only, and once any
   extension has registered a handler for ``singlehtml`` Sphinx no longer falls back to
   the ``html`` ones, so the build stops at the first folded cell. Here every ``html``
   handler missing for ``singlehtml`` is copied over.
3. **The ``{build-info}`` directive** of ``book/how_built.md``: the versions of Python
   and the libraries this build ran with (imported at build time, in the process that
   builds and executes the book), the commit it was built from when the source is a
   git checkout, and, per chapter, the glued values its notebook marks as timings
   (``machine_dependent_glue``), the only numbers that may differ between two builds.
"""
from __future__ import annotations

import datetime
import json
import platform
import subprocess
from pathlib import Path

from docutils import nodes
from sphinx.util.docutils import SphinxDirective

from companion._requirements import installed_version

PDF_NAME = "book.pdf"      # beside index.html in the web build; .ci/pdf copies it there
PDF_BUTTON_LABEL = "Download the book (PDF)"

#: (what the page calls it, the distribution to ask for its version)
VERSIONS = (
    ("torch", "torch"),
    ("numpy", "numpy"),
    ("matplotlib", "matplotlib"),
    ("ipywidgets", "ipywidgets"),
    ("Pillow", "pillow"),
    ("Jupyter Book", "jupyter-book"),
    ("myst-nb", "myst-nb"),
    ("Sphinx", "sphinx"),
)


def _copy_html_handlers_to_singlehtml(app):
    if app.builder.name != "singlehtml":
        return
    handlers = app.registry.translation_handlers
    single = handlers.setdefault("singlehtml", {})
    for name, pair in handlers.get("html", {}).items():
        single.setdefault(name, pair)


def _add_pdf_button(app, pagename, templatename, context, doctree):
    if app.builder.name != "html" or "header_buttons" not in context:
        return
    context["header_buttons"].append({
        "type": "link",
        "url": context["pathto"](PDF_NAME, 1),
        "tooltip": PDF_BUTTON_LABEL,
        "icon": "fas fa-book",
        "label": "download-book-pdf-button",
    })


def source_commit(srcdir: str | Path) -> str | None:
    """The commit ``srcdir`` is checked out at ("… with uncommitted changes" when the
    tracked files differ from it), or None when it is not a git checkout."""
    def git(*args):
        return subprocess.run(["git", *args], cwd=srcdir, capture_output=True, text=True,
                              timeout=30)
    try:
        head = git("rev-parse", "HEAD")
        if head.returncode != 0:
            return None
        dirty = git("status", "--porcelain", "--untracked-files=no").stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    commit = head.stdout.strip()
    return f"{commit} (with uncommitted changes)" if dirty else commit


def _table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> nodes.table:
    """A plain docutils table: one header row, then ``rows``; every cell a paragraph."""
    table = nodes.table()
    group = nodes.tgroup(cols=len(header))
    table += group
    for _ in header:
        group += nodes.colspec(colwidth=1)

    def row(cells):
        out = nodes.row()
        for text in cells:
            entry = nodes.entry()
            entry += nodes.paragraph(text=text)
            out += entry
        return out

    head = nodes.thead()
    head += row(header)
    body = nodes.tbody()
    for cells in rows:
        body += row(cells)
    group += head
    group += body
    return table


def _toc_files(srcdir: Path) -> list[str]:
    """The files of ``_toc.yml``, in the book's order (root first)."""
    import yaml

    toc = yaml.safe_load((srcdir / "_toc.yml").read_text())
    files = [toc["root"]]

    def walk(entries):
        for entry in entries or []:
            if "file" in entry:
                files.append(entry["file"])
            walk(entry.get("chapters"))
            walk(entry.get("sections"))
    walk(toc.get("parts"))
    walk(toc.get("chapters"))
    return files


def _chapter_timings(srcdir: Path):
    """(notebook path, its ``machine_dependent_glue`` names) for each notebook of the
    book, in the book's order."""
    for name in _toc_files(srcdir):
        path = srcdir / f"{name}.ipynb"
        if path.exists():
            notebook = json.loads(path.read_text())
            yield path, notebook.get("metadata", {}).get("machine_dependent_glue", [])


def chapter_title(path: Path) -> str:
    """A notebook's title: the first level-1 heading of its markdown cells."""
    for cell in json.loads(path.read_text())["cells"]:
        if cell["cell_type"] == "markdown":
            for line in "".join(cell["source"]).splitlines():
                if line.startswith("# "):
                    return line[2:].strip()
    return path.stem


class BuildInfo(SphinxDirective):
    """``{build-info}``: versions, commit and the timings each chapter marks."""

    has_content = False

    def run(self):
        self.env.note_reread()          # computed at every build, never from a cache
        versions = [("Python", platform.python_version())]
        versions += [(shown, installed_version(dist) or "not installed") for shown, dist in VERSIONS]
        commit = source_commit(self.env.srcdir)
        built = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        facts = nodes.bullet_list()
        for text in (f"Built on {built}, on {platform.system()} {platform.machine()}.",
                     f"From commit {commit}." if commit else
                     "Not built from a git checkout: the commit is not known."):
            item = nodes.list_item()
            item += nodes.paragraph(text=text)
            facts += item
        timings = [(chapter_title(path), ", ".join(names) if names else "none")
                   for path, names in _chapter_timings(Path(self.env.srcdir))]
        return [facts,
                _table(("Package", "Version"), versions),
                nodes.paragraph(text="The glued values each chapter marks as timings "
                                     "(machine_dependent_glue in its notebook's metadata):"),
                _table(("Chapter", "Timings"), timings)]


def setup(app):
    app.connect("builder-inited", _copy_html_handlers_to_singlehtml)
    app.connect("html-page-context", _add_pdf_button, priority=502)   # after the theme's 501
    app.add_directive("build-info", BuildInfo)
    return {"parallel_read_safe": True, "parallel_write_safe": True, "version": "1.0"}
