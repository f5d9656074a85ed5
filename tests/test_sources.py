"""Your own model on the command line: --model FILE:FACTORY, --params in four formats, --data; clear mismatch errors."""

import json
import os
import struct

import jax
import numpy as np
import pytest

import jaxscape as js
from jaxscape import checkpoint, cli, sources

MODEL_FILE = '''"""A user's model file: an nnx MLP factory, a pure (apply, params) pair, and the data."""
import jax.numpy as jnp
import numpy as np
from flax import nnx


class Net(nnx.Module):
  def __init__(self, width: int, rngs: nnx.Rngs):
    self.hidden = nnx.Linear(64, width, rngs=rngs)
    self.out = nnx.Linear(width, 10, rngs=rngs)

  def __call__(self, x):
    return self.out(nnx.relu(self.hidden(x)))


def make(width: int = 16, seed: int = 0) -> Net:
  return Net(width, nnx.Rngs(seed))


def linear(seed: int = 0):
  rng = np.random.default_rng(seed)
  params = {"w": jnp.asarray(rng.normal(size=(64, 10)) * 0.1, jnp.float32), "b": jnp.zeros(10, jnp.float32)}
  return (lambda p, x: x @ p["w"] + p["b"][None, :]), params


def digits():
  import jaxscape as js

  return js.data.load("digits", flatten=True, test_size=300)
'''


def _write_safetensors(path, arrays):
  header, offset, blobs = {}, 0, []
  for name, a in arrays.items():
    a = np.ascontiguousarray(a, np.float32)
    header[name] = {"dtype": "F32", "shape": list(a.shape), "data_offsets": [offset, offset + a.nbytes]}
    offset += a.nbytes
    blobs.append(a.tobytes())
  text = json.dumps(header).encode()
  with open(path, "wb") as f:
    f.write(struct.pack("<Q", len(text)) + text + b"".join(blobs))


@pytest.fixture(scope="module")
def user(tmp_path_factory):
  """The model file and the parameters of Net(width=8, seed=1) in the four formats."""
  d = tmp_path_factory.mktemp("user")
  model_file = d / "user_net.py"
  model_file.write_text(MODEL_FILE)
  trained = sources.user_model(f"{model_file}:make", kwargs={"width": 8, "seed": 1}).params
  named = {name: np.asarray(leaf) for name, leaf in zip(js.tree.leaf_names(trained), jax.tree.leaves(trained))}
  files = {"npz": str(d / "p.npz"), "safetensors": str(d / "p.safetensors"), "msgpack": str(d / "p.msgpack"),
           "orbax": str(d / "orbax")}
  np.savez(files["npz"], **named)
  _write_safetensors(files["safetensors"], {k.replace("/", "."): v for k, v in named.items()})  # PyTorch-style names
  from flax import serialization

  with open(files["msgpack"], "wb") as f:
    f.write(serialization.msgpack_serialize({"params": jax.tree.map(np.asarray, trained)}))
  checkpoint.save(files["orbax"], trained)
  return str(model_file), files, trained


@pytest.mark.parametrize("fmt", ["npz", "safetensors", "msgpack", "orbax"])
def test_every_params_format_loads_the_same_leaves(user, fmt):
  model_file, files, trained = user
  got = sources.user_model(f"{model_file}:make", kwargs={"width": 8}, params_path=files[fmt]).params
  js.tree.assert_allclose(got, trained, rtol=0)


def test_surface_and_hessian_on_a_user_model_file(user, tmp_path, capsys):
  model_file, files, trained = user
  out = str(tmp_path / "s")
  argv = ["surface", "--model", f"{model_file}:make", "--model-kwargs", '{"width": 8}', "--params", files["npz"],
          "--data", f"{model_file}:digits", "--x=-1:1:3", "--y=-1:1:3", "--out", out, "--quiet"]
  assert cli.main(argv) == 0
  ds = sources.load_data(f"{model_file}:digits")
  mod = sources.import_object(f"{model_file}:make")(width=8, seed=1)
  obj, p = js.Objective.from_model(mod, data=ds.train)
  surf = js.surface.load_surface(out)
  np.testing.assert_allclose(surf.loss[1, 1], float(obj.value(p)), rtol=1e-5)  # the centre is the loaded model
  with open(os.path.join(out, "meta.json")) as f:
    source = json.load(f)["config"]["source"]
  assert source["model"].endswith("user_net.py:make") and source["params"] == os.path.abspath(files["npz"])
  capsys.readouterr()
  assert cli.main(["hessian", "--model", f"{model_file}:linear", "--data", f"{model_file}:digits", "--top-k", "1",
                   "--out", str(tmp_path / "h2")]) == 0
  assert "certified 1/1" in capsys.readouterr().out


def test_params_that_do_not_fit_are_named(user, tmp_path):
  model_file, files, trained = user
  with pytest.raises(ValueError, match=r"other shapes: hidden/bias: file \(8,\), model \(16,\)"):
    sources.user_model(f"{model_file}:make", kwargs={"width": 16}, params_path=files["npz"])
  with np.load(files["npz"]) as f:
    arrays = {k: f[k] for k in f.files}
  partial = str(tmp_path / "partial.npz")
  np.savez(partial, **{k: v for k, v in arrays.items() if k != "out/bias"}, **{"head/kernel": np.zeros(3)})
  with pytest.raises(ValueError, match=r"missing 1 \(out/bias\); extra 1 \(head/kernel\)"):
    sources.user_model(f"{model_file}:make", kwargs={"width": 8}, params_path=partial)
  with pytest.raises(ValueError, match="expected an orbax checkpoint directory or a .msgpack, .npz or .safetensors"):
    sources.read_params(model_file)
  broken = str(tmp_path / "broken.safetensors")
  with open(files["safetensors"], "rb") as f:
    raw = f.read()
  with open(broken, "wb") as f:
    f.write(raw[:-10])
  with pytest.raises(ValueError, match="truncated or corrupted"):
    sources.read_params(broken)


def test_bad_model_and_data_specs_say_what_was_expected(user, tmp_path, capsys):
  model_file, _, _ = user
  with pytest.raises(ValueError, match="has no 'nope'; it defines"):
    sources.import_object(f"{model_file}:nope")
  with pytest.raises(ValueError, match="PKG.MODULE:NAME"):
    sources.import_object("no_colon")
  with pytest.raises(ValueError, match="cannot import 'no_such_pkg_xyz.mod'.*PYTHONPATH"):
    sources.import_object("no_such_pkg_xyz.mod:f")
  npz = str(tmp_path / "d.npz")
  np.savez(npz, inputs=np.zeros((4, 64)))
  with pytest.raises(ValueError, match=r"must hold arrays 'x' and 'y'.*\['inputs'\]"):
    sources.load_data(npz)
  assert cli.main(["surface", "--model", f"{model_file}:make", "--x=-1:1:3", "--out", str(tmp_path / "o")]) == 2
  assert "--model needs --data" in capsys.readouterr().err
