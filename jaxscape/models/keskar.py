"""Small-scale versions of Keskar et al. (2017)'s F1 and C1 networks.

* F1: ``in -> depth x [Dense(width) -> BN -> relu] -> Dense(classes)``
  (the paper: 784 -> 5 x 512 -> 10 on MNIST).
* C1 (the authors' ``shallownet``): two ``[Conv 5x5 (same) -> BN -> relu ->
  MaxPool 3x3 / 2 (same)]`` stages, then ``Dense -> BN -> relu (-> Dropout)``
  twice, then the classifier (the paper: 64, 64 channels; 384, 192 units; dropout 0.5
  on CIFAR-10).

Example:
  >>> import jax.numpy as jnp
  >>> from flax import nnx
  >>> from jaxscape.models import KeskarC1
  >>> net = KeskarC1(image_size=8, in_channels=1, channels=(8, 8), dense=(16, 8), rngs=nnx.Rngs(0))
  >>> net(jnp.zeros((2, 8, 8, 1))).shape
  (2, 10)
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import jax
from flax import nnx

from .mlp import MLP

__all__ = ["KeskarF1", "KeskarC1"]


class KeskarF1(MLP):
  """Fully connected network with BatchNorm (Keskar et al.'s F1).

  Args:
    in_features: input size (784 for MNIST, 64 for digits).
    width: hidden width (512 in the paper).
    depth: number of hidden layers (5 in the paper).
    num_classes: outputs.
    rngs: ``nnx.Rngs``.
  """

  def __init__(self, in_features: int = 784, width: int = 512, depth: int = 5, num_classes: int = 10, *,
               bn_momentum: float = 0.9, rngs: nnx.Rngs):
    super().__init__(in_features, [int(width)] * int(depth), num_classes, activation="relu", batch_norm=True,
                     bn_momentum=bn_momentum, rngs=rngs)


def _identity(x: jax.Array) -> jax.Array:
  return x


def _pooled(n: int) -> int:
  return math.ceil(math.ceil(n / 2) / 2)


class KeskarC1(nnx.Module):
  """Shallow convolutional network with BatchNorm (Keskar et al.'s C1).

  Args:
    image_size: input height and width (int or pair), needed to size the first Dense.
    in_channels: input channels.
    num_classes: outputs.
    channels: channels of the two conv stages (64, 64 in the paper).
    dense: widths of the two hidden Dense layers (384, 192 in the paper).
    kernel_size: conv kernel size (5).
    dropout: dropout rate after the hidden Dense layers (0.5 in the paper;
      0 removes the Dropout layers and their RNG state).
    rngs: ``nnx.Rngs`` (also the dropout stream when ``dropout > 0``).
  """

  def __init__(self, image_size: int | Sequence[int] = 32, in_channels: int = 3, num_classes: int = 10, *,
               channels: Sequence[int] = (64, 64), dense: Sequence[int] = (384, 192), kernel_size: int = 5,
               dropout: float = 0.0, bn_momentum: float = 0.9, rngs: nnx.Rngs):
    h, w = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    channels, dense = [int(c) for c in channels], [int(d) for d in dense]
    if len(channels) != 2 or len(dense) != 2:
      raise ValueError(f"KeskarC1 has two conv stages and two hidden Dense layers; got channels={channels}, dense={dense}")
    if not 0.0 <= float(dropout) < 1.0:
      raise ValueError(f"dropout must be in [0, 1); got {dropout}")
    k = int(kernel_size)
    self.conv1 = nnx.Conv(int(in_channels), channels[0], (k, k), padding="SAME", rngs=rngs)
    self.bn1 = nnx.BatchNorm(channels[0], momentum=bn_momentum, rngs=rngs)
    self.conv2 = nnx.Conv(channels[0], channels[1], (k, k), padding="SAME", rngs=rngs)
    self.bn2 = nnx.BatchNorm(channels[1], momentum=bn_momentum, rngs=rngs)
    flat = _pooled(h) * _pooled(w) * channels[1]
    self.fc1 = nnx.Linear(flat, dense[0], rngs=rngs)
    self.bn3 = nnx.BatchNorm(dense[0], momentum=bn_momentum, rngs=rngs)
    self.fc2 = nnx.Linear(dense[0], dense[1], rngs=rngs)
    self.bn4 = nnx.BatchNorm(dense[1], momentum=bn_momentum, rngs=rngs)
    self.head = nnx.Linear(dense[1], int(num_classes), rngs=rngs)
    self.drop = nnx.Dropout(float(dropout), rngs=rngs) if dropout else None

  def _pool(self, x):
    return nnx.max_pool(x, (3, 3), strides=(2, 2), padding="SAME")

  def __call__(self, x: jax.Array) -> jax.Array:
    if x.ndim != 4:
      raise ValueError(f"KeskarC1 expects NHWC images [B, H, W, C]; got shape {x.shape}")
    return self.after_first_layer(self.conv1(x))

  def first_layer(self) -> tuple[tuple[str, ...], Callable[[jax.Array], jax.Array]]:
    """Path of the first convolution and the input transform before it (see :func:`jaxscape.adapters.nnx.first_layer`)."""
    return ("conv1",), _identity

  def after_first_layer(self, z: jax.Array) -> jax.Array:
    """The network from the first convolution's output ``z`` on."""
    h = self._pool(jax.nn.relu(self.bn1(z)))
    h = self._pool(jax.nn.relu(self.bn2(self.conv2(h))))
    h = h.reshape(h.shape[0], -1)
    h = jax.nn.relu(self.bn3(self.fc1(h)))
    if self.drop is not None:
      h = self.drop(h)
    h = jax.nn.relu(self.bn4(self.fc2(h)))
    if self.drop is not None:
      h = self.drop(h)
    return self.head(h)
