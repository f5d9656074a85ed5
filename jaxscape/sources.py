"""A user's own model, parameters and data for the command line (``--model``, ``--params``, ``--data``).

``--model PKG.MODULE:FACTORY`` (or ``path/to/file.py:FACTORY``) names a
function that returns a model of any supported library — a ``flax.nnx``
module, a ``flax.linen`` module (initialised here on one example, or a
``(module, variables)`` pair), an ``equinox`` module — or a pure
``(apply(params, x), params)`` pair. ``--params`` replaces its parameters
with those of a file: an orbax checkpoint directory, a flax ``.msgpack``
file, a ``.npz`` or a ``.safetensors`` file of named arrays; names are
matched leaf by leaf (``/`` or ``.`` between the parts), and missing, extra
or mismatched leaves are an error that names them. ``--data`` is a built-in
dataset, ``PKG.MODULE:FN`` (or ``file.py:FN``) returning a
:class:`~jaxscape.data.Dataset` or ``(x, y)`` / ``(x_train, y_train, x_test,
y_test)`` arrays, or a ``.npz`` file with ``x``, ``y`` (and optionally
``x_test``, ``y_test``).

Example:
  >>> import numpy as np, jax.numpy as jnp
  >>> load_params({"w": jnp.zeros((2, 3))}, {"w": np.ones((2, 3), np.float32)}, "demo.npz")["w"].sum().item()
  6.0
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import json
import os
import struct
import sys
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from . import tree
from .tree import PyTree

__all__ = ["import_object", "read_params", "load_params", "UserModel", "user_model", "load_data"]


def import_object(spec: str, what: str = "--model") -> Any:
  """The object ``PKG.MODULE:NAME`` or ``path/to/file.py:NAME`` names (a ``ValueError`` says what is wrong)."""
  if not isinstance(spec, str) or spec.count(":") != 1:
    raise ValueError(f"{what} must be PKG.MODULE:NAME or path/to/file.py:NAME; got {spec!r}")
  where, name = spec.split(":")
  if where.endswith(".py"):
    if not os.path.isfile(where):
      raise FileNotFoundError(f"{what} {spec!r}: no file {where!r}")
    module_name = "_jaxscape_user_" + os.path.splitext(os.path.basename(where))[0]
    loader = importlib.util.spec_from_file_location(module_name, where)
    module = importlib.util.module_from_spec(loader)
    sys.modules[module_name] = module  # dataclasses and pickling look the module up by name
    loader.loader.exec_module(module)
  else:
    try:
      module = importlib.import_module(where)
    except ImportError as e:
      raise ValueError(f"{what} {spec!r}: cannot import {where!r} ({e}); is it on PYTHONPATH?") from None
  if not hasattr(module, name):
    public = sorted(n for n in vars(module) if not n.startswith("_"))
    raise ValueError(f"{what} {spec!r}: {where!r} has no {name!r}; it defines {public[:12]}")
  return getattr(module, name)


def _flat(nested: Any, prefix: str = "") -> dict[str, np.ndarray]:
  """``{"a": {"b": x}}`` -> ``{"a/b": x}`` (lists by index)."""
  if isinstance(nested, dict):
    items = nested.items()
  elif isinstance(nested, (list, tuple)):
    items = enumerate(nested)
  else:
    return {prefix.rstrip("/"): np.asarray(nested)}
  out: dict[str, np.ndarray] = {}
  for k, v in items:
    out.update(_flat(v, f"{prefix}{k}/"))
  return out


_SAFETENSORS_DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "I64": "<i8", "I32": "<i4", "I16": "<i2", "I8": "i1",
                       "U8": "u1", "BOOL": "?"}


def _read_safetensors(path: str) -> dict[str, np.ndarray]:
  """The arrays of a ``.safetensors`` file (8-byte header size, JSON header, raw little-endian data)."""
  with open(path, "rb") as f:
    raw = f.read()
  try:
    (size,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + size].decode("utf-8"))
  except (struct.error, ValueError, UnicodeDecodeError) as e:
    raise ValueError(f"{path!r} is not a safetensors file ({type(e).__name__}: {e})") from None
  data, out = raw[8 + size:], {}
  for name, info in header.items():
    if name == "__metadata__":
      continue
    dtype = info.get("dtype")
    if dtype == "BF16":
      import ml_dtypes

      np_dtype = np.dtype(ml_dtypes.bfloat16)
    elif dtype in _SAFETENSORS_DTYPES:
      np_dtype = np.dtype(_SAFETENSORS_DTYPES[dtype])
    else:
      raise ValueError(f"{path!r}: tensor {name!r} has dtype {dtype!r}; expected one of "
                       f"{sorted(_SAFETENSORS_DTYPES) + ['BF16']}")
    start, end = info["data_offsets"]
    shape = tuple(info["shape"])
    if not 0 <= start <= end <= len(data) or end - start != int(np.prod(shape)) * np_dtype.itemsize:
      raise ValueError(f"{path!r}: tensor {name!r} ({dtype} {list(shape)}) has offsets {[start, end]} that do not "
                       f"fit its size or the file's {len(data)} data bytes: the file is truncated or corrupted")
    out[name] = np.frombuffer(data[start:end], np_dtype).reshape(shape)
  return out


def read_params(path: str | os.PathLike) -> dict[str, np.ndarray]:
  """Named arrays from an orbax directory, a flax ``.msgpack``, a ``.npz`` or a ``.safetensors`` file.

  Names are the leaves' paths joined by ``/`` (``layers/0/kernel``).
  """
  path = os.fspath(path)
  if os.path.isdir(path):
    from . import checkpoint

    return _flat(checkpoint.restore(path))
  if not os.path.isfile(path):
    raise FileNotFoundError(f"--params {path!r}: no such file or directory")
  ext = os.path.splitext(path)[1].lower()
  if ext == ".npz":
    with np.load(path, allow_pickle=False) as f:
      return {k: f[k] for k in f.files}
  if ext == ".safetensors":
    return _read_safetensors(path)
  if ext == ".msgpack":
    from flax import serialization

    with open(path, "rb") as f:
      try:
        return _flat(serialization.msgpack_restore(f.read()))
      except Exception as e:  # msgpack raises its own types
        raise ValueError(f"{path!r} is not a flax msgpack file ({type(e).__name__}: {e})") from None
  raise ValueError(f"--params {path!r}: expected an orbax checkpoint directory or a .msgpack, .npz or .safetensors "
                   f"file; got a {ext or 'extension-less'} file")


def _key(name: str) -> str:
  return name.replace(".", "/")


def load_params(template: PyTree, named: dict[str, np.ndarray], where: str) -> PyTree:
  """``template`` with every leaf replaced by the array of the same name (cast to the leaf's dtype).

  A leading ``params/`` (a linen variables file) is dropped. Missing, extra
  and mismatched leaves are one ``ValueError`` naming them.
  """
  named = {_key(k): v for k, v in named.items()}
  wanted = {_key(n): leaf for n, leaf in zip(tree.leaf_names(template), jax.tree.leaves(template))}
  if not set(wanted) & set(named) and all(k.startswith("params/") for k in named):
    named = {k[len("params/"):]: v for k, v in named.items()}
  missing = sorted(set(wanted) - set(named))
  extra = sorted(set(named) - set(wanted))
  shapes = [f"{k}: file {tuple(np.shape(named[k]))}, model {tuple(np.shape(wanted[k]))}" for k in sorted(wanted)
            if k in named and tuple(np.shape(named[k])) != tuple(np.shape(wanted[k]))]
  if missing or extra or shapes:
    parts = [f"missing {len(missing)} ({', '.join(missing[:5])}{', ...' if len(missing) > 5 else ''})" if missing
             else "", f"extra {len(extra)} ({', '.join(extra[:5])}{', ...' if len(extra) > 5 else ''})" if extra
             else "", f"other shapes: {'; '.join(shapes[:5])}" if shapes else ""]
    raise ValueError(f"{where} does not fit the model's {len(wanted)} parameter leaves: "
                     + "; ".join(p for p in parts if p) + f". The model's leaves: {sorted(wanted)[:8]}")
  leaves = [jnp.asarray(named[_key(n)], jnp.result_type(leaf))
            for n, leaf in zip(tree.leaf_names(template), jax.tree.leaves(template))]
  return jax.tree.unflatten(jax.tree.structure(template), leaves)


@dataclasses.dataclass(frozen=True)
class UserModel:
  """A user's model in the pure form: ``apply(params, state, x)`` (or ``apply(params, x)`` when ``state`` is None)."""

  apply: Callable
  params: PyTree
  state: PyTree | None
  layout: Any
  record: dict

  def objective(self, data: Any, *, loss: str = "cross_entropy", batch_size: int | None = 512,
                name: str = "data") -> tuple[Any, PyTree]:
    """``(objective, params)`` over ``data``."""
    from .objective import Objective

    if self.state is None:
      obj = Objective.from_apply(self.apply, self.params, data=data, loss=loss, batch_size=batch_size, name=name)
    else:
      obj = Objective.from_stateful(self.apply, self.state, self.params, data=data, loss=loss, batch_size=batch_size,
                                    name=name, layout=self.layout)
    return obj, self.params


def user_model(factory: str, *, kwargs: dict | None = None, params_path: str | None = None,
               example: Any = None, seed: int = 0) -> UserModel:
  """Builds ``FACTORY(**kwargs)`` and loads ``params_path`` into it (see the module docstring).

  ``example`` (a batch of inputs) initialises a bare linen module.
  """
  from . import adapters

  made = import_object(factory)(**(kwargs or {}))
  record = {"model": factory, "model_kwargs": kwargs or {}}
  if isinstance(made, tuple) and len(made) == 2 and callable(made[0]) and not _is_module(made[0]):
    apply, params, state, layout = made[0], made[1], None, None
  else:
    module, variables = made if isinstance(made, tuple) else (made, None)
    if adapters.library(module) == "linen" and variables is None:
      if example is None:
        raise ValueError("a bare flax.linen module needs an example input to be initialised; give --data")
      variables = module.init(jax.random.key(seed), jnp.asarray(example)[:1])
    apply, params, state, layout = adapters.split(module, variables)
  if params_path is not None:
    params = load_params(params, read_params(params_path), f"--params {params_path!r}")
    record["params"] = os.path.abspath(params_path)
  return UserModel(apply, params, state, layout, record)


def _is_module(x: Any) -> bool:
  try:
    from . import adapters

    adapters.library(x)
    return True
  except ValueError:
    return False


def load_data(spec: str, data_dir: str | None = None) -> Any:
  """A :class:`~jaxscape.data.Dataset` from a built-in name, ``PKG.MODULE:FN`` / ``file.py:FN``, or an ``.npz`` file."""
  from . import data

  if spec in data.LOADERS:
    return data.load(spec, data_dir=data_dir)
  if spec.endswith(".npz"):
    if not os.path.isfile(spec):
      raise FileNotFoundError(f"--data {spec!r}: no such file")
    with np.load(spec, allow_pickle=False) as f:
      arrays = {k: f[k] for k in f.files}
    if not {"x", "y"} <= set(arrays):
      raise ValueError(f"--data {spec!r} must hold arrays 'x' and 'y' (and optionally 'x_test', 'y_test'); it holds "
                       f"{sorted(arrays)}")
    made: Any = (arrays["x"], arrays["y"], arrays.get("x_test", arrays["x"]), arrays.get("y_test", arrays["y"]))
    name = os.path.basename(spec)
  elif ":" in spec:
    made, name = import_object(spec, "--data")(), spec
  else:
    raise ValueError(f"--data {spec!r}: expected a built-in dataset ({', '.join(sorted(data.LOADERS))}), "
                     "PKG.MODULE:FN, path/to/file.py:FN or a .npz file with x and y")
  if isinstance(made, data.Dataset):
    return made
  if isinstance(made, tuple) and len(made) in (2, 4):
    x, y, xt, yt = made if len(made) == 4 else (*made, *made)
    y = np.asarray(y)
    classes = int(y.max()) + 1 if np.issubdtype(y.dtype, np.integer) and y.ndim == 1 and y.size else 0
    return data.Dataset(np.asarray(x), y, np.asarray(xt), np.asarray(yt), name, classes, {"source": spec})
  raise ValueError(f"--data {spec!r} returned a {type(made).__name__}; expected a jaxscape Dataset, (x, y) or "
                   "(x_train, y_train, x_test, y_test)")
