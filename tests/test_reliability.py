"""Reliability: killed runs resume exactly, damaged files are refused, bad input gets a clear error."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxscape as js
from jaxscape import checkpoint, cli, data, hessian, models, plot, train
from jaxscape import io as jio
from jaxscape import surface as jsurf
from jaxscape.directions import normalize
from jaxscape.objective import Objective

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# ----------------------------------------------------------------------------- bad data: named errors at construction


def _bad_data_problem(classes=10, n=40):
  rng = np.random.default_rng(0)
  x, y = rng.normal(size=(n, 5)).astype(np.float32), rng.integers(0, classes, n).astype(np.int32)
  return x, y, {"w": jnp.zeros((5, classes), jnp.float32)}


def _linear(p, x):
  return x @ p["w"]


@pytest.mark.parametrize("labels", [[12], [-1], [12, -1]])
@pytest.mark.parametrize("loss", ["cross_entropy", "mse"])
def test_labels_outside_the_classes_are_a_data_error_naming_rows_and_values(labels, loss):
  x, y, p = _bad_data_problem()
  rows = [3, 17][:len(labels)]
  y[rows] = labels
  # without the check: NaN (cross_entropy) or a silently wrong loss (mse's one-hot of 12 is all zeros)
  expected = f"labels must be class indices in [0, 10)", f"rows {rows}", f"found {sorted(labels)}"
  with pytest.raises(js.DataError, match=".*".join(map(re.escape, expected))):
    Objective.from_apply(_linear, p, data=(x, y), loss=loss)


def test_labels_are_checked_against_the_output_width_of_nnx_models_and_in_with_data():
  x, y, _ = _bad_data_problem(classes=3)
  net = models.build("mlp", 0, in_features=5, widths=[4], out_features=3)
  obj, params = Objective.from_model(net, data=(x, y))
  assert obj.num_classes == 3
  y[5] = 3
  with pytest.raises(js.DataError, match=r"\[0, 3\).*rows \[5\]"):
    Objective.from_model(net, data=(x, y))
  with pytest.raises(js.DataError, match=r"\[0, 3\).*rows \[5\]"):
    obj.with_data((x, y))


def test_negative_labels_are_caught_even_without_params():
  x, y, _ = _bad_data_problem()
  y[7] = -1
  with pytest.raises(js.DataError, match=r"non-negative class indices.*rows \[7\].*found \[-1\]"):
    Objective.from_apply(_linear, data=(x, y))


@pytest.mark.parametrize("where", ["x", "y"])
@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_nonfinite_inputs_or_targets_are_a_data_error(where, value):
  x, y, p = _bad_data_problem()
  t = y.astype(np.float32) / 10
  (x if where == "x" else t)[9, ...] = value
  name = "inputs x" if where == "x" else "targets y"
  with pytest.raises(js.DataError, match=rf"{name} hold NaN or inf in 1 of 40 examples \(rows \[9\]\)"):
    Objective.from_apply(_linear, {"w": jnp.zeros(5, jnp.float32)}, data=(x, t), loss="mse")
  with pytest.raises(js.DataError, match=rf"{name} hold NaN or inf"):
    Objective.from_apply(_linear, data=(x, t), loss="mse").with_data((x, t))


@pytest.mark.parametrize("with_params", [True, False])
def test_float_labels_for_cross_entropy_say_labels_must_be_integers(with_params):
  x, y, p = _bad_data_problem()
  with pytest.raises(js.DataError, match="labels must be integers"):
    Objective.from_apply(_linear, p if with_params else None, data=(x, y.astype(np.float32)))


def test_empty_data_and_mismatched_lengths_are_data_errors():
  x, y, p = _bad_data_problem()
  with pytest.raises(js.DataError, match=r"the dataset is empty: got x \(0, 5\), y \(0,\)"):
    Objective.from_apply(_linear, p, data=(x[:0], y[:0]))
  with pytest.raises(js.DataError, match=r"x and y differ in length: got x \(40, 5\), y \(30,\)"):
    Objective.from_apply(_linear, p, data=(x, y[:30]))
  obj = Objective.from_apply(_linear, p, data=(x, y))
  with pytest.raises(js.DataError, match="the dataset is empty"):
    obj.with_data((x[:0], y[:0]))


def test_binary_targets_outside_zero_one_are_a_data_error():
  x, y, _ = _bad_data_problem()
  pm1 = np.where(y > 4, 1.0, -1.0).astype(np.float32)
  with pytest.raises(js.DataError, match=r"binary_cross_entropy targets must lie in \[0, 1\].*\(y \+ 1\) / 2"):
    Objective.from_apply(_linear, {"w": jnp.zeros(5, jnp.float32)}, data=(x, pm1), loss="binary_cross_entropy")


def test_legitimate_data_passes_the_checks_and_a_large_batch_size_is_the_whole_set():
  x, y, p = _bad_data_problem()
  # probability targets, 0/1 float targets for binary cross-entropy, float regression targets, a custom loss
  # reading -1 as padding (custom losses get only the size and finiteness checks)
  probs = np.asarray(jax.nn.one_hot(y, 10), np.float32)
  Objective.from_apply(_linear, p, data=(x, probs))
  Objective.from_apply(_linear, {"w": jnp.zeros(5, jnp.float32)}, data=(x, (y > 4).astype(np.float32)),
                       loss="binary_cross_entropy")
  Objective.from_apply(_linear, {"w": jnp.zeros(5, jnp.float32)}, data=(x, x[:, 0] * 3), loss="mse")
  masked = lambda out, t: jnp.where(t >= 0, optax.softmax_cross_entropy_with_integer_labels(out, jnp.maximum(t, 0)), 0.0)
  Objective.from_apply(_linear, p, data=(x, np.where(y > 7, -1, y)), loss=masked)
  # a batch size above the data is clamped (the library-wide convention, as in training): the mean stays exact
  big = Objective.from_apply(_linear, p, data=(x, y), batch_size=1000)
  assert big.batch_size == 40 and big.num_batches == 1
  np.testing.assert_allclose(big.value(p), np.log(10.0), rtol=1e-6)  # uniform logits


# ----------------------------------------------------------------------------- signals: SIGINT / SIGTERM end cleanly

# Runs a `jaxscape` command that, after its first complete write, starts a long XLA computation and says so on
# stdout from inside it: the test's signal then arrives while XLA runs (where a KeyboardInterrupt used to end
# in a segmentation fault at exit).
SIGNALLED_CLI = """
import sys
import jax, jax.numpy as jnp, numpy as np
from jax.experimental import io_callback
from jaxscape import cli
from jaxscape import io as jio

