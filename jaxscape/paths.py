"""Paths between solutions: straight lines, barriers, permutations, curves.

* :func:`interpolate` evaluates the loss and metrics along the line
  ``theta(alpha) = (1 - alpha) theta_a + alpha theta_b``: Goodfellow et al.
  (2015) from initialisation to solution (monotone for feed-forward nets) and
  between two solutions (a barrier); Keskar et al. (2017) from a small-batch to
  a large-batch solution with ``alpha`` in ``[-1, 2]``. All ``alpha`` are
  evaluated at once under ``vmap`` (optionally in chunks).
* :func:`barrier` and :func:`is_monotone` summarise such a path.
* :func:`permute_hidden_units` reorders hidden units, a symmetry of the
  network: the loss is unchanged while the parameters move, so the permuted
  copy is a second, equivalent minimum (the "equal minima" of Choromanska et
  al. 2015; Entezari et al. 2022).
* :func:`align` (weight matching, Ainsworth et al. 2023) permutes a second
  solution's hidden units to lie as close as possible to the first, so that
  the barrier between them can be measured modulo that symmetry
  (:func:`aligned_barriers` for pairs of trained runs).
* Bezier and polygonal-chain curves with trainable bends (Garipov et al.
  2018): :func:`bezier_point`, :func:`polychain_point`, :func:`train_curve`
  (minimises the loss averaged over ``t ~ U(0, 1)`` with Adam) and
  :func:`curve_losses`.

References:
  Goodfellow, Vinyals, Saxe. Qualitatively characterizing neural network
  optimization problems. ICLR 2015.
  Keskar, Mudigere, Nocedal, Smelyanskiy, Tang. On large-batch training for
  deep learning: generalization gap and sharp minima. ICLR 2017.
  Garipov, Izmailov, Podoprikhin, Vetrov, Wilson. Loss surfaces, mode
  connectivity, and fast ensembling of DNNs. NeurIPS 2018.
  Draxler, Veschgini, Salmhofer, Hamprecht. Essentially no barriers in neural
  network energy landscape. ICML 2018.
  Entezari, Sedghi, Saukh, Neyshabur. The role of permutation invariance in
  linear mode connectivity of neural networks. ICLR 2022.
  Ainsworth, Hayase, Srinivasa. Git Re-Basin: merging models modulo
  permutation symmetries. ICLR 2023.

Example:
  >>> import jax.numpy as jnp, jaxscape as js
  >>> from jaxscape import paths
  >>> apply = lambda p, x: x @ p
  >>> obj = js.Objective.from_apply(apply, data=(jnp.eye(2), jnp.zeros(2)), loss="mse")
  >>> line = paths.interpolate(obj, jnp.array([1.0, 0.0]), jnp.array([0.0, 1.0]), jnp.linspace(0, 1, 3))
  >>> line.losses.tolist()   # mean of squared coordinates along the segment
  [0.5, 0.25, 0.5]
  >>> float(paths.barrier(line.losses, line.coords).height)
  0.0
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from scipy.optimize import linear_sum_assignment

from . import tree
from .objective import Objective

from .tree import PyTree

__all__ = [
    "CURVE_KINDS",
    "PathLosses",
    "Barrier",
    "Curve",
    "CurveFit",
    "lerp",
    "interpolate",
    "barrier",
    "is_monotone",
    "permute_hidden_units",
    "shuffle_hidden_units",
    "hidden_unit_copies",
    "copy_barriers",
    "dense_layer_paths",
    "Alignment",
    "weight_matching",
    "align",
    "PairBarriers",
    "aligned_barriers",
    "bezier_point",
    "polychain_point",
    "init_curve",
    "train_curve",
    "curve_losses",
]

CURVE_KINDS = ("bezier", "polychain")
"""Curve parametrisations of Garipov et al. (2018)."""


def _register(cls, data, meta=()):
  jax.tree_util.register_dataclass(cls, data_fields=list(data), meta_fields=list(meta))
  return cls


@dataclasses.dataclass(frozen=True)
class PathLosses:
  """Loss and metrics along a path.

  Attributes:
    coords: ``[m]`` path coordinates (``alpha`` of a line, ``t`` of a curve).
    losses: ``[m]`` full-data losses.
    metrics: ``{name: [m]}`` full-data metrics (e.g. accuracy).
  """

  coords: jax.Array
  losses: jax.Array
  metrics: dict[str, jax.Array]


_register(PathLosses, ("coords", "losses", "metrics"))


def _coords(values: jax.typing.ArrayLike, name: str) -> jax.Array:
  arr = jnp.asarray(values)
  if arr.ndim != 1 or arr.shape[0] == 0:
    raise ValueError(f"{name} must be a non-empty 1-D array; got shape {arr.shape}")
  if not jnp.issubdtype(arr.dtype, jnp.floating):
    arr = arr.astype(jnp.float32)
  return arr


def lerp(params_a: PyTree, params_b: PyTree, alpha: jax.typing.ArrayLike) -> PyTree:
  """``(1 - alpha) params_a + alpha params_b`` leaf by leaf, in ``params_a``'s dtypes."""
  return jax.tree.map(lambda a, b: (a + alpha * (b - a)).astype(a.dtype), params_a, params_b)


def _map(fn, xs, chunk_size):
  if chunk_size is None:
    return jax.vmap(fn)(xs)
  return jax.lax.map(fn, xs, batch_size=chunk_size)


@functools.partial(jax.jit, static_argnames=("chunk_size",))
def _interpolate(obj, a, b, alphas, chunk_size):
  return _map(lambda alpha: obj.loss(lerp(a, b, alpha)), alphas, chunk_size)


def _check_chunk(chunk_size):
  if chunk_size is not None and (not isinstance(chunk_size, int) or chunk_size < 1):
    raise ValueError(f"chunk_size must be a positive int or None; got {chunk_size!r}")


