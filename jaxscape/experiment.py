"""The experiment harness: presets, dataset specs, the run directory, ``report.md`` and the index.

An experiment is a module ``experiments/<name>.py`` with ``CONFIGS`` (presets
``smoke``, ``cpu``, ``full``) and ``main(config, out_dir) -> Report``.
:func:`run` parses the flags, writes ``config.json``, calls ``main`` and
writes the :class:`Report` it returns as ``report.md``; :func:`load_dataset`
turns a dataset spec of a config into a :class:`~jaxscape.data.Dataset`.

A report is built in memory and rendered to a string. Checks are fixed before
running and reported whatever the verdict: a FAIL is a result, never hidden.

Example:
  >>> r = Report("demo", claim="The origin is a minimum.", seed=0, preset="smoke")
  >>> r.check("origin is the grid minimum", 0.1 <= 0.2, "loss(0) = 0.1 <= min grid loss 0.2")
  True
  >>> r.verdict
  'PASS'
  >>> "| origin is the grid minimum | PASS |" in r.render()
  True
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import html
import os
import re
import shlex
import sys
import time
import urllib.parse
from typing import Any, Callable, Mapping, Sequence

import jax
import numpy as np

from . import adapters, data, hessian, models, sharpness, signals, stats, train, tree
from . import io as jio
from .directions import interpolation_direction, random_directions
from .objective import Objective
from .surface import default_chunk_size, loss_surface

__all__ = ["Report", "table", "fmt", "mean_std", "spread", "load_dataset", "run", "write_index", "seed_surfaces",
           "stack_surfaces", "seed_surface_arrays", "train_regimes", "solution_measures",
           "interpolation_lines", "regime_study", "train_sizes", "variant_surfaces",
           "seed_surface_statistics", "seed_surface_runs", "seed_surface_notes", "seed_means", "size_text", "family_surfaces",
           "seed_surface_meta"]


# ----------------------------------------------------------------------------- reports


def fmt(x: Any, digits: int = 4) -> str:
  """Short human formatting of numbers (a tuple: its entries joined by " / "; strings pass through)."""
  if isinstance(x, tuple):
    return " / ".join(fmt(v, digits) for v in x)
  if isinstance(x, (bool, np.bool_)):
    return "yes" if x else "no"
  if isinstance(x, (int, np.integer)):
    return str(int(x))
  if isinstance(x, (float, np.floating)):
    x = float(x)
    if not np.isfinite(x):
      return str(x)
    if x != 0 and (abs(x) < 1e-3 or abs(x) >= 1e5):
      return f"{x:.{digits - 1}e}"
    return f"{x:.{digits}g}"
  return str(x)


def mean_std(summary: Mapping[str, Mapping[str, float]], name: str, digits: int = 3) -> str:
  """``"mean ± std"`` of one entry of :func:`jaxscape.stats.seed_summary` (``"-"`` when absent; the mean alone for one seed)."""
  if name not in summary or summary[name]["count"] == 0:
    return "-"
  sm = summary[name]
  return f"{sm['mean']:.{digits}f} ± {sm['std']:.{digits}f}" if sm["count"] > 1 else f"{sm['mean']:.{digits}f}"


def spread(values: Any) -> str:
  """``"mean ± std"`` of an array of per-seed values, each part formatted by :func:`fmt`.

  Example:
    >>> spread([1.0, 3.0])
    '2 ± 1'
  """
  values = np.asarray(values, float)
  return f"{fmt(values.mean())} ± {fmt(values.std())}"


def table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
  """A Markdown table."""
  lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
  lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
  return "\n".join(lines)


@dataclasses.dataclass
class Report:
  """A run report: the claim in one sentence, setup, figures, tables, checks."""

  name: str
  claim: str
  seed: int
  preset: str
  setup: list[str] = dataclasses.field(default_factory=list)
  sections: list[tuple[str, str]] = dataclasses.field(default_factory=list)
  figures: list[tuple[str, str]] = dataclasses.field(default_factory=list)
  checks: list[tuple[str, bool, str]] = dataclasses.field(default_factory=list)
  notes: list[str] = dataclasses.field(default_factory=list)

  def check(self, name: str, passed: bool, evidence: str) -> bool:
    """Records a pass/fail criterion with the numbers that decided it."""
    self.checks.append((name, bool(passed), evidence))
    return bool(passed)

  def figure(self, path: str, caption: str) -> None:
    self.figures.append((path, caption))

  def section(self, title: str, body: str) -> None:
    self.sections.append((title, body))

  def note_failures(self) -> None:
    """Adds a note listing the failed checks (if any): settings were fixed before running, a FAIL is a result."""
    if failed := [n for n, p, _ in self.checks if not p]:
      self.notes.append(f"Not reproduced at this scale ({self.preset} preset, seed {self.seed}): " + "; ".join(failed)
                        + ". Settings were fixed before running and not tuned.")

  @property
  def verdict(self) -> str:
    return "PASS" if self.checks and all(p for _, p, _ in self.checks) else "FAIL"

  def render(self) -> str:
    out = [f"# {self.name}: {self.verdict}", "", f"**Claim.** {self.claim}", "",
           f"Preset `{self.preset}`, seed {self.seed}.", ""]
    if self.setup:
      out += ["## Setup", ""] + [f"- {s}" for s in self.setup] + [""]
    if self.checks:
      out += ["## Check", "", table(["criterion", "result", "numbers"],
                                    [(n, "PASS" if p else "FAIL", e) for n, p, e in self.checks]), ""]
    for title, body in self.sections:
      out += [f"## {title}", "", body, ""]
    if self.figures:
      out += ["## Figures", ""]
      for path, caption in self.figures:
        out += [f"![{caption}]({path})", "", f"*{caption}*", ""]
    if self.notes:
      out += ["## Notes", ""] + [f"- {n}" for n in self.notes] + [""]
    return "\n".join(out)


# ----------------------------------------------------------------------------- dataset specs

_FILES = {
    "mnist": "the MNIST IDX files (train-images-idx3-ubyte[.gz], ...)",
    "fashion_mnist": "the Fashion-MNIST IDX files (train-images-idx3-ubyte[.gz], ...)",
    "cifar10": "cifar-10-batches-py/",
    "cifar100": "cifar-100-python/",
}


def load_dataset(spec: dict[str, Any], data_dir: str | None) -> data.Dataset:
  """Loads the dataset a config names: ``{"name": ..., "subdir": ..., **data.load kwargs}``.

  Built-in datasets (``digits``, ``mnist1d``, ``synthetic``, ``mnist5k``) load
  directly and ignore ``data_dir``. On-disk datasets (``mnist``,
  ``fashion_mnist``, ``cifar10``, ``cifar100``) are read from ``data_dir``
  (``--data-dir``; nothing is downloaded), or from ``data_dir/subdir`` when
  the spec names a ``subdir`` that exists there.

  Args:
    spec: a JSON dict: ``name`` plus keyword arguments of :func:`jaxscape.data.load`
      (``flatten``, ``downsample``, ``num_train``, ...) and an optional ``subdir``.
    data_dir: the experiment's ``--data-dir`` (``None`` when not given).

  Returns:
    The dataset.

  Raises:
    FileNotFoundError: an on-disk dataset without an existing ``data_dir``;
      the message names the dataset, the flag and the files it expects.

  Example:
    >>> from jaxscape import experiment
    >>> ds = experiment.load_dataset({"name": "digits", "flatten": True}, None)
    >>> ds.train[0].shape
    (1257, 64)
  """
  spec = dict(spec)
  name, subdir = spec.pop("name"), spec.pop("subdir", None)
  if name not in data.ON_DISK:
    return data.load(name, **spec)
  if not data_dir or not os.path.isdir(data_dir):
    raise FileNotFoundError(
        f"dataset {name!r} is read from local files: pass --data-dir DIR (make experiment ... DATA_DIR=DIR), a "
        f"directory holding {_FILES[name]}{f' (in DIR or DIR/{subdir}/)' if subdir else ''}; nothing is downloaded; "
        f"got data_dir={data_dir!r}")
  if subdir and os.path.isdir(os.path.join(data_dir, subdir)):
    data_dir = os.path.join(data_dir, subdir)
  return data.load(name, data_dir=data_dir, **spec)


# ----------------------------------------------------------------------------- running


def _same_kind(old: Any, new: Any) -> bool:
  """Whether an override keeps the preset value's kind (an int stays an integer, a number a number, a list a list)."""
  if old is None:
    return True
  if isinstance(old, bool) or isinstance(new, bool):
    return isinstance(old, bool) and isinstance(new, bool)
  if isinstance(old, int):
    return isinstance(new, int)
  if isinstance(old, float):
    return isinstance(new, (int, float))
  return isinstance(new, type(old)) or (isinstance(old, (list, tuple)) and isinstance(new, list))


