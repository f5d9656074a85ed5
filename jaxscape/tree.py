"""Vector algebra on parameter pytrees, and selection of runs stacked on a leading axis.

Parameters, directions, gradients and Hessian-vector products are all pytrees of
the same structure; these small functions treat such a pytree as one vector.
All of them are pure and work under ``jit``, ``vmap`` and ``grad``.
:func:`jaxscape.train.train_many` returns the parameters and state of S runs
stacked on a leading axis: :func:`select` takes one run, :func:`num_runs`
counts them and :func:`distances` measures each run against another point.

Example:
  >>> import jax.numpy as jnp
  >>> from jaxscape import tree
  >>> a = {"w": jnp.ones((2, 2)), "b": jnp.zeros(2)}
  >>> float(tree.norm(tree.scale(2.0, a)))
  4.0
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

PyTree = Any
"""Any pytree of arrays (parameters, directions, gradients): the one alias every module imports."""

__all__ = [
    "PyTree",
    "add",
    "sub",
    "scale",
    "axpy",
    "dot",
    "norm",
    "zeros_like",
    "normal_like",
    "rademacher_like",
    "combine",
    "stack",
    "unstack",
    "astype",
    "size",
    "ravel",
    "path_name",
    "leaf_names",
    "allclose",
    "assert_allclose",
    "is_key",
    "key_first",
    "num_runs",
    "select",
    "distances",
]


def add(a: PyTree, b: PyTree) -> PyTree:
  """Returns ``a + b`` leaf by leaf."""
  return jax.tree.map(jnp.add, a, b)


def sub(a: PyTree, b: PyTree) -> PyTree:
  """Returns ``a - b`` leaf by leaf."""
  return jax.tree.map(jnp.subtract, a, b)


def scale(c: jax.typing.ArrayLike, a: PyTree) -> PyTree:
  """Returns ``c * a`` for a scalar ``c``, keeping each leaf's dtype."""
  return jax.tree.map(lambda x: (c * x).astype(x.dtype), a)


def axpy(c: jax.typing.ArrayLike, x: PyTree, y: PyTree) -> PyTree:
  """Returns ``c * x + y`` (BLAS ``axpy``), keeping the dtype of ``y``."""
  return jax.tree.map(lambda u, v: (c * u + v).astype(v.dtype), x, y)


def dot(a: PyTree, b: PyTree) -> jax.Array:
  """Euclidean inner product of two pytrees seen as flat vectors."""
  parts = jax.tree.leaves(jax.tree.map(lambda x, y: jnp.vdot(x, y), a, b))
  return sum(parts, start=jnp.zeros((), jnp.result_type(*parts) if parts else jnp.float32))


def norm(a: PyTree) -> jax.Array:
  """Euclidean norm of a pytree seen as one flat vector."""
  return jnp.sqrt(dot(a, a))


def zeros_like(a: PyTree) -> PyTree:
  """A pytree of zeros shaped like ``a``."""
  return jax.tree.map(jnp.zeros_like, a)


def _keys_like(key: jax.Array, a: PyTree) -> PyTree:
  leaves, treedef = jax.tree.flatten(a)
  return jax.tree.unflatten(treedef, list(jax.random.split(key, max(len(leaves), 1))[: len(leaves)]))


def normal_like(key: jax.Array, a: PyTree) -> PyTree:
  """Standard Gaussian entries with the shapes and dtypes of ``a``.

  Each leaf gets its own key split from ``key``, so the draw is reproducible
  from the key alone.
  """
  return jax.tree.map(lambda k, x: jax.random.normal(k, x.shape, x.dtype), _keys_like(key, a), a)


def rademacher_like(key: jax.Array, a: PyTree) -> PyTree:
  """Random signs (+1/-1, equally likely) with the shapes and dtypes of ``a``."""
  return jax.tree.map(lambda k, x: jax.random.rademacher(k, x.shape, x.dtype), _keys_like(key, a), a)


def combine(coefficients: jax.Array, vectors: PyTree) -> PyTree:
  """Linear combination ``sum_i c_i v_i`` of stacked vectors.

  Args:
    coefficients: array of shape ``[n]``.
    vectors: pytree whose leaves have a leading axis of size ``n``
      (as made by :func:`stack`).
  """
  return jax.tree.map(lambda v: jnp.tensordot(coefficients.astype(v.dtype), v, axes=1), vectors)


