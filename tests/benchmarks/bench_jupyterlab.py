"""What a reader of the live book sees in a real JupyterLab, driven in headless Chromium (not a test).

    python tests/benchmarks/bench_jupyterlab.py                  # every chapter of _toc.yml, this checkout
    python tests/benchmarks/bench_jupyterlab.py vanishing clipping --quick
    python tests/benchmarks/bench_jupyterlab.py --chapters vanishing,optimizers
    python tests/benchmarks/bench_jupyterlab.py --companion-src /tmp/before vanishing   # another companion/
    python tests/benchmarks/bench_jupyterlab.py --compare /tmp/before /work/main         # before | after

A version is a checkout holding ``companion/`` and ``book/`` (without ``--compare``: this
checkout's book/, and the companion of ``--companion-src`` or of this checkout). For each
version the script copies its book/ to a temporary folder and starts its own ``jupyter
lab`` (token, free port, ``COMPANION_EXPLORE_MODE`` unset so the chapters run live,
``PYTHONPATH`` set to the companion's folder). With ``--compare`` the chapters alternate
which version goes first, so that both see the same machine load. Each chapter is opened
in Chromium (Python playwright, ``/usr/bin/chromium``, headless), *Run -> Run All Cells*
is clicked, and as soon as every prompt is numbered and the kernel reports idle (polled
every 0.1 s, no pause for prefetching) a reader starts:

* **walk**: for each cheap experiment in notebook order, each control in turn is moved
  one position at a time from where it is to its last position, then to its first, then
  back to where it started (``2 (n - 1)`` steps for ``n`` positions): sliders by
  ArrowRight / ArrowLeft on the handle, toggles and dropdowns to the neighbouring
  option. A step is timed from the keydown (or click) to the moment the experiment's
  ``<img>`` changes its ``src`` (a MutationObserver in the page, ``performance.now()``).
  No new image within ``STEP_TIMEOUT_MS`` is a *timeout* (the reader waits on for it,
  up to ``LATE_MS``, so that a late image is not taken for the next step's). The reader
  pauses ``PACE_S`` = 0.3 s after each new image (or timeout) before the next step. The
  first ``FIRST_STEPS`` steps of a chapter, made right after Run All, are reported apart.
* **cold**: after its walk, each control of the experiment jumped far (a slider to its
  far end, a toggle or dropdown two options on), at the same pace.
* **first frame**: from the moment the experiment's cell starts executing to the moment
  its ``img.widget-image`` first has a ``src``. The start is read from the DOM: the
  previous code cell's prompt turning from ``[*]`` to ``[N]``. JupyterLab sets ``[N]``
  when that cell's ``execute_reply`` and idle status arrive, and the kernel starts the
  next queued cell at once, so the two differ by a message's latency. A cell's own
  prompt is no signal: Run All turns every prompt to ``[*]`` at the same moment.
* **expensive (Run) experiments**: their first frame is their first Run, queued when
  the cell displays them and started when the kernel is idle: *first run* is what their
  status reports ("done in T s (of which W s waiting ...)"), *computing* is ``T - W``.
  The script waits for every first Run to finish (the cheap walks go on meanwhile, as a
  reader's would), then walks their controls as above: a step to a setting never
  computed shows "press Run" (``PRESS_RUN``) and no image, and a step back to the
  setting whose frame is still on screen only clears that status (the image's bytes do
  not change, so neither does its ``src``); both are counted, not timed. Then, for each
  expensive experiment, **run alone**: a control moved to a setting not computed yet
  and Run clicked, the reader idle; **run beside steps**: another new setting, Run while
  the reader steps the first control of the first cheap experiment every
  ``BESIDE_EVERY_S`` (**step during a Run** times those steps). Both are the totals the
  status reports (0.1 s resolution), queueing included: a Run waits until the kernel's
  main thread is quiet. The ratios beside/alone and first-run-computing/alone compare
  Runs of neighbouring settings, chosen to cost the same where the labels allow (see
  :meth:`Reader.run_targets`; the notes name them).

``--quick`` walks two cheap experiments and one expensive one per chapter, and Runs
that one only. Prints the load (``uptime``) before and after, one markdown table with
the versions side by side (latencies as median / p95 / max (n); p95 by nearest rank),
the overall figures, and a list of oddities (steps that got no image, error statuses,
stderr outputs) and notes. The machine is shared: figures compare only inside one run.
"""
from __future__ import annotations

