"""The examples a user copies run (at their smoke sizes) and measure what they claim."""

import importlib.util
import json
import os
import subprocess
import sys

import jax
import numpy as np

import jaxscape as js

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _example(name):
  spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, "examples", f"{name}.py"))
  module = importlib.util.module_from_spec(spec)
  sys.modules[name] = module  # dataclasses look their module up while the file runs
  spec.loader.exec_module(module)
  return module


def test_transformer_lm_smoke(tmp_path):
  """The example as a user runs it (``python examples/transformer_lm.py --smoke``), in a fresh process.

  At smoke size the run is compile-bound (each curvature call compiles the
  transformer's HVP once more), so XLA's backend optimisation is turned off:
  the same programs, compiled in about half the time. Promotion stays strict,
  as in every test.
  """
  env = dict(os.environ, XLA_FLAGS="--xla_backend_optimization_level=0", JAX_NUMPY_DTYPE_PROMOTION="strict",
             JAX_NUMPY_RANK_PROMOTION="raise", JAX_PLATFORMS="cpu",
             PYTHONPATH=os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")])))
  proc = subprocess.run([sys.executable, os.path.join(ROOT, "examples", "transformer_lm.py"), "--smoke", "--out",
                         str(tmp_path)], env=env, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-4000:]
  for name in ("path.png", "surface.png", "density.png", "summary.json"):
    assert (tmp_path / name).stat().st_size > 0
  summary = json.loads((tmp_path / "summary.json").read_text())
  smoke = _example("transformer_lm").SMOKE
  # training moved the held-out per-token loss below the initialisation's (log(vocab) ~ 4.5 at init)
  assert summary["loss_trained"] < summary["loss_init"]
  assert summary["eval_tokens"] == smoke.eval_sequences * smoke.seq_len
  assert np.isfinite(summary["top_eigenvalues"]).all() and summary["trace_ci95"] > 0
  assert summary["seconds_per_point_alone"] > 0 and summary["temp_bytes_per_point"] > 0


def test_transformer_objective_dropout_rngs_and_eval_mode(tmp_path):
  """The issue's second bug: Dropout's nnx.Rngs state reaching the fingerprint; and dropout must be off."""
  from flax import nnx

  lm = _example("transformer_lm")
  cfg = lm.SMOKE
  model = lm.CharLM(11, cfg, nnx.Rngs(0))
  rng = np.random.default_rng(0)
  ids = rng.integers(0, 11, (6, cfg.seq_len)).astype(np.int32)
  batch = {"input_ids": ids, "labels": np.roll(ids, -1, axis=1)}
  obj, params = js.Objective.from_model(model, data=batch, inputs="input_ids", batch_size=4)
  assert any(jax.dtypes.issubdtype(a.dtype, jax.dtypes.prng_key) for a in jax.tree.leaves(obj.state))
  assert len(js.io.fingerprint(obj.state)) == 16
  # eval mode: two evaluations agree exactly (dropout would draw new masks)
  assert float(obj.value(params)) == float(obj.value(params))
  dirs = js.random_directions(jax.random.key(0), params, n=1, layout=obj.layout)
  surf = js.loss_surface(None, obj, params, dirs, (-0.5, 0.5, 3), quiet=True)
  np.testing.assert_allclose(surf.loss[1], float(obj.value(params)), rtol=1e-5)  # float32 forward passes
  # filter normalisation of the transformer's leaves: embeddings per token row, LayerNorm scales/biases ignored
  d = dirs.vectors
  np.testing.assert_array_equal(np.asarray(d["blocks"][0]["norm1"]["scale"]), 0.0)
  np.testing.assert_array_equal(np.asarray(d["blocks"][0]["up"]["bias"]), 0.0)
  rows = np.linalg.norm(np.asarray(d["tokens"]["embedding"][0]), axis=1)
  np.testing.assert_allclose(rows, np.linalg.norm(np.asarray(params["tokens"]["embedding"]), axis=1), rtol=1e-5)
