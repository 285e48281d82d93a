"""Rows for companion.diagnose: diagnose, watch / Watcher and the Watcher's methods, on a
tiny MLP with float targets."""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from badcalls import (Row, bad_choice, bad_seed, not_module, positive_int)
from companion import diagnose as dg
from companion import nets, precision, train

_X = torch.randn(8, 4, generator=torch.Generator().manual_seed(0))
_Y = torch.zeros(8, 2)


def _net() -> nn.Module:
    return nets.mlp(4, 2, 8, 2, seed=0)


def _nan(t: torch.Tensor) -> torch.Tensor:
    t = t.clone()
    t[1, 1] = math.nan
    return t


def _stepped() -> dg.Watcher:
    """A watcher that measured one step of SGD."""
    net = _net()
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    with dg.watch(net, opt, every=1) as w:
        loss = F.mse_loss(net(_X), _Y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        w.log(loss)
    return w


_MODEL = not_module() + [nn.ReLU()]                      # nn.ReLU(): no parameters
_OPTIMIZER = ["sgd", 3, torch.optim.SGD, _net()]
# not a GradScaler: a name, a number, the classes themselves (a common slip), an optimizer
_SCALER = ["cpu", 2.0 ** 16, torch.amp.GradScaler, precision.GradScaler,
           torch.optim.SGD(_net().parameters(), lr=0.1)]
_SCALERS = ([torch.amp.GradScaler("cpu"), precision.GradScaler(),
             torch.amp.GradScaler("cpu", enabled=False)],
            "torch's GradScaler, the companion's, and a disabled one (scale 1)")

ROWS = [
    Row(dg.ForwardError, reason="the exception diagnose raises when model(x) fails; the "
                                "companion writes its message and layer", run_good=False),
    # x the model cannot take (int64 for a float MLP, 5 features, one dimension more, a list
    # of floats unpacked as model(*x)) is reported as ForwardError, a RuntimeError naming x
    # and the layer that raised
    Row(dg.diagnose, good=dict(model=_net(), x=_X, y=_Y),
        bad=dict(model=_MODEL,
                 x=[None, "x", 3.0, [1.0, 2.0], _X.numpy(), _X.long(),
                    _X.to(torch.complex64), _nan(_X), torch.ones(0, 4), torch.ones(8, 5),
                    torch.ones(8, 4, 2), (_nan(_X),), {"input": _nan(_X)}],
                 y=["y", [0.0] * 8, 3.0, _Y.to(torch.complex64), _nan(_Y), torch.ones(0, 2),
                    _Y[:7], _Y[:, 0], torch.ones(8, 2, 2), _Y.long(), torch.full((8,), 5),
                    torch.full((8,), -1)],
                 loss=[v for v in bad_choice("MSE") if v is not None]
                 + [nn.MSELoss, lambda p, t: (p - t) ** 2, lambda p, t: 1.0],
                 optimizer=_OPTIMIZER,
                 seed=bad_seed(),
                 scaler=_SCALER),
        accepted=dict(y=([None, np.zeros((8, 2)), torch.zeros(8, dtype=torch.long)],
                         "None probes the Jacobians alone; numpy targets are converted; "
                         "integer labels mean cross-entropy"),
                      loss=([None, "mse", F.mse_loss, nn.MSELoss()], "the default, a name, "
                            "torch's own MSE"),
                      x=([(_X,), [_X], {"input": _X}], "model(*x) and model(**x)"),
                      seed=([2 ** 64 - 1], "the largest seed torch's generator takes"),
                      scaler=_SCALERS),
        errors=(TypeError, ValueError, dg.ForwardError)),
    # the scaler needs the optimizer it steps: given without one (optimizer=None), a real
    # GradScaler is refused too, by a ValueError naming scaler
    Row(dg.watch, good=dict(model=_net(), optimizer=None, every=10),
        bad=dict(model=_MODEL, optimizer=_OPTIMIZER, every=positive_int(),
                 scaler=_SCALER + [torch.amp.GradScaler("cpu")])),
    Row(dg.Watcher, good=dict(model=_net(), optimizer=None, every=10),
        bad=dict(model=_MODEL, optimizer=_OPTIMIZER, every=positive_int(),
                 scaler=_SCALER + [precision.GradScaler()])),
    Row(dg.Watcher.log, call=lambda **kw: dg.watch(_net()).log(**kw), good=dict(loss=0.5),
        bad=dict(loss=[None, "0.5", True, [0.5], torch.ones(3), torch.ones(1, dtype=torch.cfloat),
                       torch.tensor(True), np.ones(3), np.array(["a"])]),
        accepted=dict(loss=([math.nan, math.inf, torch.tensor(math.nan), torch.tensor([0.3]),
                             np.float32(0.2), np.array(0.5), 1],
                            "NaN and inf losses are a divergence, which watch reports; any "
                            "real number or one-element tensor or array"))),
    Row(dg.Watcher.report, call=lambda **kw: _stepped().report(**kw), good=dict(history=None),
        bad=dict(history=["h", 3, {"diverged_at": 3}, np.zeros(3)]),
        accepted=dict(history=([train.History(np.zeros(1), steps_run=1)],
                               "the History of the run"))),
]
