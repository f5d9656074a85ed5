"""Newton-type optimiser steps: gradient descent, damped Newton and saddle-free Newton.

Dauphin et al. (2014) show that Newton's method is attracted to saddles (it
rescales each eigen-direction of the Hessian ``H`` by ``1/lambda``, which
flips the step along negative curvature) and that gradient descent slows down
next to them, and propose saddle-free Newton (SFN): ``delta = -|H|^-1 g`` with
``|H| = V |Lambda| V^T``, Newton's rescaling by the curvature magnitude but
always downhill. Here:

* the steps (:func:`gradient_descent_step`, :func:`newton_step`,
  :func:`saddle_free_newton_step` on the dense Hessian, and
  :func:`saddle_free_newton_step_krylov` in the ``k``-dimensional Krylov
  subspace ``K_k(H, g)`` built by :func:`jaxscape.spectral.lanczos` on
  Hessian-vector products, ``jax.jvp`` of ``jax.grad``);
* :func:`escape_saddle`, which counts how many steps each method needs to
  leave a saddle (optionally with an Armijo line search), and
  :func:`compare_escapes`, which runs several methods from the same perturbed
  saddles;
* :func:`minimize_saddle_free`, which refines a trained point into an exact
  minimum (a :class:`jaxscape.critical.CriticalPoint` of index 0), and
  :func:`minimize_saddle_free_many`, the same from many points in one compiled call;
* :func:`gradient_descent`, full-batch gradient descent from many starts at once
  (one ``vmap`` of a ``lax.scan``).

Parameters are flattened by :func:`jaxscape.hessian.flat_objective`; under
``jax.enable_x64`` every step runs in float64.

References:
  Dauphin, Pascanu, Gulcehre, Cho, Ganguli, Bengio. Identifying and attacking
  the saddle point problem in high-dimensional non-convex optimization.
  NeurIPS 2014.

Example:
  >>> import jax.numpy as jnp, jaxscape as js
  >>> from jaxscape import newton
  >>> apply = lambda p, x: p[0] ** 2 - p[1] ** 2 + 0 * x[:, 0]   # saddle at the origin
  >>> obj = js.Objective.from_apply(apply, data=(jnp.zeros((1, 1)), jnp.zeros(1)), loss=lambda out, t: out)
  >>> newton.saddle_free_newton_step(obj, jnp.array([0.5, 0.25])).tolist()   # away from the saddle along y
  [-0.5, 0.25]
"""

from __future__ import annotations

import dataclasses
import functools
import time
from typing import Any, Sequence

import jax
import jax.numpy as jnp

import numpy as np

from . import spectral
from . import tree as tree_lib
from .critical import STATUSES, CriticalPoint, default_eps, flatness, index
from .hessian import flat_objective
from .objective import Objective
from .tree import PyTree

__all__ = [
    "STEP_METHODS",
    "EscapeResult",
    "EscapeComparison",
    "gradient_descent_step",
    "newton_step",
    "saddle_free_newton_step",
    "saddle_free_newton_step_krylov",
    "escape_saddle",
    "compare_escapes",
    "minimize_saddle_free",
    "gradient_descent",
    "minimize_saddle_free_many",
]

STEP_METHODS = ("gd", "newton", "sfn", "sfn_krylov")
"""Optimiser steps compared by :func:`escape_saddle`."""


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
  lam, vecs = jnp.linalg.eigh(jax.hessian(f)(x))
  return -lr * (vecs @ ((vecs.T @ g) / (jnp.abs(lam) + damping)))


def _sfn_krylov_flat(f, x, lr, damping, krylov_dim):
  grad = jax.grad(f)
  g = grad(x)
  gn = jnp.linalg.norm(g)
  hvp = lambda v: jax.jvp(grad, (x,), (v,))[1]
  # Lanczos started from g: its key only draws the restart vectors after a breakdown, which span a block of T
  # decoupled from e_1 and so add nothing to the step; a fixed key keeps the step a deterministic function of x
  lz = spectral.lanczos(jax.random.key(0), hvp, x, krylov_dim, v0=g)
  mu, u = jnp.linalg.eigh(lz.tridiagonal())
  denom = jnp.abs(mu) + damping
  coef = gn * u[0, :]  # U^T (Q g) with Q g = ||g|| e_1
  y = u @ jnp.where(denom > 0, coef / jnp.where(denom > 0, denom, 1), 0)
  return -lr * (lz.basis.T @ y)


_STEPS = {"gd": _gd_flat, "newton": _newton_flat, "sfn": _sfn_flat, "sfn_krylov": _sfn_krylov_flat}


