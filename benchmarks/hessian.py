"""Curvature benchmark: HVP throughput, certified eigenvalues against ARPACK, trace to a target accuracy.

A 64-256-256-10 ReLU MLP (He init, a plain apply function on a dict of
parameters, 85,002 parameters) over all 1797 scikit-learn digits, cross-entropy,
batches of 512 (the last one ragged). The network is first trained for a few
hundred full-batch Adam steps so the Hessian is that of a (nearly) trained
model, not of the initialisation. Printed, all measured in this run (float32,
compilation excluded and reported separately):

* full-data gradients per second and full-data HVPs (forward-over-reverse)
  per second, and their ratio;
* the cost of one Lanczos step of ``hessian.eigenvalues`` (reorthogonalisation,
  Ritz check, thick restarts) as a multiple of one raw HVP;
* PyHessian's HVP (torch double backward over the same batches) per second,
  when torch is installed;
* on a 64-32-32-10 MLP (3,466 parameters, float64, dense ``eigh`` reference):
  top-5 and bottom-5 at tolerances 1e-3, 1e-6, 1e-10: HVPs, seconds, pairs
  certified and the largest error / stated bound of jaxscape, and HVPs of
  scipy's ARPACK (``eigsh``) on the same operator with its default basis of 20
  vectors and with jaxscape's 30;
* the Hessian trace (default estimator, Hutch++) until the standard error is
  below 1 % of the estimate: number of HVPs and seconds;
* curvature of a convolutional net (:func:`conv_curvature`): a 9,930-parameter
  linen CNN over the 8x8 digits; a full-data HVP through the scan over batches
  (``batching="scan"``) and with the objective's automatic strategy
  (``"unroll"`` on the CPU), a Lanczos step of ``hessian.eigenvalues`` and
  the default ``hessian.trace`` (seconds, HVPs), each against one standalone
  jitted HVP on all 1797 digits at once;
* trace calibration on the 3,466-parameter 64-32-32-10 MLP in float64
  (:func:`trace_calibration`): HVPs to SE < 1 % for Hutchinson and Hutch++
  (sketch sizes 10/20/40) over a few keys, and the share of ``--trace-keys``
  keys whose 95 % interval covers the dense float64 trace.

Run: ``python benchmarks/hessian.py``.
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.flatten_util import ravel_pytree
from sklearn.datasets import load_digits

import jaxscape as js

WIDTHS = (64, 256, 256, 10)


def mlp(params, x):
  n = len(params)
  for i in range(n):
    layer = params[f"dense{i}"]
    x = x @ layer["kernel"] + layer["bias"]
    if i < n - 1:
      x = jax.nn.relu(x)
  return x


def init(key, widths=WIDTHS):
  params = {}
  for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
    params[f"dense{i}"] = {"kernel": jax.random.normal(jax.random.fold_in(key, i), (a, b)) * np.sqrt(2.0 / a),
                           "bias": jnp.zeros(b)}
  return params


def setup(train_steps: int, *, widths=WIDTHS, batch_size: int = 512, learning_rate: float = 1e-3,
          dtype=np.float32):
  """An MLP of ``widths`` on all 1797 digits, trained by ``train_steps`` full-batch Adam steps: ``(obj, params)``."""
  d = load_digits()
  x, y = (d.data / 16.0).astype(dtype), d.target.astype(np.int32)
  params = init(jax.random.key(0), widths)
  obj = js.Objective.from_apply(mlp, params, data=(x, y), batch_size=batch_size, name="digits")
  opt = optax.adam(learning_rate)

  @jax.jit
  def train(params):
    def step(carry, _):
      p, s = carry
      u, s = opt.update(jax.grad(obj.value)(p), s)
      return (optax.apply_updates(p, u), s), None

    (params, _), _ = jax.lax.scan(step, (params, opt.init(params)), None, length=train_steps)
    return params

  return obj, train(params)


def timed(fn, *args, reps: int):
  """(wall seconds per run, compile seconds, output, process-CPU seconds per run).

  The first call compiles and runs; compile time is reported as first-call
  time minus the mean run time. CPU time is reported too because the machine
  may be shared: wall time then includes waiting for a core."""
  t = time.perf_counter()
  jax.block_until_ready(fn(*args))
  first = time.perf_counter() - t
  t, c = time.perf_counter(), time.process_time()
  for _ in range(reps):
    out = fn(*args)
  jax.block_until_ready(out)
  run, cpu = (time.perf_counter() - t) / reps, (time.process_time() - c) / reps
  return run, max(first - run, 0.0), out, cpu


def lanczos_step_cost(obj, params, t_hvp: float, budget: int = 60) -> None:
  """Seconds per Lanczos step of ``hessian.eigenvalues`` against one raw HVP (85k parameters)."""
  key = jax.random.key(2)
  # tol = atol = 0 certifies nothing, so the run spends its whole budget (thick restarts included)
  adaptive = lambda: js.hessian.eigenvalues(key, obj, params, k=5, tol=0.0, atol=0.0, max_hvps=budget)
  fixed = lambda: js.hessian.eigenvalues(key, obj, params, k=5, num_steps=budget)
  for name, run in (("run until certified", adaptive), ("fixed length", fixed)):
    t, c, res, _ = timed(run, reps=2)
    per = t / int(res.num_hvps)
    print(f"Lanczos step ({name}, {int(res.num_hvps)} HVPs, {int(res.restarts)} restarts): {1e3 * per:.2f} ms "
          f"= {per / t_hvp:.2f} x one HVP ({1e3 * t_hvp:.2f} ms)")


def pyhessian_hvp_rate(train_steps: int, t_hvp: float) -> None:
  """PyHessian's HVP (torch double backward over the batches) on the same 85k MLP, if torch is installed."""
  try:
    import torch
  except ImportError:
    print("PyHessian HVP rate: torch is not installed here; skipped (pip install torch to compare)")
    return
  obj, params = setup(train_steps)
  d = load_digits()
  x, y = torch.tensor(d.data / 16.0, dtype=torch.float32), torch.tensor(d.target)
  ws = [torch.tensor(np.asarray(params[f"dense{i}"][name]), requires_grad=True)
        for i in range(len(WIDTHS) - 1) for name in ("kernel", "bias")]
  vs = [torch.randn_like(w) for w in ws]

  def hvp():  # pyhessian.hessian.dataloader_hv_product: grads of grads, summed over batches
    out = [torch.zeros_like(w) for w in ws]
    for i in range(0, len(y), 512):
      h = x[i:i + 512]
      for j in range(0, len(ws), 2):
        h = h @ ws[j] + ws[j + 1]
        if j < len(ws) - 2:
          h = torch.relu(h)
      loss = torch.nn.functional.cross_entropy(h, y[i:i + 512], reduction="sum") / len(y)
      g = torch.autograd.grad(loss, ws, create_graph=True)
      hv = torch.autograd.grad(g, ws, grad_outputs=vs)
      out = [a + b for a, b in zip(out, hv)]
    return out

  hvp()
  t = time.perf_counter()
  for _ in range(10):
    hvp()
  t_torch = (time.perf_counter() - t) / 10
  print(f"PyHessian-style torch HVP {1e3 * t_torch:.2f} ms vs jaxscape {1e3 * t_hvp:.2f} ms: "
        f"jaxscape {t_torch / t_hvp:.2f}x faster per HVP")


