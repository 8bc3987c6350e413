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
"""

from __future__ import annotations

import re
from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import xarray as xr

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
    "to_cells",
    "from_cells",
]

#: Earth radius in m used for cell areas on geographic grids: ``SHR_CONST_REARTH`` of the
#: CESM shared constants (``shr_const_mod.F90``), the sphere CLM5 uses for its grid-cell
#: areas. (The original PRODA post-processing, spec §8.1, used 6,371,008.8 m and a
#: trapezoid approximation; pass ``radius=6371008.8`` to use that sphere.)
EARTH_RADIUS: float = 6.37122e6

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


# ---------------------------------------------------------------------------------------
# dims and grid description
# ---------------------------------------------------------------------------------------


def _name(obj: xr.DataArray | xr.Dataset) -> str:
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
    if _get_crs(obj) is not None:
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
        f"could not identify the horizontal (spatial) dims of {_name(obj)}: dims seen "
        f"{tuple(dims)}. Expected latitude/longitude or projection_y/x coordinates "
        "(CF attrs standard_name/axis/units), common names (lat/lon, latitude/longitude, "
        "y/x, rlat/rlon), a CRS (rioxarray spatial_ref), or a single unstructured dim "
        f"({', '.join(_UNSTRUCTURED_NAMES[:6])}, ...). Rename the dims or add CF attrs."
    )


def _get_crs(obj: xr.DataArray | xr.Dataset) -> Any:
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
class _Grid:
    kind: str  # "latlon", "projected", "curvilinear", "unstructured"
    dims: tuple[str, ...]
    lat: str | None  # latitude coordinate name (latlon: along dims[0])
    lon: str | None  # longitude coordinate name (latlon: along dims[1])
    y: str | None = None  # projected: y coordinate along dims[0]
    x: str | None = None
    crs: Any = None


def _find_latlon_names(obj: xr.DataArray | xr.Dataset) -> tuple[str | None, str | None]:
    coords = _cf_dict(obj, "coordinates")
    lat = [c for c in coords.get("latitude", []) if c in obj.coords]
    lon = [c for c in coords.get("longitude", []) if c in obj.coords]
    if not lat:
        lat = [str(c) for c in obj.coords if str(c).lower() in _LAT_COORD_NAMES]
    if not lon:
        lon = [str(c) for c in obj.coords if str(c).lower() in _LON_COORD_NAMES]
    return (lat[0] if lat else None), (lon[0] if lon else None)


def _describe(obj: xr.DataArray | xr.Dataset) -> _Grid:
    dims = spatial_dims(obj)
    crs = _get_crs(obj)
    lat, lon = _find_latlon_names(obj)
    if len(dims) == 1:
        (d,) = dims
        if lat and lon and obj[lat].dims == (d,) and obj[lon].dims == (d,):
            return _Grid("unstructured", dims, lat, lon, crs=crs)
        raise ValueError(
            f"{_name(obj)} has the unstructured horizontal dim {d!r} but no 1-D latitude/"
            f"longitude coordinates along it (coords seen: {list(map(str, obj.coords))})"
        )
    ydim, xdim = dims
    if lat and lon and obj[lat].dims == (ydim,) and obj[lon].dims == (xdim,):
        return _Grid("latlon", dims, lat, lon, crs=crs)
    has_yx = ydim in obj.coords and xdim in obj.coords
    if crs is not None and has_yx and obj[ydim].ndim == 1 and obj[xdim].ndim == 1:
        if crs.is_geographic:
            return _Grid("latlon", dims, ydim, xdim, crs=crs)
        aux = lat and lon and set(obj[lat].dims) == {ydim, xdim} and obj[lon].dims == obj[lat].dims
        return _Grid(
            "projected", dims, lat if aux else None, lon if aux else None, ydim, xdim, crs
        )
    if lat and lon and set(obj[lat].dims) == {ydim, xdim} and obj[lon].dims == obj[lat].dims:
        return _Grid("curvilinear", dims, lat, lon, crs=crs)
    raise ValueError(
        f"{_name(obj)}: found horizontal dims {dims} but no usable coordinates: expected "
        f"1-D latitude/longitude coordinates on {ydim!r}/{xdim!r}, 2-D latitude/longitude on "
        f"({ydim!r}, {xdim!r}), or 1-D {ydim!r}/{xdim!r} coordinates with a CRS "
        f"(coords seen: {list(map(str, obj.coords))}; CRS: {crs})"
    )


def _degrees(obj: xr.DataArray | xr.Dataset, name: str) -> xr.DataArray:
    c = obj[name]
    units = str(c.attrs.get("units", "")).lower()
    if units.startswith("rad"):
        c = np.rad2deg(c)
    return c


# ---------------------------------------------------------------------------------------
# coordinates
# ---------------------------------------------------------------------------------------


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
    g = _describe(obj)
    if g.lat is not None and g.lon is not None:
        return _degrees(obj, g.lat), _degrees(obj, g.lon)
    # projected without lat/lon coordinates
    ydim, xdim = g.dims
    yv, xv = np.asarray(obj[g.y].values, float), np.asarray(obj[g.x].values, float)
    lon2, lat2 = _to_lonlat(g.crs, *np.meshgrid(xv, yv))
    coords = {ydim: obj[ydim].variable, xdim: obj[xdim].variable}
    lat = xr.DataArray(lat2, dims=(ydim, xdim), coords=coords, name="lat",
                       attrs={"standard_name": "latitude", "units": "degrees_north"})
    lon = xr.DataArray(lon2, dims=(ydim, xdim), coords=coords, name="lon",
                       attrs={"standard_name": "longitude", "units": "degrees_east"})
    return lat, lon


def _to_lonlat(crs: Any, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Projected ``x, y`` -> longitude, latitude (degrees) on the CRS's geodetic datum."""
    import pyproj

    t = pyproj.Transformer.from_crs(crs, crs.geodetic_crs, always_xy=True)
    lon, lat = t.transform(x, y)
    lon, lat = np.asarray(lon, float), np.asarray(lat, float)
    bad = ~np.isfinite(lon) | ~np.isfinite(lat) | (np.abs(lat) > 90)
    return np.where(bad, np.nan, lon), np.where(bad, np.nan, lat)


