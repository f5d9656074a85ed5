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
  apply, params, state, _ = js.adapters.split(net)
  assert apply(params, state, jnp.ones((5, 8, 8, 1))).shape == (5, 10)
  assert models.count_params(params) == _dense_count([64, 32, 16, 10]) == 2778
  assert params["layers"][0]["kernel"].shape == (64, 32)  # Flax layout (in, out)


def test_mlp_batchnorm_counts_and_state():
  net = models.build("mlp", 0, in_features=64, widths=[32, 16], out_features=10, batch_norm=True)
  apply, params, state, _ = js.adapters.split(net)
  assert models.count_params(params) == _dense_count([64, 32, 16, 10]) + 2 * (32 + 16)
  assert sorted(state["norms"][0]) == ["mean", "var"]


def test_mlp_activation_is_applied():
  x = jax.random.normal(jax.random.key(0), (4, 3))
  nets = {a: models.build("mlp", 1, in_features=3, widths=[5], out_features=2, activation=a) for a in ("relu", "tanh", "linear")}
  p = js.adapters.split(nets["relu"]).params
  h = x @ p["layers"][0]["kernel"] + p["layers"][0]["bias"][None]
  for name, f in (("relu", jax.nn.relu), ("tanh", jnp.tanh), ("linear", lambda z: z)):
    ref = f(h) @ p["head"]["kernel"] + p["head"]["bias"][None]
    # float32 matmuls of 5 terms
    np.testing.assert_allclose(nets[name](x), ref, rtol=1e-5, atol=1e-6)


def test_registry_errors_and_keys():
  with pytest.raises(ValueError, match="unknown model 'nope'"):
    models.build("nope", 0)
  with pytest.raises(ValueError, match="unknown arguments \\['depthh'\\]"):
    models.build("mlp", 0, in_features=2, widths=[2], out_features=2, depthh=3)
  with pytest.raises(ValueError, match="unknown activation"):
    models.build("mlp", 0, in_features=2, widths=[2], out_features=2, activation="swishy")
  a = js.adapters.split(models.build("mlp", jax.random.key(3), in_features=2, widths=[2], out_features=2)).params
  b = js.adapters.split(models.build("mlp", jax.random.key(3), in_features=2, widths=[2], out_features=2)).params
  c = js.adapters.split(models.build("mlp", 4, in_features=2, widths=[2], out_features=2)).params
  js.tree.assert_allclose(a, b, rtol=0)
  assert not js.tree.allclose(a, c)


def test_residual_mlp_skip_switch_keeps_parameters(x64):
  kw = dict(in_features=6, width=8, depth=3, out_features=4, branch_scale="1/sqrt(depth)")
  res = models.build("residual_mlp", 0, **kw)
  plain = models.build("residual_mlp", 0, skips=False, **kw)
  a_res, p_res, s_res, _ = js.adapters.split(res)
  a_pl, p_pl, s_pl, _ = js.adapters.split(plain)
  js.tree.assert_allclose(p_res, p_pl, rtol=0)
  assert models.count_params(p_res) == 6 * 8 + 8 + 3 * (64 + 8) + 8 * 4 + 4
  x = np.random.default_rng(0).normal(size=(3, 6))
  p = jax.tree.map(lambda a: np.asarray(a, np.float64), p_res)
  relu = lambda z: np.maximum(z, 0)
  h = relu(x @ p["inp"]["kernel"] + p["inp"]["bias"][None])
  hp = h.copy()
  for i in range(3):
    blk = p["blocks"][i]
    h = h + relu(h @ blk["kernel"] + blk["bias"][None])
    hp = relu(hp @ blk["kernel"] + blk["bias"][None])
  # float64 reference forward passes; 1e-12 relative
  np.testing.assert_allclose(a_res(p, s_res, x), h @ p["head"]["kernel"] + p["head"]["bias"][None], rtol=1e-12)
  np.testing.assert_allclose(a_pl(p, s_pl, x), hp @ p["head"]["kernel"] + p["head"]["bias"][None], rtol=1e-12)


def test_residual_branch_scale():
  k1 = js.adapters.split(models.build("residual_mlp", 0, in_features=4, width=8, depth=16, out_features=2)).params
  k2 = js.adapters.split(models.build("residual_mlp", 0, in_features=4, width=8, depth=16, out_features=2, branch_scale=True)).params
  np.testing.assert_allclose(k2["blocks"][5]["kernel"], k1["blocks"][5]["kernel"] / 4.0, rtol=1e-6)
  np.testing.assert_array_equal(k2["inp"]["kernel"], k1["inp"]["kernel"])


