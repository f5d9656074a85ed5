"""Orbax checkpoints of training runs, parameter trajectories and self-describing model directories.

A run directory written by :func:`jaxscape.train.train` (with
``checkpoint_dir``) or :func:`jaxscape.train.train_from_spec` holds::

  spec.json                  {"model": {"name", "kwargs"}, "dataset": {"name", **load_kwargs}, "train": {...}}
  history.npz                per-epoch history rows written so far
  checkpoints/<step>/        orbax items: params, state, opt_state, meta (step, data key)
  trajectory/<step>/         parameter snapshots (every ``snapshot_every`` steps)

:func:`load_model` rebuilds the ``nnx.Module`` from ``spec.json`` alone and
restores its weights and BatchNorm statistics. Orbax needs absolute paths;
every function here makes them absolute.

Orbax writes each checkpoint to a temporary directory and renames it when
complete, so a killed run leaves its last complete checkpoint behind;
``history.npz`` and ``spec.json`` are replaced atomically too. Every
checkpoint written here gets ``jaxscape_checksums.json`` (the SHA-256 of each
of its files). Before a restore, the files are checked against it, then the
saved leaves (names, shapes, dtypes, from orbax's metadata) against the
expected ones: a damaged checkpoint (truncated, corrupted, missing files)
raises :class:`CorruptCheckpointError`, a checkpoint of another model
:class:`CheckpointMismatchError` naming the differing leaves (orbax would
silently cast dtypes). Checkpoints without the checksum file (written by
other tools) rely on orbax's own checks.

Example:
  >>> import tempfile, jax
  >>> import jaxscape as js
  >>> from jaxscape import checkpoint, models
  >>> d = tempfile.mkdtemp()
  >>> net = models.build("mlp", 0, in_features=4, widths=[8], out_features=3)
  >>> _, p, s, _ = js.adapters.split(net)
  >>> checkpoint.save(d + "/p", p)
  >>> q = checkpoint.restore(d + "/p", like=p)
  >>> bool(jax.tree.all(jax.tree.map(lambda a, b: (a == b).all(), p, q)))
  True
"""

from __future__ import annotations

import json
import os
import warnings
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from .adapters import nnx as _nnx
from .io import sha256_file, to_jsonable
from .tree import PyTree, path_name

__all__ = [
    "CorruptCheckpointError",
    "CheckpointMismatchError",
    "save",
    "restore",
    "save_training",
    "restore_training",
    "latest_step",
    "save_snapshot",
    "load_trajectory",
    "write_spec",
    "read_spec",
    "load_model",
    "load_dataset",
]

_ITEMS = ("params", "state", "opt_state", "meta")
SPEC_FILE = "spec.json"
HISTORY_FILE = "history.npz"
CHECKSUM_FILE = "jaxscape_checksums.json"


class CorruptCheckpointError(ValueError):
  """A checkpoint directory with truncated, corrupted or missing files."""


class CheckpointMismatchError(ValueError):
  """A checkpoint whose leaves (names, shapes, dtypes) are not those of the model being restored."""


def _abs(path: str | os.PathLike) -> str:
  return os.path.abspath(os.fspath(path))


def _is_key(x: Any) -> bool:
  return hasattr(x, "dtype") and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def _encode(tree: PyTree) -> PyTree:
  """Typed PRNG keys (e.g. Dropout RNG state) become their raw uint32 data."""
  return jax.tree.map(lambda x: jax.random.key_data(x) if _is_key(x) else x, tree)


def _decode(tree: PyTree, like: PyTree) -> PyTree:
  return jax.tree.map(lambda x, t: jax.random.wrap_key_data(x, impl=jax.random.key_impl(t)) if _is_key(t) else x,
                      tree, like)


def _abstract(tree: PyTree) -> PyTree:
  import orbax.checkpoint as ocp

  return jax.tree.map(ocp.utils.to_shape_dtype_struct, _encode(tree))


def _has_leaves(tree: PyTree) -> bool:
  return len(jax.tree.leaves(tree)) > 0


def _leaf_name(path: tuple) -> str:
  """Orbax's name of a leaf: its keys joined by dots (``layers.0.kernel``, ``0.mu.head.bias``)."""
  return path_name(path, ".")


def _layout(tree: PyTree) -> dict[str, tuple[tuple[int, ...], str]]:
  """``{leaf name: (shape, dtype)}`` of the arrays a checkpoint of ``tree`` holds."""
  leaves = jax.tree_util.tree_flatten_with_path(_encode(tree))[0]
  return {_leaf_name(path): (tuple(np.shape(x)), str(np.dtype(x.dtype) if hasattr(x, "dtype") else np.asarray(x).dtype))
          for path, x in leaves}


