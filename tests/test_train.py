"""Tests of companion.train.

References: a hand-written torch loop with the same optimizer (losses must match
exactly / to float64 rounding), ||W_after - W_before|| / ||W_before|| computed from
weight snapshots around manual optimizer steps, properties (loss goes down on a
learnable problem, divergence is detected by the documented rule, same seed -> same
history).
"""
from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from companion import data
from companion.nets import mlp
from companion.train import DIVERGENCE_FACTOR, History, train

SETTINGS = settings(max_examples=15, deadline=None)


def _problem(seed=0, dtype=torch.float64):
    x, y = data.teacher_regression(128, 6, seed=seed)
    net = mlp(6, 1, width=16, depth=2, seed=seed).to(dtype)
    return net, x.to(dtype), y.to(dtype)


@pytest.mark.parametrize("optimizer, lr", [("sgd", 0.1), ("momentum", 0.02), ("adam", 0.01)])
def test_loss_decreases_on_learnable_problem(optimizer, lr):
    """A 2-layer net on teacher_regression halves its loss (a property, not a value)."""
    net, x, y = _problem(dtype=torch.float32)
    h = train(net, x, y, steps=200, lr=lr, optimizer=optimizer)
    assert isinstance(h, History) and h.losses.dtype == np.float64 and h.losses.shape == (200,)
    assert not h.diverged and h.steps_run == 200 and np.isfinite(h.losses).all()
    assert h.final_loss < 0.5 * h.losses[0]


def test_cross_entropy_on_spirals():
    """Cross-entropy on spirals goes down; losses[0] equals F.cross_entropy of the fresh net."""
    x, labels = data.spirals(300, 3)
    net = mlp(2, 3, width=32, depth=2, activation="relu", seed=0)
    first = F.cross_entropy(net(x), labels).item()
    h = train(net, x, labels, steps=300, lr=0.01, optimizer="adam", loss="cross_entropy")
    assert h.losses[0] == pytest.approx(first, rel=1e-6)
    assert h.final_loss < 0.5 * h.losses[0]


@pytest.mark.parametrize("optimizer, ref", [
    ("sgd", lambda p: torch.optim.SGD(p, lr=0.05)),
    ("momentum", lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9)),
    ("adam", lambda p: torch.optim.Adam(p, lr=0.05)),
    (torch.optim.RMSprop, lambda p: torch.optim.RMSprop(p, lr=0.05)),
])
def test_matches_hand_written_loop(optimizer, ref):
    """Losses equal those of a plain torch loop with the same optimizer (float64)."""
    net, x, y = _problem()
    ref_net = copy.deepcopy(net)
    h = train(net, x, y, steps=20, lr=0.05, optimizer=optimizer)
    opt = ref(ref_net.parameters())
    expected = []
    for _ in range(20):
        loss = F.mse_loss(ref_net(x), y)
        expected.append(loss.item())
        opt.zero_grad()
        loss.backward()
        opt.step()
    np.testing.assert_allclose(h.losses, expected, rtol=1e-12)
    for p, q in zip(net.parameters(), ref_net.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-12, atol=1e-14)


def test_optimizer_kwargs_and_callable_loss():
    """optimizer_kwargs reach the optimizer and a callable loss is used as given: with
    momentum=0 'momentum' is plain SGD; loss=2*mse doubles every recorded loss."""
    net, x, y = _problem()
    a = train(copy.deepcopy(net), x, y, steps=5, lr=0.05, optimizer="momentum",
              optimizer_kwargs={"momentum": 0.0})
    b = train(copy.deepcopy(net), x, y, steps=5, lr=0.05, optimizer="sgd")
    np.testing.assert_array_equal(a.losses, b.losses)
    c = train(copy.deepcopy(net), x, y, steps=1, lr=0.05, loss=lambda p, t: 2 * F.mse_loss(p, t))
    assert c.losses[0] == pytest.approx(2 * b.losses[0], rel=1e-12)


def test_huge_lr_diverges_without_raising():
    """lr=1e3 blows up: diverged_at reported, losses before it finite, from it on NaN."""
    net, x, y = _problem(dtype=torch.float32)
    h = train(net, x, y, steps=100, lr=1e3)
    d = h.diverged_at
    assert h.diverged and d is not None and 0 < d < 100
    assert np.isfinite(h.losses[:d]).all() and np.isnan(h.losses[d:]).all()
    assert h.steps_run == d and h.final_loss == h.losses[d - 1]


