"""Tests of companion.precision.

References, by part:

* formats: ``torch.finfo`` and the numbers built from their IEEE bit patterns with
  ``Tensor.view`` (smallest subnormal = pattern 1, ...); ``spacing`` against
  ``torch.nextafter`` in the format itself;
* fractions: the cast itself -- what ``Tensor.to(dtype)`` does to each value -- on values
  spread log-uniformly over every edge (underflow, subnormals, overflow, half an ulp),
  and on the edge values one at a time;
* GradScaler: ``torch.amp.GradScaler("cpu")`` run on a copy of the same model and data,
  decision for decision (scale, skipped steps, parameters and unscaled gradients bit for
  bit, state_dict, the exception raised for each misuse);
* MasterWeights and StochasticRounding: a float64 copy of the same training run, with the
  tolerance taken from the format's eps; ``stochastic_round``: ``torch.nextafter`` for
  the two neighbours and a binomial bound (seeded) for the mean.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Optional

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn import utils as tu

import companion.clip as cc
from companion import precision as pr

pytestmark = pytest.mark.usefixtures("one_thread")

LOW = [torch.float16, torch.bfloat16]
FLOATS = [torch.float32, torch.float16, torch.bfloat16]
INT_OF = {torch.float64: torch.int64, torch.float32: torch.int32,
          torch.float16: torch.int16, torch.bfloat16: torch.int16}
INF = math.inf


def _name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _from_bits(pattern: int, dtype: torch.dtype) -> float:
    """The number whose IEEE bit pattern is the integer ``pattern``."""
    return torch.tensor([pattern], dtype=INT_OF[dtype]).view(dtype).item()


def _widths(dtype: torch.dtype) -> tuple[int, int]:
    """(exponent bits, mantissa bits), read from torch.finfo: eps = 2**-m, bits = 1 + e + m."""
    fi = torch.finfo(dtype)
    m = -int(math.log2(fi.eps))
    return fi.bits - 1 - m, m


def _next_up(r: torch.Tensor) -> torch.Tensor:
    return torch.nextafter(r, torch.full_like(r, INF))


def _next_down(r: torch.Tensor) -> torch.Tensor:
    return torch.nextafter(r, torch.full_like(r, -INF))


def _log_uniform(n: int, lo: float, hi: float, seed: int, dtype=torch.float64) -> torch.Tensor:
    """``n`` values with magnitudes log-uniform in [2**lo, 2**hi] and random signs."""
    gen = torch.Generator().manual_seed(seed)
    e = lo + (hi - lo) * torch.rand(n, generator=gen, dtype=torch.float64)
    sign = torch.where(torch.rand(n, generator=gen) < 0.5, -1.0, 1.0).double()
    return (sign * torch.exp2(e)).to(dtype)


# ============================================================================ 1. formats
@pytest.mark.parametrize("dtype", FLOATS + [torch.float64])
def test_format_facts_match_finfo_and_bit_patterns(dtype):
    """References: torch.finfo (bits, max, smallest_normal == tiny, eps) and the values built
    from their bit patterns: smallest subnormal = 0x...01, smallest normal = 1 << m,
    largest = exponent 2**e - 2 with all mantissa bits set, 1 + eps = 1's pattern + 1,
    1.0 = bias << m."""
    f = pr.format_facts(dtype)
    fi = torch.finfo(dtype)
    e, m = _widths(dtype)
    assert f.name == _name(dtype)
    assert (f.bits, f.exponent_bits, f.mantissa_bits) == (fi.bits, e, m)
    assert f.bias == 2 ** (e - 1) - 1 and _from_bits(f.bias << m, dtype) == 1.0
    assert f.largest == fi.max == _from_bits(((2 ** e - 2) << m) | (2 ** m - 1), dtype)
    assert f.smallest_normal == fi.smallest_normal == fi.tiny == _from_bits(1 << m, dtype)
    assert f.smallest_subnormal == _from_bits(1, dtype) > 0
    assert f.eps == fi.eps and 1.0 + f.eps == _from_bits((f.bias << m) | 1, dtype)
    # the next pattern after the largest finite one is inf: the table's ends are the format's
    assert _from_bits(((2 ** e - 1) << m), dtype) == INF


@pytest.mark.parametrize("name", pr.FORMATS)
def test_format_names_are_the_dtypes(name):
    """Reference: the torch dtype of the same name (``getattr(torch, name)``)."""
    assert name in ("float32", "float16", "bfloat16")
    assert pr.format_facts(name) == pr.format_facts(getattr(torch, name))
    assert pr.format_facts(name).name == name


@pytest.mark.parametrize("dtype", FLOATS + [torch.float64])
def test_spacing_is_the_gap_to_the_next_number_up(dtype):
    """Reference: torch.nextafter in ``dtype``: spacing(x) = nextafter(r, inf) - r with
    r = |x| rounded to dtype, on magnitudes log-uniform over the whole range (subnormals
    and 0 included; values that would round to the largest finite number or overflow are
    left out: nextafter gives inf there)."""
    f = pr.format_facts(dtype)
    lo = math.log2(f.smallest_subnormal) - 2
    hi = math.log2(f.largest) - 1
    x = torch.cat([_log_uniform(4000, lo, hi, seed=1),
                   torch.tensor([0.0, 1.0, -1.0, f.smallest_subnormal, f.smallest_normal,
                                 f.smallest_normal * (1 - f.eps), 2.0 ** 10, 0.75,
                                 2 - f.eps / 4, f.smallest_normal - f.smallest_subnormal / 4],
                                dtype=torch.float64)])  # the last two round up a binade
    r = x.abs().to(dtype)
    expected = _next_up(r).double() - r.double()
    got = pr.spacing(x, dtype)
    assert got.dtype == torch.float64 and got.shape == x.shape
    bad = (got != expected).nonzero().flatten()
    assert bad.numel() == 0, [(x[i].item(), got[i].item(), expected[i].item()) for i in bad[:5]]
    # closed forms at a few points: eps at 1, the subnormal step below the normals
    one = pr.spacing(torch.tensor([1.0, 0.0]), dtype)
    assert one.tolist() == [f.eps, f.smallest_subnormal]


@pytest.mark.parametrize("dtype", FLOATS)
def test_spacing_at_the_top_of_the_range(dtype):
    """References: the closed form 2**(bias - m) at the largest finite number (the spacing
    of its binade; torch.nextafter and numpy.spacing say inf there, the next number up
    being infinite), and numpy.spacing in the same format (float16, float32; bfloat16 by
    the same rule) for values that round to inf and for NaN: NaN, not a finite number."""
    f = pr.format_facts(dtype)
    assert pr.spacing(torch.tensor([f.largest], dtype=torch.float64), dtype).item() == 2.0 ** (
        f.bias - f.mantissa_bits)
    x = torch.tensor([f.largest * 2, INF, -INF, math.nan], dtype=torch.float64)
    if dtype != torch.bfloat16:
        np_dtype = np.float16 if dtype == torch.float16 else np.float32
        with np.errstate(over="ignore", invalid="ignore"):
            expected = np.spacing(np.abs(x.numpy().astype(np_dtype)))
        assert np.isnan(expected).all()
    got = pr.spacing(x, dtype)
    assert got.isnan().all(), got.tolist()


def test_spacing_of_a_float32_tensor_equals_spacing_of_its_float64_copy():
    """Reference: the same values in float64 (the input's dtype does not change the answer)."""
    x = _log_uniform(500, -30, 15, seed=2, dtype=torch.float32)
    for dtype in LOW:
        assert torch.equal(pr.spacing(x, dtype), pr.spacing(x.double(), dtype))


# ========================================================================== 2. fractions
def _cast(x: torch.Tensor, dtype: torch.dtype, scale: float = 1.0) -> torch.Tensor:
    return (x.double() * scale).to(dtype)


def _share(mask: torch.Tensor, among: torch.Tensor) -> float:
    """The fraction of the values selected by ``among`` for which ``mask`` holds."""
    return mask[among].sum().item() / among.sum().item()


def ref_lost(x, dtype, scale=1.0):
    return _share(_cast(x, dtype, scale) == 0, x != 0)


def ref_subnormal(x, dtype, scale=1.0):
    c = _cast(x, dtype, scale)
    return _share((c != 0) & (c.double().abs() < torch.finfo(dtype).smallest_normal), x != 0)


def ref_overflow(x, dtype, scale=1.0):
    return _share(_cast(x, dtype, scale).isinf(), x != 0)


def ref_rounded_away(u, w, dtype):
    w_d = w.to(dtype)
    return _share((w_d.double() + u.double()).to(dtype) == w_d, u != 0)


FRACTIONS = [(pr.lost_fraction, ref_lost), (pr.subnormal_fraction, ref_subnormal),
             (pr.overflow_fraction, ref_overflow)]


def _spread(dtype: torch.dtype, n: int = 20000, seed: int = 0) -> torch.Tensor:
    """float32 values whose magnitudes run log-uniformly from well below the format's
    smallest subnormal to above its largest finite number (within float32's range)."""
    f = pr.format_facts(dtype)
    lo = max(math.log2(f.smallest_subnormal) - 10, -149)
    hi = min(math.log2(f.largest) + 10, 128)
    big = torch.finfo(torch.float32).max
    return _log_uniform(n, lo, hi, seed).clamp(-big, big).to(torch.float32)


@pytest.mark.parametrize("dtype", LOW)
@pytest.mark.parametrize("scale", [1.0, 2.0 ** 8, 2.0 ** -6, 1000.0])
@pytest.mark.parametrize("fraction,reference", FRACTIONS, ids=["lost", "subnormal", "overflow"])
def test_fractions_match_the_cast(fraction, reference, scale, dtype):
    """Reference: ``(x.double() * scale).to(dtype)`` on float32 values log-uniform across
    the format's whole range and beyond: the fraction of nonzero values that become 0,
    land on a subnormal, or become inf."""
    x = _spread(dtype)
    expected = reference(x, dtype, scale)
    assert expected < 1
    assert fraction(x, dtype, scale=scale) == pytest.approx(expected, abs=0.1 / x.numel())


def _edges(dtype: torch.dtype) -> list[float]:
    """The values on either side of each edge of ``dtype``: half the smallest subnormal (a
    tie: rounds to 0), the largest subnormal and the numbers that round up to the
    smallest normal, the largest finite number and the halfway point above it (a tie:
    rounds to inf). For the 16-bit formats each is a float32, so that the cast from
    float64 rounds once (torch casts float64 to float16/bfloat16 through float32)."""
    f = pr.format_facts(dtype)
    grid = torch.float64 if dtype == torch.float32 else torch.float32
    half_tiny = f.smallest_subnormal / 2
    largest_subnormal = f.smallest_normal - f.smallest_subnormal
    overflow_tie = f.largest + _top_spacing(f) / 2
    rounds_up = f.smallest_normal - f.smallest_subnormal / 2   # a tie: to the even normal
    points = torch.tensor([half_tiny, largest_subnormal, rounds_up, f.smallest_normal,
                           f.largest, overflow_tie], dtype=grid)
    out = torch.cat([points, _next_up(points), _next_down(points)])
    out = out[out.isfinite() & (out > 0)]
    return sorted(set(out.double().tolist()))


def _top_spacing(f) -> float:
    """The gap between the largest finite number and the one before it."""
    return f.largest * f.eps / (2 - f.eps)


@pytest.mark.parametrize("dtype", FLOATS)
def test_fractions_at_the_edges_one_value_at_a_time(dtype):
    """Reference: the cast of each edge value alone (a one-element tensor gives 0.0 or
    1.0), both signs. Catches thresholds on the unrounded value: a value just below the
    smallest normal that rounds up to it is normal, half the smallest subnormal is lost
    (ties to even), and float16 overflows from 65520 = 65504 + half its spacing, not from
    65504."""
    for v in _edges(dtype):
        for x in (torch.tensor([v], dtype=torch.float64), torch.tensor([-v], dtype=torch.float64)):
            for fraction, reference in FRACTIONS:
                assert fraction(x, dtype) == reference(x, dtype), (fraction.__name__, v)
    if dtype == torch.float16:
        assert pr.overflow_fraction(torch.tensor([65519.0, 65520.0]), dtype) == 0.5
        assert pr.lost_fraction(torch.tensor([2.0 ** -25, 2.0 ** -25 * 1.0001]), dtype) == 0.5


@pytest.mark.parametrize("dtype", LOW)
def test_rounded_away_fraction_matches_the_cast(dtype):
    """Reference: ``(w_d.double() + u.double()).to(dtype) == w_d`` with ``w_d`` the weight
    in ``dtype``, over nonzero updates. Weights log-uniform in [2**-10, 2**10] (about 1 in
    1000 of them a power of two in float16, where the spacing below is half the spacing
    above); updates log-uniform from 2**-14 to 2**-2 of the weight, either sign, so about
    half are lost. Updates are kept to 8 significant bits so that w_d + u is exact in
    float32 and the reference cast rounds once."""
    w = _log_uniform(20000, -10, 10, seed=3, dtype=torch.float32)
    r = _log_uniform(20000, -14, -2, seed=4, dtype=torch.float32)
    u = (w.to(dtype).float() * r).to(torch.bfloat16).float()
    u[::50] = 0.0  # zero updates are not counted
    expected = ref_rounded_away(u, w, dtype)
    assert 0.2 < expected < 0.8
    assert pr.rounded_away_fraction(u, w, dtype) == pytest.approx(expected, abs=0.1 / u.numel())


@pytest.mark.parametrize("dtype", LOW)
def test_rounded_away_at_the_edges(dtype):
    """Reference: the cast, on the edges of round to nearest at w = 1 (spacing eps above,
    eps/2 below): +eps/2 is a tie and goes to the even neighbour 1 (lost), -eps/4 likewise;
    -3 eps/8 is nearer 1 - eps/2 (kept, although |u| < eps/2), and +eps/2 at 1 + eps ties
    to 1 + 2 eps (kept)."""
    eps = pr.format_facts(dtype).eps
    cases = [(1.0, eps / 2, True), (1.0, -eps / 4, True), (1.0, -3 * eps / 8, False),
             (1.0, eps / 2 * 1.01, False), (1.0 + eps, eps / 2, False), (1.0, eps * 0.49, True)]
    for w, u, lost in cases:
        uu, ww = torch.tensor([u]), torch.tensor([w])
        assert ref_rounded_away(uu, ww, dtype) == float(lost), (w, u)  # the reference agrees
        assert pr.rounded_away_fraction(uu, ww, dtype) == float(lost), (w, u)


@pytest.mark.parametrize("dtype", LOW)
def test_a_power_of_two_scale_shifts_the_fractions_monotonically(dtype):
    """Properties: scaling by 2**k is exact, so lost_fraction(x, scale=2**k) equals
    lost_fraction(x * 2**k); as k grows the lost fraction never rises and the overflow
    fraction never falls; with no scale at all the four classes (lost, subnormal,
    normal, overflow -- normal counted here from the cast) add up to 1."""
    x = _spread(dtype, n=5000, seed=5)
    lost, over = [], []
    for k in range(-8, 25, 4):
        s = 2.0 ** k
        if dtype == torch.float16:  # x * 2**k stays inside float32's range
            assert pr.lost_fraction(x, dtype, scale=s) == pytest.approx(
                pr.lost_fraction(x * s, dtype), abs=1e-12)
        lost.append(pr.lost_fraction(x, dtype, scale=s))
        over.append(pr.overflow_fraction(x, dtype, scale=s))
    assert lost == sorted(lost, reverse=True) and lost[0] > lost[-1]
    assert over == sorted(over) and over[-1] > over[0]
    c = _cast(x, dtype).double().abs()
    normal = ((c >= torch.finfo(dtype).smallest_normal) & c.isfinite()).double().mean().item()
    total = (pr.lost_fraction(x, dtype) + pr.subnormal_fraction(x, dtype)
             + pr.overflow_fraction(x, dtype) + normal)
    assert total == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("fraction,reference", FRACTIONS, ids=["lost", "subnormal", "overflow"])
def test_zeros_and_nonfinite_values_are_not_counted(fraction, reference):
    """Reference: the cast, over the nonzero finite values only (the same set for all
    three fractions, so that lost + subnormal + normal + overflow = 1). Zeros, infs and
    NaNs added to a tensor do not change its fraction; an all-zero or empty tensor has
    no values to count and gives 0.0."""
    x = torch.tensor([1e-9, 1e-6, 1.0, 1e6, -3e-8, 7e4])
    expected = reference(x, torch.float16)
    assert expected > 0
    assert fraction(x, torch.float16) == expected
    padded = torch.cat([x, torch.zeros(4)])
    assert fraction(padded, torch.float16) == expected, "zeros counted"
    padded = torch.cat([x, torch.tensor([INF, -INF, math.nan])])
    assert fraction(padded, torch.float16) == expected, "inf/NaN counted"
    assert fraction(torch.zeros(10), torch.float16) == 0.0
    assert fraction(torch.zeros(0), torch.float16) == 0.0


def test_rounded_away_fraction_of_no_updates_is_zero():
    """Reference: the definition (a fraction of the nonzero updates): zero updates, an
    empty tensor and inf/NaN updates are not counted."""
    w = torch.ones(3)
    assert pr.rounded_away_fraction(torch.zeros(3), w, torch.float16) == 0.0
    assert pr.rounded_away_fraction(torch.zeros(0), torch.ones(0), torch.float16) == 0.0
    u = torch.tensor([1e-5, 0.0, math.nan])
    assert pr.rounded_away_fraction(u, w, torch.float16) == 1.0


# ========================================================================= 3. GradScaler
def _net(dtype: torch.dtype = torch.float32) -> nn.Module:
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 4)).to(dtype)


