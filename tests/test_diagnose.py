"""Tests of companion.diagnose, and of the gallery of broken runs it is checked on.

What is tested against what:

1. Healthy models give no finding (the promise the thresholds are set for): He-initialised
   ReLU MLPs, residual MLPs with batch or layer norm, a pre-LN TokenTransformer, and the
   CNN, LSTM and TransformerEncoder of ``gallery.foreign_models()``; without an
   optimizer, with Adam (lr 1e-3) and with SGD (lr 0.01).
2. Every run of ``gallery.RUNS`` shows its symptom and every fix removes it (the table).
3. ``diagnose`` leaves the model alone: bitwise equality (``torch.equal``) with clones
   taken before the call, of parameters, gradients (and ``None`` gradients), buffers,
   every module's train/eval mode, torch's RNG state and the optimizer's state_dict.
4. The numbers of ``report.rows``: ``torch.autograd`` on a forward pass written out
   module by module in float64 (``retain_grad`` on each output), ``weight.grad`` of a
   plain ``loss.backward()``, ``Tensor.norm()``, one step of a fresh optimizer (or one
   loaded with the same state_dict) on a deep copy, numpy statistics of the
   hand-computed activations, log C and the population variance of y, and the
   random-direction loss <f(x), r>/B rebuilt with a seeded ``torch.Generator``.
5. Each symptom on a minimal model whose triggering number is a closed form, built on
   both sides of its threshold: a chain of Linear layers W = cI (signal ratio c^k),
   constant logits (cross-entropy log(1 + (C-1) e^a)), a constant prediction (MSE
   Var(y) + (b - mean y)^2), a one-layer SGD step (update ratio lr |g| / |W|), a layer
   whose units have a chosen share of saturated or dead outputs, a weight set to inf/NaN.
6. Layer names on foreign models: ``named_modules()`` filtered to the modules that own
   parameters (MultiheadAttention's ``out_proj``, which is never called, left out).
7. ``watch``: ``History.losses`` of ``companion.train.train``, ceil(steps / every)
   measured steps, ``record()`` of the same step on a copy, the update ratio of the
   weights before and after that step computed by hand, hand-written loss curves on
   both sides of the divergence, plateau and dead-unit-growth rules.
8. Presentation (text, HTML with ``html.escape``, the figure), 9. every error message,
   10. ``SYMPTOMS`` (every chapter exists as a notebook).


"""
from __future__ import annotations

import copy
import functools
import html
import math
from collections import OrderedDict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from torch import nn  # noqa: E402

from companion import data, gallery, nets, train  # noqa: E402
from companion.diagnose import (DEAD_FRACTION, DEAD_GROWTH, DIVERGED_FACTOR,  # noqa: E402
                                EXPLODING_RATIO, INITIAL_LOSS_FACTOR, INITIAL_MSE_FACTOR,
                                INITIAL_LOSS_MIN_EXCESS, MIN_EXAMPLES,
                                PLATEAU_DROP, PLATEAU_MIN_STEPS, SATURATION_FRACTION,
                                SYMPTOMS, UPDATE_RATIO_HIGH, UPDATE_RATIO_LOW,
                                VANISHING_RATIO, ForwardError, Report, Watcher, diagnose,
                                watch)
from companion.diagnostics import dead_units, record  # noqa: E402
from companion.residual import ResidualMLP, TokenTransformer  # noqa: E402

BOOK = Path(__file__).resolve().parents[1] / "book"
REGRESSION = data.teacher_regression(256, 16, seed=0)
SPIRALS = data.spirals(300, 3, seed=0)
TASKS = {"regression": (*REGRESSION, 1), "spirals": (*SPIRALS, 3)}   # x, y, outputs
OPTIMIZERS = {"none": None,
              "adam": lambda params: torch.optim.Adam(params, lr=1e-3),
              "sgd": lambda params: torch.optim.SGD(params, lr=0.01)}


pytestmark = pytest.mark.usefixtures("one_thread")   # small models: one thread


# ------------------------------------------------------------------------- helpers
def _randn(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed),
                       dtype=torch.float64)


def _optimizer(kind: str, model: nn.Module):
    make = OPTIMIZERS[kind]
    return None if make is None else make(model.parameters())


def _assert_no_findings(report: Report, what: str) -> None:
    assert report.findings == [], f"{what}: " + " | ".join(map(str, report.findings))


def _layer_rows(report: Report) -> list[dict]:
    return [r for r in report.rows if r["kind"] == "layer"]


def _activation_rows(report: Report) -> list[dict]:
    return [r for r in report.rows if r["kind"] == "activation"]


def _hooks_removed(model: nn.Module, optimizer=None) -> bool:
    modules_clean = all(not m._forward_hooks and not m._forward_pre_hooks
                        and not m._backward_hooks for m in model.modules())
    return modules_clean and (optimizer is None or (
        not optimizer._optimizer_step_pre_hooks and not optimizer._optimizer_step_post_hooks))


def _hand_forward(net: nn.Sequential, x: torch.Tensor) -> "OrderedDict[str, torch.Tensor]":
    """Reference forward of an nn.Sequential, child by child and outside any hook:
    child name -> its output, which retains its gradient."""
    outs, h = OrderedDict(), x
    for name, module in net.named_children():
        h = module(h)
        h.retain_grad()
        outs[name] = h
    return outs


def _step(opt: torch.optim.Optimizer, loss: torch.Tensor) -> None:
    """One training step on ``loss``."""
    opt.zero_grad()
    loss.backward()
    opt.step()


def _weights(model: nn.Module) -> dict[str, torch.Tensor]:
    """name -> detached clone of the weight of every child with one."""
    return {n: m.weight.detach().clone() for n, m in model.named_children()
            if isinstance(getattr(m, "weight", None), torch.Tensor)}


def _ratio(before: torch.Tensor, after: torch.Tensor) -> float:
    return ((after.double() - before.double()).norm() / before.double().norm()).item()


def _sequential(**layers: nn.Module) -> nn.Sequential:
    return nn.Sequential(OrderedDict(layers))


def _linear(n_in: int, n_out: int, weight, bias=None) -> nn.Linear:
    """A float64 Linear with the given weight (and bias; none if None), no RNG drawn."""
    layer = nn.utils.skip_init(nn.Linear, n_in, n_out, bias=bias is not None,
                               dtype=torch.float64)
    with torch.no_grad():
        layer.weight.copy_(torch.as_tensor(weight, dtype=torch.float64))
        if bias is not None:
            layer.bias.copy_(torch.as_tensor(bias, dtype=torch.float64))
    return layer


def _check_finding(report: Report, symptom: str, *, severity: str, layers=None,
                   evidence=()):
    """The one finding of ``symptom``: its severity, layers, the numbers in its evidence,
    and remedy and chapter from SYMPTOMS."""
    found = [f for f in report.findings if f.symptom == symptom]
    assert len(found) == 1, [str(f) for f in report.findings]
    f = found[0]
    assert f.severity == severity, str(f)
    if layers is not None:
        assert f.layers == tuple(layers), str(f)
    for text in evidence:
        assert text in f.evidence, (text, f.evidence)
    remedy, chapter = SYMPTOMS[symptom].remedies.get(
        f.cause, (SYMPTOMS[symptom].remedy, SYMPTOMS[symptom].chapter))
    assert (f.remedy, f.chapter) == (remedy, chapter)
    return f


def _assert_same(a, b, path: str = "state") -> None:
    """Recursive bitwise equality of nested dicts/lists of tensors and numbers."""
    assert type(a) is type(b), path
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b), path
    elif isinstance(a, dict):
        assert list(a) == list(b), path
        for k in a:
            _assert_same(a[k], b[k], f"{path}[{k!r}]")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for i, (u, v) in enumerate(zip(a, b)):
            _assert_same(u, v, f"{path}[{i}]")
    else:
        assert a == b, path


@functools.lru_cache(maxsize=None)
def _gallery(name: str, fix: str | None = None) -> gallery.Result:
    """Each (run, fix) trains once per session."""
    return gallery.run(name, fix)


# ------------------------------------------------------------- 1. healthy models
@pytest.mark.parametrize("opt", list(OPTIMIZERS))
@pytest.mark.parametrize("task", list(TASKS))
@pytest.mark.parametrize("depth", [4, 10, 20])
def test_he_relu_mlps_give_no_finding(depth, task, opt):
    """Reference: the thresholds are set so that He-initialised ReLU MLPs pass (module
    docstring). MSE on regression, cross-entropy on integer labels (the default)."""
    x, y, n_out = TASKS[task]
    for seed in (0, 1, 2):
        net = nets.mlp(x.shape[1], n_out, 32, depth, "relu", init="kaiming_normal", seed=seed)
        _assert_no_findings(diagnose(net, x, y, optimizer=_optimizer(opt, net)),
                            f"mlp depth {depth} seed {seed} on {task}, optimizer {opt}")


@pytest.mark.parametrize("opt", list(OPTIMIZERS))
@pytest.mark.parametrize("norm", ["batch", "layer"])
@pytest.mark.parametrize("depth", [4, 16])
def test_residual_mlps_with_normalization_give_no_finding(depth, norm, opt):
    """Reference: the thresholds' promise for residual networks with normalization."""
    x, y = SPIRALS
    for seed in (0, 1):
        net = ResidualMLP(2, 3, 32, depth, norm=norm, seed=seed)
        _assert_no_findings(diagnose(net, x, y, optimizer=_optimizer(opt, net)),
                            f"ResidualMLP depth {depth} norm {norm} seed {seed}, {opt}")


def test_pre_ln_transformer_with_adam_gives_no_finding():
    """Reference: the thresholds' promise for pre-LN transformers (per-token
    cross-entropy, Adam)."""
    tokens = torch.randint(0, 16, (16, 8), generator=torch.Generator().manual_seed(0))
    net = TokenTransformer(16, 8, num_layers=6, norm_first=True, seed=0)
    report = diagnose(net, tokens, tokens.roll(1, dims=1), loss=gallery.token_loss,
                      optimizer=torch.optim.Adam(net.parameters(), lr=1e-3))
    _assert_no_findings(report, "pre-LN TokenTransformer")