def test_deep_linear_loss_is_loss_of_end_to_end_product(x64):
  net = models.build("linear", 0, in_features=2, widths=[3], out_features=1)
  apply, params, state, _ = js.adapters.split(net)
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
  q["layers"][0]["kernel"] = params["layers"][0]["kernel"] * c[None, :]
  q["head"]["kernel"] = params["head"]["kernel"] / c[:, None]
  np.testing.assert_allclose(obj.value(q), obj.value(params), rtol=1e-12)
  deep = models.build("linear", 1, in_features=3, widths=[4, 5, 2], out_features=2)
  a2, p2, s2, _ = js.adapters.split(deep)
  p2 = js.tree.astype(p2, jnp.float64)  # the float64 inputs below meet float64 factors (flax promoted them before)
  xx = jnp.ones((2, 3))
  np.testing.assert_allclose(a2(p2, s2, xx), xx @ models.end_to_end(p2), rtol=1e-5)


def test_refactor_keeps_the_end_to_end_product_and_moves_the_factors(x64):
  params = js.adapters.nnx.split(models.build("linear", 0, in_features=3, widths=[4, 5], out_features=2)).params
  params = js.tree.astype(params, jnp.float64)
  q = models.linear.refactor(jax.random.key(1), params)
  assert jax.tree.structure(q) == jax.tree.structure(params)
  np.testing.assert_allclose(models.end_to_end(q), models.end_to_end(params), rtol=1e-12, atol=1e-14)
  assert float(js.tree.norm(js.tree.sub(q, params))) > 0.1 * float(js.tree.norm(params))
  biased = js.adapters.nnx.split(models.build("linear", 0, in_features=3, widths=[4], out_features=2, use_bias=True)).params
  with pytest.raises(ValueError, match="bias-free"):
    models.linear.refactor(jax.random.key(1), biased)


def test_flops_per_example_dense():
  net = models.build("mlp", 0, in_features=64, widths=[32], out_features=10, activation="linear", use_bias=False)
  apply, params, state, _ = js.adapters.split(net)
  # XLA counts 2 FLOPs per multiply-add: 2 * (64*32 + 32*10)
  assert models.flops_per_example(apply, params, state, jnp.zeros(64)) == 2 * (64 * 32 + 32 * 10)


def _resnet_count(depth, width=1, in_channels=3, classes=10, projection=True, shortcuts=True):
  """Analytic parameter count of the CIFAR ResNet (conv kernels, BN scale+bias, classifier)."""
  n = (depth - 2) // 6
  c = [16 * width, 32 * width, 64 * width]
  total = 9 * in_channels * c[0] + 2 * c[0]
  cin = c[0]
  for cout in c:
    for i in range(n):
      total += 9 * cin * cout + 9 * cout * cout + 4 * cout
      if shortcuts and projection and cin != cout:
        total += cin * cout + 2 * cout
      cin = cout
  return total + c[2] * classes + classes


@pytest.mark.parametrize("depth", [8, 14, 20, 56, 110])
def test_resnet_parameter_counts(depth):
  variants = [(True, "projection")] + ([(False, "projection")] if depth < 110 else []) + ([(True, "pad")] if depth == 20 else [])
  nets = {(sc, st): nnx.eval_shape(lambda sc=sc, st=st: models.build("resnet", 0, depth=depth, shortcuts=sc, shortcut_type=st))
          for sc, st in variants}
  for (sc, st), net in nets.items():
    assert models.count_params(net) == _resnet_count(depth, projection=st == "projection", shortcuts=sc)
  if depth == 20:
    # He et al.'s ResNet-20 (option A shortcuts) has the well-known 0.27M parameters: exactly 269,722;
    # with 1x1 projection shortcuts (Li et al.'s code) 272,474.
    assert models.count_params(nets[True, "pad"]) == 269_722
    assert models.count_params(nets[True, "projection"]) == 272_474


