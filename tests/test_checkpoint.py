"""Checkpoints: round trips, exact resumption, trajectories, rebuilding a model from its directory."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxscape as js
from jaxscape import checkpoint, data, models, train


@pytest.fixture(scope="module")
def digits_small():
  return data.load("digits", num_train=192, num_test=64)


def _bn_mlp(key=0):
  return models.build("mlp", key, in_features=64, widths=[16], out_features=10, batch_norm=True)


def test_round_trip_params_and_optimizer_state(tmp_path):
  _, _, params, state = js.adapters.nnx.split_train(_bn_mlp())
  tx = optax.adam(1e-3)
  opt_state = tx.init(params)
  g = jax.tree.map(jnp.ones_like, params)
  with jax.numpy_dtype_promotion("standard"):  # optax's adam bias correction computes float ** int32 count
    _, opt_state = tx.update(g, opt_state, params)  # non-trivial moments and count
  tree = {"params": params, "state": state, "opt_state": opt_state, "step": jnp.asarray(7)}
  checkpoint.save(tmp_path / "ckpt", tree)  # a relative/pathlib path is made absolute
  back = checkpoint.restore(tmp_path / "ckpt", like=tree)
  assert jax.tree.structure(back) == jax.tree.structure(tree)
  assert type(back["opt_state"][0]).__name__ == "ScaleByAdamState"
  js.tree.assert_allclose(back, tree, rtol=0)
  raw = checkpoint.restore(tmp_path / "ckpt")  # without a template: plain containers, same numbers
  np.testing.assert_array_equal(np.asarray(jax.tree.leaves(raw["params"])[0]), np.asarray(jax.tree.leaves(params)[0]))
  with pytest.raises(FileNotFoundError, match="no orbax checkpoint"):
    checkpoint.restore(tmp_path / "nothing")


def test_training_checkpoint_round_trip(tmp_path, digits_small):
  cfg = train.TrainConfig(optimizer="sgd", learning_rate=0.05, momentum=0.9, batch_size=32, epochs=1)
  params, state, hist = train.train(0, _bn_mlp(), digits_small, cfg, checkpoint_dir=tmp_path)
  assert checkpoint.latest_step(tmp_path) == 6
  train_apply, apply, p0, s0 = js.adapters.nnx.split_train(_bn_mlp())
  engine = train._engine(train_apply, apply, cfg, 192)
  like = engine.init(p0, s0, {})
  carry, key, rows = checkpoint.restore_training(tmp_path, like)
  js.tree.assert_allclose(carry["params"], params, rtol=0)
  js.tree.assert_allclose(carry["state"], state, rtol=0)
  assert type(carry["opt_state"]).__name__ == type(like["opt_state"]).__name__
  momentum = carry["opt_state"][0].trace if hasattr(carry["opt_state"][0], "trace") else jax.tree.leaves(carry["opt_state"])[0]
  assert float(jnp.abs(jax.tree.leaves(momentum)[0]).max()) > 0
  assert int(carry["step"]) == 6 and np.array_equal(jax.random.key_data(key), jax.random.key_data(jax.random.key(0)))
  np.testing.assert_array_equal(rows["train_loss"], hist.train_loss)
  assert checkpoint.restore_training(tmp_path / "empty", like) is None


@pytest.mark.parametrize("stop", [4, 9])
def test_resumed_training_equals_uninterrupted(tmp_path, digits_small, stop):
  cfg = dict(optimizer="sgd", learning_rate=0.05, momentum=0.9, nesterov=True, weight_decay=1e-4, batch_size=32,
             epochs=3, schedule="cosine")
  # 192 / 32 = 6 steps per epoch, 18 in all; checkpoints every 3 steps
  full_p, full_s, full_h = train.train(jax.random.key(5), _bn_mlp(), digits_small, checkpoint_dir=tmp_path / "a",
                                       checkpoint_every=3, **cfg)
  part = train.train(jax.random.key(5), _bn_mlp(), digits_small, checkpoint_dir=tmp_path / "b", checkpoint_every=3,
                     stop_after_steps=stop, **cfg)
  assert len(part[2]) == stop // 6 and checkpoint.latest_step(tmp_path / "b") == stop
  # resume from a fresh model object (as a new process would): the checkpoint supplies everything
  p, s, h = train.train(jax.random.key(5), _bn_mlp(key=123), digits_small, checkpoint_dir=tmp_path / "b",
                        checkpoint_every=3, resume=True, **cfg)
  js.tree.assert_allclose(p, full_p, rtol=0)  # bit for bit
  js.tree.assert_allclose(s, full_s, rtol=0)
  for k, v in full_h.as_dict().items():
    np.testing.assert_array_equal(getattr(h, k), v, err_msg=k)
  with pytest.raises(ValueError, match="different data key"):
    train.train(jax.random.key(6), _bn_mlp(), digits_small, checkpoint_dir=tmp_path / "b", resume=True, **cfg)


def test_trajectory_snapshots(tmp_path, digits_small):
  params, state, hist = train.train(1, _bn_mlp(), digits_small, optimizer="adam", learning_rate=1e-2, batch_size=32,
                                    epochs=2, snapshot_every=4, checkpoint_dir=tmp_path)
  np.testing.assert_array_equal(hist.trajectory_step, [0, 4, 8, 12])
  assert hist.trajectory["head"]["kernel"].shape == (4, 16, 10)
  np.testing.assert_array_equal(hist.trajectory["head"]["kernel"][0], js.adapters.nnx.split_train(_bn_mlp())[2]["head"]["kernel"])
  np.testing.assert_array_equal(hist.trajectory["head"]["kernel"][-1], params["head"]["kernel"])  # step 12 = end
  steps, stacked = checkpoint.load_trajectory(tmp_path, params)
  np.testing.assert_array_equal(steps, hist.trajectory_step)
  js.tree.assert_allclose(stacked, hist.trajectory, rtol=0)
  # The snapshots feed PCA directions of the path (Li et al.): differences to the final point.
  diffs = jax.tree.map(lambda t, f: t[:-1] - f[None], hist.trajectory, params)
  assert js.tree.norm(jax.tree.map(lambda d: d[0], diffs)) > js.tree.norm(jax.tree.map(lambda d: d[-1], diffs))


def test_train_from_spec_and_load_model(tmp_path):
  spec = {"model": {"name": "resnet", "kwargs": {"depth": 8, "shortcuts": False}},
          "dataset": {"name": "digits", "kwargs": {"num_train": 64, "num_test": 32}},
          "train": {"optimizer": "sgd", "learning_rate": 0.05, "momentum": 0.9, "batch_size": 32, "epochs": 1,
                    "seed": 3}}
  model, hist = train.train_from_spec(spec, tmp_path / "run")
  assert len(hist) == 1
  with open(tmp_path / "run" / "spec.json") as f:
    saved = json.load(f)
  assert saved["model"] == {"name": "resnet", "kwargs": {"depth": 8, "shortcuts": False, "num_classes": 10, "in_channels": 1}}
  assert saved["train"]["seed"] == 3 and saved["dataset"] == {"name": "digits", "num_train": 64, "num_test": 32}
  ds_back = checkpoint.load_dataset(tmp_path / "run")
  np.testing.assert_array_equal(ds_back.x_test, data.load("digits", num_train=64, num_test=32).x_test)
  rebuilt, spec2 = checkpoint.load_model(tmp_path / "run")
  assert spec2 == saved
  a, p, s, _ = js.adapters.split(model)
  a2, p2, s2, _ = js.adapters.split(rebuilt)
  js.tree.assert_allclose(p2, p, rtol=0)
  js.tree.assert_allclose(s2, s, rtol=0)  # BatchNorm running statistics restored
  assert float(jnp.abs(jax.tree.leaves(s2)[0]).max()) > 0
  ds = data.load("digits", num_train=64, num_test=32)
  obj, _ = js.Objective.from_model(rebuilt, data=ds.test, batch_size=32)
  np.testing.assert_allclose(obj.value(p2), hist.test_loss[-1], rtol=1e-5)
  # A second call with the same spec resumes (nothing left to do); a different spec is refused.
  _, again = train.train_from_spec(spec, tmp_path / "run")
  np.testing.assert_array_equal(again.test_loss, hist.test_loss)
  other = json.loads(json.dumps(spec))
  other["train"]["learning_rate"] = 0.1
  with pytest.raises(ValueError, match="different spec"):
    train.train_from_spec(other, tmp_path / "run")
  with pytest.raises(FileNotFoundError, match="spec.json"):
    checkpoint.load_model(tmp_path / "nowhere")
  with pytest.raises(ValueError, match="spec\\['model'\\]"):
    train.train_from_spec({"model": {"depth": 8}, "dataset": "digits"}, tmp_path / "bad")