import argparse
import json
import math
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
PACE_S = 0.3             # a reader's pause after each new image, before the next step
STEP_TIMEOUT_MS = 10000  # no new image after this long: a timeout
LATE_MS = 30000          # ... but the reader waits this long for it before the next step
PRESS_RUN_QUIET_MS = 700    # an expensive step from a "press Run" setting that stays silent this long
FIRST_STEPS = 5          # the steps right after Run All, reported apart
BESIDE_EVERY_S = 0.5     # the reader's steps during "run beside steps"
PRESS_RUN = r"press\s+Run"   # the status an expensive experiment shows for a setting not computed
COSTLY = r"depth|layer|block|batch|length|steps|width|size"   # controls that change a Run's cost

# Page-side helpers: find the experiments (output areas holding a widget image, in
# notebook order), their controls, time one action until the image changes, walk the
# controls, and record prompts and first images during Run All.
HELPERS = r"""
window.__cx = (() => {
  const PRESS_RUN = new RegExp(%PRESS_RUN%, 'i');
  const sleep = ms => new Promise(r => setTimeout(r, ms));
  const exps = () => [...document.querySelectorAll('.jp-OutputArea-output')]
      .filter(o => o.querySelector('img.widget-image'));
  const controls = root => [...root.querySelectorAll(
      '.noUi-handle, .widget-toggle-buttons, .widget-dropdown select')];
  const statusOf = root => [...root.querySelectorAll('.widget-html')].map(h => h.textContent).join(' | ');
  const labelOf = c => ((c.closest('.widget-inline-hbox') || c).querySelector('.widget-label') || {}).textContent || '';
  const stateOf = c => c.classList.contains('noUi-handle')
      ? {kind: 'slider', n: +c.getAttribute('aria-valuemax') - +c.getAttribute('aria-valuemin') + 1,
         at: +c.getAttribute('aria-valuenow') - +c.getAttribute('aria-valuemin')}
      : c.tagName === 'SELECT' ? {kind: 'select', n: c.options.length, at: c.selectedIndex}
      : {kind: 'toggle', n: c.querySelectorAll('button').length,
         at: [...c.querySelectorAll('button')].findIndex(b => b.classList.contains('mod-active'))};
  const describe = () => exps().map(root => ({
      title: (root.querySelector('.widget-html b') || {}).textContent || '',
      expensive: [...root.querySelectorAll('button')].some(b => b.textContent.trim() === 'Run'),
      status: statusOf(root),
      controls: controls(root).map(c => Object.assign(stateOf(c), {label: labelOf(c).trim()}))}));
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
  // Resolve with {outcome, ms} for one action: 'image' (the image's src changed; ms
  // since the action), 'press_run' (an expensive experiment asks for a Run; an
  // experiment already showing "press Run" shows nothing new when the next setting is
  // not computed either, so quietMs of silence counts as that too), 'unchanged' (the
  // "press Run" status went away but the image did not change: the setting's frame was
  // already on screen; ms to the status change) or 'timeout'.
  const act = (k, ci, action, timeout, quietMs, lateMs) => new Promise(resolve => {
    const root = exps()[k], img = root.querySelector('img.widget-image');
    const wasPress = PRESS_RUN.test(statusOf(root));
    const t0 = performance.now();
    let timers = [], over = false, cleared = null, late = false;
    const finish = (outcome, ms) => {
      if (over) return;
      over = true; obs.disconnect(); timers.forEach(clearTimeout);
      resolve({outcome, ms, status: statusOf(root)});
    };
    const obs = new MutationObserver(records => {
      if (records.some(r => r.target === img && r.attributeName === 'src'))
        return finish(late ? 'timeout' : 'image', performance.now() - t0);
      const pressed = PRESS_RUN.test(statusOf(root));
      if (!wasPress && pressed) return finish('press_run', null);
      if (wasPress && !pressed && cleared === null) {   // an image may still follow the status
        cleared = performance.now() - t0;
        timers.push(setTimeout(() => finish('unchanged', cleared), 300));
      }
    });
    obs.observe(root, {attributes: true, attributeFilter: ['src'], subtree: true, childList: true, characterData: true});
    // after the timeout, wait on (up to lateMs) for a late image, so that it is not
    // taken for the next step's: a timeout's ms is then when its image came, or null
    timers.push(setTimeout(() => {
      if (PRESS_RUN.test(statusOf(root))) return finish('press_run', null);
      late = true;
      timers.push(setTimeout(() => finish('timeout', null), lateMs - timeout));
    }, timeout));
    if (wasPress) timers.push(setTimeout(() => { if (PRESS_RUN.test(statusOf(root))) finish('press_run', null); }, quietMs));
    perform(controls(root)[ci], action);
  });
  // The positions a walk visits: from `at` to the last, to the first, back to `at`.
  const plan = (n, at) => {
    const seq = []; let p = at;
    while (p < n - 1) seq.push(++p);
    while (p > 0) seq.push(--p);
    while (p < at) seq.push(++p);
    return seq;
  };
  const stepTo = (c, from, to) => c.kind === 'slider' ? (to > from ? 'right' : 'left') : to;
  // Walk every control of experiment k; pace ms after each step.
  const walk = async (k, pace, timeout, quietMs, lateMs) => {
    const out = [];
    const n = controls(exps()[k]).length;
    for (let ci = 0; ci < n; ci++) {
      const c = stateOf(controls(exps()[k])[ci]);
      let p = c.at;
      for (const q of plan(c.n, c.at)) {
        const r = await act(k, ci, stepTo(c, p, q), timeout, quietMs, lateMs);
        await sleep(pace);
        Object.assign(r, {control: ci, from: p, to: q, later: statusOf(exps()[k])});
        out.push(r); p = q;
      }
    }
    return out;
  };
  // Far jumps: each control to a setting two or more positions away.
  const cold = async (k, pace, timeout, quietMs, lateMs) => {
    const out = [];
    const n = controls(exps()[k]).length;
    for (let ci = 0; ci < n; ci++) {
      const c = stateOf(controls(exps()[k])[ci]);
      let action = null, to = null;
      if (c.kind === 'slider' && c.n >= 3) {
        to = c.at < c.n / 2 ? c.n - 1 : 0;
        action = to ? 'end' : 'home';
        if (Math.abs(to - c.at) < 2) continue;
      } else if (c.kind !== 'slider' && c.n >= 3) {
        to = (c.at + 2) % c.n; action = to;
      } else continue;
      const r = await act(k, ci, action, timeout, quietMs, lateMs);
      await sleep(pace);
      Object.assign(r, {control: ci, from: c.at, to, later: statusOf(exps()[k])});
      out.push(r);
    }
    return out;
  };
  // During Run All: when each prompt turns from [*] to [N], when each widget image first has a src.
  let t0 = null;
  const starred = new Set(), numberedAt = new Map(), imageAt = new Map();
  const seeImage = (img, now) => {
    if (img.getAttribute('src') && !imageAt.has(img)) imageAt.set(img, now);
  };
  const seePrompt = (el, now) => {
    const text = el.textContent;
    if (text.includes('*')) starred.add(el);
    else if (/\[\d+\]/.test(text) && starred.has(el) && !numberedAt.has(el)) numberedAt.set(el, now);
  };
  const watcher = new MutationObserver(records => {
    const now = performance.now();
    for (const r of records) {
      const el = r.target.nodeType === 1 ? r.target : r.target.parentElement;
      if (!el) continue;
      if (r.type === 'attributes' && el.matches('img.widget-image')) seeImage(el, now);
      const prompt = el.closest('.jp-InputArea-prompt');
      if (prompt) seePrompt(prompt, now);
      for (const node of r.addedNodes || []) {
        if (node.nodeType !== 1) continue;
        if (node.matches('img.widget-image')) seeImage(node, now);
        node.querySelectorAll('img.widget-image').forEach(img => seeImage(img, now));
      }
    }
  });
  const watchRunAll = () => {
    t0 = performance.now();
    watcher.observe(document.body, {subtree: true, childList: true, characterData: true,
                                    attributes: true, attributeFilter: ['src']});
  };
  // Per experiment: ms from its cell's start to its first image (null: not seen).
  const firstFrames = () => {
    watcher.disconnect();
    const cells = [...document.querySelectorAll('.jp-Notebook .jp-CodeCell')];
    return exps().map(root => {
      const img = root.querySelector('img.widget-image');
      const j = cells.indexOf(root.closest('.jp-CodeCell'));
      const prev = j > 0 ? cells[j - 1].querySelector('.jp-InputArea-prompt') : null;
      const start = prev && numberedAt.has(prev) ? numberedAt.get(prev) : t0;
      return imageAt.has(img) ? imageAt.get(img) - start : null;
    });
  };
  const change = (k, ci, action) => perform(controls(exps()[k])[ci], action);
  const run = k => [...exps()[k].querySelectorAll('button')].find(b => b.textContent.trim() === 'Run').click();
  const errors = () => [...document.querySelectorAll(
      '.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]')]
      .map(o => o.textContent.trim().slice(0, 300));
  const prompts = () => [...document.querySelectorAll('.jp-CodeCell .jp-InputArea-prompt')]
      .map(p => p.textContent.trim());
  return {exps, describe, act, walk, cold, watchRunAll, firstFrames, change, run, errors, prompts};
})();
""".replace("%PRESS_RUN%", json.dumps(PRESS_RUN))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def toc_chapters(root: Path) -> list[str]:
    """The chapters that are notebooks, in the order of ``_toc.yml``."""
    names = re.findall(r"file:\s*book/(\w+)", (root / "_toc.yml").read_text())
    return [n for n in names if (root / "book" / f"{n}.ipynb").exists()]