@functools.partial(jax.jit, static_argnames=("method", "krylov_dim"))
def _step(obj, params, lr, damping, method, krylov_dim):
  f, flat, unravel = flat_objective(obj, params)
  return unravel(_STEPS[method](f, flat, lr, damping, krylov_dim))


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

  ``k = krylov_dim`` Lanczos steps (:func:`jaxscape.spectral.lanczos`, full reorthogonalisation) on
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
  f, flat, unravel = flat_objective(obj, params)
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
  return (unravel(x), jnp.append(losses, value), jnp.append(gns, jnp.linalg.norm(g)))


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


@dataclasses.dataclass(frozen=True)
class EscapeComparison:
  """Result of :func:`compare_escapes`: ``S`` saddles x ``M`` methods.

  Attributes:
    methods: the ``M`` step methods, in column order.
    starts: the ``S`` perturbed starting points.
    lambda_min: ``[S]`` smallest Hessian eigenvalue at each saddle.
    lambda_max: ``[S]`` largest ``|lambda|`` there (sets gd's ``lr`` and the damping).
    steps: ``[S, M]`` escape steps (``-1``: not within the budget).
    losses: ``[S, M, budget + 1]`` loss before each step and after the last.
    wall: ``[S, M]`` seconds per run (compilation included).
    budget: steps per run.
    threshold: the loss drop that counts as an escape.
  """

  methods: tuple[str, ...]
  starts: list
  lambda_min: np.ndarray
  lambda_max: np.ndarray
  steps: np.ndarray
  losses: np.ndarray
  wall: np.ndarray
  budget: int
  threshold: float

  def __len__(self) -> int:
    return len(self.starts)

  @property
  def min_change(self) -> np.ndarray:
    """``[S, M]`` lowest loss reached minus the starting loss."""
    return np.min(self.losses - self.losses[..., :1], axis=-1)

  @property
  def final_change(self) -> np.ndarray:
    """``[S, M]`` final loss minus the starting loss."""
    return self.losses[..., -1] - self.losses[..., 0]

  @property
  def columns(self) -> list[str]:
    """Headers of :meth:`rows`."""
    return ["lambda_min", "max|lambda|", *self.methods, *(f"{m}: min / final loss change" for m in self.methods),
            f"wall s ({' / '.join(self.methods)})"]

  def records(self) -> list[dict]:
    """Per saddle, for JSON: ``lambda_min``, ``lambda_max``, and ``steps`` and ``wall`` per method."""
    return [{"lambda_min": float(self.lambda_min[j]), "lambda_max": float(self.lambda_max[j]),
             "steps": dict(zip(self.methods, self.steps[j].tolist())),
             "wall": dict(zip(self.methods, self.wall[j].tolist()))} for j in range(len(self))]

  def rows(self) -> list[tuple]:
    """Per saddle: ``(lambda_min, max|lambda|, *steps, *(min, final) loss change, wall times to 0.1 s)``."""
    return [(float(self.lambda_min[j]), float(self.lambda_max[j]), *self.steps[j].tolist(),
             *zip(self.min_change[j].tolist(), self.final_change[j].tolist()),
             tuple(round(w, 1) for w in self.wall[j].tolist())) for j in range(len(self))]

  def faster(self, method: str, than: str) -> np.ndarray:
    """``[S]`` whether ``method`` escaped in fewer steps than ``than`` (a miss counts as ``budget + 1``: ties fail)."""
    s = np.where(self.steps < 0, self.budget + 1, self.steps)
    return s[:, self.methods.index(method)] < s[:, self.methods.index(than)]


