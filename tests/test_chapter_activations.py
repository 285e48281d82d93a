"""Claims of the activations chapter (book/activations.ipynb), checked without running it.

* Kinks: torch's own modules (``nn.ELU``, ``nn.SELU``, ...) differentiated by autograd
  on both sides of 0, against the closed-form one-sided derivatives. ELU with
  alpha = 1 has a continuous f' (no kink) and a jump in f''; alpha != 1 has a jump in f'.
* Zero-centred outputs: per-example weight gradients from autograd against the sign
  property of delta_j h_k; layer means of wide networks at initialization against
  closed forms (symmetry for sigmoid and tanh, sqrt(q / 2 pi) for ReLU, the ELU's
  Gaussian integrals), the second moment by numpy's Gauss-Hermite rule (independent of
  the chapter's Gauss-Legendre rule); the batch gradient's share along (1, ..., 1).
* What the mean costs: the output layer's Hessian by torch.autograd.functional.hessian
  against (2/N) A^T A, the bound lambda_max >= 2 (sum m_k^2 + 1) (a covariance is
  positive semi-definite), and the chapter's SGD runs against those bounds.
* The SELU-constants solution: the chapter's own snippet (read from the notebook) run
  beside the chapter's ``gauss_mean``, against closed forms in math.erfc and torch's
  constants; and no code in the chapter imports a package that is not a dependency.
"""
from __future__ import annotations

import ast
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from companion import activations, data, nets
from test_snippets import python_blocks

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "book" / "activations.ipynb"
H = 1e-7                                   # one-sided step: f'(+-H) -> f'(0+-)


def Phi(x: float) -> float:
    return 0.5 * math.erfc(-x / math.sqrt(2.0))


def _cells() -> list[dict]:
    return json.loads(NOTEBOOK.read_text(encoding="utf-8"))["cells"]


def _source(cell: dict) -> str:
    return "".join(cell["source"])


# ----------------------------------------------------------------------------- kinks
def _slope(module: nn.Module, x: float, order: int = 1) -> float:
    """f'(x) (order 1) or f''(x) (order 2) of a torch module, by autograd in float64."""
    t = torch.tensor([x], dtype=torch.float64, requires_grad=True)
    (g,) = torch.autograd.grad(module(t).sum(), t, create_graph=True)
    if order == 2:
        (g,) = torch.autograd.grad(g.sum(), t)
    return float(g.detach())


def test_elu_with_alpha_1_has_no_kink_but_a_jump_in_the_second_derivative():
    """Reference: autograd on torch.nn.ELU(alpha=1), the real component. The slopes on
    the two sides of 0 both tend to 1 (e^z -> 1 = the identity's slope); the second
    derivative is e^z -> 1 on the left and 0 on the right."""
    elu = nn.ELU(alpha=1.0)
    left, right, at0 = _slope(elu, -H), _slope(elu, H), _slope(elu, 0.0)
    assert abs(left - 1.0) < 2 * H and right == 1.0 and at0 == 1.0
    assert abs(right - left) < 2 * H                      # continuous: no kink
    assert abs(_slope(elu, -H, 2) - 1.0) < 2 * H           # f''(0-) = 1
    assert _slope(elu, H, 2) == 0.0                        # f''(0+) = 0: f'' jumps by 1
    # the companion's closed form agrees on both sides
    d = activations.get("elu").derivative(np.array([-H, 0.0, H]))
    np.testing.assert_allclose(d, [left, at0, right], rtol=1e-14)


@pytest.mark.parametrize("alpha", [0.5, 2.0, activations.SELU_ALPHA])
def test_elu_with_alpha_not_1_has_a_kink(alpha):
    """Reference: the one-sided derivatives alpha e^0 = alpha and 1; autograd on
    torch.nn.ELU(alpha) on both sides of 0 gives a jump of |1 - alpha|."""
    elu = nn.ELU(alpha=alpha)
    left, right = _slope(elu, -H), _slope(elu, H)
    assert abs(left - alpha) < 3 * H * alpha and right == 1.0
    assert abs((right - left) - (1.0 - alpha)) < 3 * H * alpha