def apply_overrides(config: Mapping[str, Any], assignments: Sequence[str]) -> dict[str, Any]:
  """A copy of ``config`` with ``KEY=VALUE`` assignments applied (big_vision / ml_collections style).

  ``KEY`` is a field of the preset, nested with dots (``main.grid``; list
  items by index, ``extra.0.grid``); ``VALUE`` is JSON (``31``, ``[4, 8]``,
  ``true``) or a bare string. Each key must exist and keep its kind (an
  integer stays an integer): a typo is an error naming the fields there are.

  Example:
    >>> apply_overrides({"grid": 21, "main": {"depths": [4, 16]}}, ["grid=31", "main.depths=[4, 8]"])
    {'grid': 31, 'main': {'depths': [4, 8]}}
  """
  import copy
  import json

  out = copy.deepcopy(dict(config))
  for text in assignments:
    if "=" not in text:
      raise ValueError(f"--set expects KEY=VALUE (e.g. grid=31, main.depths=[4,8]); got {text!r}")
    key, raw = text.split("=", 1)
    try:
      value = json.loads(raw)
    except json.JSONDecodeError:
      value = raw
    node, parts = out, key.split(".")
    for depth, part in enumerate(parts):
      where = ".".join(parts[:depth]) or "the preset"
      if isinstance(node, list):
        if not (part.isdigit() and int(part) < len(node)):
          raise ValueError(f"--set {key}: {where} is a list of {len(node)} items; expected an index 0..{len(node) - 1}, "
                           f"got {part!r}")
        part = int(part)
      elif not isinstance(node, dict) or part not in node:
        fields = sorted(node) if isinstance(node, dict) else []
        raise ValueError(f"--set {key}: no field {part!r} in {where}; expected one of {fields}")
      if depth == len(parts) - 1:
        if not _same_kind(node[part], value):
          raise ValueError(f"--set {key}: the preset's value is {node[part]!r} ({type(node[part]).__name__}); got "
                           f"{value!r} ({type(value).__name__})")
        node[part] = value
      else:
        node = node[part]
  return out


