"""sharpness: Keskar epsilon-sharpness against closed-form box maxima of quadratics."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxscape as js
from jaxscape import sharpness


def _quadratic(n=6, seed=0):
  rng = np.random.default_rng(seed)
  m = rng.normal(size=(n, n))
  q = m @ m.T / n + 0.5 * np.eye(n)  # positive definite, not diagonal
  return jnp.asarray(q), 0.7


def _vertex_max(f, half_widths):
  """Exact max of a convex function over a box: the best of its 2^p vertices."""
  best = -np.inf
  for s in itertools.product((-1.0, 1.0), repeat=len(half_widths)):
    best = max(best, float(f(jnp.asarray(s) * half_widths)))
  return best


def test_both_maximizers_reach_the_closed_form_box_maximum(x64):
  q, c = _quadratic()
  f = lambda p: 0.5 * p["w"] @ q @ p["w"] + c
  x = jnp.asarray(np.random.default_rng(1).normal(size=6))
  eps = 0.05
  res = sharpness.keskar(jax.random.key(0), f, {"w": x}, eps=eps)
  b = eps * (np.abs(np.asarray(x)) + 1)
  f0 = float(f({"w": x}))
  fmax = _vertex_max(lambda y: f({"w": x + y}), b)
  phi_exact = 100 * (fmax - f0) / (1 + f0)
  assert phi_exact > 1.0  # a non-trivial box
  # float64: both maximisers land on the maximising vertex, to 1e-9 relative
  np.testing.assert_allclose(res.phi_by_maximizer["lbfgsb"], phi_exact, rtol=1e-9)
  np.testing.assert_allclose(res.phi_by_maximizer["sign"], phi_exact, rtol=1e-9)
  np.testing.assert_allclose(res.phi, phi_exact, rtol=1e-9)
  np.testing.assert_allclose(res.loss, f0, rtol=1e-12)
  np.testing.assert_allclose(res.max_loss, fmax, rtol=1e-12)
  assert len(res.corners) == 8 and res.corners_ok and res.phi >= max(res.corners)
  assert all(cv <= phi_exact * (1 + 1e-12) for cv in res.corners)  # corners are feasible points
  assert 1 <= res.num_evals["lbfgsb"] and res.num_evals["sign"] == 4 * 21
  assert res.eps == eps and res.subspace_dim is None


def test_at_a_minimiser_lbfgsb_stalls_and_sign_ascent_does_not(x64):
  # one dominant curvature direction u: the box maximum is at the vertex +-eps sign(u),
  # which corner hopping y <- b sign(Q y) reaches from almost any start
  rng = np.random.default_rng(2)
  u = rng.normal(size=6)
  u /= np.linalg.norm(u)
  q, c = jnp.asarray(10.0 * np.outer(u, u) + 0.1 * np.eye(6)), 0.7
  f = lambda w: 0.5 * w @ q @ w + c
  eps = 1e-3
  res = sharpness.keskar(jax.random.key(1), f, jnp.zeros(6), eps=eps)
  f0 = c
  fmax = _vertex_max(f, eps * np.ones(6))
  phi_exact = 100 * (fmax - f0) / (1 + f0)
  # zero gradient at y = 0: L-BFGS-B stops at once (phi ~ 0, at most 1e-12)
  assert abs(res.phi_by_maximizer["lbfgsb"]) < 1e-12
  # sign ascent from random points reaches the maximising vertex (1e-9 relative),
  # hence beats every random corner
  assert res.corners_ok and res.phi >= max(res.corners)
  np.testing.assert_allclose(fmax, c + 0.5 * eps**2 * np.abs(u).sum() ** 2 * 10 + 0.5 * 0.1 * 6 * eps**2, rtol=1e-12)
  np.testing.assert_allclose(res.phi_by_maximizer["sign"], phi_exact, rtol=1e-9)
  assert res.phi == res.phi_by_maximizer["sign"]
  # the corner check catches a stalled maximiser: L-BFGS-B alone loses to random corners
  alone = sharpness.keskar(jax.random.key(1), f, jnp.zeros(6), eps=eps, maximizers=("lbfgsb",))
  assert not alone.corners_ok and alone.phi < max(alone.corners) and "sign" not in alone.phi_by_maximizer


def test_random_subspace_with_objective(x64):
  q, c = _quadratic(n=8, seed=3)
  # the quadratic as an Objective: one dummy example, a custom per-example loss
  apply = lambda p, x: jnp.broadcast_to(0.5 * p @ q @ p + c, x.shape[:1])
  obj = js.Objective.from_apply(apply, data=(np.zeros((1, 1)), np.zeros(1)), loss=lambda o, t: o)
  x = jnp.asarray(np.random.default_rng(4).normal(size=8))
  key = jax.random.key(2)
  eps = 0.05
  res = sharpness.keskar(key, obj, x, eps=eps, subspace_dim=3)
  # rebuild A from the same key split and solve the 3-dim box problem exactly
  a = sharpness.random_subspace(jax.random.split(key, 3)[0], 8, 3, jnp.float64)
  pinv = np.linalg.pinv(np.asarray(a))
  b = eps * (np.abs(pinv @ np.asarray(x)) + 1)
  np.testing.assert_allclose(sharpness.box_bounds(x, eps, a), b, rtol=1e-10)
  f = lambda w: 0.5 * w @ q @ w + c
  f0 = float(f(x))
  phi_exact = 100 * (_vertex_max(lambda y: f(x + a @ y), b) - f0) / (1 + f0)
  np.testing.assert_allclose(res.phi_by_maximizer["lbfgsb"], phi_exact, rtol=1e-9)
  np.testing.assert_allclose(res.phi_by_maximizer["sign"], phi_exact, rtol=1e-9)
  assert res.subspace_dim == 3 and res.corners_ok
  # the subspace box is a subset of the directions: phi(A) <= phi(I) for the same eps here
  full = sharpness.keskar(key, obj, x, eps=eps)
  assert res.phi <= full.phi


def test_errors():
  f = lambda w: jnp.sum(w**2)
  with pytest.raises(ValueError, match="eps"):
    sharpness.keskar(jax.random.key(0), f, jnp.ones(3), eps=0.0)
  with pytest.raises(ValueError, match="maximizers"):
    sharpness.keskar(jax.random.key(0), f, jnp.ones(3), maximizers=("adam",))
  with pytest.raises(ValueError, match="subspace_dim"):
    sharpness.keskar(jax.random.key(0), f, jnp.ones(3), subspace_dim=4)
  with pytest.raises(ValueError, match="callable"):
    sharpness.keskar(jax.random.key(0), 3.0, jnp.ones(3))


def test_keskar_key_first_and_keyword_calls_agree():
  f = lambda p: jnp.sum(p**2) + jnp.sum(jnp.sin(3 * p))
  key = jax.random.key(4)
  a = sharpness.keskar(key, f, jnp.ones(4), 1e-2, num_starts=2, sign_steps=4)
  b = sharpness.keskar(f, jnp.ones(4), 1e-2, key=key, num_starts=2, sign_steps=4)
  assert a == b