def _batches(steps: int, size: float = 4.0) -> list:
    gen = torch.Generator().manual_seed(1)
    return [(torch.randn(32, 8, generator=gen) * size, torch.randn(32, 4, generator=gen) * size)
            for _ in range(steps)]


def _loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, master: bool) -> torch.Tensor:
    """A summed loss, so that the gradients of the first steps overflow at 2**16."""
    if master:  # a float16 model, no autocast
        return F.mse_loss(model(x.half()).float(), y, reduction="sum")
    with torch.autocast("cpu", dtype=torch.float16):
        out = model(x)
    return F.mse_loss(out.float(), y, reduction="sum")


@dataclass
class Record:
    scale: float
    stepped: tuple            # per optimizer: did optimizer.step() run?
    found_inf: Optional[bool]  # our scaler's own account of the last step() (None for torch's)
    params: torch.Tensor      # all parameters, flattened (the master copies with master=True)
    state: dict
    grads: Optional[list]     # the gradients right after unscale_ (with unscale=True)


def _counter(opt) -> list:
    """A list that grows by one each time ``opt.step()`` really runs."""
    calls: list = []
    opt.register_step_post_hook(lambda *_: calls.append(1))
    return calls


def _run(make_scaler, *, steps: int = 12, optimizers: int = 1, master: bool = False,
         poison: Optional[dict] = None, unscale: bool = False, clip=None,
         reload_at: Optional[int] = None, new_scale: Optional[dict] = None,
         size: float = 4.0, lr: float = 1e-4, poisoned: int = -1) -> list[Record]:
    """Train a fresh copy of the same network on the same batches with the scaler that
    ``make_scaler()`` builds, and record every step.

    ``master``: a float16 model with float32 MasterWeights (otherwise a float32 model under
    float16 autocast); ``optimizers=2``: SGD on the first layer, Adam on the second, one
    scaler; ``poison``: {step: value} written into the gradient of parameter ``poisoned``
    after backward (by default the last, which belongs to the last optimizer);
    ``unscale``: call unscale_ first and record the gradients, then ``clip(params, 1.0)``
    if given; ``reload_at``: after that step replace the scaler by a new one loaded from
    its state_dict; ``new_scale``: {step: value} passed to update()."""
    model = _net()
    if master:
        model = model.half()
        mw = pr.MasterWeights(model.parameters())
        params = list(mw.params)
    else:
        params = list(model.parameters())
    if optimizers == 1:
        opts = [torch.optim.SGD(params, lr=lr, momentum=0.9)]
    else:
        opts = [torch.optim.SGD(params[:2], lr=lr), torch.optim.Adam(params[2:], lr=lr)]
    counters = [_counter(o) for o in opts]
    scaler = make_scaler()
    records = []
    for t, (x, y) in enumerate(_batches(steps, size)):
        model.zero_grad(set_to_none=True)
        for o in opts:
            o.zero_grad(set_to_none=True)
        scaler.scale(_loss(model, x, y, master=master)).backward()
        if master:
            mw.grads_to_master()
        if poison and t in poison:
            params[poisoned].grad.view(-1)[0] = poison[t]
        grads = None
        if unscale:
            for o in opts:
                scaler.unscale_(o)
            grads = [p.grad.clone() for p in params]
            if clip is not None:
                clip(params, 1.0)
        before = [len(c) for c in counters]
        for o in opts:
            scaler.step(o)
        stepped = tuple(len(c) > b for c, b in zip(counters, before))
        found_inf = scaler.found_inf if isinstance(scaler, pr.GradScaler) else None
        if new_scale and t in new_scale:
            scaler.update(new_scale[t])
        else:
            scaler.update()
        if master:
            mw.master_to_model()
        flat = torch.cat([p.detach().flatten().float() for p in params])
        records.append(Record(scaler.get_scale(), stepped, found_inf, flat,
                              scaler.state_dict(), grads))
        if reload_at == t:
            state = scaler.state_dict()
            scaler = make_scaler()
            scaler.load_state_dict(state)
    return records


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Bit for bit, NaN where NaN."""
    return a.dtype == b.dtype and a.shape == b.shape and bool(
        ((a == b) | (a.isnan() & b.isnan())).all())


def assert_same_run(ours: list[Record], ref: list[Record]) -> None:
    """Our scaler made torch's decisions at every step: the same scale, the same skipped
    steps (our found_inf says whether any optimizer skipped), bit-identical parameters and
    unscaled gradients, the same state_dict."""
    assert len(ours) == len(ref)
    for t, (a, b) in enumerate(zip(ours, ref)):
        where = f"step {t}"
        assert a.scale == b.scale, f"{where}: scale {a.scale!r}, torch's {b.scale!r}"
        assert a.stepped == b.stepped, f"{where}: optimizer ran {a.stepped}, torch's {b.stepped}"
        assert a.found_inf == (not all(a.stepped)), f"{where}: found_inf {a.found_inf}"
        if b.grads is not None:
            for i, (ga, gb) in enumerate(zip(a.grads, b.grads)):
                assert _same(ga, gb), f"{where}: unscaled gradient {i} differs from torch's"
        assert _same(a.params, b.params), (
            f"{where}: parameters differ from torch's by up to "
            f"{(a.params - b.params).abs().max().item():.3g}")
        assert a.state == b.state, f"{where}: state_dict {a.state}, torch's {b.state}"


def _both(**scaler_kwargs):
    """Factories for torch's scaler and ours with the same arguments."""
    return (lambda: torch.amp.GradScaler("cpu", **scaler_kwargs),
            lambda: pr.GradScaler("cpu", **scaler_kwargs))


