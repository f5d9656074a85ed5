"""Results on disk: ``results.npz`` + ``meta.json``, published together atomically, resumable, one writer.

A result directory holds

* ``results.npz``: named arrays (coordinates, loss, metrics, a ``done`` mask
  for resumable grids), compressed;
* ``meta.json``: the ``config`` that defines the result (a rerun with the same
  config resumes; with another config it is refused), the environment
  (package versions, device kind and count, dtype), run statistics, and the
  SHA-256 of ``results.npz`` and of ``meta.json``'s own content (``checksum``;
  a damaged ``meta.json`` is told from a change of config).

Every write puts both files into a new generation folder (``.gen-*``) and then
switches one symbolic link, ``.current``, to it with a single ``os.replace``;
``results.npz`` and ``meta.json`` at the top are fixed links through
``.current``. A reader (:func:`load_result`) resolves ``.current`` once and
reads both files of that generation, so it always sees one complete state,
however often the writer replaces it; a run killed (or out of disk space) at
any moment leaves the last complete state behind. Directories written by
earlier versions (two plain files) are read as before: a ``results.npz`` that
matches neither checksum of ``meta.json`` (``checksum`` or, for an old run
killed between its two renames, ``previous``), or that cannot be parsed,
raises :class:`CorruptResultError`; it is never silently reused or
overwritten.

One process writes a directory at a time: :class:`RunLock` (``flock`` on
``.lock``, held for the whole run and dropped by the kernel when the owner
exits or is killed) refuses a second writer with :class:`RunLockedError`
naming the owner's pid and host. The owner removes what killed writes left
(``.tmp-*``, unpublished generations). This module also exports 2-D surfaces
to VTK for ParaView.

Example:
  >>> import tempfile, numpy as np
  >>> d = tempfile.mkdtemp()
  >>> save_result(d, {"loss": np.zeros((2, 3))}, {"config": {"a": 1}})
  >>> arrays, meta = load_result(d)
  >>> arrays["loss"].shape, meta["config"]
  ((2, 3), {'a': 1})
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import io
import json
import os
import platform
import shutil
import socket
import sys
import tempfile
import time
from importlib import metadata
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

RESULTS = "results.npz"
META = "meta.json"
CURRENT = ".current"
"""The link that publishes a result: it names the generation folder (``.gen-*``) holding the current pair."""
LOCK = ".lock"
"""The lock file of a directory (see :class:`RunLock`); it holds the owner's pid and host while held."""
_GEN, _TMP = ".gen-", ".tmp-"
REPLACEMENT = ".replacement"
"""Where an ``overwrite`` run writes until its result is complete (see :class:`ResultStore`)."""

__all__ = [
    "CorruptResultError",
    "RunLockedError",
    "ResultWriteError",
    "OutputDirError",
    "check_output_dir",
    "available_memory",
    "format_bytes",
    "RunLock",
    "save_result",
    "load_result",
    "ResultStore",
    "environment",
    "fingerprint",
    "to_jsonable",
    "config_diff",
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


class RunLockedError(RuntimeError):
  """Another process is writing this directory: it holds the directory's :class:`RunLock`."""


class OutputDirError(ValueError):
  """An output directory the results cannot go to (not a directory, not writable, too little space), refused before
  any work starts (:func:`check_output_dir`)."""


class ResultWriteError(OSError):
  """A result could not be written (e.g. ``errno.ENOSPC``); the previous complete result, if any, is intact.

  ``errno`` is the failed operation's (``ENOSPC`` for a full disk).
  """


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


def _umask() -> int:
  mask = os.umask(0o022)
  os.umask(mask)
  return mask


def _atomic_write(path: str, write) -> None:
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=os.path.basename(path))
  try:
    os.fchmod(fd, 0o666 & ~_umask())  # mkstemp's 0600 would hide the file from the user's group
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


def format_bytes(n: float) -> str:
  """``1536 -> '1.5 KiB'``: a size as a person reads it."""
  for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
    if abs(n) < 1024 or unit == "TiB":
      return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
    n /= 1024
  raise AssertionError("unreachable")