def test_resnet_noshort_keeps_main_path_parameters():
  full = js.adapters.split(models.build("resnet", 0, depth=8, in_channels=1)).params
  nosc = js.adapters.split(models.build("resnet", 0, depth=8, in_channels=1, shortcuts=False)).params
  names_full, names_no = set(js.tree.leaf_names(full)), set(js.tree.leaf_names(nosc))
  removed = names_full - names_no
  assert names_no <= names_full and removed and all("proj" in n for n in removed)
  assert models.count_params(full) - models.count_params(nosc) == (16 * 32 + 64) + (32 * 64 + 128)
  flat_full = dict(zip(js.tree.leaf_names(full), jax.tree.leaves(full)))
  for name, leaf in zip(js.tree.leaf_names(nosc), jax.tree.leaves(nosc)):
    np.testing.assert_array_equal(leaf, flat_full[name], err_msg=name)  # same key -> same initial values


def test_resnet_shapes_on_any_image_size():
  for size, ch in ((8, 1), (28, 1), (32, 3)):
    a, p, s, _ = js.adapters.split(nnx.eval_shape(lambda ch=ch: models.build("resnet", 0, depth=8, in_channels=ch, num_classes=7, width=2)))
    out = jax.eval_shape(a, p, s, jax.ShapeDtypeStruct((3, size, size, ch), jnp.float32))
    assert out.shape == (3, 7)
  net = models.build("resnet", 1, depth=8, in_channels=1, shortcuts=False)
  apply, params, state, _ = js.adapters.split(net)
  y = apply(params, state, jnp.ones((2, 8, 8, 1)))
  assert y.shape == (2, 10) and bool(jnp.all(jnp.isfinite(y)))
  assert params["stem"]["kernel"].shape == (3, 3, 1, 16)  # HWIO
  fl = js.adapters.nnx.first_layer(net)  # the affine surface path: stem conv, then the rest (float32: 1e-5)
  assert fl.name == "ResNet.stem"
  np.testing.assert_allclose(fl.rest(params, state, fl.linear(fl.select(params), jnp.ones((2, 8, 8, 1)))), y, rtol=1e-5)
  with pytest.raises(ValueError, match="6n \\+ 2"):
    models.build("resnet", 0, depth=21)


def test_resnet_shortcut_changes_function_not_parameters():
  a, p, s, _ = js.adapters.split(models.build("resnet", 0, depth=8, in_channels=1, shortcut_type="pad"))
  b, q, t, _ = js.adapters.split(models.build("resnet", 0, depth=8, in_channels=1, shortcut_type="pad", shortcuts=False))
  js.tree.assert_allclose(p, q, rtol=0)
  x = jax.random.uniform(jax.random.key(0), (4, 8, 8, 1))
  assert not np.allclose(a(p, s, x), b(q, t, x))


def test_keskar_models():
  f1 = nnx.eval_shape(lambda: models.build("keskar_f1", 0, in_features=64, width=32, depth=3, num_classes=10))
  assert models.count_params(f1) == _dense_count([64, 32, 32, 32, 10]) + 3 * 64
  a, p, s, _ = js.adapters.split(f1)
  assert jax.eval_shape(a, p, s, jax.ShapeDtypeStruct((2, 8, 8, 1), jnp.float32)).shape == (2, 10)
  c1 = models.build("keskar_c1", 0, image_size=8, in_channels=1, channels=[8, 12], dense=[16, 8], dropout=0.5)
  # conv 5x5 with bias, BN after each conv and hidden dense; 8x8 -> 4x4 -> 2x2 after two SAME 3x3/2 pools
  expected = (25 * 1 * 8 + 8) + 16 + (25 * 8 * 12 + 12) + 24 + (2 * 2 * 12 * 16 + 16) + 32 + (16 * 8 + 8) + 16 + (8 * 10 + 10)
  assert models.count_params(c1) == expected
  train_apply, apply, params, state = js.adapters.nnx.split_train(c1)
  train_apply, apply = jax.jit(train_apply), jax.jit(apply)
  # Distinct examples: identical ones make train-mode BatchNorm output zeros, hiding the dropout.
  x = jax.random.normal(jax.random.key(1), (3, 8, 8, 1))
  out1, s1 = train_apply(params, state, x)
  out2, _ = train_apply(params, s1, x)
  assert not np.allclose(out1, out2)  # dropout active in train mode, its RNG state advances
  np.testing.assert_array_equal(apply(params, state, x), apply(params, state, x))  # eval mode: deterministic
  assert apply(params, state, x).shape == (3, 10)
  fl = js.adapters.nnx.first_layer(c1)  # the affine surface path: conv1, then the rest in eval mode (float32: 1e-5)
  assert fl.name == "KeskarC1.conv1"
  via = jax.jit(lambda p, s, x: fl.rest(p, s, fl.linear(fl.select(p), x)))(params, state, x)
  np.testing.assert_allclose(via, apply(params, state, x), rtol=1e-5, atol=1e-6)


