"""Ensembles of minima: many descents at once, their curvature, and the statistics of their values.

Choromanska et al. (2015) compare the *distribution* of the values reached by
many independent descents (networks trained from many seeds, spin-glass
gradient descent from many starts) across sizes. This module holds the
reusable pieces of such studies:

* :func:`descend_ensemble`: Riemannian gradient descent on the spherical spin
  glass (:mod:`jaxscape.models.spin_glass`) for ``D`` disorder samples x ``S``
  starts, vmapped, run in rounds that drop converged runs from the batch (a
  vmapped ``while_loop`` otherwise runs every run as long as the slowest one).
* :func:`tangent_spectrum`: Riemannian-Hessian eigenvalues at many end points,
  in float64, chunked to bound memory.
* :func:`finite_size_fit`, :func:`poor_fraction`, :func:`spread_by_group`:
  host-side statistics of value distributions across sizes.

Example:
  >>> import jax
  >>> from jaxscape import minima
  >>> from jaxscape.models import spin_glass as sg
  >>> X = jax.vmap(lambda k: sg.disorder(k, 10))(jax.random.split(jax.random.key(0), 2))
  >>> w0 = jax.vmap(jax.vmap(lambda k: sg.random_point(k, 10)))(jax.random.split(jax.random.key(1), (2, 3)))
  >>> out = minima.descend_ensemble(w0, X, lr=0.1, tol=1e-3, max_steps=4000, round_steps=200)
  >>> out.energy.shape, bool(out.converged.all())
  ((2, 3), True)
  >>> eig = minima.tangent_spectrum(out.w, X)
  >>> eig.shape, str(eig.dtype)
  ((2, 3, 9), 'float64')
"""

from __future__ import annotations

import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from .models import spin_glass as sg
from .stats import linear_fit

__all__ = ["descend_ensemble", "tangent_spectrum", "finite_size_fit", "poor_fraction", "spread_by_group"]


@functools.partial(jax.jit, static_argnames=("lr", "tol", "max_steps"))
def _descend_grid(w0: jax.Array, X: jax.Array, *, lr: float, tol: float, max_steps: int) -> sg.Descent:
  """``sg.descend`` vmapped over ``[D, K]`` starts with one coupling tensor per disorder sample."""
  run = lambda w, x: sg.descend(w, x, lr=lr, tol=tol, max_steps=max_steps)
  return jax.vmap(jax.vmap(run, in_axes=(0, None)), in_axes=(0, 0))(w0, X)


def _bucket(k: int, cap: int) -> int:
  """The next power of two >= k, capped (few distinct batch shapes -> few compilations)."""
  return min(cap, 1 << max(0, int(k - 1).bit_length()))


