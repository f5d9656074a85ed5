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
* ``obj.grid_batch_sums(params, vectors, coords, batch)`` is the batch sums at
  many points ``params + Σ_j c_j d_j`` at once (the inner loop of a surface).
  When the objective knows the model's first layer (:class:`FirstLayer`; set
  automatically for jaxscape's MLPs and ResNets), the first layer's output is
  computed once at ``params`` and once per direction and combined per point
  (``X(W + Σ c_j U_j) + b + Σ c_j b_j = (XW + b) + Σ c_j (XU_j + b_j)``),
  instead of one first-layer matmul per point.

Two options change how the model is evaluated, never what is computed, and
are recorded by :meth:`Objective.describe` (hence in every result's config):
``first_layer`` (above) and ``compute_dtype`` (mixed precision: the forward
pass in e.g. ``bfloat16``, the per-example losses and their sums in the
parameters' dtype).

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
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
import optax

from . import directions, tree
from .directions import move_state

from .first_layer import FirstLayer
from .tree import PyTree
Apply = Callable[[PyTree, PyTree, jax.Array], jax.Array]
PerExample = Callable[[jax.Array, jax.Array], jax.Array]

BN_POLICIES = ("frozen", "interpolate", "recompute")
"""BatchNorm policies (Li et al. 2018's three choices), the one place they are defined.

* ``frozen``: eval mode, running statistics fixed at their trained values
  while the weights move (Li et al.'s ``weights``). The default.
* ``interpolate``: the statistics move with the parameters along the
  directions (Li et al.'s ``states``): set by the directions, not the
  objective (:func:`jaxscape.interpolation_direction` /
  :func:`jaxscape.plane_directions` given the models' states), recorded in
  the directions' ``bn_policy``.
* ``recompute``: at every evaluated parameter point, the running statistics
  are re-estimated from a fixed set of training batches in train mode, then
  the model runs in eval mode (:meth:`Objective.from_model` with
  ``bn_policy="recompute"``; recorded with ``recompute_batches``).
"""

BATCHINGS = ("scan", "unroll")
"""How the differentiated full-data value goes over the batches (:attr:`Objective.batching`).

* ``scan``: one ``lax.scan`` over the batches (a program of one batch's size
  whatever the number of batches). The default.
* ``unroll``: a Python loop over the batches in :meth:`Objective.value` and
  the Gauss-Newton product (one copy of the batch computation per batch), and,
  on a single CPU device, every curvature product of
  :func:`jaxscape.hessian.operator` compiled as its own program, which the
  loops of Lanczos, Hutchinson, ... call (a host callback). Chosen automatically (``batching="auto"``) for models with
  convolutions on the CPU with at most :data:`UNROLL_MAX_BATCHES` batches:
  XLA's CPU compiler lowers the gradient of a convolution to a fast library
  call only outside loops; inside a ``lax.scan`` or ``while_loop`` body it
  stays a naive loop nest (benchmarks/hessian.py ``--conv-only``).
"""

UNROLL_MAX_BATCHES = 8
"""``batching="auto"`` unrolls at most this many batches (compile time grows with each copy)."""

__all__ = ["Objective", "FirstLayer", "DataError", "BATCHINGS", "UNROLL_MAX_BATCHES", "per_example_loss", "LOSSES",
           "BN_POLICIES", "with_l2", "l2_penalty", "split_l2"]


class DataError(ValueError):
  """The data of an objective cannot give a meaningful loss (raised at construction, naming the array and rows).

  An empty dataset, inputs and targets of different lengths, NaN or inf in
  either, float labels for ``cross_entropy``, class labels outside
  ``[0, num_classes)`` (``num_classes``: the model's output width), or
  ``binary_cross_entropy`` targets outside ``[0, 1]``. Each would otherwise
  surface later as a NaN loss (blamed on the parameters) or a silently wrong
  one.
  """


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
  predicted = jnp.argmax(outputs, -1)
  labels = targets if jnp.issubdtype(targets.dtype, jnp.integer) else jnp.argmax(targets, -1)
  # int32 labels meet int64 argmax under x64: compare in argmax's dtype (labels are small class indices)
  return (predicted == labels.astype(predicted.dtype)).astype(outputs.dtype)


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



def _standard_result_type(*args: Any) -> Any:
  """The dtype JAX's standard promotion gives ``args``, asked for explicitly (tests run with strict promotion)."""
  with jax.numpy_dtype_promotion("standard"):
    return jnp.result_type(*args)



_CHECK_ROWS = 1 << 14  # rows per block of the host-side checks: bounded temporary memory on large datasets


def _row_mask(a: np.ndarray, bad: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
  """``[N]`` mask of the examples (rows) of ``a`` with any element where ``bad`` holds, computed in blocks."""
  flat = a.reshape(a.shape[0], -1)
  return np.concatenate([bad(flat[i:i + _CHECK_ROWS]).any(axis=1) for i in range(0, len(flat), _CHECK_ROWS)])


def _rows(mask: np.ndarray) -> str:
  """"3 of 40 examples (rows [0, 7, 12])": which examples a check found, the first few by index."""
  idx = np.flatnonzero(mask)
  shown = ", ".join(str(int(i)) for i in idx[:8]) + (", ..." if len(idx) > 8 else "")
  return f"{len(idx)} of {len(mask)} examples (rows [{shown}])"


def _check_data(x: Any, y: np.ndarray | None, per_example: PerExample, w: np.ndarray | None = None,
                keys: tuple[Any, ...] = (None, None, None)) -> None:
  """Host-side checks of ``(x, y, w)`` that need no model: sizes, finite values, weights, targets the named loss
  can read. ``x`` is an array or a dict batch of arrays sharing the example axis; ``y`` is ``None`` when the loss
  reads its targets from the batch; ``keys``: the dict batch's ``(inputs, targets, weights)`` keys, for messages."""
  pair = keys[0] is None and isinstance(x, np.ndarray)
  named = dict(_leaf_items(x, "inputs x" if keys[0] is None else f"batch[{keys[0]!r}]"))
  if y is not None:
    named["targets y" if keys[1] is None else f"batch[{keys[1]!r}]"] = y
  lengths = {a.shape[0] if a.ndim else 0 for a in named.values()}
  n = lengths.pop() if len(lengths) == 1 else 0
  if n == 0:
    what = "the dataset is empty" if not lengths else f"{'x and y' if pair else 'the arrays'} differ in length"
    shapes = ", ".join(f"{k.split()[-1] if pair else k} {a.shape}" for k, a in named.items())
    raise DataError(f"data must be (x, y) or a dict batch with the same positive number of examples on axis 0 of "
                    f"every array; {what}: got {shapes}")
  for name, a in named.items():
    if np.issubdtype(a.dtype, np.inexact):
      bad = _row_mask(a, lambda b: ~np.isfinite(b))
      if bad.any():
        raise DataError(f"{name} hold NaN or inf in {_rows(bad)}: expected finite values (drop or impute those "
                        f"examples)")
  if w is not None:
    _check_weights(w, n)
  if y is None:
    return
  if per_example is _cross_entropy and y.ndim == 1 and not np.issubdtype(y.dtype, np.integer):
    raise DataError(f"cross_entropy labels must be integers (class indices); got {y.dtype} labels of shape {y.shape}, "
                    f"e.g. {y[0].item()!r}: cast them (y.astype(np.int32)) or give probability targets [N, num_classes]")
  if per_example is _binary_cross_entropy:
    bad = _row_mask(y.astype(np.float64) if y.dtype == bool else y, lambda b: (b < 0) | (b > 1))
    if bad.any():
      raise DataError(f"binary_cross_entropy targets must lie in [0, 1] (0/1 labels or probabilities); targets y "
                      f"hold values outside in {_rows(bad)}, e.g. {y[np.flatnonzero(bad)[0]].item()!r} (-1/+1 labels: use "
                      f"(y + 1) / 2)")


def _leaf_items(x: Any, what: str) -> list[tuple[str, np.ndarray]]:
  """``[(name, host array)]`` of an input array or of the arrays of a dict batch (named by their keys)."""
  if isinstance(x, np.ndarray):
    return [(what, x)]
  return [(f"batch[{name!r}]", np.asarray(a)) for name, a in zip(tree.leaf_names(x), jax.tree.leaves(x))]


def _check_weights(w: np.ndarray, n: int) -> None:
  """Example or token weights: ``[N, ...]``, finite, non-negative, not all zero."""
  if w.ndim == 0 or w.shape[0] != n:
    raise DataError(f"weights must have the examples on axis 0 ([N] per example or [N, T, ...] per token, N = {n}); "
                    f"got shape {w.shape}")
  if not (np.issubdtype(w.dtype, np.number) or w.dtype == bool):
    raise DataError(f"weights must be numbers or booleans (a mask); got dtype {w.dtype}")
  wf = w.astype(np.float64)
  bad = _row_mask(wf, lambda b: ~np.isfinite(b) | (b < 0))
  if bad.any():
    raise DataError(f"weights must be finite and >= 0 (1 for a real token, 0 for padding); they are not in "
                    f"{_rows(bad)}")
  if not wf.sum() > 0:
    raise DataError(f"the weights sum to 0 over all {n} examples: nothing to average")


def _check_labels(y: np.ndarray, num_classes: int | None, loss_name: str) -> None:
  """Integer class labels in ``[0, num_classes)`` (``None``: only ``>= 0``, the output width being unknown)."""
  def outside(b: np.ndarray) -> np.ndarray:
    return (b < 0) if num_classes is None else (b < 0) | (b >= num_classes)

  bad = _row_mask(y, outside)
  if bad.any():
    expected = "non-negative class indices" if num_classes is None else (
        f"class indices in [0, {num_classes}) ({num_classes}: the model's output width)")
    found = np.unique(y[bad][outside(y[bad])]).tolist()
    # Hugging Face marks tokens to ignore (padding, prompt) with label -100: say how to mask them here
    hint = (" (-100: Hugging Face's ignored tokens; give them weight 0 and any valid label: "
            "batch['mask'] = labels != -100, batch['labels'] = np.where(labels == -100, 0, labels), weights='mask')"
            if -100 in found else "")
    raise DataError(f"{loss_name} labels must be {expected}; targets y hold labels outside in {_rows(bad)}: "
                    f"found {found[:8]}{hint}")


def _classes_read(per_example: PerExample, out_ndim: int, y: np.ndarray) -> bool:
  """Whether the named loss reads integer ``y`` as class indices into the last output axis."""
  return (per_example in (_cross_entropy, _mse) and np.issubdtype(y.dtype, np.integer) and out_ndim == y.ndim + 1)


def _check_first_layer(fl: FirstLayer, apply: Apply, params: PyTree, state: PyTree, x: jax.Array) -> None:
  """Checks the :class:`FirstLayer` contract numerically on a few examples (eagerly; tiny)."""
  x = x[:2]
  try:
    first = fl.select(params)
    z = fl.linear(first, x)
    z0 = fl.linear(jax.tree.map(jnp.zeros_like, first), x)
    via, direct = fl.rest(params, state, z), apply(params, state, x)
  except Exception as e:
    raise ValueError(f"first_layer {fl.name!r} does not run on these parameters and inputs {tuple(x.shape[1:])}: "
                     f"{type(e).__name__}: {e}") from e
  if float(jnp.max(jnp.abs(z0))) != 0.0:
    raise ValueError(f"first_layer {fl.name!r}: linear(0, x) must be 0 (linear, not affine, in the first layer's "
                     f"parameters; put the bias among them); got max |linear(0, x)| = {float(jnp.max(jnp.abs(z0)))}")
  leaves_a, leaves_b = jax.tree.leaves(via), jax.tree.leaves(direct)
  ok = len(leaves_a) == len(leaves_b) and all(
      a.shape == b.shape and bool(jnp.allclose(a, b, rtol=1e-3, atol=1e-3 * (1.0 + float(jnp.max(jnp.abs(b))))))
      for a, b in zip(leaves_a, leaves_b))
  if not ok:
    raise ValueError(f"first_layer {fl.name!r}: rest(params, state, linear(select(params), x)) must equal "
                     f"apply(params, state, x); they differ on the first examples")


def _has_convolution(jaxpr: Any) -> bool:
  """Whether a (closed) jaxpr or any jaxpr nested in its equations' parameters has a convolution."""
  jaxpr = getattr(jaxpr, "jaxpr", jaxpr)
  for eqn in jaxpr.eqns:
    if eqn.primitive.name == "conv_general_dilated":
      return True
    for value in eqn.params.values():
      for sub in value if isinstance(value, (tuple, list)) else (value,):
        if hasattr(getattr(sub, "jaxpr", sub), "eqns") and _has_convolution(sub):
          return True
  return False


def _cast_floating(t: PyTree, dtype: Any) -> PyTree:
  return jax.tree.map(lambda a: a.astype(dtype) if jnp.issubdtype(jnp.asarray(a).dtype, jnp.floating) else a, t)


def _float_dtype(t: PyTree) -> Any:
  dts = [jnp.asarray(a).dtype for a in jax.tree.leaves(t) if jnp.issubdtype(jnp.asarray(a).dtype, jnp.floating)]
  return jnp.result_type(*dts) if dts else jnp.float32


def _dtype_name(dtype: Any) -> str | None:
  if dtype is None:
    return None
  try:
    dt = jnp.dtype(dtype)
  except TypeError:
    dt = None
  if dt is None or not jnp.issubdtype(dt, jnp.floating):
    raise ValueError(f"compute_dtype must be a floating dtype (e.g. jnp.bfloat16, 'float16') or None; got {dtype!r}")
  return dt.name


@dataclasses.dataclass(frozen=True)
class Objective:
  """Full-data loss of a model as a pure function of its trainable parameters.

  Build one with :meth:`from_apply` (any pure ``apply(params, x)``),
  :meth:`from_stateful` (a pure ``apply(params, state, x)`` with closed-over
  state) or :meth:`from_model` (a ``flax.nnx``, ``flax.linen`` or ``equinox``
  model, through :mod:`jaxscape.adapters`); the constructor itself takes the
  already-batched arrays.

  Attributes:
    apply: ``apply(params, state, x) -> outputs`` (static).
    per_example: ``per_example(outputs, targets) -> [B]`` losses (static).
    metric_fns: named per-example metrics, as a tuple of (name, fn) (static).
    x, y: inputs and targets, shaped ``[num_batches, batch_size, ...]``; ``x``
      may be a dict batch of such arrays, and ``y`` is ``None`` when the loss
      reads its targets from the batch (``loss(outputs, batch)``).
    w: weights ``[num_batches, batch_size]`` per example, or
      ``[num_batches, batch_size, T, ...]`` per token: the user's weights
      (1 without), 0 for the padding of the last batch.
    state: non-trainable model state (BatchNorm statistics), closed over.
    num_examples: N, the number of real examples (static).
    total_weight: ``Σ w`` over the whole dataset, the denominator of every
      full-data mean (static; N without weights and per-example losses).
    info: static description recorded with every result
      (dataset name, loss name, BatchNorm policy: see :data:`BN_POLICIES`).
    first_layer_spec: ``(FirstLayer, apply)``: the model's first layer and the
      ``apply`` it describes (static); read it through :attr:`first_layer`,
      which ignores it once ``apply`` has been replaced (e.g. by
      :func:`with_l2`). Set with :meth:`with_first_layer`.
    compute_dtype: name of the dtype of the forward pass (static; ``None``:
      the parameters' own). Set with :meth:`with_compute_dtype`.
    layout: the per-leaf rule of the parameters for filter normalisation
      (static; :func:`jaxscape.directions.flax_layout` unless the adapter
      declares another): ``random_directions(key, params, layout=obj.layout)``.
    num_classes: the model's output width when the loss reads integer targets
      as class indices (static; found at construction when ``params`` are
      given, ``None`` otherwise): the labels were checked to lie in
      ``[0, num_classes)``, and :meth:`with_data` checks new ones.
    batching: how :meth:`value` (the differentiated path) and the curvature
      operators of :mod:`jaxscape.hessian` go over the batches (static; one
      of :data:`BATCHINGS`). Set with :meth:`with_batching`.
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
  first_layer_spec: tuple[FirstLayer, Apply] | None = None
  compute_dtype: str | None = None
  layout: Any = directions.flax_layout
  num_classes: int | None = None
  total_weight: float | None = None
  batching: str = "scan"

  def __post_init__(self):
    if self.total_weight is None:  # built without weights: every example counts once
      object.__setattr__(self, "total_weight", float(self.num_examples))

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
      first_layer: FirstLayer | None = None,
      compute_dtype: Any = None,
      inputs: str | None = None,
      targets: str | None = None,
      weights: str | None = None,
      batching: str = "auto",
  ) -> "Objective":
    """Objective of a plain ``apply_fn(params, x) -> outputs``.

    Args:
      apply_fn: pure function of a parameter pytree and a batch of inputs.
      params: optional example parameters; when given, the model is traced
        once on one batch (no FLOPs) to check that its outputs fit the loss,
        and class labels are checked against the output width.
      data: ``(x, y)`` or ``(x, y, weights)`` arrays with the examples on the
        leading axis, or a dict batch (see ``inputs``); checked once on the host (:class:`DataError` naming the array and rows: an
        empty set, different lengths, NaN or inf, float labels for
        ``cross_entropy``, labels outside ``[0, num_classes)``,
        ``binary_cross_entropy`` targets outside ``[0, 1]``).
      loss: a name in :data:`LOSSES` or ``fn(outputs, targets) -> [B]`` per
        example or ``[B, T, ...]`` per token. Per-token losses are averaged
        over tokens (exactly, over the whole dataset): weighted by per-token
        weights when given, else each example's tokens equally.
      inputs, targets, weights: keys of a dict batch ``data`` (``{"input_ids":
        ..., "labels": ..., "mask": ...}``, every array with the examples on
        axis 0). ``inputs``: the array the model is called on (``None``: the
        whole batch). ``targets``: the targets the loss reads
        (``loss(outputs, batch[targets])``; default ``"labels"`` for a named
        loss); ``None`` with a callable loss: ``loss(outputs, batch)``.
        ``weights``: per-example ``[N]`` or per-token ``[N, T]`` weights or a
        0/1 padding mask; the loss is then the exact weighted mean
        ``Σ w·ℓ / Σ w`` over all tokens of the dataset. Recorded in
        :meth:`describe`.
      batch_size: at most this many examples per scanned batch (``None``: the
        whole set at once; larger than the data: the whole set, as ``None``,
        the mean being exact either way and the batch size used recorded in
        :meth:`describe`); batches are balanced to minimise padding.
      name: dataset name recorded in results.
      metrics: extra named per-example metrics (replace the loss's defaults).
      first_layer: the model's first layer (:class:`FirstLayer`, e.g.
        ``FirstLayer.dense(path, rest)`` with ``rest(params, state, z)``), for
        the affine surface path; checked on two examples when ``params`` is
        given.
      compute_dtype: dtype of the forward pass (e.g. ``jnp.bfloat16``); the
        losses are computed from outputs cast back to the parameters' dtype
        and summed in it. ``None``: the parameters' dtype.
      batching: one of :data:`BATCHINGS` or ``"auto"`` (decided from
        ``params``; see :meth:`with_batching`).
    """
    obj = cls._build(_Stateless(apply_fn), (), params, data, loss, batch_size, name, metrics, (), None,
                     (inputs, targets, weights))
    obj = obj.with_first_layer(first_layer, params).with_compute_dtype(compute_dtype)
    return obj.with_batching(batching, params)

  @classmethod
  def from_stateful(
      cls,
      apply_fn: Apply,
      state: PyTree,
      params: PyTree | None = None,
      *,
      data: tuple[jax.typing.ArrayLike, jax.typing.ArrayLike],
      loss: str | PerExample = "cross_entropy",
      batch_size: int | None = 512,
      name: str = "data",
      metrics: Mapping[str, PerExample] | None = None,
      bn_policy: str = "frozen",
      first_layer: FirstLayer | None = None,
      compute_dtype: Any = None,
      layout: Any = None,
      recompute_stats: Callable[[PyTree, PyTree, jax.Array], PyTree] | None = None,
      recompute_batches: int = 1,
      inputs: str | None = None,
      targets: str | None = None,
      weights: str | None = None,
      batching: str = "auto",
  ) -> "Objective":
    """Objective of a pure ``apply_fn(params, state, x) -> outputs`` with closed-over state.

    ``state`` (BatchNorm statistics, RNG state: anything not trained) is a
    data leaf of the objective, ``apply_fn`` its static function: pass one
    hashable function object per architecture (a module-level function, a
    frozen dataclass, or the cached apply of :mod:`jaxscape.adapters`), not a
    fresh lambda, so that objectives of several trained seeds or checkpoints
    share every compiled surface and curvature call.

    Args:
      apply_fn: eval-mode ``apply(params, state, x) -> outputs``.
      state: the model's non-trainable state (``{}`` if none).
      params: optional example parameters, to check the outputs fit the loss.
      data, loss, batch_size, name, metrics, first_layer, compute_dtype, inputs,
        targets, weights, batching: as in :meth:`from_apply`.
      bn_policy: ``frozen`` or ``recompute`` (see :data:`BN_POLICIES`);
        recorded in :meth:`describe`.
      layout: the per-leaf rule of the parameters for filter normalisation
        (default :func:`jaxscape.directions.flax_layout`).
      recompute_stats: with ``bn_policy="recompute"``, a hashable
        ``stats(params, state, xs) -> state`` re-estimating the state from
        calibration batches ``xs`` ``[k, B, ...]`` in train mode
        (:func:`jaxscape.adapters.recompute_stats` gives it for nnx models).
      recompute_batches: ``k``: the first ``k`` batches of ``data`` (of
        ``batch_size`` examples, no padding) are the calibration set.

    Example:
      >>> import jax.numpy as jnp, jaxscape as js
      >>> apply = lambda p, s, x: (x - s["mean"]) @ p
      >>> obj = js.Objective.from_stateful(apply, {"mean": jnp.ones(2)}, data=(jnp.ones((4, 2)), jnp.zeros(4, jnp.int32)))
      >>> float(obj.value(jnp.ones((2, 3))))  # uniform logits
      1.0986...
    """
    if bn_policy not in ("frozen", "recompute"):
      hint = (": 'interpolate' is set by the directions (interpolation_direction / plane_directions given the "
              "models' states)") if bn_policy == "interpolate" else ""
      raise ValueError(f"unknown bn_policy {bn_policy!r}: expected one of ('frozen', 'recompute'){hint}")
    extra: tuple[tuple[str, Any], ...] = (("bn_policy", bn_policy),)
    if bn_policy == "recompute":
      if recompute_stats is None:
        raise ValueError("bn_policy='recompute' needs recompute_stats=stats(params, state, xs) -> state (the "
                         "train-mode re-estimation; Objective.from_model gives it for flax.nnx models)")
      if first_layer is not None:
        raise ValueError("bn_policy='recompute' re-estimates the statistics through the whole network: "
                         "pass first_layer=None")
      extra += (("recompute_batches", int(recompute_batches)),)
      obj = cls._build(_Recompute(apply_fn, recompute_stats), {"state": state, "calibration": jnp.zeros(())},
                       None, data, loss, batch_size, name, metrics, extra, layout, (inputs, targets, weights))
      obj = dataclasses.replace(obj, state={"state": state, "calibration": _calibration(obj, recompute_batches)})
      if params is not None:
        obj = obj._check(params)
    else:
      obj = cls._build(apply_fn, state, params, data, loss, batch_size, name, metrics, extra, layout,
                       (inputs, targets, weights))
    obj = obj.with_first_layer(first_layer, params).with_compute_dtype(compute_dtype)
    return obj.with_batching(batching, params)

  @classmethod
  def from_model(
      cls,
      model: Any,
      *,
      data: tuple[jax.typing.ArrayLike, jax.typing.ArrayLike],
      variables: PyTree | None = None,
      loss: str | PerExample = "cross_entropy",
      batch_size: int | None = 512,
      name: str = "data",
      metrics: Mapping[str, PerExample] | None = None,
      bn_policy: str = "frozen",
      recompute_batches: int = 1,
      first_layer: FirstLayer | str | None = "auto",
      compute_dtype: Any = None,
      inputs: str | None = None,
      targets: str | None = None,
      weights: str | None = None,
      batching: str = "auto",
  ) -> tuple["Objective", PyTree]:
    """Objective of a ``flax.nnx``, ``flax.linen`` or ``equinox`` model, and its trainable parameters.

    The model is split by its library's adapter (:func:`jaxscape.adapters.split`):
    evaluated in eval mode (Dropout off, BatchNorm on running statistics),
    trainable parameters as the argument, everything else closed over as
    state; the model itself is not modified. The objective's ``layout``
    (``obj.layout``) is the adapter's, for
    ``random_directions(key, params, layout=obj.layout)``.

    Args:
      model: an ``nnx.Module``, a linen ``Module`` (with ``variables``) or an
        equinox ``Module``.
      data, loss, batch_size, name, metrics, inputs, targets, weights: as in
        :meth:`from_apply` (a dict batch: ``inputs="input_ids"`` calls the
        model on that array).
      variables: the linen variables (``module.init(...)``); linen only.
      bn_policy: ``frozen`` or ``recompute`` (nnx models; see :data:`BN_POLICIES`).
      recompute_batches: with ``recompute``, the number of training batches
        (the first ones of ``data``) the statistics are re-estimated from.
      first_layer: ``"auto"``: the module's own first layer when it declares
        one (:func:`jaxscape.adapters.nnx.first_layer`: jaxscape's MLPs and
        ResNets), a :class:`FirstLayer`, or ``None`` (always the plain path).
      compute_dtype: dtype of the forward pass, as in :meth:`from_apply`.
      batching: as in :meth:`from_apply`.

    Returns:
      ``(objective, params)``.

    Example:
      >>> import numpy as np, jaxscape as js
      >>> net = js.models.build("mlp", 0, in_features=4, widths=[8], out_features=3)
      >>> x, y = np.ones((10, 4), np.float32), np.zeros(10, np.int32)
      >>> obj, params = js.Objective.from_model(net, data=(x, y))
      >>> obj.describe()["first_layer"], obj.describe()["bn_policy"]
      ('MLP.layers.0', 'frozen')
    """
    from . import adapters

    split = adapters.split(model, variables)
    if isinstance(first_layer, str):
      if first_layer != "auto":
        raise ValueError(f"first_layer must be 'auto', a FirstLayer or None; got {first_layer!r}")
      first_layer = None
      if bn_policy != "recompute" and adapters.library(model) == "nnx" and not isinstance(data, Mapping):
        from .adapters import nnx as _nnx

        first_layer = _nnx.first_layer(model)
    stats = adapters.recompute_stats(model, variables) if bn_policy == "recompute" else None
    obj = cls.from_stateful(split.apply, split.state, split.params, data=data, loss=loss, batch_size=batch_size,
                            name=name, metrics=metrics, bn_policy=bn_policy, first_layer=first_layer,
                            compute_dtype=compute_dtype, layout=split.layout, recompute_stats=stats,
                            recompute_batches=recompute_batches, inputs=inputs, targets=targets, weights=weights,
                            batching=batching)
    return obj, split.params

  @classmethod
  def _build(cls, apply, state, params, data, loss, batch_size, name, metrics, extra, layout, keys) -> "Objective":
    if callable(loss):
      per_example, default_metrics, loss_name = loss, {}, getattr(loss, "__name__", "custom")
    else:
      per_example, default_metrics, loss_name = per_example_loss(loss), LOSSES[loss][1], loss
    x, y, w, key_info = _split_data(data, keys, named_loss=not callable(loss))
    if key_info and dict(key_info)["inputs"] is not None and y is None:
      if isinstance(apply, _Recompute):
        raise ValueError("bn_policy='recompute' with a loss that reads the whole batch (targets=None) is not "
                         "supported: give targets='labels' (a key) so the model's inputs are one array")
      apply = _Select(apply, dict(key_info)["inputs"])
    # one host copy of the data for the checks (none for NumPy data), before it moves to the device
    _check_data(_host(x), None if y is None else np.asarray(y), per_example, None if w is None else np.asarray(w),
                tuple(v for _, v in key_info) or (None, None, None))
    n = int(jax.tree.leaves(x)[0].shape[0])
    metric_fns = tuple(sorted((metrics if metrics is not None else default_metrics).items()))
    if batch_size is None:
      batch_size = n
    if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
      raise ValueError(f"batch_size must be a positive integer or None; got {batch_size!r}")
    batch_size = _balanced(n, int(batch_size))
    xb, yb, wb, total = _batch(x, y, w, batch_size)
    info = (("dataset", name), ("num_examples", n), ("batch_size", batch_size), ("loss", loss_name)) + key_info + extra
    obj = cls(apply, per_example, metric_fns, xb, yb, wb, state, n, info,
              layout=directions.flax_layout if layout is None else layout, total_weight=total)
    if params is not None:
      obj = obj._check(params)
    if (obj.num_classes is None and per_example is _cross_entropy and y is not None
        and jnp.issubdtype(y.dtype, jnp.integer)):
      _check_labels(np.asarray(y), None, loss_name)  # the output width is unknown without params
    return obj

  def batch(self, i: int | jax.Array) -> tuple[Any, Any, jax.Array]:
    """Batch ``i`` as ``(x, y, w)`` (``x`` a dict for dict batches; ``y`` ``None`` when the loss reads the batch)."""
    return jax.tree.map(lambda b: b[i], (self.x, self.y, self.w))

  def _check(self, params: PyTree) -> "Objective":
    """Checks that the model's outputs fit the loss, and the targets the model's outputs (shapes only: no FLOPs).

    Returns the objective with :attr:`num_classes` set when the loss reads
    integer targets as class indices (then checked against the output width).
    """
    x0, y0, w0 = self.batch(0)

    def unfit(e: Exception) -> ValueError:  # re-raised with the shapes a user needs to see
      targets = "the batch" if self.y is None else f"targets {tuple(self.y.shape[1:])} {self.y.dtype}"
      return ValueError(f"the model's outputs do not fit the loss on a batch of inputs {_shapes(x0)}, {targets} "
                        f"and weights {tuple(w0.shape)}: {type(e).__name__}: {e}")

    try:
      out = jax.eval_shape(lambda p: self.apply(p, self.state, x0), params)
    except Exception as e:
      raise unfit(e) from e
    try:
      jax.eval_shape(lambda o: self._reduce(o, x0 if y0 is None else y0, w0, _float_dtype(params)), out)
    except Exception as e:
      raise unfit(e) from e
    if self.y is None:
      return self
    y = np.asarray(self.y).reshape(-1, *self.y.shape[2:])[:self.num_examples]  # the examples in order, no padding
    single = isinstance(out, jax.ShapeDtypeStruct)
    if (single and self.per_example is _cross_entropy and out.ndim == y.ndim + 1
        and not np.issubdtype(y.dtype, np.integer)):
      raise DataError(f"cross_entropy labels must be integers (class indices into the model's {out.shape[-1]} "
                      f"outputs); got {y.dtype} labels of shape {y.shape}: cast them (y.astype(np.int32)) or give "
                      f"probability targets shaped like the outputs, {tuple(out.shape[1:])} per example")
    if single and _classes_read(self.per_example, out.ndim, y):
      _check_labels(y, int(out.shape[-1]), dict(self.info).get("loss", "the loss's"))
      return dataclasses.replace(self, num_classes=int(out.shape[-1]))
    return self

  def with_data(self, data: Any, name: str | None = None, batch_size: int | None = None) -> "Objective":
    """The same model and loss over other data (e.g. the test split), in the form the objective was built from:
    ``(x, y)``, ``(x, y, weights)`` or a dict batch with the same keys."""
    info = dict(self.info)
    keys = (info["inputs"], info["targets"], info["weights"]) if "inputs" in info else (None, None, None)
    x, y, w, _ = _split_data(data, keys, named_loss=self.per_example in (fn for fn, _ in LOSSES.values()))
    if (y is None) != (self.y is None):
      raise ValueError("the new data must give the targets as the objective's did (a targets array or key, or none "
                       "for a loss that reads the whole batch)")
    _check_data(_host(x), None if y is None else np.asarray(y), self.per_example, None if w is None else np.asarray(w),
                keys)
    if self.num_classes is not None and np.issubdtype(np.asarray(y).dtype, np.integer):
      _check_labels(np.asarray(y), self.num_classes, info.get("loss", "the loss's"))
    expected = jax.tree.map(lambda a: tuple(a.shape[2:]), self.x)
    found = jax.tree.map(lambda a: tuple(np.shape(a)[1:]), x)
    if jax.tree.structure(expected) != jax.tree.structure(found) or expected != found:
      raise ValueError(f"new inputs have per-example shape {found}; the objective expects {expected}")
    n = int(jax.tree.leaves(x)[0].shape[0])
    bs = _balanced(n, int(batch_size or self.batch_size))
    xb, yb, wb, total = _batch(x, y, w, bs)
    info.update(dataset=name or info.get("dataset", "data"), num_examples=n, batch_size=bs)
    # An unrolled value keeps to its batch limit on other data (a large test split scans).
    batching = "scan" if int(wb.shape[0]) > UNROLL_MAX_BATCHES else self.batching
    return dataclasses.replace(self, x=xb, y=yb, w=wb, num_examples=n, total_weight=total, info=tuple(info.items()),
                               batching=batching)

  def with_first_layer(self, first_layer: FirstLayer | None, params: PyTree | None = None) -> "Objective":
    """The same objective with its first layer described (or, with ``None``, forgotten: plain path only).

    Args:
      first_layer: a :class:`FirstLayer` for this objective's ``apply``, or ``None``.
      params: optional parameters: the :class:`FirstLayer` contract is then
        checked on two examples (a ``ValueError`` says which part fails).
    """
    if first_layer is None:
      return dataclasses.replace(self, first_layer_spec=None)
    if not isinstance(first_layer, FirstLayer):
      raise ValueError(f"first_layer must be a FirstLayer or None; got {type(first_layer).__name__}")
    if params is not None:
      _check_first_layer(first_layer, self.apply, params, self.state, self.x[0])
    return dataclasses.replace(self, first_layer_spec=(first_layer, self.apply))

  def with_batching(self, batching: str, params: PyTree | None = None) -> "Objective":
    """The same objective going over its batches as ``batching`` says (see :data:`BATCHINGS`).

    Args:
      batching: ``"scan"``, ``"unroll"``, or ``"auto"``: ``"unroll"`` when the
        default backend is the CPU, there are at most
        :data:`UNROLL_MAX_BATCHES` batches and the model (traced on one batch
        at ``params``, no FLOPs) contains a convolution; else ``"scan"``
        (always ``"scan"`` without ``params``).
      params: example parameters, for ``"auto"``.

    Example:
      >>> import jax.numpy as jnp, jaxscape as js
      >>> obj = js.Objective.from_apply(lambda p, x: x @ p, jnp.ones((2, 3)), data=(jnp.ones((4, 2)), jnp.zeros(4, jnp.int32)))
      >>> obj.batching, obj.with_batching("unroll").describe()["batching"]
      ('scan', 'unroll')
    """
    if batching == "auto":
      batching = "scan"
      if params is not None and jax.default_backend() == "cpu" and self.num_batches <= UNROLL_MAX_BATCHES:
        if _has_convolution(jax.make_jaxpr(lambda p: self.batch_sums(p, self.batch(0)))(params)):
          batching = "unroll"
    if batching not in BATCHINGS:
      raise ValueError(f"batching must be one of {BATCHINGS} or 'auto'; got {batching!r}")
    return dataclasses.replace(self, batching=batching)

  def with_compute_dtype(self, dtype: Any) -> "Objective":
    """The same objective with its forward pass in ``dtype`` (``None``: the parameters' dtype).

    Parameters, state and inputs are cast to ``dtype`` for the model; its
    outputs are cast back to the parameters' dtype before the per-example
    loss, and sums over examples and batches are in that dtype (float32
    accumulation for ``bfloat16`` or ``float16`` compute). Gradients and
    HVPs through :meth:`value` see the same low-precision forward pass.

    Example:
      >>> import jax.numpy as jnp, jaxscape as js
      >>> obj = js.Objective.from_apply(lambda p, x: x @ p, data=(jnp.ones((4, 2)), jnp.zeros(4, jnp.int32)))
      >>> obj.with_compute_dtype(jnp.bfloat16).describe()["compute_dtype"]
      'bfloat16'
    """
    return dataclasses.replace(self, compute_dtype=_dtype_name(dtype))

  # --------------------------------------------------------------- evaluating
  @property
  def batch_size(self) -> int:
    return int(self.w.shape[1])

  @property
  def num_batches(self) -> int:
    return int(self.w.shape[0])

  @property
  def metric_names(self) -> tuple[str, ...]:
    return tuple(name for name, _ in self.metric_fns)

  @property
  def first_layer(self) -> FirstLayer | None:
    """The model's :class:`FirstLayer`, if known and still describing ``apply``."""
    if self.first_layer_spec is None or self.first_layer_spec[1] is not self.apply:
      return None
    return self.first_layer_spec[0]

  def describe(self) -> dict[str, Any]:
    """The static description recorded in results (dataset, loss, sizes, evaluation options).

    ``first_layer`` (the name of the split-off first layer, when the affine
    surface path is on) and ``compute_dtype`` (when not the parameters'
    dtype) appear only when set.
    """
    d = dict(self.info)
    if self.first_layer is not None:
      d["first_layer"] = self.first_layer.name
    if self.compute_dtype is not None:
      d["compute_dtype"] = self.compute_dtype
    if self.batching != "scan":
      d["batching"] = self.batching
    return d

  def _to_compute(self, t: PyTree) -> PyTree:
    return t if self.compute_dtype is None else _cast_floating(t, self.compute_dtype)

  def _reduce(self, out: PyTree, targets: Any, w: jax.Array | None, acc_dtype: Any) -> dict[str, jax.Array]:
    """Weighted sums of the per-example (or per-token) loss and metrics of model outputs ``out``."""
    if self.compute_dtype is not None:
      out = _cast_floating(out, acc_dtype)
    losses = self.per_example(out, targets)
    sums = {"loss": _weighted_sum(losses, w)}
    for name, fn in self.metric_fns:
      sums[name] = _weighted_sum(fn(out, targets).astype(losses.dtype), w)
    return sums

  def loss_sum(self, outputs: PyTree, batch: tuple[Any, ...]) -> jax.Array:
    """``Σ w·ℓ`` of model ``outputs`` on ``batch`` ``(x, y, w)``: the loss part of :meth:`batch_sums` (for
    curvature that differentiates with respect to the outputs, e.g. the Gauss-Newton matrix)."""
    x, y, w = batch if len(batch) == 3 else (*batch, None)
    return _weighted_sum(self.per_example(outputs, x if y is None else y), w)

  def batch_sums(self, params: PyTree, batch: tuple[jax.Array, ...], state: PyTree | None = None) -> dict[str, jax.Array]:
    """Weighted sums over one batch: ``{"loss": sum_i w_i l_i, metric: ...}``.

    This is the building block of every full-data reduction: summing it over
    all batches and dividing by :attr:`total_weight` gives the exact mean.
    """
    x, y, w = batch if len(batch) == 3 else (*batch, None)
    state = self.state if state is None else state
    out = self.apply(self._to_compute(params), self._to_compute(state), self._to_compute(x))
    return self._reduce(out, x if y is None else y, w, _float_dtype(params))

  def grid_batch_sums(self, params: PyTree, vectors: PyTree, coords: jax.Array, batch: tuple[jax.Array, ...], *,
                      state_vectors: PyTree | None = None, affine: bool = True) -> dict[str, jax.Array]:
    """Batch sums at every point ``params + Σ_j coords[p, j] vectors[j]`` of a chunk: ``{name: [P]}``.

    With a known :attr:`first_layer` (and ``affine=True``), the first layer
    runs ``n + 1`` times on the batch (at ``params`` and on each direction)
    instead of ``P`` times, and each point combines those outputs before the
    rest of the network; otherwise :meth:`batch_sums` is ``vmap``-ed over the
    points. The two agree to float rounding.

    Args:
      params: the centre ``θ``.
      vectors: the directions stacked on a leading axis of size ``n``
        (``jaxscape.tree.stack``; ``Directions.vectors``).
      coords: ``[P, n]`` point coordinates.
      batch: ``(x, y)`` or ``(x, y, w)``.
      state_vectors: with BatchNorm ``interpolate``, the state moves with the
        point too (``state + Σ_j c_j s_j``, stacked like ``vectors``).
      affine: ``False`` forces the plain ``vmap`` path.

    Example:
      >>> import jax, jax.numpy as jnp, numpy as np, jaxscape as js
      >>> net = js.models.build("mlp", 0, in_features=4, widths=[8], out_features=3)
      >>> x, y = np.ones((6, 4), np.float32), np.arange(6) % 3
      >>> obj, params = js.Objective.from_model(net, data=(x, y))
      >>> dirs = js.random_directions(jax.random.key(0), params, n=2)
      >>> coords = jnp.array([[0.0, 0.0], [0.5, -1.0], [1.0, 1.0]])
      >>> batch = (obj.x[0], obj.y[0], obj.w[0])
      >>> affine = obj.grid_batch_sums(params, dirs.vectors, coords, batch)
      >>> plain = obj.grid_batch_sums(params, dirs.vectors, coords, batch, affine=False)
      >>> bool(np.allclose(affine["loss"], plain["loss"], rtol=1e-5))
      True
    """
    def state_at(c):
      return self.state if state_vectors is None else move_state(self.state, c, state_vectors)

    def at(c):
      return tree.add(params, tree.combine(c, vectors))

    fl = self.first_layer if affine else None
    if fl is None:
      return jax.vmap(lambda c: self.batch_sums(at(c), batch, state=state_at(c)))(coords)
    x, y, w = batch if len(batch) == 3 else (*batch, None)
    y = x if y is None else y
    acc_dtype = _float_dtype(params)
    xc = self._to_compute(x)
    z0 = fl.linear(self._to_compute(fl.select(params)), xc)
    zd = jax.vmap(lambda v: fl.linear(self._to_compute(v), xc))(fl.select(vectors))  # [n, B, ...]

    def point(c):
      z = z0 + jnp.tensordot(c.astype(zd.dtype), zd, axes=1)
      # The first layer's part of at(c) is unused by rest(): XLA drops it.
      out = fl.rest(self._to_compute(at(c)), self._to_compute(state_at(c)), z)
      return self._reduce(out, y, w, acc_dtype)

    return jax.vmap(point)(coords)

  def loss(self, params: PyTree, batch: tuple[jax.Array, ...] | None = None) -> tuple[jax.Array, dict[str, jax.Array]]:
    """``(loss, metrics)``: the mean over one batch, or over all data when ``batch`` is None."""
    if batch is None:
      sums, count = self.full_sums(params), self.total_weight
    else:
      sums = self.batch_sums(params, batch)
      count = jnp.sum(batch[2]) if len(batch) == 3 else jax.tree.leaves(batch[0])[0].shape[0]
    means = {k: v / jnp.asarray(count, _standard_result_type(v, count)) for k, v in sums.items()}
    return means.pop("loss"), means

  def sum_over_batches(self, sums: Callable[[tuple[Any, Any, jax.Array]], PyTree], batching: str = "scan") -> PyTree:
    """``Σ_b sums(batch b)`` over the objective's batches ``(x, y, w)``, in batch order.

    ``batching`` (one of :data:`BATCHINGS`): ``"scan"`` adds inside one
    ``lax.scan``; ``"unroll"`` in a Python loop (one copy of ``sums`` per
    batch in the program); the same additions in the same order either way.
    The forward-only full sums (:meth:`loss`, surfaces) scan; the
    differentiated paths (:meth:`value`, the Gauss-Newton product) pass
    :attr:`batching`.

    The first batch initialises the carry, so the carry has the same
    sharding/varying-ness as the sums (needed inside ``shard_map``). With a
    single batch there is no scan at all: a scan over zero batches would still
    compile its body, doubling the compiled program (its HVP, for curvature)
    for nothing.
    """
    if batching not in BATCHINGS:
      raise ValueError(f"batching must be one of {BATCHINGS}; got {batching!r}")
    batches = (self.x, self.y, self.w)
    first = sums(jax.tree.map(lambda b: b[0], batches))
    if self.num_batches == 1:
      return first
    if batching == "unroll":
      total = first
      for i in range(1, self.num_batches):
        total = jax.tree.map(jnp.add, total, sums(self.batch(i)))
      return total

    def body(carry, batch):
      return jax.tree.map(jnp.add, carry, sums(batch)), None

    total, _ = jax.lax.scan(body, first, jax.tree.map(lambda b: b[1:], batches))
    return total

  def full_sums(self, params: PyTree, batching: str = "scan") -> dict[str, jax.Array]:
    """Sums of per-example loss and metrics over the whole dataset (see :meth:`sum_over_batches`)."""
    return self.sum_over_batches(lambda batch: self.batch_sums(params, batch), batching)

  def value(self, params: PyTree) -> jax.Array:
    """Full-data mean loss alone (differentiable: use it for gradients and HVPs).

    It goes over the batches as :attr:`batching` says (:meth:`loss` always
    scans); with ``"unroll"`` the value can differ from ``loss(params)[0]``
    in the last bits (the same sums in the same order, compiled apart).
    """
    loss = self.full_sums(params, self.batching)["loss"]
    return loss / jnp.asarray(self.total_weight, _standard_result_type(loss, self.total_weight))


jax.tree_util.register_dataclass(
    Objective,
    data_fields=["x", "y", "w", "state"],
    meta_fields=["apply", "per_example", "metric_fns", "num_examples", "info", "first_layer_spec", "compute_dtype",
                 "layout", "num_classes", "total_weight", "batching"],
)


@dataclasses.dataclass(frozen=True, eq=False)
class _Stateless:
  """``apply(params, state, x) = fn(params, x)``: hashable and equal for one ``fn``, so two objectives
  of the same function share one jit compilation (a fresh lambda per objective would not)."""

  fn: Callable[[PyTree, jax.Array], jax.Array]

  def __call__(self, params: PyTree, state: PyTree, x: jax.Array) -> jax.Array:
    return self.fn(params, x)

  def __eq__(self, other: Any) -> bool:
    return isinstance(other, _Stateless) and (other.fn is self.fn or other.fn == self.fn)

  def __hash__(self) -> int:
    try:
      return hash(self.fn)
    except TypeError:  # an unhashable callable: equal only to itself
      return id(self.fn)


@dataclasses.dataclass(frozen=True)
class _Recompute:
  """BatchNorm policy ``recompute``: the state is ``{"state", "calibration"}``; at every call the
  statistics are re-estimated at ``params`` from the calibration batches (train mode), then the
  model runs in eval mode on them.

  It lives in the objective's ``apply``, so everything built on it (full-data
  values, surfaces vmapped over points, gradients, HVPs) sees the statistics of
  the point it evaluates. The cost is one train-mode pass over the calibration
  set per evaluated batch.
  """

  apply: Apply
  stats: Callable[[PyTree, PyTree, jax.Array], PyTree]

  def __call__(self, params: PyTree, state: PyTree, x: jax.Array) -> jax.Array:
    return self.apply(params, self.stats(params, state["state"], state["calibration"]), x)


def _calibration(obj: "Objective", k: int) -> jax.Array:
  """The first ``k`` full batches of the objective's data, ``[k, B, ...]`` (no padded examples)."""
  if not isinstance(k, (int, np.integer)) or k < 1:
    raise ValueError(f"recompute_batches must be a positive integer; got {k!r}")
  full = obj.num_examples // obj.batch_size
  if k > full:
    raise ValueError(f"recompute_batches={k} needs {k} full batches of {obj.batch_size} examples; the data "
                     f"({obj.num_examples} examples) has {full}")
  return jax.tree.map(lambda a: a[:k], obj.x)


def _balanced(n: int, batch_size: int) -> int:
  """The smallest batch size that covers ``n`` examples in as many batches as ``batch_size`` would.

  Balancing keeps the padding of the last batch below the number of batches
  (1797 digits with batch_size 512: 4 batches of 450, not 4 of 512 with 251
  padded), so no compute is spent on masked examples.
  """
  num_batches = -(-n // min(batch_size, n))
  return -(-n // num_batches)


def _batch(x: Any, y: jax.Array | None, w: Any, batch_size: int) -> tuple[Any, Any, jax.Array, float]:
  """Pads to a whole number of batches and reshapes to ``[nb, B, ...]``; returns ``(x, y, w, Σ w)``.

  ``x`` may be a dict batch, ``y`` ``None``, ``w`` per-example ``[N]`` or
  per-token ``[N, T, ...]`` weights (``None``: 1 per example); the padded
  examples get weight 0.
  """
  n = int(jax.tree.leaves(x)[0].shape[0])
  nb = -(-n // batch_size)
  pad = nb * batch_size - n
  w = jnp.ones(n, jnp.float32) if w is None else jnp.asarray(w).astype(jnp.float32)
  # Σ w in float64 on the host, of the float32 weights the batches use: the exact denominator of every full mean
  total = float(np.asarray(w, np.float64).sum())
  w = jnp.concatenate([w, jnp.zeros((pad, *w.shape[1:]), jnp.float32)])
  if pad:
    # Pad by repeating the first examples so the padded inputs stay in-distribution
    # (no NaNs from, e.g., a log of zeros); their weight is 0.
    idx = jnp.concatenate([jnp.arange(n), jnp.arange(pad) % n])
    x, y = jax.tree.map(lambda a: jnp.asarray(a)[idx], (x, y))

  def split(a):
    a = jnp.asarray(a)
    return a.reshape(nb, batch_size, *a.shape[1:])

  xb, yb, wb = jax.tree.map(split, (x, y, w))
  return xb, yb, wb, total


def _weighted_sum(values: jax.Array, w: jax.Array | None) -> jax.Array:
  """``Σ w·ℓ`` over one batch of per-example ``[B]`` or per-token ``[B, T, ...]`` values.

  ``w`` (``None``: 1 per example) has a prefix of the values' shape; the
  values' further axes are averaged first, so unweighted per-token losses
  count every token of an example equally (with ``T`` tokens each, the full
  mean ``Σ / Σ w`` is the mean over all tokens).
  """
  if w is None:
    w = jnp.ones(values.shape[:1], values.dtype)
  if values.ndim < w.ndim or values.shape[:w.ndim] != w.shape:
    raise ValueError(f"weights of shape {tuple(w.shape)} per batch do not fit losses of shape {tuple(values.shape)}: "
                     "expected per-example weights [B] or per-token weights shaped like the per-token losses "
                     "[B, T, ...]")
  if values.ndim > w.ndim:
    values = values.mean(axis=tuple(range(w.ndim, values.ndim)))
  return jnp.sum(w.astype(values.dtype) * values)


_DATA_KEYS = ("inputs", "targets", "weights")


def _split_data(data: Any, keys: tuple[str | None, str | None, str | None], *, named_loss: bool
                ) -> tuple[Any, Any, Any, tuple[tuple[str, Any], ...]]:
  """``(x, y, w, info)`` of ``(x, y)``, ``(x, y, w)`` or a dict batch with ``keys = (inputs, targets, weights)``.

  A dict batch gives ``x = batch[inputs]`` when the loss reads
  ``batch[targets]`` (the plain ``(x, y)`` layout: no array is stored twice),
  else the whole batch as ``x`` and ``y = None``; ``info`` records the keys.
  """
  inputs, targets, weights = keys
  if isinstance(data, Mapping):
    batch = dict(data)
    if targets is None and named_loss:
      targets = "labels"
    for role, key in zip(_DATA_KEYS, (inputs, targets, weights)):
      if key is not None and key not in batch:
        default = " (the default for a named loss)" if role == "targets" and keys[1] is None else ""
        raise ValueError(f"{role}={key!r}{default} is not a key of the dict batch; its keys: {sorted(batch)}")
    w = None if weights is None else batch[weights]
    y = None if targets is None else batch[targets]
    x = batch[inputs] if (inputs is not None and y is not None) else batch
    return x, y, w, tuple(zip(_DATA_KEYS, (inputs, targets, weights)))
  if any(k is not None for k in keys):
    raise ValueError(f"inputs/targets/weights name keys of a dict batch; data is a {type(data).__name__} (give "
                     "weights of (x, y) data as a third array: data=(x, y, weights))")
  if not (isinstance(data, (tuple, list)) and len(data) in (2, 3)):
    raise ValueError(f"data must be a pair (x, y) of arrays, a triple (x, y, weights) or a dict batch; got "
                     f"{type(data).__name__}" + (f" of length {len(data)}" if isinstance(data, (tuple, list)) else ""))
  return data[0], data[1], data[2] if len(data) == 3 else None, ()


def _host(x: Any) -> Any:
  """A host (NumPy) view of an input array or of a dict batch's arrays, for the data checks."""
  return np.asarray(x) if not isinstance(x, Mapping) else {k: _host(v) for k, v in x.items()}


def _shapes(x: Any) -> Any:
  """Per-example shapes of a batch of inputs (an array or a dict batch), for messages."""
  return tuple(x.shape[1:]) if hasattr(x, "shape") else {k: _shapes(v) for k, v in x.items()}


@dataclasses.dataclass(frozen=True)
class _Select:
  """``apply(params, state, batch[key])`` on a dict batch: a model called on one of the batch's arrays while the
  loss reads the whole batch (hashable, so jit caches are shared)."""

  apply: Apply
  key: str

  def __call__(self, params: PyTree, state: PyTree, batch: Mapping[str, jax.Array]) -> jax.Array:
    return self.apply(params, state, batch[self.key])


# ----------------------------------------------------------------------------- L2 penalties
# Critical-point studies of small networks need critical points at finite
# parameters: with cross-entropy on (nearly) separable data the loss keeps
# falling as the weights grow, so Newton-type searches on ||grad f||^2 drift
# along ever flatter valleys. An L2 penalty (weight decay) makes every sublevel
# set bounded. It is carried per example (every example's loss gets the same
# (weight_decay / 2) ||theta||^2), so the exact 1/N full-data mean and the batch
# means both equal L + penalty.


def l2_penalty(params: PyTree, weight_decay: float) -> jax.Array:
  """``(weight_decay / 2) * sum of squares of every leaf``."""
  return 0.5 * weight_decay * sum(jnp.sum(jnp.square(leaf)) for leaf in jax.tree.leaves(params))


@dataclasses.dataclass(frozen=True)
class _PenalisedApply:
  """``apply`` that also returns the penalty broadcast to the batch (hashable, so jit caches are shared)."""

  apply: Callable
  weight_decay: float

  def __call__(self, params, state, x):
    out = self.apply(params, state, x)
    pen = l2_penalty(params, self.weight_decay).astype(jnp.result_type(out))
    return out, jnp.broadcast_to(pen, (jax.tree.leaves(x)[0].shape[0],))


@dataclasses.dataclass(frozen=True)
class _PenalisedLoss:
  per_example: Callable

  def __call__(self, outputs, targets):
    out, pen = outputs
    losses = self.per_example(out, targets)
    # per-token losses [B, T, ...]: every token carries the penalty, so weighted token means add it once
    return losses + pen.reshape(pen.shape + (1,) * (losses.ndim - 1))


@dataclasses.dataclass(frozen=True)
class _OnOutputs:
  fn: Callable

  def __call__(self, outputs, targets):
    return self.fn(outputs[0], targets)


def with_l2(obj: Objective, weight_decay: float) -> Objective:
  """The objective ``obj.value(theta) + (weight_decay / 2) ||theta||^2``.

  Everything that takes an Objective (dense Hessians, critical-point search,
  saddle-free Newton, surfaces) then sees the regularised function; metrics
  (accuracy) are those of the unregularised model.

  Args:
    obj: any objective (its data, model state and metrics are kept).
    weight_decay: the penalty coefficient, ``>= 0``; its gradient is
      ``weight_decay * theta`` and it adds ``weight_decay`` to every Hessian
      eigenvalue.

  Returns:
    A new :class:`Objective`; ``describe()`` records ``weight_decay``.

  Example:
    >>> import jax.numpy as jnp, jaxscape as js
    >>> obj = js.Objective.from_apply(lambda p, x: x @ p, data=(jnp.eye(2), jnp.zeros(2)), loss="mse")
    >>> reg = js.objective.with_l2(obj, 0.5)
    >>> p = jnp.array([1.0, 2.0])
    >>> float(reg.value(p)), float(obj.value(p) + 0.25 * 5.0)
    (3.75, 3.75)
  """
  weight_decay = float(weight_decay)
  if not weight_decay >= 0:
    raise ValueError(f"weight_decay must be >= 0; got {weight_decay!r}")
  info = dict(obj.info)
  info["weight_decay"] = weight_decay
  return dataclasses.replace(
      obj, apply=_PenalisedApply(obj.apply, weight_decay), per_example=_PenalisedLoss(obj.per_example),
      metric_fns=tuple((name, _OnOutputs(fn)) for name, fn in obj.metric_fns), info=tuple(info.items()))


def split_l2(obj: Objective) -> tuple[Objective, float]:
  """``(base, weight_decay)`` with ``obj.value = base.value + (weight_decay / 2) ||theta||^2``.

  Peels off every :func:`with_l2` layer (their weight decays add up); an
  objective without one comes back unchanged with ``weight_decay = 0``. For
  curvature that must treat the penalty apart from the model outputs, e.g. the
  Gauss-Newton matrix: the penalty is linear in its extra output, so
  ``J^T H_out J`` would drop its ``weight_decay * I``.

  Example:
    >>> import jax.numpy as jnp, jaxscape as js
    >>> obj = js.Objective.from_apply(lambda p, x: x @ p, data=(jnp.eye(2), jnp.zeros(2)), loss="mse")
    >>> base, wd = split_l2(with_l2(with_l2(obj, 0.5), 0.25))
    >>> wd, float(base.value(jnp.ones(2))) == float(obj.value(jnp.ones(2)))
    (0.75, True)
  """
  weight_decay, apply, per_example, metric_fns = 0.0, obj.apply, obj.per_example, obj.metric_fns
  while isinstance(apply, _PenalisedApply):
    weight_decay += apply.weight_decay
    apply, per_example = apply.apply, per_example.per_example
    metric_fns = tuple((name, fn.fn) for name, fn in metric_fns)
  if apply is obj.apply:
    return obj, 0.0
  info = tuple((k, v) for k, v in obj.info if k != "weight_decay")
  return dataclasses.replace(obj, apply=apply, per_example=per_example, metric_fns=metric_fns, info=info), weight_decay