def test_flops_per_example_conv():
  a, p, s, _ = js.adapters.split(models.build("resnet", 0, depth=8, in_channels=1))
  f = models.flops_per_example(a, p, s, jnp.zeros((8, 8, 1)))
  f2 = models.flops_per_example(a, p, s, jnp.zeros((16, 16, 1)))
  # Analytic multiply-adds (x2) of the convs and the classifier if every padded product counted:
  full = 2 * (9 * 16 * 64 + 2 * 9 * 16 * 16 * 64 + (9 * 16 * 32 + 9 * 32 * 32 + 16 * 32) * 16
              + (9 * 32 * 64 + 9 * 64 * 64 + 32 * 64) * 4 + 64 * 10)
  assert full == 1_527_040
  # XLA skips the products with the zero padding (a large share on 2x2 maps) and adds BN/relu work.
  assert 0.6 * full < f < 1.05 * full
  assert 3.5 < f2 / f < 5.0  # 4x the pixels, relatively less padding


# ----------------------------------------------------------------------------- spin glass
from jaxscape.models import spin_glass as sg  # noqa: E402


def test_spin_glass_energy_and_gradient_match_einsum(x64):
  n = 6
  X = sg.disorder(jax.random.key(0), n, p=3, dtype=jnp.float64)
  w = sg.random_point(jax.random.key(1), n, dtype=jnp.float64)
  Xn, wn = np.asarray(X), np.asarray(w)
  np.testing.assert_allclose(np.dot(wn, wn), n, rtol=1e-14)
  ref = np.einsum("ijk,i,j,k->", Xn, wn, wn, wn) / n  # N^{-(p-1)/2} = 1/N for p = 3
  np.testing.assert_allclose(sg.energy(w, X), ref, rtol=1e-12)
  np.testing.assert_allclose(sg.energy_per_spin(w, X), ref / n, rtol=1e-12)
  g_ref = (np.einsum("ajk,j,k->a", Xn, wn, wn) + np.einsum("iak,i,k->a", Xn, wn, wn) + np.einsum("ija,i,j->a", Xn, wn, wn)) / n
  np.testing.assert_allclose(jax.grad(sg.energy)(w, X), g_ref, rtol=1e-12)
  rg = sg.riemannian_grad(w, X)
  np.testing.assert_allclose(np.dot(rg, wn), 0.0, atol=1e-12)
  np.testing.assert_allclose(rg, g_ref - np.dot(g_ref, wn) / n * wn, rtol=1e-12, atol=1e-13)
  X4 = sg.disorder(jax.random.key(2), 5, p=4, dtype=jnp.float64)
  w4 = sg.random_point(jax.random.key(3), 5, dtype=jnp.float64)
  ref4 = np.einsum("ijkl,i,j,k,l->", np.asarray(X4), *[np.asarray(w4)] * 4) * 5 ** -1.5
  np.testing.assert_allclose(sg.energy(w4, X4), ref4, rtol=1e-12)
  # Euler: w . grad H = p H for a homogeneous degree-p energy
  np.testing.assert_allclose(np.dot(np.asarray(jax.grad(sg.energy)(w4, X4)), np.asarray(w4)), 4 * ref4, rtol=1e-12)


def test_spin_glass_riemannian_hessian_vs_constrained_dense_and_finite_differences(x64):
  n = 7
  X = sg.disorder(jax.random.key(5), n, p=3, dtype=jnp.float64)
  w = sg.random_point(jax.random.key(6), n, dtype=jnp.float64)  # a generic (non-critical) point
  B = sg.tangent_basis(w)
  np.testing.assert_allclose(B.T @ B, np.eye(n - 1), atol=1e-13)
  np.testing.assert_allclose(B.T @ w, 0.0, atol=1e-13)
  hess = jax.jit(sg.riemannian_hessian)(w, X)
  # Dense constrained reference: the Euclidean Hessian of H restricted to the sphere through the
  # (second-order) retraction, in tangent coordinates z: z -> H(R(w + B z)).
  dense = jax.jit(jax.hessian(lambda z: sg.energy(sg.retract(w + B @ z), X)))(jnp.zeros(n - 1))
  np.testing.assert_allclose(hess, dense, rtol=1e-10, atol=1e-10)
  # ... and the projection term matters: without it the result is wrong at this non-critical point.
  naive = B.T @ jax.jit(jax.hessian(sg.energy))(w, X) @ B
  assert not np.allclose(naive, dense, atol=1e-3)
  # Central second differences along random tangent directions (step 1e-3: error ~1e-6 relative).
  V = jax.random.normal(jax.random.key(10), (3, n - 1), jnp.float64) @ B.T
  t = 1e-3
  f = jax.jit(jax.vmap(lambda v, t: sg.energy(sg.retract(w + t * v), X), in_axes=(0, None)))
  fd = (f(V, t) - 2 * f(V, 0.0) + f(V, -t)) / t**2
  np.testing.assert_allclose(fd, np.einsum("vi,ij,vj->v", V @ B, hess, V @ B), rtol=1e-5)


