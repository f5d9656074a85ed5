"""The experiment harness: reports, dataset specs, running every experiment at its smoke preset."""

import html.parser
import importlib
import json
import os
import pkgutil
import urllib.parse

import numpy as np
import pytest

import experiments
from jaxscape import data, experiment, plot
from jaxscape.experiment import Report, fmt, table


def test_report_verdict_and_rendering():
  r = Report("demo", claim="The origin is a minimum.", seed=3, preset="smoke")
  assert r.verdict == "FAIL"  # no checks: nothing was shown
  assert r.check("origin is the grid minimum", True, "0.1 <= 0.2")
  assert not r.check("second", np.bool_(False), "1 > 0")
  r.figure("a.png", "the surface")
  r.section("Numbers", table(["x", "y"], [(1, 0.5)]))
  r.notes.append("a note")
  text = r.render()
  assert r.verdict == "FAIL" and text.startswith("# demo: FAIL")
  assert "Preset `smoke`, seed 3." in text and "| second | FAIL | 1 > 0 |" in text
  assert "![the surface](a.png)" in text and "| 1 | 0.5 |" in text and "- a note" in text


def test_fmt():
  assert fmt(True) == "yes" and fmt(np.int64(3)) == "3" and fmt("s") == "s"
  assert fmt(0.5) == "0.5" and fmt(1e-5) == "1.000e-05" and fmt(2e6) == "2.000e+06" and fmt(0.0) == "0"
  assert fmt(float("inf")) == "inf" and fmt(float("nan")) == "nan"


def test_load_dataset_built_in_ignores_data_dir():
  ds = experiment.load_dataset({"name": "digits", "flatten": True}, "/nonexistent")
  ref = data.load("digits", flatten=True)
  np.testing.assert_array_equal(ds.train[0], ref.train[0])


@pytest.mark.parametrize("data_dir", [None, "", "/nonexistent/jaxscape"])
def test_load_dataset_on_disk_needs_an_existing_data_dir(data_dir):
  with pytest.raises(FileNotFoundError, match=r"'mnist'.*--data-dir.*IDX.*DIR/mnist/"):
    experiment.load_dataset({"name": "mnist", "subdir": "mnist", "flatten": True}, data_dir)


def test_load_dataset_reads_the_subdir(tmp_path):
  with pytest.raises(FileNotFoundError, match="mnist"):  # data.load's own message, in DIR/mnist
    experiment.load_dataset({"name": "mnist", "subdir": "mnist"}, str(tmp_path))
  (tmp_path / "mnist").mkdir()
  with pytest.raises(FileNotFoundError, match=str(tmp_path / "mnist")):
    experiment.load_dataset({"name": "mnist", "subdir": "mnist"}, str(tmp_path))


class _Gallery(html.parser.HTMLParser):
  """The rows of index.html: per row its cells' text, link targets, image sources/widths and verdict classes."""

  def __init__(self):
    super().__init__()
    self.rows, self.head_links = [], []

  def handle_starttag(self, tag, attrs):
    attrs = dict(attrs)
    if tag == "tr":
      self.rows.append({"text": "", "links": [], "images": [], "classes": []})
    elif self.rows and tag == "a":
      self.rows[-1]["links"].append(attrs["href"])
    elif self.rows and tag == "img":
      self.rows[-1]["images"].append((attrs["src"], attrs.get("width")))
    elif self.rows and tag == "span":
      self.rows[-1]["classes"].append(attrs.get("class", ""))
    elif tag in ("script", "link"):
      self.head_links.append(tag)

  def handle_data(self, data):
    if self.rows:
      self.rows[-1]["text"] += data + " "


def _fake_runs(tmp_path):
  """Two runs of the harness's layout (one with a figure and a view, one without) and a directory without a report."""
  good = tmp_path / "demo-smoke"
  (good / "html").mkdir(parents=True)
  plot.plt.imsave(str(good / "surface.png"), np.eye(4))  # a real (tiny) PNG
  (good / "html" / "surface.html").write_text("<html></html>")
  report = Report("demo", claim="c", seed=3, preset="smoke")
  report.check("holds", True, "1 < 2")
  report.figure("missing.png", "a figure the run did not write: skipped")
  report.figure("surface.png", "the surface | with a pipe & <angle>")
  report.section("Interactive figures", "Open: [surface](html/surface.html), [gone](html/gone.html)")
  (good / "report.md").write_text(report.render())
  (good / "config.json").write_text(json.dumps({"preset": "smoke", "seed": 3}))
  bad = tmp_path / "a<b>-cpu"  # no figure, no config.json: preset and seed come from the report's header
  bad.mkdir()
  failed = Report("a<b>", claim="c", seed=7, preset="cpu")
  failed.check("holds", False, "2 > 1")
  (bad / "report.md").write_text(failed.render())
  (tmp_path / "unfinished").mkdir()  # no report: no row
  return good, bad


