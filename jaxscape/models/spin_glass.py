"""The H-spin spherical spin glass (Choromanska et al. 2015; Auffinger, Ben Arous & Cerny 2013).

    H(w) = N^{-(p-1)/2} sum_{i1..ip} X_{i1..ip} w_{i1} ... w_{ip},   on the sphere ||w||^2 = N,

with ``X`` i.i.d. standard Gaussian (drawn from an explicit key) and ``p`` the
number of interacting spins (the network depth in Choromanska et al.'s
mapping). Energies are reported per spin, ``H / N`` (the ground state of the
3-spin model is about -1.657, the threshold ``-E_inf = -2 sqrt((p-1)/p)``).

Geometry on the sphere ``S = {w : ||w||^2 = N}`` with tangent projector
``P = I - w w^T / N``:

* Riemannian gradient: ``grad H = P nabla H``.
* Riemannian Hessian (Levi-Civita connection of the embedded sphere): for a
  tangent ``v``, ``Hess H[v] = P (D grad H)[v] = P nabla^2 H v - (w . nabla H / N) v``,
  i.e. ``P nabla^2 H P - (w . nabla H / N) P`` on the tangent space (the second
  term comes from differentiating ``P`` along ``v``; for a homogeneous ``H`` of
  degree p, ``w . nabla H = p H``).
* Descent: ``w <- R(w - lr grad H)`` with the retraction ``R(u) = sqrt(N) u / ||u||``.

All functions are pure and work under ``jit`` and ``vmap`` (over starts and
over disorder samples).

Example:
  >>> import jax
  >>> from jaxscape.models import spin_glass as sg
  >>> X = sg.disorder(jax.random.key(0), 20, p=3)
  >>> w0 = sg.random_point(jax.random.key(1), 20)
  >>> out = sg.descend(w0, X, lr=0.1, tol=1e-4, max_steps=3000)
  >>> bool(out.converged), float(out.energy) < -1.0
  (True, True)
  >>> int(sg.index(out.w, X))   # a local minimum: no negative curvature
  0

Ensembles (many disorder samples x many starts, the statistics of Choromanska
et al. 2015): :func:`descend_ensemble` runs them in rounds that drop converged
runs from the batch; :func:`tangent_spectrum` gives float64 Riemannian-Hessian
eigenvalues at their end points.

  >>> Xs = jax.vmap(lambda k: sg.disorder(k, 10))(jax.random.split(jax.random.key(0), 2))
  >>> w0 = jax.vmap(jax.vmap(lambda k: sg.random_point(k, 10)))(jax.random.split(jax.random.key(1), (2, 3)))
  >>> ens = sg.descend_ensemble(w0, Xs, lr=0.1, tol=1e-3, max_steps=4000, round_steps=200)
  >>> ens.energy.shape, bool(ens.converged.all())
  ((2, 3), True)
  >>> eig = sg.tangent_spectrum(ens.w, Xs)
  >>> eig.shape, str(eig.dtype)
  ((2, 3, 9), 'float64')
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "disorder",
    "random_point",
    "energy",
    "energy_per_spin",
    "project",
    "retract",
    "riemannian_grad",
    "tangent_basis",
    "riemannian_hessian",
    "index",
    "descend",
    "minimise",
    "descend_ensemble",
    "tangent_spectrum",
    "size_sweep",
    "Descent",
    "e_infinity",
    "E0",
]

E0 = {3: 1.65700, 4: 1.79409}
"""Ground-state energies per spin ``-E_0`` (magnitudes) of the p-spin model: zeros of the
complexity of minima (Auffinger et al. 2013), solved numerically (papers.md §3)."""


def e_infinity(p: int) -> float:
  """``E_inf = 2 sqrt((p - 1) / p)``: above ``-E_inf`` critical points are high-index saddles."""
  return 2.0 * math.sqrt((p - 1) / p)


def disorder(key: jax.Array, n: int, p: int = 3, dtype: jax.typing.DTypeLike = jnp.float32) -> jax.Array:
  """The couplings ``X``: ``n^p`` i.i.d. standard Gaussians, shape ``(n,) * p``."""
  if p < 2 or n < 2:
    raise ValueError(f"need p >= 2 interacting spins and n >= 2 spins; got p={p}, n={n}")
  return jax.random.normal(key, (n,) * p, dtype)


def random_point(key: jax.Array, n: int, dtype: jax.typing.DTypeLike = jnp.float32) -> jax.Array:
  """A uniformly random point on the sphere ``||w||^2 = n``."""
  return retract(jax.random.normal(key, (n,), dtype))


def energy(w: jax.Array, X: jax.Array) -> jax.Array:
  """``H(w) = N^{-(p-1)/2} sum X_{i1..ip} w_{i1} ... w_{ip}`` (total, not per spin)."""
  n, p = w.shape[-1], X.ndim
  if X.shape != (n,) * p:
    raise ValueError(f"couplings must have shape {(n,) * p} for {n} spins; got {X.shape}")
  t = X
  for _ in range(p):
    t = t @ w
  return t * jnp.asarray(n, w.dtype) ** (-(p - 1) / 2)


def energy_per_spin(w: jax.Array, X: jax.Array) -> jax.Array:
  """``H(w) / N``."""
  return energy(w, X) / w.shape[-1]


def project(w: jax.Array, g: jax.Array) -> jax.Array:
  """Projection of ``g`` onto the tangent space at ``w``: ``g - (g . w / ||w||^2) w``."""
  return g - (jnp.dot(g, w) / jnp.dot(w, w)) * w


def retract(u: jax.Array) -> jax.Array:
  """Back to the sphere ``||w||^2 = N``: ``sqrt(N) u / ||u||`` (a second-order retraction)."""
  return u * (jnp.sqrt(jnp.asarray(u.shape[-1], u.dtype)) / jnp.linalg.norm(u))


def riemannian_grad(w: jax.Array, X: jax.Array) -> jax.Array:
  """Tangent gradient ``P nabla H(w)`` (ambient coordinates)."""
  return project(w, jax.grad(energy)(w, X))


def tangent_basis(w: jax.Array) -> jax.Array:
  """``[N, N-1]`` orthonormal basis of the tangent space ``{v : v . w = 0}`` (a Householder reflection)."""
  n = w.shape[-1]
  u = w / jnp.linalg.norm(w)
  s = jnp.where(u[0] >= 0, 1.0, -1.0).astype(w.dtype)
  h = u.at[0].add(s)
  reflect = jnp.eye(n, dtype=w.dtype) - 2.0 * jnp.outer(h, h) / jnp.dot(h, h)
  return reflect[:, 1:]


def riemannian_hessian(w: jax.Array, X: jax.Array, basis: jax.Array | None = None) -> jax.Array:
  """Riemannian Hessian on the tangent space, ``B^T (nabla^2 H - (w . nabla H / N) I) B``.

  Args:
    w: a point on the sphere.
    X: couplings.
    basis: ``[N, N-1]`` orthonormal tangent basis (default :func:`tangent_basis`).

  Returns:
    The symmetric ``[N-1, N-1]`` matrix; its eigenvalues are the curvatures at ``w``.
  """
  n = w.shape[-1]
  b = tangent_basis(w) if basis is None else basis
  g = jax.grad(energy)(w, X)
  hess = jax.hessian(energy)(w, X)
  lam = jnp.dot(w, g) / n
  m = b.T @ hess @ b - lam * jnp.eye(b.shape[1], dtype=w.dtype)
  return 0.5 * (m + m.T)


def index(w: jax.Array, X: jax.Array, tol: float = 0.0) -> jax.Array:
  """Number of Riemannian-Hessian eigenvalues below ``-tol`` (0 at a local minimum)."""
  return jnp.sum(jnp.linalg.eigvalsh(riemannian_hessian(w, X)) < -tol)


class Descent(NamedTuple):
  """End point of :func:`descend` (a pytree: vmapped runs stack every field).

  Attributes:
    w: final point on the sphere.
    energy: energy per spin ``H(w)/N`` at ``w``.
    grad_norm: Euclidean norm of the tangent gradient at ``w``.
    steps: steps taken.
    converged: ``grad_norm < tol``.
  """

  w: jax.Array
  energy: jax.Array
  grad_norm: jax.Array
  steps: jax.Array
  converged: jax.Array


def descend(w0: jax.Array, X: jax.Array, *, lr: float = 0.1, tol: float = 1e-5, max_steps: int = 10_000) -> Descent:
  """Riemannian gradient descent on the sphere until ``||P nabla H|| < tol``.

  Each step projects the gradient onto the tangent space, steps, and
  retracts: ``w <- sqrt(N) (w - lr g) / ||w - lr g||``. Runs in a
  ``lax.while_loop``; under ``vmap`` converged runs are frozen while the
  others continue, so a vmapped run equals the single runs.

  Args:
    w0: start, ``[N]`` (retracted to the sphere first).
    X: couplings, ``(N,) * p``.
    lr: step size (0.1 calibrated for p = 3, N <= 120).
    tol: tolerance on the Euclidean norm of the tangent gradient.
    max_steps: step budget.
  """
  gfun = lambda w: riemannian_grad(w, X)

  def cond(c):
    w, g, k = c
    return (jnp.linalg.norm(g) >= tol) & (k < max_steps)

  def body(c):
    w, g, k = c
    w_new = retract(w - lr * g)
    return w_new, gfun(w_new), k + 1

  w = retract(w0)
  w, g, k = jax.lax.while_loop(cond, body, (w, gfun(w), jnp.zeros((), jnp.int32)))
  gn = jnp.linalg.norm(g)
  return Descent(w, energy_per_spin(w, X), gn, k, gn < tol)


def minimise(key: jax.Array, n: int, p: int = 3, *, num_disorder: int = 1, num_starts: int = 1, lr: float = 0.1,
             tol: float = 1e-5, max_steps: int = 10_000, dtype: jax.typing.DTypeLike = jnp.float32) -> Descent:
  """Many descents at once: ``num_disorder`` coupling samples x ``num_starts`` random starts, all vmapped.

  Returns:
    A :class:`Descent` whose fields have leading axes ``[num_disorder, num_starts]``.

  Example:
    >>> import jax
    >>> from jaxscape.models import spin_glass as sg
    >>> out = sg.minimise(jax.random.key(0), 12, num_disorder=2, num_starts=3, tol=1e-3, max_steps=2000)
    >>> out.energy.shape
    (2, 3)
  """
  kx, kw = jax.random.split(key)
  Xs = jax.vmap(lambda k: disorder(k, n, p, dtype))(jax.random.split(kx, num_disorder))
  w0 = jax.vmap(jax.vmap(lambda k: random_point(k, n, dtype)))(
      jax.random.split(kw, num_disorder * num_starts).reshape(num_disorder, num_starts))
  run = lambda w, X: descend(w, X, lr=lr, tol=tol, max_steps=max_steps)
  return jax.jit(jax.vmap(jax.vmap(run, in_axes=(0, None)), in_axes=(0, 0)))(w0, Xs)


# ----------------------------------------------------------------------------- ensembles


@functools.partial(jax.jit, static_argnames=("lr", "tol", "max_steps"))
def _descend_grid(w0: jax.Array, X: jax.Array, *, lr: float, tol: float, max_steps: int) -> Descent:
  """``sg.descend`` vmapped over ``[D, K]`` starts with one coupling tensor per disorder sample."""
  run = lambda w, x: descend(w, x, lr=lr, tol=tol, max_steps=max_steps)
  return jax.vmap(jax.vmap(run, in_axes=(0, None)), in_axes=(0, 0))(w0, X)


def _bucket(k: int, cap: int) -> int:
  """The next power of two >= k, capped (few distinct batch shapes -> few compilations)."""
  return min(cap, 1 << max(0, int(k - 1).bit_length()))


def descend_ensemble(w0: jax.Array, X: jax.Array, *, lr: float = 0.1, tol: float = 1e-4, max_steps: int = 10_000,
                     round_steps: int | None = 1000) -> Descent:
  """Riemannian gradient descent from ``[D, S]`` starts on ``D`` spin-glass disorder samples.

  Choromanska et al. (2015) compare the *distribution* of the values reached
  by many independent descents across sizes; this runs such an ensemble.

  The result equals ``vmap(vmap(sg.descend))`` with the same ``max_steps`` (up to rounding)
  (each run stops at ``||P nabla H|| < tol`` or after ``max_steps`` steps),
  but the work is done in rounds of ``round_steps``: after each round only
  the unconverged runs continue, ``K`` per disorder sample (padded to a power
  of two with converged runs, which stay where they are), on the disorder
  samples that still have such runs (padded likewise with finished samples),
  so the few slow runs near marginal minima do not keep the whole batch busy. Rounds loop in
  Python; runs inside a round are vmapped.

  Args:
    w0: starts ``[D, S, N]`` (retracted to the sphere ``||w||^2 = N``).
    X: couplings ``[D, N, ..., N]`` (one tensor per disorder sample).
    lr: step size.
    tol: tolerance on the Euclidean norm of the tangent gradient.
    max_steps: step budget of each run.
    round_steps: steps per round (``None``: one round, plain vmap).

  Returns:
    A :class:`Descent` with leading axes ``[D, S]``;
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
    # Only the disorder samples with unconverged runs continue (padded to a power of two with finished ones):
    # each step reads every continuing sample's couplings, so a few late runs must not keep all D busy.
    done = conv.all(axis=1)
    live = np.flatnonzero(~done)
    pad = np.concatenate([live, np.flatnonzero(done)[:_bucket(live.size, d) - live.size]])
    k = _bucket(int((~conv[live]).sum(axis=1).max()), s)
    order = np.argsort(conv[pad], axis=1, kind="stable")[:, :k]   # unconverged first, then converged padding
    this = min(chunk, max_steps - used)
    sub = _descend_grid(jnp.asarray(np.take_along_axis(w[pad], order[..., None], axis=1)), X[jnp.asarray(pad)],
                        lr=lr, tol=tol, max_steps=this)
    sub = [np.asarray(a) for a in sub]
    active = ~np.take_along_axis(conv[pad], order, axis=1)
    local, cols = np.nonzero(active)
    rows, idx = pad[local], order[local, cols]
    w[rows, idx], e[rows, idx], g[rows, idx] = sub[0][local, cols], sub[1][local, cols], sub[2][local, cols]
    steps[rows, idx] += sub[3][local, cols]
    conv[rows, idx] = sub[4][local, cols]
    used += this
  return Descent(w, e, g, steps, conv)


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
    eig = lambda p, x: jnp.linalg.eigvalsh(riemannian_hessian(p, x))
    per_disorder = lambda ws, x: jax.lax.map(lambda p: eig(p, x), ws, batch_size=min(batch_size, ws.shape[0]))
    out = jax.jit(jax.vmap(per_disorder))(jnp.asarray(w), jnp.asarray(X))
    return np.asarray(out, np.float64)