@pytest.mark.parametrize("opt", list(OPTIMIZERS))
@pytest.mark.parametrize("name", ["CNN", "LSTM", "TransformerEncoder"])
def test_foreign_models_give_no_finding(name, opt):
    """Reference: the thresholds' promise for the small CNN, the LSTM and the
    TransformerEncoder, each with its own loss."""
    model, x, y, loss = gallery.foreign_models()[name]
    _assert_no_findings(diagnose(model, x, y, loss=loss, optimizer=_optimizer(opt, model)),
                        f"{name}, optimizer {opt}")


# ------------------------------------------------------------------- 2. the gallery
GALLERY_FIXES = [(name, fix) for name, entry in gallery.RUNS.items() for fix in entry.fixes]


@pytest.mark.parametrize("name", list(gallery.RUNS))
def test_gallery_run_shows_its_symptom(name):
    """Reference: the symptom RUNS records for the failure the chapter taught."""
    result = _gallery(name)
    assert gallery.RUNS[name].symptom in result.symptoms, [str(f) for f in result.findings]


@pytest.mark.parametrize("name, fix", GALLERY_FIXES)
def test_gallery_fix_removes_the_symptom(name, fix):
    """Reference: RUNS' table; the fix of the chapter removes the run's symptom."""
    result = _gallery(name, fix)
    assert gallery.RUNS[name].symptom not in result.symptoms, [str(f) for f in result.findings]


def test_gallery_rejects_unknown_names():
    with pytest.raises(ValueError, match="name must be one of"):
        gallery.run("no such run")
    with pytest.raises(ValueError, match="fix must be None or one of"):
        gallery.run("vanishing", "no such fix")


# --------------------------------------------------------- 3. the model is untouched
def _mixed_model() -> tuple[nn.Sequential, torch.optim.Optimizer, torch.Tensor, torch.Tensor]:
    """BatchNorm1d and Dropout in train mode, a block in eval mode, after three Adam
    steps (non-trivial running statistics and optimizer state); some gradients set by
    hand, the others None. The global RNG is forked, so building it draws nothing."""
    x, y = _randn(32, 4, seed=1).float(), torch.arange(32) % 3
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = _sequential(
            fc1=nn.Linear(4, 16), bn1=nn.BatchNorm1d(16), act1=nn.ReLU(), drop=nn.Dropout(0.5),
            block=_sequential(fc=nn.Linear(16, 16), bn=nn.BatchNorm1d(16), act=nn.Tanh()),
            out=nn.Linear(16, 3))
        model.block.eval()
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        for _ in range(3):
            _step(opt, F.cross_entropy(model(x), y))
    for i, p in enumerate(model.parameters()):
        p.grad = None if i % 2 else _randn(*p.shape, seed=10 + i).float()
    return model, opt, x, y


def _model_state(model: nn.Module, opt) -> dict:
    return {"parameters": [p.detach().clone() for p in model.parameters()],
            "grads": [None if p.grad is None else p.grad.clone() for p in model.parameters()],
            "buffers": [b.clone() for b in model.buffers()],
            "modes": [m.training for m in model.modules()],
            "rng": torch.get_rng_state(),
            "optimizer": copy.deepcopy(opt.state_dict())}


def test_diagnose_leaves_model_optimizer_and_rng_untouched():
    """Reference: clones taken before the call (bitwise): parameters, gradients (None
    stays None), BatchNorm running_mean/var/num_batches_tracked, modes, torch's RNG
    state (Dropout draws in train mode), Adam's state_dict; and no hook is left."""
    model, opt, x, y = _mixed_model()
    assert any(p.grad is None for p in model.parameters())
    before = _model_state(model, opt)
    report = diagnose(model, x, y, optimizer=opt)
    assert not math.isnan(_layer_rows(report)[0]["update_ratio"])    # a step was measured
    _assert_same(_model_state(model, opt), before)
    assert _hooks_removed(model, opt)


def test_diagnose_inside_a_watch_of_the_same_optimizer_counts_no_step():
    """Reference: the watcher's step counter and measurements before the call (the
    copied optimizer's step must not reach the watcher's step hook)."""
    model, opt, x, y = _mixed_model()
    with watch(model, opt, every=1) as w:
        diagnose(model, x, y, optimizer=opt)
        assert (w.step, len(w.measurements)) == (0, 0)


# --------------------------------------------------- 4. the numbers against references
@pytest.mark.parametrize("activation, norm", [("tanh", None), ("relu", None),
                                              ("leaky_relu", None), ("relu", "layer")])
def test_rows_match_autograd_and_numpy(activation, norm):
    """Reference, float64: signal = ||dL/dz|| from retain_grad on a forward written out
    module by module; grad_norm = weight.grad.norm() of a plain backward; weight_norm =
    weight.norm(); update_ratio = |W' - W|/|W| after one step of a fresh SGD (momentum)
    on a deep copy; signal_ratio = signal / the output layer's; activation mean, std
    (ddof 0), saturated (|y| > 0.98 for tanh) and dead (ReLU: y == 0, leaky: z < 0, for
    every example) with numpy; the loss with F.mse_loss."""
    net = nets.mlp(3, 2, 8, 3, activation, 2.0, bias_std=0.5, norm=norm, seed=1).double()
    with torch.no_grad():
        net.fc2.bias[:3] = -100.0             # some units dead on every example
    x, y = _randn(32, 3, seed=1), _randn(32, 2, seed=2)
    make_opt = functools.partial(torch.optim.SGD, lr=0.1, momentum=0.9)
    report = diagnose(net, x, y, optimizer=make_opt(net.parameters()))

    ref = copy.deepcopy(net)
    outs = _hand_forward(ref, x)
    loss = F.mse_loss(outs["out"], y)
    loss.backward()
    w0 = _weights(ref)
    make_opt(ref.parameters()).step()
    assert report.loss == pytest.approx(loss.item(), rel=1e-12)

    layers = _layer_rows(report)
    assert [r["name"] for r in layers] == list(w0)
    for r in layers:
        module = ref.get_submodule(r["name"])
        signal = outs[r["name"]].grad.norm().item()
        assert r["type"] == type(module).__name__
        assert r["signal"] == pytest.approx(signal, rel=1e-10)
        assert r["signal_ratio"] == pytest.approx(signal / outs["out"].grad.norm().item(),
                                                  rel=1e-10)
        assert r["grad_norm"] == pytest.approx(module.weight.grad.norm().item(), rel=1e-10)
        assert r["weight_norm"] == pytest.approx(w0[r["name"]].norm().item(), rel=1e-12)
        assert r["update_ratio"] == pytest.approx(_ratio(w0[r["name"]], module.weight),
                                                  rel=1e-9)

    names = list(outs)
    acts = {f"{n} (after {type(net.get_submodule(n)).__name__})": n for n in names
            if n.startswith("act")}
    rows = _activation_rows(report)
    assert [r["name"] for r in rows] == list(acts)
    for r in rows:
        n = acts[r["name"]]
        a = outs[n].detach().numpy()
        z = outs[names[names.index(n) - 1]].detach().numpy()     # the activation's input
        assert r["mean"] == pytest.approx(a.mean(), rel=1e-9, abs=1e-12)
        assert r["std"] == pytest.approx(a.std(), rel=1e-9, abs=1e-12)
        if activation == "tanh":
            assert r["saturated"] == pytest.approx(np.mean(np.abs(a) > 0.98))
            assert math.isnan(r["dead"])
        else:
            assert math.isnan(r["saturated"])
            off = (z < 0) if activation == "leaky_relu" else (a == 0)
            assert r["dead"] == pytest.approx(off.all(axis=0).mean())
    if norm is None and activation != "tanh":
        assert rows[1]["dead"] >= 3 / 8                      # the test sees dead units


def test_update_ratio_continues_the_optimizer_state():
    """Reference: a new Adam over a deep copy of the model, loaded with the optimizer's
    state_dict (after three real steps), stepping once on a plain backward's
    gradients: |W' - W|/|W| per layer."""
    net = nets.mlp(3, 2, 8, 2, "tanh", seed=0).double()
    x, y = _randn(32, 3, seed=3), _randn(32, 2, seed=4)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(3):
        _step(opt, F.mse_loss(net(x), y))
    report = diagnose(net, x, y, optimizer=opt)

    ref = copy.deepcopy(net)
    twin = torch.optim.Adam(ref.parameters(), lr=1e-2)
    twin.load_state_dict(opt.state_dict())
    twin.zero_grad()
    F.mse_loss(ref(x), y).backward()
    w0 = _weights(ref)
    twin.step()
    expected = {n: _ratio(w, ref.get_submodule(n).weight) for n, w in w0.items()}
    got = {r["name"]: r["update_ratio"] for r in _layer_rows(report)}
    assert got == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("loss", [None, "mse", F.mse_loss, nn.MSELoss(), "cross_entropy",
                                  F.cross_entropy, nn.CrossEntropyLoss()])
def test_baseline_is_log_c_or_the_variance_of_y(loss):
    """Reference: log C for cross-entropy (C = the output's width), the mean over
    outputs of the population variance of y for MSE; report.loss is torch's loss of
    the same prediction."""
    net = nets.mlp(3, 5, 8, 2, "tanh", seed=0).double()
    x = _randn(40, 3)
    labels = torch.arange(40) % 5
    target = _randn(40, 5, seed=1) * torch.arange(1.0, 6.0, dtype=torch.float64)
    ce = loss in ("cross_entropy", F.cross_entropy) or isinstance(loss, nn.CrossEntropyLoss)
    y = labels if ce or loss is None else target
    report = diagnose(net, x, y, loss=loss)
    if ce or loss is None:
        assert report.baseline == pytest.approx(math.log(5), rel=1e-12)
        assert report.loss == pytest.approx(F.cross_entropy(net(x), labels).item(), rel=1e-12)
    else:
        assert report.baseline == pytest.approx(target.var(0, unbiased=False).mean().item(),
                                                rel=1e-12)
        assert report.loss == pytest.approx(F.mse_loss(net(x), target).item(), rel=1e-12)


