"""Model zoo (flax.nnx) and a registry that rebuilds a model from its name and kwargs.

``spin_glass`` is not a network but the H-spin spherical spin glass
(pure functions), the model Choromanska et al. (2015) map deep nets onto.

Every model is an ``nnx.Module`` taking batched inputs ``[B, ...]`` (images
NHWC); Dense kernels are ``(in, out)`` and Conv kernels HWIO. Split any of
them into a pure ``(apply, params, state)`` with :func:`jaxscape.adapters.split`.

Example:
  >>> import jax.numpy as jnp
  >>> import jaxscape as js
  >>> model = js.models.build("mlp", 0, in_features=64, widths=[32], out_features=10)
  >>> apply, params, state, _ = js.adapters.split(model)
  >>> js.models.count_params(params)
  2410
  >>> js.models.flops_per_example(apply, params, state, jnp.zeros(64)) > 0
  True
"""

from __future__ import annotations

import inspect
from typing import Any, Callable

import jax
from flax import nnx

from ._core import ACTIVATIONS as ACTIVATIONS
from ._core import activation as activation
from ._core import count_params as count_params
from ._core import flops_per_example as flops_per_example
from .linear import DeepLinear as DeepLinear
from .linear import end_to_end as end_to_end
from .keskar import KeskarC1 as KeskarC1
from .keskar import KeskarF1 as KeskarF1
from .mlp import MLP as MLP
from .mlp import ResidualMLP as ResidualMLP
from .resnet import ResNet as ResNet
from . import spin_glass as spin_glass

REGISTRY: dict[str, Callable[..., nnx.Module]] = {
    "mlp": MLP,
    "linear": DeepLinear,
    "residual_mlp": ResidualMLP,
    "resnet": ResNet,
    "keskar_f1": KeskarF1,
    "keskar_c1": KeskarC1,
}
"""Model constructors by name; each takes its keyword arguments and ``rngs``."""


def _rngs(key_or_seed: Any) -> nnx.Rngs:
  if isinstance(key_or_seed, nnx.Rngs):
    return key_or_seed
  if isinstance(key_or_seed, (int,)) or (hasattr(key_or_seed, "dtype") and getattr(key_or_seed, "shape", None) == ()
                                         and not jax.dtypes.issubdtype(key_or_seed.dtype, jax.dtypes.prng_key)):
    return nnx.Rngs(int(key_or_seed))
  if hasattr(key_or_seed, "dtype"):
    return nnx.Rngs(key_or_seed)
  raise ValueError(f"key_or_seed must be an int seed, a jax.random key or nnx.Rngs; got {type(key_or_seed).__name__}")


def build(name: str, key_or_seed: Any, **kwargs: Any) -> nnx.Module:
  """Builds a registered model by name.

  The pair ``(name, kwargs)`` is what a checkpoint records (``spec.json``), so
  kwargs should be JSON values (ints, floats, strings, lists).

  Args:
    name: a key of :data:`REGISTRY` (``mlp``, ``linear``, ``residual_mlp``,
      ``resnet``, ``keskar_f1``, ``keskar_c1``).
    key_or_seed: an int seed, a ``jax.random.key`` (may be traced, e.g. under
      ``vmap``) or an ``nnx.Rngs``.
    **kwargs: the model's constructor arguments (without ``rngs``).

  Returns:
    The initialised ``nnx.Module``.

  Example:
    >>> import jaxscape as js
    >>> net = js.models.build("residual_mlp", 0, in_features=64, width=32, depth=4, out_features=10, skips=False)
    >>> type(net).__name__
    'ResidualMLP'
  """
  if name not in REGISTRY:
    raise ValueError(f"unknown model {name!r}: expected one of {sorted(REGISTRY)}")
  ctor = REGISTRY[name]
  accepted = [p for p in inspect.signature(ctor.__init__ if isinstance(ctor, type) else ctor).parameters if p not in ("self", "rngs")]
  unknown = sorted(set(kwargs) - set(accepted))
  if unknown:
    raise ValueError(f"model {name!r} got unknown arguments {unknown}; it accepts {accepted}")
  return ctor(**kwargs, rngs=_rngs(key_or_seed))


__all__ = [
    "build", "REGISTRY", "count_params", "flops_per_example", "ACTIVATIONS", "activation",
    "MLP", "ResidualMLP", "DeepLinear", "end_to_end", "ResNet", "KeskarF1", "KeskarC1", "spin_glass",
]
