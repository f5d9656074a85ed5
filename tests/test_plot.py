"""plot: every figure function draws on a new or a given axis and returns (fig, ax) (or a path)."""

import os
import types

import matplotlib.pyplot as plt
import numpy as np
import pytest

from jaxscape import newton, plot


@pytest.fixture(autouse=True)
def _close_figures():
  yield
  plt.close("all")


# --- figures: critical points, paths, test functions (experiments-b)


def test_panels_hides_unused_axes_and_titles_the_figure():
  fig, axes = plot.panels(5, cols=3, size=(2, 2), title="five")
  assert len(axes) == 5 and len(fig.axes) == 5
  np.testing.assert_allclose(fig.get_size_inches(), [6, 4])
  assert fig._suptitle.get_text() == "five"


def test_critical_points_marks_each_kind_and_the_known_points():
  x = y = np.linspace(-1, 1, 9)
  z = np.add.outer(y**2, -(x**2))
  pt = lambda x, kind: types.SimpleNamespace(x=x, kind=kind)
  fig, ax = plot.critical_points(x, y, z, [pt((0.0, 0.0), "saddle"), pt((0.5, 0.5), "minimum")],
                                 known=[pt((0.0, 0.0), "saddle")], title="t")
  labels = ax.get_legend_handles_labels()[1]
  assert labels == ["minimum (1)", "saddle (1)", "tabulated"] and ax.get_title() == "t"


def test_path_losses_draws_one_line_per_path_on_a_log_axis():
  fig, ax = plot.path_losses(np.linspace(0, 1, 5), np.ones((3, 5)), colors=["r", "g", "b"], labels=["a", "b", "c"])
  assert len(ax.lines) == 3 and ax.get_yscale() == "log"


def test_curvature_slice_marks_points_with_negative_plane_curvature():
  x = np.linspace(-1, 1, 5)
  lo = np.where(np.add.outer(x, x) > 0, -1.0, 1.0)
  surf = types.SimpleNamespace(x=x, y=x, ndim=2, loss=np.exp(np.add.outer(x**2, x**2)),
                               metrics={"plane_lambda_min": lo, "plane_lambda_max": np.full((5, 5), 2.0)})
  fig, ax = plot.curvature_slice(surf, rel=0.01, title="slice")
  assert len(ax.collections[-1].get_offsets()) == int(np.sum(lo < 0)) == 10
  with pytest.raises(ValueError, match="plane_lambda_min"):
    plot.curvature_slice(types.SimpleNamespace(x=x, y=x, ndim=2, loss=surf.loss, metrics={}))


def test_spectrum_and_signed_log_histogram():
  fig, ax = plot.spectrum(np.array([3.0, -1.0, 0.5]))
  np.testing.assert_allclose(ax.containers[0].markerline.get_ydata(), [-1.0, 0.5, 3.0])
  lam = np.array([-1.0, -1e-4, 0.0, 1e-4, 1.0])
  fig, ax = plot.signed_log_histogram(lam, bins=np.linspace(-5, 5, 11))
  assert sum(p.get_height() for p in ax.patches) == 5
  fig, ax = plot.signed_log_histogram([lam, lam], labels=["a", "b"], bins=10, ax=ax)
  assert ax.get_legend_handles_labels()[1] == ["a", "b"]


def test_loss_vs_index_adds_an_inset_when_points_crowd_the_bottom():
  loss = np.array([0.1, 0.11, 0.12, 0.13, 1.0, 2.0])
  fig, ax = plot.loss_vs_index(loss, np.linspace(0, 0.5, 6), color=np.arange(6), marked=loss < 0.105, cutoff=0.3)
  assert len(ax.child_axes) == 1
  fig, ax = plot.loss_vs_index(loss[-2:], np.array([0.1, 0.2]))
  assert not ax.child_axes


