"""Command line and experiment runner."""

import importlib
import json
import os
import pkgutil

import numpy as np
import pytest

import experiments
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


EXPERIMENTS = sorted(m.name for m in pkgutil.iter_modules(experiments.__path__))


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_smoke(name, tmp_path):
  module = importlib.import_module(f"experiments.{name}")
  assert {"smoke", "cpu", "full"} <= set(module.CONFIGS)
  out = str(tmp_path / name)
  assert cli.run_experiment(module, ["--preset", "smoke", "--out", out, "--seed", "1"]) == 0
  with open(os.path.join(out, "report.md")) as f:
    report = f.read()
  assert report.startswith(f"# {name}: ") and ("PASS" in report.splitlines()[0] or "FAIL" in report.splitlines()[0])
  assert "seed 1" in report
  with open(os.path.join(out, "config.json")) as f:
    assert json.load(f)["seed"] == 1
  assert os.path.isfile(os.path.join(out, "results.npz")) and os.path.isfile(os.path.join(out, "meta.json"))
  assert any(f.endswith(".png") for f in os.listdir(out))


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
    assert f["trace_stderr"] > 0
  for name in ("density.png", "density_log.png", "meta.json"):
    assert os.path.isfile(os.path.join(out, name))
  assert "largest 2:" in capsys.readouterr().out
  assert cli.main(["hessian", "--demo", "--demo-epochs", "1", "--top-k", "0", "--out", out]) == 2


def test_surface_with_curvature_maps(tmp_path):
  out = str(tmp_path / "c")
  assert cli.main(["surface", "--demo", "--demo-epochs", "2", "--x=-1:1:3", "--y=-1:1:3", "--curvature", "plane",
                   "--out", out, "--quiet"]) == 0
  with np.load(os.path.join(out, "results.npz")) as f:
    assert f["h_xx"].shape == (3, 3) and np.isfinite(f["plane_lambda_min"]).all()
  assert os.path.isfile(os.path.join(out, "heatmap_plane_lambda_min.png"))
