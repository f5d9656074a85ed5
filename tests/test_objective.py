"""Objective: exact full-data means, adapters and errors."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from jax.flatten_util import ravel_pytree

import jaxscape as js
from jaxscape import data, hessian, models, train, tree
from jaxscape.objective import l2_penalty, with_l2


def _data(n=13, d=3, classes=4, seed=0):
  rng = np.random.default_rng(seed)
  return rng.normal(size=(n, d)).astype(np.float32), rng.integers(0, classes, n)


def _linear_apply(p, x):
  return x @ p["w"] + p["b"][None]


def _params(d=3, classes=4, seed=1):
  rng = np.random.default_rng(seed)
  return {"w": jnp.asarray(rng.normal(size=(d, classes)), jnp.float32), "b": jnp.asarray(rng.normal(size=classes), jnp.float32)}


@pytest.mark.parametrize("batch_size", [1, 4, 5, 13, 100, None])
def test_full_data_mean_is_exact_for_any_batch_size(batch_size):
  x, y = _data()
  p = _params()
  obj = js.Objective.from_apply(_linear_apply, p, data=(x, y), batch_size=batch_size)
  loss, metrics = obj.loss(p)
  logits = x @ np.asarray(p["w"]) + np.asarray(p["b"])
  ref = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
  # float32 sums over 13 terms: 1e-6 relative
  np.testing.assert_allclose(loss, ref, rtol=1e-6)
  np.testing.assert_allclose(metrics["accuracy"], (logits.argmax(-1) == y).mean(), rtol=1e-6)
  assert obj.num_examples == 13
  assert float(obj.w.sum()) == 13.0


def test_objective_is_a_pytree_under_jit_and_grad():
  x, y = _data()
  p = _params()
  obj = js.Objective.from_apply(_linear_apply, p, data=(x, y), batch_size=5)
  loss = jax.jit(lambda o, q: o.value(q))(obj, p)
  np.testing.assert_allclose(loss, obj.value(p), rtol=1e-6)
  g = jax.grad(obj.value)(p)
  g_ref = jax.grad(lambda q: optax.softmax_cross_entropy_with_integer_labels(_linear_apply(q, x), y).mean())(p)
  js.tree.assert_allclose(g, g_ref, rtol=1e-5, atol=1e-7)


def test_batch_loss_and_mse(x64):
  rng = np.random.default_rng(0)
  x = rng.normal(size=(7, 2)); t = rng.normal(size=(7,))
  apply = lambda p, x: x @ p
  w = jnp.array([0.3, -0.2])
  obj = js.Objective.from_apply(apply, w, data=(x, t), loss="mse", batch_size=3)
  np.testing.assert_allclose(obj.value(w), np.mean((x @ np.asarray(w) - t) ** 2), rtol=1e-12)
  loss, metrics = obj.loss(w, (x[:2], t[:2]))
  np.testing.assert_allclose(loss, np.mean((x[:2] @ np.asarray(w) - t[:2]) ** 2), rtol=1e-12)
  assert metrics == {}


class _BNNet(nnx.Module):
  def __init__(self, rngs):
    self.dense = nnx.Linear(3, 5, rngs=rngs)
    self.bn = nnx.BatchNorm(5, rngs=rngs)
    self.out = nnx.Linear(5, 4, rngs=rngs)

  def __call__(self, x):
    return self.out(nnx.relu(self.bn(self.dense(x))))


def test_nnx_adapter_uses_eval_mode_and_keeps_model_unchanged():
  model = _BNNet(nnx.Rngs(0))
  # give the BatchNorm non-trivial running statistics
  model.bn.mean[...] = jnp.arange(5.0) * 0.1
  model.bn.var[...] = jnp.arange(1.0, 6.0)
  x, y = _data()
  obj, params = js.Objective.from_model(model, data=(x, y), batch_size=4)
  assert set(params) == {"dense", "bn", "out"}
  assert model.bn.use_running_average is False  # the module was not switched to eval
  assert obj.describe()["bn_policy"] == "frozen"
  model.eval()
  ref = optax.softmax_cross_entropy_with_integer_labels(model(jnp.asarray(x)), y).mean()
  np.testing.assert_allclose(obj.value(params), ref, rtol=1e-6)
  # moving params moves the loss; the running stats are fixed (frozen policy)
  moved = js.tree.scale(0.5, params)
  assert not np.isclose(float(obj.value(moved)), float(ref))


def test_with_data_and_errors():
  x, y = _data()
  p = _params()
  obj = js.Objective.from_apply(_linear_apply, p, data=(x, y), batch_size=4, name="train")
  test = obj.with_data((x[:5], y[:5]), name="test")
  assert test.describe()["dataset"] == "test" and test.num_examples == 5
  ref = optax.softmax_cross_entropy_with_integer_labels(x[:5] @ np.asarray(p["w"]) + np.asarray(p["b"]), y[:5]).mean()
  np.testing.assert_allclose(test.value(p), ref, rtol=1e-6)
  with pytest.raises(ValueError, match="same positive number of examples"):
    js.Objective.from_apply(_linear_apply, p, data=(x, y[:3]))
  with pytest.raises(ValueError, match="unknown loss"):
    js.Objective.from_apply(_linear_apply, p, data=(x, y), loss="hinge")
  with pytest.raises(ValueError, match="do not fit the loss"):
    js.Objective.from_apply(_linear_apply, {"w": jnp.zeros((5, 4)), "b": jnp.zeros(4)}, data=(x, y))
  with pytest.raises(ValueError, match="per-example shape"):
    obj.with_data((np.zeros((3, 7), np.float32), y[:3]))
  with pytest.raises(ValueError, match="batch_size"):
    js.Objective.from_apply(_linear_apply, p, data=(x, y), batch_size=0)


def test_nnx_objectives_of_one_structure_share_compilations():
  x, y = _data()
  a, pa = js.Objective.from_model(_BNNet(nnx.Rngs(0)), data=(x, y), batch_size=4)
  b, pb = js.Objective.from_model(_BNNet(nnx.Rngs(1)), data=(x, y), batch_size=4)
  assert a.apply is b.apply  # same static function: one jit cache entry
  value = jax.jit(lambda o, p: o.value(p))
  value(a, pa)
  before = value._cache_size()
  np.testing.assert_allclose(value(b, pb), b.value(pb), rtol=1e-6)
  assert value._cache_size() == before


# ----------------------------------------------------------------------------- L2 penalties


def _l2_objective(batch_size):
  rng = np.random.default_rng(0)
  x = rng.normal(size=(13, 3))
  y = rng.integers(0, 2, size=13).astype(np.int32)
  apply = lambda p, x: jnp.tanh(x @ p["w"]) @ p["v"]
  params = {"w": jnp.asarray(rng.normal(size=(3, 4))), "v": jnp.asarray(rng.normal(size=(4, 2)))}
  return js.Objective.from_apply(apply, params, data=(x, y), batch_size=batch_size), params


@pytest.mark.parametrize("batch_size", [None, 5])  # 5: a ragged, padded last batch
def test_l2_value_gradient_and_hessian_gain_the_penalty(x64, batch_size):
  obj, params = _l2_objective(batch_size)
  wd = 0.3
  reg = with_l2(obj, wd)
  sq = sum(float(jnp.sum(a**2)) for a in jax.tree.leaves(params))
  # value: exact to float64 rounding (rtol 1e-12)
  np.testing.assert_allclose(float(reg.value(params)), float(obj.value(params)) + 0.5 * wd * sq, rtol=1e-12)
  g, g0 = jax.grad(reg.value)(params), jax.grad(obj.value)(params)
  for a, b, p in zip(jax.tree.leaves(g), jax.tree.leaves(g0), jax.tree.leaves(params)):
    np.testing.assert_allclose(a, b + wd * p, rtol=1e-12, atol=1e-14)
  h, h0 = hessian.dense_hessian(reg, params), hessian.dense_hessian(obj, params)
  np.testing.assert_allclose(h, h0 + wd * np.eye(h.shape[0]), rtol=1e-10, atol=1e-12)
  # metrics are the unregularised model's
  np.testing.assert_allclose(reg.loss(params)[1]["accuracy"], obj.loss(params)[1]["accuracy"])
  assert reg.describe()["weight_decay"] == wd


def test_l2_batch_loss_and_zero_decay(x64):
  obj, params = _l2_objective(5)
  reg = with_l2(obj, 0.1)
  batch = (obj.x[0], obj.y[0], obj.w[0])
  np.testing.assert_allclose(float(reg.loss(params, batch)[0]),
                             float(obj.loss(params, batch)[0]) + float(l2_penalty(params, 0.1)), rtol=1e-12)
  np.testing.assert_allclose(float(with_l2(obj, 0.0).value(params)), float(obj.value(params)), rtol=1e-14)


def test_penalised_objectives_share_compiled_functions():
  obj, _ = _l2_objective(None)
  a, b = with_l2(obj, 0.1), with_l2(obj, 0.1)
  assert a.apply == b.apply and hash(a.apply) == hash(b.apply)
  assert a.per_example == b.per_example


def test_l2_negative_decay_is_refused():
  obj, _ = _l2_objective(None)
  with pytest.raises(ValueError, match="weight_decay must be >= 0"):
    with_l2(obj, -1.0)


# ----------------------------------------------------------------------------- from_stateful over train_many runs


def test_from_stateful_uses_each_runs_state_and_matches_training_history():
  ds = data.load("synthetic", train_size=96, test_size=32, dim=4)
  init = lambda k: models.build("mlp", k, in_features=4, widths=[8], out_features=3, batch_norm=True)  # noqa: E731
  p, s, h = train.train_many(jax.random.split(jax.random.key(3), 2), init, ds, optimizer="adam", learning_rate=1e-2,
                             batch_size=32, epochs=2)
  apply = js.adapters.split(init(jax.random.key(99))).apply  # any initialisation: only the structure is used
  objs = [js.Objective.from_stateful(apply, tree.select(s, i), data=ds.train, batch_size=40) for i in range(2)]
  for i, obj in enumerate(objs):
    loss, metrics = obj.loss(tree.select(p, i))
    # train_many's history is the exact eval-mode full-data loss with the run's own BN statistics (rtol 1e-5)
    np.testing.assert_allclose(loss, h.train_loss[i, -1], rtol=1e-5)
    np.testing.assert_allclose(metrics["accuracy"], h.train_accuracy[i, -1], rtol=1e-6)
  # same static fields: jitted measurements compile once for all runs
  assert jax.tree.structure(objs[0]) == jax.tree.structure(objs[1])
  # the other run's BN statistics give another loss: the state really is per run
  swapped = js.Objective.from_stateful(apply, tree.select(s, 1), data=ds.train, batch_size=40)
  assert abs(float(swapped.value(tree.select(p, 0))) - float(h.train_loss[0, -1])) > 1e-4
  test_obj = js.Objective.from_stateful(apply, tree.select(s, 1), data=ds.test, batch_size=1024)
  np.testing.assert_allclose(test_obj.value(tree.select(p, 1)), h.test_loss[1, -1], rtol=1e-5)


def test_from_model_of_a_stateless_model_is_its_own_loss():
  ds = data.load("synthetic", train_size=16, test_size=8, dim=4)
  net = models.build("mlp", 0, in_features=4, widths=[5], out_features=3)
  obj, params = js.Objective.from_model(net, data=ds.train, batch_size=None)
  logits = net(jnp.asarray(ds.x_train))
  ref = -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), jnp.asarray(ds.y_train)[:, None], 1))
  np.testing.assert_allclose(obj.value(params), ref, rtol=1e-6)


def test_from_stateful_matches_from_model_and_shares_the_static_apply():
  ds = data.load("digits", num_train=64, num_test=32)
  nets = [models.build("resnet", k, depth=8, num_classes=10, in_channels=1) for k in (0, 1)]
  objs, params = [], []
  for net in nets:
    _, apply, p, st = js.adapters.nnx.split_train(net)
    # perturb the BatchNorm statistics so that the state matters
    st = jax.tree.map(lambda a: a + 0.1 if jnp.issubdtype(a.dtype, jnp.floating) else a, st)
    js.adapters.nnx.update(net, p, st)
    objs.append(js.Objective.from_stateful(apply, st, p, data=ds.train, batch_size=24))
    params.append(p)
    ref, ref_p = js.Objective.from_model(net, data=ds.train, batch_size=24)
    np.testing.assert_allclose(objs[-1].value(p), ref.value(ref_p), rtol=1e-5)
  # same architecture: the static parts are equal, so compiled calls are shared
  s0 = jax.tree.structure(objs[0])
  assert s0 == jax.tree.structure(objs[1])
  assert dict(objs[0].describe())["bn_policy"] == "frozen"
  with pytest.raises(ValueError, match="do not fit the loss"):
    js.Objective.from_stateful(apply, st, params[1], data=(ds.x_train, ds.y_train[:, None].astype(np.float32) * np.ones((1, 3))),
                               loss="mse")


def test_one_batch_compiles_no_scan_and_many_batches_one(x64):
  """A single batch is summed without a ``lax.scan`` (a scan over zero batches would still compile the model a
  second time, and again in every HVP); several batches use one scan; both give the exact mean."""
  x, y = _data()
  p = jax.tree.map(lambda a: a.astype(jnp.float64), _params())
  logits = x.astype(np.float64) @ np.asarray(p["w"]) + np.asarray(p["b"])
  ref = float(optax.softmax_cross_entropy_with_integer_labels(logits, y).mean())
  for batch_size, scans in ((None, 0), (5, 1)):
    obj = js.Objective.from_apply(_linear_apply, p, data=(x.astype(np.float64), y), batch_size=batch_size)
    jaxpr = str(jax.make_jaxpr(obj.value)(p))
    assert jaxpr.count("scan[") == scans, (batch_size, jaxpr)
    np.testing.assert_allclose(float(obj.value(p)), ref, rtol=1e-12)  # float64 sums of 13 terms
    # the GGN sums its batches the same way: G v against the dense J^T H_out J / N
    v = jax.tree.map(lambda a: a[::-1] ** 2, p)  # not a constant shift of the logits (the GGN's null space)
    gv = hessian.hvp(obj, p, v, kind="ggn")
    flat, unravel = ravel_pytree(p)
    jac = jax.jacobian(lambda f: _linear_apply(unravel(f), x.astype(np.float64)).reshape(-1))(flat)  # [N*C, P]
    prob = jax.nn.softmax(jnp.asarray(logits), -1)
    h_out = jax.scipy.linalg.block_diag(*[jnp.diag(q) - jnp.outer(q, q) for q in prob]) / x.shape[0]
    np.testing.assert_allclose(ravel_pytree(gv)[0], jac.T @ h_out @ jac @ ravel_pytree(v)[0],
                               rtol=1e-10)
