"""One adapter per model library, each returning the same pure form.

``split(model)`` returns a :class:`Split`: a pure eval-mode
``apply(params, state, x) -> outputs`` (hashable, cached per model structure,
so equal models share one compiled function), the trainable ``params`` (a
pytree of arrays), the rest of the model's variables as ``state`` (BatchNorm
statistics, RNG state; closed over, never differentiated), and the
``layout``: a per-leaf rule saying which axes of each parameter index output
units and whether it is a bias or a normalisation parameter
(:class:`jaxscape.directions.LeafRule`), used by filter normalisation.

==========  ============================================  ==============================
library     call                                          eval mode
==========  ============================================  ==============================
flax.nnx    ``split(module)``                             ``nnx.view(deterministic=True,
                                                          use_running_average=True)``
flax.linen  ``split(module, variables)``                  ``mutable=False``, Dropout off,
                                                          ``batch_stats`` as state
equinox     ``split(model)`` (``pip install equinox``)    ``eqx.nn.inference_mode``
==========  ============================================  ==============================

A plain ``apply(params, x)`` needs no adapter: use
:meth:`jaxscape.Objective.from_apply`.

Example:
  >>> import jax.numpy as jnp, jaxscape as js
  >>> net = js.models.build("mlp", 0, in_features=3, widths=[4], out_features=2)
  >>> apply, params, state, layout = js.adapters.split(net)
  >>> apply(params, state, jnp.ones((5, 3))).shape
  (5, 2)
"""

from __future__ import annotations

import sys
from typing import Any, Callable

from ..tree import PyTree
from ._split import Split

__all__ = ["Split", "split", "library", "recompute_stats"]


def library(model: Any) -> str:
  """``"nnx"``, ``"linen"`` or ``"equinox"``: which adapter a model needs (``ValueError`` otherwise)."""
  from flax import nnx

  if isinstance(model, nnx.Module):
    return "nnx"
  linen = sys.modules.get("flax.linen")
  if linen is not None and isinstance(model, linen.Module):
    return "linen"
  eqx = sys.modules.get("equinox")
  if eqx is not None and isinstance(model, eqx.Module):
    return "equinox"
  raise ValueError(f"no adapter for a {type(model).__module__}.{type(model).__name__}: expected a flax.nnx Module, "
                   "a flax.linen Module (with its variables) or an equinox Module; for a plain function use "
                   "Objective.from_apply(apply(params, x), ...) or Objective.from_stateful(apply(params, state, x), ...)")


def split(model: Any, variables: PyTree | None = None) -> Split:
  """Splits a model of any supported library into a pure :class:`Split`.

  Args:
    model: a ``flax.nnx`` module, a ``flax.linen`` module or an ``equinox`` module.
    variables: the linen variables (``module.init(...)``); required for linen,
      not accepted for the others (their modules hold their arrays).

  Returns:
    ``Split(apply, params, state, layout)``.
  """
  lib = library(model)
  if lib == "linen":
    if variables is None:
      raise ValueError("a flax.linen module holds no arrays: pass its variables, split(module, module.init(key, x))")
    from . import linen

    return linen.split(model, variables)
  if variables is not None:
    raise ValueError(f"variables are only for flax.linen modules; a {lib} module holds its own arrays")
  if lib == "nnx":
    from . import nnx

    return nnx.split(model)
  from . import equinox

  return equinox.split(model)


def recompute_stats(model: Any, variables: PyTree | None = None) -> Callable:
  """The adapter's ``stats(params, state, xs) -> state`` (BatchNorm policy ``recompute``).

  Implemented for ``flax.nnx`` models (see :func:`jaxscape.adapters.nnx.recompute_stats`).
  For other models pass your own ``recompute_stats`` to
  :meth:`jaxscape.Objective.from_stateful`.
  """
  lib = library(model)
  if lib != "nnx":
    raise ValueError(f"bn_policy='recompute' is implemented for flax.nnx models, not {lib}: pass "
                     "recompute_stats=stats(params, state, xs) -> state to Objective.from_stateful")
  from . import nnx

  return nnx.recompute_stats(model)
