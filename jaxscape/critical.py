"""Critical points of an objective: search, index and saddle-free Newton.

Dauphin et al. (2014) argue that in high dimension the critical points of a
training loss whose error is well above the minimum are saddles, and that the
fraction of negative Hessian eigenvalues (the *index*) grows with the error
(see also Pennington & Bahri 2017). Checking that needs three tools, all here:

* **Locating critical points of any index.** Minimising the loss only finds
  minima; minimising ``1/2 ||grad f||^2`` finds saddles too. The Jacobian of
  ``grad f`` is the Hessian ``H``, so a Gauss-Newton / Levenberg-Marquardt step
  on the gradient system solves ``(H^2 + mu I) delta = -H g``
  (``method="newton_gradnorm"``), and Newton-MR (Roosta et al. 2018) takes the
  minimum-residual step ``delta = -H^+ g`` with a backtracking line search on
  ``||g||^2`` (``method="newton_mr"``). Both use the dense Hessian and reach
  ``||grad f|| ~ 1e-12`` in float64 within a few steps of a non-degenerate point.
  Frye et al. (2021) warn that such methods also stop in *gradient-flat*
  regions, where ``||g||^2`` is locally minimal but not zero (``g`` in the
  near-kernel of ``H``); those are reported with ``status="gradient_flat"``
  and ``converged=False``, never as critical points.
* **Dense curvature for small models** (a few hundred parameters):
  :func:`dense_hessian` and :func:`index`.
* **Saddle-free Newton** (SFN; Dauphin et al. 2014): ``delta = -|H|^-1 g`` with
  ``|H| = V |Lambda| V^T``, dense or restricted to the ``k``-dimensional
  Krylov subspace ``K_k(H, g)`` built by Lanczos on Hessian-vector products
  (``jax.jvp`` of ``jax.grad``), next to damped Newton and gradient descent,
  and :func:`escape_saddle` to count how many steps each needs to leave a
  saddle.

Parameters are flattened with ``jax.flatten_util.ravel_pytree``; dense
matrices and eigenvectors are in that order. When 64-bit mode is on
(``jax.enable_x64``), parameters are cast to float64 before any dense
computation, so the Hessian, the search and the steps run in float64.

References:
  Dauphin, Pascanu, Gulcehre, Cho, Ganguli, Bengio. Identifying and attacking
  the saddle point problem in high-dimensional non-convex optimization.
  NeurIPS 2014.
  Pennington & Bahri. Geometry of neural network loss surfaces via random
  matrix theory. ICML 2017.
  Roosta, Liu, Xu, Mahoney. Newton-MR: Inexact Newton method with minimum
  residual sub-problem solver. 2018 (arXiv:1810.00303).
  Frye, Simon, Wadia, Ligeralde, DeWeese, Bouchard. Critical point-finding
  methods reveal gradient-flat regions of deep network losses.
  Neural Computation 33(6), 2021.

Example:
  >>> import jax, jax.numpy as jnp
  >>> import jaxscape as js
  >>> from jaxscape import critical
  >>> # f(w1, w2) = (1 - w2 w1)^2: a 1-1-1 linear net, saddle at the origin
  >>> apply = lambda p, x: p["w2"] * p["w1"] * x[:, 0]
  >>> obj = js.Objective.from_apply(apply, data=(jnp.ones((1, 1)), jnp.ones(1)), loss="mse")
  >>> with jax.enable_x64(True):
  ...   cp = critical.find_critical_point(obj, {"w1": jnp.array(0.1), "w2": jnp.array(-0.05)})
  >>> cp.converged, float(cp.index)
  (True, 0.5)
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from .objective import Objective

PyTree = Any

__all__ = [
    "METHODS",
    "STEP_METHODS",
    "CriticalPoint",
    "EscapeResult",
    "dense_hessian",
    "hessian_eigh",
    "index",
    "find_critical_point",
    "solve_gradient_system",
    "gradient_descent_step",
    "newton_step",
    "saddle_free_newton_step",
    "saddle_free_newton_step_krylov",
    "escape_saddle",
]

METHODS = ("newton_gradnorm", "newton_mr")
"""Critical-point search methods of :func:`find_critical_point`."""

STEP_METHODS = ("gd", "newton", "sfn", "sfn_krylov")
"""Optimiser steps compared by :func:`escape_saddle`."""

_STATUS = ("running", "converged", "gradient_flat", "max_steps")


# ----------------------------------------------------------------- utilities
def _working_dtype(flat: jax.Array) -> jnp.dtype:
  """float64 under ``jax.enable_x64``, else the parameters' own float dtype."""
  if jax.config.jax_enable_x64:
    return jnp.dtype(jnp.float64)
  return flat.dtype if jnp.issubdtype(flat.dtype, jnp.floating) else jnp.dtype(jnp.float32)


