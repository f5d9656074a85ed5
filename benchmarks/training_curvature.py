"""Cost of recording curvature during training (``TrainConfig(curvature_every=...)``).

A 64-32-32-10 ReLU MLP (3,466 parameters) trained on the 1,257 scikit-learn digits of the training split
with mini-batches of 100 (12 steps per epoch). Each configuration is trained
twice: once with curvature off and once recording it every ``--every`` steps
(and at step 0) on the default measurement set (at most 2,048 examples: here all
1,257). Compilation is excluded: each run is done once to compile, then timed.
Printed, all measured in this run (float32):

* seconds per training step without curvature;
* seconds per recorded curvature measurement: (time with - time without) /
  number of measurements;
* their ratio, and the mean HVPs per measurement (top-k Lanczos run + its
  residual checks; with Adam plus the preconditioned run; with the trace its
  probes).

Run: ``python benchmarks/training_curvature.py [--steps 300] [--every 30]``.
"""

from __future__ import annotations

import argparse
import time

import jax
import numpy as np

from jaxscape import data, models, train


def _timed(ds, cfg):
  net = lambda: models.build("mlp", 0, in_features=64, widths=[32, 32], out_features=10)
  train.train(jax.random.key(0), net(), ds, cfg)  # compile
  t0 = time.perf_counter()
  _, _, hist = train.train(jax.random.key(0), net(), ds, cfg)
  return time.perf_counter() - t0, hist


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--steps", type=int, default=300)
  ap.add_argument("--every", type=int, default=30)
  args = ap.parse_args()
  ds = data.load("digits")
  base = dict(batch_size=100, steps=args.steps, eval_every=10**6)
  variants = {
      "sgd, top-1": dict(optimizer="sgd", learning_rate=0.1, curvature_k=1),
      "sgd, top-5": dict(optimizer="sgd", learning_rate=0.1, curvature_k=5),
      "sgd, top-1 + trace": dict(optimizer="sgd", learning_rate=0.1, curvature_k=1, curvature_trace=True),
      "adam, top-1 + preconditioned": dict(optimizer="adam", learning_rate=1e-3, curvature_k=1),
  }
  print(f"{'configuration':32s} {'s/step':>9s} {'s/measurement':>14s} {'ratio':>7s} {'HVPs/measurement':>17s}")
  for name, opt in variants.items():
    off, _ = _timed(ds, train.TrainConfig(**base, **opt))
    on, hist = _timed(ds, train.TrainConfig(**base, **opt, curvature_every=args.every))
    c = hist.curvature
    count = len(c["step"])
    hvps = c["num_hvps"] + c.get("preconditioned_num_hvps", 0) + c.get("trace_num_hvps", 0)
    per_step, per_measure = off / args.steps, (on - off) / count
    print(f"{name:32s} {per_step:9.2e} {per_measure:14.2e} {per_measure / per_step:7.0f} {np.mean(hvps):17.0f}")


if __name__ == "__main__":
  main()
