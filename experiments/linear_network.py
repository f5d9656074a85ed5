"""linear_network: the 2-3-1 network, linear (a convex problem in two products) vs sigmoid (several minima).

Two inputs, three hidden units, one output, no biases: weights w11..w32 (``layers/0/kernel``, 2x3) and
v11..v13 (``head/kernel``, 3x1), MSE over N samples (x1, x2, y). Every exact check runs in float64.

Run: ``make experiment NAME=linear_network [PRESET=smoke|cpu|full] [SEED=0]``.
"""
from __future__ import annotations

import functools
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

import jaxscape as js
from jaxscape import critical, experiment, hessian, models, newton, paths, plot, stats
from jaxscape.experiment import Report, table

# Thresholds from first principles, fixed before the cpu runs: float64 rounding of sums of a few terms is ~1e-16
# relative, so "equal" means within 1e-12 (products, permutations) and "the same minimum" within 1e-9 (GD ends);
# a barrier is a rise of at least 0.1 % of the minimum's loss, far above rounding and well below any real basin wall.
# lr_sigmoid 0.2 keeps GD stable at minima with lambda_max < 10 (the exploration runs, seeds 100-101, found up to 5).
_BASE = {"samples": 50, "teacher_scale": 3.0, "noise": 0.1, "lr_linear": 0.05, "lr_sigmoid": 0.2,
         "refine_steps": 100, "refine_tol": 1e-10, "step_cap": 0.1, "product_tol": 1e-12, "gd_rtol": 1e-9,
         "grad_tol": 1e-8, "psd_rtol": 1e-9, "perm_rtol": 1e-12, "barrier_rel": 1e-3, "min_minima": 2, "points": 41}
CONFIGS = {"smoke": {**_BASE, "starts": 12, "steps": 1000, "grid": 11, "points": 11},
           "cpu": {**_BASE, "starts": 100, "steps": 20000, "grid": 41},
           "full": {**_BASE, "starts": 1000, "steps": 50000, "grid": 101}}
_INIT = functools.partial(models.linear.init, dtype=jnp.float64)  # 2-3-1 by default; every check runs in float64
_SIGMOID = functools.partial(models.linear.forward, activation=jax.nn.sigmoid)


def _product(u, x):
  return x @ u


