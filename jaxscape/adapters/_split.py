"""The pure form of a model that every adapter returns (its own module, so the adapters need not import
their package)."""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

from ..tree import PyTree


class Split(NamedTuple):
  """A model in pure form.

  Attributes:
    apply: ``apply(params, state, x) -> outputs`` in eval mode (hashable).
    params: the trainable parameters.
    state: everything else the model holds (BatchNorm statistics, RNG state).
    layout: ``rule(path, leaf) -> LeafRule | None`` for filter normalisation.
  """

  apply: Callable[[PyTree, PyTree, Any], Any]
  params: PyTree
  state: PyTree
  layout: Callable
