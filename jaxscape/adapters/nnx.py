"""The ``flax.nnx`` adapter: the one splitter of an ``nnx.Module`` into pure functions.

Training (:mod:`jaxscape.train`), checkpoints (:mod:`jaxscape.checkpoint`)
and analysis (:meth:`jaxscape.Objective.from_model`) all split a module here,
so the eval-mode ``apply`` of one model structure is one cached function
object, and everything jitted over it compiles once per structure (seeds and
checkpoints of one architecture share compilations).

* eval mode: ``nnx.view(model, deterministic=True, use_running_average=True)``
  (Dropout off, BatchNorm on its running statistics);
* ``params``: the ``nnx.Param`` variables as a plain nested dict (Flax layout:
  Dense kernels ``(in, out)``, Conv kernels HWIO); everything else (BatchNorm
  statistics, RNG keys and counters of e.g. Dropout's ``nnx.Rngs``) is
  ``state``, never a trainable parameter.

Example:
  >>> from flax import nnx
  >>> import jax.numpy as jnp
  >>> apply, params, state, layout = split(nnx.Linear(3, 2, rngs=nnx.Rngs(0)))
  >>> apply(params, state, jnp.ones((4, 3))).shape
  (4, 2)
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import jax

from ..first_layer import FirstLayer
from ..tree import PyTree
from ._split import Split

__all__ = ["split", "split_train", "update", "first_layer", "recompute_stats"]


def _eval_view(model: Any) -> Any:
  from flax import nnx

  return nnx.view(model, deterministic=True, use_running_average=True, raise_if_not_found=False)


def _train_view(model: Any) -> Any:
  from flax import nnx

  return nnx.view(model, deterministic=False, use_running_average=False, raise_if_not_found=False)


def _parts(model: Any) -> tuple[Any, Any, Any, Any, Any]:
  """``(eval graphdef, params treedef, state treedef, params, state)`` of a module (plain dicts)."""
  from flax import nnx

  graphdef, p_st, s_st = nnx.split(_eval_view(model), nnx.Param, ...)
  params, state = nnx.to_pure_dict(p_st), nnx.to_pure_dict(s_st)
  p_def, s_def = jax.tree.structure(p_st), jax.tree.structure(s_st)
  if len(jax.tree.leaves(params)) != p_def.num_leaves:
    raise ValueError("could not convert the module's parameters to a plain dict")
  return graphdef, p_def, s_def, params, state


def split(model: Any) -> Split:
  """Splits a ``flax.nnx`` module into a pure eval-mode ``Split(apply, params, state, layout)``.

  ``apply(params, state, x)`` runs the module in eval mode; it is cached per
  model structure. The module is not modified.

  Example:
    >>> import jax.numpy as jnp, jaxscape as js
    >>> net = js.models.build("mlp", 0, in_features=3, widths=[4], out_features=2)
    >>> s = split(net)
    >>> s.apply(s.params, s.state, jnp.ones((5, 3))).shape
    (5, 2)
  """
  from ..directions import flax_layout

  graphdef, p_def, s_def, params, state = _parts(model)
  return Split(_eval_apply(graphdef, p_def, s_def), params, state, flax_layout)


def split_train(model: Any) -> tuple[Callable, Callable, PyTree, PyTree]:
  """Splits an ``nnx.Module`` into train- and eval-mode pure functions.

  Returns:
    ``(train_apply, apply, params, state)`` with
    ``train_apply(params, state, x) -> (outputs, new_state)`` (BatchNorm on
    batch statistics, running averages updated in ``new_state``; Dropout
    on), ``apply(params, state, x) -> outputs`` (eval mode, the same function
    object :func:`split` returns), and ``params`` / ``state`` plain nested
    dicts of the ``nnx.Param`` variables and of all other variables
    (BatchNorm statistics, RNG counters). The module is not modified.

  Example:
    >>> import jax.numpy as jnp
    >>> from jaxscape import models
    >>> net = models.build("mlp", 0, in_features=3, widths=[4], out_features=2, batch_norm=True)
    >>> train_apply, apply, params, state = split_train(net)
    >>> out, new_state = train_apply(params, state, jnp.ones((5, 3)))
    >>> sorted(new_state["norms"][0])
    ['mean', 'var']
  """
  from flax import nnx

  g_ev, p_def, s_def, params, state = _parts(model)
  g_tr, _, _ = nnx.split(_train_view(model), nnx.Param, ...)
  return _train_apply(g_tr, p_def, s_def), _eval_apply(g_ev, p_def, s_def), params, state


def _unflatten(p_def: Any, s_def: Any, p: PyTree, s: PyTree) -> tuple[Any, Any]:
  return jax.tree.unflatten(p_def, jax.tree.leaves(p)), jax.tree.unflatten(s_def, jax.tree.leaves(s))


@functools.lru_cache(maxsize=256)
def _eval_apply(graphdef: Any, p_def: Any, s_def: Any) -> Callable:
  """One eval-mode ``apply`` per model structure, so that objectives of models that differ
  only in their weights (seeds, checkpoints) share jit compilations."""
  from flax import nnx

  def apply(p: PyTree, s: PyTree, x: jax.Array) -> jax.Array:
    return nnx.merge(graphdef, *_unflatten(p_def, s_def, p, s))(x)

  return apply


@functools.lru_cache(maxsize=256)
def _train_apply(graphdef: Any, p_def: Any, s_def: Any) -> Callable:
  """One train-mode ``apply -> (outputs, new_state)`` per model structure."""
  from flax import nnx

  def train_apply(p: PyTree, s: PyTree, x: jax.Array) -> tuple[jax.Array, PyTree]:
    m = nnx.merge(graphdef, *_unflatten(p_def, s_def, p, s))
    out = m(x)
    _, _, new_s = nnx.split(m, nnx.Param, ...)
    return out, jax.tree.unflatten(jax.tree.structure(s), jax.tree.leaves(new_s))

  return train_apply


def update(model: Any, params: PyTree, state: PyTree | None = None) -> Any:
  """Writes ``params`` (and ``state``) back into an ``nnx.Module`` in place; returns it."""
  from flax import nnx

  _, p_st, s_st = nnx.split(model, nnx.Param, ...)
  nnx.replace_by_pure_dict(p_st, params)
  nnx.update(model, p_st)
  if state is not None:
    nnx.replace_by_pure_dict(s_st, state)
    nnx.update(model, s_st)
  return model


def as_pure(model: Any) -> tuple[Callable, Callable, PyTree, PyTree]:
  """``(train_apply, apply, params, state)`` of an ``nnx.Module`` or of a pure tuple.

  A pure model is ``(apply, params, state)`` (trained with its state fixed)
  or ``(train_apply, apply, params, state)``.
  """
  if isinstance(model, tuple):
    if len(model) == 4:
      return model
    if len(model) == 3:
      apply, params, state = model
      return _FixedState(apply), apply, params, state
    raise ValueError(f"a pure model is (apply, params, state) or (train_apply, apply, params, state); got a tuple of {len(model)}")
  return split_train(model)


class _FixedState:
  """``train_apply`` of a pure eval ``apply``: the state never changes (hashable, compares by ``apply``)."""

  def __init__(self, apply: Callable):
    self.apply = apply

  def __call__(self, p: PyTree, s: PyTree, x: jax.Array) -> tuple[jax.Array, PyTree]:
    return self.apply(p, s, x), s

  def __eq__(self, other: Any) -> bool:
    return isinstance(other, _FixedState) and other.apply == self.apply

  def __hash__(self) -> int:
    return hash((_FixedState, self.apply))


def first_layer(model: Any) -> FirstLayer | None:
  """The :class:`~jaxscape.FirstLayer` of a ``flax.nnx`` module that declares one, else ``None``.

  A module declares its first layer with two methods: ``first_layer()``
  returning ``(path, prepare)`` (the attribute path of a linear sub-module,
  e.g. ``("layers", 0)``, and a parameter-free function applied to the inputs
  before it, e.g. flattening) or ``None``, and ``after_first_layer(z)``
  running the rest of the network. jaxscape's ``MLP`` (with or without
  BatchNorm), ``ResidualMLP``, ``KeskarF1`` and ``ResNet`` do. The sub-module
  must hold only ``nnx.Param`` variables (a Dense or Conv layer).

  Example:
    >>> import jaxscape as js
    >>> net = js.models.build("mlp", 0, in_features=64, widths=[32], out_features=10)
    >>> first_layer(net).name
    'MLP.layers.0'
  """
  from flax import nnx

  spec = getattr(model, "first_layer", None)
  found = spec() if callable(spec) and callable(getattr(model, "after_first_layer", None)) else None
  if found is None:
    return None
  path, prepare = found
  sub = model
  for k in path:
    sub = getattr(sub, k) if isinstance(k, str) else sub[k]
  sub_graphdef, sub_params, sub_other = nnx.split(_eval_view(sub), nnx.Param, ...)
  if jax.tree.leaves(sub_other):
    return None  # a first layer with state (e.g. a normalisation) is not a linear map of its parameters
  graphdef, p_def, s_def, _, _ = _parts(model)
  name = ".".join([type(model).__name__, *(str(k) for k in path)])
  return _first_layer(graphdef, p_def, s_def, sub_graphdef, jax.tree.structure(sub_params), tuple(path), prepare, name)


@functools.lru_cache(maxsize=256)
def _first_layer(graphdef, p_def, s_def, sub_graphdef, sub_treedef, path, prepare, name) -> FirstLayer:
  """One :class:`FirstLayer` per model structure (stable identity for jit caches)."""
  from flax import nnx

  def linear(first: PyTree, x: jax.Array) -> jax.Array:
    return nnx.merge(sub_graphdef, jax.tree.unflatten(sub_treedef, jax.tree.leaves(first)))(prepare(x))

  def rest(p: PyTree, s: PyTree, z: jax.Array) -> jax.Array:
    return nnx.merge(graphdef, *_unflatten(p_def, s_def, p, s)).after_first_layer(z)

  return FirstLayer.at(path, linear, rest, name)


def recompute_stats(model: Any) -> Callable:
  """``stats(params, state, xs) -> state``: BatchNorm statistics re-estimated on calibration batches.

  ``xs`` is ``[k, B, ...]``: ``k`` batches run through the model in train
  mode (each BatchNorm normalises with its batch's statistics, as in
  training), and every BatchNorm's running ``mean`` / ``var`` become the exact
  mean and (biased, as ``nnx.BatchNorm``) variance of its inputs over all
  ``k·B`` examples: per-batch moments combined by the law of total variance,
  not an exponential moving average (whose value would depend on the
  momentum and on the batch order). Other state (RNG counters) is unchanged.
  Cached per model structure.
  """
  from flax import nnx

  view = _train_view(model)
  for _, m in nnx.iter_graph(view):
    if isinstance(m, nnx.BatchNorm):
      m.momentum = 0.0  # the running statistics become the batch's own: exactly 0·old + 1·batch
  g_tr, _, _ = nnx.split(view, nnx.Param, ...)
  _, p_def, s_def, _, _ = _parts(model)
  return _recompute_stats(_train_apply(g_tr, p_def, s_def))


@functools.lru_cache(maxsize=256)
def _recompute_stats(batch_stats_apply: Callable) -> Callable:
  return _RecomputeStats(batch_stats_apply)


class _RecomputeStats:
  """Hashable ``stats(params, state, xs) -> state`` over a momentum-0 train-mode apply."""

  def __init__(self, batch_stats_apply: Callable):
    self.batch_stats_apply = batch_stats_apply

  def __eq__(self, other: Any) -> bool:
    return isinstance(other, _RecomputeStats) and other.batch_stats_apply == self.batch_stats_apply

  def __hash__(self) -> int:
    return hash((_RecomputeStats, self.batch_stats_apply))

  def __call__(self, params: PyTree, state: PyTree, xs: jax.Array) -> PyTree:
    return combine_moments(lambda x: self.batch_stats_apply(params, state, x)[1], state, xs)


def combine_moments(batch_state: Callable[[jax.Array], PyTree], state: PyTree, xs: jax.Array) -> PyTree:
  """Exact ``mean`` / ``var`` over ``k`` batches from each batch's own moments (law of total variance).

  ``batch_state(x)`` returns the state holding one batch's statistics; every
  dict with ``mean`` and ``var`` entries (BatchNorm statistics of nnx and
  linen) gets ``mean = avg_i mean_i`` and ``var = avg_i (var_i + mean_i²) −
  mean²``; other leaves keep their values in ``state``.
  """
  import jax.numpy as jnp

  def moments(x):
    return _pick(batch_state(x), lambda m, v: (m, v + jnp.square(m)))

  first = moments(xs[0])
  total, _ = jax.lax.scan(lambda c, x: (jax.tree.map(jnp.add, c, moments(x)), None), first, xs[1:])
  k = xs.shape[0]
  averaged = jax.tree.map(lambda a: a / k, total)
  return _put(state, averaged, lambda m, m2: (m, m2 - jnp.square(m)))


def _is_stats(d: Any) -> bool:
  return isinstance(d, dict) and "mean" in d and "var" in d


def _pick(state: PyTree, f: Callable) -> PyTree:
  """The ``(mean, var)`` dicts of ``state`` mapped through ``f``, by path (a plain nested dict)."""
  if _is_stats(state):
    return f(state["mean"], state["var"])
  if isinstance(state, dict):
    return {k: _pick(v, f) for k, v in state.items() if _has_stats(v)}
  return None


def _has_stats(t: Any) -> bool:
  return _is_stats(t) or (isinstance(t, dict) and any(_has_stats(v) for v in t.values()))


def _put(state: PyTree, picked: PyTree, f: Callable) -> PyTree:
  if _is_stats(state):
    mean, var = f(*picked)
    return {**state, "mean": mean.astype(state["mean"].dtype), "var": var.astype(state["var"].dtype)}
  if isinstance(state, dict):
    return {k: (_put(v, picked[k], f) if k in picked else v) for k, v in state.items()}
  return state
