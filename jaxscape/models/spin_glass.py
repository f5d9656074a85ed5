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
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

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