def _skips(records: list[Record]) -> int:
    return sum(not all(r.stepped) for r in records)


@pytest.mark.parametrize("master", [False, True], ids=["autocast", "master_weights"])
def test_grad_scaler_defaults_decide_like_torch(master):
    """Reference: torch.amp.GradScaler("cpu") with its defaults on a copy of the run (float16
    autocast, or a float16 model with MasterWeights): the first steps overflow at 2**16
    and back off, then steps are taken; gradients compared right after unscale_."""
    theirs, ours = _both()
    ref = _run(theirs, master=master, unscale=True)
    assert _skips(ref) >= 3 and _skips(ref) < len(ref)  # the run backs off, then trains
    assert_same_run(_run(ours, master=master, unscale=True), ref)


@pytest.mark.parametrize("kwargs", [
    dict(init_scale=2.0 ** 8, growth_interval=2),
    dict(init_scale=2.0 ** 8, growth_factor=1.5, backoff_factor=0.25, growth_interval=1),
    dict(init_scale=1000.1, growth_factor=1.1, backoff_factor=0.3, growth_interval=1),
], ids=["growth", "1.5/0.25", "1.1/0.3"])
def test_grad_scaler_growth_and_backoff_like_torch(kwargs):
    """Reference: torch's scaler with the same arguments. A scale that grows every step or
    two, then backs off on overflow; with factors that are not powers of two the scale is
    rounded to float32 after each product (torch computes scale * factor in float64 and
    stores a float32), and the unscaled gradients are g * float32(1 / scale) -- both must
    match bit for bit."""
    theirs, ours = _both(**kwargs)
    ref = _run(theirs, steps=16, unscale=True)
    scales = [r.scale for r in ref]
    assert any(b > a for a, b in zip(scales, scales[1:])), scales  # growth happened
    assert any(b < a for a, b in zip(scales, scales[1:])), scales  # and backoff
    assert_same_run(_run(ours, steps=16, unscale=True), ref)


