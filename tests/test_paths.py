"""paths: linear interpolation, barriers, permutation symmetry, Bezier curves."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxscape as js
from jaxscape import paths


def _mlp_apply(p, x):
  h = jnp.tanh(x @ p["layers_0"]["kernel"] + p["layers_0"]["bias"][None])
  h = jax.nn.relu(h @ p["layers_1"]["kernel"] + p["layers_1"]["bias"][None])
  return h @ p["layers_2"]["kernel"] + p["layers_2"]["bias"][None]


def _mlp_params(seed, widths=(3, 5, 4, 3)):
  rng = np.random.default_rng(seed)
  return {f"layers_{i}": {"kernel": jnp.asarray(rng.normal(size=(a, b)), jnp.float32),
                          "bias": jnp.asarray(rng.normal(size=b) * 0.1, jnp.float32)}
          for i, (a, b) in enumerate(zip(widths[:-1], widths[1:]))}


@functools.cache
def _mlp_obj(num_inputs=3):
  rng = np.random.default_rng(0)
  x = rng.normal(size=(20, num_inputs)).astype(np.float32)
  y = rng.integers(0, 3, 20)
  return js.Objective.from_apply(_mlp_apply, data=(x, y), batch_size=8)


@functools.cache
def _regression():
  rng = np.random.default_rng(1)
  x = rng.normal(size=(12, 3))
  t = rng.normal(size=12)
  return x, t


@functools.cache
def _regression_obj():
  x, t = _regression()
  return js.Objective.from_apply(lambda p, x: x @ p, data=(x, t), loss="mse", batch_size=5)


_value = jax.jit(lambda obj, p: obj.loss(p))


def test_interpolate_endpoints_equal_endpoint_losses():
  obj = _mlp_obj()
  a, b = _mlp_params(1), _mlp_params(2)
  line = paths.interpolate(obj, a, b, jnp.array([0.0, 0.25, 1.0]))
  # float32 full-data means over 20 examples: 1e-6 relative
  np.testing.assert_allclose(line.losses[0], _value(obj, a)[0], rtol=1e-6)
  np.testing.assert_allclose(line.losses[2], _value(obj, b)[0], rtol=1e-6)
  np.testing.assert_allclose(line.metrics["accuracy"][2], _value(obj, b)[1]["accuracy"], rtol=1e-6)
  np.testing.assert_allclose(line.losses[1], _value(obj, paths.lerp(a, b, 0.25))[0], rtol=1e-6)
  # chunked evaluation gives the same numbers
  chunked = paths.interpolate(obj, a, b, jnp.array([0.0, 0.25, 1.0]), chunk_size=2)
  np.testing.assert_allclose(chunked.losses, line.losses, rtol=1e-6)


def test_interpolation_on_a_quadratic_matches_the_closed_form(x64):
  # L(w) = mean (x.w - t)^2 is quadratic: along w(alpha) = a + alpha d,
  # L = q alpha^2 + l alpha + c with q = mean (x.d)^2, l = 2 mean (x.a - t)(x.d).
  x, t = _regression()
  obj = _regression_obj()
  a = jnp.array([0.5, -1.0, 2.0])
  b = jnp.array([-1.5, 0.3, 0.7])
  alphas = jnp.linspace(-1.0, 2.0, 31)
  line = paths.interpolate(obj, a, b, alphas)
  d = np.asarray(b - a)
  r, xd = x @ np.asarray(a) - t, x @ d
  closed = np.mean(xd**2) * np.asarray(alphas) ** 2 + 2 * np.mean(r * xd) * np.asarray(alphas) + np.mean(r**2)
  # float64: round-off only
  np.testing.assert_allclose(line.losses, closed, rtol=1e-12)
  assert line.coords.shape == (31,) and line.losses.dtype == jnp.float64


def test_barrier_of_a_known_profile(x64):
  # L(a) = 1 + 4 a (1 - a) + 0.5 a: L(0) = 1, L(1) = 1.5. Above the higher end,
  # the maximum is at a* = 0.5 + 0.5/8 = 0.5625 with L(a*) - 1.5 = 0.765625;
  # above the chord (1 + 0.5 a) the excess 4 a (1 - a) peaks at 0.5 with 1.
  alphas = jnp.linspace(-0.5, 1.5, 321)  # step 1/160: 0, 0.5, 0.5625 and 1 are samples
  losses = 1 + 4 * alphas * (1 - alphas) + 0.5 * alphas
  losses = jnp.where(alphas < 0, losses + 10.0, losses)  # outside [0, 1]: ignored
  b = paths.barrier(losses, alphas)
  # float64 grid and values: round-off only
  np.testing.assert_allclose(b.height, 0.765625, rtol=1e-12)
  np.testing.assert_allclose(b.alpha, 0.5625, rtol=1e-12)
  np.testing.assert_allclose(b.linear_height, 1.0, rtol=1e-12)
  np.testing.assert_allclose(b.linear_alpha, 0.5, rtol=1e-12)
  np.testing.assert_allclose([b.loss_a, b.loss_b], [1.0, 1.5], rtol=1e-12)
  # a convex profile has no barrier; vmapped over two profiles
  a2 = jnp.linspace(0.0, 1.0, 11)
  batch = jax.vmap(paths.barrier, in_axes=(0, None))(jnp.stack([(a2 - 0.3) ** 2, 1 + 4 * a2 * (1 - a2)]), a2)
  np.testing.assert_allclose(batch.height, [0.0, 1.0], atol=1e-12)
  with pytest.raises(ValueError, match=r"cover \[0, 1\]"):
    paths.barrier(jnp.ones(3), jnp.array([0.1, 0.5, 1.0]))
  with pytest.raises(ValueError, match="same shape"):
    paths.barrier(jnp.ones(3), jnp.array([0.0, 1.0]))


def test_is_monotone():
  assert bool(paths.is_monotone(jnp.array([3.0, 2.0, 2.0, 1.0])))
  assert not bool(paths.is_monotone(jnp.array([3.0, 2.0, 2.1, 1.0])))
  assert bool(paths.is_monotone(jnp.array([3.0, 2.0, 2.1, 1.0]), tol=0.2))
  assert not bool(paths.is_monotone(jnp.array([1.0, 2.0])))
  assert bool(paths.is_monotone(jnp.array([1.0, 2.0]), direction="increasing"))
  assert bool(paths.is_monotone(jnp.array([1.0, 2.0]), direction="either"))
  with pytest.raises(ValueError, match="direction must be"):
    paths.is_monotone(jnp.array([1.0, 2.0]), direction="up")


def test_permuting_hidden_units_keeps_the_loss_and_moves_the_params():
  obj = _mlp_obj()
  p = _mlp_params(3)
  perm0 = jnp.array([2, 0, 4, 1, 3])
  perm1 = jnp.array([3, 2, 1, 0])
  q = paths.permute_hidden_units(p, perm0, *paths.dense_layer_paths("layers_0", "layers_1"))
  q = paths.permute_hidden_units(q, perm1, *paths.dense_layer_paths("layers_1", "layers_2"))
  # float32 sums in another order: 1e-6 relative
  np.testing.assert_allclose(_value(obj, q)[0], _value(obj, p)[0], rtol=1e-6)
  outputs_p = _mlp_apply(p, obj.x[0])
  np.testing.assert_allclose(_mlp_apply(q, obj.x[0]), outputs_p, rtol=1e-5, atol=1e-6)
  assert float(js.tree.norm(js.tree.sub(q, p))) > 1.0
  np.testing.assert_array_equal(q["layers_0"]["kernel"], np.asarray(p["layers_0"]["kernel"])[:, np.asarray(perm0)])
  np.testing.assert_array_equal(q["layers_1"]["kernel"],
                                np.asarray(p["layers_1"]["kernel"])[np.asarray(perm0)][:, np.asarray(perm1)])
  js.tree.assert_allclose(q["layers_2"]["bias"], p["layers_2"]["bias"], rtol=0)
  # the line between the two equivalent copies leaves the level set
  line = paths.interpolate(obj, p, q, jnp.linspace(0.0, 1.0, 11))
  np.testing.assert_allclose(line.losses[-1], line.losses[0], rtol=1e-6)
  assert float(jnp.max(jnp.abs(line.losses - line.losses[0]))) > 1e-2


def test_shuffling_every_hidden_layer_keeps_the_loss():
  obj = _mlp_obj()
  p = _mlp_params(3)
  q = paths.shuffle_hidden_units(jax.random.key(4), p, ["layers_0", "layers_1", "layers_2"])
  np.testing.assert_allclose(_value(obj, q)[0], _value(obj, p)[0], rtol=1e-6)
  perm0 = jax.random.permutation(jax.random.fold_in(jax.random.key(4), 0), 5)  # the first hidden layer's key
  np.testing.assert_array_equal(q["layers_0"]["bias"], np.asarray(p["layers_0"]["bias"])[np.asarray(perm0)])
  assert not js.tree.allclose(q["layers_1"], p["layers_1"])
  js.tree.assert_allclose(q["layers_2"]["bias"], p["layers_2"]["bias"], rtol=0)
  with pytest.raises(ValueError, match="no leaf named 'nope/kernel'"):
    paths.shuffle_hidden_units(jax.random.key(0), p, ["nope", "layers_1"])


def test_permutation_works_on_nnx_mlp_params_and_checks_input():
  from flax import nnx

  net = js.models.MLP(3, [4], 2, activation="tanh", rngs=nnx.Rngs(0))
  rng = np.random.default_rng(0)
  obj, p = js.Objective.from_model(net, data=(rng.normal(size=(6, 3)).astype(np.float32), rng.integers(0, 2, 6)))
  # flax.nnx names: layers/0/{kernel,bias} -> head/{kernel,bias}
  assert sorted(js.tree.leaf_names(p)) == ["head/bias", "head/kernel", "layers/0/bias", "layers/0/kernel"]
  outs, ins = paths.dense_layer_paths("layers/0", "head")
  first, second = outs[0], ins[0]
  q = paths.permute_hidden_units(p, jnp.array([3, 1, 0, 2]), outs, ins)
  np.testing.assert_allclose(_value(obj, q)[0], _value(obj, p)[0], rtol=1e-6)
  assert not js.tree.allclose(q, p)
  with pytest.raises(ValueError, match="permutation of range"):
    paths.permute_hidden_units(p, jnp.array([0, 0, 1, 2]), [first], [second])
  with pytest.raises(ValueError, match="no leaf named 'nope/kernel'"):
    paths.permute_hidden_units(p, jnp.array([0, 1, 2, 3]), ["nope/kernel"], [second])
  with pytest.raises(ValueError, match="has no axis -2 of size 4"):
    paths.permute_hidden_units(p, jnp.array([0, 1, 2, 3]), [first], ["head/bias"])


def test_bezier_and_polychain_points():
  a, b = {"w": jnp.array([0.0, 0.0])}, {"w": jnp.array([4.0, 0.0])}
  bends = js.tree.stack([{"w": jnp.array([1.0, 2.0])}, {"w": jnp.array([3.0, 2.0])}])
  # cubic Bezier at t = 0.5: (P0 + 3 P1 + 3 P2 + P3) / 8
  np.testing.assert_allclose(paths.bezier_point(0.5, (a, b), bends)["w"], [2.0, 1.5], rtol=1e-6)
  for t in (0.0, 1.0):
    np.testing.assert_allclose(paths.bezier_point(t, (a, b), bends)["w"], (a, b)[int(t)]["w"], atol=1e-7)
  # polygonal chain: t = 1/3 is the first bend, t = 1/2 halfway between the bends
  np.testing.assert_allclose(paths.polychain_point(1 / 3, (a, b), bends)["w"], [1.0, 2.0], rtol=1e-6)
  np.testing.assert_allclose(paths.polychain_point(0.5, (a, b), bends)["w"], [2.0, 2.0], rtol=1e-6)
  np.testing.assert_allclose(paths.polychain_point(1 / 6, (a, b), bends)["w"], [0.5, 1.0], rtol=1e-6)
  # no bends: the straight line
  np.testing.assert_allclose(paths.bezier_point(0.25, (a, b), None)["w"], [1.0, 0.0])
  # a straight-line initialisation is the line for both kinds
  for kind in paths.CURVE_KINDS:
    c = paths.init_curve(a, b, 3, kind)
    np.testing.assert_allclose(c(0.3)["w"], [1.2, 0.0], rtol=1e-6)
  with pytest.raises(ValueError, match="unknown curve kind"):
    paths.init_curve(a, b, 1, "spline")


def _valley(p):
  # minima (-1, 0) and (1, 0) joined by the valley v = 1 - u^2; the straight
  # line v = 0 crosses a ridge: L(u, 0) = 1.1 (1 - u^2)^2, 1.1 at u = 0. The
  # Bezier curve with bend (0, 2) is the valley, where L = 0.1 (1 - u^2)^2.
  return (p["v"] - 1 + p["u"] ** 2) ** 2 + 0.1 * (p["u"] ** 2 - 1) ** 2


@functools.cache
def _valley_obj():
  return js.Objective.from_apply(lambda p, x: _valley(p) + 0.0 * x[:, 0], data=(np.zeros((1, 1)), np.zeros(1)),
                                 loss=lambda out, t: out)


def test_trained_curve_avoids_the_barrier_of_the_straight_line():
  obj = _valley_obj()
  a = {"u": jnp.array(-1.0), "v": jnp.array(0.0)}
  b = {"u": jnp.array(1.0), "v": jnp.array(0.0)}
  ts = jnp.linspace(0.0, 1.0, 41)
  line = paths.interpolate(obj, a, b, ts)
  fit = paths.train_curve(jax.random.key(0), obj, a, b, num_bends=1, steps=400, lr=0.05, num_samples=8)
  curve = paths.curve_losses(obj, fit.curve, ts)
  np.testing.assert_allclose(line.losses.max(), 1.1, rtol=1e-6)
  # E_t L is minimised by the bend (0, 2) exactly: max loss 0.1 on the curve
  assert float(curve.losses.max()) < 0.12
  assert float(curve.losses.max()) < 0.2 * float(line.losses.max())
  # Adam with sampled t keeps jittering around it
  np.testing.assert_allclose([fit.curve.bends["u"][0], fit.curve.bends["v"][0]], [0.0, 2.0], atol=0.1)
  np.testing.assert_allclose([curve.losses[0], curve.losses[-1]], [0.0, 0.0], atol=1e-7)  # ends fixed
  assert fit.train_losses.shape == (400,)
  assert float(fit.train_losses[-50:].mean()) < float(fit.train_losses[:10].mean())
  b_line = paths.barrier(line.losses, ts)
  b_curve = paths.barrier(curve.losses, ts)
  assert float(b_curve.height) < 0.2 * float(b_line.height)


def test_polychain_curve_also_trains():
  obj = _valley_obj()
  a = {"u": jnp.array(-1.0), "v": jnp.array(0.0)}
  b = {"u": jnp.array(1.0), "v": jnp.array(0.0)}
  fit = paths.train_curve(jax.random.key(1), obj, a, b, num_bends=3, steps=300, lr=0.05, kind="polychain")
  ts = jnp.linspace(0.0, 1.0, 41)
  # a 4-segment chain cannot follow the parabola exactly; it must still stay far below the ridge
  assert float(paths.curve_losses(obj, fit.curve, ts).losses.max()) < 0.5
  # the earlier order (key after the endpoints) and key= are the same call
  for legacy in (paths.train_curve(obj, a, b, jax.random.key(1), num_bends=3, steps=300, lr=0.05, kind="polychain"),
                 paths.train_curve(obj, a, b, key=jax.random.key(1), num_bends=3, steps=300, lr=0.05,
                                   kind="polychain")):
    jax.tree.map(np.testing.assert_array_equal, legacy.curve.bends, fit.curve.bends)
    np.testing.assert_array_equal(legacy.train_losses, fit.train_losses)


def test_interpolate_rejects_mismatched_endpoints():
  obj = _regression_obj()
  with pytest.raises(ValueError, match="shape of leaf"):
    paths.interpolate(obj, jnp.zeros(3), jnp.zeros(4), jnp.array([0.0, 1.0]))
  with pytest.raises(ValueError, match="non-empty 1-D"):
    paths.interpolate(obj, jnp.zeros(3), jnp.zeros(3), jnp.zeros((2, 2)))
  with pytest.raises(ValueError, match="chunk_size"):
    paths.interpolate(obj, jnp.zeros(3), jnp.zeros(3), jnp.array([0.0, 1.0]), chunk_size=0)


# ------------------------------------------------------------ weight matching
_LAYERS3 = ["layers_0", "layers_1", "layers_2"]


def _inner(a, b):
  """<a, b> over all leaves in float64 numpy: the matching objective, computed independently."""
  return sum(float(np.vdot(np.asarray(x, np.float64), np.asarray(y, np.float64)))
             for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


# 8 inputs: each first-layer unit is identified by its own 9 incoming weights. With 3 inputs the sweep that starts at
# the second layer can settle in a coordinate-wise optimum that is not the permuted copy (e.g. seed 2 of (3, 5, 4, 3)):
# coordinate ascent promises no more (see test_weight_matching_ascends_to_a_coordinatewise_optimum...).
@pytest.mark.parametrize("widths", [(8, 5, 4, 3), (8, 16, 12, 3)])
def test_align_recovers_a_known_permutation_and_removes_the_barrier(widths):
  obj = _mlp_obj(widths[0])
  for seed in range(4):
    p = _mlp_params(seed, widths)
    key = jax.random.key(10 + seed)
    q = paths.shuffle_hidden_units(key, p, _LAYERS3)
    m = paths.align(jax.random.key(seed), p, q, _LAYERS3)
    # shuffle put unit perm[j] at j; aligning undoes it: the inverse permutation, exactly
    for i, perm in enumerate(m.perms):
      shuffled = np.asarray(jax.random.permutation(jax.random.fold_in(key, i), widths[i + 1]))
      np.testing.assert_array_equal(perm, np.argsort(shuffled))
    jax.tree.map(np.testing.assert_array_equal, m.params, p)
    assert m.converged and m.sweeps >= 2  # the last sweep confirms that nothing changes
    np.testing.assert_allclose(m.objective[-1], _inner(p, p), rtol=1e-12)  # ||a||^2: the largest possible
    ts = jnp.linspace(0.0, 1.0, 11)
    naive = paths.interpolate(obj, p, q, ts).losses
    aligned = paths.interpolate(obj, p, m.params, ts).losses
    assert float(paths.barrier(aligned, ts).height) == 0.0  # the line from a point to itself
    assert float(jnp.max(jnp.abs(aligned - aligned[0]))) == 0.0
    assert float(jnp.max(jnp.abs(naive - naive[0]))) > 1e-2  # while the naive line leaves the level set


def test_weight_matching_recovers_conv_channels():
  # HWIO conv kernel: output channels on the last axis, the next Dense kernel's rows on axis -2
  rng = np.random.default_rng(5)
  p = {"conv": {"kernel": jnp.asarray(rng.normal(size=(2, 2, 3, 6))), "bias": jnp.asarray(rng.normal(size=6))},
       "dense": {"kernel": jnp.asarray(rng.normal(size=(6, 4)))}}
  groups = [(("conv/kernel", "conv/bias"), ("dense/kernel",))]
  perm = jnp.array([4, 2, 0, 5, 1, 3])
  q = paths.permute_hidden_units(p, perm, *groups[0])
  m = paths.weight_matching(jax.random.key(0), p, q, groups)
  np.testing.assert_array_equal(m.perms[0], np.argsort(np.asarray(perm)))
  jax.tree.map(np.testing.assert_array_equal, m.params, p)


def test_weight_matching_ascends_to_a_coordinatewise_optimum_by_true_permutations():
  import itertools

  obj = _mlp_obj()
  widths = (3, 5, 4, 3)
  a, b = _mlp_params(1, widths), _mlp_params(2, widths)
  m = paths.align(jax.random.key(0), a, b, _LAYERS3)
  # coordinate ascent: every step keeps or raises <a, pi b> (float64 round-off: 1e-12 relative)
  assert np.all(np.diff(m.objective) >= -1e-12 * np.abs(m.objective).max())
  assert m.objective[-1] > m.objective[0] and m.converged
  assert len(m.objective) == 1 + 2 * m.sweeps  # one value per layer step
  # a true permutation of b: the same permutations applied by permute_hidden_units, the same function
  for perm, h in zip(m.perms, widths[1:-1]):
    np.testing.assert_array_equal(np.sort(perm), np.arange(h))
  ref = paths.permute_hidden_units(b, jnp.asarray(m.perms[0]), *paths.dense_layer_paths("layers_0", "layers_1"))
  ref = paths.permute_hidden_units(ref, jnp.asarray(m.perms[1]), *paths.dense_layer_paths("layers_1", "layers_2"))
  jax.tree.map(np.testing.assert_array_equal, m.params, ref)
  np.testing.assert_allclose(_value(obj, m.params)[0], _value(obj, b)[0], rtol=1e-6)  # float32 sums reordered
  np.testing.assert_allclose(m.objective[-1], _inner(a, m.params), rtol=1e-12)
  assert float(js.tree.norm(js.tree.sub(a, m.params))) < float(js.tree.norm(js.tree.sub(a, b)))
  # converged is a promise: no single layer's permutation (all 5! and 4!, the other fixed) does better
  for g, (layer, nxt) in enumerate(zip(_LAYERS3[:-1], _LAYERS3[1:])):
    undone = paths.permute_hidden_units(m.params, jnp.asarray(np.argsort(m.perms[g])), *paths.dense_layer_paths(layer, nxt))
    best = max(_inner(a, paths.permute_hidden_units(undone, jnp.array(p), *paths.dense_layer_paths(layer, nxt)))
               for p in itertools.permutations(range(widths[g + 1])))
    assert best <= m.objective[-1] * (1 + 1e-12)
  # one sweep from the identity changes something, so it is not reported converged
  first = paths.align(jax.random.key(0), a, b, _LAYERS3, max_sweeps=1)
  assert first.sweeps == 1 and not first.converged


def test_align_matches_brute_force_on_one_hidden_layer():
  import itertools

  layer_paths = paths.dense_layer_paths("layers_0", "layers_1")
  for seed in range(4):
    a, b = _mlp_params(2 * seed, (3, 4, 2)), _mlp_params(2 * seed + 1, (3, 4, 2))
    scores = {p: _inner(a, paths.permute_hidden_units(b, jnp.array(p), *layer_paths))
              for p in itertools.permutations(range(4))}
    best = max(scores, key=scores.get)
    m = paths.align(jax.random.key(seed), a, b, ["layers_0", "layers_1"])
    # one layer: the linear assignment is the exact optimum over all 24 permutations (float64 round-off)
    np.testing.assert_allclose(m.objective[-1], scores[best], rtol=1e-12)
    np.testing.assert_array_equal(m.perms[0], best)


def test_align_works_on_nnx_mlp_params():
  from flax import nnx

  net = js.models.MLP(3, [6, 5], 2, activation="tanh", rngs=nnx.Rngs(0))
  rng = np.random.default_rng(0)
  obj, p = js.Objective.from_model(net, data=(rng.normal(size=(6, 3)).astype(np.float32), rng.integers(0, 2, 6)))
  layers = ["layers/0", "layers/1", "head"]
  q = paths.shuffle_hidden_units(jax.random.key(3), p, layers)
  m = paths.align(jax.random.key(0), p, q, layers)
  jax.tree.map(np.testing.assert_array_equal, m.params, p)


def test_weight_matching_checks_input():
  a = _mlp_params(0)
  with pytest.raises(ValueError, match="at least two Dense layers"):
    paths.align(jax.random.key(0), a, a, ["layers_0"])
  with pytest.raises(ValueError, match="shape of leaf"):
    paths.align(jax.random.key(0), a, _mlp_params(0, (3, 6, 4, 3)), _LAYERS3)
  with pytest.raises(ValueError, match="max_sweeps"):
    paths.align(jax.random.key(0), a, a, _LAYERS3, max_sweeps=0)
  with pytest.raises(ValueError, match="no leaf named 'nope/kernel'"):
    paths.align(jax.random.key(0), a, a, ["nope", "layers_1"])
  with pytest.raises(ValueError, match="group 0 must be a pair"):
    paths.weight_matching(jax.random.key(0), a, a, paths.dense_layer_paths("layers_0", "layers_1"))
  with pytest.raises(ValueError, match="named by groups 0 and 1"):
    paths.weight_matching(jax.random.key(0), a, a, [(["layers_0/bias"], []), (["layers_0/bias"], [])])
  with pytest.raises(ValueError, match="both as out_path and in_path"):
    paths.weight_matching(jax.random.key(0), a, a, [(["layers_1/kernel"], ["layers_1/kernel"])])
  with pytest.raises(ValueError, match="has no axis -2 of size 5"):  # layers_0's 5 units vs layers_2's 4 rows
    paths.weight_matching(jax.random.key(0), a, a, [(["layers_0/kernel"], ["layers_2/kernel"])])


def test_aligned_barriers_of_stacked_runs_match_the_direct_computation():
  widths = (8, 5, 4, 3)
  obj = _mlp_obj(8)
  p0, p1 = _mlp_params(0, widths), _mlp_params(1, widths)
  runs = js.tree.stack([p0, p1, paths.shuffle_hidden_units(jax.random.key(7), p0, _LAYERS3)])
  ts = jnp.linspace(0.0, 1.0, 9)
  r = paths.aligned_barriers(jax.random.key(3), obj, runs, _LAYERS3, ts)
  np.testing.assert_array_equal(r.pairs, [[0, 1], [1, 2], [2, 0]])
  for p, (i, j) in enumerate(r.pairs):
    a, b = js.tree.select(runs, int(i)), js.tree.select(runs, int(j))
    m = paths.align(jax.random.fold_in(jax.random.key(3), p), a, b, _LAYERS3)
    naive, aligned = paths.interpolate(obj, a, b, ts).losses, paths.interpolate(obj, a, m.params, ts).losses
    # the same computations: equal to the last bit
    np.testing.assert_array_equal(r.naive[p], naive)
    np.testing.assert_array_equal(r.aligned[p], aligned)
    assert r.naive_barrier[p] == float(paths.barrier(naive, ts).height)
    assert r.aligned_barrier[p] == float(paths.barrier(aligned, ts).height)
    flat_a, flat_b = np.asarray(js.tree.ravel(a)[0], np.float64), np.asarray(js.tree.ravel(b)[0], np.float64)
    np.testing.assert_allclose(r.distance[p], np.linalg.norm(flat_b - flat_a) / np.linalg.norm(flat_a),
                               rtol=1e-5)  # float32 norms
    assert r.sweeps[p] == m.sweeps and r.converged[p] == m.converged
  # run 0 is a permuted copy of run 2: aligned onto it exactly, no barrier, zero distance
  assert r.aligned_barrier[2] == 0.0 and r.aligned_distance[2] == 0.0 and r.distance[2] > 0.5
  assert r.aligned_distance[0] < r.distance[0]
  with pytest.raises(ValueError, match=r"run indices in \[0, 3\)"):
    paths.aligned_barriers(jax.random.key(3), obj, runs, _LAYERS3, ts, pairs=[(0, 3)])


def test_hidden_unit_copies_are_the_other_orders_and_keep_the_function(x64):
  rng = np.random.default_rng(0)
  w, v = rng.normal(size=(2, 3)), rng.normal(size=(3, 1))
  p = {"l0": {"kernel": jnp.asarray(w)}, "l1": {"kernel": jnp.asarray(v)}}
  copies = paths.hidden_unit_copies(p, "l0", "l1", bias=None)
  perms = [(0, 2, 1), (1, 0, 2), (1, 2, 0), (2, 0, 1), (2, 1, 0)]
  assert len(copies) == 5
  x = rng.normal(size=(4, 2))
  for q, perm in zip(copies, perms):
    np.testing.assert_array_equal(q["l0"]["kernel"], w[:, perm])
    np.testing.assert_array_equal(q["l1"]["kernel"], v[perm, :])
    np.testing.assert_allclose(np.tanh(x @ np.asarray(q["l0"]["kernel"])) @ np.asarray(q["l1"]["kernel"]),
                               np.tanh(x @ w) @ v, rtol=1e-13)  # a reordered sum of 3 terms
  with pytest.raises(ValueError, match="no leaf named 'l2/kernel'"):
    paths.hidden_unit_copies(p, "l2", "l1")


def test_copy_barriers_match_a_numpy_line(x64):
  rng = np.random.default_rng(2)
  x, y = rng.normal(size=(20, 2)), rng.normal(size=(20,))
  apply = lambda p, xb: jnp.sin(xb @ p)  # noqa: E731
  obj = js.Objective.from_apply(apply, data=(x, y), loss="mse")
  a, copies = np.array([1.0, -0.5]), [np.array([-1.0, 2.0]), np.array([0.3, 0.3])]
  alphas = np.linspace(0.0, 1.0, 11)
  rows = paths.copy_barriers(obj, jnp.asarray(a), [jnp.asarray(q) for q in copies], alphas)
  L = lambda p: np.mean((np.sin(x @ p) - y) ** 2)  # noqa: E731
  for row, q in zip(rows, copies):
    line = np.array([L((1 - t) * a + t * q) for t in alphas])
    height = line.max() - max(line[0], line[-1])
    ref = [abs(L(q) - L(a)) / L(a), np.linalg.norm(q - a) / np.linalg.norm(a), height, height / L(a)]
    np.testing.assert_allclose(row, ref, rtol=1e-12, atol=1e-14)  # float64 means of 20 terms
  given = paths.copy_barriers(obj, jnp.asarray(a), [jnp.asarray(copies[0])], alphas, loss=2 * L(a))
  np.testing.assert_allclose(given[0, 3], rows[0, 2] / (2 * L(a)), rtol=1e-12)  # the given loss is the reference
