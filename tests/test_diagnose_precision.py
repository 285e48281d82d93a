"""Tests of the ``precision`` finding of companion.diagnose (diagnose and watch).

Both sides, each against ground truth measured here, not against the finding itself:

1. Underflow: a 4-layer ReLU MLP regressing 256 outputs, close to its teacher (so its
   gradients are tiny), under float16 autocast. Measured: 50 SGD steps without loss
   scaling end far above the same steps with ``torch.amp.GradScaler``, which end near
   float32's. diagnose names the layers, and the fraction it gives is the fraction of
   the float32 gradients that a real cast to float16 turns into 0 (``retain_grad``).
2. Overflow: a hand-written attention without the 1/sqrt(d) scale, in float16: the
   logits (the softmax's input) come within a factor 8 of 65504 (a forward hook reads
   them); with 3x the input they overflow to inf in float16 and not in float32.
3. Rounding: a pure bfloat16 MLP under Adam at lr 1e-5: the loss stalls where the same
   model with float32 master weights (``companion.precision.MasterWeights``) falls;
   the fraction diagnose gives is the fraction of weights that one real bfloat16 step
   leaves unchanged (``torch.equal`` per element).
4. Scaler: under ``watch``, a GradScaler whose steps keep being skipped (inputs so large
   that every scaled gradient overflows): the loss never falls; the skipped steps the
   watcher counts are the steps that left the parameters unchanged.
5. Healthy mixed precision gives no finding at all, and trains: float16 autocast with a
   GradScaler (diagnose and watch, torch's and the companion's scaler), bfloat16
   autocast on a float32 model (float32 master weights) with Adam, a pure float16 model
   with MasterWeights and the companion's GradScaler, and a Hugging Face GPT-2 under
   bfloat16 autocast. A float32 model is not passed again in float32.
"""
from __future__ import annotations

import copy
import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

import pytest  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

from companion import diagnose as dg  # noqa: E402
from companion import precision as pr  # noqa: E402
from companion.diagnose import (PRECISION_LOST_FRACTION, PRECISION_OVERFLOW_FACTOR,  # noqa: E402
                                diagnose, watch)

F16 = dict(device_type="cpu", dtype=torch.float16)
BF16 = dict(device_type="cpu", dtype=torch.bfloat16)


def _mlp(seed: int, d_in: int, width: int, d_out: int, depth: int = 4) -> nn.Sequential:
    torch.manual_seed(seed)
    layers = []
    for i in range(depth - 1):
        layers += [nn.Linear(d_in if i == 0 else width, width), nn.ReLU()]
    layers.append(nn.Linear(width, d_out))
    return nn.Sequential(*layers)


def _precision(report) -> list:
    return [f for f in report.findings if f.symptom == "precision"]