def _saved_layout(metadata: Any) -> dict[str, tuple[tuple[int, ...], str]]:
  """The same from orbax's metadata of a saved item (its ``ArrayMetadata`` leaves)."""
  tree = getattr(metadata, "tree", metadata)
  out = {}
  for m in jax.tree.leaves(tree):
    name, shape, dtype = getattr(m, "name", None), getattr(m, "shape", None), getattr(m, "dtype", None)
    if name is not None and shape is not None and dtype is not None:
      out[str(name)] = (tuple(int(n) for n in shape), str(np.dtype(dtype)))
  return out


def _check_layout(where: str, saved: Mapping[str, tuple], expected: Mapping[str, tuple]) -> None:
  """Raises :class:`CheckpointMismatchError` naming what differs between a checkpoint and the expected leaves."""
  missing = sorted(set(expected) - set(saved))
  extra = sorted(set(saved) - set(expected))
  differ = [f"{k}: saved {saved[k][0]} {saved[k][1]}, expected {expected[k][0]} {expected[k][1]}"
            for k in sorted(set(saved) & set(expected)) if saved[k] != expected[k]]
  if not (missing or extra or differ):
    return
  found = []
  if missing:
    found.append(f"missing in the checkpoint: {missing[:6]}{' ...' if len(missing) > 6 else ''}")
  if extra:
    found.append(f"not in the model: {extra[:6]}{' ...' if len(extra) > 6 else ''}")
  if differ:
    found.append("; ".join(differ[:6]) + (" ..." if len(differ) > 6 else ""))
  raise CheckpointMismatchError(f"{where} is a checkpoint of another model: expected {len(expected)} leaves like the "
                                f"model being restored, found {len(saved)} ({'; '.join(found)})")


def _short(e: BaseException | str) -> str:
  if isinstance(e, str):
    return e
  text = str(e).strip().splitlines()
  return f"{type(e).__name__}: {text[0][:300] if text else ''}"


def _corrupt(where: str, e: BaseException | str, hint: str = "") -> CorruptCheckpointError:
  return CorruptCheckpointError(f"{where} is damaged or incomplete and cannot be restored ({_short(e)}). "
                                f"{hint or 'Delete it and save or train again.'}")


def _write_checksums(directory: str) -> None:
  """Records the SHA-256 of every file of a finished checkpoint in ``CHECKSUM_FILE`` (atomically)."""
  sums = {}
  for root, _, files in os.walk(directory):
    for name in files:
      full = os.path.join(root, name)
      rel = os.path.relpath(full, directory)
      if rel != CHECKSUM_FILE:
        sums[rel] = sha256_file(full)
  tmp = os.path.join(directory, CHECKSUM_FILE + ".tmp")
  with open(tmp, "w") as f:
    json.dump(sums, f, indent=1, sort_keys=True)
  os.replace(tmp, os.path.join(directory, CHECKSUM_FILE))


def _verify_checksums(directory: str, where: str, hint: str = "", *, required: bool = False) -> None:
  """Raises :class:`CorruptCheckpointError` when a file differs from (or lacks) its recorded checksum.

  Without a checksum file: an error when ``required`` (a training step), else a loud warning that the checkpoint
  is loaded unverified (one written by another tool has orbax's own checks only).
  """
  path = os.path.join(directory, CHECKSUM_FILE)
  if not os.path.isfile(path):
    if required:
      raise _corrupt(where, f"it has no {CHECKSUM_FILE} (its write did not finish, or another tool wrote it)", hint)
    warnings.warn(f"{where} has no {CHECKSUM_FILE}: loaded UNVERIFIED (only orbax's own checks); checkpoints "
                  "written by jaxscape carry the SHA-256 of every file", stacklevel=3)
    return
  try:
    with open(path, "rb") as f:
      sums = json.loads(f.read().decode("utf-8"))
    if not (isinstance(sums, dict) and all(isinstance(v, str) for v in sums.values())):
      raise ValueError(f"expected {{file: sha256}}, found {type(sums).__name__}")
  except (ValueError, UnicodeDecodeError) as e:
    raise _corrupt(where, f"its {CHECKSUM_FILE} is unreadable ({_short(e)})", hint) from None
  bad = []
  for rel, digest in sorted(sums.items()):
    full = os.path.join(directory, rel)
    if not os.path.isfile(full):
      bad.append(f"{rel} (missing)")
    elif sha256_file(full) != digest:
      bad.append(f"{rel} (changed)")
  if bad:
    raise _corrupt(where, f"{len(bad)} of its {len(sums)} files differ from the checksums recorded when it was "
                          f"written: {bad[:4]}{' ...' if len(bad) > 4 else ''}", hint)