def test_escape_plots_loss_change_per_method():
  fig, ax = plot.escape({"gd": np.array([1.0, 0.9]), "sfn": np.array([1.0, 0.5])}, {"gd": -1, "sfn": 1},
                        threshold=1e-3)
  np.testing.assert_allclose(ax.lines[1].get_ydata(), [0.0, -0.5])
  assert ax.get_legend_handles_labels()[1] == ["gd (escape -1)", "sfn (escape 1)"]


# --- figures: surfaces and training (house)


def _bowl(n=5, scale=1.0):
  from jaxscape.surface import Surface

  x = np.linspace(-1, 1, n)
  loss = scale * (np.add.outer(x**2, -0.5 * x**2) + 1.0)   # a saddle: every interior point is non-convex
  ratio = np.full((n, n), 0.25)
  return Surface((x, x), loss, {"convexity_ratio": ratio}, 0, {})


def test_landscape_grid_has_a_contour_and_a_3d_panel_per_surface():
  fig, axes = plot.landscape_grid([[_bowl(), _bowl(scale=10.0)], [_bowl(), _bowl()]], titles=[["a", "b"], ["c", "d"]],
                                  title="two rows")
  assert len(axes) == 2 and len(axes[0]) == 4 and len(fig.axes) == 8
  assert axes[0][2].get_title() == "b" and axes[0][1].name == "3d"
  # the saddle's interior points are marked red, the origin with a star
  assert any(len(line.get_xdata()) == 9 for line in axes[0][0].get_lines())
  assert "log-spaced levels" in fig._suptitle.get_text() and fig._suptitle.get_text().startswith("two rows; ")


def test_ratio_maps_titles_with_the_median_and_shares_one_colour_bar():
  fig, axes = plot.ratio_maps([[_bowl(), _bowl()]], title="ratios")
  assert axes.shape == (1, 2) and axes[0, 1].get_title() == "median 0.25"
  assert len(fig.axes) == 3   # two maps and the colour bar
  with pytest.raises(ValueError, match="no field 'lambda_min'"):
    plot.ratio_maps([[_bowl()]], field="lambda_min")


def test_seed_trends_draws_seeds_means_and_dashed_diagnostics():
  values = np.array([[1.0, 2.0], [3.0, 5.0]])
  fig, axes = plot.seed_trends([1, 4], {"q": {"a": values, "b": values + 1}, "r": {"a": values}},
                               colors={"a": "red"}, dashed={"q": {"a": ("a exact", [0.0, 0.0])}}, xlabel="depth")
  assert len(axes) == 2 and axes[0].get_xlabel() == "depth"
  lines = axes[0].get_lines()
  assert len(lines) == 2 * 3 + 1   # per group: two seeds and the mean; one dashed line
  np.testing.assert_allclose(lines[2].get_ydata(), [1.5, 4.0])
  assert lines[3].get_linestyle() == "--" and [t.get_text() for t in axes[0].get_legend().get_texts()] == ["a", "a exact", "b"]


def test_run_panels_draws_runs_thin_and_the_mean_thick_per_group():
  values = np.array([[1.0, 2.0, 3.0], [3.0, 4.0, 5.0]])
  fig, axes = plot.run_panels([0.0, 1.0, 2.0], {"loss": {"train": values, "test": values + 1}, "acc": {"train": values}},
                              log=("loss",), vlines=(0, 1), titles=["a", "b"], styles={"test": "--"})
  assert len(axes) == 2 and axes[0].get_yscale() == "log" and axes[1].get_yscale() == "linear"
  lines = axes[0].get_lines()
  assert len(lines) == 2 * 3 + 2   # per group: two runs and the mean; two vertical markers
  np.testing.assert_allclose(lines[2].get_ydata(), [2.0, 3.0, 4.0])
  assert lines[5].get_linestyle() == "--" and axes[1].get_title() == "b"
  # per-group abscissae, runs only (the first run carries the label)
  _, (ax,) = plot.run_panels({"SB": [1, 2, 3], "LB": [10, 20]}, {"q": {"SB": values, "LB": values[:, :2]}}, mean=False,
                             xlog=True)
  assert ax.get_xscale() == "log" and [t.get_text() for t in ax.get_legend().get_texts()] == ["SB", "LB"]


