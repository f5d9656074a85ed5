"""Curvature of an Objective: Hessian / Gauss-Newton operators and spectra.

The operators act on parameter pytrees and are exact full-data quantities: the
Hessian of ``obj.value`` (the mean loss over all N examples, a ``lax.scan``
over the device-resident batches with 1/N weighting, eval mode), or the
generalised Gauss-Newton matrix ``G = (1/N) sum_i w_i J_i^T H_i J_i`` (J the
Jacobian of the model outputs, H the Hessian of the per-example loss in the
outputs). Both are traceable: they can be used inside ``jit``, ``lax.scan``
and ``vmap``.

Optionally an operator is restricted to a subset of the parameter leaves (one
layer, say): it then acts on the dict ``{leaf_name: array}`` of the selected
leaves (names from :func:`jaxscape.tree.leaf_names`), i.e. it is the diagonal
block of the full matrix for those leaves.

The user-facing calls (:func:`eigenvalues`, :func:`trace`, :func:`density`,
:func:`power_iteration`; PRNG key first, ``key=`` as a keyword works too) build the operator and run the matrix-free
algorithms of :mod:`jaxscape.spectral` under one ``jit``;
:func:`point_curvature` and :func:`projected_hessian` are small pure
functions meant to be ``vmap``-ed over grid points. For small models (a few
hundred to a few thousand parameters) :func:`dense_hessian` and
:func:`dense_eigh` form the whole matrix in the flat coordinates of
:func:`flat_objective` (float64 under ``jax.enable_x64``).

Example:
  >>> import jax, jax.numpy as jnp, numpy as np
  >>> import jaxscape as js
  >>> x = np.random.default_rng(0).normal(size=(20, 3)).astype(np.float32)
  >>> t = x @ np.array([1.0, -2.0, 0.5], np.float32)
  >>> obj = js.Objective.from_apply(lambda p, x: x @ p["w"], data=(x, t), loss="mse", batch_size=8)
  >>> params = {"w": jnp.zeros(3)}
  >>> res = js.hessian.eigenvalues(jax.random.key(0), obj, params, k=1)
  >>> top = np.linalg.eigvalsh(2 * x.T @ x / 20)[-1]
  >>> bool(np.isclose(res.values[0], top, rtol=1e-4)), bool(res.converged[0])
  (True, True)

References:
  Pearlmutter (1994) for exact Hessian-vector products; Schraudolph (2002)
  and Martens (2014) for the Gauss-Newton matrix; Ghorbani, Krishnan & Xiao
  (2019) and Yao et al. (2020, PyHessian) for Hessian spectra of networks;
  Li et al. (2018) for the ``lambda_min / lambda_max`` convexity ratio (they plot its magnitude).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.flatten_util import ravel_pytree

from . import directions, spectral
from . import tree as tree_lib
from .io import key_record
from .objective import Objective, split_l2

from .tree import PyTree
Leaves = str | Sequence[str] | Callable[[str], bool] | None

KINDS = ("hessian", "ggn")
"""Curvature matrices: ``hessian`` (exact) or ``ggn`` (generalised Gauss-Newton)."""

__all__ = [
    "KINDS",
    "flat_objective",
    "dense_hessian",
    "dense_eigh",
    "operator",
    "hvp",
    "select",
    "eigenvalues",
    "power_iteration",
    "trace",
    "density",
    "projected_hessian",
    "point_curvature",
    "extreme_ritz",
    "adam_preconditioner",
    "curvature_probe",
    "hessian_directions",
]


# ---------------------------------------------------------------- leaves
def _matches(leaves: Leaves) -> Callable[[str], bool]:
  if callable(leaves):
    return leaves
  prefixes = (leaves,) if isinstance(leaves, str) else tuple(leaves)
  if not prefixes or not all(isinstance(p, str) for p in prefixes):
    raise ValueError(f"leaves must be a name prefix, a sequence of prefixes or a predicate; got {leaves!r}")
  return lambda name: any(name == p or name.startswith(p.rstrip("/") + "/") for p in prefixes)


def select(params: PyTree, leaves: Leaves) -> dict[str, jax.Array]:
  """The selected leaves as a dict ``{leaf_name: array}``, in flattening order.

  Args:
    params: parameter pytree.
    leaves: a leaf-name prefix such as ``"dense1"`` (all leaves under it) or
      ``"dense1/kernel"``, a sequence of prefixes, or a predicate on names.

  Example:
    >>> import jax.numpy as jnp
    >>> p = {"a": {"w": jnp.ones(2), "b": jnp.ones(1)}, "c": {"w": jnp.ones(3)}}
    >>> sorted(select(p, "a"))
    ['a/b', 'a/w']
  """
  match = _matches(leaves)
  names = tree_lib.leaf_names(params)
  out = {n: x for n, x in zip(names, jax.tree.leaves(params)) if match(n)}
  if not out:
    raise ValueError(f"leaves={leaves!r} selects no parameter leaf; leaf names are {names}")
  return out


def _merge(params: PyTree, sub: dict[str, jax.Array]) -> PyTree:
  names = tree_lib.leaf_names(params)
  leaves, treedef = jax.tree.flatten(params)
  return jax.tree.unflatten(treedef, [sub.get(n, x) for n, x in zip(names, leaves)])


# ------------------------------------------------------- dense, flat coordinates
def _working_dtype(flat: jax.Array) -> jnp.dtype:
  """float64 under ``jax.enable_x64``, else the parameters' own float dtype."""
  if jax.config.jax_enable_x64:
    return jnp.dtype(jnp.float64)
  return flat.dtype if jnp.issubdtype(flat.dtype, jnp.floating) else jnp.dtype(jnp.float32)


