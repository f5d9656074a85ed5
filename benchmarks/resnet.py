"""ResNet benchmark: a ResNet-20 51×51 surface over a 10,000-image training set.

ResNet-20 (He et al. 2016; jaxscape's ``resnet``, projection shortcuts,
272,474 parameters; ``--depth 56`` and ``--no-shortcuts`` for the others)
on 32×32×3 images in 10 classes: the first ``--num-train`` (default 10,000) CIFAR-10 training images with ``--data-dir``
(per-channel standardised), else synthetic CIFAR-shaped data (uniform pixels,
labels from a random linear teacher, standardised the same way). The network
is at its initialisation (speed does not depend on the weights); the
directions are filter-normalised with ``biasbn`` (Li et al. 2018).

BatchNorm policy ``frozen``: the running statistics are set once, at the
centre of the plot, from one train-mode pass over the first ``--batch-size``
images (so that they are those of the data at these weights, as a trained
network's are, rather than the initial mean 0 / variance 1); every grid point
is then evaluated in eval mode with these same statistics. The directions
leave the BatchNorm scales and offsets (and biases) at zero (``biasbn``). No
statistics are recomputed per point: a point costs one forward pass per image.

The full 51×51 grid is 2,601 × N forward passes: far too many for a CPU. With
``--points M`` only part 0 of ``k = ceil(2601 / M)`` of the grid is evaluated
(its first ``ceil(2601 / k)`` points, what ``jaxscape surface --chunk 0/k``
computes, with the whole grid's compiled call shape) and the full grid's time
is projected from the measured time per chunk. Default ``M``: 8 on CPU, all
2,601 on an accelerator. Printed, all measured in this run unless marked
projected:

* the device kind and count, the chunk size (grid points per chunk);
* jaxscape points/second (compilation excluded, reported separately);
* a per-point loop (one jitted full-data loss per point, the original
  loss-landscape tool's algorithm) on ``--loop-points`` points, and the ratio;
* forward FLOPs per image (XLA's cost analysis,
  :func:`jaxscape.models.flops_per_example`) and the achieved forward FLOP/s
  (points/s × N × FLOPs per image: forward-equivalent work; jaxscape's affine
  first-layer path computes the stem convolution once per direction, so it
  does slightly less), vs this device's float32 matmul FLOP/s measured in the
  same run (default precision: TF32 on recent NVIDIA GPUs, for both);
* the projected time of the full 51×51 grid.

Run: ``python benchmarks/resnet.py`` (defaults by backend), on a CPU e.g.
``python benchmarks/resnet.py --num-train 1000 --points 8 --loop-points 4``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

import jax
import numpy as np
from flax import nnx

import jaxscape as js
from jaxscape import data, models
from jaxscape import surface as jsurf

sys.path.insert(0, os.path.dirname(__file__))
from surface import matmul_gflops, time_per_point  # noqa: E402  (the helpers of benchmarks/surface.py)

GRID = 51


def synthetic_cifar(num: int, seed: int = 0) -> data.Dataset:
  """CIFAR-shaped images (uniform pixels in [0, 1]) with labels from a random linear teacher, 10 classes."""
  rng = np.random.default_rng(seed)
  x = rng.uniform(size=(num, 32, 32, 3)).astype(np.float32)
  teacher = rng.normal(size=(32 * 32 * 3, 10))
  y = np.argmax((x.reshape(num, -1) - 0.5) @ teacher, axis=1).astype(np.int32)
  return data.Dataset(x, y, x[:0], y[:0], "synthetic-cifar", 10, {"kind": "uniform pixels, linear teacher"})


def load_data(num_train: int, data_dir: str | None) -> data.Dataset:
  """The first ``num_train`` CIFAR-10 training images from ``data_dir``, else synthetic ones; standardised."""
  if data_dir is None:
    ds = synthetic_cifar(num_train)
  else:
    ds = data.cifar10(data_dir)
    if ds.num_train < num_train:
      raise ValueError(f"--num-train {num_train}: CIFAR-10 in {data_dir!r} has only {ds.num_train} training images")
    ds = ds.replace(x_train=ds.x_train[:num_train], y_train=ds.y_train[:num_train])
  return data.normalize(ds)


def calibrate_batchnorm(net: nnx.Module, x: np.ndarray) -> None:
  """Sets every BatchNorm's running statistics to those of the batch ``x`` (one train-mode pass, momentum 0)."""
  bns = [m for _, m in nnx.iter_graph(net) if isinstance(m, nnx.BatchNorm)]
  momenta = [bn.momentum for bn in bns]
  for bn in bns:
    bn.momentum = 0.0
  nnx.view(net, deterministic=False, use_running_average=False, raise_if_not_found=False)(x)
  for bn, m in zip(bns, momenta):
    bn.momentum = m


