"""Results on disk: ``results.npz`` + ``meta.json``, written atomically, resumable.

A result directory holds

* ``results.npz``: named arrays (coordinates, loss, metrics, a ``done`` mask
  for resumable grids), compressed;
* ``meta.json``: the ``config`` that defines the result (a rerun with the same
  config resumes; with another config it is refused), the environment
  (package versions, device kind and count, dtype), and run statistics.

Both files are replaced atomically (written to a temporary file, then
``os.replace``), so a run killed at any moment leaves the last complete
state behind. This module also exports 2-D surfaces to VTK for ParaView.

Example:
  >>> import tempfile, numpy as np
  >>> d = tempfile.mkdtemp()
  >>> save_result(d, {"loss": np.zeros((2, 3))}, {"config": {"a": 1}})
  >>> arrays, meta = load_result(d)
  >>> arrays["loss"].shape, meta["config"]
  ((2, 3), {'a': 1})
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import sys
import tempfile
from importlib import metadata
from typing import Any, Mapping

import jax
import numpy as np

RESULTS = "results.npz"
META = "meta.json"

__all__ = [
    "save_result",
    "load_result",
    "ResultStore",
    "environment",
    "fingerprint",
    "to_jsonable",
    "write_json",
    "export_vtk",
    "save",
]


def to_jsonable(x: Any) -> Any:
  """Converts numpy/JAX scalars and arrays (and nested containers) to JSON types."""
  if isinstance(x, Mapping):
    return {str(k): to_jsonable(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [to_jsonable(v) for v in x]
  if isinstance(x, (np.generic, np.ndarray, jax.Array)):
    arr = np.asarray(x)
    return arr.item() if arr.ndim == 0 else arr.tolist()
  if isinstance(x, float) and not np.isfinite(x):
    return None if np.isnan(x) else (1e308 if x > 0 else -1e308)
  return x


def _atomic_write(path: str, write) -> None:
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=os.path.basename(path))
  try:
    with os.fdopen(fd, "wb") as f:
      write(f)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


def write_json(path: str, obj: Any) -> None:
  """Writes JSON atomically (numpy values converted)."""
  _atomic_write(path, lambda f: f.write(json.dumps(to_jsonable(obj), indent=2, sort_keys=True).encode()))


def save_result(directory: str, arrays: Mapping[str, Any], meta: Mapping[str, Any]) -> None:
  """Writes ``results.npz`` and ``meta.json`` into ``directory`` atomically."""
  np_arrays = {k: np.asarray(v) for k, v in arrays.items()}
  _atomic_write(os.path.join(directory, RESULTS), lambda f: np.savez_compressed(f, **np_arrays))
  write_json(os.path.join(directory, META), meta)


def load_result(directory: str) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
  """Reads ``(arrays, meta)`` from a result directory.

  Raises:
    FileNotFoundError: naming the missing file.
  """
  paths = [os.path.join(directory, RESULTS), os.path.join(directory, META)]
  for path in paths:
    if not os.path.isfile(path):
      raise FileNotFoundError(f"no result in {directory!r}: expected {RESULTS} and {META}, missing {os.path.basename(path)}")
  with np.load(paths[0], allow_pickle=False) as f:
    arrays = {k: f[k] for k in f.files}
  with open(paths[1]) as f:
    meta = json.load(f)
  return arrays, meta


def _diff(a: Any, b: Any, prefix: str = "") -> list[str]:
  """Paths where two JSON-like values differ (for 'refusing to resume' messages)."""
  if isinstance(a, dict) and isinstance(b, dict):
    out = []
    for k in sorted(set(a) | set(b)):
      if k not in a or k not in b:
        out.append(f"{prefix}{k} ({'only in the saved run' if k in a else 'only in this run'})")
      else:
        out.extend(_diff(a[k], b[k], f"{prefix}{k}."))
    return out
  return [] if a == b else [f"{prefix.rstrip('.')}: saved {a!r}, now {b!r}"]


class ResultStore:
  """A resumable result directory tied to one config.

  ``open`` returns the arrays of a finished or partial earlier run with the
  same config (or ``None``); a different config raises ``ValueError`` naming
  what differs. ``write`` replaces both files atomically.
  """

  def __init__(self, directory: str, config: Mapping[str, Any]):
    self.directory = directory
    self.config = to_jsonable(config)

  def open(self) -> dict[str, np.ndarray] | None:
    if not os.path.exists(os.path.join(self.directory, META)):
      return None
    arrays, meta = load_result(self.directory)
    saved = meta.get("config")
    if saved != self.config:
      diffs = "; ".join(_diff(saved, self.config)[:6])
      raise ValueError(
          f"{self.directory!r} holds a result made with another config, refusing to reuse it ({diffs}). "
          "Choose another output directory or delete the old one."
      )
    return arrays

  def write(self, arrays: Mapping[str, Any], meta: Mapping[str, Any]) -> None:
    save_result(self.directory, arrays, {**meta, "config": self.config})


def fingerprint(tree: Any) -> str:
  """A short SHA-1 of a pytree's leaves (shapes, dtypes and bytes)."""
  h = hashlib.sha1()
  for leaf in jax.tree.leaves(tree):
    arr = np.ascontiguousarray(np.asarray(leaf))
    h.update(f"{arr.shape}{arr.dtype}".encode())
    h.update(arr.tobytes())
  return h.hexdigest()[:16]