def save(path: str | os.PathLike, tree: PyTree, *, overwrite: bool = True) -> None:
  """Saves one pytree of arrays to ``path`` (an orbax directory), waiting until it is written."""
  import orbax.checkpoint as ocp

  with ocp.StandardCheckpointer() as ckptr:
    ckptr.save(_abs(path), _encode(tree), force=overwrite)
    ckptr.wait_until_finished()
  _write_checksums(_abs(path))


def restore(path: str | os.PathLike, like: PyTree | None = None) -> PyTree:
  """Restores a pytree saved by :func:`save`.

  Args:
    path: the directory.
    like: a pytree of the expected structure, shapes and dtypes (arrays or
      ``jax.ShapeDtypeStruct``); with it, containers such as optax states
      come back with their types. Without it, plain nested dicts are returned.

  Raises:
    FileNotFoundError: when there is no checkpoint at ``path``.
  """
  import orbax.checkpoint as ocp

  p = _abs(path)
  if not os.path.isdir(p):
    raise FileNotFoundError(f"no orbax checkpoint directory at {p!r}")
  where = f"checkpoint {p!r}"
  _verify_checksums(p, where)
  with ocp.StandardCheckpointer() as ckptr:
    try:
      saved = _saved_layout(ckptr.metadata(p).item_metadata)
    except Exception as e:  # unreadable metadata: a damaged directory
      raise _corrupt(where, e) from e
    if not saved:  # orbax logs unreadable array metadata and returns none
      raise _corrupt(where, "no readable array metadata")
    if like is not None:
      _check_layout(where, saved, _layout(like))
    try:
      return ckptr.restore(p) if like is None else _decode(ckptr.restore(p, _abstract(like)), like)
    except Exception as e:  # the layout matched, so a failure here is damaged data
      raise _corrupt(where, e) from e


def _manager(directory: str, max_to_keep: int | None = None):
  import orbax.checkpoint as ocp

  handlers = {name: ocp.StandardCheckpointHandler() for name in _ITEMS}
  return ocp.CheckpointManager(directory, item_handlers=handlers,
                               options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True))


def _complete_steps(mngr: Any, d: str) -> list[int]:
  """The managed steps whose checksums were written (a step killed before them is not complete)."""
  return [s for s in mngr.all_steps() if os.path.isfile(os.path.join(d, str(s), CHECKSUM_FILE))]


def latest_step(run_dir: str | os.PathLike) -> int | None:
  """The step of the newest complete training checkpoint in ``run_dir`` (``None`` if there is none).

  Complete means written with its checksums; a step whose write was killed before them is skipped (the run
  resumes from the one before and writes it again)."""
  d = os.path.join(_abs(run_dir), "checkpoints")
  if not os.path.isdir(d):
    return None
  with _manager(d) as mngr:
    return max(_complete_steps(mngr, d), default=None)