def check_output_dir(directory: str | os.PathLike, *, need_bytes: int = 0, what: str = "output directory") -> str:
  """Refuses, before any work starts, a directory the results could not be written to; creates it when missing.

  Checks that no file stands at ``directory`` or above it, that the
  directory can be created, that a file can be written and removed in it (a
  probe ``.tmp-probe-*``), and that its file system has ``need_bytes`` free.

  Args:
    directory: where the results will go.
    need_bytes: an estimate of the bytes the results need (0: do not check).
    what: how the message names the directory (e.g. ``"--out"``).

  Returns:
    ``directory``, unchanged.

  Raises:
    OutputDirError: one line naming the path and the reason.

  Example:
    >>> import tempfile
    >>> d = check_output_dir(tempfile.mkdtemp() + "/run")
  """
  path = os.fspath(directory)
  above = os.path.abspath(path)
  while not os.path.lexists(above):  # the nearest existing path at or above the directory
    above = os.path.dirname(above)
  if not os.path.isdir(above):
    if above == os.path.abspath(path):
      raise OutputDirError(f"{what} {path!r} is a file, not a directory; choose another path")
    raise OutputDirError(f"{what} {path!r} cannot be created: {above!r} on its path is a file; choose another path")
  try:
    os.makedirs(path, exist_ok=True)
  except OSError as e:
    raise OutputDirError(f"{what} {path!r} cannot be created: {e.strerror or e}") from None
  try:
    fd, probe = tempfile.mkstemp(dir=path, prefix=_TMP + "probe-")
    try:
      os.write(fd, b"probe")
      os.fsync(fd)
    finally:
      os.close(fd)
      os.remove(probe)
  except OSError as e:
    raise OutputDirError(f"{what} {path!r} is not writable: {e.strerror or e}") from None
  free = shutil.disk_usage(path).free
  if need_bytes > free:
    raise OutputDirError(f"{what} {path!r} has {format_bytes(free)} free; the results need about "
                         f"{format_bytes(need_bytes)}: free some space or choose another directory")
  return path


def available_memory() -> int | None:
  """Bytes of host memory available to a new allocation (``MemAvailable`` on Linux), or ``None`` if unknown."""
  try:
    with open("/proc/meminfo") as f:
      for line in f:
        if line.startswith("MemAvailable:"):
          return int(line.split()[1]) * 1024
  except (OSError, ValueError, IndexError):
    pass
  try:
    return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
  except (AttributeError, OSError, ValueError):
    return None


def _sha256(data: bytes) -> str:
  return hashlib.sha256(data).hexdigest()


def sha256_file(path: str) -> str:
  """The SHA-256 (hex) of a file's bytes, read in 1 MiB blocks; ``OSError`` when it cannot be read."""
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      h.update(block)
  return h.hexdigest()


def _write_bytes(path: str, data: bytes) -> None:
  """Writes a new file and flushes it to the disk (the one place result bytes are written)."""
  with open(path, "xb") as f:
    f.write(data)
    f.flush()
    os.fsync(f.fileno())


def _fsync_dir(directory: str) -> None:
  """Makes the renames in ``directory`` durable (a no-op where directories cannot be opened)."""
  try:
    fd = os.open(directory, os.O_RDONLY)
  except OSError:
    return
  try:
    os.fsync(fd)
  except OSError:
    pass
  finally:
    os.close(fd)


def _remove(path: str) -> None:
  if os.path.isdir(path) and not os.path.islink(path):
    shutil.rmtree(path, ignore_errors=True)
  else:
    try:
      os.remove(path)
    except FileNotFoundError:
      pass


# ----------------------------------------------------------------------------- one writer per directory

_HELD: dict[str, list] = {}
"""The locks this process holds: real path of the directory -> [lock file descriptor, depth]."""


def _lock_owner(fd: int) -> dict[str, Any]:
  """The owner recorded in a held lock file (it writes it just after taking the lock: wait a moment for it)."""
  for _ in range(20):
    raw = os.pread(fd, 4096, 0)
    try:
      owner = json.loads(raw.decode("utf-8"))
      if isinstance(owner, dict):
        return owner
    except ValueError:
      pass
    time.sleep(0.01)
  return {}


