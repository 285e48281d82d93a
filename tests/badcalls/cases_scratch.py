"""Rows for companion.scratch: ScratchMLP's constructor and each method's argument."""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from badcalls import (Row, bad_array, bad_choice, bad_seed, not_module, positive_real)
from companion import nets, scratch
from companion.scratch import ScratchMLP

SIZES = [3, 4, 2]


def _net() -> ScratchMLP:
    return ScratchMLP(SIZES, "tanh", seed=0)


def _after_forward() -> ScratchMLP:
    net = _net()
    net.forward(np.zeros((2, 3)))
    return net


def _bad_x() -> list:
    """For x of shape (B, 3): NaN, empty, wrong dims and features, a tensor, complex."""
    return bad_array(np.zeros((2, 3)), integer=False) + [
        np.zeros((2, 4)), np.zeros(3), np.ones((2, 3), dtype=bool),
        np.array([[0.0, math.inf, 0.0]]), torch.zeros(2, 3, dtype=torch.float64),
        [[0.0, 0.0, 0.0]]]


_INT_X = ([np.ones((2, 3), dtype=np.int64)], "an int array is promoted to float64, like "
                                              "the activations' inputs")

def _nonfinite_mlp(kind: str, value: float) -> nn.Module:
    """The good call's net with one NaN or infinite weight or bias in its last layer."""
    net = nets.mlp(3, 2, width=4, depth=1, seed=0)
    last = [m for m in net.modules() if isinstance(m, nn.Linear)][-1]
    with torch.no_grad():
        getattr(last, kind).view(-1)[0] = value
    return net


ROWS = [
    Row(ScratchMLP, good=dict(sizes=SIZES, activation="tanh", weight_scale=1.0, seed=0),
        bad=dict(sizes=[None, "abc", 3, [3], [], [3, 0, 1], [3, 2.5, 1], [3, True],
                        (3, -1), {"a": 1}, np.array([3, 2])],
                 activation=bad_choice("nope"), weight_scale=positive_real(),
                 seed=bad_seed() + [None]),
        accepted=dict(sizes=([(3, 2), range(1, 4), [np.int64(3), 2]],
                             "any list or tuple of ints"),
                      seed=([2 ** 64 - 1], "the largest seed numpy's default_rng takes"))),
    Row(scratch.Gradients, good=dict(dW=[], db=[], delta=[], dx=np.zeros((1, 3))),
        reason="a record returned by ScratchMLP.backward: its fields are checked where it "
               "is built"),
    Row(ScratchMLP.forward, call=lambda **kw: _net().forward(**kw),
        good=dict(x=np.zeros((2, 3))), bad=dict(x=_bad_x()), accepted=dict(x=_INT_X)),
    Row(ScratchMLP.backward, call=lambda **kw: _after_forward().backward(**kw),
        good=dict(grad_output=np.ones((2, 2))),
        bad=dict(grad_output=[None, "g", 1.0, [[1.0, 1.0], [1.0, 1.0]],
                              np.ones((2, 2), dtype=np.complex128), np.ones((2, 3)),
                              np.ones((3, 2)), np.ones(2), np.ones((0, 2)),
                              torch.ones(2, 2, dtype=torch.float64)]),
        accepted=dict(grad_output=([np.full((2, 2), math.nan)],
                                   "a diverged loss gives NaN gradients: they propagate, "
                                   "never refused per step"))),
    Row(ScratchMLP.chain_factors, call=lambda **kw: _net().chain_factors(**kw),
        good=dict(x=np.zeros((2, 3))), bad=dict(x=_bad_x()), accepted=dict(x=_INT_X)),
    Row(ScratchMLP.input_jacobian, call=lambda **kw: _net().input_jacobian(**kw),
        good=dict(x=np.zeros((2, 3))), bad=dict(x=_bad_x())),
    Row(ScratchMLP.factor_norms, call=lambda **kw: _net().factor_norms(**kw),
        good=dict(x=np.zeros((2, 3)), ord=2),
        bad=dict(x=_bad_x(), ord=[None, 1, "nuc", "2", [2], True, 3.0, math.nan]),
        accepted=dict(ord=(["fro", 2.0], "the spectral norm (2, also as 2.0) or Frobenius"))),
    Row(ScratchMLP.load_from_torch, call=lambda **kw: _net().load_from_torch(**kw),
        good=dict(sequential=nets.mlp(3, 2, width=4, depth=1, seed=0)),
        bad=dict(sequential=not_module() + [nets.mlp(3, 2, 4, 2, seed=0),
                                            nets.mlp(3, 2, 5, 1, seed=0),
                                            nets.mlp(2, 2, 4, 1, seed=0),
                                            nn.Sequential(), [np.zeros((4, 3))],
                                            _nonfinite_mlp("weight", math.nan),
                                            _nonfinite_mlp("bias", math.inf)])),
    Row(ScratchMLP.to_torch, call=lambda **kw: _net().to_torch(**kw),
        good=dict(dtype=torch.float32),
        bad=dict(dtype=["float64", torch.int64, torch.bool, torch.complex64, np.float64, 64,
                        torch.float64.__class__]),
        accepted=dict(dtype=([None, torch.float64, torch.float16],
                             "None is float64 (documented); any floating dtype"))),
]