class Lab:
    """A JupyterLab server on a temporary copy of ``book``, importing companion from
    ``companion_src`` (a folder holding ``companion/``)."""

    def __init__(self, book: Path, companion_src: str | None):
        self.tmp = Path(tempfile.mkdtemp(prefix="cx-lab-"))
        self.book = self.tmp / "book"
        shutil.copytree(book, self.book, ignore=shutil.ignore_patterns("_build", ".ipynb_checkpoints"))
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

    def api_or_none(self, path: str):
        try:
            return self.api(path)
        except OSError:
            return None

    def kernels_idle(self) -> bool:
        try:
            kernels = self.api("kernels")
        except OSError:     # a kernel starting or stopping can make the server answer 500
            return False
        return bool(kernels) and all(k["execution_state"] == "idle" for k in kernels)

    def log_tail(self, lines: int = 5) -> str:
        self.log.flush()
        return " / ".join((self.tmp / "lab.log").read_text().strip().splitlines()[-lines:])

    def shutdown_kernels(self) -> None:
        """One kernel at a time on 2 cores."""
        kernels = self.api_or_none("kernels")
        if kernels is None:     # one retry: the server may be busy with the page's last messages
            time.sleep(2.0)
            kernels = self.api_or_none("kernels") or []
        for kernel in kernels:
            req = urllib.request.Request(f"{self.url}/api/kernels/{kernel['id']}?token={self.token}",
                                         method="DELETE")
            try:
                urllib.request.urlopen(req, timeout=10)
            except OSError as error:
                print(f"could not shut down kernel {kernel['id']}: {error}", file=sys.stderr)

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


