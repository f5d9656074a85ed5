"""Sharpness of a minimum: Keskar et al.'s epsilon-sharpness (Metric 2.1).

Keskar, Mudigere, Nocedal, Smelyanskiy & Tang, "On large-batch training for
deep learning: generalization gap and sharp minima", ICLR 2017, Metric 2.1:

  phi(eps, A) = 100 * (max_{y in C_eps} f(x + A y) - f(x)) / (1 + f(x)),
  C_eps = {y in R^p : |y_i| <= eps (|(A^+ x)_i| + 1)},

with f the full-data training loss, x the flat parameter vector and A either
the identity (full space, the paper's Table 3) or a random ``n x p`` matrix
(random subspace, Table 4, p = 100). The paper solves the inner maximisation
inexactly with 10 iterations of L-BFGS-B.

L-BFGS-B started at ``y = 0`` on a minimiser sees a zero gradient and often
returns ~0, so :func:`keskar` runs two maximisers and reports both:

* ``lbfgsb``: scipy's L-BFGS-B (``scipy.optimize.minimize(method="L-BFGS-B")``)
  on ``-f`` with the box as bounds, exact ``jax.value_and_grad`` gradients,
  ``maxiter`` iterations (10, as in the paper). It runs on the host in
  float64 -- the one place in jaxscape that leaves JAX; each function
  evaluation is one jitted full-data value-and-gradient.
* ``sign``: projected sign-gradient ascent from uniformly random points of
  the box (``num_starts``, vectorised), ``y <- clip(y + eta_t b * sign(grad), -b, b)``
  with ``eta_t = 2`` for the first half of the steps (each step jumps to the
  corner that maximises the linearisation, monotone for convex f) and then
  decaying geometrically to 0.02; the best iterate is kept. Fully jitted.

The result's ``phi`` is the larger of the two, and it is checked against the
loss increase at a few random corners of the box (``corners``): a maximiser
should do at least as well as a random corner.

Example:
  >>> import jax, jax.numpy as jnp
  >>> from jaxscape import sharpness
  >>> f = lambda p: 0.5 * jnp.sum(p["w"] ** 2)
  >>> res = sharpness.keskar(jax.random.key(0), f, {"w": jnp.array([1.0, -2.0])}, eps=0.1)
  >>> round(res.phi, 2)   # box |y_i| <= 0.1 (|w_i| + 1): max at w = (1.2, -2.3), f 3.365 vs 2.5
  24.71
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import scipy.optimize
from jax.flatten_util import ravel_pytree

from . import tree as tree_lib
from .objective import Objective

from .tree import PyTree

MAXIMIZERS = ("lbfgsb", "sign")
"""Inner maximisers of :func:`keskar`."""

__all__ = ["MAXIMIZERS", "KeskarResult", "keskar", "random_subspace", "box_bounds"]


@dataclasses.dataclass(frozen=True)
class KeskarResult:
  """Keskar epsilon-sharpness at one point (host floats).

  Attributes:
    phi: ``max`` over the maximisers of ``phi`` (percent of ``1 + f(x)``).
    phi_by_maximizer: ``{"lbfgsb": phi, "sign": phi}`` for those that ran.
    corners: ``phi`` at ``num_corners`` uniformly random corners of the box.
    corners_ok: ``phi >= max(corners)``: the maximisation beat random corners.
      False means the maximisers stalled; raise ``maxiter`` / ``sign_steps``.
    loss: ``f(x)``.
    max_loss: the largest ``f(x + A y)`` found.
    eps: the box size epsilon.
    subspace_dim: ``None`` for the full space (A = I), else p.
    num_evals: value-and-gradient evaluations per maximiser.
  """

  phi: float
  phi_by_maximizer: dict[str, float]
  corners: tuple[float, ...]
  corners_ok: bool
  loss: float
  max_loss: float
  eps: float
  subspace_dim: int | None
  num_evals: dict[str, int]


def random_subspace(key: jax.Array, n: int, p: int, dtype: Any = jnp.float32) -> jax.Array:
  """The random ``n x p`` matrix A of the random-subspace sharpness.

  Entries are i.i.d. ``N(0, 1/n)``, so for ``n >> p`` the columns are nearly
  orthonormal (``A^T A ~ I``) and ``A^+ ~ A^T``. :func:`keskar` does not rely
  on that approximation: it applies the exact pseudo-inverse
  ``A^+ = (A^T A)^{-1} A^T`` through the ``p x p`` Gram matrix (O(n p^2)).
  A is stored densely: ``n p`` numbers (400 MB for n = 1e6, p = 100 in float32).
  """
  if not 1 <= p <= n:
    raise ValueError(f"subspace_dim must be in [1, n={n}]; got {p}")
  return jax.random.normal(key, (n, p), dtype) / jnp.sqrt(jnp.asarray(n, dtype))


def box_bounds(x: jax.Array, eps: float, a: jax.Array | None = None) -> jax.Array:
  """Half-widths ``eps (|(A^+ x)_i| + 1)`` of the box C_eps (A = I when None)."""
  if a is None:
    return eps * (jnp.abs(x) + 1)
  ax = jnp.linalg.solve(a.T @ a, a.T @ x)
  return eps * (jnp.abs(ax) + 1)


def _phi(value: float, f0: float) -> float:
  return 100.0 * (value - f0) / (1.0 + f0)


@tree_lib.key_first()
def keskar(
    key: jax.Array,
    obj: Objective | Callable[[PyTree], jax.Array],
    params: PyTree,
    eps: float = 1e-3,
    *,
    subspace_dim: int | None = None,
    maximizers: tuple[str, ...] = MAXIMIZERS,
    maxiter: int = 10,
    sign_steps: int = 20,
    num_starts: int = 4,
    num_corners: int = 8,
) -> KeskarResult:
  """Keskar et al.'s epsilon-sharpness ``phi(eps, A)`` at ``params``.

  Args:
    key: PRNG key (random subspace, sign-ascent start, corners);
      ``keskar(obj, params, eps, key=key)`` works too.
    obj: an :class:`~jaxscape.objective.Objective` (its full-data loss
      ``obj.value``) or any function ``f(params) -> scalar``.
    params: the point x (a pytree; flattened internally).
    eps: box size epsilon (the paper uses 1e-3 and 5e-4).
    subspace_dim: None for A = I (full space); p for a random ``n x p`` A
      (:func:`random_subspace`; the paper uses p = 100).
    maximizers: any of :data:`MAXIMIZERS`.
    maxiter: L-BFGS-B iterations (10 in the paper).
    sign_steps: projected sign-gradient ascent steps per start.
    num_starts: random starting points of the sign ascent (vectorised; memory
      grows with it).
    num_corners: random box corners for the sanity check.

  Returns:
    A :class:`KeskarResult`.

  Example:
    >>> phi = js.sharpness.keskar(key, obj, params, eps=1e-3)  # doctest: +SKIP
    >>> phi.phi, phi.phi_by_maximizer, phi.corners, phi.corners_ok  # doctest: +SKIP
  """
  if eps <= 0:
    raise ValueError(f"eps must be > 0; got {eps}")
  bad = [m for m in maximizers if m not in MAXIMIZERS]
  if bad or not maximizers:
    raise ValueError(f"maximizers must be a non-empty subset of {MAXIMIZERS}; got {maximizers!r}")
  if maxiter < 1 or sign_steps < 1 or num_starts < 1 or num_corners < 0:
    raise ValueError(f"need maxiter >= 1, sign_steps >= 1, num_starts >= 1, num_corners >= 0; "
                     f"got {maxiter}, {sign_steps}, {num_starts}, {num_corners}")
  if isinstance(obj, Objective):
    target = obj
  elif callable(obj):
    target = _Function(obj)
  else:
    raise ValueError(f"obj must be an Objective or a callable f(params); got {type(obj).__name__}")

  x, _ = ravel_pytree(params)
  n, dtype = x.shape[0], x.dtype
  k_sub, k_start, k_corner = jax.random.split(key, 3)
  a = None if subspace_dim is None else random_subspace(k_sub, n, int(subspace_dim), dtype)
  b = box_bounds(x, eps, a)

  # module-level jitted functions take the objective as an argument: one
  # compilation serves every call with the same shapes (seeds, boxes, eps)
  def value(y, x, a):
    return _value(target, params, x, y, a)

  def value_and_grad(y, x, a):
    return _value_and_grad(target, params, x, y, a)

  f0 = float(value(jnp.zeros_like(b), x, a))
  phis, evals, best = {}, {}, f0

  if "lbfgsb" in maximizers:
    seen = [f0]

    def neg(y):
      v, gr = value_and_grad(jnp.asarray(y, dtype), x, a)
      seen.append(float(v))
      return -float(v), -np.asarray(gr, np.float64)

    bnp = np.asarray(b, np.float64)
    scipy.optimize.minimize(neg, np.zeros_like(bnp), jac=True, method="L-BFGS-B",
                            bounds=scipy.optimize.Bounds(-bnp, bnp), options={"maxiter": int(maxiter)})
    # every L-BFGS-B evaluation is a feasible point of the box: keep the best
    phis["lbfgsb"], evals["lbfgsb"] = _phi(max(seen), f0), len(seen) - 1
    best = max(best, max(seen))

  if "sign" in maximizers:
    y0 = jax.random.uniform(k_start, (int(num_starts), *b.shape), b.dtype, -1.0, 1.0) * b[None]  # one box per start
    v_best = float(_sign_ascent(target, params, y0, x, a, b, _sign_schedule(int(sign_steps), b.dtype)))
    phis["sign"], evals["sign"] = _phi(v_best, f0), num_starts * (sign_steps + 1)
    best = max(best, v_best)

  corners = ()
  if num_corners:
    signs = jax.random.rademacher(k_corner, (num_corners, b.shape[0]), dtype)
    vals = _corner_values(target, params, x, a, b, signs)
    corners = tuple(_phi(float(v), f0) for v in np.asarray(vals))
  phi = max(phis.values())
  # tolerance: the same loss computed by different compiled programs differs by
  # rounding, ~ a few eps of the parameter dtype times |f(x)|
  slack = 100.0 * 16 * float(jnp.finfo(dtype).eps) * max(abs(f0), 1.0) / (1.0 + f0)
  return KeskarResult(
      phi=phi,
      phi_by_maximizer=phis,
      corners=corners,
      corners_ok=bool(not corners or phi >= max(corners) - slack),
      loss=f0,
      max_loss=best,
      eps=float(eps),
      subspace_dim=None if subspace_dim is None else int(subspace_dim),
      num_evals=evals,
  )


def _sign_schedule(steps: int, dtype: Any) -> jax.Array:
  """Step sizes (in units of the box half-widths): the first half 2 (each step
  jumps to the corner maximising the linearisation; monotone for convex f),
  then geometric decay to 0.02 so that interior maxima can be approached."""
  hold = steps // 2
  decay = 2.0 * 0.01 ** (np.arange(steps - hold) / max(steps - hold - 1, 1))
  return jnp.asarray(np.concatenate([np.full(hold, 2.0), decay]), dtype)


@dataclasses.dataclass(frozen=True)
class _Function:
  """A plain ``f(params)`` as a pytree with ``f`` static, so it passes through ``jit`` like an Objective."""

  f: Callable[[PyTree], jax.Array]

  def value(self, params: PyTree) -> jax.Array:
    return self.f(params)


jax.tree_util.register_dataclass(_Function, data_fields=[], meta_fields=["f"])


def _loss_at(target: Any, like: PyTree, x: jax.Array, y: jax.Array, a: jax.Array | None) -> jax.Array:
  """``f(x + A y)`` (``A = I`` when ``a`` is None), with ``like`` giving the pytree structure of x."""
  _, unravel = ravel_pytree(like)
  return target.value(unravel(x + (y if a is None else a @ y)))


_value = jax.jit(_loss_at)
_value_and_grad = jax.jit(jax.value_and_grad(_loss_at, argnums=3))


@jax.jit
def _corner_values(target, like, x, a, b, signs):
  return jax.lax.map(lambda s: _loss_at(target, like, x, b * s, a), signs)


@jax.jit
def _sign_ascent(target, like, y0, x, a, b, rates):
  """Projected sign-gradient ascent on the box [-b, b] from the random points
  ``y0`` (run together under ``vmap``); the best value seen."""
  value_and_grad = jax.value_and_grad(_loss_at, argnums=3)

  def one(y0):
    def step(carry, eta):
      y, best = carry
      v, gr = value_and_grad(target, like, x, y, a)
      y = jnp.clip(y + eta * b * jnp.sign(gr), -b, b)
      return (y, jnp.maximum(best, v)), None

    (y, best), _ = jax.lax.scan(step, (y0, jnp.asarray(-jnp.inf, b.dtype)), rates)
    return jnp.maximum(best, _loss_at(target, like, x, y, a))

  return jnp.max(jax.vmap(one)(y0))
