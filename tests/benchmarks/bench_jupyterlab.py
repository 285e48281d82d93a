"""The live experience in a real JupyterLab, driven in headless Chromium (not a test).

    python tests/benchmarks/bench_jupyterlab.py                # vanishing (cheap + Run experiments)
    python tests/benchmarks/bench_jupyterlab.py clipping --quick
    python tests/benchmarks/bench_jupyterlab.py --companion-src /tmp/before   # another companion/

It copies book/ to a temporary folder, starts ``jupyter lab`` on a free port with a
token (``COMPANION_EXPLORE_MODE`` unset, so the chapters run live), opens each chapter in
Chromium (Python playwright, ``/usr/bin/chromium``, headless), runs Run -> Run All Cells
from the menu and waits until every cell has run and the kernel is idle. Then, for the
experiments of the chapter, as a reader would:

* **step**: a slider moved one step (ArrowRight / ArrowLeft on its handle) after the
  neighbouring settings had time to be prefetched; the time from the keydown to the
  moment the output ``<img>`` changes its ``src`` (a MutationObserver in the page,
  ``performance.now()``);
* **cold**: a control jumped far (a slider to its far end, a toggle two options away),
  a setting that was not prefetched; same clock;
* **run alone** / **run beside steps**: an expensive experiment's control changed to a
  setting not computed yet, then its Run button clicked; the time until its status says
  "done in"; the second time while a cheap slider of the same notebook is stepped every
  ~0.5 s (**step during run** times those steps);
* **first run (Run All)**: what the expensive experiments' own status reports for the
  first computation, started when the cell displays them during Run All.

Prints a markdown table (chapter, experiment, measure, median, max, n), with the load
(``uptime``) before and after: the machine is shared, so run it twice.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CHAPTERS = ["vanishing"]   # 4 cheap experiments and 2 expensive (Run) ones

# Page-side helpers: find the experiments (output areas holding a widget image, in
# notebook order), their controls, and time one action until the image changes.
HELPERS = r"""
window.__cx = (() => {
  const exps = () => [...document.querySelectorAll('.jp-OutputArea-output')]
      .filter(o => o.querySelector('img.widget-image'));
  const controls = root => [...root.querySelectorAll(
      '.noUi-handle, .widget-toggle-buttons, .widget-dropdown select')];
  const describe = () => exps().map(root => ({
      title: (root.querySelector('.widget-html b') || {}).textContent || '',
      expensive: [...root.querySelectorAll('button')].some(b => b.textContent.trim() === 'Run'),
      status: [...root.querySelectorAll('.widget-html')].map(h => h.textContent).join(' | '),
      controls: controls(root).map(c => c.classList.contains('noUi-handle')
          ? {kind: 'slider', n: +c.getAttribute('aria-valuemax') - +c.getAttribute('aria-valuemin') + 1,
             at: +c.getAttribute('aria-valuenow') - +c.getAttribute('aria-valuemin')}
          : c.tagName === 'SELECT' ? {kind: 'select', n: c.options.length, at: c.selectedIndex}
          : {kind: 'toggle', n: c.querySelectorAll('button').length,
             at: [...c.querySelectorAll('button')].findIndex(b => b.classList.contains('mod-active'))})}));
  const perform = (c, action) => {
    if (c.classList.contains('noUi-handle')) {
      const key = {right: 'ArrowRight', left: 'ArrowLeft', home: 'Home', end: 'End'}[action];
      c.focus();
      c.dispatchEvent(new KeyboardEvent('keydown', {key, code: key, bubbles: true, cancelable: true}));
    } else if (c.tagName === 'SELECT') {
      c.selectedIndex = action; c.dispatchEvent(new Event('change', {bubbles: true}));
    } else {
      c.querySelectorAll('button')[action].click();
    }
  };
  // Resolve with the ms from the action to the image's next src change (null: none).
  const act = (k, ci, action, timeout) => new Promise(resolve => {
    const root = exps()[k], img = root.querySelector('img.widget-image');
    const t0 = performance.now();
    const obs = new MutationObserver(() => { obs.disconnect(); resolve(performance.now() - t0); });
    obs.observe(img, {attributes: true, attributeFilter: ['src']});
    setTimeout(() => { obs.disconnect(); resolve(null); }, timeout);
    perform(controls(root)[ci], action);
  });
  const change = (k, ci, action) => perform(controls(exps()[k])[ci], action);
  const run = k => [...exps()[k].querySelectorAll('button')].find(b => b.textContent.trim() === 'Run').click();
  const errors = () => document.querySelectorAll(
      '.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]').length;
  const prompts = () => [...document.querySelectorAll('.jp-CodeCell .jp-InputArea-prompt')]
      .map(p => p.textContent.trim());
  return {exps, describe, act, change, run, errors, prompts};
})();
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


