"""Fully connected networks: MLPs (optionally with BatchNorm) and residual MLPs.

Inputs are ``[B, ...]``; everything after the batch axis is flattened, so the
same MLP takes vectors ``[B, 64]`` or images ``[B, 8, 8, 1]``. Dense kernels
are ``(in, out)`` (Flax layout).

Example:
  >>> import jax.numpy as jnp
  >>> from flax import nnx
  >>> from jaxscape.models import MLP
  >>> net = MLP(64, [32, 32], 10, activation="tanh", rngs=nnx.Rngs(0))
  >>> net(jnp.ones((5, 8, 8, 1))).shape
  (5, 10)
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import jax
from flax import nnx

from ._core import activation as _activation

__all__ = ["MLP", "ResidualMLP"]


def _flatten(x: jax.Array) -> jax.Array:
  return x.reshape(x.shape[0], -1)


def _check_sizes(in_features, widths, out_features):
  if int(in_features) < 1 or int(out_features) < 1 or any(int(w) < 1 for w in widths):
    raise ValueError(f"layer sizes must be positive integers; got in_features={in_features}, widths={list(widths)}, out_features={out_features}")


class MLP(nnx.Module):
  """Multilayer perceptron: ``[Dense -> (BatchNorm) -> activation] * len(widths) -> Dense``.

  Args:
    in_features: input size (the product of the per-example input shape).
    widths: hidden layer widths (empty: a linear model).
    out_features: output size (number of classes).
    activation: ``relu``, ``tanh``, ``sigmoid`` or ``linear`` (see ``ACTIVATIONS``).
    batch_norm: insert BatchNorm between each hidden Dense and its activation
      (Keskar et al.'s F1 layout).
    use_bias: biases in every Dense layer.
    bn_momentum: running-average momentum of the BatchNorm statistics
      (Flax convention: new = momentum * old + (1 - momentum) * batch).
    rngs: ``nnx.Rngs`` for the initialisation.
  """

  def __init__(self, in_features: int, widths: Sequence[int], out_features: int, *, activation: str = "relu",
               batch_norm: bool = False, use_bias: bool = True, bn_momentum: float = 0.9, rngs: nnx.Rngs):
    widths = [int(w) for w in widths]
    _check_sizes(in_features, widths, out_features)
    self.act = _activation(activation)
    sizes = [int(in_features), *widths]
    self.layers = nnx.List([nnx.Linear(a, b, use_bias=use_bias, rngs=rngs) for a, b in zip(sizes[:-1], sizes[1:])])
    self.norms = nnx.List([nnx.BatchNorm(w, momentum=bn_momentum, rngs=rngs) for w in widths] if batch_norm else [])
    self.head = nnx.Linear(sizes[-1], int(out_features), use_bias=use_bias, rngs=rngs)

  def first_layer(self) -> tuple[tuple[str | int, ...], Callable[[jax.Array], jax.Array]]:
    """Path of the first Dense layer and the input transform before it (see :func:`jaxscape.adapters.nnx.first_layer`)."""
    return (("layers", 0) if len(self.layers) else ("head",)), _flatten

  def after_first_layer(self, z: jax.Array) -> jax.Array:
    """The network from the first Dense layer's output ``z`` on (BatchNorm, activation, the other layers)."""
    if not len(self.layers):
      return z
    h = z
    for i, layer in enumerate(self.layers):
      if i:
        h = layer(h)
      if len(self.norms):
        h = self.norms[i](h)
      h = self.act(h)
    return self.head(h)

  def __call__(self, x: jax.Array) -> jax.Array:
    first = self.layers[0] if len(self.layers) else self.head
    return self.after_first_layer(first(_flatten(x)))


class ResidualMLP(nnx.Module):
  """MLP of ``depth`` equal-width blocks, with or without skip connections.

  ``h = act(W_in x + b_in)``, then ``depth`` times either
  ``h <- h + act(W h + b)`` (``skips=True``) or ``h <- act(W h + b)``
  (``skips=False``), then ``y = W_out h + b_out``. The switch changes only
  the forward pass: the parameters (names, shapes and initial values for one
  key) are identical, so the two variants can be compared weight for weight.

  Args:
    in_features: input size.
    width: width of every block.
    depth: number of blocks (hidden ``width x width`` layers).
    out_features: output size.
    skips: keep the identity skip around each block.
    activation: block activation.
    branch_scale: multiply the initial block kernels by this factor;
      ``"1/sqrt(depth)"`` (or ``True``) scales them by ``1/sqrt(depth)``, the
      usual trick that keeps a deep residual stack's output variance bounded.
    rngs: ``nnx.Rngs`` for the initialisation.

  Example:
    >>> from flax import nnx
    >>> import jax.numpy as jnp
    >>> net = ResidualMLP(64, 32, 4, 10, branch_scale="1/sqrt(depth)", rngs=nnx.Rngs(0))
    >>> net(jnp.ones((2, 64))).shape
    (2, 10)
  """

  def __init__(self, in_features: int, width: int, depth: int, out_features: int, *, skips: bool = True,
               activation: str = "relu", branch_scale: float | str | bool = 1.0, rngs: nnx.Rngs):
    _check_sizes(in_features, [width], out_features)
    if int(depth) < 0:
      raise ValueError(f"depth must be a non-negative integer; got {depth}")
    if branch_scale is True or branch_scale == "1/sqrt(depth)":
      scale = 1.0 / math.sqrt(max(int(depth), 1))
    elif branch_scale is False:
      scale = 1.0
    elif isinstance(branch_scale, (int, float)):
      scale = float(branch_scale)
    else:
      raise ValueError(f"branch_scale must be a number, a bool or '1/sqrt(depth)'; got {branch_scale!r}")
    self.skips = bool(skips)
    self.act = _activation(activation)
    self.inp = nnx.Linear(int(in_features), int(width), rngs=rngs)
    blocks = []
    for _ in range(int(depth)):
      layer = nnx.Linear(int(width), int(width), rngs=rngs)
      if scale != 1.0:
        layer.kernel[...] = layer.kernel[...] * scale
      blocks.append(layer)
    self.blocks = nnx.List(blocks)
    self.head = nnx.Linear(int(width), int(out_features), rngs=rngs)

  def first_layer(self) -> tuple[tuple[str | int, ...], Callable[[jax.Array], jax.Array]]:
    """Path of the input Dense layer and the input transform before it (see :func:`jaxscape.adapters.nnx.first_layer`)."""
    return ("inp",), _flatten

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.after_first_layer(self.inp(_flatten(x)))

  def after_first_layer(self, z: jax.Array) -> jax.Array:
    """The network from the input layer's pre-activation ``z`` on."""
    h = self.act(z)
    for layer in self.blocks:
      f = self.act(layer(h))
      h = h + f if self.skips else f
    return self.head(h)
