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
import numpy as np
from flax import nnx

from .. import tree
from ..surface.grid import Surface
from .mlp import MLP

__all__ = ["DeepLinear", "init", "forward", "end_to_end", "refactor", "product_check", "PRODUCT_CHECK_FIELDS",
           "product_surface"]

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


def init(key: jax.Array, sizes: Sequence[int] = (2, 3, 1), *, scale: float = 1.0,
         dtype: Any = jnp.float32) -> dict:
  """Plain bias-free parameters of a dense chain (the 2-3-1 net by default), entries ``N(0, scale^2)``.

  Layer ``i`` (``sizes[i] x sizes[i + 1]``) draws from ``split(key, len(sizes) - 1)[i]``; the layout is that of
  :class:`DeepLinear` split by :func:`jaxscape.adapters.split`, so :func:`end_to_end` and :func:`forward` apply.

  Args:
    key: ``jax.random`` key.
    sizes: input, hidden and output sizes (at least two).
    scale: standard deviation of the entries.
    dtype: their dtype (``jnp.float64`` needs ``jax.enable_x64``).

  Returns:
    ``{"layers": {0: {"kernel": ...}, ...}, "head": {"kernel": ...}}``.

  Example:
    >>> import jax
    >>> p = init(jax.random.key(0), (2, 3, 1))
    >>> p["layers"][0]["kernel"].shape, p["head"]["kernel"].shape
    ((2, 3), (3, 1))
  """
  if len(sizes) < 2:
    raise ValueError(f"sizes must name an input and an output size at least; got {list(sizes)}")
  keys = jax.random.split(key, len(sizes) - 1)
  w = [scale * jax.random.normal(k, (a, b), dtype) for k, a, b in zip(keys, sizes[:-1], sizes[1:])]
  return {"layers": {i: {"kernel": a} for i, a in enumerate(w[:-1])}, "head": {"kernel": w[-1]}}


def forward(params: Any, x: jax.Array, activation: Callable[[jax.Array], jax.Array] | None = None) -> jax.Array:
  """The bias-free dense chain ``act(... act(x W_1) ...) W_L``; without ``activation``: ``x @ end_to_end(params)``.

  The linear net is evaluated through its product, the one matrix its loss depends on.

  Args:
    params: parameters as for :func:`end_to_end` (biases ignored).
    x: ``[B, in_features]`` inputs.
    activation: applied after every hidden layer (e.g. ``jax.nn.sigmoid``); ``None``: the linear net.

  Returns:
    ``[B, out_features]`` outputs.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> p = init(jax.random.key(0))
    >>> forward(p, jnp.ones((4, 2)), jax.nn.sigmoid).shape
    (4, 1)
  """
  if activation is None:
    return x @ end_to_end(params)
  kernels = _kernels(params)
  hidden = x
  for k in kernels[:-1]:
    hidden = activation(hidden @ k)
  return hidden @ kernels[-1]


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


def product_surface(product_loss: Callable[[jax.Array], jax.Array], center: jax.Array, *, span: float,
                    num: int) -> Surface:
  """The loss of a two-input, one-output linear net over its product ``u`` (``[2, 1]``): a 2-D grid around ``center``.

  Coordinate ``j`` runs over ``center[j, 0] +- span`` in ``num`` points; ``loss[i, j]`` is ``product_loss`` at
  ``u = (x[j], y[i])`` (rows along ``y``, as :class:`~jaxscape.surface.Surface` holds it). All points are evaluated
  in one ``vmap``.

  Args:
    product_loss: ``L(u)``, the loss as a function of the end-to-end product.
    center: ``[2, 1]`` centre of the grid (e.g. the least-squares product).
    span: half-width of the grid on each axis.
    num: points per axis.

  Returns:
    A :class:`~jaxscape.surface.Surface` with axes ``(u1, u2)``.

  Example:
    >>> import jax.numpy as jnp
    >>> s = product_surface(lambda u: jnp.sum(u ** 2), jnp.zeros((2, 1)), span=1.0, num=3)
    >>> s.loss.tolist()
    [[2.0, 1.0, 2.0], [1.0, 0.0, 1.0], [2.0, 1.0, 2.0]]
  """
  if np.shape(center) != (2, 1):
    raise ValueError(f"center must be a [2, 1] product (two inputs, one output); got shape {np.shape(center)}")
  axes = [np.linspace(float(center[j, 0]) - span, float(center[j, 0]) + span, num) for j in range(2)]
  points = jnp.stack(jnp.meshgrid(*axes), axis=-1).reshape(-1, 2, 1)
  return Surface(tuple(axes), np.asarray(jax.vmap(product_loss)(points)).reshape(num, num), {}, 0, {})