@pytest.mark.parametrize("name,left,right", [
    ("relu", 0.0, 1.0), ("leaky_relu", activations.LEAKY_SLOPE, 1.0),
    ("prelu", activations.PRELU_INIT, 1.0),
    ("selu", activations.SELU_SCALE * activations.SELU_ALPHA, activations.SELU_SCALE)])
def test_the_relu_family_and_selu_have_a_kink_at_0(name, left, right):
    """The chapter: ReLU, leaky ReLU, PReLU and SELU have a kink at 0 (f' jumps from
    `left` to `right`, closed forms). Reference: autograd on the torch modules."""
    module = activations.get(name).module().double()
    got_left, got_right = _slope(module, -H), _slope(module, H)
    assert got_left == pytest.approx(left, abs=1e-6)
    assert got_right == pytest.approx(right, abs=1e-12)
    assert abs(got_right - got_left) > 0.5 * abs(right - left) > 0


# ------------------------------------------------------------------ zero-centred outputs
def _per_example_weight_grads(h: torch.Tensor, seed: int = 0):
    """For a random linear layer z = W h followed by a nonlinear loss, the gradient of
    W and of z for each example separately, by autograd (no formula assumed)."""
    g = torch.Generator().manual_seed(seed)
    layer = nn.Linear(h.shape[1], 12, bias=False).double()
    v = torch.randn(12, dtype=torch.float64, generator=g)
    grads, deltas = [], []
    for n in range(h.shape[0]):
        layer.zero_grad()
        z = layer(h[n:n + 1])
        z.retain_grad()
        (torch.tanh(z + 0.3) @ v).sum().backward()
        grads.append(layer.weight.grad.clone())
        deltas.append(z.grad[0].clone())
    return torch.stack(grads), torch.stack(deltas)        # (N, units, n_in), (N, units)


