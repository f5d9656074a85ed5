"""Property tests (hypothesis): normalisation invariants, chunk/device invariance, loaders on random bytes."""

import json
import os
import tempfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import jaxscape as js
from jaxscape import checkpoint, data
from jaxscape import io as jio
from jaxscape.directions import _filter_norms, flax_layout, normalize
from jaxscape.surface import part_indices

SETTINGS = dict(deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])

# ----------------------------------------------------------------------------- filter normalisation

shapes = st.lists(st.integers(1, 4), min_size=0, max_size=4).map(tuple)
# leaf names: plain names are weights under the default (Flax) layout, "bias" / "scale" are ignored by biasbn
pytree_shapes = st.dictionaries(st.sampled_from([*"abcd", "bias", "scale"]), shapes, min_size=1, max_size=4).filter(
    lambda t: any(k not in ("bias", "scale") for k in t))


def _draw(shape_tree, seed):
  rng = np.random.default_rng(seed)
  return {k: jnp.asarray(rng.normal(size=s) + 0.1, jnp.float32) for k, s in shape_tree.items()}


def _filters(x, whole=False):
  """Filter norms in NumPy (float64): the norm over all but the last axis, or of the whole leaf when ndim <= 1
  (or for biases and norm scales)."""
  x = np.asarray(x, np.float64)
  return np.atleast_1d(np.linalg.norm(x) if x.ndim <= 1 or whole else np.sqrt((x**2).sum(axis=tuple(range(x.ndim - 1))))).ravel()


@jax.jit
def _normalisations(d, p, a, b):
  """Every normalisation the invariants compare, in one compiled call per pytree shape."""
  return {"filter": normalize(d, p, "filter", None), "scaled_draw": normalize(js.tree.scale(a, d), p, "filter", None),
          "scaled_weights": normalize(d, js.tree.scale(b, p), "filter", None),
          "biasbn": normalize(d, p, "filter", "biasbn"), "layer": normalize(d, p, "layer", None),
          "model": normalize(d, p, "model", None), "filter_norms": {k: _filter_norms(v, flax_layout(k, v).out_axes) for k, v in p.items()}}


@settings(max_examples=12, **SETTINGS)
@given(pytree_shapes, st.integers(0, 2**16), st.floats(0.1, 10.0), st.floats(0.1, 10.0))
def test_filter_normalisation_invariants_on_random_pytrees(shape_tree, seed, a, b):
  p, d = _draw(shape_tree, seed), _draw(shape_tree, seed + 1)
  out = jax.tree.map(np.asarray, _normalisations(d, p, a, b))
  n = out["filter"]
  # float32 norms: 1e-4 relative
  for k in p:
    # every filter (slice along the last axis; a whole leaf when ndim <= 1) takes its weight filter's norm
    np.testing.assert_allclose(_filters(n[k], k in ("bias", "scale")), out["filter_norms"][k].ravel(), rtol=1e-4,
                               err_msg=k)
  # invariant to the scale of the raw draw, equivariant to the scale of the weights
  js.tree.assert_allclose(out["scaled_draw"], n, rtol=1e-4, atol=1e-6)
  js.tree.assert_allclose(out["scaled_weights"], js.tree.scale(b, n), rtol=1e-4, atol=1e-6)
  # biasbn zeroes exactly the biases and norm scales (by role, not ndim) and leaves the others as filter-normalised
  for k in p:
    if k in ("bias", "scale"):
      assert not np.any(out["biasbn"][k]), k
    else:
      np.testing.assert_allclose(out["biasbn"][k], n[k], rtol=1e-6, err_msg=k)
  # layer and model normalisation keep the leaf norms / the total norm
  for k in p:
    np.testing.assert_allclose(np.linalg.norm(out["layer"][k]), np.linalg.norm(p[k]), rtol=1e-4, err_msg=k)
  np.testing.assert_allclose(js.tree.norm(out["model"]), js.tree.norm(p), rtol=1e-4)


# ----------------------------------------------------------------------------- chunk size and device count


def _mlp(p, x):
  return jnp.tanh(x @ p["l1"]["kernel"] + p["l1"]["bias"][None]) @ p["l2"]["kernel"] + p["l2"]["bias"][None]


@pytest.fixture(scope="module")
def surface_problem():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(40, 5)).astype(np.float32)
  y = rng.integers(0, 3, 40)
  p = {"l1": {"kernel": jnp.asarray(rng.normal(size=(5, 6)) / 2, jnp.float32), "bias": jnp.zeros(6, jnp.float32)},
       "l2": {"kernel": jnp.asarray(rng.normal(size=(6, 3)) / 2, jnp.float32), "bias": jnp.zeros(3, jnp.float32)}}
  obj = js.Objective.from_apply(_mlp, p, data=(x, y), batch_size=16)
  dirs = js.random_directions(jax.random.key(0), p, n=2)
  base = js.loss_surface(obj, p, dirs, x=(-1, 1, 5), y=(-1, 1, 3), devices=jax.devices()[:1], chunk_size=15, quiet=True)
  return obj, p, dirs, base


