"""Surface benchmark: jaxscape's chunked grid vs a per-point loop, and vs matmul peak.

A 51×51 filter-normalised grid for a 64-256-256-10 ReLU MLP over all 1797
scikit-learn digits. Printed, all measured in this run:

* jaxscape points/second (compilation excluded, reported separately), on the
  plain path (every layer per point) and the affine first-layer path
  (:class:`jaxscape.FirstLayer`: the 64-wide first layer runs once per
  direction and chunk; what ``Objective.from_model`` picks for jaxscape's MLPs);
* a per-point loop (one jitted full-data loss per grid point: the original
  loss-landscape tool's algorithm) points/second, and the ratios;
* achieved GFLOP/s: forward-equivalent (2·N·(64·256 + 256·256 + 256·10) per
  point, what a per-point evaluation computes) and executed (the affine path
  computes less), against this machine's float32 matmul GFLOP/s (a 2048³
  matmul, measured before and after; their mean);
* the ceiling (:func:`ceiling`): each op of the forward pass (the three
  matmuls, bias + ReLU, the cross-entropy) timed alone over a chunk's points,
  their sum and the whole pass in plain JAX, as fractions of the matmul rate;
* peak RSS of a 21×21 and a 101×101 grid, each in a fresh process.

Run: ``make bench`` (or ``python benchmarks/surface.py [--num 51]``).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from sklearn.datasets import load_digits

import jaxscape as js

WIDTHS = (64, 256, 256, 10)


def mlp(params, x):
  for i, layer in enumerate(params):
    x = x @ layer["kernel"] + layer["bias"]
    if i < len(params) - 1:
      x = jax.nn.relu(x)
  return x


def after_first_layer(params, state, z):
  """The MLP after its first layer's pre-activation ``z`` (the ``rest`` of :class:`jaxscape.FirstLayer`)."""
  del state
  return mlp(params[1:], jax.nn.relu(z))


def setup(first_layer: bool = False):
  """The digits MLP's objective, centre and two filter-normalised directions.

  With ``first_layer`` the objective knows the first Dense layer (the affine
  path: the first layer runs once per direction and chunk, not once per point).
  """
  d = load_digits()
  x, y = (d.data / 16.0).astype(np.float32), d.target.astype(np.int32)
  key = jax.random.key(0)
  params = []
  for i, (a, b) in enumerate(zip(WIDTHS[:-1], WIDTHS[1:])):
    k = jax.random.fold_in(key, i)
    params.append({"kernel": jax.random.normal(k, (a, b)) * np.sqrt(2.0 / a), "bias": jnp.zeros(b)})
  fl = js.FirstLayer.dense((0,), after_first_layer, name="dense 0") if first_layer else None
  obj = js.Objective.from_apply(mlp, params, data=(x, y), batch_size=512, name="digits", first_layer=fl)
  dirs = js.random_directions(jax.random.key(1), params, n=2, norm="filter", ignore="biasbn")
  return obj, params, dirs


def flops_per_point(n: int) -> float:
  """Forward FLOPs of one grid point over ``n`` examples (the matmuls; what a per-point evaluation computes)."""
  return 2.0 * n * sum(a * b for a, b in zip(WIDTHS[:-1], WIDTHS[1:]))


def executed_flops_per_point(n: int, chunk: int, directions: int = 2) -> float:
  """Matmul FLOPs the affine path executes per point: the first layer ``directions + 1`` times per chunk."""
  first = 2.0 * n * WIDTHS[0] * WIDTHS[1]
  return flops_per_point(n) - first + first * (directions + 1) / chunk


def matmul_gflops(n: int = 2048, reps: int = 10, dtype=jnp.float32) -> float:
  """GFLOP/s of an ``n x n`` matrix product in ``dtype`` (default precision: TF32 for float32 on recent GPUs)."""
  a = jax.random.normal(jax.random.key(0), (n, n), dtype)
  f = jax.jit(lambda a: a @ a)
  f(a).block_until_ready()
  t = time.perf_counter()
  for _ in range(reps):
    f(a).block_until_ready()
  return 2 * n**3 * reps / (time.perf_counter() - t) / 1e9


def time_jaxscape(obj, params, dirs, num: int) -> tuple[float, float, int]:
  """``(points/s, compile seconds, chunk size)`` of a ``num x num`` surface at the default chunk size."""
  grid = dict(x=(-1, 1, num), y=(-1, 1, num), quiet=True)
  t = time.perf_counter()
  js.loss_surface(obj, params, dirs, x=(-1, 1, 3), y=(-1, 1, 3), quiet=True)  # compile (same chunk shape)
  compile_s = time.perf_counter() - t
  surf = js.loss_surface(obj, params, dirs, **grid)
  return surf.meta["points_per_second"], compile_s, surf.meta["chunk_size"]


def time_per_point(obj, params, dirs, num_points: int) -> float:
  """Points/s of the original tool's algorithm: one jitted full-data loss per grid point, one point at a time."""
  # the objective (and its data), the point and the directions are arguments, not constants compiled into the program
  point = jax.jit(lambda o, p, d0, d1, a, b: o.value(js.tree.add(p, js.tree.add(js.tree.scale(a, d0),
                                                                                 js.tree.scale(b, d1)))))
  loss = lambda a, b: point(obj, params, dirs[0], dirs[1], a, b)  # noqa: E731
  loss(0.0, 0.0).block_until_ready()
  coords = np.linspace(-1, 1, num_points)
  t = time.perf_counter()
  for a in coords:
    loss(a, -a).block_until_ready()
  return num_points / (time.perf_counter() - t)


