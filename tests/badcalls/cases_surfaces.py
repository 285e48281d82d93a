"""Rows for companion.surfaces: Surface (built and its methods), quadratic, get, names, run,
heavy_ball_rate, nesterov_rate, sgd_noise_floor."""
from __future__ import annotations

import math

import numpy as np
import torch

from companion import optim, surfaces
from badcalls import Row, bad_choice, finite_real, nonnegative_int, nonnegative_real, \
    not_callable, positive_int, positive_real, unit_interval_open


def bad_point() -> list:
    """Not a point (x1, x2) of 2 finite reals."""
    return [None, "ab", 1.0, (1.0,), (1.0, 2.0, 3.0), [], (math.nan, 0.0), (0.0, math.inf),
            ("1", 2.0), (True, 0.0), (1 + 2j, 0.0), (None, 0.0), {1.0, 2.0},
            np.ones(3), np.ones((2, 2)), np.array([1.0, np.nan]), torch.ones(3),
            np.array([1 + 1j, 0.0]), np.array([True, False])]


def bad_limits() -> list:
    return [None, "ab", 1.0, (1.0,), (1.0, 2.0, 3.0), (2.0, 1.0), (1.0, 1.0),
            (0.0, math.nan), (-math.inf, 1.0), ("0", 1.0)]


def bad_curvatures() -> list:
    """Not a nonempty 1-D sequence of finite positive reals."""
    return [None, "ab", 1.0, [], (), [0.0], [-1.0, 2.0], [math.nan], [math.inf], ["1"],
            [True], [1 + 2j], np.ones((2, 2)), np.array([]), {1.0, 2.0}]


POINT_OK = ([np.array([0.5, -0.5]), [0.5, -0.5], (1, 2), torch.tensor([0.5, -0.5])],
            "a point may be a list, a tuple or an array of shape (2,) (numpy or torch)")

SURFACE = dict(name="bowl", f=lambda x1, x2: x1 ** 2 + x2 ** 2,
               df=lambda x1, x2: (2 * x1, 2 * x2), start=(1.0, 1.0), minimum=(0.0, 0.0),
               xlim=(-2.0, 2.0), ylim=(-2.0, 2.0), hessian=None)


def forgets_state(p, g, s, **kw):
    return p - 0.1 * g                 # the book's slip: no state returned


def returns_scalar_p(p, g, s, **kw):
    return float(p[0]), s


def returns_long_p(p, g, s, **kw):
    return np.append(p, 0.0), s


def returns_complex_p(p, g, s, **kw):
    return p + 0j, s


def returns_none(p, g, s, **kw):
    return None


def returns_state_first(p, g, s, **kw):
    return optim.SGDState(), p - 0.1 * g


