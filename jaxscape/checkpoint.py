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

Example:
  >>> import tempfile, jax
  >>> from jaxscape import checkpoint, models, train
  >>> d = tempfile.mkdtemp()
  >>> net = models.build("mlp", 0, in_features=4, widths=[8], out_features=3)
  >>> _, _, p, s = train.split_train(net)
  >>> checkpoint.save(d + "/p", p)
  >>> q = checkpoint.restore(d + "/p", like=p)
  >>> bool(jax.tree.all(jax.tree.map(lambda a, b: (a == b).all(), p, q)))
  True
"""

from __future__ import annotations

import json
import os
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

PyTree = Any

__all__ = [
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


def save(path: str | os.PathLike, tree: PyTree, *, overwrite: bool = True) -> None:
  """Saves one pytree of arrays to ``path`` (an orbax directory), waiting until it is written."""
  import orbax.checkpoint as ocp

  with ocp.StandardCheckpointer() as ckptr:
    ckptr.save(_abs(path), _encode(tree), force=overwrite)
    ckptr.wait_until_finished()


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
  with ocp.StandardCheckpointer() as ckptr:
    if like is None:
      return ckptr.restore(p)
    return _decode(ckptr.restore(p, _abstract(like)), like)


def _manager(directory: str, max_to_keep: int | None = None):
  import orbax.checkpoint as ocp

  handlers = {name: ocp.StandardCheckpointHandler() for name in _ITEMS}
  return ocp.CheckpointManager(directory, item_handlers=handlers,
                               options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True))


def latest_step(run_dir: str | os.PathLike) -> int | None:
  """The step of the newest complete training checkpoint in ``run_dir`` (``None`` if there is none)."""
  d = os.path.join(_abs(run_dir), "checkpoints")
  if not os.path.isdir(d):
    return None
  with _manager(d) as mngr:
    return mngr.latest_step()


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
  meta = {k: np.asarray(v) for k, v in carry.items() if k not in ("params", "state", "opt_state")}
  meta["key"] = np.asarray(jax.random.key_data(key))
  items = {"meta": ocp.args.StandardSave(meta)}
  for name in ("params", "state", "opt_state"):
    if _has_leaves(carry[name]):
      items[name] = ocp.args.StandardSave(_encode(carry[name]))
  with _manager(os.path.join(rd, "checkpoints"), max_to_keep) as mngr:
    mngr.save(step, args=ocp.args.Composite(**items), force=True)
    mngr.wait_until_finished()
  if rows is not None:
    arrays = {k: np.asarray(v) for k, v in rows.items() if len(v)}
    tmp = os.path.join(rd, HISTORY_FILE + ".tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, os.path.join(rd, HISTORY_FILE))


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
    step = mngr.latest_step() if step is None else step
    if step is None:
      return None
    meta_like = {k: np.asarray(v) for k, v in like.items() if k not in ("params", "state", "opt_state")}
    meta_like["key"] = np.asarray(jax.random.key_data(jax.random.key(0)))
    items = {"meta": ocp.args.StandardRestore(_abstract(meta_like))}
    names = [n for n in ("params", "state", "opt_state") if _has_leaves(like[n])]
    for name in names:
      items[name] = ocp.args.StandardRestore(_abstract(like[name]))
    try:
      r = mngr.restore(step, args=ocp.args.Composite(**items))
    except Exception as e:  # structure mismatch: say which run and what was expected
      raise ValueError(f"checkpoint {d!r} step {step} does not match the model/optimiser being trained: "
                       f"{type(e).__name__}: {e}") from e
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
      keep = np.asarray(h["step"]) <= step
      rows = {k: list(np.asarray(v)[keep]) for k, v in h.items()}
  return carry, key, rows


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


def _jsonable(x: Any) -> Any:
  if isinstance(x, Mapping):
    return {str(k): _jsonable(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [_jsonable(v) for v in x]
  if isinstance(x, np.generic):
    return x.item()
  if isinstance(x, (str, int, float, bool)) or x is None:
    return x
  raise TypeError(f"spec values must be JSON values (str, int, float, bool, None, lists, dicts); got {type(x).__name__}: {x!r}")


def write_spec(run_dir: str | os.PathLike, spec: Mapping) -> None:
  """Writes ``spec.json`` (model name + kwargs, dataset name + kwargs, training settings)."""
  rd = _abs(run_dir)
  os.makedirs(rd, exist_ok=True)
  with open(os.path.join(rd, SPEC_FILE), "w") as f:
    json.dump(_jsonable(spec), f, indent=2, sort_keys=True)


def read_spec(run_dir: str | os.PathLike) -> dict:
  """Reads ``spec.json`` from a run directory."""
  p = os.path.join(_abs(run_dir), SPEC_FILE)
  if not os.path.isfile(p):
    raise FileNotFoundError(f"expected {SPEC_FILE} in {_abs(run_dir)!r} (written by train_from_spec / train(..., spec=...))")
  with open(p) as f:
    return json.load(f)


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
  from .train import split_train, update_model

  spec = read_spec(run_dir)
  m = spec.get("model")
  if not isinstance(m, Mapping) or "name" not in m:
    raise ValueError(f"{SPEC_FILE} in {_abs(run_dir)!r} needs a 'model' entry {{'name': ..., 'kwargs': {{...}}}}; got {m!r}")
  model = models.build(m["name"], 0, **m.get("kwargs", {}))
  _, _, params, state = split_train(model)
  d = os.path.join(_abs(run_dir), "checkpoints")
  with _manager(d) as mngr:
    step = mngr.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f"no training checkpoint under {d!r}")
    items = {"params": ocp.args.StandardRestore(_abstract(params))}
    if _has_leaves(state):
      items["state"] = ocp.args.StandardRestore(_abstract(state))
    r = mngr.restore(step, args=ocp.args.Composite(**items))
  update_model(model, _decode(r["params"], params), _decode(r["state"], state) if _has_leaves(state) else None)
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