def test_custom_loss_has_no_baseline():
    """Reference: the callable's own value; a callable's baseline is unknown (None),
    with y and without it (f(prediction))."""
    net = nets.mlp(3, 2, 8, 2, "tanh", seed=0).double()
    x, y = _randn(16, 3), _randn(16, 2, seed=1)
    with_y = diagnose(net, x, y, loss=lambda p, t: (p - t).abs().mean())
    assert with_y.loss == pytest.approx((net(x) - y).abs().mean().item(), rel=1e-12)
    without_y = diagnose(net, x, loss=lambda p: p.pow(2).mean())
    assert without_y.loss == pytest.approx(net(x).pow(2).mean().item(), rel=1e-12)
    assert with_y.baseline is None and without_y.baseline is None


@pytest.mark.parametrize("seed", [0, 7])
def test_without_y_the_signal_is_that_of_a_seeded_random_direction(seed):
    """Reference: the loss <f(x), r>/B with r = torch.randn(out.shape,
    generator=torch.Generator().manual_seed(seed), dtype=float64), backpropagated
    through the hand-written forward; two calls give identical reports (determinism)
    and another seed other signals."""
    net = nets.mlp(3, 2, 8, 3, "tanh", seed=0).double()
    x = _randn(24, 3)
    report = diagnose(net, x, seed=seed)
    np.testing.assert_equal(diagnose(net, x, seed=seed).rows, report.rows)
    assert report.loss is None and report.baseline is None

    outs = _hand_forward(copy.deepcopy(net), x)
    r = torch.randn(outs["out"].shape, generator=torch.Generator().manual_seed(seed),
                    dtype=torch.float64)
    ((outs["out"] * r).sum() / x.shape[0]).backward()
    got = {row["name"]: row["signal"] for row in _layer_rows(report)}
    assert got == pytest.approx({n: outs[n].grad.norm().item() for n in got}, rel=1e-10)
    other = {row["name"]: row["signal"] for row in _layer_rows(diagnose(net, x, seed=seed + 1))}
    assert other != pytest.approx(got, rel=1e-3)


def test_a_model_with_dropout_gives_the_same_report_twice():
    """Reference: the first call's rows (torch's RNG is restored after each call, so
    the second draws the same dropout masks)."""
    model, _, x, y = _mixed_model()
    np.testing.assert_equal(diagnose(model, x, y).rows, diagnose(model, x, y).rows)


def test_tuple_and_dict_inputs_and_tuple_outputs():
    """Reference: the report of the plain call model(x) (model(*x) for a tuple,
    model(**x) for a dict; the first tensor of a returned tuple is the prediction)."""
    net = ResidualMLP(2, 3, 8, 2, seed=0).double()
    x, y = _randn(16, 2), torch.arange(16) % 3
    ref = diagnose(net, x, y).rows
    np.testing.assert_equal(diagnose(net, (x,), y).rows, ref)
    np.testing.assert_equal(diagnose(net, {"x": x}, y).rows, ref)

    class PairOutput(nn.Linear):
        def forward(self, u):
            return super().forward(u), "extra"

    pair = nn.utils.skip_init(PairOutput, 2, 3, dtype=torch.float64)
    with torch.no_grad():
        pair.weight.copy_(_randn(3, 2, seed=5))
        pair.bias.zero_()
    plain = _linear(2, 3, pair.weight.detach(), torch.zeros(3))
    untyped = [{k: v for k, v in r.items() if k != "type"} for r in diagnose(pair, x, y).rows]
    np.testing.assert_equal(untyped, [{k: v for k, v in r.items() if k != "type"}
                                      for r in diagnose(plain, x, y).rows])


# ------------------------------------------------- 5. each symptom, both sides of it
def _identity_chain(c: float, k: int = 3, d: int = 4) -> nn.Sequential:
    """Layers l0..lk, each W = c I without bias (float64): l_j's output reaches the
    output through k - j more layers, each multiplying the backward signal by W^T = cI,
    so its signal is exactly c^(k-j) times the output layer's."""
    eye = torch.eye(d, dtype=torch.float64)
    return _sequential(**{f"l{j}": _linear(d, d, c * eye) for j in range(k + 1)})


@settings(max_examples=25, deadline=None)
@given(c=st.floats(0.2, 5.0), k=st.integers(1, 5), d=st.integers(1, 5))
def test_signal_ratio_of_a_chain_is_c_to_the_power_k(c, k, d):
    """Reference: the closed form c^(k - j) of _identity_chain."""
    report = diagnose(_identity_chain(c, k, d), _randn(8, d))
    ratios = [r["signal_ratio"] for r in _layer_rows(report)]
    assert ratios == pytest.approx([c ** (k - j) for j in range(k + 1)], rel=1e-12)


CHAIN_CASES = [
    # symptom, c (the ratio at l0 is c^3), flagged layers, severity
    ("vanishing", (0.98 * VANISHING_RATIO) ** (1 / 3), ("l0",), "warning"),
    (None, (1.02 * VANISHING_RATIO) ** (1 / 3), (), None),
    ("vanishing", 0.004, ("l0", "l1"), "error"),           # 6.4e-8 < VANISHING_RATIO^2
    ("exploding", (1.02 * EXPLODING_RATIO) ** (1 / 3), ("l0",), "warning"),
    (None, (0.98 * EXPLODING_RATIO) ** (1 / 3), (), None),
    ("exploding", 200.0, ("l0", "l1"), "error"),           # 8e6 > EXPLODING_RATIO^2
]


@pytest.mark.parametrize("symptom, c, layers, severity", CHAIN_CASES)
def test_vanishing_and_exploding_thresholds(symptom, c, layers, severity):
    """Reference: the chain's closed-form ratios c^3, c^2, c against VANISHING_RATIO
    and EXPLODING_RATIO (2 % on either side), and their squares for an error."""
    report = diagnose(_identity_chain(c), _randn(8, 4))
    if symptom is None:
        _assert_no_findings(report, f"c = {c}")
        return
    assert report.symptoms == [symptom]
    _check_finding(report, symptom, severity=severity, layers=layers,
                   evidence=(f"at l0 is {c ** 3:.1e}", "output layer l3",
                             f"{len(layers)} of 4 layers"))


def _units_model(activation: nn.Module, weight, bias) -> nn.Sequential:
    """fc: Linear(1, n) with the given weight column and bias, the activation, and
    out: Linear(n, 1) averaging the units. On an input of ones unit i is w_i + b_i."""
    n = len(weight)
    mean = torch.full((1, n), 1.0 / n, dtype=torch.float64)
    return _sequential(fc=_linear(1, n, torch.as_tensor(weight).reshape(n, 1), bias),
                       act=activation, out=_linear(n, 1, mean))


ONES = torch.ones(MIN_EXAMPLES, 1, dtype=torch.float64)   # enough examples to judge


@pytest.mark.parametrize("activation", [nn.Tanh, nn.Sigmoid])
@pytest.mark.parametrize("k", [29, 31])
def test_saturation_threshold(k, activation):
    """Reference: k of 100 units at pre-activation 10 (|tanh| > 0.98, sigmoid > 0.98),
    the rest at 0 (tanh 0, sigmoid 0.5): a saturated fraction of exactly k %, against
    SATURATION_FRACTION = 30 %."""
    assert SATURATION_FRACTION == 0.3
    model = _units_model(activation(), [10.0] * k + [0.0] * (100 - k), [0.0] * 100)
    report = diagnose(model, ONES)
    assert _activation_rows(report)[0]["saturated"] == pytest.approx(k / 100)
    label = f"act (after {activation.__name__})"
    if k < 30:
        _assert_no_findings(report, f"{k} % saturated")
    else:
        assert report.symptoms == ["saturation"]
        _check_finding(report, "saturation", severity="warning", layers=[label],
                       evidence=(f"{k}% of the outputs of {label}",))


@pytest.mark.parametrize("activation", [nn.ReLU, nn.LeakyReLU])
@pytest.mark.parametrize("k", [59, 61, 100])
def test_dead_unit_threshold(k, activation):
    """Reference: k of 100 units with pre-activation 1 - 10 < 0 on every example (dead:
    ReLU outputs 0, the leaky one's input is negative), the rest at +1: k % dead, against
    DEAD_FRACTION = 60 %; all dead is an error."""
    assert DEAD_FRACTION == 0.6
    model = _units_model(activation(), [1.0] * 100, [-10.0] * k + [0.0] * (100 - k))
    report = diagnose(model, ONES)
    assert _activation_rows(report)[0]["dead"] == pytest.approx(k / 100)
    label = f"act (after {activation.__name__})"
    if k < 60:
        _assert_no_findings(report, f"{k} % dead")
        return
    _check_finding(report, "dead_units", severity="error" if k == 100 else "warning",
                   layers=[label], evidence=(f"{k}% of the units of {label}",))


def _nonfinite_mlp(value: float) -> nn.Sequential:
    net = nets.mlp(4, 2, 8, 3, "relu", init="kaiming_normal", seed=0)
    with torch.no_grad():
        net.fc2.weight[0, 0] = value
    return net


@pytest.mark.parametrize("value", [math.inf, math.nan])
def test_nonfinite_names_the_first_layer_that_overflows(value):
    """Reference: fc2 holds the non-finite weight, so fc2's output is the first that is
    not finite (fc1's is finite); no other finding (ratios of non-finite values mean
    nothing, and no step is measured)."""
    net = _nonfinite_mlp(value)
    x = _randn(16, 4).float()
    report = diagnose(net, x, x[:, :2], optimizer=torch.optim.SGD(net.parameters(), lr=0.1))
    assert report.symptoms == ["nonfinite"]
    f = _check_finding(report, "nonfinite", severity="error",
                       evidence=("the forward pass, first at layer fc2", "parameter fc2.weight"))
    assert f.layers[0] == "fc2"


def test_finding_layers_are_module_names_or_activation_labels():
    """Reference: Finding's docstring: layers are module names (named_modules()) or
    activation labels, each named once."""
    net = _nonfinite_mlp(math.nan)
    x = _randn(16, 4).float()
    report = diagnose(net, x, x[:, :2])
    names = {n for n, _ in net.named_modules()} | {r["name"] for r in report.rows}
    for f in report.findings:
        assert set(f.layers) <= names and len(set(f.layers)) == len(f.layers), f.layers


