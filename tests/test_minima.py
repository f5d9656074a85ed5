"""Tests of jaxscape.minima: ensemble descents with compaction, float64 tangent spectra, value statistics."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxscape import minima
from jaxscape.models import spin_glass as sg


def _problem(n=10, d=2, s=5, seed=0):
  X = jax.vmap(lambda k: sg.disorder(k, n))(jax.random.split(jax.random.key(seed), d))
  w0 = jax.vmap(jax.vmap(lambda k: sg.random_point(k, n)))(jax.random.split(jax.random.key(seed + 1), (d, s)))
  return w0, X


def test_descend_ensemble_matches_plain_vmap():
  """Rounds with compaction reach the same end points as one vmapped run (tolerance 1e-3 on w, 1e-5 on e)."""
  w0, X = _problem()
  plain = jax.vmap(jax.vmap(lambda w, x: sg.descend(w, x, lr=0.1, tol=1e-4, max_steps=5000), in_axes=(0, None)))(w0, X)
  rounds = minima.descend_ensemble(w0, X, lr=0.1, tol=1e-4, max_steps=5000, round_steps=50)
  assert bool(np.all(plain.converged)) and bool(np.all(rounds.converged))
  np.testing.assert_allclose(rounds.energy, plain.energy, atol=1e-5)
  np.testing.assert_allclose(rounds.w, plain.w, atol=1e-3)
  # every run took (within a round restart) as many steps as alone
  np.testing.assert_allclose(rounds.steps, plain.steps, atol=2)
  assert np.all(rounds.grad_norm < 1e-4)


def test_descend_ensemble_respects_budget_and_shapes():
  w0, X = _problem(d=2, s=3)
  out = minima.descend_ensemble(w0, X, lr=0.1, tol=1e-12, max_steps=120, round_steps=50)
  assert out.energy.shape == (2, 3) and out.w.shape == (2, 3, 10)
  assert np.all(out.steps == 120) and not np.any(out.converged)
  np.testing.assert_allclose(np.sum(np.asarray(out.w) ** 2, -1), 10.0, rtol=1e-5)
  with pytest.raises(ValueError, match="starts"):
    minima.descend_ensemble(w0[0], X)


def test_tangent_spectrum_matches_dense_reference():
  """float64 eigenvalues against a NumPy reference built from the Euclidean Hessian (tolerance 1e-9)."""
  w0, X = _problem(n=7, d=2, s=2, seed=3)
  out = minima.descend_ensemble(w0, X, lr=0.1, tol=1e-5, max_steps=5000)
  eig = minima.tangent_spectrum(out.w, X, batch_size=1)
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


def test_finite_size_fit_recovers_line():
  n = np.array([20.0, 40.0, 80.0, 120.0])
  a, b = minima.finite_size_fit(n, -1.63 + 0.8 * n ** (-2 / 3))
  assert abs(a + 1.63) < 1e-12 and abs(b - 0.8) < 1e-10
  with pytest.raises(ValueError, match="positive"):
    minima.finite_size_fit([0, 1], [1, 2])


def test_poor_fraction_and_spread():
  losses = np.array([[0.1, 0.5, np.nan, 0.2], [0.1, 0.1, 0.1, 0.3]])
  ref = np.array([0.1, 0.1, 0.12, 0.08])   # median 0.1 -> threshold 0.2
  np.testing.assert_allclose(minima.poor_fraction(losses, ref), [0.5, 0.25])
  sp = minima.spread_by_group(np.array([[1.0, 2.0, 3.0], [2.0, 2.0, 2.0]]))
  np.testing.assert_allclose(sp["std"], [1.0, 0.0])
  np.testing.assert_allclose(sp["mean"], [2.0, 2.0])
  with pytest.raises(ValueError, match="groups, runs"):
    minima.spread_by_group(np.ones(3))
