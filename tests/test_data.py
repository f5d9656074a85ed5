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
