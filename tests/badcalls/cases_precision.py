"""Rows for companion.precision: the format facts and fractions, GradScaler and its methods,
MasterWeights, StochasticRounding and stochastic_round."""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

import companion.precision as pr
from badcalls import Row, not_bool, not_real, positive_int, positive_real


def _dtype_bad() -> list:
    """Not a format: other types, other dtypes, other names."""
    return [None, 3, True, np.float16, [torch.float16], torch.int32, torch.complex64,
            torch.float8_e4m3fn, "float8", "", "half", "int32"]


DTYPE_OK = (["float16", "torch.bfloat16", "float64", torch.float64],
            "a name with or without 'torch.'; float64 is a format too (the reference)")


def _values_bad() -> list:
    """Bad ``x`` for the fractions and spacing (a good value is a float tensor or array)."""
    return [None, "x", 3.0, [1.0, 2.0], torch.ones(2, dtype=torch.int64),
            torch.ones(2, dtype=torch.bool), torch.ones(2, dtype=torch.complex64),
            np.ones(2, dtype=np.int64)]


VALUES_OK = ([np.array([1e-9, 1.0]), torch.zeros(0), torch.tensor([math.inf, math.nan, 1.0]),
              torch.ones(2, 3, dtype=torch.bfloat16)],
             "a numpy array; an empty tensor (a fraction of nothing is 0.0); inf and NaN "
             "(a diverging run's gradients: not counted); any shape and float dtype")


def _fraction_row(fn) -> Row:
    return Row(fn, good=dict(x=torch.tensor([1e-9, 1e-6, 1.0, 1e6]), dtype=torch.float16,
                             scale=1.0),
               bad=dict(x=_values_bad(), dtype=_dtype_bad(),
                        scale=positive_real() + [torch.ones(2), torch.tensor(2.0)]),
               accepted={"x": VALUES_OK, "dtype": DTYPE_OK,
                         "scale": ([2 ** 16, 1e-3], "an int; a scale below 1")})


def _param(dtype=torch.float16):
    return nn.Parameter(torch.ones(3, dtype=dtype))


def _params_bad() -> list:
    return [None, 3, "w", torch.ones(2, dtype=torch.float16), nn.Linear(2, 2), [],
            [torch.ones(2, dtype=torch.float16), "w"], [torch.ones(2, dtype=torch.int64)],
            [torch.ones(2, dtype=torch.complex64)],
            [torch.ones(2, dtype=torch.float64)]]   # float32 "masters" would round it down


def _params_ok() -> tuple:
    return ([(p for p in [_param()]), [_param(torch.bfloat16), _param()], [_param(torch.float32)]],
            "model.parameters() (a generator); mixed low formats; float32 (copied as is)")


def _generator_bad() -> list:
    return [3, "g", True, np.random.default_rng(0), torch.Generator]


GENERATOR_OK = ([None, torch.Generator().manual_seed(0)], "torch's global generator, or one")


def _optimizer_bad() -> list:
    return [None, "opt", 3, nn.Linear(2, 2), [_param(torch.float32)], torch.optim.SGD]


def _scaled():
    """A scaler after scale(loss).backward(), and an optimizer whose parameters have the
    scaled gradients."""
    w = nn.Parameter(torch.ones(3))
    opt = torch.optim.SGD([w], lr=0.1)
    scaler = pr.GradScaler()
    scaler.scale((w * 2).sum()).backward()
    return scaler, opt


def _unscale_(**kw):
    scaler, _ = _scaled()
    return scaler.unscale_(**kw)


def _step(**kw):
    scaler, _ = _scaled()
    return scaler.step(**kw)


def _update(**kw):
    scaler, opt = _scaled()
    scaler.step(opt)
    return scaler.update(**kw)


def _state(**changes) -> dict:
    state = dict(scale=1024.0, growth_factor=2.0, backoff_factor=0.5, growth_interval=100,
                 _growth_tracker=3)
    state.update(changes)
    return state


