"""Print the book's single-page build to the PDF edition: ``_build/pdf/book.pdf``.

    python3 .ci/print_pdf.py [BUILD_DIR]        (BUILD_DIR defaults to _build)

Run by ``.ci/pdf`` after ``jupyter-book build --builder singlehtml`` (which reuses the
HTML build's executed notebooks). Chromium (Debian's, driven by Playwright; no browser
download, no network: every request to another host is refused) opens the single page,
waits for MathJax to typeset every formula, and prepares it for paper:

* a title page: the title, the web edition's address, the commit and the date, and
  the contents with each chapter's number;
* every chapter starts on a new page, under "Chapter N" (numbered in ``_toc.yml``'s
  order; the intro and the back matter are not numbered);
* each experiment is printed as its default frame, its controls replaced by a caption
  that names the settings shown and links to the experiment in the web edition
  (``html.baseurl`` in ``_config.yml`` + the page + the experiment's anchor);
* code is printed as the web page shows it before any click: the cells the web page
  folds (``hide-input``) are left out, the others printed; outputs are printed;
  exercise solutions are printed open (paper has nothing to click).

Chromium then prints it (A4, page numbers, PDF bookmarks from the headings). The PDF
is copied to ``BUILD_DIR/html/book.pdf``, where the web pages' "Download the book
(PDF)" button and the intro's link point.
"""
from __future__ import annotations

import functools
import http.server
import json
import shutil
import sys
import threading
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"

sys.path.insert(0, str(ROOT / "book" / "_ext"))
from editions import source_commit  # noqa: E402  (the build page's commit, the same way)


def toc_chapters(root: Path) -> tuple[str, list[str], list[str]]:
    """(root doc, numbered chapters, unnumbered back matter) from ``_toc.yml``: every
    chapter of a part is numbered, except those of the part captioned "Back matter"."""
    toc = yaml.safe_load((root / "_toc.yml").read_text())
    numbered, back = [], []
    for part in toc.get("parts", []):
        files = [c["file"] for c in part.get("chapters", [])]
        (back if part.get("caption", "").lower() == "back matter" else numbered).extend(files)
    return toc["root"], numbered, back


def book_config(root: Path) -> dict:
    return yaml.safe_load((root / "_config.yml").read_text())


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


