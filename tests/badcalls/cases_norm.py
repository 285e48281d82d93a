"""Rows for companion.norm: the pure functions (numpy and torch alike), the modules'
constructors and their ``forward``s."""
import math

import numpy as np
import torch

from companion import norm
from badcalls import (Row, bad_array, nonnegative_real, not_bool, not_real, positive_int,
                      bad_seed)

NAN_ACTIVATIONS = "a diverging network's activations are NaN: a norm passes them on, as torch's"
NONE_PARAM = "None means no scale (1) or no shift (0)"


def _x(*shape):
    return np.random.default_rng(0).normal(size=shape)


def _t(*shape):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(0))


def _nan(a):
    """``a`` with a NaN in front."""
    a = a.clone() if isinstance(a, torch.Tensor) else a.copy()
    a.reshape(-1)[0] = math.nan
    return a


def _no_none(values):
    return [v for v in values if v is not None]


def _param_bad(C):
    """Bad per-channel (C,) parameters of a numpy x: not arrays, int/complex, empty, 2-D,
    the wrong length, a torch tensor."""
    return _no_none(bad_array(np.ones(C), nan=False)) + [np.ones(C + 1), torch.ones(C)]


def _momentum_bad():
    return _no_none(not_real()) + [-0.1, 1.5, math.inf]


def _stats_bad():
    return [3, "running", (np.zeros(3), np.ones(3)),
            norm.RunningStats(np.zeros(2), np.ones(3), 0),
            norm.RunningStats(np.zeros(3), None, 0),
            norm.RunningStats(np.zeros(3), torch.ones(3), 0),
            norm.RunningStats(np.zeros(3), np.ones(3, dtype=np.int64), 0),
            norm.RunningStats(np.zeros(3), np.ones(3), -1),
            norm.RunningStats(np.zeros(3), np.ones(3), 1.5)]


def _shape_bad():
    return [None, "3", 2.5, True, math.nan, 0, -1, (), [3, 0], [2.5], 4, (2, 3)]


def _device_bad():
    return ["gpu", "", 2.5, True, ["cpu"]]


def _dtype_bad():
    return [torch.int64, torch.bool, "float32", np.float32, 3]


EMPTY = ("an empty batch gives an empty output, as torch's norms do (the last shard of a "
         "dataset on one process can be empty)")
NAN = {"x": ([_nan(_x(4, 3))], NAN_ACTIVATIONS)}
NAN_OR_EMPTY = {"x": ([_nan(_x(4, 3)), _x(0, 3)], f"{NAN_ACTIVATIONS}; {EMPTY}")}

