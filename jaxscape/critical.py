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
  and ``converged=False``, never as critical points. On neural-network losses
  most monotone searches end there; ``method="hybrid"`` then switches to
  Newton's iteration with a capped step and no monotone test, which leaves the
  gradient-flat basin and converges quadratically once it enters the basin of
  a critical point. :func:`find_critical_points` runs many starts in one
  compiled call (``jax.lax.map``, optionally vmapped in batches).
* **Dense curvature for small models** (a few hundred parameters):
  :func:`dense_hessian` and :func:`index`.
* **Saddle-free Newton** (SFN; Dauphin et al. 2014): ``delta = -|H|^-1 g`` with
  ``|H| = V |Lambda| V^T``, dense or restricted to the ``k``-dimensional
  Krylov subspace ``K_k(H, g)`` built by Lanczos on Hessian-vector products
  (``jax.jvp`` of ``jax.grad``), next to damped Newton and gradient descent,
  :func:`escape_saddle` to count how many steps each needs to leave a
  saddle (optionally with an Armijo line search), and
  :func:`minimize_saddle_free` to refine a trained point into an exact minimum.

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
    "CriticalPoints",
    "EscapeResult",
    "dense_hessian",
    "hessian_eigh",
    "index",
    "find_critical_point",
    "find_critical_points",
    "minimize_saddle_free",
    "solve_gradient_system",
    "gradient_descent_step",
    "newton_step",
    "saddle_free_newton_step",
    "saddle_free_newton_step_krylov",
    "escape_saddle",
]

METHODS = ("newton_gradnorm", "newton_mr", "hybrid")
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
def _flatness(lam: jax.Array, vecs: jax.Array, g: jax.Array) -> jax.Array:
  """``||H g|| / (max|lambda| ||g||)`` from the eigendecomposition of ``H``.

  In ``[0, 1]``; near 0 where ``g`` lies in the near-kernel of ``H``, the
  signature of a gradient-flat point (Frye et al. 2021), at least
  ``min|lambda| / max|lambda|`` next to a non-degenerate critical point.
  """
  tiny = jnp.finfo(lam.dtype).tiny
  return jnp.linalg.norm(lam * (vecs.T @ g)) / (jnp.max(jnp.abs(lam)) * jnp.linalg.norm(g) + tiny)