ROWS = [
    Row(pr.Format, reason="the record format_facts returns (a NamedTuple); its fields are "
                          "computed, not taken from the caller", run_good=False),
    Row(pr.format_facts, good=dict(dtype=torch.bfloat16), bad=dict(dtype=_dtype_bad()),
        accepted={"dtype": DTYPE_OK}),
    Row(pr.spacing, good=dict(x=torch.tensor([1.0, 1e-6]), dtype=torch.float16),
        bad=dict(x=_values_bad(), dtype=_dtype_bad()),
        accepted={"x": ([np.array([1.0]), torch.zeros(0), torch.tensor(3.0)],
                        "a numpy array, an empty tensor, a 0-d tensor"),
                  "dtype": DTYPE_OK}),
    _fraction_row(pr.lost_fraction),
    _fraction_row(pr.subnormal_fraction),
    _fraction_row(pr.overflow_fraction),
    Row(pr.rounded_away_fraction,
        good=dict(update=torch.tensor([1e-3, 1e-2, -1e-4]), weight=torch.ones(3),
                  dtype=torch.bfloat16),
        bad=dict(update=_values_bad(),
                 weight=_values_bad() + [torch.ones(4), torch.ones(2)],
                 dtype=_dtype_bad()),
        accepted={"weight": ([torch.tensor(1.0), torch.ones(1), np.ones(3)],
                             "a weight that broadcasts to the update's shape; numpy"),
                  "update": ([torch.zeros(3), torch.tensor([math.nan, 1.0, 0.0])],
                             "zero and NaN updates are not counted"),
                  "dtype": DTYPE_OK}),
    Row(pr.GradScaler,
        good=dict(device="cpu", init_scale=2.0 ** 16, growth_factor=2.0, backoff_factor=0.5,
                  growth_interval=2000, enabled=True),
        bad=dict(device=[None, 3, ["cpu"], torch.float16],
                 init_scale=positive_real() + [torch.tensor(2.0)],
                 growth_factor=not_real() + [1.0, 0.5, 0.0, -2.0, math.inf],
                 backoff_factor=not_real() + [0.0, 1.0, 1.5, -0.5],
                 growth_interval=positive_int(), enabled=not_bool()),
        accepted={"device": (["cuda", torch.device("cpu")],
                             "torch's signature: the scale lives on the device of the first "
                             "tensor scaled"),
                  "init_scale": ([1, 0.5, 1000.1], "an int; below 1; not a power of two")}),
    Row(pr.GradScaler.scale, call=lambda **kw: pr.GradScaler().scale(**kw),
        good=dict(outputs=torch.tensor(2.0)),
        bad=dict(outputs=[None, 2.0, "loss", np.ones(2), [torch.ones(1), "x"],
                          {"loss": torch.ones(1)}]),
        accepted={"outputs": ([[torch.ones(1), torch.ones(2)], (torch.ones(1),),
                               [[torch.ones(1)], (torch.ones(2),)]],
                              "a list or tuple of tensors, nested, as torch's")}),
    Row(pr.GradScaler.unscale_, call=_unscale_, good=dict(optimizer=_scaled()[1]),
        bad=dict(optimizer=_optimizer_bad())),
    Row(pr.GradScaler.step, call=_step, good=dict(optimizer=_scaled()[1]),
        bad=dict(optimizer=_optimizer_bad())),
    Row(pr.GradScaler.update, call=_update, good=dict(new_scale=None),
        bad=dict(new_scale=["2", True, [2.0], math.nan, 0.0, -1.0, math.inf, torch.ones(2),
                            torch.tensor(0.0), torch.tensor(math.inf)]),
        accepted={"new_scale": ([1024.0, 3, torch.tensor(300.0)],
                                "a number or a one-element tensor, as torch's")}),
    Row(pr.GradScaler.load_state_dict, call=lambda **kw: pr.GradScaler().load_state_dict(**kw),
        good=dict(state_dict=_state()),
        bad=dict(state_dict=[None, "state", [1.0], {"scale": 1024.0}, _state(scale="1"),
                             _state(scale=-1.0), _state(scale=math.nan),
                             _state(growth_factor=0.5), _state(backoff_factor=1.0),
                             _state(growth_interval=0), _state(growth_interval=2.5),
                             _state(_growth_tracker=-1)]),
        mention={"state_dict": "state_dict"},
        accepted={"state_dict": ([torch.amp.GradScaler("cpu").state_dict(),
                                  _state(extra=1)],
                                 "torch's GradScaler state_dict; extra keys ignored, as torch")}),
    Row(pr.MasterWeights, good=dict(params=[_param()]), bad=dict(params=_params_bad()),
        accepted={"params": _params_ok()}),
    Row(pr.StochasticRounding, good=dict(params=[_param(torch.bfloat16)], generator=None),
        bad=dict(params=_params_bad(), generator=_generator_bad()),
        accepted={"params": _params_ok(), "generator": GENERATOR_OK}),
    Row(pr.stochastic_round,
        good=dict(x=torch.tensor([1.001, 2.5]), dtype=torch.bfloat16, generator=None),
        bad=dict(x=_values_bad() + [np.ones(2)], dtype=_dtype_bad(), generator=_generator_bad()),
        accepted={"x": ([torch.zeros(0), torch.tensor(1.001, dtype=torch.float64),
                         torch.tensor([math.inf, math.nan])],
                        "an empty or 0-d tensor; inf and NaN round as .to(dtype)"),
                  "dtype": DTYPE_OK, "generator": GENERATOR_OK}),
]