def flat_objective(obj: Objective, params: PyTree) -> tuple[Callable[[jax.Array], jax.Array], jax.Array,
                                                             Callable[[jax.Array], PyTree]]:
  """``obj.value`` as a function of one flat parameter vector: ``(f, x, unravel)``.

  ``x`` is ``params`` flattened in ``ravel_pytree`` order and cast to the
  working dtype (float64 when 64-bit mode is on, so dense curvature and the
  searches of :mod:`jaxscape.critical` run in float64); ``f(v) =
  obj.value(unravel(v))``; ``unravel`` splits a flat vector into ``params``'
  structure keeping the vector's dtype (``ravel_pytree``'s inverse would cast
  back to the leaves' original dtypes). Pure; traceable.

  Example:
    >>> import jax.numpy as jnp, jaxscape as js
    >>> obj = js.Objective.from_apply(lambda p, x: x @ p["w"], data=(jnp.eye(2), jnp.zeros(2)), loss="mse")
    >>> f, x, unravel = flat_objective(obj, {"w": jnp.ones(2)})
    >>> float(f(x)), unravel(2 * x)["w"].tolist()
    (1.0, [2.0, 2.0])
  """
  flat, _ = ravel_pytree(params)
  if flat.size == 0:
    raise ValueError("params has no array leaves: expected a pytree with at least one parameter")
  flat = flat.astype(_working_dtype(flat))
  leaves, treedef = jax.tree.flatten(params)
  sizes = [int(jnp.size(leaf)) for leaf in leaves]
  shapes = [jnp.shape(leaf) for leaf in leaves]

  def unravel(v: jax.Array) -> PyTree:
    out, start = [], 0
    for size, shape in zip(sizes, shapes):
      out.append(v[start:start + size].reshape(shape))
      start += size
    return jax.tree.unflatten(treedef, out)

  return (lambda v: obj.value(unravel(v))), flat, unravel


@jax.jit
def _dense_hessian(obj: Objective, params: PyTree) -> jax.Array:
  f, flat, _ = flat_objective(obj, params)
  h = jax.hessian(f)(flat)
  return 0.5 * (h + h.T)


def dense_hessian(obj: Objective, params: PyTree) -> jax.Array:
  """The full Hessian of ``obj.value`` at ``params``, as an ``[n, n]`` matrix.

  Computed with ``jax.hessian`` (forward-over-reverse: ``n`` Hessian-vector
  products) on the parameters flattened by :func:`flat_objective`, and
  symmetrised (``(H + H^T)/2``). In float64 when 64-bit mode is on. Meant for
  small models (a few hundred to a few thousand parameters).

  Args:
    obj: the objective.
    params: parameter pytree.

  Returns:
    ``[n, n]`` array, rows and columns in ``ravel_pytree(params)`` order.

  Example:
    >>> import jax.numpy as jnp, jaxscape as js
    >>> apply = lambda p, x: x @ p
    >>> obj = js.Objective.from_apply(apply, data=(jnp.eye(2), jnp.zeros(2)), loss="mse")
    >>> dense_hessian(obj, jnp.zeros(2)).tolist()   # mean of (x.p)^2: H = 2 X^T X / N
    [[1.0, 0.0], [0.0, 1.0]]
  """
  return _dense_hessian(obj, params)


def dense_eigh(obj: Objective, params: PyTree) -> tuple[jax.Array, jax.Array]:
  """Eigenvalues (ascending) and eigenvectors (columns) of :func:`dense_hessian`.

  Example:
    >>> import jax.numpy as jnp, jaxscape as js
    >>> obj = js.Objective.from_apply(lambda p, x: x @ p, data=(jnp.diag(jnp.array([1.0, 2.0])), jnp.zeros(2)),
    ...                               loss="mse")
    >>> dense_eigh(obj, jnp.zeros(2))[0].tolist()   # H = 2 X^T X / N = diag(1, 4)
    [1.0, 4.0]
  """
  return jnp.linalg.eigh(dense_hessian(obj, params))


# ------------------------------------------------------------- operators
def operator(obj: Objective, params: PyTree, *, kind: str = "hessian",
             leaves: Leaves = None) -> tuple[Callable[[PyTree], PyTree], PyTree]:
  """The curvature matrix at ``params`` as ``(matvec, like)``.

  ``matvec(v)`` is the exact full-data product; ``like`` is the vector space
  it acts on: ``params`` itself, or :func:`select` ``(params, leaves)`` for a
  leaf-restricted block. Pass both straight to :mod:`jaxscape.spectral`.

  * ``kind="hessian"``: forward-over-reverse ``jax.jvp(jax.grad(obj.value))``,
    one forward and one backward pass over all batches per product (in the
    forward-mode extended arithmetic), ~2-4 gradient costs.
  * ``kind="ggn"``: ``(1/Σw) sum_batches J^T H_out J v`` with
    ``J = d obj.apply(params, obj.state, x) / d params`` (linearised once per
    batch and transposed, so one forward pass) and
    ``H_out = d^2/d out^2 obj.loss_sum(out, batch)`` (``sum_i w_i l_i``, per
    example or per token); padded examples have ``w_i = 0``. Positive semi-definite for convex losses. For an
    objective with an L2 penalty (:func:`jaxscape.objective.with_l2`) it is
    the GGN of the unpenalised model plus ``weight_decay * I``, the penalty's
    exact Hessian.

  With ``obj.batching == "unroll"`` (:data:`jaxscape.objective.BATCHINGS`:
  convolutional nets on the CPU) and a single CPU device, ``matvec`` calls
  the product compiled as its own program (``jax.pure_callback``; it works
  under ``jit`` and ``vmap``, one product after another, and raises a
  ``ValueError`` under differentiation), so loops over products run at a
  standalone product's speed. 64-bit products, and products where the
  program may span several devices (several CPU devices, any accelerator),
  stay inside the caller's program.

  Args:
    obj: the objective.
    params: the point.
    kind: one of :data:`KINDS`.
    leaves: optional leaf selection (see :func:`select`).

  Example:
    >>> import jax, jax.numpy as jnp, numpy as np, jaxscape as js
    >>> x = np.eye(3, dtype=np.float32); t = np.zeros(3, np.float32)
    >>> obj = js.Objective.from_apply(lambda p, x: x @ p, data=(x, t), loss="mse")
    >>> mv, like = operator(obj, jnp.ones(3))
    >>> mv(jnp.array([1.0, 0.0, 0.0]))   # H = (2/N) X^T X = (2/3) I
    Array([0.6666667, 0.       , 0.       ], dtype=float32)
  """
  if kind not in KINDS:
    raise ValueError(f"kind must be one of {KINDS}; got {kind!r}")
  matvec, like = _operator(obj, params, kind, leaves)
  # 64-bit products stay in the program: a callback running outside the caller's enable_x64 context would
  # receive its arguments cut to 32 bits. So do products on several devices: a program sharded over several
  # CPU devices holds the client's threads while its callbacks wait for the product's own program (a deadlock,
  # seen with 8 CPU devices), and an accelerator's callback would queue behind the program that waits for it.
  if (obj.batching != "unroll" or any(jnp.dtype(a.dtype).itemsize == 8 for a in jax.tree.leaves(like))
      or jax.default_backend() != "cpu" or jax.device_count() != 1):
    return matvec, like
  product = functools.partial(_product, kind=kind, leaves=_static_leaves(leaves))
  shapes = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), like)

  @jax.custom_jvp
  def called(obj, params, v):
    # Each product is its own compiled program, called from whatever loop runs this matvec: XLA's CPU
    # compiler keeps the gradients of convolutions inside loop bodies as naive loop nests (BATCHINGS).
    return jax.pure_callback(product, shapes, obj, params, v, vmap_method="sequential")

  @called.defjvp
  def _refuse(primals, tangents):
    raise ValueError("curvature products of an objective with batching='unroll' are host callbacks and cannot be "
                     "differentiated (they can be jit-ed and vmap-ed); differentiate through "
                     "operator(obj.with_batching('scan'), ...) instead")

  return (lambda v: called(obj, params, v)), like


