"""Critical points of an objective: search and index.

Dauphin et al. (2014) argue that in high dimension the critical points of a
training loss whose error is well above the minimum are saddles, and that the
fraction of negative Hessian eigenvalues (the *index*) grows with the error
(see also Pennington & Bahri 2017). Checking that needs critical points of
every index, located here, their index (:func:`index`, from the dense Hessian
of :func:`jaxscape.hessian.dense_eigh`), and optimiser steps that leave saddles
(saddle-free Newton, in :mod:`jaxscape.newton`).

Minimising the loss only finds minima; minimising ``1/2 ||grad f||^2`` finds
saddles too. The Jacobian of ``grad f`` is the Hessian ``H``, so a
Gauss-Newton / Levenberg-Marquardt step on the gradient system solves
``(H^2 + mu I) delta = -H g`` (``method="newton_gradnorm"``), and Newton-MR
(Roosta et al. 2018) takes the minimum-residual step ``delta = -H^+ g`` with a
backtracking line search on ``||g||^2`` (``method="newton_mr"``). Both use the
dense Hessian and reach ``||grad f|| ~ 1e-12`` in float64 within a few steps of
a non-degenerate point. Frye et al. (2021) warn that such methods also stop in
*gradient-flat* regions, where ``||g||^2`` is locally minimal but not zero
(``g`` in the near-kernel of ``H``); those are reported with
``status="gradient_flat"`` and ``converged=False``, never as critical points.
On neural-network losses most monotone searches end there; ``method="hybrid"``
then switches to Newton's iteration with a capped step and no monotone test,
which leaves the gradient-flat basin and converges quadratically once it enters
the basin of a critical point. :func:`find_critical_points` runs many starts in
one compiled call (``jax.lax.map``, optionally vmapped in batches).

Parameters are flattened by :func:`jaxscape.hessian.flat_objective`
(``ravel_pytree`` order); dense matrices and eigenvectors are in that order.
When 64-bit mode is on (``jax.enable_x64``), parameters are cast to float64
before any dense computation, so the Hessian and the search run in float64.

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
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from . import stats
from . import tree as tree_lib
from .hessian import dense_eigh, flat_objective
from .objective import Objective
from .tree import PyTree

__all__ = [
    "METHODS",
    "STATUSES",
    "CriticalPoint",
    "CriticalPoints",
    "PointDescription",
    "join",
    "PopulationSummary",
    "summarize",
    "describe_point",
    "distinct_minima",
    "MINIMA_FIELDS",
    "index",
    "default_eps",
    "flatness",
    "find_critical_point",
    "find_critical_points",
    "solve_gradient_system",
]

METHODS = ("newton_gradnorm", "newton_mr", "hybrid")
"""Critical-point search methods of :func:`find_critical_point`."""

STATUSES = ("running", "converged", "gradient_flat", "max_steps")
"""How a search ended; ``status`` codes of :func:`solve_gradient_system` index this tuple."""


def default_eps(eigenvalues: jax.typing.ArrayLike) -> jax.Array:
  """The numerical-rank threshold ``n * machine_eps * max|lambda|`` of ``[..., n]`` eigenvalues.

  As ``numpy.linalg.matrix_rank``: eigenvalues within it of zero are rounding
  noise; the default ``eps`` of :func:`index`.
  """
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
  threshold = default_eps(lam) if eps is None else jnp.asarray(eps, lam.dtype)
  threshold = jnp.broadcast_to(threshold, lam.shape[:-1])[..., None]  # one threshold per eigenvalue list
  return jnp.mean((lam < -threshold).astype(lam.dtype), axis=-1)


# --------------------------------------------------- critical-point search
def flatness(lam: jax.Array, vecs: jax.Array, g: jax.Array) -> jax.Array:
  """``||H g|| / (max|lambda| ||g||)`` from the eigendecomposition of ``H``.

  In ``[0, 1]``; near 0 where ``g`` lies in the near-kernel of ``H``, the
  signature of a gradient-flat point (Frye et al. 2021), at least
  ``min|lambda| / max|lambda|`` next to a non-degenerate critical point.

  Args:
    lam: ``[n]`` eigenvalues of ``H``.
    vecs: ``[n, n]`` its eigenvectors (columns).
    g: ``[n]`` the gradient.
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
    stall_flat = jax.lax.cond(switch, lambda: flatness(*jnp.linalg.eigh(h), g), lambda: s["stall_flatness"])
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
  lam, vecs = jnp.linalg.eigh(s["best_h"])
  converged = s["best_gn"] < tol
  # steps spent in the LM phase (all of them when the search never left it)
  lm_used = jnp.where(s["newton"] & (lm_steps > 0), s["lm_steps"], jnp.where(lm_steps > 0, s["step"], 0))
  return {"x": s["best_x"], "value": f(s["best_x"]), "grad_norm": s["best_gn"], "eigenvalues": lam,
          "eigenvectors": vecs, "steps": s["step"], "status": jnp.where(converged, 1, s["lm_status"]),
          "flatness": flatness(lam, vecs, s["best_g"]), "lm_steps": lm_used,
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
    return tuple(jnp.linalg.eigh(hess(x)))  # a plain pair, as the lax.cond branches that keep the old one

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
  flat = flatness(lam, vecs, g)
  return {"x": x, "value": f(x), "grad_norm": gn, "eigenvalues": lam, "eigenvectors": vecs, "steps": step,
          "status": status, "flatness": flat, "lm_steps": step if method == "newton_gradnorm" else jnp.zeros_like(step),
          "stall_grad_norm": jnp.where(status == 2, gn, nan), "stall_flatness": jnp.where(status == 2, flat, nan)}


@dataclasses.dataclass(frozen=True)
class CriticalPoint:
  """Result of :func:`find_critical_point` (and :func:`jaxscape.newton.minimize_saddle_free`).

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

  def arrays(self) -> dict[str, np.ndarray]:
    """The per-point numpy fields (all but ``params``, ``eps``), for saving; ``status`` as fixed-width ``U16``."""
    return {**{f: getattr(self, f) for f in ("loss", "grad_norm", "index", "steps", "lm_steps", "flatness",
                                             "stall_grad_norm", "stall_flatness", "converged", "eigenvalues")},
            "status": np.asarray(self.status).astype("U16")}


def join(found: CriticalPoints, extra: Sequence[CriticalPoint]) -> CriticalPoints:
  """``found`` followed by the single points ``extra`` (e.g. refined minima), as one :class:`CriticalPoints`.

  The extra points had no Levenberg-Marquardt phase: ``lm_steps`` 0 and NaN
  stall statistics.

  Example:
    >>> import jax, jax.numpy as jnp, jaxscape as js
    >>> apply = lambda p, x: p[0] ** 2 - p[1] ** 2 + 0 * x[:, 0]
    >>> obj = js.Objective.from_apply(apply, data=(jnp.zeros((1, 1)), jnp.zeros(1)),
    ...                               loss=lambda out, t: out)
    >>> with jax.enable_x64(True):
    ...   both = join(find_critical_points(obj, jnp.array([[0.3, -0.2]])), [find_critical_point(obj, jnp.ones(2))])
    >>> len(both), both.status.tolist(), both.lm_steps.tolist()
    (2, ['converged', 'converged'], [2, 0])
  """
  cat = lambda field, values: np.concatenate([getattr(found, field), values])
  n = len(extra)
  params = (jax.tree.map(lambda a, *b: jnp.concatenate([a, jnp.stack(b)]), found.params, *[p.params for p in extra])
            if n else found.params)
  return CriticalPoints(
      params=params, **{f: cat(f, [getattr(p, f) for p in extra]) for f in ("loss", "grad_norm", "index", "steps",
                                                                             "converged", "status", "flatness")},
      eigenvalues=np.concatenate([found.eigenvalues, np.stack([np.asarray(p.eigenvalues) for p in extra])])
      if n else found.eigenvalues, lm_steps=cat("lm_steps", np.zeros(n, int)),
      stall_grad_norm=cat("stall_grad_norm", np.full(n, np.nan)), stall_flatness=cat("stall_flatness", np.full(n, np.nan)),
      method="+".join(dict.fromkeys([found.method, *(p.method for p in extra)])), tol=found.tol,
      eps=cat("eps", [p.eps for p in extra]))


@dataclasses.dataclass(frozen=True)
class PopulationSummary:
  """Result of :func:`summarize`: loss against index over the converged points (Dauphin et al. 2014, Fig. 1).

  Attributes:
    distinct: indices of one converged point per (loss to 1e-9 relative, index), ascending in loss
      (:func:`jaxscape.stats.distinct`): a point reached from several starts counts once.
    spearman, pearson: rank and linear correlation of loss and index over the distinct points (NaN below 3).
    spearman_all: Spearman's rho over all converged points.
    loss_range: lowest and highest converged loss (NaN when none converged).
    cutoff: the top of the lowest ``low_fraction`` of that range.
    minima: losses of the converged index-0 points.
    low: ``[D]`` which distinct points lie at or below ``cutoff``.
    spearman_low: Spearman's rho over those (NaN below 3).
    min_abs_eigenvalue: ``[D]`` smallest ``|lambda|`` at each distinct point.
    low_fraction: the share of the loss range below ``cutoff``.

  :meth:`outcome_rows` and :meth:`distinct_rows` give the rows of a report's tables as raw numbers (a tuple
  for several numbers in one cell; NaN where there is nothing to count).
  """

  distinct: list[int]
  spearman: float
  pearson: float
  spearman_all: float
  loss_range: tuple[float, float]
  cutoff: float
  minima: np.ndarray
  low: np.ndarray
  spearman_low: float
  min_abs_eigenvalue: np.ndarray
  low_fraction: float = 0.1

  def outcome_rows(self, points: CriticalPoints, searched: np.ndarray) -> list[tuple[str, Any]]:
    """``(quantity, value)`` rows describing the search over ``points`` (the summarised population).

    ``searched`` marks the points found by a search (their LM statistics count); the others are starts refined
    otherwise (e.g. trained points refined into minima).
    """
    ok, idx, st, n = points.converged, points.index, points.steps, len(self.distinct)
    flat, i_d = searched & (points.status == "gradient_flat"), idx[self.distinct]
    med, mean = [lambda a, f=f: float(f(a)) if a.size else float("nan") for f in (np.median, np.mean)]
    count = lambda m: int(np.sum(m))
    lo, hi = self.loss_range
    l_high = points.loss[self.distinct][~self.low]
    return [
        ("starts: searched / refined", (count(searched), count(~searched))),
        ("converged (||grad f|| < tol): all / searched / in the LM phase / refined / of refined", (
            count(ok), count(ok & searched), count(ok & searched & (st <= points.lm_steps)), count(ok & ~searched),
            count(~searched))),
        ("excluded: gradient-flat / step budget exhausted", (count(points.status == "gradient_flat"),
                                                              count(points.status == "max_steps"))),
        ("at the LM stall: median ||grad f|| / median flatness ||Hg||/(max|lambda| ||g||) / flatness < 1e-3", (
            med(points.stall_grad_norm[flat]), med(points.stall_flatness[flat]),
            count(points.stall_flatness[flat] < 1e-3))),
        ("minima (index 0), all / distinct; saddles, all / distinct", (
            count(ok & (idx == 0)), count(i_d == 0), count(ok & (idx > 0)), count(i_d > 0))),
        ("distinct points", n),
        ("loss range", (lo, hi)),
        ("index range", (round(float(i_d.min()), 3), round(float(i_d.max()), 3)) if n else float("nan")),
        ("min |lambda| at distinct points: min / median", (
            float(self.min_abs_eigenvalue.min()), float(np.median(self.min_abs_eigenvalue))) if n else float("nan")),
        ("Spearman rho(loss, index): distinct / all", (self.spearman, self.spearman_all)),
        (f"Spearman rho over the distinct points in the lowest {100 * self.low_fraction:g}% of the loss range / their "
         "number; the others: number / lowest .. highest loss", (
             self.spearman_low, count(self.low), count(~self.low), float(l_high.min()) if l_high.size else float("nan"),
             hi)),
        ("Pearson r(loss, index): distinct", self.pearson),
        ("mean steps per searched start: converged / not", (mean(st[ok & searched]), mean(st[~ok & searched]))),
    ]

  def saddles(self, points: CriticalPoints, count: int, *, above: float = 0.0) -> list[int]:
    """Up to ``count`` distinct saddles (index > 0) at least ``above`` over the lowest distinct loss, spread evenly
    from the highest loss to the lowest (e.g. to start escapes where a drop of ``above`` is attainable)."""
    loss, floor = points.loss, above + (points.loss[self.distinct].min() if self.distinct else 0.0)
    s = sorted([i for i in self.distinct if points.index[i] > 0 and loss[i] >= floor], key=lambda i: -loss[i])
    return [s[j] for j in np.unique(np.linspace(0, len(s) - 1, count).round().astype(int))] if s else []

  def distinct_rows(self, points: CriticalPoints) -> list[tuple[float, float, int, float, float]]:
    """Per distinct point: ``(loss, index, negative eigenvalues, ||grad f||, min |lambda|)``."""
    n = points.eigenvalues.shape[1]
    return [(float(points.loss[i]), float(points.index[i]), int(round(points.index[i] * n)),
             float(points.grad_norm[i]), float(m)) for i, m in zip(self.distinct, self.min_abs_eigenvalue)]


def summarize(points: CriticalPoints, *, low_fraction: float = 0.1) -> PopulationSummary:
  """Loss-index statistics of the converged points of ``points`` (see :class:`PopulationSummary`).

  Example:
    >>> pts = CriticalPoints(params=None, loss=np.array([0.0, 0.0, 1.0, 2.0]), grad_norm=np.zeros(4),
    ...     index=np.array([0.0, 0.0, 0.5, 1.0]), eigenvalues=np.ones((4, 2)), steps=np.zeros(4, int),
    ...     converged=np.ones(4, bool), status=np.array(["converged"] * 4), flatness=np.zeros(4),
    ...     lm_steps=np.zeros(4, int), stall_grad_norm=np.zeros(4), stall_flatness=np.zeros(4),
    ...     method="hybrid", tol=1e-6, eps=np.zeros(4))
    >>> s = summarize(pts)
    >>> s.distinct, s.spearman, s.cutoff
    ([0, 2, 3], 1.0, 0.2)
  """
  ok, loss, idx = points.converged, points.loss, points.index
  dist = [int(np.flatnonzero(ok)[j]) for j in stats.distinct(loss[ok], idx[ok])]
  l_d, i_d = loss[dist], idx[dist]
  rho = lambda a, b: stats.spearman(a, b) if len(a) >= 3 else float("nan")
  lo, hi = (float(loss[ok].min()), float(loss[ok].max())) if ok.any() else (np.nan, np.nan)
  cutoff = lo + low_fraction * (hi - lo)
  low = l_d <= cutoff
  return PopulationSummary(
      distinct=dist, spearman=rho(l_d, i_d), pearson=stats.pearson(l_d, i_d) if len(dist) >= 3 else float("nan"),
      spearman_all=rho(loss[ok], idx[ok]), loss_range=(lo, hi), cutoff=cutoff, minima=loss[ok & (idx == 0)], low=low,
      spearman_low=rho(l_d[low], i_d[low]), min_abs_eigenvalue=np.array([np.min(np.abs(points.eigenvalues[i]))
                                                                         for i in dist]), low_fraction=low_fraction)


@dataclasses.dataclass(frozen=True)
class PointDescription:
  """Result of :func:`describe_point`: the second-order test at one point.

  Attributes:
    grad_norm: ``||grad f||``.
    eigenvalues: all Hessian eigenvalues, ascending (numpy).
    lambda_min, lambda_max: their extremes.
    num_negative: eigenvalues below ``-eps``.
    index: ``num_negative / n`` (:func:`index` with ``eps``).
    min_change: the smallest ``f(x + t v) - f(x)`` over ``t`` in ``+-radii``
      along a random unit direction ``v``: negative where the loss decreases
      even though the Hessian cannot tell (a higher-order saddle).
  """

  grad_norm: float
  eigenvalues: np.ndarray
  lambda_min: float
  lambda_max: float
  num_negative: int
  index: float
  min_change: float


def describe_point(key: jax.Array, obj: Objective, params: PyTree, *, eps: float = 1e-10,
                   radii: Sequence[float] = (0.03, 0.1, 0.3)) -> PointDescription:
  """Gradient norm, dense Hessian spectrum, index and a sampled loss change at ``params``.

  Decides whether a point is a minimum, a saddle or undecided by the second
  derivative (a vanishing Hessian): then the loss change along a random unit
  direction (key ``key``) still shows descent.

  Args:
    key: PRNG key for the random direction.
    obj: the objective (dense Hessian: a small model; use ``jax.enable_x64``).
    params: the point.
    eps: eigenvalues below ``-eps`` count as negative.
    radii: distances ``t`` probed on both sides.

  Returns:
    A :class:`PointDescription`.

  Example:
    >>> import jax, jax.numpy as jnp, jaxscape as js
    >>> apply = lambda p, x: p[0] ** 2 - p[1] ** 2 + 0 * x[:, 0]
    >>> obj = js.Objective.from_apply(apply, data=(jnp.zeros((1, 1)), jnp.zeros(1)),
    ...                               loss=lambda out, t: out)
    >>> with jax.enable_x64(True):
    ...   d = describe_point(jax.random.key(0), obj, jnp.zeros(2))
    >>> d.grad_norm, d.num_negative, d.index, d.lambda_min
    (0.0, 1, 0.5, -2.0)
  """
  lam = np.asarray(dense_eigh(obj, params)[0])
  v = tree_lib.normal_like(key, params)
  v, f0 = tree_lib.scale(1.0 / tree_lib.norm(v), v), float(obj.value(params))
  ts = [-t for t in reversed(radii)] + list(radii)
  change = [float(obj.value(tree_lib.add(params, tree_lib.scale(t, v)))) - f0 for t in ts]
  return PointDescription(grad_norm=float(tree_lib.norm(jax.grad(obj.value)(params))), eigenvalues=lam,
                          lambda_min=float(lam.min()), lambda_max=float(lam.max()), num_negative=int(np.sum(lam < -eps)),
                          index=float(index(lam, eps=eps)), min_change=float(np.min(change)))


MINIMA_FIELDS = ("rank", "loss", "grad_norm", "lambda_min", "lambda_max", "runs", "verified")
"""Names of the entries of each row of :func:`distinct_minima`."""


def distinct_minima(obj: Objective, params: PyTree, losses: np.ndarray, converged: np.ndarray, *, rtol: float,
                    grad_tol: float, psd_rtol: float) -> tuple[list[int], list[tuple]]:
  """The distinct ends of many converged descents, each verified as a minimum by ``jax.grad`` and the dense Hessian.

  Ends whose losses agree within ``rtol`` (relative to ``max(1, |loss|)``) are one minimum
  (:func:`jaxscape.stats.distinct`: the lowest end of each group is kept); only converged ends count, unless none converged: then every end is a candidate (and is still verified).
  An end is a verified minimum when ``||grad|| <= grad_tol`` and ``lambda_min >= -psd_rtol * lambda_max``.

  Args:
    obj: the objective (dense Hessian: a small model; use ``jax.enable_x64``).
    params: stacked ends (leading run axis).
    losses: ``[runs]`` their losses.
    converged: ``[runs]`` bools, whether each descent converged.
    rtol: relative loss tolerance of "the same minimum".
    grad_tol, psd_rtol: the verification's gradient bound and relative eigenvalue floor.

  Returns:
    ``(index, rows)``: the run index of each distinct end, in ascending order of loss, and per end
    the row ``(rank, loss, ||grad||, lambda_min, lambda_max, converged runs at that loss, verified)`` named by
    :data:`MINIMA_FIELDS`.

  Example:
    >>> import jax, jax.numpy as jnp, numpy as np, jaxscape as js
    >>> obj = js.Objective.from_apply(lambda p, x: x @ p, data=(jnp.eye(2), jnp.ones(2)), loss="mse")
    >>> with jax.enable_x64(True):
    ...   ends = jnp.array([[1.0, 1.0], [1.0, 1.0], [0.0, 0.0]])
    ...   index, rows = distinct_minima(obj, ends, np.array([0.0, 0.0, 1.0]), np.array([True, True, False]),
    ...                                 rtol=1e-9, grad_tol=1e-8, psd_rtol=1e-9)
    >>> index, rows[0][5], rows[0][6]
    ([0], 1, True)
  """
  losses, converged = np.asarray(losses), np.asarray(converged, bool)
  if losses.ndim != 1 or losses.shape != converged.shape or losses.shape[0] != tree_lib.num_runs(params):
    raise ValueError(f"losses and converged must be [runs] for the {tree_lib.num_runs(params)} stacked ends; got "
                     f"shapes {losses.shape} and {converged.shape}")
  conv = np.flatnonzero(converged)
  pool = conv if conv.size else np.arange(losses.size)
  index = [int(pool[i]) for i in stats.distinct(losses[pool], np.zeros(pool.size), rtol=rtol)]
  rows = []
  for rank, i in enumerate(index):
    p = tree_lib.select(params, i)
    g = float(tree_lib.norm(jax.grad(obj.value)(p)))
    lam = np.asarray(dense_eigh(obj, p)[0])
    ok = g <= grad_tol and lam[0] >= -psd_rtol * lam[-1]
    runs = int(np.sum(stats.copies(losses, np.zeros(losses.size), i, rtol=rtol) & converged))
    rows.append((rank, float(losses[i]), g, lam[0], lam[-1], runs, ok))
  return index, rows


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
  f, _, unravel = flat_objective(obj, template)
  flat = jax.vmap(lambda p: flat_objective(obj, p)[1])(starts)
  solve = lambda x: solve_gradient_system(f, x, method=method, max_steps=max_steps, tol=tol, max_damping=max_damping,
                                          lm_steps=lm_steps, window=window, step_cap=step_cap)
  out = jax.lax.map(solve, flat, batch_size=batch_size)
  out.pop("eigenvectors")
  out["params"] = jax.vmap(unravel)(out.pop("x"))
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
  eps_values = np.asarray(default_eps(lam)) if eps is None else np.full(lam.shape[0], float(eps))
  gn = np.asarray(out["grad_norm"])
  return CriticalPoints(
      params=out["params"], loss=np.asarray(out["value"]), grad_norm=gn,
      index=np.mean(lam < -eps_values[:, None], axis=-1), eigenvalues=lam, steps=np.asarray(out["steps"]),
      converged=gn < tol, status=np.array([STATUSES[int(s)] for s in np.asarray(out["status"])]),
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

