"""Tests of companion.diagnostics.

References: torch.autograd.grad with respect to intermediate outputs of a forward pass
written out by hand (float64), p.grad.norm(), numpy statistics of the manually
computed activations, numpy pre-activations for dead units, and numpy norms for the
update ratios.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from companion.diagnostics import (ActivationStats, dead_units, record, snapshot_weights,
                                   update_ratios)
from companion.nets import mlp

SETTINGS = settings(max_examples=25, deadline=None)
ACTIVATIONS = ["sigmoid", "tanh", "relu", "leaky_relu", "elu", "selu", "gelu", "silu",
               "softplus", "linear", "prelu"]


def _all_hooks_removed(model: nn.Module) -> bool:
    return all(not m._forward_hooks and not m._forward_pre_hooks and not m._backward_hooks
               for m in model.modules())


def _manual_mlp(net: nn.Sequential, x: torch.Tensor):
    """Reference forward of an mlp, module by module, outside any hooks: returns the
    list of Linear outputs z and the dict name -> activation output."""
    zs, acts, h = [], {}, x
    for name, module in net.named_children():
        h = module(h)
        if isinstance(module, nn.Linear):
            zs.append(h)
        else:
            acts[name] = h
    return zs, acts


def _loss(y: torch.Tensor) -> torch.Tensor:
    return 0.5 * (y - 1.0).pow(2).sum()


# --------------------------------------------------------------------------- record
@SETTINGS
@given(activation=st.sampled_from(ACTIVATIONS), depth=st.integers(1, 5),
       width=st.integers(1, 12), scale=st.floats(0.3, 3.0), seed=st.integers(0, 1000))
def test_record_matches_autograd_on_intermediate_outputs(activation, depth, width, scale, seed):
    """output_grad_norms == ||autograd.grad(L, z_l)|| for the hand-run forward;
    weight_grad_norms == p.grad.norm(); names and order input side first."""
    net = mlp(3, 2, width, depth, activation=activation, weight_scale=scale,
              bias_std=0.1, seed=seed).double()
    x = torch.randn(6, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))

    zs, _ = _manual_mlp(net, x)
    ref = torch.autograd.grad(_loss(zs[-1]), zs)

    with record(net) as rec:
        _loss(net(x)).backward()
    names = [n for n, m in net.named_modules() if isinstance(m, nn.Linear)]
    assert rec.layer_names == names == [f"fc{i}" for i in range(1, depth + 1)] + ["out"]
    assert list(rec.output_grad_norms) == names
    np.testing.assert_allclose(list(rec.output_grad_norms.values()),
                               [g.norm().item() for g in ref], rtol=1e-10, atol=1e-300)
    assert list(rec.weight_grad_norms) == names
    np.testing.assert_allclose(list(rec.weight_grad_norms.values()),
                               [net.get_submodule(n).weight.grad.norm().item() for n in names],
                               rtol=1e-12)
    assert rec.activation_names == [f"act{i}" for i in range(1, depth + 1)]
    assert _all_hooks_removed(net)


@SETTINGS
@given(activation=st.sampled_from(ACTIVATIONS), depth=st.integers(1, 4),
       scale=st.floats(0.3, 4.0), seed=st.integers(0, 1000))
def test_activation_stats_and_kept_activations_match_numpy(activation, depth, scale, seed):
    """Stats are taken on each activation's output: numpy mean, std (ddof=0), saturated
    fraction (Sigmoid: y<0.02 or y>0.98; Tanh: |y|>0.98; else NaN), zero fraction."""
    net = mlp(4, 1, 16, depth, activation=activation, weight_scale=scale, seed=seed).double()
    x = torch.randn(32, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    _, acts = _manual_mlp(net, x)
    with record(net, keep_activations=True) as rec:
        net(x).sum().backward()
    cls = type(net.act1).__name__
    labels = [f"act{i} (after {cls})" for i in range(1, depth + 1)]
    assert list(rec.activation_stats) == labels == rec.activation_labels
    assert list(rec.activations) == labels
    for i, label in enumerate(labels, start=1):
        y = acts[f"act{i}"].detach().numpy()
        s = rec.activation_stats[label]
        assert isinstance(s, ActivationStats)
        assert s.mean == pytest.approx(y.mean(), rel=1e-9, abs=1e-12)
        assert s.std == pytest.approx(y.std(), rel=1e-9, abs=1e-12)
        assert s.zero_fraction == pytest.approx(np.mean(y == 0), abs=1e-12)
        if isinstance(net.act1, nn.Sigmoid):
            assert s.saturated_fraction == pytest.approx(np.mean((y < 0.02) | (y > 0.98)))
        elif isinstance(net.act1, nn.Tanh):
            assert s.saturated_fraction == pytest.approx(np.mean(np.abs(y) > 0.98))
        else:
            assert math.isnan(s.saturated_fraction)
        kept = rec.activations[label]
        assert kept.dtype == np.float32
        np.testing.assert_allclose(kept, y.ravel().astype(np.float32), rtol=0, atol=0)


def test_activation_stats_off_and_activations_not_kept():
    net = mlp(2, 1, 4, 2, seed=0)
    with record(net, activation_stats=False) as rec:
        net(torch.randn(3, 2)).sum().backward()
    assert rec.activation_stats == {} and len(rec.output_grad_norms) == 3
    with pytest.raises(AttributeError, match="keep_activations=True"):
        rec.activations


class _Block(nn.Module):
    """Registers `b` before `a` but runs `a` first: forward order != registration order."""

    def __init__(self):
        super().__init__()
        self.b = nn.Linear(4, 4)
        self.a = nn.Linear(3, 4)
        self.act = nn.Identity()

    def forward(self, x):
        return torch.tanh(self.b(self.act(self.a(x))))


def test_nested_conv_model_forward_order_and_autograd_reference():
    """Nested modules: names are named_modules() names, in the order they ran; the
    backward signal equals autograd.grad on the intermediate outputs."""
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten()),
        nn.Linear(2 * 3 * 3, 3), nn.SiLU(), _Block(), nn.Linear(4, 1),
    ).double()
    x = torch.randn(5, 1, 5, 5, dtype=torch.float64)
    with record(net) as rec:
        _loss(net(x)).backward()
    assert rec.layer_names == ["0.0", "1", "3.a", "3.b", "4"]
    assert rec.activation_labels == ["0.1 (after ReLU)", "2 (after SiLU)", "3.act (after Identity)"]

    c = net[0][0](x)
    h = net[1](net[0][2](torch.relu(c)))
    za = net[3].a(torch.nn.functional.silu(h))
    zb = net[3].b(za)
    y = net[4](torch.tanh(zb))
    ref = torch.autograd.grad(_loss(y), [c, h, za, zb, y])
    np.testing.assert_allclose(list(rec.output_grad_norms.values()),
                               [g.norm().item() for g in ref], rtol=1e-10)


@pytest.mark.parametrize("norm_first", [False, True])
def test_transformer_layer_attention_is_a_layer_with_autograd_reference(norm_first):
    """Inside torch's TransformerEncoderLayer the attention module owns its packed
    in_proj_weight (it is not a leaf) and its out_proj is never called: record sees it
    as the layer "self_attn". Reference: the layer's forward written out by hand (post-LN
    x = norm1(x + sa(x)), x = norm2(x + ff(x)); pre-LN x + sa(norm1(x)), ...) and
    autograd.grad on the intermediate outputs; in_proj_weight.grad.norm()."""
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True,
                                       norm_first=norm_first).double()
    x = torch.randn(3, 5, 8, dtype=torch.float64)
    with record(layer) as rec:
        _loss(layer(x)).backward()
    assert rec.layer_names == (["norm1", "self_attn", "norm2", "linear1", "linear2"]
                               if norm_first else
                               ["self_attn", "norm1", "linear1", "linear2", "norm2"])
    assert rec.activation_labels == []      # F.relu inside the layer is not a module

    def sa(h):
        return layer.self_attn(h, h, h, need_weights=False)[0]

    if norm_first:
        n1 = layer.norm1(x)
        a = sa(n1)
        h = x + a
        n2 = layer.norm2(h)
        z1 = layer.linear1(n2)
        z2 = layer.linear2(torch.relu(z1))
        y = h + z2
        outs = {"norm1": n1, "self_attn": a, "linear1": z1, "linear2": z2, "norm2": n2}
    else:
        a = sa(x)
        n1 = layer.norm1(x + a)
        z1 = layer.linear1(n1)
        z2 = layer.linear2(torch.relu(z1))
        y = n2 = layer.norm2(n1 + z2)
        outs = {"self_attn": a, "norm1": n1, "linear1": z1, "linear2": z2, "norm2": n2}
    torch.testing.assert_close(y, layer(x), rtol=1e-12, atol=1e-12)
    ref = dict(zip(outs, torch.autograd.grad(_loss(y), list(outs.values()))))
    for name, g in ref.items():
        assert rec.output_grad_norms[name] == pytest.approx(g.norm().item(), rel=1e-10)
    assert rec.weight_grad_norms["self_attn"] == pytest.approx(
        layer.self_attn.in_proj_weight.grad.norm().item(), rel=1e-12)


def test_last_forward_is_kept_and_shared_module_sums_its_calls():
    """Two forwards inside the block: the record describes the last. A module called
    twice in one forward: norm over both outputs, sqrt(||g1||^2 + ||g2||^2)."""
    net = mlp(3, 3, 5, 1, activation="tanh", seed=0).double()
    x1 = torch.randn(4, 3, dtype=torch.float64)
    x2 = torch.randn(7, 3, dtype=torch.float64)
    with record(net) as rec:
        y1 = net(x1)
        y2 = net(x2)
        _loss(y2).backward()
        _loss(y1).backward()  # backward of the older forward must be ignored
    zs, acts = _manual_mlp(net, x2)
    ref = torch.autograd.grad(_loss(zs[-1]), zs)
    np.testing.assert_allclose(list(rec.output_grad_norms.values()),
                               [g.norm().item() for g in ref], rtol=1e-10)
    assert rec.activation_stats["act1 (after Tanh)"].mean == pytest.approx(
        acts["act1"].mean().item(), rel=1e-12)

    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(3, 3)

        def forward(self, x):
            return self.fc(torch.tanh(self.fc(x)))

    model = Twice().double()
    with record(model) as rec:
        _loss(model(x1)).backward()
    z1 = model.fc(x1)
    z2 = model.fc(torch.tanh(z1))
    g1, g2 = torch.autograd.grad(_loss(z2), [z1, z2])
    assert rec.output_grad_norms["fc"] == pytest.approx(
        math.hypot(g1.norm().item(), g2.norm().item()), rel=1e-10)


def test_weight_grad_norms_frozen_at_exit():
    """Read at exit, so a zero_grad() after the block does not change them."""
    net = mlp(3, 1, 4, 2, seed=0)
    with record(net) as rec:
        net(torch.randn(5, 3)).sum().backward()
        live = rec.weight_grad_norms
    net.zero_grad(set_to_none=True)
    assert rec.weight_grad_norms == live and all(v > 0 for v in live.values())


def test_hooks_removed_after_exception():
    net = mlp(3, 1, 4, 3, seed=0)
    with pytest.raises(RuntimeError, match="boom"):
        with record(net, keep_activations=True):
            net(torch.randn(2, 3))
            assert not _all_hooks_removed(net)
            raise RuntimeError("boom")
    assert _all_hooks_removed(net)


def test_record_rejects_non_module():
    with pytest.raises(TypeError,
                       match=r"model must be a torch.nn.Module, got \[Linear\(.*\)\] \(list\)"):
        record([nn.Linear(2, 2)])


# ----------------------------------------------------------------------- dead units
@pytest.mark.parametrize("activation", ["relu", "leaky_relu", "prelu"])
def test_dead_units_bias_shift(activation):
    """Inputs in [-1, 1] and |W x| < 10: bias -10 -> every unit dead, +10 -> none;
    half the units shifted each way -> 0.5 in the first layer."""
    net = mlp(3, 1, 16, 2, activation=activation, weight_scale=1.0, seed=0)
    x = torch.rand(64, 3, generator=torch.Generator().manual_seed(1)) * 2 - 1
    assert net.fc1.weight.abs().sum(1).max() < 10  # precondition: |W x| < 10
    cls = type(net.act1).__name__
    labels = [f"act1 (after {cls})", f"act2 (after {cls})"]
    for shift, expected in [(-10.0, 1.0), (10.0, 0.0)]:
        with torch.no_grad():
            net.fc1.bias.fill_(shift)
            net.fc2.bias.fill_(shift)
            net.fc2.weight.mul_(0.01)  # keeps |W h| < 10 in layer 2 as well
        assert dead_units(net, x) == {labels[0]: expected, labels[1]: expected}
        with torch.no_grad():
            net.fc2.weight.mul_(100.0)
    with torch.no_grad():
        net.fc1.bias[:8] = -10.0
        net.fc1.bias[8:] = 10.0
    assert dead_units(net, x)[labels[0]] == 0.5
    assert _all_hooks_removed(net)


@SETTINGS
@given(activation=st.sampled_from(["relu", "leaky_relu"]), seed=st.integers(0, 1000),
       shift=st.floats(-2.0, 1.0))
def test_dead_units_match_numpy_preactivations(activation, seed, shift):
    """Reference: a unit is dead when its pre-activation is <= 0 (ReLU) / < 0 (leaky)
    for every row of the batch, computed in numpy."""
    net = mlp(3, 1, 20, 1, activation=activation, bias_std=1.0, seed=seed).double()
    with torch.no_grad():
        net.fc1.bias.add_(shift)
    x = torch.randn(10, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    z = x.numpy() @ net.fc1.weight.detach().numpy().T + net.fc1.bias.detach().numpy()
    off = (z <= 0) if activation == "relu" else (z < 0)
    got = dead_units(net, x)
    assert list(got.values()) == [pytest.approx(off.all(axis=0).mean(), abs=1e-12)]


def test_dead_units_errors():
    with pytest.raises(ValueError, match="model has no ReLU-family activation"):
        dead_units(mlp(2, 1, 3, 1, activation="tanh"), torch.randn(2, 2))
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        dead_units("net", torch.randn(2, 2))


# -------------------------------------------------------------------- update ratios
def test_update_ratios_match_numpy():
    """||W_after - W_before|| / ||W_before|| per Linear weight, computed with numpy."""
    net = mlp(4, 2, 6, 2, seed=0)
    before = snapshot_weights(net)
    assert list(before) == ["fc1", "fc2", "out"]
    ref_before = {n: w.numpy().copy() for n, w in before.items()}
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for m in net:
            if isinstance(m, nn.Linear):
                m.weight.add_(1e-3 * torch.randn(m.weight.shape, generator=gen))
    ratios = update_ratios(before, net)
    for name, w0 in ref_before.items():
        w1 = net.get_submodule(name).weight.detach().numpy()
        assert ratios[name] == pytest.approx(np.linalg.norm(w1 - w0) / np.linalg.norm(w0),
                                             rel=1e-5)
    assert np.array_equal(before["fc1"].numpy(), ref_before["fc1"])  # snapshot is a copy


def test_update_ratios_errors():
    net = mlp(4, 2, 6, 2, seed=0)
    with pytest.raises(TypeError, match="before must be a dict"):
        update_ratios([1], net)
    with pytest.raises(TypeError, match=r"before\['fc1'\] must be a torch tensor, got 1.0"):
        update_ratios({"fc1": 1.0}, net)
    with pytest.raises(ValueError, match="before has layer 'fc9', which model does not have"):
        update_ratios({"fc9": torch.zeros(2)}, net)
    with pytest.raises(ValueError, match=r"before\['fc1'\] has shape \(2,\)"):
        update_ratios({"fc1": torch.zeros(2)}, net)
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        update_ratios({}, None)


class _AttentionLSTM(nn.Module):
    """A sequence model whose layers' weights are not all called ``weight``:
    ``nn.MultiheadAttention`` (``in_proj_weight``, its ``out_proj`` a Linear) and
    ``nn.LSTM`` (``weight_ih_l0`` first)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.embed = nn.Linear(3, 8)
        self.attn = nn.MultiheadAttention(8, 2, batch_first=True)
        self.lstm = nn.LSTM(8, 6, batch_first=True)
        self.out = nn.Linear(6, 1)

    def forward(self, x):
        h = self.embed(x)
        h, _ = self.attn(h, h, h)
        h, _ = self.lstm(h)
        return self.out(h[:, -1])


