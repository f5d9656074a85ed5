"""Statistics helpers against SciPy and hand computations."""

import numpy as np
import pytest
from scipy import stats as sps

from jaxscape import stats
from jaxscape.surface import Surface


def test_correlations_match_scipy():
  rng = np.random.default_rng(0)
  x = rng.normal(size=40)
  y = x + rng.normal(size=40)
  y[:5] = y[0]  # ties
  np.testing.assert_allclose(stats.pearson(x, y), sps.pearsonr(x, y)[0], rtol=1e-12)
  np.testing.assert_allclose(stats.spearman(x, y), sps.spearmanr(x, y)[0], rtol=1e-12)
  np.testing.assert_allclose(stats.rankdata(y), sps.rankdata(y), rtol=0)
  assert np.isnan(stats.pearson([1, 1, 1], [1, 2, 3]))
  with pytest.raises(ValueError, match="equal-length"):
    stats.pearson([1, 2], [1])


def test_fit_summary_and_nonconvex_fraction():
  a, b = stats.linear_fit([0, 1, 2, 3], [1, 3, 5, 7])
  np.testing.assert_allclose((a, b), (1.0, 2.0), atol=1e-12)
  s = stats.summary([1.0, 2.0, 3.0, np.nan])
  assert s["count"] == 3 and s["mean"] == 2.0 and s["std"] == 1.0 and s["median"] == 2.0
  # 4x4 grid: the interior is the central 2x2; threshold -0.01 * |10| = -0.1
  lo = np.full((4, 4), -5.0)
  lo[1:3, 1:3] = [[-0.5, -0.05], [0.3, 1.0]]
  hi = np.full((4, 4), 10.0)
  assert stats.nonconvex_fraction(lo, hi) == 0.25
  assert stats.nonconvex_fraction(lo, hi, interior=False) == 13 / 16


# ----------------------------------------------------------------------------- fits and spreads of repeated runs


def test_finite_size_fit_recovers_line():
  n = np.array([20.0, 40.0, 80.0, 120.0])
  a, b, se = stats.finite_size_fit(n, -1.63 + 0.8 * n ** (-2 / 3))
  assert abs(a + 1.63) < 1e-12 and abs(b - 0.8) < 1e-10 and se < 1e-12
  with pytest.raises(ValueError, match="positive"):
    stats.finite_size_fit([0, 1], [1, 2])
  with pytest.raises(ValueError, match="4 positive finite standard errors"):
    stats.finite_size_fit(n, n, errors=[1.0, 0.0, 1.0, 1.0])


def test_weighted_finite_size_fit_matches_polyfit_and_its_error_bar_covers():
  """Weighted fit = numpy's weighted polyfit; the standard error of a gives 95 % intervals that hold 95 % of the time.

  Coverage over 4000 noisy draws (binomial SE 0.34 %): known errors with the normal 1.96, the unweighted
  residual estimate (2 degrees of freedom with 4 sizes) with Student's t_2 quantile 4.303.
  """
  n = np.array([20.0, 40.0, 80.0, 120.0])
  x, se = n ** (-2 / 3), np.array([0.02, 0.008, 0.004, 0.003])
  rng = np.random.default_rng(0)
  y = -1.63 + 0.8 * x + se * rng.standard_normal(4)
  a, b, _ = stats.finite_size_fit(n, y, errors=se)
  np.testing.assert_allclose((b, a), np.polyfit(x, y, 1, w=1 / se), rtol=1e-10)
  hits = {"weighted": 0, "plain": 0}
  draws = 4000
  for _ in range(draws):
    y = -1.63 + 0.8 * x + se * rng.standard_normal(4)
    a, _, a_se = stats.finite_size_fit(n, y, errors=se)
    hits["weighted"] += abs(a + 1.63) <= 1.96 * a_se
    y = -1.63 + 0.8 * x + 0.01 * rng.standard_normal(4)
    a, _, a_se = stats.finite_size_fit(n, y)
    hits["plain"] += abs(a + 1.63) <= 4.303 * a_se
  for name, h in hits.items():
    assert 0.935 <= h / draws <= 0.965, (name, h / draws)