def compare_escapes(
    key: jax.Array,
    obj: Objective,
    saddles: Sequence[PyTree],
    eigenvalues: Sequence[jax.typing.ArrayLike],
    steps: int,
    *,
    methods: Sequence[str] = STEP_METHODS,
    perturbation: float = 1e-3,
    threshold: float = 1e-3,
    damping_rel: float = 1e-3,
    krylov_dim: int | None = None,
    line_search: bool = True,
) -> EscapeComparison:
  """Runs every method in ``methods`` from the same perturbed saddles (Dauphin et al. 2014, Fig. 3).

  Saddle ``j`` is moved by ``perturbation`` along a random unit direction
  (key ``fold_in(key, j)``); from there :func:`escape_saddle` runs ``steps``
  steps of each method with the same line search: gradient descent with
  ``lr = 1/max|lambda|``, the Newton-type methods with ``lr = 1`` and damping
  ``damping_rel * max|lambda|`` (``lambda``: the saddle's Hessian eigenvalues).

  Args:
    key: PRNG key for the perturbations.
    obj: the objective.
    saddles: the saddle points (pytrees like the parameters).
    eigenvalues: each saddle's Hessian eigenvalues (e.g. from
      :func:`jaxscape.hessian.dense_eigh`).
    steps: steps per run (static).
    methods: step methods, from :data:`STEP_METHODS`.
    perturbation: distance of each start from its saddle.
    threshold: the loss drop that counts as an escape.
    damping_rel: Newton / SFN damping relative to ``max|lambda|``.
    krylov_dim: subspace dimension for ``"sfn_krylov"``.
    line_search: Armijo backtracking for every method (see :func:`escape_saddle`).

  Returns:
    An :class:`EscapeComparison`.

  Example:
    >>> import jax, jax.numpy as jnp, jaxscape as js
    >>> apply = lambda p, x: (p[0] ** 2 - 0.1 * p[1] ** 2) / 2 + 0 * x[:, 0]
    >>> obj = js.Objective.from_apply(apply, data=(jnp.zeros((1, 1)), jnp.zeros(1)),
    ...                               loss=lambda out, t: out)
    >>> with jax.enable_x64(True):
    ...   c = compare_escapes(jax.random.key(0), obj, [jnp.zeros(2)], [jnp.array([-0.1, 1.0])], 40,
    ...                       methods=("gd", "sfn"), perturbation=0.1, threshold=0.1)
    >>> bool(c.faster("sfn", than="gd")[0])
    True
  """
  lambda_min, lambda_max, starts, found, losses, wall = [], [], [], [], [], []
  for j, (saddle, lam) in enumerate(zip(saddles, eigenvalues)):
    lam = np.asarray(lam)
    lmax = float(np.max(np.abs(lam)))
    v = tree_lib.normal_like(jax.random.fold_in(key, j), saddle)
    start = tree_lib.add(saddle, tree_lib.scale(perturbation / tree_lib.norm(v), v))
    rows = []
    for m in methods:
      t0 = time.perf_counter()
      r = escape_saddle(obj, start, m, steps, lr=1.0 / lmax if m == "gd" else 1.0,
                        damping=0.0 if m == "gd" else damping_rel * lmax,
                        krylov_dim=krylov_dim if m == "sfn_krylov" else None, threshold=threshold,
                        line_search=line_search)
      rows.append((np.asarray(r.losses), r.escape_step, time.perf_counter() - t0))
    lambda_min.append(float(lam.min()))
    lambda_max.append(lmax)
    starts.append(start)
    losses.append([r[0] for r in rows])
    found.append([r[1] for r in rows])
    wall.append([r[2] for r in rows])
  shape = (len(starts), len(methods))
  return EscapeComparison(
      methods=tuple(methods), starts=starts, lambda_min=np.array(lambda_min), lambda_max=np.array(lambda_max),
      steps=np.array(found, int).reshape(shape), losses=np.array(losses).reshape(*shape, steps + 1),
      wall=np.array(wall, float).reshape(shape), budget=steps, threshold=float(threshold))


# ---------------------------------------------------- minimisation to a minimum
@jax.jit
def _sfn_minimize(obj, params, max_steps, tol, damping, step_cap):
  f, flat, unravel = flat_objective(obj, params)
  vg = jax.value_and_grad(f)
  dtype = flat.dtype
  slack = 4 * jnp.finfo(dtype).eps

  def body(s):
    x, value, g, _, step, _ = s
    lam, vecs = jnp.linalg.eigh(jax.hessian(f)(x))
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
  lam, vecs = jnp.linalg.eigh(jax.hessian(f)(x))
  status = jnp.where(gn < tol, 1, jnp.where(stuck, 2, 3))
  return {"params": unravel(x), "value": value, "grad_norm": gn, "eigenvalues": lam, "steps": step,
          "status": status, "flatness": flatness(lam, vecs, g)}


def _check_sfn_settings(max_steps: Any, tol: Any, damping: Any, step_cap: Any) -> None:
  if not isinstance(max_steps, int) or max_steps < 0:
    raise ValueError(f"max_steps must be a non-negative int; got {max_steps!r}")
  if not tol > 0:
    raise ValueError(f"tol must be positive; got {tol!r}")
  if not damping >= 0 or not step_cap > 0:
    raise ValueError(f"damping must be >= 0 and step_cap > 0; got damping={damping!r}, step_cap={step_cap!r}")


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
    eps: eigenvalue threshold for the index (default: see :func:`jaxscape.critical.index`).

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
  _check_sfn_settings(max_steps, tol, damping, step_cap)
  out = _sfn_minimize(obj, params, max_steps, tol, damping, step_cap)
  lam = out["eigenvalues"]
  eps_value = float(default_eps(lam)) if eps is None else float(eps)
  gn = float(out["grad_norm"])
  return CriticalPoint(
      params=out["params"], loss=float(out["value"]), grad_norm=gn, index=float(index(lam, eps_value)),
      eigenvalues=lam, steps=int(out["steps"]), converged=bool(gn < tol), status=STATUSES[int(out["status"])],
      method="sfn_minimize", tol=float(tol), eps=eps_value, flatness=float(out["flatness"]))


