"""The prepared accelerator run: every figure of the GPU benchmark in one command, one Markdown table.

Run through ``bash benchmarks/device.sh`` (it installs the carried wheels and
sets ``PYTHONPATH``); ``--dry-run`` runs the very same code at tiny sizes on a
CPU in about a minute (~2 minutes on 2 busy cores; the tests do). Figures, each measured in this run
with the device, the jax version and the compile time beside it:

1. ``resnet20`` / ``resnet56`` (``short``: with shortcuts, ``noshort``:
   without), bfloat16 and float32 compute: a 51×51 filter-normalised surface
   over 10,000 32×32×3 images (CIFAR-10 from ``--data-dir``, else synthetic of
   that shape; :mod:`benchmarks.resnet`): points/s, the whole grid's time
   (measured, or projected from the chunks that fit the part's time budget),
   peak device memory, the per-point loop's points/s on 20 points and the
   ratio, achieved forward TFLOP/s and its fraction of a matmul of the same
   dtype measured in the same run (``matmul``).
2. ``hvp56``: full-data Hessian-vector products per second and the top-5
   eigenvalues (time, HVPs, certified pairs) of ResNet-56 on the same images.
3. ``transformer``: the surface of ``examples/transformer_lm.py``'s model
   (at its initialisation: speed does not depend on the weights).
4. ``train56``: seconds per training epoch of ResNet-56 on 50,000 32×32
   images with the ``skip_transition`` ``full`` preset's optimiser (a few
   steps timed, projected to an epoch and to the preset's 300 epochs).

Every part runs in its own process, in order of priority, with a time budget
(``--budget-s`` shared out by :data:`PARTS`) and a hard timeout: a part whose
whole grid does not fit measures as many chunks as fit and projects; a part
that fails or times out records its error and the run goes on; the table
(``$OUT/device.md``) and the raw numbers (``$OUT/device.json``) are rewritten
after every part, so a run stopped from outside keeps what it measured. One
chunk of the ResNet-56 float32 surface is traced with ``jax.profiler`` into
``$OUT/trace.tar.gz``.

Peak memory is the process's ``peak_bytes_in_use``; bfloat16 is measured
before float32 in the same process, so the float32 figure is the larger of
the two (the float32 surface's own, whenever it needs more).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import math
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import traceback
from typing import Any, Callable

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
GRID = 51


@dataclasses.dataclass(frozen=True)
class Sizes:
  """Problem sizes of a run (the real one, or the dry run's)."""

  images: int = 10_000
  batch_size: int = 512
  grid: int = GRID
  loop_points: int = 20
  depths: tuple[int, int] = (20, 56)
  train_images: int = 50_000
  train_batch: int = 128
  train_steps: int = 20
  max_hvps: int = 300
  hvp_images: int | None = None  # images of the HVP's objective, in one batch when set (None: images, batch_size)
  hvp_reps: int = 10
  matmul_n: int = 8192
  matmul_reps: int = 50
  lm_sequences: int = 1024
  dry_run: bool = False


DRY = Sizes(images=100, batch_size=32, grid=3, loop_points=2, depths=(8, 8), train_images=256, train_batch=32,
            train_steps=2, max_hvps=12, hvp_images=16, hvp_reps=2, matmul_n=256, matmul_reps=2, lm_sequences=8, dry_run=True)


@dataclasses.dataclass(frozen=True)
class Part:
  name: str
  budget_s: float  # its share of the default 450 s budget: scaled with --budget-s
  run: str  # name of the child function below


# Priority order (the headline first): a run short of time skips the last ones.
PARTS = (
    Part("matmul", 20, "_part_matmul"),
    Part("resnet56-short", 110, "_part_resnet"),
    Part("hvp56", 60, "_part_hvp"),
    Part("train56", 50, "_part_train"),
    Part("resnet56-noshort", 70, "_part_resnet"),
    Part("resnet20-short", 50, "_part_resnet"),
    Part("resnet20-noshort", 50, "_part_resnet"),
    Part("transformer", 40, "_part_transformer"),
)
TABLE_ORDER = ("matmul", "resnet20-short", "resnet20-noshort", "resnet56-short", "resnet56-noshort", "hvp56",
               "transformer", "train56")
TARGETS = {"grid_s": 300.0, "speedup": 10.0, "compile_s": 60.0}


# ----------------------------------------------------------------------------- the child's measurements
class _Recorder:
  """Rows of one part, rewritten to ``path`` after each one (a killed part keeps what it measured)."""

  def __init__(self, path: str, part: str):
    self.path, self.part, self.rows, self.start = path, part, [], time.time()

  def add(self, variant: str, figure: str, value: Any, unit: str = "", *, compile_s: float | None = None,
          target: str | None = None, met: bool | None = None, note: str = "") -> None:
    self.rows.append({"part": self.part, "variant": variant, "figure": figure, "value": value, "unit": unit,
                      "compile_s": compile_s, "target": target, "met": met, "note": note})
    print(f"[{self.part} {time.time() - self.start:6.1f} s] {variant}: {figure} = {value} {unit}".rstrip(), flush=True)
    self.flush()

  def error(self, variant: str, exc: BaseException) -> None:
    traceback.print_exc()
    self.add(variant, "error", f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}")

  def flush(self) -> None:
    with open(self.path + ".tmp", "w") as f:
      json.dump(self.rows, f, indent=1)
    os.replace(self.path + ".tmp", self.path)


def _peak_bytes() -> int | None:
  """The device's ``peak_bytes_in_use`` so far in this process (``None`` where the backend has no memory stats)."""
  import jax

  stats = jax.devices()[0].memory_stats()
  return None if not stats or "peak_bytes_in_use" not in stats else int(stats["peak_bytes_in_use"])


def _timed(fn: Callable[[], Any]) -> tuple[float, Any]:
  import jax

  t = time.perf_counter()
  out = jax.block_until_ready(fn())
  return time.perf_counter() - t, out


def _surface(rec: _Recorder, variant: str, obj, params, dirs, flops: float, s: Sizes, deadline: float, *,
             grid_target: bool, trace_to: str | None = None) -> None:
  """The surface figures of one objective: compile, points/s, whole grid, memory, loop, ratio, TFLOP/s.

  Order: compile (one chunk), one warm chunk, the per-point loop, then as many
  chunks of the grid as fit before ``deadline`` (the whole grid when it fits,
  else the first chunks, projected to the whole grid).
  """
  import jax

  import jaxscape as js
  from jaxscape import surface as jsurf
  from surface import time_per_point

  ndev = jax.device_count()
  chunk = math.ceil(jsurf.default_chunk_size(obj, params, ndev) / ndev) * ndev
  one_chunk = dict(ranges=[(0, 1, chunk), (0, 0, 1)], chunk_size=chunk, chunks_per_call=1, quiet=True)
  first_s, _ = _timed(lambda: js.loss_surface(obj, params, dirs, **one_chunk).loss)
  chunk_s, _ = _timed(lambda: js.loss_surface(obj, params, dirs, **one_chunk).loss)
  compile_s = max(first_s - chunk_s, 0.0)
  rec.add(variant, "compile", compile_s, "s", compile_s=compile_s, target=f"< {TARGETS['compile_s']:g} s",
          met=compile_s < TARGETS["compile_s"], note=f"chunk {chunk} points, {obj.num_examples} examples, "
          f"batches of {obj.batch_size}; one chunk {chunk_s:.3g} s")

  loop_total, loop_pps = _timed(lambda: time_per_point(obj, params, dirs, s.loop_points))
  loop_compile = max(loop_total - s.loop_points / loop_pps, 0.0)
  rec.add(variant, "per-point loop", loop_pps, "points/s", compile_s=loop_compile,
          note=f"{s.loop_points} points, one jitted full-data loss per point")

  total = s.grid * s.grid
  num_chunks = math.ceil(total / chunk)
  fit = int((deadline - time.time()) / max(chunk_s, 1e-6))
  measure = min(max(fit, 1), num_chunks)
  part = None if measure >= num_chunks else (0, math.ceil(total / (measure * chunk)))
  surf = js.loss_surface(obj, params, dirs, x=(-1, 1, s.grid), y=(-1, 1, s.grid), chunk_size=chunk, chunks_per_call=1,
                         part=part, quiet=True)
  peak = _peak_bytes()
  done, wall, pps = surf.meta["num_done"], surf.meta["wall_time_s"], surf.meta["points_per_second"]
  grid_s = wall if part is None else num_chunks * wall / math.ceil(done / chunk)
  how = "measured" if part is None else f"projected from {done} points ({math.ceil(done / chunk)} chunks)"
  rec.add(variant, "points/s", pps, "points/s", compile_s=compile_s, note=f"{done} of {total} points")
  name = f"{s.grid}x{s.grid} grid"
  if grid_target:
    rec.add(variant, name, grid_s, "s", compile_s=compile_s, target=f"< {TARGETS['grid_s']:g} s",
            met=grid_s < TARGETS["grid_s"], note=how)
  else:
    rec.add(variant, name, grid_s, "s", compile_s=compile_s, note=how)
  rec.add(variant, "peak device memory", "n/a" if peak is None else peak / 2**30, "" if peak is None else "GiB",
          compile_s=compile_s, note="process peak (backend has no memory stats)" if peak is None else "process peak")
  speedup = pps / loop_pps
  rec.add(variant, "speed-up over the loop", speedup, "x", compile_s=compile_s,
          target=f">= {TARGETS['speedup']:g}x", met=speedup >= TARGETS["speedup"])
  achieved = pps * obj.num_examples * flops / 1e12
  rec.add(variant, "achieved", achieved, "TFLOP/s", compile_s=compile_s,
          note=f"forward-equivalent, {flops / 1e6:.4g} MFLOP/example (XLA cost analysis)")
  if trace_to is not None and time.time() + 3 * chunk_s < deadline:
    _trace_chunk(trace_to, lambda: js.loss_surface(obj, params, dirs, **one_chunk).loss)


def _trace_chunk(tarball: str, run_chunk: Callable[[], Any]) -> None:
  """A ``jax.profiler`` trace of one chunk, packed into ``tarball`` (results come back as plain files, 2 folders deep)."""
  import jax

  trace_dir = tarball + ".d"
  with jax.profiler.trace(trace_dir):
    jax.block_until_ready(run_chunk())
  with tarfile.open(tarball, "w:gz") as tar:
    tar.add(trace_dir, arcname="trace")
  shutil.rmtree(trace_dir, ignore_errors=True)
  if os.path.getsize(tarball) > 15 * 2**20:  # what comes back from the device machine is at most 16 MiB a file
    os.remove(tarball)
    print("trace dropped: over 15 MiB", flush=True)


def _dtypes():
  import jax.numpy as jnp

  return (("bfloat16", jnp.bfloat16), ("float32", None))


def _part_matmul(rec: _Recorder, s: Sizes, args, deadline: float) -> None:
  import jax.numpy as jnp

  from surface import matmul_gflops

  for name, dtype in (("bfloat16", jnp.bfloat16), ("float32", jnp.float32)):
    try:
      t, gflops = _timed(lambda: matmul_gflops(s.matmul_n, s.matmul_reps, dtype))
      rec.add(name, "matmul", gflops / 1e3, "TFLOP/s", compile_s=max(t - 2 * s.matmul_n**3 * s.matmul_reps
                                                                              / gflops / 1e9, 0.0),
              note=f"{s.matmul_n}^3, default precision" + (" (TF32 on recent NVIDIA GPUs)" if name == "float32" else ""))
    except Exception as exc:  # noqa: BLE001  (a failed figure is a row of the table)
      rec.error(name, exc)


def _resnet_setup(s: Sizes, args, depth: int, shortcuts: bool, images: int | None = None):
  """:func:`resnet.setup` over ``s.images`` in batches of ``s.batch_size`` (``images``: that many, one batch)."""
  from resnet import setup

  return setup(images or s.images, args.data_dir, images or s.batch_size, depth=depth, shortcuts=shortcuts)


def _surfaces(rec: _Recorder, label: str, obj, params, dirs, flops: float, s: Sizes, deadline: float, *,
              grid_target: bool, trace_to: str | None = None) -> None:
  """:func:`_surface` in bfloat16, then float32 compute; each gets half of the time left (the last: all of it)."""
  dtypes = _dtypes()
  for i, (name, dtype) in enumerate(dtypes):
    # bfloat16 first: the process's peak memory after it is its own
    share = time.time() + (deadline - time.time()) / (len(dtypes) - i)
    try:
      _surface(rec, f"{label} {name}", obj.with_compute_dtype(dtype), params, dirs, flops, s, share,
               grid_target=grid_target, trace_to=trace_to if name == "float32" else None)
    except Exception as exc:  # noqa: BLE001  (a failed figure is a row of the table)
      rec.error(f"{label} {name}", exc)


def _part_resnet(rec: _Recorder, s: Sizes, args, deadline: float) -> None:
  large = rec.part.startswith("resnet56")
  depth = s.depths[1] if large else s.depths[0]
  shortcuts = rec.part.endswith("-short")
  obj, params, dirs, flops = _resnet_setup(s, args, depth, shortcuts)
  trace = rec.part == "resnet56-short" and not args.no_trace
  _surfaces(rec, f"ResNet-{depth}" + ("" if shortcuts else "-noshort"), obj, params, dirs, flops, s, deadline,
            grid_target=large, trace_to=os.path.join(args.out, "trace.tar.gz") if trace else None)


def _part_hvp(rec: _Recorder, s: Sizes, args, deadline: float) -> None:
  import jax
  import numpy as np

  import jaxscape as js

  # The dry run's HVP is over 16 images in one batch: on a CPU, XLA's gradients of convolutions inside lax.scan
  # (and the eigensolver's loop) are 5-15x slower than alone.
  obj, params, dirs, _ = _resnet_setup(s, args, s.depths[1], True, s.hvp_images)
  variant = f"ResNet-{s.depths[1]} float32"
  hvp = jax.jit(js.hessian.hvp)  # the objective (and its data) is an argument, not a compiled-in constant
  first_s, _ = _timed(lambda: hvp(obj, params, dirs[0]))
  t, _ = _timed(lambda: [hvp(obj, params, dirs[0]) for _ in range(s.hvp_reps)])
  per = t / s.hvp_reps
  compile_s = max(first_s - per, 0.0)
  rec.add(variant, "HVPs/s", 1 / per, "HVP/s", compile_s=compile_s,
          note=f"full data ({obj.num_examples} images), {js.tree.size(params)} parameters")
  # as many HVPs as fit in what is left, once the eigensolver has compiled (about as long as the HVP did)
  fit = int((deadline - time.time() - 1.5 * compile_s) / per * 0.8)
  budget = int(min(max(fit, 12), s.max_hvps))
  t, res = _timed(lambda: js.hessian.eigenvalues(jax.random.key(3), obj, params, k=5, tol=1e-3, max_hvps=budget))
  values = ", ".join(f"{v:.4g}" for v in np.asarray(res.values))
  rec.add(variant, "top-5 eigenvalues", values, compile_s=None, note=f"tol 1e-3, at most {budget} HVPs")
  rec.add(variant, "top-5 time", t, "s", compile_s=None, note="compile included")
  rec.add(variant, "top-5 HVPs", int(res.num_hvps), "HVPs")
  rec.add(variant, "top-5 certified", int(np.sum(np.asarray(res.converged))), "of 5")


def _part_train(rec: _Recorder, s: Sizes, args, deadline: float) -> None:
  import jax

  from experiments.skip_transition import CONFIGS
  from jaxscape import models, train
  from jaxscape.adapters.nnx import as_pure
  from resnet import load_data

  preset = dict(CONFIGS["full"]["main"]["train"])
  epochs = preset["epochs"]
  preset["batch_size"] = s.train_batch
  ds = load_data(s.train_images, args.data_dir)
  net = models.build("resnet", 0, depth=s.depths[1], num_classes=10, in_channels=3)
  model = as_pure(net)  # one (train_apply, apply): the second run reuses the first's compilation
  xy = (jax.device_put(ds.x_train), jax.device_put(ds.y_train))
  run = lambda: train.train(jax.random.key(0), model, xy, preset, stop_after_steps=s.train_steps)[0]  # noqa: E731
  first_s, _ = _timed(run)
  t, _ = _timed(run)
  per_step = t / s.train_steps
  steps_per_epoch = ds.num_train // s.train_batch
  variant = f"ResNet-{s.depths[1]} float32, batch {s.train_batch}"
  rec.add(variant, "seconds per step", per_step, "s", compile_s=max(first_s - t, 0.0),
          note=f"{s.train_steps} steps timed; SGD Nesterov 0.9, weight decay (skip_transition full)")
  rec.add(variant, "seconds per epoch", per_step * steps_per_epoch, "s", compile_s=max(first_s - t, 0.0),
          note=f"projected: {steps_per_epoch} steps over {ds.num_train} images")
  rec.add(variant, f"{epochs} epochs (full preset)", per_step * steps_per_epoch * epochs / 3600, "h",
          compile_s=max(first_s - t, 0.0), note="projected, evaluations not included")


def _part_transformer(rec: _Recorder, s: Sizes, args, deadline: float) -> None:
  import jax
  from flax import nnx

  import jaxscape as js
  from jaxscape import models

  sys.path.insert(0, os.path.join(ROOT, "examples"))
  import transformer_lm as lm

  cfg = dataclasses.replace(lm.SMOKE if s.dry_run else lm.Config(), eval_sequences=s.lm_sequences)
  ids, alphabet = lm.tokenize(lm.corpus())
  held_out = {k: v[-cfg.eval_sequences:] for k, v in lm.sequences(ids, cfg.seq_len).items()}
  model = lm.CharLM(len(alphabet), cfg, nnx.Rngs(0))
  model.eval()
  obj, params = js.Objective.from_model(model, data=held_out, inputs="input_ids", targets="labels",
                                        batch_size=min(cfg.eval_sequences, 256), name="stdlib-chars-heldout")
  dirs = js.random_directions(jax.random.key(0), params, n=2, layout=obj.layout)
  apply, _, state, _ = js.adapters.split(model)
  flops = models.flops_per_example(apply, params, state, held_out["input_ids"][0])
  # flax's nnx.Embed returns its own param_dtype (float32) whatever the table's dtype, so under a bfloat16
  # compute_dtype the blocks meet float32 activations and bfloat16 weights: standard promotion computes those in
  # float32 (strict promotion refuses them). The bfloat16 rows are of that mixed model.
  with jax.numpy_dtype_promotion("standard"):
    _surfaces(rec, f"d{cfg.d_model} x{cfg.num_layers} layers, T={cfg.seq_len}", obj, params, dirs, flops, s,
              deadline, grid_target=False)


def _child(args, s: Sizes) -> None:
  sys.path.insert(0, HERE)  # benchmarks/resnet.py, benchmarks/surface.py
  sys.path.insert(0, ROOT)  # experiments/
  import jax

  part = next(p for p in PARTS if p.name == args.part)
  rec = _Recorder(args.result, part.name)
  if part.name == "matmul":
    dev = jax.devices()[0]
    rec.add("", "device", f"{dev.device_kind} ({dev.platform}) x{jax.device_count()}",
            note=f"jax {jax.__version__}, {os.cpu_count()} CPU cores")
  deadline = time.time() + args.part_budget
  try:
    globals()[part.run](rec, s, args, deadline)
  except Exception as exc:  # noqa: BLE001
    rec.error("", exc)


# ----------------------------------------------------------------------------- the parent: parts, budget, table
def _fmt(x: Any) -> str:
  if x is None:
    return ""
  if isinstance(x, float):
    return f"{x:.4g}"
  return str(x)


def _target_cell(row: dict) -> str:
  if not row.get("target"):
    return ""
  if row["met"]:
    return f"{row['target']}: met"
  bound = float(row["target"].split()[1].rstrip("x"))
  value = float(row["value"])
  by = value / bound if row["target"].startswith("<") else bound / max(value, 1e-12)
  return f"{row['target']}: missed by {by:.2f}x"


def _with_fractions(rows: list[dict]) -> list[dict]:
  """Adds to each ``achieved`` row its fraction of the same dtype's matmul rate measured in this run."""
  peaks = {r["variant"]: r["value"] for r in rows if r["figure"] == "matmul" and isinstance(r["value"], float)}
  out = []
  for r in rows:
    if r["figure"] == "achieved" and isinstance(r["value"], (int, float)):
      dtype = "bfloat16" if r["variant"].endswith("bfloat16") else "float32"
      if peaks.get(dtype):
        r = dict(r, fraction_of_matmul=r["value"] / peaks[dtype],
                 note=f"{100 * r['value'] / peaks[dtype]:.3g} % of the {dtype} matmul; " + r["note"])
    out.append(r)
  return out


def table(rows: list[dict], env: dict) -> str:
  """The Markdown table of every row (parts in :data:`TABLE_ORDER`), under a line naming the run."""
  device = next((r["value"] for r in rows if r["figure"] == "device"), "unknown device")
  head = (f"jaxscape device run, {env['date']}, {device}, jax {env['jax']}" + (" (DRY RUN: tiny sizes)" if
          env["dry_run"] else "") + f", {env['wall_s']:.0f} s wall of a {env['budget_s']:.0f} s budget\n\n")
  lines = ["| part | variant | figure | value | unit | compile (s) | target | device | jax | note |",
           "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
  order = {p: i for i, p in enumerate(TABLE_ORDER)}
  for r in sorted(rows, key=lambda r: order.get(r["part"], len(order))):
    if r["figure"] == "device":
      continue
    cells = (r["part"], r["variant"], r["figure"], _fmt(r["value"]), r["unit"], _fmt(r["compile_s"]),
             _target_cell(r), device, env["jax"], r["note"])
    lines.append("| " + " | ".join(str(c).replace("|", "/") for c in cells) + " |")
  return head + "\n".join(lines) + "\n"


def _write(out: str, rows: list[dict], env: dict) -> str:
  rows = _with_fractions(rows)
  text = table(rows, env)
  with open(os.path.join(out, "device.md"), "w") as f:
    f.write(text)
  with open(os.path.join(out, "device.json"), "w") as f:
    json.dump({"env": env, "rows": rows}, f, indent=1)
  return text


def _parent(args, argv: list[str]) -> str:
  import jax  # the version only: the parent never touches a device (the parts own it, one at a time)

  os.makedirs(args.out, exist_ok=True)
  start = time.time()
  env = {"date": datetime.date.today().isoformat(), "jax": jax.__version__, "python": sys.version.split()[0],
         "dry_run": args.dry_run, "budget_s": args.budget_s, "wall_s": 0.0, "parts": {}}
  wanted = args.parts.split(",") if args.parts else [p.name for p in PARTS]
  unknown = sorted(set(wanted) - {p.name for p in PARTS})
  if unknown:
    raise SystemExit(f"--parts: unknown part(s) {unknown}; expected some of {[p.name for p in PARTS]}")
  parts = [p for p in PARTS if p.name in wanted]
  # One compilation cache for the run's processes, fresh each run: the setup's many small programs (model
  # initialisation, directions: ~15 s per process on a CPU) compile once; every compile time in the table is
  # that of a program compiled once in the run.
  cache = tempfile.mkdtemp(prefix="jaxscape-device-cache-")
  child_env = dict(os.environ, JAX_COMPILATION_CACHE_DIR=cache, JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
                   JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")
  scale = args.budget_s / sum(p.budget_s for p in parts)
  rows: list[dict] = []
  for p in parts:
    left = args.budget_s - (time.time() - start)
    planned = p.budget_s * scale
    if left < min(planned, 10.0):
      rows.append({"part": p.name, "variant": "", "figure": "skipped", "value": f"{left:.0f} s of the budget left",
                   "unit": "", "compile_s": None, "target": None, "met": None, "note": ""})
      continue
    # a part may overrun its share by half (compile times are unknown before the first run), never the whole budget
    hard = max(min(left, 1.5 * planned + 15), 1.0)
    result = os.path.join(args.out, f".part-{p.name}.json")
    cmd = [sys.executable, os.path.abspath(__file__), *argv, "--part", p.name, "--part-budget",
           f"{min(planned, left):.1f}", "--result", result]
    print(f"== {p.name}: {min(planned, left):.0f} s planned, {hard:.0f} s at most", flush=True)
    t = time.time()
    try:
      rc = subprocess.run(cmd, timeout=hard, env=child_env).returncode
      status = "ok" if rc == 0 else f"exited with status {rc}"
    except subprocess.TimeoutExpired:
      status = f"timed out after {hard:.0f} s"
    env["parts"][p.name] = {"seconds": time.time() - t, "status": status}
    if os.path.exists(result):
      with open(result) as f:
        rows.extend(json.load(f))
      os.remove(result)
    if status != "ok":
      rows.append({"part": p.name, "variant": "", "figure": "error", "value": status, "unit": "", "compile_s": None,
                   "target": None, "met": None, "note": "the log has its output"})
    env["wall_s"] = time.time() - start
    _write(args.out, rows, env)
  shutil.rmtree(cache, ignore_errors=True)
  env["wall_s"] = time.time() - start
  return _write(args.out, rows, env)


def _parser() -> argparse.ArgumentParser:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--dry-run", action="store_true", help="tiny sizes: the same code on a CPU in a minute or two")
  ap.add_argument("--data-dir", default=None, help="CIFAR-10 (python batches); default: synthetic CIFAR-shaped data")
  ap.add_argument("--out", default=os.environ.get("OUT") or os.path.join(ROOT, "runs", "device"),
                  help="where device.md, device.json and trace.tar.gz go (default: $OUT, else runs/device)")
  ap.add_argument("--budget-s", type=float, default=None,
                  help="seconds for all parts together (default: 450; dry run: 600, never reached)")
  ap.add_argument("--parts", default=None, help=f"comma-separated subset of {','.join(p.name for p in PARTS)}")
  ap.add_argument("--no-trace", action="store_true", help="no jax.profiler trace")
  ap.add_argument("--part", default=None, help=argparse.SUPPRESS)
  ap.add_argument("--part-budget", type=float, default=None, help=argparse.SUPPRESS)
  ap.add_argument("--result", default=None, help=argparse.SUPPRESS)
  return ap


def main(argv: list[str] | None = None) -> None:
  argv = sys.argv[1:] if argv is None else argv
  args = _parser().parse_args(argv)
  if args.budget_s is None:
    args.budget_s = 600.0 if args.dry_run else 450.0
  if args.budget_s <= 0:
    raise SystemExit(f"--budget-s must be positive; got {args.budget_s}")
  sizes = DRY if args.dry_run else Sizes()
  if args.part:
    return _child(args, sizes)
  print(_parent(args, argv))


if __name__ == "__main__":
  main()