def _inputs(kind: str) -> torch.Tensor:
    z = torch.randn(20, 40, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    return {"sigmoid": torch.sigmoid, "relu": torch.relu, "tanh": torch.tanh}[kind](z)


def test_positive_inputs_give_every_entry_of_a_units_gradient_the_sign_of_delta():
    """LeCun et al.'s argument, exactly: with all-positive inputs (sigmoid outputs) every
    entry of unit j's per-example weight gradient has the sign of delta_j.
    Reference: autograd's per-example gradients and deltas."""
    h = _inputs("sigmoid")
    assert bool((h > 0).all())
    grads, deltas = _per_example_weight_grads(h)
    assert bool((deltas != 0).all())
    assert torch.equal(torch.sign(grads), torch.sign(deltas)[:, :, None].expand_as(grads))
    torch.testing.assert_close(grads, deltas[:, :, None] * h[:, None, :])


def test_nonnegative_inputs_never_give_a_row_both_signs_but_zero_centred_ones_do():
    """ReLU outputs (>= 0): no entry of a row has the sign opposite to delta_j (zeros
    only drop weights out). Tanh outputs (both signs): every row has both signs.
    Reference: autograd's per-example gradients."""
    for kind, mixed_expected in (("relu", 0.0), ("tanh", 1.0)):
        grads, deltas = _per_example_weight_grads(_inputs(kind))
        mixed = ((grads > 0).any(-1) & (grads < 0).any(-1)).double().mean().item()
        assert mixed == mixed_expected, kind
    grads, deltas = _per_example_weight_grads(_inputs("relu"))
    assert not bool((torch.sign(grads) == -torch.sign(deltas)[:, :, None]).any())


def _layer_means(name: str, weight_scale: float, depth: int = 3, seed: int = 0):
    """Mean and second moment of h_l over units and inputs, l = 1..depth, of a wide
    network at initialization with standard normal inputs."""
    net = nets.mlp(256, 1, width=1024, depth=depth, activation=name,
                   weight_scale=weight_scale, seed=seed)
    x = torch.randn(1024, 256, generator=torch.Generator().manual_seed(seed + 100))
    out = []
    with torch.no_grad():
        h = x
        for l in range(1, depth + 1):
            h = net.get_submodule(f"act{l}")(net.get_submodule(f"fc{l}")(h))
            out.append((float(h.mean()), float(h.square().mean())))
    return out


def _gauss_hermite_mean(g, q: float = 1.0) -> float:
    """E[g(sqrt(q) u)], u ~ N(0, 1), by numpy's probabilists' Gauss-Hermite rule."""
    x, w = np.polynomial.hermite_e.hermegauss(80)
    return float(g(math.sqrt(q) * x) @ w / math.sqrt(2 * math.pi))


def test_layer_means_at_initialization_match_closed_forms():
    """Closed forms at infinite width: sigmoid 1/2 (sigma(z) + sigma(-z) = 1), tanh 0
    (odd), ReLU at He's scale 1/sqrt(pi) in every layer (q stays 2) with share
    m^2/E[h^2] = 1/pi, ELU's first layer at sigma_w = 1: 1/sqrt(2 pi) + sqrt(e) Phi(-1)
    - 1/2; the sigmoid's share 1/4 / E[sigma(u)^2] by Gauss-Hermite. Tolerances: a few
    standard errors of one network of width 1024 on 1024 inputs (seeds 0-3 tried). The
    sigmoid's share m^2/E[h^2] follows q_{l+1} = E[sigma(sqrt(q_l) u)^2] layer by layer."""
    for m, _ in _layer_means("sigmoid", 1.0):
        assert m == pytest.approx(0.5, abs=0.01)
    for m, _ in _layer_means("tanh", 1.0):
        assert m == pytest.approx(0.0, abs=0.01)
    relu = _layer_means("relu", math.sqrt(2.0))
    assert relu[0][0] == pytest.approx(1 / math.sqrt(math.pi), abs=0.01)
    for m, second in relu:       # deeper, q drifts in one finite net; the share does not
        assert m * m / second == pytest.approx(1 / math.pi, abs=0.015)
    (m_elu, _), *_ = _layer_means("elu", 1.0, depth=1)
    assert m_elu == pytest.approx(1 / math.sqrt(2 * math.pi) + math.sqrt(math.e) * Phi(-1) - 0.5,
                                  abs=0.01)
    q, sigmoid_sq = 1.0, lambda u: (1 / (1 + np.exp(-u))) ** 2
    for m, second in _layer_means("sigmoid", 1.0, depth=5):
        second_theory = _gauss_hermite_mean(sigmoid_sq, q)    # q_{l+1} = E[sigma^2]
        assert m * m / second == pytest.approx(0.25 / second_theory, abs=0.01)
        q = second_theory
    assert 0.25 / second_theory > 0.9    # the chapter, layer 5: the mean is most of E[h^2]


def _along_ones(name: str, weight_scale: float, seed: int) -> float:
    """Share of the squared norm of fc6's batch gradient (autograd) along (1, ..., 1),
    for the chapter's 10-layer net of width 64 on its regression batch."""
    x, y = data.teacher_regression(256, 16, seed=0)
    net = nets.mlp(16, 1, width=64, depth=10, activation=name, weight_scale=weight_scale,
                   seed=seed)
    nn.functional.mse_loss(net(x), y).backward()
    g = net.fc6.weight.grad
    return float(g.sum(1).square().sum() / (g.shape[1] * g.square().sum()))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sigmoid_batch_gradient_points_along_the_all_ones_direction(seed):
    """The chapter's reading of its table: most of a sigmoid layer's batch gradient lies
    along (1, ..., 1), a tanh layer's only a little more than the 1/n = 1/64 of a
    direction with no preference, the ReLU's in between. Reference: the property
    itself, for three seeds; the gradient from autograd."""
    sigmoid, tanh = _along_ones("sigmoid", 1.0, seed), _along_ones("tanh", 1.0, seed)
    relu = _along_ones("relu", math.sqrt(2.0), seed)
    assert sigmoid > 0.5 and tanh < 0.2 and tanh < relu < sigmoid


# ------------------------------------------------------- what the mean costs in training
class _Centred(nn.Module):
    def forward(self, z):
        return torch.sigmoid(z) - 0.5


def _centring_net(centred: bool, depth: int = 4) -> nn.Sequential:
    net = nets.mlp(16, 1, width=64, depth=depth, activation="sigmoid", seed=0)
    if centred:
        for l in range(1, depth + 1):
            setattr(net, f"act{l}", _Centred())
    return net


def test_centred_sigmoid_has_the_sigmoids_slopes_and_is_half_tanh():
    """sigma(z) - 1/2 = tanh(z/2)/2 (closed form), and its derivative is sigma'(z),
    by autograd."""
    z = torch.linspace(-8, 8, 201, dtype=torch.float64, requires_grad=True)
    c = _Centred()(z)
    torch.testing.assert_close(c, torch.tanh(z / 2) / 2)
    (g,) = torch.autograd.grad(c.sum(), z)
    torch.testing.assert_close(g, torch.sigmoid(z) * (1 - torch.sigmoid(z)))


def test_output_layer_hessian_is_2_over_n_AtA_and_the_mean_bounds_its_top_eigenvalue():
    """Reference: torch.autograd.functional.hessian of the MSE in the output layer's
    weights and bias equals (2/N) A^T A, A = [h, 1]; and since (1/N) A^T A - u u^T is a
    covariance (u = column means), lambda_max >= 2 (sum_k m_k^2 + 1) >= 2 (n m^2 + 1)."""
    x, y = data.teacher_regression(64, 16, seed=0)
    net = _centring_net(False, depth=2).double()
    x, y = x.double(), y.double()
    with torch.no_grad():
        h = net[:-1](x)
    n = h.shape[1]

    def loss(theta):
        w, b = theta[:n].reshape(1, n), theta[n:]
        return nn.functional.mse_loss(h @ w.T + b, y)

    theta = torch.cat([net.out.weight.detach().flatten(), net.out.bias.detach()])
    hessian = torch.autograd.functional.hessian(loss, theta)
    a = torch.cat([h, torch.ones(len(h), 1, dtype=h.dtype)], dim=1)
    torch.testing.assert_close(hessian, 2 * a.T @ a / len(a))
    top = float(torch.linalg.eigvalsh(hessian)[-1])
    means = h.mean(0)
    assert top >= 2 * (float(means.square().sum()) + 1) - 1e-9
    assert 2 * (float(means.square().sum()) + 1) >= 2 * (n * float(means.mean()) ** 2 + 1)
    assert top == pytest.approx(2 * (float(means.square().sum()) + 1), rel=0.02)  # the mean dominates


def _top_eigenvalue(net, x) -> float:
    with torch.no_grad():
        h = net[:-1](x)
    a = torch.cat([h, torch.ones(len(h), 1)], dim=1).double()
    return float(torch.linalg.eigvalsh(2 * a.T @ a / len(a))[-1])


def test_the_mean_caps_the_learning_rate_and_only_that():
    """The chapter's runs (its network, data and seed), against properties: at lr 0.3,
    above 2/lambda_max of the sigmoid net's output block and below the centred net's,
    the sigmoid net's loss jumps above 10x its start and its top layer saturates, the
    centred net learns (below 1/5 of the mean-prediction loss); at half the sigmoid's
    bound neither moves far from the mean-prediction loss in 300 steps."""
    from companion import train
    x, y = data.teacher_regression(256, 16, seed=0)
    baseline = float(((y - y.mean()) ** 2).mean())
    cap = {c: 2 / _top_eigenvalue(_centring_net(c), x) for c in (False, True)}
    assert cap[False] < 0.3 < cap[True] and cap[True] / cap[False] > 10

    def run(centred, lr):
        net = _centring_net(centred)
        history = train.train(net, x, y, steps=300, lr=lr, optimizer="sgd")
        with torch.no_grad():
            s = torch.sigmoid(net.fc4(net[:7](x)))
        return history, float((s * (1 - s)).mean())

    sigmoid, slope = run(False, 0.3)
    assert np.nanmax(sigmoid.losses[:10]) > 10 * sigmoid.losses[0] and slope < 1e-3
    assert sigmoid.final_loss > 0.95 * baseline
    assert run(True, 0.3)[0].final_loss < 0.2 * baseline
    for centred in (False, True):
        assert run(centred, 0.5 * cap[False])[0].final_loss > 0.9 * baseline


# --------------------------------------------------------------- the SELU solution
def _chapter_namespace() -> dict:
    """The chapter's gauss_mean (its Gauss-Legendre cell), run on its own."""
    cell = next(c for c in _cells() if c["cell_type"] == "code"
                and "def gauss_mean" in _source(c))
    namespace = {"np": np, "activations": activations,
                 "LABELS": {n: n for n in activations.names()}}
    exec(compile(_source(cell), "gauss_mean cell", "exec"), namespace)
    return namespace


def _solution_snippet() -> str:
    blocks = [b for c in _cells() if c["cell_type"] == "markdown"
              for b in python_blocks(_source(c)) if "alpha = " in b and "lam = " in b]
    assert len(blocks) == 1
    return blocks[0]


def _selu_closed_form() -> tuple[float, float]:
    """Klambauer et al.'s conditions in closed form:
    E[u 1(u>0)] = 1/sqrt(2 pi), E[e^u 1(u<=0)] = sqrt(e) Phi(-1),
    E[e^{2u} 1(u<=0)] = e^2 Phi(-2)."""
    a = math.sqrt(math.e) * Phi(-1)
    b = math.exp(2) * Phi(-2)
    alpha = (1 / math.sqrt(2 * math.pi)) / (0.5 - a)
    lam = 1 / math.sqrt(0.5 + alpha ** 2 * (b - 2 * a + 0.5))
    return alpha, lam


def test_the_solution_finds_selus_constants_without_scipy(capsys):
    """The chapter's snippet, as shown, beside its gauss_mean: alpha and lambda equal
    the closed forms above and torch's SELU constants."""
    code = _solution_snippet()
    assert "scipy" not in code
    namespace = _chapter_namespace()
    exec(compile(code, "solution", "exec"), namespace)
    alpha, lam = _selu_closed_form()
    assert float(namespace["alpha"]) == pytest.approx(alpha, rel=1e-12)
    assert float(namespace["lam"]) == pytest.approx(lam, rel=1e-12)
    assert alpha == pytest.approx(activations.SELU_ALPHA, rel=1e-12)
    assert lam == pytest.approx(activations.SELU_SCALE, rel=1e-12)


def test_the_elu_moments_of_the_solution_match_closed_forms(capsys):
    """E[elu(u)] = 1/sqrt(2 pi) + sqrt(e) Phi(-1) - 1/2 and
    E[elu(u)^2] = 1/2 + e^2 Phi(-2) - 2 sqrt(e) Phi(-1) + 1/2, by the chapter's
    quadrature of the companion's elu."""
    gauss_mean = _chapter_namespace()["gauss_mean"]
    elu = activations.get("elu").forward
    a, b = math.sqrt(math.e) * Phi(-1), math.exp(2) * Phi(-2)
    assert float(gauss_mean(elu)) == pytest.approx(1 / math.sqrt(2 * math.pi) + a - 0.5,
                                                   rel=1e-12)
    assert float(gauss_mean(lambda u: elu(u) ** 2)) == pytest.approx(1 + b - 2 * a, rel=1e-12)


# ----------------------------------------------------------------------------- imports
ALLOWED = {"numpy", "torch", "matplotlib", "companion", "ipywidgets", "IPython",
           "myst_nb", "PIL", "yaml"}                    # requirements.txt's packages


def _imported_packages(code: str) -> set[str]:
    lines = code.splitlines()                 # IPython magics (%pip, !ls) become `pass`
    code = "\n".join(line[:len(line) - len(line.lstrip())] + "pass"
                     if line.lstrip().startswith(("%", "!")) else line for line in lines)
    found = set()
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.Import):
            found |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