def test_grad_scaler_growth_that_would_overflow_float32_is_not_taken():
    """Reference: torch's scaler at init_scale 2**127 with growth every step: 2**128 is inf
    in float32, so torch keeps the scale (and resets its growth tracker), without a
    warning."""
    theirs, ours = _both(init_scale=2.0 ** 127, growth_interval=1)
    make = {}
    for name, factory in (("torch", theirs), ("ours", ours)):
        p = nn.Parameter(torch.ones(3))
        opt = torch.optim.SGD([p], lr=0.0)
        scaler = factory()
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # nothing to warn about: the growth is not taken
            for _ in range(2):
                scaler.scale((p * 1e-30).sum()).backward()
                scaler.step(opt)
                scaler.update()
                p.grad = None
        make[name] = scaler.state_dict()
    assert make["torch"]["scale"] == 2.0 ** 127
    assert make["ours"] == make["torch"]


@pytest.mark.parametrize("master", [False, True], ids=["autocast", "master_weights"])
def test_grad_scaler_skips_poisoned_steps_like_torch(master):
    """Reference: torch's scaler, with inf, NaN and -inf written into a gradient at chosen
    steps (a scale small enough that nothing overflows by itself): those steps and only
    those are skipped, and the scale backs off after each."""
    theirs, ours = _both(init_scale=4.0, growth_interval=3)
    poison = {2: INF, 3: math.nan, 7: -INF}
    ref = _run(theirs, master=master, poison=poison, unscale=True)
    assert [t for t, r in enumerate(ref) if not r.stepped[0]] == sorted(poison)
    assert_same_run(_run(ours, master=master, poison=poison, unscale=True), ref)


