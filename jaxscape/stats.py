"""Small statistics for experiment checks: correlations, fits, summaries.

NumPy on the host (these run on a few hundred numbers after the heavy work);
each function is checked against SciPy in the tests.

Example:
  >>> spearman([1, 2, 3, 4], [10, 20, 25, 100])
  1.0
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

__all__ = ["pearson", "spearman", "rankdata", "linear_fit", "summary", "nonconvex_fraction"]


def _pair(x: Sequence[float], y: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
  x, y = np.asarray(x, np.float64).ravel(), np.asarray(y, np.float64).ravel()
  if x.shape != y.shape or x.size < 2:
    raise ValueError(f"need two equal-length samples of at least 2 values; got {x.size} and {y.size}")
  return x, y


def pearson(x: Sequence[float], y: Sequence[float]) -> float:
  """Pearson correlation; NaN when either sample is constant."""
  x, y = _pair(x, y)
  xc, yc = x - x.mean(), y - y.mean()
  denom = np.sqrt((xc**2).sum() * (yc**2).sum())
  return float((xc * yc).sum() / denom) if denom > 0 else float("nan")


def rankdata(x: Sequence[float]) -> np.ndarray:
  """Ranks from 1, ties given their average rank (as ``scipy.stats.rankdata``)."""
  x = np.asarray(x, np.float64).ravel()
  order = np.argsort(x, kind="mergesort")
  ranks = np.empty(x.size)
  ranks[order] = np.arange(1, x.size + 1)
  for v in np.unique(x):
    tie = x == v
    if tie.sum() > 1:
      ranks[tie] = ranks[tie].mean()
  return ranks


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
  """Spearman rank correlation (Pearson correlation of the ranks)."""
  x, y = _pair(x, y)
  return pearson(rankdata(x), rankdata(y))


def linear_fit(x: Sequence[float], y: Sequence[float]) -> tuple[float, float]:
  """Least-squares ``y ≈ a + b x``; returns ``(a, b)``."""
  x, y = _pair(x, y)
  b, a = np.polyfit(x, y, 1)
  return float(a), float(b)


def summary(x: Sequence[float]) -> dict[str, float]:
  """Mean, standard deviation (ddof 1), median, min, max and count."""
  x = np.asarray(x, np.float64).ravel()
  x = x[np.isfinite(x)]
  if x.size == 0:
    return {"mean": float("nan"), "std": float("nan"), "median": float("nan"), "min": float("nan"),
            "max": float("nan"), "count": 0}
  return {"mean": float(x.mean()), "std": float(x.std(ddof=1)) if x.size > 1 else 0.0, "median": float(np.median(x)),
          "min": float(x.min()), "max": float(x.max()), "count": int(x.size)}


def nonconvex_fraction(lambda_min: np.ndarray, lambda_max: np.ndarray, rel: float = 0.01, interior: bool = True) -> float:
  """Share of grid points with significant negative curvature in the plot plane.

  A point counts when its smallest 2x2 projected-Hessian eigenvalue is below
  ``-rel * |lambda_max|`` (Li et al. 2018-style non-convexity at CPU scale).
  With ``interior``, the outermost ring of a 2-D grid is left out.
  """
  lo, hi = np.asarray(lambda_min, np.float64), np.asarray(lambda_max, np.float64)
  if lo.shape != hi.shape:
    raise ValueError(f"lambda_min and lambda_max shapes differ: {lo.shape} vs {hi.shape}")
  if interior and lo.ndim == 2 and min(lo.shape) > 2:
    lo, hi = lo[1:-1, 1:-1], hi[1:-1, 1:-1]
  ok = np.isfinite(lo) & np.isfinite(hi)
  if not ok.any():
    return float("nan")
  return float(np.mean(lo[ok] < -rel * np.abs(hi[ok])))