def _flatten(params: PyTree) -> jax.Array:
  """Ravels ``params`` (``ravel_pytree`` order) into the working dtype."""
  flat, _ = ravel_pytree(params)
  if flat.size == 0:
    raise ValueError("params has no array leaves: expected a pytree with at least one parameter")
  return flat.astype(_working_dtype(flat))


def _unflatten_like(v: jax.Array, params: PyTree) -> PyTree:
  """Splits a flat vector into ``params``' structure, keeping ``v``'s dtype.

  (``ravel_pytree``'s inverse would cast back to the leaves' original dtypes;
  this keeps float64 when the search runs in float64.)
  """
  leaves, treedef = jax.tree.flatten(params)
  out, start = [], 0
  for leaf in leaves:
    size = int(jnp.size(leaf))
    out.append(v[start:start + size].reshape(jnp.shape(leaf)))
    start += size
  return jax.tree.unflatten(treedef, out)


def _flat_value(obj: Objective, params: PyTree) -> Callable[[jax.Array], jax.Array]:
  """``obj.value`` as a function of the flat parameter vector."""
  return lambda v: obj.value(_unflatten_like(v, params))


def _sym_eigh(h: jax.Array) -> tuple[jax.Array, jax.Array]:
  lam, vecs = jnp.linalg.eigh(0.5 * (h + h.T))
  return lam, vecs


# ----------------------------------------------------------- dense curvature
@jax.jit
def _dense_hessian(obj: Objective, params: PyTree) -> jax.Array:
  flat = _flatten(params)
  h = jax.hessian(_flat_value(obj, params))(flat)
  return 0.5 * (h + h.T)


def dense_hessian(obj: Objective, params: PyTree) -> jax.Array:
  """The full Hessian of ``obj.value`` at ``params``, as an ``[n, n]`` matrix.

  Computed with ``jax.hessian`` (forward-over-reverse: ``n`` Hessian-vector
  products) on the parameters flattened by ``ravel_pytree``, and symmetrised
  (``(H + H^T)/2``). In float64 when 64-bit mode is on. Meant for small models
  (a few hundred to a few thousand parameters).

  Args:
    obj: the objective.
    params: parameter pytree.

  Returns:
    ``[n, n]`` array, rows and columns in ``ravel_pytree(params)`` order.

  Example:
    >>> import jax.numpy as jnp, jaxscape as js
    >>> apply = lambda p, x: x @ p
    >>> obj = js.Objective.from_apply(apply, data=(jnp.eye(2), jnp.zeros(2)), loss="mse")
    >>> dense_hessian(obj, jnp.zeros(2)).tolist()   # mean of (x.p)^2: H = 2 X^T X / N
    [[1.0, 0.0], [0.0, 1.0]]
  """
  return _dense_hessian(obj, params)


def hessian_eigh(obj: Objective, params: PyTree) -> tuple[jax.Array, jax.Array]:
  """Eigenvalues (ascending) and eigenvectors (columns) of :func:`dense_hessian`."""
  return _sym_eigh(dense_hessian(obj, params))


def _default_eps(eigenvalues: jax.Array) -> jax.Array:
  lam = jnp.asarray(eigenvalues)
  return lam.shape[-1] * jnp.finfo(lam.dtype).eps * jnp.max(jnp.abs(lam), axis=-1)