def _log_expm1(t: float) -> float:
    """log(e^t - 1), stable for large t."""
    return t + math.log(-math.expm1(-t))


def _constant_prediction(kind: str, factor: float):
    """(model, x, y) whose loss is exactly ``factor`` times the baseline. The model is
    a Linear with zero weight, so it predicts its bias b for every input.
    Cross-entropy, C = 10, six labels of each class (H(p) = log C), b = (a, 0, ..., 0):
    loss log(e^a + 9) - a/10, solved for a by bisection (a < 0).
    MSE: loss Var(y) + (b - mean y)^2 = factor Var(y) for b = mean + sqrt((factor-1) Var)."""
    x = torch.zeros(60, 3, dtype=torch.float64)
    if kind == "cross_entropy":
        target = factor * math.log(10)
        lo, hi = -1e6, 0.0                       # loss falls as a rises to 0 (loss log 10)
        for _ in range(200):
            a = (lo + hi) / 2
            loss = math.log(math.exp(a) + 9) - a / 10
            lo, hi = (a, hi) if loss > target else (lo, a)
        bias, y = [a] + [0.0] * 9, torch.arange(60) % 10
    else:
        y = _randn(60, 1, seed=3)
        mean, var = y.mean().item(), y.var(unbiased=False).item()
        bias = [mean + math.sqrt((factor - 1) * var)]
    return _sequential(fc=_linear(3, len(bias), torch.zeros(len(bias), 3), bias)), x, y


INITIAL_CASES = [(kind, factor) for kind, bound in (("cross_entropy", INITIAL_LOSS_FACTOR),
                                                     ("mse", INITIAL_MSE_FACTOR))
                 for factor in (0.98 * bound, 1.02 * bound, 999 * bound, 1001 * bound)]


@pytest.mark.parametrize("kind, factor", INITIAL_CASES)
def test_initial_loss_threshold(kind, factor):
    """Reference: the closed forms of _constant_prediction (the loss is factor x log C
    or factor x Var(y)) against INITIAL_LOSS_FACTOR and INITIAL_MSE_FACTOR (2 % either
    side; the excess in nats is far above INITIAL_LOSS_MIN_EXCESS here); missed by more
    than a factor of 1000 (Finding's rule) it is an error. The MSE cases are offset:
    the gap between mean prediction and mean target is (factor - 1)/factor of the loss."""
    model, x, y = _constant_prediction(kind, factor)
    report = diagnose(model, x, y)
    assert report.loss == pytest.approx(factor * report.baseline, rel=1e-9)
    bound = INITIAL_LOSS_FACTOR if kind == "cross_entropy" else INITIAL_MSE_FACTOR
    if factor < bound:
        _assert_no_findings(report, f"loss {factor} x baseline")
        return
    assert report.symptoms == ["initial_loss"]
    what = "log C" if kind == "cross_entropy" else "Var(y)"
    f = _check_finding(report, "initial_loss",
                       severity="error" if factor > 1000 * bound else "warning",
                       layers=["fc"], evidence=(f"{factor:.1f} times {what}",
                                                f"loss is {report.loss:.3g}"))
    # a constant prediction: all of the excess is KL(p || q), which the output bias
    # removes (cause "prior"); for MSE the gap between the means (cause "offset")
    assert f.cause == ("prior" if kind == "cross_entropy" else "offset")


def test_initial_loss_baseline_is_the_entropy_of_the_labels():
    """Reference: H(p) of the label frequencies in closed form. 5 % positives (H = 0.199
    nats) predicted 50/50 by a zero output layer: loss log 2 = 3.5 H(p), 0.49 nats above
    it -- flagged with the log-prior remedy; the same layer with its bias at the log
    prior gives H(p) exactly and no finding. Balanced labels: log C, no finding."""
    y = (torch.arange(200) % 20 == 0).long()                  # 10 of 200 positive
    x = torch.zeros(200, 3, dtype=torch.float64)
    h = -(0.05 * math.log(0.05) + 0.95 * math.log(0.95))
    report = diagnose(_sequential(fc=_linear(3, 2, torch.zeros(2, 3), [0.0, 0.0])), x, y)
    assert report.baseline == pytest.approx(h, rel=1e-12)
    f = _check_finding(report, "initial_loss", severity="warning", layers=["fc"],
                       evidence=(f"{math.log(2) / h:.1f} times the entropy of the label "
                                 f"frequencies H(p) = {h:.3g}",))
    assert f.cause == "prior" and "log prior" in f.remedy
    prior = [math.log(0.95), math.log(0.05)]
    _assert_no_findings(diagnose(_sequential(fc=_linear(3, 2, torch.zeros(2, 3), prior)),
                                 x, y), "bias at the log prior")


def test_initial_loss_with_reduction_sum_is_judged_per_element():
    """Reference: nn.CrossEntropyLoss(reduction="sum") = B x the mean; the same model
    with the mean gives no finding, and the summed loss must not be read as B times
    too large (it was: "77x log C")."""
    model, x, y = _constant_prediction("cross_entropy", 1.5)
    summed = diagnose(model, x, y, loss=nn.CrossEntropyLoss(reduction="sum"))
    assert summed.loss == pytest.approx(60 * 1.5 * math.log(10), rel=1e-9)
    _assert_no_findings(summed, "reduction='sum'")
    model, x, y = _constant_prediction("cross_entropy", 4.0)
    f = _check_finding(diagnose(model, x, y, loss=nn.CrossEntropyLoss(reduction="sum")),
                       "initial_loss", severity="warning", layers=["fc"],
                       evidence=("reduction='sum'", "4.0 times log C"))
    assert f.cause == "prior"


def test_initial_loss_of_logits_too_large_is_not_a_prior():
    """Reference: logits of std about 30 from one Linear layer (an output layer 30 times
    too large, as in the gallery): the predicted distribution changes from example to
    example, so no output bias can remove the excess -- cause "logits", not "prior"
    (which a constant prediction, above, gets)."""
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(300, 8, generator=g, dtype=torch.float64), torch.arange(300) % 3
    layer = _linear(8, 3, 30 * torch.randn(3, 8, generator=g, dtype=torch.float64) / math.sqrt(8))
    f = _check_finding(diagnose(_sequential(fc=layer), x, y), "initial_loss",
                       severity="warning", layers=["fc"])
    assert f.cause == "logits" and "scale the output layer down" in f.remedy