def running():
  print("RUNNING", flush=True)
  return np.float32(0)

def busy(x):
  x = x + io_callback(running, jax.ShapeDtypeStruct((), jnp.float32))
  return jax.lax.fori_loop(0, 20_000_000, lambda i, x: jnp.sin(x) * 0.5 + 0.25, x)

real_write = jio.ResultStore.write
def write(self, *a, **kw):
  real_write(self, *a, **kw)
  jax.jit(busy)(jnp.float32(0.1)).block_until_ready()
jio.ResultStore.write = write
sys.exit(cli.main(sys.argv[1:]))
"""


def _signalled(argv, signum):
  """Runs SIGNALLED_CLI on ``argv``, sends ``signum`` once XLA runs after the first write: ``(code, stderr)``."""
  head = 'import jax\njax.config.update("jax_num_cpu_devices", 8)\n'
  proc = subprocess.Popen([sys.executable, "-c", head + SIGNALLED_CLI, *argv], cwd=ROOT, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)
  try:
    for line in proc.stdout:
      if line.strip() == "RUNNING":
        proc.send_signal(signum)
        break
    _, err = proc.communicate(timeout=180)
  finally:
    if proc.poll() is None:
      proc.kill()
  return proc.returncode, err


@pytest.fixture(scope="module")
def signal_checkpoint(tmp_path_factory):
  out = str(tmp_path_factory.mktemp("signals") / "ckpt")
  assert cli.main(TRAIN_ARGS + ["--epochs", "1", "--out", out]) == 0
  return out


def _same_results(a, b):
  with np.load(os.path.join(a, "results.npz")) as f, np.load(os.path.join(b, "results.npz")) as g:
    assert sorted(f.files) == sorted(g.files)
    for k in f.files:
      np.testing.assert_array_equal(f[k], g[k], err_msg=k)


def _one_clean_line(err, code, signum, expected):
  assert code == {signal.SIGINT: 130, signal.SIGTERM: 143}[signum], err  # not -11 (segfault) nor -2 / -15
  assert "Traceback" not in err and "Segmentation" not in err, err
  line = err.strip().splitlines()[-1]
  assert re.search(expected, line), line
  return line


def test_sigint_and_sigterm_end_hessian_cleanly_and_the_rerun_skips_the_saved_parts(tmp_path, signal_checkpoint,
                                                                                    capsys):
  hess = ["hessian", "--checkpoint", signal_checkpoint, "--top-k", "2", "--lanczos-steps", "20", "--trace",
          "--trace-rtol", "0.5", "--density", "--density-steps", "10", "--density-probes", "1"]
  whole = str(tmp_path / "whole")
  assert cli.main(hess + ["--out", whole]) == 0
  for signum in (signal.SIGINT, signal.SIGTERM):
    out = str(tmp_path / signal.Signals(signum).name)
    code, err = _signalled(hess + ["--out", out], signum)
    name = signal.Signals(signum).name
    _one_clean_line(err, code, signum, rf"^jaxscape hessian: interrupted by {name}: saved largest in .*{name} \(still "
                                       rf"to compute: trace, density\); resume: jaxscape hessian --checkpoint")
    capsys.readouterr()
    assert cli.main(hess + ["--out", out]) == 0  # the same command: the eigenpairs are not computed again
    assert "(saved by an earlier run: largest)" in capsys.readouterr().out
    _same_results(out, whole)


def test_sigint_and_sigterm_end_surface_cleanly_and_the_rerun_resumes(tmp_path, signal_checkpoint, capsys,
                                                                     monkeypatch):
  # 13 x 11 = 143 points in calls of 64 (8 devices x chunks of 8): the first write holds 64
  surf = ["surface", "--checkpoint", signal_checkpoint, "--x=-1:1:13", "--y=-1:1:11", "--chunk-size", "8", "--quiet"]
  monkeypatch.setattr(plot, "save_figures", lambda *a, **k: [])  # figures are tested elsewhere
  whole = str(tmp_path / "whole")
  assert cli.main(surf + ["--out", whole]) == 0
  for signum in (signal.SIGINT, signal.SIGTERM):
    out = str(tmp_path / signal.Signals(signum).name)
    code, err = _signalled(surf + ["--out", out], signum)
    _one_clean_line(err, code, signum, rf"^jaxscape surface: interrupted by {signal.Signals(signum).name}: 64 of 143 "
                                       r"grid points saved in .*; resume: jaxscape surface --checkpoint")
    assert cli.main(surf + ["--out", out]) == 0
    with open(os.path.join(out, "meta.json")) as f:
      assert json.load(f)["points_evaluated"] == 143 - 64
    _same_results(out, whole)
  capsys.readouterr()

# The same problem in this process and in the killed subprocesses (so results can be compared bit for bit).
PROBLEM = """
import jax, jax.numpy as jnp, numpy as np
import jaxscape as js

def _mlp(p, x):
  return jnp.tanh(x @ p["l1"]["kernel"] + p["l1"]["bias"][None]) @ p["l2"]["kernel"] + p["l2"]["bias"][None]