def test_the_chapter_imports_only_dependencies():
    """Every import in the chapter's code cells and in the code shown in its prose is
    the standard library or a package of requirements.txt, and not scipy (only the
    vanishing chapter needs it)."""
    sources = [_source(c) for c in _cells() if c["cell_type"] == "code"]
    sources += [b for c in _cells() if c["cell_type"] == "markdown"
                for b in python_blocks(_source(c))]
    imported = set().union(*(_imported_packages(s) for s in sources))
    assert {"numpy", "torch", "companion"} <= imported           # the scan sees imports
    assert imported - ALLOWED - set(sys.stdlib_module_names) == set()
    assert _imported_packages("from scipy.optimize import brentq") == {"scipy"}


# ------------------------------------------------------ the sigmoid's edge of chaos
def _gh_mean(g, q: float, nodes: int = 300) -> float:
    """E[g(sqrt(q) u)], u ~ N(0, 1), by a 300-point Gauss-Hermite rule (independent of
    the chapter's Gauss-Legendre rule; 101 points are visibly wrong at q ~ 44)."""
    x, w = np.polynomial.hermite_e.hermegauss(nodes)
    return float(g(math.sqrt(q) * x) @ w / math.sqrt(2 * math.pi))


def _sigmoid_chi(s_w: float) -> float:
    """Mean-field chi of a zero-bias sigmoid MLP at its fixed point q*."""
    sig = lambda z: 0.5 * (1 + np.tanh(z / 2))                 # = 1 / (1 + e^-z), no overflow
    q = s_w ** 2
    for _ in range(400):
        q = s_w ** 2 * _gh_mean(lambda z: sig(z) ** 2, q)
    return s_w * math.sqrt(_gh_mean(lambda z: (sig(z) * (1 - sig(z))) ** 2, q))


