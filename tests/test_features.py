"""features: PCA projection fitted on the training split, checked against dense references."""

import numpy as np
import pytest

from jaxscape import data, features


def _toy(n=200, d=6, seed=0):
  rng = np.random.default_rng(seed)
  scales = np.array([5.0, 3.0, 2.0, 1.0, 0.5, 0.1])[:d]
  x = rng.normal(size=(n, d)) * scales @ np.linalg.qr(rng.normal(size=(d, d)))[0].T + 3.0
  return x.astype(np.float32)


def test_fit_matches_the_covariance_eigendecomposition():
  x = _toy()
  fit = features.fit_pca(x, 3)
  cov = np.cov(np.asarray(x, np.float64), rowvar=False)
  lam, vecs = np.linalg.eigh(cov)
  order = np.argsort(lam)[::-1]
  # variances are the top eigenvalues (rtol 1e-10, float64 SVD vs eigh)
  np.testing.assert_allclose(fit.variances, lam[order[:3]], rtol=1e-10)
  # axes agree up to sign, and are orthonormal
  for i in range(3):
    assert abs(abs(fit.components[i] @ vecs[:, order[i]]) - 1) < 1e-10
  np.testing.assert_allclose(fit.components @ fit.components.T, np.eye(3), atol=1e-12)
  np.testing.assert_allclose(fit.explained_variance_ratio, lam[order[:3]].sum() / lam.sum(), rtol=1e-10)


def test_projection_is_centred_decorrelated_and_whitened():
  x = _toy()
  z = features.fit_pca(x, 4).transform(x)
  np.testing.assert_allclose(z.mean(axis=0), 0.0, atol=1e-9)
  c = np.cov(z, rowvar=False)
  np.testing.assert_allclose(c - np.diag(np.diag(c)), 0.0, atol=1e-9)
  zw = features.fit_pca(x, 4, whiten=True).transform(x)
  np.testing.assert_allclose(np.var(zw, axis=0, ddof=1), 1.0, rtol=1e-10)
  # full rank PCA without whitening is a rotation: distances are preserved
  x64 = np.asarray(x, np.float64)
  zf = features.fit_pca(x, 6).transform(x)
  np.testing.assert_allclose(np.linalg.norm(zf[0] - zf[1]), np.linalg.norm(x64[0] - x64[1]), rtol=1e-10)


def test_signs_are_deterministic():
  x = _toy()
  a = features.fit_pca(x, 3).components
  b = features.fit_pca(x[::-1].copy(), 3).components  # same data, other order
  np.testing.assert_allclose(a, b, atol=1e-10)
  assert np.all(a[np.arange(3), np.argmax(np.abs(a), axis=1)] > 0)


def test_pca_dataset_fits_on_train_only():
  ds = data.load("digits")
  out = features.pca(ds, 16)
  assert out.x_train.shape == (ds.num_train, 16) and out.x_test.shape == (ds.num_test, 16)
  assert out.x_train.dtype == np.float32 and out.name == "digits_pca16"
  np.testing.assert_array_equal(out.y_test, ds.y_test)
  fit = features.fit_pca(ds.x_train, 16)
  np.testing.assert_allclose(out.x_test, fit.transform(ds.x_test), rtol=1e-5, atol=1e-5)
  # training features are centred, test features need not be (no leak of test statistics)
  np.testing.assert_allclose(out.x_train.mean(axis=0), 0.0, atol=1e-5)
  assert 0.8 < out.info["pca"]["explained_variance_ratio"] < 1.0


def test_errors():
  with pytest.raises(ValueError, match="k must be an int"):
    features.fit_pca(np.zeros((5, 3)), 4)
  with pytest.raises(ValueError, match="expected examples with 3 features"):
    features.fit_pca(np.random.default_rng(0).normal(size=(5, 3)), 2).transform(np.zeros((2, 4)))
