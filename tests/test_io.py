"""Results on disk: JSON that keeps non-finite numbers, key records, checksums."""

import json
import math

import jax
import numpy as np
import pytest

from jaxscape import io as jio


def test_json_round_trip_keeps_inf_and_nan(tmp_path):
  value = {"a": {"inf": float("inf"), "ninf": -np.inf, "nan": np.float32("nan")},
           "scalars": [np.float64(np.inf), np.int32(3), np.float32(-np.inf)],
           "array": np.array([1.0, np.nan, -np.inf]), "nested": ({"deep": [np.array(np.inf)]},)}
  path = str(tmp_path / "v.json")
  jio.write_json(path, value)
  with open(path) as f:
    text = f.read()
  assert "Infinity" in text and "NaN" in text and "1e+308" not in text and "null" not in text
  back = jio.read_json(path)
  assert back["a"]["inf"] == math.inf and back["a"]["ninf"] == -math.inf and math.isnan(back["a"]["nan"])
  assert back["scalars"] == [math.inf, 3, -math.inf]
  assert back["array"][0] == 1.0 and math.isnan(back["array"][1]) and back["array"][2] == -math.inf
  assert back["nested"] == [{"deep": [math.inf]}]
  assert jio.same_json(back, jio.to_jsonable(value))  # nan equals nan here
  assert not jio.same_json({"a": math.inf}, {"a": 1e308})
  assert json.loads(json.dumps(jio.to_jsonable(value)))["a"]["inf"] == math.inf


def test_a_config_holding_inf_and_nan_resumes(tmp_path):
  config = {"clip": float("inf"), "floor": -np.inf, "unset": float("nan"), "grid": [1.0, np.inf]}
  d = str(tmp_path / "r")
  store = jio.ResultStore(d, config)
  assert store.open() is None
  store.write({"loss": np.zeros(3)}, {"note": np.nan})
  again = jio.ResultStore(d, config).open()  # the same config after a round trip through meta.json
  np.testing.assert_array_equal(again["loss"], np.zeros(3))
  arrays, meta = jio.load_result(d)
  assert meta["config"]["clip"] == math.inf and math.isnan(meta["note"])
  with pytest.raises(ValueError, match="clip: saved inf, now 1e[+]?308"):
    jio.ResultStore(d, {**config, "clip": 1e308}).open()


def test_key_record_and_sha256_file(tmp_path):
  key = jax.random.key(7)
  assert jio.key_record(key) == [int(v) for v in np.asarray(jax.random.key_data(key))]
  assert jio.key_record(jax.random.PRNGKey(7)) == jio.key_record(key)
  path = tmp_path / "f.bin"
  path.write_bytes(b"abc")
  assert jio.sha256_file(str(path)) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
  with pytest.raises(OSError):
    jio.sha256_file(str(tmp_path / "missing"))