def test_sigmoid_mean_field_gain_crosses_1_near_10():
    """The issue's values (0.24, 0.41, 0.63, 0.89, 0.99, 1.08 at s_w = 1..12) by an
    independent quadrature; chi < 0.7 for s_w <= 4 and chi = 1 between 10 and 10.3."""
    expected = {1: 0.236, 2: 0.414, 4: 0.632, 8: 0.892, 10: 0.993, 12: 1.084}
    for s_w, chi in expected.items():
        assert _sigmoid_chi(s_w) == pytest.approx(chi, abs=0.003), s_w
    assert _sigmoid_chi(10.0) < 1 < _sigmoid_chi(10.3)


def test_sigmoid_measured_gain_at_12_exceeds_1_with_companion_nets():
    """The chapter measures with nn.Linear + torch.sigmoid; here the same claim with
    nets.mlp(bias=False) and other seeds: the geometric-mean per-layer gain of
    ||delta|| over 30 layers is > 1 at s_w = 12 and < 0.7 at s_w = 4 (autograd)."""
    x, y = data.teacher_regression(256, 16, seed=0)

    def gain(s_w, seed):
        net = nets.mlp(16, 1, width=64, depth=30, activation="sigmoid", weight_scale=s_w,
                       bias=False, seed=seed)
        zs = []
        def keep(module, inputs, z):
            z.retain_grad()
            zs.append(z)

        hooks = [net.get_submodule(f"fc{l}").register_forward_hook(keep) for l in range(1, 31)]
        nn.functional.mse_loss(net(x), y).backward()
        for h in hooks:
            h.remove()
        return (float(zs[0].grad.norm()) / float(zs[-1].grad.norm())) ** (1 / 29)

    seeds = range(10, 15)
    assert np.exp(np.mean([np.log(gain(12.0, k)) for k in seeds])) > 1
    assert max(gain(4.0, k) for k in seeds) < 0.7


