"""Horizontal-grid helpers: spatial dims, coordinates, cell areas, totals, sampling, alignment.

Pure functions on xarray objects, used by the ``.proda`` accessor. They accept NumPy- and
dask-backed objects alike and never compute dask data while a graph is built: only the
(small, NumPy) coordinate arrays are read. The one exception is :func:`align_grids` when
it has to reproject, which loads the source data (see there).

Grids come in four kinds, recognised from coordinates, CF attributes and the CRS:

``"latlon"``
    rectilinear geographic grid: 1-D latitude and longitude on two dims (any names, also
    ``y``/``x`` in degrees with a geographic CRS).
``"projected"``
    1-D ``y``/``x`` coordinates in a projected CRS (rioxarray ``spatial_ref`` or a CF
    ``grid_mapping`` variable).
``"curvilinear"``
    2-D latitude/longitude auxiliary coordinates on two dims, no projected CRS.
``"unstructured"``
    one horizontal dim (``site``, ``cell``, ``ncol``, ...) with 1-D latitude/longitude.

One module per concept (the public functions are all importable from here):

:mod:`~xproda.spatial.discovery`
    spatial dims, latitude/longitude, CRS and grid kind (:func:`spatial_dims`,
    :func:`lat_lon`).
:mod:`~xproda.spatial.bounds`
    cell edges: CF bounds variables and edges inferred from centres.
:mod:`~xproda.spatial.sphere`
    geometry on the sphere (:data:`EARTH_RADIUS`, unit vectors, spherical excess).
:mod:`~xproda.spatial.longitude`
    longitude conventions (:func:`normalize_longitude`).
:mod:`~xproda.spatial.areas`
    cell areas (:func:`cell_area`).
:mod:`~xproda.spatial.totals`
    totals over the domain (:func:`global_total`, :func:`stock_units_factor`,
    :func:`fraction`, :func:`land_fraction_of`).
:mod:`~xproda.spatial.sampling`
    values at sites (:func:`sample_sites`).
:mod:`~xproda.spatial.regrid`
    CRS and grid alignment (:func:`ensure_crs`, :func:`align_grids`).
:mod:`~xproda.spatial.cells`
    land-only ``cell`` layout (:func:`to_cells`, :func:`from_cells`).
:mod:`~xproda.spatial.stack`
    covariates from several grids on one target grid (:func:`stack_covariates`), and the
    area-weighted block reductions of nesting grids (:func:`block_mean`,
    :func:`block_fractions`, :func:`block_majority`).
"""

from __future__ import annotations

from xproda.spatial.areas import cell_area
from xproda.spatial.cells import from_cells, to_cells
from xproda.spatial.discovery import NON_SPATIAL_DIMS, lat_lon, spatial_dims
from xproda.spatial.longitude import normalize_longitude
from xproda.spatial.regrid import align_grids, ensure_crs
from xproda.spatial.sampling import sample_sites
from xproda.spatial.sphere import EARTH_RADIUS
from xproda.spatial.stack import block_fractions, block_majority, block_mean, stack_covariates
from xproda.spatial.totals import fraction, global_total, land_fraction_of, stock_units_factor

__all__ = [
    "EARTH_RADIUS",
    "NON_SPATIAL_DIMS",
    "spatial_dims",
    "lat_lon",
    "normalize_longitude",
    "cell_area",
    "global_total",
    "sample_sites",
    "align_grids",
    "ensure_crs",
    "stock_units_factor",
    "fraction",
    "land_fraction_of",
    "to_cells",
    "from_cells",
    "stack_covariates",
    "block_mean",
    "block_fractions",
    "block_majority",
]