def test_write_index_gallery(tmp_path):
  good, bad = _fake_runs(tmp_path)
  path = experiment.write_index(str(tmp_path))
  assert path == str(tmp_path / "index.md")
  with open(tmp_path / "index.html") as f:
    page = f.read()
  parser = _Gallery()
  parser.feed(page)
  assert parser.head_links == [] and "http" not in page  # self-contained: no script, no stylesheet, no CDN
  header, *rows = parser.rows
  assert len(rows) == 2  # sorted by directory: "a<b>-cpu" then "demo-smoke"; "unfinished" has no report
  failed, passed = rows
  assert "a&lt;b&gt;" in page and "<b>" not in page  # names are escaped
  assert failed["classes"] == ["verdict fail"] and "FAIL" in failed["text"] and "cpu" in failed["text"]
  assert " 7 " in failed["text"] and failed["images"] == []
  assert passed["classes"] == ["verdict pass"] and " 3 " in passed["text"] and "smoke" in passed["text"]
  assert passed["images"] == [("demo-smoke/surface.png", "240")]  # the first linked figure that exists
  assert passed["links"] == ["demo-smoke/report.md", "demo-smoke/surface.png", "demo-smoke/html/surface.html"]
  for row in rows:
    for target in row["links"] + [src for src, _ in row["images"]]:
      assert (tmp_path / urllib.parse.unquote(target)).is_file(), target
  assert failed["links"] == ["a%3Cb%3E-cpu/report.md"]

  with open(tmp_path / "index.md") as f:
    md = f.read().splitlines()
  assert md[:2] == ["# jaxscape runs", ""] and md[2].startswith("| run | experiment | preset | seed | verdict |")
  assert len(md) == 6 and all(line.count(" | ") == 6 for line in md[4:])  # a pipe in a caption does not split a cell
  assert md[4].startswith(r"| [a\<b\>-cpu](a%3Cb%3E-cpu/report.md) | a\<b\> | cpu | 7 | **FAIL** | - | - |")
  assert '[<img src="demo-smoke/surface.png" width="240"' in md[5] and "(demo-smoke/html/surface.html)" in md[5]
  assert "gone" not in md[5]


def test_write_index_without_runs(tmp_path):
  experiment.write_index(str(tmp_path))
  assert (tmp_path / "index.md").read_text() == "# jaxscape runs\n\nNo runs yet.\n"
  assert "No runs yet." in (tmp_path / "index.html").read_text()


EXPERIMENTS = sorted(m.name for m in pkgutil.iter_modules(experiments.__path__) if not m.name.startswith("_"))


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_smoke(name, tmp_path):
  module = importlib.import_module(f"experiments.{name}")
  assert {"smoke", "cpu", "full"} <= set(module.CONFIGS)
  out = str(tmp_path / name)
  assert experiment.run(module, ["--preset", "smoke", "--out", out, "--seed", "1"], html_views=plot.html_views) == 0
  with open(os.path.join(out, "report.md")) as f:
    report = f.read()
  assert report.startswith(f"# {name}: ") and ("PASS" in report.splitlines()[0] or "FAIL" in report.splitlines()[0])
  assert "seed 1" in report
  with open(os.path.join(out, "config.json")) as f:
    assert json.load(f)["seed"] == 1
  assert os.path.isfile(os.path.join(out, "results.npz")) and os.path.isfile(os.path.join(out, "meta.json"))
  assert any(f.endswith(".png") for f in os.listdir(out))
  if os.path.isdir(os.path.join(out, "html")):  # the report links the interactive views it wrote
    assert "## Interactive figures" in report and "(html/" in report


def test_full_preset_without_data_dir_is_a_one_line_error(capsys):
  module = importlib.import_module("experiments.interpolation")
  if "full" not in module.CONFIGS:
    pytest.fail("interpolation has no full preset")
  assert experiment.run(module, ["--preset", "full", "--out", "/tmp/jaxscape-no-data"]) == 2
  err = capsys.readouterr().err
  assert "interpolation [full]: error:" in err and "Traceback" not in err


