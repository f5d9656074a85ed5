"""The grid of a loss surface: ranges, coordinates, the :class:`Surface` result, parts and merging.

A grid is the product of one range per direction; its points are numbered in
the C order of the result array (``[ny, nx]`` in 2-D), and a split run
evaluates contiguous slices of that order (:func:`part_indices`), written to
:func:`part_directory` and joined by :func:`merge_surfaces`.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from typing import Any, Sequence

import numpy as np

from .. import io as _io

Range = tuple[float, float, int] | str
"""A grid range: ``(start, stop, num)`` or the string ``"start:stop:num"``."""

_AXIS_NAMES = ("x", "y", "z")


def parse_range(spec: Range, name: str = "range") -> np.ndarray:
  """Coordinates from ``(start, stop, num)`` or the string ``"start:stop:num"``.

  ``start < stop`` (equal only with ``num = 1``) and ``num >= 1``; anything
  else raises ``ValueError`` naming the range. Odd ``num`` over a symmetric
  range puts the origin on the grid.

  Example:
    >>> parse_range("-1:1:5").tolist()
    [-1.0, -0.5, 0.0, 0.5, 1.0]
  """
  given = spec
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
  if isinstance(num, (float, np.floating)) and float(num).is_integer():
    num = int(num)
  if isinstance(num, bool) or not isinstance(num, (int, np.integer)) or num < 1:
    raise ValueError(f"{name} {given!r}: num must be a positive integer; got {num!r}")
  if any(isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)) for v in (start, stop)):
    raise ValueError(f"{name} {given!r}: start and stop must be numbers; got {start!r}, {stop!r}")
  if not (np.isfinite(start) and np.isfinite(stop)):
    raise ValueError(f"{name} {given!r}: start and stop must be finite; got {start!r}, {stop!r}")
  if start > stop or (start == stop and num > 1):
    raise ValueError(f"{name} {given!r}: start must be < stop (equal only with num = 1); got start={start!r}, "
                     f"stop={stop!r}, num={num!r}. Write the smaller coordinate first, e.g. '{stop}:{start}:{num}'")
  return np.linspace(float(start), float(stop), int(num))


def grid_coordinates(axes: Sequence[np.ndarray], index: np.ndarray | None = None) -> np.ndarray:
  """Grid points as ``[num_points, n]``, in the C order of the result array; only the flat ``index`` ones if given.

  The result array has shape ``(n_{k-1}, …, n_1, n_0)`` — ``[ny, nx]`` in
  2-D — so flat index ``i`` is the point ``(x[i % nx], y[i // nx])``. With
  ``index`` the whole grid is never materialised (a run computes the
  coordinates of each chunk from its indices).
  """
  axes = [np.asarray(a) for a in axes]
  shape = tuple(a.size for a in reversed(axes))
  index = np.arange(math.prod(shape)) if index is None else np.asarray(index, np.int64)
  multi = np.unravel_index(index, shape)
  return np.stack([a[m] for a, m in zip(axes, reversed(multi))], axis=-1)


HOST_COPIES = 3
"""Copies of the stored arrays a run holds at its peak: the arrays, their compressed file and its bytes."""


def host_bytes(shape: Sequence[int], num_fields: int) -> int:
  """Host memory a grid of ``shape`` needs with ``num_fields`` stored float64 maps (plus the ``done`` mask).

  ``HOST_COPIES`` copies of the stored values (while a result is saved), per
  point the part mask and one index (flat indices to evaluate), and two copies
  of the axes.
  """
  return math.prod(shape) * (HOST_COPIES * (8 * int(num_fields) + 1) + 9) + 16 * sum(shape)


def check_host_memory(shape: Sequence[int], fields: Sequence[str], available: int | None = None) -> None:
  """Refuses, before anything is allocated, a grid whose host arrays cannot fit in memory.

  Args:
    shape: the result array's shape (``[ny, nx]`` in 2-D).
    fields: the stored maps (``loss`` and the metrics; ``done`` is added).
    available: bytes of host memory (default: :func:`jaxscape.io.available_memory`; unknown: no check).

  Raises:
    ValueError: naming the grid, the memory it needs and what is available, and the largest grid that fits.
  """
  available = _io.available_memory() if available is None else available
  need = host_bytes(shape, len(fields))
  if available is None or need <= available:
    return
  per_point = need / max(1, math.prod(shape))
  fits = int(available // per_point)
  side = int(fits ** (1 / len(shape)))
  example = " × ".join([str(side)] * len(shape))
  raise ValueError(
      f"a {' × '.join(map(str, reversed(tuple(shape))))} grid ({math.prod(shape):,} points) needs about "
      f"{_io.format_bytes(need)} of host memory ({len(fields) + 1} values per point: {', '.join(fields)}, done; "
      f"held with a compressed copy while it is saved); {_io.format_bytes(available)} is available. The largest grid "
      f"that fits has about {fits:,} points (e.g. {example}): use a coarser grid")


def result_bytes(shape: Sequence[int], num_fields: int) -> int:
  """Disk bytes a grid's results may take: two uncompressed generations (the current and the one being written)."""
  return 2 * math.prod(shape) * (8 * int(num_fields) + 1) + 4096


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
  return _as_surface(arrays, meta, directory)


def _as_surface(arrays: dict[str, np.ndarray], meta: dict[str, Any], directory: str) -> Surface:
  arrays = dict(arrays)
  axes = []
  while _axis_name(len(axes)) in arrays:
    axes.append(arrays.pop(_axis_name(len(axes))))
  if not axes or "loss" not in arrays:
    raise ValueError(f"{directory!r} does not hold a surface: expected arrays 'x' and 'loss', found {sorted(arrays)}")
  loss = arrays.pop("loss")
  arrays.pop("done", None)
  return Surface(tuple(axes), loss, arrays, int(np.sum(~np.isfinite(loss))), meta)


_PART_NAME = re.compile(r"part-(\d+)-of-(\d+)$")


def _part_dirs(parts: str | Sequence[str]) -> list[str]:
  if not isinstance(parts, str):
    dirs = [str(p) for p in parts]
    if not dirs:
      raise ValueError("merge_surfaces needs at least one part directory; got an empty list")
    return dirs
  if not os.path.isdir(parts):
    raise FileNotFoundError(f"no directory {parts!r}: expected the out_dir of a run split with part=(i, n)")
  dirs = sorted(os.path.join(parts, e) for e in os.listdir(parts)
                if _PART_NAME.fullmatch(e) and os.path.isdir(os.path.join(parts, e)))
  if not dirs:
    raise FileNotFoundError(f"no part directories (part-IIII-of-NNNN) in {parts!r}")
  return dirs


def merge_surfaces(parts: str | Sequence[str]) -> Surface:
  """Joins the parts of a grid evaluated with ``loss_surface(..., part=(i, n))`` into one surface.

  Every part must have been made with the same config (ranges, directions,
  objective, parameters; only the part index differs), all ``n`` parts must
  be present and each must be complete. The result holds exactly the parts'
  values and the config a single run would have recorded (no ``part``), so
  saving it (``jaxscape merge``) gives what a single run would have written.

  Args:
    parts: the ``out_dir`` the parts were written under (its
      ``part-IIII-of-NNNN`` subdirectories are merged), or a list of part
      directories.

  Returns:
    The whole :class:`Surface`; ``meta["parts"]`` records the parts merged.

  Raises:
    FileNotFoundError: no part directories, or a part without a result.
    ValueError: parts with different configs or counts, and missing,
      repeated or incomplete parts (all named).

  Example:
    >>> import jax, jax.numpy as jnp, numpy as np, tempfile
    >>> import jaxscape as js
    >>> x = np.random.default_rng(0).normal(size=(8, 2)).astype(np.float32)
    >>> obj = js.Objective.from_apply(lambda p, x: x @ p, data=(x, x[:, 0]), loss="mse")
    >>> p = jnp.ones(2); d = [jnp.array([1.0, 0.0])]
    >>> out = tempfile.mkdtemp()
    >>> for i in range(3):   # e.g. three SLURM array tasks
    ...   _ = js.loss_surface(obj, p, d, x=(-1, 1, 5), part=(i, 3), out_dir=out, quiet=True)
    >>> merged = js.merge_surfaces(out)
    >>> bool(np.array_equal(merged.loss, js.loss_surface(obj, p, d, x=(-1, 1, 5), quiet=True).loss))
    True
  """
  dirs = _part_dirs(parts)
  loaded = [(d, *_io.load_result(d)) for d in dirs]
  first_dir, first_arrays, first_meta = loaded[0]
  base = {k: v for k, v in first_meta.get("config", {}).items() if k != "part"}
  seen: dict[int, str] = {}
  counts = set()
  for d, arrays, meta in loaded:
    config = meta.get("config", {})
    if not isinstance(config.get("part"), list) or len(config["part"]) != 2:
      raise ValueError(f"{d!r} is not a part of a split run: its config has no 'part' [index, count]")
    i, n = config["part"]
    counts.add(n)
    diffs = _io.config_diff(base, {k: v for k, v in config.items() if k != "part"})
    if diffs:
      raise ValueError(f"{d!r} was made with another config than {first_dir!r}: {'; '.join(diffs[:6])}")
    if i in seen:
      raise ValueError(f"part {i} of {n} appears twice: {seen[i]!r} and {d!r}")
    seen[i] = d
  if len(counts) != 1:
    raise ValueError(f"the parts split the grid into different numbers of parts: {sorted(counts)}")
  n = counts.pop()
  missing = [i for i in range(n) if i not in seen]
  if missing:
    names = ", ".join(os.path.basename(part_directory("", i, n)) for i in missing)
    raise ValueError(f"{len(missing)} of {n} parts missing: {names} (run them, e.g. --chunk i/{n}, then merge again)")
  surf = _as_surface(first_arrays, first_meta, first_dir)
  num_points = surf.loss.size
  values = {k: np.full(num_points, np.nan) for k in ("loss", *surf.metrics)}
  incomplete = []
  for d, arrays, meta in sorted(loaded, key=lambda t: t[2]["config"]["part"][0]):
    idx = part_indices(num_points, tuple(meta["config"]["part"]))
    done = arrays.get("done", np.zeros(num_points, bool)).ravel().astype(bool)[idx]
    if not done.all():
      incomplete.append(f"{os.path.basename(d)} ({int(done.sum())} of {idx.size} points done)")
      continue
    for k in values:
      values[k][idx] = arrays[k].ravel()[idx]
  if incomplete:
    raise ValueError(f"{len(incomplete)} of {n} parts incomplete: {', '.join(incomplete)}; rerun them (they resume)")
  shape = surf.loss.shape
  loss = values.pop("loss").reshape(shape)
  wall = float(sum(m.get("wall_time_s") or 0.0 for _, _, m in loaded))
  num_nonfinite = int(np.sum(~np.isfinite(loss)))
  meta = {"environment": first_meta.get("environment"), "chunk_size": first_meta.get("chunk_size"),
          "chunks_per_call": first_meta.get("chunks_per_call"), "wall_time_s": wall, "points_evaluated": num_points,
          "points_per_second": num_points / wall if wall > 0 else None, "num_points": num_points,
          "num_done": num_points, "num_nonfinite": num_nonfinite,
          "parts": {"count": n, "directories": [os.path.abspath(seen[i]) for i in range(n)]}, "config": base}
  return Surface(surf.axes, loss, {k: v.reshape(shape) for k, v in values.items()}, num_nonfinite, meta)


def part_indices(num_points: int, part: tuple[int, int]) -> np.ndarray:
  """Flat grid indices of part ``i`` of ``n`` (0-based): the ``i``-th of ``n`` contiguous, near-equal slices.

  Example:
    >>> [part_indices(7, (i, 3)).tolist() for i in range(3)]
    [[0, 1, 2], [3, 4], [5, 6]]
  """
  if not (isinstance(part, (tuple, list)) and len(part) == 2
          and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in part)):
    raise ValueError(f"part must be a pair (index, count) of integers; got {part!r}")
  i, n = int(part[0]), int(part[1])
  if n < 1 or not 0 <= i < n:
    raise ValueError(f"part must be (index, count) with 0 <= index < count (0-based); got {part!r}")
  if n > num_points:
    raise ValueError(f"part count {n} exceeds the {num_points} grid points: every part needs at least one point")
  return np.array_split(np.arange(num_points), n)[i]


def part_directory(out_dir: str, index: int, count: int) -> str:
  """Where part ``index`` of ``count`` writes: ``<out_dir>/part-0003-of-0008``."""
  return os.path.join(out_dir, f"part-{int(index):04d}-of-{int(count):04d}")
