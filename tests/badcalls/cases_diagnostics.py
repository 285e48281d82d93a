"""Rows for companion.diagnostics: record / Recorder, dead_units, snapshot_weights and
update_ratios, on a tiny ReLU MLP."""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from badcalls import Row, bad_array, not_bool, not_callable, not_module, positive_int
from companion import diagnostics, nets
from companion.diagnostics import ForwardError

_X = torch.randn(8, 4, generator=torch.Generator().manual_seed(0))


def _net(activation: str = "tanh") -> nn.Module:
    # fc1 (8, 4), fc2 (8, 8), out (2, 8)
    return nets.mlp(4, 2, 8, 2, activation=activation, seed=0)


_FLAGS = dict(activation_stats=not_bool(), keep_activations=not_bool())
_Y = torch.arange(8) % 2                      # class labels for _net()'s 2 outputs
_CE = torch.nn.functional.cross_entropy


def _no_reduction(output, y):
    return torch.nn.functional.cross_entropy(output, y, reduction="none")


def _frozen() -> nn.Module:
    net = _net()
    net.requires_grad_(False)
    return net


_GRAD_BAD = dict(model=not_module() + [_frozen()],
                 x=bad_array(_X, integer=False) + [torch.ones(8, 5), torch.tensor(1.0), _X.numpy()],
                 y=[None, "y", 3.0, [0, 1], _Y.numpy(), torch.tensor(1), _Y[:5],
                    torch.ones(8, dtype=torch.complex64)],
                 loss_fn=not_callable() + [nn.CrossEntropyLoss, lambda o, y: 1.0, _no_reduction])

ROWS = [
    Row(diagnostics.ActivationStats, reason="a record that record() fills in: its fields "
                                            "are computed, not passed", run_good=False),
    Row(diagnostics.Recorder, good=dict(model=_net(), activation_stats=True,
                                        keep_activations=False),
        bad=dict(model=not_module(), **_FLAGS)),
    Row(diagnostics.record, good=dict(model=_net(), activation_stats=True,
                                      keep_activations=True),
        bad=dict(model=not_module(), **_FLAGS)),
    # a batch the model cannot take (int64 for a float MLP, 5 features for 4, one dimension
    # more) is the model's to refuse: ForwardError, a RuntimeError naming the layer and x
    Row(diagnostics.dead_units, good=dict(model=_net("relu"), x=_X),
        bad=dict(model=not_module() + [nets.mlp(4, 2, 8, 2, activation="tanh", seed=0)],
                 x=bad_array(_X) + [torch.ones(0, 4), torch.ones(8, 5), _X.double(),
                                    _X.numpy(), torch.tensor(1.0),
                                    torch.full((8, 4), math.inf)]),
        errors=(TypeError, ValueError, ForwardError)),
    Row(diagnostics.backprop_gradients, good=dict(model=_net(), x=_X, y=_Y, loss_fn=_CE),
        bad=_GRAD_BAD, errors=(TypeError, ValueError, ForwardError)),
    Row(diagnostics.gradient_histograms,
        good=dict(model=_net(), x=_X, y=_Y, loss_fn=_CE, bins=5, range=None),
        bad=dict(_GRAD_BAD, bins=positive_int(),
                 range=[3, "ab", (0.0,), (1.0, 0.0), (0.0, 0.0), (0.0, math.nan),
                        (0.0, math.inf), ("0", 1.0), (True, 1.0)]),
        accepted=dict(range=([(-1, 1), (-0.01, 0.02)], "a shared range (ints too)")),
        errors=(TypeError, ValueError, ForwardError)),
    Row(diagnostics.GradientHistogram, reason="a record that gradient_histograms() fills "
                                              "in: its fields are computed, not passed",
        run_good=False),
    Row(diagnostics.snapshot_weights, good=dict(model=_net()), bad=dict(model=not_module())),
    Row(diagnostics.update_ratios,
        good=dict(before=diagnostics.snapshot_weights(_net()), model=_net()),
        bad=dict(before=[None, [1], "x", {"fc1": 1.0}, {"fc9": torch.zeros(2)},
                         {"fc1": torch.zeros(2)}, {"fc1": torch.zeros(8, 4, dtype=torch.int64)},
                         {"fc1": np.zeros((8, 4))}],
                 model=not_module() + [nets.mlp(4, 2, 6, 2, seed=0),
                                       nn.Sequential(nn.Linear(4, 2))]),
        accepted=dict(before=([{}, {"fc1": torch.zeros(8, 4)}],
                              "part of a snapshot (an empty one for a model without "
                              "weights); a zero weight gives inf, as documented"))),
]