def size_sweep(key: jax.Array, sizes: Sequence[int], p: int = 3, *, num_disorder: int, num_starts: int,
               lr: float = 0.1, tol: float = 1e-4, max_steps: int = 10_000, round_steps: int | None = 1000,
               hessian_batch: int = 8) -> dict[str, np.ndarray]:
  """Descent ensembles over system sizes N, with the tangent-space Hessian spectrum at every end point.

  Choromanska et al. (2015): the energies GD reaches concentrate as N grows.
  For each ``N``, ``(kx, kw) = split(fold_in(key, N))``: ``num_disorder``
  coupling samples from ``kx``, ``[num_disorder, num_starts]`` random starts
  from ``kw``, then :func:`descend_ensemble` and :func:`tangent_spectrum`
  (float64).

  Args:
    key: the key of the sweep.
    sizes: system sizes N.
    p: interaction order.
    num_disorder, num_starts: disorder samples and random starts per sample.
    lr, tol, max_steps, round_steps: as in :func:`descend_ensemble`.
    hessian_batch: ``batch_size`` of :func:`tangent_spectrum`.

  Returns:
    ``{"energy", "grad_norm", "steps", "converged", "min_eig", "index": [len(sizes), num_disorder * num_starts]}``
    (energy per spin, final tangent-gradient norm, steps taken, converged flag, smallest Hessian eigenvalue, number
    of negative eigenvalues) and ``{"eigs_n<N>": [num_disorder * num_starts, N - 1]}`` for every N.

  Example:
    >>> out = size_sweep(jax.random.key(0), [6, 8], num_disorder=1, num_starts=2, tol=1e-3, max_steps=500)
    >>> out["energy"].shape, out["eigs_n8"].shape
    ((2, 2), (2, 7))
  """
  res: dict[str, list] = {k: [] for k in ("energy", "grad_norm", "steps", "converged", "min_eig", "index")}
  eigs = {}
  for n in sizes:
    kx, kw = jax.random.split(jax.random.fold_in(key, n))
    X = jax.vmap(lambda k: disorder(k, n, p))(jax.random.split(kx, num_disorder))
    w0 = jax.vmap(jax.vmap(lambda k: random_point(k, n)))(jax.random.split(kw, (num_disorder, num_starts)))
    out = descend_ensemble(w0, X, lr=lr, tol=tol, max_steps=max_steps, round_steps=round_steps)
    ev = tangent_spectrum(out.w, X, batch_size=hessian_batch)
    for k in ("energy", "grad_norm", "steps", "converged"):
      res[k].append(np.asarray(getattr(out, k)).ravel())
    res["min_eig"].append(ev[..., 0].ravel())
    res["index"].append((ev < 0).sum(-1).ravel())
    eigs[f"eigs_n{n}"] = ev.reshape(-1, n - 1)
  return {**{k: np.asarray(v) for k, v in res.items()}, **eigs}
