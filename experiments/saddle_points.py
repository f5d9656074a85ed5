"""saddle_points: critical points of a small MLP are saddles whose index grows with their loss (Dauphin et al. 2014).

Critical points of an MLP 16-8-10 (tanh, ~226 parameters, exact float64
Hessians) on PCA-16 digits are located by Levenberg-Marquardt on
``1/2 ||grad f||^2`` (``critical.find_critical_point``) from snapshots of SGD
trajectories at many epochs; only points with ``||grad f|| < 1e-6`` count
(gradient-flat stops are excluded and counted). Each point's loss and index
(fraction of negative Hessian eigenvalues) are recorded. From points next to
saddles, saddle-free Newton (``|H|`` from the eigendecomposition, and its
Lanczos/Krylov version), damped Newton and gradient descent are compared
(``critical.escape_saddle``).

Run: ``make experiment NAME=saddle_points [PRESET=smoke|cpu|full] [SEED=0] [DATA_DIR=...]``.
"""

from __future__ import annotations

import os
import sys
import time

import jax
import jax.numpy as jnp
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

import jaxscape as js  # noqa: E402
from jaxscape import cli, plot, critical, data, features, models, regularize, stats, train  # noqa: E402
from jaxscape import io as jio  # noqa: E402
from jaxscape.report import Report, fmt, table  # noqa: E402

CONFIGS = {
    "smoke": {"dataset": "digits", "num_train": 100, "pca": 16, "widths": [8], "weight_decay": 1e-2, "seeds": 1,
              "epochs": 20, "learning_rate": 0.05, "batch_size": 32, "snapshot_epochs": 5, "snapshots": [0, 1, 4],
              "max_steps": 20, "tol": 1e-6, "escapes": 1, "escape_steps": 10, "perturbation": 1e-3,
              "escape_threshold": 1e-3, "krylov_dim": 10, "damping_rel": 1e-3},
    "cpu": {"dataset": "digits", "num_train": 300, "pca": 16, "widths": [8], "weight_decay": 1e-2, "seeds": 6,
            "epochs": 300, "learning_rate": 0.05, "batch_size": 32, "snapshot_epochs": 5,
            "snapshots": [0, 1, 2, 3, 4, 6, 8, 12, 16, 24, 36, 60], "max_steps": 50, "tol": 1e-6, "escapes": 3,
            "escape_steps": 100, "perturbation": 1e-3, "escape_threshold": 1e-3, "krylov_dim": 20,
            "damping_rel": 1e-3},
    "full": {"dataset": "mnist", "num_train": 10000, "pca": 32, "widths": [16], "weight_decay": 1e-3, "seeds": 32,
             "epochs": 200, "learning_rate": 0.05, "batch_size": 64, "snapshot_epochs": 2,
             "snapshots": [0, 1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 100], "max_steps": 200, "tol": 1e-6,
             "escapes": 10, "escape_steps": 300, "perturbation": 1e-3, "escape_threshold": 1e-3, "krylov_dim": 40,
             "damping_rel": 1e-3},
}

METHODS = ("gd", "newton", "sfn", "sfn_krylov")


def _dataset(config: dict) -> data.Dataset:
  if config["dataset"] == "digits":
    ds = data.load("digits", flatten=True, num_train=config["num_train"], subset_seed=config["seed"])
  else:
    if config.get("data_dir") is None:
      raise FileNotFoundError(f"preset {config['preset']!r} uses {config['dataset']!r}, read from disk: pass "
                              "--data-dir DIR (make ... DATA_DIR=DIR) with the MNIST IDX files in DIR")
    ds = data.load(config["dataset"], data_dir=config["data_dir"], flatten=True, num_train=config["num_train"],
                   subset_seed=config["seed"])
  return features.pca(ds, config["pca"], whiten=True)


