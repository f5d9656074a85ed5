"""The CIFAR ResNets of He et al. (2016), with and without shortcuts (Li et al. 2018).

Stem ``conv3x3(16k) -> BN -> relu``; three stages of ``n = (depth - 2) / 6``
basic blocks with ``16k, 32k, 64k`` channels (stride 2 at the first block of
stages 2 and 3); global average pooling; a Dense classifier. A basic block is
``conv3x3 -> BN -> relu -> conv3x3 -> BN``, plus the shortcut, then relu.
Convolutions use symmetric padding 1 (as in PyTorch), kernels HWIO, no bias.

Shortcuts where the shape changes: ``"projection"`` (1x1 conv + BN, the
variant of Li et al.'s code) or ``"pad"`` (He et al.'s option A: subsample and
zero-pad channels, parameter free). ``shortcuts=False`` removes every
shortcut (Li et al.'s ``-noshort``): the main path, and so every parameter of
it, is unchanged; only the projection shortcuts' parameters disappear.

Works on any image size (``[B, H, W, C]``, e.g. 8x8 digits, 28x28, 32x32).

Example:
  >>> import jax.numpy as jnp
  >>> from flax import nnx
  >>> from jaxscape.models import ResNet, count_params
  >>> net = ResNet(depth=20, rngs=nnx.Rngs(0))
  >>> net(jnp.zeros((2, 32, 32, 3))).shape
  (2, 10)
  >>> count_params(net)
  272474
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
from flax import nnx

__all__ = ["ResNet", "BasicBlock", "DEPTHS"]

DEPTHS = (8, 14, 20, 32, 44, 56, 110)
"""Common depths; any ``depth`` with ``(depth - 2) % 6 == 0`` works."""

_PAD = ((1, 1), (1, 1))


def _identity(x: jax.Array) -> jax.Array:
  return x


def _conv(cin, cout, k, stride, rngs):
  return nnx.Conv(cin, cout, (k, k), strides=(stride, stride), padding=_PAD if k == 3 else "VALID", use_bias=False,
                  kernel_init=nnx.initializers.he_normal(), rngs=rngs)


class BasicBlock(nnx.Module):
  """Two 3x3 convolutions with BatchNorm, and an optional shortcut."""

  def __init__(self, cin: int, cout: int, stride: int, *, shortcut: bool, shortcut_type: str, bn_momentum: float,
               rngs: nnx.Rngs):
    self.conv1 = _conv(cin, cout, 3, stride, rngs)
    self.bn1 = nnx.BatchNorm(cout, momentum=bn_momentum, rngs=rngs)
    self.conv2 = _conv(cout, cout, 3, 1, rngs)
    self.bn2 = nnx.BatchNorm(cout, momentum=bn_momentum, rngs=rngs)
    self.shortcut = bool(shortcut)
    self.stride = int(stride)
    self.pad_channels = cout - cin
    reshape = stride != 1 or cin != cout
    self.use_projection = bool(shortcut and reshape and shortcut_type == "projection")
    if self.use_projection:
      self.proj = _conv(cin, cout, 1, stride, rngs)
      self.proj_bn = nnx.BatchNorm(cout, momentum=bn_momentum, rngs=rngs)
    else:
      self.proj = None
      self.proj_bn = None

  def __call__(self, x: jax.Array) -> jax.Array:
    h = jax.nn.relu(self.bn1(self.conv1(x)))
    h = self.bn2(self.conv2(h))
    if self.shortcut:
      if self.use_projection:
        h = h + self.proj_bn(self.proj(x))
      else:
        s = x[:, ::self.stride, ::self.stride, :] if self.stride > 1 else x
        if self.pad_channels:
          lo = self.pad_channels // 2
          s = jnp.pad(s, ((0, 0), (0, 0), (0, 0), (lo, self.pad_channels - lo)))
        h = h + s
    return jax.nn.relu(h)


class ResNet(nnx.Module):
  """CIFAR ResNet-``depth`` (He et al. 2016, Sec. 4.2), optionally without shortcuts.

  Args:
    depth: total depth ``6n + 2`` (8, 14, 20, 56, 110, ...).
    num_classes: outputs.
    in_channels: input channels (3 for CIFAR, 1 for MNIST and digits).
    width: channel multiplier k (Wide-ResNet-style ``16k, 32k, 64k``).
    shortcuts: ``False`` removes every shortcut (``-noshort``).
    shortcut_type: ``"projection"`` (1x1 conv + BN) or ``"pad"`` (option A).
    bn_momentum: BatchNorm running-average momentum (0.9 = PyTorch's 0.1).
    rngs: ``nnx.Rngs`` for the initialisation (He-normal kernels).
  """

  def __init__(self, depth: int = 20, num_classes: int = 10, in_channels: int = 3, *, width: int = 1,
               shortcuts: bool = True, shortcut_type: str = "projection", bn_momentum: float = 0.9, rngs: nnx.Rngs):
    depth = int(depth)
    if depth < 8 or (depth - 2) % 6:
      raise ValueError(f"ResNet depth must be 6n + 2 with n >= 1 (8, 14, 20, 56, 110, ...); got {depth}")
    if shortcut_type not in ("projection", "pad"):
      raise ValueError(f"shortcut_type must be 'projection' or 'pad'; got {shortcut_type!r}")
    if int(width) < 1:
      raise ValueError(f"width must be a positive integer; got {width}")
    n = (depth - 2) // 6
    chans = [16 * int(width), 32 * int(width), 64 * int(width)]
    self.stem = _conv(int(in_channels), chans[0], 3, 1, rngs)
    self.stem_bn = nnx.BatchNorm(chans[0], momentum=bn_momentum, rngs=rngs)
    blocks = []
    cin = chans[0]
    for stage, cout in enumerate(chans):
      for i in range(n):
        stride = 2 if (stage > 0 and i == 0) else 1
        # One key per block, so removing a block's projection leaves every other initial value unchanged.
        blocks.append(BasicBlock(cin, cout, stride, shortcut=shortcuts, shortcut_type=shortcut_type,
                                 bn_momentum=bn_momentum, rngs=nnx.Rngs(rngs.params())))
        cin = cout
    self.blocks = nnx.List(blocks)
    self.head = nnx.Linear(chans[-1], int(num_classes), rngs=rngs)

  def first_layer(self) -> tuple[tuple[str, ...], Callable[[jax.Array], jax.Array]]:
    """Path of the stem convolution and the input transform before it (see :func:`jaxscape.adapters.nnx.first_layer`)."""
    return ("stem",), _identity

  def __call__(self, x: jax.Array) -> jax.Array:
    if x.ndim != 4:
      raise ValueError(f"ResNet expects NHWC images [B, H, W, C]; got shape {x.shape}")
    return self.after_first_layer(self.stem(x))

  def after_first_layer(self, z: jax.Array) -> jax.Array:
    """The network from the stem convolution's output ``z`` on (BatchNorm, relu, blocks, head)."""
    h = jax.nn.relu(self.stem_bn(z))
    for block in self.blocks:
      h = block(h)
    return self.head(h.mean(axis=(1, 2)))
