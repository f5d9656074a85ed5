"""Adapters (nnx, linen, equinox): one pure form; per-leaf layouts for filter normalisation; BatchNorm recompute."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import jaxscape as js
from jaxscape import directions as jd
from jaxscape import models
from jaxscape.adapters import nnx as nnx_adapter


def _data(shape, n=8, classes=4, seed=0):
  rng = np.random.default_rng(seed)
  return rng.normal(size=(n, *shape)).astype(np.float32), rng.integers(0, classes, n).astype(np.int32)


def _ce(logits, y):
  return float(jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, y)))


def _norms(w, out_axes):
  """NumPy reference: the norm of every filter (one index along out_axes), float64."""
  w = np.asarray(w, np.float64)
  other = tuple(i for i in range(w.ndim) if i not in out_axes)
  return np.sqrt((w**2).sum(axis=other))


# ----------------------------------------------------------------------------- nnx


class _NnxConvNet(nnx.Module):
  def __init__(self, rngs):
    self.conv = nnx.Conv(1, 3, (3, 3), rngs=rngs)
    self.bn = nnx.BatchNorm(3, rngs=rngs)
    self.head = nnx.Linear(6 * 6 * 3, 4, rngs=rngs)

  def __call__(self, x):
    h = jax.nn.relu(self.bn(self.conv(x)))
    return self.head(h.reshape(h.shape[0], -1))


def test_nnx_conv_net_loss_at_origin_and_filter_normalisation():
  x, y = _data((6, 6, 1))
  net = _NnxConvNet(nnx.Rngs(0))
  net.bn.mean[...] = jnp.full(3, 0.2)  # non-trivial running statistics
  obj, params = js.Objective.from_model(net, data=(x, y), batch_size=3)
  net.eval()
  np.testing.assert_allclose(obj.value(params), _ce(net(jnp.asarray(x)), y), rtol=1e-6)  # float32
  assert obj.layout is jd.flax_layout and obj.describe()["bn_policy"] == "frozen"
  d = js.random_directions(jax.random.key(0), params, n=1, layout=obj.layout)[0]
  # a Conv kernel is HWIO: one filter per output channel (last axis)
  np.testing.assert_allclose(_norms(d["conv"]["kernel"], (3,)), _norms(params["conv"]["kernel"], (3,)), rtol=1e-5)
  for leaf in (d["conv"]["bias"], d["bn"]["scale"], d["bn"]["bias"], d["head"]["bias"]):
    assert not np.any(np.asarray(leaf))  # biases and norms ignored by role


def test_nnx_eval_apply_is_one_function_for_training_checkpoints_and_analysis():
  a = models.build("mlp", 0, in_features=4, widths=[8], out_features=3, batch_norm=True)
  b = models.build("mlp", 1, in_features=4, widths=[8], out_features=3, batch_norm=True)
  s = nnx_adapter.split(a)
  assert s.apply is nnx_adapter.split_train(a)[1] is nnx_adapter.split(b).apply
  oa, _ = js.Objective.from_model(a, data=_data((4,), classes=3))
  assert oa.apply is s.apply


# ----------------------------------------------------------------------------- linen


def test_linen_conv_net_with_batchnorm():
  import flax.linen as nn

  class Net(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool = True):
      h = nn.Conv(3, (3, 3))(x)
      h = nn.relu(nn.BatchNorm(use_running_average=not train, momentum=0.9)(h))
      return nn.Dense(4)(h.reshape(h.shape[0], -1))

  x, y = _data((6, 6, 1))
  module = Net()
  variables = module.init(jax.random.key(0), jnp.asarray(x), train=False)
  _, updates = module.apply(variables, jnp.asarray(x), train=True, mutable=["batch_stats"])  # moved statistics
  variables = {"params": variables["params"], **updates}
  from jaxscape.adapters import linen

  assert linen.eval_kwargs(module) == (("train", False),)
  obj, params = js.Objective.from_model(module, variables=variables, data=(x, y), batch_size=3)
  ref = module.apply(variables, jnp.asarray(x), train=False)
  np.testing.assert_allclose(obj.value(params), _ce(ref, y), rtol=1e-6)  # float32
  d = js.random_directions(jax.random.key(1), params, n=1, layout=obj.layout)[0]
  np.testing.assert_allclose(_norms(d["Conv_0"]["kernel"], (3,)), _norms(params["Conv_0"]["kernel"], (3,)), rtol=1e-5)
  np.testing.assert_allclose(_norms(d["Dense_0"]["kernel"], (1,)), _norms(params["Dense_0"]["kernel"], (1,)), rtol=1e-5)
  for leaf in (d["Conv_0"]["bias"], d["BatchNorm_0"]["scale"], d["BatchNorm_0"]["bias"]):
    assert not np.any(np.asarray(leaf))
  # one apply per module: equal modules share one compiled function
  assert js.adapters.split(Net(), variables).apply == obj.apply
  with pytest.raises(ValueError, match="pass its variables"):
    js.adapters.split(module)


# ----------------------------------------------------------------------------- equinox


@functools.cache
def _eqx_class(extra):
  """One class per variant (a class defined per call would be another architecture)."""
  eqx = pytest.importorskip("equinox")

  class Net(eqx.Module):
    conv: eqx.nn.Conv2d
    lin: eqx.nn.Linear
    alpha: jax.Array | None

    def __init__(self, key):
      k1, k2 = jax.random.split(key)
      self.conv = eqx.nn.Conv2d(1, 3, 3, padding=1, key=k1)
      self.lin = eqx.nn.Linear(3 * 6 * 6, 4, key=k2)
      self.alpha = jnp.ones(()) if extra else None

    def __call__(self, x):  # one example, CHW
      h = jax.nn.relu(self.conv(x)).reshape(-1)
      out = self.lin(h)
      return out * self.alpha if self.alpha is not None else out

  return Net


def _eqx_net(key, extra=False):
  return _eqx_class(extra)(key)


def test_equinox_conv_net_loss_at_origin_and_filter_normalisation():
  model = _eqx_net(jax.random.key(0))
  x, y = _data((1, 6, 6))
  obj, params = js.Objective.from_model(model, data=(x, y), batch_size=3)
  np.testing.assert_allclose(obj.value(params), _ce(jax.vmap(model)(jnp.asarray(x)), y), rtol=1e-6)  # float32
  d = js.random_directions(jax.random.key(2), params, n=1, layout=obj.layout)[0]
  # equinox weights are (out, in, ...): one filter per index of the first axis
  np.testing.assert_allclose(_norms(d.conv.weight, (0,)), _norms(params.conv.weight, (0,)), rtol=1e-5)
  np.testing.assert_allclose(_norms(d.lin.weight, (0,)), _norms(params.lin.weight, (0,)), rtol=1e-5)
  assert not np.any(np.asarray(d.conv.bias)) and not np.any(np.asarray(d.lin.bias))
  assert js.adapters.split(_eqx_net(jax.random.key(5))).apply == obj.apply  # same architecture, one apply


def test_equinox_uncovered_leaf_is_an_error_naming_it_and_filter_axes_covers_it():
  model = _eqx_net(jax.random.key(0), extra=True)
  obj, params = js.Objective.from_model(model, data=_data((1, 6, 6)), batch_size=4)
  with pytest.raises(ValueError, match=r"no layout rule covers parameter leaf 'alpha'.*filter_axes=\{'alpha'"):
    js.random_directions(jax.random.key(0), params, layout=obj.layout)
  dirs = js.random_directions(jax.random.key(0), params, layout=obj.layout, filter_axes={"alpha": ()})
  np.testing.assert_allclose(abs(float(dirs[0].alpha)), 1.0, rtol=1e-5)  # whole-leaf norm = |alpha|
  assert dirs.info["filter_axes"] == {"alpha": []} and dirs.info["layout"] == "_EqxLayout"


# ----------------------------------------------------------------------------- roles and errors


def test_biasbn_ignores_by_role_not_ndim():
  # a logistic regression's 1-D weight vector is a weight: it moves
  params = {"w": jnp.arange(1.0, 4.0), "bias": jnp.ones(())}
  d = js.random_directions(jax.random.key(0), params, n=1)[0]
  np.testing.assert_allclose(np.linalg.norm(d["w"]), np.linalg.norm(params["w"]), rtol=1e-6)
  assert float(d["bias"]) == 0.0
  # attention-style biases of any ndim are biases
  d = js.random_directions(jax.random.key(0), {"kernel": jnp.ones((3, 2)), "bias": jnp.ones((2, 4))}, n=1)[0]
  assert not np.any(np.asarray(d["bias"]))


def test_all_zero_direction_is_an_error():
  with pytest.raises(ValueError, match="leaves no parameter to move"):
    js.random_directions(jax.random.key(0), {"bias": jnp.ones(3), "norm": {"scale": jnp.ones(3)}})
  with pytest.raises(ValueError, match="direction 0 is all zero"):
    js.random_directions(jax.random.key(0), {"kernel": jnp.zeros((3, 2)), "bias": jnp.ones(2)})
  with pytest.raises(ValueError, match="filter_axes names leaves the parameters do not have"):
    js.random_directions(jax.random.key(0), {"kernel": jnp.ones((3, 2))}, filter_axes={"kernal": (0,)})


def _old_normalize(direction, params, ignore):
  """The shape-only rule of jaxscape before layouts: last axis for ndim >= 2, whole leaf (or ignored) for ndim <= 1."""
  def filt(x):
    if x.ndim <= 1:
      return jnp.linalg.norm(x)
    return jnp.sqrt(jnp.sum(jnp.square(x), axis=tuple(range(x.ndim - 1)), keepdims=True))

  keep = lambda p: not (ignore == "biasbn" and np.ndim(p) <= 1)  # noqa: E731
  direction = jax.tree.map(lambda d, p: d if keep(p) else jnp.zeros_like(d), direction, params)
  return jax.tree.map(lambda d, p: d * (filt(p) / (filt(d) + 1e-10)), direction, params)


@pytest.mark.parametrize("name,kwargs", [
    ("mlp", dict(in_features=4, widths=[8, 6], out_features=3, batch_norm=True)),
    ("mlp", dict(in_features=4, widths=[8], out_features=3)),
    ("residual_mlp", dict(in_features=4, width=8, depth=2, out_features=2)),
    ("resnet", dict(depth=8, in_channels=1, width=1)),
    ("keskar_f1", dict(in_features=4, width=8, depth=2)),
    ("keskar_c1", dict(image_size=8, in_channels=1, channels=(2, 2), dense=(4, 4))),
    ("linear", dict(in_features=4, widths=[3, 3], out_features=2)),
])
def test_builtin_models_directions_are_bit_identical_to_the_shape_rule(name, kwargs):
  params = js.adapters.split(models.build(name, 0, **kwargs)).params
  for ignore in ("biasbn", None):
    raw = js.tree.normal_like(jax.random.key(3), params)
    new, old = jd.normalize(raw, params, "filter", ignore), _old_normalize(raw, params, ignore)
    for a, b in zip(jax.tree.leaves(new), jax.tree.leaves(old)):
      np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert "layout" not in js.random_directions(jax.random.key(0), params).info  # default layout: configs unchanged


# ----------------------------------------------------------------------------- transformer pieces (issue 13)


class _TinyLM(nnx.Module):
  def __init__(self, rngs):
    self.embed = nnx.Embed(10, 8, rngs=rngs)
    self.attn = nnx.MultiHeadAttention(num_heads=2, in_features=8, qkv_features=8, decode=False, rngs=rngs)
    self.norm = nnx.LayerNorm(8, rngs=rngs)
    self.drop = nnx.Dropout(0.2, rngs=nnx.Rngs(dropout=1))
    self.head = nnx.Linear(8, 10, rngs=rngs)

  def __call__(self, tokens):
    h = self.embed(tokens)
    h = self.norm(h + self.drop(self.attn(h)))
    return self.head(h.mean(axis=1))


def test_transformer_pieces_are_normalised_per_row_and_head_and_surface_runs():
  model = _TinyLM(nnx.Rngs(0))
  rng = np.random.default_rng(0)
  tokens, y = rng.integers(0, 10, (6, 5)).astype(np.int32), rng.integers(0, 10, 6).astype(np.int32)
  obj, params = js.Objective.from_model(model, data=(tokens, y), batch_size=3)
  assert not any(jax.dtypes.issubdtype(a.dtype, jax.dtypes.prng_key) for a in jax.tree.leaves(params))
  assert any(jax.dtypes.issubdtype(a.dtype, jax.dtypes.prng_key) for a in jax.tree.leaves(obj.state))
  model.eval()
  np.testing.assert_allclose(obj.value(params), _ce(model(jnp.asarray(tokens)), y), rtol=1e-6)  # float32
  dirs = js.random_directions(jax.random.key(1), params, n=2, layout=obj.layout)
  d = dirs[0]
  np.testing.assert_allclose(_norms(d["embed"]["embedding"], (0,)), _norms(params["embed"]["embedding"], (0,)),
                             rtol=1e-5)  # per token row
  for proj in ("query", "key", "value"):  # kernels (d, heads, head_dim): per (head, unit)
    np.testing.assert_allclose(_norms(d["attn"][proj]["kernel"], (1, 2)), _norms(params["attn"][proj]["kernel"], (1, 2)),
                               rtol=1e-5)
    assert params["attn"][proj]["bias"].shape == (2, 4) and not np.any(np.asarray(d["attn"][proj]["bias"]))
  np.testing.assert_allclose(_norms(d["attn"]["out"]["kernel"], (2,)), _norms(params["attn"]["out"]["kernel"], (2,)),
                             rtol=1e-5)
  assert not np.any(np.asarray(d["norm"]["scale"])) and not np.any(np.asarray(d["norm"]["bias"]))
  surf = js.loss_surface(obj, params, dirs, x=(-0.5, 0.5, 3), y=(-0.5, 0.5, 3), quiet=True)
  assert np.all(np.isfinite(surf.loss))
  np.testing.assert_allclose(surf.loss[1, 1], obj.value(params), rtol=1e-5)


# ----------------------------------------------------------------------------- objectives share compilations


def test_from_apply_objectives_of_one_function_share_one_compilation():
  traces = []

  def apply(p, x):
    traces.append(1)
    return x @ p

  x, y = _data((3,), n=6, classes=2)
  p = jnp.ones((3, 2))
  a = js.Objective.from_apply(apply, data=(x, y), batch_size=3)
  b = js.Objective.from_apply(apply, data=(x + 1.0, y), batch_size=3)
  value = jax.jit(lambda o, q: o.value(q))
  value(a, p)
  n = len(traces)
  value(b, p)
  assert len(traces) == n  # a cache hit: the apply wrappers compare equal
  assert a.apply == b.apply and hash(a.apply) == hash(b.apply)


# ----------------------------------------------------------------------------- BatchNorm recompute


class _BNNet(nnx.Module):
  def __init__(self, rngs):
    self.fc = nnx.Linear(3, 5, rngs=rngs)
    self.bn = nnx.BatchNorm(5, momentum=0.9, rngs=rngs)
    self.head = nnx.Linear(5, 2, rngs=rngs)

  def __call__(self, x):
    return self.head(jax.nn.relu(self.bn(self.fc(x))))


def test_recompute_reestimates_batchnorm_statistics_at_every_point():
  x, y = _data((3,), n=10, classes=2)
  net = _BNNet(nnx.Rngs(0))
  obj, params = js.Objective.from_model(net, data=(x, y), batch_size=4, bn_policy="recompute", recompute_batches=2)
  assert obj.describe()["bn_policy"] == "recompute" and obj.describe()["recompute_batches"] == 2
  assert obj.first_layer is None
  frozen, _ = js.Objective.from_model(net, data=(x, y), batch_size=4)
  _, _, state, _ = nnx_adapter.split(net)

  def manual(p):
    # the BN input over the calibration set (the first 2 batches of 4 = x[:8]), its exact mean and biased variance
    h = np.asarray(x[:8], np.float64) @ np.asarray(p["fc"]["kernel"], np.float64) + np.asarray(p["fc"]["bias"])
    st = jax.tree.map(lambda a: a, state)
    st["bn"]["mean"], st["bn"]["var"] = jnp.asarray(h.mean(0), jnp.float32), jnp.asarray(h.var(0), jnp.float32)
    return dataclasses.replace(frozen, state=st).value(p)

  d = js.random_directions(jax.random.key(0), params, n=1)
  shifted = js.tree.axpy(0.7, d[0], params)
  for p in (params, shifted):
    np.testing.assert_allclose(obj.value(p), manual(p), rtol=1e-5)  # float32 statistics: 1e-5
  assert abs(float(obj.value(shifted)) - float(frozen.value(shifted))) > 1e-4  # the statistics really moved
  surf = js.loss_surface(obj, params, d, x=(0.0, 0.7, 2), quiet=True)  # vmapped over points
  np.testing.assert_allclose(surf.loss, [manual(params), manual(shifted)], rtol=1e-5)
  with pytest.raises(ValueError, match="recompute_batches=3 needs 3 full batches"):
    js.Objective.from_model(net, data=(x, y), batch_size=4, bn_policy="recompute", recompute_batches=3)
