"""Loss surfaces: the loss over 1-D, 2-D (or n-D) grids of directions.

For grid coordinates ``c`` and directions ``d_1 … d_n`` the surface is the
full-data loss at ``θ + Σ_j c_j d_j`` (Li et al. 2018). Three modules:

* :mod:`~jaxscape.surface.grid`: ranges, coordinates, the :class:`Surface`
  result, parts (``part=(i, n)``) and :func:`merge_surfaces`;
* :mod:`~jaxscape.surface.executor`: :func:`loss_surface` — chunks, the device
  mesh, processes, resume and persistence;
* :mod:`~jaxscape.surface.points`: what is computed at every point (loss,
  plane and full curvature, warm starts).

Example:
  >>> from jaxscape.surface import grid_coordinates, parse_range
  >>> grid_coordinates([parse_range("-1:1:3"), parse_range("0:1:2")]).tolist()   # x fastest
  [[-1.0, 0.0], [0.0, 0.0], [1.0, 0.0], [-1.0, 1.0], [0.0, 1.0], [1.0, 1.0]]

See :func:`loss_surface` for a whole surface.
"""

from .executor import WARM_START_MAX_BYTES as WARM_START_MAX_BYTES
from .executor import NonFiniteOriginError as NonFiniteOriginError
from .executor import default_chunk_size as default_chunk_size
from .executor import loss_surface as loss_surface
from .grid import Range as Range
from .grid import Surface as Surface
from .grid import check_host_memory as check_host_memory
from .grid import grid_coordinates as grid_coordinates
from .grid import load_surface as load_surface
from .grid import merge_surfaces as merge_surfaces
from .grid import parse_range as parse_range
from .grid import part_directory as part_directory
from .grid import part_indices as part_indices
from .points import CURVATURES as CURVATURES
from .points import PointSpec as PointSpec

__all__ = ["Surface", "loss_surface", "parse_range", "grid_coordinates", "default_chunk_size", "load_surface",
           "merge_surfaces", "part_directory", "part_indices", "NonFiniteOriginError", "CURVATURES",
           "WARM_START_MAX_BYTES", "Range", "PointSpec", "check_host_memory"]