def interpolate(
    obj: Objective,
    params_a: PyTree,
    params_b: PyTree,
    alphas: jax.typing.ArrayLike,
    *,
    chunk_size: int | None = None,
) -> PathLosses:
  """Full-data loss and metrics along ``theta(alpha) = (1 - alpha) theta_a + alpha theta_b``.

  ``alpha`` may leave ``[0, 1]`` (Keskar et al. 2017 plot ``[-1, 2]``). All
  points are evaluated under one ``vmap`` (memory: ``len(alphas)`` models'
  activations per batch); ``chunk_size`` bounds that by mapping over chunks.

  Args:
    obj: the objective.
    params_a: ``theta(0)``, e.g. the initialisation.
    params_b: ``theta(1)``, e.g. the trained solution.
    alphas: ``[m]`` interpolation coefficients.
    chunk_size: evaluate this many ``alpha`` at once (``None``: all).

  Returns:
    :class:`PathLosses` with ``coords = alphas``.

  Example:
    >>> import jax.numpy as jnp, jaxscape as js
    >>> obj = js.Objective.from_apply(lambda p, x: x @ p, data=(jnp.eye(2), jnp.zeros(2)), loss="mse")
    >>> interpolate(obj, jnp.zeros(2), jnp.ones(2), jnp.array([-1.0, 2.0])).losses.tolist()
    [1.0, 4.0]
  """
  tree.check_same_structure(params_a, params_b, "params_a and params_b")
  _check_chunk(chunk_size)
  alphas = _coords(alphas, "alphas")
  losses, metrics = _interpolate(obj, params_a, params_b, alphas, chunk_size)
  return PathLosses(alphas, losses, metrics)


@dataclasses.dataclass(frozen=True)
class Barrier:
  """Barrier of a path between two endpoints (``coord`` 0 and 1).

  Attributes:
    height: ``max_{0<=a<=1} L(a) - max(L(0), L(1))`` (Garipov et al. 2018,
      Draxler et al. 2018; 0 when no point is above the higher end).
    alpha: where that maximum is.
    linear_height: ``max_{0<=a<=1} [L(a) - ((1 - a) L(0) + a L(1))]``, the
      excess over the chord (Frankle et al. 2020; Entezari et al. 2022).
    linear_alpha: where that maximum is.
    loss_a: ``L(0)``.
    loss_b: ``L(1)``.
  """

  height: jax.Array
  alpha: jax.Array
  linear_height: jax.Array
  linear_alpha: jax.Array
  loss_a: jax.Array
  loss_b: jax.Array


_register(Barrier, ("height", "alpha", "linear_height", "linear_alpha", "loss_a", "loss_b"))


def _is_concrete(x) -> bool:
  return not isinstance(x, jax.core.Tracer)


def barrier(losses: jax.typing.ArrayLike, alphas: jax.typing.ArrayLike) -> Barrier:
  """Barrier height of a loss profile between its endpoints ``alpha = 0`` and ``1``.

  Only samples with ``0 <= alpha <= 1`` count; ``L(0)`` and ``L(1)`` are read
  off the profile (linearly interpolated if 0 or 1 falls between samples).
  Pure ``jnp``: works under ``jit`` and ``vmap`` (e.g. over seed pairs).

  Args:
    losses: ``[m]`` losses along the path.
    alphas: ``[m]`` ascending coordinates covering ``[0, 1]``.

  Returns:
    A :class:`Barrier`.

  Example:
    >>> import jax.numpy as jnp
    >>> b = barrier(jnp.array([1.0, 3.0, 2.0]), jnp.array([0.0, 0.5, 1.0]))
    >>> float(b.height), float(b.alpha), float(b.linear_height)
    (1.0, 0.5, 1.5)
  """
  losses = jnp.asarray(losses)
  alphas = _coords(alphas, "alphas")
  if losses.shape != alphas.shape:
    raise ValueError(f"losses and alphas must have the same shape [m]; got {losses.shape} and {alphas.shape}")
  if _is_concrete(alphas):
    a = np.asarray(alphas)
    if np.any(np.diff(a) <= 0) or a[0] > 0 or a[-1] < 1:
      raise ValueError(f"alphas must be strictly ascending and cover [0, 1]; got range [{a[0]}, {a[-1]}]"
                       + (" (not ascending)" if np.any(np.diff(a) <= 0) else ""))
  return _barrier(losses, alphas)


@jax.jit
def _barrier(losses: jax.Array, alphas: jax.Array) -> Barrier:
  l0 = jnp.interp(0.0, alphas, losses)
  l1 = jnp.interp(1.0, alphas, losses)
  inside = (alphas >= 0) & (alphas <= 1)
  masked = jnp.where(inside, losses, -jnp.inf)
  i = jnp.argmax(masked)
  chord = jnp.where(inside, losses - ((1 - alphas) * l0 + alphas * l1), -jnp.inf)
  j = jnp.argmax(chord)
  return Barrier(height=masked[i] - jnp.maximum(l0, l1), alpha=alphas[i], linear_height=chord[j],
                 linear_alpha=alphas[j], loss_a=l0, loss_b=l1)


def is_monotone(losses: jax.typing.ArrayLike, tol: float = 0.0, direction: str = "decreasing") -> jax.Array:
  """Whether a loss profile is monotone along the path, up to ``tol``.

  Goodfellow et al. (2015): the loss from initialisation (``alpha = 0``) to an
  SGD solution (``alpha = 1``) typically decreases monotonically.

  Args:
    losses: ``[m]`` losses in path order.
    tol: largest allowed step against the direction (absolute), e.g. for
      float32 noise.
    direction: ``"decreasing"`` (every ``L[i+1] <= L[i] + tol``),
      ``"increasing"`` or ``"either"``.

  Returns:
    A boolean scalar array.

  Example:
    >>> import jax.numpy as jnp
    >>> bool(is_monotone(jnp.array([3.0, 2.0, 2.0001, 1.0]), tol=1e-3))
    True
  """
  losses = jnp.asarray(losses)
  if losses.ndim != 1:
    raise ValueError(f"losses must be a 1-D array; got shape {losses.shape}")
  d = jnp.diff(losses)
  down, up = jnp.all(d <= tol), jnp.all(d >= -tol)
  if direction == "decreasing":
    return down
  if direction == "increasing":
    return up
  if direction == "either":
    return down | up
  raise ValueError(f"direction must be 'decreasing', 'increasing' or 'either'; got {direction!r}")


