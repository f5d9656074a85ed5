"""equal_minima: minima of wider networks and larger spin glasses concentrate in a narrow band of equally good values.

Choromanska et al. (2015), "The Loss Surfaces of Multilayer Networks". Two
ensembles of descents:

* one-hidden-layer ReLU networks of growing width, many seeds each trained
  at once (``train.train_many``, SGD, a fixed epoch budget): the spread of the
  final test losses shrinks with width and the train/test correlation weakens
  (the paper's histograms and Table 1);
* the H = 3 spherical spin glass of growing size N, several disorder samples
  x random starts of Riemannian gradient descent (``models.spin_glass``,
  ``spin_glass.descend_ensemble``): energies per spin concentrate, their
  N^(-2/3) extrapolation lands in the band [-E0, -E_inf] and the end points
  are minima (no negative tangent-space Hessian eigenvalue, float64).

Run: ``python -m experiments.equal_minima --preset smoke|cpu|full --seed 0 [--data-dir DIR]``.
"""

from __future__ import annotations

import os
import sys
import time

import jax
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from jaxscape import experiment, plot, data, io, models, stats, train  # noqa: E402
from jaxscape.models import spin_glass as sg  # noqa: E402
from jaxscape.experiment import Report, fmt, table  # noqa: E402

P = 3
E_INF = sg.e_infinity(P)
E_0 = sg.E0[P]

CONFIGS = {
    "smoke": {
        "data": "digits", "downsample": None, "hidden": [4, 16], "seeds": 3, "epochs": 2,
        "learning_rate": 0.05, "batch_size": 32, "ratio_widths": [4, 16],
        "spin_n": [8, 12], "disorder": 2, "starts": 4, "sg_lr": 0.1, "sg_tol": 1e-4,
        "sg_max_steps": 2000, "sg_round_steps": 500, "hessian_batch": 4,
    },
    "cpu": {
        "data": "digits", "downsample": None, "hidden": [2, 4, 8, 16, 32, 64, 128, 256], "seeds": 20,
        "epochs": 300, "learning_rate": 0.05, "batch_size": 32, "ratio_widths": [4, 256],
        "spin_n": [20, 40, 80, 120], "disorder": 4, "starts": 40, "sg_lr": 0.1, "sg_tol": 1e-4,
        "sg_max_steps": 10000, "sg_round_steps": 600, "hessian_batch": 8,
    },
    "full": {
        "data": "mnist", "downsample": 10, "hidden": [25, 50, 100, 250, 500], "seeds": 1000, "epochs": 200,
        "learning_rate": 0.05, "batch_size": 32, "ratio_widths": [25, 500],
        "spin_n": [25, 50, 100, 250, 500], "disorder": 10, "starts": 100, "sg_lr": 0.1, "sg_tol": 1e-4,
        "sg_max_steps": 20000, "sg_round_steps": 1000, "hessian_batch": 2,
    },
}


def _load(config: dict) -> data.Dataset:
  if config["data"] == "digits":
    return data.load("digits", flatten=True)
  if not config.get("data_dir"):
    raise FileNotFoundError(f"preset {config['preset']!r} trains on {config['data']!r} read from disk: pass "
                            "--data-dir DIR (DATA_DIR=DIR with make) holding the MNIST IDX files "
                            "(train-images-idx3-ubyte[.gz], ...); nothing is downloaded")
  return data.load(config["data"], data_dir=config["data_dir"], downsample=config["downsample"], flatten=True)