class RunLock:
  """The exclusive right to write a run directory, held by one process for a whole run.

  ``fcntl.flock`` on ``<directory>/.lock``; the owner writes its pid, host
  and start time into the file. The kernel drops the lock when the owner
  exits, however it ends (SIGKILL included), so a lock file left behind is
  not a held lock and the next run takes it. A process that holds the lock
  may take it again (nested runs and writes count depth). On taking the lock
  the owner removes what killed writes left in the directory: ``.tmp-*``
  files and generation folders that :data:`CURRENT` does not name.

  Locks are advisory and per host where the file system does not share
  ``flock`` between hosts (some network file systems): one directory per run
  is still the rule there.

  Args:
    directory: the run directory (created if missing).

  Raises:
    RunLockedError: on :meth:`acquire` (or entering the ``with`` block), when
      another process holds the lock; the message names its pid and host.

  Example:
    >>> import tempfile, numpy as np
    >>> d = tempfile.mkdtemp()
    >>> with RunLock(d):      # writes inside belong to this run; another process is refused meanwhile
    ...   save_result(d, {"loss": np.zeros(3)}, {"config": {}})
  """

  def __init__(self, directory: str | os.PathLike):
    self.directory = os.fspath(directory)
    self._key: str | None = None

  def acquire(self) -> "RunLock":
    if self._key is not None:
      return self
    os.makedirs(self.directory, exist_ok=True)
    key = os.path.realpath(self.directory)
    if key in _HELD:
      _HELD[key][1] += 1
      self._key = key
      return self
    path = os.path.join(self.directory, LOCK)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      owner = _lock_owner(fd)
      os.close(fd)
      raise RunLockedError(
          f"{self.directory!r} is being written by another run: pid {owner.get('pid', '(unknown)')} on host "
          f"{owner.get('host', '(unknown)')} (since {owner.get('since', '(unknown)')}) holds {path!r}. Wait for it "
          "to finish or stop it, or choose another output directory: one run writes a directory at a time (the "
          "lock is released when that process ends, even if it is killed).") from None
    except BaseException:
      os.close(fd)
      raise
    record = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(record).encode(), 0)
    _HELD[key] = [fd, 1]
    self._key = key
    try:
      _remove_leftovers(self.directory)
    except BaseException:
      self.release()
      raise
    return self

  def release(self) -> None:
    if self._key is None:
      return
    held = _HELD[self._key]
    held[1] -= 1
    if held[1] == 0:
      del _HELD[self._key]
      try:
        os.ftruncate(held[0], 0)  # no owner recorded once released
      except OSError:
        pass
      os.close(held[0])  # closing the descriptor drops the flock
    self._key = None

  def __enter__(self) -> "RunLock":
    return self.acquire()

  def __exit__(self, *exc: Any) -> None:
    self.release()


def _remove_leftovers(directory: str) -> None:
  """Removes ``.tmp-*`` and unpublished or superseded generations (only the lock's owner may)."""
  current = _current_generation(directory)
  for name in os.listdir(directory):
    if name.startswith(_TMP) or (name.startswith(_GEN) and name != current):
      _remove(os.path.join(directory, name))


# ----------------------------------------------------------------------------- generations


def _current_generation(directory: str) -> str | None:
  """The generation folder :data:`CURRENT` names, or None (no result, or the two-file layout)."""
  try:
    target = os.readlink(os.path.join(directory, CURRENT))
  except OSError:
    return None
  return target if target.startswith(_GEN) and os.sep not in target else None


def _is_fixed_link(directory: str, name: str) -> bool:
  path = os.path.join(directory, name)
  return os.path.islink(path) and os.readlink(path) == os.path.join(CURRENT, name)


def _locate(directory: str) -> tuple[tuple[str, str], str | None]:
  """``((results path, meta path), generation)``: the pair to read, from one generation when the top-level
  names are the fixed links through :data:`CURRENT`; the top-level files themselves otherwise (earlier layout,
  or files replaced by hand)."""
  generation = _current_generation(directory)
  if generation is not None and all(_is_fixed_link(directory, n) for n in (RESULTS, META)):
    return (os.path.join(directory, generation, RESULTS), os.path.join(directory, generation, META)), generation
  return (os.path.join(directory, RESULTS), os.path.join(directory, META)), None


def _link(directory: str, name: str) -> None:
  """Makes ``directory/name`` the fixed link ``.current/name`` (replacing a plain file of the earlier layout)."""
  if _is_fixed_link(directory, name):
    return
  tmp = os.path.join(directory, f"{_TMP}link-{os.getpid()}-{name}")
  _remove(tmp)
  os.symlink(os.path.join(CURRENT, name), tmp)
  os.replace(tmp, os.path.join(directory, name))


