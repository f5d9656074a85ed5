"""edge_of_stability: full-batch gradient descent drives the sharpness up to 2/η and keeps it there (Cohen et al. 2021).

"Gradient Descent on Neural Networks Typically Occurs at the Edge of Stability": the top Hessian eigenvalue rises
(progressive sharpening) until it reaches 2/η, then hovers there while the loss keeps falling, non-monotonically. One
MLP, the same initialisation, full-batch GD at several step sizes, λmax recorded during training
(``TrainConfig(curvature_every=...)``, warm-started Lanczos) and read with ``stats.edge_of_stability``.

Run: ``make experiment NAME=edge_of_stability [PRESET=smoke|cpu|full] [SEED=0]``.
"""

from __future__ import annotations

import os
import sys
import time

import jax
import numpy as np

from jaxscape import experiment, models, plot, stats, train
from jaxscape import io as jio
from jaxscape.experiment import Report, fmt, table

# Thresholds, fixed before the cpu runs: ±15 % and "most" = 70 % are the band and a majority with margin;
# the edge must be reached within the first 80 % of the steps so that "the remaining steps" are >= 20 % of the run.
_CHECKS = {"band": 0.15, "min_in_band": 0.7, "reach_by": 0.8, "tol": 1e-3}
_MLP = {"activation": "relu", "loss": "cross_entropy"}
CONFIGS = {
    "smoke": {**_CHECKS, **_MLP, "data": {"name": "mnist1d", "num_train": 400, "num_test": 100}, "widths": [16],
              "learning_rates": [0.5, 0.25], "steps": 20, "every": 10},
    # 2/η = 14.8, 17.4, 20: above the early transient (λmax ≈ 11 near step 200), reached by progressive sharpening
    # within the run, and over before the late phase of cross-entropy where the loss nears 0 and λmax falls.
    "cpu": {**_CHECKS, **_MLP, "data": {"name": "mnist1d"}, "widths": [64, 64],
            "learning_rates": [0.135, 0.115, 0.1], "steps": 4000, "every": 20},
    "full": {**_CHECKS, **_MLP, "data": {"name": "mnist1d", "num_samples": 10000}, "widths": [200, 200],
             "learning_rates": [0.135, 0.115, 0.1, 0.085], "steps": 10000, "every": 20},
}


