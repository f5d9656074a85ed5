"""testfns: analytic landscapes, their known critical points, classification and search."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxscape import testfns

_KNOWN = [(name, i) for name, land in testfns.LANDSCAPES.items() for i in range(len(land.points))]


@pytest.mark.parametrize("name", sorted(testfns.LANDSCAPES))
def test_every_known_point_is_critical_with_the_stated_kind_and_value(x64, name):
  land = testfns.get(name)
  grad = jax.jit(jax.grad(land.fn))
  lo, hi = np.array(land.domain).T
  for p in land.points:
    x = jnp.asarray(p.x, jnp.float64)
    # tabulated to 13+ digits: float64 gradients below 1e-9 (f up to ~200)
    assert float(jnp.linalg.norm(grad(x))) < 1e-9, (name, p)
    assert testfns.classify_critical_point(land.fn, x, tol=1e-6, grad_tol=1e-9) == p.kind, (name, p)
    np.testing.assert_allclose(float(land.fn(x)), p.value, rtol=1e-12, atol=1e-12, err_msg=f"{name} {p}")
    assert np.all((lo <= x) & (x <= hi))
  assert any(p.kind == "minimum" for p in land.points)


# Values as quoted in the literature (Himmelblau 1972 via Jamil & Yang 2013;
# Dixon & Szego 1978; Styblinski & Tang 1990; Molga & Smutnicki 2005), with
# one unit of the last quoted digit as tolerance (sources truncate or round).
_LITERATURE = [
    # name, x, x tolerance, value, value tolerance, kind
    ("himmelblau", (3.0, 2.0), 0.0, 0.0, 0.0, "minimum"),
    ("himmelblau", (-2.805118, 3.131312), 1e-6, 0.0, 1e-20, "minimum"),
    ("himmelblau", (-3.779310, -3.283186), 1e-6, 0.0, 1e-20, "minimum"),
    ("himmelblau", (3.584428, -1.848126), 1e-6, 0.0, 1e-20, "minimum"),
    ("himmelblau", (-0.270845, -0.923039), 1e-6, 181.617, 1e-3, "maximum"),
    ("himmelblau", (0.086677, 2.884254), 1e-6, None, None, "saddle"),
    ("himmelblau", (3.385154, 0.073852), 1e-6, None, None, "saddle"),
    ("himmelblau", (-3.073026, -0.081353), 1e-6, None, None, "saddle"),
    ("himmelblau", (-0.127961, -1.953715), 1e-6, None, None, "saddle"),
    ("six_hump_camel", (0.0898, -0.7126), 1e-4, -1.0316, 1e-4, "minimum"),
    ("six_hump_camel", (-0.0898, 0.7126), 1e-4, -1.0316, 1e-4, "minimum"),
    ("styblinski_tang", (-2.903534, -2.903534), 1e-6, -39.16617 * 2, 1e-5, "minimum"),
    ("rosenbrock", (1.0, 1.0), 0.0, 0.0, 0.0, "minimum"),
    ("rastrigin", (0.0, 0.0), 0.0, 0.0, 0.0, "minimum"),
    ("ackley", (0.0, 0.0), 0.0, 0.0, 0.0, "minimum"),
    ("sphere", (0.0, 0.0), 0.0, 0.0, 0.0, "minimum"),
]


@pytest.mark.parametrize("name, x, xtol, value, vtol, kind", _LITERATURE)
def test_tabulated_points_agree_with_the_literature(name, x, xtol, value, vtol, kind):
  land = testfns.get(name)
  match = [p for p in land.points if np.all(np.abs(np.subtract(p.x, x)) <= xtol)]
  assert len(match) == 1, (name, x)
  assert match[0].kind == kind
  if value is not None:
    assert abs(match[0].value - value) <= vtol, (match[0].value, value)


@pytest.mark.parametrize("name, num_starts", [("himmelblau", 96), ("six_hump_camel", 256),
                                              ("styblinski_tang", 128), ("rosenbrock", 16)])
def test_find_critical_points_recovers_the_complete_known_set(x64, name, num_starts):
  land = testfns.get(name)
  assert land.complete
  found = testfns.find_critical_points(land.fn, jax.random.key(0), land.domain, num_starts)
  # every known point found once, with its kind, and nothing else
  assert len(found) == len(land.points), [p.x for p in found]
  for p in land.points:
    near = [q for q in found if np.linalg.norm(np.subtract(q.x, p.x)) < 1e-7]
    assert len(near) == 1, (name, p)
    assert near[0].kind == p.kind
    assert near[0].grad_norm < 1e-8
    np.testing.assert_allclose(near[0].value, p.value, rtol=1e-10, atol=1e-10)
  assert [q.value for q in found] == sorted(q.value for q in found)


def test_find_critical_points_on_rastrigin_cell(x64):
  # [-0.7, 0.7]^2 holds the global minimum, 4 saddles and 4 maxima (t = 0 or
  # +/-0.50255 per coordinate).
  found = testfns.find_critical_points(testfns.rastrigin, jax.random.key(1), ((-0.7, 0.7), (-0.7, 0.7)), 64)
  kinds = sorted(p.kind for p in found)
  assert kinds == ["maximum"] * 4 + ["minimum"] + ["saddle"] * 4
  best = found[0]
  assert best.kind == "minimum" and np.allclose(best.x, 0.0, atol=1e-9)


def test_find_critical_points_float32_finds_known_minima():
  land = testfns.get("himmelblau")
  found = testfns.find_critical_points(land.fn, jax.random.key(2), land.domain, 96)
  minima = [q for q in found if q.kind == "minimum"]
  for p in land.minima:
    # float32 with the default grad_tol = 1e-3: coordinates to ~1e-5
    assert any(np.linalg.norm(np.subtract(q.x, p.x)) < 1e-4 for q in minima), p


_NUMPY = {  # independent float64 references of the formulas
    "sphere": lambda u, v: u**2 + v**2,
    "rastrigin": lambda u, v: 20 + u**2 - 10 * np.cos(2 * np.pi * u) + v**2 - 10 * np.cos(2 * np.pi * v),
    "ackley": lambda u, v: (-20 * np.exp(-0.2 * np.sqrt((u**2 + v**2) / 2))
                            - np.exp((np.cos(2 * np.pi * u) + np.cos(2 * np.pi * v)) / 2) + 20 + np.e),
    "rosenbrock": lambda u, v: 100 * (v - u**2) ** 2 + (1 - u) ** 2,
    "himmelblau": lambda u, v: (u**2 + v - 11) ** 2 + (u + v**2 - 7) ** 2,
    "styblinski_tang": lambda u, v: 0.5 * (u**4 - 16 * u**2 + 5 * u + v**4 - 16 * v**2 + 5 * v),
    "six_hump_camel": lambda u, v: (4 - 2.1 * u**2 + u**4 / 3) * u**2 + u * v + (-4 + 4 * v**2) * v**2,
}


def test_functions_evaluate_grids_against_numpy_formulas():
  grid = np.random.default_rng(0).uniform(-2, 2, size=(3, 4, 2))
  assert sorted(_NUMPY) == sorted(testfns.LANDSCAPES)
  for name, land in testfns.LANDSCAPES.items():
    out = land.fn(jnp.asarray(grid, jnp.float32))
    assert out.shape == (3, 4)
    # float32 evaluation of O(100) values: 1e-5 relative, 1e-4 absolute
    np.testing.assert_allclose(out, _NUMPY[name](grid[..., 0], grid[..., 1]), rtol=1e-5, atol=1e-4, err_msg=name)
  # n-D versions
  x = jnp.full(5, -2.903534027771178)
  np.testing.assert_allclose(testfns.styblinski_tang(x), 5 * -39.16616570377141, rtol=1e-6)
  np.testing.assert_allclose(testfns.rosenbrock(jnp.ones(4)), 0.0)
  np.testing.assert_allclose(testfns.rastrigin(jnp.zeros(7)), 0.0, atol=1e-5)
  np.testing.assert_allclose(testfns.ackley(jnp.zeros(3)), 0.0, atol=1e-6)


def test_ackley_has_finite_derivatives_at_its_cone_point():
  g, h = jax.jit(lambda x: (jax.grad(testfns.ackley)(x), jax.hessian(testfns.ackley)(x)))(jnp.zeros(2))
  assert np.all(np.isfinite(g)) and np.all(np.isfinite(h))
  np.testing.assert_array_equal(g, [0.0, 0.0])
  # cosine term only: d^2/dx^2 of -exp(mean cos 2 pi x) at 0 = e * 0.5 * (2 pi)^2
  np.testing.assert_allclose(np.diag(h), [np.e * 0.5 * (2 * np.pi) ** 2] * 2, rtol=1e-5)


def test_classify_degenerate_and_non_critical(x64):
  assert testfns.classify_critical_point(lambda v: v[0] ** 4 + v[1] ** 2, jnp.zeros(2)) == "degenerate"
  assert testfns.classify_critical_point(lambda v: -v[0] ** 2 - v[1] ** 2, jnp.zeros(2)) == "maximum"
  # a saddle with an extra flat direction is still a saddle
  assert testfns.classify_critical_point(lambda v: v[0] ** 2 - v[1] ** 2 + v[2] ** 4, jnp.zeros(3)) == "saddle"
  with pytest.raises(ValueError, match="not a critical point"):
    testfns.classify_critical_point(testfns.himmelblau, jnp.array([0.0, 0.0]), grad_tol=1e-6)
  with pytest.raises(ValueError, match="1-D array"):
    testfns.classify_critical_point(testfns.sphere, jnp.zeros((2, 2)))


def test_errors_and_objective_adapter(x64):
  with pytest.raises(ValueError, match="last axis of size 2"):
    testfns.himmelblau(jnp.zeros(3))
  with pytest.raises(ValueError, match="unknown landscape 'beale'"):
    testfns.get("beale")
  with pytest.raises(ValueError, match="low < high"):
    testfns.find_critical_points(testfns.sphere, jax.random.key(0), ((1.0, -1.0), (0.0, 1.0)), 4)
  obj = testfns.as_objective(testfns.six_hump_camel)
  x = jnp.array([0.3, -0.4])
  value_and_grad = jax.jit(lambda o, x: jax.value_and_grad(o.value)(x))
  value, grad = value_and_grad(obj, x)
  np.testing.assert_allclose(value, _NUMPY["six_hump_camel"](0.3, -0.4), rtol=1e-15)
  # d/du = 8u - 8.4u^3 + 2u^5 + v, d/dv = u - 8v + 16v^3
  np.testing.assert_allclose(grad, [8 * 0.3 - 8.4 * 0.3**3 + 2 * 0.3**5 - 0.4, 0.3 + 3.2 + 16 * (-0.4) ** 3],
                             rtol=1e-14)


def test_grid_matches_the_function_and_zooms_around_the_centre(x64):
  land = testfns.get("rosenbrock")  # domain (-2, 2) x (-1, 3): not centred at 0
  x, y, f = testfns.grid(land, 5, zoom=0.5)
  np.testing.assert_allclose([x[0], x[-1], y[0], y[-1]], [-1.0, 1.0, 0.0, 2.0])
  assert f.shape == (5, 5)
  np.testing.assert_allclose(f[3, 1], _NUMPY["rosenbrock"](x[1], y[3]), rtol=1e-14)  # f[j, i] = f(x_i, y_j)


def test_match_sorts_listed_points_into_matched_missing_and_wrong_kind():
  listed = (testfns.Point((0.0, 0.0), 0.0, "minimum"), testfns.Point((1.0, 0.0), 1.0, "saddle"),
            testfns.Point((5.0, 5.0), 2.0, "maximum"))
  found = (testfns.Point((0.0, 1e-9), 0.0, "minimum"), testfns.Point((1.0, 0.0), 1.0, "maximum"))
  matched, missing, wrong = testfns.match(found, listed, 1e-6)
  assert matched == [listed[0]] and missing == [listed[2]] and wrong == [(listed[1], found[1])]
  assert testfns.match((), listed[:1], 1e-6) == ([], [listed[0]], [])


def test_rastrigin_counts_and_ackley_kink():
  count, minima = testfns.rastrigin_1d_critical_points((-5.12, 5.12))
  # minima near the integers -5..5, maxima between them: 11 + 10 roots of t + 10 pi sin(2 pi t)
  assert (count, minima) == (21, 11)
  assert testfns.get("ackley").smooth_points == ()  # its only listed point is the cone at 0
  assert testfns.get("himmelblau").smooth_points == testfns.get("himmelblau").points