def descend_ensemble(w0: jax.Array, X: jax.Array, *, lr: float = 0.1, tol: float = 1e-4, max_steps: int = 10_000,
                     round_steps: int | None = 1000) -> sg.Descent:
  """Riemannian gradient descent from ``[D, S]`` starts on ``D`` spin-glass disorder samples.

  The result equals ``vmap(vmap(sg.descend))`` with the same ``max_steps`` (up to rounding)
  (each run stops at ``||P nabla H|| < tol`` or after ``max_steps`` steps),
  but the work is done in rounds of ``round_steps``: after each round only
  the unconverged runs continue, ``K`` per disorder sample (padded to a power
  of two with converged runs, which stay where they are), so the few slow
  runs near marginal minima do not keep the whole batch busy. Rounds loop in
  Python; runs inside a round are vmapped.

  Args:
    w0: starts ``[D, S, N]`` (retracted to the sphere ``||w||^2 = N``).
    X: couplings ``[D, N, ..., N]`` (one tensor per disorder sample).
    lr: step size.
    tol: tolerance on the Euclidean norm of the tangent gradient.
    max_steps: step budget of each run.
    round_steps: steps per round (``None``: one round, plain vmap).

  Returns:
    A :class:`~jaxscape.models.spin_glass.Descent` with leading axes ``[D, S]``;
    ``steps`` counts every step a run took.
  """
  w0, X = jnp.asarray(w0), jnp.asarray(X)
  if w0.ndim != 3 or X.shape[0] != w0.shape[0] or X.shape[1:] != (w0.shape[-1],) * (X.ndim - 1):
    raise ValueError(f"expected starts [D, S, N] and couplings [D, N, ..., N] with the same D and N; "
                     f"got {w0.shape} and {X.shape}")
  d, s, _ = w0.shape
  chunk = max_steps if round_steps is None else max(1, min(int(round_steps), max_steps))
  out = _descend_grid(w0, X, lr=lr, tol=tol, max_steps=chunk)
  w, e, g, steps, conv = (np.array(a) for a in out)
  used = chunk
  while used < max_steps and not conv.all():
    k = _bucket(int((~conv).sum(axis=1).max()), s)
    order = np.argsort(conv, axis=1, kind="stable")[:, :k]   # unconverged first, then converged padding
    this = min(chunk, max_steps - used)
    sub = _descend_grid(jnp.asarray(np.take_along_axis(w, order[..., None], axis=1)), X, lr=lr, tol=tol,
                        max_steps=this)
    sub = [np.asarray(a) for a in sub]
    active = ~np.take_along_axis(conv, order, axis=1)
    rows, cols = np.nonzero(active)
    idx = order[rows, cols]
    w[rows, idx], e[rows, idx], g[rows, idx] = sub[0][rows, cols], sub[1][rows, cols], sub[2][rows, cols]
    steps[rows, idx] += sub[3][rows, cols]
    conv[rows, idx] = sub[4][rows, cols]
    used += this
  return sg.Descent(w, e, g, steps, conv)


def tangent_spectrum(w: jax.Array, X: jax.Array, *, batch_size: int = 8) -> np.ndarray:
  """Eigenvalues of the Riemannian Hessian (tangent space of the sphere) at ``[D, S]`` points, in float64.

  Computed under ``jax.enable_x64(True)`` from float64 copies of ``w`` and
  ``X`` (the index of a marginal minimum is decided by eigenvalues near 0,
  where float32 rounding matters); ``batch_size`` points per disorder sample
  are processed at once (``lax.map``) to bound memory.

  Args:
    w: points ``[D, S, N]`` on the sphere.
    X: couplings ``[D, N, ..., N]``.
    batch_size: points per ``lax.map`` batch.

  Returns:
    ``[D, S, N-1]`` ascending eigenvalues (NumPy float64); the index of a
    point is the number of negative ones.
  """
  w, X = np.asarray(w, np.float64), np.asarray(X, np.float64)
  with jax.enable_x64(True):
    eig = lambda p, x: jnp.linalg.eigvalsh(sg.riemannian_hessian(p, x))
    per_disorder = lambda ws, x: jax.lax.map(lambda p: eig(p, x), ws, batch_size=min(batch_size, ws.shape[0]))
    out = jax.jit(jax.vmap(per_disorder))(jnp.asarray(w), jnp.asarray(X))
    return np.asarray(out, np.float64)


def finite_size_fit(sizes: Sequence[float], values: Sequence[float], exponent: float = -2 / 3) -> tuple[float, float]:
  """Least-squares ``value ≈ a + b * size**exponent``; ``a`` is the infinite-size extrapolation.

  Args:
    sizes: system sizes (e.g. the spin-glass ``N``), one per value.
    values: measured values (e.g. mean energy per spin at each size).
    exponent: finite-size scaling exponent (``-2/3`` for spherical spin-glass energies).

  Returns:
    ``(a, b)``.

  Example:
    >>> a, b = finite_size_fit([8, 27, 64], [-1.6 + 2 / 4, -1.6 + 2 / 9, -1.6 + 2 / 16])
    >>> round(a, 6), round(b, 6)
    (-1.6, 2.0)
  """
  sizes = np.asarray(sizes, np.float64)
  if np.any(sizes <= 0):
    raise ValueError(f"sizes must be positive; got {sizes.tolist()}")
  return linear_fit(sizes ** exponent, values)


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