def test_group_scatter_puts_each_quantity_in_a_column_and_groups_side_by_side():
  fig, ax = plot.group_scatter(["a", "b"], {"SB": [[1.0, 2.0], [3.0]], "LB": [[4.0], [0.0, 6.0]]}, title="t")
  offsets = [c.get_offsets() for c in ax.collections]
  assert len(offsets) == 4 and offsets[0][:, 0].max() < 0.5 <= offsets[3][:, 0].min()
  assert offsets[3][0, 1] == 1e-8   # clipped for the log scale
  assert [t.get_text() for t in ax.get_xticklabels()] == ["a", "b"] and ax.get_yscale() == "log"


def _regime_arrays(runs=2, n=5):
  alpha = np.linspace(-1, 2, n)
  a = {"alpha": alpha, **{f"line_{s}_{q}": np.ones((runs, n)) for s in ("train", "test") for q in ("loss", "acc")}}
  for g in ("sb", "lb"):
    a.update({f"{g}_phi_full": np.ones((runs, 1)), f"{g}_lam_max": np.ones(runs), f"{g}_hist_step": np.arange(1, 4),
              f"{g}_hist_train_loss": np.ones((runs, 3)), f"{g}_hist_test_accuracy": np.ones((runs, 3))})
  return a


def test_regime_lines_and_sharpness_draw_one_row_per_study():
  fig, axes = plot.regime_lines({"net A": _regime_arrays(), "net B": _regime_arrays(3)}, subtitle="pairs")
  assert len(axes) == 4 and axes[0].get_title() == "net A: loss along the SB→LB line" and axes[3].get_title() == "pairs"
  assert len(axes[2].get_lines()) == 2 * (3 + 1) + 2 and axes[0].get_yscale() == "log"
  fig, axes = plot.regime_sharpness({"net A": _regime_arrays()}, eps=[1e-3])
  assert len(axes) == 3 and axes[0].get_title() == "net A: sharpness" and axes[1].get_xscale() == "log"
  assert [t.get_text() for t in axes[0].get_xticklabels()] == ["φ ε=0.001", "λ_max"]
  plt.close("all")


def test_histograms_twin_trends_and_finite_size_draw_their_references():
  fig, ax = plot.histograms({"N = 8": [1.0, 1.5], "N = 12": [1.2, 1.3]}, bins=np.linspace(0.5, 2.0, 7), log=True,
                            vlines={"-E0": (0.9, "-"), "-Einf": (1.1, "--")}, title="energies")
  assert len(ax.patches) == 2 and ax.get_xscale() == "log" and [l.get_xdata()[0] for l in ax.get_lines()] == [0.9, 1.1]
  assert [t.get_text() for t in ax.get_legend().get_texts()] == ["N = 8", "N = 12", "-E0", "-Einf"]
  fig, (ax, twin) = plot.twin_trends([2, 4, 8], ("std", [1.0, 0.5, 0.25]), ("rho", [0.9, 0.6, 0.2]), right_ylim=(-1, 1))
  assert ax.get_xscale() == "log" and ax.get_ylabel() == "std" and twin.get_ylabel() == "rho"
  values = np.array([[1.0, 1.2, 1.1], [0.9, 1.0, 0.95]])
  fig, ax = plot.finite_size([8, 27], values, (0.8, 1.0), hlines={"ref": (0.8, "--")}, ylabel="e")
  fit = [l for l in ax.get_lines() if l.get_label().startswith("fit")][0]
  assert fit.get_xdata()[0] == 0.0 and fit.get_ydata()[0] == 0.8   # the fit's intercept is the N -> inf value
  np.testing.assert_allclose(ax.containers[0][0].get_ydata(), values.mean(1))
  plt.close("all")


