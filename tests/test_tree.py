"""Selection of runs stacked on a leading axis (train_many's results) and per-run distances."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxscape import data, models, train, tree


@pytest.fixture(scope="module")
def trained_bn():
  """Two seeds of a BatchNorm MLP trained together (their BN statistics differ)."""
  ds = data.load("synthetic", train_size=96, test_size=32, dim=4)
  init = lambda k: models.build("mlp", k, in_features=4, widths=[8], out_features=3, batch_norm=True)  # noqa: E731
  p, s, h = train.train_many(jax.random.split(jax.random.key(3), 2), init, ds, optimizer="adam", learning_rate=1e-2,
                             batch_size=32, epochs=2, snapshot_every=6)
  return ds, init, p, s, h


def test_select_and_num_runs():
  t = {"a": jnp.arange(6.0).reshape(3, 2), "b": {"c": jnp.arange(3)}}
  assert tree.num_runs(t) == 3
  np.testing.assert_array_equal(tree.select(t, 1)["a"], [2.0, 3.0])
  assert int(tree.select(t, -1)["b"]["c"]) == 2
  with pytest.raises(IndexError, match="out of range for 3"):
    tree.select(t, 3)
  with pytest.raises(ValueError, match="leading run axis"):
    tree.num_runs({"a": jnp.zeros((3, 2)), "b": jnp.zeros(4)})
  with pytest.raises(ValueError, match="no leaves"):
    tree.num_runs({})
  assert tree.select({}, 5) == {}  # a model without state: nothing to select


def test_distances_match_numpy(trained_bn):
  _, _, p, _, h = trained_bn
  x0 = jax.tree.map(lambda a: a[:, 0], h.trajectory)
  flat = lambda t: np.concatenate([np.ravel(np.asarray(a, np.float64)) for a in jax.tree.leaves(t)])  # noqa: E731
  d = tree.distances(p, x0)
  ref = [np.linalg.norm(flat(tree.select(p, i)) - flat(tree.select(x0, i))) for i in range(2)]
  np.testing.assert_allclose(d, ref, rtol=1e-5)
  one = tree.select(x0, 0)  # an unstacked point is broadcast against every run
  ref1 = [np.linalg.norm(flat(tree.select(p, i)) - flat(one)) for i in range(2)]
  np.testing.assert_allclose(tree.distances(p, one), ref1, rtol=1e-5)
  assert float(d[0]) > 0
