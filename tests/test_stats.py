"""Statistics helpers against SciPy and hand computations."""

import numpy as np
import pytest
from scipy import stats as sps

from jaxscape import stats


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