def test_a_batch_too_small_to_judge_gives_notes_not_findings():
    """A healthy 20-layer He-ReLU MLP (measured: up to 69 % of units off for a single
    example, 56 % for four) on batches of 1 to 8: no dead_units and no initial_loss
    finding, a small_batch note instead; on 128 examples neither. (On one example the
    backward signal itself is noisy -- 5e-4 at fc2 for this seed, through the half of
    the units that are on -- so only the two symptoms that need a batch are asserted.)"""
    net = nets.mlp(2, 3, 32, 20, "relu", init="kaiming_normal", seed=0)
    xs, ys = SPIRALS
    for b in (1, 2, 4, 8):
        x, y = xs[::300 // b][:b], ys[::300 // b][:b]
        report = diagnose(net, x, y)
        assert not {"dead_units", "initial_loss"} & set(report.symptoms), report.findings
        assert {f.symptom for f in report.notes} == {"small_batch"}, report.notes
        assert len(report.notes) == 2, report.notes            # units, and the baseline
    report = diagnose(net, xs, ys)
    _assert_no_findings(report, "the whole batch")
    assert report.notes == []


UPDATE_CASES = [
    # target ratio lr |g| / |W|, the word in the finding (None: no finding), severity:
    # an error when the band is missed by more than a factor of 1000 (Finding's rule)
    (0.98 * UPDATE_RATIO_HIGH, None, None),
    (1.02 * UPDATE_RATIO_HIGH, "large", "warning"),
    (0.98 * UPDATE_RATIO_HIGH * 1000, "large", "warning"),
    (1.02 * UPDATE_RATIO_HIGH * 1000, "large", "error"),     # a huge learning rate
    (1.02 * UPDATE_RATIO_LOW, None, None),
    (0.98 * UPDATE_RATIO_LOW, "small", "warning"),
    (1.02 * UPDATE_RATIO_LOW / 1000, "small", "warning"),
    (0.98 * UPDATE_RATIO_LOW / 1000, "small", "error"),      # a tiny learning rate
]


@pytest.mark.parametrize("target, word, severity", UPDATE_CASES)
def test_update_ratio_threshold(target, word, severity):
    """Reference: one plain SGD step of a single Linear layer moves W by lr |g|, so the
    ratio is lr |g| / |W| with g from a plain backward; lr is chosen to hit ``target``
    on either side of UPDATE_RATIO_LOW and UPDATE_RATIO_HIGH, and of 1000 times
    farther (an error)."""
    model = _sequential(fc=_linear(4, 3, _randn(3, 4, seed=6)))
    x, y = _randn(32, 4, seed=7), _randn(32, 3, seed=8)
    ref = copy.deepcopy(model)
    F.mse_loss(ref(x), y).backward()
    lr = target * ref.fc.weight.norm().item() / ref.fc.weight.grad.norm().item()
    report = diagnose(model, x, y, optimizer=torch.optim.SGD(model.parameters(), lr=lr))
    assert _layer_rows(report)[0]["update_ratio"] == pytest.approx(target, rel=1e-9)
    if word is None:
        _assert_no_findings(report, f"update ratio {target}")
        return
    assert report.symptoms == ["update_ratio"]
    _check_finding(report, "update_ratio", severity=severity, layers=["fc"],
                   evidence=(f"at fc is {target:.1e}, too {word}",))


# ------------------------------------------------------------ 6. foreign models' names
def _owners_of_parameters(model: nn.Module) -> set[str]:
    """Reference: named_modules() that own parameters themselves, less
    MultiheadAttention's out_proj (never called: the attention function reads its
    weight)."""
    return {n or "model" for n, m in model.named_modules()
            if next(m.parameters(recurse=False), None) is not None
            and not n.endswith(".out_proj")}


@pytest.mark.parametrize("name, expected, activations", [
    ("CNN", ["0", "2", "4", "8"], ["1 (after ReLU)", "3 (after ReLU)", "5 (after ReLU)"]),
    ("LSTM", ["lstm", "head"], []),
    ("TransformerEncoder", None, []),
])
def test_foreign_models_name_their_layers(name, expected, activations):
    """Reference: named_modules() filtered to the modules owning parameters, each row's
    type its class name; for the CNN and the LSTM also the names written out (in
    forward order)."""
    model, x, y, loss = gallery.foreign_models()[name]
    report = diagnose(model, x, y, loss=loss)
    rows = _layer_rows(report)
    names = [r["name"] for r in rows]
    modules = dict(model.named_modules())
    assert set(names) == _owners_of_parameters(model) and len(set(names)) == len(names)
    assert all(r["type"] == type(modules[r["name"]]).__name__ for r in rows)
    assert [r["name"] for r in _activation_rows(report)] == activations
    if expected is not None:
        assert names == expected
    else:
        for n in ("embed", "encoder.layers.0.self_attn", "encoder.layers.0.linear1",
                  "encoder.layers.1.norm2", "head"):
            assert n in names
        assert not any(n.endswith("out_proj") for n in names)


def test_attention_rows_use_in_proj_weight():
    """Reference: in_proj_weight.norm() and in_proj_weight.grad.norm() after a plain
    backward of token_loss on a deep copy."""
    model, x, y, loss = gallery.foreign_models()["TransformerEncoder"]
    report = diagnose(model, x, y, loss=loss)
    ref = copy.deepcopy(model)
    loss(ref(x), y).backward()
    for r in _layer_rows(report):
        if r["type"] == "MultiheadAttention":
            w = ref.get_submodule(r["name"]).in_proj_weight
            assert r["weight_norm"] == pytest.approx(w.norm().item(), rel=1e-6)
            assert r["grad_norm"] == pytest.approx(w.grad.norm().item(), rel=1e-5)


# -------------------------------------------------------------------------- 7. watch
@pytest.mark.parametrize("steps, every", [(25, 10), (20, 10), (6, 1), (4, 7)])
def test_watch_as_the_callback_of_train(steps, every):
    """Reference: train's History.losses and ceil(steps / every) measurements at
    0, every, 2 every, ...; no hook left."""
    x, y = REGRESSION
    net = nets.mlp(16, 1, 16, 3, "relu", init="kaiming_normal", seed=0)
    w = watch(net, None, every=every)
    assert isinstance(w, Watcher)
    with w:
        history = train.train(net, x, y, steps=steps, lr=0.01, callback=w)
    report = w.report(history)
    assert report.steps == [every * i for i in range(math.ceil(steps / every))]
    assert len(report.losses) == steps
    np.testing.assert_array_equal(report.losses, history.losses)
    assert report.loss == history.losses[-1]
    assert _hooks_removed(net)


def test_watch_with_an_optimizer_in_a_hand_written_loop():
    """Reference: the losses the loop logged, ceil(steps / every) measurements; hooks
    are installed only before measured steps and all removed after the with block
    (module hooks and the optimizer's step hooks)."""
    x, y = REGRESSION
    net = nets.mlp(16, 1, 16, 3, "relu", init="kaiming_normal", seed=0)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    steps, every, logged = 23, 5, []
    with watch(net, opt, every=every) as w:
        for t in range(steps):
            assert bool(net._forward_pre_hooks) == (t % every == 0), t
            loss = F.mse_loss(net(x), y)
            _step(opt, loss)
            w.log(loss)
            logged.append(loss.item())
    report = w.report()
    assert report.steps == list(range(0, steps, every)) and len(report.steps) == 5
    np.testing.assert_array_equal(report.losses, logged)
    assert _hooks_removed(net, opt)


def test_watch_removes_its_hooks_after_an_exception():
    net = nets.mlp(2, 1, 4, 1, seed=0)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    with pytest.raises(RuntimeError, match="inside the loop"):
        with watch(net, opt, every=1):
            net(torch.ones(3, 2)).sum().backward()
            raise RuntimeError("inside the loop")
    assert _hooks_removed(net, opt)


def _watched_step(every: int = 3, steps: int = 7):
    """A float64 tanh MLP trained by SGD with momentum under watch; before the last
    (measured) step, a twin with the same state_dict (no hooks) runs the same forward
    and backward under record(); the weights before and after that step are kept."""
    x, y = (t.double() for t in REGRESSION)

    def make():
        return nets.mlp(16, 1, 16, 3, "tanh", seed=0).double()

    net = make()
    opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    with watch(net, opt, every=every) as w:
        for t in range(steps):
            if t == steps - 1:
                twin = make()
                twin.load_state_dict(net.state_dict())
                with record(twin) as rec:
                    F.mse_loss(twin(x), y).backward()
                twin_report = diagnose(twin, x, y)
                before = _weights(net)
            loss = F.mse_loss(net(x), y)
            _step(opt, loss)
            w.log(loss)
    assert (steps - 1) % every == 0
    return w.report(), rec, twin_report, before, _weights(net)


def test_watch_measures_what_record_measures_on_the_same_step():
    """Reference: record() on a twin with the same weights, for the same forward and
    backward (signals, weight-gradient norms, activation statistics); the update ratio
    |W_after - W_before| / |W_before| of that step computed by hand."""
    report, rec, _, before, after = _watched_step()
    rows = _layer_rows(report)
    assert {r["name"]: r["signal"] for r in rows} == pytest.approx(rec.output_grad_norms,
                                                                   rel=1e-12)
    assert {r["name"]: r["grad_norm"] for r in rows} == pytest.approx(rec.weight_grad_norms,
                                                                      rel=1e-12)
    assert {r["name"]: r["update_ratio"] for r in rows} == pytest.approx(
        {n: _ratio(before[n], after[n]) for n in before}, rel=1e-9)
    stats = rec.activation_stats
    for r in _activation_rows(report):
        assert (r["mean"], r["std"], r["saturated"]) == pytest.approx(
            (stats[r["name"]].mean, stats[r["name"]].std, stats[r["name"]].saturated_fraction),
            rel=1e-12)


def test_watch_weight_norm_is_that_of_the_measured_step():
    """Reference: diagnose on a twin holding the weights of the measured step: the
    weight norm of the weights that ran its forward pass."""
    report, _, twin_report, before, _ = _watched_step()
    assert ({r["name"]: r["weight_norm"] for r in _layer_rows(report)}
            == pytest.approx({r["name"]: r["weight_norm"] for r in _layer_rows(twin_report)},
                             rel=1e-12))


def _report_of_losses(losses, history=None, every: int = 10) -> Report:
    """Watch a tiny SGD loop that logs the given losses (the steps themselves are real)."""
    net = nets.mlp(2, 1, 4, 1, "tanh", seed=0)
    opt = torch.optim.SGD(net.parameters(), lr=1e-2)
    x = _randn(8, 2).float()
    with watch(net, opt, every=every) as w:
        for value in losses:
            _step(opt, net(x).pow(2).mean())
            w.log(value)
    return w.report(history)


DIVERGENCE_CASES = [
    # logged losses, the step named (None: not diverged)
    ([1.0] * 7 + [math.nan] * 3, 7),                 # the first non-finite loss
    ([1.0, 2.0, math.inf], 2),
    ([1.0] * 5 + [20.0] * 5, 5),                     # rose above 10x and stayed
    ([1.0, 20.0, 1.0] + [20.0] * 4, 3),              # the step after the last one below
    ([1.0] * 4 + [DIVERGED_FACTOR * 1.02] * 3, 4),
    ([1.0] * 4 + [DIVERGED_FACTOR * 0.98] * 3, None),
    ([1.0, 1.0, 50.0, 1.0, 1.0], None),              # a spike that comes back down
]


@pytest.mark.parametrize("losses, step", DIVERGENCE_CASES)
def test_watch_diverged(losses, step):
    """Reference: DIVERGED_FACTOR's rule: the first non-finite loss, or the first step of
    the final stretch above DIVERGED_FACTOR x the first loss (2 % either side)."""
    report = _report_of_losses(losses)
    if step is None:
        assert "diverged" not in report.symptoms, [str(f) for f in report.findings]
        return
    _check_finding(report, "diverged", severity="error",
                   evidence=(f"{losses[step]:.3g} at step {step}",))


def test_watch_a_falling_negative_loss_has_not_diverged():
    """Reference: the loss falls at every step (as a negative log-likelihood may)."""
    report = _report_of_losses([-1.0 - 0.01 * t for t in range(20)])
    assert "diverged" not in report.symptoms, [str(f) for f in report.findings]


def test_watch_reports_where_train_stopped():
    """Reference: History.diverged_at, of a History built by hand and of the gallery's
    RNN run (SGD lr 1, no clipping), which train stopped."""
    report = _report_of_losses([1.0] * 12, history=train.History(np.ones(20), diverged_at=12))
    _check_finding(report, "diverged", severity="error", evidence=("stopped at step 12",))
    rnn = _gallery("rnn")
    assert rnn.history.diverged_at is not None
    _check_finding(rnn.during, "diverged", severity="error",
                   evidence=(f"stopped at step {rnn.history.diverged_at}",))


def _last_quarter_at(end: float, n: int = 60) -> list[float]:
    """1.0 for the first three quarters of n steps, ``end`` for the last quarter."""
    return [1.0] * (n - n // 4) + [end] * (n // 4)


PLATEAU_CASES = [
    # logged losses, whether a plateau is reported
    ([1.0] * PLATEAU_MIN_STEPS, True),
    ([1.0] * (PLATEAU_MIN_STEPS - 1), False),        # too few steps to tell
    ([1.0 / (1 + t / 10) for t in range(PLATEAU_MIN_STEPS)], False),
    (_last_quarter_at(1 - 0.98 * PLATEAU_DROP), True),
    (_last_quarter_at(1 - 1.02 * PLATEAU_DROP), False),
]


@pytest.mark.parametrize("losses, plateau", PLATEAU_CASES)
def test_watch_plateau(losses, plateau):
    """Reference: PLATEAU_DROP's rule: after PLATEAU_MIN_STEPS steps, the mean of the
    last quarter above (1 - PLATEAU_DROP) x the mean of the first ten (the first ten
    are 1 here, so the drop is 1 - the last quarter's mean; 2 % either side)."""
    report = _report_of_losses(losses)
    if not plateau:
        assert "plateau" not in report.symptoms, [str(f) for f in report.findings]
        return
    drop = 1 - np.mean(losses[-(len(losses) // 4):])
    _check_finding(report, "plateau", severity="warning", layers=(),
                   evidence=(f"last {len(losses) // 4} steps", f"{drop:.1%} below"))


@pytest.mark.parametrize("killed", [0, 3, 5])
def test_watch_reports_dead_units_that_grew(killed):
    """Reference: diagnostics.dead_units finds no dead unit before training; a bias of
    -100 set on ``killed`` of 20 units after the first measured step kills exactly
    those: 25 % grew by more than DEAD_GROWTH (below DEAD_FRACTION), 15 % did not."""
    assert DEAD_GROWTH == 0.2 and DEAD_FRACTION > 0.25
    model = _sequential(fc=_linear(2, 20, _randn(20, 2, seed=9), torch.zeros(20)),
                        act=nn.ReLU(), out=_linear(20, 1, _randn(1, 20, seed=10) / 20 ** 0.5))
    x, y = _randn(64, 2, seed=11), _randn(64, 1, seed=12)
    label = "act (after ReLU)"
    assert dead_units(model, x) == {label: 0.0}
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    with watch(model, opt, every=5) as w:
        for t in range(11):                  # measured: 0, 5, 10
            if t == 6:
                with torch.no_grad():
                    model.fc.bias[:killed] = -100.0
            loss = F.mse_loss(model(x), y)
            _step(opt, loss)
            w.log(loss)
    report = w.report()
    if killed / 20 <= DEAD_GROWTH:
        assert "dead_units" not in report.symptoms, [str(f) for f in report.findings]
        return
    _check_finding(report, "dead_units", severity="warning", layers=[label],
                   evidence=(f"grew from 0% at step 0 to {killed / 20:.0%} at step 10",))


def test_watch_errors():
    net = nets.mlp(2, 1, 4, 1, seed=0)
    for every in (0, -1):
        with pytest.raises(ValueError, match="every must be an int >= 1"):
            watch(net, None, every=every)
    for every in (1.5, True, "10"):    # wrong types: TypeError (ValueError before)
        with pytest.raises(TypeError, match="every must be an int, got"):
            watch(net, None, every=every)
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        watch("net")
    with pytest.raises(TypeError, match="optimizer must be a torch.optim.Optimizer"):
        watch(net, "sgd")
    with watch(net, None) as w:
        with pytest.raises(ValueError, match="nothing measured yet"):
            w.report()
    # outside a with block a step would leave hooks behind: refused, with the remedy
    w = watch(net, None)
    with pytest.raises(RuntimeError, match="use watch\\(\\) as a context manager"):
        w(0, 1.0)
    with w:
        with pytest.raises(RuntimeError, match="already open"):
            w.__enter__()
    assert _hooks_removed(net)


def test_watch_a_model_whose_layers_have_no_weight_matrix():
    """Reference: the losses logged; a layer that owns only a vector (no weight) has no
    update ratio, and nothing fails."""
    class Scale(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Parameter(torch.ones(3))

        def forward(self, u):
            return u * self.a

    model = Scale()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with watch(model, opt, every=1) as w:
        for _ in range(3):
            loss = model(torch.ones(2, 3)).pow(2).mean()
            _step(opt, loss)
            w.log(loss)
    assert w.report().steps == [0, 1, 2]


# ------------------------------------------------------------------- 8. presentation
def _healthy() -> Report:
    net = nets.mlp(16, 1, 32, 4, "relu", init="kaiming_normal", seed=0)
    return diagnose(net, *REGRESSION, optimizer=torch.optim.Adam(net.parameters(), lr=1e-3))


def _vanishing() -> Report:
    return diagnose(_identity_chain(0.004), _randn(8, 4))


def _saturated() -> Report:
    model = _units_model(nn.Tanh(), [10.0] * 40 + [0.0] * 60, [0.0] * 100)
    return diagnose(model, ONES)


def test_text_report():
    """Reference: the report's own rows and findings: every layer and activation name,
    every finding's evidence and its one-line form, or 'No findings'."""
    healthy, broken = _healthy(), _vanishing()
    text = str(healthy)
    assert all(r["name"] in text for r in healthy.rows)
    assert "No findings" in text and healthy.ok
    text = str(broken)
    assert all(r["name"] in text for r in broken.rows)
    assert "No findings" not in text and not broken.ok
    for f in broken.findings:
        assert f.evidence in text and str(f) in text
        assert all(s in str(f) for s in (SYMPTOMS[f.symptom].title, f.remedy, f.chapter,
                                         *f.layers))


def test_findings_are_sorted_worst_first():
    """Reference: the severities of the exploding gallery run's report, errors before
    warnings; symptoms lists the findings' symptoms in that order."""
    report = _gallery("exploding").before
    severities = [f.severity for f in report.findings]
    assert {"error", "warning"} <= set(severities)
    assert severities == sorted(severities, key=["error", "warning"].index)
    assert report.symptoms == [f.symptom for f in report.findings]


def test_html_report_escapes_names_and_evidence():
    """Reference: html.escape of each row's name and of each finding's evidence (a
    module may be called 'a<b>&'; the evidence holds an apostrophe)."""
    model = _sequential(**{"a<b>&": _linear(2, 2, torch.eye(2)),
                           "out": _linear(2, 1, torch.ones(1, 2))})
    page = diagnose(model, _randn(4, 2), _randn(4, 1))._repr_html_()
    assert "<table" in page and html.escape("a<b>&") in page and "a<b>" not in page
    broken = _vanishing()
    page = broken._repr_html_()
    assert all(html.escape(r["name"]) in page for r in broken.rows)
    for f in broken.findings:
        assert "'" in f.evidence and html.escape(f.evidence) in page and f.evidence not in page


def _axes_with_data(fig) -> int:
    return sum(bool(ax.lines or ax.collections or ax.patches) for ax in fig.axes)


@pytest.mark.parametrize("make", [_healthy, _saturated])
def test_plot_draws_on_a_figure_or_a_subfigure(make):
    """Reference: matplotlib's own objects: a Figure with at least two axes holding
    data (the signal and the update ratios given an optimizer, else the activations),
    and the same drawn into a SubFigure that plot() returns."""
    report = make()
    fig = report.plot()
    try:
        assert isinstance(fig, Figure) and _axes_with_data(fig) >= 2
    finally:
        plt.close(fig)
    parent = Figure()
    sub = parent.subfigures(1, 2)[0]
    assert report.plot(sub) is sub and _axes_with_data(sub) >= 2


def test_repr_names_the_symptoms():
    """Reference: report.symptoms."""
    assert "no findings" in repr(_healthy())
    broken = _vanishing()
    assert repr(broken).startswith("<Report") and all(s in repr(broken) for s in broken.symptoms)


# ------------------------------------------------------------------------ 9. errors
def test_diagnose_errors():
    """Every message of diagnose, naming its argument."""
    net = nets.mlp(4, 2, 8, 2, seed=0)
    x, y = torch.randn(8, 4, generator=torch.Generator().manual_seed(0)), torch.zeros(8, 2)
    with pytest.raises(TypeError, match="model must be a torch.nn.Module, got 'net'"):
        diagnose("net", x)
    with pytest.raises(ValueError, match="model has no parameters.*ReLU"):
        diagnose(nn.ReLU(), x)
    with pytest.raises(TypeError, match="optimizer must be a torch.optim.Optimizer or None"):
        diagnose(net, x, y, optimizer="adam")
    # an unknown name is a wrong value: ValueError (a TypeError before the shared checks)
    with pytest.raises(ValueError, match="loss must be None, one of .* or a callable, got 'l1'"):
        diagnose(net, x, y, loss="l1")
    with pytest.raises(ValueError, match=r"loss must return a scalar \(one-element\) tensor, "
                       r"got a float32 tensor of shape \(8, 2\)"):
        diagnose(net, x, y, loss=lambda p, t: (p - t) ** 2)
    # a loss that returns no tensor is a TypeError (a ValueError before the shared checks)
    with pytest.raises(TypeError, match=r"loss must be a function returning a scalar tensor, "
                       r"got 1.0 \(float\)"):
        diagnose(net, x, y, loss=lambda p, t: 1.0)
    with pytest.raises(ValueError, match=r"y must have the output's first dimension 8, "
                       r"got y of shape \(7, 2\)"):
        diagnose(net, x, y[:7])

    class Records(nn.Linear):
        def forward(self, u):
            return {"n": u.shape[0], "name": "no tensor here"}

    with pytest.raises(TypeError, match=r"model\(x\) must return a tensor, a tuple .*"
                       r"\.logits .*got dict\. Wrap the model"):
        diagnose(Records(4, 2), x)
    assert _hooks_removed(net)


@pytest.mark.parametrize("make, x, layer, kind", [
    (lambda: nets.mlp(4, 2, 8, 2, seed=0), torch.zeros(8, 5), "fc1", "Linear"),
    (lambda: _sequential(a=nn.Linear(4, 4), b=_sequential(c=nn.Linear(5, 2))),
     torch.zeros(8, 4), "b.c", "Linear"),
    (lambda: ResidualMLP(4, 2, 8, 1, seed=0), torch.zeros(8, 5), "model", "ResidualMLP"),
])
def test_forward_error_names_the_module_that_raised(make, x, layer, kind):
    """Reference: the module that raised (the innermost one running: fc1 for a wrong
    feature count, b.c inside a nested block, the root when its own forward checks the
    input); the model's own error is chained as __cause__; no hook is left."""
    model = make()
    with pytest.raises(ForwardError, match=rf"model\(x\) failed in {layer} \({kind}\) "
                       rf"for x of shape \(8, \d\)") as info:
        diagnose(model, x)
    assert info.value.layer == layer
    assert isinstance(info.value.__cause__, (RuntimeError, ValueError))
    assert str(info.value.__cause__) in str(info.value)
    assert _hooks_removed(model)


# ---------------------------------------------------------------------- 10. SYMPTOMS
def test_symptoms_table():
    """Reference: the symptoms the book teaches; every chapter is a notebook of book/;
    every symptom a gallery run expects is in the table."""
    required = {"vanishing", "exploding", "dead_units", "saturation", "nonfinite",
                "initial_loss", "update_ratio", "diverged", "plateau"}
    assert required <= set(SYMPTOMS)
    for key, s in SYMPTOMS.items():
        assert s.name == key and s.title and s.cause and s.remedy
        assert (BOOK / f"{s.chapter}.ipynb").is_file(), s.chapter
    assert {entry.symptom for entry in gallery.RUNS.values()} <= set(SYMPTOMS)


def test_watcher_log_takes_nan_and_refuses_what_is_no_loss():
    """NaN and inf losses are a divergence (logged as they are); a loss per example, a
    string or None is refused by name."""
    w = watch(nets.mlp(2, 1, 4, 1, seed=0))
    for loss in (math.nan, torch.tensor(math.inf), torch.tensor([0.5]), np.float32(0.25), 1):
        w.log(loss)
    assert np.array_equal(w.losses, [math.nan, math.inf, 0.5, 0.25, 1.0], equal_nan=True)
    with pytest.raises(ValueError, match=r"loss must be a number or a one-element tensor, "
                                         r"got a float32 tensor of shape \(3,\)"):
        w.log(torch.ones(3))
    for bad in ("0.5", None, True):
        with pytest.raises(TypeError, match="loss must be a real number or a one-element"):
            w.log(bad)
    assert len(w.losses) == 5


def test_diagnose_refuses_bad_data_and_broadcasting_targets():
    net = nets.mlp(4, 2, 8, 2, seed=0)
    x, y = torch.randn(8, 4, generator=torch.Generator().manual_seed(0)), torch.zeros(8, 2)
    bad = x.clone()
    bad[0, 0] = math.inf
    with pytest.raises(ValueError, match=r"x must be finite data"):
        diagnose(net, bad, y)
    with pytest.raises(ValueError, match=r"y must have the output's shape \(8, 2\) for "
                                         r"loss='mse' \(no broadcasting\), got y of shape \(8,\)"):
        diagnose(net, x, y[:, 0])
    with pytest.raises(ValueError, match=r"y must hold class indices in \[0, 1\]"):
        diagnose(net, x, torch.full((8,), 2))
    assert _hooks_removed(net)


# ------------------------------------------------- 11. designs that are not problems
def _watched_training(model, opt, x, y, loss_fn, *, steps: int, every: int) -> Watcher:
    """``steps`` full-batch training steps under ``watch(model, opt, every=every)``."""
    with watch(model, opt, every=every) as w:
        for _ in range(steps):
            loss = loss_fn(model(x), y)
            _step(opt, loss)
            w.log(loss)
    return w


class _Tokens(nn.Module):
    """A ViT-like model that owns loose parameters at its root (a cls token of std 1e-6
    and a position embedding), a LayerNorm and a zero-initialized head."""

    def __init__(self, d: int = 16, classes: int = 3, zero_head: bool = True):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.cls_token = nn.Parameter(1e-6 * torch.randn(1, 1, d, generator=g))
        self.pos = nn.Parameter(0.02 * torch.randn(1, 5, d, generator=g))
        self.embed, self.mix = nn.Linear(4, d), nn.Linear(d, d)
        self.block = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, d), nn.GELU(), nn.Linear(d, d))
        self.head = nn.Linear(d, classes)
        if zero_head:
            nn.init.zeros_(self.head.weight)
            nn.init.zeros_(self.head.bias)

    def forward(self, x):                           # x: (B, 4 tokens, 4)
        h = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), self.embed(x)], 1) + self.pos
        h = h + self.mix(h.mean(1, keepdim=True))         # tokens talk (as attention would)
        h = h + self.block(h)
        return self.head(h[:, 0])


def _token_batch(n: int = 64):
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, 4, 4, generator=g), torch.randint(0, 3, (n,), generator=g)