def setup(num_train: int, data_dir: str | None, batch_size: int, *, depth: int = 20, shortcuts: bool = True):
  """ResNet-``depth`` at its initialisation, BatchNorm calibrated, over ``num_train`` images: ``(obj, params, dirs, flops)``.

  ``obj`` is the frozen-BatchNorm objective, ``dirs`` two filter-normalised
  directions (``biasbn``) and ``flops`` the forward FLOPs per image.
  """
  ds = load_data(num_train, data_dir)
  net = models.build("resnet", 0, depth=depth, num_classes=10, in_channels=3, shortcuts=shortcuts)
  calibrate_batchnorm(net, ds.x_train[:batch_size])
  obj, params = js.Objective.from_model(net, data=ds.train, batch_size=batch_size, name=ds.name, bn_policy="frozen")
  dirs = js.random_directions(jax.random.key(1), params, n=2, norm="filter", ignore="biasbn")
  apply, _, state, _ = js.adapters.split(net)
  flops = models.flops_per_example(apply, params, state, ds.x_train[0])
  return obj, params, dirs, flops


def part_of(points: int, total: int) -> tuple[int, int] | None:
  """The part ``(0, k)`` whose points are the first ~``points`` of the grid (``None``: the whole grid)."""
  return None if points >= total else (0, math.ceil(total / points))


def chunks_run(num_points: int, chunk: int, per_call: int = 8) -> int:
  """Chunks the compiled calls of a run of ``num_points`` points evaluate (padding included)."""
  per_call = min(per_call, math.ceil(num_points / chunk))
  return math.ceil(num_points / (chunk * per_call)) * per_call


def time_jaxscape(obj, params, dirs, part, chunk: int) -> tuple[js.Surface, float, float]:
  """The surface of ``part`` of the 51×51 grid, after a compiling run with the same call shape.

  Returns ``(surface, compile seconds, loss at the centre)``; the compiling run starts at the centre.
  """
  total = GRID * GRID
  points = total if part is None else jsurf.part_indices(total, part).size
  num_warm = chunk * min(8, math.ceil(points / chunk))  # one call of the timed run's shape (chunks of `chunk`, <= 8)
  t = time.perf_counter()
  first = js.loss_surface(obj, params, dirs, ranges=[(0, 1, num_warm), (0, 0, 1)], chunk_size=chunk, quiet=True)
  compile_s = time.perf_counter() - t
  surf = js.loss_surface(obj, params, dirs, x=(-1, 1, GRID), y=(-1, 1, GRID), chunk_size=chunk, part=part, quiet=True)
  return surf, compile_s, float(first.loss[0, 0])


