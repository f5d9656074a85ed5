"""Interactive HTML views: self-contained and offline, written by `jaxscape plot --html` and linked from reports,
and rendered by a real browser (headless Chromium)."""

import os
import shutil
import subprocess

import numpy as np
import pytest

from jaxscape import cli, plot
from jaxscape.surface import Surface


def _surface(ndim=2):
  x = np.linspace(-1, 1, 9)
  loss = np.add.outer(x**2, 0.5 * x**2) + 0.1 if ndim == 2 else x**2 + 0.1
  meta = {"config": {"kind": "surface", "directions": {"kind": "random", "norm": "filter"},
                     "objective": {"dataset": "digits-train", "loss": "cross_entropy"}}}
  return Surface((x, x) if ndim == 2 else (x,), loss, {}, 0, meta)


def test_html_is_offline_and_self_contained(tmp_path):
  path = plot.html(_surface(), str(tmp_path / "a.html"))
  with open(path, encoding="utf-8") as f:
    text = f.read()
  assert "cdn.plot.ly" not in text and "https://cdn" not in text  # no network needed to open it
  assert 'src="plotly.min.js"' in text and os.path.getsize(tmp_path / "plotly.min.js") > 1_000_000
  assert "random, filter-normalised" in text  # the axes are named as on the PNG figures
  os.makedirs(tmp_path / "inline")
  inline = plot.html(_surface(1), str(tmp_path / "inline" / "b.html"), plotlyjs="inline")
  with open(inline, encoding="utf-8") as f:
    assert "<script src=" not in f.read()
  with pytest.raises(ValueError, match="plotlyjs must be"):
    plot.html(_surface(), str(tmp_path / "c.html"), plotlyjs="cdn")


def _chromium() -> str | None:
  found = shutil.which("chromium") or shutil.which("chromium-browser")
  if found or os.geteuid() != 0 or not shutil.which("apt-get"):
    return found
  env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
  subprocess.run(["apt-get", "install", "-y", "-q", "chromium"], capture_output=True, env=env, timeout=900)
  return shutil.which("chromium")


def test_the_html_renders_in_headless_chromium(tmp_path, capsys):
  browser = _chromium()
  if browser is None:
    pytest.skip("no Chromium here and it could not be installed (needs root and Debian's apt-get with network)")
  out = str(tmp_path / "run")
  from jaxscape import io as jio

  jio.save(_surface(), out)
  assert cli.main(["plot", out, "--html"]) == 0
  page = os.path.join(out, "surface.html")
  assert page in capsys.readouterr().out
  shot = str(tmp_path / "shot.png")
  subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--enable-unsafe-swiftshader",
                  "--use-angle=swiftshader", "--hide-scrollbars", "--window-size=1150,560",
                  "--virtual-time-budget=5000", f"--screenshot={shot}", f"file://{page}"],
                 capture_output=True, timeout=120)
  import matplotlib.image

  pixels = matplotlib.image.imread(shot)[..., :3]
  coloured = np.mean(np.ptp(pixels, axis=-1) > 0.15)  # saturated (plotted) pixels, not white or grey
  assert coloured > 0.05, f"the page rendered blank: {coloured:.3f} of the pixels are coloured"
  os.remove(os.path.join(out, "plotly.min.js"))  # the check can fail: without the script the page is blank
  subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--window-size=1150,560",
                  "--virtual-time-budget=3000", f"--screenshot={shot}", f"file://{page}"], capture_output=True,
                 timeout=120)
  assert np.mean(np.ptp(matplotlib.image.imread(shot)[..., :3], axis=-1) > 0.15) < 0.01


def test_an_experiment_report_links_the_interactive_views_of_its_surfaces(tmp_path):
  from jaxscape import io as jio

  out = str(tmp_path / "run")
  jio.save(_surface(), out)  # a run that saved surfaces in its directory and in a subdirectory
  jio.save(_surface(1), os.path.join(out, "line"))
  assert plot.html_views(out) == ["html/surface.html", "html/line.html"]
  assert os.path.isfile(os.path.join(out, "html", "plotly.min.js")) and not any(
      n.startswith(".") for n in os.listdir(os.path.join(out, "html")))