def test_root_parameters_are_reported_by_name_and_a_zero_head_is_a_note():
    """The cls token and position embedding are rows named by their parameters, never a
    layer called 'model' nor the reference; AdamW's step on the 1e-6 cls token (ratio
    ~1e3) is not judged; the zero head makes every signal below it exactly 0, which is a
    'gated' note naming head.weight (one AdamW step on the copy moves it), not vanishing."""
    model = _Tokens()
    x, y = _token_batch()
    report = diagnose(model, x, y, optimizer=torch.optim.AdamW(model.parameters(), lr=1e-3))
    _assert_no_findings(report, "zero head, tiny cls token")
    names = [r["name"] for r in report.rows if r["kind"] != "activation"]
    assert "model" not in names and {"cls_token", "pos"} <= set(names), names
    assert next(r for r in report.rows if r["name"] == "cls_token")["kind"] == "parameter"
    live = _Tokens(zero_head=False)                 # a head that passes the gradient on
    moved = diagnose(live, x, y, optimizer=torch.optim.AdamW(live.parameters(), lr=1e-3))
    _assert_no_findings(moved, "tiny cls token, AdamW")
    cls = next(r for r in moved.rows if r["name"] == "cls_token")
    assert cls["update_ratio"] > 100                # AdamW moves it by ~lr: big, not judged
    gated = [f for f in report.notes if f.symptom == "gated"]
    assert len(gated) == 1 and "head.weight" in gated[0].evidence, report.notes
    assert "one step of your optimizer moves them" in gated[0].evidence


