"""Longitude conventions: wrap to ``[-180, 180)`` or ``[0, 360)`` and reorder the axis."""

from __future__ import annotations

from typing import Any

import numpy as np
import xarray as xr

from xproda.spatial.bounds import bounds_name
from xproda.spatial.discovery import describe_grid, find_lat_lon_names, object_label

__all__ = ["normalize_longitude", "wrap_longitude", "drop_geotransform"]


_CONVENTIONS = ("-180..180", "0..360")


def wrap_longitude(values: Any, convention: str) -> Any:
    """Wrap longitudes (NumPy or xarray, lazily) into [-180, 180) or [0, 360)."""
    lo = -180.0 if convention == "-180..180" else 0.0
    r = (values - lo) % 360.0
    r = r - 360.0 * (r >= 360.0)  # x % 360 rounds to 360 for tiny negative x
    return r + lo


def _check_convention(convention: str) -> None:
    if convention not in _CONVENTIONS:
        raise ValueError(f"convention must be one of {_CONVENTIONS}, got {convention!r}")


def drop_geotransform(obj: xr.DataArray | xr.Dataset) -> xr.DataArray | xr.Dataset:
    """Remove a cached rioxarray ``GeoTransform`` that no longer matches reordered coords."""
    for n in ("spatial_ref", "crs"):
        if n in obj.coords and "GeoTransform" in obj[n].attrs:
            attrs = {k: v for k, v in obj[n].attrs.items() if k != "GeoTransform"}
            obj = obj.assign_coords({n: xr.Variable(obj[n].dims, obj[n].values, attrs)})
    return obj


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
    _, lon_name = find_lat_lon_names(obj)
    if lon_name is None:
        try:
            g = describe_grid(obj)
            lon_name = g.lon
        except ValueError:
            lon_name = None
    if lon_name is None:
        raise ValueError(
            f"{object_label(obj)} has no longitude coordinate (coords seen: "
            f"{list(map(str, obj.coords))})"
        )
    lon = obj[lon_name]
    is_index = lon.ndim == 1 and lon.dims[0] == lon_name and lon_name in obj.indexes
    if not is_index:
        new = wrap_longitude(lon, convention)
        new.attrs = lon.attrs
        return obj.assign_coords({lon_name: new})
    dim = lon.dims[0]
    old = np.asarray(lon.values, float)
    wrapped = wrap_longitude(old, convention)
    shift = wrapped - old
    bname = bounds_name(obj, lon_name, "longitude")
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
    return drop_geotransform(out)
