"""Multi-process runs: gated start-up and the two host-level exchanges a surface needs.

A run over several hosts (a TPU pod, a GPU cluster, or several local
processes) starts the same program on every host. Each calls
:func:`initialize` first; nothing in jaxscape calls it on its own, so a
single-host run never touches the distributed runtime. Surfaces then use a
collective-free pattern: every process evaluates its own share of the grid
points on its local devices, and the results meet on the host through
:func:`allgather`; :func:`broadcast` shares what process 0 read from disk
(resume). Both exchanges are bit-exact for any dtype (arrays travel as
32-bit words), so a float64 loss survives a run without ``jax_enable_x64``.

Example (one process: both exchanges are local):
  >>> import numpy as np
  >>> from jaxscape import distributed
  >>> distributed.is_primary()
  True
  >>> distributed.allgather({"loss": np.array([0.5, 1.5])})["loss"].shape   # [process_count, ...]
  (1, 2)
"""

from __future__ import annotations

from typing import Mapping

import jax
import numpy as np

__all__ = ["initialize", "is_primary", "broadcast", "allgather"]


def initialize(coordinator: str | None = None, num_processes: int | None = None, process_id: int | None = None) -> None:
  """Starts JAX's distributed runtime (call it before any other JAX work).

  With no arguments the cluster is auto-detected (TPU pods, SLURM, Open MPI);
  otherwise give all three of ``coordinator`` (``"host:port"`` of process 0),
  ``num_processes`` and ``process_id`` (0-based).

  Raises:
    ValueError: when only some of the explicit arguments are given, or they
      are out of range.
  """
  given = [coordinator is not None, num_processes is not None, process_id is not None]
  if any(given) and not all(given):
    raise ValueError("explicit distributed start-up needs all of coordinator ('host:port'), num_processes and "
                     f"process_id; got coordinator={coordinator!r}, num_processes={num_processes!r}, "
                     f"process_id={process_id!r}")
  if not any(given):
    jax.distributed.initialize()
    return
  if ":" not in coordinator:
    raise ValueError(f"coordinator must be 'host:port'; got {coordinator!r}")
  if num_processes < 1 or not 0 <= process_id < num_processes:
    raise ValueError(f"need num_processes >= 1 and 0 <= process_id < num_processes; got {num_processes}, {process_id}")
  jax.distributed.initialize(coordinator, num_processes=num_processes, process_id=process_id)


def is_primary() -> bool:
  """Whether this is process 0 (the one that writes results and prints)."""
  return jax.process_index() == 0


def _to_words(a: np.ndarray) -> np.ndarray:
  a = np.ascontiguousarray(a)
  if a.dtype.itemsize % 4:
    return a.astype(np.uint32).ravel()  # bool and small integers fit in a word
  return a.ravel().view(np.uint32)


def _from_words(w: np.ndarray, like: np.ndarray) -> np.ndarray:
  w = np.ascontiguousarray(w, np.uint32)
  if like.dtype.itemsize % 4:
    return w.astype(like.dtype).reshape(like.shape)
  return w.view(like.dtype).reshape(like.shape)


def broadcast(arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
  """Process 0's arrays on every process (every process passes arrays of the same shapes and dtypes)."""
  arrays = {k: np.asarray(v) for k, v in arrays.items()}
  if jax.process_count() == 1:
    return arrays
  from jax.experimental import multihost_utils

  words = multihost_utils.broadcast_one_to_all({k: _to_words(v) for k, v in arrays.items()})
  return {k: _from_words(np.asarray(words[k]), v) for k, v in arrays.items()}


def allgather(arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
  """Every process's arrays, stacked on a new leading ``[process_count]`` axis (same shapes on every process)."""
  arrays = {k: np.asarray(v) for k, v in arrays.items()}
  if jax.process_count() == 1:
    return {k: v[None] for k, v in arrays.items()}
  from jax.experimental import multihost_utils

  words = multihost_utils.process_allgather({k: _to_words(v) for k, v in arrays.items()})
  out = {}
  for k, v in arrays.items():
    w = np.asarray(words[k])
    out[k] = np.stack([_from_words(w[p], v) for p in range(w.shape[0])])
  return out