def index(eigenvalues: jax.typing.ArrayLike, eps: float | None = None) -> jax.Array:
  """Index of a critical point: the fraction of Hessian eigenvalues below ``-eps``.

  Dauphin et al. (2014) call this ``alpha``; 0 at a minimum, 1 at a maximum.

  Args:
    eigenvalues: ``[..., n]`` Hessian eigenvalues.
    eps: eigenvalues in ``[-eps, eps]`` count as zero (not negative). The
      default is the numerical-rank threshold ``n * machine_eps * max|lambda|``
      (as ``numpy.linalg.matrix_rank``), which separates rounding noise from
      curvature; pass a larger value to ignore small negative curvature.

  Returns:
    The index, a float in ``[0, 1]`` (one per leading index).

  Example:
    >>> float(index(jnp.array([-2.0, -1e-9, 0.5, 3.0]), eps=1e-6))
    0.25
  """
  lam = jnp.asarray(eigenvalues)
  if lam.ndim == 0 or lam.shape[-1] == 0:
    raise ValueError(f"eigenvalues must have a non-empty last axis; got shape {lam.shape}")
  threshold = _default_eps(lam) if eps is None else jnp.asarray(eps, lam.dtype)
  return jnp.mean((lam < -jnp.expand_dims(threshold, -1)).astype(lam.dtype), axis=-1)


