"""A character-level transformer language model, trained and then measured, end to end.

A small decoder-only transformer (flax.nnx: token + position embeddings,
pre-LayerNorm blocks, causal self-attention, dropout while training) learns
to predict the next character of Python's own standard-library source (text
that ships with every Python). Then, each in a few lines of jaxscape:

1. the 1-D loss path from the initialisation to the trained weights;
2. a filter-normalised 2-D surface around the trained weights (embeddings
   normalised per token row, LayerNorm scales and biases held fixed);
3. the top Hessian eigenvalues (certified), the trace (95 % interval) and the
   spectral density (SLQ);
4. the time and memory of one grid point.

The data is a dict batch ``{"input_ids": [N, T], "labels": [N, T]}``; the
loss is the per-token cross-entropy, averaged over every token of the
held-out set. Dropout is off in every measurement (eval mode).

Run::

  python examples/transformer_lm.py --out /tmp/lm          # ~3 minutes on 2 busy CPU cores (training: ~50 s)
  python examples/transformer_lm.py --smoke --out /tmp/lm  # ~30 s, mostly compilation (the test runs this)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sysconfig
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import jaxscape as js


@dataclasses.dataclass(frozen=True)
class Config:
  seq_len: int = 64
  d_model: int = 64
  num_heads: int = 4
  num_layers: int = 2
  dropout: float = 0.1
  train_steps: int = 600
  batch_size: int = 32
  learning_rate: float = 3e-3
  eval_sequences: int = 64
  grid: int = 15  # the 2-D surface is grid x grid
  path_points: int = 25
  top_k: int = 3
  max_hvps: int = 300
  trace_probes: int = 40
  density_probes: int = 2
  density_steps: int = 40


SMOKE = Config(seq_len=16, d_model=16, num_heads=2, num_layers=2, train_steps=30, batch_size=8, eval_sequences=8,
               grid=5, path_points=5, top_k=1, max_hvps=40, trace_probes=10, density_probes=1, density_steps=8)

STDLIB_FILES = ("textwrap.py", "string.py", "shlex.py", "fractions.py", "calendar.py", "difflib.py")


# ----------------------------------------------------------------------------- data
def corpus(files: tuple[str, ...] = STDLIB_FILES) -> str:
  """Source text of a few standard-library modules (shipped with every Python)."""
  root = sysconfig.get_paths()["stdlib"]
  texts = []
  for name in files:
    with open(os.path.join(root, name), encoding="utf-8") as f:
      texts.append(f.read())
  return "\n".join(texts)


def tokenize(text: str) -> tuple[np.ndarray, str]:
  """Characters to ids over the text's own alphabet: ``(ids, alphabet)``."""
  alphabet = "".join(sorted(set(text)))
  lookup = {c: i for i, c in enumerate(alphabet)}
  return np.array([lookup[c] for c in text], np.int32), alphabet


def sequences(ids: np.ndarray, seq_len: int) -> dict[str, np.ndarray]:
  """Non-overlapping windows as a dict batch: ``labels`` are the ``input_ids`` shifted by one character."""
  n = (len(ids) - 1) // seq_len
  x = ids[:n * seq_len].reshape(n, seq_len)
  y = ids[1:n * seq_len + 1].reshape(n, seq_len)
  return {"input_ids": x, "labels": y}


# ----------------------------------------------------------------------------- model
class Block(nnx.Module):
  """Pre-LayerNorm transformer block: causal self-attention, then a 4x MLP, each on a residual branch."""

  def __init__(self, d: int, heads: int, dropout: float, rngs: nnx.Rngs):
    self.norm1 = nnx.LayerNorm(d, rngs=rngs)
    self.attn = nnx.MultiHeadAttention(num_heads=heads, in_features=d, decode=False, rngs=rngs)
    self.norm2 = nnx.LayerNorm(d, rngs=rngs)
    self.up = nnx.Linear(d, 4 * d, rngs=rngs)
    self.down = nnx.Linear(4 * d, d, rngs=rngs)
    self.drop = nnx.Dropout(dropout, rngs=rngs)

  def __call__(self, h: jax.Array, mask: jax.Array) -> jax.Array:
    h = h + self.drop(self.attn(self.norm1(h), mask=mask))
    return h + self.drop(self.down(jax.nn.gelu(self.up(self.norm2(h)))))


