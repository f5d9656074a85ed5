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

import os
from typing import Any

import matplotlib

matplotlib.use("Agg", force=False)
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

__all__ = ["contour", "contourf", "heatmap", "surface3d", "curve", "trajectory", "density", "save_figures", "save", "close",
           "axis_labels", "field_label", "FIGSIZE", "html", "html_views"]
__all__ += ["panels", "critical_points", "path_losses", "curvature_slice", "spectrum", "signed_log_histogram",
            "loss_vs_index", "escape", "critical_point_figures", "curvature_panels",
            "bowl_and_slices"]


def _field(surf: Any, field: str) -> np.ndarray:
  if field == "loss":
    return np.asarray(surf.loss)
  if field not in surf.metrics:
    raise ValueError(f"surface has no field {field!r}: available {['loss', *sorted(surf.metrics)]}")
  return np.asarray(surf.metrics[field])


def _need_2d(surf: Any, what: str) -> None:
  if surf.ndim != 2:
    raise ValueError(f"{what} needs a 2-D surface; got {surf.ndim}-D (use plot.curve for 1-D)")


FIGSIZE = (4.5, 3.6)
"""Inches of a single figure: one column of a two-column paper at full size (fonts stay readable)."""


def _axes(ax, projection: str | None = None):
  if ax is not None:
    return ax.figure, ax
  fig = plt.figure(figsize=FIGSIZE)
  return fig, fig.add_subplot(111, projection=projection)


_NORM_NAMES = {"filter": "filter-normalised", "layer": "layer-normalised", "model": "model-normalised",
               "none": "unnormalised"}


def axis_labels(surf: Any) -> tuple[str, str]:
  """Names of the x and y axes from the directions recorded with a surface (``"x"``/``"y"`` when unknown).

  Random directions say their normalisation (``δ (random, filter-normalised)``),
  Hessian directions their eigenvalue, an interpolation its ends, PCA
  directions their explained variance.
  """
  info = ((getattr(surf, "meta", None) or {}).get("config") or {}).get("directions") or {}
  kind = info.get("kind")
  if kind == "random":
    norm = _NORM_NAMES.get(info.get("norm"), info.get("norm"))
    return f"δ (random, {norm})", f"η (random, {norm})"
  if kind == "hessian":
    lam = info.get("eigenvalues") or []
    names = [f"v{i + 1} (λ = {v:.3g})" if i < len(lam) else f"v{i + 1}" for i, v in enumerate(lam[:2] + [None] * 2)]
    return names[0], names[1]
  if kind == "interpolation":
    return "α (0: θa, 1: θb)", "y"
  if kind == "plane":
    return "α (θb − θa)", "β (θc − θa)"
  if kind == "pca":
    ratio = info.get("explained_variance_ratio") or [None, None]
    return tuple(f"PC{i + 1}" + (f" ({100 * r:.1f} % var.)" if r is not None else "") for i, r in
                 enumerate(ratio[:2] + [None] * (2 - len(ratio[:2]))))
  return "x", "y"


def field_label(surf: Any, field: str) -> str:
  """``"train loss (cross_entropy)"``: the field with the data split and loss recorded with the surface."""
  objective = ((getattr(surf, "meta", None) or {}).get("config") or {}).get("objective") or {}
  if field != "loss":
    return field
  dataset, loss = objective.get("dataset"), objective.get("loss")
  split = dataset.rsplit("-", 1)[-1] if isinstance(dataset, str) and "-" in dataset else None
  return f"{split + ' ' if split in ('train', 'test') else ''}loss" + (f" ({loss})" if loss else "")


def _mark_origin(ax, surf: Any) -> None:
  """A star at the grid's origin (the point the surface is centred on) when it lies inside the grid."""
  if surf.x[0] <= 0 <= surf.x[-1] and surf.y[0] <= 0 <= surf.y[-1]:
    ax.plot([0.0], [0.0], marker="*", color="k", markersize=9, linestyle="none", label="θ (centre)")


def _colorbar(fig, mappable, ax, label: str, log: bool):
  bar = fig.colorbar(mappable, ax=ax)
  bar.set_label(label)
  if log:
    bar.locator = matplotlib.ticker.LogLocator(subs=(1.0, 2.0, 5.0))
    bar.formatter = matplotlib.ticker.LogFormatterSciNotation(labelOnlyBase=False)
    bar.update_ticks()
  return bar


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
  if lo > 0 and hi / lo > 100:  # a basin far below the rim: log-spaced levels keep lines in the basin
    return np.geomspace(lo, hi, num)
  return np.linspace(lo, hi, num)


def _level_format(value: float) -> str:
  return f"{value:.3g}"


def contour(surf: Any, *, field: str = "loss", ax=None, vmin=None, vmax=None, vlevel=None, log: bool = False,
            labels: bool = True, cmap: str = "summer", title: str | None = None):
  """Contour lines with labelled levels (Li et al.'s Fig. 5 style)."""
  _need_2d(surf, "contour")
  z = _field(surf, field)
  fig, ax = _axes(ax)
  norm = matplotlib.colors.LogNorm() if log else None
  cs = ax.contour(surf.x, surf.y, z, levels=_levels(z, vmin, vmax, vlevel, log), cmap=cmap, norm=norm)
  if labels:
    ax.clabel(cs, inline=True, fontsize=7, fmt=_level_format)
  _mark_origin(ax, surf)
  xlabel, ylabel = axis_labels(surf)
  ax.set_xlabel(xlabel), ax.set_ylabel(ylabel), ax.set_title(title or field_label(surf, field))
  return fig, ax


def contourf(surf: Any, *, field: str = "loss", ax=None, vmin=None, vmax=None, vlevel=None, log: bool = False,
             cmap: str = "viridis", title: str | None = None):
  """Filled contours with a colour bar."""
  _need_2d(surf, "contourf")
  z = _field(surf, field)
  fig, ax = _axes(ax)
  norm = matplotlib.colors.LogNorm() if log else None
  cs = ax.contourf(surf.x, surf.y, z, levels=_levels(z, vmin, vmax, vlevel, log), cmap=cmap, norm=norm, extend="both")
  _colorbar(fig, cs, ax, field_label(surf, field), log)
  _mark_origin(ax, surf)
  xlabel, ylabel = axis_labels(surf)
  ax.set_xlabel(xlabel), ax.set_ylabel(ylabel), ax.set_title(title or field_label(surf, field))
  return fig, ax


def heatmap(surf: Any, *, field: str = "loss", ax=None, vmin=None, vmax=None, log: bool = False,
            cmap: str = "viridis", title: str | None = None):
  """Heat map of a field on the grid (e.g. the |λmin/λmax| ratio map)."""
  _need_2d(surf, "heatmap")
  z = _field(surf, field)
  fig, ax = _axes(ax)
  norm = matplotlib.colors.LogNorm(vmin=vmin, vmax=vmax) if log else matplotlib.colors.Normalize(vmin=vmin, vmax=vmax)
  im = ax.imshow(z, origin="lower", extent=(surf.x[0], surf.x[-1], surf.y[0], surf.y[-1]), aspect="auto", cmap=cmap, norm=norm)
  _colorbar(fig, im, ax, field_label(surf, field), log)
  _mark_origin(ax, surf)
  xlabel, ylabel = axis_labels(surf)
  ax.set_xlabel(xlabel), ax.set_ylabel(ylabel), ax.set_title(title or field_label(surf, field))
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
  label = field_label(surf, field)
  xlabel, ylabel = axis_labels(surf)
  ax.set_xlabel(xlabel, fontsize=8), ax.set_ylabel(ylabel, fontsize=8)
  ax.set_zlabel(f"log10 {label}" if log else label, fontsize=8)
  ax.locator_params(nbins=4)  # fewer ticks: the labels of a 3-D box overlap otherwise
  ax.tick_params(labelsize=7)
  ax.set_title(title or label)
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
  loss_label = field_label(surf, "loss")
  ax.plot(surf.x, surf.loss, "b-", label=label or loss_label)
  xlabel = axis_labels(surf)[0]
  ax.set_xlabel("α" if xlabel == "x" else xlabel)
  if log:
    ax.set_yscale("log")
  ends = [a for a in ((0.0, 1.0) if xlabel.startswith("α (0") else (0.0,)) if surf.x[0] <= a <= surf.x[-1]]
  if ends:  # the solutions the curve is about: θ (or θa and θb of an interpolation)
    ax.plot(ends, np.interp(ends, surf.x, surf.loss), "ko", markersize=5, label="θa, θb" if len(ends) == 2 else "θ")
  twin = metric is not None and metric in surf.metrics
  ax.set_ylabel(loss_label, color="b" if twin else "k")  # colours name the axes only when there are two
  if twin:
    right = ax.twinx()
    right.plot(surf.x, surf.metrics[metric], "r--", label=metric)
    right.set_ylabel(metric, color="r")
    ax.right = right
  ax.set_title(title or f"{loss_label} along the direction")
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


