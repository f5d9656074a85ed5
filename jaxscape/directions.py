"""Directions in parameter space: random, filter-normalised, interpolation, PCA.

A direction is a pytree with the structure of the parameters. A
:class:`Directions` bundles the ``n`` directions of a plot (stacked on a
leading axis) with a record of how they were made, which every result stores.

Normalisations (Li et al. 2018, "Visualizing the Loss Landscape of Neural
Nets", Sec. 4):

* ``filter``: each filter of the direction is rescaled to the norm of the
  corresponding filter of the weights. In Flax layout a filter is a slice
  along the *last* axis (Dense kernels are ``(in, out)``, Conv kernels HWIO),
  so norms are taken over all other axes. Leaves with ``ndim <= 1`` (biases,
  norm scales) are rescaled as a whole, unless ignored.
* ``layer``: each leaf is rescaled to the norm of the weight leaf.
* ``model``: the whole direction is rescaled to the norm of the weights.
* ``none``: the raw Gaussian draw.

``ignore="biasbn"`` sets the direction to zero on every leaf with
``ndim <= 1`` (the ``--xignore biasbn`` of the original tool).

Example:
  >>> import jax, jax.numpy as jnp
  >>> params = {"w": jnp.ones((3, 2)), "b": jnp.ones(2)}
  >>> dirs = random_directions(jax.random.key(0), params, n=2)
  >>> [float(x) for x in jnp.linalg.norm(dirs.vectors["w"][0], axis=0)]  # = weight filter norms
  [1.7320508..., 1.7320508...]
  >>> float(jnp.abs(dirs.vectors["b"]).max())   # biases ignored
  0.0
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from . import tree

from .tree import PyTree

NORMS = ("filter", "layer", "model", "none")
IGNORES = (None, "biasbn")
_EPS = 1e-10

__all__ = [
    "Directions",
    "NORMS",
    "normalize",
    "random_directions",
    "interpolation_direction",
    "plane_directions",
    "pca_directions",
    "PCADirections",
    "as_directions",
    "move_state",
]


@dataclasses.dataclass(frozen=True)
class Directions:
  """``n`` directions stacked on a leading axis, and how they were made.

  Attributes:
    vectors: pytree like the parameters, each leaf with a leading axis ``n``.
    info: JSON-serialisable record (kind, key, normalisation, ignore policy).
    state_vectors: ``None``, or directions in the model's non-trainable state
      (BatchNorm statistics) shaped like the state with a leading axis ``n``:
      the state then moves with the parameters (BatchNorm policy
      ``interpolate``, Li et al.'s ``states``); non-floating leaves (RNG
      counters) never move.
  """

  vectors: PyTree
  info: dict[str, Any] = dataclasses.field(default_factory=dict)
  state_vectors: PyTree = None

  @property
  def n(self) -> int:
    return int(jax.tree.leaves(self.vectors)[0].shape[0])

  def __getitem__(self, i: int) -> PyTree:
    return jax.tree.map(lambda v: v[i], self.vectors)

  def __len__(self) -> int:
    return self.n

  def __iter__(self):
    return iter(tree.unstack(self.vectors))



def as_directions(directions: Directions | Sequence[PyTree], params: PyTree) -> Directions:
  """Accepts a :class:`Directions` or a sequence of pytrees; checks structures against ``params``."""
  if isinstance(directions, Directions):
    d = directions
  else:
    if isinstance(directions, dict) or not isinstance(directions, (list, tuple)) or len(directions) == 0:
      raise ValueError(f"directions must be a Directions or a non-empty list of pytrees like params; got {type(directions).__name__}")
    d = Directions(tree.stack(list(directions)), {"kind": "user"})
  p_struct, d_struct = jax.tree.structure(params), jax.tree.structure(d.vectors)
  if p_struct != d_struct:
    raise ValueError(f"directions do not have the structure of params:\n  params: {p_struct}\n  directions: {d_struct}")
  for name, p, v in zip(tree.leaf_names(params), jax.tree.leaves(params), jax.tree.leaves(d.vectors)):
    if tuple(v.shape[1:]) != tuple(np.shape(p)):
      raise ValueError(f"direction leaf {name!r} has shape {tuple(v.shape[1:])}; the parameter has {tuple(np.shape(p))}")
    p_dtype = np.dtype(p.dtype) if hasattr(p, "dtype") else np.asarray(p).dtype
    if np.dtype(v.dtype) != p_dtype:
      raise ValueError(f"direction leaf {name!r} has dtype {np.dtype(v.dtype)}; the parameter has {p_dtype}: "
                       "θ + c·d would silently compute in the promoted dtype; cast the directions to the "
                       "parameters' dtypes")
  return d


def _filter_norms(x: jax.Array) -> jax.Array:
  """Norm of each filter (slice along the last axis), broadcastable to ``x``."""
  if x.ndim <= 1:
    return jnp.linalg.norm(x)
  axes = tuple(range(x.ndim - 1))
  return jnp.sqrt(jnp.sum(jnp.square(x), axis=axes, keepdims=True))


def normalize(direction: PyTree, params: PyTree, norm: str = "filter", ignore: str | None = "biasbn") -> PyTree:
  """Rescales one direction to the scale of ``params``.

  Args:
    direction: pytree like ``params``.
    params: the weights whose scale the direction takes.
    norm: ``filter`` | ``layer`` | ``model`` | ``none`` (see the module doc).
    ignore: ``"biasbn"`` zeroes the direction on leaves with ``ndim <= 1``;
      ``None`` keeps them.

  Returns:
    The normalised direction, a pytree like ``params``.
  """
  if norm not in NORMS:
    raise ValueError(f"unknown norm {norm!r}: expected one of {NORMS}")
  if ignore not in IGNORES:
    raise ValueError(f"unknown ignore policy {ignore!r}: expected one of {IGNORES}")

  def keep(p):
    return not (ignore == "biasbn" and np.ndim(p) <= 1)

  direction = jax.tree.map(lambda d, p: d if keep(p) else jnp.zeros_like(d), direction, params)
  if norm == "none":
    return direction
  if norm == "model":
    kept_p = jax.tree.map(lambda p: p if keep(p) else jnp.zeros_like(p), params)
    return tree.scale(tree.norm(kept_p) / (tree.norm(direction) + _EPS), direction)
  if norm == "layer":
    return jax.tree.map(lambda d, p: d * (jnp.linalg.norm(p) / (jnp.linalg.norm(d) + _EPS)), direction, params)
  return jax.tree.map(lambda d, p: d * (_filter_norms(p) / (_filter_norms(d) + _EPS)), direction, params)


def random_directions(
    key: jax.Array,
    params: PyTree,
    n: int = 2,
    *,
    norm: str = "filter",
    ignore: str | None = "biasbn",
    orthogonalize: bool = False,
) -> Directions:
  """``n`` random Gaussian directions, normalised to the weights.

  Each direction ``i`` is drawn from ``jax.random.fold_in(key, i)``, so the
  first direction of a 2-D plot equals the direction of a 1-D plot made from
  the same key.

  Args:
    key: a ``jax.random.key``.
    params: the weights (a pytree of arrays).
    n: number of directions (1 for a curve, 2 for a surface).
    norm: ``filter`` (Li et al. 2018) | ``layer`` | ``model`` | ``none``.
    ignore: ``"biasbn"`` zeroes directions on 1-D leaves; ``None`` keeps them.
    orthogonalize: make each direction orthogonal to the previous ones
      (Gram-Schmidt after normalisation, then a global rescale back to the
      direction's normalised norm). Per-filter norms then hold only
      approximately; random directions in high dimension are nearly
      orthogonal anyway, so the change is small.

  Returns:
    :class:`Directions` with ``vectors`` of leading axis ``n``.
  """
  if not isinstance(n, int) or n < 1:
    raise ValueError(f"n must be a positive integer; got {n!r}")
  out = []
  for i in range(n):
    d = normalize(tree.normal_like(jax.random.fold_in(key, i), params), params, norm, ignore)
    if orthogonalize and out:
      length = tree.norm(d)
      for u in out:
        d = tree.axpy(-tree.dot(d, u) / tree.dot(u, u), u, d)
      d = tree.scale(length / (tree.norm(d) + _EPS), d)
    out.append(d)
  info = {"kind": "random", "key": _key_record(key), "norm": norm, "ignore": ignore, "orthogonalize": orthogonalize}
  return Directions(tree.stack(out), info)


def _key_record(key: jax.Array) -> list[int]:
  data = jax.random.key_data(key) if jnp.issubdtype(key.dtype, jax.dtypes.prng_key) else key
  return [int(v) for v in np.asarray(data).ravel()]


def _state_difference(state_b: PyTree, state_a: PyTree) -> PyTree:
  """``sb − sa`` on floating leaves; a scalar 0 stands for leaves that never move."""
  def diff(b, a):
    if jnp.issubdtype(jnp.asarray(a).dtype, jnp.floating):
      return jnp.asarray(b) - jnp.asarray(a)
    return jnp.zeros((), jnp.float32)

  return jax.tree.map(diff, state_b, state_a)


def _bn_policy(states: Sequence[PyTree | None]) -> tuple[str, PyTree | None]:
  if all(s is None for s in states):
    return "frozen", None
  if any(s is None for s in states):
    raise ValueError("give the state of every endpoint (or of none): the BatchNorm statistics are interpolated together")
  return "interpolate", [_state_difference(s, states[0]) for s in states[1:]]


def move_state(state: PyTree, coefficients: jax.Array, state_vectors: PyTree) -> PyTree:
  """``state + Σ_j c_j s_j`` on floating leaves; other leaves (RNG counters, keys) unchanged."""
  def move(s, v):
    if not jnp.issubdtype(jnp.asarray(s).dtype, jnp.floating):
      return s
    return (s + jnp.tensordot(coefficients.astype(v.dtype), v, axes=1)).astype(s.dtype)

  return jax.tree.map(move, state, state_vectors)


def interpolation_direction(params_a: PyTree, params_b: PyTree, state_a: PyTree | None = None,
                            state_b: PyTree | None = None) -> Directions:
  """The direction ``θb − θa``: coordinate 0 is ``θa``, coordinate 1 is ``θb``.

  Evaluate it from ``params_a`` (e.g. ``x=(-0.5, 1.5, 401)`` as in Li et al.)
  for the 1-D plot from one solution to another. Never normalised. For
  networks with BatchNorm, give both models' states: the statistics are then
  interpolated too (policy ``interpolate``), so that coordinate 1 is exactly
  model b; with the statistics frozen at a's, it is not.
  """
  policy, svecs = _bn_policy([state_a, state_b])
  return Directions(tree.stack([tree.sub(params_b, params_a)]), {"kind": "interpolation", "bn_policy": policy},
                    None if svecs is None else tree.stack(svecs))


def plane_directions(params_a: PyTree, params_b: PyTree, params_c: PyTree, *, orthogonalize: bool = False,
                     states: Sequence[PyTree] | None = None) -> Directions:
  """The plane through three parameter sets, with origin ``θa``.

  Without orthogonalisation the directions are ``(θb − θa, θc − θa)``, so
  ``θb`` sits at (1, 0) and ``θc`` at (0, 1). With it (Garipov et al. 2018)
  the second direction is made orthogonal to the first (Gram-Schmidt, no
  rescaling), and ``θc`` sits at ``(⟨u,v⟩/⟨u,u⟩, 1)``. ``states`` (the
  three models' states) interpolates BatchNorm statistics over the plane
  in the same coordinates.
  """
  u, v = tree.sub(params_b, params_a), tree.sub(params_c, params_a)
  policy, svecs = _bn_policy(list(states) if states is not None else [None] * 3)
  if orthogonalize:
    coef = -tree.dot(v, u) / tree.dot(u, u)
    v = tree.axpy(coef, u, v)
    if svecs is not None:
      svecs[1] = jax.tree.map(lambda b, a: b + coef.astype(b.dtype) * a, svecs[1], svecs[0])
  return Directions(tree.stack([u, v]), {"kind": "plane", "orthogonalize": orthogonalize, "bn_policy": policy},
                    None if svecs is None else tree.stack(svecs))


@dataclasses.dataclass(frozen=True)
class PCADirections:
  """PCA of a parameter trajectory.

  Attributes:
    directions: unit-norm principal directions (:class:`Directions`).
    explained_variance_ratio: share of the trajectory's variance per direction.
    coords: ``[num_snapshots, n]`` coordinates of each snapshot relative to
      the final parameters (``⟨θ_i − θ_final, d_j⟩``, the "cos" projection).
    residuals: ``[num_snapshots]`` distance of each snapshot from the plane,
      ``‖θ_i − θ_final − Σ_j c_ij d_j‖`` (how far off the plot it lies).
  """

  directions: Directions
  explained_variance_ratio: np.ndarray
  coords: np.ndarray
  residuals: np.ndarray


def pca_directions(snapshots: Sequence[PyTree], final: PyTree | None = None, n: int = 2, *,
                   ignore: str | None = "biasbn") -> PCADirections:
  """Principal directions of a training trajectory (Li et al. 2018, Sec. 7).

  Rows ``θ_i − θ_final`` are centred and decomposed by SVD (as
  ``sklearn.decomposition.PCA`` does); plot the surface around ``final``
  with the returned directions and overlay ``coords``.

  Args:
    snapshots: parameter pytrees along training (at least ``n + 1``).
    final: the point the plot is centred on (default: the last snapshot).
    n: number of principal directions.
    ignore: ``"biasbn"`` leaves 1-D leaves out of the PCA (zero there).
  """
  if len(snapshots) < n + 1:
    raise ValueError(f"PCA of {n} directions needs at least {n + 1} snapshots; got {len(snapshots)}")
  final = snapshots[-1] if final is None else final
  rows = [normalize(tree.sub(s, final), final, "none", ignore) for s in snapshots]
  flat = jnp.stack([tree.ravel(r)[0] for r in rows])
  _, unravel = tree.ravel(final)
  centred = flat - flat.mean(axis=0)
  _, s, vt = jnp.linalg.svd(centred, full_matrices=False)
  var = s**2
  ratio = np.asarray(var[:n] / jnp.sum(var))
  comps = vt[:n]
  coords = flat @ comps.T
  resid = jnp.linalg.norm(flat - coords @ comps, axis=1)
  # re-apply the ignore mask: the SVD leaves round-off in the ignored leaves
  dirs = Directions(tree.stack([normalize(unravel(c), final, "none", ignore) for c in comps]), {"kind": "pca", "num_snapshots": len(snapshots), "ignore": ignore,
                                                              "explained_variance_ratio": ratio.tolist()})
  return PCADirections(dirs, ratio, np.asarray(coords), np.asarray(resid))