# -------------------------------------------------------------- permutations
def dense_layer_paths(layer: str, next_layer: str, *, kernel: str = "kernel",
                      bias: str | None = "bias") -> tuple[tuple[str, ...], tuple[str, ...]]:
  """Leaf paths of a Dense layer's output units and of the next layer's inputs.

  For Flax-layout parameter dicts ``{layer: {"kernel": (in, out), "bias":
  (out,)}, ...}``: returns ``((f"{layer}/kernel", f"{layer}/bias"),
  (f"{next_layer}/kernel",))``, the arguments of :func:`permute_hidden_units`.

  Example:
    >>> dense_layer_paths("layers_0", "layers_1")
    (('layers_0/kernel', 'layers_0/bias'), ('layers_1/kernel',))
  """
  outs = (f"{layer}/{kernel}",) + ((f"{layer}/{bias}",) if bias is not None else ())
  return outs, (f"{next_layer}/{kernel}",)


def permute_hidden_units(params: PyTree, perm: jax.typing.ArrayLike, out_paths: Sequence[str],
                         in_paths: Sequence[str]) -> PyTree:
  """Permutes one layer's hidden units; the network's function is unchanged.

  Unit ``perm[j]`` of the original becomes unit ``j``: every leaf named in
  ``out_paths`` is re-indexed along its *last* axis (a Dense kernel
  ``(in, out)``, its bias ``(out,)``, a Conv kernel HWIO, LayerNorm/BatchNorm
  scale and bias), and every leaf in ``in_paths`` along its second-to-last
  axis (the next Dense kernel's ``in`` axis, or a Conv kernel's ``I``).
  Paths are the ``/``-joined leaf names of :func:`jaxscape.tree.leaf_names`,
  so any naming scheme works. BatchNorm running statistics live in the model
  state, not in ``params``: permute them the same way (as ``out_paths`` of the
  state) when the model has them.

  Args:
    params: parameter pytree.
    perm: ``[h]`` permutation of ``range(h)``, ``h`` the number of units.
    out_paths: leaves whose last axis indexes the units.
    in_paths: leaves whose second-to-last axis indexes the units.

  Returns:
    The permuted parameters (same structure, shapes and dtypes).

  Example:
    >>> import jax.numpy as jnp
    >>> p = {"l0": {"kernel": jnp.array([[1.0, 2.0]]), "bias": jnp.array([0.1, 0.2])},
    ...      "l1": {"kernel": jnp.array([[3.0], [4.0]]), "bias": jnp.array([0.0])}}
    >>> q = permute_hidden_units(p, jnp.array([1, 0]), *dense_layer_paths("l0", "l1"))
    >>> q["l0"]["kernel"].tolist(), q["l1"]["kernel"].tolist()
    ([[2.0, 1.0]], [[4.0], [3.0]])
  """
  perm = jnp.asarray(perm)
  if perm.ndim != 1 or not jnp.issubdtype(perm.dtype, jnp.integer):
    raise ValueError(f"perm must be a 1-D integer array; got shape {perm.shape} dtype {perm.dtype}")
  h = perm.shape[0]
  if _is_concrete(perm) and not np.array_equal(np.sort(np.asarray(perm)), np.arange(h)):
    raise ValueError(f"perm must be a permutation of range({h}); got {np.asarray(perm).tolist()}")
  if isinstance(out_paths, str) or isinstance(in_paths, str):
    raise ValueError("out_paths and in_paths must be sequences of leaf paths, not single strings")
  if not out_paths:
    raise ValueError("out_paths is empty: name at least the layer's kernel")
  names = tree.leaf_names(params)
  leaves, treedef = jax.tree.flatten(params)
  where = {name: i for i, name in enumerate(names)}
  for path, axis in [(p, -1) for p in out_paths] + [(p, -2) for p in in_paths]:
    if path not in where:
      raise ValueError(f"no leaf named {path!r} in params; leaves are {names}")
    i = where[path]
    leaf = leaves[i]
    if leaf.ndim < -axis or leaf.shape[axis] != h:
      raise ValueError(f"leaf {path!r} with shape {leaf.shape} has no axis {axis} of size {h} (the number of "
                       f"units in perm)")
    leaves[i] = jnp.take(leaf, perm, axis=axis)
  return jax.tree.unflatten(treedef, leaves)


def shuffle_hidden_units(key: jax.Array, params: PyTree, layers: Sequence[str], *, kernel: str = "kernel",
                         bias: str | None = "bias") -> PyTree:
  """Permutes the hidden units of a chain of Dense layers, each by an independent random permutation.

  The units between ``layers[i]`` and ``layers[i + 1]`` are permuted by
  ``jax.random.permutation(fold_in(key, i), h)`` (:func:`permute_hidden_units`
  with :func:`dense_layer_paths`), so the network computes the same function
  at a different point in parameter space (Goodfellow et al. 2015; Entezari
  et al. 2022).

  Args:
    key: ``jax.random`` key.
    params: Flax-layout parameters.
    layers: ``/``-joined paths of the Dense layers, input to output, e.g.
      ``["layers/0", "layers/1", "head"]`` for :class:`jaxscape.models.MLP`.
    kernel, bias: leaf names inside each layer (``bias=None``: no biases).

  Returns:
    The permuted parameters.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> p = {"l0": {"kernel": jnp.arange(3.0)[None]}, "l1": {"kernel": jnp.arange(3.0)[:, None]}}
    >>> q = shuffle_hidden_units(jax.random.key(0), p, ["l0", "l1"], bias=None)
    >>> bool(jnp.all(q["l0"]["kernel"][0] == q["l1"]["kernel"][:, 0]))
    True
  """
  leaves = dict(zip(tree.leaf_names(params), jax.tree.leaves(params)))
  for i, (layer, nxt) in enumerate(zip(layers[:-1], layers[1:])):
    name = f"{layer}/{kernel}"
    if name not in leaves:
      raise ValueError(f"no leaf named {name!r} in params; leaves are {list(leaves)}")
    perm = jax.random.permutation(jax.random.fold_in(key, i), leaves[name].shape[-1])
    params = permute_hidden_units(params, perm, *dense_layer_paths(layer, nxt, kernel=kernel, bias=bias))
  return params


