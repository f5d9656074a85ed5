"""The affine first-layer surface path and mixed-precision evaluation (Objective options)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxscape as js
from jaxscape import surface as jsurf
from jaxscape import stats

# (in_features, hidden, examples, batch_size): digits-sized inputs and MNIST-sized inputs.
SHAPES = {"digits64": (64, 12, 60, 25), "mnist784": (784, 4, 40, 16)}


def _dense_mlp(p, x):
  return _dense_rest(p, (), x.reshape(x.shape[0], -1) @ p["l1"]["kernel"] + p["l1"]["bias"][None])


def _dense_rest(p, s, z):
  return jnp.tanh(z) @ p["l2"]["kernel"] + p["l2"]["bias"][None]


def _problem(shape, dtype, nnx=False):
  """A one-hidden-layer tanh MLP objective on synthetic data, its params and two random directions, in ``dtype``.

  ``nnx``: the jaxscape ``MLP`` (first layer found automatically); else a pure function with ``FirstLayer.dense``
  (no eager model initialisation: cheaper to set up).
  """
  d_in, hidden, n, bs = SHAPES[shape]
  rng = np.random.default_rng(0)
  x = rng.normal(size=(n, d_in)).astype(dtype)
  y = rng.integers(0, 10, n)
  if nnx:
    net = js.models.build("mlp", 0, in_features=d_in, widths=[hidden], out_features=10, activation="tanh")
    # the pre-flight check runs the float32 net on x (float64 in the x64 case: flax promotes on purpose)
    with jax.numpy_dtype_promotion("standard"):
      obj, params = js.Objective.from_model(net, data=(x, y), batch_size=bs)  # ragged: balanced batches with padding
    params = js.tree.astype(params, dtype)
  else:
    params = {"l1": {"kernel": rng.normal(size=(d_in, hidden)) / np.sqrt(d_in), "bias": rng.normal(size=hidden) / 4},
              "l2": {"kernel": rng.normal(size=(hidden, 10)) / np.sqrt(hidden), "bias": np.zeros(10)}}
    params = jax.tree.map(lambda a: jnp.asarray(a, dtype), params)
    obj = js.Objective.from_apply(_dense_mlp, params, data=(x, y), batch_size=bs,
                                  first_layer=js.FirstLayer.dense(("l1",), _dense_rest))
  return obj, params, _directions(params, 2)


def _directions(params, n, scale=0.3):
  """``n`` random Gaussian directions (host-made: no per-leaf device work, no per-filter normalisation)."""
  rng = np.random.default_rng(1)
  return [jax.tree.map(lambda a: jnp.asarray(scale * rng.normal(size=a.shape), a.dtype), params) for _ in range(n)]


ONE_DEVICE = dict(devices=jax.devices()[:1], quiet=True)  # the 8-device mesh is covered by the BatchNorm test


@pytest.mark.parametrize("shape", sorted(SHAPES))
@pytest.mark.parametrize("precision", ["float32", "float64"])
def test_affine_grid_equals_plain_grid(request, shape, precision):
  # Full-data means at every point (a scan over batches of grid_batch_sums, as in a surface chunk), affine vs
  # plain path, on a 5x3 2-D grid and a 5-point 1-D grid, all in one compilation.
  if precision == "float64":
    request.getfixturevalue("x64")
  obj, params, dirs = _problem(shape, np.dtype(precision))
  plain = obj.with_first_layer(None)
  assert obj.describe()["first_layer"] == "l1" and "first_layer" not in plain.describe()
  c2 = jnp.asarray(jsurf.grid_coordinates([np.linspace(-1, 1, 5), np.linspace(-0.5, 1, 3)]), precision)
  c1 = jnp.linspace(-1, 1, 5, dtype=precision)[:, None]
  v2, v1 = js.tree.stack(dirs), js.tree.stack(dirs[:1])

  @jax.jit
  def grids(params):
    def chunk(o, c, v):
      sums = jax.lax.map(lambda b: o.grid_batch_sums(params, v, c, b), (o.x, o.y, o.w))
      return {k: s.sum(0) / o.num_examples for k, s in sums.items()}

    return [(chunk(obj, c, v), chunk(plain, c, v)) for c, v in ((c2, v2), (c1, v1))]

  # float64: both paths agree to rounding (1e-12 relative); float32: 1e-5 relative (means over <= 60 examples).
  rtol = 1e-12 if precision == "float64" else 1e-5
  for a, b in grids(params):
    assert a["loss"].dtype == np.dtype(precision)
    np.testing.assert_allclose(a["loss"], b["loss"], rtol=rtol)
    np.testing.assert_allclose(a["accuracy"], b["accuracy"], atol=1e-6)


@pytest.fixture(scope="module")
def digits_surfaces():
  obj, params, dirs = _problem("digits64", np.float32, nnx=True)
  grid = dict(x=(-1, 1, 5), y=(-1, 1, 5), **ONE_DEVICE, chunk_size=8)
  return obj, params, dirs, grid, js.loss_surface(obj, params, dirs, **grid)


def test_affine_surface_equals_plain_surface_and_is_recorded(digits_surfaces):
  obj, params, dirs, grid, surf = digits_surfaces
  plain = js.loss_surface(obj.with_first_layer(None), params, dirs, **grid)
  np.testing.assert_allclose(surf.loss, plain.loss, rtol=1e-5)  # float32 means over 60 examples
  np.testing.assert_allclose(surf.accuracy, plain.accuracy, atol=1e-6)
  assert surf.meta["config"]["objective"]["first_layer"] == "MLP.layers.0"
  assert "first_layer" not in plain.meta["config"]["objective"]


def test_affine_path_moves_batchnorm_state_with_the_point():
  # BatchNorm between the first Dense and its activation, statistics interpolated between two models.
  rng = np.random.default_rng(0)
  x, y = rng.normal(size=(30, 6)).astype(np.float32), rng.integers(0, 3, 30)
  objs, params = [], []
  for seed in (0, 1):
    net = js.models.build("mlp", seed, in_features=6, widths=[5], out_features=3, batch_norm=True)
    net.norms[0].mean[...] = jnp.asarray(rng.normal(size=5), jnp.float32)
    net.norms[0].var[...] = jnp.asarray(rng.uniform(0.5, 2.0, size=5), jnp.float32)
    o, p = js.Objective.from_model(net, data=(x, y), batch_size=16)
    objs.append(o); params.append(p)
  assert objs[0].first_layer is not None
  d = js.interpolation_direction(params[0], params[1], objs[0].state, objs[1].state)
  assert d.state_vectors is not None
  a = js.loss_surface(objs[0], params[0], d, x=(-0.5, 1.5, 5), quiet=True)
  b = js.loss_surface(objs[0].with_first_layer(None), params[0], d, x=(-0.5, 1.5, 5), quiet=True)
  np.testing.assert_allclose(a.loss, b.loss, rtol=1e-5)  # float32
  # coordinate 1 is model b, statistics included
  np.testing.assert_allclose(a.loss[3], objs[1].value(params[1]), rtol=1e-5)


def _pure_mlp(p, x):
  return jnp.tanh(x @ p["l1"]["kernel"] + p["l1"]["bias"][None]) @ p["l2"]["kernel"] + p["l2"]["bias"][None]


def _pure_rest(p, s, z):
  return jnp.tanh(z) @ p["l2"]["kernel"] + p["l2"]["bias"][None]


def _pure_problem():
  rng = np.random.default_rng(2)
  x, y = rng.normal(size=(20, 5)).astype(np.float32), rng.integers(0, 3, 20)
  p = {"l1": {"kernel": jnp.asarray(rng.normal(size=(5, 4)), jnp.float32), "bias": jnp.ones(4)},
       "l2": {"kernel": jnp.asarray(rng.normal(size=(4, 3)), jnp.float32), "bias": jnp.zeros(3)}}
  return x, y, p


def test_dense_first_layer_of_a_pure_function_and_when_it_is_dropped():
  x, y, p = _pure_problem()
  fl = js.FirstLayer.dense(("l1",), _pure_rest)
  assert fl == js.FirstLayer.dense(("l1",), _pure_rest)  # hashable and comparable: shared jit caches
  obj = js.Objective.from_apply(_pure_mlp, p, data=(x, y), batch_size=8, first_layer=fl)
  assert obj.describe()["first_layer"] == "l1"
  vectors = js.tree.stack(_directions(p, 2))
  coords = jnp.array([[0.0, 0.0], [1.0, -0.5], [-2.0, 0.3]])
  batch = (obj.x[1], obj.y[1], obj.w[1])
  a, b = jax.jit(lambda p: [obj.grid_batch_sums(p, vectors, coords, batch, affine=f) for f in (True, False)])(p)
  np.testing.assert_allclose(a["loss"], b["loss"], rtol=1e-5)  # float32
  # Replacing apply (here: an L2 penalty) invalidates the description: plain path, not recorded.
  reg = js.objective.with_l2(obj, 0.1)
  assert reg.first_layer is None and "first_layer" not in reg.describe()
  assert obj.with_data((x[:7], y[:7])).first_layer is fl


def test_first_layer_contract_is_checked():
  x, y, p = _pure_problem()
  affine = js.FirstLayer(lambda q: q["l1"], lambda f, x: x @ f["kernel"] + f["bias"][None] + 1.0, _pure_rest, "shifted")
  with pytest.raises(ValueError, match="linear, not affine"):
    js.Objective.from_apply(_pure_mlp, p, data=(x, y), first_layer=affine)
  wrong = js.FirstLayer.dense(("l1",), lambda q, s, z: jax.nn.relu(z) @ q["l2"]["kernel"] + q["l2"]["bias"][None])
  with pytest.raises(ValueError, match="must equal"):
    js.Objective.from_apply(_pure_mlp, p, data=(x, y), first_layer=wrong)
  with pytest.raises(ValueError, match="does not run"):
    js.Objective.from_apply(_pure_mlp, p, data=(x, y), first_layer=js.FirstLayer.dense(("l3",), _pure_rest))
  net = js.models.build("mlp", 0, in_features=5, widths=[4], out_features=3)
  with pytest.raises(ValueError, match="'auto', a FirstLayer or None"):
    js.Objective.from_model(net, data=(x, y), first_layer="yes")
  with pytest.raises(ValueError, match="floating dtype"):
    js.Objective.from_model(net, data=(x, y), compute_dtype=jnp.int32)


def test_zoo_models_declare_an_exact_first_layer():
  # from_model checks rest(linear(x)) == apply(x) on two examples; here also affine == plain at a few points.
  # (ResNet and KeskarC1: tests/test_models.py.)
  rng = np.random.default_rng(0)
  x, y = rng.normal(size=(6, 64)).astype(np.float32), rng.integers(0, 10, 6)
  linear = js.models.build("mlp", 0, in_features=64, widths=[], out_features=10)
  assert js.Objective.from_model(linear, data=(x, y))[0].describe()["first_layer"] == "MLP.head"
  net = js.models.build("residual_mlp", 0, in_features=64, width=8, depth=2, out_features=10)
  obj, params = js.Objective.from_model(net, data=(x, y))
  assert obj.describe()["first_layer"] == "ResidualMLP.inp"
  vectors = js.tree.stack(_directions(params, 1, scale=0.1))
  coords = jnp.array([[0.0], [0.7]])
  batch = (obj.x[0], obj.y[0], obj.w[0])
  both = jax.jit(lambda p: [obj.grid_batch_sums(p, vectors, coords, batch, affine=f) for f in (True, False)])
  a, b = both(params)
  np.testing.assert_allclose(a["loss"], b["loss"], rtol=1e-5)  # float32


def test_bfloat16_surface_is_close_to_float32_and_recorded(digits_surfaces):
  obj, params, dirs, grid, ref = digits_surfaces
  surf = js.loss_surface(obj.with_compute_dtype(jnp.bfloat16), params, dirs, **grid)
  err = stats.surface_error(surf, ref)
  # measured on this problem: 6e-4 max relative error (float16: 1.2e-4); the bound is 2e-2
  assert err["max_relative_error"] < 2e-2 and err["num_compared"] == 25, err
  assert err["max_relative_error"] > 0  # the forward pass really ran in bfloat16
  assert surf.meta["config"]["objective"]["compute_dtype"] == "bfloat16"
  assert surf.meta["config"]["dtype"] == "float32"  # parameters, coordinates and sums stay float32
  # compute in the parameters' dtype records nothing, and gradients stay in the parameters' dtype
  assert "compute_dtype" not in obj.describe()
  batch = (obj.x[0], obj.y[0], obj.w[0])
  g = jax.jit(jax.grad(lambda p: obj.with_compute_dtype(jnp.bfloat16).loss(p, batch)[0]))(params)
  assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(g))


def test_surface_error_needs_the_same_grid():
  x = np.linspace(-1, 1, 3)
  a = js.Surface((x,), np.ones(3), {}, 0, {})
  b = js.Surface((np.linspace(-1, 1, 4),), np.ones(4), {}, 0, {})
  with pytest.raises(ValueError, match="share their grid"):
    stats.surface_error(a, b)