def main(config: dict, out_dir: str) -> Report:
  c, seed = config, config["seed"]
  root, n, r = jax.random.key(seed), c["samples"], c["starts"]
  with jax.enable_x64(True):
    x = jax.random.normal(jax.random.fold_in(root, 0), (n, 2), jnp.float64)
    teacher = _INIT(jax.random.fold_in(root, 1), scale=c["teacher_scale"])
    y = _SIGMOID(teacher, x) + c["noise"] * jax.random.normal(jax.random.fold_in(root, 2), (n, 1), jnp.float64)
    obj = {k: js.Objective.from_apply(f, data=(x, y), loss="mse", batch_size=None, name="teacher")
           for k, f in (("linear", models.linear.forward), ("sigmoid", _SIGMOID), ("product", _product))}
    starts = jax.vmap(_INIT)(jax.random.split(jax.random.fold_in(root, 3), r))
    # linear: L depends on the weights only through u = W v; L(u) is least squares with Hessian 2 X^T X / N
    u_star = jnp.linalg.lstsq(x, y)[0]
    l_star, lam_u = float(obj["product"].value(u_star)), np.asarray(hessian.dense_eigh(obj["product"], u_star)[0])
    lam_ref = np.linalg.eigvalsh(2 * np.asarray(x.T @ x) / n)
    rows_product = []
    for i in range(5):  # random weights (2-3-1 and 2-3-3-1) and a refactorisation with the same products
      for depth, widths in (("2-3-1", (3,)), ("2-3-3-1", (3, 3))):
        p = _INIT(jax.random.fold_in(root, 10 + i), (2, *widths, 1))
        chk = models.linear.product_check(jax.random.fold_in(root, 20 + i), obj["linear"].value, obj["product"].value, p)
        rows_product.append((depth, i, *chk))
    worst = max(max(row[5], row[6]) / max(1.0, row[2]) for row in rows_product)
    t0 = time.perf_counter()
    ends_lin = newton.gradient_descent(obj["linear"], starts, lr=c["lr_linear"], steps=c["steps"])
    loss_lin = np.asarray(jax.vmap(obj["linear"].value)(ends_lin))
    u_ends = np.asarray(jax.vmap(models.linear.end_to_end)(ends_lin))
    gap = np.abs(loss_lin - l_star) / l_star
    origin = critical.describe_point(jax.random.fold_in(root, 4), obj["linear"], js.tree.zeros_like(_INIT(root)))
    deep = critical.describe_point(jax.random.fold_in(root, 5), obj["linear"], js.tree.zeros_like(_INIT(root, (2, 3, 3, 1))))
    origin_ref = -float(np.linalg.norm(2 * np.asarray(x.T @ y) / n))  # H(0) = [[0, B], [B^T, 0]], B = -c (x) I_3
    # sigmoid: the same starts, GD, then saddle-free Newton (descent only, short capped steps) to an exact minimum
    ends_sig = newton.gradient_descent(obj["sigmoid"], starts, lr=c["lr_sigmoid"], steps=c["steps"])
    gd_wall, gd_loss = time.perf_counter() - t0, np.asarray(jax.vmap(obj["sigmoid"].value)(ends_sig))
    ref = newton.minimize_saddle_free_many(obj["sigmoid"], ends_sig, max_steps=c["refine_steps"], tol=c["refine_tol"],
                                           step_cap=c["step_cap"])
    size = lambda t: np.asarray(js.tree.distances(t, js.tree.zeros_like(js.tree.select(t, 0))))
    move, ref_norm = np.asarray(js.tree.distances(ref["params"], ends_sig)) / size(ends_sig), size(ref["params"])
    conv = np.flatnonzero(ref["converged"])
    reps, minima = critical.distinct_minima(obj["sigmoid"], ref["params"], ref["loss"], ref["converged"],
                                            rtol=c["gd_rtol"], grad_tol=c["grad_tol"], psd_rtol=c["psd_rtol"])
    copies_of = {rank: paths.hidden_unit_copies(js.tree.select(ref["params"], i), "layers/0", "head", bias=None)
                 for rank, i in enumerate(reps)}
    perm_rows = [(rank, k, *row) for rank, i in enumerate(reps) for k, row in enumerate(paths.copy_barriers(
        obj["sigmoid"], js.tree.select(ref["params"], i), copies_of[rank], jnp.linspace(0.0, 1.0, c["points"]),
        loss=minima[rank][1]))]
    verified = [m for m in minima if m[6]]
    a = js.tree.select(ref["params"], reps[0])
    far = max(range(5), key=lambda k: perm_rows[k][4])  # the lowest minimum's copy behind the highest barrier
    planes = {"ab": (js.tree.select(ref["params"], reps[min(1, len(reps) - 1)]), copies_of[0][far]),
              "copies": (copies_of[0][far], copies_of[0][(far + 1) % 5])}
    surfs = {k: js.loss_surface(obj["sigmoid"], a, js.directions.plane_directions(a, *pts), x=(-0.5, 1.5, c["grid"]),
                                y=(-0.5, 1.5, c["grid"]), quiet=True) for k, pts in planes.items()}
    span = max(2.0, 2 * float(np.abs(u_star).max()))
    bowl = models.linear.product_surface(obj["product"].value, u_star, span=span, num=c["grid"])
  perm = np.array([row[2:] for row in perm_rows]) if perm_rows else np.zeros((0, 4))
  moved = perm[:, 1] > 1e-6  # a transposition of two coinciding units maps the point onto itself: not a second copy
  js.io.save_result(out_dir, {
      "x": np.asarray(x), "y": np.asarray(y), "product_hessian_eigenvalues": lam_u, "least_squares_u": np.asarray(u_star),
      "linear_end_loss": loss_lin, "linear_end_products": u_ends, "origin_eigenvalues": origin.eigenvalues,
      "sigmoid_gd_loss": gd_loss, "sigmoid_loss": ref["loss"], "sigmoid_grad_norm": ref["grad_norm"],
      "sigmoid_eigenvalues": ref["eigenvalues"], "minima": np.array([m[:6] for m in minima], np.float64),
      "permutation_rows": np.array(perm_rows, np.float64), "bowl_loss": bowl.loss, "bowl_u1": bowl.x, "bowl_u2": bowl.y,
      **{f"slice_{k}_loss": s.loss for k, s in surfs.items()}, "slice_coords": surfs["ab"].x}, {
      "config": config, "environment": js.io.environment(), "gd_wall_s": gd_wall,
      "minima_columns": ["rank", "loss", "grad_norm", "lambda_min", "lambda_max", "runs"],
      "permutation_columns": ["minimum", "permutation", "rel_loss_change", "rel_distance", "barrier", "barrier_rel"]})
  fig, _ = plot.bowl_and_slices(
      bowl, [surfs["ab"], surfs["copies"]], bowl_title=f"linear 2-3-1: loss over the two products (min {l_star:.4g})",
      slice_titles=[f"sigmoid: plane through minima 1, 2 and a permuted copy of 1 ({len(verified)} minima found)",
                    "sigmoid: plane through three permuted copies of minimum 1"],
      marks=[[(0.0, 0.0, "min 1"), (1.0, 0.0, f"min {min(2, len(reps))}"), (0.0, 1.0, "perm. 1")],
             [(0.0, 0.0, "min 1"), (1.0, 0.0, "perm."), (0.0, 1.0, "perm.")]])
  fig.axes[0].set(xlabel="u1 = sum_i w_i1 v_i", ylabel="u2 = sum_i w_i2 v_i")
  rep = Report("linear_network", seed=seed, preset=config["preset"],
               claim="With linear units the 2-3-1 network's loss depends only on the two products sum_i w_ij v_i and "
                     "is a convex least-squares problem in them, although in the weights the origin is a saddle; "
                     "gradient descent reaches the global minimum from every start. With sigmoid units the same "
                     "starts end in several minima with different losses, and each minimum has 3! = 6 permuted "
                     "copies separated by barriers.")
  rep.figure(os.path.basename(plot.save(fig, f"{out_dir}/linear_network.png", dpi=90)), "Left: the linear net's loss "
             "over its two products (a bowl). Middle and right: log10 loss of the sigmoid net on planes through its "
             "minima and their hidden-unit permutations (coordinates: the three marked points at (0,0), (1,0), (0,1)).")
  rep.setup += [
      f"Data (why the claims hold): x ~ N(0, I_2), N = {n} samples, y = a sigmoid 2-3-1 teacher with N(0, "
      f"{c['teacher_scale']:g}^2) weights + {c['noise']:g} N(0, 1) noise. N > 2 points in general position make X^T X "
      "positive definite, so the linear problem in the products has one minimum; N far above the 9 weights and the "
      "noise keep the sigmoid student from fitting exactly, so its minima are isolated points at finite weights, and "
      "saturated teacher units (weights ~3) give it several basins.",
      f"{r} starts (weights N(0, 1)), the same for both nets; full-batch GD, {c['steps']} steps, lr {c['lr_linear']:g} "
      f"(linear) and {c['lr_sigmoid']:g} (sigmoid), one vmapped compiled scan (`newton.gradient_descent`, "
      f"{gd_wall:.1f} s). Sigmoid ends refined by saddle-free Newton (`newton.minimize_saddle_free_many`: descent only, "
      f"steps capped at {c['step_cap']:g}) to ||grad|| < {c['refine_tol']:g}; ends with losses within {c['gd_rtol']:g} "
      f"(relative) are one minimum, each verified by jax.grad and the dense Hessian (`hessian.dense_eigh`), float64.",
      f"Products: `models.linear.product_check` (W_i -> A^-1 W_i A, same products) at 5 random points of the 2-3-1 "
      f"and 2-3-3-1 nets; permutations: the 5 other orders of the hidden units, straight lines of {c['points']} points."]
  rep.check("linear: the loss is a function of the two products only (any depth)", worst <= c["product_tol"],
            f"max |L(theta) - L(theta')|, |L(theta) - L_u(u)| / max(1, L) over {len(rows_product)} points = "
            f"{worst:.3g} <= {c['product_tol']:g}")
  rep.check("linear: the Hessian in the products is positive definite (= 2 X^T X / N)",
            lam_u[0] > 0 and np.max(np.abs(lam_u - lam_ref)) <= 1e-12 * lam_ref[-1],
            f"eigenvalues {lam_u[0]:.6g}, {lam_u[1]:.6g}; closed form {lam_ref[0]:.6g}, {lam_ref[1]:.6g}")
  rep.check(f"linear: GD from all {r} starts ends at the least-squares minimum", gap.max() <= c["gd_rtol"],
            f"L* = {l_star:.10g}; max |L_end - L*| / L* = {gap.max():.3g} <= {c['gd_rtol']:g}; max |u_end - u*| = "
            f"{np.abs(u_ends - np.asarray(u_star)[None]).max():.3g}")
  rep.check("linear: the origin is a saddle (zero gradient, negative curvature)",
            origin.grad_norm == 0.0 and origin.lambda_min < 0 and abs(origin.lambda_min - origin_ref) <= 1e-12 * abs(origin_ref),
            f"||grad L(0)|| = {origin.grad_norm:.3g}; lambda_min = {origin.lambda_min:.6g} (closed form -||2 X^T y / N|| "
            f"= {origin_ref:.6g}), {origin.num_negative} of 9 negative; min L(t v) - L(0) = {origin.min_change:.3g}")
  rep.check(f"sigmoid: >= {c['min_minima']} verified minima with different losses", len(verified) >= c["min_minima"]
            and len(verified) == len(minima), f"{len(verified)} of {len(minima)} distinct ends verified (||grad|| <= "
            f"{c['grad_tol']:g}, lambda_min >= -{c['psd_rtol']:g} lambda_max); losses "
            f"{', '.join(f'{m[1]:.6g}' for m in minima[:6])}{' ...' if len(minima) > 6 else ''}; {conv.size}/{r} "
            "refinements converged")
  rep.check("sigmoid: permuting the hidden units reproduces the loss", perm[:, 0].max() <= c["perm_rtol"],
            f"max |L(pi theta) - L(theta)| / L = {perm[:, 0].max():.3g} <= {c['perm_rtol']:g} over {len(perm_rows)} "
            f"copies of {len(minima)} minima")
  rep.check("sigmoid: the straight line from the lowest minimum to each of its 5 permuted copies rises (a barrier)",
            moved[:5].all() and perm[:5, 3].min() >= c["barrier_rel"],
            f"barrier / L: {', '.join(f'{v:.3g}' for v in perm[:5, 3])} >= {c['barrier_rel']:g}; copies at relative "
            f"distance {perm[:5, 1].min():.3g}-{perm[:5, 1].max():.3g}")
  rep.section("Same products, same loss (float64)", table(
      ["net", "point", *models.linear.PRODUCT_CHECK_FIELDS], rows_product))
  rep.section("Sigmoid minima (float64)", table(
      ["minimum", "loss", "||grad||", "lambda_min", "lambda_max", "runs", "verified", "max perm. |dL|/L",
       "min barrier / L", "max barrier / L"],
      [(*m, *(f(perm[m[0] * 5:(m[0] + 1) * 5, j]) for f, j in ((np.max, 0), (np.min, 3), (np.max, 3))))
       for m in minima]))
  rep.section("Runs", table(["quantity", "linear", "sigmoid"], [
      ("final GD loss: min / median / max", tuple(np.quantile(loss_lin, [0, 0.5, 1])), tuple(np.quantile(gd_loss, [0, 0.5, 1]))),
      ("after refinement: min / median / max", "-", tuple(np.quantile(ref["loss"], [0, 0.5, 1]))),
      ("largest drop in refinement (relative)", "-", float(np.max((gd_loss - ref["loss"]) / gd_loss))),
      ("largest move in refinement, ||theta_ref - theta_GD|| / ||theta_GD||", "-", float(move.max())),
      ("refinements converged", "-", f"{conv.size}/{r}"),
      ("||theta|| at the end: converged / not (max)", "-", (float(ref_norm[conv].max(initial=0.0)),
                                                             float(ref_norm[~ref["converged"]].max(initial=0.0)))),
      ("loss at the end, not converged: min / max", "-", (float(ref["loss"][~ref["converged"]].min(initial=np.inf)),
                                                          float(ref["loss"][~ref["converged"]].max(initial=-np.inf))))]))
  rep.notes.append(f"The 2-3-3-1 linear net computes the same two products (rows above); at its origin the Hessian "
                   f"vanishes (eigenvalues in [{deep.lambda_min:.3g}, {deep.lambda_max:.3g}]): a higher-order saddle "
                   f"the second-order test cannot decide, though the loss falls along a random line (min L(t v) - L(0) = "
                   f"{deep.min_change:.3g}).")
  flat = [m[0] for m in minima if perm[m[0] * 5:(m[0] + 1) * 5, 3].min() < c["barrier_rel"]]
  if flat:
    rep.notes.append(f"Minima {', '.join(map(str, flat))} have a permuted copy joined to them by a line without a "
                     f"barrier (< {c['barrier_rel']:g} L): two hidden units carry equal input weights there, so swapping "
                     "them moves along a valley of equal loss (a zero Hessian eigenvalue); the barrier is checked on "
                     "the lowest minimum.")
  if conv.size < r:
    rep.notes.append(f"{r - conv.size} of {r} refinements did not reach ||grad|| < {c['refine_tol']:g} in "
                     f"{c['refine_steps']} steps (||grad|| up to {ref['grad_norm'].max():.2g}); their weights are larger "
                     f"(||theta|| up to {ref_norm[~ref['converged']].max():.3g}, against {ref_norm[conv].max(initial=0.0):.3g} "
                     "at the converged ends), as on valleys that keep descending towards saturated units; losses "
                     f"{ref['loss'][~ref['converged']].min():.4g}-{ref['loss'][~ref['converged']].max():.4g}; not "
                     "minima at finite weights, so they are left out of the count.")
  rep.notes += [
      f"GD alone does not finish in {c['steps']} steps (its slowest curvature is ~1e-5, so lr {c['lr_sigmoid']:g} "
      "needs ~1e6 steps); the refinement descends monotonically from the GD end to the minimum of its valley (moves "
      "and drops in the Runs table).",
      "The data, lr_sigmoid 0.2 and the barrier check on the lowest minimum were settled on exploration runs of the "
      "cpu preset at seeds 100 and 101 (lr 0.5 was unstable at a minimum with lambda_max 4.9; a minimum with two "
      "coinciding units showed no barrier), before seeds 0-2 were run; no threshold changed."]
  rep.note_failures()
  return rep


if __name__ == "__main__":
  sys.exit(experiment.run(sys.modules[__name__], html_views=plot.html_views))