def hidden_unit_copies(params: PyTree, layer: str, next_layer: str, *, kernel: str = "kernel",
                       bias: str | None = "bias") -> list[PyTree]:
  """The ``h! - 1`` other orders of one Dense layer's ``h`` hidden units: copies of a point at the same loss.

  Permutation ``perm`` (every one of ``itertools.permutations(range(h))`` but the identity, in that order) is
  applied by :func:`permute_hidden_units` with :func:`dense_layer_paths`; meant for small layers (``h!`` grows fast).

  Args:
    params: Flax-layout parameters.
    layer, next_layer: ``/``-joined paths of the layer whose units are permuted and of the layer they feed.
    kernel, bias: leaf names inside each layer (``bias=None``: no biases).

  Returns:
    ``h! - 1`` parameter pytrees.

  Example:
    >>> import jax.numpy as jnp
    >>> p = {"l0": {"kernel": jnp.array([[1.0, 2.0]])}, "l1": {"kernel": jnp.array([[3.0], [4.0]])}}
    >>> [q["l0"]["kernel"].tolist() for q in hidden_unit_copies(p, "l0", "l1", bias=None)]
    [[[2.0, 1.0]]]
  """
  leaves = dict(zip(tree.leaf_names(params), jax.tree.leaves(params)))
  name = f"{layer}/{kernel}"
  if name not in leaves:
    raise ValueError(f"no leaf named {name!r} in params; leaves are {list(leaves)}")
  h, paths = leaves[name].shape[-1], dense_layer_paths(layer, next_layer, kernel=kernel, bias=bias)
  return [permute_hidden_units(params, jnp.array(perm), *paths) for perm in itertools.permutations(range(h))
          if perm != tuple(range(h))]


def copy_barriers(obj: Objective, params: PyTree, copies: Sequence[PyTree], alphas: jax.typing.ArrayLike, *,
                  loss: float | None = None) -> np.ndarray:
  """How far each copy of a point (e.g. :func:`hidden_unit_copies`) is, and the barrier on the line to it.

  Args:
    obj: the objective.
    params: the point ``theta``.
    copies: points ``theta'`` expected at the same loss.
    alphas: coordinates of the straight line ``theta -> theta'`` (:func:`interpolate`), covering ``[0, 1]``.
    loss: ``L(theta)`` when already known (e.g. from the search that found ``theta``); ``None``: evaluated.

  Returns:
    ``[len(copies), 4]`` float64: ``|L(theta') - L| / L``, ``||theta' - theta|| / ||theta||``, the barrier height
    (:func:`barrier`) and the height over ``L``, one row per copy.

  Example:
    >>> import jax.numpy as jnp, jaxscape as js
    >>> obj = js.Objective.from_apply(lambda p, x: x @ p, data=(jnp.eye(2), jnp.ones(2)), loss="mse")
    >>> copy_barriers(obj, jnp.array([2.0, 0.0]), [jnp.array([0.0, 2.0])], jnp.linspace(0.0, 1.0, 3)).tolist()
    [[0.0, 1.4142135381698608, 0.0, 0.0]]
  """
  alphas = _coords(alphas, "alphas")
  ref = float(obj.value(params)) if loss is None else float(loss)
  rows = []
  for q in copies:
    tree.check_same_structure(params, q, "params and each copy")
    dist = float(tree.norm(tree.sub(q, params)) / tree.norm(params))
    height = float(barrier(interpolate(obj, params, q, alphas).losses, alphas).height)
    rows.append((abs(float(obj.value(q)) - ref) / ref, dist, height, height / ref))
  return np.array(rows, np.float64).reshape(len(rows), 4)


# ------------------------------------------------------------ weight matching
@dataclasses.dataclass(frozen=True)
class Alignment:
  """Result of :func:`weight_matching` and :func:`align`.

  Attributes:
    params: ``params_b`` with its hidden units permuted to match ``params_a``;
      it computes the same function as ``params_b``.
    perms: one ``[h]`` integer array per unit group, in the convention of
      :func:`permute_hidden_units` (unit ``perms[g][j]`` of ``params_b``
      became unit ``j``).
    objective: ``[steps + 1]`` float64 values of ``<theta_a, pi theta_b>``
      (all leaves) before the first and after every coordinate step; never
      decreasing. Maximising it minimises ``||theta_a - pi theta_b||``.
    sweeps: number of sweeps over the groups.
    converged: the last sweep changed no permutation, so no single group's
      permutation can raise the objective (a coordinate-wise optimum, not
      necessarily the global one); ``False`` when ``max_sweeps`` ran out first.
  """

  params: PyTree
  perms: tuple[np.ndarray, ...]
  objective: np.ndarray
  sweeps: int
  converged: bool


