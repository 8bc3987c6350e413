"""Grid-cell areas (m2) of geographic, projected, curvilinear and unstructured grids."""

from __future__ import annotations

from typing import Any

import numpy as np
import xarray as xr

from xproda import conventions
from xproda.spatial.bounds import bounds_array, bounds_data, edges_1d
from xproda.spatial.discovery import coord_degrees, describe_grid, to_lonlat
from xproda.spatial.sphere import EARTH_RADIUS, authalic, polygon_excess, unit_vectors

__all__ = ["cell_area"]


def _lon_widths(obj: xr.DataArray | xr.Dataset, name: str) -> Any:
    """Longitude cell widths in degrees (from bounds, else from unwrapped centres).

    NumPy, or dask when the bounds are dask-backed (they are not loaded).
    """
    b = bounds_data(obj, name, "longitude")
    if b is not None:
        d = np.abs(b[:, -1] - b[:, 0])
        return np.where((d > 180) & (d < 360), 360 - d, d)
    c = np.unwrap(np.asarray(coord_degrees(obj, name).values, float), period=360.0)
    return np.abs(np.diff(edges_1d(c, name)))


def _lat_sin_widths(obj: xr.DataArray | xr.Dataset, name: str) -> Any:
    """``|sin(lat2) - sin(lat1)|`` of latitude bands (edges clipped to [-90, 90]).

    NumPy, or dask when the bounds are dask-backed (they are not loaded).
    """
    b = bounds_data(obj, name, "latitude")
    if b is not None:
        e1, e2 = b[:, 0], b[:, -1]
    else:
        e = edges_1d(np.asarray(coord_degrees(obj, name).values, float), name)
        e1, e2 = e[:-1], e[1:]
    s1, s2 = (np.sin(np.deg2rad(np.clip(e, -90, 90))) for e in (e1, e2))
    return np.abs(s2 - s1)


def _corners_2d(p: np.ndarray) -> np.ndarray:
    """Corner points ``(ny+1, nx+1, 3)`` of cells with centre points ``p (ny, nx, 3)``.

    Linear extrapolation by one row/column, then the mean of the four surrounding points.
    """
    if p.shape[0] < 2 or p.shape[1] < 2:
        raise ValueError("need at least 2 x 2 cells to infer cell corners; add CF bounds")
    q = np.concatenate([2 * p[:1] - p[1:2], p, 2 * p[-1:] - p[-2:-1]], axis=0)
    q = np.concatenate([2 * q[:, :1] - q[:, 1:2], q, 2 * q[:, -1:] - q[:, -2:-1]], axis=1)
    return 0.25 * (q[1:, 1:] + q[:-1, 1:] + q[1:, :-1] + q[:-1, :-1])


def _quads(c: np.ndarray) -> np.ndarray:
    """Cell polygons ``(ny, nx, 4, ...)`` from corner grid ``c (ny+1, nx+1, ...)``."""
    return np.stack([c[:-1, :-1], c[:-1, 1:], c[1:, 1:], c[1:, :-1]], axis=2)


def _spatial_coords(obj: xr.DataArray | xr.Dataset, dims: tuple[str, ...]) -> dict:
    return {
        k: v.variable
        for k, v in obj.coords.items()
        if set(v.dims) <= set(dims) and (v.dims or str(k) in ("spatial_ref", "crs"))
    }


_AREA_ATTRS = conventions.attrs("cell_area", section="spatial")


