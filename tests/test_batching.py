"""Batching strategies: the unrolled loop over batches and the curvature products compiled apart (host callbacks)
agree with the scan and with one batch holding every example."""

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxscape as js
from jaxscape import hessian, models, tree
from jaxscape.objective import UNROLL_MAX_BATCHES

N = 13  # batches of 4: the last one is ragged (1 real example, 3 padded)


def _conv_apply(p, x):
  """A tiny conv net: 3x3 SAME convolution to 2 channels, tanh, dense to 3 classes ([B, 4, 4, 1] -> [B, 3])."""
  h = jax.lax.conv_general_dilated(x, p["conv"]["kernel"], (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
  h = jnp.tanh(h + p["conv"]["bias"][None, None, None])
  return h.reshape(h.shape[0], -1) @ p["dense"]["kernel"] + p["dense"]["bias"][None]


def _problem(dtype=np.float64):
  rng = np.random.default_rng(0)
  x, y = rng.normal(size=(N, 4, 4, 1)).astype(dtype), rng.integers(0, 3, N).astype(np.int32)
  w = (rng.random(N) + 0.5).astype(dtype)  # per-example weights: Σ w·ℓ / Σ w
  p = {"conv": {"kernel": rng.normal(size=(3, 3, 1, 2)), "bias": 0.1 * rng.normal(size=2)},
       "dense": {"kernel": 0.5 * rng.normal(size=(32, 3)), "bias": np.zeros(3)}}
  return x, y, w, jax.tree.map(lambda a: jnp.asarray(a, dtype), p)


def _objectives(dtype=np.float64, dict_batch=False):
  """``(auto, scan, one batch, params)``: the same weighted loss three ways, as (x, y, w) or a dict batch."""
  x, y, w, p = _problem(dtype)
  if dict_batch:
    data, keys = {"image": x, "labels": y, "mask": w}, dict(inputs="image", weights="mask")
  else:
    data, keys = (x, y, w), {}
  auto = js.Objective.from_apply(_conv_apply, p, data=data, batch_size=4, **keys)
  one = js.Objective.from_apply(_conv_apply, p, data=data, batch_size=None, batching="scan", **keys)
  return auto, auto.with_batching("scan"), one, p


def _flat(t):
  return np.asarray(tree.ravel(t)[0])


def _close(a, b, rtol):
  """Vectors agree to ``rtol`` relative to the reference's largest entry (one float scale for the whole vector)."""
  a, b = _flat(a), _flat(b)
  np.testing.assert_allclose(a, b, rtol=0, atol=rtol * np.abs(b).max())


@pytest.mark.parametrize("dict_batch", [False, True])
def test_unroll_matches_scan_and_one_batch_in_float64(x64, dict_batch):
  """float64, in the caller's program (no callback): value, gradient, Hessian and GGN products of the unrolled
  objective equal the scan's and the one-batch objective's to 1e-12 relative (the same sums, reassociated)."""
  auto, scan, one, p = _objectives(dict_batch=dict_batch)
  assert auto.batching == "unroll" and auto.describe()["batching"] == "unroll" and scan.batching == "scan"
  assert auto.num_batches == 4 and float(auto.w[-1].sum()) > 0 and int((auto.w[-1] > 0).sum()) == 1
  assert "scan[" not in str(jax.make_jaxpr(auto.value)(p)) and "scan[" in str(jax.make_jaxpr(scan.value)(p))
  v = tree.normal_like(jax.random.key(1), p)
  assert "pure_callback" not in str(jax.make_jaxpr(lambda u: hessian.hvp(auto, p, u))(v))  # 64-bit stays in program
  for o in (auto, scan):
    np.testing.assert_allclose(float(o.value(p)), float(one.value(p)), rtol=1e-12)
    _close(jax.grad(o.value)(p), jax.grad(one.value)(p), 1e-12)
    _close(jax.jit(lambda q, u, o=o: hessian.hvp(o, q, u))(p, v), hessian.hvp(one, p, v), 1e-12)
    _close(hessian.hvp(o, p, v, kind="ggn"), hessian.hvp(one, p, v, kind="ggn"), 1e-12)
  # the one-batch reference itself against the HVP of a weighted mean written out by hand
  x, y, w, _ = _problem()
  w = w.astype(np.float32).astype(np.float64)  # the objective keeps its weights in float32
  flat, unravel = tree.ravel(p)

  def mean(f):
    logp = jax.nn.log_softmax(_conv_apply(unravel(f), jnp.asarray(x)))
    return -jnp.sum(jnp.asarray(w) * jnp.take_along_axis(logp, jnp.asarray(y)[:, None], 1)[:, 0]) / np.sum(w)

  reference = jax.jvp(jax.grad(mean), (flat,), (tree.ravel(v)[0],))[1]
  _close(hessian.hvp(auto, p, v), reference, 1e-12)


def _callback_checks():
  """float32 on one CPU device (run in a subprocess by the test below: the test session has 8 devices)."""
  assert jax.device_count() == 1
  for dict_batch in (False, True):
    auto, scan, _, p = _objectives(np.float32, dict_batch)
    assert auto.batching == "unroll"
    v = tree.normal_like(jax.random.key(1), p)
    assert "pure_callback" in str(jax.make_jaxpr(lambda u: hessian.hvp(auto, p, u))(v))
    assert "pure_callback" not in str(jax.make_jaxpr(lambda u: hessian.hvp(scan, p, u))(v))
    with jax.enable_x64(True):
      a64, scan64, _, p64 = _objectives(np.float64, dict_batch)
      v64 = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), v)
      reference = {kind: _flat(hessian.hvp(a64, p64, v64, kind=kind)) for kind in hessian.KINDS}
      dense = np.linalg.eigvalsh(np.asarray(hessian.dense_hessian(scan64, p64)))
    vs = tree.stack([v, tree.scale(-2.0, v)])
    for kind in hessian.KINDS:  # under jit, and under vmap (one product after another)
      product = jax.jit(lambda q, u, o, kind=kind: hessian.hvp(o, q, u, kind=kind))
      _close(product(p, v, auto), reference[kind], 1e-5)
      _close(product(p, v, auto), product(p, v, scan), 1e-5)
      batched = jax.jit(jax.vmap(lambda u, kind=kind: hessian.hvp(auto, p, u, kind=kind)))(vs)
      _close(tree.unstack(batched)[1], -2.0 * reference[kind], 1e-5)
  # the Lanczos loop calls the products compiled apart: certified extremes within 1e-4 of the dense spectrum
  scale = np.abs(dense).max()
  for which, expected in (("largest", dense[::-1][:2]), ("smallest", dense[:2])):
    res = hessian.eigenvalues(jax.random.key(2), auto, p, k=2, which=which, tol=1e-4)
    assert bool(np.all(res.converged)), res
    np.testing.assert_allclose(np.asarray(res.values), expected, rtol=0, atol=1e-4 * scale)
  # differentiating through a callback is refused (the scan's products can be differentiated)
  third = lambda o: jax.grad(lambda q: tree.dot(v, hessian.hvp(o, q, v)))(p)
  with pytest.raises(ValueError, match="batching='unroll'.*cannot be differentiated"):
    third(auto)
  assert np.all(np.isfinite(_flat(third(scan))))
  _surface_maps_agree(auto, scan, p)


