"""The measurable claims of the chapter "Vanishing gradients" (book/vanishing.ipynb), at
small scale and without running the notebook.

References: closed forms (a deep linear net with orthogonal weights scaled by c gains
exactly c^(L-1) between layer L and layer 1; Glorot & Bengio's linear-regime variances,
sigma_w = 1/sqrt(3) for U[+-1/sqrt(n)] and 1 for the normalized initialization of a square
layer; IEEE 754 round-to-nearest for float32), float64 torch autograd, and properties of
the trained nets (the direction of a change, with seeds).
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from companion import data, diagnostics, nets, train
from companion.scratch import ScratchMLP


# ---------------------------------------------------------------- L - 1 factors, not L
@pytest.mark.parametrize("depth", [2, 3, 6])
@pytest.mark.parametrize("c", [0.5, 0.9, 1.7])
def test_linear_net_gain_from_layer_L_to_layer_1_is_c_to_the_L_minus_1(depth, c):
    """h_l = c Q_l h_{l-1} with orthogonal Q_l: dL/dh_1 = (W_L ... W_2)^T dL/dh_L has norm
    exactly c^(L-1) |dL/dh_L| (closed form), measured with float64 autograd."""
    gen = torch.Generator().manual_seed(depth)
    n = 8
    Ws = [c * torch.linalg.qr(torch.randn(n, n, generator=gen, dtype=torch.float64))[0]
          for _ in range(depth)]
    h = torch.randn(n, generator=gen, dtype=torch.float64).requires_grad_()
    hidden = []
    for W in Ws:
        h = W @ h
        h.retain_grad()
        hidden.append(h)                            # h_1 .. h_L
    u = torch.randn(n, generator=gen, dtype=torch.float64)
    (u @ hidden[-1]).backward()                     # dL/dh_L = u
    ratio = hidden[0].grad.norm() / hidden[-1].grad.norm()
    assert ratio.item() == pytest.approx(c ** (depth - 1), rel=1e-10)


@pytest.mark.parametrize("activation", ["sigmoid", "tanh"])
def test_product_of_the_L_minus_1_jacobians_is_autograds_gradient(activation):
    """The chapter's formula dL/dh_1 = J_2^T ... J_L^T dL/dh_L: ScratchMLP's chain factors
    between h_1 and h_L are L - 1 matrices, and their product equals float64 autograd."""
    depth, width = 7, 12
    net = ScratchMLP([5] + [width] * depth + [1], activation=activation, seed=3)
    x = np.random.default_rng(3).standard_normal((1, 5))
    J = [F[0] for F in net.chain_factors(x)[1:-1]]          # J_2 .. J_L
    assert len(J) == depth - 1
    g_L = net.W[-1][0]                                      # dL/dh_L for L = y_hat
    g_1 = np.linalg.multi_dot(J[::-1] + [np.eye(width)]).T @ g_L

    h = torch.tensor(x, requires_grad=True)
    hidden = []
    f = torch.sigmoid if activation == "sigmoid" else torch.tanh
    for l, (W, b) in enumerate(zip(net.W, net.b)):
        z = h @ torch.tensor(W).T + torch.tensor(b)
        h = f(z) if l < depth else z
        h.retain_grad()
        hidden.append(h)
    h.sum().backward()
    np.testing.assert_allclose(g_1, hidden[0].grad[0].numpy(), rtol=1e-9, atol=1e-300)


# ------------------------------------------------------ Glorot & Bengio: initializations
def _standard_init(w):
    n = w.shape[1]
    torch.nn.init.uniform_(w, -1 / math.sqrt(n), 1 / math.sqrt(n))


_INITS = {"standard": _standard_init, "normalized": torch.nn.init.xavier_uniform_}
_SIGMA = {"standard": 1 / math.sqrt(3), "normalized": 1.0}
_X, _T = data.teacher_regression(256, 256, 10, seed=0)
_LABELS = _T.argmax(dim=1)


def _glorot(init: str, scale: float, seed: int):
    """std of h_l and of dL/dz_l per hidden layer, the weight-gradient norms and the
    typical-factor product, for the chapter's tanh net (5 x 256) at initialization."""
    net = nets.mlp(256, 10, width=256, depth=5, activation="tanh", init=_INITS[init], seed=seed)
    x = scale * _X
    loss_fn = torch.nn.functional.cross_entropy
    with diagnostics.record(net, keep_activations=True) as rec:
        loss_fn(net(x), _LABELS).backward()
    grads = diagnostics.backprop_gradients(net, x, _LABELS, loss_fn)
    acts = [a.astype(np.float64) for a in rec.activations.values()]
    typical = np.prod([_SIGMA[init] * np.sqrt(np.mean((1 - a ** 2) ** 2)) for a in acts[1:]])
    return dict(act=np.array([a.std() for a in acts]),
                grad=np.array([grads[f"fc{l}"].std() for l in range(1, 6)]),
                weight=np.array([rec.weight_grad_norms[f"fc{l}"] for l in range(1, 6)]),
                typical=typical)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("init", ["standard", "normalized"])
