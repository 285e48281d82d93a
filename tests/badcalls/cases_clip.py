"""Rows for companion.clip: the pure functions on lists of arrays, descent_steps, and the
in-place torch API (where torch raises for a bad value, so do we, with the same type)."""
import math

import numpy as np
import torch

import companion.clip as cc
from badcalls import Row, nonnegative_real, not_bool, not_callable, positive_int, positive_real


def _no_none(values):
    return [v for v in values if v is not None]


def _grads_bad():
    """Bad ``grads`` for the pure functions (numpy good value)."""
    return [None, "g", 3.0, {"w": np.ones(3)}, [None], [[1.0, 2.0]],
            [np.ones(3, dtype=np.int64)], [np.ones(3, dtype=np.complex64)],
            [np.ones(3), torch.ones(3)], np.ones(3, dtype=np.int64)]


def _norm_type_bad():
    return [None, "two", "2", True, [2.0], math.nan, 0.0, -1.0, -math.inf, torch.ones(2)]


NORM_TYPE_OK = ([math.inf, "inf", torch.tensor(2.0), 1, 0.5],
                "torch's float(norm_type) reads the string 'inf' and one-element tensors")
NAN_GRADS = "NaN gradients of a diverging run are clipped as torch does, never refused"


def _grads():
    return [np.array([-3.0, 0.5, 2.0]), np.array([[1.0, -2.0], [0.5, 4.0]])]


def _params():
    """Two parameters with gradients (fresh each call)."""
    gen = torch.Generator().manual_seed(0)
    ps = []
    for shape in ((3, 2), (3,)):
        p = torch.randn(shape, generator=gen, requires_grad=True)
        p.grad = torch.randn(shape, generator=gen) * 5
        ps.append(p)
    return ps


def _parameters_bad():
    return [None, 3, "p", [1.0], [torch.ones(2), np.ones(2)], np.ones(3), {"w": torch.ones(2)},
            torch.nn.Linear(2, 2), torch.nn.Linear]


def _foreach_bad():
    return ["yes", 1, 0.0, 0]


FOREACH_OK = ([None, True, False], "torch's three values")
SCALAR_TENSOR = ([torch.tensor(1.0)], "torch's float(max_norm) reads a one-element tensor")