def test_seed_surface_figures_lay_out_variants_by_size():
  seed = {"fd_nonconvex_fraction": 0.5, "nonconvex_fraction": 0.25, "max_loss": 2.0, "log10_max_loss": 0.3,
          "test_accuracy": 0.9}
  study = lambda ratios: {"surfaces": [_bowl()], "seeds": [seed, seed], "ratios": [_bowl()] if ratios else []}  # noqa: E731
  studies = {(v, d): study(True) for d in (1, 4) for v in ("plain", "residual")}
  figs = plot.seed_surface_figures(studies, label="MLP", colors={"plain": "red"})
  assert sorted(figs) == ["landscapes", "ratio_maps", "trends"]
  axes = figs["landscapes"][1]
  assert len(axes) == 2 and len(axes[1]) == 4 and axes[1][2].get_title().startswith("MLP residual, depth 4\n")
  assert figs["trends"][1][0].get_xlabel() == "depth" and figs["ratio_maps"][1].shape == (2, 2)
  studies[("plain", 1)] = study(False)
  assert sorted(plot.seed_surface_figures(studies)) == ["landscapes", "trends"]
  assert sorted(plot.seed_surface_figures(studies, trends=False)) == ["landscapes"]
  plt.close("all")


def test_curvature_panels_add_a_spectrum_panel():
  x = np.linspace(-1, 1, 5)
  surf = types.SimpleNamespace(x=x, y=x, ndim=2, loss=np.exp(np.add.outer(x**2, x**2)),
                               metrics={"plane_lambda_min": np.ones((5, 5)), "plane_lambda_max": np.full((5, 5), 2.0)})
  fig, axes = plot.curvature_panels([surf, surf], ["a", "b"], spectrum_of=np.array([-1.0, 2.0]), spectrum_title="s")
  assert [ax.get_title() for ax in axes] == ["a", "b", "s"]


def test_critical_point_figures_pick_three_points_and_the_median_escape():
  loss, index = np.array([0.1, 0.5, 1.0, 2.0]), np.array([0.0, 0.2, 0.4, 0.6])
  escapes = newton.EscapeComparison(methods=("gd", "sfn"), starts=[None, None], lambda_min=np.zeros(2),
                                    lambda_max=np.ones(2), steps=np.array([[3, 1], [-1, 2]]),
                                    losses=np.cumsum(-np.ones((2, 2, 5)), -1), wall=np.zeros((2, 2)), budget=4,
                                    threshold=0.5)
  figs = plot.critical_point_figures(loss, index, np.tile(np.linspace(-1, 1, 6), (4, 1)), color=np.arange(4),
                                     marked=np.array([1, 0, 0, 0], bool), cutoff=0.3, title="t", escapes=escapes,
                                     escape_titles=["first", "second"])
  assert sorted(figs) == ["eigenvalue_histograms", "loss_vs_index", "saddle_escape", "summary"]
  assert [ax.get_title() for ax in figs["eigenvalue_histograms"][1]][1].startswith("medium loss 1")  # median saddle
  assert figs["summary"][1][2].get_title() == "second"
  assert sorted(plot.critical_point_figures(loss[:0], index[:0], np.zeros((0, 6)), color=np.arange(0),
                                            marked=np.zeros(0, bool), cutoff=0.0, title="t")) == ["loss_vs_index", "summary"]