# ----------------------------------------------------------------------- SELU halves
def test_selu_left_half_mean_square_slope_is_above_1():
    """E[f'(z)^2 | z < 0] = (lambda alpha)^2 E[e^{2u} | u < 0] = (lambda alpha)^2 2 e^2
    Phi(-2) (closed form) ~ 1.04, against autograd on nn.SELU integrated by
    Gauss-Hermite on the half line (nodes reflected to u < 0)."""
    lam, alpha = activations.SELU_SCALE, activations.SELU_ALPHA
    closed = (lam * alpha) ** 2 * 2 * math.exp(2) * Phi(-2)
    assert 1.0 < closed < 1.1
    u = torch.linspace(-12, -1e-9, 400001, dtype=torch.float64, requires_grad=True)
    (d,) = torch.autograd.grad(nn.SELU()(u).sum(), u)
    density = torch.exp(-u.detach() ** 2 / 2) / math.sqrt(2 * math.pi)
    numeric = float(torch.trapezoid(d ** 2 * density, u.detach())) * 2
    assert numeric == pytest.approx(closed, rel=1e-5)
    assert lam ** 2 > 1                                      # the right half too


# ---------------------------------------------------------------- the stacked race
def _race_functions() -> dict:
    """race_nets and race_stack from the chapter's race cell, defined without running it."""
    cell = next(c for c in _cells() if c["cell_type"] == "code" and "def race_stack" in _source(c))
    tree = ast.parse(_source(cell))
    defs = [n for n in tree.body if isinstance(n, ast.FunctionDef)
            and n.name in ("race_nets", "race_stack")]
    x, y = data.teacher_regression(256 + 1024, 16, seed=0)
    import functools
    namespace = {"np": np, "torch": torch, "nets": nets, "activations": activations,
                 "functools": functools, "SQRT2": math.sqrt(2.0), "RACE_SCALE": {"tanh": 1.0},
                 "RACE_LRS": (1e-3,), "RACE_SEEDS": (0,), "RACE_STEPS": 25, "RACE_DEPTH": 3,
                 "x_reg": x[:256], "y_reg": y[:256], "x_val": x[256:768], "y_val": y[256:768],
                 "x_test": x[768:], "y_test": y[768:]}
    exec(compile(ast.Module(body=defs, type_ignores=[]), "race cell", "exec"), namespace)
    return namespace