def problem(seed=0):
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(40, 5)).astype(np.float32)
  y = rng.integers(0, 3, 40)
  p = {"l1": {"kernel": jnp.asarray(rng.normal(size=(5, 6)) / 2, jnp.float32), "bias": jnp.zeros(6, jnp.float32)},
       "l2": {"kernel": jnp.asarray(rng.normal(size=(6, 3)) / 2, jnp.float32), "bias": jnp.zeros(3, jnp.float32)}}
  obj = js.Objective.from_apply(_mlp, p, data=(x, y), batch_size=16)
  return obj, p, js.random_directions(jax.random.key(0), p, n=2)

def run(out_dir=None, curvature=None, **kwargs):
  obj, p, dirs = problem()
  return js.loss_surface(obj, p, dirs, x=(-1, 1, 5), y=(-1, 1, 5), chunk_size=4, chunks_per_call=1,
                         devices=jax.devices()[:1], quiet=True, curvature=curvature, out_dir=out_dir, **kwargs)
"""
_ns: dict = {}
exec(PROBLEM, _ns)
problem, run_surface = _ns["problem"], _ns["run"]


_HEAD = 'import jax\njax.config.update("jax_num_cpu_devices", 8)\n'


def _python(script: str, *args: str, timeout: float = 180) -> subprocess.CompletedProcess:
  """Runs a script in a fresh interpreter (8 CPU devices, as in this process)."""
  return subprocess.run([sys.executable, "-c", _HEAD + textwrap.dedent(script), *args], cwd=ROOT, capture_output=True,
                        text=True, timeout=timeout)


# ----------------------------------------------------------------------------- faults: SIGKILL and resume

KILL_SURFACE = PROBLEM + """
import os, signal, sys
from jaxscape import io as jio
out, curvature, where, k = sys.argv[1], (None if sys.argv[2] == "none" else sys.argv[2]), sys.argv[3], int(sys.argv[4])
command = sys.argv[5:]         # a `jaxscape` command line to run instead of run(out, curvature), if given
count = [0]

def kill_on(n):
  count[0] += 1
  if count[0] == n:
    os.kill(os.getpid(), signal.SIGKILL)

if where == "after_write":     # the process dies right after its k-th complete write
  real_write = jio.ResultStore.write
  def write(self, *a, **kw):
    real_write(self, *a, **kw)
    kill_on(k)
  jio.ResultStore.write = write
else:                          # ... or inside it: the new generation written, not yet published
  real_replace = os.replace
  def replace(src, dst):
    if dst.endswith(jio.CURRENT):
      kill_on(k)
    real_replace(src, dst)
  os.replace = replace
if command:
  from jaxscape import cli
  cli.main(command)
else:
  run(out, curvature)
print("not killed")
"""


@pytest.mark.parametrize("curvature,where,done", [("none", "after_write", 12), ("plane", "before_publish", 8)])
def test_sigkilled_surface_resumes_to_the_uninterrupted_result(tmp_path, curvature, where, done):
  out = str(tmp_path / "run")
  proc = _python(KILL_SURFACE, out, curvature, where, "3")
  assert proc.returncode == -9, proc.stdout + proc.stderr
  with np.load(os.path.join(out, "results.npz")) as f:
    assert int(f["done"].sum()) == done  # 25 points in calls of 4: 3 (or 2) calls survived
  with open(os.path.join(out, "meta.json")) as f:
    assert json.load(f)["num_done"] == done  # the pair is published as one: meta.json agrees with the arrays
  if where == "before_publish":
    assert any(n.startswith(".tmp-") for n in os.listdir(out))  # the unfinished write never replaced the pair
  curv = None if curvature == "none" else curvature
  resumed = run_surface(out, curv)
  assert not any(n.startswith(".tmp-") for n in os.listdir(out))  # the next owner removed the leftovers
  assert resumed.meta["points_evaluated"] == 25 - done
  full = run_surface(None, curv)
  np.testing.assert_array_equal(resumed.loss, full.loss)
  for k, v in full.metrics.items():
    np.testing.assert_array_equal(resumed.metrics[k], v, err_msg=k)
  loaded = js.load_surface(out)
  np.testing.assert_array_equal(loaded.loss, full.loss)


TRAIN_ARGS = ["train", "--model", "mlp", "--widths", "8", "--dataset", "digits", "--num-train", "64", "--num-test",
              "32", "--epochs", "3", "--batch-size", "16", "--optimizer", "sgd", "--momentum", "0.9", "--lr", "0.05",
              "--checkpoint-every", "2"]

KILL_TRAIN = """
import os, signal, sys
from jaxscape import checkpoint, cli
count = [0]
real_checksums = checkpoint._write_checksums

def write_checksums(directory):  # the process dies once the k-th checkpoint is complete on disk (with its checksums)
  real_checksums(directory)
  count[0] += 1
  if count[0] == int(sys.argv[1]):
    os.kill(os.getpid(), signal.SIGKILL)

