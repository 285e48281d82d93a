"""Bad input, everywhere: every public callable of the companion refuses bad arguments at
the boundary, with a TypeError or ValueError raised by the companion that names the
argument -- never a traceback from torch, numpy or matplotlib, never a silent result.

The table is in ``tests/badcalls/`` (one ``cases_*.py`` per group of modules). The
reference is the contract itself: for each row the known-good call must work (so the bad
ones fail for the bad value alone), and each bad value must end in the companion's own
``raise`` (the innermost frame of the traceback lies in ``companion/``).
"""
import warnings

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from badcalls import load_rows, probe, public_callables  # noqa: E402

ROWS = load_rows()
CALLABLES = public_callables()


def test_every_public_callable_has_a_row():
    covered = {row.key for row in ROWS}
    missing = sorted(set(CALLABLES) - covered)
    assert not missing, f"public callables without a row in tests/badcalls: {missing}"


def test_rows_name_public_callables_once():
    keys = [row.key for row in ROWS]
    assert len(keys) == len(set(keys)), "a callable has two rows"
    assert set(keys) <= set(CALLABLES), sorted(set(keys) - set(CALLABLES))


def test_rows_without_bad_values_say_why():
    for row in ROWS:
        if not row.bad:
            assert row.reason, f"{row.key}: no bad values and no reason"


@pytest.mark.parametrize("row", ROWS, ids=lambda r: r.key.removeprefix("companion."))
def test_bad_arguments_are_refused_by_name(row):
    if row.run_good:  # the known-good call works, so a failure below is the bad value's
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            row.invoke(**row.good)
        plt.close("all")
    failures = []
    for arg, values in row.bad.items():
        for value in values:
            outcome, text = probe(row, arg, value)
            if outcome != "named":
                failures.append(f"{arg}={value!r:.60}: {outcome} {text[:300]}")
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("row", [r for r in ROWS if r.accepted],
                         ids=lambda r: r.key.removeprefix("companion."))
def test_accepted_values_are_accepted_for_a_reason(row):
    for arg, (values, reason) in row.accepted.items():
        assert reason, f"{row.key}: {arg} accepted without a reason"
        for value in values:
            outcome, text = probe(row, arg, value)
            assert outcome == "returned", f"{arg}={value!r}: documented as accepted, got {text}"
