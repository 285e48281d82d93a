"""Rows for companion.gallery: run (which trains: only its refusals run here, all before
any training), fix_of_kind, the foreign models and token_loss. gallery.BatchFirst is
companion.nets.BatchFirst, whose row is with nets."""
from __future__ import annotations

import math

import torch
from torch import nn

from badcalls import Row, bad_array, bad_choice, bad_seed, positive_int
from companion import gallery

_TOKENS = torch.randint(0, 8, (2, 5), generator=torch.Generator().manual_seed(0))
_LOGITS = torch.randn(2, 5, 8, generator=torch.Generator().manual_seed(1))
_SEQ = torch.randn(2, 5, 1, generator=torch.Generator().manual_seed(2))


def _nan(t: torch.Tensor) -> torch.Tensor:
    t = t.clone()
    t.reshape(-1)[0] = math.nan
    return t


ROWS = [
    Row(gallery.Setup, reason="a record of a run's model, data and training arguments: "
                              "train.train checks them when the run trains", run_good=False),
    Row(gallery.Fix, reason="a record of RUNS, written in the module", run_good=False),
    Row(gallery.BrokenRun, reason="a record of RUNS, written in the module", run_good=False),
    Row(gallery.Result, reason="a record that run returns", run_good=False),
    Row(gallery.run, run_good=False,
        good=dict(name="vanishing", fix=None, every=10),
        bad=dict(name=bad_choice("Vanishing"),
                 fix=[3, True, ["batch norm"], "no such fix", "He init",
                      gallery.RUNS["exploding"].fixes["He init"]],
                 every=positive_int())),
    Row(gallery.fix_of_kind, good=dict(name="vanishing", kind="activation"),
        bad=dict(name=bad_choice("Vanishing"), kind=bad_choice("Activation")),
        accepted=dict(kind=(["clipping"], "a kind that run has no fix of: None"))),
    Row(gallery.foreign_models, good=dict(seed=0), bad=dict(seed=bad_seed())),
    Row(gallery.small_cnn, good=dict(activation=nn.ReLU, depth=2),
        bad=dict(activation=[None, "relu", 3, nn.ReLU(), torch.relu, lambda: 3, nn.Linear],
                 depth=positive_int()),
        accepted=dict(activation=([nn.Tanh, lambda: nn.LeakyReLU(0.1)],
                                  "a module class or a factory of modules"))),
    Row(gallery.LSTMRegressor, good=dict(input_size=1, hidden_size=4, num_layers=1),
        bad=dict(input_size=positive_int(), hidden_size=positive_int(),
                 num_layers=positive_int())),
    Row(gallery.LSTMRegressor.forward,
        call=lambda **kw: gallery.LSTMRegressor(1, 4, 1)(**kw), good=dict(x=_SEQ),
        bad=dict(x=bad_array(_SEQ, nan=False) + [torch.randn(2, 5, 2), _SEQ.double(),
                                                 torch.randn(5, 1), _SEQ.numpy()]),
        accepted=dict(x=([_nan(_SEQ)], "a forward pass, run every step: no NaN scan (NaN "
                                       "in gives NaN out, as torch's modules)"))),
    Row(gallery.EncoderClassifier, good=dict(vocab=8, d_model=8, num_layers=1),
        bad=dict(vocab=positive_int(), d_model=positive_int() + [6],
                 num_layers=positive_int())),
    Row(gallery.EncoderClassifier.forward,
        call=lambda **kw: gallery.EncoderClassifier(8, 8, 1)(**kw), good=dict(tokens=_TOKENS),
        bad=dict(tokens=[None, "t", [1, 2], _TOKENS.numpy(), _TOKENS.float(),
                         _TOKENS.to(torch.complex64), _TOKENS > 3,
                         torch.ones(0, 5, dtype=torch.long), _TOKENS[..., None],
                         torch.full((2, 5), 8), torch.full((2, 5), -1)]),
        accepted=dict(tokens=([_TOKENS[0]], "a single sequence (T,), as torch's encoder"))),
    Row(gallery.token_loss, good=dict(logits=_LOGITS, target=_TOKENS),
        bad=dict(logits=bad_array(_LOGITS, nan=False) + [torch.randn(8), _LOGITS.numpy()],
                 target=[None, "t", _TOKENS.float(), _TOKENS.to(torch.complex64), _TOKENS > 3,
                         _TOKENS[:, :4], torch.full((2, 5), 8), torch.full((2, 5), -1),
                         _TOKENS.numpy(), torch.ones(0, dtype=torch.long)]),
        accepted=dict(logits=([_nan(_LOGITS)], "a diverging run's logits: the loss is NaN "
                                              "and train reports the divergence"))),
]
