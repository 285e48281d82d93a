"""Broken training runs, one per failure the book taught, each with the fixes from the chapters.

The capstone chapter "Diagnose and fix" and ``tests/test_diagnose.py`` use the same
table, :data:`RUNS`: the chapter shows each run's report and its training curves before
and after a fix, the tests check that every broken run gives its symptom and that every
fix removes it.

A :class:`Setup` is everything :func:`companion.train.train` needs; :func:`run` builds
it, diagnoses the model before training (:func:`companion.diagnose.diagnose`, with the
run's optimizer), trains it under :func:`companion.diagnose.watch` and returns both
reports and the :class:`~companion.train.History`.

Example::

    from companion import gallery
    result = gallery.run("dead_bias")             # ReLUs killed by a bias of -1
    [f.symptom for f in result.findings]          # ['vanishing', 'dead_units', 'plateau']
    gallery.run("dead_bias", "zero biases").findings   # []
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import Any, Callable, NamedTuple, Optional

import torch
import torch.nn.functional as F
from torch import nn

from . import _check, data, nets, train
from .nets import BatchFirst
from .diagnose import Finding, Report, diagnose, watch
from .residual import ResidualMLP, TokenTransformer

__all__ = ["Setup", "Fix", "BrokenRun", "Result", "RUNS", "FIX_KINDS", "run", "fix_of_kind",
           "BatchFirst", "foreign_models", "small_cnn", "LSTMRegressor", "EncoderClassifier",
           "token_loss"]


@dataclass(frozen=True)
class Setup:
    """A model, its data and how it is trained (the arguments of :func:`train.train`)."""

    model: nn.Module
    x: torch.Tensor
    y: torch.Tensor
    steps: int
    lr: float
    optimizer: Any = "sgd"
    loss: Any = "mse"
    batch_size: Optional[int] = None
    clip: Optional[float] = None
    schedule: Optional[Callable[[int], float]] = None
    optimizer_kwargs: dict = field(default_factory=dict)

    def make_optimizer(self) -> torch.optim.Optimizer:
        make = train.OPTIMIZERS[self.optimizer] if isinstance(self.optimizer, str) else self.optimizer
        return make([p for p in self.model.parameters() if p.requires_grad], self.lr,
                    **self.optimizer_kwargs)

    def loss_fn(self) -> Callable:
        return train.LOSSES[self.loss] if isinstance(self.loss, str) else self.loss


class Fix(NamedTuple):
    """A remedy for a :class:`BrokenRun`: a label, the fixed setup, its kind (one of
    :data:`FIX_KINDS`) and the chapter that explains it."""

    label: str
    build: Callable[[], "Setup"]
    kind: str
    chapter: str


class BrokenRun(NamedTuple):
    """One entry of :data:`RUNS`: a broken setup, the symptom it must show and its
    fixes (label -> :class:`Fix`); each fix must remove the symptom."""

    name: str
    title: str
    symptom: str
    broken: Callable[[], "Setup"]
    fixes: dict[str, Fix]


class Result(NamedTuple):
    """What :func:`run` returns."""

    setup: Setup
    before: Report          # diagnose() before training
    during: Report          # watch(...).report() after training
    history: train.History

    @property
    def findings(self) -> list[Finding]:
        """The findings before training, then those that only training showed."""
        seen = set(self.before.symptoms)
        return self.before.findings + [f for f in self.during.findings if f.symptom not in seen]

    @property
    def symptoms(self) -> list[str]:
        return list(dict.fromkeys(f.symptom for f in self.findings))


# ------------------------------------------------------------------------- data
@functools.lru_cache(maxsize=None)
def _regression():
    return data.teacher_regression(256, 16, seed=0)


@functools.lru_cache(maxsize=None)
def _spirals():
    return data.spirals(300, 3, seed=0)


@functools.lru_cache(maxsize=None)
def _sequences(seq_len: int = 40):
    x, y = data.first_element(seq_len, 128, seed=0)          # (T, B, 1), y = x_1
    return x.transpose(0, 1).contiguous(), y


VOCAB, SEQ = 16, 8


@functools.lru_cache(maxsize=None)
def _tokens():
    g = torch.Generator().manual_seed(1)
    tokens = torch.randint(0, VOCAB, (150 * 16, SEQ), generator=g)
    return tokens, tokens.roll(1, dims=1)                  # predict the previous token


def token_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy over every position of a (B, T, vocab) output.

    ``target``: the token indices, an integer tensor of shape (B, T) with values in
    ``[0, vocab)``. Runs every training step: the checks are of type and shape, and one
    min/max of the targets.

    Raises:
        TypeError: ``logits`` not a floating tensor; ``target`` not an integer tensor.
        ValueError: ``logits`` with fewer than 2 dimensions or empty; ``target`` not of
            shape ``logits.shape[:-1]`` or with a value outside ``[0, vocab)``.
    """
    logits = _check.tensor("logits", logits, min_ndim=2)
    target = _check.tensor("target", target, floating=False, integral=True)
    if tuple(target.shape) != tuple(logits.shape[:-1]):
        raise ValueError(f"target must have the shape {tuple(logits.shape[:-1])} of logits "
                         f"without its vocabulary dimension, got {_check.show(target)}")
    _check_tokens("target", target, logits.shape[-1])
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1))