ROWS = [
    Row(norm.RunningStats, good=dict(mean=np.zeros(3), var=np.ones(3), count=0), reason="a record (mean, var, count): its fields are checked "
                                  "where it is used (batch_norm_train's running)"),
    Row(norm.batch_norm_train,
        good=dict(x=_x(4, 3), gamma=np.ones(3), beta=np.zeros(3),
                  running=norm.RunningStats(np.zeros(3), np.ones(3), 0), momentum=0.1,
                  eps=1e-5),
        bad=dict(x=bad_array(_x(4, 3), empty=False, nan=False, ndim=False) + [_x(3), _x(1, 3), _t(4, 3)],
                 gamma=_param_bad(3), beta=_param_bad(3), running=_stats_bad(),
                 momentum=_momentum_bad(), eps=nonnegative_real()),
        accepted={**NAN_OR_EMPTY, "momentum": ([None, 0.0, 1.0], "None is the cumulative average; "
                                                        "0 and 1 are the ends of [0, 1]"),
                  "running": ([None], "None skips the update"),
                  "gamma": ([None], NONE_PARAM), "beta": ([None], NONE_PARAM)}),
    Row(norm.batch_norm_eval,
        good=dict(x=_x(4, 3), running_mean=np.zeros(3), running_var=np.ones(3),
                  gamma=np.ones(3), beta=np.zeros(3), eps=1e-5),
        bad=dict(x=bad_array(_x(4, 3), empty=False, nan=False, ndim=False) + [_x(3), _t(4, 3)],
                 running_mean=bad_array(np.ones(3), nan=False) + [np.ones(4), torch.ones(3)],
                 running_var=bad_array(np.ones(3), nan=False) + [np.ones(4), torch.ones(3)],
                 gamma=_param_bad(3), beta=_param_bad(3), eps=nonnegative_real()),
        accepted={"x": ([_nan(_x(4, 3)), _x(1, 3), _x(0, 3)], "NaN activations are passed on; in "
                                                         "inference mode a batch of one is fine; "
                                                         + EMPTY)}),
    Row(norm.layer_norm,
        good=dict(x=_x(4, 3), normalized_shape=3, gamma=np.ones(3), beta=np.zeros(3), eps=1e-5),
        bad=dict(x=bad_array(_x(4, 3), empty=False, nan=False) + [_x(4, 5), _t(4, 3)],
                 normalized_shape=_shape_bad(), gamma=_param_bad(3), beta=_param_bad(3),
                 eps=nonnegative_real()),
        accepted={**NAN_OR_EMPTY, "normalized_shape": ([[3], torch.Size([3])],
                                              "a sequence of trailing sizes")}),
    Row(norm.rms_norm,
        good=dict(x=_x(4, 3), normalized_shape=3, gamma=np.ones(3), eps=1e-6),
        bad=dict(x=bad_array(_x(4, 3), empty=False, nan=False) + [_x(4, 5), _t(4, 3)],
                 normalized_shape=_shape_bad(), gamma=_param_bad(3),
                 eps=_no_none(nonnegative_real())),
        accepted={**NAN_OR_EMPTY, "eps": ([None], "None is the dtype's machine epsilon, as torch's")}),
    Row(norm.group_norm,
        good=dict(x=_x(2, 4, 3), num_groups=2, gamma=np.ones(4), beta=np.zeros(4), eps=1e-5),
        bad=dict(x=bad_array(_x(2, 4, 3), empty=False, nan=False, ndim=False) + [_x(4), _x(2, 3, 3),
                                                                    _t(2, 4, 3)],
                 num_groups=positive_int() + [3], gamma=_param_bad(4), beta=_param_bad(4),
                 eps=nonnegative_real()),
        accepted={"x": ([_nan(_x(2, 4, 3)), _x(0, 4, 3), _x(2, 4, 0)],
                         f"{NAN_ACTIVATIONS}; {EMPTY}")}),
    Row(norm.batch_norm_backward,
        good=dict(grad_y=_x(4, 3), x=_x(4, 3), gamma=np.ones(3), eps=1e-5),
        bad=dict(grad_y=bad_array(_x(4, 3), empty=False, nan=False) + [_x(4, 2), _x(3), _t(4, 3)],
                 x=bad_array(_x(4, 3), empty=False, nan=False) + [_x(3), _t(4, 3)],
                 gamma=_param_bad(3), eps=nonnegative_real()),
        accepted={"grad_y": ([_nan(_x(4, 3))], "NaN gradients of a diverging run "
                                                       "are propagated, not refused")}),
    Row(norm.layer_norm_backward,
        good=dict(grad_y=_x(4, 3), x=_x(4, 3), normalized_shape=3, gamma=np.ones(3), eps=1e-5),
        bad=dict(grad_y=bad_array(_x(4, 3), empty=False, nan=False) + [_x(4, 2), _t(4, 3)],
                 x=bad_array(_x(4, 3), empty=False, nan=False) + [_x(4, 5), _t(4, 3)],
                 normalized_shape=_shape_bad(), gamma=_param_bad(3), eps=nonnegative_real())),
    Row(norm.BatchNorm1d,
        good=dict(num_features=3, eps=1e-5, momentum=0.1, affine=True,
                  track_running_stats=True, device=None, dtype=None, bias=True),
        bad=dict(num_features=positive_int(), eps=nonnegative_real(),
                 momentum=_momentum_bad(), affine=not_bool(), track_running_stats=not_bool(),
                 device=_device_bad(), dtype=_dtype_bad(), bias=not_bool()),
        accepted={"momentum": ([None], "the cumulative average"),
                  "device": (["cpu", torch.device("cpu")], "torch's factory arguments"),
                  "dtype": ([torch.float64], "torch's factory arguments")}),
    Row(norm.BatchNorm2d,
        good=dict(num_features=3, eps=1e-5, momentum=0.1, affine=True,
                  track_running_stats=True, device=None, dtype=None, bias=True),
        bad=dict(num_features=positive_int(), eps=nonnegative_real(),
                 momentum=_momentum_bad(), affine=not_bool(), track_running_stats=not_bool(),
                 device=_device_bad(), dtype=_dtype_bad(), bias=not_bool())),
    Row(norm.LayerNorm,
        good=dict(normalized_shape=3, eps=1e-5, elementwise_affine=True, bias=True,
                  device=None, dtype=None),
        bad=dict(normalized_shape=_shape_bad()[:-2], eps=nonnegative_real(),
                 elementwise_affine=not_bool(), bias=not_bool(), device=_device_bad(),
                 dtype=_dtype_bad())),
    Row(norm.RMSNorm,
        good=dict(normalized_shape=3, eps=None, elementwise_affine=True, device=None,
                  dtype=None),
        bad=dict(normalized_shape=_shape_bad()[:-2], eps=_no_none(nonnegative_real()),
                 elementwise_affine=not_bool(), device=_device_bad(), dtype=_dtype_bad()),
        accepted={"eps": ([None], "None is the input dtype's machine epsilon, as torch's")}),
    Row(norm.GroupNorm,
        good=dict(num_groups=2, num_channels=4, eps=1e-5, affine=True, device=None, dtype=None,
                  bias=True),
        bad=dict(num_groups=positive_int() + [3], num_channels=positive_int() + [5],
                 eps=nonnegative_real(), affine=not_bool(), device=_device_bad(),
                 dtype=_dtype_bad(), bias=not_bool())),
    Row(norm.fold_batch_norm,
        good=dict(layer=torch.nn.Linear(2, 3), bn=torch.nn.BatchNorm1d(3).eval()),
        bad=dict(layer=[None, torch.nn.ReLU(), torch.nn.ConvTranspose2d(2, 3, 1),
                        torch.nn.Linear(2, 4)],
                 bn=[None, torch.nn.LayerNorm(3), torch.nn.BatchNorm1d(3),
                     torch.nn.BatchNorm1d(3, track_running_stats=False).eval(),
                     torch.nn.BatchNorm1d(4).eval()])),
    Row(norm.invariances,
        good=dict(n=4, d=2, k=4, seed=0),
        bad=dict(n=positive_int() + [2], d=positive_int(), k=positive_int() + [2, 5],
                 seed=bad_seed())),
    Row(norm._BatchNorm.forward,
        call=lambda **kw: norm.BatchNorm1d(3)(**kw),
        good=dict(x=_t(4, 3)),
        bad=dict(x=bad_array(_t(4, 3), empty=False, torch_only=True, nan=False, ndim=False)
                 + [_t(4), _t(4, 3, 2, 2), _t(4, 5), _t(1, 3), _t(4, 3).double()]),
        accepted={"x": ([_t(4, 3, 2), _t(0, 3)], "BatchNorm1d takes (N, C, L) too; " + EMPTY)}),
    Row(norm.LayerNorm.forward,
        call=lambda **kw: norm.LayerNorm(3)(**kw),
        good=dict(x=_t(4, 3)),
        bad=dict(x=bad_array(_t(4, 3), empty=False, torch_only=True, nan=False)
                 + [_t(4, 5), _t(4, 3).double()]),
        accepted={"x": ([_nan(_t(4, 3)), _t(0, 3)], f"{NAN_ACTIVATIONS}; {EMPTY}")}),
    Row(norm.RMSNorm.forward,
        call=lambda **kw: norm.RMSNorm(3)(**kw),
        good=dict(x=_t(4, 3)),
        bad=dict(x=bad_array(_t(4, 3), empty=False, torch_only=True, nan=False)
                 + [_t(4, 5), _t(4, 3).double()])),
    Row(norm.GroupNorm.forward,
        call=lambda **kw: norm.GroupNorm(2, 4)(**kw),
        good=dict(x=_t(2, 4, 3)),
        bad=dict(x=bad_array(_t(2, 4, 3), empty=False, torch_only=True, nan=False, ndim=False)
                 + [_t(4), _t(2, 6, 3), _t(2, 4, 3).double()]),
        accepted={"x": ([_t(2, 4), _t(2, 4, 3, 2), _t(0, 4, 3)],
                          "GroupNorm takes (N, C, *); " + EMPTY)}),
]
