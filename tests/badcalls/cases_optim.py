"""Rows for companion.optim: the torch.optim-style classes, their methods, the pure update
and init functions, the State records and the building blocks (ema, bias_corrected,
decoupled_weight_decay)."""
from __future__ import annotations

import math

import numpy as np
import torch

import companion.optim as co
from badcalls import (Row, finite_real, nonnegative_real, not_bool, not_callable, not_real,
                      positive_int, unit_interval_open)

P = np.ones(3)
G = np.full(3, 0.5)
NAN = np.array([np.nan, 1.0, 1.0])
CPLX = torch.zeros(2, dtype=torch.complex64, requires_grad=True)
DIVERGING = "NaN is never looked for in p or g: diverging runs are part of the book"
EMPTY = "an empty parameter is legitimate (torch.optim steps zero-size tensors too)"


def w():
    """A fresh real parameter."""
    return torch.nn.Parameter(torch.ones(2))


def bad_p(*, complex_ok: bool = False) -> list:
    """Bad parameters for the pure functions, with g = G (shape (3,), numpy)."""
    out = [None, "x", 3.0, [1.0, 2.0, 3.0], np.ones(3, dtype=np.int64), np.ones(3, dtype=bool),
           np.ones((3, 1)),           # broadcasts with g of shape (3,): refused
           np.ones(4), np.ones((3, 2)),
           torch.ones(3)]             # torch mixed with numpy g
    if not complex_ok:
        out.append(np.ones(3, dtype=np.complex128))
    return out


def bad_g() -> list:
    return [None, "g", 0.5, [0.5, 0.5, 0.5], np.ones(3, dtype=np.int64),
            np.ones(3, dtype=np.complex128),   # complex g for a real p
            np.ones((3, 1)), np.ones(1), np.ones(4), np.ones((3, 3)), torch.ones(3)]


def bad_init_p(*, complex_ok: bool = False) -> list:
    out = [None, "x", 3.0, [1.0, 2.0], np.ones(3, dtype=np.int64), torch.ones(2, dtype=torch.int64)]
    if not complex_ok:
        out += [np.ones(3, dtype=np.complex128), torch.ones(2, dtype=torch.complex64)]
    return out


def bad_state(update, State) -> list:
    """The (p, state) pair itself, another optimizer's state, wrong shapes and kinds."""
    pair = update(P, G)                       # forgot to unpack: a tuple (p, state)
    _, good = pair
    other = co.LionState(np.zeros(3)) if State is not co.LionState else co.SGDState()
    out = [pair, other, "state", 3, dict(good._asdict())]
    for field in State._fields:
        value = getattr(good, field)
        if isinstance(value, np.ndarray):
            out.append(good._replace(**{field: np.zeros(4)}))          # another shape
            out.append(good._replace(**{field: np.zeros((3, 1))}))     # would broadcast
            out.append(good._replace(**{field: torch.zeros(3)}))       # torch for numpy
            out.append(good._replace(**{field: "m"}))
        elif field == "step":
            out.append(good._replace(step=-1))
            out.append(good._replace(step=1.5))
    return out


BETAS = [None, 0.9, "ab", (0.9,), (0.9, 0.99, 0.5), [0.9], (1.0, 0.999), (0.9, -0.1),
         (math.nan, 0.9), (0.9, math.inf), ("0.9", 0.999), (True, 0.9), (None, 0.9)]


def pure_row(update, State, hyper_bad: dict, *, complex_ok: bool = False,
             accepted: dict | None = None, good_hyper: dict | None = None) -> Row:
    return Row(update, good=dict(p=P, g=G, state=None, **(good_hyper or {})),
               bad=dict(p=bad_p(complex_ok=complex_ok), g=bad_g(),
                        state=bad_state(update, State), **hyper_bad),
               accepted={"g": ([NAN, np.full(3, np.inf)], DIVERGING),
                         "p": ([NAN, *([np.ones(3, dtype=complex)] if complex_ok else [])],
                               DIVERGING + (" (complex p: SGD agrees with torch.optim on "
                                            "complex tensors)" if complex_ok else "")),
                         **(accepted or {})})


