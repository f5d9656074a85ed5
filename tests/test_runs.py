"""Stacked runs: selection, per-run eval-mode objectives (BatchNorm state), distances."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxscape import data, models, runs, train


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
  assert runs.num_runs(t) == 3
  np.testing.assert_array_equal(runs.select(t, 1)["a"], [2.0, 3.0])
  assert int(runs.select(t, -1)["b"]["c"]) == 2
  with pytest.raises(IndexError, match="out of range for 3"):
    runs.select(t, 3)
  with pytest.raises(ValueError, match="leading run axis"):
    runs.num_runs({"a": jnp.zeros((3, 2)), "b": jnp.zeros(4)})
  with pytest.raises(ValueError, match="no leaves"):
    runs.num_runs({})


def test_objective_uses_each_runs_state_and_matches_training_history(trained_bn):
  ds, init, p, s, h = trained_bn
  template = init(jax.random.key(99))  # any initialisation: only the structure is used
  objs = [runs.objective(template, ds.train, s, run=i, batch_size=40) for i in range(2)]
  for i, obj in enumerate(objs):
    loss, metrics = obj.loss(runs.select(p, i))
    # train_many's history is the exact eval-mode full-data loss with the run's own BN statistics (rtol 1e-5)
    np.testing.assert_allclose(loss, h.train_loss[i, -1], rtol=1e-5)
    np.testing.assert_allclose(metrics["accuracy"], h.train_accuracy[i, -1], rtol=1e-6)
  # same static fields: jitted measurements compile once for all runs
  assert jax.tree.structure(objs[0]) == jax.tree.structure(objs[1])
  # the other run's BN statistics give another loss: the state really is per run
  swapped = runs.objective(template, ds.train, runs.select(s, 1), batch_size=40)
  assert abs(float(swapped.value(runs.select(p, 0))) - float(h.train_loss[0, -1])) > 1e-4
  test_obj = runs.objective(template, ds.test, s, run=1)
  np.testing.assert_allclose(test_obj.value(runs.select(p, 1)), h.test_loss[1, -1], rtol=1e-5)
  with pytest.raises(ValueError, match="state structure"):
    runs.objective(template, ds.train, s)  # stacked state without run=


def test_objective_of_a_stateless_model_defaults_to_its_own_state():
  ds = data.load("synthetic", train_size=16, test_size=8, dim=4)
  net = models.build("mlp", 0, in_features=4, widths=[5], out_features=3)
  obj = runs.objective(net, ds.train, batch_size=None)
  logits = net(jnp.asarray(ds.x_train))
  ref = -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), jnp.asarray(ds.y_train)[:, None], 1))
  _, _, params, _ = train.split_train(net)
  np.testing.assert_allclose(obj.value(params), ref, rtol=1e-6)


def test_distances_match_numpy(trained_bn):
  _, _, p, _, h = trained_bn
  x0 = jax.tree.map(lambda a: a[:, 0], h.trajectory)
  flat = lambda t: np.concatenate([np.ravel(np.asarray(a, np.float64)) for a in jax.tree.leaves(t)])  # noqa: E731
  d = runs.distances(p, x0)
  ref = [np.linalg.norm(flat(runs.select(p, i)) - flat(runs.select(x0, i))) for i in range(2)]
  np.testing.assert_allclose(d, ref, rtol=1e-5)
  one = runs.select(x0, 0)  # an unstacked point is broadcast against every run
  ref1 = [np.linalg.norm(flat(runs.select(p, i)) - flat(one)) for i in range(2)]
  np.testing.assert_allclose(runs.distances(p, one), ref1, rtol=1e-5)
  assert float(d[0]) > 0