def _step(net: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor) -> None:
    opt.zero_grad()
    net(x).pow(2).mean().backward()
    opt.step()


def test_update_ratios_cover_attention_and_lstm_against_state_dict():
    """update_ratios reports the attention layer (its in_proj_weight) and the LSTM (its
    weight_ih_l0) as well as the Linear layers. Reference: the ratio computed with numpy
    from the model's state_dict before and after one optimizer.step()."""
    net = _AttentionLSTM()
    x = torch.randn(4, 5, 3, generator=torch.Generator().manual_seed(1))
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    state_before = {k: v.numpy().copy() for k, v in net.state_dict().items()}
    before = snapshot_weights(net)
    _step(net, opt, x)
    state_after = {k: v.numpy() for k, v in net.state_dict().items()}
    ratios = update_ratios(before, net)
    keys = {"embed": "embed.weight", "attn": "attn.in_proj_weight",
            "attn.out_proj": "attn.out_proj.weight", "lstm": "lstm.weight_ih_l0",
            "out": "out.weight"}
    assert list(ratios) == list(keys)
    for layer, key in keys.items():
        w0, w1 = state_before[key].astype(np.float64), state_after[key].astype(np.float64)
        expected = np.linalg.norm(w1 - w0) / np.linalg.norm(w0)
        assert ratios[layer] == pytest.approx(expected, rel=1e-12), layer


