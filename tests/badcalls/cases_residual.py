"""Rows for companion.residual: the constructors, every method, fixup_init_,
path_gradients, train_stacked and stochastic_depth."""
import math

import numpy as np
import torch
from torch import nn

from companion.residual import (Gate, ResidualBlock, ResidualMLP, StackedRun, TokenTransformer,
                                fixup_init_, path_gradients, stochastic_depth, train_stacked)
from badcalls import (Row, bad_array, bad_choice, bad_seed, not_bool, not_callable, not_int,
                      not_module, not_str, positive_int, positive_real)


def _net(**kw):
    return ResidualMLP(3, 2, 4, 2, seed=0, **kw)


def _t(*shape):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(0))


def _nan(t):
    t = t.clone()
    t.reshape(-1)[0] = math.nan
    return t


def _batch_bad(features):
    """Bad (B, features) float32 inputs of a model: not tensors, int/complex, empty, 3-D,
    numpy, 1-D, the wrong width, float64 (the model is float32)."""
    return bad_array(_t(5, features), torch_only=True, nan=False) + [
        _t(features), _t(5, features + 1), _t(5, features).double()]


def _branch_scale_bad():
    return [None, True, "half", "", [1.0], -1.0, math.nan, math.inf]


def _models_bad():
    return not_module() + [nn.Linear(3, 2), ResidualMLP, _net(skip=False)]


NAN_FORWARD = ("forward runs every step: no NaN scan (path_gradients, a measurement, "
               "refuses NaN data)")
TOKENS = torch.tensor([[0, 1, 2, 3], [7, 6, 5, 4]])
LABELS = torch.tensor([0, 1, 1, 0, 1])


def _tokens_bad():
    return [None, "t", 3, [[0, 1, 2, 3]], TOKENS.float(), TOKENS.bool(), TOKENS[:, :3],
            TOKENS[:0], TOKENS[..., None], TOKENS[0], TOKENS + 1, TOKENS - 1, TOKENS.numpy()]