def _check_tokens(name: str, tokens: torch.Tensor, vocab: int) -> None:
    """Token indices in ``[0, vocab)`` (one min/max, one synchronisation)."""
    lo, hi = torch.aminmax(tokens.detach()) if tokens.numel() else (0, 0)
    lo, hi = int(lo), int(hi)
    if lo < 0 or hi >= vocab:
        raise ValueError(f"{name} must hold token indices in [0, {vocab - 1}], "
                         f"got values from {lo} to {hi}")


def _adam_98(params, lr, **kw):
    return torch.optim.Adam(params, lr=lr, betas=(0.9, 0.98), foreach=True, **kw)


# ------------------------------------------------------------------------- runs
def _sigmoid(**kw) -> Setup:
    x, y = _regression()
    return Setup(nets.mlp(16, 1, 32, 20, "sigmoid", seed=0, **kw), x, y, steps=200, lr=0.1)


def _relu_he(**kw) -> Setup:
    x, y = _regression()
    return Setup(nets.mlp(16, 1, 32, 20, "relu", init="kaiming_normal", seed=0, **kw),
                 x, y, steps=200, lr=0.02)


def _sigmoid_residual() -> Setup:
    x, y = _regression()
    return Setup(ResidualMLP(16, 1, 32, 10, activation="sigmoid", seed=0), x, y,
                 steps=200, lr=0.05)


def _exploding(weight_scale: float = 3.0, **kw) -> Setup:
    x, y = _regression()
    return Setup(nets.mlp(16, 1, 64, 12, "relu", weight_scale, seed=0, **kw), x, y,
                 steps=200, lr=0.01)


def _spiral_relu(lr: float = 2.0, **kw) -> Setup:
    x, y = _spirals()
    model = nets.mlp(2, 3, 64, 4, "relu", init="kaiming_normal", seed=0, **kw)
    return Setup(model, x, y, steps=200, lr=lr, loss="cross_entropy")


def _negative_bias(bias: float = -1.0, **kw) -> Setup:
    setup = _spiral_relu(0.1, **kw)
    with torch.no_grad():
        for name, module in setup.model.named_children():
            if name.startswith("fc"):
                module.bias.fill_(bias)
    return setup


INPUT_SCALE = 100.0


def _tanh(standardize: bool = False) -> Setup:
    # three spirals measured on a scale 100 times too large (raw pixel values, say)
    x, y = _spirals()
    x = x * INPUT_SCALE
    if standardize:
        x = (x - x.mean(0)) / x.std(0)
    model = nets.mlp(2, 3, 64, 4, "tanh", seed=0)
    return Setup(model, x, y, steps=200, lr=0.05, optimizer="momentum", loss="cross_entropy")


def _rnn(clip: Optional[float] = None, lr: float = 1.0) -> Setup:
    x, y = _sequences()
    return Setup(BatchFirst(nets.SimpleRNN(1, 16, seed=0)), x, y, steps=150, lr=lr, clip=clip)


def _plain(skip: bool = False) -> Setup:
    x, y = _spirals()
    model = ResidualMLP(2, 3, width=32, depth=16, norm=BATCH_NORM, skip=skip, seed=0)
    return Setup(model, x, y, steps=60, lr=0.05, optimizer="momentum", loss="cross_entropy")