def test_update_ratios_zero_and_nan_weights():
    """The documented edge cases, against IEEE division: a zero weight that moved gives
    inf, one that did not move NaN (0/0), a NaN weight NaN."""
    net = mlp(3, 1, 4, 2, seed=0)
    before = snapshot_weights(net)
    before["fc1"].zero_()                     # W_before = 0, W_after != 0
    before["fc2"] = net.fc2.weight.detach().clone()
    with torch.no_grad():
        net.fc2.weight.zero_()
    before["fc2"].zero_()                     # W_before = W_after = 0
    with torch.no_grad():
        net.out.weight[0, 0] = math.nan
    ratios = update_ratios(before, net)
    assert ratios["fc1"] == math.inf
    assert math.isnan(ratios["fc2"]) and math.isnan(ratios["out"])


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_one_update_ratio_in_train_diagnose_watch_and_update_ratios(dtype):
    """Property (one definition, one weight rule): the first SGD step's ratio of every
    layer is the same number in train(track_update_ratios=True), diagnose(optimizer=...),
    watch() and update_ratios() -- exactly in float64; in float32 train and watch
    measure the float32 weights in float32 and diagnose and update_ratios in float64, so
    they agree to float32 rounding. Reference: update_ratios around a hand-written step."""
    from companion.data import teacher_regression
    from companion.diagnose import diagnose, watch
    from companion.train import train

    x, y = teacher_regression(64, 4, seed=0)
    x, y = x.to(dtype), y.to(dtype)

    def fresh():
        return mlp(4, 1, width=8, depth=3, seed=0).to(dtype)

    net = fresh()
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    before = snapshot_weights(net)
    opt.zero_grad()
    nn.functional.mse_loss(net(x), y).backward()
    opt.step()
    reference = update_ratios(before, net)

    history = train(fresh(), x, y, steps=1, lr=0.1, track_update_ratios=True)
    trained = {k: float(v[0]) for k, v in history.update_ratios.items()}
    net = fresh()
    report_ratios = {r["name"]: r["update_ratio"] for r in diagnose(
        net, x, y, optimizer=torch.optim.SGD(net.parameters(), lr=0.1)).rows
        if r["kind"] == "layer"}
    net = fresh()
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    with watch(net, opt, every=1) as w:
        opt.zero_grad()
        nn.functional.mse_loss(net(x), y).backward()
        opt.step()
    watched = w.measurements[0].update_ratio

    assert list(reference) == list(trained) == list(watched) == ["fc1", "fc2", "fc3", "out"]
    rel = 0 if dtype == torch.float64 else 1e-6
    for name, r in reference.items():
        assert report_ratios[name] == r                  # both in float64, same step
        assert trained[name] == pytest.approx(r, rel=rel, abs=0)
        assert watched[name] == pytest.approx(r, rel=rel, abs=0)
        assert watched[name] == trained[name]             # both in the weights' precision


