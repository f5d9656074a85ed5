"""Analytic test landscapes with known critical points.

Classic optimisation test functions (Molga & Smutnicki 2005; Jamil & Yang
2013; the Simon Fraser "Virtual Library of Simulation Experiments" by
Surjanovic & Bingham): small, cheap landscapes whose minima, maxima and saddles
are known, for checking the critical-point, surface and path code before it
meets a network.

Every function is a pure ``jnp`` function of a point ``x`` whose *last* axis
holds the coordinates, so it accepts one point ``[n]`` or a grid ``[..., n]``
and returns ``x.shape[:-1]``. Rastrigin, Ackley, Rosenbrock, Styblinski-Tang
and the sphere take any ``n >= 1`` (Rosenbrock ``n >= 2``); Himmelblau and the
six-hump camel are 2-D.

:data:`LANDSCAPES` holds each function's standard 2-D domain and its known
critical points (:class:`Point`), with coordinates given to 12-13 significant
digits: they agree with the values quoted in the literature (e.g. Himmelblau's
minimum (-2.805118, 3.131312) and local maximum (-0.270845, -0.923039) with
f = 181.617; the camel's global minima +/-(0.0898, -0.7126) with f = -1.0316;
Styblinski-Tang's -2.903534 per coordinate) to the digits quoted there, and
were refined by Newton's method in float64 so that ``||grad f|| < 1e-9`` at
each.

:func:`classify_critical_point` labels a point from its Hessian eigenvalues
(``jax.hessian``), and :func:`find_critical_points` locates critical points of
any index from random starts with the Newton-type solver of
:mod:`jaxscape.critical` (Levenberg-Marquardt on ``1/2 ||grad f||^2``).

References:
  Himmelblau. Applied Nonlinear Programming. McGraw-Hill, 1972.
  Dixon & Szego. The global optimisation problem: an introduction. 1978
  (six-hump camel).
  Styblinski & Tang. Experiments in nonconvex optimization: stochastic
  approximation with function smoothing and simulated annealing. Neural
  Networks 3(4), 1990.
  Rastrigin. Systems of extremal control. 1974; Ackley. A connectionist
  machine for genetic hillclimbing. 1987; Rosenbrock. An automatic method for
  finding the greatest or least value of a function. Comput. J. 3(3), 1960.
  Molga & Smutnicki. Test functions for optimization needs. 2005.

Example:
  >>> import jax, jax.numpy as jnp
  >>> from jaxscape import testfns
  >>> float(testfns.himmelblau(jnp.array([3.0, 2.0])))
  0.0
  >>> testfns.classify_critical_point(testfns.himmelblau, jnp.array([-0.270845, -0.923039]), tol=1e-3)
  'maximum'
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from .critical import solve_gradient_system
from .objective import Objective

__all__ = [
    "KINDS",
    "Point",
    "Landscape",
    "LANDSCAPES",
    "get",
    "grid",
    "match",
    "rastrigin_1d_critical_points",
    "sphere",
    "rastrigin",
    "ackley",
    "rosenbrock",
    "himmelblau",
    "styblinski_tang",
    "six_hump_camel",
    "classify_critical_point",
    "find_critical_points",
    "as_objective",
]

KINDS = ("minimum", "maximum", "saddle", "degenerate")
"""Labels returned by :func:`classify_critical_point`."""

Fn = Callable[[jax.Array], jax.Array]


# ---------------------------------------------------------------- functions
def sphere(x: jax.Array) -> jax.Array:
  """``sum_i x_i^2``: one minimum, f(0) = 0."""
  return jnp.sum(x**2, axis=-1)


def rastrigin(x: jax.Array, a: float = 10.0) -> jax.Array:
  """Rastrigin: ``a n + sum_i (x_i^2 - a cos(2 pi x_i))``, domain ``[-5.12, 5.12]^n``.

  Global minimum f(0) = 0; a regular lattice of local minima near the integer
  points, maxima near the half-integers, saddles in between.
  """
  return a * x.shape[-1] + jnp.sum(x**2 - a * jnp.cos(2 * jnp.pi * x), axis=-1)


def _safe_sqrt(s: jax.Array) -> jax.Array:
  # sqrt with zero derivatives (rather than inf * 0 = NaN) at s = 0
  positive = s > 0
  return jnp.where(positive, jnp.sqrt(jnp.where(positive, s, 1.0)), 0.0)


def ackley(x: jax.Array, a: float = 20.0, b: float = 0.2, c: float = 2 * np.pi) -> jax.Array:
  """Ackley: ``-a exp(-b sqrt(mean x^2)) - exp(mean cos(c x)) + a + e``, domain ``[-32.768, 32.768]^n``.

  Global minimum f(0) = 0. The origin is a cone point (``sqrt``), where the
  function is not differentiable; the implementation gives the cone term zero
  derivatives there (so ``jax.grad`` is 0 and ``jax.hessian`` is that of the
  cosine term, positive definite) instead of NaN.
  """
  r = _safe_sqrt(jnp.mean(x**2, axis=-1))
  return -a * jnp.exp(-b * r) - jnp.exp(jnp.mean(jnp.cos(c * x), axis=-1)) + a + jnp.e


def rosenbrock(x: jax.Array, a: float = 1.0, b: float = 100.0) -> jax.Array:
  """Rosenbrock: ``sum_i b (x_{i+1} - x_i^2)^2 + (a - x_i)^2``, domain ``[-2, 2] x [-1, 3]`` in 2-D.

  Global minimum f(1, ..., 1) = 0 (for a = 1) at the end of a curved, flat
  valley; in 2-D it is the only critical point.
  """
  if x.shape[-1] < 2:
    raise ValueError(f"rosenbrock needs at least 2 coordinates on the last axis; got shape {x.shape}")
  return jnp.sum(b * (x[..., 1:] - x[..., :-1] ** 2) ** 2 + (a - x[..., :-1]) ** 2, axis=-1)


def _check_2d(name: str, x: jax.Array) -> None:
  if x.shape[-1] != 2:
    raise ValueError(f"{name} is 2-D: expected a last axis of size 2; got shape {x.shape}")


def himmelblau(x: jax.Array) -> jax.Array:
  """Himmelblau: ``(x^2 + y - 11)^2 + (x + y^2 - 7)^2``, domain ``[-5, 5]^2``.

  Four global minima (f = 0), one local maximum, four saddles.
  """
  _check_2d("himmelblau", x)
  u, v = x[..., 0], x[..., 1]
  return (u**2 + v - 11) ** 2 + (u + v**2 - 7) ** 2


def styblinski_tang(x: jax.Array) -> jax.Array:
  """Styblinski-Tang: ``1/2 sum_i (x_i^4 - 16 x_i^2 + 5 x_i)``, domain ``[-5, 5]^n``.

  Separable: each coordinate sits at a root of ``2 t^3 - 16 t + 2.5``
  (-2.903534 global minimum, 2.746803 local minimum, 0.156731 maximum), so
  there are ``3^n`` critical points; the global minimum is
  ``-39.16617 n`` at ``(-2.903534, ...)``.
  """
  return 0.5 * jnp.sum(x**4 - 16 * x**2 + 5 * x, axis=-1)


def six_hump_camel(x: jax.Array) -> jax.Array:
  """Six-hump camel: ``(4 - 2.1 u^2 + u^4/3) u^2 + u v + (-4 + 4 v^2) v^2``, domain ``[-3, 3] x [-2, 2]``.

  Fifteen critical points: two global minima ``+/-(0.0898, -0.7126)`` with
  f = -1.0316, four local minima, seven saddles (one at the origin) and two
  local maxima.
  """
  _check_2d("six_hump_camel", x)
  u, v = x[..., 0], x[..., 1]
  return (4 - 2.1 * u**2 + u**4 / 3) * u**2 + u * v + (-4 + 4 * v**2) * v**2


# --------------------------------------------------------- known points
@dataclasses.dataclass(frozen=True)
class Point:
  """A critical point of a landscape.

  Attributes:
    x: coordinates.
    value: function value there.
    kind: one of :data:`KINDS`.
    grad_norm: ``||grad f||`` there (for found points; ``None`` for the
      tabulated known points).
  """

  x: tuple[float, ...]
  value: float
  kind: str
  grad_norm: float | None = None


@dataclasses.dataclass(frozen=True)
class Landscape:
  """A test function with its standard domain and its known critical points.

  Attributes:
    name: the function's name.
    fn: the function, ``fn(x[..., n]) -> [...]``.
    domain: ``((low, high), ...)`` per coordinate, the standard 2-D domain.
    points: known critical points in that domain (all of them where
      ``complete`` is True, else a representative set: always the global
      minima).
    complete: whether ``points`` lists every critical point in the domain.
    kinks: points at which ``fn`` is not differentiable (Ackley's cone at the
      origin): no gradient-norm search can converge to them.
  """

  name: str
  fn: Fn
  domain: tuple[tuple[float, float], ...]
  points: tuple[Point, ...]
  complete: bool
  kinks: tuple[tuple[float, ...], ...] = ()

  @property
  def smooth_points(self) -> tuple[Point, ...]:
    """The known points at which ``fn`` is differentiable (those a gradient-norm search can find)."""
    return tuple(p for p in self.points if not any(np.allclose(p.x, k) for k in self.kinks))

  @property
  def minima(self) -> tuple[Point, ...]:
    return tuple(p for p in self.points if p.kind == "minimum")

  @property
  def global_minimum(self) -> float:
    return min(p.value for p in self.points if p.kind == "minimum")


def _pts(kind: str, *rows: tuple[float, float, float]) -> tuple[Point, ...]:
  return tuple(Point((x, y), v, kind) for x, y, v in rows)


def _mirror(kind: str, *rows: tuple[float, float, float]) -> tuple[Point, ...]:
  """Points of an odd-symmetric landscape, ``f(-x) = f(x)``: each row and its mirror image."""
  return _pts(kind, *[r for x, y, v in rows for r in ((x, y, v), (-x, -y, v))])


# Styblinski-Tang: per-coordinate roots of 2 t^3 - 16 t + 2.5 and their 1-D values.
_ST_ROOTS = ((-2.903534027771177, "minimum"), (2.746802770990837, "minimum"), (0.1567312567803401, "maximum"))


def _st_value(t: float) -> float:
  return 0.5 * (t**4 - 16 * t**2 + 5 * t)


def _styblinski_tang_points() -> tuple[Point, ...]:
  out = []
  for (a, ka), (b, kb) in itertools.product(_ST_ROOTS, repeat=2):
    kind = ka if ka == kb else "saddle"
    out.append(Point((a, b), _st_value(a) + _st_value(b), kind))
  return tuple(sorted(out, key=lambda p: p.value))


# Rastrigin, 1-D roots of t + 10 pi sin(2 pi t) = 0 nearest the origin.
_RA_MIN1 = 0.9949586376523348
_RA_MAX1 = 0.5025460365546747

LANDSCAPES: dict[str, Landscape] = {
    "sphere": Landscape("sphere", sphere, ((-5.12, 5.12),) * 2, _pts("minimum", (0.0, 0.0, 0.0)), True),
    "rastrigin": Landscape(
        "rastrigin", rastrigin, ((-5.12, 5.12),) * 2,
        _pts("minimum", (0.0, 0.0, 0.0), (_RA_MIN1, 0.0, 0.9949590570932898),
             (_RA_MIN1, _RA_MIN1, 1.9899181141865832))
        + _pts("saddle", (_RA_MAX1, 0.0, 20.251272990990113), (_RA_MAX1, _RA_MIN1, 21.246232048083407))
        + _pts("maximum", (_RA_MAX1, _RA_MAX1, 40.50254598198023)),
        False),
    "ackley": Landscape("ackley", ackley, ((-32.768, 32.768),) * 2, _pts("minimum", (0.0, 0.0, 0.0)), False,
                        kinks=((0.0, 0.0),)),
    "rosenbrock": Landscape("rosenbrock", rosenbrock, ((-2.0, 2.0), (-1.0, 3.0)),
                            _pts("minimum", (1.0, 1.0, 0.0)), True),
    "himmelblau": Landscape(
        "himmelblau", himmelblau, ((-5.0, 5.0),) * 2,
        _pts("minimum", (3.0, 2.0, 0.0), (-2.805118086952745, 3.131312518250573, 0.0),
             (-3.779310253377747, -3.283185991286170, 0.0), (3.584428340330492, -1.848126526964404, 0.0))
        + _pts("saddle", (3.385154183607021, 0.07385187983774928, 13.311926270405587),
               (0.08667750455539634, 2.884254701174776, 67.71915008752613),
               (-3.073025750764390, -0.08135304428796751, 104.01516291755811),
               (-0.1279613467306800, -1.953714980244577, 178.33723920192745))
        + _pts("maximum", (-0.2708445906673476, -0.9230385564799815, 181.6165215225827)),
        True),
    "styblinski_tang": Landscape("styblinski_tang", styblinski_tang, ((-5.0, 5.0),) * 2,
                                 _styblinski_tang_points(), True),
    "six_hump_camel": Landscape(
        "six_hump_camel", six_hump_camel, ((-3.0, 3.0), (-2.0, 2.0)),
        _mirror("minimum", (0.08984201310031806, -0.7126564030207396, -1.0316284534898774),
                (1.703606714969981, -0.7960835686726251, -0.21546382438371725),
                (1.607104752920197, 0.5686514548841314, 2.1042503103112584))
        + _pts("saddle", (0.0, 0.0, 0.0))
        + _mirror("saddle", (1.109205336804787, -0.7682680925095399, 0.5437186009781853),
                  (1.638067984189779, 0.2286740690443941, 2.2293571975307143),
                  (1.296070267167109, 0.6050843880386585, 2.22947081802986))
        + _mirror("maximum", (1.230229876516652, 0.1623345844589949, 2.496295351023577)),
        True),
}
"""The landscapes by name, each with its standard domain and known critical points."""


def get(name: str) -> Landscape:
  """Looks up a landscape in :data:`LANDSCAPES` by name."""
  if name not in LANDSCAPES:
    raise ValueError(f"unknown landscape {name!r}: expected one of {sorted(LANDSCAPES)}")
  return LANDSCAPES[name]


def grid(land: Landscape, n: int, *, zoom: float = 1.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """A 2-D landscape's values on an ``n x n`` grid over its domain, shrunk by ``zoom`` around the centre.

  Returns ``(x [n], y [n], f [n, n])`` with ``f[j, i] = fn((x[i], y[j]))``, in
  the current default float precision.

  Example:
    >>> x, y, f = grid(get("sphere"), 3)
    >>> x.tolist(), float(f[1, 1])
    ([-5.12, 0.0, 5.12], 0.0)
  """
  (x0, x1), (y0, y1) = ((c - zoom * (b - a) / 2, c + zoom * (b - a) / 2) for a, b in land.domain
                        for c in [(a + b) / 2])
  xs, ys = np.linspace(x0, x1, n), np.linspace(y0, y1, n)
  pts = np.stack(np.meshgrid(xs, ys), axis=-1)  # [ny, nx, 2]
  return xs, ys, np.asarray(land.fn(jnp.asarray(pts)))


def match(found: tuple[Point, ...], listed: tuple[Point, ...],
          tol: float) -> tuple[list[Point], list[Point], list[tuple[Point, Point]]]:
  """Compares found critical points with listed ones.

  A listed point is *matched* when the nearest found point lies within
  ``tol`` (Euclidean) and has the same kind, *missing* when none lies within
  ``tol``, and of the *wrong kind* otherwise.

  Returns:
    ``(matched, missing, wrong_kind)``: listed points, listed points, and
    ``(listed, found)`` pairs.

  Example:
    >>> land = get("himmelblau")
    >>> matched, missing, wrong = match(land.points, land.points, 1e-6)
    >>> len(matched), missing, wrong
    (9, [], [])
  """
  fx = np.array([p.x for p in found], np.float64)
  matched, missing, wrong = [], [], []
  for p in listed:
    d = np.linalg.norm(fx - np.asarray(p.x), axis=1) if len(fx) else np.array([np.inf])
    j = int(np.argmin(d))
    if d[j] > tol:
      missing.append(p)
    elif found[j].kind != p.kind:
      wrong.append((p, found[j]))
    else:
      matched.append(p)
  return matched, missing, wrong


def rastrigin_1d_critical_points(interval: tuple[float, float], samples: int = 200000) -> tuple[int, int]:
  """Number of critical points of the 1-D Rastrigin term ``t^2 - 10 cos(2 pi t)`` in ``interval``, and of minima.

  Counted from sign changes of the derivative on ``samples`` points (keep it
  even on a symmetric interval, so that no sample falls exactly on the root at
  0). Rastrigin is separable: in 2-D the domain holds ``count^2`` critical
  points, ``minima^2`` of them minima.

  Example:
    >>> rastrigin_1d_critical_points((-5.12, 5.12))
    (21, 11)
  """
  t = np.linspace(*interval, samples)
  d = 2 * t + 20 * np.pi * np.sin(2 * np.pi * t)
  change = np.flatnonzero(np.sign(d[:-1]) != np.sign(d[1:]))
  return int(change.size), int(np.sum(d[change] < 0))  # - to + crossings are minima


# ----------------------------------------------------- classification
def _kind_from_eigenvalues(lam: np.ndarray, tol: float) -> str:
  pos, neg = bool(np.any(lam > tol)), bool(np.any(lam < -tol))
  if pos and neg:
    return "saddle"
  if pos and bool(np.all(lam > tol)):
    return "minimum"
  if neg and bool(np.all(lam < -tol)):
    return "maximum"
  return "degenerate"


def classify_critical_point(f: Fn, x: jax.typing.ArrayLike, tol: float = 1e-6, *,
                            grad_tol: float | None = None) -> str:
  """Labels a critical point by the signs of its Hessian eigenvalues.

  ``"minimum"`` when every eigenvalue of ``jax.hessian(f)(x)`` exceeds
  ``tol``, ``"maximum"`` when every one is below ``-tol``, ``"saddle"`` when
  there are eigenvalues beyond ``tol`` of both signs (whatever the others), and
  ``"degenerate"`` otherwise (some eigenvalues within ``tol`` of zero and the
  rest of one sign: the second-order test cannot decide).

  Args:
    f: scalar function of a 1-D array.
    x: the point, ``[n]``.
    tol: eigenvalues with ``|lambda| <= tol`` count as zero (absolute).
    grad_tol: when given, raise ``ValueError`` if ``||grad f(x)|| > grad_tol``
      (the point is not critical, so the label would mean nothing).

  Returns:
    One of :data:`KINDS`.

  Example:
    >>> import jax.numpy as jnp
    >>> classify_critical_point(lambda v: v[0] ** 2 - v[1] ** 2, jnp.zeros(2))
    'saddle'
  """
  x = jnp.asarray(x)
  if x.ndim != 1:
    raise ValueError(f"x must be one point, a 1-D array; got shape {x.shape}")
  g, h = _grad_hessian(f, x)
  if grad_tol is not None:
    gn = float(np.linalg.norm(g))
    if not gn <= grad_tol:
      raise ValueError(f"x is not a critical point: ||grad f(x)|| = {gn:.3e} exceeds grad_tol = {grad_tol:.3e}")
  lam = np.linalg.eigvalsh(0.5 * (np.asarray(h) + np.asarray(h).T))
  return _kind_from_eigenvalues(lam, tol)


@functools.partial(jax.jit, static_argnames=("f",))
def _grad_hessian(f: Fn, x: jax.Array) -> tuple[jax.Array, jax.Array]:
  return jax.grad(f)(x), jax.hessian(f)(x)


@functools.partial(jax.jit, static_argnames=("f",))
def _solve_many(f, starts, tol, max_steps):
  out = jax.vmap(lambda s: solve_gradient_system(f, s, max_steps=max_steps, tol=tol))(starts)
  return out["x"], out["value"], out["grad_norm"], out["eigenvalues"]


def find_critical_points(
    f: Fn,
    key: jax.Array,
    domain: tuple[tuple[float, float], ...],
    num_starts: int = 256,
    *,
    max_steps: int = 100,
    grad_tol: float | None = None,
    eig_tol: float = 1e-6,
    merge_tol: float = 1e-5,
) -> tuple[Point, ...]:
  """Finds critical points of ``f`` in a box from random starts, and classifies them.

  ``num_starts`` points drawn uniformly in ``domain`` (from ``key``) are each
  driven to ``grad f = 0`` by Levenberg-Marquardt on ``1/2 ||grad f||^2``
  (:func:`jaxscape.critical.solve_gradient_system`, all starts at once under
  ``vmap``), so minima, maxima and saddles are all reachable. Runs that end
  with ``||grad f|| >= grad_tol`` or outside the domain are dropped; the rest
  are merged when closer than ``merge_tol`` (relative to the domain's size)
  and labelled by :func:`classify_critical_point`'s rule.

  Args:
    f: scalar function of a 1-D array (e.g. one of this module's functions).
    key: ``jax.random`` key for the starts.
    domain: ``((low, high), ...)`` per coordinate.
    num_starts: number of random starts.
    max_steps: LM step budget per start.
    grad_tol: gradient-norm threshold; default ``1e-8`` in float64,
      ``1e-3`` in float32.
    eig_tol: eigenvalue threshold of the classification.
    merge_tol: points closer than ``merge_tol * diameter(domain)`` are one point.

  Returns:
    The distinct critical points, sorted by value (then coordinates).

  Example:
    >>> import jax
    >>> with jax.enable_x64(True):
    ...   pts = find_critical_points(himmelblau, jax.random.key(0), ((-5, 5), (-5, 5)), 64)
    >>> len(pts), [p.kind for p in pts].count("minimum")
    (9, 4)
  """
  lo, hi = _domain_bounds(domain)
  if not isinstance(num_starts, int) or num_starts < 1:
    raise ValueError(f"num_starts must be a positive int; got {num_starts!r}")
  dtype = jnp.float64 if jax.config.jax_enable_x64 else jnp.float32
  if grad_tol is None:
    grad_tol = 1e-8 if dtype == jnp.float64 else 1e-3
  starts = jax.random.uniform(key, (num_starts, lo.size), dtype, jnp.asarray(lo, dtype), jnp.asarray(hi, dtype))
  xs, values, gns, lams = (np.asarray(a) for a in _solve_many(f, starts, grad_tol, max_steps))
  scale = float(np.linalg.norm(hi - lo))
  slack = 1e-9 * scale
  keep = np.isfinite(gns) & (gns < grad_tol) & np.all((xs >= lo - slack) & (xs <= hi + slack), axis=1)
  found: list[Point] = []
  centres: list[np.ndarray] = []
  for i in np.flatnonzero(keep):
    if any(np.linalg.norm(xs[i] - c) <= merge_tol * scale for c in centres):
      continue
    centres.append(xs[i])
    found.append(Point(tuple(float(v) for v in xs[i]), float(values[i]), _kind_from_eigenvalues(lams[i], eig_tol),
                       float(gns[i])))
  return tuple(sorted(found, key=lambda p: (p.value, p.x)))


def _domain_bounds(domain) -> tuple[np.ndarray, np.ndarray]:
  arr = np.asarray(domain, dtype=np.float64)
  if arr.ndim != 2 or arr.shape[1] != 2 or arr.shape[0] < 1 or not np.all(arr[:, 0] < arr[:, 1]):
    raise ValueError(f"domain must be ((low, high), ...) with low < high per coordinate; got {domain!r}")
  return arr[:, 0], arr[:, 1]


def as_objective(f: Fn) -> Objective:
  """Wraps ``f`` as an :class:`~jaxscape.Objective` of a flat parameter vector.

  ``obj.value(x) == f(x)`` (one dummy example, loss = the function's value),
  so the critical-point, path and surface code of jaxscape runs unchanged on
  an analytic landscape.

  Example:
    >>> import jax.numpy as jnp
    >>> float(as_objective(himmelblau).value(jnp.array([3.0, 2.0])))
    0.0
  """
  apply = lambda p, x: f(p) + 0.0 * x[:, 0].astype(jnp.result_type(p))
  return Objective.from_apply(apply, data=(np.zeros((1, 1), np.float32), np.zeros(1, np.float32)),
                              loss=_identity_loss, name=getattr(f, "__name__", "analytic"))


def _identity_loss(outputs: jax.Array, targets: jax.Array) -> jax.Array:
  del targets
  return outputs