def test_poor_fraction_and_spread():
  losses = np.array([[0.1, 0.5, np.nan, 0.2], [0.1, 0.1, 0.1, 0.3]])
  ref = np.array([0.1, 0.1, 0.12, 0.08])   # median 0.1 -> threshold 0.2
  np.testing.assert_allclose(stats.poor_fraction(losses, ref), [0.5, 0.25])
  sp = stats.spread_by_group(np.array([[1.0, 2.0, 3.0], [2.0, 2.0, 2.0]]))
  np.testing.assert_allclose(sp["std"], [1.0, 0.0])
  np.testing.assert_allclose(sp["mean"], [2.0, 2.0])
  with pytest.raises(ValueError, match="groups, runs"):
    stats.spread_by_group(np.ones(3))


# ----------------------------------------------------------------------------- surfaces


def _surface(loss, **maps):
  n = loss.shape[0]
  x = np.linspace(-1, 1, n)
  return Surface((x, x), np.asarray(loss, np.float64), {k: np.asarray(v) for k, v in maps.items()}, 0, {})


def test_surface_stats_by_hand():
  loss = np.arange(1.0, 26.0).reshape(5, 5)
  loss[0, 0] = np.nan
  lo = np.full((5, 5), -3.0)           # outer ring: ignored by the interior fraction
  lo[1:4, 1:4] = [[-0.5, 0.2, 0.0], [-0.02, 1.0, 1.0], [1.0, 1.0, -0.009]]
  hi = np.full((5, 5), 1.0)            # threshold -0.01
  hi[1, 1] = -100.0                    # |lambda_max| is used: -0.5 < -1 is false
  s = stats.surface_stats(_surface(loss, plane_lambda_min=lo, plane_lambda_max=hi))
  assert s["num_points"] == 25 and s["num_nonfinite"] == 1
  assert s["min_loss"] == 2.0 and s["max_loss"] == 25.0
  np.testing.assert_allclose(s["log10_max_loss"], np.log10(25.0), rtol=1e-12)
  assert s["origin_loss"] == 13.0
  # interior 3x3: -0.02 < -0.01 counts; -0.5 vs -1, 0.0 and -0.009 do not -> 1/9
  np.testing.assert_allclose(s["nonconvex_fraction"], 1 / 9, rtol=1e-12)
  np.testing.assert_allclose(s["plane_min_over_max"], -3.0, rtol=1e-12)
  assert "ratio_median" not in s


def test_surface_stats_ratio_maps():
  # signed ratios lambda_min / lambda_max: negative where lambda_min < 0; 1.5 at a concave point (both negative)
  ratio = np.array([[0.0, -0.05, -0.2], [0.3, 0.01, 0.5], [np.nan, 0.02, 1.5]])
  lmin = np.array([[0.0, -0.1, -2.0], [0.3, 0.01, 1.0], [1.0, 0.02, -0.3]])
  s = stats.surface_stats(_surface(np.ones((3, 3)), convexity_ratio=ratio, lambda_min=lmin))
  np.testing.assert_allclose(s["ratio_median"], np.median([0.0, -0.05, -0.2, 0.3, 0.01, 0.5, 0.02, 1.5]), rtol=1e-12)
  assert s["ratio_max"] == 1.5 and s["ratio_min"] == -0.2 and s["ratio_origin"] == 0.01
  assert s["full_lambda_min"] == -2.0
  # non-convex and |ratio| > 0.1: -0.2 and the concave 1.5; not -0.05 (small), not 0.3 or 0.5 (convex) -> 2/8
  np.testing.assert_allclose(s["ratio_frac_nonconvex"], 2 / 8, rtol=1e-12)
  # without a lambda_min map the sign of the ratio decides: only -0.2 -> 1/8
  s = stats.surface_stats(_surface(np.ones((3, 3)), convexity_ratio=ratio))
  np.testing.assert_allclose(s["ratio_frac_nonconvex"], 1 / 8, rtol=1e-12)