def _scripted_loss(values):
    """A loss callable returning values[t] at call t (attached to the graph via pred*0)."""
    it = iter(values)
    return lambda pred, target: (pred * 0).sum() + next(it)


@pytest.mark.parametrize("values, expected", [
    ([1.0, 2.0, 0.9 * DIVERGENCE_FACTOR, 3.0], None),           # below 1e6 x initial: fine
    ([1.0, 2.0, 1.1 * DIVERGENCE_FACTOR, 3.0], 2),              # above: diverged at 2
    ([1.0, math.inf, 1.0, 1.0], 1),
    ([1.0, 1.0, 1.0, math.nan], 3),
    ([math.nan, 1.0, 1.0, 1.0], 0),
    ([0.0, 5.0, 1e9, 1.0], None),                               # l_0 = 0: finiteness only
])
def test_divergence_rule(values, expected):
    """diverged_at = first t with l_t non-finite or > DIVERGENCE_FACTOR * l_0 (l_0 > 0)."""
    net, x, y = _problem()
    h = train(net, x, y, steps=4, lr=0.1, loss=_scripted_loss(values))
    assert h.diverged_at == expected
    if expected is not None:
        np.testing.assert_array_equal(h.losses[:expected], values[:expected])
        assert np.isnan(h.losses[expected:]).all()
    recorded = values if expected is None else values[:expected]
    if recorded:
        assert h.final_loss == recorded[-1]
    else:
        assert math.isnan(h.final_loss)


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_update_ratios_match_snapshots(optimizer):
    """update_ratios[name][t] == ||W_{t+1} - W_t|| / ||W_t|| from snapshots around manual
    optimizer steps on a copy of the same net."""
    net, x, y = _problem()
    ref = copy.deepcopy(net)
    steps = 4
    h = train(net, x, y, steps=steps, lr=0.05, optimizer=optimizer, track_update_ratios=True)
    assert set(h.update_ratios) == {"fc1", "fc2", "out"}
    opt = (torch.optim.SGD if optimizer == "sgd" else torch.optim.Adam)(ref.parameters(), lr=0.05)
    layers = {"fc1": ref.fc1, "fc2": ref.fc2, "out": ref.out}
    for t in range(steps):
        before = {k: m.weight.detach().clone() for k, m in layers.items()}
        opt.zero_grad()
        F.mse_loss(ref(x), y).backward()
        opt.step()
        for k, m in layers.items():
            expected = ((m.weight.detach() - before[k]).norm() / before[k].norm()).item()
            assert h.update_ratios[k][t] == pytest.approx(expected, rel=1e-10)
    assert train(ref, x, y, steps=2, lr=0.1).update_ratios is None