# ----------------------------------------------------------------------- the classes
def class_row(cls, hyper_bad: dict, *, complex_ok: bool = False, good: dict | None = None,
              accepted: dict | None = None) -> Row:
    bad = dict(hyper_bad)
    shared = w()
    # the same parameter twice: torch.optim warns and steps it twice (or raises, across
    # groups); refused here by position
    bad["params"] = [[shared, w(), shared], [{"params": [shared]}, {"params": [shared]}]]
    if not complex_ok:
        bad["params"] += [[CPLX], [w(), CPLX], [{"params": [CPLX]}]]
    # Other bad params (3, None, [], a non-leaf tensor) end in torch.optim.Optimizer's own
    # TypeError/ValueError, kept on purpose: they are not in `bad`.
    return Row(cls, good=dict(params=[w()], **(good or {})), bad=bad,
               accepted=accepted or {})


FOREACH = ["yes", 1, 0.0]  # None is valid: "pick the multi-tensor path when there is one"
FOREACH_OK = {"foreach": ([None, True, False, np.True_, np.False_],
                          "None means: the multi-tensor path; numpy's bools are bools "
                          "(torch.optim takes them too)")}

CLASS_ROWS = [
    class_row(co.SGD, dict(lr=nonnegative_real(), momentum=nonnegative_real(),
                           dampening=finite_real(), weight_decay=nonnegative_real(),
                           nesterov=not_bool() + [True],  # True with momentum = 0
                           maximize=not_bool(), foreach=FOREACH),
              complex_ok=True,
              accepted={"params": ([[torch.zeros(2, dtype=torch.complex128,
                                                 requires_grad=True)]],
                                   "complex SGD is linear in g: the same numbers as "
                                   "torch.optim.SGD (tests/test_optim.py)"),
                        **FOREACH_OK}),
    class_row(co.Adagrad, dict(lr=nonnegative_real(), lr_decay=nonnegative_real(),
                               weight_decay=nonnegative_real(),
                               initial_accumulator_value=nonnegative_real(),
                               eps=nonnegative_real(), maximize=not_bool())),
    class_row(co.RMSprop, dict(lr=nonnegative_real(), alpha=unit_interval_open(),
                               eps=nonnegative_real(), weight_decay=nonnegative_real(),
                               momentum=nonnegative_real(), centered=not_bool(),
                               maximize=not_bool())),
    class_row(co.Adam, dict(lr=nonnegative_real(), betas=BETAS, eps=nonnegative_real(),
                            weight_decay=nonnegative_real(), amsgrad=not_bool(),
                            bias_correction=not_bool(), foreach=FOREACH, maximize=not_bool()),
              accepted=FOREACH_OK),
    class_row(co.AdamW, dict(lr=nonnegative_real(), betas=BETAS, eps=nonnegative_real(),
                             weight_decay=nonnegative_real() + [2000.0],  # lr * wd = 2
                             amsgrad=not_bool(),
                             foreach=FOREACH, maximize=not_bool()),
              accepted=FOREACH_OK),
    class_row(co.SignSGD, dict(lr=nonnegative_real(), momentum=unit_interval_open())),
    class_row(co.NAdam, dict(lr=nonnegative_real(), betas=BETAS, eps=nonnegative_real(),
                             weight_decay=nonnegative_real(), momentum_decay=nonnegative_real(),
                             decoupled_weight_decay=not_bool(), maximize=not_bool())),
    class_row(co.Lion, dict(lr=nonnegative_real(), betas=BETAS,
                            weight_decay=nonnegative_real() + [20000.0],  # lr * wd = 2
                            maximize=not_bool())),
]


# ------------------------------------------------------------------- their methods
def _adam_with_grad(**hyper):
    p = w()
    p.grad = torch.ones(2)
    return co.Adam([p], lr=0.1, **hyper)


def _state_dict_of(shapes, steps=1, **hyper):
    """A state dict of an Adam over parameters of the given shapes, after ``steps`` steps."""
    params = [torch.nn.Parameter(torch.ones(s)) for s in shapes]
    opt = co.Adam(params, lr=0.1, **hyper)
    for _ in range(steps):
        for p in params:
            p.grad = torch.ones_like(p)
        opt.step()
    return opt.state_dict()