class Lab:
    """A JupyterLab server on a temporary copy of book/."""

    def __init__(self, companion_src: str | None):
        self.tmp = Path(tempfile.mkdtemp(prefix="cx-lab-"))
        self.book = self.tmp / "book"
        shutil.copytree(ROOT / "book", self.book, ignore=shutil.ignore_patterns("_build", ".ipynb_checkpoints"))
        settings = self.tmp / "settings"
        for plugin, values in {
                "@jupyterlab/notebook-extension/tracker": {"windowingMode": "none"},
                "@jupyterlab/apputils-extension/notification": {"fetchNews": "false", "checkForUpdates": False},
        }.items():
            path = settings / (plugin + ".jupyterlab-settings")
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(values))
        env = dict(os.environ)
        env.pop("COMPANION_EXPLORE_MODE", None)        # live mode in the kernel
        env["JUPYTERLAB_SETTINGS_DIR"] = str(settings)
        env["JUPYTERLAB_WORKSPACES_DIR"] = str(self.tmp / "workspaces")   # no restored tabs
        env["JUPYTER_RUNTIME_DIR"] = str(self.tmp / "runtime")
        if companion_src:
            env["PYTHONPATH"] = os.path.abspath(companion_src) + os.pathsep + env.get("PYTHONPATH", "")
        self.port, self.token = free_port(), "cxbench" + str(os.getpid())
        self.log = open(self.tmp / "lab.log", "w")
        self.proc = subprocess.Popen(
            ["jupyter", "lab", "--no-browser", f"--port={self.port}", "--ip=127.0.0.1",
             f"--ServerApp.token={self.token}", f"--notebook-dir={self.book}",
             "--ServerApp.open_browser=False", "--LabApp.news_url=", "--allow-root"],
            env=env, stdout=self.log, stderr=subprocess.STDOUT, cwd=self.book)
        self.url = f"http://127.0.0.1:{self.port}"
        for _ in range(120):
            try:
                self.api("status")
                return
            except Exception:
                time.sleep(0.5)
        raise RuntimeError(f"jupyter lab did not start; see {self.tmp / 'lab.log'}")

    def api(self, path: str):
        with urllib.request.urlopen(f"{self.url}/api/{path}?token={self.token}", timeout=5) as r:
            return json.loads(r.read())

    def kernels_idle(self) -> bool:
        kernels = self.api("kernels")
        return bool(kernels) and all(k["execution_state"] == "idle" for k in kernels)

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()
        shutil.rmtree(self.tmp, ignore_errors=True)


def wait_for(predicate, timeout: float, every: float = 0.25):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    return None


def done_seconds(status: str) -> float | None:
    m = re.search(r"done in ([0-9.]+) s", status)
    return float(m.group(1)) if m else None