def _publish(directory: str, files: Mapping[str, bytes]) -> None:
  """Writes ``files`` into a new generation folder and publishes it with one ``os.replace`` of :data:`CURRENT`.

  Any failure before that replace (no space left, a kill) leaves the published
  generation as it was; an ``OSError`` becomes a :class:`ResultWriteError`
  that says so.
  """
  before = _current_generation(directory)
  had_result = before is not None or os.path.exists(os.path.join(directory, RESULTS))
  tmp = tempfile.mkdtemp(dir=directory, prefix=_TMP + "gen-")
  os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp's 0700: the files inside follow the umask like figures do
  generation = _GEN + os.path.basename(tmp)[len(_TMP + "gen-"):]
  link = os.path.join(directory, _TMP + "link" + generation)
  published = False
  try:
    for name, data in files.items():
      _write_bytes(os.path.join(tmp, name), data)
    _fsync_dir(tmp)
    os.rename(tmp, os.path.join(directory, generation))
    os.symlink(generation, link)
    os.replace(link, os.path.join(directory, CURRENT))  # the single step that publishes the pair
    published = True
    _fsync_dir(directory)
    for name in (META, RESULTS):  # meta.json first: in between, an earlier layout's results.npz is its `previous`
      _link(directory, name)
  except OSError as e:
    if not published:
      for path in (tmp, os.path.join(directory, generation), link):
        _remove(path)
    state = ("the new result was published but the links results.npz/meta.json could not be made; the next write "
             "makes them" if published else
             "the previous complete result is intact and loadable" if had_result else
             "nothing was saved (there was no earlier result)")
    raise ResultWriteError(e.errno, f"could not write the result in {directory!r} ({e.strerror or e}): {state}"
                           + ("; free some space and rerun to resume" if e.errno == errno.ENOSPC else "")) from e
  except BaseException:
    if not published:
      for path in (tmp, os.path.join(directory, generation), link):
        _remove(path)
    raise
  for name in os.listdir(directory):  # keep the generation just replaced: a reader may have resolved it
    if name.startswith(_GEN) and name not in (generation, before):
      _remove(os.path.join(directory, name))


def _previous_sha256(directory: str) -> str | None:
  try:
    return sha256_file(_locate(directory)[0][0])
  except OSError:  # no earlier results.npz
    return None


def save_result(directory: str, arrays: Mapping[str, Any], meta: Mapping[str, Any]) -> None:
  """Publishes ``results.npz`` and ``meta.json`` (with the checksum of the arrays) in ``directory`` as one unit.

  Both files go into a new generation folder that one atomic switch of
  :data:`CURRENT` publishes, so that a reader sees the earlier pair or this
  one, never a mix, and a failed or killed write leaves the earlier pair. The
  write holds the directory's :class:`RunLock` (taken here unless this
  process holds it already).

  Raises:
    RunLockedError: another process is writing the directory.
    ResultWriteError: the write failed (``errno.ENOSPC`` for a full disk); the
      message says whether the previous result is intact (it is, unless the
      failure came after publishing).
  """
  buf = io.BytesIO()
  np.savez_compressed(buf, **{k: np.asarray(v) for k, v in arrays.items()})
  data = buf.getvalue()
  with RunLock(directory):
    checksum = {"algorithm": "sha256", RESULTS: _sha256(data), "previous": _previous_sha256(directory)}
    full = to_jsonable({**meta, "checksum": checksum})
    full["checksum"]["meta"] = _meta_sha256(json.loads(json.dumps(full, allow_nan=True)))  # as a reader parses it
    text = json.dumps(full, indent=2, sort_keys=True, allow_nan=True)
    _publish(directory, {RESULTS: data, META: text.encode()})


def _parse_meta(path: str, raw: bytes) -> dict[str, Any]:
  try:
    meta = json.loads(raw.decode("utf-8"))
  except (ValueError, UnicodeDecodeError) as e:  # JSONDecodeError is a ValueError
    raise CorruptResultError(f"{path!r} is not valid JSON ({type(e).__name__}: {e}): the file is truncated or "
                             f"corrupted. {_FIX}") from None
  if not isinstance(meta, dict):
    raise CorruptResultError(f"{path!r} should hold a JSON object; found {type(meta).__name__}. {_FIX}")
  checksum = meta.get("checksum")
  if isinstance(checksum, dict) and ("meta" in checksum or set(checksum) - _CHECKSUM_KEYS):
    own = {**meta, "checksum": {k: v for k, v in checksum.items() if k != "meta"}}
    if checksum.get("meta") != _meta_sha256(own):
      raise CorruptResultError(f"{path!r} does not match its own checksum: the file is corrupted (this is damage, "
                               f"not a change of config). {_FIX}")
  return meta