@pytest.mark.parametrize("poisoned,stepped", [(-1, (True, False)), (0, (False, True))],
                         ids=["second", "first"])
def test_two_optimizers_share_one_scaler_like_torch(poisoned, stepped):
    """Reference: torch's scaler stepping SGD (first layer) and Adam (second) in turn: an
    inf in one optimizer's gradient skips that optimizer's step only, and update() backs
    off once for the iteration (our found_inf is True for it)."""
    theirs, ours = _both(init_scale=4.0, growth_interval=2)
    poison = {4: INF}
    ref = _run(theirs, optimizers=2, poison=poison, unscale=True, poisoned=poisoned)
    assert ref[4].stepped == stepped
    assert ref[4].scale < ref[3].scale
    assert_same_run(_run(ours, optimizers=2, poison=poison, unscale=True, poisoned=poisoned),
                    ref)
    assert_same_run(_run(ours, optimizers=2, poison=poison, poisoned=poisoned),
                    _run(theirs, optimizers=2, poison=poison, poisoned=poisoned))


def test_disabled_scaler_passes_through_like_torch():
    """Reference: torch's scaler with enabled=False: scale() returns its argument itself,
    get_scale() is 1.0, every step is taken, update/unscale_ do nothing, state_dict() is
    {} and load_state_dict does nothing."""
    theirs, ours = _both(enabled=False)
    ref = _run(theirs, unscale=True, size=0.1)
    got = _run(ours, unscale=True, size=0.1)
    assert all(r.stepped == (True,) and r.scale == 1.0 for r in ref)
    assert [r.scale for r in got] == [1.0] * len(got)
    for a, b in zip(got, ref):
        assert a.stepped == b.stepped and a.state == b.state == {} and _same(a.params, b.params)
    ours_scaler, their_scaler = ours(), theirs()
    assert ours_scaler.is_enabled() is their_scaler.is_enabled() is False
    loss = torch.tensor(3.0)
    assert ours_scaler.scale(loss) is loss
    ours_scaler.load_state_dict({"scale": 8.0})
    assert ours_scaler.get_scale() == 1.0


def test_update_with_a_new_scale_like_torch():
    """Reference: torch's scaler given update(new_scale) with a float (1024.0) and a tensor
    (300.0, not a power of two): the scale is set, not derived; the growth tracker is left
    as it was."""
    theirs, ours = _both(init_scale=64.0, growth_interval=3)
    new_scale = {4: 1024.0, 8: torch.tensor(300.0)}
    ref = _run(theirs, new_scale=new_scale, unscale=True)
    assert ref[4].scale == 1024.0 and ref[8].scale == 300.0
    assert_same_run(_run(ours, new_scale=new_scale, unscale=True), ref)


def test_state_dict_round_trip_mid_run_continues_identically():
    """Reference: torch's scaler running straight through. Ours is saved after step 5
    (mid growth interval), a new scaler loads the state_dict and carries on: every later
    decision is the uninterrupted torch run's. Also the two state_dicts load into each
    other (same keys and values)."""
    theirs, ours = _both(init_scale=2.0 ** 10, growth_interval=4)
    ref = _run(theirs, steps=14)
    assert ref[5].state["_growth_tracker"] > 0
    assert_same_run(_run(ours, steps=14, reload_at=5), ref)
    assert_same_run(_run(ours, steps=14), _run(theirs, steps=14, reload_at=5))
    a, b = ours(), theirs()
    state = dict(scale=512.0, growth_factor=3.0, backoff_factor=0.125, growth_interval=7,
                 _growth_tracker=5)
    b.load_state_dict(state)
    a.load_state_dict(b.state_dict())
    assert a.state_dict() == b.state_dict() == state
    assert a.get_scale() == 512.0


def test_loading_a_disabled_scalers_empty_state_dict_raises_like_torch():
    """Reference: torch's scaler, which refuses the empty state_dict of a disabled scaler
    with a RuntimeError (silently starting from the defaults would hide the mistake)."""
    theirs, ours = _both()
    with pytest.raises(RuntimeError):
        theirs().load_state_dict({})
    with pytest.raises(RuntimeError):
        ours().load_state_dict(pr.GradScaler("cpu", enabled=False).state_dict())