def run(module: Any, argv: Sequence[str] | None = None, *,
        html_views: Callable[[str], list[str]] | None = None) -> int:
  """Runs ``experiments/<name>.py``: ``CONFIGS[preset]`` -> ``main(config, out_dir)`` -> report.

  Flags: ``--preset smoke|cpu|full`` (default ``cpu``), ``--seed`` (default 0;
  changes every random choice of the run), ``--data-dir`` (datasets on disk,
  for ``full``), ``--out`` (default ``runs/<name>-<preset>``, or the module's
  ``RUN_DIR``). Writes ``config.json`` first and ``report.md`` from the
  :class:`Report` that ``main`` returns, then refreshes the gallery
  ``runs/index.md`` and ``runs/index.html`` (:func:`write_index`).
  The run holds its directory's :class:`~jaxscape.io.RunLock` throughout (a
  second run on the same ``--out`` is refused, exit code 2).
  A missing dataset or a bad config is a one-line error naming the
  experiment and preset (exit code 2). ``html_views(out) -> paths`` (the
  runners pass :func:`jaxscape.plot.html_views`; the harness never imports
  plotting) writes interactive views that the report links.
  """
  spec = getattr(module, "__spec__", None)
  name = (spec.name if spec is not None else module.__name__).rsplit(".", 1)[-1]
  parser = argparse.ArgumentParser(prog=f"experiments.{name}", description=(module.__doc__ or "").strip().splitlines()[0])
  parser.add_argument("--preset", default="cpu", choices=sorted(module.CONFIGS))
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--data-dir", default=None)
  parser.add_argument("--out", default=None)
  parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                      help="override a field of the preset (nested with dots, JSON values), repeatable; recorded in "
                           "config.json and the report")
  args = parser.parse_args(argv)
  try:
    preset = apply_overrides(module.CONFIGS[args.preset], args.overrides)
  except ValueError as e:
    print(f"{name} [{args.preset}]: error: {e}", file=sys.stderr)
    return 2
  config = {**preset, "preset": args.preset, "seed": args.seed, "data_dir": args.data_dir,
            **({"overrides": list(args.overrides)} if args.overrides else {})}
  out = args.out or getattr(module, "RUN_DIR", None) or os.path.join("runs", f"{name}-{args.preset}")
  with signals.interruptible():
    try:
      jio.check_output_dir(out, what="--out")  # before any loading or computing
      with jio.RunLock(out):  # the run owns its directory until its report is written
        jio.write_json(os.path.join(out, "config.json"), config)
        report = module.main(config, out)
        views = [] if html_views is None else html_views(out)
        if views:
          report.section("Interactive figures", "Open in a browser (offline, plotly): " + ", ".join(
              f"[{os.path.splitext(os.path.basename(v))[0]}]({v})" for v in views))
        if args.overrides:
          report.notes.append(f"The {args.preset} preset was overridden: {', '.join(args.overrides)} (thresholds and "
                              "claims were calibrated for the preset as it is).")
        with open(os.path.join(out, "report.md"), "w") as f:
          f.write(report.render())
    except signals.Interrupted as e:
      again = shlex.join([sys.executable, "-m", "experiments", name, *(sys.argv[1:] if argv is None else argv)])
      signals.exit_interrupted(e, f"{name} [{args.preset}]: interrupted by {e.name}: no report written (report.md "
                                  f"comes at the end; loss surfaces in {out} are kept and resume, other steps start "
                                  f"over); run it again: {again}")
    except Exception as e:  # one line, no traceback (JAXSCAPE_DEBUG=1 shows it)
      return signals.error_exit(f"{name} [{args.preset}]", e, debug=os.environ.get("JAXSCAPE_DEBUG", "") not in ("", "0"))
  parent = os.path.dirname(os.path.abspath(out))
  if os.path.basename(parent) == "runs":
    write_index(parent)
  print(f"{name} [{args.preset}, seed {args.seed}]: {report.verdict} -> {os.path.join(out, 'report.md')}")
  for check, passed, evidence in report.checks:
    print(f"  {'PASS' if passed else 'FAIL'}  {check}: {evidence}")
  return 0


def write_index(runs_dir: str) -> str:
  """Writes the gallery of the runs in ``runs_dir``: ``index.md`` and a self-contained ``index.html``.

  One row per subdirectory holding a ``report.md``: its experiment, preset and
  seed (``config.json``, else the report's header), the verdict, the first
  figure the report links as a thumbnail, and links to the report and to the
  interactive ``*.html`` views it links. Every link is relative, so the
  directory can be moved or served as it is; the HTML needs no network and no
  JavaScript. A run without a figure still gets its row.

  Args:
    runs_dir: the directory of run directories (``runs/``).

  Returns:
    The path of ``index.md`` (``index.html`` lies beside it).

  Example:
    >>> import os, tempfile
    >>> runs = tempfile.mkdtemp()
    >>> os.mkdir(os.path.join(runs, "demo-smoke"))
    >>> _ = open(os.path.join(runs, "demo-smoke", "report.md"), "w").write(Report("demo", "c", 0, "smoke").render())
    >>> os.path.basename(write_index(runs))
    'index.md'
    >>> sorted(f for f in os.listdir(runs) if f.startswith("index"))
    ['index.html', 'index.md']
  """
  runs = [_run_summary(os.path.join(runs_dir, entry)) for entry in sorted(os.listdir(runs_dir))
          if os.path.isfile(os.path.join(runs_dir, entry, "report.md"))]
  path = os.path.join(runs_dir, "index.md")
  with open(path, "w") as f:
    f.write(_index_markdown(runs))
  with open(os.path.join(runs_dir, "index.html"), "w") as f:
    f.write(_index_html(runs))
  return path


_THUMBNAIL_WIDTH = 240  # pixels: a gallery row stays one screen line high with one figure per run
_IMAGE = re.compile(r"!\[(.*?)\]\(([^()\s]+)\)")
_VIEW = re.compile(r"(?<!!)\[(.*?)\]\(([^()\s]+\.html)\)")
_INDEX_COLUMNS = ["run", "experiment", "preset", "seed", "verdict", "figure", "interactive"]
_PRESET_SEED = re.compile(r"Preset `(.+?)`, seed (-?\d+)\.")  # the line Report.render writes


def _local_file(run_dir: str, target: str) -> str | None:
  """``target`` when it is a relative link to an existing file of ``run_dir`` (URLs and absolute paths are not)."""
  if "://" in target or os.path.isabs(target) or not os.path.isfile(os.path.join(run_dir, target)):
    return None
  return target


def _run_summary(run_dir: str) -> dict[str, Any]:
  """What the gallery shows of one run, read from its ``report.md`` and ``config.json``."""
  entry = os.path.basename(run_dir)
  with open(os.path.join(run_dir, "report.md")) as f:
    lines = f.read().splitlines()
  header = lines[0].lstrip("#").strip() if lines else ""
  name, _, verdict = header.rpartition(": ")
  if not name:  # not a harness header "# name: VERDICT"
    name, verdict = entry, "?"
  try:
    config = jio.read_json(os.path.join(run_dir, "config.json"))
  except (OSError, ValueError):
    config = {}
  preset, seed = config.get("preset"), config.get("seed")
  if preset is None or seed is None:
    if match := next(filter(None, map(_PRESET_SEED.match, lines)), None):
      preset, seed = match.group(1), int(match.group(2))
  images = [(_local_file(run_dir, t), c) for line in lines for c, t in _IMAGE.findall(line)]
  views = {}
  for line in lines:
    for label, target in _VIEW.findall(line):
      if (local := _local_file(run_dir, target)) and local not in views:
        views[local] = label
  return {"entry": entry, "name": name, "verdict": verdict, "preset": preset, "seed": seed,
          "figure": next(((t, c) for t, c in images if t), None), "views": list(views.items())}


def _href(entry: str, target: str) -> str:
  """A relative URL from the runs directory to ``target`` in run ``entry``."""
  return urllib.parse.quote(f"{entry}/{target}")


def _md_cell(x: Any) -> str:
  """Text safe in a Markdown table cell and link label."""
  text = "-" if x is None else str(x)
  for c in "\\|[]<>*`":
    text = text.replace(c, "\\" + c)
  return text