def test_glorot_linear_regime_gains_are_sigma_w_per_layer(init, seed):
    """Small inputs keep tanh linear: across the four factors between layer 1 and layer 5,
    activations and back-propagated gradients change by sigma_w^4 (1/9 for the standard
    init, 1 for the normalized one), within a factor 1.5 (finite width, tanh' < 1)."""
    r = _glorot(init, 0.1, seed)
    expected = _SIGMA[init] ** 4
    for ratio in (r["grad"][0] / r["grad"][-1], r["act"][-1] / r["act"][0]):
        assert expected / 1.5 < ratio < expected * 1.5


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_glorot_standard_init_shrinks_and_normalized_keeps_more(seed):
    """Standardized inputs: the standard init's backprop gradients shrink from layer 5 to
    layer 1 by a clear factor (< 0.2) and its activations from layer 1 to 5; the normalized
    init's shrink far less (a ratio > 3 x the standard one). The typical-factor product
    prod sigma_w rms(tanh'(z_l)) predicts each gradient ratio within a factor 1.5."""
    std, norm = _glorot("standard", 1.0, seed), _glorot("normalized", 1.0, seed)
    g_std, g_norm = std["grad"][0] / std["grad"][-1], norm["grad"][0] / norm["grad"][-1]
    assert g_std < 0.2 and std["act"][-1] / std["act"][0] < 0.2
    assert g_norm > 3 * g_std
    assert norm["act"][-1] / norm["act"][0] > 3 * std["act"][-1] / std["act"][0]
    for r, g in ((std, g_std), (norm, g_norm)):
        assert r["typical"] / 1.5 < g < r["typical"] * 1.5


@pytest.mark.parametrize("init", ["standard", "normalized"])
def test_glorot_weight_gradients_stay_flat(init):
    """|dL/dW_1| / |dL/dW_5| is close to 1 (within a factor 1.5) although the backward
    signal shrinks: the activations entering each layer shrink the other way."""
    r = _glorot(init, 1.0, 0)
    assert 1 / 1.5 < r["weight"][0] / r["weight"][-1] < 1.5


# ------------------------------------------- Glorot & Bengio: top sigmoid layer saturates
def _layer_means(activation: str, seed: int, steps: int):
    """Mean output of each hidden layer on 300 fixed examples, before and during SGD."""
    x, t = data.teacher_regression(512, 64, 10, seed=0)
    labels = t.argmax(dim=1)
    net = nets.mlp(64, 10, width=256, depth=4, activation=activation,
                   init=_standard_init, seed=seed)
    means = []

    def monitor(_step=None, _loss=None):
        with torch.no_grad(), diagnostics.record(net) as rec:
            net(x[:300])
        means.append([s.mean for s in rec.activation_stats.values()])

    monitor()
    train.train(net, x, labels, steps=steps, lr=0.5, loss="cross_entropy", batch_size=16,
                seed=seed, callback=monitor)
    return np.array(means)                       # (steps + 1, 4)


@pytest.mark.parametrize("seed", [0, 1])
def test_sigmoid_top_layer_mean_falls_toward_zero_and_lower_layers_stay(seed):
    """Standard init, SGD: the top hidden layer's mean output starts near 0.5 and falls
    below 0.1 within 50 steps (Glorot & Bengio's Figure 2); layers 1 and 2 stay within
    0.1 of 0.5."""
    m = _layer_means("sigmoid", seed, steps=50)
    assert abs(m[0, -1] - 0.5) < 0.05
    assert m[-1, -1] < 0.1 and m[:, -1].min() < 0.2 * m[0, -1]
    assert np.abs(m[:, :2] - 0.5).max() < 0.1


def test_tanh_top_layer_mean_stays_centred():
    """The same net with tanh units: the top layer's mean stays near 0 (no saturation)."""
    m = _layer_means("tanh", 0, steps=50)
    assert np.abs(m[:, -1]).max() < 0.05


# ------------------------------------------------------------------------------ float32
def test_float32_relative_spacing_is_2_to_the_minus_23():
    """eps = 2**-23 ~ 1.2e-7 (numpy and torch); near w in [1, 2) the gap is 2**-23, and an
    update below half of it (2**-24 ~ 6e-8) rounds back to w (IEEE round-to-nearest)."""
    assert np.finfo(np.float32).eps == 2.0 ** -23 == torch.finfo(torch.float32).eps
    assert 1.1e-7 < 2.0 ** -23 < 1.3e-7
    w = np.float32(1.5)
    assert np.nextafter(w, np.float32(2)) - w == np.float32(2.0 ** -23)
    assert w + np.float32(0.9 * 2.0 ** -24) == w
    assert w + np.float32(1.1 * 2.0 ** -24) != w