@settings(max_examples=10, **SETTINGS)
@given(st.integers(1, 16), st.sampled_from([1, 2, 4, 8]), st.integers(1, 3))
def test_surface_is_independent_of_chunk_size_and_device_count(surface_problem, chunk_size, num_devices, per_call):
  obj, p, dirs, base = surface_problem
  surf = js.loss_surface(obj, p, dirs, x=(-1, 1, 5), y=(-1, 1, 3), devices=jax.devices()[:num_devices],
                         chunk_size=chunk_size, chunks_per_call=per_call, quiet=True)
  # float32 means over 40 examples in vmapped batches of other sizes: 1e-6 relative
  np.testing.assert_allclose(surf.loss, base.loss, rtol=1e-6)
  np.testing.assert_allclose(surf.accuracy, base.accuracy, rtol=1e-6)
  assert surf.meta["num_done"] == 15


# ----------------------------------------------------------------------------- parts of a split grid

# 1-D (x) or 2-D (x, y) ranges of 2 to 12 points: with chunks of 2 points every call has one shape per
# dimension, so all examples share two compilations.
_range = st.tuples(st.floats(-2.0, 0.0), st.floats(0.1, 2.0)).map(lambda t: (t[0], t[0] + t[1]))
grids = st.one_of(st.tuples(st.tuples(_range, st.integers(2, 12))),
                  st.tuples(st.tuples(_range, st.integers(1, 4)), st.tuples(_range, st.integers(1, 3)))
                  .filter(lambda g: g[0][1] * g[1][1] >= 2))


@settings(max_examples=12, **SETTINGS)
@given(grids, st.data())
def test_merged_parts_equal_the_whole_run(surface_problem, grid, data):
  obj, p, dirs, _ = surface_problem
  num_points = int(np.prod([num for _, num in grid]))
  n = data.draw(st.integers(1, num_points), label="parts")
  ranges = [(lo, hi, num) for (lo, hi), num in grid]
  kw = dict(ranges=ranges, devices=jax.devices()[:1], chunk_size=2, chunks_per_call=1, quiet=True)
  dirs = [dirs[i] for i in range(len(grid))]
  whole = js.loss_surface(obj, p, dirs, **kw)
  with tempfile.TemporaryDirectory() as out:
    for i in range(n):
      part = js.loss_surface(obj, p, dirs, part=(i, n), out_dir=out, **kw)
      assert part.meta["points_evaluated"] == part.meta["part_points"] == part_indices(num_points, (i, n)).size
    merged = js.merge_surfaces(out)
  # the same points in calls of the same shape: bit for bit
  np.testing.assert_array_equal(merged.loss, whole.loss)
  np.testing.assert_array_equal(merged.accuracy, whole.accuracy)
  assert merged.meta["config"] == whole.meta["config"] and merged.num_nonfinite == 0


# ----------------------------------------------------------------------------- loaders on random bytes


def _write(directory, name, raw):
  path = os.path.join(directory, name)
  with open(path, "wb") as f:
    f.write(raw)
  return path


@settings(max_examples=25, **SETTINGS)
@given(st.binary(max_size=256))
def test_idx_reader_returns_an_array_or_raises_value_error(raw):
  with tempfile.TemporaryDirectory() as d:
    for name in ("x-idx1-ubyte", "x-idx1-ubyte.gz"):
      try:
        out = data.read_idx(_write(d, name, raw))
      except ValueError:
        continue
      assert isinstance(out, np.ndarray)  # random bytes can form a valid IDX file (e.g. 00 00 08 00 + 1 byte)


@settings(max_examples=25, **SETTINGS)
@given(st.binary(max_size=256))
def test_cifar_reader_rejects_random_bytes_with_value_error(raw):
  with tempfile.TemporaryDirectory() as d:
    for n in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
      _write(d, n, raw)
    with pytest.raises(ValueError):
      data.load("cifar10", data_dir=d)


@settings(max_examples=25, **SETTINGS)
@given(st.binary(max_size=512), st.booleans())
def test_result_loader_rejects_random_bytes_with_corrupt_result_error(raw, in_meta):
  with tempfile.TemporaryDirectory() as d:
    jio.save_result(d, {"loss": np.arange(6.0).reshape(2, 3)}, {"config": {"a": 1}})
    _write(d, "meta.json" if in_meta else "results.npz", raw)
    for verify in (True, False):
      try:
        jio.load_result(d, verify=verify)
      except jio.CorruptResultError:
        continue
      # only bytes that parse can get through: valid JSON metadata, or (unverified) a valid .npz
      assert in_meta
      meta = json.loads(raw.decode("utf-8"))
      assert isinstance(meta, dict)
    with pytest.raises(jio.CorruptResultError):  # a resumable run never reuses them (no matching checksum)
      jio.ResultStore(d, {"a": 1}).open()


@settings(max_examples=15, **SETTINGS)
@given(st.binary(max_size=128))
def test_spec_reader_rejects_random_bytes(raw):
  with tempfile.TemporaryDirectory() as d:
    _write(d, "spec.json", raw)
    try:
      spec = checkpoint.read_spec(d)
    except checkpoint.CorruptCheckpointError:
      return
    assert isinstance(spec, dict)
