"""A jax 0.12 CPU regression: a bfloat16 residual block with a projection shortcut computes NaN under jit.

Found by the GPU script's CPU rehearsal on Python 3.13 (scripts/check_newest.sh): the jitted bfloat16
ResNet forward pass was NaN while eager evaluation was finite. This is the same computation in plain JAX
(conv - normalise - ReLU - conv - normalise, plus a strided 1x1 projection, ReLU, spatial mean), with no
jaxscape or flax code. Observed: jax 0.12.0.1 (CPU) prints "jit finite False"; jax 0.10.2 prints True.
Dropping the normalisations or the second convolution makes it finite. tests/test_device_script.py uses
:func:`reproduces` to tell this bug from a fault of jaxscape's. Run: python scripts/bf16_cpu_nan.py
"""

import jax
import jax.numpy as jnp


def _block(x, w1, w2, wp):
  dn = ("NHWC", "HWIO", "NHWC")
  conv = lambda x, w, s: jax.lax.conv_general_dilated(x, w, (s, s), "SAME", dimension_numbers=dn)  # noqa: E731
  bn = lambda x: x * jax.lax.rsqrt(jnp.ones((1, 1, 1, x.shape[-1]), x.dtype) + jnp.asarray(1e-5, x.dtype))  # noqa: E731
  h = jax.nn.relu(bn(conv(x, w1, 2)))
  h = bn(conv(h, w2, 1))
  return jax.nn.relu(h + bn(conv(x, wp, 2))).mean(axis=(1, 2))


def reproduces() -> tuple[bool, bool]:
  """``(eager finite, jit finite)`` of the block in bfloat16 on the default backend."""
  k = jax.random.split(jax.random.key(0), 4)
  bf = jnp.bfloat16
  args = (jax.random.normal(k[0], (25, 16, 16, 32)).astype(bf), (jax.random.normal(k[1], (3, 3, 32, 64)) * 0.06).astype(bf),
          (jax.random.normal(k[2], (3, 3, 64, 64)) * 0.04).astype(bf), (jax.random.normal(k[3], (1, 1, 32, 64)) * 0.17).astype(bf))
  return bool(jnp.all(jnp.isfinite(_block(*args)))), bool(jnp.all(jnp.isfinite(jax.jit(_block)(*args))))


if __name__ == "__main__":
  eager, jitted = reproduces()
  print(f"jax {jax.__version__} on {jax.default_backend()}: eager finite {eager}, jit finite {jitted}")
