"""Deep linear networks: products of matrices, the textbook non-convex model.

A deep linear net ``x -> x W_1 W_2 ... W_L`` computes the same function as the
single matrix ``W = W_1 ... W_L`` (its *end-to-end product*), so its loss
depends on the parameters only through ``W``; yet as a function of the factors
it has saddles and a continuum of minima (e.g. the 2-3-1 net).

Example:
  >>> import jax.numpy as jnp
  >>> from flax import nnx
  >>> import jaxscape as js
  >>> net = js.models.DeepLinear(2, [3], 1, rngs=nnx.Rngs(0))
  >>> apply, params, state, _ = js.adapters.split(net)
  >>> W = js.models.end_to_end(params)
  >>> x = jnp.ones((4, 2))
  >>> bool(jnp.allclose(apply(params, state, x), x @ W, atol=1e-6))
  True
"""

from __future__ import annotations

from typing import Any, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from .mlp import MLP

__all__ = ["DeepLinear", "end_to_end"]


class DeepLinear(MLP):
  """An MLP with identity activations and (by default) no biases.

  Args:
    in_features: input size.
    widths: hidden widths (``[3]`` for the 2-3-1 net); any depth.
    out_features: output size.
    use_bias: add biases (the end-to-end map is then affine).
    rngs: ``nnx.Rngs`` for the initialisation.
  """

  def __init__(self, in_features: int, widths: Sequence[int], out_features: int, *, use_bias: bool = False,
               rngs: nnx.Rngs):
    super().__init__(in_features, widths, out_features, activation="linear", use_bias=use_bias, rngs=rngs)


def end_to_end(params: Any) -> jax.Array:
  """The end-to-end matrix ``W_1 W_2 ... W_L`` of a :class:`DeepLinear` (or linear MLP) parameter dict.

  Args:
    params: plain parameter dict as returned by :func:`jaxscape.adapters.split`
      (``{"layers": {0: {"kernel": ...}, ...}, "head": {"kernel": ...}}``).

  Returns:
    ``[in_features, out_features]`` matrix. Biases, if any, are ignored.
  """
  try:
    layers = params["layers"]
    kernels = [layers[k]["kernel"] for k in sorted(layers, key=int)] + [params["head"]["kernel"]]
  except (KeyError, TypeError) as e:
    raise ValueError(f"expected DeepLinear parameters with 'layers' and 'head' kernels; got keys {list(params) if isinstance(params, dict) else type(params).__name__}") from e
  out = kernels[0]
  for k in kernels[1:]:
    out = jnp.matmul(out, k)
  return out
