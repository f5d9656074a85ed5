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

from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from .. import tree
from .mlp import MLP

__all__ = ["DeepLinear", "end_to_end", "refactor", "product_check", "PRODUCT_CHECK_FIELDS"]

PRODUCT_CHECK_FIELDS = ("loss", "loss_refactored", "loss_of_product", "abs_diff_refactored", "abs_diff_product",
                        "max_abs_product_diff", "rel_param_distance")
"""Names of the entries of :func:`product_check`'s tuple."""


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
  kernels = _kernels(params)
  out = kernels[0]
  for k in kernels[1:]:
    out = jnp.matmul(out, k)
  return out


def _kernels(params: Any) -> list[jax.Array]:
  try:
    layers = params["layers"]
    return [layers[k]["kernel"] for k in sorted(layers, key=int)] + [params["head"]["kernel"]]
  except (KeyError, TypeError) as e:
    raise ValueError(f"expected DeepLinear parameters with 'layers' and 'head' kernels; got keys {list(params) if isinstance(params, dict) else type(params).__name__}") from e


def refactor(key: jax.Array, params: Any) -> dict:
  """Another factorisation with the same end-to-end product: ``W_i -> A_{i-1}^-1 W_i A_i``.

  Between every pair of layers a random invertible ``A_i = Q_i diag(s_i)``
  (``Q_i`` orthogonal from the QR decomposition of a Gaussian matrix, ``s_i``
  log-uniform in ``[1/2, 2]``, keys ``fold_in(key, i)``) is inserted, so
  :func:`end_to_end` and hence the loss stay the same while the parameters
  move: the loss of a deep linear net is constant on such manifolds.

  Args:
    key: ``jax.random`` key.
    params: bias-free :class:`DeepLinear` parameters (as for :func:`end_to_end`).

  Returns:
    Parameters of the same structure.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> params = {"layers": {0: {"kernel": jnp.ones((2, 3))}}, "head": {"kernel": jnp.ones((3, 1))}}
    >>> q = refactor(jax.random.key(1), params)
    >>> bool(jnp.allclose(end_to_end(q), end_to_end(params), atol=1e-5))
    True
  """
  ks = _kernels(params)
  if any("bias" in layer for layer in [*params["layers"].values(), params["head"]]):
    raise ValueError("refactor needs a bias-free DeepLinear (use_bias=False): a bias would have to move with A_i")
  out = list(ks)
  for i in range(len(ks) - 1):
    h = ks[i].shape[1]
    kq, ks_ = jax.random.split(jax.random.fold_in(key, i))
    q, _ = jnp.linalg.qr(jax.random.normal(kq, (h, h), ks[i].dtype))
    s = 2.0 ** jax.random.uniform(ks_, (h,), ks[i].dtype, -1.0, 1.0)
    a = q * s[None, :]
    a_inv = (q.T) / s[:, None]
    out[i] = out[i] @ a
    out[i + 1] = a_inv @ out[i + 1]
  layers = {k: {"kernel": out[i]} for i, k in enumerate(sorted(params["layers"], key=int))}
  return {"layers": layers, "head": {"kernel": out[-1]}}


def product_check(key: jax.Array, loss: Callable[[Any], jax.Array], product_loss: Callable[[jax.Array], jax.Array],
                  params: Any) -> tuple[float, ...]:
  """Whether ``loss`` depends on ``params`` only through their :func:`end_to_end` product.

  Compares ``loss`` at ``params`` and at a :func:`refactor` of them (key ``key``) with ``product_loss`` of the product.

  Returns:
    ``(L(theta), L(theta'), L_W(W), |L - L'|, |L - L_W|, max|W - W'|, ||theta' - theta|| / ||theta||)``, floats
    (named by :data:`PRODUCT_CHECK_FIELDS`).

  Example:
    >>> import jax, jax.numpy as jnp
    >>> params = {"layers": {0: {"kernel": jnp.ones((2, 3))}}, "head": {"kernel": jnp.ones((3, 1))}}
    >>> check = product_check(jax.random.key(0), lambda p: jnp.sum(end_to_end(p)), jnp.sum, params)
    >>> check[0], check[2]
    (6.0, 6.0)
  """
  q = refactor(key, params)
  w_p, w_q = end_to_end(params), end_to_end(q)
  l_p, l_q, l_w = float(loss(params)), float(loss(q)), float(product_loss(w_p))
  return (l_p, l_q, l_w, abs(l_p - l_q), abs(l_p - l_w), float(jnp.max(jnp.abs(w_p - w_q))),
          float(tree.norm(tree.sub(q, params)) / tree.norm(params)))
