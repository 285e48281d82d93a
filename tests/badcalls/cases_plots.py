"""Rows for companion.plots: the four figure helpers."""
from __future__ import annotations

import math

import numpy as np
import torch
from matplotlib.figure import Figure

from companion import plots
from companion.surfaces import Trajectory
from companion.train import History
from badcalls import Row, not_bool, positive_int


def _bad_ax():
    return [3, "ax", np.zeros(2), Figure()]


def _axes():
    return Figure().subplots()


def _bad_limits():
    return [None, 3, "ab", (0.0,), (0.0, 1.0, 2.0), (1.0, 0.0), (0.0, 0.0), (0.0, math.nan),
            (0.0, math.inf), ("0", 1.0), (True, 1.0)]


def _bowl(a, b):
    return a ** 2 + b ** 2


ROWS = [
    Row(plots.loss_curves,
        good=dict(histories={"a": np.array([1.0, 0.5]), "b": [1.0, 0.8, math.nan]}, ax=None,
                  logy=True),
        bad=dict(histories=[None, [np.ones(3)], "a", {}, {"a": None}, {"a": "loss"},
                            {"a": 3.0}, {"a": [1.0, None]}, {"a": []}, {"a": np.ones((2, 2))},
                            {"a": np.ones(3, dtype=complex)}, {"a": [True, False]},
                            {"a": [[1.0], [1.0, 2.0]]}, {"a": torch.ones(2, dtype=torch.complex64)},
                            {"a": History(losses=None)},
                            {"a": History(losses=np.ones(3), diverged_at="1")}],
                 ax=_bad_ax(), logy=not_bool()),
        accepted=dict(histories=([{"a": torch.tensor([1.0, 0.5], requires_grad=True)},
                                  {"a": History(losses=np.array([1.0, math.nan]), diverged_at=1)},
                                  {"a": [math.nan]}],
                                 "a tensor of losses, a History, a run that diverged at once"),
                      ax=([_axes()], "an existing Axes"))),
    Row(plots.layer_profile,
        good=dict(values={"fc1": 1.0, "fc2": 0.1}, ax=None, logy=True, label="grad",
                  reference=None),
        bad=dict(values=[None, "1", 3.0, {}, [], np.ones(0), {"fc1": "1"}, {"fc1": None},
                         {"fc1": True}, {"fc1": np.ones(2)}, [1.0, None], np.ones((2, 2)),
                         np.array([1 + 1j]), [[1.0], [2.0, 3.0]], torch.ones(2, 2),
                         [torch.ones((), requires_grad=True) * 2]],
                 ax=_bad_ax(), logy=not_bool(), label=[3, True, ["grad"]],
                 reference=["1", True, math.nan, math.inf, [1.0, 2.0, 3.0], [1.0, None],
                            np.ones((2, 2)), [1.0, math.nan], {"fc1": 1.0}]),
        accepted=dict(values=([{"fc1": torch.tensor(1.0), "fc2": np.float32(0.1)},
                               [1.0, math.nan, math.inf, 0.0], torch.tensor([1.0, 2.0]),
                               np.array([1, 2])],
                              "scalar tensors and numpy numbers; NaN, inf and 0 are drawn "
                              "as marked points (the plot's purpose)"),
                      label=([None], "no legend"),
                      reference=([1.0, np.float64(0.5), [1.0, 2.0]],
                                 "a number or one value per layer"))),
    Row(plots.histograms,
        good=dict(activations={"a": np.linspace(-1.0, 1.0, 20), "b": torch.ones(5)}, ax=None,
                  bins=5, range=None),
        bad=dict(activations=[None, [np.ones(3)], {}, {"a": None}, {"a": "x"}, {"a": 3.0},
                              {"a": np.ones(3, dtype=complex)}, {"a": np.array([True])},
                              {"a": [1.0, None]}, {"a": torch.ones(2, dtype=torch.bool)}],
                 ax=_bad_ax() + [[3], [_axes()]],              # [one Axes] for two layers
                 bins=positive_int(),
                 range=_bad_limits()[1:]),
        accepted=dict(activations=([{"a": np.array([]), "b": np.array([0.0, math.nan])},
                                    {"a": torch.ones(2, 3, requires_grad=True)}],
                                   "an empty layer and NaN are counted in the row's text; "
                                   "any shape is flattened"),
                      ax=([_axes(), [_axes(), _axes()]], "one Axes, or one per layer"),
                      range=([(-1, 1)], "a shared x range"))),
    Row(plots.trajectory_2d,
        good=dict(f=_bowl, paths={"p": np.array([[0.5, 0.5], [0.1, 0.1]])}, ax=None,
                  xlim=(-1.0, 1.0), ylim=(-1.0, 1.0), levels=5, resolution=10),
        bad=dict(f=[None, 3, "f", dict, lambda a, b: "x", lambda a, b: np.ones(3),
                    lambda a, b: a + 1j],
                 paths=[None, [np.zeros((2, 2))], "p", {"p": None}, {"p": np.zeros((2, 3))},
                        {"p": np.zeros(2)}, {"p": np.zeros((0, 2))}, {"p": "ab"},
                        {"p": [[0.0, 0.0], [1.0]]}, {"p": np.ones((2, 2), dtype=complex)},
                        {"p": Trajectory(points=np.zeros(3), losses=np.zeros(3),
                                         diverged_at=None)}],
                 ax=_bad_ax(), xlim=_bad_limits(), ylim=_bad_limits(),
                 levels=[None, "5", 0, -1, True, 2.5, math.nan, [], [1.0, 0.5],
                         [0.1, math.nan], [[1.0]]],
                 resolution=positive_int() + [1]),
        accepted=dict(paths=([{}, {"t": Trajectory(points=np.array([[0.5, 0.5], [np.nan, np.nan]]),
                                                   losses=np.zeros(2), diverged_at=1)},
                              {"p": [[0.5, 0.5]]}],
                             "contours only; a diverged Trajectory; one point"),
                      levels=([[0.1, 0.5, 1.0], np.int64(3)], "explicit levels; a numpy int"),
                      f=([lambda a, b: 1.0], "a constant f is broadcast to the grid"))),
]
