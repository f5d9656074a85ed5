"""Training on the pure ``(params, state, apply)`` form: optax loops, vmapped seeds.

The model is split once into pure functions (:func:`jaxscape.adapters.nnx.split_train`,
the one nnx splitter, shared with checkpoints and analysis):
``train_apply(params, state, x) -> (outputs, new_state)`` runs it in train
mode (BatchNorm uses batch statistics and returns updated running averages;
Dropout is active) and ``apply(params, state, x) -> outputs`` runs it in eval
mode. ``params`` and ``state`` are plain nested dicts of arrays, so they can
be jitted, vmapped, stacked and checkpointed.

Epochs. Each epoch draws a permutation of the training set from
``fold_in(key, epoch)`` and runs ``floor(N / batch_size)`` steps as one
``lax.scan``; **the ragged remainder of each epoch is dropped** (a different
remainder each epoch, since the order is reshuffled). ``batch_size=None`` is
full-batch gradient descent (one step per epoch, no shuffling). After every
epoch the train and test loss and accuracy are evaluated on the *full* splits
in eval mode (exact means, :class:`jaxscape.Objective`).

Resuming. The data order depends only on ``(key, epoch)`` and the step
count, so a run restored from a checkpoint continues exactly as the
uninterrupted run would have (see :mod:`jaxscape.checkpoint`).

Example:
  >>> import jax
  >>> import jaxscape as js
  >>> from jaxscape import data, models, train
  >>> ds = data.load("synthetic", train_size=64, test_size=32, dim=4)
  >>> net = models.build("mlp", 0, in_features=4, widths=[8], out_features=3)
  >>> cfg = train.TrainConfig(optimizer="adam", learning_rate=1e-2, batch_size=16, epochs=3)
  >>> params, state, hist = train.train(jax.random.key(0), net, ds, cfg)
  >>> hist.train_loss.shape
  (3,)
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import os
import shutil
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from . import hessian
from . import io as _io
from . import tree as tree_lib
from .adapters.nnx import as_pure, split_train, update
from .data import Dataset
from .objective import LOSSES, Objective, per_example_loss

from .tree import PyTree

__all__ = [
    "TrainConfig",
    "DivergedError",
    "History",
    "make_optimizer",
    "train",
    "train_many",
    "train_from_spec",
    "SWEEPABLE",
]

SWEEPABLE = ("learning_rate", "weight_decay", "momentum")
"""Hyperparameters that :func:`train_many` can vary across runs in one vmap."""


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """Optimisation settings (all JSON values, recorded in checkpoints).

  Attributes:
    optimizer: ``sgd`` (optionally with momentum / Nesterov), ``adam``, or
      ``adamw`` (decoupled weight decay).
    learning_rate: base learning rate.
    momentum: SGD momentum (0: plain SGD); for Adam it is ``b1`` when > 0.
    nesterov: Nesterov momentum for SGD.
    weight_decay: L2 coefficient. For ``sgd``/``adam`` it is added to the
      gradient (``g + wd * w``, PyTorch's coupled decay, as in Li et al.); for
      ``adamw`` it is decoupled. Applied to every parameter.
    batch_size: examples per step; ``None`` (or >= N) is full batch.
    epochs: number of epochs (ignored when ``steps`` is set).
    steps: total number of optimiser steps (overrides ``epochs``).
    schedule: ``constant``, ``step`` (multiply by ``decay_factor`` at each
      epoch in ``decay_epochs``) or ``cosine`` (to 0 over all steps).
    decay_epochs: epochs at which the ``step`` schedule decays.
    decay_factor: factor of each ``step`` decay.
    warmup_steps: linear warm-up from 0 before the schedule.
    loss: a name in :data:`jaxscape.objective.LOSSES`.
    eval_batch_size: batch size of the full-data evaluations.
    eval_every: evaluate (train/test loss and accuracy in the history) every
      this many epochs, and at the end. Full-batch runs have one step per
      epoch: evaluating every step can cost a third of the training.
    curvature_every: record the curvature of the training objective every
      this many steps, and at step 0, in ``history.curvature``
      (:func:`jaxscape.hessian.curvature_probe`); ``None`` (default): never.
    curvature_k: number of top Hessian eigenvalues recorded.
    curvature_examples: the measurement set: this many training examples,
      evenly strided through the training set (the same ones at every
      recorded step, so the series is not sampling noise); ``None``: all.
    curvature_tol: relative residual tolerance of the eigenvalues'
      ``converged`` flags.
    curvature_trace: also record the Hessian trace (with its standard error).
    curvature_preconditioned: for ``adam``/``adamw``, also record the
      preconditioned sharpness (the top eigenvalue of ``P^{-1/2} H P^{-1/2}``,
      Adam's ``P``).
  """

  optimizer: str = "sgd"
  learning_rate: float = 0.1
  momentum: float = 0.0
  nesterov: bool = False
  weight_decay: float = 0.0
  batch_size: int | None = 128
  epochs: int = 10
  steps: int | None = None
  schedule: str = "constant"
  decay_epochs: tuple[int, ...] = ()
  decay_factor: float = 0.1
  warmup_steps: int = 0
  loss: str = "cross_entropy"
  eval_batch_size: int = 1024
  eval_every: int = 1
  curvature_every: int | None = None
  curvature_k: int = 1
  curvature_examples: int | None = 2048
  curvature_tol: float = 1e-3
  curvature_trace: bool = False
  curvature_preconditioned: bool = True

  def __post_init__(self):
    if self.optimizer not in ("sgd", "adam", "adamw"):
      raise ValueError(f"optimizer must be 'sgd', 'adam' or 'adamw'; got {self.optimizer!r}")
    if self.schedule not in ("constant", "step", "cosine"):
      raise ValueError(f"schedule must be 'constant', 'step' or 'cosine'; got {self.schedule!r}")
    if self.batch_size is not None and int(self.batch_size) < 1:
      raise ValueError(f"batch_size must be a positive integer or None (full batch); got {self.batch_size!r}")
    if self.steps is None and int(self.epochs) < 1:
      raise ValueError(f"epochs must be >= 1 (or give steps); got {self.epochs!r}")
    if self.steps is not None and int(self.steps) < 1:
      raise ValueError(f"steps must be >= 1; got {self.steps!r}")
    if int(self.eval_every) < 1:
      raise ValueError(f"eval_every must be >= 1 (epochs); got {self.eval_every!r}")
    if self.loss not in LOSSES:
      raise ValueError(f"unknown loss {self.loss!r}: expected one of {sorted(LOSSES)}")
    for name, low in (("learning_rate", 0.0), ("momentum", 0.0), ("weight_decay", 0.0), ("decay_factor", 0.0)):
      value = getattr(self, name)
      if not (isinstance(value, (int, float, np.integer, np.floating)) and np.isfinite(value) and value >= low):
        raise ValueError(f"{name} must be a finite number >= {low:g}; got {value!r}")
    if not self.learning_rate > 0:
      raise ValueError(f"learning_rate must be positive; got {self.learning_rate!r}")
    for name in ("curvature_every", "curvature_examples"):
      value = getattr(self, name)
      if value is not None and (not isinstance(value, (int, np.integer)) or value < 1):
        raise ValueError(f"{name} must be a positive integer or None; got {value!r}")
    if not isinstance(self.curvature_k, (int, np.integer)) or self.curvature_k < 1:
      raise ValueError(f"curvature_k must be a positive integer; got {self.curvature_k!r}")
    object.__setattr__(self, "decay_epochs", tuple(int(e) for e in self.decay_epochs))

  @classmethod
  def from_dict(cls, d: Mapping[str, Any]) -> "TrainConfig":
    """Builds a config from a dict, rejecting unknown keys by name."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - names)
    if unknown:
      raise ValueError(f"unknown training settings {unknown}; expected some of {sorted(names)}")
    return cls(**d)

  def to_dict(self) -> dict[str, Any]:
    """The settings as JSON values; without the ``curvature_*`` ones when curvature is off (as recorded before them)."""
    d = dataclasses.asdict(self)
    d["decay_epochs"] = list(self.decay_epochs)
    if self.curvature_every is None:
      d = {k: v for k, v in d.items() if not k.startswith("curvature_")}
    return d


@dataclasses.dataclass(frozen=True, eq=False)
class History:
  """Per-epoch training record (NumPy arrays; plot ``epoch`` against any field).

  With :func:`train_many` every field except ``epoch`` and ``step`` gets
  leading run axes (``[seeds, epochs]``, or ``[configs, seeds, epochs]``).

  Attributes:
    epoch: epochs completed at each evaluation (fractional if ``steps`` ends mid-epoch).
    step: optimiser steps completed at each evaluation.
    train_loss, train_accuracy: full training split, eval mode.
    test_loss, test_accuracy: full test split, eval mode (NaN without a test split).
    batch_loss: mean mini-batch (train-mode) loss over the steps of each epoch.
    trajectory: parameter snapshots stacked on a new axis after the run
      axes (``None`` unless ``snapshot_every`` was given); the initial
      parameters first.
    trajectory_step: the step of each snapshot.
    curvature: ``None`` unless ``TrainConfig.curvature_every`` was set; then
      a dict of arrays, one entry per recorded step on the axis after the
      run axes: ``step`` (``[T]``), ``eigenvalues``, ``residuals``,
      ``converged`` (``[..., T, k]``, the top-k Hessian eigenpairs of the
      measurement set's loss, largest first), ``num_hvps``,
      ``learning_rate`` (the step size of the next update), ``threshold``
      (the stability threshold of the optimiser's sharpness: ``(2 + 2
      beta) / eta`` for heavy-ball SGD, ``2 / eta`` without momentum,
      ``(2 + 2 beta) / ((1 + 2 beta) eta)`` with Nesterov; ``(2 + 2 b1) /
      ((1 - b1) eta)`` of the preconditioned sharpness for Adam), and with
      Adam ``preconditioned_sharpness`` (NaN at step 0: no moments yet),
      ``preconditioned_residual``, ``preconditioned_converged``; with
      ``curvature_trace`` ``trace``, ``trace_stderr``, ``trace_converged``.
  """

  epoch: np.ndarray
  step: np.ndarray
  train_loss: np.ndarray
  train_accuracy: np.ndarray
  test_loss: np.ndarray
  test_accuracy: np.ndarray
  batch_loss: np.ndarray
  trajectory: PyTree = None
  trajectory_step: np.ndarray | None = None
  curvature: dict[str, np.ndarray] | None = None

  METRICS = ("train_loss", "train_accuracy", "test_loss", "test_accuracy", "batch_loss")

  def as_dict(self) -> dict[str, np.ndarray]:
    """The per-epoch arrays as a dict (no trajectory)."""
    return {k: getattr(self, k) for k in ("epoch", "step", *self.METRICS)}

  def __len__(self) -> int:
    return int(self.epoch.shape[0])


# ----------------------------------------------------------------------------- optimiser


def _steps_per_epoch(n: int, batch_size: int | None) -> tuple[int, int]:
  b = n if batch_size is None else int(min(batch_size, n))
  return b, n // b


def make_optimizer(config: TrainConfig, steps_per_epoch: int, total_steps: int,
                   hyper: Mapping[str, Any] | None = None) -> optax.GradientTransformation:
  """The optax transformation for a config.

  Args:
    config: the settings.
    steps_per_epoch: optimiser steps per epoch (for epoch-based schedules).
    total_steps: steps of the whole run (for the cosine schedule).
    hyper: overrides of :data:`SWEEPABLE` values; may be traced arrays (this
      is how :func:`train_many` vmaps over learning rates).
  """
  h = {k: getattr(config, k) for k in SWEEPABLE}
  h.update(hyper or {})
  wd, mom = h["weight_decay"], h["momentum"]
  sched = _schedule(config, steps_per_epoch, total_steps, h["learning_rate"])
  use_momentum = bool(config.momentum) or "momentum" in (hyper or {})
  decay = bool(config.weight_decay) or "weight_decay" in (hyper or {})
  if config.optimizer == "sgd":
    tx = optax.sgd(sched, momentum=mom if use_momentum else None, nesterov=config.nesterov)
    return optax.chain(optax.add_decayed_weights(wd), tx) if decay else tx
  b1 = mom if use_momentum else 0.9
  if config.optimizer == "adam":
    tx = optax.adam(sched, b1=b1)
    return optax.chain(optax.add_decayed_weights(wd), tx) if decay else tx
  return optax.adamw(sched, b1=b1, weight_decay=wd)


def _schedule(config: TrainConfig, steps_per_epoch: int, total_steps: int, lr: Any) -> Callable[[jax.Array], jax.Array]:
  """The learning rate as a function of the optimiser's step count."""
  # The integer step count is cast to the default float on purpose (what implicit promotion gave).
  real = jnp.result_type(float)
  if config.schedule == "constant":
    sched = lambda step: lr * jnp.ones((), real)
  elif config.schedule == "step":
    bounds = jnp.asarray([e * steps_per_epoch for e in config.decay_epochs], jnp.int32)
    # lax.pow keeps the integer exponent (float ** int), as jnp.power did for a traced int.
    sched = lambda step: lr * jax.lax.pow(jnp.asarray(config.decay_factor, real), jnp.sum(step >= bounds))
  else:
    decay_steps = max(total_steps - config.warmup_steps, 1)
    sched = lambda step: lr * 0.5 * (1 + jnp.cos(jnp.pi * jnp.minimum(step, decay_steps).astype(real) / decay_steps))
  if config.warmup_steps:
    base, w = sched, config.warmup_steps
    sched = lambda step: jnp.where(step < w, lr * (step + 1).astype(real) / w, base(jnp.maximum(step - w, 0)))
  return sched


def _stability_threshold(config: TrainConfig, lr: jax.Array, hyper: Mapping[str, Any]) -> jax.Array:
  """The largest sharpness at which the optimiser is stable on a quadratic (see ``History.curvature``).

  Cohen et al. (2021, App. A) for gradient descent with (Nesterov) momentum;
  Cohen et al. (2022) for Adam's preconditioned sharpness; the momentum is
  ``b1`` exactly as :func:`make_optimizer` sets it.
  """
  use_momentum = bool(config.momentum) or "momentum" in hyper
  default = 0.0 if config.optimizer == "sgd" else 0.9
  beta = jnp.asarray(hyper.get("momentum", config.momentum) if use_momentum else default, lr.dtype)
  if config.optimizer != "sgd":
    return (2 + 2 * beta) / ((1 - beta) * lr)
  return (2 + 2 * beta) / ((1 + 2 * beta) * lr) if config.nesterov else (2 + 2 * beta) / lr


# ----------------------------------------------------------------------------- the engine


@dataclasses.dataclass(frozen=True)
class _Engine:
  """Jittable pieces of one training setup (functions are closed over, arrays passed in)."""

  train_apply: Callable
  apply: Callable
  config: TrainConfig
  batch_size: int
  steps_per_epoch: int
  total_steps: int
  num_train: int
  sweep_keys: tuple[str, ...]

  def tx(self, hyper):
    return make_optimizer(self.config, self.steps_per_epoch, self.total_steps, hyper)

  def init(self, params, state, hyper):
    return {"params": params, "state": state, "opt_state": self.tx(hyper).init(params),
            "step": jnp.zeros((), jnp.int32),
            # per-step mini-batch losses of the current epoch (part of the carry, so checkpoints keep them)
            "epoch_losses": jnp.zeros((self.steps_per_epoch,), jnp.result_type(float))}

  def segment(self, carry, hyper, key, x, y, epoch, offset, length: int):
    """``length`` steps of epoch ``epoch`` starting at batch ``offset`` (one scan)."""
    per_example = per_example_loss(self.config.loss)
    tx = self.tx(hyper)
    b, spe = self.batch_size, self.steps_per_epoch
    if b == self.num_train:
      order = jnp.arange(self.num_train)
    else:
      order = jax.random.permutation(jax.random.fold_in(key, epoch), self.num_train)
    batches = jax.lax.dynamic_slice_in_dim(order[: spe * b].reshape(spe, b), offset, length, axis=0)

    def loss_fn(p, s, xb, yb):
      out, new_s = self.train_apply(p, s, xb)
      return jnp.mean(per_example(out, yb)), new_s

    def step(c, idx):
      xb, yb = x[idx], y[idx]
      (loss, new_s), g = jax.value_and_grad(loss_fn, has_aux=True)(c["params"], c["state"], xb, yb)
      with jax.numpy_dtype_promotion("standard"):  # optax's adam bias correction computes float ** int32 count
        updates, opt_state = tx.update(g, c["opt_state"], c["params"])
      params = optax.apply_updates(c["params"], updates)
      return dict(c, params=params, state=new_s, opt_state=opt_state, step=c["step"] + 1), loss

    carry, losses = jax.lax.scan(step, carry, batches)
    buf = carry["epoch_losses"]
    carry["epoch_losses"] = jax.lax.dynamic_update_slice_in_dim(buf, losses.astype(buf.dtype), offset, axis=0)
    return carry

  def curvature(self, carry, hyper, key, warm, obj):
    """The curvature record at the carry's parameters, and the next warm start (``TrainConfig.curvature_*``).

    ``obj`` is the eval-mode objective of the measurement set; it takes the
    run's current model state. The loss includes coupled weight decay (the
    objective SGD and Adam descend); AdamW's decoupled decay is not part of it.
    """
    cfg = self.config
    h = {k: getattr(cfg, k) for k in SWEEPABLE}
    h.update(hyper)
    obj = dataclasses.replace(obj, state=carry["state"])
    loss: Any = obj
    if cfg.optimizer != "adamw" and (bool(cfg.weight_decay) or "weight_decay" in hyper):
      wd = h["weight_decay"]

      def loss(p):
        value = obj.value(p)
        return value + 0.5 * jnp.asarray(wd, value.dtype) * tree_lib.dot(p, p).astype(value.dtype)

    adam = cfg.optimizer != "sgd" and cfg.curvature_preconditioned
    step = carry["step"]
    # Its own stream: the data order uses fold_in(key, epoch) with small epochs.
    probe_key = jax.random.fold_in(jax.random.fold_in(key, _CURVATURE_STREAM), step)
    out = hessian.curvature_probe(probe_key, loss, carry["params"], carry["opt_state"] if adam else None,
                                  k=cfg.curvature_k, v0=warm["vectors"], tol=cfg.curvature_tol,
                                  v0_preconditioned=warm.get("preconditioned_vector"), trace=cfg.curvature_trace)
    lr = _schedule(cfg, self.steps_per_epoch, self.total_steps, h["learning_rate"])(step)
    record = {k: v for k, v in out.items() if k not in _WARM}
    record.update(learning_rate=lr, threshold=_stability_threshold(cfg, lr, hyper))
    like = lambda v: jax.tree.map(lambda a, p: a.astype(p.dtype), v, carry["params"])
    return record, {k: like(out[k]) for k in warm}

  def evaluate(self, params, state, obj_train, obj_test):
    out = {}
    for split, obj in (("train", obj_train), ("test", obj_test)):
      if obj is None:
        out[f"{split}_loss"] = out[f"{split}_accuracy"] = jnp.full((), jnp.nan)
        continue
      loss, metrics = obj.loss((params, state))
      out[f"{split}_loss"] = loss
      out[f"{split}_accuracy"] = metrics.get("accuracy", jnp.full((), jnp.nan, loss.dtype))
    return out


_CURVATURE_STREAM = 2**31 - 1
_WARM = ("vectors", "preconditioned_vector")


def _curvature_objective(engine: "_Engine", data, name: str) -> Objective:
  """Eval-mode objective over the parameters of the measurement set: ``curvature_examples`` evenly strided examples."""
  x, y = np.asarray(data[0]), np.asarray(data[1])
  n, m = x.shape[0], engine.config.curvature_examples
  idx = np.round(np.linspace(0, n - 1, n if m is None else min(n, m))).astype(np.int64)
  # the state is a stand-in: every measurement replaces it by the run's current state
  return Objective.from_stateful(engine.apply, {}, data=(x[idx], y[idx]), loss=engine.config.loss,
                                 batch_size=engine.config.eval_batch_size, name=f"{name}_curvature")


def _cold_start(engine: "_Engine", params: PyTree, num_runs_axes: int) -> dict[str, PyTree]:
  """All-zero warm starts (``curvature_probe`` then draws random ones), with the run axes of ``params``."""
  cfg = engine.config
  sizes = {"vectors": int(cfg.curvature_k)}
  if cfg.optimizer != "sgd" and cfg.curvature_preconditioned:
    sizes["preconditioned_vector"] = 1
  return {name: jax.tree.map(lambda p, n=n: jnp.zeros((*p.shape[:num_runs_axes], n, *p.shape[num_runs_axes:]),
                                                        p.dtype), params)
          for name, n in sizes.items()}


def _eval_objective(engine: "_Engine", data, name: str) -> Objective | None:
  """Eval-mode Objective over ``(params, state)`` pairs (the state varies per run, so it is an argument)."""
  if data is None:
    return None
  return Objective.from_stateful(_pair_apply(engine.apply), (), data=data, loss=engine.config.loss,
                                 batch_size=engine.config.eval_batch_size, name=name)


@functools.lru_cache(maxsize=128)
def _pair_apply(apply: Callable) -> Callable:
  """``apply`` over a ``(params, state)`` pair, one function object per ``apply`` (one jit cache)."""
  return lambda ps, _, x: apply(ps[0], ps[1], x)


def _map_leading(fn: Callable, num_mapped: int) -> Callable:
  """``fn`` applied along the leading axis of its first ``num_mapped`` arguments, one run after another (``lax.map``)."""

  def mapped(*args):
    return jax.lax.map(lambda head: fn(*head, *args[num_mapped:]), tuple(args[:num_mapped]))

  return mapped


@functools.lru_cache(maxsize=64)
def _compiled(engine: "_Engine", depth: int, runs: str = "vmap") -> tuple[Callable, Callable]:
  """Jitted segment and evaluation of an engine over ``depth`` run axes, cached across calls.

  Every run axis is a ``vmap``, except the outermost one with
  ``runs="sequential"``: a ``lax.map`` inside the same compiled call.
  """
  seg, ev = engine.segment, engine.evaluate
  for level in range(depth):
    if runs == "sequential" and level == depth - 1:
      seg, ev = _map_leading(seg, 3), _map_leading(ev, 2)
    else:
      seg = jax.vmap(seg, in_axes=(0, 0, 0, None, None, None, None, None))
      ev = jax.vmap(ev, in_axes=(0, 0, None, None))
  return jax.jit(seg, static_argnums=(7,)), jax.jit(ev)


@functools.lru_cache(maxsize=64)
def _compiled_curvature(engine: "_Engine", depth: int, runs: str = "vmap") -> Callable:
  """The jitted curvature probe over ``depth`` run axes (as :func:`_compiled`)."""
  fn = engine.curvature
  for level in range(depth):
    if runs == "sequential" and level == depth - 1:
      fn = _map_leading(fn, 4)
    else:
      fn = jax.vmap(fn, in_axes=(0, 0, 0, 0, None))
  return jax.jit(fn)


def _split_data(data: Dataset | tuple) -> tuple[tuple, tuple | None, str]:
  if isinstance(data, Dataset):
    return data.train, data.test, data.name
  if isinstance(data, (tuple, list)) and len(data) == 2:
    return tuple(data), None, "data"
  raise ValueError(f"data must be a Dataset or an (x, y) pair of training arrays; got {type(data).__name__}")


def _plan(start: int, spe: int, every: Sequence[int | None], stop: int) -> list[tuple[int, int]]:
  """Segments ``(first_step, length)`` from ``start`` to ``stop``, cut at epoch ends and at multiples of ``every``."""
  out, s = [], start
  while s < stop:
    nxt = min(stop, (s // spe + 1) * spe)
    for k in every:
      if k:
        nxt = min(nxt, (s // k + 1) * k)
    out.append((s, nxt - s))
    s = nxt
  return out


class DivergedError(ValueError):
  """Training produced a non-finite loss; raised at the first such step, before that state is checkpointed."""


def _check_finite(losses: np.ndarray, first: int, checkpoint_dir: Any) -> None:
  """Raises :class:`DivergedError` naming the first step (from ``first``) whose batch loss is not finite."""
  bad = np.flatnonzero(~np.isfinite(losses))
  if bad.size:
    step = first + int(bad[0]) + 1
    kept = (f"; the checkpoints in {os.fspath(checkpoint_dir)!r} are of earlier, finite steps" if checkpoint_dir
            is not None else "")
    raise DivergedError(f"training diverged: the batch loss of step {step} is {losses[bad[0]]} (not finite); lower "
                        f"the learning rate, check the data for NaN/inf, or add warm-up steps{kept}")


def _run(engine: _Engine, carry, hyper, key, data_train, data_test, name: str, *, vmapped: tuple[int, ...],
         snapshot_every: int | None, checkpoint_dir, checkpoint_every, stop_after_steps, spec, resume,
         runs: str = "vmap", stop_on_nonfinite: bool = False) -> tuple:
  """The Python driver shared by :func:`train` and :func:`train_many`.

  ``vmapped`` lists the leading run axes (``()`` for one run): the jitted
  segment and evaluation are wrapped in one ``vmap`` per axis. Python loops
  only over segments (epochs, cut at snapshot/checkpoint steps), never over runs.
  With ``stop_on_nonfinite`` (one run) a non-finite batch loss ends training
  with :class:`DivergedError`; many runs record NaN and go on (a sweep may
  diverge on purpose).
  """
  x, y = jnp.asarray(data_train[0]), jnp.asarray(data_train[1])
  obj_tr = _eval_objective(engine, data_train, name)
  obj_te = _eval_objective(engine, data_test, name + "_test")
  seg, ev = _compiled(engine, len(vmapped), runs)

  spe, total = engine.steps_per_epoch, engine.total_steps
  rows: dict[str, list] = {k: [] for k in ("epoch", "step", *History.METRICS)}
  traj: list[PyTree] = []
  traj_steps: list[int] = []
  start = 0
  if checkpoint_dir is not None:
    from . import checkpoint as _ckpt
  if resume and checkpoint_dir is not None:
    restored = _ckpt.restore_training(checkpoint_dir, carry)
    if restored is not None:
      carry, saved_key, old_rows = restored
      if not np.array_equal(jax.random.key_data(saved_key), jax.random.key_data(key)):
        raise ValueError(f"cannot resume from {checkpoint_dir!r}: it was trained with a different data key")
      start = int(np.asarray(carry["step"]).reshape(-1)[0])
      for k in rows:
        rows[k] = list(old_rows.get(k, []))
      if engine.config.curvature_every:
        rows.update({k: list(v) for k, v in old_rows.items() if k.startswith("curvature_")})
      if snapshot_every:
        old = _ckpt.load_trajectory(checkpoint_dir, carry["params"], max_step=start)
        if old is not None:
          traj_steps = [int(s) for s in old[0]]
          traj = [jax.tree.map(lambda a, i=i: a[i], old[1]) for i in range(len(traj_steps))]

  def snapshot(step):
    traj.append(jax.tree.map(np.asarray, carry["params"]))
    traj_steps.append(step)
    if checkpoint_dir is not None:
      _ckpt.save_snapshot(checkpoint_dir, step, carry["params"])

  lead = tuple(np.shape(np.asarray(carry["step"])))
  curvature_every = engine.config.curvature_every
  if curvature_every:
    probe = _compiled_curvature(engine, len(vmapped), runs)
    obj_curv = _curvature_objective(engine, data_train, name)
    # not checkpointed: a resumed run starts its next measurement cold (same values, to the tolerance)
    warm = _cold_start(engine, carry["params"], len(lead))

  def measure(step):
    nonlocal warm
    record, warm = probe(carry, hyper, key, warm, obj_curv)
    rows.setdefault("curvature_step", []).append(step)
    for k, v in record.items():
      rows.setdefault("curvature_" + k, []).append(np.asarray(v))

  if snapshot_every and start == 0:
    snapshot(0)
  if curvature_every and start == 0:
    measure(0)

  stop = total if stop_after_steps is None else min(total, start + int(stop_after_steps))
  for first, length in _plan(start, spe, (snapshot_every, checkpoint_every, curvature_every), stop):
    carry = seg(carry, hyper, key, x, y, first // spe, first % spe, length)
    now = first + length
    if stop_on_nonfinite:
      _check_finite(np.asarray(carry["epoch_losses"])[first % spe:first % spe + length], first, checkpoint_dir)
    if now % (spe * int(engine.config.eval_every)) == 0 or now == total:
      m = ev(carry["params"], carry["state"], obj_tr, obj_te)
      rows["epoch"].append(now / spe)
      rows["step"].append(now)
      for k in History.METRICS[:4]:
        rows[k].append(np.asarray(m[k]))
      done = now - (now - 1) // spe * spe  # steps of this epoch (fewer when `steps` ends mid-epoch)
      rows["batch_loss"].append(np.asarray(carry["epoch_losses"][..., :done].mean(axis=-1)))
    if snapshot_every and now % snapshot_every == 0:
      snapshot(now)
    if curvature_every and now % curvature_every == 0:
      measure(now)
    if checkpoint_dir is not None and ((checkpoint_every and now % checkpoint_every == 0) or now == stop):
      _ckpt.save_training(checkpoint_dir, carry, key, rows, spec=spec)

  hist: dict[str, Any] = {}
  for k, v in rows.items():
    if k.startswith("curvature_"):
      continue
    if k in ("epoch", "step"):
      hist[k] = np.asarray(v, np.int64 if k == "step" else np.float64)
    else:
      hist[k] = np.stack([np.asarray(r) for r in v], axis=-1) if v else np.zeros((*lead, 0))
  if snapshot_every:
    hist["trajectory"] = jax.tree.map(lambda *a: np.stack(a, axis=len(lead)), *traj) if traj else None
    hist["trajectory_step"] = np.asarray(traj_steps, np.int64)
  if curvature_every:
    curv = {k[len("curvature_"):]: v for k, v in rows.items() if k.startswith("curvature_")}
    hist["curvature"] = {"step": np.asarray(curv.pop("step", []), np.int64),
                         **{k: np.stack(v, axis=len(lead)) for k, v in curv.items()}}
  return carry, History(**hist)


def _engine(train_apply, apply, config: TrainConfig, num_train: int, sweep_keys=()) -> _Engine:
  if num_train < 1:
    raise ValueError("the training data is empty: expected at least one example")
  b, spe = _steps_per_epoch(num_train, config.batch_size)
  if spe < 1:
    raise ValueError(f"batch_size {config.batch_size} leaves no full batch in {num_train} examples")
  total = int(config.steps) if config.steps is not None else int(config.epochs) * spe
  return _Engine(train_apply, apply, config, b, spe, total, num_train, tuple(sweep_keys))


def _config(config: TrainConfig | Mapping | None, overrides: Mapping) -> TrainConfig:
  if config is None:
    config = TrainConfig()
  elif isinstance(config, Mapping):
    config = TrainConfig.from_dict(config)
  return dataclasses.replace(config, **overrides) if overrides else config


def train(key: jax.Array, model: Any, data: Dataset | tuple, config: TrainConfig | Mapping | None = None, *,
          snapshot_every: int | None = None, checkpoint_dir: str | os.PathLike | None = None,
          checkpoint_every: int | None = None, resume: bool = False, stop_after_steps: int | None = None,
          spec: Mapping | None = None, **overrides: Any) -> tuple[PyTree, PyTree, History]:
  """Trains one model with optax; returns ``(params, state, history)``.

  Args:
    key: ``jax.random.key`` (or int seed) of the data order (the model's
      initialisation is whatever ``model`` holds).
    model: an ``nnx.Module`` (split with :func:`jaxscape.adapters.nnx.split_train`), or a pure
      ``(apply, params, state)`` / ``(train_apply, apply, params, state)``.
    data: a :class:`~jaxscape.data.Dataset` or an ``(x, y)`` training pair.
    config: a :class:`TrainConfig` or dict; keyword ``overrides`` replace its fields.
    snapshot_every: keep the parameters every this many steps (and at step
      0) in ``history.trajectory`` (for PCA directions); also saved to
      ``checkpoint_dir`` when given.
    checkpoint_dir: directory for orbax checkpoints (see :mod:`jaxscape.checkpoint`);
      a checkpoint is written every ``checkpoint_every`` steps and at the end.
    resume: continue from the latest checkpoint in ``checkpoint_dir`` if there is one.
    stop_after_steps: stop after this many steps of this call (after
      checkpointing), as if interrupted; ``resume=True`` continues it.
    spec: model/dataset description written to ``spec.json`` with checkpoints.

  Returns:
    ``(params, state, history)``: plain-dict parameters and state, and a :class:`History`.

  Raises:
    DivergedError: at the first step whose batch loss is not finite (a NaN
      learning rate, exploding steps, NaN data); nothing of that step or later
      is checkpointed.
    ValueError: on bad settings, empty data, or a ``checkpoint_dir`` run that
      cannot be resumed.

  Example:
    >>> import jax
    >>> from jaxscape import data, models, train
    >>> ds = data.load("digits", num_train=200, num_test=100)
    >>> net = models.build("mlp", 0, in_features=64, widths=[16], out_features=10)
    >>> p, s, h = train.train(jax.random.key(1), net, ds, optimizer="sgd", learning_rate=0.5,
    ...                       momentum=0.9, batch_size=50, epochs=5)
    >>> bool(h.train_loss[-1] < h.train_loss[0])
    True
  """
  config = _config(config, overrides)
  key = jax.random.key(key) if isinstance(key, (int, np.integer)) else key
  train_apply, apply, params, state = as_pure(model)
  data_train, data_test, name = _split_data(data)
  engine = _engine(train_apply, apply, config, int(np.shape(data_train[0])[0]))
  carry = engine.init(params, state, {})
  with _run_lock(checkpoint_dir):
    carry, hist = _run(engine, carry, {}, key, data_train, data_test, name, vmapped=(),
                       snapshot_every=snapshot_every, checkpoint_dir=checkpoint_dir, checkpoint_every=checkpoint_every,
                       stop_after_steps=stop_after_steps, spec=spec, resume=resume, stop_on_nonfinite=True)
  return carry["params"], carry["state"], hist


def _run_lock(run_dir: str | os.PathLike | None) -> contextlib.AbstractContextManager:
  """The run directory's lock (:class:`jaxscape.io.RunLock`) for a whole training run; nothing without one."""
  return contextlib.nullcontext() if run_dir is None else _io.RunLock(run_dir)


def train_many(keys: jax.Array, init: Callable[[jax.Array], Any], data: Dataset | tuple,
               config: TrainConfig | Mapping | None = None, *, sweep: Mapping[str, Sequence[float]] | None = None,
               snapshot_every: int | None = None, runs: str = "vmap",
               **overrides: Any) -> tuple[PyTree, PyTree, History]:
  """Trains many seeds (and hyperparameter values) at once with ``vmap``.

  Run ``i`` splits ``keys[i]`` into ``(init_key, data_key)``, builds its
  model with ``init(init_key)`` and trains it with ``data_key`` exactly as
  ``train(data_key, init(init_key), data, config)`` would, but all runs go
  through one jitted, vmapped scan (no Python loop over seeds).

  Args:
    keys: ``[S]`` stacked keys (e.g. ``jax.random.split(key, 20)``).
    init: ``key -> nnx.Module`` (e.g. ``lambda k: models.build("mlp", k, ...)``);
      it is traced under vmap, so it must not branch on the key's value.
    data: the dataset, shared by all runs.
    config: training settings (as in :func:`train`).
    sweep: ``{name: values}`` for names in :data:`SWEEPABLE`; all lists
      have one length C and give C configurations, each trained for every seed.
    snapshot_every: as in :func:`train`; ``history.trajectory`` leaves are
      ``[S, T, ...]`` (``[C, S, T, ...]`` with a sweep). No checkpoints here:
      train_many keeps everything in memory.
    runs: ``"vmap"`` (default) batches the runs' operations; ``"sequential"``
      runs the seeds one after another (``lax.map``) inside the same compiled
      call. Same results up to float rounding; on a CPU, large-batch runs
      are faster sequentially (batched matmuls are slower there: full-batch
      MNIST-1D MLP, 5 seeds, 52 vs 82 ms per step).

  Returns:
    ``(params, state, history)`` with leading axes ``[S]``, or ``[C, S]`` with a sweep.

  Example:
    >>> import jax
    >>> from jaxscape import data, models, train
    >>> ds = data.load("synthetic", train_size=64, test_size=32, dim=4)
    >>> init = lambda k: models.build("mlp", k, in_features=4, widths=[8], out_features=3)
    >>> p, s, h = train.train_many(jax.random.split(jax.random.key(0), 4), init, ds,
    ...                            batch_size=16, epochs=2, sweep={"learning_rate": [0.1, 0.3]})
    >>> h.train_loss.shape
    (2, 4, 2)
  """
  from flax import nnx

  config = _config(config, overrides)
  keys = jnp.asarray(keys) if not isinstance(keys, jax.Array) else keys
  if keys.ndim != 1 or not jax.dtypes.issubdtype(keys.dtype, jax.dtypes.prng_key):
    if keys.ndim == 2 and keys.dtype == jnp.uint32:
      keys = jax.random.wrap_key_data(keys)
    else:
      raise ValueError(f"keys must be a 1-D array of jax.random keys (jax.random.split(key, n)); got {keys.shape} {keys.dtype}")
  sweep = dict(sweep or {})
  bad = sorted(set(sweep) - set(SWEEPABLE))
  if bad:
    raise ValueError(f"cannot sweep {bad}: only {list(SWEEPABLE)} vary inside one vmap")
  lengths = {k: len(v) for k, v in sweep.items()}
  if len(set(lengths.values())) > 1:
    raise ValueError(f"all sweep lists must have one length; got {lengths}")
  if runs not in ("vmap", "sequential"):
    raise ValueError(f"runs must be 'vmap' or 'sequential'; got {runs!r}")

  split = jax.vmap(jax.random.split)(keys)
  init_keys, data_keys = split[:, 0], split[:, 1]
  # The structure from an abstract model (no arrays computed), then all initial values in one vmap.
  template = nnx.eval_shape(lambda: init(init_keys[0]))
  train_apply, apply, _, _ = split_train(template)

  def pure_init(k):
    _, _, p, s = split_train(init(k))
    return p, s

  params, state = jax.vmap(pure_init)(init_keys)
  data_train, data_test, name = _split_data(data)
  engine = _engine(train_apply, apply, config, int(np.shape(data_train[0])[0]), tuple(sweep))
  hyper = {k: jnp.asarray(v, jnp.result_type(float)) for k, v in sweep.items()}
  if sweep:
    c, s_ = len(next(iter(sweep.values()))), keys.shape[0]
    params = jax.tree.map(lambda a: jnp.broadcast_to(a, (c, *a.shape)), params)
    state = jax.tree.map(lambda a: jnp.broadcast_to(a, (c, *a.shape)), state)
    data_keys = jnp.broadcast_to(data_keys, (c, s_))
    hyper = {k: jnp.broadcast_to(v[:, None], (c, s_)) for k, v in hyper.items()}
    carry = jax.vmap(jax.vmap(engine.init))(params, state, hyper)
    axes = (0, 0)
  else:
    carry = jax.vmap(engine.init, in_axes=(0, 0, None))(params, state, {})
    hyper = {}
    axes = (0,)
  carry, hist = _run(engine, carry, hyper, data_keys, data_train, data_test, name, vmapped=axes,
                     snapshot_every=snapshot_every, checkpoint_dir=None, checkpoint_every=None,
                     stop_after_steps=None, spec=None, resume=False, runs=runs)
  return carry["params"], carry["state"], hist


# ----------------------------------------------------------------------------- from a spec

_RUN_KEYS = ("seed", "snapshot_every", "checkpoint_every")


def _entry(spec: Mapping, part: str) -> tuple[str, dict]:
  e = spec.get(part)
  if isinstance(e, str):
    return e, {}
  if not isinstance(e, Mapping) or "name" not in e:
    raise ValueError(f"spec[{part!r}] must be {{'name': ..., 'kwargs': {{...}}}}; got {e!r}")
  kwargs = dict(e.get("kwargs", {}))
  kwargs.update({k: v for k, v in e.items() if k not in ("name", "kwargs")})
  return str(e["name"]), kwargs


def _fill_model_kwargs(name: str, kwargs: dict, ds: Dataset) -> dict:
  """Fills input/output sizes a model needs from the dataset when the spec leaves them out."""
  import inspect

  from . import models

  ctor = models.REGISTRY.get(name)
  if ctor is None:
    raise ValueError(f"unknown model {name!r}: expected one of {sorted(models.REGISTRY)}")
  accepted = inspect.signature(ctor.__init__).parameters
  shape = ds.input_shape
  outputs = ds.num_classes or (1 if ds.y_train.ndim == 1 else int(ds.y_train.shape[1]))
  fill = {"in_features": int(np.prod(shape)), "out_features": outputs, "num_classes": outputs}
  if len(shape) == 3:
    fill.update(in_channels=int(shape[-1]), image_size=[int(shape[0]), int(shape[1])])
  out = dict(kwargs)
  for k, v in fill.items():
    if k in accepted and k not in out:
      out[k] = v
  return out


def _run_files(out: str) -> list[str]:
  """What a training run wrote in ``out`` (its spec, history, checkpoints, snapshots)."""
  from . import checkpoint as _ckpt

  names = (_ckpt.SPEC_FILE, _ckpt.HISTORY_FILE, "checkpoints", "trajectory")
  return [name for name in names if os.path.lexists(os.path.join(out, name))]


def train_from_spec(spec: Mapping, out_dir: str | os.PathLike, *, resume: bool = True,
                    overwrite: bool = False) -> tuple[Any, History]:
  """Builds the model and dataset a spec names, trains, and checkpoints into ``out_dir``.

  The spec is ``{"model": {"name", "kwargs"}, "dataset": {"name", ...},
  "train": {...}}``: the model's constructor arguments under ``kwargs``,
  the dataset's :func:`jaxscape.data.load` arguments next to its name
  (a ``kwargs`` dict is accepted too; ``spec.json`` records them flat,
  so ``data.load(**spec["dataset"])`` reloads the data). ``train`` holds :class:`TrainConfig` fields plus
  ``seed`` (int, default 0: ``jax.random.split(key(seed))`` gives the init and
  data keys), ``snapshot_every`` and ``checkpoint_every`` (steps). Model
  sizes left out are filled from the dataset (``in_features``,
  ``out_features``/``num_classes``, ``in_channels``, ``image_size``). The
  completed spec is written to ``out_dir/spec.json`` with the checkpoints, so
  :func:`jaxscape.checkpoint.load_model` can rebuild the model from the
  directory alone. An interrupted run in ``out_dir`` is resumed when its
  spec is the same (all of it: model, data, every training setting, seed).
  With ``resume=False`` a run already in ``out_dir`` is refused (it is never
  continued or mixed with), unless ``overwrite=True``, which deletes it whole
  first.

  Returns:
    ``(model, history)``: the trained ``nnx.Module`` and its :class:`History`.

  Raises:
    ValueError: on a malformed spec, when ``out_dir`` holds a different run,
      or (``resume=False`` without ``overwrite``) any run.

  Example:
    >>> import tempfile
    >>> from jaxscape import train
    >>> spec = {"model": {"name": "mlp", "kwargs": {"widths": [16]}},
    ...         "dataset": {"name": "digits", "num_train": 200},
    ...         "train": {"optimizer": "adam", "learning_rate": 0.01, "batch_size": 50, "epochs": 2, "seed": 0}}
    >>> model, hist = train.train_from_spec(spec, tempfile.mkdtemp())
    >>> len(hist)
    2
  """
  from . import checkpoint as _ckpt
  from . import data as _data
  from . import models

  if not isinstance(spec, Mapping) or not {"model", "dataset"} <= set(spec):
    raise ValueError(f"spec must be a dict with 'model', 'dataset' and optionally 'train'; got {spec!r}")
  ds_name, ds_kwargs = _entry(spec, "dataset")
  m_name, m_kwargs = _entry(spec, "model")
  run = dict(spec.get("train", {}) or {})
  seed = int(run.pop("seed", 0))
  snapshot_every = run.pop("snapshot_every", None)
  checkpoint_every = run.pop("checkpoint_every", None)
  config = TrainConfig.from_dict(run)
  ds = _data.load(ds_name, **ds_kwargs)
  m_kwargs = _fill_model_kwargs(m_name, m_kwargs, ds)
  if ds_kwargs.get("data_dir") is not None:
    ds_kwargs["data_dir"] = os.path.abspath(os.fspath(ds_kwargs["data_dir"]))
  full = {"model": {"name": m_name, "kwargs": m_kwargs}, "dataset": {"name": ds_name, **ds_kwargs},
          "train": {**config.to_dict(), "seed": seed, "snapshot_every": snapshot_every,
                    "checkpoint_every": checkpoint_every}}
  full = json.loads(json.dumps(full))  # the JSON form, as recorded
  out = os.path.abspath(os.fspath(out_dir))
  with _run_lock(out):  # before the spec check: a run that starts meanwhile cannot slip past it
    found = _run_files(out)
    if found and overwrite:
      for name in found:
        path = os.path.join(out, name)
        shutil.rmtree(path) if os.path.isdir(path) and not os.path.islink(path) else os.remove(path)
    elif found and not resume:
      step = _ckpt.latest_step(out)
      raise ValueError(f"{out!r} holds a training run ({', '.join(found)}"
                       f"{'' if step is None else f'; last checkpoint: step {step}'}); refusing to continue or mix "
                       "with it: choose another out_dir (CLI: --out), or overwrite=True (--overwrite) to replace it")
    elif found and os.path.isfile(os.path.join(out, _ckpt.SPEC_FILE)):
      old = _ckpt.read_spec(out)
      if old != full:
        diffs = "; ".join(_io.config_diff(old, full)[:6])
        raise ValueError(f"{out!r} holds a run with a different spec ({diffs}); refusing to resume it: choose "
                         "another out_dir (CLI: --out), or overwrite=True (--overwrite) to replace it")
    k_init, k_data = jax.random.split(jax.random.key(seed))
    model = models.build(m_name, k_init, **m_kwargs)
    params, state, hist = train(k_data, model, ds, config, snapshot_every=snapshot_every, checkpoint_dir=out,
                                checkpoint_every=checkpoint_every, resume=resume, spec=full)
  return update(model, params, state), hist