@pytest.mark.parametrize("name", ["tanh", "relu"])
def test_stacked_race_equals_torch_adam_run_by_run(name):
    """Every run of the chapter's stacked trainer equals nets.mlp trained alone by
    torch.optim.Adam (the reference), for two rates x two seeds: same losses at every
    step, same final validation and test losses."""
    ns = _race_functions()
    lrs, seeds, steps = (1e-3, 1e-2), (0, 2), 25
    stacked = ns["race_stack"](name, 3, lrs, seeds, steps)
    for i, lr in enumerate(lrs):
        for k, seed in enumerate(seeds):
            net = ns["race_nets"](name, 3, (seed,))[0]
            opt = torch.optim.Adam(net.parameters(), lr=lr)
            losses = []
            for _ in range(steps):
                loss = nn.functional.mse_loss(net(ns["x_reg"]), ns["y_reg"])
                losses.append(float(loss.detach()))
                opt.zero_grad()
                loss.backward()
                opt.step()
            np.testing.assert_allclose(stacked["curve"][:, i, k], losses, rtol=2e-4, atol=1e-7)
            with torch.no_grad():
                for key, (x, y) in (("val", ("x_val", "y_val")), ("test", ("x_test", "y_test"))):
                    ref = float(nn.functional.mse_loss(net(ns[x]), ns[y]))
                    assert stacked[key][i, k] == pytest.approx(ref, rel=2e-4)