def test_mean_std_of_a_seed_summary():
  from jaxscape import stats

  sm = stats.seed_summary([{"a": 1.0, "b": 2.0}, {"a": 3.0}])
  assert experiment.mean_std(sm, "a") == "2.000 ± 1.414" and experiment.mean_std(sm, "b", 1) == "2.0"
  assert experiment.mean_std(sm, "c") == "-"


def test_seed_surface_arrays_stacks_surfaces_ratios_and_histories():
  import types

  from jaxscape.surface import Surface

  x = np.linspace(-1, 1, 3)
  surf = lambda v: Surface((x, x), np.full((3, 3), v), {"accuracy": np.zeros((3, 3))}, 0, {})  # noqa: E731
  ratio = Surface((x, x), np.ones((3, 3)), {"convexity_ratio": np.full((3, 3), 0.5)}, 0, {})
  hist = types.SimpleNamespace(train_loss=np.ones((2, 4)), train_accuracy=np.ones((2, 4)), test_loss=np.ones((2, 4)),
                               test_accuracy=np.ones((2, 4)))
  out = experiment.seed_surface_arrays("m_", {"surfaces": [surf(1.0), surf(2.0)], "ratios": [ratio], "history": hist},
                                       maps=("accuracy",), ratio_maps=("convexity_ratio",))
  assert sorted(out) == ["m_accuracy", "m_history_test_accuracy", "m_history_test_loss", "m_history_train_accuracy",
                         "m_history_train_loss", "m_loss", "m_ratio_convexity_ratio", "m_ratio_x", "m_x", "m_y"]
  assert out["m_loss"].shape == (2, 3, 3) and out["m_loss"][1, 0, 0] == 2.0 and out["m_ratio_convexity_ratio"].shape == (1, 3, 3)


def test_stack_surfaces_stacks_a_map_over_the_surfaces_that_hold_it():
  from jaxscape.surface import Surface

  x = np.linspace(-1, 1, 3)
  with_plane = Surface((x, x), np.zeros((3, 3)), {"plane_lambda_min": np.full((3, 3), -1.0)}, 0, {})
  loss_only = Surface((x, x), np.ones((3, 3)), {}, 0, {})
  out = experiment.stack_surfaces("m_", [with_plane, loss_only, loss_only], ("plane_lambda_min", "h_xx"))
  assert sorted(out) == ["m_loss", "m_plane_lambda_min", "m_x", "m_y"]
  assert out["m_loss"].shape == (3, 3, 3) and out["m_plane_lambda_min"].shape == (1, 3, 3)


def test_seed_surfaces_gives_plane_curvature_to_the_first_plane_seeds_runs_only():
  import jax

  from jaxscape import models

  ds = data.load("digits", flatten=True, num_train=64, num_test=32)
  init = lambda k: models.build("mlp", k, in_features=64, widths=[4], out_features=10)  # noqa: E731
  out = experiment.seed_surfaces(jax.random.key(0), init, ds, {"batch_size": 32, "epochs": 1}, seeds=2, grid=3,
                                 plane_seeds=1)
  assert ["plane_lambda_min" in s.metrics for s in out["surfaces"]] == [True, False]
  assert ["nonconvex_fraction" in r for r in out["seeds"]] == [True, False]
  assert all("fd_nonconvex_fraction" in r for r in out["seeds"]) and out["summary"]["nonconvex_fraction"]["count"] == 1


def test_regime_study_pairs_runs_and_measures_every_solution():
  import jax

  from jaxscape import models

  ds = data.load("digits", flatten=True, num_train=64, num_test=32)
  init = lambda k: models.build("mlp", k, in_features=64, widths=[8], out_features=10)  # noqa: E731
  regimes = {"sb": {"batch_size": 16, "epochs": 1}, "lb": {"batch_size": None, "steps": 2, "runs": "sequential"}}
  out = experiment.regime_study(jax.random.key(0), init, ds, regimes, seeds=2, alpha=np.linspace(-1.0, 2.0, 4),
                                measures={"eps": [1e-3], "subspace_dim": 3, "lanczos_steps": 3, "maxiter": 1,
                                          "sign_steps": 1, "num_starts": 1, "num_corners": 1},
                                eval_batch_size=64, optimizer="adam", learning_rate=1e-3)
  a = out["arrays"]
  assert out["steps"] == {"sb": 4, "lb": 2} and a["sb_phi_full"].shape == (2, 1) and a["lb_lam_max"].shape == (2,)
  assert a["line_train_loss"].shape == (2, 4) and np.all(a["sb_distance"] > 0)
  # the line starts at the SB solution and ends at the LB one (BN-free net: the state does not matter)
  np.testing.assert_allclose(a["line_train_loss"][:, 1], a["sb_train_loss"], rtol=1e-5)
  np.testing.assert_allclose(a["line_test_acc"][:, 2], a["lb_test_acc"], rtol=1e-5)
  assert set(out["timing"]) == {"train_sb_s", "train_lb_s", "measure_s", "line_s"}