def _solve_hybrid(f, x0, *, max_steps, lm_steps, tol, window, step_cap, max_damping):
  """Levenberg-Marquardt on ``1/2 ||g||^2``, then capped Newton if it stalls (see ``solve_gradient_system``)."""
  grad = jax.grad(f)
  hess = lambda x: (lambda h: 0.5 * (h + h.T))(jax.hessian(f)(x))
  dtype = x0.dtype
  tiny = jnp.finfo(dtype).tiny
  eye = jnp.eye(x0.shape[0], dtype=dtype)
  tol = jnp.asarray(tol, dtype)

  def lm_step(g, h, gn, mu):
    # (H^2 + mu s I) delta = -H g by Cholesky; a failed factorisation gives NaN, i.e. a rejected step
    hh = h @ h
    chol = jax.scipy.linalg.cho_factor(hh + mu * (jnp.max(jnp.diag(hh)) + tiny) * eye)
    delta = -jax.scipy.linalg.cho_solve(chol, h @ g)
    r = g + h @ delta
    return delta, 0.5 * (g @ g - r @ r)  # decrease of 1/2 ||g||^2 predicted by the linear model

  def newton_step(g, h, gn, mu):
    del mu
    delta = -jnp.linalg.solve(h, g)
    length = jnp.linalg.norm(delta)
    delta = jnp.where(jnp.isfinite(length), delta * jnp.minimum(1.0, step_cap / length), -step_cap * g / gn)
    return delta, jnp.zeros((), dtype)

  def body(s):
    newton = s["newton"]
    delta, predicted = jax.lax.cond(newton, newton_step, lm_step, s["g"], s["h"], s["gn"], s["mu"])
    x_new = s["x"] + delta
    g_new = grad(x_new)
    rho = 0.5 * (s["g"] @ s["g"] - g_new @ g_new) / jnp.maximum(predicted, tiny)
    accept = jnp.all(jnp.isfinite(g_new)) & jnp.all(jnp.isfinite(x_new)) & (newton | (rho > 1e-4))
    h = jax.lax.cond(accept, lambda: hess(x_new), lambda: s["h"])
    x, g = jnp.where(accept, x_new, s["x"]), jnp.where(accept, g_new, s["g"])
    gn = jnp.linalg.norm(g)
    # Nielsen's damping update (Madsen, Nielsen & Tingleff 2004, Sec. 3.2)
    shrink = jnp.maximum(1 / 3, 1 - (2 * jnp.clip(rho, 0, 1) - 1) ** 3)
    mu = jnp.where(accept, jnp.maximum(s["mu"] * shrink, 1e-15), s["mu"] * s["nu"])
    nu = jnp.where(accept, 2.0, s["nu"] * 2)
    halved = gn < 0.5 * s["ref"]
    ref, since = jnp.where(halved, gn, s["ref"]), jnp.where(halved, 0, s["since"] + 1)
    step = s["step"] + 1
    in_lm = (~newton) & (gn >= tol)
    stalled = in_lm & ((mu > max_damping) | (since >= window))
    switch = stalled | (in_lm & (step >= lm_steps))
    stall_flat = jax.lax.cond(switch, lambda: _flatness(*_sym_eigh(h), g), lambda: s["stall_flatness"])
    better = gn < s["best_gn"]
    return {"x": x, "g": g, "h": h, "gn": gn, "mu": mu, "nu": nu, "ref": ref, "since": since, "step": step,
            "newton": newton | switch,
            "lm_status": jnp.where(switch, jnp.where(stalled, 2, 3), s["lm_status"]),
            "lm_steps": jnp.where(switch, step, s["lm_steps"]),
            "stall_grad_norm": jnp.where(switch, gn, s["stall_grad_norm"]), "stall_flatness": stall_flat,
            "best_x": jnp.where(better, x, s["best_x"]), "best_g": jnp.where(better, g, s["best_g"]),
            "best_h": jnp.where(better, h, s["best_h"]), "best_gn": jnp.minimum(gn, s["best_gn"])}

  g0, h0 = grad(x0), hess(x0)
  gn0 = jnp.linalg.norm(g0)
  nan = jnp.asarray(jnp.nan, dtype)
  state = {"x": x0, "g": g0, "h": h0, "gn": gn0, "mu": jnp.asarray(1e-3, dtype), "nu": jnp.asarray(2.0, dtype),
           "ref": gn0, "since": jnp.asarray(0, jnp.int32), "step": jnp.asarray(0, jnp.int32),
           "newton": jnp.asarray(lm_steps <= 0), "lm_status": jnp.asarray(3, jnp.int32),
           "lm_steps": jnp.asarray(0, jnp.int32), "stall_grad_norm": nan, "stall_flatness": nan,
           "best_x": x0, "best_g": g0, "best_h": h0, "best_gn": gn0}
  s = jax.lax.while_loop(lambda s: (s["best_gn"] >= tol) & (s["step"] < max_steps), body, state)
  lam, vecs = _sym_eigh(s["best_h"])
  converged = s["best_gn"] < tol
  # steps spent in the LM phase (all of them when the search never left it)
  lm_used = jnp.where(s["newton"] & (lm_steps > 0), s["lm_steps"], jnp.where(lm_steps > 0, s["step"], 0))
  return {"x": s["best_x"], "value": f(s["best_x"]), "grad_norm": s["best_gn"], "eigenvalues": lam,
          "eigenvectors": vecs, "steps": s["step"], "status": jnp.where(converged, 1, s["lm_status"]),
          "flatness": _flatness(lam, vecs, s["best_g"]), "lm_steps": lm_used,
          "stall_grad_norm": s["stall_grad_norm"], "stall_flatness": s["stall_flatness"]}


