"""Directions: filter normalisation, scale invariance, ignore, interpolation, PCA."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxscape as js
from jaxscape import directions as jd


def _params(seed=0):
  rng = np.random.default_rng(seed)
  f = lambda *s: jnp.asarray(rng.normal(size=s), jnp.float32)
  return {"conv": {"kernel": f(3, 3, 2, 4), "bias": f(4)}, "dense": {"kernel": f(36, 5), "bias": f(5)}, "bn": {"scale": f(4)}}


def test_every_filter_has_the_norm_of_its_weight_filter():
  params = _params()
  dirs = js.random_directions(jax.random.key(1), params, n=2, norm="filter", ignore="biasbn")
  for d in dirs:
    for name in ("conv", "dense"):
      w, v = np.asarray(params[name]["kernel"]), np.asarray(d[name]["kernel"])
      axes = tuple(range(w.ndim - 1))  # a filter is a slice along the last (output) axis
      np.testing.assert_allclose(np.sqrt((v**2).sum(axes)), np.sqrt((w**2).sum(axes)), rtol=1e-6)
      assert w.shape[-1] == np.sqrt((v**2).sum(axes)).size


def test_ignore_biasbn_zeroes_1d_leaves_and_none_keeps_them():
  params = _params()
  d = js.random_directions(jax.random.key(2), params, n=1, ignore="biasbn")[0]
  for leaf in (d["conv"]["bias"], d["dense"]["bias"], d["bn"]["scale"]):
    assert np.all(np.asarray(leaf) == 0.0)
  d = js.random_directions(jax.random.key(2), params, n=1, ignore=None)[0]
  # kept 1-D leaves are normalised as a whole to the weight leaf's norm
  np.testing.assert_allclose(np.linalg.norm(d["bn"]["scale"]), np.linalg.norm(params["bn"]["scale"]), rtol=1e-6)


def test_layer_model_and_none_norms():
  params = _params()
  key = jax.random.key(3)
  raw = js.tree.normal_like(key, params)
  d = jd.normalize(raw, params, "layer", ignore=None)
  for v, w in zip(jax.tree.leaves(d), jax.tree.leaves(params)):
    np.testing.assert_allclose(np.linalg.norm(v), np.linalg.norm(w), rtol=1e-6)
  d = jd.normalize(raw, params, "model", ignore=None)
  np.testing.assert_allclose(js.tree.norm(d), js.tree.norm(params), rtol=1e-6)
  js.tree.assert_allclose(jd.normalize(raw, params, "none", ignore=None), raw)
  with pytest.raises(ValueError, match="unknown norm"):
    jd.normalize(raw, params, "filters")
  with pytest.raises(ValueError, match="unknown ignore"):
    jd.normalize(raw, params, "filter", ignore="bias")


def test_directions_are_reproducible_and_first_matches_1d():
  params = _params()
  a = js.random_directions(jax.random.key(4), params, n=2)
  b = js.random_directions(jax.random.key(4), params, n=1)
  js.tree.assert_allclose(a[0], b[0])
  assert a.info["norm"] == "filter" and a.info["key"] == b.info["key"]
  assert not js.tree.allclose(a[0], a[1])


def test_orthogonalize():
  params = _params()
  d = js.random_directions(jax.random.key(5), params, n=2, orthogonalize=True)
  cos = js.tree.dot(d[0], d[1]) / (js.tree.norm(d[0]) * js.tree.norm(d[1]))
  assert abs(float(cos)) < 1e-6
  plain = js.random_directions(jax.random.key(5), params, n=2)
  np.testing.assert_allclose(js.tree.norm(d[1]), js.tree.norm(plain[1]), rtol=1e-6)


def _mlp(p, x):
  h = jax.nn.relu(x @ p["l1"]["kernel"] + p["l1"]["bias"][None])
  return h @ p["l2"]["kernel"] + p["l2"]["bias"][None]


def test_filter_normalised_curve_is_invariant_to_relu_rescaling():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(64, 5)).astype(np.float32)
  y = rng.integers(0, 3, 64)
  p = {"l1": {"kernel": jnp.asarray(rng.normal(size=(5, 8)), jnp.float32), "bias": jnp.asarray(rng.normal(size=8), jnp.float32)},
       "l2": {"kernel": jnp.asarray(rng.normal(size=(8, 3)), jnp.float32), "bias": jnp.zeros(3)}}
  c = 10.0
  q = {"l1": {"kernel": c * p["l1"]["kernel"], "bias": c * p["l1"]["bias"]}, "l2": {"kernel": p["l2"]["kernel"] / c, "bias": p["l2"]["bias"]}}
  obj = js.Objective.from_apply(_mlp, p, data=(x, y), batch_size=64)
  np.testing.assert_allclose(obj.value(p), obj.value(q), rtol=1e-5)  # same function
  key = jax.random.key(6)
  curves = {}
  for norm in ("filter", "none"):
    for name, params in (("p", p), ("q", q)):
      d = js.random_directions(key, params, n=1, norm=norm)
      curves[norm, name] = js.loss_surface(obj, params, d, x=(-1, 1, 7), quiet=True).loss
  # float32 through a ReLU net: 1e-4 relative
  np.testing.assert_allclose(curves["filter", "p"], curves["filter", "q"], rtol=1e-4)
  assert np.max(np.abs(curves["none", "p"] - curves["none", "q"])) > 0.1


def test_interpolation_and_plane_hit_the_endpoints():
  rng = np.random.default_rng(1)
  x = rng.normal(size=(40, 5)).astype(np.float32)
  y = rng.integers(0, 3, 40)
  mk = lambda: {"l1": {"kernel": jnp.asarray(rng.normal(size=(5, 8)), jnp.float32), "bias": jnp.asarray(rng.normal(size=8), jnp.float32)},
                "l2": {"kernel": jnp.asarray(rng.normal(size=(8, 3)), jnp.float32), "bias": jnp.zeros(3)}}
  a, b, c = mk(), mk(), mk()
  obj = js.Objective.from_apply(_mlp, a, data=(x, y), batch_size=64)
  line = js.loss_surface(obj, a, js.interpolation_direction(a, b), x=(-0.5, 1.5, 5), quiet=True)
  np.testing.assert_allclose(line.loss[[1, 3]], [obj.value(a), obj.value(b)], rtol=1e-5)
  plane = js.loss_surface(obj, a, js.plane_directions(a, b, c), x=(0, 1, 2), y=(0, 1, 2), quiet=True)
  np.testing.assert_allclose([plane.loss[0, 0], plane.loss[0, 1], plane.loss[1, 0]], [obj.value(a), obj.value(b), obj.value(c)], rtol=1e-5)
  orth = js.plane_directions(a, b, c, orthogonalize=True)
  assert abs(float(js.tree.dot(orth[0], orth[1]))) < 1e-3 * float(js.tree.norm(orth[0]) * js.tree.norm(orth[1]))


def test_pca_directions_match_sklearn_and_recover_a_planar_trajectory():
  from sklearn.decomposition import PCA

  rng = np.random.default_rng(2)
  final = {"kernel": rng.normal(size=(4, 3)), "bias": rng.normal(size=3)}
  u, v = rng.normal(size=12), rng.normal(size=12)
  t = np.linspace(0, 1, 9)
  snaps = []
  for ti in t:
    off = (1 - ti) * 3 * u + np.sin(3 * ti) * v
    snaps.append({"kernel": final["kernel"] + off.reshape(4, 3), "bias": final["bias"]})
  pca = js.pca_directions(snaps, n=2)
  rows = np.stack([(s["kernel"] - final["kernel"]).ravel() for s in snaps])
  ref = PCA(n_components=2).fit(rows)
  np.testing.assert_allclose(pca.explained_variance_ratio, ref.explained_variance_ratio_, rtol=1e-5)
  np.testing.assert_allclose(pca.explained_variance_ratio.sum(), 1.0, rtol=1e-5)  # trajectory lies in a plane
  np.testing.assert_allclose(pca.residuals, 0.0, atol=1e-4)
  for i, d in enumerate(pca.directions):
    np.testing.assert_allclose(np.linalg.norm(np.asarray(d["kernel"])), 1.0, rtol=1e-5)
    assert np.all(np.asarray(d["bias"]) == 0.0)  # biasbn: biases left out (by role)
    np.testing.assert_allclose(abs(np.dot(np.asarray(d["kernel"]).ravel(), ref.components_[i])), 1.0, rtol=1e-5)
  np.testing.assert_allclose(pca.coords[-1], 0.0, atol=1e-6)  # the final point is the origin
  with pytest.raises(ValueError, match="at least 3 snapshots"):
    js.pca_directions(snaps[:2], n=2)


def test_structure_mismatch_is_a_clear_error():
  params = _params()
  with pytest.raises(ValueError, match="structure of params"):
    jd.as_directions([{"w": jnp.ones(3)}], params)
  bad = jax.tree.map(lambda p: jnp.ones((2,) + p.shape[:-1] + (p.shape[-1] + 1,)), params)
  with pytest.raises(ValueError, match="has shape"):
    jd.as_directions(jd.Directions(bad), params)


def test_interpolating_batchnorm_statistics_reaches_the_second_model():
  from flax import nnx

  class Net(nnx.Module):
    def __init__(self, rngs):
      self.dense = nnx.Linear(5, 6, rngs=rngs)
      self.bn = nnx.BatchNorm(6, rngs=rngs)
      self.out = nnx.Linear(6, 3, rngs=rngs)

    def __call__(self, x):
      return self.out(nnx.relu(self.bn(self.dense(x))))

  rng = np.random.default_rng(4)
  x = rng.normal(size=(40, 5)).astype(np.float32)
  y = rng.integers(0, 3, 40)
  models = []
  for seed in (0, 1):
    m = Net(nnx.Rngs(seed))
    m.bn.mean[...] = jnp.asarray(rng.normal(size=6), jnp.float32)
    m.bn.var[...] = jnp.asarray(rng.uniform(0.5, 2.0, size=6), jnp.float32)
    models.append(m)
  (oa, pa), (ob, pb) = (js.Objective.from_model(m, data=(x, y)) for m in models)
  line = js.loss_surface(oa, pa, js.interpolation_direction(pa, pb, oa.state, ob.state), x=(0, 1, 3), quiet=True)
  np.testing.assert_allclose(line.loss[[0, 2]], [oa.value(pa), ob.value(pb)], rtol=1e-5)
  assert line.meta["config"]["bn_policy"] == "interpolate"
  # the midpoint has the mean weights and the mean statistics
  mid = js.tree.scale(0.5, js.tree.add(pa, pb))
  mid_state = jax.tree.map(lambda a, b: (a + b) / 2 if jnp.issubdtype(a.dtype, jnp.floating) else a, oa.state, ob.state)
  import dataclasses

  np.testing.assert_allclose(line.loss[1], dataclasses.replace(oa, state=mid_state).value(mid), rtol=1e-5)
  frozen = js.loss_surface(oa, pa, js.interpolation_direction(pa, pb), x=(0, 1, 3), quiet=True)
  assert frozen.meta["config"]["bn_policy"] == "frozen"
  assert not np.isclose(frozen.loss[2], float(ob.value(pb)), rtol=1e-3)  # a's statistics with b's weights
  with pytest.raises(ValueError, match="state of every endpoint"):
    js.interpolation_direction(pa, pb, oa.state, None)


def _hessian_setup(seed=3):
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(48, 4))
  y = rng.integers(0, 3, 48)
  p = {"l1": {"kernel": jnp.asarray(rng.normal(size=(4, 6))), "bias": jnp.asarray(0.1 * rng.normal(size=6))},
       "l2": {"kernel": jnp.asarray(rng.normal(size=(6, 3))), "bias": jnp.zeros(3)}}
  return js.Objective.from_apply(_mlp, p, data=(x, y), batch_size=16), p


@pytest.mark.parametrize("which", ["largest", "smallest"])
def test_hessian_directions_are_the_dense_eigenvectors(x64, which):
  obj, p = _hessian_setup()
  vals, vecs = js.hessian.dense_eigh(obj, p)
  vals, vecs = np.asarray(vals), np.asarray(vecs)
  order = np.argsort(-vals if which == "largest" else vals)[:2]
  gap = np.min(np.abs(vals[order][:, None] - np.delete(vals, order)[None]))
  assert gap > 1e-3 and abs(vals[order[0]] - vals[order[1]]) > 1e-3  # separated pairs: the vectors are well defined
  d = js.hessian_directions(jax.random.key(0), obj, p, k=2, which=which, tol=1e-10)
  assert d.info["kind"] == "hessian" and d.info["which"] == which and d.info["k"] == 2 and d.info["matrix"] == "hessian"
  assert all(d.info["converged"]) and len(d.info["residuals"]) == 2 and d.info["key"] == js.io.key_record(jax.random.key(0))
  np.testing.assert_allclose(d.info["eigenvalues"], vals[order], rtol=1e-8, atol=1e-10)
  for i, v in enumerate(d):
    flat = np.asarray(js.tree.ravel(v)[0])
    ref = vecs[:, order[i]] * np.sign(vecs[np.argmax(np.abs(vecs[:, order[i]])), order[i]])
    # separated eigenvalues with residual <= 1e-10 |lambda|: the vector is within residual/gap of the dense one
    np.testing.assert_allclose(flat, ref, atol=1e-6)
    assert flat[np.argmax(np.abs(flat))] > 0  # the sign is fixed
    assert all(leaf.dtype == jnp.float64 for leaf in jax.tree.leaves(v))


def test_hessian_directions_normalise_like_random_directions(x64):
  obj, p = _hessian_setup()
  d = js.hessian_directions(jax.random.key(1), obj, p, k=2, norm="filter", ignore="biasbn")
  assert d.info["norm"] == "filter" and d.info["ignore"] == "biasbn"
  for v in d:
    for name in ("l1", "l2"):
      np.testing.assert_allclose(np.linalg.norm(np.asarray(v[name]["kernel"]), axis=0),
                                 np.linalg.norm(np.asarray(p[name]["kernel"]), axis=0), rtol=1e-8)
      assert np.all(np.asarray(v[name]["bias"]) == 0.0)
  m = js.hessian_directions(jax.random.key(1), obj, p, k=1, norm="model")
  np.testing.assert_allclose(js.tree.norm(m[0]), js.tree.norm(p), rtol=1e-8)
  with pytest.raises(ValueError, match="unknown norm"):
    js.hessian_directions(jax.random.key(1), obj, p, k=1, norm="filters")
  with pytest.raises(ValueError, match="k must be a positive integer"):
    js.hessian_directions(jax.random.key(1), obj, p, k=0)


def test_surface_along_hessian_directions_has_their_curvature(x64):
  obj, p = _hessian_setup()
  d = js.hessian_directions(jax.random.key(2), obj, p, k=2, tol=1e-10)
  h = 1e-3
  surf = js.loss_surface(obj, p, d, x=(-h, h, 3), y=(-h, h, 3), quiet=True)
  assert surf.meta["config"]["directions"]["kind"] == "hessian"
  loss = surf.loss
  # second differences along unit eigenvectors are the eigenvalues: error O(h^2) from the fourth derivative
  second = [(loss[1, 2] + loss[1, 0] - 2 * loss[1, 1]) / h**2, (loss[2, 1] + loss[0, 1] - 2 * loss[1, 1]) / h**2]
  np.testing.assert_allclose(second, d.info["eigenvalues"], rtol=1e-4)