def test_get_scale_before_the_first_scale_like_torch():
    """Reference: torch's scaler, which keeps init_scale as a Python float until the first
    scale() call and then holds it in float32: get_scale() is 1000.1 first, then
    float32(1000.1)."""
    theirs, ours = _both(init_scale=1000.1)
    a, b = ours(), theirs()
    assert a.get_scale() == b.get_scale() == 1000.1
    assert a.state_dict() == b.state_dict()
    a.scale(torch.tensor(1.0))
    b.scale(torch.tensor(1.0))
    assert a.get_scale() == b.get_scale() == torch.tensor(1000.1, dtype=torch.float32).item()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32, torch.float64])
@pytest.mark.parametrize("scale", [7.77, 1000.1, 2.0 ** 16])
@pytest.mark.parametrize("bad", [None, INF, math.nan])
def test_unscale_matches_torch_in_every_gradient_dtype(dtype, scale, bad):
    """Reference: torch's unscale_ (g * float32(1 / scale), rounded to the gradient's dtype)
    on bfloat16, float32 and float64 gradients, for scales that are not powers of two; a
    parameter without a gradient is skipped; with an inf or NaN entry both skip the step
    and back off alike."""
    gen = torch.Generator().manual_seed(9)
    g = (torch.randn(2000, generator=gen) * 100).to(dtype)
    if bad is not None:
        g[17] = bad
    results = []
    for scaler in (torch.amp.GradScaler("cpu", init_scale=scale),
                   pr.GradScaler("cpu", init_scale=scale)):
        p = nn.Parameter(torch.ones(2000, dtype=dtype))
        idle = nn.Parameter(torch.ones(3))
        opt = torch.optim.SGD([p, idle], lr=0.5)
        scaler.scale(torch.tensor(1.0))
        p.grad = g.clone()
        scaler.unscale_(opt)
        unscaled = p.grad.clone()
        scaler.step(opt)
        scaler.update()
        assert idle.grad is None
        results.append((unscaled, p.detach().clone(), scaler.get_scale()))
    (g_ref, p_ref, s_ref), (g_got, p_got, s_got) = results
    assert _same(g_got, g_ref) and _same(p_got, p_ref) and s_got == s_ref
    assert torch.equal(p_ref, torch.ones(2000, dtype=dtype)) == (bad is not None)


def test_scale_of_several_outputs_like_torch():
    """Reference: torch's scale() on a list and a tuple of tensors: the same container type,
    each tensor times the scale, in its own dtype (a float16 output stays float16)."""
    theirs, ours = _both(init_scale=3.0)
    outs = [torch.tensor([1.0, 2.0]), torch.tensor(0.5),
            torch.tensor([1e4, 3.0], dtype=torch.float16)]
    for container in (list, tuple):
        a, b = ours().scale(container(outs)), theirs().scale(container(outs))
        assert type(a) is type(b) is container
        assert all(x.dtype == y.dtype and torch.equal(x, y) for x, y in zip(a, b))


def _misuse_setup(scaler, *, half: bool = False):
    model = nn.Linear(3, 2)
    if half:
        model = model.half()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x = torch.ones(4, 3, dtype=torch.float16 if half else torch.float32)
    scaler.scale(model(x).float().sum()).backward()
    return opt


def _unscale_twice(s):
    opt = _misuse_setup(s)
    s.unscale_(opt)
    s.unscale_(opt)


def _unscale_after_step(s):
    opt = _misuse_setup(s)
    s.step(opt)
    s.unscale_(opt)


def _step_twice(s):
    opt = _misuse_setup(s)
    s.step(opt)
    s.step(opt)


def _closure(s):
    opt = _misuse_setup(s)
    s.step(opt, closure=lambda: 0.0)


def _float16_gradients(s):
    s.unscale_(_misuse_setup(s, half=True))


def _update_before_step(s):
    _misuse_setup(s)
    s.update()


def _step_before_scale(s):
    s.step(torch.optim.SGD([nn.Parameter(torch.ones(2))], lr=0.1))


@pytest.mark.parametrize("misuse", [_unscale_twice, _unscale_after_step, _step_twice, _closure,
                                    _float16_gradients])
def test_misuse_raises_what_torch_raises(misuse):
    """Reference: torch's scaler on the same mistake, and the exception type it raises
    (RuntimeError for the order of calls and the closure, ValueError for unscaling
    float16 gradients -- the reason for master weights)."""
    theirs, ours = _both()
    with pytest.raises(Exception) as ref:
        misuse(theirs())
    with pytest.raises(Exception) as got:
        misuse(ours())
    assert type(got.value) is type(ref.value), (got.value, ref.value)


@pytest.mark.parametrize("misuse", [_update_before_step, _step_before_scale])
def test_misuse_torch_only_asserts_is_a_runtime_error(misuse):
    """Reference: torch's scaler, which meets update() with no step recorded, or step()
    before any scale(), with an internal ``AssertionError``; ours raises RuntimeError
    (assert is for internal invariants here), a documented difference."""
    theirs, ours = _both()
    with pytest.raises(AssertionError):
        misuse(theirs())
    with pytest.raises(RuntimeError):
        misuse(ours())


# ============================================================== 4. clipping under scaling
@pytest.mark.parametrize("master", [False, True], ids=["autocast", "master_weights"])
def test_unscale_then_clip_matches_torch(master):
    """Reference: torch.amp.GradScaler + torch.nn.utils.clip_grad_norm_ (after unscale_) on a
    copy of the run: ours with companion.clip.clip_grad_norm_ ends with the same parameters
    after every step, bit for bit, through the overflowing first steps."""
    theirs, ours = _both(growth_interval=3)
    ref = _run(theirs, master=master, unscale=True, clip=tu.clip_grad_norm_, lr=1e-2)
    assert _skips(ref) >= 3
    assert_same_run(_run(ours, master=master, unscale=True, clip=cc.clip_grad_norm_, lr=1e-2),
                    ref)


