"""jaxscape: loss-landscape analysis of neural networks in JAX."""

from . import tree as tree
from .objective import Objective as Objective
from .objective import split_nnx as split_nnx

__version__ = "0.1.0"