ROWS = [
    Row(cc.clip_by_value, good=dict(grads=_grads(), clip_value=1.0),
        bad=dict(grads=_grads_bad(), clip_value=positive_real() + [torch.ones(2)]),
        accepted={"grads": ([[], np.ones(3), [np.array([math.nan, 1.0])], [np.ones(0)]],
                            "an empty list, a single array, NaN gradients (" + NAN_GRADS
                            + "), an empty gradient"),
                  "clip_value": SCALAR_TENSOR}),
    Row(cc.global_norm, good=dict(grads=_grads(), norm_type=2.0),
        bad=dict(grads=_grads_bad(), norm_type=_norm_type_bad()),
        accepted={"grads": ([[], [torch.ones(2), torch.ones(3, dtype=torch.float64)]],
                            "an empty list has norm 0; torch tensors of mixed float dtypes"),
                  "norm_type": NORM_TYPE_OK}),
    Row(cc.clip_by_global_norm, good=dict(grads=_grads(), max_norm=1.0, norm_type=2.0),
        bad=dict(grads=_grads_bad(), max_norm=positive_real() + [torch.ones(2)],
                 norm_type=_norm_type_bad()),
        accepted={"grads": ([[np.array([math.inf, 1.0])]], NAN_GRADS),
                  "norm_type": NORM_TYPE_OK}),
    Row(cc.unitwise_norm, good=dict(x=np.ones((2, 3)), norm_type=2.0),
        bad=dict(x=[None, "x", 3.0, [1.0, 2.0], np.ones((2, 3), dtype=np.int64),
                    np.ones((2, 3), dtype=np.complex64), np.ones((0, 3))],
                 norm_type=_norm_type_bad()),
        accepted={"x": ([np.ones(3), torch.ones(2, 3, 4), np.ones(())],
                        "any number of dims: <= 1 is one unit")}),
    Row(cc.adaptive_clip,
        good=dict(grads=[np.ones((2, 3)), np.ones(3)], params=[np.ones((2, 3)), np.ones(3)],
                  clip_factor=0.01, eps=1e-3),
        bad=dict(grads=_grads_bad() + [[np.ones((3, 2)), np.ones(3)],
                                       [np.ones((1, 3)), np.ones(3)], [np.ones((2, 3))],
                                       [torch.ones(2, 3), torch.ones(3)]],
                 params=_grads_bad() + [[np.ones((2, 3)), np.ones(1)],
                                        [np.ones((2, 3)), np.ones(3), np.ones(3)]],
                 clip_factor=positive_real(), eps=nonnegative_real()),
        accepted={"eps": ([0.0], "eps = 0: no floor for zero weights")}),
    Row(cc.clip_grad_value_,
        good=dict(parameters=_params(), clip_value=1.0, foreach=None),
        bad=dict(parameters=_parameters_bad(), clip_value=positive_real() + [torch.ones(2)],
                 foreach=_foreach_bad()),
        accepted={"foreach": FOREACH_OK, "clip_value": SCALAR_TENSOR,
                  "parameters": ([[], torch.ones(2)], "torch's: nothing to clip; a single "
                                                      "tensor (no grad: skipped)")}),
    Row(cc.clip_grad_norm_,
        good=dict(parameters=_params(), max_norm=1.0, norm_type=2.0, error_if_nonfinite=False,
                  foreach=None),
        bad=dict(parameters=_parameters_bad(), max_norm=positive_real() + [torch.ones(2)],
                 norm_type=_norm_type_bad(), error_if_nonfinite=not_bool(),
                 foreach=_foreach_bad()),
        accepted={"foreach": FOREACH_OK, "max_norm": SCALAR_TENSOR, "norm_type": NORM_TYPE_OK,
                  "parameters": ([[], (p for p in _params())], "torch's: an empty list, a "
                                                               "generator")}),
    Row(cc.get_total_norm,
        good=dict(tensors=[torch.ones(3), torch.ones(2, 2)], norm_type=2.0,
                  error_if_nonfinite=False, foreach=None),
        bad=dict(tensors=[None, 3, "t", [1.0], [torch.ones(2), np.ones(2)], np.ones(2),
                          torch.ones(2, dtype=torch.int64), [torch.ones(2, dtype=torch.bool)],
                          torch.nn.Linear(2, 2)],
                 norm_type=_norm_type_bad(), error_if_nonfinite=not_bool(),
                 foreach=_foreach_bad()),
        accepted={"tensors": ([[], [torch.ones(2, dtype=torch.complex64)],
                               [torch.tensor([math.nan])]],
                              "as torch: an empty list (norm 0), complex tensors, NaN "
                              "(a diverging run's gradients)"),
                  "foreach": FOREACH_OK, "norm_type": NORM_TYPE_OK}),
    Row(cc.clip_grads_with_norm_,
        good=dict(parameters=_params(), max_norm=1.0, total_norm=torch.tensor(5.0),
                  foreach=None),
        bad=dict(parameters=_parameters_bad(), max_norm=positive_real() + [torch.ones(2)],
                 total_norm=[None, "big", True, [1.0], math.nan, -1.0, torch.ones(2),
                             torch.tensor(1 + 1j), torch.tensor(True)],
                 foreach=_foreach_bad()),
        accepted={"total_norm": ([5.0, math.inf, 0.0, torch.tensor(3), torch.tensor(math.nan)],
                                 "a number >= 0 (inf: get_total_norm's answer for an inf "
                                 "gradient); a tensor's value is not read (no GPU sync)"),
                  "foreach": FOREACH_OK}),
    Row(cc.adaptive_clip_grad_,
        good=dict(parameters=_params(), clip_factor=0.01, eps=1e-3, norm_type=2.0),
        bad=dict(parameters=_parameters_bad(), clip_factor=positive_real(),
                 eps=nonnegative_real(), norm_type=_norm_type_bad())),
    Row(cc.descent_steps,
        good=dict(grad=lambda x: 2 * x, x0=1.0, lr=0.25, max_norm=None, tol=1e-3,
                  max_steps=100),
        bad=dict(grad=not_callable() + [float, lambda x: "g", lambda x: [2 * x],
                                        lambda x: np.ones(2)],
                 x0=[None, "1", True, math.nan, math.inf, [1.0, 2.0], np.ones((2, 2)),
                     np.array([math.nan]), np.ones(0), np.ones(2, dtype=np.complex64),
                     torch.ones(2)],
                 lr=positive_real(), max_norm=_no_none(positive_real()), tol=positive_real(),
                 max_steps=positive_int()),
        accepted={"x0": ([3, np.array([1.0, -2.0]), np.array([1, 2])],
                         "an int, a 1-D array (float or int)"),
                  "max_norm": ([None, 1.0], "None: plain gradient descent")}),
]