def save_training(run_dir: str | os.PathLike, carry: Mapping[str, PyTree], key: jax.Array,
                  rows: Mapping[str, list] | None = None, *, spec: Mapping | None = None, max_to_keep: int = 2) -> None:
  """Checkpoints a training state: params, model state, optimiser state, step and data key.

  Args:
    run_dir: the run directory (created if needed).
    carry: ``{"params", "state", "opt_state", "step", ...}`` as used by
      :mod:`jaxscape.train` (entries other than the first three are stored
      as arrays in the ``meta`` item).
    key: the data-order key of the run.
    rows: per-epoch history rows so far (written to ``history.npz``).
    spec: written to ``spec.json`` when given.
    max_to_keep: number of step checkpoints kept.
  """
  import orbax.checkpoint as ocp

  rd = _abs(run_dir)
  os.makedirs(rd, exist_ok=True)
  if spec is not None:
    write_spec(rd, spec)
  step = int(np.asarray(carry["step"]).reshape(-1)[0])
  if rows is not None:
    # Before the checkpoint: a kill in between leaves rows beyond the last
    # checkpoint, which restore_training drops; the other order would lose rows.
    arrays = {k: np.asarray(v) for k, v in rows.items() if len(v)}
    tmp = os.path.join(rd, HISTORY_FILE + ".tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, os.path.join(rd, HISTORY_FILE))
  meta = {k: np.asarray(v) for k, v in carry.items() if k not in ("params", "state", "opt_state")}
  meta["key"] = np.asarray(jax.random.key_data(key))
  items = {"meta": ocp.args.StandardSave(meta)}
  for name in ("params", "state", "opt_state"):
    if _has_leaves(carry[name]):
      items[name] = ocp.args.StandardSave(_encode(carry[name]))
  with _manager(os.path.join(rd, "checkpoints"), max_to_keep) as mngr:
    mngr.save(step, args=ocp.args.Composite(**items), force=True)
    mngr.wait_until_finished()
  _write_checksums(os.path.join(rd, "checkpoints", str(step)))


def restore_training(run_dir: str | os.PathLike, like: Mapping[str, PyTree], step: int | None = None
                     ) -> tuple[dict, jax.Array, dict[str, list]] | None:
  """Restores the latest (or a given) training checkpoint.

  Args:
    run_dir: the run directory.
    like: a carry of the right structure (e.g. the freshly initialised one).
    step: a specific step (default: the latest).

  Returns:
    ``(carry, key, rows)`` with the history rows up to the restored step, or
    ``None`` when the directory holds no checkpoint.
  """
  import orbax.checkpoint as ocp

  rd = _abs(run_dir)
  d = os.path.join(rd, "checkpoints")
  if not os.path.isdir(d):
    return None
  with _manager(d) as mngr:
    step = max(_complete_steps(mngr, d), default=None) if step is None else step
    if step is None:
      return None
    meta_like = {k: np.asarray(v) for k, v in like.items() if k not in ("params", "state", "opt_state")}
    meta_like["key"] = np.asarray(jax.random.key_data(jax.random.key(0)))
    items = {"meta": ocp.args.StandardRestore(_abstract(meta_like))}
    names = [n for n in ("params", "state", "opt_state") if _has_leaves(like[n])]
    for name in names:
      items[name] = ocp.args.StandardRestore(_abstract(like[name]))
    expected = {"meta": meta_like, **{n: like[n] for n in names}}
    r = _restore_step(mngr, d, step, items, expected)
  carry = dict(like)
  for name in names:
    carry[name] = _decode(r[name], like[name])
  for k in meta_like:
    if k != "key":
      carry[k] = jnp.asarray(r["meta"][k])
  key = jax.random.wrap_key_data(np.asarray(r["meta"]["key"]))
  rows: dict[str, list] = {}
  hp = os.path.join(rd, HISTORY_FILE)
  if os.path.isfile(hp):
    with np.load(hp) as z:
      h = {k: z[k] for k in z.files}
    if "step" in h:
      # curvature rows (train's curvature_every) have their own steps
      keep = {k: np.asarray(h["curvature_step" if k.startswith("curvature_") else "step"]) <= step for k in h}
      rows = {k: list(np.asarray(v)[keep[k]]) for k, v in h.items()}
  return carry, key, rows


def _restore_step(mngr: Any, d: str, step: int, items: Mapping[str, Any], expected: Mapping[str, PyTree]) -> Any:
  """Restores ``items`` of one managed step after checking their saved layout against ``expected``."""
  import orbax.checkpoint as ocp

  where = f"checkpoint {os.path.join(d, str(step))!r}"
  older = [s for s in mngr.all_steps() if s < step]
  hint = (f"Delete {os.path.join(d, str(step))!r} to resume from the previous checkpoint (step {max(older)}), "
          "or start again in an empty directory." if older else "Delete it and train again.")
  _verify_checksums(os.path.join(d, str(step)), where, hint, required=True)
  try:
    metadata = mngr.item_metadata(step)
    saved = {name: _saved_layout(metadata[name]) for name in expected}
  except Exception as e:  # unreadable or missing item metadata: a damaged step
    raise _corrupt(where, e, hint) from e
  for name, layout in saved.items():
    if not layout:  # orbax logs unreadable array metadata and returns none
      raise _corrupt(where, f"no readable array metadata for item {name!r}", hint)
  for name, tree in expected.items():
    _check_layout(f"{where} (item {name!r})", saved[name], _layout(tree))
  try:
    return mngr.restore(step, args=ocp.args.Composite(**items))
  except Exception as e:  # the layout matched, so a failure here is damaged data
    raise _corrupt(where, e, hint) from e


def save_snapshot(run_dir: str | os.PathLike, step: int, params: PyTree) -> None:
  """Saves one parameter snapshot of a trajectory as ``trajectory/<step>``."""
  save(os.path.join(_abs(run_dir), "trajectory", str(int(step))), params)


def load_trajectory(run_dir: str | os.PathLike, like: PyTree, max_step: int | None = None
                    ) -> tuple[np.ndarray, PyTree] | None:
  """Loads all saved snapshots (up to ``max_step``), stacked on a leading axis.

  Returns:
    ``(steps, stacked_params)`` or ``None`` when there are none.
  """
  d = os.path.join(_abs(run_dir), "trajectory")
  if not os.path.isdir(d):
    return None
  steps = sorted(int(n) for n in os.listdir(d) if n.isdigit())
  if max_step is not None:
    steps = [s for s in steps if s <= max_step]
  if not steps:
    return None
  snaps = [restore(os.path.join(d, str(s)), like=like) for s in steps]
  return np.asarray(steps, np.int64), jax.tree.map(lambda *a: np.stack([np.asarray(x) for x in a]), *snaps)


def write_spec(run_dir: str | os.PathLike, spec: Mapping) -> None:
  """Writes ``spec.json`` (model name + kwargs, dataset name + kwargs, training settings) atomically."""
  rd = _abs(run_dir)
  os.makedirs(rd, exist_ok=True)
  tmp = os.path.join(rd, SPEC_FILE + ".tmp")
  with open(tmp, "w") as f:
    json.dump(to_jsonable(spec), f, indent=2, sort_keys=True)
  os.replace(tmp, os.path.join(rd, SPEC_FILE))


def read_spec(run_dir: str | os.PathLike) -> dict:
  """Reads ``spec.json`` from a run directory."""
  p = os.path.join(_abs(run_dir), SPEC_FILE)
  if not os.path.isfile(p):
    raise FileNotFoundError(f"expected {SPEC_FILE} in {_abs(run_dir)!r} (written by train_from_spec / train(..., spec=...))")
  try:
    with open(p, "rb") as f:
      spec = json.loads(f.read().decode("utf-8"))
  except (ValueError, UnicodeDecodeError) as e:
    raise CorruptCheckpointError(f"{p!r} is not valid JSON ({_short(e)}): the run directory is damaged") from e
  if not isinstance(spec, dict):
    raise CorruptCheckpointError(f"{p!r} should hold a JSON object (the run's spec); found {type(spec).__name__}")
  return spec


def load_model(run_dir: str | os.PathLike, step: int | None = None) -> tuple[Any, dict]:
  """Rebuilds a trained model from its run directory alone.

  The model is built from ``spec["model"] = {"name", "kwargs"}`` with
  :func:`jaxscape.models.build`, and its ``nnx.Param`` weights and other
  variables (BatchNorm running statistics) are restored from the latest (or
  the given) checkpoint.

  Returns:
    ``(model, spec)``.

  Raises:
    FileNotFoundError: when ``spec.json`` or the checkpoints are missing.
    ValueError: when the spec lacks a model description.
  """
  import orbax.checkpoint as ocp

  from . import models

  spec = read_spec(run_dir)
  m = spec.get("model")
  if not isinstance(m, Mapping) or "name" not in m:
    raise ValueError(f"{SPEC_FILE} in {_abs(run_dir)!r} needs a 'model' entry {{'name': ..., 'kwargs': {{...}}}}; got {m!r}")
  model = models.build(m["name"], 0, **m.get("kwargs", {}))
  _, params, state, _ = _nnx.split(model)
  d = os.path.join(_abs(run_dir), "checkpoints")
  with _manager(d) as mngr:
    step = mngr.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f"no training checkpoint under {d!r}")
    items = {"params": ocp.args.StandardRestore(_abstract(params))}
    expected = {"params": params}
    if _has_leaves(state):
      items["state"] = ocp.args.StandardRestore(_abstract(state))
      expected["state"] = state
    r = _restore_step(mngr, d, step, items, expected)
  _nnx.update(model, _decode(r["params"], params), _decode(r["state"], state) if _has_leaves(state) else None)
  return model, spec


def load_dataset(run_dir: str | os.PathLike, data_dir: str | os.PathLike | None = None) -> Any:
  """Reloads the dataset a run was trained on: ``data.load(**spec["dataset"])``.

  Args:
    run_dir: the run directory (its ``spec.json``).
    data_dir: overrides the recorded ``data_dir`` of on-disk datasets
      (e.g. when the run is analysed on another machine).
  """
  from . import data

  d = dict(read_spec(run_dir).get("dataset") or {})
  name = d.pop("name", None)
  if name is None:
    raise ValueError(f"{SPEC_FILE} in {_abs(run_dir)!r} records no dataset name")
  d.update(d.pop("kwargs", {}) or {})
  if data_dir is not None:
    d["data_dir"] = data_dir
  return data.load(name, **d)
