"""The grid executor: chunks, the device mesh, parts, processes, resume and persistence.

:func:`loss_surface` evaluates a point function (:mod:`jaxscape.surface.points`)
over a grid (:mod:`jaxscape.surface.grid`) by chunks of points: within a chunk,
``vmap`` over points runs inside a ``lax.scan`` over the data batches, so every
batch is read once per chunk rather than once per point. The chunk size bounds
memory (:func:`default_chunk_size`). Several chunks make one compiled call
(``lax.map`` over chunks), whose points are sharded over all local devices
(``jax.shard_map`` on a ``("grid", "data")`` mesh; ``data_shards > 1`` also
splits every data batch, summed with ``psum``); one compilation serves every
call. ``part=(i, n)`` evaluates one of ``n`` slices of the grid, and several
processes share the points of every call. With ``out_dir``, the result is
written atomically after every call and a rerun with the same config resumes
where it stopped.

Before anything is evaluated or written, the pre-flight checks (parameters,
data dtype, the loss at the origin, the default chunk size) trace the model
once: the origin loss and the chunk-size probe share one jitted batch
function, and the output names come from the traced evaluator itself, whose
trace the grid calls then reuse.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from .. import distributed as _dist
from .. import io as _io
from .. import tree
from ..directions import Directions, as_directions
from ..objective import Objective
from .grid import (Range, Surface, check_host_memory, grid_coordinates, parse_range, part_directory, part_indices,
                   result_bytes)
from .points import CURVATURES, Chunk, PointInputs, PointSpec, WarmStarts, WarmStartSpec, finish_maps

from ..tree import PyTree


def default_chunk_size(objective: Objective, params: PyTree, num_devices: int = 1, *,
                       memory_budget: float | None = None) -> int:
  """Grid points per chunk (all devices together) for a working set of ``memory_budget`` bytes per device.

  A point costs a perturbed copy of the parameters plus the activations of
  one batch; the latter is read from the compiler's memory analysis of a
  one-point batch evaluation (falling back to an estimate from the output
  size when the backend gives none). The default budget is 8 MB on CPU,
  shared by its devices (a chunk that stays in cache is up to 3x faster than
  a large one, and CPU devices share the host's caches: 8 fake devices with
  8 MB each ran 2-3x slower per point than one), and a quarter of the device
  memory (or 1 GB) per device on an accelerator. With a known first layer
  (the affine path of :meth:`~jaxscape.Objective.grid_batch_sums`), a point
  costs no copy of the first layer and its activations are measured on that
  path (7 points instead of 3 on CPU for a 784-256-10 MLP, batches of 500). The result
  is a multiple of the device count, at most 1024 points per device.
  """
  if memory_budget is None:
    memory_budget = _default_budget(num_devices)
  itemsize = max(np.dtype(x.dtype).itemsize for x in jax.tree.leaves(params))
  param_bytes = tree.size(params) * itemsize
  batch = objective.batch(0)
  act_bytes = 0
  try:
    analysis = _batch_sums.lower(_without_batches(objective), params, batch).compile().memory_analysis()
    act_bytes = int(getattr(analysis, "temp_size_in_bytes", 0) or 0)
  except Exception:  # some backends have no memory analysis
    act_bytes = 0
  if act_bytes <= 0:
    out = jax.eval_shape(lambda p: objective.apply(p, objective.state, batch[0]), params)
    act_bytes = 8 * sum(int(np.prod(o.shape)) for o in jax.tree.leaves(out)) * itemsize + objective.batch_size * 1024 * itemsize
  per_point = 2 * param_bytes + act_bytes
  if objective.first_layer is not None:  # affine first layer: no per-point copy of it, smaller activations
    per_point = _affine_point_bytes(objective, params, batch) or per_point
  per_device = int(max(1, min(1024, memory_budget // per_point)))
  return per_device * num_devices


@jax.jit
def _batch_sums(objective: Objective, params: PyTree, batch: tuple[jax.Array, ...]) -> dict[str, jax.Array]:
  """One batch's sums, jitted once for the pre-flight checks: the chunk-size probe lowers it and the origin
  loss scans it, and ``jit`` traces it once per shapes, so the model is traced once for both."""
  return objective.batch_sums(params, batch)


def _default_budget(num_devices: int = 1) -> float:
  device = jax.local_devices()[0]
  if device.platform == "cpu":
    return 8e6 / max(1, num_devices)
  try:
    return 0.25 * float(device.memory_stats()["bytes_limit"])
  except Exception:  # no memory stats on this backend
    return 1e9


def _affine_point_bytes(objective: Objective, params: PyTree, batch: tuple[jax.Array, ...], n: int = 2) -> int:
  """Bytes per grid point of the affine first-layer path: the growth of the compiler's temporary buffer
  from 4 to 8 points of a two-direction chunk, plus two copies of the parameters outside the first layer.
  0 when the backend gives no memory analysis."""
  vectors = jax.tree.map(lambda a: jax.ShapeDtypeStruct((n, *a.shape), a.dtype), params)
  dtype = jnp.result_type(*jax.tree.leaves(params))
  try:
    temp = [int(jax.jit(objective.grid_batch_sums).lower(params, vectors, jax.ShapeDtypeStruct((k, n), dtype), batch)
                .compile().memory_analysis().temp_size_in_bytes) for k in (4, 8)]
  except Exception:  # some backends have no memory analysis
    return 0
  first = objective.first_layer.select(params)
  rest_bytes = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(params)) - sum(
      x.size * x.dtype.itemsize for x in jax.tree.leaves(first))
  return max(0, (temp[1] - temp[0]) // 4) + 2 * rest_bytes if temp[1] > temp[0] else 0


WARM_START_MAX_BYTES = 2**30
"""Budget of ``loss_surface(..., warm_start=k)``'s start vectors, in bytes per
device: one vector of ``num_params`` per coarse point the run (or part, or
process) needs, replicated on every device."""

_COARSE_KEY = 0xFFFFFFFF
"""``fold_in(key, _COARSE_KEY)`` keys the coarse pass (fine point ``i`` uses ``fold_in(key, i)``)."""


def _warm_start_plan(shape: tuple[int, ...], every: int) -> tuple[np.ndarray, np.ndarray]:
  """The coarse grid of a warm-started map and every point's nearest coarse point.

  Along each axis the coarse grid keeps every ``every``-th index and the last
  one; a point's nearest coarse point is the nearest kept index along each
  axis (the lower one on ties).

  Returns:
    ``(coarse, table)``: the flat grid indices of the coarse points ``[n_coarse]``
    (C order) and, for every grid point, the position of its nearest coarse
    point in ``coarse`` ``[num_points]``.

  Example:
    >>> [a.tolist() for a in _warm_start_plan((5,), 2)]
    [[0, 2, 4], [0, 0, 1, 1, 2]]
  """
  kept = [np.unique(np.r_[np.arange(0, n, every), n - 1]) for n in shape]
  near = [np.argmin(np.abs(np.arange(n)[:, None] - k[None, :]), axis=1) for n, k in zip(shape, kept)]
  fine = np.unravel_index(np.arange(math.prod(shape)), shape)
  table = np.ravel_multi_index(tuple(nr[f] for nr, f in zip(near, fine)), tuple(k.size for k in kept))
  coarse = np.ravel_multi_index(tuple(g.ravel() for g in np.meshgrid(*kept, indexing="ij")), shape)
  return coarse, table


def _warm_start_spec(warm_start: int | None, steps: int | None, curvature: tuple[str, ...],
                     lanczos_steps: int) -> tuple[int, int] | None:
  """``(every, coarse steps)`` of a warm-started ``full`` map, or None."""
  if warm_start is None:
    if steps is not None:
      raise ValueError(f"warm_start_steps={steps!r} needs warm_start=k (the coarse grid's spacing)")
    return None
  if "full" not in curvature:
    raise ValueError(f"warm_start={warm_start!r} warm-starts the Lanczos runs of curvature='full'; got curvature="
                     f"{list(curvature) or None}")
  if isinstance(warm_start, bool) or not isinstance(warm_start, (int, np.integer)) or warm_start < 1:
    raise ValueError(f"warm_start must be a positive integer (a coarse point every k grid points); got {warm_start!r}")
  steps = max(40, 4 * int(lanczos_steps)) if steps is None else steps
  if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1:
    raise ValueError(f"warm_start_steps must be a positive integer; got {steps!r}")
  return int(warm_start), int(steps)


def _warm_starts(warm: tuple[int, int], shape: tuple[int, ...], axes: Sequence[np.ndarray], mine: np.ndarray,
                 mesh: jax.sharding.Mesh, per_device: int, lanczos_steps: int, chunks_per_call: int,
                 inputs: PointInputs, objective: Objective, dtype: Any, num_params: int,
                 quiet: bool) -> tuple[WarmStarts, dict[str, Any]]:
  """The coarse pass: seeds at the coarse points nearest to this run's points ``mine``.

  Each coarse point's seed depends only on its index (key
  ``fold_in(fold_in(key, _COARSE_KEY), i)``), so any subset of them (a part, a
  process's share, a resume) computes the same values. The coarse chunk holds
  ``(lanczos_steps + 1) / (steps + 1)`` of the fine chunk's points, so its
  Lanczos bases take about the fine chunk's memory.

  Returns:
    ``(WarmStarts(table, seeds), meta)``: for every grid point the row of
    ``seeds`` to start from (valid for ``mine``), the seeds
    ``[max(1, n), num_params]``, and the pass's record.
  """
  every, steps = warm
  coarse, table = _warm_start_plan(shape, every)
  needed = np.unique(table[mine])
  nbytes = needed.size * num_params * np.dtype(dtype).itemsize
  if nbytes > WARM_START_MAX_BYTES:
    raise ValueError(f"warm_start={every} keeps {needed.size} start vectors of {num_params} parameters "
                     f"({nbytes / 2**30:.2f} GiB on every device); expected at most jaxscape.surface."
                     f"WARM_START_MAX_BYTES = {WARM_START_MAX_BYTES / 2**30:.2f} GiB: use a larger warm_start, split "
                     "the grid with part=(i, n), or no warm start")
  seeds = np.zeros((max(1, needed.size), num_params), dtype)
  start = time.perf_counter()
  if needed.size:
    from tqdm.auto import tqdm

    ngrid = mesh.shape["grid"]
    chunk = max(1, per_device * (lanczos_steps + 1) // (steps + 1)) * ngrid
    per_call = int(min(chunks_per_call, math.ceil(needed.size / chunk)))
    size = chunk * per_call
    evaluate = _call_evaluator(mesh, per_call, WarmStartSpec(steps))
    replicated = NamedSharding(mesh, P())
    coarse_key = jax.device_put(jax.random.fold_in(inputs.key, _COARSE_KEY), replicated)
    coarse_inputs = dataclasses.replace(inputs, key=coarse_key, warm=None)
    for s in tqdm(range(0, needed.size, size), disable=quiet, desc="warm start", unit="call"):
      idx = coarse[needed[s:s + size]]
      c = np.zeros((size, len(axes)))
      c[: idx.size] = grid_coordinates(axes, idx)
      i = np.zeros(size, np.int32)
      i[: idx.size] = idx
      out = evaluate(_chunk(c, i, dtype, mesh), coarse_inputs, objective)
      seeds[s:s + idx.size] = np.asarray(jax.device_get(out["warm_start"]))[: idx.size]
  rows = np.clip(np.searchsorted(needed, table), 0, max(needed.size - 1, 0)).astype(np.int32)
  meta = {"every": every, "lanczos_steps": steps, "coarse_points": int(coarse.size), "computed": int(needed.size),
          "hvps": int(needed.size * steps), "wall_time_s": time.perf_counter() - start, "bytes_per_device": int(nbytes)}
  return WarmStarts(rows, seeds), meta


def _without_batches(objective: Objective) -> Objective:
  return dataclasses.replace(objective, x=None, y=None, w=None)


SAVE_ALWAYS_POINTS = 100_000
"""Grids up to this many points are saved after every call; larger ones at most :data:`MAX_SAVES` times."""
MAX_SAVES = 100


def saves_every(num_points: int, num_calls: int) -> int:
  """Save after every this many calls: 1, or for a large grid enough calls apart for at most ``MAX_SAVES`` saves.

  Each save writes (and compresses) the whole grid's maps, so saving a large
  grid after every call would cost time quadratic in its size; with at most
  ``MAX_SAVES`` saves a kill loses at most ``1 / MAX_SAVES`` of the run.

  Example:
    >>> saves_every(10_000, 500), saves_every(9_006_001, 8_796)
    (1, 88)
  """
  return 1 if num_points <= SAVE_ALWAYS_POINTS else max(1, math.ceil(num_calls / MAX_SAVES))


def _chunk(coords: np.ndarray, index: np.ndarray, dtype: Any, mesh: jax.sharding.Mesh) -> Chunk:
  """A call's points on ``mesh``, sharded over its ``"grid"`` axis."""
  grid_sharding = NamedSharding(mesh, P("grid"))
  return Chunk(jax.device_put(jnp.asarray(coords, dtype), grid_sharding),
               jax.device_put(jnp.asarray(index), grid_sharding))


@functools.lru_cache(maxsize=32)
def _call_evaluator(mesh: jax.sharding.Mesh, chunks_per_call: int, spec: PointSpec | WarmStartSpec = PointSpec()):
  """Jitted ``(chunk: Chunk [P points], inputs: PointInputs, objective) -> {name: [P]}`` sharded over ``mesh``.

  The points are sharded over the mesh's ``"grid"`` axis and the examples of
  every data batch (``objective.x/y/w``, axis 1) over its ``"data"`` axis.
  Each device splits its points into ``chunks_per_call`` chunks and
  evaluates them one after another (``lax.map``) with the point function
  ``spec`` on its share of the data. ``spec``'s outputs are sums over
  examples divided by ``N`` (linear in the data), so ``psum`` over ``"data"``
  gives the full-data values; :func:`~jaxscape.surface.points.finish_maps`
  then adds the non-linear maps. Cached per mesh and (hashable) spec; ``jit``
  caches per shapes, so all calls of a run share one compilation.
  """

  def local(chunk, inputs, objective, batches):
    objective = dataclasses.replace(objective, x=batches[0], y=batches[1], w=batches[2])
    chunks = jax.tree.map(lambda a: a.reshape(chunks_per_call, -1, *a.shape[1:]), chunk)
    out = jax.lax.map(lambda c: spec(c, inputs, objective), chunks)
    out = jax.lax.psum(out, "data")
    return finish_maps(jax.tree.map(lambda s: s.reshape(-1, *s.shape[2:]), out))

  specs = (P("grid"), P(), P(), P(None, "data"))
  # The only collective is the psum over "data": every device works on its
  # own points. Without the varying-axes check, any library code (scans with
  # zero-initialised carries, e.g. Lanczos) runs unchanged inside.
  sharded = jax.shard_map(local, mesh=mesh, in_specs=specs, out_specs=P("grid"), check_vma=False)

  def evaluate(chunk, inputs, objective):
    batches = (objective.x, objective.y, objective.w)
    return sharded(chunk, inputs, _without_batches(objective), batches)

  return jax.jit(evaluate)


def _curvature_spec(curvature: str | Sequence[str] | None, n: int, key: jax.Array | None) -> tuple[str, ...]:
  if curvature is None:
    return ()
  maps = (curvature,) if isinstance(curvature, str) else tuple(curvature)
  bad = [m for m in maps if m not in CURVATURES]
  if bad:
    raise ValueError(f"unknown curvature map(s) {bad}: expected some of {CURVATURES}")
  if "plane" in maps and n != 2:
    raise ValueError(f"curvature='plane' needs a 2-D surface (two directions); got {n}")
  if "full" in maps and key is None:
    raise ValueError("curvature='full' needs key=jax.random.key(...) for its Lanczos and trace probes")
  return tuple(sorted(set(maps)))


def _mesh(devices: Sequence[jax.Device] | None, data_shards: int = 1) -> jax.sharding.Mesh:
  """A 2-D ``("grid", "data")`` mesh of ``len(devices) / data_shards`` x ``data_shards`` devices."""
  devices = list(jax.local_devices() if devices is None else devices)
  if not devices:
    raise ValueError("devices must be a non-empty list of jax devices")
  if not isinstance(data_shards, (int, np.integer)) or data_shards < 1 or len(devices) % data_shards:
    raise ValueError(f"data_shards must be a positive integer that divides the number of devices ({len(devices)}); "
                     f"got {data_shards!r}")
  shape = (len(devices) // int(data_shards), int(data_shards))
  return jax.make_mesh(shape, ("grid", "data"), devices=devices, axis_types=(jax.sharding.AxisType.Explicit,) * 2)


def _check_data_shards(objective: Objective, data_shards: int, curvature: tuple[str, ...]) -> None:
  if objective.batch_size % data_shards:
    from ..objective import _balanced

    n = objective.num_examples
    fits = [b for b in range(objective.batch_size, 0, -1) if _balanced(n, b) % data_shards == 0]
    hint = (f"e.g. batch_size={fits[0]} (balanced to {-(-n // _balanced(n, fits[0]))} batches of "
            f"{_balanced(n, fits[0])})" if fits else "no batch size does for so few examples")
    raise ValueError(f"the objective's batch size ({objective.batch_size}, balanced over {n} examples) must be "
                     f"divisible by data_shards ({data_shards}): {hint}, or use fewer data shards")
  if data_shards > 1 and "full" in curvature:
    raise ValueError("curvature='full' (Lanczos and trace at every point) needs data_shards=1; "
                     f"got data_shards={data_shards} (curvature='plane' works with any data_shards)")


def _place(objective: Objective, mesh: jax.sharding.Mesh) -> Objective:
  """The objective on ``mesh``: data batches sharded over ``"data"`` (examples axis), the rest replicated."""
  batches = jax.device_put((objective.x, objective.y, objective.w), NamedSharding(mesh, P(None, "data")))
  rest = jax.device_put(_without_batches(objective), NamedSharding(mesh, P()))
  return dataclasses.replace(rest, x=batches[0], y=batches[1], w=batches[2])


class NonFiniteOriginError(ValueError):
  """The loss at the centre of a plot is NaN or infinite: the parameters (checkpoint) are broken."""


def _check_params(params: PyTree) -> None:
  """Parameters a surface can move: floating leaves of one dtype, all finite."""
  names, leaves = tree.leaf_names(params), jax.tree.leaves(params)
  dtypes = {}
  for name, leaf in zip(names, leaves):
    dt = np.dtype(leaf.dtype) if hasattr(leaf, "dtype") else np.asarray(leaf).dtype
    if not jnp.issubdtype(dt, jnp.floating):
      raise ValueError(f"parameter leaf {name!r} has dtype {dt}: expected floating-point parameters (a direction "
                       "cannot move an integer leaf; keep it out of params, e.g. in the model state)")
    dtypes.setdefault(str(dt), []).append(name)
  if len(dtypes) > 1:
    raise ValueError(f"parameters mix dtypes {dict((k, v[:3]) for k, v in dtypes.items())}: grid points would be "
                     "computed in the promoted dtype, silently changing the model's precision; cast them to one dtype "
                     "first (jaxscape.tree.astype(params, dtype))")
  bad = [name for name, leaf in zip(names, leaves) if not bool(np.all(np.isfinite(np.asarray(leaf))))]
  if bad:
    raise NonFiniteOriginError(f"the parameters hold NaN or infinite values (leaves {bad[:5]}): the checkpoint is "
                               "broken, not the landscape; expected finite parameters at the centre of the plot")


@jax.jit
def _origin_loss(objective: Objective, params: PyTree) -> jax.Array:
  """The full-data loss at ``params`` (:meth:`~jaxscape.Objective.full_sums`'s scan) through :func:`_batch_sums`,
  whose trace it shares with the chunk-size probe."""
  rest = _without_batches(objective)
  sums = objective.sum_over_batches(lambda batch: _batch_sums(rest, params, batch))
  return sums["loss"] / objective.total_weight


def _check_data_dtype(objective: Objective, params: PyTree) -> None:
  """Floating inputs must have the parameters' dtype: a mix would silently compute every point in the promoted one."""
  dtype = np.dtype(jnp.result_type(*jax.tree.leaves(params)))
  floating = [np.dtype(a.dtype) for a in jax.tree.leaves(objective.x) if jnp.issubdtype(a.dtype, jnp.floating)]
  x_dtype = next((dt for dt in floating if dt != dtype), dtype)
  if x_dtype != dtype:
    raise ValueError(f"the objective's inputs are {x_dtype} but the parameters are {dtype}: every grid point would be "
                     f"computed in {np.promote_types(x_dtype, dtype)}, silently changing the model's precision; give "
                     f"data and parameters one dtype (e.g. x.astype({str(dtype)!r}))")


def _check_origin(objective: Objective, params: PyTree) -> None:
  """Stops a run at once when the loss at the centre of the plot is not finite."""
  value = float(_origin_loss(objective, params))
  if not np.isfinite(value):
    raise NonFiniteOriginError(f"the loss at the centre of the plot (the given parameters) is {value}; expected a "
                               "finite loss: the checkpoint or the objective is broken, not the landscape (grid "
                               "points that diverge are recorded as NaN and counted, the centre is not)")


def _key_first(fn):
  """Also accepts the older call ``fn(objective, ..., key=k)`` (an :class:`Objective` first, the key by keyword)."""
  @functools.wraps(fn)
  def wrapper(*args, **kwargs):
    if args and isinstance(args[0], Objective):
      args = (kwargs.pop("key", None), *args)
    elif not args and "key" not in kwargs:  # all by keyword, without a key
      kwargs["key"] = None
    return fn(*args, **kwargs)

  return wrapper


@_key_first
def loss_surface(
    key: jax.Array | None,
    objective: Objective,
    params: PyTree,
    directions: Directions | Sequence[PyTree],
    x: Range = (-1.0, 1.0, 51),
    y: Range | None = None,
    *,
    ranges: Sequence[Range] | None = None,
    chunk_size: int | None = None,
    chunks_per_call: int = 8,
    devices: Sequence[jax.Device] | None = None,
    out_dir: str | None = None,
    quiet: bool = False,
    config: dict[str, Any] | None = None,
    curvature: str | Sequence[str] | None = None,
    lanczos_steps: int = 10,
    trace_probes: int = 10,
    warm_start: int | None = None,
    warm_start_steps: int | None = None,
    data_shards: int = 1,
    part: tuple[int, int] | None = None,
    overwrite: bool = False,
) -> Surface:
  """Evaluates the full-data loss (and metrics) over a grid of directions.

  For grid coordinates ``c`` and directions ``d_1 … d_n`` the surface is the
  full-data loss at ``θ + Σ_j c_j d_j`` (Li et al. 2018). Two call forms:

  * ``loss_surface(key, objective, params, directions, ...)``: the key first
    (``None`` for a loss-only or ``plane`` surface, which use no randomness);
  * ``loss_surface(objective, params, directions, ..., key=key)``: the older
    form, an :class:`~jaxscape.Objective` first and the key by keyword (or
    none at all for a loss-only surface).

  Args:
    key: ``jax.random.key`` for the random parts of the work: the ``full``
      curvature map's Lanczos and trace probes (point ``i`` uses
      ``fold_in(key, i)``, so maps do not depend on chunking or devices) and
      its warm start. Without one, those are a ``ValueError`` (never a silent
      default key); a loss-only or ``plane`` surface needs none.
    objective: the :class:`~jaxscape.Objective` (data, model, loss).
    params: the centre of the plot ``θ`` (the grid's origin).
    directions: :class:`~jaxscape.Directions` or a list of pytrees like
      ``params``; one per grid axis.
    x, y: ``(start, stop, num)`` or ``"start:stop:num"`` for the first and
      second direction (``y=None`` with one direction: a 1-D curve).
    ranges: instead of ``x``/``y``, one range per direction (n-D grids).
    chunk_size: grid points evaluated at once (all devices together; rounded
      up to a multiple of the device count). It bounds memory. Default: from
      the parameter count and batch size (:func:`default_chunk_size`).
    chunks_per_call: chunks per compiled call; results are saved and the
      progress bar advances after every call.
    devices: devices to shard the grid over (default: all local devices).
    out_dir: write ``results.npz``/``meta.json`` here after every call and
      resume from it when rerun with the same config.
    quiet: no progress bar.
    config: extra JSON-able entries recorded in (and checked against) the
      saved config, e.g. the checkpoint a CLI run came from.
    curvature: ``"plane"``, ``"full"`` or both (see :data:`CURVATURES`):
      curvature maps computed at every grid point in the same pass and
      stored in the same result (``surf.metrics``). ``plane`` costs about
      three extra forward-over-forward passes per point; ``full`` costs
      ``lanczos_steps + trace_probes`` Hessian-vector products per point.
    lanczos_steps, trace_probes: sizes of the ``full`` curvature estimates.
    warm_start: ``k``: warm-start the ``full`` map's Lanczos runs. A coarse
      pass first runs a cold Lanczos of ``warm_start_steps`` HVPs at every
      ``k``-th grid point along each axis (and the last), keyed
      ``fold_in(fold_in(key, 2**32 - 1), i)``, and keeps the unit sum of its
      extreme Ritz vectors; every point then starts its ``lanczos_steps``
      run from its nearest coarse point's vector plus a 1e-3 random part
      (``fold_in(fold_in(key, i), 1)``). Points stay independent, so the maps
      still do not depend on chunking, devices, parts or resume. Costs
      ``n_coarse * warm_start_steps`` extra HVPs (``meta["warm_start"]``) and
      ``n_coarse * num_params`` values on every device (at most
      :data:`WARM_START_MAX_BYTES`; only the coarse points a part or process
      needs are held). Recorded in the config: a resume with another
      setting is refused.
    warm_start_steps: Lanczos steps of the coarse pass (default
      ``max(40, 4 * lanczos_steps)``).
    data_shards: split the examples of every data batch over this many
      devices (a ``("grid", "data")`` mesh of ``len(devices) / data_shards``
      x ``data_shards``); each device sums its share and ``psum`` adds them.
      For data (or activations) too large for one device. The objective's
      batch size must be divisible by it; ``curvature="full"`` needs 1.
    part: ``(i, n)``: evaluate only the ``i``-th (0-based) of ``n``
      contiguous slices of the flat grid (:func:`part_indices`), e.g. one task
      of a SLURM array. With ``out_dir``, the part writes to (and resumes
      from) :func:`part_directory` ``(out_dir, i, n)``; :func:`merge_surfaces`
      joins the parts. Points outside the part are NaN in the result.
    overwrite: replace whatever ``out_dir`` holds (another config, a damaged
      file) instead of refusing it; without it a rerun resumes.

  Under several processes (after :func:`jaxscape.distributed.initialize`)
  every process evaluates its share of the points on its local devices, all
  processes return the whole result and only process 0 writes ``out_dir``.
  The writing process holds ``out_dir``'s (or the part's)
  :class:`~jaxscape.io.RunLock` for the whole run: a second run on the same
  directory is refused at once, and readers (:func:`load_surface`) always
  see the last complete write.

  Returns:
    A :class:`Surface` with arrays indexed ``[iy, ix]``.

  Example:
    >>> import jax, jax.numpy as jnp, numpy as np
    >>> import jaxscape as js
    >>> x = np.random.default_rng(0).normal(size=(32, 4)).astype(np.float32)
    >>> y = (x[:, 0] > 0).astype(np.int32)
    >>> params = {"w": jnp.ones((4, 2)), "b": jnp.zeros(2)}
    >>> obj = js.Objective.from_apply(lambda p, x: x @ p["w"] + p["b"], params, data=(x, y))
    >>> dirs = js.random_directions(jax.random.key(0), params, n=2)
    >>> surf = js.loss_surface(jax.random.key(1), obj, params, dirs, x=(-1, 1, 5), y=(-1, 1, 3), quiet=True)
    >>> surf.loss.shape                       # [ny, nx]
    (3, 5)
    >>> bool(np.isclose(surf.loss[1, 2], obj.value(params)))   # origin = trained loss
    True
    >>> old = js.loss_surface(obj, params, dirs, x=(-1, 1, 5), y=(-1, 1, 3), quiet=True)  # the older form
    >>> bool(np.array_equal(old.loss, surf.loss))
    True

  Raises:
    ValueError: on bad input (ranges, directions that do not match the
      parameters' structure, shapes or dtypes, integer or mixed-dtype
      parameters, chunk sizes), or when ``out_dir`` holds a result of another
      config (the message names the differing fields), or when the grid's
      host arrays cannot fit in the available memory (checked before they are
      allocated; the message names the largest grid that fits).
    jaxscape.io.OutputDirError: when ``out_dir`` cannot hold the results (a
      file on its path, not writable, less free space than the results may
      take), checked before any grid point is evaluated.
    jaxscape.io.CorruptResultError: when ``out_dir`` holds damaged files.
    jaxscape.io.RunLockedError: when another process is writing ``out_dir``
      (the message names its pid and host).
    jaxscape.io.ResultWriteError: when a write fails (e.g. a full disk); the
      last complete write stays intact and a rerun resumes from it.
    NonFiniteOriginError: when the parameters or the loss at the origin are
      not finite (checked before anything is evaluated or written).
  """
  d = as_directions(directions, params)
  _check_params(params)
  axes = [parse_range(r, f"range {i}") for i, r in enumerate(ranges)] if ranges is not None else (
      [parse_range(x, "x")] + ([] if y is None else [parse_range(y, "y")]))
  if len(axes) != d.n:
    raise ValueError(f"got {d.n} direction(s) but {len(axes)} grid range(s): give one range per direction")
  shape = tuple(len(a) for a in reversed(axes))
  num_points = math.prod(shape)
  check_host_memory(shape, ("loss",))  # a first bound, before anything runs; the exact one below
  part_size = num_points
  if part is not None:
    part_size = part_indices(num_points, part).size
    part = (int(part[0]), int(part[1]))

  mesh = _mesh(devices, data_shards)
  ndev, ngrid = mesh.size, mesh.shape["grid"]
  curv = _curvature_spec(curvature, d.n, key)
  warm = _warm_start_spec(warm_start, warm_start_steps, curv, lanczos_steps)
  _check_data_shards(objective, int(data_shards), curv)
  # before anything runs the model: a dtype mix is this error, not a promotion error from inside the model
  _check_data_dtype(objective, params)
  if chunk_size is None:
    chunk_size = default_chunk_size(objective, params, ngrid)
  for name, v in (("chunk_size", chunk_size), ("chunks_per_call", chunks_per_call)):
    if not isinstance(v, (int, np.integer)) or v < 1:
      raise ValueError(f"{name} must be a positive integer; got {v!r}")
  # The chunk shape follows the whole grid (not the part or the process's
  # share), so a part computes exactly what a single run would.
  per_device = min(math.ceil(chunk_size / ngrid), math.ceil(num_points / ngrid))
  chunk_size = int(per_device * ngrid)
  nproc, pid = jax.process_count(), jax.process_index()
  chunks_per_call = int(min(chunks_per_call, math.ceil(part_size / nproc / chunk_size)))
  call_size = chunk_size * chunks_per_call

  dtype = jnp.result_type(*jax.tree.leaves(params))
  spec = PointSpec(curv, int(lanczos_steps), int(trace_probes), warm is not None)
  if d.state_vectors is not None and jax.tree.structure(d.state_vectors) != jax.tree.structure(objective.state):
    raise ValueError("the directions' state_vectors do not have the structure of the objective's state: "
                     f"{jax.tree.structure(d.state_vectors)} vs {jax.tree.structure(objective.state)}")
  _check_origin(objective, params)
  replicated = NamedSharding(mesh, P())
  inputs = jax.device_put(PointInputs(key, params, d.vectors, d.state_vectors), replicated)
  placed = _place(objective, mesh)
  if warm is not None:  # the seeds' shapes are known after the coarse pass: stand-ins here, one more trace then
    inputs = dataclasses.replace(inputs, warm=jax.device_put(
        WarmStarts(np.zeros(num_points, np.int32), np.zeros((1, tree.size(params)), dtype)), replicated))
  evaluate = _call_evaluator(mesh, chunks_per_call, spec)
  # The output names from the evaluator's own trace, which the calls below reuse (same shapes).
  shapes = jax.eval_shape(evaluate, _chunk(np.zeros((call_size, d.n)), np.zeros(call_size, np.int32), dtype, mesh),
                          inputs, placed)
  names = ("loss",) + tuple(k for k in shapes if k != "loss")
  run_config = {
      "kind": "surface",
      "axes": [[float(a[0]), float(a[-1]), int(a.size)] for a in axes],
      "directions": d.info,
      "objective": objective.describe(),
      "dtype": str(np.dtype(dtype)),
      "chunk_size": chunk_size,  # the batch of the vmapped evaluation: values differ in the last bits with it
      "num_params": tree.size(params),
      "params_fingerprint": _io.fingerprint(params),
      "data_fingerprint": _io.fingerprint((objective.x, objective.y, objective.w)),
      "state_fingerprint": _io.fingerprint(objective.state),
      "directions_fingerprint": _io.fingerprint((d.vectors, d.state_vectors)),
      "bn_policy": d.info.get("bn_policy", objective.describe().get("bn_policy", "none")),
      **({"curvature": {"maps": list(curv), "key": None if key is None else _io.key_record(key), "lanczos_steps": int(lanczos_steps),
                        "trace_probes": int(trace_probes),
                        **({"warm_start": {"every": warm[0], "lanczos_steps": warm[1]}} if warm else {})}}
         if curv else {}),
      **({"part": list(part)} if part is not None else {}),
      **(config or {}),
  }
  check_host_memory(shape, names)
  directory = out_dir if out_dir is None or part is None else part_directory(out_dir, *part)
  if directory is not None and pid == 0:
    _io.check_output_dir(directory, need_bytes=result_bytes(shape, len(names)))
  values = {k: np.full(num_points, np.nan) for k in names}
  done = np.zeros(num_points, bool)
  in_part = np.ones(num_points, bool)
  if part is not None:
    in_part[:] = False
    in_part[part_indices(num_points, part)] = True
  # Only process 0 reads and writes the directory; the others get its state.
  store = _io.ResultStore(directory, run_config, overwrite=overwrite) if directory is not None and pid == 0 else None
  try:  # the store holds the directory's lock from open() to close()
    error = None
    if store is not None:
      try:
        previous = store.open()
      except Exception as e:  # re-raised below, after the others have been told, so that none waits forever
        previous, error = None, e
      if previous is not None and "done" in previous:
        done = previous["done"].ravel().astype(bool)
        for k in names:
          values[k] = previous[k].ravel().astype(np.float64)
    if nproc > 1:
      shared = _dist.broadcast({"failed": np.array(error is not None), "done": done,
                                "values": np.stack([values[k] for k in names])})
      if shared["failed"] and error is None:
        raise ValueError(f"process 0 could not resume from {directory!r}; see its error")
      done, values = shared["done"].copy(), {k: v.copy() for k, v in zip(names, shared["values"])}
    if error is not None:
      raise error
    todo = np.flatnonzero(~done & in_part)
    done_before = int(done.sum())
    # One call per process per round; with one process a round is one call.
    rounds = [todo[i:i + call_size * nproc] for i in range(0, todo.size, call_size * nproc)]

    start = time.perf_counter()
    warm_meta = None
    if warm is not None:  # the coarse pass, for this process's points only
      mine = np.concatenate([np.array_split(r, nproc)[pid] for r in rounds] + [np.zeros(0, np.int64)])
      seeds, warm_meta = _warm_starts(warm, shape, axes, mine, mesh, per_device, int(lanczos_steps), chunks_per_call,
                                      inputs, placed, dtype, tree.size(params), quiet or pid != 0)
      inputs = dataclasses.replace(inputs, warm=jax.device_put(seeds, replicated))
    env = _io.environment()
    env["device_count"] = ndev
    env["mesh"] = {"grid": ngrid, "data": int(data_shards)}

    def result(wall: float, evaluated: int) -> Surface:
      loss = values["loss"].reshape(shape)
      meta = {"environment": env, "chunk_size": chunk_size, "chunks_per_call": chunks_per_call, "wall_time_s": wall,
              "points_evaluated": evaluated, "points_per_second": evaluated / wall if wall > 0 else None,
              "num_points": num_points, "num_done": int(done.sum()),
              "num_nonfinite": int(np.sum(~np.isfinite(values["loss"]) & done)),
              **({"part_points": int(in_part.sum())} if part is not None else {}),
              **({"warm_start": warm_meta} if warm_meta is not None else {}),
              "config": _io.to_jsonable(run_config)}
      metrics = {k: values[k].reshape(shape) for k in names[1:]}
      return Surface(tuple(axes), loss, metrics, meta["num_nonfinite"], meta)

    def save(surf: Surface) -> None:
      if store is not None:
        store.write({**surf.to_arrays(), "done": done.reshape(shape)}, surf.meta, final=bool(done[in_part].all()))

    from tqdm.auto import tqdm

    every = saves_every(num_points, len(rounds))
    for r, points in enumerate(tqdm(rounds, disable=quiet or pid != 0, desc="surface", unit="call")):
      idx = np.array_split(points, nproc)[pid]
      c = np.zeros((call_size, len(axes)))
      c[: idx.size] = grid_coordinates(axes, idx)
      i = np.zeros(call_size, np.int32)
      i[: idx.size] = idx
      out = jax.device_get(evaluate(_chunk(c, i, dtype, mesh), inputs, placed))
      got = {"index": np.where(np.arange(call_size) < idx.size, i, -1), **{k: np.asarray(out[k]) for k in names}}
      got = {k: v.reshape(-1) for k, v in _dist.allgather(got).items()}  # [nproc * call_size]
      keep = got["index"] >= 0
      idx = got["index"][keep]
      for k in names:
        v = np.asarray(got[k][keep], np.float64)
        values[k][idx] = np.where(np.isfinite(v), v, np.nan)
      done[idx] = True
      if (r + 1) % every == 0 or r + 1 == len(rounds):
        save(result(time.perf_counter() - start, int(done.sum()) - done_before))
    surf = result(time.perf_counter() - start, todo.size)
    if not rounds:
      save(surf)
    return surf
  finally:
    if store is not None:
      store.close()