def _networks(key: jax.Array, config: dict, ds: data.Dataset) -> dict[str, np.ndarray]:
  """Final train/test loss and accuracy of ``seeds`` nets per hidden width, each width in one vmap."""
  cfg = train.TrainConfig(optimizer="sgd", learning_rate=config["learning_rate"], batch_size=config["batch_size"],
                          epochs=config["epochs"])
  d_in = int(np.prod(ds.input_shape))
  out = {k: [] for k in ("train_loss", "test_loss", "train_accuracy", "test_accuracy", "params")}
  for h in config["hidden"]:
    init = lambda k, h=h: models.build("mlp", k, in_features=d_in, widths=[h], out_features=ds.num_classes)
    keys = jax.random.split(jax.random.fold_in(key, h), config["seeds"])
    params, _, hist = train.train_many(keys, init, ds, cfg)
    for k in ("train_loss", "test_loss", "train_accuracy", "test_accuracy"):
      out[k].append(np.asarray(getattr(hist, k))[:, -1])
    out["params"].append(sum(int(np.prod(a.shape[1:])) for a in jax.tree.leaves(params)))
  return {k: np.asarray(v) for k, v in out.items()}


def _spin_glass(key: jax.Array, config: dict) -> dict[str, np.ndarray]:
  """Descents from ``disorder x starts`` random points per N, and the tangent spectra at their end points."""
  res = {k: [] for k in ("energy", "grad_norm", "steps", "converged", "min_eig", "index")}
  eigs = {}
  for n in config["spin_n"]:
    kx, kw = jax.random.split(jax.random.fold_in(key, n))
    X = jax.vmap(lambda k: sg.disorder(k, n, P))(jax.random.split(kx, config["disorder"]))
    w0 = jax.vmap(jax.vmap(lambda k: sg.random_point(k, n)))(
        jax.random.split(kw, (config["disorder"], config["starts"])))
    out = sg.descend_ensemble(w0, X, lr=config["sg_lr"], tol=config["sg_tol"],
                                  max_steps=config["sg_max_steps"], round_steps=config["sg_round_steps"])
    ev = sg.tangent_spectrum(out.w, X, batch_size=config["hessian_batch"])
    for k in ("energy", "grad_norm", "steps", "converged"):
      res[k].append(np.asarray(getattr(out, k)).ravel())
    res["min_eig"].append(ev[..., 0].ravel())
    res["index"].append((ev < 0).sum(-1).ravel())
    eigs[f"sg_eigs_n{n}"] = ev.reshape(-1, n - 1)
  return {**{f"sg_{k}": np.asarray(v) for k, v in res.items()}, **eigs}