# --------------------------------------------------- critical-point search
def solve_gradient_system(
    f: Callable[[jax.Array], jax.Array],
    x0: jax.Array,
    *,
    method: str = "newton_gradnorm",
    max_steps: int = 100,
    tol: float = 1e-6,
    max_damping: float = 1e10,
) -> dict[str, jax.Array]:
  """Drives ``grad f`` to zero from ``x0`` for a function of a flat vector.

  The jittable, vmappable core of :func:`find_critical_point` (and of
  :func:`jaxscape.testfns.find_critical_points`). Each step uses the dense
  Hessian ``H = V diag(lam) V^T`` at the current point:

  * ``"newton_gradnorm"`` (Levenberg-Marquardt on the gradient system, i.e.
    Gauss-Newton on ``1/2 ||g||^2``): ``delta = -(H^2 + mu s I)^-1 H g`` with
    ``s = max lam^2``. A step is accepted when the gain ratio ``rho`` (actual
    over predicted decrease of ``1/2 ||g||^2``) exceeds ``1e-4``; ``mu`` then
    shrinks by ``max(1/3, 1 - (2 rho - 1)^3)`` (down to ``1e-15``), otherwise it
    grows by a doubling factor and the step is retried from the same
    eigendecomposition (Nielsen's rule; Madsen, Nielsen & Tingleff 2004).
    ``mu -> 0`` is Newton's step, so the convergence is quadratic near any
    non-degenerate critical point, whatever its index.
  * ``"newton_mr"``: ``delta = -H^+ g`` (pseudo-inverse, eigenvalues below
    ``sqrt(machine_eps) * max|lam|`` dropped), step length ``t`` halved until
    ``||g(x + t delta)||^2 <= ||g||^2 - 2e-4 t ||P g||^2`` (Armijo on
    ``||g||^2``; ``P`` projects on the kept eigen-directions).

  Stops with status ``converged`` when ``||g|| < tol``, ``gradient_flat`` when
  no step lowers ``||g||`` any more (``mu > max_damping``, or 40 halvings of
  ``t``): ``||g||^2`` is locally minimal but not zero. Otherwise ``max_steps``.

  Args:
    f: scalar function of a 1-D array.
    x0: starting point, ``[n]``.
    method: one of :data:`METHODS`.
    max_steps: maximum number of accepted-or-rejected steps (may be traced).
    tol: gradient-norm tolerance.
    max_damping: the relative damping ``mu`` at which the search gives up.

  Far from a critical point either method can need hundreds of steps (each
  one dense Hessian): on a 226-parameter tanh MLP on 1797 digits, starts on a
  gradient-descent trajectory reached ``||g|| ~ 1e-5 .. 3e-4`` after 150 LM
  steps. Budget ``max_steps`` accordingly.

  Returns:
    A dict of arrays: ``x``, ``value``, ``grad_norm``, ``eigenvalues``,
    ``eigenvectors``, ``steps`` and ``status`` (an index into
    ``("running", "converged", "gradient_flat", "max_steps")``).
  """
  if method not in METHODS:
    raise ValueError(f"unknown method {method!r}: expected one of {METHODS}")
  if isinstance(max_steps, (int, np.integer)) and max_steps < 0:
    raise ValueError(f"max_steps must be a non-negative int; got {max_steps!r}")
  grad = jax.grad(f)
  hess = jax.hessian(f)
  x0 = jnp.asarray(x0)
  dtype = x0.dtype
  tiny = jnp.finfo(dtype).tiny
  rcond = jnp.sqrt(jnp.finfo(dtype).eps)
  tol = jnp.asarray(tol, dtype)

  def eig(x):
    return _sym_eigh(hess(x))

  def status_of(gn, mu, step, flat):
    return jnp.where(gn < tol, 1, jnp.where(flat | (mu > max_damping), 2, jnp.where(step >= max_steps, 3, 0)))

  def lm_body(state):
    x, g, lam, vecs, (mu, nu), step, _ = state
    gn2 = g @ g
    gt = vecs.T @ g
    s = jnp.max(lam**2) + tiny
    damp = mu * s
    delta = -vecs @ (lam * gt / (lam**2 + damp))
    # reduction of 1/2 ||g||^2 predicted by the linear model g + H delta
    predicted = 0.5 * jnp.sum(gt**2 * (1 - (damp / (lam**2 + damp)) ** 2))
    x_new = x + delta
    g_new = grad(x_new)
    actual = 0.5 * (gn2 - g_new @ g_new)
    rho = actual / jnp.maximum(predicted, tiny)
    accept = jnp.isfinite(actual) & (actual > 0) & (rho > 1e-4) & jnp.all(jnp.isfinite(x_new))
    x = jnp.where(accept, x_new, x)
    g = jnp.where(accept, g_new, g)
    lam, vecs = jax.lax.cond(accept, lambda: eig(x_new), lambda: (lam, vecs))
    # Nielsen's update (Madsen, Nielsen & Tingleff 2004, Sec. 3.2)
    shrink = jnp.maximum(1 / 3, 1 - (2 * jnp.clip(rho, 0, 1) - 1) ** 3)
    mu, nu = jnp.where(accept, jnp.maximum(mu * shrink, 1e-15), mu * nu), jnp.where(accept, 2.0, nu * 2)
    step = step + 1
    return x, g, lam, vecs, (mu, nu), step, status_of(jnp.linalg.norm(g), mu, step, False)

  def mr_body(state):
    x, g, lam, vecs, (mu, nu), step, _ = state
    gn2 = g @ g
    gt = vecs.T @ g
    keep = jnp.abs(lam) > rcond * jnp.max(jnp.abs(lam))
    delta = -vecs @ jnp.where(keep, gt / jnp.where(keep, lam, 1), 0)
    decrease = jnp.sum(jnp.where(keep, gt**2, 0))  # ||P g||^2 = -<H g, delta>

    def ls_cond(c):
      t, ok, _ = c
      return (~ok) & (t > 2.0**-40)

    def ls_body(c):
      t, _, _ = c
      t = t / 2
      gt_ = grad(x + t * delta)
      return t, gt_ @ gt_ <= gn2 - 2e-4 * t * decrease, gt_

    g1 = grad(x + delta)
    t, ok, g_new = jax.lax.while_loop(ls_cond, ls_body, (jnp.asarray(1.0, dtype), g1 @ g1 <= gn2 - 2e-4 * decrease, g1))
    ok = ok & jnp.all(jnp.isfinite(g_new))
    x = jnp.where(ok, x + t * delta, x)
    g = jnp.where(ok, g_new, g)
    lam, vecs = jax.lax.cond(ok, lambda: eig(x), lambda: (lam, vecs))
    step = step + 1
    return x, g, lam, vecs, (mu, nu), step, status_of(jnp.linalg.norm(g), mu, step, ~ok)

  g0 = grad(x0)
  lam0, vecs0 = eig(x0)
  mu0 = jnp.asarray(1e-3, dtype)
  step0 = jnp.asarray(0, jnp.int32)
  state = (x0, g0, lam0, vecs0, (mu0, jnp.asarray(2.0, dtype)), step0,
           status_of(jnp.linalg.norm(g0), mu0, step0, False))
  body = lm_body if method == "newton_gradnorm" else mr_body
  x, g, lam, vecs, _, step, status = jax.lax.while_loop(lambda s: s[-1] == 0, body, state)
  return {"x": x, "value": f(x), "grad_norm": jnp.linalg.norm(g), "eigenvalues": lam,
          "eigenvectors": vecs, "steps": step, "status": status}


