"""Claims of the initialization chapter (book/initialization.ipynb), checked without running it.

(The later tests, from "the chapter's later cells" on, check the batched trainers, the
Jacobian product, orthogonal weights, convolutions, zero-gamma blocks, the output bias and
LSUV against independent references.)

* Finite-width drift (Hanin & Rolnick 2018): the per-layer log-ratio ln R of squared norms
  of a bias-free ReLU layer at He's scale has mean about -5/(2n) and variance about 5/n.
  References: Monte Carlo, once through the chapter's representation (z = W h sampled as
  Gaussians) and once through real weight matrices, with a tolerance from the Monte Carlo
  standard error plus the stated O(1/n^2) remainder; the closed forms E[R] = 1 and
  Var[R] = 5/n.
* Notation: the chapter's chi_1 (variance gain) is the square of its chi (norm gain); the
  norm's e-folding depth is twice the variance's; the chapter's functions (its quadrature
  and chaos cells, read from the notebook) against an independent Gauss-Hermite rule and a
  measured tanh net (float32 autograd).
* Correlation depth scale: the chapter's chi_c is the slope of its correlation map at c*
  (finite differences, Price's theorem); c* = 0 for an odd activation without biases in
  the chaotic phase; chi_c = chi_1 in the ordered phase.
* torch's default nn.Linear: weights U(+-1/sqrt(fan_in)), so Var = 1/(3 fan_in) (the
  closed-form variance a^2/3 of a uniform law), biases within the same bound, and the
  weight equals companion.init.kaiming_uniform_(a=sqrt(5)) with the same seed.
* Initial loss: a zero output layer gives exactly ln C (closed form: uniform softmax), a
  small one stays within 2 max|z| of it (logsumexp bounds).
"""
from __future__ import annotations

import ast
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from companion import activations, init, nets

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "book" / "initialization.ipynb"


def _code_cells() -> list[str]:
    cells = json.loads(NOTEBOOK.read_text(encoding="utf-8"))["cells"]
    return ["".join(c["source"]) for c in cells if c["cell_type"] == "code"]


def _only_definitions(source: str) -> str:
    """The imports, function definitions and plain assignments of a cell (no calls that
    print, glue or draw)."""
    tree = ast.parse(source)
    keep = [node for node in tree.body
            if isinstance(node, (ast.FunctionDef, ast.Import, ast.ImportFrom, ast.Assign))]
    return ast.unparse(ast.Module(body=keep, type_ignores=[]))


@pytest.fixture(autouse=True)
def one_thread():
    """Small tensors: one thread is faster, and much faster on a busy machine (as the
    chapter itself sets); the previous setting is restored after each test."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def chapter() -> dict:
    """The chapter's quadrature cell and its edge-of-chaos definitions, run on their own."""
    cells = _code_cells()
    quadrature = next(s for s in cells if "def gauss_mean_smooth" in s)
    chaos = next(s for s in cells if "def chi_1(" in s)
    namespace = {"np": np, "activations": activations, "glue": lambda *a, **k: None}
    exec(compile(_only_definitions(quadrature), "quadrature cell", "exec"), namespace)
    exec(compile(_only_definitions(chaos), "chaos cell", "exec"), namespace)
    return namespace