def cell_area(obj: xr.DataArray | xr.Dataset, *, radius: float = EARTH_RADIUS) -> xr.DataArray:
    """Area of every grid cell, in m2.

    Methods by grid kind:

    * **Geographic, 1-D lat/lon** (regular or irregular): cells are lat/lon rectangles on
      a sphere of radius ``radius``: ``A = R**2 * dlon_rad * |sin(lat2) - sin(lat1)|``,
      exact for such cells. Edges come from the CF bounds variables (``bounds`` attribute,
      ``cf.get_bounds``, or ``lat_bnds``/``lat_bounds``) if present, else midway between
      centres, extended half a step at both ends and clipped to [-90, 90]. Works for
      ascending or descending latitudes and any longitude convention.
    * **Projected** (1-D ``y``/``x`` with a projected CRS): cell edges midway between
      centres (or CF bounds) are transformed with pyproj to longitude/latitude on the CRS's
      datum; each cell is measured as a geodesic quadrilateral on the CRS's ellipsoid, via
      the authalic (equal-area) sphere: corners map to authalic latitude and the cell area
      is ``R_q**2`` times the spherical excess. The CRS's ellipsoid, not ``radius``, is
      used, since the projected coordinates are defined on it (an equal-area projection
      gives ``dx * dy``). Cells outside the projection's domain get NaN.
    * **Curvilinear** (2-D lat/lon, no CRS): cell polygons from CF vertex bounds
      ``(y, x, 4)`` if present, else corners averaged from the neighbouring centres
      (extrapolated at the edges); spherical-excess area on the sphere of ``radius``.
    * **Unstructured**: needs CF vertex bounds ``(cell, nv)``; polygon area on the sphere.

    Parameters
    ----------
    obj : xarray.DataArray or xarray.Dataset
        Only its coordinates (and bounds variables of a Dataset) are read.
    radius : float
        Sphere radius in m for geographic grids. Default :data:`EARTH_RADIUS`
        (6,371,220 m, CESM ``SHR_CONST_REARTH``).

    Returns
    -------
    xarray.DataArray
        ``cell_area`` on the spatial dims, units ``m2``, with the spatial coordinates of
        ``obj``. NumPy-backed, except on geographic grids whose CF bounds are dask-backed
        (e.g. after ``Dataset.chunk``): then a lazy dask array. Dask-backed bounds or 2-D
        coordinates of projected, curvilinear and unstructured grids are loaded (they are
        small).

    Examples
    --------
    >>> import numpy as np, xarray as xr
    >>> lat = np.arange(-89.5, 90, 1.0); lon = np.arange(0.5, 360, 1.0)
    >>> da = xr.DataArray(np.zeros((180, 360)), coords={"lat": lat, "lon": lon})
    >>> a = cell_area(da)
    >>> bool(np.isclose(a.sum(), 4 * np.pi * EARTH_RADIUS**2, rtol=1e-12))
    True
    """
    g = describe_grid(obj)
    if g.kind == "latlon":
        # dask-backed bounds (e.g. after Dataset.chunk) give a lazy area
        area = radius**2 * (
            _lat_sin_widths(obj, g.lat)[:, None] * np.deg2rad(_lon_widths(obj, g.lon))[None, :]
        )
    elif g.kind == "projected":
        by = bounds_array(obj, g.y, "projection_y_coordinate")
        bx = bounds_array(obj, g.x, "projection_x_coordinate")
        ey = (
            np.append(by[:, 0], by[-1, -1]) if by is not None
            else edges_1d(np.asarray(obj[g.y].values, float), g.y)
        )
        ex = (
            np.append(bx[:, 0], bx[-1, -1]) if bx is not None
            else edges_1d(np.asarray(obj[g.x].values, float), g.x)
        )
        lon_c, lat_c = to_lonlat(g.crs, *np.meshgrid(ex, ey))
        xi, rq = authalic(lat_c, g.crs)
        area = rq**2 * polygon_excess(_quads(unit_vectors(lon_c, xi)))
    elif g.kind == "curvilinear":
        lat2 = coord_degrees(obj, g.lat).transpose(*g.dims)
        lon2 = coord_degrees(obj, g.lon).transpose(*g.dims)
        blat = bounds_array(obj, g.lat, "latitude")
        blon = bounds_array(obj, g.lon, "longitude")
        if blat is not None and blon is not None:
            if obj[g.lat].dims != g.dims:
                blat, blon = blat.swapaxes(0, 1), blon.swapaxes(0, 1)
            v = unit_vectors(blon, blat)
        else:
            p = unit_vectors(np.asarray(lon2.values, float), np.asarray(lat2.values, float))
            c = _corners_2d(p)
            v = _quads(c / np.linalg.norm(c, axis=-1, keepdims=True))
        area = radius**2 * polygon_excess(v)
    else:  # unstructured
        blat = bounds_array(obj, g.lat, "latitude")
        blon = bounds_array(obj, g.lon, "longitude")
        if blat is None or blon is None:
            raise ValueError(
                f"cannot compute cell areas of the unstructured grid on dim {g.dims[0]!r} "
                f"without CF vertex bounds on {g.lat!r}/{g.lon!r}; pass area= explicitly"
            )
        area = radius**2 * polygon_excess(unit_vectors(blon, blat))
    return xr.DataArray(
        area, dims=g.dims, coords=_spatial_coords(obj, g.dims), name="cell_area",
        attrs=dict(_AREA_ATTRS),
    )
