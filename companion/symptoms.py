"""What a diagnosis can find: the symptoms, their thresholds, and the measurement they are read from.

The data that :mod:`companion.diagnose` (which measures and judges) and
:mod:`companion.report` (which shows) share, in a module that imports neither:

* :data:`SYMPTOMS` -- symptom -> :class:`Symptom` (its usual causes, the remedy to try
  first, the chapter that explains it): the table the book's closing map is drawn
  from, so that the book and :mod:`companion.diagnose` cannot disagree.
* :class:`Finding` -- one diagnosis: symptom, severity, layers, evidence, remedy, chapter.
* the thresholds (``VANISHING_RATIO`` ... ``SCALER_MIN_SKIPS``), each with where it comes from;
* the record of one measured pass, and the backward-signal ratios read from it.

Everything public here is importable from :mod:`companion.diagnose` (the same objects).
"""
from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NamedTuple, Optional, Sequence

if TYPE_CHECKING:                       # for the annotation only: no import at run time
    from .diagnostics import ActivationStats

__all__ = ["Symptom", "SYMPTOMS", "Finding", "VANISHING_RATIO", "EXPLODING_RATIO",
           "DEAD_FRACTION", "SATURATION_FRACTION", "INITIAL_LOSS_FACTOR",
           "INITIAL_LOSS_MIN_EXCESS", "INITIAL_MSE_FACTOR", "UPDATE_RATIO_LOW",
           "UPDATE_RATIO_HIGH", "MIN_EXAMPLES", "GATE_SCALE", "DIVERGED_FACTOR",
           "PLATEAU_DROP", "PLATEAU_MIN_STEPS", "DEAD_GROWTH", "PRECISION_LOST_FRACTION",
           "PRECISION_OVERFLOW_FACTOR", "PRECISION_ROUNDED_FRACTION", "SCALER_SKIP_FRACTION",
           "SCALER_MIN_SKIPS"]


# --------------------------------------------------------------------- symptoms
class Symptom(NamedTuple):
    """One row of the book's map: what the symptom is, its usual causes, the remedy
    to try first and the chapter that explains it; ``remedies`` maps a cause that
    :mod:`companion.diagnose` can tell apart to (its remedy, its chapter), and
    ``severity`` is ``"info"`` for the notes (designs that look like a problem and are
    not), else None (a warning or an error, by the numbers)."""

    name: str
    title: str
    cause: str
    remedy: str
    chapter: str
    remedies: dict = {}
    severity: Optional[str] = None