def eigen_table(train_steps: int, tols=(1e-3, 1e-6, 1e-10)) -> None:
  """Top-5 / bottom-5 on a 64-32-32-10 MLP (3,466 parameters, float64): jaxscape vs ARPACK.

  Both run on the same float64 full-data HVP; ARPACK (scipy ``eigsh``) gets it as a
  ``LinearOperator`` and certifies with the same rule (residual <= tol |theta|). The
  errors are against ``numpy.linalg.eigh`` of the dense float64 Hessian.
  """
  from scipy.sparse.linalg import LinearOperator, eigsh

  with jax.enable_x64(True):
    obj, params = setup(train_steps, widths=(64, 32, 32, 10), dtype=np.float64)
    params = jax.tree.map(lambda a: a.astype(jnp.float64), params)
    n = js.tree.size(params)
    lam = np.linalg.eigvalsh(np.asarray(js.hessian.dense_hessian(obj, params)))
    print(f"\n64-32-32-10 MLP, {n} parameters, float64: lambda_max {lam[-1]:.4f}, "
          f"five smallest {', '.join(f'{v:.5f}' for v in lam[:5])}")
    flat, unravel = ravel_pytree(params)
    mv = jax.jit(lambda v: ravel_pytree(js.hessian.hvp(obj, params, unravel(v)))[0])
    v0 = np.random.default_rng(0).normal(size=n)
    print("| which | tol | jaxscape HVPs | s | certified | max error / bound | ARPACK HVPs (ncv 20) | s "
          "| ARPACK HVPs (ncv 30) | max error |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for which, want in (("largest", lam[::-1][:5]), ("smallest", lam[:5])):
      for tol in tols:
        run = lambda: js.hessian.eigenvalues(jax.random.key(0), obj, params, k=5, which=which, tol=tol)
        t, _, res, _ = timed(run, reps=1)
        err = np.abs(np.asarray(res.values) - want)
        ratio = float(np.max(err / np.asarray(res.error_bounds)))
        arpack = []
        for ncv in (20, 30):
          count = [0]

          def matvec(v):
            count[0] += 1
            return np.asarray(mv(jnp.asarray(v)))

          t0 = time.perf_counter()
          w = eigsh(LinearOperator((n, n), matvec=matvec, dtype=np.float64), k=5, which="LA" if which == "largest"
                    else "SA", tol=tol, v0=v0, ncv=ncv, maxiter=100 * n, return_eigenvectors=False)
          w = np.sort(w)[::-1] if which == "largest" else np.sort(w)
          arpack.append((count[0], time.perf_counter() - t0, np.abs(w - want).max()))
        print(f"| {which} | {tol:.0e} | {int(res.num_hvps)} | {t:.2f} | {int(res.num_converged)}/5 | {ratio:.2f} "
              f"| {arpack[0][0]} | {arpack[0][1]:.2f} | {arpack[1][0]} | {max(a[2] for a in arpack):.1e} |")


def conv_curvature(*, reps: int = 3, lanczos_steps: int = 20) -> None:
  """HVP cost on a 9,930-parameter linen CNN over the digits: scan vs the objective's batching vs standalone.

  Conv(16, 3x3) - ReLU - Conv(32, 3x3) - ReLU - 2x2 average pool - Dense(10)
  on the 1797 digits as 8x8x1 images, batches of 512 (4 of 450). The
  reference is one jitted forward-over-reverse HVP of the mean loss over all
  examples at once (no loop). XLA's CPU compiler keeps the gradients of
  convolutions inside loop bodies (``lax.scan``, ``while_loop``) as naive loop
  nests, so the scan over batches, and any Lanczos loop around it, is slow;
  ``batching="unroll"`` (chosen automatically here) avoids both.
  """
  import flax.linen as nn

  class CNN(nn.Module):
    @nn.compact
    def __call__(self, x):
      x = nn.relu(nn.Conv(16, (3, 3))(x))
      x = nn.relu(nn.Conv(32, (3, 3))(x))
      x = nn.avg_pool(x, (2, 2), (2, 2))
      return nn.Dense(10)(x.reshape(x.shape[0], -1))

  d = load_digits()
  x, y = (d.data / 16.0).astype(np.float32).reshape(-1, 8, 8, 1), d.target.astype(np.int32)
  net = CNN()
  obj, params = js.Objective.from_model(net, variables=net.init(jax.random.key(0), x[:1]), data=(x, y),
                                        name="digits")
  v = js.tree.normal_like(jax.random.key(1), params)
  everything = (jnp.asarray(x), jnp.asarray(y))
  one = jax.jit(lambda p, v: jax.jvp(jax.grad(lambda q: obj.loss(q, everything)[0]), (p,), (v,))[1])
  t_one, c_one, _, _ = timed(one, params, v, reps=reps)
  print(f"\nCNN {js.tree.size(params)} parameters, digits 8x8x1, {obj.num_batches} batches of {obj.batch_size}; "
        f"automatic batching: {obj.batching!r}")
  print(f"standalone HVP (all {obj.num_examples} at once): {1e3 * t_one:.1f} ms (compile {c_one:.1f} s)")
  for batching in ("scan", obj.batching):
    o = obj.with_batching(batching)
    hvp = jax.jit(lambda p, v, o=o: js.hessian.hvp(o, p, v))
    t, c, _, _ = timed(hvp, params, v, reps=1 if batching == "scan" else reps)
    print(f"full-data HVP, batching {batching!r}: {1e3 * t:.1f} ms = {t / t_one:.2f} x standalone (compile {c:.1f} s)")
  run = lambda: js.hessian.eigenvalues(jax.random.key(2), obj, params, k=5, num_steps=lanczos_steps)
  t, c, res, _ = timed(run, reps=1)
  per = t / int(res.num_hvps)
  print(f"Lanczos, batching {obj.batching!r} ({int(res.num_hvps)} HVPs): {1e3 * per:.1f} ms per HVP = "
        f"{per / t_one:.2f} x standalone (compile {c:.1f} s); top eigenvalue {float(res.values[0]):.4f}")
  run = lambda: js.hessian.trace(jax.random.key(3), obj, params)  # the defaults: Hutch++ to 1 % standard error
  t, c, tr, _ = timed(run, reps=1)
  per = t / int(tr.num_hvps)
  print(f"trace (defaults), batching {obj.batching!r}: {t:.1f} s, {int(tr.num_hvps)} HVPs, {1e3 * per:.1f} ms per HVP = "
        f"{per / t_one:.2f} x standalone (compile {c:.1f} s); estimate {float(tr.estimate):.3f} +- "
        f"{float(tr.ci95):.3f}, converged {bool(tr.converged)}")


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--train-steps", type=int, default=300)
  ap.add_argument("--reps", type=int, default=20)
  ap.add_argument("--trace-keys", type=int, default=100, help="keys of the trace coverage check (0: skip it)")
  ap.add_argument("--conv-only", action="store_true", help="only the convolutional-net curvature figures")
  args = ap.parse_args()
  if args.conv_only:
    conv_curvature()
    return

  obj, params = setup(args.train_steps)
  n = js.tree.size(params)
  loss, metrics = obj.loss(params)
  print(f"model 64-256-256-10 ReLU, {n} parameters; digits N={obj.num_examples}, batch 512; "
        f"after {args.train_steps} Adam steps: loss {float(loss):.4f}, accuracy {float(metrics['accuracy']):.4f}")
  print(f"devices: {jax.devices()}")

  grad = jax.jit(jax.grad(obj.value))
  hvp = jax.jit(lambda p, v: js.hessian.hvp(obj, p, v))
  v = js.tree.normal_like(jax.random.key(1), params)
  t_grad, c_grad, _, u_grad = timed(grad, params, reps=args.reps)
  t_hvp, c_hvp, _, u_hvp = timed(hvp, params, v, reps=args.reps)
  print(f"gradients/s {1 / t_grad:8.1f}   ({1e3 * t_grad:.2f} ms wall, {1e3 * u_grad:.2f} ms CPU each, "
        f"compile {c_grad:.2f} s)")
  print(f"HVPs/s      {1 / t_hvp:8.1f}   ({1e3 * t_hvp:.2f} ms wall, {1e3 * u_hvp:.2f} ms CPU each, "
        f"compile {c_hvp:.2f} s)")
  print(f"HVP cost / gradient cost = {t_hvp / t_grad:.2f} (wall), {u_hvp / u_grad:.2f} (CPU)")

  lanczos_step_cost(obj, params, t_hvp)
  pyhessian_hvp_rate(args.train_steps, t_hvp)
  eigen_table(args.train_steps)

  run = lambda: js.hessian.trace(obj, params, key=jax.random.key(3), rtol=0.01, min_probes=10, max_probes=20000,
                                 block_size=10, batch_size=None)
  t_tr, c_tr, tr, u_tr = timed(run, reps=1)
  print(f"trace {float(tr.estimate):.4f} +- {float(tr.stderr):.4f} (SE/estimate {float(tr.stderr / tr.estimate):.4f}, "
        f"converged {bool(tr.converged)}): {int(tr.num_hvps)} HVPs, {t_tr:.2f} s wall, {u_tr:.2f} s CPU "
        f"(compile {c_tr:.2f} s)")
  per_leaf = dict(zip(js.tree.leaf_names(params), (float(x) for x in jax.tree.leaves(tr.per_leaf))))
  print("per-leaf traces: " + ", ".join(f"{k} {val:.3f}" for k, val in per_leaf.items()))
  conv_curvature()
  if args.trace_keys:
    trace_calibration(args.train_steps, keys=args.trace_keys)


TRACE_WIDTHS = (64, 32, 32, 10)
"""The 3,466-parameter MLP of the trace calibration (and of the issue's float64 reference spectrum)."""


def trace_calibration(train_steps: int, *, keys: int = 100, rtol: float = 0.01) -> None:
  """HVPs to SE < ``rtol`` per method, and the coverage of the 95 % interval over keys, against the dense trace.

  All in float64 on the 64-32-32-10 MLP (3,466 parameters): the reference is
  ``trace(dense_hessian)``.
  """
  with jax.enable_x64(True):
    obj, params = setup(train_steps, widths=TRACE_WIDTHS, dtype=np.float64)
    exact = float(jnp.trace(js.hessian.dense_hessian(obj, params)))
    print(f"\ntrace calibration: {TRACE_WIDTHS} MLP, {js.tree.size(params)} parameters, float64; "
          f"dense trace {exact:.6f}")
    print(f"{'method':>22} {'keys':>5} {'HVPs mean':>10} {'min':>6} {'max':>6} {'converged':>10} "
          f"{'|err|/SE max':>12} {'s/run':>7}")
    for method, sketch, nkeys in (("hutchinson", 0, 3), ("hutch++", 10, 10), ("hutch++", 20, 10),
                                  ("hutch++", 40, 10)):
      run = jax.jit(lambda k, m=method, s=sketch: js.hessian.trace(k, obj, params, rtol=rtol, method=m,
                                                                   sketch_size=max(s, 1), max_probes=20000))
      jax.block_until_ready(run(jax.random.key(100)))  # compile
      t = time.perf_counter()
      res = [jax.block_until_ready(run(jax.random.key(100 + i))) for i in range(nkeys)]
      secs = (time.perf_counter() - t) / nkeys
      hvps = np.array([int(r.num_hvps) for r in res])
      z = max(abs(float(r.estimate) - exact) / float(r.stderr) for r in res)
      name = method if method == "hutchinson" else f"{method} sketch {sketch}"
      print(f"{name:>22} {nkeys:>5} {hvps.mean():>10.1f} {hvps.min():>6} {hvps.max():>6} "
            f"{sum(bool(r.converged) for r in res):>6}/{nkeys:<3} {z:>12.2f} {secs:>7.2f}")
    run = jax.jit(jax.vmap(lambda k: js.hessian.trace(k, obj, params, rtol=rtol)))
    t = time.perf_counter()
    tr = run(jax.random.split(jax.random.key(7), keys))
    lo, hi = (np.asarray(x) for x in tr.interval())
    covered = float(np.mean((lo <= exact) & (exact <= hi)))
    print(f"default (hutch++, sketch 20, pilot 20), {keys} keys: 95 % interval covers the dense trace in "
          f"{100 * covered:.0f} % (binomial SE {100 * np.sqrt(0.95 * 0.05 / keys):.1f} %), converged "
          f"{int(np.sum(tr.converged))}/{keys}, HVPs mean {float(np.mean(tr.num_hvps)):.1f}, "
          f"{time.perf_counter() - t:.1f} s with compilation")


if __name__ == "__main__":
  main()
