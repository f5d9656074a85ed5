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