@functools.partial(jax.jit, static_argnames=("kind", "leaves"))
def _product(obj: Objective, params: PyTree, v: PyTree, *, kind: str, leaves: Leaves) -> PyTree:
  return _operator(obj, params, kind, leaves)[0](v)


def _operator(obj: Objective, params: PyTree, kind: str, leaves: Leaves) -> tuple[Callable[[PyTree], PyTree], PyTree]:
  """:func:`operator` in the caller's program (the products :func:`operator` calls under ``unroll``)."""
  if leaves is None:
    like = params
    full = lambda s: s
  else:
    like = select(params, leaves)
    full = lambda s: _merge(params, s)

  if kind == "hessian":
    grad = jax.grad(lambda s: obj.value(full(s)))

    def matvec(v):
      return jax.jvp(grad, (like,), (v,))[1]

    return matvec, like

  n = obj.total_weight
  # An L2 penalty is linear in the extra output with_l2 adds, so J^T H_out J
  # would drop its Hessian weight_decay * I: take the GGN of the unpenalised
  # model and add the penalty's (exact) curvature.
  base, weight_decay = split_l2(obj)

  def ggn_matvec(v):
    def batch_ggn(batch):
      x = batch[0]
      out_fn = lambda s: base.apply(full(s), base.state, x)
      out, lin = jax.linearize(out_fn, like)
      jv = lin(v)

      def total(o):
        return base.loss_sum(o, batch)

      hjv = jax.jvp(jax.grad(total), (out,), (jv,))[1]
      (g,) = jax.linear_transpose(lin, like)(hjv)
      return g

    acc = obj.sum_over_batches(batch_ggn, obj.batching)
    return jax.tree.map(lambda a, b: a / n + weight_decay * b, acc, v)

  return ggn_matvec, like


def hvp(obj: Objective, params: PyTree, v: PyTree, *, kind: str = "hessian", leaves: Leaves = None) -> PyTree:
  """One exact full-data curvature-vector product ``H v`` (or ``G v``).

  ``v`` must be shaped like ``params`` (or like :func:`select` ``(params,
  leaves)`` when ``leaves`` is given). Pure and traceable.
  """
  return operator(obj, params, kind=kind, leaves=leaves)[0](v)


def _static_leaves(leaves: Leaves) -> Leaves:
  if leaves is None or isinstance(leaves, str) or callable(leaves):
    return leaves
  return tuple(leaves)


# --------------------------------------------------------- user-facing calls
@functools.partial(jax.jit, static_argnames=("k", "num_steps", "max_hvps", "num_vectors", "verify_steps", "kind",
                                             "leaves", "dtype", "has_atol"))
def _eigenvalues(obj, params, key, v0, tol, atol, which, *, k, num_steps, max_hvps, num_vectors, verify_steps, kind,
                 leaves, dtype, has_atol):
  # `which` is a traced index into spectral.WHICH: one compiled program for all rules
  mv, like = operator(obj, params, kind=kind, leaves=leaves)
  return spectral.eigh(key, mv, like, k, which=which, tol=tol, atol=atol if has_atol else None, max_matvecs=max_hvps,
                       num_vectors=num_vectors, verify_steps=verify_steps, num_steps=num_steps, v0=v0, dtype=dtype)


@tree_lib.key_first()
def eigenvalues(
    key: jax.Array,
    obj: Objective,
    params: PyTree,
    k: int = 5,
    which: str = "largest",
    *,
    tol: float = 1e-3,
    atol: float | None = None,
    max_hvps: int = 2000,
    num_vectors: int | None = None,
    verify_steps: int = 5,
    num_steps: int | None = None,
    v0: PyTree | None = None,
    kind: str = "hessian",
    leaves: Leaves = None,
    dtype: Any = None,
) -> spectral.EighResult:
  """Top-k / bottom-k eigenpairs of the full-data Hessian (or GGN), run until certified.

  Thick-restart Lanczos with full reorthogonalisation
  (:func:`jaxscape.spectral.eigh`): it stops as soon as the k wanted Ritz pairs
  meet ``||H y - theta y|| <= max(tol |theta|, atol)``, checks once more from
  a fresh random vector (``verify_steps`` HVPs) for an eigenvalue the first
  start vector missed, and spends at most ``max_hvps`` HVPs (plus k for the
  true residuals on which ``converged`` is decided). A certified value lies
  within its residual of an eigenvalue of H; ``atol`` (default
  ``100 eps ||H||``) is the floor for eigenvalues near zero, whose relative
  accuracy no float residual can promise. Both are recorded in the result.

  Args:
    key: PRNG key (start vector); ``eigenvalues(obj, params, ..., key=key)`` works too.
    obj: the objective.
    params: the point.
    k: number of eigenpairs.
    which: ``largest`` / ``smallest`` (algebraic) or ``magnitude``.
    tol: relative residual tolerance.
    atol: absolute residual floor (default ``100 eps ||H||`` in the HVP dtype).
    max_hvps: budget of Lanczos HVPs.
    num_vectors: Krylov basis size (memory: that many parameter vectors;
      default ``max(2k + 10, 30)``).
    verify_steps: HVPs from a fresh start vector before stopping (0: none).
    num_steps: fixed-length mode: exactly this many Lanczos steps, no restarts.
    v0: optional start vector shaped like the operator's vectors (warm start).
    kind: ``hessian`` or ``ggn``.
    leaves: optional leaf selection (per-layer block).
    dtype: Lanczos recurrence dtype; ``jnp.float64`` runs the recurrence and
      reorthogonalisation in float64 while the HVP stays in the parameters'
      dtype (needs x64 enabled).

  Returns:
    :class:`jaxscape.spectral.EighResult` with ``values``, ``vectors`` (a pytree
    with a leading axis k), ``residuals``, ``bounds``, ``converged``,
    ``num_converged``, ``tol``, ``atol`` and ``num_hvps``; its repr says how
    many pairs are certified.

  Example:
    >>> res = js.hessian.eigenvalues(key, obj, params, k=5, which="largest")  # doctest: +SKIP
    >>> res.values, res.residuals, res.converged, res.num_hvps  # doctest: +SKIP
  """
  if which not in spectral.WHICH:
    raise ValueError(f"which must be one of {spectral.WHICH}; got {which!r}")
  for name, x in (("tol", tol), ("atol", atol)):
    if x is not None and not x >= 0:
      raise ValueError(f"{name} must be >= 0; got {x!r}")
  res = _eigenvalues(obj, params, key, v0, tol, 0.0 if atol is None else atol, spectral.WHICH.index(which), k=k,
                     num_steps=num_steps, max_hvps=max_hvps, num_vectors=num_vectors, verify_steps=verify_steps,
                     kind=kind, leaves=_static_leaves(leaves), dtype=dtype, has_atol=atol is not None)
  return dataclasses.replace(res, which=which)


