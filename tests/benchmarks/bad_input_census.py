"""Count how the companion answers bad arguments: the table of tests/badcalls, run whole.

    python3 tests/benchmarks/bad_input_census.py            # counts by outcome and module
    python3 tests/benchmarks/bad_input_census.py --show foreign,returned

Every bad value of every row is one call. Outcomes: ``named`` (a TypeError/ValueError raised
by the companion naming the argument), ``unnamed`` (raised by the companion, argument not
named), ``foreign`` (a traceback from torch, numpy, matplotlib or the standard library, or
another exception type), ``returned`` (no error: a silent result). Documented accepted
values are counted apart. To count an older companion against today's table, put its
checkout first on the path: ``PYTHONPATH=/path/to/old/checkout python3 ...``.
"""
from __future__ import annotations

import argparse
import collections
import os
import sys

import matplotlib

matplotlib.use("Agg")
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))           # tests/: the badcalls table
sys.path.append(os.path.join(HERE, "..", ".."))        # the repository: companion, unless
                                                       # PYTHONPATH puts another one first

from badcalls import load_rows, probe, public_callables  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--show", default="", help="outcomes to list call by call, comma-separated")
    args = ap.parse_args()
    show = set(filter(None, args.show.split(",")))
    import companion

    rows = load_rows()
    total = collections.Counter()
    by_module: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for row in rows:
        module = row.key.split(".")[1]
        for arg, values in row.bad.items():
            for value in values:
                try:
                    outcome, text = probe(row, arg, value)
                except BaseException as exc:  # noqa: BLE001 -- e.g. an old row's setup fails
                    outcome, text = "foreign", f"{type(exc).__name__}: {exc}"
                total[outcome] += 1
                by_module[module][outcome] += 1
                if outcome in show:
                    print(f"{outcome:8s} {row.key}({arg}={value!r:.50}): {text[:200]}")
        for arg, (values, _reason) in row.accepted.items():
            total["accepted"] += len(values)
            by_module[module]["accepted"] += len(values)
    kinds = ["named", "unnamed", "foreign", "returned", "accepted"]
    print(f"companion from {os.path.dirname(companion.__file__)}")
    print(f"{len(rows)} rows for {len(public_callables())} public callables; "
          f"{sum(total[k] for k in kinds[:4])} bad calls")
    print(f"| module | {' | '.join(kinds)} |")
    print("|---|" + "---:|" * len(kinds))
    for module in sorted(by_module):
        print(f"| {module} | " + " | ".join(str(by_module[module][k]) for k in kinds) + " |")
    print("| **all** | " + " | ".join(f"**{total[k]}**" for k in kinds) + " |")


if __name__ == "__main__":
    main()