def test_clipping_before_unscale_sees_the_scale_times_the_norm():
    """Closed form: the norm of the scaled gradients is scale * the true norm (exactly, for a
    power-of-two scale), so clipping them to max_norm and then unscaling leaves gradients
    of norm max_norm / scale -- a step 2**10 times too small here -- where clipping after
    unscale_ leaves min(norm, max_norm)."""
    scale, max_norm = 2.0 ** 10, 1.0
    norms = {}
    for order in ("clip_then_unscale", "unscale_then_clip"):
        model = _net()
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        scaler = pr.GradScaler("cpu", init_scale=scale)
        x, y = _batches(1, size=1.0)[0]
        scaler.scale(_loss(model, x, y, master=False)).backward()
        if order == "clip_then_unscale":
            seen = cc.clip_grad_norm_(model.parameters(), max_norm)
            scaler.unscale_(opt)
        else:
            scaler.unscale_(opt)
            seen = cc.clip_grad_norm_(model.parameters(), max_norm)
        after = cc.get_total_norm([p.grad for p in model.parameters()])
        norms[order] = (seen.item(), after.item())
    (seen_bad, after_bad), (true_norm, after_good) = (norms["clip_then_unscale"],
                                                      norms["unscale_then_clip"])
    assert true_norm > max_norm  # clipping is active either way
    assert seen_bad == scale * true_norm
    assert after_good == pytest.approx(max_norm, rel=1e-6)
    assert after_bad == pytest.approx(max_norm / scale, rel=1e-6)


# ======================================================================= 5. MasterWeights
def _regression(n_w: int = 8):
    """A least-squares problem whose weights start in [1, 2) (where float16's spacing is
    2**-10 and bfloat16's 2**-7) and whose gradient is about 1 in size. The start and the
    inputs are bfloat16 numbers (so float16, float32 and float64 hold them exactly: every
    run starts from the same point on the same inputs); the targets are not."""
    gen = torch.Generator().manual_seed(7)
    w0 = (1 + 0.9 * torch.rand(n_w, generator=gen, dtype=torch.float64)).to(torch.bfloat16)
    x = torch.randn(64, n_w, generator=gen, dtype=torch.float64).to(torch.bfloat16).double()
    y = x @ (w0.double() + 0.5)
    return w0.double(), x, y


def _fit(w0, x, y, *, dtype, how, opt_name, lr, steps):
    """Train weights w (a Linear layer without bias, in ``dtype``) on the regression:
    ``how`` = "plain" (the optimizer on the model itself), "master" (MasterWeights) or
    "stochastic" (StochasticRounding). Returns (model weights, working weights)."""
    w = nn.Parameter(w0.to(dtype).clone())
    holder = None
    if how == "master":
        holder = pr.MasterWeights([w])
    elif how == "stochastic":
        holder = pr.StochasticRounding([w], generator=torch.Generator().manual_seed(0))
    params = holder.params if holder is not None else [w]
    opt = (torch.optim.SGD(params, lr=lr) if opt_name == "sgd"
           else torch.optim.Adam(params, lr=lr))
    xd, yd = x.to(dtype), y.to(dtype)
    for _ in range(steps):
        w.grad = None
        opt.zero_grad(set_to_none=True)
        F.mse_loss((xd @ w).float(), yd.float()).backward()
        if holder is not None:
            holder.grads_to_master()
        opt.step()
        if holder is not None:
            holder.master_to_model()
    return w.detach(), params[0].detach()


@pytest.mark.parametrize("dtype", LOW)
@pytest.mark.parametrize("opt_name,lr", [("sgd", 1e-4), ("adam", 1e-4)])
def test_master_weights_follow_float64_where_low_precision_stalls(dtype, opt_name, lr):
    """Reference: the same training in float64. Every update is below half the spacing of
    the weights (lr * |g| < 2**-12 in [1, 2)), so plain low-precision training rounds each
    one away: the weights never move, while the float64 ones move by ~lr * steps (and the
    first float64 update, given to rounded_away_fraction, is lost entirely). With float32
    master weights the masters follow float64 to within 4 eps of the format times the
    distance travelled (the gradients are computed in that format from targets rounded to
    it: a relative error of about eps; measured here: under 0.8 eps), plus half a float32
    spacing per step."""
    w0, x, y = _regression()
    steps = 60
    w64, _ = _fit(w0, x, y, dtype=torch.float64, how="plain", opt_name=opt_name, lr=lr,
                  steps=steps)
    travelled = (w64 - w0).abs().max().item()
    assert travelled > 20 * lr  # the float64 weights did move

    stalled, _ = _fit(w0, x, y, dtype=dtype, how="plain", opt_name=opt_name, lr=lr, steps=steps)
    assert torch.equal(stalled, w0.to(dtype))
    update64 = _fit(w0, x, y, dtype=torch.float64, how="plain", opt_name=opt_name, lr=lr,
                    steps=1)[0] - w0
    assert pr.rounded_away_fraction(update64, w0, dtype) == 1.0

    model_w, master = _fit(w0, x, y, dtype=dtype, how="master", opt_name=opt_name, lr=lr,
                           steps=steps)
    assert master.dtype == torch.float32 and model_w.dtype == dtype
    eps = pr.format_facts(dtype).eps
    tol = 4 * eps * travelled + steps * 2.0 ** -23  # twice float32's half spacing in [1, 2)
    err = (master.double() - w64).abs().max().item()
    assert err <= tol, f"master weights {err:.3g} from float64, tolerance {tol:.3g}"
    assert torch.equal(model_w, master.to(dtype))  # the model holds the masters, rounded