# ------------------------------------------------------------------ 1. underflow
def _near_teacher():
    """A student 3e-4 away from its teacher: loss ~4e-7, gradients below float16's range."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(256, 256, generator=g)
    teacher = _mlp(1, 256, 128, 256)
    with torch.no_grad():
        y = teacher(x)
    student = copy.deepcopy(teacher)
    with torch.no_grad():
        for p in student.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 3e-4)
    return student, x, y


def _train_autocast(model, x, y, *, scaler, steps=50, lr=20.0, autocast=True):
    model = copy.deepcopy(model)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    for _ in range(steps):
        with torch.autocast(**F16, enabled=autocast):
            loss = F.mse_loss(model(x).float(), y)
        opt.zero_grad()
        if scaler is None:
            loss.backward()
            opt.step()
        else:
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
    return F.mse_loss(model(x), y).item()


def test_underflow_without_loss_scaling_is_found_and_harms_training():
    """Ground truth: 50 SGD steps under float16 autocast end above 5x the loss of the
    same steps with a GradScaler, which end within 1.5x of float32's. Reference for the
    fraction: the float32 gradient at the first layer's output (``retain_grad``), the
    share of its nonzero values that ``.half()`` turns into 0."""
    model, x, y = _near_teacher()
    plain = _train_autocast(model, x, y, scaler=None)
    scaled = _train_autocast(model, x, y, scaler=torch.amp.GradScaler("cpu"))
    full = _train_autocast(model, x, y, scaler=None, autocast=False)
    assert plain > 5 * scaled and scaled < 1.5 * full, (plain, scaled, full)

    with torch.autocast(**F16):
        report = diagnose(model, x, y)
    found = _precision(report)
    assert [f.cause for f in found] == ["underflow"], str(report)
    z = model[0](x)                        # float32: the first layer's output
    z.retain_grad()
    F.mse_loss(model[1:](z), y).backward()
    g = z.grad
    lost = float(((g.half() == 0) & (g != 0)).sum() / (g != 0).sum())
    model.zero_grad(set_to_none=True)
    assert lost > PRECISION_LOST_FRACTION
    assert found[0].layers[0] == "0"
    assert report._m.lost["0"] == pytest.approx(lost, abs=1e-3)
    assert f"{max(report._m.lost.values()):.0%}" in found[0].evidence
    assert found[0].chapter == "precision" and "GradScaler" in found[0].remedy


def test_underflow_is_judged_at_the_scalers_scale():
    """The same pass with the scaler the run trains with (2**16): almost no gradient
    is lost (below 0.1 % per layer, against 69-100 % unscaled), no finding (the scaled
    run trains like float32, test above)."""
    model, x, y = _near_teacher()
    for scaler in (torch.amp.GradScaler("cpu"), pr.GradScaler()):
        with torch.autocast(**F16):
            report = diagnose(model, x, y, scaler=scaler)
        assert report.findings == [], str(report)
        assert max(report._m.lost.values()) < 1e-3


# ------------------------------------------------------------------- 2. overflow
class _Attention(nn.Module):
    """Single-head self-attention without the 1/sqrt(d) scale (the bug), softmax as a
    module so that its input, the logits, is visible to hooks."""

    def __init__(self, d: int):
        super().__init__()
        self.q, self.k, self.v = nn.Linear(d, d), nn.Linear(d, d), nn.Linear(d, d)
        self.softmax = nn.Softmax(dim=-1)
        self.out = nn.Linear(d, 1)

    def forward(self, x):
        a = self.softmax(self.q(x) @ self.k(x).transpose(-1, -2))
        return self.out((a @ self.v(x)).mean(1))


def _logits(model, x):
    seen = {}
    h = model.softmax.register_forward_hook(lambda m, i, o: seen.__setitem__("z", i[0]))
    with torch.no_grad():
        model(x)
    h.remove()
    return seen["z"]


def test_attention_logits_near_overflow_are_found():
    """Reference: the logits read by a forward hook on the softmax: in float16 their
    largest |value| is above 65504 / 8 and finite; the finding names the softmax and
    gives that value. (The softmax is saturated, so the gradients behind it are tiny
    even in float32, and float16 flushes them: an underflow finding on q and k too.)"""
    torch.manual_seed(0)
    model = _Attention(64).half()
    x = (torch.randn(16, 8, 64) * 40).half()
    z = _logits(model, x)
    peak = float(z.abs().max())
    assert 65504 / PRECISION_OVERFLOW_FACTOR < peak < 65504, peak
    report = diagnose(model, x, torch.zeros(16, 1).half())
    found = [f for f in _precision(report) if f.cause == "overflow"]
    assert len(found) == 1 and found[0].severity == "warning", str(report)
    assert found[0].layers == ("softmax",) and f"{peak:.3g}" in found[0].evidence


def test_overflowed_forward_pass_gives_the_float32_value():
    """3x the input (logits 9x): the float16 logits are inf, the float32 ones are finite and above
    65504 (reference: the hook on a float32 copy); the finding is an error that gives
    the float32 value."""
    torch.manual_seed(0)
    model = _Attention(64).half()
    x = (torch.randn(16, 8, 64) * 120).half()
    assert torch.isinf(_logits(model, x)).any()
    z32 = _logits(copy.deepcopy(model).float(), x.float())
    assert torch.isfinite(z32).all() and float(z32.abs().max()) > 65504
    report = diagnose(model, x, torch.zeros(16, 1).half())
    found = _precision(report)
    assert [f.cause for f in found] == ["overflow"] and found[0].severity == "error", str(report)
    assert f"{float(z32.abs().max()):.3g}" in found[0].evidence
    assert "nonfinite" in report.symptoms


# ------------------------------------------------------------------- 3. rounding
def _scaled_autocast_step(model, opt, scaler, x, y):
    """One step of the float16 recipe: the forward pass under autocast, the loss
    scaled for backward, the scaler's step and update. Returns the loss."""
    with torch.autocast(**F16):
        loss = F.mse_loss(model(x).float(), y)
    opt.zero_grad()
    scaler.scale(loss).backward()
    scaler.step(opt)
    scaler.update()
    return loss