#: symptom -> :class:`Symptom`, in the order of the book's chapters; the notes last.
SYMPTOMS: "OrderedDict[str, Symptom]" = OrderedDict((s.name, s) for s in (
    Symptom("vanishing", "vanishing gradients",
            "a product of layer Jacobians smaller than 1: saturating activations, "
            "weights too small, too many layers",
            "He/Xavier initialization, ReLU-family activations, normalization, "
            "skip connections", "vanishing",
            {"frozen_zero": ("unfreeze that parameter or start it away from zero (a "
                             "frozen zero, or one whose gradient is zero too, blocks every "
                             "gradient behind it for good)", "initialization")}),
    Symptom("exploding", "exploding gradients",
            "a product of layer Jacobians larger than 1: weights too large, batch norm "
            "in a deep plain network, a recurrent matrix with radius > 1",
            "variance-preserving initialization, skip connections; per-layer adaptive "
            "clipping (AGC) rather than global clipping, which scales every layer by the "
            "same factor and leaves the imbalance between layers as it is", "exploding",
            {"batch_norm": ("skip connections: batch norm in a deep plain network "
                            "multiplies the gradient at every layer whatever the "
                            "initialization (no initialization fixes it)",
                            "skip_connections")}),
    Symptom("initial_loss", "loss far above the baseline",
            "an output layer too large at the start, or far from the labels' prior",
            "scale the output layer down (or zero it) and check the loss at "
            "initialization against the best constant prediction", "initialization",
            {"logits": ("scale the output layer down (or zero its weight) so that the "
                        "first predictions are close to uniform", "initialization"),
             "prior": ("set the output layer's bias to the log of the class "
                       "frequencies (the log prior) and scale its weight down", "initialization"),
             "offset": ("set the output layer's bias to mean(y), or standardize y",
                        "initialization"),
             "scale": ("scale the output layer down, or standardize y", "initialization")}),
    Symptom("saturation", "saturated activations",
            "pre-activations too large for a sigmoid or tanh: inputs not standardized, "
            "weights too large",
            "standardize the inputs, Xavier initialization, normalization before the "
            "activation, or a non-saturating activation", "activations"),
    Symptom("dead_units", "dead ReLUs",
            "units pushed to negative pre-activations for every input, by a large "
            "step or a negative bias",
            "a smaller learning rate, zero biases, leaky ReLU or GELU, normalization",
            "activations"),
    Symptom("nonfinite", "non-finite values",
            "an overflow: exploding activations or gradients, a step too large",
            "find the first layer that overflows; lower the learning rate, clip, "
            "normalize", "exploding"),
    Symptom("diverged", "the loss diverged",
            "steps too large for the curvature: learning rate, exploding gradients",
            "a smaller learning rate, gradient clipping, warm-up", "clipping"),
    Symptom("plateau", "the loss does not fall",
            "no useful gradient reaches the weights, or the steps are too small or "
            "too large for the optimizer",
            "the remedies for vanishing gradients, skip connections, warm-up, "
            "an adaptive optimizer and a tuned learning rate", "skip_connections"),
    Symptom("update_ratio", "update-to-weight ratio out of range",
            "a learning rate too small or too large for this layer's scale",
            "tune the learning rate (about 1e-3 of the weights per step), or an "
            "adaptive optimizer", "optimizers",
            {"large": ("a smaller learning rate, or warm-up", "optimizers"),
             "small": ("a larger learning rate, or an adaptive optimizer; if the gradient "
                       "there is vanishing, its remedies first", "optimizers")}),
    Symptom("precision", "values lost to reduced precision",
            "float16 or bfloat16 cannot hold them: gradients below the smallest "
            "subnormal flush to zero, activations beyond the largest finite value "
            "overflow, updates below half the weights' spacing round away",
            "mixed precision: float32 master weights, autocast, dynamic loss scaling "
            "(torch.amp.GradScaler) for float16, or bfloat16", "precision",
            {"underflow": ("dynamic loss scaling (torch.amp.GradScaler), or bfloat16, "
                           "which has float32's range", "precision"),
             "overflow": ("bfloat16, or keep that operation in float32 as autocast does "
                          "for softmax and norms; normalization, scaled attention "
                          "(divide the logits by sqrt(d))", "precision"),
             "rounding": ("float32 master weights (a float32 model under autocast, or "
                          "companion.precision.MasterWeights), or stochastic rounding",
                          "precision"),
             "scaler": ("find the overflow (diagnose the model under autocast), lower the "
                        "learning rate, check the loss is finite; a scale below 1 means "
                        "the gradients overflow even unscaled", "precision")}),
    Symptom("no_gradient", "parameters without a gradient",
            "the graph between them and the loss is cut (.detach(), torch.no_grad(), "
            ".item(), an integer cast) or their output is not used",
            "find where the graph is cut: keep the computation from those parameters to "
            "the loss in autograd, or freeze them on purpose (requires_grad_(False))",
            "diagnose"),
    Symptom("not_in_optimizer", "trainable parameters not in the optimizer",
            "the optimizer was built from a subset of the parameters (or before a layer "
            "was added)",
            "build the optimizer from model.parameters(), or freeze those parameters on "
            "purpose", "optimizers"),
    Symptom("gated", "a small signal behind a gate, by design",
            "a zero-initialized head, LoRA B or batch-norm gamma, a ReZero/SkipInit "
            "alpha or a small layer scale, or a branch off the gradient's main path",
            "nothing: it grows in training (check again after a few steps)",
            "skip_connections", severity="info"),
    Symptom("frozen", "frozen parameters", "requires_grad=False, on purpose",
            "nothing, if they are meant to be frozen", "diagnose", severity="info"),
    Symptom("not_called", "modules not called on this batch",
            "an expert the router did not pick, a head this pass does not use",
            "nothing, if that is how the model routes", "diagnose", severity="info"),
    Symptom("unused_output", "outputs the loss does not use",
            "an auxiliary head or a second output of the model, left out of the loss "
            "diagnose computed (it takes the first output, or .logits, as the prediction)",
            "nothing, if your training loss leaves them out too", "diagnose",
            severity="info"),
    Symptom("tied", "tied weights", "one weight shared by two layers (input and output "
            "embedding)", "nothing", "diagnose", severity="info"),
    Symptom("small_batch", "a batch too small to judge",
            "too few examples per unit or per class to call a unit dead or estimate "
            "the baseline loss", "diagnose a larger batch (at least 16 examples)",
            "diagnose", severity="info"),
))