@functools.partial(jax.jit, static_argnames=("k", "max_iters", "kind", "leaves"))
def _power(obj, params, key, v0, deflate, tol, *, k, max_iters, kind, leaves):
  mv, like = operator(obj, params, kind=kind, leaves=leaves)
  return spectral.power_iteration(key, mv, like, k=k, v0=v0, deflate=deflate, max_iters=max_iters, tol=tol)


@tree_lib.key_first()
def power_iteration(
    key: jax.Array,
    obj: Objective,
    params: PyTree,
    *,
    k: int = 1,
    v0: PyTree | None = None,
    deflate: PyTree | None = None,
    max_iters: int = 100,
    tol: float = 1e-3,
    kind: str = "hessian",
    leaves: Leaves = None,
) -> spectral.PowerResult:
  """Largest-|lambda| eigenpairs by deflated power iteration (warm-startable).

  Stops each pair when ``||H v - lambda v|| <= tol |lambda|``. Pass the
  previous grid point's eigenvector as ``v0`` to track ``lambda_max`` across a
  landscape. See :func:`jaxscape.spectral.power_iteration`.
  """
  return _power(obj, params, key, v0, deflate, tol, k=k, max_iters=max_iters, kind=kind,
                leaves=_static_leaves(leaves))


@functools.partial(jax.jit, static_argnames=("min_probes", "max_probes", "block_size", "method", "sketch_size",
                                             "batch_size", "kind", "leaves"))
def _trace(obj, params, key, rtol, *, min_probes, max_probes, block_size, method, sketch_size, batch_size, kind,
           leaves):
  mv, like = operator(obj, params, kind=kind, leaves=leaves)
  return spectral.trace(key, mv, like, rtol=rtol, min_probes=min_probes, max_probes=max_probes,
                        block_size=block_size, method=method, sketch_size=sketch_size, batch_size=batch_size)


@tree_lib.key_first()
def trace(
    key: jax.Array,
    obj: Objective,
    params: PyTree,
    *,
    rtol: float = 0.01,
    min_probes: int = 20,
    max_probes: int = 1000,
    block_size: int = 10,
    method: str = "hutch++",
    sketch_size: int = 20,
    batch_size: int | None = None,
    kind: str = "hessian",
    leaves: Leaves = None,
) -> spectral.TraceResult:
  """Hessian (or GGN) trace with a calibrated 95 % interval, per-leaf traces and diagonal.

  Hutch++ (default; ``method="hutchinson"`` for plain Rademacher probes):
  ``2 sketch_size`` HVPs deflate the top of the spectrum, then a pilot of
  ``min_probes`` probes fixes the standard error's variance and probes
  continue until ``stderr <= rtol |estimate|`` or ``max_probes``
  (:func:`jaxscape.spectral.trace`). ``tr.interval()`` is the Student-t 95 %
  interval ``estimate +- ci95``; ``converged`` says whether the target was
  met. ``per_leaf`` holds the trace of each leaf's diagonal block (per-layer
  traces) and ``diagonal`` the diagonal estimate, both unbiased, from the same
  probes and shaped like ``params``.

  Example:
    >>> tr = js.hessian.trace(key, obj, params, rtol=0.01)  # doctest: +SKIP
    >>> tr.estimate, tr.interval(), tr.converged, tr.num_hvps, tr.per_leaf, tr.diagonal  # doctest: +SKIP
  """
  return _trace(obj, params, key, rtol, min_probes=min_probes, max_probes=max_probes, block_size=block_size,
                method=method, sketch_size=sketch_size, batch_size=batch_size, kind=kind,
                leaves=_static_leaves(leaves))


@functools.partial(jax.jit, static_argnames=("num_probes", "num_steps", "reortho", "num_grid", "kind", "leaves",
                                             "dtype", "has_sigma"))
def _density(obj, params, key, sigma, *, num_probes, num_steps, reortho, num_grid, kind, leaves, dtype, has_sigma):
  mv, like = operator(obj, params, kind=kind, leaves=leaves)
  d = spectral.slq(key, mv, like, num_probes=num_probes, num_steps=num_steps, reortho=reortho, num_grid=num_grid,
                   dtype=dtype)
  return d.smooth(sigma, num_grid=num_grid) if has_sigma else d


