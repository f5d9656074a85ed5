"""Directions in parameter space: random, filter-normalised, interpolation, PCA, Hessian eigenvectors.

A direction is a pytree with the structure of the parameters. A
:class:`Directions` bundles the ``n`` directions of a plot (stacked on a
leading axis) with a record of how they were made, which every result stores.

Normalisations (Li et al. 2018, "Visualizing the Loss Landscape of Neural
Nets", Sec. 4):

* ``filter``: each filter of the direction is rescaled to the norm of the
  corresponding filter of the weights. What a filter is comes from the
  model's *layout*, a per-leaf rule (:class:`LeafRule`: the axes that index
  output units, and the leaf's role) that each adapter declares: in Flax
  layout (:func:`flax_layout`) Dense kernels are ``(in, out)`` and Conv
  kernels HWIO, so a filter is a slice along the *last* axis; embeddings are
  per row, attention projections per (head, unit); equinox weights are
  ``(out, in, ...)``, a slice along the first axis. Leaves whose rule says
  ``out_axes=()`` (biases, norm scales, 1-D weights) are rescaled as a whole.
* ``layer``: each leaf is rescaled to the norm of the weight leaf.
* ``model``: the whole direction is rescaled to the norm of the weights.
* ``none``: the raw Gaussian draw.

``ignore="biasbn"`` sets the direction to zero on every leaf whose role is
``bias`` or ``norm`` (the ``--xignore biasbn`` of the original tool), by
role, never by shape. A leaf no rule covers, or a direction that comes out
all zero, is a ``ValueError`` naming the leaf and how to pass a rule
(``filter_axes={path: axes}``).

Example:
  >>> import jax, jax.numpy as jnp
  >>> params = {"kernel": jnp.ones((3, 2)), "bias": jnp.ones(2)}
  >>> dirs = random_directions(jax.random.key(0), params, n=2)
  >>> [float(x) for x in jnp.linalg.norm(dirs.vectors["kernel"][0], axis=0)]  # = weight filter norms
  [1.7320508..., 1.7320508...]
  >>> float(jnp.abs(dirs.vectors["bias"]).max())   # biases ignored
  0.0
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from . import tree
from .io import key_record

from .tree import PyTree

NORMS = ("filter", "layer", "model", "none")
IGNORES = (None, "biasbn")
_EPS = 1e-10

__all__ = [
    "Directions",
    "NORMS",
    "LeafRule",
    "flax_layout",
    "leaf_rules",
    "normalize",
    "random_directions",
    "interpolation_direction",
    "plane_directions",
    "pca_directions",
    "PCADirections",
    "check_nonzero",
    "layout_record",
    "as_directions",
    "move_state",
]


@dataclasses.dataclass(frozen=True)
class Directions:
  """``n`` directions stacked on a leading axis, and how they were made.

  Attributes:
    vectors: pytree like the parameters, each leaf with a leading axis ``n``.
    info: JSON-serialisable record (kind, key, normalisation, ignore policy).
    state_vectors: ``None``, or directions in the model's non-trainable state
      (BatchNorm statistics) shaped like the state with a leading axis ``n``:
      the state then moves with the parameters (BatchNorm policy
      ``interpolate``, Li et al.'s ``states``); non-floating leaves (RNG
      counters) never move.
  """

  vectors: PyTree
  info: dict[str, Any] = dataclasses.field(default_factory=dict)
  state_vectors: PyTree = None

  @property
  def n(self) -> int:
    return int(jax.tree.leaves(self.vectors)[0].shape[0])

  def __getitem__(self, i: int) -> PyTree:
    return jax.tree.map(lambda v: v[i], self.vectors)

  def __len__(self) -> int:
    return self.n

  def __iter__(self):
    return iter(tree.unstack(self.vectors))



def as_directions(directions: Directions | Sequence[PyTree], params: PyTree) -> Directions:
  """Accepts a :class:`Directions` or a sequence of pytrees; checks structures against ``params``."""
  if isinstance(directions, Directions):
    d = directions
  else:
    if isinstance(directions, dict) or not isinstance(directions, (list, tuple)) or len(directions) == 0:
      raise ValueError(f"directions must be a Directions or a non-empty list of pytrees like params; got {type(directions).__name__}")
    d = Directions(tree.stack(list(directions)), {"kind": "user"})
  p_struct, d_struct = jax.tree.structure(params), jax.tree.structure(d.vectors)
  if p_struct != d_struct:
    raise ValueError(f"directions do not have the structure of params:\n  params: {p_struct}\n  directions: {d_struct}")
  for name, p, v in zip(tree.leaf_names(params), jax.tree.leaves(params), jax.tree.leaves(d.vectors)):
    if tuple(v.shape[1:]) != tuple(np.shape(p)):
      raise ValueError(f"direction leaf {name!r} has shape {tuple(v.shape[1:])}; the parameter has {tuple(np.shape(p))}")
    p_dtype = np.dtype(p.dtype) if hasattr(p, "dtype") else np.asarray(p).dtype
    if np.dtype(v.dtype) != p_dtype:
      raise ValueError(f"direction leaf {name!r} has dtype {np.dtype(v.dtype)}; the parameter has {p_dtype}: "
                       "θ + c·d would silently compute in the promoted dtype; cast the directions to the "
                       "parameters' dtypes")
  return d


ROLES = ("weight", "bias", "norm")


@dataclasses.dataclass(frozen=True)
class LeafRule:
  """How filter normalisation treats one parameter leaf.

  Attributes:
    out_axes: the axes that index output units: a "filter" is one index
      along them, with the norm taken over all other axes (``(ndim - 1,)``
      for a Flax Dense/Conv kernel, ``(0,)`` for an equinox ``Linear`` weight
      or an embedding table's rows, ``(1, 2)`` for an attention projection
      ``(d, heads, head_dim)``); ``()`` rescales the leaf as a whole.
    role: ``weight`` | ``bias`` | ``norm`` (a normalisation's scale or
      offset). ``ignore="biasbn"`` leaves out biases and norms, by role.
  """

  out_axes: tuple[int, ...] = ()
  role: str = "weight"

  def __post_init__(self):
    axes = (self.out_axes,) if isinstance(self.out_axes, (int, np.integer)) else tuple(self.out_axes)
    object.__setattr__(self, "out_axes", tuple(int(a) for a in axes))
    if self.role not in ROLES:
      raise ValueError(f"LeafRule role must be one of {ROLES}; got {self.role!r}")


Layout = Callable[[str, Any], "LeafRule | None"]


def flax_layout(path: str, leaf: Any) -> LeafRule:
  """The Flax layout (nnx and linen): which axes of a leaf index output units, and its role.

  By the leaf's name (the last part of its ``/``-joined path):

  * ``bias``: role ``bias``; ``scale``: role ``norm`` (BatchNorm, LayerNorm);
  * ``embedding`` (``nnx.Embed``, ``nn.Embed``): per row (token), axis 0;
  * ``kernel`` of attention ``query`` / ``key`` / ``value`` projections,
    ``(d, heads, head_dim)``: per (head, unit), axes ``(1, 2)``; the ``out``
    projection ``(heads, head_dim, d)`` is a kernel like any other;
  * any other leaf (``kernel``: Dense ``(in, out)``, Conv HWIO; or a plain
    pytree's leaves): the last axis when ``ndim >= 2``, else the whole leaf,
    role ``weight`` (a logistic regression's 1-D weight vector is a weight).

  Example:
    >>> import jax.numpy as jnp
    >>> flax_layout("layers/0/kernel", jnp.ones((3, 4)))
    LeafRule(out_axes=(1,), role='weight')
    >>> flax_layout("attn/query/kernel", jnp.ones((8, 2, 4))).out_axes
    (1, 2)
  """
  parts = path.split("/")
  name, parent = parts[-1], (parts[-2] if len(parts) > 1 else "")
  ndim = np.ndim(leaf)
  if name == "bias":
    return LeafRule((), "bias")
  if name == "scale":
    return LeafRule((), "norm")
  if name == "embedding" and ndim >= 2:
    return LeafRule((0,), "weight")
  if name == "kernel" and ndim == 3 and parent in ("query", "key", "value"):
    return LeafRule((1, 2), "weight")
  return LeafRule((ndim - 1,) if ndim >= 2 else (), "weight")


@dataclasses.dataclass(frozen=True)
class _WithAxes:
  """A layout with some leaves' output axes given by path (``filter_axes=``)."""

  base: Any
  axes: tuple[tuple[str, tuple[int, ...]], ...]

  def __call__(self, path: str, leaf: Any) -> LeafRule | None:
    given = dict(self.axes)
    base = self.base(path, leaf)
    if path not in given:
      return base
    return LeafRule(given[path], base.role if base is not None else "weight")


def _layout(params: PyTree, layout: Layout | None, filter_axes: Any) -> Layout:
  layout = flax_layout if layout is None else layout
  if filter_axes is None:
    return layout
  if callable(filter_axes):
    return filter_axes
  if not isinstance(filter_axes, Mapping):
    raise ValueError(f"filter_axes must map leaf paths to output axes (e.g. {{'head/w': (0,)}}) or be a layout "
                     f"rule(path, leaf) -> LeafRule; got {type(filter_axes).__name__}")
  names = tree.leaf_names(params)
  unknown = sorted(set(filter_axes) - set(names))
  if unknown:
    raise ValueError(f"filter_axes names leaves the parameters do not have: {unknown}; the leaves are {names}")
  axes = tuple(sorted((k, LeafRule(v).out_axes) for k, v in filter_axes.items()))
  return _WithAxes(layout, axes)


def _how_to(path: str) -> str:
  return (f"pass a rule for it: filter_axes={{{path!r}: (axis, ...)}} (the axes that index its output units; () for "
          "the whole leaf), or layout=rule(path, leaf) -> LeafRule")


def leaf_rules(params: PyTree, layout: Layout | None = None, filter_axes: Any = None) -> list[LeafRule]:
  """The :class:`LeafRule` of every leaf of ``params`` (flattening order); ``ValueError`` names an uncovered leaf."""
  rule_of = _layout(params, layout, filter_axes)
  rules = []
  for name, leaf in zip(tree.leaf_names(params), jax.tree.leaves(params)):
    rule = rule_of(name, leaf)
    if rule is None:
      raise ValueError(f"no layout rule covers parameter leaf {name!r} (shape {tuple(np.shape(leaf))}): filter "
                       f"normalisation does not know which axes index its output units; {_how_to(name)}")
    ndim = np.ndim(leaf)
    if any(not -ndim <= a < ndim for a in rule.out_axes):
      raise ValueError(f"the rule of leaf {name!r} gives out_axes {rule.out_axes} for a leaf of shape "
                       f"{tuple(np.shape(leaf))}; {_how_to(name)}")
    rules.append(rule)
  return rules


def _filter_norms(x: jax.Array, out_axes: tuple[int, ...] | None = None) -> jax.Array:
  """Norm of each filter (one index along ``out_axes``; default the last axis), broadcastable to ``x``.

  ``out_axes=()`` (and the default for ``ndim <= 1``) is the norm of the whole leaf.
  """
  if out_axes is None:
    out_axes = (x.ndim - 1,) if x.ndim >= 2 else ()
  out_axes = tuple(a % x.ndim for a in out_axes)
  if not out_axes:
    return jnp.linalg.norm(x)
  axes = tuple(i for i in range(x.ndim) if i not in out_axes)
  return jnp.sqrt(jnp.sum(jnp.square(x), axis=axes, keepdims=True))


def _kept(rules: Sequence[LeafRule], ignore: str | None) -> list[bool]:
  return [not (ignore == "biasbn" and r.role in ("bias", "norm")) for r in rules]


def normalize(direction: PyTree, params: PyTree, norm: str = "filter", ignore: str | None = "biasbn", *,
              layout: Layout | None = None, filter_axes: Any = None) -> PyTree:
  """Rescales one direction to the scale of ``params``.

  Args:
    direction: pytree like ``params``.
    params: the weights whose scale the direction takes.
    norm: ``filter`` | ``layer`` | ``model`` | ``none`` (see the module doc).
    ignore: ``"biasbn"`` zeroes the direction on biases and normalisation
      parameters (by their layout role); ``None`` keeps them.
    layout: ``rule(path, leaf) -> LeafRule | None`` (default
      :func:`flax_layout`; an objective's is ``obj.layout``).
    filter_axes: ``{leaf path: out_axes}`` overriding the layout for some
      leaves (paths as in :func:`jaxscape.tree.leaf_names`), or a layout.

  Returns:
    The normalised direction, a pytree like ``params``.

  Raises:
    ValueError: for a leaf no rule covers, or when ``ignore`` leaves nothing
      to move (the direction would be all zero).
  """
  if norm not in NORMS:
    raise ValueError(f"unknown norm {norm!r}: expected one of {NORMS}")
  if ignore not in IGNORES:
    raise ValueError(f"unknown ignore policy {ignore!r}: expected one of {IGNORES}")
  rules = leaf_rules(params, layout, filter_axes)
  kept = _kept(rules, ignore)
  leaves_p = jax.tree.leaves(params)
  if not any(k and np.size(p) for k, p in zip(kept, leaves_p)):
    names = tree.leaf_names(params)
    raise ValueError(f"ignore={ignore!r} leaves no parameter to move (roles: "
                     f"{dict(zip(names, [r.role for r in rules]))}): the direction would be all zero and the surface "
                     f"flat. Pass ignore=None, or mark the weights as such: {_how_to(names[0])}")
  treedef = jax.tree.structure(params)
  leaves_d = [d if k else jnp.zeros_like(d) for d, k in zip(treedef.flatten_up_to(direction), kept)]
  direction = jax.tree.unflatten(treedef, leaves_d)
  if norm == "none":
    return direction
  if norm == "model":
    kept_p = jax.tree.unflatten(treedef, [p if k else jnp.zeros_like(p) for p, k in zip(leaves_p, kept)])
    return tree.scale(tree.norm(kept_p) / (tree.norm(direction) + _EPS), direction)
  if norm == "layer":
    return jax.tree.map(lambda d, p: d * (jnp.linalg.norm(p) / (jnp.linalg.norm(d) + _EPS)), direction, params)
  out = [d * (_filter_norms(p, r.out_axes) / (_filter_norms(d, r.out_axes) + _EPS))
         for d, p, r in zip(leaves_d, leaves_p, rules)]
  return jax.tree.unflatten(treedef, out)


def layout_record(layout: Layout | None, filter_axes: Any) -> dict[str, Any]:
  """What :attr:`Directions.info` records of a layout: nothing for the default."""
  out = {}
  if layout is not None and layout is not flax_layout:
    out["layout"] = getattr(layout, "__name__", type(layout).__name__)
  if filter_axes is not None:
    out["filter_axes"] = ({k: list(LeafRule(v).out_axes) for k, v in sorted(filter_axes.items())}
                          if isinstance(filter_axes, Mapping) else getattr(filter_axes, "__name__", "custom"))
  return out


def random_directions(
    key: jax.Array,
    params: PyTree,
    n: int = 2,
    *,
    norm: str = "filter",
    ignore: str | None = "biasbn",
    orthogonalize: bool = False,
    layout: Layout | None = None,
    filter_axes: Any = None,
) -> Directions:
  """``n`` random Gaussian directions, normalised to the weights.

  Each direction ``i`` is drawn from ``jax.random.fold_in(key, i)``, so the
  first direction of a 2-D plot equals the direction of a 1-D plot made from
  the same key.

  Args:
    key: a ``jax.random.key``.
    params: the weights (a pytree of arrays).
    n: number of directions (1 for a curve, 2 for a surface).
    norm: ``filter`` (Li et al. 2018) | ``layer`` | ``model`` | ``none``.
    ignore: ``"biasbn"`` zeroes directions on biases and normalisation
      parameters (by role); ``None`` keeps them.
    orthogonalize: make each direction orthogonal to the previous ones
      (Gram-Schmidt after normalisation, then a global rescale back to the
      direction's normalised norm). Per-filter norms then hold only
      approximately; random directions in high dimension are nearly
      orthogonal anyway, so the change is small.
    layout: the per-leaf rule of the model's library (``obj.layout``;
      default :func:`flax_layout`).
    filter_axes: ``{leaf path: out_axes}`` for leaves the layout does not
      cover or gets wrong (see :func:`normalize`).

  Returns:
    :class:`Directions` with ``vectors`` of leading axis ``n``.

  Raises:
    ValueError: for a leaf no rule covers, or a direction that comes out all zero.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> params = {"kernel": jnp.ones((3, 2)), "bias": jnp.ones(2)}
    >>> d = random_directions(jax.random.key(0), params, n=1)[0]
    >>> [round(float(x), 4) for x in jnp.linalg.norm(d["kernel"], axis=0)]
    [1.7321, 1.7321]
  """
  if not isinstance(n, int) or n < 1:
    raise ValueError(f"n must be a positive integer; got {n!r}")
  out = []
  for i in range(n):
    d = normalize(tree.normal_like(jax.random.fold_in(key, i), params), params, norm, ignore, layout=layout,
                  filter_axes=filter_axes)
    if orthogonalize and out:
      length = tree.norm(d)
      for u in out:
        d = tree.axpy(-tree.dot(d, u) / tree.dot(u, u), u, d)
      d = tree.scale(length / (tree.norm(d) + _EPS), d)
    check_nonzero(d, i)
    out.append(d)
  info = {"kind": "random", "key": key_record(key), "norm": norm, "ignore": ignore, "orthogonalize": orthogonalize,
          **layout_record(layout, filter_axes)}
  return Directions(tree.stack(out), info)


def check_nonzero(d: PyTree, i: int) -> None:
  """Raises (``ValueError``) when a (concrete) direction is all zero: its surface would be flat, silently."""
  norm = tree.norm(d)
  if isinstance(norm, jax.core.Tracer) or float(norm) != 0.0:
    return
  raise ValueError(f"direction {i} is all zero on every leaf {tree.leaf_names(d)}: the weights it is normalised to "
                   "are zero where it may move; the surface would be flat. Pass norm='none' or 'model', "
                   "or other parameters")


def _state_difference(state_b: PyTree, state_a: PyTree) -> PyTree:
  """``sb − sa`` on floating leaves; a scalar 0 stands for leaves that never move."""
  def diff(b, a):
    if jnp.issubdtype(jnp.asarray(a).dtype, jnp.floating):
      return jnp.asarray(b) - jnp.asarray(a)
    return jnp.zeros((), jnp.float32)

  return jax.tree.map(diff, state_b, state_a)


def _bn_policy(states: Sequence[PyTree | None]) -> tuple[str, PyTree | None]:
  if all(s is None for s in states):
    return "frozen", None
  if any(s is None for s in states):
    raise ValueError("give the state of every endpoint (or of none): the BatchNorm statistics are interpolated together")
  return "interpolate", [_state_difference(s, states[0]) for s in states[1:]]


def move_state(state: PyTree, coefficients: jax.Array, state_vectors: PyTree) -> PyTree:
  """``state + Σ_j c_j s_j`` on floating leaves; other leaves (RNG counters, keys) unchanged."""
  def move(s, v):
    if not jnp.issubdtype(jnp.asarray(s).dtype, jnp.floating):
      return s
    return (s + jnp.tensordot(coefficients.astype(v.dtype), v, axes=1)).astype(s.dtype)

  return jax.tree.map(move, state, state_vectors)


def interpolation_direction(params_a: PyTree, params_b: PyTree, state_a: PyTree | None = None,
                            state_b: PyTree | None = None) -> Directions:
  """The direction ``θb − θa``: coordinate 0 is ``θa``, coordinate 1 is ``θb``.

  Evaluate it from ``params_a`` (e.g. ``x=(-0.5, 1.5, 401)`` as in Li et al.)
  for the 1-D plot from one solution to another. Never normalised. For
  networks with BatchNorm, give both models' states: the statistics are then
  interpolated too (policy ``interpolate``), so that coordinate 1 is exactly
  model b; with the statistics frozen at a's, it is not.
  """
  tree.check_same_structure(params_a, params_b, "the two parameter sets (models a and b)")
  direction = tree.sub(params_b, params_a)
  if float(tree.norm(direction)) == 0.0:
    raise ValueError("the two parameter sets are equal: the direction from a to b is zero (the same checkpoint twice?)")
  policy, svecs = _bn_policy([state_a, state_b])
  return Directions(tree.stack([direction]), {"kind": "interpolation", "bn_policy": policy},
                    None if svecs is None else tree.stack(svecs))


def plane_directions(params_a: PyTree, params_b: PyTree, params_c: PyTree, *, orthogonalize: bool = False,
                     states: Sequence[PyTree] | None = None) -> Directions:
  """The plane through three parameter sets, with origin ``θa``.

  Without orthogonalisation the directions are ``(θb − θa, θc − θa)``, so
  ``θb`` sits at (1, 0) and ``θc`` at (0, 1). With it (Garipov et al. 2018)
  the second direction is made orthogonal to the first (Gram-Schmidt, no
  rescaling), and ``θc`` sits at ``(⟨u,v⟩/⟨u,u⟩, 1)``. ``states`` (the
  three models' states) interpolates BatchNorm statistics over the plane
  in the same coordinates.
  """
  tree.check_same_structure(params_a, params_b, "the parameter sets a and b")
  tree.check_same_structure(params_a, params_c, "the parameter sets a and c")
  u, v = tree.sub(params_b, params_a), tree.sub(params_c, params_a)
  nu, nv = float(tree.norm(u)), float(tree.norm(v))
  if nu == 0.0 or nv == 0.0 or abs(float(tree.dot(u, v))) >= (1 - 1e-6) * nu * nv:
    raise ValueError("the three parameter sets do not span a plane (two are equal, or the three lie on one line): "
                     f"|b - a| = {nu:.3g}, |c - a| = {nv:.3g}; give three different, non-collinear points")
  policy, svecs = _bn_policy(list(states) if states is not None else [None] * 3)
  if orthogonalize:
    coef = -tree.dot(v, u) / tree.dot(u, u)
    v = tree.axpy(coef, u, v)
    if svecs is not None:
      svecs[1] = jax.tree.map(lambda b, a: b + coef.astype(b.dtype) * a, svecs[1], svecs[0])
  return Directions(tree.stack([u, v]), {"kind": "plane", "orthogonalize": orthogonalize, "bn_policy": policy},
                    None if svecs is None else tree.stack(svecs))


@dataclasses.dataclass(frozen=True)
class PCADirections:
  """PCA of a parameter trajectory.

  Attributes:
    directions: unit-norm principal directions (:class:`Directions`).
    explained_variance_ratio: share of the trajectory's variance per direction.
    coords: ``[num_snapshots, n]`` coordinates of each snapshot relative to
      the final parameters (``⟨θ_i − θ_final, d_j⟩``, the "cos" projection).
    residuals: ``[num_snapshots]`` distance of each snapshot from the plane,
      ``‖θ_i − θ_final − Σ_j c_ij d_j‖`` (how far off the plot it lies).
  """

  directions: Directions
  explained_variance_ratio: np.ndarray
  coords: np.ndarray
  residuals: np.ndarray


def pca_directions(snapshots: Sequence[PyTree], final: PyTree | None = None, n: int = 2, *,
                   ignore: str | None = "biasbn", layout: Layout | None = None) -> PCADirections:
  """Principal directions of a training trajectory (Li et al. 2018, Sec. 7).

  Rows ``θ_i − θ_final`` are centred and decomposed by SVD (as
  ``sklearn.decomposition.PCA`` does); plot the surface around ``final``
  with the returned directions and overlay ``coords``.

  Args:
    snapshots: parameter pytrees along training (at least ``n + 1``).
    final: the point the plot is centred on (default: the last snapshot).
    n: number of principal directions.
    ignore: ``"biasbn"`` leaves biases and norm parameters out of the PCA (zero there).
    layout: the per-leaf rule giving each leaf's role (default :func:`flax_layout`).
  """
  if len(snapshots) < n + 1:
    raise ValueError(f"PCA of {n} directions needs at least {n + 1} snapshots; got {len(snapshots)}")
  final = snapshots[-1] if final is None else final
  rows = [normalize(tree.sub(s, final), final, "none", ignore, layout=layout) for s in snapshots]
  flat = jnp.stack([tree.ravel(r)[0] for r in rows])
  _, unravel = tree.ravel(final)
  centred = flat - flat.mean(axis=0, keepdims=True)
  _, s, vt = jnp.linalg.svd(centred, full_matrices=False)
  var = s**2
  ratio = np.asarray(var[:n] / jnp.sum(var))
  comps = vt[:n]
  coords = flat @ comps.T
  resid = jnp.linalg.norm(flat - coords @ comps, axis=1)
  # re-apply the ignore mask: the SVD leaves round-off in the ignored leaves
  dirs = Directions(tree.stack([normalize(unravel(c), final, "none", ignore, layout=layout) for c in comps]), {"kind": "pca", "num_snapshots": len(snapshots), "ignore": ignore,
                                                              "explained_variance_ratio": ratio.tolist()})
  return PCADirections(dirs, ratio, np.asarray(coords), np.asarray(resid))