def _transformer(norm_first: bool = False, warmup: int = 0) -> Setup:
    x, y = _tokens()
    model = TokenTransformer(VOCAB, SEQ, num_layers=6, norm_first=norm_first, seed=0)
    schedule = None if warmup == 0 else (lambda t: min(1.0, (t + 1) / warmup))
    return Setup(model, x, y, steps=150, lr=1e-2, optimizer=_adam_98, loss=token_loss,
                 batch_size=16, schedule=schedule)


def _output(scale: float = 30.0) -> Setup:
    setup = _spiral_relu(0.1)
    with torch.no_grad():
        setup.model.out.weight.mul_(scale)
    return setup


#: The batch norm of the runs: torch's fused layer (the companion's ``norm.BatchNorm1d``
#: computes the same, more slowly; the book compares the two in its normalization chapter).
BATCH_NORM = nn.BatchNorm1d

#: The kinds of fix, one per remedy chapter; each fix of :data:`RUNS` has one.
FIX_KINDS = ("initialization", "activation", "normalization", "clipping",
             "skip connection", "optimizer / learning rate")


def _fixes(*fixes: tuple[str, Callable[[], Setup], str, str]) -> dict[str, Fix]:
    return {label: Fix(label, build, kind, chapter) for label, build, kind, chapter in fixes}


#: name -> :class:`BrokenRun`, in the order of the book's chapters.
RUNS: dict[str, BrokenRun] = {r.name: r for r in (
    BrokenRun("vanishing", "a deep sigmoid network (20 layers)", "vanishing", _sigmoid, _fixes(
        ("ReLU + He init", _relu_he, "activation", "activations"),
        ("batch norm", lambda: _sigmoid(norm=BATCH_NORM), "normalization", "normalization"),
        ("skip connections", _sigmoid_residual, "skip connection", "skip_connections"))),
    BrokenRun("exploding", "a ReLU network with weights 3/√n (He: √2/√n)", "exploding",
              _exploding, _fixes(
        ("He init", lambda: _exploding(math.sqrt(2)), "initialization", "initialization"),
        ("batch norm", lambda: _exploding(norm=BATCH_NORM), "normalization", "normalization"))),
    BrokenRun("dead_lr", "ReLUs killed by a large learning rate (SGD, lr 2)", "dead_units",
              _spiral_relu, _fixes(
        ("learning rate 0.1", lambda: _spiral_relu(0.1), "optimizer / learning rate",
         "optimizers"),
        ("batch norm", lambda: _spiral_relu(norm=BATCH_NORM), "normalization", "normalization"))),
    BrokenRun("dead_bias", "ReLUs killed by a bias of -1", "dead_units", _negative_bias, _fixes(
        ("zero biases", lambda: _negative_bias(0.0), "initialization", "initialization"),
        ("batch norm", lambda: _negative_bias(norm=BATCH_NORM), "normalization",
         "normalization"))),
    BrokenRun("saturation", "a tanh network fed inputs 100 times too large", "saturation",
              _tanh, _fixes(
        ("standardize the inputs", lambda: _tanh(standardize=True), "normalization",
         "normalization"))),
    BrokenRun("rnn", "an RNN on sequences of 40 steps, SGD lr 1, no clipping", "diverged",
              _rnn, _fixes(
        ("clip the norm at 1", lambda: _rnn(clip=1.0), "clipping", "clipping"),
        ("learning rate 0.1", lambda: _rnn(lr=0.1), "optimizer / learning rate",
         "optimizers"))),
    BrokenRun("degradation", "a plain network of 16 blocks with batch norm", "exploding",
              _plain, _fixes(
        ("skip connections", lambda: _plain(skip=True), "skip connection",
         "skip_connections"))),
    BrokenRun("postln", "a post-LN transformer, Adam lr 1e-2, no warm-up", "plateau",
              _transformer, _fixes(
        ("pre-LN", lambda: _transformer(norm_first=True), "normalization",
         "skip_connections"),
        ("warm-up, 100 steps", lambda: _transformer(warmup=100), "optimizer / learning rate",
         "skip_connections"))),
    BrokenRun("initial_loss", "an output layer 30 times too large", "initial_loss", _output,
              _fixes(
        ("He-sized output layer", lambda: _output(1.0), "initialization", "initialization"))),
)}


