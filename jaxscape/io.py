"""Results on disk: ``results.npz`` + ``meta.json``, written atomically, resumable.

A result directory holds

* ``results.npz``: named arrays (coordinates, loss, metrics, a ``done`` mask
  for resumable grids), compressed;
* ``meta.json``: the ``config`` that defines the result (a rerun with the same
  config resumes; with another config it is refused), the environment
  (package versions, device kind and count, dtype), run statistics, and the
  SHA-256 of ``results.npz`` (``checksum``).

Both files are replaced atomically (written to a temporary file, then
``os.replace``), so a run killed at any moment leaves the last complete
state behind. ``meta.json`` is written first and also records the checksum
of the ``results.npz`` it replaces (``previous_checksum``): a kill between
the two renames leaves the older, complete arrays, which are still accepted.
A ``results.npz`` that matches neither checksum (truncated, corrupted,
replaced), or that cannot be parsed, raises :class:`CorruptResultError`;
it is never silently reused or overwritten. This module also exports 2-D
surfaces to VTK for ParaView.

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
import io
import json
import os
import platform
import sys
import tempfile
from importlib import metadata
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

RESULTS = "results.npz"
META = "meta.json"

__all__ = [
    "CorruptResultError",
    "save_result",
    "load_result",
    "ResultStore",
    "environment",
    "fingerprint",
    "to_jsonable",
    "write_json",
    "read_json",
    "same_json",
    "key_record",
    "sha256_file",
    "export_vtk",
    "save",
]


class CorruptResultError(ValueError):
  """A result directory whose files are truncated, corrupted or do not belong together."""


_FIX = ("Delete the directory, or rerun with overwrite=True (CLI: --overwrite) to replace it; "
        "an interrupted run is resumed only from intact files.")


def to_jsonable(x: Any) -> Any:
  """Converts numpy/JAX scalars and arrays (and nested containers) to JSON types.

  Non-finite floats stay what they are (``inf``, ``-inf``, ``nan``):
  :func:`write_json` stores them as JSON's ``Infinity``/``NaN`` and
  :func:`read_json` reads them back as floats, so a number is never silently
  replaced by another.

  Example:
    >>> to_jsonable({"a": np.float32(2.5), "b": np.array([1.0, np.inf]), "c": (np.nan,)})
    {'a': 2.5, 'b': [1.0, inf], 'c': [nan]}
  """
  if isinstance(x, Mapping):
    return {str(k): to_jsonable(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [to_jsonable(v) for v in x]
  if isinstance(x, (np.generic, np.ndarray, jax.Array)):
    arr = np.asarray(x)
    return arr.item() if arr.ndim == 0 else arr.tolist()
  return x


def same_json(a: Any, b: Any) -> bool:
  """Equality of JSON-like values in which ``nan`` equals ``nan`` (a config holding NaN matches itself)."""
  if isinstance(a, dict) and isinstance(b, dict):
    return a.keys() == b.keys() and all(same_json(a[k], b[k]) for k in a)
  if isinstance(a, list) and isinstance(b, list):
    return len(a) == len(b) and all(same_json(u, v) for u, v in zip(a, b))
  if isinstance(a, float) and isinstance(b, float) and a != a and b != b:
    return True
  return a == b


def key_record(key: jax.Array) -> list[int]:
  """The raw data of a PRNG key (typed ``jax.random.key`` or legacy ``uint32``) as a JSON list of ints."""
  data = jax.random.key_data(key) if jnp.issubdtype(key.dtype, jax.dtypes.prng_key) else key
  return [int(v) for v in np.asarray(data).ravel()]


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
  """Writes JSON atomically (numpy values converted; ``inf``/``nan`` as JSON ``Infinity``/``NaN``)."""
  text = json.dumps(to_jsonable(obj), indent=2, sort_keys=True, allow_nan=True)
  _atomic_write(path, lambda f: f.write(text.encode()))


def read_json(path: str) -> Any:
  """Reads what :func:`write_json` wrote (``Infinity``/``NaN`` back as floats)."""
  with open(path, "rb") as f:
    return json.loads(f.read().decode("utf-8"))


def _sha256(data: bytes) -> str:
  return hashlib.sha256(data).hexdigest()


def sha256_file(path: str) -> str:
  """The SHA-256 (hex) of a file's bytes, read in 1 MiB blocks; ``OSError`` when it cannot be read."""
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      h.update(block)
  return h.hexdigest()


def _previous_sha256(path: str) -> str | None:
  try:
    return sha256_file(path)
  except OSError:  # no earlier results.npz
    return None


def save_result(directory: str, arrays: Mapping[str, Any], meta: Mapping[str, Any]) -> None:
  """Writes ``results.npz`` and ``meta.json`` (with the checksum of the arrays) into ``directory`` atomically.

  ``meta.json`` goes first, so that at every moment the directory holds a
  ``results.npz`` whose checksum ``meta.json`` records (``checksum`` or,
  between the two renames, ``previous_checksum``).
  """
  buf = io.BytesIO()
  np.savez_compressed(buf, **{k: np.asarray(v) for k, v in arrays.items()})
  data = buf.getvalue()
  checksum = {"algorithm": "sha256", RESULTS: _sha256(data),
              "previous": _previous_sha256(os.path.join(directory, RESULTS))}
  write_json(os.path.join(directory, META), {**meta, "checksum": checksum})
  _atomic_write(os.path.join(directory, RESULTS), lambda f: f.write(data))