@tree_lib.key_first()
def density(
    key: jax.Array,
    obj: Objective,
    params: PyTree,
    *,
    num_probes: int = 4,
    num_steps: int = 90,
    reortho: bool = False,
    sigma: float | None = None,
    num_grid: int = 1000,
    kind: str = "hessian",
    leaves: Leaves = None,
    dtype: Any = None,
) -> spectral.Density:
  """Spectral density of the Hessian (or GGN) by stochastic Lanczos quadrature.

  ``num_probes`` Lanczos runs of ``num_steps`` HVPs
  (:func:`jaxscape.spectral.slq`). By default the memory-light recurrence (no
  stored basis, no reorthogonalisation); ``reortho=True`` reorthogonalises
  against a stored basis. Gaussian kernel of standard deviation ``sigma``
  (default 1 % of the Ritz range). Keeps ``nodes``/``weights`` so
  ``dens.smooth(sigma, grid)`` re-smooths and ``dens.negative_mass(eps)``
  estimates the fraction of eigenvalues below ``-eps`` without new HVPs.

  Example:
    >>> dens = js.hessian.density(key, obj, params, num_probes=4, num_steps=90)  # doctest: +SKIP
    >>> dens.grid, dens.density, dens.nodes, dens.weights, dens.negative_mass(1e-3)  # doctest: +SKIP
  """
  if sigma is not None and sigma <= 0:
    raise ValueError(f"sigma must be > 0; got {sigma}")
  return _density(obj, params, key, 1.0 if sigma is None else sigma, num_probes=num_probes, num_steps=num_steps,
                  reortho=reortho, num_grid=num_grid, kind=kind, leaves=_static_leaves(leaves), dtype=dtype,
                  has_sigma=sigma is not None)


# ------------------------------------------------------ curvature at a point
def projected_hessian(obj: Objective, params: PyTree, d1: PyTree, d2: PyTree) -> jax.Array:
  """The exact 2x2 Hessian of the loss on the plane spanned by ``d1, d2``.

  ``[[d1^T H d1, d1^T H d2], [d2^T H d1, d2^T H d2]]`` at ``params``, by
  nested forward-mode ``jvp`` of ``obj.value`` (no reverse pass, no HVP over
  the whole parameter vector): the second derivatives of
  ``f(a, b) = L(params + a d1 + b d2)`` at ``a = b = 0``. Pure; ``vmap`` it over
  grid points (``params + a d1 + b d2``) for curvature maps of a surface.

  Example:
    >>> import jax.numpy as jnp, numpy as np, jaxscape as js
    >>> x = np.eye(2, dtype=np.float32); t = np.zeros(2, np.float32)
    >>> obj = js.Objective.from_apply(lambda p, x: x @ p, data=(x, t), loss="mse")
    >>> projected_hessian(obj, jnp.ones(2), jnp.array([1.0, 0.0]), jnp.array([1.0, 1.0]))
    Array([[1., 1.],
           [1., 2.]], dtype=float32)
  """
  def second(u, w):
    dir_u = lambda p: jax.jvp(obj.value, (p,), (u,))[1]
    return jax.jvp(dir_u, (params,), (w,))[1]

  h11, h12, h22 = second(d1, d1), second(d1, d2), second(d2, d2)
  return jnp.stack([jnp.stack([h11, h12]), jnp.stack([h12, h22])])


@tree_lib.key_first(legacy_position=2)
def point_curvature(key: jax.Array, obj: Objective, params: PyTree, *, num_steps: int = 10,
                    num_probes: int = 10, kind: str = "hessian", v0: PyTree | None = None) -> dict[str, jax.Array]:
  """Curvature summary at one point, for maps over a loss surface.

  One Lanczos run of ``num_steps`` HVPs (full reorthogonalisation) gives the
  extreme Ritz values ``lambda_max`` and ``lambda_min``: with a few steps they
  are inner bounds (``lambda_max`` from below, ``lambda_min`` from above) that
  converge fastest for well-separated extremes. ``lambda_max_bound`` and
  ``lambda_min_bound`` are their free Lanczos residual bounds
  ``beta_m |s_{m,i}|`` (from the last entries of the tridiagonal's
  eigenvectors; equal to ``||H y - theta y||`` in exact arithmetic): a true
  eigenvalue lies within that distance of each Ritz value (not necessarily the
  extreme one: a residual cannot tell whether an eigenvalue was missed).

  ``convexity_ratio`` is the signed ``lambda_min / lambda_max`` (Li et al.
  2018, Fig. 6, who plot its magnitude): negative where the Hessian is
  indefinite (non-convex), in ``[0, 1]`` where it is positive semi-definite,
  ``>= 1`` where it is negative definite (both negative); ``lambda_max`` near 0
  is replaced by the smallest positive float so that the ratio stays finite.

  The trace is a fixed-size Rademacher Hutchinson estimate with
  ``num_probes`` HVPs, one after another (``lax.scan``: peak memory is that of
  one HVP whatever the number of probes); ``trace_stderr`` is the sample
  standard deviation (ddof=1) of the probes over ``sqrt(num_probes)``, so
  ``num_probes >= 2`` (a single probe has no error estimate).

  Pure and ``vmap``-able over ``params`` (and ``key``, ``v0``); the number of
  steps and probes is static. The earlier order ``point_curvature(obj, params,
  key)`` works too.

  ``v0`` warm-starts the Lanczos run (default: a random start from ``key``),
  e.g. from a nearby point's extreme Ritz vectors (:func:`extreme_ritz`):
  both extremes then converge in fewer steps. The trace probes do not depend
  on it.

  Returns:
    ``{"lambda_max", "lambda_min", "lambda_max_bound", "lambda_min_bound",
    "convexity_ratio", "trace", "trace_stderr"}``, scalars.

  Raises:
    ValueError: when ``num_probes < 2``.
  """
  if not isinstance(num_probes, int) or num_probes < 2:
    raise ValueError(f"num_probes must be an integer >= 2 (a trace standard error needs two probes); "
                     f"got num_probes={num_probes!r}")
  mv, like = operator(obj, params, kind=kind)
  k_lz, k_tr = jax.random.split(key)
  lz = spectral.lanczos(k_lz, mv, like, num_steps, v0=v0)
  theta, s = jnp.linalg.eigh(lz.tridiagonal())
  bounds = jnp.abs(lz.betas[-1] * s[-1])
  lmax, lmin = theta[-1], theta[0]
  flat_like, unravel = ravel_pytree(like)

  def probe(carry, k):
    v = jax.random.rademacher(k, flat_like.shape, flat_like.dtype)
    return carry, jnp.vdot(v, ravel_pytree(mv(unravel(v)))[0])

  _, samples = jax.lax.scan(probe, None, jax.random.split(k_tr, num_probes))
  tr, se = jnp.mean(samples), jnp.std(samples, ddof=1) / jnp.sqrt(num_probes).astype(samples.dtype)
  tiny = jnp.finfo(flat_like.dtype).tiny
  ratio = lmin / jnp.where(jnp.abs(lmax) > tiny, lmax, tiny)
  return {"lambda_max": lmax, "lambda_min": lmin, "lambda_max_bound": bounds[-1], "lambda_min_bound": bounds[0],
          "convexity_ratio": ratio, "trace": tr, "trace_stderr": se}


