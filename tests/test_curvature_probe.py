"""Curvature during training: hessian.curvature_probe, adam_preconditioner, TrainConfig(curvature_every=...)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxscape as js
from jaxscape import data, hessian, models, train


def _mlp(p, x):
  h = jnp.tanh(x @ p["l1"]["kernel"] + p["l1"]["bias"][None])
  return h @ p["l2"]["kernel"] + p["l2"]["bias"][None]


def _setup(seed=0, n=40):
  rng = np.random.default_rng(seed)
  x, y = rng.normal(size=(n, 4)), rng.integers(0, 3, n)
  p = {"l1": {"kernel": jnp.asarray(rng.normal(size=(4, 5))), "bias": jnp.asarray(0.1 * rng.normal(size=5))},
       "l2": {"kernel": jnp.asarray(rng.normal(size=(5, 3))), "bias": jnp.zeros(3)}}
  return js.Objective.from_apply(_mlp, p, data=(x, y), batch_size=16), p


def test_probe_top_eigenvalues_and_trace_match_dense_eigh(x64):
  obj, p = _setup()
  dense = np.sort(np.asarray(hessian.dense_eigh(obj, p)[0]))[::-1]
  assert np.min(-np.diff(dense[:4])) > 1e-3  # separated: each Ritz value has one eigenvalue to match
  probe = jax.jit(lambda key, p, v0: hessian.curvature_probe(key, obj, p, k=3, v0=v0, tol=1e-9, trace=True,
                                                             trace_rtol=0.02, trace_max_probes=400))
  v0 = jax.tree.map(lambda a: jnp.zeros((3, *a.shape), a.dtype), p)  # all zero: a random start
  for key in range(2):
    out = probe(jax.random.key(key), p, v0)
    assert bool(np.all(out["converged"]))
    # a certified Ritz value is within its residual of an eigenvalue
    assert np.all(np.abs(np.asarray(out["eigenvalues"]) - dense[:3]) <= np.asarray(out["residuals"]) + 1e-12)
    np.testing.assert_allclose(out["eigenvalues"], dense[:3], rtol=1e-8)
    # the trace: within 4 standard errors of the dense trace
    assert abs(float(out["trace"]) - dense.sum()) < 4 * float(out["trace_stderr"]) + 1e-9
    v0 = out["vectors"]  # the second call starts warm from these
  with pytest.raises(ValueError, match="needs an Objective"):
    hessian.curvature_probe(jax.random.key(0), obj.value, p, kind="ggn")
  with pytest.raises(ValueError, match="k must be a positive integer"):
    hessian.curvature_probe(jax.random.key(0), obj, p, k=0)


def test_preconditioned_sharpness_matches_dense_eigvalsh_of_dhd(x64):
  obj, p = _setup(1)
  b2, eps = 0.99, 1e-6
  tx = optax.chain(optax.add_decayed_weights(1e-3), optax.adam(0.05, b2=b2, eps=eps))  # Adam's state is nested

  @jax.jit
  def step(p, state):
    with jax.numpy_dtype_promotion("standard"):  # optax's bias correction computes float ** int32 count
      updates, state = tx.update(jax.grad(obj.value)(p), state, p)
    return optax.apply_updates(p, updates), state

  state = tx.init(p)
  for _ in range(5):
    p, state = step(p, state)
  # the reference: nu and count read by hand, D = P^{-1/2} with P = sqrt(nu / (1 - b2^t)) + eps
  adam_state = state[1][0]
  nu = np.asarray(js.tree.ravel(adam_state.nu)[0])
  diag = np.sqrt(nu / (1 - b2 ** int(adam_state.count))) + eps
  np.testing.assert_allclose(js.tree.ravel(hessian.adam_preconditioner(state, b2=b2, eps=eps))[0], diag, rtol=1e-12)
  d = 1 / np.sqrt(diag)
  h = np.asarray(hessian.dense_hessian(obj, p))
  ref = np.linalg.eigvalsh(d[:, None] * h * d[None, :])
  out = jax.jit(lambda p, s: hessian.curvature_probe(jax.random.key(2), obj, p, s, b2=b2, eps=eps, tol=1e-9))(p, state)
  assert bool(out["preconditioned_converged"])
  np.testing.assert_allclose(out["preconditioned_sharpness"], ref[-1], rtol=1e-8)
  np.testing.assert_allclose(out["eigenvalues"][0], np.linalg.eigvalsh(h)[-1], rtol=1e-8)


@pytest.fixture(scope="module")
def digits_small():
  return data.load("digits", num_train=128, num_test=64)


def _net(key=0):
  return models.build("mlp", key, in_features=64, widths=[8], out_features=10)


def test_curvature_knob_leaves_training_bit_identical_records_every_k_steps_and_resumes(tmp_path, digits_small):
  kw = dict(optimizer="sgd", learning_rate=0.1, momentum=0.9, batch_size=32, steps=7, checkpoint_every=4)
  p_off, _, off = train.train(jax.random.key(0), _net(), digits_small, **kw)
  assert off.curvature is None
  assert not any(k.startswith("curvature_") for k in train.TrainConfig(steps=7).to_dict())  # specs as before
  on_kw = dict(kw, curvature_every=3, curvature_k=2)
  p_on, _, on = train.train(jax.random.key(0), _net(), digits_small, **on_kw)
  js.tree.assert_allclose(p_on, p_off, rtol=0)
  for k, v in off.as_dict().items():
    np.testing.assert_array_equal(getattr(on, k), v)
  c = on.curvature
  np.testing.assert_array_equal(c["step"], [0, 3, 6])  # step 0 and every 3rd step of 7
  assert c["eigenvalues"].shape == c["residuals"].shape == c["converged"].shape == (3, 2)
  assert np.all(c["eigenvalues"][:, 0] >= c["eigenvalues"][:, 1])
  np.testing.assert_allclose(c["learning_rate"], 0.1, rtol=1e-6)
  np.testing.assert_allclose(c["threshold"], (2 + 2 * 0.9) / 0.1, rtol=1e-6)  # heavy ball (Cohen et al. 2021)
  assert "preconditioned_sharpness" not in c and "trace" not in c
  # interrupted after step 5 (checkpoint at 4), resumed: the rows up to the checkpoint come from history.npz
  run = str(tmp_path / "r")
  train.train(jax.random.key(0), _net(), digits_small, checkpoint_dir=run, stop_after_steps=5, **on_kw)
  _, _, resumed = train.train(jax.random.key(0), _net(), digits_small, checkpoint_dir=run, resume=True, **on_kw)
  np.testing.assert_array_equal(resumed.curvature["step"], [0, 3, 6])
  np.testing.assert_array_equal(resumed.curvature["eigenvalues"][:2], c["eigenvalues"][:2])
  # step 6 is measured after the resume, without the warm start: the same pairs, to float32 Lanczos accuracy
  np.testing.assert_allclose(resumed.curvature["eigenvalues"], c["eigenvalues"], rtol=1e-3)


def test_recorded_sharpness_is_the_dense_top_eigenvalue_of_the_training_objective(digits_small, x64):
  ds = data.astype(digits_small, np.float64)
  apply, p0, s0, _ = js.adapters.split(_net())
  p0 = js.tree.astype(p0, jnp.float64)
  wd = 1e-2
  _, _, h = train.train(0, (apply, p0, s0), ds, optimizer="sgd", learning_rate=0.3, weight_decay=wd, batch_size=None,
                        steps=4, curvature_every=2, curvature_k=2, curvature_examples=32, curvature_tol=1e-9,
                        curvature_trace=True, snapshot_every=2)
  c = h.curvature
  np.testing.assert_array_equal(c["step"], h.trajectory_step)
  x, y = ds.train
  idx = np.arange(0, 128, 127 / 31).round().astype(int)  # 32 examples evenly strided through the 128
  obj = js.objective.with_l2(js.Objective.from_stateful(apply, s0, data=(x[idx], y[idx])), wd)  # coupled decay
  for i in range(len(c["step"])):
    params = jax.tree.map(lambda a, i=i: a[i], h.trajectory)
    dense = np.sort(np.asarray(hessian.dense_eigh(obj, params)[0]))[::-1]
    assert np.all(c["converged"][i])
    np.testing.assert_allclose(c["eigenvalues"][i], dense[:2], rtol=1e-7)
    assert abs(c["trace"][i] - dense.sum()) < 4 * c["trace_stderr"][i]  # the trace's error bar covers the truth


def test_adam_runs_record_preconditioned_sharpness_in_train_many(digits_small):
  kw = dict(optimizer="adam", learning_rate=1e-2, batch_size=32, steps=4, curvature_every=2, curvature_examples=64)
  params, _, many = train.train_many(jax.random.split(jax.random.key(3), 2), _net, digits_small, **kw)
  c = many.curvature
  np.testing.assert_array_equal(c["step"], [0, 2, 4])
  assert c["eigenvalues"].shape == (2, 3, 1) and c["preconditioned_sharpness"].shape == (2, 3)
  assert np.all(np.isnan(c["preconditioned_sharpness"][:, 0])) and np.all(c["preconditioned_sharpness"][:, 1:] > 0)
  np.testing.assert_allclose(c["threshold"], 38 / 1e-2, rtol=1e-5)  # (2 + 2 b1) / ((1 - b1) eta), b1 = 0.9
  assert "trace" not in c
  # each vmapped run measures its own parameters: the last row is the dense top eigenvalue at its final parameters
  apply, _, _, _ = js.adapters.split(_net())
  x, y = digits_small.train
  idx = np.arange(0, 128, 127 / 63).round().astype(int)
  obj = js.Objective.from_stateful(apply, {}, data=(x[idx], y[idx]))
  for run in range(2):
    top = np.linalg.eigvalsh(np.asarray(hessian.dense_hessian(obj, js.tree.select(params, run))))[-1]
    np.testing.assert_allclose(c["eigenvalues"][run, -1, 0], top, rtol=1e-3)  # float32 HVPs


def test_curvature_settings_are_checked():
  for bad in (dict(curvature_every=0), dict(curvature_k=0), dict(curvature_examples=0), dict(curvature_every=1.5)):
    with pytest.raises(ValueError, match="must be a positive integer"):
      train.TrainConfig(**bad)
  cfg = train.TrainConfig(curvature_every=5, curvature_k=3)
  assert train.TrainConfig.from_dict(cfg.to_dict()) == cfg
