"""A jax 0.12 CPU regression: a bfloat16 residual block with a projection shortcut computes NaN under jit.

Found by the GPU script's CPU rehearsal on Python 3.13 (scripts/check_newest.sh): the jitted bfloat16
ResNet forward pass was NaN while eager evaluation was finite. This is the same computation in plain JAX
(conv - normalise - ReLU - conv - normalise, plus a strided 1x1 projection, ReLU, spatial mean), with no
jaxscape or flax code. Observed: jax 0.12.0.1 (CPU) prints "jit finite False"; jax 0.10.2 prints True.
Dropping the normalisations or the second convolution makes it finite. Run: python scripts/bf16_cpu_nan.py
"""

import jax, jax.numpy as jnp, numpy as np
bf = jnp.bfloat16
k = jax.random.split(jax.random.key(0), 8)
x = jax.random.normal(k[0], (25, 16, 16, 32)).astype(bf)
w1 = (jax.random.normal(k[1], (3, 3, 32, 64)) * 0.06).astype(bf)
w2 = (jax.random.normal(k[2], (3, 3, 64, 64)) * 0.04).astype(bf)
wp = (jax.random.normal(k[3], (1, 1, 32, 64)) * 0.17).astype(bf)
dn = ("NHWC", "HWIO", "NHWC")
conv = lambda x, w, s: jax.lax.conv_general_dilated(x, w, (s, s), "SAME", dimension_numbers=dn)
def bn(x, m, v):
  return (x - m) * jax.lax.rsqrt(v + jnp.asarray(1e-5, x.dtype))
m1, v1 = jnp.zeros(64, bf), jnp.ones(64, bf)
def f(x, w1, w2, wp):
  h = jax.nn.relu(bn(conv(x, w1, 2), m1, v1))
  h = bn(conv(h, w2, 1), m1, v1)
  s = bn(conv(x, wp, 2), m1, v1)
  return jax.nn.relu(h + s).mean(axis=(1, 2))
e, j = f(x, w1, w2, wp), jax.jit(f)(x, w1, w2, wp)
print(jax.__version__, "eager finite", bool(jnp.all(jnp.isfinite(e))), "jit finite", bool(jnp.all(jnp.isfinite(j))),
      float(jnp.nanmax(jnp.abs(e.astype(jnp.float32) - j.astype(jnp.float32)))))
