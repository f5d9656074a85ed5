"""Objectives with a parameter penalty: ``f(theta) = L(theta) + (weight_decay / 2) ||theta||^2``.

Critical-point studies of small networks need critical points at finite
parameters: with cross-entropy on (nearly) separable data the loss keeps
falling as the weights grow, so Newton-type searches on ``||grad f||^2`` drift
along ever flatter valleys instead of converging. An L2 penalty (the usual
weight decay) makes every sublevel set bounded. :func:`with_l2` returns an
ordinary :class:`~jaxscape.Objective` whose ``loss``/``value`` include the
penalty, so everything that takes an Objective (dense Hessians, critical-point
search, saddle-free Newton, surfaces) sees the regularised function; metrics
(accuracy) are those of the unregularised model.

The penalty is carried per example (every example's loss gets the same
``(weight_decay / 2) ||theta||^2``), so the exact ``1/N`` full-data mean and the
batch means both equal ``L + penalty``.

Example:
  >>> import jax.numpy as jnp, jaxscape as js
  >>> from jaxscape import regularize
  >>> obj = js.Objective.from_apply(lambda p, x: x @ p, data=(jnp.eye(2), jnp.zeros(2)), loss="mse")
  >>> reg = regularize.with_l2(obj, 0.5)
  >>> p = jnp.array([1.0, 2.0])
  >>> float(reg.value(p)), float(obj.value(p) + 0.25 * 5.0)
  (3.75, 3.75)
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp

from .objective import Objective

__all__ = ["with_l2", "l2_penalty"]


def l2_penalty(params: Any, weight_decay: float) -> jax.Array:
  """``(weight_decay / 2) * sum of squares of every leaf``."""
  return 0.5 * weight_decay * sum(jnp.sum(jnp.square(leaf)) for leaf in jax.tree.leaves(params))


@dataclasses.dataclass(frozen=True)
class _PenalisedApply:
  """``apply`` that also returns the penalty broadcast to the batch (hashable, so jit caches are shared)."""

  apply: Callable
  weight_decay: float

  def __call__(self, params, state, x):
    out = self.apply(params, state, x)
    pen = l2_penalty(params, self.weight_decay).astype(jnp.result_type(out))
    return out, jnp.broadcast_to(pen, (x.shape[0],))


@dataclasses.dataclass(frozen=True)
class _PenalisedLoss:
  per_example: Callable

  def __call__(self, outputs, targets):
    out, pen = outputs
    return self.per_example(out, targets) + pen


@dataclasses.dataclass(frozen=True)
class _OnOutputs:
  fn: Callable

  def __call__(self, outputs, targets):
    return self.fn(outputs[0], targets)


def with_l2(obj: Objective, weight_decay: float) -> Objective:
  """The objective ``obj.value(theta) + (weight_decay / 2) ||theta||^2``.

  Args:
    obj: any objective (its data, model state and metrics are kept).
    weight_decay: the penalty coefficient, ``>= 0``; its gradient is
      ``weight_decay * theta`` and it adds ``weight_decay`` to every Hessian
      eigenvalue.

  Returns:
    A new :class:`~jaxscape.Objective`; ``describe()`` records
    ``weight_decay``.
  """
  weight_decay = float(weight_decay)
  if not weight_decay >= 0:
    raise ValueError(f"weight_decay must be >= 0; got {weight_decay!r}")
  info = dict(obj.info)
  info["weight_decay"] = weight_decay
  return dataclasses.replace(
      obj, apply=_PenalisedApply(obj.apply, weight_decay), per_example=_PenalisedLoss(obj.per_example),
      metric_fns=tuple((name, _OnOutputs(fn)) for name, fn in obj.metric_fns), info=tuple(info.items()))
