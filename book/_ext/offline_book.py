"""Local Sphinx extension: make the built book work offline, with no kernel.

Loaded by ``_config.yml`` (``sphinx: local_extensions``). It does four things:

1. Tells the notebooks executed during the build to render experiments in their
   *static* form (``companion.explore``): the environment variable set here is
   inherited by every kernel the build starts, so a plain ``jupyter-book build .``
   produces the precomputed, kernel-free experiments and nobody sets a flag by hand.
2. Removes sphinx-thebe's scripts from every page. We do not use thebe, and its
   inline ``const THEBE_JS_URL`` is declared twice on Jupyter Book 1's stock pages,
   which throws a console error.
3. Refuses, at the end of the build, any page that still references a script or
   stylesheet on another host (a regression guard; the browser test checks the
   same thing from the outside).
4. Numbers exercises (and figures, tables, any numbered thing) per chapter. Sphinx
   counts them across the whole book when sections are not numbered, so the fourth
   chapter opened with "Exercise 14"; here each chapter starts again at 1.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

EXPLORE_MODE_VARIABLE = "COMPANION_EXPLORE_MODE"


def _drop_thebe(app, pagename, templatename, context, doctree):
    scripts = context.get("script_files")
    if scripts:
        context["script_files"] = [
            s for s in scripts
            if "thebe" not in str(s) and "THEBE_JS_URL" not in str(getattr(s, "attributes", {}).get("body", ""))
        ]
    css = context.get("css_files")
    if css:
        context["css_files"] = [c for c in css if "thebe" not in str(c)]


_REMOTE = re.compile(r"""<(?:script|link)\b[^>]*(?:src|href)=["'](?:https?:)?//[^"']+["']""", re.I)


def _check_no_remote_assets(app, exception):
    if exception is not None or app.builder.format != "html":
        return
    offenders = []
    for page in Path(app.outdir).rglob("*.html"):
        text = page.read_text(encoding="utf-8", errors="replace")
        for match in _REMOTE.finditer(text):
            tag = match.group(0)
            if "<link" in tag.lower() and 'rel="stylesheet"' not in tag and "preload" not in tag:
                continue  # plain hyperlinks in <link rel=canonical> etc. load nothing
            offenders.append(f"{page.relative_to(app.outdir)}: {tag[:120]}")
    if offenders:
        raise RuntimeError("pages load assets from other hosts:\n" + "\n".join(offenders[:20]))


def _number_per_chapter(app, env):
    """Renumber every numbered element per document, keeping its order.

    Runs on ``env-get-updated`` after Sphinx's own ``assign_figure_numbers``
    (priority 900 > the default 500). Sphinx stores numbers as tuples prefixed by
    section numbers; the book's sections are not numbered, so the tuples are
    ``(n,)`` counted book-wide, and only those are renumbered. Returns the documents
    whose numbers changed, so that they are written again.
    """
    changed = []
    for docname, by_type in env.toc_fignumbers.items():
        for figtype, numbers in by_type.items():
            if not all(len(n) == 1 for n in numbers.values()):
                continue   # section-prefixed numbers already restart per section
            order = sorted(numbers, key=numbers.get)
            renumbered = {key: (i + 1,) for i, key in enumerate(order)}
            if renumbered != numbers:
                by_type[figtype] = renumbered
                changed.append(docname)
    return sorted(set(changed))


def setup(app):
    os.environ[EXPLORE_MODE_VARIABLE] = "static"
    app.connect("html-page-context", _drop_thebe, priority=900)
    app.connect("build-finished", _check_no_remote_assets)
    app.connect("env-get-updated", _number_per_chapter, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True, "version": "1.0"}