def test_dead_units_refuses_an_empty_or_nonfinite_batch():
    """An empty batch would report every unit dead (all() of nothing is True)."""
    net = mlp(4, 1, 8, 2, activation="relu", seed=0)
    with pytest.raises(ValueError,
                       match=r"x must not be empty, got a float32 tensor of shape \(0, 4\)"):
        dead_units(net, torch.ones(0, 4))
    x = torch.randn(8, 4)
    x[2, 3] = math.nan
    with pytest.raises(ValueError, match=r"x must be finite data, got 1 NaN"):
        dead_units(net, x)
    with pytest.raises(TypeError, match=r"x must be a torch tensor, got None"):
        dead_units(net, None)


# ------------------------------------------------- backprop_gradients / gradient_histograms
@SETTINGS
@given(activation=st.sampled_from(["sigmoid", "tanh", "relu", "linear"]),
       depth=st.integers(1, 4), width=st.integers(1, 10), seed=st.integers(0, 1000))
def test_backprop_gradients_match_autograd_on_intermediate_outputs(activation, depth, width, seed):
    """Every value of backprop_gradients == torch.autograd.grad(L, z_l) for the hand-run
    forward (float64), layers fc1 .. out in order; p.grad is left as it was."""
    from companion.diagnostics import backprop_gradients

    net = mlp(3, 2, width, depth, activation=activation, bias_std=0.1, seed=seed).double()
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(6, 3, dtype=torch.float64, generator=gen)
    y = torch.randn(6, 2, dtype=torch.float64, generator=gen)
    zs, _ = _manual_mlp(net, x)
    ref = torch.autograd.grad(torch.nn.functional.mse_loss(zs[-1], y), zs)
    got = backprop_gradients(net, x, y, torch.nn.functional.mse_loss)
    assert list(got) == [f"fc{i}" for i in range(1, depth + 1)] + ["out"]
    for (name, values), g in zip(got.items(), ref):
        assert values.dtype == np.float64 and values.shape == (g.numel(),)
        np.testing.assert_allclose(values, g.flatten().numpy(), rtol=1e-12, atol=1e-300)
    assert all(p.grad is None for p in net.parameters())
    assert _all_hooks_removed(net)