def _regression(seed=0, n=256, d=16):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    with torch.no_grad():
        y = _mlp(seed + 1, d, 64, 1)(x)
    return x, y


def test_pure_bfloat16_adam_at_a_small_lr_rounds_away():
    """Ground truth: 200 Adam steps at lr 1e-5 on the pure bfloat16 model leave the
    loss within 5 % of where it started (measured: 2.6 % lower), while the same model
    with float32 master weights (MasterWeights) falls by more than 30 % (measured 46 %). Reference for the fraction: one
    real bfloat16 Adam step on a copy, the share of weight elements with a nonzero
    gradient that it leaves unchanged."""
    x, y = _regression()
    model = _mlp(0, 16, 64, 1).to(torch.bfloat16)
    xb, yb = x.bfloat16(), y.bfloat16()

    def run(master: bool) -> tuple[float, float]:
        m = copy.deepcopy(model)
        mw = pr.MasterWeights(m.parameters()) if master else None
        opt = torch.optim.Adam(mw.params if master else m.parameters(), lr=1e-5)
        first = F.mse_loss(m(xb).float(), y).item()
        for _ in range(200):
            m.zero_grad(set_to_none=True)
            F.mse_loss(m(xb).float(), y).backward()
            if master:
                mw.grads_to_master()
            opt.step()
            if master:
                mw.master_to_model()
        return first, F.mse_loss(m(xb).float(), y).item()

    first, pure = run(False)
    _, mixed = run(True)
    assert pure > 0.95 * first and mixed < 0.7 * first, (first, pure, mixed)

    opt = torch.optim.Adam(model.parameters(), lr=1e-5)
    report = diagnose(model, xb, yb, optimizer=opt)
    found = _precision(report)
    assert [f.cause for f in found] == ["rounding"], str(report)
    twin = copy.deepcopy(model)
    F.mse_loss(twin(xb), yb).backward()
    before = {n: p.detach().clone() for n, p in twin.named_parameters()}
    grads = {n: p.grad.clone() for n, p in twin.named_parameters()}
    torch.optim.Adam(twin.parameters(), lr=1e-5).step()
    for name in found[0].layers:
        w = f"{name}.weight"
        nz = grads[w] != 0
        kept = float((dict(twin.named_parameters())[w].detach() == before[w])[nz].float().mean())
        assert report._m.rounded[name] == pytest.approx(kept, abs=0.05), name
    assert "update_ratio" not in report.symptoms       # told once, as precision


# --------------------------------------------------------------------- 4. scaler
def test_scaler_whose_steps_keep_being_skipped_is_found():
    """Inputs x 3000: every scaled gradient overflows, the scale halves at every step.
    Ground truth: the loss never falls below its start; reference for the skipped
    steps: the steps after which the parameters are bitwise unchanged."""
    x, y = _regression()
    model = _mlp(0, 16, 64, 1)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    scaler = torch.amp.GradScaler("cpu")
    unchanged = []
    with watch(model, opt, every=10, scaler=scaler) as w:
        for _ in range(40):
            before = [p.detach().clone() for p in model.parameters()]
            w.log(_scaled_autocast_step(model, opt, scaler, x * 3e3, y))
            unchanged.append(all(torch.equal(a, p) for a, p in zip(before, model.parameters())))
    assert w.skipped == unchanged and sum(unchanged) > 30
    losses = [v for v in w.losses if v == v]
    assert not losses or min(losses) >= losses[0]
    found = _precision(w.report())
    assert [f.cause for f in found] == ["scaler"], str(w.report())
    assert f"{scaler.get_scale():.3g}" in found[0].evidence


