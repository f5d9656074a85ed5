"""Scaling benchmark: surface points/s over 1, 2, 4, 8 devices and grid x data meshes.

A 31×31 filter-normalised grid for a 64-256-256-10 ReLU MLP over 1792
scikit-learn digits (4 batches of 448, so batches split evenly over up to 8
data shards), evaluated on every mesh below in one run:

* ``grid x 1`` for 1, 2, 4 and 8 devices (points sharded, data replicated);
* ``4 x 2``, ``2 x 4`` and ``1 x 8`` (``data_shards`` 2, 4, 8: every batch
  split over the "data" axis and summed with ``psum``).

With fake CPU devices (``jax_num_cpu_devices``) all devices share the same
cores, so the ideal is *equal* throughput on every mesh: the printed
"time/point vs 1 device" is the overhead of sharding, not a speed-up. On a
machine with real devices the same script measures the speed-up. Each rate
is the median of three timed runs after a compiling run (compilation
reported separately); every result is checked against the 1-device surface.
The chunk size is the default (:func:`jaxscape.surface.default_chunk_size`:
on CPU one cache-sized working set shared by all devices).

Run: ``python benchmarks/scaling.py [--num 31] [--devices 8]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import jax


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--num", type=int, default=31, help="grid points per axis")
  parser.add_argument("--devices", type=int, default=8, help="fake CPU devices (ignored on accelerators)")
  parser.add_argument("--repeats", type=int, default=3)
  args = parser.parse_args()
  jax.config.update("jax_num_cpu_devices", args.devices)  # before the first JAX computation

  import numpy as np

  sys.path.insert(0, os.path.dirname(__file__))
  from surface import setup  # the digits MLP of benchmarks/surface.py

  import jaxscape as js

  obj, params, dirs = setup()
  obj = obj.with_data((obj.x.reshape(-1, 64)[:1792], obj.y.reshape(-1)[:1792]), name="digits-1792", batch_size=448)
  devices = jax.devices()
  n = len(devices)
  meshes = [(g, 1) for g in (1, 2, 4, 8) if g <= n] + [(n // d, d) for d in (2, 4, 8) if d <= n and n % d == 0]
  grid = dict(x=(-1, 1, args.num), y=(-1, 1, args.num), quiet=True)
  print(f"device: {devices[0].device_kind} ({devices[0].platform}), {n} devices, {os.cpu_count()} CPU cores; "
        f"jax {jax.__version__}; {args.num}x{args.num} grid, {js.tree.size(params)} parameters, "
        f"{obj.num_examples} examples in {obj.num_batches} batches of {obj.batch_size}; "
        f"load average {os.getloadavg()[0]:.1f}")
  print(f"{'mesh grid x data':>18} {'devices':>8} {'chunk':>6} {'points/s':>10} {'time/point vs 1 device':>24} "
        f"{'compile+first s':>16}")
  base_rate = base_loss = None
  for g, d in meshes:
    kwargs = dict(devices=devices[: g * d], data_shards=d, **grid)
    t = time.perf_counter()
    first = js.loss_surface(obj, params, dirs, **kwargs)
    compile_s = time.perf_counter() - t
    rates = [js.loss_surface(obj, params, dirs, **kwargs).meta["points_per_second"] for _ in range(args.repeats)]
    rate = statistics.median(rates)
    if base_rate is None:
      base_rate, base_loss = rate, first.loss
    # float32 sums in another order: 1e-5 relative
    np.testing.assert_allclose(first.loss, base_loss, rtol=1e-5)
    print(f"{f'{g} x {d}':>18} {g * d:>8} {first.meta['chunk_size']:>6} {rate:>10.0f} {base_rate / rate:>23.2f}x "
          f"{compile_s:>16.2f}")
  print(f"load average at the end {os.getloadavg()[0]:.1f} (other processes on the cores lower every rate)")
  return 0


if __name__ == "__main__":
  sys.exit(main())