_CHECKSUM_KEYS = {"algorithm", RESULTS, "previous", "meta"}


def _meta_sha256(meta: Mapping[str, Any]) -> str:
  """The SHA-256 of ``meta`` in a canonical JSON form (sorted keys, no spaces): what ``checksum.meta`` records."""
  return _sha256(json.dumps(meta, sort_keys=True, separators=(",", ":"), allow_nan=True).encode())


def _read_meta(path: str) -> dict[str, Any]:
  with open(path, "rb") as f:
    return _parse_meta(path, f.read())


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


_READ_ATTEMPTS = 20
"""How often a reader resolves :data:`CURRENT` again when the generation it found was removed before it opened
its files (a writer replaced it twice meanwhile)."""


def _read_pair(directory: str) -> tuple[str, bytes, str, bytes]:
  """``(results path, its bytes, meta path, its bytes)`` of one published state."""
  for _ in range(_READ_ATTEMPTS):
    (results_path, meta_path), generation = _locate(directory)
    try:
      # Both opened before either is read: an open file stays readable when its generation is removed.
      with open(meta_path, "rb") as fm, open(results_path, "rb") as fr:
        return results_path, fr.read(), meta_path, fm.read()
    except (FileNotFoundError, NotADirectoryError):
      if generation is None or _current_generation(directory) == generation:
        break
  for path in (os.path.join(directory, RESULTS), os.path.join(directory, META)):
    if not os.path.isfile(path):
      raise FileNotFoundError(f"no result in {directory!r}: expected {RESULTS} and {META}, missing "
                              f"{os.path.basename(path)}")
  raise FileNotFoundError(f"no result in {directory!r}: its files kept disappearing while being read")


def load_result(directory: str, *, verify: bool = True) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
  """Reads ``(arrays, meta)`` from a result directory: one complete published state, even while a run writes it.

  Args:
    directory: the result directory.
    verify: check ``results.npz`` against the SHA-256 recorded in
      ``meta.json`` (``False`` reads files written without one).

  Raises:
    FileNotFoundError: naming the missing file.
    CorruptResultError: when a file cannot be parsed or the checksum does not match.
  """
  results_path, data, meta_path, raw = _read_pair(directory)
  meta = _parse_meta(meta_path, raw)
  if verify:
    _check_sum(results_path, data, meta)
  try:
    with np.load(io.BytesIO(data), allow_pickle=False) as f:
      arrays = {k: f[k] for k in f.files}
  except Exception as e:  # zipfile, zlib, numpy format errors: all mean a damaged file
    raise CorruptResultError(f"{results_path!r} is not a readable .npz archive ({type(e).__name__}: {e}). {_FIX}") from None
  return arrays, meta


def config_diff(a: Any, b: Any, prefix: str = "") -> list[str]:
  """Paths where two JSON-like values differ (for 'refusing to resume' messages)."""
  if isinstance(a, dict) and isinstance(b, dict):
    out = []
    for k in sorted(set(a) | set(b)):
      if k not in a or k not in b:
        out.append(f"{prefix}{k} ({'only in the saved run' if k in a else 'only in this run'})")
      else:
        out.extend(config_diff(a[k], b[k], f"{prefix}{k}."))
    return out
  return [] if same_json(a, b) else [f"{prefix.rstrip('.')}: saved {a!r}, now {b!r}"]