# ------------------------------------------------------------------ finite-width drift
def _log_R_gaussian(n: int, T: int, seed: int) -> np.ndarray:
    """ln R with R = (2/n) sum u_i^2 1[u_i > 0], u ~ N(0, 1): the chapter's representation."""
    u = torch.randn(T, n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return torch.log(2 / n * (torch.relu(u) ** 2).sum(dim=1)).numpy()


@pytest.mark.parametrize("n", [64, 256])
def test_relu_drift_is_minus_5_over_2n_by_monte_carlo(n):
    """Mean of ln R against -5/(2n): tolerance 4 standard errors plus the O(1/n^2)
    remainder of the expansion (its coefficient is -49/12; 5/n^2 bounds it)."""
    log_R = _log_R_gaussian(n, 200_000, seed=n)
    se = log_R.std() / math.sqrt(log_R.size)
    assert abs(log_R.mean() - (-5 / (2 * n))) < 4 * se + 5 / n ** 2
    assert abs(log_R.mean()) > 10 * se                 # ln of the mean (0) is rejected
    assert abs(log_R.var() - 5 / n) < 40 / n ** 2          # Var[ln R] = 5/n + O(1/n^2)


def test_R_has_mean_1_and_variance_5_over_n():
    """Closed forms E[R] = 1 and Var[R] = (4/n)(3/2 - 1/4) = 5/n, by Monte Carlo."""
    n, T = 32, 200_000
    u = torch.randn(T, n, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    R = (2 / n * (torch.relu(u) ** 2).sum(dim=1)).numpy()
    se = R.std() / math.sqrt(T)
    assert abs(R.mean() - 1) < 4 * se
    assert R.var() == pytest.approx(5 / n, rel=0.03)


def test_real_relu_layers_drift_like_the_representation():
    """ln |relu(W h)|^2 / |h|^2 with real Gaussian matrices W ~ N(0, 2/n) (an independent
    sampling path): mean -5/(2n) within 4 standard errors plus 5/n^2."""
    n, T = 64, 3000
    gen = torch.Generator().manual_seed(7)
    h = torch.randn(n, generator=gen, dtype=torch.float64)
    W = torch.randn(T, n, n, generator=gen, dtype=torch.float64) * math.sqrt(2 / n)
    log_R = torch.log((torch.relu(W @ h) ** 2).sum(dim=1) / (h ** 2).sum()).numpy()
    se = log_R.std() / math.sqrt(T)
    assert abs(log_R.mean() - (-5 / (2 * n))) < 4 * se + 5 / n ** 2


# --------------------------------------------------------------------- chi_1 = chi^2
@pytest.mark.parametrize("s_w, s_b", [(0.8, 0.0), (1.0, 0.3), (5 / 3, 0.0), (1.5, 0.3)])
def test_chi_1_is_chi_squared_and_matches_an_independent_rule(chapter, s_w, s_b):
    """The chapter's chi_1 (variance gain) equals its chi (norm gain) squared, and both
    agree with a 101-node Gauss-Hermite rule and a fixed-point iteration written here."""
    chi_1, chi = float(chapter["chi_1"](s_w, s_b)), float(chapter["chi"](s_w, s_b))
    assert chi_1 == pytest.approx(chi ** 2, rel=1e-12)
    x, w = np.polynomial.hermite_e.hermegauss(101)
    w = w / w.sum()
    q = 1.0
    for _ in range(2000):
        q = s_w ** 2 * np.sum(np.tanh(np.sqrt(q) * x) ** 2 * w) + s_b ** 2
    reference = s_w ** 2 * np.sum((1 - np.tanh(np.sqrt(q) * x) ** 2) ** 2 * w)
    assert chi_1 == pytest.approx(reference, rel=1e-4)   # q* small enough for 61 nodes


def test_norm_e_folding_depth_is_twice_the_variances(chapter):
    """1/ln chi = 2/ln chi_1 for the chapter's functions (torch's tanh gain), and a
    measured wide tanh net at that point grows its gradient's norm by about chi per layer
    (the chapter's own tolerance for the mean field: 10 %)."""
    chi_1, chi = float(chapter["chi_1"](5 / 3, 0.0)), float(chapter["chi"](5 / 3, 0.0))
    assert (1 / math.log(chi)) == pytest.approx(2 / math.log(chi_1), rel=1e-12)
    depth, width = 30, 256
    net = nets.mlp(width, 1, width=width, depth=depth, activation="tanh",
                   weight_scale=5 / 3, seed=0)
    x = torch.randn(32, width, generator=torch.Generator().manual_seed(0))
    zs, h = [], x
    for name, module in net.named_children():
        h = module(h)
        if name.startswith("fc"):
            h.retain_grad()
            zs.append(h)
    h.sum().backward()
    norms = [z.grad.norm().item() for z in zs]
    growth = (norms[9] / norms[-1]) ** (1 / (depth - 10))      # from layer 10 to the top
    assert growth == pytest.approx(chi, rel=0.1)
    assert growth ** 2 == pytest.approx(chi_1, rel=0.2)


# ------------------------------------------------------------- correlation depth scale
def test_chi_c_is_the_slope_of_the_correlation_map_in_the_chaotic_phase(chapter):
    """At (5/3, 0): c* = 0 (tanh odd, no bias: c = 0 maps to 0), chi_c < 1 < chi_1, and
    chi_c equals the central finite-difference slope of the correlation map at c*."""
    s_w, s_b = 5 / 3, 0.0
    c = chapter["c_star"](s_w, s_b)
    assert abs(c) < 1e-6
    q = float(chapter["q_star"](s_w, s_b))
    h = 1e-4
    slope = (chapter["correlation_map"](c + h, q, s_w, s_b)
             - chapter["correlation_map"](c - h, q, s_w, s_b)) / (2 * h)
    chi_c = chapter["chi_c"](s_w, s_b)
    assert chi_c == pytest.approx(slope, rel=1e-5)
    assert chi_c < 1 < float(chapter["chi_1"](s_w, s_b))


def test_chaotic_phase_with_bias_has_an_interior_fixed_point(chapter):
    """At (1.8, 0.3): 0 < c* < 1 is a fixed point of the map, and chi_c is its slope."""
    s_w, s_b = 1.8, 0.3
    c = chapter["c_star"](s_w, s_b)
    q = float(chapter["q_star"](s_w, s_b))
    assert 0 < c < 0.999
    assert chapter["correlation_map"](c, q, s_w, s_b) == pytest.approx(c, abs=1e-9)
    h = 1e-4
    slope = (chapter["correlation_map"](c + h, q, s_w, s_b)
             - chapter["correlation_map"](c - h, q, s_w, s_b)) / (2 * h)
    assert chapter["chi_c"](s_w, s_b) == pytest.approx(slope, rel=1e-5)


def test_chi_c_is_chi_1_in_the_ordered_phase(chapter):
    """At (1, 0.3) (ordered): c* = 1 and chi_c = chi_1 < 1, so xi_c = -1/ln chi_1."""
    assert chapter["c_star"](1.0, 0.3) == pytest.approx(1.0, abs=1e-9)
    chi_1 = float(chapter["chi_1"](1.0, 0.3))
    assert chi_1 < 1
    assert chapter["chi_c"](1.0, 0.3) == pytest.approx(chi_1, rel=1e-6)


# ------------------------------------------------------------------ torch's default
@pytest.mark.parametrize("fan_in, fan_out", [(512, 256), (64, 64)])
def test_default_linear_weights_have_variance_one_over_3_fan_in(fan_in, fan_out):
    """Var[U(-a, a)] = a^2/3 with a = 1/sqrt(fan_in): the sample variance within 4
    standard errors (Var of w^2 for a uniform law: a^4/5 - a^4/9); |W|, |b| <= a; and the
    weight is kaiming_uniform_(a=sqrt(5)) drawn with the same seed."""
    torch.manual_seed(0)
    layer = torch.nn.Linear(fan_in, fan_out)
    W, b = layer.weight.detach().double(), layer.bias.detach().double()
    a = 1 / math.sqrt(fan_in)
    se = math.sqrt((a ** 4 / 5 - a ** 4 / 9) / W.numel())
    assert abs((W ** 2).mean().item() - a ** 2 / 3) < 4 * se
    assert W.abs().max().item() <= a and b.abs().max().item() <= a
    assert W.abs().max().item() > 0.99 * a                   # the bound is reached
    assert b.abs().max().item() > 0                          # biases are not zero
    torch.manual_seed(0)
    same = init.kaiming_uniform_(torch.empty(fan_out, fan_in), a=math.sqrt(5))
    assert torch.equal(layer.weight.detach(), same)


# ------------------------------------------------------------------- initial loss
def _classifier() -> torch.nn.Module:
    return nets.mlp(20, 10, width=64, depth=4, activation="relu", init="kaiming_normal", seed=0)


def test_zero_output_layer_gives_exactly_log_C():
    """Zero output weights and bias: all logits 0, softmax uniform, loss = ln C."""
    net = _classifier()
    with torch.no_grad():
        net.out.weight.zero_()
        net.out.bias.zero_()
        x = torch.randn(128, 20, generator=torch.Generator().manual_seed(0), dtype=torch.float32)
        y = torch.randint(0, 10, (128,), generator=torch.Generator().manual_seed(1))
        loss = torch.nn.functional.cross_entropy(net(x), y).item()
    assert loss == pytest.approx(math.log(10), rel=1e-6)


def test_small_output_layer_gives_about_log_C_and_a_normal_one_more():
    """Output weights x 0.01: |loss - ln C| <= 2 max|z| (logsumexp bounds); at the normal
    scale the mean loss over random labels is above ln C."""
    x = torch.randn(512, 20, generator=torch.Generator().manual_seed(5))
    y = torch.randint(0, 10, (512,), generator=torch.Generator().manual_seed(6))
    losses = {}
    for factor in (1.0, 0.01):
        net = _classifier()
        with torch.no_grad():
            net.out.weight.mul_(factor)
            logits = net(x)
            losses[factor] = torch.nn.functional.cross_entropy(logits, y).item()
            if factor == 0.01:
                per_example = torch.nn.functional.cross_entropy(logits, y, reduction="none")
                bound = 2 * logits.abs().max(dim=1).values
                assert torch.all((per_example - math.log(10)).abs() <= bound + 1e-6)
    assert abs(losses[0.01] - math.log(10)) < 0.01
    assert losses[1.0] > math.log(10) + 0.1


# ------------------------------------------------------- the chapter's later cells
def _pick(source: str, *names: str) -> str:
    """The top-level imports and the definitions (functions, classes, assignments) of
    ``names`` in a cell, in the cell's order: what a test needs without the cell's
    experiments."""
    tree = ast.parse(source)
    keep = []
    for node in tree.body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            keep.append(node)
        elif isinstance(node, (ast.FunctionDef, ast.ClassDef)) and node.name in names:
            keep.append(node)
        elif isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id in names
                or isinstance(t, ast.Tuple) and any(getattr(e, "id", None) in names for e in t.elts)
                for t in node.targets):
            keep.append(node)
    return ast.unparse(ast.Module(body=keep, type_ignores=[]))


def _cell(marker: str) -> str:
    return next(s for s in _code_cells() if marker in s)


def _namespace(**extra) -> dict:
    import functools

    from companion import data, diagnostics, train
    ns = {"functools": functools, "np": np, "torch": torch, "init": init, "nets": nets, "data": data,
          "diagnostics": diagnostics, "train": train, "activations": activations,
          "glue": lambda *a, **k: None}
    ns.update(extra)
    return ns


def test_stacked_mlp_training_equals_companion_train():
    """The He experiment's batched trainer (stacked weights, torch's heavy ball written
    out) against companion.train.train(optimizer="momentum") run model by model, on
    shallow nets where float rounding does not grow (different rates per model)."""
    ns = _namespace()
    exec(_pick(_cell("def train_mlps_together"), "train_mlps_together"), ns)
    x, y = ns["data"].teacher_regression(64, 8, seed=1)
    lrs, seeds = [0.01, 0.03], [0, 1]
    make = lambda s: nets.mlp(8, 1, width=16, depth=3, activation="relu",
                              init="kaiming_normal", seed=s)
    stacked = ns["train_mlps_together"]([make(s) for s in seeds], x, y, lrs, 60)
    for k, (lr, s) in enumerate(zip(lrs, seeds)):
        history = ns["train"].train(make(s), x, y, steps=60, lr=lr, optimizer="momentum")
        np.testing.assert_allclose(stacked[:, k], history.losses, rtol=1e-4)


def test_linear_nets_on_the_qr_pair_equal_the_full_data():
    """The deep linear nets train on (R, Q^T y) instead of the 256 examples: the losses
    equal plain autograd gradient descent on the full data, model by model."""
    ns = _namespace()
    exec(_cell("def train_linear_together"), ns)               # definitions only, and an assert
    ns["LIN_STEPS"] = 40
    depth, lrs = 3, [0.5 / 3, 2.0 / 3]
    models = [ns["deep_linear"](depth, "Gaussian N(0, 1/n)", seed) for seed in (0, 1)]
    stacked = ns["train_linear_together"](models, lrs)
    for k, lr in enumerate(lrs):
        Ws = [m.weight.detach().clone().requires_grad_() for m in models[k]]
        for t in range(40):
            h = ns["x_lin"]
            for W in Ws:
                h = h @ W.T
            loss = ((h - ns["y_lin"]) ** 2).mean()
            assert loss.item() == pytest.approx(stacked[t, k], rel=1e-4)
            grads = torch.autograd.grad(loss, Ws)
            with torch.no_grad():
                for W, g in zip(Ws, grads):
                    W -= lr * g


@pytest.mark.parametrize("activation, s_b, weights", [("tanh", 0.3, "orthogonal"),
                                                      ("tanh", 0.0, "Gaussian"),
                                                      ("relu", 0.0, "orthogonal")])
def test_jacobian_product_equals_autograd(chapter, activation, s_b, weights):
    """The product of per-layer Jacobians D_l W_l against torch.func.jacrev of the forward
    pass through the same layers (float64), on a small net."""
    ns = _namespace(q_star=chapter["q_star"], chi_1=chapter["chi_1"])
    source = _cell("def input_output_jacobian")
    exec(_pick(source, "random_net", "input_output_jacobian", "ISO_F", "ISO_F_PRIME"), ns)
    ns["ISO_WIDTH"], ns["ISO_DEPTH"] = 12, 6
    h0, layers = ns["random_net"](activation, 1.3, s_b, weights, seed=3)
    f = ns["ISO_F"][activation]

    def forward(h):
        for W, b in layers:
            h = f(W @ h + b)
        return h

    reference = torch.func.jacrev(forward)(h0)
    assert torch.allclose(ns["input_output_jacobian"](activation, h0, layers), reference,
                          atol=1e-12, rtol=1e-10)


@pytest.mark.parametrize("shape", [(256, 512), (512, 256)])
def test_orthogonal_is_orthonormal_on_the_shorter_side(shape):
    """torch's orthogonal_ on a wide weight has orthonormal rows (W W^T = I) and W^T W a
    rank-256 projection; on a tall weight the columns are orthonormal."""
    W = torch.nn.init.orthogonal_(torch.empty(*shape, dtype=torch.float64))
    short = W @ W.T if shape[0] < shape[1] else W.T @ W
    long = W.T @ W if shape[0] < shape[1] else W @ W.T
    assert torch.allclose(short, torch.eye(256, dtype=torch.float64), atol=1e-12)
    eig = torch.linalg.eigvalsh(long)
    assert torch.allclose(eig[256:], torch.ones(256, dtype=torch.float64), atol=1e-12)
    assert eig[:256].abs().max() < 1e-12


@pytest.mark.parametrize("c_in, c_out, k", [(64, 128, 3), (32, 16, 5)])
def test_conv_fans_and_variances(c_in, c_out, k):
    """fan_in = C_in k^2, fan_out = C_out k^2; nn.Conv2d's default weights have variance
    1/(3 fan_in) (closed form of U(+-1/sqrt(fan_in)), within 4 standard errors), and
    kaiming_normal_ gives 2/fan in either mode (within 4 standard errors of a Gaussian
    sample variance, sqrt(2/N))."""
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(c_in, c_out, k)
    fan_in, fan_out = init.calculate_fan_in_and_fan_out(conv.weight)
    assert (fan_in, fan_out) == (c_in * k * k, c_out * k * k)
    W = conv.weight.detach().double()
    a = 1 / math.sqrt(fan_in)
    se = math.sqrt((a ** 4 / 5 - a ** 4 / 9) / W.numel())
    assert abs((W ** 2).mean().item() - a ** 2 / 3) < 4 * se
    for mode, fan in (("fan_in", fan_in), ("fan_out", fan_out)):
        w = torch.nn.init.kaiming_normal_(torch.empty(c_out, c_in, k, k, dtype=torch.float64),
                                          mode=mode, nonlinearity="relu")
        assert abs((w ** 2).mean().item() / (2 / fan) - 1) < 4 * math.sqrt(2 / w.numel())


def test_zero_gamma_blocks_are_the_identity_and_gamma_still_learns():
    """The chapter's torchvision-style BasicBlock stack with zero_init_residual: output ==
    input on non-negative inputs, in training and eval mode; the zero gammas get a nonzero
    gradient (so they leave zero at the first step)."""
    ns = _namespace()
    exec(_pick(_cell("class BasicBlock"), "BasicBlock", "resnet_stack"), ns)
    net = ns["resnet_stack"](4, True, channels=8, seed=1)
    x = torch.relu(torch.randn(4, 8, 6, 6, generator=torch.Generator().manual_seed(0)))
    out = net(x)
    assert torch.equal(out, x)
    (out * torch.randn_like(out)).sum().backward()
    assert all(block.bn2.weight.grad.abs().max() > 0 for block in net)
    net.eval()
    with torch.no_grad():
        assert torch.equal(net(x), x)


def test_log_frequency_bias_gives_the_entropy():
    """Zero output weights and b_k = ln p_k: softmax(b) = p, so the cross-entropy over labels
    with frequencies p is exactly H(p) (closed form)."""
    y = torch.tensor([0] * 50 + [1] * 30 + [2] * 15 + [3] * 5)
    p = torch.bincount(y).double() / len(y)
    logits = torch.log(p).expand(len(y), -1)
    loss = torch.nn.functional.cross_entropy(logits, y).item()
    assert loss == pytest.approx(-(p * torch.log(p)).sum().item(), rel=1e-12)


def test_lsuv_finds_he_scale_for_relu_and_the_unit_variance_scale_for_tanh():
    """The chapter's lsuv_ on wide nets (width 256, depth 8, 512 inputs): the median sigma_w
    of the hidden layers is He's sqrt(2) for ReLU and, for tanh, 1/sqrt(E[tanh(u)^2]),
    u ~ N(0, 1) (the scale that maps unit variance to unit variance; 101-node
    Gauss-Hermite), both within 3 %."""
    ns = _namespace()
    exec(_pick(_cell("def lsuv_"), "lsuv_"), ns)
    x = torch.randn(512, 256, generator=torch.Generator().manual_seed(0))
    nodes, weights = np.polynomial.hermite_e.hermegauss(101)
    tanh_scale = 1 / math.sqrt(np.sum(np.tanh(nodes) ** 2 * weights) / weights.sum())
    for act, expected in (("relu", math.sqrt(2)), ("tanh", tanh_scale)):
        net = nets.mlp(256, 1, width=256, depth=8, activation=act, seed=0)
        ns["lsuv_"](net, x)
        hidden = [m for m in net.modules() if isinstance(m, torch.nn.Linear)][1:-1]
        scales = [math.sqrt(256 * m.weight.var().item()) for m in hidden]
        assert np.median(scales) == pytest.approx(expected, rel=0.03), act