ROWS = [
    Row(ResidualMLP,
        good=dict(in_features=3, out_features=2, width=4, depth=2, activation="relu",
                  norm=None, branch_scale=1.0, skip=True, init="kaiming_normal", seed=0),
        bad=dict(in_features=positive_int(), out_features=positive_int(), width=positive_int(),
                 depth=positive_int(), activation=bad_choice(),
                 norm=[3, "weird", "", ["batch"], lambda w: w], branch_scale=_branch_scale_bad(),
                 skip=not_bool(), init=[None, 3, "nope", "", nn.Linear, ["kaiming_normal"]],
                 seed=bad_seed()),
        accepted={"norm": ([None, "batch", "layer", nn.BatchNorm1d], "a name or a factory"),
                  "branch_scale": ([0.0, "rezero", "skipinit"], "alpha = 0, or a learnable gate"),
                  "init": ([lambda w: nn.init.zeros_(w), "orthogonal"], "a function or a name"),
                  "seed": ([None], "None draws from the global RNG")}),
    Row(ResidualBlock,
        good=dict(width=4, make_act=nn.ReLU, make_norm=None,
                  make_linear=lambda: nn.Linear(4, 4), branch_scale=1.0, skip=True),
        bad=dict(width=positive_int() + [5], make_act=not_callable() + [lambda: 3],
                 make_norm=[3, "batch", lambda w: 3],
                 make_linear=not_callable() + [lambda: nn.Linear(4, 5), lambda: nn.ReLU(),
                                               lambda: 3],
                 branch_scale=_branch_scale_bad(), skip=not_bool()),
        accepted={"make_norm": ([nn.BatchNorm1d, lambda w: nn.LayerNorm(w)],
                                "a module class is a factory")}),
    Row(Gate, reason="no arguments: alpha starts at 0"),
    Row(fixup_init_, good=dict(model=_net()),
        bad=dict(model=_models_bad() + [_net(branch_scale="rezero")])),
    Row(path_gradients, good=dict(model=_net(), x=_t(5, 3), loss=None),
        bad=dict(model=_models_bad(), x=_batch_bad(3) + [_nan(_t(5, 3))],
                 loss=[3, "f", float, lambda y: y, lambda y: 3.0]),
        accepted={"loss": ([None, lambda y: (y ** 2).mean()], "None is output.sum(); a "
                                                               "scalar loss of the output"),
                  "model": ([_net(branch_scale="rezero")], "a gate is a branch scale")}),
    Row(ResidualMLP.forward, call=lambda **kw: _net()(**kw),
        good=dict(x=_t(5, 3), drop=()),
        bad=dict(x=_batch_bad(3), drop=["3", True, 3, None, {0}, {3}, [2.0], {True}]),
        accepted={"x": ([_nan(_t(5, 3))], NAN_FORWARD),
                  "drop": ([{1}, [1, 2], range(1, 3)], "block numbers in [1, depth]")}),
    Row(ResidualMLP.head, call=lambda **kw: _net().head(**kw),
        good=dict(x_L=_t(5, 4)), bad=dict(x_L=_batch_bad(4))),
    Row(ResidualMLP.stream_at, call=lambda **kw: _net().stream_at(**kw),
        good=dict(x=_t(5, 3), l=1),
        bad=dict(x=_batch_bad(3), l=not_int() + [-1, 3]),
        accepted={"l": ([0, 2], "0 is the stem's output, depth the last block's")}),
    Row(ResidualBlock.branch, call=lambda **kw: _net().block1.branch(**kw),
        good=dict(x=_t(5, 4)), bad=dict(x=_batch_bad(4))),
    Row(ResidualBlock.scaled_branch, call=lambda **kw: _net().block1.scaled_branch(**kw),
        good=dict(x=_t(5, 4)), bad=dict(x=_batch_bad(4))),
    Row(ResidualBlock.forward, call=lambda **kw: _net().block1(**kw),
        good=dict(x=_t(5, 4)), bad=dict(x=_batch_bad(4)),
        accepted={"x": ([_nan(_t(5, 4))], NAN_FORWARD)}),
    Row(Gate.forward, call=lambda **kw: Gate()(**kw),
        good=dict(f=_t(5, 4)),
        bad=dict(f=bad_array(_t(5, 4), torch_only=True, nan=False, ndim=False)
                 + [_t(5, 4).double()]),
        accepted={"f": ([_t(5), _t(2, 3, 4), _nan(_t(5, 4))],
                        "any shape; NaN branch outputs of a diverging run pass through")}),
    Row(TokenTransformer,
        good=dict(vocab_size=8, seq_len=4, d_model=8, nhead=2, dim_feedforward=8,
                  num_layers=1, norm_first=True, init="xavier", seed=0),
        bad=dict(vocab_size=positive_int(), seq_len=positive_int(), d_model=positive_int() + [9],
                 nhead=positive_int() + [3], dim_feedforward=positive_int(),
                 num_layers=positive_int(), norm_first=not_bool(), init=bad_choice("he"),
                 seed=bad_seed()),
        accepted={"init": (["torch"], "nn.Linear's default"),
                  "seed": ([None], "None draws from the global RNG")}),
    Row(TokenTransformer.forward,
        call=lambda **kw: TokenTransformer(8, 4, d_model=8, nhead=2, dim_feedforward=8,
                                           num_layers=1, seed=0)(**kw),
        good=dict(tokens=TOKENS), bad=dict(tokens=_tokens_bad()),
        accepted={"tokens": ([TOKENS.int(), TOKENS[:1]], "any integer dtype; a batch of one")}),
    Row(train_stacked,
        good=dict(models=[_net()], x=_t(5, 3), y=LABELS, steps=1, lr=0.1, optimizer="momentum",
                  normalize_grads=False),
        bad=dict(models=not_module() + [[], [nn.Linear(3, 2)], [_net(), ResidualMLP(3, 2, 4, 3, seed=0)],
                                        [_net(norm="layer")], [_net(), _net(skip=False)]],
                 x=_batch_bad(3),
                 y=[None, LABELS.float(), LABELS[:4], LABELS[None], LABELS + 2, LABELS - 1,
                    LABELS.numpy()],
                 steps=positive_int(), lr=[v for v in positive_real() if v != [0.1]] + [[0.1, 0.2], [-0.1], "fast"],
                 optimizer=bad_choice("rmsprop"), normalize_grads=not_bool()),
        accepted={"lr": ([[0.1], (0.2,), 1], "one rate, or one per model"),
                  "models": ([[_net(norm=nn.BatchNorm1d)], [_net(branch_scale="rezero")]],
                             "torch's batch norm; a learnable gate")}),
    Row(StackedRun, reason="a record that train_stacked returns: its fields are made there",
        run_good=False),
    Row(stochastic_depth, good=dict(input=_t(5, 4), p=0.5, mode="row", training=True,
                                    generator=None),
        bad=dict(input=bad_array(_t(5, 4), torch_only=True, nan=False, empty=False, ndim=False),
                 p=[None, "0.5", True, math.nan, -0.1, 1.5, math.inf],
                 mode=bad_choice("rows"), training=not_bool()),
        accepted={"p": ([0.0, 1.0], "never drop; always drop"),
                  "input": ([_t(5), _t(0, 4), _t(2, 3, 4)], "any shape, empty too, as torchvision's")}),
]