@dataclasses.dataclass(frozen=True)
class CriticalPoint:
  """Result of :func:`find_critical_point`.

  Attributes:
    params: the final parameters (a pytree like the input, in the working dtype).
    loss: full-data loss there.
    grad_norm: ``||grad f||`` there.
    index: fraction of Hessian eigenvalues below ``-eps`` (see :func:`index`).
    eigenvalues: all Hessian eigenvalues there, ascending.
    steps: number of search steps taken.
    converged: ``grad_norm < tol``. Only converged points are critical points.
    status: ``"converged"``, ``"gradient_flat"`` (``||g||^2`` locally minimal
      but not below ``tol``: Frye et al. 2021's gradient-flat region) or
      ``"max_steps"``.
    method: the search method.
    tol: the gradient-norm tolerance.
    eps: the eigenvalue threshold used for the index.
  """

  params: PyTree
  loss: float
  grad_norm: float
  index: float
  eigenvalues: jax.Array
  steps: int
  converged: bool
  status: str
  method: str
  tol: float
  eps: float


@functools.partial(jax.jit, static_argnames=("method",))
def _find(obj, params, tol, max_damping, method, max_steps):
  flat = _flatten(params)
  out = solve_gradient_system(_flat_value(obj, params), flat, method=method, max_steps=max_steps,
                              tol=tol, max_damping=max_damping)
  out["params"] = _unflatten_like(out.pop("x"), params)
  out.pop("eigenvectors")
  return out


def find_critical_point(
    obj: Objective,
    params: PyTree,
    *,
    method: str = "newton_gradnorm",
    max_steps: int = 100,
    tol: float = 1e-6,
    eps: float | None = None,
    max_damping: float = 1e10,
) -> CriticalPoint:
  """Finds a critical point of ``obj.value`` near ``params``, of any index.

  Minimises ``1/2 ||grad f||^2`` with a Newton-type method on the dense
  Hessian (see :func:`solve_gradient_system`), so it converges to saddles and
  maxima as readily as to minima (Dauphin et al. 2014 located the critical
  points of small MLPs this way). Use float64 (``jax.enable_x64``) to reach
  gradient norms of ``1e-6`` and below.

  Args:
    obj: the objective (a small model: the Hessian is dense).
    params: starting parameters, e.g. a point of an SGD trajectory.
    method: ``"newton_gradnorm"`` (Levenberg-Marquardt) or ``"newton_mr"``.
    max_steps: step budget.
    tol: a point is a critical point when ``||grad f|| < tol``.
    eps: eigenvalue threshold for the index (default: see :func:`index`).
    max_damping: give up (``gradient_flat``) when the relative LM damping
      exceeds this.

  Returns:
    A :class:`CriticalPoint`. Check ``converged`` before using ``index``:
    an unconverged point is not a critical point.

  Example:
    >>> import jax, jax.numpy as jnp, jaxscape as js
    >>> apply = lambda p, x: p[0] ** 2 - p[1] ** 2 + 0 * x[:, 0]   # x^2 - y^2
    >>> obj = js.Objective.from_apply(apply, data=(jnp.zeros((1, 1)), jnp.zeros(1)),
    ...                               loss=lambda out, t: out)
    >>> with jax.enable_x64(True):
    ...   cp = find_critical_point(obj, jnp.array([0.3, -0.2]))
    >>> cp.status, float(cp.index)
    ('converged', 0.5)
  """
  if method not in METHODS:
    raise ValueError(f"unknown method {method!r}: expected one of {METHODS}")
  if not isinstance(max_steps, int) or max_steps < 0:
    raise ValueError(f"max_steps must be a non-negative int; got {max_steps!r}")
  if not tol > 0:
    raise ValueError(f"tol must be positive; got {tol!r}")
  out = _find(obj, params, tol, max_damping, method, max_steps)
  lam = out["eigenvalues"]
  eps_value = float(_default_eps(lam)) if eps is None else float(eps)
  gn = float(out["grad_norm"])
  return CriticalPoint(
      params=out["params"], loss=float(out["value"]), grad_norm=gn, index=float(index(lam, eps_value)),
      eigenvalues=lam, steps=int(out["steps"]), converged=bool(gn < tol), status=_STATUS[int(out["status"])],
      method=method, tol=float(tol), eps=eps_value)


