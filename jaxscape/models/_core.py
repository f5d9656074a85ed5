"""Shared pieces of the model zoo: activations, parameter counts, FLOPs."""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from ..tree import PyTree

ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "relu": jax.nn.relu,
    "tanh": jnp.tanh,
    "sigmoid": jax.nn.sigmoid,
    "linear": lambda x: x,
    "identity": lambda x: x,
    "gelu": jax.nn.gelu,
    "softplus": jax.nn.softplus,
}
"""Named elementwise activations accepted by the models (``linear`` = identity)."""


def activation(name: str) -> Callable[[jax.Array], jax.Array]:
  """Looks up a named activation, with a clear error for unknown names."""
  if name not in ACTIVATIONS:
    raise ValueError(f"unknown activation {name!r}: expected one of {sorted(ACTIVATIONS)}")
  return ACTIVATIONS[name]


def count_params(params: PyTree) -> int:
  """Number of scalars in a parameter pytree (or an ``nnx.Module``'s ``nnx.Param`` variables).

  Example:
    >>> import jaxscape as js
    >>> model = js.models.build("mlp", 0, in_features=4, widths=[3], out_features=2)
    >>> js.models.count_params(model)   # 4*3+3 + 3*2+2
    23
  """
  from flax import nnx

  if isinstance(params, nnx.Module):
    params = nnx.state(params, nnx.Param)
  return int(sum(np.size(x) for x in jax.tree.leaves(params)))


def flops_per_example(apply: Callable, params: PyTree, state: PyTree, x_example: jax.typing.ArrayLike) -> float:
  """Forward-pass FLOPs for one example, from XLA's cost analysis.

  The apply function is lowered (not run) on a batch of one example and XLA's
  ``cost_analysis()`` is read; a multiply-add counts as 2 FLOPs. Convolutions
  with ``SAME`` padding count only the products that touch real pixels.

  Args:
    apply: ``apply(params, state, x) -> outputs`` (e.g. from :func:`jaxscape.adapters.split`).
    params, state: the model's parameters and state.
    x_example: one example, *without* a batch axis (e.g. ``(8, 8, 1)``).

  Returns:
    FLOPs as a float.

  Raises:
    RuntimeError: when the backend gives no cost analysis.
  """
  x = jnp.asarray(x_example)
  abstract_x = jax.ShapeDtypeStruct((1, *x.shape), x.dtype)
  cost = jax.jit(apply).lower(params, state, abstract_x).cost_analysis()
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else None
  if not cost or "flops" not in cost:
    raise RuntimeError(f"XLA gave no cost analysis for this model on {jax.default_backend()}: got {cost!r}")
  return float(cost["flops"])