# ------------------------------------------------------------ output losses, GELU, SwiGLU
def test_fused_losses_are_exact_and_two_step_losses_clamp_or_overflow():
    """BCEWithLogitsLoss in float32 against softplus(z) in float64 (closed form for
    target 0); sigmoid + BCELoss clamps the log at -100 with zero gradient once
    sigmoid(z) rounds to 1; CrossEntropyLoss against logsumexp in float64."""
    z = torch.tensor([1.0, 15.0, 20.0, 80.0], requires_grad=True)
    fused = nn.BCEWithLogitsLoss(reduction="none")(z, torch.zeros(4))
    exact = torch.nn.functional.softplus(z.detach().double())
    torch.testing.assert_close(fused.double(), exact, rtol=1e-6, atol=0)
    two_step = nn.BCELoss(reduction="none")(torch.sigmoid(z), torch.zeros(4))
    (g,) = torch.autograd.grad(two_step.sum(), z)
    assert two_step[2] == two_step[3] == 100.0 and g[2] == g[3] == 0.0
    logits = torch.tensor([[0.0, 300.0], [3.0, -2.0]])
    ce = nn.CrossEntropyLoss(reduction="none")(logits, torch.tensor([0, 1]))
    ref = torch.logsumexp(logits.double(), 1) - logits.double()[[0, 1], [0, 1]]
    torch.testing.assert_close(ce.double(), ref, rtol=1e-6, atol=0)
    assert torch.isinf(-torch.log(torch.softmax(logits, 1))[0, 0])


def test_tanh_gelu_differs_from_exact_by_at_most_5e_4_near_minus_2_7():
    """math.erf (exact) and the tanh formula in numpy float64, against the chapter's
    reading of torch's nn.GELU(approximate='tanh')."""
    z = np.linspace(-10, 10, 200001)
    exact = z * 0.5 * (1 + np.vectorize(math.erf)(z / math.sqrt(2)))
    approx = 0.5 * z * (1 + np.tanh(math.sqrt(2 / math.pi) * (z + 0.044715 * z ** 3)))
    gap = np.abs(approx - exact)
    assert 4.6e-4 < gap.max() < 4.8e-4 and -2.8 < z[gap.argmax()] < -2.6
    t = torch.from_numpy(z)
    np.testing.assert_allclose(nn.GELU(approximate="tanh")(t).numpy(), approx, atol=1e-15)
    np.testing.assert_allclose(nn.GELU()(t).numpy(), exact, atol=1e-15)


@pytest.mark.parametrize("d", [64, 512, 4096])
def test_swiglu_with_two_thirds_hidden_width_matches_the_two_matrix_mlp(d):
    """3 d h with h = int(8d/3) (and LLaMA's rounding up to 256) against 8 d^2."""
    h = int(2 * 4 * d / 3)
    assert abs(3 * d * h / (8 * d * d) - 1) < 0.01
    h256 = 256 * ((h + 255) // 256)
    if d == 4096:                                           # LLaMA-7B's width
        assert h256 == 11008 and abs(3 * d * h256 / (8 * d * d) - 1) < 0.01


# ---------------------------------------------------------------------- born dead
def test_single_input_born_dead_probability_is_1_minus_1_minus_2_to_minus_n_to_the_l():
    """The chapter's formula, by simulation: ReLU nets with zero biases and symmetric
    Gaussian weights, one input; the fraction whose hidden layer L is all zero, over
    40000 nets, within 4 standard errors of 1 - (1 - 2^-N)^L."""
    g = torch.Generator().manual_seed(5)
    n_nets, width, depth = 40000, 2, 8
    h = torch.randn(1, 1, 16, generator=g).expand(n_nets, 1, 16)
    for _ in range(depth):
        w = torch.randn(n_nets, h.shape[-1], width, generator=g)
        h = torch.relu(torch.bmm(h, w))
    p = 1 - (1 - 2.0 ** -width) ** depth
    measured = float((h == 0).all(dim=(1, 2)).double().mean())
    assert abs(measured - p) < 4 * math.sqrt(p * (1 - p) / n_nets)
