"""Trained runs stacked on a leading axis: per-run parameters, objectives, distances.

:func:`jaxscape.train.train_many` returns the parameters and state of S runs
stacked on a leading axis. Measuring each run afterwards (sharpness, Hessian
spectra, surfaces) needs, per run, its parameter pytree and an
:class:`~jaxscape.Objective` in eval mode that closes over *that run's*
non-trainable state (BatchNorm statistics). This module provides both without
recompiling per run: every objective of one model structure shares the same
static eval-mode ``apply`` (the cached pure function of
:func:`jaxscape.train.split_train`), and the run's state is a data field, so
jitted measurements compile once and are reused for every run.

Example:
  >>> import jax
  >>> from jaxscape import data, models, runs, train
  >>> ds = data.load("synthetic", train_size=64, test_size=32, dim=4)
  >>> init = lambda k: models.build("mlp", k, in_features=4, widths=[8], out_features=3)
  >>> p, s, h = train.train_many(jax.random.split(jax.random.key(0), 2), init, ds,
  ...                            optimizer="adam", learning_rate=1e-2, batch_size=16, epochs=2)
  >>> obj = runs.objective(init(jax.random.key(0)), ds.train, s, run=1)
  >>> loss, metrics = obj.loss(runs.select(p, 1))
  >>> bool(abs(float(loss) - float(h.train_loss[1, -1])) < 1e-5)
  True
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from . import tree as tree_lib
from .objective import Objective
from .train import split_train

from .tree import PyTree

__all__ = ["num_runs", "select", "objective", "distances"]


def num_runs(stacked: PyTree) -> int:
  """The length S of the leading run axis of a stacked pytree.

  Raises:
    ValueError: when the pytree has no leaves or its leaves disagree on S.
  """
  leaves = jax.tree.leaves(stacked)
  if not leaves:
    raise ValueError("a stacked pytree of runs needs at least one leaf with a leading run axis; got no leaves")
  sizes = {int(jnp.shape(a)[0]) if jnp.ndim(a) else -1 for a in leaves}
  if len(sizes) != 1 or -1 in sizes:
    raise ValueError(f"all leaves must share one leading run axis; got leading sizes {sorted(sizes)}")
  return sizes.pop()


def select(stacked: PyTree, run: int) -> PyTree:
  """Run ``run`` of a pytree stacked on a leading run axis (e.g. ``train_many``'s params).

  Raises:
    IndexError: when ``run`` is outside ``[-S, S)``.
  """
  s = num_runs(stacked)
  if not -s <= int(run) < s:
    raise IndexError(f"run {run} out of range for {s} stacked runs")
  return jax.tree.map(lambda a: a[int(run)], stacked)


def objective(model: Any, data: tuple[Any, Any], state: PyTree | None = None, *, run: int | None = None,
              loss: str = "cross_entropy", batch_size: int | None = 1024, name: str = "data") -> Objective:
  """Eval-mode full-data objective of one trained run, over its trainable parameters.

  Args:
    model: an ``nnx.Module`` with the run's architecture (any initialisation:
      only its structure is used, e.g. ``init(key)`` of ``train_many``).
    data: ``(x, y)`` arrays (e.g. ``ds.train`` or ``ds.test``).
    state: the non-trainable state (BatchNorm statistics, RNG counters) as a
      plain dict like :func:`jaxscape.train.split_train`'s; stacked over runs
      when ``run`` is given. ``None`` uses the model's own state.
    run: pick this run of a stacked ``state``.
    loss: loss name (see :data:`jaxscape.objective.LOSSES`).
    batch_size: examples per scanned batch of the full-data reduction.
    name: dataset name recorded in results.

  Returns:
    An :class:`~jaxscape.Objective` whose ``value(params)`` is the mean loss
    over all of ``data`` in eval mode with ``state`` closed over. Objectives of
    one architecture share their static fields, so jitted functions of them
    compile once across runs.
  """
  _, apply, _, own_state = split_train(model)
  if state is None:
    state = own_state
  elif run is not None:
    state = select(state, run) if jax.tree.leaves(state) else state
  shapes = lambda t: [tuple(jnp.shape(a)) for a in jax.tree.leaves(t)]  # noqa: E731
  if jax.tree.structure(state) != jax.tree.structure(own_state) or shapes(state) != shapes(own_state):
    raise ValueError(f"state does not match the model's state structure: got leaf shapes {shapes(state)} in "
                     f"{jax.tree.structure(state)}, expected {shapes(own_state)} (pass run= for stacked states)")
  base = Objective.from_apply(_unused_apply, data=data, loss=loss, batch_size=batch_size, name=name)
  info = base.info + (("bn_policy", "frozen"),)
  return dataclasses.replace(base, apply=apply, state=state, info=info)


def _unused_apply(params: PyTree, x: jax.Array) -> jax.Array:
  raise AssertionError("replaced by the model's eval-mode apply")  # pragma: no cover


def distances(a: PyTree, b: PyTree) -> jax.Array:
  """Per-run Euclidean distances ``||a_i - b_i||`` of two pytrees stacked over runs (``[S]``).

  ``b`` may also be one unstacked pytree (broadcast against every run of ``a``).
  """
  s = num_runs(a)
  if jax.tree.structure(a) != jax.tree.structure(b):
    raise ValueError(f"a and b must have the same tree structure; got {jax.tree.structure(a)} and {jax.tree.structure(b)}")
  b_stacked = all(jnp.ndim(x) == jnp.ndim(y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))
  if b_stacked and num_runs(b) != s:
    raise ValueError(f"a holds {s} runs but b holds {num_runs(b)}")
  return jax.vmap(lambda x, y: tree_lib.norm(tree_lib.sub(x, y)), in_axes=(0, 0 if b_stacked else None))(a, b)