# Print styles: what is for the screen goes, what is for paper stays.
PRINT_CSS = r"""
@page { size: A4; margin: 18mm 16mm 20mm 16mm; }
html { font-size: 11pt !important; }
* { box-shadow: none !important; text-shadow: none !important; filter: none !important; }
body, .bd-container, .bd-container__inner, .bd-main, .bd-content, .bd-article-container,
.bd-article { display: block !important; min-width: 0 !important; background: white !important; }
.bd-header, .bd-header-article, .bd-sidebar-primary, .bd-sidebar-secondary, .bd-footer,
.bd-footer-article, .bd-footer-content, .prev-next-area, .headerlink, .skip-link,
#pst-back-to-top, #jb-print-docs-body, .pst-async-banner-revealer, .only-web, .search-button,
details.hide.above-input, .cx-controls, .cx-note, script, .toggle-button,
.cell_input .copybtn, button.copybtn { display: none !important; }
.bd-main, .bd-content, .bd-article-container, .bd-page-width, .bd-container,
.bd-container__inner, .bd-article { max-width: none !important; width: auto !important;
  padding: 0 !important; margin: 0 !important; }
.bd-main .bd-content .bd-article-container .bd-article { padding: 0 !important; }
h1 { display: block !important; }      /* the theme's print style hides the page's h1 */
li:has(.only-web) { display: none !important; }
h2, h3, h4 { break-after: avoid; }
.print-chapter { break-before: page; }
.print-chapter-label { font-size: 1.1rem; color: #555; margin: 0 0 .2rem 0;
  letter-spacing: .05em; text-transform: uppercase; }
.cx-explore { break-inside: avoid; border: 1px solid #ccc !important; }
.cx-frame { max-width: 100% !important; }
.cx-print-caption { font-size: .85rem; color: #333; margin: .4rem 0 0 0; }
.cx-print-caption a { white-space: nowrap; font-size: .8rem; }
div.highlight pre, pre { white-space: pre-wrap !important; word-break: break-word;
  font-size: .74rem !important; }
.cell_output pre, .output pre { font-size: .66rem !important; }
/* Chromium never splits a box that scrolls (overflow: auto) across pages: a long code
   cell or table would jump to the next page and leave an empty frame behind */
.cell, .cell_input, .cell_output, .output, div.highlight, pre, .pst-scrollable-table-container,
.table-wrapper { overflow: visible !important; }
.cell, .cell_input, .cell_output, div.highlight, div[class*="highlight-"], pre {
  break-inside: auto !important; }
.cell_input, div.highlight, div[class*="highlight-"] { display: block !important; }
table { break-inside: auto; font-size: .85rem; max-width: 100% !important; }
td, th { overflow-wrap: anywhere; }
td code, td .pre, th code, th .pre { white-space: normal !important; overflow-wrap: anywhere; }
img { break-inside: avoid; }
.toggle-hidden, .solution .toggle-hidden, .toggle-details__container { display: block !important; }
.print-title-page { break-after: page; text-align: left; padding-top: 25mm; }
.print-title-page h1 { font-size: 2.2rem; line-height: 1.2; margin-bottom: 1rem; }
.print-title-page .edition { font-size: 1.2rem; color: #444; margin-bottom: 2rem; }
.print-title-page ol, .print-title-page ul { font-size: 1rem; }
.print-title-page .facts { font-size: .85rem; color: #444; margin-top: 2rem; }
mjx-container { break-inside: avoid; }
"""

# A4 (210 mm) less the 16 mm margins, in CSS pixels (96 per inch)
PRINTABLE_PX = round((210 - 2 * 16) / 25.4 * 96)

# The elements that reach past the printable width (innermost first), as short strings.
WIDE_JS = r"""
(limit) => {
  const out = [];
  document.querySelectorAll('body *').forEach(e => {
    const r = e.getBoundingClientRect();
    if (r.width > 0 && r.right > limit && ![...e.children].some(c => c.getBoundingClientRect().right > limit))
      out.push(e.tagName.toLowerCase() + '.' + String(e.className).split(' ')[0] + ' "' +
               (e.textContent || '').trim().slice(0, 40) + '" ends at ' + Math.round(r.right) + ' px');
  });
  return out.slice(0, 10);
}
"""

