"""Refusals before the work starts, and one line instead of a traceback: unwritable or misplaced output, grids that
cannot fit, figures that cannot be saved, internal errors."""

import os
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest

import jaxscape as js
from jaxscape import cli, experiment
from jaxscape import io as jio
from jaxscape.surface import grid

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def readonly_dir(tmp_path):
  """A directory nobody may write in: mode 0555, or (as root, who ignores modes) a read-only tmpfs mount."""
  d = tmp_path / "readonly"
  d.mkdir()
  if os.geteuid() != 0:
    d.chmod(0o555)
    yield str(d)
    d.chmod(0o755)
    return
  mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(d)], capture_output=True)
  if mounted.returncode != 0:
    pytest.skip(f"root cannot make a read-only directory here (mount: {mounted.stderr.decode().strip()}); the "
                "file-on-the-path cases cover the refusal")
  try:
    yield str(d)
  finally:
    subprocess.run(["umount", str(d)], check=True)


def _no_work(monkeypatch):
  """Any loading, training or evaluating fails the test (as an internal error, exit code 1)."""
  def forbidden(*args, **kwargs):
    raise AssertionError("work started before the output was checked")

  monkeypatch.setattr(cli, "_source", forbidden)
  monkeypatch.setattr(js.train, "train_from_spec", forbidden)


def _one_line(capsys, *needles):
  err = capsys.readouterr().err.strip()
  assert len(err.splitlines()) == 1 and "Traceback" not in err, err
  for needle in needles:
    assert needle in err, (needle, err)
  return err


def test_check_output_dir_refuses_each_case_with_its_reason(tmp_path, readonly_dir, monkeypatch):
  f = tmp_path / "file"
  f.write_text("x")
  with pytest.raises(jio.OutputDirError, match="is a file, not a directory"):
    jio.check_output_dir(str(f))
  with pytest.raises(jio.OutputDirError, match="on its path is a file"):
    jio.check_output_dir(str(f / "run"))
  with pytest.raises(jio.OutputDirError, match="cannot be created|not writable"):
    jio.check_output_dir(os.path.join(readonly_dir, "run"))
  with pytest.raises(jio.OutputDirError, match="not writable"):
    jio.check_output_dir(readonly_dir)
  with pytest.raises(jio.OutputDirError, match="free; the results need about"):
    jio.check_output_dir(str(tmp_path / "big"), need_bytes=2**63)
  ok = tmp_path / "a" / "b"
  assert jio.check_output_dir(str(ok)) == str(ok) and os.listdir(ok) == []  # created, probe removed


@pytest.mark.parametrize("command", [
    ["surface", "--demo", "--x=-1:1:5"],
    ["hessian", "--demo", "--top-k", "1"],
    ["train", "--epochs", "1"],
])
def test_commands_refuse_an_unwritable_or_file_out_before_any_work(command, tmp_path, readonly_dir, monkeypatch,
                                                                   capsys):
  _no_work(monkeypatch)
  for out, reason in ((os.path.join(readonly_dir, "run"), "Read-only file system|Permission denied"),
                      (str(tmp_path / "f"), "is a file, not a directory")):
    (tmp_path / "f").write_text("not a directory")
    assert cli.main([*command, "--out", out]) == 2
    err = _one_line(capsys, f"jaxscape {command[0]}: error:", repr(out))
    assert any(r in err for r in reason.split("|")), err


def test_a_surface_part_into_a_file_and_a_merge_or_plot_into_a_read_only_dir_are_refused(tmp_path, readonly_dir,
                                                                                        monkeypatch, capsys):
  _no_work(monkeypatch)
  (tmp_path / "f").write_text("x")
  assert cli.main(["surface", "--demo", "--x=-1:1:5", "--chunk", "0/2", "--out", str(tmp_path / "f")]) == 2
  _one_line(capsys, "is a file, not a directory")
  assert cli.main(["merge", readonly_dir]) == 2
  _one_line(capsys, "not writable")
  assert cli.main(["merge", str(tmp_path / "missing")]) == 2
  _one_line(capsys, "no directory")


def test_an_experiment_refuses_an_unwritable_out(readonly_dir, capsys):
  import experiments.surface_demo as module

  assert experiment.run(module, ["--preset", "smoke", "--out", os.path.join(readonly_dir, "run")]) == 2
  _one_line(capsys, "surface_demo [smoke]: error:", "cannot be created")


def test_grid_coordinates_of_indices_are_the_rows_of_the_whole_grid():
  axes = [np.linspace(-1, 1, 5), np.linspace(0, 2, 3), np.linspace(3, 4, 2)]
  whole = grid.grid_coordinates(axes)
  assert whole.shape == (30, 3) and whole[7].tolist() == [0.0, 1.0, 3.0]  # x fastest: 7 = 2 + 5 * 1
  idx = np.array([29, 0, 13, 7])
  np.testing.assert_array_equal(grid.grid_coordinates(axes, idx), whole[idx])