def test_a_frozen_zero_head_blocks_every_gradient():
    """The same zero head, frozen: nothing behind it can ever learn (measured: one
    training step changes no other weight), and the finding names it."""
    model = _Tokens()
    model.head.weight.requires_grad_(False)
    x, y = _token_batch()
    before = copy.deepcopy(model.embed.weight)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    _step(copy.deepcopy(opt), F.cross_entropy(model(x), y))
    assert torch.equal(before, model.embed.weight)               # the ground truth
    report = diagnose(_Tokens().requires_grad_(True), x, y)      # (a fresh one: healthy)
    _assert_no_findings(report, "zero head, trainable")
    fresh = _Tokens()
    fresh.head.weight.requires_grad_(False)
    f = _check_finding(diagnose(fresh, x, y), "vanishing", severity="error",
                       evidence=("head.weight is exactly zero and frozen",))
    assert f.cause == "frozen_zero"


class _Residual(nn.Module):
    """x + s * f(x) blocks: the last BatchNorm of each branch with gamma = 0
    (zero_init_residual), or a layer scale s of 1e-6 (CaiT/ConvNeXt style)."""

    def __init__(self, kind: str, blocks: int = 4, d: int = 16):
        super().__init__()
        self.stem = nn.Linear(8, d)
        self.branches = nn.ModuleList(
            nn.Sequential(nn.Linear(d, d), nn.BatchNorm1d(d), nn.ReLU(), nn.Linear(d, d),
                          nn.BatchNorm1d(d)) for _ in range(blocks))
        self.scales = nn.ParameterList(nn.Parameter(torch.full((d,), 1e-6))
                                       for _ in range(blocks if kind == "layer_scale" else 0))
        if kind == "zero_gamma":
            for b in self.branches:
                nn.init.zeros_(b[-1].weight)
        self.head = nn.Linear(d, 3)

    def forward(self, x):
        h = self.stem(x)
        for i, b in enumerate(self.branches):
            h = h + (self.scales[i] * b(h) if len(self.scales) else b(h))
        return self.head(h)


@pytest.mark.parametrize("kind", ["zero_gamma", "layer_scale"])
def test_gated_residual_branches_are_not_vanishing(kind):
    """Zero gamma makes the branches' signals exactly 0, a layer scale of 1e-6 makes
    them ~1e-6 of the head's, while the stem gets the head's signal through the skips:
    a 'gated' note naming the gates, no finding -- and the same after 20 steps of AdamW
    under watch. Ground truth: 20 AdamW steps (lr 1e-2) more than halve the loss."""
    torch.manual_seed(0)
    model = _Residual(kind)
    x, y = SPIRALS[0].repeat(1, 4), SPIRALS[1]
    report = diagnose(model, x, y, optimizer=torch.optim.AdamW(model.parameters(), lr=1e-2))
    _assert_no_findings(report, kind)
    gated = [f for f in report.notes if f.symptom == "gated"]
    assert gated and ("scales.0" in gated[0].evidence or "branches.0.4.weight" in gated[0].evidence)
    w = _watched_training(model, torch.optim.AdamW(model.parameters(), lr=1e-2), x, y,
                          F.cross_entropy, steps=20, every=5)
    assert w.losses[-1] < 0.5 * w.losses[0], w.losses
    _assert_no_findings(w.report(), f"{kind} under watch")


def test_frozen_parameters_in_the_optimizer_are_a_note():
    """A frozen backbone with the whole model.parameters() in the optimizer: a 'frozen'
    note, no update ratio of 0 'too small'; and under watch the same."""
    net = nets.mlp(2, 3, 32, 4, "relu", init="kaiming_normal", seed=0)
    for m in (net.fc1, net.fc2):
        m.requires_grad_(False)
    x, y = SPIRALS
    opt = torch.optim.SGD(net.parameters(), lr=0.01)
    report = diagnose(net, x, y, optimizer=opt)
    _assert_no_findings(report, "frozen backbone")
    frozen = [f for f in report.notes if f.symptom == "frozen"]
    assert len(frozen) == 1 and "4 of 10 parameter tensors" in frozen[0].evidence
    w = _watched_training(net, opt, x, y, F.cross_entropy, steps=6, every=2)
    _assert_no_findings(w.report(), "frozen backbone under watch")


class _TwoBranches(nn.Module):
    def __init__(self, detach: bool, use_b: bool = True):
        super().__init__()
        self.a, self.b, self.head = nn.Linear(2, 8), nn.Linear(2, 8), nn.Linear(8, 3)
        self.unused = nn.Linear(2, 8)
        self.detach, self.use_b = detach, use_b

    def forward(self, x):
        hb = self.b(x)
        return self.head(torch.relu(self.a(x) + (hb.detach() if self.detach else hb)))