def solve_gradient_system(
    f: Callable[[jax.Array], jax.Array],
    x0: jax.Array,
    *,
    method: str = "newton_gradnorm",
    max_steps: int = 100,
    tol: float = 1e-6,
    max_damping: float = 1e10,
    lm_steps: int | None = None,
    window: int = 20,
    step_cap: float = 1.0,
) -> dict[str, jax.Array]:
  """Drives ``grad f`` to zero from ``x0`` for a function of a flat vector.

  The jittable, vmappable core of :func:`find_critical_point`,
  :func:`find_critical_points` (and of
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
  * ``"hybrid"``: the same Levenberg-Marquardt iteration (solved by Cholesky
    on ``H^2 + mu s I``, ``s = max_i (H^2)_ii``, no eigendecomposition per
    step) for at most ``lm_steps`` steps; when it stalls (``mu >
    max_damping``, or ``||g||`` not halved within ``window`` steps: a local
    minimum of ``||g||^2`` that is not a zero, Frye et al. 2021's
    gradient-flat point) it switches to Newton's iteration
    ``delta = -H^-1 g`` with ``||delta||`` capped at ``step_cap`` and *no*
    monotonicity test on ``||g||``: Newton's step is the Gauss-Newton step for
    ``1/2 ||g||^2`` taken without the line search that traps the monotone
    methods in gradient-flat basins, and it converges quadratically once it
    enters the basin of a critical point. The best iterate (smallest
    ``||g||``) is returned. On a 226-parameter tanh MLP (starts on SGD
    trajectories, ``experiments/saddle_points.py``) monotone LM converged from
    0-15% of the starts within 100-400 steps, the hybrid from ~53% within 160.

  Monotone methods stop with status ``converged`` when ``||g|| < tol``,
  ``gradient_flat`` when no step lowers ``||g||`` any more (``mu >
  max_damping``, or 40 halvings of ``t``): ``||g||^2`` is locally minimal but
  not zero. Otherwise ``max_steps``. The hybrid reports ``converged`` when
  its best iterate has ``||g|| < tol``, else ``gradient_flat`` if its LM phase
  stalled and ``max_steps`` if the LM phase ran out of budget without
  stalling.

  Args:
    f: scalar function of a 1-D array.
    x0: starting point, ``[n]``.
    method: one of :data:`METHODS`.
    max_steps: maximum number of accepted-or-rejected steps (may be traced).
    tol: gradient-norm tolerance.
    max_damping: the relative damping ``mu`` at which the LM iteration gives up.
    lm_steps: ``"hybrid"`` only: LM step budget before switching to Newton
      (default ``max_steps // 4``; 0 runs capped Newton from the start).
    window: ``"hybrid"`` only: LM steps without halving ``||g||`` that count
      as a stall.
    step_cap: ``"hybrid"`` only: largest Newton step (Euclidean norm in ``x``).

  Far from a critical point the monotone methods can need hundreds of steps
  (each one dense Hessian): on a 226-parameter tanh MLP on 1797 digits,
  starts on a gradient-descent trajectory reached ``||g|| ~ 1e-5 .. 3e-4``
  after 150 LM steps. Budget ``max_steps`` accordingly.

  Returns:
    A dict of arrays: ``x``, ``value``, ``grad_norm``, ``eigenvalues``,
    ``eigenvectors``, ``steps``, ``status`` (an index into
    ``("running", "converged", "gradient_flat", "max_steps")``),
    ``flatness`` (``||H g|| / (max|lam| ||g||)`` at ``x``), and for the
    bookkeeping of the hybrid ``lm_steps`` (steps spent in the LM phase),
    ``stall_grad_norm`` and ``stall_flatness`` (``||g||`` and flatness where
    the LM phase ended; NaN if it never did).
  """
  if method not in METHODS:
    raise ValueError(f"unknown method {method!r}: expected one of {METHODS}")
  if isinstance(max_steps, (int, np.integer)) and max_steps < 0:
    raise ValueError(f"max_steps must be a non-negative int; got {max_steps!r}")
  x0 = jnp.asarray(x0)
  if method == "hybrid":
    if lm_steps is None:
      lm_steps = max_steps // 4
    return _solve_hybrid(f, x0, max_steps=max_steps, lm_steps=lm_steps, tol=tol, window=window,
                         step_cap=step_cap, max_damping=max_damping)
  grad = jax.grad(f)
  hess = jax.hessian(f)
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
  gn = jnp.linalg.norm(g)
  nan = jnp.asarray(jnp.nan, dtype)
  flat = _flatness(lam, vecs, g)
  return {"x": x, "value": f(x), "grad_norm": gn, "eigenvalues": lam, "eigenvectors": vecs, "steps": step,
          "status": status, "flatness": flat, "lm_steps": step if method == "newton_gradnorm" else jnp.zeros_like(step),
          "stall_grad_norm": jnp.where(status == 2, gn, nan), "stall_flatness": jnp.where(status == 2, flat, nan)}