def test_train_sizes_trains_every_size_and_keeps_final_metrics():
  import jax

  from jaxscape import models

  ds = data.load("digits", flatten=True, num_train=64, num_test=32)
  init = lambda h, k: models.build("mlp", k, in_features=64, widths=[h], out_features=10)  # noqa: E731
  out = experiment.train_sizes(jax.random.key(0), init, [2, 4], ds, {"optimizer": "sgd", "learning_rate": 0.05,
                                                                     "batch_size": 32, "epochs": 1}, seeds=3)
  assert out["test_loss"].shape == (2, 3) and out["params"].tolist() == [64 * 2 + 2 + 2 * 10 + 10, 64 * 4 + 4 + 4 * 10 + 10]
  assert np.all(np.isfinite(out["train_loss"])) and np.all((out["test_accuracy"] >= 0) & (out["test_accuracy"] <= 1))


def _seed_surface_study(train_accuracy=0.9, nonfinite=0):
  from jaxscape import stats

  rows = [{"train_loss": 0.1, "train_accuracy": train_accuracy, "test_accuracy": 0.8, "origin_loss": 0.1,
           "fd_nonconvex_fraction": 0.25, "nonconvex_fraction": 0.5, "max_loss": 3.0, "log10_max_loss": 0.48,
           "num_nonfinite": nonfinite}, {"train_loss": 0.2, "train_accuracy": 0.95, "test_accuracy": 0.9,
           "origin_loss": 0.2, "max_loss": 5.0, "log10_max_loss": 0.7, "num_nonfinite": 0}]
  return {"seeds": rows, "summary": stats.seed_summary(rows), "num_params": 42, "train_s": 1.0, "surface_s": 2.0}


def test_seed_surface_tables_and_notes():
  studies = {("MLP", "plain", 4): _seed_surface_study(0.1, nonfinite=3), ("MLP", "residual", 4): _seed_surface_study()}
  st = experiment.seed_surface_statistics(studies, ["family", "variant", "depth"]).splitlines()
  assert len(st) == 4 and st[0].startswith("| family | variant | depth | params | seeds | test acc |")
  assert st[2] == "| MLP | plain | 4 | 42 | 2 | 0.8500 ± 0.0707 | 0.250 | 0.500 | 0.59 ± 0.16 | 5 | 3 | - | - | 1 | 2 |"
  runs = experiment.seed_surface_runs(studies, ["family", "variant", "depth"]).splitlines()
  assert len(runs) == 2 + 4 and "| MLP | residual | 4 | 1 | 0.2 |" in runs[5] and runs[5].endswith("| 5 | nan |")
  notes = experiment.seed_surface_notes({("MLP", "plain", "depth 4"): studies[("MLP", "plain", 4)]})
  assert notes[0].startswith("MLP plain depth 4 seed 0 did not train") and notes[1].startswith(
      "Non-finite grid losses over all surfaces: 3 ")


def test_variant_surfaces_pairs_the_variants_of_one_size(monkeypatch):
  import jax

  calls = []
  monkeypatch.setattr(experiment, "seed_surfaces", lambda key, init, ds, cfg, **kw: calls.append(
      (jax.random.key_data(key).tolist(), init.keywords, kw)) or len(calls))
  build = lambda key, **kw: None  # noqa: E731
  out = experiment.variant_surfaces(jax.random.key(0), build, {"plain": {"skips": False}, "res": {"skips": True}},
                                    [2, 8], None, {}, seeds=3)
  assert list(out) == [("plain", 2), ("res", 2), ("plain", 8), ("res", 8)] and out[("res", 8)] == 4
  assert calls[0][0] == calls[1][0] != calls[2][0] and calls[3][1] == {"depth": 8, "skips": True}
  assert calls[0][2] == {"seeds": 3}