checkpoint._write_checksums = write_checksums
cli.main(sys.argv[2:])
print("not killed")
"""


def test_sigkilled_training_resumes_from_its_last_checkpoint(tmp_path, capsys):
  # 64 examples in batches of 16: 4 steps per epoch, 12 in all; checkpoints at steps 2, 4, ..., 12.
  # The 4th checkpoint (step 8) closes epoch 2: its history row must survive the kill too.
  killed, whole = str(tmp_path / "killed"), str(tmp_path / "whole")
  proc = _python(KILL_TRAIN, "4", *TRAIN_ARGS, "--out", killed)
  assert proc.returncode == -9, proc.stdout + proc.stderr
  assert checkpoint.latest_step(killed) == 8
  assert cli.main(TRAIN_ARGS + ["--out", killed]) == 0  # the same command again: resumes at step 8
  assert cli.main(TRAIN_ARGS + ["--out", whole]) == 0
  capsys.readouterr()
  models_ = [checkpoint.load_model(d)[0] for d in (killed, whole)]
  (_, p1, s1, _), (_, p2, s2, _) = (js.adapters.split(m) for m in models_)
  for a, b in zip(jax.tree.leaves((p1, s1)), jax.tree.leaves((p2, s2))):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  with np.load(os.path.join(killed, "history.npz")) as h1, np.load(os.path.join(whole, "history.npz")) as h2:
    assert sorted(h1.files) == sorted(h2.files)
    np.testing.assert_array_equal(h1["step"], [4, 8, 12])
    for k in h2.files:
      np.testing.assert_array_equal(h1[k], h2[k], err_msg=k)


def test_a_sigkilled_cli_part_resumes_and_merges_to_the_single_run(tmp_path, capsys, monkeypatch):
  ckpt, split, single = (str(tmp_path / n) for n in ("ckpt", "split", "single"))
  assert cli.main(TRAIN_ARGS + ["--epochs", "1", "--out", ckpt]) == 0
  # 13 x 11 = 143 points; part 1 of 2 holds 71: on 8 devices, calls of 8 chunks of 8 points (64 + 7)
  surface = ["surface", "--checkpoint", ckpt, "--x=-1:1:13", "--y=-1:1:11", "--chunk-size", "8", "--quiet"]
  part = surface + ["--out", split, "--chunk", "1/2"]
  proc = _python(KILL_SURFACE, split, "none", "after_write", "1", *part)  # dies after its first call's write
  assert proc.returncode == -9, proc.stdout + proc.stderr
  monkeypatch.setattr(plot, "save_figures", lambda *a, **k: [])  # figures are tested elsewhere
  assert cli.main(surface + ["--out", split, "--chunk", "0/2"]) == 0
  with pytest.raises(ValueError, match=r"part-0001-of-0002 \(64 of 71 points done\)"):
    js.merge_surfaces(split)
  assert cli.main(part) == 0  # the same command again: resumes
  with open(os.path.join(jsurf.part_directory(split, 1, 2), "meta.json")) as f:
    assert json.load(f)["points_evaluated"] == 7
  assert cli.main(["merge", split]) == 0
  assert cli.main(surface + ["--out", single]) == 0
  capsys.readouterr()
  with np.load(os.path.join(single, "results.npz")) as a, np.load(os.path.join(split, "results.npz")) as b:
    assert sorted(a.files) == sorted(b.files)
    for k in a.files:
      np.testing.assert_array_equal(a[k], b[k], err_msg=k)
  with open(os.path.join(single, "meta.json")) as f, open(os.path.join(split, "meta.json")) as g:
    assert json.load(f)["config"] == json.load(g)["config"]


# ----------------------------------------------------------------------------- faults: damaged and foreign results


@pytest.fixture(scope="module")
def tiny_digits():
  return data.load("digits", num_train=32, num_test=16)


def _net(width=8):
  return models.build("mlp", 0, in_features=64, widths=[width], out_features=10)


@pytest.fixture
def finished(tmp_path):
  out = str(tmp_path / "run")
  surf = run_surface(out)
  return out, surf


def _damage(path, how):
  with open(path, "rb") as f:
    raw = f.read()
  if how == "truncate":
    raw = raw[: len(raw) // 2]
  elif how == "flip":
    b = bytearray(raw)
    b[len(b) // 2] ^= 0x01
    raw = bytes(b)
  else:
    raw = b"\x00garbage"
  with open(path, "wb") as f:
    f.write(raw)
  return raw


@pytest.mark.parametrize("name,how,match", [("results.npz", "truncate", "does not match the checksum"),
                                            ("results.npz", "flip", "does not match the checksum"),
                                            ("meta.json", "truncate", "not valid JSON"),
                                            ("meta.json", "garbage", "not valid JSON")])
def test_a_damaged_result_is_refused_and_kept_until_overwrite(finished, name, how, match):
  out, surf = finished
  path = os.path.join(out, name)
  damaged = _damage(path, how)
  with pytest.raises(jio.CorruptResultError, match=match) as e:
    run_surface(out)
  assert name in str(e.value) and "--overwrite" in str(e.value)
  with open(path, "rb") as f:
    assert f.read() == damaged  # reported, not overwritten
  with pytest.raises(jio.CorruptResultError):
    js.load_surface(out)
  again = run_surface(out, overwrite=True)
  assert again.meta["points_evaluated"] == 25
  np.testing.assert_array_equal(again.loss, surf.loss)
  assert run_surface(out).meta["points_evaluated"] == 0  # replaced: the next run resumes (nothing left)


def test_a_result_without_a_checksum_or_with_foreign_arrays_is_refused(finished, tmp_path):
  out, surf = finished
  meta_path = os.path.join(out, "meta.json")
  with open(meta_path) as f:
    meta = json.load(f)
  jio.write_json(meta_path, {k: v for k, v in meta.items() if k != "checksum"})
  with pytest.raises(jio.CorruptResultError, match="records no checksum"):
    run_surface(out)
  arrays, _ = jio.load_result(out, verify=False)  # readable on request
  np.testing.assert_array_equal(arrays["loss"], surf.loss)
  jio.write_json(meta_path, meta)
  other = str(tmp_path / "other")
  jio.save_result(other, {"loss": np.zeros((5, 5))}, {"config": {}})
  shutil.copy(os.path.join(other, "results.npz"), os.path.join(out, "results.npz"))  # valid .npz, wrong run
  with pytest.raises(jio.CorruptResultError, match="does not match the checksum"):
    run_surface(out)
  os.remove(os.path.join(out, "meta.json"))
  with pytest.raises(jio.CorruptResultError, match="without meta.json"):
    run_surface(out)


def test_a_kill_during_the_first_write_leaves_a_fresh_start(tmp_path):
  out = str(tmp_path / "run")
  jio.save_result(out, {"loss": np.zeros(3)}, {"config": {"a": 1}})
  os.remove(os.path.join(out, "results.npz"))  # meta.json of the first write renamed, results.npz not yet
  store = jio.ResultStore(out, {"a": 1})
  assert store.open() is None
  with pytest.raises(ValueError, match="another config"):
    jio.ResultStore(out, {"a": 2}).open()


def test_another_model_dataset_or_direction_seed_is_refused_naming_the_fields(finished):
  out, _ = finished
  obj, p, dirs = problem()
  kw = dict(x=(-1, 1, 5), y=(-1, 1, 5), chunk_size=4, chunks_per_call=1, devices=jax.devices()[:1], quiet=True,
            out_dir=out)
  other_dirs = js.random_directions(jax.random.key(1), p, n=2)
  with pytest.raises(ValueError, match=r"directions\.key.*--overwrite"):
    js.loss_surface(obj, p, other_dirs, **kw)
  x, y = np.asarray(obj.x).reshape(-1, 5)[:40], np.asarray(obj.y).reshape(-1)[:40]
  same_name_and_size = Objective.from_apply(_ns["_mlp"], p, data=(x[::-1].copy(), y[::-1].copy()), batch_size=16)
  with pytest.raises(ValueError, match="data_fingerprint"):
    js.loss_surface(same_name_and_size, p, dirs, **kw)
  with pytest.raises(ValueError, match="params_fingerprint"):
    js.loss_surface(obj, js.tree.scale(0.5, p), dirs, **kw)
  replaced = js.loss_surface(obj, p, other_dirs, overwrite=True, **kw)
  assert js.load_surface(out).meta["config"]["directions"]["key"] == replaced.meta["config"]["directions"]["key"]


def test_cli_overwrite_replaces_a_result_of_another_config(tmp_path, capsys, monkeypatch, tiny_digits):
  small = (_net(4), data.flatten(tiny_digits), None)
  monkeypatch.setattr(cli, "demo_network", lambda seed, epochs: small)  # a tiny untrained network is enough here
  monkeypatch.setattr(plot, "save_figures", lambda *a, **k: [])  # figures are tested elsewhere
  out = str(tmp_path / "demo")
  argv = ["surface", "--demo", "--y=-1:1:3", "--chunk-size", "9", "--out", out, "--quiet"]
  assert cli.main(argv + ["--x=-1:1:3"]) == 0
  assert cli.main(argv + ["--x=-1:1:5"]) == 2
  err = capsys.readouterr().err
  assert "axes" in err and "--overwrite" in err and "Traceback" not in err
  assert cli.main(argv + ["--x=-1:1:5", "--overwrite"]) == 0
  with np.load(os.path.join(out, "results.npz")) as f:
    assert f["loss"].shape == (3, 5)


# ----------------------------------------------------------------------------- faults: checkpoints


def test_a_damaged_checkpoint_is_a_clear_error(tmp_path):
  p = {"w": jnp.arange(12.0).reshape(3, 4), "b": jnp.ones(4)}
  for target, how in (("d", "flip"), ("d", "truncate"), ("_METADATA", "truncate")):
    d = tmp_path / f"{target}-{how}"
    checkpoint.save(d, p)
    path = d / target
    if path.is_dir():  # the data files of the array store
      path = next(f for f in path.iterdir() if f.is_file())
    _damage(path, how)
    with pytest.raises(checkpoint.CorruptCheckpointError, match="damaged or incomplete"):
      checkpoint.restore(d, like=p)
  (tmp_path / "spec" ).mkdir()
  (tmp_path / "spec" / "spec.json").write_text('{"model": ')
  with pytest.raises(checkpoint.CorruptCheckpointError, match="not valid JSON"):
    checkpoint.read_spec(tmp_path / "spec")


def test_a_checkpoint_of_another_model_names_the_leaves(tmp_path):
  p = {"w": jnp.arange(12.0).reshape(3, 4), "b": jnp.ones(4)}
  checkpoint.save(tmp_path / "c", p)
  with pytest.raises(checkpoint.CheckpointMismatchError, match=r"w: saved \(3, 4\) float32, expected \(3, 5\) float32"):
    checkpoint.restore(tmp_path / "c", like={"w": jnp.zeros((3, 5)), "b": jnp.ones(4)})
  with pytest.raises(checkpoint.CheckpointMismatchError, match=r"missing in the checkpoint: \['c'\].*not in the model: \['b'\]"):
    checkpoint.restore(tmp_path / "c", like={"w": jnp.zeros((3, 4)), "c": jnp.ones(4)})
  # orbax would cast silently; a float64 model is not this float32 checkpoint
  with pytest.raises(checkpoint.CheckpointMismatchError, match="saved \\(3, 4\\) float32, expected \\(3, 4\\) float64"):
    checkpoint.restore(tmp_path / "c", like={"w": np.zeros((3, 4)), "b": np.ones(4, np.float32)})


def test_training_resume_refuses_another_model_and_a_damaged_checkpoint(tmp_path, tiny_digits):
  cfg = dict(optimizer="sgd", learning_rate=0.05, batch_size=16, epochs=2)
  d = tmp_path / "run"
  train.train(0, _net(), tiny_digits, checkpoint_dir=d, checkpoint_every=1, **cfg)  # checkpoints at steps 3, 4 kept
  with pytest.raises(checkpoint.CheckpointMismatchError, match=r"layers\.0\.kernel: saved \(64, 8\) float32, expected \(64, 16\)"):
    train.train(0, _net(16), tiny_digits, checkpoint_dir=d, resume=True, **cfg)
  data_dir = d / "checkpoints" / "4" / "params" / "d"
  _damage(next(data_dir.iterdir()), "flip")
  with pytest.raises(checkpoint.CorruptCheckpointError, match="previous checkpoint \\(step 3\\)"):
    train.train(0, _net(), tiny_digits, checkpoint_dir=d, resume=True, **cfg)
  shutil.rmtree(d / "checkpoints" / "4")  # as the message says: resume from step 3
  params, _, hist = train.train(0, _net(), tiny_digits, checkpoint_dir=d, resume=True, **cfg)
  assert checkpoint.latest_step(d) == 4 and len(hist) == 2


# ----------------------------------------------------------------------------- faults: non-finite values


def test_a_nonfinite_origin_stops_at_once_and_diverged_points_are_counted(tmp_path):
  obj, p, dirs = problem()
  broken = jax.tree.map(lambda a: a, p)
  broken["l1"]["kernel"] = p["l1"]["kernel"].at[0, 0].set(jnp.nan)
  out = str(tmp_path / "nan")
  with pytest.raises(jsurf.NonFiniteOriginError, match="l1/kernel.*checkpoint is broken"):
    js.loss_surface(obj, broken, dirs, x=(-1, 1, 3), y=(-1, 1, 3), out_dir=out, quiet=True)
  assert not os.path.exists(out)  # stopped before anything was written
  # finite parameters whose loss overflows at the centre: the same error, naming the value
  x = np.ones((4, 1), np.float32)
  w = {"w": jnp.zeros(1)}
  log_obj = Objective.from_apply(lambda q, x: jnp.log(x @ q["w"]), w, data=(x, np.zeros(4, np.float32)), loss="mse")
  with pytest.raises(jsurf.NonFiniteOriginError, match="is inf"):
    js.loss_surface(log_obj, w, [{"w": jnp.ones(1)}], x=(-1, 1, 3), quiet=True)
  # diverged grid points are recorded (NaN) and counted, in the result and in meta.json
  surf = js.loss_surface(log_obj, {"w": jnp.ones(1)}, [{"w": jnp.ones(1)}], x=(-2, 0, 5), quiet=True,
                         out_dir=str(tmp_path / "div"))
  assert surf.num_nonfinite == 3
  with open(tmp_path / "div" / "meta.json") as f:
    assert json.load(f)["num_nonfinite"] == 3


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("spec,match", [("1:0:5", "start must be < stop"), ((1.0, 0.0, 5), "start must be < stop"),
                                        ("0:0:3", "start must be < stop"), ("0:1:0", "num must be a positive"),
                                        ("a:b:c", "with numbers"), (("a", 1, 3), "must be numbers"),
                                        ((0, 1, 2.5), "num must be a positive"), ("0:inf:3", "finite")])
def test_bad_ranges_name_the_range(spec, match):
  with pytest.raises(ValueError, match=match) as e:
    jsurf.parse_range(spec, "x")
  assert repr(spec) in str(e.value) or str(spec) in str(e.value)
  assert jsurf.parse_range((0.5, 0.5, 1), "x").tolist() == [0.5]


def test_dtype_mixes_that_would_change_results_are_refused(x64):
  obj, p, _ = problem()
  dirs = [jax.tree.map(jnp.ones_like, p)] * 2
  d64 = [jax.tree.map(lambda a: a.astype(jnp.float64), d) for d in dirs]
  with pytest.raises(ValueError, match=r"direction leaf 'l1/bias' has dtype float64; the parameter has float32"):
    js.loss_surface(obj, p, d64, x=(-1, 1, 3), y=(-1, 1, 3), quiet=True)
  mixed = {**p, "l2": jax.tree.map(lambda a: a.astype(jnp.float64), p["l2"])}
  mixed_dirs = [{**d, "l2": jax.tree.map(lambda a: a.astype(jnp.float64), d["l2"])} for d in dirs]
  with pytest.raises(ValueError, match="parameters mix dtypes"):
    js.loss_surface(obj, mixed, mixed_dirs, x=(-1, 1, 3), y=(-1, 1, 3), quiet=True)
  ints = {"w": jnp.ones(3, jnp.int32)}
  with pytest.raises(ValueError, match="'w' has dtype int32: expected floating-point"):
    js.loss_surface(obj, ints, [{"w": jnp.ones(3, jnp.int32)}], x=(-1, 1, 3), quiet=True)
  obj64 = obj.with_data((np.asarray(obj.x[0], np.float64), np.asarray(obj.y[0])))  # float64 inputs, float32 params
  with pytest.raises(ValueError, match="inputs are float64 but the parameters are float32"):
    js.loss_surface(obj64, p, dirs, x=(-1, 1, 3), y=(-1, 1, 3), quiet=True)


def test_unknown_policy_names_and_impossible_requests_are_clear_errors():
  obj, p, dirs = problem()
  with pytest.raises(ValueError, match="unknown norm 'filters'"):
    normalize(dirs[0], p, "filters")
  with pytest.raises(ValueError, match="unknown ignore policy 'bn'"):
    normalize(dirs[0], p, "filter", "bn")
  with pytest.raises(ValueError, match="unknown bn_policy 'nope': expected one of"):
    Objective.from_model(_net(), data=(np.zeros((4, 64), np.float32), np.zeros(4, np.int32)), bn_policy="nope")
  n = js.tree.size(p)
  with pytest.raises(ValueError, match=f"k must be an integer in \\[1, n={n}\\]; got {n + 1}"):
    hessian.eigenvalues(jax.random.key(0), obj, p, k=n + 1)
  with pytest.raises(ValueError, match="chunk_size must be a positive integer; got 0"):
    js.loss_surface(obj, p, dirs, x=(-1, 1, 3), y=(-1, 1, 3), chunk_size=0)


def test_damaged_dataset_files_are_value_errors(tmp_path):
  import gzip
  import pickle

  path = tmp_path / "train-images-idx3-ubyte.gz"
  path.write_bytes(b"\x1f\x8b\x08\x00 this is not deflate data")
  with pytest.raises(ValueError, match="cannot be decompressed.*gzipped IDX"):
    data.read_idx(path)
  with gzip.open(path, "wb") as f:
    f.write(b"\x00\x00\x08\x01\x00\x00\x00\x03abc")
  np.testing.assert_array_equal(data.read_idx(path), [97, 98, 99])  # a valid gzipped IDX still reads

  class Evil:
    def __reduce__(self):
      return (os.system, ("echo pwned",))

  batch = tmp_path / "data_batch_1"
  batch.write_bytes(pickle.dumps({b"data": Evil()}))
  with pytest.raises(ValueError, match="not a CIFAR python pickle batch.*refusing to load"):
    data._unpickle(str(batch))


def test_unknown_experiment_or_preset_lists_what_exists(capsys):
  from experiments import __main__ as runner

  assert runner.main(["nope"]) == 2
  err = capsys.readouterr().err
  assert "unknown experiment 'nope'" in err and "surface_demo" in err and "skip_transition" in err
  assert runner.main([]) == 2
  assert "surface_demo" in capsys.readouterr().err
  with pytest.raises(SystemExit) as e:
    runner.main(["surface_demo", "--preset", "nope"])
  assert e.value.code == 2
  err = capsys.readouterr().err
  assert "invalid choice: 'nope'" in err and all(p in err for p in ("smoke", "cpu", "full"))
  with open(os.path.join(ROOT, "Makefile")) as f:
    assert "-m experiments $(NAME)" in f.read()  # `make experiment NAME=...` goes through this runner


# ----------------------------------------------------------------------------- one writer, whole reads, full disk

# A writer that pauses after its first write (holding the directory) until the test lets it go.
HOLD_SURFACE = PROBLEM + """
import os, sys, time
from jaxscape import io as jio
out, ready, release, part = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
part = None if part == "none" else tuple(int(v) for v in part.split("/"))
real_write = jio.ResultStore.write

