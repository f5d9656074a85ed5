"""Training: the optax loop, BatchNorm in train mode, vmapped seeds and sweeps."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxscape as js
from jaxscape import data, models, train


@pytest.fixture(scope="module")
def digits_small():
  return data.load("digits", num_train=256, num_test=128)


def _mlp(key, bn=False):
  return models.build("mlp", key, in_features=64, widths=[16], out_features=10, batch_norm=bn)


@pytest.mark.parametrize("opt", [dict(optimizer="sgd", learning_rate=0.2, momentum=0.9, nesterov=True),
                                 dict(optimizer="adam", learning_rate=1e-2, weight_decay=1e-4)])
def test_train_reduces_loss_and_history(digits_small, opt):
  p0 = js.adapters.split(_mlp(0)).params
  params, state, hist = train.train(jax.random.key(0), _mlp(0), digits_small, batch_size=32, epochs=4, **opt)
  assert len(hist) == 4 and hist.train_loss.shape == (4,)
  np.testing.assert_array_equal(hist.step, [8, 16, 24, 32])  # 256 // 32 = 8 steps per epoch
  assert hist.train_loss[-1] < 0.5 * np.log(10)
  assert hist.test_accuracy[-1] > 0.6
  # The history's train loss is the exact full-data eval-mode loss at the final parameters.
  apply, _, _, _ = js.adapters.split(_mlp(0))
  obj = js.Objective.from_apply(lambda p, x: apply(p, {}, x), data=digits_small.train, batch_size=100)
  np.testing.assert_allclose(hist.train_loss[-1], obj.value(params), rtol=1e-5)
  assert not js.tree.allclose(params, p0)


def test_shuffling_depends_on_key_and_full_batch_does_not(digits_small):
  kw = dict(optimizer="sgd", learning_rate=0.1, epochs=2)
  a = train.train(jax.random.key(0), _mlp(0), digits_small, batch_size=32, **kw)[0]
  b = train.train(jax.random.key(0), _mlp(0), digits_small, batch_size=32, **kw)[0]
  c = train.train(jax.random.key(1), _mlp(0), digits_small, batch_size=32, **kw)[0]
  js.tree.assert_allclose(a, b, rtol=0)
  assert not js.tree.allclose(a, c, rtol=1e-4)
  f0 = train.train(jax.random.key(0), _mlp(0), digits_small, batch_size=None, **kw)
  f1 = train.train(jax.random.key(1), _mlp(0), digits_small, batch_size=None, **kw)
  js.tree.assert_allclose(f0[0], f1[0], rtol=0)
  np.testing.assert_array_equal(f0[2].step, [1, 2])


def test_full_batch_gd_matches_hand_written_loop(digits_small, x64):
  ds = data.astype(digits_small, np.float64)
  net = _mlp(0)
  apply, p0, s0, _ = js.adapters.split(net)
  p0 = js.tree.astype(p0, jnp.float64)
  x, y = ds.train
  loss = lambda p: js.objective.per_example_loss("cross_entropy")(apply(p, s0, x), y).mean()
  p = p0
  for _ in range(3):
    p = jax.tree.map(lambda a, g: a - 0.3 * g, p, jax.grad(loss)(p))
  got, _, _ = train.train(0, (apply, p0, s0), ds, optimizer="sgd", learning_rate=0.3, batch_size=None, epochs=3)
  # float64: same arithmetic up to summation order
  js.tree.assert_allclose(got, p, rtol=1e-10, atol=1e-12)


def test_batchnorm_running_stats_update_in_training_and_are_used_in_eval(digits_small):
  net = _mlp(0, bn=True)
  train_apply, apply, params, state = js.adapters.nnx.split_train(net)
  np.testing.assert_array_equal(state["norms"][0]["mean"], 0.0)
  # One train-mode call moves the running mean by (1 - momentum) * batch mean.
  x = jnp.asarray(digits_small.x_train[:32])
  _, s1 = train_apply(params, state, x)
  h = x.reshape(32, -1) @ params["layers"][0]["kernel"] + params["layers"][0]["bias"][None]
  np.testing.assert_allclose(s1["norms"][0]["mean"], 0.1 * h.mean(0), rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(state["norms"][0]["mean"], 0.0)  # pure: inputs untouched
  np.testing.assert_array_equal(net.norms[0].mean[...], 0.0)       # the module is untouched
  params, state, hist = train.train(jax.random.key(0), net, digits_small, optimizer="adam", learning_rate=1e-2,
                                    batch_size=32, epochs=2)
  assert float(jnp.abs(state["norms"][0]["mean"]).max()) > 1e-2
  assert float(jnp.abs(state["norms"][0]["var"] - 1).max()) > 1e-2
  # Eval mode normalises with the running statistics: changing them changes eval outputs only.
  xb = jnp.asarray(digits_small.x_test[:8])
  shifted = jax.tree.map(lambda a: a, state)
  shifted["norms"][0]["mean"] = state["norms"][0]["mean"] + 1.0
  assert not np.allclose(apply(params, state, xb), apply(params, shifted, xb))
  np.testing.assert_allclose(train_apply(params, state, xb)[0], train_apply(params, shifted, xb)[0], rtol=1e-6)
  # ... and the eval-mode history uses those statistics.
  model = js.adapters.nnx.update(net, params, state)
  obj, p = js.Objective.from_model(model, data=digits_small.test, batch_size=64)
  np.testing.assert_allclose(obj.value(p), hist.test_loss[-1], rtol=1e-5)


def test_train_many_equals_separate_runs(digits_small):
  keys = jax.random.split(jax.random.key(42), 8)
  init = lambda k: _mlp(k, bn=True)
  cfg = train.TrainConfig(optimizer="sgd", learning_rate=0.1, momentum=0.9, batch_size=64, epochs=2)
  P, S, H = train.train_many(keys, init, digits_small, cfg)
  assert H.train_loss.shape == (8, 2) and P["head"]["kernel"].shape == (8, 16, 10)
  for i in range(8):
    k_init, k_data = jax.random.split(keys[i])
    p, s, h = train.train(k_data, init(k_init), digits_small, cfg)
    # vmapped vs single matmuls differ in the last bits only (float32)
    js.tree.assert_allclose(jax.tree.map(lambda a: a[i], P), p, rtol=1e-4, atol=1e-5)
    js.tree.assert_allclose(jax.tree.map(lambda a: a[i], S), s, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(H.train_loss[i], h.train_loss, rtol=1e-5)
  assert np.std(H.train_loss[:, -1]) > 0  # the seeds differ


def test_train_many_sweeps_learning_rates(digits_small):
  keys = jax.random.split(jax.random.key(0), 2)
  init = lambda k: _mlp(k)
  P, S, H = train.train_many(keys, init, digits_small, optimizer="sgd", batch_size=64, epochs=1,
                             sweep={"learning_rate": [0.0, 0.05, 0.5]})
  assert H.train_loss.shape == (3, 2, 1)
  k_init, k_data = jax.random.split(keys[1])
  js.tree.assert_allclose(jax.tree.map(lambda a: a[0, 1], P), js.adapters.split(init(k_init)).params, rtol=0)  # lr 0: unchanged
  p, _, h = train.train(k_data, init(k_init), digits_small, optimizer="sgd", learning_rate=0.5, batch_size=64, epochs=1)
  js.tree.assert_allclose(jax.tree.map(lambda a: a[2, 1], P), p, rtol=1e-4, atol=1e-5)
  with pytest.raises(ValueError, match="cannot sweep"):
    train.train_many(keys, init, digits_small, sweep={"batch_size": [1, 2]})


def test_train_many_sequential_runs_equal_vmapped_runs(digits_small):
  keys = jax.random.split(jax.random.key(3), 3)
  init = lambda k: _mlp(k, bn=True)
  # (SGD: Adam turns rounding noise in the pre-BatchNorm biases, whose true gradient is 0, into lr-sized steps)
  kw = dict(optimizer="sgd", momentum=0.9, batch_size=64, epochs=2, sweep={"learning_rate": [0.05, 0.2]})
  P, S, H = train.train_many(keys, init, digits_small, **kw)
  Pq, Sq, Hq = train.train_many(keys, init, digits_small, runs="sequential", **kw)
  # the same computation run by run instead of batched: equal up to float32 rounding
  js.tree.assert_allclose(Pq, P, rtol=1e-4, atol=1e-5)
  js.tree.assert_allclose(Sq, S, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(Hq.test_loss, H.test_loss, rtol=1e-5)
  with pytest.raises(ValueError, match="runs must be 'vmap' or 'sequential'"):
    train.train_many(keys, init, digits_small, runs="pmap", **kw)


def test_schedules():
  cfg = train.TrainConfig(learning_rate=1.0, schedule="step", decay_epochs=(2, 3), decay_factor=0.1)
  tx = train.make_optimizer(cfg, steps_per_epoch=10, total_steps=40)
  import optax
  p = {"w": jnp.zeros(())}
  st = tx.init(p)
  lrs = []
  for i in range(40):
    u, st = tx.update({"w": jnp.ones(())}, st, p)
    lrs.append(-float(u["w"]))
  np.testing.assert_allclose(lrs[:20], 1.0, rtol=1e-6)
  np.testing.assert_allclose(lrs[20:30], 0.1, rtol=1e-6)
  np.testing.assert_allclose(lrs[30:], 0.01, rtol=1e-5)
  cos = train.make_optimizer(dataclasses_replace(cfg, schedule="cosine"), 10, 40)
  st = cos.init(p)
  lrs = []
  for i in range(40):
    u, st = cos.update({"w": jnp.ones(())}, st, p)
    lrs.append(-float(u["w"]))
  np.testing.assert_allclose(lrs[0], 1.0, rtol=1e-6)
  np.testing.assert_allclose(lrs[20], 0.5, rtol=1e-5)
  assert lrs[-1] < 0.01
  with pytest.raises(ValueError, match="optimizer must be"):
    train.TrainConfig(optimizer="lbfgs")
  with pytest.raises(ValueError, match="unknown training settings"):
    train.TrainConfig.from_dict({"lr": 0.1})


def dataclasses_replace(cfg, **kw):
  import dataclasses
  return dataclasses.replace(cfg, **kw)


def test_cli_train_writes_a_checkpoint_other_commands_read(tmp_path, capsys):
  from jaxscape import checkpoint, cli

  out = tmp_path / "run"
  rc = cli.main(["train", "--model", "mlp", "--widths", "16", "--batch-norm", "--dataset", "digits", "--num-train", "96",
                 "--num-test", "32", "--epochs", "2", "--batch-size", "32", "--optimizer", "adam", "--lr", "0.01",
                 "--seed", "1", "--out", str(out)])
  assert rc == 0
  assert "2 epochs" in capsys.readouterr().out
  model, spec = checkpoint.load_model(out)
  assert spec["model"] == {"name": "mlp", "kwargs": {"widths": [16], "batch_norm": True, "in_features": 64, "out_features": 10}}
  assert spec["train"]["optimizer"] == "adam" and spec["train"]["seed"] == 1
  ds = checkpoint.load_dataset(out)
  assert ds.num_train == 96
  rc = cli.main(["train", "--model", "resnet", "--depth", "9", "--dataset", "digits", "--out", str(tmp_path / "bad")])
  assert rc == 2 and "6n + 2" in capsys.readouterr().err


def test_eval_every_thins_the_history_without_changing_training(digits_small):
  common = dict(optimizer="adam", learning_rate=0.01, batch_size=None, steps=5)
  p_all, _, h_all = train.train(jax.random.key(0), _mlp(0), digits_small, **common)
  p_few, _, h_few = train.train(jax.random.key(0), _mlp(0), digits_small, eval_every=2, **common)
  np.testing.assert_array_equal(h_all.step, [1, 2, 3, 4, 5])  # full batch: one step per epoch
  np.testing.assert_array_equal(h_few.step, [2, 4, 5])  # every 2 epochs, and the end
  np.testing.assert_allclose(h_few.train_loss, h_all.train_loss[[1, 3, 4]], rtol=1e-6)
  js.tree.assert_allclose(p_few, p_all)
  with pytest.raises(ValueError, match="eval_every"):
    train.TrainConfig(eval_every=0)
