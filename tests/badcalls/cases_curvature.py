"""Rows for companion.curvature: hessian_vector_product and top_hessian_eigenvalue."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from badcalls import (Row, bad_seed, nonnegative_real, not_array, not_callable, not_module,
                      positive_int)
from companion import curvature, nets

_X = torch.randn(8, 3, generator=torch.Generator().manual_seed(0))
_Y = torch.randn(8, 1, generator=torch.Generator().manual_seed(1))


def _net():
    return nets.mlp(3, 1, width=4, depth=1, seed=0)


def _frozen():
    net = _net()
    for p in net.parameters():
        p.requires_grad_(False)
    return net


def _nan(x):
    x = x.clone()
    x[0, 0] = math.nan
    return x


_BAD_MODEL = not_module() + [_frozen()]
_BAD_LOSS = not_callable() + [torch.nn.MSELoss, lambda p, y: F.mse_loss(p, y, reduction="none"),
                              lambda p, y: 3.0]
_BAD_X = not_array() + [_X.long(), _nan(_X), torch.ones(8, 3, dtype=torch.complex64)]
_BAD_Y = not_array() + [_nan(_Y)]

ROWS = [
    Row(curvature.hessian_vector_product,
        good=dict(model=_net(), loss_fn=F.mse_loss, x=_X, y=_Y,
                  v=[torch.ones_like(p) for p in _net().parameters()]),
        bad=dict(model=_BAD_MODEL, loss_fn=_BAD_LOSS, x=_BAD_X, y=_BAD_Y,
                 v=[None, "v", torch.ones(3), [torch.ones(1)],
                    [torch.ones(2, 2)] * 4, [torch.full((4, 3), math.nan)] + [torch.ones(4),
                                                                            torch.ones(1, 4),
                                                                            torch.ones(1)]]),
        mention=dict(v="v")),
    Row(curvature.top_hessian_eigenvalue,
        good=dict(model=_net(), loss_fn=F.mse_loss, x=_X, y=_Y, iters=3, seed=0),
        bad=dict(model=_BAD_MODEL, loss_fn=_BAD_LOSS, x=_BAD_X, y=_BAD_Y,
                 iters=positive_int(), seed=bad_seed(), tol=nonnegative_real())),
]
