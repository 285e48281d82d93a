"""Look inside a network while it trains: backward signal, activations, dead units, updates.

* :func:`record` -- a context manager around a forward and backward pass of any
  ``nn.Module`` that records, layer by layer and input side first,

  - ``output_grad_norms``: :math:`\\lVert \\partial L / \\partial z^{(\\ell)} \\rVert_2`,
    the *backward signal* arriving at each layer's output :math:`z^{(\\ell)}`;
  - ``weight_grad_norms``: :math:`\\lVert \\partial L / \\partial W^{(\\ell)} \\rVert_2`;
  - ``activation_stats``: mean, std, saturated and zero fractions of each
    activation function's *output*, labelled e.g. ``"act3 (after Tanh)"`` so a plot
    says where the statistic was taken.

* :func:`backprop_gradients` / :func:`gradient_histograms` -- the values of the backward
  signal :math:`\\partial L / \\partial z^{(\\ell)}` of every layer (not only its norm), and
  their histograms on a shared range: the per-layer gradient histograms of CS231n and of
  Glorot & Bengio (2010), Figure 7.
* :func:`dead_units` -- the fraction of ReLU-family units that never fire on a batch.
* :func:`snapshot_weights` / :func:`update_ratios` -- the update-to-weight ratio
  :math:`\\lVert W_{t+1} - W_t \\rVert / \\lVert W_t \\rVert` per layer: the one
  definition (and the one rule for a layer's weight, below) that
  :func:`companion.train.train` and :mod:`companion.diagnose` use too.
* :class:`ForwardError` -- what every function here raises when ``model(x)`` fails,
  naming the innermost module that was running (``companion.diagnose.ForwardError`` is
  the same class).

Example::

    import torch
    from companion.nets import mlp
    from companion.diagnostics import record

    net = mlp(10, 1, width=32, depth=5, activation="tanh", seed=0)
    with record(net) as rec:
        net(torch.randn(64, 10)).pow(2).mean().backward()
    rec.output_grad_norms      # {'fc1': ..., 'fc2': ..., ..., 'out': ...}
    rec.activation_stats["act3 (after Tanh)"].saturated_fraction

A layer is a module that owns parameters itself (``parameters(recurse=False)``): every
leaf with parameters (Linear, Conv, norms, ``nn.LSTM``) and also a module with children
that holds parameters of its own, such as ``nn.MultiheadAttention`` inside
``nn.TransformerEncoderLayer``. Its packed input projection ``in_proj_weight`` lives on
the attention module itself, and its ``out_proj`` Linear is never *called* (the
attention function reads its weight), so a rule that looked at leaves only saw nothing
of the attention. For such a layer the output is the first tensor it returns (the
attention output, not the attention weights), and its "weight" is ``weight``, else
``in_proj_weight``, else its first parameter with two or more dimensions. An activation is a leaf module that is one of torch's activation
classes (PReLU included, although it has a parameter), or a parameter-free leaf whose
name starts with ``act`` (``nn.Identity`` in ``mlp(activation="linear")``) or whose
class comes from :mod:`companion.activations`.

References: fastai's ``Hooks``/``ActivationStats`` (course22p2); Glorot & Bengio (2010)
(saturation); Karpathy, *A Recipe for Training Neural Networks* (2019) (update ratio).
"""
from __future__ import annotations

import dataclasses
import math
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any, Callable, Iterator, NamedTuple, Optional, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from . import _check

__all__ = ["ActivationStats", "Recorder", "record", "backprop_gradients",
           "gradient_histograms", "GradientHistogram", "dead_units", "snapshot_weights",
           "update_ratios", "ForwardError", "ACTIVATION_TYPES", "RELU_FAMILY"]

#: Module classes treated as activation functions.
ACTIVATION_TYPES: tuple[type[nn.Module], ...] = (
    nn.Sigmoid, nn.Tanh, nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.RReLU, nn.ELU,
    nn.SELU, nn.CELU, nn.GELU, nn.SiLU, nn.Mish, nn.Softplus, nn.Softsign, nn.Hardtanh,
    nn.Hardsigmoid, nn.Hardswish, nn.LogSigmoid, nn.Tanhshrink,
)
#: Activations that :func:`dead_units` reports on.
RELU_FAMILY: tuple[type[nn.Module], ...] = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.RReLU)
_LEAKY = (nn.LeakyReLU, nn.PReLU, nn.RReLU)


class ActivationStats(NamedTuple):
    """Statistics of one activation's outputs :math:`y` over every element of the pass.

    ``std`` is the population std (``ddof=0``, like ``np.std``). ``saturated_fraction``
    is the fraction with :math:`y < 0.02` or :math:`y > 0.98` after a Sigmoid,
    :math:`|y| > 0.98` after a Tanh, and NaN after any other activation (no flat tail
    defined). ``zero_fraction`` is the fraction exactly 0.
    """

    mean: float
    std: float
    saturated_fraction: float
    zero_fraction: float


# ------------------------------------------------------------------------- discovery
def _check_batch(name: str, x: Any) -> Tensor:
    """A batch for ``model(x)``: a nonempty tensor with at least one dimension, not
    complex, of finite values when floating (NaN in the data is bad data). Integer
    batches pass (token indices for an embedding); whether the model takes the batch is
    the model's to say."""
    x = _check.tensor(name, x, floating=False, min_ndim=1)
    if x.is_complex():
        raise TypeError(f"{name} must have a real dtype, got {_check.show(x)}")
    if x.is_floating_point():
        _check.finite_values(name, x)
    return x


