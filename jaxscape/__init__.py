"""jaxscape: loss-landscape analysis of neural networks in JAX."""

from . import tree as tree
from . import objective as objective
from .objective import Objective as Objective
from .objective import FirstLayer as FirstLayer
from .objective import DataError as DataError
from . import adapters as adapters
from . import directions as directions
from .directions import Directions as Directions
from .directions import LeafRule as LeafRule
from .directions import random_directions as random_directions
from .directions import interpolation_direction as interpolation_direction
from .directions import plane_directions as plane_directions
from .directions import pca_directions as pca_directions
from .hessian import hessian_directions as hessian_directions
from . import io as io
from .io import save as save
from . import surface as surface
from .surface import Surface as Surface
from .surface import loss_surface as loss_surface
from .surface import load_surface as load_surface
from .surface import merge_surfaces as merge_surfaces
from . import distributed as distributed
from . import spectral as spectral
from . import hessian as hessian
from . import sharpness as sharpness
from . import critical as critical
from . import newton as newton
from . import paths as paths
from . import data as data
from . import models as models
from . import train as train
from . import testfns as testfns
from . import stats as stats

__version__ = "0.1.0"

_LAZY = ("plot", "cli", "checkpoint", "experiment")


def __getattr__(name: str):
  """Imports the matplotlib- and orbax-heavy submodules (plot, cli, checkpoint, experiment) on first use."""
  if name in _LAZY:
    import importlib

    return importlib.import_module(f"{__name__}.{name}")
  raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