def html(surf: Any, path: str, *, field: str = "loss", log: bool = False, plotlyjs: str = "directory") -> str:
  """Writes an interactive, self-contained HTML view of a surface (plotly; works offline, no CDN).

  2-D: a rotatable 3-D surface beside a contour map; 1-D: the curve. Axis
  names, the title and the trained-point marker are those of the PNG figures
  (:func:`axis_labels`, :func:`field_label`). ``plotlyjs="directory"`` writes
  ``plotly.min.js`` once next to the HTML files (many surfaces share it);
  ``"inline"`` embeds it (one ~4 MB file). Needs ``pip install plotly``
  (the ``html`` extra).

  Returns:
    ``path``.
  """
  try:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots
  except ImportError:
    raise ImportError("interactive HTML figures need plotly: pip install plotly (or the 'html' extra)") from None
  z = _field(surf, field).astype(float)
  shown = np.log10(np.maximum(z, 1e-12)) if log else z
  label = field_label(surf, field)
  zlabel = f"log10 {label}" if log else label
  xlabel, ylabel = axis_labels(surf)
  note = partial_note(surf)
  title = label + (f" — {note}" if note else "")
  if surf.ndim == 1:
    fig = go.Figure(go.Scatter(x=np.asarray(surf.x), y=shown, mode="lines", name=label))
    fig.update_layout(xaxis_title="α" if xlabel == "x" else xlabel, yaxis_title=zlabel)
  else:
    _need_2d(surf, "html")
    fig = make_subplots(rows=1, cols=2, specs=[[{"type": "surface"}, {"type": "xy"}]],
                        subplot_titles=("surface", "contours"))
    x, y = np.asarray(surf.x), np.asarray(surf.y)
    fig.add_trace(go.Surface(x=x, y=y, z=shown, colorscale="Viridis", colorbar={"title": zlabel, "x": 0.40, "len": 0.8}), 1, 1)
    fig.add_trace(go.Contour(x=x, y=y, z=shown, colorscale="Viridis", showscale=False,
                             contours={"showlabels": True}), 1, 2)
    if x[0] <= 0 <= x[-1] and y[0] <= 0 <= y[-1]:
      fig.add_trace(go.Scatter(x=[0.0], y=[0.0], mode="markers", marker={"symbol": "star", "size": 12,
                                                                         "color": "black"}, name="θ (centre)"), 1, 2)
    fig.update_layout(scene={"xaxis_title": xlabel, "yaxis_title": ylabel, "zaxis_title": zlabel})
    fig.update_xaxes(title_text=xlabel, row=1, col=2)
    fig.update_yaxes(title_text=ylabel, row=1, col=2)
  fig.update_layout(title=title, width=1100, height=520)
  if plotlyjs not in ("directory", "inline"):
    raise ValueError(f"plotlyjs must be 'directory' or 'inline'; got {plotlyjs!r}")
  fig.write_html(path, include_plotlyjs="directory" if plotlyjs == "directory" else True, full_html=True)
  return path


MAX_HTML = 12
"""Interactive views an experiment's report links at most (the first surfaces, by directory name)."""


def html_views(out_dir: str, limit: int = MAX_HTML) -> list[str]:
  """Interactive HTML views (:func:`html`) of the surfaces a run saved in ``out_dir``'s subdirectories.

  They go to ``out_dir/html/<surface>.html`` with one shared ``plotly.min.js``
  (offline). Returns their paths relative to ``out_dir`` (none without plotly).
  """
  from . import io as jio
  from .surface import load_surface

  try:
    import plotly  # noqa: F401
  except ImportError:
    return []
  names = []
  for name in ["."] + sorted(n for n in os.listdir(out_dir) if not n.startswith(".") and n != "html"):
    try:
      kind = jio.load_result(os.path.join(out_dir, name))[1].get("config", {}).get("kind")
    except (OSError, ValueError):
      continue
    if kind == "surface":
      names.append(name)
  written = []
  for name in names[:limit]:
    surf = load_surface(os.path.join(out_dir, name))
    name = "surface" if name == "." else name
    if surf.ndim in (1, 2) and np.isfinite(surf.loss).any():
      os.makedirs(os.path.join(out_dir, "html"), exist_ok=True)
      written.append(os.path.relpath(html(surf, os.path.join(out_dir, "html", f"{name}.html")), out_dir))
  return written


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


def partial_note(surf: Any) -> str | None:
  """``"partial: 56/441 points"`` for a surface whose run has not finished (from its meta), else None."""
  meta = getattr(surf, "meta", None) or {}
  done, total = meta.get("num_done"), meta.get("num_points")
  if done is None or total is None or int(done) >= int(total):
    return None
  return f"partial: {int(done)}/{int(total)} points (the rest not evaluated yet)"


def save_figures(surf: Any, out_dir: str, *, prefix: str = "", vmin=None, vmax=None, vlevel=None, log: bool = False,
                 zmax: float | None = None, dpi: int = 120) -> list[str]:
  """Writes the standard figures of a surface as PNG files; returns their paths.

  2-D: ``contour.png`` (labelled levels), ``contourf.png``, ``surface3d.png``,
  and a ``heatmap_<name>.png`` for every extra map (curvature, ...) besides
  loss and accuracy. 1-D: ``curve1d.png`` (loss and accuracy on twin axes).
  A surface whose run has not finished says so on every figure
  (:func:`partial_note`); its missing points stay blank.
  """
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
  note = partial_note(surf)
  paths = []
  for name, (fig, _) in figures:
    if note:
      fig.suptitle(note, color="firebrick")
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


# --- figures: critical points, paths, test functions (experiments-b)


