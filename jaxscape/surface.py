"""Loss surfaces: the loss over 1-D, 2-D (or n-D) grids of directions.

For grid coordinates ``c`` and directions ``d_1 … d_n`` the surface is the
full-data loss at ``θ + Σ_j c_j d_j`` (Li et al. 2018). Evaluation is by
chunks of grid points: within a chunk, ``vmap`` over points runs inside a
``lax.scan`` over the data batches, so every batch is read once per chunk
rather than once per point. The chunk size bounds memory: by default it is
chosen so that a chunk's working set (a perturbed copy of the parameters and
the activations of one batch per point) fits the device's cache on CPU or a
quarter of its memory on an accelerator. Several chunks make one compiled
call (``lax.map`` over chunks), whose points are sharded over all local
devices (``jax.shard_map`` on a 1-D ``"grid"`` mesh); one compilation serves
every call. Results are identical (to float tolerance) for any chunk size and
any device count.

With ``out_dir``, the result is written atomically after every call and a
rerun with the same config resumes where it stopped.

Example:
  >>> import jax, jax.numpy as jnp, numpy as np
  >>> import jaxscape as js
  >>> x = np.random.default_rng(0).normal(size=(32, 4)).astype(np.float32)
  >>> y = (x[:, 0] > 0).astype(np.int32)
  >>> params = {"w": jnp.ones((4, 2)), "b": jnp.zeros(2)}
  >>> obj = js.Objective.from_apply(lambda p, x: x @ p["w"] + p["b"], params, data=(x, y))
  >>> dirs = js.random_directions(jax.random.key(0), params, n=2)
  >>> surf = js.loss_surface(obj, params, dirs, x=(-1, 1, 5), y=(-1, 1, 3), quiet=True)
  >>> surf.loss.shape                       # [ny, nx]
  (3, 5)
  >>> bool(np.isclose(surf.loss[1, 2], obj.value(params)))   # origin = trained loss
  True
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

from . import io as _io
from . import tree
from .directions import Directions, as_directions, move_state
from .objective import Objective

PyTree = Any
Range = tuple[float, float, int] | str

__all__ = ["Surface", "loss_surface", "parse_range", "grid_coordinates", "default_chunk_size", "load_surface"]

_AXIS_NAMES = ("x", "y", "z")


def parse_range(spec: Range, name: str = "range") -> np.ndarray:
  """Coordinates from ``(start, stop, num)`` or the string ``"start:stop:num"``.

  Odd ``num`` over a symmetric range puts the origin on the grid.

  Example:
    >>> parse_range("-1:1:5").tolist()
    [-1.0, -0.5, 0.0, 0.5, 1.0]
  """
  if isinstance(spec, str):
    parts = spec.split(":")
    if len(parts) != 3:
      raise ValueError(f"{name} must be 'start:stop:num' (e.g. '-1:1:51'); got {spec!r}")
    try:
      spec = (float(parts[0]), float(parts[1]), int(parts[2]))
    except ValueError:
      raise ValueError(f"{name} must be 'start:stop:num' with numbers (e.g. '-1:1:51'); got {spec!r}") from None
  if not (isinstance(spec, (tuple, list)) and len(spec) == 3):
    raise ValueError(f"{name} must be (start, stop, num) or 'start:stop:num'; got {spec!r}")
  start, stop, num = spec
  if isinstance(num, float) and num.is_integer():
    num = int(num)
  if not isinstance(num, (int, np.integer)) or num < 1:
    raise ValueError(f"{name}: num must be a positive integer; got {num!r}")
  if not (np.isfinite(start) and np.isfinite(stop)):
    raise ValueError(f"{name}: start and stop must be finite; got {start!r}, {stop!r}")
  return np.linspace(float(start), float(stop), int(num))


def grid_coordinates(axes: Sequence[np.ndarray]) -> np.ndarray:
  """All grid points as ``[num_points, n]``, in the C order of the result array.

  The result array has shape ``(n_{k-1}, …, n_1, n_0)`` — ``[ny, nx]`` in
  2-D — so flat index ``i`` is the point ``(x[i % nx], y[i // nx])``.
  """
  grids = np.meshgrid(*reversed(list(axes)), indexing="ij")
  return np.stack([g.ravel() for g in reversed(grids)], axis=-1)


@dataclasses.dataclass(frozen=True)
class Surface:
  """A loss surface and everything needed to re-plot or resume it.

  Attributes:
    axes: coordinates along each direction (``(x,)`` or ``(x, y)``).
    loss: ``[nx]`` or ``[ny, nx]`` full-data losses (NaN where not finite).
    metrics: same-shaped arrays per metric (e.g. ``accuracy``), plus any
      maps added later (curvature).
    num_nonfinite: grid points whose loss was NaN or infinite.
    meta: config, directions record, dataset, environment, timing.
  """

  axes: tuple[np.ndarray, ...]
  loss: np.ndarray
  metrics: dict[str, np.ndarray]
  num_nonfinite: int
  meta: dict[str, Any]

  @property
  def x(self) -> np.ndarray:
    return self.axes[0]

  @property
  def y(self) -> np.ndarray | None:
    return self.axes[1] if len(self.axes) > 1 else None

  @property
  def ndim(self) -> int:
    return len(self.axes)

  @property
  def accuracy(self) -> np.ndarray | None:
    return self.metrics.get("accuracy")

  def origin_index(self) -> tuple[int, ...] | None:
    """Array index of the grid point at coordinate 0 on every axis, if on the grid."""
    idx = []
    for a in reversed(self.axes):
      hits = np.flatnonzero(np.isclose(a, 0.0, atol=1e-12))
      if hits.size == 0:
        return None
      idx.append(int(hits[0]))
    return tuple(idx)

  def to_arrays(self) -> dict[str, np.ndarray]:
    arrays = {_axis_name(i): a for i, a in enumerate(self.axes)}
    arrays["loss"] = self.loss
    arrays.update(self.metrics)
    return arrays

  def with_maps(self, **maps: np.ndarray) -> "Surface":
    """A copy with extra same-shaped maps (e.g. curvature) added to ``metrics``."""
    for k, v in maps.items():
      if np.shape(v) != self.loss.shape:
        raise ValueError(f"map {k!r} has shape {np.shape(v)}; the surface is {self.loss.shape}")
    return dataclasses.replace(self, metrics={**self.metrics, **{k: np.asarray(v) for k, v in maps.items()}})


def _axis_name(i: int) -> str:
  return _AXIS_NAMES[i] if i < len(_AXIS_NAMES) else f"axis{i}"


def load_surface(directory: str) -> Surface:
  """Reads a saved surface back (for re-plotting without recomputing)."""
  arrays, meta = _io.load_result(directory)
  axes = []
  while _axis_name(len(axes)) in arrays:
    axes.append(arrays.pop(_axis_name(len(axes))))
  if not axes or "loss" not in arrays:
    raise ValueError(f"{directory!r} does not hold a surface: expected arrays 'x' and 'loss', found {sorted(arrays)}")
  loss = arrays.pop("loss")
  arrays.pop("done", None)
  return Surface(tuple(axes), loss, arrays, int(np.sum(~np.isfinite(loss))), meta)


def default_chunk_size(objective: Objective, params: PyTree, num_devices: int = 1, *,
                       memory_budget: float | None = None) -> int:
  """Grid points per chunk (all devices together) for a working set of ``memory_budget`` bytes per device.

  A point costs a perturbed copy of the parameters plus the activations of
  one batch; the latter is read from the compiler's memory analysis of a
  one-point batch evaluation (falling back to an estimate from the output
  size when the backend gives none). The default budget is 8 MB per device
  on CPU (a chunk that stays in cache is up to 3x faster than a large one)
  and a quarter of the device memory (or 1 GB) on an accelerator. The result
  is a multiple of the device count, at most 1024 points per device.
  """
  if memory_budget is None:
    memory_budget = _default_budget()
  itemsize = max(np.dtype(x.dtype).itemsize for x in jax.tree.leaves(params))
  param_bytes = tree.size(params) * itemsize
  batch = (objective.x[0], objective.y[0], objective.w[0])
  act_bytes = 0
  try:
    analysis = jax.jit(objective.batch_sums).lower(params, batch).compile().memory_analysis()
    act_bytes = int(getattr(analysis, "temp_size_in_bytes", 0) or 0)
  except Exception:  # some backends have no memory analysis
    act_bytes = 0
  if act_bytes <= 0:
    out = jax.eval_shape(lambda p: objective.apply(p, objective.state, batch[0]), params)
    act_bytes = 8 * int(np.prod(out.shape)) * itemsize + objective.batch_size * 1024 * itemsize
  per_point = 2 * param_bytes + act_bytes
  per_device = int(max(1, min(1024, memory_budget // per_point)))
  return per_device * num_devices


def _default_budget() -> float:
  device = jax.local_devices()[0]
  if device.platform == "cpu":
    return 8e6
  try:
    return 0.25 * float(device.memory_stats()["bytes_limit"])
  except Exception:  # no memory stats on this backend
    return 1e9


def _point_state(objective: Objective, c: jax.Array, state_vectors: PyTree) -> PyTree:
  """The model state at grid point ``c``: fixed, or moved with the parameters (BatchNorm ``interpolate``)."""
  return objective.state if state_vectors is None else move_state(objective.state, c, state_vectors)


def _loss_chunk(coords, index, key, params, vectors, objective):
  """Mean loss and metrics at a chunk of points: ``vmap`` over points inside the scan over batches."""
  del index, key
  vectors, state_vectors = vectors

  def chunk_sums(batch):
    def point(c):
      return objective.batch_sums(tree.add(params, tree.combine(c, vectors)), batch,
                                  state=_point_state(objective, c, state_vectors))

    return jax.vmap(point)(coords)

  def body(carry, batch):
    return jax.tree.map(jnp.add, carry, chunk_sums(batch)), None

  # The first batch initialises the carry (it is then already sharded like
  # the grid), the scan adds the others.
  batches = (objective.x, objective.y, objective.w)
  first = chunk_sums(jax.tree.map(lambda b: b[0], batches))
  sums, _ = jax.lax.scan(body, first, jax.tree.map(lambda b: b[1:], batches))
  return jax.tree.map(lambda v: v / objective.num_examples, sums)


CURVATURES = ("plane", "full")
"""Curvature maps: ``plane`` = the exact 2x2 Hessian projected on the plot
plane (nested ``jvp``; ``h_xx, h_xy, h_yy`` and its eigenvalues
``plane_lambda_min/max``); ``full`` = the full Hessian's ``lambda_max``,
``lambda_min``, ``convexity_ratio`` = |λmin/λmax| (Li et al. 2018) from a
short Lanczos run, and a Hutchinson ``trace`` (± ``trace_stderr``)."""


@functools.lru_cache(maxsize=32)
def _chunk_fn(curvature: tuple[str, ...], lanczos_steps: int, trace_probes: int):
  """The per-chunk function: the loss, plus the requested curvature maps (cached: stable identity for jit)."""
  if not curvature:
    return _loss_chunk
  from . import hessian

  def fn(coords, index, key, params, vectors, objective):
    out = _loss_chunk(coords, index, key, params, vectors, objective)

    param_vectors, state_vectors = vectors

    def at(c):
      return tree.add(params, tree.combine(c, param_vectors))

    def obj_at(c):
      return dataclasses.replace(objective, state=_point_state(objective, c, state_vectors))

    if "plane" in curvature:
      d1, d2 = (jax.tree.map(lambda v, i=i: v[i], param_vectors) for i in range(2))
      h = jax.vmap(lambda c: hessian.projected_hessian(obj_at(c), at(c), d1, d2))(coords)
      ev = jnp.linalg.eigvalsh(h)
      out.update(h_xx=h[:, 0, 0], h_xy=h[:, 0, 1], h_yy=h[:, 1, 1], plane_lambda_min=ev[:, 0], plane_lambda_max=ev[:, 1])
    if "full" in curvature:
      def point(c, i):
        return hessian.point_curvature(obj_at(c), at(c), jax.random.fold_in(key, i), num_steps=lanczos_steps,
                                       num_probes=trace_probes)

      out.update(jax.vmap(point)(coords, index))
    return out

  return fn


@functools.lru_cache(maxsize=32)
def _call_evaluator(mesh: jax.sharding.Mesh, chunks_per_call: int, chunk_fn=_loss_chunk):
  """Jitted ``(coords [P, n], index [P], key, params, vectors, objective) -> {name: [P]}`` sharded over ``mesh``.

  Each device splits its ``P / num_devices`` points into ``chunks_per_call``
  chunks and evaluates them one after another (``lax.map``) with
  ``chunk_fn``. Cached per mesh; ``jit`` caches per shapes, so all calls of
  a run share one compilation.
  """

  def local(coords, index, key, params, vectors, objective):
    chunks = coords.reshape(chunks_per_call, -1, coords.shape[-1])
    indices = index.reshape(chunks_per_call, -1)
    out = jax.lax.map(lambda ci: chunk_fn(ci[0], ci[1], key, params, vectors, objective), (chunks, indices))
    return jax.tree.map(lambda s: s.reshape(-1), out)

  specs = (P("grid"), P("grid"), P(), P(), P(), P())
  # No collectives inside: every device works on its own points. Without the
  # varying-axes check, any library code (scans with zero-initialised carries,
  # e.g. Lanczos) runs unchanged inside.
  return jax.jit(jax.shard_map(local, mesh=mesh, in_specs=specs, out_specs=P("grid"), check_vma=False))


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


def _key_list(key: jax.Array) -> list[int]:
  return [int(v) for v in np.asarray(jax.random.key_data(key)).ravel()]


def _mesh(devices: Sequence[jax.Device] | None) -> jax.sharding.Mesh:
  devices = list(jax.local_devices() if devices is None else devices)
  if not devices:
    raise ValueError("devices must be a non-empty list of jax devices")
  return jax.make_mesh((len(devices),), ("grid",), devices=devices, axis_types=(jax.sharding.AxisType.Explicit,))


def loss_surface(
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
    key: jax.Array | None = None,
    lanczos_steps: int = 10,
    trace_probes: int = 10,
) -> Surface:
  """Evaluates the full-data loss (and metrics) over a grid of directions.

  Args:
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
    key: ``jax.random.key`` for ``full`` curvature (point ``i`` uses
      ``fold_in(key, i)``, so maps do not depend on chunking or devices).
    lanczos_steps, trace_probes: sizes of the ``full`` curvature estimates.

  Returns:
    A :class:`Surface` with arrays indexed ``[iy, ix]``.
  """
  d = as_directions(directions, params)
  axes = [parse_range(r, f"range {i}") for i, r in enumerate(ranges)] if ranges is not None else (
      [parse_range(x, "x")] + ([] if y is None else [parse_range(y, "y")]))
  if len(axes) != d.n:
    raise ValueError(f"got {d.n} direction(s) but {len(axes)} grid range(s): give one range per direction")
  shape = tuple(len(a) for a in reversed(axes))
  coords = grid_coordinates(axes)
  num_points = coords.shape[0]

  mesh = _mesh(devices)
  ndev = mesh.size
  if chunk_size is None:
    chunk_size = default_chunk_size(objective, params, ndev)
  for name, v in (("chunk_size", chunk_size), ("chunks_per_call", chunks_per_call)):
    if not isinstance(v, (int, np.integer)) or v < 1:
      raise ValueError(f"{name} must be a positive integer; got {v!r}")
  per_device = min(math.ceil(chunk_size / ndev), math.ceil(num_points / ndev))
  chunk_size = int(per_device * ndev)
  chunks_per_call = int(min(chunks_per_call, math.ceil(num_points / chunk_size)))
  call_size = chunk_size * chunks_per_call

  curv = _curvature_spec(curvature, d.n, key)
  dtype = jnp.result_type(*jax.tree.leaves(params))
  chunk_fn = _chunk_fn(curv, int(lanczos_steps), int(trace_probes))
  key = jax.random.key(0) if key is None else key
  if d.state_vectors is not None and jax.tree.structure(d.state_vectors) != jax.tree.structure(objective.state):
    raise ValueError("the directions' state_vectors do not have the structure of the objective's state: "
                     f"{jax.tree.structure(d.state_vectors)} vs {jax.tree.structure(objective.state)}")
  vectors = (d.vectors, d.state_vectors)
  shapes = jax.eval_shape(chunk_fn, jnp.zeros((1, d.n), dtype), jnp.zeros(1, jnp.int32), key, params, vectors, objective)
  names = ("loss",) + tuple(k for k in shapes if k != "loss")
  run_config = {
      "kind": "surface",
      "axes": [[float(a[0]), float(a[-1]), int(a.size)] for a in axes],
      "directions": d.info,
      "objective": objective.describe(),
      "dtype": str(np.dtype(dtype)),
      "num_params": tree.size(params),
      "params_fingerprint": _io.fingerprint(params),
      "directions_fingerprint": _io.fingerprint((d.vectors, d.state_vectors)),
      "bn_policy": d.info.get("bn_policy", objective.describe().get("bn_policy", "none")),
      **({"curvature": {"maps": list(curv), "key": _key_list(key), "lanczos_steps": int(lanczos_steps),
                        "trace_probes": int(trace_probes)}} if curv else {}),
      **(config or {}),
  }
  values = {k: np.full(num_points, np.nan) for k in names}
  done = np.zeros(num_points, bool)
  store = _io.ResultStore(out_dir, run_config) if out_dir is not None else None
  if store is not None:
    previous = store.open()
    if previous is not None and "done" in previous:
      done = previous["done"].ravel().astype(bool)
      for k in names:
        values[k] = previous[k].ravel().astype(np.float64)
  todo = np.flatnonzero(~done)

  replicated = NamedSharding(mesh, P())
  args = jax.device_put((key, params, vectors, objective), replicated)
  evaluate = _call_evaluator(mesh, chunks_per_call, chunk_fn)
  env = _io.environment()
  env["device_count"] = ndev

  def result(wall: float, evaluated: int) -> Surface:
    loss = values["loss"].reshape(shape)
    meta = {"environment": env, "chunk_size": chunk_size, "chunks_per_call": chunks_per_call, "wall_time_s": wall,
            "points_evaluated": evaluated, "points_per_second": evaluated / wall if wall > 0 else None,
            "num_points": num_points, "num_done": int(done.sum()), "num_nonfinite": int(np.sum(~np.isfinite(loss))),
            "config": _io.to_jsonable(run_config)}
    metrics = {k: values[k].reshape(shape) for k in names[1:]}
    return Surface(tuple(axes), loss, metrics, meta["num_nonfinite"], meta)

  def save(surf: Surface) -> None:
    if store is not None:
      store.write({**surf.to_arrays(), "done": done.reshape(shape)}, surf.meta)

  from tqdm.auto import tqdm

  start = time.perf_counter()
  calls = [todo[i:i + call_size] for i in range(0, todo.size, call_size)]
  for idx in tqdm(calls, disable=quiet, desc="surface", unit="call"):
    c = np.zeros((call_size, coords.shape[1]), coords.dtype)
    c[: idx.size] = coords[idx]
    i = np.zeros(call_size, np.int32)
    i[: idx.size] = idx
    grid_sharding = NamedSharding(mesh, P("grid"))
    out = jax.device_get(evaluate(jax.device_put(jnp.asarray(c, dtype), grid_sharding),
                                  jax.device_put(jnp.asarray(i), grid_sharding), *args))
    for k in names:
      v = np.asarray(out[k][: idx.size], np.float64)
      values[k][idx] = np.where(np.isfinite(v), v, np.nan)
    done[idx] = True
    save(result(time.perf_counter() - start, int(done.sum()) - (num_points - todo.size)))
  surf = result(time.perf_counter() - start, todo.size)
  if not calls:
    save(surf)
  return surf