def bench_chapter(lab: Lab, browser, chapter: str, quick: bool, rows: list) -> None:
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(f"{lab.url}/lab/tree/{chapter}.ipynb?reset&token={lab.token}")
    page.wait_for_selector(".jp-Notebook .jp-CodeCell", timeout=120_000)
    wait_for(lab.kernels_idle, 60)
    time.sleep(1.0)
    page.evaluate(HELPERS)
    # Run -> Run All Cells
    page.click("li.lm-MenuBar-item:has-text('Run')")
    page.click("li.lm-Menu-item[data-command='runmenu:run-all']")
    started = time.monotonic()

    idle_polls = [0]

    def finished():   # no cell waiting or running, and the kernel idle at 3 polls in a row
        prompts = page.evaluate("__cx.prompts()")
        quiet = (any(re.fullmatch(r"\[\d+\]:", p) for p in prompts)
                 and not any("*" in p for p in prompts) and lab.kernels_idle())
        idle_polls[0] = idle_polls[0] + 1 if quiet else 0
        return idle_polls[0] >= 3

    if not wait_for(finished, 600, 0.5):
        print(f"{chapter}: Run All did not finish within 600 s", file=sys.stderr)
    run_all = time.monotonic() - started
    rows.append((chapter, "(notebook)", "Run All until idle, s", [run_all]))
    exps = page.evaluate("__cx.describe()")
    # the first computation of each expensive experiment, started during Run All
    firsts = wait_for(lambda: (lambda d: d if all(done_seconds(e["status"]) is not None or "Error" in e["status"]
                                                  for e in d if e["expensive"]) else None)(
        page.evaluate("__cx.describe()")), 600, 0.5) or page.evaluate("__cx.describe()")
    errors = page.evaluate("__cx.errors()")
    rows.append((chapter, "(notebook)", "error/stderr outputs", [errors]))
    for e in firsts:
        if e["expensive"]:
            total = done_seconds(e["status"])
            rows.append((chapter, e["title"][:40], "first run (Run All), s",
                         [x for x in [total] if x is not None]))
            waited = re.search(r"of which ([0-9.]+) s waiting", e["status"])
            if total is not None and waited:   # the status splits off the time queued
                rows.append((chapter, e["title"][:40], "  of which computing, s",
                             [total - float(waited.group(1))]))
    time.sleep(2.0)   # let the prefetch of the initial settings finish

    cheap = [k for k, e in enumerate(exps) if not e["expensive"]]
    expensive = [k for k, e in enumerate(exps) if e["expensive"]]
    timeout = 20_000

    def ctl(k):
        return page.evaluate("__cx.describe()")[k]["controls"]

    drawn = []   # whether the kernel drew the frame when asked (its status says "drawn in")
    kernel_ms = []   # what the kernel says the drawing took ("drawn in N ms")

    def timed(k, ci, action):
        ms = page.evaluate(f"__cx.act({k}, {ci}, {json.dumps(action)}, {timeout})")
        time.sleep(0.05)
        status = page.evaluate("__cx.describe()")[k]["status"]
        drawn.append("drawn in" in status)
        m = re.search(r"drawn in ([0-9]+) ms", status)
        kernel_ms.append(float(m.group(1)) if m else None)
        return ms

    def step(k, ci):
        c = ctl(k)[ci]
        return timed(k, ci, "right" if c["at"] + 1 < c["n"] else "left")

    for k in cheap[:2] if quick else cheap:
        title = exps[k]["title"][:40]
        sliders = [i for i, c in enumerate(exps[k]["controls"]) if c["kind"] == "slider" and c["n"] > 1]
        steps, colds = [], []
        drawn.clear()
        kernel_ms.clear()
        for ci in sliders[: 1 if quick else 2]:
            for _ in range(2 if quick else 4):
                time.sleep(1.5)        # the prefetch of the neighbours
                steps.append(step(k, ci))
        for ci, c in enumerate(ctl(k)):   # far jumps: settings two or more steps away
            time.sleep(1.5)
            if c["kind"] == "slider" and c["n"] >= 3:
                far = "end" if c["at"] < c["n"] / 2 else "home"
                if abs((c["n"] - 1 if far == "end" else 0) - c["at"]) >= 2:
                    colds.append(timed(k, ci, far))
            elif c["kind"] in ("toggle", "select") and c["n"] >= 3:
                colds.append(timed(k, ci, (c["at"] + 2) % c["n"]))
        rows.append((chapter, title, "step, ms", [s for s in steps if s is not None]))
        rows.append((chapter, title, "steps not prefetched", [sum(drawn[:len(steps)])]))
        rows.append((chapter, title, "cold, ms", [s for s in colds if s is not None]))
        rows.append((chapter, title, "cold, kernel's drawing, ms",
                     [v for v in kernel_ms[len(steps):] if v is not None]))
        missed = sum(s is None for s in steps + colds)
        if missed:
            rows.append((chapter, title, "no new image (timeouts)", [missed]))

    for k in expensive[:1] if quick else expensive:
        title = exps[k]["title"][:40]
        controls = ctl(k)
        moves = []
        for ci in reversed(range(len(controls))):   # a setting never computed: change one control
            c = controls[ci]
            moves.append((ci, ("left" if c["at"] > 0 else "right") if c["kind"] == "slider"
                          else (c["at"] + 1) % c["n"]))
        for m, (ci, action) in enumerate(moves[:2]):
            page.evaluate(f"__cx.change({k}, {ci}, {json.dumps(action)})")
            time.sleep(0.5)
            t0 = time.monotonic()
            page.evaluate(f"__cx.run({k})")
            # the status of the last run goes away when the kernel takes the click
            wait_for(lambda: done_seconds(page.evaluate("__cx.describe()")[k]["status"]) is None, 10, 0.05)
            during, bounce = [], 0
            while True:
                status = page.evaluate("__cx.describe()")[k]["status"]
                if done_seconds(status) is not None and "running" not in status:
                    break
                if "Error" in status or time.monotonic() - t0 > 600:
                    break
                if m == 1 and cheap:
                    c0 = cheap[0]
                    s0 = [i for i, c in enumerate(ctl(c0)) if c["kind"] == "slider"][0]
                    during.append(step(c0, s0))
                    time.sleep(0.5)
                else:
                    time.sleep(0.1)
            wall = time.monotonic() - t0
            reported = done_seconds(status)
            label = "run alone, s" if m == 0 else "run beside steps, s"
            rows.append((chapter, title, label, [reported if reported is not None else wall]))
            if m == 1:
                rows.append((chapter, title, "step during run, ms", [d for d in during if d is not None]))
    page.close()