def _is_activation(name: str, module: nn.Module) -> bool:
    if isinstance(module, ACTIVATION_TYPES):
        return True
    if any(True for _ in module.parameters(recurse=False)):
        return False
    short = name.rsplit(".", 1)[-1]
    return short.startswith("act") or type(module).__module__ == "companion.activations"


def _leaves(model: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    """Leaf modules in registration order; the root, if a leaf, is called ``model``."""
    for name, module in model.named_modules():
        if next(module.children(), None) is None:
            yield (name or "model"), module


def _owns_parameters(module: nn.Module) -> bool:
    return next(module.parameters(recurse=False), None) is not None


def _is_layer(name: str, module: nn.Module, root: bool) -> bool:
    """A layer: a module that owns parameters and is not an activation -- a leaf (Linear,
    Conv, norms, ``nn.LSTM``), or a module with children that owns parameters it uses
    itself (``nn.MultiheadAttention``'s ``in_proj_weight``, a hand-written RNN cell, a
    block with a layer scale). The root is a layer only if it is a leaf: parameters the
    root owns directly (a ViT's cls token and position embedding) are reported by name."""
    if not _owns_parameters(module):
        return False
    if next(module.children(), None) is None:
        return not _is_activation(name, module)
    return not root


def _layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Layers (:func:`_is_layer`) in registration order; a root that is a leaf (a bare
    ``nn.Linear``) is called ``model``."""
    return [(name or "model", m) for name, m in model.named_modules()
            if _is_layer(name or "model", m, root=m is model)]


def _loose_parameters(model: nn.Module) -> list[tuple[str, Tensor]]:
    """Parameters owned directly by a root that is not a leaf (a ViT's ``cls_token`` and
    position embedding, a gate): reported under their parameter names, never as a layer
    called ``model``, never the reference output layer."""
    layers = {id(m) for _, m in _layers(model)}
    out, seen = [], set()
    for prefix, m in model.named_modules():
        if id(m) in layers:
            continue
        for pname, p in m.named_parameters(recurse=False):
            if id(p) not in seen:
                seen.add(id(p))
                out.append((f"{prefix}.{pname}" if prefix else pname, p))
    return out


def _weight(module: nn.Module) -> Tensor | None:
    """A layer's weight -- the one rule that :func:`record`, :func:`update_ratios`,
    :func:`companion.train.train` and :mod:`companion.diagnose` all use: ``weight``, else
    (MultiheadAttention) ``in_proj_weight``, else the first parameter of two or more
    dimensions that the module owns itself (``nn.LSTM``'s ``weight_ih_l0``,
    ``SimpleRNN``'s input matrix); None for a layer with none of these."""
    for attr in ("weight", "in_proj_weight"):
        w = getattr(module, attr, None)
        if isinstance(w, Tensor):
            return w
    return next((p for p in module.parameters(recurse=False) if p.dim() >= 2), None)


def _layer_weights(model: nn.Module) -> dict[str, Tensor]:
    """layer name -> its weight (:func:`_weight`, the live tensor), in registration order,
    for every layer (:func:`_layers`) that has one."""
    return {name: w for name, m in _layers(model) if (w := _weight(m)) is not None}


def _dense(t: Tensor) -> Tensor:
    """A tensor whose norm torch can take: sparse gradients (``nn.Embedding(sparse=True)``)
    by their stored values, half precision in float32 (a float16 norm above 65504 is inf
    although no value is)."""
    t = t.detach()
    if t.is_sparse:
        t = t.coalesce().values()
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


#: Producers whose outputs are channels-first (N, C, ...): a ReLU after them has one unit
#: per channel.
_CHANNELS_FIRST = (nn.modules.conv._ConvNd, nn.modules.batchnorm._BatchNorm, nn.GroupNorm,
                   nn.modules.instancenorm._InstanceNorm, nn.LocalResponseNorm)


def _unit_dim(z: Tensor, producer: nn.Module | None) -> int:
    """The dimension of ``z`` that indexes units: channels (dim 1) after a convolution or a
    channel norm, and for any 4- or 5-dimensional tensor from an unknown producer; else
    the last (features of (N, F) and (N, T, F), after Linear, LayerNorm, attention)."""
    if z.dim() <= 2:
        return z.dim() - 1 if z.dim() else 0
    if producer is not None:
        return 1 if isinstance(producer, _CHANNELS_FIRST) else z.dim() - 1
    return 1 if z.dim() >= 4 else z.dim() - 1


def _label(name: str, module: nn.Module) -> str:
    return f"{name} (after {type(module).__name__})"


def _saturated(module: nn.Module, y: Tensor) -> Tensor | None:
    """Boolean mask of saturated outputs, or None when saturation is not defined."""
    if isinstance(module, nn.Sigmoid):
        return (y < 0.02) | (y > 0.98)
    if isinstance(module, nn.Tanh):
        return y.abs() > 0.98
    return None


def _off(module: nn.Module, z: Tensor, y: Tensor) -> Tensor:
    """Where a ReLU-family unit is off: its output is exactly 0 (ReLU, ReLU6), or its
    input is negative (the leaky ones, whose output is then a small fraction of it)."""
    return (z < 0) if isinstance(module, _LEAKY) else (y == 0)


def _dead_per_unit(module: nn.Module, z: Tensor, y: Tensor,
                   producer: nn.Module | None = None) -> tuple[Tensor, int]:
    """((units,) bool: off for every example, examples per unit). Units are channels or
    features (:func:`_unit_dim`); every other dimension counts as an example."""
    if z.dim() == 0:
        return _off(module, z, y).reshape(1), 1
    dim = _unit_dim(z, producer)
    off = _off(module, z, y).movedim(dim, -1)
    units = off.shape[-1]
    return off.reshape(-1, units).all(dim=0), off.numel() // max(units, 1)


def _tensors(module: nn.Module, out: Any) -> list[Tensor]:
    """The tensors among a module's outputs (an LSTM returns a nested tuple); for
    attention only the output, not the attention weights it may also return."""
    if isinstance(module, nn.MultiheadAttention) and isinstance(out, tuple):
        out = out[0]
    if isinstance(out, Tensor):
        return [out]
    if isinstance(out, (tuple, list)):
        return [t for o in out for t in _tensors(module, o)]
    return []


def _fields(out: Any) -> list[tuple[str, Any]]:
    """(name, value) of a dict, a dataclass or an object with ``logits``/``loss``."""
    if isinstance(out, Mapping):
        return list(out.items())
    if dataclasses.is_dataclass(out) and not isinstance(out, type):
        return [(f.name, getattr(out, f.name)) for f in dataclasses.fields(out)]
    return [(k, getattr(out, k)) for k in ("loss", "logits") if hasattr(out, k)]


def _prediction(out: Any) -> tuple[Tensor, Tensor | None]:
    """(the prediction, the model's own loss or None) from what a model returned:

    * a tensor;
    * a tuple or list: its first tensor (``nn.LSTM``'s output), except that a scalar
      first item followed by a tensor is ``(loss, logits, ...)`` (Hugging Face with
      ``return_dict=False`` and labels);
    * a dict, a dataclass or an object with ``.logits``/``.loss`` (a Hugging Face
      ``ModelOutput``): ``logits``, else its first tensor that is not ``loss``; and
      ``loss`` when the model computed one (labels passed in ``x``).

    Raises:
        TypeError: there is no tensor in ``out``.
    """
    found = _find_prediction(out)
    if found is None:
        raise TypeError(f"no tensor in {type(out).__name__}")
    return found


def _find_prediction(out: Any, depth: int = 0) -> tuple[Tensor, Tensor | None] | None:
    """:func:`_prediction`, or None when ``out`` holds no tensor (nested at most 4 deep)."""
    if isinstance(out, Tensor):
        return out, None
    if depth > 4:
        return None
    if isinstance(out, (tuple, list)):
        items = [o for o in out if o is not None]
        if (len(items) >= 2 and isinstance(items[0], Tensor) and items[0].dim() == 0
                and items[0].is_floating_point()):
            rest = _find_prediction(items[1], depth + 1)
            if rest is not None:
                return rest[0], items[0]
        for item in items:
            found = _find_prediction(item, depth + 1)
            if found is not None:
                return found
        return None
    fields = {k: v for k, v in _fields(out) if v is not None}
    loss = fields.get("loss") if isinstance(fields.get("loss"), Tensor) else None
    if isinstance(fields.get("logits"), Tensor):
        return fields["logits"], loss
    for key, value in fields.items():
        found = None if key == "loss" else _find_prediction(value, depth + 1)
        if found is not None:
            return found[0], loss
    return (loss, loss) if loss is not None else None


def _nearest_layers(pred: Tensor | None, grad_fns: dict[Any, str],
                    budget: int = 20000) -> list[str]:
    """The layers whose outputs are fewest autograd steps from ``pred``: breadth-first
    from ``pred.grad_fn`` to the first level that holds a layer's output. (The reference
    of the signal ratios: the layer nearest the prediction, whatever ran last -- an
    auxiliary head the loss does not use is not it.)"""
    if pred is None or pred.grad_fn is None or not grad_fns:
        return []
    level, seen = [pred.grad_fn], {pred.grad_fn}
    while level and budget > 0:
        found = list(dict.fromkeys(grad_fns[n] for n in level if n in grad_fns))
        if found:
            return found
        nxt = []
        for node in level:
            for child, _ in getattr(node, "next_functions", ()):
                if child is not None and child not in seen:
                    seen.add(child)
                    nxt.append(child)
        budget -= len(level)
        level = nxt
    return []


# ------------------------------------------------------------------- calling the model
class ForwardError(RuntimeError):
    """``model(x)`` failed; ``layer`` is the innermost module that was running.

    Raised (with the model's own error chained) by every function here and in
    :mod:`companion.diagnose` that calls the model; ``companion.diagnose.ForwardError``
    is the same class."""

    def __init__(self, message: str, layer: str):
        super().__init__(message)
        self.layer = layer


def _call(model: nn.Module, x: Any) -> Any:
    """``model(x)`` (``model(*x)`` for a tuple, ``model(**x)`` for a dict); an error is
    re-raised as :class:`ForwardError` naming the innermost module that was running."""
    names = {m: (n or "model") for n, m in model.named_modules()}
    running: list[nn.Module] = []          # the modules entered and not yet left

    def enter(module: nn.Module, _inputs: Any) -> None:
        running.append(module)

    def leave(module: nn.Module, _inputs: Any, _output: Any) -> None:
        running.pop()                       # (a hook that returned it would replace the output)

    handles = [m.register_forward_pre_hook(enter) for m in names]
    handles += [m.register_forward_hook(leave) for m in names]
    try:
        if isinstance(x, dict):
            return model(**x)
        if isinstance(x, (tuple, list)):
            return model(*x)
        return model(x)
    except Exception as err:
        module = running[-1] if running else model
        where = names.get(module, type(module).__name__)
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ForwardError(f"model(x) failed in {where} ({type(module).__name__}) for x of "
                           f"shape {shape}: {type(err).__name__}: {err}", where) from err
    finally:
        for h in handles:
            h.remove()


# -------------------------------------------------------------------------- recorder
class _Moments:
    """Per-call (count, mean, M2, saturated, zeros) rows, computed in the output's own
    precision (float32 for half precision), kept on the device and
    combined with Chan et al.'s parallel update only when read, so that recording
    costs no host synchronisation per call."""

    def __init__(self) -> None:
        self.rows: list[Tensor] = []
        self.saturation_defined = True

    def add(self, y: Tensor, saturated: Tensor | None) -> None:
        y = y.detach().flatten()
        if y.dtype not in (torch.float32, torch.float64):
            y = y.float()                       # half precision: accumulate in float32
        n_b = y.numel()
        if n_b == 0:
            return
        var_b, mean_b = torch.var_mean(y, correction=0)
        if saturated is None:
            self.saturation_defined = False
            n_sat = torch.zeros_like(mean_b)
        else:
            n_sat = saturated.sum()
        zeros = (y == 0).sum()
        self.rows.append(torch.stack([mean_b.new_tensor(float(n_b)), mean_b, var_b * n_b,
                                      n_sat.to(mean_b), zeros.to(mean_b)]).double())

    def stats(self) -> ActivationStats:
        n = mean = m2 = n_sat = n_zero = 0.0
        for n_b, mean_b, m2_b, sat_b, zero_b in (torch.stack(self.rows).tolist()
                                                 if self.rows else []):
            total = n + n_b
            delta = mean_b - mean
            mean += delta * n_b / total
            m2 += m2_b + delta * delta * n * n_b / total
            n, n_sat, n_zero = total, n_sat + sat_b, n_zero + zero_b
        if n == 0:
            return ActivationStats(math.nan, math.nan, math.nan, math.nan)
        sat = n_sat / n if self.saturation_defined else math.nan
        return ActivationStats(mean, math.sqrt(m2 / n), sat, n_zero / n)


class Recorder:
    """What :func:`record` yields. Read its attributes after the backward pass.

    Attributes (all dicts are ordered input side first, i.e. in the order the modules
    ran in the last forward pass):
        layer_names: names (as in ``named_modules()``) of the layers that ran.
        activation_names: names of the activation modules that ran.
        activation_labels: ``f"{name} (after {ClassName})"`` for each of them.
        output_grad_norms: layer name -> :math:`\\lVert \\partial L/\\partial z \\rVert_2`
            (only layers the backward pass reached).
        weight_grad_norms: layer name -> ``module.weight.grad.norm()``
            (``in_proj_weight`` for attention; NaN if no grad; layers without a weight
            are left out); read live inside the block and frozen when the block exits,
            so a later ``zero_grad()`` does not erase it.
        activation_stats: label -> :class:`ActivationStats` (empty if
            ``activation_stats=False``).
        dead_fractions: label -> fraction of dead units of each ReLU-family
            activation, by the rule of :func:`dead_units`, on the batch of the pass.
        activations: label -> flattened float32 ``np.ndarray`` of the outputs (only
            with ``keep_activations=True``).

    Every call ``model(...)`` inside the block starts a new record, so after several
    forward passes the attributes describe the last one (and the backward of the last
    one). A module called several times within one forward contributes all its calls:
    the gradient norm is over all its outputs together, the statistics over all their
    elements.

    Build it with :func:`record` (same arguments). The batch itself is given to the
    model by the caller, inside the block: a Recorder does not see it before it runs.

    Raises:
        as :func:`record`.
    """

    def __init__(self, model: nn.Module, *, activation_stats: bool, keep_activations: bool):
        self.model = _check.module("model", model)
        self._want_stats = _check.flag("activation_stats", activation_stats)
        self._keep = _check.flag("keep_activations", keep_activations)
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        self._frozen_weight_norms: dict[str, float] | None = None
        self._pass = 0
        self._new_pass()
        self._targets: tuple[list, list] | None = None     # (activations, layers), found once

    # -- state of the current pass ------------------------------------------------
    def _new_pass(self, *_: Any) -> None:
        self._pass += 1
        self._layer_modules: OrderedDict[str, nn.Module] = OrderedDict()
        self._act_labels: OrderedDict[str, str] = OrderedDict()
        self._grad_sq: dict[str, Tensor] = {}
        self._moments: dict[str, _Moments] = {}
        self._kept: dict[str, list[np.ndarray]] = {}
        self._dead: dict[str, Tensor] = {}
        self._dead_examples: dict[str, int] = {}
        self._producer: nn.Module | None = None    # the layer that ran last
        self._grad_fns: dict[Any, str] = {}        # autograd node of a layer output -> layer
        self.reference_layers: list[str] = []

    def _layer_hook(self, name: str):
        def hook(module: nn.Module, inputs: Any, output: Any) -> None:
            self._layer_modules.setdefault(name, module)
            self._producer = module
            current = self._pass

            def on_grad(grad: Tensor) -> None:
                if current == self._pass:  # ignore backward of an older forward pass
                    # the norm in the gradient's own precision (half: float32),
                    # squared in float64
                    g = grad.detach()
                    g = g if g.dtype in (torch.float32, torch.float64) else g.float()
                    sq = torch.linalg.vector_norm(g).double() ** 2
                    self._grad_sq[name] = self._grad_sq.get(name, 0.0) + sq

            for t in _tensors(module, output):
                if t.requires_grad:
                    t.register_hook(on_grad)
                    if t.grad_fn is not None:
                        self._grad_fns.setdefault(t.grad_fn, name)
        return hook

    def _output_hook(self, module: nn.Module, inputs: Any, output: Any) -> None:
        """On the model's output: the layers nearest to its prediction in the autograd
        graph (the reference of the signal ratios), then forget the graph."""
        found = _find_prediction(output)
        self.reference_layers = _nearest_layers(found and found[0], self._grad_fns)
        self._grad_fns = {}

    def _activation_hook(self, name: str):
        def hook(module: nn.Module, inputs: Any, output: Any) -> None:
            if not isinstance(output, Tensor):
                return
            label = self._act_labels.setdefault(name, _label(name, module))
            y = output.detach()
            if self._want_stats:
                self._moments.setdefault(label, _Moments()).add(y, _saturated(module, y))
            if self._keep:
                flat = y.flatten().to(torch.float32).cpu().numpy().copy()
                self._kept.setdefault(label, []).append(flat)
            if isinstance(module, RELU_FAMILY) and inputs and isinstance(inputs[0], Tensor):
                dead, examples = _dead_per_unit(module, inputs[0].detach(), y, self._producer)
                old = self._dead.get(label)
                # a second call with another number of units: the units are not the same
                if old is None or old.shape != dead.shape:
                    self._dead[label], self._dead_examples[label] = dead, examples
                else:
                    self._dead[label] = old & dead
                    self._dead_examples[label] += examples
        return hook

    # -- context manager ---------------------------------------------------------
    def __enter__(self) -> "Recorder":
        # a Recorder can be entered again (diagnose.watch does, every measured step):
        # the modules are found once, each entry starts a fresh record
        if self._targets is None:
            self._targets = ([(n, m) for n, m in _leaves(self.model) if _is_activation(n, m)],
                             _layers(self.model))
        self._frozen_weight_norms = None
        self._new_pass()
        try:
            self._handles.append(self.model.register_forward_pre_hook(self._new_pass))
            self._handles.append(self.model.register_forward_hook(self._output_hook))
            for name, module in self._targets[0]:
                self._handles.append(module.register_forward_hook(self._activation_hook(name)))
            for name, module in self._targets[1]:
                self._handles.append(module.register_forward_hook(self._layer_hook(name)))
        except BaseException:
            self.remove()
            raise
        return self

    def __exit__(self, *exc: Any) -> None:
        try:
            self._frozen_weight_norms = self._read_weight_norms()
        finally:
            self.remove()

    def remove(self) -> None:
        """Remove every hook (called on exit, also after an exception)."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    # -- results -----------------------------------------------------------------
    def _read_weight_norms(self) -> dict[str, float]:
        names, norms = [], []
        for name, module in self._layer_modules.items():
            weight = _weight(module)
            if weight is not None:
                names.append(name)
                g = weight.grad
                norms.append(torch.tensor(math.nan, dtype=torch.float64) if g is None
                             else torch.linalg.vector_norm(_dense(g).double()).cpu())
        return dict(zip(names, torch.stack(norms).tolist())) if names else {}

    @property
    def layer_names(self) -> list[str]:
        return list(self._layer_modules)

    @property
    def activation_names(self) -> list[str]:
        return list(self._act_labels)

    @property
    def activation_labels(self) -> list[str]:
        return list(self._act_labels.values())

    @property
    def output_grad_norms(self) -> dict[str, float]:
        names = [n for n in self._layer_modules if n in self._grad_sq]
        if not names:
            return {}
        values = torch.stack([torch.as_tensor(self._grad_sq[n], dtype=torch.float64).cpu()
                              for n in names]).sqrt().tolist()      # one synchronisation
        return dict(zip(names, values))

    @property
    def weight_grad_norms(self) -> dict[str, float]:
        if self._frozen_weight_norms is not None:
            return dict(self._frozen_weight_norms)
        return self._read_weight_norms()

    @property
    def activation_stats(self) -> dict[str, ActivationStats]:
        return {label: self._moments[label].stats()
                for label in self._act_labels.values() if label in self._moments}

    @property
    def dead_fractions(self) -> dict[str, float]:
        """label -> fraction of dead units of each ReLU-family activation in the last
        pass, by :func:`dead_units`' rule (off for every example of the batch)."""
        labels = [label for label in self._act_labels.values() if label in self._dead]
        if not labels:
            return {}
        return dict(zip(labels, torch.stack([self._dead[k].double().mean().cpu()
                                             for k in labels]).tolist()))

    @property
    def dead_examples(self) -> dict[str, int]:
        """label -> how many examples each unit of a ReLU-family activation was judged on
        (batch size, times positions for convolutions and sequences)."""
        return {label: self._dead_examples[label] for label in self._act_labels.values()
                if label in self._dead_examples}

    @property
    def activations(self) -> dict[str, np.ndarray]:
        if not self._keep:
            raise AttributeError("activations are kept only with record(..., keep_activations=True)")
        return {label: np.concatenate(self._kept[label])
                for label in self._act_labels.values() if label in self._kept}


def record(model: nn.Module, *, activation_stats: bool = True,
           keep_activations: bool = False) -> Recorder:
    """Record the backward signal and activation statistics of ``model``, per layer.

    Use as ``with record(model) as rec:`` around a forward and a backward pass; see
    :class:`Recorder` for what ``rec`` holds. Hooks: a forward hook on every layer
    registers a tensor hook on its output (so the gradient with respect to the output
    itself is read, unlike ``register_full_backward_hook``), a forward hook on every
    activation reads its output, and a forward pre-hook on ``model`` starts a new
    record per call. All are removed when the block exits, also on an exception.

    Args:
        model: any ``nn.Module`` (``mlp()``, ``nn.Sequential``, nested modules).
        activation_stats: compute :class:`ActivationStats` per activation.
        keep_activations: also keep a flattened float32 copy of every activation
            output (for histograms; memory grows with batch x width).

    Raises:
        TypeError: ``model`` is not an ``nn.Module``; ``activation_stats`` or
            ``keep_activations`` not a bool.
    """
    return Recorder(model, activation_stats=activation_stats, keep_activations=keep_activations)


# ------------------------------------------------------------------ gradient values
def backprop_gradients(model: nn.Module, x: Any, y: Any,
                       loss_fn: Callable[[Any, Any], Tensor]) -> dict[str, np.ndarray]:
    r"""The backward signal :math:`\partial L/\partial z^{(\ell)}` of every layer, value by value.

    One forward pass ``L = loss_fn(model(x), y)`` and ``torch.autograd.grad(L, outputs)``
    with respect to the output :math:`z^{(\ell)}` of every layer (the modules
    :func:`record` reports on: ``fc1 .. out`` of an :func:`companion.nets.mlp`). Unlike
    ``loss.backward()`` it leaves every ``p.grad`` as it was. A layer called several times
    contributes the values of all its calls; a layer whose output does not reach the loss
    (or does not require grad) is left out.

    Args:
        model: any ``nn.Module``; called as ``model(x)`` in its current train/eval mode.
        x: the batch (a non-empty tensor of finite values).
        y: the targets, a tensor with one row per example of ``x``.
        loss_fn: ``loss_fn(output, y)`` returning a scalar tensor, e.g.
            ``torch.nn.functional.cross_entropy``.

    Returns:
        layer name -> flattened float64 ``np.ndarray`` of :math:`\partial L/\partial z^{(\ell)}`
        over the whole batch, input side first (the order the layers ran).

    Raises:
        TypeError: ``model`` not an ``nn.Module``; ``x`` or ``y`` not a tensor (or
            complex); ``loss_fn`` not callable, or not returning a tensor.
        ValueError: ``x`` empty, 0-dimensional or not finite; ``y`` 0-dimensional or with
            another number of rows than ``x``; ``loss_fn`` not returning a scalar; no layer
            output requires grad.
        ForwardError: the model could not take ``x``.

    Example::

        import torch
        from companion.diagnostics import backprop_gradients
        from companion.nets import mlp

        net = mlp(8, 3, width=16, depth=4, activation="tanh", seed=0)
        g = backprop_gradients(net, torch.randn(32, 8), torch.randint(0, 3, (32,)),
                               torch.nn.functional.cross_entropy)
        {name: v.std() for name, v in g.items()}        # fc1 .. out
    """
    model = _check.module("model", model)
    x = _check_batch("x", x)
    y = _check.tensor("y", y, floating=False, min_ndim=1)
    if y.is_complex():
        raise TypeError(f"y must have a real dtype, got {_check.show(y)}")
    if y.shape[0] != x.shape[0]:
        raise ValueError(f"y must have one row per example of x ({x.shape[0]}), got {_check.show(y)}")
    loss_fn = _check.function("loss_fn", loss_fn, "a callable loss_fn(output, y)")

    outputs: OrderedDict[str, list[Tensor]] = OrderedDict()

    def make_hook(name: str):
        def hook(module: nn.Module, inputs: Any, output: Any) -> None:
            ts = [t for t in _tensors(module, output) if t.requires_grad]
            if ts:
                outputs.setdefault(name, []).extend(ts)
        return hook

    handles = [m.register_forward_hook(make_hook(n)) for n, m in _layers(model)]
    try:
        with torch.enable_grad():
            loss = _check.scalar_loss("loss_fn", loss_fn(_call(model, x), y))
    finally:
        for h in handles:
            h.remove()
    flat = [(name, t) for name, ts in outputs.items() for t in ts]
    if not flat or not loss.requires_grad:
        raise ValueError("no layer output of model requires grad, so there is no backward "
                         "signal to read (are the parameters frozen, or is this under no_grad?)")
    grads = torch.autograd.grad(loss, [t for _, t in flat], allow_unused=True)
    values: OrderedDict[str, list[np.ndarray]] = OrderedDict()
    for (name, _), g in zip(flat, grads):
        if g is not None:    # dL/dz = g (a layer off the loss's path has none)
            values.setdefault(name, []).append(g.detach().double().flatten().cpu().numpy())
    return {name: np.concatenate(parts) for name, parts in values.items()}


class GradientHistogram(NamedTuple):
    """One layer's histogram of :math:`\\partial L/\\partial z^{(\\ell)}` (see
    :func:`gradient_histograms`): ``counts`` (bins,), ``edges`` (bins + 1,), and the
    ``std`` (population, ``ddof=0``) of the values counted."""

    counts: np.ndarray
    edges: np.ndarray
    std: float


def gradient_histograms(model: nn.Module, x: Any, y: Any,
                        loss_fn: Callable[[Any, Any], Tensor], *, bins: int = 50,
                        range: Optional[tuple[float, float]] = None) -> dict[str, GradientHistogram]:
    """Per-layer histograms of the backward signal, on one shared range.

    The values are those of :func:`backprop_gradients` (same arguments); every layer is
    counted on the same ``bins`` edges, so layers can be compared by width, as in
    Glorot & Bengio (2010), Figure 7. For a picture, pass :func:`backprop_gradients`'
    values to :func:`companion.plots.histograms`.

    Args:
        model, x, y, loss_fn: as :func:`backprop_gradients`.
        bins: number of bins, >= 1.
        range: ``(low, high)`` with low < high; default ``(-m, m)`` with ``m`` the largest
            absolute value over all layers (``(-1, 1)`` if every value is 0).

    Returns:
        layer name -> :class:`GradientHistogram`, input side first.

    Raises:
        TypeError: as :func:`backprop_gradients`; ``bins`` not an int; ``range`` not a
            pair of real numbers.
        ValueError: as :func:`backprop_gradients`; ``bins`` < 1; ``range`` not finite
            with low < high.
        ForwardError: the model could not take ``x``.
    """
    bins = _check.integer("bins", bins, minimum=1)
    if range is not None:
        low, high = _check.pair("range", range, _check.real)
        if not low < high:
            raise ValueError(f"range must be (low, high) with low < high, got {range!r}")
        range = (low, high)
    values = backprop_gradients(model, x, y, loss_fn)
    if range is None:
        m = max((float(np.abs(v).max()) for v in values.values() if v.size), default=0.0)
        range = (-m, m) if m > 0 else (-1.0, 1.0)
    out = {}
    for name, v in values.items():
        counts, edges = np.histogram(v, bins=bins, range=range)
        out[name] = GradientHistogram(counts, edges, float(v.std()))
    return out


# ------------------------------------------------------------------------ dead units
@torch.no_grad()
def dead_units(model: nn.Module, x: Any) -> dict[str, float]:
    """Fraction of dead units of each ReLU-family activation on the batch ``x``.

    Runs ``model(x)`` once under ``no_grad`` (in whatever train/eval mode the model is).
    Units are channels for convolution-shaped activations (N, C, H, W) -- dimension 1
    after a convolution or a channel norm, or of any 4- or 5-dimensional activation -- and
    features, the last dimension, for (N, F) and (N, T, F); every other dimension counts
    as an example. A unit is dead when, for every example of the batch,

    * ReLU / ReLU6: it outputs exactly 0 (its input is :math:`\\le 0`);
    * LeakyReLU / PReLU / RReLU: its input is :math:`< 0` (it sits on the small-slope
      side, passing only a fraction of the signal and of the gradient).

    Returns:
        label (``"act2 (after ReLU)"``) -> dead fraction in [0, 1], in forward order.

    Raises:
        TypeError: ``model`` is not an ``nn.Module``; ``x`` not a tensor, or complex.
        ValueError: ``x`` empty (every unit would count as dead), 0-dimensional, or
            with NaN or infinite values; ``model`` has no ReLU-family activation; an
            activation called with two numbers of units in one pass.
        ForwardError: the model could not take ``x`` (its own error,
            chained, with the name of the module that raised it).
    """
    model = _check.module("model", model)
    x = _check_batch("x", x)
    found = [(n, m) for n, m in _leaves(model) if isinstance(m, RELU_FAMILY)]
    if not found:
        names = ", ".join(t.__name__ for t in RELU_FAMILY)
        raise ValueError(f"model has no ReLU-family activation ({names}); nothing to report")
    dead: OrderedDict[str, Tensor] = OrderedDict()
    mismatch: list[str] = []
    producer: list[nn.Module] = []          # the layer that ran last (units: channels?)

    def ran(module: nn.Module, inputs: Any, output: Any) -> None:
        producer[:] = [module]

    def make_hook(name: str):
        def hook(module: nn.Module, inputs: Any, output: Tensor) -> None:
            call_dead, _ = _dead_per_unit(module, inputs[0], output,
                                          producer[0] if producer else None)   # (units,)
            label = _label(name, module)
            if label in dead and dead[label].shape != call_dead.shape:
                mismatch.append(f"{label} was called with {call_dead.numel()} and "
                                f"{dead[label].numel()} units in one forward pass")
                return
            dead[label] = dead[label] & call_dead if label in dead else call_dead
        return hook

    handles = [m.register_forward_hook(make_hook(n)) for n, m in found]
    handles += [m.register_forward_hook(ran) for _, m in _layers(model)]
    try:
        _call(model, x)
    finally:
        for h in handles:
            h.remove()
    if mismatch:
        raise ValueError(mismatch[0])
    return {label: d.double().mean().item() for label, d in dead.items()}


# ------------------------------------------------------------------- update ratios
def _update_ratios(before: Sequence[Tensor], after: Sequence[Tensor]) -> Tensor:
    r"""The update-to-weight ratio :math:`\lVert W_\text{after} - W_\text{before}\rVert_2 /
    \lVert W_\text{before}\rVert_2` of each pair, as a (k,) float64 tensor on the CPU.

    The one definition that :func:`update_ratios`, :func:`companion.train.train` and
    :mod:`companion.diagnose` (``diagnose`` and ``watch``) use: the change over the
    weight *before* the step; a zero ``W_before`` gives ``inf`` (NaN if it also did not
    move); a NaN weight, NaN. It is computed in the precision of the tensors given (half
    precision in float32, where a norm cannot overflow): ``train`` and ``watch`` measure
    the float32 weights of float32 training in float32, :func:`update_ratios` and
    ``diagnose`` pass float64 copies. One fused norm per list (on the CPU, the same
    values as ``torch.linalg.vector_norm`` one tensor at a time) and one synchronisation.
    """
    if not before:
        return torch.zeros(0, dtype=torch.float64)
    before = [_dense(w) for w in before]
    after = [_dense(w) for w in after]
    change = torch._foreach_norm(torch._foreach_sub(after, before))     # |W_after - W_before|
    size = torch._foreach_norm(before)                                  # |W_before|
    device = change[0].device
    return torch.stack([(c / s).double().to(device) for c, s in zip(change, size)]).cpu()


def snapshot_weights(model: nn.Module) -> dict[str, Tensor]:
    """Detached copies of every layer's weight (registration order), for :func:`update_ratios`.

    A layer's weight is ``weight``, else ``in_proj_weight`` (``nn.MultiheadAttention``),
    else its first parameter of two or more dimensions (``nn.LSTM``'s ``weight_ih_l0``):
    the rule of :func:`record` and :mod:`companion.diagnose`.

    Raises:
        TypeError: ``model`` is not an ``nn.Module``.
    """
    model = _check.module("model", model)
    return {name: w.detach().clone() for name, w in _layer_weights(model).items()}


def update_ratios(before: dict[str, Tensor], model: nn.Module) -> dict[str, float]:
    r"""Update-to-weight ratio per layer: :math:`\lVert W_{\text{after}} - W_{\text{before}}\rVert_2 / \lVert W_{\text{before}}\rVert_2`.

    ``before`` is what :func:`snapshot_weights` returned before the step(s) (or part of
    it). A ratio near ``1e-3`` per step is the usual rule of thumb; much larger means
    the step is wrecking the weights, much smaller that the layer barely learns. A zero
    ``W_before`` gives ``inf`` (or NaN if it also did not move); a NaN weight, NaN.
    Computed in float64. :func:`companion.train.train` (``track_update_ratios=True``)
    and :mod:`companion.diagnose` use the same definition and the same weights.

    Example::

        import torch
        from companion.diagnostics import snapshot_weights, update_ratios
        from companion.nets import mlp

        net = mlp(4, 1, width=8, depth=2, seed=0)
        opt = torch.optim.SGD(net.parameters(), lr=0.1)
        before = snapshot_weights(net)
        net(torch.randn(16, 4)).pow(2).mean().backward()
        opt.step()
        update_ratios(before, net)          # {'fc1': ..., 'fc2': ..., 'out': ...}

    Raises:
        TypeError: ``before`` is not a dict of floating-point tensors, ``model`` not a
            module.
        ValueError: a name in ``before`` that is not a layer with a weight of ``model``,
            or whose shape changed.
    """
    before = _check.mapping("before", before, nonempty=False)
    model = _check.module("model", model)
    current = _layer_weights(model)
    for name, w0 in before.items():
        _check.tensor(f"before[{name!r}]", w0, nonempty=False)
        if name not in current:
            raise ValueError(f"before has layer {name!r}, which model does not have; "
                             f"model's layers: {list(current)}")
        if current[name].shape != w0.shape:
            raise ValueError(f"before[{name!r}] has shape {tuple(w0.shape)}, but the weight "
                             f"of model's layer {name!r} has shape {tuple(current[name].shape)}")
    names = list(before)
    ratios = _update_ratios([before[n].double() for n in names],
                            [current[n].double().to(before[n].device) for n in names])
    return dict(zip(names, ratios.tolist()))