def _unit_axes(groups: Sequence[tuple[Sequence[str], Sequence[str]]], names: list[str]) -> list[list[tuple[str, int]]]:
  """``[(leaf, axis), ...]`` per group; each leaf axis may belong to one group only."""
  if isinstance(groups, str) or not groups:
    raise ValueError("groups is empty: name at least one layer of units as (out_paths, in_paths)")
  owner, axes = {}, []
  for g, group in enumerate(groups):
    if isinstance(group, str) or len(group) != 2 or isinstance(group[0], str) or isinstance(group[1], str) \
        or not group[0]:
      raise ValueError(f"group {g} must be a pair (out_paths, in_paths) of sequences of leaf paths, out_paths "
                       f"non-empty; got {group!r}")
    axes.append([(p, -1) for p in group[0]] + [(p, -2) for p in group[1]])
    for path, axis in axes[-1]:
      if path not in names:
        raise ValueError(f"no leaf named {path!r} in params; leaves are {names}")
      if (path, axis) in owner:
        raise ValueError(f"axis {axis} of leaf {path!r} is named by groups {owner[path, axis]} and {g}: each axis "
                         "indexes the units of one layer only")
      owner[path, axis] = g
    if len({p for p, _ in axes[-1]}) < len(axes[-1]):
      raise ValueError(f"group {g} names a leaf both as out_path and in_path: its objective would be quadratic in "
                       "the permutation, which a linear assignment does not maximise")
  return axes


def _match_cost(a: dict[str, np.ndarray], b: dict[str, np.ndarray], axes: list[tuple[str, int]]) -> np.ndarray:
  """``C[i, j]`` = inner product of unit ``i``'s weights in ``a`` with unit ``j``'s in ``b`` (Ainsworth Eq. 8)."""
  cost = 0.0
  for path, axis in axes:
    x, y = np.moveaxis(a[path], axis, -1), np.moveaxis(b[path], axis, -1)
    cost = cost + x.reshape(-1, x.shape[-1]).T @ y.reshape(-1, y.shape[-1])
  return cost


def weight_matching(key: jax.Array, params_a: PyTree, params_b: PyTree,
                    groups: Sequence[tuple[Sequence[str], Sequence[str]]], *, max_sweeps: int = 100) -> Alignment:
  """Permutes ``params_b``'s units to maximise ``<theta_a, pi theta_b>`` (Ainsworth et al. 2023, Algorithm 1).

  Each group is one layer of units, named like :func:`permute_hidden_units`'s
  arguments: leaves in ``out_paths`` hold the units on their last axis,
  leaves in ``in_paths`` on their second-to-last. With every other group's
  permutation fixed, the objective is linear in this group's permutation
  ``P``: ``sum_ij P_ij C_ij`` with ``C`` the inner products of ``a``'s unit
  ``i`` with ``b``'s unit ``j`` over all leaves that touch the layer (incoming
  kernel, bias, outgoing kernel, ...), maximised exactly by a linear assignment
  (``scipy.optimize.linear_sum_assignment``). Coordinate ascent visits the
  groups in a random order per sweep (``fold_in(key, sweep)``) until a sweep
  changes nothing. A permutation is replaced only when the new one gains more
  than ``1e-12`` of ``sum |C|`` (float64 round-off), so ties cannot cycle.
  The result is a coordinate-wise optimum, not necessarily the global one: a
  permuted copy of ``params_a`` is recovered exactly when each layer's own
  weights identify its units, but with very few weights per unit (3 inputs,
  say) a sweep that starts at a later layer can settle elsewhere.

  Runs on the host in float64 (not under ``jit``); the returned parameters are
  ``params_b`` permuted by :func:`permute_hidden_units`, in their own dtypes.

  Args:
    key: ``jax.random`` key (the order of the groups in each sweep).
    params_a: the reference parameters.
    params_b: the parameters to permute (same structure and shapes).
    groups: ``[(out_paths, in_paths), ...]``, one pair per layer of units.
    max_sweeps: the most sweeps over all groups.

  Returns:
    An :class:`Alignment`.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> a = {"l0": {"kernel": jnp.array([[1.0, 2.0, 3.0]])}, "l1": {"kernel": jnp.array([[1.0], [0.0], [-1.0]])}}
    >>> b = permute_hidden_units(a, jnp.array([2, 0, 1]), ["l0/kernel"], ["l1/kernel"])
    >>> m = weight_matching(jax.random.key(0), a, b, [(["l0/kernel"], ["l1/kernel"])])
    >>> m.perms[0].tolist(), m.converged
    ([1, 2, 0], True)
  """
  tree.check_same_structure(params_a, params_b, "params_a and params_b")
  if not isinstance(max_sweeps, int) or max_sweeps < 1:
    raise ValueError(f"max_sweeps must be a positive int; got {max_sweeps!r}")
  names = tree.leaf_names(params_a)
  axes = _unit_axes(groups, names)
  a = {n: np.asarray(x, np.float64) for n, x in zip(names, jax.tree.leaves(params_a))}
  b = {n: np.asarray(x, np.float64) for n, x in zip(names, jax.tree.leaves(params_b))}
  sizes = [np.shape(b[group[0][0]])[-1:] for group in groups]
  for group, h in zip(groups, sizes):  # permute_hidden_units's checks: every leaf holds h units on its axis
    permute_hidden_units(params_b, jnp.arange(h[0] if h else 0), *group)
  sizes = [h[0] for h in sizes]
  perms = [np.arange(h) for h in sizes]
  objective = [sum(float(np.vdot(a[n], b[n])) for n in names)]
  converged, sweep = False, 0
  while sweep < max_sweeps and not converged:
    converged = True
    for g in np.asarray(jax.random.permutation(jax.random.fold_in(key, sweep), len(groups))):
      undo = np.argsort(perms[g])
      base = {p: np.take(b[p], undo, axis=ax) for p, ax in axes[g]}  # b with this group's permutation removed
      cost = _match_cost(a, base, axes[g])
      best = linear_sum_assignment(cost, maximize=True)[1]
      rows = np.arange(sizes[g])
      gain = cost[rows, best].sum() - cost[rows, perms[g]].sum()
      if gain > 1e-12 * np.abs(cost).sum():
        perms[g], converged = best, False
        for p, ax in axes[g]:
          b[p] = np.take(base[p], best, axis=ax)
      objective.append(sum(float(np.vdot(a[n], b[n])) for n in names))
    sweep += 1
  aligned = params_b
  for group, perm in zip(groups, perms):
    aligned = permute_hidden_units(aligned, jnp.asarray(perm), *group)
  return Alignment(aligned, tuple(perms), np.array(objective), sweep, converged)