ROWS = [
    Row(surfaces.Surface, good=SURFACE,
        bad=dict(name=[None, 3, "", ["bowl"]], f=not_callable() + [int],
                 df=not_callable() + [tuple], start=bad_point(),
                 minimum=[m for m in bad_point() if m is not None],
                 xlim=bad_limits(), ylim=bad_limits(),
                 hessian=["h", np.ones(3), np.ones((3, 3)), np.full((2, 2), np.nan),
                          torch.ones(2, 2), np.ones((2, 2), dtype=np.int64), [[1, 0], [0, 1]]]),
        accepted={"minimum": ([None], "None: a surface without a minimum (the saddle)"),
                  "hessian": ([None, np.eye(2)], "None for non-quadratic surfaces"),
                  "start": POINT_OK}),
    Row(surfaces.Trajectory, good=dict(points=np.zeros((1, 2)), losses=np.zeros(1),
                                       diverged_at=None),
        reason="a record (run's result): its fields are checked where it is made, by run"),
    Row(surfaces.quadratic, good=dict(a=1.0, b=2.0),
        bad=dict(a=finite_real() + [0.0, 0], b=finite_real() + [0.0],
                 name=[3, "", True, ["q"]], start=bad_point(), xlim=bad_limits(),
                 ylim=bad_limits(), angle=finite_real()),
        accepted={"name": ([None], "None: named after a and b"),
                  "a": ([-1.0, 3], "a negative coefficient makes a saddle; ints are reals")}),
    Row(surfaces.get, good=dict(name="ravine"), bad=dict(name=bad_choice("Ravine"))),
    Row(surfaces.names, reason="takes no arguments"),
    Row(surfaces.run, good=dict(surface="ravine", update=optim.sgd_update, steps=3, lr=0.1),
        bad=dict(surface=[None, 3, "nope", "", optim.sgd_update, surfaces.Surface],
                 update=not_callable() + [optim.Adam, torch.optim.Adam, optim.SGDState,
                                          optim.Adam([torch.nn.Parameter(torch.ones(2))]),
                                          forgets_state, returns_scalar_p, returns_long_p,
                                          returns_complex_p, returns_none,
                                          returns_state_first],
                 state=[(np.zeros(2), optim.SGDState()),       # a (p, state) pair
                        optim.AdamState(0, np.zeros(2), np.zeros(2)), "state",
                        optim.SGDState(v=np.zeros(3))],
                 steps=nonnegative_int(), start=bad_point()[1:],  # None: surface.start
                 lr=nonnegative_real()),
        accepted={"steps": ([0], "zero steps: just the start"),
                  "start": ([None, *POINT_OK[0]], "None: the surface's start; " + POINT_OK[1]),
                  "state": ([None, optim.SGDState()], "None: sgd_init"),
                  "surface": ([surfaces.get("beale")], "a Surface itself")}),
    Row(surfaces.Surface.grad, good=dict(p=(1.0, 2.0)),
        call=lambda **kw: surfaces.get("ravine").grad(**kw), bad=dict(p=bad_point()),
        accepted={"p": POINT_OK}),
    Row(surfaces.Surface.loss, good=dict(p=(1.0, 2.0)),
        call=lambda **kw: surfaces.get("rosenbrock").loss(**kw), bad=dict(p=bad_point()),
        accepted={"p": POINT_OK}),
    Row(surfaces.Surface.grid, good=dict(n=5),
        call=lambda **kw: surfaces.get("ravine").grid(**kw), bad=dict(n=positive_int() + [1]),
        accepted={"n": ([2], "the smallest grid: the corners")}),
    Row(surfaces.heavy_ball_rate, good=dict(lr=0.4, momentum=0.5, curvatures=[0.2, 4.0]),
        bad=dict(lr=nonnegative_real(), momentum=unit_interval_open(),
                 curvatures=bad_curvatures()),
        accepted={"curvatures": ([(0.2, 4.0), np.array([0.2, 4.0]), torch.tensor([1.0]), [3]],
                                 "a list, tuple, 1-D numpy array or tensor of positive reals"),
                  "lr": ([0.0, 1], "lr = 0 is a (non-moving) rate of 1; ints are reals")}),
    Row(surfaces.nesterov_rate, good=dict(lr=0.1, momentum=0.9, curvatures=[0.2, 4.0]),
        bad=dict(lr=nonnegative_real(), momentum=unit_interval_open(),
                 curvatures=bad_curvatures()),
        accepted={"curvatures": ([(0.2, 4.0), np.array([0.2, 4.0]), torch.tensor([1.0]), [3]],
                                 "a list, tuple, 1-D numpy array or tensor of positive reals"),
                  "lr": ([0.0, 1], "lr = 0 is a (non-moving) rate of 1; ints are reals")}),
    Row(surfaces.sgd_noise_floor, good=dict(lr=0.1, curvatures=[0.2, 4.0], noise_std=1.0),
        bad=dict(lr=positive_real() + [0.5, 10.0],   # at or above 2 / max(curvatures) = 0.5
                 curvatures=bad_curvatures(), noise_std=nonnegative_real(),
                 momentum=unit_interval_open()),
        accepted={"noise_std": ([0.0], "no noise: a floor of 0"),
                  "curvatures": ([np.array([0.2, 4.0])], "a 1-D numpy array")}),
]
