"""Rows for companion.nets: mlp, SimpleRNN (and its forward), BatchFirst,
rnn_gradient_norms."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from badcalls import (Row, bad_array, bad_choice, bad_seed, nonnegative_real, not_bool,
                      not_module, positive_int, positive_real)
from companion import nets

_SEED_NONE = ([None, 2 ** 64 - 1], "None draws from torch's global RNG (documented); "
                                   "2**64 - 1 is the largest seed torch.Generator takes")


def _sequences(shape: tuple) -> list:
    """Bad inputs for a recurrent model whose good input has ``shape``, 2 features."""
    good = torch.randn(shape)
    wrong_features = torch.randn(shape[:2] + (5,))
    return bad_array(good, torch_only=True) + [
        good.double(), wrong_features, torch.randn(shape[:2]),
        torch.ones(shape[:1] + (0,) + shape[2:])]


ROWS = [
    Row(nets.mlp, good=dict(in_features=3, out_features=2, width=4, depth=2, seed=0),
        bad=dict(in_features=positive_int(), out_features=positive_int(), width=positive_int(),
                 depth=positive_int(), activation=bad_choice("swishy"),
                 weight_scale=positive_real(),
                 init=[3, 2.5, "not_an_init", "", "kaiming_normal_", nn.Linear, ["zeros"]],
                 bias=not_bool(), bias_std=nonnegative_real(),
                 norm=[3, True, "no such norm", "", "Batch"], seed=bad_seed()),
        accepted=dict(seed=_SEED_NONE,
                      norm=([nn.LayerNorm, None], "a class is a callable f(width) returning "
                                                  "a module (documented)"),
                      bias=([np.bool_(False)], "numpy's bool is a bool"))),
    Row(nets.SimpleRNN, good=dict(input_size=2, hidden_size=3, output_size=1, seed=0),
        bad=dict(input_size=positive_int(), hidden_size=positive_int(),
                 output_size=positive_int(), activation=bad_choice("nope"),
                 spectral_radius=positive_real(), recurrent_init=bad_choice("uniform"),
                 seed=bad_seed()),
        accepted=dict(seed=_SEED_NONE)),
    Row(nets.SimpleRNN.forward, call=lambda **kw: nets.SimpleRNN(2, 3, seed=0).forward(**kw),
        good=dict(x=torch.randn(4, 2, 2)), bad=dict(x=_sequences((4, 2, 2)))),
    Row(nets.BatchFirst, good=dict(rnn=nets.SimpleRNN(2, 3, seed=0)),
        bad=dict(rnn=not_module() + [nets.SimpleRNN]),
        accepted=dict(rnn=([nn.RNN(2, 3)], "any time-first module (documented)"))),
    Row(nets.BatchFirst.forward,
        call=lambda **kw: nets.BatchFirst(nets.SimpleRNN(2, 3, seed=0)).forward(**kw),
        good=dict(x=torch.randn(2, 4, 2)), bad=dict(x=_sequences((2, 4, 2)))),
    Row(nets.rnn_gradient_norms,
        good=dict(rnn=nets.SimpleRNN(2, 3, seed=0), seq_len=3, batch=2, seed=0),
        bad=dict(rnn=[None, "rnn", nn.RNN(2, 3), nets.SimpleRNN, nets.mlp(2, 1, 3, 1)],
                 seq_len=positive_int(), batch=positive_int(), seed=bad_seed()),
        accepted=dict(seed=_SEED_NONE)),
]
