"""Matplotlib figures of surfaces and curves (Agg backend; nothing is shown).

Every function takes a :class:`~jaxscape.Surface` (or arrays), draws on
``ax`` when given or on a new figure, and returns ``(fig, ax)``. The knobs
mirror the original tool's ``plot_2D.py`` (``vmin``, ``vmax``, ``vlevel``,
log scale).

Example:
  >>> import numpy as np
  >>> from jaxscape.surface import Surface
  >>> x = np.linspace(-1, 1, 5); loss = np.add.outer(x**2, x**2)
  >>> surf = Surface((x, x), loss, {}, 0, {})
  >>> fig, ax = contour(surf)
"""

from __future__ import annotations

from typing import Any

import matplotlib

matplotlib.use("Agg", force=False)
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

__all__ = ["contour", "contourf", "heatmap", "surface3d", "curve", "trajectory", "density", "save_figures", "save", "close"]


def _field(surf: Any, field: str) -> np.ndarray:
  if field == "loss":
    return np.asarray(surf.loss)
  if field not in surf.metrics:
    raise ValueError(f"surface has no field {field!r}: available {['loss', *sorted(surf.metrics)]}")
  return np.asarray(surf.metrics[field])


def _need_2d(surf: Any, what: str) -> None:
  if surf.ndim != 2:
    raise ValueError(f"{what} needs a 2-D surface; got {surf.ndim}-D (use plot.curve for 1-D)")


def _axes(ax, projection: str | None = None):
  if ax is not None:
    return ax.figure, ax
  fig = plt.figure(figsize=(6, 5))
  return fig, fig.add_subplot(111, projection=projection)


def _levels(z: np.ndarray, vmin: float | None, vmax: float | None, vlevel: float | None, log: bool, num: int = 20):
  finite = z[np.isfinite(z)]
  if finite.size == 0:
    raise ValueError("nothing to plot: every value is NaN or infinite")
  lo = np.min(finite) if vmin is None else vmin
  hi = np.max(finite) if vmax is None else vmax
  if hi <= lo:
    hi = lo + 1e-12 + abs(lo) * 1e-6
  if log:
    lo = max(lo, np.min(finite[finite > 0]) if np.any(finite > 0) else 1e-12)
    return np.geomspace(lo, hi, num)
  if vlevel is not None:
    return np.arange(lo, hi + 0.5 * vlevel, vlevel)
  return np.linspace(lo, hi, num)


def contour(surf: Any, *, field: str = "loss", ax=None, vmin=None, vmax=None, vlevel=None, log: bool = False,
            labels: bool = True, cmap: str = "summer", title: str | None = None):
  """Contour lines with labelled levels (Li et al.'s Fig. 5 style)."""
  _need_2d(surf, "contour")
  z = _field(surf, field)
  fig, ax = _axes(ax)
  norm = matplotlib.colors.LogNorm() if log else None
  cs = ax.contour(surf.x, surf.y, z, levels=_levels(z, vmin, vmax, vlevel, log), cmap=cmap, norm=norm)
  if labels:
    ax.clabel(cs, inline=True, fontsize=7, fmt="%.3g")
  ax.set_xlabel("x"), ax.set_ylabel("y"), ax.set_title(title or field)
  return fig, ax


def contourf(surf: Any, *, field: str = "loss", ax=None, vmin=None, vmax=None, vlevel=None, log: bool = False,
             cmap: str = "viridis", title: str | None = None):
  """Filled contours with a colour bar."""
  _need_2d(surf, "contourf")
  z = _field(surf, field)
  fig, ax = _axes(ax)
  norm = matplotlib.colors.LogNorm() if log else None
  cs = ax.contourf(surf.x, surf.y, z, levels=_levels(z, vmin, vmax, vlevel, log), cmap=cmap, norm=norm, extend="both")
  fig.colorbar(cs, ax=ax)
  ax.set_xlabel("x"), ax.set_ylabel("y"), ax.set_title(title or field)
  return fig, ax


def heatmap(surf: Any, *, field: str = "loss", ax=None, vmin=None, vmax=None, log: bool = False,
            cmap: str = "viridis", title: str | None = None):
  """Heat map of a field on the grid (e.g. the |λmin/λmax| ratio map)."""
  _need_2d(surf, "heatmap")
  z = _field(surf, field)
  fig, ax = _axes(ax)
  norm = matplotlib.colors.LogNorm(vmin=vmin, vmax=vmax) if log else matplotlib.colors.Normalize(vmin=vmin, vmax=vmax)
  im = ax.imshow(z, origin="lower", extent=(surf.x[0], surf.x[-1], surf.y[0], surf.y[-1]), aspect="auto", cmap=cmap, norm=norm)
  fig.colorbar(im, ax=ax)
  ax.set_xlabel("x"), ax.set_ylabel("y"), ax.set_title(title or field)
  return fig, ax