def _figures(out_dir: str, config: dict, net: dict, sgr: dict, fit: tuple[float, float], spread: dict,
             corr: np.ndarray) -> list[tuple[str, str]]:
  hidden, ns = np.asarray(config["hidden"]), np.asarray(config["spin_n"])
  colors = plt.cm.viridis(np.linspace(0, 0.9, len(hidden)))
  fig, axes = plt.subplots(2, 2, figsize=(11, 8))
  ax = axes[0, 0]
  lo, hi = np.nanmin(net["test_loss"]), np.nanmax(net["test_loss"])
  bins = np.geomspace(max(lo, 1e-4) * 0.95, hi * 1.05, 50)
  for c, h, v in zip(colors, hidden, net["test_loss"]):
    ax.hist(v, bins=bins, histtype="stepfilled", alpha=0.45, color=c, label=f"h = {h}")
  ax.set_xscale("log")
  ax.set_xlabel("final test loss (NLL)")
  ax.set_ylabel("runs")
  ax.set_title(f"networks: {config['seeds']} seeds per width")
  ax.legend(fontsize=7, ncol=2)
  ax = axes[0, 1]
  energies = sgr["sg_energy"]
  bins = np.linspace(min(energies.min(), -E_0) - 0.02, energies.max() + 0.02, 60)
  sc = plt.cm.plasma(np.linspace(0, 0.85, len(ns)))
  for c, n, e in zip(sc, ns, energies):
    ax.hist(e, bins=bins, histtype="stepfilled", alpha=0.45, color=c, label=f"N = {n}")
  ax.axvline(-E_0, color="k", ls="-", lw=1, label=f"-E0 = {-E_0:.4f}")
  ax.axvline(-E_INF, color="k", ls="--", lw=1, label=f"-E∞ = {-E_INF:.4f}")
  ax.set_xlabel("energy per spin H/N at the GD end point")
  ax.set_ylabel("runs")
  ax.set_title(f"spin glass H = {P}: {config['disorder']} disorders x {config['starts']} starts")
  ax.legend(fontsize=7)
  ax = axes[1, 0]
  ax.loglog(hidden, spread["std"], "o-", color="C0", label="std of test loss")
  ax.set_xlabel("hidden units")
  ax.set_ylabel("std of final test loss", color="C0")
  ax.set_xscale("log", base=2)
  ax2 = ax.twinx()
  ax2.plot(hidden, corr, "s--", color="C3", label="Pearson ρ(train, test)")
  ax2.set_ylabel("Pearson ρ(train loss, test loss)", color="C3")
  ax2.set_ylim(-1.05, 1.05)
  ax.set_title("spread and train/test correlation vs width")
  ax = axes[1, 1]
  x = ns.astype(float) ** (-2 / 3)
  ax.errorbar(x, energies.mean(1), yerr=energies.std(1, ddof=1), fmt="o", color="C2", capsize=3,
              label="mean ± std")
  xx = np.linspace(0, x.max() * 1.05, 50)
  ax.plot(xx, fit[0] + fit[1] * xx, "-", color="C2", lw=1, label=f"fit a + b N^(-2/3): a = {fit[0]:.3f}")
  ax.axhline(-E_0, color="k", lw=1, label="-E0")
  ax.axhline(-E_INF, color="k", ls="--", lw=1, label="-E∞")
  ax.set_xlabel("N^(-2/3)")
  ax.set_ylabel("energy per spin")
  ax.set_title("finite-size extrapolation")
  ax.legend(fontsize=7)
  plot.save(fig, os.path.join(out_dir, "overview.png"), dpi=90)

  fig, ax = plt.subplots(figsize=(6, 4))
  for c, n, m in zip(sc, ns, sgr["sg_min_eig"]):
    ax.hist(m, bins=40, histtype="step", color=c, label=f"N = {n}")
  ax.axvline(0, color="k", lw=1)
  ax.set_xlabel("smallest tangent-space Hessian eigenvalue at the end point (float64)")
  ax.set_ylabel("runs")
  ax.legend(fontsize=8)
  plot.save(fig, os.path.join(out_dir, "min_eigenvalue.png"), dpi=90)
  return [("overview.png", "Top: final test losses per width (left, log scale) and spin-glass energies per N with "
                           "-E0 and -E∞ (right). Bottom: std of test loss and Pearson ρ(train, test) vs width "
                           "(left); mean energy vs N^(-2/3) with the extrapolation (right)."),
          ("min_eigenvalue.png", "Smallest eigenvalue of the Riemannian Hessian at each spin-glass end point.")]