def stack(trees: list[PyTree] | tuple[PyTree, ...]) -> PyTree:
  """Stacks pytrees of one structure along a new leading axis."""
  return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


def unstack(a: PyTree) -> list[PyTree]:
  """Inverse of :func:`stack`: splits the leading axis into a list of pytrees."""
  n = jax.tree.leaves(a)[0].shape[0]
  return [jax.tree.map(lambda x, i=i: x[i], a) for i in range(n)]


def astype(a: PyTree, dtype: jax.typing.DTypeLike) -> PyTree:
  """Casts every floating leaf to ``dtype`` (integer leaves are kept)."""
  return jax.tree.map(lambda x: x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x, a)


def size(a: PyTree) -> int:
  """Total number of scalars in the pytree."""
  return int(sum(np.size(x) for x in jax.tree.leaves(a)))


def ravel(a: PyTree) -> tuple[jax.Array, Callable[[jax.Array], PyTree]]:
  """Flattens a pytree into one vector; returns it and the inverse map."""
  return ravel_pytree(a)


def path_name(path: Sequence[Any], sep: str = "/") -> str:
  """The readable name of one key path (``jax.tree_util`` keys), its keys joined by ``sep``.

  Example:
    >>> import jax
    >>> path_name(jax.tree_util.tree_flatten_with_path({"dense": [0, 1]})[0][1][0])
    'dense/1'
  """
  parts = []
  for p in path:
    for attr in ("key", "name", "idx"):
      if hasattr(p, attr):
        parts.append(str(getattr(p, attr)))
        break
    else:
      parts.append(str(p))
  return sep.join(parts)


def leaf_names(a: PyTree) -> list[str]:
  """Readable ``/``-joined paths of the leaves, in flattening order.

  Example:
    >>> import jax.numpy as jnp
    >>> leaf_names({"dense": {"kernel": jnp.ones(1), "bias": jnp.ones(1)}})
    ['dense/bias', 'dense/kernel']
  """
  return [path_name(path) for path, _ in jax.tree_util.tree_flatten_with_path(a)[0]]


def check_same_structure(a: PyTree, b: PyTree, what: str) -> None:
  """Raises ``ValueError`` naming the first difference when ``a`` and ``b`` are not one structure of equal shapes.

  Example:
    >>> check_same_structure({"w": jnp.ones(2)}, {"w": jnp.ones(3)}, "the two models")
    Traceback (most recent call last):
    ...
    ValueError: the two models differ in the shape of leaf 'w': (2,) vs (3,)
  """
  sa, sb = jax.tree.structure(a), jax.tree.structure(b)
  if sa != sb:
    na, nb = set(leaf_names(a)), set(leaf_names(b))
    only = [f"only in the first: {sorted(na - nb)[:5]}" if na - nb else "", f"only in the second: {sorted(nb - na)[:5]}"
            if nb - na else ""]
    detail = "; ".join(o for o in only if o) or f"{sa} vs {sb}"
    raise ValueError(f"{what} must have one pytree structure (the same architecture); {detail}")
  for name, x, y in zip(leaf_names(a), jax.tree.leaves(a), jax.tree.leaves(b)):
    if jnp.shape(x) != jnp.shape(y):
      raise ValueError(f"{what} differ in the shape of leaf {name!r}: {jnp.shape(x)} vs {jnp.shape(y)}")


def allclose(a: PyTree, b: PyTree, rtol: float = 1e-6, atol: float = 0.0) -> bool:
  """True when the two pytrees have one structure and all leaves are close."""
  if jax.tree.structure(a) != jax.tree.structure(b):
    return False
  return all(
      np.shape(x) == np.shape(y) and np.allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=atol)
      for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b))
  )


def assert_allclose(actual: PyTree, desired: PyTree, rtol: float = 1e-6, atol: float = 0.0) -> None:
  """Asserts leaf-wise closeness, naming the first leaf that differs."""
  sa, sd = jax.tree.structure(actual), jax.tree.structure(desired)
  if sa != sd:
    raise AssertionError(f"pytree structures differ: {sa} vs {sd}")
  names = leaf_names(actual)
  for name, x, y in zip(names, jax.tree.leaves(actual), jax.tree.leaves(desired)):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=atol, err_msg=f"leaf {name!r}")