# ------------------------------------------------------------------- steps
def _gd_flat(f, x, lr, damping, krylov_dim):
  del damping, krylov_dim
  return -lr * jax.grad(f)(x)


def _newton_flat(f, x, lr, damping, krylov_dim):
  del krylov_dim
  g, h = jax.grad(f)(x), jax.hessian(f)(x)
  h = 0.5 * (h + h.T)
  return -lr * jnp.linalg.solve(h + damping * jnp.eye(x.shape[0], dtype=x.dtype), g)


def _sfn_flat(f, x, lr, damping, krylov_dim):
  del krylov_dim
  g = jax.grad(f)(x)
  lam, vecs = _sym_eigh(jax.hessian(f)(x))
  return -lr * (vecs @ ((vecs.T @ g) / (jnp.abs(lam) + damping)))


def _lanczos(matvec: Callable[[jax.Array], jax.Array], q0: jax.Array, k: int) -> tuple[jax.Array, jax.Array, jax.Array]:
  """``k`` Lanczos steps with full reorthogonalisation.

  Returns ``(Q, alpha, beta)``: orthonormal rows ``Q [k, n]`` spanning
  ``K_k(A, q0)`` and the tridiagonal ``T = Q A Q^T`` (diagonal ``alpha``,
  off-diagonal ``beta[:-1]``). On breakdown (an invariant subspace found
  early) the remaining rows are zero.
  """
  n = q0.shape[0]
  dtype = q0.dtype
  small = jnp.sqrt(jnp.finfo(dtype).eps)

  def body(i, carry):
    qs, alpha, beta, q, q_prev, b_prev = carry
    qs = qs.at[i].set(q)
    w = matvec(q)
    a = q @ w
    w = w - a * q - b_prev * q_prev
    w = w - qs.T @ (qs @ w)
    w = w - qs.T @ (qs @ w)
    b = jnp.linalg.norm(w)
    ok = b > small * (jnp.abs(a) + b_prev + jnp.finfo(dtype).tiny) * 1e-3
    q_next = jnp.where(ok, w / jnp.where(ok, b, 1), 0)
    b = jnp.where(ok, b, 0)
    return qs, alpha.at[i].set(a), beta.at[i].set(b), q_next, q, b

  init = (jnp.zeros((k, n), dtype), jnp.zeros(k, dtype), jnp.zeros(k, dtype), q0, jnp.zeros_like(q0),
          jnp.zeros((), dtype))
  qs, alpha, beta, *_ = jax.lax.fori_loop(0, k, body, init)
  return qs, alpha, beta


def _sfn_krylov_flat(f, x, lr, damping, krylov_dim):
  grad = jax.grad(f)
  g = grad(x)
  gn = jnp.linalg.norm(g)
  q0 = jnp.where(gn > 0, g / jnp.where(gn > 0, gn, 1), 0)
  hvp = lambda v: jax.jvp(grad, (x,), (v,))[1]
  qs, alpha, beta = _lanczos(hvp, q0, krylov_dim)
  t = jnp.diag(alpha) + jnp.diag(beta[:-1], 1) + jnp.diag(beta[:-1], -1)
  mu, u = jnp.linalg.eigh(t)
  denom = jnp.abs(mu) + damping
  coef = gn * u[0, :]  # U^T (Q g) with Q g = ||g|| e_1
  y = u @ jnp.where(denom > 0, coef / jnp.where(denom > 0, denom, 1), 0)
  return -lr * (qs.T @ y)


_STEPS = {"gd": _gd_flat, "newton": _newton_flat, "sfn": _sfn_flat, "sfn_krylov": _sfn_krylov_flat}