def surface3d(surf: Any, *, field: str = "loss", ax=None, zmax: float | None = None, log: bool = False,
              cmap: str = "viridis", title: str | None = None):
  """3-D surface plot (values above ``zmax`` are clipped, as ``h52vtp --zmax``)."""
  _need_2d(surf, "surface3d")
  z = _field(surf, field).copy()
  if zmax is not None:
    z = np.minimum(z, zmax)
  if log:
    z = np.log10(np.maximum(z, 1e-12))
  fig, ax = _axes(ax, projection="3d")
  xx, yy = np.meshgrid(surf.x, surf.y)
  ax.plot_surface(xx, yy, np.ma.masked_invalid(z), cmap=cmap, linewidth=0, antialiased=True)
  ax.set_xlabel("x"), ax.set_ylabel("y"), ax.set_zlabel(f"log10 {field}" if log else field)
  ax.set_title(title or field)
  return fig, ax


def curve(surf: Any, *, ax=None, log: bool = False, metric: str | None = "accuracy", label: str | None = None,
          title: str | None = None):
  """1-D curve: loss on the left axis, a metric (accuracy) on a twin right axis.

  Returns ``(fig, ax)`` where ``ax`` is the loss axis; the twin is ``ax.right``
  when drawn.
  """
  if surf.ndim != 1:
    raise ValueError(f"curve needs a 1-D surface; got {surf.ndim}-D (use contour or heatmap)")
  fig, ax = _axes(ax)
  ax.plot(surf.x, surf.loss, "b-", label=label or "loss")
  ax.set_xlabel("α"), ax.set_ylabel("loss", color="b")
  if log:
    ax.set_yscale("log")
  if metric is not None and metric in surf.metrics:
    right = ax.twinx()
    right.plot(surf.x, surf.metrics[metric], "r--", label=metric)
    right.set_ylabel(metric, color="r")
    ax.right = right
  ax.set_title(title or "loss along direction")
  return fig, ax


def trajectory(surf: Any, coords: np.ndarray, *, ax=None, explained: np.ndarray | None = None, **contour_kwargs):
  """Contours with a projected optimisation path on top (PCA directions)."""
  fig, ax = contour(surf, ax=ax, **contour_kwargs)
  coords = np.asarray(coords)
  ax.plot(coords[:, 0], coords[:, 1], "r.-", markersize=4)
  ax.plot(coords[-1, 0], coords[-1, 1], "k*", markersize=10)
  if explained is not None:
    ax.set_xlabel(f"PC1: {100 * explained[0]:.1f} %"), ax.set_ylabel(f"PC2: {100 * explained[1]:.1f} %")
  return fig, ax


def close(fig) -> None:
  """Closes a figure (free its memory in long loops)."""
  plt.close(fig)


def save(fig, path: str, *, dpi: int = 90, tight: bool = True) -> str:
  """Lays out (``tight_layout``), writes and closes a figure; returns ``path``."""
  if tight:
    fig.tight_layout()
  fig.savefig(path, dpi=dpi)
  plt.close(fig)
  return path


def save_figures(surf: Any, out_dir: str, *, prefix: str = "", vmin=None, vmax=None, vlevel=None, log: bool = False,
                 zmax: float | None = None, dpi: int = 120) -> list[str]:
  """Writes the standard figures of a surface as PNG files; returns their paths.

  2-D: ``contour.png`` (labelled levels), ``contourf.png``, ``surface3d.png``,
  and a ``heatmap_<name>.png`` for every extra map (curvature, ...) besides
  loss and accuracy. 1-D: ``curve1d.png`` (loss and accuracy on twin axes).
  """
  import os

  os.makedirs(out_dir, exist_ok=True)
  figures = []
  if surf.ndim == 1:
    figures.append(("curve1d", curve(surf, log=log)))
  elif surf.ndim == 2:
    figures.append(("contour", contour(surf, vmin=vmin, vmax=vmax, vlevel=vlevel, log=log)))
    figures.append(("contourf", contourf(surf, vmin=vmin, vmax=vmax, vlevel=vlevel, log=log)))
    figures.append(("surface3d", surface3d(surf, zmax=zmax, log=log)))
    for name in sorted(surf.metrics):
      if name != "accuracy":
        figures.append((f"heatmap_{name}", heatmap(surf, field=name)))
  else:
    raise ValueError(f"no standard figures for a {surf.ndim}-D surface; slice it to 1-D or 2-D first")
  paths = []
  for name, (fig, _) in figures:
    path = os.path.join(out_dir, f"{prefix}{name}.png")
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    close(fig)
    paths.append(path)
  return paths


def density(dens: Any, *, ax=None, log: bool = False, title: str | None = None):
  """A Hessian spectral density (SLQ): linear or log-scale density axis.

  Takes a :class:`jaxscape.spectral.Density` (or anything with ``grid``,
  ``density`` and ``sigma``).
  """
  fig, ax = _axes(ax)
  grid, dens_values = np.asarray(dens.grid), np.asarray(dens.density)
  if log:
    ax.semilogy(grid, np.maximum(dens_values, 1e-12))
  else:
    ax.plot(grid, dens_values)
  ax.axvline(0.0, color="k", lw=0.5)
  ax.set_xlabel("eigenvalue"), ax.set_ylabel("density")
  ax.set_title(title or f"Hessian spectral density (Gaussian σ = {float(np.asarray(dens.sigma)):.3g})")
  return fig, ax
