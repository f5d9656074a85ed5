"""The objective: a pure loss of a parameter pytree over a whole dataset.

Everything jaxscape measures (surfaces, curvature, sharpness, paths) is a
function of one ``Objective``. It holds the data on device, split into
equal-size batches (the last one padded and masked), and the model's
non-trainable state; only the trainable parameters are an argument.

* ``obj.loss(params, batch) -> (loss, metrics)`` is the weighted mean over one
  batch ``(x, y)`` or ``(x, y, w)``.
* ``obj.loss(params) -> (loss, metrics)`` is the full-data value: a
  ``lax.scan`` over the device-resident batches, summing per-example values
  and dividing by the exact number of examples N, so a ragged last batch
  counts each of its examples once (the 1/N weighting of PyHessian, not the
  per-batch mean of tools that divide by the number of batches).
* ``obj.value(params)`` is the full-data loss alone, for ``jax.grad`` and HVPs.

``Objective`` is a pytree (data and state are leaves; functions and sizes are
static), so it can be passed straight into ``jit``/``vmap``.

Example:
  >>> import jax, jax.numpy as jnp
  >>> import jaxscape as js
  >>> x = jnp.arange(10.0).reshape(5, 2); y = jnp.array([0, 1, 0, 1, 1])
  >>> apply = lambda p, x: x @ p["w"]
  >>> params = {"w": jnp.zeros((2, 2))}
  >>> obj = js.Objective.from_apply(apply, params, data=(x, y), batch_size=2)
  >>> loss, metrics = obj.loss(params)
  >>> round(float(loss), 4)   # log(2) for uniform logits
  0.6931
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
import optax

PyTree = Any
Apply = Callable[[PyTree, PyTree, jax.Array], jax.Array]
PerExample = Callable[[jax.Array, jax.Array], jax.Array]

BN_POLICIES = ("frozen",)
"""BatchNorm policies. ``frozen``: eval mode, running statistics fixed at
their trained values while the weights move (Li et al. 2018's ``weights``)."""

__all__ = ["Objective", "split_nnx", "per_example_loss", "LOSSES", "BN_POLICIES"]


def _cross_entropy(outputs: jax.Array, targets: jax.Array) -> jax.Array:
  if jnp.issubdtype(targets.dtype, jnp.integer):
    return optax.softmax_cross_entropy_with_integer_labels(outputs, targets)
  return optax.softmax_cross_entropy(outputs, targets)


def _binary_cross_entropy(outputs: jax.Array, targets: jax.Array) -> jax.Array:
  outputs = outputs.reshape(targets.shape)
  return optax.sigmoid_binary_cross_entropy(outputs, targets.astype(outputs.dtype))


def _mse(outputs: jax.Array, targets: jax.Array) -> jax.Array:
  if jnp.issubdtype(targets.dtype, jnp.integer) and outputs.ndim == targets.ndim + 1:
    targets = jax.nn.one_hot(targets, outputs.shape[-1], dtype=outputs.dtype)
  outputs = outputs.reshape(targets.shape)
  err = (outputs - targets.astype(outputs.dtype)) ** 2
  return err.reshape(err.shape[0], -1).mean(axis=1) if err.ndim > 1 else err


def _argmax_accuracy(outputs: jax.Array, targets: jax.Array) -> jax.Array:
  labels = targets if jnp.issubdtype(targets.dtype, jnp.integer) else jnp.argmax(targets, -1)
  return (jnp.argmax(outputs, -1) == labels).astype(outputs.dtype)


def _binary_accuracy(outputs: jax.Array, targets: jax.Array) -> jax.Array:
  return ((outputs.reshape(targets.shape) > 0) == (targets > 0.5)).astype(outputs.dtype)


LOSSES: dict[str, tuple[PerExample, dict[str, PerExample]]] = {
    "cross_entropy": (_cross_entropy, {"accuracy": _argmax_accuracy}),
    "binary_cross_entropy": (_binary_cross_entropy, {"accuracy": _binary_accuracy}),
    "mse": (_mse, {}),
}
"""Named per-example losses and the metrics that go with them.

``cross_entropy``: softmax cross-entropy on logits, integer labels or
probability targets; accuracy by argmax. ``binary_cross_entropy``: sigmoid
cross-entropy on one logit per example. ``mse``: squared error averaged over
output dimensions (integer labels are one-hot encoded, as in Li et al.'s MSE
runs); accuracy by argmax when the targets are class labels."""


def per_example_loss(name: str) -> PerExample:
  """Looks up a named per-example loss, with a clear error for unknown names."""
  if name not in LOSSES:
    raise ValueError(f"unknown loss {name!r}: expected one of {sorted(LOSSES)} or a callable (outputs, targets) -> per-example losses")
  return LOSSES[name][0]


@dataclasses.dataclass(frozen=True)
class Objective:
  """Full-data loss of a model as a pure function of its trainable parameters.

  Build one with :meth:`from_apply` (any pure ``apply(params, x)``) or
  :meth:`from_nnx` (a ``flax.nnx`` module); the constructor itself takes the
  already-batched arrays.

  Attributes:
    apply: ``apply(params, state, x) -> outputs`` (static).
    per_example: ``per_example(outputs, targets) -> [B]`` losses (static).
    metric_fns: named per-example metrics, as a tuple of (name, fn) (static).
    x, y: inputs and targets, shaped ``[num_batches, batch_size, ...]``.
    w: example weights ``[num_batches, batch_size]``: 1 for real examples,
      0 for the padding of the last batch.
    state: non-trainable model state (BatchNorm statistics), closed over.
    num_examples: N, the number of real examples (static).
    info: static description recorded with every result
      (dataset name, loss name, BatchNorm policy).
  """

  apply: Apply
  per_example: PerExample
  metric_fns: tuple[tuple[str, PerExample], ...]
  x: jax.Array
  y: jax.Array
  w: jax.Array
  state: PyTree
  num_examples: int
  info: tuple[tuple[str, Any], ...] = ()

  # ---------------------------------------------------------------- building
  @classmethod
  def from_apply(
      cls,
      apply_fn: Callable[[PyTree, jax.Array], jax.Array],
      params: PyTree | None = None,
      *,
      data: tuple[jax.typing.ArrayLike, jax.typing.ArrayLike],
      loss: str | PerExample = "cross_entropy",
      batch_size: int | None = 512,
      name: str = "data",
      metrics: Mapping[str, PerExample] | None = None,
  ) -> "Objective":
    """Objective of a plain ``apply_fn(params, x) -> outputs``.

    Args:
      apply_fn: pure function of a parameter pytree and a batch of inputs.
      params: optional example parameters; when given, the model is traced
        once on one batch (no FLOPs) to check that its outputs fit the loss.
      data: ``(x, y)`` arrays with the examples on the leading axis.
      loss: a name in :data:`LOSSES` or ``fn(outputs, targets) -> [B]``.
      batch_size: at most this many examples per scanned batch (``None``: the
        whole set at once); batches are balanced to minimise padding.
      name: dataset name recorded in results.
      metrics: extra named per-example metrics (replace the loss's defaults).
    """
    return cls._build(lambda p, s, x: apply_fn(p, x), (), params, data, loss, batch_size, name, metrics, ())

  @classmethod
  def from_nnx(
      cls,
      model: Any,
      *,
      data: tuple[jax.typing.ArrayLike, jax.typing.ArrayLike],
      loss: str | PerExample = "cross_entropy",
      batch_size: int | None = 512,
      name: str = "data",
      metrics: Mapping[str, PerExample] | None = None,
      bn_policy: str = "frozen",
  ) -> tuple["Objective", PyTree]:
    """Objective of a ``flax.nnx`` module, and its trainable parameters.

    The module is evaluated in eval mode (``use_running_average=True``,
    ``deterministic=True``); ``nnx.Param`` variables become the parameter
    pytree (a plain nested dict), everything else (BatchNorm statistics, RNG
    counters) is closed over as state. The module itself is not modified.

    Returns:
      ``(objective, params)``.
    """
    apply, params, state = split_nnx(model)
    if bn_policy not in BN_POLICIES:
      raise ValueError(f"unknown bn_policy {bn_policy!r}: expected one of {BN_POLICIES}")
    extra = (("bn_policy", bn_policy),)
    return cls._build(apply, state, params, data, loss, batch_size, name, metrics, extra), params

  @classmethod
  def _build(cls, apply, state, params, data, loss, batch_size, name, metrics, extra) -> "Objective":
    if not (isinstance(data, (tuple, list)) and len(data) == 2):
      raise ValueError(f"data must be a pair (x, y) of arrays; got {type(data).__name__}")
    x, y = jnp.asarray(data[0]), jnp.asarray(data[1])
    n = x.shape[0] if x.ndim else 0
    if n == 0 or y.ndim == 0 or y.shape[0] != n:
      raise ValueError(f"data must be (x, y) with the same positive number of examples on axis 0; got x {x.shape}, y {y.shape}")
    if callable(loss):
      per_example, default_metrics, loss_name = loss, {}, getattr(loss, "__name__", "custom")
    else:
      per_example, default_metrics, loss_name = per_example_loss(loss), LOSSES[loss][1], loss
    metric_fns = tuple(sorted((metrics if metrics is not None else default_metrics).items()))
    if batch_size is None:
      batch_size = n
    if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
      raise ValueError(f"batch_size must be a positive integer or None; got {batch_size!r}")
    batch_size = _balanced(n, int(batch_size))
    xb, yb, wb = _batch(x, y, batch_size)
    info = (("dataset", name), ("num_examples", n), ("batch_size", batch_size), ("loss", loss_name)) + extra
    obj = cls(apply, per_example, metric_fns, xb, yb, wb, state, n, info)
    if params is not None:
      obj._check(params)
    return obj

  def _check(self, params: PyTree) -> None:
    try:
      jax.eval_shape(lambda p: self.loss(p, (self.x[0], self.y[0], self.w[0])), params)
    except Exception as e:  # re-raised with the shapes a user needs to see
      raise ValueError(
          f"the model's outputs do not fit the loss on a batch of inputs {tuple(self.x.shape[1:])} "
          f"and targets {tuple(self.y.shape[1:])} {self.y.dtype}: {type(e).__name__}: {e}"
      ) from e

  def with_data(self, data: tuple[jax.typing.ArrayLike, jax.typing.ArrayLike], name: str | None = None,
                batch_size: int | None = None) -> "Objective":
    """The same model and loss over other data (e.g. the test split)."""
    x, y = jnp.asarray(data[0]), jnp.asarray(data[1])
    if x.shape[1:] != self.x.shape[2:]:
      raise ValueError(f"new inputs have per-example shape {x.shape[1:]}; the objective expects {self.x.shape[2:]}")
    bs = _balanced(int(x.shape[0]), int(batch_size or self.batch_size))
    xb, yb, wb = _batch(x, y, bs)
    info = dict(self.info)
    info.update(dataset=name or info.get("dataset", "data") , num_examples=int(x.shape[0]), batch_size=bs)
    return dataclasses.replace(self, x=xb, y=yb, w=wb, num_examples=int(x.shape[0]), info=tuple(info.items()))

  # --------------------------------------------------------------- evaluating
  @property
  def batch_size(self) -> int:
    return int(self.x.shape[1])

  @property
  def num_batches(self) -> int:
    return int(self.x.shape[0])

  @property
  def metric_names(self) -> tuple[str, ...]:
    return tuple(name for name, _ in self.metric_fns)

  def describe(self) -> dict[str, Any]:
    """The static description recorded in results (dataset, loss, sizes)."""
    return dict(self.info)

  def batch_sums(self, params: PyTree, batch: tuple[jax.Array, ...], state: PyTree | None = None) -> dict[str, jax.Array]:
    """Weighted sums over one batch: ``{"loss": sum_i w_i l_i, metric: ...}``.

    This is the building block of every full-data reduction: summing it over
    all batches and dividing by ``num_examples`` gives the exact mean.
    """
    x, y, w = batch if len(batch) == 3 else (*batch, None)
    out = self.apply(params, self.state if state is None else state, x)
    losses = self.per_example(out, y)
    if w is None:
      w = jnp.ones(losses.shape[:1], losses.dtype)
    w = w.astype(losses.dtype)
    sums = {"loss": jnp.sum(w * losses)}
    for name, fn in self.metric_fns:
      sums[name] = jnp.sum(w * fn(out, y).astype(losses.dtype))
    return sums

  def loss(self, params: PyTree, batch: tuple[jax.Array, ...] | None = None) -> tuple[jax.Array, dict[str, jax.Array]]:
    """``(loss, metrics)``: the mean over one batch, or over all data when ``batch`` is None."""
    if batch is None:
      sums, count = self.full_sums(params), self.num_examples
    else:
      sums = self.batch_sums(params, batch)
      count = jnp.sum(batch[2]) if len(batch) == 3 else batch[0].shape[0]
    means = {k: v / count for k, v in sums.items()}
    return means.pop("loss"), means

  def full_sums(self, params: PyTree) -> dict[str, jax.Array]:
    """Sums of per-example loss and metrics over the whole dataset (one scan)."""
    def body(carry, batch):
      return jax.tree.map(jnp.add, carry, self.batch_sums(params, batch)), None

    # The first batch initialises the carry, so the carry has the same
    # sharding/varying-ness as the sums (needed inside shard_map).
    batches = (self.x, self.y, self.w)
    first = self.batch_sums(params, jax.tree.map(lambda b: b[0], batches))
    sums, _ = jax.lax.scan(body, first, jax.tree.map(lambda b: b[1:], batches))
    return sums

  def value(self, params: PyTree) -> jax.Array:
    """Full-data mean loss alone (differentiable: use it for gradients and HVPs)."""
    return self.loss(params)[0]


jax.tree_util.register_dataclass(
    Objective,
    data_fields=["x", "y", "w", "state"],
    meta_fields=["apply", "per_example", "metric_fns", "num_examples", "info"],
)


def _balanced(n: int, batch_size: int) -> int:
  """The smallest batch size that covers ``n`` examples in as many batches as ``batch_size`` would.

  Balancing keeps the padding of the last batch below the number of batches
  (1797 digits with batch_size 512: 4 batches of 450, not 4 of 512 with 251
  padded), so no compute is spent on masked examples.
  """
  num_batches = -(-n // min(batch_size, n))
  return -(-n // num_batches)


def _batch(x: jax.Array, y: jax.Array, batch_size: int) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Pads to a whole number of batches and reshapes to ``[nb, B, ...]``."""
  n = x.shape[0]
  nb = -(-n // batch_size)
  pad = nb * batch_size - n
  w = jnp.concatenate([jnp.ones(n, jnp.float32), jnp.zeros(pad, jnp.float32)])
  if pad:
    # Pad by repeating the first examples so the padded inputs stay in-distribution
    # (no NaNs from, e.g., a log of zeros); their weight is 0.
    idx = jnp.concatenate([jnp.arange(n), jnp.arange(pad) % n])
    x, y = x[idx], y[idx]
  return (x.reshape(nb, batch_size, *x.shape[1:]), y.reshape(nb, batch_size, *y.shape[1:]), w.reshape(nb, batch_size))


def split_nnx(model: Any) -> tuple[Apply, PyTree, PyTree]:
  """Splits a ``flax.nnx`` module into a pure ``(apply, params, state)``.

  The module is viewed in eval mode (``use_running_average=True`` for
  BatchNorm, ``deterministic=True`` for Dropout) without modifying it.
  ``params`` is a plain nested dict of the ``nnx.Param`` arrays (Flax layout:
  Dense kernels ``(in, out)``, Conv kernels HWIO); ``state`` holds everything
  else; ``apply(params, state, x)`` runs the module.

  Example:
    >>> from flax import nnx
    >>> import jax.numpy as jnp
    >>> apply, params, state = split_nnx(nnx.Linear(3, 2, rngs=nnx.Rngs(0)))
    >>> apply(params, state, jnp.ones((4, 3))).shape
    (4, 2)
  """
  from flax import nnx

  view = nnx.view(model, deterministic=True, use_running_average=True, raise_if_not_found=False)
  graphdef, param_state, state = nnx.split(view, nnx.Param, ...)
  treedef = jax.tree.structure(param_state)
  params = nnx.to_pure_dict(param_state)
  if len(jax.tree.leaves(params)) != treedef.num_leaves:
    raise ValueError("could not convert the module's parameters to a plain dict")
  return _nnx_apply(graphdef, treedef), params, state


@functools.lru_cache(maxsize=256)
def _nnx_apply(graphdef: Any, treedef: Any) -> Apply:
  """One ``apply`` per model structure, so that objectives of models that differ
  only in their weights (seeds, checkpoints) share jit compilations."""
  from flax import nnx

  def apply(p: PyTree, s: PyTree, x: jax.Array) -> jax.Array:
    return nnx.merge(graphdef, jax.tree.unflatten(treedef, jax.tree.leaves(p)), s)(x)

  return apply