@functools.partial(jax.jit, static_argnames=("method", "krylov_dim"))
def _step(obj, params, lr, damping, method, krylov_dim):
  flat = _flatten(params)
  return _unflatten_like(_STEPS[method](_flat_value(obj, params), flat, lr, damping, krylov_dim), params)


def gradient_descent_step(obj: Objective, params: PyTree, lr: float) -> PyTree:
  """The gradient-descent update ``-lr * grad f`` (a pytree like ``params``)."""
  return _step(obj, params, lr, 0.0, "gd", None)


def newton_step(obj: Objective, params: PyTree, damping: float = 0.0) -> PyTree:
  """The damped Newton update ``-(H + damping I)^-1 grad f``.

  Newton's method rescales each eigen-direction by ``1/lambda``, which flips
  the sign of the step along negative-curvature directions: near a saddle it
  moves *towards* the saddle (Dauphin et al. 2014, Sec. 4).
  """
  return _step(obj, params, 1.0, damping, "newton", None)


def saddle_free_newton_step(obj: Objective, params: PyTree, damping: float = 0.0) -> PyTree:
  """The saddle-free Newton update ``-(|H| + damping I)^-1 grad f`` (dense).

  ``|H| = V |Lambda| V^T`` from the eigendecomposition of the dense Hessian:
  Newton's rescaling by the curvature magnitude, but always downhill, so
  negative-curvature directions are followed away from a saddle (Dauphin et
  al. 2014, Eq. 6 / Algorithm 1 without the Krylov restriction).

  Args:
    obj: the objective.
    params: parameter pytree.
    damping: added to every ``|lambda|`` (must make them all positive).

  Returns:
    The update, a pytree like ``params``.

  Example:
    >>> import jax.numpy as jnp, jaxscape as js
    >>> apply = lambda p, x: p[0] ** 2 - p[1] ** 2 + 0 * x[:, 0]
    >>> obj = js.Objective.from_apply(apply, data=(jnp.zeros((1, 1)), jnp.zeros(1)),
    ...                               loss=lambda out, t: out)
    >>> saddle_free_newton_step(obj, jnp.array([0.5, 0.25])).tolist()  # |H| = 2 I
    [-0.5, 0.25]
  """
  return _step(obj, params, 1.0, damping, "sfn", None)


def saddle_free_newton_step_krylov(obj: Objective, params: PyTree, damping: float, krylov_dim: int) -> PyTree:
  """Matrix-free saddle-free Newton in the Krylov subspace ``K_k(H, g)``.

  ``k = krylov_dim`` Lanczos steps (full reorthogonalisation) on
  Hessian-vector products ``jax.jvp(jax.grad(f), (x,), (v,))``, started from
  the gradient, give an orthonormal basis ``Q`` and ``T = Q H Q^T``; the step
  is ``-Q^T |T + 0|^-1 Q g`` with ``|T| = U (|mu| + damping) U^T``
  (Dauphin et al. 2014, Algorithm 1). It costs ``k`` HVPs and never forms
  ``H``; with ``k = n`` it equals the dense :func:`saddle_free_newton_step`.

  Args:
    obj: the objective.
    params: parameter pytree.
    damping: added to every Ritz value's magnitude.
    krylov_dim: ``k``, the subspace dimension (static; at most ``n``).

  Returns:
    The update, a pytree like ``params``.
  """
  n = sum(int(jnp.size(leaf)) for leaf in jax.tree.leaves(params))
  if not isinstance(krylov_dim, int) or not 1 <= krylov_dim <= n:
    raise ValueError(f"krylov_dim must be an int in [1, {n}] (the number of parameters); got {krylov_dim!r}")
  return _step(obj, params, 1.0, damping, "sfn_krylov", krylov_dim)


# --------------------------------------------------------- saddle escape
@dataclasses.dataclass(frozen=True)
class EscapeResult:
  """Result of :func:`escape_saddle`.

  Attributes:
    method: the step method.
    losses: ``[steps + 1]`` loss before each step and after the last.
    grad_norms: ``[steps + 1]`` gradient norms at the same points.
    params: the final parameters.
    escape_step: the first step count ``t`` with
      ``losses[t] <= losses[0] - threshold``, or ``-1`` if the run never
      dropped that far.
    threshold: the loss drop that counts as an escape.
    lr: the step size used.
    damping: the damping used (Newton-type methods).
  """

  method: str
  losses: jax.Array
  grad_norms: jax.Array
  params: PyTree
  escape_step: int
  threshold: float
  lr: float
  damping: float


