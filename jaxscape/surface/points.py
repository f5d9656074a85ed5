"""What a surface computes at its grid points: the loss, curvature maps and warm-start seeds.

A point function evaluates one *chunk* of grid points: ``spec(chunk, inputs,
objective) -> {name: [P]}``, where ``spec`` is a hashable frozen dataclass (its
static configuration: part of the compiled function's identity), ``chunk`` the
chunk's coordinates and flat grid indices, and ``inputs`` the arrays every
chunk shares (key, centre, directions, warm starts). Outputs are sums over
examples divided by ``N``, linear in the data, so that a data-sharded
executor can add them; :func:`finish_maps` then adds the maps that are not.

Example:
  >>> import jax, jax.numpy as jnp, numpy as np
  >>> import jaxscape as js
  >>> from jaxscape.surface.points import Chunk, PointInputs, PointSpec
  >>> x = np.ones((4, 2), np.float32)
  >>> obj = js.Objective.from_apply(lambda p, x: x @ p, data=(x, x[:, 0]), loss="mse")
  >>> p = jnp.ones(2); vectors = jnp.array([[1.0, 0.0]])
  >>> chunk = Chunk(coords=jnp.array([[0.0], [1.0]]), index=jnp.arange(2))
  >>> out = PointSpec()(chunk, PointInputs(key=None, params=p, vectors=vectors), obj)
  >>> out["loss"].tolist()                  # (2 - 1)^2 and (3 - 1)^2
  [1.0, 4.0]
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from .. import hessian
from .. import tree
from ..directions import move_state
from ..objective import Objective

from ..tree import PyTree

CURVATURES = ("plane", "full")
"""Curvature maps: ``plane`` = the exact 2x2 Hessian projected on the plot
plane (nested ``jvp``; ``h_xx, h_xy, h_yy`` and its eigenvalues
``plane_lambda_min/max``); ``full`` = the full Hessian's ``lambda_max``,
``lambda_min`` (with their Lanczos residual bounds ``lambda_max_bound``,
``lambda_min_bound``), the signed ``convexity_ratio`` = λmin/λmax (< 0 where
non-convex; Li et al. 2018 plot its magnitude) from a short Lanczos run, and a
Hutchinson ``trace`` (± ``trace_stderr``, at least 2 probes)."""

_WARM_NOISE = 1e-3
"""Weight of the random component of a warm start (relative to the unit seed)."""


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Chunk:
  """The points of one chunk.

  Attributes:
    coords: ``[P, n]`` grid coordinates.
    index: ``[P]`` flat grid indices (``int32``): point ``i``'s random keys
      are ``fold_in(key, i)``, so they do not depend on the chunking.
  """

  coords: jax.Array
  index: jax.Array


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class WarmStarts:
  """Lanczos start vectors of a warm-started ``full`` map.

  Attributes:
    table: ``[num_points]`` (``int32``): the row of ``seeds`` grid point ``i`` starts from.
    seeds: ``[rows, num_params]`` unit start vectors, flat.
  """

  table: jax.Array
  seeds: jax.Array


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class PointInputs:
  """The arrays every chunk of a run shares.

  Attributes:
    key: ``jax.random.key`` of the random parts (``None`` when none is asked for).
    params: the centre ``θ``.
    vectors: the directions stacked on a leading axis of size ``n``.
    state_vectors: with BatchNorm ``interpolate``, the state's directions
      (stacked like ``vectors``), else ``None``.
    warm: start vectors of a warm-started ``full`` map, else ``None``.
  """

  key: jax.Array | None
  params: PyTree
  vectors: PyTree
  state_vectors: PyTree | None = None
  warm: WarmStarts | None = None


def _point_state(objective: Objective, c: jax.Array, state_vectors: PyTree) -> PyTree:
  """The model state at grid point ``c``: fixed, or moved with the parameters (BatchNorm ``interpolate``)."""
  return objective.state if state_vectors is None else move_state(objective.state, c, state_vectors)


def loss_sums(chunk: Chunk, inputs: PointInputs, objective: Objective) -> dict[str, jax.Array]:
  """Mean loss and metrics at a chunk of points: ``vmap`` over points inside the scan over batches."""
  def chunk_sums(batch):
    # The affine first-layer path when the objective knows its first layer, else vmap over points.
    return objective.grid_batch_sums(inputs.params, inputs.vectors, chunk.coords, batch,
                                     state_vectors=inputs.state_vectors)

  # The first batch initialises the carry (it is then already sharded like the grid).
  sums = objective.sum_over_batches(chunk_sums)
  return jax.tree.map(lambda v: v / objective.total_weight, sums)


@dataclasses.dataclass(frozen=True)
class PointSpec:
  """The fine pass's point function: the loss and metrics, plus the requested curvature maps.

  Attributes:
    curvature: sorted names of the curvature maps (:data:`CURVATURES`), or ``()``.
    lanczos_steps: Lanczos steps of the ``full`` map.
    trace_probes: Hutchinson probes of the ``full`` map's trace.
    warm_start: the ``full`` map's Lanczos runs start from ``inputs.warm``
      (:func:`warm_vector`) instead of a random vector.
  """

  curvature: tuple[str, ...] = ()
  lanczos_steps: int = 10
  trace_probes: int = 10
  warm_start: bool = False

  def __call__(self, chunk: Chunk, inputs: PointInputs, objective: Objective) -> dict[str, jax.Array]:
    out = loss_sums(chunk, inputs, objective)
    if not self.curvature:
      return out
    params = inputs.params

    def at(c):
      return tree.add(params, tree.combine(c, inputs.vectors))

    def obj_at(c):
      return dataclasses.replace(objective, state=_point_state(objective, c, inputs.state_vectors))

    if "plane" in self.curvature:
      d1, d2 = (jax.tree.map(lambda v, i=i: v[i], inputs.vectors) for i in range(2))
      h = jax.vmap(lambda c: hessian.projected_hessian(obj_at(c), at(c), d1, d2))(chunk.coords)
      # Linear in the data (summed over data shards); eigenvalues follow in finish_maps.
      out.update(h_xx=h[:, 0, 0], h_xy=h[:, 0, 1], h_yy=h[:, 1, 1])
    if "full" in self.curvature:
      def point(c, i):
        k = jax.random.fold_in(inputs.key, i)
        v0 = warm_vector(params, inputs.warm, i, k) if self.warm_start else None
        return hessian.point_curvature(obj_at(c), at(c), k, num_steps=self.lanczos_steps,
                                       num_probes=self.trace_probes, v0=v0)

      out.update(jax.vmap(point)(chunk.coords, chunk.index))
    return out


@dataclasses.dataclass(frozen=True)
class WarmStartSpec:
  """The coarse pass's point function of a warm start.

  At each point: the unit sum of the extreme Ritz vectors of a cold Lanczos
  run of ``lanczos_steps`` HVPs, flat (``{"warm_start": [P, num_params]}``).
  """

  lanczos_steps: int

  def __call__(self, chunk: Chunk, inputs: PointInputs, objective: Objective) -> dict[str, jax.Array]:
    def point(c, i):
      obj = dataclasses.replace(objective, state=_point_state(objective, c, inputs.state_vectors))
      _, y = hessian.extreme_ritz(obj, tree.add(inputs.params, tree.combine(c, inputs.vectors)),
                                  jax.random.fold_in(inputs.key, i), num_steps=self.lanczos_steps)
      seed = tree.ravel(jax.tree.map(lambda a: a[0] + a[1], y))[0]
      return seed / jnp.maximum(jnp.linalg.norm(seed), jnp.finfo(seed.dtype).tiny)

    return {"warm_start": jax.vmap(point)(chunk.coords, chunk.index)}


def warm_vector(params: PyTree, warm: WarmStarts, i: jax.Array, key: jax.Array) -> PyTree:
  """Point ``i``'s Lanczos start: its coarse point's seed plus a small random part (never exactly an eigenvector)."""
  seed = warm.seeds[warm.table[i]]
  noise = jax.random.normal(jax.random.fold_in(key, 1), seed.shape, seed.dtype)
  v = seed + _WARM_NOISE * noise / jnp.sqrt(jnp.asarray(seed.size, seed.dtype))
  return tree.ravel(params)[1](v)


def finish_maps(out: dict[str, jax.Array]) -> dict[str, jax.Array]:
  """Adds the maps that are not linear in the data, once the data-linear ones are summed: plane eigenvalues."""
  if "h_xx" not in out:
    return out
  h = jnp.stack([jnp.stack([out["h_xx"], out["h_xy"]], -1), jnp.stack([out["h_xy"], out["h_yy"]], -1)], -2)
  ev = jnp.linalg.eigvalsh(h)
  return {**out, "plane_lambda_min": ev[..., 0], "plane_lambda_max": ev[..., 1]}