def test_seed_summary_and_increasing():
  rows = [{"a": 1.0, "b": np.nan}, {"a": 2.0, "b": 4.0}, {"a": 6.0}]
  s = stats.seed_summary(rows)
  assert s["a"]["mean"] == 3.0 and s["a"]["count"] == 3 and s["a"]["min"] == 1.0
  assert s["b"]["count"] == 1 and s["b"]["mean"] == 4.0
  assert stats.is_increasing([0.1, 0.2, 0.5])
  assert not stats.is_increasing([0.1, 0.5, 0.2])
  assert not stats.is_increasing([0.1, np.nan])
  assert not stats.is_increasing([0.2, 0.2]) and stats.is_increasing([0.2, 0.2], strict=False)


def test_finite_difference_plane_hessian_is_exact_on_quadratics():
  x, y = np.linspace(-1, 1, 7), np.linspace(-0.5, 0.5, 5)
  h = np.array([[2.0, -1.5], [-1.5, -0.5]])          # indefinite, with a cross term
  xx, yy = np.meshgrid(x, y)
  f = 0.5 * (h[0, 0] * xx**2 + 2 * h[0, 1] * xx * yy + h[1, 1] * yy**2) + 0.3 * xx - yy
  lo, hi = stats.finite_difference_plane_hessian(f, x, y)
  ev = np.linalg.eigvalsh(h)
  np.testing.assert_allclose(lo[1:-1, 1:-1], ev[0], rtol=1e-10)
  np.testing.assert_allclose(hi[1:-1, 1:-1], ev[1], rtol=1e-10)
  assert np.isnan(lo[0]).all() and np.isnan(hi[:, -1]).all()
  # every interior point is non-convex; the ring is left out
  assert stats.surface_stats(Surface((x, y), f, {}, 0, {}))["fd_nonconvex_fraction"] == 1.0
  with pytest.raises(ValueError, match="uniform grid"):
    stats.finite_difference_plane_hessian(f, np.r_[x[:-1], 2.0], y)


def test_distinct_keeps_one_representative_per_value_and_key():
  loss = np.array([0.5, 0.2, 0.2 + 1e-12, 0.2, 0.5 + 1e-6, 3.0e9, 3.0e9 + 1.0])
  index = np.array([0.1, 0.0, 0.0, 0.3, 0.1, 0.2, 0.2])
  # 0.2 twice (same key) collapse; 0.2 with another key stays; 1e-6 apart is another value; the tolerance is relative
  assert stats.distinct(loss, index) == [1, 3, 0, 4, 5]
  np.testing.assert_array_equal(stats.copies(loss, index, 1), [False, True, True, False, False, False, False])
  np.testing.assert_array_equal(stats.copies(loss, index, 5), [False] * 5 + [True, True])
  assert stats.distinct([], []) == []


def test_value_at_reads_a_grid_point_and_rejects_points_off_the_grid():
  grid = np.linspace(-1.0, 2.0, 13)
  values = np.stack([grid**2, grid + 1])
  assert stats.value_at(grid, values[0], 1.5) == 2.25
  np.testing.assert_allclose([stats.value_at(grid, v, -0.5) for v in values], [0.25, 0.5])
  with pytest.raises(ValueError, match="not on the grid"):
    stats.value_at(grid, values[0], 0.1)


def test_ratio_of_means_is_inf_for_a_non_positive_denominator():
  assert stats.ratio_of_means([3.0, 5.0], [1.0, 3.0]) == 2.0
  assert stats.ratio_of_means([1.0], [-1.0, 0.5]) == np.inf


