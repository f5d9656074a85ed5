"""Curvature-map benchmark: warm-started against cold Lanczos over a grid.

A 64-32-32-10 ReLU MLP (3,466 parameters) trained for a few seconds (full-batch
Adam) on all 1797 scikit-learn digits, and a filter-normalised 9x9 grid over
[-1, 1]^2 around it. All in float64, so that what is measured is Lanczos
convergence and not float32 rounding of the HVPs (a float32 HVP caps relative
accuracy near 1e-6 ||H|| / |lambda|; small |lambda_min| would hit that cap).
Printed, all measured in this run:

* the reference ``lambda_max`` / ``lambda_min`` at every grid point: a cold
  Lanczos run of ``--ref-steps`` steps (full reorthogonalisation), with true
  residuals ``||H y - theta y||``. A dense Hessian at each point would take
  3,466 HVPs and a 3,466^2 ``eigh`` per point. The reference is checked
  against a dense ``eigh`` at the centre and at a corner;
* the ``curvature="full"`` maps of :func:`jaxscape.loss_surface`, cold
  (``warm_start=None``) and warm-started (``warm_start=k`` for each ``k`` of
  ``--every``, coarse passes of each of ``--coarse-steps``; "warm k=4/30"),
  for every Lanczos step count in ``--steps``: median and max relative error
  of ``lambda_max`` and ``lambda_min`` over the grid;
* for each method, the HVPs per grid point needed to bring the median relative
  error of ``lambda_max``, of ``lambda_min``, and of both below 1e-2 and 1e-3:
  the first step count of ``--steps`` that does so. The warm count includes
  the coarse pass's HVPs spread over the grid points. Also the ratio cold /
  warm.

Two Hutchinson probes per point are also computed (``trace_probes=2``, the fewest with an error bar). They are
the same for both methods and are not counted.

Run: ``python benchmarks/curvature.py [--num 9] [--steps 3 4 5 ...] [--every 4 8] [--coarse-steps 30]``
(16 minutes on the 2-core CPU; every map recomputes its coarse pass, so the
warm maps' wall times include it and its compilation).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import jaxscape as js  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from hessian import setup as hessian_setup  # noqa: E402  (the model of benchmarks/hessian.py, other widths)

WIDTHS = (64, 32, 32, 10)


def setup(train_steps: int):
  """The 64-32-32-10 MLP on all digits (float64), trained by full-batch Adam (``benchmarks/hessian.py``'s setup)."""
  return hessian_setup(train_steps, widths=WIDTHS, batch_size=600, learning_rate=3e-3, dtype=np.float64)


def reference(obj, params, dirs, coords, steps):
  """Cold ``steps``-step Lanczos at every point: ``[lambda_min, lambda_max]`` and their true residuals."""

  def one(c):
    q = js.tree.add(params, js.tree.combine(c, dirs.vectors))
    vals, vecs = js.hessian.extreme_ritz(obj, q, jax.random.key(7), num_steps=steps)
    mv, _ = js.hessian.operator(obj, q)
    res = jnp.stack([js.tree.norm(js.tree.axpy(-vals[j], js.tree.unstack(vecs)[j], mv(js.tree.unstack(vecs)[j])))
                     for j in range(2)])
    return vals, res

  return jax.jit(lambda cs: jax.lax.map(one, cs, batch_size=9))(jnp.asarray(coords))


def dense_extremes(obj, params, dirs, c):
  """Extreme eigenvalues of the dense Hessian at grid point ``c`` (n HVPs and an ``eigh``)."""
  q = js.tree.add(params, js.tree.combine(jnp.asarray(c), dirs.vectors))
  flat, unravel = js.tree.ravel(q)
  mv, _ = js.hessian.operator(obj, q)
  cols = jax.jit(lambda e: jax.lax.map(lambda v: js.tree.ravel(mv(unravel(v)))[0], e, batch_size=64))(
      jnp.eye(flat.size))
  h = np.asarray(cols)
  return np.linalg.eigvalsh(0.5 * (h + h.T))[[0, -1]]


def rel_errors(surf, ref):
  out = {}
  for j, k in enumerate(("lambda_min", "lambda_max")):
    e = np.abs(surf.metrics[k].ravel() - ref[:, j]) / np.abs(ref[:, j])
    out[k] = (float(np.median(e)), float(np.max(e)))
  return out


def hvps_to(errors, steps, overhead, target, keys):
  """HVPs per point at the first step count whose median errors (of ``keys``) are below ``target``."""
  for s in steps:
    if all(errors[s][k][0] < target for k in keys):
      return s + overhead
  return None


def main() -> int:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--num", type=int, default=9, help="grid points per axis")
  ap.add_argument("--steps", type=int, nargs="+", default=[*range(3, 19), 20, 22, 25, 30, 40])
  ap.add_argument("--every", type=int, nargs="+", default=[4, 8], help="warm_start values (coarse spacing)")
  ap.add_argument("--coarse-steps", type=int, nargs="+", default=[30], help="Lanczos steps of the coarse pass")
  ap.add_argument("--ref-steps", type=int, default=300)
  ap.add_argument("--train-steps", type=int, default=400)
  args = ap.parse_args()

  t0 = time.perf_counter()
  obj, params = setup(args.train_steps)
  loss, metrics = obj.loss(params)
  n = js.tree.size(params)
  dirs = js.random_directions(jax.random.key(1), params, n=2)
  dev = jax.devices()[0]
  print(f"device: {dev.device_kind} ({dev.platform}), {jax.device_count()} device(s), {os.cpu_count()} CPU cores; "
        f"jax {jax.__version__}; load average {os.getloadavg()[0]:.1f}")
  print(f"model 64-32-32-10 ReLU, {n} parameters, float64; digits N={obj.num_examples}; after {args.train_steps} "
        f"Adam steps ({time.perf_counter() - t0:.1f} s): loss {float(loss):.4f}, accuracy "
        f"{float(metrics['accuracy']):.4f}; filter-normalised {args.num}x{args.num} grid over [-1, 1]^2")

  axes = [np.linspace(-1, 1, args.num)] * 2
  coords = js.surface.grid_coordinates(axes)
  t = time.perf_counter()
  ref, res = (np.asarray(a) for a in reference(obj, params, dirs, coords, args.ref_steps))
  scale = np.abs(ref).max(axis=1)
  rel = res / np.abs(ref)
  print(f"reference: {args.ref_steps}-step cold Lanczos at each of {len(coords)} points "
        f"({time.perf_counter() - t:.1f} s); max residual / |lambda|: lambda_max {rel[:, 1].max():.1e}, lambda_min "
        f"{rel[:, 0].max():.1e} (/ ||H||: {np.max(res / scale[:, None]):.1e})")
  print(f"  lambda_max over the grid {ref[:, 1].min():.4g} .. {ref[:, 1].max():.4g}; lambda_min {ref[:, 0].min():.4g} "
        f".. {ref[:, 0].max():.4g}")
  centre, corner = len(coords) // 2, 0
  for name, i in (("centre", centre), ("corner", corner)):
    t = time.perf_counter()
    dense = dense_extremes(obj, params, dirs, coords[i])
    where = tuple(float(v) for v in coords[i])
    print(f"  dense eigh at the {name} {where} ({time.perf_counter() - t:.1f} s): [{dense[0]:.6g}, {dense[1]:.6g}], "
          f"reference [{ref[i, 0]:.6g}, {ref[i, 1]:.6g}]: relative difference "
          f"{np.abs(dense - ref[i]).max() / np.abs(dense).min():.1e}")

  grid = dict(x=(-1, 1, args.num), y=(-1, 1, args.num), curvature="full", key=jax.random.key(2), trace_probes=2,
              quiet=True)
  methods = [("cold", None, None)] + [(f"warm k={k}/{c}", k, c) for k in args.every for c in args.coarse_steps]
  errors = {m: {} for m, _, _ in methods}
  overhead, coarse, wall = {}, {}, {m: {} for m, _, _ in methods}
  print(f"\nmedian / max relative error over the {len(coords)} points")
  print(f"{'method':>14} {'steps':>6} {'lambda_max median':>18} {'max':>9} {'lambda_min median':>18} {'max':>9} "
        f"{'HVPs/point':>11} {'wall s':>7}")
  for name, k, c in methods:
    for s in args.steps:
      surf = js.loss_surface(obj, params, dirs, lanczos_steps=s, warm_start=k, warm_start_steps=c, **grid)
      wall[name][s] = surf.meta["wall_time_s"]
      errors[name][s] = e = rel_errors(surf, ref)
      overhead[name] = surf.meta["warm_start"]["hvps"] / len(coords) if k else 0.0
      coarse[name] = surf.meta["warm_start"]["coarse_points"] if k else 0
      print(f"{name:>14} {s:>6} {e['lambda_max'][0]:>18.2e} {e['lambda_max'][1]:>9.2e} {e['lambda_min'][0]:>18.2e} "
            f"{e['lambda_min'][1]:>9.2e} {s + overhead[name]:>11.1f} {wall[name][s]:>7.1f}")
  for name, k, c in methods[1:]:
    print(f"{name}: coarse pass {coarse[name]} points x {c} steps = {overhead[name]:.1f} HVPs per grid point")

  print("\nHVPs per point (warm: coarse pass included) to a median relative error below the target, at the "
        "first step count of --steps that reaches it; ratio cold / warm")
  top = max(args.steps)
  for target in (1e-2, 1e-3):
    for label, keys in (("lambda_max", ("lambda_max",)), ("lambda_min", ("lambda_min",)),
                        ("both", ("lambda_max", "lambda_min"))):
      cold = hvps_to(errors["cold"], args.steps, 0.0, target, keys)
      parts = [f"cold {cold:.0f}" if cold is not None else f"cold > {top}"]
      for name, _, _ in methods[1:]:
        warm = hvps_to(errors[name], args.steps, overhead[name], target, keys)
        ratio = f" ({cold / warm:.2f}x)" if cold and warm else ""
        parts.append(f"{name} {warm:.1f}{ratio}" if warm is not None else f"{name} > {top + overhead[name]:.1f}")
      print(f"  < {target:g} {label:>10}: " + "; ".join(parts))
  print(f"total {time.perf_counter() - t0:.0f} s; load average at the end {os.getloadavg()[0]:.1f}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
