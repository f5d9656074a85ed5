"""Host-side numbers about results: correlations, fits, summaries, surface statistics.

NumPy on the host (these run on a few hundred numbers, or on already computed
maps, after the heavy work); the general statistics are checked against SciPy
in the tests.

* correlations and fits: :func:`pearson`, :func:`spearman`, :func:`linear_fit`,
  :func:`finite_size_fit`;
* summaries of repeated runs: :func:`summary`, :func:`seed_summary`,
  :func:`spread_by_group`, :func:`poor_fraction`, :func:`is_increasing`,
  :func:`ratio_of_means`; a value at a grid point: :func:`value_at`;
* a sharpness series against its stability threshold: :func:`edge_of_stability`;
* one loss surface as scalars (Li et al. 2018's "how chaotic is this
  landscape" numbers): :func:`surface_stats`, :func:`nonconvex_fraction`,
  :func:`finite_difference_plane_hessian`, and :func:`surface_error` against a
  reference surface.

Example:
  >>> spearman([1, 2, 3, 4], [10, 20, 25, 100])
  1.0
  >>> from jaxscape.surface import Surface
  >>> x = np.linspace(-1, 1, 5)
  >>> loss = np.add.outer(x**2, x**2) + 0.1
  >>> maps = {"plane_lambda_min": np.full((5, 5), 2.0), "plane_lambda_max": np.full((5, 5), 2.0)}
  >>> s = surface_stats(Surface((x, x), loss, maps, 0, {}))
  >>> s["nonconvex_fraction"], round(s["max_loss"], 3), round(s["log10_max_loss"], 3)
  (0.0, 2.1, 0.322)
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

__all__ = ["pearson", "spearman", "rankdata", "linear_fit", "summary", "nonconvex_fraction", "finite_size_fit",
           "poor_fraction", "spread_by_group", "seed_summary", "is_increasing", "surface_stats",
           "finite_difference_plane_hessian", "surface_error"]
__all__ += ["copies", "distinct"]
__all__ += ["value_at", "ratio_of_means"]
__all__ += ["edge_of_stability"]


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


def finite_size_fit(sizes: Sequence[float], values: Sequence[float], exponent: float = -2 / 3,
                    errors: Sequence[float] | None = None) -> tuple[float, float, float]:
  """Least-squares ``value ≈ a + b * size**exponent``; ``a`` is the infinite-size extrapolation.

  With ``errors`` (the standard error of each value, e.g. the spread of
  independent disorder samples over the root of their number) the fit is
  weighted by ``1 / errors**2`` and the standard error of ``a`` follows from
  these errors (known variances); without, every value weighs the same and
  the error of ``a`` is estimated from the residuals (NaN for two sizes).
  The extrapolation leans on the smallest sizes, where ``values`` are least
  certain: weighting keeps one noisy small-size mean from moving ``a``.

  Args:
    sizes: system sizes (e.g. the spin-glass ``N``), one per value.
    values: measured values (e.g. mean energy per spin at each size).
    exponent: finite-size scaling exponent (``-2/3`` for spherical spin-glass energies).
    errors: optional positive standard errors of ``values``.

  Returns:
    ``(a, b, a_se)``: intercept, slope and the standard error of ``a``.

  Example:
    >>> a, b, _ = finite_size_fit([8, 27, 64], [-1.6 + 2 / 4, -1.6 + 2 / 9, -1.6 + 2 / 16])
    >>> round(a, 6), round(b, 6)
    (-1.6, 2.0)
  """
  sizes = np.asarray(sizes, np.float64)
  if np.any(sizes <= 0):
    raise ValueError(f"sizes must be positive; got {sizes.tolist()}")
  x, y = _pair(sizes ** exponent, values)
  if errors is None:
    w = np.ones_like(x)
  else:
    se = np.asarray(errors, np.float64).ravel()
    if se.shape != x.shape or not np.all(np.isfinite(se) & (se > 0)):
      raise ValueError(f"errors must be {x.size} positive finite standard errors, one per value; got {se.tolist()}")
    w = se ** -2.0
  design = np.stack([np.ones_like(x), x], axis=1)
  cov = np.linalg.inv(design.T @ (w[:, None] * design))
  a, b = cov @ (design.T @ (w * y))
  if errors is None:
    dof = x.size - 2
    cov = cov * (float(np.sum((y - a - b * x) ** 2)) / dof if dof > 0 else np.nan)
  return float(a), float(b), float(np.sqrt(cov[0, 0]))


def poor_fraction(losses: np.ndarray, reference: np.ndarray, factor: float = 2.0) -> np.ndarray:
  """Fraction of runs per group whose loss exceeds ``factor x median(reference)``.

  Args:
    losses: ``[G, R]`` final losses (groups x runs), e.g. widths x seeds.
    reference: losses defining the threshold (e.g. the runs of the largest width).
    factor: the threshold is ``factor * median(reference)``.

  Returns:
    ``[G]`` fractions (NaN losses count as poor).
  """
  losses = np.asarray(losses, np.float64)
  thr = factor * float(np.nanmedian(np.asarray(reference, np.float64)))
  return np.mean(~(losses <= thr), axis=-1)


def spread_by_group(values: np.ndarray) -> dict[str, np.ndarray]:
  """Per-group mean, standard deviation (ddof 1), median, min and max of ``[G, R]`` values."""
  v = np.asarray(values, np.float64)
  if v.ndim != 2 or v.shape[1] < 2:
    raise ValueError(f"expected [groups, runs] with at least 2 runs per group; got shape {v.shape}")
  return {"mean": v.mean(axis=1), "std": v.std(axis=1, ddof=1), "median": np.median(v, axis=1),
          "min": v.min(axis=1), "max": v.max(axis=1)}


def copies(values: Sequence[float], keys: Sequence[Any], i: int, *, rtol: float = 1e-9) -> np.ndarray:
  """Mask of the entries that repeat entry ``i``: the same key, and a value within ``rtol`` of ``values[i]``.

  The tolerance is relative to ``max(1, |values[i]|)``. E.g. critical points
  with the same loss and index reached from several starts, or permuted copies
  of one point.

  Example:
    >>> copies([1.0, 1.0 + 1e-12, 1.0, 2.0], [0, 0, 1, 0], 0).tolist()
    [True, True, False, False]
  """
  v, k = np.asarray(values, np.float64), np.asarray(keys)
  return (np.abs(v - v[i]) <= rtol * max(1.0, abs(v[i]))) & (k == k[i])


def distinct(values: Sequence[float], keys: Sequence[Any], *, rtol: float = 1e-9) -> list[int]:
  """Indices of one representative per group of :func:`copies`, in ascending order of value.

  Entries are visited from the lowest value up (stable for ties); an entry
  starts a new group unless it is a copy of a representative already kept.

  Example:
    >>> distinct([2.0, 1.0, 1.0 + 1e-12, 1.0], [0, 0, 0, 1])
    [1, 3, 0]
  """
  v = np.asarray(values, np.float64)
  keep: list[int] = []
  for i in np.argsort(v, kind="stable"):
    if not any(copies(v, keys, j, rtol=rtol)[i] for j in keep):
      keep.append(int(i))
  return keep


def value_at(grid: Sequence[float], values: np.ndarray, x: float) -> float:
  """``values[..., i]`` at the grid point ``grid[i] == x`` (to 1e-9); a ``ValueError`` when ``x`` is off the grid.

  Example:
    >>> value_at([-1.0, 0.0, 1.0], np.array([3.0, 1.0, 2.0]), 1.0)
    2.0
  """
  hit = np.flatnonzero(np.isclose(grid, x, atol=1e-9))
  if hit.size == 0:
    raise ValueError(f"{x} is not on the grid {np.asarray(grid).tolist()}: choose a range that holds it")
  return float(values[..., hit[0]])


def ratio_of_means(numerator: Sequence[float], denominator: Sequence[float]) -> float:
  """``mean(numerator) / mean(denominator)`` (e.g. of two groups' per-seed values); inf when the latter is not positive.

  Example:
    >>> ratio_of_means([2.0, 4.0], [1.0, 2.0]), ratio_of_means([1.0], [0.0])
    (2.0, inf)
  """
  den = np.asarray(denominator).mean()
  return float(np.asarray(numerator).mean() / den) if den > 0 else np.inf


# ----------------------------------------------------------------------------- surfaces


def _finite(z: np.ndarray) -> np.ndarray:
  z = np.asarray(z, np.float64)
  return z[np.isfinite(z)]


def finite_difference_plane_hessian(loss: np.ndarray, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Eigenvalues of the 2x2 Hessian of a 2-D loss map by central differences on the grid.

  ``h_xx = (f[i, j+1] - 2 f[i, j] + f[i, j-1]) / dx^2``, ``h_yy`` likewise,
  ``h_xy = (f[i+1, j+1] - f[i+1, j-1] - f[i-1, j+1] + f[i-1, j-1]) / (4 dx dy)``.
  Unlike the exact projected Hessian (``curvature="plane"``), this measures
  curvature at the scale of the grid spacing: for ReLU networks it includes the
  kinks that the pointwise Hessian does not see, and it smooths out
  finer-scale wiggles (papers.md's calibration used this estimate).

  Args:
    loss: ``[ny, nx]`` loss map (uniform grid).
    x, y: grid coordinates (lengths ``nx``, ``ny``).

  Returns:
    ``(lambda_min, lambda_max)`` maps shaped ``[ny, nx]``, NaN on the outer ring
    (where central differences are undefined) and where the loss is not finite.

  Example:
    >>> x = np.linspace(-1, 1, 5)
    >>> f = 3 * x[None, :] ** 2 + x[:, None] ** 2       # Hessian diag(6, 2)
    >>> lo, hi = finite_difference_plane_hessian(f, x, x)
    >>> float(np.round(lo[2, 2], 6)), float(np.round(hi[2, 2], 6)), bool(np.isnan(lo[0, 0]))
    (2.0, 6.0, True)
  """
  f = np.asarray(loss, np.float64)
  x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
  if f.ndim != 2 or f.shape != (y.size, x.size) or min(f.shape) < 3:
    raise ValueError(f"need a [ny, nx] loss map with nx, ny >= 3 matching x and y; got {f.shape}, x {x.size}, y {y.size}")
  dx, dy = np.diff(x), np.diff(y)
  if not (np.allclose(dx, dx[0]) and np.allclose(dy, dy[0])):
    raise ValueError("finite differences need a uniform grid")
  dx, dy = float(dx[0]), float(dy[0])
  c = f[1:-1, 1:-1]
  hxx = (f[1:-1, 2:] - 2 * c + f[1:-1, :-2]) / dx**2
  hyy = (f[2:, 1:-1] - 2 * c + f[:-2, 1:-1]) / dy**2
  hxy = (f[2:, 2:] - f[2:, :-2] - f[:-2, 2:] + f[:-2, :-2]) / (4 * dx * dy)
  mid, rad = 0.5 * (hxx + hyy), np.sqrt(0.25 * (hxx - hyy) ** 2 + hxy**2)
  lo, hi = np.full(f.shape, np.nan), np.full(f.shape, np.nan)
  lo[1:-1, 1:-1], hi[1:-1, 1:-1] = mid - rad, mid + rad
  return lo, hi


def surface_stats(surf: Any, *, rel: float = 0.01, ratio_threshold: float = 0.1,
                  interior: bool = True) -> dict[str, float]:
  """Scalar summaries of one surface (1-D or 2-D).

  Always: ``num_points``, ``num_nonfinite`` (NaN/inf grid points), ``min_loss``,
  ``max_loss`` and ``log10_max_loss`` over the finite points, ``origin_loss``
  (NaN when 0 is not a grid point). With plane curvature maps:
  ``nonconvex_fraction`` (share of interior points with
  ``plane_lambda_min < -rel * |plane_lambda_max|``, see
  :func:`nonconvex_fraction`) and ``plane_min_over_max``, the
  most negative ``plane_lambda_min / |plane_lambda_max|``. With full-Hessian
  maps (``convexity_ratio``, the signed ``lambda_min / lambda_max``):
  ``ratio_median``, ``ratio_min`` (the most non-convex point), ``ratio_max``,
  ``ratio_frac_nonconvex`` (share of points with ``lambda_min < 0`` and
  ``|ratio| > ratio_threshold``; without a ``lambda_min`` map, the share with
  ratio ``< -ratio_threshold``), ``ratio_origin`` and ``full_lambda_min`` (the
  most negative Ritz value).

  Args:
    surf: a :class:`~jaxscape.Surface` (anything with ``loss``, ``metrics``, ``axes``).
    rel: relative threshold of significant negative plane curvature.
    ratio_threshold: threshold of the non-convex share (on |λmin/λmax|).
    interior: leave the outer ring out of the non-convex fraction (2-D grids).

  Returns:
    A flat ``{name: float}`` dict (NaN where a value is undefined).
  """
  loss = np.asarray(surf.loss, np.float64)
  finite = _finite(loss)
  maxl = float(finite.max()) if finite.size else float("nan")
  out = {
      "num_points": float(loss.size),
      "num_nonfinite": float(loss.size - finite.size),
      "min_loss": float(finite.min()) if finite.size else float("nan"),
      "max_loss": maxl,
      "log10_max_loss": float(np.log10(maxl)) if finite.size and maxl > 0 else float("nan"),
      "origin_loss": float("nan"),
  }
  axes = getattr(surf, "axes", ())
  hits = [np.flatnonzero(np.isclose(np.asarray(a), 0.0, atol=1e-12)) for a in reversed(tuple(axes))]
  if axes and all(h.size for h in hits):
    out["origin_loss"] = float(loss[tuple(int(h[0]) for h in hits)])
  metrics = getattr(surf, "metrics", {}) or {}
  if len(axes) == 2 and min(loss.shape) >= 3:
    fd_lo, fd_hi = finite_difference_plane_hessian(loss, axes[0], axes[1])
    out["fd_nonconvex_fraction"] = nonconvex_fraction(fd_lo, fd_hi, rel=rel, interior=False)
  if "plane_lambda_min" in metrics and "plane_lambda_max" in metrics:
    lo = np.asarray(metrics["plane_lambda_min"], np.float64)
    hi = np.asarray(metrics["plane_lambda_max"], np.float64)
    out["nonconvex_fraction"] = nonconvex_fraction(lo, hi, rel=rel, interior=interior)
    with np.errstate(divide="ignore", invalid="ignore"):
      r = _finite(lo / np.abs(hi))
    out["plane_min_over_max"] = float(r.min()) if r.size else float("nan")
  if "convexity_ratio" in metrics:
    ratio = np.asarray(metrics["convexity_ratio"], np.float64)
    fr = _finite(ratio)
    out["ratio_median"] = float(np.median(fr)) if fr.size else float("nan")
    out["ratio_min"] = float(fr.min()) if fr.size else float("nan")
    out["ratio_max"] = float(fr.max()) if fr.size else float("nan")
    ok = np.isfinite(ratio)
    if "lambda_min" in metrics:
      # a concave point (both extremes negative) has a ratio >= 1 but is non-convex too
      nonconvex = (np.asarray(metrics["lambda_min"], np.float64) < 0) & (np.abs(ratio) > ratio_threshold)
    else:
      nonconvex = ratio < -ratio_threshold
    out["ratio_frac_nonconvex"] = float(np.mean(nonconvex[ok])) if fr.size else float("nan")
    if axes and all(h.size for h in hits):
      out["ratio_origin"] = float(ratio[tuple(int(h[0]) for h in hits)])
    if "lambda_min" in metrics:
      lmin = _finite(metrics["lambda_min"])
      out["full_lambda_min"] = float(lmin.min()) if lmin.size else float("nan")
  return out


def surface_error(surf: Any, reference: Any, name: str = "loss") -> dict[str, float]:
  """How far one surface is from a reference on the same grid (e.g. ``bfloat16`` vs ``float32`` compute).

  Relative errors are ``|a - b| / |b|`` point by point over the grid points
  finite in both maps.

  Args:
    surf, reference: :class:`~jaxscape.Surface` objects on the same axes.
    name: the map to compare (``"loss"`` or a metric name).

  Returns:
    ``{"max_abs_error", "max_relative_error", "mean_relative_error",
    "num_compared"}``.

  Example:
    >>> import numpy as np
    >>> from jaxscape.surface import Surface
    >>> x = np.linspace(-1, 1, 3)
    >>> a, b = Surface((x,), np.array([1.0, 2.0, 4.0]), {}, 0, {}), Surface((x,), np.array([1.0, 2.0, 5.0]), {}, 0, {})
    >>> surface_error(a, b)["max_relative_error"]
    0.2
  """
  if len(surf.axes) != len(reference.axes) or not all(
      a.shape == b.shape and np.allclose(a, b) for a, b in zip(surf.axes, reference.axes)):
    raise ValueError(f"surfaces must share their grid; got axes of sizes {[a.size for a in surf.axes]} "
                     f"and {[a.size for a in reference.axes]}")
  get = lambda s: np.asarray(s.loss if name == "loss" else s.metrics[name], np.float64)
  a, b = get(surf), get(reference)
  ok = np.isfinite(a) & np.isfinite(b)
  if not ok.any():
    raise ValueError(f"no grid point has a finite {name!r} in both surfaces")
  err = np.abs(a[ok] - b[ok])
  rel = err / np.maximum(np.abs(b[ok]), np.finfo(np.float64).tiny)
  return {"max_abs_error": float(err.max()), "max_relative_error": float(rel.max()),
          "mean_relative_error": float(rel.mean()), "num_compared": int(ok.sum())}


def seed_summary(rows: Sequence[Mapping[str, float]]) -> dict[str, dict[str, float]]:
  """Per-key :func:`summary` (mean, std, median, min, max, count) over seeds.

  Keys missing from some rows are summarised over the rows that have them;
  NaNs are left out of each summary (``count`` says how many values were used).

  Example:
    >>> seed_summary([{"a": 1.0}, {"a": 3.0, "b": 2.0}])["a"]["mean"]
    2.0
  """
  keys: list[str] = []
  for r in rows:
    keys += [k for k in r if k not in keys]
  return {k: summary([float(r[k]) for r in rows if k in r]) for k in keys}


def is_increasing(values: Sequence[float], *, strict: bool = True) -> bool:
  """Whether a sequence increases (strictly by default); False if any value is NaN.

  Example:
    >>> is_increasing([0.1, 0.3, 0.5]), is_increasing([0.1, 0.1]), is_increasing([0.1, 0.1], strict=False)
    (True, False, True)
  """
  v = np.asarray(values, np.float64)
  if v.size == 0 or not np.all(np.isfinite(v)):
    return False
  d = np.diff(v)
  return bool(np.all(d > 0) if strict else np.all(d >= 0))


def edge_of_stability(sharpness: Sequence[float], threshold: float | Sequence[float], *,
                      band: float = 0.15) -> dict[str, Any]:
  """Where a recorded sharpness series reaches the stability threshold and how long it stays near it.

  Cohen et al. (2021), "Gradient Descent on Neural Networks Typically Occurs
  at the Edge of Stability": under full-batch gradient descent with step
  ``eta`` the top Hessian eigenvalue rises until it reaches ``2 / eta`` and
  then hovers there. With ``r_t = sharpness_t / threshold_t``, the series
  *reaches* the edge at the first record with ``r_t >= 1 - band``; from there
  on (that record included) a record is *in the band* when
  ``|r_t - 1| <= band``.

  Args:
    sharpness: the top Hessian eigenvalue at each record ``[T]``.
    threshold: the stability threshold (``2 / eta`` for plain gradient
      descent), a scalar or one value per record ``[T]``.
    band: the relative half-width of the band around the threshold.

  Returns:
    A dict: ``reached`` (bool), ``first`` (index of the record that reaches
    the edge, -1 if none), ``in_band`` (fraction of the records from
    ``first`` on that are in the band; 0.0 if never reached),
    ``plateau`` (median sharpness from ``first`` on; NaN if never reached)
    and ``plateau_ratio`` (median of ``r_t`` from ``first`` on; NaN if never).

  Raises:
    ValueError: for a non-positive or wrongly shaped threshold, a band
      outside ``(0, 1)``, or a non-finite sharpness.

  Example:
    >>> out = edge_of_stability([1.0, 3.5, 4.1, 3.9, 5.0], 4.0)
    >>> out["first"], out["in_band"], out["plateau"]
    (1, 0.75, 4.0)
  """
  s = np.asarray(sharpness, np.float64)
  if s.ndim != 1 or s.size == 0 or not np.all(np.isfinite(s)):
    raise ValueError(f"sharpness must be a non-empty 1-d series of finite values; got shape {s.shape}")
  t = np.asarray(threshold, np.float64)
  if t.shape not in ((), s.shape) or not np.all(t > 0):
    raise ValueError(f"threshold must be positive, a scalar or one per record {s.shape}; got {np.asarray(threshold)!r}")
  if not 0 < band < 1:
    raise ValueError(f"band must be in (0, 1); got {band!r}")
  ratio = s / np.broadcast_to(t, s.shape)
  hits = np.flatnonzero(ratio >= 1 - band)
  if hits.size == 0:
    return {"reached": False, "first": -1, "in_band": 0.0, "plateau": float("nan"), "plateau_ratio": float("nan")}
  first = int(hits[0])
  return {"reached": True, "first": first, "in_band": float(np.mean(np.abs(ratio[first:] - 1) <= band)),
          "plateau": float(np.median(s[first:])), "plateau_ratio": float(np.median(ratio[first:]))}


__all__ += ["slope_interval", "correlation_drop"]


def slope_interval(x: Sequence[float], y: Sequence[float], level: float = 0.95) -> tuple[float, float, float]:
  """Least-squares slope of ``y ≈ a + b x`` with its two-sided confidence interval (Student t, from the residuals).

  The interval uses the scatter about the line, so a trend that is real but not
  linear widens it rather than being hidden: ``hi < 0`` says "falls" at ``level``.

  Args:
    x, y: at least 3 paired values.
    level: confidence level of the interval.

  Returns:
    ``(slope, lo, hi)``.

  Example:
    >>> b, lo, hi = slope_interval([0, 1, 2, 3], [0.0, -1.1, -1.9, -3.0])
    >>> round(b, 2), lo < b < hi < 0
    (-0.98, True)
  """
  x, y = _pair(x, y)
  if x.size < 3 or not 0 < level < 1:
    raise ValueError(f"need at least 3 points and 0 < level < 1; got {x.size} points and level {level}")
  xc = x - x.mean()
  sxx = float((xc**2).sum())
  if sxx == 0:
    raise ValueError("x is constant: the slope is undefined")
  b = float((xc * (y - y.mean())).sum() / sxx)
  resid = y - y.mean() - b * xc
  se = np.sqrt(float((resid**2).sum()) / (x.size - 2) / sxx)
  import scipy.stats  # imported here to keep `import jaxscape` light
  half = float(scipy.stats.t.ppf(0.5 + level / 2, x.size - 2)) * se
  return b, float(b - half), float(b + half)


def correlation_drop(high: Sequence[float], low: Sequence[float], num: int) -> tuple[float, float]:
  """How far Pearson correlations fall from one group to another, in Fisher ``z = atanh(r)`` units.

  Each correlation comes from ``num`` pairs, so its ``z`` is approximately
  normal with standard error ``1 / sqrt(num - 3)`` (Fisher 1921) whatever the
  true correlation; the difference of the group means has standard error
  ``sqrt((1/len(high) + 1/len(low)) / (num - 3))``. ``r = ±1`` gives an infinite ``z``.

  Args:
    high: correlations of the group expected to be higher.
    low: correlations of the other group.
    num: pairs behind each correlation (> 3).

  Returns:
    ``(mean z(high) - mean z(low), its standard error)``.

  Example:
    >>> dz, se = correlation_drop([0.9, 0.95], [0.5], num=28)
    >>> round(dz, 3), round(se, 3)
    (1.103, 0.245)
  """
  hi, lo = np.asarray(high, np.float64).ravel(), np.asarray(low, np.float64).ravel()
  if hi.size == 0 or lo.size == 0 or num <= 3:
    raise ValueError(f"need non-empty groups and num > 3 pairs per correlation; got {hi.size}, {lo.size}, num={num}")
  if np.any(np.abs(hi) > 1 + 1e-12) or np.any(np.abs(lo) > 1 + 1e-12):
    raise ValueError(f"correlations must lie in [-1, 1]; got {hi} and {lo}")
  with np.errstate(divide="ignore"):
    z_hi, z_lo = np.arctanh(np.clip(hi, -1, 1)), np.arctanh(np.clip(lo, -1, 1))
  return float(z_hi.mean() - z_lo.mean()), float(np.sqrt((1 / hi.size + 1 / lo.size) / (num - 3)))