def _index_markdown(runs: Sequence[Mapping[str, Any]]) -> str:
  rows = []
  for r in runs:
    figure = "-"
    if r["figure"]:
      src, caption = _href(r["entry"], r["figure"][0]), html.escape(r["figure"][1]).replace("|", "&#124;")
      figure = f'[<img src="{src}" width="{_THUMBNAIL_WIDTH}" alt="{caption}">]({src})'
    views = ", ".join(f"[{_md_cell(label)}]({_href(r['entry'], t)})" for t, label in r["views"]) or "-"
    verdict = f"**{_md_cell(r['verdict'])}**"
    rows.append((f"[{_md_cell(r['entry'])}]({_href(r['entry'], 'report.md')})", _md_cell(r["name"]),
                 _md_cell(r["preset"]), _md_cell(r["seed"]), verdict, figure, views))
  body = table(_INDEX_COLUMNS, rows) if rows else "No runs yet."
  return f"# jaxscape runs\n\n{body}\n"


_INDEX_STYLE = """body { font-family: system-ui, sans-serif; margin: 2em; }
table { border-collapse: collapse; }
th, td { border: 1px solid #ccc; padding: 4px 8px; text-align: left; vertical-align: top; }
.verdict { font-weight: bold; color: #fff; background: #777; }
.pass { background: #2e7d32; }
.fail { background: #c62828; }"""


def _index_html(runs: Sequence[Mapping[str, Any]]) -> str:
  esc = functools.partial(html.escape, quote=True)
  rows = []
  for r in runs:
    report = _href(r["entry"], "report.md")
    figure = "-"
    if r["figure"]:
      src = _href(r["entry"], r["figure"][0])
      figure = (f'<a href="{esc(src)}"><img src="{esc(src)}" width="{_THUMBNAIL_WIDTH}" '
                f'alt="{esc(r["figure"][1])}"></a>')
    views = ", ".join(f'<a href="{esc(_href(r["entry"], t))}">{esc(label)}</a>' for t, label in r["views"]) or "-"
    kind = {"PASS": "pass", "FAIL": "fail"}.get(r["verdict"], "unknown")
    cells = [f'<a href="{esc(report)}">{esc(r["entry"])}</a>', esc(r["name"]),
             esc("-" if r["preset"] is None else str(r["preset"])), esc("-" if r["seed"] is None else str(r["seed"])),
             f'<span class="verdict {kind}">{esc(r["verdict"])}</span>', figure, views]
    rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
  head = "".join(f"<th>{h}</th>" for h in _INDEX_COLUMNS)
  body = (f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n" + "\n".join(rows) + "\n</tbody>\n</table>"
          if rows else "<p>No runs yet.</p>")
  return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>jaxscape runs</title>\n"
          f"<style>\n{_INDEX_STYLE}\n</style>\n</head>\n<body>\n<h1>jaxscape runs</h1>\n{body}\n</body>\n</html>\n")


# ----------------------------------------------------------------------------- studies over trained seeds


def seed_surfaces(key: jax.Array, init: Callable[[jax.Array], Any], ds: data.Dataset, train_config: Any, *,
                  seeds: int, grid: int, span: float = 1.0, eval_batch_size: int | None = 512, rel: float = 0.01,
                  ratio_grid: int = 0, ratio_seeds: int = 0, lanczos_steps: int = 10,
                  trace_probes: int = 2, plane_seeds: int | None = None) -> dict[str, Any]:
  """Trains ``seeds`` runs of one model together, then one filter-normalised 2-D surface per trained run.

  Training is :func:`jaxscape.train.train_many` with keys split from
  ``fold_in(key, 0)``; run ``s`` gets its directions (two Gaussian,
  filter-normalised, biases and norm scales ignored) from
  ``fold_in(fold_in(key, 1), s)``, so two models given the same ``key`` share
  initialisation keys, data order and directions (paired comparisons). Each
  surface holds the projected plane curvature (``curvature="plane"``) on a
  ``grid x grid`` grid over ``[-span, span]^2`` of the training loss (eval
  mode, BatchNorm statistics of that run frozen); the first ``ratio_seeds``
  runs also get a coarse ``ratio_grid`` map of the full Hessian
  (``curvature="full"``, probes from ``fold_in(fold_in(key, 2), s)``). All runs
  share one compiled surface function.

  Args:
    key: the key of this model.
    init: ``init(key) -> nnx.Module``.
    ds: the dataset.
    train_config: a :class:`~jaxscape.train.TrainConfig` or its dict.
    seeds: number of runs.
    grid, span: the surface grid.
    eval_batch_size: examples per batch of the full-data loss.
    rel: non-convexity threshold of :func:`jaxscape.stats.surface_stats`.
    ratio_grid, ratio_seeds: the full-Hessian map (0: none).
    lanczos_steps, trace_probes: its Lanczos steps and trace probes.
    plane_seeds: how many runs (the first ones) get the plane curvature maps; ``None``: all.

  Returns:
    ``{"seeds": [per-run surface_stats + final train/test loss and accuracy], "summary": seed_summary,
    "surfaces", "ratios", "history", "train_s", "surface_s", "num_params"}``.
  """
  cfg = train_config if isinstance(train_config, train.TrainConfig) else train.TrainConfig.from_dict(train_config)
  t0 = time.perf_counter()
  params, state, hist = train.train_many(jax.random.split(jax.random.fold_in(key, 0), int(seeds)), init, ds, cfg)
  jax.block_until_ready(params)
  train_s = time.perf_counter() - t0
  _, apply, _, _ = adapters.nnx.split_train(init(jax.random.key(0)))
  rows, surfaces, ratios = [], [], []
  t0 = time.perf_counter()
  chunk = None
  for s in range(int(seeds)):
    p, st = tree.select(params, s), tree.select(state, s)
    obj = Objective.from_stateful(apply, st, data=ds.train, batch_size=eval_batch_size, name=f"{ds.name}-train")
    chunk = chunk or default_chunk_size(obj, p)   # once per model: its probe compiles
    dirs = random_directions(jax.random.fold_in(jax.random.fold_in(key, 1), s), p, n=2, norm="filter", ignore="biasbn")
    plane = plane_seeds is None or s < int(plane_seeds)
    surf = loss_surface(obj, p, dirs, x=(-span, span, grid), y=(-span, span, grid),
                        curvature="plane" if plane else None, quiet=True, chunk_size=chunk)
    row = stats.surface_stats(surf, rel=rel)
    if s < int(ratio_seeds) and ratio_grid > 0:
      rsurf = loss_surface(obj, p, dirs, x=(-span, span, ratio_grid), y=(-span, span, ratio_grid), curvature="full",
                           key=jax.random.fold_in(jax.random.fold_in(key, 2), s), lanczos_steps=int(lanczos_steps),
                           trace_probes=int(trace_probes), quiet=True, chunk_size=chunk)
      row.update({k: v for k, v in stats.surface_stats(rsurf, rel=rel).items() if k.startswith(("ratio_", "full_"))})
      ratios.append(rsurf)
    row.update(test_accuracy=float(hist.test_accuracy[s, -1]), test_loss=float(hist.test_loss[s, -1]),
               train_accuracy=float(hist.train_accuracy[s, -1]), train_loss=float(hist.train_loss[s, -1]))
    rows.append(row)
    surfaces.append(surf)
  return {"seeds": rows, "summary": stats.seed_summary(rows), "surfaces": surfaces, "ratios": ratios,
          "history": hist, "train_s": train_s, "surface_s": time.perf_counter() - t0,
          "num_params": int(models.count_params(tree.select(params, 0)))}