def write(self, *a, **kw):
  real_write(self, *a, **kw)
  if not os.path.exists(ready):
    open(ready, "w").close()
    start = time.time()
    while not os.path.exists(release) and time.time() - start < 120:
      time.sleep(0.02)

jio.ResultStore.write = write
run(out, part=part)
print("finished")
"""


def _start(script: str, *args: str) -> subprocess.Popen:
  """Starts a script in a fresh interpreter (as :func:`_python`, without waiting)."""
  return subprocess.Popen([sys.executable, "-c", _HEAD + textwrap.dedent(script), *args], cwd=ROOT,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(path: str, proc: subprocess.Popen, timeout: float = 120) -> None:
  import time

  start = time.time()
  while not os.path.exists(path):
    if proc.poll() is not None:
      pytest.fail("the writer ended early: " + "".join(proc.communicate()))
    assert time.time() - start < timeout, "the writer never got to its first write"
    time.sleep(0.02)


def _surface_kwargs(out_dir, **kw):
  return dict(x=(-1, 1, 5), y=(-1, 1, 5), chunk_size=4, chunks_per_call=1, devices=jax.devices()[:1], quiet=True,
              out_dir=out_dir, **kw)


def test_a_second_writer_of_a_part_is_refused_naming_the_owner_while_other_parts_run(tmp_path):
  import socket

  out, ready, release = str(tmp_path / "split"), str(tmp_path / "ready"), str(tmp_path / "release")
  owner = _start(HOLD_SURFACE, out, ready, release, "0/2")
  try:
    _wait_for(ready, owner)
    obj, p, dirs = problem()
    other = js.random_directions(jax.random.key(7), p, n=2)  # another user: another direction seed, same --out
    with pytest.raises(jio.RunLockedError, match=rf"pid {owner.pid} on host {socket.gethostname()}") as e:
      js.loss_surface(obj, p, other, **_surface_kwargs(out, part=(0, 2)))
    assert "part-0000-of-0002" in str(e.value)
    # part 1 is its own directory with its own lock: it runs while part 0's owner writes
    assert js.loss_surface(obj, p, dirs, **_surface_kwargs(out, part=(1, 2))).meta["num_done"] == 12
  finally:
    open(release, "w").close()
    stdout, stderr = owner.communicate(timeout=180)
  assert owner.returncode == 0 and "finished" in stdout, stderr
  merged = js.merge_surfaces(out)  # the owner's part is whole and its own: the refused run changed nothing
  np.testing.assert_array_equal(merged.loss, run_surface(None).loss)
  saved = jio.load_result(jsurf.part_directory(out, 0, 2))[1]["config"]["directions"]["key"]
  assert saved == dirs.info["key"] != other.info["key"]


def test_the_lock_of_a_sigkilled_owner_is_released_and_the_next_run_resumes(tmp_path, capsys):
  out, ready, release = str(tmp_path / "run"), str(tmp_path / "ready"), str(tmp_path / "release")
  owner = _start(HOLD_SURFACE, out, ready, release, "none")
  try:
    _wait_for(ready, owner)
    with pytest.raises(jio.RunLockedError, match=f"pid {owner.pid} "):
      run_surface(out)
    assert cli.main(["merge", out]) == 2  # every writer of the directory is refused, the CLI in one line
    err = capsys.readouterr().err
    assert f"pid {owner.pid}" in err and "Traceback" not in err
    owner.kill()  # SIGKILL while holding the lock
    owner.communicate(timeout=60)
  finally:
    if owner.poll() is None:
      owner.kill()
  assert owner.returncode == -9
  with open(os.path.join(out, jio.LOCK)) as f:
    assert str(owner.pid) in f.read()  # the lock file stays behind: a file, not a held lock
  resumed = run_surface(out)
  assert resumed.meta["points_evaluated"] == 21  # the owner's first call (4 points) survived
  np.testing.assert_array_equal(resumed.loss, run_surface(None).loss)


# A writer of many small calls: 17 x 17 points in calls of 2 (145 writes).
MANY_WRITES = PROBLEM + """
import sys
obj, p, dirs = problem()
js.loss_surface(obj, p, dirs, x=(-1, 1, 17), y=(-1, 1, 17), chunk_size=2, chunks_per_call=1,
                devices=jax.devices()[:1], quiet=True, out_dir=sys.argv[1])