def _seconds(f, *args, reps: int = 20) -> float:
  jax.block_until_ready(f(*args))
  t = time.perf_counter()
  for _ in range(reps):
    out = f(*args)
  jax.block_until_ready(out)
  return (time.perf_counter() - t) / reps


def ceiling(n: int, points: int, peak: float) -> None:
  """Where the time of a forward pass over ``points`` grid points goes: each op of the MLP timed alone.

  The same work as a chunk of the surface in plain JAX (all ``n`` examples at
  once, the points vmapped): each layer's batched matmul, the bias + ReLU and
  the cross-entropy, alone, and the whole forward pass. The sum of the parts
  bounds what any evaluation of this network reaches with these XLA kernels.
  """
  key = jax.random.key(0)
  mm = jax.jit(lambda h, w: jnp.einsum("pbi,pij->pbj", h, w))
  total = 0.0
  for a, b in zip(WIDTHS[:-1], WIDTHS[1:]):
    t = _seconds(mm, jax.random.normal(key, (points, n, a)), jax.random.normal(key, (points, a, b)))
    total += t
    print(f"  matmul [{points},{n},{a}] x [{points},{a},{b}]: {1e3 * t:.2f} ms, "
          f"{2 * points * n * a * b / t / 1e9 / peak:.2f} of peak")
  t = _seconds(jax.jit(lambda h, b: jax.nn.relu(h + b)), jax.random.normal(key, (points, n, 256)),
               jnp.zeros((points, 1, 256)))
  total += 2 * t
  print(f"  bias + ReLU [{points},{n},256]: {1e3 * t:.2f} ms (twice)")
  t = _seconds(jax.jit(lambda z: jax.nn.logsumexp(z, -1) - z[..., 0]), jax.random.normal(key, (points, n, 10)))
  total += t
  print(f"  cross-entropy [{points},{n},10]: {1e3 * t:.2f} ms")
  params = [{"kernel": jax.random.normal(key, (points, a, b)) * 0.1, "bias": jnp.zeros((points, b))}
            for a, b in zip(WIDTHS[:-1], WIDTHS[1:])]
  x = jax.random.normal(key, (n, WIDTHS[0]))
  whole = _seconds(jax.jit(jax.vmap(lambda p: jax.nn.logsumexp(mlp(p, x), -1).sum())), params)
  work = points * flops_per_point(n) / 1e9
  print(f"  sum of the parts: {1e3 * total:.2f} ms = {work / total / peak:.2f} of peak; the whole forward pass in "
        f"plain JAX: {1e3 * whole:.2f} ms = {work / whole / peak:.2f} of peak")


def rss_child(num: int) -> None:
  obj, params, dirs = setup()
  js.loss_surface(obj, params, dirs, x=(-1, 1, num), y=(-1, 1, num), quiet=True)
  print(json.dumps({"num": num, "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--num", type=int, default=51, help="grid points per axis")
  parser.add_argument("--loop-points", type=int, default=200, help="points timed in the per-point loop")
  parser.add_argument("--rss-child", type=int, default=None, help=argparse.SUPPRESS)
  parser.add_argument("--no-rss", action="store_true", help="skip the memory measurement")
  args = parser.parse_args()
  if args.rss_child:
    return rss_child(args.rss_child)

  obj, params, dirs = setup()
  affine = setup(first_layer=True)[0]
  n = obj.num_examples
  print(f"device: {jax.devices()[0].device_kind} x{jax.device_count()}  jax {jax.__version__}")
  print(f"model 64-256-256-10 ReLU ({js.tree.size(params)} params), {n} digits, grid {args.num}x{args.num}")
  peaks = [matmul_gflops()]
  rows = {name: time_jaxscape(o, params, dirs, args.num) for name, o in (("plain", obj), ("affine", affine))}
  loop_pps = time_per_point(obj, params, dirs, args.loop_points)
  peaks.append(matmul_gflops())
  peak = float(np.mean(peaks))
  print(f"matmul:          {peaks[0]:10.1f} then {peaks[1]:.1f} GFLOP/s (float32 2048^3; their mean is the peak)")
  print(f"per-point loop:  {loop_pps:10.1f} points/s   {loop_pps * flops_per_point(n) / 1e9 / peak:5.2f} of peak")
  for name, (pps, compile_s, chunk) in rows.items():
    equivalent = pps * flops_per_point(n) / 1e9
    executed = pps * (executed_flops_per_point(n, chunk) if name == "affine" else flops_per_point(n)) / 1e9
    print(f"jaxscape {name:7s} {pps:10.1f} points/s   chunk {chunk}, compile {compile_s:.1f} s; "
          f"{pps / loop_pps:.2f} x the loop; forward-equivalent {equivalent:.1f} GFLOP/s = {equivalent / peak:.2f} "
          f"of peak; executed {executed:.1f} GFLOP/s = {executed / peak:.2f} of peak")
  print(f"ceiling: the forward pass of {rows['plain'][2]} points over all {n} digits, op by op (plain JAX):")
  ceiling(n, rows["plain"][2], peak)
  if not args.no_rss:
    rss = {}
    for num in (21, 101):
      out = subprocess.run([sys.executable, __file__, "--rss-child", str(num)], capture_output=True, text=True, check=True)
      rss[num] = json.loads(out.stdout.strip().splitlines()[-1])["max_rss_mb"]
    print(f"peak RSS:        21x21 {rss[21]:.0f} MB, 101x101 {rss[101]:.0f} MB, ratio {rss[101] / rss[21]:.2f}")


if __name__ == "__main__":
  main()
