"""Optimizers of the book, twice: pure update functions and drop-in ``torch.optim`` classes.

* Pure functions (numpy arrays or torch tensors in, new arrays out, state a NamedTuple)::

      state = adam_init(p)
      p, state = adam_update(p, g, state, lr=1e-3, betas=(0.9, 0.999))

  ``state=None`` starts from ``*_init(p)``; see :mod:`companion.optim._functional`.
* Classes with torch's names, arguments, defaults and state-dict keys:
  ``SGD, Adagrad, RMSprop, Adam, AdamW, NAdam`` (checked against ``torch.optim``) and
  ``SignSGD, Lion`` (no torch counterpart).
* Building blocks the chapter introduces first: :func:`ema`, :func:`bias_corrected`,
  :func:`decoupled_weight_decay`.

Every function and class checks its arguments where they enter (TypeError/ValueError naming
the argument): arrays of one kind and p's shape, states of the right NamedTuple,
hyperparameters in torch.optim's ranges. NaN gradients are never refused (a diverging run is
part of the book); complex parameters are refused except by SGD.

Example::

    import torch, companion.optim as co
    model = torch.nn.Linear(3, 1)
    opt = co.Adam(model.parameters(), lr=1e-3)        # or torch.optim.Adam: same arguments
"""
from ._classes import SGD, Adagrad, Adam, AdamW, Lion, NAdam, RMSprop, SignSGD
from ._functional import (AdagradState, AdamState, LionState, NAdamState, RMSpropState,
                          SGDState, SignSGDState, adagrad_init, adagrad_update, adam_init,
                          adam_update, adamw_init, adamw_update, lion_init, lion_update,
                          nadam_init, nadam_update, rmsprop_init, rmsprop_update, sgd_init,
                          sgd_update, signsgd_init, signsgd_update)
from ._helpers import bias_corrected, decoupled_weight_decay, ema

from . import _classes, _functional

__all__ = [*_classes.__all__, *_functional.__all__, "ema", "bias_corrected", "decoupled_weight_decay"]
