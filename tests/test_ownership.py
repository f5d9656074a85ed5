"""Every command owns its output: no silent overwrite or mixing, no partial plots passed off as whole, no NaN
successes, every input checked before the work."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxscape as js
from jaxscape import checkpoint, cli, data, models, train
from jaxscape import io as jio

TRAIN = ["train", "--model", "mlp", "--widths", "8", "--dataset", "digits", "--num-train", "64", "--num-test", "32",
         "--epochs", "1", "--batch-size", "32", "--optimizer", "adam", "--lr", "0.01"]


def _err(capsys):
  err = capsys.readouterr().err.strip()
  assert len(err.splitlines()) == 1 and "Traceback" not in err, err
  return err


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
  out = str(tmp_path_factory.mktemp("own") / "run")
  assert cli.main([*TRAIN, "--out", out]) == 0
  return out


def test_no_resume_refuses_an_existing_run_and_overwrite_replaces_it_whole(run_dir, tmp_path, capsys):
  import shutil

  out = str(tmp_path / "run")
  shutil.copytree(run_dir, out)
  assert cli.main([*TRAIN, "--lr", "0.05", "--no-resume", "--out", out]) == 2
  assert "holds a training run" in _err(capsys)
  assert cli.main([*TRAIN, "--lr", "0.05", "--out", out]) == 2  # resuming with another spec is refused, naming it
  err = _err(capsys)
  assert "different spec" in err and "learning_rate" in err
  os.makedirs(os.path.join(out, "checkpoints", "999"))  # a stray later step of the old run must not survive
  assert cli.main([*TRAIN, "--lr", "0.05", "--epochs", "2", "--overwrite", "--out", out]) == 0
  assert checkpoint.read_spec(out)["train"]["learning_rate"] == 0.05
  assert checkpoint.latest_step(out) == 4 and not os.path.exists(os.path.join(out, "checkpoints", "999"))


def test_hessian_into_a_surface_directory_and_merge_over_another_result_are_refused(run_dir, tmp_path, capsys):
  surf = str(tmp_path / "surf")
  assert cli.main(["surface", "--checkpoint", run_dir, "--x=-1:1:3", "--out", surf, "--quiet"]) == 0
  capsys.readouterr()
  assert cli.main(["hessian", "--checkpoint", run_dir, "--top-k", "1", "--out", surf]) == 2
  assert "another config" in _err(capsys)
  assert jio.load_result(surf)[1]["config"]["kind"] == "surface"  # untouched

  out = str(tmp_path / "parts")
  for i in range(2):
    assert cli.main(["surface", "--checkpoint", run_dir, "--x=-1:1:5", "--chunk", f"{i}/2", "--out", out,
                     "--quiet"]) == 0
  jio.save_result(out, {"loss": np.zeros((3, 3))}, {"config": {"kind": "surface", "axes": "another"}})
  capsys.readouterr()
  assert cli.main(["merge", out]) == 2
  assert "another config" in _err(capsys)
  assert jio.load_result(out)[0]["loss"].shape == (3, 3)
  assert cli.main(["merge", out, "--overwrite"]) == 0
  assert jio.load_result(out)[0]["loss"].shape == (5,)


def test_resuming_with_another_chunk_size_is_refused(tmp_path):
  x = jnp.linspace(-1.0, 1.0, 8)[:, None]
  obj = js.Objective.from_apply(lambda p, x: x * p["w"][None, :], data=(x, 2.0 * x), loss="mse", batch_size=None,
                                name="line")
  params, dirs, out = {"w": jnp.ones((1,))}, [{"w": jnp.ones((1,))}], str(tmp_path / "s")
  ndev = len(jax.devices())  # the chunk is a multiple of the devices
  js.loss_surface(obj, params, dirs, x=(-1.0, 1.0, 33), chunk_size=ndev, out_dir=out, quiet=True)
  js.loss_surface(obj, params, dirs, x=(-1.0, 1.0, 33), chunk_size=ndev, out_dir=out, quiet=True)  # same: resumes
  with pytest.raises(ValueError, match=f"chunk_size: saved {ndev}, now {2 * ndev}"):
    js.loss_surface(obj, params, dirs, x=(-1.0, 1.0, 33), chunk_size=2 * ndev, out_dir=out, quiet=True)


def test_plot_says_partial_and_vtk_invents_no_values(tmp_path, capsys):
  x = jnp.linspace(-1.0, 1.0, 8)[:, None]
  obj = js.Objective.from_apply(lambda p, x: x @ p["w"], data=(x, 2.0 * x), loss="mse", batch_size=None, name="l")
  params = {"w": jnp.ones((1, 1))}
  out = str(tmp_path / "s")
  surf = js.loss_surface(obj, params, [{"w": jnp.ones((1, 1))}, {"w": -jnp.ones((1, 1))}], x=(-1.0, 1.0, 5),
                         y=(-1.0, 1.0, 3), out_dir=out, quiet=True)
  arrays, meta = jio.load_result(out)
  arrays["done"].ravel()[7:] = False  # as a killed run leaves it: 7 of 15 points
  for k in ("loss", "accuracy"):
    if k in arrays:
      arrays[k].ravel()[7:] = np.nan
  jio.save_result(out, arrays, {**meta, "num_done": 7})
  assert cli.main(["plot", out, "--vtk"]) == 0
  assert "partial: 7/15 points" in capsys.readouterr().out
  with open(os.path.join(out, "surface.vtk")) as f:
    points = [line for line in f.read().split("POINT_DATA")[0].splitlines() if line.count(" ") == 2 and
              line[0] in "-0123456789"]
  assert len(points) == 15 and sum(p.endswith("nan") for p in points) == 8
  import matplotlib.pyplot as plt

  from jaxscape import plot

  fig, _ = plot.contour(js.surface.load_surface(out))
  assert plot.partial_note(js.surface.load_surface(out)) == "partial: 7/15 points (the rest not evaluated yet)"
  assert plot.partial_note(surf) is None
  plt.close(fig)


def test_training_stops_at_the_first_nonfinite_loss_and_checkpoints_nothing_of_it(tmp_path):
  ds = data.load("digits", num_train=64, num_test=32)
  net = models.build("mlp", 0, in_features=64, widths=[8], out_features=10)
  with pytest.raises(train.DivergedError, match=r"batch loss of step \d+ is (nan|inf)"):
    train.train(jax.random.key(0), net, ds, optimizer="sgd", learning_rate=1e30, batch_size=32, epochs=3,
                checkpoint_dir=str(tmp_path / "r"), checkpoint_every=1)
  if checkpoint.latest_step(str(tmp_path / "r")) is not None:  # what is kept is finite
    with np.load(os.path.join(str(tmp_path / "r"), checkpoint.HISTORY_FILE)) as h:
      assert all(np.isfinite(h[k]).all() for k in h.files if h[k].dtype.kind == "f")
  for bad in (float("nan"), float("inf"), -1.0, 0.0):
    with pytest.raises(ValueError, match="learning_rate"):
      train.TrainConfig(learning_rate=bad)
  with pytest.raises(ValueError, match="training data is empty"):
    train.train(jax.random.key(0), net, (np.zeros((0, 64), np.float32), np.zeros((0,), np.int32)), epochs=1)


@pytest.mark.parametrize("label", [255, 12, -1])
def test_a_dataset_with_labels_outside_its_classes_or_nan_inputs_is_a_data_error(label):
  x, y = np.zeros((4, 3), np.float32), np.array([0, 1, label, 2], np.int32)
  with pytest.raises(js.DataError, match=rf"outside \[0, 10\): values \[{label}\] in 1 rows, first \[2\]"):
    data.Dataset(x, y, x, y % 10, "files", 10, {"source": "/data/mnist"})
  x_nan = x.copy()
  x_nan[3, 1] = np.nan
  with pytest.raises(js.DataError, match=r"x_train holds NaN or inf in 1 rows, first \[3\]"):
    data.Dataset(x_nan, y % 10, x, y % 10, "files", 10)
  with pytest.raises(js.DataError, match="integer class labels"):
    data.Dataset(x, (y % 10).astype(np.float32), x, y % 10, "files", 10)


def test_hessian_refuses_a_nonfinite_point(run_dir, tmp_path, capsys, monkeypatch):
  real = cli._objective

  def broken(*args, **kwargs):  # a checkpoint whose weights hold NaN
    obj, params = real(*args, **kwargs)
    return obj, jax.tree.map(lambda a: a * jnp.nan, params)

  monkeypatch.setattr(cli, "_objective", broken)
  assert cli.main(["hessian", "--checkpoint", run_dir, "--top-k", "1", "--out", str(tmp_path / "h")]) == 2
  assert "not finite" in _err(capsys)


@pytest.mark.parametrize("argv, needle", [
    (["hessian", "--demo", "--tol", "-1"], "--tol"),
    (["hessian", "--demo", "--top-k", "-2"], "--top-k"),
    (["train", "--checkpoint-every", "0"], "--checkpoint-every"),
    (["train", "--lr", "nan"], "--lr"),
    (["surface", "--demo", "--seed", str(2**70)], "--seed"),
    (["surface", "--demo", "--chunk-size", "0"], "--chunk-size"),
])
def test_bad_flags_are_refused_by_the_parser(argv, needle, capsys):
  with pytest.raises(SystemExit) as e:
    cli.main(argv)
  assert e.value.code == 2
  assert needle in capsys.readouterr().err


def test_checkpoint_combinations_are_checked_before_the_work(run_dir, tmp_path, capsys):
  other = str(tmp_path / "wide")
  assert cli.main([*TRAIN[:4], "16", *TRAIN[5:], "--out", other]) == 0  # widths 16: another architecture
  capsys.readouterr()
  base = ["surface", "--checkpoint", run_dir, "--x=-1:1:3", "--out", str(tmp_path / "s"), "--quiet"]
  assert cli.main([*base, "--checkpoint2", other]) == 2
  assert "differ in the shape of leaf 'head/kernel': (8, 10) vs (16, 10)" in _err(capsys)
  assert cli.main([*base, "--checkpoint2", other, "--y=-1:1:3"]) == 2
  assert "--y" in _err(capsys)
  assert cli.main([*base, "--checkpoint2", other, "--checkpoint3", run_dir, "--y=-1:1:3"]) == 2
  assert "must be different runs" in _err(capsys)


def test_every_flag_has_help_and_there_is_a_version(capsys):
  parser = cli.build_parser()
  sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
  missing = [f"{name} {a.option_strings or a.dest}" for name, p in sub.choices.items() for a in p._actions
             if not a.help and a.dest != "help"]
  assert missing == []
  with pytest.raises(SystemExit):
    cli.main(["--version"])
  assert capsys.readouterr().out.strip() == f"jaxscape {js.__version__}"


def test_train_spec_names_the_default_out_after_its_own_seed(tmp_path):
  spec = tmp_path / "spec.json"
  spec.write_text(json.dumps({"model": {"name": "mlp"}, "dataset": {"name": "digits"}, "train": {"seed": 7}}))
  args = cli.build_parser().parse_args(["train", "--spec", str(spec)])
  assert cli._train_target(args)[2] == "runs/train-mlp-digits-7"


def test_overwrite_keeps_the_old_result_until_the_new_one_is_complete_and_a_killed_replacement_resumes(tmp_path,
                                                                                                    monkeypatch):
  from jaxscape.surface import executor

  x = jnp.linspace(-1.0, 1.0, 8)[:, None]
  obj = js.Objective.from_apply(lambda p, x: x * p["w"][None, :], data=(x, 2.0 * x), loss="mse", batch_size=None,
                                name="line")
  params, dirs, out = {"w": jnp.ones((1,))}, [{"w": jnp.ones((1,))}], str(tmp_path / "s")
  ndev = len(jax.devices())
  old = js.loss_surface(obj, params, dirs, x=(-1.0, 1.0, 5), out_dir=out, quiet=True)
  open(os.path.join(out, "curve1d.png"), "w").close()  # the old result's figure
  real, writes = jio.save_result, []

  def killed_after_two(directory, arrays, meta):  # the process dies after its second write
    if len(writes) == 2:
      raise KeyboardInterrupt
    writes.append(directory)
    real(directory, arrays, meta)

  monkeypatch.setattr(executor._io, "save_result", killed_after_two)
  with pytest.raises(KeyboardInterrupt):
    js.loss_surface(obj, params, dirs, x=(-1.0, 1.0, 4 * ndev), chunk_size=ndev, chunks_per_call=1,
                    out_dir=out, quiet=True, overwrite=True)
  assert all(w.endswith(jio.REPLACEMENT) for w in writes)
  arrays, _ = jio.load_result(out)  # the old result is intact and published
  np.testing.assert_array_equal(arrays["loss"], old.loss)
  assert os.path.isfile(os.path.join(out, "curve1d.png"))
  monkeypatch.setattr(executor._io, "save_result", real)
  new = js.loss_surface(obj, params, dirs, x=(-1.0, 1.0, 4 * ndev), chunk_size=ndev, chunks_per_call=1,
                        out_dir=out, quiet=True, overwrite=True)
  assert new.meta["points_evaluated"] == 2 * ndev  # the staged half was resumed
  assert jio.load_result(out)[0]["loss"].shape == (4 * ndev,)
  assert not os.path.exists(os.path.join(out, jio.REPLACEMENT)) and not os.path.exists(os.path.join(out, "curve1d.png"))


def test_a_damaged_meta_json_is_told_from_another_config(tmp_path):
  import random

  out = str(tmp_path / "r")
  config = {"kind": "surface", "axes": [[-1.0, 1.0, 5]], "lr": 0.1, "name": "run"}
  with jio.ResultStore(out, config) as store:
    store.open()
    store.write({"loss": np.arange(5.0)}, {"num_done": 5, "wall_time_s": 1.25})
  path = os.path.realpath(os.path.join(out, jio.META))
  with open(path, "rb") as f:
    raw = f.read()
  original = jio.load_result(out)[1]
  rng, accepted, another = random.Random(0), 0, 0
  for _ in range(300):
    i, bit = rng.randrange(len(raw)), 1 << rng.randrange(8)
    flipped = raw[:i] + bytes([raw[i] ^ bit]) + raw[i + 1:]
    with open(path, "wb") as f:
      f.write(flipped)
    try:
      meta = jio.load_result(out)[1]
    except jio.CorruptResultError:
      continue
    accepted += 1
    assert meta == original  # only harmless flips (whitespace) may load, and then nothing changed
    try:
      with jio.ResultStore(out, config) as store:
        store.open()
    except ValueError as e:
      another += "another config" in str(e)
  with open(path, "wb") as f:
    f.write(raw)
  assert accepted < 30 and another == 0
  assert jio.load_result(out)[1] == original


def test_results_and_meta_follow_the_umask_like_figures(tmp_path):
  old = os.umask(0o022)
  try:
    jio.save_result(str(tmp_path / "r"), {"loss": np.zeros(2)}, {"config": {}})
    jio.write_json(str(tmp_path / "c.json"), {"a": 1})
  finally:
    os.umask(old)
  for name in (jio.RESULTS, jio.META):
    assert os.stat(os.path.join(str(tmp_path / "r"), name)).st_mode & 0o777 == 0o644, name
  assert os.stat(os.path.realpath(os.path.join(str(tmp_path / "r"), jio.META))).st_mode & 0o777 == 0o644
  assert os.stat(os.path.dirname(os.path.realpath(os.path.join(str(tmp_path / "r"), jio.META)))).st_mode & 0o777 == 0o755
  assert os.stat(str(tmp_path / "c.json")).st_mode & 0o777 == 0o644


def test_a_training_step_without_checksums_is_not_resumed_from_and_plain_restore_warns(run_dir, tmp_path):
  import shutil

  out = str(tmp_path / "run")
  shutil.copytree(run_dir, out)
  step = checkpoint.latest_step(out)
  os.remove(os.path.join(out, "checkpoints", str(step), checkpoint.CHECKSUM_FILE))  # killed before its checksums
  assert checkpoint.latest_step(out) is None  # the only step is incomplete: nothing to resume from
  path = str(tmp_path / "plain")
  checkpoint.save(path, {"w": np.ones(3, np.float32)})
  os.remove(os.path.join(path, checkpoint.CHECKSUM_FILE))
  with pytest.warns(UserWarning, match="loaded UNVERIFIED"):
    checkpoint.restore(path)


def test_a_large_grid_is_saved_a_bounded_number_of_times_and_still_resumes(tmp_path, monkeypatch):
  from jaxscape.surface import executor

  x = jnp.linspace(-1.0, 1.0, 8)[:, None]
  obj = js.Objective.from_apply(lambda p, x: x * p["w"][None, :], data=(x, 2.0 * x), loss="mse", batch_size=None,
                                name="line")
  params, dirs, out, ndev = {"w": jnp.ones((1,))}, [{"w": jnp.ones((1,))}], str(tmp_path / "s"), len(jax.devices())
  monkeypatch.setattr(executor, "SAVE_ALWAYS_POINTS", 10)  # "large" from 11 points, at most 3 saves
  monkeypatch.setattr(executor, "MAX_SAVES", 3)
  real, saves = jio.save_result, []
  monkeypatch.setattr(executor._io, "save_result", lambda d, a, m: (saves.append(int(a["done"].sum())), real(d, a, m)))
  surf = js.loss_surface(obj, params, dirs, x=(-1.0, 1.0, 8 * ndev), chunk_size=ndev, chunks_per_call=1, out_dir=out,
                         quiet=True)
  assert saves == [3 * ndev, 6 * ndev, 8 * ndev]  # 8 calls: after the 3rd, the 6th and the last
  again = js.loss_surface(obj, params, dirs, x=(-1.0, 1.0, 8 * ndev), chunk_size=ndev, chunks_per_call=1,
                          out_dir=out, quiet=True)
  np.testing.assert_array_equal(again.loss, surf.loss)
