"""spectral: Lanczos, power iteration, trace and SLQ density against dense references."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from matfree import decomp

from jaxscape import spectral


def _jit(fn, *args, **kwargs):
  """Runs a spectral function as one compiled program (much faster to compile
  than op-by-op dispatch of its loops)."""
  return jax.jit(lambda: fn(*args, **kwargs))()


def _matrix(eigenvalues, seed=0):
  """Symmetric matrix with a prescribed spectrum and a random eigenbasis."""
  lam = np.asarray(eigenvalues, np.float64)
  q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(lam.size, lam.size)))
  return (q * lam) @ q.T, q


def _spectrum60():
  # separated extremes at both ends and a bulk: 4 top, 3 bottom, 53 in [-1, 1]
  bulk = np.linspace(-1.0, 1.0, 53)
  return np.concatenate([[10.0, 9.0, 8.0, 7.0], [-5.0, -4.5, -4.0], bulk])


def test_eigh_matches_numpy_on_prescribed_spectrum(x64):
  lam = _spectrum60()
  a, _ = _matrix(lam)
  a = jnp.asarray(a)
  mv = lambda v: a @ v
  # `which` as a traced index: one compiled program for the three rules
  run = jax.jit(lambda w: spectral.eigh(jax.random.key(0), mv, jnp.zeros(60), k=3, which=w, num_steps=40, tol=1e-8))
  ref = np.sort(lam)
  for i, which in enumerate(spectral.WHICH):
    res = run(i)
    expected = {"largest": ref[::-1][:3], "smallest": ref[:3], "magnitude": ref[np.argsort(-np.abs(ref))][:3]}[which]
    # float64, 40 steps on separated extremes: Ritz values converge far below 1e-8
    np.testing.assert_allclose(res.values, expected, rtol=1e-9, atol=1e-9)
    assert int(res.num_matvecs) == 43 and int(res.breakdowns) == 0
    assert bool(jnp.all(res.converged))
    # true residuals (extra matvecs) agree with the Lanczos estimate beta_m |s_m| and are tiny
    np.testing.assert_array_less(res.residuals, 1e-8)
    np.testing.assert_allclose(res.residuals, res.estimates, atol=1e-9)
    for j in range(3):
      v = res.vectors[j]
      np.testing.assert_allclose(jnp.linalg.norm(v), 1.0, rtol=1e-12)
      np.testing.assert_allclose(jnp.linalg.norm(a @ v - res.values[j] * v), res.residuals[j], atol=1e-12)
  # with a string rule, the result names it
  assert _jit(spectral.eigh, jax.random.key(0), mv, jnp.zeros(60), k=1, which="smallest").which == "smallest"


def _clustered(n=200, seed=0):
  """Separated top, a bulk near zero and clustered small negative eigenvalues (the shape of a
  trained network's Hessian: the five smallest within 0.0017 of each other, 1000x below lambda_max)."""
  rng = np.random.default_rng(seed)
  small = [-0.00717, -0.00704, -0.00582, -0.00564, -0.00549]
  top = [3.31, 2.9, 2.85, 1.7, 1.2]
  return np.concatenate([small, top, rng.uniform(-0.005, 0.8, n - 10)])


def _wanted(lam, which, k):
  ref = np.sort(lam)
  return {"largest": ref[::-1], "smallest": ref, "magnitude": ref[np.argsort(-np.abs(ref))]}[which][:k]


def _assert_honest(res, lam, which):
  """Every certified value lies within its stated bound of the exact eigenvalue at its position."""
  err = np.abs(np.asarray(res.values) - _wanted(lam, which, res.values.shape[-1]))
  conv = np.asarray(res.converged)
  assert np.all(err[conv] <= np.asarray(res.error_bounds)[conv]), (which, err, np.asarray(res.error_bounds), conv)


@pytest.mark.parametrize("tol", [1e-3, 1e-8])
def test_eigh_certificates_hold_on_clustered_small_and_negative_eigenvalues(x64, tol):
  lam = _clustered()
  a = jnp.asarray(_matrix(lam, seed=6)[0])
  run = jax.jit(lambda key, w: spectral.eigh(key, lambda v: a @ v, jnp.zeros(lam.size), k=5, which=w, tol=tol))
  for i, which in enumerate(spectral.WHICH):
    for seed in range(3):
      res = run(jax.random.key(seed), i)
      assert int(res.num_converged) == 5, (which, res)  # the default budget suffices here
      _assert_honest(res, lam, which)
      # the rule is relative to each eigenvalue: the small ones are certified to ~tol of themselves
      np.testing.assert_array_less(np.asarray(res.residuals), np.maximum(tol * np.abs(np.asarray(res.values)),
                                                                          np.asarray(res.atol)) * (1 + 1e-12))
      assert float(res.atol) < 1e-12  # default floor 100 eps ||A|| in float64
  # the fixed-length run of the issue (45 steps, bottom 5) is honest too: what it cannot certify it says
  short = jax.jit(lambda key: spectral.eigh(key, lambda v: a @ v, jnp.zeros(lam.size), k=5, which="smallest",
                                            num_steps=45, tol=1e-3))(jax.random.key(0))
  assert int(short.num_converged) < 5
  _assert_honest(short, lam, "smallest")


def test_eigh_float32_matvec_is_certified_against_the_float64_spectrum(x64):
  lam = _clustered(seed=1)
  a32 = jnp.asarray(_matrix(lam, seed=7)[0], jnp.float32)
  lam32 = np.linalg.eigvalsh(np.asarray(a32, np.float64))  # the spectrum of the rounded matrix
  res = jax.jit(lambda key: spectral.eigh(key, lambda v: a32 @ v, jnp.zeros(lam.size, jnp.float32), k=5,
                                          which="smallest", tol=1e-3))(jax.random.key(0))
  # float32: the floor 100 eps ||A|| ~ 4e-5 dominates tol |theta| ~ 6e-6 for eigenvalues of size 6e-3
  # (||A|| estimated from the Lanczos coefficients: between lambda_max and 2 lambda_max)
  assert 100 * np.finfo(np.float32).eps * 3.31 <= float(res.atol) <= 200 * np.finfo(np.float32).eps * 3.31
  assert int(res.num_converged) == 5
  _assert_honest(res, lam32, "smallest")


def test_eigh_budget_runs_out_honestly(x64):
  lam = _clustered(seed=2)
  a = jnp.asarray(_matrix(lam, seed=8)[0])
  for budget in (10, 40, 120):
    res = jax.jit(lambda key: spectral.eigh(key, lambda v: a @ v, jnp.zeros(lam.size), k=5, which="smallest",
                                            tol=1e-8, max_matvecs=budget))(jax.random.key(0))
    assert int(res.num_matvecs) == budget and int(res.num_converged) < 5
    _assert_honest(res, lam, "smallest")
    assert "not certified" in repr(res) and f"certified {int(res.num_converged)}/5" in repr(res)


def test_eigh_stops_as_soon_as_certified_and_restarts_within_its_basis(x64):
  lam = _spectrum60()
  a = jnp.asarray(_matrix(lam, seed=9)[0])
  run = jax.jit(lambda key, tol: spectral.eigh(key, lambda v: a @ v, jnp.zeros(60), k=2, tol=tol, num_vectors=12))
  loose, tight = run(jax.random.key(0), 1e-2), run(jax.random.key(0), 1e-10)
  # top-2 of a separated spectrum: the loose rule needs fewer matvecs than the tight one, and a basis of
  # 12 vectors forces thick restarts for the tight one, which still certifies to 1e-10
  assert int(loose.num_matvecs) < int(tight.num_matvecs) and int(tight.restarts) >= 1
  assert int(loose.num_converged) == 2 and int(tight.num_converged) == 2
  np.testing.assert_allclose(tight.values, [10.0, 9.0], rtol=1e-12)
  _assert_honest(loose, lam, "largest")


@pytest.mark.parametrize("top", [[3.0, 3.0, 2.0, 1.5, 1.2, 1.0], [3.0, 2.5, 2.0, 1.5, 1.5, 1.0]],
                         ids=["double-top", "double-at-k"])
def test_fresh_vector_check_finds_a_skipped_eigenvalue(x64, top):
  # An exact double eigenvalue: a Krylov space from one start vector holds one copy only, so without
  # the check the second copy is skipped and the k-th value is certified at the wrong eigenvalue.
  rng = np.random.default_rng(3)
  lam = np.concatenate([top, rng.uniform(-0.05, 0.5, 194)])
  a = jnp.asarray(_matrix(lam, seed=10)[0])
  run = jax.jit(lambda key, steps: spectral.eigh(key, lambda v: a @ v, jnp.zeros(200), k=5, verify_steps=steps),
                static_argnums=1)
  unchecked = [run(jax.random.key(s), 0) for s in range(5)]
  assert all(not np.allclose(r.values, _wanted(lam, "largest", 5), atol=1e-3) for r in unchecked)
  for s in range(10):  # the default check (5 matvecs from a fresh vector) finds the second copy
    res = run(jax.random.key(s), 5)
    assert int(res.num_converged) == 5
    _assert_honest(res, lam, "largest")


def test_lanczos_ritz_values_inside_spectrum_and_identities(x64):
  lam = _spectrum60()
  a, _ = _matrix(lam, seed=1)
  lz = _jit(spectral.lanczos, jax.random.key(1), lambda v: a @ v, jnp.zeros(60), 25)
  theta = np.linalg.eigvalsh(np.asarray(lz.tridiagonal()))
  # Cauchy interlacing: every Ritz value in [lambda_min, lambda_max] (1e-10 slack for rounding)
  assert theta.min() >= lam.min() - 1e-10 and theta.max() <= lam.max() + 1e-10
  q = np.asarray(lz.basis)
  np.testing.assert_allclose(q @ q.T, np.eye(25), atol=1e-12)  # full reorthogonalisation
  np.testing.assert_allclose(q @ a @ q.T, lz.tridiagonal(), atol=1e-10)  # T = Q A Q^T


def test_breakdown_restarts_and_keeps_ritz_values_correct(x64):
  # diag({1..5} each 4 times): Krylov space of dimension 5, so more steps must break down.
  lam = np.repeat(np.arange(1.0, 6.0), 4)
  a, _ = _matrix(lam, seed=2)
  mv = lambda v: a @ v
  lz = _jit(spectral.lanczos, jax.random.key(0), mv, jnp.zeros(20), 12)
  theta = np.linalg.eigvalsh(np.asarray(lz.tridiagonal()))
  assert int(lz.breakdowns) == 2  # after step 5 and step 10
  assert theta.min() >= 1.0 - 1e-9 and theta.max() <= 5.0 + 1e-9
  np.testing.assert_allclose(np.asarray(lz.basis) @ np.asarray(lz.basis).T, np.eye(12), atol=1e-10)
  # 15 steps = three full Krylov blocks: each finds {1,...,5} again (multiplicity 4)
  top = _jit(spectral.eigh, jax.random.key(0), mv, jnp.zeros(20), k=3, which="largest", num_steps=15, tol=1e-8)
  bottom = _jit(spectral.eigh, jax.random.key(0), mv, jnp.zeros(20), k=3, which="smallest", num_steps=15, tol=1e-8)
  np.testing.assert_allclose(top.values, np.sort(lam)[::-1][:3], atol=1e-9)
  np.testing.assert_allclose(bottom.values, np.sort(lam)[:3], atol=1e-9)
  assert bool(jnp.all(top.converged)) and bool(jnp.all(bottom.converged))
  assert np.all(np.isfinite(np.asarray(top.vectors)))


def test_lanczos_agrees_with_matfree_tridiag_sym(x64):
  lam = np.linspace(0.5, 20.0, 50) ** 1.5
  a, _ = _matrix(lam, seed=3)
  a = jnp.asarray(a)
  v0 = jax.random.normal(jax.random.key(7), (50,), jnp.float64)
  ours = _jit(spectral.lanczos, jax.random.key(0), lambda v: a @ v, v0, 20, v0=v0)
  ref = jax.jit(lambda v: decomp.tridiag_sym(20, reortho="full")(lambda u: a @ u, v))(v0)
  t_ref = np.asarray(ref.J_small)
  # same start vector and full reorthogonalisation: same T (off-diagonal signs may differ) to 1e-9
  np.testing.assert_allclose(ours.alphas, np.diag(t_ref), rtol=1e-9, atol=1e-9)
  np.testing.assert_allclose(np.abs(ours.betas[:19]), np.abs(np.diag(t_ref, 1)), rtol=1e-9, atol=1e-9)
  np.testing.assert_allclose(np.abs(np.asarray(ours.basis)), np.abs(np.asarray(ref.Q_tall)), atol=1e-8)


def test_mixed_precision_float32_matvec_float64_recurrence(x64):
  lam = _spectrum60()
  a32 = jnp.asarray(_matrix(lam, seed=4)[0], jnp.float32)
  res = _jit(spectral.eigh, jax.random.key(0), lambda v: a32 @ v, jnp.zeros(60, jnp.float32), k=2, num_steps=40,
                      dtype=jnp.float64)
  assert res.values.dtype == jnp.float64 and res.vectors.dtype == jnp.float32
  # float32 matvec: eigenvalues to float32 accuracy of the matrix entries (1e-5 relative)
  np.testing.assert_allclose(res.values, [10.0, 9.0], rtol=1e-5)
  assert bool(jnp.all(res.converged))


def test_float64_recurrence_without_x64_is_an_error():
  with jax.enable_x64(False):
    with pytest.raises(ValueError, match="x64"):
      _jit(spectral.eigh, jax.random.key(0), lambda v: v, jnp.zeros(5), dtype=jnp.float64)
  with pytest.raises(ValueError, match="which"):
    _jit(spectral.eigh, jax.random.key(0), lambda v: v, jnp.zeros(5), which="LA")
  with pytest.raises(ValueError, match="k must be"):
    _jit(spectral.eigh, jax.random.key(0), lambda v: v, jnp.zeros(5), k=6)


def test_eigh_on_pytree_vectors_under_jit_and_vmap(x64):
  lam = _spectrum60()
  a, _ = _matrix(lam, seed=5)
  like = {"u": jnp.zeros((6, 5)), "b": jnp.zeros(30)}
  flat = lambda t: jnp.concatenate([t["b"], t["u"].ravel()])  # ravel_pytree order: b, u
  unflat = lambda f: {"b": f[:30], "u": f[30:].reshape(6, 5)}
  mv = lambda t: unflat(a @ flat(t))

  @jax.jit
  def top(scale):
    return spectral.eigh(jax.random.key(0), lambda t: jax.tree.map(lambda x: scale * x, mv(t)), like, k=1,
                         num_steps=40).values[0]

  out = jax.vmap(top)(jnp.array([1.0, 2.0, -1.0]))
  # scaling by -1 makes the largest eigenvalue 5 (from -5)
  np.testing.assert_allclose(out, [10.0, 20.0, 5.0], rtol=1e-9)

  # the run-until-certified loop (a lax.while_loop) under vmap: each member is certified, and runs on
  # until the slowest stops (its matvec count is the slowest member's)
  @jax.jit
  @jax.vmap
  def certified(scale):
    return spectral.eigh(jax.random.key(0), lambda t: jax.tree.map(lambda x: scale * x, mv(t)), like, k=2,
                         which="smallest", tol=1e-8)

  res = certified(jnp.array([1.0, 2.0, -1.0]))
  np.testing.assert_allclose(res.values, [[-5.0, -4.5], [-10.0, -9.0], [-10.0, -9.0]], rtol=1e-9)
  assert bool(jnp.all(res.converged)) and res.vectors["u"].shape == (3, 2, 6, 5)


def test_power_iteration_deflation_residual_rule_and_warm_start(x64):
  lam = np.concatenate([[10.0, -8.0, 5.0], np.linspace(-2, 2, 37)])
  a, q = _matrix(lam, seed=6)
  mv = lambda v: a @ v
  res = _jit(spectral.power_iteration, jax.random.key(0), mv, jnp.zeros(40), k=2, tol=1e-7, max_iters=1000)
  # residual <= tol |lambda| gives |lambda error| <= residual^2 / gap ~ 1e-12
  np.testing.assert_allclose(res.values, [10.0, -8.0], rtol=1e-9)
  assert bool(jnp.all(res.converged))
  np.testing.assert_array_less(res.residuals, 1e-7 * np.abs(np.asarray(res.values)))
  np.testing.assert_allclose(abs(float(res.vectors[0] @ q[:, 0])), 1.0, atol=1e-9)
  # warm start from the eigenvector: stops after one matvec
  warm = _jit(spectral.power_iteration, jax.random.key(1), mv, jnp.zeros(40), v0=jnp.asarray(q[:, 0]), tol=1e-7)
  assert int(warm.num_matvecs[0]) == 1
  np.testing.assert_allclose(warm.values[0], 10.0, rtol=1e-12)
  # deflating the known top vector gives the next one by magnitude
  nxt = _jit(spectral.power_iteration, jax.random.key(1), mv, jnp.zeros(40), deflate=jnp.asarray(q[:, :1].T), tol=1e-7,
                                 max_iters=1000)
  np.testing.assert_allclose(nxt.values[0], -8.0, rtol=1e-9)
  # the cap is respected and reported
  capped = _jit(spectral.power_iteration, jax.random.key(2), mv, jnp.zeros(40), tol=1e-14, max_iters=3)
  assert int(capped.num_matvecs[0]) == 3 and not bool(capped.converged[0])


def _nondiagonal(n=100, seed=8):
  lam = 1.0 / (np.arange(n) + 1.0) + 0.05
  return _matrix(lam, seed=seed)[0]


def test_hutchinson_trace_within_3_se_with_per_leaf_and_diagonal(x64):
  a = _nondiagonal()
  sizes = {"a": (30,), "b": (7, 10)}
  like = {k: jnp.zeros(s) for k, s in sizes.items()}
  flat = lambda t: jnp.concatenate([t["a"], t["b"].ravel()])
  mv = lambda t: {"a": (a @ flat(t))[:30], "b": (a @ flat(t))[30:].reshape(7, 10)}
  tr = _jit(spectral.trace, jax.random.key(0), mv, like, rtol=0.01, min_probes=20, max_probes=2000,
            method="hutchinson")
  exact = np.trace(a)
  assert bool(tr.converged) and float(tr.stderr) < 0.01 * abs(float(tr.estimate))
  assert abs(float(tr.estimate) - exact) < 3 * float(tr.stderr)
  assert 20 <= int(tr.num_probes) <= 2000 and int(tr.num_probes) % 10 == 0 and tr.method == "hutchinson"
  d = np.diag(a)
  for name, sl in (("a", slice(0, 30)), ("b", slice(30, 100))):
    assert abs(float(tr.per_leaf[name]) - d[sl].sum()) < 3 * float(tr.per_leaf_stderr[name])
  assert tr.diagonal["b"].shape == (7, 10)
  # the per-leaf traces add up to the estimate
  np.testing.assert_allclose(float(tr.per_leaf["a"] + tr.per_leaf["b"]), float(tr.estimate), rtol=1e-10)
  # max_probes caps an unreachable target
  capped = _jit(spectral.trace, jax.random.key(0), mv, like, rtol=1e-9, min_probes=10, max_probes=30)
  assert int(capped.num_probes) == 30 and int(capped.num_matvecs) == 30 + 2 * 20 and not bool(capped.converged)
  # the sample standard error (ddof=1) is reported even when the target is missed
  assert 0 < float(capped.stderr) and float(capped.ci95) > 2 * float(capped.stderr)
  for bad in ({"min_probes": 1, "block_size": 1}, {"min_probes": 40, "max_probes": 30}):
    with pytest.raises(ValueError, match="min_probes"):
      spectral.trace(jax.random.key(0), mv, like, **bad)


def test_hutchpp_exact_on_low_rank_and_better_on_decaying_spectrum(x64):
  rng = np.random.default_rng(9)
  u = np.linalg.qr(rng.normal(size=(80, 5)))[0]
  low = (u * np.array([5.0, 4.0, 3.0, -2.0, 1.0])) @ u.T
  mv = lambda v: low @ v
  tp = _jit(spectral.trace, jax.random.key(0), mv, jnp.zeros(80), method="hutch++", sketch_size=8, min_probes=10)
  # rank 5 < sketch 8: the low-rank part is the whole matrix, trace and diagonal exact
  np.testing.assert_allclose(tp.estimate, np.trace(low), atol=1e-10)
  np.testing.assert_allclose(tp.diagonal, np.diag(low), atol=1e-10)
  assert int(tp.num_matvecs) == int(tp.num_probes) + 16
  # fast-decaying spectrum, equal budget of 60 matvecs: Hutch++ error is smaller (median over seeds)
  a = jnp.asarray(_matrix(100.0 * 0.5 ** np.arange(100), seed=10)[0])
  mv = lambda v: a @ v
  hutch = jax.jit(lambda key: spectral.trace(key, mv, jnp.zeros(100), rtol=0.0, min_probes=60, max_probes=60,
                                             method="hutchinson"))
  hpp = jax.jit(lambda key: spectral.trace(key, mv, jnp.zeros(100), rtol=0.0, min_probes=40, max_probes=40,
                                           method="hutch++", sketch_size=10))
  err_h, err_pp = [], []
  for s in range(3):
    h, pp = hutch(jax.random.key(s)), hpp(jax.random.key(s))
    assert int(h.num_matvecs) == int(pp.num_matvecs) == 60
    err_h.append(abs(float(h.estimate) - float(jnp.trace(a))))
    err_pp.append(abs(float(pp.estimate) - float(jnp.trace(a))))
  assert np.median(err_pp) < 0.01 * np.median(err_h)
  with pytest.raises(ValueError, match="method"):
    _jit(spectral.trace, jax.random.key(0), mv, jnp.zeros(100), method="xtrace")


@pytest.mark.parametrize("method,rtol", [("hutch++", 0.01), ("hutch++", 0.03), ("hutchinson", 0.03)])
def test_trace_95_intervals_cover_the_exact_trace_over_keys(x64, method, rtol):
  # A prescribed spectrum like a network Hessian's: a few large outliers, an indefinite bulk, clustered negatives.
  # Over 200 keys the 95 % interval must cover the exact trace in >= 90 % of them (binomial: a true 95 % fails
  # this with probability < 1e-4) and the flag must agree with the reported error. For comparison, the plain
  # sequential rule (stop at the first SE below target after 10 probes, Hutch++ sketch 10) covered 0.92 over 400 keys
  # on a similar spectrum with a smaller bulk.
  rng = np.random.default_rng(3)
  lam = np.concatenate([[30.0, 20.0, 10.0, 6.0, 4.0], rng.normal(0.3, 0.6, 175), -rng.uniform(0.0, 1.0, 20)])
  a = jnp.asarray(_matrix(lam, seed=4)[0])
  run = jax.jit(jax.vmap(lambda key: spectral.trace(key, lambda v: a @ v, jnp.zeros(200), rtol=rtol, method=method,
                                                    max_probes=5000)))
  tr = run(jax.random.split(jax.random.key(0), 200))
  lo, hi = tr.interval()
  covered = np.mean((np.asarray(lo) <= lam.sum()) & (lam.sum() <= np.asarray(hi)))
  assert covered >= 0.90, covered
  assert bool(np.all(tr.converged)) and bool(np.all(tr.stderr <= rtol * np.abs(tr.estimate)))
  np.testing.assert_array_equal(tr.dof, 19)
  np.testing.assert_allclose(tr.ci95, 2.093024 * tr.stderr, rtol=1e-6)  # t_{0.975, 19}
  # unbiased: the mean over keys is within 4 standard errors of the mean of the exact trace
  assert abs(float(np.mean(tr.estimate)) - lam.sum()) < 4 * float(np.std(tr.estimate)) / np.sqrt(200)


def _exact_density(lam, sigma, grid):
  z = (np.asarray(grid)[None, :] - lam[:, None]) / sigma
  return np.mean(np.exp(-0.5 * z**2), axis=0) / (sigma * np.sqrt(2 * np.pi))


@pytest.mark.parametrize("reortho", [False, True])
def test_slq_density_integrates_to_one_and_matches_exact(x64, reortho):
  rng = np.random.default_rng(11)
  lam = np.concatenate([rng.normal(0.0, 0.3, 150), rng.normal(3.0, 0.2, 40), [-1.5] * 10])
  a = jnp.asarray(_matrix(lam, seed=12)[0])
  dens = _jit(spectral.slq, jax.random.key(0), lambda v: a @ v, jnp.zeros(200), num_probes=10, num_steps=40,
                      reortho=reortho, sigma=0.15)
  assert dens.nodes.shape == (10, 40) and int(dens.num_matvecs) == 400 and dens.reortho == reortho
  np.testing.assert_allclose(dens.weights.sum(axis=1), 1.0, rtol=1e-10)  # each probe's weights sum to 1
  assert float(dens.nodes.min()) >= lam.min() - 1e-8 and float(dens.nodes.max()) <= lam.max() + 1e-8
  grid = np.asarray(dens.grid)
  # kernel mass outside a 6-sigma padded grid is < 1e-8: trapezoid integral is 1 to 1e-4
  np.testing.assert_allclose(np.trapezoid(dens.density, grid), 1.0, atol=1e-4)
  ref = _exact_density(lam, 0.15, grid)
  l1 = np.trapezoid(np.abs(np.asarray(dens.density) - ref), grid)
  # 10 probes on n = 200: random probe weights give L1 ~ 0.06 here; bound 0.12
  # (the exact density shifted by one sigma is at L1 ~ 0.42)
  assert l1 < 0.12, l1
  # re-smoothing reuses the quadrature: same as a fresh kernel density of the nodes
  wide = dens.smooth(0.4)
  wgrid = np.asarray(wide.grid)
  assert wgrid[0] < lam.min() - 2.0 and float(wide.sigma) == 0.4
  np.testing.assert_allclose(np.trapezoid(wide.density, wgrid), 1.0, atol=1e-4)
  assert np.trapezoid(np.abs(np.asarray(wide.density) - _exact_density(lam, 0.4, wgrid)), wgrid) < 0.1
  # index estimate with explicit eps: 10 of 200 eigenvalues at -1.5 and ~1 % of the bulk below -0.7
  frac = np.mean(lam < -0.7)
  assert abs(float(dens.negative_mass(0.7)) - frac) < 0.04
  assert abs(float(dens.negative_mass(0.7, smoothed=True)) - frac) < 0.04
  with pytest.raises(ValueError, match="eps"):
    dens.negative_mass(-1.0)


def test_slq_default_sigma_and_breakdown_without_reortho(x64):
  lam = np.repeat([1.0, 2.0, 4.0], 10)
  a = jnp.asarray(_matrix(lam, seed=13)[0])
  dens = _jit(spectral.slq, jax.random.key(0), lambda v: a @ v, jnp.zeros(30), num_probes=6, num_steps=10)
  # 3 distinct eigenvalues: the first block is exact and the rest carries no weight
  np.testing.assert_allclose(float(dens.sigma), 0.01 * 3.0, rtol=1e-6)
  assert np.all(np.isfinite(np.asarray(dens.density)))
  for value in (1.0, 2.0, 4.0):
    mass = float(jnp.mean(jnp.sum(jnp.where(jnp.abs(dens.nodes - value) < 1e-6, dens.weights, 0), axis=1)))
    assert abs(mass - 1 / 3) < 0.15, (value, mass)
  np.testing.assert_allclose(dens.weights.sum(axis=1), 1.0, rtol=1e-10)
