"""regularize: L2-penalised objectives, checked against hand-written float64 references."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxscape as js
from jaxscape import hessian, regularize


def _objective(batch_size):
  rng = np.random.default_rng(0)
  x = rng.normal(size=(13, 3))
  y = rng.integers(0, 2, size=13).astype(np.int32)
  apply = lambda p, x: jnp.tanh(x @ p["w"]) @ p["v"]
  params = {"w": jnp.asarray(rng.normal(size=(3, 4))), "v": jnp.asarray(rng.normal(size=(4, 2)))}
  return js.Objective.from_apply(apply, params, data=(x, y), batch_size=batch_size), params


@pytest.mark.parametrize("batch_size", [None, 5])  # 5: a ragged, padded last batch
def test_value_gradient_and_hessian_gain_the_penalty(x64, batch_size):
  obj, params = _objective(batch_size)
  wd = 0.3
  reg = regularize.with_l2(obj, wd)
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


def test_batch_loss_and_zero_decay(x64):
  obj, params = _objective(5)
  reg = regularize.with_l2(obj, 0.1)
  batch = (obj.x[0], obj.y[0], obj.w[0])
  np.testing.assert_allclose(float(reg.loss(params, batch)[0]),
                             float(obj.loss(params, batch)[0]) + float(regularize.l2_penalty(params, 0.1)), rtol=1e-12)
  np.testing.assert_allclose(float(regularize.with_l2(obj, 0.0).value(params)), float(obj.value(params)), rtol=1e-14)


def test_penalised_objectives_share_compiled_functions():
  obj, _ = _objective(None)
  a, b = regularize.with_l2(obj, 0.1), regularize.with_l2(obj, 0.1)
  assert a.apply == b.apply and hash(a.apply) == hash(b.apply)
  assert a.per_example == b.per_example


def test_negative_decay_is_refused():
  obj, _ = _objective(None)
  with pytest.raises(ValueError, match="weight_decay must be >= 0"):
    regularize.with_l2(obj, -1.0)