class CharLM(nnx.Module):
  """Decoder-only transformer: ``ids [B, T] -> logits [B, T, vocab]``."""

  def __init__(self, vocab: int, cfg: Config, rngs: nnx.Rngs):
    self.tokens = nnx.Embed(vocab, cfg.d_model, rngs=rngs)
    self.positions = nnx.Embed(cfg.seq_len, cfg.d_model, rngs=rngs)
    self.blocks = nnx.List([Block(cfg.d_model, cfg.num_heads, cfg.dropout, rngs) for _ in range(cfg.num_layers)])
    self.norm = nnx.LayerNorm(cfg.d_model, rngs=rngs)
    self.head = nnx.Linear(cfg.d_model, vocab, rngs=rngs)

  def __call__(self, ids: jax.Array) -> jax.Array:
    t = ids.shape[1]
    h = self.tokens(ids) + self.positions(jnp.arange(t))[None]
    mask = nnx.make_causal_mask(ids)  # [B, 1, T, T]
    for block in self.blocks:
      h = block(h, mask)
    return self.head(self.norm(h))


def train(model: CharLM, data: dict[str, np.ndarray], cfg: Config, seed: int = 0) -> CharLM:
  """AdamW on random windows, dropout on (the module's own Dropout RNG stream); returns the module, trained."""
  optimizer = nnx.Optimizer(model, optax.adamw(cfg.learning_rate, weight_decay=0.01), wrt=nnx.Param)

  @nnx.jit
  def step(model, optimizer, x, y):
    def loss_fn(model):
      return optax.softmax_cross_entropy_with_integer_labels(model(x), y).mean()

    loss, grads = nnx.value_and_grad(loss_fn)(model)
    optimizer.update(model, grads)
    return loss

  rng = np.random.default_rng(seed)
  model.train()
  with jax.numpy_dtype_promotion("standard"):  # optax's bias correction computes float ** int32 step count
    for _ in range(cfg.train_steps):
      idx = rng.integers(0, len(data["input_ids"]), cfg.batch_size)
      step(model, optimizer, data["input_ids"][idx], data["labels"][idx])
  model.eval()
  return model