@tree_lib.key_first(legacy_position=2)
def extreme_ritz(key: jax.Array, obj: Objective, params: PyTree, *, num_steps: int = 40,
                 v0: PyTree | None = None, kind: str = "hessian") -> tuple[jax.Array, PyTree]:
  """The extreme Ritz pairs of the Hessian (or GGN) at one point, from ``num_steps`` HVPs.

  One Lanczos run (:func:`jaxscape.spectral.extreme_ritz`), keyed as in
  :func:`point_curvature` (the same ``key`` and ``num_steps`` give the same
  ``lambda_min``/``lambda_max``), that also returns the Ritz vectors: the
  warm starts of nearby points' runs (``loss_surface(..., warm_start=k)``).
  Pure and ``vmap``-able over ``params``, ``key`` and ``v0``. The earlier
  order ``extreme_ritz(obj, params, key)`` works too.

  Returns:
    ``(values, vectors)``: ``values = [lambda_min, lambda_max]`` (Ritz values,
    inner bounds) and the unit Ritz vectors, a pytree like ``params`` with a
    leading axis of 2.

  Example:
    >>> import jax, jax.numpy as jnp, numpy as np, jaxscape as js
    >>> x = np.diag([1.0, 2.0, 3.0]).astype(np.float32); t = np.zeros(3, np.float32)
    >>> obj = js.Objective.from_apply(lambda p, x: x @ p, data=(x, t), loss="mse")
    >>> vals, vecs = extreme_ritz(jax.random.key(0), obj, jnp.ones(3), num_steps=3)
    >>> np.round(np.asarray(vals) * 3 / 2, 4).tolist()   # H = (2/3) diag(1, 4, 9)
    [1.0, 9.0]
  """
  mv, like = operator(obj, params, kind=kind)
  k_lz, _ = jax.random.split(key)
  return spectral.extreme_ritz(k_lz, mv, like, num_steps, v0=v0)


# ------------------------------------------------------ curvature during training
def adam_preconditioner(opt_state: Any, *, b2: float = 0.999, eps: float = 1e-8) -> PyTree:
  """Adam's diagonal preconditioner ``P = sqrt(nu_hat) + eps``, read from an optax state.

  Adam's step is ``-eta P^{-1} m_hat`` with ``nu_hat = nu / (1 - b2^count)``
  the bias-corrected second moments (``optax.ScaleByAdamState.nu`` and
  ``.count``, found anywhere in the nested state: ``adam``, ``adamw``,
  chains). ``b2`` and ``eps`` are the optimiser's hyperparameters (not part
  of its state; optax's defaults here). Before the first step (``count ==
  0``) there are no moments and every entry is NaN.

  Args:
    opt_state: an optax state holding exactly one ``ScaleByAdamState``.
    b2: Adam's second-moment decay.
    eps: Adam's ``eps`` (added outside the square root, as optax does).

  Returns:
    A pytree like the parameters: the diagonal of ``P``.

  Example:
    >>> import jax.numpy as jnp, optax
    >>> tx = optax.adam(0.1)
    >>> params = {"w": jnp.zeros(2)}
    >>> state = tx.update({"w": jnp.array([3.0, -4.0])}, tx.init(params), params)[1]
    >>> [round(x, 3) for x in adam_preconditioner(state, eps=0.0)["w"].tolist()]   # nu_hat = g^2 after one step
    [3.0, 4.0]
  """
  is_adam = lambda x: isinstance(x, optax.ScaleByAdamState)
  found = [x for x in jax.tree.leaves(opt_state, is_leaf=is_adam) if is_adam(x)]
  if len(found) != 1:
    kinds = sorted({type(x).__name__ for x in jax.tree.leaves(opt_state, is_leaf=lambda x: isinstance(x, tuple))})
    raise ValueError(f"expected an optax state holding one ScaleByAdamState (Adam's second moments); found "
                     f"{len(found)} in a state of {kinds}. For another diagonal preconditioner pass "
                     "preconditioner=P (a pytree like the parameters)")
  state = found[0]

  def diagonal(nu):
    count = jnp.asarray(state.count).astype(nu.dtype)
    return jnp.sqrt(nu / (1 - jnp.asarray(b2, nu.dtype) ** count)) + jnp.asarray(eps, nu.dtype)

  return jax.tree.map(diagonal, state.nu)


def _loss_operator(loss: Callable[[PyTree], jax.Array], params: PyTree) -> Callable[[PyTree], PyTree]:
  grad = jax.grad(loss)
  return lambda v: jax.jvp(grad, (params,), (v,))[1]


def _warm_start(key: jax.Array, previous: PyTree | None, like: PyTree) -> PyTree:
  """The sum of the previous call's vectors (leading axis), or a Gaussian draw where there are none (zero or NaN)."""
  draw = tree_lib.normal_like(key, like)
  if previous is None:
    return draw
  total = jax.tree.map(lambda v, x: jnp.sum(v, axis=0).astype(x.dtype), previous, like)
  size = tree_lib.norm(total)
  have = jnp.isfinite(size) & (size > 0)  # NaN vectors (Adam's run before its first step) start afresh too
  return jax.tree.map(lambda t, d: jnp.where(have, t, d), total, draw)


