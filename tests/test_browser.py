"""Open every page of the built book in headless Chromium, as a reader would.

Reference: the page itself. With every request to another host blocked, a page
must make zero outside requests, log zero console errors, and each control of each
static experiment must change its figure. Needs the built book (README's build
command) and Debian's chromium; ``SCREENSHOT_DIR=dir`` also saves a screenshot of
every page.
"""
from __future__ import annotations

import functools
import http.server
import os
import threading
from pathlib import Path
from urllib.parse import urlparse

import pytest

ROOT = Path(__file__).resolve().parents[1]
HTML = ROOT / "_build" / "html"
CHROMIUM = "/usr/bin/chromium"

pytestmark = pytest.mark.browser


def _pages() -> list[str]:
    if not (HTML / "index.html").exists():
        return []
    return sorted(str(p.relative_to(HTML)) for p in (HTML / "book").glob("*.html"))


@pytest.fixture(scope="module")
def server():
    assert (HTML / "index.html").exists(), f"build the book first: {HTML} is missing (see README)"
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    handler = functools.partial(Quiet, directory=str(HTML))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


@pytest.fixture(scope="module")
def browser():
    playwright = pytest.importorskip("playwright.sync_api")
    assert Path(CHROMIUM).exists(), f"{CHROMIUM} is missing: apt-get install chromium"
    with playwright.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run"])
        yield b
        b.close()


def test_the_book_has_pages():
    assert len(_pages()) >= 3, f"expected the intro and chapters in {HTML / 'book'}, found {_pages()}"


@pytest.mark.parametrize("page", _pages() or ["(book not built)"])
def test_page_is_offline_error_free_and_interactive(page, server, browser):
    assert page != "(book not built)", f"build the book first: {HTML} is missing"
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    outside, failed, errors = [], [], []

    def route(r):
        host = urlparse(r.request.url).hostname
        if r.request.url.startswith("data:") or host in ("127.0.0.1", "localhost"):
            r.continue_()
        else:
            outside.append(r.request.url)
            r.abort()

    context.route("**/*", route)
    tab = context.new_page()
    tab.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    tab.on("pageerror", lambda e: errors.append(str(e)))
    tab.on("requestfailed", lambda r: failed.append(r.url) if not r.url.startswith("data:") else None)
    response = tab.goto(f"{server}/{page}", wait_until="networkidle")
    assert response is not None and response.ok, f"{page}: HTTP {response and response.status}"

    experiments = tab.locator(".cx-explore")
    changed = []
    for e in range(experiments.count()):
        root = experiments.nth(e)
        name = root.get_attribute("data-cx-name")
        controls = root.locator("[data-cx-control]")
        assert controls.count() >= 1, f"{page}: experiment {name!r} has no controls"
        for c in range(controls.count()):
            control = controls.nth(c)
            before = root.locator("img.cx-frame").get_attribute("src")
            original = control.input_value()
            if control.evaluate("el => el.tagName") == "SELECT":
                values = control.locator("option").evaluate_all("os => os.map(o => o.value)")
                control.select_option(next(v for v in values if v != original))
            else:
                top = int(control.get_attribute("max"))
                target = str(0 if int(original) != 0 else top)
                control.evaluate("(el, v) => { el.value = v; el.dispatchEvent(new Event('input')); }", target)
            after = root.locator("img.cx-frame").get_attribute("src")
            assert after and after != before, (
                f"{page}: moving control {c} of experiment {name!r} did not change its figure")
            changed.append((name, c))
            # put it back, so each control is tested from the experiment's default
            control.evaluate("(el, v) => { el.value = v; el.dispatchEvent(new Event('input')); }", original)

    shots = os.environ.get("SCREENSHOT_DIR")
    if shots:
        Path(shots).mkdir(parents=True, exist_ok=True)
        tab.screenshot(path=str(Path(shots) / (page.replace("/", "_") + ".png")), full_page=True)
    context.close()
    assert outside == [], f"{page}: requests to other hosts: {outside[:5]}"
    assert failed == [], f"{page}: failed requests: {failed[:5]}"
    assert errors == [], f"{page}: console errors: {errors[:5]}"
    if (ROOT / "book" / (Path(page).stem + ".ipynb")).exists():   # every chapter has experiments
        assert changed, f"{page}: a chapter page without a single working experiment"