class Finding(NamedTuple):
    """One diagnosis: the symptom, how bad, where, the numbers, what to do, where to read.

    ``severity`` is ``"error"`` (training cannot work as it is: non-finite values, a
    divergence, or a threshold missed by more than a factor of 1000), ``"warning"``,
    or ``"info"`` for a note (a design that looks like a problem and is not).
    ``layers`` are module names (as in ``named_modules()``), parameter names or
    activation labels. ``cause`` is the key of the cause that was told apart (in
    ``SYMPTOMS[symptom].remedies``), or ``""``.
    """

    symptom: str
    severity: str
    layers: tuple[str, ...]
    evidence: str
    remedy: str
    chapter: str
    cause: str = ""

    def __str__(self) -> str:
        where = f" in {_short_list(self.layers)}" if self.layers else ""
        if self.severity == "info":
            return f"[info] {SYMPTOMS[self.symptom].title}{where}: {self.evidence}."
        return (f"[{self.severity}] {SYMPTOMS[self.symptom].title}{where}: {self.evidence}. "
                f"Try: {self.remedy} (chapter '{self.chapter}').")


def _finding(symptom: str, evidence: str, layers: Sequence[str] = (), *,
             severe: bool = False, info: bool = False, cause: str = "") -> Finding:
    """A :class:`Finding` of ``symptom``, with the remedy and chapter of its ``cause``
    (else the symptom's own): an error if ``severe``, a note if ``info``."""
    s = SYMPTOMS[symptom]
    remedy, chapter = s.remedies.get(cause, (s.remedy, s.chapter))
    severity = "info" if info else "error" if severe else "warning"
    return Finding(symptom, severity, tuple(layers), evidence, remedy, chapter, cause)


def _short_list(names: Sequence[str], k: int = 4) -> str:
    """The names joined by commas: the first ``k``, and how many more."""
    names = list(names)
    return ", ".join(names) if len(names) <= k else ", ".join(names[:k]) + f" and {len(names) - k} more"