def test_a_cut_graph_and_a_module_not_called():
    """A .detach() inside forward: b ran and got no gradient -> 'no_gradient' (cause
    cut_graph), never blamed on the learning rate; a module never called -> a
    'not_called' note. Reference: b.weight.grad is None after a plain backward."""
    x, y = SPIRALS
    model = _TwoBranches(detach=True)
    ref = copy.deepcopy(model)
    F.cross_entropy(ref(x), y).backward()
    assert ref.b.weight.grad is None and ref.a.weight.grad is not None
    report = diagnose(model, x, y, optimizer=torch.optim.SGD(model.parameters(), lr=0.1))
    assert report.symptoms == ["no_gradient"], report.findings
    f = _check_finding(report, "no_gradient", severity="warning",
                       layers=["b.weight", "b.bias"])
    assert f.cause == "cut_graph"
    assert [n.symptom for n in report.notes] == ["not_called"]
    assert report.notes[0].layers == ("unused.weight", "unused.bias")
    _assert_no_findings(diagnose(_TwoBranches(detach=False), x, y), "no detach")


def test_parameters_missing_from_the_optimizer():
    net = nets.mlp(2, 3, 32, 3, "relu", init="kaiming_normal", seed=0)
    opt = torch.optim.SGD(net.out.parameters(), lr=0.1)
    report = diagnose(net, *SPIRALS, optimizer=opt)
    assert report.symptoms == ["not_in_optimizer"], report.findings
    assert "6 of 8 trainable parameter tensors" in report.findings[0].evidence


def test_dead_units_are_counted_per_channel():
    """A convolution whose bias is -10 on 9 of 10 channels, then a ReLU: 90 % of the
    channels are dead (reference: the ReLU's output is 0 on every example and position
    of those channels); the old rule, along the last axis (width), found 0 %."""
    conv = nn.Conv2d(3, 10, 3, padding=1)
    with torch.no_grad():
        conv.bias[:9] = -10.0
    model = nn.Sequential(conv, nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(10, 2))
    x = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        off = (model[1](conv(x)) == 0).all(dim=(0, 2, 3)).double().mean().item()
    assert off == pytest.approx(0.9)
    assert dead_units(model, x) == {"1 (after ReLU)": pytest.approx(0.9)}
    report = diagnose(model, x, torch.randint(0, 2, (4,)))
    assert _activation_rows(report)[0]["dead"] == pytest.approx(0.9)
    assert "dead_units" in report.symptoms


def test_outputs_of_other_libraries():
    """A dict with logits and the model's own loss (a Hugging Face ModelOutput is an
    OrderedDict with .logits and .loss), a (loss, logits) tuple, a dataclass, and a
    (B, T, C) prediction with (B, T) labels: the loss used is the model's own when it
    gave one (reference: the value it returned), else cross-entropy with classes last."""
    import dataclasses

    class Out(OrderedDict):
        def __getattr__(self, k):
            return self[k]

    @dataclasses.dataclass
    class DOut:
        logits: torch.Tensor
        loss: torch.Tensor | None = None

    class LM(nn.Module):
        def __init__(self, kind):
            super().__init__()
            self.emb, self.head, self.kind = nn.Embedding(20, 16), nn.Linear(16, 20), kind

        def forward(self, input_ids, labels=None):
            logits = self.head(torch.tanh(self.emb(input_ids)))
            loss = None if labels is None else F.cross_entropy(logits.flatten(0, 1), labels.flatten())
            if self.kind == "dict":
                return Out(loss=loss, logits=logits) if loss is not None else Out(logits=logits)
            if self.kind == "tuple":
                return (loss, logits) if loss is not None else (logits,)
            return DOut(logits, loss)

    ids = torch.randint(0, 20, (8, 6), generator=torch.Generator().manual_seed(0))
    for kind in ("dict", "tuple", "dataclass"):
        model = LM(kind)
        own = diagnose(model, {"input_ids": ids, "labels": ids})
        ref = F.cross_entropy(model.head(torch.tanh(model.emb(ids))).flatten(0, 1), ids.flatten())
        assert own.loss == pytest.approx(ref.item(), rel=1e-6), kind
        assert own.baseline == pytest.approx(
            -sum(c / 48 * math.log(c / 48) for c in torch.bincount(ids.flatten()).tolist() if c),
            rel=1e-9)
        given = diagnose(model, {"input_ids": ids}, ids)
        assert given.loss == pytest.approx(ref.item(), rel=1e-6), kind
        _assert_no_findings(own, kind)


def test_sparse_gradients_half_precision_and_unrouted_experts_do_not_crash():
    """nn.Embedding(sparse=True) (with SparseAdam), a bfloat16 and a float16 model whose
    weight norm exceeds float16's 65504 (no value does), and a mixture of experts that
    routes no example to one expert under watch: no finding, no crash."""
    emb = nn.Sequential(nn.Embedding(50, 8, sparse=True), nn.Flatten(), nn.Linear(24, 3))
    ids = torch.randint(0, 50, (32, 3), generator=torch.Generator().manual_seed(0))
    report = diagnose(emb, ids, torch.arange(32) % 3,
                      optimizer=torch.optim.SparseAdam(emb[0].parameters(), lr=1e-2))
    assert "nonfinite" not in report.symptoms
    big = nn.Sequential(nn.Linear(256, 256), nn.Tanh(), nn.Linear(256, 2))
    with torch.no_grad():
        big[0].weight.fill_(300.0 / 256)                   # |W| = 300 > sqrt(65504)
    for dtype in (torch.float16, torch.bfloat16):
        half = copy.deepcopy(big).to(dtype)
        r = diagnose(half, torch.randn(16, 256).to(dtype))
        assert "nonfinite" not in r.symptoms, (dtype, r.findings)

    class MoE(nn.Module):
        def __init__(self):
            super().__init__()
            self.experts = nn.ModuleList(nn.Linear(4, 4) for _ in range(3))
            self.head = nn.Linear(4, 2)

        def forward(self, x):                  # route by sign of x[:, 0]: expert 2 idle
            pos = x[:, :1] > 0
            return self.head(torch.where(pos, self.experts[0](x), self.experts[1](x)))

    moe, x = MoE(), torch.randn(32, 4, generator=torch.Generator().manual_seed(0))
    y = torch.randn(32, 2, generator=torch.Generator().manual_seed(1))
    report = diagnose(moe, x, y)
    assert [n.symptom for n in report.notes] == ["not_called"], report.notes
    w = _watched_training(moe, torch.optim.Adam(moe.parameters(), lr=1e-3), x, y, F.mse_loss,
                          steps=3, every=1)
    _assert_no_findings(w.report(), "moe")


def test_watch_fine_tuning_warm_up_and_a_slow_resumed_run():
    """Loss curves by hand: a fine-tuning run whose first batch was lucky (0.01, then
    about 0.2) has not diverged; a warm-up of 60 steps at a rising learning rate is not
    a plateau; a resumed run falling steadily by 5 % over 80 steps is not a plateau;
    a flat run is."""
    rng = np.random.default_rng(0)
    fine = [0.01] + list(0.2 + 0.02 * rng.standard_normal(59))
    assert "diverged" not in _report_of_losses(fine).symptoms
    assert _loss_curve(list(1.0 + 0.01 * rng.standard_normal(60)) + list(np.linspace(1, 0.5, 20)),
                       lrs=list(np.linspace(0, 1, 60)) + [1.0] * 20) == []
    slow = list(np.linspace(2.10, 2.0, 80) + 0.002 * rng.standard_normal(80))
    assert _loss_curve(slow) == []
    flat = list(2.0 + 0.002 * rng.standard_normal(80))
    assert [f.symptom for f in _loss_curve(flat)] == ["plateau"]


def _loss_curve(losses, lrs=()):
    from companion.diagnose import _loss_curve_findings
    return _loss_curve_findings(np.asarray(losses, float), list(lrs))


def test_exploding_plain_batch_norm_names_skip_connections():
    """The gallery's plain 16-block network with batch norm explodes; the remedy is skip
    connections (the normalization chapter shows no initialization fixes it)."""
    f = next(f for f in _gallery("degradation").findings if f.symptom == "exploding")
    assert f.cause == "batch_norm" and f.chapter == "skip_connections"
    assert "skip connections" in f.remedy


class _AuxHead(nn.Module):
    """A trunk, the main head, then an auxiliary head that runs last: returned and
    unused (``mode="unused"``), or added to the loss with weight 1e-4 (deep supervision
    with a small weight, ``mode="tiny"``)."""

    def __init__(self, mode: str):
        super().__init__()
        torch.manual_seed(0)
        self.trunk = nn.Sequential(nn.Linear(2, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU())
        self.head, self.aux, self.mode = nn.Linear(32, 3), nn.Linear(32, 3), mode

    def forward(self, x):
        h = self.trunk(x)
        main, aux = self.head(h), self.aux(h)
        return (main, aux) if self.mode == "unused" else main + 1e-4 * aux


@pytest.mark.parametrize("mode", ["unused", "tiny"])
def test_the_reference_is_the_layer_nearest_the_prediction(mode):
    """The auxiliary head runs last, but the prediction comes from ``head``: the signal
    ratios are taken against head's signal (head's ratio is 1, aux's exactly the 1e-4
    of the forward pass), so the aux head's missing or 1e-4-times smaller signal
    creates no finding; an aux head returned and left out of the loss is a note (it
    gets no gradient from this loss, and says why), not a cut graph."""
    model = _AuxHead(mode)
    x, y = SPIRALS
    report = diagnose(model, x, y)
    _assert_no_findings(report, mode)
    assert [n.symptom for n in report.notes] == (["unused_output"] if mode == "unused"
                                                 else ["gated"])   # a small branch, noted
    rows = {r["name"]: r for r in _layer_rows(report)}
    assert rows["head"]["signal_ratio"] == pytest.approx(1.0)
    if mode == "tiny":
        assert rows["aux"]["signal_ratio"] == pytest.approx(1e-4, rel=1e-6)