# -------------------------------------------------------------------- 5. healthy
def _autocast_run(model, x, y, scaler, steps=60):
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    with watch(model, opt, every=10, scaler=scaler) as w:
        for _ in range(steps):
            w.log(_scaled_autocast_step(model, opt, scaler, x, y))
    return w


@pytest.mark.parametrize("make", [lambda: torch.amp.GradScaler("cpu"), pr.GradScaler],
                         ids=["torch", "companion"])
def test_float16_autocast_with_a_grad_scaler_gives_no_finding(make):
    """Ground truth: the loss falls 10-fold in 60 steps. diagnose (with the scaler) and
    watch give no finding at all. Reference for watch's signal (a scaled backward,
    divided by the scale): diagnose's unscaled pass on the same model."""
    x, y = _regression()
    model = _mlp(0, 16, 64, 1)
    scaler = make()
    with torch.autocast(**F16):
        report = diagnose(model, x, y, scaler=scaler, optimizer=torch.optim.Adam(
            model.parameters(), lr=1e-3))
    assert report.findings == [], str(report)
    w = _autocast_run(model, x, y, scaler)
    assert w.losses[-1] < 0.1 * w.losses[0], w.losses[::10]
    assert w.report().findings == [], str(w.report())
    assert len(w.scales) == len(w.skipped) == 60 and w.measurements
    # step 0 saw the model diagnose saw: its signal, measured on the scaled loss and
    # divided by the scale, is diagnose's (unscaled) to float16 rounding
    first = w.measurements[0]
    assert first.step == 0 and not w.skipped[0]
    for name, value in report._m.signal.items():
        assert first.signal[name] == pytest.approx(value, rel=2e-2), name