def curvature_probe(
    key: jax.Array,
    obj: Objective | Callable[[PyTree], jax.Array],
    params: PyTree,
    opt_state: Any = None,
    *,
    k: int = 1,
    v0: PyTree | None = None,
    tol: float = 1e-3,
    preconditioner: PyTree | None = None,
    v0_preconditioned: PyTree | None = None,
    b2: float = 0.999,
    eps: float = 1e-8,
    trace: bool = False,
    trace_rtol: float = 0.05,
    trace_max_probes: int = 100,
    kind: str = "hessian",
) -> dict[str, Any]:
  """Sharpness during training: the top-k Hessian eigenvalues, optionally Adam's preconditioned sharpness and the trace.

  A pure, traceable function for any training loop (``jit`` it, or call it
  inside a jitted step every few steps); :func:`jaxscape.train.train` calls
  it with ``TrainConfig(curvature_every=...)``. Each part is certified as
  elsewhere in jaxscape: residuals and ``converged`` flags for the Lanczos
  pairs (:func:`jaxscape.spectral.eigh`), a standard error for the trace.

  * ``eigenvalues``: the ``k`` largest eigenvalues of ``H``, the Hessian of
    ``obj`` at ``params`` (``lambda_1`` is the sharpness; gradient descent
    with step ``eta`` is stable on a quadratic only while it is below
    ``2 / eta``, and full-batch training drives it there: Cohen et al. 2021).
    Pass the previous call's ``vectors`` as ``v0``: the run starts from their
    sum, so that slowly moving eigenvectors cost few HVPs.
  * ``preconditioned_sharpness`` (when ``opt_state`` holds Adam's state, or
    ``preconditioner`` is given): the largest eigenvalue of
    ``P^{-1/2} H P^{-1/2}`` with ``P = diag(sqrt(nu_hat) + eps)``
    (:func:`adam_preconditioner`), the sharpness that governs Adam's
    stability (threshold ``(2 + 2 b1) / ((1 - b1) eta)``: Cohen et al. 2022).
    Warm-started from ``v0_preconditioned``.
  * ``trace`` (``trace=True``): ``tr H`` by :func:`jaxscape.spectral.trace`
    to ``trace_rtol`` relative standard error, at most ``trace_max_probes``
    probes.

  Args:
    key: PRNG key (start vectors where there is no warm start, trace probes).
    obj: an :class:`Objective` (the full-data loss of its data: pass the
      measurement set) or a plain ``loss(params) -> scalar``.
    params: the point.
    opt_state: an optax state; when it holds a ``ScaleByAdamState`` the
      preconditioned sharpness is computed too. ``None``: not.
    k: number of top eigenvalues (static).
    v0: the previous call's ``vectors`` (leading axis any length), or ``None``.
    tol: relative residual tolerance of the ``converged`` flags.
    preconditioner: the diagonal of ``P`` as a pytree like ``params``
      (instead of reading Adam's from ``opt_state``: RMSProp, Adafactor, ...).
    v0_preconditioned: the previous call's ``preconditioned_vector``.
    b2, eps: Adam's hyperparameters (see :func:`adam_preconditioner`).
    trace: also estimate the trace.
    trace_rtol, trace_max_probes: the trace's stopping rule.
    kind: ``hessian`` or ``ggn`` (an :class:`Objective` only).

  Returns:
    A dict of arrays: ``eigenvalues``, ``residuals``, ``converged`` (``[k]``,
    largest first), ``vectors`` (pytree, leading axis ``k``), ``num_hvps``;
    with a preconditioner ``preconditioned_sharpness``,
    ``preconditioned_residual``, ``preconditioned_converged``,
    ``preconditioned_vector`` (leading axis 1) and ``preconditioned_num_hvps``;
    with ``trace=True`` ``trace``, ``trace_stderr``, ``trace_converged``
    and ``trace_num_hvps``.

  Example:
    >>> import functools, jax, jax.numpy as jnp, numpy as np, optax
    >>> x = np.random.default_rng(0).normal(size=(32, 3)).astype(np.float32)
    >>> loss = lambda p: jnp.mean((x @ p["w"] - 1.0) ** 2)
    >>> tx, params = optax.adam(0.01), {"w": jnp.zeros(3)}
    >>> opt_state = tx.init(params)
    >>> probe = jax.jit(functools.partial(curvature_probe, obj=loss, k=1))
    >>> out = None
    >>> for step in range(20):
    ...   updates, opt_state = tx.update(jax.grad(loss)(params), opt_state)
    ...   params = optax.apply_updates(params, updates)
    ...   if step % 10 == 9:
    ...     out = probe(jax.random.key(step), params=params, opt_state=opt_state,
    ...                 v0=None if out is None else out["vectors"])
    >>> top = np.linalg.eigvalsh(2 * x.T @ x / 32)[-1]
    >>> bool(np.isclose(out["eigenvalues"][0], top, rtol=1e-4)), bool(out["converged"][0])
    (True, True)
    >>> bool(out["preconditioned_sharpness"] > 0)
    True

  References:
    Cohen, Kaur, Li, Kolter & Talwalkar (2021), "Gradient descent on neural
    networks typically occurs at the edge of stability"; Cohen et al. (2022),
    "Adaptive gradient methods at the edge of stability".
  """
  if not isinstance(k, (int, np.integer)) or k < 1:
    raise ValueError(f"k must be a positive integer; got {k!r}")
  if isinstance(obj, Objective):
    mv, like = operator(obj, params, kind=kind)
  elif callable(obj):
    if kind != "hessian":
      raise ValueError(f"kind={kind!r} needs an Objective (the GGN needs the model's outputs); got a plain loss "
                       "function, whose curvature is its Hessian (kind='hessian')")
    mv, like = _loss_operator(obj, params), params
  else:
    raise ValueError(f"obj must be an Objective or a loss(params) -> scalar; got {type(obj).__name__}")
  k_top, k_pre, k_tr = jax.random.split(key, 3)
  k_top_start, k_top_run = jax.random.split(k_top)
  res = spectral.eigh(k_top_run, mv, like, int(k), which="largest", tol=tol,
                      v0=_warm_start(k_top_start, v0, like))
  out = {"eigenvalues": res.values, "residuals": res.residuals, "converged": res.converged, "vectors": res.vectors,
         "num_hvps": res.num_hvps}
  if preconditioner is None and opt_state is not None:
    preconditioner = adam_preconditioner(opt_state, b2=b2, eps=eps)
  if preconditioner is not None:
    scale = jax.tree.map(lambda p, x: jax.lax.rsqrt(p).astype(x.dtype), preconditioner, like)
    scaled = lambda v: jax.tree.map(jnp.multiply, scale, mv(jax.tree.map(jnp.multiply, scale, v)))
    k_pre_start, k_pre_run = jax.random.split(k_pre)
    pre = spectral.eigh(k_pre_run, scaled, like, 1, which="largest", tol=tol,
                        v0=_warm_start(k_pre_start, v0_preconditioned, like))
    out.update(preconditioned_sharpness=pre.values[0], preconditioned_residual=pre.residuals[0],
               preconditioned_converged=pre.converged[0], preconditioned_vector=pre.vectors,
               preconditioned_num_hvps=pre.num_hvps)
  if trace:
    tr = spectral.trace(k_tr, mv, like, rtol=trace_rtol, max_probes=int(trace_max_probes))
    out.update(trace=tr.estimate, trace_stderr=tr.stderr, trace_converged=tr.converged, trace_num_hvps=tr.num_hvps)
  return out