def main() -> None:
  on_cpu = jax.default_backend() == "cpu"
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--num-train", type=int, default=10_000, help="training images (default 10,000)")
  ap.add_argument("--data-dir", default=None, help="directory of CIFAR-10 (python batches); default: synthetic data")
  ap.add_argument("--points", type=int, default=8 if on_cpu else GRID * GRID,
                  help="evaluate about this many of the 2601 grid points (default: 8 on CPU, all on an accelerator)")
  ap.add_argument("--loop-points", type=int, default=2 if on_cpu else 20, help="points timed in the per-point loop")
  ap.add_argument("--batch-size", type=int, default=512)
  ap.add_argument("--chunk-size", type=int, default=None, help="grid points per chunk (default: jaxscape's)")
  ap.add_argument("--depth", type=int, default=20, help="ResNet depth 6n + 2 (default 20)")
  ap.add_argument("--no-shortcuts", action="store_true", help="remove every shortcut (Li et al.'s -noshort)")
  args = ap.parse_args()
  for name in ("num_train", "points", "loop_points", "batch_size"):
    if getattr(args, name) < 1:
      ap.error(f"--{name.replace('_', '-')} must be a positive integer; got {getattr(args, name)}")

  obj, params, dirs, flops = setup(args.num_train, args.data_dir, args.batch_size, depth=args.depth,
                                   shortcuts=not args.no_shortcuts)
  label = f"ResNet-{args.depth}" + ("-noshort" if args.no_shortcuts else "")
  n, total = obj.num_examples, GRID * GRID
  dev = jax.devices()[0]
  ndev = jax.device_count()
  chunk = math.ceil((args.chunk_size or jsurf.default_chunk_size(obj, params, ndev)) / ndev) * ndev
  part = part_of(args.points, total)
  print(f"device: {dev.device_kind} ({dev.platform}) x{jax.device_count()}, {os.cpu_count()} CPU cores; "
        f"jax {jax.__version__}")
  print(f"{label} ({js.tree.size(params)} parameters), {n} {obj.describe()['dataset']} images in batches of "
        f"{obj.batch_size}, BatchNorm frozen (eval mode), grid {GRID}x{GRID}, chunk {chunk} points")
  peak = matmul_gflops(2048 if on_cpu else 8192)
  surf, compile_s, centre = time_jaxscape(obj, params, dirs, part, chunk)
  measured = surf.meta["num_done"]
  pps = surf.meta["points_per_second"]
  per_chunk_s = surf.meta["wall_time_s"] / chunks_run(measured, surf.meta["chunk_size"])
  projected_s = surf.meta["wall_time_s"] if part is None else math.ceil(total / surf.meta["chunk_size"]) * per_chunk_s
  loop_pps = time_per_point(obj, params, dirs, args.loop_points)
  achieved = pps * n * flops / 1e9
  what = "all" if part is None else f"the first {measured} (part 0 of {part[1]}, as --chunk 0/{part[1]})"
  print(f"measured: {what} of {total} points, {n} images each")
  print(f"loss:             {centre:10.4g} at the centre, {np.nanmin(surf.loss):.4g} .. {np.nanmax(surf.loss):.4g} "
        f"over the measured points")
  print(f"jaxscape:         {pps:10.3f} points/s  (compile {compile_s:.1f} s)")
  print(f"per-point loop:   {loop_pps:10.3f} points/s  ({args.loop_points} points)")
  print(f"speed-up:         {pps / loop_pps:10.2f} x")
  print(f"forward FLOPs:    {flops / 1e6:10.1f} MFLOP/image (XLA cost analysis)")
  print(f"achieved:         {achieved:10.1f} GFLOP/s (forward-equivalent)")
  print(f"matmul peak:      {peak:10.1f} GFLOP/s (float32 {2048 if on_cpu else 8192}^3)")
  print(f"fraction of peak: {achieved / peak:10.2f}")
  print(f"{'measured' if part is None else 'projected'} 51x51 grid: {projected_s:8.1f} s "
        f"({projected_s / 3600:.2f} h) on this device, {n} images")
  if n != 10_000:
    print(f"projected, 10,000 images: {projected_s * 10_000 / n:8.1f} s ({projected_s * 10_000 / n / 3600:.2f} h; "
          f"time is linear in the number of images)")
  print(json.dumps({
      "device": f"{dev.device_kind} x{jax.device_count()}", "platform": dev.platform, "cpu_cores": os.cpu_count(),
      "model": label, "params": js.tree.size(params), "images": n, "data": obj.describe()["dataset"],
      "batch_size": obj.batch_size, "bn_policy": "frozen", "chunk_size": surf.meta["chunk_size"],
      "points_measured": measured, "points_per_second": pps, "compile_s": compile_s,
      "loop_points": args.loop_points, "loop_points_per_second": loop_pps, "speedup": pps / loop_pps,
      "forward_flops_per_image": flops, "achieved_gflops": achieved, "matmul_gflops": peak,
      "fraction_of_peak": achieved / peak, "full_grid_seconds": projected_s, "full_grid_projected": part is not None,
      "loss_at_centre": centre, "loss_range": [float(np.nanmin(surf.loss)), float(np.nanmax(surf.loss))],
      "load_average_after": os.getloadavg()[0]}, indent=1))


if __name__ == "__main__":
  main()
