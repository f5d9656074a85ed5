"""The ``flax.linen`` adapter: ``module.apply({"params": p, **rest}, x)`` as a pure, hashable apply.

Linen modules hold no arrays: pass the ``variables`` of ``module.init``.
``variables["params"]`` are the trainable parameters; every other collection
(``batch_stats``, ...) is state, closed over. The apply runs with
``mutable=False`` (BatchNorm reads its running statistics and never updates
them) and in eval mode: when the module's ``__call__`` takes
``deterministic``, ``use_running_average``, ``train``, ``training`` or
``is_training``, it is passed so that Dropout is off and BatchNorm uses its
running statistics. Modules that choose their mode otherwise (a field) must
be built in eval mode. Layout: Flax's (:data:`jaxscape.directions.flax_layout`).

Example:
  >>> import jax, jax.numpy as jnp
  >>> import flax.linen as nn
  >>> module = nn.Dense(2)
  >>> variables = module.init(jax.random.key(0), jnp.ones((1, 3)))
  >>> apply, params, state, layout = split(module, variables)
  >>> apply(params, state, jnp.ones((4, 3))).shape
  (4, 2)
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any

import jax

from ..tree import PyTree
from ._split import Split

__all__ = ["split", "eval_kwargs"]

_EVAL_ARGS = (("deterministic", True), ("use_running_average", True), ("train", False), ("training", False),
              ("is_training", False))


def eval_kwargs(module: Any) -> tuple[tuple[str, bool], ...]:
  """The eval-mode keyword arguments the module's ``__call__`` accepts (e.g. ``(("train", False),)``)."""
  params = inspect.signature(type(module).__call__).parameters
  return tuple((name, value) for name, value in _EVAL_ARGS if name in params)


@dataclasses.dataclass(frozen=True)
class _LinenApply:
  """``apply(params, state, x)`` of one linen module (hashable: modules are frozen dataclasses)."""

  module: Any
  kwargs: tuple[tuple[str, bool], ...]

  def __call__(self, params: PyTree, state: PyTree, x: jax.Array) -> jax.Array:
    return self.module.apply({"params": params, **state}, x, mutable=False, **dict(self.kwargs))


def split(module: Any, variables: PyTree) -> Split:
  """Splits a linen module and its variables into ``Split(apply, params, state, layout)``."""
  from flax.core import unfreeze

  from ..directions import flax_layout

  variables = unfreeze(variables)
  if "params" not in variables:
    raise ValueError(f"linen variables must hold a 'params' collection; got collections {sorted(variables)}")
  state = {k: v for k, v in variables.items() if k != "params"}
  return Split(_LinenApply(module, eval_kwargs(module)), variables["params"], state, flax_layout)