def test_sharpness_history_draws_eigenvalues_the_2_over_eta_line_and_adams_threshold():
  steps = np.arange(4) * 5
  curv = {"step": steps, "eigenvalues": np.array([[1.0, 0.5], [2.0, 1.0], [3.5, 1.0], [3.9, 2.0]]),
          "converged": np.array([[True, True], [True, False], [True, True], [True, True]]),
          "learning_rate": np.array([0.5, 0.5, 0.25, 0.25]), "threshold": np.array([4.0, 4.0, 8.0, 8.0])}
  fig, ax = plot.sharpness_history(curv)
  lines = {line.get_label(): line for line in ax.lines}
  np.testing.assert_allclose(lines[r"$2/\eta$"].get_ydata(), [4.0, 4.0, 8.0, 8.0])
  np.testing.assert_allclose(lines[r"$\lambda_1$"].get_ydata(), curv["eigenvalues"][:, 0])
  np.testing.assert_allclose(lines["not converged"].get_ydata(), [1.0])  # the one unconverged pair
  assert "optimiser threshold" not in lines  # plain GD: the threshold is 2/eta
  adam = dict(curv, threshold=38 / curv["learning_rate"], preconditioned_sharpness=np.array([np.nan, 20.0, 60.0, 140.0]))
  stacked = {k: (v if k == "step" else np.stack([v, 2 * v])) for k, v in adam.items()}  # train_many: [seeds, T, ...]
  fig, ax = plot.sharpness_history(stacked, run=(1,))
  lines = {line.get_label(): line for line in ax.lines}
  np.testing.assert_allclose(lines["optimiser threshold"].get_ydata(), 2 * 38 / curv["learning_rate"])
  np.testing.assert_allclose(lines["preconditioned"].get_ydata(), [np.nan, 40.0, 120.0, 280.0])
  with pytest.raises(ValueError, match="run="):
    plot.sharpness_history(stacked)
  with pytest.raises(ValueError, match="curvature_every"):
    plot.sharpness_history(types.SimpleNamespace(curvature=None))


def test_bowl_and_slices_draws_a_3d_bowl_and_marked_slices():
  x = np.linspace(-1, 1, 5)
  surf = types.SimpleNamespace(x=x, y=x, ndim=2, loss=np.exp(np.add.outer(x**2, x**2)), metrics={})
  fig, axes = plot.bowl_and_slices(surf, [surf, surf], bowl_title="bowl", slice_titles=["a", "b"],
                                   marks=[[(0.0, 0.0, "A"), (1.0, 0.0, "B")], []])
  assert axes[0].name == "3d" and [ax.get_title() for ax in axes] == ["bowl", "a", "b"]
  assert [t.get_text() for t in axes[1].texts] == ["A", "B"] and len(axes[1].lines) == 2 and not axes[2].lines
  with pytest.raises(ValueError, match="one list of marks and one title per slice \\(2\\); got 1 lists"):
    plot.bowl_and_slices(surf, [surf, surf], marks=[[]])
  with pytest.raises(ValueError, match="needs a 2-D surface"):
    plot.bowl_and_slices(types.SimpleNamespace(x=x, y=None, ndim=1, loss=x), [surf])
  plt.close("all")


def test_edge_of_stability_draws_sharpness_thresholds_losses_and_the_reach_marks():
  step, loss_step = np.arange(5) * 10, np.arange(3) * 20
  lam = np.array([[1.0, 3.0, 4.1, 3.9, 4.0], [1.0, 1.5, 2.0, 2.1, 1.9]])
  loss = np.array([[2.0, 1.0, 0.5], [2.0, 1.5, 1.0]])
  fig, (ax, bx) = plot.edge_of_stability(step, lam, [4.0, 2.0], loss_step, loss, reached=[30, -1])
  np.testing.assert_allclose(ax.lines[0].get_ydata(), lam[0])
  np.testing.assert_allclose(ax.lines[1].get_ydata(), [4.0] * 5)  # 2/eta of the first run, dashed
  assert ax.lines[1].get_linestyle() == "--"
  np.testing.assert_allclose(ax.lines[2].get_xydata(), [[30.0, 3.9]])  # the reach mark at step 30
  np.testing.assert_allclose(bx.lines[1].get_xydata(), [[30.0, 0.75]])  # on the loss, interpolated between records
  assert len(ax.lines) == 5 and len(bx.lines) == 3  # no mark for the run that never reached the edge
  assert [t.get_text() for t in ax.get_legend().get_texts()] == ["2/η = 4", "2/η = 2"]
  assert bx.get_yscale() == "log"
  with pytest.raises(ValueError, match="the same C runs"):
    plot.edge_of_stability(step, lam, [4.0, 2.0], loss_step, loss[:1])