def stack_surfaces(prefix: str, surfaces: Sequence[Any], maps: Sequence[str], *, axes: Sequence[str] = ("x", "y"),
                   loss: bool = True) -> dict[str, np.ndarray]:
  """Arrays for ``results.npz`` of several surfaces on one grid: ``{prefix + name: stacked maps}``.

  Holds the first surface's ``axes`` (``prefix + "x"``, ...), the stacked
  ``loss`` (when ``loss``) and every map in ``maps``, each ``[len(surfaces), ...]``;
  a map that only some surfaces hold (e.g. :func:`seed_surfaces`' ``plane_seeds``)
  is stacked over those, in order, and one that none holds is left out.
  """
  out = {prefix + a: getattr(surfaces[0], a) for a in axes}
  if loss:
    out[prefix + "loss"] = np.stack([s.loss for s in surfaces])
  for m in maps:
    held = [s.metrics[m] for s in surfaces if m in s.metrics]
    if held:
      out[prefix + m] = np.stack(held)
  return out


def seed_surface_arrays(prefix: str, study: Mapping[str, Any],
                        maps: Sequence[str] = ("accuracy", "plane_lambda_min", "plane_lambda_max", "h_xx", "h_xy",
                                               "h_yy"),
                        ratio_maps: Sequence[str] = ("convexity_ratio", "lambda_min", "lambda_max", "trace")
                        ) -> dict[str, np.ndarray]:
  """Arrays for ``results.npz`` of one :func:`seed_surfaces` result, every name prefixed.

  The surfaces (``x``, ``y``, ``loss`` and ``maps``, stacked over seeds), the
  full-Hessian maps (``ratio_x`` and ``ratio_<map>``) when there are any, and
  the training histories (``history_<quantity>``, ``[seeds, evaluations]``).
  """
  out = stack_surfaces(prefix, study["surfaces"], maps)
  if study["ratios"]:
    out.update(stack_surfaces(prefix + "ratio_", study["ratios"], ratio_maps, axes=("x",), loss=False))
  hist = study["history"]
  out.update({f"{prefix}history_{m}": getattr(hist, m) for m in ("train_loss", "train_accuracy", "test_loss",
                                                                  "test_accuracy")})
  return out