def test_backprop_gradients_shared_layer_and_existing_grads():
    """A layer called twice contributes both calls' gradients (autograd on each output);
    existing .grad values are not touched."""
    from companion.diagnostics import backprop_gradients

    torch.manual_seed(0)
    lin = nn.Linear(4, 4).double()

    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = lin

        def forward(self, x):
            return self.lin(torch.tanh(self.lin(x)))

    net = Twice()
    x = torch.randn(5, 4, dtype=torch.float64)
    y = torch.zeros(5, 4, dtype=torch.float64)
    for p in net.parameters():
        p.grad = torch.full_like(p, 7.0)
    z1 = lin(x)
    z2 = lin(torch.tanh(z1))
    ref = torch.autograd.grad(torch.nn.functional.mse_loss(z2, y), [z1, z2])
    got = backprop_gradients(net, x, y, torch.nn.functional.mse_loss)
    assert list(got) == ["lin"]
    np.testing.assert_allclose(got["lin"], torch.cat([g.flatten() for g in ref]).numpy(),
                               rtol=1e-12)
    assert all(torch.equal(p.grad, torch.full_like(p, 7.0)) for p in net.parameters())


def test_gradient_histograms_share_bins_and_count_every_value():
    """Counts are np.histogram of backprop_gradients' values on one shared range (default
    +-max|value|), so every value is counted once; std is np.std of the values."""
    from companion.diagnostics import backprop_gradients, gradient_histograms

    net = mlp(4, 3, 8, 3, activation="tanh", seed=0)
    x = torch.randn(16, 4, generator=torch.Generator().manual_seed(0))
    y = torch.arange(16) % 3
    loss_fn = torch.nn.functional.cross_entropy
    values = backprop_gradients(net, x, y, loss_fn)
    hists = gradient_histograms(net, x, y, loss_fn, bins=7)
    assert list(hists) == list(values)
    m = max(np.abs(v).max() for v in values.values())
    for name, h in hists.items():
        np.testing.assert_allclose(h.edges, np.linspace(-m, m, 8))
        assert h.counts.sum() == values[name].size
        np.testing.assert_array_equal(h.counts, np.histogram(values[name], 7, (-m, m))[0])
        assert h.std == pytest.approx(values[name].std())
    narrow = gradient_histograms(net, x, y, loss_fn, bins=4, range=(-1e-9, 1e-9))
    assert all(h.counts.sum() <= values[n].size for n, h in narrow.items())


def test_backprop_gradients_refuse_mismatched_targets_and_frozen_models():
    from companion.diagnostics import backprop_gradients

    net = mlp(4, 2, 8, 2, seed=0)
    x = torch.randn(8, 4)
    with pytest.raises(ValueError, match="y must have one row per example of x"):
        backprop_gradients(net, x, torch.zeros(5, 2), torch.nn.functional.mse_loss)
    net.requires_grad_(False)
    with pytest.raises(ValueError, match="requires grad"):
        backprop_gradients(net, x, torch.zeros(8, 2), torch.nn.functional.mse_loss)