def main(config: dict, out_dir: str) -> Report:
  c, lrs = config, [float(v) for v in config["learning_rates"]]
  ds = experiment.load_dataset({**c["data"], "flatten": True}, c.get("data_dir"))
  n_in, widths = int(np.prod(ds.x_train.shape[1:])), [int(w) for w in c["widths"]]
  init = lambda k: models.build("mlp", k, in_features=n_in, widths=widths, out_features=ds.num_classes,
                                activation=c["activation"])
  cfg = train.TrainConfig(optimizer="sgd", learning_rate=lrs[0], batch_size=None, steps=c["steps"], loss=c["loss"],
                          eval_every=c["every"], curvature_every=c["every"], curvature_k=1, curvature_examples=None,
                          curvature_tol=c["tol"])
  t0 = time.perf_counter()
  # one initialisation (split from the seed) for every step size: the runs differ only in η
  _, _, hist = train.train_many(jax.random.split(jax.random.key(c["seed"]), 1), init, ds, cfg,
                                sweep={"learning_rate": lrs}, runs="sequential")
  wall = time.perf_counter() - t0
  curv, steps, loss_step = hist.curvature, hist.curvature["step"], np.asarray(hist.step)
  lam, thr = curv["eigenvalues"][:, 0, :, 0].astype(np.float64), curv["threshold"][:, 0].astype(np.float64)
  loss, converged = hist.train_loss[:, 0].astype(np.float64), curv["converged"][:, 0, :, 0]
  edge = [stats.edge_of_stability(lam[i], thr[i], band=c["band"]) for i in range(len(lrs))]
  reach = np.array([int(steps[e["first"]]) if e["reached"] else -1 for e in edge])
  plateau = np.array([e["plateau"] for e in edge])
  start_loss = np.array([np.interp(r, loss_step, l) if r >= 0 else np.nan for r, l in zip(reach, loss)])
  rises = np.array([int(np.sum(np.diff(l) > 0)) for l in loss])

  jio.save_result(out_dir, {
      "learning_rates": np.asarray(lrs), "step": steps, "sharpness": lam, "threshold": thr, "converged": converged,
      "residual": curv["residuals"][:, 0, :, 0], "num_hvps": curv["num_hvps"][:, 0], "loss_step": loss_step,
      "train_loss": loss, "test_loss": hist.test_loss[:, 0], "test_accuracy": hist.test_accuracy[:, 0],
      "reach_step": reach, "plateau": plateau, "in_band": np.array([e["in_band"] for e in edge])},
      {"config": c, "environment": jio.environment(), "train_wall_s": wall})
  arch = f"MLP {n_in}-{'-'.join(map(str, widths))}-{ds.num_classes} {c['activation']}"
  plot.save(plot.edge_of_stability(steps, lam, thr[:, 0], loss_step, loss, reached=reach, title=(
      f"Full-batch GD on {ds.name} ({ds.num_train} examples), {arch}, {c['loss']}, seed {c['seed']}"))[0],
      os.path.join(out_dir, "edge_of_stability.png"), dpi=90)

  rep = Report("edge_of_stability", seed=c["seed"], preset=c["preset"], claim=(
      "Under full-batch gradient descent with step η, the top Hessian eigenvalue rises until it reaches 2/η and then "
      "hovers there while the training loss keeps falling, non-monotonically; the larger η, the lower the plateau "
      "(Cohen et al., ICLR 2021)."))
  num_params = models.count_params(init(jax.random.key(0)))
  rep.setup += [
      f"{ds.name}: {ds.num_train} training examples (the full batch); {arch} ({num_params} parameters), {c['loss']} "
      f"loss; one initialisation (key split from the seed) shared by every step size.",
      f"Plain gradient descent (`train.train_many`, optimizer sgd without momentum, batch_size None: one step per "
      f"epoch on the same full batch), η ∈ {lrs}, {c['steps']} steps; {wall:.1f} s.",
      f"λmax of the full training loss every {c['every']} steps (`TrainConfig(curvature_every=...)`: Lanczos warm-"
      f"started from the previous eigenvector, converged = residual ≤ {c['tol']:g}·|λ|; "
      f"{float(np.mean(curv['num_hvps'])):.1f} HVPs per record on average). Training loss on the same steps.",
      f"Edge (`stats.edge_of_stability`): reached at the first record with λmax ≥ (1 − {c['band']:g})·2/η; in the band "
      f"when |λmax·η/2 − 1| ≤ {c['band']:g}; plateau = median λmax from the reach on."]
  for i, (lr, e) in enumerate(zip(lrs, edge)):
    after = lam[i, max(e["first"], 0):] / thr[i, max(e["first"], 0):]
    in_time = e["reached"] and reach[i] <= c["reach_by"] * c["steps"]
    rep.check(f"η = {lr:g}: λmax reaches 2/η = {thr[i, 0]:.3g} within ±{100 * c['band']:g} % by step "
              f"{int(c['reach_by'] * c['steps'])}", bool(in_time),
              f"reached at step {reach[i]}" if e["reached"] else f"never: max λmax {lam[i].max():.4g}")
    rep.check(f"η = {lr:g}: stays in the band for ≥ {100 * c['min_in_band']:g} % of the remaining records",
              e["in_band"] >= c["min_in_band"], f"{100 * e['in_band']:.1f} % of {len(steps) - max(e['first'], 0)} "
              f"records; λmax/(2/η) after the reach: median {fmt(e['plateau_ratio'])}, range {fmt(after.min())} – "
              f"{fmt(after.max())}")
    rep.check(f"η = {lr:g}: the training loss keeps falling (final < loss at the plateau's start)",
              bool(loss[i, -1] < start_loss[i]), f"loss at step {reach[i]}: {fmt(start_loss[i])}, final "
              f"{fmt(loss[i, -1])}; {rises[i]} rises between consecutive records")
  order = np.argsort(thr[:, 0])
  rep.check("the larger η, the lower the plateau (ordered as 2/η)", stats.is_increasing(plateau[order]),
            "plateaus " + ", ".join(f"{fmt(plateau[j])} (2/η = {thr[j, 0]:.3g})" for j in order))
  rep.check(f"every λmax record is certified (Lanczos converged, tol {c['tol']:g})", bool(np.all(converged)),
            f"{int(np.sum(converged))}/{converged.size} converged; max residual "
            f"{fmt(float(np.max(curv['residuals'])))}")
  rep.section("Per step size", table(
      ["η", "2/η", "reach step", "plateau λmax", "plateau/(2/η)", "in band", "loss at reach", "final loss",
       "loss rises", "test acc"],
      [(lr, thr[i, 0], reach[i], plateau[i], edge[i]["plateau_ratio"], f"{100 * edge[i]['in_band']:.1f} %",
        start_loss[i], loss[i, -1], rises[i], hist.test_accuracy[i, 0, -1]) for i, lr in enumerate(lrs)]))
  rep.figure("edge_of_stability.png", "Left: λmax against step (dashed: 2/η; dot: the reach). Right: training loss "
             "(Cohen et al. 2021, Fig. 1 layout)")
  rep.notes += ["Cross-entropy loss: late in training, as the loss nears 0, λmax falls below 2/η (Cohen et al., "
                "Appendix on cross-entropy); the step sizes and the length of the run keep the cpu preset before "
                "that phase."] + [
      "Smoke preset: a seconds-long wiring test; its verdict says nothing about the claim."] * (c["preset"] == "smoke")
  rep.note_failures()
  return rep


if __name__ == "__main__":
  sys.exit(experiment.run(sys.modules[__name__], html_views=plot.html_views))