# Runs in the page: builds the title page, numbers the chapters, captions the experiments.
PREPARE_JS = r"""
(args) => {
  const {numbered, back, root, webBase, title, commit, date} = args;
  const docStart = id => document.getElementById('document-' + id);
  const docTitle = id => { const s = docStart(id); if (!s) return null;
    const h = s.nextElementSibling && s.nextElementSibling.querySelector('h1, h2');
    return h ? h.textContent.replace(/#$/, '').trim() : id; };
  const missing = numbered.concat(back).filter(id => !docStart(id));
  if (missing.length) return {error: 'documents missing from the single page: ' + missing.join(', ')};

  // Chapters: a page break before each, and "Chapter N" above its title.
  const chapters = [];
  numbered.forEach((id, i) => {
    const section = docStart(id).nextElementSibling;
    section.classList.add('print-chapter');
    const h = section.querySelector('h1, h2');
    const label = document.createElement('p');
    label.className = 'print-chapter-label';
    label.textContent = 'Chapter ' + (i + 1);
    h.parentNode.insertBefore(label, h);
    chapters.push({id, n: i + 1, title: docTitle(id)});
  });
  back.forEach(id => docStart(id).nextElementSibling.classList.add('print-chapter'));

  // Experiments: the default frame, with a caption naming its settings and its web page.
  let current = root, experiments = [];
  const walker = document.querySelectorAll('span[id^="document-"], .cx-explore');
  walker.forEach(node => {
    if (node.tagName === 'SPAN') { current = node.id.slice('document-'.length); return; }
    const settings = [];
    node.querySelectorAll('.cx-row').forEach(row => {
      const name = row.querySelector('.cx-label').textContent.trim();
      const control = row.querySelector('[data-cx-control]');
      let value;
      if (control.tagName === 'SELECT') value = control.options[control.selectedIndex].textContent;
      else value = row.querySelector('output').textContent;
      settings.push(name + ' = ' + value.trim());
    });
    const url = webBase + current + '.html#' + node.id;
    const caption = document.createElement('p');
    caption.className = 'cx-print-caption';
    caption.append('Printed at ' + (settings.length ? settings.join('; ') : 'its only setting') +
                   '. Move its controls in the web edition:');
    const a = document.createElement('a'); a.href = url; a.textContent = url;
    caption.append(document.createElement('br'), a);
    node.querySelector('img.cx-frame').after(caption);
    experiments.push({doc: current, id: node.id, url, settings});
  });

  // Links: within the book, to the place in this PDF; elsewhere on the book's site
  // (a page that is not printed, a download), to the web edition. None to this server.
  // Sphinx writes its links relative to the build's root, the chapters' own HTML
  // (tables with links to a chapter) relative to the chapter's page in book/.
  const docs = new Set(numbered.concat(back, [root]));
  const bases = [location.origin + '/print.html', location.origin + '/' + root + '.html'];
  document.querySelectorAll('a[href]').forEach(a => {
    const href = a.getAttribute('href');
    if (/^[a-z]+:/i.test(href) && !href.startsWith(location.origin)) return;   // another host
    if (href.startsWith('#')) return;
    for (const base of bases) {
      const u = new URL(href, base);
      const doc = u.pathname.replace(/^\//, '').replace(/\.html$/, '');
      if (docs.has(doc)) {
        const id = decodeURIComponent(u.hash.slice(1));
        a.setAttribute('href', id && document.getElementById(id) ? '#' + id : '#document-' + doc);
        return;
      }
    }
    const u = new URL(href, bases[0]);
    a.setAttribute('href', webBase + u.pathname.replace(/^\//, '') + u.hash);
  });

  // Exercise solutions: open (togglebutton hides them until a click).
  document.querySelectorAll('.toggle-hidden').forEach(e => e.classList.remove('toggle-hidden'));
  document.querySelectorAll('details').forEach(d => { if (!d.classList.contains('above-input')) d.open = true; });

  // The title page, with the contents.
  const main = document.querySelector('article.bd-article') || document.body;
  const page = document.createElement('section');
  page.className = 'print-title-page';
  const h = document.createElement('h1'); h.textContent = title; page.append(h);
  const ed = document.createElement('p'); ed.className = 'edition';
  ed.textContent = 'PDF edition'; page.append(ed);
  const contents = document.createElement('ol');
  chapters.forEach(c => { const li = document.createElement('li'); const a = document.createElement('a');
    a.href = '#document-' + c.id; a.textContent = c.title; li.append(a); contents.append(li); });
  const intro = document.createElement('p'); intro.textContent = 'Contents'; intro.style.fontWeight = '600';
  page.append(intro, contents);
  const backList = document.createElement('ul');
  back.forEach(id => { const li = document.createElement('li'); const a = document.createElement('a');
    a.href = '#document-' + id; a.textContent = docTitle(id); li.append(a); backList.append(li); });
  page.append(backList);
  const facts = document.createElement('div'); facts.className = 'facts';
  const web = document.createElement('p');
  web.append('Every experiment in this book has controls; here each is printed at its default settings. ' +
             'The web edition, where the controls move: ');
  const wa = document.createElement('a'); wa.href = webBase + root + '.html'; wa.textContent = webBase; web.append(wa, '.');
  const code = document.createElement('p');
  code.textContent = 'Code is printed as the web pages show it: the cells they fold are left out here; ' +
                     'every cell is in the chapters\' notebooks.';
  const built = document.createElement('p');
  built.textContent = 'Built ' + date + (commit ? ' from commit ' + commit : '') + '.';
  facts.append(web, code, built); page.append(facts);
  main.prepend(page);
  return {chapters, experiments};
}
"""