print("finished")
"""


def test_a_reader_polling_a_running_surface_never_sees_a_torn_result(tmp_path):
  import time

  out = str(tmp_path / "run")
  writer = _start(MANY_WRITES, out)
  reads, errors, seen = 0, [], set()
  try:
    start = time.time()
    while writer.poll() is None and time.time() - start < 180:
      if not os.path.lexists(os.path.join(out, "results.npz")):
        time.sleep(0.005)
        continue
      try:
        surf = js.load_surface(out)
        arrays, meta = jio.load_result(out)
        reads += 1
        # a torn pair would be arrays of one write beside the metadata of another
        if int(arrays["done"].sum()) != meta["num_done"] or int(np.isfinite(surf.loss).sum()) != surf.meta["num_done"]:
          errors.append(f"torn: {int(arrays['done'].sum())} done, meta says {meta['num_done']}")
        seen.add(meta["num_done"])
      except Exception as e:  # noqa: BLE001 -- every failure of a reader counts
        errors.append(f"{type(e).__name__}: {e}")
  finally:
    stdout, stderr = writer.communicate(timeout=180)
  assert writer.returncode == 0 and "finished" in stdout, stderr
  print(f"reader: {reads} reads of {len(seen)} distinct states, {len(errors)} errors")
  assert errors == [], f"{len(errors)} of {reads + len(errors)} reads failed, e.g. {errors[:3]}"
  assert reads >= 20 and len(seen) >= 5  # the reader really watched the run progress
  assert js.load_surface(out).meta["num_done"] == 289


def test_leftovers_of_killed_writes_are_removed_by_the_next_run(finished):
  out, surf = finished
  junk = [".tmp-abc123results.npz", ".tmp-gen-zzz", ".gen-unpublished"]
  with open(os.path.join(out, junk[0]), "wb") as f:
    f.write(b"half a file")
  for d in junk[1:]:
    os.makedirs(os.path.join(out, d))
    with open(os.path.join(out, d, "results.npz"), "wb") as f:
      f.write(b"half a file")
  assert run_surface(out).meta["points_evaluated"] == 0  # resumes (nothing left to do) and owns the directory
  names = os.listdir(out)
  assert not set(junk) & set(names)
  generations = [n for n in names if n.startswith(".gen-")]  # the current one and the one it just replaced
  assert len(generations) == 2 and os.readlink(os.path.join(out, jio.CURRENT)) in generations
  np.testing.assert_array_equal(js.load_surface(out).loss, surf.loss)


def test_a_full_disk_keeps_the_previous_result_loadable_and_says_so(tmp_path, monkeypatch):
  import errno

  out = str(tmp_path / "run")
  real_write = jio._write_bytes
  calls = [0]

  def write(path, data):  # the disk fills up during the third write (two files per write)
    calls[0] += 1
    if calls[0] >= 5:
      raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)
    real_write(path, data)

  monkeypatch.setattr(jio, "_write_bytes", write)
  with pytest.raises(jio.ResultWriteError, match="No space left.*previous complete result is intact and loadable") as e:
    run_surface(out)
  assert e.value.errno == errno.ENOSPC
  kept = js.load_surface(out)
  assert kept.meta["num_done"] == 8 and int(np.isfinite(kept.loss).sum()) == 8  # the last complete write
  assert not any(n.startswith(".tmp-") for n in os.listdir(out))  # the failed write cleaned up after itself
  monkeypatch.setattr(jio, "_write_bytes", real_write)  # space again: the rerun resumes
  resumed = run_surface(out)
  assert resumed.meta["points_evaluated"] == 17
  np.testing.assert_array_equal(resumed.loss, run_surface(None).loss)


KILL_OVERWRITE = PROBLEM + """
import os, signal, sys
from jaxscape import io as jio
real_write, count = jio.ResultStore.write, [0]
def write(self, *a, **kw):     # the process dies right after its 3rd complete write
  real_write(self, *a, **kw)
  count[0] += 1
  if count[0] == 3:
    os.kill(os.getpid(), signal.SIGKILL)
jio.ResultStore.write = write
run(sys.argv[1], None, overwrite=True)
print("not killed")
"""


def test_a_sigkilled_overwrite_leaves_the_old_result_and_the_same_command_resumes_the_replacement(tmp_path):
  out = str(tmp_path / "run")
  jio.save_result(out, {"loss": np.zeros((3, 3))}, {"config": {"kind": "surface", "axes": "another"}})
  proc = _python(KILL_OVERWRITE, out)
  assert proc.returncode == -9, proc.stdout + proc.stderr
  arrays, meta = jio.load_result(out)  # the old result is still the published one
  assert arrays["loss"].shape == (3, 3) and meta["config"]["axes"] == "another"
  resumed = run_surface(out, None, overwrite=True)  # the same command: the staged 12 points are kept
  assert resumed.meta["points_evaluated"] == 25 - 12
  np.testing.assert_array_equal(resumed.loss, run_surface(None, None).loss)
  np.testing.assert_array_equal(js.load_surface(out).loss, resumed.loss)
  assert not os.path.exists(os.path.join(out, jio.REPLACEMENT))