# ------------------------------------------------------------ PRNG-key calls
def is_key(x: Any) -> bool:
  """True for a ``jax.random`` key: a typed key array, or a raw ``uint32`` key (``jax.random.PRNGKey``).

  Works on tracers (under ``jit`` / ``vmap``), since it only looks at the dtype.
  """
  dtype = getattr(x, "dtype", None)
  if dtype is None:
    return False
  return jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key) or (dtype == jnp.uint32 and np.ndim(x) >= 1)


def key_first(legacy_position: int | None = None) -> Callable[[Callable], Callable]:
  """Lets a function whose PRNG key is its first positional argument also take its earlier call styles.

  The decorated function is written key-first, ``fn(key, obj, params, ...)``.
  Calls that pass ``key=`` as a keyword, ``fn(obj, params, ..., key=k)``, put
  the key in front; with ``legacy_position`` a call whose first argument is not
  a key but whose argument at that position is, ``fn(obj, params, k)``
  (``legacy_position=2``), does the same. The result is the same function
  call, so both styles give identical results.

  Args:
    legacy_position: where an earlier signature took the key positionally
      (``None``: only the keyword form).

  Example:
    >>> @key_first(legacy_position=1)
    ... def draw(key, n):
    ...   return jax.random.normal(key, (n,))
    >>> k = jax.random.key(0)
    >>> bool((draw(k, 2) == draw(2, key=k)).all() and (draw(k, 2) == draw(2, k)).all())
    True
  """

  def wrap(fn: Callable) -> Callable:
    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> Any:
      if "key" in kwargs:
        if args and is_key(args[0]):
          raise TypeError(f"{fn.__name__}() got a key both as its first argument and as key=")
        args = (kwargs.pop("key"), *args)
      elif (args and not is_key(args[0]) and legacy_position is not None and len(args) > legacy_position
            and is_key(args[legacy_position])):
        args = (args[legacy_position], *args[:legacy_position], *args[legacy_position + 1:])
      elif not args or not is_key(args[0]):
        raise TypeError(f"{fn.__name__}() needs a jax.random key as its first argument (or key=...)")
      return fn(*args, **kwargs)

    return call

  return wrap


# ----------------------------------------------------------------------------- runs stacked on a leading axis


def num_runs(stacked: PyTree) -> int:
  """The length S of the leading run axis of a stacked pytree.

  Raises:
    ValueError: when the pytree has no leaves or its leaves disagree on S.
  """
  leaves = jax.tree.leaves(stacked)
  if not leaves:
    raise ValueError("a stacked pytree of runs needs at least one leaf with a leading run axis; got no leaves")
  sizes = {int(jnp.shape(a)[0]) if jnp.ndim(a) else -1 for a in leaves}
  if len(sizes) != 1 or -1 in sizes:
    raise ValueError(f"all leaves must share one leading run axis; got leading sizes {sorted(sizes)}")
  return sizes.pop()


def select(stacked: PyTree, run: int) -> PyTree:
  """Run ``run`` of a pytree stacked on a leading run axis (e.g. ``train_many``'s params).

  Example:
    >>> import jax.numpy as jnp
    >>> select({"w": jnp.arange(6.0).reshape(3, 2)}, 1)["w"].tolist()
    [2.0, 3.0]

  A pytree without leaves (the state of a model without BatchNorm) has
  nothing to select and is returned as it is.

  Raises:
    IndexError: when ``run`` is outside ``[-S, S)``.
  """
  if not jax.tree.leaves(stacked):
    return stacked
  s = num_runs(stacked)
  if not -s <= int(run) < s:
    raise IndexError(f"run {run} out of range for {s} stacked runs")
  return jax.tree.map(lambda a: a[int(run)], stacked)


def distances(a: PyTree, b: PyTree) -> jax.Array:
  """Per-run Euclidean distances ``||a_i - b_i||`` of two pytrees stacked over runs (``[S]``).

  ``b`` may also be one unstacked pytree (broadcast against every run of ``a``).
  """
  s = num_runs(a)
  if jax.tree.structure(a) != jax.tree.structure(b):
    raise ValueError(f"a and b must have the same tree structure; got {jax.tree.structure(a)} and {jax.tree.structure(b)}")
  b_stacked = all(jnp.ndim(x) == jnp.ndim(y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))
  if b_stacked and num_runs(b) != s:
    raise ValueError(f"a holds {s} runs but b holds {num_runs(b)}")
  return jax.vmap(lambda x, y: norm(sub(x, y)), in_axes=(0, 0 if b_stacked else None))(a, b)