def test_report_note_failures_lists_the_failed_checks():
  r = Report("demo", claim="c", seed=1, preset="smoke")
  r.check("a", True, "")
  r.note_failures()
  assert r.notes == []
  r.check("b", False, "")
  r.note_failures()
  assert r.notes == ["Not reproduced at this scale (smoke preset, seed 1): b. Settings were fixed before running and "
                     "not tuned."]


def test_overrides_are_validated_against_the_preset_and_recorded(tmp_path, capsys):
  preset = {"grid": 21, "span": 1.0, "name": "a", "main": {"depths": [4, 16]}, "extra": [{"grid": 7}]}
  got = experiment.apply_overrides(preset, ["grid=31", "span=2", "main.depths=[4,8]", "extra.0.grid=9", "name=b"])
  assert got == {"grid": 31, "span": 2, "name": "b", "main": {"depths": [4, 8]}, "extra": [{"grid": 9}]}
  assert preset["grid"] == 21 and preset["extra"][0]["grid"] == 7  # the preset itself is untouched
  for bad, match in (("grd=3", r"no field 'grd' in the preset; expected one of \['extra', 'grid', 'main', 'name', 'span'\]"),
                     ("grid=2.5", r"preset's value is 21 \(int\); got 2.5 \(float\)"),
                     ("main.depths=4", "got 4"), ("extra.3.grid=1", "a list of 1 items"), ("grid", "KEY=VALUE")):
    with pytest.raises(ValueError, match=match):
      experiment.apply_overrides(preset, [bad])
  import experiments.surface_demo as module

  out = str(tmp_path / "demo")
  assert experiment.run(module, ["--preset", "smoke", "--out", out, "--set", "grid=3", "--set", "line=5"]) == 0
  with open(os.path.join(out, "config.json")) as f:
    config = json.load(f)
  assert config["grid"] == 3 and config["line"] == 5 and config["overrides"] == ["grid=3", "line=5"]
  with open(os.path.join(out, "report.md")) as f:
    assert "The smoke preset was overridden: grid=3, line=5" in f.read()
  assert experiment.run(module, ["--preset", "smoke", "--out", out, "--set", "gird=3"]) == 2
  assert "no field 'gird'" in capsys.readouterr().err


def test_seed_means_size_text_and_meta():
  studies = {("plain", 4): _seed_surface_study(0.1), ("plain", 8): _seed_surface_study()}
  means = experiment.seed_means(studies, "test_accuracy", ["plain"], [4, 8])
  ref = [np.mean([s["test_accuracy"] for s in studies[("plain", d)]["seeds"]]) for d in (4, 8)]
  np.testing.assert_allclose(means["plain"], ref, rtol=1e-12)  # the summary's mean is the plain mean over seeds
  assert np.isnan(experiment.seed_means(studies, "absent", ["plain"], [4])["plain"][0])
  assert experiment.size_text([4, 16], [0.1234, 1.0]) == "d4: 0.123, d16: 1.000"
  with pytest.raises(ValueError, match="one value per size"):
    experiment.size_text([4], [])
  meta = experiment.seed_surface_meta(studies)
  assert list(meta) == ["plain_d4", "plain_d8"] and sorted(meta["plain_d4"]) == sorted(
      ["seeds", "summary", "train_s", "surface_s", "num_params"])


def test_family_surfaces_reads_the_family_config(monkeypatch):
  seen = {}
  monkeypatch.setattr(experiment, "variant_surfaces", lambda key, build, variants, sizes, ds, train, **kw: seen.update(
      build=build, variants=variants, sizes=sizes, train=train, kw=kw) or "out")
  family = {"model": "mlp", "kwargs": {"in_features": 4}, "variants": {"a": {"x": 1}, "b": {"x": 2}}, "depths": [2],
            "train": {"epochs": 1}, **{k: 1 for k in ("seeds", "grid", "span", "eval_batch_size", "ratio_grid",
                                                       "ratio_seeds", "plane_seeds", "lanczos_steps", "trace_probes")}}
  assert experiment.family_surfaces(None, family, None, variants=["b", "a"], rel=0.5) == "out"
  assert list(seen["variants"]) == ["b", "a"] and seen["build"].args == ("mlp",) and seen["build"].keywords == {
      "in_features": 4}
  assert seen["kw"]["rel"] == 0.5 and seen["kw"]["grid"] == 1 and len(seen["kw"]) == 10
  with pytest.raises(ValueError, match=r"fields \['grid'\]"):
    experiment.family_surfaces(None, {k: v for k, v in family.items() if k != "grid"}, None, variants=["a"])