def align(key: jax.Array, params_a: PyTree, params_b: PyTree, layers: Sequence[str], *, kernel: str = "kernel",
          bias: str | None = "bias", max_sweeps: int = 100) -> Alignment:
  """Weight matching for a chain of Dense layers: ``params_b``'s hidden units permuted to match ``params_a``'s.

  :func:`weight_matching` with one group per hidden layer, named by
  :func:`dense_layer_paths` (the layer's kernel columns and bias, the next
  kernel's rows), the layers named as in :func:`shuffle_hidden_units`. The
  straight line from ``params_a`` to the aligned ``params_b`` then measures the
  barrier modulo permutation symmetry (Ainsworth et al. 2023; Entezari et al.
  2022 conjecture that it vanishes for wide enough networks).

  Args:
    key: ``jax.random`` key (the order of the layers in each sweep).
    params_a: Flax-layout reference parameters.
    params_b: Flax-layout parameters to permute.
    layers: ``/``-joined paths of the Dense layers, input to output, e.g.
      ``["layers/0", "layers/1", "head"]`` for :class:`jaxscape.models.MLP`.
    kernel, bias: leaf names inside each layer (``bias=None``: no biases).
    max_sweeps: the most sweeps over the hidden layers.

  Returns:
    An :class:`Alignment`; ``.params`` is the aligned ``params_b``.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> a = {"l0": {"kernel": jnp.arange(6.0).reshape(2, 3)}, "l1": {"kernel": jnp.ones((3, 1))}}
    >>> b = shuffle_hidden_units(jax.random.key(1), a, ["l0", "l1"], bias=None)
    >>> m = align(jax.random.key(0), a, b, ["l0", "l1"], bias=None)
    >>> bool(jnp.all(m.params["l0"]["kernel"] == a["l0"]["kernel"]))
    True
  """
  if isinstance(layers, str) or len(layers) < 2:
    raise ValueError(f"layers must name at least two Dense layers (input to output); got {layers!r}")
  groups = [dense_layer_paths(layer, nxt, kernel=kernel, bias=bias) for layer, nxt in zip(layers[:-1], layers[1:])]
  return weight_matching(key, params_a, params_b, groups, max_sweeps=max_sweeps)


@dataclasses.dataclass(frozen=True)
class PairBarriers:
  """Straight lines between pairs of solutions before and after weight matching (:func:`aligned_barriers`).

  Attributes:
    pairs: ``[P, 2]`` run indices ``(i, j)``; run ``j`` is aligned to run ``i``.
    alphas: ``[m]`` line coordinates.
    naive: ``[P, m]`` losses on the line from run ``i`` to run ``j``.
    aligned: ``[P, m]`` losses on the line from run ``i`` to run ``j`` aligned to ``i``.
    naive_barrier: ``[P]`` :attr:`Barrier.height` of ``naive``.
    aligned_barrier: ``[P]`` :attr:`Barrier.height` of ``aligned``.
    distance: ``[P]`` ``||theta_j - theta_i|| / ||theta_i||``.
    aligned_distance: ``[P]`` the same after the alignment.
    sweeps: ``[P]`` :attr:`Alignment.sweeps`.
    converged: ``[P]`` :attr:`Alignment.converged`.
  """

  pairs: np.ndarray
  alphas: np.ndarray
  naive: np.ndarray
  aligned: np.ndarray
  naive_barrier: np.ndarray
  aligned_barrier: np.ndarray
  distance: np.ndarray
  aligned_distance: np.ndarray
  sweeps: np.ndarray
  converged: np.ndarray


def aligned_barriers(key: jax.Array, obj: Objective, runs: PyTree, layers: Sequence[str],
                     alphas: jax.typing.ArrayLike, *, pairs: Sequence[tuple[int, int]] | None = None,
                     kernel: str = "kernel", bias: str | None = "bias", max_sweeps: int = 100,
                     chunk_size: int | None = None) -> PairBarriers:
  """Barriers between pairs of solutions, before and after weight matching (Ainsworth et al. 2023, Fig. 2).

  For each pair ``(i, j)`` of runs stacked on a leading axis (e.g.
  :func:`jaxscape.train.train_many`'s parameters), run ``j`` is aligned to run
  ``i`` with :func:`align` (key ``fold_in(key, p)`` for the ``p``-th pair) and
  the loss is evaluated along both straight lines (:func:`interpolate`).

  Args:
    key: ``jax.random`` key.
    obj: the objective.
    runs: parameters of ``S`` runs stacked on a leading axis.
    layers: the Dense layers, as in :func:`align`.
    alphas: ``[m]`` ascending coordinates covering ``[0, 1]``.
    pairs: ``(i, j)`` run indices (default: ``(i, i + 1 mod S)`` for every ``i``).
    kernel, bias, max_sweeps: as in :func:`align`.
    chunk_size: as in :func:`interpolate`.

  Returns:
    A :class:`PairBarriers`.

  Example:
    >>> import jax, jax.numpy as jnp, jaxscape as js
    >>> apply = lambda p, x: jnp.tanh(x @ p["l0"]["kernel"]) @ p["l1"]["kernel"]
    >>> obj = js.Objective.from_apply(apply, data=(jnp.eye(3), jnp.ones((3, 1))), loss="mse")
    >>> a = {"l0": {"kernel": jnp.eye(3)}, "l1": {"kernel": jnp.ones((3, 1))}}
    >>> b = shuffle_hidden_units(jax.random.key(1), a, ["l0", "l1"], bias=None)  # the same function
    >>> r = aligned_barriers(jax.random.key(0), obj, js.tree.stack([a, b]), ["l0", "l1"], jnp.linspace(0, 1, 5),
    ...                      bias=None)
    >>> r.aligned_barrier.tolist(), r.aligned_distance.tolist()
    ([0.0, 0.0], [0.0, 0.0])
  """
  s = tree.num_runs(runs)
  pairs = np.array([(i, (i + 1) % s) for i in range(s)] if pairs is None else pairs, dtype=int).reshape(-1, 2)
  if pairs.size == 0 or pairs.min() < 0 or pairs.max() >= s:
    raise ValueError(f"pairs must be non-empty (i, j) run indices in [0, {s}); got {pairs.tolist()}")
  alphas = _coords(alphas, "alphas")
  rows = []
  for p, (i, j) in enumerate(pairs):
    a, b = tree.select(runs, int(i)), tree.select(runs, int(j))
    m = align(jax.random.fold_in(key, p), a, b, layers, kernel=kernel, bias=bias, max_sweeps=max_sweeps)
    lines = [interpolate(obj, a, q, alphas, chunk_size=chunk_size).losses for q in (b, m.params)]
    rel = [float(tree.norm(tree.sub(q, a)) / tree.norm(a)) for q in (b, m.params)]
    rows.append((*map(np.asarray, lines), *(float(barrier(l, alphas).height) for l in lines), *rel, m.sweeps,
                 m.converged))
  cols = [np.array(c) for c in zip(*rows)]
  return PairBarriers(pairs, np.asarray(alphas), *cols)


