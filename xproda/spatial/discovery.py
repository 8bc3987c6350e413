"""Discovery of horizontal grids: spatial dims, latitude/longitude, CRS and grid kind.

The bottom of :mod:`xproda.spatial`: the other modules describe their input with
:func:`describe_grid` (a :class:`Grid` of one of the four kinds listed in
:mod:`xproda.spatial`). Only coordinates are read, never (dask) data.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import xarray as xr

from xproda import conventions

__all__ = [
    "NON_SPATIAL_DIMS",
    "spatial_dims",
    "lat_lon",
    "Grid",
    "describe_grid",
    "get_crs",
    "find_lat_lon_names",
    "coord_degrees",
    "to_lonlat",
    "from_lonlat",
    "object_label",
]


#: Dimension names that are never horizontal.
NON_SPATIAL_DIMS: frozenset[str] = frozenset(
    {
        "month", "layer", "pool", "parameter", "member", "time", "chain", "draw",
        "depth", "level", "lev", "band", "bnds", "bounds", "nv", "nbnd", "vertices",
        "nvertex", "component", "sample",
    }
)


_Y_NAMES = ("lat", "latitude", "nav_lat", "y", "rlat", "lats", "yc", "south_north")
_X_NAMES = ("lon", "longitude", "nav_lon", "x", "rlon", "lons", "xc", "west_east")
_LAT_COORD_NAMES = ("lat", "latitude", "nav_lat", "lats", "xlat", "tlat", "lat2d")
_LON_COORD_NAMES = ("lon", "longitude", "nav_lon", "lons", "xlong", "tlon", "lon2d")
_UNSTRUCTURED_NAMES = (
    "site", "sites", "cell", "cells", "ncol", "ncells", "ncell", "gridcell", "column",
    "point", "points", "profile", "location", "station", "ncells_domain",
)


def object_label(obj: xr.DataArray | xr.Dataset) -> str:
    """How messages name ``obj``: ``DataArray '<name>'``, ``DataArray`` or ``Dataset``."""
    if isinstance(obj, xr.DataArray):
        return f"DataArray {obj.name!r}" if obj.name is not None else "DataArray"
    return "Dataset"


def _is_spatial_candidate(dim: Hashable) -> bool:
    return str(dim).lower() not in NON_SPATIAL_DIMS


def _cf_dict(obj: xr.DataArray | xr.Dataset, attr: str) -> Mapping[str, list[str]]:
    try:
        import cf_xarray  # noqa: F401  (registers .cf)

        return getattr(obj.cf, attr)
    except Exception:  # pragma: no cover - cf-xarray is a dependency
        return {}


def _coord_dims(obj: xr.DataArray | xr.Dataset, names: list[str]) -> list[tuple[str, ...]]:
    out = []
    for n in names:
        if n in obj.coords or (isinstance(obj, xr.Dataset) and n in obj.variables):
            dims = tuple(str(d) for d in obj[n].dims)
            if dims and all(d in obj.dims and _is_spatial_candidate(d) for d in dims):
                out.append(dims)
    return out


def _order_yx(dims: tuple[str, ...]) -> tuple[str, ...]:
    """Order two dims of a 2-D lat/lon coordinate as (Y, X) when the names tell."""
    a, b = dims
    if a.lower() in _X_NAMES and b.lower() in _Y_NAMES:
        return (b, a)
    return (a, b)


def _dims_from_latlon(
    obj: xr.DataArray | xr.Dataset, lat: list[str], lon: list[str]
) -> tuple[str, ...] | None:
    ld, od = _coord_dims(obj, lat), _coord_dims(obj, lon)
    if len(set(ld)) != 1 or len(set(od)) != 1:
        return None
    ld0, od0 = ld[0], od[0]
    if len(ld0) == 1 and len(od0) == 1:
        return (ld0[0], od0[0]) if ld0 != od0 else ld0
    if len(ld0) == 2 and set(ld0) == set(od0):
        return _order_yx(ld0)
    return None


def spatial_dims(obj: xr.DataArray | xr.Dataset) -> tuple[str, ...]:
    """Horizontal dims of ``obj``, in (Y, X) order, whatever their names.

    Lookup order:

    1. cf-xarray: coordinates with ``axis`` Y/X or standard names
       ``projection_y_coordinate``/``projection_x_coordinate``; then latitude/longitude
       coordinates (``standard_name``, ``units="degrees_north"``, ...), 1-D or 2-D.
    2. Common names: dims ``lat``/``latitude``/``nav_lat``/``y``/``rlat`` and
       ``lon``/``longitude``/``nav_lon``/``x``/``rlon`` (case-insensitive), or 2-D
       coordinates named ``lat``/``nav_lat``... .
    3. rioxarray's ``rio.y_dim``/``rio.x_dim`` when a CRS is present.
    4. A single unstructured horizontal dim (``site``, ``cell``, ``ncol``, ``gridcell``,
       ...): returned alone.

    Dims such as ``month``, ``layer``, ``pool``, ``parameter``, ``member`` and ``time``
    (:data:`NON_SPATIAL_DIMS`) are never spatial.

    Parameters
    ----------
    obj : xarray.DataArray or xarray.Dataset

    Returns
    -------
    tuple of str
        ``(y_dim, x_dim)`` or ``(dim,)`` for unstructured grids.

    Raises
    ------
    ValueError
        If no horizontal dims can be identified; the message lists the dims seen.

    Examples
    --------
    >>> import numpy as np, xarray as xr
    >>> da = xr.DataArray(np.zeros((12, 3, 4)), dims=("month", "latitude", "longitude"))
    >>> spatial_dims(da)
    ('latitude', 'longitude')
    """
    dims = [str(d) for d in obj.dims]
    # 1. cf-xarray
    axes = _cf_dict(obj, "axes")
    ys = {d for c in _coord_dims(obj, list(axes.get("Y", []))) if len(c) == 1 for d in c}
    xs = {d for c in _coord_dims(obj, list(axes.get("X", []))) if len(c) == 1 for d in c}
    if len(ys) == 1 and len(xs) == 1 and ys != xs:
        return (ys.pop(), xs.pop())
    coords = _cf_dict(obj, "coordinates")
    if coords.get("latitude") and coords.get("longitude"):
        found = _dims_from_latlon(obj, list(coords["latitude"]), list(coords["longitude"]))
        if found:
            return found
    # 2. common names
    low = {d.lower(): d for d in dims if _is_spatial_candidate(d)}
    y = next((low[n] for n in _Y_NAMES if n in low), None)
    x = next((low[n] for n in _X_NAMES if n in low), None)
    if y is not None and x is not None:
        return (y, x)
    lat = [str(c) for c in obj.coords if str(c).lower() in _LAT_COORD_NAMES]
    lon = [str(c) for c in obj.coords if str(c).lower() in _LON_COORD_NAMES]
    if lat and lon:
        found = _dims_from_latlon(obj, lat[:1], lon[:1])
        if found:
            return found
    # 3. rioxarray
    if get_crs(obj) is not None:
        try:
            import rioxarray  # noqa: F401

            yd, xd = str(obj.rio.y_dim), str(obj.rio.x_dim)
            if yd in dims and xd in dims:
                return (yd, xd)
        except Exception:
            pass
    # 4. unstructured
    un = [d for d in dims if d.lower() in _UNSTRUCTURED_NAMES]
    if len(un) == 1:
        return (un[0],)
    raise ValueError(
        f"could not identify the horizontal (spatial) dims of {object_label(obj)}: dims seen "
        f"{tuple(dims)}. Expected latitude/longitude or projection_y/x coordinates "
        "(CF attrs standard_name/axis/units), common names (lat/lon, latitude/longitude, "
        "y/x, rlat/rlon), a CRS (rioxarray spatial_ref), or a single unstructured dim "
        f"({', '.join(_UNSTRUCTURED_NAMES[:6])}, ...). Rename the dims or add CF attrs."
    )


def get_crs(obj: xr.DataArray | xr.Dataset) -> Any:
    """The CRS of ``obj`` as a :class:`pyproj.CRS`, or ``None``.

    Read from the grid-mapping variable (rioxarray's ``spatial_ref`` coordinate, or the
    variable named by a ``grid_mapping`` attribute/encoding): ``crs_wkt``/``spatial_ref``
    attrs, else the CF grid-mapping attrs.
    """
    names: list[str] = []
    sources = [obj] if isinstance(obj, xr.DataArray) else [obj, *obj.data_vars.values()]
    for v in sources:
        for d in (v.attrs, v.encoding):
            gm = d.get("grid_mapping")
            if isinstance(gm, str):
                names.append(gm.split(":")[0].strip())
    names += ["spatial_ref", "crs", "grid_mapping"]
    seen = set()
    for n in names:
        if n in seen:
            continue
        seen.add(n)
        if n in obj.coords or (isinstance(obj, xr.Dataset) and n in obj.variables):
            attrs = obj[n].attrs
            if not any(k in attrs for k in ("crs_wkt", "spatial_ref", "grid_mapping_name")):
                continue
            import pyproj

            wkt = attrs.get("crs_wkt", attrs.get("spatial_ref"))
            try:
                return pyproj.CRS.from_user_input(wkt) if wkt else pyproj.CRS.from_cf(dict(attrs))
            except pyproj.exceptions.CRSError as err:
                raise ValueError(f"invalid CRS in grid-mapping variable {n!r}: {err}") from err
    return None


@dataclass(frozen=True)
class Grid:
    """A horizontal grid: its kind, dims, coordinate names and CRS (see :func:`describe_grid`)."""
    kind: str  # "latlon", "projected", "curvilinear", "unstructured"
    dims: tuple[str, ...]
    lat: str | None  # latitude coordinate name (latlon: along dims[0])
    lon: str | None  # longitude coordinate name (latlon: along dims[1])
    y: str | None = None  # projected: y coordinate along dims[0]
    x: str | None = None
    crs: Any = None


def find_lat_lon_names(obj: xr.DataArray | xr.Dataset) -> tuple[str | None, str | None]:
    """Names of the latitude and longitude coordinates of ``obj``, or ``None``."""
    coords = _cf_dict(obj, "coordinates")
    lat = [c for c in coords.get("latitude", []) if c in obj.coords]
    lon = [c for c in coords.get("longitude", []) if c in obj.coords]
    if not lat:
        lat = [str(c) for c in obj.coords if str(c).lower() in _LAT_COORD_NAMES]
    if not lon:
        lon = [str(c) for c in obj.coords if str(c).lower() in _LON_COORD_NAMES]
    return (lat[0] if lat else None), (lon[0] if lon else None)


def describe_grid(obj: xr.DataArray | xr.Dataset) -> Grid:
    """The :class:`Grid` of ``obj`` (kind, dims, coordinate names, CRS); ValueError if none."""
    dims = spatial_dims(obj)
    crs = get_crs(obj)
    lat, lon = find_lat_lon_names(obj)
    if len(dims) == 1:
        (d,) = dims
        if lat and lon and obj[lat].dims == (d,) and obj[lon].dims == (d,):
            return Grid("unstructured", dims, lat, lon, crs=crs)
        raise ValueError(
            f"{object_label(obj)} has the unstructured horizontal dim {d!r} but no 1-D latitude/"
            f"longitude coordinates along it (coords seen: {list(map(str, obj.coords))})"
        )
    ydim, xdim = dims
    if lat and lon and obj[lat].dims == (ydim,) and obj[lon].dims == (xdim,):
        return Grid("latlon", dims, lat, lon, crs=crs)
    has_yx = ydim in obj.coords and xdim in obj.coords
    if crs is not None and has_yx and obj[ydim].ndim == 1 and obj[xdim].ndim == 1:
        if crs.is_geographic:
            return Grid("latlon", dims, ydim, xdim, crs=crs)
        aux = lat and lon and set(obj[lat].dims) == {ydim, xdim} and obj[lon].dims == obj[lat].dims
        return Grid(
            "projected", dims, lat if aux else None, lon if aux else None, ydim, xdim, crs
        )
    if lat and lon and set(obj[lat].dims) == {ydim, xdim} and obj[lon].dims == obj[lat].dims:
        return Grid("curvilinear", dims, lat, lon, crs=crs)
    raise ValueError(
        f"{object_label(obj)}: found horizontal dims {dims} but no usable coordinates: expected "
        f"1-D latitude/longitude coordinates on {ydim!r}/{xdim!r}, 2-D latitude/longitude on "
        f"({ydim!r}, {xdim!r}), or 1-D {ydim!r}/{xdim!r} coordinates with a CRS "
        f"(coords seen: {list(map(str, obj.coords))}; CRS: {crs})"
    )


def coord_degrees(obj: xr.DataArray | xr.Dataset, name: str) -> xr.DataArray:
    """Coordinate ``name`` of ``obj`` in degrees (converted when its units are radians)."""
    c = obj[name]
    units = str(c.attrs.get("units", "")).lower()
    if units.startswith("rad"):
        c = np.rad2deg(c)
    return c


def lat_lon(obj: xr.DataArray | xr.Dataset) -> tuple[xr.DataArray, xr.DataArray]:
    """Latitude and longitude of the grid cell centres, in degrees.

    Parameters
    ----------
    obj : xarray.DataArray or xarray.Dataset
        Object on a geographic (1-D or 2-D coordinates), projected (1-D ``y``/``x`` with a
        CRS) or unstructured grid.

    Returns
    -------
    (lat, lon) : tuple of xarray.DataArray
        Degrees north and degrees east. The object's own coordinates when it has
        latitude/longitude coordinates (1-D on their dims, or 2-D); for projected grids
        without them, 2-D arrays on ``(y, x)`` computed with pyproj from the CRS to
        longitude/latitude on the CRS's datum (NumPy; coordinates are small).

    Raises
    ------
    ValueError
        If neither latitude/longitude coordinates nor a CRS are found.

    Examples
    --------
    >>> import numpy as np, xarray as xr
    >>> da = xr.DataArray(np.zeros((2, 3)), coords={"lat": [-45.0, 45.0], "lon": [0.0, 120, 240]})
    >>> lat, lon = lat_lon(da)
    >>> lat.values.tolist(), lon.values.tolist()
    ([-45.0, 45.0], [0.0, 120.0, 240.0])
    """
    g = describe_grid(obj)
    if g.lat is not None and g.lon is not None:
        return coord_degrees(obj, g.lat), coord_degrees(obj, g.lon)
    # projected without lat/lon coordinates
    ydim, xdim = g.dims
    yv, xv = np.asarray(obj[g.y].values, float), np.asarray(obj[g.x].values, float)
    lon2, lat2 = to_lonlat(g.crs, *np.meshgrid(xv, yv))
    coords = {ydim: obj[ydim].variable, xdim: obj[xdim].variable}
    lat = xr.DataArray(lat2, dims=(ydim, xdim), coords=coords, name="lat",
                       attrs=conventions.attrs("lat", section="spatial"))
    lon = xr.DataArray(lon2, dims=(ydim, xdim), coords=coords, name="lon",
                       attrs=conventions.attrs("lon", section="spatial"))
    return lat, lon


def to_lonlat(crs: Any, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Projected ``x, y`` -> longitude, latitude (degrees) on the CRS's geodetic datum."""
    import pyproj

    t = pyproj.Transformer.from_crs(crs, crs.geodetic_crs, always_xy=True)
    lon, lat = t.transform(x, y)
    lon, lat = np.asarray(lon, float), np.asarray(lat, float)
    bad = ~np.isfinite(lon) | ~np.isfinite(lat) | (np.abs(lat) > 90)
    return np.where(bad, np.nan, lon), np.where(bad, np.nan, lat)


def from_lonlat(crs: Any, lon: np.ndarray, lat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Longitude, latitude (degrees, EPSG:4326) -> projected ``x, y`` in ``crs``."""
    import pyproj

    t = pyproj.Transformer.from_crs("EPSG:4326", crs, always_xy=True)
    x, y = t.transform(lon, lat)
    return np.asarray(x, float), np.asarray(y, float)
