"""The PDF edition's budget: printed in <= 5 min, at most 40 MB.

    python3 tests/benchmarks/bench_pdf.py

Runs ``bash .ci/pdf`` (after the HTML build: it reuses the executed notebooks) and
reports its wall time, the PDF's size and its page count; exits 1 over budget.
"""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BUDGET_S, BUDGET_MB = 300, 40


def main() -> int:
    started = time.perf_counter()
    subprocess.run(["bash", ".ci/pdf"], cwd=ROOT, check=True)
    elapsed = time.perf_counter() - started
    pdf = ROOT / "_build" / "pdf" / "book.pdf"
    size = pdf.stat().st_size / 1e6
    info = subprocess.run(["pdfinfo", str(pdf)], capture_output=True, text=True).stdout
    pages = next((line.split()[-1] for line in info.splitlines() if line.startswith("Pages:")), "?")
    print(f"PDF edition: {elapsed:.0f} s (budget {BUDGET_S} s), {size:.1f} MB (budget {BUDGET_MB} MB), "
          f"{pages} pages")
    return int(elapsed > BUDGET_S or size > BUDGET_MB)


if __name__ == "__main__":
    sys.exit(main())