def test_spin_glass_descent_reaches_minima_and_vmaps(x64):
  n = 16
  out = sg.minimise(jax.random.key(0), n, num_disorder=2, num_starts=3, lr=0.1, tol=1e-8, max_steps=5000,
                    dtype=jnp.float64)
  assert out.energy.shape == (2, 3) and bool(out.converged.all())
  assert bool((out.grad_norm < 1e-8).all())
  assert float(out.energy.max()) < -1.0 and float(out.energy.min()) > -sg.E0[3] - 0.1
  np.testing.assert_allclose(jnp.sum(out.w**2, -1), n, rtol=1e-12)
  kx, kw = jax.random.split(jax.random.key(0))
  Xs = jax.vmap(lambda k: sg.disorder(k, n, dtype=jnp.float64))(jax.random.split(kx, 2))
  idx = jax.jit(jax.vmap(jax.vmap(sg.index, in_axes=(0, None))))(out.w, Xs)
  np.testing.assert_array_equal(idx, 0)  # every end point is a local minimum
  # The vmapped run equals a single descent of the same (disorder, start).
  X1 = sg.disorder(jax.random.split(kx, 2)[1], n, dtype=jnp.float64)
  w1 = sg.random_point(jax.random.split(kw, 6).reshape(2, 3)[1, 2], n, dtype=jnp.float64)
  single = jax.jit(lambda w, X: sg.descend(w, X, lr=0.1, tol=1e-8, max_steps=5000))(w1, X1)
  np.testing.assert_allclose(single.energy, out.energy[1, 2], rtol=1e-10)
  assert int(single.steps) == int(out.steps[1, 2])
  # A saddle has positive index: -w is a critical point too (odd p: H(-w) = -H(w)), with the Hessian negated.
  assert int(jax.jit(sg.index)(-out.w[1, 2], X1)) == n - 1


# ----------------------------------------------------------------------------- spin-glass ensembles


def _ensemble(n=10, d=2, s=5, seed=0):
  X = jax.vmap(lambda k: sg.disorder(k, n))(jax.random.split(jax.random.key(seed), d))
  w0 = jax.vmap(jax.vmap(lambda k: sg.random_point(k, n)))(jax.random.split(jax.random.key(seed + 1), (d, s)))
  return w0, X


@pytest.mark.parametrize("d,s", [(2, 5), (5, 2)])
def test_descend_ensemble_matches_plain_vmap(d, s):
  """Rounds with compaction reach the same end points as one vmapped run (tolerance 1e-3 on w, 1e-5 on e).

  With 5 disorder samples of 2 starts the samples finish in different rounds, so later rounds run on a
  compacted, padded subset of the samples.
  """
  w0, X = _ensemble(d=d, s=s)
  plain = jax.vmap(jax.vmap(lambda w, x: sg.descend(w, x, lr=0.1, tol=1e-4, max_steps=5000), in_axes=(0, None)))(w0, X)
  rounds = sg.descend_ensemble(w0, X, lr=0.1, tol=1e-4, max_steps=5000, round_steps=50)
  assert bool(np.all(plain.converged)) and bool(np.all(rounds.converged))
  np.testing.assert_allclose(rounds.energy, plain.energy, atol=1e-5)
  np.testing.assert_allclose(rounds.w, plain.w, atol=1e-3)
  # every run took (within a round restart) as many steps as alone
  np.testing.assert_allclose(rounds.steps, plain.steps, atol=2)
  assert np.all(rounds.grad_norm < 1e-4)