def _surface_maps_agree(auto, scan, p):
  """Curvature maps vmap the products over grid points inside the surface executor's shard_map: the unrolled
  objective's maps equal the scan's (float32, 1e-4 of the scale)."""
  dirs = js.random_directions(jax.random.key(3), p, n=2, ignore=None)
  maps = [js.loss_surface(o, p, dirs, x=(-0.5, 0.5, 2), y=(0, 0.5, 2), curvature="full", key=jax.random.key(4),
                          lanczos_steps=6, trace_probes=2, quiet=True, chunk_size=2) for o in (auto, scan)]
  for name in ("lambda_max", "lambda_min", "trace"):
    a, b = np.asarray(maps[0].metrics[name]), np.asarray(maps[1].metrics[name])
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-4 * np.abs(b).max())


def test_products_compiled_apart_on_one_cpu_device():
  """Host-callback products (one CPU device, float32): Hessian and GGN products, tuple and dict batches, agree
  with the scan's and a float64 reference to 1e-5 under jit and vmap; Lanczos through them matches dense eigh;
  differentiation is refused; surface curvature maps match."""
  env = dict(os.environ, JAX_NUM_CPU_DEVICES="1", JAX_PLATFORMS="cpu", JAX_NUMPY_DTYPE_PROMOTION="strict",
             JAX_NUMPY_RANK_PROMOTION="raise", PYTHONPATH=os.pathsep.join([os.path.dirname(os.path.dirname(__file__)),
                                                                            os.environ.get("PYTHONPATH", "")]))
  script = f"import sys; sys.path.insert(0, {os.path.dirname(__file__)!r}); import test_batching; test_batching._callback_checks()"
  done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=600)
  assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def test_several_devices_keep_the_products_in_the_program():
  """With several CPU devices (8 here) a callback could deadlock a sharded program: the unrolled products stay in
  the caller's program, and surface curvature maps still match the scan's."""
  auto, scan, _, p = _objectives(np.float32)
  assert jax.device_count() > 1 and auto.batching == "unroll"
  v = tree.normal_like(jax.random.key(1), p)
  assert "pure_callback" not in str(jax.make_jaxpr(lambda u: hessian.hvp(auto, p, u))(v))
  _surface_maps_agree(auto, scan, p)


def test_auto_unrolls_only_conv_nets_on_few_batches_and_refuses_unknown_modes():
  x, y, w, p = _problem(np.float32)
  many = js.Objective.from_apply(_conv_apply, p, data=(x, y), batch_size=1)  # 13 batches > UNROLL_MAX_BATCHES
  assert many.num_batches > UNROLL_MAX_BATCHES and many.batching == "scan"
  few = js.Objective.from_apply(_conv_apply, p, data=(x, y), batch_size=4)
  assert few.batching == "unroll" and few.with_data((x, y), batch_size=1).batching == "scan"
  assert js.Objective.from_apply(_conv_apply, data=(x, y), batch_size=4).batching == "scan"  # no params: no trace
  mlp, _ = js.Objective.from_model(models.build("mlp", 0, in_features=4, widths=[8], out_features=3),
                                   data=(np.ones((6, 4), np.float32), np.arange(6) % 3), batch_size=2)
  assert mlp.batching == "scan" and "batching" not in mlp.describe()
  with pytest.raises(ValueError, match=r"batching must be one of \('scan', 'unroll'\) or 'auto'; got 'vectorise'"):
    few.with_batching("vectorise")
  with pytest.raises(ValueError, match=r"batching must be one of \('scan', 'unroll'\); got 'map'"):
    few.sum_over_batches(lambda b: b[2].sum(), "map")