def _read_meta(path: str) -> dict[str, Any]:
  try:
    meta = read_json(path)
  except (ValueError, UnicodeDecodeError) as e:  # JSONDecodeError is a ValueError
    raise CorruptResultError(f"{path!r} is not valid JSON ({type(e).__name__}: {e}): the file is truncated or "
                             f"corrupted. {_FIX}") from None
  if not isinstance(meta, dict):
    raise CorruptResultError(f"{path!r} should hold a JSON object; found {type(meta).__name__}. {_FIX}")
  return meta


def _check_sum(path: str, data: bytes, meta: Mapping[str, Any]) -> None:
  recorded = meta.get("checksum")
  if not isinstance(recorded, dict) or not isinstance(recorded.get(RESULTS), str):
    raise CorruptResultError(f"{os.path.join(os.path.dirname(path), META)!r} records no checksum of {RESULTS} "
                             f"(expected meta['checksum']['{RESULTS}'], a SHA-256): the result cannot be verified. "
                             "Read it anyway with load_result(..., verify=False). " + _FIX)
  got = _sha256(data)
  if got not in (recorded[RESULTS], recorded.get("previous")):
    raise CorruptResultError(f"{path!r} does not match the checksum recorded in {META}: expected SHA-256 "
                             f"{recorded[RESULTS][:16]}..., found {got[:16]}... ({len(data)} bytes): the file is "
                             f"truncated, corrupted or was replaced. {_FIX}")


def load_result(directory: str, *, verify: bool = True) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
  """Reads ``(arrays, meta)`` from a result directory.

  Args:
    directory: the result directory.
    verify: check ``results.npz`` against the SHA-256 recorded in
      ``meta.json`` (``False`` reads files written without one).

  Raises:
    FileNotFoundError: naming the missing file.
    CorruptResultError: when a file cannot be parsed or the checksum does not match.
  """
  paths = [os.path.join(directory, RESULTS), os.path.join(directory, META)]
  for path in paths:
    if not os.path.isfile(path):
      raise FileNotFoundError(f"no result in {directory!r}: expected {RESULTS} and {META}, missing {os.path.basename(path)}")
  meta = _read_meta(paths[1])
  with open(paths[0], "rb") as f:
    data = f.read()
  if verify:
    _check_sum(paths[0], data, meta)
  try:
    with np.load(io.BytesIO(data), allow_pickle=False) as f:
      arrays = {k: f[k] for k in f.files}
  except Exception as e:  # zipfile, zlib, numpy format errors: all mean a damaged file
    raise CorruptResultError(f"{paths[0]!r} is not a readable .npz archive ({type(e).__name__}: {e}). {_FIX}") from None
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
  return [] if same_json(a, b) else [f"{prefix.rstrip('.')}: saved {a!r}, now {b!r}"]


class ResultStore:
  """A resumable result directory tied to one config.

  ``open`` returns the arrays of a finished or partial earlier run with the
  same config (or ``None``); a different config raises ``ValueError`` naming
  what differs, a damaged directory :class:`CorruptResultError`. With
  ``overwrite=True``, ``open`` deletes an earlier result instead (whatever
  its config or state). ``write`` replaces both files atomically.
  """

  def __init__(self, directory: str, config: Mapping[str, Any], *, overwrite: bool = False):
    self.directory = directory
    self.config = to_jsonable(config)
    self.overwrite = bool(overwrite)

  def open(self) -> dict[str, np.ndarray] | None:
    paths = [os.path.join(self.directory, name) for name in (RESULTS, META)]
    if self.overwrite:
      for path in paths:
        if os.path.isfile(path):
          os.remove(path)
      return None
    if not any(os.path.exists(p) for p in paths):
      return None
    if not os.path.exists(paths[1]):
      raise CorruptResultError(f"{self.directory!r} holds {RESULTS} without {META}: it cannot be verified or "
                               f"resumed. {_FIX}")
    if os.path.exists(paths[0]):
      arrays, meta = load_result(self.directory)
    else:  # killed between the two renames of the first write: nothing finished yet
      arrays, meta = None, _read_meta(paths[1])
      checksum = meta.get("checksum")
      if not (isinstance(checksum, dict) and RESULTS in checksum and checksum.get("previous", "") is None):
        raise CorruptResultError(f"{self.directory!r} holds {META} but its {RESULTS} is missing. {_FIX}")
    saved = meta.get("config")
    if not same_json(saved, self.config):
      diffs = "; ".join(_diff(saved, self.config)[:6])
      raise ValueError(
          f"{self.directory!r} holds a result made with another config, refusing to reuse it ({diffs}). "
          "Choose another output directory, or pass overwrite=True (CLI: --overwrite) to replace it."
      )
    return arrays

  def write(self, arrays: Mapping[str, Any], meta: Mapping[str, Any]) -> None:
    save_result(self.directory, arrays, {**meta, "config": self.config})


def fingerprint(tree: Any) -> str:
  """A short SHA-1 of a pytree's leaves (shapes, dtypes and bytes)."""
  h = hashlib.sha1()
  for leaf in jax.tree.leaves(tree):
    if jax.dtypes.issubdtype(getattr(leaf, "dtype", None), jax.dtypes.prng_key):
      leaf = jax.random.key_data(leaf)  # typed PRNG keys (e.g. Dropout's RNG state) by their raw bits
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