def environment() -> dict[str, Any]:
  """Package versions, devices and precision, recorded with every result."""
  versions = {}
  for pkg in ("jaxscape", "jax", "jaxlib", "flax", "optax", "numpy"):
    try:
      versions[pkg] = metadata.version(pkg)
    except metadata.PackageNotFoundError:
      versions[pkg] = None
  devices = jax.local_devices()
  return {
      "versions": versions,
      "python": sys.version.split()[0],
      "platform": platform.platform(),
      "backend": jax.default_backend(),
      "device_kind": devices[0].device_kind,
      "device_count": len(devices),
      "process_count": jax.process_count(),
      "x64": bool(jax.config.read("jax_enable_x64")),
      "xla_flags": os.environ.get("XLA_FLAGS", ""),
  }


def save(result: Any, directory: str) -> str:
  """Saves any jaxscape result that has ``to_arrays()`` and ``meta``; returns the directory."""
  save_result(directory, result.to_arrays(), result.meta)
  return directory


def export_vtk(path: str, x: np.ndarray, y: np.ndarray, values: Mapping[str, np.ndarray], *,
               zmax: float | None = None, log: bool = False, height: str | None = None) -> str:
  """Writes a 2-D surface as a legacy ASCII VTK structured grid for ParaView.

  Args:
    path: output ``.vtk`` file.
    x, y: grid coordinates (lengths ``nx``, ``ny``).
    values: scalar fields shaped ``[ny, nx]`` (e.g. ``{"loss": ...}``).
    zmax: clip the height field at this value (as ``h52vtp.py --zmax``).
    log: use ``log(z + 0.1)`` as the height (as ``h52vtp.py --log``).
    height: which field gives the z coordinate (default: the first).

  Returns:
    ``path``.
  """
  x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
  fields = {k: np.asarray(v, np.float64) for k, v in values.items()}
  if not fields:
    raise ValueError("export_vtk needs at least one field")
  for k, v in fields.items():
    if v.shape != (y.size, x.size):
      raise ValueError(f"field {k!r} has shape {v.shape}; expected (ny, nx) = {(y.size, x.size)}")
  z = fields[height or next(iter(fields))].copy()
  if zmax is not None:
    z = np.minimum(z, zmax)
  if log:
    z = np.log(z + 0.1)
  z = np.nan_to_num(z, nan=np.nanmax(z) if np.isfinite(z).any() else 0.0)
  xx, yy = np.meshgrid(x, y)
  lines = ["# vtk DataFile Version 3.0", "jaxscape surface", "ASCII", "DATASET STRUCTURED_GRID",
           f"DIMENSIONS {x.size} {y.size} 1", f"POINTS {x.size * y.size} double"]
  lines += [f"{a:.10g} {b:.10g} {c:.10g}" for a, b, c in zip(xx.ravel(), yy.ravel(), z.ravel())]
  lines.append(f"POINT_DATA {x.size * y.size}")
  for k, v in fields.items():
    lines += [f"SCALARS {k} double 1", "LOOKUP_TABLE default"]
    lines += [f"{val:.10g}" if np.isfinite(val) else "nan" for val in v.ravel()]
  text = "\n".join(lines) + "\n"
  _atomic_write(path, lambda f: f.write(text.encode()))
  return path