def test_descend_ensemble_respects_budget_and_shapes():
  w0, X = _ensemble(d=2, s=3)
  out = sg.descend_ensemble(w0, X, lr=0.1, tol=1e-12, max_steps=120, round_steps=50)
  assert out.energy.shape == (2, 3) and out.w.shape == (2, 3, 10)
  assert np.all(out.steps == 120) and not np.any(out.converged)
  np.testing.assert_allclose(np.sum(np.asarray(out.w) ** 2, -1), 10.0, rtol=1e-5)
  with pytest.raises(ValueError, match="starts"):
    sg.descend_ensemble(w0[0], X)


def test_tangent_spectrum_matches_dense_reference():
  """float64 eigenvalues against a NumPy reference built from the Euclidean Hessian (tolerance 1e-9)."""
  w0, X = _ensemble(n=7, d=2, s=2, seed=3)
  out = sg.descend_ensemble(w0, X, lr=0.1, tol=1e-5, max_steps=5000)
  eig = sg.tangent_spectrum(out.w, X, batch_size=1)
  assert eig.shape == (2, 2, 6) and eig.dtype == np.float64
  for d in range(2):
    Xd = np.asarray(X[d], np.float64)
    for s in range(2):
      w = np.asarray(out.w[d, s], np.float64)
      n = w.size
      sym = sum(np.transpose(Xd, p) for p in [(0, 1, 2), (0, 2, 1), (1, 0, 2), (1, 2, 0), (2, 0, 1), (2, 1, 0)])
      hess = np.einsum("ijk,k->ij", sym, w) / n          # p = 3: H = N^-1 X(w, w, w)
      grad = np.einsum("ijk,j,k->i", sym, w, w) / (2 * n)
      u = w / np.linalg.norm(w)
      basis = np.linalg.svd(np.eye(n) - np.outer(u, u))[0][:, : n - 1]
      ref = np.linalg.eigvalsh(basis.T @ (hess - (w @ grad / n) * np.eye(n)) @ basis)
      np.testing.assert_allclose(eig[d, s], ref, atol=1e-9)
  assert np.all(eig[..., 0] > 0)   # GD end points are minima


def test_linear_init_and_forward_match_numpy(x64):
  p = models.linear.init(jax.random.key(3), (2, 4, 3, 1), scale=2.0, dtype=jnp.float64)
  keys = jax.random.split(jax.random.key(3), 3)
  for k, w, shape in zip(keys, [p["layers"][0]["kernel"], p["layers"][1]["kernel"], p["head"]["kernel"]],
                         [(2, 4), (4, 3), (3, 1)]):
    np.testing.assert_array_equal(w, 2.0 * np.asarray(jax.random.normal(k, shape, jnp.float64)))
  w1, w2, v = (np.asarray(a) for a in (p["layers"][0]["kernel"], p["layers"][1]["kernel"], p["head"]["kernel"]))
  x = np.random.default_rng(0).normal(size=(5, 2))
  sig = lambda z: 1 / (1 + np.exp(-z))  # noqa: E731
  # float64 rounding of a few products: 1e-12 relative
  np.testing.assert_allclose(models.linear.forward(p, x), x @ w1 @ w2 @ v, rtol=1e-12)
  np.testing.assert_allclose(models.linear.forward(p, x, jax.nn.sigmoid), sig(sig(x @ w1) @ w2) @ v, rtol=1e-12)
  with pytest.raises(ValueError, match="input and an output"):
    models.linear.init(jax.random.key(0), (2,))


def test_linear_product_surface_is_the_product_loss_on_a_grid(x64):
  rng = np.random.default_rng(1)
  x, y = rng.normal(size=(30, 2)), rng.normal(size=(30, 1))
  loss = lambda u: jnp.mean((x @ u - y) ** 2)  # noqa: E731
  center = jnp.array([[0.5], [-1.0]])
  s = models.linear.product_surface(loss, center, span=2.0, num=5)
  u1, u2 = np.linspace(-1.5, 2.5, 5), np.linspace(-3.0, 1.0, 5)
  np.testing.assert_allclose(s.x, u1, rtol=0, atol=1e-15)
  np.testing.assert_allclose(s.y, u2, rtol=0, atol=1e-15)
  ref = np.array([[np.mean((x @ np.array([[a], [b]]) - y) ** 2) for a in u1] for b in u2])
  np.testing.assert_allclose(s.loss, ref, rtol=1e-12)  # float64 sums of 30 squares
  with pytest.raises(ValueError, match=r"\[2, 1\]"):
    models.linear.product_surface(loss, jnp.zeros((3, 1)), span=1.0, num=3)
