"""Model zoo: shapes, exact parameter counts, variants that share parameters, registry."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import jaxscape as js
from jaxscape import models


def _dense_count(sizes, bias=True):
  return sum(a * b + (b if bias else 0) for a, b in zip(sizes[:-1], sizes[1:]))


@pytest.mark.parametrize("activation", ["relu", "tanh", "sigmoid", "linear"])
def test_mlp_shapes_and_counts(activation):
  net = models.build("mlp", 0, in_features=64, widths=[32, 16], out_features=10, activation=activation)
  apply, params, state = js.split_nnx(net)
  assert apply(params, state, jnp.ones((5, 8, 8, 1))).shape == (5, 10)
  assert models.count_params(params) == _dense_count([64, 32, 16, 10]) == 2778
  assert params["layers"][0]["kernel"].shape == (64, 32)  # Flax layout (in, out)


def test_mlp_batchnorm_counts_and_state():
  net = models.build("mlp", 0, in_features=64, widths=[32, 16], out_features=10, batch_norm=True)
  apply, params, state = js.split_nnx(net)
  assert models.count_params(params) == _dense_count([64, 32, 16, 10]) + 2 * (32 + 16)
  assert sorted(nnx.to_pure_dict(state)["norms"][0]) == ["mean", "var"]


def test_mlp_activation_is_applied():
  x = jax.random.normal(jax.random.key(0), (4, 3))
  nets = {a: models.build("mlp", 1, in_features=3, widths=[5], out_features=2, activation=a) for a in ("relu", "tanh", "linear")}
  p = js.split_nnx(nets["relu"])[1]
  h = x @ p["layers"][0]["kernel"] + p["layers"][0]["bias"]
  for name, f in (("relu", jax.nn.relu), ("tanh", jnp.tanh), ("linear", lambda z: z)):
    ref = f(h) @ p["head"]["kernel"] + p["head"]["bias"]
    # float32 matmuls of 5 terms
    np.testing.assert_allclose(nets[name](x), ref, rtol=1e-5, atol=1e-6)


def test_registry_errors_and_keys():
  with pytest.raises(ValueError, match="unknown model 'nope'"):
    models.build("nope", 0)
  with pytest.raises(ValueError, match="unknown arguments \\['depthh'\\]"):
    models.build("mlp", 0, in_features=2, widths=[2], out_features=2, depthh=3)
  with pytest.raises(ValueError, match="unknown activation"):
    models.build("mlp", 0, in_features=2, widths=[2], out_features=2, activation="swishy")
  a = js.split_nnx(models.build("mlp", jax.random.key(3), in_features=2, widths=[2], out_features=2))[1]
  b = js.split_nnx(models.build("mlp", jax.random.key(3), in_features=2, widths=[2], out_features=2))[1]
  c = js.split_nnx(models.build("mlp", 4, in_features=2, widths=[2], out_features=2))[1]
  js.tree.assert_allclose(a, b, rtol=0)
  assert not js.tree.allclose(a, c)


def test_residual_mlp_skip_switch_keeps_parameters(x64):
  kw = dict(in_features=6, width=8, depth=3, out_features=4, branch_scale="1/sqrt(depth)")
  res = models.build("residual_mlp", 0, **kw)
  plain = models.build("residual_mlp", 0, skips=False, **kw)
  a_res, p_res, s_res = js.split_nnx(res)
  a_pl, p_pl, s_pl = js.split_nnx(plain)
  js.tree.assert_allclose(p_res, p_pl, rtol=0)
  assert models.count_params(p_res) == 6 * 8 + 8 + 3 * (64 + 8) + 8 * 4 + 4
  x = np.random.default_rng(0).normal(size=(3, 6))
  p = jax.tree.map(lambda a: np.asarray(a, np.float64), p_res)
  relu = lambda z: np.maximum(z, 0)
  h = relu(x @ p["inp"]["kernel"] + p["inp"]["bias"])
  hp = h.copy()
  for i in range(3):
    blk = p["blocks"][i]
    h = h + relu(h @ blk["kernel"] + blk["bias"])
    hp = relu(hp @ blk["kernel"] + blk["bias"])
  # float64 reference forward passes; 1e-12 relative
  np.testing.assert_allclose(a_res(p, s_res, x), h @ p["head"]["kernel"] + p["head"]["bias"], rtol=1e-12)
  np.testing.assert_allclose(a_pl(p, s_pl, x), hp @ p["head"]["kernel"] + p["head"]["bias"], rtol=1e-12)


def test_residual_branch_scale():
  k1 = js.split_nnx(models.build("residual_mlp", 0, in_features=4, width=8, depth=16, out_features=2))[1]
  k2 = js.split_nnx(models.build("residual_mlp", 0, in_features=4, width=8, depth=16, out_features=2, branch_scale=True))[1]
  np.testing.assert_allclose(k2["blocks"][5]["kernel"], k1["blocks"][5]["kernel"] / 4.0, rtol=1e-6)
  np.testing.assert_array_equal(k2["inp"]["kernel"], k1["inp"]["kernel"])


def test_deep_linear_loss_is_loss_of_end_to_end_product(x64):
  net = models.build("linear", 0, in_features=2, widths=[3], out_features=1)
  apply, params, state = js.split_nnx(net)
  params = js.tree.astype(params, jnp.float64)
  assert models.count_params(params) == 2 * 3 + 3 * 1
  rng = np.random.default_rng(0)
  x, t = rng.normal(size=(20, 2)), rng.normal(size=(20,))
  obj = js.Objective.from_apply(lambda p, x: apply(p, state, x), params, data=(x, t), loss="mse", batch_size=7)
  W = models.end_to_end(params)
  assert W.shape == (2, 1)
  np.testing.assert_allclose(obj.value(params), np.mean((x @ np.asarray(W)[:, 0] - t) ** 2), rtol=1e-12)
  # Rescaling a hidden unit by c and its outgoing weight by 1/c keeps the loss (a symmetry of the factors).
  c = np.array([2.0, -0.5, 3.0])
  q = jax.tree.map(lambda a: a, params)
  q["layers"][0]["kernel"] = params["layers"][0]["kernel"] * c
  q["head"]["kernel"] = params["head"]["kernel"] / c[:, None]
  np.testing.assert_allclose(obj.value(q), obj.value(params), rtol=1e-12)
  deep = models.build("linear", 1, in_features=3, widths=[4, 5, 2], out_features=2)
  a2, p2, s2 = js.split_nnx(deep)
  xx = jnp.ones((2, 3))
  np.testing.assert_allclose(a2(p2, s2, xx), xx @ models.end_to_end(p2), rtol=1e-5)


def test_flops_per_example_dense():
  net = models.build("mlp", 0, in_features=64, widths=[32], out_features=10, activation="linear", use_bias=False)
  apply, params, state = js.split_nnx(net)
  # XLA counts 2 FLOPs per multiply-add: 2 * (64*32 + 32*10)
  assert models.flops_per_example(apply, params, state, jnp.zeros(64)) == 2 * (64 * 32 + 32 * 10)