# ------------------------------------------------------ eigenvector axes
def _sign_fixed(v: PyTree) -> PyTree:
  """``v`` with its largest-magnitude entry made positive: an eigenvector's sign is arbitrary, a plot's should not be."""
  flat = tree_lib.ravel(v)[0]
  sign = jnp.where(flat[jnp.argmax(jnp.abs(flat))] < 0, -1, 1)
  return jax.tree.map(lambda x: x * sign.astype(x.dtype), v)


def hessian_directions(
    key: jax.Array,
    obj: Any,
    params: PyTree,
    k: int = 2,
    *,
    which: str = "largest",
    norm: str = "none",
    ignore: str | None = None,
    tol: float = 1e-3,
    kind: str = "hessian",
    layout: directions.Layout | None = None,
    filter_axes: Any = None,
) -> directions.Directions:
  """The top-k (or bottom-k) Hessian eigenvectors at ``params``, as plot axes.

  The eigenpairs come from :func:`jaxscape.hessian.eigenvalues` (Lanczos on
  exact full-data Hessian-vector products); direction ``i`` is the ``i``-th
  eigenvector in ``which`` order (largest first, or most negative first for
  ``smallest``), with its sign fixed so that its largest-magnitude entry is
  positive. With ``norm="none"`` and ``ignore=None`` (the defaults) the
  directions are the unit eigenvectors themselves, so the plot's coordinate
  is the distance moved and the loss along direction ``i`` starts as
  ``L + λ_i c^2 / 2``; ``filter`` / ``layer`` / ``model`` rescale them as
  random directions are (:func:`jaxscape.directions.normalize`), which makes them comparable with
  filter-normalised plots but no longer exact eigenvectors (nor orthogonal).

  ``info`` records the eigenvalues, their residuals ``||H y - λ y||`` and
  ``converged`` flags (of the unnormalised eigenvectors), the number of
  HVPs, ``which``, ``k``, ``tol``, the curvature matrix (``matrix``:
  ``hessian`` or ``ggn``) and the key, so that a surface along these axes
  says what its axes are and how far to trust them.

  Args:
    key: PRNG key of the Lanczos start vector.
    obj: the :class:`jaxscape.Objective`.
    params: the point (the surface's origin).
    k: number of directions (2 for a surface).
    which: ``largest`` or ``smallest`` (algebraic), or ``magnitude``.
    norm: ``none`` (unit eigenvectors) | ``filter`` | ``layer`` | ``model``.
    ignore: ``"biasbn"`` zeroes the directions on biases and normalisation
      parameters (then they are no longer eigenvectors); ``None`` keeps them.
    tol: relative residual tolerance of the ``converged`` flags.
    kind: ``hessian`` or ``ggn`` (:data:`jaxscape.hessian.KINDS`).
    layout: per-leaf rule for ``norm="filter"`` / ``ignore`` (default ``obj.layout``).
    filter_axes: as in :func:`jaxscape.directions.normalize`.

  Returns:
    :class:`jaxscape.directions.Directions` with ``vectors`` of leading axis ``k``.

  Example:
    >>> import jax, jax.numpy as jnp, numpy as np, jaxscape as js
    >>> x = np.diag([1.0, 2.0, 3.0]).astype(np.float32); t = np.zeros(3, np.float32)
    >>> obj = js.Objective.from_apply(lambda p, x: x @ p["w"], data=(x, t), loss="mse")
    >>> d = hessian_directions(jax.random.key(0), obj, {"w": jnp.ones(3)}, k=2)
    >>> np.abs(np.round(np.asarray(d.vectors["w"]), 4)).tolist()   # H = (2/3) diag(1, 4, 9)
    [[0.0, 0.0, 1.0], [0.0, 1.0, 0.0]]
    >>> [round(v, 3) for v in d.info["eigenvalues"]]
    [6.0, 2.667]

  References:
    Yao et al. (2020, PyHessian) and Li et al. (Landscaper / LLA) plot losses
    along the top Hessian eigenvectors.
  """
  if not isinstance(k, (int, np.integer)) or k < 1:
    raise ValueError(f"k must be a positive integer; got {k!r}")
  if norm not in directions.NORMS:
    raise ValueError(f"unknown norm {norm!r}: expected one of {directions.NORMS}")
  if ignore not in directions.IGNORES:
    raise ValueError(f"unknown ignore policy {ignore!r}: expected one of {directions.IGNORES}")
  res = eigenvalues(key, obj, params, int(k), which, tol=tol, kind=kind)
  layout = getattr(obj, "layout", None) if layout is None else layout
  dtypes = [jnp.asarray(p).dtype for p in jax.tree.leaves(params)]
  out = []
  for i in range(int(k)):
    v = _sign_fixed(jax.tree.map(lambda x: x[i], res.vectors))
    v = jax.tree.unflatten(jax.tree.structure(params),
                           [jnp.asarray(x).astype(dt) for x, dt in zip(jax.tree.leaves(v), dtypes)])
    if norm != "none" or ignore is not None:
      v = directions.normalize(v, params, norm, ignore, layout=layout, filter_axes=filter_axes)
    directions.check_nonzero(v, i)
    out.append(v)
  info = {"kind": "hessian", "matrix": kind, "which": which, "k": int(k), "key": key_record(key), "tol": float(tol),
          "eigenvalues": np.asarray(res.values).tolist(), "residuals": np.asarray(res.residuals).tolist(),
          "converged": np.asarray(res.converged).tolist(), "num_hvps": int(res.num_hvps), "norm": norm,
          "ignore": ignore, **directions.layout_record(layout, filter_axes)}
  return directions.Directions(tree_lib.stack(out), info)
