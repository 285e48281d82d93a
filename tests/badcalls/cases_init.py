"""Rows for companion.init: the scale formulas, the in-place initializers, the registry."""
from __future__ import annotations

import math

import numpy as np
import torch

from badcalls import (Row, bad_choice, finite_real, nonnegative_real, not_array,
                      positive_int)
from companion import init


def _weight() -> torch.Tensor:
    return torch.empty(4, 3)


def _bad_weight() -> list:
    """Not an array, integer / complex / bool dtypes, fewer than 2 dimensions."""
    return not_array() + [torch.ones(4, 3, dtype=torch.int64),
                          torch.ones(4, 3, dtype=torch.complex64),
                          torch.ones(4, 3, dtype=torch.bool), np.ones((4, 3), dtype=np.int64),
                          torch.empty(5), torch.empty(()), np.empty(5)]


def _bad_generator() -> list:
    return [np.random.default_rng(0), 3, "gen", torch.Generator, np.random.default_rng]


_GAIN0 = ([0.0, 0], "gain 0 is a valid scale (all zeros): the module promises only that a "
                    "negative gain raises")
_EMPTY = ([torch.empty(0, 3), np.empty((4, 3, 3))],
          "an empty tensor is left alone, as torch does; a 3-D numpy weight is a conv weight")
_NO_GENERATOR = ([None], "None draws from torch's global RNG, as torch.nn.init does")


def _gen() -> torch.Generator:
    return torch.Generator().manual_seed(0)


ROWS = [
    Row(init.calculate_gain, good=dict(nonlinearity="leaky_relu", param=0.2),
        bad=dict(nonlinearity=bad_choice("gelu", "ReLU"),
                 param=["0.1", True, [0.1], math.nan, math.inf]),
        accepted=dict(param=([None, -0.5, 3], "None is the default slope 0.01; any finite "
                                              "slope has a gain, as in torch"))),
    Row(init.calculate_fan_in_and_fan_out, good=dict(tensor=torch.empty(4, 3, 2)),
        bad=dict(tensor=not_array() + [torch.empty(5), torch.empty(()), np.empty(3),
                                       np.array([["a", "b"], ["c", "d"]]), (4, 3)]),
        accepted=dict(tensor=([torch.ones(4, 3, dtype=torch.int64), np.empty((0, 3))],
                              "only the shape matters, as in torch"))),
    Row(init.xavier_std, good=dict(fan_in=8, fan_out=16, gain=1.0),
        bad=dict(fan_in=positive_int(), fan_out=positive_int(), gain=nonnegative_real()),
        accepted=dict(gain=_GAIN0)),
    Row(init.kaiming_std, good=dict(fan=8, gain=1.41),
        bad=dict(fan=positive_int(), gain=nonnegative_real()),
        accepted=dict(gain=_GAIN0)),
    Row(init.lecun_std, good=dict(fan_in=8), bad=dict(fan_in=positive_int())),
    Row(init.uniform_bound, good=dict(std=0.5), bad=dict(std=nonnegative_real()),
        accepted=dict(std=([0.0], "std 0 is a valid (degenerate) scale, as in normal_"))),
    Row(init.xavier_uniform_, good=dict(tensor=_weight(), gain=1.0, generator=_gen()),
        bad=dict(tensor=_bad_weight(), gain=nonnegative_real(), generator=_bad_generator()),
        accepted=dict(gain=_GAIN0, generator=_NO_GENERATOR)),
    Row(init.xavier_normal_, good=dict(tensor=_weight(), gain=1.0, generator=_gen()),
        bad=dict(tensor=_bad_weight(), gain=nonnegative_real(), generator=_bad_generator()),
        accepted=dict(gain=_GAIN0, tensor=([torch.empty(0, 3)], _EMPTY[1]))),
    Row(init.kaiming_uniform_,
        good=dict(tensor=_weight(), a=0.0, mode="fan_in", nonlinearity="relu",
                  generator=_gen()),
        bad=dict(tensor=_bad_weight(), a=finite_real(), mode=bad_choice("fan_avg"),
                 nonlinearity=bad_choice("gelu"), generator=_bad_generator()),
        accepted=dict(a=([-0.2, 5], "any finite slope has a gain, as in torch"))),
    Row(init.kaiming_normal_,
        good=dict(tensor=_weight(), a=0.0, mode="fan_out", nonlinearity="leaky_relu",
                  generator=_gen()),
        bad=dict(tensor=_bad_weight(), a=finite_real(), mode=bad_choice("fan_avg"),
                 nonlinearity=bad_choice("gelu"), generator=_bad_generator()),
        accepted=dict(tensor=([torch.empty(0, 3), torch.empty(2, 0, 3)], _EMPTY[1]))),
    Row(init.lecun_normal_, good=dict(tensor=_weight(), generator=_gen()),
        bad=dict(tensor=_bad_weight(), generator=_bad_generator()),
        accepted=dict(generator=_NO_GENERATOR)),
    Row(init.orthogonal_, good=dict(tensor=_weight(), gain=1.0, generator=_gen()),
        bad=dict(tensor=_bad_weight(), gain=nonnegative_real(), generator=_bad_generator()),
        accepted=dict(gain=_GAIN0)),
    Row(init.normal_, good=dict(tensor=torch.empty(5), mean=0.0, std=1.0, generator=_gen()),
        bad=dict(tensor=not_array() + [torch.ones(5, dtype=torch.int64),
                                       torch.ones(5, dtype=torch.complex64),
                                       np.ones(5, dtype=np.int64)],
                 mean=finite_real(), std=nonnegative_real(), generator=_bad_generator()),
        accepted=dict(std=([0.0], "std 0 fills with the mean"),
                      tensor=([torch.empty(()), torch.empty(0)],
                              "normal_ takes any shape, as torch's"))),
    Row(init.zeros_, good=dict(tensor=_weight()),
        bad=dict(tensor=not_array() + [np.array(["a"]), np.array([object()])]),
        accepted=dict(tensor=([torch.ones(3, dtype=torch.int64), np.ones(2, dtype=bool)],
                              "zeros_ fills any numeric dtype and shape, as torch's"))),
    Row(init.constant_, good=dict(tensor=_weight(), val=0.3),
        bad=dict(tensor=not_array() + [np.array(["a"]), np.array([object()])],
                 val=[None, "1", True, [1.0], math.nan, math.inf, 1j]),
        accepted=dict(val=([-2, 0], "any finite real number"))),
    Row(init.get_initializer, good=dict(name="kaiming_normal"),
        bad=dict(name=bad_choice("he", "kaiming_normal_"))),
]
