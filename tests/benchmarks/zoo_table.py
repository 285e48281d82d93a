"""The zoo of tests/test_zoo.py as a Markdown table: ground truth and diagnosis per model.

    python tests/benchmarks/zoo_table.py                    # the companion of this checkout
    python tests/benchmarks/zoo_table.py --old /tmp/old     # and a previous checkout's
    python tests/benchmarks/zoo_table.py --ratios           # + per-layer signal ratios

One row per model: whether it learns (measured by tests/test_zoo.py's rule: the loss on
its fixed batch before -> after its training steps), the findings of
``diagnose`` (``symptom[cause] severity``; for ``lr10`` those of ``watch`` over its
training) and its notes. ``--old PATH`` puts a checkout of an earlier version first on
``sys.path`` (make one with ``git -C /work/main worktree add /tmp/old 9225d46``; remove
it with ``git worktree remove /tmp/old``) and adds its findings: that code had no
``notes`` or ``cause`` and took only tensor outputs, so for Hugging Face models it
prints the error of the plain call and the findings of the model wrapped to return
``.logits`` (labels passed as ``y``, the LM loss shifted by one). ``--ratios`` prints,
for each Hugging Face model (wrapped), the layers whose signal ratio is below 1e-3 and
every attention query/key projection's ratio.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

TESTS = Path(__file__).resolve().parents[1]
ROOT = TESTS.parent


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--old", metavar="PATH", help="a checkout of an earlier companion")
    p.add_argument("--ratios", action="store_true",
                   help="signal ratios of the Hugging Face models (wrapped)")
    p.add_argument("names", nargs="*", help="models (default: the whole zoo)")
    return p.parse_args()


ARGS = parse() if __name__ == "__main__" else None
sys.path.insert(0, str(TESTS))
sys.path.insert(0, str(Path(ARGS.old).resolve() if ARGS and ARGS.old else ROOT))

import torch  # noqa: E402
from torch import nn  # noqa: E402

import companion  # noqa: E402
import test_zoo as zoo  # noqa: E402
from companion.diagnose import diagnose, watch  # noqa: E402


class Logits(nn.Module):
    """An HF model that returns its ``.logits`` tensor (what the old diagnose took); for
    a causal LM the logits of tokens 0..T-2 as (B, V, T-1), torch's class dimension
    second, so that cross-entropy against tokens 1..T-1 is HF's own LM loss and the old
    code knows log C = log V."""

    def __init__(self, hf: nn.Module, lm: bool):
        super().__init__()
        self.hf, self.lm = hf, lm

    def forward(self, **inputs):
        logits = self.hf(**inputs).logits
        return logits[:, :-1].transpose(1, 2) if self.lm else logits


def wrapped_call(c: zoo.Case):
    """(model, x, y, loss) for the old diagnose of an HF case: default cross-entropy."""
    x = {k: v for k, v in c.x.items() if k != "labels"}
    y = c.x["labels"][:, 1:] if c.lm else c.x["labels"]
    return Logits(c.model, c.lm), x, y, None


def show(findings) -> str:
    if findings is None:
        return "n/a"
    if not findings:
        return "none"
    out = []
    for f in findings:
        cause = getattr(f, "cause", "")
        out.append(f"{f.symptom}{f'[{cause}]' if cause else ''} {f.severity}")
    return ", ".join(out)


def run_diagnosis(name: str, c: zoo.Case):
    """The report of the plain call (``watch`` over the training steps for lr10)."""
    if name == "lr10":
        model = zoo.copy.deepcopy(c.model)
        opt = c.make_opt(model)
        with watch(model, opt, every=5) as w:
            for _ in range(c.steps):
                loss = zoo.objective(c, model)
                opt.zero_grad()
                loss.backward()
                opt.step()
                w.log(loss)
        return w.report()
    return diagnose(c.model, c.x, c.y, loss=c.loss)


def cell(fn) -> tuple[str, str]:
    """(findings, notes) of ``fn()``, or the error it raised."""
    try:
        report = fn()
    except Exception as err:        # noqa: BLE001 -- the old code raised on HF outputs
        msg = str(err).replace("|", "/").splitlines()[0][:110]
        return f"{type(err).__name__}: {msg}", ""
    notes = getattr(report, "notes", None)
    return show(report.findings), ("n/a" if notes is None else show(notes))


def ratios(name: str, c: zoo.Case) -> None:
    model, x, y, loss = wrapped_call(c)
    rows = [r for r in diagnose(model, x, y, loss=loss).rows if r["kind"] == "layer"]
    low = [(r["name"], r["signal_ratio"]) for r in rows if r["signal_ratio"] < 1e-3]
    qk = [(r["name"], r["signal_ratio"]) for r in rows
          if any(r["name"].endswith(s) for s in (".query", ".key", "q_proj", "k_proj",
                                                  "c_attn"))]
    fmt = lambda pairs: "; ".join(f"{n} {v:.2e}" for n, v in pairs) or "none"  # noqa: E731
    print(f"- **{name}**: {len(low)} of {len(rows)} layers below 1e-3: {fmt(low)}")
    print(f"  - q/k projections: {fmt(qk)}")


def main() -> None:
    torch.set_num_threads(1)
    names = ARGS.names or list(zoo.ZOO)
    where = ARGS.old or str(ROOT)
    print(f"companion from {Path(companion.__file__).parent} ({where}); torch "
          f"{torch.__version__}, transformers {zoo.transformers.__version__}\n")
    old = bool(ARGS.old)
    head = ["model", "learns (initial -> final loss)", "findings", "notes"]
    if old:
        head += ["findings, HF model wrapped to return .logits"]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for name in names:
        c, t = zoo.case(name), zoo.trained(name)
        learns = (f"{'yes' if t.learns else 'no'}{' (diverges)' if t.diverges else ''}: "
                  f"{t.initial:.3g} -> {t.final:.3g} ({c.steps} steps)")
        findings, notes = cell(lambda: run_diagnosis(name, c))
        row = [name, learns, findings, notes]
        if old:
            if c.hf:
                model, x, y, loss = wrapped_call(c)
                row.append(cell(lambda: diagnose(model, x, y, loss=loss))[0])
            else:
                row.append("")
        print("| " + " | ".join(row) + " |", flush=True)
    if ARGS.ratios:
        print("\nSignal ratios (wrapped HF models, the loss on .logits):\n")
        for name in names:
            if zoo.case(name).hf:
                ratios(name, zoo.case(name))


if __name__ == "__main__":
    main()