def next_action(c: dict):
    """The action moving control c (as __cx.describe() gives it) one position on."""
    if c["kind"] == "slider":
        return "right" if c["at"] + 1 < c["n"] else "left"
    return (c["at"] + 1) % c["n"]


def done_seconds(status: str) -> float | None:
    m = re.search(r"done in ([0-9.]+) s", status)
    return float(m.group(1)) if m else None


def waited_seconds(status: str) -> float:
    m = re.search(r"of which ([0-9.]+) s waiting", status)
    return float(m.group(1)) if m else 0.0


def has_error(status: str) -> bool:
    return bool(re.search(r"\w+(Error|Exception)\b", status))


class Reader:
    """One chapter open in a page: Run All, then the walk, the cold jumps and the Runs.

    Everything measured goes to ``self.result`` (see :meth:`empty_result`)."""

    def __init__(self, lab: Lab, browser, chapter: str, quick: bool):
        self.lab, self.chapter, self.quick = lab, chapter, quick
        self.page = browser.new_page(viewport={"width": 1400, "height": 1000})
        self.result = self.empty_result()
        self.quiet_polls = 0

    @staticmethod
    def empty_result() -> dict:
        return {"run_all_s": None, "wall_s": None, "walk": [], "first_steps": [], "cold": [],
                "first_frames": [], "first_runs": [], "runs": [], "stderr": [], "odd": [], "notes": []}

    def js(self, expr: str):
        return self.page.evaluate(expr)

    def describe(self) -> list[dict]:
        return self.js("__cx.describe()")

    def odd(self, text: str) -> None:
        self.result["odd"].append(text)

    # -- Run All -----------------------------------------------------------------
    def open_and_run_all(self) -> None:
        page = self.page
        page.goto(f"{self.lab.url}/lab/tree/{self.chapter}.ipynb?reset&token={self.lab.token}")
        page.wait_for_selector(".jp-Notebook .jp-CodeCell", timeout=120_000)
        wait_for(self.lab.kernels_idle, 60)
        time.sleep(1.0)
        self.js(HELPERS)
        self.js("__cx.watchRunAll()")
        page.click("li.lm-MenuBar-item:has-text('Run')")
        page.click("li.lm-Menu-item[data-command='runmenu:run-all']")
        started = time.monotonic()
        if not wait_for(self.run_all_finished, 900, 0.1):
            self.odd("Run All did not finish within 900 s")
        self.result["run_all_s"] = time.monotonic() - started

    def run_all_finished(self) -> bool:
        """Every prompt numbered, none waiting, and the kernel idle at 2 polls in a row."""
        prompts = self.js("__cx.prompts()")
        done = (any(re.fullmatch(r"\[\d+\]:", p) for p in prompts)
                and not any("*" in p for p in prompts) and self.lab.kernels_idle())
        self.quiet_polls = self.quiet_polls + 1 if done else 0
        return self.quiet_polls >= 2

    # -- the walk ----------------------------------------------------------------
    def walk(self, k: int, title: str, expensive: bool) -> None:
        steps = self.js(f"__cx.walk({k}, {PACE_S * 1e3}, "
                        f"{STEP_TIMEOUT_MS}, {PRESS_RUN_QUIET_MS}, {LATE_MS})")
        for s in steps:
            s.update(exp=title, expensive=expensive)
            self.note_if_odd(s, "step")
        self.result["walk"] += steps

    def cold(self, k: int, title: str) -> None:
        jumps = self.js(f"__cx.cold({k}, {PACE_S * 1e3}, {STEP_TIMEOUT_MS}, {PRESS_RUN_QUIET_MS}, {LATE_MS})")
        for s in jumps:
            s.update(exp=title, expensive=False)
            self.note_if_odd(s, "cold jump")
        self.result["cold"] += jumps

    def note_if_odd(self, s: dict, what: str) -> None:
        where = f"{s['exp'][:40]!r} control {s['control']} {s['from']}->{s['to']}"
        if s["outcome"] == "timeout":
            came = f"its image came after {s['ms']:.0f} ms" if s["ms"] else f"none in {LATE_MS} ms"
            self.odd(f"{what} {where}: no new image in {STEP_TIMEOUT_MS} ms, {came} "
                     f"(status then {s['later'][:120]!r})")
        elif s["outcome"] == "press_run" and not s["expensive"]:
            self.odd(f"{what} {where}: 'press Run' in a cheap experiment")
        if has_error(s["later"]):
            self.odd(f"{what} {where}: status {s['later'][:160]!r}")

    def wait_first_runs(self) -> list[dict]:
        """Wait until every expensive experiment's first Run has finished (or failed)."""
        def all_done():
            d = self.describe()
            ok = all(done_seconds(e["status"]) is not None or has_error(e["status"])
                     for e in d if e["expensive"])
            return d if ok else None
        exps = wait_for(all_done, 900, 0.5)
        if exps is None:
            self.odd("first Runs not all finished within 900 s")
            exps = self.describe()
        for e in exps:
            if e["expensive"]:
                total = done_seconds(e["status"])
                if total is None:
                    self.odd(f"first run of {e['title'][:40]!r}: status {e['status'][:160]!r}")
                    continue
                self.result["first_runs"].append(
                    {"exp": e["title"], "total": total, "computing": total - waited_seconds(e["status"])})
        return exps

    # -- Runs ------------------------------------------------------------------------
    def run_targets(self, controls: list[dict]) -> list[tuple[int, int]]:
        """Two (control, position) moves from the current setting for "run alone" and
        then "run beside steps", each to a setting not computed yet and, where possible,
        of the same cost as the other and as the first Run's: along controls whose label
        does not name a size (``COSTLY``), a learning rate first. The second move is on
        another control when there is one (the setting then differs from the first in
        two controls), else further along the same control or on its other side."""
        def rank(i):
            label = controls[i]["label"]
            return (bool(re.search(COSTLY, label, re.I)), not re.search(r"learning rate|\blr\b", label, re.I))
        order = sorted(range(len(controls)), key=rank)
        moves = [(ci, p) for ci in order for p in (controls[ci]["at"] + 1, controls[ci]["at"] - 1)
                 if 0 <= p < controls[ci]["n"]]
        if not moves:
            return []
        first = moves[0]
        others = [m for m in moves if m[0] != first[0]]
        if others:
            return [first, others[0]]
        ci, at, n = first[0], controls[first[0]]["at"], controls[first[0]]["n"]
        further = [p for p in (2 * first[1] - at, 2 * at - first[1]) if 0 <= p < n and p != at]
        return [first, (ci, further[0])] if further else [first]

    def move_to(self, k: int, ci: int, position: int) -> None:
        """Set control ci of experiment k to a position (a slider one step at a time)."""
        c = self.describe()[k]["controls"][ci]
        if c["kind"] != "slider":
            self.js(f"__cx.change({k}, {ci}, {position})")
            return
        for _ in range(abs(position - c["at"])):
            self.js(f"__cx.change({k}, {ci}, {json.dumps('right' if position > c['at'] else 'left')})")
            time.sleep(PACE_S)

    def one_run(self, k: int, beside: int | None) -> tuple[float | None, float, list]:
        """Click Run of experiment k; while it runs, step experiment ``beside``'s first
        slider every BESIDE_EVERY_S (None: the reader is idle). The seconds its status
        reports, of which waiting (queued until the kernel's main thread is quiet), and
        the reader's step times."""
        t0 = time.monotonic()
        self.js(f"__cx.run({k})")
        # the status of the last run goes away when the kernel takes the click
        wait_for(lambda: done_seconds(self.describe()[k]["status"]) is None, 10, 0.05)
        during = []
        status = ""
        while time.monotonic() - t0 < 600:
            status = self.describe()[k]["status"]
            if done_seconds(status) is not None and "running" not in status or has_error(status):
                break
            if beside is not None:
                action = next_action(self.describe()[beside]["controls"][0])
                r = self.js(f"__cx.act({beside}, 0, {json.dumps(action)}, {STEP_TIMEOUT_MS}, "
                            f"{PRESS_RUN_QUIET_MS}, {LATE_MS})")
                if r["outcome"] == "image":
                    during.append(r["ms"])
                time.sleep(BESIDE_EVERY_S)
            else:
                time.sleep(0.1)
        if has_error(status):
            self.odd(f"Run of experiment {k}: {status[:160]!r}")
        return done_seconds(status), waited_seconds(status), during

    def runs(self, k: int, title: str, beside: int | None) -> None:
        """Run alone, then Run beside the reader's steps, each on a new setting."""
        times, waits, during = [], [], []
        controls = self.describe()[k]["controls"]
        targets = self.run_targets(controls)
        moves = [f"{controls[ci]['label'] or ci} {controls[ci]['at']}->{p}" for ci, p in targets]
        for m, (ci, position) in enumerate(targets):
            self.move_to(k, ci, position)
            time.sleep(0.5)
            if not re.search(PRESS_RUN, self.describe()[k]["status"], re.I):
                self.odd(f"Run setting of {title[:40]!r} (control {ci} at {position}) was computed already")
            seconds, waited, during = self.one_run(k, beside if m == 1 else None)
            times.append(seconds)
            waits.append(waited)
        if not times:
            self.odd(f"{title[:40]!r}: no new setting to Run")
            return
        if len(times) == 1:
            self.odd(f"{title[:40]!r}: one new setting only, no Run beside steps")
        beside, beside_waiting = (times[1], waits[1]) if len(times) == 2 else (None, 0.0)
        self.result["runs"].append({"exp": title, "alone": times[0], "beside": beside,
                                    "beside_waiting": beside_waiting, "steps_during": during})
        self.result["notes"].append(f"Runs of {title[:40]!r}: " + ", ".join(
            f"{what} {move}" for what, move in zip(("alone", "beside steps"), moves)))

    # -- the chapter ---------------------------------------------------------------
    def bench(self) -> dict:
        started = time.monotonic()
        try:
            self.open_and_run_all()
            exps = self.describe()
            self.result["first_frames"] = [
                {"exp": e["title"], "ms": ms} for e, ms in zip(exps, self.js("__cx.firstFrames()"))
                if not e["expensive"]]
            cheap = [k for k, e in enumerate(exps) if not e["expensive"]]
            expensive = [k for k, e in enumerate(exps) if e["expensive"]]
            for k in cheap[:2] if self.quick else cheap:
                self.walk(k, exps[k]["title"], False)
                self.cold(k, exps[k]["title"])
            self.result["first_steps"] = [s for s in self.result["walk"][:FIRST_STEPS]]
            self.wait_first_runs()
            for k in expensive[:1] if self.quick else expensive:
                self.walk(k, exps[k]["title"], True)
            for k in expensive[:1] if self.quick else expensive:
                self.runs(k, exps[k]["title"], cheap[0] if cheap else None)
            self.result["stderr"] = self.js("__cx.errors()")
            for e in self.describe():
                if has_error(e["status"]):
                    self.odd(f"{e['title'][:40]!r} ends with status {e['status'][:160]!r}")
        except Exception as error:     # report what was measured, and the failure
            self.odd(f"benchmark failed: {type(error).__name__}: {str(error)[:300]}; "
                     f"the server's log ends: {self.lab.log_tail()[:600]}")
        finally:
            self.page.close()
            self.result["wall_s"] = time.monotonic() - started
        return self.result