# ------------------------------------------------------------------- thresholds
#: A layer whose backward signal is below this fraction of the output layer's is
#: *vanishing*. Healthy networks stay well inside [1e-3, 1e3] (measured at
#: initialization: a 20-layer He ReLU MLP 0.6 to 1.2; a 16-block residual MLP with
#: batch norm 0.2 to 63, growing towards the input; the 3-convolution CNN of
#: ``companion.gallery`` 0.014 at its first convolution), while a 10-layer sigmoid MLP
#: is at 6e-7 and a 20-layer one at 2e-13.
VANISHING_RATIO = 1e-3
#: ... above this multiple, *exploding* (the mirror image of VANISHING_RATIO).
EXPLODING_RATIO = 1e3
#: An activation with more than this fraction of dead units is flagged. A unit is dead
#: when it is off for every example of the batch (:func:`companion.diagnostics.dead_units`).
#: Deep He-initialized ReLU MLPs already have some at initialization, because their
#: representations are correlated (Lu et al. 2020): up to 47 % in the last layers of a
#: 20-layer MLP of width 32, none in the first. A large step or a negative bias kills
#: 90-100 %.
DEAD_FRACTION = 0.6
#: An activation with more than this fraction of its outputs in a flat tail (|tanh| >
#: 0.98, sigmoid < 0.02 or > 0.98, where the derivative is < 0.04) is *saturated*.
#: With unit-variance inputs tanh has 2 % there; a tanh MLP with 3x the Xavier scale
#: has more than half.
SATURATION_FRACTION = 0.3
#: A cross-entropy loss more than this multiple of the best constant prediction's, the
#: entropy H(p) of the batch's label frequencies p (log C when the C classes are
#: balanced), and at least INITIAL_LOSS_MIN_EXCESS nats above it, is flagged: the output
#: layer starts too confident, or far from the prior (Karpathy 2019: "verify loss @
#: init"). A ratio of code lengths: it catches a uniform prediction of rare classes
#: (predicting 50 % for 1.5 % positives costs 7.5 H(p)) without flagging a language
#: model's uniform start (about 1.5 H(p) on text). Logits of unit variance cost about
#: 0.5 nats more than log C.
INITIAL_LOSS_FACTOR = 3.0
#: ... and the loss must exceed the baseline by at least this many nats (a loss of 0.05
#: against a baseline of 0.01 is no problem however large the ratio).
INITIAL_LOSS_MIN_EXCESS = 0.25
#: The same for MSE against Var(y), the loss of predicting the mean. The loss at
#: initialization is about Var(y) + E[f(x)^2], and variance-preserving networks put
#: E[f(x)^2] near the input's scale, up to 6 Var(y) on this book's regression data.
INITIAL_MSE_FACTOR = 10.0
#: Update-to-weight ratios per step outside [UPDATE_RATIO_LOW, UPDATE_RATIO_HIGH] are
#: flagged. The rule of thumb is about 1e-3 (Karpathy, CS231n); the band is wide
#: because healthy steps range widely: Adam at 1e-3 on small weights gives 1e-2, and
#: SGD's first steps on a regression output layer 0.3. A step that moves a layer by
#: half its norm is too large by any rule; one below 1e-6 needs a million steps to move
#: the layer by its own norm (and below ~6e-8, half the float32 spacing, it rounds away).
UPDATE_RATIO_LOW = 1e-6
UPDATE_RATIO_HIGH = 0.5
#: :func:`~companion.diagnose.diagnose` on a float16 pass: a layer whose activation
#: gradients (those of a float32 copy of the pass, times the loss scale) would flush to
#: zero in float16 for more than this fraction of their nonzero values has *underflow*.
#: Measured on a 4-layer ReLU MLP regressing 256 outputs (batch 256, autocast): runs
#: without loss scaling that train like float32 lose at most 4 % per layer; one that
#: loses 24-85 % ends 9 % above float32's loss after 50 SGD steps, one that loses
#: 69-100 % ends 11 times above it; with GradScaler's 2**16 every run loses 0 %, and
#: the Hugging Face models of ``tests/test_zoo.py`` under autocast at most 2 % (outside
#: the branches behind a 1e-6 layer scale: see the ``gated`` note). Adam hides much of
#: the loss in short runs: their BERT loses 89 % unscaled and trains as well for 40 steps.
PRECISION_LOST_FRACTION = 0.1
#: An activation (a module's input or output) in float16 or bfloat16 whose largest |value|
#: is above the format's largest finite value divided by this factor is *near overflow*:
#: 65504 / 8 = 8188 for float16. Healthy models stay far below: under float16 autocast
#: the largest float16 value of the tiny Hugging Face GPT-2, BERT, ViT and Llama of
#: ``tests/test_zoo.py`` is about 1, of its ConvNeXt 5.5, its ResNet 15, the book's CNN
#: 2.7. Above the threshold, a sum of eight such values, or weights that grow 8-fold,
#: overflow.
PRECISION_OVERFLOW_FACTOR = 8.0
#: With an optimizer, a float16 or bfloat16 weight more than this fraction of whose
#: nonzero updates (one step of the optimizer in float32, on the elements with a
#: gradient) are below half its spacing, and so round away, is *rounded*. Bimodal in
#: practice: a bfloat16 GPT-2 under AdamW at lr 1e-3 loses 100 % of the updates of its
#: LayerNorm gains (all ones: spacing 2**-7) and 0 % elsewhere; a bfloat16 MLP under
#: Adam at lr 1e-5 loses 93-98 % in every layer, and its loss stalls.
PRECISION_ROUNDED_FRACTION = 0.5
#: :func:`~companion.diagnose.watch` with a GradScaler: after the start-up (the steps
#: skipped before the first step taken: from 2**16 the scale halves until the scaled
#: gradients fit), more than this fraction of the steps skipped, and at least
#: SCALER_MIN_SKIPS of them, is a scaler that *keeps collapsing*. A healthy run skips
#: one step per ``growth_interval`` (2000 by default: 0.05 %) when the scale tries to
#: grow; the healthy float16 runs of the tests skip none after the start-up.
SCALER_SKIP_FRACTION = 0.05
SCALER_MIN_SKIPS = 3
#: A unit is judged dead, and a baseline loss estimated, only from at least this many
#: examples per unit (labels, rows of y). A healthy 20-layer He-ReLU MLP has up to 69 %
#: of its units off for one example and up to 56 % for four (measured, 5 seeds): "off
#: for every example" means nothing on so few.
MIN_EXAMPLES = 16
#: A parameter that is not a bias and starts exactly at zero, or is a scale (at most one
#: dimension above 1) whose largest value is below this, is a *gate* by design: a
#: zero-initialized head or LoRA B, a zero batch-norm gamma (Goyal et al. 2017), a
#: ReZero/SkipInit alpha, a layer scale of 1e-6 (CaiT, ConvNeXt, DINOv2). The backward
#: signal behind it is small or zero at initialization, and that is not a vanishing gradient.
GATE_SCALE = 1e-2
#: :func:`~companion.diagnose.watch`: a loss that is not finite, or whose median over the last tenth of the
#: steps (at least 3) rose above this multiple of the median of the first logged losses
#: (ten, or a quarter of the run if shorter), has *diverged* (the training loop of :mod:`companion.train` stops at 1e6). A
#: spike that comes back down has not, nor does one lucky first batch of a fine-tuning
#: or resumed run set the bar.
DIVERGED_FACTOR = 10.0
#: :func:`~companion.diagnose.watch`: after at least PLATEAU_MIN_STEPS steps at full learning rate (a warm-up,
#: read from the optimizer, is left out), a loss whose mean over the last quarter is
#: above (1 - PLATEAU_DROP) x the mean of the first ten, and that is not still falling
#: steadily over the last quarter (a slope t-statistic below -4: a resumed run that
#: learns slowly), has not learned: a *plateau*.
PLATEAU_DROP = 0.1
PLATEAU_MIN_STEPS = 50
#: :func:`~companion.diagnose.watch`: dead units that grew by more than this fraction of a layer between
#: the first and the last measurement are reported even below DEAD_FRACTION.
DEAD_GROWTH = 0.2