def _with_lr(sd, lr):
    sd = {"state": sd["state"], "param_groups": [dict(g) for g in sd["param_groups"]]}
    sd["param_groups"][0]["lr"] = lr
    return sd


def _two_groups():
    a, b = w(), w()
    return co.Adam([{"params": [a]}, {"params": [b]}]).state_dict()


METHOD_ROWS = [
    Row(co._classes._PureOptimizer.step, good=dict(closure=None),
        call=lambda **kw: _adam_with_grad().step(**kw),
        bad=dict(closure=not_callable()[1:] + [torch.nn.Linear]),
        accepted={"closure": ([None, lambda: 1.0], "None: no closure; a callable is called "
                              "with grad enabled and its value returned")}),
    Row(co._classes._PureOptimizer.add_param_group,
        good=dict(param_group={"params": [w()]}),
        call=lambda **kw: co.Adam([w()], lr=0.1).add_param_group(**kw),
        bad=dict(param_group=[None, "params", [w()], 3,
                              {"params": [w()], "lr": -1.0},
                              {"params": [w()], "lr": "0.1"},
                              {"params": [w()], "betas": 0.9},
                              {"params": [w()], "amsgrad": 1},
                              {"params": [CPLX]}])),
    Row(co._classes._PureOptimizer.load_state_dict,
        good=dict(state_dict=_state_dict_of([(2,)])),
        call=lambda **kw: co.Adam([w()], lr=0.1).load_state_dict(**kw),
        bad=dict(state_dict=[None, "sd", 3, {}, {"state": {}},
                             {"state": {}, "param_groups": "x"},
                             {"state": {}, "param_groups": [3]},
                             _two_groups(),                 # 2 groups for 1
                             _state_dict_of([(2,), (2,)]),  # 2 parameters for 1
                             _state_dict_of([(3,)]),        # buffers of another shape
                             _state_dict_of([(2, 1)]),
                             _with_lr(_state_dict_of([(2,)]), -1.0),
                             _with_lr(_state_dict_of([(2,)]), "0.1")]),
        accepted={"state_dict": ([_state_dict_of([(2,)], steps=0),
                                  torch.optim.Adam([w()]).state_dict()],
                                 "a fresh optimizer's state dict, and torch.optim.Adam's "
                                 "(same keys)")}),
]


# ---------------------------------------------------------------- the pure functions
HYPER_SGD = dict(lr=nonnegative_real(), momentum=nonnegative_real(), dampening=finite_real(),
                 weight_decay=nonnegative_real(), nesterov=not_bool() + [True],
                 maximize=not_bool())
HYPER_ADAGRAD = dict(lr=nonnegative_real(), lr_decay=nonnegative_real(),
                     weight_decay=nonnegative_real(), eps=nonnegative_real(), maximize=not_bool())
HYPER_RMSPROP = dict(lr=nonnegative_real(), alpha=unit_interval_open(), eps=nonnegative_real(),
                     weight_decay=nonnegative_real(), momentum=nonnegative_real(),
                     centered=not_bool(), maximize=not_bool())
HYPER_ADAM = dict(lr=nonnegative_real(), betas=BETAS, eps=nonnegative_real(),
                  weight_decay=nonnegative_real(), amsgrad=not_bool(),
                  bias_correction=not_bool(), maximize=not_bool())
HYPER_ADAMW = {k: v for k, v in HYPER_ADAM.items() if k != "bias_correction"}
HYPER_ADAMW["weight_decay"] = nonnegative_real() + [2000.0]     # lr * wd = 2 flips signs
HYPER_NADAM = dict(lr=nonnegative_real(), betas=BETAS, eps=nonnegative_real(),
                   weight_decay=nonnegative_real(), momentum_decay=nonnegative_real(),
                   decoupled_weight_decay=not_bool(), maximize=not_bool())
HYPER_LION = dict(lr=nonnegative_real(), betas=BETAS,
                  weight_decay=nonnegative_real() + [20000.0],  # lr * wd = 2 flips signs
                  maximize=not_bool())
HYPER_SIGN = dict(lr=nonnegative_real(), momentum=unit_interval_open())

RECORD = "a record (the state NamedTuple an update returns): its fields are checked where " \
         "it is used, by the update it is passed to"

