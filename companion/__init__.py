"""Companion package of *Training deep networks that actually train*.

Import the part you need; each module is small and documented:

- :mod:`companion.activations` -- activation functions and their derivatives (numpy and torch)
- :mod:`companion.init` -- ``torch.nn.init``-style initializers (also fill numpy arrays)
- :mod:`companion.nets` -- the book's networks: :func:`~companion.nets.mlp`, a simple RNN
- :mod:`companion.diagnostics` -- per-layer gradient and activation recording, dead units,
  back-propagated gradients and their histograms
- :mod:`companion.curvature` -- Hessian-vector products and the largest Hessian eigenvalue of
  a loss (power iteration)
- :mod:`companion.scratch` -- a NumPy MLP with hand-written backpropagation
- :mod:`companion.norm` -- batch, layer, RMS and group norm: pure functions with hand-written
  backward passes, and drop-in replacements for torch's layers
- :mod:`companion.clip` -- gradient clipping by value, by norm and adaptive (AGC), with
  ``torch.nn.utils``' in-place API
- :mod:`companion.residual` -- residual MLPs with their plain twins, ReZero/SkipInit, Fixup,
  the gradient split by path length, a small transformer of torch's own layers
- :mod:`companion.parallel` -- small ``DistributedDataParallel`` runs (gloo, CPU) for the
  clipping experiments
- :mod:`companion.optim` -- optimizers as pure update functions and ``torch.optim`` classes
- :mod:`companion.precision` -- float16/bfloat16 facts computed from the bits, the fraction
  of values a format loses (underflow, overflow, rounding away), dynamic loss scaling with
  ``torch.amp.GradScaler``'s interface, float32 master weights and stochastic rounding
- :mod:`companion.surfaces` -- 2-D test functions and a trajectory runner
- :mod:`companion.data`, :mod:`companion.train`, :mod:`companion.plots` -- synthetic data,
  a training loop that reports divergence, the book's plots
- :mod:`companion.diagnose` -- one call that diagnoses any PyTorch model (vanishing, exploding,
  dead and saturated units, non-finite values, initial loss, update ratios) and a ``watch``
  for training loops; :mod:`companion.report` -- its report; :mod:`companion.symptoms` --
  the symptom table, thresholds and findings that both share
- :mod:`companion.gallery` -- broken training runs, one per failure of the book, with fixes
- :mod:`companion.explore` -- experiments that are live widgets in a notebook and
  precomputed frames in the built book (its controls, static HTML, live views and
  rasterizing live in ``_controls``, ``_static``, ``_live`` and ``_raster``)
"""
__version__ = "0.1.0"

# Too old a torch, numpy or matplotlib: one line saying what to upgrade (an ImportError),
# not an AttributeError in the middle of a chapter.
from . import _requirements

_requirements.check()