def _surface_with_meta(kind_info, ndim=2):
  from jaxscape.surface import Surface

  x = np.linspace(-1, 2, 7) if ndim == 1 else np.linspace(-1, 1, 5)
  loss = (x - 0.5) ** 2 + 0.01 if ndim == 1 else np.add.outer(x**2, x**2) * 1e3 + 1e-2  # a basin 5 decades deep
  meta = {"config": {"directions": kind_info, "objective": {"dataset": "digits-train", "loss": "cross_entropy"}}}
  axes = (x,) if ndim == 1 else (x, x)
  return Surface(axes, loss, {"accuracy": np.ones_like(loss)} if ndim == 1 else {}, 0, meta)


def test_figures_are_labelled_after_the_directions_and_mark_the_trained_point():
  surf = _surface_with_meta({"kind": "random", "norm": "filter"})
  for fn in (plot.contour, plot.contourf, plot.heatmap):
    fig, ax = fn(surf)
    assert ax.get_xlabel() == "δ (random, filter-normalised)" and ax.get_ylabel() == "η (random, filter-normalised)"
    assert ax.get_title() == "train loss (cross_entropy)"
    stars = [line for line in ax.lines if line.get_marker() == "*"]
    assert len(stars) == 1 and stars[0].get_xydata().tolist() == [[0.0, 0.0]], fn.__name__
    if fn is not plot.contour:
      assert fig.axes[-1].get_ylabel() == "train loss (cross_entropy)"  # the colour bar says what it shows
    plt.close(fig)
  fig, ax = plot.contour(surf)
  values = [float(t.get_text()) for t in ax.texts]  # each label reads as its level ("0.613", never "613")
  assert values and all(surf.loss.min() <= v <= surf.loss.max() for v in values)
  levels = next(c.levels for c in ax.collections if hasattr(c, "levels"))
  assert np.sum(levels < 1.0) >= 5  # log-spaced default levels put lines inside a basin 5 decades deep
  plt.close(fig)
  fig, ax = plot.contourf(surf, log=True)
  assert len(fig.axes[-1].get_yticks()) >= 3  # a log colour bar with more than one tick
  plt.close(fig)
  fig, ax = plot.surface3d(_surface_with_meta({"kind": "hessian", "eigenvalues": [4.4374, 2.6295]}))
  assert ax.get_xlabel() == "v1 (λ = 4.44)" and ax.get_ylabel() == "v2 (λ = 2.63)"
  plt.close(fig)
  line = _surface_with_meta({"kind": "interpolation"}, ndim=1)
  fig, ax = plot.curve(line)
  ends = [l for l in ax.lines if l.get_marker() == "o"]
  assert ends and ends[0].get_xdata().tolist() == [0.0, 1.0] and ax.get_xlabel() == "α (0: θa, 1: θb)"
  assert ax.yaxis.label.get_color() == "b" and ax.right.get_ylabel() == "accuracy"
  plt.close(fig)
  fig, ax = plot.curve(line, metric=None)
  assert ax.yaxis.label.get_color() == "k"  # one axis: no colour code
  plt.close(fig)
  assert plot.axis_labels(_surface_with_meta({})) == ("x", "y")  # unknown directions: plain names


def test_save_seed_surface_figures_writes_each_figure_and_names_its_file(tmp_path):
  seed = {"fd_nonconvex_fraction": 0.5, "nonconvex_fraction": 0.25, "max_loss": 2.0, "log10_max_loss": 0.3,
          "test_accuracy": 0.9}
  studies = {(v, d): {"surfaces": [_bowl()], "seeds": [seed], "ratios": [_bowl()]} for d in (1, 4)
             for v in ("plain", "residual")}
  files = plot.save_seed_surface_figures(studies, str(tmp_path), name="landscapes_mlp", label="MLP")
  assert files == {"landscapes": "landscapes_mlp.png", "trends": "trends.png", "ratio_maps": "ratio_maps.png"}
  assert sorted(os.listdir(tmp_path)) == sorted(files.values())
  assert plot.save_seed_surface_figures(studies, str(tmp_path), name="only",
                                        trends=False) == {"landscapes": "only.png"}
  plt.close("all")