# ------------------------------------------------- the sigmoid's edge of chaos (issue 26)
def _sigmoid(z):
    return 0.5 * (1.0 + np.tanh(z / 2))


def _chi_sigmoid_quad(sigma_w: float) -> float:
    """Mean-field norm gain of a zero-bias sigmoid net, scipy.integrate.quad (the chapter's way)."""
    from scipy import integrate

    def mean(f):
        return integrate.quad(lambda z: f(z) * math.exp(-z * z / 2) / math.sqrt(2 * math.pi),
                              -np.inf, np.inf, limit=200)[0]

    q = 1.0
    for _ in range(1000):
        q_new = sigma_w ** 2 * mean(lambda z: _sigmoid(math.sqrt(q) * z) ** 2)
        if abs(q_new - q) < 1e-12 * q_new:
            break
        q = q_new
    s = lambda z: _sigmoid(math.sqrt(q) * z)
    return sigma_w * math.sqrt(mean(lambda z: (s(z) * (1 - s(z))) ** 2))


def _chi_sigmoid_hermite(sigma_w: float, points: int = 800) -> float:
    """The same with a Gauss-Hermite rule (an independent reference; at sigma_w >= 10,
    q* ~ 44 and a rule of a few hundred points is still visibly off)."""
    from scipy.special import roots_hermitenorm

    z, w = roots_hermitenorm(points)
    w = w / w.sum()
    q = 1.0
    for _ in range(2000):
        q = sigma_w ** 2 * np.sum(w * _sigmoid(np.sqrt(q) * z) ** 2)
    s = _sigmoid(np.sqrt(q) * z)
    return float(sigma_w * np.sqrt(np.sum(w * (s * (1 - s)) ** 2)))


@pytest.mark.parametrize("sigma_w", [1.0, 4.0, 10.0, 12.0])
def test_sigmoid_mean_field_gain_agrees_between_two_quadratures(sigma_w):
    assert _chi_sigmoid_quad(sigma_w) == pytest.approx(_chi_sigmoid_hermite(sigma_w), rel=1e-4)


def test_sigmoid_gain_rises_with_the_weight_scale_and_crosses_one_near_10():
    """chi = 0.24, 0.41, 0.63, 0.89, 0.99, 1.08 at sigma_w = 1, 2, 4, 8, 10, 12 (issue 26):
    no usual scale (<= 4) brings chi near 1; chi = 1 lies between 10 and 12."""
    chi = [_chi_sigmoid_quad(s) for s in (1, 2, 4, 8, 10, 12)]
    assert np.round(chi, 2).tolist() == [0.24, 0.41, 0.63, 0.89, 0.99, 1.08]


@pytest.mark.parametrize("seed", [3, 4])
def test_a_30_layer_sigmoid_net_at_sigma_w_12_passes_the_signal_back(seed):
    """Measured backward gain per layer (geometric mean over 29 layers, width 64): above 1
    at sigma_w = 12, below 0.7 at 4 -- other seeds than the chapter's."""
    x, y = data.teacher_regression(64, 16, seed=seed)
    gains = {}
    for s in (4.0, 12.0):
        net = nets.mlp(16, 1, width=64, depth=30, activation="sigmoid", weight_scale=s, seed=seed)
        with diagnostics.record(net) as rec:
            torch.nn.functional.mse_loss(net(x), y).backward()
        g = [rec.output_grad_norms[f"fc{l}"] for l in (1, 30)]
        gains[s] = (g[0] / g[1]) ** (1 / 29)
    assert gains[4.0] < 0.7 and gains[12.0] > 1.0, gains


# ------------------------------------------------------- output saturation and the loss
@pytest.mark.parametrize("z0", [3.0, 0.0, -2.0, -8.0])
@pytest.mark.parametrize("y0", [0.0, 1.0])
def test_output_gradients_of_bce_with_logits_and_mse_on_a_sigmoid(z0, y0):
    """torch.nn.BCEWithLogitsLoss: dL/dz = p - y; torch.nn.MSELoss on sigmoid(z):
    dL/dz = 2 (p - y) p (1 - p) (closed forms, float64 autograd)."""
    z = torch.tensor([z0], dtype=torch.float64, requires_grad=True)
    y = torch.tensor([y0], dtype=torch.float64)
    p = 1 / (1 + math.exp(-z0))
    g_bce = torch.autograd.grad(torch.nn.BCEWithLogitsLoss()(z, y), z)[0].item()
    g_mse = torch.autograd.grad(torch.nn.MSELoss()(torch.sigmoid(z), y), z)[0].item()
    assert g_bce == pytest.approx(p - y0, rel=1e-12, abs=1e-15)
    assert g_mse == pytest.approx(2 * (p - y0) * p * (1 - p), rel=1e-12, abs=1e-15)