# --------------------------------------------------------------------- curves
def _control_points(ends: tuple[PyTree, PyTree], bends: PyTree | None) -> PyTree:
  a, b = ends
  if bends is None:
    return tree.stack([a, b])
  return jax.tree.map(lambda u, m, v: jnp.concatenate([u[None], m.astype(u.dtype), v[None]]), a, bends, b)


def _num_points(points: PyTree) -> int:
  return jax.tree.leaves(points)[0].shape[0]


def _bezier_weights(t: jax.Array, n: int) -> jax.Array:
  k = np.arange(n)
  binom = np.array([math.comb(n - 1, int(i)) for i in k], dtype=np.float64)
  t = jnp.asarray(t)
  return jnp.asarray(binom, t.dtype) * t ** jnp.asarray(k, t.dtype) * (1 - t) ** jnp.asarray(n - 1 - k, t.dtype)


def _polychain_weights(t: jax.Array, n: int) -> jax.Array:
  t = jnp.asarray(t)
  return jnp.maximum(0, 1 - jnp.abs(t * (n - 1) - jnp.arange(n, dtype=t.dtype)))


def bezier_point(t: jax.typing.ArrayLike, ends: tuple[PyTree, PyTree], bends: PyTree | None) -> PyTree:
  """Point ``phi(t)`` of the Bezier curve with control points ``a, bends..., b``.

  ``phi(t) = sum_k C(n-1, k) t^k (1-t)^(n-1-k) theta_k`` over the ``n`` control
  points (Garipov et al. 2018, Eq. 3 for one bend). ``phi(0) = a``,
  ``phi(1) = b``; with no bends it is the straight line.

  Args:
    t: scalar in ``[0, 1]``.
    ends: ``(a, b)``, the fixed endpoints (parameter pytrees).
    bends: the bends stacked on a new leading axis (:func:`jaxscape.tree.stack`),
      or ``None``.

  Returns:
    A parameter pytree like ``a``.

  Example:
    >>> import jax.numpy as jnp
    >>> bezier_point(0.5, (jnp.array([-1.0, 0.0]), jnp.array([1.0, 0.0])), jnp.array([[0.0, 2.0]])).tolist()
    [0.0, 1.0]
  """
  points = _control_points(ends, bends)
  t = jnp.asarray(t, jax.tree.leaves(points)[0].dtype)
  return tree.combine(_bezier_weights(t, _num_points(points)), points)


def polychain_point(t: jax.typing.ArrayLike, ends: tuple[PyTree, PyTree], bends: PyTree | None) -> PyTree:
  """Point ``phi(t)`` of the polygonal chain ``a -> bends... -> b`` (equal ``t`` per segment).

  Weights ``max(0, 1 - |t (n-1) - k|)`` over the ``n`` points (Garipov et al.'s
  ``PolyChain``). Arguments as in :func:`bezier_point`.
  """
  points = _control_points(ends, bends)
  t = jnp.asarray(t, jax.tree.leaves(points)[0].dtype)
  return tree.combine(_polychain_weights(t, _num_points(points)), points)


@dataclasses.dataclass(frozen=True)
class Curve:
  """A curve between two fixed endpoints with trainable bends.

  Attributes:
    start: ``phi(0)``.
    end: ``phi(1)``.
    bends: the bends stacked on a leading axis of size ``num_bends``.
    kind: ``"bezier"`` or ``"polychain"``.
  """

  start: PyTree
  end: PyTree
  bends: PyTree
  kind: str = "bezier"

  def __post_init__(self):
    if self.kind not in CURVE_KINDS:
      raise ValueError(f"unknown curve kind {self.kind!r}: expected one of {CURVE_KINDS}")

  @property
  def num_bends(self) -> int:
    return _num_points(self.bends)

  def __call__(self, t: jax.typing.ArrayLike) -> PyTree:
    """The point ``phi(t)``."""
    point = bezier_point if self.kind == "bezier" else polychain_point
    return point(t, (self.start, self.end), self.bends)


_register(Curve, ("start", "end", "bends"), ("kind",))


@dataclasses.dataclass(frozen=True)
class CurveFit:
  """Result of :func:`train_curve`.

  Attributes:
    curve: the trained :class:`Curve`.
    train_losses: ``[steps]`` the sampled training objective at each step.
  """

  curve: Curve
  train_losses: jax.Array


_register(CurveFit, ("curve", "train_losses"))


