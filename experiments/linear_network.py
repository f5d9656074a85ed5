"""linear_network: a deep linear net's loss is convex in its end-to-end product, non-convex in its factors; a sigmoid adds more.

A deep linear network ``x -> x W_1 ... W_L`` on a synthetic regression task
computes the same function as the single matrix ``W = W_1 ... W_L``, so its
mean-squared error depends on the factors only through ``W`` (a convex
quadratic in ``W``). The non-convexity of the loss in the parameters comes
from the factorisation: the origin is a critical point with negative
curvature (a saddle) and whole manifolds of factorisations share one loss.
Swapping the identity activation for a sigmoid in the same architecture adds
the non-convexity of the non-linearity. Exact checks run in float64
(``jax.enable_x64``); dense Hessians come from ``jaxscape.critical``; the 2-D
slices and their projected curvature from ``loss_surface(curvature="plane")``.

Run: ``make experiment NAME=linear_network [PRESET=smoke|cpu|full] [SEED=0]``.
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
from jaxscape import experiment, plot, critical, data, models, stats, train  # noqa: E402
from jaxscape import io as jio  # noqa: E402
from jaxscape.experiment import Report, fmt, table  # noqa: E402

CONFIGS = {
    "smoke": {"dim": 4, "out_dim": 2, "train_size": 64, "test_size": 32, "widths": [4], "deep_widths": [4, 4],
              "epochs": 5, "learning_rate": 1e-2, "batch_size": 16, "grid": 7, "span": 1.0, "product_tol": 1e-10,
              "rel_curvature": 0.01, "wide_spans": [], "wide_grid": 5},
    "cpu": {"dim": 8, "out_dim": 4, "train_size": 256, "test_size": 128, "widths": [8], "deep_widths": [8, 8],
            "epochs": 300, "learning_rate": 3e-3, "batch_size": 32, "grid": 31, "span": 1.0, "product_tol": 1e-10,
            "rel_curvature": 0.01, "wide_spans": [3.0, 10.0], "wide_grid": 21},
    "full": {"dim": 32, "out_dim": 16, "train_size": 4096, "test_size": 1024, "widths": [32], "deep_widths": [32, 32, 32],
             "epochs": 500, "learning_rate": 1e-3, "batch_size": 128, "grid": 101, "span": 1.0, "product_tol": 1e-10,
             "rel_curvature": 0.01, "wide_spans": [3.0, 10.0], "wide_grid": 51},
}


def _kernels(params: dict) -> list[jax.Array]:
  return [params["layers"][k]["kernel"] for k in sorted(params["layers"], key=int)] + [params["head"]["kernel"]]


def _with_kernels(params: dict, kernels: list[jax.Array]) -> dict:
  layers = {k: {"kernel": kernels[i]} for i, k in enumerate(sorted(params["layers"], key=int))}
  return {"layers": layers, "head": {"kernel": kernels[-1]}}


def _refactor(key: jax.Array, params: dict) -> dict:
  """Another factorisation with the same product: ``W_i -> A_{i-1}^-1 W_i A_i`` with random invertible ``A_i``.

  ``A_i = Q_i diag(s_i)`` (``Q_i`` orthogonal, ``s_i`` log-uniform in [1/2, 2]) between every pair of layers.
  """
  ks = _kernels(params)
  out = list(ks)
  for i in range(len(ks) - 1):
    h = ks[i].shape[1]
    kq, ks_ = jax.random.split(jax.random.fold_in(key, i))
    q, _ = jnp.linalg.qr(jax.random.normal(kq, (h, h), ks[i].dtype))
    s = 2.0 ** jax.random.uniform(ks_, (h,), ks[i].dtype, -1.0, 1.0)
    a = q * s[None, :]
    a_inv = (q.T) / s[:, None]
    out[i] = out[i] @ a
    out[i + 1] = a_inv @ out[i + 1]
  return _with_kernels(params, out)


def _train(key, model, ds, config):
  cfg = train.TrainConfig(optimizer="adam", learning_rate=config["learning_rate"], batch_size=config["batch_size"],
                          epochs=config["epochs"], loss="mse")
  params, _, hist = train.train(key, model, ds, cfg)
  return params, hist


def _surface(obj, params, key, config, name, out_dir, span=None, grid=None):
  dirs = js.random_directions(key, params, n=2, norm="filter", ignore="biasbn")
  s, g = span or config["span"], grid or config["grid"]
  return js.loss_surface(obj, params, dirs, x=(-s, s, g), y=(-s, s, g), curvature="plane", quiet=True,
                         out_dir=os.path.join(out_dir, name))


def main(config: dict, out_dir: str) -> Report:
  seed = config["seed"]
  root = jax.random.key(seed)
  ds = data.load("synthetic", key=jax.random.fold_in(root, 0), kind="linear_regression", dim=config["dim"],
                 out_dim=config["out_dim"], train_size=config["train_size"], test_size=config["test_size"])
  d, k = config["dim"], config["out_dim"]
  nets = {
      "linear": models.build("linear", jax.random.fold_in(root, 1), in_features=d, widths=config["widths"], out_features=k),
      "linear_deep": models.build("linear", jax.random.fold_in(root, 2), in_features=d, widths=config["deep_widths"],
                                  out_features=k),
      "sigmoid": models.build("mlp", jax.random.fold_in(root, 3), in_features=d, widths=config["widths"],
                              out_features=k, activation="sigmoid", use_bias=False),
  }
  t0 = time.perf_counter()
  trained, inits, hists = {}, {}, {}
  for i, (name, net) in enumerate(nets.items()):
    _, inits[name] = js.Objective.from_nnx(net, data=ds.train, loss="mse")
    trained[name], hists[name] = _train(jax.random.fold_in(root, 10 + i), net, ds, config)
  train_wall = time.perf_counter() - t0

  # ---------------------------------------------------------------- exact float64 checks
  rows_product, rows_origin = [], []
  with jax.enable_x64(True):
    x64, y64 = (np.asarray(a, np.float64) for a in ds.train)
    obj_w = js.Objective.from_apply(lambda w, x: x @ w, data=(x64, y64), loss="mse", batch_size=None, name="product")
    # the loss as a function of the product W: its Hessian is 2 X^T X / N (x) I / k, positive semi-definite
    w_star = jnp.linalg.lstsq(jnp.asarray(x64), jnp.asarray(y64))[0]
    lam_w = np.asarray(critical.hessian_eigh(obj_w, w_star)[0])
    product_diffs = []
    for name in ("linear", "linear_deep"):
      obj, _ = js.Objective.from_nnx(nets[name], data=(x64, y64), loss="mse", batch_size=None, name=name)
      for where, p in (("init", inits[name]), ("trained", trained[name])):
        p = js.tree.astype(p, jnp.float64)
        q = _refactor(jax.random.fold_in(root, 20 + len(rows_product)), p)
        w_p, w_q = models.end_to_end(p), models.end_to_end(q)
        l_p, l_q, l_w = float(obj.value(p)), float(obj.value(q)), float(obj_w.value(w_p))
        dist = float(js.tree.norm(js.tree.sub(q, p)) / js.tree.norm(p))
        diff = max(abs(l_p - l_q), abs(l_p - l_w))
        product_diffs.append(diff)
        rows_product.append((name, where, l_p, l_q, l_w, abs(l_p - l_q), abs(l_p - l_w),
                             float(jnp.max(jnp.abs(w_p - w_q))), dist))
      # the origin: gradient, dense Hessian, index; and a descent direction found by sampling
      zero = js.tree.zeros_like(js.tree.astype(inits[name], jnp.float64))
      g0 = float(js.tree.norm(jax.grad(obj.value)(zero)))
      lam0 = np.asarray(critical.hessian_eigh(obj, zero)[0])
      idx0 = float(critical.index(lam0, eps=1e-10))
      v = js.tree.normal_like(jax.random.fold_in(root, 30), zero)
      v = js.tree.scale(1.0 / js.tree.norm(v), v)
      l0 = float(obj.value(zero))
      ts = np.array([-0.3, -0.1, -0.03, 0.03, 0.1, 0.3])
      dl = np.array([float(obj.value(js.tree.scale(t, v))) - l0 for t in ts])
      rows_origin.append((name, len(_kernels(zero)), js.tree.size(zero), g0, float(lam0.min()), float(lam0.max()),
                          int(np.sum(lam0 < -1e-10)), idx0, float(dl.min())))
      if name == "linear":
        lam_origin = lam0
    l_star = float(obj_w.value(w_star))  # every local minimum of a deep linear net is global (Kawaguchi 2016)

  # ---------------------------------------------------------------- 2-D slices with projected curvature
  t0 = time.perf_counter()
  surfs, fracs, wide_rows = {}, {}, []
  for i, name in enumerate(("linear", "sigmoid")):
    obj, _ = js.Objective.from_nnx(nets[name], data=ds.train, loss="mse", name=f"{ds.name}-train")
    surfs[name] = _surface(obj, trained[name], jax.random.fold_in(root, 40 + i), config, f"surface_{name}", out_dir)
    lo, hi = surfs[name].metrics["plane_lambda_min"], surfs[name].metrics["plane_lambda_max"]
    fracs[name] = stats.nonconvex_fraction(lo, hi, rel=config["rel_curvature"])
    for span in config["wide_spans"]:  # the same two directions (same key), wider windows: reported, not gated
      w = _surface(obj, trained[name], jax.random.fold_in(root, 40 + i), config, f"surface_{name}_span{span:g}",
                   out_dir, span=span, grid=config["wide_grid"])
      wlo, whi = w.metrics["plane_lambda_min"], w.metrics["plane_lambda_max"]
      surfs[f"{name}_span{span:g}"] = w
      wide_rows.append((name, span, config["wide_grid"], stats.nonconvex_fraction(wlo, whi, rel=config["rel_curvature"]),
                        float(np.nanmin(wlo)), float(np.nanmin(w.loss)), float(np.nanmax(w.loss))))
  surf_wall = time.perf_counter() - t0

  arrays = {"origin_eigenvalues_linear": lam_origin, "product_hessian_eigenvalues": lam_w,
            "product_rows": np.array([r[2:] for r in rows_product], np.float64)}
  for name, s in surfs.items():  # also the wider windows, as <net>_span<s>_*
    arrays[f"{name}_x"], arrays[f"{name}_y"], arrays[f"{name}_loss"] = s.x, s.y, s.loss
    for m in ("plane_lambda_min", "plane_lambda_max"):
      arrays[f"{name}_{m}"] = s.metrics[m]
  for name, h in hists.items():
    arrays[f"{name}_train_loss"] = h.train_loss
  jio.save_result(out_dir, arrays, {"config": config, "environment": jio.environment(), "train_wall_s": train_wall,
                                    "surface_wall_s": surf_wall, "nonconvex_fraction": fracs,
                                    "wide_rows": wide_rows, "product_rows_columns": ["loss", "loss_refactored", "loss_of_product",
                                                             "abs_diff_refactored", "abs_diff_product",
                                                             "max_abs_product_diff", "rel_param_distance"]})

  # ---------------------------------------------------------------- figure
  panels = ["linear", "sigmoid"] + ([f"sigmoid_span{config['wide_spans'][-1]:g}"] if config["wide_spans"] else [])
  fig, axes = plt.subplots(1, len(panels) + 1, figsize=(5 * (len(panels) + 1), 4.4))
  for ax, name in zip(axes[:-1], panels):
    s = surfs[name]
    lo, hi = s.metrics["plane_lambda_min"], s.metrics["plane_lambda_max"]
    cs = ax.contourf(s.x, s.y, np.log10(s.loss), levels=25, cmap="viridis")
    fig.colorbar(cs, ax=ax, label="log10 train MSE")
    bad = lo < -config["rel_curvature"] * np.abs(hi)
    yy, xx = np.meshgrid(s.y, s.x, indexing="ij")
    ax.scatter(xx[bad], yy[bad], s=6, c="tab:red", label=f"lambda_min < -{config['rel_curvature']:g}|lambda_max|")
    ax.plot(0, 0, "w*", ms=10)
    frac = stats.nonconvex_fraction(lo, hi, rel=config["rel_curvature"])
    ax.set_title(f"{name.split('_')[0]} net, span {s.x[-1]:g}: non-convex fraction {frac:.3f}", fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
  lam = np.sort(lam_origin)
  axes[-1].stem(np.arange(lam.size), lam, markerfmt=".", basefmt="k-")
  axes[-1].set(xlabel="eigenvalue rank", ylabel="eigenvalue",
              title=f"Hessian at the origin, linear {d}-{'-'.join(map(str, config['widths']))}-{k} "
                    f"(index {rows_origin[0][7]:.3f})")
  axes[-1].title.set_fontsize(9)
  plot.save(fig, os.path.join(out_dir, "linear_network.png"), dpi=90)

  # ---------------------------------------------------------------- report
  rep = Report("linear_network", seed=seed, preset=config["preset"],
               claim="A deep linear network's loss depends on its factors only through their product (a convex "
                     "function of the product), yet is non-convex in the factors: the origin is a saddle; a sigmoid "
                     "in the same architecture makes the surface non-convex around its trained point as well.")
  arch = lambda w: f"{d}-{'-'.join(map(str, w))}-{k}"
  rep.setup += [
      f"Data: `synthetic` linear_regression, x ~ N(0, I_{d}), y = x w + 0.1 noise with {k} outputs, "
      f"{config['train_size']} train / {config['test_size']} test examples (key fold_in(seed, 0)); loss = MSE.",
      f"Nets (no biases): linear {arch(config['widths'])} and deep linear {arch(config['deep_widths'])} "
      f"(`models.build('linear')`), and the sigmoid MLP {arch(config['widths'])}; each trained with Adam lr "
      f"{config['learning_rate']}, batch {config['batch_size']}, {config['epochs']} epochs ({train_wall:.1f} s).",
      "Product check in float64: a second factorisation W_i -> A_{i-1}^-1 W_i A_i (random A = Q diag(s), s in "
      "[1/2, 2]) at the initial and the trained point, compared with each other and with the MSE of the product "
      f"matrix itself (tolerance {config['product_tol']:g}).",
      "Origin: gradient norm, dense float64 Hessian (`critical.hessian_eigh`) and index (eigenvalues below -1e-10); "
      "the smallest L(t v) - L(0) over t in {+-0.03, +-0.1, +-0.3} along a random unit direction v.",
      f"Slices: two filter-normalised Gaussian directions through the trained point, {config['grid']}x{config['grid']} "
      f"grid on [-{config['span']}, {config['span']}]^2, exact projected 2x2 Hessian per point "
      f"(`loss_surface(curvature='plane')`, float32); the same directions on wider windows "
      f"({', '.join(f'{v:g}' for v in config['wide_spans'])}) are reported, not gated ({surf_wall:.1f} s); non-convex fraction = share of interior "
      f"points with lambda_min < -{config['rel_curvature']:g} |lambda_max| (`stats.nonconvex_fraction`).",
  ]
  worst = max(product_diffs)
  rep.check("the loss depends only on the end-to-end product (float64)", worst <= config["product_tol"],
            f"max |L(theta) - L(theta')|, |L(theta) - L_W(W)| over {len(product_diffs)} cases = {worst:.3g} "
            f"<= {config['product_tol']:g}; parameters moved by {min(r[8] for r in rows_product):.3g}-"
            f"{max(r[8] for r in rows_product):.3g} of their norm")
  rep.check("the loss is convex in the product", float(lam_w.min()) >= -1e-10,
            f"Hessian of L_W: eigenvalues in [{lam_w.min():.3g}, {lam_w.max():.3g}]")
  o = rows_origin[0]
  rep.check(f"the origin of the linear {arch(config['widths'])} net is a saddle (index > 0)", o[3] == 0.0 and o[7] > 0,
            f"||grad L(0)|| = {o[3]:.3g}; {o[6]}/{o[2]} negative eigenvalues (index {o[7]:.3f}), "
            f"lambda in [{o[4]:.3g}, {o[5]:.3g}]")
  rep.check("the sigmoid net's slice is non-convex (negative curvature on the grid)", fracs["sigmoid"] > 0,
            f"non-convex fraction {fracs['sigmoid']:.3f} (min plane lambda_min "
            f"{np.nanmin(surfs['sigmoid'].metrics['plane_lambda_min']):.3g}); linear net's slice: "
            f"{fracs['linear']:.3f} (min {np.nanmin(surfs['linear'].metrics['plane_lambda_min']):.3g})")
  rep.section("Same product, same loss (float64)", table(
      ["net", "point", "L(theta)", "L(theta')", "L_W(W)", "|L - L'|", "|L - L_W|", "max |W - W'|", "||theta'-theta||/||theta||"],
      rows_product))
  rep.section("The origin (float64)", table(
      ["net", "layers", "params", "||grad L(0)||", "lambda_min", "lambda_max", "# negative", "index",
       "min_t L(tv) - L(0)"], rows_origin))
  rep.section("Training and slices", table(["quantity", "linear", "deep linear", "sigmoid"], [
      ("final train MSE", *(float(hists[n].train_loss[-1]) for n in ("linear", "linear_deep", "sigmoid"))),
      ("final test MSE", *(float(hists[n].test_loss[-1]) for n in ("linear", "linear_deep", "sigmoid"))),
      ("least-squares optimum (train)", l_star, l_star, "-"),
      ("slice: non-convex fraction", fracs["linear"], "-", fracs["sigmoid"]),
      ("slice: min / max loss", f"{np.nanmin(surfs['linear'].loss):.4g} / {np.nanmax(surfs['linear'].loss):.4g}", "-",
       f"{np.nanmin(surfs['sigmoid'].loss):.4g} / {np.nanmax(surfs['sigmoid'].loss):.4g}"),
  ]))
  rep.section("Wider windows (same directions; reported, not gated)", table(
      ["net", "span", "grid", "non-convex fraction", "min plane lambda_min", "min loss", "max loss"], wide_rows))
  o2 = rows_origin[1]
  rep.notes += [
      f"The deep linear net's origin ({o2[1]} layers) is a higher-order saddle: its Hessian vanishes "
      f"(eigenvalues in [{o2[4]:.3g}, {o2[5]:.3g}], index {o2[7]:.3f}), so the second-order test cannot decide; the "
      f"loss still decreases along a random direction (min L(tv) - L(0) = {o2[8]:.3g}).",
      "The linear net's slices through its trained point are quartic polynomials in the two coordinates; "
      f"their non-convex fractions are {fracs['linear']:.3f} (span {config['span']:g})"
      + "".join(f", {r[3]:.3f} (span {r[1]:g})" for r in wide_rows if r[0] == "linear")
      + f" against {fracs['sigmoid']:.3f}" + "".join(f", {r[3]:.3f}" for r in wide_rows if r[0] == "sigmoid")
      + " for the sigmoid net. The linear net's non-convexity lies away from its minima (the saddle at the origin).",
  ]
  if fracs["sigmoid"] == 0:
    wide = [r for r in wide_rows if r[0] == "sigmoid" and r[3] > 0]
    rep.notes.append(
        f"Not reproduced at this scale: within [-{config['span']:g}, {config['span']:g}]^2 (filter-normalised units) "
        "the sigmoid net's slice through its trained point has positive projected curvature everywhere (min "
        f"lambda_min {np.nanmin(surfs['sigmoid'].metrics['plane_lambda_min']):.3g}). "
        + (f"Negative curvature appears on the wider windows (span {', '.join(f'{r[1]:g}' for r in wide)}, "
           f"fraction {', '.join(f'{r[3]:.3f}' for r in wide)}), i.e. far from the trained point, where sigmoids "
           "saturate." if wide else "None of the wider windows shows negative curvature either."))
  rep.figure("linear_network.png", "log10 training MSE on 2-D slices through the trained linear and sigmoid "
                                   "nets (gated window, and the sigmoid net's widest window), red where the projected Hessian has significant negative curvature. "
                                   "Right: Hessian eigenvalues of the linear net at the origin (a saddle).")
  return rep


if __name__ == "__main__":
  sys.exit(experiment.run(sys.modules[__name__]))