class ResultStore:
  """A resumable result directory tied to one config, written by one run at a time.

  ``open`` takes the directory's :class:`RunLock` (held until ``close``, or
  the end of a ``with`` block; a directory another process writes raises
  :class:`RunLockedError` at once), then returns the arrays of a finished or
  partial earlier run with the same config (or ``None``); a different config
  raises ``ValueError`` naming what differs, a damaged directory
  :class:`CorruptResultError`. ``write`` publishes both files as one unit
  (:func:`save_result`).

  With ``overwrite=True`` an earlier result (whatever its config or state)
  stays published until this run's is complete: the writes go to
  ``<directory>/.replacement`` (a result directory of its own, resumed by the
  same command after a kill) and the ``final`` write publishes the new result
  in place of the old one, removes the old one's figures (``*.png``,
  ``*.vtk``) and the replacement folder. A kill at any moment leaves the old
  result or the new, complete one.
  """

  def __init__(self, directory: str, config: Mapping[str, Any], *, overwrite: bool = False):
    self.directory = directory
    self.config = to_jsonable(config)
    self.overwrite = bool(overwrite)
    self._lock = RunLock(directory)
    self._staging: str | None = None

  def __enter__(self) -> "ResultStore":
    return self

  def __exit__(self, *exc: Any) -> None:
    self.close()

  def close(self) -> None:
    """Releases the directory's lock (``open`` took it)."""
    self._lock.release()

  def open(self) -> dict[str, np.ndarray] | None:
    self._lock.acquire()
    try:
      return self._resume()
    except BaseException:
      self.close()
      raise

  def _resume(self) -> dict[str, np.ndarray] | None:
    paths = [os.path.join(self.directory, name) for name in (RESULTS, META)]
    held = any(os.path.lexists(p) for p in (*paths, os.path.join(self.directory, CURRENT)))
    if self.overwrite and held:
      self._staging = os.path.join(self.directory, REPLACEMENT)
      try:  # an interrupted replacement by this same config resumes; anything else there starts afresh
        with RunLock(self._staging):
          return ResultStore(self._staging, self.config)._resume()
      except ValueError:
        _remove(self._staging)
        return None
    if self.overwrite or not held:
      return None
    if not os.path.exists(paths[1]):
      raise CorruptResultError(f"{self.directory!r} holds {RESULTS} without {META}: it cannot be verified or "
                               f"resumed. {_FIX}")
    if os.path.exists(paths[0]):
      arrays, meta = load_result(self.directory)
    else:  # killed between the two renames of an earlier version's first write: nothing finished yet
      arrays, meta = None, _read_meta(paths[1])
      checksum = meta.get("checksum")
      if not (isinstance(checksum, dict) and RESULTS in checksum and checksum.get("previous", "") is None):
        raise CorruptResultError(f"{self.directory!r} holds {META} but its {RESULTS} is missing. {_FIX}")
    saved = meta.get("config")
    if not same_json(saved, self.config):
      diffs = "; ".join(config_diff(saved, self.config)[:6])
      raise ValueError(
          f"{self.directory!r} holds a result made with another config, refusing to reuse it ({diffs}). "
          "Choose another output directory, or pass overwrite=True (CLI: --overwrite) to replace it."
      )
    return arrays

  @property
  def location(self) -> str:
    """Where the writes go now: the directory, or its replacement folder during an ``overwrite`` run."""
    return self._staging or self.directory

  def write(self, arrays: Mapping[str, Any], meta: Mapping[str, Any], *, final: bool = False) -> None:
    """Publishes a (partial) result; ``final``: the complete one, which an ``overwrite`` run puts in place."""
    meta = {**meta, "config": self.config}
    if self._staging is None:
      save_result(self.directory, arrays, meta)
    elif not final:
      save_result(self._staging, arrays, meta)
    else:
      save_result(self.directory, arrays, meta)  # one switch of .current: the old result, then the new one
      for name in os.listdir(self.directory):  # the replaced result's figures (the caller draws the new ones)
        if name.endswith((".png", ".vtk")):
          _remove(os.path.join(self.directory, name))
      _remove(self._staging)
      self._staging = None


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
  from . import __version__

  versions = {"jaxscape": __version__}
  for pkg in ("jax", "jaxlib", "flax", "optax", "numpy"):
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

  Points whose height is NaN (not evaluated, or not finite) are written with
  ``z = nan`` and NaN fields (ParaView's Threshold filter drops them); no
  value is filled in.

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
  xx, yy = np.meshgrid(x, y)  # points not evaluated (or not finite) keep z = nan: nothing is invented
  lines = ["# vtk DataFile Version 3.0", "jaxscape surface", "ASCII", "DATASET STRUCTURED_GRID",
           f"DIMENSIONS {x.size} {y.size} 1", f"POINTS {x.size * y.size} double"]
  lines += [f"{a:.10g} {b:.10g} {c:.10g}" if np.isfinite(c) else f"{a:.10g} {b:.10g} nan"
            for a, b, c in zip(xx.ravel(), yy.ravel(), z.ravel())]
  lines.append(f"POINT_DATA {x.size * y.size}")
  for k, v in fields.items():
    lines += [f"SCALARS {k} double 1", "LOOKUP_TABLE default"]
    lines += [f"{val:.10g}" if np.isfinite(val) else "nan" for val in v.ravel()]
  text = "\n".join(lines) + "\n"
  _atomic_write(path, lambda f: f.write(text.encode()))
  return path
