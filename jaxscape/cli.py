"""The ``jaxscape`` command line (the runner behind ``make experiment`` is :mod:`jaxscape.experiment`).

Commands (``jaxscape <command> --help`` for all flags)::

  jaxscape surface --demo --x=-1:1:51 --y=-1:1:51 --out runs/demo
  jaxscape surface --checkpoint runs/train --x=-1:1:51 --y=-1:1:51 --norm filter --ignore biasbn
  jaxscape surface --checkpoint A --checkpoint2 B --x=-0.5:1.5:41      # 1-D from A to B
  jaxscape surface --checkpoint A --directions hessian --x=-1:1:51 --y=-1:1:51   # along the top-2 eigenvectors
  jaxscape plot runs/demo --log                                          # re-plot, no recomputation
  jaxscape surface --demo --x=-1:1:51 --y=-1:1:51 --chunk 3/8 --out runs/big   # one of 8 parts (0-based)
  jaxscape merge runs/big                                                # join the 8 parts, as one run
  jaxscape train --model resnet --depth 20 --dataset digits --epochs 30 --out runs/r20   # -> a --checkpoint

The surface flags mirror the original loss-landscape tool (``--x``, ``--y``,
``--xnorm``/``--norm``, ``--xignore``/``--ignore``, ``--model_file2`` ->
``--checkpoint2``, ``--model_file3`` -> ``--checkpoint3``), with its defaults
fixed: filter normalisation and ``biasbn`` are on unless you say otherwise
(for ``--directions hessian`` both are off: the axes are the unit eigenvectors).
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any, Callable, Sequence

__all__ = ["main", "demo_network", "COMMANDS"]

COMMANDS: dict[str, Callable[[argparse._SubParsersAction], None]] = {}
"""Subcommand registrars: ``name -> fn(subparsers)``; each adds its parser and sets ``func``."""


def command(name: str):
  def register(fn):
    COMMANDS[name] = fn
    return fn

  return register


# ----------------------------------------------------------------------------- shared helpers


def demo_network(seed: int = 0, *, widths: Sequence[int] = (32, 32), epochs: int = 40, learning_rate: float = 3e-3,
                 batch_size: int = 64) -> tuple[Any, Any, Any]:
  """A small ReLU MLP trained with Adam on scikit-learn's digits (seconds on a CPU).

  Returns:
    ``(model, dataset, history)``: the trained ``nnx`` module, the
    :class:`~jaxscape.data.Dataset` and the training history.
  """
  import jax

  from . import data, models, train
  from .adapters.nnx import update

  ds = data.load("digits", flatten=True)
  model = models.build("mlp", seed, in_features=int(ds.x_train.shape[1]), widths=list(widths), out_features=ds.num_classes)
  params, state, history = train.train(jax.random.key(seed), model, ds, optimizer="adam", learning_rate=learning_rate,
                                       batch_size=batch_size, epochs=epochs)
  return update(model, params, state), ds, history


def _objective(model: Any, ds: Any, split: str, batch_size: int, loss: str | None = None):
  from .objective import Objective
  from .sources import UserModel

  pair = ds.train if split == "train" else ds.test
  if isinstance(model, UserModel):
    return model.objective(pair, loss=loss or "cross_entropy", batch_size=batch_size, name=f"{ds.name}-{split}")
  return Objective.from_model(model, data=pair, batch_size=batch_size, name=f"{ds.name}-{split}",
                              loss=loss or "cross_entropy")


def _add_source_flags(p: argparse.ArgumentParser) -> None:
  src = p.add_mutually_exclusive_group(required=True)
  src.add_argument("--checkpoint", help="checkpoint directory written by `jaxscape train`")
  src.add_argument("--demo", action="store_true", help="train a small MLP on digits first (seconds)")
  src.add_argument("--model", default=None, metavar="PKG.MODULE:FACTORY",
                   help="your own model: FACTORY(**--model-kwargs) returns a flax.nnx, flax.linen or equinox module or "
                        "an (apply(params, x), params) pair (also path/to/file.py:FACTORY); needs --data")
  p.add_argument("--model-kwargs", type=_json_object, default={}, metavar="JSON",
                 help="--model: keyword arguments of the factory, a JSON object")
  p.add_argument("--params", "--model_file", dest="params", default=None, metavar="PATH",
                 help="--model: its parameters from an orbax directory or a .msgpack, .npz or .safetensors file "
                      "(leaves matched by name; default: the factory's own)")
  p.add_argument("--data", default=None, metavar="NAME|PKG.MODULE:FN|FILE.npz",
                 help="--model: a built-in dataset, FN() returning a Dataset or (x, y[, x_test, y_test]), or a .npz "
                      "with x, y (and x_test, y_test)")
  p.add_argument("--loss", default=None, choices=["cross_entropy", "binary_cross_entropy", "mse"],
                 help="the per-example loss (default cross_entropy; binary_cross_entropy takes logits)")
  p.add_argument("--demo-epochs", type=_int_at_least(1), default=40, help="training epochs of --demo")
  p.add_argument("--data-dir", default=None, help="directory of on-disk datasets (MNIST, CIFAR)")
  p.add_argument("--split", default="train", choices=["train", "test"], help="data split the loss is averaged over")
  p.add_argument("--batch-size", type=_int_at_least(1), default=512,
                 help="examples per batch of the loss (the mean over the whole split is exact whatever the size)")
  p.add_argument("--seed", type=_seed, default=0, help="seed of every random choice (directions, probes, --demo)")


def _json_object(text: str) -> dict[str, Any]:
  """An argparse type: a JSON object (``'{"width": 64}'``)."""
  import json

  try:
    value = json.loads(text)
  except json.JSONDecodeError as e:
    raise argparse.ArgumentTypeError(f"expected a JSON object such as '{{\"width\": 64}}'; got {text!r} ({e})") from None
  if not isinstance(value, dict):
    raise argparse.ArgumentTypeError(f"expected a JSON object such as '{{\"width\": 64}}'; got {text!r}")
  return value


def _source(args: argparse.Namespace) -> tuple[Any, Any, dict[str, Any]]:
  """``(model, dataset, record)`` from ``--demo``, ``--checkpoint`` or ``--model`` (a :class:`~jaxscape.sources.UserModel`)."""
  if args.model:
    from . import sources

    if args.data is None:
      raise ValueError("--model needs --data (a built-in dataset, PKG.MODULE:FN or a .npz file with x and y)")
    ds = sources.load_data(args.data, args.data_dir)
    model = sources.user_model(args.model, kwargs=args.model_kwargs, params_path=args.params,
                               example=ds.x_train[:1], seed=args.seed)
    return model, ds, {**model.record, "data": args.data, "loss": args.loss or "cross_entropy"}
  for flag in ("params", "data"):
    if getattr(args, flag) is not None:
      raise ValueError(f"--{flag} goes with --model (your own model); a --checkpoint or --demo brings its own")
  if args.demo:
    model, ds, _ = demo_network(args.seed, epochs=args.demo_epochs)
    return model, ds, {"demo": True, "seed": args.seed}
  model, ds = _load_checkpoint(args.checkpoint, args.data_dir)
  return model, ds, {"checkpoint": os.path.abspath(args.checkpoint)}


def _load_checkpoint(path: str, data_dir: str | None):
  from . import checkpoint

  model, _ = checkpoint.load_model(path)
  return model, checkpoint.load_dataset(path, data_dir=data_dir)


# ----------------------------------------------------------------------------- surface


@command("surface")
def _surface_parser(sub) -> None:
  p = sub.add_parser("surface", help="evaluate a 1-D or 2-D loss surface", description=_surface.__doc__)
  _add_source_flags(p)
  p.add_argument("--checkpoint2", help="second checkpoint: x direction = checkpoint2 - checkpoint (never normalised)")
  p.add_argument("--checkpoint3", help="third checkpoint: the plane through the three (needs --checkpoint2)")
  p.add_argument("--bn-policy", default="interpolate", choices=["interpolate", "frozen"],
                 help="between checkpoints: interpolate BatchNorm statistics with the weights (default, Li et al.'s "
                      "'states') or keep the first checkpoint's")
  p.add_argument("--x", default="-1:1:51", help="start:stop:num of the x axis (default -1:1:51)")
  p.add_argument("--y", default=None, help="start:stop:num of the y axis (omit for a 1-D curve)")
  p.add_argument("--directions", default="random", choices=["random", "hessian"],
                 help="random (filter-normalised Gaussian, Li et al.) or hessian: the top (--which largest) or bottom "
                      "Hessian eigenvectors at the checkpoint, by Lanczos, recorded with their eigenvalues")
  p.add_argument("--which", default="largest", choices=["largest", "smallest"],
                 help="--directions hessian: the largest or the smallest (most negative) eigenvalues' vectors")
  p.add_argument("--norm", "--xnorm", dest="norm", default=None, choices=["filter", "layer", "model", "none"],
                 help="direction normalisation (default: filter for random, none (unit eigenvectors) for hessian)")
  p.add_argument("--ignore", "--xignore", dest="ignore", default=None, choices=["biasbn", "none"],
                 help="biasbn: do not move biases and norm parameters (default for random; none for hessian)")
  p.add_argument("--orthogonalize", action="store_true", help="make y orthogonal to x")
  p.add_argument("--chunk-size", type=_int_at_least(1), default=None,
                 help="grid points evaluated at once (bounds memory; default from the device memory)")
  p.add_argument("--out", default=None, help="output directory (default runs/surface-<seed>)")
  p.add_argument("--overwrite", action="store_true",
                 help="replace what --out holds (a result of another config, a damaged file) instead of refusing; "
                      "without it, rerunning the same command resumes an interrupted run")
  p.add_argument("--curvature", default="none", choices=["none", "plane", "full", "both"],
                 help="curvature maps at every grid point: the 2x2 Hessian on the plot plane, and/or the full "
                      "Hessian's lambda_max, lambda_min, |lambda_min/lambda_max| and trace (heat maps)")
  p.add_argument("--lanczos-steps", type=_int_at_least(1), default=10, help="Lanczos steps per point for --curvature full")
  p.add_argument("--curvature-warm-start", type=_int_at_least(1), default=None, metavar="K",
                 help="--curvature full: start every point's Lanczos run from the extreme Ritz vectors of the nearest "
                      "point of a coarse grid (every K-th point per axis, cold runs of max(40, 4 x --lanczos-steps) "
                      "steps): lambda_min converges in fewer --lanczos-steps")
  p.add_argument("--vtk", action="store_true", help="also write surface.vtk for ParaView")
  p.add_argument("--log", action="store_true", help="log-scale figures")
  p.add_argument("--quiet", action="store_true", help="no progress bar")
  s = p.add_argument_group("scaling out")
  s.add_argument("--data-shards", type=_int_at_least(1), default=1,
                 help="split every data batch over this many devices (a grid x data mesh; batch size must divide)")
  s.add_argument("--chunk", type=_part, default=None, metavar="I/N",
                 help="evaluate only part I of N (0-based, as $SLURM_ARRAY_TASK_ID with --array=0-(N-1)) into "
                      "OUT/part-IIII-of-NNNN; join the parts with `jaxscape merge OUT`")
  s.add_argument("--distributed", action="store_true",
                 help="multi-host run: call jax.distributed.initialize() (auto-detected on TPU pods, SLURM, "
                      "Open MPI); run the same command on every host, process 0 writes")
  s.add_argument("--coordinator", default=None, metavar="HOST:PORT", help="explicit start-up: process 0's address")
  s.add_argument("--num-processes", type=int, default=None, help="explicit start-up: number of processes")
  s.add_argument("--process-id", type=int, default=None, help="explicit start-up: this process (0-based)")
  p.set_defaults(func=_surface)


def _part(text: str) -> tuple[int, int]:
  """``"i/n"`` (0-based ``i``) -> ``(i, n)``."""
  try:
    i, n = (int(v) for v in text.split("/"))
  except ValueError:
    raise argparse.ArgumentTypeError(f"expected I/N with integers, e.g. 3/8 (0-based I); got {text!r}") from None
  if n < 1 or not 0 <= i < n:
    raise argparse.ArgumentTypeError(f"expected I/N with 0 <= I < N (I is 0-based, as SLURM_ARRAY_TASK_ID with "
                                     f"--array=0-(N-1)); got {text!r}")
  return i, n


def _int_at_least(low: int) -> Callable[[str], int]:
  """An argparse type: an integer ``>= low``."""
  def parse(text: str) -> int:
    try:
      value = int(text)
    except ValueError:
      raise argparse.ArgumentTypeError(f"expected an integer >= {low}; got {text!r}") from None
    if value < low:
      raise argparse.ArgumentTypeError(f"expected an integer >= {low}; got {value}")
    return value

  return parse


def _float_in(low: float, high: float = float("inf"), *, low_open: bool = True) -> Callable[[str], float]:
  """An argparse type: a finite number in ``(low, high]`` (or ``[low, high]`` with ``low_open=False``)."""
  import math

  interval = f"{'(' if low_open else '['}{low:g}, {high:g}{']' if math.isfinite(high) else ')'}"

  def parse(text: str) -> float:
    try:
      value = float(text)
    except ValueError:
      raise argparse.ArgumentTypeError(f"expected a number in {interval}; got {text!r}") from None
    if not math.isfinite(value) or value < low or (low_open and value == low) or value > high:
      raise argparse.ArgumentTypeError(f"expected a finite number in {interval}; got {text!r}")
    return value

  return parse


def _seed(text: str) -> int:
  """An argparse type: a seed, an integer in ``[0, 2**32)`` (what ``jax.random.key`` takes whole)."""
  try:
    value = int(text)
  except ValueError:
    raise argparse.ArgumentTypeError(f"expected an integer seed in [0, 2**32); got {text!r}") from None
  if not 0 <= value < 2**32:
    raise argparse.ArgumentTypeError(f"expected an integer seed in [0, 2**32); got {value}")
  return value


def _init_distributed(args: argparse.Namespace) -> bool:
  """Starts the distributed runtime only when asked (--distributed or the explicit flags); returns whether it did."""
  explicit = (args.coordinator, args.num_processes, args.process_id)
  if not args.distributed and all(v is None for v in explicit):
    return False
  from . import distributed

  distributed.initialize(*explicit)
  return True


def _surface(args: argparse.Namespace) -> int:
  """Evaluates a loss surface, writes results.npz, meta.json and figures; resumes an interrupted run."""
  import jax

  _init_distributed(args)  # before any other JAX work
  from . import directions, distributed, plot, surface
  from . import io as jio

  out = _surface_out(args)
  # refusals before any loading or computing: an unwritable --out, a grid whose arrays cannot fit
  axes = [surface.parse_range(args.x, "--x")] + ([] if args.y is None else [surface.parse_range(args.y, "--y")])
  shape = tuple(a.size for a in reversed(axes))
  surface.check_host_memory(shape, ("loss",))
  if distributed.is_primary():  # the loss alone: loss_surface checks again with every map it stores
    jio.check_output_dir(out, what="--out", need_bytes=surface.grid.result_bytes(shape, 1))
  hessian_axes = args.directions == "hessian"
  norm = args.norm or ("none" if hessian_axes else "filter")
  ignore = args.ignore or ("none" if hessian_axes else "biasbn")
  ignore = None if ignore == "none" else ignore
  if args.checkpoint3 and not args.checkpoint2:
    raise ValueError("--checkpoint3 needs --checkpoint2 (the plane through three checkpoints)")
  if args.checkpoint2 and not args.checkpoint3 and args.y is not None:
    raise ValueError(f"--y {args.y} needs a plane: with --checkpoint2 alone the surface is the 1-D line from "
                     "--checkpoint to --checkpoint2; add --checkpoint3 for the plane through three, or drop --y")
  if args.checkpoint3 and args.y is None:
    raise ValueError("a plane through three checkpoints needs --y start:stop:num")
  given = [os.path.realpath(c) for c in (args.checkpoint, args.checkpoint2, args.checkpoint3) if c]
  if len(set(given)) < len(given):
    raise ValueError("--checkpoint, --checkpoint2 and --checkpoint3 must be different runs (the same one twice makes "
                     f"a zero direction or a degenerate plane); got {', '.join(given)}")
  model, ds, source = _source(args)
  obj, params = _objective(model, ds, args.split, args.batch_size, args.loss)
  if args.checkpoint2:
    others = [_objective(_load_checkpoint(c, args.data_dir)[0], ds, args.split, args.batch_size, args.loss)
              for c in (args.checkpoint2, args.checkpoint3) if c]
    states = [obj.state] + [o.state for o, _ in others] if args.bn_policy == "interpolate" else None
    source["checkpoint2"] = os.path.abspath(args.checkpoint2)
    if args.checkpoint3:
      source["checkpoint3"] = os.path.abspath(args.checkpoint3)
      dirs = directions.plane_directions(params, *(p for _, p in others), orthogonalize=args.orthogonalize,
                                         states=states)
    else:
      dirs = directions.interpolation_direction(params, others[0][1], *(states or ()))
  else:
    n = 1 if args.y is None else 2
    if hessian_axes:
      from . import hessian

      dirs = hessian.hessian_directions(jax.random.fold_in(jax.random.key(args.seed), 3), obj, params, n,
                                        which=args.which, norm=norm, ignore=ignore, layout=obj.layout)
    else:
      dirs = directions.random_directions(jax.random.key(args.seed), params, n, norm=norm, ignore=ignore,
                                          orthogonalize=args.orthogonalize, layout=obj.layout)
  y = args.y if dirs.n == 2 else None
  if dirs.n == 2 and y is None:
    raise ValueError("a plane needs --y start:stop:num")
  curvature = None if args.curvature == "none" else ("plane", "full") if args.curvature == "both" else args.curvature
  surf = surface.loss_surface(obj, params, dirs, x=args.x, y=y, chunk_size=args.chunk_size, out_dir=out,
                              quiet=args.quiet, config={"source": source}, curvature=curvature,
                              key=jax.random.fold_in(jax.random.key(args.seed), 2), lanczos_steps=args.lanczos_steps,
                              warm_start=args.curvature_warm_start, data_shards=args.data_shards, part=args.chunk,
                              overwrite=args.overwrite)
  if not distributed.is_primary():
    return 0
  if args.chunk is not None:
    i, n = args.chunk
    print(f"part {i}/{n} ({surf.meta['part_points']} of {surf.meta['num_points']} points) in "
          f"{surface.part_directory(out, i, n)}, {surf.num_nonfinite} non-finite; "
          f"when all {n} parts are done: jaxscape merge {out}")
    return 0
  paths = _figures(out, lambda: plot.save_figures(surf, out, log=args.log) + (
      [_vtk(surf, out, log=args.log)] if args.vtk and surf.ndim == 2 else []),
                   f"the surface is saved in {out!r}: draw the figures again with `jaxscape plot {out}`")
  print(f"surface {surf.loss.shape} in {out}: loss {float(_nanmin(surf.loss)):.4g} .. {float(_nanmax(surf.loss)):.4g}, "
        f"{surf.num_nonfinite} non-finite, {surf.meta['points_per_second'] or 0:.1f} points/s")
  for path in paths:
    print(f"  {path}")
  return 0


def _figures(out: str, draw: Callable[[], list[str]], saved: str) -> list[str]:
  """Draws figures after the numbers are saved; one that cannot be written is an error saying the numbers are kept."""
  try:
    return draw()
  except OSError as e:
    raise OSError(e.errno, f"could not write a figure in {out!r} ({e.strerror or e}"
                           f"{': ' + repr(e.filename) if e.filename else ''}); {saved}") from e


def _surface_out(args: argparse.Namespace) -> str:
  return args.out or f"runs/surface-{args.seed}"


def _surface_saved(args: argparse.Namespace) -> str:
  """What an interrupted ``surface`` left: the grid points saved in its (part) directory."""
  from . import io as jio
  from . import surface

  out = _surface_out(args)
  where = surface.part_directory(out, *args.chunk) if args.chunk is not None else out
  try:
    arrays, _ = jio.load_result(where)
    done = arrays["done"]
  except (OSError, ValueError, KeyError):  # nothing written yet (or not a surface: the next run says so)
    return f"no grid point saved yet in {where}"
  return f"{int(done.sum())} of {done.size} grid points saved in {where}"


def _vtk(surf: Any, out: str, **kwargs: Any) -> str:
  from . import io as jio

  if surf.ndim != 2:
    raise ValueError(f"VTK export needs a 2-D surface; this one is {surf.ndim}-D")
  fields = {"loss": surf.loss, **surf.metrics}
  return jio.export_vtk(os.path.join(out, "surface.vtk"), surf.x, surf.y, fields, **kwargs)


def _nanmin(a):
  import numpy as np

  return np.nanmin(a) if np.isfinite(a).any() else float("nan")


def _nanmax(a):
  import numpy as np

  return np.nanmax(a) if np.isfinite(a).any() else float("nan")


@command("merge")
def _merge_parser(sub) -> None:
  p = sub.add_parser("merge", help="join the parts of a surface split with --chunk I/N", description=_merge.__doc__)
  p.add_argument("out", help="the --out directory of the parts (holding part-IIII-of-NNNN)")
  p.add_argument("--vtk", action="store_true", help="also write surface.vtk for ParaView")
  p.add_argument("--log", action="store_true", help="log-scale figures")
  p.add_argument("--overwrite", action="store_true",
                 help="replace a result of another config that OUT already holds (by default that is refused)")
  p.set_defaults(func=_merge)


def _merge(args: argparse.Namespace) -> int:
  """Checks that all parts are present, complete and of one config, and writes into OUT the results.npz,
  meta.json and figures a single run would have written (then `jaxscape plot OUT` works)."""
  import numpy as np

  from . import io as jio
  from . import plot, surface

  if not os.path.isdir(args.out):
    raise FileNotFoundError(f"no directory {args.out!r}: expected the --out directory of `jaxscape surface --chunk "
                            "I/N` runs, holding part-IIII-of-NNNN folders")
  jio.check_output_dir(args.out)
  with jio.RunLock(args.out):  # one merge (or other writer) of OUT at a time
    surf = surface.merge_surfaces(args.out)
    with jio.ResultStore(args.out, surf.meta["config"], overwrite=args.overwrite) as store:
      store.open()  # OUT holding another result (not these parts' merge) is refused unless --overwrite
      store.write({**surf.to_arrays(), "done": np.ones(surf.loss.shape, bool)}, surf.meta, final=True)
    paths = _figures(args.out, lambda: plot.save_figures(surf, args.out, log=args.log) + (
        [_vtk(surf, args.out, log=args.log)] if args.vtk and surf.ndim == 2 else []),
                     f"the merged surface is saved in {args.out!r}: draw the figures with `jaxscape plot {args.out}`")
  print(f"merged {surf.meta['parts']['count']} parts: surface {surf.loss.shape} in {args.out}: loss "
        f"{float(_nanmin(surf.loss)):.4g} .. {float(_nanmax(surf.loss)):.4g}, {surf.num_nonfinite} non-finite")
  for path in paths:
    print(f"  {path}")
  return 0


# ----------------------------------------------------------------------------- hessian


@command("hessian")
def _hessian_parser(sub) -> None:
  p = sub.add_parser("hessian", help="Hessian eigenvalues, trace and spectral density at a point",
                     description=_hessian.__doc__)
  _add_source_flags(p)
  p.add_argument("--top-k", type=_int_at_least(0), default=5, help="largest eigenpairs (0: none)")
  p.add_argument("--bottom-k", type=_int_at_least(0), default=0, help="smallest (most negative) eigenpairs (0: none)")
  p.add_argument("--lanczos-steps", type=_int_at_least(1), default=None,
                 help="a fixed number of Lanczos steps (default: thick-restart Lanczos until every pair is certified)")
  p.add_argument("--tol", type=_float_in(0.0, 1.0), default=1e-3,
                 help="relative residual |Hv - λv| <= tol |λ| that certifies an eigenpair")
  p.add_argument("--trace", action="store_true", help="trace with a standard error and a 95%% interval")
  p.add_argument("--trace-rtol", type=_float_in(0.0), default=0.01, help="stop when stderr <= rtol * |trace|")
  p.add_argument("--trace-method", default="hutch++", choices=["hutch++", "hutchinson"],
                 help="trace estimator: Hutch++ (low-rank sketch + Hutchinson, default) or plain Hutchinson")
  p.add_argument("--density", action="store_true", help="spectral density by stochastic Lanczos quadrature")
  p.add_argument("--density-probes", type=_int_at_least(1), default=4, help="random probes of the density")
  p.add_argument("--density-steps", type=_int_at_least(2), default=90, help="Lanczos steps per density probe")
  p.add_argument("--eps", type=_float_in(0.0, low_open=False), default=1e-3,
                 help="negative mass is the density below -eps")
  p.add_argument("--kind", default="hessian", choices=["hessian", "ggn"],
                 help="the Hessian, or the generalised Gauss-Newton matrix (PSD; J^T H_loss J)")
  p.add_argument("--out", default=None, help="output directory (default runs/hessian-<seed>)")
  p.add_argument("--overwrite", action="store_true",
                 help="replace what --out holds (a result of another config) instead of refusing; without it, "
                      "rerunning the same command resumes: it skips the parts an interrupted run saved")
  p.set_defaults(func=_hessian)


_HESSIAN_PARTS = ("largest", "smallest", "trace", "density")


def _hessian_out(args: argparse.Namespace) -> str:
  return args.out or f"runs/hessian-{args.seed}"


def _hessian_parts(args: argparse.Namespace) -> list[str]:
  """The parts the flags ask for, in the order they are computed (and saved)."""
  asked = {"largest": args.top_k > 0, "smallest": args.bottom_k > 0, "trace": args.trace, "density": args.density}
  return [part for part in _HESSIAN_PARTS if asked[part]]


def _hessian(args: argparse.Namespace) -> int:
  """Computes certified curvature at a trained point: top/bottom eigenpairs with residuals, trace ± SE, density.

  Each part (largest and smallest eigenpairs, trace, density) is saved in
  ``--out`` as soon as it is finished; the same command again skips the
  saved parts (a changed config is refused unless ``--overwrite``)."""
  import math

  import jax

  from . import io as jio

  out = _hessian_out(args)
  parts = _hessian_parts(args)
  if not parts:
    raise ValueError("nothing to compute: give --top-k/--bottom-k > 0, --trace or --density")
  jio.check_output_dir(out, what="--out")  # before any loading or computing
  model, ds, source = _source(args)
  obj, params = _objective(model, ds, args.split, args.batch_size, args.loss)
  loss, metrics = jax.jit(obj.loss)(params)  # once: checked here, recorded with the result
  if not math.isfinite(float(loss)):
    raise ValueError(f"the loss at the point is {float(loss)} (not finite): its curvature means nothing; the parameters "
                     "(checkpoint) or the data are broken")
  config = {"kind": "hessian", "source": source, "objective": obj.describe(), "seed": args.seed, "matrix": args.kind,
            "top_k": args.top_k, "bottom_k": args.bottom_k, "lanczos_steps": args.lanczos_steps, "tol": args.tol,
            "params_fingerprint": jio.fingerprint(params),
            "trace": {"rtol": args.trace_rtol, "method": args.trace_method} if args.trace else None,
            "density": ({"probes": args.density_probes, "steps": args.density_steps, "eps": args.eps}
                        if args.density else None)}
  store = jio.ResultStore(out, config, overwrite=args.overwrite)
  saved = store.open()
  arrays: dict[str, Any] = dict(saved or {})
  part_stats: dict[str, dict[str, Any]] = (jio.load_result(store.location)[1].get("part_stats", {})
                                            if saved is not None else {})
  environment = jio.environment()

  def meta(**extra: Any) -> dict[str, Any]:
    flat = {k: v for stats in part_stats.values() for k, v in stats.items()}
    return {"environment": environment, **flat, "part_stats": part_stats, "parts_done": list(part_stats), **extra}

  key = jax.random.key(args.seed)
  resumed = [part for part in parts if part in part_stats]
  for part in parts:
    if part in part_stats:  # finished by an earlier, interrupted run of this config
      continue
    computed, stats = _hessian_part(part, args, obj, params, key)
    arrays.update(computed)
    part_stats[part] = stats
    store.write(arrays, meta(complete=False))
  store.write(arrays, meta(complete=True, loss=float(loss), **{k: float(v) for k, v in metrics.items()}), final=True)
  print(f"loss {float(loss):.5g} at the point; results in {out}"
        + (f" (saved by an earlier run: {', '.join(resumed)})" if resumed else ""))
  for part in parts:
    print(f"  {_hessian_line(part, args, arrays, part_stats[part])}")
  if "density" in parts:  # figures last: the numbers are saved whatever happens to them
    for path in _figures(out, lambda: _density_figures(out, arrays, part_stats["density"]),
                         f"the numbers are saved in {out!r} (results.npz)"):
      print(f"  {path}")
  return 0


def _density_figures(out: str, arrays: dict[str, Any], stats: dict[str, Any]) -> list[str]:
  """The saved spectral density, on a linear and a log scale."""
  import types

  from . import plot

  dens = types.SimpleNamespace(grid=arrays["density_grid"], density=arrays["density"], sigma=stats["density_sigma"])
  paths = []
  for log in (False, True):
    fig, _ = plot.density(dens, log=log)
    paths.append(os.path.join(out, f"density{'_log' if log else ''}.png"))
    try:
      fig.savefig(paths[-1], dpi=120, bbox_inches="tight")
    finally:
      plot.close(fig)
  return paths


def _hessian_part(part: str, args: argparse.Namespace, obj: Any, params: Any,
                  key: Any) -> tuple[dict[str, Any], dict[str, Any]]:
  """Computes one part of ``jaxscape hessian``: ``(arrays, stats)``."""
  import time

  import jax
  import numpy as np

  from . import hessian

  if part in ("largest", "smallest"):
    t = time.perf_counter()
    k = args.top_k if part == "largest" else args.bottom_k
    # the key of a run that computes every part in one go (the smallest after the largest's 3 arrays)
    index = 3 if part == "smallest" and args.top_k > 0 else 0
    res = hessian.eigenvalues(obj, params, k=k, which=part, key=jax.random.fold_in(key, index),
                              num_steps=args.lanczos_steps, tol=args.tol, kind=args.kind)
    arrays = {f"{part}_{field}": np.asarray(getattr(res, field)) for field in ("values", "residuals", "converged")}
    return arrays, {f"{part}_num_hvps": int(res.num_hvps), f"{part}_certified": int(np.sum(np.asarray(res.converged))),
                    f"{part}_seconds": time.perf_counter() - t}
  if part == "trace":
    tr = hessian.trace(obj, params, key=jax.random.fold_in(key, 10), rtol=args.trace_rtol, method=args.trace_method,
                       kind=args.kind)
    rel = float(tr.stderr) / max(abs(float(tr.estimate)), np.finfo(np.float64).tiny)
    return ({"trace": np.asarray(tr.estimate), "trace_stderr": np.asarray(tr.stderr), "trace_ci95": np.asarray(tr.ci95)},
            {"trace_num_hvps": int(tr.num_hvps), "trace_converged": bool(tr.converged), "trace_rtol": args.trace_rtol,
             "trace_method": tr.method, "trace_relative_stderr": rel})
  dens = hessian.density(obj, params, key=jax.random.fold_in(key, 11), num_probes=args.density_probes,
                         num_steps=args.density_steps, kind=args.kind)
  return ({"density_grid": np.asarray(dens.grid), "density": np.asarray(dens.density),
           "density_nodes": np.asarray(dens.nodes), "density_weights": np.asarray(dens.weights)},
          {"density_sigma": float(dens.sigma), "negative_mass": float(dens.negative_mass(args.eps)), "eps": args.eps})


def _hessian_line(part: str, args: argparse.Namespace, arrays: dict[str, Any], stats: dict[str, Any]) -> str:
  """The printed summary of one part, from what is saved (the same for a computed and a resumed part)."""
  if part in ("largest", "smallest"):
    values, residuals, converged = (arrays[f"{part}_{f}"] for f in ("values", "residuals", "converged"))
    return (f"{part} {len(values)} (certified {stats[f'{part}_certified']}/{len(values)}): " +
            ", ".join(f"{v:.5g} (res {r:.1e}{'' if c else ', NOT converged'})"
                      for v, r, c in zip(values, residuals, converged)))
  if part == "trace":
    rel, rtol = stats["trace_relative_stderr"], stats["trace_rtol"]
    verdict = (f"converged: SE {100 * rel:.2g} % <= {100 * rtol:g} %" if stats["trace_converged"] else
               f"NOT converged: SE {100 * rel:.2g} % > {100 * rtol:g} %")
    return (f"trace {float(arrays['trace']):.5g} ± {float(arrays['trace_stderr']):.2g} (95 % interval ± "
            f"{float(arrays['trace_ci95']):.2g}; {stats['trace_method']}, {stats['trace_num_hvps']} HVPs, {verdict})")
  return f"density: mass below -{stats['eps']:g} = {stats['negative_mass']:.4g} (σ = {stats['density_sigma']:.3g})"


def _hessian_saved(args: argparse.Namespace) -> str:
  """What an interrupted ``hessian`` left: the finished parts saved in ``--out``."""
  from . import io as jio

  out = _hessian_out(args)
  try:
    done = list(jio.load_result(out)[1].get("part_stats", {}))
  except (OSError, ValueError):
    done = []
  todo = [part for part in _hessian_parts(args) if part not in done]
  if not done:
    return f"no part finished yet (to compute: {', '.join(todo)}) in {out}"
  return f"saved {', '.join(done)} in {out}" + (f" (still to compute: {', '.join(todo)})" if todo else "")


# ----------------------------------------------------------------------------- train


def _kv(text: str) -> tuple[str, Any]:
  """``key=value`` with a JSON value (``depth=20``, ``widths=[32,32]``, ``activation=tanh``)."""
  import json

  if "=" not in text:
    raise argparse.ArgumentTypeError(f"expected key=value, got {text!r}")
  key, value = text.split("=", 1)
  try:
    return key, json.loads(value)
  except json.JSONDecodeError:
    return key, value


def _int_list(text: str) -> list[int]:
  return [int(v) for v in text.split(",") if v.strip()]


@command("train")
def _train_parser(sub) -> None:
  p = sub.add_parser("train", help="train a model on a dataset and checkpoint it (a --checkpoint for other commands)",
                     description=_train.__doc__)
  m = p.add_argument_group("model")
  m.add_argument("--model", default="mlp", help="mlp | linear | residual_mlp | resnet | keskar_f1 | keskar_c1")
  m.add_argument("--depth", type=int, default=None, help="resnet depth (6n+2), residual_mlp blocks, keskar_f1 layers")
  m.add_argument("--width", type=int, default=None, help="resnet width factor; residual_mlp / keskar_f1 width")
  m.add_argument("--widths", type=_int_list, default=None, help="mlp / linear hidden widths, e.g. 32,32")
  m.add_argument("--activation", default=None, help="relu | tanh | sigmoid | linear (mlp, residual_mlp)")
  m.add_argument("--batch-norm", action="store_true", default=None, help="BatchNorm in the mlp")
  m.add_argument("--no-shortcuts", action="store_true", help="resnet without shortcuts (-noshort)")
  m.add_argument("--no-skips", action="store_true", help="residual_mlp without skips")
  m.add_argument("--model-arg", type=_kv, action="append", default=[], metavar="KEY=VALUE",
                 help="any other constructor argument (JSON value), repeatable")
  d = p.add_argument_group("data")
  d.add_argument("--dataset", default="digits", help="digits | mnist1d | synthetic | mnist5k | mnist | fashion_mnist | cifar10 | cifar100")
  d.add_argument("--data-dir", default=None, help="directory of on-disk datasets (MNIST IDX, CIFAR pickles)")
  d.add_argument("--num-train", type=int, default=None, help="random training subset")
  d.add_argument("--num-test", type=int, default=None, help="random test subset")
  d.add_argument("--downsample", type=int, default=None, help="resize images to NxN (area averaging)")
  d.add_argument("--normalize", action="store_true", default=None, help="per-channel standardisation")
  d.add_argument("--flatten", action="store_true", default=None, help="flatten examples to vectors")
  d.add_argument("--data-arg", type=_kv, action="append", default=[], metavar="KEY=VALUE",
                 help="any other data.load argument (JSON value), repeatable")
  t = p.add_argument_group("training")
  t.add_argument("--optimizer", default="sgd", choices=["sgd", "adam", "adamw"], help="the optax optimiser")
  t.add_argument("--lr", "--learning-rate", dest="learning_rate", type=_float_in(0.0), default=0.1,
                 help="(peak) learning rate")
  t.add_argument("--momentum", type=_float_in(0.0, 1.0, low_open=False), default=0.0, help="sgd momentum in [0, 1]")
  t.add_argument("--nesterov", action="store_true", help="Nesterov momentum (sgd)")
  t.add_argument("--weight-decay", type=_float_in(0.0, low_open=False), default=0.0,
                 help="L2 penalty (sgd, adam) or decoupled decay (adamw)")
  t.add_argument("--batch-size", type=_int_at_least(0), default=128, help="examples per step (0: full batch)")
  t.add_argument("--epochs", type=_int_at_least(1), default=10, help="passes over the training set")
  t.add_argument("--steps", type=_int_at_least(1), default=None, help="total steps (overrides --epochs)")
  t.add_argument("--schedule", default="constant", choices=["constant", "step", "cosine"],
                 help="learning-rate schedule")
  t.add_argument("--decay-epochs", type=_int_list, default=[], help="step schedule: epochs, e.g. 150,225,275")
  t.add_argument("--decay-factor", type=_float_in(0.0), default=0.1, help="step schedule: factor at each decay epoch")
  t.add_argument("--warmup-steps", type=_int_at_least(0), default=0, help="linear warm-up steps")
  t.add_argument("--loss", default="cross_entropy", choices=["cross_entropy", "binary_cross_entropy", "mse"],
                 help="training loss (binary_cross_entropy takes logits)")
  t.add_argument("--seed", type=_seed, default=0, help="initialisation and data-order seed")
  t.add_argument("--snapshot-every", type=_int_at_least(1), default=None, help="save parameter snapshots every N steps")
  t.add_argument("--checkpoint-every", type=_int_at_least(1), default=None,
                 help="checkpoint every N steps (always at the end)")
  t.add_argument("--spec", default=None,
                 help="JSON file with a full {'model','dataset','train'} spec (the other flags are ignored; its "
                      "train.seed names the default --out)")
  t.add_argument("--out", default=None, help="run directory (default runs/train-<model>-<dataset>-<seed>)")
  t.add_argument("--no-resume", action="store_true",
                 help="refuse a run directory that already holds a run, instead of resuming it (same spec only)")
  t.add_argument("--overwrite", action="store_true", help="delete a run found in --out and train from the start")
  p.set_defaults(func=_train)


def _train_spec(args: argparse.Namespace) -> dict[str, Any]:
  """The ``train_from_spec`` spec the flags describe (only flags that were given)."""
  model: dict[str, Any] = {"depth": args.depth, "width": args.width, "widths": args.widths,
                           "activation": args.activation, "batch_norm": args.batch_norm}
  if args.no_shortcuts:
    model["shortcuts"] = False
  if args.no_skips:
    model["skips"] = False
  model = {k: v for k, v in model.items() if v is not None}
  model.update(dict(args.model_arg))
  dataset: dict[str, Any] = {"name": args.dataset, "data_dir": args.data_dir, "num_train": args.num_train,
                             "num_test": args.num_test, "downsample": args.downsample, "normalize": args.normalize,
                             "flatten": args.flatten}
  dataset = {k: v for k, v in dataset.items() if v is not None}
  dataset.update(dict(args.data_arg))
  train = {"optimizer": args.optimizer, "learning_rate": args.learning_rate, "momentum": args.momentum,
           "nesterov": args.nesterov, "weight_decay": args.weight_decay,
           "batch_size": None if args.batch_size == 0 else args.batch_size, "epochs": args.epochs, "steps": args.steps,
           "schedule": args.schedule, "decay_epochs": args.decay_epochs, "decay_factor": args.decay_factor,
           "warmup_steps": args.warmup_steps, "loss": args.loss, "seed": args.seed,
           "snapshot_every": args.snapshot_every, "checkpoint_every": args.checkpoint_every}
  return {"model": {"name": args.model, "kwargs": model}, "dataset": dataset, "train": train}


def _train_target(args: argparse.Namespace) -> tuple[dict[str, Any], str, str]:
  """``(spec, model name, run directory)`` of a ``train`` command line."""
  import json

  if args.spec:
    with open(args.spec) as f:
      spec = json.load(f)
  else:
    spec = _train_spec(args)
  if not isinstance(spec, dict) or not {"model", "dataset"} <= set(spec):
    raise ValueError(f"the spec must be a JSON object with 'model', 'dataset' and optionally 'train'; got {spec!r}")
  name = spec["model"]["name"] if isinstance(spec.get("model"), dict) else spec.get("model")
  dataset = spec["dataset"] if isinstance(spec["dataset"], str) else spec["dataset"].get("name")
  seed = (spec.get("train") or {}).get("seed", 0) if args.spec else args.seed
  return spec, name, args.out or f"runs/train-{name}-{dataset}-{seed}"


def _train_saved(args: argparse.Namespace) -> str:
  """What an interrupted ``train`` left: its last complete checkpoint."""
  from . import checkpoint

  out = _train_target(args)[2]
  step = checkpoint.latest_step(out) if os.path.isdir(out) else None
  return f"no checkpoint saved yet in {out}" if step is None else f"checkpoint of step {step} saved in {out}"


def _train(args: argparse.Namespace) -> int:
  """Trains a model and writes a run directory (spec.json, orbax checkpoints, history.npz) that
  `jaxscape surface/hessian --checkpoint DIR` read; an interrupted run in --out is resumed."""
  from . import models, train

  from . import io as jio

  spec, name, out = _train_target(args)
  jio.check_output_dir(out, what="--out")  # before any loading or training
  model, hist = train.train_from_spec(spec, out, resume=not args.no_resume, overwrite=args.overwrite)
  print(f"{name}: {models.count_params(model)} parameters, {len(hist)} epochs -> {os.path.abspath(out)}")
  if len(hist):
    print(f"  train loss {hist.train_loss[-1]:.4g}  acc {hist.train_accuracy[-1]:.4f}  |  "
          f"test loss {hist.test_loss[-1]:.4g}  acc {hist.test_accuracy[-1]:.4f}")
  return 0


# ----------------------------------------------------------------------------- plot


@command("plot")
def _plot_parser(sub) -> None:
  p = sub.add_parser("plot", help="re-plot a saved surface without recomputing it")
  p.add_argument("run_dir", help="directory with results.npz and meta.json")
  p.add_argument("--vmin", type=_float_in(-float("inf")), default=None, help="lowest contour level (default: data)")
  p.add_argument("--vmax", type=_float_in(-float("inf")), default=None, help="highest contour level (default: data)")
  p.add_argument("--vlevel", type=_float_in(0.0), default=None, help="contour level spacing")
  p.add_argument("--zmax", type=_float_in(-float("inf")), default=None, help="clip the 3-D surface at this loss")
  p.add_argument("--log", action="store_true", help="log-scale colours and contour levels")
  p.add_argument("--vtk", action="store_true", help="also write surface.vtk for ParaView")
  p.add_argument("--html", action="store_true",
                 help="also write surface.html: an interactive 3-D surface and contour map (plotly, offline)")
  p.add_argument("--out", default=None, help="where to write the figures (default: run_dir)")
  p.set_defaults(func=_plot)


def _plot(args: argparse.Namespace) -> int:
  from . import plot, surface

  from . import io as jio

  surf = surface.load_surface(args.run_dir)
  out = jio.check_output_dir(args.out or args.run_dir, what="--out" if args.out else "run_dir")
  if args.vmin is not None and args.vmax is not None and not args.vmin < args.vmax:
    raise ValueError(f"--vmin must be below --vmax; got {args.vmin:g} and {args.vmax:g}")
  paths = plot.save_figures(surf, out, vmin=args.vmin, vmax=args.vmax, vlevel=args.vlevel, log=args.log, zmax=args.zmax)
  if args.vtk:
    paths.append(_vtk(surf, out, zmax=args.zmax, log=args.log))
  if args.html:
    paths.append(plot.html(surf, os.path.join(out, "surface.html"), log=args.log))
  note = plot.partial_note(surf)
  if note:
    print(f"{note}: the run in {args.run_dir} has not finished (rerun its command to resume); missing points are "
          "blank")
  for path in paths:
    print(path)
  return 0


# ----------------------------------------------------------------------------- entry points


def build_parser() -> argparse.ArgumentParser:
  from . import __version__

  parser = argparse.ArgumentParser(prog="jaxscape", description="Loss-landscape analysis in JAX.")
  parser.add_argument("--version", action="version", version=f"jaxscape {__version__}")
  sub = parser.add_subparsers(dest="command", required=True)
  for register in COMMANDS.values():
    register(sub)
  for p in sub.choices.values():
    p.add_argument("--debug", action="store_true",
                   help="show the Python traceback of an error (also JAXSCAPE_DEBUG=1) instead of one line")
  return parser


_SAVED: dict[str, Callable[[argparse.Namespace], str]] = {
    "surface": _surface_saved,
    "hessian": _hessian_saved,
    "train": _train_saved,
    "merge": lambda args: f"nothing changed in {args.out} (the merged result is written whole, at the end; the parts "
                          "are intact)",
    "plot": lambda args: "nothing to resume: figures are drawn from the saved result (one may be left half-written)",
}
"""Per command: what an interrupted run has saved (the one line printed on SIGINT / SIGTERM)."""


def _interrupted_line(command: str, args: argparse.Namespace, argv: Sequence[str], error: Any) -> str:
  import shlex

  try:
    saved = _SAVED[command](args)
  except Exception as e:  # the line must come out whatever state the run was left in
    saved = f"could not tell what was saved ({type(e).__name__}: {e})"
  again = "resume" if command in ("surface", "hessian", "train") else "run it again"
  return f"jaxscape {command}: interrupted by {error.name}: {saved}; {again}: jaxscape {shlex.join(argv)}"


def main(argv: Sequence[str] | None = None) -> int:
  """Entry point of the ``jaxscape`` command.

  Returns the exit code: 0; 2 after a one-line error the user can fix (bad
  input or data, an output that cannot be written, a held lock, too little
  memory); 1 after a one-line internal error (``--debug`` shows its
  traceback). SIGINT and SIGTERM end the process at once with 130 / 143
  after one line on stderr saying what was saved and the command that
  resumes (:mod:`jaxscape.signals`).
  """
  from . import signals

  argv = list(sys.argv[1:] if argv is None else argv)
  args = build_parser().parse_args(argv)
  debug = args.debug or os.environ.get("JAXSCAPE_DEBUG", "") not in ("", "0")
  with signals.interruptible():
    try:
      return int(args.func(args) or 0)
    except signals.Interrupted as e:
      signals.exit_interrupted(e, _interrupted_line(args.command, args, argv, e))
    except Exception as e:  # one line, no traceback
      return signals.error_exit(f"jaxscape {args.command}", e, debug=debug)


if __name__ == "__main__":
  sys.exit(main())