@dataclasses.dataclass(frozen=True)
class CriticalPoint:
  """Result of :func:`find_critical_point` (and :func:`minimize_saddle_free`).

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
    flatness: ``||H g|| / (max|lambda| ||g||)`` at ``params`` (near 0 at a
      gradient-flat point; see :func:`solve_gradient_system`).
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
  flatness: float = float("nan")


@dataclasses.dataclass(frozen=True)
class CriticalPoints:
  """Result of :func:`find_critical_points`: one entry per start, as arrays.

  Attributes:
    params: the end points, a pytree like one start with a leading ``[S]`` axis.
    loss: ``[S]`` full-data loss at each end point.
    grad_norm: ``[S]`` ``||grad f||`` there.
    index: ``[S]`` fraction of Hessian eigenvalues below ``-eps``.
    eigenvalues: ``[S, n]`` Hessian eigenvalues, ascending.
    steps: ``[S]`` search steps taken.
    converged: ``[S]`` ``grad_norm < tol``: only these are critical points.
    status: ``[S]`` strings, as :attr:`CriticalPoint.status`.
    flatness: ``[S]`` ``||H g|| / (max|lambda| ||g||)`` at the end points.
    lm_steps: ``[S]`` steps spent in the Levenberg-Marquardt phase.
    stall_grad_norm: ``[S]`` ``||g||`` where the LM phase stalled or ran out
      (NaN where it converged first).
    stall_flatness: ``[S]`` flatness there (near 0: a gradient-flat point).
    method: the search method.
    tol: the gradient-norm tolerance.
    eps: ``[S]`` eigenvalue thresholds used for the index.
  """

  params: PyTree
  loss: np.ndarray
  grad_norm: np.ndarray
  index: np.ndarray
  eigenvalues: np.ndarray
  steps: np.ndarray
  converged: np.ndarray
  status: np.ndarray
  flatness: np.ndarray
  lm_steps: np.ndarray
  stall_grad_norm: np.ndarray
  stall_flatness: np.ndarray
  method: str
  tol: float
  eps: np.ndarray

  def __len__(self) -> int:
    return int(self.loss.shape[0])


def _check_search_args(method, max_steps, tol, lm_steps, window, step_cap):
  if method not in METHODS:
    raise ValueError(f"unknown method {method!r}: expected one of {METHODS}")
  if not isinstance(max_steps, int) or max_steps < 0:
    raise ValueError(f"max_steps must be a non-negative int; got {max_steps!r}")
  if not tol > 0:
    raise ValueError(f"tol must be positive; got {tol!r}")
  if lm_steps is not None and (not isinstance(lm_steps, int) or lm_steps < 0):
    raise ValueError(f"lm_steps must be None or a non-negative int; got {lm_steps!r}")
  if not isinstance(window, int) or window < 1:
    raise ValueError(f"window must be a positive int; got {window!r}")
  if not step_cap > 0:
    raise ValueError(f"step_cap must be positive; got {step_cap!r}")


@functools.partial(jax.jit, static_argnames=("method", "batch_size"))
def _find_many(obj, starts, tol, max_damping, step_cap, method, max_steps, lm_steps, window, batch_size):
  template = jax.tree.map(lambda a: a[0], starts)
  f = _flat_value(obj, template)
  flat = jax.vmap(_flatten)(starts)
  solve = lambda x: solve_gradient_system(f, x, method=method, max_steps=max_steps, tol=tol, max_damping=max_damping,
                                          lm_steps=lm_steps, window=window, step_cap=step_cap)
  out = jax.lax.map(solve, flat, batch_size=batch_size)
  out.pop("eigenvectors")
  out["params"] = jax.vmap(lambda v: _unflatten_like(v, template))(out.pop("x"))
  return out


def find_critical_points(
    obj: Objective,
    starts: PyTree,
    *,
    method: str = "hybrid",
    max_steps: int = 200,
    tol: float = 1e-6,
    eps: float | None = None,
    max_damping: float = 1e10,
    lm_steps: int | None = None,
    window: int = 20,
    step_cap: float = 1.0,
    batch_size: int | None = None,
) -> CriticalPoints:
  """Searches for a critical point from each of many starts, in one compiled call.

  Every start runs :func:`solve_gradient_system` (default: the ``"hybrid"``
  LM-then-Newton search on ``1/2 ||grad f||^2`` with dense float64 Hessians
  under ``jax.enable_x64``) with its own stopping rule, inside one
  ``jax.lax.map``: sequentially (``batch_size=None``, best on CPU, where a
  finished search costs nothing more) or ``batch_size`` searches at a time
  under ``vmap`` (for accelerators; finished searches are masked until the
  whole batch is done).

  Args:
    obj: the objective (a small model: the Hessian is dense).
    starts: parameter pytree whose leaves have a leading axis ``[S]`` (e.g.
      snapshots of training trajectories).
    method: one of :data:`METHODS`.
    max_steps: step budget per start.
    tol: a point is a critical point when ``||grad f|| < tol``.
    eps: eigenvalue threshold for the index (default: see :func:`index`).
    max_damping: LM gives up (stalls) when its relative damping exceeds this.
    lm_steps, window, step_cap: see :func:`solve_gradient_system` (``"hybrid"``).
    batch_size: searches vmapped together (``None``: one at a time).

  Returns:
    A :class:`CriticalPoints`; select ``converged`` before using ``index``.

  On CPU the per-step factorisations of a few-hundred-dimensional Hessian are
  fastest with single-threaded BLAS (e.g. ``with
  threadpoolctl.threadpool_limits(1, "blas"):``); on a loaded machine
  OpenBLAS's threads busy-wait and made them 20-300x slower.

  Example:
    >>> import jax, jax.numpy as jnp, jaxscape as js
    >>> apply = lambda p, x: p[0] ** 4 / 4 - p[0] ** 2 / 2 + p[1] ** 2 / 2 + 0 * x[:, 0]
    >>> obj = js.Objective.from_apply(apply, data=(jnp.zeros((1, 1)), jnp.zeros(1)),
    ...                               loss=lambda out, t: out)
    >>> with jax.enable_x64(True):
    ...   cps = find_critical_points(obj, jnp.array([[0.1, 0.2], [0.8, -0.1], [-1.3, 0.4]]))
    >>> cps.index.tolist(), [round(float(v), 6) + 0.0 for v in cps.loss], bool(cps.converged.all())
    ([0.5, 0.0, 0.0], [0.0, -0.25, -0.25], True)
  """
  _check_search_args(method, max_steps, tol, lm_steps, window, step_cap)
  sizes = {int(jnp.shape(leaf)[0]) if jnp.ndim(leaf) else -1 for leaf in jax.tree.leaves(starts)}
  if len(sizes) != 1 or -1 in sizes or 0 in sizes:
    raise ValueError(f"starts must be a pytree whose leaves share a non-empty leading axis; got leading sizes {sizes}")
  if batch_size is not None and (not isinstance(batch_size, int) or batch_size < 1):
    raise ValueError(f"batch_size must be None or a positive int; got {batch_size!r}")
  if lm_steps is None:
    lm_steps = max_steps // 4
  out = _find_many(obj, starts, tol, max_damping, step_cap, method, max_steps, lm_steps, window, batch_size)
  lam = np.asarray(out["eigenvalues"])
  eps_values = np.asarray(_default_eps(lam)) if eps is None else np.full(lam.shape[0], float(eps))
  gn = np.asarray(out["grad_norm"])
  return CriticalPoints(
      params=out["params"], loss=np.asarray(out["value"]), grad_norm=gn,
      index=np.mean(lam < -eps_values[:, None], axis=-1), eigenvalues=lam, steps=np.asarray(out["steps"]),
      converged=gn < tol, status=np.array([_STATUS[int(s)] for s in np.asarray(out["status"])]),
      flatness=np.asarray(out["flatness"]), lm_steps=np.asarray(out["lm_steps"]),
      stall_grad_norm=np.asarray(out["stall_grad_norm"]), stall_flatness=np.asarray(out["stall_flatness"]),
      method=method, tol=float(tol), eps=eps_values)


def find_critical_point(
    obj: Objective,
    params: PyTree,
    *,
    method: str = "newton_gradnorm",
    max_steps: int = 100,
    tol: float = 1e-6,
    eps: float | None = None,
    max_damping: float = 1e10,
    lm_steps: int | None = None,
    window: int = 20,
    step_cap: float = 1.0,
) -> CriticalPoint:
  """Finds a critical point of ``obj.value`` near ``params``, of any index.

  Minimises ``1/2 ||grad f||^2`` with a Newton-type method on the dense
  Hessian (see :func:`solve_gradient_system`), so it converges to saddles and
  maxima as readily as to minima (Dauphin et al. 2014 located the critical
  points of small MLPs this way). Use float64 (``jax.enable_x64``) to reach
  gradient norms of ``1e-6`` and below. For many starts use
  :func:`find_critical_points` (one compiled call).

  Args:
    obj: the objective (a small model: the Hessian is dense).
    params: starting parameters, e.g. a point of an SGD trajectory.
    method: ``"newton_gradnorm"`` (Levenberg-Marquardt), ``"newton_mr"`` or
      ``"hybrid"`` (LM, then capped Newton where LM stalls).
    max_steps: step budget.
    tol: a point is a critical point when ``||grad f|| < tol``.
    eps: eigenvalue threshold for the index (default: see :func:`index`).
    max_damping: give up (``gradient_flat``) when the relative LM damping
      exceeds this.
    lm_steps, window, step_cap: see :func:`solve_gradient_system` (``"hybrid"``).

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
  _check_search_args(method, max_steps, tol, lm_steps, window, step_cap)
  starts = jax.tree.map(lambda a: jnp.asarray(a)[None], params)
  cps = find_critical_points(obj, starts, method=method, max_steps=max_steps, tol=tol, eps=eps,
                             max_damping=max_damping, lm_steps=lm_steps, window=window, step_cap=step_cap)
  return CriticalPoint(
      params=jax.tree.map(lambda a: a[0], cps.params), loss=float(cps.loss[0]), grad_norm=float(cps.grad_norm[0]),
      index=float(cps.index[0]), eigenvalues=jnp.asarray(cps.eigenvalues[0]), steps=int(cps.steps[0]),
      converged=bool(cps.converged[0]), status=str(cps.status[0]), method=method, tol=float(tol),
      eps=float(cps.eps[0]), flatness=float(cps.flatness[0]))


