"""Test setup: 8 fake CPU devices (for sharding tests) and float64 helpers."""

import jax

# Must happen before any JAX computation initialises the backend.
jax.config.update("jax_num_cpu_devices", 8)

import matplotlib  # noqa: E402

matplotlib.use("Agg")

import pytest  # noqa: E402


@pytest.fixture
def x64():
  """Runs the test with 64-bit floats enabled (dense-reference checks)."""
  with jax.enable_x64(True):
    yield