def fix_of_kind(name: str, kind: str) -> Optional[Fix]:
    """The fix of run ``name`` whose kind is ``kind`` (one of :data:`FIX_KINDS`), or None.

    Raises:
        TypeError: ``name`` or ``kind`` not a str.
        ValueError: ``name`` not a key of :data:`RUNS`; ``kind`` not one of :data:`FIX_KINDS`.
    """
    name = _check.choice("name", name, RUNS)
    kind = _check.choice("kind", kind, FIX_KINDS)
    return next((f for f in RUNS[name].fixes.values() if f.kind == kind), None)


def run(name: str, fix: Optional[str] = None, *, every: int = 10) -> Result:
    """Build run ``name`` (a key of :data:`RUNS`), or its fix ``fix``, diagnose it,
    train it under :func:`~companion.diagnose.watch` and return a :class:`Result`.

    ``fix`` is ``None`` (the broken run), the label of one of the run's fixes, or that
    :class:`Fix` itself (what :func:`fix_of_kind` returns). ``every``: watch's ``every``.

    Raises:
        TypeError: ``name`` not a str; ``fix`` neither None, a str nor a :class:`Fix`;
            ``every`` not an int.
        ValueError: ``name`` not a key of :data:`RUNS`; ``fix`` not one of that run's
            fixes (the message lists them); ``every < 1``.
    """
    name = _check.choice("name", name, RUNS)
    entry = RUNS[name]
    if isinstance(fix, Fix):
        if entry.fixes.get(fix.label) != fix:
            raise ValueError(f"fix must be None or one of {list(entry.fixes)} (or their Fix) "
                             f"for run {name!r}, got the Fix {fix.label!r} of another run")
        fix = fix.label
    elif fix is not None and not isinstance(fix, str):
        raise _check._type_error("fix", f"None, a fix label of run {name!r} "
                                 f"({list(entry.fixes)}) or its Fix", fix)
    if fix is not None and fix not in entry.fixes:
        raise ValueError(f"fix must be None or one of {list(entry.fixes)} for run "
                         f"{name!r}, got {fix!r}")
    every = _check.integer("every", every, minimum=1)
    setup = entry.broken() if fix is None else entry.fixes[fix].build()
    xb = setup.x if setup.batch_size is None else setup.x[:setup.batch_size]
    yb = setup.y if setup.batch_size is None else setup.y[:setup.batch_size]
    before = diagnose(setup.model, xb, yb, loss=setup.loss, optimizer=setup.make_optimizer())
    with watch(setup.model, None, every=every) as w:
        history = train.train(setup.model, setup.x, setup.y, steps=setup.steps, lr=setup.lr,
                              optimizer=setup.optimizer, loss=setup.loss,
                              batch_size=setup.batch_size, clip=setup.clip,
                              schedule=setup.schedule, optimizer_kwargs=setup.optimizer_kwargs,
                              callback=w)
    return Result(setup, before, w.report(history), history)


# ------------------------------------------------- models not built with the companion
class LSTMRegressor(nn.Module):
    """``nn.LSTM`` (batch first) and a linear readout of the last time step.

    Raises:
        TypeError: a size that is not an int.
        ValueError: a size < 1.
    """

    def __init__(self, input_size: int = 1, hidden_size: int = 32, num_layers: int = 2):
        input_size = _check.integer("input_size", input_size, minimum=1)
        hidden_size = _check.integer("hidden_size", hidden_size, minimum=1)
        num_layers = _check.integer("num_layers", num_layers, minimum=1)
        super().__init__()
        self.lstm = nn.LSTM(input_size, hidden_size, num_layers, batch_first=True)
        self.head = nn.Linear(hidden_size, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, input_size) -> (B, 1), the readout of the last step.

        Raises:
            TypeError: ``x`` not a floating tensor of the model's dtype.
            ValueError: ``x`` not 3-dimensional, empty, or with another ``input_size``.
        """
        x = _check.tensor("x", x, ndim=3)
        if x.shape[-1] != self.lstm.input_size:
            raise ValueError(f"x must have {self.lstm.input_size} features (its last "
                             f"dimension, batch first: (B, T, features)), got {_check.show(x)}")
        _check.same_dtype("x", x, self.head.weight.dtype)
        out, _ = self.lstm(x)                  # (B, T, hidden)
        return self.head(out[:, -1])


class EncoderClassifier(nn.Module):
    """Token embedding, ``nn.TransformerEncoder`` (pre-LN) and a per-position head.

    ``d_model`` must be a multiple of the 4 attention heads.

    Raises:
        TypeError: a size that is not an int.
        ValueError: a size < 1, or ``d_model`` not a multiple of 4.
    """

    def __init__(self, vocab: int = VOCAB, d_model: int = 32, num_layers: int = 2):
        vocab = _check.integer("vocab", vocab, minimum=1)
        d_model = _check.integer("d_model", d_model, minimum=4)
        if d_model % 4:
            raise ValueError(f"d_model must be a multiple of the 4 attention heads, "
                             f"got {d_model}")
        num_layers = _check.integer("num_layers", num_layers, minimum=1)
        super().__init__()
        self.embed = nn.Embedding(vocab, d_model)
        layer = nn.TransformerEncoderLayer(d_model, 4, 64, dropout=0.0, batch_first=True,
                                           norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)
        self.head = nn.Linear(d_model, vocab)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, T) token indices -> (B, T, vocab) logits (a single sequence (T,) too).

        Raises:
            TypeError: ``tokens`` not an integer tensor.
            ValueError: ``tokens`` not 1- or 2-dimensional, empty, or with a value
                outside ``[0, vocab)``.
        """
        tokens = _check.tensor("tokens", tokens, floating=False, integral=True, ndim=(1, 2))
        _check_tokens("tokens", tokens, self.embed.num_embeddings)
        return self.head(self.encoder(self.embed(tokens)))


