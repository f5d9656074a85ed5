"""Surface evaluation: correctness, sharding/chunk invariance, resume, NaNs, results and plots."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxscape as js
from jaxscape import plot
from jaxscape import surface as jsurf
from jaxscape.surface import executor


def _mlp(p, x):
  h = jnp.tanh(x @ p["l1"]["kernel"] + p["l1"]["bias"][None])
  return h @ p["l2"]["kernel"] + p["l2"]["bias"][None]


@pytest.fixture(scope="module")
def problem():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(50, 6)).astype(np.float32)
  y = rng.integers(0, 3, 50)
  p = {"l1": {"kernel": jnp.asarray(rng.normal(size=(6, 8)) / 2, jnp.float32), "bias": jnp.zeros(8)},
       "l2": {"kernel": jnp.asarray(rng.normal(size=(8, 3)) / 2, jnp.float32), "bias": jnp.zeros(3)}}
  obj = js.Objective.from_apply(_mlp, p, data=(x, y), batch_size=16)  # 4 balanced batches of 13: 2 padded examples
  dirs = js.random_directions(jax.random.key(0), p, n=2)
  return obj, p, dirs


def _reference(obj, p, dirs, xs, ys):
  value = jax.jit(obj.loss)
  out = np.zeros((len(ys), len(xs))); acc = np.zeros_like(out)
  for iy, b in enumerate(ys):
    for ix, a in enumerate(xs):
      q = js.tree.add(p, js.tree.add(js.tree.scale(a, dirs[0]), js.tree.scale(b, dirs[1])))
      loss, m = value(q)
      out[iy, ix], acc[iy, ix] = loss, m["accuracy"]
  return out, acc


def test_surface_matches_per_point_evaluation_on_a_non_square_grid(problem):
  obj, p, dirs = problem
  surf = js.loss_surface(obj, p, dirs, x="-1:1:5", y=(-0.5, 1.0, 4), quiet=True)
  assert surf.loss.shape == (4, 5) and surf.accuracy.shape == (4, 5)
  ref, acc = _reference(obj, p, dirs, surf.x, surf.y)
  # float32 means over 50 examples: 1e-5 relative
  np.testing.assert_allclose(surf.loss, ref, rtol=1e-5)
  np.testing.assert_allclose(surf.accuracy, acc, atol=1e-6)
  assert surf.num_nonfinite == 0
  assert surf.meta["config"]["objective"]["num_examples"] == 50
  assert surf.meta["points_per_second"] > 0


def test_origin_equals_trained_loss(problem):
  obj, p, dirs = problem
  surf = js.loss_surface(obj, p, dirs, x=(-1, 1, 5), y=(-1, 1, 3), quiet=True)
  iy, ix = surf.origin_index()
  assert (iy, ix) == (1, 2)
  np.testing.assert_allclose(surf.loss[iy, ix], obj.value(p), rtol=1e-6)


def test_same_result_on_1_or_8_devices_and_any_chunk_size(problem):
  obj, p, dirs = problem
  assert jax.device_count() == 8
  base = js.loss_surface(obj, p, dirs, x=(-1, 1, 5), y=(-1, 1, 3), quiet=True, devices=jax.devices()[:1], chunk_size=15)
  for devices, chunk, per_call in ((jax.devices(), None, 8), (jax.devices(), 8, 1), (jax.devices()[:1], 4, 2), (jax.devices()[:2], 6, 3)):
    other = js.loss_surface(obj, p, dirs, x=(-1, 1, 5), y=(-1, 1, 3), quiet=True, devices=devices, chunk_size=chunk,
                            chunks_per_call=per_call)
    np.testing.assert_allclose(other.loss, base.loss, rtol=1e-6)
    np.testing.assert_allclose(other.accuracy, base.accuracy, rtol=1e-6)
    assert other.meta["environment"]["device_count"] == len(devices)


def test_1d_and_3d_grids(problem):
  obj, p, dirs = problem
  line = js.loss_surface(obj, p, [dirs[0]], x=(-1, 1, 5), quiet=True)
  plane = js.loss_surface(obj, p, dirs, x=(-1, 1, 5), y=(0, 0, 1), quiet=True)
  np.testing.assert_allclose(line.loss, plane.loss[0], rtol=1e-6)
  assert line.y is None and line.ndim == 1
  three = js.loss_surface(obj, p, [dirs[0], dirs[1], dirs[0]], ranges=[(-1, 1, 3), (0, 1, 2), (0, 0.5, 2)], quiet=True)
  assert three.loss.shape == (2, 2, 3)  # [nz, ny, nx]
  # point (x=1, y=0, z=0.5) is θ + 1.5·d0
  np.testing.assert_allclose(three.loss[1, 0, 2], js.loss_surface(obj, p, [dirs[0]], x=(1.5, 1.5, 1), quiet=True).loss[0], rtol=1e-6)


class Killed(Exception):
  pass


def _kill_after(monkeypatch, calls_allowed: int, devices=None) -> None:
  """Makes every surface call after the first ``calls_allowed`` raise ``Killed`` (a run killed mid-way)."""
  real = executor._call_evaluator(executor._mesh(devices), 1, jsurf.PointSpec())
  calls = []

  def dying(*args):
    if not isinstance(args[0].coords, jax.core.Tracer):  # the output-shape trace is no call
      calls.append(1)
    if len(calls) > calls_allowed:
      raise Killed("simulated kill")
    return real(*args)

  monkeypatch.setattr(executor, "_call_evaluator", lambda mesh, n, spec: dying)


def test_resume_after_a_killed_run_loses_no_finished_chunk(problem, tmp_path, monkeypatch):
  obj, p, dirs = problem
  out = str(tmp_path / "run")
  full = js.loss_surface(obj, p, dirs, x=(-1, 1, 5), y=(-1, 1, 3), quiet=True, chunk_size=4, devices=jax.devices()[:1])

  _kill_after(monkeypatch, 2, jax.devices()[:1])
  with pytest.raises(Killed):
    js.loss_surface(obj, p, dirs, x=(-1, 1, 5), y=(-1, 1, 3), quiet=True, chunk_size=4, chunks_per_call=1, devices=jax.devices()[:1], out_dir=out)
  with np.load(os.path.join(out, "results.npz")) as f:
    partial = dict(f)
  assert partial["done"].sum() == 8  # two calls of 4 points survived the kill
  monkeypatch.undo()

  resumed = js.loss_surface(obj, p, dirs, x=(-1, 1, 5), y=(-1, 1, 3), quiet=True, chunk_size=4, chunks_per_call=1, devices=jax.devices()[:1], out_dir=out)
  assert resumed.meta["points_evaluated"] == 7  # only the unfinished points
  np.testing.assert_allclose(resumed.loss, full.loss, rtol=1e-6)
  again = js.loss_surface(obj, p, dirs, x=(-1, 1, 5), y=(-1, 1, 3), quiet=True, chunk_size=4, devices=jax.devices()[:1],
                          out_dir=out)
  assert again.meta["points_evaluated"] == 0  # finished: nothing recomputed
  with pytest.raises(ValueError, match="chunk_size: saved 4, now 3"):  # values depend on it in the last bits
    js.loss_surface(obj, p, dirs, x=(-1, 1, 5), y=(-1, 1, 3), quiet=True, chunk_size=3, devices=jax.devices()[:1],
                    out_dir=out)
  loaded = js.load_surface(out)
  np.testing.assert_allclose(loaded.loss, full.loss, rtol=1e-6)
  np.testing.assert_allclose(loaded.accuracy, full.accuracy, rtol=1e-6)
  with pytest.raises(ValueError, match="another config.*axes"):
    js.loss_surface(obj, p, dirs, x=(-1, 1, 7), y=(-1, 1, 3), quiet=True, out_dir=out)
  with pytest.raises(ValueError, match="params_fingerprint"):
    js.loss_surface(obj, js.tree.scale(2.0, p), dirs, x=(-1, 1, 5), y=(-1, 1, 3), quiet=True, out_dir=out)
  with open(os.path.join(out, "meta.json")) as f:
    meta = json.load(f)
  for key in ("directions", "objective", "dtype", "axes"):
    assert key in meta["config"]
  assert meta["config"]["directions"]["norm"] == "filter"
  assert meta["environment"]["versions"]["jax"] == jax.__version__
  assert "wall_time_s" in meta and "points_per_second" in meta


def test_nonfinite_losses_are_nan_and_counted():
  x = np.ones((4, 1), np.float32)
  y = np.zeros(4, np.float32)
  p = {"w": jnp.ones(1)}
  obj = js.Objective.from_apply(lambda p, x: jnp.log(x @ p["w"]), p, data=(x, y), loss="mse")
  surf = js.loss_surface(obj, p, [{"w": jnp.ones(1)}], x=(-2, 0, 5), quiet=True)
  # w + α ∈ {-1, -0.5, 0, 0.5, 1}: log of a negative is NaN, log 0 = -inf -> loss inf
  assert surf.num_nonfinite == 3 and np.isnan(surf.loss[:3]).all() and np.isfinite(surf.loss[3:]).all()
  np.testing.assert_allclose(surf.loss[4], 0.0, atol=1e-12)


def test_bad_input_is_a_clear_error(problem):
  obj, p, dirs = problem
  with pytest.raises(ValueError, match="start:stop:num"):
    js.loss_surface(obj, p, dirs, x="-1:1", y="-1:1:3")
  with pytest.raises(ValueError, match="positive integer"):
    js.loss_surface(obj, p, dirs, x=(-1, 1, 0), y=(-1, 1, 3))
  with pytest.raises(ValueError, match="2 direction"):
    js.loss_surface(obj, p, dirs, x=(-1, 1, 3))
  with pytest.raises(ValueError, match="chunk_size"):
    js.loss_surface(obj, p, dirs, x=(-1, 1, 3), y=(-1, 1, 3), chunk_size=0)


def test_plots_and_vtk(problem, tmp_path):
  obj, p, dirs = problem
  surf = js.loss_surface(obj, p, dirs, x=(-1, 1, 5), y=(-1, 1, 3), quiet=True)
  for fn in (plot.contour, plot.contourf, plot.heatmap, plot.surface3d):
    fig, ax = fn(surf)
    fig.savefig(tmp_path / f"{fn.__name__}.png")
    plot.close(fig)
  fig, ax = plot.contour(surf, log=True, vlevel=0.1)
  plot.close(fig)
  line = js.loss_surface(obj, p, [dirs[0]], x=(-1, 1, 5), quiet=True)
  fig, ax = plot.curve(line, log=True)
  assert ax.right.get_ylabel() == "accuracy"
  plot.close(fig)
  with pytest.raises(ValueError, match="2-D surface"):
    plot.contour(line)
  with pytest.raises(ValueError, match="no field"):
    plot.heatmap(surf, field="lambda_max")
  path = js.io.export_vtk(str(tmp_path / "s.vtk"), surf.x, surf.y, {"loss": surf.loss, "accuracy": surf.accuracy}, zmax=10)
  with open(path) as f:
    lines = f.read().splitlines()
  assert lines[3] == "DATASET STRUCTURED_GRID" and lines[4] == "DIMENSIONS 5 3 1" and lines[5] == "POINTS 15 double"
  # the height of point (ix=4, iy=2) is the clipped loss there
  assert np.isclose(float(lines[6 + 14].split()[2]), min(surf.loss[2, 4], 10), rtol=1e-8)
  assert "SCALARS accuracy double 1" in lines
  with pytest.raises(ValueError, match="expected \\(ny, nx\\)"):
    js.io.export_vtk(str(tmp_path / "t.vtk"), surf.x, surf.y, {"loss": surf.loss.T})
  with pytest.raises(FileNotFoundError, match="results.npz"):
    js.load_surface(str(tmp_path / "nothing"))


def test_curvature_maps_match_dense_hessians(x64):
  rng = np.random.default_rng(3)
  x = rng.normal(size=(30, 3))
  y = rng.integers(0, 2, 30)
  p = {"l1": {"kernel": jnp.asarray(rng.normal(size=(3, 4))), "bias": jnp.asarray(rng.normal(size=4) * 0.1)},
       "l2": {"kernel": jnp.asarray(rng.normal(size=(4, 2))), "bias": jnp.zeros(2)}}
  obj = js.Objective.from_apply(_mlp, p, data=(x, y), batch_size=8)
  dirs = js.random_directions(jax.random.key(1), p, n=2, ignore=None)
  n = js.tree.size(p)  # 22 parameters: Lanczos with n steps is exact
  surf = js.loss_surface(obj, p, dirs, x=(-0.5, 0.5, 3), y=(0, 0.5, 2), curvature=("plane", "full"), key=jax.random.key(2),
                         lanczos_steps=n, trace_probes=16, quiet=True, chunk_size=2)
  flat, unravel = js.tree.ravel(p)
  hess = jax.jit(jax.hessian(lambda v: obj.value(unravel(v))))
  u, w = js.tree.ravel(dirs[0])[0], js.tree.ravel(dirs[1])[0]
  for iy, b in enumerate(surf.y):
    for ix, a in enumerate(surf.x):
      h = np.asarray(hess(flat + a * u + b * w))
      ev = np.linalg.eigvalsh(h)
      # float64 throughout: 1e-8 relative for the exact maps
      np.testing.assert_allclose(surf.metrics["h_xx"][iy, ix], u @ h @ u, rtol=1e-8)
      np.testing.assert_allclose(surf.metrics["h_xy"][iy, ix], u @ h @ w, rtol=1e-8, atol=1e-12)
      np.testing.assert_allclose(surf.metrics["h_yy"][iy, ix], w @ h @ w, rtol=1e-8)
      np.testing.assert_allclose(surf.metrics["lambda_max"][iy, ix], ev[-1], rtol=1e-6)
      np.testing.assert_allclose(surf.metrics["lambda_min"][iy, ix], ev[0], rtol=1e-6, atol=1e-9)
      np.testing.assert_allclose(surf.metrics["convexity_ratio"][iy, ix], ev[0] / ev[-1], rtol=1e-5, atol=1e-9)
      assert surf.metrics["lambda_max_bound"][iy, ix] < 1e-6 * abs(ev).max()  # n steps: exact, the bound says so
      se = surf.metrics["trace_stderr"][iy, ix]
      assert abs(surf.metrics["trace"][iy, ix] - np.trace(h)) <= 4 * se + 1e-9
      plane = np.array([[u @ h @ u, u @ h @ w], [u @ h @ w, w @ h @ w]])
      np.testing.assert_allclose(surf.metrics["plane_lambda_min"][iy, ix], np.linalg.eigvalsh(plane)[0], rtol=1e-7, atol=1e-10)
  assert surf.meta["config"]["curvature"]["maps"] == ["full", "plane"]
  with pytest.raises(ValueError, match="needs key"):
    js.loss_surface(obj, p, dirs, x=(-1, 1, 3), y=(-1, 1, 3), curvature="full")
  with pytest.raises(ValueError, match="2-D surface"):
    js.loss_surface(obj, p, [dirs[0]], x=(-1, 1, 3), curvature="plane")
  with pytest.raises(ValueError, match="unknown curvature"):
    js.loss_surface(obj, p, dirs, x=(-1, 1, 3), y=(-1, 1, 3), curvature="diag")


def test_warm_started_curvature_beats_cold_and_ignores_chunks_devices_parts(x64, tmp_path, monkeypatch):
  rng = np.random.default_rng(3)
  x, y = rng.normal(size=(30, 3)), rng.integers(0, 2, 30)
  p = {"l1": {"kernel": jnp.asarray(rng.normal(size=(3, 4))), "bias": jnp.asarray(rng.normal(size=4) * 0.1)},
       "l2": {"kernel": jnp.asarray(rng.normal(size=(4, 2))), "bias": jnp.zeros(2)}}
  obj = js.Objective.from_apply(_mlp, p, data=(x, y), batch_size=30)  # one batch: less to compile
  dirs = js.random_directions(jax.random.key(1), p, n=2, ignore=None)
  grid = dict(x=(-0.5, 0.5, 5), y=(-0.5, 0.5, 5), curvature="full", key=jax.random.key(2), lanczos_steps=4,
              trace_probes=2, quiet=True)
  warm = dict(grid, warm_start=2, warm_start_steps=26)  # 26 parameters: the coarse runs are exact
  out = str(tmp_path / "warm")
  one = js.loss_surface(obj, p, dirs, devices=jax.devices()[:1], chunk_size=5, chunks_per_call=2, out_dir=out, **warm)
  # a coarse point every 2nd grid point, ends included: 3 x 3 coarse points of 26 HVPs
  assert one.meta["warm_start"]["coarse_points"] == one.meta["warm_start"]["computed"] == 9
  assert one.meta["warm_start"]["hvps"] == 9 * 26
  assert one.meta["config"]["curvature"]["warm_start"] == {"every": 2, "lanczos_steps": 26}
  # 8 devices, other chunks, and a part: grid rows 3-4 (indices 17-24) need 5 coarse points (rows 2 and 4)
  part = js.loss_surface(obj, p, dirs, chunk_size=8, part=(2, 3), **warm)
  idx = jsurf.part_indices(25, (2, 3))
  assert part.meta["warm_start"]["computed"] == 5 and part.meta["environment"]["device_count"] == 8
  # float64; only the grouping of the vectorised work differs: 1e-10 relative
  for k in ("lambda_max", "lambda_min", "trace"):
    np.testing.assert_allclose(part.metrics[k].ravel()[idx], one.metrics[k].ravel()[idx], rtol=1e-10, err_msg=k)
  # against dense eigh, and against cold starts with the same 4 steps: the surface's cold Lanczos (same keys) on the
  # dense Hessians
  flat, unravel = js.tree.ravel(p)
  hess = jax.jit(jax.vmap(jax.hessian(lambda v: obj.value(unravel(v)))))
  coords = jsurf.grid_coordinates([one.x, one.y])
  dense = hess(flat[None] + jnp.asarray(coords) @ jnp.stack([js.tree.ravel(dirs[0])[0], js.tree.ravel(dirs[1])[0]]))
  ev = np.linalg.eigvalsh(np.asarray(dense))
  cold = jax.jit(jax.vmap(lambda h, i: js.spectral.extreme_ritz(
      jax.random.split(jax.random.fold_in(grid["key"], i))[0], lambda v: h @ v, flat, 4)[0]))(dense, jnp.arange(25))
  for j, k, ref in ((0, "lambda_min", ev[:, 0]), (1, "lambda_max", ev[:, -1])):
    err_warm = np.median(np.abs(one.metrics[k].ravel() - ref) / np.abs(ref))
    err_cold = np.median(np.abs(np.asarray(cold[:, j]) - ref) / np.abs(ref))
    # median relative error over the 25 points; measured: lambda_max 4.1e-5 warm vs 1.2e-2 cold, lambda_min
    # 1.3e-2 vs 0.20 (factors 290 and 15; the bound asks for 4)
    assert err_warm < 0.25 * err_cold, (k, err_warm, err_cold)
  # resume: finished, nothing recomputed (no coarse pass either); another warm start, or none, is refused
  again = js.loss_surface(obj, p, dirs, devices=jax.devices()[:1], chunk_size=5, chunks_per_call=2, out_dir=out, **warm)
  assert again.meta["points_evaluated"] == 0 and again.meta["warm_start"]["computed"] == 0
  for other in (dict(warm, warm_start=3), grid):
    with pytest.raises(ValueError, match="another config.*curvature"):
      js.loss_surface(obj, p, dirs, out_dir=out, **other)
  with pytest.raises(ValueError, match="warm-starts the Lanczos runs of curvature='full'"):
    js.loss_surface(obj, p, dirs, x=(-1, 1, 3), y=(-1, 1, 3), warm_start=2)
  with pytest.raises(ValueError, match="warm_start must be a positive integer"):
    js.loss_surface(obj, p, dirs, **dict(warm, warm_start=0))
  monkeypatch.setattr(executor, "WARM_START_MAX_BYTES", 1000)  # 9 vectors of 26 float64 take 1872 bytes
  with pytest.raises(ValueError, match=r"warm_start=2 keeps 9 start vectors of 26 parameters .*WARM_START_MAX_BYTES"):
    js.loss_surface(obj, p, dirs, **warm)


# ----------------------------------------------------------------------------- scaling out


def _problem62(dtype=np.float32):
  """62 examples in 4 balanced batches of 16 (2 padded): batches split evenly over 1, 2, 4 or 8 data shards."""
  rng = np.random.default_rng(5)
  x = rng.normal(size=(62, 6)).astype(dtype)
  y = rng.integers(0, 3, 62)
  p = {"l1": {"kernel": jnp.asarray(rng.normal(size=(6, 8)) / 2, dtype), "bias": jnp.asarray(rng.normal(size=8) / 4, dtype)},
       "l2": {"kernel": jnp.asarray(rng.normal(size=(8, 3)) / 2, dtype), "bias": jnp.zeros(3, dtype)}}
  obj = js.Objective.from_apply(_mlp, p, data=(x, y), batch_size=16)
  assert obj.batch_size == 16 and obj.num_batches == 4
  return obj, p, js.random_directions(jax.random.key(0), p, n=2)


def test_data_sharding_gives_the_same_surface_and_plane_curvature_on_any_mesh(x64):
  obj, p, dirs = _problem62(np.float64)
  grid = dict(x=(-1, 1, 5), y=(-1, 1, 3), quiet=True, curvature="plane", chunk_size=8)
  base = js.loss_surface(obj, p, dirs, data_shards=1, **grid)
  ref, _ = _reference(obj, p, dirs, base.x, base.y)
  np.testing.assert_allclose(base.loss, ref, rtol=1e-12)
  for shards in (2, 4, 8):  # grid x data = 4x2, 2x4, 1x8 on the 8 CPU devices; curvature on 2x4 (compile time)
    kwargs = {**grid, "curvature": "plane" if shards == 4 else None}
    other = js.loss_surface(obj, p, dirs, data_shards=shards, **kwargs)
    assert other.meta["environment"]["mesh"] == {"grid": 8 // shards, "data": shards}
    # float64, sums over 62 examples in another order: 1e-12 relative (maps near 0: 1e-13 absolute)
    np.testing.assert_allclose(other.loss, base.loss, rtol=1e-12)
    for k in other.metrics:
      np.testing.assert_allclose(other.metrics[k], base.metrics[k], rtol=1e-12, atol=1e-13, err_msg=k)
  assert set(other.metrics) == {"accuracy"} and set(base.metrics) > {"h_xy", "plane_lambda_min", "plane_lambda_max"}


def test_data_sharding_errors_are_clear(problem):
  obj, p, dirs = problem  # batches of 13
  with pytest.raises(ValueError, match=r"batch size \(13, balanced over 50 examples\) must be divisible by data_shards \(2\): e.g. batch_size=12 \(balanced to 5 batches of 10\)"):
    js.loss_surface(obj, p, dirs, x=(-1, 1, 3), y=(-1, 1, 3), data_shards=2)
  with pytest.raises(ValueError, match=r"data_shards must be a positive integer that divides the number of devices \(8\); got 3"):
    js.loss_surface(obj, p, dirs, x=(-1, 1, 3), y=(-1, 1, 3), data_shards=3)
  obj16, p16, dirs16 = _problem62()
  with pytest.raises(ValueError, match="curvature='full'.*needs data_shards=1"):
    js.loss_surface(obj16, p16, dirs16, x=(-1, 1, 3), y=(-1, 1, 3), data_shards=2, curvature="full", key=jax.random.key(0))


def test_parts_merge_to_exactly_the_single_run(tmp_path):
  from jaxscape import cli

  obj, p, dirs = _problem62()
  grid = dict(x=(-1, 1, 5), y=(-1, 1, 5), quiet=True, chunk_size=8)
  single_dir = str(tmp_path / "single")
  single = js.loss_surface(obj, p, dirs, out_dir=single_dir, **grid)
  for n in (1, 3, 7):
    out = str(tmp_path / f"split{n}")
    for i in range(n):
      part = js.loss_surface(obj, p, dirs, part=(i, n), out_dir=out, **grid)
      idx = jsurf.part_indices(25, (i, n))
      assert part.meta["points_evaluated"] == idx.size == part.meta["part_points"]
      assert np.isfinite(part.loss.ravel()[idx]).all() and np.isnan(np.delete(part.loss.ravel(), idx)).all()
      assert part.num_nonfinite == 0  # points outside the part are not counted as non-finite
    assert sorted(os.listdir(out)) == [f"part-{i:04d}-of-{n:04d}" for i in range(n)]
    merged = js.merge_surfaces(out)
    np.testing.assert_array_equal(merged.loss, single.loss)
    np.testing.assert_array_equal(merged.accuracy, single.accuracy)
    assert merged.meta["config"] == single.meta["config"] and merged.meta["parts"]["count"] == n
  # `jaxscape merge` writes what the single run wrote: same arrays, same config; plot and resume work on it
  assert cli.main(["merge", str(tmp_path / "split3")]) == 0
  with np.load(os.path.join(single_dir, "results.npz")) as a, np.load(tmp_path / "split3" / "results.npz") as b:
    assert a.files == b.files
    for k in a.files:
      np.testing.assert_array_equal(a[k], b[k], err_msg=k)
  with open(os.path.join(single_dir, "meta.json")) as f, open(tmp_path / "split3" / "meta.json") as g:
    assert json.load(f)["config"] == json.load(g)["config"]
  assert js.load_surface(str(tmp_path / "split3")).loss.shape == (5, 5)
  assert os.path.isfile(tmp_path / "split3" / "contour.png")
  again = js.loss_surface(obj, p, dirs, out_dir=str(tmp_path / "split3"), **grid)
  assert again.meta["points_evaluated"] == 0  # the merged directory resumes like a finished single run


def test_merge_names_missing_incomplete_and_foreign_parts(tmp_path):
  obj, p, dirs = _problem62()
  grid = dict(x=(-1, 1, 5), y=(-1, 1, 5), quiet=True, chunk_size=8)
  out = str(tmp_path / "split")
  for i in (0, 2):
    js.loss_surface(obj, p, dirs, part=(i, 4), out_dir=out, **grid)
  with pytest.raises(ValueError, match=r"2 of 4 parts missing: part-0001-of-0004, part-0003-of-0004"):
    js.merge_surfaces(out)
  js.loss_surface(obj, p, dirs, part=(3, 4), out_dir=out, **grid)
  # a part 1 that was killed before its first call finished: present but incomplete
  arrays, meta = js.io.load_result(os.path.join(out, "part-0000-of-0004"))
  meta["config"]["part"] = [1, 4]
  arrays["done"] = np.zeros((5, 5), bool)
  js.io.save_result(os.path.join(out, "part-0001-of-0004"), arrays, meta)
  with pytest.raises(ValueError, match=r"1 of 4 parts incomplete: part-0001-of-0004 \(0 of 6 points done\)"):
    js.merge_surfaces(out)
  js.loss_surface(obj, p, dirs, part=(1, 4), out_dir=out, **grid)  # resumes the incomplete part
  assert js.merge_surfaces(out).num_nonfinite == 0
  js.loss_surface(obj, p, dirs, x=(-1, 1, 5), y=(-2, 2, 5), quiet=True, chunk_size=8, part=(2, 4), out_dir=str(tmp_path / "other"))
  with pytest.raises(ValueError, match="another config.*axes"):
    js.merge_surfaces([os.path.join(out, f"part-000{i}-of-0004") for i in (0, 1, 3)] + [str(tmp_path / "other" / "part-0002-of-0004")])
  with pytest.raises(ValueError, match="part count 26 exceeds the 25 grid points"):
    js.loss_surface(obj, p, dirs, part=(0, 26), **grid)
  with pytest.raises(ValueError, match=r"0 <= index < count \(0-based\)"):
    js.loss_surface(obj, p, dirs, part=(4, 4), **grid)
  with pytest.raises(FileNotFoundError, match="no part directories"):
    js.merge_surfaces(str(tmp_path))


def test_resume_a_killed_part(tmp_path, monkeypatch):
  obj, p, dirs = _problem62()
  grid = dict(x=(-1, 1, 5), y=(-1, 1, 5), quiet=True, chunk_size=8, chunks_per_call=1)
  full = js.loss_surface(obj, p, dirs, **grid)
  _kill_after(monkeypatch, 1)
  out = str(tmp_path / "split")
  with pytest.raises(Killed):
    js.loss_surface(obj, p, dirs, part=(0, 2), out_dir=out, **grid)  # 13 points: 2 calls of 8
  monkeypatch.undo()
  with np.load(os.path.join(out, "part-0000-of-0002", "results.npz")) as f:
    assert f["done"].sum() == 8
  resumed = js.loss_surface(obj, p, dirs, part=(0, 2), out_dir=out, **grid)
  assert resumed.meta["points_evaluated"] == 5
  js.loss_surface(obj, p, dirs, part=(1, 2), out_dir=out, **grid)
  np.testing.assert_array_equal(js.merge_surfaces(out).loss, full.loss)


# ----------------------------------------------------------------------------- keys and pre-flight


def test_preflight_traces_the_model_once(problem):
  obj, p, dirs = problem
  traced = []

  def apply(q, x):  # a fresh function: nothing cached from other tests
    traced.append(1)
    return _mlp(q, x)

  rng = np.random.default_rng(0)  # the problem's data
  x, y = rng.normal(size=(50, 6)).astype(np.float32), rng.integers(0, 3, 50)
  fresh = js.Objective.from_apply(apply, p, data=(x, y), batch_size=16)
  traced.clear()  # the constructor's own check ran the model once
  surf = js.loss_surface(None, fresh, p, dirs, x=(-1, 1, 5), y=(-1, 1, 3), quiet=True)
  # Measured: 7 traces before the pre-flight checks shared their work (chunk-size probe, output names, origin
  # loss, evaluator); now 3: one for the probe and the origin loss together (one jitted batch function), two in the
  # evaluator (its scan's first batch and its body), whose trace also gave the output names.
  assert len(traced) <= 3, len(traced)
  np.testing.assert_array_equal(surf.loss, js.loss_surface(obj, p, dirs, x=(-1, 1, 5), y=(-1, 1, 3), quiet=True).loss)


def test_key_first_and_the_older_call_give_the_same_surface(problem):
  obj, p, dirs = problem
  grid = dict(x=(-1, 1, 3), y=(-1, 1, 3), curvature="full", lanczos_steps=3, trace_probes=2, quiet=True)
  key = jax.random.key(4)
  first = js.loss_surface(key, obj, p, dirs, **grid)
  older = js.loss_surface(obj, p, dirs, key=key, **grid)
  by_name = js.loss_surface(key=key, objective=obj, params=p, directions=dirs, **grid)
  for k in ("loss", "lambda_max", "trace"):
    np.testing.assert_array_equal(first.to_arrays()[k], older.to_arrays()[k])
    np.testing.assert_array_equal(first.to_arrays()[k], by_name.to_arrays()[k])
  assert first.meta["config"]["curvature"]["key"] == js.io.key_record(key)
  plain = dict(x=(-1, 1, 3), quiet=True)
  np.testing.assert_array_equal(js.loss_surface(None, obj, p, [dirs[0]], **plain).loss,
                                js.loss_surface(obj, p, [dirs[0]], **plain).loss)
  np.testing.assert_array_equal(js.loss_surface(objective=obj, params=p, directions=[dirs[0]], **plain).loss,
                                js.loss_surface(obj, p, [dirs[0]], **plain).loss)


def test_random_work_without_a_key_is_an_error_not_a_default_key(problem):
  obj, p, dirs = problem
  grid = dict(x=(-1, 1, 3), y=(-1, 1, 3), quiet=True)
  for call in (lambda: js.loss_surface(None, obj, p, dirs, curvature="full", **grid),
               lambda: js.loss_surface(obj, p, dirs, curvature="full", **grid),
               lambda: js.loss_surface(None, obj, p, dirs, curvature="full", warm_start=2, **grid)):
    with pytest.raises(ValueError, match="needs key"):
      call()
  # the plane map uses no randomness: no key needed, and none is recorded
  plane = js.loss_surface(None, obj, p, dirs, curvature="plane", **grid)
  assert plane.meta["config"]["curvature"]["key"] is None
