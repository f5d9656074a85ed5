"""The ``jaxscape`` command line."""

import json
import os

import numpy as np
import pytest

from jaxscape import cli


def test_surface_demo_then_replot(tmp_path, capsys):
  out = str(tmp_path / "demo")
  assert cli.main(["surface", "--demo", "--demo-epochs", "2", "--x=-1:1:5", "--y=-1:1:3", "--out", out, "--quiet", "--vtk"]) == 0
  for name in ("results.npz", "meta.json", "contour.png", "surface3d.png", "surface.vtk"):
    assert os.path.isfile(os.path.join(out, name)), name
  with open(os.path.join(out, "meta.json")) as f:
    meta = json.load(f)
  assert meta["config"]["directions"]["norm"] == "filter" and meta["config"]["directions"]["ignore"] == "biasbn"
  assert meta["config"]["source"] == {"demo": True, "seed": 0}
  with np.load(os.path.join(out, "results.npz")) as f:
    assert f["loss"].shape == (3, 5) and f["done"].all()
  os.remove(os.path.join(out, "contour.png"))
  assert cli.main(["plot", out, "--log"]) == 0
  assert os.path.isfile(os.path.join(out, "contour.png"))
  assert "contour.png" in capsys.readouterr().out


def test_cli_errors_are_clear(tmp_path, capsys):
  assert cli.main(["plot", str(tmp_path / "missing")]) == 2
  assert "results.npz" in capsys.readouterr().err
  assert cli.main(["surface", "--demo", "--demo-epochs", "1", "--x=-1:1", "--out", str(tmp_path / "o"), "--quiet"]) == 2
  assert "start:stop:num" in capsys.readouterr().err
  with pytest.raises(SystemExit):
    cli.main(["surface"])  # needs --checkpoint or --demo


def test_surface_curvature_warm_start_flag_reaches_the_library(tmp_path, monkeypatch):
  import jax.numpy as jnp

  import jaxscape as js
  from jaxscape import surface

  x = np.random.default_rng(0).normal(size=(8, 2)).astype(np.float32)
  obj = js.Objective.from_apply(lambda p, x: x @ p["w"], data=(x, x[:, 0]), loss="mse")
  monkeypatch.setattr(cli, "_source", lambda args: (None, None, {"demo": True}))  # no demo training
  monkeypatch.setattr(cli, "_objective", lambda *a: (obj, {"w": jnp.ones(2)}))
  seen = {}

  def fake(*args, **kwargs):
    seen.update(kwargs)
    raise ValueError("stop")

  monkeypatch.setattr(surface, "loss_surface", fake)
  base = ["surface", "--demo", "--x=-1:1:3", "--out", str(tmp_path / "w"), "--quiet", "--curvature", "full"]
  assert cli.main(base + ["--curvature-warm-start", "3"]) == 2
  assert seen["warm_start"] == 3 and seen["curvature"] == "full"
  assert cli.main(base) == 2 and seen["warm_start"] is None


def test_surface_directions_flag_picks_hessian_eigenvectors(tmp_path, monkeypatch):
  import jax.numpy as jnp

  import jaxscape as js
  from jaxscape import surface

  x = np.diag([1.0, 2.0, 3.0]).astype(np.float32)
  obj = js.Objective.from_apply(lambda p, x: x @ p["w"], data=(x, np.zeros(3, np.float32)), loss="mse")
  monkeypatch.setattr(cli, "_source", lambda args: (None, None, {"demo": True}))  # no demo training
  monkeypatch.setattr(cli, "_objective", lambda *a: (obj, {"w": jnp.ones(3)}))
  seen = []

  def fake(obj, params, dirs, **kwargs):
    seen.append(dirs)
    raise ValueError("stop")

  monkeypatch.setattr(surface, "loss_surface", fake)
  base = ["surface", "--demo", "--x=-1:1:3", "--y=-1:1:3", "--out", str(tmp_path / "d"), "--quiet"]
  assert cli.main(base + ["--directions", "hessian"]) == 2
  info = seen[-1].info
  assert info["kind"] == "hessian" and info["which"] == "largest" and info["norm"] == "none" and info["ignore"] is None
  np.testing.assert_allclose(info["eigenvalues"], [6.0, 8 / 3], rtol=1e-4)  # H = (2/3) diag(1, 4, 9)
  assert cli.main(base + ["--directions", "hessian", "--which", "smallest", "--norm", "model"]) == 2
  np.testing.assert_allclose(seen[-1].info["eigenvalues"], [2 / 3, 8 / 3], rtol=1e-4)
  assert seen[-1].info["norm"] == "model"
  assert cli.main(base) == 2
  assert seen[-1].info["kind"] == "random" and seen[-1].info["norm"] == "filter" and seen[-1].info["ignore"] == "biasbn"


