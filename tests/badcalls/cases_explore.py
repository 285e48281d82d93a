"""Rows for companion.explore: the controls, the experiment and its per-frame methods."""
from __future__ import annotations

import math

import numpy as np

from companion import explore as ex
from badcalls import Row, not_bool, not_callable, not_str, positive_int


def _draw(fig, a, kind):
    fig.text(0.5, 0.5, f"{a} {kind}")


def _draw_other_names(fig, a, colour):
    _draw(fig, a, colour)


def _draw_extra_required(fig, a, kind, alpha):
    _draw(fig, a, kind)


def _draw_no_figure(*, a, kind):
    pass


def _controls():
    return {"a": ex.Slider([1, 2]), "kind": ex.Choice(["x", "y", "z"])}


def _experiment():
    return ex.explore(_draw, _controls(), name="t", figsize=(1, 1), dpi=20)


def _not_text():
    return [3, True, ["text"]]


def _bad_draws():
    return not_callable() + [dict, _draw_other_names, _draw_extra_required, _draw_no_figure]


def _bad_controls():
    return [None, "a", [ex.Slider([1, 2])], {}, {"a": 3, "kind": ex.Choice(["x"])},
            {3: ex.Slider([1, 2]), "kind": ex.Choice(["x"])},
            {"": ex.Slider([1, 2]), "kind": ex.Choice(["x"])},
            {"a": ex.Slider([1, 2])},                                   # draw also takes kind
            {"a": ex.Slider([1, 2]), "kind": ex.Choice(["x"]), "b": ex.Choice(["y"])},
            {"a": ex.Slider(list(range(101))), "kind": ex.Choice(["x", "y"])}]  # 202 frames


def _bad_figsizes():
    return [None, 3, "12", (1.0,), (1.0, 2.0, 3.0), (0.0, 1.0), (-1.0, 1.0), (math.nan, 1.0),
            (math.inf, 1.0), ("1", 1.0), (True, 1.0)]


def _bad_indices():
    return [None, "10", 3, 1.0, (1,), (1, 0, 0), (2, 0), (-1, 0), (0, 3), (0.5, 0), (True, 0),
            (0, math.nan), [[0], [0]], np.array([0.0, 1.0]), {0: 0, 1: 0}]


def _bad_progress():
    return [3, "f", dict]


_EXPERIMENT_GOOD = dict(draw=_draw, controls=_controls(), name="t", title="title",
                        expensive=False, figsize=(1.0, 1.0), dpi=20, caption="caption",
                        constrained=False)

ROWS = [
    Row(ex.Slider, good=dict(values=[1, 2, 3], value=2, label="depth", marks={2: "two"}),
        bad=dict(values=["123", None, 3, {1: 2}, [], (), np.array([]), np.ones((2, 2)),
                         [1, "2"], [1, True], [1, None], [1, math.nan], [1, math.inf],
                         [1, 2, 2], [1, 2 + 1j], np.array([1 + 1j, 2])],
                 value=["2", True, [2], 5, 2.5, math.nan],
                 label=_not_text(),
                 marks=[None, [2], "two", {"a": "x"}, {True: "x"}, {math.nan: "x"},
                        {2: 3}, {2: None}]),
        accepted=dict(values=([np.array([1.0, 2.0, 3.0]), range(1, 4), (3, 1, 2)],
                              "an array, a range or a tuple of numbers, in any order "
                              "(slider order is the caller's)"),
                      value=([None, np.int64(2), 2.0], "None: the middle value; a numpy "
                             "number equal to one of the values"),
                      label=([None], "the parameter's name"),
                      marks=([{}, {10: "outside"}], "no marks; a mark outside the range "
                             "is named as outside")),
        mention=dict(marks="marks")),
    Row(ex.Choice, good=dict(options=["relu", "tanh"], value="tanh", label="activation"),
        bad=dict(options=["relu", None, 3, [], (), {}, ["relu", "relu"], {1: "relu"},
                          np.array(["relu", "tanh"]), {"relu", "tanh"}],
                 value=["sigmoid", 3, ["tanh"]],
                 label=_not_text()),
        accepted=dict(options=([("relu", "tanh"), {"ReLU": "relu", "Tanh": "tanh"}],
                               "a tuple, or labels -> values"),
                      value=([None], "the first option"),
                      label=([None], "the parameter's name"))),
    Row(ex.Slider.default_index, call=lambda **kw: ex.Slider([1, 2, 3], value=3).default_index(**kw),
        good=dict(name="depth"), bad=dict(name=not_str())),
    Row(ex.Choice.default_index, call=lambda **kw: ex.Choice(["x", "y"]).default_index(**kw),
        good=dict(name="kind"), bad=dict(name=not_str())),
    Row(ex.Experiment, good=_EXPERIMENT_GOOD,
        call=lambda **kw: ex.Experiment(**kw),
        bad=dict(draw=_bad_draws(), controls=_bad_controls(),
                 name=[None, 3, True, ["t"], "", "  "], title=_not_text(),
                 expensive=not_bool(), figsize=_bad_figsizes(), dpi=positive_int(),
                 caption=_not_text(), constrained=not_bool()),
        accepted=dict(title=([None], "no title"), caption=([None], "no caption"))),
    Row(ex.explore, good=dict(draw=_draw, controls=_controls(), name="t", title=None,
                              caption=None, expensive=False, figsize=(1.0, 1.0), dpi=20,
                              constrained=False),
        bad=dict(draw=_bad_draws(), controls=_bad_controls(),
                 name=[3, True, ["t"], "", "  "], title=_not_text(), caption=_not_text(),
                 expensive=not_bool(), figsize=_bad_figsizes(), dpi=positive_int(),
                 constrained=not_bool()),
        accepted=dict(name=([None], "draw.__name__"),
                      draw=([lambda fig, **params: fig.text(0, 0, "x")],
                            "a draw taking **params takes any control"))),
    Row(ex.Experiment.params, call=lambda **kw: _experiment().params(**kw),
        good=dict(index=(1, 0)), bad=dict(index=_bad_indices()),
        accepted=dict(index=([[1, 2], np.array([0, 2]), (np.int64(1), 0)],
                             "a list, an integer array, numpy ints"))),
    Row(ex.Experiment.figure, call=lambda **kw: _experiment().figure(**kw),
        good=dict(index=(1, 0), progress=None),
        bad=dict(index=_bad_indices()[1:], progress=_bad_progress()),
        accepted=dict(index=([None], "the initial setting"),
                      progress=([lambda fraction: None], "a progress callback"))),
    Row(ex.Experiment.render, call=lambda **kw: _experiment().render(**kw),
        good=dict(index=(1, 0), progress=None, compact=False),
        bad=dict(index=_bad_indices()[1:], progress=_bad_progress(), compact=not_bool()),
        accepted=dict(index=([None], "the initial setting"))),
    Row(ex.Experiment.neighbours, call=lambda **kw: _experiment().neighbours(**kw),
        good=dict(index=(1, 0)), bad=dict(index=_bad_indices())),
    Row(ex.Experiment.keep, call=lambda **kw: _experiment().keep(**kw),
        good=dict(index=(1, 0), fig=_experiment().figure((1, 0)), compact=False),
        bad=dict(index=_bad_indices(), fig=[None, "fig", 3, np.zeros((2, 2))], compact=not_bool())),
]