def table(rows: list) -> str:
    out = ["| chapter | experiment | measure | median | max | n |", "|---|---|---|---|---|---|"]
    for chapter, exp, measure, values in rows:
        if values:
            med, top = statistics.median(values), max(values)
            fmt = (lambda v: f"{v:.0f}") if "ms" in measure else (lambda v: f"{v:.3g}")
            out.append(f"| {chapter} | {exp} | {measure} | {fmt(med)} | {fmt(top)} | {len(values)} |")
        else:
            out.append(f"| {chapter} | {exp} | {measure} | – | – | 0 |")
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("chapters", nargs="*", default=DEFAULT_CHAPTERS)
    parser.add_argument("--quick", action="store_true", help="fewer steps and experiments")
    parser.add_argument("--companion-src", help="a folder holding another companion/ package to import")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    print("load before:", uptime())
    rows: list = []
    lab = Lab(args.companion_src)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True)
            for chapter in args.chapters:
                bench_chapter(lab, browser, chapter, args.quick, rows)
                for kernel in lab.api("kernels"):     # one kernel at a time on 2 cores
                    req = urllib.request.Request(f"{lab.url}/api/kernels/{kernel['id']}?token={lab.token}",
                                                 method="DELETE")
                    urllib.request.urlopen(req, timeout=10)
            browser.close()
    finally:
        lab.close()
    print("load after: ", uptime())
    print(table(rows))


if __name__ == "__main__":
    main()