def test_edge_of_stability_finds_the_first_record_at_the_edge_and_the_time_in_the_band():
  # threshold 4, band 0.15: the edge is [3.4, 4.6]; 3.5 reaches it, 5.0 is above it, 3.0 below it
  lam = np.array([1.0, 2.0, 3.5, 4.2, 5.0, 3.0, 4.0, 4.4])
  out = stats.edge_of_stability(lam, 4.0)
  assert out["reached"] and out["first"] == 2
  assert out["in_band"] == 4 / 6  # 3.5, 4.2, 4.0, 4.4 of the six records from index 2 on
  np.testing.assert_allclose(out["plateau"], np.median([3.5, 4.2, 5.0, 3.0, 4.0, 4.4]), rtol=1e-15)
  np.testing.assert_allclose(out["plateau_ratio"], out["plateau"] / 4.0, rtol=1e-15)
  # a threshold per record (a schedule): the ratio is taken record by record
  per_record = stats.edge_of_stability(lam, np.r_[np.full(4, 4.0), np.full(4, 2.0)])
  assert per_record["first"] == 2 and per_record["in_band"] == 2 / 6  # 3.5, 4.2 in; 5.0, 3.0, 4.0, 4.4 above 2.3
  assert stats.edge_of_stability(lam, 4.0, band=0.05)["first"] == 3  # 3.5 < 3.8
  never = stats.edge_of_stability([1.0, 2.0], 4.0)
  assert not never["reached"] and never["first"] == -1 and never["in_band"] == 0.0 and np.isnan(never["plateau"])
  for bad, match in (({"sharpness": [1.0, np.nan], "threshold": 4.0}, "finite"),
                     ({"sharpness": [1.0, 2.0], "threshold": 0.0}, "positive"),
                     ({"sharpness": [1.0, 2.0], "threshold": [4.0, 4.0, 4.0]}, "one per record"),
                     ({"sharpness": [1.0, 2.0], "threshold": 4.0, "band": 1.5}, "band")):
    with pytest.raises(ValueError, match=match):
      stats.edge_of_stability(**bad)


def test_slope_interval_matches_scipy_linregress():
  rng = np.random.default_rng(0)
  x = np.log2([2, 4, 8, 16, 32, 64, 128, 256])
  y = 0.3 - 0.6 * x + rng.normal(0, 0.2, x.size)
  b, lo, hi = stats.slope_interval(x, y, level=0.9)
  ref = sps.linregress(x, y)
  half = sps.t.ppf(0.95, x.size - 2) * ref.stderr
  np.testing.assert_allclose([b, lo, hi], [ref.slope, ref.slope - half, ref.slope + half], rtol=1e-10)
  with pytest.raises(ValueError, match="at least 3 points"):
    stats.slope_interval([0, 1], [1, 2])
  with pytest.raises(ValueError, match="constant"):
    stats.slope_interval([1, 1, 1], [1, 2, 3])


def test_slope_interval_covers_the_true_slope_at_its_level():
  # coverage over repeated samples is the promise of the interval: 2000 draws, 95 % +- 1.5 % (3 binomial SEs)
  rng = np.random.default_rng(1)
  x = np.arange(8.0)
  hits = [lo <= -0.5 <= hi for lo, hi in (stats.slope_interval(x, -0.5 * x + rng.normal(0, 0.3, 8))[1:]
                                          for _ in range(2000))]
  assert abs(np.mean(hits) - 0.95) < 0.015


def test_correlation_drop_standard_error_matches_monte_carlo():
  # Fisher's 1/sqrt(n - 3) against the empirical spread of z over 4000 samples of n = 20 pairs (rho 0.9 and 0.3)
  rng = np.random.default_rng(2)

  def corr(rho, n):
    a, b = rng.normal(size=(2, n))
    return np.corrcoef(a, rho * a + np.sqrt(1 - rho**2) * b)[0, 1]

  draws = np.asarray([stats.correlation_drop([corr(0.9, 20), corr(0.9, 20)], [corr(0.3, 20)], num=20)
                      for _ in range(4000)])
  expected = np.arctanh(0.9) - np.arctanh(0.3)
  assert abs(draws[:, 0].mean() - expected) < 0.03  # Fisher z bias ~ rho / (2 (n - 1)) per group: <= 0.024 here
  np.testing.assert_allclose(draws[:, 0].std(), draws[0, 1], rtol=0.06)
  np.testing.assert_allclose(draws[0, 1], np.sqrt(1.5 / 17), rtol=1e-12)
  assert stats.correlation_drop([1.0], [0.2], num=10)[0] == np.inf
  with pytest.raises(ValueError, match=r"\[-1, 1\]"):
    stats.correlation_drop([1.2], [0.2], num=10)
  with pytest.raises(ValueError, match="num > 3"):
    stats.correlation_drop([0.5], [0.2], num=3)