# -- statistics and the table ---------------------------------------------------------
def p95(values: list[float]) -> float:
    """The 95th percentile by nearest rank (the largest value below n <= 20)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]


def latency_cell(values: list[float], timeouts: int = 0) -> str:
    if not values:
        return f"– (0{f', {timeouts} timeouts' if timeouts else ''})"
    text = f"{statistics.median(values):.0f} / {p95(values):.0f} / {max(values):.0f} ({len(values)}"
    return text + (f", {timeouts} timeouts)" if timeouts else ")")


def images(steps: list[dict]) -> list[float]:
    return [s["ms"] for s in steps if s["outcome"] == "image"]


def count(steps: list[dict], outcome: str) -> int:
    return sum(s["outcome"] == outcome for s in steps)


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def fmt(value: float | None, spec: str) -> str:
    return format(value, spec) if value is not None else "–"


def chapter_rows(r: dict) -> list[tuple[str, str]]:
    """(measure, cell) for one chapter and version."""
    walk = r["walk"]
    frames = [f["ms"] for f in r["first_frames"] if f["ms"] is not None]
    missing_frames = sum(f["ms"] is None for f in r["first_frames"])
    rows = [
        ("step → image, ms: median / p95 / max (n)", latency_cell(images(walk), count(walk, "timeout"))),
        (f"first {FIRST_STEPS} steps after Run All, ms", latency_cell(images(r["first_steps"]),
                                                                      count(r["first_steps"], "timeout"))),
        ("steps to 'press Run' (not timed)", str(count(walk, "press_run"))),
        ("steps back to the frame on screen (not timed)", str(count(walk, "unchanged"))),
        ("steps drawn on demand (not prefetched)", str(sum("drawn in" in s["later"] for s in walk))),
        ("cold jump, ms", latency_cell(images(r["cold"]), count(r["cold"], "timeout"))),
        ("first frame after Run All, ms: median / max (n)",
         (f"{statistics.median(frames):.0f} / {max(frames):.0f} ({len(frames)}"
          + (f", {missing_frames} not seen)" if missing_frames else ")")) if frames else "–"),
        ("Run All until idle, s", f"{r['run_all_s']:.1f}" if r["run_all_s"] is not None else "–"),
        ("stderr outputs", str(len(r["stderr"]))),
    ]
    firsts = {f["exp"]: f for f in r["first_runs"]}
    for run in r["runs"]:
        first = firsts.get(run["exp"], {})
        b_a, c_a = ratio(run["beside"], run["alone"]), ratio(first.get("computing"), run["alone"])
        rows.append((f"Run {run['exp'][:30]!r}: alone / beside (waiting) / first (computing), s; b/a, c/a",
                     f"{fmt(run['alone'], '.1f')} / {fmt(run['beside'], '.1f')} ({run['beside_waiting']:.1f}) / "
                     f"{fmt(first.get('total'), '.1f')} ({fmt(first.get('computing'), '.1f')}); "
                     f"{fmt(b_a, '.2f')}, {fmt(c_a, '.2f')}"))
    firsts_not_run = [f for f in r["first_runs"] if f["exp"] not in {x["exp"] for x in r["runs"]}]
    if firsts_not_run:
        rows.append(("first run (Run All), s: median / max (n)",
                     f"{statistics.median(f['total'] for f in firsts_not_run):.1f} / "
                     f"{max(f['total'] for f in firsts_not_run):.1f} ({len(firsts_not_run)})"))
    during = [ms for run in r["runs"] for ms in run["steps_during"]]
    if r["runs"]:
        rows.append(("step during a Run, ms", latency_cell(during)))
    rows.append(("chapter benchmark wall time, s", f"{r['wall_s']:.0f}"))
    return rows


def overall_rows(results: list[dict]) -> list[tuple[str, str]]:
    walk = [s for r in results for s in r["walk"]]
    first = [s for r in results for s in r["first_steps"]]
    cold = [s for r in results for s in r["cold"]]
    frames = [f["ms"] for r in results for f in r["first_frames"] if f["ms"] is not None]
    runs = [(run, {f["exp"]: f for f in r["first_runs"]}.get(run["exp"], {})) for r in results for run in r["runs"]]
    b_a = [v for run, _ in runs if (v := ratio(run["beside"], run["alone"])) is not None]
    c_a = [v for run, f in runs if (v := ratio(f.get("computing"), run["alone"])) is not None]
    return [
        ("step → image, ms (≤ 60 median, ≤ 150 p95)", latency_cell(images(walk), count(walk, "timeout"))),
        (f"first {FIRST_STEPS} steps after Run All, ms", latency_cell(images(first), count(first, "timeout"))),
        ("steps to 'press Run' (not timed)", str(count(walk, "press_run"))),
        ("cold jump, ms", latency_cell(images(cold), count(cold, "timeout"))),
        ("first frame after Run All, ms: median / max (≤ 1000)",
         f"{statistics.median(frames):.0f} / {max(frames):.0f} ({len(frames)})" if frames else "–"),
        ("Run beside steps / alone: median / max (≤ 1.2)",
         f"{statistics.median(b_a):.2f} / {max(b_a):.2f} ({len(b_a)})" if b_a else "–"),
        ("first Run (computing) / alone: median / max (≤ 1.2)",
         f"{statistics.median(c_a):.2f} / {max(c_a):.2f} ({len(c_a)})" if c_a else "–"),
        ("Run All until idle, s (sum)", f"{sum(r['run_all_s'] or 0 for r in results):.0f}"),
        ("benchmark wall time, s (sum)", f"{sum(r['wall_s'] or 0 for r in results):.0f}"),
    ]


def table(results: dict[str, dict[str, dict]], versions: list[str]) -> str:
    """results[version][chapter] -> one markdown table, the versions side by side."""
    out = ["| chapter | measure | " + " | ".join(versions) + " |", "|---|---|" + "---|" * len(versions)]
    chapters = list(next(iter(results.values())))
    for chapter in chapters:
        cells = [dict(chapter_rows(results[v][chapter])) for v in versions]
        measures = list(dict.fromkeys(m for c in cells for m in c))
        for m in measures:
            out.append(f"| {chapter} | {m} | " + " | ".join(c.get(m, "–") for c in cells) + " |")
    cells = [dict(overall_rows(list(results[v].values()))) for v in versions]
    for m in cells[0]:
        out.append(f"| **all** | {m} | " + " | ".join(c[m] for c in cells) + " |")
    return "\n".join(out)


def oddities(results: dict[str, dict[str, dict]]) -> str:
    lines = []
    for version, chapters in results.items():
        for chapter, r in chapters.items():
            lines += [f"- {version} / {chapter}: {text}" for text in r["odd"]]
            lines += [f"- {version} / {chapter}: stderr output {text[:200]!r}" for text in r["stderr"]]
            lines += [f"- {version} / {chapter}: {text}" for text in r["notes"]]
    return "\n".join(lines) if lines else "- none"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("chapters", nargs="*", help="chapters to run (default: every one of _toc.yml)")
    parser.add_argument("--chapters", dest="chapter_list", help="the same, comma-separated")
    parser.add_argument("--quick", action="store_true",
                        help="walk two cheap experiments and one expensive one per chapter, one Run pair")
    parser.add_argument("--companion-src", help="a folder holding another companion/ package to import")
    parser.add_argument("--compare", nargs=2, metavar=("BEFORE_DIR", "AFTER_DIR"),
                        help="two checkouts (each with companion/ and book/), side by side")
    parser.add_argument("--json", help="also write the raw measurements to this file")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    if args.compare:
        versions = {"before": Path(args.compare[0]), "after": Path(args.compare[1])}
        labs_args = {name: (path / "book", str(path)) for name, path in versions.items()}
    else:
        labs_args = {"this": (ROOT / "book", args.companion_src or str(ROOT))}
    chapters = args.chapters + (args.chapter_list.split(",") if args.chapter_list else [])
    chapters = chapters or toc_chapters(ROOT)
    for name, (book, _) in labs_args.items():
        missing = [c for c in chapters if not (book / f"{c}.ipynb").exists()]
        if missing:
            parser.error(f"chapters {missing} not in {book}")

    print("load before:", uptime(), flush=True)
    started = time.monotonic()
    results: dict[str, dict[str, dict]] = {name: {} for name in labs_args}
    labs: dict[str, Lab] = {}
    try:
        for name, (book, src) in labs_args.items():
            labs[name] = Lab(book, src)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True)
            for i, chapter in enumerate(chapters):
                order = list(labs) if i % 2 == 0 else list(reversed(labs))   # alternate who goes first
                for name in order:
                    print(f"{chapter} / {name} ...", file=sys.stderr, flush=True)
                    results[name][chapter] = Reader(labs[name], browser, chapter, args.quick).bench()
                    labs[name].shutdown_kernels()
                    print(f"{chapter} / {name}: {results[name][chapter]['wall_s']:.0f} s",
                          file=sys.stderr, flush=True)
            browser.close()
    finally:
        for lab in labs.values():
            lab.close()
    print("load after: ", uptime())
    print(f"total wall time: {time.monotonic() - started:.0f} s\n")
    print(table(results, list(labs_args)))
    print("\nOddities and notes:\n" + oddities(results))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1, default=str))


if __name__ == "__main__":
    main()