PURE_ROWS = [
    Row(co.sgd_init, good=dict(p=P), bad=dict(p=bad_init_p(complex_ok=True)),
        accepted={"p": ([np.ones(2, dtype=complex)], "SGD supports complex parameters")}),
    pure_row(co.sgd_update, co.SGDState, HYPER_SGD, complex_ok=True),
    Row(co.adagrad_init, good=dict(p=P, initial_accumulator_value=0.1),
        bad=dict(p=bad_init_p(), initial_accumulator_value=nonnegative_real())),
    pure_row(co.adagrad_update, co.AdagradState, HYPER_ADAGRAD),
    Row(co.rmsprop_init, good=dict(p=P, momentum=0.9, centered=True),
        bad=dict(p=bad_init_p(), momentum=nonnegative_real(), centered=not_bool())),
    pure_row(co.rmsprop_update, co.RMSpropState, HYPER_RMSPROP),
    Row(co.adam_init, good=dict(p=P, amsgrad=True),
        bad=dict(p=bad_init_p(), amsgrad=not_bool())),
    pure_row(co.adam_update, co.AdamState, HYPER_ADAM),
    pure_row(co.adamw_update, co.AdamState, HYPER_ADAMW),
    Row(co.signsgd_init, good=dict(p=P, momentum=0.9),
        bad=dict(p=bad_init_p(), momentum=unit_interval_open())),
    pure_row(co.signsgd_update, co.SignSGDState, HYPER_SIGN),
    Row(co.nadam_init, good=dict(p=P), bad=dict(p=bad_init_p())),
    pure_row(co.nadam_update, co.NAdamState, HYPER_NADAM),
    Row(co.lion_init, good=dict(p=P), bad=dict(p=bad_init_p())),
    pure_row(co.lion_update, co.LionState, HYPER_LION),
    *[Row(State, good=good, reason=RECORD) for State, good in (
        (co.SGDState, {}), (co.AdagradState, dict(step=0, G=P)),
        (co.RMSpropState, dict(step=0, v=P)), (co.AdamState, dict(step=0, m=P, v=P)),
        (co.SignSGDState, {}), (co.NAdamState, dict(step=0, m=P, v=P)),
        (co.LionState, dict(m=P)))],
]

# ------------------------------------------------------------------ building blocks
def bad_operand() -> list:
    return [None, "x", [1.0, 2.0, 3.0], True, np.ones(3, dtype=np.int64),
            np.ones(3, dtype=np.complex128), 1j,
            np.zeros((3, 1)), np.zeros(4), torch.zeros(3)]


BLOCK_ROWS = [
    Row(co.ema, good=dict(prev=np.zeros(3), x=np.ones(3), beta=0.9),
        bad=dict(prev=bad_operand(), x=bad_operand(),
                 beta=not_real() + [-0.1, 1.0, 1.5, math.inf]),  # 1: frozen at prev
        accepted={"beta": ([0.0], "beta = 0 takes x: an average with no memory"),
                  "prev": ([0.0, 0, np.float64(0.5)], "a number starts the average (the "
                           "book's `avg = 0.0`)"),
                  "x": ([NAN, 2.0], "a number is averaged into every entry; NaN is not "
                        "looked for (a diverging run averages it)")}),
    Row(co.bias_corrected, good=dict(avg=np.ones(3), beta=0.9, t=3),
        bad=dict(avg=[None, "x", [1.0], True, np.ones(3, dtype=np.int64),
                      np.ones(3, dtype=np.complex128)],
                 beta=unit_interval_open(), t=positive_int()),
        accepted={"avg": ([0.5, NAN], "a number (the book's scalar EMA); NaN is not looked "
                          "for")}),
    Row(co.decoupled_weight_decay, good=dict(p=P, lr=0.1, weight_decay=0.01),
        bad=dict(p=[None, "x", 3.0, [1.0, 2.0], np.ones(3, dtype=np.int64),
                    np.ones(3, dtype=np.complex128)],
                 lr=nonnegative_real() + [200.0],                  # lr * wd = 2
                 weight_decay=nonnegative_real() + [1000.0]),      # lr * wd = 100
        accepted={"p": ([NAN], DIVERGING)}),
]

ROWS = CLASS_ROWS + METHOD_ROWS + PURE_ROWS + BLOCK_ROWS