@jax.jit
def _sfn_minimize(obj, params, max_steps, tol, damping, step_cap):
  flat = _flatten(params)
  f = _flat_value(obj, params)
  vg = jax.value_and_grad(f)
  dtype = flat.dtype
  slack = 4 * jnp.finfo(dtype).eps

  def body(s):
    x, value, g, _, step, _ = s
    lam, vecs = _sym_eigh(jax.hessian(f)(x))
    delta = -vecs @ ((vecs.T @ g) / (jnp.abs(lam) + damping))
    length = jnp.linalg.norm(delta)
    delta = jnp.where(jnp.isfinite(length), delta * jnp.minimum(1.0, step_cap / length),
                      -step_cap * g / jnp.linalg.norm(g))
    slope = g @ delta  # < 0: |H| + damping is positive definite
    armijo = lambda t, v: v <= value + 1e-4 * t * slope + slack * jnp.abs(value)
    t, v = jax.lax.while_loop(lambda c: ~armijo(*c) & (c[0] > 2.0**-30),
                              lambda c: (c[0] / 2, f(x + c[0] / 2 * delta)), (jnp.asarray(1.0, dtype), f(x + delta)))
    ok = armijo(t, v) & jnp.isfinite(v)
    x = jnp.where(ok, x + t * delta, x)
    value, g = vg(x)
    return x, value, g, jnp.linalg.norm(g), step + 1, ~ok

  value0, g0 = vg(flat)
  state = (flat, value0, g0, jnp.linalg.norm(g0), jnp.asarray(0, jnp.int32), jnp.asarray(False))
  x, value, g, gn, step, stuck = jax.lax.while_loop(
      lambda s: (s[3] >= tol) & (s[4] < max_steps) & ~s[5], body, state)
  lam, vecs = _sym_eigh(jax.hessian(f)(x))
  status = jnp.where(gn < tol, 1, jnp.where(stuck, 2, 3))
  return {"params": _unflatten_like(x, params), "value": value, "grad_norm": gn, "eigenvalues": lam, "steps": step,
          "status": status, "flatness": _flatness(lam, vecs, g)}


