"""Affine first layer and mixed precision: surface speed and error on a 784-256-10 MLP.

A filter-normalised 2-D grid (default 21x21) for a 784-256-10 ReLU MLP
(jaxscape's ``MLP``) over 2000 synthetic MNIST-shaped examples (uniform
pixels in [0, 1], labels from a random linear teacher), trained for 200
full-batch Adam steps so the centre is a low-loss model. Printed, all measured
in this run (median of ``--repeats`` interleaved runs, compilation excluded):

* points/second of the surface with the affine first layer (the default for
  jaxscape's MLPs: the first layer runs once at the centre and once per
  direction per batch and chunk) and without it (one first-layer matmul per
  point), each at its default chunk size and at ``--chunk`` points, and the
  ratios; the largest relative difference between the two surfaces;
* the same surface with the forward pass in bfloat16 and float16
  (``Objective.with_compute_dtype``): points/second and the max / mean
  relative error of the loss against float32 over the grid
  (:func:`jaxscape.stats.surface_error`).

Run: ``python benchmarks/affine.py [--num 21] [--chunk 32] [--repeats 3]``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics

import jax
import jax.numpy as jnp
import numpy as np
import optax

import jaxscape as js
from jaxscape import surface as jsurf
from jaxscape.stats import surface_error


def setup(n: int = 2000, steps: int = 200):
  rng = np.random.default_rng(0)
  x = rng.uniform(size=(n, 28, 28, 1)).astype(np.float32)
  teacher = rng.normal(size=(784, 10))
  y = np.argmax((x.reshape(n, -1) - 0.5) @ teacher, axis=1).astype(np.int32)
  net = js.models.build("mlp", 0, in_features=784, widths=[256], out_features=10)
  obj, params = js.Objective.from_model(net, data=(x, y), batch_size=512, name="synthetic-mnist")
  params = train(obj, params, steps)
  dirs = js.random_directions(jax.random.key(1), params, n=2, norm="filter", ignore="biasbn")
  return obj, params, dirs


def train(obj, params, steps: int):
  """Full-batch Adam, so that the centre of the plot is a (nearly) trained model, as in real use."""
  opt = optax.adam(3e-3)

  @jax.jit
  def step(p, s):
    g = jax.grad(obj.value)(p)
    u, s = opt.update(g, s, p)
    return optax.apply_updates(p, u), s

  state = opt.init(params)
  for _ in range(steps):
    params, state = step(params, state)
  return params


def measure(runs: dict, obj, params, dirs, num: int, repeats: int) -> dict:
  """Median points/second per configuration over interleaved repeats, and the last surface of each."""
  grid = dict(x=(-1, 1, num), y=(-1, 1, num), quiet=True)
  rates: dict[str, list[float]] = {k: [] for k in runs}
  surfaces = {}
  for name, (o, chunk) in runs.items():  # compile: the first run of each configuration is not timed
    surfaces[name] = js.loss_surface(o, params, dirs, chunk_size=chunk, **grid)
  for _ in range(repeats):
    for name, (o, chunk) in runs.items():
      surfaces[name] = js.loss_surface(o, params, dirs, chunk_size=chunk, **grid)
      rates[name].append(surfaces[name].meta["points_per_second"])
  return {k: {"points_per_second": statistics.median(v), "chunk_size": surfaces[k].meta["chunk_size"]}
          for k, v in rates.items()}, surfaces


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--num", type=int, default=21, help="grid points per axis")
  ap.add_argument("--chunk", type=int, default=32, help="the fixed chunk size compared besides the defaults")
  ap.add_argument("--repeats", type=int, default=3)
  args = ap.parse_args()

  obj, params, dirs = setup()
  plain = obj.with_first_layer(None)
  default_affine = jsurf.default_chunk_size(obj, params)
  default_plain = jsurf.default_chunk_size(plain, params)
  runs = {
      "affine, default chunk": (obj, None),
      "plain, default chunk": (plain, None),
      f"affine, chunk {args.chunk}": (obj, args.chunk),
      f"plain, chunk {args.chunk}": (plain, args.chunk),
      "affine bfloat16, default chunk": (obj.with_compute_dtype(jnp.bfloat16), None),
      "affine float16, default chunk": (obj.with_compute_dtype(jnp.float16), None),
  }
  res, surfaces = measure(runs, obj, params, dirs, args.num, args.repeats)
  ref = surfaces["affine, default chunk"]
  out = {
      "device": f"{jax.devices()[0].device_kind} x{len(jax.devices())} ({os.cpu_count()} CPU cores)",
      "model": "MLP 784-256-10 relu", "examples": obj.num_examples, "batch_size": obj.batch_size,
      "grid": f"{args.num}x{args.num}", "default_chunk": {"affine": default_affine, "plain": default_plain},
      "runs": res,
      "speedup_default_chunks": res["affine, default chunk"]["points_per_second"]
      / res["plain, default chunk"]["points_per_second"],
      f"speedup_chunk_{args.chunk}": res[f"affine, chunk {args.chunk}"]["points_per_second"]
      / res[f"plain, chunk {args.chunk}"]["points_per_second"],
      "affine_vs_plain_max_relative_difference": surface_error(ref, surfaces["plain, default chunk"])[
          "max_relative_error"],
      "bfloat16_error": surface_error(surfaces["affine bfloat16, default chunk"], ref),
      "float16_error": surface_error(surfaces["affine float16, default chunk"], ref),
      "loss_range": [float(np.nanmin(ref.loss)), float(np.nanmax(ref.loss))],
      "load_average_after": os.getloadavg()[0],
  }
  for name, r in res.items():
    print(f"{name:34s} chunk {r['chunk_size']:4d}  {r['points_per_second']:8.1f} points/s")
  print(f"affine / plain: {out['speedup_default_chunks']:.2f}x at the default chunks "
        f"({default_affine} vs {default_plain}), {out[f'speedup_chunk_{args.chunk}']:.2f}x at chunk {args.chunk}; "
        f"max relative difference {out['affine_vs_plain_max_relative_difference']:.1e}")
  for dt in ("bfloat16", "float16"):
    e = out[f"{dt}_error"]
    print(f"{dt} vs float32 loss: max relative error {e['max_relative_error']:.2e}, "
          f"mean {e['mean_relative_error']:.2e} over {e['num_compared']} points")
  print(json.dumps(out, indent=1))


if __name__ == "__main__":
  main()