def test_update_ratios_track_every_layer_weight_of_attention_and_lstm():
    """The same layers and weights as companion.diagnostics.snapshot_weights (attention by
    its in_proj_weight, the LSTM by weight_ih_l0, a layer norm by its 1-d weight).
    Reference: the ratio from state_dict tensors around manual Adam steps on a copy."""
    class Seq(torch.nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.embed = torch.nn.Linear(3, 8)
            self.norm = torch.nn.LayerNorm(8)
            self.attn = torch.nn.MultiheadAttention(8, 2, batch_first=True)
            self.lstm = torch.nn.LSTM(8, 6, batch_first=True)
            self.out = torch.nn.Linear(6, 1)

        def forward(self, x):
            h = self.norm(self.embed(x))
            h = self.attn(h, h, h)[0]
            return self.out(self.lstm(h)[0][:, -1])

    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(16, 5, 3, generator=gen), torch.randn(16, 1, generator=gen)
    net = Seq()
    ref = copy.deepcopy(net)
    h = train(net, x, y, steps=2, lr=1e-2, optimizer="adam", track_update_ratios=True)
    keys = {"embed": "embed.weight", "norm": "norm.weight", "attn": "attn.in_proj_weight",
            "attn.out_proj": "attn.out_proj.weight", "lstm": "lstm.weight_ih_l0",
            "out": "out.weight"}
    assert list(h.update_ratios) == list(keys)
    opt = torch.optim.Adam(ref.parameters(), lr=1e-2)
    for t in range(2):
        before = {k: v.double().clone() for k, v in ref.state_dict().items()}
        opt.zero_grad()
        F.mse_loss(ref(x), y).backward()
        opt.step()
        after = ref.state_dict()
        for layer, key in keys.items():
            w0, w1 = before[key], after[key].double()
            expected = ((w1 - w0).norm() / w0.norm()).item()
            assert h.update_ratios[layer][t] == pytest.approx(expected, rel=1e-5), layer


def test_update_ratios_nan_after_divergence():
    net, x, y = _problem(dtype=torch.float32)
    h = train(net, x, y, steps=50, lr=1e3, track_update_ratios=True)
    for r in h.update_ratios.values():
        assert r.shape == (50,)
        assert np.isfinite(r[: h.diverged_at - 1]).all() and np.isnan(r[h.diverged_at:]).all()


@SETTINGS
@given(seed=st.integers(0, 1000), batch_size=st.sampled_from([None, 16, 50]))
def test_same_seed_same_history(seed, batch_size):
    """Two identical nets, same data and seed -> identical losses and ratios."""
    runs = []
    for _ in range(2):
        net, x, y = _problem(dtype=torch.float32)
        runs.append(train(net, x, y, steps=15, lr=0.05, batch_size=batch_size, seed=seed,
                          track_update_ratios=True))
    np.testing.assert_array_equal(runs[0].losses, runs[1].losses)
    for k in runs[0].update_ratios:
        np.testing.assert_array_equal(runs[0].update_ratios[k], runs[1].update_ratios[k])


def test_minibatches():
    """Different seeds give different minibatch losses; batch_size = n equals full batch
    (the mean over a permutation of all rows) to float64 rounding."""
    net, x, y = _problem()
    a = train(copy.deepcopy(net), x, y, steps=10, lr=0.05, batch_size=16, seed=0)
    b = train(copy.deepcopy(net), x, y, steps=10, lr=0.05, batch_size=16, seed=1)
    assert not np.array_equal(a.losses, b.losses)
    full = train(copy.deepcopy(net), x, y, steps=10, lr=0.05)
    whole = train(copy.deepcopy(net), x, y, steps=10, lr=0.05, batch_size=len(x), seed=3)
    np.testing.assert_allclose(whole.losses, full.losses, rtol=1e-10)


def test_callback_and_early_stop():
    """callback gets (step, loss) for every step; returning False stops after that step."""
    net, x, y = _problem()
    seen = []
    h = train(copy.deepcopy(net), x, y, steps=6, lr=0.05, callback=lambda t, l: seen.append((t, l)))
    assert [t for t, _ in seen] == list(range(6))
    np.testing.assert_array_equal([l for _, l in seen], h.losses)
    stop = train(copy.deepcopy(net), x, y, steps=6, lr=0.05, callback=lambda t, l: t < 2)
    assert stop.steps_run == 3 and stop.diverged_at is None and not stop.diverged
    np.testing.assert_array_equal(stop.losses[:3], h.losses[:3])
    assert np.isnan(stop.losses[3:]).all() and stop.final_loss == h.losses[2]


# ------------------------------------------------------------------------- errors
@pytest.mark.parametrize("kwargs, match", [
    (dict(steps=0), "steps"),
    (dict(lr=0.0), "lr"),
    (dict(lr=-0.1), "lr"),
    (dict(lr=math.inf), "lr"),
    (dict(optimizer="lbfgs"), r"optimizer must be one of \['sgd', 'momentum', 'adam'\].*'lbfgs'"),
    (dict(loss="hinge"), r"loss must be one of \['mse', 'cross_entropy'\].*'hinge'"),
    (dict(batch_size=0), "batch_size"),
    (dict(batch_size=10_000), "batch_size"),
    (dict(seed=-1), "seed"),
])
def test_value_errors(kwargs, match):
    net, x, y = _problem()
    with pytest.raises(ValueError, match=match):
        train(net, x, y, **{"steps": 3, "lr": 0.1, **kwargs})


def test_shape_errors():
    net, x, y = _problem()
    with pytest.raises(ValueError, match="same nonzero first dimension"):
        train(net, x, y[:-1], steps=2, lr=0.1)
    with pytest.raises(ValueError, match="y must have the model output's shape"):
        train(net, x, y[:, 0], steps=2, lr=0.1)


def test_type_errors():
    net, x, y = _problem()
    with pytest.raises(TypeError, match="model"):
        train(lambda v: v, x, y, steps=2, lr=0.1)
    with pytest.raises(TypeError, match="callback"):
        train(net, x, y, steps=2, lr=0.1, callback=3)
    with pytest.raises(TypeError, match="optimizer_kwargs"):
        train(net, x, y, steps=2, lr=0.1, optimizer_kwargs=[("momentum", 0.9)])
    # a wrong type is a TypeError (steps=2.5 was a ValueError before the shared checks)
    with pytest.raises(TypeError, match=r"steps must be an int, got 2.5 \(float\)"):
        train(net, x, y, steps=2.5, lr=0.1)


# --------------------------------------------------------------- grad norms and clipping
def _reference_loop(net, x, y, steps, lr, clip_fn=None, optimizer=torch.optim.SGD):
    """A plain torch loop (SGD unless given); returns (losses, pre-clip norms from torch's
    get_total_norm, per-step flags returned by clip_fn(params) -- None without clip_fn)."""
    opt = optimizer(net.parameters(), lr=lr)
    params = list(net.parameters())
    losses, norms, flags = [], [], []
    for _ in range(steps):
        loss = F.mse_loss(net(x), y)
        losses.append(loss.item())
        opt.zero_grad()
        loss.backward()
        norms.append(torch.nn.utils.get_total_norm([p.grad for p in params]).item())
        if clip_fn is not None:
            flags.append(clip_fn(params))
        opt.step()
    return np.array(losses), np.array(norms), (np.array(flags) if clip_fn else None)


def test_schedule_multiplies_the_learning_rate_of_each_step():
    """Reference: a hand-written SGD loop that sets lr = 0.05 * f(t) in the optimizer's
    param group before step t (what LambdaLR promises); the losses must agree exactly,
    and they differ from the constant-lr run (the schedule does something)."""
    net, x, y = _problem()
    ref_net, const_net = copy.deepcopy(net), copy.deepcopy(net)
    warmup = lambda t: min(1.0, (t + 1) / 4)          # noqa: E731
    h = train(net, x, y, steps=8, lr=0.05, schedule=warmup)
    opt = torch.optim.SGD(ref_net.parameters(), lr=0.05)
    losses = []
    for t in range(8):
        opt.param_groups[0]["lr"] = 0.05 * warmup(t)
        loss = F.mse_loss(ref_net(x), y)
        losses.append(loss.item())
        opt.zero_grad()
        loss.backward()
        opt.step()
    np.testing.assert_array_equal(h.losses, losses)
    assert not np.array_equal(h.losses, train(const_net, x, y, steps=8, lr=0.05).losses)
    with pytest.raises(TypeError, match="schedule must be a callable"):
        train(net, x, y, steps=2, lr=0.05, schedule=0.5)


@pytest.mark.parametrize("batch_size", [None, 32])
def test_grad_norms_match_hand_written_loop(batch_size):
    """Reference: torch.nn.utils.get_total_norm of the gradients of a hand-written loop
    (full batch), and for minibatches the 2-norm in Python floats of the grads that an
    SGD optimizer receives in step() (wrapped to record them). clip=None: clipped is None."""
    net, x, y = _problem()
    ref_net = copy.deepcopy(net)
    h = train(net, x, y, steps=8, lr=0.05, batch_size=batch_size)
    assert h.grad_norms.dtype == np.float64 and h.grad_norms.shape == (8,) and h.clipped is None
    if batch_size is None:
        losses, norms, _ = _reference_loop(ref_net, x, y, 8, 0.05)
        np.testing.assert_array_equal(h.losses, losses)
        np.testing.assert_array_equal(h.grad_norms, norms)
        return
    seen = []

    def sgd_recording(params, lr):
        opt = torch.optim.SGD(params, lr=lr)
        step = opt.step

        def recorded_step(*args, **kwargs):
            seen.append(math.sqrt(sum(float(v) ** 2 for p in params
                                      for v in p.grad.flatten().tolist())))
            return step(*args, **kwargs)
        opt.step = recorded_step
        return opt

    h2 = train(ref_net, x, y, steps=8, lr=0.05, batch_size=batch_size, optimizer=sgd_recording)
    np.testing.assert_array_equal(h2.losses, h.losses)
    np.testing.assert_allclose(h.grad_norms, seen, rtol=1e-12)


def test_grad_norms_nan_after_divergence():
    """Steps not run (from diverged_at on) have NaN norms; every step run has one."""
    net, x, y = _problem(dtype=torch.float32)
    h = train(net, x, y, steps=50, lr=1e3)
    d = h.diverged_at
    assert d is not None and not np.isnan(h.grad_norms[:d]).any()
    assert np.isnan(h.grad_norms[d:]).all()


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_clip_float_matches_torch_clip_grad_norm(optimizer):
    """Reference: a hand-written loop calling torch.nn.utils.clip_grad_norm_(params, 0.8)
    between backward and step: identical losses, weights, pre-clip norms (torch's
    get_total_norm, which clip_grad_norm_ returns) and clipped flags (torch's coefficient
    0.8 / (N + 1e-6) < 1). max_norm is chosen so that both clipped and unclipped steps
    occur."""
    max_norm, steps = 0.8, 30
    net, x, y = _problem()
    ref_net = copy.deepcopy(net)
    h = train(net, x, y, steps=steps, lr=0.05, optimizer=optimizer, clip=max_norm)

    def torch_clip(params):
        total = torch.nn.utils.clip_grad_norm_(params, max_norm)
        return max_norm / (total.item() + 1e-6) < 1

    losses, norms, flags = _reference_loop(
        ref_net, x, y, steps, 0.05, torch_clip,
        optimizer=torch.optim.SGD if optimizer == "sgd" else torch.optim.Adam)
    assert any(flags) and not all(flags)
    np.testing.assert_array_equal(h.losses, losses)
    np.testing.assert_array_equal(h.grad_norms, norms)
    np.testing.assert_array_equal(h.clipped, flags)
    assert h.clipped.dtype == np.bool_
    for p, q in zip(net.parameters(), ref_net.parameters()):
        assert torch.equal(p, q)


def test_callable_clip_is_applied():
    """Reference: the hand-written loop with the same callable (clip_grad_value_ at 0.1)
    between backward and step: identical losses and weights; the callable gets the list of
    parameters; clipped is True exactly where some |g| exceeded 0.1 before the call."""
    net, x, y = _problem()
    ref_net = copy.deepcopy(net)
    calls = []

    def clip(params):
        calls.append(params)
        torch.nn.utils.clip_grad_value_(params, 0.1)

    h = train(net, x, y, steps=40, lr=0.05, clip=clip)
    assert len(calls) == 40 and calls[0] == list(net.parameters())

    def ref_clip(params):
        over = any(bool((p.grad.abs() > 0.1).any()) for p in params)
        torch.nn.utils.clip_grad_value_(params, 0.1)
        return over

    losses, norms, flags = _reference_loop(ref_net, x, y, 40, 0.05, ref_clip)
    assert flags.any() and not flags.all()
    np.testing.assert_array_equal(h.losses, losses)
    np.testing.assert_array_equal(h.grad_norms, norms)
    np.testing.assert_array_equal(h.clipped, flags)
    for p, q in zip(net.parameters(), ref_net.parameters()):
        assert torch.equal(p, q)


def test_agc_partial_as_clip():
    """Reference: the same loop calling companion.clip.adaptive_clip_grad_ by hand."""
    import functools

    import companion.clip as cc
    net, x, y = _problem()
    ref_net = copy.deepcopy(net)
    h = train(net, x, y, steps=10, lr=0.1,
              clip=functools.partial(cc.adaptive_clip_grad_, clip_factor=0.01))
    losses, _, _ = _reference_loop(ref_net, x, y, 10, 0.1,
                                   lambda ps: cc.adaptive_clip_grad_(ps, clip_factor=0.01))
    np.testing.assert_array_equal(h.losses, losses)
    assert h.clipped.all()  # clip_factor 0.01 at lr 0.1 clips some unit every step


def test_history_positional_construction_still_works():
    """Backwards compatibility: History(losses, diverged_at, update_ratios, steps_run)."""
    h = History(np.zeros(3), None, None, 3)
    assert h.grad_norms is None and h.clipped is None and h.steps_run == 3


@pytest.mark.parametrize("clip, exc, match", [
    (0.0, ValueError, r"clip \(the max_norm\) must be a finite number > 0, got 0.0"),
    (-1, ValueError, r"clip \(the max_norm\) must be a finite number > 0, got -1"),
    (math.inf, ValueError, r"clip \(the max_norm\) must be a finite number > 0, got inf"),
    (math.nan, ValueError, r"clip \(the max_norm\) must be a finite number > 0, got nan"),
    ("norm", TypeError, r"clip must be None, a positive max_norm or a callable f\(params\), got 'norm'"),
    (True, TypeError, r"clip must be None.*got True \(bool\)"),
])
def test_clip_errors(clip, exc, match):
    net, x, y = _problem()
    with pytest.raises(exc, match=match):
        train(net, x, y, steps=2, lr=0.1, clip=clip)


# ------------------------------------------------- bad input (issue 12): the named points
def test_bad_data_is_refused_not_reported_as_divergence():
    """NaN or inf in x or y is bad data, refused before any step: not 'diverged at 0'."""
    net, x, y = _problem()
    state = copy.deepcopy(net.state_dict())
    for name, bad in (("x", x.clone()), ("y", y.clone())):
        bad[5, 0] = math.nan if name == "x" else math.inf
        args = (bad, y) if name == "x" else (x, bad)
        with pytest.raises(ValueError, match=rf"{name} must be finite data, got 1 NaN or "
                                             rf"infinite value \(the first at index \(5, 0\)\)"):
            train(net, *args, steps=2, lr=0.1)
    assert all(torch.equal(v, state[k]) for k, v in net.state_dict().items())


def test_a_loss_per_example_is_refused_by_name():
    net, x, y = _problem()
    with pytest.raises(ValueError, match=r"loss must return a scalar \(one-element\) tensor, "
                                         r"got a float64 tensor of shape \(128, 1\)"):
        train(net, x, y, steps=5, lr=0.05, loss=lambda p, t: (p - t) ** 2)


def test_cross_entropy_labels_are_checked_against_the_output_before_training():
    """Reference: the output has 3 classes; labels (n, 1), float labels, a label 3 and a
    bad label outside the first minibatch are refused before any update."""
    x, y = data.spirals(60, 3, seed=0)
    net = mlp(2, 3, 8, 1, seed=0)
    state = copy.deepcopy(net.state_dict())
    late = y.clone()
    late[-1] = 3                                   # not in the first minibatch of 8
    for bad, exc, match in ((y[:, None], ValueError, r"y must have 1 dimensions"),
                            (y.float(), TypeError, r"y must have an integer dtype"),
                            (torch.full_like(y, 3), ValueError, r"class indices in \[0, 2\]"),
                            (late, ValueError, r"got values from 0 to 3")):
        with pytest.raises(exc, match=match):
            train(net, x, bad, steps=3, lr=0.1, loss="cross_entropy", batch_size=8)
    assert all(torch.equal(v, state[k]) for k, v in net.state_dict().items())
    # int32 labels are taken as int64 (torch's cross_entropy refuses int32): same run
    a, b = mlp(2, 3, 8, 1, seed=0), mlp(2, 3, 8, 1, seed=0)
    ha = train(a, x, y, steps=3, lr=0.1, loss="cross_entropy")
    hb = train(b, x, y.int(), steps=3, lr=0.1, loss="cross_entropy")
    np.testing.assert_array_equal(ha.losses, hb.losses)


def test_integer_x_is_kept_for_token_models_and_refused_by_name_otherwise():
    """Integer x is not cast: a TokenTransformer takes it (the gallery's transformer run);
    an MLP refuses it, with a TypeError naming x and the model's error chained."""
    from companion import gallery
    tokens = torch.randint(0, 8, (4, 5), generator=torch.Generator().manual_seed(0))
    model = gallery.EncoderClassifier(8, 8, 1)
    h = train(model, tokens, tokens, steps=2, lr=0.01, loss=gallery.token_loss)
    assert h.steps_run == 2
    net, x, y = _problem()
    with pytest.raises(TypeError, match=r"x must be floating-point data for this model") as info:
        train(net, x.long(), y, steps=2, lr=0.1)
    assert isinstance(info.value.__cause__, RuntimeError)
    with pytest.raises(TypeError, match=r"x must be a numpy array or a torch tensor, got None"):
        train(net, None, y, steps=2, lr=0.1)


def test_largest_seed_and_optimizer_classes_are_accepted():
    net, x, y = _problem()
    h = train(copy.deepcopy(net), x, y, steps=3, lr=0.05, batch_size=16, seed=2 ** 64 - 1)
    assert h.steps_run == 3
    with pytest.raises(ValueError, match=r"seed must be an int in \[0, 18446744073709551615\]"):
        train(net, x, y, steps=2, lr=0.1, seed=2 ** 64)
    a, b = copy.deepcopy(net), copy.deepcopy(net)
    np.testing.assert_array_equal(train(a, x, y, steps=3, lr=0.05).losses,
                                  train(b, x, y, steps=3, lr=0.05,
                                        optimizer=torch.optim.SGD).losses)
