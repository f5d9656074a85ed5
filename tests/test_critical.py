"""critical and newton: critical-point search, dense curvature, saddle-free Newton.

All numerical checks run in float64 (``x64`` fixture) against closed forms or
numpy references; each states its tolerance.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxscape as js
from jaxscape import critical, hessian, newton, testfns
from jaxscape.objective import with_l2


def _scalar_objective(fn):
  """An Objective whose value is ``fn(params)`` (one dummy example)."""
  apply = lambda p, x: fn(p) + 0.0 * x[:, 0]
  return js.Objective.from_apply(apply, data=(np.zeros((1, 1)), np.zeros(1)), loss=lambda out, t: out)


# Objectives are built once per module so jitted functions are reused.
@functools.cache
def _saddle_obj():  # f(x, y) = x^2 - y^2: saddle at 0, eigenvalues (2, -2)
  return _scalar_objective(lambda p: p[0] ** 2 - p[1] ** 2)


@functools.cache
def _linear_net_obj():  # 1-1-1 linear net on (x, y) = (1, 1): f = (1 - w2 w1)^2
  apply = lambda p, x: p["w2"] * p["w1"] * x[:, 0]
  return js.Objective.from_apply(apply, data=(np.ones((1, 1)), np.ones(1)), loss="mse")


_A_EIGS = np.array([-3.0, -0.5, 1.0, 4.0])


def _quadratic():
  rng = np.random.default_rng(3)
  q, _ = np.linalg.qr(rng.normal(size=(4, 4)))
  a = q @ np.diag(_A_EIGS) @ q.T
  b = rng.normal(size=4)
  return a, b, q


@functools.cache
def _quadratic_obj():
  a, b, _ = _quadratic()
  return _scalar_objective(lambda p: 0.5 * p @ jnp.asarray(a, p.dtype) @ p + jnp.asarray(b, p.dtype) @ p)


def _mlp_apply(p, x):
  return jnp.tanh(x @ p["w1"] + p["b1"][None]) @ p["w2"] + p["b2"][None]


@functools.cache
def _mlp_obj():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(8, 2))
  y = rng.integers(0, 2, 8)
  return js.Objective.from_apply(_mlp_apply, data=(x, y), batch_size=None)


@functools.cache
def _mlp_l2_obj():  # L2 keeps the critical points at finite weights (cross-entropy alone has its infimum at infinity)
  return with_l2(_mlp_obj(), 1e-2)


def _mlp_params(seed=1):
  rng = np.random.default_rng(seed)
  shapes = {"w1": (2, 3), "b1": (3,), "w2": (3, 2), "b2": (2,)}
  return {k: jnp.asarray(rng.normal(size=s), jnp.float32) for k, s in shapes.items()}


@pytest.mark.parametrize("method", critical.METHODS)
def test_find_critical_point_converges_to_saddle_of_quadratic(x64, method):
  cp = critical.find_critical_point(_saddle_obj(), jnp.array([0.3, -0.2]), method=method, tol=1e-10)
  assert cp.converged and cp.status == "converged"
  assert cp.grad_norm < 1e-10
  # the saddle is the origin: |x| <= ||g|| / min|lambda| = 0.5e-10
  np.testing.assert_allclose(cp.params, [0.0, 0.0], atol=0.5e-10)
  np.testing.assert_allclose(cp.eigenvalues, [-2.0, 2.0], rtol=1e-12)
  assert cp.index == 0.5
  assert cp.params.dtype == jnp.float64


def test_find_critical_point_linear_net_saddle_and_minimum(x64):
  obj = _linear_net_obj()
  cp = critical.find_critical_point(obj, {"w1": jnp.array(0.1), "w2": jnp.array(-0.05)}, tol=1e-10)
  assert cp.converged
  # the origin is the only critical point off the minimum manifold w1 w2 = 1;
  # its Hessian [[0, -2], [-2, 0]] has eigenvalues -2, 2.
  # |w| <= ||g|| / min|lambda| = 0.5e-10 near the origin
  np.testing.assert_allclose([cp.params["w1"], cp.params["w2"]], [0.0, 0.0], atol=0.5e-10)
  np.testing.assert_allclose(cp.eigenvalues, [-2.0, 2.0], rtol=1e-10)
  assert cp.index == 0.5
  np.testing.assert_allclose(cp.loss, 1.0, rtol=1e-12)

  cp = critical.find_critical_point(obj, {"w1": jnp.array(1.3), "w2": jnp.array(0.6)}, tol=1e-10, eps=1e-8)
  assert cp.converged and cp.index == 0.0
  np.testing.assert_allclose(cp.params["w1"] * cp.params["w2"], 1.0, rtol=1e-10)
  assert cp.loss < 1e-20
  # minimum manifold: one flat direction (0) and curvature 2 (w1^2 + w2^2)
  w1, w2 = float(cp.params["w1"]), float(cp.params["w2"])
  np.testing.assert_allclose(cp.eigenvalues, [0.0, 2 * (w1**2 + w2**2)], atol=1e-9)


def test_gradient_flat_point_is_not_reported_as_critical(x64):
  # f = x^3/3 + x: g = x^2 + 1 never vanishes; ||g||^2 is minimal at x = 0
  # (where H = 2x = 0), a gradient-flat point in the sense of Frye et al. 2021.
  obj = _scalar_objective(lambda p: p[0] ** 3 / 3 + p[0])
  cp = critical.find_critical_point(obj, jnp.array([0.7]), max_steps=200)
  assert not cp.converged
  assert cp.status == "gradient_flat"
  np.testing.assert_allclose(cp.grad_norm, 1.0, rtol=1e-6)
  np.testing.assert_allclose(cp.params, [0.0], atol=1e-3)


def test_dense_hessian_matches_finite_differences(x64):
  obj = _mlp_obj()
  p = _mlp_params()
  h = hessian.dense_hessian(obj, p)
  assert h.shape == (17, 17) and h.dtype == jnp.float64
  flat = jax.flatten_util.ravel_pytree(jax.tree.map(lambda a: a.astype(jnp.float64), p))[0]
  _, unravel = jax.flatten_util.ravel_pytree(jax.tree.map(lambda a: a.astype(jnp.float64), p))
  grad = jax.jit(lambda v: jax.flatten_util.ravel_pytree(jax.grad(obj.value)(unravel(v)))[0])
  step = 1e-5
  basis = np.eye(17) * step
  fd = np.stack([(grad(flat + e) - grad(flat - e)) / (2 * step) for e in basis], axis=1)
  # central differences: O(step^2) = 1e-10 truncation plus 1e-11 round-off
  np.testing.assert_allclose(h, fd, atol=1e-8)
  np.testing.assert_allclose(h, h.T, atol=0)
  lam, vecs = hessian.dense_eigh(obj, p)
  np.testing.assert_allclose(lam, np.linalg.eigvalsh(np.asarray(h)), atol=1e-12)
  np.testing.assert_allclose(vecs @ np.diag(lam) @ vecs.T, h, atol=1e-12)


def test_index_counts_eigenvalues_below_minus_eps():
  lam = jnp.array([-2.0, -1e-9, 0.0, 0.5, 3.0])
  assert float(critical.index(lam, eps=1e-6)) == pytest.approx(0.2)
  assert float(critical.index(lam, eps=0.0)) == pytest.approx(0.4)
  # default eps = n * machine eps * max|lambda| (about 1e-6 here in float32)
  assert float(critical.index(lam)) == pytest.approx(0.2)
  batched = critical.index(jnp.array([[-1.0, 1.0], [-1.0, -1.0]]), eps=0.1)
  np.testing.assert_array_equal(batched, [0.5, 1.0])
  with pytest.raises(ValueError, match="non-empty last axis"):
    critical.index(jnp.zeros((0,)))


def test_saddle_free_newton_step_on_quadratic_is_minus_abs_h_inverse_g(x64):
  a, b, q = _quadratic()
  obj = _quadratic_obj()
  x = jnp.asarray(np.random.default_rng(5).normal(size=4))
  g = a @ np.asarray(x) + b
  for damping in (0.0, 0.3):
    expected = -q @ np.diag(1 / (np.abs(_A_EIGS) + damping)) @ q.T @ g
    np.testing.assert_allclose(newton.saddle_free_newton_step(obj, x, damping), expected, rtol=1e-12, atol=1e-14)
  np.testing.assert_allclose(newton.newton_step(obj, x, 0.2), -np.linalg.solve(a + 0.2 * np.eye(4), g), rtol=1e-12)
  np.testing.assert_allclose(newton.gradient_descent_step(obj, x, 0.1), -0.1 * g, rtol=1e-14)
  # Krylov SFN with k = n = 4 spans the whole space: equals the dense step
  np.testing.assert_allclose(newton.saddle_free_newton_step_krylov(obj, x, 0.0, 4),
                             -q @ np.diag(1 / np.abs(_A_EIGS)) @ q.T @ g, rtol=1e-10)


def test_krylov_sfn_equals_dense_sfn_when_k_is_n(x64):
  obj = _mlp_obj()
  p = _mlp_params(seed=2)
  dense = newton.saddle_free_newton_step(obj, p, 0.1)
  krylov = newton.saddle_free_newton_step_krylov(obj, p, 0.1, 17)
  # 17 Lanczos steps with full reorthogonalisation: agreement to 1e-8 relative
  js.tree.assert_allclose(krylov, dense, rtol=1e-8, atol=1e-10)
  assert js.tree.leaf_names(krylov) == js.tree.leaf_names(p)
  # a smaller subspace gives a different, still downhill step
  small = newton.saddle_free_newton_step_krylov(obj, p, 0.1, 3)
  minus_g = newton.gradient_descent_step(obj, p, 1.0)
  assert float(js.tree.dot(small, minus_g)) > 0
  assert not js.tree.allclose(small, dense, rtol=1e-3)


def test_krylov_sfn_matches_dense_krylov_reference_for_k_below_n(x64):
  # reference: Q from numpy QR of [g, Hg, ..., H^(k-1) g] (the Krylov space K_k(H, g)), T = Q^T H Q and the step
  # -Q |T + damping|^-1 Q^T g, all dense float64; spectral.lanczos builds the same space by HVPs
  obj, p = _mlp_obj(), _mlp_params(seed=2)
  h = np.asarray(hessian.dense_hessian(obj, p))
  f, x, _ = hessian.flat_objective(obj, p)
  g = np.asarray(jax.grad(f)(x))
  for k, damping in ((3, 0.1), (6, 0.0), (8, 0.3)):
    krylov = np.stack([np.linalg.matrix_power(h, i) @ g for i in range(k)], axis=1)
    q, _ = np.linalg.qr(krylov)
    mu, u = np.linalg.eigh(q.T @ h @ q)
    expected = -q @ u @ np.diag(1 / (np.abs(mu) + damping)) @ u.T @ q.T @ g
    step = jax.flatten_util.ravel_pytree(newton.saddle_free_newton_step_krylov(obj, p, damping, k))[0]
    # the monomial Krylov basis is ill-conditioned (cond ~ (max|lambda| / min|lambda|)^k): agreement to 1e-6
    np.testing.assert_allclose(step, expected, rtol=1e-6, atol=1e-9 * np.linalg.norm(expected))


def test_sfn_escapes_saddle_faster_than_gd_and_newton_is_attracted(x64):
  obj = _saddle_obj()
  p0 = jnp.array([0.1, 1e-3])
  gd = newton.escape_saddle(obj, p0, "gd", 60, lr=0.1, threshold=0.1)
  sfn = newton.escape_saddle(obj, p0, "sfn", 60, threshold=0.1)
  krylov = newton.escape_saddle(obj, p0, "sfn_krylov", 60, krylov_dim=2, threshold=0.1)
  attracted = newton.escape_saddle(obj, p0, "newton", 60, threshold=0.1)
  # closed forms: GD multiplies y by 1.2 per step, SFN by 2; the loss drops by
  # 0.1 once y^2 - x^2 >= 0.1 - 0.01 + 1e-6: step 32 for GD, step 9 for SFN
  assert gd.escape_step == 32
  assert sfn.escape_step == 9 and krylov.escape_step == 9
  assert sfn.escape_step < gd.escape_step
  np.testing.assert_allclose(krylov.losses[:12], sfn.losses[:12], rtol=1e-10)
  # Newton jumps onto the saddle in one step and stays there
  assert attracted.escape_step == -1
  np.testing.assert_allclose(attracted.params, [0.0, 0.0], atol=1e-15)
  assert attracted.grad_norms[-1] < 1e-15
  assert gd.losses.shape == (61,) and gd.grad_norms.shape == (61,)


def test_escape_from_planted_saddle_of_linear_net(x64):
  obj = _linear_net_obj()
  p0 = {"w1": jnp.array(1e-3), "w2": jnp.array(2e-3)}
  gd = newton.escape_saddle(obj, p0, "gd", 100, lr=0.05, threshold=0.5)
  sfn = newton.escape_saddle(obj, p0, "sfn", 100, damping=0.1, threshold=0.5)
  assert 0 < sfn.escape_step < gd.escape_step
  assert sfn.losses[-1] < 1e-6  # SFN ends at the minimum w1 w2 = 1


def test_errors_name_what_was_expected():
  obj = _saddle_obj()
  with pytest.raises(ValueError, match="unknown method 'bfgs'"):
    critical.find_critical_point(obj, jnp.array([0.1, 0.1]), method="bfgs")
  with pytest.raises(ValueError, match=r"krylov_dim must be an int in \[1, 2\]"):
    newton.saddle_free_newton_step_krylov(obj, jnp.array([0.1, 0.1]), 0.0, 3)
  with pytest.raises(ValueError, match="needs krylov_dim"):
    newton.escape_saddle(obj, jnp.array([0.1, 0.1]), "sfn_krylov", 5)
  with pytest.raises(ValueError, match="unknown method 'adam'"):
    newton.escape_saddle(obj, jnp.array([0.1, 0.1]), "adam", 5)
  with pytest.raises(ValueError, match="no array leaves"):
    hessian.dense_hessian(obj, {})


# ----------------------------------------------------- hybrid search, minimiser, line search
@functools.cache
def _double_well_obj():  # f = x^4/4 - x^2/2 + y^2/2: saddle (0, 0), minima (+-1, 0)
  return _scalar_objective(lambda p: p[0] ** 4 / 4 - p[0] ** 2 / 2 + p[1] ** 2 / 2)


# closed form: grad = (x^3 - x, y), Hessian diag(3x^2 - 1, 1)
_DOUBLE_WELL = {(0.0, 0.0): (0.5, [-1.0, 1.0], 0.0), (1.0, 0.0): (0.0, [1.0, 2.0], -0.25),
                (-1.0, 0.0): (0.0, [1.0, 2.0], -0.25)}


def test_hybrid_search_finds_every_critical_point_of_the_double_well(x64):
  xs = np.array([-1.6, -1.2, -0.8, -0.3, 0.0, 0.25, 0.45, 0.7, 0.9, 1.3, 1.7])
  starts = jnp.asarray(np.stack(np.meshgrid(xs, [-0.5, 0.7]), -1).reshape(-1, 2))
  cps = critical.find_critical_points(_double_well_obj(), starts, method="hybrid", max_steps=60, tol=1e-10)
  assert len(cps) == starts.shape[0] and cps.converged.all() and set(cps.status) == {"converged"}
  reached = set()
  for x, idx, lam, loss, gn in zip(np.asarray(cps.params), cps.index, cps.eigenvalues, cps.loss, cps.grad_norm):
    known = min(_DOUBLE_WELL, key=lambda p: np.linalg.norm(x - p))
    # |x - x*| <= ||g|| / min|lambda| = 1e-10
    np.testing.assert_allclose(x, known, atol=1e-10)
    want_index, want_lam, want_loss = _DOUBLE_WELL[known]
    assert idx == want_index and gn < 1e-10
    np.testing.assert_allclose(lam, want_lam, atol=1e-9)
    np.testing.assert_allclose(loss, want_loss, atol=1e-15)
    reached.add(known)
  assert reached == set(_DOUBLE_WELL)


@functools.cache
def _camel_obj():
  return _scalar_objective(testfns.six_hump_camel)


def test_hybrid_search_reaches_each_six_hump_camel_point_with_its_index(x64):
  land = testfns.get("six_hump_camel")
  kind_index = {"minimum": 0.0, "saddle": 0.5, "maximum": 1.0}
  known = np.array([p.x for p in land.points])
  # starts 0.02 away from each tabulated point (random directions) ...
  u = np.random.default_rng(0).normal(size=known.shape)
  near = known + 0.02 * u / np.linalg.norm(u, axis=1, keepdims=True)
  # ... and random starts in the domain
  rand = np.random.default_rng(1).uniform([-2, -1], [2, 1], size=(48, 2))
  cps = critical.find_critical_points(_camel_obj(), jnp.asarray(np.concatenate([near, rand])), method="hybrid",
                                      max_steps=80, tol=1e-10)
  x = np.asarray(cps.params)
  for i, p in enumerate(land.points):
    # the tabulated points carry ||grad f|| < 1e-9; Newton's limit is within 1e-9 / min|lambda| of them
    np.testing.assert_allclose(x[i], p.x, atol=1e-8)
    assert cps.converged[i] and cps.grad_norm[i] < 1e-10 and cps.index[i] == kind_index[p.kind], (p, cps.index[i])
    np.testing.assert_allclose(cps.loss[i], p.value, rtol=1e-12, atol=1e-12)
  # every random start that converged ended on a tabulated point, with the tabulated point's index
  ok = np.flatnonzero(cps.converged[len(known):]) + len(known)
  assert ok.size >= 40
  for i in ok:
    d = np.linalg.norm(known - x[i], axis=1)
    assert d.min() < 1e-8, x[i]
    assert cps.index[i] == kind_index[land.points[int(d.argmin())].kind]


def test_hybrid_newton_phase_respects_the_step_cap(x64):
  # lm_steps=0: capped Newton from x = 10. Newton's first steps are longer than 1 (g = 990, H = 299),
  # so reaching x = 1 takes at least 9 steps; then quadratic convergence to the minimum (1, 0).
  cp = critical.find_critical_point(_double_well_obj(), jnp.array([10.0, 0.0]), method="hybrid", max_steps=40,
                                    lm_steps=0, step_cap=1.0, tol=1e-12)
  assert cp.converged and cp.index == 0.0 and cp.steps >= 9
  np.testing.assert_allclose(cp.params, [1.0, 0.0], atol=1e-12)
  assert cp.steps <= 20


def test_hybrid_reports_gradient_flat_stall_of_a_function_without_critical_points(x64):
  # f = x^3/3 + x + y^2/2: g = (x^2 + 1, y) never vanishes; ||g||^2 is locally minimal at the origin,
  # where H = diag(2x, 1) = diag(0, 1) annihilates g = (1, 0): flatness ||Hg|| / (max|lambda| ||g||) = 2|x| -> 0
  obj = _scalar_objective(lambda p: p[0] ** 3 / 3 + p[0] + p[1] ** 2 / 2)
  cps = critical.find_critical_points(obj, jnp.array([[0.7, 0.3], [-1.5, -0.2]]), method="hybrid", max_steps=100,
                                      lm_steps=80, window=40)
  assert not cps.converged.any() and list(cps.status) == ["gradient_flat"] * 2
  # the LM phase stopped next to the origin: ||g|| = 1 + x^2 + O(y^2), flatness ~ 2|x|
  np.testing.assert_allclose(cps.stall_grad_norm, 1.0, rtol=1e-3)
  assert np.all(cps.stall_flatness < 0.05)
  assert np.all(cps.grad_norm >= 1.0) and np.all(cps.lm_steps < 80)


def test_find_critical_points_batched_matches_sequential_and_single(x64):
  obj = _mlp_l2_obj()
  rng = np.random.default_rng(4)
  starts = {k: jnp.asarray(rng.normal(size=(5, *s)) * 0.5) for k, s in
            {"w1": (2, 3), "b1": (3,), "w2": (3, 2), "b2": (2,)}.items()}
  seq = critical.find_critical_points(obj, starts, max_steps=60, tol=1e-9)
  assert seq.converged.sum() >= 3
  bat = critical.find_critical_points(obj, starts, max_steps=60, tol=1e-9, batch_size=2)
  # the same arithmetic under vmap: agreement to rounding
  np.testing.assert_allclose(bat.loss, seq.loss, rtol=1e-9)
  np.testing.assert_array_equal(bat.status, seq.status)
  js.tree.assert_allclose(bat.params, seq.params, rtol=1e-7, atol=1e-9)
  one = critical.find_critical_point(obj, jax.tree.map(lambda a: a[3], starts), method="hybrid", max_steps=60,
                                     tol=1e-9)
  np.testing.assert_allclose(one.loss, seq.loss[3], rtol=1e-12)
  assert one.status == seq.status[3] and one.index == seq.index[3]
  # index and eigenvalues agree with numpy on the dense Hessian at every converged end point
  for i in np.flatnonzero(seq.converged):
    h = np.asarray(hessian.dense_hessian(obj, jax.tree.map(lambda a: a[i], seq.params)))
    lam = np.linalg.eigvalsh(h)
    np.testing.assert_allclose(seq.eigenvalues[i], lam, atol=1e-10)
    assert seq.index[i] == np.mean(lam < -seq.eps[i])


def test_minimize_saddle_free_leaves_a_saddle_for_a_minimum(x64):
  cp = newton.minimize_saddle_free(_double_well_obj(), jnp.array([1e-3, 0.5]), tol=1e-12)
  assert cp.converged and cp.status == "converged" and cp.index == 0.0 and cp.method == "sfn_minimize"
  np.testing.assert_allclose(cp.params, [1.0, 0.0], atol=1e-12)
  np.testing.assert_allclose(cp.loss, -0.25, rtol=1e-14)
  # a small MLP: the end point's dense Hessian (numpy) has no eigenvalue below -1e-10
  mlp = newton.minimize_saddle_free(_mlp_l2_obj(), jax.tree.map(lambda a: a.astype(jnp.float64), _mlp_params(3)),
                                      max_steps=200, tol=1e-9)
  assert mlp.converged and mlp.index == 0.0
  lam = np.linalg.eigvalsh(np.asarray(hessian.dense_hessian(_mlp_l2_obj(), mlp.params)))
  assert lam.min() > 1e-3  # a strict minimum: the L2 term alone contributes 1e-2


def test_escape_line_search_keeps_sfn_monotone_after_the_saddle(x64):
  obj = _double_well_obj()
  p0 = jnp.array([1e-3, 0.5])
  plain = newton.escape_saddle(obj, p0, "sfn", 30, threshold=0.1)
  searched = newton.escape_saddle(obj, p0, "sfn", 30, threshold=0.1, line_search=True)
  # both double x while |x| << 1 (|H_xx| = 1): the same escape step
  assert searched.escape_step == plain.escape_step > 0
  # unit SFN steps overshoot once |H_xx| = |3x^2 - 1| is small; the line search never lets the loss rise
  assert np.max(np.diff(plain.losses)) > 1e-3
  assert np.max(np.diff(searched.losses)) <= 1e-15
  np.testing.assert_allclose(searched.losses[-1], -0.25, rtol=1e-10)
  # closed form on x^2 - y^2 unchanged by the line search (every unit SFN step descends)
  assert newton.escape_saddle(_saddle_obj(), jnp.array([0.1, 1e-3]), "sfn", 40, threshold=0.1,
                                line_search=True).escape_step == 9


def test_search_argument_errors():
  obj = _saddle_obj()
  with pytest.raises(ValueError, match="share a non-empty leading axis"):
    critical.find_critical_points(obj, {"a": jnp.zeros((3, 1)), "b": jnp.zeros((2, 1))})
  with pytest.raises(ValueError, match="batch_size must be None or a positive int"):
    critical.find_critical_points(obj, jnp.zeros((2, 2)), batch_size=0)
  with pytest.raises(ValueError, match="step_cap must be positive"):
    critical.find_critical_point(obj, jnp.zeros(2), method="hybrid", step_cap=0.0)
  with pytest.raises(ValueError, match="lm_steps must be None or a non-negative int"):
    critical.find_critical_points(obj, jnp.zeros((2, 2)), lm_steps=-1)
  with pytest.raises(ValueError, match="damping must be >= 0"):
    newton.minimize_saddle_free(obj, jnp.zeros(2), damping=-1.0)


@functools.cache
def _shallow_saddle_obj():  # f = (x^2 - 0.1 y^2) / 2: eigenvalues (1, -0.1), max|lambda| = 1
  return _scalar_objective(lambda p: (p[0] ** 2 - 0.1 * p[1] ** 2) / 2)


def test_compare_escapes_matches_the_closed_form_step_counts(x64):
  # gd with lr = 1/max|lambda| = 1 zeroes x in one step and multiplies y by 1.1; SFN (damping 1e-3) zeroes x and
  # multiplies y by 1 + 0.1 / 0.101; Newton (H + 1e-3 I)^-1 pulls y towards the saddle and never escapes
  cmp = newton.compare_escapes(jax.random.key(3), _shallow_saddle_obj(), [jnp.zeros(2)], [jnp.array([-0.1, 1.0])], 40,
                               methods=("gd", "newton", "sfn"), perturbation=0.1, threshold=0.05)
  x0, y0 = np.asarray(cmp.starts[0])
  np.testing.assert_allclose(np.hypot(x0, y0), 0.1, rtol=1e-12)
  f0 = (x0**2 - 0.1 * y0**2) / 2

  def first_escape(growth):
    return next(t for t in range(1, 41) if -0.05 * (y0 * growth**t) ** 2 <= f0 - 0.05)

  assert cmp.steps.tolist() == [[first_escape(1.1), -1, first_escape(1 + 0.1 / 0.101)]]
  assert cmp.faster("sfn", than="gd").tolist() == [True] and cmp.faster("newton", than="gd").tolist() == [False]
  assert cmp.losses.shape == (1, 3, 41) and cmp.wall.shape == (1, 3)
  np.testing.assert_allclose([cmp.lambda_min[0], cmp.lambda_max[0]], [-0.1, 1.0])
  np.testing.assert_allclose(cmp.final_change, cmp.losses[:, :, -1] - cmp.losses[:, :, 0])


def test_describe_point_tells_a_saddle_and_a_higher_order_saddle(x64):
  d = critical.describe_point(jax.random.key(0), _saddle_obj(), jnp.zeros(2))  # x^2 - y^2: Hessian diag(2, -2)
  assert (d.grad_norm, d.num_negative, d.index, d.lambda_min, d.lambda_max) == (0.0, 1, 0.5, -2.0, 2.0)
  # (1 - a b c)^2 at the origin: zero gradient and Hessian; L(t v) - 1 = -2 t^3 abc + t^6 (abc)^2 < 0 for some t
  cubic = _scalar_objective(lambda p: (1 - p[0] * p[1] * p[2]) ** 2)
  d = critical.describe_point(jax.random.key(1), cubic, jnp.zeros(3))
  assert d.grad_norm == 0.0 and d.num_negative == 0 and np.all(d.eigenvalues == 0)
  assert d.min_change < 0


def test_join_and_summarize_a_population(x64):
  obj = _saddle_obj()
  found = critical.find_critical_points(obj, jnp.array([[0.3, -0.2], [0.1, 0.1]]))
  extra = critical.find_critical_point(obj, jnp.array([0.2, 0.2]))
  both = critical.join(found, [extra])
  assert len(both) == 3 and both.lm_steps[-1] == 0 and np.isnan(both.stall_grad_norm[-1])
  np.testing.assert_array_equal(both.eigenvalues[:2], found.eigenvalues)
  np.testing.assert_array_equal(both.params[-1], extra.params)
  assert both.loss[-1] == extra.loss and both.status[-1] == extra.status
  sm = critical.summarize(both)
  assert len(sm.distinct) == 1 and sm.minima.size == 0 and np.isnan(sm.spearman)  # one saddle, found three times


def test_population_rows_saddles_and_arrays():
  n = 5
  pts = critical.CriticalPoints(
      params=None, loss=np.array([0.0, 0.0, 1.0, 2.0, 3.0]), grad_norm=np.full(n, 1e-7),
      index=np.array([0.0, 0.0, 0.5, 1.0, 0.5]), eigenvalues=np.array([[1.0, 2.0]] * 2 + [[-1.0, 3.0], [-2.0, -1.0],
                                                                                          [-1.0, 1.0]]),
      steps=np.array([3, 4, 5, 6, 9]), converged=np.array([True, True, True, True, False]),
      status=np.array(["converged"] * 4 + ["gradient_flat"]), flatness=np.zeros(n), lm_steps=np.full(n, 4),
      stall_grad_norm=np.full(n, 0.5), stall_flatness=np.full(n, 1e-4), method="hybrid", tol=1e-6, eps=np.zeros(n))
  sm = critical.summarize(pts)
  assert sm.distinct == [0, 2, 3] and sm.low_fraction == 0.1
  rows = dict(sm.outcome_rows(pts, np.array([True, True, True, True, False])))
  assert rows["starts: searched / refined"] == (4, 1)
  assert rows["converged (||grad f|| < tol): all / searched / in the LM phase / refined / of refined"] == (4, 4, 2, 0, 1)
  assert rows["excluded: gradient-flat / step budget exhausted"] == (1, 0)
  assert rows["minima (index 0), all / distinct; saddles, all / distinct"] == (2, 1, 2, 2)
  assert rows["distinct points"] == 3 and rows["loss range"] == (0.0, 2.0) and rows["index range"] == (0.0, 1.0)
  assert np.isnan(rows["at the LM stall: median ||grad f|| / median flatness ||Hg||/(max|lambda| ||g||) / flatness < 1e-3"][0])
  mean_steps = rows["mean steps per searched start: converged / not"]  # the unconverged point was not searched
  assert mean_steps[0] == 4.5 and np.isnan(mean_steps[1])
  assert sm.distinct_rows(pts) == [(0.0, 0.0, 0, 1e-7, 1.0), (1.0, 0.5, 1, 1e-7, 1.0), (2.0, 1.0, 2, 1e-7, 1.0)]
  assert sm.saddles(pts, 3) == [3, 2] and sm.saddles(pts, 1, above=1.5) == [3] and sm.saddles(pts, 2, above=5.0) == []
  arrays = pts.arrays()
  assert arrays["status"].dtype == np.dtype("U16") and "params" not in arrays and arrays["eigenvalues"].shape == (n, 2)


def test_escape_comparison_rows():
  cmp = newton.EscapeComparison(methods=("gd", "sfn"), starts=[None], lambda_min=np.array([-0.5]),
                                lambda_max=np.array([2.0]), steps=np.array([[7, -1]]),
                                losses=np.array([[[1.0, 0.5, 0.75], [1.0, 1.25, 1.5]]]), wall=np.array([[0.123, 1.26]]),
                                budget=2, threshold=0.1)
  assert cmp.rows() == [(-0.5, 2.0, 7, -1, (-0.5, -0.25), (0.0, 0.5), (0.1, 1.3))]
  assert len(cmp.columns) == len(cmp.rows()[0]) and cmp.columns[-1] == "wall s (gd / sfn)"
  assert cmp.records() == [{"lambda_min": -0.5, "lambda_max": 2.0, "steps": {"gd": 7, "sfn": -1},
                            "wall": {"gd": 0.123, "sfn": 1.26}}]


def test_gradient_descent_many_matches_the_closed_form_on_a_quadratic(x64):
  # mean over the rows of X of (x.p - 0)^2 = p^T A p with A = X^T X / N: GD is p_T = (I - 2 lr A)^T p_0
  x = jnp.array([[1.0, 0.5], [0.0, 2.0], [1.0, -1.0]])
  obj = js.Objective.from_apply(lambda p, z: z @ p, data=(x, jnp.zeros(3)), loss="mse", batch_size=None)
  starts = jax.random.normal(jax.random.key(0), (4, 2), jnp.float64)
  step = np.eye(2) - 2 * 0.1 * np.asarray(x.T @ x) / 3
  want = np.asarray(starts) @ np.linalg.matrix_power(step, 25).T
  np.testing.assert_allclose(newton.gradient_descent(obj, starts, lr=0.1, steps=25), want, rtol=1e-12, atol=1e-14)
  tree_starts = {"a": starts[:, :1], "b": starts[:, 1:]}  # any pytree, stacked on the leading axis
  split = js.Objective.from_apply(lambda p, z: z @ jnp.concatenate([p["a"], p["b"]]), data=(x, jnp.zeros(3)),
                                  loss="mse", batch_size=None)
  ends = newton.gradient_descent(split, tree_starts, lr=0.1, steps=25)
  np.testing.assert_allclose(ends["b"][:, 0], want[:, 1], rtol=1e-12, atol=1e-14)
  with pytest.raises(ValueError, match="lr must be positive; got 0"):
    newton.gradient_descent(obj, starts, lr=0.0, steps=1)
  with pytest.raises(ValueError, match="steps must be a non-negative int; got 1.5"):
    newton.gradient_descent(obj, starts, lr=0.1, steps=1.5)
  with pytest.raises(ValueError, match="stacked on a leading axis.*leading sizes"):
    newton.gradient_descent(obj, {"a": starts, "b": starts[:2]}, lr=0.1, steps=1)


def test_minimize_saddle_free_many_matches_the_single_runs(x64):
  obj = _double_well_obj()  # minima (+-1, 0) at -1/4, a saddle at the origin
  starts = jnp.array([[1e-3, 0.5], [-0.2, 0.1], [3.0, -1.0]])
  out = newton.minimize_saddle_free_many(obj, starts, tol=1e-12)
  np.testing.assert_allclose(out["params"], [[1.0, 0.0], [-1.0, 0.0], [1.0, 0.0]], atol=1e-12)
  np.testing.assert_allclose(out["loss"], -0.25, rtol=1e-14)
  np.testing.assert_allclose(out["eigenvalues"], [[1.0, 2.0]] * 3, rtol=1e-10)  # Hessian diag(3x^2 - 1, 1) = (2, 1)
  assert out["converged"].all() and list(out["status"]) == ["converged"] * 3
  for i in range(3):
    single = newton.minimize_saddle_free(obj, starts[i], tol=1e-12)
    assert int(out["steps"][i]) == single.steps and float(out["loss"][i]) == single.loss
  capped = newton.minimize_saddle_free_many(obj, starts, max_steps=1, tol=1e-12)
  assert not capped["converged"].all() and "max_steps" in capped["status"]
  with pytest.raises(ValueError, match="tol must be positive"):
    newton.minimize_saddle_free_many(obj, starts, tol=0.0)


def test_distinct_minima_groups_converged_ends_and_verifies_them_densely(x64):
  rng = np.random.default_rng(0)
  x, y = rng.normal(size=(40, 3)), rng.normal(size=(40,))
  obj = js.Objective.from_apply(lambda p, xb: xb @ p, data=(x, y), loss="mse")
  star = np.linalg.lstsq(x, y, rcond=None)[0]
  ends = jnp.asarray(np.stack([star, star + 1.0, star, star]))
  losses = np.array([float(obj.value(e)) for e in ends])
  index, rows = critical.distinct_minima(obj, ends, losses, np.array([True, True, True, False]), rtol=1e-9,
                                         grad_tol=1e-8, psd_rtol=1e-9)
  assert index == [0, 1]  # ascending loss; 2 is a copy of 0, the not converged end 3 is left out
  lam = np.linalg.eigvalsh(2 * x.T @ x / 40)  # the least-squares Hessian
  rank, loss, g, lo, hi, runs, ok = rows[0]
  assert (rank, runs, bool(ok)) == (0, 2, True) and g <= 1e-12  # float64 gradient at the lstsq solution
  np.testing.assert_allclose([loss, lo, hi], [losses[0], lam[0], lam[-1]], rtol=1e-12)
  g_far = np.linalg.norm(2 * x.T @ (x @ (star + 1.0) - y) / 40)
  np.testing.assert_allclose(rows[1][2], g_far, rtol=1e-12)
  assert rows[1][5] == 1 and not rows[1][6]  # a converged end with a gradient: not a minimum
  _, saddle = critical.distinct_minima(_saddle_obj(), jnp.zeros((1, 2)), np.zeros(1), np.array([False]), rtol=1e-9,
                                       grad_tol=1e-8, psd_rtol=1e-9)
  assert saddle[0][3] == -2.0 and saddle[0][5] == 0 and not saddle[0][6]  # none converged: still verified, and fails
  with pytest.raises(ValueError, match=r"\[runs\]"):
    critical.distinct_minima(obj, ends, losses[:2], np.ones(2, bool), rtol=1e-9, grad_tol=1e-8, psd_rtol=1e-9)