def main(config: dict, out_dir: str) -> Report:
  root = jax.random.key(config["seed"])
  hidden, ns = list(config["hidden"]), list(config["spin_n"])
  ds = _load(config)

  t0 = time.perf_counter()
  net = _networks(jax.random.fold_in(root, 0), config, ds)
  t_net = time.perf_counter() - t0
  t0 = time.perf_counter()
  sgr = _spin_glass(jax.random.fold_in(root, 1), config)
  t_sg = time.perf_counter() - t0

  # networks: spread, Table-1 correlations, poor runs
  spread = stats.spread_by_group(net["test_loss"])
  train_spread = stats.spread_by_group(net["train_loss"])
  corr = np.asarray([stats.pearson(a, b) for a, b in zip(net["train_loss"], net["test_loss"])])
  poor = stats.poor_fraction(net["train_loss"], net["train_loss"][-1])
  w_small, w_large = config["ratio_widths"]
  std_small, std_large = spread["std"][hidden.index(w_small)], spread["std"][hidden.index(w_large)]
  rho_std = stats.spearman(hidden, spread["std"])
  rho_corr = stats.spearman(hidden, corr)

  # spin glass: concentration, extrapolation, low outliers, index
  e = sgr["sg_energy"]
  e_mean, e_std = e.mean(1), e.std(1, ddof=1)
  fit = stats.finite_size_fit(ns, e_mean, -2 / 3)
  floor = -E_0 - 0.02
  below = e < floor
  band = (-E_0 - 0.02, -E_INF + 0.03)
  index_last = sgr["sg_index"][-1]
  conv = sgr["sg_converged"]

  arrays = {"hidden": np.asarray(hidden), "spin_n": np.asarray(ns), "num_params": net["params"],
            **{k: v for k, v in net.items() if k != "params"}, **sgr}
  meta = {"config": config, "environment": io.environment(), "experiment": "equal_minima",
          "p": P, "e_infinity": E_INF, "e_0": E_0, "seconds": {"networks": t_net, "spin_glass": t_sg},
          "dataset": {"name": ds.name, "num_train": ds.num_train, "num_test": ds.num_test},
          "key_paths": {"network": "fold_in(key(seed), 0) -> fold_in(., hidden) -> split(seeds) -> (init, data)",
                        "spin_glass": "fold_in(key(seed), 1) -> fold_in(., N) -> split -> (disorder, starts)"}}
  io.save_result(out_dir, arrays, meta)
  figures = _figures(out_dir, config, net, sgr, fit, spread, corr)

  rep = Report("equal_minima", seed=config["seed"], preset=config["preset"],
               claim="Minima of larger networks / spin glasses concentrate in a narrow band of equally good values "
                     "(Choromanska et al. 2015): the spread of final losses falls with size, train and test loss "
                     "decorrelate, and spin-glass GD energies concentrate just above the ground-state band "
                     "[-E0, -E∞] at local minima.")
  rep.setup += [
      f"Networks: {ds.name} ({ds.num_train} train / {ds.num_test} test, {int(np.prod(ds.input_shape))} inputs), "
      f"one hidden ReLU layer h ∈ {hidden}, {config['seeds']} seeds per width trained at once (`train.train_many`); "
      f"SGD lr {config['learning_rate']}, batch {config['batch_size']}, a fixed {config['epochs']} epochs; "
      "losses = full-split NLL in eval mode at the end.",
      f"Spin glass: H = {P}, N ∈ {ns}, {config['disorder']} disorder samples x {config['starts']} random starts per N; "
      f"Riemannian GD lr {config['sg_lr']} until the tangent-gradient norm < {config['sg_tol']:g} "
      f"(at most {config['sg_max_steps']} steps, rounds of {config['sg_round_steps']}); energy per spin H/N; "
      f"E∞ = 2√(2/3) = {E_INF:.5f}, E0 = {E_0:.5f}. Riemannian Hessian on the tangent space at every end point, float64.",
      f"Wall time: networks {t_net:.1f} s, spin glass {t_sg:.1f} s on {jax.device_count()} "
      f"{jax.devices()[0].device_kind} device(s).",
  ]
  rep.check(f"test-loss spread shrinks ≥ 10x from h = {w_small} to h = {w_large}", std_small >= 10 * std_large,
            f"std {fmt(std_small)} vs {fmt(std_large)}: ratio "
            f"{fmt(std_small / std_large) if std_large > 0 else 'inf'} (need ≥ 10)")
  rep.check("spread falls with width: Spearman ρ(h, std) ≤ -0.9", rho_std <= -0.9, f"ρ = {fmt(rho_std)}")
  rep.check("train/test correlation falls with width: Spearman ρ(h, Pearson(train, test)) ≤ -0.7", rho_corr <= -0.7,
            f"ρ = {fmt(rho_corr)}; Pearson per width {', '.join(fmt(c, 3) for c in corr)}")
  rep.check("spin-glass energy spread strictly decreases with N", bool(np.all(np.diff(e_std) < 0)),
            f"std(e) = {', '.join(fmt(s) for s in e_std)} for N = {ns}")
  rep.check("N^(-2/3) extrapolation a lies in [-E0 - 0.02, -E∞ + 0.03]", band[0] <= fit[0] <= band[1],
            f"a = {fit[0]:.4f} (b = {fit[1]:.3f}); band [{band[0]:.4f}, {band[1]:.4f}]")
  rep.check("< 1% of runs below -E0 - 0.02", below.mean() < 0.01,
            f"{int(below.sum())}/{below.size} runs ({100 * below.mean():.2f}%) below {floor:.4f}; lowest e = "
            f"{e.min():.4f}")
  rep.check(f"end points at N = {ns[-1]} are minima: no negative tangent-Hessian eigenvalue (float64)",
            bool(np.all(index_last == 0)),
            f"{int((index_last > 0).sum())}/{index_last.size} end points with index > 0; smallest eigenvalue "
            f"{sgr['sg_min_eig'][-1].min():.3g}")

  rep.section("Networks: final losses per width (paper Table 1 = Pearson column)", table(
      ["hidden", "params", "mean test NLL", "std test NLL", "mean train NLL", "std train NLL", "mean test acc",
       "Pearson ρ(train, test)", "poor runs"],
      [(h, p, m, s, mt, st, a, c, f"{fr:.2f}") for h, p, m, s, mt, st, a, c, fr in zip(
          hidden, net["params"], spread["mean"], spread["std"], train_spread["mean"], train_spread["std"],
          net["test_accuracy"].mean(1), corr, poor)]))
  rep.section("Spin glass: energies per spin at the GD end points", table(
      ["N", "runs", "mean e", "std e", "min e", "max e", f"runs < {floor:.3f}", "converged", "median steps",
       "max index", "smallest Hessian eig"],
      [(n, e_row.size, e_row.mean(), e_row.std(ddof=1), e_row.min(), e_row.max(), int(b.sum()), f"{c.mean():.3f}",
        int(np.median(st)), int(ix.max()), me.min()) for n, e_row, b, c, st, ix, me in zip(
          ns, e, below, conv, sgr["sg_steps"], sgr["sg_index"], sgr["sg_min_eig"])]))
  rep.section("Reported, not gated", "\n".join([
      f"- Fraction of poor runs (train NLL > 2 x median train NLL at h = {hidden[-1]}) per width: "
      + ", ".join(f"h={h}: {fr:.2f}" for h, fr in zip(hidden, poor))
      + f" (non-increasing in h: {fmt(bool(np.all(np.diff(poor) <= 0)))}).",
      f"- Mean spin-glass energy decreases with N: {fmt(bool(np.all(np.diff(e_mean) < 0)))} "
      f"({', '.join(f'{m:.4f}' for m in e_mean)}).",
      f"- Spin-glass runs converged to the tolerance: {int(conv.sum())}/{conv.size}; largest final tangent-gradient "
      f"norm {sgr['sg_grad_norm'].max():.2e}.",
  ]))
  for path, caption in figures:
    rep.figure(path, caption)
  rep.notes += [
      "Finite-N GD minima sit above -E∞ (papers.md §3 calibration); the gate is therefore the N^(-2/3) "
      "extrapolation, not 'all energies inside [-E0, -E∞]'.",
      "The paper's Table 1 (MNIST 10x10, n1 = 25..500, 1000 nets): ρ = 0.7616, 0.6861, 0.5983, 0.5302, 0.4081; "
      f"here: {ds.name}, h = {hidden[0]}..{hidden[-1]}, {config['seeds']} nets per width.",
  ]
  rep.notes.append(f"A Pearson ρ over {config['seeds']} runs has a standard error of about (1 - ρ²)/√(runs - 1) "
                   f"(≈ {0.75 / np.sqrt(max(config['seeds'] - 1, 1)):.2f} at ρ = 0.5): the per-width values are noisy, "
                   "the check is the rank trend over all widths.")
  if config["preset"] == "smoke":
    rep.notes.append("The smoke preset only exercises the pipeline (few widths, seeds, epochs and tiny N): its "
                     "verdicts say nothing about the claim.")
  if not conv.all():
    rep.notes.append(f"{int((~conv).sum())} spin-glass runs hit the step budget before the tolerance; they are "
                     "included in every statistic.")
  return rep


if __name__ == "__main__":
  sys.exit(experiment.run(sys.modules[__name__]))