def print_pdf(build: Path) -> Path:
    from playwright.sync_api import sync_playwright

    single = build / "singlehtml"
    page_path = single / "book" / "intro.html"
    if not page_path.exists():
        sys.exit(f"no single-page build at {page_path}: run jupyter-book build --builder singlehtml first")
    config = book_config(ROOT)
    web_base = (config.get("html", {}) or {}).get("baseurl") or ""
    if web_base and not web_base.endswith("/"):
        web_base += "/"
    root_doc, numbered, back = toc_chapters(ROOT)
    # singlehtml writes the root document to book/intro.html but links every asset
    # relative to the build's root (_static/..., _images/...): serve it from there.
    shutil.copyfile(page_path, single / "print.html")
    out_dir = build / "pdf"
    out_dir.mkdir(parents=True, exist_ok=True)
    pdf = out_dir / "book.pdf"

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(single)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    origin = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
            page = browser.new_page(viewport={"width": 1000, "height": 1400})
            page.route("**/*", lambda route: route.continue_() if route.request.url.startswith((origin, "data:"))
                       else route.abort())
            page.goto(f"{origin}/print.html", wait_until="load", timeout=120_000)
            page.wait_for_function("window.MathJax && MathJax.startup && MathJax.startup.promise", timeout=60_000)
            page.evaluate("() => MathJax.startup.promise")
            page.add_style_tag(content=PRINT_CSS)
            info = page.evaluate(PREPARE_JS, {
                "numbered": numbered, "back": back, "root": root_doc, "webBase": web_base,
                "title": config.get("title", ""), "commit": source_commit(ROOT),
                "date": time.strftime("%Y-%m-%d", time.gmtime())})
            if "error" in info:
                sys.exit(info["error"])
            page.evaluate("() => MathJax.startup.promise")
            page.emulate_media(media="print")
            # Chromium shrinks every page to fit the widest element: refuse one wider
            # than the paper instead of printing the whole book small
            page.set_viewport_size({"width": PRINTABLE_PX, "height": 1400})
            page.wait_for_timeout(300)
            width = page.evaluate("() => document.documentElement.scrollWidth")
            if width > PRINTABLE_PX + 8:
                wide = page.evaluate(WIDE_JS, PRINTABLE_PX + 8)
                sys.exit(f"the book is {width} px wide, the printed page {PRINTABLE_PX} px (fix the "
                         f"print style in .ci/print_pdf.py): " + "; ".join(wide))
            # outline: the PDF's bookmarks, from the headings; tagged: the structure a
            # screen reader needs to read the PDF (about 10 MB of the file; worth it)
            page.pdf(path=str(pdf), format="A4", print_background=True, outline=True, tagged=True,
                     display_header_footer=True, header_template="<span></span>",
                     footer_template='<div style="font-size:8px;width:100%;text-align:center;color:#666">'
                                     '<span class="pageNumber"></span></div>',
                     margin={"top": "16mm", "bottom": "18mm", "left": "16mm", "right": "16mm"})
            browser.close()
    finally:
        server.shutdown()
    (out_dir / "experiments.json").write_text(json.dumps(info, indent=1))
    shutil.copyfile(pdf, build / "html" / "book.pdf")
    return pdf


if __name__ == "__main__":
    build = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "_build"
    started = time.perf_counter()
    path = print_pdf(build.resolve())
    print(f"The PDF edition is at: {path} ({path.stat().st_size / 1e6:.1f} MB, "
          f"printed in {time.perf_counter() - started:.0f} s)")