def init_curve(params_a: PyTree, params_b: PyTree, num_bends: int = 1, kind: str = "bezier", *,
               key: jax.Array | None = None, noise: float = 0.0) -> Curve:
  """A curve whose bends sit on the segment ``a -> b`` at ``t_k = k / (num_bends + 1)``.

  For both kinds this is the straight line (Garipov et al.'s initialisation).
  With ``noise > 0`` (and a ``key``), Gaussian noise of that standard
  deviation is added to the bends, to break a symmetry that would keep them
  on the line.
  """
  if kind not in CURVE_KINDS:
    raise ValueError(f"unknown curve kind {kind!r}: expected one of {CURVE_KINDS}")
  if not isinstance(num_bends, int) or num_bends < 1:
    raise ValueError(f"num_bends must be a positive int; got {num_bends!r}")
  tree.check_same_structure(params_a, params_b, "params_a and params_b")
  bends = tree.stack([lerp(params_a, params_b, k / (num_bends + 1)) for k in range(1, num_bends + 1)])
  if noise:
    if key is None:
      raise ValueError("noise > 0 needs a key")
    bends = tree.axpy(noise, tree.normal_like(key, bends), bends)
  return Curve(params_a, params_b, bends, kind)


@functools.partial(jax.jit, static_argnames=("steps", "num_samples"))
def _train(obj, curve, key, lr, steps, num_samples):
  opt = optax.adam(lr)

  def sampled_loss(bends, k):
    kt, kb = jax.random.split(k)
    ts = jax.random.uniform(kt, (num_samples,), jax.tree.leaves(bends)[0].dtype)
    i = jax.random.randint(kb, (), 0, obj.num_batches)
    batch = obj.batch(i)
    c = dataclasses.replace(curve, bends=bends)
    return jnp.mean(jax.vmap(lambda t: obj.loss(c(t), batch)[0])(ts))

  def step(carry, k):
    bends, state = carry
    value, g = jax.value_and_grad(sampled_loss)(bends, k)
    with jax.numpy_dtype_promotion("standard"):  # optax's adam bias correction computes float ** int32 count
      updates, state = opt.update(g, state, bends)
    return (optax.apply_updates(bends, updates), state), value

  (bends, _), losses = jax.lax.scan(step, (curve.bends, opt.init(curve.bends)), jax.random.split(key, steps))
  return dataclasses.replace(curve, bends=bends), losses


@tree.key_first(legacy_position=3)
def train_curve(
    key: jax.Array,
    obj: Objective,
    params_a: PyTree,
    params_b: PyTree,
    num_bends: int = 1,
    steps: int = 1000,
    lr: float = 1e-2,
    *,
    kind: str = "bezier",
    num_samples: int = 4,
    init_noise: float = 0.0,
) -> CurveFit:
  """Trains a low-loss curve between two fixed solutions (Garipov et al. 2018).

  Minimises ``E_{t ~ U(0,1)} L(phi(t))`` over the bends with Adam: each step
  draws ``num_samples`` values of ``t`` and one of the objective's batches
  (``obj.loss(params, batch)``; with a single batch this is the full-data
  loss) and follows the averaged gradient. The endpoints stay fixed.

  Args:
    key: ``jax.random`` key (bend noise, ``t`` samples, batch choice); the
      earlier order ``train_curve(obj, params_a, params_b, key)`` works too.
    obj: the objective.
    params_a: ``phi(0)``.
    params_b: ``phi(1)``.
    num_bends: number of bends (Garipov et al. use 1 for Bezier, 3 for chains).
    steps: Adam steps (static).
    lr: Adam learning rate.
    kind: ``"bezier"`` or ``"polychain"``.
    num_samples: values of ``t`` per step (static).
    init_noise: standard deviation of the noise added to the initial bends
      (:func:`init_curve`).

  Returns:
    A :class:`CurveFit`.

  Example:
    >>> import jax, jax.numpy as jnp, jaxscape as js
    >>> # a curved valley: minima (-1, 0) and (1, 0); the line crosses a ridge
    >>> f = lambda p: (p[1] - 1 + p[0] ** 2) ** 2 + 0.1 * (p[0] ** 2 - 1) ** 2
    >>> obj = js.Objective.from_apply(lambda p, x: f(p) + 0 * x[:, 0], data=(jnp.zeros((1, 1)), jnp.zeros(1)),
    ...                               loss=lambda out, t: out)
    >>> fit = train_curve(jax.random.key(0), obj, jnp.array([-1.0, 0.0]), jnp.array([1.0, 0.0]), steps=300, lr=0.05)
    >>> ts = jnp.linspace(0, 1, 21)
    >>> bool(curve_losses(obj, fit.curve, ts).losses.max() < 0.2)   # the straight line peaks at 1.1
    True
  """
  if not isinstance(steps, int) or steps < 1:
    raise ValueError(f"steps must be a positive int; got {steps!r}")
  if not isinstance(num_samples, int) or num_samples < 1:
    raise ValueError(f"num_samples must be a positive int; got {num_samples!r}")
  k_init, k_train = jax.random.split(key)
  curve = init_curve(params_a, params_b, num_bends, kind, key=k_init, noise=init_noise)
  curve, losses = _train(obj, curve, k_train, lr, steps, num_samples)
  return CurveFit(curve, losses)


@functools.partial(jax.jit, static_argnames=("chunk_size",))
def _curve_losses(obj, curve, ts, chunk_size):
  return _map(lambda t: obj.loss(curve(t)), ts, chunk_size)


def curve_losses(obj: Objective, curve: Curve, ts: jax.typing.ArrayLike, *,
                 chunk_size: int | None = None) -> PathLosses:
  """Full-data loss and metrics at ``phi(t)`` for each ``t`` (vmapped, like :func:`interpolate`)."""
  _check_chunk(chunk_size)
  ts = _coords(ts, "ts")
  losses, metrics = _curve_losses(obj, curve, ts, chunk_size)
  return PathLosses(ts, losses, metrics)
