"""A model's first layer, split off so that a surface evaluates it once per direction.

:class:`FirstLayer` is the contract between a model adapter (which knows the
first layer; :func:`jaxscape.adapters.nnx.first_layer`) and
:meth:`jaxscape.Objective.grid_batch_sums` (which uses it). It lives apart from
both so that the adapters need not import the objective.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax

from .tree import PyTree

Apply = Callable[[PyTree, PyTree, jax.Array], jax.Array]

__all__ = ["FirstLayer"]

@dataclasses.dataclass(frozen=True)
class FirstLayer:
  """A model's first layer, split off so that a surface evaluates it once per direction, not once per point.

  The contract: for parameters ``p``, state ``s`` and inputs ``x``,
  ``apply(p, s, x) == rest(p, s, linear(select(p), x))``, and ``linear`` is
  *linear* (not merely affine) in the first-layer parameters jointly:
  ``Wx + b`` is linear in ``(W, b)``; a convolution with or without bias is
  too. The first layer must not read the model state (BatchNorm after it is
  fine: that is part of ``rest``). Then along a direction ``d``,
  ``linear(select(p + c d), x) = linear(select(p), x) + c linear(select(d), x)``.

  Instances should be hashable and compare equal when they describe the same
  computation (module-level functions or frozen dataclasses, not fresh
  lambdas), so that objectives of models that differ only in their weights
  share jit compilations.

  Attributes:
    select: ``params -> first-layer parameter subtree``.
    linear: ``(first_params, x) -> z``, the first layer's pre-activation.
    rest: ``(params, state, z) -> outputs``, the rest of the network.
    name: recorded by :meth:`Objective.describe`.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> rest = lambda p, s, z: jnp.tanh(z) @ p["out"]
    >>> fl = FirstLayer.dense(("hidden",), rest)
    >>> p = {"hidden": {"kernel": jnp.ones((3, 4)), "bias": jnp.zeros(4)}, "out": jnp.ones((4, 2))}
    >>> fl.linear(fl.select(p), jnp.ones((5, 3))).shape
    (5, 4)
  """

  select: Callable[[PyTree], PyTree]
  linear: Callable[[PyTree, jax.Array], jax.Array]
  rest: Apply
  name: str = "custom"

  @classmethod
  def dense(cls, path: tuple[Any, ...], rest: Apply, *, name: str | None = None) -> "FirstLayer":
    """A Dense first layer ``flatten(x) @ kernel + bias`` at ``params[path[0]][path[1]]...``.

    Args:
      path: keys from the parameter pytree's root to the dict holding
        ``kernel`` (``(in, out)``) and optionally ``bias``.
      rest: ``(params, state, z) -> outputs``.
      name: recorded name (default: the path joined by dots).
    """
    path = tuple(path)
    return cls.at(path, _dense_linear, rest, name or ".".join(str(k) for k in path))

  @classmethod
  def at(cls, path: tuple[Any, ...], linear: Callable[[PyTree, jax.Array], jax.Array], rest: Apply,
         name: str = "custom") -> "FirstLayer":
    """A first layer whose parameters are ``params[path[0]][path[1]]...`` (a hashable selector)."""
    return cls(_Select(tuple(path)), linear, rest, name)


@dataclasses.dataclass(frozen=True)
class _Select:
  """``params[path[0]][path[1]]...`` (a hashable, comparable selector)."""

  path: tuple[Any, ...]

  def __call__(self, params: PyTree) -> PyTree:
    for k in self.path:
      params = params[k]
    return params


def _dense_linear(first: PyTree, x: jax.Array) -> jax.Array:
  z = x.reshape(x.shape[0], -1) @ first["kernel"]
  return z + first["bias"][None] if first.get("bias") is not None else z