# ------------------------------------------------------------ many starts
def _check_stacked(starts: PyTree, what: str) -> int:
  try:
    return tree_lib.num_runs(starts)
  except ValueError as e:
    raise ValueError(f"{what} must be a pytree stacked on a leading axis of starts: {e}") from None


@functools.partial(jax.jit, static_argnames=("steps",))
def _descend(obj, starts, lr, steps):
  def one(params):
    f, flat, unravel = flat_objective(obj, params)
    step = lambda x, _: (x - lr * jax.grad(f)(x), None)
    return unravel(jax.lax.scan(step, flat, None, length=steps)[0])

  return jax.vmap(one)(starts)


def gradient_descent(obj: Objective, starts: PyTree, *, lr: float, steps: int) -> PyTree:
  """Full-batch gradient descent ``x <- x - lr * grad f(x)`` from many starts, in one compiled call.

  Every start runs ``steps`` plain steps on the full-data loss (no noise, no
  schedule): the deterministic dynamics whose end points show which basin a
  start belongs to. The starts are ``vmap``-ed and the steps scanned, so a
  hundred small models train together in one kernel.

  Args:
    obj: the objective.
    starts: parameters stacked on a leading axis of starts (``[R, ...]`` leaves).
    lr: step size (> 0).
    steps: number of steps (int >= 0).

  Returns:
    The end points, stacked like ``starts``.

  Raises:
    ValueError: a non-positive ``lr``, a bad ``steps`` or unstacked ``starts``.

  Example:
    >>> import jax.numpy as jnp, jaxscape as js
    >>> from jaxscape import newton
    >>> obj = js.Objective.from_apply(lambda p, x: x @ p, data=(jnp.eye(2), jnp.zeros(2)), loss="mse")
    >>> ends = newton.gradient_descent(obj, jnp.array([[1.0, 2.0], [4.0, -2.0]]), lr=0.5, steps=1)
    >>> ends.tolist()   # f = |p|^2 / 2: one step of 0.5 halves every start
    [[0.5, 1.0], [2.0, -1.0]]
  """
  _check_stacked(starts, "starts")
  if not lr > 0:
    raise ValueError(f"lr must be positive; got {lr!r}")
  if not isinstance(steps, int) or steps < 0:
    raise ValueError(f"steps must be a non-negative int; got {steps!r}")
  return _descend(obj, starts, lr, steps)


def minimize_saddle_free_many(obj: Objective, starts: PyTree, *, max_steps: int = 100, tol: float = 1e-6,
                              damping: float = 0.0, step_cap: float = 1.0) -> dict[str, np.ndarray | PyTree]:
  """:func:`minimize_saddle_free` from many starts in one compiled call (``vmap``).

  Args:
    obj: the objective (dense Hessian: a small model).
    starts: parameters stacked on a leading axis of starts.
    max_steps, tol, damping, step_cap: as for :func:`minimize_saddle_free`.

  Returns:
    A dict of arrays with a leading axis of starts: ``params`` (a stacked
    pytree), ``loss``, ``grad_norm``, ``eigenvalues`` (the dense Hessian's at
    the end, ascending), ``steps``, ``converged`` (``grad_norm < tol``) and
    ``status`` (names from :data:`jaxscape.critical.STATUSES`).

  Example:
    >>> import jax, jax.numpy as jnp, jaxscape as js
    >>> from jaxscape import newton
    >>> apply = lambda p, x: p[0] ** 4 / 4 - p[0] ** 2 / 2 + p[1] ** 2 / 2 + 0 * x[:, 0]
    >>> obj = js.Objective.from_apply(apply, data=(jnp.zeros((1, 1)), jnp.zeros(1)),
    ...                               loss=lambda out, t: out)
    >>> with jax.enable_x64(True):   # one start on each side of the saddle at the origin
    ...   out = newton.minimize_saddle_free_many(obj, jnp.array([[1e-3, 0.5], [-0.2, 0.1]]), tol=1e-12)
    >>> out["params"][:, 0].round(6).tolist(), out["converged"].tolist()
    ([1.0, -1.0], [True, True])
  """
  _check_stacked(starts, "starts")
  _check_sfn_settings(max_steps, tol, damping, step_cap)
  out = jax.vmap(lambda p: _sfn_minimize(obj, p, max_steps, tol, damping, step_cap))(starts)
  gn = np.asarray(out["grad_norm"])
  return {"params": out["params"], "loss": np.asarray(out["value"]), "grad_norm": gn,
          "eigenvalues": np.asarray(out["eigenvalues"]), "steps": np.asarray(out["steps"]), "converged": gn < tol,
          "status": np.array([STATUSES[int(k)] for k in np.asarray(out["status"])])}