@functools.partial(jax.jit, static_argnames=("method", "steps", "krylov_dim"))
def _run(obj, params, lr, damping, method, steps, krylov_dim):
  flat = _flatten(params)
  f = _flat_value(obj, params)
  step = _STEPS[method]

  def body(x, _):
    value, g = jax.value_and_grad(f)(x)
    return x + step(f, x, lr, damping, krylov_dim), (value, jnp.linalg.norm(g))

  x, (losses, gns) = jax.lax.scan(body, flat, None, length=steps)
  value, g = jax.value_and_grad(f)(x)
  return (_unflatten_like(x, params), jnp.append(losses, value), jnp.append(gns, jnp.linalg.norm(g)))


def escape_saddle(
    obj: Objective,
    params: PyTree,
    method: str,
    steps: int,
    *,
    lr: float | None = None,
    damping: float = 0.0,
    krylov_dim: int | None = None,
    threshold: float = 1e-3,
) -> EscapeResult:
  """Runs ``steps`` optimiser steps from ``params`` and records the loss.

  Used to compare how fast methods leave a saddle (Dauphin et al. 2014,
  Fig. 3): gradient descent slows down near a saddle because the gradient
  vanishes, Newton's method is attracted to it, saddle-free Newton is
  repelled along negative curvature at a rate set by ``|lambda|``.

  Args:
    obj: the objective.
    params: starting parameters (e.g. a saddle plus a small perturbation).
    method: one of :data:`STEP_METHODS`: ``"gd"`` (``-lr g``), ``"newton"``
      (``-lr (H + damping I)^-1 g``), ``"sfn"`` (``-lr (|H| + damping I)^-1 g``)
      or ``"sfn_krylov"`` (the same in a ``krylov_dim``-dimensional Krylov
      subspace).
    steps: number of steps (static).
    lr: step size; defaults to 0.1 for ``"gd"`` and 1.0 for the others.
    damping: Newton / SFN damping.
    krylov_dim: subspace dimension for ``"sfn_krylov"``.
    threshold: the loss drop from the start that counts as an escape.

  Returns:
    An :class:`EscapeResult`.

  Example:
    >>> import jax.numpy as jnp, jaxscape as js
    >>> apply = lambda p, x: p[0] ** 2 - p[1] ** 2 + 0 * x[:, 0]
    >>> obj = js.Objective.from_apply(apply, data=(jnp.zeros((1, 1)), jnp.zeros(1)),
    ...                               loss=lambda out, t: out)
    >>> p0 = jnp.array([0.1, 1e-3])
    >>> [escape_saddle(obj, p0, m, 40, threshold=0.1).escape_step for m in ("gd", "sfn", "newton")]
    [32, 9, -1]
  """
  if method not in STEP_METHODS:
    raise ValueError(f"unknown method {method!r}: expected one of {STEP_METHODS}")
  if not isinstance(steps, int) or steps < 1:
    raise ValueError(f"steps must be a positive int; got {steps!r}")
  if method == "sfn_krylov":
    n = sum(int(jnp.size(leaf)) for leaf in jax.tree.leaves(params))
    if not isinstance(krylov_dim, int) or not 1 <= krylov_dim <= n:
      raise ValueError(f"method 'sfn_krylov' needs krylov_dim, an int in [1, {n}]; got {krylov_dim!r}")
  else:
    krylov_dim = None
  if lr is None:
    lr = 0.1 if method == "gd" else 1.0
  final, losses, gns = _run(obj, params, lr, damping, method, steps, krylov_dim)
  dropped = jnp.asarray(losses) <= losses[0] - threshold
  escape_step = int(jnp.argmax(dropped)) if bool(jnp.any(dropped)) else -1
  return EscapeResult(method=method, losses=losses, grad_norms=gns, params=final, escape_step=escape_step,
                      threshold=float(threshold), lr=float(lr), damping=float(damping))