def small_cnn(activation: Callable[[], nn.Module] = nn.ReLU, depth: int = 3) -> nn.Sequential:
    """``depth`` 3x3 convolutions of 8 channels on 1 x 12 x 12 images, then a linear
    classifier of 4 classes; torch's default initialization.

    ``activation``: a module class or a function of no arguments returning a module
    (``nn.ReLU``, ``lambda: nn.LeakyReLU(0.1)``), called once per layer.

    Raises:
        TypeError: ``activation`` not callable, a module instance (pass its class), or
            not returning an ``nn.Module``; ``depth`` not an int.
        ValueError: ``depth < 1``.
    """
    if isinstance(activation, nn.Module):
        raise TypeError(f"activation must be a module class or a function returning a "
                        f"module, got the instance {_check.show(activation)} (pass "
                        f"{type(activation).__name__}, or lambda: {_check.show(activation)})")
    if not callable(activation):
        raise _check._type_error("activation", "a module class or a function returning a "
                                 "module", activation)
    depth = _check.integer("depth", depth, minimum=1)
    layers: list[nn.Module] = []
    for i in range(depth):
        layers += [nn.Conv2d(1 if i == 0 else 8, 8, 3, padding=1), _activation(activation)]
    layers += [nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(8 * 16, 4)]
    return nn.Sequential(*layers)


def _activation(activation: Callable[[], nn.Module]) -> nn.Module:
    """``activation()``, refused by name unless it is an ``nn.Module``."""
    try:
        module = activation()
    except TypeError as err:
        raise TypeError(f"activation must be a module class or a function of no arguments "
                        f"returning a module, but activation() failed: {err}") from err
    if not isinstance(module, nn.Module):
        raise TypeError(f"activation must be a module class or a function returning a "
                        f"module, but activation() returned {_check.show(module)} "
                        f"(a {type(module).__name__})")
    return module


def foreign_models(seed: int = 0) -> dict[str, tuple[nn.Module, torch.Tensor, torch.Tensor, Any]]:
    """name -> (model, x, y, loss): a small CNN, an ``nn.LSTM`` and an
    ``nn.TransformerEncoder``, each with a batch it can take (seeded).

    Raises:
        TypeError: ``seed`` not an int.
        ValueError: ``seed`` outside ``[0, 2**64 - 1]``.
    """
    seed = _check.seed(seed)
    g = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):       # the caller's RNG is left alone
        torch.manual_seed(seed)                   # torch's own initializers use it
        cnn, lstm, encoder = small_cnn(), LSTMRegressor(), EncoderClassifier()
    images = torch.randn(64, 1, 12, 12, generator=g)
    classes = torch.randint(0, 4, (64,), generator=g)
    x_seq, y_seq = _sequences(20)
    tokens = torch.randint(0, VOCAB, (32, SEQ), generator=g)
    return {"CNN": (cnn, images, classes, "cross_entropy"),
            "LSTM": (lstm, x_seq, y_seq, "mse"),
            "TransformerEncoder": (encoder, tokens, tokens.roll(1, dims=1), token_loss)}
