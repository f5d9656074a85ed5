"""Multi-process surfaces: two local processes x 4 CPU devices (gloo) against one process; gated start-up."""

import os
import socket
import subprocess
import sys
import textwrap
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxscape as js
from jaxscape import cli, distributed

GRID = dict(x=(-1, 1, 5), y=(-1, 1, 3), chunk_size=4, chunks_per_call=1, quiet=True)


def make_problem():
  """A deterministic synthetic problem (no training): 40 examples, a 6-8-3 tanh MLP, two random directions."""
  rng = np.random.default_rng(11)
  x = rng.normal(size=(40, 6)).astype(np.float32)
  y = rng.integers(0, 3, 40)
  p = {"l1": {"kernel": jnp.asarray(rng.normal(size=(6, 8)) / 2, jnp.float32), "bias": jnp.zeros(8)},
       "l2": {"kernel": jnp.asarray(rng.normal(size=(8, 3)) / 2, jnp.float32), "bias": jnp.zeros(3)}}

  def mlp(p, x):
    return jnp.tanh(x @ p["l1"]["kernel"] + p["l1"]["bias"][None]) @ p["l2"]["kernel"] + p["l2"]["bias"][None]

  obj = js.Objective.from_apply(mlp, p, data=(x, y), batch_size=16)
  return obj, p, js.random_directions(jax.random.key(0), p, n=2)


WORKER = textwrap.dedent("""
  import sys
  import jax
  jax.config.update("jax_num_cpu_devices", 4)
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  from jaxscape import distributed
  port, pid, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
  distributed.initialize(f"127.0.0.1:{port}", num_processes=2, process_id=pid)
  import numpy as np
  import jaxscape as js
  sys.path.insert(0, sys.argv[4])
  from test_distributed import GRID, make_problem
  assert jax.process_count() == 2 and jax.device_count() == 8 and jax.local_device_count() == 4
  obj, p, dirs = make_problem()
  surf = js.loss_surface(obj, p, dirs, out_dir=f"{out}/run-{pid}", **GRID)  # only process 0 may write
  np.savez(f"{out}/returned-{pid}.npz", loss=surf.loss, accuracy=surf.accuracy)
  again = js.loss_surface(obj, p, dirs, out_dir=f"{out}/run-{pid}", **GRID)  # process 0 resumes, shares its state
  assert again.meta["points_evaluated"] == 0 and np.array_equal(again.loss, surf.loss), pid
""")


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def test_two_processes_give_the_single_process_surface_and_only_process_0_writes_and_resumes(tmp_path):
  script = tmp_path / "worker.py"
  script.write_text(WORKER)
  env = {**os.environ, "JAX_PLATFORMS": "cpu"}
  env.pop("XLA_FLAGS", None)
  port = _free_port()
  procs = [subprocess.Popen([sys.executable, str(script), str(port), str(pid), str(tmp_path), os.path.dirname(__file__)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for pid in (0, 1)]
  deadline = time.monotonic() + 120
  logs = []
  try:
    for proc in procs:
      logs.append(proc.communicate(timeout=max(1.0, deadline - time.monotonic()))[0])
  except subprocess.TimeoutExpired:
    pytest.fail("the two-process run did not finish in 120 s")
  finally:
    for proc in procs:  # never leave a worker behind (a hung peer waits for the other forever)
      if proc.poll() is None:
        proc.kill()
        proc.wait()
  for pid, proc in enumerate(procs):
    assert proc.returncode == 0, f"process {pid} failed:\n{logs[pid] if pid < len(logs) else ''}"
  assert os.path.isfile(tmp_path / "run-0" / "results.npz") and not os.path.exists(tmp_path / "run-1")
  obj, p, dirs = make_problem()
  single = js.loss_surface(obj, p, dirs, **GRID)  # one process, 8 devices
  written = js.load_surface(str(tmp_path / "run-0"))
  assert written.meta["environment"]["process_count"] == 2
  for pid in (0, 1):
    with np.load(tmp_path / f"returned-{pid}.npz") as f:
      # every process returns the whole surface, exactly what process 0 wrote
      np.testing.assert_array_equal(f["loss"], written.loss)
      np.testing.assert_array_equal(f["accuracy"], written.accuracy)
  # float32 means over 40 examples on 4 vs 8 devices per process: 1e-6 relative
  np.testing.assert_allclose(written.loss, single.loss, rtol=1e-6)
  np.testing.assert_allclose(written.accuracy, single.accuracy, rtol=1e-6)


def test_distributed_start_up_is_gated(monkeypatch):
  calls = []
  monkeypatch.setattr(jax.distributed, "initialize", lambda *a, **k: calls.append((a, k)))
  parse = cli.build_parser().parse_args
  assert not cli._init_distributed(parse(["surface", "--demo"])) and calls == []  # never unless asked
  assert cli._init_distributed(parse(["surface", "--demo", "--distributed"])) and calls == [((), {})]  # auto-detect
  cli._init_distributed(parse(["surface", "--demo", "--coordinator", "10.0.0.1:1234", "--num-processes", "2",
                               "--process-id", "1"]))
  assert calls[-1] == (("10.0.0.1:1234",), {"num_processes": 2, "process_id": 1})
  with pytest.raises(ValueError, match="needs all of coordinator"):
    distributed.initialize("10.0.0.1:1234")
  with pytest.raises(ValueError, match="0 <= process_id < num_processes"):
    distributed.initialize("10.0.0.1:1234", 2, 2)
  assert len(calls) == 2  # the bad calls never reach jax


def test_chunk_flag_is_0_based_i_of_n(capsys):
  parse = cli.build_parser().parse_args
  assert parse(["surface", "--demo", "--chunk", "0/8"]).chunk == (0, 8)
  assert parse(["surface", "--demo", "--chunk", "7/8"]).chunk == (7, 8)
  for bad in ("8/8", "3", "a/b"):
    with pytest.raises(SystemExit):
      parse(["surface", "--demo", "--chunk", bad])
  assert "0 <= I < N" in capsys.readouterr().err


def test_host_exchanges_are_exact_in_one_process():
  values = np.array([0.1, np.nan, 1e300])
  assert np.array_equal(distributed.broadcast({"v": values})["v"], values, equal_nan=True)
  got = distributed.allgather({"v": values, "done": np.array([True, False, True])})
  assert got["v"].shape == (1, 3) and got["v"].dtype == np.float64 and got["done"].dtype == bool
  words = distributed._to_words(values)
  assert words.dtype == np.uint32 and np.array_equal(distributed._from_words(words, values), values, equal_nan=True)
  assert distributed.is_primary()