# ------------------------------------------------------------------ measurements
@dataclass
class _Measurement:
    """What one recorded forward and backward pass gave (all dicts in forward order):
    built by :mod:`companion.diagnose`, judged there, shown by :class:`companion.report.Report`."""

    step: Optional[int]
    layer_types: dict[str, str]
    signal: dict[str, float]
    grad_norm: dict[str, float]
    weight_norm: dict[str, float]
    update_ratio: dict[str, float]
    act_stats: dict[str, ActivationStats]
    dead: dict[str, float]
    nonfinite: list[tuple[str, Optional[str]]] = field(default_factory=list)
    # (what is not finite, the layer or parameter it belongs to or None)
    reference: list[str] = field(default_factory=list)       # layers nearest the prediction
    dead_examples: dict[str, int] = field(default_factory=dict)
    params: dict[str, tuple[float, float]] = field(default_factory=dict)
    # loose parameters (not a layer's): name -> (gradient norm, norm)
    gates: dict[str, float] = field(default_factory=dict)    # trainable gate -> max |value|
    frozen_zeros: list[str] = field(default_factory=list)    # frozen, exactly-zero weights
    has_batch_norm: bool = False
    # a float16 or bfloat16 pass (diagnose): its dtype, and per layer the fraction of
    # activation gradients that underflow, of updates that round away
    low_dtype: Optional[str] = None
    lost: dict[str, float] = field(default_factory=dict)
    rounded: dict[str, float] = field(default_factory=dict)


def _reference(m: _Measurement, signal: dict[str, float]) -> Optional[str]:
    """The layer the signal ratios are taken against: of the layers nearest the
    prediction in the autograd graph, the one with the largest signal; else the last
    layer that received one."""
    near = [n for n in m.reference if n in signal]
    if near:
        return max(near, key=signal.get)
    return list(signal)[-1] if signal else None


def _signal_ratios(m: _Measurement) -> tuple[Optional[str], dict[str, float]]:
    """(the reference layer, layer -> its backward signal / the reference's); no ratios
    when the reference received no signal."""
    signal = {n: s for n, s in m.signal.items() if math.isfinite(s)}
    ref = _reference(m, signal)
    if ref is None or not signal[ref] > 0:
        return ref, {}
    return ref, {n: s / signal[ref] for n, s in signal.items()}