def minimize_saddle_free(
    obj: Objective,
    params: PyTree,
    *,
    max_steps: int = 100,
    tol: float = 1e-6,
    damping: float = 0.0,
    step_cap: float = 1.0,
    eps: float | None = None,
) -> CriticalPoint:
  """Minimises ``obj.value`` with saddle-free Newton and a line search, to a minimum.

  Each step is ``delta = -(|H| + damping I)^-1 g`` (dense eigendecomposition,
  Dauphin et al. 2014), capped at ``step_cap`` in norm, then halved until
  Armijo's condition ``f(x + t delta) <= f(x) + 1e-4 t g.delta`` holds (up to
  ``4 eps |f|`` of rounding). ``|H|`` is positive definite, so every step
  descends; negative curvature is followed away from saddles, and next to a
  minimum the step is Newton's (quadratic convergence). Used to refine the end
  of a training run into an exact minimum (index 0 when it converges).

  Args:
    obj: the objective (dense Hessian: a small model).
    params: starting parameters.
    max_steps: step budget.
    tol: stop when ``||grad f|| < tol``.
    damping: added to every ``|lambda|``.
    step_cap: largest step (Euclidean norm of the flat parameters).
    eps: eigenvalue threshold for the index (default: see :func:`index`).

  Returns:
    A :class:`CriticalPoint` with ``method="sfn_minimize"``; ``status`` is
    ``"gradient_flat"`` when no step length passed the line search.

  Example:
    >>> import jax, jax.numpy as jnp, jaxscape as js
    >>> apply = lambda p, x: p[0] ** 4 / 4 - p[0] ** 2 / 2 + p[1] ** 2 / 2 + 0 * x[:, 0]
    >>> obj = js.Objective.from_apply(apply, data=(jnp.zeros((1, 1)), jnp.zeros(1)),
    ...                               loss=lambda out, t: out)
    >>> with jax.enable_x64(True):   # starts next to the saddle at the origin
    ...   cp = minimize_saddle_free(obj, jnp.array([1e-3, 0.5]))
    >>> cp.converged, float(cp.index), round(cp.loss, 6)
    (True, 0.0, -0.25)
  """
  if not isinstance(max_steps, int) or max_steps < 0:
    raise ValueError(f"max_steps must be a non-negative int; got {max_steps!r}")
  if not tol > 0:
    raise ValueError(f"tol must be positive; got {tol!r}")
  if not damping >= 0 or not step_cap > 0:
    raise ValueError(f"damping must be >= 0 and step_cap > 0; got damping={damping!r}, step_cap={step_cap!r}")
  out = _sfn_minimize(obj, params, max_steps, tol, damping, step_cap)
  lam = out["eigenvalues"]
  eps_value = float(_default_eps(lam)) if eps is None else float(eps)
  gn = float(out["grad_norm"])
  return CriticalPoint(
      params=out["params"], loss=float(out["value"]), grad_norm=gn, index=float(index(lam, eps_value)),
      eigenvalues=lam, steps=int(out["steps"]), converged=bool(gn < tol), status=_STATUS[int(out["status"])],
      method="sfn_minimize", tol=float(tol), eps=eps_value, flatness=float(out["flatness"]))


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
    line_search: whether steps were backtracked (Armijo).
  """

  method: str
  losses: jax.Array
  grad_norms: jax.Array
  params: PyTree
  escape_step: int
  threshold: float
  lr: float
  damping: float
  line_search: bool = False


@functools.partial(jax.jit, static_argnames=("method", "steps", "krylov_dim", "line_search"))
def _run(obj, params, lr, damping, method, steps, krylov_dim, line_search):
  flat = _flatten(params)
  f = _flat_value(obj, params)
  step = _STEPS[method]
  dtype = flat.dtype
  slack = 4 * jnp.finfo(dtype).eps

  def body(x, _):
    value, g = jax.value_and_grad(f)(x)
    delta = step(f, x, lr, damping, krylov_dim)
    if line_search:
      # backtracking (Armijo) along descent directions; a non-descent direction takes the full step
      slope = g @ delta
      armijo = lambda t, v: (slope >= 0) | (v <= value + 1e-4 * t * slope + slack * jnp.abs(value))
      t, _ = jax.lax.while_loop(lambda c: ~armijo(*c) & (c[0] > 2.0**-30),
                                lambda c: (c[0] / 2, f(x + c[0] / 2 * delta)), (jnp.asarray(1.0, dtype), f(x + delta)))
      delta = t * delta
    return x + delta, (value, jnp.linalg.norm(g))

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
    line_search: bool = False,
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
    line_search: halve each step until Armijo's condition
      ``f(x + t d) <= f(x) + 1e-4 t g.d`` holds (up to 30 times) when ``d``
      is a descent direction; steps that do not descend (Newton's, next to a
      saddle) are taken in full. Keeps saddle-free Newton from overshooting
      once it has left the saddle (``|H|^-1`` is huge along near-flat
      directions); with ``lr <= 1/max|lambda|`` gradient descent is unaffected.

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
  final, losses, gns = _run(obj, params, lr, damping, method, steps, krylov_dim, bool(line_search))
  dropped = jnp.asarray(losses) <= losses[0] - threshold
  escape_step = int(jnp.argmax(dropped)) if bool(jnp.any(dropped)) else -1
  return EscapeResult(method=method, losses=losses, grad_norms=gns, params=final, escape_step=escape_step,
                      threshold=float(threshold), lr=float(lr), damping=float(damping),
                      line_search=bool(line_search))