def test_hessian_command(tmp_path, capsys):
  out = str(tmp_path / "h")
  argv = ["hessian", "--demo", "--demo-epochs", "2", "--top-k", "2", "--bottom-k", "1", "--lanczos-steps", "40",
          "--trace", "--trace-rtol", "0.2", "--density", "--density-steps", "20", "--density-probes", "2", "--out", out]
  assert cli.main(argv) == 0
  with np.load(os.path.join(out, "results.npz")) as f:
    top, bottom = f["largest_values"], f["smallest_values"]
    assert top.shape == (2,) and bottom.shape == (1,) and top[0] >= top[1] >= bottom[0]
    assert f["largest_residuals"].shape == (2,)
    assert abs(np.trapezoid(f["density"], f["density_grid"]) - 1.0) < 1e-2
    assert f["trace_stderr"] > 0 and f["trace_ci95"] > 2 * f["trace_stderr"]
    certified = [int(np.sum(f[f"{w}_converged"])) for w in ("largest", "smallest")]
  for name in ("density.png", "density_log.png", "meta.json"):
    assert os.path.isfile(os.path.join(out, name))
  with open(os.path.join(out, "meta.json")) as fh:
    meta = json.load(fh)
  printed = capsys.readouterr().out
  assert f"largest 2 (certified {certified[0]}/2):" in printed and f"smallest 1 (certified {certified[1]}/1):" in printed
  assert [meta["largest_certified"], meta["smallest_certified"]] == certified
  # the trace line says whether the SE target was met, as meta.json does
  assert meta["trace_method"] == "hutch++" and meta["trace_rtol"] == 0.2
  assert ("converged: SE" in printed) == meta["trace_converged"] and "95 % interval" in printed
  # a target the probe cap cannot reach: printed as NOT converged, recorded so
  assert cli.main(["hessian", "--demo", "--demo-epochs", "2", "--top-k", "0", "--trace", "--trace-rtol", "1e-6",
                   "--out", out + "2"]) == 0
  printed = capsys.readouterr().out
  with open(os.path.join(out + "2", "meta.json")) as fh:
    assert json.load(fh)["trace_converged"] is False
  assert "NOT converged: SE" in printed and "> 0.0001 %" in printed
  assert cli.main(["hessian", "--demo", "--demo-epochs", "1", "--top-k", "0", "--out", out]) == 2


def test_surface_with_curvature_maps(tmp_path):
  out = str(tmp_path / "c")
  assert cli.main(["surface", "--demo", "--demo-epochs", "2", "--x=-1:1:3", "--y=-1:1:3", "--curvature", "plane",
                   "--out", out, "--quiet"]) == 0
  with np.load(os.path.join(out, "results.npz")) as f:
    assert f["h_xx"].shape == (3, 3) and np.isfinite(f["plane_lambda_min"]).all()
  assert os.path.isfile(os.path.join(out, "heatmap_plane_lambda_min.png"))


def test_train_then_surface_and_hessian_from_checkpoints(tmp_path, capsys):
  import jax

  from jaxscape import checkpoint
  from jaxscape.objective import Objective

  runs = []
  for seed in (1, 2):
    out = str(tmp_path / f"train{seed}")
    assert cli.main(["train", "--model", "mlp", "--widths", "8", "--batch-norm", "--dataset", "digits", "--num-train", "64",
                     "--num-test", "32", "--epochs", "2", "--batch-size", "32", "--optimizer", "adam", "--lr", "0.01",
                     "--seed", str(seed), "--out", out]) == 0
    runs.append(out)
  surf_dir = str(tmp_path / "surf")
  assert cli.main(["surface", "--checkpoint", runs[0], "--x=-1:1:3", "--y=-1:1:3", "--out", surf_dir, "--quiet"]) == 0
  line_dir = str(tmp_path / "line")
  assert cli.main(["surface", "--checkpoint", runs[0], "--checkpoint2", runs[1], "--x=0:1:2", "--out", line_dir, "--quiet"]) == 0
  losses = []
  for run in runs:
    model, _ = checkpoint.load_model(run)
    obj, params = Objective.from_model(model, data=checkpoint.load_dataset(run).train)
    losses.append(float(jax.jit(obj.value)(params)))
  with np.load(os.path.join(surf_dir, "results.npz")) as f:
    np.testing.assert_allclose(f["loss"][1, 1], losses[0], rtol=1e-5)  # the origin is checkpoint A
  with np.load(os.path.join(line_dir, "results.npz")) as f:
    np.testing.assert_allclose(f["loss"], losses, rtol=1e-5)  # A at 0, B at 1 (BN statistics interpolated)
  with open(os.path.join(line_dir, "meta.json")) as f:
    meta = json.load(f)
  assert meta["config"]["directions"]["kind"] == "interpolation" and meta["config"]["source"]["checkpoint2"].endswith("train2")
  assert cli.main(["hessian", "--checkpoint", runs[0], "--top-k", "1", "--out", str(tmp_path / "h")]) == 0
  assert "largest 1 (certified " in capsys.readouterr().out
