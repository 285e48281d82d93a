"""Rows for companion.data: every size, rate, noise and seed of the generators."""
from __future__ import annotations

import math

from badcalls import (Row, bad_seed, nonnegative_int, nonnegative_real, not_real,
                      positive_int)
from companion import data

_NOISE0 = ([0.0, 0], "noise 0 gives noiseless targets (the default of most generators)")

ROWS = [
    Row(data.teacher_regression,
        good=dict(n=8, in_features=3, out_features=2, seed=0, noise=0.1),
        bad=dict(n=positive_int(), in_features=positive_int(), out_features=positive_int(),
                 seed=bad_seed() + [None], noise=nonnegative_real()),
        accepted=dict(noise=_NOISE0, seed=([2 ** 64 - 1], "the largest seed SeedSequence "
                                                          "and torch both take"))),
    Row(data.spirals, good=dict(n=9, classes=3, noise=0.2, seed=0),
        bad=dict(n=positive_int() + [2], classes=positive_int() + [1],
                 noise=nonnegative_real(), seed=bad_seed() + [None]),
        accepted=dict(noise=_NOISE0)),
    Row(data.sequence_sum, good=dict(seq_len=4, batch=2, seed=0),
        bad=dict(seq_len=positive_int(), batch=positive_int(), seed=bad_seed() + [None])),
    Row(data.first_element, good=dict(seq_len=4, batch=2, seed=0),
        bad=dict(seq_len=positive_int(), batch=positive_int(), seed=bad_seed() + [None])),
    Row(data.sparse_features,
        good=dict(n=10, dim=4, rare_fraction=0.5, n_rare=2, noise=0.1, seed=0),
        bad=dict(n=positive_int(), dim=positive_int(),
                 rare_fraction=not_real() + [0.0, -0.1, 1.5, math.inf],
                 n_rare=[v for v in nonnegative_int() if v is not None] + [5],
                 noise=nonnegative_real(), seed=bad_seed() + [None]),
        accepted=dict(n_rare=([None, 0, 4], "None means dim // 2; 0 and dim are the "
                                            "all-frequent and all-rare cases"),
                      rare_fraction=([1.0], "every rare entry present: a dense column"),
                      noise=_NOISE0)),
]
