"""The ``equinox`` adapter (optional: ``pip install jaxscape[equinox]``).

The model is put in inference mode (``eqx.nn.inference_mode``: Dropout off)
and partitioned: its inexact (floating) arrays are the trainable parameters,
its other arrays the state, everything else (activation functions, sizes) is
static and makes the apply hashable, so equal architectures share one
compiled function. Equinox models take one example: the apply ``vmap``-s the
model over the batch. Stateful layers (``eqx.nn.BatchNorm`` with
``eqx.nn.State``) are not supported.

Layout (:func:`layout` of a model): ``Linear.weight`` is ``(out, in)`` and
``Conv`` weights ``(out, in, *kernel)``, so a filter is a slice along the
*first* axis; ``Embedding.weight`` is per row (token); biases have role
``bias``; ``LayerNorm`` / ``GroupNorm`` / ``RMSNorm`` / ``BatchNorm`` weights
and biases role ``norm``. Any other leaf is not covered: filter
normalisation raises and asks for a rule (``filter_axes=``).

Example:
  >>> import jax, jax.numpy as jnp, equinox as eqx
  >>> model = eqx.nn.Linear(3, 2, key=jax.random.key(0))
  >>> apply, params, state, layout = split(model)
  >>> apply(params, state, jnp.ones((4, 3))).shape
  (4, 2)
  >>> layout("weight", params.weight)
  LeafRule(out_axes=(0,), role='weight')
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax

from ..directions import LeafRule
from ..tree import PyTree, path_name
from ._split import Split

__all__ = ["split", "layout"]


@dataclasses.dataclass(frozen=True)
class _EqxApply:
  """``apply(params, state, x)``: combine, then the model ``vmap``-ed over the batch."""

  treedef: Any
  static_leaves: tuple[Any, ...]

  def __call__(self, params: PyTree, state: PyTree, x: jax.Array) -> jax.Array:
    import equinox as eqx

    static = jax.tree.unflatten(self.treedef, self.static_leaves)
    model = eqx.combine(params, state, static)
    return jax.vmap(model)(x)


@dataclasses.dataclass(frozen=True)
class _EqxLayout:
  """A per-path table of :class:`~jaxscape.directions.LeafRule` (hashable)."""

  rules: tuple[tuple[str, LeafRule], ...]

  def __call__(self, path: str, leaf: Any) -> LeafRule | None:
    return dict(self.rules).get(path)


def layout(model: Any) -> _EqxLayout:
  """The per-leaf rules of an equinox model's known layers (see the module doc)."""
  import equinox as eqx

  weights = (eqx.nn.Linear, eqx.nn.Conv, eqx.nn.ConvTranspose, eqx.nn.Embedding)
  norms = tuple(getattr(eqx.nn, n) for n in ("LayerNorm", "GroupNorm", "RMSNorm", "BatchNorm") if hasattr(eqx.nn, n))
  found = jax.tree_util.tree_flatten_with_path(model, is_leaf=lambda m: isinstance(m, weights + norms))[0]
  rules = []
  for path, m in found:
    prefix = path_name(path)
    join = (lambda name: f"{prefix}/{name}") if prefix else (lambda name: name)
    if isinstance(m, weights):
      rules.append((join("weight"), LeafRule((0,), "weight")))
      rules.append((join("bias"), LeafRule((), "bias")))
    elif isinstance(m, norms):
      rules.append((join("weight"), LeafRule((), "norm")))
      rules.append((join("bias"), LeafRule((), "norm")))
  return _EqxLayout(tuple(rules))


def split(model: Any) -> Split:
  """Splits an equinox model into ``Split(apply, params, state, layout)`` in inference mode."""
  import equinox as eqx


  model = eqx.nn.inference_mode(model, True)
  params, rest = eqx.partition(model, eqx.is_inexact_array)
  state, static = eqx.partition(rest, eqx.is_array)
  leaves, treedef = jax.tree.flatten(static)
  return Split(_EqxApply(treedef, tuple(leaves)), params, state, layout(params))