def panels(n: int, *, cols: int | None = None, size: tuple[float, float] = (5.0, 4.0), title: str | None = None):
  """A figure of ``n`` panels in rows of ``cols`` (default: one row); unused axes are hidden.

  Returns ``(fig, axes)`` with ``axes`` a flat list of the ``n`` panels;
  ``size`` is one panel's size in inches.

  Example:
    >>> fig, axes = panels(5, cols=3, title="five")
    >>> len(axes), len(fig.axes)
    (5, 5)
  """
  cols = min(n, cols or n)
  rows = -(-n // cols)
  fig, grid = plt.subplots(rows, cols, figsize=(size[0] * cols, size[1] * rows), squeeze=False)
  flat = list(grid.ravel())
  for ax in flat[n:]:
    fig.delaxes(ax)
  if title:
    fig.suptitle(title)
  return fig, flat[:n]


_KIND_STYLE = {"minimum": ("o", "tab:green"), "saddle": ("x", "tab:orange"), "maximum": ("^", "tab:red"),
               "degenerate": ("s", "tab:purple")}


def critical_points(x: np.ndarray, y: np.ndarray, z: np.ndarray, points: Any, *, known: Any = (), ax=None,
                    title: str | None = None):
  """Contours of ``log(1 + f - min f)`` on a grid with critical points marked by kind.

  Args:
    x, y: grid coordinates (``[nx]``, ``[ny]``).
    z: function values ``[ny, nx]``.
    points: critical points, each with ``.x`` (coordinates) and ``.kind``
      (``minimum``, ``saddle``, ``maximum``, ``degenerate``), e.g.
      :func:`jaxscape.testfns.find_critical_points`'s result.
    known: points to ring in white (e.g. a landscape's tabulated points).
  """
  fig, ax = _axes(ax)
  zz = np.log1p(z - np.min(z))  # log scale relative to the lowest grid value
  ax.contourf(x, y, zz, levels=30, cmap="viridis")
  ax.contour(x, y, zz, levels=12, colors="k", linewidths=0.3, alpha=0.5)
  small = len(points) > 40
  for kind, (marker, color) in _KIND_STYLE.items():
    pts = np.array([p.x for p in points if p.kind == kind]).reshape(-1, 2)
    if pts.size:
      ax.scatter(pts[:, 0], pts[:, 1], marker=marker, c=color, s=10 if small else 40, linewidths=1.5,
                 label=f"{kind} ({len(pts)})", zorder=3)
  if len(known):
    ring = np.array([p.x for p in known]).reshape(-1, 2)
    ax.scatter(ring[:, 0], ring[:, 1], facecolors="none", edgecolors="white", s=110, linewidths=1.0,
               label="tabulated", zorder=2)
  ax.set_xlim(x[0], x[-1])
  ax.set_ylim(y[0], y[-1])
  ax.set_title(title or f"{len(points)} critical points", fontsize=10)
  ax.legend(fontsize=6, loc="upper right", framealpha=0.7)
  return fig, ax


def path_losses(alphas: np.ndarray, losses: np.ndarray, *, colors: Any = None, labels: Any = None, ax=None,
                log: bool = True, ylabel: str | None = None, title: str | None = None):
  """Loss along paths: one line per row of ``losses`` ``[paths, len(alphas)]`` (log scale by default)."""
  fig, ax = _axes(ax)
  for i, line in enumerate(np.asarray(losses)):
    ax.plot(alphas, line, lw=1, color=None if colors is None else colors[i], label=None if labels is None else labels[i])
  ax.set(xlabel="alpha", title=title or "loss along paths")
  if ylabel:
    ax.set_ylabel(ylabel)
  if log:
    ax.set_yscale("log")
  if labels is not None:
    ax.legend(fontsize=6, ncol=2)
  return fig, ax


def curvature_slice(surf: Any, *, rel: float = 0.01, ax=None, title: str | None = None):
  """Filled contours of ``log10 loss`` on a 2-D surface, red where the plane curvature is significantly negative.

  Needs a surface computed with ``curvature="plane"``: a point is marked when
  ``plane_lambda_min < -rel |plane_lambda_max|`` (as
  :func:`jaxscape.stats.nonconvex_fraction` counts); the white star is the origin.
  """
  _need_2d(surf, "curvature_slice")
  fig, ax = _axes(ax)
  lo, hi = _field(surf, "plane_lambda_min"), _field(surf, "plane_lambda_max")
  cs = ax.contourf(surf.x, surf.y, np.log10(surf.loss), levels=25, cmap="viridis")
  fig.colorbar(cs, ax=ax, label="log10 loss")
  bad = lo < -rel * np.abs(hi)
  yy, xx = np.meshgrid(surf.y, surf.x, indexing="ij")
  ax.scatter(xx[bad], yy[bad], s=6, c="tab:red", label=f"lambda_min < -{rel:g}|lambda_max|")
  ax.plot(0, 0, "w*", ms=10)
  ax.set_title(title or "negative plane curvature", fontsize=9)
  ax.legend(fontsize=7, loc="lower right")
  return fig, ax


def curvature_panels(surfaces: Any, titles: Any, *, rel: float = 0.01, spectrum_of: np.ndarray | None = None,
                     spectrum_title: str | None = None, size: tuple[float, float] = (5, 4.4)):
  """One :func:`curvature_slice` panel per surface, then (optionally) a :func:`spectrum` panel; returns ``(fig, axes)``."""
  fig, axes = panels(len(surfaces) + (spectrum_of is not None), size=size)
  for ax, surf, title in zip(axes, surfaces, titles):
    curvature_slice(surf, rel=rel, ax=ax, title=title)
  if spectrum_of is not None:
    spectrum(spectrum_of, ax=axes[-1], title=spectrum_title)
  return fig, axes


def bowl_and_slices(bowl: Any, slices: Any, *, bowl_title: str | None = None, slice_titles: Any = None,
                    marks: Any = None, size: tuple[float, float] = (5.0, 4.4)):
  """A convex landscape as a 3-D bowl beside filled-contour slices of a non-convex one; returns ``(fig, axes)``.

  The first panel draws ``bowl`` (:func:`surface3d`, e.g. a linear net's
  loss over the two products it depends on), the others ``log10 loss`` of
  each 2-D slice with its marked points (minima, permuted copies).

  Args:
    bowl: a 2-D :class:`~jaxscape.Surface` (anything with ``x``, ``y``,
      ``loss[ny, nx]``, ``ndim``).
    slices: 2-D surfaces of the second landscape.
    bowl_title, slice_titles: panel titles.
    marks: per slice, a list of ``(x, y, label)`` points to mark and label.
    size: one panel's size in inches.

  Example:
    >>> import numpy as np
    >>> from jaxscape.surface import Surface
    >>> x = np.linspace(-1, 1, 5)
    >>> bowl = Surface((x, x), np.add.outer(x**2, x**2), {}, 0, {})
    >>> fig, axes = bowl_and_slices(bowl, [bowl], marks=[[(0.0, 0.0, "min")]])
    >>> len(axes), axes[0].name
    (2, '3d')
  """
  slices, marks = list(slices), list(marks or [[] for _ in slices])
  titles = list(slice_titles or [None] * len(slices))
  if not len(marks) == len(titles) == len(slices):
    raise ValueError(f"need one list of marks and one title per slice ({len(slices)}); got {len(marks)} lists of "
                     f"marks and {len(titles)} titles")
  for s in (bowl, *slices):
    _need_2d(s, "bowl_and_slices")
  fig = plt.figure(figsize=(size[0] * (1 + len(slices)), size[1]))
  axes = [fig.add_subplot(1, 1 + len(slices), 1, projection="3d")]
  surface3d(bowl, ax=axes[0], title=bowl_title or "convex bowl")
  for i, (surf, title, points) in enumerate(zip(slices, titles, marks)):
    ax = fig.add_subplot(1, 1 + len(slices), i + 2)
    cs = ax.contourf(surf.x, surf.y, np.log10(np.maximum(np.asarray(surf.loss), 1e-300)), levels=30, cmap="viridis")
    fig.colorbar(cs, ax=ax, label="log10 loss")
    for x, y, label in points:
      ax.plot(x, y, "w*", ms=9, mec="k")
      ax.annotate(label, (x, y), xytext=(4, 4), textcoords="offset points", color="w", fontsize=8)
    ax.set_title(title or "slice", fontsize=9)
    axes.append(ax)
  return fig, axes


def spectrum(eigenvalues: np.ndarray, *, ax=None, title: str | None = None):
  """Eigenvalues in ascending order against their rank (a stem plot)."""
  fig, ax = _axes(ax)
  lam = np.sort(np.asarray(eigenvalues))
  ax.stem(np.arange(lam.size), lam, markerfmt=".", basefmt="k-")
  ax.set(xlabel="eigenvalue rank", ylabel="eigenvalue")
  ax.set_title(title or "spectrum", fontsize=9)
  return fig, ax


def _signed_log(lam: np.ndarray, floor: float) -> np.ndarray:
  return np.sign(lam) * np.log10(1 + np.abs(lam) / floor)


def signed_log_histogram(eigenvalues: Any, *, labels: Any = None, bins: Any = 40, floor: float = 1e-4, ax=None,
                         title: str | None = None):
  """Histograms of eigenvalues on the signed log scale ``sign(l) log10(1 + |l| / floor)``.

  ``eigenvalues`` is one array (a filled histogram) or a list of arrays with
  ``labels`` (one outlined histogram each).
  """
  fig, ax = _axes(ax)
  if labels is None:
    ax.hist(_signed_log(np.asarray(eigenvalues), floor), bins=bins, color="tab:blue")
  else:
    for lam, label in zip(eigenvalues, labels):
      ax.hist(_signed_log(np.asarray(lam), floor), bins=bins, histtype="step", lw=1.5, label=label)
    ax.legend(fontsize=7)
  ax.axvline(0, color="k", lw=0.8)
  ax.set(xlabel=f"sign(lambda) log10(1 + |lambda| / {floor:g})", ylabel="count",
         title=title or "Hessian eigenvalues")
  return fig, ax


def loss_vs_index(loss: np.ndarray, index: np.ndarray, *, color: np.ndarray | None = None,
                  marked: np.ndarray | None = None, cutoff: float | None = None, zoom: float = 0.2, ax=None,
                  title: str | None = None, color_label: str = "epoch of the start snapshot",
                  marked_label: str = "trained point refined by SFN"):
  """Loss against index of critical points (Dauphin et al. 2014, Fig. 1), with a zoomed inset.

  Args:
    loss, index: one value per critical point.
    color: values that colour the points (e.g. the epoch a search started from).
    marked: boolean mask of points drawn as red stars instead.
    cutoff: a loss drawn as a dotted vertical line.
    zoom: the inset shows the lowest ``zoom`` of the loss range (when it holds
      at least 3 points and not all of them).
  """
  fig, ax = _axes(ax)
  loss, index = np.asarray(loss), np.asarray(index)
  color = np.zeros(loss.size) if color is None else np.asarray(color)
  marked = np.zeros(loss.size, bool) if marked is None else np.asarray(marked, bool)
  vmax = max(1, int(color.max()) if color.size else 1)

  def draw(a, size):
    sc = a.scatter(loss[~marked], index[~marked], c=color[~marked], cmap="viridis", s=size, vmin=0, vmax=vmax)
    if marked.any():
      a.scatter(loss[marked], index[marked], marker="*", s=5 * size, facecolor="none", edgecolor="tab:red",
                label=marked_label)
    if cutoff is not None:
      a.axvline(cutoff, color="k", ls=":", lw=1, label="lowest 10% of the loss range")
    return sc

  fig.colorbar(draw(ax, 22), ax=ax, label=color_label)
  ax.set(xlabel="loss at the critical point (train CE + L2)", ylabel="index (fraction of negative eigenvalues)",
         title=title or "loss vs index")
  if marked.any() or cutoff is not None:
    ax.legend(fontsize=7, loc="lower right")
  # most points crowd the bottom of the loss range: zoom into it
  lo, hi = (loss.min(), loss.max()) if loss.size else (0.0, 0.0)
  near = loss <= lo + zoom * (hi - lo)
  if loss.size and near.sum() >= 3 and (~near).any():
    inset = ax.inset_axes([0.12, 0.42, 0.5, 0.5])
    draw(inset, 10)
    pad = 0.05 * (loss[near].max() - lo) + 1e-12
    inset.set_xlim(lo - pad, loss[near].max() + pad)
    inset.set_ylim(-0.05 * index[near].max() - 1e-3, 1.1 * index[near].max() + 1e-3)
    inset.tick_params(labelsize=6)
    inset.set_title(f"zoom: lowest {100 * zoom:g}% of the loss range", fontsize=7)
  return fig, ax


def escape(losses: dict[str, np.ndarray], steps: dict[str, int], *, threshold: float, ax=None,
           title: str | None = None):
  """Loss change from a start next to a saddle, one line per method (symlog scale).

  ``steps[m]`` is the step at which method ``m`` dropped by ``threshold``
  (``-1``: never); the dotted line marks ``-threshold``.
  """
  fig, ax = _axes(ax)
  for m, line in losses.items():
    ax.plot(line - line[0], label=f"{m} (escape {steps[m]})")
  ax.axhline(-threshold, color="k", ls=":", lw=0.8)
  ax.set(xlabel="step", ylabel="loss - loss at start", title=title or "escaping a saddle")
  ax.set_yscale("symlog", linthresh=1e-4)
  ax.legend(fontsize=7)
  return fig, ax


def critical_point_figures(loss: np.ndarray, index: np.ndarray, eigenvalues: np.ndarray, *, color: np.ndarray,
                           marked: np.ndarray, cutoff: float, title: str, escapes: Any = None,
                           escape_titles: Any = ()) -> dict[str, Any]:
  """The figures of a critical-point population and its saddle escapes (Dauphin et al. 2014, Figs. 1-3).

  Args:
    loss, index, eigenvalues: ``[P]``, ``[P]``, ``[P, n]`` of the distinct points, ascending in loss.
    color, marked, cutoff, title: as :func:`loss_vs_index`.
    escapes: a :class:`jaxscape.newton.EscapeComparison` (or ``None``), drawn by :func:`escape`.
    escape_titles: one panel title per escape saddle.

  Returns:
    ``{"loss_vs_index", "summary"}``, plus ``"eigenvalue_histograms"`` (the lowest-loss point, the saddle of
    median loss, the highest-loss point) when there are points and ``"saddle_escape"`` when there are escapes;
    each ``(fig, axes)``. The summary row: the scatter, the three spectra, the escape from the median saddle.
  """
  loss, index = np.asarray(loss), np.asarray(index)
  scatter = lambda ax: loss_vs_index(loss, index, color=color, marked=marked, cutoff=cutoff, ax=ax, title=title)  # noqa: E731
  draw_escape = lambda ax, j: escape(  # noqa: E731
      {m: escapes.losses[j, k] for k, m in enumerate(escapes.methods)},
      {m: int(escapes.steps[j, k]) for k, m in enumerate(escapes.methods)}, threshold=escapes.threshold, ax=ax,
      title=escape_titles[j])
  out = {"loss_vs_index": panels(1, size=(5.8, 4.3))}
  scatter(out["loss_vs_index"][1][0])
  picks = {}
  if loss.size:
    mid = [i for i in range(loss.size) if index[i] > 0] or list(range(loss.size))
    picks = {"low": 0, "medium": mid[len(mid) // 2], "high": loss.size - 1}
    out["eigenvalue_histograms"] = fig, axes = panels(3, size=(4.67, 3.6))
    for ax, (name, i) in zip(axes, picks.items()):
      signed_log_histogram(eigenvalues[i], ax=ax, title=f"{name} loss {loss[i]:.3g}: index {index[i]:.3f}")
  has_escapes = escapes is not None and len(escapes)
  if has_escapes:
    out["saddle_escape"] = fig, axes = panels(len(escapes), size=(5, 3.8))
    for j, ax in enumerate(axes[:len(escapes)]):
      draw_escape(ax, j)
  out["summary"] = fig, axes = panels(3, size=(5.67, 4.3))
  scatter(axes[0])
  if picks:
    signed_log_histogram(eigenvalues[list(picks.values())], bins=np.linspace(-4.5, 4.5, 46), ax=axes[1],
                         labels=[f"{k}: loss {loss[i]:.3g}, index {index[i]:.3f}" for k, i in picks.items()])
  if has_escapes:
    draw_escape(axes[2], len(escapes) // 2)
  return out


# --- figures: surfaces and training (house)
__all__ += ["landscape_grid", "ratio_maps", "seed_trends"]


def landscape_grid(surfaces: Any, *, titles: Any = None, rel: float = 0.01, title: str = "",
                   num_levels: int = 30):
  """Rows x columns of 2-D surfaces, each a contour panel and a 3-D log-loss panel (Li et al. 2018, Fig. 5).

  All panels share ``num_levels`` log-spaced contour levels and one 3-D
  height range, so walls of different heights compare at a glance. Red dots
  mark the interior points whose finite-difference 2x2 Hessian has
  ``lambda_min < -rel |lambda_max|`` (:func:`jaxscape.stats.finite_difference_plane_hessian`);
  the star marks the origin.

  Args:
    surfaces: a nested sequence ``[row][col]`` of :class:`~jaxscape.Surface`.
    titles: the same nesting of panel titles (``None``: none).
    rel: the non-convexity threshold of the red dots.
    title: the figure title; the shared levels are appended to it.
    num_levels: contour levels.

  Returns:
    ``(fig, axes)`` with ``axes[row][2 * col]`` the contour and ``axes[row][2 * col + 1]`` the 3-D panel.
  """
  import math

  from matplotlib.colors import LogNorm

  from .stats import finite_difference_plane_hessian

  rows = [list(r) for r in surfaces]
  vals = np.concatenate([np.asarray(s.loss).ravel() for r in rows for s in r])
  vals = vals[np.isfinite(vals) & (vals > 0)]
  lo, hi = float(vals.min()), float(vals.max())
  levels, norm = np.geomspace(lo, hi, num_levels), LogNorm(vmin=lo, vmax=hi)
  ncol = 2 * max(len(r) for r in rows)
  fig = plt.figure(figsize=(3.6 * ncol, 3.6 * len(rows)))
  axes = []
  for i, row in enumerate(rows):
    axes.append([])
    for j, surf in enumerate(row):
      z = np.asarray(surf.loss)
      ax = fig.add_subplot(len(rows), ncol, i * ncol + 2 * j + 1)
      ax.contour(surf.x, surf.y, np.ma.masked_invalid(z), levels=levels, norm=norm, cmap="viridis", linewidths=0.8)
      lmin, lmax = finite_difference_plane_hessian(z, surf.x, surf.y)
      bad = np.zeros_like(z, bool)
      bad[1:-1, 1:-1] = (lmin < -rel * np.abs(lmax))[1:-1, 1:-1]
      xx, yy = np.meshgrid(surf.x, surf.y)
      ax.plot(xx[bad], yy[bad], "r.", markersize=3)
      ax.plot(0, 0, "k*", markersize=8)
      if titles is not None:
        ax.set_title(titles[i][j], fontsize=9)
      ax.set_aspect("equal")
      ax.tick_params(labelsize=7)
      ax3 = fig.add_subplot(len(rows), ncol, i * ncol + 2 * j + 2, projection="3d")
      ax3.plot_surface(xx, yy, np.ma.masked_invalid(np.log10(np.maximum(z, 1e-12))), cmap="viridis", linewidth=0,
                       antialiased=True, vmin=math.log10(lo), vmax=math.log10(hi))
      ax3.set_zlim(math.log10(lo), math.log10(hi))
      ax3.set_zlabel("log10 loss", fontsize=7)
      ax3.tick_params(labelsize=6)
      axes[-1] += [ax, ax3]
  fig.suptitle(f"{title}{'; ' if title else ''}contours at {num_levels} log-spaced levels {lo:.2g}..{hi:.2g}; "
               f"red dots: finite-difference plane lambda_min < -{rel}|lambda_max|", fontsize=10)
  return fig, axes


def ratio_maps(surfaces: Any, *, titles: Any = None, field: str = "convexity_ratio", title: str = "",
               label: str = "lambda_min / lambda_max (full Hessian; < 0: non-convex)"):
  """Rows x columns of heat maps of one curvature map in [-1, 1] with a shared colour bar (Li et al. 2018, Fig. 7).

  The signed ratio ``lambda_min / lambda_max`` (Li et al. plot its magnitude):
  red below 0 (non-convex), blue above (convex); values beyond +-1 saturate.

  Args:
    surfaces: a nested sequence ``[row][col]`` of 2-D surfaces holding ``field``.
    titles: panel titles in the same nesting; ``None``: the map's median.
    field: the map to show.
    title: the figure title.
    label: the colour bar label.

  Returns:
    ``(fig, axes)``, ``axes`` a 2-D array.
  """
  rows = [list(r) for r in surfaces]
  fig, axes = plt.subplots(len(rows), max(len(r) for r in rows), figsize=(3.4 * max(len(r) for r in rows),
                                                                           3.2 * len(rows)), squeeze=False)
  for i, row in enumerate(rows):
    for j, s in enumerate(row):
      m = _field(s, field)
      im = axes[i, j].imshow(m, origin="lower", extent=(s.x[0], s.x[-1], s.y[0], s.y[-1]), cmap="RdBu",
                             vmin=-1.0, vmax=1.0)
      axes[i, j].set_title(titles[i][j] if titles is not None else f"median {np.nanmedian(m):.2f}", fontsize=9)
  fig.colorbar(im, ax=axes.ravel().tolist(), shrink=0.8, label=label)
  if title:
    fig.suptitle(title, fontsize=10)
  return fig, axes


def seed_trends(x: Any, panels: dict[str, dict[str, Any]], *, colors: Any = None, dashed: Any = None,
                xlabel: str = "", title: str = ""):
  """One panel per quantity against ``x``: every seed (dots) and the seed mean (line), one colour per group.

  Args:
    x: the shared abscissa (e.g. depths), length ``n``.
    panels: ``{ylabel: {group: values [n, seeds]}}``.
    colors: ``{group: colour}`` (default: the colour cycle).
    dashed: ``{ylabel: {group: (label, means [n])}}``: extra dashed lines (diagnostics) in the group's colour.
    xlabel: the abscissa label.
    title: the figure title.

  Returns:
    ``(fig, axes)``.

  Example:
    >>> fig, axes = seed_trends([1, 2], {"loss": {"a": np.array([[1.0, 2.0], [3.0, 4.0]])}})
  """
  fig, axes = plt.subplots(1, len(panels), figsize=(13 / 3 * len(panels), 3.8), squeeze=False)
  axes = axes[0]
  dashed = dashed or {}
  for ax, (ylabel, groups) in zip(axes, panels.items()):
    for n, (group, values) in enumerate(groups.items()):
      color = (colors or {}).get(group, f"C{n}")
      per = np.asarray(values, np.float64)
      for s in range(per.shape[1]):
        ax.plot(x, per[:, s], ".", color=color, alpha=0.5)
      ax.plot(x, np.nanmean(per, axis=1), "-o", color=color, label=group)
      if group in dashed.get(ylabel, {}):
        label, means = dashed[ylabel][group]
        ax.plot(x, means, "--x", color=color, alpha=0.7, label=label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_xticks(list(x))
  axes[0].legend()
  if title:
    fig.suptitle(title, fontsize=10)
  return fig, axes
__all__ += ["run_panels", "group_scatter"]


def run_panels(x: Any, panels: dict[str, dict[str, Any]], *, axes: Any = None, colors: Any = None, styles: Any = None,
               mean: bool = True, log: Any = (), xlog: bool = False, xlabel: str = "", titles: Any = None,
               vlines: Any = ()):
  """One panel per quantity: every run of each group thin against ``x`` and (``mean=True``) the group's mean thick.

  Args:
    x: the shared abscissa ``[n]``, or ``{group: abscissa}``.
    panels: ``{ylabel: {group: values [runs, n]}}``.
    axes: one axes per panel (default: a new row of panels).
    colors, styles: ``{group: colour / line style}`` (default: the colour cycle, solid).
    mean: draw the mean over runs (it carries the legend label); else the first run carries it.
    log: the ylabels whose ordinate is log-scaled.
    xlog: log-scaled abscissa.
    xlabel: the abscissa label.
    titles: one title per panel (``None``: none).
    vlines: abscissae of thin grey vertical markers.

  Returns:
    ``(fig, axes)``.

  Example:
    >>> fig, axes = run_panels([0, 1], {"loss": {"train": np.array([[1.0, 2.0], [3.0, 4.0]])}}, log=("loss",))
    >>> len(axes[0].get_lines()), axes[0].get_yscale()
    (3, 'log')
  """
  if axes is None:
    axes = list(plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.8), squeeze=False)[1][0])
  fig = axes[0].figure
  for p, (ax, (ylabel, groups)) in enumerate(zip(axes, panels.items())):
    for n, (group, values) in enumerate(groups.items()):
      color, style = (colors or {}).get(group, f"C{n}"), (styles or {}).get(group, "-")
      gx, values = x[group] if isinstance(x, dict) else x, np.asarray(values, np.float64)
      for i, run in enumerate(values):
        ax.plot(gx, run, style, color=color, alpha=0.25 if mean else 0.6, lw=0.8,
                label=group if not mean and i == 0 else None)
      if mean:
        ax.plot(gx, values.mean(0), style, color=color, lw=2, label=group)
    for v in vlines:
      ax.axvline(v, color="gray", lw=0.6)
    ax.set(xlabel=xlabel, ylabel=ylabel, yscale="log" if ylabel in log else "linear", xscale="log" if xlog else "linear")
    if titles is not None:
      ax.set_title(titles[p], fontsize=9)
    ax.legend(fontsize=8)
  return fig, axes


def group_scatter(labels: Any, groups: dict[str, Any], *, colors: Any = None, ax=None, log: bool = True,
                  title: str | None = None):
  """Per-run values of several quantities (one column per label), the groups side by side in their colours.

  Args:
    labels: the quantities' names (x tick labels).
    groups: ``{group: [values [runs] per label]}``.
    colors: ``{group: colour}`` (default: the colour cycle).
    ax: the axes to draw on (default: a new figure).
    log: log-scale ordinate (values are clipped at 1e-8).
    title: the axes title.

  Returns:
    ``(fig, ax)``.

  Example:
    >>> fig, ax = group_scatter(["a", "b"], {"SB": [[1.0, 2.0], [3.0]], "LB": [[4.0], [5.0, 6.0]]})
    >>> [t.get_text() for t in ax.get_legend().get_texts()]
    ['SB', 'LB']
  """
  fig, ax = _axes(ax)
  for k, (group, columns) in enumerate(groups.items()):
    for j, values in enumerate(columns):
      values = np.asarray(values, np.float64)
      xs = j + (k - 0.5) * 0.3 + np.linspace(-0.05, 0.05, len(values))
      ax.scatter(xs, np.maximum(values, 1e-8) if log else values, color=(colors or {}).get(group, f"C{k}"), s=14,
                 label=group if j == 0 else None)
  ax.set_xticks(range(len(labels)), labels)
  if log:
    ax.set_yscale("log")
  if title:
    ax.set_title(title, fontsize=9)
  ax.legend(fontsize=8)
  return fig, ax


__all__ += ["regime_lines", "regime_sharpness"]
_REGIME_STYLE = {"colors": {"train": "C0", "test": "C3"}, "styles": {"test": "--"}}


def regime_lines(studies: dict[str, dict[str, np.ndarray]], *, regimes: tuple[str, str] = ("sb", "lb"),
                 subtitle: str = ""):
  """Loss and accuracy along ``alpha x_2 + (1 - alpha) x_1`` between paired solutions (Keskar et al. 2017, Fig. 3).

  One row per study: training and test cross-entropy (log scale, left) and
  accuracy in % (right), every pair thin and the mean over pairs thick, with
  markers at the two solutions (alpha = 0 and 1).

  Args:
    studies: ``{title: arrays}`` of :func:`jaxscape.experiment.regime_study` (``alpha``, ``line_<split>_<loss|acc>``).
    regimes: the names of the two regimes (upper-cased in the axis label).
    subtitle: the title of each row's right panel.

  Returns:
    ``(fig, axes)``, ``axes`` a flat list (two per study).
  """
  fig, axes = panels(2 * len(studies), cols=2, size=(5, 3.8))
  one, two = (r.upper() for r in regimes)
  for k, (title, a) in enumerate(studies.items()):
    line = lambda q, f: {s: f * np.asarray(a[f"line_{s}_{q}"]) for s in ("train", "test")}  # noqa: E731
    run_panels(a["alpha"], {"cross-entropy": line("loss", 1), "accuracy (%)": line("acc", 100)}, vlines=(0, 1),
               axes=axes[2 * k:2 * k + 2], log=("cross-entropy",), titles=[f"{title}: loss along the {one}→{two} line",
                                                                            subtitle], **_REGIME_STYLE,
               xlabel=rf"$\alpha$   ($x = \alpha\,x_{{{two}}} + (1-\alpha)\,x_{{{one}}}$; {one} at 0, {two} at 1)")
  return fig, axes


def regime_sharpness(studies: dict[str, dict[str, np.ndarray]], *, eps: Any, regimes: tuple[str, ...] = ("sb", "lb")):
  """Per-run sharpness, top Hessian eigenvalue and training curves of each regime, one row per study.

  Args:
    studies: ``{title: arrays}`` of :func:`jaxscape.experiment.regime_study` (``<regime>_phi_full``,
      ``<regime>_lam_max``, ``<regime>_hist_<step|train_loss|test_accuracy>``).
    eps: the box sizes (columns of ``phi_full``).
    regimes: the regimes, in colour order.

  Returns:
    ``(fig, axes)``, ``axes`` a flat list (three per study).
  """
  fig, axes = panels(3 * len(studies), cols=3, size=(4.3, 3.6))
  colors = {r.upper(): f"C{3 * i}" for i, r in enumerate(regimes)}
  for k, (title, a) in enumerate(studies.items()):
    hist = lambda q, f: {g.upper(): f * np.asarray(a[f"{g}_hist_{q}"]) for g in regimes}  # noqa: E731
    group_scatter([f"φ ε={e:g}" for e in eps] + ["λ_max"], {g.upper(): [*np.asarray(a[f"{g}_phi_full"]).T,
                  a[f"{g}_lam_max"]] for g in regimes}, ax=axes[3 * k], colors=colors, title=f"{title}: sharpness")
    run_panels({g.upper(): a[f"{g}_hist_step"] for g in regimes}, {"training loss": hist("train_loss", 1),
               "test accuracy (%)": hist("test_accuracy", 100)}, axes=axes[3 * k + 1:3 * k + 3], mean=False,
               log=("training loss",), xlog=True, xlabel="optimiser step", colors=colors)
  return fig, axes


__all__ += ["histograms", "twin_trends", "finite_size", "concentration"]


def concentration(widths: Any, losses: Any, corr: Any, sizes: Any, energies: Any, fit: tuple[float, ...], *,
                  references: dict[str, float], net_title: str = "", spin_title: str = ""):
  """Four panels on values concentrating with size (Choromanska et al. 2015): networks of growing width, spin glasses of growing N.

  Top: final losses per width (log abscissa) and energies per N with the
  reference levels; bottom: the std of the losses and ρ(train, test) against
  width (:func:`twin_trends`), and the finite-size extrapolation (:func:`finite_size`).

  Args:
    widths: hidden widths, one per row of ``losses``.
    losses: final test losses ``[len(widths), seeds]``.
    corr: Pearson ρ(train loss, test loss) per width.
    sizes: system sizes N, one per row of ``energies``.
    energies: energies per spin ``[len(sizes), runs]``.
    fit: ``(a, b, ...)`` of :func:`jaxscape.stats.finite_size_fit`.
    references: ``{label: level}`` of the energy axis, solid then dashed.
    net_title, spin_title: titles of the two histograms.

  Returns:
    ``(fig, axes)``.

  Example:
    >>> fig, axes = concentration([2, 4], [[0.5, 0.7], [0.4, 0.41]], [0.9, 0.2], [8, 27], [[-1.5, -1.4], [-1.6, -1.55]],
    ...                           (-1.65, 1.0), references={"-E0": -1.657, "-E∞": -1.633})
    >>> len(axes), axes[3].get_xlabel()
    (4, 'N^(-0.667)')
  """
  (fig, axes), loss, e = panels(4, cols=2, size=(5.5, 4)), np.asarray(losses, np.float64), np.asarray(energies, float)
  styles = dict(zip(references, ("-", "--", ":")))
  histograms({f"h = {h}": v for h, v in zip(widths, loss)}, ax=axes[0], log=True, title=net_title,
             bins=np.geomspace(max(np.nanmin(loss), 1e-4) * 0.95, np.nanmax(loss) * 1.05, 50),
             xlabel="final test loss (NLL)")
  low = min([e.min(), *references.values()])
  histograms({f"N = {n}": v for n, v in zip(sizes, e)}, ax=axes[1], cmap="plasma", cmap_max=0.85,
             vlines={f"{k} = {v:.4f}": (v, styles[k]) for k, v in references.items()},
             bins=np.linspace(low - 0.02, e.max() + 0.02, 60), xlabel="energy per spin H/N at the GD end point",
             title=spin_title)
  twin_trends(widths, ("std of final test loss", loss.std(axis=1, ddof=1)),
              ("Pearson ρ(train loss, test loss)", corr), right_ylim=(-1.05, 1.05), ax=axes[2], xlabel="hidden units",
              title="spread and ρ vs width")
  finite_size(sizes, e, fit, hlines={k: (v, styles[k]) for k, v in references.items()},
              ax=axes[3], ylabel="energy per spin", title="finite-size extrapolation")
  return fig, axes


def histograms(groups: dict[str, Any], *, bins: Any = 40, cmap: str = "viridis", cmap_max: float = 0.9,
               filled: bool = True, log: bool = False, vlines: Any = None, ax=None, xlabel: str = "",
               ylabel: str = "runs", title: str | None = None):
  """One histogram per group in colours along ``cmap`` (from 0 to ``cmap_max``), e.g. final losses per model size.

  Args:
    groups: ``{label: values}``.
    bins: shared bin edges, or a count (each group bins its own range).
    cmap, cmap_max: the colour map and the fraction of it used.
    filled: translucent filled steps (else outlines).
    log: log-scaled abscissa.
    vlines: ``{label: (x, linestyle)}``: black reference lines.
    ax: the axes to draw on (default: a new figure).
    xlabel, ylabel, title: labels.

  Returns:
    ``(fig, ax)``.

  Example:
    >>> fig, ax = histograms({"a": [1.0, 2.0, 2.5], "b": [2.0, 3.0]}, bins=4, vlines={"zero": (0.0, "--")})
    >>> [t.get_text() for t in ax.get_legend().get_texts()]
    ['a', 'b', 'zero']
  """
  fig, ax = _axes(ax)
  colors = plt.get_cmap(cmap)(np.linspace(0, cmap_max, len(groups)))
  for c, (label, values) in zip(colors, groups.items()):
    ax.hist(np.asarray(values), bins=bins, histtype="stepfilled" if filled else "step", alpha=0.45 if filled else 1.0,
            color=c, label=label)
  for label, (x, style) in (vlines or {}).items():
    ax.axvline(x, color="k", ls=style, lw=1, label=label)
  if log:
    ax.set_xscale("log")
  ax.set(xlabel=xlabel, ylabel=ylabel)
  if title:
    ax.set_title(title)
  ax.legend(fontsize=7, ncol=2 if len(groups) > 4 else 1)
  return fig, ax


def twin_trends(x: Any, left: tuple[str, Any], right: tuple[str, Any], *, right_ylim: Any = None, log_base: int = 2,
                ax=None, xlabel: str = "", title: str | None = None):
  """Two quantities against one log-scaled abscissa: ``left`` on log axes (blue), ``right`` on a linear twin axis (red).

  Args:
    x: the abscissa (e.g. widths).
    left, right: ``(label, values)``.
    right_ylim: limits of the right axis.
    log_base: base of the abscissa's log scale.
    ax: the axes to draw on (default: a new figure).
    xlabel, title: labels.

  Returns:
    ``(fig, (ax, twin))``.

  Example:
    >>> fig, (ax, twin) = twin_trends([2, 4, 8], ("std", [1.0, 0.5, 0.2]), ("rho", [0.9, 0.5, 0.1]), right_ylim=(-1, 1))
    >>> ax.get_yscale(), [float(y) for y in twin.get_ylim()]
    ('log', [-1.0, 1.0])
  """
  fig, ax = _axes(ax)
  ax.loglog(x, left[1], "o-", color="C0", label=left[0])
  ax.set_xscale("log", base=log_base)
  ax.set_xlabel(xlabel)
  ax.set_ylabel(left[0], color="C0")
  twin = ax.twinx()
  twin.plot(x, right[1], "s--", color="C3", label=right[0])
  twin.set_ylabel(right[0], color="C3")
  if right_ylim is not None:
    twin.set_ylim(*right_ylim)
  if title:
    ax.set_title(title)
  return fig, (ax, twin)


def finite_size(sizes: Any, values: Any, fit: tuple[float, float], *, exponent: float = -2 / 3, hlines: Any = None,
                ax=None, ylabel: str = "", title: str | None = None):
  """Mean ± std (over runs) against ``N^exponent`` with the fit ``a + b N^exponent`` (:func:`jaxscape.stats.finite_size_fit`).

  Args:
    sizes: the sizes N.
    values: ``[len(sizes), runs]``.
    fit: ``(a, b)``.
    exponent: the finite-size exponent.
    hlines: ``{label: (y, linestyle)}``: black reference levels.
    ax: the axes to draw on (default: a new figure).
    ylabel, title: labels.

  Returns:
    ``(fig, ax)``.

  Example:
    >>> fig, ax = finite_size([8, 27], [[1.0, 1.2], [0.9, 1.0]], (0.8, 1.0), hlines={"ref": (0.8, "--")})
    >>> [line.get_label() for line in ax.get_lines()][-2:]
    ['fit a + b N^(-0.667): a = 0.800', 'ref']
  """
  fig, ax = _axes(ax)
  v, x = np.asarray(values, np.float64), np.asarray(sizes, float) ** exponent
  ax.errorbar(x, v.mean(1), yerr=v.std(1, ddof=1), fmt="o", color="C2", capsize=3, label="mean ± std")
  xx = np.linspace(0, x.max() * 1.05, 50)
  ax.plot(xx, fit[0] + fit[1] * xx, "-", color="C2", lw=1, label=f"fit a + b N^({exponent:.3g}): a = {fit[0]:.3f}")
  for label, (y, style) in (hlines or {}).items():
    ax.axhline(y, color="k", ls=style, lw=1, label=label)
  ax.set(xlabel=f"N^({exponent:.3g})", ylabel=ylabel)
  if title:
    ax.set_title(title)
  ax.legend(fontsize=7)
  return fig, ax


__all__ += ["seed_surface_figures"]


def seed_surface_figures(studies: dict[tuple[str, int], Any], *, rel: float = 0.01, label: str = "",
                         size_name: str = "depth", colors: Any = None, trends: bool = True) -> dict[str, Any]:
  """The figures of a (variant, size) grid of :func:`jaxscape.experiment.seed_surfaces` results (Li et al. 2018).

  Args:
    studies: ``{(variant, size): seed_surfaces result}`` (e.g. :func:`jaxscape.experiment.variant_surfaces`).
    rel: the non-convexity threshold of :func:`landscape_grid`'s red dots.
    label: the model family's name, in titles.
    size_name: what the sizes are (abscissa label, titles).
    colors: ``{variant: colour}`` of the trends.
    trends: also draw the trends against size.

  Returns:
    ``{"landscapes": (fig, axes)}``: seed 0's surface per variant (rows) and size (columns), :func:`landscape_grid`;
    with ``trends``, ``"trends"``: the finite-difference non-convex fraction (the exact pointwise one dashed), log10
    of the maximum grid loss and the test accuracy of every seed against size (:func:`seed_trends`); and
    ``"ratio_maps"`` (:func:`ratio_maps` of seed 0) when every study has full-Hessian ratio maps.
  """
  variants = list(dict.fromkeys(v for v, _ in studies))
  sizes = list(dict.fromkeys(d for _, d in studies))
  grid = lambda f: [[f(studies[(v, d)], v, d) for d in sizes] for v in variants]  # noqa: E731
  out = {"landscapes": landscape_grid(grid(lambda r, v, d: r["surfaces"][0]), rel=rel, titles=grid(
      lambda r, v, d: f"{label} {v}, {size_name} {d}\nnon-convex {r['seeds'][0]['fd_nonconvex_fraction']:.2f}, max "
                      f"{r['seeds'][0]['max_loss']:.2g}"), title=f"{label}: filter-normalised training-loss surfaces "
                                                                  "(seed 0 of each model)")}
  if not trends:
    return out
  per = lambda f: dict(zip(variants, grid(f)))  # noqa: E731
  seeds = lambda k: {v: np.array(row) for v, row in per(lambda r, v, d: [s[k] for s in r["seeds"]]).items()}  # noqa: E731
  out["trends"] = seed_trends(sizes, {"non-convex fraction (finite diff.)": seeds("fd_nonconvex_fraction"),
                                      "log10 max loss": seeds("log10_max_loss"), "test accuracy": seeds("test_accuracy")},
                              colors=colors, xlabel=size_name, title=f"{label}: seed means (lines) and seeds (dots)",
                              dashed={"non-convex fraction (finite diff.)": {v: (f"{v} (exact pointwise, diagnostic)", row)
                                      for v, row in per(lambda r, v, d: np.nanmean([s.get("nonconvex_fraction", np.nan)
                                                                                     for s in r["seeds"]])).items()}})
  if all(r["ratios"] for r in studies.values()):
    out["ratio_maps"] = ratio_maps(grid(lambda r, v, d: r["ratios"][0]), titles=grid(
        lambda r, v, d: f"{v}, {size_name} {d}: median {np.nanmedian(r['ratios'][0].metrics['convexity_ratio']):.2f}"),
        title=f"{label}: full-Hessian lambda_min/lambda_max on a coarse grid (diagnostic; blue = convex, red = not)")
  return out


_SEED_SURFACE_SAVE = {"landscapes": {"dpi": 70}, "trends": {}, "ratio_maps": {"dpi": 80, "tight": False}}


def save_seed_surface_figures(studies: dict[tuple[str, int], Any], out_dir: str, *, name: str = "landscapes",
                              **figure_kw: Any) -> dict[str, str]:
  """Draws :func:`seed_surface_figures` and saves each as a PNG in ``out_dir``; returns ``{figure: file name}``.

  The landscapes go to ``<name>.png`` (dpi 70), the others to ``<figure>.png`` (trends at dpi 90, ratio maps at
  dpi 80 without tight cropping), in :func:`seed_surface_figures`' order.

  Args:
    studies: as for :func:`seed_surface_figures`.
    out_dir: the directory.
    name: the landscapes' file stem.
    **figure_kw: the other arguments of :func:`seed_surface_figures` (``rel``, ``label``, ``colors``, ``trends``).
  """
  figs = seed_surface_figures(studies, **figure_kw)
  return {key: os.path.basename(save(fig, os.path.join(out_dir, f"{name if key == 'landscapes' else key}.png"),
                                     **_SEED_SURFACE_SAVE[key])) for key, (fig, _) in figs.items()}

__all__ += ["sharpness_history"]


def sharpness_history(history: Any, *, run: tuple[int, ...] = (), ax=None, log: bool = False,
                      title: str | None = None):
  """Sharpness against training step, with the stability thresholds ``2 / eta`` (Cohen et al. 2021, 2022).

  Draws the recorded top Hessian eigenvalues (``lambda_1`` solid, the others
  thin), a dashed ``2 / eta`` line (``eta`` the learning rate of the
  schedule at each recorded step) and, where the optimiser's threshold
  differs (momentum, Nesterov, Adam), a dotted line at it
  (``history.curvature["threshold"]``); with Adam also the preconditioned
  sharpness, whose threshold that is. Eigenvalues whose Lanczos pair is not
  ``converged`` are marked with an open circle.

  Args:
    history: a :class:`jaxscape.train.History` recorded with
      ``TrainConfig(curvature_every=...)``, or its ``curvature`` dict.
    run: index of one run in the run axes of a :func:`jaxscape.train.train_many`
      history (``(seed,)`` or ``(config, seed)``).
    ax: axes to draw on (default: a new figure).
    log: log-scale y axis.
    title: axes title.

  Returns:
    ``(fig, ax)``.

  Example:
    >>> import numpy as np
    >>> curv = {"step": np.arange(3), "eigenvalues": np.array([[1.0], [2.0], [3.5]]),
    ...         "converged": np.ones((3, 1), bool), "learning_rate": np.full(3, 0.5), "threshold": np.full(3, 4.0)}
    >>> fig, ax = sharpness_history(curv)
  """
  curv = history if isinstance(history, dict) else getattr(history, "curvature", None)
  if curv is None:
    raise ValueError("no curvature in this history: train with TrainConfig(curvature_every=N) to record it")
  pick = lambda name: np.asarray(curv[name])[tuple(run)]
  steps, values = np.asarray(curv["step"]), pick("eigenvalues")
  if values.ndim != 2 or values.shape[0] != steps.shape[0]:
    raise ValueError(f"expected eigenvalues [steps, k] for one run (pass run=(i,) for a train_many history); got "
                     f"{values.shape} for {steps.shape[0]} steps")
  fig, ax = _axes(ax)
  for i in range(values.shape[1]):
    ax.plot(steps, values[:, i], color="C0", lw=1.8 if i == 0 else 0.8,
            label=r"$\lambda_1$" if i == 0 else (r"$\lambda_2 \ldots \lambda_k$" if i == 1 else None))
  if "converged" in curv:
    off = ~pick("converged").astype(bool)
    ax.plot(np.broadcast_to(steps[:, None], values.shape)[off], values[off], "o", mfc="none", color="C3",
            label="not converged" if off.any() else None)
  lr = pick("learning_rate")
  ax.plot(steps, 2 / lr, "--", color="0.4", label=r"$2/\eta$")
  if "preconditioned_sharpness" in curv:
    ax.plot(steps, pick("preconditioned_sharpness"), color="C1", lw=1.8, label="preconditioned")
  if "threshold" in curv:
    threshold = pick("threshold")
    if not np.allclose(threshold, 2 / lr):
      ax.plot(steps, threshold, ":", color="C1" if "preconditioned_sharpness" in curv else "0.2",
              label="optimiser threshold")
  if log:
    ax.set_yscale("log")
  ax.set_xlabel("step")
  ax.set_ylabel("sharpness")
  if title:
    ax.set_title(title)
  ax.legend(fontsize=8)
  return fig, ax


__all__ += ["edge_of_stability"]


def edge_of_stability(step: Any, sharpness: Any, threshold: Any, loss_step: Any, loss: Any, *,
                      labels: Any = None, reached: Any = None, title: str | None = None):
  """Cohen et al. (2021)'s Figure 1: sharpness against step with the ``2 / eta`` lines, and the training loss.

  One colour per step size: left, the top Hessian eigenvalue (solid) and its
  stability threshold (dashed); right, the full-batch training loss (log
  scale). ``reached`` marks where each sharpness series first reaches the edge
  (:func:`jaxscape.stats.edge_of_stability`) with a dot on both panels.

  Args:
    step: the steps of the sharpness records ``[T]``.
    sharpness: ``[C, T]``, one row per step size.
    threshold: ``[C]`` or ``[C, T]``, the stability threshold of each run (``2 / eta``).
    loss_step: the steps of the loss records ``[L]``.
    loss: ``[C, L]``.
    labels: one legend label per run (default: ``2/eta`` values).
    reached: ``[C]`` steps where each run reaches the edge (``None`` or negative: no mark).
    title: figure title.

  Returns:
    ``(fig, (ax_sharpness, ax_loss))``.

  Example:
    >>> step, lam = np.arange(4), np.array([[1.0, 3.0, 4.0, 3.9], [1.0, 1.5, 2.0, 2.1]])
    >>> fig, (a, b) = edge_of_stability(step, lam, [4.0, 2.0], step, np.ones((2, 4)), reached=[2, 2])
    >>> len(a.lines), b.get_yscale()
    (6, 'log')
  """
  step, loss_step = np.asarray(step), np.asarray(loss_step)
  lam, loss = np.asarray(sharpness, np.float64), np.asarray(loss, np.float64)
  thr = np.asarray(threshold, np.float64)
  if lam.ndim != 2 or lam.shape[1] != step.shape[0] or loss.shape != (lam.shape[0], loss_step.shape[0]):
    raise ValueError(f"expected sharpness [C, {step.shape[0]}] and loss [C, {loss_step.shape[0]}] for the same C runs; "
                     f"got {lam.shape} and {loss.shape}")
  thr = np.broadcast_to(thr[:, None] if thr.ndim == 1 else thr, lam.shape)
  labels = labels or [f"2/η = {t:.3g}" for t in thr[:, 0]]
  fig, (ax, bx) = panels(2, size=(5.5, 4.0), title=title)
  for i in range(lam.shape[0]):
    color = f"C{i}"
    ax.plot(step, lam[i], color=color, lw=1.4, label=labels[i])
    ax.plot(step, thr[i], "--", color=color, lw=0.9)
    bx.plot(loss_step, loss[i], color=color, lw=1.4, label=labels[i])
    at = None if reached is None else int(reached[i])
    if at is not None and at >= 0:
      ax.plot([at], [np.interp(at, step, lam[i])], "o", color=color, ms=5)
      bx.plot([at], [np.interp(at, loss_step, loss[i])], "o", color=color, ms=5)
  ax.set(xlabel="step", ylabel=r"sharpness $\lambda_{max}$ (dashed: $2/\eta$)")
  bx.set(xlabel="step", ylabel="training loss", yscale="log")
  ax.legend(fontsize=8)
  bx.legend(fontsize=8)
  return fig, (ax, bx)