def test_an_impossible_grid_is_refused_with_the_numbers_before_anything_is_allocated(capsys):
  with pytest.raises(ValueError) as e:
    grid.check_host_memory((100001, 100001), ("loss", "accuracy"), available=16 * 2**30)
  msg = str(e.value)
  need = 100001**2 * (grid.HOST_COPIES * (8 * 2 + 1) + 9)
  assert "100001 × 100001 grid (10,000,200,001 points)" in msg and jio.format_bytes(need) in msg
  assert "16.0 GiB is available" in msg and "coarser grid" in msg
  side = int(msg.split("(e.g. ")[1].split(" ×")[0])  # the suggested grid fits, and is about the largest
  assert grid.host_bytes((side, side), 2) <= 16 * 2**30 < grid.host_bytes((int(1.01 * side),) * 2, 2)
  grid.check_host_memory((101, 101), ("loss", "accuracy"), available=16 * 2**30)  # fits: no error
  # a real process: one line, exit code 2, in seconds (the whole grid is never allocated)
  proc = subprocess.run([sys.executable, "-m", "jaxscape.cli", "surface", "--demo", "--x=-1:1:100001",
                         "--y=-1:1:100001", "--out", "/nonexistent/never-created"], cwd=ROOT, capture_output=True,
                        text=True, timeout=120)
  assert proc.returncode == 2, proc.stderr
  assert len(proc.stderr.strip().splitlines()) == 1 and "GiB of host memory" in proc.stderr, proc.stderr
  assert not os.path.exists("/nonexistent/never-created")


def test_the_host_memory_estimate_bounds_what_a_run_allocates_per_point(tmp_path):
  import tracemalloc

  x = jnp.linspace(-1.0, 1.0, 8)[:, None]
  obj = js.Objective.from_apply(lambda p, x: x * p["w"][None, :], data=(x, 2.0 * x), loss="mse", batch_size=None,
                                name="line")
  params = {"w": jnp.ones((1,))}
  peaks, small, large = {}, 40_000, 160_000
  for n in (1000, small, large):  # the first compiles (the same call shape for all: chunks_per_call=1)
    tracemalloc.start()
    try:
      surf = js.loss_surface(obj, params, [{"w": jnp.ones((1,))}], x=(-1.0, 1.0, n), chunk_size=4096,
                             chunks_per_call=1, out_dir=str(tmp_path / str(n)), quiet=True)
      peaks[n] = tracemalloc.get_traced_memory()[1]
    finally:
      tracemalloc.stop()
  # the growth of the numpy peak with the grid (what does not depend on it, imports and compiling, cancels)
  fields = len(("loss", *surf.metrics))
  growth, bound = peaks[large] - peaks[small], grid.host_bytes((large,), fields) - grid.host_bytes((small,), fields)
  assert 0.3 * bound < growth <= bound, (growth, bound)


def test_a_surface_that_needs_more_disk_than_is_free_is_refused_before_evaluating(tmp_path, monkeypatch, capsys):
  import shutil

  free = shutil.disk_usage(str(tmp_path))._replace(free=1024)
  monkeypatch.setattr(jio.shutil, "disk_usage", lambda path: free)
  _no_work(monkeypatch)
  out = str(tmp_path / "s")
  assert cli.main(["surface", "--demo", "--x=-1:1:101", "--y=-1:1:101", "--out", out]) == 2
  _one_line(capsys, "has 1.0 KiB free; the results need about")
  x = jnp.linspace(-1.0, 1.0, 8)[:, None]  # the library checks with every stored map, before evaluating
  obj = js.Objective.from_apply(lambda p, x: x * p["w"][None, :], data=(x, 2.0 * x), loss="mse", batch_size=None,
                                name="line")
  with pytest.raises(jio.OutputDirError, match="has 1.0 KiB free"):
    js.loss_surface(obj, {"w": jnp.ones((1,))}, [{"w": jnp.ones((1,))}], x=(-1.0, 1.0, 101), out_dir=out, quiet=True)
  assert not os.path.exists(os.path.join(out, "results.npz"))


def test_a_figure_that_cannot_be_saved_loses_no_numbers(tmp_path, capsys):
  out = str(tmp_path / "h")
  os.makedirs(os.path.join(out, "density.png"))  # a directory where the figure goes: savefig fails
  argv = ["hessian", "--demo", "--demo-epochs", "1", "--top-k", "1", "--density", "--density-probes", "1",
          "--density-steps", "8", "--out", out]
  assert cli.main(argv) == 2
  _one_line(capsys, "could not write a figure", "density.png", "the numbers are saved")
  arrays, meta = jio.load_result(out)
  assert meta["complete"] and {"largest_values", "density"} <= set(arrays)
  os.rmdir(os.path.join(out, "density.png"))
  assert cli.main(argv) == 0  # nothing recomputed: the saved parts, then the figures
  assert "saved by an earlier run: largest, density" in capsys.readouterr().out
  assert os.path.isfile(os.path.join(out, "density.png")) and os.path.isfile(os.path.join(out, "density_log.png"))

  out = str(tmp_path / "s")
  os.makedirs(os.path.join(out, "contour.png"))
  assert cli.main(["surface", "--demo", "--demo-epochs", "1", "--x=-1:1:5", "--y=-1:1:3", "--out", out,
                   "--quiet"]) == 2
  _one_line(capsys, "could not write a figure", f"jaxscape plot {out}")
  assert jio.load_result(out)[0]["done"].all()
  os.rmdir(os.path.join(out, "contour.png"))
  assert cli.main(["plot", out]) == 0 and os.path.isfile(os.path.join(out, "contour.png"))


def test_an_internal_error_is_one_line_with_exit_code_1_and_debug_shows_the_traceback(tmp_path, monkeypatch, capsys):
  def broken(*args, **kwargs):
    raise TypeError("a bug")

  monkeypatch.setattr(cli, "_source", broken)
  argv = ["hessian", "--demo", "--top-k", "1", "--out", str(tmp_path / "h")]
  assert cli.main(argv) == 1
  _one_line(capsys, "jaxscape hessian: internal error (TypeError: a bug); rerun with --debug")
  with pytest.raises(TypeError, match="a bug"):
    cli.main([*argv, "--debug"])
  monkeypatch.setenv("JAXSCAPE_DEBUG", "1")
  with pytest.raises(TypeError, match="a bug"):
    cli.main(argv)