@pytest.mark.parametrize("dtype", LOW)
def test_master_weights_copy_exactly_and_round_to_nearest(dtype):
    """References: exactness of widening (float16/bfloat16 -> float32 loses nothing: the
    master gradient converted back is the model's gradient, subnormals included; a None
    gradient stays None) and torch's round-to-nearest cast (master_to_model writes
    ``master.to(dtype)``, within half a spacing of the master)."""
    gen = torch.Generator().manual_seed(11)
    a = nn.Parameter(torch.randn(5, 4, generator=gen).to(dtype))
    b = nn.Parameter(torch.randn(3, generator=gen).to(dtype))
    mw = pr.MasterWeights([a, b])
    assert len(mw.params) == 2
    for m, p in zip(mw.params, (a, b)):
        assert m.dtype == torch.float32 and m.is_leaf and m.requires_grad
        assert torch.equal(m.detach(), p.detach().float())
        assert m.data_ptr() != p.data_ptr()
    tiny = pr.format_facts(dtype).smallest_subnormal
    a.grad = (_log_uniform(20, math.log2(tiny), 4, seed=12).reshape(5, 4)).to(dtype)
    mw.grads_to_master()
    assert mw.params[0].grad.dtype == torch.float32
    assert torch.equal(mw.params[0].grad.to(dtype), a.grad)
    assert torch.equal(mw.params[0].grad.double(), a.grad.double())
    assert mw.params[1].grad is None
    with torch.no_grad():
        for m in mw.params:
            m.copy_(m + torch.rand(m.shape, generator=gen) * 1e-2)  # between neighbours
    mw.master_to_model()
    for m, p in zip(mw.params, (a, b)):
        assert p.dtype == dtype and torch.equal(p.detach(), m.detach().to(dtype))
        gap = pr.spacing(m.detach(), dtype)
        assert ((p.detach().double() - m.detach().double()).abs() <= gap / 2).all()


# ================================================================== 6. stochastic rounding
def _neighbours(x: torch.Tensor, dtype: torch.dtype):
    """(lo, hi): the two numbers of ``dtype`` around each value of float64 ``x`` (equal
    where x is representable), found with torch.nextafter."""
    r = x.to(dtype)
    above = r.double() > x
    lo = torch.where(above, _next_down(r), r)
    hi = torch.where(above | (r.double() == x), r, _next_up(r))
    return lo, hi


@pytest.mark.parametrize("dtype", LOW)
def test_stochastic_round_lands_on_a_neighbour_and_is_unbiased(dtype):
    """References: torch.nextafter (each result is one of the two neighbours of x in
    dtype) and the binomial law: with p = (x - lo) / (hi - lo) the number of draws that
    go up in 4000 is within 5 standard deviations (+1) of 4000 p -- for 12 values over
    the normal range, a subnormal, both signs. Values already representable never move."""
    f = pr.format_facts(dtype)
    points = torch.tensor([1.0 + f.eps * 0.3, 1.0 + f.eps * 0.5, -(1.0 + f.eps * 0.9),
                           3.14159, -2.71828, 1e-3, 0.1, 123.456, -7.77e-2,
                           f.smallest_subnormal * 2.25, 100.0 + f.eps * 64 * 0.01, 5.5],
                          dtype=torch.float64)
    n = 4000
    x = points[:, None].expand(-1, n).contiguous()
    out = pr.stochastic_round(x, dtype, generator=torch.Generator().manual_seed(0))
    assert out.dtype == dtype and out.shape == x.shape
    lo, hi = _neighbours(x, dtype)
    assert ((out == lo) | (out == hi)).all()
    for i, v in enumerate(points.tolist()):
        l, h = lo[i, 0].double().item(), hi[i, 0].double().item()
        if l == h:  # 5.5 is representable
            assert (out[i].double() == v).all()
            continue
        p = (v - l) / (h - l)
        ups = (out[i] == hi[i]).sum().item()
        bound = 5 * math.sqrt(n * p * (1 - p)) + 1
        assert abs(ups - n * p) <= bound, (v, ups, n * p, bound)


@pytest.mark.parametrize("dtype", LOW)
def test_stochastic_round_keeps_representable_values_and_is_reproducible(dtype):
    """References: the cast (values already in ``dtype`` come back unchanged: both
    neighbours are the value itself) and the generator (the same seed draws the same
    roundings; another seed, on 1000 values between neighbours, draws others)."""
    rep = torch.randn(1000, generator=torch.Generator().manual_seed(1)).to(dtype)
    assert torch.equal(pr.stochastic_round(rep.float(), dtype,
                                           generator=torch.Generator().manual_seed(2)), rep)
    x = torch.randn(1000, generator=torch.Generator().manual_seed(3)).double()
    one = pr.stochastic_round(x, dtype, generator=torch.Generator().manual_seed(4))
    again = pr.stochastic_round(x, dtype, generator=torch.Generator().manual_seed(4))
    other = pr.stochastic_round(x, dtype, generator=torch.Generator().manual_seed(5))
    assert torch.equal(one, again) and not torch.equal(one, other)


def test_stochastic_rounding_moves_bfloat16_weights_like_float64():
    """Reference: float64 SGD on a linear loss sum(w) (gradient 1 everywhere) from weights in
    [1.5, 2), lr 1e-3 for 100 steps: the float64 weights move by -0.1. Pure bfloat16 SGD
    does not move at all (each step is an eighth of the spacing 2**-7), but with
    StochasticRounding each step is unbiased, so the mean displacement of 1000 weights
    is -0.1 within 5 standard deviations of its bound sqrt(steps / n) * spacing / 2."""
    n, steps, lr = 1000, 100, 1e-3
    w0 = (1.5 + 0.5 * torch.rand(n, generator=torch.Generator().manual_seed(6))).to(
        torch.bfloat16)

    def train(dtype, sr):
        w = nn.Parameter(w0.to(dtype).clone())
        gen = torch.Generator().manual_seed(8)
        holder = pr.StochasticRounding([w], generator=gen) if sr else None
        opt = torch.optim.SGD(holder.params if sr else [w], lr=lr)
        for _ in range(steps):
            w.grad = None
            opt.zero_grad(set_to_none=True)
            w.float().sum().backward()
            if sr:
                holder.grads_to_master()
            opt.step()
            if sr:
                holder.master_to_model()
        return w.detach().double()

    moved64 = (train(torch.float64, False) - w0.double()).mean().item()
    assert moved64 == pytest.approx(-steps * lr, rel=1e-9)
    assert torch.equal(train(torch.bfloat16, False), w0.double())  # round to nearest: stuck
    w_sr = train(torch.bfloat16, True)
    moved = (w_sr - w0.double()).mean().item()
    bound = 5 * math.sqrt(steps / n) * 2.0 ** -7 / 2
    assert abs(moved - moved64) <= bound, (moved, moved64, bound)
    assert (w_sr.to(torch.bfloat16).double() == w_sr).all()  # still bfloat16 numbers