def test_bfloat16_autocast_on_a_float32_model_gives_no_finding():
    """float32 master weights (the model's own) under bfloat16 autocast with Adam:
    ground truth, the loss falls 10-fold in 60 steps; no finding."""
    x, y = _regression()
    model = _mlp(0, 16, 64, 1)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    with torch.autocast(**BF16):
        report = diagnose(model, x, y, optimizer=opt)
    assert report.findings == [] and report._m.low_dtype == "bfloat16", str(report)
    first = F.mse_loss(model(x), y).item()
    for _ in range(60):
        with torch.autocast(**BF16):
            loss = F.mse_loss(model(x).float(), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert F.mse_loss(model(x), y).item() < 0.1 * first


def test_pure_float16_model_with_master_weights_and_a_scaler_gives_no_finding():
    """A float16 model trained through MasterWeights and the companion's GradScaler:
    ground truth, the loss falls 10-fold in 60 steps; diagnose with the scaler and the
    optimizer (built on the float32 masters, not on the model's parameters) gives no
    finding, and neither does a watch of the run (whose steps end at log(), after
    master_to_model(): the model's weights move there)."""
    x, y = _regression()
    model = _mlp(0, 16, 64, 1).half()
    scaler = pr.GradScaler()
    mw = pr.MasterWeights(model.parameters())
    opt = torch.optim.Adam(mw.params, lr=1e-3)
    report = diagnose(model, x.half(), y.half(), optimizer=opt, scaler=scaler)
    assert report.findings == [], str(report)
    first = F.mse_loss(model(x.half()).float(), y).item()
    with watch(model, opt, every=10, scaler=scaler) as w:
        for _ in range(60):
            model.zero_grad(set_to_none=True)
            loss = F.mse_loss(model(x.half()).float(), y)
            scaler.scale(loss).backward()
            mw.grads_to_master()
            scaler.step(opt)
            scaler.update()
            mw.master_to_model()
            w.log(loss)
    assert F.mse_loss(model(x.half()).float(), y).item() < 0.1 * first
    assert w.report().findings == [], str(w.report())
    ratios = w.measurements[-1].update_ratio          # the model's weights did move
    assert ratios and all(1e-5 < r < 1e-1 for r in ratios.values()), ratios


def test_hugging_face_gpt2_under_bfloat16_autocast_gives_no_finding():
    """A model no one here wrote: a 2-layer GPT-2 under bfloat16 autocast, AdamW (lr
    3e-3) on its float32 weights. Ground truth: 30 steps halve its loss on a cyclic
    token batch; diagnose with the optimizer gives no finding."""
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(transformers.GPT2Config(
        n_layer=2, n_embd=64, n_head=4, vocab_size=64, n_positions=32, bos_token_id=1,
        eos_token_id=2))
    ids = (torch.arange(16)[None, :] * 3 + torch.arange(8)[:, None]) % 64
    batch = {"input_ids": ids, "labels": ids}
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    with torch.autocast(**BF16):
        report = diagnose(model, batch, optimizer=opt)
    assert report.findings == [] and report._m.low_dtype == "bfloat16", str(report)
    first = None
    for _ in range(30):
        with torch.autocast(**BF16):
            loss = model(**batch).loss
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.5 * first


def test_float32_pass_is_not_repeated(monkeypatch):
    """A float32 model outside autocast: no float32 copy, no precision measurements."""
    def fail(*a, **k):
        raise AssertionError("float32 pass repeated")
    monkeypatch.setattr(dg, "_float32_pass", fail)
    x, y = _regression()
    report = diagnose(_mlp(0, 16, 64, 1), x, y)
    assert report._m.low_dtype is None and report._m.lost == {}


@pytest.mark.parametrize("name", ["bert", "vit", "convnext"])
def test_zoo_models_under_float16_autocast_with_a_scaler_give_no_finding(name):
    """Models no one here wrote (``tests/test_zoo.py``'s Hugging Face BERT on a padded
    batch, ViT, ConvNeXt with its 1e-6 layer scale) under float16 autocast with a
    GradScaler. Ground truth: 20 steps of their optimizer, scaled, lower the loss by a
    third; diagnose with the scaler gives no finding (the gradients behind ConvNeXt's
    layer scale, tiny by design, are a note)."""
    import test_zoo as zoo

    c = zoo.case(name)
    scaler = torch.amp.GradScaler("cpu")
    with torch.autocast(**F16):
        report = diagnose(c.model, c.x, c.y, loss=c.loss, scaler=scaler)
    assert report.findings == [], str(report)
    model = copy.deepcopy(c.model)
    opts = zoo._as_list(c.make_opt(model))
    losses = []
    with torch.random.fork_rng():
        torch.manual_seed(0)
        for _ in range(20):
            with torch.autocast(**F16):
                loss = zoo.objective(c, model)
            for o in opts:
                o.zero_grad()
            scaler.scale(loss.float()).backward()
            for o in opts:
                scaler.step(o)
            scaler.update()
            losses.append(loss.item())
    assert losses[-1] < 0.67 * losses[0], losses


def test_report_shows_the_precision_measurements():
    """A bfloat16 pass: the rows carry ``lost`` and ``rounded`` (the measurement's own
    values), the text and HTML tables a ``rounded`` column, the figure a fourth panel;
    a float32 report keeps its columns and three panels."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x, y = _regression()
    model = _mlp(0, 16, 64, 1).to(torch.bfloat16)
    report = diagnose(model, x.bfloat16(), y.bfloat16(),
                      optimizer=torch.optim.Adam(model.parameters(), lr=1e-5))
    layers = [r for r in report.rows if r["kind"] == "layer"]
    assert {r["name"]: r["rounded"] for r in layers} == report._m.rounded
    assert all(r["lost"] == report._m.lost[r["name"]] for r in layers)
    assert "rounded" in str(report).splitlines()[1] and ">rounded<" in report._repr_html_()
    assert "bfloat16 pass" in str(report).splitlines()[0]
    assert len(report.plot().axes) == 5                 # 4 panels and the text
    model = _mlp(0, 16, 64, 1)
    plain = diagnose(model, x, y, optimizer=torch.optim.Adam(model.parameters(), lr=1e-3))
    assert "lost" not in plain.rows[0] and "rounded" not in str(plain)
    assert len(plain.plot().axes) == 4
    plt.close("all")


def test_watch_reports_a_scaler_that_never_takes_a_step():
    """Inputs of 1e5 overflow float16 in the forward pass: every one of 20 steps is
    skipped (reference: the parameters stay bitwise equal to the start), the scale
    halves to 2**16 / 2**20 < 1: an error, in a report with no measured step."""
    x, y = _regression()
    model = _mlp(0, 16, 64, 1)
    start = [p.detach().clone() for p in model.parameters()]
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    scaler = pr.GradScaler()
    with watch(model, opt, every=5, scaler=scaler) as w:
        for _ in range(20):
            w.log(_scaled_autocast_step(model, opt, scaler, x * 1e5, y))
    assert all(torch.equal(a, p) for a, p in zip(start, model.parameters()))
    assert w.skipped == [True] * 20 and w.measurements == []
    report = w.report()
    assert [(f.symptom, f.cause, f.severity) for f in report.findings] == [
        ("precision", "scaler", "error"), ("diverged", "", "error")], str(report)
    assert w.scales[-1] == 2.0 ** -4 and "below 1" in report.findings[0].evidence


def _watched_bfloat16_run(kind: str, lr: float = 1e-3, steps: int = 120):
    """Adam on a task like the precision chapter's (a tanh MLP 16-32-32-32-1, nets.mlp's
    default, teacher_regression 256), bfloat16 weights stepped directly ("pure"), through float32
    MasterWeights ("master"), or a float32 model under bfloat16 autocast ("autocast")."""
    from companion import data, nets
    x, y = data.teacher_regression(256, 16, seed=0)
    net = nets.mlp(16, 1, width=32, depth=3, seed=0)
    if kind != "autocast":
        net = net.to(torch.bfloat16)
    mw = pr.MasterWeights(net.parameters()) if kind == "master" else None
    opt = torch.optim.Adam(mw.params if mw else net.parameters(), lr=lr)
    xin = x if kind == "autocast" else x.bfloat16()
    unmoved = []                   # reference: per step, trained elements left unchanged
    with watch(net, opt, every=10) as w:
        for _ in range(steps):
            net.zero_grad(set_to_none=True)
            opt.zero_grad(set_to_none=True)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=kind == "autocast"):
                loss = F.mse_loss(net(xin).float(), y)
            loss.backward()
            before = [p.detach().clone() for p in net.parameters()]
            if mw:
                mw.grads_to_master()
            opt.step()
            if mw:
                mw.master_to_model()
            w.log(loss)
            p, b = net[0].weight, before[0]
            got = p.grad != 0
            unmoved.append(float(((p.detach() == b) & got).sum() / got.sum()))
    with torch.no_grad():
        final = F.mse_loss(net(xin).float(), y).item()
    return w, final, unmoved


def test_watch_finds_bfloat16_weights_whose_adam_updates_round_away():
    """Pure bfloat16 weights under Adam at lr 1e-3: diagnose at the initial weights sees
    nothing (Adam's first step is lr per coordinate, above the band), but over the run
    Adam's steps shrink and most trained elements stop moving. Reference: the share of
    the first layer's trained elements that torch's own step left unchanged, recorded
    in the loop (median over the measured steps), and the ground truth that float32
    master weights on the same seed end lower. MasterWeights and bfloat16 autocast
    give no finding."""
    w, final, unmoved = _watched_bfloat16_run("pure")
    report = w.report()
    assert [(f.symptom, f.cause) for f in report.findings] == [("precision", "rounding")], \
        str(report)
    assert "fc1" in report.findings[0].layers
    measured = [unmoved[m.step] for m in w.measurements]
    assert [m.rounded["fc1"] for m in w.measurements] == pytest.approx(measured)
    w_master, final_master, _ = _watched_bfloat16_run("master")
    w_auto, final_auto, _ = _watched_bfloat16_run("autocast")
    assert w_master.report().findings == [] and w_auto.report().findings == []
    assert final > 1.1 * final_master and final > 1.1 * final_auto, (final, final_master,
                                                                      final_auto)
