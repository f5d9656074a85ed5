"""Trained runs stacked on a leading axis: per-run parameters and distances.

:func:`jaxscape.train.train_many` returns the parameters and state of S runs
stacked on a leading axis. Measuring each run afterwards needs, per run, its
parameter pytree and an eval-mode :class:`~jaxscape.Objective` closing over
*that run's* state: ``Objective.from_stateful(apply, select(state, i), ...)``
with the architecture's cached ``apply`` (:func:`jaxscape.adapters.split`), so
jitted measurements compile once and are reused for every run.

Example:
  >>> import jax
  >>> import jaxscape as js
  >>> from jaxscape import data, models, runs, train
  >>> ds = data.load("synthetic", train_size=64, test_size=32, dim=4)
  >>> init = lambda k: models.build("mlp", k, in_features=4, widths=[8], out_features=3, batch_norm=True)
  >>> p, s, h = train.train_many(jax.random.split(jax.random.key(0), 2), init, ds,
  ...                            optimizer="adam", learning_rate=1e-2, batch_size=16, epochs=2)
  >>> apply = js.adapters.split(init(jax.random.key(0))).apply
  >>> obj = js.Objective.from_stateful(apply, runs.select(s, 1), data=ds.train, batch_size=1024)
  >>> loss, metrics = obj.loss(runs.select(p, 1))
  >>> bool(abs(float(loss) - float(h.train_loss[1, -1])) < 1e-5)
  True
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from . import tree as tree_lib

from .tree import PyTree

__all__ = ["num_runs", "select", "distances"]


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