def _escape_figure(escapes: list[dict], path: str) -> None:
  fig, axes = plt.subplots(1, max(len(escapes), 1), figsize=(5 * max(len(escapes), 1), 3.8), squeeze=False)
  for ax, e in zip(axes[0], escapes):
    for m in METHODS:
      ax.plot(e["losses"][m] - e["losses"][m][0], label=f"{m} (escape {e['steps'][m]})")
    ax.set(xlabel="step", ylabel="loss - loss at start", title=f"saddle: loss {e['loss']:.3g}, index {e['index']:.3f}")
    ax.set_yscale("symlog", linthresh=1e-4)
    ax.legend(fontsize=7)
  plot.save(fig, path, dpi=90)


def main(config: dict, out_dir: str) -> Report:
  seed = config["seed"]
  root = jax.random.key(seed)
  ds = _dataset(config)
  n_in, widths, wd = ds.x_train.shape[1], list(config["widths"]), config["weight_decay"]
  init = lambda k: models.build("mlp", k, in_features=n_in, widths=widths, out_features=ds.num_classes,
                                activation="tanh")
  spe = ds.num_train // config["batch_size"]
  t0 = time.perf_counter()
  _, _, hist = train.train_many(jax.random.split(jax.random.fold_in(root, 0), config["seeds"]), init, ds,
                                optimizer="sgd", learning_rate=config["learning_rate"], batch_size=config["batch_size"],
                                epochs=config["epochs"], weight_decay=wd, snapshot_every=spe * config["snapshot_epochs"])
  train_wall = time.perf_counter() - t0
  num_snap = jax.tree.leaves(hist.trajectory)[0].shape[1]
  snaps = [t for t in config["snapshots"] if t < num_snap]

  # ---------------------------------------------------------------- critical points (float64)
  t0 = time.perf_counter()
  rec = {k: [] for k in ("seed", "epoch", "start_loss", "loss", "grad_norm", "index", "steps", "status")}
  eigs, points = [], []
  with jax.enable_x64(True):
    base, _ = js.Objective.from_nnx(init(jax.random.key(0)), data=(np.asarray(ds.x_train, np.float64), ds.y_train),
                                    batch_size=None, name=f"{ds.name}-train")
    obj = regularize.with_l2(base, wd)
    for s in range(config["seeds"]):
      for t in snaps:
        start = js.tree.astype(jax.tree.map(lambda a: a[s, t], hist.trajectory), jnp.float64)
        cp = critical.find_critical_point(obj, start, max_steps=config["max_steps"], tol=config["tol"])
        for k, v in (("seed", s), ("epoch", t * config["snapshot_epochs"]), ("start_loss", float(obj.value(start))),
                     ("loss", cp.loss), ("grad_norm", cp.grad_norm), ("index", cp.index), ("steps", cp.steps),
                     ("status", cp.status)):
          rec[k].append(v)
        eigs.append(np.asarray(cp.eigenvalues))
        points.append(cp.params)
    search_wall = time.perf_counter() - t0
    status = np.array(rec["status"])
    ok = status == "converged"
    loss, index = np.array(rec["loss"]), np.array(rec["index"])
    eigs = np.stack(eigs)

    # ---------------------------------------------------------------- escaping saddles
    t0 = time.perf_counter()
    saddles = np.flatnonzero(ok & (index > 0))
    order = saddles[np.argsort(loss[saddles])[::-1]]
    chosen = [int(order[j]) for j in np.unique(np.linspace(0, len(order) - 1, config["escapes"]).round().astype(int))
              ] if len(order) else []
    escapes = []
    for j, i in enumerate(chosen):
      lam = eigs[i]
      lmax = float(np.max(np.abs(lam)))
      v = js.tree.normal_like(jax.random.fold_in(jax.random.fold_in(root, 1), j), points[i])
      p0 = js.tree.add(points[i], js.tree.scale(config["perturbation"] / js.tree.norm(v), v))
      damping = config["damping_rel"] * lmax
      e = {"loss": float(loss[i]), "index": float(index[i]), "lambda_min": float(lam.min()), "lambda_max": lmax,
           "losses": {}, "steps": {}}
      for m in METHODS:
        r = critical.escape_saddle(obj, p0, m, config["escape_steps"], lr=1.0 / lmax if m == "gd" else 1.0,
                                   damping=0.0 if m == "gd" else damping,
                                   krylov_dim=config["krylov_dim"] if m == "sfn_krylov" else None,
                                   threshold=config["escape_threshold"])
        e["losses"][m] = np.asarray(r.losses)
        e["steps"][m] = r.escape_step
      escapes.append(e)
    escape_wall = time.perf_counter() - t0

  # ---------------------------------------------------------------- statistics and checks
  n_ok = int(ok.sum())
  counts = {k: int(np.sum(status == k)) for k in ("converged", "gradient_flat", "max_steps")}
  l_ok, i_ok = loss[ok], index[ok]
  # one representative per distinct critical value (the same saddle reached from several starts, or permuted
  # copies of one point, share loss and index): duplicates must not inflate the rank correlation
  distinct: list[int] = []
  for i in np.argsort(l_ok):
    if not any(abs(l_ok[i] - l_ok[j]) <= 1e-9 * max(1.0, abs(l_ok[j])) and i_ok[i] == i_ok[j] for j in distinct):
      distinct.append(int(i))
  l_d, i_d = l_ok[distinct], i_ok[distinct]
  n_d = len(distinct)
  rho_all = stats.spearman(l_ok, i_ok) if n_ok >= 3 else float("nan")
  rho = stats.spearman(l_d, i_d) if n_d >= 3 else float("nan")
  lo, hi = (float(l_ok.min()), float(l_ok.max())) if n_ok else (np.nan, np.nan)
  cutoff = lo + 0.1 * (hi - lo)
  minima = l_ok[i_ok == 0]
  arrays = {k: np.asarray(v) for k, v in rec.items() if k != "status"}
  arrays.update(status=status.astype("U16"), converged=ok, eigenvalues=eigs, train_loss=hist.train_loss,
                test_accuracy=hist.test_accuracy)
  for j, e in enumerate(escapes):
    for m in METHODS:
      arrays[f"escape{j}_{m}"] = e["losses"][m]
  jio.save_result(out_dir, arrays, {
      "config": config, "environment": jio.environment(), "train_wall_s": train_wall, "search_wall_s": search_wall,
      "escape_wall_s": escape_wall, "status_counts": counts, "spearman_distinct": rho, "spearman_all": rho_all, "num_distinct": n_d, "dataset": ds.info,
      "escapes": [{k: v for k, v in e.items() if k != "losses"} for e in escapes]})

  # ---------------------------------------------------------------- figures
  fig, ax = plt.subplots(figsize=(5.5, 4.2))
  sc = ax.scatter(l_ok, i_ok, c=np.array(rec["epoch"])[ok], cmap="viridis", s=22)
  fig.colorbar(sc, ax=ax, label="epoch of the start snapshot")
  ax.axvline(cutoff, color="k", ls=":", lw=1, label="lowest 10% of the loss range")
  ax.set(xlabel="loss at the critical point (train CE + L2)", ylabel="index (fraction of negative eigenvalues)",
         title=f"{n_ok} critical points ({n_d} distinct), Spearman rho = {rho:.3f}")
  ax.legend(fontsize=7)
  plot.save(fig, os.path.join(out_dir, "loss_vs_index.png"), dpi=100)
  if n_ok:
    by_loss = np.flatnonzero(ok)[np.argsort(l_ok)]
    picks = {"low": by_loss[0], "medium": by_loss[len(by_loss) // 2], "high": by_loss[-1]}
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.6))
    for ax, (name, i) in zip(axes, picks.items()):
      lam = eigs[i]
      ax.hist(np.sign(lam) * np.log10(1 + np.abs(lam) / 1e-4), bins=40, color="tab:blue")
      ax.axvline(0, color="k", lw=0.8)
      ax.set(title=f"{name} loss {loss[i]:.3g}: index {index[i]:.3f}",
             xlabel="sign(lambda) log10(1 + |lambda| / 1e-4)", ylabel="count")
    plot.save(fig, os.path.join(out_dir, "eigenvalue_histograms.png"), dpi=90)
  if escapes:
    _escape_figure(escapes, os.path.join(out_dir, "saddle_escape.png"))

  rep = Report("saddle_points", seed=seed, preset=config["preset"],
               claim="Critical points of a small network's training loss with high error are saddles: the index "
                     "(fraction of negative Hessian eigenvalues) grows with the loss, only low-loss points are "
                     "minima, and saddle-free Newton leaves a saddle faster than gradient descent (Dauphin et al. 2014).")
  rep.setup += [
      f"Data: {ds.name} ({ds.num_train} train examples, subset seed = run seed; {config['pca']} whitened principal "
      f"components fitted on them, `features.pca`, explained variance {ds.info['pca']['explained_variance_ratio']:.3f}).",
      f"Model: MLP {n_in}-{'-'.join(map(str, widths))}-{ds.num_classes}, tanh, "
      f"{js.tree.size(points[0]) if points else 0} parameters; objective = mean cross-entropy + "
      f"({wd:g}/2)||theta||^2 (`regularize.with_l2`: bounded sublevel sets, so critical points exist at finite weights).",
      f"Trajectories: {config['seeds']} SGD runs (lr {config['learning_rate']}, batch {config['batch_size']}, weight "
      f"decay {wd:g}, {config['epochs']} epochs, `train.train_many`, {train_wall:.1f} s); starts = snapshots at epochs "
      f"{', '.join(str(t * config['snapshot_epochs']) for t in snaps)} of each run ({len(status)} starts).",
      f"Search: `critical.find_critical_point` (Levenberg-Marquardt on 1/2||grad f||^2, dense float64 Hessian), "
      f"{config['max_steps']} steps, kept iff ||grad f|| < {config['tol']:g}; index = share of eigenvalues below "
      f"the numerical-rank threshold -n eps max|lambda| (`critical.index`); {search_wall:.1f} s.",
      f"Escape: from {len(escapes)} saddles (highest to lowest loss), perturbed by {config['perturbation']:g} along a "
      f"random unit direction, {config['escape_steps']} steps of gd (lr 1/max|lambda|), damped Newton, saddle-free "
      f"Newton (dense |H|) and SFN in a {config['krylov_dim']}-dim Krylov subspace (damping "
      f"{config['damping_rel']:g} max|lambda|); escape = first step with loss <= start - "
      f"{config['escape_threshold']:g} (-1: never); {escape_wall:.1f} s.",
  ]
  rep.check("Spearman rho(loss, index) >= 0.7 (distinct critical points)", n_d >= 3 and rho >= 0.7,
            f"rho = {rho:.3f} over {n_d} distinct points ({rho_all:.3f} over all {n_ok} converged)")
  rep.check("every index-0 point lies in the lowest 10% of the loss range (needs >= 1 index-0 point)",
            minima.size > 0 and bool(np.all(minima <= cutoff)),
            (f"{minima.size} index-0 points, max loss {float(minima.max()):.4g}" if minima.size else
             "no index-0 point among the converged ones (the criterion would hold vacuously: counted as FAIL)")
            + f" vs cutoff {cutoff:.4g} (range {lo:.4g} .. {hi:.4g})")
  steps_of = lambda e, m: e["steps"][m] if e["steps"][m] >= 0 else config["escape_steps"] + 1
  faster = [steps_of(e, "sfn") < steps_of(e, "gd") for e in escapes]
  rep.check("saddle-free Newton leaves the saddle in fewer steps than gradient descent", bool(escapes) and all(faster),
            "; ".join(f"loss {e['loss']:.3g}: sfn {e['steps']['sfn']} vs gd {e['steps']['gd']}" for e in escapes)
            or "no saddle found")
  rep.section("Search outcome", table(["quantity", "value"], [
      ("starts", len(status)), ("converged (||grad f|| < tol)", counts["converged"]),
      ("gradient-flat (excluded)", counts["gradient_flat"]), ("step budget exhausted (excluded)", counts["max_steps"]),
      ("index-0 points (minima)", int(np.sum(i_ok == 0))), ("saddles (index > 0)", int(np.sum(i_ok > 0))),
      ("loss range of critical points", f"{lo:.4g} .. {hi:.4g}"),
      ("index range", f"{i_ok.min():.3f} .. {i_ok.max():.3f}" if n_ok else "n/a"),
      ("distinct critical points (loss, index)", n_d),
      ("Spearman rho(loss, index): distinct / all converged", f"{rho:.4g} / {rho_all:.4g}"),
      ("Pearson r(loss, index): distinct", stats.pearson(l_d, i_d) if n_d >= 3 else float("nan")),
      ("final SGD train loss (mean over runs)", float(np.mean(hist.train_loss[:, -1]))),
  ]))
  rep.section("Critical points", table(
      ["seed", "epoch", "start loss", "loss", "||grad f||", "index", "steps", "status"],
      [(rec["seed"][i], rec["epoch"][i], rec["start_loss"][i], rec["loss"][i], rec["grad_norm"][i], rec["index"][i],
        rec["steps"][i], rec["status"][i]) for i in range(len(status))]))
  if escapes:
    rep.section("Escaping saddles (steps to a loss drop of "
                f"{config['escape_threshold']:g}; -1 = not within {config['escape_steps']})", table(
                    ["saddle loss", "index", "lambda_min", "max|lambda|", *METHODS,
                     *(f"{m}: min / final loss change" for m in METHODS)],
                    [(e["loss"], e["index"], e["lambda_min"], e["lambda_max"], *(e["steps"][m] for m in METHODS),
                      *(f"{fmt(float(np.min(e['losses'][m] - e['losses'][m][0])))} / "
                        f"{fmt(float(e['losses'][m][-1] - e['losses'][m][0]))}" for m in METHODS))
                     for e in escapes]))
    blown = [e for e in escapes if e["losses"]["sfn"][-1] > e["losses"]["sfn"][0]]
    if blown:
      rep.notes.append(
          f"Saddle-free Newton with a unit step and damping {config['damping_rel']:g} max|lambda| leaves every saddle "
          f"first, but ends above its starting loss at {len(blown)}/{len(escapes)} saddles (final change up to "
          f"{max(float(e['losses']['sfn'][-1] - e['losses']['sfn'][0]) for e in blown):.3g}): once away from the "
          "saddle, |H|^-1 takes huge steps along near-flat directions. The escape check measures the first "
          "descent only; a practical SFN needs larger damping or a line search / trust region (Dauphin et al. "
          "tuned the damping).")
  rep.figure("loss_vs_index.png", "Loss vs index of every converged critical point (colour: epoch of the start)")
  if n_ok:
    rep.figure("eigenvalue_histograms.png", "Hessian eigenvalues at the lowest-, median- and highest-loss critical "
                                            "point (signed log scale)")
  if escapes:
    rep.figure("saddle_escape.png", "Loss change from a point next to a saddle: gd, damped Newton, SFN, Krylov SFN")
  rep.notes += [
      "Uncalibrated (papers.md §4): the paper-scale setting asks for >= 200 critical points; this preset collects "
      f"{n_ok} ({n_d} distinct) from {len(status)} starts within its time budget. Only converged points enter "
      "the statistics; most starts exhaust the step budget with ||grad f|| ~ 1e-4..1e-3 (slow LM progress along flat "
      "directions), which also keeps minima out of reach here.",
      f"Deviations for CPU cost: a {ds.num_train}-example training subset (dense Hessians cost O(N) each) and an L2 "
      f"term ({wd:g}) without which the searches drifted with ||grad f|| ~ 1e-3 (minima of unregularised "
      "cross-entropy lie at infinity).",
  ]
  return rep


if __name__ == "__main__":
  sys.exit(cli.run_experiment(sys.modules[__name__]))