def train_regimes(key: jax.Array, init: Callable[[jax.Array], Any], ds: data.Dataset,
                  regimes: Mapping[str, Mapping[str, Any]], *, seeds: int, **common: Any) -> dict[str, dict[str, Any]]:
  """Trains ``seeds`` runs of every regime with :func:`jaxscape.train.train_many`, run ``i`` of each from the same start.

  Every regime splits its run keys from ``fold_in(key, 0)``, so run ``i`` of
  all regimes shares its initialisation and data-order key (paired comparisons,
  e.g. small vs large batch), and keeps its start point (one snapshot per run).

  Args:
    key: the key of this study.
    init: ``init(key) -> nnx.Module``.
    ds: the dataset.
    regimes: ``{name: {"batch_size", "epochs" | "steps", optional "eval_every", optional "runs"}}``; ``runs`` is
      :func:`~jaxscape.train.train_many`'s ``"vmap"`` (default) or ``"sequential"``.
    seeds: runs per regime.
    **common: the other :class:`~jaxscape.train.TrainConfig` fields, shared by all regimes.

  Returns:
    ``{name: {"params", "state", "history", "start" (stacked start points), "steps" (optimiser steps per run),
    "seconds"}}``.
  """
  out = {}
  for name, reg in regimes.items():
    t0, b, n = time.perf_counter(), reg["batch_size"], ds.num_train
    steps = int(reg.get("steps") or int(reg["epochs"]) * (1 if b is None or b >= n else n // int(b)))
    cfg = train.TrainConfig(**common, batch_size=b, epochs=int(reg.get("epochs") or 1), steps=reg.get("steps"),
                            eval_every=int(reg.get("eval_every", 1)))
    params, state, hist = train.train_many(jax.random.split(jax.random.fold_in(key, 0), int(seeds)), init, ds, cfg,
                                           snapshot_every=steps, runs=reg.get("runs", "vmap"))
    jax.block_until_ready(params)
    out[name] = {"params": params, "state": state, "history": hist, "steps": steps, "seconds": time.perf_counter() - t0,
                 "start": jax.tree.map(lambda x: x[:, 0], hist.trajectory)}
  return out


def solution_measures(key: jax.Array, apply: Callable, state: Any, params: Any, ds: data.Dataset, *,
                      eps: Sequence[float], subspace_dim: int, lanczos_steps: int, eval_batch_size: int | None = 512,
                      **keskar_kw: Any) -> dict[str, np.ndarray]:
  """Accuracy, Keskar epsilon-sharpness and the top Hessian eigenvalue of every run of stacked solutions.

  Run ``i`` is measured with ``k = fold_in(key, i)`` and its ``state`` frozen
  (losses are full-split means in eval mode). For each ``eps[e]``
  :func:`jaxscape.sharpness.keskar` runs in the full space (key
  ``fold_in(k, 10 e)``) and in a random ``subspace_dim``-d subspace (key
  ``fold_in(k, 10 e + 1)``); the top eigenvalue is a ``lanczos_steps``-step
  Lanczos run (key ``fold_in(k, 99)``). Keskar et al. (2017), Metric 2.1.

  Args:
    key: the key of these runs.
    apply: the pure apply (:func:`jaxscape.adapters.nnx.split_train`).
    state, params: the runs' stacked states and parameters (leading run axis).
    ds: the dataset (its train and test splits).
    eps: box sizes.
    subspace_dim: the random subspace's dimension.
    lanczos_steps: Lanczos steps of the top eigenvalue.
    eval_batch_size: examples per batch of the full-data loss.
    **keskar_kw: ``maxiter``, ``sign_steps``, ``num_starts``, ``num_corners`` of :func:`~jaxscape.sharpness.keskar`.

  Returns:
    ``{"train_loss", "train_acc", "test_loss", "test_acc", "lam_max", "lam_residual", "lam_converged": [runs]}``
    and ``"phi_<space>", "phi_<space>_lbfgsb", "phi_<space>_sign", "phi_<space>_corners_ok": [runs, len(eps)]``
    for ``space`` in ``full``, ``sub``.
  """
  rows = []
  for i in range(tree.num_runs(params)):
    k, p, st = jax.random.fold_in(key, i), tree.select(params, i), tree.select(state, i)
    obj = {s: Objective.from_stateful(apply, st, data=getattr(ds, s), batch_size=eval_batch_size,
                                      name=f"{ds.name}-{s}") for s in ("train", "test")}
    out: dict[str, Any] = {}
    for s in ("train", "test"):
      loss, metrics = jax.jit(obj[s].loss)(p)
      out.update({f"{s}_loss": float(loss), f"{s}_acc": float(metrics["accuracy"])})
    for space, dim in (("full", None), ("sub", int(subspace_dim))):
      res = [sharpness.keskar(obj["train"], p, float(e), key=jax.random.fold_in(k, 10 * j + (dim is not None)),
                              subspace_dim=dim, **keskar_kw) for j, e in enumerate(eps)]
      out.update({f"phi_{space}": [r.phi for r in res], f"phi_{space}_corners_ok": [r.corners_ok for r in res],
                  **{f"phi_{space}_{m}": [r.phi_by_maximizer[m] for r in res] for m in ("lbfgsb", "sign")}})
    eig = hessian.eigenvalues(obj["train"], p, k=1, key=jax.random.fold_in(k, 99), num_steps=int(lanczos_steps))
    rows.append({**out, "lam_max": float(eig.values[0]), "lam_residual": float(eig.residuals[0]),
                 "lam_converged": bool(eig.converged[0])})
  return {name: np.asarray([r[name] for r in rows]) for name in rows[0]}


def interpolation_lines(apply: Callable, state: Any, start: Any, end: Any, ds: data.Dataset, alpha: Sequence[float], *,
                        eval_batch_size: int | None = 512) -> dict[str, np.ndarray]:
  """Loss and accuracy along ``alpha end + (1 - alpha) start`` for every run of stacked solutions, both splits.

  The line of run ``i`` is a 1-D :func:`~jaxscape.surface.loss_surface` from
  ``start[i]`` along the interpolation direction, with run ``i``'s ``state``
  frozen (its BatchNorm statistics; a no-op for BN-free nets).

  Args:
    apply: the pure apply (:func:`jaxscape.adapters.nnx.split_train`).
    state, start, end: stacked (leading run axis) states and end points.
    ds: the dataset.
    alpha: the evenly spaced line coordinates (as :func:`jaxscape.surface.parse_range` returns).
    eval_batch_size: examples per batch of the full-data loss.

  Returns:
    ``{"line_<split>_loss", "line_<split>_acc": [runs, len(alpha)]}`` for ``split`` in ``train``, ``test``.
  """
  out: dict[str, list] = {}
  for i in range(tree.num_runs(start)):
    p0, p1 = tree.select(start, i), tree.select(end, i)
    for s in ("train", "test"):
      obj = Objective.from_stateful(apply, tree.select(state, i), data=getattr(ds, s), batch_size=eval_batch_size)
      line = loss_surface(obj, p0, interpolation_direction(p0, p1), x=(float(alpha[0]), float(alpha[-1]), len(alpha)),
                          quiet=True)
      out.setdefault(f"line_{s}_loss", []).append(np.asarray(line.loss))
      out.setdefault(f"line_{s}_acc", []).append(np.asarray(line.metrics["accuracy"]))
  return {k: np.stack(v) for k, v in out.items()}


def regime_study(key: jax.Array, init: Callable[[jax.Array], Any], ds: data.Dataset,
                 regimes: Mapping[str, Mapping[str, Any]], *, seeds: int, alpha: Sequence[float],
                 measures: Mapping[str, Any], eval_batch_size: int | None = 512, **common: Any) -> dict[str, Any]:
  """Paired training regimes compared solution by solution (e.g. small vs large batch, Keskar et al. 2017).

  Trains every regime (:func:`train_regimes`: run ``i`` of each from the same
  start), measures every solution (:func:`solution_measures`, regime ``r``
  with key ``fold_in(fold_in(key, 2), r)``), and evaluates the line from each
  run's first-regime solution to its second-regime one
  (:func:`interpolation_lines`, the first regime's state frozen).

  Args:
    key: the key of this study.
    init: ``init(key) -> nnx.Module``.
    ds: the dataset.
    regimes: ``{name: regime}`` as in :func:`train_regimes` (at least two; the line joins the first two).
    seeds: runs per regime.
    alpha: the line coordinates (evenly spaced).
    measures: keyword arguments of :func:`solution_measures` (``eps``, ``subspace_dim``, ...).
    eval_batch_size: examples per batch of every full-data evaluation.
    **common: the :class:`~jaxscape.train.TrainConfig` fields shared by all regimes.

  Returns:
    ``{"arrays": {"<regime>_<measure>", "<regime>_distance" (from the start), "<regime>_hist_<field>", "alpha",
    "line_<split>_<loss|acc>"}, "timing": {"train_<regime>_s", "measure_s", "line_s"}, "steps": {regime: steps},
    "num_params"}``.
  """
  tr = train_regimes(key, init, ds, regimes, seeds=seeds, eval_batch_size=eval_batch_size, **common)
  (_, apply, _, _), t0, a = adapters.nnx.split_train(init(jax.random.fold_in(key, 1))), time.perf_counter(), {}
  for i, (r, x) in enumerate(tr.items()):
    m = solution_measures(jax.random.fold_in(jax.random.fold_in(key, 2), i), apply, x["state"], x["params"], ds,
                          eval_batch_size=eval_batch_size, **measures)
    a.update({f"{r}_{k}": v for k, v in m.items()}, **{f"{r}_hist_{k}": getattr(x["history"], k) for k in (
        "step", "train_loss", "test_loss", "train_accuracy", "test_accuracy")})
    a[f"{r}_distance"] = np.asarray(tree.distances(x["params"], x["start"]))
  timing = {**{f"train_{r}_s": x["seconds"] for r, x in tr.items()}, "measure_s": time.perf_counter() - t0}
  (first, second), t0 = list(tr.values())[:2], time.perf_counter()
  a.update(alpha=np.asarray(alpha), **interpolation_lines(apply, first["state"], first["params"], second["params"], ds,
                                                          alpha, eval_batch_size=eval_batch_size))
  return {"arrays": a, "timing": {**timing, "line_s": time.perf_counter() - t0},
          "steps": {r: x["steps"] for r, x in tr.items()},
          "num_params": int(models.count_params(tree.select(first["params"], 0)))}


def train_sizes(key: jax.Array, init: Callable[[int, jax.Array], Any], sizes: Sequence[int], ds: data.Dataset,
                train_config: Any, *, seeds: int) -> dict[str, np.ndarray]:
  """Trains ``seeds`` runs of a model per size (e.g. hidden width) and keeps their final losses and accuracies.

  Size ``h`` is one :func:`jaxscape.train.train_many` call with keys split from
  ``fold_in(key, h)``, so its runs share one compiled, vmapped training.

  Args:
    key: the key of the sweep.
    init: ``init(size, key) -> nnx.Module``.
    sizes: the (integer) sizes.
    ds: the dataset.
    train_config: a :class:`~jaxscape.train.TrainConfig` or its dict.
    seeds: runs per size.

  Returns:
    ``{"train_loss", "test_loss", "train_accuracy", "test_accuracy": [len(sizes), seeds]}`` (the last evaluation of
    the history) and ``"params"``: the parameter count per size.
  """
  cfg = train_config if isinstance(train_config, train.TrainConfig) else train.TrainConfig.from_dict(train_config)
  out: dict[str, list] = {k: [] for k in ("train_loss", "test_loss", "train_accuracy", "test_accuracy", "params")}
  for h in sizes:
    params, _, hist = train.train_many(jax.random.split(jax.random.fold_in(key, h), int(seeds)),
                                       functools.partial(init, h), ds, cfg)
    for k in ("train_loss", "test_loss", "train_accuracy", "test_accuracy"):
      out[k].append(np.asarray(getattr(hist, k))[:, -1])
    out["params"].append(sum(int(np.prod(a.shape[1:])) for a in jax.tree.leaves(params)))
  return {k: np.asarray(v) for k, v in out.items()}


def variant_surfaces(key: jax.Array, build: Callable[..., Any], variants: Mapping[str, Mapping[str, Any]],
                     sizes: Sequence[int], ds: data.Dataset, train_config: Any, *, size_arg: str = "depth",
                     **seed_surfaces_kw: Any) -> dict[tuple[str, int], dict[str, Any]]:
  """:func:`seed_surfaces` for every (variant, size) of a model family, the variants of one size paired.

  Size ``d`` of every variant uses the key ``fold_in(key, d)``, so e.g. plain
  and residual networks of one depth share initialisation keys, data order
  and random directions (Li et al. 2018's with/without shortcuts).

  Args:
    key: the key of the family.
    build: ``build(key, **kwargs) -> nnx.Module`` (e.g. ``functools.partial(models.build, "resnet", num_classes=10)``).
    variants: ``{name: extra build kwargs}``.
    sizes: values of the ``size_arg`` build argument.
    ds: the dataset.
    train_config: a :class:`~jaxscape.train.TrainConfig` or its dict.
    size_arg: the build argument the sizes set.
    **seed_surfaces_kw: the other arguments of :func:`seed_surfaces` (``seeds``, ``grid``, ...).

  Returns:
    ``{(variant, size): seed_surfaces result}``, sizes outer, variants inner.
  """
  return {(v, int(d)): seed_surfaces(jax.random.fold_in(key, int(d)), functools.partial(
      build, **{size_arg: int(d)}, **kw), ds, train_config, **seed_surfaces_kw) for d in sizes for v, kw in
      variants.items()}


def seed_surface_statistics(studies: Mapping[tuple, Mapping[str, Any]], labels: Sequence[str]) -> str:
  """A report table of :func:`seed_surfaces` results, one row per study: statistics as mean ± std over seeds.

  Columns: the labels, parameters, seeds, test accuracy, the non-convex fractions (finite-difference, and the exact
  pointwise diagnostic), log10 and worst maximum grid loss, non-finite points, the full-Hessian ratio statistics and
  the training / surface seconds.

  Args:
    studies: ``{label tuple: seed_surfaces result}`` (e.g. ``(family, variant, depth)``), in row order.
    labels: the names of the label columns.
  """
  ms = lambda r, k, n=3: mean_std(r["summary"], k, n)  # noqa: E731
  return table([*labels, "params", "seeds", "test acc", "non-convex frac (finite diff.)",
                "non-convex frac (exact pointwise, diagnostic)", "log10 max loss", "max loss (worst seed)",
                "non-finite pts", "ratio median", "share ratio < -0.1", "train s", "surface s"], [
      (*lab, r["num_params"], len(r["seeds"]), ms(r, "test_accuracy", 4), ms(r, "fd_nonconvex_fraction"),
       ms(r, "nonconvex_fraction"), ms(r, "log10_max_loss", 2), fmt(r["summary"]["max_loss"]["max"]),
       int(sum(s["num_nonfinite"] for s in r["seeds"])), ms(r, "ratio_median"), ms(r, "ratio_frac_nonconvex", 2),
       f"{r['train_s']:.0f}", f"{r['surface_s']:.0f}") for lab, r in studies.items()])


def seed_surface_runs(studies: Mapping[tuple, Mapping[str, Any]], labels: Sequence[str]) -> str:
  """A report table of :func:`seed_surfaces` results, one row per trained run (final losses and surface statistics).

  Args:
    studies: ``{label tuple: seed_surfaces result}``, in row order.
    labels: the names of the label columns.
  """
  return table([*labels, "seed", "final train loss", "train acc", "test acc", "loss at origin",
                "non-convex frac (finite diff.)", "non-convex frac (exact)", "max grid loss", "ratio median"], [
      (*lab, s, r["train_loss"], r["train_accuracy"], r["test_accuracy"], r["origin_loss"],
       r.get("fd_nonconvex_fraction", np.nan), r.get("nonconvex_fraction", np.nan), r["max_loss"],
       r.get("ratio_median", np.nan)) for lab, x in studies.items() for s, r in enumerate(x["seeds"])])


def seed_surface_notes(studies: Mapping[tuple, Mapping[str, Any]], *, min_accuracy: float = 0.5) -> list[str]:
  """Report notes on :func:`seed_surfaces` results: runs that did not train, and the non-finite grid losses.

  Args:
    studies: ``{label tuple: seed_surfaces result}``; a label reads as words (``MLP plain depth 4``).
    min_accuracy: runs whose final train accuracy is below it "did not train".
  """
  runs = [(lab, s, r) for lab, x in studies.items() for s, r in enumerate(x["seeds"])]
  return [f"{' '.join(map(str, lab))} seed {s} did not train (final train loss {r['train_loss']:.3g}, train accuracy "
          f"{r['train_accuracy']:.3f}); it is kept in the seed means." for lab, s, r in runs
          if r["train_accuracy"] < min_accuracy] + [
      f"Non-finite grid losses over all surfaces: {int(sum(r['num_nonfinite'] for *_, r in runs))} (recorded as NaN, "
      "left out of maxima)."]


def seed_means(studies: Mapping[tuple[str, int], Mapping[str, Any]], name: str, variants: Sequence[str],
               sizes: Sequence[int]) -> dict[str, list[float]]:
  """The seed mean of one :func:`jaxscape.stats.seed_summary` entry for every variant and size.

  Args:
    studies: ``{(variant, size): seed_surfaces result}`` (:func:`variant_surfaces`).
    name: the entry (e.g. ``"fd_nonconvex_fraction"``).
    variants, sizes: which studies, in order.

  Returns:
    ``{variant: [mean at each size]}``; NaN where a study's summary has no such entry.

  Example:
    >>> studies = {("plain", 4): {"summary": {"loss": {"mean": 0.5}}}, ("plain", 8): {"summary": {}}}
    >>> seed_means(studies, "loss", ["plain"], [4, 8])
    {'plain': [0.5, nan]}
  """
  summary = lambda v, d: studies[(v, int(d))]["summary"]  # noqa: E731
  return {v: [summary(v, d)[name]["mean"] if name in summary(v, d) else float("nan") for d in sizes] for v in variants}


def size_text(sizes: Sequence[int], values: Sequence[float], *, prefix: str = "d", digits: int = 3) -> str:
  """``"d4: 0.125, d16: 0.500"``: one value per size, for report evidence.

  Example:
    >>> size_text([4, 16], [0.125, 0.5])
    'd4: 0.125, d16: 0.500'
  """
  if len(sizes) != len(values):
    raise ValueError(f"need one value per size; got {len(sizes)} sizes and {len(values)} values")
  return ", ".join(f"{prefix}{d}: {x:.{digits}f}" for d, x in zip(sizes, values))


def seed_surface_meta(studies: Mapping[tuple[str, int], Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
  """The JSON part of :func:`variant_surfaces` results (for ``meta.json``): ``{"<variant>_d<size>": {...}}``.

  Each entry keeps ``seeds`` (per-run statistics), ``summary``, ``train_s``, ``surface_s`` and ``num_params``;
  the surfaces themselves go to ``results.npz`` (:func:`seed_surface_arrays`).

  Example:
    >>> r = {"seeds": [], "summary": {}, "train_s": 1.0, "surface_s": 2.0, "num_params": 3, "surfaces": []}
    >>> seed_surface_meta({("plain", 4): r})
    {'plain_d4': {'seeds': [], 'summary': {}, 'train_s': 1.0, 'surface_s': 2.0, 'num_params': 3}}
  """
  keep = ("seeds", "summary", "train_s", "surface_s", "num_params")
  return {f"{v}_d{d}": {k: x[k] for k in keep} for (v, d), x in studies.items()}


_FAMILY_SURFACE_ARGS = ("seeds", "grid", "span", "eval_batch_size", "ratio_grid", "ratio_seeds", "plane_seeds",
                        "lanczos_steps", "trace_probes")


def family_surfaces(key: jax.Array, family: Mapping[str, Any], ds: data.Dataset, *, variants: Sequence[str],
                    rel: float = 0.01) -> dict[tuple[str, int], dict[str, Any]]:
  """:func:`variant_surfaces` of a model family as a config describes it.

  Args:
    key: the key of the family.
    family: a JSON dict: ``model`` (a :data:`jaxscape.models.REGISTRY` name) and its ``kwargs``, ``variants``
      (``{name: extra kwargs}``), ``depths``, ``train`` (:class:`~jaxscape.train.TrainConfig` fields) and the
      :func:`seed_surfaces` settings ``seeds``, ``grid``, ``span``, ``eval_batch_size``, ``ratio_grid``,
      ``ratio_seeds``, ``plane_seeds``, ``lanczos_steps``, ``trace_probes``.
    ds: the dataset.
    variants: which of ``family["variants"]``, in order.
    rel: non-convexity threshold of :func:`jaxscape.stats.surface_stats`.

  Returns:
    ``{(variant, depth): seed_surfaces result}``.
  """
  missing = sorted({"model", "kwargs", "variants", "depths", "train", *_FAMILY_SURFACE_ARGS} - set(family))
  if missing or not set(variants) <= set(family["variants"]):
    raise ValueError(f"a family needs the fields {missing} and the variants {list(variants)}; got fields "
                     f"{sorted(family)} and variants {sorted(family.get('variants', {}))}")
  build = functools.partial(models.build, family["model"], **family["kwargs"])
  return variant_surfaces(key, build, {v: family["variants"][v] for v in variants}, family["depths"], ds,
                          family["train"], rel=rel, **{k: family[k] for k in _FAMILY_SURFACE_ARGS})