def _from_lonlat(crs: Any, lon: np.ndarray, lat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    import pyproj

    t = pyproj.Transformer.from_crs("EPSG:4326", crs, always_xy=True)
    x, y = t.transform(lon, lat)
    return np.asarray(x, float), np.asarray(y, float)


_CONVENTIONS = ("-180..180", "0..360")


def _wrap(values: Any, convention: str) -> Any:
    """Wrap longitudes (NumPy or xarray, lazily) into [-180, 180) or [0, 360)."""
    lo = -180.0 if convention == "-180..180" else 0.0
    r = (values - lo) % 360.0
    r = r - 360.0 * (r >= 360.0)  # x % 360 rounds to 360 for tiny negative x
    return r + lo


def _check_convention(convention: str) -> None:
    if convention not in _CONVENTIONS:
        raise ValueError(f"convention must be one of {_CONVENTIONS}, got {convention!r}")


def _drop_geotransform(obj: xr.DataArray | xr.Dataset) -> xr.DataArray | xr.Dataset:
    """Remove a cached rioxarray ``GeoTransform`` that no longer matches reordered coords."""
    for n in ("spatial_ref", "crs"):
        if n in obj.coords and "GeoTransform" in obj[n].attrs:
            attrs = {k: v for k, v in obj[n].attrs.items() if k != "GeoTransform"}
            obj = obj.assign_coords({n: xr.Variable(obj[n].dims, obj[n].values, attrs)})
    return obj


def _bounds_name(obj: xr.DataArray | xr.Dataset, name: str, std: str | None) -> str | None:
    """Name of the CF bounds variable of coordinate ``name`` in ``obj``, or ``None``."""
    if isinstance(obj, xr.DataArray):  # a bounds variable cannot be a DataArray coordinate
        return None
    cands = []
    b = obj[name].attrs.get("bounds")
    if isinstance(b, str):
        cands.append(b)
    if std is not None:
        try:
            cands.append(str(obj.cf.get_bounds(std).name))
        except Exception:  # absent or ambiguous
            pass
    cands += [f"{name}_bnds", f"{name}_bounds", f"{name}_bnd"]
    for c in cands:
        if c in obj.variables and c != name:
            return c
    return None


def _bounds_array(obj: xr.DataArray | xr.Dataset, name: str, std: str | None) -> np.ndarray | None:
    """Bounds of coordinate ``name`` as NumPy ``coord.shape + (nv,)``, or ``None``.

    Loads dask-backed bounds; see :func:`_bounds_data` for the lazy version.
    """
    d = _bounds_data(obj, name, std)
    return None if d is None else np.asarray(d)


def _bounds_data(obj: xr.DataArray | xr.Dataset, name: str, std: str | None) -> Any:
    """Bounds of coordinate ``name``, ``coord.shape + (nv,)``, NumPy or dask (not loaded)."""
    b = _bounds_name(obj, name, std)
    if b is None:
        return None
    bv = obj[b]
    cdims = obj[name].dims
    extra = [d for d in bv.dims if d not in cdims]
    if len(extra) != 1 or not set(cdims) <= set(bv.dims):
        raise ValueError(
            f"bounds variable {b!r} of coordinate {name!r} has dims {bv.dims}; expected "
            f"{cdims} plus one vertex dim"
        )
    return bv.transpose(*cdims, extra[0]).data.astype(float)


def normalize_longitude(
    obj: xr.DataArray | xr.Dataset, *, convention: str = "-180..180", sort: bool = True
) -> xr.DataArray | xr.Dataset:
    """Wrap longitudes to ``[-180, 180)`` or ``[0, 360)`` and (optionally) sort them.

    Parameters
    ----------
    obj : xarray.DataArray or xarray.Dataset
    convention : {"-180..180", "0..360"}
        Target convention: ``[-180, 180)`` or ``[0, 360)`` degrees east.
    sort : bool
        Reorder the longitude dim into ascending order (a lazy ``roll`` when the wrapped
        values are a rotation of a sorted axis, the usual case, else a lazy ``isel``).
        Only for 1-D longitude along its own dim; 2-D and unstructured longitudes are only
        wrapped.

    Returns
    -------
    Same type as ``obj``
        Data unchanged apart from the order along the longitude dim. The longitude
        bounds variable, if any, is shifted by the same multiple of 360 as its cell centre
        so cells stay contiguous. A cached rioxarray ``GeoTransform`` is dropped.

    Examples
    --------
    >>> import numpy as np, xarray as xr
    >>> da = xr.DataArray(np.arange(4.0), coords={"lon": [45.0, 135, 225, 315]}, dims="lon")
    >>> out = normalize_longitude(da)
    >>> out.lon.values.tolist(), out.values.tolist()
    ([-135.0, -45.0, 45.0, 135.0], [2.0, 3.0, 0.0, 1.0])
    """
    _check_convention(convention)
    _, lon_name = _find_latlon_names(obj)
    if lon_name is None:
        try:
            g = _describe(obj)
            lon_name = g.lon
        except ValueError:
            lon_name = None
    if lon_name is None:
        raise ValueError(
            f"{_name(obj)} has no longitude coordinate (coords seen: "
            f"{list(map(str, obj.coords))})"
        )
    lon = obj[lon_name]
    is_index = lon.ndim == 1 and lon.dims[0] == lon_name and lon_name in obj.indexes
    if not is_index:
        new = _wrap(lon, convention)
        new.attrs = lon.attrs
        return obj.assign_coords({lon_name: new})
    dim = lon.dims[0]
    old = np.asarray(lon.values, float)
    wrapped = _wrap(old, convention)
    shift = wrapped - old
    bname = _bounds_name(obj, lon_name, "longitude")
    out = obj.assign_coords({lon_name: xr.Variable(lon.dims, wrapped, lon.attrs, lon.encoding)})
    if bname is not None:
        bv = obj[bname]
        nb = (bv.variable + xr.Variable((dim,), shift)).transpose(*bv.dims)
        nb.attrs = bv.attrs
        nb.encoding = bv.encoding
        out = out.assign_coords({bname: nb}) if bname in obj.coords else out.assign({bname: nb})
    if sort:
        order = np.argsort(wrapped, kind="stable")
        n = order.size
        k = int(order[0])
        if np.array_equal(order, (np.arange(n) + k) % n):
            if k:
                out = out.roll({dim: -k}, roll_coords=True)
        else:
            out = out.isel({dim: order})
    return _drop_geotransform(out)


# ---------------------------------------------------------------------------------------
# cell areas
# ---------------------------------------------------------------------------------------


def _edges_1d(c: np.ndarray, name: str) -> np.ndarray:
    """Cell edges of 1-D monotonic centres: midpoints, extended half a step at the ends."""
    c = np.asarray(c, float)
    if c.size < 2:
        raise ValueError(
            f"cannot infer cell edges of coordinate {name!r} with {c.size} value(s); add CF "
            "bounds (attribute 'bounds' naming an (n, 2) variable) or pass area="
        )
    d = np.diff(c)
    if not (np.all(d > 0) or np.all(d < 0)):
        raise ValueError(f"coordinate {name!r} must be strictly monotonic to infer cell edges")
    mid = 0.5 * (c[1:] + c[:-1])
    return np.concatenate([[c[0] - 0.5 * d[0]], mid, [c[-1] + 0.5 * d[-1]]])


def _lon_widths(obj: xr.DataArray | xr.Dataset, name: str) -> Any:
    """Longitude cell widths in degrees (from bounds, else from unwrapped centres).

    NumPy, or dask when the bounds are dask-backed (they are not loaded).
    """
    b = _bounds_data(obj, name, "longitude")
    if b is not None:
        d = np.abs(b[:, -1] - b[:, 0])
        return np.where((d > 180) & (d < 360), 360 - d, d)
    c = np.unwrap(np.asarray(_degrees(obj, name).values, float), period=360.0)
    return np.abs(np.diff(_edges_1d(c, name)))


def _lat_sin_widths(obj: xr.DataArray | xr.Dataset, name: str) -> Any:
    """``|sin(lat2) - sin(lat1)|`` of latitude bands (edges clipped to [-90, 90]).

    NumPy, or dask when the bounds are dask-backed (they are not loaded).
    """
    b = _bounds_data(obj, name, "latitude")
    if b is not None:
        e1, e2 = b[:, 0], b[:, -1]
    else:
        e = _edges_1d(np.asarray(_degrees(obj, name).values, float), name)
        e1, e2 = e[:-1], e[1:]
    s1, s2 = (np.sin(np.deg2rad(np.clip(e, -90, 90))) for e in (e1, e2))
    return np.abs(s2 - s1)


def _unit_vectors(lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
    lo, la = np.deg2rad(lon), np.deg2rad(lat)
    return np.stack([np.cos(la) * np.cos(lo), np.cos(la) * np.sin(lo), np.sin(la)], axis=-1)


def _triangle_excess(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Spherical excess (sr) of great-circle triangles with unit-vector vertices."""
    num = np.abs(np.einsum("...i,...i->...", a, np.cross(b, c)))
    den = 1 + np.einsum("...i,...i->...", a, b) + np.einsum("...i,...i->...", b, c) + np.einsum(
        "...i,...i->...", c, a
    )
    return 2 * np.arctan2(num, den)


def _polygon_excess(v: np.ndarray) -> np.ndarray:
    """Spherical excess (sr) of convex polygons ``v[..., nv, 3]`` (fan triangulation)."""
    out = np.zeros(v.shape[:-2])
    for k in range(1, v.shape[-2] - 1):
        out = out + _triangle_excess(v[..., 0, :], v[..., k, :], v[..., k + 1, :])
    return out


def _authalic(lat: np.ndarray, crs: Any) -> tuple[np.ndarray, float]:
    """Authalic latitude (deg) and authalic-sphere radius (m) of the CRS's ellipsoid."""
    ell = crs.ellipsoid
    a = float(ell.semi_major_metre)
    inv_f = float(ell.inverse_flattening or 0.0)
    if not np.isfinite(inv_f) or inv_f <= 0:
        return lat, a
    f = 1.0 / inv_f
    e2 = f * (2 - f)
    e = np.sqrt(e2)

    def q(s: np.ndarray) -> np.ndarray:
        return (1 - e2) * (s / (1 - e2 * s**2) - np.log((1 - e * s) / (1 + e * s)) / (2 * e))

    qp = q(np.array(1.0))
    xi = np.rad2deg(np.arcsin(np.clip(q(np.sin(np.deg2rad(lat))) / qp, -1, 1)))
    return xi, a * np.sqrt(qp / 2)


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


_AREA_ATTRS = {"standard_name": "cell_area", "long_name": "grid-cell area", "units": "m2"}


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
    g = _describe(obj)
    if g.kind == "latlon":
        # dask-backed bounds (e.g. after Dataset.chunk) give a lazy area
        area = radius**2 * (
            _lat_sin_widths(obj, g.lat)[:, None] * np.deg2rad(_lon_widths(obj, g.lon))[None, :]
        )
    elif g.kind == "projected":
        by = _bounds_array(obj, g.y, "projection_y_coordinate")
        bx = _bounds_array(obj, g.x, "projection_x_coordinate")
        ey = (
            np.append(by[:, 0], by[-1, -1]) if by is not None
            else _edges_1d(np.asarray(obj[g.y].values, float), g.y)
        )
        ex = (
            np.append(bx[:, 0], bx[-1, -1]) if bx is not None
            else _edges_1d(np.asarray(obj[g.x].values, float), g.x)
        )
        lon_c, lat_c = _to_lonlat(g.crs, *np.meshgrid(ex, ey))
        xi, rq = _authalic(lat_c, g.crs)
        area = rq**2 * _polygon_excess(_quads(_unit_vectors(lon_c, xi)))
    elif g.kind == "curvilinear":
        lat2 = _degrees(obj, g.lat).transpose(*g.dims)
        lon2 = _degrees(obj, g.lon).transpose(*g.dims)
        blat = _bounds_array(obj, g.lat, "latitude")
        blon = _bounds_array(obj, g.lon, "longitude")
        if blat is not None and blon is not None:
            if obj[g.lat].dims != g.dims:
                blat, blon = blat.swapaxes(0, 1), blon.swapaxes(0, 1)
            v = _unit_vectors(blon, blat)
        else:
            p = _unit_vectors(np.asarray(lon2.values, float), np.asarray(lat2.values, float))
            c = _corners_2d(p)
            v = _quads(c / np.linalg.norm(c, axis=-1, keepdims=True))
        area = radius**2 * _polygon_excess(v)
    else:  # unstructured
        blat = _bounds_array(obj, g.lat, "latitude")
        blon = _bounds_array(obj, g.lon, "longitude")
        if blat is None or blon is None:
            raise ValueError(
                f"cannot compute cell areas of the unstructured grid on dim {g.dims[0]!r} "
                f"without CF vertex bounds on {g.lat!r}/{g.lon!r}; pass area= explicitly"
            )
        area = radius**2 * _polygon_excess(_unit_vectors(blon, blat))
    return xr.DataArray(
        area, dims=g.dims, coords=_spatial_coords(obj, g.dims), name="cell_area",
        attrs=dict(_AREA_ATTRS),
    )


# ---------------------------------------------------------------------------------------
# global totals
# ---------------------------------------------------------------------------------------

_MASS_KG = {"mg": 1e-6, "g": 1e-3, "kg": 1.0, "Mg": 1e3, "t": 1e3, "Gg": 1e6, "Tg": 1e9, "Pg": 1e12}
_AREA_M2 = {"m2": 1.0, "ha": 1e4, "km2": 1e6}
_UNITS_RE = re.compile(
    r"^(?P<mass>mg|g|kg|Mg|t|Gg|Tg|Pg)(?:C|c|\(C\))?"
    r"(?:/(?P<a1>m2|ha|km2)|(?P<a2>m-2|ha-1|km-2))$"
)


def stock_units_factor(units: str) -> float:
    """Factor converting an areal carbon density in ``units`` to kg C m-2.

    Accepts a mass (``mg``, ``g``, ``kg``, ``Mg``/``t``, ``Gg``, ``Tg``, ``Pg``), optionally
    followed by ``C``, per area (``m-2``/``/m2``/``m^-2``/``m**-2``, ``ha-1``, ``km-2``),
    with or without spaces: e.g. ``"kg m-2"``, ``"kg C m-2"``, ``"g C m-2"``, ``"gC/m2"``,
    ``"Mg C ha-1"``, ``"t ha-1"``.

    Raises
    ------
    ValueError
        For anything else (the message shows the units found).

    Examples
    --------
    >>> stock_units_factor("g C m-2"), stock_units_factor("Mg C ha-1")
    (0.001, 0.1)
    """
    s = str(units).replace("**", "").replace("^", "").replace("·", " ").replace(".", " ")
    s = "".join(s.split())
    m = _UNITS_RE.match(s)
    if m is None:
        raise ValueError(
            f"unsupported carbon-density units {units!r}; expected e.g. 'kg C m-2', "
            "'kg m-2', 'g C m-2', 'g m-2', 'Mg C ha-1' (mass per area)"
        )
    area = m.group("a1") or {"m-2": "m2", "ha-1": "ha", "km-2": "km2"}[m.group("a2")]
    return _MASS_KG[m.group("mass")] / _AREA_M2[area]


def fraction(lf: xr.DataArray) -> xr.DataArray:
    """A land fraction in [0, 1]: converted from its ``units`` (``%``...), range-checked."""
    from xproda import units as xunits

    if "units" in lf.attrs:
        scale, _ = xunits.conversion(lf.attrs["units"], "1", name=f"land_fraction {lf.name!r}")
        if scale != 1.0:
            return lf * scale
    if not isinstance(lf.data, np.ndarray) or lf.size == 0:  # dask: not checked
        return lf
    mx = float(np.nanmax(lf.values)) if np.isfinite(lf.values).any() else 0.0
    mn = float(np.nanmin(lf.values)) if np.isfinite(lf.values).any() else 0.0
    if mx > 1.0 + 1e-9 or mn < -1e-9:
        raise ValueError(
            f"land_fraction {lf.name!r} must lie in [0, 1] (found {mn:g} .. {mx:g}); if it is "
            "in percent set its attrs['units'] = '%'"
        )
    return lf


def _check_same_grid(
    ref: xr.DataArray | xr.Dataset, other: xr.DataArray, dims: tuple[str, ...], what: str
) -> None:
    missing = [d for d in dims if d not in other.dims]
    if missing:
        raise ValueError(f"{what} lacks the spatial dims {missing} (its dims: {other.dims})")
    for d in dims:
        if d in ref.indexes and d in other.indexes:
            a, b = np.asarray(ref[d].values), np.asarray(other[d].values)
            if a.shape != b.shape or (
                np.issubdtype(a.dtype, np.number) and not np.allclose(a, b, rtol=0, atol=1e-9)
            ):
                raise ValueError(
                    f"{what} is not on the grid of the stock along {d!r}: {b.size} values "
                    f"[{b.min()}, {b.max()}] vs {a.size} values [{a.min()}, {a.max()}]; use "
                    "align_grids first"
                )
        elif other.sizes[d] != ref.sizes[d]:
            raise ValueError(
                f"{what} has {other.sizes[d]} values along {d!r}, the stock {ref.sizes[d]}"
            )


def _lookup_var(ds: xr.Dataset, key: str, what: str) -> xr.DataArray:
    if key in ds.variables:
        return ds[key]
    try:
        return ds.cf[key]
    except Exception:
        raise ValueError(
            f"{what} {key!r} is neither a variable nor a CF standard name in the Dataset "
            f"(variables: {list(map(str, ds.variables))})"
        ) from None


def land_fraction_of(ds: xr.Dataset | xr.DataArray,
                     land_fraction: xr.DataArray | str | None) -> xr.DataArray | None:
    """Resolve ``land_fraction``: "auto" uses a ``land_area_fraction`` variable if present.

    ``"auto"`` (the default of :func:`global_total` and the analyses) looks for a variable
    or coordinate whose ``standard_name`` is ``land_area_fraction``; a name looks up that
    variable; a DataArray or ``None`` is returned as it is.
    """
    if isinstance(ds, xr.DataArray):
        ds = ds.coords.to_dataset()
    if land_fraction is None or isinstance(land_fraction, xr.DataArray):
        return land_fraction
    if isinstance(land_fraction, str):
        if land_fraction == "auto":
            for k, v in ds.variables.items():
                if v.attrs.get("standard_name") == "land_area_fraction":
                    return ds[k]
            return None
        if land_fraction not in ds.variables:
            raise KeyError(f"land_fraction: no variable {land_fraction!r} in the Dataset; "
                           f"found {sorted(map(str, ds.data_vars))}")
        return ds[land_fraction]
    raise TypeError(f"land_fraction: expected a DataArray, a variable name, 'auto' or None, "
                    f"found {type(land_fraction).__name__}")


def global_total(
    stock: xr.DataArray | xr.Dataset,
    *,
    area: xr.DataArray | str | None = None,
    land_fraction: xr.DataArray | str | None = "auto",
    radius: float = EARTH_RADIUS,
    stock_units: str | None = None,
) -> xr.DataArray | xr.Dataset:
    """Area-weighted sum of a carbon density over the spatial dims, in Pg C.

    ``total = sum(stock * factor * area * land_fraction) / 1e12`` where ``factor``
    converts ``stock_units`` to kg C m-2. NaN cells (in ``stock`` or ``land_fraction``)
    are skipped; an all-NaN slice gives NaN. Non-spatial dims (``member``, depth
    interval, ...) are kept. Lazy for dask input.

    Parameters
    ----------
    stock : xarray.DataArray or xarray.Dataset
        Areal carbon density. A Dataset gives one total per data variable that has all
        spatial dims (the land-fraction and cell-area variables excepted).
    area : xarray.DataArray or str, optional
        Cell areas in m2 on the same grid (or a variable/standard name in the Dataset
        ``stock``). Default :func:`cell_area` of ``stock`` with ``radius``.
    land_fraction : xarray.DataArray or str, optional
        Land fraction of each cell in [0, 1], or in percent when its ``units`` attr is
        ``"%"``. A str names a variable of the Dataset ``stock``, or a CF standard name
        such as ``"land_area_fraction"``. Default ``"auto"``: a variable or coordinate of
        ``stock`` with ``standard_name = land_area_fraction`` if there is one (as in the
        analyses), else 1 everywhere; ``None`` for 1 everywhere.
    radius : float
        Sphere radius in m for the default ``area`` (see :func:`cell_area`).
    stock_units : str, optional
        Units of ``stock``; default ``stock.attrs["units"]``. See
        :func:`stock_units_factor` for the accepted forms.

    Returns
    -------
    xarray.DataArray or xarray.Dataset
        Totals with units ``Pg C``.

    Raises
    ------
    ValueError
        Missing or unsupported units, land fraction outside [0, 1] (NumPy input only), or
        ``area``/``land_fraction`` on a different grid.

    Examples
    --------
    >>> import numpy as np, xarray as xr
    >>> lat = np.arange(-89.5, 90, 1.0); lon = np.arange(0.5, 360, 1.0)
    >>> soc = xr.DataArray(np.ones((180, 360)), coords={"lat": lat, "lon": lon},
    ...                    name="soc", attrs={"units": "kg C m-2"})
    >>> round(float(global_total(soc)), 3)  # 4 pi R^2 * 1 kg m-2 in Pg
    510.1
    """
    ds_ctx = stock if isinstance(stock, xr.Dataset) else None
    if land_fraction == "auto":
        land_fraction = land_fraction_of(stock, "auto")
    if isinstance(area, str) or isinstance(land_fraction, str):
        if ds_ctx is None:
            raise TypeError("area/land_fraction given by name need a Dataset stock")
    if isinstance(area, str):
        area = _lookup_var(ds_ctx, area, "area")
    if isinstance(land_fraction, str):
        land_fraction = _lookup_var(ds_ctx, land_fraction, "land_fraction")
    dims = spatial_dims(stock)
    if area is None:
        area = cell_area(stock, radius=radius)
    else:
        _check_same_grid(stock, area, dims, f"area {area.name!r}")
    weights = area.drop_vars(list(area.coords))
    if land_fraction is not None:
        _check_same_grid(stock, land_fraction, dims, f"land_fraction {land_fraction.name!r}")
        weights = weights * fraction(land_fraction).drop_vars(list(land_fraction.coords))
    extra = [d for d in weights.dims if d not in dims]
    if extra:
        raise ValueError(f"area/land_fraction have non-spatial dims {extra}")

    def one(da: xr.DataArray, name: Hashable) -> xr.DataArray:
        units = stock_units if stock_units is not None else da.attrs.get("units")
        if units is None:
            raise ValueError(
                f"stock variable {name!r} has no 'units' attribute; pass stock_units= "
                "(e.g. 'kg C m-2')"
            )
        try:
            factor = stock_units_factor(units)
        except ValueError as err:
            raise ValueError(f"stock variable {name!r}: {err}") from None
        w = weights * (factor / 1e12)  # kg -> Pg
        drop = [c for c in da.coords if set(da[c].dims) & set(dims)]
        tot = (da.drop_vars(drop) * w).sum(dims, skipna=True, min_count=1)
        tot = tot.drop_vars([c for c in ("spatial_ref", "crs") if c in tot.coords])
        label = da.attrs.get("long_name", name)
        tot.attrs = {"units": "Pg C", "long_name": f"total of {label} over the spatial domain"}
        tot.name = name
        return tot

    if isinstance(stock, xr.DataArray):
        return one(stock, stock.name)
    skip = set()
    for v in (area, land_fraction):
        if isinstance(v, xr.DataArray) and v.name is not None:
            skip.add(v.name)
    out = {}
    for k, v in stock.data_vars.items():
        if k in skip or v.attrs.get("standard_name") in ("land_area_fraction", "cell_area"):
            continue
        if set(dims) <= set(v.dims):
            out[k] = one(v, k)
    if not out:
        raise ValueError(f"no data variable of the Dataset has the spatial dims {dims}")
    return xr.Dataset(out)


# ---------------------------------------------------------------------------------------
# sampling at sites
# ---------------------------------------------------------------------------------------


def _site_table(
    sites: Any, lat: Any, lon: Any, ids: Any, site_dim: str
) -> tuple[np.ndarray, np.ndarray, Any]:
    if sites is not None:
        if lat is not None or lon is not None:
            raise TypeError("pass either sites or lat=/lon=, not both")
        if isinstance(sites, xr.Dataset):
            names = {str(k).lower(): k for k in sites.variables}
        elif hasattr(sites, "columns"):  # pandas DataFrame
            names = {str(k).lower(): k for k in sites.columns}
        elif isinstance(sites, Mapping):
            names = {str(k).lower(): k for k in sites}
        else:
            raise TypeError(
                "sites must be a pandas DataFrame, an xarray Dataset or a mapping with "
                f"latitude/longitude entries, got {type(sites).__name__}"
            )
        kl = next((names[k] for k in ("lat", "latitude", "site_lat") if k in names), None)
        lon_keys = ("lon", "longitude", "long", "lng", "site_lon")
        ko = next((names[k] for k in lon_keys if k in names), None)
        if kl is None or ko is None:
            raise ValueError(
                "sites needs latitude and longitude entries named lat/latitude and "
                f"lon/longitude; found {list(names.values())}"
            )
        lat, lon = sites[kl], sites[ko]
        if ids is None:
            if isinstance(sites, xr.Dataset):
                d = sites[kl].dims
                if len(d) == 1 and d[0] in sites.indexes:
                    ids = sites.indexes[d[0]]
            elif hasattr(sites, "index"):
                idx = sites.index
                if not (type(idx).__name__ == "RangeIndex" and idx.start == 0 and idx.step == 1
                        and idx.name is None):
                    ids = idx
            for key in (site_dim, "site_id", "id"):
                if ids is None and key.lower() in names and names[key.lower()] not in (kl, ko):
                    ids = sites[names[key.lower()]]
    if lat is None or lon is None:
        raise TypeError("sample_sites needs sites, or both lat= and lon=")
    la = np.atleast_1d(np.asarray(lat, dtype=float)).ravel()
    lo = np.atleast_1d(np.asarray(lon, dtype=float)).ravel()
    if la.shape != lo.shape:
        raise ValueError(f"site lat and lon differ in length: {la.size} vs {lo.size}")
    bad = np.isfinite(la) & (np.abs(la) > 90)
    if bad.any():
        raise ValueError(
            f"site latitudes must lie in [-90, 90] degrees; found {la[bad][:5].tolist()} "
            f"at positions {np.flatnonzero(bad)[:5].tolist()}"
        )
    if ids is not None:
        ids = np.asarray(ids)
        if ids.shape != la.shape:
            raise ValueError(f"site ids have {ids.size} values for {la.size} sites")
    return la, lo, ids


def _axis_locate(
    c: np.ndarray, v: np.ndarray, edges: tuple[float, float], *, periodic: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Bracketing indices ``i0, i1``, weight ``w`` of ``i1`` and validity for positions ``v``.

    ``c`` is monotonic (either direction). Positions outside ``edges`` (the outer cell
    edges) are invalid; positions between an outer edge and the outermost centre get all
    weight on that centre.
    """
    order = np.argsort(c, kind="stable")
    cs = c[order]
    if periodic:
        cs = np.concatenate([[cs[-1] - 360.0], cs, [cs[0] + 360.0]])
        order = np.concatenate([[order[-1]], order, [order[0]]])
        valid = np.isfinite(v)
    else:
        lo, hi = min(edges), max(edges)
        valid = np.isfinite(v) & (v >= lo) & (v <= hi)
    vv = np.clip(np.where(valid, v, cs[0]), cs[0], cs[-1])
    if cs.size == 1:
        z = np.zeros(v.shape, dtype=int) + order[0]
        return z, z, np.zeros(v.shape), valid
    j = np.clip(np.searchsorted(cs, vv, side="right") - 1, 0, cs.size - 2)
    w = (vv - cs[j]) / (cs[j + 1] - cs[j])
    return order[j], order[j + 1], w, valid


def _is_global_lon(c: np.ndarray) -> bool:
    if c.size < 2:
        return False
    u = np.sort(_wrap(c, "0..360"))
    gaps = np.diff(np.concatenate([u, [u[0] + 360.0]]))
    return bool(gaps.max() <= 1.5 * np.median(gaps[:-1]) + 1e-9)


def _isel_points(obj: xr.DataArray | xr.Dataset, idx: dict[str, np.ndarray], site_dim: str):
    return obj.isel({d: xr.DataArray(i, dims=site_dim) for d, i in idx.items()})


def sample_sites(
    obj: xr.DataArray | xr.Dataset,
    sites: Any = None,
    *,
    lat: Any = None,
    lon: Any = None,
    ids: Any = None,
    method: str = "nearest",
    site_dim: str = "site",
    tolerance: float | None = None,
) -> xr.DataArray | xr.Dataset:
    """Values of a gridded object at site (soil-profile) locations.

    Pass the sites either as ``sites`` (a pandas DataFrame, an xarray Dataset or a mapping
    with ``lat``/``latitude`` and ``lon``/``longitude`` entries) or as ``lat=``/``lon=``
    array-likes in degrees. Site longitudes are wrapped to the grid's convention
    (0..360 or -180..180); latitudes may be in either order on the grid. Selection is
    vectorised pointwise indexing: one new dim ``site_dim``, lazy for dask input.

    Parameters
    ----------
    obj : xarray.DataArray or xarray.Dataset
        Gridded data (geographic, projected with a CRS, curvilinear or unstructured).
    sites : DataFrame, Dataset or mapping, optional
        Site table. Site ids are taken from a non-default DataFrame index, the index of the
        Dataset's site dim, or a ``site``/``site_id``/``id`` column.
    lat, lon : array-like, optional
        Site latitudes and longitudes (degrees), instead of ``sites``.
    ids : array-like, optional
        Site ids, stored as the ``site_dim`` coordinate.
    method : {"nearest", "linear"}
        Grid cell containing the site (nearest centre), or bilinear interpolation between
        the four surrounding centres (in lon/lat, or in projected x/y). Between an outer
        cell edge and the outermost centres, linear takes the outermost value; across the
        dateline of a global grid it wraps. Terms with zero weight are ignored, so a site
        on a centre is never NaN because of a NaN neighbour. ``"linear"`` needs a
        rectilinear grid (geographic or projected).
    site_dim : str
        Name of the new dim.
    tolerance : float, optional
        Maximum distance, in degrees of latitude and (wrapped) longitude separately,
        between a site and the centre of the nearest grid cell; farther sites give NaN.
        Without it, sites outside the grid's extent (beyond its outer cell edges) give NaN
        on rectilinear grids, and every site gets its nearest cell on curvilinear and
        unstructured grids.

    Returns
    -------
    Same type as ``obj``
        Spatial dims replaced by ``site_dim``. Coordinates: the site ids (if any),
        ``site_lat``/``site_lon`` (the requested positions), and the grid coordinates
        of the selected cells (``"nearest"``) or of the interpolation points
        (``"linear"``).

    Examples
    --------
    >>> import numpy as np, xarray as xr
    >>> da = xr.DataArray(np.arange(6.0).reshape(2, 3), coords={"lat": [10.0, -10.0],
    ...                   "lon": [0.0, 120.0, 240.0]}, dims=("lat", "lon"))
    >>> sample_sites(da, lat=[9.0, -11.0], lon=[-118.0, 1.0], ids=["a", "b"]).values.tolist()
    [2.0, 3.0]
    """
    if method not in ("nearest", "linear"):
        raise ValueError(f"method must be 'nearest' or 'linear', got {method!r}")
    if site_dim in obj.dims:
        raise ValueError(f"{_name(obj)} already has a dim {site_dim!r}; choose another site_dim")
    la, lo, ids = _site_table(sites, lat, lon, ids, site_dim)
    g = _describe(obj)

    if g.kind in ("latlon", "projected"):
        ydim, xdim = g.dims
        if g.kind == "latlon":
            cy = np.asarray(_degrees(obj, g.lat).values, float)
            cx = np.asarray(_degrees(obj, g.lon).values, float)
            periodic = _is_global_lon(cx)
            if periodic:  # sites into [min, min + 360); the search wraps around
                low = float(np.nanmin(cx))
            else:  # unwrap a regional grid across the seam, sites around its middle
                cx = np.unwrap(cx, period=360.0)
                low = 0.5 * (np.nanmin(cx) + np.nanmax(cx)) - 180.0
            vx = (lo - low) % 360.0 + low
            vy = la
            ey = np.clip(_edges_1d(cy, g.lat)[[0, -1]], -90, 90) if cy.size > 1 else cy[[0, 0]]
        else:
            cy = np.asarray(obj[g.y].values, float)
            cx = np.asarray(obj[g.x].values, float)
            periodic = False
            vx, vy = _from_lonlat(g.crs, lo, la)
            ey = _edges_1d(cy, g.y)[[0, -1]] if cy.size > 1 else cy[[0, 0]]
        ex = cx[[0, 0]] if periodic or cx.size < 2 else _edges_1d(cx, xdim)[[0, -1]]
        iy0, iy1, wy, oky = _axis_locate(cy, vy, tuple(ey), periodic=False)
        ix0, ix1, wx, okx = _axis_locate(cx, vx, tuple(ex), periodic=periodic)
        valid = oky & okx
        iy = np.where(wy > 0.5, iy1, iy0)
        ix = np.where(wx > 0.5, ix1, ix0)
        if tolerance is not None:
            if g.kind == "latlon":
                near_lat, near_lon = cy[iy], cx[ix]
            else:
                near_lon, near_lat = _to_lonlat(g.crs, cx[ix], cy[iy])
    else:
        if method == "linear":
            raise ValueError(
                f"method='linear' needs a rectilinear grid; {_name(obj)} is {g.kind}. Use "
                "method='nearest'"
            )
        from scipy.spatial import cKDTree

        grid_lat, grid_lon = lat_lon(obj)
        gl = np.asarray(grid_lat.transpose(*g.dims).values, float)
        go = np.asarray(grid_lon.transpose(*g.dims).values, float)
        pts = _unit_vectors(go.ravel(), gl.ravel())
        ok = np.all(np.isfinite(pts), axis=1)
        tree = cKDTree(pts[ok])
        q = _unit_vectors(lo, la)
        valid = np.all(np.isfinite(q), axis=1)
        _, k = tree.query(np.where(valid[:, None], q, 0.0))
        flat = np.flatnonzero(ok)[k]
        near_lat, near_lon = gl.ravel()[flat], go.ravel()[flat]
        if g.kind == "curvilinear":
            iy, ix = np.unravel_index(flat, gl.shape)
        else:
            iy = flat
    if tolerance is not None:
        dlat = np.abs(near_lat - la)
        dlon = np.abs(_wrap(near_lon - lo, "-180..180"))
        valid = valid & (dlat <= tolerance) & (dlon <= tolerance)

    if g.kind == "unstructured":
        out = _isel_points(obj, {g.dims[0]: np.where(valid, iy, 0)}, site_dim)
    elif method == "nearest":
        out = _isel_points(
            obj, {g.dims[0]: np.where(valid, iy, 0), g.dims[1]: np.where(valid, ix, 0)}, site_dim
        )
    else:
        out = _interp_bilinear(obj, g, (iy0, iy1, wy), (ix0, ix1, wx), valid, site_dim)
        if g.kind == "latlon":
            out = out.assign_coords({g.lat: (site_dim, vy), g.lon: (site_dim, vx)})
        else:
            out = out.assign_coords({g.y: (site_dim, vy), g.x: (site_dim, vx)})
    if not valid.all():
        mask = xr.DataArray(valid, dims=site_dim)
        if isinstance(out, xr.Dataset):
            out = out.map(lambda v: v.where(mask) if site_dim in v.dims else v, keep_attrs=True)
        else:
            out = out.where(mask)
    site_coords: dict[str, Any] = {
        "site_lat": (site_dim, la, {"units": "degrees_north", "long_name": "site latitude"}),
        "site_lon": (site_dim, lo, {"units": "degrees_east", "long_name": "site longitude"}),
    }
    if ids is not None:
        site_coords[site_dim] = (site_dim, ids)
    return out.assign_coords(site_coords)


def _interp_bilinear(obj, g: _Grid, ylocs, xlocs, valid, site_dim):
    (iy0, iy1, wy), (ix0, ix1, wx) = ylocs, xlocs
    ydim, xdim = g.dims
    iy0, iy1, ix0, ix1 = (np.where(valid, i, 0) for i in (iy0, iy1, ix0, ix1))
    terms = [
        (iy0, ix0, (1 - wy) * (1 - wx)),
        (iy0, ix1, (1 - wy) * wx),
        (iy1, ix0, wy * (1 - wx)),
        (iy1, ix1, wy * wx),
    ]

    def interp(da: xr.DataArray) -> xr.DataArray:
        if not (ydim in da.dims and xdim in da.dims):
            return da
        drop = [c for c in da.coords if set(da[c].dims) & {ydim, xdim}]
        da0 = da.drop_vars(drop)
        acc = None
        for ky, kx, w in terms:
            if not np.any(w > 0):
                continue
            wd = xr.DataArray(w, dims=site_dim)
            v = _isel_points(da0, {ydim: ky, xdim: kx}, site_dim)
            t = (v * wd).where(wd > 0, 0.0)
            acc = t if acc is None else acc + t
        if acc is None:  # no sites
            acc = _isel_points(da0, {ydim: iy0, xdim: ix0}, site_dim) * 0.0
        acc.attrs = da.attrs
        acc.name = da.name
        return acc

    if isinstance(obj, xr.DataArray):
        return interp(obj)
    return obj.map(interp, keep_attrs=True).drop_vars(
        [c for c in obj.coords if set(obj[c].dims) & {ydim, xdim}], errors="ignore"
    )


# ---------------------------------------------------------------------------------------
# CRS and grid alignment
# ---------------------------------------------------------------------------------------


def ensure_crs(obj: xr.DataArray | xr.Dataset, *, crs: Any = None) -> xr.DataArray | xr.Dataset:
    """Return ``obj`` with a CRS written (rioxarray ``spatial_ref`` coordinate).

    Parameters
    ----------
    obj : xarray.DataArray or xarray.Dataset
    crs : str, int or pyproj.CRS, optional
        CRS to write when ``obj`` has none. Default: ``EPSG:4326`` for grids with
        latitude/longitude coordinates; projected grids without a CRS need it explicitly.

    Returns
    -------
    Same type as ``obj``
        Unchanged when it already has a CRS (equal to ``crs`` if that is given).

    Raises
    ------
    ValueError
        If ``obj`` has a different CRS than ``crs``, or no CRS can be inferred.
    """
    import pyproj

    have = _get_crs(obj)
    want = pyproj.CRS.from_user_input(crs) if crs is not None else None
    if have is not None:
        if want is not None and not have.equals(want):
            raise ValueError(f"{_name(obj)} already has the CRS {have.name!r}, not {want.name!r}")
        return obj
    if want is None:
        try:
            geographic = _describe(obj).kind != "projected"
        except ValueError:
            geographic = False
        if not geographic:
            raise ValueError(
                f"{_name(obj)} has no CRS and no latitude/longitude coordinates; pass crs="
            )
        want = pyproj.CRS.from_epsg(4326)
    try:
        import rioxarray  # noqa: F401

        return obj.rio.write_crs(want)
    except ImportError:  # pragma: no cover - manual CF grid mapping
        attrs = want.to_cf()
        attrs["spatial_ref"] = want.to_wkt()
        out = obj.assign_coords(spatial_ref=xr.Variable((), np.int64(0), attrs))
        return out


def _rename_map(src: _Grid, tgt: _Grid) -> dict[str, str]:
    m = {}
    for a, b in zip((*src.dims, src.lat, src.lon), (*tgt.dims, tgt.lat, tgt.lon)):
        if a is not None and b is not None and a != b:
            m[a] = b
    return m


def _positions(source: np.ndarray, target: np.ndarray, atol: float) -> np.ndarray | None:
    """Indices of ``target`` values in ``source`` (within ``atol``), or None."""
    order = np.argsort(source, kind="stable")
    s = source[order]
    j = np.clip(np.searchsorted(s, target), 1, max(s.size - 1, 1))
    if s.size == 1:
        j = np.zeros(target.shape, dtype=int)
        best = j
    else:
        best = np.where(np.abs(s[j - 1] - target) <= np.abs(s[j] - target), j - 1, j)
    if not np.all(np.abs(s[best] - target) <= atol):
        return None
    return order[best]


def _describe_range(obj, g: _Grid) -> str:
    parts = []
    for n in ((g.lat, g.lon) if g.kind == "latlon" else (g.y, g.x) if g.y else (g.lat, g.lon)):
        if n is not None and n in obj.coords:
            v = np.asarray(obj[n].values, float)
            parts.append(f"{n}: {v.size} values [{np.nanmin(v):g}, {np.nanmax(v):g}]")
    return "; ".join(parts) or f"dims {dict((d, obj.sizes[d]) for d in g.dims)}"


def align_grids(
    source: xr.DataArray | xr.Dataset,
    target: xr.DataArray | xr.Dataset,
    *,
    resampling: str = "nearest",
    atol: float = 1e-9,
) -> xr.DataArray | xr.Dataset:
    """Bring ``source`` (e.g. covariates) onto the grid of ``target`` (e.g. forcing).

    1. If both are geographic lat/lon grids, ``source`` gets ``target``'s longitude
       convention (:func:`normalize_longitude`), latitude order and spatial dim/coordinate
       names. If every target coordinate value then occurs in ``source`` (within
       ``atol``), the matching cells are selected (lazy indexing; ``source`` may cover a
       larger domain) and ``target``'s coordinate values are assigned exactly.
    2. Same for projected grids in the same CRS.
    3. Otherwise, if both have a CRS (rioxarray ``spatial_ref``), ``source`` is resampled
       with ``rio.reproject_match`` (rasterio/GDAL warp) and put on ``target``'s
       dims and coordinates. **This step loads dask data** (rioxarray reprojects in
       memory). Fill value outside the source: NaN for floating data.
    4. Otherwise a ``ValueError`` describes both grids.

    Parameters
    ----------
    source, target : xarray.DataArray or xarray.Dataset
    resampling : str
        Name of a :class:`rasterio.enums.Resampling` method for step 3 (``"nearest"``,
        ``"bilinear"``, ``"average"``, ...).
    atol : float
        Tolerance (coordinate units) for matching coordinates in steps 1-2.

    Returns
    -------
    Same type as ``source``
        On ``target``'s spatial dims and coordinates; other dims untouched.

    Examples
    --------
    >>> import numpy as np, xarray as xr
    >>> tgt = xr.DataArray(np.zeros((2, 2)), coords={"lat": [10.0, -10.0], "lon": [-90.0, 90.0]})
    >>> src = xr.DataArray([[1.0, 2.0], [3.0, 4.0]], coords={"latitude": [-10.0, 10.0],
    ...                    "longitude": [90.0, 270.0]}, dims=("latitude", "longitude"))
    >>> align_grids(src, tgt).values.tolist()
    [[4.0, 3.0], [2.0, 1.0]]
    """
    gs, gt = _describe(source), _describe(target)
    if gs.kind == "latlon" and gt.kind == "latlon":
        tl = np.asarray(_degrees(target, gt.lon).values, float)
        conv = "0..360" if np.nanmax(tl) > 180 else "-180..180"
        source = normalize_longitude(source, convention=conv, sort=True)
        src = source.rename(_rename_map(gs, gt))
        ty = np.asarray(_degrees(target, gt.lat).values, float)
        sy = np.asarray(_degrees(src, gt.lat).values, float)
        sx = np.asarray(_degrees(src, gt.lon).values, float)
        iy, ix = _positions(sy, ty, atol), _positions(sx, tl, atol)
        if iy is not None and ix is not None:
            return _select(src, target, gt, {gt.dims[0]: iy, gt.dims[1]: ix}, (gt.lat, gt.lon))
    elif gs.kind == "projected" and gt.kind == "projected" and gs.crs.equals(gt.crs):
        ren = _rename_map(gs, gt) | {a: b for a, b in ((gs.y, gt.y), (gs.x, gt.x)) if a != b}
        src = source.rename(ren)
        iy = _positions(_values(src, gt.y), _values(target, gt.y), atol)
        ix = _positions(_values(src, gt.x), _values(target, gt.x), atol)
        if iy is not None and ix is not None:
            return _select(src, target, gt, {gt.dims[0]: iy, gt.dims[1]: ix}, (gt.y, gt.x))
    if gs.kind in ("curvilinear", "unstructured") or gt.kind in ("curvilinear", "unstructured"):
        raise ValueError(
            f"align_grids supports rectilinear grids only: source is {gs.kind}, target is "
            f"{gt.kind}; regrid first (e.g. xesmf) or use sample_sites"
        )
    if gs.crs is None or gt.crs is None:
        raise ValueError(
            "mismatched grids without CRS: source "
            f"({_describe_range(source, gs)}) vs target ({_describe_range(target, gt)}); "
            f"{'source' if gs.crs is None else 'target'} has no CRS. Write one with "
            ".rio.write_crs('EPSG:4326') (or xproda.spatial.ensure_crs) or regrid first"
        )
    return _reproject(source, gs, target, gt, resampling)


def _values(obj: xr.DataArray | xr.Dataset, name: str) -> np.ndarray:
    return np.asarray(obj[name].values, float)


def _yx_names(g: _Grid) -> tuple[str, str]:
    """Names of the 1-D coordinates along the (y, x) dims of a rectilinear grid."""
    return (g.lat, g.lon) if g.kind == "latlon" else (g.y, g.x)


def _select(src, target, gt: _Grid, idx: dict[str, np.ndarray], names: tuple) -> Any:
    out = src.isel(idx)
    coords = {n: target[n].variable for n in names if n is not None}
    coords.update({d: target[d].variable for d in gt.dims if d in target.coords})
    return _drop_geotransform(out.assign_coords(coords))


def _reproject(source, gs: _Grid, target, gt: _Grid, resampling: str):
    try:
        import rioxarray  # noqa: F401
        from rasterio.enums import Resampling
    except ImportError as err:  # pragma: no cover
        raise ImportError(
            "align_grids needs rioxarray to reproject (pip install xproda[geo])"
        ) from err
    try:
        rs = Resampling[resampling]
    except KeyError:
        raise ValueError(
            f"unknown resampling {resampling!r}; one of {[r.name for r in Resampling]}"
        ) from None
    ys, xs = gs.dims
    yt, xt = gt.dims
    sy, sx = (_values(source, n) for n in _yx_names(gs))
    ty, tx = (_values(target, n) for n in _yx_names(gt))
    template = xr.DataArray(
        np.zeros((ty.size, tx.size), dtype=np.uint8), dims=("y", "x"), coords={"y": ty, "x": tx}
    ).rio.write_crs(gt.crs)
    src_crs = gs.crs

    def one(da: xr.DataArray) -> xr.DataArray:
        if not (ys in da.dims and xs in da.dims):
            return da
        others = [d for d in da.dims if d not in (ys, xs)]
        work = da.transpose(*others, ys, xs)
        oshape = tuple(work.shape[:-2])
        data = np.asarray(work.values)  # rioxarray reprojects in memory
        if not (np.issubdtype(data.dtype, np.floating) or np.issubdtype(data.dtype, np.integer)):
            data = data.astype(float)
        band = xr.DataArray(
            data.reshape((int(np.prod(oshape)),) + data.shape[-2:]), dims=("band", "y", "x"),
            coords={"y": sy, "x": sx},
            attrs={k: v for k, v in da.attrs.items() if k in ("_FillValue", "nodata")},
        ).rio.write_crs(src_crs)
        res = band.rio.reproject_match(template, resampling=rs)
        out = np.asarray(res.values).reshape(oshape + res.shape[-2:])
        res = xr.DataArray(
            out, dims=(*others, yt, xt),
            coords={k: v.variable for k, v in da.coords.items() if not set(v.dims) & {ys, xs}
                    and k not in ("spatial_ref", "crs")},
        )
        res.attrs = {k: v for k, v in da.attrs.items() if k not in ("grid_mapping",)}
        res.name = da.name
        order = [yt if d == ys else xt if d == xs else d for d in da.dims]
        return res.transpose(*order)

    if isinstance(source, xr.DataArray):
        out = one(source)
    else:
        src = source.drop_dims([d for d in (ys, xs)], errors="ignore")
        out = src.assign(
            {k: one(v) for k, v in source.data_vars.items() if ys in v.dims and xs in v.dims}
        )
    coords = {d: target[d].variable for d in gt.dims if d in target.coords}
    for n in (gt.lat, gt.lon, gt.y, gt.x):
        if n is not None and n in target.coords and set(target[n].dims) <= set(gt.dims):
            coords[n] = target[n].variable
    for n in ("spatial_ref", "crs"):
        if n in target.coords:
            coords[n] = target[n].variable
    return out.assign_coords(coords)


# ---------------------------------------------------------------------------------------
# land-only (compressed) layout: a ``cell`` dim instead of the 2-D grid
# ---------------------------------------------------------------------------------------


def to_cells(
    obj: xr.DataArray | xr.Dataset,
    mask: xr.DataArray,
    *,
    dim: str = "cell",
    chunk: int | None = None,
) -> xr.DataArray | xr.Dataset:
    """Keep only the cells where ``mask`` is True, on one ``dim`` (a land-only layout).

    The 2-D horizontal grid becomes an unstructured one: the selected cells in row-major
    order along ``dim``, placed **first** (``(cell, month, layer)``), with the grid's
    coordinates (e.g. ``lat``/``lon``) as 1-D coordinates on ``dim``.  Written to Zarr this
    is a land-only forcing store: no ocean cells to store, read or decompress, and every
    block a contiguous batch of columns, which :func:`xproda.xr.api.steady_state` passes to
    the kernel without a copy.  :func:`from_cells` puts results back onto the grid.

    Parameters
    ----------
    obj : DataArray or Dataset
        Data on the grid of ``mask`` (NumPy- or dask-backed; stays lazy).
    mask : DataArray of bool
        ``(y, x)`` cells to keep, e.g. a land mask; computed here (it is small).
    dim : str, default "cell"
        Name of the new dim.
    chunk : int, optional
        Chunk size along ``dim`` (e.g. 16384 columns); default as the indexing gives.

    Returns
    -------
    DataArray or Dataset
        ``obj`` on ``dim``; variables without the grid dims are unchanged.

    Examples
    --------
    >>> import numpy as np, xarray as xr
    >>> da = xr.DataArray(np.arange(6.0).reshape(2, 3), dims=("lat", "lon"),
    ...                   coords={"lat": [10.0, 0.0], "lon": [0.0, 1.0, 2.0]})
    >>> cells = to_cells(da, da > 2)
    >>> cells.values.tolist(), cells["lon"].values.tolist()
    ([3.0, 4.0, 5.0], [0.0, 1.0, 2.0])
    >>> from_cells(cells, da).values.tolist()
    [[nan, nan, nan], [3.0, 4.0, 5.0]]
    """
    if not isinstance(mask, xr.DataArray) or mask.dtype != bool or mask.ndim != 2:
        raise TypeError("to_cells: mask must be a 2-D boolean DataArray on the grid (y, x)")
    ydim, xdim = mask.dims
    for d in (ydim, xdim):
        if d not in obj.dims or obj.sizes[d] != mask.sizes[d]:
            raise ValueError(f"to_cells: mask dim {d!r} ({mask.sizes[d]}) does not match "
                             f"{_name(obj)} (dims {dict(obj.sizes)})")
        if d in mask.indexes and d in obj.indexes and not mask.indexes[d].equals(obj.indexes[d]):
            raise ValueError(f"to_cells: the {d!r} coordinate of mask differs from the data's")
    # cell areas come from the grid (a cell's bounds alone are no CF vertex bounds): they
    # are gathered as a coordinate, and the 1-D bounds of the grid coordinates dropped
    if "cell_area" not in obj.coords and not (
            isinstance(obj, xr.Dataset) and "cell_area" in obj.data_vars):
        try:
            obj = obj.assign_coords(cell_area=cell_area(obj))
        except ValueError:  # no recognisable grid: no areas
            pass
    bounds = {_bounds_name(obj, c, std) for c, std in ((ydim, "latitude"), (xdim, "longitude"))
              if c in obj.coords}
    obj = obj.drop_vars([b for b in bounds if b is not None and b in obj.variables])
    iy, ix = np.nonzero(np.asarray(mask.values, dtype=bool))
    out = obj.isel({ydim: xr.DataArray(iy, dims=dim), xdim: xr.DataArray(ix, dims=dim)})
    out = out.transpose(dim, ...)
    if not chunk:
        return out
    eager = {k: c.variable.copy(deep=False) for k, c in out.coords.items() if c.chunks is None}
    for k, v in eager.items():  # in memory, but stored in the data's chunks along dim
        v.encoding = {**v.encoding, "chunks": tuple(
            min(chunk, n) if d == dim else n for d, n in zip(v.dims, v.shape))} if v.ndim else {}
    return out.chunk({dim: chunk}).assign_coords(eager)


def from_cells(
    obj: xr.DataArray | xr.Dataset,
    like: xr.DataArray | xr.Dataset,
    *,
    dim: str = "cell",
) -> xr.DataArray | xr.Dataset:
    """Put data on a ``cell`` dim (see :func:`to_cells`) back onto the grid of ``like``.

    Cells are located by their grid coordinates (e.g. the 1-D ``lat``/``lon`` on ``dim``;
    read here where they are lazy, as when opened from a store) in ``like``'s; grid cells without a cell are NaN (integer variables: their
    ``fill_value``/``_FillValue`` encoding, e.g. ``no_data`` for ``flags``, else 0).  Lazy
    on dask input: nothing is read until computed; chunks follow ``like`` where it is
    dask-backed.

    Parameters
    ----------
    obj : DataArray or Dataset
        Data with ``dim`` and 1-D coordinates on it named like the grid dims of ``like``.
    like : DataArray or Dataset
        Anything on the target grid: its last two dims are the grid ``(y, x)`` and must
        have index coordinates (e.g. the land mask, or the gridded forcing).
    dim : str, default "cell"

    Returns
    -------
    DataArray or Dataset
        ``obj`` with ``dim`` replaced by the grid dims (last), with ``like``'s grid
        coordinates.
    """
    ref = like if isinstance(like, xr.DataArray) else like[next(iter(like.data_vars))]
    ydim, xdim = ref.dims[-2:]
    missing = [d for d in (ydim, xdim) if d not in obj.coords or obj[d].dims != (dim,)]
    if missing or dim not in obj.dims:
        raise ValueError(f"from_cells: {_name(obj)} needs dim {dim!r} with 1-D coordinates "
                         f"{[ydim, xdim]} on it (found coords {list(map(str, obj.coords))})")
    pos = []
    for d in (ydim, xdim):
        if d not in like.indexes:
            raise ValueError(f"from_cells: like needs an index coordinate {d!r}")
        p = like.indexes[d].get_indexer(np.asarray(obj[d].values))
        if (p < 0).any():
            raise ValueError(f"from_cells: {(p < 0).sum()} cells have a {d!r} value that is "
                             f"not on the grid of like")
        pos.append(p)
    ny, nx = ref.sizes[ydim], ref.sizes[xdim]
    inv = np.full(ny * nx, -1, dtype=np.int64)
    inv[pos[0] * nx + pos[1]] = np.arange(pos[0].size)
    inv = inv.reshape(ny, nx)
    have = xr.DataArray(inv >= 0, dims=(ydim, xdim))
    idx = xr.DataArray(np.where(inv >= 0, inv, 0), dims=(ydim, xdim))
    src = obj.drop_vars([ydim, xdim])
    grid_coords = {k: c for k, c in like.coords.items() if set(c.dims) <= {ydim, xdim}}

    def one(da: xr.DataArray) -> xr.DataArray:
        if dim not in da.dims:
            return da
        out = da.isel({dim: idx})
        if da.dtype.kind in "iub":
            fill = next((da.encoding[k] for k in ("fill_value", "_FillValue")
                         if da.encoding.get(k) is not None), 0)
            out = out.where(have, fill).astype(da.dtype)
        else:
            out = out.where(have)
        out = out.transpose(*[d for d in da.dims if d != dim], ydim, xdim)
        out.attrs, out.encoding = da.attrs, dict(da.encoding)
        if ref.chunks is not None and out.chunks is not None:
            out = out.chunk({d: ref.chunksizes[d] for d in (ydim, xdim)})
        return out

    if isinstance(src, xr.DataArray):
        out = one(src)
    else:
        out = src.assign({k: one(v) for k, v in src.data_vars.items()})
        out = out.drop_dims(dim) if dim in out.dims else out
    return out.assign_coords(grid_coords)