# ----------------------------------------------------------------------------- measurements
def run(cfg: Config, out_dir: str, seed: int = 0) -> dict:
  """Trains the model, measures its landscape and curvature, writes figures and ``summary.json`` to ``out_dir``."""
  os.makedirs(out_dir, exist_ok=True)
  ids, alphabet = tokenize(corpus())
  data = sequences(ids, cfg.seq_len)
  held_out = {k: v[-cfg.eval_sequences:] for k, v in data.items()}
  train_set = {k: v[:-cfg.eval_sequences] for k, v in data.items()}

  model = CharLM(len(alphabet), cfg, nnx.Rngs(seed))
  init_params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
  t0 = time.perf_counter()
  train(model, train_set, cfg, seed)
  train_s = time.perf_counter() - t0
  timings = {"train": train_s}

  # The objective over a dict batch: model on input_ids, per-token cross-entropy on labels, eval mode.
  # One batch (the held-out set is small): every curvature call compiles one copy of the model's HVP, no scan.
  obj, params = js.Objective.from_model(model, data=held_out, inputs="input_ids", targets="labels",
                                        batch_size=cfg.eval_sequences, name="stdlib-chars-heldout")
  key = jax.random.key(seed)

  # 1. the path from the initialisation (alpha = 0) to the trained weights (alpha = 1)
  path = js.loss_surface(None, obj, init_params, js.interpolation_direction(init_params, params),
                         (-0.25, 1.25, cfg.path_points), quiet=True)

  # 2. a filter-normalised plane around the trained weights (LayerNorm scales and all biases ignored)
  plane = js.random_directions(key, params, n=2, layout=obj.layout)
  t0 = time.perf_counter()
  surf = js.loss_surface(None, obj, params, plane, (-1.0, 1.0, cfg.grid), (-1.0, 1.0, cfg.grid), quiet=True)
  surface_s = time.perf_counter() - t0

  # 3. curvature at the trained weights
  timings["surface"] = surface_s
  t0 = time.perf_counter()
  top = js.hessian.eigenvalues(jax.random.fold_in(key, 1), obj, params, k=cfg.top_k, tol=1e-2,
                               max_hvps=cfg.max_hvps)
  timings["eigenvalues"] = time.perf_counter() - t0
  t0 = time.perf_counter()
  tr = js.hessian.trace(jax.random.fold_in(key, 2), obj, params, rtol=0.05, min_probes=cfg.trace_probes // 2,
                        max_probes=cfg.trace_probes, block_size=5, sketch_size=10)
  timings["trace"] = time.perf_counter() - t0
  t0 = time.perf_counter()
  dens = js.hessian.density(jax.random.fold_in(key, 3), obj, params, num_probes=cfg.density_probes,
                            num_steps=cfg.density_steps)
  timings["density"] = time.perf_counter() - t0

  # 4. cost of one grid point: one full-data forward pass (compiled memory, measured time)
  value = jax.jit(obj.value)
  compiled = value.lower(params).compile()
  value(params).block_until_ready()
  t0 = time.perf_counter()
  value(params).block_until_ready()
  point_s = time.perf_counter() - t0
  analysis = compiled.memory_analysis()
  temp_bytes = int(getattr(analysis, "temp_size_in_bytes", 0) or 0) if analysis is not None else 0

  summary = {
      "config": dataclasses.asdict(cfg), "vocab": len(alphabet), "num_params": js.tree.size(params),
      "train_sequences": int(len(train_set["input_ids"])), "eval_tokens": obj.num_examples * cfg.seq_len,
      "train_seconds": round(train_s, 2),
      "loss_init": float(path.loss[np.argmin(np.abs(path.x - 0.0))]), "loss_trained": float(obj.value(params)),
      # Goodfellow et al. (2015): is the loss monotone along the straight line from the initialisation?
      "path_monotone": bool(np.all(np.diff(path.loss[(path.x >= 0) & (path.x <= 1)]) <= 0)),
      "surface_seconds": round(surface_s, 3), "surface_points": cfg.grid ** 2,
      "seconds_per_point_in_surface": surface_s / cfg.grid ** 2,
      "seconds_per_point_alone": point_s, "temp_bytes_per_point": temp_bytes,
      "param_bytes": js.tree.size(params) * 4,
      "top_eigenvalues": [float(v) for v in np.asarray(top.values)],
      "top_converged": [bool(c) for c in np.asarray(top.converged)],
      "top_hvps": int(top.num_matvecs), "trace": float(tr.estimate), "trace_ci95": float(tr.ci95),
      "seconds": {k: round(v, 2) for k, v in timings.items()},
  }
  with open(os.path.join(out_dir, "summary.json"), "w") as f:
    json.dump(summary, f, indent=1)
  _figures(path, surf, dens, top, out_dir)
  return summary


def _figures(path, surf, dens, top, out_dir: str) -> None:
  from jaxscape import plot

  fig, ax = plot.curve(path, metric="accuracy", title="init (0) -> trained (1)")
  plot.save(fig, os.path.join(out_dir, "path.png"))
  fig, ax = plot.contour(surf, title="filter-normalised plane (held-out per-token loss)")
  plot.save(fig, os.path.join(out_dir, "surface.png"))
  fig, ax = plot.density(dens, log=True, title=f"Hessian density; top eigenvalue {float(top.values[0]):.3g}")
  plot.save(fig, os.path.join(out_dir, "density.png"))


def main(argv: list[str] | None = None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--smoke", action="store_true", help="a tiny run (seconds), for tests")
  parser.add_argument("--out", default="transformer_lm_out", help="directory for figures and summary.json")
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args(argv)
  summary = run(SMOKE if args.smoke else Config(), args.out, args.seed)
  print(json.dumps(summary, indent=1))
  return summary


if __name__ == "__main__":
  main()
