"""Test setup: 8 fake CPU devices (for sharding tests) and float64 helpers."""

import jax

# Must happen before any JAX computation initialises the backend.
jax.config.update("jax_num_cpu_devices", 8)
# Silent promotions are errors (as in equinox's tests): a float32 array meeting a float64 one, or an array
# broadcast against one of a different rank, must be cast or reshaped on purpose.
jax.config.update("jax_numpy_dtype_promotion", "strict")
jax.config.update("jax_numpy_rank_promotion", "raise")

import matplotlib  # noqa: E402

matplotlib.use("Agg")

import pytest  # noqa: E402


@pytest.fixture
def x64():
  """Runs the test with 64-bit floats enabled (dense-reference checks)."""
  with jax.enable_x64(True):
    yield
