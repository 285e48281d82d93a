"""Rows for companion.train: the training loop. The good call is a 2-step full-batch
cross-entropy run of a tiny MLP; every bad value is refused before the first update."""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from badcalls import (Row, bad_array, bad_choice, bad_seed, not_array, not_bool,
                      not_callable, not_module, positive_int, positive_real)
from companion import nets, optim, train

_X = torch.randn(16, 4, generator=torch.Generator().manual_seed(0))
_Y = torch.arange(16) % 3                     # class labels for 3 outputs


def _frozen() -> nn.Module:
    net = nets.mlp(4, 3, 8, 1, seed=0)
    for p in net.parameters():
        p.requires_grad_(False)
    return net


def _with(x: torch.Tensor, value: float) -> torch.Tensor:
    x = x.clone()
    x[3, 1] = value
    return x


def _not_none(values: list) -> list:
    return [v for v in values if v is not None]


ROWS = [
    Row(train.History, reason="a record that train returns: its fields are checked where "
                              "they are made", run_good=False),
    Row(train.train,
        good=dict(model=nets.mlp(4, 3, 8, 1, seed=0), x=_X, y=_Y, steps=2, lr=0.05,
                  loss="cross_entropy"),
        bad=dict(
            model=not_module() + [lambda v: v, nn.ReLU(), _frozen()],
            # one dimension more is left out: whether a model takes it is the model's to say
            x=bad_array(_X, ndim=False) + [_X[:15], torch.tensor(1.0), _with(_X, math.inf),
                                          np.full((16, 4), math.nan)],
            y=not_array() + [_Y.float(), _Y[:, None], torch.full((16,), 3), torch.full((16,), -1),
                             _Y[:15], torch.ones(16, dtype=torch.complex64),
                             torch.ones(0, dtype=torch.int64), torch.ones(16, 2, dtype=torch.int64),
                             torch.tensor(1), torch.full((16,), math.nan)],
            steps=positive_int(),
            lr=positive_real(),
            optimizer=bad_choice("SGD") + [lambda params, lr: None, lambda: None],
            loss=bad_choice("MSE") + [lambda p, t: F.cross_entropy(p, t, reduction="none"),
                                      nn.CrossEntropyLoss, lambda p, t: 1.0, lambda p: p.mean(),
                                      lambda p, t: torch.tensor(1.0), "mse"],
            batch_size=_not_none(positive_int()) + [17],
            seed=bad_seed(),
            track_update_ratios=not_bool(),
            optimizer_kwargs=[[("momentum", 0.9)], "x", 3, {1: 2}, {"momentum": -1.0},
                              {"no_such": 1}],
            callback=_not_none(not_callable()) + [dict],
            clip=["norm", True, 0.0, -1.0, math.inf, math.nan, nn.Linear],
            schedule=[0.5, "x", lambda: 1.0, lambda t: "a", lambda t: math.nan, float],
        ),
        accepted=dict(
            optimizer=([torch.optim.SGD, optim.Adam, "adam", "momentum"],
                       "a class is a callable f(params, lr) returning an optimizer"),
            loss=([nn.CrossEntropyLoss(), F.cross_entropy], "torch's own cross-entropy"),
            batch_size=([None, 16, 1], "None is the full batch; 1..n minibatches"),
            seed=([2 ** 64 - 1], "the largest seed torch's generator takes"),
            optimizer_kwargs=([None, {}, {"momentum": 0.5}], "no extra arguments, or valid ones"),
            clip=([None, 1.0, lambda params: None], "no clip, a max_norm or a callable"),
            x=([_X.double(), _X.numpy()], "floating x is cast to the model's dtype; numpy too"),
        )),
]
