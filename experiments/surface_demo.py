"""surface_demo: the filter-normalised loss surface of a small MLP trained on digits.

Trains a ReLU MLP on scikit-learn's digits with Adam, then evaluates its
training loss on a 2-D grid of filter-normalised random directions (Li et
al. 2018) and along the first direction alone, and writes the contour,
3-D and 1-D figures, ``results.npz``, ``meta.json`` and ``report.md``.

Run: ``make experiment NAME=surface_demo [PRESET=smoke|cpu|full] [SEED=0]``.
"""

from __future__ import annotations

import os
import sys

import jax
import numpy as np

import jaxscape as js
from jaxscape import cli, experiment, plot
from jaxscape.experiment import Report, table

RUN_DIR = "runs/surface_demo"

CONFIGS = {
    "smoke": {"widths": [16], "epochs": 3, "grid": 5, "line": 9, "span": 1.0},
    "cpu": {"widths": [64, 64], "epochs": 60, "grid": 51, "line": 101, "span": 1.0},
    "full": {"widths": [256, 256], "epochs": 100, "grid": 101, "line": 201, "span": 1.0},
}


def main(config: dict, out_dir: str) -> Report:
  seed = config["seed"]
  model, ds, history = cli.demo_network(seed, widths=config["widths"], epochs=config["epochs"])
  obj, params = js.Objective.from_model(model, data=ds.train, batch_size=512, name="digits-train")
  trained_loss, trained_metrics = jax.jit(obj.loss)(params)
  dirs = js.random_directions(jax.random.fold_in(jax.random.key(seed), 1), params, n=2, norm="filter", ignore="biasbn")
  s, g, n1 = config["span"], config["grid"], config["line"]
  surf = js.loss_surface(obj, params, dirs, x=(-s, s, g), y=(-s, s, g), out_dir=out_dir)
  line = js.loss_surface(obj, params, [dirs[0]], x=(-s, s, n1), out_dir=os.path.join(out_dir, "curve"))
  plot.save_figures(surf, out_dir)
  plot.save_figures(line, out_dir)

  origin = surf.origin_index()
  at_origin = float(surf.loss[origin])
  rep = Report("surface_demo", seed=seed, preset=config["preset"],
               claim="A trained network sits at the bottom of a basin of its filter-normalised loss surface "
                     "(Li et al. 2018): the trained point is the lowest point of the plotted slice.")
  rep.setup += [
      f"MLP 64-{'-'.join(map(str, config['widths']))}-10 (ReLU), {js.tree.size(params)} parameters; "
      f"Adam 3e-3, batch 64, {config['epochs']} epochs on {ds.x_train.shape[0]} digits (test {ds.x_test.shape[0]}).",
      f"Two Gaussian directions, filter-normalised, biases/BN ignored (`biasbn`); grid {g}x{g} on [-{s}, {s}]^2 "
      f"and a {n1}-point 1-D curve along the first direction. Loss = full training-set cross-entropy, eval mode.",
      f"{surf.meta['points_per_second']:.1f} grid points/s on {surf.meta['environment']['device_count']} "
      f"{surf.meta['environment']['device_kind']} device(s), {surf.num_nonfinite} non-finite points.",
  ]
  rep.section("Statistics", table(["quantity", "value"], [
      ("train loss (final epoch)", float(history.train_loss[-1])),
      ("test loss / accuracy", f"{float(history.test_loss[-1]):.4f} / {float(history.test_accuracy[-1]):.4f}"),
      ("loss at grid origin", at_origin),
      ("full-data loss at the trained parameters", float(trained_loss)),
      ("train accuracy at the trained parameters", float(trained_metrics["accuracy"])),
      ("min / max loss on the grid", f"{np.nanmin(surf.loss):.4g} / {np.nanmax(surf.loss):.4g}"),
      ("max loss on the 1-D curve", float(np.nanmax(line.loss))),
  ]))
  rep.check("the grid origin is the trained network", np.isclose(at_origin, float(trained_loss), rtol=1e-5),
            f"loss(0,0) = {at_origin:.6g}, trained loss = {float(trained_loss):.6g} (rtol 1e-5)")
  lowest = float(np.nanmin(surf.loss))
  rep.check("the trained point is the lowest point of the slice", at_origin <= lowest * 1.01 + 1e-6,
            f"loss(0,0) = {at_origin:.4g} vs grid minimum {lowest:.4g} (1% slack)")
  for name, caption in (("contour.png", "Contours of the training loss (labelled levels)"),
                        ("surface3d.png", "The same surface in 3-D"),
                        ("curve1d.png", "1-D curve along the first direction: loss (left) and accuracy (right)")):
    rep.figure(name, caption)
  return rep


if __name__ == "__main__":
  sys.exit(experiment.run(sys.modules[__name__], html_views=plot.html_views))
